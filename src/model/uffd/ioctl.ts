/**
 * The userfaultfd file: its ioctls, read(2) and poll(2), decoding and
 * encoding the argument bytes exactly as the kernel does, so that which
 * fields are read and which are written back (and when) match Linux.
 */
import {
  POLLERR,
  POLLHUP,
  POLLIN,
  UFFD_API,
  UFFD_API_FEATURES,
  UFFD_API_IOCTLS,
  UFFD_FEATURE_EVENT_FORK,
  UFFD_FEATURE_EXACT_ADDRESS,
  UFFD_FEATURE_INITIALIZED,
  UFFD_FEATURE_THREAD_ID,
  UFFD_FEATURE_WP_ASYNC,
  UFFD_FEATURE_WP_UNPOPULATED,
  UFFDIO_API,
  UFFDIO_CONTINUE,
  UFFDIO_CONTINUE_MODE_WP,
  UFFDIO_COPY,
  UFFDIO_COPY_MODE_WP,
  UFFDIO_MODE_MASKS,
  UFFDIO_MOVE,
  UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
  UFFDIO_MOVE_MODE_DONTWAKE,
  UFFDIO_POISON,
  UFFDIO_REGISTER,
  UFFDIO_UNREGISTER,
  UFFDIO_WAKE,
  UFFDIO_WRITEPROTECT,
  UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
  UFFDIO_WRITEPROTECT_MODE_WP,
  UFFDIO_ZEROPAGE,
} from '../../uapi/constants.ts';
import { EAGAIN, EFAULT, EINVAL, EPERM, ESRCH } from '../../uapi/errno.ts';
import {
  decodeUffdioApi,
  decodeUffdioMove,
  decodeUffdioRange,
  decodeUffdioRegister,
  encodeUffdMsgPagefault,
  readU64,
  readU64High,
  readU64Low,
  readU64Number,
  UFFD_MSG_SIZE,
  UFFDIO_API_SIZE,
  UFFDIO_CONTINUE_MAPPED_OFFSET,
  UFFDIO_COPY_COPY_OFFSET,
  UFFDIO_MOVE_MOVE_OFFSET,
  UFFDIO_POISON_UPDATED_OFFSET,
  UFFDIO_RANGE_SIZE,
  UFFDIO_REGISTER_IOCTLS_OFFSET,
  UFFDIO_WRITEPROTECT_SIZE,
  UFFDIO_ZEROPAGE_ZEROPAGE_OFFSET,
  u64ToNumber,
  writeInt64Number,
} from '../../uapi/structs.ts';
import { type FailureRecord, hex } from '../failure.ts';
import type { FaultEnvironment } from '../mm/fault.ts';
import type { AddressSpace } from '../mm/mm.ts';
import type { EventReader, FaultWaiter, UffdContext } from './context.ts';
import {
  MFILL_CONTINUE,
  MFILL_COPY,
  MFILL_POISON,
  MFILL_ZEROPAGE,
  MfillBuffers,
  mfillAtomic,
} from './mfill.ts';
import { movePages } from './move.ts';
import { userfaultfdRegister, userfaultfdUnregister } from './register.ts';
import { validateRange, validateUnalignedRange } from './validate.ts';
import { writeProtectRange } from './writeprotect.ts';

/** Who is calling: the caller's address space (for COPY's source) and privileges. */
export interface UffdCaller {
  readonly mm: AddressSpace;
  readonly capSysPtrace: boolean;
}

const BIGINT_TWO_64 = 1n << 64n;

/** Where a fill ioctl writes its result back, and the size of its struct. */
interface ResultField {
  readonly offset: number;
  readonly structBytes: number;
}

/** The result field of each fill ioctl: uffdio_copy.copy, uffdio_zeropage.zeropage, uffdio_continue.mapped, uffdio_poison.updated. */
const RESULT_FIELDS: Record<number, ResultField> = {
  [MFILL_COPY]: { offset: UFFDIO_COPY_COPY_OFFSET, structBytes: 40 },
  [MFILL_ZEROPAGE]: { offset: UFFDIO_ZEROPAGE_ZEROPAGE_OFFSET, structBytes: 32 },
  [MFILL_CONTINUE]: { offset: UFFDIO_CONTINUE_MAPPED_OFFSET, structBytes: 32 },
  [MFILL_POISON]: { offset: UFFDIO_POISON_UPDATED_OFFSET, structBytes: 32 },
};

/** uffdio_move.move. */
const MOVE_RESULT: ResultField = { offset: UFFDIO_MOVE_MOVE_OFFSET, structBytes: 40 };

