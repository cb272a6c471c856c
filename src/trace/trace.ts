/**
 * Tracing: Chrome Trace Event records (they open in Perfetto and
 * chrome://tracing) and the latency statistics workloads report. The model
 * emits blocked spans through `KernelTracer`; workloads add handler spans.
 *
 * Times are microseconds with nanosecond fractions, start and end rounded
 * alike, so a span inside another never pokes out of it. Each fault is a
 * flow: from the vCPU's blocked span through the handler's read of its
 * message and the ioctl that resolves it, back to the wake. A trace written
 * to a file keeps at most `eventsMax` events, saying how many it dropped;
 * while the run goes it records them into typed columns (a few stores per
 * event, no garbage), and `write` encodes them into the file a megabyte at a
 * time (a large guest's trace would not fit one JavaScript string). Encoding
 * as the events came cost a traced restore ~30% of its fault rate.
 */
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';

/** One Chrome Trace Event (the subset faultline writes). */
export interface TraceEvent {
  readonly name: string;
  readonly cat: string;
  /** 'X' complete span, 'i' instant, 'C' counter, 'M' metadata, 's'/'t'/'f' flow start, step, end. */
  readonly ph: 'X' | 'i' | 'C' | 'M' | 's' | 't' | 'f';
  /** Microseconds since the trace started (with nanosecond fractions). */
  readonly ts: number;
  readonly dur?: number;
  readonly pid: number;
  readonly tid: number;
  readonly s?: 't' | 'p' | 'g';
  /** A flow's id. */
  readonly id?: number;
  /** A flow end's binding point: 'e', the slice enclosing it. */
  readonly bp?: 'e';
  readonly args?: Record<string, unknown>;
}

/** What the model kernel reports while it runs (tracepoints). */
export interface KernelTracer {
  /** A thread slept on a userfaultfd fault at `address` from `startMs` to `endMs` (performance.now()). */
  blocked(tid: number, address: number, startMs: number, endMs: number): void;
}

/** Events a streamed trace keeps at most by default (about 150 bytes each in the file). */
export const TRACE_EVENTS_MAX = 2_000_000;
/** A nanosecond, in the trace's microseconds: how far a flow point sits inside the span it binds to. */
const NS = 0.001;
/** Bytes buffered before a streamed trace writes them out. */
const FLUSH_BYTES = 1 << 20;

export interface TraceOptions {
  /** Stream the events into this file as they come (finish with `write`). */
  readonly file?: string;
  /** Keep at most this many events (default TRACE_EVENTS_MAX); later ones are counted, not kept. */
  readonly eventsMax?: number;
  /**
   * The time the trace starts at, in the milliseconds its events are given in: performance.now()
   * at construction by default; 0 for a run timed by the model's virtual clock (ms since boot).
   */
  readonly originMs?: number;
}

/** One span of a trace: what ran (`name`, category `cat`), on which thread, when, and its details. */
export interface Span {
  readonly name: string;
  readonly cat: string;
  readonly tid: number;
  readonly startMs: number;
  readonly endMs: number;
  readonly args?: Record<string, unknown>;
}

type MutableEvent = { -readonly [K in keyof TraceEvent]: TraceEvent[K] };

/** `event` with `args` as its last field, when there are any. */
function withArgs(event: MutableEvent, args: Record<string, unknown> | undefined): TraceEvent {
  if (args !== undefined) event.args = args;
  return event;
}

const PHASES = ['X', 'i', 'C', 'M', 's', 't', 'f'] as const;
/** A phase's code by its letter's char code (a table: a Map lookup per event showed in profiles). */
const PHASE_CODE = new Uint8Array(128);
PHASES.forEach((ph, code) => {
  PHASE_CODE[ph.charCodeAt(0)] = code;
});
/** Flags of a recorded event: which optional fields it has. */
const HAS_DUR = 1;
const HAS_ID = 2;
const SCOPE_THREAD = 4;
const BIND_ENCLOSING = 8;

/**
 * Recorded events of a file trace, one typed array per field: a traced
 * restore records millions of events, and objects or strings per event would
 * make the collector most of its cost.
 */
