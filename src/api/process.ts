/**
 * The process API: typed calls over either backend. Argument structs are
 * encoded and decoded with uapi/, so the same handler code runs on the model
 * and on the host kernel.
 */
import {
  FEATURE_NAMES,
  type FeatureName,
  featureBit,
  GUEST_MEMFD_FLAG_INIT_SHARED,
  GUEST_MEMFD_FLAG_MMAP,
  KVM_CREATE_GUEST_MEMFD,
  KVM_CREATE_VM,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_HUGETLB,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  POLLERR,
  POLLIN,
  POLLNVAL,
  PROT_READ,
  PROT_WRITE,
  UFFD_API,
  UFFD_USER_MODE_ONLY,
  UFFDIO_API,
  UFFDIO_CONTINUE,
  UFFDIO_COPY,
  UFFDIO_MODES,
  UFFDIO_MOVE,
  UFFDIO_POISON,
  UFFDIO_REGISTER,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
  UFFDIO_UNREGISTER,
  UFFDIO_WAKE,
  UFFDIO_WRITEPROTECT,
  UFFDIO_ZEROPAGE,
  type UffdioModeIoctl,
  type UffdioModeName,
  USERFAULTFD_IOC_NEW,
} from '../uapi/constants.ts';
import { EAGAIN, EBADF, KernelError } from '../uapi/errno.ts';
import {
  decodeUffdioApi,
  decodeUffdioRegister,
  decodeUffdMsgs,
  encodeKvmCreateGuestMemfd,
  encodeUffdioApi,
  encodeUffdioRegister,
  readS64Number,
  UFFD_MSG_SIZE,
  UFFDIO_CONTINUE_SIZE,
  UFFDIO_COPY_SIZE,
  UFFDIO_MOVE_SIZE,
  UFFDIO_POISON_SIZE,
  UFFDIO_RANGE_SIZE,
  UFFDIO_WRITEPROTECT_SIZE,
  UFFDIO_ZEROPAGE_SIZE,
  type UffdMsg,
  writeInt64Number,
  writeU64,
} from '../uapi/structs.ts';
import type { ProcessBackend, ThreadAccess, ThreadBackend } from './backend.ts';

export interface MapOptions {
  readonly length: number;
  /** Default read|write. */
  readonly prot?: number;
  readonly shared?: boolean;
  /** Map this file instead of anonymous memory. */
  readonly fd?: number;
  readonly offset?: number;
  readonly hugetlb?: boolean;
  /** MAP_FIXED at this address. */
  readonly fixedAddress?: number;
  /** Extra MAP_* flags. */
  readonly extraFlags?: number;
}

export interface UffdOptions {
  readonly nonblock?: boolean;
  readonly cloexec?: boolean;
  readonly userModeOnly?: boolean;
  /** Create through the syscall (default) or /dev/userfaultfd's USERFAULTFD_IOC_NEW. */
  readonly via?: 'syscall' | 'dev';
}

/** A typed process over a backend. */
export class Process {
  constructor(readonly backend: ProcessBackend) {}

  get pid(): number {
    return this.backend.pid;
  }

  /**
   * mmap(2); returns the mapping's address.
   * @throws KernelError EINVAL for a zero or unaligned length or offset, or bad flags; EBADF for a bad
   *   `fd`; EACCES for a file opened without the access `prot` asks; ENODEV for a file that cannot be
   *   mapped; ENOMEM when the address space or the hugetlb pool is exhausted.
   */
  mmap(options: MapOptions): number {
    const shared = options.shared ?? false;
    let flags = (shared ? MAP_SHARED : MAP_PRIVATE) | (options.extraFlags ?? 0);
    if (options.fd === undefined) flags |= MAP_ANONYMOUS;
    if (options.hugetlb) flags |= MAP_HUGETLB;
    if (options.fixedAddress !== undefined) flags |= MAP_FIXED;
    return this.backend.mmap({
      address: options.fixedAddress ?? 0,
      length: options.length,
      prot: options.prot ?? PROT_READ | PROT_WRITE,
      flags,
      fd: options.fd ?? -1,
      offset: options.offset ?? 0,
    });
  }

  /**
   * A private read-write buffer between two PROT_NONE guard pages, so that it
   * never merges with (or changes the VMA layout of) the program's own maps.
   * Returns the buffer's address; `munmapIsolated` frees it with its guards.
   * @throws KernelError ENOMEM when the address space is exhausted; EINVAL for a zero length.
   */
  mmapIsolated(length: number): number {
    const base = this.mmap({ length: length + 2 * 4096, prot: 0 });
    this.mprotect(base + 4096, length, PROT_READ | PROT_WRITE);
    return base + 4096;
  }

