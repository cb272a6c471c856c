/**
 * What a workload measured: faults by kind, bytes moved, blocked time,
 * latencies, and the phases of the run. A run has a setup phase (building
 * the snapshot, the heap or the RAM image), one main phase in which every
 * fault happens (restore, postcopy, snapshot, compaction) and a verify
 * phase; the fault rate is taken over the main phase alone, so the time
 * spent preparing and checking does not dilute it.
 */
import { percentiles } from '../trace/trace.ts';

export interface FaultSample {
  /** performance.now() when the handler received the fault. */
  readonly atMs: number;
  readonly page: number;
  readonly kind: string;
  /** From receiving the message to the page being present, in microseconds. */
  readonly latencyUs: number;
}

/**
 * A named stretch of a run: in wall time (performance.now() milliseconds,
 * what rates are taken over), and on the run's clock (the clock of its
 * samples and trace: the model's own clock on the model).
 */
export interface Phase {
  readonly name: string;
  readonly startMs: number;
  readonly endMs: number;
  readonly clockStartMs: number;
  readonly clockEndMs: number;
}

export class WorkloadStats {
  readonly samples: FaultSample[] = [];
  readonly faultsByKind = new Map<string, number>();
  readonly blockedMs: number[];
  /** When the run began, on its clock (the origin of the plot's time axis). */
  readonly startedMs: number;
  /** Finished phases, in order. */
  readonly phases: Phase[] = [];
  private current: { name: string; startMs: number; clockStartMs: number } | null = null;
  bytesMoved = 0;
  prefetched = 0;
  /** REMOVE events read (balloon), and faults deferred because one was unread (EAGAIN). */
  removeEvents = 0;
  deferredFaults = 0;
  /** Faults served by a handler faultline does not see inside (a handler binary): counted, not timed. */
  untimedFaults = 0;

  /**
   * `mainPhase` names the phase the faults happen in, whose fault rate the
   * summary reports ('restore', 'postcopy', ...); `clock` is the clock the
   * samples are taken on (wall time unless the workload runs on the model's).
   */
  constructor(
    readonly vcpus: number,
    readonly mainPhase = 'run',
    readonly clock: () => number = () => performance.now(),
  ) {
    this.blockedMs = new Array(vcpus).fill(0);
    this.startedMs = clock();
  }

  record(sample: FaultSample, _vcpu: number | undefined): void {
    this.samples.push(sample);
    this.faultsByKind.set(sample.kind, (this.faultsByKind.get(sample.kind) ?? 0) + 1);
  }

  get faults(): number {
    return this.samples.length + this.untimedFaults;
  }

  /** Ends the phase under way, if any, and starts phase `name`. */
  beginPhase(name: string, atMs = performance.now(), clockMs = this.clock()): void {
    this.endPhase(atMs, clockMs);
    this.current = { name, startMs: atMs, clockStartMs: clockMs };
  }

  /** Ends the phase under way, if any. */
  endPhase(atMs = performance.now(), clockMs = this.clock()): void {
    const current = this.current;
    if (current === null) return;
    this.phases.push({
      name: current.name,
      startMs: current.startMs,
      endMs: atMs,
      clockStartMs: current.clockStartMs,
      clockEndMs: clockMs,
    });
    this.current = null;
  }

  /** Milliseconds spent in phase `name` (0 if the run had none). */
  phaseMs(name: string): number {
    let ms = 0;
    for (const phase of this.phases) if (phase.name === name) ms += phase.endMs - phase.startMs;
    return ms;
  }

  /** Faults per second over the main phase (NaN before it has ended, or if it took no time). */
  get faultRate(): number {
    const ms = this.phaseMs(this.mainPhase);
    return ms > 0 ? this.faults / (ms / 1000) : Number.NaN;
  }

  latencyPercentiles(): { p50: number; p90: number; p99: number; max: number } {
    const [p50, p90, p99, max] = percentiles(
      this.samples.map((sample) => sample.latencyUs),
      [50, 90, 99, 100],
    );
    return { p50: p50!, p90: p90!, p99: p99!, max: max! };
  }

  toJson(): Record<string, unknown> {
    const phasesMs: Record<string, number> = {};
    for (const phase of this.phases) phasesMs[phase.name] = round3(this.phaseMs(phase.name));
    const rate = this.faultRate;
    return {
      faults: this.faults,
      faultsByKind: Object.fromEntries(this.faultsByKind),
      bytesMoved: this.bytesMoved,
      prefetchedPages: this.prefetched,
      removeEvents: this.removeEvents,
      deferredFaults: this.deferredFaults,
      // null where the backend does not measure blocked time (NaN: the thread result had no blockedMs).
      blockedMsPerVcpu: this.blockedMs.map((ms) => (Number.isNaN(ms) ? null : round3(ms))),
      latencyUs: this.latencyPercentiles(),
      phasesMs,
      mainPhase: this.mainPhase,
      // Faults per second over the main phase alone.
      faultRate: Number.isNaN(rate) ? null : Math.round(rate),
    };
  }
}

function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
