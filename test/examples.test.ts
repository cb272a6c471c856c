// The examples in examples/, run as users run them (they import `faultline`, resolved here to the
// sources by test/fixtures/self-import.mjs): each prints its closing line and exits 0, and the
// outside memory type passes the conformance suite through `faultline conformance --module`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

function run(...args: string[]) {
  return spawnSync(
    process.execPath,
    ['--import', 'tsx', '--import', './test/fixtures/self-import.mjs', ...args],
    {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
    },
  );
}

describe('examples', () => {
  for (const [file, line] of [
    [
      'missing-handler.ts',
      /^missing-handler: (\d+) pages copied, (\d+) extra faults woken; every page read back its index$/m,
    ],
    [
      'gmem-minor-handler.ts',
      /^gmem-minor-handler: 32 MINOR faults answered with write \+ UFFDIO_CONTINUE$/m,
    ],
    [
      'wp-snapshot.ts',
      /^wp-snapshot: 8 WP faults saved first; the image is the memory at the start \(page 0 is now 0xff\)$/m,
    ],
  ] as const) {
    it(`${file} runs to its closing line`, () => {
      const result = run(join('examples', file));
      assert.equal(result.status, 0, result.stderr);
      const match = line.exec(result.stdout);
      assert.ok(match, result.stdout);
      if (file === 'missing-handler.ts') assert.equal(Number(match[1]), 64, 'one copy per page');
    });
  }

  it('memtype/page-cache-type.ts passes the conformance suite as an outside module', () => {
    const result = run(
      'src/cli/main.ts',
      'conformance',
      '--module',
      'examples/memtype/page-cache-type.ts',
      '--memtype',
      'page-cache-type',
    );
    assert.equal(result.status, 0, result.stdout + result.stderr);
    const closing = /^(\d+) passed, 0 failed, (\d+) skipped$/m.exec(result.stdout);
    assert.ok(closing, result.stdout);
    assert.ok(Number(closing[1]) >= 15, `only ${closing[1]} cases passed`);
    assert.match(result.stdout, /^pass {2}page-cache-type +missing-fault/m);
  });
});
