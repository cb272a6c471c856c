/**
 * `faultline bench`: every row on the model, on the host with the TypeScript
 * handler, and on the host with the C reference handler, in one run, as
 * medians and ratios; then the scale rows and the targets.
 */

import { cpus, release } from 'node:os';
import type { KernelBackend } from '../api/backend.ts';
import { ModelBackend } from '../api/model-backend.ts';
import { runMemcpyBaseline, runReferenceHandler } from '../host/bench.ts';
import { hostUnavailable, reserveHugePages } from '../host/capabilities.ts';
import { HostBackend } from '../host/host-backend.ts';
import { BENCH_HANDLER_PATH, binaryBenchUnavailable, runBinaryHandler } from './binary.ts';
import {
  type ExploreBenchResult,
  type ExploreBinaryBenchResult,
  measureExplore,
  measureExploreBinary,
} from './explore.ts';
import { measureParallelScaling } from './parallel.ts';
import { runRoundTrip } from './round-trip.ts';
import { findRow, ROWS, type Row } from './rows.ts';
import { type MetadataResult, measureMetadata, measureSparse, type SparseResult } from './scale.ts';

export const BENCH_JSON_VERSION = 1;

const MIB = 1024 * 1024;
const TIB = 1024 * 1024 * MIB;

export type BackendId = 'model' | 'tsHost' | 'cHost';
export const BACKEND_IDS: readonly BackendId[] = ['model', 'tsHost', 'cHost'];
export const BACKEND_LABELS: Record<BackendId, string> = {
  model: 'model',
  tsHost: 'host, TypeScript handler',
  cHost: 'host, C handler',
};

export interface BenchOptions {
  /** Smaller regions and fewer runs. */
  readonly quick: boolean;
  /** Guest region per row (default 256 MiB, 32 MiB with quick). */
  readonly regionBytes?: number;
  /** Measured runs per row and backend; the median is reported. */
  readonly runs?: number;
  /** Only these rows (ids from rows.ts). */
  readonly rows?: readonly string[];
  /** Skip the scale rows. */
  readonly skipScale?: boolean;
  /** Called before each measurement, for progress. */
  readonly onStep?: (label: string, done: number, total: number) => void;
}

export interface Measurement {
  readonly faults: number;
  /** Every run's wall time, in nanoseconds; the median is the figure. */
  readonly runsNs: readonly number[];
  readonly faultsPerSecond: number;
  readonly mibPerSecond: number;
  readonly usPerFault: number;
}

export interface Unavailable {
  readonly unavailable: string;
  /** The measurement ran and went wrong (a failed call or a wrong byte), rather than the host lacking something. */
  readonly failed?: boolean;
}

export type Cell = Measurement | Unavailable;

export interface RowResult {
  readonly id: string;
  readonly title: string;
  readonly bytesPerFault: number;
  readonly regionBytes: number;
  readonly results: Record<BackendId, Cell>;
  /** model / C host and TypeScript host / C host, in faults per second. */
  readonly ratios: { readonly modelOverC: number | null; readonly tsOverC: number | null };
}

export interface MemcpyResult {
  readonly chunkBytes: number;
  readonly regionBytes: number;
  /** C memcpy into memory already touched: the bandwidth bound. */
  readonly cPrefaulted: number | null;
  /** C memcpy into fresh memory (each page faulted in by the host kernel). */
  readonly cFresh: number | null;
  /** TypedArray.set into an already touched buffer: what the model's copies can reach. */
  readonly javascript: number;
}

export interface ScaleResult {
  readonly sparse: { readonly model: SparseResult; readonly host: SparseResult | Unavailable };
  readonly metadata: MetadataResult;
  readonly twoVcpus: {
    readonly row: string;
    readonly model: Cell;
    readonly tsHost: Cell;
    readonly cHost: Cell;
  };
  readonly parallel: Awaited<ReturnType<typeof measureParallelScaling>>;
  /** faultline explore: schedules per second, one worker and every core. */
  readonly explore: ExploreBenchResult;
  /** The same with the C handler binary (null when it is not built). */
  readonly exploreBinary: ExploreBinaryBenchResult | null;
}

/** The C test handler binary on the model (seccomp interception) and on the host kernel. */
export interface BinaryHandlerResult {
  readonly regionBytes: number;
  readonly model: Cell;
  readonly host: Cell;
  /** model / host, in faults per second. */
  readonly modelOverHost: number | null;
  /** Trapped calls the model answered per fault. */
  readonly callsPerFault: number | null;
}

