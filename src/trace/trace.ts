/**
 * Tracing: Chrome Trace Event records (they open in Perfetto and
 * chrome://tracing) and the latency statistics workloads report. The model
 * emits blocked spans through `KernelTracer`; workloads add handler spans.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** One Chrome Trace Event (the subset faultline writes). */
export interface TraceEvent {
  readonly name: string;
  readonly cat: string;
  /** 'X' complete span, 'i' instant, 'C' counter, 'M' metadata. */
  readonly ph: 'X' | 'i' | 'C' | 'M';
  /** Microseconds since the trace started. */
  readonly ts: number;
  readonly dur?: number;
  readonly pid: number;
  readonly tid: number;
  readonly s?: 't' | 'p' | 'g';
  readonly args?: Record<string, unknown>;
}

/** What the model kernel reports while it runs (tracepoints). */
export interface KernelTracer {
  /** A thread slept on a userfaultfd fault at `address` from `startMs` to `endMs` (performance.now()). */
  blocked(tid: number, address: number, startMs: number, endMs: number): void;
}

export class Trace implements KernelTracer {
  readonly events: TraceEvent[] = [];
  private readonly originMs = performance.now();
  private readonly threadNames = new Map<number, string>();

  constructor(
    readonly pid = 1,
    readonly enabled = true,
  ) {}

  /** Microseconds since the trace began, for `ms` from performance.now(). */
  us(ms: number): number {
    return Math.max(0, Math.round((ms - this.originMs) * 1000));
  }

  nameThread(tid: number, name: string): void {
    this.threadNames.set(tid, name);
  }

  span(
    name: string,
    cat: string,
    tid: number,
    startMs: number,
    endMs: number,
    args?: Record<string, unknown>,
  ): void {
    if (!this.enabled) return;
    this.events.push({
      name,
      cat,
      ph: 'X',
      ts: this.us(startMs),
      dur: Math.max(0, Math.round((endMs - startMs) * 1000)),
      pid: this.pid,
      tid,
      ...(args === undefined ? {} : { args }),
    });
  }

  instant(name: string, cat: string, tid: number, atMs: number, args?: Record<string, unknown>): void {
    if (!this.enabled) return;
    this.events.push({
      name,
      cat,
      ph: 'i',
      s: 't',
      ts: this.us(atMs),
      pid: this.pid,
      tid,
      ...(args === undefined ? {} : { args }),
    });
  }

  blocked(tid: number, address: number, startMs: number, endMs: number): void {
    this.span('blocked on userfaultfd', 'vcpu', tid, startMs, endMs, {
      address: `0x${address.toString(16)}`,
    });
  }

  /** The trace as a Chrome Trace Event JSON document. */
  toJson(metadata: Record<string, unknown> = {}): string {
    const names: TraceEvent[] = [...this.threadNames].map(([tid, name]) => ({
      name: 'thread_name',
      cat: '__metadata',
      ph: 'M',
      ts: 0,
      pid: this.pid,
      tid,
      args: { name },
    }));
    return JSON.stringify({
      traceEvents: [...names, ...this.events],
      displayTimeUnit: 'ms',
      otherData: { producer: 'faultline', version: 1, ...metadata },
    });
  }

  write(file: string, metadata: Record<string, unknown> = {}): void {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, this.toJson(metadata));
  }
}

/** Percentiles of a sample (nearest rank). */
export function percentiles(samples: readonly number[], points: readonly number[]): number[] {
  if (samples.length === 0) return points.map(() => 0);
  const sorted = Float64Array.from(samples).sort();
  return points.map(
    (p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!,
  );
}
