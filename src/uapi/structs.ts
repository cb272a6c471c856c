/**
 * Byte layouts of the userfaultfd ioctl arguments, of struct uffd_msg and of struct kvm_create_guest_memfd
 * (x86_64, little-endian; shared/uapi-facts.md §2). Both backends encode and decode through this module, so
 * the model and the host kernel can never disagree about where a field lives.
 *
 * Every u64 field is a `bigint` holding the raw unsigned value; the result fields the kernel writes back
 * (copy, zeropage, mapped, updated, move) are __s64 and decode as signed bigints, so -EAGAIN reads as -11n.
 * Encoding reduces a bigint modulo 2**64 the way a C cast does, so -1n stores as 0xffffffffffffffff.
 */

import {
  UFFD_EVENT_FORK,
  UFFD_EVENT_PAGEFAULT,
  UFFD_EVENT_REMAP,
  UFFD_EVENT_REMOVE,
  UFFD_EVENT_UNMAP,
} from './constants.ts';

// ---------------------------------------------------------------------------------------------------------
// Sizes and offsets
// ---------------------------------------------------------------------------------------------------------

export const UFFD_MSG_SIZE: number = 32;
export const UFFDIO_API_SIZE: number = 24;
export const UFFDIO_RANGE_SIZE: number = 16;
export const UFFDIO_REGISTER_SIZE: number = 32;
export const UFFDIO_COPY_SIZE: number = 40;
export const UFFDIO_ZEROPAGE_SIZE: number = 32;
export const UFFDIO_WRITEPROTECT_SIZE: number = 24;
export const UFFDIO_CONTINUE_SIZE: number = 32;
export const UFFDIO_POISON_SIZE: number = 32;
export const UFFDIO_MOVE_SIZE: number = 40;
export const KVM_CREATE_GUEST_MEMFD_SIZE: number = 64;

// For REGISTER, COPY, ZEROPAGE, CONTINUE, POISON and MOVE the kernel copies in exactly the bytes before the
// result field and writes back only that field (§2.2), so their result offsets double as copy-in lengths.
export const UFFDIO_API_FEATURES_OFFSET: number = 8;
export const UFFDIO_API_IOCTLS_OFFSET: number = 16;
export const UFFDIO_REGISTER_IOCTLS_OFFSET: number = 24;
export const UFFDIO_COPY_COPY_OFFSET: number = 32;
export const UFFDIO_ZEROPAGE_ZEROPAGE_OFFSET: number = 24;
export const UFFDIO_CONTINUE_MAPPED_OFFSET: number = 24;
export const UFFDIO_POISON_UPDATED_OFFSET: number = 24;
export const UFFDIO_MOVE_MOVE_OFFSET: number = 32;

/** Number of __u64 entries in kvm_create_guest_memfd.reserved. */
export const KVM_CREATE_GUEST_MEMFD_RESERVED_COUNT: number = 6;

// ---------------------------------------------------------------------------------------------------------
// Integer helpers
// ---------------------------------------------------------------------------------------------------------

/**
 * Converts a u64 to a number. It is exact below 2**53 and rounds above. Rounding is safe for range checks:
 * any value at or above 2**53 exceeds TASK_SIZE both before and after rounding, so a check such as
 * `start + len > TASK_SIZE` rejects it either way. A negative bigint is first read as its u64 bit pattern.
 */
export function u64ToNumber(value: bigint): number {
  return Number(BigInt.asUintN(64, value));
}

/**
 * Converts an integer to the u64 a C cast would produce, wrapping negatives to their two's complement.
 * A number that is not an integer has no u64 value and throws RangeError.
 * @throws RangeError for a number that is not an integer.
 */
export function toU64(value: number | bigint): bigint {
  if (typeof value === 'number' && !Number.isInteger(value)) {
    throw new RangeError(`toU64: ${value} is not an integer`);
  }
  return BigInt.asUintN(64, BigInt(value));
}