  /**
   * Frees a buffer `mmapIsolated` made, guards included.
   * @throws KernelError EINVAL for an unaligned address.
   */
  munmapIsolated(address: number, length: number): void {
    this.munmap(address - 4096, length + 2 * 4096);
  }

  /**
   * munmap(2).
   * @throws KernelError EINVAL for an unaligned address or a zero length.
   */
  munmap(address: number, length: number): void {
    this.backend.munmap(address, length);
  }

  /**
   * mprotect(2).
   * @throws KernelError EINVAL for an unaligned address; ENOMEM when part of the range is unmapped;
   *   EACCES when a shared file mapping's fd does not allow the new protection.
   */
  mprotect(address: number, length: number, prot: number): void {
    this.backend.mprotect(address, length, prot);
  }

  /**
   * memfd_create + ftruncate (when `size` is given); returns the fd.
   * @throws KernelError EINVAL for a name over 249 bytes or unknown flags; ENOMEM or EMFILE when out
   *   of memory or descriptors; EFBIG for a size beyond the file size limit (the fd is then left open).
   */
  memfd(name: string, options: { size?: number; hugetlb?: boolean; flags?: number } = {}): number {
    const fd = this.backend.memfdCreate(name, (options.flags ?? 0) | (options.hugetlb ? MFD_HUGETLB : 0));
    if (options.size !== undefined) this.backend.ftruncate(fd, options.size);
    return fd;
  }

  /**
   * A guest_memfd of `size` bytes: /dev/kvm, KVM_CREATE_VM, KVM_CREATE_GUEST_MEMFD
   * with GUEST_MEMFD_FLAG_MMAP (default true) and INIT_SHARED (default: with MMAP).
   * @throws KernelError ENOENT when /dev/kvm does not exist; EACCES without access to it; EINVAL for
   *   a size that is zero or not page-aligned, or flags the kernel does not know (INIT_SHARED without
   *   MMAP); ENOMEM.
   */
  guestMemfd(options: { size: number; mmap?: boolean; initShared?: boolean }): number {
    const mmap = options.mmap ?? true;
    const flags =
      (mmap ? GUEST_MEMFD_FLAG_MMAP : 0) | ((options.initShared ?? mmap) ? GUEST_MEMFD_FLAG_INIT_SHARED : 0);
    const kvm = this.backend.open('/dev/kvm', O_RDWR | O_CLOEXEC);
    try {
      const vm = this.backend.ioctl(kvm, KVM_CREATE_VM, 0);
      try {
        const arg = encodeKvmCreateGuestMemfd({
          size: BigInt(options.size),
          flags: BigInt(flags),
          reserved: [],
        });
        return this.backend.ioctl(vm, KVM_CREATE_GUEST_MEMFD, arg);
      } finally {
        this.backend.close(vm);
      }
    } finally {
      this.backend.close(kvm);
    }
  }

  /**
   * write(2) at the file position; returns the bytes written.
   * @throws KernelError EBADF for an fd not open for writing; EPERM for a write a seal forbids;
   *   EFBIG past the file size limit; ENOSPC when the file system (or the hugetlb pool) is full.
   */
  writeFile(fd: number, data: Uint8Array): number {
    return this.backend.write(fd, data);
  }

  /**
   * lseek(2) (`whence` SEEK_SET by default; SEEK_DATA and SEEK_HOLE follow the page cache of a
   * memfd, and see all of a hugetlbfs file as data); returns the new position.
   * @throws KernelError EBADF; EINVAL for an unknown `whence` or a negative result; ENXIO for
   *   SEEK_DATA/SEEK_HOLE at or past the end (or no data after `offset`); ESPIPE for a pipe, a
   *   socket or a guest_memfd (6.18).
   */
  lseek(fd: number, offset: number, whence = 0): number {
    return this.backend.lseek(fd, offset, whence);
  }

  /**
   * ftruncate(2).
   * @throws KernelError EBADF; EINVAL for a negative length, or an fd that is not a regular file open
   *   for writing; EPERM when a seal forbids the size change; EFBIG past the file size limit.
   */
  ftruncate(fd: number, length: number): void {
    this.backend.ftruncate(fd, length);
  }

  /**
   * pread(2) of up to `length` bytes at `offset`; the bytes read (fewer at the end of the file).
   * @throws KernelError EBADF for an fd not open for reading; EINVAL for a negative offset; ESPIPE
   *   for a file without a position (a userfaultfd, a pipe).
   */
  pread(fd: number, length: number, offset: number): Uint8Array {
    return this.backend.pread(fd, length, offset);
  }

  /**
   * pwrite(2) of `data` at `offset`; returns the bytes written.
   * @throws KernelError EBADF for an fd not open for writing; EINVAL for a negative offset; ESPIPE;
   *   EPERM for a write a seal forbids; EFBIG; ENOSPC.
   */
  pwrite(fd: number, data: Uint8Array, offset: number): number {
    return this.backend.pwrite(fd, data, offset);
  }

