/**
 * Handler binaries (src/handlers/binary/): the C test handler
 * (test/handlers/fc_handler.c, built by node-gyp) speaking Firecracker's
 * protocol serves the snapshot-restore guest on the model, through seccomp
 * interception, and on the host kernel with a real userfaultfd. Every page
 * is verified by the workload; the report shows the calls were trapped.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { KernelBackend } from '../src/api/backend.ts';
import { ModelBackend } from '../src/api/model-backend.ts';
import { type BinaryRunReport, binaryHandler } from '../src/handlers/binary/serve.ts';
import { hostUnavailable, reserveHugePages } from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import { native } from '../src/host/native.ts';
import { Trace } from '../src/trace/trace.ts';
import { ENOMEM, KernelError } from '../src/uapi/errno.ts';
import type { AccessPattern } from '../src/workloads/guest.ts';
import { HandlerError, type RestoreMode, runSnapshotRestore } from '../src/workloads/snapshot-restore.ts';

// Scratch directories of this test process's sessions only (other worktrees may run this file at once):
// tmpdir() follows TMPDIR, and the SIGINT test's child inherits it.
process.env.TMPDIR = mkdtempSync(join(tmpdir(), 'faultline-handler-test-'));
const scratch = process.env.TMPDIR;

const build = fileURLToPath(new URL('../build/Release/', import.meta.url));
export const handlerPath = (name: string): string => join(build, name);
const built = existsSync(handlerPath('fc_handler_static')) ? undefined : 'the test handlers are not built';
const hostMissing = hostUnavailable();

export interface Run {
  readonly verified: number;
  readonly pages: number;
  readonly report: BinaryRunReport | undefined;
}

export async function serveWith(
  binary: string,
  options: {
    backend?: KernelBackend;
    mode?: RestoreMode;
    size?: number;
    vcpus?: number;
    balloon?: number;
    seed?: number;
    pattern?: AccessPattern;
    args?: string[];
    timeoutMs?: number;
  } = {},
): Promise<Run> {
  let report: BinaryRunReport | undefined;
  const seed = options.seed ?? 1;
  const result = await runSnapshotRestore({
    backend: options.backend ?? new ModelBackend({ seed }),
    mode: options.mode ?? 'anon',
    guestBytes: options.size ?? 1 << 20,
    vcpus: options.vcpus ?? 2,
    pattern: options.pattern ?? 'random',
    seed,
    prefetchWindow: 0,
    balloonPages: options.balloon ?? 0,
    trace: new Trace(1, false),
    handler: binaryHandler({
      path: handlerPath(binary),
      args: options.args ?? [],
      timeoutMs: options.timeoutMs ?? 10_000,
      report: (r) => {
        report = r;
      },
    }),
  }).catch((error: unknown) => {
    // The workload wraps what serve threw; the finding is the cause.
    throw error instanceof HandlerError ? error.cause : error;
  });
  assert.deepEqual(result.wrongReads, []);
  return { verified: result.verifiedPages, pages: result.pages, report };
}

after(() => rmSync(scratch, { recursive: true, force: true }));

function leftovers(): string[] {
  return readdirSync(scratch).filter((name) => name.startsWith('faultline-handler-'));
}

describe('handler binaries on the model (seccomp interception)', { skip: built }, () => {
  it('the dynamic C handler restores every page; its uffd calls were trapped', async () => {
    const before = leftovers().length;
    const run = await serveWith('fc_handler', { size: 1 << 20 });
    assert.equal(run.verified, run.pages);
    assert.equal(run.pages, 256);
    // A COPY per page, plus the reads and polls, reached the model.
    assert.ok(run.report !== undefined && run.report.calls > 256, `calls: ${run.report?.calls}`);
    assert.equal(run.report.threads, 1);
    assert.equal(leftovers().length, before, 'the scratch directory is removed');
  });

  it('the -static build is intercepted as well (a pipe would answer ENOTTY)', async () => {
    const run = await serveWith('fc_handler_static', { size: 1 << 20 });
    assert.equal(run.verified, run.pages);
    assert.ok(run.report !== undefined && run.report.calls > 256, `calls: ${run.report?.calls}`);
  });

  it('hugetlb: whole 2 MiB pages copied from the mapped memory file', async () => {
    const run = await serveWith('fc_handler', { mode: 'hugetlb', size: 8 << 20 });
    assert.equal(run.verified, 4);
  });

  it('a balloon: REMOVE events reach the binary, discarded pages read as zero', async () => {
    const run = await serveWith('fc_handler', { size: 1 << 20, balloon: 64, vcpus: 3 });
    assert.equal(run.verified, run.pages);
  });

  for (const mode of ['gmem-minor', 'gmem-missing'] as const) {
    it(`${mode}: the binary gets the guest_memfd too; its lseek+write reach the model's guest_memfd`, async () => {
      const run = await serveWith('fc_handler_static', {
        mode,
        size: 512 << 10,
        backend: new ModelBackend({ version: '7.1' }),
      });
      assert.equal(run.verified, run.pages);
      assert.equal(run.pages, 128);
    });
  }

  it('a seed replays exactly: the same trapped calls with the same results', async () => {
    const first = await serveWith('fc_handler', { size: 512 << 10, balloon: 32, seed: 7 });
    const second = await serveWith('fc_handler', { size: 512 << 10, balloon: 32, seed: 7 });
    const other = await serveWith('fc_handler', { size: 512 << 10, balloon: 32, seed: 8 });
    assert.equal(first.report?.digest, second.report?.digest);
    assert.notEqual(first.report?.digest, other.report?.digest);
  });
});

describe('how a binary is started (clone with CLONE_VM | CLONE_VFORK, as posix_spawn)', {
  skip: built,
}, () => {
  const script = (name: string, text: string): string => {
    const path = join(scratch, name);
    writeFileSync(path, text, { mode: 0o755 });
    return path;
  };
  const start = (path: string, timeoutMs = 5000) =>
    runSnapshotRestore({
      backend: new ModelBackend({ seed: 1 }),
      mode: 'anon',
      guestBytes: 64 << 10,
      vcpus: 1,
      pattern: 'sequential',
      seed: 1,
      prefetchWindow: 0,
      balloonPages: 0,
      trace: new Trace(1, false),
      handler: binaryHandler({ path, timeoutMs }),
    });

  it('the binary starts with no signal blocked and no handler of ours (every signal blocked around clone)', async () => {
    const path = script(
      'signals.sh',
      "#!/bin/sh\ngrep -E '^Sig(Blk|Cgt)' /proc/$$/status | tr '\\n' ' '\nexit 7\n",
    );
    await assert.rejects(start(path), (error: HandlerError) => {
      assert.match(
        String((error.cause as Error).message),
        /exited with status 7 — it printed: SigBlk:\s+0+ SigCgt:\s+0+/,
      );
      return true;
    });
    assert.deepEqual(await strayProcessesSettled(), []);
  });

  // An addon built before handlerSpawn took { stdin, fds } starts the connector with child_process,
  // whose exit may come after the handler timeout (worktrees copy build/).
  const connectorByAddon =
    (native as { binarySpawnVersion?: number } | null)?.binarySpawnVersion === 2
      ? undefined
      : 'the addon predates handlerSpawn { stdin, fds }: npm run build:native';
  it("a binary that never listens: the connector's own reason, after the timeout; nothing left behind", {
    skip: connectorByAddon,
  }, async () => {
    const path = script('no-listen.sh', '#!/bin/sh\nexec sleep 30\n');
    const fds = openFds();
    await assert.rejects(start(path, 300), (error: HandlerError) => {
      assert.match(
        String((error.cause as Error).message),
        /^the VMM's handshake with the handler failed: connect\(.*uffd\.sock\): No such file or directory$/,
      );
      return true;
    });
    assert.equal(openFds(), fds, 'no descriptor left open');
    assert.deepEqual(await strayProcessesSettled(), []);
  });

  it('a binary that cannot be executed is a one-line finding naming the stage and errno', async () => {
    const path = script('no-interpreter.sh', '#!/nonexistent/interpreter\n');
    const fds = openFds();
    await assert.rejects(start(path), (error: HandlerError) => {
      assert.equal(String((error.cause as Error).message), `handler binary ${path}: exec failed (errno 2)`);
      return true;
    });
    assert.equal(openFds(), fds, 'no descriptor left open');
  });
});

describe('the same binary on the host kernel', { skip: built ?? hostMissing }, () => {
  it('anonymous memory: the real userfaultfd, every page verified', async () => {
    const run = await serveWith('fc_handler', { backend: new HostBackend(), size: 4 << 20 });
    assert.equal(run.verified, run.pages);
    assert.equal(run.pages, 1024);
  });

  it('hugetlb, static build', async (t) => {
    // The pool is shared with test files running beside this one: reserve when the test runs.
    const reason = reserveHugePages(8);
    if (reason !== undefined) return t.skip(reason);
    let run: Run;
    try {
      run = await serveWith('fc_handler_static', {
        backend: new HostBackend(),
        mode: 'hugetlb',
        size: 8 << 20,
      });
    } catch (error) {
      if (error instanceof KernelError && error.errno === ENOMEM && error.syscall === 'mmap')
        return t.skip('the hugetlb pool is in use by another test process');
      throw error;
    }
    assert.equal(run.verified, 4);
  });
});

/** Processes whose command line names a scratch directory of a handler session (binary or connector). */
function strayProcesses(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state !== 'Z' && cmdline.includes(`${scratch}/faultline-handler-`))
        found.push(`${pid}: ${cmdline}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** Stray processes, after giving a SIGKILLed connector (reaped by libuv, asynchronously) a moment to go. */
async function strayProcessesSettled(): Promise<string[]> {
  for (let i = 0; i < 100 && strayProcesses().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  return strayProcesses();
}

/** Descriptors of the kinds a session opens: pidfds, seccomp listeners, pipes, sockets, userfaultfds. */
function openFds(): number {
  let count = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (/pidfd|seccomp|userfaultfd|^pipe:|^socket:/.test(target)) count++;
    } catch {
      // The directory's own descriptor.
    }
  }
  return count;
}

describe('a misbehaving handler binary is a one-line finding, and nothing is left behind', {
  skip: built,
}, () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['exits', ['--exit-after', '5'], /^handler binary exited with status 3 — it printed: .*--exit-after/],
    ['crashes', ['--crash-after', '5'], /^handler binary died on signal 11/],
    [
      'panics and SIGKILLs its socket peer',
      ['--kill-peer-after', '5'],
      /^handler binary died on signal 6 .*panic/,
    ],
    ['closes its uffd', ['--close-after', '5'], /^handler binary exited with status 1 .*UFFDIO_COPY/],
    ['passes a wild COPY source (EFAULT, as the kernel)', ['--garbage-after', '5'], /Bad address/],
    [
      'hangs (busy loop)',
      ['--hang-after', '5'],
      /^handler binary made no userfaultfd call for 0.5 s .*state R/,
    ],
  ];
  for (const [what, args, message] of cases) {
    it(`on the model: a handler that ${what}`, async () => {
      const fds = openFds();
      const dirs = leftovers().length;
      await assert.rejects(
        serveWith('fc_handler', { size: 256 << 10, args, timeoutMs: 500 }),
        (error: Error) => {
          assert.equal(error.name, 'HandlerBinaryError');
          assert.match(error.message, message);
          assert.ok(!error.message.includes('\n'), 'one line');
          return true;
        },
      );
      assert.equal(openFds(), fds, 'no descriptor left open');
      assert.equal(leftovers().length, dirs, 'no scratch directory left');
      assert.deepEqual(await strayProcessesSettled(), []);
    });
  }

  it('on the host: a handler that exits is a finding naming the waiting vCPUs', {
    skip: hostMissing,
  }, async () => {
    await assert.rejects(
      serveWith('fc_handler', { backend: new HostBackend(), size: 256 << 10, args: ['--exit-after', '0'] }),
      /handler binary exited with status 3 — it printed: .*--exit-after/,
    );
    assert.deepEqual(await strayProcessesSettled(), []);
  });

  it('on the host: a handler that crashes is a finding; the vCPUs are released', {
    skip: hostMissing,
  }, async () => {
    const fds = openFds();
    await assert.rejects(
      serveWith('fc_handler', { backend: new HostBackend(), size: 1 << 20, args: ['--crash-after', '5'] }),
      /handler binary died on signal 11/,
    );
    assert.deepEqual(await strayProcessesSettled(), []);
    assert.equal(openFds(), fds);
  });

  it('SIGINT mid-run: faultline dies of it, the binary and the connector with it, the scratch files removed', async () => {
    const dirs = leftovers().length;
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        fileURLToPath(new URL('../src/cli/main.ts', import.meta.url)),
        'workload',
        'snapshot-restore',
        '--size',
        '1M',
        '--handler-timeout',
        '60000',
        '--handler',
        handlerPath('fc_handler'),
        '--',
        '--hang-after',
        '50',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    // Wait until the binary is up (its command line names the scratch directory), then interrupt.
    for (let i = 0; i < 600 && strayProcesses().length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(strayProcesses().length >= 1, 'the binary started');
    child.kill('SIGINT');
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    assert.equal(signal ?? code, 'SIGINT');
    for (let i = 0; i < 100 && strayProcesses().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(strayProcesses(), []);
    assert.equal(leftovers().length, dirs);
  });
});

describe('handler binaries on worker threads', { skip: built }, () => {
  // A worker thread closes, when it exits, every descriptor it opened with fs.open and did not
  // close with fs.close (Node's trackUnmanagedFds). A session's scratch files closed another way
  // stayed on that list: the exiting worker then closed whatever those numbers had become —
  // another worker's seccomp listener, pidfd or fake uffd — and that worker's binary failed
  // (ENOSYS from its trapped calls, ENOTTY from ioctls no longer recognised).
  it("a worker's session leaves no descriptor number for the worker's exit to close", async () => {
    const addon = (await import('../src/handlers/binary/child.ts')).binaryAddon();
    const child = handlerPath('fc_handler');
    const source =
      '(async () => {' +
      `const tsx = await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}); tsx.register();` +
      `const { HandlerChild } = await import(${JSON.stringify(new URL('../src/handlers/binary/child.ts', import.meta.url).href)});` +
      `const { parentPort } = await import('node:worker_threads');` +
      `const session = new HandlerChild({ path: ${JSON.stringify(child)}, args: [], trap: 1, memory: (write) => write(new Uint8Array(4096)) });` +
      `session.dispose(); parentPort.postMessage('disposed');` +
      `parentPort.once('message', () => process.exit(0));` +
      '})();';
    const worker = new Worker(source, { eval: true, stderr: true });
    let stderr = '';
    worker.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    try {
      await once(worker, 'message');
      // The lowest free numbers: the ones the worker's session used and gave back.
      const pipes = [addon.makePipe(), addon.makePipe()].flatMap((pipe) =>
        typeof pipe === 'number' ? [] : pipe,
      );
      assert.equal(pipes.length, 4);
      worker.postMessage('exit');
      await once(worker, 'exit');
      const closed = pipes.filter((fd) => addon.fileFlags(fd) < 0);
      for (const fd of pipes) addon.close(fd);
      assert.deepEqual(closed, [], "the worker's exit closed descriptors it no longer owned");
      assert.doesNotMatch(stderr, /unmanaged mode/, 'no descriptor is opened twice in unmanaged mode');
    } finally {
      await worker.terminate();
    }
  });
});