// Fields are read and written byte by byte rather than through a DataView: a DataView needs the array's
// ArrayBuffer, which V8 must first move off the heap for a small array, and these structs are encoded and
// decoded on every fault of a userfaultfd round trip.

function viewOf(bytes: Uint8Array): Uint8Array {
  return bytes;
}

const TWO_32 = 4294967296;
/** The high words below this keep a u64 under 2**53, so a number holds it exactly. */
const EXACT_HIGH = 0x200000;

function setU8(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value;
}

function getU32(bytes: Uint8Array, offset: number): number {
  return (
    (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>>
    0
  );
}

function setU32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value;
  bytes[offset + 1] = value >>> 8;
  bytes[offset + 2] = value >>> 16;
  bytes[offset + 3] = value >>> 24;
}

/**
 * The u64 at `offset` as a number, without a bigint: the same value as `u64ToNumber` of the decoded
 * field (exact below 2**53, rounded to nearest above, as `Number(bigint)` rounds).
 */
export function readU64Number(bytes: Uint8Array, offset: number): number {
  return getU32(bytes, offset + 4) * TWO_32 + getU32(bytes, offset);
}

/** The s64 at `offset` as a number (exact within ±2**53, rounded beyond as `Number(bigint)` rounds). */
export function readS64Number(bytes: Uint8Array, offset: number): number {
  return (getU32(bytes, offset + 4) | 0) * TWO_32 + getU32(bytes, offset);
}

/** The low and high 32 bits of the u64 at `offset` (mode fields are checked bit by bit). */
export function readU64Low(bytes: Uint8Array, offset: number): number {
  return getU32(bytes, offset);
}

export function readU64High(bytes: Uint8Array, offset: number): number {
  return getU32(bytes, offset + 4);
}

/**
 * Stores an integer as a 64-bit field, two's complement for a negative one (what `BigInt(value)` stored
 * through `setU64` or `setS64` gives). A value that is not a safe integer goes through BigInt, so it
 * throws exactly as `BigInt(value)` does.
 * @throws RangeError for a number that is not an integer (as `BigInt(value)` does).
 */
export function writeInt64Number(bytes: Uint8Array, offset: number, value: number): void {
  if (!Number.isSafeInteger(value)) {
    setU64(bytes, offset, BigInt(value));
    return;
  }
  const high = Math.floor(value / TWO_32);
  setU32(bytes, offset, value - high * TWO_32);
  setU32(bytes, offset + 4, high);
}

/** Stores `value` as the u64 at `offset` (reduced modulo 2**64, as a C cast does). */
export function writeU64(bytes: Uint8Array, offset: number, value: bigint): void {
  setU64(bytes, offset, value);
}

/** The u64 at `offset`. */
export function readU64(bytes: Uint8Array, offset: number): bigint {
  return getU64(bytes, offset);
}

function getU64(view: Uint8Array, offset: number): bigint {
  const low = getU32(view, offset);
  const high = getU32(view, offset + 4);
  if (high < EXACT_HIGH) return BigInt(high * TWO_32 + low);
  return (BigInt(high) << 32n) | BigInt(low);
}

function getS64(view: Uint8Array, offset: number): bigint {
  const low = getU32(view, offset);
  const high = getU32(view, offset + 4) | 0;
  if (high < EXACT_HIGH && high >= -EXACT_HIGH) return BigInt(high * TWO_32 + low);
  return (BigInt(high) << 32n) + BigInt(low);
}

function setU64(view: Uint8Array, offset: number, value: bigint): void {
  const bits = BigInt.asUintN(64, value);
  if (bits < 0x20000000000000n) {
    const number = Number(bits);
    const high = Math.floor(number / TWO_32);
    setU32(view, offset, number - high * TWO_32);
    setU32(view, offset + 4, high);
    return;
  }
  setU32(view, offset, Number(bits & 0xffffffffn));
  setU32(view, offset + 4, Number(bits >> 32n));
}

function setS64(view: Uint8Array, offset: number, value: bigint): void {
  // The same 64 bits as the signed value's two's complement.
  setU64(view, offset, value);
}

