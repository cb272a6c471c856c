/**
 * The native side of `faultline bench` (native/bench.cc): a reference
 * userfaultfd handler written in C and a memcpy baseline, each run inside one
 * synchronous addon call on this machine's kernel, so the TypeScript handler
 * and the model can be compared with what the kernel itself allows.
 *
 * A reference run maps its region, starts one faulting pthread (one touch
 * per `bytesPerFault` chunk) and one handler pthread (which resolves the
 * aligned chunk holding each fault), times the faulting thread from its first
 * touch to its last touch completing (CLOCK_MONOTONIC), checks every page,
 * and unmaps and closes everything. The handler tries up to `spin`
 * non-blocking reads before it sleeps in poll(): a sleep/wake pair costs more
 * than a fault on VMs.
 */
import { hostUnavailable, hugePagesRaised, releaseHugePages, reserveHugePages } from './capabilities.ts';
import { type NativeAddon, native, nativeLoadError } from './native.ts';

const KIB = 1024;
const MIB = 1024 * KIB;
const HUGE_PAGE = 2 * MIB;

/**
 * - `missing-copy`: anonymous private memory registered MISSING; UFFDIO_COPY from a patterned source.
 * - `missing-zeropage`: the same resolved with UFFDIO_ZEROPAGE.
 * - `minor-continue`: a shmem memfd whose page cache is filled through a second mapping before the
 *   run, mapped shared and registered MINOR; UFFDIO_CONTINUE.
 * - `wp`: anonymous memory populated before the run, registered WP and write-protected; the faulting
 *   thread writes, the handler un-protects (UFFDIO_WRITEPROTECT mode 0, which wakes).
 * - `hugetlb-copy`: MAP_HUGETLB anonymous private 2 MiB pages registered MISSING; UFFDIO_COPY.
 */
export type ReferenceRow = 'missing-copy' | 'missing-zeropage' | 'minor-continue' | 'wp' | 'hugetlb-copy';

export const REFERENCE_ROWS: readonly ReferenceRow[] = [
  'missing-copy',
  'missing-zeropage',
  'minor-continue',
  'wp',
  'hugetlb-copy',
];

/** Non-blocking reads the C handler tries before it sleeps in poll() (kBenchDefaultSpin in native/bench.h). */
export const DEFAULT_REFERENCE_SPIN = 2000;

/** The page size of a row's memory: the smallest (and default) bytesPerFault. */
export function referencePageSize(row: ReferenceRow): number {
  return row === 'hugetlb-copy' ? HUGE_PAGE : 4 * KIB;
}

export type ReferencePin = 'none' | 'same' | 'split';

export interface ReferenceConfig {
  readonly row: ReferenceRow;
  /** The region's size: a positive multiple of bytesPerFault. */
  readonly regionBytes: number;
  /**
   * Bytes resolved per fault, a multiple of the row's page size (the default): the faulting thread
   * touches one byte per chunk and the handler resolves the whole chunk (aligned to the region's start).
   */
  readonly bytesPerFault?: number;
  /** Non-blocking reads before the handler sleeps in poll(); 0 sleeps at once. Default DEFAULT_REFERENCE_SPIN. */
  readonly spin?: number;
  /** Faulting threads, each touching an equal slice of the region (default 1); the handler is one thread. */
  readonly vcpus?: number;
  /**
   * Thread placement: `none` (the default) leaves it to the scheduler; `same` pins both threads to the
   * calling thread's CPU; `split` pins the faulting thread there and the handler to the next CPU.
   */
  readonly pin?: ReferencePin;
}

export interface ReferenceResult {
  readonly row: ReferenceRow;
  readonly regionBytes: number;
  readonly bytesPerFault: number;
  readonly spin: number;
  readonly pin: ReferencePin;
  /** Page-fault messages the handler resolved: expectedFaults when the run went well. */
  readonly faults: number;
  /** regionBytes / bytesPerFault. */
  readonly expectedFaults: number;
  /** Times the handler ran out of spins and called poll() (which may have slept). */
  readonly polls: number;
  /** First touch to last touch completed, in nanoseconds. */
  readonly ns: number;
  readonly faultsPerSecond: number;
  readonly usPerFault: number;
  readonly mibPerSecond: number;
  /**
   * What went wrong (the failing call with its errno, a signal in the faulting thread, or the first
   * page whose contents differ), or null. Set as well when the row is unavailable.
   */
  readonly error: string | null;
  /** Why the row cannot run on this host (no userfaultfd, no hugetlb pages), or null: nothing ran then. */
  readonly unavailable: string | null;
}

