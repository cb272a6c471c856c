/** The faultline command line. */
import { Command, InvalidArgumentError } from 'commander';
import { scenarioJsonSchema } from '../scenario/schema.ts';
import { runDemo } from './demo.ts';
import { runCommand } from './run.ts';
import { type SnapshotRestoreCommandOptions, snapshotRestoreCommand } from './workload.ts';

function integer(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0)
    throw new InvalidArgumentError(`'${value}' is not a non-negative integer`);
  return parsed;
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
  .option('--working-set <file>', 'prefetch this recorded working set before the guest runs')
  .option('--record-working-set <file>', 'record the first-touch order of faulted pages')
  .option('--trace <file>', 'write a Chrome trace (Perfetto) of the run')
  .option('--plot <file>', 'write a plot of the run (.svg or .png)')
  .option('--json', 'one JSON document instead of text', false)
  .action(async (options: SnapshotRestoreCommandOptions) => {
    process.exitCode = await snapshotRestoreCommand(options, (line) => console.log(line));
  });

program
  .command('schema')
  .description('print the JSON Schema of scenario files, for editors')
  .action(() => {
    console.log(JSON.stringify(scenarioJsonSchema(), null, 2));
  });

await program.parseAsync(process.argv);