  /**
   * fallocate(2): allocate, or with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE punch a hole.
   * @throws KernelError EBADF for an fd not open for writing; EINVAL for a negative offset, a zero
   *   length or unaligned hugetlb offsets; EOPNOTSUPP for a mode the file does not support; ENODEV
   *   for a file that is not regular; EPERM when a seal forbids it; ENOSPC.
   */
  fallocate(fd: number, mode: number, offset: number, length: number): void {
    this.backend.fallocate(fd, mode, offset, length);
  }

  /**
   * close(2).
   * @throws KernelError EBADF for an fd the process does not hold (on the host: one this program did
   *   not open, or that the backend's close() closed already).
   */
  close(fd: number): void {
    this.backend.close(fd);
  }

  /**
   * Reads `length` bytes of the process's memory at `address`, as the calling thread.
   * @throws SignalError SIGSEGV for an unmapped or unreadable address, SIGBUS for a poisoned page or
   *   one past the end of a file.
   * @throws WouldBlockError when the access would sleep on a userfaultfd fault (use `thread`).
   */
  read(address: number, length: number): Uint8Array {
    return this.backend.readMemory(address, length);
  }

  /**
   * Reads `into.byteLength` bytes at `address` into `into` (no allocation where the backend can); returns it.
   * @throws SignalError, WouldBlockError as `read` does.
   */
  readInto(address: number, into: Uint8Array): Uint8Array {
    const backend = this.backend;
    if (backend.readMemoryInto !== undefined) backend.readMemoryInto(address, into);
    else into.set(backend.readMemory(address, into.byteLength));
    return into;
  }

  /**
   * Writes `data` into the process's memory at `address`, as the calling thread.
   * @throws SignalError SIGSEGV for an unmapped or read-only address, SIGBUS as for `read`.
   * @throws WouldBlockError when the access would sleep on a userfaultfd fault (missing, or
   *   write-protected by userfaultfd).
   */
  write(address: number, data: Uint8Array): void {
    this.backend.writeMemory(address, data);
  }

  /**
   * Starts a thread running `program`; it may block on userfaultfd faults. A signal an access takes
   * (SIGSEGV, SIGBUS) ends the thread and is its result, not an exception here.
   * @throws TypeError for a program that is not an iterable of accesses, an access of an unknown
   *   kind or a bad field, or a program over its length cap; nothing is started then.
   */
  thread(program: Iterable<ThreadAccess>, name?: string): ThreadBackend {
    return this.backend.spawnThread(program, name);
  }

  /**
   * Creates a userfaultfd (not yet initialized: call `api`); `openUffd` is the all-in-one form.
   * @throws KernelError EPERM from the syscall without privilege (vm.unprivileged_userfaultfd=0 and
   *   no UFFD_USER_MODE_ONLY); EACCES opening /dev/userfaultfd without access; EINVAL for bad flags;
   *   EMFILE when the process is out of file descriptors.
   */
  userfaultfd(options: UffdOptions = {}): Uffd {
    const flags =
      ((options.nonblock ?? true) ? O_NONBLOCK : 0) |
      ((options.cloexec ?? true) ? O_CLOEXEC : 0) |
      (options.userModeOnly ? UFFD_USER_MODE_ONLY : 0);
    if (options.via === 'dev') {
      const device = this.backend.open('/dev/userfaultfd', O_RDWR | O_CLOEXEC);
      try {
        return new Uffd(this, this.backend.ioctl(device, USERFAULTFD_IOC_NEW, flags));
      } finally {
        this.backend.close(device);
      }
    }
    return new Uffd(this, this.backend.userfaultfd(flags));
  }

  /**
   * Opens a userfaultfd ready to register, as userfaultfd-rs's builder and QEMU
   * do: through /dev/userfaultfd when it opens (it needs no privilege for
   * kernel faults), else through the syscall; UFFDIO_API with `features`. A
   * feature the kernel lacks fails the open up front (MissingFeaturesError,
   * naming each), rather than a register or ioctl failing later.
   * @throws MissingFeaturesError when the kernel lacks a requested feature.
   * @throws KernelError EPERM when neither way may create a userfaultfd (see `faultline doctor`).
   */
  openUffd(options: OpenUffdOptions = {}): Uffd {
    const flags: UffdOptions = {
      ...(options.nonblock === undefined ? {} : { nonblock: options.nonblock }),
      ...(options.cloexec === undefined ? {} : { cloexec: options.cloexec }),
      ...(options.userModeOnly === undefined ? {} : { userModeOnly: options.userModeOnly }),
    };
    const requested = featureMask(options.features ?? []);
    const probe = this.userfaultfdAnyWay(flags);
    let offered: number;
    try {
      offered = probe.api(0).features;
    } finally {
      probe.close();
    }
    const missing = (options.features ?? []).filter((name) => (offered & featureMask([name])) === 0);
    if (missing.length > 0) {
      const available = FEATURE_NAMES.filter((name) => (offered & featureMask([name])) !== 0);
      throw new MissingFeaturesError(missing, available);
    }
    const uffd = this.userfaultfdAnyWay(flags);
    try {
      uffd.api(requested);
    } catch (error) {
      uffd.close();
      throw error;
    }
    return uffd;
  }

