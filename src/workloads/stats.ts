/** What a workload measured: faults by kind, bytes moved, blocked time, latencies. */
import { percentiles } from '../trace/trace.ts';

export interface FaultSample {
  /** performance.now() when the handler received the fault. */
  readonly atMs: number;
  readonly page: number;
  readonly kind: string;
  /** From receiving the message to the page being present, in microseconds. */
  readonly latencyUs: number;
}

export class WorkloadStats {
  readonly samples: FaultSample[] = [];
  readonly faultsByKind = new Map<string, number>();
  readonly blockedMs: number[];
  readonly startedMs = performance.now();
  bytesMoved = 0;
  prefetched = 0;
  /** REMOVE events read (balloon), and faults deferred because one was unread (EAGAIN). */
  removeEvents = 0;
  deferredFaults = 0;

  constructor(readonly vcpus: number) {
    this.blockedMs = new Array(vcpus).fill(0);
  }

  record(sample: FaultSample, _vcpu: number | undefined): void {
    this.samples.push(sample);
    this.faultsByKind.set(sample.kind, (this.faultsByKind.get(sample.kind) ?? 0) + 1);
  }

  get faults(): number {
    return this.samples.length;
  }

  latencyPercentiles(): { p50: number; p90: number; p99: number; max: number } {
    const [p50, p90, p99, max] = percentiles(
      this.samples.map((sample) => sample.latencyUs),
      [50, 90, 99, 100],
    );
    return { p50: p50!, p90: p90!, p99: p99!, max: max! };
  }

  toJson(): Record<string, unknown> {
    return {
      faults: this.faults,
      faultsByKind: Object.fromEntries(this.faultsByKind),
      bytesMoved: this.bytesMoved,
      prefetchedPages: this.prefetched,
      removeEvents: this.removeEvents,
      deferredFaults: this.deferredFaults,
      // null where the backend does not measure blocked time (NaN: the thread result had no blockedMs).
      blockedMsPerVcpu: this.blockedMs.map((ms) => (Number.isNaN(ms) ? null : Math.round(ms * 1000) / 1000)),
      latencyUs: this.latencyPercentiles(),
    };
  }
}