function checkLength(what: string, bytes: Uint8Array, offset: number, size: number): void {
  if (!Number.isInteger(offset) || offset < 0 || bytes.byteLength < offset + size) {
    throw new RangeError(`${what}: needs ${size} bytes at offset ${offset}, buffer has ${bytes.byteLength}`);
  }
}

function target(what: string, into: Uint8Array | undefined, size: number): Uint8Array {
  if (into === undefined) return new Uint8Array(size);
  checkLength(what, into, 0, size);
  return into;
}

function checkU32(what: string, value: number): void {
  // A u32 store would wrap silently; a value that does not fit is a caller bug worth reporting.
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`${what}: ${value} is not a u32`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_range and the structs that embed it at offset 0
// ---------------------------------------------------------------------------------------------------------

export interface UffdioRange {
  start: bigint;
  len: bigint;
}

function getRange(view: Uint8Array, offset: number): UffdioRange {
  return { start: getU64(view, offset), len: getU64(view, offset + 8) };
}

function setRange(view: Uint8Array, offset: number, range: UffdioRange): void {
  setU64(view, offset, range.start);
  setU64(view, offset + 8, range.len);
}

/**
 * Encodes struct uffdio_range (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioRange(value: UffdioRange, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioRange', into, UFFDIO_RANGE_SIZE);
  setRange(viewOf(bytes), 0, value);
  return bytes;
}

/**
 * Decodes struct uffdio_range.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioRange(bytes: Uint8Array): UffdioRange {
  checkLength('decodeUffdioRange', bytes, 0, UFFDIO_RANGE_SIZE);
  return getRange(viewOf(bytes), 0);
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_api
// ---------------------------------------------------------------------------------------------------------

export interface UffdioApi {
  api: bigint;
  features: bigint;
  ioctls: bigint;
}

/**
 * Encodes struct uffdio_api (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioApi(value: UffdioApi, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioApi', into, UFFDIO_API_SIZE);
  const view = viewOf(bytes);
  setU64(view, 0, value.api);
  setU64(view, UFFDIO_API_FEATURES_OFFSET, value.features);
  setU64(view, UFFDIO_API_IOCTLS_OFFSET, value.ioctls);
  return bytes;
}

/**
 * Decodes struct uffdio_api.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioApi(bytes: Uint8Array): UffdioApi {
  checkLength('decodeUffdioApi', bytes, 0, UFFDIO_API_SIZE);
  const view = viewOf(bytes);
  return {
    api: getU64(view, 0),
    features: getU64(view, UFFDIO_API_FEATURES_OFFSET),
    ioctls: getU64(view, UFFDIO_API_IOCTLS_OFFSET),
  };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_register
// ---------------------------------------------------------------------------------------------------------

export interface UffdioRegister {
  range: UffdioRange;
  mode: bigint;
  ioctls: bigint;
}

/**
 * Encodes struct uffdio_register (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioRegister(value: UffdioRegister, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioRegister', into, UFFDIO_REGISTER_SIZE);
  const view = viewOf(bytes);
  setRange(view, 0, value.range);
  setU64(view, 16, value.mode);
  setU64(view, UFFDIO_REGISTER_IOCTLS_OFFSET, value.ioctls);
  return bytes;
}

/**
 * Decodes struct uffdio_register.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioRegister(bytes: Uint8Array): UffdioRegister {
  checkLength('decodeUffdioRegister', bytes, 0, UFFDIO_REGISTER_SIZE);
  const view = viewOf(bytes);
  return {
    range: getRange(view, 0),
    mode: getU64(view, 16),
    ioctls: getU64(view, UFFDIO_REGISTER_IOCTLS_OFFSET),
  };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_copy
// ---------------------------------------------------------------------------------------------------------

export interface UffdioCopy {
  dst: bigint;
  src: bigint;
  len: bigint;
  mode: bigint;
  /** Bytes copied, or a negative errno; written by the kernel. */
  copy: bigint;
}

