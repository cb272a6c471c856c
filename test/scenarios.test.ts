// The scenario corpus (scenarios/) run on the model, the parser's error messages on deliberately broken
// files (test/fixtures/broken/), and the `faultline run --json` output and JSON Schema against the contract
// in shared/SCENARIOS.md.

import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { runCommand } from '../src/cli/run.ts';
import { loadScenarios, parseScenario, ScenarioError, scenarioFiles } from '../src/scenario/parse.ts';
import { runScenario } from '../src/scenario/run.ts';
import { scenarioJsonSchema } from '../src/scenario/schema.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CORPUS = join(ROOT, 'scenarios');
const BROKEN = join(ROOT, 'test', 'fixtures', 'broken');
const MIN_SCENARIOS = 85;

const scratch = mkdtempSync(join(tmpdir(), 'faultline-scenarios-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

describe('scenario corpus', () => {
  const scenarios = loadScenarios(CORPUS);

  it(`has at least ${MIN_SCENARIOS} scenarios, each with a unique name and a description`, () => {
    assert.ok(scenarios.length >= MIN_SCENARIOS, `only ${scenarios.length} scenarios under ${CORPUS}`);
    const names = new Set(scenarios.map((scenario) => scenario.name));
    assert.equal(names.size, scenarios.length);
    const undescribed = scenarios.filter((scenario) => scenario.description.trim() === '');
    assert.deepEqual(
      undescribed.map((scenario) => scenario.file),
      [],
      'scenarios without a description',
    );
  });

  it('every scenario passes on the model', async () => {
    const failures: string[] = [];
    for (const scenario of scenarios) {
      const report = await runScenario(scenario, { backend: 'model', seed: 1, keepGoing: false });
      if (report.status === 'pass') continue;
      const failing = report.steps.find((step) => step.status !== 'pass');
      failures.push(
        [
          `${report.status} ${scenario.name} (${scenario.file})`,
          `  ${report.reason ?? ''}`,
          ...(failing?.expected === undefined ? [] : [`  expected ${JSON.stringify(failing.expected)}`]),
          ...(failing === undefined ? [] : [`  observed ${JSON.stringify(failing.result)}`]),
          `  replay: ${report.replay}`,
        ].join('\n'),
      );
    }
    assert.equal(failures.length, 0, `${failures.length} scenario(s) failed:\n${failures.join('\n')}`);
  });
});

/** Each broken fixture and the exact `file:line:col: field: problem` it must produce. */
const BROKEN_FIXTURES: Record<string, string> = {
  'duplicate-name.yaml': "6:18: steps[2].mmap.name: duplicate name 'a' (already a map)",
  'file-and-uffd.yaml': "6:12: steps[2].pread: give one of 'file' and 'uffd'",
  'missing-field.yaml': "6:7: steps[1].mmap: missing field 'length'",
  'syntax-error.yaml':
    '5:3: (syntax): Flow map in block collection must be sufficiently indented and end with a }',
  'unknown-errno.yaml': '7:63: steps[3].register.expect.errno: unknown errno name',
  'unknown-feature.yaml': '5:42: steps[1].api.features[1]: unknown feature',
  'unknown-field.yaml': "5:42: steps[1].mmap.colour: unknown field 'colour'",
  'unknown-ioctl.yaml': '11:37: steps[3].register.expect.ioctls[2]: unknown ioctl',
  'unknown-name.yaml': "7:30: steps[3].register.map: unknown map 'b' (not defined by an earlier step)",
  'unknown-op.yaml': "5:5: steps[1].frobnicate: unknown op 'frobnicate'",
  'wrong-type.yaml': '4:41: steps[0].mmap.shared: Invalid input: expected boolean, received string',
};

describe('typed steps', () => {
  it("a step carries its op's arguments, parsed and typed by the op's schema", () => {
    const text = [
      'name: typed',
      'steps:',
      '  - mmap: {name: a, length: 16K}',
      '  - userfaultfd: {name: u}',
      '  - copy: {uffd: u, map: a, offset: 4K, length: 4K, data: {text: hi}, mode: [dontwake, wp], expect: {copy: 4096}}',
    ].join('\n');
    const step = parseScenario(text, 'typed.yaml').steps[2]!;
    assert.equal(step.op, 'copy');
    if (step.op !== 'copy') return;
    // Narrowed by op: sizes are parsed, the mode names are the ones UFFDIO_MODES gives COPY.
    const modes: ('dontwake' | 'wp')[] | undefined = step.args.mode;
    assert.deepEqual([step.args.offset, step.args.length, modes], [4096, 4096, ['dontwake', 'wp']]);
    assert.equal(step.expect?.copy, 4096);
    // @ts-expect-error: COPY has no `advice`; with untyped steps this line would compile and typecheck would fail.
    assert.equal(step.args.advice, undefined);
  });
});

describe('broken scenario files', () => {
  it('the table covers every fixture', () => {
    const files = readdirSync(BROKEN).filter((name) => /\.(ya?ml|json)$/.test(name));
    assert.deepEqual(files.sort(), Object.keys(BROKEN_FIXTURES).sort());
  });

  for (const [name, message] of Object.entries(BROKEN_FIXTURES)) {
    it(`${name}: ${message.slice(message.indexOf(' ') + 1)}`, async () => {
      const file = join(BROKEN, name);
      assert.throws(
        () => loadScenarios(file),
        (error: unknown) => {
          assert.ok(error instanceof ScenarioError, `not a ScenarioError: ${String(error)}`);
          assert.equal(error.message, `${file}:${message}`);
          return true;
        },
      );

      // Nothing runs: a directory holding a valid scenario (sorted first) and the broken file is
      // rejected as a whole with the error (the command line prints it and exits 2), no report.
      const dir = mkdtempSync(join(scratch, 'broken-'));
      copyFileSync(join(CORPUS, 'api', 'handshake.yaml'), join(dir, 'a-valid.yaml'));
      copyFileSync(file, join(dir, name));
      const lines: string[] = [];
      const out = (line: string) => void lines.push(line);
      await assert.rejects(
        runCommand(dir, { backend: 'model', json: true, seed: 1, keepGoing: false, out }),
        (error: unknown) =>
          error instanceof ScenarioError && error.message === `${join(dir, name)}:${message}`,
      );
      assert.deepEqual(lines, []);
    });
  }
});

/** A minimal JSON Schema checker (the keywords scenarioJsonSchema() emits); returns the problems found. */
function validate(schema: Record<string, unknown>, value: unknown, path = '$'): string[] {
  const problems: string[] = [];
  if (Array.isArray(schema.anyOf)) {
    const ok = (schema.anyOf as Record<string, unknown>[]).some(
      (arm) => validate(arm, value, path).length === 0,
    );
    if (!ok) problems.push(`${path}: matches no anyOf arm`);
    return problems;
  }
  if ('const' in schema && value !== schema.const)
    problems.push(`${path}: not ${JSON.stringify(schema.const)}`);
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) problems.push(`${path}: not in enum`);
  switch (schema.type) {
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value))
        return [`${path}: not an object`];
      const object = value as Record<string, unknown>;
      const properties = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
      for (const key of (schema.required ?? []) as string[]) {
        if (!(key in object)) problems.push(`${path}: missing required '${key}'`);
      }
      for (const [key, child] of Object.entries(object)) {
        if (key in properties) problems.push(...validate(properties[key]!, child, `${path}.${key}`));
        else if (schema.additionalProperties === false) problems.push(`${path}: unexpected '${key}'`);
      }
      break;
    }
    case 'array':
      if (!Array.isArray(value)) return [`${path}: not an array`];
      if (typeof schema.minItems === 'number' && value.length < schema.minItems)
        problems.push(`${path}: fewer than ${schema.minItems} items`);
      if (schema.items !== undefined) {
        const items = schema.items as Record<string, unknown>;
        value.forEach((item, i) => {
          problems.push(...validate(items, item, `${path}[${i}]`));
        });
      }
      break;
    case 'string':
      if (typeof value !== 'string') return [`${path}: not a string`];
      if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern).test(value))
        problems.push(`${path}: does not match ${schema.pattern}`);
      break;
    case 'integer':
    case 'number':
      if (typeof value !== 'number' || (schema.type === 'integer' && !Number.isInteger(value)))
        return [`${path}: not an ${schema.type}`];
      if (typeof schema.minimum === 'number' && value < schema.minimum)
        problems.push(`${path}: below minimum`);
      if (typeof schema.maximum === 'number' && value > schema.maximum)
        problems.push(`${path}: above maximum`);
      break;
    case 'boolean':
      if (typeof value !== 'boolean') return [`${path}: not a boolean`];
      break;
    default:
      break;
  }
  return problems;
}

