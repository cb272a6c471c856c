/** The faultline command line. */
import { Command, InvalidArgumentError } from 'commander';
import { runDemo } from './demo.ts';

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

await program.parseAsync(process.argv);