class EventColumns {
  length = 0;
  private capacity = 0;
  private ts = new Float64Array(0);
  private dur = new Float64Array(0);
  private tid = new Int32Array(0);
  private pid = new Int32Array(0);
  private id = new Int32Array(0);
  private name = new Uint32Array(0);
  private cat = new Uint32Array(0);
  private phase = new Uint8Array(0);
  private flags = new Uint8Array(0);
  private argsAt = new Int32Array(0);
  /** The events' args, in order; `argsAt` holds each event's index here, or -1. */
  private readonly args: Record<string, unknown>[] = [];
  private readonly strings: string[] = [];
  private readonly stringIndex = new Map<string, number>();

  push(event: TraceEvent): void {
    if (this.length === this.capacity) this.grow();
    const i = this.length++;
    this.ts[i] = event.ts;
    this.dur[i] = event.dur ?? 0;
    this.tid[i] = event.tid;
    this.pid[i] = event.pid;
    this.id[i] = event.id ?? 0;
    this.name[i] = this.intern(event.name);
    this.cat[i] = this.intern(event.cat);
    this.phase[i] = PHASE_CODE[event.ph.charCodeAt(0)]!;
    this.flags[i] =
      (event.dur === undefined ? 0 : HAS_DUR) |
      (event.id === undefined ? 0 : HAS_ID) |
      (event.s === 't' ? SCOPE_THREAD : 0) |
      (event.bp === 'e' ? BIND_ENCLOSING : 0);
    this.argsAt[i] = event.args === undefined ? -1 : this.args.push(event.args) - 1;
  }

  /** Event `i` as the object it was recorded from (its fields in the same order). */
  event(i: number): TraceEvent {
    const name = this.strings[this.name[i]!]!;
    const cat = this.strings[this.cat[i]!]!;
    const ph = PHASES[this.phase[i]!]!;
    const [flags, ts, pid, tid] = [this.flags[i]!, this.ts[i]!, this.pid[i]!, this.tid[i]!];
    const at = this.argsAt[i]!;
    const args = at < 0 ? undefined : this.args[at];
    // The common shapes built whole (a spread per field made encoding slower than recording).
    if (flags === HAS_DUR) return withArgs({ name, cat, ph, ts, dur: this.dur[i]!, pid, tid }, args);
    if (flags === SCOPE_THREAD) return withArgs({ name, cat, ph, s: 't', ts, pid, tid }, args);
    if (flags === HAS_ID) return withArgs({ name, cat, ph, id: this.id[i]!, ts, pid, tid }, args);
    return withArgs(
      {
        name,
        cat,
        ph,
        ...(flags & SCOPE_THREAD ? { s: 't' as const } : {}),
        ...(flags & BIND_ENCLOSING ? { bp: 'e' as const } : {}),
        ...(flags & HAS_ID ? { id: this.id[i]! } : {}),
        ts,
        ...(flags & HAS_DUR ? { dur: this.dur[i]! } : {}),
        pid,
        tid,
      },
      args,
    );
  }

  private intern(text: string): number {
    let index = this.stringIndex.get(text);
    if (index === undefined) {
      index = this.strings.push(text) - 1;
      this.stringIndex.set(text, index);
    }
    return index;
  }

  private grow(): void {
    this.capacity = Math.max(4096, this.capacity * 2);
    const widen = <T extends Float64Array | Int32Array | Uint32Array | Uint8Array>(
      old: T,
      make: (n: number) => T,
    ): T => {
      const next = make(this.capacity);
      next.set(old);
      return next;
    };
    this.ts = widen(this.ts, (n) => new Float64Array(n));
    this.dur = widen(this.dur, (n) => new Float64Array(n));
    this.tid = widen(this.tid, (n) => new Int32Array(n));
    this.pid = widen(this.pid, (n) => new Int32Array(n));
    this.id = widen(this.id, (n) => new Int32Array(n));
    this.name = widen(this.name, (n) => new Uint32Array(n));
    this.cat = widen(this.cat, (n) => new Uint32Array(n));
    this.phase = widen(this.phase, (n) => new Uint8Array(n));
    this.flags = widen(this.flags, (n) => new Uint8Array(n));
    this.argsAt = widen(this.argsAt, (n) => new Int32Array(n));
  }
}

/** A fault's flow while it is open: its id, whether its vCPU has woken and its handler is done. */
interface Flow {
  readonly id: number;
  blocked: boolean;
  served: boolean;
}

