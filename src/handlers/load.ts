/** Loading a handler module: an ES module whose default export is `serve(session)`. */
import { existsSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Serve } from './session.ts';

export const HANDLER_MODULE_EXTENSIONS = ['.ts', '.mts', '.js', '.mjs'] as const;

/** Whether `file` names a handler module (by its extension) rather than a handler binary. */
export function isHandlerModule(file: string): boolean {
  return (HANDLER_MODULE_EXTENSIONS as readonly string[]).includes(extname(file));
}

/**
 * Imports `file` and returns its `serve`. Errors name the file and what is
 * wrong with it (missing, not a module, no default export, not a function).
 */
export async function loadHandlerModule(file: string): Promise<Serve> {
  const path = resolve(file);
  if (!existsSync(path)) throw new Error(`--handler ${file}: no such file`);
  if (!isHandlerModule(path)) {
    throw new Error(
      `--handler ${file}: a handler module ends in ${HANDLER_MODULE_EXTENSIONS.join(', ')} (a handler binary is run with -- ARGS)`,
    );
  }
  let module: { default?: unknown };
  try {
    module = (await import(pathToFileURL(path).href)) as { default?: unknown };
  } catch (error) {
    throw new Error(`--handler ${file}: the module does not load: ${(error as Error).message}`);
  }
  const serve = module.default;
  if (serve === undefined) {
    throw new Error(
      `--handler ${file}: no default export (export default async function serve(session) { ... })`,
    );
  }
  if (typeof serve !== 'function') {
    throw new Error(
      `--handler ${file}: the default export is a ${typeof serve}, not a function serve(session)`,
    );
  }
  return serve as Serve;
}
