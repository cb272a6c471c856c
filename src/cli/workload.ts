/** `faultline workload NAME`: run a workload, print a summary, write a trace and a plot. */
import { InvalidArgumentError } from 'commander';
import type { KernelBackend } from '../api/backend.ts';
import { ModelBackend } from '../api/model-backend.ts';
import { loadHandler } from '../handlers/resolve.ts';
import type { Serve } from '../handlers/session.ts';
import { hostUnavailable, reserveHugePages } from '../host/capabilities.ts';
import { HostBackend } from '../host/host-backend.ts';
import { describeInjections, type InjectionRates } from '../model/inject.ts';
import { DEFAULT_PHYSICAL_MEMORY } from '../model/mem/physmem.ts';
import { parseSize } from '../scenario/schema.ts';
import { TRACE_EVENTS_MAX, Trace } from '../trace/trace.ts';
import {
  type BackgroundSnapshotResult,
  runBackgroundSnapshot,
  type SnapshotMode,
} from '../workloads/background-snapshot.ts';
import { type CompactionMode, type GcCompactionResult, runGcCompaction } from '../workloads/gc-compaction.ts';
import { ACCESS_PATTERNS, type AccessPattern, readWorkingSet } from '../workloads/guest.ts';
import { renderPlot } from '../workloads/plot.ts';
import {
  type PostcopyMode,
  type PostcopyResult,
  postcopyPageSize,
  runPostcopy,
} from '../workloads/postcopy.ts';
import {
  backendClock,
  RESTORE_MODES,
  type RestoreMode,
  runSnapshotRestore,
  type SnapshotRestoreResult,
} from '../workloads/snapshot-restore.ts';
import type { WorkloadStats } from '../workloads/stats.ts';
import { checkGuestBytes } from './bounds.ts';
import { Progress, table } from './output.ts';
import { checkOutputFile } from './output-files.ts';

export interface SnapshotRestoreCommandOptions extends CommonWorkloadOptions {
  mode: string;
  size: string;
  vcpus: number;
  pattern: string;
  prefetchWindow: number;
  balloon: number;
  deflate?: number;
  handler?: string;
  handlerTimeout: number;
  handlerArgs?: string[];
  workingSet?: string;
  recordWorkingSet?: string;
  firecrackerSocket?: string;
}

function choice<T extends string>(option: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`${option}: '${value}' is not one of ${allowed.join(', ')}`);
  }
  return value as T;
}

/**
 * The model machine's RAM for a run that uses `residentBytes` of it (its
 * files and mappings): all of that resident at boot, and room for it plus
 * the zero page and slack, at least the default 8 GiB. A 4 GiB restore (a
 * 4 GiB snapshot file and 4 GiB of guest memory) otherwise ran out of
 * frames on its last page, and its handler's COPY failed with EFAULT.
 */
export function modelMemory(
  residentBytes: number,
  floorBytes = DEFAULT_PHYSICAL_MEMORY.memoryBytesMax,
): { residentBytes: number; memoryBytesMax: number } {
  const slack = 64 * 1024 ** 2 + Math.ceil(residentBytes / 64);
  return { residentBytes, memoryBytesMax: Math.max(floorBytes, residentBytes + slack) };
}

/**
 * The backend a workload runs on. On the model, `residentBytes` of its RAM
 * are made resident at boot, as a machine's RAM is there before anything
 * runs: otherwise the first touch of each frame costs the host a page fault
 * (2-20 µs on this VM) inside whatever touched it, a fault or a COPY.
 */
export function createBackend(
  name: string,
  seed: number,
  version: '6.18' | '7.1',
  inject: InjectionRates = {},
  residentBytes = 0,
): KernelBackend {
  if (name === 'model')
    return new ModelBackend({ seed, version, inject, memory: modelMemory(residentBytes) });
  if (Object.keys(inject).length > 0)
    throw new InvalidArgumentError('--inject: fault injection needs --backend model');
  if (name === 'host') {
    const missing = hostUnavailable();
    if (missing !== undefined) throw new InvalidArgumentError(`--backend host: ${missing}`);
    if (version === '7.1') {
      throw new InvalidArgumentError(
        '--backend host: this mode needs userfaultfd on guest_memfd (Linux 7.1); the host runs 6.18',
      );
    }
    return new HostBackend();
  }
  throw new InvalidArgumentError(`--backend: '${name}' is not one of model, host`);
}

