/**
 * Snapshot restore, Firecracker style: the guest side (HANDLERS.md §3). The
 * VMM writes a memory snapshot file, maps guest memory, creates the
 * userfaultfd and registers it, and hands it to a handler (a `serve(session)`
 * module: the built-in one of `handlers/builtin.ts` unless the user brings
 * one) while vCPU threads touch guest memory and a balloon may discard part
 * of it. The oracle then judges what every vCPU read.
 *
 * Modes: anonymous MISSING, hugetlb 2 MiB MISSING, guest_memfd MINOR (the
 * VMM preallocates; the handler writes then CONTINUEs), guest_memfd MISSING.
 */
import { writeFileSync } from 'node:fs';
import type { KernelBackend, ProcessBackend, ThreadBackend, ThreadResult } from '../api/backend.ts';
import { ModelBackend } from '../api/model-backend.ts';
import { Process, type Uffd } from '../api/process.ts';
import { type BuiltinObserver, createBuiltinHandler } from '../handlers/builtin.ts';
import { type OpenedSession, openSession } from '../handlers/open.ts';
import type { HandlerSession, Serve } from '../handlers/session.ts';
import { HostBackend } from '../host/host-backend.ts';
import type { Trace } from '../trace/trace.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  MADV_DONTNEED,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
} from '../uapi/constants.ts';
import type { GuestRegionUffdMapping } from './firecracker.ts';
import { type AccessPattern, type GuestLayout, touchPages, vcpuPages, type WorkingSetFile } from './guest.ts';
import { WorkloadStats } from './stats.ts';
import { matchingPages, VERIFY_SLICE_BYTES } from './verify.ts';

export type RestoreMode = 'anon' | 'hugetlb' | 'gmem-minor' | 'gmem-missing';
export const RESTORE_MODES: readonly RestoreMode[] = ['anon', 'hugetlb', 'gmem-minor', 'gmem-missing'];

export interface SnapshotRestoreOptions {
  readonly backend: KernelBackend;
  readonly mode: RestoreMode;
  readonly guestBytes: number;
  readonly vcpus: number;
  readonly pattern: AccessPattern;
  readonly seed: number;
  /** The handler (default: the built-in one with the options below). */
  readonly handler?: Serve;
  /** Built-in handler: pages to copy after each faulting page (0: none). */
  readonly prefetchWindow: number;
  /**
   * Pages at the end of guest memory a balloon discards (MADV_DONTNEED) while
   * the vCPUs run (anon mode); the VMM then enables event_remove.
   */
  readonly balloonPages?: number;
  /** Of those, how many the balloon thread touches again after its madvise (deflate; default all). */
  readonly deflatePages?: number;
  /** Built-in handler: pages to restore before the guest runs (REAP's recorded working set). */
  readonly workingSet?: readonly number[];
  /** Write the first-touch order of faulted pages here (record for a later run; built-in handler). */
  readonly recordWorkingSet?: string;
  readonly trace: Trace;
  /** Called with (pages resolved, pages total) as the restore goes (built-in handler). */
  readonly progress?: (done: number, total: number) => void;
  /** Pass the uffd to the handler over this Unix socket path (host; default a temporary one). */
  readonly firecrackerSocket?: string;
  /** Explore: when each read and the balloon's madvise happened, for the exact oracle. */
  readonly order?: GuestOrder;
  /** Explore: rejects to abandon the run (a hang). */
  readonly cancel?: Promise<never>;
  /** Read every touched page back after the run (default true; explore judges the reads alone). */
  readonly verify?: boolean;
  /** Explore: told when the guest threads exist (before any of them ran). */
  readonly onThreads?: (threads: GuestThreads) => void;
}

/** The guest's threads: vCPUs, then the balloon if any. */
export interface GuestThreads {
  readonly vcpus: readonly ThreadBackend[];
  readonly balloon: ThreadBackend | null;
  /** Resolves when the handler's `serve` settles. */
  readonly served: Promise<void>;
}

/**
 * When things happened, on one clock (explore's step counter): read `k` of
 * thread `tid`, and the balloon's madvise call (from its first step to its return).
 */