describe('faultline run --json and the JSON Schema', () => {
  const file = join(CORPUS, 'anon', 'missing-copy-thread.yaml');

  it('run FILE --json has the shape of SCENARIOS.md', async () => {
    const failing = join(scratch, 'failing.yaml');
    writeFileSync(
      failing,
      [
        'name: json-shape-failing',
        'description: its second step expects the wrong errno',
        'steps:',
        '  - userfaultfd: {name: u}',
        '  - api: {uffd: u, expect: {errno: EPERM}}',
        '',
      ].join('\n'),
    );
    for (const [path, wantStatus] of [
      [file, 'pass'],
      [failing, 'fail'],
    ] as const) {
      const lines: string[] = [];
      const out = (line: string) => void lines.push(line);
      const code = await runCommand(path, { backend: 'model', json: true, seed: 1, keepGoing: false, out });
      assert.equal(code, wantStatus === 'pass' ? 0 : 1);
      assert.equal(lines.length, 1, 'one JSON document');
      const doc = JSON.parse(lines[0]!);
      assert.ok(Array.isArray(doc.scenarios));
      assert.equal(doc.scenarios.length, 1);
      assert.deepEqual([doc.passed, doc.failed, doc.skipped], wantStatus === 'pass' ? [1, 0, 0] : [0, 1, 0]);
      const [report] = doc.scenarios;
      assert.equal(typeof report.name, 'string');
      assert.equal(report.file, path);
      assert.equal(report.backend, 'model');
      assert.equal(report.status, wantStatus);
      assert.ok(Array.isArray(report.steps) && report.steps.length > 0);
      report.steps.forEach((step: Record<string, unknown>, i: number) => {
        assert.equal(step.index, i);
        assert.equal(typeof step.op, 'string');
        assert.ok(['pass', 'fail', 'error'].includes(step.status as string));
        assert.equal(typeof step.result, 'object');
      });
      if (wantStatus === 'fail') {
        assert.equal(typeof report.reason, 'string');
        const bad = report.steps.at(-1);
        assert.deepEqual([bad.index, bad.op, bad.status], [1, 'api', 'fail']);
        assert.deepEqual(bad.expected, { errno: 'EPERM' });
        assert.deepEqual(bad.result.ioctls, ['register', 'unregister', 'api']);
      } else {
        assert.equal(report.reason, undefined);
        // Step 3 (register) reports the ioctls the kernel returned.
        assert.deepEqual(report.steps[3].result, { ioctls: ['wake', 'copy', 'zeropage', 'move', 'poison'] });
      }
    }
  });

  it('scenario files validate against scenarioJsonSchema()', () => {
    const schema = scenarioJsonSchema() as Record<string, unknown>;
    assert.equal(schema.type, 'object');
    assert.deepEqual([...(schema.required as string[])].sort(), ['name', 'steps']);
    const example = parseYaml(readFileSync(file, 'utf8'));
    for (const key of schema.required as string[]) assert.ok(key in example, `example lacks '${key}'`);
    assert.deepEqual(validate(schema, example), []);
    // The checker is not vacuous: an unknown field and a missing step field are caught.
    assert.notDeepEqual(
      validate(schema, parseYaml(readFileSync(join(BROKEN, 'unknown-field.yaml'), 'utf8'))),
      [],
    );
    assert.notDeepEqual(
      validate(schema, parseYaml(readFileSync(join(BROKEN, 'missing-field.yaml'), 'utf8'))),
      [],
    );
    assert.notDeepEqual(validate(schema, { steps: [{ mmap: { name: 'a', length: 4096 } }] }), []);
    // Every corpus file is valid under the published schema.
    const invalid = scenarioFiles(CORPUS)
      .map((path) => ({ path, problems: validate(schema, parseYaml(readFileSync(path, 'utf8'))) }))
      .filter((entry) => entry.problems.length > 0)
      .map((entry) => `${entry.path}: ${entry.problems.slice(0, 3).join('; ')}`);
    assert.deepEqual(invalid, []);
  });
});
