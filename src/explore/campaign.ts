/**
 * A campaign: many schedules of one guest and one handler, on worker
 * threads, split across machines with a shard; each failure shrunk (fewest
 * deviations from the default policy, so fewest preemptions) and written as
 * a replay file.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { loadHandler } from '../handlers/resolve.ts';
import type { Serve } from '../handlers/session.ts';
import { type FailureKind, type GuestConfig, runSchedule, type ScheduleOutcome } from './run.ts';
import {
  ExhaustiveSearch,
  PctStrategy,
  RandomStrategy,
  ReplayStrategy,
  type Strategy,
  type StrategyName,
} from './strategy.ts';

export interface CampaignConfig {
  /** The handler module or binary (absolute path): workers load it themselves. */
  readonly handler: string;
  /** Arguments appended to a handler binary's command line (after --). */
  readonly handlerArgs?: readonly string[];
  /** Wall time a handler binary may stay silent while the guest waits (default: the workload's). */
  readonly handlerTimeoutMs?: number;
  readonly guest: GuestConfig;
  readonly strategy: StrategyName;
  /** PCT's bug depth. */
  readonly depth: number;
  /** Exhaustive: at most this many preemptions per schedule. */
  readonly preemptions: number;
  readonly schedules: number;
  readonly seed: number;
  readonly shard: { readonly index: number; readonly count: number };
  /** Keep going after a failure (default: stop at the first). */
  readonly keepGoing: boolean;
}

export interface Failure {
  readonly kind: FailureKind;
  readonly schedule: number;
  readonly message: string;
  readonly replay: string;
  readonly preemptions: number;
}

export interface CampaignResult {
  readonly schedules: number;
  readonly failures: Failure[];
  readonly elapsedMs: number;
  readonly workers: number;
  /** The search space was exhausted (exhaustive). */
  readonly exhausted: boolean;
  /**
   * Wall time from the first schedule handed out (every worker booted and
   * warmed up) to the last worker done; shrinking excluded.
   */
  readonly runningMs: number;
  /** Each worker's schedules and its wall and CPU time running them (random and pct). */
  readonly perWorker: readonly WorkerCounts[];
  /** The process's CPU time (all threads) over `runningMs`. */
  readonly processCpuMs: number;
  readonly externalWait: boolean;
  /** Most threads of a handler binary that made uffd calls in one schedule (0 for a module). */
  readonly binaryThreads: number;
}

/** The replay file of a failure (`faultline explore --replay FILE`). */
export interface ReplayFile {
  readonly version: 1;
  readonly kind: FailureKind;
  readonly message: string;
  readonly handler: string;
  /** A handler binary's arguments (absent: none). */
  readonly handlerArgs?: readonly string[];
  readonly handlerTimeoutMs?: number;
  readonly guest: GuestConfig;
  readonly strategy: StrategyName;
  readonly seed: number;
  readonly schedule: number;
  /** Where the schedule leaves the default policy: [decision index, thread id] (0 is the handler). */
  readonly deviations: readonly (readonly [number, number])[];
  readonly preemptions: number;
}

/** A loaded handler, and the most binary threads seen making uffd calls in one run. */
export interface ExploreHandler {
  readonly serve: Serve;
  readonly kind: 'module' | 'binary';
  readonly threads: () => number;
}

/** Loads the campaign's handler (in the main thread or a worker), counting a binary's threads. */
export async function loadExploreHandler(
  file: string,
  options: { args?: readonly string[]; timeoutMs?: number } = {},
): Promise<ExploreHandler> {
  let threads = 0;
  const choice = await loadHandler(file, {
    ...(options.args === undefined ? {} : { args: options.args }),
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    report: (report) => {
      threads = Math.max(threads, report.threads);
    },
  });
  return { serve: choice.serve, kind: choice.kind, threads: () => threads };
}

/** The seed of schedule `index` of a campaign seeded `seed`. */
export function scheduleSeed(seed: number, index: number): number {
  let x = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0 || 1;
}

