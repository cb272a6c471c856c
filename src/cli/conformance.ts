/**
 * `faultline conformance`: the memory-type conformance suite. Text output is
 * one line per case × type and a closing count; `--json` prints one
 * versioned document (format 'faultline-conformance', version 1).
 */
import { ModuleLoadError } from '../conformance/module.ts';
import { type CaseResult, ConformanceError, runConformance } from '../conformance/runner.ts';
import type { KernelVersion } from '../model/kernel.ts';
import { MemoryTypeError } from '../model/mm/registry.ts';

export interface ConformanceCommandOptions {
  readonly memtype: readonly string[];
  readonly module: readonly string[];
  /** Names of the cases to run; empty: all. */
  readonly case?: readonly string[];
  readonly json: boolean;
  readonly kernelVersion: KernelVersion;
  readonly seed: number;
  /** Milliseconds a case may take; a module's case is then killed. */
  readonly timeout?: number;
  readonly out: (line: string) => void;
}

/** Returns the exit code: 0 when nothing failed, 1 when a case failed, 2 for bad arguments or modules. */
export async function conformanceCommand(options: ConformanceCommandOptions): Promise<number> {
  const out = options.out;
  try {
    const report = await runConformance({
      // Modules from files are loaded only in workers: their declarations are read in one, and each
      // case runs in one of its own, killed at the timeout or the memory cap.
      ...(options.module.length > 0 ? { modulePaths: options.module } : {}),
      memtypes: options.memtype,
      ...(options.case === undefined ? {} : { cases: options.case }),
      version: options.kernelVersion,
      seed: options.seed,
      ...(options.timeout === undefined ? {} : { timeoutMs: options.timeout }),
      ...(options.json ? {} : { onResult: (result: CaseResult) => out(formatResult(result)) }),
    });
    const { passed, failed, skipped } = report.summary;
    if (options.json) out(JSON.stringify(report, null, 2));
    else out(`${passed} passed, ${failed} failed, ${skipped} skipped`);
    return failed === 0 ? 0 : 1;
  } catch (error) {
    if (
      error instanceof ModuleLoadError ||
      error instanceof ConformanceError ||
      error instanceof MemoryTypeError
    ) {
      out(`faultline conformance: ${error.message}`);
      return 2;
    }
    throw error;
  }
}

function formatResult(result: CaseResult): string {
  const line = `${result.status.padEnd(4)}  ${result.type.padEnd(12)}  ${result.case}`;
  return result.reason === undefined ? line : `${line.padEnd(50)}  ${result.reason}`;
}