export interface GuestOrder {
  readAt(tid: number, k: number): number;
  readonly madvise: { start: number; end: number } | null;
}

export interface SnapshotRestoreResult {
  readonly stats: WorkloadStats;
  readonly verifiedPages: number;
  readonly pages: number;
  readonly pageSize: number;
  readonly threads: readonly ThreadResult[];
  /** What the oracle forbids, one line each (empty when every read was right). */
  readonly wrongReads: readonly string[];
}

/** The handler threw: `cause` is what it threw. */
export class HandlerError extends Error {
  override name = 'HandlerError';
  constructor(override readonly cause: unknown) {
    super(`the handler threw: ${describeThrown(cause)}`);
  }
}

/** What a handler threw, never empty: an Error without a message is named by its class and first frame. */
function describeThrown(cause: unknown): string {
  if (!(cause instanceof Error)) return String(cause) || 'an empty string';
  if (cause.message !== '') return cause.message;
  const frame = cause.stack?.split('\n').find((line) => line.trimStart().startsWith('at '));
  return `${cause.name} with no message${frame === undefined ? '' : ` (${frame.trim()})`}`;
}

/**
 * The reason session.signal is aborted with: one object for every run, since
 * abort() without a reason builds a DOMException with a stack trace each
 * time (3% of an explored schedule's CPU).
 */
const GUEST_DONE = new DOMException('every vCPU has finished', 'AbortError');

/** The snapshot's content: deterministic per page, with every eighth page all zero. */
export function snapshotPage(index: number, pageSize: number): Uint8Array {
  const page = new Uint8Array(pageSize);
  if (isZeroPage(index)) return page;
  const view = new DataView(page.buffer);
  for (let offset = 0; offset < pageSize; offset += 64) {
    view.setUint32(offset, index, true);
    view.setUint32(offset + 4, offset, true);
  }
  return page;
}

function isZeroPage(index: number): boolean {
  return index % 8 === 7;
}

/** The last snapshot image made (explore restores one guest thousands of times). */
let cachedImage: { pages: number; pageSize: number; image: Uint8Array } | null = null;

/** The whole snapshot, `pages` pages of `pageSize` bytes (cached for small guests). */
function snapshotImage(pages: number, pageSize: number): Uint8Array {
  if (cachedImage !== null && cachedImage.pages === pages && cachedImage.pageSize === pageSize)
    return cachedImage.image;
  const image = new Uint8Array(pages * pageSize);
  for (let i = 0; i < pages; i++) if (!isZeroPage(i)) image.set(snapshotPage(i, pageSize), i * pageSize);
  if (image.byteLength <= 64 * 2 ** 20) cachedImage = { pages, pageSize, image };
  return image;
}

/** Writes snapshot page `index` into `into` at byte `offset` (zeros included), allocating nothing. */
function writeSnapshotPage(index: number, pageSize: number, into: Uint8Array, offset: number): void {
  into.fill(0, offset, offset + pageSize);
  if (isZeroPage(index)) return;
  const view = new DataView(into.buffer, into.byteOffset + offset, pageSize);
  for (let at = 0; at < pageSize; at += 64) {
    view.setUint32(at, index, true);
    view.setUint32(at + 4, at, true);
  }
}

/** Snapshot pages `first` to `first + count - 1` laid end to end in `into`. */
function snapshotSlice(first: number, count: number, pageSize: number, into: Uint8Array): Uint8Array {
  for (let i = 0; i < count; i++) writeSnapshotPage(first + i, pageSize, into, i * pageSize);
  return into.subarray(0, count * pageSize);
}

/** Pages of a slice the setup writes, or the verification reads, at once (at least one). */
function slicePages(pageSize: number): number {
  return Math.max(1, Math.floor(VERIFY_SLICE_BYTES / pageSize));
}

/**
 * The snapshot memory file, written a slice at a time: one pwrite per run of
 * non-zero pages (zero pages stay holes, as in a sparse snapshot file).
 */