/** The strategy of schedule `index` (random and pct). */
export function strategyFor(config: CampaignConfig, index: number, expectedDecisions: number): Strategy {
  const seed = scheduleSeed(config.seed, index);
  return config.strategy === 'pct'
    ? new PctStrategy(seed, config.depth, expectedDecisions)
    : new RandomStrategy(seed);
}

/** Decisions of the default schedule: PCT's estimate of a run's length. */
export async function baselineDecisions(serve: Serve, guest: GuestConfig): Promise<number> {
  const outcome = await runSchedule(serve, guest, new ReplayStrategy([]));
  return Math.max(1, outcome.decisions);
}

/** The schedule indices of this shard, in order. */
export function shardIndices(config: CampaignConfig): number[] {
  const indices: number[] = [];
  for (let i = config.shard.index; i < config.schedules; i += config.shard.count) indices.push(i);
  return indices;
}

export function preemptionsOf(outcome: ScheduleOutcome): number {
  let count = 0;
  for (const record of outcome.records) {
    if (record.chosen !== record.current && record.enabled.includes(record.current)) count++;
  }
  return count;
}

/**
 * Shrinks a failing schedule: removes deviations (halves, then smaller
 * chunks, then one at a time) while the run still fails with the same kind.
 */
export async function shrink(
  serve: Serve,
  guest: GuestConfig,
  kind: FailureKind,
  deviations: readonly (readonly [number, number])[],
  budget = 400,
): Promise<ScheduleOutcome> {
  let current = [...deviations];
  const attempt = async (candidate: (readonly [number, number])[]): Promise<boolean> =>
    (await runSchedule(serve, guest, new ReplayStrategy(candidate))).kind === kind;
  let chunk = Math.max(1, Math.ceil(current.length / 2));
  for (;;) {
    let i = 0;
    while (i < current.length && budget > 0) {
      budget--;
      const candidate = [...current.slice(0, i), ...current.slice(i + chunk)];
      if (await attempt(candidate)) current = candidate;
      else i += chunk;
    }
    if (chunk === 1 || budget <= 0) break;
    chunk = Math.ceil(chunk / 2);
  }
  const final = await runSchedule(serve, guest, new ReplayStrategy(current), { recordDecisions: true });
  if (final.kind === kind) return final;
  // Shrinking changed the failure (it should not): keep the original schedule.
  return runSchedule(serve, guest, new ReplayStrategy(deviations), { recordDecisions: true });
}

/** Shrinks a failure, writes its replay file under `outDir`, and describes it. */
export async function recordFailure(options: {
  serve: Serve;
  config: CampaignConfig;
  schedule: number;
  outcome: ScheduleOutcome;
  outDir: string;
}): Promise<Failure> {
  const { serve, config, schedule, outcome } = options;
  const kind = outcome.kind!;
  const shrunk = await shrink(serve, config.guest, kind, outcome.deviations);
  const reproduced = shrunk.kind === kind;
  const message = reproduced ? shrunk.message : notReproduced(kind, outcome, shrunk);
  const deviations = reproduced ? shrunk.deviations : outcome.deviations;
  const preemptions = preemptionsOf(shrunk);
  mkdirSync(options.outDir, { recursive: true });
  const replay = join(options.outDir, `${kind}-seed${config.seed}-schedule${schedule}.json`);
  const file: ReplayFile = {
    version: 1,
    kind,
    message,
    handler: config.handler,
    ...((config.handlerArgs ?? []).length > 0 ? { handlerArgs: config.handlerArgs } : {}),
    ...(config.handlerTimeoutMs === undefined ? {} : { handlerTimeoutMs: config.handlerTimeoutMs }),
    guest: config.guest,
    strategy: config.strategy,
    seed: config.seed,
    schedule,
    deviations,
    preemptions,
  };
  writeFileSync(replay, `${JSON.stringify(file, null, 2)}\n`);
  return { kind, schedule, message, replay, preemptions };
}

/**
 * The message of a failure its replay did not reproduce (the run's own
 * message, never the replay's empty one from a pass): something outside the
 * schedule decided it — a handler binary's host threads, or the host.
 */
