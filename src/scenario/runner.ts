/**
 * Runs a scenario over the process API, so it runs on any backend. Names
 * are bound to files, maps, uffds, threads and processes; places are map +
 * offset; every uffd ioctl is issued with its raw struct so that mode bits,
 * unaligned sources and "unwritten" result fields behave exactly as a C
 * program would see them.
 */
import type {
  KernelBackend,
  ProcessBackend,
  ThreadAccess,
  ThreadBackend,
  ThreadResult,
} from '../api/backend.ts';
import { WouldBlockError } from '../api/backend.ts';
import { featureMask, Process, Uffd } from '../api/process.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  faultFlagNames,
  featureNames,
  ioctlNames,
  MADV_DONTNEED,
  MADV_FREE,
  MADV_PAGEOUT,
  MADV_REMOVE,
  MAP_ANONYMOUS,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  O_RDONLY,
  POLLERR,
  POLLHUP,
  POLLIN,
  PROT_READ,
  PROT_WRITE,
  REGISTER_MODE_BITS,
  siCodeName,
  signalName,
  signalNumber,
  UFFDIO_CONTINUE,
  UFFDIO_CONTINUE_MODE_DONTWAKE,
  UFFDIO_CONTINUE_MODE_WP,
  UFFDIO_COPY,
  UFFDIO_COPY_MODE_DONTWAKE,
  UFFDIO_COPY_MODE_WP,
  UFFDIO_MOVE,
  UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
  UFFDIO_MOVE_MODE_DONTWAKE,
  UFFDIO_POISON,
  UFFDIO_POISON_MODE_DONTWAKE,
  UFFDIO_REGISTER,
  UFFDIO_UNREGISTER,
  UFFDIO_WAKE,
  UFFDIO_WRITEPROTECT,
  UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
  UFFDIO_WRITEPROTECT_MODE_WP,
  UFFDIO_ZEROPAGE,
  UFFDIO_ZEROPAGE_MODE_DONTWAKE,
} from '../uapi/constants.ts';
import { EEXIST, errnoName, KernelError, SignalError } from '../uapi/errno.ts';
import {
  decodeUffdioRegister,
  decodeUffdMsgs,
  encodeUffdioContinue,
  encodeUffdioCopy,
  encodeUffdioMove,
  encodeUffdioPoison,
  encodeUffdioRange,
  encodeUffdioRegister,
  encodeUffdioWriteprotect,
  encodeUffdioZeropage,
  UFFD_MSG_SIZE,
} from '../uapi/structs.ts';
import type { Step } from './parse.ts';
import { errnoOf, type ObservedResult, PLACE_ADDRESSES, type PlaceAddresses } from './result.ts';
import type { DataSpec, Int64 } from './schema.ts';

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
  readonly uffd: import('../api/process.ts').Uffd;
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

const MODE_BITS: Record<string, Record<string, number>> = {
  copy: { dontwake: UFFDIO_COPY_MODE_DONTWAKE, wp: UFFDIO_COPY_MODE_WP },
  zeropage: { dontwake: UFFDIO_ZEROPAGE_MODE_DONTWAKE },
  continue: { dontwake: UFFDIO_CONTINUE_MODE_DONTWAKE, wp: UFFDIO_CONTINUE_MODE_WP },
  writeprotect: { wp: UFFDIO_WRITEPROTECT_MODE_WP, dontwake: UFFDIO_WRITEPROTECT_MODE_DONTWAKE },
  poison: { dontwake: UFFDIO_POISON_MODE_DONTWAKE },
  move: { dontwake: UFFDIO_MOVE_MODE_DONTWAKE, allow_src_holes: UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES },
};

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

function modeBits(op: string, args: Record<string, unknown>): bigint {
  if (typeof args.mode_bits === 'number' || typeof args.mode_bits === 'bigint') return BigInt(args.mode_bits);
  let bits = 0;
  for (const name of (args.mode as string[] | undefined) ?? []) bits |= MODE_BITS[op]![name]!;
  return BigInt(bits);
}

/** Issues a range ioctl with its raw struct and reports errno and the result field. */
function rangeIoctl(
  backend: ProcessBackend,
  fd: number,
  request: number,
  arg: Uint8Array,
  fieldOffset: number | null,
  field: string,
): ObservedResult {
  const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
  if (fieldOffset !== null) view.setBigInt64(fieldOffset, BigInt(PROGRESS_PRESET), true);
  const result: ObservedResult = {};
  try {
    backend.ioctl(fd, request, arg);
  } catch (error) {
    result.errno = errnoOf(error);
  }
  if (fieldOffset !== null) {
    const value = Number(view.getBigInt64(fieldOffset, true));
    result[field] = value === PROGRESS_PRESET ? 'unwritten' : value;
  }
  return result;
}

