/**
 * Concurrent heap compaction, Android ART style (the mark-compact
 * collector). After marking, the live objects of the from-space are slid
 * down into a to-space, references fixed up on the way. The to-space is
 * registered MISSING with a userfaultfd opened UFFD_USER_MODE_ONLY and with
 * UFFD_FEATURE_SIGBUS: a mutator touching a page not compacted yet gets
 * SIGBUS (no message, no sleep) and compacts that page itself in its signal
 * handler, then goes on. Meanwhile a compaction thread goes through the
 * to-space in order.
 *
 * Compacting a page builds it in a buffer page and installs it:
 * - move: the buffer is a from-space page whose objects have all been
 *   compacted already (recycled; a fresh scratch page while none is free),
 *   installed with UFFDIO_MOVE: no allocation and no copy in the kernel;
 * - copy: the buffer is one reused page, installed with UFFDIO_COPY, which
 *   allocates the to-space page and copies into it.
 *
 * The model runs a mutator as a thread that ends in state 'sigbus'; the
 * workload plays its signal handler (compact that page) and restarts it at
 * the access that faulted. At the end every to-space byte and every object a
 * mutator read is checked against an independent compaction of the heap.
 */
import type { KernelBackend, ThreadAccess, ThreadResult } from '../api/backend.ts';
import { Process, type Uffd } from '../api/process.ts';
import { Prng } from '../model/prng.ts';
import { percentiles, type Trace } from '../trace/trace.ts';
import { SIGBUS, UFFDIO_REGISTER_MODE_MISSING } from '../uapi/constants.ts';
import { EEXIST, KernelError } from '../uapi/errno.ts';
import { WorkloadStats } from './stats.ts';
import { equalBytes, matchingPages, VERIFY_SLICE_BYTES } from './verify.ts';

export type CompactionMode = 'move' | 'copy';
export const COMPACTION_MODES: readonly CompactionMode[] = ['move', 'copy'];

const PAGE_SIZE = 4096;
const OBJECT_BYTES = 32;
const SLOTS_PER_PAGE = PAGE_SIZE / OBJECT_BYTES;
const NULL_REFERENCE = 0xffffffff;
const OBJECT_MAGIC = 0x0b1ec700;
/** Dead slots hold this word throughout: garbage that must never reach the to-space. */
const DEAD_WORD = 0xdeaddead;
/** Trace thread id of the compaction thread. */
const COMPACTION_TID = 1_000_000;

export interface GcCompactionOptions {
  readonly backend: KernelBackend;
  readonly mode: CompactionMode;
  /** Size of the from-space. */
  readonly heapBytes: number;
  readonly mutators: number;
  readonly seed: number;
  /** Percentage of from-space objects that survived marking. */
  readonly livePercent: number;
  /** Object reads per mutator while the compaction runs. */
  readonly readsPerMutator: number;
  /** To-space pages the compaction thread compacts between yields to the mutators. */
  readonly chunkPages: number;
  readonly trace: Trace;
  /** Called with (to-space pages compacted, to-space pages) as the compaction goes. */
  readonly progress?: (done: number, total: number) => void;
}

export interface GcCompactionResult {
  /** Per mutator: SIGBUS samples (latency = compacting in the signal handler); blockedMs = time in handlers. */
  readonly stats: WorkloadStats;
  readonly fromPages: number;
  readonly toPages: number;
  readonly liveObjects: number;
  readonly compactedByMutators: number;
  readonly compactedByCompactor: number;
  /** SIGBUS signals the mutators took. */
  readonly sigbus: number;
  readonly sigbusPerMutator: readonly number[];
  /** Of those, how many found the page compacted already by the time the handler ran. */
  readonly sigbusAlreadyDone: number;
  /** Pages the kernel allocated to install the to-space (COPY), or fresh scratch pages MOVE used. */
  readonly pagesAllocated: number;
  /** From-space pages reused as buffers (MOVE only). */
  readonly pagesRecycled: number;
  /** Time the compaction thread spent compacting, in ms. */
  readonly compactorBusyMs: number;
  /** From the mutators' restart to the last to-space page installed, in ms. */
  readonly compactionMs: number;
  /** Per installed page: the MOVE or COPY ioctl, in µs. */
  readonly installUs: { p50: number; p90: number; p99: number; max: number };
  readonly verifiedPages: number;
  readonly verifiedReads: number;
  readonly reads: number;
  readonly threads: readonly ThreadResult[];
}