function notReproduced(kind: FailureKind, outcome: ScheduleOutcome, replay: ScheduleOutcome): string {
  const original = outcome.message === '' ? `a ${kind} whose run gave no message` : outcome.message;
  const again =
    replay.kind === null ? 'passed' : `failed otherwise (${replay.kind}: ${replay.message.split('\n')[0]})`;
  return `${original}\n(not reproduced: the same schedule replayed ${again}; something outside the schedule's decisions made the difference)`;
}

/** A message from a worker thread (or from the main thread's own runner) to the dispatcher. */
export type WorkerMessage =
  /** Handler loaded and warm-up done: the worker's clock starts with its first chunk. */
  | { readonly type: 'ready' }
  /** The worker started its last buffered chunk: it wants another (and reports its progress). */
  | {
      readonly type: 'more';
      readonly done: number;
      readonly externalWait: boolean;
      readonly binaryThreads: number;
    }
  | { readonly type: 'failure'; readonly schedule: number; readonly outcome: ScheduleOutcome }
  | {
      readonly type: 'done';
      readonly done: number;
      readonly externalWait: boolean;
      readonly binaryThreads: number;
      /** From this worker's first measured schedule to its last (boot and warm-up excluded). */
      readonly elapsedMs: number;
      /** This thread's CPU time over the same span. */
      readonly cpuMs: number;
      /** Wall time of that span spent waiting for a chunk. */
      readonly waitMs: number;
    }
  | { readonly type: 'error'; readonly message: string };

/** A message from the dispatcher to a worker thread. */
export type DispatchMessage =
  | { readonly type: 'chunk'; readonly indices: readonly number[] }
  /** A schedule at index `failed` failed: indices above it need not run (stop at the first failure). */
  | { readonly type: 'limit'; readonly failed: number }
  /** No more chunks. */
  | { readonly type: 'end' };

/** What a worker is told: the campaign, and how many uncounted schedules warm it up. */
export interface WorkerTask {
  readonly config: CampaignConfig;
  readonly expectedDecisions: number;
  /** Schedules run before the clock starts (a different seed), so the JIT has compiled the path. */
  readonly warmup: number;
}

/** Where a runner gets its next schedule index (null: none left), and learns of a failure limit. */
export interface IndexSource {
  next(): number | null | Promise<number | null>;
  /** Indices above this are not run (a failure at it stops the campaign). */
  readonly limit: number;
}

/** This thread's CPU time in ms (Linux: the scheduler's count for this thread; elsewhere the process's). */
export function threadCpuMs(): number {
  try {
    const schedstat = readFileSync('/proc/thread-self/schedstat', 'utf8');
    return Number(schedstat.slice(0, schedstat.indexOf(' '))) / 1e6;
  } catch {
    const usage = process.cpuUsage();
    return (usage.user + usage.system) / 1000;
  }
}

/** The seed of a worker's uncounted warm-up schedules: not the campaign's own. */
const WARMUP_SEED_MIX = 0x5bd1e995;

/**
 * Runs schedules as `source` hands them out (on a worker thread, or inline
 * for one worker), after `task.warmup` uncounted ones.
 */
export async function runShare(
  handler: ExploreHandler,
  task: WorkerTask,
  source: IndexSource,
  post: (message: WorkerMessage) => void,
): Promise<void> {
  const warmConfig = { ...task.config, seed: (task.config.seed ^ WARMUP_SEED_MIX) >>> 0 };
  for (let i = 0; i < task.warmup; i++) {
    await runSchedule(handler.serve, task.config.guest, strategyFor(warmConfig, i, task.expectedDecisions));
  }
  post({ type: 'ready' });
  let done = 0;
  let externalWait = false;
  let waitMs = 0;
  const started = performance.now();
  const cpuStarted = threadCpuMs();
  for (;;) {
    // Let messages and signals in (a worker's port is read between event-loop turns).
    if (done % 16 === 15) await new Promise<void>((resolve) => setImmediate(resolve));
    let index = source.next();
    if (index instanceof Promise) {
      const waitStarted = performance.now();
      index = await index;
      waitMs += performance.now() - waitStarted;
    }
    if (index === null) break;
    if (index > source.limit) continue;
    const outcome = await runSchedule(
      handler.serve,
      task.config.guest,
      strategyFor(task.config, index, task.expectedDecisions),
    );
    done++;
    externalWait ||= outcome.externalWait;
    if (outcome.kind !== null)
      post({ type: 'failure', schedule: index, outcome: { ...outcome, records: [] } });
  }
  post({
    type: 'done',
    done,
    externalWait,
    binaryThreads: handler.threads(),
    elapsedMs: performance.now() - started,
    cpuMs: threadCpuMs() - cpuStarted,
    waitMs,
  });
}