/**
 * Encodes struct uffdio_copy (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioCopy(value: UffdioCopy, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioCopy', into, UFFDIO_COPY_SIZE);
  const view = viewOf(bytes);
  setU64(view, 0, value.dst);
  setU64(view, 8, value.src);
  setU64(view, 16, value.len);
  setU64(view, 24, value.mode);
  setS64(view, UFFDIO_COPY_COPY_OFFSET, value.copy);
  return bytes;
}

/**
 * Decodes struct uffdio_copy.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioCopy(bytes: Uint8Array): UffdioCopy {
  checkLength('decodeUffdioCopy', bytes, 0, UFFDIO_COPY_SIZE);
  const view = viewOf(bytes);
  return {
    dst: getU64(view, 0),
    src: getU64(view, 8),
    len: getU64(view, 16),
    mode: getU64(view, 24),
    copy: getS64(view, UFFDIO_COPY_COPY_OFFSET),
  };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_zeropage
// ---------------------------------------------------------------------------------------------------------

export interface UffdioZeropage {
  range: UffdioRange;
  mode: bigint;
  /** Bytes zeroed, or a negative errno; written by the kernel. */
  zeropage: bigint;
}

/**
 * Encodes struct uffdio_zeropage (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioZeropage(value: UffdioZeropage, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioZeropage', into, UFFDIO_ZEROPAGE_SIZE);
  const view = viewOf(bytes);
  setRange(view, 0, value.range);
  setU64(view, 16, value.mode);
  setS64(view, UFFDIO_ZEROPAGE_ZEROPAGE_OFFSET, value.zeropage);
  return bytes;
}

/**
 * Decodes struct uffdio_zeropage.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioZeropage(bytes: Uint8Array): UffdioZeropage {
  checkLength('decodeUffdioZeropage', bytes, 0, UFFDIO_ZEROPAGE_SIZE);
  const view = viewOf(bytes);
  return {
    range: getRange(view, 0),
    mode: getU64(view, 16),
    zeropage: getS64(view, UFFDIO_ZEROPAGE_ZEROPAGE_OFFSET),
  };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_writeprotect
// ---------------------------------------------------------------------------------------------------------

export interface UffdioWriteprotect {
  range: UffdioRange;
  mode: bigint;
}

/**
 * Encodes struct uffdio_writeprotect (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioWriteprotect(value: UffdioWriteprotect, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioWriteprotect', into, UFFDIO_WRITEPROTECT_SIZE);
  const view = viewOf(bytes);
  setRange(view, 0, value.range);
  setU64(view, 16, value.mode);
  return bytes;
}

/**
 * Decodes struct uffdio_writeprotect.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioWriteprotect(bytes: Uint8Array): UffdioWriteprotect {
  checkLength('decodeUffdioWriteprotect', bytes, 0, UFFDIO_WRITEPROTECT_SIZE);
  const view = viewOf(bytes);
  return { range: getRange(view, 0), mode: getU64(view, 16) };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_continue
// ---------------------------------------------------------------------------------------------------------

export interface UffdioContinue {
  range: UffdioRange;
  mode: bigint;
  /** Bytes mapped, or a negative errno; written by the kernel. */
  mapped: bigint;
}

/**
 * Encodes struct uffdio_continue (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioContinue(value: UffdioContinue, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioContinue', into, UFFDIO_CONTINUE_SIZE);
  const view = viewOf(bytes);
  setRange(view, 0, value.range);
  setU64(view, 16, value.mode);
  setS64(view, UFFDIO_CONTINUE_MAPPED_OFFSET, value.mapped);
  return bytes;
}

/**
 * Decodes struct uffdio_continue.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioContinue(bytes: Uint8Array): UffdioContinue {
  checkLength('decodeUffdioContinue', bytes, 0, UFFDIO_CONTINUE_SIZE);
  const view = viewOf(bytes);
  return {
    range: getRange(view, 0),
    mode: getU64(view, 16),
    mapped: getS64(view, UFFDIO_CONTINUE_MAPPED_OFFSET),
  };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_poison
// ---------------------------------------------------------------------------------------------------------

export interface UffdioPoison {
  range: UffdioRange;
  mode: bigint;
  /** Bytes poisoned, or a negative errno; written by the kernel. */
  updated: bigint;
}

