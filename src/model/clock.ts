/**
 * The model's clock. Time is simulated: it advances by a nominal cost per
 * step of a simulated thread and per system call, and jumps to the next
 * timer when nothing else can run, so a timeout costs no wall time and two
 * runs with one seed see the same times. Nothing in the model reads the wall
 * clock for a decision.
 */

/** What a simulated thread's access (one step) costs, in nanoseconds. */
export const STEP_COST_NS = 250;
/** What a system call made by program code (the handler) costs, in nanoseconds. */
export const SYSCALL_COST_NS = 500;

export interface ModelTimer {
  readonly atNs: number;
  readonly seq: number;
  readonly fire: () => void;
  cancelled: boolean;
}

export class ModelClock {
  private virtualNs = 0;
  private timers: ModelTimer[] = [];
  private nextSeq = 0;

  /**
   * `wall`: the parallel model, whose vCPUs run in real time, reads the wall
   * clock instead (its runs do not replay anyway).
   */
  constructor(readonly wall = false) {}

  /** Model time in nanoseconds since boot. */
  get nowNs(): number {
    return this.wall ? performance.now() * 1e6 : this.virtualNs;
  }

  /** Model time in milliseconds. */
  nowMs(): number {
    return this.wall ? performance.now() : this.virtualNs / 1e6;
  }

  advance(ns: number): void {
    this.virtualNs += ns;
  }

  /** Calls `fire` once model time reaches now + `delayMs` (timers at one instant fire in arming order). */
  setTimer(delayMs: number, fire: () => void): ModelTimer {
    const timer: ModelTimer = {
      atNs: this.nowNs + Math.max(0, Math.round(delayMs * 1e6)),
      seq: this.nextSeq++,
      fire,
      cancelled: false,
    };
    const timers = this.timers;
    let at = timers.length;
    while (at > 0 && before(timer, timers[at - 1]!)) at--;
    timers.splice(at, 0, timer);
    return timer;
  }

  cancel(timer: ModelTimer): void {
    if (timer.cancelled) return;
    timer.cancelled = true;
    const index = this.timers.indexOf(timer);
    if (index >= 0) this.timers.splice(index, 1);
  }

  /** Armed timers. */
  get pending(): number {
    return this.timers.length;
  }

  /** When the next timer fires (ns), or -1. */
  nextDeadlineNs(): number {
    return this.timers.length === 0 ? -1 : this.timers[0]!.atNs;
  }

  /**
   * Advances time to the earliest timer and fires every timer due then.
   * Returns whether one fired.
   */
  fireNext(): boolean {
    const first = this.timers[0];
    if (first === undefined) return false;
    if (first.atNs > this.virtualNs) this.virtualNs = first.atNs;
    while (this.timers.length > 0 && this.timers[0]!.atNs <= this.nowNs) {
      const timer = this.timers.shift()!;
      timer.cancelled = true;
      timer.fire();
    }
    return true;
  }
}

function before(a: ModelTimer, b: ModelTimer): boolean {
  return a.atNs < b.atNs || (a.atNs === b.atNs && a.seq < b.seq);
}
