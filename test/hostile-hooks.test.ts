/**
 * Hostile memory types cannot hurt the core (issue 14, item 3 and 4): a hook
 * that throws a value nothing can print, answers with another file's folio,
 * mutates the objects it is shown, hoards folios, or drops references later
 * from a timer gets one warning naming the type and the hook and the errno
 * (or SIGBUS, or a refused registration) the core turns it into, and the
 * core's state stays exactly as it was. Every later hook call, on every
 * type, still works. Types come from test/fixtures/memtypes/hostile.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConformanceError, type ConformanceReport, runConformance } from '../src/conformance/runner.ts';
import { digestKernel } from '../src/model/check.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
} from '../src/uapi/constants.ts';
import { EFAULT, EINVAL } from '../src/uapi/errno.ts';
import { type Hostility, hostileModule } from './fixtures/memtypes/hostile.ts';
import { createTestModel, expectErrno, filled, PAGE } from './helpers.ts';

function setup(hostility: Hostility) {
  const model = createTestModel({ extraMemoryTypes: [hostileModule(hostility)] });
  const kernel = model.backend.kernel;
  /** Runs `call` and checks it changed nothing the kernel holds. */
  const unchanged = <T>(call: () => T): T => {
    const before = digestKernel(kernel);
    const result = call();
    assert.equal(digestKernel(kernel), before, 'the refused call changed the kernel state');
    return result;
  };
  /** Exactly one warning so far: the type, the hook and the problem, verbatim. */
  const oneWarning = (hook: string, problem: string | RegExp) => {
    const warnings = kernel.hooks.warnings;
    assert.equal(warnings.length, 1, `expected one warning, got ${JSON.stringify(warnings)}`);
    const prefix = `faultline: memory type 'hostile-${hostility}' hook ${hook}: `;
    assert.ok(warnings[0]!.startsWith(prefix), `'${warnings[0]}' should start with '${prefix}'`);
    if (typeof problem === 'string') assert.equal(warnings[0]!.slice(prefix.length), problem);
    else assert.match(warnings[0]!.slice(prefix.length), problem);
  };
  return { ...model, kernel, unchanged, oneWarning };
}

/** Every kind of hook call still works: anonymous COPY, a shmem-like fault, a pwrite. */
function laterHookCallsWork(t: ReturnType<typeof setup>) {
  const { process } = t;
  const anon = process.mmap({ length: PAGE });
  const uffd = process.userfaultfd();
  uffd.api();
  uffd.register({ start: anon, length: PAGE }, UFFDIO_REGISTER_MODE_MISSING);
  const src = process.mmapIsolated(PAGE);
  process.write(src, filled(PAGE, 0x61));
  assert.equal(uffd.copy({ dst: anon, src, length: PAGE }), PAGE);
  assert.deepEqual(process.read(anon, 2), filled(2, 0x61));
  const fd = process.memfd('later', { size: PAGE });
  process.pwrite(fd, filled(PAGE, 0x62), 0);
  const area = process.mmap({ length: PAGE, fd, shared: true });
  assert.deepEqual(process.read(area, 2), filled(2, 0x62));
  uffd.close();
  t.check();
}

describe('a hook that throws a value nothing can print', () => {
  const cases: [Hostility, string][] = [
    ['throws-null-prototype', 'threw: an object without a message'],
    ['throws-message-getter', 'threw: an object whose message cannot be read'],
    ['throws-proxy', 'threw: an object whose message cannot be read'],
  ];
  for (const [hostility, problem] of cases) {
    it(`${hostility}: CONTINUE fails with EFAULT, one warning, state intact, later hook calls work`, () => {
      const t = setup(hostility);
      const fd = t.process.memfd('file', { size: 2 * PAGE });
      t.process.pwrite(fd, filled(PAGE, 0x5a), 0);
      const area = t.process.mmap({ length: 2 * PAGE, fd, shared: true });
      const uffd = t.process.userfaultfd();
      uffd.api();
      uffd.register({ start: area, length: 2 * PAGE }, UFFDIO_REGISTER_MODE_MINOR);
      const error = t.unchanged(() =>
        expectErrno(() => uffd.continue({ start: area, length: PAGE }), EFAULT),
      );
      assert.match(error.message, new RegExp(`hostile-${hostility}' hook get_folio_noalloc`));
      t.oneWarning('get_folio_noalloc (from UFFDIO_CONTINUE)', problem);
      // The same broken hook on the fault path: SIGBUS, no fault message, nothing mapped.
      const result = t.unchanged(() => {
        try {
          t.process.read(area, 1);
          return 'read';
        } catch (thrown) {
          return (thrown as { signalName?: string }).signalName;
        }
      });
      assert.equal(result, 'SIGBUS');
      assert.equal(uffd.readMessages().length, 0);
      uffd.close();
      laterHookCallsWork(t);
    });
  }
});

