/**
 * The explore row of `faultline bench`: schedules per second of the
 * snapshot-restore guest of HANDLERS.md (64 pages, 2 vCPUs, balloon 8) with
 * the careful example handler, on one worker thread and on one per core,
 * each warmed up before the clock starts (boot and JIT warm-up excluded).
 * Reported as wall-clock rates and as rates per CPU-second of each worker's
 * thread (the machine may be shared); every schedule must pass, so the run
 * doubles as the careful handler's long campaign (2,000 schedules without
 * --quick).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type CampaignConfig, defaultWorkers, runCampaign } from '../explore/campaign.ts';
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

/** Uncounted schedules each worker runs first, so the JIT has compiled the path (~0.3 s). */
const WARMUP_SCHEDULES = 300;

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
