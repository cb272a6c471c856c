/** `faultline diff FILE|DIR`: the model against the host kernel, step by step. */
import { type DiffReport, diffScenario } from '../scenario/diff.ts';
import { loadOrReport } from './load.ts';

export interface DiffCommandOptions {
  readonly json: boolean;
  readonly seed: number;
  readonly out: (line: string) => void;
}

export async function diffCommand(path: string, options: DiffCommandOptions): Promise<number> {
  const scenarios = loadOrReport(path, options.out);
  if (scenarios === undefined) return 2;
  const reports: DiffReport[] = [];
  for (const scenario of scenarios) {
    const report = await diffScenario(scenario, { seed: options.seed });
    reports.push(report);
    if (!options.json) printDiff(report, options.out);
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
  return unexplained === 0 ? 0 : 1;
}

function printDiff(report: DiffReport, out: (line: string) => void): void {
  if (report.status === 'agree') {
    out(`agree    ${report.name}`);
    return;
  }
  if (report.status === 'skip') {
    out(`skip     ${report.name}: ${report.reason}`);
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