describe('a folio-hoarding hook', () => {
  it('a reference on each of 65536 cached folios, then a throw: every reference dropped again', () => {
    const t = setup('hoards');
    const pages = 65_536;
    const fd = t.process.memfd('big', { size: pages * PAGE });
    // Preallocated page cache: the frames are never written, so they cost no host memory.
    t.process.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, pages * PAGE);
    const area = t.process.mmap({ length: PAGE, fd, shared: true });
    const uffd = t.process.userfaultfd();
    uffd.api();
    uffd.register({ start: area, length: PAGE }, UFFDIO_REGISTER_MODE_MINOR);
    t.unchanged(() => expectErrno(() => uffd.continue({ start: area, length: PAGE }), EFAULT));
    t.oneWarning('get_folio_noalloc (from UFFDIO_CONTINUE)', 'threw: hoarded');
    t.check();
  });
});

describe('file hooks go through the checker', () => {
  it('getFolioForWrite answering with another file’s folio: pwrite fails with EFAULT, the other file keeps its bytes', () => {
    const t = setup('write-other-file');
    const first = t.process.memfd('first', { size: PAGE });
    t.process.pwrite(first, filled(PAGE, 0x0f), 0);
    const second = t.process.memfd('second', { size: PAGE });
    const error = t.unchanged(() =>
      expectErrno(() => t.process.pwrite(second, filled(PAGE, 0x5a), 0), EFAULT),
    );
    assert.match(error.message, /hook getFolioForWrite/);
    t.oneWarning('getFolioForWrite', /^returned folio \d+ of another file \(inode 1\)$/);
    assert.deepEqual(t.process.pread(first, PAGE, 0), filled(PAGE, 0x0f));
    assert.deepEqual(t.process.pread(second, PAGE, 0), filled(PAGE, 0));
    t.check();
  });

  it('write(2) copying into another file’s folio: EFAULT, the other file keeps its bytes', () => {
    const t = setup('write-copies-elsewhere');
    const first = t.process.memfd('first', { size: PAGE });
    t.process.pwrite(first, filled(PAGE, 0x0f), 0);
    const second = t.process.memfd('second', { size: PAGE });
    t.process.pwrite(second, filled(PAGE, 0x01), 0);
    t.unchanged(() => expectErrno(() => t.process.writeFile(second, filled(PAGE, 0x5a)), EFAULT));
    t.oneWarning('write', /^copied into folio \d+, which belongs to inode 1$/);
    assert.deepEqual(t.process.pread(first, PAGE, 0), filled(PAGE, 0x0f));
    assert.deepEqual(t.process.pread(second, PAGE, 0), filled(PAGE, 0x01));
    t.check();
  });

  it('mmapCheck keeping a reference: mmap fails with EFAULT, the reference dropped, no mapping', () => {
    const t = setup('mmap-check-keeps-reference');
    const fd = t.process.memfd('file', { size: PAGE });
    t.process.pwrite(fd, filled(PAGE, 0x0f), 0);
    t.unchanged(() => expectErrno(() => t.process.mmap({ length: PAGE, fd, shared: true }), EFAULT));
    t.oneWarning('mmapCheck', /^kept 1 reference\(s\) on folio \d+$/);
    t.check();
  });

  it('fallocateCheck answering a string: fallocate fails with EFAULT, nothing allocated', () => {
    const t = setup('fallocate-check-not-a-number');
    const fd = t.process.memfd('file', { size: 4 * PAGE });
    t.unchanged(() => expectErrno(() => t.process.fallocate(fd, 0, 0, 4 * PAGE), EFAULT));
    t.oneWarning('fallocateCheck', 'returned "fine", neither 0 nor -errno');
    t.check();
  });

  it('inodePageShift answering 13: memfd_create fails with EFAULT, no fd', () => {
    const t = setup('page-shift-13');
    t.unchanged(() => expectErrno(() => t.process.memfd('file'), EFAULT));
    t.oneWarning('inodePageShift', 'returned 13, neither a page shift (12, 21, 30) nor -errno');
    t.check();
  });

  it('initInode throwing: memfd_create fails with EFAULT, no fd, no inode', () => {
    const t = setup('init-inode-throws');
    t.process.memfd('first');
    t.unchanged(() => expectErrno(() => t.process.memfd('second'), EFAULT));
    t.oneWarning('initInode', 'threw: an object whose message cannot be read');
    t.check();
  });
});

