/**
 * Differential fuzzing: random scenarios run on both backends; the first
 * divergence shrinks (fast-check) to a minimal scenario written to disk.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { type DiffReport, diffScenario } from '../scenario/diff.ts';
import type { BackendName } from '../scenario/run.ts';
import { type FuzzMemory, fuzzCaseArbitrary, materialize, scenarioYaml } from './generate.ts';

export interface FuzzOptions {
  readonly runs: number;
  readonly seed: number;
  readonly memories: readonly FuzzMemory[];
  readonly backends: readonly [BackendName, BackendName];
  /** Where a shrunk divergent scenario is written. */
  readonly outDirectory: string;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface FuzzResult {
  readonly runs: number;
  readonly seed: number;
  readonly skipped: number;
  /** Cases whose divergence is a known difference (docs/fidelity.md), by reason. */
  readonly explained: Readonly<Record<string, number>>;
  /** The shrunk divergence, if one was found. */
  readonly divergence?: { readonly file: string; readonly report: DiffReport };
}

/**
 * The known difference a divergent case shows, if its first divergence is
 * one (docs/fidelity.md): a UFFDIO_COPY whose source faults on a
 * userfaultfd-registered range puts the host's caller to sleep in the
 * kernel until that fault is resolved, where the model, whose caller cannot
 * sleep, answers EFAULT; what follows on the host depends on that sleeper.
 */
export function explainDivergence(report: DiffReport): string | undefined {
  const first = report.divergences[0];
  if (first === undefined || first.op !== 'copy') return undefined;
  const hostError = typeof first.host.error === 'string' ? first.host.error : '';
  if (first.model.errno === 'EFAULT' && /sleeps in the kernel/.test(hostError)) return 'copy-source-sleeps';
  return undefined;
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  let done = 0;
  let skipped = 0;
  let last: DiffReport | undefined;
  const explained: Record<string, number> = {};
  const property = fc.asyncProperty(fuzzCaseArbitrary(options.memories), async (fuzzCase) => {
    const scenario = materialize(fuzzCase, 'fuzz-case');
    let report = await diffScenario(scenario, { seed: 1, backends: options.backends });
    if (report.status === 'diverge' && explainDivergence(report) === undefined) {
      // A divergence the same sequence does not show again came from the host's state, not the
      // model: the hugetlb pool (4 huge pages here) and KVM are shared with every other process.
      const again = await diffScenario(scenario, { seed: 1, backends: options.backends });
      if (again.status === 'agree') {
        explained['not-reproducible'] = (explained['not-reproducible'] ?? 0) + 1;
        report = again;
      }
    }
    options.onProgress?.(++done, options.runs);
    if (report.status === 'skip') skipped++;
    if (report.status === 'diverge') {
      const reason = explainDivergence(report);
      if (reason !== undefined) {
        explained[reason] = (explained[reason] ?? 0) + 1;
        return true;
      }
      last = report;
      return false;
    }
    return true;
  });
  const result = await fc.check(property, { numRuns: options.runs, seed: options.seed });
  if (!result.failed || result.counterexample === null)
    return { runs: result.numRuns, seed: options.seed, skipped, explained };
  const name = `fuzz-divergence-seed-${options.seed}`;
  const scenario = materialize(result.counterexample[0], name);
  const report = await diffScenario(scenario, { seed: 1, backends: options.backends });
  mkdirSync(options.outDirectory, { recursive: true });
  const file = join(options.outDirectory, `${name}.yaml`);
  writeFileSync(
    file,
    scenarioYaml({
      ...scenario,
      description: `Shrunk by faultline fuzz --seed ${options.seed}: the backends diverge`,
    }),
  );
  return {
    runs: result.numRuns,
    seed: options.seed,
    skipped,
    explained,
    divergence: { file, report: report.status === 'diverge' ? report : last! },
  };
}
