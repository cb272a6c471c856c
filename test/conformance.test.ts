/**
 * The memory-type conformance suite: the built-in types pass every case that
 * applies to them; a type with one broken hook fails exactly the cases that
 * call that hook (as measured on the healthy shmem it is built from), with
 * the core consistent after each; modules load from files; the CLI prints
 * text and a versioned JSON document.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CASES } from '../src/conformance/cases.ts';
import { loadMemoryTypeModule, ModuleLoadError } from '../src/conformance/module.ts';
import { type ConformanceReport, runConformance } from '../src/conformance/runner.ts';
import type { HookName } from '../src/model/mm/hooks.ts';
import { brokenModule, type Defect } from './fixtures/memtypes/broken.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fixture = (name: string) => join(root, 'test/fixtures/memtypes', name);

function statusOf(report: ConformanceReport, type: string, name: string) {
  const result = report.results.find((candidate) => candidate.type === type && candidate.case === name);
  assert.ok(result !== undefined, `no result for ${type} × ${name}`);
  return result;
}

function failures(report: ConformanceReport): string[] {
  return report.results
    .filter((result) => result.status === 'fail')
    .map((result) => `${result.type} × ${result.case}: ${result.reason}`);
}

describe('the built-in memory types', () => {
  it('on 7.1: every case × type is reported, none fails, every skip gives its reason', async () => {
    const report = await runConformance();
    assert.deepEqual(failures(report), []);
    assert.deepEqual(
      report.types.map((type) => type.name),
      ['anon', 'shmem', 'hugetlbfs', 'guest_memfd'],
    );
    assert.equal(report.results.length, CASES.length * 4);
    for (const result of report.results) {
      if (result.status === 'skip')
        assert.ok(result.reason, `${result.type} × ${result.case} skips without a reason`);
    }
    const { passed, failed, skipped } = report.summary;
    assert.equal(passed + failed + skipped, report.results.length);
    // Skips follow the declarations, never the names.
    assert.equal(statusOf(report, 'anon', 'minor-fault').reason, 'does not declare UFFDIO_CONTINUE');
    assert.equal(statusOf(report, 'anon', 'punch-hole').reason, 'has no files (anonymous memory)');
    assert.equal(
      statusOf(report, 'hugetlbfs', 'missing-zeropage').reason,
      'does not declare UFFDIO_ZEROPAGE',
    );
    assert.equal(
      statusOf(report, 'shmem', 'undeclared-ioctls').reason,
      'declares every range ioctl the case checks',
    );
    assert.match(statusOf(report, 'guest_memfd', 'private-fill').reason!, /MAP_PRIVATE.*EINVAL/);
    // guest_memfd with the final vm_uffd_ops serves MISSING and MINOR like the others.
    for (const name of [
      'missing-fault',
      'minor-fault',
      'minor-and-missing',
      'continue-errnos',
      'fork-event',
    ]) {
      assert.equal(statusOf(report, 'guest_memfd', name).status, 'pass', name);
    }
    for (const type of ['anon', 'shmem', 'hugetlbfs', 'guest_memfd']) {
      assert.equal(statusOf(report, type, 'register-modes').status, 'pass', type);
    }
  });

  it('on 6.18: guest_memfd has no uffdOps, so its userfaultfd cases skip and its registrations are refused', async () => {
    const report = await runConformance({ version: '6.18', memtypes: ['guest_memfd'] });
    assert.deepEqual(failures(report), []);
    assert.equal(statusOf(report, 'guest_memfd', 'register-modes').status, 'pass');
    assert.equal(statusOf(report, 'guest_memfd', 'register-wp-async').status, 'pass');
    assert.equal(statusOf(report, 'guest_memfd', 'minor-fault').reason, 'declares no uffdOps');
  });
});

describe('a memory type with one broken hook', () => {
  // Each defect breaks its hook on every call, so every case calling it must fail.
  const cases: [Defect, HookName][] = [
    ['noalloc-allocates-always', 'get_folio_noalloc'],
    ['alloc-locked', 'alloc_folio'],
    ['add-fails-late', 'filemap_add'],
    ['fault-extra-reference', 'fault'],
    ['can-userfault-throws', 'can_userfault'],
  ];
  let reference: Promise<ConformanceReport> | undefined;
  /** shmem, which every broken type is built from: which cases call which hook. */
  const shmem = () => {
    reference ??= runConformance({ memtypes: ['shmem'] });
    return reference;
  };

  for (const [defect, hook] of cases) {
    it(`${defect}: fails exactly the cases that call ${hook}, the core consistent after each`, async () => {
      const report = await runConformance({ modules: [{ module: brokenModule(defect), path: null }] });
      const healthy = await shmem();
      const name = `broken-${defect}`;
      assert.deepEqual(
        report.types.map((type) => type.name),
        [name],
      );
      const failing = report.results
        .filter((result) => result.status === 'fail')
        .map((result) => result.case);
      const calling = healthy.results
        .filter((result) => result.hooks.includes(hook))
        .map((result) => result.case);
      assert.ok(failing.length > 0, 'some case must call the broken hook');
      assert.deepEqual(failing, calling);
      for (const result of report.results) {
        const same = statusOf(healthy, 'shmem', result.case);
        if (result.status === 'skip')
          assert.equal(result.reason, same.reason, 'skips follow the declaration');
        if (result.status !== 'fail') continue;
        assert.ok(
          result.reason!.startsWith(`hook contract broken: faultline: memory type '${name}' hook ${hook}`),
          result.reason,
        );
        assert.doesNotMatch(result.reason!, /core state inconsistent/);
      }
    });
  }
});

