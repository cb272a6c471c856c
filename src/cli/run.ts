/** `faultline run`: scenario files on a backend, one line per scenario and a closing count. */

import { hostUnavailable } from '../host/capabilities.ts';
import { describeInjections, type InjectionRates } from '../model/inject.ts';
import { type BackendName, runScenario, type ScenarioReport } from '../scenario/run.ts';
import { skipExitCode, warnHostUnavailable } from './errors.ts';
import { loadScenarioPaths } from './paths.ts';

export interface RunCommandOptions {
  readonly backend: BackendName;
  readonly json: boolean;
  readonly seed: number;
  readonly keepGoing: boolean;
  /** Only the scenarios whose name this selects (see `scenarioFilter`). */
  readonly filter?: string;
  /** Exit 0 even when every scenario was skipped. */
  readonly allowSkip?: boolean;
  /** --inject rates (model only). */
  readonly inject?: InjectionRates;
  readonly out: (line: string) => void;
}

/**
 * Runs the scenarios under `paths` (files, directories, globs); 1 when one
 * fails. A path or file that cannot be loaded throws a user error before
 * anything runs (the command line exits 2).
 */
export async function runCommand(
  paths: string | readonly string[],
  options: RunCommandOptions,
): Promise<number> {
  const scenarios = loadScenarioPaths(typeof paths === 'string' ? [paths] : paths, options.filter);
  const unavailable = options.backend === 'host' ? hostUnavailable() : undefined;
  warnHostUnavailable(unavailable);
  const reports: ScenarioReport[] = [];
  for (const scenario of scenarios) {
    const report = await runScenario(scenario, options);
    reports.push(report);
    if (options.json) continue;
    printReport(report, options.out, unavailable);
    if (report.injections !== undefined) options.out(`      ${describeInjections(report.injections)}`);
  }
  const passed = reports.filter((report) => report.status === 'pass').length;
  const skipped = reports.filter((report) => report.status === 'skip').length;
  const failed = reports.length - passed - skipped;
  if (options.json) {
    options.out(JSON.stringify({ version: 1, scenarios: reports, passed, failed, skipped }, null, 2));
  } else {
    options.out(`${passed} passed, ${failed} failed, ${skipped} skipped`);
  }
  return skipExitCode(reports.length, skipped, options.allowSkip ?? false, failed === 0 ? 0 : 1);
}

function printReport(report: ScenarioReport, out: (line: string) => void, unavailable?: string): void {
  if (report.status === 'pass') {
    out(`pass  ${report.name}`);
    return;
  }
  if (report.status === 'skip') {
    // The reason the whole host is unavailable was said once, up front.
    out(report.reason === unavailable ? `skip  ${report.name}` : `skip  ${report.name}: ${report.reason}`);
    return;
  }
  out(`${report.status.padEnd(5)} ${report.name} (${report.file})`);
  // Every failing step (one without --keep-going, all of them with it), each with its line; the
  // reason alone when no step failed (a scenario that could not start, or left a thread blocked).
  const failing = report.steps.filter((step) => step.status !== 'pass');
  if (failing.length === 0) out(`      ${report.reason}`);
  for (const step of failing) {
    out(`      step ${step.index} (${step.op}, line ${step.line}): ${step.status}`);
    for (const problem of step.problems ?? []) out(`        ${problem}`);
    if (step.expected !== undefined) out(`        expected ${JSON.stringify(step.expected)}`);
    out(`        observed ${JSON.stringify(step.result)}`);
  }
  out(`      replay: ${report.replay}`);
}