/**
 * Encodes struct uffdio_poison (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioPoison(value: UffdioPoison, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioPoison', into, UFFDIO_POISON_SIZE);
  const view = viewOf(bytes);
  setRange(view, 0, value.range);
  setU64(view, 16, value.mode);
  setS64(view, UFFDIO_POISON_UPDATED_OFFSET, value.updated);
  return bytes;
}

/**
 * Decodes struct uffdio_poison.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioPoison(bytes: Uint8Array): UffdioPoison {
  checkLength('decodeUffdioPoison', bytes, 0, UFFDIO_POISON_SIZE);
  const view = viewOf(bytes);
  return {
    range: getRange(view, 0),
    mode: getU64(view, 16),
    updated: getS64(view, UFFDIO_POISON_UPDATED_OFFSET),
  };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffdio_move
// ---------------------------------------------------------------------------------------------------------

export interface UffdioMove {
  dst: bigint;
  src: bigint;
  len: bigint;
  mode: bigint;
  /** Bytes moved, or a negative errno; written by the kernel. */
  move: bigint;
}

/**
 * Encodes struct uffdio_move (into `into` when given, else a new buffer).
 * @throws RangeError when `into` is shorter than the struct.
 */
export function encodeUffdioMove(value: UffdioMove, into?: Uint8Array): Uint8Array {
  const bytes = target('encodeUffdioMove', into, UFFDIO_MOVE_SIZE);
  const view = viewOf(bytes);
  setU64(view, 0, value.dst);
  setU64(view, 8, value.src);
  setU64(view, 16, value.len);
  setU64(view, 24, value.mode);
  setS64(view, UFFDIO_MOVE_MOVE_OFFSET, value.move);
  return bytes;
}

/**
 * Decodes struct uffdio_move.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeUffdioMove(bytes: Uint8Array): UffdioMove {
  checkLength('decodeUffdioMove', bytes, 0, UFFDIO_MOVE_SIZE);
  const view = viewOf(bytes);
  return {
    dst: getU64(view, 0),
    src: getU64(view, 8),
    len: getU64(view, 16),
    mode: getU64(view, 24),
    move: getS64(view, UFFDIO_MOVE_MOVE_OFFSET),
  };
}

// ---------------------------------------------------------------------------------------------------------
// struct kvm_create_guest_memfd
// ---------------------------------------------------------------------------------------------------------

export interface KvmCreateGuestMemfd {
  size: bigint;
  flags: bigint;
  /** Must be zero for KVM to accept the request; decoding always yields six entries. */
  reserved: readonly bigint[];
}

/**
 * Missing `reserved` entries encode as zero, since that is the only value KVM accepts there.
 * @throws RangeError when `into` is shorter than the struct, or `reserved` has more than six entries.
 */
export function encodeKvmCreateGuestMemfd(value: KvmCreateGuestMemfd, into?: Uint8Array): Uint8Array {
  if (value.reserved.length > KVM_CREATE_GUEST_MEMFD_RESERVED_COUNT) {
    throw new RangeError(
      `encodeKvmCreateGuestMemfd: reserved has ${value.reserved.length} entries, at most 6`,
    );
  }
  const bytes = target('encodeKvmCreateGuestMemfd', into, KVM_CREATE_GUEST_MEMFD_SIZE);
  const view = viewOf(bytes);
  setU64(view, 0, value.size);
  setU64(view, 8, value.flags);
  for (let index = 0; index < KVM_CREATE_GUEST_MEMFD_RESERVED_COUNT; index++) {
    setU64(view, 16 + 8 * index, value.reserved[index] ?? 0n);
  }
  return bytes;
}

