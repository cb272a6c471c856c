/** `faultline explore snapshot-restore --handler FILE`: schedules of the guest and the handler on the model. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError } from 'commander';
import {
  type CampaignConfig,
  type CampaignResult,
  defaultWorkers,
  type ExploreHandler,
  loadExploreHandler,
  type ReplayFile,
  runCampaign,
} from '../explore/campaign.ts';
import { type GuestConfig, runSchedule } from '../explore/run.ts';
import { ReplayStrategy, STRATEGIES, type StrategyName } from '../explore/strategy.ts';
import type { InjectionRates } from '../model/inject.ts';
import { parseSize } from '../scenario/schema.ts';
import { ACCESS_PATTERNS, type AccessPattern } from '../workloads/guest.ts';
import { RESTORE_MODES, type RestoreMode } from '../workloads/snapshot-restore.ts';
import { UsageError } from './errors.ts';

export interface ExploreCommandOptions {
  handler?: string;
  handlerArgs?: string[];
  handlerTimeout: number;
  replay?: string;
  schedules: number;
  strategy: string;
  depth: number;
  preemptions: number;
  seed: number;
  workers?: number;
  shard?: string;
  out: string;
  keepGoing: boolean;
  mode: string;
  size: string;
  vcpus: number;
  pattern: string;
  balloon: number;
  deflate?: number;
  inject?: InjectionRates;
  json: boolean;
}

function choice<T extends string>(option: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value))
    throw new InvalidArgumentError(`${option}: '${value}' is not one of ${allowed.join(', ')}`);
  return value as T;
}

/** `--shard I/N`: this machine runs schedules i with i mod N = I. */
export function parseShard(value: string | undefined): { index: number; count: number } {
  if (value === undefined) return { index: 0, count: 1 };
  const match = /^(\d+)\/(\d+)$/.exec(value);
  const index = Number(match?.[1]);
  const count = Number(match?.[2]);
  if (match === null || count < 1 || index >= count)
    throw new InvalidArgumentError(`--shard: '${value}' is not I/N with 0 <= I < N (e.g. 0/4)`);
  return { index, count };
}

