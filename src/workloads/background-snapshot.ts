/**
 * Background snapshot, QEMU style: the VM is stopped, all guest RAM is
 * write-protected with userfaultfd, and the VM runs again while its RAM is
 * saved. A vCPU write to a page not yet saved raises a WP fault; the
 * handler copies the page out first and only then unprotects it (which
 * wakes the vCPU). A background loop saves the remaining pages in chunks,
 * unprotecting each chunk after it. The saved image must equal guest memory
 * at the snapshot instant, byte for byte, however the guest wrote meanwhile.
 *
 * Modes: anon with WP_UNPOPULATED (empty pages get WP markers), anon
 * pre-faulted by reading every page first (empty pages get the zero page,
 * which can be protected), shmem (markers on empty pages always), and
 * no-prefault, the known mistake: WP silently skips empty anon pages, so a
 * guest write there is never trapped and the saved image is wrong.
 */
import type { KernelBackend, ThreadAccess, ThreadResult } from '../api/backend.ts';
import { Process, type Uffd } from '../api/process.ts';
import { Prng } from '../model/prng.ts';
import type { Trace } from '../trace/trace.ts';
import { UFFDIO_REGISTER_MODE_WP, UFFDIO_WRITEPROTECT_MODE_WP } from '../uapi/constants.ts';
import { type FaultSample, WorkloadStats } from './stats.ts';
import { differingPages, matchingPages, VERIFY_SLICE_BYTES } from './verify.ts';

export type SnapshotMode = 'wp-unpopulated' | 'prefault' | 'shmem' | 'no-prefault';
export const SNAPSHOT_MODES: readonly SnapshotMode[] = ['wp-unpopulated', 'prefault', 'shmem', 'no-prefault'];

const PAGE_SIZE = 4096;
/** Each guest write covers this many bytes at a chunk-aligned offset in its page. */
const WRITE_BYTES = 256;

export interface BackgroundSnapshotOptions {
  readonly backend: KernelBackend;
  readonly mode: SnapshotMode;
  readonly guestBytes: number;
  readonly vcpus: number;
  readonly seed: number;
  /** Percentage of pages each write round touches. */
  readonly writePercent: number;
  /** How many times the guest goes over its pages while the snapshot runs. */
  readonly rounds: number;
  /** Pages the background loop saves (and unprotects in one ioctl) per step. */
  readonly chunkPages: number;
  readonly trace: Trace;
  /** Called with (pages saved, pages total) as the snapshot goes. */
  readonly progress?: (done: number, total: number) => void;
}

export interface BackgroundSnapshotResult {
  readonly stats: WorkloadStats;
  readonly pages: number;
  readonly pageSize: number;
  /** Pages of the saved image equal to guest memory at the snapshot instant. */
  readonly imageVerifiedPages: number;
  /** The first pages (up to 16) where the image differs. */
  readonly imageDifferingPages: readonly number[];
  /** Pages of guest memory equal to the snapshot plus every guest write, after the run. */
  readonly memoryVerifiedPages: number;
  readonly savedByFault: number;
  readonly savedByBackground: number;
  readonly guestWrites: number;
  readonly threads: readonly ThreadResult[];
}

/** Guest memory at the snapshot instant: every fourth page was never touched (zero, unpopulated). */
export function snapshotInstantPage(index: number, seed: number): Uint8Array | null {
  if (!populatedAtSnapshot(index)) return null;
  const page = new Uint8Array(PAGE_SIZE);
  writeSnapshotInstantPage(index, seed, page, 0);
  return page;
}

function populatedAtSnapshot(index: number): boolean {
  return index % 4 !== 3;
}

/** Writes page `index` at the snapshot instant into `into` at `offset` (zeroes for an untouched page). */
function writeSnapshotInstantPage(index: number, seed: number, into: Uint8Array, offset: number): void {
  if (!populatedAtSnapshot(index)) {
    into.fill(0, offset, offset + PAGE_SIZE);
    return;
  }
  const view = new DataView(into.buffer, into.byteOffset + offset, PAGE_SIZE);
  for (let at = 0; at < PAGE_SIZE; at += 8) {
    view.setUint32(at, index, true);
    view.setUint32(at + 4, (at ^ seed) >>> 0, true);
  }
}

