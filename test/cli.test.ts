// The command line's conventions, through the real `faultline` process: exit 0 when all is well,
// 1 for failures found, 2 for usage and configuration errors; a user error is one line without a
// stack trace, a JSON document under --json; run and diff take several paths, globs and --filter;
// --keep-going shows every failing step; an unknown command is named.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'bin/faultline.js');
const scratch = mkdtempSync(join(tmpdir(), 'faultline-cli-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function faultline(...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], {
    cwd: scratch,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
}

function assertNoStack(text: string): void {
  assert.doesNotMatch(text, /\n\s+at .+:\d+:\d+/, `a stack trace:\n${text}`);
}

const passing = (name: string) =>
  [
    `name: ${name}`,
    'description: the handshake succeeds',
    'steps:',
    '  - userfaultfd: {name: u}',
    '  - api: {uffd: u}',
    '',
  ].join('\n');

// Two steps expect the wrong errno: without --keep-going the run stops at the first.
const failing = [
  'name: cli-two-failures',
  'description: two steps expect what the kernel does not do',
  'steps:',
  '  - userfaultfd: {name: u}',
  '  - api: {uffd: u, expect: {errno: EPERM}}',
  '  - mmap: {name: m, length: 4096}',
  '  - zeropage: {uffd: u, map: m, offset: 0, length: 4K, expect: {zeropage: 4096}}',
  '',
].join('\n');

mkdirSync(join(scratch, 'a'));
mkdirSync(join(scratch, 'b', 'deep'), { recursive: true });
writeFileSync(join(scratch, 'a', 'one.yaml'), passing('cli-one'));
writeFileSync(join(scratch, 'b', 'deep', 'two.yaml'), passing('cli-two'));
writeFileSync(join(scratch, 'b', 'three.yaml'), passing('cli-three'));
writeFileSync(join(scratch, 'failing.yaml'), failing);
writeFileSync(join(scratch, 'broken.yaml'), 'name: broken\ndescription: x\nsteps:\n  - frobnicate: {}\n');

describe('faultline exit codes', () => {
  it('0: every scenario passes; several paths and a quoted glob with ** each run once', () => {
    const result = faultline('run', 'a', 'b/**/*.yaml', 'a/one.yaml');
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /pass {2}cli-one\n/);
    assert.match(result.stdout, /pass {2}cli-two\n/);
    assert.match(result.stdout, /pass {2}cli-three\n/);
    assert.match(result.stdout, /^3 passed, 0 failed, 0 skipped$/m);
  });

  it('--filter keeps the scenarios whose name matches; a filter that keeps none is exit 2', () => {
    const kept = faultline('run', 'a', 'b', '--filter', 'cli-t*');
    assert.equal(kept.code, 0, kept.stderr);
    assert.match(kept.stdout, /^2 passed, 0 failed, 0 skipped$/m);
    assert.doesNotMatch(kept.stdout, /cli-one/);
    const none = faultline('run', 'a', '--filter', 'nothing-like-it');
    assert.equal(none.code, 2);
    assert.equal(
      none.stderr.trim(),
      "faultline: --filter 'nothing-like-it' selects none of the 1 scenarios loaded",
    );
  });

  it('1: a failing scenario; --keep-going shows every failing step', () => {
    const first = faultline('run', 'failing.yaml');
    assert.equal(first.code, 1);
    assert.match(first.stdout, /step 1 \(api, line 5\): fail/);
    assert.doesNotMatch(first.stdout, /step 3 \(zeropage/);
    const all = faultline('run', 'failing.yaml', '--keep-going');
    assert.equal(all.code, 1);
    assert.match(all.stdout, /step 1 \(api, line 5\): fail/);
    assert.match(all.stdout, /step 3 \(zeropage, line 7\): fail/);
    assert.match(all.stdout, /^0 passed, 1 failed, 0 skipped$/m);
  });

  it('2: a missing path, a malformed scenario, a glob matching nothing: one line, no stack', () => {
    for (const [args, line] of [
      [['run', 'no-such.yaml'], 'faultline: no-such.yaml: no such file or directory (ENOENT)'],
      [['run', 'broken.yaml'], /^faultline: broken\.yaml:4:5: steps\[0\]/],
      [['run', 'nowhere/*.yaml'], "faultline: no file matches 'nowhere/*.yaml'"],
      [['diff', 'no-such.yaml'], 'faultline: no-such.yaml: no such file or directory (ENOENT)'],
    ] as const) {
      const result = faultline(...args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.equal(result.stdout, '');
      assertNoStack(result.stderr);
      const text = result.stderr.trim();
      if (typeof line === 'string') assert.equal(text, line);
      else assert.match(text, line);
      assert.equal(text.split('\n').length, 1);
    }
  });

  it('2: an unknown command is named (no default command runs it), as is an unknown option or a bad value', () => {
    const typo = faultline('rnu', 'a');
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /^faultline: unknown command 'rnu'\n\(Did you mean run\?\)\n$/);
    const option = faultline('run', 'a', '--frobnicate');
    assert.equal(option.code, 2);
    assert.match(option.stderr, /unknown option '--frobnicate'/);
    const backend = faultline('run', 'a', '--backend', 'bogus');
    assert.equal(backend.code, 2);
    assert.match(backend.stderr, /'bogus' is invalid\. Allowed choices are model, host/);
    const none = faultline();
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Usage: faultline/);
  });

  it('2 under --json: the error is a JSON document on stdout', () => {
    const result = faultline('run', 'no-such.yaml', '--json');
    assert.equal(result.code, 2);
    assert.deepEqual(JSON.parse(result.stdout), {
      version: 1,
      error: { kind: 'usage', message: 'no-such.yaml: no such file or directory (ENOENT)', exitCode: 2 },
    });
    const bad = faultline('workload', 'postcopy', '--mode', 'nonsense', '--json');
    assert.equal(bad.code, 2);
    assert.equal(JSON.parse(bad.stdout).error.kind, 'usage');
  });

  it('2 when every scenario was skipped (said on stderr after the report), 0 with --allow-skip', () => {
    // The host kernel has no vm_uffd_ops API, so this scenario is always skipped there.
    const skipped = join(root, 'scenarios/guest_memfd/missing-copy-7.1.yaml');
    const refused = faultline('run', skipped, '--backend', 'host', '--json');
    assert.equal(refused.code, 2);
    assert.equal(JSON.parse(refused.stdout).skipped, 1, 'the report is still one JSON document');
    assert.equal(
      refused.stderr.trim().split('\n').at(-1),
      'faultline: nothing ran: the one case was skipped; --allow-skip accepts that',
    );
    const allowed = faultline('run', skipped, '--backend', 'host', '--allow-skip');
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stdout, /^0 passed, 0 failed, 1 skipped$/m);
  });

  it('doctor: one line per piece the host backend uses; exit 0 only when nothing is missing', () => {
    const result = faultline('doctor', '--json');
    const report = JSON.parse(result.stdout) as {
      checks: { name: string; ok: boolean; fix?: string }[];
      missing: number;
    };
    assert.deepEqual(
      report.checks.map((check) => check.name),
      ['native addon', 'userfaultfd(2)', '/dev/userfaultfd', 'huge pages (2 MiB)', 'KVM guest_memfd'],
    );
    assert.equal(report.missing, report.checks.filter((check) => !check.ok).length);
    assert.ok(
      report.checks.every((check) => check.ok || (check.fix ?? '').length > 0),
      'a missing piece names its fix',
    );
    assert.equal(result.code, report.missing === 0 ? 0 : 1);
  });

  it("0 for --help and --version; the version is package.json's", () => {
    const version = faultline('--version');
    assert.equal(version.code, 0);
    assert.equal(
      version.stdout.trim(),
      JSON.parse(spawnSync('cat', [join(root, 'package.json')], { encoding: 'utf8' }).stdout).version,
    );
    assert.equal(faultline('run', '--help').code, 0);
  });
});
