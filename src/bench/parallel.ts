/**
 * The parallel model's scaling measurement: one guest workload run on the
 * in-thread model (today's scheduler), then on parallel vCPUs with one worker
 * and with `vcpus` workers. Each vCPU thread takes an equal, contiguous share
 * of a MISSING-registered anonymous region; per page it takes one MISSING
 * fault (the first read), which an async handler on the main thread resolves
 * with UFFDIO_COPY from a source mapping, and then reads the page
 * `workPerPage` more times (the guest's per-page work). Every read is checked
 * against the source after the run, outside the timing.
 */

import type { ThreadResult } from '../api/backend.ts';
import { ModelBackend } from '../api/model-backend.ts';
import { Process, type ThreadAccess, type Uffd } from '../api/process.ts';
import { allVcpuWorkersExited, type VcpuStats } from '../model/parallel/cpus.ts';
import { UFFDIO_REGISTER_MODE_MISSING } from '../uapi/constants.ts';
import { patternPiece } from './round-trip.ts';

const PAGE = 4096;
const PIECE = 1024 * 1024;

export interface ParallelScalingOptions {
  /** Guest region, a multiple of 4 KiB. */
  readonly bytes: number;
  /** Reads of each page after the faulting one. */
  readonly workPerPage: number;
  /** Threads in the in-thread run and workers in the widest parallel run (default 2). */
  readonly vcpus?: number;
  readonly seed?: number;
  /** Measured runs of each configuration, interleaved; the run with the median wall time is reported (default 1). */
  readonly runs?: number;
  /** First run each configuration once on a sixteenth of the region, so the JIT is warm for all three (default true). */
  readonly warmUp?: boolean;
}

export interface ScalingRun {
  readonly label: string;
  readonly parallel: boolean;
  /** Simulated threads (each a worker when parallel). */
  readonly threads: number;
  readonly faults: number;
  /** Guest accesses (reads) done. */
  readonly accesses: number;
  /** From the first thread's spawn to the last join, worker start-up included. */
  readonly wallMs: number;
  /** From the first thread's spawn to the handler's first fault message (the workers' start-up, when parallel). */
  readonly firstFaultMs: number;
  readonly faultsPerSecond: number;
  readonly accessesPerSecond: number;
  /** vCPU counters (parallel runs). */
  readonly vcpu?: VcpuStats;
}

export interface ParallelScalingResult {
  readonly bytes: number;
  readonly workPerPage: number;
  readonly vcpus: number;
  readonly inThread: ScalingRun;
  readonly parallel1: ScalingRun;
  readonly parallelN: ScalingRun;
  /** Faults per second of one run over another. */
  readonly speedup: {
    /** `vcpus` workers over one worker: the scaling. */
    readonly parallelNOverParallel1: number;
    /** `vcpus` workers over the in-thread model with as many threads. */
    readonly parallelNOverInThread: number;
    readonly parallel1OverInThread: number;
  };
}

/** How one scaling run is shaped. */
interface ScalingOptions {
  readonly bytes: number;
  readonly workPerPage: number;
  readonly threads: number;
  readonly parallel: boolean;
  readonly seed?: number;
}

/** Runs the workload once; throws if a byte read differs from the source. */
export async function runScalingWorkload(options: ScalingOptions): Promise<ScalingRun> {
  const { bytes, threads, parallel } = options;
  if (bytes % PAGE !== 0 || bytes <= 0) throw new RangeError('bytes: a positive multiple of 4 KiB');
  const pages = bytes / PAGE;
  const backend = new ModelBackend({ seed: options.seed ?? 1, parallel });
  const process = new Process(backend.self);
  const uffd = process.userfaultfd();
  uffd.api();
  const area = process.mmap({ length: bytes });
  const source = process.mmap({ length: bytes });
  for (let offset = 0; offset < bytes; offset += PIECE) {
    const length = Math.min(PIECE, bytes - offset);
    process.write(source + offset, patternPiece(offset / PAGE, length));
  }
  uffd.register({ start: area, length: bytes }, UFFDIO_REGISTER_MODE_MISSING);

  const programs = vcpuPrograms(options, area);
  const started = performance.now();
  const spawned = programs.map((program, index) => process.thread(program, `vcpu${index}`));
  const handler = serveCopies(uffd, { area, source, pages });
  const results = await Promise.all(spawned.map((thread) => thread.join()));
  const { firstFaultMs } = await handler;
  const wallMs = performance.now() - started;
  const { faults, accesses } = checkReads(options, results);
  const vcpu = backend.parallel?.stats();
  process.exit();
  if (parallel) await allVcpuWorkersExited();
  const seconds = wallMs / 1000;
  return {
    label: parallel
      ? `parallel, ${threads} worker${threads === 1 ? '' : 's'}`
      : `in-thread, ${threads} threads`,
    parallel,
    threads,
    faults,
    accesses,
    wallMs,
    firstFaultMs: firstFaultMs - started,
    faultsPerSecond: faults / seconds,
    accessesPerSecond: accesses / seconds,
    ...(vcpu === undefined ? {} : { vcpu }),
  };
}

