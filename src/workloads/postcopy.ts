/**
 * Postcopy live migration, QEMU style, destination side. The source is a
 * separate Node process (postcopy-source.ts) holding the RAM image and
 * talking TCP on 127.0.0.1; this process is the destination VMM: guest RAM
 * on the backend, a userfaultfd, vCPU threads and the fault thread.
 *
 * - anon: precopy writes pages straight into guest RAM; at switchover the
 *   pages dirtied since are discarded (MADV_DONTNEED) and the RAM registered
 *   MISSING; a fault requests its page, which arrives and is placed with
 *   UFFDIO_COPY (UFFDIO_ZEROPAGE for zero pages).
 * - shmem: guest RAM is a memfd mapped twice; precopy fills the page cache
 *   through the second, unregistered mapping and the guest mapping is
 *   registered MINOR. A first touch of a clean page is answered with
 *   UFFDIO_CONTINUE at once; a stale (dirtied) page is requested, refreshed
 *   through the second mapping, then continued.
 * - hugetlb: the same on a hugetlbfs memfd (MFD_HUGETLB) of 2 MiB pages. The
 *   run's page is the guest RAM's host page, 2 MiB: the wire carries whole
 *   huge pages, a fault anywhere inside one requests all of it (the kernel
 *   reports the huge page's address, and QEMU asks for the RAM block's host
 *   page), and it is refreshed through the second mapping (hugetlbfs has no
 *   write(2)) and continued as one 2 MiB page.
 *
 * Meanwhile the source streams every dirty page in address order. With
 * preempt (QEMU's postcopy-preempt) requested pages come back on their own
 * connection; without it they queue behind the stream on the main one.
 * Reports per-vCPU blocked time (QEMU's postcopy-blocktime) and the page
 * request latency distribution, and checks every byte of guest RAM against
 * the source's image at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { KernelBackend, ThreadResult } from '../api/backend.ts';
import { Process, type Uffd } from '../api/process.ts';
import { percentiles, type Trace } from '../trace/trace.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  MADV_DONTNEED,
  UFFD_FEATURE_MINOR_HUGETLBFS,
  UFFD_FEATURE_MISSING_HUGETLBFS,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
} from '../uapi/constants.ts';
import { EEXIST, KernelError } from '../uapi/errno.ts';
import { type AccessPattern, type GuestLayout, vcpuPages } from './guest.ts';
import {
  CHANNEL_MAIN,
  CHANNEL_PREEMPT,
  encodeFrame,
  FRAME_COMPLETE,
  FRAME_DISCARD,
  FRAME_END,
  FRAME_PAGE,
  FRAME_REQUEST,
  type Frame,
  FrameReader,
  finalPage,
  PAGE_PRECOPY,
  PAGE_REQUESTED,
  PAGE_ZERO,
  type SourceConfig,
} from './postcopy-wire.ts';
import { WorkloadStats } from './stats.ts';

/**
 * anon: MISSING + COPY; hugetlb-missing: 2 MiB hugetlbfs RAM with MISSING + COPY of whole huge pages,
 * dirty pages discarded by punching them out of the file (QEMU's own hugetlbfs postcopy); shmem,
 * hugetlb (2 MiB hugetlbfs) and gmem (guest_memfd, the 7.1 model only): MINOR + CONTINUE.
 */
export type PostcopyMode = 'anon' | 'shmem' | 'hugetlb' | 'hugetlb-missing' | 'gmem';
export const POSTCOPY_MODES: readonly PostcopyMode[] = [
  'anon',
  'shmem',
  'hugetlb',
  'hugetlb-missing',
  'gmem',
];

/** Modes that register MISSING and place pages with UFFDIO_COPY (the others: MINOR and CONTINUE). */
export function postcopyCopies(mode: PostcopyMode): boolean {
  return mode === 'anon' || mode === 'hugetlb-missing';
}

const SMALL_PAGE = 4096;
const HUGE_PAGE = 2 * 1024 * 1024;

