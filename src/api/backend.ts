/**
 * The backend interface: the raw system calls a process makes, the same for
 * the simulated kernel and for the host's real kernel. Every failure throws a
 * KernelError carrying the errno; argument structs travel as bytes encoded
 * by uapi/, so both backends see exactly what a C program would pass.
 */

import type { MmapArgs } from '../model/mm/mmap.ts';
import type { Access } from '../model/task.ts';

/**
 * One memory access of a thread's program; `kernel` makes it a syscall's
 * access (read(2) into the range). The model's own type is the contract both
 * backends follow.
 */
export type ThreadAccess = Access;
export type { MmapArgs };

export type ThreadState = 'running' | 'blocked' | 'done' | 'sigbus' | 'segv';

export interface ThreadResult {
  readonly state: 'done' | 'sigbus' | 'segv';
  /** The bytes of each completed read access, in order. */
  readonly reads: readonly Uint8Array[];
  /** For a signal: which, where, and si_code. */
  readonly signal?: { readonly signal: number; readonly address: number; readonly siCode: number };
  /** EFAULT when a kernel-mode access could not fault the memory in. */
  readonly errno: number;
  /** Userfaultfd faults the thread took (messages it queued). */
  readonly faults: number;
  /** The return value (or -errno) of each `syscall` access, in order. */
  readonly returns: readonly number[];
  /** The child of each `fork` syscall access, in order. */
  readonly children: readonly ProcessBackend[];
  /** Time the thread spent asleep on userfaultfd faults, in milliseconds, where the backend can tell. */
  readonly blockedMs?: number;
}

export interface ThreadBackend {
  readonly tid: number;
  readonly name: string;
  /** Where the thread is now; `blocked` means asleep on a fault. */
  state(): ThreadState;
  /** Resolves when the thread ends. */
  join(): Promise<ThreadResult>;
  /** The result if the thread has ended, else null. */
  result(): ThreadResult | null;
}

/**
 * mremap(2)'s arguments in the kernel's order (old_address, old_size,
 * new_size, flags, new_address): written once for every backend.
 */
export type MremapArgs = readonly [
  oldAddress: number,
  oldLength: number,
  newLength: number,
  flags: number,
  newAddress: number,
];

export interface ProcessBackend {
  readonly pid: number;
  mmap(args: MmapArgs): number;
  munmap(address: number, length: number): void;
  mprotect(address: number, length: number, prot: number): void;
  memfdCreate(name: string, flags: number): number;
  /** A second open file description of the same file with another access mode (open("/proc/self/fd/N")). */
  reopen(fd: number, accessMode: number): number;
  ftruncate(fd: number, length: number): void;
  pread(fd: number, length: number, offset: number): Uint8Array;
  pwrite(fd: number, data: Uint8Array, offset: number): number;
  /** write(2) at the file position (guest_memfd population). */
  write(fd: number, data: Uint8Array): number;
  /** lseek(2): SEEK_SET (0), SEEK_CUR (1), SEEK_END (2), SEEK_DATA (3) or SEEK_HOLE (4). */
  lseek(fd: number, offset: number, whence: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  close(fd: number): void;
  userfaultfd(flags: number): number;
  /** open(2) of a device node: "/dev/userfaultfd" or "/dev/kvm". */
  open(path: string, flags: number): number;
  /** ioctl(2): `arg` is the argument struct's bytes (written back in place), an integer, or null for a bad pointer. */
  ioctl(fd: number, request: number, arg: Uint8Array | number | null): number;
  /** read(2) that never blocks: EAGAIN when nothing is there. */
  read(fd: number, count: number): Uint8Array;
  /** poll(2) with a zero timeout: the revents. */
  poll(fd: number): number;
  /** Resolves once poll(fd) would report something (POLLIN, POLLERR or POLLHUP). */
  waitReadable(fd: number): Promise<void>;
  /** Memory access by the calling thread; throws SignalError, or WouldBlockError for a fault that would sleep. */
  readMemory(address: number, length: number): Uint8Array;
  /** readMemory into the caller's buffer (`into.byteLength` bytes), allocating nothing; optional. */
  readMemoryInto?(address: number, into: Uint8Array): void;
  writeMemory(address: number, data: Uint8Array): void;
  spawnThread(program: Iterable<ThreadAccess>, name?: string): ThreadBackend;
  /**
   * madvise(2), mremap(2) and fork(2) made by the calling thread. They return
   * at once; where Linux would wait for a userfaultfd event to be read, use a
   * thread's `syscall` access instead, which blocks as the kernel does.
   */
  madvise(address: number, length: number, advice: number): void;
  mremap(...args: MremapArgs): number;
  fork(): ProcessBackend;
  /** Delivers `signal` to a thread, which handles and ignores it (a blocked fault is retried). */
  signalThread(thread: ThreadBackend, signal: number): void;
  exit(): void;
  /** Per 4 KiB page in [address, address + pages * 4096): what /proc/pid/pagemap shows. */
  pagemap(address: number, pages: number): PageInfo[];
  /** The VMAs intersecting [start, end), with their userfaultfd modes (smaps VmFlags um/uw/ui). */
  vmas(start: number, end: number): VmaInfo[];
}

export interface PageInfo {
  readonly present: boolean;
  readonly uffdWp: boolean;
  readonly marker: 'wp' | 'poison' | 'none';
  readonly zeroPage: boolean;
}

export interface VmaInfo {
  readonly start: number;
  readonly end: number;
  readonly modes: readonly ('missing' | 'wp' | 'minor')[];
}

export interface KernelBackend {
  readonly name: 'model' | 'host';
  /** The calling program's own process. */
  readonly self: ProcessBackend;
  /** Another process (on the model: a fresh one; privileged unless said otherwise). */
  createProcess(options?: { privileged?: boolean }): ProcessBackend;
  /** Resolves when every thread has finished or is blocked in the kernel. */
  settle(): Promise<void>;
  /** A line identifying the run for replay (seed, version). */
  describe(): string;
  /** Ends the program and releases what the backend holds (files, maps, other processes, workers). */
  close?(): void;
}

/** A direct memory access would have slept on a userfaultfd fault: use a thread. */
export class WouldBlockError extends Error {
  override name = 'WouldBlockError';
  constructor(readonly address: number) {
    super(`access at 0x${address.toString(16)} would block on a userfaultfd fault; run it in a thread`);
  }
}
