#!/usr/bin/env node
// The faultline command. It runs the CLI in this very process, so a signal
// sent to `faultline` reaches the run itself and a death by signal is the
// process's own (no wrapper to orphan a child or to turn SIGSEGV into exit 1).
// An installed package runs the compiled dist/; a source checkout (src/ beside
// this file, tsx installed as a dev dependency) runs src/ through tsx's
// in-process loader, so an edit takes effect without a build.
import { existsSync } from 'node:fs';

const root = new URL('../', import.meta.url);
const source = new URL('src/cli/main.ts', root);

async function sourceLoader() {
  if (!existsSync(source)) return false;
  try {
    const { register } = await import('tsx/esm/api');
    register();
    return true;
  } catch {
    return false; // no tsx (a package built with src/ in it): the compiled CLI is as good
  }
}

await import((await sourceLoader()) ? source.href : new URL('dist/cli/main.js', root).href);