function writeS64(arg: Uint8Array, offset: number, value: number): void {
  writeInt64Number(arg, offset, value);
}

/** The bits of the u64 mode at `offset` outside `allowed`, as a bigint (for the EINVAL reason only). */
function unknownModeBits(arg: Uint8Array, offset: number, allowed: number): bigint {
  return readU64(arg, offset) & ~BigInt(allowed);
}

/** Whether the u64 mode at `offset` has a bit outside `allowed` (a mask of low bits). */
function hasUnknownModeBits(arg: Uint8Array, offset: number, allowed: number): boolean {
  return (readU64Low(arg, offset) & ~allowed) !== 0 || readU64High(arg, offset) !== 0;
}

function writeU64(arg: Uint8Array, offset: number, value: bigint): void {
  const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
  view.setBigUint64(offset, ((value % BIGINT_TWO_64) + BIGINT_TWO_64) % BIGINT_TWO_64, true);
}

/** copy_from_user of `size` bytes: EFAULT when the buffer is absent or short. */
function readable(failure: FailureRecord, arg: Uint8Array | null, size: number, argument: string): number {
  if (arg === null) return failure.fail(EFAULT, argument, 'bad address');
  if (arg.byteLength < size)
    return failure.fail(EFAULT, argument, `buffer of ${arg.byteLength} bytes is shorter than ${size}`);
  return 0;
}

export class UffdFile {
  /** The fill loop's reusable buffers (COPY's runs and plan): this file's, not the module's. */
  private readonly fillBuffers = new MfillBuffers();

  constructor(
    readonly ctx: UffdContext,
    private readonly env: FaultEnvironment,
    /** Open-file flags (O_NONBLOCK, O_CLOEXEC). */
    public fileFlags: number,
  ) {}

  /** Records why the call failed on the kernel's failure record and returns -errno. */
  private fail(errno: number, argument: string, reason: string): number {
    return this.env.failure.fail(errno, argument, reason);
  }

  get nonblocking(): boolean {
    return (this.fileFlags & 0o4000) !== 0;
  }

  /** ioctl(2) on the userfaultfd. Returns 0 or -errno; writes back into `arg` as Linux does. */
  ioctl(caller: UffdCaller, request: number, arg: Uint8Array | null): number {
    const ctx = this.ctx;
    if (request !== UFFDIO_API && !ctx.initialized) {
      return this.fail(EINVAL, 'uffd', 'UFFDIO_API has not been called on this userfaultfd');
    }
    switch (request) {
      case UFFDIO_API:
        return this.api(caller, arg);
      case UFFDIO_REGISTER:
        return this.register(arg);
      case UFFDIO_UNREGISTER:
        return this.unregister(arg);
      case UFFDIO_WAKE:
        return this.wake(arg);
      case UFFDIO_COPY:
        return this.copy(caller, arg);
      case UFFDIO_ZEROPAGE:
        return this.fill(caller, arg, MFILL_ZEROPAGE);
      case UFFDIO_CONTINUE:
        return this.fill(caller, arg, MFILL_CONTINUE);
      case UFFDIO_POISON:
        return this.fill(caller, arg, MFILL_POISON);
      case UFFDIO_WRITEPROTECT:
        return this.writeProtect(arg);
      case UFFDIO_MOVE:
        return this.move(caller, arg);
      default:
        return this.fail(EINVAL, 'request', `unknown userfaultfd ioctl ${hex(request >>> 0)}`);
    }
  }

  private api(caller: UffdCaller, arg: Uint8Array | null): number {
    const bad = readable(this.env.failure, arg, UFFDIO_API_SIZE, 'uffdio_api');
    if (bad < 0 || arg === null) return bad;
    const value = decodeUffdioApi(arg);
    const zeroAndFail = (errno: number, argument: string, reason: string): number => {
      arg.fill(0, 0, UFFDIO_API_SIZE);
      return this.fail(errno, argument, reason);
    };
    if (value.api !== BigInt(UFFD_API))
      return zeroAndFail(EINVAL, 'api', `${hex(value.api)} is not UFFD_API (0xaa)`);
    let features = value.features;
    if (features & BigInt(UFFD_FEATURE_EVENT_FORK) && !caller.capSysPtrace) {
      return zeroAndFail(EPERM, 'features', 'UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE');
    }
    if (features & BigInt(UFFD_FEATURE_WP_ASYNC)) features |= BigInt(UFFD_FEATURE_WP_UNPOPULATED);
    if ((features & ~BigInt(UFFD_API_FEATURES)) !== 0n) {
      return zeroAndFail(
        EINVAL,
        'features',
        `unsupported bits ${hex(features & ~BigInt(UFFD_API_FEATURES))}`,
      );
    }
    writeU64(arg, 8, BigInt(UFFD_API_FEATURES));
    writeU64(arg, 16, UFFD_API_IOCTLS);
    if (this.ctx.initialized)
      return zeroAndFail(EINVAL, 'uffd', 'UFFDIO_API was already called on this userfaultfd');
    this.ctx.features = Number(features) | UFFD_FEATURE_INITIALIZED;
    return 0;
  }