  /** /dev/userfaultfd first, the syscall when the device is absent or refuses. */
  private userfaultfdAnyWay(options: UffdOptions): Uffd {
    try {
      return this.userfaultfd({ ...options, via: 'dev' });
    } catch (error) {
      if (!(error instanceof KernelError)) throw error;
      return this.userfaultfd({ ...options, via: 'syscall' });
    }
  }

  /**
   * Ends the process: its threads stop, its descriptors close (a userfaultfd's sleeping faults wake),
   * its memory goes. A second exit does nothing.
   * @throws KernelError ENOSYS on the host when the process is faultline's own (a backend that is
   *   not `isolated`): Node cannot exit under the program.
   */
  exit(): void {
    this.backend.exit();
  }
}

/**
 * An address or a length: a number, or a bigint as `uffd_msg` carries it, so
 * a message's address goes straight back into a call (`msg.address & ~0xfffn`)
 * with no conversion that could truncate it. A bigint beyond 2^64 or a number
 * that is not a safe integer is refused (RangeError), never wrapped.
 */
export type Address = number | bigint;

/**
 * `address` rounded down to a multiple of `size` (a power of two), exactly, in the address's own type.
 * @throws RangeError for a bigint address and a zero `size` (division by zero).
 */
export function alignDown<T extends Address>(address: T, size: number | bigint): T {
  if (typeof address === 'bigint') return (address - (address % BigInt(size))) as T;
  return (address - (address % Number(size))) as T;
}

/**
 * A number address: exact, or a RangeError naming the argument (never a silent truncation).
 * @throws RangeError for a number that is not a safe integer, or a bigint outside 0..2^53-1.
 */
export function addressNumber(value: Address, what = 'address'): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`${what} ${value} is not a safe integer`);
    return value;
  }
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`${what} 0x${value.toString(16)} does not fit a safe integer`);
  }
  return Number(value);
}

export interface RangeArgs {
  readonly start: Address;
  readonly length: Address;
}

/** UFFDIO_REGISTER modes by name: `{ missing: true, wp: true }`. */
export interface RegisterModes {
  readonly missing?: boolean;
  readonly wp?: boolean;
  readonly minor?: boolean;
}

/** The mode bits of the fill ioctls by name: `{ dontWake: true }`, `{ wp: true }`. */
export interface FillModes {
  /** UFFDIO_*_MODE_DONTWAKE: leave the faulting threads asleep (wake them later with `wake`). */
  readonly dontWake?: boolean;
  /** UFFDIO_COPY/CONTINUE_MODE_WP: map the page write-protected. */
  readonly wp?: boolean;
}

/** UFFDIO_WRITEPROTECT's modes by name. */
export interface WriteprotectModes {
  /** Protect (true) or unprotect (false, the default). */
  readonly wp?: boolean;
  readonly dontWake?: boolean;
}

/** UFFDIO_MOVE's modes by name. */
export interface MoveModes {
  readonly dontWake?: boolean;
  /** UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: skip holes in the source instead of failing with ENOENT. */
  readonly allowSrcHoles?: boolean;
}

type Mode<T> = number | bigint | T;

function modeBits<T extends object>(
  mode: Mode<T> | undefined,
  bits: Record<keyof T, number>,
): number | bigint {
  if (mode === undefined) return 0;
  if (typeof mode !== 'object') return mode;
  let value = 0;
  for (const [name, set] of Object.entries(mode)) {
    const bit = bits[name as keyof T];
    if (bit === undefined) {
      throw new TypeError(`unknown mode '${name}' (known: ${Object.keys(bits).join(', ')})`);
    }
    if (set === true) value |= bit;
  }
  return value;
}

const REGISTER_MODES = {
  missing: UFFDIO_REGISTER_MODE_MISSING,
  wp: UFFDIO_REGISTER_MODE_WP,
  minor: UFFDIO_REGISTER_MODE_MINOR,
};
/** The process API's name for each mode flag `UFFDIO_MODES` names as scenario files do. */
const API_MODE_NAMES = { dontwake: 'dontWake', wp: 'wp', allow_src_holes: 'allowSrcHoles' } as const;