function writeSnapshotFile(process: Process, pages: number, pageSize: number): number {
  const fd = process.memfd('snapshot', { size: pages * pageSize });
  if (pages * pageSize <= 64 * 2 ** 20) {
    // One call from the cached image (explore restores one small guest thousands of times): the
    // zero pages are then cached zeros rather than holes, which reads the same.
    process.pwrite(fd, snapshotImage(pages, pageSize), 0);
    return fd;
  }
  const step = slicePages(pageSize);
  const buffer = new Uint8Array(Math.min(pages, step) * pageSize);
  for (let first = 0; first < pages; first += step) {
    const count = Math.min(step, pages - first);
    const slice = snapshotSlice(first, count, pageSize, buffer);
    for (let i = 0; i < count; ) {
      if (isZeroPage(first + i)) {
        i++;
        continue;
      }
      let end = i;
      while (end < count && !isZeroPage(first + end)) end++;
      process.pwrite(fd, slice.subarray(i * pageSize, end * pageSize), (first + i) * pageSize);
      i = end;
    }
  }
  return fd;
}

/** What the VMM set up. */
interface Vmm {
  readonly process: Process;
  readonly pageSize: number;
  readonly pages: number;
  readonly guest: number;
  readonly guestFd: number;
  readonly snapshotFd: number;
  readonly uffd: Uffd;
  readonly features: string[];
  readonly registerModes: ('missing' | 'minor')[];
  readonly regions: GuestRegionUffdMapping[];
  readonly layout: GuestLayout;
}

/**
 * The VMM's process: on the host an agent process of its own, so that the
 * guest's memory and vCPUs — and the userfaultfd a handler binary receives —
 * are never faultline's own (a binary holding a uffd of Node's mm could
 * register and stall Node's heap). The handler stays in `backend.self`.
 */
function vmmProcess(backend: KernelBackend): ProcessBackend {
  if (backend instanceof HostBackend && backend.canTakeFds) return backend.createProcess();
  return backend.self;
}

function setUpVmm(options: SnapshotRestoreOptions): Vmm {
  const { backend, mode } = options;
  const pageSize = mode === 'hugetlb' ? 2 * 1024 * 1024 : 4096;
  if (options.guestBytes % pageSize !== 0) {
    throw new Error(
      `--size: ${options.guestBytes} bytes is not a multiple of the ${pageSize}-byte pages of mode ${mode}`,
    );
  }
  const process = new Process(vmmProcess(backend));
  const pages = options.guestBytes / pageSize;
  const snapshotFd = writeSnapshotFile(process, pages, pageSize);
  // The guest region and the userfaultfd.
  let guest: number;
  let guestFd = -1;
  let registerMode = UFFDIO_REGISTER_MODE_MISSING;
  if (mode === 'anon') {
    guest = process.mmap({ length: options.guestBytes });
  } else if (mode === 'hugetlb') {
    guest = process.mmap({ length: options.guestBytes, hugetlb: true });
  } else {
    guestFd = process.guestMemfd({ size: options.guestBytes });
    guest = process.mmap({ length: options.guestBytes, fd: guestFd, shared: true });
    if (mode === 'gmem-minor') {
      // The VMM preallocates guest memory, so every first touch finds a page in the
      // cache and raises a MINOR fault that the handler answers with write() + CONTINUE.
      process.fallocate(guestFd, FALLOC_FL_KEEP_SIZE, 0, options.guestBytes);
      registerMode = UFFDIO_REGISTER_MODE_MINOR;
    }
  }
  const features = balloonPages(options) > 0 ? ['event_remove'] : [];
  const uffd = process.userfaultfd({ nonblock: true, cloexec: true });
  uffd.api(features);
  uffd.register({ start: guest, length: options.guestBytes }, registerMode);
  const regions: GuestRegionUffdMapping[] = [
    {
      base_host_virt_addr: guest,
      size: options.guestBytes,
      offset: 0,
      page_size: pageSize,
      page_size_kib: pageSize,
    },
  ];
  return {
    process,
    pageSize,
    pages,
    guest,
    guestFd,
    snapshotFd,
    uffd,
    features,
    registerModes: [registerMode === UFFDIO_REGISTER_MODE_MINOR ? 'minor' : 'missing'],
    regions,
    layout: { base: guest, pageSize, pages },
  };
}