const PROT: Record<string, number> = { rw: PROT_READ | PROT_WRITE, r: PROT_READ, none: 0 };

/** Runs one step; returns what was observed. Throws UnsupportedStep for ops the backend lacks. */
export async function runStep(context: ScenarioContext, step: Step): Promise<ObservedResult> {
  const a = step.args;
  const processName: string = a.process ?? 'main';
  const process = context.process(processName);
  const backend = process.backend;
  const observe = (call: () => void): ObservedResult => {
    try {
      call();
      return {};
    } catch (error) {
      return { errno: errnoOf(error) };
    }
  };
  switch (step.op) {
    case 'memfd':
      return observe(() => {
        const fd = process.memfd(a.name, { size: a.size, hugetlb: a.hugetlb === true });
        context.files.set(a.name, { process: processName, fd });
      });
    case 'guest_memfd':
      return observe(() => {
        const fd = process.guestMemfd({
          size: a.size,
          mmap: a.mmap ?? true,
          ...(a.init_shared === undefined ? {} : { initShared: a.init_shared }),
        });
        context.files.set(a.name, { process: processName, fd });
      });
    case 'mmap':
      return observe(() => {
        let fd = -1;
        if (a.file !== undefined) {
          fd = context.files.get(a.file)!.fd;
          if (a.fd_readonly === true) fd = backend.reopen(fd, O_RDONLY);
        }
        const shared = a.shared === true;
        let flags = shared ? MAP_SHARED : MAP_PRIVATE;
        if (fd < 0) flags |= MAP_ANONYMOUS;
        if (a.hugetlb !== undefined && a.hugetlb !== false && fd < 0)
          flags |= MAP_HUGETLB | (a.hugetlb === '1G' ? 30 << 26 : 0);
        const address = backend.mmap({
          address: 0,
          length: a.length,
          prot: PROT[a.prot ?? 'rw']!,
          flags,
          fd,
          offset: a.offset ?? 0,
        });
        if (a.fd_readonly === true) backend.close(fd);
        context.maps.set(a.name, { process: processName, address, length: a.length });
      });
    case 'mprotect':
      return observe(() =>
        process.mprotect(
          context.address(a.map, a.offset),
          Number(context.lengthOf(a.map, a.offset, a.length)),
          PROT[a.prot]!,
        ),
      );
    case 'fallocate':
      return observe(() =>
        process.fallocate(
          context.files.get(a.file)!.fd,
          FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
          a.offset,
          a.length,
        ),
      );
    case 'pwrite':
      return observe(() => process.pwrite(context.files.get(a.file)!.fd, dataBytes(a.data), a.offset));
    case 'pread': {
      try {
        return { data: process.pread(context.files.get(a.file)!.fd, a.length, a.offset) };
      } catch (error) {
        return { errno: errnoOf(error) };
      }
    }
    case 'write':
    case 'read': {
      const address = context.address(a.map, a.offset);
      try {
        if (step.op === 'write') {
          process.write(address, dataBytes(a.data));
          return {};
        }
        return { data: process.read(address, a.length) };
      } catch (error) {
        if (error instanceof SignalError) return { signal: error.signalName };
        if (error instanceof WouldBlockError) {
          throw new Error(`step ${step.index} (${step.op}) would block on a userfaultfd fault; use a thread`);
        }
        return { errno: errnoOf(error) };
      }
    }
    case 'thread': {
      const address = context.address(a.map, a.offset);
      const access =
        a.access === 'read'
          ? { kind: 'read' as const, address, length: a.length ?? 1 }
          : a.access === 'write'
            ? { kind: 'write' as const, address, data: dataBytes(a.data) }
            : {
                kind: 'write' as const,
                address,
                data: a.data === undefined ? new Uint8Array(a.length ?? 1) : dataBytes(a.data),
                kernel: true,
              };
      context.threads.set(a.name, process.thread([access], a.name));
      return {};
    }
    case 'join': {
      const thread = context.threads.get(a.thread)!;
      await context.backend.settle();
      const result = thread.result();
      if (result === null) return { state: 'blocked' };
      const observed: ObservedResult = { state: result.state };
      if (result.reads[0] !== undefined) observed.data = result.reads[0];
      if (result.errno !== 0) observed.errno = errnoName(result.errno);
      if (result.signal !== undefined) {
        observed.si_code = siCodeName(result.signal.signal, result.signal.siCode);
        observed.signal = signalName(result.signal.signal);
      }
      return observed;
    }
    case 'exit':
      return observe(() => context.process(a.process).exit());
    case 'madvise':
    case 'munmap':
    case 'mremap':
    case 'fork':
      return runBlockingSyscall(context, step, processName);
    case 'signal': {
      const signo = signalNumber(a.signal);
      if (signo === undefined) throw new Error(`unknown signal ${a.signal}`);
      backend.signalThread(context.threads.get(a.thread)!, signo);
      return {};
    }
    case 'userfaultfd':
      return observe(() => {
        const uffd = process.userfaultfd({
          nonblock: a.nonblock ?? true,
          userModeOnly: a.user_mode_only === true,
          via: a.via ?? 'syscall',
        });
        context.uffds.set(a.name, { process: processName, fd: uffd.fd, uffd });
      });
    case 'api': {
      const { uffd } = context.uffds.get(a.uffd)!;
      try {
        const result = uffd.api(featureMask(a.features ?? []));
        return { features: featureNames(result.features), ioctls: ioctlNames(result.ioctls) };
      } catch (error) {
        return { errno: errnoOf(error) };
      }
    }
    case 'register': {
      const binding = context.uffds.get(a.uffd)!;
      const mode =
        a.mode_bits !== undefined
          ? BigInt(a.mode_bits)
          : BigInt(
              (a.modes as string[]).reduce((bits, name) => bits | REGISTER_MODE_BITS[name as 'missing']!, 0),
            );
      const offset = a.offset ?? 0;
      const arg = encodeUffdioRegister({
        range: {
          start: context.address64(a.map, offset),
          len: BigInt.asUintN(64, BigInt(context.lengthOf(a.map, offset, a.length))),
        },
        mode,
        ioctls: 0n,
      });
      try {
        context.process(binding.process).backend.ioctl(binding.fd, UFFDIO_REGISTER, arg);
        return { ioctls: ioctlNames(decodeUffdioRegister(arg).ioctls) };
      } catch (error) {
        return { errno: errnoOf(error) };
      }
    }
    case 'unregister':
    case 'wake': {
      const binding = context.uffds.get(a.uffd)!;
      const offset = a.offset ?? 0;
      const arg = encodeUffdioRange({
        start: context.address64(a.map, offset),
        len: BigInt.asUintN(64, BigInt(context.lengthOf(a.map, offset, a.length))),
      });
      const request = step.op === 'wake' ? UFFDIO_WAKE : UFFDIO_UNREGISTER;
      return rangeIoctl(context.process(binding.process).backend, binding.fd, request, arg, null, '');
    }
    case 'read_event': {
      const observed = readEvent(context, a.uffd);
      const child = observed.child_uffd as { fd: number; reader: Process } | undefined;
      if (child !== undefined) {
        // The FORK event installed an fd in the reader's process; the scenario names it.
        const name: string = step.expect?.child_uffd ?? `child-of-${a.uffd}-${step.index}`;
        const readerName = context.uffds.get(a.uffd)!.process;
        context.uffds.set(name, {
          process: readerName,
          fd: child.fd,
          uffd: new Uffd(child.reader, child.fd),
        });
        observed.child_uffd = name;
      }
      return observed;
    }
    case 'read_raw': {
      const binding = context.uffds.get(a.uffd)!;
      try {
        const bytes = context.process(binding.process).backend.read(binding.fd, a.buffer);
        return { count: bytes.byteLength / UFFD_MSG_SIZE };
      } catch (error) {
        return { errno: errnoOf(error) };
      }
    }
    case 'poll': {
      const binding = context.uffds.get(a.uffd)!;
      const revents = context.process(binding.process).backend.poll(binding.fd);
      const events: string[] = [];
      if (revents & POLLIN) events.push('in');
      if (revents & POLLERR) events.push('err');
      if (revents & POLLHUP) events.push('hup');
      return { events };
    }
    case 'copy': {
      const binding = context.uffds.get(a.uffd)!;
      const caller = context.process(binding.process);
      let src: bigint;
      if (a.src !== undefined) src = context.address64(a.src.map, a.src.offset ?? 0);
      else {
        const data = dataBytes(a.data);
        const srcOffset = Number(a.src_offset ?? 0);
        const padded = new Uint8Array(srcOffset + data.byteLength);
        padded.set(data, srcOffset);
        const backed = typeof a.length === 'bigint' ? a.length : srcOffset + a.length;
        src = BigInt(context.sourceBuffer(binding.process, padded, backed) + srcOffset);
      }
      const arg = encodeUffdioCopy({
        dst: context.address64(a.map, a.offset),
        src,
        len: BigInt(a.length),
        mode: modeBits('copy', a),
        copy: 0n,
      });
      return rangeIoctl(caller.backend, binding.fd, UFFDIO_COPY, arg, 32, 'copy');
    }
    case 'zeropage':
    case 'continue':
    case 'poison': {
      const binding = context.uffds.get(a.uffd)!;
      const range = { start: context.address64(a.map, a.offset), len: BigInt(a.length) };
      const mode = modeBits(step.op, a);
      const [request, arg, field] =
        step.op === 'zeropage'
          ? [UFFDIO_ZEROPAGE, encodeUffdioZeropage({ range, mode, zeropage: 0n }), 'zeropage']
          : step.op === 'continue'
            ? [UFFDIO_CONTINUE, encodeUffdioContinue({ range, mode, mapped: 0n }), 'mapped']
            : [UFFDIO_POISON, encodeUffdioPoison({ range, mode, updated: 0n }), 'updated'];
      return rangeIoctl(context.process(binding.process).backend, binding.fd, request, arg, 24, field);
    }
    case 'writeprotect': {
      const binding = context.uffds.get(a.uffd)!;
      const arg = encodeUffdioWriteprotect({
        range: { start: context.address64(a.map, a.offset), len: BigInt(a.length) },
        mode: modeBits('writeprotect', a),
      });
      return rangeIoctl(
        context.process(binding.process).backend,
        binding.fd,
        UFFDIO_WRITEPROTECT,
        arg,
        null,
        '',
      );
    }
    case 'move': {
      const binding = context.uffds.get(a.uffd)!;
      const arg = encodeUffdioMove({
        dst: context.address64(a.dst.map, a.dst.offset ?? 0),
        src: context.address64(a.src.map, a.src.offset ?? 0),
        len: BigInt(a.length),
        mode: modeBits('move', a),
        move: 0n,
      });
      return rangeIoctl(context.process(binding.process).backend, binding.fd, UFFDIO_MOVE, arg, 32, 'move');
    }
    case 'close':
      return observe(() => {
        context.uffds.get(a.uffd)!.uffd.close();
      });
    case 'pagemap': {
      const pages = backend.pagemap(context.address(a.map, a.offset), Math.ceil(a.length / 4096));
      return {
        pages: pages.map((page) => ({
          present: page.present,
          uffd_wp: page.uffdWp,
          marker: page.marker,
          zero_page: page.zeroPage,
        })),
      };
    }
    case 'vmas': {
      const map = context.maps.get(a.map)!;
      const owner = context.process(a.process ?? map.process);
      const vmas = owner.backend.vmas(map.address, map.address + map.length);
      return { count: vmas.length, flags: vmas.map((vma) => [...vma.modes]) };
    }
    default:
      throw new UnsupportedStep(
        `op '${step.op}' is not supported by the ${context.backend.name} backend yet`,
      );
  }
}