export interface Target {
  readonly name: string;
  readonly value: number | null;
  readonly goal: string;
  readonly met: boolean | null;
}

export interface BenchReport {
  readonly version: number;
  readonly machine: { readonly kernel: string; readonly cpus: number; readonly node: string };
  readonly config: { readonly quick: boolean; readonly regionBytes: number; readonly runs: number };
  readonly host: { readonly available: boolean; readonly reason?: string };
  readonly rows: readonly RowResult[];
  readonly memcpy: MemcpyResult;
  /** Null when the test handler is not built. */
  readonly binaryHandler: BinaryHandlerResult | null;
  readonly scale: ScaleResult | null;
  readonly targets: readonly Target[];
  readonly seconds: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function measurement(faults: number, bytes: number, runsNs: readonly number[]): Measurement {
  const seconds = median(runsNs) / 1e9;
  return {
    faults,
    runsNs,
    faultsPerSecond: faults / seconds,
    mibPerSecond: bytes / MIB / seconds,
    usPerFault: (seconds * 1e6) / faults,
  };
}

export function isMeasurement(cell: Cell): cell is Measurement {
  return 'faultsPerSecond' in cell;
}

function ratio(top: Cell, bottom: Cell): number | null {
  return isMeasurement(top) && isMeasurement(bottom) ? top.faultsPerSecond / bottom.faultsPerSecond : null;
}

/**
 * The model machine every row runs on, as every host row runs on this one
 * kernel: enough 2 MiB pages for a hugetlb region, and its RAM resident from
 * boot (as a machine's is), so the host's first-touch faults on fresh frames
 * are not counted as the model's fault cost. Boot is not timed.
 */
function bootModel(regionBytes: number): ModelBackend {
  const hugePages2M = Math.ceil(regionBytes / (2 * MIB));
  const residentBytes = 3 * regionBytes + 64 * MIB;
  return new ModelBackend({
    seed: 1,
    memory: { hugePages2M, memoryBytesMax: 4 * regionBytes + 256 * MIB, residentBytes },
  });
}

async function measureBackend(
  backend: () => KernelBackend,
  row: Row,
  regionBytes: number,
  runs: number,
  vcpus = 1,
): Promise<Measurement> {
  const instance = backend();
  // One run first so the JIT has compiled the path (and the host has its pages): not counted.
  await runRoundTrip(instance, row, regionBytes, vcpus);
  const times: number[] = [];
  let faults = 0;
  for (let run = 0; run < runs; run++) {
    const result = await runRoundTrip(instance, row, regionBytes, vcpus);
    times.push(result.ns);
    faults = result.faults;
  }
  return measurement(faults, regionBytes, times);
}

function referenceRun(row: Row, regionBytes: number, vcpus: number): { faults: number; ns: number } {
  const result = runReferenceHandler({
    row: row.native,
    regionBytes,
    bytesPerFault: row.bytesPerFault,
    vcpus,
  });
  if (result.error !== null) throw new Error(`bench ${row.id} (C handler): ${result.error}`);
  return result;
}

/**
 * The TypeScript and the C handler on the host, their runs alternating (after
 * two uncounted runs each), so that both see the machine in the same state:
 * on a VM the cost of a wake-up drifts, and the ratio is what matters.
 */
async function measureHostPair(
  host: () => HostBackend,
  row: Row,
  regionBytes: number,
  runs: number,
  vcpus = 1,
): Promise<{ tsHost: Cell; cHost: Cell }> {
  const sides = [
    {
      run: () => runRoundTrip(host(), row, regionBytes, vcpus),
      times: [] as number[],
      faults: 0,
      error: null as unknown,
    },
    {
      run: async () => referenceRun(row, regionBytes, vcpus),
      times: [] as number[],
      faults: 0,
      error: null as unknown,
    },
  ];
  // Two uncounted rounds (the host's first runs of a kind are slow: fresh memory, huge pages
  // being allocated), then counted rounds in alternating order.
  const warmUp = 2;
  for (let run = 0; run < warmUp + runs; run++) {
    for (const side of run % 2 === 0 ? sides : [...sides].reverse()) {
      if (side.error !== null) continue;
      try {
        const result = await side.run();
        if (run < warmUp) continue;
        side.times.push(result.ns);
        side.faults = result.faults;
      } catch (error) {
        side.error = error;
      }
    }
  }
  const [ts, c] = sides.map((side) =>
    side.error !== null ? failed(side.error) : measurement(side.faults, regionBytes, side.times),
  );
  return { tsHost: ts!, cHost: c! };
}

function failed(error: unknown): Unavailable {
  return { unavailable: error instanceof Error ? error.message : String(error), failed: true };
}

/** Every measurement that went wrong, as `where: why` lines. */
export function failures(report: BenchReport): string[] {
  const lines: string[] = [];
  const note = (where: string, cell: Cell): void => {
    if (!isMeasurement(cell) && cell.failed === true) lines.push(`${where}: ${cell.unavailable}`);
  };
  for (const row of report.rows)
    for (const id of BACKEND_IDS) note(`${row.id} on ${BACKEND_LABELS[id]}`, row.results[id]);
  if (report.scale !== null) {
    const { twoVcpus, explore } = report.scale;
    for (const id of BACKEND_IDS) note(`2 vCPUs on ${BACKEND_LABELS[id]}`, twoVcpus[id]);
    if (explore.failure !== null) lines.push(`explore, the careful handler: ${explore.failure}`);
    const binary = report.scale.exploreBinary;
    if (binary?.failure != null) lines.push(`explore, the C handler binary: ${binary.failure}`);
  }
  if (report.binaryHandler !== null) {
    note('C handler binary on the model', report.binaryHandler.model);
    note('C handler binary on the host', report.binaryHandler.host);
  }
  return lines;
}

/** One bench run: its settings, its progress, and the backends it boots on first use. */
interface BenchRun {
  readonly options: BenchOptions;
  readonly regionBytes: number;
  readonly runs: number;
  /** Why the host backend cannot run, or undefined when it can. */
  readonly hostReason: string | undefined;
  /** Reports the step starting now. */
  progress(label: string): void;
  /** Counts a step that does not run. */
  skip(): void;
  model(): ModelBackend;
  host(): HostBackend;
}

function startBench(options: BenchOptions, rows: readonly Row[]): BenchRun {
  const regionBytes = options.regionBytes ?? (options.quick ? 32 * MIB : 256 * MIB);
  const steps = rows.length * 2 + 3 + (options.skipScale ? 0 : 6);
  let step = 0;
  let model: ModelBackend | null = null;
  let host: HostBackend | null = null;
  return {
    options,
    regionBytes,
    runs: options.runs ?? 3,
    hostReason: hostUnavailable(),
    progress: (label) => options.onStep?.(label, step++, steps),
    skip: () => {
      step++;
    },
    model: () => {
      model ??= bootModel(regionBytes);
      return model;
    },
    host: () => {
      host ??= new HostBackend();
      return host;
    },
  };
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const started = performance.now();
  const rows = selectRows(options.rows);
  const run = startBench(options, rows);
  const { regionBytes, runs, hostReason } = run;
  const rowResults = await measureRows(run, rows);
  run.progress('memcpy baseline');
  const memcpy = measureMemcpy(regionBytes, hostReason === undefined);
  run.progress('the C handler binary, model and host');
  const binaryHandler = await measureBinaryHandler(run.model, hostReason, regionBytes, runs);
  const scale = options.skipScale ? null : await measureScale(run);
  run.progress('done');

  const report: Omit<BenchReport, 'targets'> = {
    version: BENCH_JSON_VERSION,
    machine: { kernel: release(), cpus: cpus().length, node: process.version },
    config: { quick: options.quick, regionBytes, runs },
    host: hostReason === undefined ? { available: true } : { available: false, reason: hostReason },
    rows: rowResults,
    memcpy,
    binaryHandler,
    scale,
    seconds: (performance.now() - started) / 1000,
  };
  return { ...report, targets: evaluateTargets(report) };
}

/**
 * Every row on the model first, then every row on the host: the host rows
 * map and free hundreds of MiB per run, which would otherwise land between
 * the model's runs.
 */
async function measureRows(run: BenchRun, rows: readonly Row[]): Promise<RowResult[]> {
  const { regionBytes, runs } = run;
  const modelCells = new Map<Row, Cell>();
  for (const row of rows) {
    run.progress(`${row.id} on the model`);
    modelCells.set(row, await measureBackend(run.model, row, regionBytes, runs).catch(failed));
  }
  const rowResults: RowResult[] = [];
  for (const row of rows) {
    const results = { model: modelCells.get(row)!, ...(await measureHostRow(run, row)) };
    rowResults.push({
      id: row.id,
      title: row.title,
      bytesPerFault: row.bytesPerFault,
      regionBytes,
      results,
      ratios: {
        modelOverC: ratio(results.model, results.cHost),
        tsOverC: ratio(results.tsHost, results.cHost),
      },
    });
  }
  return rowResults;
}

/** A row on the host, with the TypeScript handler and the C one; why not, when the host cannot. */
async function measureHostRow(run: BenchRun, row: Row): Promise<Record<'tsHost' | 'cHost', Cell>> {
  const { hostReason, regionBytes, runs } = run;
  if (hostReason !== undefined) {
    run.skip();
    return { tsHost: { unavailable: hostReason }, cHost: { unavailable: hostReason } };
  }
  const hugeReason = row.memory === 'hugetlb' ? reserveHugePages(2 * (regionBytes / (2 * MIB))) : undefined;
  run.progress(`${row.id} on the host (TypeScript and C)`);
  if (hugeReason !== undefined)
    return { tsHost: { unavailable: hugeReason }, cHost: { unavailable: hugeReason } };
  return measureHostPair(run.host, row, regionBytes, runs);
}

/** The scale rows: a sparse terabyte, page metadata, two vCPUs, the parallel model, explore's rate. */
async function measureScale(run: BenchRun): Promise<ScaleResult> {
  const { options, hostReason, regionBytes, runs } = run;
  run.progress('1 TiB sparse address space');
  const sparse = {
    model: measureSparse(new ModelBackend({ seed: 1 }), TIB),
    host: hostReason === undefined ? measureSparse(run.host(), TIB) : { unavailable: hostReason },
  };
  const pages = options.quick ? 128 * 1024 : 1024 * 1024;
  run.progress(`${pages} populated pages`);
  const metadata = measureMetadata(pages);
  const copy4k = findRow('missing-copy-4k')!;
  run.progress('2 vCPU threads on the model');
  const twoModel = await measureBackend(run.model, copy4k, regionBytes, runs, 2).catch(failed);
  run.progress('2 vCPU threads on the host');
  const two =
    hostReason === undefined
      ? await measureHostPair(run.host, copy4k, regionBytes, runs, 2)
      : { tsHost: { unavailable: hostReason }, cHost: { unavailable: hostReason } };
  run.progress('parallel model (worker threads)');
  const parallel = await measureParallelScaling({
    bytes: options.quick ? 16 * MIB : 64 * MIB,
    workPerPage: 4,
  });
  run.progress('explore: schedules per second');
  const explore = await measureExplore({ schedules: options.quick ? 2000 : 6000 });
  run.progress('explore with the C handler binary: schedules per second');
  const exploreBinary = await measureExploreBinary({
    schedules: options.quick ? 200 : 1000,
    path: BENCH_HANDLER_PATH,
  });
  const twoVcpus = { row: copy4k.id, model: twoModel, ...two };
  return { sparse, metadata, twoVcpus, parallel, explore, exploreBinary };
}

/**
 * The same binary, the same program, on each backend in turn (model and host
 * alternating, as the host pairs do, so both see one machine state).
 */
async function measureBinaryHandler(
  model: () => ModelBackend,
  hostReason: string | undefined,
  regionBytes: number,
  runs: number,
): Promise<BinaryHandlerResult | null> {
  if (binaryBenchUnavailable() !== undefined) return null;
  // The model serves 4 KiB faults at a few tens of thousands a second through the interception: a smaller region.
  const bytes = Math.min(regionBytes, 32 * MIB);
  const modelNs: number[] = [];
  const hostNs: number[] = [];
  let calls: number | null = null;
  let modelCell: Cell | null = null;
  let hostCell: Cell | null = hostReason === undefined ? null : { unavailable: hostReason };
  for (let run = 0; run < runs; run++) {
    if (modelCell === null) {
      try {
        const result = await runBinaryHandler(model(), bytes);
        modelNs.push(result.ns);
        calls = result.callsPerFault;
      } catch (error) {
        modelCell = failed(error);
      }
    }
    if (hostCell === null) {
      try {
        hostNs.push((await runBinaryHandler(new HostBackend(), bytes)).ns);
      } catch (error) {
        hostCell = failed(error);
      }
    }
  }
  const faults = bytes / 4096 - 1;
  const modelResult = modelCell ?? measurement(faults, faults * 4096, modelNs);
  const hostResult = hostCell ?? measurement(faults, faults * 4096, hostNs);
  return {
    regionBytes: bytes,
    model: modelResult,
    host: hostResult,
    modelOverHost: ratio(modelResult, hostResult),
    callsPerFault: calls,
  };
}

function selectRows(ids: readonly string[] | undefined): Row[] {
  if (ids === undefined || ids.length === 0) return [...ROWS];
  return ids.map((id) => {
    const row = findRow(id);
    if (row === undefined) {
      throw new RangeError(
        `--rows: no row '${id}' (rows: ${ROWS.map((candidate) => candidate.id).join(', ')})`,
      );
    }
    return row;
  });
}

function measureMemcpy(regionBytes: number, host: boolean): MemcpyResult {
  const chunkBytes = 4096;
  let cPrefaulted: number | null = null;
  let cFresh: number | null = null;
  if (host) {
    const samples = [0, 1, 2].map(() => runMemcpyBaseline({ regionBytes, chunkBytes }));
    cPrefaulted = regionBytes / MIB / (median(samples.map((sample) => sample.ns)) / 1e9);
    cFresh = regionBytes / MIB / (median(samples.map((sample) => sample.nsFresh)) / 1e9);
  }
  const source = new Uint8Array(regionBytes).fill(1);
  const destination = new Uint8Array(regionBytes).fill(2);
  const times: number[] = [];
  for (let run = 0; run < 3; run++) {
    const t0 = process.hrtime.bigint();
    for (let offset = 0; offset < regionBytes; offset += chunkBytes) {
      destination.set(source.subarray(offset, offset + chunkBytes), offset);
    }
    times.push(Number(process.hrtime.bigint() - t0));
  }
  return {
    chunkBytes,
    regionBytes,
    cPrefaulted,
    cFresh,
    javascript: regionBytes / MIB / (median(times) / 1e9),
  };
}

function evaluateTargets(report: Omit<BenchReport, 'targets'>): Target[] {
  const targets: Target[] = [];
  for (const row of report.rows) {
    if (row.bytesPerFault === 4096)
      targets.push(target(`${row.id}: model / C host`, row.ratios.modelOverC, '≥', 2));
  }
  const copy2m = report.rows.find((row) => row.id === 'missing-copy-2m');
  const memcpy = report.memcpy.cPrefaulted;
  if (copy2m !== undefined) {
    const model = copy2m.results.model;
    const value = isMeasurement(model) && memcpy !== null ? model.mibPerSecond / memcpy : null;
    targets.push(target('missing-copy-2m: model MiB/s / memcpy 4 KiB MiB/s', value, '≥', 0.5));
  }
  const copy4k = report.rows.find((row) => row.id === 'missing-copy-4k');
  if (copy4k !== undefined)
    targets.push(target('missing-copy-4k: TypeScript host / C host', copy4k.ratios.tsOverC, '≥', 0.7));
  if (report.binaryHandler !== null) {
    const value = report.binaryHandler.modelOverHost;
    targets.push(target('C handler binary: model (interception) / host kernel', value, '≥', 0.5));
  }
  if (report.scale !== null) targets.push(...scaleTargets(report.scale));
  return targets;
}

function scaleTargets({ metadata, sparse, explore }: ScaleResult): Target[] {
  return [
    target(
      'explore: schedules/s on one worker (64 pages, 2 vCPUs, balloon 8, careful handler)',
      explore.oneWorker.schedulesPerSecond,
      '≥',
      500,
    ),
    target(`explore: ${explore.allWorkers.workers} workers / one worker`, explore.speedup, '≥', 1.8),
    target('model metadata bytes per populated 4 KiB page', metadata.bytesPerPage, '≤', 64),
    target(
      'model memory added by a 1 TiB sparse mapping + register (MiB)',
      sparse.model.addedBytes / MIB,
      '<',
      16,
    ),
  ];
}

/** A target: `value` against `bound` (met is null when there is no value to judge). */
function target(name: string, value: number | null, relation: '≥' | '≤' | '<', bound: number): Target {
  const holds = (v: number): boolean =>
    relation === '≥' ? v >= bound : relation === '≤' ? v <= bound : v < bound;
  return { name, value, goal: `${relation} ${bound}`, met: value === null ? null : holds(value) };
}
