#!/usr/bin/env node
// Copies this machine's native build (the addon and the executables built with
// it) into prebuilds/<platform>-<arch>/, the binaries an installed package
// ships, as prebuildify lays them out. Runs at pack time (npm's prepack), after
// the addon is built; a machine that cannot build it packs none and installs
// fall back to a local build (tools/install-native.mjs).
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const built = join(root, 'build', 'Release');
const target = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
rmSync(join(root, 'prebuilds'), { recursive: true, force: true });
if (!existsSync(join(built, 'faultline_host.node'))) {
  console.error('prebuild: no build/Release/faultline_host.node: the package ships no prebuilt addon');
  process.exit(0);
}
mkdirSync(target, { recursive: true });
for (const entry of readdirSync(built, { withFileTypes: true })) {
  if (!entry.isFile()) continue;
  const from = join(built, entry.name);
  const executable = (statSync(from).mode & 0o111) !== 0;
  if (!entry.name.endsWith('.node') && !executable) continue;
  copyFileSync(from, join(target, entry.name));
  chmodSync(join(target, entry.name), statSync(from).mode & 0o777);
  console.error(`prebuild: ${join('prebuilds', `${process.platform}-${process.arch}`, entry.name)}`);
}
