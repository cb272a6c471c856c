/**
 * One conformance case in a worker thread of its own, for memory types
 * loaded from files (`conformance --module`): a hook that never returns, or
 * a type that floods memory, costs that case alone. The worker is killed
 * when its hard timeout passes (terminate() stops even a synchronous loop)
 * or when its heap passes the cap, and the case fails with one line saying
 * so; results are reported per case as in-process runs are.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { KernelVersion } from '../model/kernel.ts';

export interface IsolatedCase {
  /** The module files to load, in order, as `--module` gave them. */
  readonly modulePaths: readonly string[];
  readonly type: string;
  readonly case: string;
  readonly version: KernelVersion;
  readonly seed: number;
  /** Milliseconds from the worker's start to its result; then it is killed. */
  readonly timeoutMs: number;
  /** Heap cap of the worker in MiB (V8's old generation). */
  readonly memoryMb: number;
}

/** What the worker posts back: a result, or why it could not run the case. */
export type WorkerReply =
  | { readonly result: { status: 'pass' | 'fail' | 'skip'; reason?: string; hooks: readonly string[] } }
  | { readonly error: string };

/** The worker's entry, resolved next to this file (.ts under tsx, .js once compiled). */
function workerSource(): { code: string; eval: true } | { url: URL } {
  const typescript = import.meta.url.endsWith('.ts');
  const url = new URL(typescript ? './case-worker.ts' : './case-worker.js', import.meta.url);
  if (!typescript) return { url };
  // A worker does not inherit tsx's loader nor the parent's other --import preloads (a resolver
  // hook, say): register tsx, then import them, before loading the entry.
  const code =
    `import('tsx/esm/api').then(async (api) => { api.register(); ` +
    `for (const preload of ${JSON.stringify(parentPreloads())}) await import(preload); ` +
    `return import(${JSON.stringify(url.href)}); })`;
  return { code, eval: true };
}

/** The parent's `--import` preloads other than tsx, as URLs (relative ones from the working directory). */
function parentPreloads(): string[] {
  const argv = process.execArgv;
  const specifiers: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--import' && i + 1 < argv.length) specifiers.push(argv[++i]!);
    else if (arg.startsWith('--import=')) specifiers.push(arg.slice('--import='.length));
  }
  return specifiers
    .filter((specifier) => specifier !== 'tsx')
    .map((specifier) =>
      specifier.startsWith('.') || specifier.startsWith('/')
        ? pathToFileURL(resolve(process.cwd(), specifier)).href
        : specifier,
    );
}

/** Runs the case in a worker; resolves to the worker's reply or a one-line reason it was killed. */
export function runIsolatedCase(request: IsolatedCase): Promise<WorkerReply> {
  const source = workerSource();
  const options = {
    workerData: request,
    resourceLimits: { maxOldGenerationSizeMb: request.memoryMb },
    stdout: true,
    stderr: true,
  };
  const worker =
    'url' in source ? new Worker(source.url, options) : new Worker(source.code, { ...options, eval: true });
  // The type's own output is not the suite's: drop it rather than interleave it with result lines.
  worker.stdout.resume();
  worker.stderr.resume();
  return new Promise((resolve) => {
    let settled = false;
    const settle = (reply: WorkerReply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void worker.terminate();
      resolve(reply);
    };
    const timer = setTimeout(
      () =>
        settle({ error: `killed: no result within ${request.timeoutMs} ms (a hook that never returns?)` }),
      request.timeoutMs,
    );
    worker.on('message', (reply: WorkerReply) => settle(reply));
    worker.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'ERR_WORKER_OUT_OF_MEMORY') {
        settle({ error: `killed: the case passed its ${request.memoryMb} MiB memory cap` });
      } else {
        settle({ error: `the case's worker failed: ${oneLine(error)}` });
      }
    });
    worker.on('exit', (code) =>
      settle({ error: `the case's worker exited with code ${code} before a result` }),
    );
  });
}

function oneLine(error: unknown): string {
  try {
    const message = error instanceof Error ? error.message : String(error);
    return message.replace(/\s+/g, ' ').slice(0, 300);
  } catch {
    return 'an error that cannot be described';
  }
}