/** `ioctl`'s mode bits by the process API's names. */
type ApiModes<I extends UffdioModeIoctl> = {
  readonly [K in UffdioModeName<I> as (typeof API_MODE_NAMES)[K & keyof typeof API_MODE_NAMES]]: number;
};

/** `ioctl`'s mode flags from the one table, under the process API's names (`dontWake` for `dontwake`). */
function apiModes<I extends UffdioModeIoctl>(ioctl: I): ApiModes<I> {
  const entries = Object.entries<number>(UFFDIO_MODES[ioctl]).map(([name, bit]) => [
    API_MODE_NAMES[name as keyof typeof API_MODE_NAMES],
    bit,
  ]);
  return Object.fromEntries(entries) as ApiModes<I>;
}

const COPY_MODES = apiModes('copy');
const CONTINUE_MODES = apiModes('continue');
const DONTWAKE_MODES = apiModes('zeropage');
const POISON_MODES = apiModes('poison');
const WRITEPROTECT_MODES = apiModes('writeprotect');
const MOVE_MODES = apiModes('move');

/** Options of `Process.openUffd`. */
export interface OpenUffdOptions {
  /** Features the handler needs: the open fails up front, naming each one the kernel lacks. */
  readonly features?: readonly FeatureName[];
  /** Report only user-mode faults (UFFD_USER_MODE_ONLY). */
  readonly userModeOnly?: boolean;
  /** Default true. */
  readonly nonblock?: boolean;
  /** Default true. */
  readonly cloexec?: boolean;
}

/** The kernel lacks features a handler asked `openUffd` for; nothing is left open. */
export class MissingFeaturesError extends Error {
  override name = 'MissingFeaturesError';
  constructor(
    /** The requested features the kernel does not offer. */
    readonly missing: readonly FeatureName[],
    /** Every feature the kernel offers. */
    readonly available: readonly FeatureName[],
  ) {
    super(
      `userfaultfd: the kernel lacks ${missing.join(', ')} (it offers ${available.join(', ') || 'none'})`,
    );
  }
}

export interface ApiResult {
  /** Every feature the kernel offers. */
  readonly features: number;
  readonly ioctls: bigint;
}

/**
 * Resolves a list of feature names or a bit mask to a mask.
 * @throws TypeError naming an unknown feature.
 */
export function featureMask(features: number | readonly FeatureName[] | readonly string[]): number {
  if (typeof features === 'number') return features;
  let mask = 0;
  for (const name of features) {
    const bit = featureBit(name);
    if (bit === undefined) throw new TypeError(`unknown userfaultfd feature '${name}'`);
    mask |= bit;
  }
  return mask;
}

/**
 * Stores a u64 argument field: the bytes the encoders store for `BigInt(value)` (a number that is not an
 * integer throws the same RangeError), without making a bigint on the handler's hot path.
 */
function putU64(bytes: Uint8Array, offset: number, value: number | bigint): void {
  if (typeof value === 'number') writeInt64Number(bytes, offset, value);
  else writeU64(bytes, offset, value);
}

/**
 * The argument buffers of one userfaultfd's range ioctls, one per struct size
 * over a single buffer: the ioctls are synchronous, so each call fills the
 * bytes afresh instead of allocating them, once per fault.
 */
class IoctlArgs {
  private readonly bytes = new Uint8Array(UFFDIO_COPY_SIZE);
  private readonly views = new Map<number, Uint8Array>();

  /** `size` zeroed bytes. */
  take(size: number): Uint8Array {
    let view = this.views.get(size);
    if (view === undefined) {
      view = this.bytes.subarray(0, size);
      this.views.set(size, view);
    }
    view.fill(0);
    return view;
  }

  /** A struct uffdio_range-led argument of `size` bytes: start, len, then the mode at 16 when given. */
  range(size: number, range: RangeArgs, mode?: number | bigint): Uint8Array {
    const arg = this.take(size);
    putU64(arg, 0, range.start);
    putU64(arg, 8, range.length);
    if (mode !== undefined) putU64(arg, 16, mode);
    return arg;
  }
}

/**
 * A userfaultfd. The range ioctls return the bytes done; on failure they
 * throw a KernelError whose `progress` holds the value the kernel wrote back
 * (bytes done for a partial EAGAIN, or -errno).
 */
export class Uffd {
  /** The caller-owned staging mapping `copyBytes` copies from, created on first use. */
  private staging: { address: number; length: number } | null = null;
  private readonly args = new IoctlArgs();

  constructor(
    readonly process: Process,
    readonly fd: number,
  ) {}

  private ioctl(request: number, arg: Uint8Array | null): void {
    this.process.backend.ioctl(this.fd, request, arg);
  }

