/**
 * The explore row of `faultline bench`: schedules per second of the
 * snapshot-restore guest of HANDLERS.md (64 pages, 2 vCPUs, balloon 8) with
 * the careful example handler, on one worker and on every core. Each rate is
 * over the workers' time running schedules (their boot excluded); every
 * schedule must pass, so the run doubles as the careful handler's long
 * campaign (2,000 schedules without --quick).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type CampaignConfig, defaultWorkers, runCampaign } from '../explore/campaign.ts';
import { loadHandlerModule } from '../handlers/load.ts';

export interface ExploreBenchRun {
  readonly workers: number;
  readonly schedules: number;
  readonly schedulesPerSecond: number;
  readonly failures: number;
}

export interface ExploreBenchResult {
  readonly handler: string;
  readonly guest: string;
  readonly oneWorker: ExploreBenchRun;
  readonly allWorkers: ExploreBenchRun;
  /** allWorkers / oneWorker. */
  readonly speedup: number;
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
  // Warm up the model's code paths first.
  await runCampaign(serve, config(50, 99), { outDir: 'explore-out', workers: 1 });
  let failure: string | null = null;
  const measure = async (workers: number, seed: number): Promise<ExploreBenchRun> => {
    const result = await runCampaign(serve, config(options.schedules, seed), {
      outDir: 'explore-out',
      workers,
    });
    const first = result.failures[0];
    if (first !== undefined && failure === null)
      failure = `${first.kind}: ${first.message} (replay ${first.replay})`;
    return {
      workers: result.workers,
      schedules: result.schedules,
      schedulesPerSecond: result.schedules / (Math.max(result.runningMs, 1e-3) / 1000),
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
    failure,
  };
}
