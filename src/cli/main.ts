/** The faultline command line. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { findRow, ROWS } from '../bench/rows.ts';
import { scenarioJsonSchema } from '../scenario/schema.ts';
import { SNAPSHOT_MODES } from '../workloads/background-snapshot.ts';
import { COMPACTION_MODES } from '../workloads/gc-compaction.ts';
import { POSTCOPY_MODES } from '../workloads/postcopy.ts';
import { type BenchCommandOptions, benchCommand } from './bench.ts';
import { conformanceCommand } from './conformance.ts';
import { runDemo } from './demo.ts';
import { diffCommand } from './diff.ts';
import { type FuzzCommandOptions, fuzzCommand } from './fuzz.ts';
import { runCommand } from './run.ts';
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

const program = new Command()
  .name('faultline')
  .description('An executable model of Linux userfaultfd and the vm_uffd_ops memory-type API')
  .version('0.1.0');

program
  .command('demo', { isDefault: true })
  .description('a handler resolving MISSING and MINOR faults on the model, narrated')
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .option('--pages <n>', 'pages per part', integer, 4096)
  .option('--vcpus <n>', 'faulting threads', integer, 2)
  .action(async (options: { seed: number; pages: number; vcpus: number }) => {
    process.exitCode = await runDemo({ ...options, out: (line) => console.log(line) });
  });

program
  .command('run')
  .description('run scenario files (a file or a directory) and check their expectations')
  .argument('<path>', 'a scenario file or a directory of them')
  .option('--backend <name>', 'model or host', 'model')
  .option('--json', 'one JSON document instead of text', false)
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .option('--keep-going', 'run the remaining steps of a scenario after a failing one', false)
  .action(
    async (path: string, options: { backend: string; json: boolean; seed: number; keepGoing: boolean }) => {
      if (options.backend !== 'model' && options.backend !== 'host') {
        throw new InvalidArgumentError(`unknown backend '${options.backend}' (model or host)`);
      }
      process.exitCode = await runCommand(path, {
        backend: options.backend,
        json: options.json,
        seed: options.seed,
        keepGoing: options.keepGoing,
        out: (line) => console.log(line),
      });
    },
  );

const workload = program
  .command('workload')
  .description('run a workload people run: a uffd handler and a guest');
workload
  .command('snapshot-restore')
  .description('Firecracker-style lazy snapshot restore')
  .option('--backend <name>', 'model or host', 'model')
  .option('--mode <mode>', 'anon, hugetlb, gmem-minor or gmem-missing', 'anon')
  .option('--size <bytes>', 'guest memory size (K, M, G)', '64M')
  .option('--vcpus <n>', 'vCPU threads', integer, 2)
  .option('--pattern <name>', 'sequential, random or working-set', 'sequential')
  .option('--seed <n>', 'seed of the model and of the random pattern', integer, 1)
  .option('--prefetch-window <pages>', 'pages to copy after each faulting page', integer, 0)
  .option('--balloon <pages>', 'pages a balloon discards while the guest runs (anon mode)', integer, 0)
  .option('--working-set <file>', 'prefetch this recorded working set before the guest runs')
  .option('--record-working-set <file>', 'record the first-touch order of faulted pages')
  .option(
    '--firecracker-socket <path>',
    'hand the regions and the uffd to the handler over this Unix socket, as Firecracker does (host backend; anon, hugetlb)',
  )
  .option('--trace <file>', 'write a Chrome trace (Perfetto) of the run')
  .option('--plot <file>', 'write a plot of the run (.svg or .png)')
  .option('--json', 'one JSON document instead of text', false)
  .action((options: SnapshotRestoreCommandOptions, command: Command) =>
    workloadAction<SnapshotRestoreCommandOptions>(snapshotRestoreCommand)(options, command),
  );

program
  .command('diff')
  .description('run scenarios on the model and on the host kernel and report every step where they differ')
  .argument('<path>', 'a scenario file or a directory of them')
  .option('--json', 'one JSON document instead of text', false)
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .action(async (path: string, options: { json: boolean; seed: number }) => {
    process.exitCode = await diffCommand(path, { ...options, out: (line) => console.log(line) });
  });

/**
 * Runs a workload command: its exit code becomes the process's (1 when a
 * check fails); a bad option or a failed run prints one line and exits 1.
 */