/**
 * Hands the shard's schedule indices out in increasing order, in chunks that
 * shrink toward the end (guided self-scheduling: no worker is left with a
 * long tail while the others idle). A failure at index f stops the hand-out
 * past f, but every index below f still runs: the first failure reported
 * is the lowest failing index, whatever the timing, so a seed always gives
 * the same failure and replay file.
 */
export class Dispatcher {
  private next = 0;
  limit = Number.POSITIVE_INFINITY;

  constructor(
    private readonly indices: readonly number[],
    private readonly workers: number,
  ) {}

  /** The next chunk (empty when none is left). */
  chunk(): number[] {
    const left = this.indices.length - this.next;
    const size = Math.max(1, Math.min(CHUNK_MAX, Math.ceil(left / (this.workers * 4))));
    const chunk: number[] = [];
    while (chunk.length < size && this.next < this.indices.length) {
      const index = this.indices[this.next]!;
      if (index > this.limit) {
        this.next = this.indices.length;
        break;
      }
      chunk.push(index);
      this.next++;
    }
    return chunk;
  }

  fail(index: number): void {
    this.limit = Math.min(this.limit, index);
  }
}

/** Largest chunk handed out at once (each costs one message each way). */
const CHUNK_MAX = 32;

/** Per-worker counts of a campaign: schedules, and wall and CPU time running them. */
export interface WorkerCounts {
  readonly schedules: number;
  readonly elapsedMs: number;
  readonly cpuMs: number;
  readonly waitMs: number;
}

export interface CampaignHooks {
  readonly outDir: string;
  readonly workers: number;
  /** The most threads of a handler binary making uffd calls in one of this thread's runs. */
  readonly binaryThreads?: () => number;
  /** Schedules run so far (for a progress line). */
  readonly progress?: (done: number, total: number) => void;
  /** Run even one worker on a worker thread (the bench: every worker count on the same footing). */
  readonly threads?: boolean;
  /** Uncounted schedules each worker runs before the clock starts (default 0). */
  readonly warmup?: number;
  /** Called when the clock starts (every worker booted and warm): the bench reads its own counters. */
  readonly started?: () => void;
}

/** The state of a running campaign as the dispatcher sees it. */
class CampaignState {
  readonly found: Array<{ schedule: number; outcome: ScheduleOutcome }> = [];
  readonly doneBy: number[];
  readonly counts: WorkerCounts[] = [];
  externalWait = false;
  binaryThreads = 0;
  firstDispatch = 0;
  lastDone = 0;
  /** The whole process's CPU time (every thread, the GC's and the compiler's too) at those two moments. */
  processCpuAtDispatch = 0;
  processCpuAtDone = 0;

  constructor(
    readonly dispatcher: Dispatcher,
    readonly config: CampaignConfig,
    readonly hooks: CampaignHooks,
    readonly total: number,
    workers: number,
  ) {
    this.doneBy = new Array<number>(workers).fill(0);
  }

  /** Handles a worker's message; returns the failure limit when it changed. */
  receive(worker: number, message: WorkerMessage): number | null {
    if (message.type === 'ready') return null;
    if (message.type === 'failure') {
      this.found.push({ schedule: message.schedule, outcome: message.outcome });
      if (this.config.keepGoing || message.schedule >= this.dispatcher.limit) return null;
      this.dispatcher.fail(message.schedule);
      return message.schedule;
    }
    if (message.type === 'error') throw new Error(`explore worker: ${message.message}`);
    this.doneBy[worker] = message.done;
    this.externalWait ||= message.externalWait;
    this.binaryThreads = Math.max(this.binaryThreads, message.binaryThreads);
    if (message.type === 'done') {
      const { elapsedMs, cpuMs, waitMs } = message;
      this.counts[worker] = { schedules: message.done, elapsedMs, cpuMs, waitMs };
      this.lastDone = performance.now();
      this.processCpuAtDone = processCpuMs();
    }
    this.hooks.progress?.(this.schedules, this.total);
    return null;
  }

