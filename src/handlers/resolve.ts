/**
 * `--handler FILE [-- ARGS]`: a handler module or a handler binary, decided
 * by the file (HANDLERS.md §1, §2). A module is imported; a binary becomes
 * the `serve(session)` of `binary/serve.ts`.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { isHandlerBinary } from './binary/child.ts';
import { type BinaryHandlerOptions, binaryHandler } from './binary/serve.ts';
import { isHandlerModule, loadHandlerModule } from './load.ts';
import type { Serve } from './session.ts';

export interface HandlerChoice {
  readonly serve: Serve;
  /** 'binary' when FILE is an executable (ELF or #!), else 'module'. */
  readonly kind: 'module' | 'binary';
}

export async function loadHandler(
  file: string,
  options: { args?: readonly string[]; timeoutMs?: number; report?: BinaryHandlerOptions['report'] } = {},
): Promise<HandlerChoice> {
  const path = resolve(file);
  const args = options.args ?? [];
  if (existsSync(path) && !isHandlerModule(path) && isHandlerBinary(path)) {
    return {
      kind: 'binary',
      serve: binaryHandler({
        path,
        args,
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
        ...(options.report === undefined ? {} : { report: options.report }),
      }),
    };
  }
  if (args.length > 0)
    throw new Error(`--handler ${file}: arguments after -- are for a handler binary, and this is a module`);
  if (existsSync(path) && !isHandlerModule(path)) {
    throw new Error(
      `--handler ${file}: neither a handler module (.ts, .mts, .js, .mjs) nor an executable handler binary (ELF or #!, execute bit)`,
    );
  }
  return { kind: 'module', serve: await loadHandlerModule(file) };
}