describe('memory types from module files (--module)', () => {
  it('loads a default export and checks only that type; its skips follow its declaration', async () => {
    const loaded = await loadMemoryTypeModule(fixture('minor-only.ts'));
    const report = await runConformance({ modules: [loaded] });
    assert.deepEqual(failures(report), []);
    assert.deepEqual(
      report.types.map((type) => [type.name, type.source]),
      [['minor-only', fixture('minor-only.ts')]],
    );
    assert.equal(statusOf(report, 'minor-only', 'minor-fault').status, 'pass');
    assert.equal(statusOf(report, 'minor-only', 'missing-fault').reason, 'does not declare UFFDIO_COPY');
    assert.equal(statusOf(report, 'minor-only', 'undeclared-ioctls').status, 'pass');
  });

  it('loads a named `memoryType` export, and reports its broken hook', async () => {
    const loaded = await loadMemoryTypeModule(fixture('broken-alloc.ts'));
    const report = await runConformance({ modules: [loaded], cases: ['register-modes', 'missing-fault'] });
    assert.equal(statusOf(report, 'broken-alloc-locked', 'register-modes').status, 'pass');
    const failed = statusOf(report, 'broken-alloc-locked', 'missing-fault');
    assert.equal(failed.status, 'fail');
    assert.match(failed.reason!, /hook alloc_folio: returned folio \d+ locked/);
  });

  it('a file exporting no memory type module is refused with a message naming the path', async () => {
    await assert.rejects(
      loadMemoryTypeModule(fixture('broken.ts')),
      (error) =>
        error instanceof ModuleLoadError && /broken\.ts: exports no memory type module/.test(error.message),
    );
  });
});

describe('faultline conformance', () => {
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'conformance', ...args], {
      cwd: root,
      encoding: 'utf8',
    });

  it('--json prints one versioned document with every case × type', () => {
    const run = cli('--json', '--module', 'test/fixtures/memtypes/minor-only.ts');
    assert.equal(run.status, 0, run.stderr);
    const report = JSON.parse(run.stdout) as ConformanceReport;
    assert.equal(report.format, 'faultline-conformance');
    assert.equal(report.version, 1);
    assert.equal(report.kernel.version, '7.1');
    assert.equal(report.results.length, CASES.length);
    assert.ok(report.results.every((result) => ['pass', 'skip'].includes(result.status)));
  });

  it('text: one line per case × type and the closing count; a failing case makes the exit status 1', () => {
    const cases = ['register-modes', 'missing-fault', 'minor-fault', 'undeclared-ioctls'];
    const run = cli(
      '--module',
      'test/fixtures/memtypes/broken-alloc.ts',
      ...cases.flatMap((name) => ['--case', name]),
    );
    assert.equal(run.status, 1, run.stderr);
    const lines = run.stdout.trimEnd().split('\n');
    assert.equal(lines.length, cases.length + 1);
    assert.match(lines.at(-1)!, /^\d+ passed, [1-9]\d* failed, \d+ skipped$/);
    assert.ok(
      lines.some((line) => /^fail {2}broken-alloc-locked +missing-fault +hook contract broken/.test(line)),
    );
    assert.equal(cli('--memtype', 'no-such-type').status, 2);
  });
});
