/**
 * The layer check (tools/layers.ts) passes on the tree, and fails on a
 * deliberate upward import, a type-only one too, and a cycle of values.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkLayers, KNOWN_VIOLATIONS, layerOf } from '../tools/layers.ts';

const root = join(import.meta.dirname, '..');

function withLine(file: string, line: string): Map<string, string> {
  return new Map([[file, `${line}\n${readFileSync(join(root, file), 'utf8')}`]]);
}

test('the tree keeps every import at its layer or below, with no cycle', () => {
  assert.deepEqual(checkLayers(root), []);
  assert.deepEqual(KNOWN_VIOLATIONS, [], 'no import is tolerated out of order');
});

test('every source file has a layer, and the model sits below the API and the CLI', () => {
  assert.ok(layerOf('src/uapi/errno.ts') < layerOf('src/model/mem/physmem.ts'));
  assert.ok(layerOf('src/model/mm/fault.ts') < layerOf('src/model/uffd/userfault.ts'));
  assert.ok(layerOf('src/model/kernel.ts') < layerOf('src/api/model-backend.ts'));
  assert.ok(layerOf('src/api/process.ts') < layerOf('src/cli/main.ts'));
  assert.equal(layerOf('src/nowhere.ts'), -1);
});

test('an upward import fails the check, naming both files and layers', () => {
  const violations = checkLayers(
    root,
    withLine('src/model/mm/fault.ts', "import { handleUserfault } from '../uffd/userfault.ts';"),
  );
  // userfault.ts imports fault.ts, so the new edge also closes a cycle of values.
  assert.deepEqual(
    violations.map((v) => v.kind),
    ['upward', 'cycle'],
  );
  assert.match(
    violations[0]!.message,
    /src\/model\/mm\/fault\.ts -> src\/model\/uffd\/userfault\.ts: layer 'model mm core' imports the higher layer 'model uffd'/,
  );
});

test('a type-only upward import fails too', () => {
  const violations = checkLayers(
    root,
    withLine('src/model/mem/physmem.ts', "import type { Vma } from '../mm/vma.ts';"),
  );
  assert.deepEqual(
    violations.map((v) => v.kind),
    ['upward'],
  );
});

test('a cycle of values inside one layer fails; a cycle of types does not', () => {
  // uffd/validate.ts and uffd/move.ts import neither each other nor anything that leads back.
  const both = new Map([
    ...withLine('src/model/uffd/validate.ts', "import { movePages } from './move.ts';"),
    ...withLine('src/model/uffd/move.ts', "import { validateRange } from './validate.ts';"),
  ]);
  const cycle = checkLayers(root, both);
  assert.equal(cycle.length, 1, JSON.stringify(cycle));
  assert.equal(cycle[0]!.kind, 'cycle');
  assert.match(
    cycle[0]!.message,
    /src\/model\/uffd\/(validate|move)\.ts -> .* -> src\/model\/uffd\/(validate|move)\.ts/,
  );
  const typeCycle = new Map([
    ...withLine('src/model/uffd/validate.ts', "import type { MfillRequest } from './mfill.ts';"),
    ...withLine('src/model/uffd/move.ts', "import type { validateRange } from './validate.ts';"),
  ]);
  assert.deepEqual(checkLayers(root, typeCycle), []);
});

test('the command exits 1 on a tree with an upward import, and 0 on the tree', () => {
  const copy = mkdtempSync(join(tmpdir(), 'faultline-layers-'));
  try {
    cpSync(join(root, 'src'), join(copy, 'src'), { recursive: true });
    const script = join(root, 'tools', 'layers.ts');
    const clean = spawnSync(process.execPath, ['--import', 'tsx', script, copy], { encoding: 'utf8' });
    assert.equal(clean.status, 0, clean.stderr);
    const target = join(copy, 'src', 'uapi', 'errno.ts');
    writeFileSync(target, `import '../cli/main.ts';\n${readFileSync(target, 'utf8')}`);
    const broken = spawnSync(process.execPath, ['--import', 'tsx', script, copy], { encoding: 'utf8' });
    assert.equal(broken.status, 1);
    assert.match(
      broken.stderr,
      /src\/uapi\/errno\.ts -> src\/cli\/main\.ts: layer 'uapi' imports the higher layer 'cli'/,
    );
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});