/**
 * The page size of a run: the host page size of the guest RAM, the unit in
 * which pages are discarded, requested, sent and placed.
 */
export function postcopyPageSize(mode: PostcopyMode): number {
  return mode === 'hugetlb' || mode === 'hugetlb-missing' ? HUGE_PAGE : SMALL_PAGE;
}

/**
 * Where a vCPU reads in page `index`: a 4 KiB subpage that varies with the
 * page (always the start with 4 KiB pages), so faults land anywhere inside a
 * huge page, not only at its first byte.
 */
export function touchOffset(index: number, pageSize: number): number {
  const subpages = pageSize / SMALL_PAGE;
  return ((Math.imul(index, 0x9e3779b1) >>> 0) % subpages) * SMALL_PAGE + (subpages > 1 ? 64 : 0);
}

export interface PostcopyOptions {
  readonly backend: KernelBackend;
  readonly mode: PostcopyMode;
  readonly guestBytes: number;
  readonly vcpus: number;
  /** sequential or random (a recorded working set makes no sense for a migration). */
  readonly pattern: Exclude<AccessPattern, 'working-set'>;
  readonly seed: number;
  /** Percentage of pages the guest dirtied after precopy; 100 is pure postcopy (no precopy pass). */
  readonly dirtyPercent: number;
  /** Requested pages on their own connection (postcopy-preempt). */
  readonly preempt: boolean;
  /** Background stream limit in bytes per second; 0 for none. */
  readonly bandwidthBytes: number;
  /** The whole migration must finish within this time, or it fails (and the source is killed). */
  readonly timeoutMs: number;
  readonly trace: Trace;
  /** Called with (pages received, pages to receive) as the migration goes. */
  readonly progress?: (done: number, total: number) => void;
  /** Called with the source's pid once it listens (tests check it is gone afterwards). */
  readonly onSourceStarted?: (pid: number) => void;
}

