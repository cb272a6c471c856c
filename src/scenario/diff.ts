/**
 * `faultline diff`: runs each scenario on the model and on the host kernel
 * and reports every step whose observed result differs (result fields,
 * errno, progress field, event, data), whether or not `expect` was written.
 * A divergence a scenario declares (`divergence: reason`) is reported as
 * declared, not hidden.
 */
import type { Scenario } from './parse.ts';
import { type BackendName, runScenario, type ScenarioReport, type StepReport } from './run.ts';

export interface Divergence {
  readonly index: number;
  readonly op: string;
  readonly model: Record<string, unknown>;
  readonly host: Record<string, unknown>;
  readonly declared?: string;
}

export interface DiffReport {
  readonly name: string;
  readonly file: string;
  readonly status: 'agree' | 'diverge' | 'declared' | 'skip';
  readonly reason?: string;
  readonly divergences: Divergence[];
  readonly model: ScenarioReport;
  readonly host: ScenarioReport;
}

/** What a step observed, for comparison: its result, or its error. */
function observed(step: StepReport | undefined): Record<string, unknown> {
  if (step === undefined) return { missing: 'the step did not run' };
  if (step.status === 'error') return { error: step.problems?.join('; ') ?? 'error' };
  return step.result;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export async function diffScenario(
  scenario: Scenario,
  options: { seed: number; backends?: readonly [BackendName, BackendName] },
): Promise<DiffReport> {
  const [left, right] = options.backends ?? ['model', 'host'];
  const run = (backend: BackendName) =>
    runScenario(scenario, { backend, seed: options.seed, keepGoing: true });
  const model = await run(left);
  const host = await run(right);
  const base = { name: scenario.name, file: scenario.file, model, host };
  const skipped = [model, host].find((report) => report.status === 'skip');
  if (skipped !== undefined) {
    return { ...base, status: 'skip', reason: `${skipped.backend}: ${skipped.reason}`, divergences: [] };
  }
  const divergences: Divergence[] = [];
  for (const step of scenario.steps) {
    const a = observed(model.steps.find((report) => report.index === step.index));
    const b = observed(host.steps.find((report) => report.index === step.index));
    if (same(a, b)) continue;
    divergences.push({
      index: step.index,
      op: step.op,
      model: a,
      host: b,
      ...(scenario.divergence === undefined ? {} : { declared: scenario.divergence }),
    });
  }
  const status =
    divergences.length === 0 ? 'agree' : scenario.divergence === undefined ? 'diverge' : 'declared';
  return { ...base, status, divergences };
}
