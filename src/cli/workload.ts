/** `faultline workload NAME`: run a workload, print a summary, write a trace and a plot. */
import { InvalidArgumentError } from 'commander';
import type { KernelBackend } from '../api/backend.ts';
import { ModelBackend } from '../api/model-backend.ts';
import { parseSize } from '../scenario/schema.ts';
import { Trace } from '../trace/trace.ts';
import { ACCESS_PATTERNS, type AccessPattern, readWorkingSet } from '../workloads/guest.ts';
import { renderPlot } from '../workloads/plot.ts';
import { RESTORE_MODES, type RestoreMode, runSnapshotRestore } from '../workloads/snapshot-restore.ts';
import { Progress, table } from './output.ts';

export interface SnapshotRestoreCommandOptions {
  backend: string;
  mode: string;
  size: string;
  vcpus: number;
  pattern: string;
  seed: number;
  prefetchWindow: number;
  workingSet?: string;
  recordWorkingSet?: string;
  trace?: string;
  plot?: string;
  json: boolean;
}

function choice<T extends string>(option: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`${option}: '${value}' is not one of ${allowed.join(', ')}`);
  }
  return value as T;
}

export function createBackend(name: string, seed: number, version: '6.18' | '7.1'): KernelBackend {
  if (name === 'model') return new ModelBackend({ seed, version });
  if (name === 'host')
    throw new InvalidArgumentError('--backend: the host backend is not available in this build');
  throw new InvalidArgumentError(`--backend: '${name}' is not one of model, host`);
}

function fmt(n: number, digits = 1): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export async function snapshotRestoreCommand(
  options: SnapshotRestoreCommandOptions,
  out: (line: string) => void,
): Promise<number> {
  const mode = choice<RestoreMode>('--mode', options.mode, RESTORE_MODES);
  const pattern = choice<AccessPattern>('--pattern', options.pattern, ACCESS_PATTERNS);
  const guestBytes = parseSize(options.size);
  if (!Number.isFinite(guestBytes) || guestBytes <= 0) {
    throw new InvalidArgumentError(`--size: '${options.size}' is not a size such as 64M or 1G`);
  }
  if (options.vcpus < 1 || options.vcpus > 64) throw new InvalidArgumentError('--vcpus: between 1 and 64');
  const pageSize = mode === 'hugetlb' ? 2 * 1024 * 1024 : 4096;
  const workingSet =
    options.workingSet === undefined ? undefined : readWorkingSet(options.workingSet, pageSize);
  if (pattern === 'working-set' && workingSet === undefined) {
    throw new InvalidArgumentError('--pattern working-set needs --working-set FILE');
  }
  // guest_memfd userfaultfd needs the final vm_uffd_ops: emulate 7.1 for those modes.
  const backend = createBackend(options.backend, options.seed, mode.startsWith('gmem') ? '7.1' : '6.18');
  const trace = new Trace(1, options.trace !== undefined);
  if (backend instanceof ModelBackend) backend.kernel.tracer = trace;
  const showProgress = !options.json && process.stderr.isTTY === true;
  const progress = new Progress(`restoring ${options.size} (${mode})`, showProgress);
  const started = performance.now();
  const result = await runSnapshotRestore({
    backend,
    mode,
    guestBytes,
    vcpus: options.vcpus,
    pattern,
    seed: options.seed,
    prefetchWindow: options.prefetchWindow,
    ...(workingSet === undefined ? {} : { workingSet }),
    ...(options.recordWorkingSet === undefined ? {} : { recordWorkingSet: options.recordWorkingSet }),
    trace,
    progress: (done, total) => progress.update(done, total),
  });
  progress.finish();
  const elapsedMs = performance.now() - started;
  const stats = result.stats;
  if (options.trace !== undefined)
    trace.write(options.trace, { workload: 'snapshot-restore', mode, backend: backend.describe() });
  if (options.plot !== undefined) {
    await renderPlot(
      stats,
      `snapshot-restore ${mode}, ${options.size}, ${options.vcpus} vCPUs (${backend.describe()})`,
      options.plot,
    );
  }
  const ok = result.verifiedPages === result.pages;
  if (options.json) {
    out(
      JSON.stringify(
        {
          version: 1,
          workload: 'snapshot-restore',
          backend: backend.describe(),
          mode,
          guestBytes,
          vcpus: options.vcpus,
          pattern,
          elapsedMs: Math.round(elapsedMs),
          verifiedPages: result.verifiedPages,
          touchedPages: result.pages,
          ...stats.toJson(),
          trace: options.trace ?? null,
          plot: options.plot ?? null,
        },
        null,
        2,
      ),
    );
    return ok ? 0 : 1;
  }
  const latency = stats.latencyPercentiles();
  out(
    `snapshot-restore: ${options.size} guest, mode ${mode}, ${options.vcpus} vCPUs, ${pattern} — ${backend.describe()}`,
  );
  out('');
  const rows: string[][] = [['faults', 'count']];
  for (const [kind, count] of stats.faultsByKind) rows.push([`  ${kind}`, count.toLocaleString('en-US')]);
  rows.push(['  total', stats.faults.toLocaleString('en-US')]);
  if (stats.prefetched > 0) rows.push(['pages prefetched', stats.prefetched.toLocaleString('en-US')]);
  rows.push(['bytes moved', `${fmt(stats.bytesMoved / 2 ** 20)} MiB`]);
  stats.blockedMs.forEach((ms, v) => {
    rows.push([`vcpu${v} blocked`, `${fmt(ms)} ms`]);
  });
  rows.push(['latency p50', `${fmt(latency.p50)} µs`]);
  rows.push(['latency p90', `${fmt(latency.p90)} µs`]);
  rows.push(['latency p99', `${fmt(latency.p99)} µs`]);
  rows.push(['latency max', `${fmt(latency.max)} µs`]);
  rows.push(['wall time', `${fmt(elapsedMs)} ms`]);
  rows.push(['fault rate', `${fmt(stats.faults / (elapsedMs / 1000), 0)} faults/s`]);
  rows.push([
    'verified',
    `${result.verifiedPages}/${result.pages} pages ${ok ? 'match the snapshot' : 'DIFFER'}`,
  ]);
  out(table(rows));
  out('');
  if (options.trace !== undefined)
    out(`trace: ${options.trace} (Chrome trace JSON; open in https://ui.perfetto.dev)`);
  if (options.plot !== undefined) out(`plot:  ${options.plot}`);
  return ok ? 0 : 1;
}