  /**
   * UFFDIO_API: enables `features` (a mask, or names as `FeatureName` spells them) and returns
   * every feature the kernel offers with the ioctls the fd supports.
   * @throws KernelError EINVAL for an unknown feature or a second UFFDIO_API on this fd; EPERM for
   *   UFFD_FEATURE_EVENT_FORK without CAP_SYS_PTRACE in a user-mode-only context.
   */
  api(features: number | readonly FeatureName[] | readonly string[] = 0): ApiResult {
    const arg = encodeUffdioApi({
      api: BigInt(UFFD_API),
      features: BigInt(featureMask(features)),
      ioctls: 0n,
    });
    this.ioctl(UFFDIO_API, arg);
    const result = decodeUffdioApi(arg);
    return { features: Number(result.features), ioctls: result.ioctls };
  }

  /**
   * Registers [start, start+length) for `mode` (`{ missing: true }`, or UFFDIO_REGISTER_MODE_* bits);
   * returns the ioctls mask.
   * @throws KernelError EINVAL for a range not page-aligned or outside a VMA, an unknown mode, or a
   *   memory type that does not support the mode; EBUSY when another userfaultfd has registered part
   *   of the range; EPERM for WP on a VMA that cannot be written; ENOMEM when no VMA covers the start.
   */
  register(range: RangeArgs, mode: Mode<RegisterModes>): bigint {
    const arg = encodeUffdioRegister({
      range: { start: BigInt(range.start), len: BigInt(range.length) },
      mode: BigInt(modeBits(mode, REGISTER_MODES)),
      ioctls: 0n,
    });
    this.ioctl(UFFDIO_REGISTER, arg);
    return decodeUffdioRegister(arg).ioctls;
  }

  /**
   * UFFDIO_UNREGISTER of [start, start+length): the range stops reporting faults, and its sleeping
   * faults wake (they then fault again, unhandled).
   * @throws KernelError EINVAL for a range not page-aligned, outside the address space, or covering a
   *   VMA whose memory type cannot be unregistered; ENOMEM when no VMA covers the start; ESRCH after
   *   the mm exited.
   */
  unregister(range: RangeArgs): void {
    this.ioctl(UFFDIO_UNREGISTER, this.args.range(UFFDIO_RANGE_SIZE, range));
  }

  /**
   * UFFDIO_WAKE: wakes the threads sleeping on faults in the range (after a DONTWAKE fill, or an
   * EEXIST whose fill woke no one).
   * @throws KernelError EINVAL for a range not page-aligned or of length zero.
   */
  wake(range: RangeArgs): void {
    this.ioctl(UFFDIO_WAKE, this.args.range(UFFDIO_RANGE_SIZE, range));
  }

  /**
   * UFFDIO_COPY from `src`, an address in the calling process; returns the bytes copied.
   * @throws KernelError EEXIST when a page is already mapped; EAGAIN when the mm changed under it
   *   (`progress` says how much was copied); ENOENT when the range is not registered; EFAULT when `src`
   *   cannot be read; EINVAL for an unaligned range or unknown mode; ENOMEM; ESRCH after the mm exited.
   */
  copy(args: { dst: Address; src: Address; length: Address; mode?: Mode<FillModes> }): number {
    // struct uffdio_copy: dst, src, len, mode, then the copy result (zero going in).
    const arg = this.args.take(UFFDIO_COPY_SIZE);
    putU64(arg, 0, args.dst);
    putU64(arg, 8, args.src);
    putU64(arg, 16, args.length);
    putU64(arg, 24, modeBits(args.mode, COPY_MODES));
    return this.rangeIoctl(UFFDIO_COPY, arg, 32);
  }

  /**
   * UFFDIO_COPY of `data`: the bytes are first written into a private staging
   * mapping of the calling process, as a real handler copies from its own buffer.
   * @throws KernelError as `copy` does (ENOMEM also when the staging mapping cannot grow).
   */
  copyBytes(dst: Address, data: Uint8Array, mode: Mode<FillModes> = 0): number {
    const staging = this.stagingFor(data.byteLength);
    this.process.write(staging, data);
    return this.copy({ dst, src: staging, length: data.byteLength, mode });
  }

  private stagingFor(length: number): number {
    if (this.staging === null || this.staging.length < length) {
      if (this.staging !== null) this.process.munmapIsolated(this.staging.address, this.staging.length);
      const rounded = Math.max(length, 64 * 1024);
      this.staging = { address: this.process.mmapIsolated(rounded), length: rounded };
    }
    return this.staging.address;
  }

