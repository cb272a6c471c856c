// Hostile and careless input cannot hurt faultline (issue 14): each repro is a test that asserts the
// exact behaviour — a one-line error and its exit code, no crash, no hang, nothing left behind.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ModelBackend } from '../src/api/model-backend.ts';
import { Process } from '../src/api/process.ts';
import { hostUnavailable } from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import { AgentDiedError } from '../src/host/remote.ts';
import { diffScenario } from '../src/scenario/diff.ts';
import { loadScenarios } from '../src/scenario/parse.ts';
import { runScenario } from '../src/scenario/run.ts';
import { EBADF, EINVAL, ENOMEM, KernelError } from '../src/uapi/errno.ts';
import { expectErrno } from './helpers.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const main = join(root, 'src/cli/main.ts');
const fixtures = join(root, 'test/fixtures/hostile');
const hostSkip = hostUnavailable() ?? false;

/** Runs the faultline command with a time bound; its exit code and output. */
function faultline(args: readonly string[], timeout = 60_000) {
  const run = spawnSync(process.execPath, ['--import', 'tsx', main, ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout,
  });
  assert.equal(run.signal, null, `faultline ${args.join(' ')} did not end in time`);
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** Processes whose parent is `parent` and whose command is faultline_agent. */
function agentsOf(parent: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      if (comm === 'faultline_agent' && ppid === parent) found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

function oneScenario(file: string) {
  const [scenario] = loadScenarios(join(fixtures, file));
  return scenario!;
}

describe('item 1: a host scenario runs in a process of its own, bounded by its maps', () => {
  it('a read past its map is refused at load: one line naming file, line, column and field, exit 2', () => {
    const run = faultline(['run', 'test/fixtures/hostile/read-past-map.yaml', '--backend', 'model']);
    assert.equal(run.status, 2);
    assert.equal(
      run.stdout + run.stderr,
      "faultline: test/fixtures/hostile/read-past-map.yaml:5:40: steps[1].read.length: [4096, 4160) runs past map 'a' " +
        '(4096 bytes); a step that goes past its map on purpose says beyond_map: true\n',
    );
  });

  it('the scenario process is an agent, not Node: its maps are not in Node', { skip: hostSkip }, () => {
    const backend = new HostBackend({ isolated: true });
    try {
      assert.notEqual(backend.self.pid, process.pid);
      assert.deepEqual(agentsOf(process.pid), [backend.self.pid]);
      const area = new Process(backend.self).mmap({ length: 4096 });
      const nodeMaps = readFileSync('/proc/self/maps', 'utf8');
      const hex = area.toString(16);
      assert.ok(!nodeMaps.split('\n').some((line) => line.startsWith(`${hex}-`)), 'the map is in Node');
      assert.match(readFileSync(`/proc/${backend.self.pid}/maps`, 'utf8'), new RegExp(`^${hex}-`, 'm'));
      assert.match(backend.describe(), /program in process \d+ \(faultline_agent\)/);
    } finally {
      backend.dispose();
    }
    assert.deepEqual(agentsOf(process.pid), []);
  });

  it('an munmap past its map that kills the scenario process is a finding; faultline lives on', {
    skip: hostSkip,
  }, async () => {
    const report = await runScenario(oneScenario('munmap-past-map.yaml'), {
      backend: 'host',
      seed: 1,
      keepGoing: false,
    });
    // The step's own thread dies with its process; whether the agent still answered the request that
    // started it decides which of the two reports names the death.
    assert.notEqual(report.status, 'pass');
    assert.match(
      report.reason ?? '',
      /^step 1 \(munmap, line 5\): (clone: process \d+ \(faultline_agent\) died serving spawn: killed by SIGSEGV|expected success, got SIGSEGV)$/,
    );
    assert.deepEqual(agentsOf(process.pid), []);
    // The same file passes on the model, whose process has no libraries to lose.
    const model = await runScenario(oneScenario('munmap-past-map.yaml'), {
      backend: 'model',
      seed: 1,
      keepGoing: false,
    });
    assert.equal(model.status, 'pass');
  });

  it('an agent that stops answering is killed after its timeout and reported; none is left', {
    skip: hostSkip,
  }, () => {
    const backend = new HostBackend({ isolated: true, agentTimeoutMs: 300 });
    const pid = backend.self.pid;
    process.kill(pid, 'SIGSTOP');
    assert.throws(
      () => backend.self.mmap({ address: 0, length: 4096, prot: 3, flags: 0x22, fd: -1, offset: 0 }),
      (error: unknown) =>
        error instanceof AgentDiedError &&
        error.message ===
          `mmap: process ${pid} (faultline_agent) did not answer mmap within 300 ms; it was killed: killed by SIGKILL`,
    );
    assert.deepEqual(agentsOf(process.pid), []);
    backend.dispose();
  });
});

describe('item 2: a copy whose source faults on a MISSING range', () => {
  it('on the host the sleeping copy is reported at once, not waited for, and the agent is reaped', {
    skip: hostSkip,
  }, async () => {
    const report = await runScenario(oneScenario('copy-src-missing.yaml'), {
      backend: 'host',
      seed: 1,
      keepGoing: false,
    });
    assert.equal(report.status, 'error');
    assert.equal(
      report.reason,
      'step 4 (copy, line 8): ioctl(UFFDIO_COPY) sleeps in the kernel: its source faulted on a ' +
        'userfaultfd-registered range, and Linux puts the caller to sleep until that fault is resolved ' +
        '(the model, whose caller cannot sleep, answers EFAULT)',
    );
    assert.deepEqual(agentsOf(process.pid), []);
  });

  it('the model answers EFAULT, and diff reports the divergence with both sides', {
    skip: hostSkip,
  }, async () => {
    const model = await runScenario(oneScenario('copy-src-missing.yaml'), {
      backend: 'model',
      seed: 1,
      keepGoing: false,
    });
    assert.deepEqual(model.steps[4]?.result, { errno: 'EFAULT', copy: -14 });
    const diff = await diffScenario(oneScenario('copy-src-missing.yaml'), { seed: 1 });
    assert.equal(diff.divergences.length, 1);
    assert.equal(diff.divergences[0]?.index, 4);
    assert.match(JSON.stringify(diff.divergences[0]?.host), /sleeps in the kernel/);
  });
});

describe('item 7: the model API checks its arguments as the kernel does', () => {
  const vmaList = (model: ModelBackend) => model.self.vmas(0, 2 ** 48);

  it('mmap of length -4096 is the kernel ENOMEM of 2^64 - 4096 bytes, and no VMA is made', () => {
    const model = new ModelBackend({ seed: 1 });
    const program = new Process(model.self);
    const before = vmaList(model);
    const error = expectErrno(() => program.mmap({ length: -4096 }), ENOMEM);
    assert.equal(
      error.message,
      'ENOMEM: Cannot allocate memory, mmap length: 0xfffffffffffff000 is larger than the address space',
    );
    assert.deepEqual(vmaList(model), before);
    const area = program.mmap({ length: 8192 });
    expectErrno(() => program.munmap(area, -4096), EINVAL);
    expectErrno(() => program.mprotect(area, -4096, 0), ENOMEM);
    expectErrno(() => model.self.madvise(area, -1, 4), EINVAL);
    assert.deepEqual(vmaList(model), [{ start: area, end: area + 8192, modes: [] }]);
  });

  it('a wrong type is a TypeError naming the call and the argument, and changes nothing', () => {
    const model = new ModelBackend({ seed: 1 });
    const program = new Process(model.self);
    const area = program.mmap({ length: 4096 });
    const before = vmaList(model);
    assert.throws(() => program.mmap({ length: '4096' as never }), {
      name: 'TypeError',
      message: 'mmap: length must be an integer, not the string "4096"',
    });
    assert.throws(() => program.munmap(area, 1.5), {
      name: 'TypeError',
      message: 'munmap: length must be an integer, not number 1.5',
    });
    assert.throws(() => program.write(area, 'hello' as never), {
      name: 'TypeError',
      message: 'write: data must be a Uint8Array, not the string "hello"',
    });
    assert.throws(() => program.read(area, -1), {
      name: 'TypeError',
      message: 'read: length must be from 0 to 2^32, not -1',
    });
    const fd = program.memfd('f', { size: 4096 });
    assert.throws(() => program.pwrite(fd, 'abc' as never, 0), {
      name: 'TypeError',
      message: 'pwrite: data must be a Uint8Array, not the string "abc"',
    });
    assert.deepEqual([...program.pread(fd, 4, 0)], [0, 0, 0, 0]);
    assert.deepEqual(vmaList(model), before);
    assert.deepEqual([...program.read(area, 2)], [0, 0]);
  });

  it('a bad thread program is refused before the thread exists; the process runs on', async () => {
    const model = new ModelBackend({ seed: 1 });
    const program = new Process(model.self);
    const area = program.mmap({ length: 4096 });
    const tasks = () => (model.self as unknown as { process: { tasks: unknown[] } }).process.tasks.length;
    assert.throws(() => program.thread([{ kind: 'read', address: area, length: -1 }]), {
      name: 'TypeError',
      message: 'spawnThread: program[0].length must be from 0 to 2^32, not -1',
    });
    assert.throws(
      () => program.thread([{ kind: 'read', address: area, length: 1 }, { kind: 'jump' } as never]),
      {
        name: 'TypeError',
        message: 'spawnThread: program[1].kind must be read, write or syscall, not the string "jump"',
      },
    );
    assert.throws(() => program.thread([{ kind: 'syscall', call: 'exec' as never, args: [] }]), {
      name: 'TypeError',
      message: 'spawnThread: program[0].call must be madvise, munmap, mremap or fork, not the string "exec"',
    });
    assert.equal(tasks(), 0);
    await model.settle();
    const result = await program.thread([{ kind: 'write', address: area, data: new Uint8Array([7]) }]).join();
    assert.equal(result.state, 'done');
    assert.deepEqual([...program.read(area, 1)], [7]);
  });

  it('nextMessages on a closed userfaultfd rejects with EBADF instead of resolving [] for ever', async () => {
    const model = new ModelBackend({ seed: 1 });
    const program = new Process(model.self);
    const uffd = program.userfaultfd();
    uffd.api();
    uffd.close();
    await assert.rejects(uffd.nextMessages(), (error: unknown) => {
      assert.ok(error instanceof KernelError);
      assert.equal(error.errno, EBADF);
      assert.match(error.message, /this userfaultfd was closed/);
      return true;
    });
  });
});

describe('item 8: bounded input', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'faultline-hostile-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('a FIFO named *.yaml is refused without being opened (it used to hang run)', () => {
    const fifo = join(scratch, 'fifo.yaml');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const run = faultline(['run', fifo], 20_000);
    assert.equal(run.status, 2);
    assert.equal(
      run.stderr,
      `faultline: ${fifo}:1:1: (file): a FIFO, not a regular file: scenarios are files\n`,
    );
    rmSync(fifo);
  });

  it('run /dev/zero is refused at once (it grew 3 GB)', () => {
    const run = faultline(['run', '/dev/zero'], 20_000);
    assert.equal(run.status, 2);
    assert.equal(
      run.stderr,
      'faultline: /dev/zero:1:1: (file): a character device, not a regular file: scenarios are files\n',
    );
  });

  it('a scenario file over 1 MiB is refused before it is parsed (16 MB of YAML took 2.7 GB)', () => {
    const big = join(scratch, 'big.yaml');
    writeFileSync(big, `name: big\nsteps:\n${'  - mmap: {name: a, length: 4K}\n'.repeat(40_000)}`);
    const run = faultline(['run', big], 20_000);
    assert.equal(run.status, 2);
    assert.equal(
      run.stderr,
      `faultline: ${big}:1:1: (file): larger than 1048576 bytes, the most a scenario file may have\n`,
    );
  });

  it('a YAML alias bomb is one line, no stack trace, exit 2', () => {
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 12; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(', ')}]`,
      );
    const bomb = join(scratch, 'bomb.yaml');
    writeFileSync(bomb, `${lines.join('\n')}\nname: bomb\nsteps: [*a11]\n`);
    const run = faultline(['run', bomb], 20_000);
    assert.equal(run.status, 2);
    assert.equal(
      run.stderr,
      `faultline: ${bomb}:1:1: (file): YAML aliases expand too far (more than 100 uses of one anchor's nodes)\n`,
    );
  });

  it('a step that would populate 64 TiB is refused at load, naming file, line and field', () => {
    const run = faultline(['run', 'test/fixtures/hostile/zeropage-64t.yaml']);
    assert.equal(run.status, 2);
    assert.equal(
      run.stderr,
      'faultline: test/fixtures/hostile/zeropage-64t.yaml:8:44: steps[4].zeropage.length: ' +
        '70368744177664 bytes is more than one step may touch (268435456)\n',
    );
  });

  it('--size 1024G and --reads 2e9 are refused in one line naming the option', () => {
    const size = faultline(['workload', 'snapshot-restore', '--size', '1024G']);
    assert.equal(size.status, 2);
    assert.match(
      size.stderr,
      /^faultline: --size: 1024 GiB is more than [\d.]+ GiB \(half this machine's memory, at most 64 GiB\): the workload touches every page\n$/,
    );
    for (const workload of ['postcopy', 'background-snapshot', 'gc-compaction']) {
      const run = faultline(['workload', workload, '--size', '1024G']);
      assert.equal(run.status, 2, workload);
      assert.match(
        run.stderr,
        /^faultline: option '--size <bytes>' argument '1024G' is invalid\. 1024 GiB is more than/,
      );
    }
    const reads = faultline(['workload', 'gc-compaction', '--reads', '2e9']);
    assert.equal(reads.status, 2);
    assert.equal(
      reads.stderr,
      "faultline: option '--reads <n>' argument '2e9' is invalid. '2e9' is not an integer from 0 to 10,000,000\n",
    );
  });
});

