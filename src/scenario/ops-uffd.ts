/**
 * Scenario ops on a userfaultfd: creating it, UFFDIO_API and REGISTER,
 * reading and polling it, and the range ioctls, each issued with its raw
 * struct so that mode bits, unaligned sources and "unwritten" result
 * fields behave exactly as a C program would see them.
 */
import { featureMask, Uffd } from '../api/process.ts';
import {
  faultFlagNames,
  featureNames,
  ioctlNames,
  POLLERR,
  POLLHUP,
  POLLIN,
  REGISTER_MODE_BITS,
  UFFDIO_CONTINUE,
  UFFDIO_COPY,
  UFFDIO_MODES,
  UFFDIO_MOVE,
  UFFDIO_POISON,
  UFFDIO_REGISTER,
  UFFDIO_UNREGISTER,
  UFFDIO_WAKE,
  UFFDIO_WRITEPROTECT,
  UFFDIO_ZEROPAGE,
  type UffdioModeIoctl,
} from '../uapi/constants.ts';
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
import {
  dataBytes,
  type OpCall,
  type OpTable,
  observe,
  PROGRESS_PRESET,
  type ScenarioContext,
  syscallSize,
} from './context.ts';
import { errnoOf, type ObservedResult, PLACE_ADDRESSES, type PlaceAddresses } from './result.ts';
import type { OpExpect } from './schema.ts';

/** The range ioctls' ops. */
type UffdioOp = UffdioModeIoctl | 'wake' | 'unregister';

/** Where a range ioctl acts: the destination range, and a source for COPY and MOVE. */
interface UffdioWhere {
  readonly dst: bigint;
  readonly len: bigint;
  readonly src: bigint;
}

/**
 * A range ioctl as a step issues it: the request, its struct built from the
 * step's range and mode bits, and the result field the kernel writes back
 * (its offset in the struct and the name `expect:` gives it).
 */
interface UffdioStep<O extends UffdioOp> {
  readonly request: number;
  encode(where: UffdioWhere, mode: bigint): Uint8Array;
  readonly result: { readonly offset: number; readonly field: keyof OpExpect<O> & string } | null;
}

/** Every range ioctl's request, struct and result field; `UFFDIO_MODES` gives their mode flags. */
const UFFDIO_STEPS: { readonly [O in UffdioOp]: UffdioStep<O> } = {
  copy: {
    request: UFFDIO_COPY,
    encode: ({ dst, src, len }, mode) => encodeUffdioCopy({ dst, src, len, mode, copy: 0n }),
    result: { offset: 32, field: 'copy' },
  },
  zeropage: {
    request: UFFDIO_ZEROPAGE,
    encode: ({ dst, len }, mode) => encodeUffdioZeropage({ range: { start: dst, len }, mode, zeropage: 0n }),
    result: { offset: 24, field: 'zeropage' },
  },
  continue: {
    request: UFFDIO_CONTINUE,
    encode: ({ dst, len }, mode) => encodeUffdioContinue({ range: { start: dst, len }, mode, mapped: 0n }),
    result: { offset: 24, field: 'mapped' },
  },
  poison: {
    request: UFFDIO_POISON,
    encode: ({ dst, len }, mode) => encodeUffdioPoison({ range: { start: dst, len }, mode, updated: 0n }),
    result: { offset: 24, field: 'updated' },
  },
  writeprotect: {
    request: UFFDIO_WRITEPROTECT,
    encode: ({ dst, len }, mode) => encodeUffdioWriteprotect({ range: { start: dst, len }, mode }),
    result: null,
  },
  move: {
    request: UFFDIO_MOVE,
    encode: ({ dst, src, len }, mode) => encodeUffdioMove({ dst, src, len, mode, move: 0n }),
    result: { offset: 32, field: 'move' },
  },
  wake: {
    request: UFFDIO_WAKE,
    encode: ({ dst, len }) => encodeUffdioRange({ start: dst, len }),
    result: null,
  },
  unregister: {
    request: UFFDIO_UNREGISTER,
    encode: ({ dst, len }) => encodeUffdioRange({ start: dst, len }),
    result: null,
  },
};

/** The mode bits a step asks for: `mode_bits` as written, else its `mode:` names through `UFFDIO_MODES`. */
function modeBits<O extends UffdioModeIoctl>(op: O, args: OpCall<O>['args']): bigint {
  if (args.mode_bits !== undefined) return BigInt(args.mode_bits);
  const bits: Readonly<Record<string, number>> = UFFDIO_MODES[op];
  let mode = 0;
  for (const name of (args.mode as readonly string[] | undefined) ?? []) mode |= bits[name]!;
  return BigInt(mode);
}

/**
 * Issues a range ioctl with its raw struct, the result field preset so an
 * unwritten one shows; reports the errno and the field.
 */
function uffdio<O extends UffdioOp>(call: OpCall<O>, where: UffdioWhere, mode: bigint): ObservedResult {
  const { context, step } = call;
  const ioctl = UFFDIO_STEPS[step.op] as UffdioStep<O>;
  const binding = context.uffds.get(call.args.uffd)!;
  const arg = ioctl.encode(where, mode);
  const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
  const { result: field } = ioctl;
  if (field !== null) view.setBigInt64(field.offset, BigInt(PROGRESS_PRESET), true);
  const observed: ObservedResult = {};
  try {
    context.process(binding.process).backend.ioctl(binding.fd, ioctl.request, arg);
  } catch (error) {
    observed.errno = errnoOf(error);
  }
  if (field !== null) {
    const value = Number(view.getBigInt64(field.offset, true));
    observed[field.field] = value === PROGRESS_PRESET ? 'unwritten' : value;
  }
  return observed;
}

