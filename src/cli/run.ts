/** `faultline run`: scenario files on a backend, one line per scenario and a closing count. */

import { type BackendName, runScenario, type ScenarioReport } from '../scenario/run.ts';
import { loadOrReport } from './load.ts';

export interface RunCommandOptions {
  readonly backend: BackendName;
  readonly json: boolean;
  readonly seed: number;
  readonly keepGoing: boolean;
  readonly out: (line: string) => void;
}

export async function runCommand(path: string, options: RunCommandOptions): Promise<number> {
  const scenarios = loadOrReport(path, options.out);
  if (scenarios === undefined) return 2;
  const reports: ScenarioReport[] = [];
  for (const scenario of scenarios) {
    const report = await runScenario(scenario, options);
    reports.push(report);
    if (!options.json) printReport(report, options.out);
  }
  const passed = reports.filter((report) => report.status === 'pass').length;
  const skipped = reports.filter((report) => report.status === 'skip').length;
  const failed = reports.length - passed - skipped;
  if (options.json) {
    options.out(JSON.stringify({ version: 1, scenarios: reports, passed, failed, skipped }, null, 2));
  } else {
    options.out(`${passed} passed, ${failed} failed, ${skipped} skipped`);
  }
  return failed === 0 ? 0 : 1;
}

function printReport(report: ScenarioReport, out: (line: string) => void): void {
  if (report.status === 'pass') {
    out(`pass  ${report.name}`);
    return;
  }
  if (report.status === 'skip') {
    out(`skip  ${report.name}: ${report.reason}`);
    return;
  }
  out(`${report.status.padEnd(5)} ${report.name} (${report.file})`);
  out(`      ${report.reason}`);
  const failing = report.steps.find((step) => step.status !== 'pass');
  if (failing?.expected !== undefined) out(`      expected ${JSON.stringify(failing.expected)}`);
  if (failing !== undefined) out(`      observed ${JSON.stringify(failing.result)}`);
  out(`      replay: ${report.replay}`);
}