/**
 * The heap after marking: which from-space slots hold live objects, their
 * rank among live objects (the post-compact slot, the "forwarding address"),
 * and the reference each live object holds (a from-space offset of another
 * live object, or null).
 */
interface MarkedHeap {
  readonly fromPages: number;
  readonly toPages: number;
  /** Slot index of the k-th live object. */
  readonly liveSlots: Int32Array;
  /** Rank of each live slot; -1 for dead ones. */
  readonly forward: Int32Array;
  /** Per live slot: the slot it references, or -1. */
  readonly references: Int32Array;
}

function markHeap(fromPages: number, livePercent: number, seed: number): MarkedHeap {
  const prng = new Prng(seed);
  const slots = fromPages * SLOTS_PER_PAGE;
  const forward = new Int32Array(slots).fill(-1);
  const live: number[] = [];
  for (let slot = 0; slot < slots; slot++) {
    if (prng.nextInt(100) < livePercent) {
      forward[slot] = live.length;
      live.push(slot);
    }
  }
  const liveSlots = Int32Array.from(live);
  const references = new Int32Array(slots).fill(-1);
  for (const slot of liveSlots) {
    // Most objects point at another live object; some hold null.
    if (liveSlots.length > 0 && prng.nextInt(4) !== 0)
      references[slot] = liveSlots[prng.nextInt(liveSlots.length)]!;
  }
  return {
    fromPages,
    toPages: Math.ceil(liveSlots.length / SLOTS_PER_PAGE),
    liveSlots,
    forward,
    references,
  };
}

/** Writes the from-space object in `slot` (live or dead) at `offset` of `into`. */
function writeFromObject(heap: MarkedHeap, slot: number, seed: number, into: DataView, offset: number): void {
  if (heap.forward[slot] === -1) {
    for (let i = 0; i < OBJECT_BYTES; i += 4) into.setUint32(offset + i, DEAD_WORD, true);
    return;
  }
  const reference = heap.references[slot]!;
  into.setUint32(offset, OBJECT_MAGIC | (slot & 0xff), true);
  into.setUint32(offset + 4, slot, true);
  into.setUint32(offset + 8, reference < 0 ? NULL_REFERENCE : reference * OBJECT_BYTES, true);
  for (let i = 12; i < OBJECT_BYTES; i += 4)
    into.setUint32(offset + i, (slot * 2654435761 + i + seed) >>> 0, true);
}

/**
 * The reference compaction, computed from the heap description alone: to-space
 * page `page` as it must end up (live objects slid down in order, references
 * forwarded to their objects' new offsets, the tail of the last page zero).
 */
export function expectedToSpacePage(heap: MarkedHeap, page: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(PAGE_SIZE);
  writeToSpacePage(heap, page, seed, bytes, 0);
  return bytes;
}

/** Writes `expectedToSpacePage(heap, page, seed)` into `into` at byte `offset`. */
function writeToSpacePage(
  heap: MarkedHeap,
  page: number,
  seed: number,
  into: Uint8Array,
  offset: number,
): void {
  into.fill(0, offset, offset + PAGE_SIZE);
  const view = new DataView(into.buffer, into.byteOffset + offset, PAGE_SIZE);
  const first = page * SLOTS_PER_PAGE;
  const end = Math.min(heap.liveSlots.length, first + SLOTS_PER_PAGE);
  for (let rank = first; rank < end; rank++) {
    const slot = heap.liveSlots[rank]!;
    const at = (rank - first) * OBJECT_BYTES;
    writeFromObject(heap, slot, seed, view, at);
    const reference = heap.references[slot]!;
    if (reference >= 0) view.setUint32(at + 8, heap.forward[reference]! * OBJECT_BYTES, true);
  }
}