function workloadAction<T>(run: (options: T, out: (line: string) => void) => Promise<number>) {
  return async (options: T, command: Command) => {
    try {
      process.exitCode = await run(options, (line) => console.log(line));
    } catch (error) {
      command.error(`error: ${(error as Error).message}`, { exitCode: 1 });
    }
  };
}

/** The options every workload command shares. */
function withCommonOptions(command: Command): Command {
  return command
    .addOption(new Option('--backend <name>', 'kernel to run on').choices(['model', 'host']).default('model'))
    .option('--seed <n>', 'seed of the model and of the workload', integer, 1)
    .option('--trace <file>', 'write a Chrome trace (Perfetto) of the run')
    .option('--plot <file>', 'write a plot of the run (.svg or .png)')
    .option('--json', 'one JSON document instead of text', false);
}

withCommonOptions(
  workload
    .command('postcopy')
    .description('QEMU-style postcopy live migration from a source process over TCP on 127.0.0.1')
    .addOption(new Option('--mode <mode>', 'guest RAM').choices(POSTCOPY_MODES).default('anon'))
    .option('--size <bytes>', 'guest memory size (K, M, G)', sizeArgument, 64 * 2 ** 20)
    .option('--vcpus <n>', 'vCPU threads', integer, 2)
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
    .option('--timeout <seconds>', 'fail (and kill the source) if the migration takes longer', integer, 120),
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
    .option('--vcpus <n>', 'vCPU threads', integer, 2)
    .option('--write-percent <percent>', 'pages each vCPU writes per round', percentArgument, 50)
    .option('--rounds <n>', 'rounds of guest writes while the snapshot runs', integer, 2)
    .option('--chunk <pages>', 'pages the background saver saves and unprotects per step', integer, 64),
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
    .option('--mutators <n>', 'mutator threads', integer, 2)
    .option('--live <percent>', 'objects that survived marking', percentArgument, 50)
    .option('--reads <n>', 'object reads per mutator', integer, 20_000)
    .option('--chunk <pages>', 'pages the compaction thread compacts between yields', integer, 16),
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
  .option('--json', 'one JSON document instead of text', false)
  .addOption(
    new Option('--kernel-version <version>', 'the Linux the model emulates')
      .choices(['6.18', '7.1'])
      .default('7.1'),
  )
  .option('--seed <n>', 'seed of the model scheduler', integer, 1)
  .action(
    async (options: {
      memtype: string[];
      module: string[];
      json: boolean;
      kernelVersion: '6.18' | '7.1';
      seed: number;
    }) => {
      process.exitCode = await conformanceCommand({ ...options, out: (line) => console.log(line) });
    },
  );

program
  .command('fuzz')
  .description('differential fuzzing: random op sequences on the model and on the host kernel')
  .option('--runs <n>', 'sequences to run', integer, 200)
  .option('--seed <n>', 'fast-check seed (printed; replays the run)', integer, 1)
  .option(
    '--memory <type>',
    'memory type (repeatable): anon, shmem, shmem-private, hugetlb, hugetlb-private',
    (value: string, previous: string[]) => [...previous, value],
    [] as string[],
  )
  .option('--out <dir>', 'where a shrunk divergent scenario is written', 'fuzz-out')
  .option('--json', 'one JSON document instead of text', false)
  .action((options: FuzzCommandOptions, command: Command) =>
    workloadAction<FuzzCommandOptions>(fuzzCommand)(options, command),
  );

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
    process.exitCode = await benchCommand(options);
  });

program
  .command('schema')
  .description('print the JSON Schema of scenario files, for editors')
  .action(() => {
    console.log(JSON.stringify(scenarioJsonSchema(), null, 2));
  });

await program.parseAsync(process.argv);
