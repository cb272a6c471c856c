/**
 * Random scenarios for differential fuzzing: a memory type mapped twice
 * (shared and private views of one file, or two anonymous mappings), an
 * anonymous source and a spare range, two userfaultfds, and a sequence of
 * syscalls (fork, mremap, munmap, madvise, punch hole, mprotect), uffd
 * ioctls, faulting threads (user and kernel mode), signals and event reads
 * over them, with no expectations — `faultline diff` compares what the model
 * and the host observe. Generated with fast-check, so a divergent sequence
 * shrinks to a small one; every op is materialized from the state the ops
 * before it left (a shrunk sequence stays a valid scenario).
 */
import fc from 'fast-check';
import type { Scenario, Step } from '../scenario/parse.ts';
import type { OpName } from '../scenario/schema.ts';

export type FuzzMemory = 'anon' | 'shmem' | 'shmem-private' | 'hugetlb' | 'hugetlb-private' | 'guest_memfd';
export const FUZZ_MEMORY: readonly FuzzMemory[] = [
  'anon',
  'shmem',
  'shmem-private',
  'hugetlb',
  'hugetlb-private',
  'guest_memfd',
];

/** Which mapping an op acts on: the primary view `a`, the second view `b`. */
type MapIndex = 0 | 1;
/** Which userfaultfd: `u` or `v`. */
type UffdIndex = 0 | 1;

/** One fuzz op before materialization; page numbers are in the mapping's page size. */
export type FuzzOp =
  | { op: 'register'; map: MapIndex; uffd: UffdIndex; first: number; count: number; modes: Mode[] }
  | { op: 'unregister'; map: MapIndex; uffd: UffdIndex; first: number; count: number }
  | {
      op: 'copy' | 'zeropage' | 'continue' | 'poison' | 'wake';
      map: MapIndex;
      uffd: UffdIndex;
      first: number;
      count: number;
      fill: number;
      dontwake: boolean;
      /**
       * COPY's source: the runner's buffer, the anonymous map `s`, the other view, or the
       * destination map itself (its first pages: reading them may fault a page in at the destination).
       */
      from: 'data' | 'source' | 'other' | 'self';
    }
  | { op: 'writeprotect'; map: MapIndex; uffd: UffdIndex; first: number; count: number; protect: boolean }
  | { op: 'move'; src: number; dst: number; count: number; holes: boolean }
  | { op: 'madvise'; map: MapIndex; first: number; count: number; advice: Discard }
  | { op: 'punch'; first: number; count: number }
  | { op: 'mprotect'; map: MapIndex; first: number; count: number; prot: 'rw' | 'r' | 'none' }
  | { op: 'munmap'; map: MapIndex; first: number; count: number }
  | { op: 'mremap'; map: MapIndex; onto: boolean }
  | { op: 'pwrite'; first: number; fill: number }
  /** lseek SEEK_DATA / SEEK_HOLE on the file, at a page (`pages` is its end) or inside it. */
  | { op: 'seek'; page: number; inside: boolean; whence: 'data' | 'hole' }
  /**
   * A discarding madvise whose REMOVE event (if the range is registered for one) stays unread while
   * the range changes under it — part of it unmapped, split by mprotect, moved, or its file punched —
   * and then the events are read: the walk's re-lookup after userfaultfd_remove.
   */
  | {
      op: 'remove_race';
      map: MapIndex;
      first: number;
      count: number;
      advice: Discard;
      change: 'munmap' | 'mprotect' | 'mremap' | 'punch';
      at: number;
      /** Register the range with `u` (MISSING) first, so that a REMOVE event is raised when `u` asked for them. */
      register: boolean;
    }
  | { op: 'fault'; map: MapIndex; page: number; write: boolean; kernel: boolean }
  | { op: 'fork' }
  | { op: 'child_fault'; page: number; write: boolean }
  | { op: 'exit_child' }
  | { op: 'signal'; which: number }
  | { op: 'join'; which: number }
  | { op: 'read_event'; uffd: UffdIndex }
  | { op: 'pagemap'; map: MapIndex }
  | { op: 'vmas'; map: MapIndex };

