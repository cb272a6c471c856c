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
import { type AccessPattern, vcpuPages } from './guest.ts';
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
  PAGE_PRECOPY,
  PAGE_REQUESTED,
  PAGE_ZERO,
  type SourceConfig,
  writeFinalPage,
} from './postcopy-wire.ts';
import { WorkloadStats } from './stats.ts';
import { equalBytes, matchingPages, VERIFY_SLICE_BYTES } from './verify.ts';

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

/**
 * The source's script beside this module: compiled JavaScript in an installed
 * package (plain node runs it), TypeScript in a checkout (run through tsx).
 */
const COMPILED = import.meta.url.endsWith('.js');
const SOURCE_SCRIPT = fileURLToPath(new URL(`./postcopy-source.${COMPILED ? 'js' : 'ts'}`, import.meta.url));
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
    [...(COMPILED ? [] : ['--import', import.meta.resolve('tsx')]), SOURCE_SCRIPT, JSON.stringify(config)],
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

/** Guest RAM as the destination VMM maps it. */
interface GuestRam {
  /** The guest's mapping, registered with the userfaultfd at switchover. */
  readonly guest: number;
  /** Where precopy (and, for MINOR, refreshes) write: the guest mapping itself, or a second view. */
  readonly fill: number;
  /** hugetlb-missing: the RAM's file, through which switchover discards dirty pages; else -1. */
  readonly ramFd: number;
}

function mapGuestRam(process: Process, mode: PostcopyMode, guestBytes: number): GuestRam {
  if (mode === 'anon') {
    const guest = process.mmap({ length: guestBytes });
    return { guest, fill: guest, ramFd: -1 };
  }
  if (mode === 'hugetlb-missing') {
    // QEMU's hugetlbfs RAM: one shared mapping precopy writes into directly. Not preallocated: a page
    // precopy never wrote (a zero page) stays a hole, and its first touch after switchover is MISSING.
    const ramFd = process.memfd('guest-ram', { size: guestBytes, hugetlb: true });
    const guest = process.mmap({ length: guestBytes, fd: ramFd, shared: true });
    return { guest, fill: guest, ramFd };
  }
  const fd =
    mode === 'gmem'
      ? process.guestMemfd({ size: guestBytes })
      : process.memfd('guest-ram', { size: guestBytes, hugetlb: mode === 'hugetlb' });
  // Preallocated RAM: every page is in the cache, so every first touch of the guest is a MINOR fault.
  // guest_memfd preallocates only with FALLOC_FL_KEEP_SIZE.
  process.fallocate(fd, mode === 'gmem' ? FALLOC_FL_KEEP_SIZE : 0, 0, guestBytes);
  const guest = process.mmap({ length: guestBytes, fd, shared: true });
  const fill = process.mmap({ length: guestBytes, fd, shared: true });
  process.close(fd);
  return { guest, fill, ramFd: -1 };
}

/** The destination's userfaultfd, probed as QEMU probes it; throws if the kernel lacks what the mode needs. */
function openUffd(process: Process, mode: PostcopyMode, ram: GuestRam): Uffd {
  const uffd = process.userfaultfd({ nonblock: true, cloexec: true });
  // QEMU probes with features 0: it needs nothing beyond MISSING/MINOR and the fill ioctls.
  const { features } = uffd.api(0);
  // As QEMU checks MISSING_HUGETLBFS for hugepage RAM it places with COPY: MINOR needs its hugetlbfs bit.
  let missing: string | undefined;
  if (mode === 'hugetlb-missing' && (features & UFFD_FEATURE_MISSING_HUGETLBFS) === 0)
    missing = 'UFFD_FEATURE_MISSING_HUGETLBFS (MISSING faults on hugetlbfs)';
  if (mode === 'hugetlb' && (features & UFFD_FEATURE_MINOR_HUGETLBFS) === 0)
    missing = 'UFFD_FEATURE_MINOR_HUGETLBFS (MINOR faults on hugetlbfs)';
  if (missing === undefined) return uffd;
  uffd.close();
  if (ram.ramFd >= 0) process.close(ram.ramFd);
  throw new Error(`--mode ${mode}: this kernel has no ${missing}`);
}