function readEvent(context: ScenarioContext, uffdName: string): ObservedResult {
  const binding = context.uffds.get(uffdName)!;
  let messages: ReturnType<typeof decodeUffdMsgs>;
  try {
    messages = decodeUffdMsgs(context.process(binding.process).backend.read(binding.fd, UFFD_MSG_SIZE));
  } catch (error) {
    return { errno: errnoOf(error) };
  }
  const message = messages[0]!;
  // The monitored process is the one that registered: faults are reported in its address space.
  const owner = binding.process;
  switch (message.event) {
    case 'pagefault': {
      const place = context.place(owner, Number(message.address)) ?? {
        map: '?',
        offset: Number(message.address),
      };
      return withAddresses(
        {
          event: 'pagefault',
          map: place.map,
          offset: place.offset,
          flags: faultFlagNames(message.flags),
          ptid: message.ptid === 0 ? 0 : context.threadName(message.ptid),
        },
        { place: Number(message.address) },
      );
    }
    case 'remove':
    case 'unmap': {
      const place = context.place(owner, Number(message.start)) ?? {
        map: '?',
        offset: Number(message.start),
      };
      return withAddresses(
        {
          event: message.event,
          map: place.map,
          offset: place.offset,
          length: Number(message.end - message.start),
        },
        { place: Number(message.start) },
      );
    }
    case 'remap':
      return withAddresses(
        {
          event: 'remap',
          from: context.place(owner, Number(message.from)),
          to: context.place(owner, Number(message.to)),
          length: Number(message.len),
        },
        { from: Number(message.from), to: Number(message.to) },
      );
    case 'fork': {
      const reader = context.process(binding.process);
      return { event: 'fork', child_uffd: { fd: message.ufd, reader } };
    }
    default:
      return { event: 'unknown' };
  }
}

