/** `faultline bench`: runs the benchmark and prints tables, or one JSON document. */

import {
  BACKEND_IDS,
  BACKEND_LABELS,
  type BenchReport,
  type Cell,
  failures,
  isMeasurement,
  runBench,
} from '../bench/bench.ts';
import { Progress, table } from './output.ts';

export interface BenchCommandOptions {
  readonly json: boolean;
  readonly quick: boolean;
  readonly size?: number;
  readonly runs?: number;
  readonly rows: string[];
  readonly scale: boolean;
}

const MIB = 1024 * 1024;

function count(value: number): string {
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} M`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(1)} k`;
  return value.toFixed(value >= 100 ? 0 : 1);
}

function times(value: number | null): string {
  return value === null ? 'n/a' : `${value.toFixed(2)}×`;
}

function cellColumns(cell: Cell): string[] {
  if (!isMeasurement(cell)) return ['n/a', '', ''];
  return [count(cell.faultsPerSecond), cell.mibPerSecond.toFixed(0), cell.usPerFault.toFixed(2)];
}

export function formatReport(report: BenchReport): string[] {
  const lines: string[] = [];
  const size = `${report.config.regionBytes / MIB} MiB`;
  lines.push(
    `faultline bench: ${size} per row, median of ${report.config.runs} runs, Linux ${report.machine.kernel}, ` +
      `${report.machine.cpus} CPUs, Node ${report.machine.node}`,
  );
  if (!report.host.available) lines.push(`host backend unavailable: ${report.host.reason}`);
  lines.push('');
  lines.push(...rowLines(report));
  const memcpy = report.memcpy;
  lines.push(
    '',
    `memcpy baseline, ${memcpy.chunkBytes / 1024} KiB pages: C into touched memory ${mib(memcpy.cPrefaulted)}, ` +
      `C into fresh memory ${mib(memcpy.cFresh)}, TypedArray.set ${mib(memcpy.javascript)}`,
  );
  lines.push(...binaryLines(report.binaryHandler));
  if (report.scale !== null) lines.push(...scaleLines(report.scale));
  lines.push('', 'targets:');
  for (const target of report.targets) {
    const mark = target.met === null ? '-' : target.met ? '✓' : '✗';
    const value = target.value === null ? 'n/a' : target.value.toFixed(2);
    lines.push(`  ${mark} ${target.name}: ${value} (goal ${target.goal})`);
  }
  lines.push('', `took ${report.seconds.toFixed(0)} s`);
  return lines;
}

/** The rows' table, and what was not measured (and why) when the host runs. */
function rowLines(report: BenchReport): string[] {
  const lines: string[] = [];
  const rows: string[][] = [['row', 'backend', 'faults/s', 'MiB/s', 'µs/fault', '÷ C host']];
  for (const row of report.rows) {
    for (const id of BACKEND_IDS) {
      const cell = row.results[id];
      const versus = id === 'model' ? row.ratios.modelOverC : id === 'tsHost' ? row.ratios.tsOverC : null;
      rows.push([
        id === 'model' ? row.title : '',
        BACKEND_LABELS[id],
        ...cellColumns(cell),
        id === 'cHost' ? '' : times(versus),
      ]);
    }
  }
  lines.push(table(rows));
  const unavailable = report.rows.flatMap((row) =>
    BACKEND_IDS.flatMap((id) => {
      const cell = row.results[id];
      return isMeasurement(cell) ? [] : [`  ${row.id} on ${BACKEND_LABELS[id]}: ${cell.unavailable}`];
    }),
  );
  if (unavailable.length > 0 && report.host.available) lines.push('', 'not measured:', ...unavailable);
  return lines;
}

/** The C handler binary on the model and on the host. */
function binaryLines(binary: BenchReport['binaryHandler']): string[] {
  if (binary === null) return [];
  const lines = [
    '',
    `C handler binary (test/handlers/fc_handler.c), ${binary.regionBytes / MIB} MiB of 4 KiB MISSING faults, one vCPU:`,
  ];
  const rows: string[][] = [['backend', 'faults/s', 'MiB/s', 'µs/fault', '÷ host']];
  rows.push(['model, seccomp interception', ...cellColumns(binary.model), times(binary.modelOverHost)]);
  rows.push(['host kernel, real userfaultfd', ...cellColumns(binary.host), '']);
  lines.push(table(rows));
  if (binary.callsPerFault !== null)
    lines.push(`  trapped calls answered per fault on the model: ${binary.callsPerFault.toFixed(2)}`);
  return lines;
}