export async function runPostcopy(options: PostcopyOptions): Promise<PostcopyResult> {
  const { backend, mode } = options;
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
  // Every fault happens after switchover: the rate is taken over the postcopy phase.
  const stats = new WorkloadStats(options.vcpus, 'postcopy');
  stats.beginPhase('setup');
  const ram = mapGuestRam(process, mode, options.guestBytes);
  const uffd = openUffd(process, mode, ram);
  const shares = vcpuPages(
    { base: ram.guest, pageSize, pages },
    options.vcpus,
    options.pattern,
    options.seed,
  );

  options.trace.nameThread(0, 'fault thread');
  let link: SourceLink | null = null;
  let migrated: Migrated | undefined;
  try {
    stats.beginPhase('start source');
    link = await startSource(config);
    options.onSourceStarted?.(link.child.pid!);
    stats.beginPhase('precopy');
    const migration = new Destination({
      options,
      source: config,
      process,
      uffd,
      stats,
      ram,
      shares,
      link,
    }).run();
    // After a timeout the migration may still fail later (the source is killed): that is expected.
    migration.catch(() => {});
    migrated = await withTimeout(migration, options.timeoutMs, 'the migration');
  } finally {
    stats.beginPhase('stop source');
    if (link !== null) await stopSource(link, migrated !== undefined);
    // Closing the uffd releases any vCPU still asleep on a fault after a failure.
    if (migrated === undefined) uffd.close();
    if (ram.ramFd >= 0) process.close(ram.ramFd);
    stats.endPhase();
  }
  stats.beginPhase('verify');
  const verified = verifyGuest(process, ram.guest, config, shares, migrated.threads);
  stats.endPhase();
  return { ...migrated, ...verified, stats, pages, pageSize, sourcePid: link.child.pid! };
}

/** What the migration itself produced; verification and the source's pid complete the result. */
type Migrated = Omit<
  PostcopyResult,
  'stats' | 'pages' | 'pageSize' | 'verifiedPages' | 'verifiedReads' | 'reads' | 'sourcePid'
>;

interface DestinationContext {
  readonly options: PostcopyOptions;
  readonly source: SourceConfig;
  readonly process: Process;
  readonly uffd: Uffd;
  readonly stats: WorkloadStats;
  readonly ram: GuestRam;
  readonly shares: number[][];
  readonly link: SourceLink;
}

/**
 * The destination VMM during the migration: it places precopy pages,
 * switches over when the discard bitmap arrives, runs the vCPUs and the
 * fault thread, and places postcopy pages as they come in.
 */
class Destination {
  private readonly pages: number;
  private readonly pageSize: number;
  private readonly copies: boolean;
  private readonly startedMs = performance.now();
  /** 1 while a dirty page has not arrived yet (the destination's "received" bitmap, inverted). */
  private readonly stale: Uint8Array;
  /** When each page was requested (performance.now()), or -1. */
  private readonly requestedAtMs: Float64Array;
  /** Fault messages waiting for their page: page → when each was received. */
  private readonly waiting = new Map<number, number[]>();
  private readonly requestLatencyUs: number[] = [];
  private readonly answeredUs: number[] = [];
  private readonly viaStreamUs: number[] = [];
  private readonly zeros: Uint8Array;
  private precopyPages = 0;
  private dirtyPages = 0;
  private dirtyReceived = 0;
  private requestCount = 0;
  private switchoverMs = 0;
  private switched = false;
  private streamEnded = false;
  private vcpusDone = false;
  private results: ThreadResult[] = [];
  private readonly finished: Promise<void>;
  private finish!: () => void;
  private abort!: (error: Error) => void;
  /** The stream's frames not placed yet, placed a slice at a time (see `listen`). */
  private backlog: Frame[] = [];
  private backlogHead = 0;
  private draining = false;

  constructor(private readonly context: DestinationContext) {
    this.pages = context.source.pages;
    this.pageSize = context.source.pageSize;
    this.copies = postcopyCopies(context.options.mode);
    this.stale = new Uint8Array(this.pages);
    this.requestedAtMs = new Float64Array(this.pages).fill(-1);
    this.zeros = new Uint8Array(this.pageSize);
    this.finished = new Promise<void>((resolve, reject) => {
      this.finish = resolve;
      this.abort = reject;
    });
  }