/** Each vCPU's share of the pages, in order, each page read `workPerPage + 1` times. */
function vcpuPrograms({ bytes, workPerPage, threads }: ScalingOptions, area: number): ThreadAccess[][] {
  const pages = bytes / PAGE;
  const programs: ThreadAccess[][] = [];
  for (let thread = 0; thread < threads; thread++) {
    const first = Math.floor((pages * thread) / threads);
    const end = Math.floor((pages * (thread + 1)) / threads);
    const program: ThreadAccess[] = [];
    for (let page = first; page < end; page++) {
      for (let pass = 0; pass <= workPerPage; pass++) {
        program.push({ kind: 'read', address: area + page * PAGE, length: PAGE });
      }
    }
    programs.push(program);
  }
  return programs;
}

/** The handler: COPY each faulting page from the source until every page is served; when the first fault came. */
async function serveCopies(
  uffd: Uffd,
  { area, source, pages }: { area: number; source: number; pages: number },
): Promise<{ firstFaultMs: number }> {
  let served = 0;
  let firstFaultMs = -1;
  while (served < pages) {
    const messages = await uffd.nextMessages();
    if (firstFaultMs < 0) firstFaultMs = performance.now();
    for (const message of messages) {
      if (message.event !== 'pagefault') continue;
      const page = Math.floor((Number(message.address) - area) / PAGE);
      uffd.copy({ dst: area + page * PAGE, src: source + page * PAGE, length: PAGE });
      served++;
    }
  }
  return { firstFaultMs };
}

/** Every vCPU ended done, read the source's bytes, and took one fault per page: the counts. */
function checkReads(
  { bytes, workPerPage, threads }: ScalingOptions,
  results: readonly ThreadResult[],
): { faults: number; accesses: number } {
  const pages = bytes / PAGE;
  let faults = 0;
  let accesses = 0;
  results.forEach((result, thread) => {
    if (result.state !== 'done') throw new Error(`vcpu${thread} ended ${result.state}`);
    faults += result.faults;
    accesses += result.reads.length;
    const first = Math.floor((pages * thread) / threads);
    result.reads.forEach((read, index) => {
      const page = first + Math.floor(index / (workPerPage + 1));
      const expected = patternPiece(page, PAGE);
      if (read.byteLength !== PAGE || !read.every((byte, at) => byte === expected[at])) {
        throw new Error(`vcpu${thread} read ${index} (page ${page}) differs from the source`);
      }
    });
  });
  if (faults !== pages) throw new Error(`${faults} faults for ${pages} pages`);
  return { faults, accesses };
}

/**
 * The same workload in-thread (`vcpus` threads), on one worker and on
 * `vcpus` workers; the speedups compare faults per second. Wall times include
 * starting the workers (about 50 ms each on a quiet machine).
 */
export async function measureParallelScaling(
  options: ParallelScalingOptions,
): Promise<ParallelScalingResult> {
  const vcpus = options.vcpus ?? 2;
  const configurations = [
    { threads: vcpus, parallel: false },
    { threads: 1, parallel: true },
    { threads: vcpus, parallel: true },
  ];
  const seed = options.seed === undefined ? {} : { seed: options.seed };
  if (options.warmUp ?? true) {
    const bytes = Math.max(PAGE * vcpus, Math.floor(options.bytes / 16 / PAGE) * PAGE);
    for (const configuration of configurations) {
      await runScalingWorkload({ ...configuration, ...seed, bytes, workPerPage: options.workPerPage });
    }
  }
  const runs: ScalingRun[][] = [[], [], []];
  for (let run = 0; run < Math.max(1, options.runs ?? 1); run++) {
    for (const [index, configuration] of configurations.entries()) {
      runs[index]!.push(
        await runScalingWorkload({
          ...configuration,
          ...seed,
          bytes: options.bytes,
          workPerPage: options.workPerPage,
        }),
      );
    }
  }
  const [inThread, parallel1, parallelN] = runs.map(medianRun) as [ScalingRun, ScalingRun, ScalingRun];
  return {
    bytes: options.bytes,
    workPerPage: options.workPerPage,
    vcpus,
    inThread,
    parallel1,
    parallelN,
    speedup: {
      parallelNOverParallel1: parallelN.faultsPerSecond / parallel1.faultsPerSecond,
      parallelNOverInThread: parallelN.faultsPerSecond / inThread.faultsPerSecond,
      parallel1OverInThread: parallel1.faultsPerSecond / inThread.faultsPerSecond,
    },
  };
}

function medianRun(runs: readonly ScalingRun[]): ScalingRun {
  const sorted = [...runs].sort((a, b) => a.wallMs - b.wallMs);
  return sorted[(sorted.length - 1) >> 1]!;
}
