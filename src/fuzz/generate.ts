/**
 * Random scenarios for differential fuzzing: a memory type, one mapping, a
 * userfaultfd, and a sequence of syscalls, uffd ioctls and faulting
 * threads over it, with no expectations — `faultline diff` compares what
 * the model and the host observe. Generated with fast-check, so a divergent
 * sequence shrinks to a small one.
 */
import fc from 'fast-check';
import type { Scenario, Step } from '../scenario/parse.ts';
import type { OpName } from '../scenario/schema.ts';

export type FuzzMemory = 'anon' | 'shmem' | 'shmem-private' | 'hugetlb' | 'hugetlb-private';
export const FUZZ_MEMORY: readonly FuzzMemory[] = [
  'anon',
  'shmem',
  'shmem-private',
  'hugetlb',
  'hugetlb-private',
];

/** One fuzz op before materialization; page numbers are in the mapping's page size. */
export type FuzzOp =
  | { op: 'register'; first: number; count: number; modes: ('missing' | 'wp' | 'minor')[] }
  | { op: 'unregister'; first: number; count: number }
  | {
      op: 'copy' | 'zeropage' | 'continue' | 'poison' | 'wake';
      first: number;
      count: number;
      fill: number;
      dontwake: boolean;
    }
  | { op: 'writeprotect'; first: number; count: number; protect: boolean }
  | { op: 'move'; src: number; dst: number; count: number; holes: boolean }
  | { op: 'madvise'; first: number; count: number; advice: 'dontneed' | 'pageout' }
  | { op: 'pwrite'; first: number; fill: number }
  | { op: 'fault'; page: number; write: boolean }
  | { op: 'join'; which: number }
  | { op: 'read_event' }
  | { op: 'pagemap' }
  | { op: 'vmas' };

export interface FuzzCase {
  readonly memory: FuzzMemory;
  readonly pages: number;
  readonly features: readonly string[];
  readonly ops: readonly FuzzOp[];
}

const modes = fc.subarray(['missing', 'wp', 'minor'] as const, { minLength: 1 });

function opArbitrary(pages: number): fc.Arbitrary<FuzzOp> {
  const page = fc.integer({ min: 0, max: pages - 1 });
  const count = fc.integer({ min: 1, max: Math.min(3, pages) });
  return fc.oneof(
    fc.record({ op: fc.constant('register' as const), first: page, count, modes }),
    fc.record({ op: fc.constant('unregister' as const), first: page, count }),
    fc.record({
      op: fc.constantFrom(
        'copy' as const,
        'zeropage' as const,
        'continue' as const,
        'poison' as const,
        'wake' as const,
      ),
      first: page,
      count,
      fill: fc.integer({ min: 1, max: 255 }),
      dontwake: fc.boolean(),
    }),
    fc.record({ op: fc.constant('writeprotect' as const), first: page, count, protect: fc.boolean() }),
    fc.record({ op: fc.constant('move' as const), src: page, dst: page, count, holes: fc.boolean() }),
    // MADV_PAGEOUT is left out: whether the kernel reclaims a page depends on LRU batching and
    // timing, so the host's answer is not deterministic.
    fc.record({
      op: fc.constant('madvise' as const),
      first: page,
      count,
      advice: fc.constant('dontneed' as const),
    }),
    fc.record({ op: fc.constant('pwrite' as const), first: page, fill: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ op: fc.constant('fault' as const), page, write: fc.boolean() }),
    fc.record({ op: fc.constant('join' as const), which: fc.nat(7) }),
    fc.constant({ op: 'read_event' as const }),
    fc.constant({ op: 'pagemap' as const }),
    fc.constant({ op: 'vmas' as const }),
  );
}

export function fuzzCaseArbitrary(memories: readonly FuzzMemory[] = FUZZ_MEMORY): fc.Arbitrary<FuzzCase> {
  return fc.constantFrom(...memories).chain((memory) => {
    const pages = memory.startsWith('hugetlb') ? 2 : 6;
    return fc.record({
      memory: fc.constant(memory),
      pages: fc.constant(pages),
      features: fc.subarray(['wp_unpopulated', 'event_remove'], { minLength: 0 }),
      ops: fc.array(opArbitrary(pages), { minLength: 1, maxLength: 16 }),
    });
  });
}