function balloonPages(options: SnapshotRestoreOptions): number {
  if (options.mode !== 'anon') return 0;
  const pages = options.guestBytes / 4096;
  return Math.max(0, Math.min(options.balloonPages ?? 0, pages));
}

/** What the built-in handler's observer feeds: the run's statistics, trace and first-touch order. */
interface ObserverTarget {
  readonly options: SnapshotRestoreOptions;
  readonly stats: WorkloadStats;
  readonly vmm: Vmm;
  /** Faulted pages in the order first touched (`--record-working-set`). */
  readonly firstTouch: number[];
}

/** The built-in handler's observer: the workload's statistics and trace. */
function workloadObserver({ options, stats, vmm, firstTouch }: ObserverTarget): BuiltinObserver {
  const { trace } = options;
  const { pages, pageSize, guest } = vmm;
  let resolved = 0;
  // Each fault's flow (vCPU blocked -> read -> ioctl -> wake) passes through the read that returned it.
  let readEndMs = 0;
  const touched = new Uint8Array(pages);
  return {
    fault(page, flags, receivedMs, latencyMs) {
      if (touched[page] === 0) {
        touched[page] = 1;
        firstTouch.push(page);
      }
      trace.instant('fault', 'fault', 0, receivedMs, { page, flags });
      // Told last (after the ioctl's step): the handler is done with this fault.
      trace.flowStep(guest + page * pageSize, 0, readEndMs, -1, true);
      const kind = flags & 4 ? 'minor' : flags & 1 ? 'write miss' : 'read miss';
      stats.record({ atMs: receivedMs, page, kind, latencyUs: latencyMs * 1000 }, undefined);
    },
    populated(page, how, source, startMs, endMs) {
      trace.span({ name: how, cat: source, tid: 0, startMs, endMs, args: { page } });
      if (source === 'fault') trace.flowStep(guest + page * pageSize, 0, startMs, 1);
      stats.bytesMoved += pageSize;
      if (source === 'prefetch' && stats.faults === 0) stats.prefetched++;
      options.progress?.(++resolved, pages);
    },
    read(count, startMs, endMs) {
      trace.span({ name: 'read(uffd)', cat: 'handler', tid: 0, startMs, endMs, args: { messages: count } });
      readEndMs = endMs;
    },
    removed(_first, count, atMs) {
      stats.removeEvents++;
      trace.instant('REMOVE', 'event', 0, atMs, { pages: count });
    },
    deferred() {
      stats.deferredFaults++;
    },
  };
}

export async function runSnapshotRestore(options: SnapshotRestoreOptions): Promise<SnapshotRestoreResult> {
  // Every fault happens while the guest runs: the rate is over the restore phase alone.
  const stats = new WorkloadStats(options.vcpus, 'restore', backendClock(options.backend));
  stats.beginPhase('setup');
  const vmm = setUpVmm(options);
  try {
    return await restoreWith(options, vmm, stats);
  } finally {
    // A VMM in an agent of its own ends with the run, whatever happened (see vmmProcess).
    if (vmm.process.backend !== options.backend.self) vmm.process.exit();
  }
}