function* readObjects(toSpace: number, ranks: readonly number[]): Generator<ThreadAccess> {
  for (const rank of ranks)
    yield { kind: 'read', address: toSpace + rank * OBJECT_BYTES, length: OBJECT_BYTES };
}

export async function runGcCompaction(options: GcCompactionOptions): Promise<GcCompactionResult> {
  if (options.heapBytes % PAGE_SIZE !== 0)
    throw new Error(`--size: ${options.heapBytes} bytes is not a multiple of ${PAGE_SIZE}-byte pages`);
  const process = new Process(options.backend.self);
  // Every SIGBUS happens while the compaction runs: the rate is over that phase.
  const stats = new WorkloadStats(options.mutators, 'compaction');
  stats.beginPhase('setup');
  const heap = markHeap(options.heapBytes / PAGE_SIZE, options.livePercent, options.seed);
  const { fromPages, toPages, liveSlots } = heap;
  if (toPages === 0) throw new Error('--live: no object survived marking; nothing to compact');
  const fromSpace = writeFromSpace(process, heap, options.seed);

  // The to-space: empty, and trapped. Kernel accesses would get EFAULT (user-mode only); user
  // accesses get SIGBUS instead of sleeping.
  const toSpace = process.mmap({ length: toPages * PAGE_SIZE });
  const uffd = process.userfaultfd({ nonblock: true, cloexec: true, userModeOnly: true });
  uffd.api(['sigbus']);
  uffd.register({ start: toSpace, length: toPages * PAGE_SIZE }, UFFDIO_REGISTER_MODE_MISSING);
  const compactor = new Compactor(process, uffd, heap, options, { fromSpace, toSpace });
  // Each mutator reads objects all over the to-space, in its own seeded order.
  const prng = new Prng(options.seed ^ 0x6d757461);
  const plans = Array.from({ length: options.mutators }, () =>
    Array.from({ length: options.readsPerMutator }, () => prng.nextInt(liveSlots.length)),
  );

  stats.beginPhase('compaction');
  const collection = new Collection({ process, compactor, toSpace, toPages, stats, options });
  const startedMs = performance.now();
  const [mutators] = await Promise.all([
    Promise.all(plans.map((plan, v) => collection.runMutator(v, plan))),
    collection.compactionThread(),
  ]);
  const compactionMs = compactor.finishedMs - startedMs;
  stats.bytesMoved = toPages * PAGE_SIZE;
  uffd.unregister({ start: toSpace, length: toPages * PAGE_SIZE });
  uffd.close();

  stats.beginPhase('verify');
  const verified = verifyToSpace({ process, heap, toSpace, seed: options.seed, plans, mutators });
  stats.endPhase();
  const [p50, p90, p99, max] = percentiles(compactor.installUs, [50, 90, 99, 100]);
  return {
    stats,
    fromPages,
    toPages,
    liveObjects: liveSlots.length,
    compactedByMutators: compactor.byMutators,
    compactedByCompactor: compactor.byCompactor,
    sigbus: collection.sigbus,
    sigbusPerMutator: collection.sigbusPerMutator,
    sigbusAlreadyDone: collection.sigbusAlreadyDone,
    pagesAllocated: compactor.pagesAllocated,
    pagesRecycled: compactor.pagesRecycled,
    compactorBusyMs: compactor.busyMs,
    compactionMs,
    installUs: { p50: p50!, p90: p90!, p99: p99!, max: max! },
    ...verified,
    threads: mutators.map((mutator) => mutator.last),
  };
}

/** Pages of a slice the setup writes, or the verification reads, at once. */
const SLICE_PAGES = VERIFY_SLICE_BYTES / PAGE_SIZE;