/** The scenario a fuzz case stands for: setup, the ops, then a final look at the pages. */
export function materialize(fuzz: FuzzCase, name: string): Scenario {
  const huge = fuzz.memory.startsWith('hugetlb');
  const pageSize = huge ? 2 * 1024 * 1024 : 4096;
  const length = fuzz.pages * pageSize;
  const steps: Array<{ op: OpName; args: Record<string, unknown> }> = [];
  const fileBacked = fuzz.memory !== 'anon';
  if (fileBacked)
    steps.push({ op: 'memfd', args: { name: 'f', size: length, ...(huge ? { hugetlb: true } : {}) } });
  steps.push({
    op: 'mmap',
    args: {
      name: 'a',
      length,
      ...(fileBacked ? { file: 'f', shared: !fuzz.memory.endsWith('private') } : {}),
    },
  });
  // A source for MOVE lives beside the destination on anonymous memory only.
  if (fuzz.memory === 'anon') steps.push({ op: 'mmap', args: { name: 's', length } });
  steps.push({ op: 'userfaultfd', args: { name: 'u' } });
  steps.push({ op: 'api', args: { uffd: 'u', features: [...fuzz.features] } });
  const threads: string[] = [];
  const range = (first: number, count: number) => ({
    offset: first * pageSize,
    length: Math.min(count, fuzz.pages - first) * pageSize,
  });
  for (const op of fuzz.ops) {
    switch (op.op) {
      case 'register':
        steps.push({
          op: 'register',
          args: { uffd: 'u', map: 'a', ...range(op.first, op.count), modes: op.modes },
        });
        break;
      case 'unregister':
        steps.push({ op: 'unregister', args: { uffd: 'u', map: 'a', ...range(op.first, op.count) } });
        break;
      case 'copy':
        steps.push({
          op: 'copy',
          args: {
            uffd: 'u',
            map: 'a',
            ...range(op.first, op.count),
            data: { fill: op.fill, length: pageSize },
            ...(op.dontwake ? { mode: ['dontwake'] } : {}),
          },
        });
        break;
      case 'zeropage':
      case 'continue':
      case 'poison':
        steps.push({
          op: op.op,
          args: {
            uffd: 'u',
            map: 'a',
            ...range(op.first, op.count),
            ...(op.dontwake ? { mode: ['dontwake'] } : {}),
          },
        });
        break;
      case 'wake':
        steps.push({ op: 'wake', args: { uffd: 'u', map: 'a', ...range(op.first, op.count) } });
        break;
      case 'writeprotect':
        steps.push({
          op: 'writeprotect',
          args: {
            uffd: 'u',
            map: 'a',
            ...range(op.first, op.count),
            ...(op.protect ? { mode: ['wp'] } : {}),
          },
        });
        break;
      case 'move':
        if (fuzz.memory !== 'anon') break;
        steps.push({
          op: 'move',
          args: {
            uffd: 'u',
            src: { map: 's', offset: op.src * pageSize },
            dst: { map: 'a', offset: op.dst * pageSize },
            length: Math.min(op.count, fuzz.pages - Math.max(op.src, op.dst)) * pageSize,
            ...(op.holes ? { mode: ['allow_src_holes'] } : {}),
          },
        });
        break;
      case 'madvise':
        steps.push({ op: 'madvise', args: { map: 'a', ...range(op.first, op.count), advice: op.advice } });
        break;
      case 'pwrite':
        if (!fileBacked || huge) break;
        steps.push({
          op: 'pwrite',
          args: { file: 'f', offset: op.first * pageSize, data: { fill: op.fill, length: 16 } },
        });
        break;
      case 'fault': {
        const name = `t${threads.length}`;
        threads.push(name);
        steps.push({
          op: 'thread',
          args: op.write
            ? { name, access: 'write', map: 'a', offset: op.page * pageSize, data: { fill: 0x5a, length: 8 } }
            : { name, access: 'read', map: 'a', offset: op.page * pageSize, length: 8 },
        });
        break;
      }
      case 'join':
        if (threads.length === 0) break;
        steps.push({ op: 'join', args: { thread: threads[op.which % threads.length] } });
        break;
      case 'read_event':
        steps.push({ op: 'read_event', args: { uffd: 'u' } });
        break;
      case 'pagemap':
        steps.push({ op: 'pagemap', args: { map: 'a', offset: 0, length } });
        break;
      case 'vmas':
        steps.push({ op: 'vmas', args: { map: 'a' } });
        break;
    }
  }
  steps.push({ op: 'pagemap', args: { map: 'a', offset: 0, length } });
  return {
    file: `${name}.yaml`,
    name,
    description: `fuzz case on ${fuzz.memory}`,
    kernel: '6.18',
    requires: huge ? ['hugetlb'] : [],
    divergence: undefined,
    steps: steps.map(
      (step, index): Step => ({ index, op: step.op, args: step.args, expect: undefined, line: index + 4 }),
    ),
  };
}

/** The scenario as a YAML file (so a divergence becomes a corpus entry); each step in flow style. */
export function scenarioYaml(scenario: Scenario): string {
  const lines = [
    `name: ${JSON.stringify(scenario.name)}`,
    `description: ${JSON.stringify(scenario.description)}`,
  ];
  if (scenario.requires.length > 0) lines.push(`requires: ${JSON.stringify(scenario.requires)}`);
  lines.push('steps:');
  for (const step of scenario.steps) lines.push(`  - ${step.op}: ${JSON.stringify(step.args)}`);
  return `${lines.join('\n')}\n`;
}