/** Attaches the addresses behind an event's places (compared by address, never shown). */
function withAddresses(observed: ObservedResult, addresses: PlaceAddresses): ObservedResult {
  Object.defineProperty(observed, PLACE_ADDRESSES, { value: addresses, enumerable: false });
  return observed;
}

export { KernelError };

const ADVICE: Record<string, number> = {
  dontneed: MADV_DONTNEED,
  free: MADV_FREE,
  remove: MADV_REMOVE,
  pageout: MADV_PAGEOUT,
};

/**
 * fork, mremap, madvise and munmap can sleep until the monitor reads the
 * event they raise, so they run in a thread of their own: if the call
 * sleeps, the step goes to the background and is checked when it returns.
 */
async function runBlockingSyscall(
  context: ScenarioContext,
  step: Step,
  processName: string,
): Promise<ObservedResult> {
  const a = step.args;
  const process = context.process(processName);
  let access: ThreadAccess;
  let finish: (result: ThreadResult) => ObservedResult;
  const errnoOrNothing = (value: number): ObservedResult => (value < 0 ? { errno: errnoName(-value) } : {});
  switch (step.op) {
    case 'madvise':
      access = {
        kind: 'syscall',
        call: 'madvise',
        args: [
          context.address(a.map, a.offset),
          Number(context.lengthOf(a.map, a.offset, a.length)),
          ADVICE[a.advice]!,
        ],
      };
      finish = (result) => errnoOrNothing(result.returns[0]!);
      break;
    case 'munmap':
      access = {
        kind: 'syscall',
        call: 'munmap',
        args: [context.address(a.map, a.offset), Number(context.lengthOf(a.map, a.offset, a.length))],
      };
      finish = (result) => errnoOrNothing(result.returns[0]!);
      break;
    case 'mremap': {
      const map = context.maps.get(a.map)!;
      const newLength = Number(a.length ?? map.length);
      // Without `onto` it still moves: onto a fresh reservation of the new length, as a same-length
      // MREMAP_MAYMOVE alone would leave the mapping where it is (SCENARIOS.md).
      const target =
        a.onto === undefined
          ? context.runnerMapping(processName, newLength, true)
          : context.maps.get(a.onto)!.address;
      // The destination is fixed, so `to` names it at once: events read while the mremap waits on
      // them can name it.
      context.maps.set(a.to, { process: processName, address: target, length: newLength });
      access = {
        kind: 'syscall',
        call: 'mremap',
        args: [map.address, map.length, newLength, MREMAP_MAYMOVE | MREMAP_FIXED, target],
      };
      finish = (result) => {
        const value = result.returns[0]!;
        if (value < 0) {
          // `to` keeps naming the destination, so later steps on it fail as the kernel fails them
          // instead of naming nothing; a reservation stays (a failed move of several VMAs may have
          // moved some onto it already).
          return { errno: errnoName(-value) };
        }
        context.maps.set(a.to, { process: processName, address: value, length: newLength });
        return {};
      };
      break;
    }
    default: {
      access = { kind: 'syscall', call: 'fork', args: [] };
      finish = (result) => {
        const value = result.returns[0]!;
        if (value < 0) return { errno: errnoName(-value) };
        context.processes.set(a.name, new Process(result.children[0]!));
        return {};
      };
    }
  }
  // A call whose process died under it (a signal, on the host an agent that crashed) never returned.
  const returned = finish;
  const ended = (result: ThreadResult): ObservedResult =>
    result.state === 'done' ? returned(result) : { signal: signalName(result.signal?.signal ?? 0) };
  const thread = process.thread([access], `${step.op}@${step.index}`);
  await context.backend.settle();
  const result = thread.result();
  if (result !== null) return ended(result);
  context.background.push({ step, thread, finish: ended });
  return { background: true };
}