export interface Latency {
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

/** The page request latency distribution: from sending a request to the page being placed, in µs. */
export interface RequestStats {
  /** Pages the fault thread asked the source for. */
  readonly count: number;
  readonly latencyUs: Latency;
  /** Requests the source answered by sending the page (on the preempt connection when there is one). */
  readonly answered: { readonly count: number; readonly latencyUs: Latency };
  /**
   * Requests the source ignored because it had sent the page already: the page
   * came in on the stream, behind everything queued on the way.
   */
  readonly viaStream: { readonly count: number; readonly latencyUs: Latency };
  /** Every request's latency in µs, in the order the pages arrived. */
  readonly samplesUs: readonly number[];
}

export interface PostcopyResult {
  readonly stats: WorkloadStats;
  readonly pages: number;
  readonly pageSize: number;
  readonly precopyPages: number;
  readonly dirtyPages: number;
  readonly requests: RequestStats;
  /** Pages whose bytes equal the source's final image (all of them, when the migration is right). */
  readonly verifiedPages: number;
  /** vCPU reads that saw the source's bytes. */
  readonly verifiedReads: number;
  readonly reads: number;
  readonly threads: readonly ThreadResult[];
  readonly switchoverMs: number;
  /** The source process, which has exited by the time the result is returned. */
  readonly sourcePid: number;
}

/** The source process and its two connections. */
interface SourceLink {
  readonly child: ChildProcess;
  readonly main: Socket;
  readonly preempt: Socket | null;
  /** The tail of the source's stderr, for error messages. */
  stderr(): string;
}

const SOURCE_SCRIPT = fileURLToPath(new URL('./postcopy-source.ts', import.meta.url));
const START_TIMEOUT_MS = 15_000;
/**
 * Stream bytes placed per event-loop turn, and the backlog at which the main connection pauses;
 * counted in frames of the run's page size, at least 1 per turn and 4 in the backlog.
 */
const STREAM_SLICE_BYTES = 64 * 1024;
const BACKLOG_BYTES_MAX = 1024 * 1024;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`postcopy: ${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function connectChannel(port: number, channel: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  await once(socket, 'connect');
  socket.write(new Uint8Array([channel]));
  return socket;
}

/** Starts the source process and connects to it; kills it if anything fails on the way. */
async function startSource(config: SourceConfig): Promise<SourceLink> {
  const child = spawn(
    process.execPath,
    ['--import', import.meta.resolve('tsx'), SOURCE_SCRIPT, JSON.stringify(config)],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => {
    stderr = (stderr + text).slice(-4000);
  });
  const sockets: Socket[] = [];
  try {
    const port = await withTimeout(
      new Promise<number>((resolve, reject) => {
        let line = '';
        child.stdout!.setEncoding('utf8');
        child.stdout!.on('data', (text: string) => {
          line += text;
          const newline = line.indexOf('\n');
          if (newline < 0) return;
          let port = Number.NaN;
          try {
            port = Number((JSON.parse(line.slice(0, newline)) as { port?: unknown }).port);
          } catch {
            // Reported below with the line itself.
          }
          if (Number.isInteger(port) && port > 0) resolve(port);
          else reject(new Error(`postcopy: the source said ${line.slice(0, newline)}, not its port`));
        });
        child.once('exit', (code) =>
          reject(
            new Error(`postcopy: the source exited with code ${code} before listening: ${stderr.trim()}`),
          ),
        );
        child.once('error', reject);
      }),
      START_TIMEOUT_MS,
      'starting the source process',
    );
    const preempt = config.preempt ? await connectChannel(port, CHANNEL_PREEMPT) : null;
    if (preempt !== null) sockets.push(preempt);
    const main = await connectChannel(port, CHANNEL_MAIN);
    sockets.push(main);
    return { child, main, preempt, stderr: () => stderr.trim() };
  } catch (error) {
    for (const socket of sockets) socket.destroy();
    child.kill('SIGKILL');
    throw error;
  }
}

/** Ends the source: COMPLETE, close the connections, and kill it if it does not exit promptly. */
async function stopSource(link: SourceLink, complete: boolean): Promise<void> {
  if (complete && !link.main.destroyed) link.main.write(encodeFrame(FRAME_COMPLETE, 0, 0));
  link.main.end();
  link.preempt?.end();
  if (link.child.exitCode === null && link.child.signalCode === null) {
    const exited = once(link.child, 'exit');
    const timer = setTimeout(() => link.child.kill('SIGKILL'), complete ? 2000 : 0);
    await exited;
    clearTimeout(timer);
  }
  link.main.destroy();
  link.preempt?.destroy();
}

export async function runPostcopy(options: PostcopyOptions): Promise<PostcopyResult> {
  const { backend, mode, trace } = options;
  const pageSize = postcopyPageSize(mode);
  if (options.guestBytes <= 0 || options.guestBytes % pageSize !== 0) {
    throw new Error(
      `--size: ${options.guestBytes} bytes is not a multiple of the ${pageSize >= HUGE_PAGE ? '2 MiB huge' : `${pageSize}-byte`} pages of --mode ${mode}`,
    );
  }
  const pages = options.guestBytes / pageSize;
  const config: SourceConfig = {
    version: 1,
    pages,
    pageSize,
    seed: options.seed,
    dirtyPercent: options.dirtyPercent,
    preempt: options.preempt,
    bandwidthBytes: options.bandwidthBytes,
    lifetimeMs: options.timeoutMs + START_TIMEOUT_MS,
  };
  const process = new Process(backend.self);
  const stats = new WorkloadStats(options.vcpus);

  // Guest RAM as the destination VMM maps it, and (shmem, hugetlb, gmem) the second view precopy fills.
  let guest: number;
  let fill: number;
  /** hugetlb-missing: the RAM's file, through which switchover discards dirty pages. */
  let ramFd = -1;
  if (mode === 'anon') {
    guest = process.mmap({ length: options.guestBytes });
    fill = guest;
  } else if (mode === 'hugetlb-missing') {
    // QEMU's hugetlbfs RAM: one shared mapping precopy writes into directly. Not preallocated: a page
    // precopy never wrote (a zero page) stays a hole, and its first touch after switchover is MISSING.
    ramFd = process.memfd('guest-ram', { size: options.guestBytes, hugetlb: true });
    guest = process.mmap({ length: options.guestBytes, fd: ramFd, shared: true });
    fill = guest;
  } else {
    const fd =
      mode === 'gmem'
        ? process.guestMemfd({ size: options.guestBytes })
        : process.memfd('guest-ram', { size: options.guestBytes, hugetlb: mode === 'hugetlb' });
    // Preallocated RAM: every page is in the cache, so every first touch of the guest is a MINOR fault.
    // guest_memfd preallocates only with FALLOC_FL_KEEP_SIZE.
    process.fallocate(fd, mode === 'gmem' ? FALLOC_FL_KEEP_SIZE : 0, 0, options.guestBytes);
    guest = process.mmap({ length: options.guestBytes, fd, shared: true });
    fill = process.mmap({ length: options.guestBytes, fd, shared: true });
    process.close(fd);
  }
  const uffd = process.userfaultfd({ nonblock: true, cloexec: true });
  // QEMU probes with features 0: it needs nothing beyond MISSING/MINOR and the fill ioctls.
  const { features } = uffd.api(0);
  // As QEMU checks MISSING_HUGETLBFS for hugepage RAM it places with COPY: MINOR needs its hugetlbfs bit.
  if (mode === 'hugetlb-missing' && (features & UFFD_FEATURE_MISSING_HUGETLBFS) === 0) {
    uffd.close();
    if (ramFd >= 0) process.close(ramFd);
    throw new Error(
      '--mode hugetlb-missing: this kernel has no UFFD_FEATURE_MISSING_HUGETLBFS (MISSING faults on hugetlbfs)',
    );
  }
  if (mode === 'hugetlb' && (features & UFFD_FEATURE_MINOR_HUGETLBFS) === 0) {
    uffd.close();
    throw new Error(
      '--mode hugetlb: this kernel has no UFFD_FEATURE_MINOR_HUGETLBFS (MINOR faults on hugetlbfs)',
    );
  }
  const layout: GuestLayout = { base: guest, pageSize, pages };
  const shares = vcpuPages(layout, options.vcpus, options.pattern, options.seed);

  trace.nameThread(0, 'fault thread');
  let link: SourceLink | null = null;
  let completed = false;
  try {
    link = await startSource(config);
    options.onSourceStarted?.(link.child.pid!);
    const migration = migrate({
      options,
      source: config,
      process,
      uffd,
      stats,
      guest,
      fill,
      ramFd,
      shares,
      link,
    });
    // After a timeout the migration may still fail later (the source is killed): that is expected.
    migration.catch(() => {});
    const result = await withTimeout(migration, options.timeoutMs, 'the migration');
    completed = true;
    return result;
  } finally {
    if (link !== null) await stopSource(link, completed);
    // Closing the uffd releases any vCPU still asleep on a fault after a failure.
    if (!completed) uffd.close();
    if (ramFd >= 0) process.close(ramFd);
  }
}

interface MigrateContext {
  readonly options: PostcopyOptions;
  readonly source: SourceConfig;
  readonly process: Process;
  readonly uffd: Uffd;
  readonly stats: WorkloadStats;
  readonly guest: number;
  readonly fill: number;
  readonly ramFd: number;
  readonly shares: number[][];
  readonly link: SourceLink;
}

async function migrate(context: MigrateContext): Promise<PostcopyResult> {
  const { options, source, process, uffd, stats, guest, fill, ramFd, shares, link } = context;
  const { pages, pageSize } = source;
  const { mode, trace } = options;
  const copies = postcopyCopies(mode);
  const startedMs = performance.now();

  /** 1 while a dirty page has not arrived yet (the destination's "received" bitmap, inverted). */
  const stale = new Uint8Array(pages);
  /** When each page was requested (performance.now()), or -1. */
  const requestedAtMs = new Float64Array(pages).fill(-1);
  /** Fault messages waiting for their page: page → when each was received. */
  const waiting = new Map<number, number[]>();
  const requestLatencyUs: number[] = [];
  const answeredUs: number[] = [];
  const viaStreamUs: number[] = [];
  let precopyPages = 0;
  let dirtyPages = 0;
  let dirtyReceived = 0;
  let switchoverMs = 0;
  let switched = false;
  let streamEnded = false;
  let vcpusDone = false;
  let threads: ReturnType<Process['thread']>[] = [];
  let results: ThreadResult[] = [];
  const zeros = new Uint8Array(pageSize);
  const total = () => (options.dirtyPercent < 100 ? pages : 0) + dirtyPages;

  let finish!: () => void;
  let abort!: (error: Error) => void;
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    abort = reject;
  });
  const checkDone = () => {
    if (switched && streamEnded && vcpusDone && dirtyReceived === dirtyPages) finish();
  };

  const precopy = (frame: Frame) => {
    precopyPages++;
    // Fresh RAM (and the fallocated cache) reads as zero already.
    if ((frame.flags & PAGE_ZERO) === 0) process.write(fill + frame.index * pageSize, frame.payload);
    options.progress?.(precopyPages, total());
  };

  const switchover = (frame: Frame) => {
    switchoverMs = performance.now() - startedMs;
    for (let i = 0; i < pages; i++) {
      if ((frame.payload[i >> 3]! & (1 << (i & 7))) === 0) continue;
      stale[i] = 1;
      dirtyPages++;
    }
    if (copies) {
      // Discard what precopy sent for the dirtied pages, one call per run of them: madvise for anonymous
      // RAM, a hole punched in the file for hugetlbfs (QEMU's ram_block_discard_range).
      if (options.dirtyPercent < 100) {
        for (let i = 0; i < pages; ) {
          if (stale[i] === 0) {
            i++;
            continue;
          }
          let end = i;
          while (end < pages && stale[end] === 1) end++;
          if (ramFd >= 0) {
            process.fallocate(
              ramFd,
              FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              i * pageSize,
              (end - i) * pageSize,
            );
          } else {
            process.backend.madvise(guest + i * pageSize, (end - i) * pageSize, MADV_DONTNEED);
          }
          i = end;
        }
      }
      uffd.register({ start: guest, length: pages * pageSize }, UFFDIO_REGISTER_MODE_MISSING);
    } else {
      uffd.register({ start: guest, length: pages * pageSize }, UFFDIO_REGISTER_MODE_MINOR);
    }
    trace.instant('switchover', 'migration', 0, performance.now(), { dirtyPages });
    switched = true;
    // The guest runs on the destination from here.
    threads = shares.map((share, v) => {
      const thread = process.thread(
        share.map((index) => ({
          kind: 'read' as const,
          address: guest + index * pageSize + touchOffset(index, pageSize),
          length: 8,
        })),
        `vcpu${v}`,
      );
      trace.nameThread(thread.tid, `vcpu${v}`);
      return thread;
    });
    Promise.all(threads.map((thread) => thread.join())).then((done) => {
      results = done;
      vcpusDone = true;
      checkDone();
    }, abort);
    faultThread().catch(abort);
  };

  /** Maps page `index` in the guest now that its bytes are current; wakes its faults. */
  const place = (index: number, payload: Uint8Array | null) => {
    const address = guest + index * pageSize;
    const start = performance.now();
    let name: string;
    try {
      if (copies) {
        // hugetlbfs has no UFFDIO_ZEROPAGE (EINVAL): a zero huge page is copied like any other.
        const zero = payload === null && mode === 'anon';
        name = zero ? 'UFFDIO_ZEROPAGE' : 'UFFDIO_COPY';
        if (zero) uffd.zeropage({ start: address, length: pageSize });
        else uffd.copyBytes(address, payload ?? zeros);
      } else {
        name = 'refresh+UFFDIO_CONTINUE';
        process.write(fill + index * pageSize, payload ?? zeros);
        // A page nobody waits for is continued on its first touch instead.
        if (waiting.has(index)) uffd.continue({ start: address, length: pageSize });
      }
    } catch (error) {
      if (!(error instanceof KernelError && error.errno === EEXIST)) throw error;
      name = 'EEXIST';
    }
    const now = performance.now();
    trace.span(name, 'placement', 0, start, now, { page: index });
    return now;
  };

  const postcopyPage = (frame: Frame) => {
    const index = frame.index;
    if (index >= pages || stale[index] === 0) return;
    const placedMs = place(index, frame.flags & PAGE_ZERO ? null : frame.payload);
    stale[index] = 0;
    dirtyReceived++;
    stats.bytesMoved += pageSize;
    if (requestedAtMs[index]! >= 0) {
      const latencyUs = (placedMs - requestedAtMs[index]!) * 1000;
      requestLatencyUs.push(latencyUs);
      (frame.flags & PAGE_REQUESTED ? answeredUs : viaStreamUs).push(latencyUs);
    }
    for (const receivedMs of waiting.get(index) ?? []) {
      stats.record(
        { atMs: receivedMs, page: index, kind: 'fetched', latencyUs: (placedMs - receivedMs) * 1000 },
        undefined,
      );
    }
    waiting.delete(index);
    options.progress?.(precopyPages + dirtyReceived, total());
    checkDone();
  };

  const onFrame = (frame: Frame) => {
    if (frame.type === FRAME_PAGE) {
      if (frame.flags & PAGE_PRECOPY) precopy(frame);
      else postcopyPage(frame);
    } else if (frame.type === FRAME_DISCARD) {
      switchover(frame);
    } else if (frame.type === FRAME_END) {
      streamEnded = true;
      checkDone();
    } else {
      throw new Error(`postcopy: unexpected frame type ${frame.type} from the source`);
    }
  };

  // QEMU reads the preempt connection in its own thread, so a requested page never waits behind
  // the stream. Here one JavaScript thread reads both: the stream's frames go to a backlog that is
  // placed a slice at a time (the main connection paused while it is long, which pushes back on
  // the source through TCP), and the event loop reads the preempt connection between slices.
  const backlog: Frame[] = [];
  let backlogHead = 0;
  const sliceFrames = Math.max(1, Math.floor(STREAM_SLICE_BYTES / pageSize));
  const backlogFramesMax = Math.max(4, Math.floor(BACKLOG_BYTES_MAX / pageSize));
  let draining = false;
  const drainSlice = () => {
    try {
      const end = Math.min(backlog.length, backlogHead + sliceFrames);
      while (backlogHead < end) onFrame(backlog[backlogHead++]!);
    } catch (error) {
      abort(error as Error);
      return;
    }
    if (backlogHead < backlog.length) {
      setImmediate(drainSlice);
      return;
    }
    backlog.length = 0;
    backlogHead = 0;
    draining = false;
    link.main.resume();
  };
  const listen = (socket: Socket, name: string, queued: boolean) => {
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      try {
        const frames = reader.push(chunk);
        if (!queued) {
          for (const frame of frames) onFrame(frame);
          return;
        }
        for (const frame of frames) backlog.push(frame);
        if (backlog.length - backlogHead > backlogFramesMax) socket.pause();
        if (!draining && backlog.length > backlogHead) {
          draining = true;
          setImmediate(drainSlice);
        }
      } catch (error) {
        abort(error as Error);
      }
    });
    socket.on('error', (error) => abort(new Error(`postcopy: ${name} connection: ${error.message}`)));
    socket.on('close', () => {
      if (!(switched && streamEnded && dirtyReceived === dirtyPages))
        abort(new Error(`postcopy: the source closed the ${name} connection early: ${link.stderr()}`));
    });
  };
  listen(link.main, 'main', true);
  if (link.preempt !== null) listen(link.preempt, 'preempt', false);
  link.child.once('exit', (code, signal) => {
    if (!(switched && streamEnded && dirtyReceived === dirtyPages))
      abort(new Error(`postcopy: the source exited (${signal ?? code}) mid-migration: ${link.stderr()}`));
  });
  const requests = link.preempt ?? link.main;
  let requestCount = 0;

  const faultThread = async () => {
    let stop = false;
    const stopped = finished.then(
      () => {
        stop = true;
        return [];
      },
      () => {
        stop = true;
        return [];
      },
    );
    while (!stop) {
      const messages = await Promise.race([uffd.nextMessages(64), stopped]);
      for (const message of messages) {
        if (message.event !== 'pagefault') continue;
        const receivedMs = performance.now();
        // The page holding the address: with huge pages a fault anywhere inside asks for all of it.
        const index = Math.floor((Number(message.address) - guest) / pageSize);
        const address = guest + index * pageSize;
        trace.instant('fault', 'fault', 0, receivedMs, { page: index, flags: message.flags });
        if (stale[index] === 0) {
          // Not stale: a clean page (shmem: map it from the cache; anon: a zero page precopy had no
          // need to write), or one placed after this fault was queued (EEXIST: just wake).
          let kind = !copies ? 'clean' : 'zero';
          try {
            if (!copies) uffd.continue({ start: address, length: pageSize });
            else if (mode === 'anon') uffd.zeropage({ start: address, length: pageSize });
            // hugetlbfs has no UFFDIO_ZEROPAGE: the hole a zero page left is filled by copying zeroes.
            else uffd.copyBytes(address, zeros);
          } catch (error) {
            if (!(error instanceof KernelError && error.errno === EEXIST)) throw error;
            uffd.wake({ start: address, length: pageSize });
            kind = 'raced';
          }
          stats.record(
            { atMs: receivedMs, page: index, kind, latencyUs: (performance.now() - receivedMs) * 1000 },
            undefined,
          );
          continue;
        }
        const list = waiting.get(index);
        if (list === undefined) waiting.set(index, [receivedMs]);
        else list.push(receivedMs);
        if (requestedAtMs[index]! < 0) {
          requestedAtMs[index] = performance.now();
          requestCount++;
          requests.write(encodeFrame(FRAME_REQUEST, 0, index));
        }
      }
    }
  };

  await finished;

  // Migration complete: the destination stops tracking the guest.
  uffd.unregister({ start: guest, length: pages * pageSize });
  uffd.close();
  results.forEach((result, v) => {
    stats.blockedMs[v] = result.blockedMs ?? Number.NaN;
  });

  let verifiedPages = 0;
  const expected: Uint8Array[] = [];
  for (let i = 0; i < pages; i++) {
    const want = finalPage(i, source);
    const offset = touchOffset(i, pageSize);
    expected.push(want.subarray(offset, offset + 8));
    const actual = process.read(guest + i * pageSize, pageSize);
    if (equalBytes(actual, want)) verifiedPages++;
  }
  let reads = 0;
  let verifiedReads = 0;
  results.forEach((result, v) => {
    result.reads.forEach((bytes, k) => {
      reads++;
      if (equalBytes(bytes, expected[shares[v]![k]!]!)) verifiedReads++;
    });
  });
  return {
    stats,
    pages,
    pageSize,
    precopyPages,
    dirtyPages,
    requests: {
      count: requestCount,
      latencyUs: latency(requestLatencyUs),
      answered: { count: answeredUs.length, latencyUs: latency(answeredUs) },
      viaStream: { count: viaStreamUs.length, latencyUs: latency(viaStreamUs) },
      samplesUs: requestLatencyUs,
    },
    verifiedPages,
    verifiedReads,
    reads,
    threads: results,
    switchoverMs,
    sourcePid: link.child.pid!,
  };
}

function latency(samplesUs: readonly number[]): Latency {
  const [p50, p90, p99, max] = percentiles(samplesUs, [50, 90, 99, 100]);
  return { p50: p50!, p90: p90!, p99: p99!, max: max! };
}

/** Byte-for-byte equality (memcmp through Buffer, fast enough for whole guests). */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