/** The scale rows: a sparse terabyte, page metadata, two vCPUs, the parallel model. */
function scaleLines(scale: NonNullable<BenchReport['scale']>): string[] {
  const { sparse, metadata, twoVcpus, parallel } = scale;
  const lines: string[] = [];
  lines.push('', 'scale:');
  const host = 'unavailable' in sparse.host ? 'n/a' : `${sparse.host.addedBytes} B of ${sparse.host.measure}`;
  lines.push(
    `  1 TiB sparse mmap + register: model adds ${(sparse.model.addedBytes / 1024).toFixed(0)} KiB ` +
      `(mmap ${sparse.model.mmapUs.toFixed(0)} µs, register ${sparse.model.registerUs.toFixed(0)} µs); host adds ${host}`,
  );
  lines.push(
    `  ${metadata.pages} populated 4 KiB pages: ${metadata.bytesPerPage.toFixed(1)} bytes of model metadata per page ` +
      `(populated in ${metadata.populateMs.toFixed(0)} ms)`,
  );
  lines.push(
    `  2 vCPU threads + handler, ${twoVcpus.row}: model ${cellColumns(twoVcpus.model)[0]} faults/s, ` +
      `host (TypeScript) ${cellColumns(twoVcpus.tsHost)[0]} faults/s, host (C) ${cellColumns(twoVcpus.cHost)[0]} faults/s`,
  );
  lines.push(
    `  parallel model, ${parallel.bytes / MIB} MiB, MISSING + COPY then ${parallel.workPerPage} reads of each page:`,
  );
  for (const run of [parallel.inThread, parallel.parallel1, parallel.parallelN]) {
    lines.push(
      `    ${run.label.padEnd(28)} ${count(run.faultsPerSecond).padStart(8)} faults/s ` +
        `${count(run.accessesPerSecond).padStart(8)} accesses/s  ${run.wallMs.toFixed(0)} ms`,
    );
  }
  lines.push(
    `    speedup: ${parallel.vcpus} workers / 1 worker ${times(parallel.speedup.parallelNOverParallel1)}, ` +
      `${parallel.vcpus} workers / in-thread ${times(parallel.speedup.parallelNOverInThread)}`,
  );
  lines.push(...exploreLines(scale.explore));
  if (scale.exploreBinary !== null) lines.push(...exploreBinaryLines(scale.exploreBinary));
  return lines;
}

/** The same with the C handler binary: CPU counts the binaries and the connectors too. */
function exploreBinaryLines(
  explore: NonNullable<NonNullable<BenchReport['scale']>['exploreBinary']>,
): string[] {
  const { oneWorker: one, allWorkers: all } = explore;
  return [
    `  explore (${explore.guest}, C handler binary): ${one.schedulesPerSecond.toFixed(0)} schedules/s ` +
      `on 1 worker, ${all.schedulesPerSecond.toFixed(0)} on ${all.workers} (${times(explore.speedup)}); ` +
      `${one.schedules + all.schedules} schedules, ` +
      `${explore.failure === null ? 'all passed' : `FAILED: ${explore.failure}`}`,
    `    CPU per schedule (the process and its binaries and connectors): ${one.cpuMsPerSchedule.toFixed(2)} ms ` +
      `on 1 worker, ${all.cpuMsPerSchedule.toFixed(2)} ms on ${all.workers}`,
  ];
}

/** Explore's schedules per second, on one worker and on all. */
function exploreLines(explore: NonNullable<BenchReport['scale']>['explore']): string[] {
  return [
    `  explore (${explore.guest}, careful handler): ${explore.oneWorker.schedulesPerSecond.toFixed(0)} schedules/s ` +
      `on 1 worker, ${explore.allWorkers.schedulesPerSecond.toFixed(0)} on ${explore.allWorkers.workers} ` +
      `(${times(explore.speedup)}); ${explore.oneWorker.schedules + explore.allWorkers.schedules} schedules, ` +
      `${explore.failure === null ? 'all passed' : `FAILED: ${explore.failure}`}`,
    `    per worker thread CPU-second: ${explore.oneWorker.schedulesPerCpuSecond.toFixed(0)} on 1 worker, ` +
      `${explore.allWorkers.schedulesPerCpuSecond.toFixed(0)} each on ${explore.allWorkers.workers} ` +
      `(${times(explore.cpuSpeedup)} with free cores); process CPU per schedule ` +
      `${explore.oneWorker.processCpuMsPerSchedule.toFixed(2)} / ${explore.allWorkers.processCpuMsPerSchedule.toFixed(2)} ms`,
  ];
}

function mib(value: number | null): string {
  return value === null ? 'n/a' : `${value.toFixed(0)} MiB/s`;
}

export async function benchCommand(options: BenchCommandOptions): Promise<number> {
  const progress = new Progress('bench', !options.json && process.stderr.isTTY === true);
  const report = await runBench({
    quick: options.quick,
    regionBytes: options.size,
    runs: options.runs,
    rows: options.rows,
    skipScale: !options.scale,
    onStep: (_step, done, total) => progress.update(done, total),
  });
  progress.finish();
  if (options.json) console.log(JSON.stringify(report, null, 2));
  else for (const line of formatReport(report)) console.log(line);
  const failed = failures(report);
  for (const line of failed) console.error(`faultline bench: ${line}`);
  return failed.length > 0 ? 1 : 0;
}
