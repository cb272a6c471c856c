/**
 * The explore row of `faultline bench`: schedules per second of the
 * snapshot-restore guest of HANDLERS.md (64 pages, 2 vCPUs, balloon 8) with
 * the careful example handler, on one worker thread and on one per core,
 * each warmed up before the clock starts (boot and JIT warm-up excluded).
 * Reported as wall-clock rates and as rates per CPU-second of each worker's
 * thread (the machine may be shared); every schedule must pass, so the run
 * doubles as the careful handler's long campaign (2 × 6,000 counted
 * schedules, 2 × 2,000 with --quick, besides the warm-up). Fewer made the
 * two-worker window ~0.1 s long, and its ratio swung by ±5% run to run.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type CampaignConfig, defaultWorkers, loadExploreHandler, runCampaign } from '../explore/campaign.ts';
import { loadHandlerModule } from '../handlers/load.ts';

export interface ExploreBenchRun {
  readonly workers: number;
  readonly schedules: number;
  /** Wall-clock rate, from the first schedule handed out (every worker booted and warm) to the last done. */
  readonly schedulesPerSecond: number;
  /** Schedules per second of each worker's own thread CPU time (what the worker would do on a free core). */
  readonly schedulesPerCpuSecond: number;
  /** The whole process's CPU per schedule over the run (the GC's and the JIT's threads included), ms. */
  readonly processCpuMsPerSchedule: number;
  readonly failures: number;
}

export interface ExploreBenchResult {
  readonly handler: string;
  readonly guest: string;
  readonly oneWorker: ExploreBenchRun;
  readonly allWorkers: ExploreBenchRun;
  /** allWorkers / oneWorker, wall-clock rates. */
  readonly speedup: number;
  /**
   * allWorkers / oneWorker if the machine's cores were free: the workers'
   * summed per-CPU-second rates (what scaling the design allows) over one's.
   */
  readonly cpuSpeedup: number;
  /** The first failure's kind and message, if a schedule failed (the careful handler must pass). */
  readonly failure: string | null;
}

/** The careful example handler, or the built-in one where the examples are not installed. */
function carefulHandler(): string {
  const here = import.meta.url;
  const example = fileURLToPath(new URL('../../examples/handlers/careful.ts', here));
  if (here.endsWith('.ts') && existsSync(example)) return example;
  return fileURLToPath(
    new URL(here.endsWith('.ts') ? '../handlers/builtin.ts' : '../handlers/builtin.js', here),
  );
}

/**
 * Uncounted schedules each worker runs first, so that the JIT has compiled
 * the path (~1.5 s). Measured with --trace-opt on one worker, per thousand
 * schedules: 1,071 ms of TurboFan compiling in the first, 211 in the
 * second, 112 in the third, then under 12. With 300, most of that fell
 * inside the measured window, where on one worker it ran free on the idle
 * core and on two it took CPU from the other worker.
 */
const WARMUP_SCHEDULES = 3000;

export async function measureExplore(options: { schedules: number }): Promise<ExploreBenchResult> {
  const handler = carefulHandler();
  const serve = await loadHandlerModule(handler);
  const config = (schedules: number, seed: number): CampaignConfig => ({
    handler,
    guest: { mode: 'anon', guestBytes: 64 * 4096, vcpus: 2, pattern: 'sequential', seed: 1, balloonPages: 8 },
    strategy: 'random',
    depth: 3,
    preemptions: 2,
    schedules,
    seed,
    shard: { index: 0, count: 1 },
    keepGoing: false,
  });
  let failure: string | null = null;
  // Both runs on worker threads, each worker warmed up before the clock
  // starts: one and N workers on the same footing.
  const measure = async (workers: number, seed: number): Promise<ExploreBenchRun> => {
    const result = await runCampaign(serve, config(options.schedules, seed), {
      outDir: 'explore-out',
      workers,
      threads: true,
      warmup: WARMUP_SCHEDULES,
    });
    const first = result.failures[0];
    if (first !== undefined && failure === null)
      failure = `${first.kind}: ${first.message} (replay ${first.replay})`;
    const perCpu = result.perWorker.map((w) => w.schedules / (Math.max(w.cpuMs, 1e-3) / 1000));
    return {
      workers: result.workers,
      schedules: result.schedules,
      schedulesPerSecond: result.schedules / (Math.max(result.runningMs, 1e-3) / 1000),
      schedulesPerCpuSecond: perCpu.reduce((a, b) => a + b, 0) / Math.max(1, perCpu.length),
      processCpuMsPerSchedule: result.processCpuMs / Math.max(1, result.schedules),
      failures: result.failures.length,
    };
  };
  const oneWorker = await measure(1, 1);
  const allWorkers = await measure(Math.max(2, defaultWorkers()), 2);
  return {
    handler,
    guest: '64 pages, 2 vCPUs, balloon 8',
    oneWorker,
    allWorkers,
    speedup: allWorkers.schedulesPerSecond / oneWorker.schedulesPerSecond,
    cpuSpeedup: (allWorkers.schedulesPerCpuSecond * allWorkers.workers) / oneWorker.schedulesPerCpuSecond,
    failure,
  };
}

