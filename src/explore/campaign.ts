/**
 * A campaign: many schedules of one guest and one handler, on worker
 * threads, split across machines with a shard; each failure shrunk (fewest
 * deviations from the default policy, so fewest preemptions) and written as
 * a replay file.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
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
  /** The longest worker's time running schedules (worker boot and shrinking excluded). */
  readonly runningMs: number;
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
  const preemptions = preemptionsOf(shrunk);
  mkdirSync(options.outDir, { recursive: true });
  const replay = join(options.outDir, `${kind}-seed${config.seed}-schedule${schedule}.json`);
  const file: ReplayFile = {
    version: 1,
    kind,
    message: shrunk.message,
    handler: config.handler,
    ...((config.handlerArgs ?? []).length > 0 ? { handlerArgs: config.handlerArgs } : {}),
    ...(config.handlerTimeoutMs === undefined ? {} : { handlerTimeoutMs: config.handlerTimeoutMs }),
    guest: config.guest,
    strategy: config.strategy,
    seed: config.seed,
    schedule,
    deviations: shrunk.deviations,
    preemptions,
  };
  writeFileSync(replay, `${JSON.stringify(file, null, 2)}\n`);
  return { kind, schedule, message: shrunk.message, replay, preemptions };
}

/** A message from a worker. */
export type WorkerMessage =
  | {
      readonly type: 'progress';
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
      /** From this worker's first schedule to its last (its boot excluded). */
      readonly elapsedMs: number;
    }
  | { readonly type: 'error'; readonly message: string };

/** What a worker is told: the campaign, and which of the shard's schedules are its own. */
export interface WorkerTask {
  readonly config: CampaignConfig;
  readonly worker: number;
  readonly workers: number;
  readonly expectedDecisions: number;
}

/** Runs a worker's share of schedules (on a worker thread, or inline for one worker). */
export async function runShare(
  handler: ExploreHandler,
  task: WorkerTask,
  post: (message: WorkerMessage) => void,
  stopped: () => boolean,
): Promise<void> {
  const indices = shardIndices(task.config).filter((_, i) => i % task.workers === task.worker);
  let done = 0;
  let externalWait = false;
  let lastReport = 0;
  const started = performance.now();
  for (const index of indices) {
    // Let a stop message in (a worker's port is read between event-loop turns).
    if (done % 16 === 15) await new Promise<void>((resolve) => setImmediate(resolve));
    if (stopped()) break;
    const outcome = await runSchedule(
      handler.serve,
      task.config.guest,
      strategyFor(task.config, index, task.expectedDecisions),
    );
    done++;
    externalWait ||= outcome.externalWait;
    if (outcome.kind !== null)
      post({ type: 'failure', schedule: index, outcome: { ...outcome, records: [] } });
    if (done - lastReport >= 50) {
      lastReport = done;
      post({ type: 'progress', done, externalWait, binaryThreads: handler.threads() });
    }
  }
  post({
    type: 'done',
    done,
    externalWait,
    binaryThreads: handler.threads(),
    elapsedMs: performance.now() - started,
  });
}

export interface CampaignHooks {
  readonly outDir: string;
  readonly workers: number;
  /** The most threads of a handler binary making uffd calls in one of this thread's runs. */
  readonly binaryThreads?: () => number;
  /** Schedules run so far (for a progress line). */
  readonly progress?: (done: number, total: number) => void;
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
  const total = shardIndices(config).length;
  const workers = Math.max(1, Math.min(hooks.workers, total));
  const failures: Failure[] = [];
  const found: Array<{ schedule: number; outcome: ScheduleOutcome }> = [];
  let stopped = false;
  let externalWait = false;
  const doneBy = new Array<number>(workers).fill(0);
  let runningMs = 0;
  let binaryThreads = 0;
  const onMessage = (worker: number, message: WorkerMessage): void => {
    if (message.type === 'done') runningMs = Math.max(runningMs, message.elapsedMs);
    if (message.type === 'progress' || message.type === 'done') {
      doneBy[worker] = message.done;
      externalWait ||= message.externalWait;
      binaryThreads = Math.max(binaryThreads, message.binaryThreads);
      hooks.progress?.(
        doneBy.reduce((a, b) => a + b, 0),
        total,
      );
    } else if (message.type === 'failure') {
      found.push({ schedule: message.schedule, outcome: message.outcome });
      if (!config.keepGoing) stopped = true;
    } else throw new Error(`explore worker: ${message.message}`);
  };
  const task = (worker: number): WorkerTask => ({ config, worker, workers, expectedDecisions });
  if (workers === 1) {
    await runShare(
      { serve, kind: 'module', threads: hooks.binaryThreads ?? (() => 0) },
      task(0),
      (message) => onMessage(0, message),
      () => stopped,
    );
  } else {
    await Promise.all(
      Array.from({ length: workers }, (_, worker) =>
        runWorker(
          task(worker),
          (message) => onMessage(worker, message),
          () => stopped,
        ),
      ),
    );
  }
  const elapsedMs = performance.now() - started;
  found.sort((a, b) => a.schedule - b.schedule);
  for (const { schedule, outcome } of found.slice(0, config.keepGoing ? 20 : 1)) {
    failures.push(await recordFailure({ serve, config, schedule, outcome, outDir: hooks.outDir }));
  }
  return {
    schedules: doneBy.reduce((a, b) => a + b, 0),
    failures,
    elapsedMs,
    workers,
    exhausted: false,
    runningMs,
    externalWait,
    binaryThreads: Math.max(binaryThreads, hooks.binaryThreads?.() ?? 0),
  };
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
    externalWait,
    binaryThreads: hooks.binaryThreads?.() ?? 0,
  };
}

/** One worker thread running its share; resolves when it is done. */
function runWorker(
  task: WorkerTask,
  onMessage: (message: WorkerMessage) => void,
  stopped: () => boolean,
): Promise<void> {
  const here = import.meta.url;
  const typescript = here.endsWith('.ts');
  const file = new URL(typescript ? './worker.ts' : './worker.js', here);
  return new Promise((resolvePromise, reject) => {
    // Run from source, the worker registers tsx's loader first (a loader registered here is not inherited).
    const worker = typescript
      ? new Worker(
          `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})` +
            `.then((tsx) => { tsx.register(); return import(${JSON.stringify(file.href)}); });`,
          { eval: true, workerData: task },
        )
      : new Worker(file, { workerData: task });
    const poll = setInterval(() => {
      if (stopped()) worker.postMessage('stop');
    }, 20);
    worker.on('message', (message: WorkerMessage) => {
      try {
        onMessage(message);
      } catch (error) {
        reject(error);
      }
      if (message.type === 'failure' && stopped()) worker.postMessage('stop');
    });
    worker.on('error', (error) => {
      clearInterval(poll);
      reject(error);
    });
    worker.on('exit', () => {
      clearInterval(poll);
      resolvePromise();
    });
  });
}

export function defaultWorkers(): number {
  return availableParallelism();
}

export { resolve as resolvePath };