  private register(arg: Uint8Array | null): number {
    const bad = readable(this.env.failure, arg, 24, 'uffdio_register');
    if (bad < 0 || arg === null) return bad;
    const value = decodeUffdioRegister(padded(arg, 32));
    const result = userfaultfdRegister(
      this.ctx,
      u64ToNumber(value.range.start),
      u64ToNumber(value.range.len),
      value.mode,
      this.env.hooks,
    );
    if (typeof result === 'number') return result;
    if (arg.byteLength < 32)
      return this.fail(EFAULT, 'uffdio_register.ioctls', 'buffer too short to write back');
    writeU64(arg, UFFDIO_REGISTER_IOCTLS_OFFSET, result);
    return 0;
  }

  private unregister(arg: Uint8Array | null): number {
    const bad = readable(this.env.failure, arg, UFFDIO_RANGE_SIZE, 'uffdio_range');
    if (bad < 0 || arg === null) return bad;
    const value = decodeUffdioRange(arg);
    return userfaultfdUnregister(
      this.ctx,
      u64ToNumber(value.start),
      u64ToNumber(value.len),
      (start, length) => this.ctx.wakeRange(start, length),
      this.env.hooks,
    );
  }

  private wake(arg: Uint8Array | null): number {
    const bad = readable(this.env.failure, arg, UFFDIO_RANGE_SIZE, 'uffdio_range');
    if (bad < 0 || arg === null) return bad;
    const value = decodeUffdioRange(arg);
    const start = u64ToNumber(value.start);
    const length = u64ToNumber(value.len);
    const invalid = validateRange(this.env.failure, start, length, 'range');
    if (invalid < 0) return invalid;
    this.ctx.wakeRange(start, length);
    return 0;
  }

  private copy(caller: UffdCaller, arg: Uint8Array | null): number {
    const ctx = this.ctx;
    if (ctx.mmapChanging > 0) return this.eagainIntoField(arg, UFFDIO_COPY_COPY_OFFSET);
    const bad = readable(this.env.failure, arg, 32, 'uffdio_copy');
    if (bad < 0 || arg === null) return bad;
    // The fields are read in place (struct uffdio_copy: dst, src, len, mode), as numbers.
    const dst = readU64Number(arg, 0);
    const src = readU64Number(arg, 8);
    const length = readU64Number(arg, 16);
    let invalid = validateUnalignedRange(this.env.failure, src, length, 'src');
    if (invalid < 0) return invalid;
    invalid = validateRange(this.env.failure, dst, length, 'dst');
    if (invalid < 0) return invalid;
    const allowed = UFFDIO_MODE_MASKS.copy;
    if (hasUnknownModeBits(arg, 24, allowed))
      return this.fail(EINVAL, 'mode', `unknown mode bits ${hex(unknownModeBits(arg, 24, allowed))}`);
    if (ctx.mm.dead) return this.fail(ESRCH, 'uffd', 'the registered process has exited');
    const mode = readU64Low(arg, 24);
    const result = mfillAtomic(
      this.env,
      ctx,
      {
        kind: MFILL_COPY,
        dst,
        src,
        lengthBytes: length,
        writeProtect: (mode & UFFDIO_COPY_MODE_WP) !== 0,
        sourceMm: caller.mm,
      },
      this.fillBuffers,
    );
    return this.finishFill(
      arg,
      RESULT_FIELDS[MFILL_COPY]!,
      { dst, lengthBytes: length },
      result,
      (mode & 1) !== 0,
    );
  }