  async run(): Promise<Migrated> {
    const { link, uffd, stats, ram } = this.context;
    this.listen(link.main, 'main', true);
    if (link.preempt !== null) this.listen(link.preempt, 'preempt', false);
    link.child.once('exit', (code, signal) => {
      if (!this.complete())
        this.abort(
          new Error(`postcopy: the source exited (${signal ?? code}) mid-migration: ${link.stderr()}`),
        );
    });
    await this.finished;
    stats.endPhase();
    // Migration complete: the destination stops tracking the guest.
    uffd.unregister({ start: ram.guest, length: this.pages * this.pageSize });
    uffd.close();
    this.results.forEach((result, v) => {
      stats.blockedMs[v] = result.blockedMs ?? Number.NaN;
    });
    return {
      precopyPages: this.precopyPages,
      dirtyPages: this.dirtyPages,
      requests: {
        count: this.requestCount,
        latencyUs: latency(this.requestLatencyUs),
        answered: { count: this.answeredUs.length, latencyUs: latency(this.answeredUs) },
        viaStream: { count: this.viaStreamUs.length, latencyUs: latency(this.viaStreamUs) },
        samplesUs: this.requestLatencyUs,
      },
      threads: this.results,
      switchoverMs: this.switchoverMs,
    };
  }

  /** Every dirty page arrived after switchover and the stream ended. */
  private complete(): boolean {
    return this.switched && this.streamEnded && this.dirtyReceived === this.dirtyPages;
  }

  private checkDone(): void {
    if (this.complete() && this.vcpusDone) this.finish();
  }

  private total(): number {
    return (this.context.options.dirtyPercent < 100 ? this.pages : 0) + this.dirtyPages;
  }

  private onFrame(frame: Frame): void {
    if (frame.type === FRAME_PAGE) {
      if (frame.flags & PAGE_PRECOPY) this.precopy(frame);
      else this.postcopyPage(frame);
    } else if (frame.type === FRAME_DISCARD) {
      this.switchover(frame);
    } else if (frame.type === FRAME_END) {
      this.streamEnded = true;
      this.checkDone();
    } else {
      throw new Error(`postcopy: unexpected frame type ${frame.type} from the source`);
    }
  }

  private precopy(frame: Frame): void {
    this.precopyPages++;
    // Fresh RAM (and the fallocated cache) reads as zero already.
    if ((frame.flags & PAGE_ZERO) === 0)
      this.context.process.write(this.context.ram.fill + frame.index * this.pageSize, frame.payload);
    this.context.options.progress?.(this.precopyPages, this.total());
  }

  private switchover(frame: Frame): void {
    const { uffd, ram, stats, options } = this.context;
    this.switchoverMs = performance.now() - this.startedMs;
    stats.beginPhase('postcopy');
    for (let i = 0; i < this.pages; i++) {
      if ((frame.payload[i >> 3]! & (1 << (i & 7))) === 0) continue;
      this.stale[i] = 1;
      this.dirtyPages++;
    }
    const range = { start: ram.guest, length: this.pages * this.pageSize };
    if (this.copies) {
      if (options.dirtyPercent < 100) this.discardDirty();
      uffd.register(range, UFFDIO_REGISTER_MODE_MISSING);
    } else {
      uffd.register(range, UFFDIO_REGISTER_MODE_MINOR);
    }
    options.trace.instant('switchover', 'migration', 0, performance.now(), { dirtyPages: this.dirtyPages });
    this.switched = true;
    this.startVcpus();
    this.faultThread().catch(this.abort);
  }

  /**
   * Discards what precopy sent for the dirtied pages, one call per run of them: madvise for
   * anonymous RAM, a hole punched in the file for hugetlbfs (QEMU's ram_block_discard_range).
   */
  private discardDirty(): void {
    const { process, ram } = this.context;
    const { pages, pageSize, stale } = this;
    for (let i = 0; i < pages; ) {
      if (stale[i] === 0) {
        i++;
        continue;
      }
      let end = i;
      while (end < pages && stale[end] === 1) end++;
      const length = (end - i) * pageSize;
      if (ram.ramFd >= 0)
        process.fallocate(ram.ramFd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, i * pageSize, length);
      else process.backend.madvise(ram.guest + i * pageSize, length, MADV_DONTNEED);
      i = end;
    }
  }

  /** The guest runs on the destination from here. */
  private startVcpus(): void {
    const { process, ram, shares, options } = this.context;
    const { pageSize } = this;
    const threads = shares.map((share, v) => {
      const thread = process.thread(
        share.map((index) => ({
          kind: 'read' as const,
          address: ram.guest + index * pageSize + touchOffset(index, pageSize),
          length: 8,
        })),
        `vcpu${v}`,
      );
      options.trace.nameThread(thread.tid, `vcpu${v}`);
      return thread;
    });
    Promise.all(threads.map((thread) => thread.join())).then((done) => {
      this.results = done;
      this.vcpusDone = true;
      this.checkDone();
    }, this.abort);
  }

