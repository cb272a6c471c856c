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
import { Process } from '../api/process.ts';
import { Prng } from '../model/prng.ts';
import type { Trace } from '../trace/trace.ts';
import { UFFDIO_REGISTER_MODE_WP, UFFDIO_WRITEPROTECT_MODE_WP } from '../uapi/constants.ts';
import { type FaultSample, WorkloadStats } from './stats.ts';

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
  if (index % 4 === 3) return null;
  const page = new Uint8Array(PAGE_SIZE);
  const view = new DataView(page.buffer);
  for (let offset = 0; offset < PAGE_SIZE; offset += 8) {
    view.setUint32(offset, index, true);
    view.setUint32(offset + 4, (offset ^ seed) >>> 0, true);
  }
  return page;
}

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
  const { backend, mode, trace } = options;
  if (options.guestBytes % PAGE_SIZE !== 0)
    throw new Error(`--size: ${options.guestBytes} bytes is not a multiple of ${PAGE_SIZE}-byte pages`);
  const pages = options.guestBytes / PAGE_SIZE;
  const process = new Process(backend.self);
  const stats = new WorkloadStats(options.vcpus);

  // The guest as it ran before the snapshot: some pages written, some never touched.
  let guest: number;
  if (mode === 'shmem') {
    const fd = process.memfd('guest-ram', { size: options.guestBytes });
    guest = process.mmap({ length: options.guestBytes, fd, shared: true });
    process.close(fd);
  } else {
    guest = process.mmap({ length: options.guestBytes });
  }
  for (let i = 0; i < pages; i++) {
    const page = snapshotInstantPage(i, options.seed);
    if (page !== null) process.write(guest + i * PAGE_SIZE, page);
  }

  // The VM is stopped: protect everything. QEMU pre-faults (a read maps the zero page, which
  // can carry the WP bit) unless the kernel offers WP_UNPOPULATED.
  if (mode === 'prefault') {
    for (let i = 0; i < pages; i++) process.read(guest + i * PAGE_SIZE, 1);
  }
  const uffd = process.userfaultfd({ nonblock: true, cloexec: true });
  uffd.api(mode === 'wp-unpopulated' ? ['wp_unpopulated'] : 0);
  const range = { start: guest, length: options.guestBytes };
  uffd.register(range, UFFDIO_REGISTER_MODE_WP);
  const protectStart = performance.now();
  uffd.writeprotect(range, UFFDIO_WRITEPROTECT_MODE_WP);
  trace.span('UFFDIO_WRITEPROTECT (all)', 'snapshot', 0, protectStart, performance.now(), { pages });

  const image = new Uint8Array(options.guestBytes);
  const saved = new Uint8Array(pages);
  let savedCount = 0;
  let savedByFault = 0;
  let savedByBackground = 0;
  const save = (index: number) => {
    image.set(process.read(guest + index * PAGE_SIZE, PAGE_SIZE), index * PAGE_SIZE);
    saved[index] = 1;
    savedCount++;
    stats.bytesMoved += PAGE_SIZE;
    options.progress?.(savedCount, pages);
  };

  // The VM runs again.
  const writes = guestWrites(pages, options);
  trace.nameThread(0, 'fault thread');
  trace.nameThread(1_000_000, 'background saver');
  const threads = writes.map((list, v) => {
    const thread = process.thread(writeProgram(guest, list, v), `vcpu${v}`);
    trace.nameThread(thread.tid, `vcpu${v}`);
    return thread;
  });
  const vcpuByTid = new Map(threads.map((thread, v) => [thread.tid, v]));
  let vcpusDone = false;
  const joined = Promise.all(threads.map((thread) => thread.join())).then((results) => {
    vcpusDone = true;
    return results;
  });

  // The fault thread: save the page as it is now, then let the write through.
  const faultThread = async () => {
    while (!vcpusDone) {
      const messages = await Promise.race([uffd.nextMessages(64), joined.then(() => [])]);
      for (const message of messages) {
        if (message.event !== 'pagefault') continue;
        const receivedMs = performance.now();
        const address = Number(message.address);
        const index = Math.floor((address - guest) / PAGE_SIZE);
        const pageStart = guest + index * PAGE_SIZE;
        let kind = 'wp';
        if (saved[index] === 0) {
          save(index);
          savedByFault++;
          uffd.writeprotect({ start: pageStart, length: PAGE_SIZE }, 0);
        } else {
          // The background saver got there between the fault and this read; its unprotect woke the vCPU.
          kind = 'wp (saved already)';
          uffd.wake({ start: pageStart, length: PAGE_SIZE });
        }
        const doneMs = performance.now();
        trace.span('save+unprotect', 'fault', 0, receivedMs, doneMs, { page: index });
        const sample: FaultSample = {
          atMs: receivedMs,
          page: index,
          kind,
          latencyUs: (doneMs - receivedMs) * 1000,
        };
        stats.record(sample, vcpuByTid.get(message.ptid));
      }
    }
  };

  // The background saver: a chunk at a time, then one unprotect for the whole chunk.
  const backgroundSaver = async () => {
    for (let first = 0; first < pages; first += options.chunkPages) {
      const end = Math.min(pages, first + options.chunkPages);
      const startMs = performance.now();
      let count = 0;
      for (let i = first; i < end; i++) {
        if (saved[i] === 1) continue;
        save(i);
        count++;
      }
      savedByBackground += count;
      if (count > 0)
        uffd.writeprotect({ start: guest + first * PAGE_SIZE, length: (end - first) * PAGE_SIZE }, 0);
      trace.span('save chunk', 'background', 1_000_000, startMs, performance.now(), { first, saved: count });
      // Let the vCPUs and the fault thread run between chunks.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  };

  const [results] = await Promise.all([joined, faultThread(), backgroundSaver()]);
  results.forEach((result, v) => {
    stats.blockedMs[v] = result.blockedMs ?? Number.NaN;
  });
  uffd.unregister(range);
  uffd.close();

  // The image must be the guest at the snapshot instant.
  const zero = new Uint8Array(PAGE_SIZE);
  let imageVerifiedPages = 0;
  const imageDifferingPages: number[] = [];
  for (let i = 0; i < pages; i++) {
    const expected = snapshotInstantPage(i, options.seed) ?? zero;
    if (Buffer.compare(image.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), expected) === 0)
      imageVerifiedPages++;
    else if (imageDifferingPages.length < 16) imageDifferingPages.push(i);
  }
  // And guest memory must be the snapshot with every guest write applied.
  const memory = new Uint8Array(options.guestBytes);
  for (let i = 0; i < pages; i++) memory.set(snapshotInstantPage(i, options.seed) ?? zero, i * PAGE_SIZE);
  let guestWritesCount = 0;
  writes.forEach((list, v) => {
    for (const write of list) {
      memory.set(writeData(write, v), write.page * PAGE_SIZE + write.offset);
      guestWritesCount++;
    }
  });
  let memoryVerifiedPages = 0;
  for (let i = 0; i < pages; i++) {
    const actual = process.read(guest + i * PAGE_SIZE, PAGE_SIZE);
    if (Buffer.compare(actual, memory.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)) === 0)
      memoryVerifiedPages++;
  }

  return {
    stats,
    pages,
    pageSize: PAGE_SIZE,
    imageVerifiedPages,
    imageDifferingPages,
    memoryVerifiedPages,
    savedByFault,
    savedByBackground,
    guestWrites: guestWritesCount,
    threads: results,
  };
}