async function restoreWith(
  options: SnapshotRestoreOptions,
  vmm: Vmm,
  stats: WorkloadStats,
): Promise<SnapshotRestoreResult> {
  const firstTouch: number[] = [];
  const guestDone = new AbortController();
  const opened = await openVmmSession(options, vmm, guestDone.signal);
  const serve =
    options.handler ??
    createBuiltinHandler({
      prefetchWindow: options.prefetchWindow,
      ...(options.workingSet === undefined ? {} : { workingSet: options.workingSet }),
      observer: workloadObserver({ options, stats, vmm, firstTouch }),
    });
  // serve's synchronous start (a REAP prefetch) runs before any vCPU exists: it is part of the restore.
  stats.beginPhase('restore');
  const guest = await runGuest(options, vmm, startServing(serve, opened.session), guestDone);
  recordBlocked(options, stats, guest.results);
  // The handler's descriptors close: the guest is unregistered (what the check needs: discarded
  // pages then read as zero), and the handler's mappings go.
  stats.beginPhase('verify');
  opened.close();
  const wrongReads = judgeReads(options, vmm, guest);
  const verified = verifyGuest(options, vmm, guest.shares);
  stats.endPhase();
  if (options.recordWorkingSet !== undefined) {
    const file: WorkingSetFile = { version: 1, pageSize: vmm.pageSize, pages: firstTouch };
    writeFileSync(options.recordWorkingSet, JSON.stringify(file));
  }
  return { stats, ...verified, pageSize: vmm.pageSize, threads: guest.results, wrongReads };
}

/** The guest's run: which pages each vCPU touched, its threads (vCPUs, then the balloon) and how they ended. */
interface GuestRun {
  readonly shares: readonly number[][];
  readonly threads: readonly ThreadBackend[];
  readonly results: readonly ThreadResult[];
}

/**
 * Runs the vCPUs and the balloon against the serving handler, until every
 * thread ended and the handler returned (or the handler threw, or explore
 * cancelled the run).
 */
async function runGuest(
  options: SnapshotRestoreOptions,
  vmm: Vmm,
  { served, failed }: Serving,
  guestDone: AbortController,
): Promise<GuestRun> {
  const { trace } = options;
  const shares = vcpuPages(vmm.layout, options.vcpus, options.pattern, options.seed, options.workingSet);
  trace.nameThread(0, 'uffd handler');
  const vcpus = shares.map((share, v) => {
    const thread = vmm.process.thread(touchPages(vmm.layout, share), `vcpu${v}`);
    trace.nameThread(thread.tid, `vcpu${v}`);
    return thread;
  });
  const balloon = startBalloon(options, vmm);
  options.onThreads?.({ vcpus, balloon, served: served.catch(() => {}) });
  const threads = balloon === null ? vcpus : [...vcpus, balloon];
  const never = new Promise<never>(() => {});
  try {
    const results = await Promise.race([
      Promise.all(threads.map((thread) => thread.join())),
      failed,
      options.cancel ?? never,
    ]);
    // The guest is done: the handler should return soon.
    guestDone.abort(GUEST_DONE);
    await Promise.race([
      served.catch((error: unknown) => Promise.reject(new HandlerError(error))),
      options.cancel ?? never,
    ]);
    return { shares, threads, results };
  } finally {
    // Also when the handler failed or the run was cancelled (explore's hang):
    // a handler binary is killed on this signal, not left serving a dead guest.
    guestDone.abort(GUEST_DONE);
  }
}

/** Each vCPU's blocked time; a user's handler reports nothing, so its faults are counted from the vCPUs. */
function recordBlocked(
  options: SnapshotRestoreOptions,
  stats: WorkloadStats,
  results: readonly ThreadResult[],
): void {
  const vcpus = results.slice(0, options.vcpus);
  vcpus.forEach((result, v) => {
    stats.blockedMs[v] = result.blockedMs ?? Number.NaN;
  });
  if (options.handler !== undefined && stats.samples.length === 0)
    stats.untimedFaults = vcpus.reduce((sum, result) => sum + result.faults, 0);
}

/** Reads back every page a vCPU touched (explore judges by the oracle alone and skips it). */
function verifyGuest(
  options: SnapshotRestoreOptions,
  vmm: Vmm,
  shares: readonly number[][],
): { verifiedPages: number; pages: number } {
  const touched = new Uint8Array(vmm.pages);
  for (const share of shares) for (const page of share) touched[page] = 1;
  if (options.verify === false) return { verifiedPages: countSet(touched), pages: countSet(touched) };
  return verifyMemory(options, vmm, touched);
}