function fmt(n: number, digits = 1): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** snapshot-restore's options, checked before anything runs. */
function restoreOptions(options: SnapshotRestoreCommandOptions) {
  const mode = choice<RestoreMode>('--mode', options.mode, RESTORE_MODES);
  const pattern = choice<AccessPattern>('--pattern', options.pattern, ACCESS_PATTERNS);
  const guestBytes = parseSize(options.size);
  if (!Number.isFinite(guestBytes) || guestBytes <= 0) {
    throw new InvalidArgumentError(`--size: '${options.size}' is not a size such as 64M or 1G`);
  }
  checkGuestBytes('--size', guestBytes);
  if (options.vcpus < 1 || options.vcpus > 64) throw new InvalidArgumentError('--vcpus: between 1 and 64');
  const pageSize = mode === 'hugetlb' ? 2 * 1024 * 1024 : 4096;
  const workingSet =
    options.workingSet === undefined ? undefined : readWorkingSet(options.workingSet, pageSize);
  if (pattern === 'working-set' && workingSet === undefined) {
    throw new InvalidArgumentError('--pattern working-set needs --working-set FILE');
  }
  if (options.recordWorkingSet !== undefined)
    checkOutputFile('--record-working-set', options.recordWorkingSet);
  if (options.firecrackerSocket !== undefined) {
    if (options.backend !== 'host') {
      throw new InvalidArgumentError(
        '--firecracker-socket needs --backend host: the handshake passes a real userfaultfd over a Unix socket',
      );
    }
    if (mode !== 'anon' && mode !== 'hugetlb') {
      throw new InvalidArgumentError(`--firecracker-socket: mode ${mode} is not supported (anon or hugetlb)`);
    }
  }
  const handlerArgs = options.handlerArgs ?? [];
  if (options.handler === undefined && handlerArgs.length > 0)
    throw new InvalidArgumentError(`'${handlerArgs[0]}': arguments after -- are for a --handler binary`);
  if (!(options.handlerTimeout > 0))
    throw new InvalidArgumentError('--handler-timeout: a positive number of milliseconds');
  if (options.backend === 'host' && mode === 'hugetlb') {
    // The guest is private hugetlb: one huge page per page of the run, reserved up front.
    const reason = reserveHugePages(guestBytes / (2 * 1024 * 1024));
    if (reason !== undefined) throw new InvalidArgumentError(`--mode hugetlb: ${reason}`);
  }
  return { mode, pattern, guestBytes, workingSet };
}

export async function snapshotRestoreCommand(
  options: SnapshotRestoreCommandOptions,
  out: (line: string) => void,
): Promise<number> {
  const checked = restoreOptions(options);
  const { mode, pattern, guestBytes } = checked;
  const handler =
    options.handler === undefined
      ? undefined
      : (
          await loadHandler(options.handler, {
            args: options.handlerArgs ?? [],
            timeoutMs: options.handlerTimeout,
          })
        ).serve;
  const verified = (result: SnapshotRestoreResult) =>
    result.verifiedPages === result.pages && result.wrongReads.length === 0;
  return runWorkload(
    { ...options, mode, size: guestBytes },
    {
      workload: 'snapshot-restore',
      label: `restoring ${options.size} (${mode})`,
      // guest_memfd userfaultfd needs the final vm_uffd_ops: emulate 7.1 for those modes.
      version: mode.startsWith('gmem') ? '7.1' : '6.18',
      // The handler's session reads the backend's clock: the trace is on it too.
      backendClock: true,
      // The snapshot file and the guest memory.
      residentBytes: 2 * guestBytes,
      title: `${options.size} guest, mode ${mode}, ${options.vcpus} vCPUs, ${pattern}`,
      run: (context) => restoreRun(options, checked, handler, context),
      verified,
      json: (result) => ({
        handler: options.handler ?? 'built-in',
        wrongReads: result.wrongReads,
        guestBytes,
        vcpus: options.vcpus,
        pattern,
        verifiedPages: result.verifiedPages,
        touchedPages: result.pages,
        firecrackerSocket: options.firecrackerSocket ?? null,
      }),
      rows: (result) => restoreRows(result.stats, options.backend === 'model'),
      verdict: (result) => restoreVerdict(result, verified(result)),
    },
    out,
  );
}