type Mode = 'missing' | 'wp' | 'minor';
/** The discarding advices: each raises a REMOVE event; FREE is refused on all but anonymous memory. */
type Discard = 'dontneed' | 'free' | 'remove';
const discard = fc.constantFrom<Discard>('dontneed', 'free', 'remove');

export interface FuzzCase {
  readonly memory: FuzzMemory;
  readonly pages: number;
  /** Features of `u` and of `v`. */
  readonly features: readonly string[];
  readonly featuresV: readonly string[];
  readonly ops: readonly FuzzOp[];
}

/** Every op kind the generator draws (the generator's test checks each is generated). */
export const FUZZ_OP_KINDS = [
  'register',
  'unregister',
  'copy',
  'zeropage',
  'continue',
  'poison',
  'wake',
  'writeprotect',
  'move',
  'madvise',
  'punch',
  'mprotect',
  'munmap',
  'mremap',
  'pwrite',
  'seek',
  'remove_race',
  'fault',
  'fork',
  'child_fault',
  'exit_child',
  'signal',
  'join',
  'read_event',
  'pagemap',
  'vmas',
] as const satisfies readonly FuzzOp['op'][];

const modes = fc.subarray(['missing', 'wp', 'minor'] as const, { minLength: 1 });
const mapIndex = fc.constantFrom<MapIndex>(0, 1);
const uffdIndex = fc.constantFrom<UffdIndex>(0, 1);

/** Features a userfaultfd may ask for: events, WP variants, SIGBUS (each drawn or not). */
const FEATURES = [
  'wp_unpopulated',
  'event_remove',
  'event_unmap',
  'event_remap',
  'event_fork',
  'sigbus',
  'wp_async',
  'thread_id',
] as const;

function uffdOps(page: fc.Arbitrary<number>, count: fc.Arbitrary<number>): fc.Arbitrary<FuzzOp>[] {
  const target = { map: mapIndex, uffd: uffdIndex, first: page, count };
  return [
    fc.record({ op: fc.constant('register' as const), ...target, modes }),
    fc.record({ op: fc.constant('unregister' as const), ...target }),
    fc.record({
      op: fc.constantFrom('copy' as const, 'zeropage' as const, 'continue' as const, 'poison' as const),
      ...target,
      fill: fc.integer({ min: 1, max: 255 }),
      dontwake: fc.boolean(),
      from: fc.constantFrom('data' as const, 'source' as const, 'other' as const, 'self' as const),
    }),
    fc.record({
      op: fc.constant('wake' as const),
      ...target,
      fill: fc.constant(0),
      dontwake: fc.constant(false),
      from: fc.constant('data' as const),
    }),
    fc.record({ op: fc.constant('writeprotect' as const), ...target, protect: fc.boolean() }),
    fc.record({ op: fc.constant('move' as const), src: page, dst: page, count, holes: fc.boolean() }),
  ];
}

function mmOps(
  pages: number,
  page: fc.Arbitrary<number>,
  count: fc.Arbitrary<number>,
): fc.Arbitrary<FuzzOp>[] {
  return [
    // MADV_PAGEOUT is left out: whether the kernel reclaims a page depends on LRU batching and
    // timing, so the host's answer is not deterministic.
    fc.record({
      op: fc.constant('madvise' as const),
      map: mapIndex,
      first: page,
      count,
      advice: discard,
    }),
    fc.record({ op: fc.constant('punch' as const), first: page, count }),
    fc.record({
      op: fc.constant('mprotect' as const),
      map: mapIndex,
      first: page,
      count,
      prot: fc.constantFrom('rw' as const, 'r' as const, 'none' as const),
    }),
    fc.record({ op: fc.constant('munmap' as const), map: mapIndex, first: page, count }),
    fc.record({ op: fc.constant('mremap' as const), map: mapIndex, onto: fc.boolean() }),
    fc.record({ op: fc.constant('pwrite' as const), first: page, fill: fc.integer({ min: 1, max: 255 }) }),
    fc.record({
      op: fc.constant('seek' as const),
      page: fc.integer({ min: 0, max: pages }),
      inside: fc.boolean(),
      whence: fc.constantFrom('data' as const, 'hole' as const),
    }),
    fc.record({
      op: fc.constant('remove_race' as const),
      map: mapIndex,
      first: page,
      count,
      advice: discard,
      change: fc.constantFrom('munmap' as const, 'mprotect' as const, 'mremap' as const, 'punch' as const),
      at: page,
      register: fc.boolean(),
    }),
    fc.constant({ op: 'fork' as const }),
    fc.constant({ op: 'exit_child' as const }),
  ];
}

