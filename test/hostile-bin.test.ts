// The `faultline` bin runs the command in its own process (issue 14, item 5): a signal sent to
// it ends the run itself, leaving no orphan behind, and a death by signal is seen by the parent
// as that signal, not as a silent exit 1 from a wrapper.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../bin/faultline.js', import.meta.url));

/** Pids whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return children;
}

function residentKiB(pid: number): number {
  const match = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? 0);
}

/**
 * Starts a long model run (a 4 GiB restore) and waits until it is busy in the model: its
 * resident memory grows past what Node and the loader need.
 */
async function busyRun() {
  const child = spawn(
    process.execPath,
    [bin, 'workload', 'snapshot-restore', '--size', '4G', '--vcpus', '1', '--json'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const pid = child.pid!;
  for (let tries = 0; tries < 600 && child.exitCode === null && residentKiB(pid) < 150_000; tries++) {
    await sleep(50);
  }
  assert.equal(child.exitCode, null, 'the run ended before it could be signalled');
  return { pid, exited };
}

describe('the faultline bin and signals', () => {
  for (const signal of ['SIGTERM', 'SIGSEGV'] as const) {
    it(`${signal} sent to faultline ends the run itself and is reported as ${signal}`, async () => {
      const { pid, exited } = await busyRun();
      // No wrapper: the process we started is the run (no node child to orphan).
      assert.deepEqual(childrenOf(pid), []);
      process.kill(pid, signal);
      const [code, received] = await exited;
      assert.equal(code, null);
      assert.equal(received, signal);
    });
  }
});
