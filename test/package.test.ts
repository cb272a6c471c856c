// The package as users get it: `npm pack` (which compiles dist/ and copies the native build to
// prebuilds/), checked as the ecosystem checks packages (publint, @arethetypeswrong/cli), then
// installed from the tarball into a fresh project outside the repository with no dev
// dependencies, where it is imported from plain Node ESM and from TypeScript (nodenext), runs the
// README's API example, and runs `npx faultline` from that project. Run by `npm run test:package`
// (CI runs it after `npm test`): packing compiles the whole tree, too slow for the unit suite.
import assert from 'node:assert/strict';
import { type SpawnSyncOptions, spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version as string;
const scratch = mkdtempSync(join(tmpdir(), 'faultline-package-'));
const project = join(scratch, 'project');
let tarball = '';
after(() => rmSync(scratch, { recursive: true, force: true }));

function run(command: string, args: readonly string[], options: SpawnSyncOptions = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 300_000, ...options });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  return { code: result.status, stdout: String(result.stdout), output };
}

function ok(command: string, args: readonly string[], options: SpawnSyncOptions = {}) {
  const result = run(command, args, options);
  assert.equal(result.code, 0, `${command} ${args.join(' ')} failed:\n${result.output}`);
  return result;
}

/** The README's API example, word for word. */
function readmeExample(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Using the API'));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(match, 'the README has a ts block under "Using the API"');
  return match[1]!;
}

before(() => {
  ok('npm', ['pack', '--pack-destination', scratch, '--silent'], { cwd: root });
  tarball = join(scratch, `faultline-${version}.tgz`);
  mkdirSync(project);
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({ name: 'scratch', private: true, type: 'module' }),
  );
  ok('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
    cwd: project,
  });
});

describe('the packed package', () => {
  it('passes publint and arethetypeswrong (ESM only, Node 20+)', () => {
    ok(process.execPath, [join(root, 'node_modules/publint/src/cli.js'), '--strict', tarball]);
    ok(join(root, 'node_modules/.bin/attw'), [tarball, '--profile', 'esm-only']);
  });

  it('ships compiled JavaScript, types, LICENSE and a prebuilt addon; no sources, tests or CI', () => {
    const listing = ok('tar', ['tzf', tarball]).stdout.split('\n');
    for (const file of [
      'package/dist/api/index.js',
      'package/dist/api/index.d.ts',
      'package/LICENSE',
      'package/bin/faultline.js',
      'package/prebuilds/linux-x64/faultline_host.node',
      'package/prebuilds/linux-x64/faultline_agent',
    ]) {
      assert.ok(listing.includes(file), `${file} is not in the package`);
    }
    for (const prefix of ['package/src/', 'package/test/', 'package/.ci/', 'package/tools/probes/']) {
      assert.ok(!listing.some((file) => file.startsWith(prefix)), `${prefix} is in the package`);
    }
    // Installed without dev dependencies: no TypeScript loader is there to lean on.
    assert.ok(!existsSync(join(project, 'node_modules/tsx')), 'tsx was installed');
  });

  it('imports from plain Node ESM: the main entry and every subpath', () => {
    writeFileSync(
      join(project, 'imports.mjs'),
      [
        "import { ModelBackend, HostBackend, Process, Uffd, KernelError, UFFDIO_COPY } from 'faultline';",
        "import { loadScenarios, runScenario } from 'faultline/scenario';",
        "import { CASES, runConformance } from 'faultline/conformance';",
        "import { FAULT_SIGBUS, filemapUffdOps } from 'faultline/memtype';",
        "import { EEXIST } from 'faultline/uapi';",
        'const kinds = [ModelBackend, HostBackend, Process, Uffd, KernelError, loadScenarios, runScenario,',
        '  runConformance, filemapUffdOps].map((value) => typeof value);',
        'console.log(JSON.stringify({ kinds, copy: UFFDIO_COPY, cases: CASES.length > 0, sigbus: FAULT_SIGBUS, eexist: EEXIST }));',
      ].join('\n'),
    );
    const report = JSON.parse(ok(process.execPath, ['imports.mjs'], { cwd: project }).stdout);
    assert.deepEqual(report.kinds, Array(9).fill('function'));
    assert.equal(report.copy, 0xc028aa03);
    assert.equal(report.cases, true);
    assert.equal(report.eexist, 17);
  });

  it("runs the README's API example, and type-checks it as TypeScript with moduleResolution nodenext", () => {
    writeFileSync(join(project, 'example.mjs'), readmeExample());
    const output = ok(process.execPath, ['example.mjs'], { cwd: project }).stdout;
    assert.match(output, /^7,7,7,7,7,7,7,7$/m);

    writeFileSync(join(project, 'example.mts'), readmeExample());
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2023',
          strict: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [join(root, 'node_modules/@types')],
        },
        files: ['example.mts'],
      }),
    );
    ok(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], {
      cwd: project,
    });
    // A wrong use is caught by the shipped types, so the check above is not vacuous.
    writeFileSync(join(project, 'example.mts'), `${readmeExample()}\nuffd.register({ start: 'x' }, 1);\n`);
    const wrong = run(
      process.execPath,
      [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'],
      {
        cwd: project,
      },
    );
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.output, /example\.mts\(\d+,\d+\): error TS2/);
  });

  it('npx faultline --version and npx faultline run work from outside the repository', () => {
    assert.equal(
      ok('npx', ['--no-install', 'faultline', '--version'], { cwd: project }).stdout.trim(),
      version,
    );
    copyFileSync(join(root, 'scenarios/anon/missing-copy-thread.yaml'), join(project, 'scenario.yaml'));
    const result = ok('npx', ['--no-install', 'faultline', 'run', 'scenario.yaml'], { cwd: project });
    assert.match(result.stdout, /^1 passed, 0 failed, 0 skipped$/m);
    // postcopy starts its source as a second process: the compiled script, with no tsx.
    const postcopy = ok(
      'npx',
      ['--no-install', 'faultline', 'workload', 'postcopy', '--size', '4M', '--json'],
      {
        cwd: project,
      },
    );
    assert.equal(JSON.parse(postcopy.stdout).workload, 'postcopy');
    const typo = run('npx', ['--no-install', 'faultline', 'rnu'], { cwd: project });
    assert.equal(typo.code, 2);
    assert.match(typo.output, /unknown command 'rnu'/);
  });
});
