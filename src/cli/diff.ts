/** `faultline diff FILE|DIR`: the model against the host kernel, step by step. */

import { hostUnavailable } from '../host/capabilities.ts';
import { type DiffReport, diffScenario } from '../scenario/diff.ts';
import { skipExitCode, warnHostUnavailable } from './errors.ts';
import { loadScenarioPaths } from './paths.ts';

export interface DiffCommandOptions {
  readonly json: boolean;
  readonly seed: number;
  /** Only the scenarios whose name this selects (see `scenarioFilter`). */
  readonly filter?: string;
  /** Exit 0 even when every scenario was skipped. */
  readonly allowSkip?: boolean;
  readonly out: (line: string) => void;
}

/** Diffs the scenarios under `paths` (files, directories, globs); 1 when one diverges unexplained. */
export async function diffCommand(
  paths: string | readonly string[],
  options: DiffCommandOptions,
): Promise<number> {
  const scenarios = loadScenarioPaths(typeof paths === 'string' ? [paths] : paths, options.filter);
  const unavailable = hostUnavailable();
  warnHostUnavailable(unavailable);
  const reports: DiffReport[] = [];
  for (const scenario of scenarios) {
    const report = await diffScenario(scenario, { seed: options.seed });
    reports.push(report);
    if (!options.json) printDiff(report, options.out, unavailable);
  }
  const count = (status: DiffReport['status']) => reports.filter((report) => report.status === status).length;
  const unexplained = count('diverge');
  if (options.json) {
    options.out(
      JSON.stringify(
        {
          version: 1,
          scenarios: reports.map((report) => ({
            name: report.name,
            file: report.file,
            status: report.status,
            ...(report.reason === undefined ? {} : { reason: report.reason }),
            divergences: report.divergences,
            steps: { model: report.model.steps, host: report.host.steps },
          })),
          agree: count('agree'),
          diverge: unexplained,
          declared: count('declared'),
          skipped: count('skip'),
        },
        null,
        2,
      ),
    );
  } else {
    options.out(
      `${count('agree')} agree, ${unexplained} diverge, ${count('declared')} declared, ${count('skip')} skipped`,
    );
  }
  return skipExitCode(reports.length, count('skip'), options.allowSkip ?? false, unexplained === 0 ? 0 : 1);
}

function printDiff(report: DiffReport, out: (line: string) => void, unavailable?: string): void {
  if (report.status === 'agree') {
    out(`agree    ${report.name}`);
    return;
  }
  if (report.status === 'skip') {
    // The reason the whole host is unavailable was said once, up front.
    out(
      report.reason === unavailable ? `skip     ${report.name}` : `skip     ${report.name}: ${report.reason}`,
    );
    return;
  }
  out(`${report.status.padEnd(8)} ${report.name} (${report.file})`);
  if (report.status === 'declared') out(`         declared: ${report.divergences[0]?.declared}`);
  for (const divergence of report.divergences) {
    out(`         step ${divergence.index} (${divergence.op})`);
    out(`           model ${JSON.stringify(divergence.model)}`);
    out(`           host  ${JSON.stringify(divergence.host)}`);
  }
}