  /** ZEROPAGE, CONTINUE and POISON share one argument layout: range, mode, result. */
  private fill(_caller: UffdCaller, arg: Uint8Array | null, kind: number): number {
    const ctx = this.ctx;
    if (ctx.mmapChanging > 0) return this.eagainIntoField(arg, RESULT_FIELDS[kind]!.offset);
    const bad = readable(this.env.failure, arg, 24, 'arg');
    if (bad < 0 || arg === null) return bad;
    // uffdio_zeropage, uffdio_continue and uffdio_poison: range (start, len) and mode, read in place.
    const start = readU64Number(arg, 0);
    const length = readU64Number(arg, 8);
    const invalid = validateRange(this.env.failure, start, length, 'range');
    if (invalid < 0) return invalid;
    const allowed =
      kind === MFILL_ZEROPAGE
        ? UFFDIO_MODE_MASKS.zeropage
        : kind === MFILL_CONTINUE
          ? UFFDIO_MODE_MASKS.continue
          : UFFDIO_MODE_MASKS.poison;
    if (hasUnknownModeBits(arg, 16, allowed))
      return this.fail(EINVAL, 'mode', `unknown mode bits ${hex(unknownModeBits(arg, 16, allowed))}`);
    if (ctx.mm.dead) return this.fail(ESRCH, 'uffd', 'the registered process has exited');
    const mode = readU64Low(arg, 16);
    const result = mfillAtomic(
      this.env,
      ctx,
      {
        kind,
        dst: start,
        src: 0,
        lengthBytes: length,
        writeProtect: kind === MFILL_CONTINUE && (mode & UFFDIO_CONTINUE_MODE_WP) !== 0,
        sourceMm: ctx.mm,
      },
      this.fillBuffers,
    );
    return this.finishFill(
      arg,
      RESULT_FIELDS[kind]!,
      { dst: start, lengthBytes: length },
      result,
      (mode & 1) !== 0,
    );
  }

  /** mmap_changing: -EAGAIN goes into the result field before the struct is even read. */
  private eagainIntoField(arg: Uint8Array | null, offset: number): number {
    if (arg === null || arg.byteLength < offset + 8) return this.fail(EFAULT, 'arg', 'bad address');
    writeS64(arg, offset, -EAGAIN);
    return this.fail(EAGAIN, 'uffd', this.ctx.changingReason());
  }

  /**
   * Writes a fill's result into its field, wakes the filled range unless
   * DONTWAKE, and turns a partial fill into EAGAIN, as the kernel does.
   */
  private finishFill(
    arg: Uint8Array,
    field: ResultField,
    range: { readonly dst: number; readonly lengthBytes: number },
    result: number,
    dontWake: boolean,
  ): number {
    if (arg.byteLength < field.structBytes)
      return this.fail(EFAULT, 'arg', 'buffer too short to write back the result');
    writeS64(arg, field.offset, result);
    if (result < 0) return result;
    if (!dontWake) this.ctx.wakeRange(range.dst, result);
    if (result < range.lengthBytes)
      return this.fail(EAGAIN, 'len', `only ${result} of ${range.lengthBytes} bytes were done`);
    return 0;
  }

  private move(caller: UffdCaller, arg: Uint8Array | null): number {
    const ctx = this.ctx;
    if (ctx.mmapChanging > 0) return this.eagainIntoField(arg, UFFDIO_MOVE_MOVE_OFFSET);
    const bad = readable(this.env.failure, arg, 32, 'uffdio_move');
    if (bad < 0 || arg === null) return bad;
    if (ctx.mm !== caller.mm)
      return this.fail(EINVAL, 'uffd', 'UFFDIO_MOVE works only from the registered process');
    const value = decodeUffdioMove(padded(arg, 40));
    const dst = u64ToNumber(value.dst);
    const src = u64ToNumber(value.src);
    const length = u64ToNumber(value.len);
    let invalid = validateRange(this.env.failure, dst, length, 'dst');
    if (invalid < 0) return invalid;
    invalid = validateRange(this.env.failure, src, length, 'src');
    if (invalid < 0) return invalid;
    const allowed = BigInt(UFFDIO_MODE_MASKS.move);
    if ((value.mode & ~allowed) !== 0n)
      return this.fail(EINVAL, 'mode', `unknown mode bits ${hex(value.mode & ~allowed)}`);
    if (ctx.mm.dead) return this.fail(ESRCH, 'uffd', 'the registered process has exited');
    const result = movePages(ctx, {
      dst,
      src,
      lengthBytes: length,
      allowSrcHoles: (value.mode & BigInt(UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES)) !== 0n,
    });
    const dontWake = (value.mode & BigInt(UFFDIO_MOVE_MODE_DONTWAKE)) !== 0n;
    return this.finishFill(arg, MOVE_RESULT, { dst, lengthBytes: length }, result, dontWake);
  }