/** Hands the VMM's userfaultfd and files to the handler, as Firecracker does. */
function openVmmSession(
  options: SnapshotRestoreOptions,
  vmm: Vmm,
  signal: AbortSignal,
): Promise<OpenedSession> {
  return openSession({
    backend: options.backend,
    vmm: vmm.process,
    uffd: vmm.uffd,
    features: vmm.features,
    registerModes: vmm.registerModes,
    regions: vmm.regions,
    memoryFd: vmm.snapshotFd,
    ...(vmm.guestFd >= 0 ? { guestMemfd: vmm.guestFd } : {}),
    signal,
    ...(options.firecrackerSocket === undefined ? {} : { socketPath: options.firecrackerSocket }),
  });
}

/** A handler serving: `served` settles with it, `failed` rejects (with a HandlerError) only if it throws. */
interface Serving {
  readonly served: Promise<void>;
  readonly failed: Promise<never>;
}

/** Starts `serve`: `served` settles with it, `failed` rejects (with a HandlerError) only if it throws. */
function startServing(serve: Serve, session: HandlerSession): Serving {
  let served: Promise<void>;
  try {
    served = Promise.resolve(serve(session));
  } catch (error) {
    served = Promise.reject(error);
  }
  const failed = served.then(
    () => new Promise<never>(() => {}),
    (error: unknown) => Promise.reject(new HandlerError(error)),
  );
  return { served, failed };
}

/** The clock the handler's session reads (the model's on the model), for samples and the trace. */
export function backendClock(backend: KernelBackend): () => number {
  if (backend instanceof ModelBackend) {
    const clock = backend.kernel.clock;
    return () => clock.nowMs();
  }
  return () => performance.now();
}

/** The balloon thread: madvise(DONTNEED) of the last pages, then the deflate's reads of them. */
function startBalloon(options: SnapshotRestoreOptions, vmm: Vmm): ThreadBackend | null {
  const count = balloonPages(options);
  if (count === 0) return null;
  const first = vmm.pages - count;
  const deflate = Math.max(0, Math.min(options.deflatePages ?? count, count));
  const program = [
    {
      kind: 'syscall' as const,
      call: 'madvise' as const,
      args: [vmm.guest + first * vmm.pageSize, count * vmm.pageSize, MADV_DONTNEED],
    },
    ...touchPages(
      vmm.layout,
      Array.from({ length: deflate }, (_, i) => first + i),
    ),
  ];
  const thread = vmm.process.thread(program, 'balloon');
  options.trace.nameThread(thread.tid, 'balloon');
  return thread;
}