/**
 * Decodes struct kvm_create_guest_memfd.
 * @throws RangeError when `bytes` is shorter than the struct.
 */
export function decodeKvmCreateGuestMemfd(bytes: Uint8Array): KvmCreateGuestMemfd {
  checkLength('decodeKvmCreateGuestMemfd', bytes, 0, KVM_CREATE_GUEST_MEMFD_SIZE);
  const view = viewOf(bytes);
  const reserved: bigint[] = [];
  for (let index = 0; index < KVM_CREATE_GUEST_MEMFD_RESERVED_COUNT; index++) {
    reserved.push(getU64(view, 16 + 8 * index));
  }
  return { size: getU64(view, 0), flags: getU64(view, 8), reserved };
}

// ---------------------------------------------------------------------------------------------------------
// struct uffd_msg
// ---------------------------------------------------------------------------------------------------------

export interface UffdMsgPagefault {
  event: 'pagefault';
  /** UFFD_PAGEFAULT_FLAG_* bits (a u64 in the kernel, but only the low bits are ever set). */
  flags: number;
  address: bigint;
  /** Faulting thread id with UFFD_FEATURE_THREAD_ID, otherwise 0. */
  ptid: number;
}

export interface UffdMsgFork {
  event: 'fork';
  /** The child's new userfaultfd, already installed in the reader's file table. */
  ufd: number;
}

export interface UffdMsgRemap {
  event: 'remap';
  from: bigint;
  to: bigint;
  len: bigint;
}

/** REMOVE and UNMAP share the kernel's `remove` union member; `end` is exclusive. */
export interface UffdMsgRemove {
  event: 'remove' | 'unmap';
  start: bigint;
  end: bigint;
}

/** A message whose event byte this module does not know; kept so a reader can report it, not crash. */
export interface UffdMsgUnknown {
  event: 'unknown';
  code: number;
}

export type UffdMsg = UffdMsgPagefault | UffdMsgFork | UffdMsgRemap | UffdMsgRemove | UffdMsgUnknown;

// Offsets inside struct uffd_msg: the event byte, then reserved bytes up to the arg union at 8.
const MSG_ARG = 8;

/**
 * Writes one message into `into` at `offset` (allocating `offset + 32` bytes when `into` is absent) and
 * returns the buffer. All 32 bytes are cleared first, as msg_init() memsets the message in the kernel, so
 * reserved and unused union bytes always read as zero.
 * @throws RangeError for flags that are not a mask, an unknown event code, or an `into` too short.
 */
export function encodeUffdMsg(msg: UffdMsg, into?: Uint8Array, offset = 0): Uint8Array {
  const bytes = into ?? new Uint8Array(offset + UFFD_MSG_SIZE);
  checkLength('encodeUffdMsg', bytes, offset, UFFD_MSG_SIZE);
  bytes.fill(0, offset, offset + UFFD_MSG_SIZE);
  const view = viewOf(bytes);
  const arg = offset + MSG_ARG;
  switch (msg.event) {
    case 'pagefault':
      setU8(view, offset, UFFD_EVENT_PAGEFAULT);
      if (!Number.isSafeInteger(msg.flags) || msg.flags < 0) {
        throw new RangeError(`encodeUffdMsg: flags ${msg.flags} is not a valid mask`);
      }
      setU64(view, arg, BigInt(msg.flags));
      setU64(view, arg + 8, msg.address);
      checkU32('encodeUffdMsg ptid', msg.ptid);
      setU32(view, arg + 16, msg.ptid);
      break;
    case 'fork':
      setU8(view, offset, UFFD_EVENT_FORK);
      checkU32('encodeUffdMsg ufd', msg.ufd);
      setU32(view, arg, msg.ufd);
      break;
    case 'remap':
      setU8(view, offset, UFFD_EVENT_REMAP);
      setU64(view, arg, msg.from);
      setU64(view, arg + 8, msg.to);
      setU64(view, arg + 16, msg.len);
      break;
    case 'remove':
    case 'unmap':
      setU8(view, offset, msg.event === 'remove' ? UFFD_EVENT_REMOVE : UFFD_EVENT_UNMAP);
      setU64(view, arg, msg.start);
      setU64(view, arg + 8, msg.end);
      break;
    case 'unknown':
      // A known code here would decode as a different kind of message, so it is rejected as a caller bug.
      if (!Number.isInteger(msg.code) || msg.code < 0 || msg.code > 0xff || knownEvent(msg.code)) {
        throw new RangeError(`encodeUffdMsg: ${msg.code} is not an unknown event code`);
      }
      setU8(view, offset, msg.code);
      break;
  }
  return bytes;
}

