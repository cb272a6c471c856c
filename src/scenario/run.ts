/**
 * Running scenarios: one fresh kernel per scenario, steps checked against
 * their `expect`, and a report per scenario in the shape docs/scenarios.md gives.
 */
import type { KernelBackend } from '../api/backend.ts';
import { ModelBackend } from '../api/model-backend.ts';
import { missingHostCapability } from '../host/capabilities.ts';
import { HostBackend } from '../host/host-backend.ts';
import type { InjectionRates, InjectionReport } from '../model/inject.ts';
import type { Scenario, Step } from './parse.ts';
import { compare, jsonResult } from './result.ts';
import { dataBytes, runStep, ScenarioContext } from './runner.ts';

export type BackendName = 'model' | 'host';

export interface StepReport {
  readonly index: number;
  readonly op: string;
  readonly line: number;
  readonly status: 'pass' | 'fail' | 'error';
  readonly result: Record<string, unknown>;
  readonly expected?: Record<string, unknown>;
  readonly problems?: readonly string[];
}

export interface ScenarioReport {
  readonly name: string;
  readonly file: string;
  readonly backend: BackendName;
  readonly status: 'pass' | 'fail' | 'skip' | 'error';
  readonly reason?: string;
  readonly steps: StepReport[];
  readonly replay: string;
  /** What the model injected, when --inject switched injection on. */
  readonly injections?: InjectionReport;
}

export interface RunOptions {
  readonly backend: BackendName;
  readonly seed: number;
  /** Run the remaining steps after a failing one. */
  readonly keepGoing: boolean;
  /** Fault injection rates (model only; see model/inject.ts). */
  readonly inject?: InjectionRates;
}

/** Capabilities each backend lacks, with the reason a scenario needing them is skipped. */
function missingCapability(backend: BackendName, required: readonly string[]): string | undefined {
  if (backend === 'host') return missingHostCapability(required);
  return undefined;
}

function createBackend(options: RunOptions, scenario: Scenario): KernelBackend {
  // The scenario's main process is an agent: a file's offsets then reach that process, never Node.
  if (options.backend === 'host') return new HostBackend({ isolated: true });
  return new ModelBackend({ seed: options.seed, version: scenario.kernel, inject: options.inject ?? {} });
}

/** The command line that reruns a scenario exactly: backend, seed and injection rates. */
function replayLine(scenario: Scenario, options: RunOptions): string {
  const inject = Object.entries(options.inject ?? {}).map(([point, rate]) => ` --inject ${point}:${rate}`);
  return `faultline run ${scenario.file} --backend ${options.backend} --seed ${options.seed}${inject.join('')}`;
}

export async function runScenario(scenario: Scenario, options: RunOptions): Promise<ScenarioReport> {
  const replay = replayLine(scenario, options);
  const base = { name: scenario.name, file: scenario.file, backend: options.backend, replay };
  const missing = missingCapability(options.backend, scenario.requires);
  if (missing !== undefined) return { ...base, status: 'skip', reason: missing, steps: [] };

  const backend = createBackend(options, scenario);
  const context = new ScenarioContext(backend);
  const reports = new StepReports(context);
  for (const step of scenario.steps) {
    await backend.settle();
    reports.collectBackground();
    if (reports.status !== 'pass' && !options.keepGoing) break;
    const report = await runOneStep(context, step);
    reports.add(report);
    if (report.status !== 'pass' && (!options.keepGoing || report.status === 'error')) break;
  }
  await backend.settle();
  reports.collectBackground();
  reports.failStillBlocked();
  await release(context);
  const injections =
    backend instanceof ModelBackend && backend.kernel.injector.active
      ? backend.kernel.injector.report()
      : undefined;
  return {
    ...base,
    status: reports.status,
    ...(reports.reason === undefined ? {} : { reason: reports.reason }),
    steps: reports.steps,
    ...(injections && { injections }),
  };
}

/** Runs one step and checks what it observed against its `expect`; a step gone to the background passes for now. */
async function runOneStep(context: ScenarioContext, step: Step): Promise<StepReport> {
  const where = { index: step.index, op: step.op, line: step.line };
  try {
    const observed = await runStep(context, step);
    if (observed.background === true) return { ...where, status: 'pass', result: { background: true } };
    const problems = compare(step.expect, observed, dataBytes, (map) => context.range(map));
    return {
      ...where,
      status: problems.length === 0 ? 'pass' : 'fail',
      result: jsonResult(observed),
      ...(step.expect === undefined ? {} : { expected: step.expect }),
      ...(problems.length === 0 ? {} : { problems }),
    };
  } catch (error) {
    return { ...where, status: 'error', result: {}, problems: [(error as Error).message] };
  }
}

/** The step reports of one run, and the scenario's status: the first failing step decides it. */
class StepReports {
  readonly steps: StepReport[] = [];
  status: ScenarioReport['status'] = 'pass';
  reason: string | undefined;

  constructor(private readonly context: ScenarioContext) {}

  add(report: StepReport): void {
    this.steps.push(report);
    if (report.status !== 'pass') this.fail(report);
  }

  /** Checks background steps that have returned since the last look. */
  collectBackground(): void {
    const { background } = this.context;
    for (const pending of [...background]) {
      const result = pending.thread.result();
      if (result === null) continue;
      background.splice(background.indexOf(pending), 1);
      const observed = pending.finish(result);
      const problems = compare(pending.step.expect, observed, dataBytes, (map) => this.context.range(map));
      this.replace(pending.step.index, {
        status: problems.length === 0 ? 'pass' : 'fail',
        result: jsonResult(observed),
        ...(problems.length === 0 ? {} : { problems }),
      });
    }
  }

  /** A background step still asleep at the end fails: the event it raised was never read. */
  failStillBlocked(): void {
    for (const pending of this.context.background) {
      this.replace(pending.step.index, {
        status: 'fail',
        problems: ['still blocked at the end of the scenario: the event it raised was never read'],
      });
    }
  }

  private replace(stepIndex: number, update: Partial<StepReport>): void {
    const index = this.steps.findIndex((report) => report.index === stepIndex);
    const report: StepReport = { ...this.steps[index]!, ...update };
    this.steps[index] = report;
    if (report.status !== 'pass') this.fail(report);
  }

  private fail(report: StepReport): void {
    if (this.status !== 'pass') return;
    this.status = report.status === 'error' ? 'error' : 'fail';
    this.reason = `step ${report.index} (${report.op}, line ${report.line}): ${report.problems!.join('; ')}`;
  }
}

/** Threads still blocked are released by closing every userfaultfd; a host backend's agents go. */
async function release(context: ScenarioContext): Promise<void> {
  for (const binding of context.uffds.values()) {
    try {
      binding.uffd.close();
    } catch {
      // Already closed by the scenario.
    }
  }
  await context.backend.settle();
  if (context.backend instanceof HostBackend) context.backend.dispose();
}