/** Pages `first` to `first + count - 1` at the snapshot instant, laid end to end in `into`. */
function snapshotInstantSlice(first: number, count: number, seed: number, into: Uint8Array): Uint8Array {
  for (let i = 0; i < count; i++) writeSnapshotInstantPage(first + i, seed, into, i * PAGE_SIZE);
  return into.subarray(0, count * PAGE_SIZE);
}

const SLICE_PAGES = VERIFY_SLICE_BYTES / PAGE_SIZE;

interface GuestWrite {
  readonly page: number;
  readonly offset: number;
  readonly round: number;
}

/** The bytes one guest write stores: recognizably not the snapshot's. */
function writeData(write: GuestWrite, vcpu: number): Uint8Array {
  const data = new Uint8Array(WRITE_BYTES);
  const view = new DataView(data.buffer);
  for (let offset = 0; offset < WRITE_BYTES; offset += 8) {
    view.setUint32(offset, 0xc0de0000 | (write.round << 8) | vcpu, true);
    view.setUint32(offset + 4, write.page, true);
  }
  return data;
}

/**
 * Each vCPU owns a disjoint share of the pages (so the final memory does not
 * depend on the interleaving) and goes over it `rounds` times in its own
 * shuffled order, writing one chunk of `writePercent` of them each round.
 */