function opArbitrary(pages: number): fc.Arbitrary<FuzzOp> {
  const page = fc.integer({ min: 0, max: pages - 1 });
  const count = fc.integer({ min: 1, max: Math.min(3, pages) });
  return fc.oneof(
    ...uffdOps(page, count),
    ...mmOps(pages, page, count),
    fc.record({
      op: fc.constant('fault' as const),
      map: mapIndex,
      page,
      write: fc.boolean(),
      kernel: fc.boolean(),
    }),
    fc.record({ op: fc.constant('child_fault' as const), page, write: fc.boolean() }),
    fc.record({ op: fc.constant('signal' as const), which: fc.nat(7) }),
    fc.record({ op: fc.constant('join' as const), which: fc.nat(7) }),
    fc.record({ op: fc.constant('read_event' as const), uffd: uffdIndex }),
    fc.record({ op: fc.constant('pagemap' as const), map: mapIndex }),
    fc.record({ op: fc.constant('vmas' as const), map: mapIndex }),
  );
}

export function fuzzCaseArbitrary(memories: readonly FuzzMemory[] = FUZZ_MEMORY): fc.Arbitrary<FuzzCase> {
  return fc.constantFrom(...memories).chain((memory) => {
    const pages = memory.startsWith('hugetlb') ? 2 : 6;
    return fc.record({
      memory: fc.constant(memory),
      pages: fc.constant(pages),
      features: fc.subarray([...FEATURES], { minLength: 0 }),
      featuresV: fc.subarray([...FEATURES], { minLength: 0 }),
      ops: fc.array(opArbitrary(pages), { minLength: 1, maxLength: 20 }),
    });
  });
}

type StepSpec = { op: OpName; args: Record<string, unknown> };

/** What the ops so far left: map names (an mremap renames), children, threads. */
interface Materializer {
  readonly fuzz: FuzzCase;
  readonly pageSize: number;
  readonly fileBacked: boolean;
  readonly steps: StepSpec[];
  readonly maps: [string, string];
  readonly threads: string[];
  /** Live children, each with the names its maps had when it forked (a later mremap renames the parent's). */
  children: Array<{ name: string; maps: [string, string] }>;
  forks: number;
  renames: number;
}

/** The scenario a fuzz case stands for: setup, the ops, then a final look at the pages. */
export function materialize(fuzz: FuzzCase, name: string): Scenario {
  const huge = fuzz.memory.startsWith('hugetlb');
  const state: Materializer = {
    fuzz,
    pageSize: huge ? 2 * 1024 * 1024 : 4096,
    fileBacked: fuzz.memory !== 'anon',
    steps: [],
    maps: ['a', 'b'],
    threads: [],
    children: [],
    forks: 0,
    renames: 0,
  };
  setup(state);
  for (const op of fuzz.ops) materializeOp(state, op);
  for (const map of state.maps)
    state.steps.push({ op: 'pagemap', args: { map, offset: 0, length: mapLength(state) } });
  const requires = huge ? ['hugetlb'] : fuzz.memory === 'guest_memfd' ? ['guest_memfd'] : [];
  return {
    file: `${name}.yaml`,
    name,
    description: `fuzz case on ${fuzz.memory}`,
    kernel: '6.18',
    requires: [...requires, ...(usesForkEvents(fuzz) ? ['root'] : [])],
    divergence: undefined,
    // The generator writes each op's arguments by hand, as a scenario file would give them; the
    // fuzz tests load its YAML back through the schemas, which keeps the two in step.
    steps: state.steps.map(
      (step, index) => ({ index, op: step.op, args: step.args, expect: undefined, line: index + 4 }) as Step,
    ),
  };
}