  /** Maps page `index` in the guest now that its bytes are current; wakes its faults. */
  private place(index: number, payload: Uint8Array | null): number {
    const { uffd, process, ram, options } = this.context;
    const { pageSize } = this;
    const address = ram.guest + index * pageSize;
    const start = performance.now();
    let name: string;
    try {
      if (this.copies) {
        // hugetlbfs has no UFFDIO_ZEROPAGE (EINVAL): a zero huge page is copied like any other.
        const zero = payload === null && options.mode === 'anon';
        name = zero ? 'UFFDIO_ZEROPAGE' : 'UFFDIO_COPY';
        if (zero) uffd.zeropage({ start: address, length: pageSize });
        else uffd.copyBytes(address, payload ?? this.zeros);
      } else {
        name = 'refresh+UFFDIO_CONTINUE';
        process.write(ram.fill + index * pageSize, payload ?? this.zeros);
        // A page nobody waits for is continued on its first touch instead.
        if (this.waiting.has(index)) uffd.continue({ start: address, length: pageSize });
      }
    } catch (error) {
      if (!(error instanceof KernelError && error.errno === EEXIST)) throw error;
      name = 'EEXIST';
    }
    const now = performance.now();
    options.trace.span({ name, cat: 'placement', tid: 0, startMs: start, endMs: now, args: { page: index } });
    return now;
  }

  private postcopyPage(frame: Frame): void {
    const { stats, options } = this.context;
    const index = frame.index;
    if (index >= this.pages || this.stale[index] === 0) return;
    const placedMs = this.place(index, frame.flags & PAGE_ZERO ? null : frame.payload);
    this.stale[index] = 0;
    this.dirtyReceived++;
    stats.bytesMoved += this.pageSize;
    const requestedMs = this.requestedAtMs[index]!;
    if (requestedMs >= 0) {
      const latencyUs = (placedMs - requestedMs) * 1000;
      this.requestLatencyUs.push(latencyUs);
      (frame.flags & PAGE_REQUESTED ? this.answeredUs : this.viaStreamUs).push(latencyUs);
    }
    for (const receivedMs of this.waiting.get(index) ?? []) {
      stats.record(
        { atMs: receivedMs, page: index, kind: 'fetched', latencyUs: (placedMs - receivedMs) * 1000 },
        undefined,
      );
    }
    this.waiting.delete(index);
    options.progress?.(this.precopyPages + this.dirtyReceived, this.total());
    this.checkDone();
  }

  /**
   * QEMU reads the preempt connection in its own thread, so a requested page never waits behind
   * the stream. Here one JavaScript thread reads both: the stream's frames go to a backlog that is
   * placed a slice at a time (the main connection paused while it is long, which pushes back on
   * the source through TCP), and the event loop reads the preempt connection between slices.
   */
  private listen(socket: Socket, name: string, queued: boolean): void {
    const reader = new FrameReader();
    const backlogFramesMax = Math.max(4, Math.floor(BACKLOG_BYTES_MAX / this.pageSize));
    socket.on('data', (chunk: Buffer) => {
      try {
        const frames = reader.push(chunk);
        if (!queued) {
          for (const frame of frames) this.onFrame(frame);
          return;
        }
        for (const frame of frames) this.backlog.push(frame);
        if (this.backlog.length - this.backlogHead > backlogFramesMax) socket.pause();
        if (!this.draining && this.backlog.length > this.backlogHead) {
          this.draining = true;
          setImmediate(() => this.drainSlice());
        }
      } catch (error) {
        this.abort(error as Error);
      }
    });
    socket.on('error', (error) => this.abort(new Error(`postcopy: ${name} connection: ${error.message}`)));
    socket.on('close', () => {
      if (!this.complete())
        this.abort(
          new Error(
            `postcopy: the source closed the ${name} connection early: ${this.context.link.stderr()}`,
          ),
        );
    });
  }

  private drainSlice(): void {
    const sliceFrames = Math.max(1, Math.floor(STREAM_SLICE_BYTES / this.pageSize));
    try {
      const end = Math.min(this.backlog.length, this.backlogHead + sliceFrames);
      while (this.backlogHead < end) this.onFrame(this.backlog[this.backlogHead++]!);
    } catch (error) {
      this.abort(error as Error);
      return;
    }
    if (this.backlogHead < this.backlog.length) {
      setImmediate(() => this.drainSlice());
      return;
    }
    this.backlog = [];
    this.backlogHead = 0;
    this.draining = false;
    this.context.link.main.resume();
  }