/** The snapshot-restore run of `faultline workload snapshot-restore`, from its checked options. */
function restoreRun(
  options: SnapshotRestoreCommandOptions,
  { mode, pattern, guestBytes, workingSet }: ReturnType<typeof restoreOptions>,
  handler: Serve | undefined,
  { backend, trace, progress }: WorkloadContext,
): Promise<SnapshotRestoreResult> {
  // Flows pair a fault with its fill by page: a hugetlb fault's page is 2 MiB.
  trace.flowPageBytes = mode === 'hugetlb' ? 2 * 1024 * 1024 : 4096;
  return runSnapshotRestore({
    backend,
    mode,
    guestBytes,
    vcpus: options.vcpus,
    pattern,
    seed: options.seed,
    prefetchWindow: options.prefetchWindow,
    balloonPages: options.balloon,
    ...(options.deflate === undefined ? {} : { deflatePages: options.deflate }),
    ...(handler === undefined ? {} : { handler }),
    ...(workingSet === undefined ? {} : { workingSet }),
    ...(options.recordWorkingSet === undefined ? {} : { recordWorkingSet: options.recordWorkingSet }),
    ...(options.firecrackerSocket === undefined ? {} : { firecrackerSocket: options.firecrackerSocket }),
    trace,
    progress,
  });
}

function restoreVerdict(result: SnapshotRestoreResult, verified: boolean): string[] {
  const lines = [
    `verified: ${result.verifiedPages}/${result.pages} touched pages ` +
      `${verified ? 'match the snapshot' : 'DIFFER from the snapshot'}`,
  ];
  for (const line of result.wrongReads.slice(0, 10)) lines.push(`wrong bytes: ${line}`);
  if (result.wrongReads.length > 10) lines.push(`wrong bytes: ... and ${result.wrongReads.length - 10} more`);
  return lines;
}

function restoreRows(stats: WorkloadStats, modelClock: boolean): string[][] {
  const rows: string[][] = [['faults', 'count']];
  for (const [kind, n] of stats.faultsByKind) rows.push([`  ${kind}`, count(n)]);
  rows.push(['  total', count(stats.faults)]);
  if (stats.prefetched > 0) rows.push(['pages prefetched', count(stats.prefetched)]);
  if (stats.removeEvents > 0) {
    rows.push(['REMOVE events', count(stats.removeEvents)]);
    rows.push(['faults deferred (EAGAIN)', count(stats.deferredFaults)]);
  }
  rows.push(['bytes moved', mib(stats.bytesMoved)]);
  stats.blockedMs.forEach((ms, v) => {
    rows.push(blockedRow(`vcpu${v} blocked`, ms));
  });
  if (stats.samples.length === 0 && stats.untimedFaults > 0) {
    rows.push(['latency', 'n/a (the handler reports none)']);
    return rows;
  }
  // On the model, latencies are on the model's clock (nominal costs per step and system call).
  rows.push(...latencyRows(modelClock ? 'latency (model clock)' : 'latency', stats.latencyPercentiles()));
  return rows;
}

// ---------------------------------------------------------------------------------------------------------
// postcopy, background-snapshot, gc-compaction
// ---------------------------------------------------------------------------------------------------------

/** Options every workload command takes. */
interface CommonWorkloadOptions {
  backend: string;
  seed: number;
  trace?: string;
  plot?: string;
  json: boolean;
  /** --inject NAME:RATE, collected (model only). */
  inject?: InjectionRates;
}

/** What the model injected (for a summary's JSON), or nothing when injection was off. */
function injectionJson(backend: KernelBackend): Record<string, unknown> {
  if (!(backend instanceof ModelBackend) || !backend.kernel.injector.active) return {};
  return { injections: backend.kernel.injector.report() };
}

/** The summary's line on what the model injected, if anything was switched on. */
function injectionLines(backend: KernelBackend): string[] {
  if (!(backend instanceof ModelBackend) || !backend.kernel.injector.active) return [];
  return [describeInjections(backend.kernel.injector.report())];
}

/** A commander argument parser for sizes: '64M', '1G', '4096'. */
export function sizeArgument(value: string): number {
  const bytes = parseSize(value);
  if (!Number.isInteger(bytes) || bytes <= 0)
    throw new InvalidArgumentError(`'${value}' is not a size such as 64M or 1G`);
  return checkGuestBytes(null, bytes);
}