export interface MemcpyConfig {
  readonly regionBytes: number;
  /** Bytes per memcpy call (default 4 KiB). */
  readonly chunkBytes?: number;
}

export interface MemcpyResult {
  readonly regionBytes: number;
  readonly chunkBytes: number;
  /** Into a destination faulted in (and written) before timing: memory bandwidth. */
  readonly ns: number;
  /** Into a fresh anonymous destination: each page faulted in by the kernel during the copy. */
  readonly nsFresh: number;
  readonly mibPerSecond: number;
  readonly mibPerSecondFresh: number;
  /** The failing call with its errno, or a copy that differs from its source; null when it went well. */
  readonly error: string | null;
}

function addon(): NativeAddon {
  if (native === null) throw new Error(`host backend unavailable: ${nativeLoadError ?? 'no native addon'}`);
  return native;
}

function perSecond(count: number, ns: number): number {
  return ns > 0 ? (count * 1e9) / ns : 0;
}

/**
 * Runs one row of the C reference handler (blocking the event loop for the run). hugetlb-copy makes
 * sure enough 2 MiB pages can be had (reserveHugePages) and gives back what it raised afterwards.
 */
export function runReferenceHandler(config: ReferenceConfig): ReferenceResult {
  const bytesPerFault = config.bytesPerFault ?? referencePageSize(config.row);
  const spin = config.spin ?? DEFAULT_REFERENCE_SPIN;
  const expectedFaults = bytesPerFault > 0 ? Math.floor(config.regionBytes / bytesPerFault) : 0;
  const result = (
    raw: { faults: number; polls: number; ns: number; error: string | null },
    unavailable: string | null,
  ): ReferenceResult => ({
    row: config.row,
    regionBytes: config.regionBytes,
    bytesPerFault,
    spin,
    pin: config.pin ?? 'none',
    faults: raw.faults,
    expectedFaults,
    polls: raw.polls,
    ns: raw.ns,
    faultsPerSecond: perSecond(raw.faults, raw.ns),
    usPerFault: raw.faults > 0 ? raw.ns / 1000 / raw.faults : 0,
    mibPerSecond: perSecond((raw.faults * bytesPerFault) / MIB, raw.ns),
    error: raw.error,
    unavailable,
  });
  const skip = (reason: string) => result({ faults: 0, polls: 0, ns: 0, error: reason }, reason);

  const reason = hostUnavailable();
  if (reason !== undefined) return skip(reason);
  let raised = false;
  if (config.row === 'hugetlb-copy') {
    const before = hugePagesRaised();
    const hugeReason = reserveHugePages(Math.ceil(config.regionBytes / HUGE_PAGE));
    if (hugeReason !== undefined) return skip(hugeReason);
    raised = !before && hugePagesRaised();
  }
  try {
    const raw = addon().benchHandler({
      row: config.row,
      regionBytes: config.regionBytes,
      bytesPerFault,
      spin,
      vcpus: config.vcpus ?? 1,
      pin: config.pin ?? 'none',
    });
    return result(raw, null);
  } finally {
    if (raised) releaseHugePages();
  }
}

/**
 * memcpy of a source buffer into a destination in chunkBytes pieces, twice: into a destination
 * prefaulted before timing (bandwidth), and into a fresh one (bandwidth plus the kernel's faults).
 * Throws when the native addon is not available.
 */
export function runMemcpyBaseline(config: MemcpyConfig): MemcpyResult {
  const chunkBytes = config.chunkBytes ?? 4 * KIB;
  const raw = addon().benchMemcpy({ regionBytes: config.regionBytes, chunkBytes });
  const mib = config.regionBytes / MIB;
  return {
    regionBytes: config.regionBytes,
    chunkBytes,
    ns: raw.ns,
    nsFresh: raw.nsFresh,
    mibPerSecond: perSecond(mib, raw.ns),
    mibPerSecondFresh: perSecond(mib, raw.nsFresh),
    error: raw.error,
  };
}