  /**
   * UFFDIO_MOVE of [src, src+length) onto dst: the pages themselves move, with
   * no copy. Both addresses are in the calling process, which must be the
   * registered one (the kernel refuses MOVE from another mm).
   * @throws KernelError EINVAL from a thread of another process, for unaligned ranges, an unknown
   *   mode, memory that is not private anonymous, or a destination not registered with this uffd;
   *   ENOENT when no VMA covers `dst` or `src`, or for a hole in the source (unless `allowSrcHoles`);
   *   EEXIST when a destination page is mapped; EBUSY for a source page shared with another process
   *   (after fork) or pinned; EAGAIN (with `progress`) when the mm is changing; ESRCH after the mm
   *   exited.
   */
  move(args: { dst: Address; src: Address; length: Address; mode?: Mode<MoveModes> }): number {
    // struct uffdio_move: dst, src, len, mode, then the move result (zero going in).
    const arg = this.args.take(UFFDIO_MOVE_SIZE);
    putU64(arg, 0, args.dst);
    putU64(arg, 8, args.src);
    putU64(arg, 16, args.length);
    putU64(arg, 24, modeBits(args.mode, MOVE_MODES));
    return this.rangeIoctl(UFFDIO_MOVE, arg, 32);
  }

  /**
   * UFFDIO_ZEROPAGE: maps the zero page (anonymous memory) or zeroed pages; returns the bytes done.
   * @throws KernelError EEXIST, EAGAIN (with `progress`), ENOENT, EINVAL as for `copy`.
   */
  zeropage(range: RangeArgs, mode: Mode<Pick<FillModes, 'dontWake'>> = 0): number {
    const bits = modeBits(mode, DONTWAKE_MODES);
    return this.rangeIoctl(UFFDIO_ZEROPAGE, this.args.range(UFFDIO_ZEROPAGE_SIZE, range, bits), 24);
  }

  /**
   * UFFDIO_CONTINUE: maps the pages already in the page cache (a MINOR fault's answer).
   * @throws KernelError EFAULT when a page is not in the page cache; EEXIST when one is mapped;
   *   EAGAIN (with `progress`); ENOENT; EINVAL.
   */
  continue(range: RangeArgs, mode: Mode<FillModes> = 0): number {
    const bits = modeBits(mode, CONTINUE_MODES);
    return this.rangeIoctl(UFFDIO_CONTINUE, this.args.range(UFFDIO_CONTINUE_SIZE, range, bits), 24);
  }

  /**
   * UFFDIO_POISON: installs poison markers (an access raises SIGBUS).
   * @throws KernelError EEXIST, EAGAIN (with `progress`), ENOENT, EINVAL.
   */
  poison(range: RangeArgs, mode: Mode<Pick<FillModes, 'dontWake'>> = 0): number {
    const bits = modeBits(mode, POISON_MODES);
    return this.rangeIoctl(UFFDIO_POISON, this.args.range(UFFDIO_POISON_SIZE, range, bits), 24);
  }

  /**
   * UFFDIO_WRITEPROTECT: `{ wp: true }` protects, `{}` (or 0) unprotects and wakes.
   * @throws KernelError ENOENT when the range is not registered for WP; EINVAL; EAGAIN.
   */
  writeprotect(range: RangeArgs, mode: Mode<WriteprotectModes>): void {
    const bits = modeBits(mode, WRITEPROTECT_MODES);
    this.ioctl(UFFDIO_WRITEPROTECT, this.args.range(UFFDIO_WRITEPROTECT_SIZE, range, bits));
  }

  /** Runs a range ioctl and returns the result field; a failure carries it as `progress`. */
  private rangeIoctl(request: number, arg: Uint8Array, fieldOffset: number): number {
    try {
      this.ioctl(request, arg);
    } catch (error) {
      if (error instanceof KernelError) error.progress = readS64Number(arg, fieldOffset);
      throw error;
    }
    return readS64Number(arg, fieldOffset);
  }

  /**
   * Reads up to `max` messages without blocking; [] when none is pending.
   * @throws KernelError EBADF after close; EINVAL for a buffer smaller than one message.
   */
  readMessages(max = 64): UffdMsg[] {
    try {
      return decodeUffdMsgs(this.process.backend.read(this.fd, max * UFFD_MSG_SIZE));
    } catch (error) {
      if (error instanceof KernelError && error.errno === EAGAIN) return [];
      throw error;
    }
  }