describe('hooks see read-only views, never the core’s objects', () => {
  it('can_userfault emptying the inode’s i_mmap: the registration is refused, a later hole punch still unmaps the page', () => {
    const t = setup('mutates-inode');
    const fd = t.process.memfd('file', { size: PAGE });
    t.process.pwrite(fd, filled(PAGE, 0x5a), 0);
    const area = t.process.mmap({ length: PAGE, fd, shared: true });
    assert.deepEqual(t.process.read(area, 1), filled(1, 0x5a));
    const uffd = t.process.userfaultfd();
    uffd.api();
    t.unchanged(() =>
      expectErrno(() => uffd.register({ start: area, length: PAGE }, UFFDIO_REGISTER_MODE_MISSING), EINVAL),
    );
    t.oneWarning('can_userfault', "threw: Cannot read properties of undefined (reading 'clear')");
    t.process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE);
    assert.deepEqual(t.process.read(area, 1), filled(1, 0), 'the punched page is gone from the mapping');
    t.check();
  });

  it('can_userfault moving the VMA it was shown: the registration is refused, the VMA unchanged', () => {
    const t = setup('mutates-vma');
    const fd = t.process.memfd('file', { size: 2 * PAGE });
    const area = t.process.mmap({ length: 2 * PAGE, fd, shared: true });
    const uffd = t.process.userfaultfd();
    uffd.api();
    t.unchanged(() =>
      expectErrno(
        () => uffd.register({ start: area, length: 2 * PAGE }, UFFDIO_REGISTER_MODE_MISSING),
        EINVAL,
      ),
    );
    t.oneWarning('can_userfault', /^threw: Cannot set property start of #<\w+> which has only a getter$/);
    t.check();
  });

  it('the invariant checker finds a VMA missing from its inode’s i_mmap, and a mapped page the cache no longer holds', () => {
    const t = createTestModel({ checkAfterPump: false });
    const fd = t.process.memfd('file', { size: PAGE });
    t.process.pwrite(fd, filled(PAGE, 0x5a), 0);
    const area = t.process.mmap({ length: PAGE, fd, shared: true });
    t.process.read(area, 1);
    const file = t.backend.kernel.processes.get(t.backend.self.pid)!.fds.get(fd);
    assert.ok(file?.kind === 'inode');
    const inode = file.inode;
    const vmas = [...inode.mappings];
    inode.mappings.clear();
    assert.throws(
      t.check,
      /invariant: VMA 0x[0-9a-f]+-0x[0-9a-f]+ \S+ maps memfd:file but is missing from its i_mmap/,
    );
    // The punch unmaps only what i_mmap names: the page stays mapped, out of the page cache.
    t.process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE);
    for (const vma of vmas) inode.mappings.add(vma);
    assert.throws(
      t.check,
      /invariant: entry at 0x[0-9a-f]+ maps folio \d+ \(inode -1, index 0\), not the page cache of memfd:file at 0/,
    );
  });
});

describe('a memory type acting later, from a timer', () => {
  it('a reference dropped from a timer after a correct fault: refused with one warning, the page still mapped and intact', async () => {
    const t = setup('timer-drops-reference');
    const fd = t.process.memfd('file', { size: PAGE });
    t.process.pwrite(fd, filled(PAGE, 0x5a), 0);
    const area = t.process.mmap({ length: PAGE, fd, shared: true });
    assert.deepEqual(t.process.read(area, 1), filled(1, 0x5a));
    const before = digestKernel(t.kernel);
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(t.kernel.hooks.warnings.length, 1, JSON.stringify(t.kernel.hooks.warnings));
    assert.match(
      t.kernel.hooks.warnings[0]!,
      /^faultline: memory type 'hostile-timer-drops-reference' called putFolio\(\d+\) outside any hook call \(from a timer or a promise\?\): refused$/,
    );
    assert.equal(digestKernel(t.kernel), before);
    t.check();
    t.process.munmap(area, PAGE);
    t.process.close(fd);
    t.check();
  });
});