function usesForkEvents(fuzz: FuzzCase): boolean {
  return fuzz.features.includes('event_fork') || fuzz.featuresV.includes('event_fork');
}

function mapLength(state: Materializer): number {
  return state.fuzz.pages * state.pageSize;
}

/**
 * The file (memfd, hugetlb memfd or guest_memfd), its two views — shared and
 * private for shmem and hugetlb (which one is `a` follows the memory type),
 * two shared views for guest_memfd (it refuses MAP_PRIVATE), two anonymous
 * maps for anon — an anonymous source `s`, a spare range `r` for `mremap
 * onto`, and the two userfaultfds.
 */
function setup(state: Materializer): void {
  const { fuzz, steps } = state;
  const length = mapLength(state);
  const huge = fuzz.memory.startsWith('hugetlb');
  if (fuzz.memory === 'guest_memfd') steps.push({ op: 'guest_memfd', args: { name: 'f', size: length } });
  else if (state.fileBacked)
    steps.push({ op: 'memfd', args: { name: 'f', size: length, ...(huge ? { hugetlb: true } : {}) } });
  const primaryShared = !fuzz.memory.endsWith('private');
  const view = (shared: boolean) => (state.fileBacked ? { file: 'f', shared } : {});
  const secondShared = fuzz.memory === 'guest_memfd' ? true : !primaryShared;
  // A page-sized hole after each map keeps the maps from merging with one another on the model, as
  // the host's maps never do (the host runner places each between guards).
  const maps: Array<[string, Record<string, unknown>]> = [
    ['a', view(primaryShared)],
    ['b', view(secondShared)],
    ['s', {}],
    ['r', {}],
  ];
  maps.forEach(([name, options], i) => {
    steps.push({ op: 'mmap', args: { name, length, ...options } });
    if (i < maps.length - 1) steps.push({ op: 'mmap', args: { name: `hole${i}`, length: 4096 } });
  });
  for (let i = 0; i < maps.length - 1; i++) steps.push({ op: 'munmap', args: { map: `hole${i}` } });
  steps.push({ op: 'write', args: { map: 's', offset: 0, data: { fill: 0x33, length: 64 } } });
  steps.push({ op: 'userfaultfd', args: { name: 'u' } });
  steps.push({ op: 'api', args: { uffd: 'u', features: [...fuzz.features] } });
  steps.push({ op: 'userfaultfd', args: { name: 'v' } });
  steps.push({ op: 'api', args: { uffd: 'v', features: [...fuzz.featuresV] } });
}

function materializeOp(state: Materializer, op: FuzzOp): void {
  switch (op.op) {
    case 'register':
    case 'unregister':
    case 'copy':
    case 'zeropage':
    case 'continue':
    case 'poison':
    case 'wake':
    case 'writeprotect':
      uffdStep(state, op);
      return;
    case 'move':
      moveStep(state, op);
      return;
    case 'madvise':
    case 'punch':
    case 'mprotect':
    case 'munmap':
    case 'mremap':
    case 'pwrite':
      mmStep(state, op);
      return;
    case 'seek':
      seekStep(state, op);
      return;
    case 'remove_race':
      removeRace(state, op);
      return;
    default:
      taskStep(state, op);
  }
}

function range(state: Materializer, first: number, count: number) {
  return {
    offset: first * state.pageSize,
    length: Math.min(count, state.fuzz.pages - first) * state.pageSize,
  };
}

const UFFD_NAMES = ['u', 'v'] as const;