  /**
   * Waits until at least one message is there, then reads up to `max`. A
   * promise chain rather than an async function (a handler calls it once per
   * fault), settling in the same microtask turns: at once when a message is
   * pending, else one turn after the fd becomes readable.
   * @throws KernelError EBADF (the promise rejects) once the uffd is closed, also while waiting.
   */
  nextMessages(max = 64): Promise<UffdMsg[]> {
    const backend = this.process.backend;
    try {
      // Poll first: an empty read would throw EAGAIN, and exceptions are costly on the fault path.
      const revents = backend.poll(this.fd);
      if ((revents & POLLIN) !== 0) return Promise.resolve(this.readMessages(max));
      this.checkOpen(revents);
      return backend.waitReadable(this.fd).then(() => {
        const now = backend.poll(this.fd);
        if ((now & POLLIN) !== 0) return this.readMessages(max);
        this.checkOpen(now);
        return [];
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * A closed userfaultfd (POLLNVAL) ends a handler's loop with EBADF: waiting on it would resolve
   * at once with nothing, for ever.
   */
  private checkOpen(revents: number): void {
    if (this.isClosed || (revents & POLLNVAL) !== 0) {
      throw new KernelError({
        errno: EBADF,
        syscall: 'read',
        argument: 'fd',
        reason: this.isClosed ? 'this userfaultfd was closed' : `fd ${this.fd} is not open`,
      });
    }
  }

  /**
   * The messages as they arrive, one at a time, until `signal` aborts or the
   * uffd is closed: `for await (const message of uffd.events({ signal }))`.
   * Aborting ends the loop at once; a wait still pending on the fd (the host
   * polls it in the event loop) ends when the uffd is closed, so close it — or
   * declare it `await using` — for the program to exit.
   * @throws KernelError (from the iteration) as `readMessages` does, e.g. EBADF when the fd was
   *   closed through `process.close` rather than `close()` (which ends the loop quietly).
   */
  async *events(
    options: { signal?: AbortSignal; max?: number } = {},
  ): AsyncGenerator<UffdMsg, void, undefined> {
    const { signal, max = 64 } = options;
    const stopped = () => this.isClosed || signal?.aborted === true;
    // The loop ends when the signal aborts or the uffd is closed, even while a wait is pending:
    // each wait gets its own promise (racing one long-lived promise would pile up reactions).
    let cancel: (() => void) | undefined;
    const onStop = () => cancel?.();
    signal?.addEventListener('abort', onStop, { once: true });
    this.stopListeners.add(onStop);
    try {
      while (!stopped()) {
        const wait = this.nextMessages(max);
        let messages: UffdMsg[] | typeof STOPPED;
        try {
          messages = await new Promise<UffdMsg[] | typeof STOPPED>((resolve, reject) => {
            cancel = () => resolve(STOPPED);
            wait.then(resolve, reject);
          });
        } catch (error) {
          if (stopped() || this.gone()) return; // closed, or the fd went away under the wait (EBADF)
          throw error;
        }
        cancel = undefined;
        if (messages === STOPPED) return;
        // Nothing to read: a spurious wake-up, or the fd is gone (the process exited) — then end.
        if (messages.length === 0 && this.gone()) return;
        for (const message of messages) {
          yield message;
          if (stopped()) return;
        }
      }
    } finally {
      signal?.removeEventListener('abort', onStop);
      this.stopListeners.delete(onStop);
    }
  }

  /** Whether the fd no longer refers to an open userfaultfd (closed, or its process exited). */
  private gone(): boolean {
    try {
      return (this.process.backend.poll(this.fd) & (POLLNVAL | POLLERR)) !== 0;
    } catch {
      return true;
    }
  }

  /** The `events` loops to end when the uffd closes. */
  private readonly stopListeners = new Set<() => void>();

  /** Whether `close` was called. */
  get closed(): boolean {
    return this.isClosed;
  }

  private isClosed = false;

  /**
   * poll(2)'s revents for the fd, without waiting: POLLIN when a message is pending, POLLNVAL once
   * the fd is closed, POLLERR when the fd was opened for another mm.
   * @throws AgentDiedError (host) when the process is an agent that died or stopped answering.
   */
  poll(): number {
    return this.process.backend.poll(this.fd);
  }

  /**
   * Closes the fd: sleeping faults are woken as the kernel does at release,
   * and `events` loops end. Idempotent: a second close does nothing (it never
   * reaches close(2), whose fd number may name another file by then).
   * @throws KernelError EBADF when the process no longer holds the fd (closed
   *   through `process.close`, or by the backend's `close()`); it is not closed again.
   */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.staging = null;
    for (const stop of this.stopListeners) stop();
    this.process.close(this.fd);
  }

  /**
   * `close`, quiet when the fd is gone already (its backend was closed first).
   * @throws AgentDiedError (host) when the process is an agent that died: the fd went with it.
   */
  [Symbol.dispose](): void {
    try {
      this.close();
    } catch (error) {
      if (!(error instanceof KernelError && error.errno === EBADF)) throw error;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this[Symbol.dispose]();
  }
}

/** What an `events` wait resolves to when the loop must end instead. */
const STOPPED = Symbol('stopped');

export type { ThreadAccess, ThreadBackend };