/** The from-space as the mutators left it at the pause, written a slice at a time. */
function writeFromSpace(process: Process, heap: MarkedHeap, seed: number): number {
  const { fromPages } = heap;
  const fromSpace = process.mmap({ length: fromPages * PAGE_SIZE });
  const slice = new Uint8Array(Math.min(fromPages, SLICE_PAGES) * PAGE_SIZE);
  const view = new DataView(slice.buffer);
  for (let first = 0; first < fromPages; first += SLICE_PAGES) {
    const count = Math.min(SLICE_PAGES, fromPages - first);
    for (let i = 0; i < count * SLOTS_PER_PAGE; i++)
      writeFromObject(heap, first * SLOTS_PER_PAGE + i, seed, view, i * OBJECT_BYTES);
    process.write(fromSpace + first * PAGE_SIZE, slice.subarray(0, count * PAGE_SIZE));
  }
  return fromSpace;
}

interface CollectionContext {
  readonly process: Process;
  readonly compactor: Compactor;
  readonly toSpace: number;
  readonly toPages: number;
  readonly stats: WorkloadStats;
  readonly options: GcCompactionOptions;
}

/** The concurrent phase: mutators that take SIGBUS and compact in their handlers, and the compaction thread. */
class Collection {
  sigbus = 0;
  readonly sigbusPerMutator: number[];
  sigbusAlreadyDone = 0;

  constructor(private readonly context: CollectionContext) {
    this.sigbusPerMutator = new Array<number>(context.options.mutators).fill(0);
    context.options.trace.nameThread(COMPACTION_TID, 'compaction thread');
  }