describe('conformance against hostile modules', () => {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const fixture = (name: string) => join(root, 'test/fixtures/memtypes', name);
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'conformance', ...args], {
      cwd: root,
      encoding: 'utf8',
      // On a suite that hangs, this test fails instead of hanging with it.
      timeout: 120_000,
    });

  it('a hook that never returns: the case is killed at its timeout, one line, exit 1', () => {
    const run = cli('--module', fixture('hostile-loop.ts'), '--case', 'register-modes', '--timeout', '3000');
    assert.equal(run.signal, null, 'the suite itself must not hang');
    assert.equal(run.status, 1, run.stderr);
    assert.deepEqual(run.stdout.trimEnd().split('\n'), [
      'fail  hostile-loops-forever  register-modes         killed: no result within 3000 ms (a hook that never returns?)',
      '0 passed, 1 failed, 0 skipped',
    ]);
  });

  it('a microtask loop that grows memory: the case is killed at its memory cap, the next case still runs', async () => {
    const report = await runConformance({
      modules: [{ module: hostileModule('microtask-flood'), path: fixture('hostile-flood.ts') }],
      cases: ['register-modes', 'register-wp-async'],
      isolate: true,
      memoryMb: 128,
      timeoutMs: 60_000,
    });
    assert.deepEqual(
      report.results.map((result) => [result.case, result.status, result.reason]),
      [
        ['register-modes', 'fail', 'killed: the case passed its 128 MiB memory cap'],
        ['register-wp-async', 'pass', undefined],
      ],
    );
  });

  it('a reference dropped from a timer after the case: the audit after timers fails the case, exit 1', () => {
    const run = cli('--module', fixture('hostile-timer.ts'), '--case', 'missing-fault', '--json');
    assert.equal(run.status, 1, run.stderr);
    const report = JSON.parse(run.stdout) as ConformanceReport;
    assert.equal(report.results.length, 1);
    const [result] = report.results;
    assert.equal(result!.status, 'fail');
    assert.match(
      result!.reason!,
      /^hook contract broken: faultline: memory type 'hostile-timer-drops-reference' called putFolio\(\d+\) outside any hook call \(from a timer or a promise\?\): refused$/,
    );
  });

  for (const [file, what] of [
    ['hostile-import-loop.mjs', 'its top-level code'],
    ['hostile-create-loop.mjs', 'its create()'],
  ] as const) {
    it(`a module whose ${what === 'its create()' ? 'create() never returns' : 'top-level code never ends'}: killed at the timeout, one line, exit 2`, () => {
      const run = cli('--module', fixture(file), '--timeout', '2000');
      assert.equal(run.signal, null, 'the suite itself must not hang');
      assert.equal(run.status, 2, run.stderr);
      assert.equal(
        run.stdout,
        `faultline conformance: --module ${fixture(file)}: ${what} did not finish within 2000 ms: killed\n`,
      );
      assert.equal(run.stderr, '');
    });
  }

  it('through the API too: none of the module runs in this process, and no worker is left', async () => {
    const before = process.getActiveResourcesInfo().length;
    await assert.rejects(
      runConformance({ modulePaths: [fixture('hostile-create-loop.mjs')], timeoutMs: 1000 }),
      (error: unknown) => {
        assert.ok(error instanceof ConformanceError);
        assert.match(
          error.message,
          /hostile-create-loop\.mjs: its create\(\) did not finish within 1000 ms: killed$/,
        );
        return true;
      },
    );
    assert.equal(process.getActiveResourcesInfo().length, before, 'the probe worker is gone');
  });

  it('usage errors still exit 2: an unknown case name', () => {
    const run = cli('--module', fixture('hostile-timer.ts'), '--case', 'no-such-case');
    assert.equal(run.status, 2);
    assert.match(run.stdout, /^faultline conformance: no conformance case named 'no-such-case' \(cases: /);
  });
});