export class Trace implements KernelTracer {
  /** The events kept in memory (a trace that does not stream). */
  readonly events: TraceEvent[] = [];
  private readonly originMs: number;
  private readonly threadNames = new Map<number, string>();
  private processName: string | undefined;
  /** Open flows by the page address of their fault. */
  private readonly flows = new Map<number, Flow>();
  private nextFlowId = 1;
  /** Flows are keyed by page: addresses are rounded down to this many bytes. */
  flowPageBytes = 4096;
  private readonly eventsMax: number;
  private kept = 0;
  /** Events over the cap, not kept. */
  dropped = 0;
  private fd: number | undefined;
  private readonly file: string | undefined;
  /** A file trace's events, encoded into the file by `write`. */
  private readonly recorded = new EventColumns();
  /**
   * A streamed trace's pending bytes: each event is encoded straight into
   * this buffer. (Appending to one string built a rope of thousands of
   * pieces per flush, which lived long enough to be promoted: GC was most of
   * the trace's cost.)
   */
  private pending: Buffer | null = null;
  private pendingBytes = 0;

  /**
   * `originMs` is time zero of the trace on the clock its events use:
   * performance.now() by default, 0 for the model's own clock.
   */
  constructor(
    readonly pid = 1,
    readonly enabled = true,
    options: TraceOptions = {},
  ) {
    this.eventsMax = options.eventsMax ?? TRACE_EVENTS_MAX;
    this.originMs = options.originMs ?? performance.now();
    this.file = options.file;
    if (enabled && options.file !== undefined) {
      this.fd = openSync(options.file, 'w');
      this.pending = Buffer.allocUnsafe(FLUSH_BYTES);
      writeSync(this.fd, '{"traceEvents":[\n');
    }
  }

  /** Microseconds since the trace began, for `ms` from performance.now(), to the nanosecond. */
  us(ms: number): number {
    return Math.max(0, Math.round((ms - this.originMs) * 1e6) / 1000);
  }

  nameThread(tid: number, name: string): void {
    this.threadNames.set(tid, name);
  }

  /** The process's name in the trace viewer (process_name metadata). */
  nameProcess(name: string): void {
    this.processName = name;
  }

  private push(event: TraceEvent): void {
    if (this.kept >= this.eventsMax) {
      this.dropped++;
      return;
    }
    this.kept++;
    if (this.fd === undefined) {
      this.events.push(event);
      return;
    }
    this.recorded.push(event);
  }

  private append(text: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    if (this.pendingBytes + text.length * 3 > FLUSH_BYTES) {
      this.flush();
      if (text.length * 3 > FLUSH_BYTES) {
        writeSync(this.fd!, text);
        return;
      }
    }
    this.pendingBytes += this.pending!.write(text, this.pendingBytes);
  }

  private flush(): void {
    if (this.fd === undefined || this.pendingBytes === 0) return;
    writeSync(this.fd, this.pending!, 0, this.pendingBytes);
    this.pendingBytes = 0;
  }

  /** A complete event ('X'): `name` on thread `tid` from `startMs` to `endMs`. */
  span({ name, cat, tid, startMs, endMs, args }: Span): void {
    if (!this.enabled) return;
    const ts = this.us(startMs);
    // From the rounded end, so a span ends where its rounded end says, not a rounding later.
    const dur = Math.max(0, Math.round((this.us(endMs) - ts) * 1000) / 1000);
    this.push(withArgs({ name, cat, ph: 'X', ts, dur, pid: this.pid, tid }, args));
  }

  instant(name: string, cat: string, tid: number, atMs: number, args?: Record<string, unknown>): void {
    if (!this.enabled) return;
    this.push(withArgs({ name, cat, ph: 'i', s: 't', ts: this.us(atMs), pid: this.pid, tid }, args));
  }

  private flowKey(address: number): number {
    return address - (address % this.flowPageBytes);
  }

  /** The open flow of the fault on `address`'s page, begun by whichever of its events came first. */
  private flowOf(address: number): { key: number; flow: Flow } {
    const key = this.flowKey(address);
    let flow = this.flows.get(key);
    if (flow === undefined) {
      flow = { id: this.nextFlowId++, blocked: false, served: false };
      this.flows.set(key, flow);
    }
    return { key, flow };
  }