/** A commander argument parser for percentages (integers 0 to 100). */
export function percentArgument(value: string): number {
  const percent = Number(value);
  if (!Number.isInteger(percent) || percent < 0 || percent > 100)
    throw new InvalidArgumentError(`'${value}' is not a percentage from 0 to 100`);
  return percent;
}

function mib(bytes: number): string {
  return `${fmt(bytes / 2 ** 20)} MiB`;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

function latencyRows(
  label: string,
  latency: { p50: number; p90: number; p99: number; max: number },
): string[][] {
  return [
    [`${label} p50`, `${fmt(latency.p50)} µs`],
    [`${label} p90`, `${fmt(latency.p90)} µs`],
    [`${label} p99`, `${fmt(latency.p99)} µs`],
    [`${label} max`, `${fmt(latency.max)} µs`],
  ];
}

function inRange(option: string, value: number, min: number, max: number): number {
  if (value < min || value > max)
    throw new InvalidArgumentError(`${option}: ${value} is not between ${min} and ${max}`);
  return value;
}

/** What a workload command runs on: the backend, the trace, and a progress callback. */
interface WorkloadContext {
  readonly backend: KernelBackend;
  readonly trace: Trace;
  readonly progress: (done: number, total: number) => void;
}

/**
 * What one workload command adds to the skeleton every workload command
 * shares (`runWorkload`): the run itself and what its summary says. The
 * skeleton boots the backend, writes the trace and the plot, reports the
 * phases, the wall time and the fault rate over the main phase, and turns
 * the verification into the exit code.
 */
interface WorkloadSpec<R extends { readonly stats: WorkloadStats }> {
  /** The workload's name, as in `faultline workload NAME`. */
  readonly workload: string;
  /** The progress bar's label. */
  readonly label: string;
  /** The model kernel version the mode needs (guest_memfd userfaultfd: 7.1). */
  readonly version?: '6.18' | '7.1';
  /** The workload's samples and trace events are on the backend's clock (the model's own), not wall time. */
  readonly backendClock?: boolean;
  /** The model's RAM the run uses (its files and mappings), made resident at boot. */
  readonly residentBytes?: number;
  /** Runs the workload; checks that need the backend go here. */
  run(context: WorkloadContext): Promise<R>;
  /** What the plot's title and the summary's first line say, before the backend's name. */
  readonly title: string;
  /** Whether every check passed (exit code 0). */
  verified(result: R): boolean;
  /** The workload's own fields of the JSON document. */
  json(result: R): Record<string, unknown>;
  /** The summary table's rows; the phases, wall time and fault rate follow them. */
  rows(result: R): string[][];
  /** Lines after the table: the verification's verdict. */
  verdict(result: R): string[];
}

/** A trace streamed into `file` as the run goes (or a disabled one), its process named. */
function openTrace(file: string | undefined, processName: string, originMs?: number): Trace {
  const trace = new Trace(1, file !== undefined, {
    ...(file === undefined ? {} : { file }),
    ...(originMs === undefined ? {} : { originMs }),
  });
  trace.nameProcess(processName);
  return trace;
}

function cappedLine(file: string, dropped: number): string {
  return `trace: ${file} keeps the first ${TRACE_EVENTS_MAX} events; ${dropped} later events were dropped`;
}

/** Trace thread id of the workload's phases (setup, the main phase, verify). */
const PHASES_TID = 2_000_000;

/**
 * Boots the backend, runs the workload, writes the trace and the plot, and
 * prints the summary (or one JSON document). Returns the exit code.
 */
async function runWorkload<R extends { readonly stats: WorkloadStats }>(
  options: CommonWorkloadOptions & { size: number; mode: string },
  spec: WorkloadSpec<R>,
  out: (line: string) => void,
): Promise<number> {
  // Checked before the run, not after it.
  if (options.size % 4096 !== 0)
    throw new InvalidArgumentError(`--size: ${options.size} bytes is not a multiple of 4 KiB`);
  if (options.plot !== undefined && !/\.(svg|png)$/.test(options.plot))
    throw new InvalidArgumentError(`--plot: ${options.plot}: the file must end in .svg or .png`);
  if (options.trace !== undefined) checkOutputFile('--trace', options.trace);
  if (options.plot !== undefined) checkOutputFile('--plot', options.plot);
  const startedMs = performance.now();
  const backend = createBackend(
    options.backend,
    options.seed,
    spec.version ?? '6.18',
    options.inject,
    spec.residentBytes,
  );
  // A run timed by the backend's clock (the model's, on the model) has its trace on that clock.
  const origin = spec.backendClock === true ? backendClock(backend)() : undefined;
  const trace = openTrace(
    options.trace,
    `faultline ${spec.workload} ${options.mode} (${options.backend})`,
    origin,
  );
  if (backend instanceof ModelBackend) backend.kernel.tracer = trace;
  const bootMs = performance.now() - startedMs;
  const progress = new Progress(spec.label, !options.json && process.stderr.isTTY === true);
  const result = await spec.run({ backend, trace, progress: (done, total) => progress.update(done, total) });
  progress.finish();
  const { stats } = result;
  const outputStartMs = performance.now();
  const footer = await writeOutputs(options, {
    workload: spec.workload,
    title: spec.title,
    trace,
    stats,
    backend: backend.describe(),
  });
  const outputMs = performance.now() - outputStartMs;
  const elapsedMs = performance.now() - startedMs;
  printSummary(options, spec, { result, backend, footer, times: { bootMs, outputMs, elapsedMs } }, out);
  return spec.verified(result) ? 0 : 1;
}

/** What a finished run hands the summary. */
interface FinishedRun<R> {
  readonly result: R;
  readonly backend: KernelBackend;
  /** The lines naming the trace and plot files written. */
  readonly footer: readonly string[];
  readonly times: { bootMs: number; outputMs: number; elapsedMs: number };
}

/** Prints a finished run's summary table and verdict, or its one JSON document. */
function printSummary<R extends { readonly stats: WorkloadStats }>(
  options: CommonWorkloadOptions & { mode: string },
  spec: WorkloadSpec<R>,
  { result, backend, footer, times }: FinishedRun<R>,
  out: (line: string) => void,
): void {
  const { stats } = result;
  if (options.json) {
    out(
      JSON.stringify(
        {
          version: 1,
          workload: spec.workload,
          backend: backend.describe(),
          mode: options.mode,
          ...spec.json(result),
          elapsedMs: Math.round(times.elapsedMs),
          bootMs: Math.round(times.bootMs),
          outputMs: Math.round(times.outputMs),
          ...stats.toJson(),
          ...injectionJson(backend),
          trace: options.trace ?? null,
          plot: options.plot ?? null,
        },
        null,
        2,
      ),
    );
    return;
  }
  out(`${spec.workload}: ${spec.title} — ${backend.describe()}`);
  out('');
  out(table([...spec.rows(result), ...phaseRows(stats, times)]));
  out('');
  for (const line of spec.verdict(result)) out(line);
  for (const line of injectionLines(backend)) out(line);
  if (footer.length > 0) out('');
  for (const line of footer) out(line);
}

/**
 * The phases of a run and the fault rate over its main phase. Boot (the
 * backend) and output (trace, plot) are the skeleton's own; the rest is
 * what the workload timed.
 */
export function phaseRows(
  stats: WorkloadStats,
  times: { bootMs: number; outputMs: number; elapsedMs: number },
): string[][] {
  const rows: string[][] = [['phases', '']];
  rows.push(['  boot', `${fmt(times.bootMs)} ms`]);
  for (const phase of stats.phases) {
    const main = phase.name === stats.mainPhase ? ' (faults)' : '';
    rows.push([`  ${phase.name}${main}`, `${fmt(phase.endMs - phase.startMs)} ms`]);
  }
  if (times.outputMs >= 0.05) rows.push(['  trace + plot', `${fmt(times.outputMs)} ms`]);
  rows.push(['wall time', `${fmt(times.elapsedMs)} ms`]);
  const rate = stats.faultRate;
  rows.push([`fault rate (${stats.mainPhase})`, Number.isNaN(rate) ? 'n/a' : `${fmt(rate, 0)} faults/s`]);
  return rows;
}

/** Writes the trace (with the run's phases) and the plot if asked; the footer lines that name them. */
async function writeOutputs(
  options: CommonWorkloadOptions & { mode: string },
  run: { workload: string; title: string; trace: Trace; stats: WorkloadStats; backend: string },
): Promise<string[]> {
  const lines: string[] = [];
  if (options.trace !== undefined) {
    run.trace.nameThread(PHASES_TID, 'workload phases');
    for (const phase of run.stats.phases)
      run.trace.span({
        name: phase.name,
        cat: 'phase',
        tid: PHASES_TID,
        startMs: phase.clockStartMs,
        endMs: phase.clockEndMs,
      });
    const dropped = run.trace.write(options.trace, {
      workload: run.workload,
      mode: options.mode,
      backend: run.backend,
    });
    if (dropped > 0) lines.push(cappedLine(options.trace, dropped));
    lines.push(`trace: ${options.trace} (Chrome trace JSON; open in https://ui.perfetto.dev)`);
  }
  if (options.plot !== undefined) {
    await renderPlot(run.stats, `${run.workload}: ${run.title} (${run.backend})`, options.plot);
    lines.push(`plot:  ${options.plot}`);
  }
  return lines;
}

function blockedRow(label: string, ms: number): string[] {
  return [label, Number.isNaN(ms) ? 'n/a (not measured on this backend)' : `${fmt(ms)} ms`];
}

export interface PostcopyCommandOptions extends CommonWorkloadOptions {
  mode: PostcopyMode;
  size: number;
  vcpus: number;
  pattern: 'sequential' | 'random';
  dirty: number;
  preempt: boolean;
  bandwidth: number;
  timeout: number;
}

/** Guest RAM on hugetlbfs is preallocated: as many free huge pages as the run has pages, or a usage error. */
function reserveHuge(backend: KernelBackend, options: PostcopyCommandOptions, pageSize: number): void {
  const needed = options.size / pageSize;
  if (backend instanceof ModelBackend) {
    const free = backend.kernel.memory.hugePagesFree;
    if (needed > free) {
      throw new InvalidArgumentError(
        `--size: ${mib(options.size)} needs ${needed} huge pages, the model's hugetlb pool has ${free} (${mib(free * pageSize)})`,
      );
    }
    return;
  }
  const reason = reserveHugePages(needed);
  if (reason !== undefined) throw new InvalidArgumentError(`--mode ${options.mode}: ${reason}`);
}

export async function postcopyCommand(
  options: PostcopyCommandOptions,
  out: (line: string) => void,
): Promise<number> {
  inRange('--vcpus', options.vcpus, 1, 64);
  inRange('--timeout', options.timeout, 1, 3600);
  const pageSize = postcopyPageSize(options.mode);
  const huge = options.mode === 'hugetlb' || options.mode === 'hugetlb-missing';
  if (huge && options.size % pageSize !== 0) {
    throw new InvalidArgumentError(
      `--size: ${options.size} bytes is not a multiple of ${mib(pageSize)}, the huge page size of --mode ${options.mode}`,
    );
  }
  const channels = options.preempt ? 'preempt' : 'single channel';
  return runWorkload(
    options,
    {
      workload: 'postcopy',
      label: `migrating ${mib(options.size)} (${options.mode})`,
      // guest_memfd userfaultfd needs the final vm_uffd_ops: emulate 7.1 (the host refuses).
      version: options.mode === 'gmem' ? '7.1' : '6.18',
      title:
        `${mib(options.size)} guest, mode ${options.mode}, ${options.vcpus} vCPUs, ${options.pattern}, ` +
        `${options.dirty}% dirty, ${channels}`,
      run: ({ backend, trace, progress }) => {
        if (huge) reserveHuge(backend, options, pageSize);
        return runPostcopy({
          backend,
          mode: options.mode,
          guestBytes: options.size,
          vcpus: options.vcpus,
          pattern: options.pattern,
          seed: options.seed,
          dirtyPercent: options.dirty,
          preempt: options.preempt,
          bandwidthBytes: options.bandwidth,
          timeoutMs: options.timeout * 1000,
          trace,
          progress,
        });
      },
      verified: (result) => result.verifiedPages === result.pages && result.verifiedReads === result.reads,
      json: (result) => ({
        guestBytes: options.size,
        vcpus: options.vcpus,
        pattern: options.pattern,
        dirtyPercent: options.dirty,
        preempt: options.preempt,
        bandwidthBytes: options.bandwidth,
        switchoverMs: Math.round(result.switchoverMs),
        pages: result.pages,
        precopyPages: result.precopyPages,
        postcopyPages: result.dirtyPages,
        verifiedPages: result.verifiedPages,
        reads: result.reads,
        verifiedReads: result.verifiedReads,
        requests: { ...result.requests, samplesUs: undefined },
      }),
      rows: (result) => postcopyRows(result, options.preempt),
      verdict: (result) => {
        const ok = result.verifiedPages === result.pages && result.verifiedReads === result.reads;
        return [
          `verified: ${result.verifiedPages}/${result.pages} pages and ${result.verifiedReads}/${result.reads} vCPU reads ` +
            `${ok ? 'match the source' : 'DIFFER from the source'}`,
        ];
      },
    },
    out,
  );
}

function postcopyRows(result: PostcopyResult, preempt: boolean): string[][] {
  const { stats, requests } = result;
  const rows: string[][] = [['pages', 'count']];
  rows.push(['  sent in precopy', count(result.precopyPages)]);
  rows.push(['  sent in postcopy', count(result.dirtyPages)]);
  rows.push(['faults', '']);
  for (const [kind, n] of stats.faultsByKind) rows.push([`  ${kind}`, count(n)]);
  rows.push(['  total', count(stats.faults)]);
  rows.push(['page requests', count(requests.count)]);
  rows.push([`  answered${preempt ? ' (preempt)' : ''}`, count(requests.answered.count)]);
  rows.push(['  already on the stream', count(requests.viaStream.count)]);
  rows.push(...latencyRows('request latency', requests.latencyUs));
  if (requests.answered.count > 0)
    rows.push(['  answered p50', `${fmt(requests.answered.latencyUs.p50)} µs`]);
  if (requests.viaStream.count > 0)
    rows.push(['  on the stream p50', `${fmt(requests.viaStream.latencyUs.p50)} µs`]);
  stats.blockedMs.forEach((ms, v) => {
    rows.push(blockedRow(`vcpu${v} blocktime`, ms));
  });
  rows.push(...latencyRows('fault latency', stats.latencyPercentiles()));
  rows.push(['bytes in postcopy', mib(stats.bytesMoved)]);
  return rows;
}

export interface BackgroundSnapshotCommandOptions extends CommonWorkloadOptions {
  mode: SnapshotMode;
  size: number;
  vcpus: number;
  writePercent: number;
  rounds: number;
  chunk: number;
}

export async function backgroundSnapshotCommand(
  options: BackgroundSnapshotCommandOptions,
  out: (line: string) => void,
): Promise<number> {
  inRange('--vcpus', options.vcpus, 1, 64);
  inRange('--rounds', options.rounds, 1, 100);
  inRange('--chunk', options.chunk, 1, 1 << 20);
  return runWorkload(
    options,
    {
      workload: 'background-snapshot',
      label: `saving ${mib(options.size)} (${options.mode})`,
      title:
        `${mib(options.size)} guest, mode ${options.mode}, ${options.vcpus} vCPUs, ` +
        `${options.rounds} rounds writing ${options.writePercent}%`,
      run: ({ backend, trace, progress }) =>
        runBackgroundSnapshot({
          backend,
          mode: options.mode,
          guestBytes: options.size,
          vcpus: options.vcpus,
          seed: options.seed,
          writePercent: options.writePercent,
          rounds: options.rounds,
          chunkPages: options.chunk,
          trace,
          progress,
        }),
      verified: (result) =>
        result.imageVerifiedPages === result.pages && result.memoryVerifiedPages === result.pages,
      json: (result) => ({
        guestBytes: options.size,
        vcpus: options.vcpus,
        writePercent: options.writePercent,
        rounds: options.rounds,
        chunkPages: options.chunk,
        pages: result.pages,
        savedByFault: result.savedByFault,
        savedByBackground: result.savedByBackground,
        guestWrites: result.guestWrites,
        imageVerifiedPages: result.imageVerifiedPages,
        imageDifferingPages: result.imageDifferingPages,
        memoryVerifiedPages: result.memoryVerifiedPages,
      }),
      rows: (result) => {
        const rows: string[][] = [['pages saved', 'count']];
        rows.push(['  on a WP fault', count(result.savedByFault)]);
        rows.push(['  in the background', count(result.savedByBackground)]);
        rows.push(['guest writes', count(result.guestWrites)]);
        rows.push(['WP faults', count(result.stats.faults)]);
        result.stats.blockedMs.forEach((ms, v) => {
          rows.push(blockedRow(`vcpu${v} blocked`, ms));
        });
        rows.push(...latencyRows('save+unprotect', result.stats.latencyPercentiles()));
        return rows;
      },
      verdict: (result) => snapshotVerdict(result, options.mode),
    },
    out,
  );
}

function snapshotVerdict(result: BackgroundSnapshotResult, mode: SnapshotMode): string[] {
  const lines: string[] = [];
  const imageOk = result.imageVerifiedPages === result.pages;
  lines.push(
    imageOk
      ? `image: ${result.pages}/${result.pages} pages match memory at the snapshot instant`
      : `image: ${result.pages - result.imageVerifiedPages} of ${result.pages} pages DIFFER from memory at the ` +
          `snapshot instant (first: ${result.imageDifferingPages.join(', ')})`,
  );
  const memoryOk = result.memoryVerifiedPages === result.pages;
  lines.push(
    `guest memory: ${result.memoryVerifiedPages}/${result.pages} pages ` +
      `${memoryOk ? 'match the snapshot plus every guest write' : 'DIFFER from the snapshot plus every guest write'}`,
  );
  if (!imageOk && mode === 'no-prefault') {
    lines.push('');
    lines.push('As expected: without pre-faulting or WP_UNPOPULATED, write-protect skips empty anon pages,');
    lines.push('so guest writes to them were never trapped and the image holds the written bytes.');
  }
  return lines;
}

export interface GcCompactionCommandOptions extends CommonWorkloadOptions {
  mode: CompactionMode;
  size: number;
  mutators: number;
  live: number;
  reads: number;
  chunk: number;
}

export async function gcCompactionCommand(
  options: GcCompactionCommandOptions,
  out: (line: string) => void,
): Promise<number> {
  inRange('--mutators', options.mutators, 1, 64);
  inRange('--live', options.live, 1, 100);
  inRange('--chunk', options.chunk, 1, 1 << 20);
  const verified = (result: GcCompactionResult) =>
    result.verifiedPages === result.toPages && result.verifiedReads === result.reads;
  return runWorkload(
    options,
    {
      workload: 'gc-compaction',
      label: `compacting ${mib(options.size)} (${options.mode})`,
      title:
        `${mib(options.size)} from-space, ${options.live}% live, mode ${options.mode}, ` +
        `${options.mutators} mutators`,
      run: ({ backend, trace, progress }) =>
        runGcCompaction({
          backend,
          mode: options.mode,
          heapBytes: options.size,
          mutators: options.mutators,
          seed: options.seed,
          livePercent: options.live,
          readsPerMutator: options.reads,
          chunkPages: options.chunk,
          trace,
          progress,
        }),
      verified,
      json: (result) => {
        const { stats: _stats, threads: _threads, ...numbers } = result;
        return {
          heapBytes: options.size,
          mutators: options.mutators,
          livePercent: options.live,
          readsPerMutator: options.reads,
          chunkPages: options.chunk,
          ...numbers,
        };
      },
      rows: (result) => compactionRows(result, options.mode),
      verdict: (result) => [
        `verified: ${result.verifiedPages}/${result.toPages} to-space pages and ${result.verifiedReads}/${result.reads} ` +
          `mutator reads ${verified(result) ? 'match the reference compaction' : 'DIFFER from the reference compaction'}`,
      ],
    },
    out,
  );
}

function compactionRows(result: GcCompactionResult, mode: CompactionMode): string[][] {
  const rows: string[][] = [['to-space pages', 'count']];
  rows.push(['  compacted by mutators (SIGBUS)', count(result.compactedByMutators)]);
  rows.push(['  compacted by the compaction thread', count(result.compactedByCompactor)]);
  rows.push(['live objects', count(result.liveObjects)]);
  rows.push(['SIGBUS taken', count(result.sigbus)]);
  if (result.sigbusAlreadyDone > 0) rows.push(['  page compacted already', count(result.sigbusAlreadyDone)]);
  rows.push(['pages allocated', count(result.pagesAllocated)]);
  if (mode === 'move') rows.push(['from-space pages recycled', count(result.pagesRecycled)]);
  result.stats.blockedMs.forEach((ms, v) => {
    rows.push([`mutator${v}: SIGBUS, in handlers`, `${count(result.sigbusPerMutator[v]!)}, ${fmt(ms)} ms`]);
  });
  rows.push(...latencyRows(`UFFDIO_${mode.toUpperCase()}`, result.installUs));
  rows.push(...latencyRows('SIGBUS handler', result.stats.latencyPercentiles()));
  rows.push(['compaction thread busy', `${fmt(result.compactorBusyMs)} ms`]);
  rows.push(['compaction done after', `${fmt(result.compactionMs)} ms`]);
  return rows;
}