  /** Runs mutator `v` through its reads, playing its SIGBUS handler and restarting it after each. */
  async runMutator(v: number, plan: readonly number[]): Promise<{ reads: Uint8Array[]; last: ThreadResult }> {
    const { process, toSpace, toPages, options } = this.context;
    const reads: Uint8Array[] = [];
    let next = 0;
    // Every restart follows a SIGBUS on a page that is compacted before the restart: bounded.
    for (let restarts = 0; restarts <= toPages; restarts++) {
      const thread = process.thread(readObjects(toSpace, plan.slice(next)), `mutator${v}`);
      options.trace.nameThread(thread.tid, `mutator${v}`);
      const result = await thread.join();
      reads.push(...result.reads);
      next += result.reads.length;
      if (result.state === 'done') return { reads, last: result };
      const signal = result.signal;
      if (result.state !== 'sigbus' || signal === undefined || signal.signal !== SIGBUS)
        throw new Error(`gc-compaction: mutator${v} ended in state ${result.state}`);
      const page = Math.floor((signal.address - toSpace) / PAGE_SIZE);
      if (page < 0 || page >= toPages)
        throw new Error(`gc-compaction: SIGBUS at 0x${signal.address.toString(16)}, outside the to-space`);
      this.signalHandler(v, page, thread.tid);
      // The compaction thread runs in parallel on a real device: give it its turn before going on.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    throw new Error(`gc-compaction: mutator${v} restarted more than ${toPages} times`);
  }

  /** The SIGBUS handler: compact the page unless the compaction thread got there first. */
  private signalHandler(v: number, page: number, tid: number): void {
    const { compactor, stats, options } = this.context;
    this.sigbus++;
    this.sigbusPerMutator[v]!++;
    const startMs = performance.now();
    const compacted = compactor.compact(page, 'mutator');
    if (!compacted) this.sigbusAlreadyDone++;
    const endMs = performance.now();
    const name = compacted ? 'SIGBUS: compact page' : 'SIGBUS: page done already';
    options.trace.span({ name, cat: 'mutator', tid, startMs, endMs, args: { page } });
    const kind = compacted ? 'sigbus' : 'sigbus (compacted already)';
    stats.record({ atMs: startMs, page, kind, latencyUs: (endMs - startMs) * 1000 }, v);
    stats.blockedMs[v] = (stats.blockedMs[v] ?? 0) + (endMs - startMs);
  }

  /** The compaction thread: the to-space in order, a chunk at a time. */
  async compactionThread(): Promise<void> {
    const { compactor, toPages, options } = this.context;
    for (let first = 0; first < toPages; first += options.chunkPages) {
      const end = Math.min(toPages, first + options.chunkPages);
      const startMs = performance.now();
      for (let page = first; page < end; page++) compactor.compact(page, 'compactor');
      const endMs = performance.now();
      compactor.busyMs += endMs - startMs;
      options.trace.span({
        name: 'compact chunk',
        cat: 'compactor',
        tid: COMPACTION_TID,
        startMs,
        endMs,
        args: { first, end },
      });
      // Let the mutators run between chunks.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}

/**
 * Checks the to-space and every object a mutator saw against the reference
 * compaction, a slice at a time: the slice's expected pages built into one
 * buffer, the to-space read with one call and compared with one memcmp.
 */
function verifyToSpace(run: {
  process: Process;
  heap: MarkedHeap;
  toSpace: number;
  seed: number;
  plans: readonly (readonly number[])[];
  mutators: readonly { reads: readonly Uint8Array[] }[];
}): { verifiedPages: number; verifiedReads: number; reads: number } {
  const { process, heap, toSpace, seed } = run;
  const { toPages } = heap;
  const slices = Math.ceil(toPages / SLICE_PAGES);
  // The reads of each slice: the object's rank and the bytes the mutator saw.
  const bySlice: { rank: number; bytes: Uint8Array }[][] = Array.from({ length: slices }, () => []);
  let reads = 0;
  run.mutators.forEach(({ reads: seen }, v) => {
    seen.forEach((bytes, k) => {
      const rank = run.plans[v]![k]!;
      bySlice[Math.floor(rank / SLOTS_PER_PAGE / SLICE_PAGES)]!.push({ rank, bytes });
      reads++;
    });
  });
  const buffer = new Uint8Array(Math.min(toPages, SLICE_PAGES) * PAGE_SIZE);
  let verifiedPages = 0;
  let verifiedReads = 0;
  for (let slice = 0; slice < slices; slice++) {
    const first = slice * SLICE_PAGES;
    const count = Math.min(SLICE_PAGES, toPages - first);
    const expected = buffer.subarray(0, count * PAGE_SIZE);
    for (let i = 0; i < count; i++) writeToSpacePage(heap, first + i, seed, expected, i * PAGE_SIZE);
    const actual = process.read(toSpace + first * PAGE_SIZE, count * PAGE_SIZE);
    verifiedPages += matchingPages(actual, expected, PAGE_SIZE);
    for (const { rank, bytes } of bySlice[slice]!) {
      const offset = rank * OBJECT_BYTES - first * PAGE_SIZE;
      if (equalBytes(bytes, expected.subarray(offset, offset + OBJECT_BYTES))) verifiedReads++;
    }
  }
  return { verifiedPages, verifiedReads, reads };
}

/** Compacts to-space pages, from whichever thread asks first. */
class Compactor {
  readonly compacted: Uint8Array;
  /** Per from-space page: to-space pages still to compact that take objects from it. */
  private readonly pendingUsers: Int32Array;
  /** From-space pages all of whose live objects are compacted: free to reuse as buffers (MOVE). */
  private readonly free: number[] = [];
  /** Fresh pages for MOVE buffers while no from-space page is free yet. */
  private readonly scratch: number;
  private scratchUsed = 0;
  /** The one reused buffer page of COPY mode. */
  private readonly copyBuffer: number;
  /** Where the from-space and the to-space are mapped. */
  private readonly fromSpace: number;
  private readonly toSpace: number;
  private readonly page = new Uint8Array(PAGE_SIZE);
  private readonly view = new DataView(this.page.buffer);
  private done = 0;
  byMutators = 0;
  byCompactor = 0;
  pagesAllocated = 0;
  pagesRecycled = 0;
  busyMs = 0;
  /** When the last page was installed (performance.now()). */
  finishedMs = 0;
  readonly installUs: number[] = [];

  constructor(
    private readonly process: Process,
    private readonly uffd: Uffd,
    private readonly heap: MarkedHeap,
    private readonly options: GcCompactionOptions,
    spaces: { readonly fromSpace: number; readonly toSpace: number },
  ) {
    this.fromSpace = spaces.fromSpace;
    this.toSpace = spaces.toSpace;
    this.compacted = new Uint8Array(heap.toPages);
    this.pendingUsers = new Int32Array(heap.fromPages);
    for (let page = 0; page < heap.toPages; page++) {
      const [low, high] = this.sources(page);
      for (let from = low; from <= high; from++) this.pendingUsers[from]!++;
    }
    for (let from = 0; from < heap.fromPages; from++) if (this.pendingUsers[from] === 0) this.free.push(from);
    this.scratch = process.mmap({ length: heap.toPages * PAGE_SIZE });
    this.copyBuffer = process.mmapIsolated(PAGE_SIZE);
  }

  /** The from-space pages to-space page `page` takes its objects from. */
  private sources(page: number): [number, number] {
    const { liveSlots } = this.heap;
    const first = page * SLOTS_PER_PAGE;
    const last = Math.min(liveSlots.length, first + SLOTS_PER_PAGE) - 1;
    return [Math.floor(liveSlots[first]! / SLOTS_PER_PAGE), Math.floor(liveSlots[last]! / SLOTS_PER_PAGE)];
  }

  /** Compacts to-space page `page` unless done already; returns whether this call did it. */
  compact(page: number, by: 'mutator' | 'compactor'): boolean {
    if (this.compacted[page] === 1) return false;
    const { heap } = this;
    const [low, high] = this.sources(page);
    // Read the from-space pages the objects come from, as the collector reads its from-space.
    const from = this.process.read(this.fromSpace + low * PAGE_SIZE, (high - low + 1) * PAGE_SIZE);
    this.page.fill(0);
    const first = page * SLOTS_PER_PAGE;
    const end = Math.min(heap.liveSlots.length, first + SLOTS_PER_PAGE);
    for (let rank = first; rank < end; rank++) {
      const slot = heap.liveSlots[rank]!;
      const source = (slot - low * SLOTS_PER_PAGE) * OBJECT_BYTES;
      const offset = (rank - first) * OBJECT_BYTES;
      this.page.set(from.subarray(source, source + OBJECT_BYTES), offset);
      // Forward the reference the object holds to its target's new offset.
      const reference = this.view.getUint32(offset + 8, true);
      if (reference !== NULL_REFERENCE) {
        const target = heap.forward[reference / OBJECT_BYTES]!;
        this.view.setUint32(offset + 8, target * OBJECT_BYTES, true);
      }
    }
    const dst = this.toSpace + page * PAGE_SIZE;
    let buffer: number;
    if (this.options.mode === 'move') {
      const recycled = this.free.pop();
      if (recycled === undefined) {
        buffer = this.scratch + this.scratchUsed++ * PAGE_SIZE;
        this.pagesAllocated++;
      } else {
        buffer = this.fromSpace + recycled * PAGE_SIZE;
        this.pagesRecycled++;
      }
    } else {
      buffer = this.copyBuffer;
      this.pagesAllocated++;
    }
    this.process.write(buffer, this.page);
    const startMs = performance.now();
    try {
      if (this.options.mode === 'move') this.uffd.move({ dst, src: buffer, length: PAGE_SIZE });
      else this.uffd.copy({ dst, src: buffer, length: PAGE_SIZE });
    } catch (error) {
      // Another thread installed the page first (only possible with real threads on the host).
      if (!(error instanceof KernelError && error.errno === EEXIST)) throw error;
    }
    this.installUs.push((performance.now() - startMs) * 1000);
    this.compacted[page] = 1;
    this.done++;
    if (this.done === heap.toPages) this.finishedMs = performance.now();
    if (by === 'mutator') this.byMutators++;
    else this.byCompactor++;
    for (let source = low; source <= high; source++) {
      if (--this.pendingUsers[source]! === 0) this.free.push(source);
    }
    this.options.progress?.(this.done, heap.toPages);
    return true;
  }
}
