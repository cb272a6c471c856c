#!/usr/bin/env node
// npm's install step for the native addon, as node-gyp-build does it: a local
// build already there is kept; else a prebuilt binary shipped in
// prebuilds/<platform>-<arch>/ is used when it loads; else the addon is built
// here with node-gyp. A failed build does not fail the install (the model
// needs no addon): it says what is missing and how `faultline doctor` helps.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const require = createRequire(import.meta.url);

function loads(file) {
  try {
    require(file);
    return true;
  } catch {
    return false;
  }
}

if (process.platform !== 'linux') {
  console.error(
    `faultline: no native addon on ${process.platform} (the host backend needs Linux); the model works`,
  );
  process.exit(0);
}
if (existsSync(join(root, 'build', 'Release', 'faultline_host.node'))) process.exit(0);
const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'faultline_host.node');
if (existsSync(prebuilt) && loads(prebuilt)) process.exit(0);

// npm tells its scripts where its own node-gyp is; run by hand, the one on PATH.
const nodeGyp = process.env.npm_config_node_gyp;
const build =
  nodeGyp === undefined
    ? spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit' })
    : spawnSync(process.execPath, [nodeGyp, 'rebuild'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) {
  console.error(
    'faultline: the native addon did not build (it needs python3, make and a C++ compiler: ' +
      'apt-get install python3 make g++); the host backend is unavailable, the model works. ' +
      'Run `npx faultline doctor` for the details.',
  );
}
