/**
 * The faultline command line. Exit codes: 2 for a usage or configuration
 * error, 1 for failures found, 0 otherwise (see errors.ts). Commands load
 * their modules when they run, so heavy dependencies (fast-check for fuzz,
 * vega for plots) load only in the commands that use them.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { findRow, ROWS } from '../bench/rows.ts';
import { INJECTION_POINTS, type InjectionRates, parseInjection } from '../model/inject.ts';
import { scenarioJsonSchema } from '../scenario/schema.ts';
import { SNAPSHOT_MODES } from '../workloads/background-snapshot.ts';
import { COMPACTION_MODES } from '../workloads/gc-compaction.ts';
import { POSTCOPY_MODES } from '../workloads/postcopy.ts';
import type { BenchCommandOptions } from './bench.ts';
import { countArgument, MAX_COUNT, MAX_DEMO_PAGES, MAX_THREADS } from './bounds.ts';
import { EXIT_USAGE, reportError, UsageError } from './errors.ts';
import type { ExploreCommandOptions } from './explore.ts';
import type { FuzzCommandOptions } from './fuzz.ts';
import {
  type BackgroundSnapshotCommandOptions,
  backgroundSnapshotCommand,
  type GcCompactionCommandOptions,
  gcCompactionCommand,
  type PostcopyCommandOptions,
  percentArgument,
  postcopyCommand,
  type SnapshotRestoreCommandOptions,
  sizeArgument,
  snapshotRestoreCommand,
} from './workload.ts';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** --inject NAME:RATE, repeatable: the rates by point. */
function injection(value: string, previous: InjectionRates): InjectionRates {
  try {
    const [point, rate] = parseInjection(value);
    return { ...previous, [point]: rate };
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

const INJECT_HELP = `inject faults into the model, replayed from the seed (repeatable; ${INJECTION_POINTS.join(', ')}), e.g. fail_usercopy:0.01`;

function integer(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0)
    throw new InvalidArgumentError(`'${value}' is not a non-negative integer`);
  return parsed;
}

function positive(value: string): number {
  const parsed = integer(value);
  if (parsed === 0) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
  return parsed;
}

function benchSizeArgument(value: string): number {
  const bytes = sizeArgument(value);
  if (bytes % (2 * 1024 * 1024) !== 0) {
    throw new InvalidArgumentError(
      `'${value}' is not a multiple of 2M (the 2 MiB rows need whole huge pages)`,
    );
  }
  return bytes;
}

function benchRow(value: string, previous: string[]): string[] {
  if (findRow(value) === undefined) {
    throw new InvalidArgumentError(`no row '${value}' (rows: ${ROWS.map((row) => row.id).join(', ')})`);
  }
  return [...previous, value];
}

function backendOption(): Option {
  return new Option('--backend <name>', 'kernel to run on').choices(['model', 'host']).default('model');
}

/** The version in package.json (one directory up from src/ and from dist/). */
function packageVersion(): string {
  const json = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return String(json.version);
}

/** Under --json, errors are a JSON document on stdout instead of a line on stderr. */
const jsonOutput = process.argv.includes('--json');

const program = new Command()
  .name('faultline')
  .description('An executable model of Linux userfaultfd and the vm_uffd_ops memory-type API')
  .version(packageVersion())
  .showSuggestionAfterError(true)
  // Commander's own errors (unknown command or option, bad value) reach the handler at the end,
  // which prints them once, in the form --json asks for, and exits 2.
  .exitOverride()
  .configureOutput({ outputError: () => {} });

program
  .command('demo')
  .description('a handler resolving MISSING and MINOR faults on the model, narrated')
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .option('--pages <n>', 'pages per part', countArgument(1, MAX_DEMO_PAGES), 4096)
  .option('--vcpus <n>', 'faulting threads', countArgument(1, MAX_THREADS), 2)
  .action(async (options: { seed: number; pages: number; vcpus: number }) => {
    const { runDemo } = await import('./demo.ts');
    process.exitCode = await runDemo({ ...options, out: (line) => console.log(line) });
  });

program
  .command('run')
  .description('run scenario files and check their expectations')
  .argument('<paths...>', 'scenario files, directories of them, or globs')
  .addOption(backendOption())
  .option('--filter <pattern>', 'only scenarios whose name contains this (or matches this glob)')
  .option('--json', 'one JSON document instead of text', false)
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .option('--allow-skip', 'exit 0 even when every scenario was skipped', false)
  .option('--keep-going', 'run the remaining steps of a scenario after a failing one, showing each', false)
  .option('--inject <NAME:RATE>', INJECT_HELP, injection, {})
  .action(
    async (
      paths: string[],
      options: {
        backend: 'model' | 'host';
        filter?: string;
        json: boolean;
        seed: number;
        keepGoing: boolean;
        inject: InjectionRates;
      },
    ) => {
      if (options.backend === 'host' && Object.keys(options.inject).length > 0) {
        throw new UsageError('--inject: fault injection needs --backend model');
      }
      const { runCommand } = await import('./run.ts');
      process.exitCode = await runCommand(paths, { ...options, out: (line) => console.log(line) });
    },
  );

const workload = program
  .command('workload')
  .description('run a workload people run: a uffd handler and a guest');
workload
  .command('snapshot-restore')
  .description('Firecracker-style lazy snapshot restore')
  .addOption(backendOption())
  .option('--mode <mode>', 'anon, hugetlb, gmem-minor or gmem-missing', 'anon')
  .option('--size <bytes>', 'guest memory size (K, M, G)', '64M')
  .option('--vcpus <n>', 'vCPU threads', countArgument(1, MAX_THREADS), 2)
  .option('--pattern <name>', 'sequential, random or working-set', 'sequential')
  .option('--seed <n>', 'seed of the model and of the random pattern', integer, 1)
  .option(
    '--prefetch-window <pages>',
    'pages to copy after each faulting page',
    countArgument(0, MAX_COUNT),
    0,
  )
  .option(
    '--balloon <pages>',
    'pages a balloon discards while the guest runs (anon mode)',
    countArgument(0, MAX_COUNT),
    0,
  )
  .option(
    '--deflate <pages>',
    'of those, pages the balloon touches again after discarding them (default: all)',
    countArgument(0, MAX_COUNT),
  )
  .option(
    '--handler <file>',
    "serve faults with this handler: a module (.ts/.mts/.js/.mjs, default export serve(session)) or an executable speaking Firecracker's protocol (run as FILE SOCKET MEMORY_FILE [ARGS])",
  )
  .option(
    '--handler-timeout <ms>',
    'wall time a handler binary may stay silent while the guest waits',
    integer,
    10000,
  )
  .argument('[handler-args...]', "after --: arguments appended to a handler binary's command line")
  .option('--working-set <file>', 'prefetch this recorded working set before the guest runs')
  .option('--record-working-set <file>', 'record the first-touch order of faulted pages')
  .option(
    '--firecracker-socket <path>',
    'hand the regions and the uffd to the handler over this Unix socket, as Firecracker does (host backend; anon, hugetlb)',
  )
  .option('--trace <file>', 'write a Chrome trace (Perfetto) of the run')
  .option('--plot <file>', 'write a plot of the run (.svg or .png)')
  .option('--json', 'one JSON document instead of text', false)
  .option('--inject <NAME:RATE>', INJECT_HELP, injection, {})
  .action((handlerArgs: string[], options: SnapshotRestoreCommandOptions) =>
    workloadAction<SnapshotRestoreCommandOptions>(snapshotRestoreCommand)({ ...options, handlerArgs }),
  );

program
  .command('explore')
  .description(
    'find the races in your own uffd handler: many schedules of a guest and the handler on the model',
  )
  .argument('[workload]', 'the guest: snapshot-restore', 'snapshot-restore')
  .option(
    '--handler <file>',
    "the handler: a module (.ts/.mts/.js/.mjs, default export serve(session)) or an executable speaking Firecracker's protocol (run as FILE SOCKET MEMORY_FILE [ARGS])",
  )
  .option(
    '--handler-timeout <ms>',
    'wall time a handler binary may stay silent while the guest waits',
    integer,
    10000,
  )
  .argument('[handler-args...]', "after --: arguments appended to a handler binary's command line")
  .option('--replay <file>', 'rerun the schedule of a replay file written for a failure')
  .option('--schedules <n>', 'schedules to run (exhaustive: at most)', positive, 1000)
  .option(
    '--strategy <name>',
    'random (seeded walk), pct (probabilistic concurrency testing) or exhaustive',
    'random',
  )
  .option('--depth <d>', 'pct: the bug depth (priority change points + 1)', positive, 3)
  .option('--preemptions <n>', 'exhaustive: the preemption bound', integer, 2)
  .option('--seed <n>', 'seed of the campaign (and of the guest)', integer, 1)
  .option(
    '--workers <n>',
    'worker threads (default: every core the campaign is long enough to use: one per 2,500 schedules of a module, 150 of a binary)',
    positive,
  )
  .option('--shard <i/n>', 'run only schedules i, i+n, i+2n, … (split a campaign across machines)')
  .option('--out <dir>', 'where replay files are written', 'explore-out')
  .option('--keep-going', 'collect every failure instead of stopping at the first', false)
  .option('--mode <mode>', 'anon, hugetlb, gmem-minor or gmem-missing', 'anon')
  .option('--size <bytes>', 'guest memory size (K, M)', '256K')
  .option('--vcpus <n>', 'vCPU threads', integer, 2)
  .option('--pattern <name>', 'sequential or random', 'sequential')
  .option('--balloon <pages>', 'pages a balloon discards while the guest runs (anon mode)', integer, 0)
  .option('--deflate <pages>', 'of those, pages the balloon touches again afterwards (default: all)', integer)
  .option('--inject <NAME:RATE>', INJECT_HELP, injection, {})
  .option('--json', 'one JSON document instead of text', false)
  .action(async (workload: string, handlerArgs: string[], options: ExploreCommandOptions) => {
    const { exploreCommand } = await import('./explore.ts');
    await workloadAction<ExploreCommandOptions>((opts, out) => exploreCommand(workload, opts, out))({
      ...options,
      handlerArgs,
    });
  });

program
  .command('diff')
  .description('run scenarios on the model and on the host kernel and report every step where they differ')
  .argument('<paths...>', 'scenario files, directories of them, or globs')
  .option('--filter <pattern>', 'only scenarios whose name contains this (or matches this glob)')
  .option('--allow-skip', 'exit 0 even when every scenario was skipped', false)
  .option('--json', 'one JSON document instead of text', false)
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .action(
    async (
      paths: string[],
      options: { json: boolean; seed: number; filter?: string; allowSkip: boolean },
    ) => {
      const { diffCommand } = await import('./diff.ts');
      process.exitCode = await diffCommand(paths, { ...options, out: (line) => console.log(line) });
    },
  );

/**
 * Runs a workload command: its exit code becomes the process's (1 when a
 * check fails). A bad option value is a usage error (exit 2); a run that
 * fails prints one line and exits 1.
 */
function workloadAction<T>(run: (options: T, out: (line: string) => void) => Promise<number>) {
  return async (options: T) => {
    try {
      process.exitCode = await run(options, (line) => console.log(line));
    } catch (error) {
      if (error instanceof CommanderError || error instanceof UsageError) throw error;
      fail(`error: ${(error as Error).message}`, 1);
    }
  };
}

/** Prints one line (or the JSON error document under --json) and sets the exit code. */
function fail(message: string, exitCode: number): void {
  if (jsonOutput)
    console.log(JSON.stringify({ version: 1, error: { kind: 'run', message, exitCode } }, null, 2));
  else console.error(message);
  process.exitCode = exitCode;
}

/** The options every workload command shares. */
function withCommonOptions(command: Command): Command {
  return command
    .addOption(backendOption())
    .option('--seed <n>', 'seed of the model and of the workload', integer, 1)
    .option('--trace <file>', 'write a Chrome trace (Perfetto) of the run')
    .option('--plot <file>', 'write a plot of the run (.svg or .png)')
    .option('--json', 'one JSON document instead of text', false)
    .option('--inject <NAME:RATE>', INJECT_HELP, injection, {});
}

withCommonOptions(
  workload
    .command('postcopy')
    .description('QEMU-style postcopy live migration from a source process over TCP on 127.0.0.1')
    .addOption(new Option('--mode <mode>', 'guest RAM').choices(POSTCOPY_MODES).default('anon'))
    .option('--size <bytes>', 'guest memory size (K, M, G)', sizeArgument, 64 * 2 ** 20)
    .option('--vcpus <n>', 'vCPU threads', countArgument(1, MAX_THREADS), 2)
    .addOption(
      new Option('--pattern <name>', 'vCPU access order').choices(['sequential', 'random']).default('random'),
    )
    .option('--dirty <percent>', 'pages dirtied after precopy (100: pure postcopy)', percentArgument, 100)
    .option('--no-preempt', 'requested pages share the main connection with the stream')
    .option(
      '--bandwidth <bytes>',
      'background stream limit per second (K, M, G; 0: none)',
      (value: string) => (value === '0' ? 0 : sizeArgument(value)),
      0,
    )
    .option(
      '--timeout <seconds>',
      'fail (and kill the source) if the migration takes longer',
      countArgument(1, 86_400),
      120,
    ),
).action(workloadAction<PostcopyCommandOptions>(postcopyCommand));

withCommonOptions(
  workload
    .command('background-snapshot')
    .description('QEMU-style background snapshot: RAM saved under write protection while the guest writes')
    .addOption(
      new Option('--mode <mode>', 'how empty pages get protected')
        .choices(SNAPSHOT_MODES)
        .default('wp-unpopulated'),
    )
    .option('--size <bytes>', 'guest memory size (K, M, G)', sizeArgument, 64 * 2 ** 20)
    .option('--vcpus <n>', 'vCPU threads', countArgument(1, MAX_THREADS), 2)
    .option('--write-percent <percent>', 'pages each vCPU writes per round', percentArgument, 50)
    .option('--rounds <n>', 'rounds of guest writes while the snapshot runs', countArgument(0, 10_000), 2)
    .option(
      '--chunk <pages>',
      'pages the background saver saves and unprotects per step',
      countArgument(1, MAX_COUNT),
      64,
    ),
).action(workloadAction<BackgroundSnapshotCommandOptions>(backgroundSnapshotCommand));

withCommonOptions(
  workload
    .command('gc-compaction')
    .description('Android ART-style concurrent compaction: SIGBUS on unprocessed pages, UFFDIO_MOVE or COPY')
    .addOption(
      new Option('--mode <mode>', 'how compacted pages are installed')
        .choices(COMPACTION_MODES)
        .default('move'),
    )
    .option('--size <bytes>', 'from-space size (K, M, G)', sizeArgument, 64 * 2 ** 20)
    .option('--mutators <n>', 'mutator threads', countArgument(1, MAX_THREADS), 2)
    .option('--live <percent>', 'objects that survived marking', percentArgument, 50)
    .option('--reads <n>', 'object reads per mutator', countArgument(0, MAX_COUNT), 20_000)
    .option(
      '--chunk <pages>',
      'pages the compaction thread compacts between yields',
      countArgument(1, MAX_COUNT),
      16,
    ),
).action(workloadAction<GcCompactionCommandOptions>(gcCompactionCommand));

program
  .command('conformance')
  .description('run the memory-type conformance suite: every case against every memory type')
  .option('--memtype <name>', 'check only this memory type (repeatable)', collect, [])
  .option(
    '--module <path>',
    'also load a memory type module (default export or `memoryType`; repeatable)',
    collect,
    [],
  )
  .option('--case <name>', 'run only this case (repeatable)', collect, [])
  .option('--json', 'one JSON document instead of text', false)
  .addOption(
    new Option('--kernel-version <version>', 'the Linux the model emulates')
      .choices(['6.18', '7.1'])
      .default('7.1'),
  )
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .option('--timeout <ms>', 'milliseconds a case may take; a --module case is then killed', positive, 30_000)
  .action(
    async (options: {
      memtype: string[];
      module: string[];
      case: string[];
      json: boolean;
      kernelVersion: '6.18' | '7.1';
      seed: number;
      timeout: number;
    }) => {
      const { conformanceCommand } = await import('./conformance.ts');
      process.exitCode = await conformanceCommand({ ...options, out: (line) => console.log(line) });
    },
  );

program
  .command('fuzz')
  .description('differential fuzzing: random op sequences on the model and on the host kernel')
  .option('--runs <n>', 'sequences to run', countArgument(1, 1_000_000), 200)
  .option('--seed <n>', 'fast-check seed (printed; replays the run)', integer, 1)
  .option(
    '--memory <type>',
    'memory type (repeatable): anon, shmem, shmem-private, hugetlb, hugetlb-private',
    (value: string, previous: string[]) => [...previous, value],
    [] as string[],
  )
  .option('--out <dir>', 'where a shrunk divergent scenario is written', 'fuzz-out')
  .option('--allow-skip', 'exit 0 even when every sequence was skipped', false)
  .option('--json', 'one JSON document instead of text', false)
  .action(async (options: FuzzCommandOptions) => {
    // fast-check loads only here.
    const { fuzzCommand } = await import('./fuzz.ts');
    await workloadAction<FuzzCommandOptions>(fuzzCommand)(options);
  });

program
  .command('bench')
  .description(
    'userfaultfd round trips on the model, on the host with a TypeScript handler and with a C handler; scale rows; targets',
  )
  .option('--json', 'one JSON document (with a version field) instead of tables', false)
  .option('--quick', 'smaller regions (32 MiB) and 128 Ki populated pages instead of 1 Mi', false)
  .option(
    '--size <bytes>',
    'guest region per row, a multiple of 2M, e.g. 256M (default 256M, 32M with --quick)',
    benchSizeArgument,
  )
  .option('--runs <n>', 'measured runs per row and backend (the median is shown)', positive)
  .option('--rows <id>', `only this row (repeatable): ${ROWS.map((row) => row.id).join(', ')}`, benchRow, [])
  .option('--no-scale', 'skip the scale rows (sparse space, metadata, 2 vCPUs, parallel model)')
  .action(async (options: BenchCommandOptions) => {
    const { benchCommand } = await import('./bench.ts');
    process.exitCode = await benchCommand(options);
  });

program
  .command('doctor')
  .description('what the host backend can use on this machine, and the fix for each missing piece')
  .option('--json', 'one JSON document instead of text', false)
  .action(async (options: { json: boolean }) => {
    const { doctorCommand } = await import('./doctor.ts');
    process.exitCode = doctorCommand(options, (line) => console.log(line));
  });

program
  .command('schema')
  .description('print the JSON Schema of scenario files, for editors')
  .action(() => {
    console.log(JSON.stringify(scenarioJsonSchema(), null, 2));
  });

/** Commander's own exits: help and --version are successes, everything else is a usage error. */
function commanderExitCode(error: CommanderError): number {
  if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
  return EXIT_USAGE;
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError && commanderExitCode(error) === 0) {
    process.exitCode = 0;
  } else if (error instanceof CommanderError && error.code === 'commander.help') {
    // No command at all: the help went to stderr; say what to do.
    process.exitCode = EXIT_USAGE;
  } else {
    const report = reportError(error, jsonOutput);
    if (jsonOutput) console.log(report.text);
    else console.error(report.text);
    process.exitCode = report.exitCode;
  }
}