function uffdStep(state: Materializer, op: FuzzOp & { map: MapIndex; uffd: UffdIndex }): void {
  const first = 'first' in op ? op.first : 0;
  const count = 'count' in op ? op.count : 1;
  const where = { uffd: UFFD_NAMES[op.uffd], map: state.maps[op.map], ...range(state, first, count) };
  switch (op.op) {
    case 'register':
      state.steps.push({ op: 'register', args: { ...where, modes: op.modes } });
      return;
    case 'unregister':
    case 'wake':
      state.steps.push({ op: op.op, args: where });
      return;
    case 'writeprotect':
      state.steps.push({ op: 'writeprotect', args: { ...where, ...(op.protect ? { mode: ['wp'] } : {}) } });
      return;
    case 'copy': {
      const sourceMap = { source: 's', other: state.maps[op.map === 0 ? 1 : 0], self: state.maps[op.map] };
      const source =
        op.from === 'data'
          ? { data: { fill: op.fill, length: state.pageSize } }
          : { src: { map: sourceMap[op.from], offset: 0 } };
      state.steps.push({
        op: 'copy',
        args: { ...where, ...source, ...(op.dontwake ? { mode: ['dontwake'] } : {}) },
      });
      return;
    }
    case 'zeropage':
    case 'continue':
    case 'poison':
      state.steps.push({ op: op.op, args: { ...where, ...(op.dontwake ? { mode: ['dontwake'] } : {}) } });
      return;
  }
}

/** MOVE from the anonymous source `s` into `a` (anonymous memory only; elsewhere it is EINVAL). */
function moveStep(state: Materializer, op: FuzzOp & { op: 'move' }): void {
  state.steps.push({
    op: 'move',
    args: {
      uffd: 'u',
      src: { map: 's', offset: op.src * state.pageSize },
      dst: { map: state.maps[0], offset: op.dst * state.pageSize },
      length: Math.min(op.count, state.fuzz.pages - Math.max(op.src, op.dst)) * state.pageSize,
      ...(op.holes ? { mode: ['allow_src_holes'] } : {}),
    },
  });
}

function mmStep(
  state: Materializer,
  op: FuzzOp & { op: 'madvise' | 'punch' | 'mprotect' | 'munmap' | 'mremap' | 'pwrite' },
): void {
  const { steps } = state;
  switch (op.op) {
    case 'madvise':
      steps.push({
        op: 'madvise',
        args: { map: state.maps[op.map], ...range(state, op.first, op.count), advice: op.advice },
      });
      return;
    case 'punch':
      if (!state.fileBacked) return;
      steps.push({
        op: 'fallocate',
        args: { file: 'f', ...range(state, op.first, op.count), punch_hole: true },
      });
      return;
    case 'mprotect':
      steps.push({
        op: 'mprotect',
        args: { map: state.maps[op.map], ...range(state, op.first, op.count), prot: op.prot },
      });
      return;
    case 'munmap':
      steps.push({ op: 'munmap', args: { map: state.maps[op.map], ...range(state, op.first, op.count) } });
      return;
    case 'mremap': {
      // The map moves under a new name, which later ops use; `onto` lands it on the spare range once.
      const to = `m${++state.renames}`;
      const onto = op.onto && state.renames === 1 ? { onto: 'r' } : {};
      steps.push({ op: 'mremap', args: { map: state.maps[op.map], to, ...onto } });
      state.maps[op.map] = to;
      return;
    }
    case 'pwrite':
      if (!state.fileBacked || state.pageSize !== 4096) return;
      steps.push({
        op: 'pwrite',
        args: { file: 'f', offset: op.first * state.pageSize, data: { fill: op.fill, length: 16 } },
      });
      return;
  }
}

/** SEEK_DATA or SEEK_HOLE on the file, at a page boundary (the end of the file too) or inside a page. */
function seekStep(state: Materializer, op: FuzzOp & { op: 'seek' }): void {
  if (!state.fileBacked) return;
  const offset = op.page * state.pageSize + (op.inside ? 100 : 0);
  state.steps.push({ op: 'lseek', args: { file: 'f', offset, whence: op.whence } });
}

/**
 * madvise, then a change to the range while its REMOVE event is unread (the
 * madvise sleeps in the background on both backends), then both uffds read.
 */