  private writeProtect(arg: Uint8Array | null): number {
    const ctx = this.ctx;
    if (ctx.mmapChanging > 0) return this.fail(EAGAIN, 'uffd', this.ctx.changingReason());
    const bad = readable(this.env.failure, arg, UFFDIO_WRITEPROTECT_SIZE, 'uffdio_writeprotect');
    if (bad < 0 || arg === null) return bad;
    // struct uffdio_writeprotect: range (start, len) and mode, read in place.
    const start = readU64Number(arg, 0);
    const length = readU64Number(arg, 8);
    const invalid = validateRange(this.env.failure, start, length, 'range');
    if (invalid < 0) return invalid;
    const allowed = UFFDIO_MODE_MASKS.writeprotect;
    if (hasUnknownModeBits(arg, 16, allowed))
      return this.fail(EINVAL, 'mode', `unknown mode bits ${hex(unknownModeBits(arg, 16, allowed))}`);
    const mode = readU64Low(arg, 16);
    const protect = (mode & UFFDIO_WRITEPROTECT_MODE_WP) !== 0;
    const dontWake = (mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE) !== 0;
    if (protect && dontWake) return this.fail(EINVAL, 'mode', 'MODE_WP and MODE_DONTWAKE together');
    if (ctx.mm.dead) return this.fail(ESRCH, 'uffd', 'the registered process has exited');
    const result = writeProtectRange(ctx, start, length, protect);
    if (result < 0) return result;
    if (!protect && !dontWake) ctx.wakeRange(start, length);
    return 0;
  }

  /** read(2): whole 32-byte messages, faults before events; never blocks (the caller waits on poll). */
  read(count: number, reader: EventReader): Uint8Array | number {
    const ctx = this.ctx;
    if (!ctx.initialized)
      return this.fail(EINVAL, 'uffd', 'UFFDIO_API has not been called on this userfaultfd');
    if (count < UFFD_MSG_SIZE)
      return this.fail(EINVAL, 'count', `${count} is less than one message (32 bytes)`);
    // Only what is queued now: reading an event lets its syscall queue the next one, after this read.
    const slots = Math.min(Math.floor(count / UFFD_MSG_SIZE), ctx.pending.length + ctx.events.length);
    const out = new Uint8Array(slots * UFFD_MSG_SIZE);
    let written = 0;
    while (written < slots) {
      const waiter = ctx.pending.shift();
      if (waiter !== undefined) {
        ctx.read.push(waiter);
        encodeUffdMsgPagefault(out, written * UFFD_MSG_SIZE, waiter.flags, waiter.address, waiter.ptid);
        written++;
        if (this.env.inject.active) this.injectSignal(waiter);
        continue;
      }
      const event = ctx.events[0];
      if (event === undefined) break;
      const message = event.encode(reader);
      if (typeof message === 'number') {
        // The event stays queued (a FORK whose fd could not be installed).
        if (written === 0) return message;
        break;
      }
      ctx.events.shift();
      out.set(message, written * UFFD_MSG_SIZE);
      written++;
      ctx.eventRead(event);
    }
    if (written === 0) return this.fail(EAGAIN, 'uffd', 'no message is pending');
    return written * UFFD_MSG_SIZE === out.byteLength ? out : out.subarray(0, written * UFFD_MSG_SIZE);
  }

  /**
   * fault_signal: a signal reaches the thread whose message was just read.
   * A user-mode fault sleeps interruptibly, so handle_userfault returns, the
   * message goes from the queue and the access is retried; a kernel-mode
   * fault sleeps killable and stays.
   */
  private injectSignal(waiter: FaultWaiter): void {
    const access = waiter.task.current;
    if (access !== null && access.kind !== 'syscall' && access.kernel === true) return;
    if (!this.env.inject.fire('fault_signal', `tid ${waiter.task.tid} asleep on`, waiter.address)) return;
    this.ctx.interrupt(waiter);
  }

  /** poll(2) revents. */
  poll(): number {
    const ctx = this.ctx;
    if (!ctx.initialized) return POLLERR;
    // The kernel refuses blocking-mode pollers: a read could then block forever.
    if (!this.nonblocking) return POLLERR;
    if (ctx.released) return POLLHUP;
    return ctx.readable ? POLLIN : 0;
  }

  /** The message address and flags a fault reports (used by handle_userfault). */
  static reportedAddress(ctx: UffdContext, address: number, pageSize: number): number {
    return ctx.hasFeature(UFFD_FEATURE_EXACT_ADDRESS) ? address : address - (address % pageSize);
  }

  static reportsThreadId(ctx: UffdContext): boolean {
    return ctx.hasFeature(UFFD_FEATURE_THREAD_ID);
  }
}

/** The argument bytes, zero-extended to `size` so a decoder can read fields the kernel ignores. */
function padded(arg: Uint8Array, size: number): Uint8Array {
  if (arg.byteLength >= size) return arg;
  const copy = new Uint8Array(size);
  copy.set(arg);
  return copy;
}
