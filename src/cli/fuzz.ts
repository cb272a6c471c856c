/** `faultline fuzz`: differential fuzzing of the model against the host kernel. */
import { InvalidArgumentError } from 'commander';
import { runFuzz } from '../fuzz/fuzz.ts';
import { FUZZ_MEMORY, type FuzzMemory } from '../fuzz/generate.ts';
import { hostUnavailable } from '../host/capabilities.ts';
import { skipExitCode, warnHostUnavailable } from './errors.ts';
import { Progress } from './output.ts';

export interface FuzzCommandOptions {
  runs: number;
  seed: number;
  memory: string[];
  out: string;
  json: boolean;
  /** Exit 0 even when every sequence was skipped. */
  allowSkip?: boolean;
}

export async function fuzzCommand(options: FuzzCommandOptions, out: (line: string) => void): Promise<number> {
  const memories = (options.memory.length === 0 ? [...FUZZ_MEMORY] : options.memory) as FuzzMemory[];
  for (const memory of memories) {
    if (!FUZZ_MEMORY.includes(memory)) {
      throw new InvalidArgumentError(`--memory: '${memory}' is not one of ${FUZZ_MEMORY.join(', ')}`);
    }
  }
  warnHostUnavailable(hostUnavailable());
  const progress = new Progress(
    `fuzzing (seed ${options.seed})`,
    !options.json && process.stderr.isTTY === true,
  );
  const result = await runFuzz({
    runs: options.runs,
    seed: options.seed,
    memories,
    backends: ['model', 'host'],
    outDirectory: options.out,
    onProgress: (done, total) => progress.update(done, total),
  });
  progress.finish();
  if (options.json) {
    out(JSON.stringify({ version: 1, ...result, divergence: result.divergence?.file ?? null }, null, 2));
  } else {
    const explained = Object.entries(result.explained).map(([reason, count]) => `${count} ${reason}`);
    out(
      `fuzz seed ${result.seed}: ${result.runs} sequences, ${result.skipped} skipped by a backend, ` +
        `${explained.length === 0 ? 'no' : explained.join(', ')} explained divergence${explained.length === 1 ? '' : 's'}`,
    );
    if (result.divergence !== undefined) {
      out(`divergence, shrunk to ${result.divergence.file}:`);
      for (const divergence of result.divergence.report.divergences) {
        out(`  step ${divergence.index} (${divergence.op}): model ${JSON.stringify(divergence.model)}`);
        out(
          `  ${' '.repeat(String(divergence.index).length + 7 + divergence.op.length)}   host  ${JSON.stringify(divergence.host)}`,
        );
      }
    } else {
      out('no divergence');
    }
  }
  const exitCode = result.divergence === undefined ? 0 : 1;
  return skipExitCode(result.runs, result.skipped, options.allowSkip ?? false, exitCode);
}
