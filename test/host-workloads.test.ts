/**
 * The workloads on the host kernel, end to end through the CLI at small
 * sizes: each run verifies guest memory byte for byte and exits 0 only when
 * every page matches. Skipped, with the reason, where the host backend is
 * unavailable.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hostUnavailable } from '../src/host/capabilities.ts';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const missing = hostUnavailable();

function workload(args: readonly string[]): Record<string, unknown> {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', main, 'workload', ...args, '--backend', 'host', '--json'],
    {
      encoding: 'utf8',
      timeout: 120_000,
    },
  );
  assert.equal(
    run.status,
    0,
    `faultline workload ${args.join(' ')} exited ${run.status}: ${run.stderr}\n${run.stdout}`,
  );
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

describe('workloads on the host kernel', { skip: missing }, () => {
  it('snapshot-restore, anonymous memory: every page restored and verified', () => {
    const result = workload(['snapshot-restore', '--mode', 'anon', '--size', '8M', '--vcpus', '2']);
    assert.equal(result.verifiedPages, 2048);
    assert.equal(result.faults, 2048);
  });

  it('postcopy, anonymous MISSING and shmem MINOR: verified against the source process', () => {
    for (const mode of ['anon', 'shmem']) workload(['postcopy', '--mode', mode, '--size', '8M']);
  });

  it('background-snapshot: the saved image equals memory at the snapshot instant', () => {
    workload(['background-snapshot', '--size', '8M']);
  });

  it('gc-compaction with UFFDIO_MOVE: the heap matches the reference compaction', () => {
    workload(['gc-compaction', '--size', '8M']);
  });
});
