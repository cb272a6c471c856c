/**
 * Seeded, named fault injection (the kernel's fault-injection framework,
 * Documentation/fault-injection/). Each point is off unless a rate is given;
 * when on, every time the kernel reaches the point it draws from a PRNG
 * seeded from the kernel's seed, so a run with the same seed, program and
 * rates injects the same faults at the same places. Draws come from a stream
 * of their own, so switching injection on does not change the scheduler's
 * choices before the first injected fault changes what runs.
 */
import { Prng } from './prng.ts';

/**
 * - `fail_page_alloc`: a folio allocation fails (Linux's fail_page_alloc):
 *   UFFDIO_COPY/ZEROPAGE and pwrite/fallocate return ENOMEM, a fault that
 *   needed the page raises SIGBUS (the model's answer to VM_FAULT_OOM).
 * - `fail_usercopy`: a copy_from_user/copy_to_user fails (Linux's
 *   fail_usercopy): UFFDIO_COPY's read of its source and a kernel-mode access
 *   of a thread (a syscall filling or reading user memory) return EFAULT.
 * - `fault_signal`: a signal arrives while a thread sleeps on a userfaultfd
 *   fault whose message the handler has just read; the thread wakes
 *   (handle_userfault returns on signal_pending), retries the access and,
 *   if the page is still missing, faults again with a new message.
 *   Kernel-mode faults sleep killable and are not interrupted.
 */
export const INJECTION_POINTS = ['fail_page_alloc', 'fail_usercopy', 'fault_signal'] as const;
export type InjectionPoint = (typeof INJECTION_POINTS)[number];

/** Probability in (0, 1] per point; absent points are off. */
export type InjectionRates = Partial<Record<InjectionPoint, number>>;

/** One injected fault: the point, where the kernel was, and the address (or 0). */
export interface Injection {
  readonly point: InjectionPoint;
  readonly site: string;
  readonly address: number;
}

export interface InjectionReport {
  readonly seed: number;
  readonly rates: InjectionRates;
  /** Faults injected per point. */
  readonly counts: Record<InjectionPoint, number>;
  /** The first `INJECTIONS_LISTED` injections, in order. */
  readonly injections: readonly Injection[];
}

/** Injections listed one by one in a report (the counts cover all of them). */
export const INJECTIONS_LISTED = 256;

/** Mixed into the kernel's seed so the injection stream differs from the scheduler's. */
const STREAM = 0x1f0c7a5e;

export class FaultInjector {
  /** Whether any point is on: the one check a hot path makes when injection is off. */
  active = false;
  private readonly rates: Float64Array;
  private readonly prng: Prng;
  private readonly counts = new Float64Array(INJECTION_POINTS.length);
  private readonly listed: Injection[] = [];

  constructor(
    readonly seed: number,
    readonly spec: InjectionRates = {},
  ) {
    this.rates = new Float64Array(INJECTION_POINTS.length);
    for (const [name, rate] of Object.entries(spec)) if (rate !== undefined) this.set(name, rate);
    this.prng = new Prng((seed ^ STREAM) >>> 0);
  }

  /**
   * Sets the rate of a point (0 switches it off), e.g. once a program has
   * set itself up; later draws continue the same seeded stream.
   */
  set(name: string, rate: number): void {
    const index = INJECTION_POINTS.indexOf(name as InjectionPoint);
    if (index < 0)
      throw new RangeError(`inject: unknown injection point '${name}' (${INJECTION_POINTS.join(', ')})`);
    if (!(rate >= 0 && rate <= 1))
      throw new RangeError(`inject: the rate of ${name} must lie in [0, 1], not ${rate}`);
    this.rates[index] = rate;
    this.active = this.rates.some((value) => value > 0);
  }

  /** Whether `point` is on at all (a caller may skip work that only an injection needs). */
  enabled(point: InjectionPoint): boolean {
    return this.rates[INJECTION_POINTS.indexOf(point)]! > 0;
  }

  /**
   * Draws for `point` at `site`; true means: fail here. Records the
   * injection. Off points draw nothing, so they do not shift the stream.
   */
  fire(point: InjectionPoint, site: string, address = 0): boolean {
    if (!this.active) return false;
    const index = INJECTION_POINTS.indexOf(point);
    const rate = this.rates[index]!;
    if (rate === 0) return false;
    if (rate < 1 && this.prng.nextU32() / 0x100000000 >= rate) return false;
    this.counts[index]!++;
    if (this.listed.length < INJECTIONS_LISTED) this.listed.push({ point, site, address });
    return true;
  }

  /** Faults injected so far, over every point. */
  get injected(): number {
    let total = 0;
    for (const count of this.counts) total += count;
    return total;
  }

  report(): InjectionReport {
    const rates: InjectionRates = {};
    const counts = {} as Record<InjectionPoint, number>;
    INJECTION_POINTS.forEach((point, index) => {
      if (this.rates[index]! > 0) rates[point] = this.rates[index]!;
      counts[point] = this.counts[index]!;
    });
    return { seed: this.seed, rates, counts, injections: [...this.listed] };
  }
}

/**
 * Parses `NAME:RATE` (the CLI's --inject); throws a RangeError naming what is
 * wrong. A rate is a probability (0.01) or a percentage (1%).
 */
export function parseInjection(text: string): [InjectionPoint, number] {
  const match = /^([a-z_]+):([0-9.]+)(%?)$/.exec(text.trim());
  if (match === null) throw new RangeError(`--inject ${text}: expected NAME:RATE, e.g. fail_usercopy:0.1`);
  const name = match[1]!;
  if (!(INJECTION_POINTS as readonly string[]).includes(name)) {
    throw new RangeError(
      `--inject ${text}: unknown injection point '${name}' (${INJECTION_POINTS.join(', ')})`,
    );
  }
  const rate = Number(match[2]) / (match[3] === '%' ? 100 : 1);
  if (!(rate > 0 && rate <= 1))
    throw new RangeError(`--inject ${text}: the rate must lie in (0, 1] (or (0%, 100%])`);
  return [name as InjectionPoint, rate];
}

/** The report as one line of text, e.g. "injected 3 faults (seed 7): fail_usercopy 3 at 0.1". */
export function describeInjections(report: InjectionReport): string {
  const parts = Object.entries(report.rates).map(
    ([point, rate]) => `${point} ${report.counts[point as InjectionPoint]} at ${rate}`,
  );
  const total = Object.values(report.counts).reduce((sum, count) => sum + count, 0);
  return `injected ${total} fault${total === 1 ? '' : 's'} (seed ${report.seed}): ${parts.join(', ')}`;
}
