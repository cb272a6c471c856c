/**
 * Memory types loaded from files (`conformance --module`) run only in worker
 * threads: one probe reads their declarations (their top-level code and
 * create() run there), and each conformance case runs in a worker of its
 * own: a hook that never returns, or a type that floods memory, costs that
 * case alone. A worker is killed
 * when its hard timeout passes (terminate() stops even a synchronous loop)
 * or when its heap passes the cap, and the case fails with one line saying
 * so; results are reported per case as in-process runs are.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { KernelVersion } from '../model/kernel.ts';
import type { TypeSummary } from './runner.ts';

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

/** A worker's entry, resolved next to this file (.ts under tsx, .js once compiled). */
function workerSource(entry: 'case-worker' | 'probe-worker'): { code: string; eval: true } | { url: URL } {
  const typescript = import.meta.url.endsWith('.ts');
  const url = new URL(`./${entry}.${typescript ? 'ts' : 'js'}`, import.meta.url);
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
  return runInWorker<WorkerReply>('case-worker', request, {
    timeoutMs: request.timeoutMs,
    memoryMb: request.memoryMb,
    killed: (why) =>
      why === 'timeout'
        ? { error: `killed: no result within ${request.timeoutMs} ms (a hook that never returns?)` }
        : { error: `killed: the case passed its ${request.memoryMb} MiB memory cap` },
    failed: (reason) => ({ error: `the case's worker ${reason}` }),
  });
}

/** What loading memory type modules and reading their declarations needs (the probe of `conformance --module`). */
export interface ProbeRequest {
  readonly modulePaths: readonly string[];
  /** Names of the types to check (default: the modules' own types). */
  readonly memtypes?: readonly string[];
  /** Names of the cases to decide skips for (already checked by the parent). */
  readonly cases: readonly string[];
  readonly version: KernelVersion;
  readonly seed: number;
  readonly timeoutMs: number;
  readonly memoryMb: number;
}

/** The declarations, as plain data: what the parent needs to select, skip and report. */
export interface ProbeDeclarations {
  /** The selected types' summaries, in the order their cases run. */
  readonly types: readonly TypeSummary[];
  /** For each selected type, for each case: why it is skipped, or null. */
  readonly skips: readonly (readonly (string | null)[])[];
}

export type ProbeReply = { readonly declared: ProbeDeclarations } | { readonly error: string };

/**
 * Where the probe was when it was stopped, posted before each step: a module
 * that never finishes loading, or whose create() never returns, is named.
 */
export interface ProbeStage {
  readonly stage: 'import' | 'create';
  readonly path: string;
}

/**
 * Loads the modules and reads their declarations in a worker: a module's
 * top-level code and its create() run there, never in this process, bounded
 * by the same hard timeout and heap cap as its cases.
 */
export function probeModules(request: ProbeRequest): Promise<ProbeReply> {
  let stage: ProbeStage | null = null;
  const where = (): string =>
    stage === null
      ? 'loading the modules'
      : stage.stage === 'import'
        ? `--module ${stage.path}: its top-level code`
        : `--module ${stage.path}: its create()`;
  return runInWorker<ProbeReply>('probe-worker', request, {
    timeoutMs: request.timeoutMs,
    memoryMb: request.memoryMb,
    killed: (why) =>
      why === 'timeout'
        ? { error: `${where()} did not finish within ${request.timeoutMs} ms: killed` }
        : { error: `${where()} passed the ${request.memoryMb} MiB memory cap: killed` },
    failed: (reason) => ({ error: `${where()}: the worker ${reason}` }),
    onStage: (next) => {
      stage = next as ProbeStage;
    },
  });
}

interface WorkerLimits<Reply> {
  readonly timeoutMs: number;
  readonly memoryMb: number;
  /** The reply when the worker is killed at its timeout or its heap cap. */
  killed(why: 'timeout' | 'memory'): Reply;
  /** The reply when the worker failed otherwise ("failed: …", "exited with code N before a result"). */
  failed(reason: string): Reply;
  /** Messages with a `stage` field are progress, not the reply. */
  onStage?(stage: unknown): void;
}

/** Runs `entry` in a worker with `data`; its first non-stage message is the reply. The worker is always terminated. */
function runInWorker<Reply>(
  entry: 'case-worker' | 'probe-worker',
  data: unknown,
  limits: WorkerLimits<Reply>,
): Promise<Reply> {
  const source = workerSource(entry);
  const options = {
    workerData: data,
    resourceLimits: { maxOldGenerationSizeMb: limits.memoryMb },
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
    const settle = (reply: Reply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Resolved once the worker is gone: a killed module leaves nothing running behind the reply.
      worker.terminate().then(
        () => resolve(reply),
        () => resolve(reply),
      );
    };
    const timer = setTimeout(() => settle(limits.killed('timeout')), limits.timeoutMs);
    worker.on('message', (message: unknown) => {
      if (typeof message === 'object' && message !== null && 'stage' in message) limits.onStage?.(message);
      else settle(message as Reply);
    });
    worker.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'ERR_WORKER_OUT_OF_MEMORY') settle(limits.killed('memory'));
      else settle(limits.failed(`failed: ${oneLine(error)}`));
    });
    worker.on('exit', (code) => settle(limits.failed(`exited with code ${code} before a result`)));
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