describe('item 9: error paths say what happened', () => {
  it('a read without expect that takes SIGSEGV fails its step, on both backends', async () => {
    for (const backend of hostSkip === false ? (['model', 'host'] as const) : (['model'] as const)) {
      const report = await runScenario(oneScenario('segv-without-expect.yaml'), {
        backend,
        seed: 1,
        keepGoing: false,
      });
      assert.equal(report.status, 'fail', backend);
      assert.equal(report.reason, 'step 1 (read, line 5): expected success, got SIGSEGV', backend);
    }
  });

  it('demo --pages 0 is a usage error, not a run of nothing', () => {
    const run = faultline(['demo', '--pages', '0']);
    assert.equal(run.status, 2);
    assert.equal(
      run.stderr,
      "faultline: option '--pages <n>' argument '0' is invalid. '0' is not an integer from 1 to 262,144\n",
    );
  });

  it('run on a directory without scenarios exits 2: nothing ran', () => {
    const empty = mkdtempSync(join(tmpdir(), 'faultline-empty-'));
    try {
      const run = faultline(['run', empty]);
      assert.equal(run.status, 2);
      assert.equal(run.stderr, `faultline: no scenario file (*.yaml, *.yml, *.json) in ${empty}\n`);
    } finally {
      rmSync(empty, { recursive: true });
    }
  });

  it('a missing path, a symlink loop and --backend bogus are one line each, exit 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'faultline-loop-'));
    try {
      symlinkSync(join(dir, 'b.yaml'), join(dir, 'a.yaml'));
      symlinkSync(join(dir, 'a.yaml'), join(dir, 'b.yaml'));
      const loop = faultline(['run', join(dir, 'a.yaml')]);
      assert.equal(loop.status, 2);
      assert.equal(
        loop.stderr,
        `faultline: ${join(dir, 'a.yaml')}: too many levels of symbolic links (ELOOP)\n`,
      );
    } finally {
      rmSync(dir, { recursive: true });
    }
    const missing = faultline(['run', '/nonexistent/x.yaml']);
    assert.equal(missing.status, 2);
    assert.equal(missing.stderr, 'faultline: /nonexistent/x.yaml: no such file or directory (ENOENT)\n');
    const bogus = faultline(['run', 'scenarios/anon', '--backend', 'bogus']);
    assert.equal(bogus.status, 2);
    assert.doesNotMatch(bogus.stderr, /\n\s+at /);
    assert.equal(bogus.stderr.split('\n').length, 2);
  });
});