  /**
   * A step of the flow of the fault at `address`: the handler read its
   * message, or ran the ioctl resolving it. `atMs` must lie inside the span
   * on `tid` the step belongs to; `nudge` moves it a nanosecond later (1) or
   * earlier (-1), to sit inside a span that starts or ends there. `last` says
   * the handler is done with this fault (its flow closes once the vCPU woke).
   */
  flowStep(address: number, tid: number, atMs: number, nudge: -1 | 0 | 1 = 0, last = false): void {
    if (!this.enabled) return;
    const { key, flow } = this.flowOf(address);
    const ts = Math.max(0, Math.round((this.us(atMs) + nudge * NS) * 1000) / 1000);
    this.push({ name: 'fault', cat: 'fault flow', ph: 't', id: flow.id, ts, pid: this.pid, tid });
    if (!last) return;
    flow.served = true;
    if (flow.blocked) this.flows.delete(key);
  }

  /** The vCPU's sleep, and the flow from its fault to its wake through the handler's steps. */
  blocked(tid: number, address: number, startMs: number, endMs: number): void {
    if (!this.enabled) return;
    this.span({
      name: 'blocked on userfaultfd',
      cat: 'vcpu',
      tid,
      startMs,
      endMs,
      args: {
        address: `0x${address.toString(16)}`,
      },
    });
    const { key, flow } = this.flowOf(address);
    // A second vCPU asleep on the same page gets a flow of its own (start and end only).
    const id = flow.blocked ? this.nextFlowId++ : flow.id;
    flow.blocked = true;
    if (flow.served) this.flows.delete(key);
    const start = this.us(startMs);
    const end = Math.max(start, Math.round((this.us(endMs) - NS) * 1000) / 1000);
    this.push({ name: 'fault', cat: 'fault flow', ph: 's', id, ts: start, pid: this.pid, tid });
    this.push({ name: 'fault', cat: 'fault flow', ph: 'f', bp: 'e', id, ts: end, pid: this.pid, tid });
  }

  private metadataEvents(): TraceEvent[] {
    const names: TraceEvent[] = [...this.threadNames].map(([tid, name]) => ({
      name: 'thread_name',
      cat: '__metadata',
      ph: 'M',
      ts: 0,
      pid: this.pid,
      tid,
      args: { name },
    }));
    if (this.processName !== undefined) {
      names.unshift({
        name: 'process_name',
        cat: '__metadata',
        ph: 'M',
        ts: 0,
        pid: this.pid,
        tid: 0,
        args: { name: this.processName },
      });
    }
    return names;
  }

  private otherData(metadata: Record<string, unknown>): Record<string, unknown> {
    return {
      producer: 'faultline',
      version: 1,
      ...metadata,
      ...(this.dropped === 0
        ? {}
        : { capped: `only the first ${this.kept} events are kept; ${this.dropped} later ones were dropped` }),
    };
  }

  /** The trace as a Chrome Trace Event JSON document (a trace kept in memory). */
  toJson(metadata: Record<string, unknown> = {}): string {
    return JSON.stringify({
      traceEvents: [...this.metadataEvents(), ...this.events],
      displayTimeUnit: 'ms',
      otherData: this.otherData(metadata),
    });
  }

  /**
   * Writes the trace to `file`; a streamed trace is finished and closed (its
   * file is the one it was opened with). Returns the events dropped over the cap.
   */
  write(file: string, metadata: Record<string, unknown> = {}): number {
    if (this.fd === undefined) {
      writeFileSync(file, this.toJson(metadata));
      return this.dropped;
    }
    if (file !== this.file) throw new Error(`trace: streamed to ${this.file}, not ${file}`);
    const otherData = JSON.stringify(this.otherData(metadata));
    for (let i = 0; i < this.recorded.length; i++)
      this.append(`${i === 0 ? '' : ',\n'}${JSON.stringify(this.recorded.event(i))}`);
    for (const event of this.metadataEvents()) {
      this.append(`${this.kept === 0 ? '' : ',\n'}${JSON.stringify(event)}`);
      this.kept++;
    }
    this.append(`\n],"displayTimeUnit":"ms","otherData":${otherData}}\n`);
    this.flush();
    closeSync(this.fd);
    this.fd = undefined;
    return this.dropped;
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