  get schedules(): number {
    return this.doneBy.reduce((a, b) => a + b, 0);
  }

  /** The clock starts: every worker is ready. */
  start(): void {
    this.firstDispatch = performance.now();
    this.processCpuAtDispatch = processCpuMs();
    this.hooks.started?.();
  }
}

function processCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/** Runs the campaign: workers for random and pct, one thread for exhaustive. */
export async function runCampaign(
  serve: Serve,
  config: CampaignConfig,
  hooks: CampaignHooks,
): Promise<CampaignResult> {
  const started = performance.now();
  if (config.strategy === 'exhaustive') return runExhaustive(serve, config, hooks, started);
  const expectedDecisions = config.strategy === 'pct' ? await baselineDecisions(serve, config.guest) : 1;
  const indices = shardIndices(config);
  const workers = Math.max(1, Math.min(hooks.workers, indices.length));
  const state = new CampaignState(new Dispatcher(indices, workers), config, hooks, indices.length, workers);
  const task: WorkerTask = { config, expectedDecisions, warmup: hooks.warmup ?? 0 };
  if (workers === 1 && hooks.threads !== true) {
    const handler = { serve, kind: 'module' as const, threads: hooks.binaryThreads ?? (() => 0) };
    await runShare(handler, task, inlineSource(state), (message) => {
      if (message.type === 'ready') state.start();
      state.receive(0, message);
    });
  } else {
    await runWorkers(state, task, workers);
  }
  const elapsedMs = performance.now() - started;
  state.found.sort((a, b) => a.schedule - b.schedule);
  const failures: Failure[] = [];
  for (const { schedule, outcome } of state.found.slice(0, config.keepGoing ? 20 : 1)) {
    failures.push(await recordFailure({ serve, config, schedule, outcome, outDir: hooks.outDir }));
  }
  return {
    schedules: state.schedules,
    failures,
    elapsedMs,
    workers,
    exhausted: false,
    runningMs: Math.max(0, state.lastDone - state.firstDispatch),
    perWorker: state.counts,
    processCpuMs: state.processCpuAtDone - state.processCpuAtDispatch,
    externalWait: state.externalWait,
    binaryThreads: Math.max(state.binaryThreads, hooks.binaryThreads?.() ?? 0),
  };
}

/** The dispatcher as the main thread's own runner sees it (one worker, inline). */
function inlineSource(state: CampaignState): IndexSource {
  let chunk: number[] = [];
  let done = 0;
  return {
    next: () => {
      if (chunk.length === 0) {
        if (done > 0) state.receive(0, { type: 'more', done, externalWait: false, binaryThreads: 0 });
        chunk = state.dispatcher.chunk();
      }
      const index = chunk.shift();
      if (index === undefined) return null;
      done++;
      return index;
    },
    get limit() {
      return state.dispatcher.limit;
    },
  };
}

/**
 * Boots `workers` worker threads, waits until every one is ready (handler
 * loaded, warm-up run), then feeds them chunks on demand until none is left.
 */