function removeRace(state: Materializer, op: FuzzOp & { op: 'remove_race' }): void {
  if (op.register) {
    const where = { map: op.map, uffd: 0 as const, first: op.first, count: op.count };
    uffdStep(state, { op: 'register', ...where, modes: ['missing'] });
  }
  mmStep(state, { op: 'madvise', map: op.map, first: op.first, count: op.count, advice: op.advice });
  if (op.change === 'mremap') mmStep(state, { op: 'mremap', map: op.map, onto: false });
  else if (op.change === 'mprotect')
    mmStep(state, { op: 'mprotect', map: op.map, first: op.at, count: 1, prot: 'r' });
  else if (op.change === 'punch') mmStep(state, { op: 'punch', first: op.at, count: 1 });
  else mmStep(state, { op: 'munmap', map: op.map, first: op.at, count: 1 });
  for (const uffd of UFFD_NAMES) state.steps.push({ op: 'read_event', args: { uffd } });
}

function taskStep(
  state: Materializer,
  op: FuzzOp & {
    op:
      | 'fault'
      | 'fork'
      | 'child_fault'
      | 'exit_child'
      | 'signal'
      | 'join'
      | 'read_event'
      | 'pagemap'
      | 'vmas';
  },
): void {
  const { steps, threads } = state;
  switch (op.op) {
    case 'fault':
      steps.push({
        op: 'thread',
        args: faultThread(state, state.maps[op.map], op.page, op.write, op.kernel),
      });
      return;
    case 'fork': {
      // A name is never reused: an exited child keeps its name.
      const child = { name: `c${++state.forks}`, maps: [state.maps[0], state.maps[1]] as [string, string] };
      state.children.push(child);
      steps.push({ op: 'fork', args: { name: child.name } });
      return;
    }
    case 'child_fault': {
      const child = state.children[state.children.length - 1];
      if (child === undefined) return;
      steps.push({
        op: 'thread',
        args: { ...faultThread(state, child.maps[0], op.page, op.write, false), process: child.name },
      });
      return;
    }
    case 'exit_child': {
      const child = state.children.pop();
      if (child !== undefined) steps.push({ op: 'exit', args: { process: child.name } });
      return;
    }
    case 'signal':
      if (threads.length > 0)
        steps.push({ op: 'signal', args: { thread: threads[op.which % threads.length], signal: 'SIGUSR1' } });
      return;
    case 'join':
      if (threads.length > 0)
        steps.push({ op: 'join', args: { thread: threads[op.which % threads.length] } });
      return;
    case 'read_event':
      steps.push({ op: 'read_event', args: { uffd: UFFD_NAMES[op.uffd] } });
      return;
    case 'pagemap':
      steps.push({ op: 'pagemap', args: { map: state.maps[op.map], offset: 0, length: mapLength(state) } });
      return;
    case 'vmas':
      steps.push({ op: 'vmas', args: { map: state.maps[op.map] } });
      return;
  }
}

/** A thread touching one page: a user read or write, or a kernel-mode write (read(2) into the page). */
function faultThread(
  state: Materializer,
  map: string,
  page: number,
  write: boolean,
  kernel: boolean,
): Record<string, unknown> {
  const name = `t${state.threads.length}`;
  state.threads.push(name);
  const offset = page * state.pageSize;
  if (kernel) return { name, access: 'syscall_read', map, offset, data: { fill: 0x6b, length: 8 } };
  return write
    ? { name, access: 'write', map, offset, data: { fill: 0x5a, length: 8 } }
    : { name, access: 'read', map, offset, length: 8 };
}

/** The scenario as a YAML file (so a divergence becomes a corpus entry); each step in flow style. */
export function scenarioYaml(scenario: Scenario): string {
  const lines = [
    `name: ${JSON.stringify(scenario.name)}`,
    `description: ${JSON.stringify(scenario.description)}`,
  ];
  if (scenario.requires.length > 0) lines.push(`requires: ${JSON.stringify(scenario.requires)}`);
  if (scenario.divergence !== undefined) lines.push(`divergence: ${JSON.stringify(scenario.divergence)}`);
  lines.push('steps:');
  for (const step of scenario.steps) lines.push(`  - ${step.op}: ${JSON.stringify(step.args)}`);
  return `${lines.join('\n')}\n`;
}