/** The first 8 bytes a vCPU reads of snapshot page `index`. */
function u32At(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

/** What judging one read needs besides the read itself. */
interface ReadJudge {
  readonly vmm: Vmm;
  readonly balloonFirst: number;
  readonly order: SnapshotRestoreOptions['order'];
  readonly results: readonly ThreadResult[];
  readonly threads: readonly ThreadBackend[];
  readonly wrong: string[];
}

/**
 * The oracle (HANDLERS.md §3): a page never discarded reads as the
 * snapshot; a discarded page as the snapshot before the madvise began, as
 * zero after it returned, either while it ran (without an order, any vCPU
 * read of a ballooned page may be either; the balloon's own deflate reads
 * follow its madvise and must be zero).
 */
function judgeReads(
  options: SnapshotRestoreOptions,
  vmm: Vmm,
  { shares, results, threads }: GuestRun,
): string[] {
  const judge: ReadJudge = {
    vmm,
    balloonFirst: vmm.pages - balloonPages(options),
    order: options.order,
    results,
    threads,
    wrong: [],
  };
  const { wrong } = judge;
  for (let v = 0; v < shares.length; v++) {
    const share = shares[v]!;
    const result = results[v]!;
    if (result.state !== 'done')
      wrong.push(`vcpu${v} ended by ${result.state} at 0x${(result.signal?.address ?? 0).toString(16)}`);
    for (let k = 0; k < share.length; k++) judgeRead(judge, { v, page: share[k]!, k, afterDiscard: false });
  }
  const balloon = results[shares.length];
  if (balloon !== undefined) {
    if (balloon.state !== 'done') wrong.push(`the balloon ended by ${balloon.state}`);
    for (let k = 0; k < balloon.reads.length; k++)
      judgeRead(judge, { v: shares.length, page: judge.balloonFirst + k, k, afterDiscard: true });
  }
  return wrong;
}

interface ReadAt {
  /** The thread's index in the results (vCPUs, then the balloon). */
  readonly v: number;
  readonly page: number;
  /** Which of the thread's reads. */
  readonly k: number;
  readonly afterDiscard: boolean;
}

/**
 * Judges one read. It runs for every read of every explored schedule, so
 * the common case (a page never discarded, read right) is decided on two
 * numbers before anything is allocated.
 */
function judgeRead(judge: ReadJudge, at: ReadAt): void {
  const bytes = judge.results[at.v]!.reads[at.k];
  if (bytes === undefined) return;
  const a = u32At(bytes, 0);
  const b = u32At(bytes, 4);
  const isSnapshot = isZeroPage(at.page) ? a === 0 && b === 0 : a === at.page && b === 0;
  if (at.page < judge.balloonFirst && isSnapshot) return;
  const isZero = a === 0 && b === 0;
  const name = at.afterDiscard ? 'the balloon (deflate)' : `vcpu${at.v}`;
  const where = `${name} read page ${at.page} (0x${(judge.vmm.guest + at.page * judge.vmm.pageSize).toString(16)})`;
  const got = `got ${isZero ? 'zeros' : isSnapshot ? "the snapshot's bytes" : `[${a}, ${b}]`}`;
  if (at.page < judge.balloonFirst) {
    judge.wrong.push(`${where}: expected the snapshot's bytes, ${got}`);
    return;
  }
  const when = readWhen(judge, at);
  if (when === 'before' && !isSnapshot)
    judge.wrong.push(`${where} before the balloon discarded it: expected the snapshot's bytes, ${got}`);
  if (when === 'after' && !isZero)
    judge.wrong.push(`${where} after the balloon discarded it: expected zeros, ${got}`);
  if (when === 'during' && !isZero && !isSnapshot)
    judge.wrong.push(`${where} while the balloon discarded it: ${got}`);
}

/** When a read of a discarded page happened relative to the balloon's madvise. */
function readWhen(judge: ReadJudge, at: ReadAt): 'before' | 'during' | 'after' {
  if (at.afterDiscard) return 'after';
  const order = judge.order;
  if (order === undefined) return 'during';
  const madvise = order.madvise;
  if (madvise === null) return 'before';
  const step = order.readAt(judge.threads[at.v]!.tid, at.k);
  return step < madvise.start ? 'before' : step > madvise.end ? 'after' : 'during';
}

/**
 * After the run: every touched page holds the snapshot's bytes, or zeros if
 * the balloon discarded it. Runs of touched pages are read with one call and
 * compared with one memcmp against the expected bytes built in one buffer.
 */
function verifyMemory(
  options: SnapshotRestoreOptions,
  vmm: Vmm,
  touched: Uint8Array,
): { verifiedPages: number; pages: number } {
  const { pages, pageSize } = vmm;
  const balloonFirst = pages - balloonPages(options);
  const step = slicePages(pageSize);
  const buffer = new Uint8Array(Math.min(pages, step) * pageSize);
  let verifiedPages = 0;
  let touchedPages = 0;
  for (let first = 0; first < pages; ) {
    if (touched[first] === 0) {
      first++;
      continue;
    }
    let end = first;
    while (end < pages && end - first < step && touched[end] === 1) end++;
    const expected = snapshotSlice(first, end - first, pageSize, buffer);
    // Discarded pages read as zero.
    if (end > balloonFirst) expected.fill(0, (Math.max(first, balloonFirst) - first) * pageSize);
    const actual = vmm.process.read(vmm.guest + first * pageSize, (end - first) * pageSize);
    verifiedPages += matchingPages(actual, expected, pageSize);
    touchedPages += end - first;
    first = end;
  }
  return { verifiedPages, pages: touchedPages };
}

export type { Uffd };

function countSet(flags: Uint8Array): number {
  let count = 0;
  for (const flag of flags) count += flag;
  return count;
}