async function runWorkers(state: CampaignState, task: WorkerTask, workers: number): Promise<void> {
  const threads: Worker[] = [];
  let ready = 0;
  const send = (worker: number): void => {
    const indices = state.dispatcher.chunk();
    threads[worker]!.postMessage(
      indices.length === 0 ? ({ type: 'end' } as const) : ({ type: 'chunk', indices } as const),
    );
  };
  const onMessage = (worker: number, message: WorkerMessage): void => {
    const limit = state.receive(worker, message);
    if (limit !== null) for (const thread of threads) thread.postMessage({ type: 'limit', failed: limit });
    if (message.type === 'more') send(worker);
    if (message.type === 'ready' && ++ready === workers) {
      // Everyone is warm: start the clock, and give each worker two chunks (one to run, one buffered).
      state.start();
      for (let w = 0; w < workers; w++) send(w);
      for (let w = 0; w < workers; w++) send(w);
    }
  };
  try {
    await Promise.all(
      Array.from({ length: workers }, (_, worker) =>
        startWorker(task, threads, (message) => onMessage(worker, message)),
      ),
    );
  } catch (error) {
    // One worker failed: the others would wait for it (to be ready) forever.
    await Promise.all(threads.map((thread) => thread.terminate()));
    throw error;
  }
}

async function runExhaustive(
  serve: Serve,
  config: CampaignConfig,
  hooks: CampaignHooks,
  started: number,
): Promise<CampaignResult> {
  const search = new ExhaustiveSearch(config.preemptions);
  const failures: Failure[] = [];
  let schedules = 0;
  let externalWait = false;
  while (!search.done && schedules < config.schedules) {
    const index = schedules++;
    const outcome = await runSchedule(serve, config.guest, search.strategy(), { recordDecisions: true });
    externalWait ||= outcome.externalWait;
    search.record(outcome.records);
    if (schedules % 50 === 0) hooks.progress?.(schedules, config.schedules);
    if (outcome.kind !== null) {
      failures.push(await recordFailure({ serve, config, schedule: index, outcome, outDir: hooks.outDir }));
      if (!config.keepGoing || failures.length >= 20) break;
    }
  }
  return {
    schedules,
    failures,
    elapsedMs: performance.now() - started,
    workers: 1,
    exhausted: search.done,
    runningMs: performance.now() - started,
    perWorker: [],
    processCpuMs: 0,
    externalWait,
    binaryThreads: hooks.binaryThreads?.() ?? 0,
  };
}

/** Starts one worker thread (pushed onto `threads`); resolves when it exits. */
function startWorker(
  task: WorkerTask,
  threads: Worker[],
  onMessage: (message: WorkerMessage) => void,
): Promise<void> {
  const here = import.meta.url;
  const typescript = here.endsWith('.ts');
  const file = new URL(typescript ? './worker.ts' : './worker.js', here);
  // Run from source, the worker registers tsx's loader first (a loader registered here is not inherited).
  const worker = typescript
    ? new Worker(
        `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})` +
          `.then((tsx) => { tsx.register(); return import(${JSON.stringify(file.href)}); });`,
        { eval: true, workerData: task },
      )
    : new Worker(file, { workerData: task });
  threads.push(worker);
  return new Promise((resolvePromise, reject) => {
    worker.on('message', (message: WorkerMessage) => {
      try {
        onMessage(message);
      } catch (error) {
        reject(error);
      }
    });
    worker.on('error', reject);
    worker.on('exit', () => resolvePromise());
  });
}

/**
 * Schedules a campaign needs per worker before another worker pays for
 * itself. Each worker thread loads the handler and the model and JIT-compiles
 * them on its own: ~1 s before it runs at full speed. Measured cold from the
 * CLI on this 2-core machine (idle, careful.ts, 64 pages, balloon 8): 1,000
 * schedules took 1.1 s on one worker and 1.2 s on two, 3,000 1.9 and 2.2 s,
 * 6,000 3.3 and 3.0 s; with the C handler binary, 200 took 1.2 and 1.3 s,
 * 600 3.3 and 2.5 s.
 */
const SCHEDULES_PER_WORKER = { module: 2500, binary: 150 } as const;

/**
 * Workers when --workers is not given: one per core, but no more than the
 * campaign keeps busy long enough to pay for booting them (one: the
 * campaign runs inline on the main thread). Without a plan, every core.
 */
export function defaultWorkers(
  plan?: { readonly schedules: number; readonly kind: 'module' | 'binary' },
  cores = availableParallelism(),
): number {
  if (plan === undefined) return cores;
  return Math.max(1, Math.min(cores, Math.floor(plan.schedules / SCHEDULES_PER_WORKER[plan.kind])));
}

export { resolve as resolvePath };
