/**
 * The process API: typed calls over either backend. Argument structs are
 * encoded and decoded with uapi/, so the same handler code runs on the model
 * and on the host kernel.
 */
import {
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
  POLLIN,
  POLLNVAL,
  PROT_READ,
  PROT_WRITE,
  UFFD_API,
  UFFD_USER_MODE_ONLY,
  UFFDIO_API,
  UFFDIO_CONTINUE,
  UFFDIO_COPY,
  UFFDIO_MOVE,
  UFFDIO_POISON,
  UFFDIO_REGISTER,
  UFFDIO_UNREGISTER,
  UFFDIO_WAKE,
  UFFDIO_WRITEPROTECT,
  UFFDIO_ZEROPAGE,
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
   */
  mmapIsolated(length: number): number {
    const base = this.mmap({ length: length + 2 * 4096, prot: 0 });
    this.mprotect(base + 4096, length, PROT_READ | PROT_WRITE);
    return base + 4096;
  }

  munmapIsolated(address: number, length: number): void {
    this.munmap(address - 4096, length + 2 * 4096);
  }

  munmap(address: number, length: number): void {
    this.backend.munmap(address, length);
  }

  mprotect(address: number, length: number, prot: number): void {
    this.backend.mprotect(address, length, prot);
  }

  /** memfd_create + ftruncate. */
  memfd(name: string, options: { size?: number; hugetlb?: boolean; flags?: number } = {}): number {
    const fd = this.backend.memfdCreate(name, (options.flags ?? 0) | (options.hugetlb ? MFD_HUGETLB : 0));
    if (options.size !== undefined) this.backend.ftruncate(fd, options.size);
    return fd;
  }

  /**
   * A guest_memfd of `size` bytes: /dev/kvm, KVM_CREATE_VM, KVM_CREATE_GUEST_MEMFD
   * with GUEST_MEMFD_FLAG_MMAP (default true) and INIT_SHARED (default: with MMAP).
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

  /** write(2) at the file position. */
  writeFile(fd: number, data: Uint8Array): number {
    return this.backend.write(fd, data);
  }

  lseek(fd: number, offset: number, whence = 0): number {
    return this.backend.lseek(fd, offset, whence);
  }

  ftruncate(fd: number, length: number): void {
    this.backend.ftruncate(fd, length);
  }

  pread(fd: number, length: number, offset: number): Uint8Array {
    return this.backend.pread(fd, length, offset);
  }

  pwrite(fd: number, data: Uint8Array, offset: number): number {
    return this.backend.pwrite(fd, data, offset);
  }

  fallocate(fd: number, mode: number, offset: number, length: number): void {
    this.backend.fallocate(fd, mode, offset, length);
  }

  close(fd: number): void {
    this.backend.close(fd);
  }

  read(address: number, length: number): Uint8Array {
    return this.backend.readMemory(address, length);
  }

  write(address: number, data: Uint8Array): void {
    this.backend.writeMemory(address, data);
  }

  /** Starts a thread running `program`; it may block on userfaultfd faults. */
  thread(program: Iterable<ThreadAccess>, name?: string): ThreadBackend {
    return this.backend.spawnThread(program, name);
  }

  /** Creates a userfaultfd (not yet initialized: call `api`). */
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

  exit(): void {
    this.backend.exit();
  }
}

export interface RangeArgs {
  readonly start: number;
  readonly length: number;
}

export interface ApiResult {
  /** Every feature the kernel offers. */
  readonly features: number;
  readonly ioctls: bigint;
}

/** Resolves a list of feature names or a bit mask to a mask. */
export function featureMask(features: number | readonly string[]): number {
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

  api(features: number | readonly string[] = 0): ApiResult {
    const arg = encodeUffdioApi({
      api: BigInt(UFFD_API),
      features: BigInt(featureMask(features)),
      ioctls: 0n,
    });
    this.ioctl(UFFDIO_API, arg);
    const result = decodeUffdioApi(arg);
    return { features: Number(result.features), ioctls: result.ioctls };
  }

  /** Registers [start, start+length) for `mode` (UFFDIO_REGISTER_MODE_* bits); returns the ioctls mask. */
  register(range: RangeArgs, mode: number | bigint): bigint {
    const arg = encodeUffdioRegister({
      range: { start: BigInt(range.start), len: BigInt(range.length) },
      mode: BigInt(mode),
      ioctls: 0n,
    });
    this.ioctl(UFFDIO_REGISTER, arg);
    return decodeUffdioRegister(arg).ioctls;
  }

  unregister(range: RangeArgs): void {
    this.ioctl(UFFDIO_UNREGISTER, this.args.range(UFFDIO_RANGE_SIZE, range));
  }

  wake(range: RangeArgs): void {
    this.ioctl(UFFDIO_WAKE, this.args.range(UFFDIO_RANGE_SIZE, range));
  }

  /** UFFDIO_COPY from `src`, an address in the calling process. */
  copy(args: { dst: number; src: number; length: number; mode?: number | bigint }): number {
    // struct uffdio_copy: dst, src, len, mode, then the copy result (zero going in).
    const arg = this.args.take(UFFDIO_COPY_SIZE);
    putU64(arg, 0, args.dst);
    putU64(arg, 8, args.src);
    putU64(arg, 16, args.length);
    putU64(arg, 24, args.mode ?? 0);
    return this.rangeIoctl(UFFDIO_COPY, arg, 32);
  }

  /**
   * UFFDIO_COPY of `data`: the bytes are first written into a private staging
   * mapping of the calling process, as a real handler copies from its own buffer.
   */
  copyBytes(dst: number, data: Uint8Array, mode: number | bigint = 0): number {
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
   */
  move(args: { dst: number; src: number; length: number; mode?: number | bigint }): number {
    // struct uffdio_move: dst, src, len, mode, then the move result (zero going in).
    const arg = this.args.take(UFFDIO_MOVE_SIZE);
    putU64(arg, 0, args.dst);
    putU64(arg, 8, args.src);
    putU64(arg, 16, args.length);
    putU64(arg, 24, args.mode ?? 0);
    return this.rangeIoctl(UFFDIO_MOVE, arg, 32);
  }

  zeropage(range: RangeArgs, mode: number | bigint = 0): number {
    return this.rangeIoctl(UFFDIO_ZEROPAGE, this.args.range(UFFDIO_ZEROPAGE_SIZE, range, mode), 24);
  }

  continue(range: RangeArgs, mode: number | bigint = 0): number {
    return this.rangeIoctl(UFFDIO_CONTINUE, this.args.range(UFFDIO_CONTINUE_SIZE, range, mode), 24);
  }

  poison(range: RangeArgs, mode: number | bigint = 0): number {
    return this.rangeIoctl(UFFDIO_POISON, this.args.range(UFFDIO_POISON_SIZE, range, mode), 24);
  }

  writeprotect(range: RangeArgs, mode: number | bigint): void {
    this.ioctl(UFFDIO_WRITEPROTECT, this.args.range(UFFDIO_WRITEPROTECT_SIZE, range, mode));
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

  /** Reads up to `max` messages without blocking; [] when none is pending. */
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
    if (this.closed || (revents & POLLNVAL) !== 0) {
      throw new KernelError({
        errno: EBADF,
        syscall: 'read',
        argument: 'fd',
        reason: this.closed ? 'this userfaultfd was closed' : `fd ${this.fd} is not open`,
      });
    }
  }

  private closed = false;

  poll(): number {
    return this.process.backend.poll(this.fd);
  }

  close(): void {
    this.process.close(this.fd);
    this.closed = true;
    this.staging = null;
  }
}

export type { ThreadAccess, ThreadBackend };