describe('item 9: --trace, --plot and --record-working-set create their file, never a directory', () => {
  const small = ['workload', 'snapshot-restore', '--size', '64K'];

  it('a missing parent directory is one line, exit 2, before the run; nothing is created', () => {
    const dir = mkdtempSync(join(tmpdir(), 'faultline-out-'));
    try {
      for (const option of ['--trace', '--plot', '--record-working-set']) {
        const file = join(dir, 'no', 'such', 'out.svg');
        const run = faultline([...small, option, file]);
        assert.equal(run.status, 2, option);
        assert.equal(
          run.stderr,
          `faultline: ${option} ${file}: directory ${join(dir, 'no', 'such')} does not exist (create it first)\n`,
        );
        assert.equal(run.stdout, '', `${option}: nothing ran`);
        assert.deepEqual(readdirSync(dir), [], `${option}: no directory was made`);
      }
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('a parent that is a file, and a target that is a directory, are one line each, exit 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'faultline-out-'));
    try {
      writeFileSync(join(dir, 'file'), 'x');
      const underFile = faultline([...small, '--trace', join(dir, 'file', 't.json')]);
      assert.equal(underFile.status, 2);
      assert.equal(
        underFile.stderr,
        `faultline: --trace ${join(dir, 'file', 't.json')}: ${join(dir, 'file')} is not a directory\n`,
      );
      const beside = faultline([...small, '--trace', join(dir, 't.json')]);
      assert.equal(beside.status, 0, 'a file in an existing directory is written');
      assert.ok(readFileSync(join(dir, 't.json'), 'utf8').startsWith('{"traceEvents":['));
      const directory = faultline([...small, '--trace', dir]);
      assert.equal(directory.status, 2);
      assert.equal(directory.stderr, `faultline: --trace ${dir}: is a directory\n`);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('npm start makes the directory its own outputs go to', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      scripts: { start: string };
    };
    const start = pkg.scripts.start;
    const made = [...start.matchAll(/mkdir -p (\S+) &&/g)].map((match) => match[1]);
    const outputs = [...start.matchAll(/--(?:trace|plot) (\S+)/g)].map((match) => match[1]!);
    assert.ok(outputs.length > 0, start);
    for (const output of outputs) assert.ok(made.includes(dirname(output)), `${output}: ${start}`);
  });
});

describe("item 9: snapshot-restore with a balloon over a vCPU's first page", () => {
  // With two sequential vCPUs over 256 pages, vcpu1 starts at page 128: a balloon of 128 or more pages
  // discards it. Its fault and the balloon's REMOVE then arrive in one read(); serving the fault first
  // refilled the discarded page with the snapshot ("pages DIFFER" on both backends).
  const backends = hostSkip === false ? (['model', 'host'] as const) : (['model'] as const);
  for (const backend of backends) {
    it(`every read and every page is right on the ${backend} backend`, async () => {
      const { runSnapshotRestore } = await import('../src/workloads/snapshot-restore.ts');
      const { Trace } = await import('../src/trace/trace.ts');
      for (const [balloonPages, pattern, seed] of [
        [128, 'sequential', 1],
        [129, 'sequential', 2],
        [256, 'sequential', 3],
        [200, 'random', 4],
      ] as const) {
        const kernel = backend === 'model' ? new ModelBackend({ seed }) : new HostBackend();
        try {
          const result = await runSnapshotRestore({
            backend: kernel,
            mode: 'anon',
            guestBytes: 256 * 4096,
            vcpus: 2,
            pattern,
            seed,
            prefetchWindow: 0,
            balloonPages,
            trace: new Trace(1, false),
          });
          const what = `${backend}, --balloon ${balloonPages}, ${pattern}`;
          assert.deepEqual(result.wrongReads, [], what);
          assert.equal(result.pages, 256, what);
          assert.equal(result.verifiedPages, 256, what);
          assert.equal(result.stats.removeEvents, 1, what);
        } finally {
          kernel.close?.();
        }
      }
    });
  }
});

describe('workloads: the guest of a host snapshot restore is an agent process, never faultline', {
  skip: hostSkip,
}, () => {
  /** Node's anonymous read-write mappings that `pid`'s address space does not overlap. */
  function nodeOnlyAnonymous(pid: number): { start: number; end: number }[] {
    const parse = (maps: string) =>
      maps
        .split('\n')
        .filter((line) => line.length > 0)
        .map((line) => {
          const [range, perms, , , inode, path] = line.split(/\s+/);
          const [start, end] = range!.split('-').map((hex) => Number.parseInt(hex, 16));
          return { start: start!, end: end!, perms: perms!, anonymous: inode === '0' && !path };
        });
    const theirs = parse(readFileSync(`/proc/${pid}/maps`, 'utf8'));
    return parse(readFileSync('/proc/self/maps', 'utf8')).filter(
      (mine) =>
        mine.anonymous &&
        mine.perms.startsWith('rw') &&
        !theirs.some((other) => other.start < mine.end && mine.start < other.end),
    );
  }

  it("a handler's uffd reaches the guest's memory only: not Node's; the agent ends with the run", async (t) => {
    const { runSnapshotRestore } = await import('../src/workloads/snapshot-restore.ts');
    const { Trace } = await import('../src/trace/trace.ts');
    const builtin = (await import('../src/handlers/builtin.ts')).default;
    const backend = new HostBackend();
    if (!backend.canTakeFds) {
      backend.close();
      t.skip('build/ predates pidfdGetfd: npm run build:native');
      return;
    }
    let vmmPid = 0;
    let guestMappedInNode = true;
    let attempt: unknown = null;
    try {
      const result = await runSnapshotRestore({
        backend,
        mode: 'anon',
        guestBytes: 64 * 4096,
        vcpus: 2,
        pattern: 'random',
        seed: 1,
        prefetchWindow: 0,
        trace: new Trace(1, false),
        // What a hostile handler binary could do with its uffd: register memory of faultline's own.
        handler: async (session) => {
          vmmPid = agentsOf(process.pid)[0] ?? 0;
          const base = Number(session.regions[0]!.base_host_virt_addr);
          guestMappedInNode = readFileSync('/proc/self/maps', 'utf8').includes(`${base.toString(16)}-`);
          const target = nodeOnlyAnonymous(vmmPid!)[0]!;
          const range = { start: target.start, length: 4096 };
          try {
            session.uffd.register(range, { missing: true });
            session.uffd.unregister(range);
            attempt = 'registered';
          } catch (error) {
            attempt = error;
          }
          await builtin(session);
        },
      });
      assert.deepEqual(result.wrongReads, []);
      assert.equal(result.verifiedPages, result.pages);
    } finally {
      backend.close();
    }
    assert.ok(vmmPid > 0, 'the VMM is an agent of this process');
    assert.equal(guestMappedInNode, false, "the guest's memory is not in Node");
    assert.ok(attempt instanceof KernelError, `registering Node's memory: ${String(attempt)}`);
    // UFFDIO_REGISTER of a range no VMA of the uffd's mm covers (one lies above it): EINVAL.
    assert.equal(attempt.code, 'EINVAL');
    assert.ok(!existsSync(`/proc/${vmmPid}`), 'the agent exited and was reaped');
  });
});

describe('item 6: huge pages are given back on every exit path and shared fairly', {
  skip: hostSkip || (process.geteuid?.() !== 0 ? 'not root' : false),
}, () => {
  const overcommitPath = '/proc/sys/vm/nr_overcommit_hugepages';
  const statePath = join(tmpdir(), 'faultline-hugepages', 'state.json');
  const overcommit = () => Number(readFileSync(overcommitPath, 'utf8'));
  const holders = (): Record<string, number> => {
    try {
      return JSON.parse(readFileSync(statePath, 'utf8')).holders;
    } catch {
      return {};
    }
  };
  const capabilities = join(root, 'src/host/capabilities.ts');
  /** A run that reserves `pages` huge pages past the free pool, says so, and waits to be killed. */
  function holder(pages: number) {
    const script =
      `import { reserveHugePages } from ${JSON.stringify(capabilities)};` +
      `const reason = reserveHugePages(${pages}); console.log(reason ?? 'held'); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const ready = new Promise<string>((resolve) => {
      child.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString().trim()));
    });
    return { child, ready };
  }

  it('two concurrent runs add their pages; Ctrl-C and SIGTERM each give theirs back; nothing stays raised', async () => {
    const before = overcommit();
    const othersBefore = Object.keys(holders()).length;
    const a = holder(3);
    assert.equal(await a.ready, 'held');
    const b = holder(5);
    assert.equal(await b.ready, 'held');
    const held = holders();
    assert.equal(held[String(a.child.pid)], 3);
    assert.equal(held[String(b.child.pid)], 5);
    const raised = overcommit();
    a.child.kill('SIGINT');
    const [, signalA] = (await once(a.child, 'exit')) as [number | null, string | null];
    assert.equal(signalA, 'SIGINT');
    assert.equal(holders()[String(a.child.pid)], undefined);
    assert.equal(overcommit(), raised - 3);
    b.child.kill('SIGTERM');
    const [, signalB] = (await once(b.child, 'exit')) as [number | null, string | null];
    assert.equal(signalB, 'SIGTERM');
    assert.equal(holders()[String(b.child.pid)], undefined);
    if (othersBefore === 0 && Object.keys(holders()).length === 0) assert.equal(overcommit(), before);
  });
});

describe('item 9: Ctrl-C before the Firecracker handshake', { skip: hostSkip }, () => {
  it('removes the socket file, so the next run can bind it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'faultline-fc-'));
    try {
      const socket = join(dir, 'uffd.sock');
      const script =
        `import { HostBackend } from ${JSON.stringify(join(root, 'src/host/host-backend.ts'))};` +
        `import { listenHandshake } from ${JSON.stringify(join(root, 'src/workloads/firecracker.ts'))};` +
        `listenHandshake(new HostBackend(), ${JSON.stringify(socket)}); console.log('listening');` +
        'setInterval(() => {}, 1000);';
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await once(child.stdout, 'data');
      assert.ok(readdirSync(dir).includes('uffd.sock'));
      child.kill('SIGINT');
      const [, signal] = (await once(child, 'exit')) as [number | null, string | null];
      assert.equal(signal, 'SIGINT');
      assert.deepEqual(readdirSync(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