/** A handler module or binary (decided by the file); a file that is neither is a usage error. */
async function loadHandler(
  file: string,
  options: { args?: readonly string[]; timeoutMs?: number },
): Promise<ExploreHandler> {
  try {
    return await loadExploreHandler(file, options);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function guestFrom(options: ExploreCommandOptions): GuestConfig {
  const mode = choice<RestoreMode>('--mode', options.mode, RESTORE_MODES);
  const pattern = choice<AccessPattern>('--pattern', options.pattern, ACCESS_PATTERNS);
  if (pattern === 'working-set') throw new InvalidArgumentError('--pattern working-set: not for explore');
  const guestBytes = parseSize(options.size);
  if (!Number.isFinite(guestBytes) || guestBytes <= 0)
    throw new InvalidArgumentError(`--size: '${options.size}' is not a size such as 256K or 1M`);
  if (guestBytes > 64 * 2 ** 20)
    throw new InvalidArgumentError(
      `--size: ${options.size} is larger than explore's 64M (schedules want small guests)`,
    );
  if (options.vcpus < 1 || options.vcpus > 16) throw new InvalidArgumentError('--vcpus: between 1 and 16');
  if (options.balloon > 0 && mode !== 'anon') throw new InvalidArgumentError('--balloon: anon mode only');
  return {
    mode,
    guestBytes,
    vcpus: options.vcpus,
    pattern,
    seed: options.seed,
    balloonPages: options.balloon,
    ...(options.deflate === undefined ? {} : { deflatePages: options.deflate }),
    ...(options.inject === undefined || Object.keys(options.inject).length === 0
      ? {}
      : { inject: options.inject }),
  };
}

export async function exploreCommand(
  workload: string,
  options: ExploreCommandOptions,
  out: (line: string) => void,
): Promise<number> {
  if (options.replay !== undefined) return replayCommand(options, out);
  if (workload !== 'snapshot-restore')
    throw new InvalidArgumentError(
      `explore: '${workload}' is not a workload explore runs (snapshot-restore)` +
        ((options.handlerArgs ?? []).length > 0 || workload.startsWith('-')
          ? "; a handler binary's arguments follow the workload: explore snapshot-restore --handler FILE -- ARGS"
          : ''),
    );
  if (options.handler === undefined) throw new InvalidArgumentError('explore: --handler FILE is required');
  if (!(options.handlerTimeout > 0))
    throw new InvalidArgumentError('--handler-timeout: a positive number of milliseconds');
  const strategy = choice<StrategyName>('--strategy', options.strategy, STRATEGIES);
  if (strategy === 'pct' && options.depth < 1) throw new InvalidArgumentError('--depth: at least 1');
  const shard = parseShard(options.shard);
  if (strategy === 'exhaustive' && shard.count > 1)
    throw new InvalidArgumentError('--shard: the exhaustive search runs on one machine (use random or pct)');
  const config: CampaignConfig = {
    handler: resolve(options.handler),
    handlerArgs: options.handlerArgs ?? [],
    handlerTimeoutMs: options.handlerTimeout,
    guest: guestFrom(options),
    strategy,
    depth: options.depth,
    preemptions: options.preemptions,
    schedules: options.schedules,
    seed: options.seed,
    shard,
    keepGoing: options.keepGoing,
  };
  const handler = await loadHandler(options.handler, {
    args: config.handlerArgs ?? [],
    timeoutMs: options.handlerTimeout,
  });
  // A shard runs 1/N of the schedules: that is what its workers must pay for.
  const shardSchedules = Math.ceil(config.schedules / shard.count);
  const workers = options.workers ?? defaultWorkers({ schedules: shardSchedules, kind: handler.kind });
  const result = await runCampaign(handler.serve, config, {
    outDir: options.out,
    workers,
    binaryThreads: handler.threads,
  });
  if (options.json) {
    out(JSON.stringify({ ...jsonDocument(config, result), handlerKind: handler.kind }, null, 2));
  } else {
    printResult(config, result, out);
  }
  return result.failures.length > 0 ? 1 : 0;
}

function jsonDocument(config: CampaignConfig, result: CampaignResult): Record<string, unknown> {
  return {
    version: 1,
    schedules: result.schedules,
    failures: result.failures.map((failure) => ({
      kind: failure.kind,
      schedule: failure.schedule,
      message: failure.message,
      replay: failure.replay,
      preemptions: failure.preemptions,
    })),
    handler: config.handler,
    ...((config.handlerArgs ?? []).length > 0 ? { handlerArgs: config.handlerArgs } : {}),
    strategy: config.strategy,
    seed: config.seed,
    shard: `${config.shard.index}/${config.shard.count}`,
    workers: result.workers,
    elapsedMs: Math.round(result.elapsedMs),
    exhausted: result.exhausted,
    uncontrolledWaits: result.externalWait,
    binaryThreads: result.binaryThreads,
    uncontrolledInterleaving: result.binaryThreads > 1,
  };
}

function printResult(config: CampaignConfig, result: CampaignResult, out: (line: string) => void): void {
  const guest = config.guest;
  out(
    `explore snapshot-restore: ${[config.handler, ...(config.handlerArgs ?? [])].join(' ')}, ${guest.mode}, ${guest.guestBytes / 4096} pages, ` +
      `${guest.vcpus} vCPUs, balloon ${guest.balloonPages}; strategy ${config.strategy}, seed ${config.seed}` +
      (config.shard.count > 1 ? `, shard ${config.shard.index}/${config.shard.count}` : ''),
  );
  const rate = result.schedules / Math.max(result.elapsedMs / 1000, 1e-9);
  for (const failure of result.failures) {
    out('');
    out(`schedule ${failure.schedule}: ${failure.kind}`);
    for (const line of failure.message.split('\n')) out(`  ${line}`);
    out(
      `  shrunk to ${failure.preemptions} preemption(s); replay: faultline explore --replay ${failure.replay}`,
    );
  }
  if (result.externalWait)
    out(
      'note: the handler waited on something outside the backend (not session.poll/sleep): explore cannot control that wait',
    );
  if (result.binaryThreads > 1)
    out(
      `note: the handler binary made uffd calls from ${result.binaryThreads} threads: explore schedules each trapped call, but the interleaving of the binary's own threads is the host's, not controlled (a schedule may not replay exactly)`,
    );
  out('');
  const verdict =
    result.failures.length === 0
      ? `${result.schedules} schedules passed${result.exhausted ? ' (every schedule within the preemption bound)' : ''}`
      : `FAILED: ${result.failures.length} failure(s) in ${result.schedules} schedules`;
  out(
    `${verdict} — ${(result.elapsedMs / 1000).toFixed(1)} s, ${rate.toFixed(0)} schedules/s on ${result.workers} worker(s)`,
  );
}

async function replayCommand(options: ExploreCommandOptions, out: (line: string) => void): Promise<number> {
  const path = options.replay!;
  let file: ReplayFile;
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as ReplayFile;
  } catch (error) {
    throw new UsageError(`--replay ${path}: not a replay file: ${(error as Error).message}`);
  }
  if (file.version !== 1 || !Array.isArray(file.deviations) || typeof file.guest !== 'object')
    throw new UsageError(`--replay ${path}: not a version 1 replay file (version, guest, deviations)`);
  // The recorded binary's arguments unless --handler names another handler (then those after --).
  const args = options.handler === undefined ? (file.handlerArgs ?? []) : (options.handlerArgs ?? []);
  const handler = await loadHandler(options.handler ?? file.handler, {
    args,
    timeoutMs: file.handlerTimeoutMs ?? options.handlerTimeout,
  });
  const outcome = await runSchedule(handler.serve, file.guest, new ReplayStrategy(file.deviations));
  if (options.json) {
    out(
      JSON.stringify(
        {
          version: 1,
          schedules: 1,
          failures:
            outcome.kind === null
              ? []
              : [{ kind: outcome.kind, schedule: file.schedule, message: outcome.message, replay: path }],
          reproduced: outcome.kind === file.kind,
        },
        null,
        2,
      ),
    );
  } else if (outcome.kind === null) {
    out(`replay ${path}: the schedule passed (recorded: ${file.kind}); the handler or faultline changed`);
  } else {
    out(
      `replay ${path}: ${outcome.kind}${outcome.kind === file.kind ? ' (reproduced)' : ` (recorded: ${file.kind})`}`,
    );
    for (const line of outcome.message.split('\n')) out(`  ${line}`);
  }
  return outcome.kind === null ? 0 : 1;
}