/**
 * Writes a pagefault message at `offset` from plain numbers (the kernel side's read(2), once per fault):
 * the bytes `encodeUffdMsg` writes for `{ event: 'pagefault', flags, address, ptid }`. `flags`, `address`
 * and `ptid` are the kernel's own values: non-negative integers, ptid a u32.
 * @throws RangeError when fewer than 32 bytes of `into` follow `offset`.
 */
export function encodeUffdMsgPagefault(
  into: Uint8Array,
  offset: number,
  flags: number,
  address: number,
  ptid: number,
): void {
  checkLength('encodeUffdMsg', into, offset, UFFD_MSG_SIZE);
  into.fill(0, offset, offset + UFFD_MSG_SIZE);
  into[offset] = UFFD_EVENT_PAGEFAULT;
  writeInt64Number(into, offset + MSG_ARG, flags);
  writeInt64Number(into, offset + MSG_ARG + 8, address);
  setU32(into, offset + MSG_ARG + 16, ptid);
}

function knownEvent(code: number): boolean {
  return code >= UFFD_EVENT_PAGEFAULT && code <= UFFD_EVENT_UNMAP;
}

/**
 * Reads the message at `offset`; reserved bytes are ignored, as user space is told to ignore them.
 * @throws RangeError when fewer than 32 bytes follow `offset`.
 */
export function decodeUffdMsg(bytes: Uint8Array, offset = 0): UffdMsg {
  checkLength('decodeUffdMsg', bytes, offset, UFFD_MSG_SIZE);
  const view = viewOf(bytes);
  const code = view[offset]!;
  const arg = offset + MSG_ARG;
  switch (code) {
    case UFFD_EVENT_PAGEFAULT:
      return {
        event: 'pagefault',
        flags: readU64Number(view, arg),
        address: getU64(view, arg + 8),
        ptid: getU32(view, arg + 16),
      };
    case UFFD_EVENT_FORK:
      return { event: 'fork', ufd: getU32(view, arg) };
    case UFFD_EVENT_REMAP:
      return {
        event: 'remap',
        from: getU64(view, arg),
        to: getU64(view, arg + 8),
        len: getU64(view, arg + 16),
      };
    case UFFD_EVENT_REMOVE:
    case UFFD_EVENT_UNMAP:
      return {
        event: code === UFFD_EVENT_REMOVE ? 'remove' : 'unmap',
        start: getU64(view, arg),
        end: getU64(view, arg + 8),
      };
    default:
      return { event: 'unknown', code };
  }
}

/**
 * Decodes a read() result, which the kernel always fills with whole messages.
 * @throws RangeError when the length is not a whole number of messages.
 */
export function decodeUffdMsgs(bytes: Uint8Array): UffdMsg[] {
  if (bytes.byteLength % UFFD_MSG_SIZE !== 0) {
    throw new RangeError(`decodeUffdMsgs: ${bytes.byteLength} bytes is not a whole number of messages`);
  }
  const msgs: UffdMsg[] = [];
  for (let offset = 0; offset < bytes.byteLength; offset += UFFD_MSG_SIZE) {
    msgs.push(decodeUffdMsg(bytes, offset));
  }
  return msgs;
}