  private async faultThread(): Promise<void> {
    const { uffd } = this.context;
    let stop = false;
    const stopped = this.finished.then(
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
        if (message.event === 'pagefault') this.onFault(Number(message.address), message.flags);
      }
    }
  }

  private onFault(faultAddress: number, flags: number): void {
    const { ram, options, link } = this.context;
    const receivedMs = performance.now();
    // The page holding the address: with huge pages a fault anywhere inside asks for all of it.
    const index = Math.floor((faultAddress - ram.guest) / this.pageSize);
    options.trace.instant('fault', 'fault', 0, receivedMs, { page: index, flags });
    if (this.stale[index] === 0) {
      this.resolveClean(index, receivedMs);
      return;
    }
    const list = this.waiting.get(index);
    if (list === undefined) this.waiting.set(index, [receivedMs]);
    else list.push(receivedMs);
    if (this.requestedAtMs[index]! < 0) {
      this.requestedAtMs[index] = performance.now();
      this.requestCount++;
      (link.preempt ?? link.main).write(encodeFrame(FRAME_REQUEST, 0, index));
    }
  }

  /**
   * A fault on a page that is not stale: a clean page (MINOR: map it from the cache; anon: a zero
   * page precopy had no need to write), or one placed after this fault was queued (EEXIST: just wake).
   */
  private resolveClean(index: number, receivedMs: number): void {
    const { uffd, ram, stats, options } = this.context;
    const address = ram.guest + index * this.pageSize;
    const range = { start: address, length: this.pageSize };
    let kind = !this.copies ? 'clean' : 'zero';
    try {
      if (!this.copies) uffd.continue(range);
      else if (options.mode === 'anon') uffd.zeropage(range);
      // hugetlbfs has no UFFDIO_ZEROPAGE: the hole a zero page left is filled by copying zeroes.
      else uffd.copyBytes(address, this.zeros);
    } catch (error) {
      if (!(error instanceof KernelError && error.errno === EEXIST)) throw error;
      uffd.wake(range);
      kind = 'raced';
    }
    stats.record(
      { atMs: receivedMs, page: index, kind, latencyUs: (performance.now() - receivedMs) * 1000 },
      undefined,
    );
  }
}

/**
 * Checks every byte of guest RAM against the source's final image, and every
 * vCPU read against the page it read. Works a slice at a time: the image's
 * slice is generated into one reused buffer, the guest's read with one call,
 * the two compared with one memcmp (page by page only where they differ).
 */
function verifyGuest(
  process: Process,
  guest: number,
  source: SourceConfig,
  shares: readonly (readonly number[])[],
  threads: readonly ThreadResult[],
): { verifiedPages: number; verifiedReads: number; reads: number } {
  const { pages, pageSize } = source;
  // Which vCPU read each page, and the read's position in its list (each page is in one share).
  const readerOf = new Int32Array(pages).fill(-1);
  const readIndexOf = new Int32Array(pages);
  shares.forEach((share, v) => {
    share.forEach((index, k) => {
      readerOf[index] = v;
      readIndexOf[index] = k;
    });
  });
  const slicePages = Math.max(1, Math.floor(VERIFY_SLICE_BYTES / pageSize));
  const expected = new Uint8Array(Math.min(pages, slicePages) * pageSize);
  let verifiedPages = 0;
  let verifiedReads = 0;
  for (let first = 0; first < pages; first += slicePages) {
    const count = Math.min(slicePages, pages - first);
    for (let i = 0; i < count; i++) writeFinalPage(first + i, source, expected, i * pageSize);
    const want = expected.subarray(0, count * pageSize);
    verifiedPages += matchingPages(process.read(guest + first * pageSize, count * pageSize), want, pageSize);
    for (let i = 0; i < count; i++) {
      const read = threads[readerOf[first + i]!]?.reads[readIndexOf[first + i]!];
      if (read === undefined) continue;
      const at = i * pageSize + touchOffset(first + i, pageSize);
      if (equalBytes(read, want.subarray(at, at + read.byteLength))) verifiedReads++;
    }
  }
  const reads = threads.reduce((sum, result) => sum + result.reads.length, 0);
  return { verifiedPages, verifiedReads, reads };
}

function latency(samplesUs: readonly number[]): Latency {
  const [p50, p90, p99, max] = percentiles(samplesUs, [50, 90, 99, 100]);
  return { p50: p50!, p90: p90!, p99: p99!, max: max! };
}
