// Hostile and careless input cannot hurt faultline (issue 14): each repro is a test that asserts the
// exact behaviour — a one-line error and its exit code, no crash, no hang, nothing left behind.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
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
    assert.equal(report.status, 'error');
    assert.match(
      report.reason ?? '',
      /^step 1 \(munmap, line 5\): clone: process \d+ \(faultline_agent\) died serving spawn: killed by SIGSEGV$/,
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