/** A fill or protect of `length` bytes at `offset` of a map, with its mode. */
function rangeIoctl<O extends 'zeropage' | 'continue' | 'poison' | 'writeprotect'>(
  call: OpCall<O>,
): ObservedResult {
  const { context, args: a } = call;
  const where = { dst: context.address64(a.map, a.offset), len: BigInt(a.length), src: 0n };
  return uffdio(call, where, modeBits(call.step.op, a));
}

/** WAKE and UNREGISTER: a range from `offset` (default 0), to the map's end unless `length` says. */
function mapRangeIoctl(call: OpCall<'wake'> | OpCall<'unregister'>): ObservedResult {
  const { context, args: a } = call;
  const offset = a.offset ?? 0;
  const where = {
    dst: context.address64(a.map, offset),
    len: BigInt.asUintN(64, BigInt(context.lengthOf(a.map, offset, a.length))),
    src: 0n,
  };
  return uffdio(call as OpCall<'wake'>, where, 0n);
}

/** COPY's source: a place, or the step's data in a runner buffer (at `src_offset`, to test unaligned sources). */
function copySource({ context, args: a }: OpCall<'copy'>): bigint {
  if (a.src !== undefined) return context.address64(a.src.map, a.src.offset ?? 0);
  const binding = context.uffds.get(a.uffd)!;
  const data = dataBytes(a.data!);
  const srcOffset = Number(a.src_offset ?? 0);
  const padded = new Uint8Array(srcOffset + data.byteLength);
  padded.set(data, srcOffset);
  const backed = typeof a.length === 'bigint' ? a.length : srcOffset + a.length;
  return BigInt(context.sourceBuffer(binding.process, padded, backed) + srcOffset);
}

export const RANGE_OPS: OpTable<UffdioOp> = {
  copy: (call) => {
    const { context, args: a } = call;
    const where = { dst: context.address64(a.map, a.offset), src: copySource(call), len: BigInt(a.length) };
    return uffdio(call, where, modeBits('copy', a));
  },
  zeropage: rangeIoctl,
  continue: rangeIoctl,
  poison: rangeIoctl,
  writeprotect: rangeIoctl,
  move: (call) => {
    const { context, args: a } = call;
    const where = {
      dst: context.address64(a.dst.map, a.dst.offset ?? 0),
      src: context.address64(a.src.map, a.src.offset ?? 0),
      len: BigInt(a.length),
    };
    return uffdio(call, where, modeBits('move', a));
  },
  wake: mapRangeIoctl,
  unregister: mapRangeIoctl,
};

function register({ context, args: a }: OpCall<'register'>): ObservedResult {
  const binding = context.uffds.get(a.uffd)!;
  const mode =
    a.mode_bits !== undefined
      ? BigInt(a.mode_bits)
      : BigInt((a.modes ?? []).reduce((bits, name) => bits | REGISTER_MODE_BITS[name]!, 0));
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

function readEventStep({ context, step, args: a }: OpCall<'read_event'>): ObservedResult {
  const observed = readEvent(context, a.uffd);
  const child = observed.child_uffd as { fd: number; reader: Uffd['process'] } | undefined;
  if (child !== undefined) {
    // The FORK event installed an fd in the reader's process; the scenario names it.
    const name: string = step.expect?.child_uffd ?? `child-of-${a.uffd}-${step.index}`;
    const readerName = context.uffds.get(a.uffd)!.process;
    context.uffds.set(name, { process: readerName, fd: child.fd, uffd: new Uffd(child.reader, child.fd) });
    observed.child_uffd = name;
  }
  return observed;
}

export const UFFD_OPS: OpTable<
  'userfaultfd' | 'api' | 'register' | 'read_event' | 'read_raw' | 'poll' | 'close'
> = {
  userfaultfd: ({ context, args: a, process, processName }) =>
    observe(() => {
      const uffd = process.userfaultfd({
        nonblock: a.nonblock ?? true,
        userModeOnly: a.user_mode_only === true,
        via: a.via ?? 'syscall',
      });
      context.uffds.set(a.name, { process: processName, fd: uffd.fd, uffd });
    }),
  api: ({ context, args: a }) => {
    const { uffd } = context.uffds.get(a.uffd)!;
    try {
      const result = uffd.api(featureMask(a.features ?? []));
      return { features: featureNames(result.features), ioctls: ioctlNames(result.ioctls) };
    } catch (error) {
      return { errno: errnoOf(error) };
    }
  },
  register,
  read_event: readEventStep,
  read_raw: ({ context, args: a }) => {
    const binding = context.uffds.get(a.uffd)!;
    try {
      const bytes = context.process(binding.process).backend.read(binding.fd, syscallSize(a.buffer));
      return { count: bytes.byteLength / UFFD_MSG_SIZE };
    } catch (error) {
      return { errno: errnoOf(error) };
    }
  },
  poll: ({ context, args: a }) => {
    const binding = context.uffds.get(a.uffd)!;
    const revents = context.process(binding.process).backend.poll(binding.fd);
    const events: string[] = [];
    if (revents & POLLIN) events.push('in');
    if (revents & POLLERR) events.push('err');
    if (revents & POLLHUP) events.push('hup');
    return { events };
  },
  close: ({ context, args: a }) =>
    observe(() => {
      const { uffd } = context.uffds.get(a.uffd)!;
      // close(2) itself: a second close of the number is EBADF (Uffd.close is idempotent).
      if (uffd.closed) uffd.process.close(uffd.fd);
      else uffd.close();
    }),
};
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
