/**
 * The state of one scenario run: what each name (file, map, uffd, thread,
 * process) is bound to, the runner's own memory, and the helpers every op's
 * function shares.
 */
import type { KernelBackend, ThreadBackend, ThreadResult } from '../api/backend.ts';
import { Process, type Uffd } from '../api/process.ts';
import { MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PROT_READ, PROT_WRITE } from '../uapi/constants.ts';
import { EEXIST, KernelError } from '../uapi/errno.ts';
import { errnoOf, type ObservedResult } from './result.ts';
import type { AnyOpArgs, DataSpec, Int64, OpArgs, OpName, Step, StepOf } from './schema.ts';

/** The value the runner presets result fields to, so "unwritten" can be told apart. */
export const PROGRESS_PRESET = -0x5eed;

/** The runner's own memory keeps this far below the scenario's maps (and aligned to it). */
const RUNNER_GAP = 2 * 1024 * 1024;

export class UnsupportedStep extends Error {
  override name = 'UnsupportedStep';
}

interface MapBinding {
  readonly process: string;
  readonly address: number;
  readonly length: number;
}

interface UffdBinding {
  readonly process: string;
  readonly fd: number;
  readonly uffd: Uffd;
}

export function dataBytes(spec: DataSpec): Uint8Array {
  if ('text' in spec) return new TextEncoder().encode(spec.text);
  if ('hex' in spec) {
    const digits = spec.hex.replace(/\s+/g, '');
    const bytes = new Uint8Array(digits.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = Number.parseInt(digits.slice(i * 2, i * 2 + 2), 16);
    return bytes;
  }
  return new Uint8Array(spec.length as number).fill(spec.fill);
}

/** The state of one scenario run: what each name is bound to. */
export class ScenarioContext {
  readonly processes = new Map<string, Process>();
  readonly files = new Map<string, { process: string; fd: number }>();
  readonly maps = new Map<string, MapBinding>();
  readonly uffds = new Map<string, UffdBinding>();
  readonly threads = new Map<string, ThreadBackend>();
  private readonly staging = new Map<string, { address: number; length: number; dirty: number }>();
  /** Ranges of the runner's own memory (source buffers, mremap reservations), in every process. */
  private readonly runnerRanges: Array<{ start: number; length: number }> = [];

  constructor(readonly backend: KernelBackend) {
    this.processes.set('main', new Process(backend.self));
  }

  process(name: string | undefined): Process {
    return this.processes.get(name ?? 'main')!;
  }

  /** A place as a number (a syscall argument); an offset beyond 2^53 is only approximate here. */
  address(map: string, offset: Int64 = 0): number {
    return this.maps.get(map)!.address + Number(offset);
  }

  /** A place as a u64 (a uffd ioctl field), exact for any offset: the sum wraps as in C. */
  address64(map: string, offset: Int64 = 0): bigint {
    return BigInt.asUintN(64, BigInt(this.maps.get(map)!.address) + BigInt(offset));
  }

  /** The address range a map name stands for (places are compared by address). */
  range(map: string): { start: number; length: number } | undefined {
    const binding = this.maps.get(map);
    return binding === undefined ? undefined : { start: binding.address, length: binding.length };
  }

  /** The default length of a map operation: from `offset` to the end of the map. */
  lengthOf(map: string, offset: Int64 = 0, length?: Int64): Int64 {
    return length ?? this.maps.get(map)!.length - Number(offset);
  }

  /**
   * A private buffer in `process` holding `data` then zeros, backing
   * `length` bytes when it can: a length it cannot back (beyond 2^53, or one
   * the kernel refuses to map) gets a buffer for the data alone, and the
   * ioctl is still sent with the length as written.
   */
  sourceBuffer(processName: string, data: Uint8Array, length: Int64): number {
    const process = this.process(processName);
    const pages = (bytes: number) => Math.max(Math.ceil(bytes / 4096) * 4096, 4096);
    const forData = pages(data.byteLength);
    let buffer = this.staging.get(processName);
    const wanted = typeof length === 'bigint' ? forData : Math.max(pages(length), forData);
    if (buffer === undefined || buffer.length < wanted) {
      if (buffer !== undefined) process.munmapIsolated(buffer.address, buffer.length);
      this.staging.delete(processName);
      let address: number;
      let size = wanted;
      try {
        address = this.runnerMapping(processName, wanted);
      } catch (error) {
        if (!(error instanceof KernelError) || wanted === forData) throw error;
        size = forData;
        address = this.runnerMapping(processName, forData);
      }
      buffer = { address, length: size, dirty: 0 };
      this.staging.set(processName, buffer);
    }
    // A fresh mapping reads zero; only what an earlier step wrote needs clearing.
    if (buffer.dirty > 0) process.write(buffer.address, new Uint8Array(buffer.dirty));
    process.write(buffer.address, data);
    buffer.dirty = data.byteLength;
    return buffer.address;
  }

  /**
   * Runner memory in `process`: `length` bytes read-write between PROT_NONE
   * guard pages (or, with `reserve`, one PROT_NONE reservation without
   * guards), placed with MAP_FIXED_NOREPLACE below every range a scenario
   * map covers or covered, so it never lands where a scenario map was.
   */
  runnerMapping(processName: string, length: number, reserve = false): number {
    const process = this.process(processName);
    const guard = reserve ? 0 : 4096;
    const total = Math.ceil(length / 4096) * 4096 + 2 * guard;
    let floor = Number.POSITIVE_INFINITY;
    for (const map of this.maps.values()) floor = Math.min(floor, map.address);
    for (const range of this.runnerRanges) floor = Math.min(floor, range.start);
    const step = Math.ceil((total + RUNNER_GAP) / RUNNER_GAP) * RUNNER_GAP;
    let at = Number.isFinite(floor) ? Math.floor((floor - total) / RUNNER_GAP) * RUNNER_GAP - RUNNER_GAP : 0;
    for (let tries = 0; tries < 64 && at >= RUNNER_GAP; tries++, at -= step) {
      try {
        process.backend.mmap({
          address: at,
          length: total,
          prot: 0,
          flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
          fd: -1,
          offset: 0,
        });
      } catch (error) {
        if (error instanceof KernelError && error.errno === EEXIST) continue;
        throw error;
      }
      if (!reserve) process.mprotect(at + guard, total - 2 * guard, PROT_READ | PROT_WRITE);
      this.runnerRanges.push({ start: at, length: total });
      return at + guard;
    }
    // Nothing mapped yet (or no room below): the kernel places it, before any scenario map exists.
    const address = reserve ? process.mmap({ length: total, prot: 0 }) : process.mmapIsolated(length);
    this.runnerRanges.push({ start: address - guard, length: total });
    return address;
  }

  /** Translates an address of `process` back to a map name and offset. */
  place(processName: string, address: number): { map: string; offset: number } | undefined {
    // Maps of the process itself first; a forked child's maps keep their parent's names and addresses.
    let fallback: { map: string; offset: number } | undefined;
    for (const [name, map] of this.maps) {
      if (address < map.address || address >= map.address + map.length) continue;
      const place = { map: name, offset: address - map.address };
      if (map.process === processName) return place;
      fallback ??= place;
    }
    return fallback;
  }

  /** Background steps: syscalls asleep until their userfaultfd event is read. */
  readonly background: Array<{
    step: Step;
    thread: ThreadBackend;
    finish: (result: ThreadResult) => ObservedResult;
  }> = [];

  threadName(tid: number): string | number {
    for (const [name, thread] of this.threads) if (thread.tid === tid) return name;
    return tid;
  }
}

/** What one op's function is given: the run's bindings, the step, and the process it runs in. */
export interface OpCall<O extends OpName> {
  readonly context: ScenarioContext;
  readonly step: StepOf<O>;
  readonly args: OpArgs<O>;
  /** The step's `process:` (default main). */
  readonly processName: string;
  readonly process: Process;
}

/** One op's function: runs the step, returns what was observed. */
export type OpFunction<O extends OpName> = (call: OpCall<O>) => ObservedResult | Promise<ObservedResult>;

/** Functions for the ops `Ops`, keyed by op. */
export type OpTable<Ops extends OpName> = { readonly [O in Ops]: OpFunction<O> };

/** The call for `step` in `context`. */
export function opCall<O extends OpName>(context: ScenarioContext, step: StepOf<O>): OpCall<O> {
  const fields: AnyOpArgs = step.args;
  const processName = fields.process ?? 'main';
  return { context, step, args: step.args, processName, process: context.process(processName) };
}

/** Runs `call`: nothing observed when it returns, its errno when the kernel refuses it. */
export function observe(call: () => void): ObservedResult {
  try {
    call();
    return {};
  } catch (error) {
    return { errno: errnoOf(error) };
  }
}

/**
 * A size as a system call argument. One past 2^53 stays the exact bigint
 * the file gave: the process API's argument check refuses it as it refuses
 * any non-number (only the uffd structs carry full u64s).
 */
export function syscallSize(value: Int64): number {
  return value as number;
}