function guestWrites(pages: number, options: BackgroundSnapshotOptions): GuestWrite[][] {
  const prng = new Prng(options.seed);
  const lists: GuestWrite[][] = Array.from({ length: options.vcpus }, () => []);
  const shares: number[][] = Array.from({ length: options.vcpus }, () => []);
  for (let page = 0; page < pages; page++) shares[page % options.vcpus]!.push(page);
  shares.forEach((share, v) => {
    for (let round = 0; round < options.rounds; round++) {
      const order = [...share];
      for (let i = order.length - 1; i > 0; i--) {
        const j = prng.nextInt(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      for (const page of order) {
        if (prng.nextInt(100) >= options.writePercent) continue;
        const offset = prng.nextInt(PAGE_SIZE / WRITE_BYTES) * WRITE_BYTES;
        lists[v]!.push({ page, offset, round });
      }
    }
  });
  return lists;
}

function* writeProgram(base: number, writes: readonly GuestWrite[], vcpu: number): Generator<ThreadAccess> {
  for (const write of writes) {
    yield {
      kind: 'write',
      address: base + write.page * PAGE_SIZE + write.offset,
      data: writeData(write, vcpu),
    };
  }
}

export async function runBackgroundSnapshot(
  options: BackgroundSnapshotOptions,
): Promise<BackgroundSnapshotResult> {
  const { backend, mode } = options;
  if (options.guestBytes % PAGE_SIZE !== 0)
    throw new Error(`--size: ${options.guestBytes} bytes is not a multiple of ${PAGE_SIZE}-byte pages`);
  const pages = options.guestBytes / PAGE_SIZE;
  const process = new Process(backend.self);
  // Every WP fault happens while the snapshot is taken: the rate is over that phase.
  const stats = new WorkloadStats(options.vcpus, 'snapshot');
  stats.beginPhase('setup');
  const guest = prepareGuest(process, options);

  // The VM is stopped: protect everything, then let it run while its RAM is saved.
  stats.beginPhase('snapshot');
  const uffd = process.userfaultfd({ nonblock: true, cloexec: true });
  uffd.api(mode === 'wp-unpopulated' ? ['wp_unpopulated'] : 0);
  const range = { start: guest, length: options.guestBytes };
  uffd.register(range, UFFDIO_REGISTER_MODE_WP);
  const protectStart = performance.now();
  uffd.writeprotect(range, UFFDIO_WRITEPROTECT_MODE_WP);
  options.trace.span({
    name: 'UFFDIO_WRITEPROTECT (all)',
    cat: 'snapshot',
    tid: 0,
    startMs: protectStart,
    endMs: performance.now(),
    args: { pages },
  });
  const writes = guestWrites(pages, options);
  const snapshot = new Snapshot({ process, uffd, guest, pages, stats, options });
  const results = await snapshot.run(writes);
  uffd.unregister(range);
  uffd.close();

  stats.beginPhase('verify');
  const image = verifyImage(snapshot.image, pages, options.seed);
  const memoryVerifiedPages = verifyMemory(process, guest, pages, options.seed, writes);
  stats.endPhase();
  return {
    stats,
    pages,
    pageSize: PAGE_SIZE,
    imageVerifiedPages: image.verifiedPages,
    imageDifferingPages: image.differingPages,
    memoryVerifiedPages,
    savedByFault: snapshot.savedByFault,
    savedByBackground: snapshot.savedByBackground,
    guestWrites: writes.reduce((sum, list) => sum + list.length, 0),
    threads: results,
  };
}

/**
 * The guest as it ran before the snapshot: some pages written, every fourth
 * never touched. Written a slice at a time, one write per run of touched
 * pages; QEMU pre-faults (a read maps the zero page, which can carry the WP
 * bit) unless the kernel offers WP_UNPOPULATED.
 */
function prepareGuest(process: Process, options: BackgroundSnapshotOptions): number {
  const pages = options.guestBytes / PAGE_SIZE;
  let guest: number;
  if (options.mode === 'shmem') {
    const fd = process.memfd('guest-ram', { size: options.guestBytes });
    guest = process.mmap({ length: options.guestBytes, fd, shared: true });
    process.close(fd);
  } else {
    guest = process.mmap({ length: options.guestBytes });
  }
  const buffer = new Uint8Array(Math.min(pages, SLICE_PAGES) * PAGE_SIZE);
  for (let first = 0; first < pages; first += SLICE_PAGES) {
    const count = Math.min(SLICE_PAGES, pages - first);
    const slice = snapshotInstantSlice(first, count, options.seed, buffer);
    for (let i = 0; i < count; ) {
      if (!populatedAtSnapshot(first + i)) {
        i++;
        continue;
      }
      let end = i;
      while (end < count && populatedAtSnapshot(first + end)) end++;
      process.write(guest + (first + i) * PAGE_SIZE, slice.subarray(i * PAGE_SIZE, end * PAGE_SIZE));
      i = end;
    }
  }
  if (options.mode === 'prefault') {
    for (let i = 0; i < pages; i++) process.read(guest + i * PAGE_SIZE, 1);
  }
  return guest;
}

interface SnapshotContext {
  readonly process: Process;
  readonly uffd: Uffd;
  readonly guest: number;
  readonly pages: number;
  readonly stats: WorkloadStats;
  readonly options: BackgroundSnapshotOptions;
}

/** The snapshot under way: the saved image, the fault thread and the background saver. */
class Snapshot {
  readonly image: Uint8Array;
  private readonly saved: Uint8Array;
  private savedCount = 0;
  savedByFault = 0;
  savedByBackground = 0;
  private vcpusDone = false;

  constructor(private readonly context: SnapshotContext) {
    this.image = new Uint8Array(context.pages * PAGE_SIZE);
    this.saved = new Uint8Array(context.pages);
  }

  /** Runs the vCPUs, the fault thread and the background saver until all are done. */
  async run(writes: readonly GuestWrite[][]): Promise<ThreadResult[]> {
    const { process, guest, stats, options } = this.context;
    const trace = options.trace;
    trace.nameThread(0, 'fault thread');
    trace.nameThread(BACKGROUND_TID, 'background saver');
    const threads = writes.map((list, v) => {
      const thread = process.thread(writeProgram(guest, list, v), `vcpu${v}`);
      trace.nameThread(thread.tid, `vcpu${v}`);
      return thread;
    });
    const vcpuByTid = new Map(threads.map((thread, v) => [thread.tid, v]));
    const joined = Promise.all(threads.map((thread) => thread.join())).then((results) => {
      this.vcpusDone = true;
      return results;
    });
    const [results] = await Promise.all([
      joined,
      this.faultThread(joined, vcpuByTid),
      this.backgroundSaver(),
    ]);
    results.forEach((result, v) => {
      stats.blockedMs[v] = result.blockedMs ?? Number.NaN;
    });
    return results;
  }

  private save(index: number): void {
    const { process, guest, pages, stats, options } = this.context;
    this.image.set(process.read(guest + index * PAGE_SIZE, PAGE_SIZE), index * PAGE_SIZE);
    this.saved[index] = 1;
    this.savedCount++;
    stats.bytesMoved += PAGE_SIZE;
    options.progress?.(this.savedCount, pages);
  }

  /** The fault thread: save the page as it is now, then let the write through. */
  private async faultThread(joined: Promise<unknown>, vcpuByTid: Map<number, number>): Promise<void> {
    const { uffd, guest, stats, options } = this.context;
    while (!this.vcpusDone) {
      const messages = await Promise.race([uffd.nextMessages(64), joined.then(() => [])]);
      for (const message of messages) {
        if (message.event !== 'pagefault') continue;
        const receivedMs = performance.now();
        const index = Math.floor((Number(message.address) - guest) / PAGE_SIZE);
        const page = { start: guest + index * PAGE_SIZE, length: PAGE_SIZE };
        let kind = 'wp';
        if (this.saved[index] === 0) {
          this.save(index);
          this.savedByFault++;
          uffd.writeprotect(page, 0);
        } else {
          // The background saver got there between the fault and this read; its unprotect woke the vCPU.
          kind = 'wp (saved already)';
          uffd.wake(page);
        }
        const doneMs = performance.now();
        options.trace.span({
          name: 'save+unprotect',
          cat: 'fault',
          tid: 0,
          startMs: receivedMs,
          endMs: doneMs,
          args: { page: index },
        });
        const sample: FaultSample = {
          atMs: receivedMs,
          page: index,
          kind,
          latencyUs: (doneMs - receivedMs) * 1000,
        };
        stats.record(sample, vcpuByTid.get(message.ptid));
      }
    }
  }

  /** The background saver: a chunk at a time, then one unprotect for the whole chunk. */
  private async backgroundSaver(): Promise<void> {
    const { uffd, guest, pages, options } = this.context;
    for (let first = 0; first < pages; first += options.chunkPages) {
      const end = Math.min(pages, first + options.chunkPages);
      const startMs = performance.now();
      let count = 0;
      for (let i = first; i < end; i++) {
        if (this.saved[i] === 1) continue;
        this.save(i);
        count++;
      }
      this.savedByBackground += count;
      if (count > 0)
        uffd.writeprotect({ start: guest + first * PAGE_SIZE, length: (end - first) * PAGE_SIZE }, 0);
      options.trace.span({
        name: 'save chunk',
        cat: 'background',
        tid: BACKGROUND_TID,
        startMs,
        endMs: performance.now(),
        args: {
          first,
          saved: count,
        },
      });
      // Let the vCPUs and the fault thread run between chunks.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}

/** Trace thread id of the background saver. */
const BACKGROUND_TID = 1_000_000;

/** The image must be the guest at the snapshot instant. */
function verifyImage(
  image: Uint8Array,
  pages: number,
  seed: number,
): { verifiedPages: number; differingPages: number[] } {
  const buffer = new Uint8Array(Math.min(pages, SLICE_PAGES) * PAGE_SIZE);
  let verifiedPages = 0;
  const differing: number[] = [];
  for (let first = 0; first < pages; first += SLICE_PAGES) {
    const count = Math.min(SLICE_PAGES, pages - first);
    const expected = snapshotInstantSlice(first, count, seed, buffer);
    const actual = image.subarray(first * PAGE_SIZE, (first + count) * PAGE_SIZE);
    verifiedPages += matchingPages(actual, expected, PAGE_SIZE);
    if (differing.length < 16) {
      for (const page of differingPages(actual, expected, PAGE_SIZE, 16 - differing.length))
        differing.push(first + page);
    }
  }
  return { verifiedPages, differingPages: differing };
}

/** Guest memory must be the snapshot with every guest write applied, in each vCPU's order. */
function verifyMemory(
  process: Process,
  guest: number,
  pages: number,
  seed: number,
  writes: readonly (readonly GuestWrite[])[],
): number {
  const slices = Math.ceil(pages / SLICE_PAGES);
  // The writes of each slice, each vCPU's in its order (the vCPUs' pages are disjoint).
  const bySlice: { write: GuestWrite; vcpu: number }[][] = Array.from({ length: slices }, () => []);
  writes.forEach((list, vcpu) => {
    for (const write of list) bySlice[Math.floor(write.page / SLICE_PAGES)]!.push({ write, vcpu });
  });
  const buffer = new Uint8Array(Math.min(pages, SLICE_PAGES) * PAGE_SIZE);
  let verifiedPages = 0;
  for (let slice = 0; slice < slices; slice++) {
    const first = slice * SLICE_PAGES;
    const count = Math.min(SLICE_PAGES, pages - first);
    const expected = snapshotInstantSlice(first, count, seed, buffer);
    for (const { write, vcpu } of bySlice[slice]!)
      expected.set(writeData(write, vcpu), (write.page - first) * PAGE_SIZE + write.offset);
    const actual = process.read(guest + first * PAGE_SIZE, count * PAGE_SIZE);
    verifiedPages += matchingPages(actual, expected, PAGE_SIZE);
  }
  return verifiedPages;
}