/** One campaign of the C handler binary: rates with the binaries' and connectors' CPU counted. */
export interface ExploreBinaryBenchRun {
  readonly workers: number;
  readonly schedules: number;
  /** Wall-clock rate over the measured span (every worker booted and warm). */
  readonly schedulesPerSecond: number;
  /** CPU per schedule: the whole process's plus its reaped children's (the binaries, the connectors), ms. */
  readonly cpuMsPerSchedule: number;
  readonly failures: number;
}

export interface ExploreBinaryBenchResult {
  readonly handler: string;
  readonly guest: string;
  readonly oneWorker: ExploreBinaryBenchRun;
  readonly allWorkers: ExploreBinaryBenchRun;
  /** allWorkers / oneWorker, wall-clock rates. */
  readonly speedup: number;
  readonly failure: string | null;
}

/** CPU time of this process's reaped children (cutime + cstime), ms. */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / CLOCK_TICKS;
}

/** sysconf(_SC_CLK_TCK) on Linux. */
const CLOCK_TICKS = 100;

/**
 * explore with the C handler binary (build/Release/fc_handler), on one
 * worker thread and on one per core (at least two): each schedule starts
 * the binary and the connector and traps every uffd call, so the children's
 * CPU counts too. Null when the handler is not built.
 */
export async function measureExploreBinary(options: {
  schedules: number;
  path: string;
}): Promise<ExploreBinaryBenchResult | null> {
  if (!existsSync(options.path)) return null;
  const handler = await loadExploreHandler(options.path);
  const config: CampaignConfig = {
    handler: options.path,
    guest: { mode: 'anon', guestBytes: 64 * 4096, vcpus: 2, pattern: 'sequential', seed: 1, balloonPages: 8 },
    strategy: 'random',
    depth: 3,
    preemptions: 2,
    schedules: options.schedules,
    seed: 1,
    shard: { index: 0, count: 1 },
    keepGoing: false,
  };
  let failure: string | null = null;
  const measure = async (workers: number, seed: number): Promise<ExploreBinaryBenchRun> => {
    // The children's CPU over the measured span, as the process's: from the clock's start.
    let children = 0;
    const result = await runCampaign(
      handler.serve,
      { ...config, seed },
      {
        outDir: 'explore-out',
        workers,
        threads: true,
        warmup: BINARY_WARMUP_SCHEDULES,
        binaryThreads: handler.threads,
        started: () => {
          children = childrenCpuMs();
        },
      },
    );
    const first = result.failures[0];
    if (first !== undefined && failure === null) failure = `${first.kind}: ${first.message}`;
    const cpuMs = result.processCpuMs + (childrenCpuMs() - children);
    return {
      workers: result.workers,
      schedules: result.schedules,
      schedulesPerSecond: result.schedules / (Math.max(result.runningMs, 1e-3) / 1000),
      cpuMsPerSchedule: cpuMs / Math.max(1, result.schedules),
      failures: result.failures.length,
    };
  };
  const oneWorker = await measure(1, 1);
  const allWorkers = await measure(Math.max(2, defaultWorkers()), 2);
  return {
    handler: options.path,
    guest: '64 pages, 2 vCPUs, balloon 8',
    oneWorker,
    allWorkers,
    speedup: allWorkers.schedulesPerSecond / oneWorker.schedulesPerSecond,
    failure,
  };
}

/** Uncounted schedules per worker before the clock starts (a binary's schedule costs ~5 ms). */
const BINARY_WARMUP_SCHEDULES = 20;
