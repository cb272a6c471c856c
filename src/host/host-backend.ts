/**
 * The host backend: the process API over the real kernel, through the native
 * addon. `self` is this Node process. Access threads are native pthreads that
 * really sleep in handle_userfault; the program's handler runs on the event
 * loop, woken by libuv when a userfaultfd becomes readable. Other processes
 * (a thread's fork, createProcess) run the native agent (remote.ts).
 *
 * Errors follow the model: a failed call throws a KernelError with the errno
 * the kernel returned and the call named as the model names it; a memory
 * access that faults throws a SignalError; a direct access that would sleep
 * on a userfaultfd fault throws WouldBlockError (the attempt is aborted with a
 * signal, which takes its message off the queue again). A memory syscall of
 * the calling thread that would sleep until its event is read throws an
 * Error instead of hanging the event loop.
 */
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import type {
  KernelBackend,
  MmapArgs,
  MremapArgs,
  PageInfo,
  ProcessBackend,
  ThreadAccess,
  ThreadBackend,
  ThreadResult,
  ThreadState,
  VmaInfo,
} from '../api/backend.ts';
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MREMAP_DONTUNMAP,
  O_CLOEXEC,
  PAGE_SIZE,
  POLLNVAL,
  PROT_READ,
  UFFD_FEATURE_EVENT_FORK,
  UFFDIO_API,
} from '../uapi/constants.ts';
import { EBADF, EINVAL, ENOENT, ENOSYS, KernelError } from '../uapi/errno.ts';
import { hostUnavailable } from './capabilities.ts';
import {
  accessError,
  check,
  checkDevice,
  EVENT_FEATURES,
  FD_IOCTLS,
  type ForkOptions,
  forkOp,
  ioctlName,
  nativeOps,
  pageRound,
  SYSCALL_CODES,
  sleepsError,
} from './common.ts';
import { NATIVE_AGENT_PATH, type NativeAddon, type NativeOp, type NativeThread, native } from './native.ts';
import { decodePagemap, presentPfn, smapsVmas } from './procfs.ts';
import { RangeSet } from './ranges.ts';
import { AGENT_TIMEOUT_MS, type RemoteOwner, RemoteProcessBackend } from './remote.ts';

class HostThread implements ThreadBackend {
  readonly tid: number;
  private final: ThreadResult | null = null;
  private readonly waiters: Array<(result: ThreadResult) => void> = [];
  private readonly handle: NativeThread;

  constructor(
    private readonly owner: HostProcessBackend,
    private readonly addon: NativeAddon,
    private readonly ops: readonly NativeOp[],
    readonly name: string,
  ) {
    const handle = addon.spawnThread(ops, name, () => this.exited());
    if (typeof handle === 'number') throw new KernelError({ errno: -handle, syscall: 'clone' });
    this.handle = handle;
    this.tid = addon.threadTid(handle);
  }

  state(): ThreadState {
    return this.final?.state ?? this.addon.threadState(this.handle);
  }

  result(): ThreadResult | null {
    if (this.final !== null) return this.final;
    const raw = this.addon.threadResult(this.handle);
    if (raw === null) return null;
    this.final = {
      state: raw.state,
      reads: raw.reads.map((bytes) => new Uint8Array(bytes)),
      ...(raw.state === 'done'
        ? {}
        : { signal: { signal: raw.signal, address: raw.address, siCode: raw.code } }),
      errno: raw.errno,
      faults: raw.faults,
      // Measured in the native thread: timed touches that slept (see BlockClock in native/threads.cc).
      blockedMs: raw.blockedMs,
      returns: raw.returns,
      children: raw.children.map(([pid, socket]) => this.owner.child(pid, socket)),
    };
    this.owner.threadFinished(this, this.ops, raw.returns);
    return this.final;
  }

  /** Blocks the caller until the thread has ended or sleeps on userfaultfd. */
  waitSettled(): void {
    if (this.final === null) this.addon.threadWait(this.handle);
  }

  join(): Promise<ThreadResult> {
    const done = this.result();
    if (done !== null) return Promise.resolve(done);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Called on the event loop when the native thread has ended. */
  private exited(): void {
    const result = this.result();
    if (result === null) return;
    for (const resolve of this.waiters.splice(0)) resolve(result);
  }
}

export class HostProcessBackend implements ProcessBackend {
  readonly pid: number = process.pid;
  /** Mappings this backend made (with their guards), unmapped by dispose(). */
  private readonly mappings = new RangeSet();
  /** Files this backend opened, closed by dispose() and kept by forked children. */
  private readonly fds = new Set<number>();
  private zeroPfn: number | undefined;
  /** Set once a userfaultfd asked for non-cooperative events: memory syscalls may then sleep. */
  private eventsEnabled = false;
  /** Set once a userfaultfd asked for FORK events: fork may then sleep (see RunFork in native/threads.cc). */
  private forkEvents = false;

  constructor(
    private readonly backend: HostBackend,
    private readonly addon: NativeAddon,
    private readonly spinTries: number,
  ) {}

  private openedFd(fd: number): number {
    this.fds.add(fd);
    return fd;
  }

  /**
   * A call of the calling thread that Linux may put to sleep until the
   * monitor reads the event it raised. Once events are enabled it runs in a
   * thread of its own: if it sleeps, the program (the monitor) gets an Error
   * instead of a hung event loop, and the call completes in the background
   * once the event is read.
   */
  private sleepingCall(name: string, op: NativeOp, direct: (() => number) | null): ThreadResult | number {
    if (!this.eventsEnabled && direct !== null) return check(name, direct());
    const thread = new HostThread(this, this.addon, [op], name);
    this.backend.threads.add(thread);
    thread.waitSettled();
    const result = thread.result();
    if (result === null) throw sleepsError(name);
    return result;
  }

  private memorySyscall(name: string, call: number, args: number[], direct: () => number): number {
    const outcome = this.sleepingCall(name, { kind: 2, address: 0, length: 0, call, args }, direct);
    return typeof outcome === 'number' ? outcome : check(name, outcome.returns[0] ?? -ENOSYS);
  }

  /**
   * mmap(2). A mapping the kernel places goes between two PROT_NONE shared
   * memory guards, so it never merges with (or borrows an anon_vma from)
   * memory Node happens to have next to it: the program sees the VMAs a
   * fresh process would. A call that fails is repeated without guards, so the
   * errno is exactly the kernel's.
   */
  mmap(args: MmapArgs): number {
    if ((args.flags & MAP_FIXED) !== 0) {
      const address = this.memorySyscall(
        'mmap',
        SYSCALL_CODES.mmap,
        [args.address, args.length, args.prot, args.flags, args.fd, args.offset],
        () => this.addon.mmap(args.address, args.length, args.prot, args.flags, args.fd, args.offset),
      );
      this.mappings.add(address, pageRound(args.length));
      return address;
    }
    const [address, guarded, guardedLength] = this.addon.mmapIsolated(
      args.address,
      args.length,
      args.prot,
      args.flags,
      args.fd,
      args.offset,
    );
    check('mmap', address);
    if (guardedLength > 0) this.mappings.add(guarded, guardedLength);
    else this.mappings.add(address, pageRound(args.length));
    return address;
  }

  munmap(address: number, length: number): void {
    this.memorySyscall('munmap', SYSCALL_CODES.munmap, [address, length], () =>
      this.addon.munmap(address, length),
    );
    this.mappings.remove(address, pageRound(length));
  }

  mprotect(address: number, length: number, prot: number): void {
    check('mprotect', this.addon.mprotect(address, length, prot));
  }

  memfdCreate(name: string, flags: number): number {
    return this.openedFd(check('memfd_create', this.addon.memfdCreate(name, flags)));
  }

  reopen(fd: number, accessMode: number): number {
    return this.openedFd(check('open', this.addon.open(`/proc/self/fd/${fd}`, accessMode | O_CLOEXEC)));
  }

  ftruncate(fd: number, length: number): void {
    check('ftruncate', this.addon.ftruncate(fd, length));
  }

  pread(fd: number, length: number, offset: number): Uint8Array {
    const into = new Uint8Array(length);
    const count = check('pread', this.addon.pread(fd, into, offset));
    return count === length ? into : into.slice(0, count);
  }

  pwrite(fd: number, data: Uint8Array, offset: number): number {
    return check('pwrite', this.addon.pwrite(fd, data, offset));
  }

  write(fd: number, data: Uint8Array): number {
    return check('write', this.addon.write(fd, data));
  }

  lseek(fd: number, offset: number, whence: number): number {
    return check('lseek', this.addon.lseek(fd, offset, whence));
  }

  fallocate(fd: number, mode: number, offset: number, length: number): void {
    check('fallocate', this.addon.fallocate(fd, mode, offset, length));
  }

  /**
   * Closes a descriptor this program opened (or adopted), once. This is
   * faultline's own process: any other number is Node's, or one the kernel
   * handed out again after a close (after the backend's close(), say), and
   * closing it would pull a file from under Node.
   * @throws KernelError EBADF for a descriptor this program does not hold.
   */
  close(fd: number): void {
    if (!this.fds.has(fd)) {
      throw new KernelError({
        errno: EBADF,
        syscall: 'close',
        reason: `fd ${fd} is not open in this program (closed already, by close() or by the backend's close(), or never opened through it)`,
      });
    }
    this.fds.delete(fd);
    check('close', this.addon.close(fd));
  }

  /** Takes `fd`, received from elsewhere (SCM_RIGHTS), as this program's: close() and dispose() then close it. */
  adoptFd(fd: number): number {
    return this.openedFd(fd);
  }

  userfaultfd(flags: number): number {
    return this.openedFd(check('userfaultfd', this.addon.userfaultfd(flags)));
  }

  open(path: string, flags: number): number {
    checkDevice(path);
    return this.openedFd(check('open', this.addon.open(path, flags)));
  }

  ioctl(fd: number, request: number, arg: Uint8Array | number | null): number {
    const code = request >>> 0;
    const requested =
      code === UFFDIO_API && arg instanceof Uint8Array && arg.byteLength >= 16
        ? new DataView(arg.buffer, arg.byteOffset, arg.byteLength).getUint32(8, true)
        : 0;
    const result = check(`ioctl(${ioctlName(request)})`, this.addon.ioctl(fd, code, arg));
    if (FD_IOCTLS.has(code)) this.fds.add(result);
    if ((requested & EVENT_FEATURES) !== 0) this.eventsEnabled = true;
    if ((requested & UFFD_FEATURE_EVENT_FORK) !== 0) this.forkEvents = true;
    return result;
  }

  read(fd: number, count: number): Uint8Array {
    // A handler reads a batch's worth (2 KiB for 64 messages) and usually gets one 32-byte message:
    // reading into a kept buffer and copying out what came keeps the fault path from feeding the GC.
    const into =
      count <= this.readBuffer.byteLength ? this.readBuffer.subarray(0, count) : new Uint8Array(count);
    // The backend's read never sleeps, also on a uffd opened without O_NONBLOCK (RWF_NOWAIT).
    const length = check('read', this.addon.readNowait?.(fd, into) ?? this.addon.read(fd, into));
    return into.slice(0, length);
  }

  private readonly readBuffer = new Uint8Array(4096);

  poll(fd: number): number {
    const revents = this.addon.poll(fd);
    return revents < 0 ? POLLNVAL : revents;
  }

  /** A non-blocking poll, then up to spinTries more (see HostBackendOptions), then a libuv poll watcher. */
  waitReadable(fd: number): Promise<void> {
    if (this.poll(fd) !== 0) return Promise.resolve();
    if (this.spinTries > 0 && this.addon.spinReadable(fd, this.spinTries) !== 0) return Promise.resolve();
    return new Promise((resolve) => {
      if (this.addon.waitReadable(fd, resolve) < 0) resolve();
    });
  }

  readMemory(address: number, length: number): Uint8Array {
    const into = new Uint8Array(length);
    const outcome = this.addon.readMemory(address, into);
    if (outcome !== null) throw accessError(...outcome);
    return into;
  }

  readMemoryInto(address: number, into: Uint8Array): void {
    const outcome = this.addon.readMemory(address, into);
    if (outcome !== null) throw accessError(...outcome);
  }

  writeMemory(address: number, data: Uint8Array): void {
    const outcome = this.addon.writeMemory(address, data);
    if (outcome !== null) throw accessError(...outcome);
  }

  /**
   * The program runs on a native thread; it is read to the end here, so it
   * must be finite and must not depend on what earlier accesses did. A fork
   * access makes a child that keeps the descriptors this backend opened.
   */
  spawnThread(program: Iterable<ThreadAccess>, name = ''): ThreadBackend {
    const thread = new HostThread(this, this.addon, nativeOps(program, this.forkOptions), name);
    this.backend.threads.add(thread);
    return thread;
  }

  private readonly forkOptions = (): ForkOptions => ({ keep: [...this.fds], eventFork: this.forkEvents });

  /** The backend of a child a fork access made. */
  child(pid: number, socket: number): ProcessBackend {
    return this.backend.adopt(pid, socket);
  }

  /** Bookkeeping once a thread has ended: its munmap/mremap calls change the mappings. */
  threadFinished(thread: ThreadBackend, ops: readonly NativeOp[], returns: readonly number[]): void {
    this.backend.threads.delete(thread);
    let index = 0;
    for (const op of ops) {
      if (op.kind !== 2) continue;
      const result = returns[index++];
      if (result === undefined || result < 0) continue;
      const args = op.args ?? [];
      if (op.call === SYSCALL_CODES.munmap) this.mappings.remove(args[0] ?? 0, pageRound(args[1] ?? 0));
      if (op.call === SYSCALL_CODES.mremap) this.remapped(args, result);
    }
  }

  private remapped(args: readonly number[], result: number): void {
    const [oldAddress = 0, oldLength = 0, newLength = 0, flags = 0] = args;
    if ((flags & MREMAP_DONTUNMAP) === 0) this.mappings.remove(oldAddress, pageRound(oldLength));
    this.mappings.add(result, pageRound(newLength));
  }

  madvise(address: number, length: number, advice: number): void {
    this.memorySyscall('madvise', SYSCALL_CODES.madvise, [address, length, advice], () =>
      this.addon.madvise(address, length, advice),
    );
  }

  mremap(...args: MremapArgs): number {
    const result = this.memorySyscall('mremap', SYSCALL_CODES.mremap, [...args], () =>
      this.addon.mremap(...args),
    );
    this.remapped(args.slice(0, 4), result);
    return result;
  }

  /**
   * fork(2) of this Node process, made by a native thread: the child runs
   * the agent, keeps the descriptors this backend opened, and shares nothing
   * else with Node. With EVENT_FORK it sleeps until the event is read, which
   * the calling thread cannot do: use a thread's fork access then.
   */
  fork(): ProcessBackend {
    const outcome = this.sleepingCall('fork', forkOp(this.forkOptions()), null) as ThreadResult;
    check('fork', outcome.returns[0] ?? -ENOSYS);
    return outcome.children[0]!;
  }

  signalThread(thread: ThreadBackend, signal: number): void {
    if (!(thread instanceof HostThread)) {
      throw new KernelError({
        errno: EINVAL,
        syscall: 'tgkill',
        argument: 'thread',
        reason: 'not a host thread',
      });
    }
    if (thread.result() !== null) return;
    check('tgkill', this.addon.signalThread(thread.tid, signal));
  }

  exit(): void {
    throw new KernelError({
      errno: ENOSYS,
      syscall: 'exit_group',
      reason: 'the host backend process is this Node process, which cannot exit under the program',
    });
  }

  pagemap(address: number, pages: number): PageInfo[] {
    const raw = this.addon.pagemap(address, pages);
    if (raw === null) throw new KernelError({ errno: EINVAL, syscall: 'pread(/proc/self/pagemap)' });
    return decodePagemap(raw, pages, this.zeroPagePfn());
  }

  /** The shared zero page's PFN, read from a freshly read-faulted anonymous page (0 if PFNs are hidden). */
  zeroPagePfn(): number {
    if (this.zeroPfn !== undefined) return this.zeroPfn;
    const address = check(
      'mmap',
      this.addon.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
    );
    try {
      this.addon.readMemory(address, new Uint8Array(1));
      const raw = this.addon.pagemap(address, 1);
      this.zeroPfn = raw === null ? 0 : presentPfn(raw);
    } finally {
      this.addon.munmap(address, PAGE_SIZE);
    }
    return this.zeroPfn;
  }

  vmas(start: number, end: number): VmaInfo[] {
    return smapsVmas('self', start, end);
  }

  /** Closes the files and unmaps the memory this backend created. Threads still asleep on a closed userfaultfd wake. */
  dispose(): void {
    for (const fd of this.fds) this.addon.close(fd);
    this.fds.clear();
    for (const [start, end] of this.mappings.take()) this.addon.munmap(start, end - start);
  }
}

/**
 * Non-blocking polls waitReadable tries before it sleeps (HostBackendOptions.spinTries), about 0.7 ms
 * at 0.35 µs a poll. On a 2-vCPU VM a TypeScript MISSING + COPY handler made 16k faults/s sleeping
 * at once and 41-43k spinning, the same from 100 to 10,000 tries.
 */
export const DEFAULT_SPIN_TRIES = 2000;

export interface HostBackendOptions {
  /**
   * Run the program's own process (`self`) in a faultline_agent process instead of this Node
   * process: what the program maps, reads, writes and unmaps is then that process's memory, never
   * Node's, and an agent that crashes or hangs is reported (AgentDiedError), killed and reaped.
   * Scenarios (run, diff, fuzz) use it. Default false: workloads and the bench run their handler
   * threads in Node, where a fault round trip costs no socket.
   */
  readonly isolated?: boolean;
  /** How long an agent may take to answer one request before it is killed (default AGENT_TIMEOUT_MS). */
  readonly agentTimeoutMs?: number;
  /**
   * How many non-blocking polls waitReadable tries (holding the event loop meanwhile) before it
   * sleeps on the event loop: on VMs waking a halted vCPU costs more than a fault's round trip.
   * 0 sleeps at once. Default DEFAULT_SPIN_TRIES.
   */
  readonly spinTries?: number;
}

/** How long settling waits for a running thread to end or sleep before it counts as blocked. */
const SETTLE_BOUND_MS = 2000;
/** How long later settles wait for a thread that already spun past the bound. */
const SPINNING_LOOK_MS = 100;

/** The host kernel. Construct it only when hostUnavailable() is undefined (the constructor checks). */
export class HostBackend implements KernelBackend, RemoteOwner {
  readonly name = 'host' as const;
  /** The program's process: this Node process, or an agent when `isolated`. */
  readonly self: ProcessBackend;
  /** This Node process. */
  readonly node: HostProcessBackend;
  readonly agentTimeoutMs: number;
  /** Threads that have not ended yet, in every process (for settle). */
  readonly threads = new Set<ThreadBackend>();
  /** Processes other than Node: forked children and created ones. */
  private readonly others = new Set<RemoteProcessBackend>();
  private readonly addon: NativeAddon;

  /**
   * The host kernel, with this Node process (or an agent, `isolated`) as the program's process.
   * @throws Error naming what is missing when the host backend cannot run (`hostUnavailable()`:
   *   the native addon, /dev/userfaultfd or the userfaultfd syscall; `faultline doctor` says how to fix it).
   */
  constructor(options: HostBackendOptions = {}) {
    const reason = hostUnavailable();
    if (reason !== undefined || native === null) throw new Error(`host backend unavailable: ${reason}`);
    this.addon = native;
    this.agentTimeoutMs = options.agentTimeoutMs ?? AGENT_TIMEOUT_MS;
    this.node = new HostProcessBackend(this, native, options.spinTries ?? DEFAULT_SPIN_TRIES);
    this.self = options.isolated === true ? this.createProcess() : this.node;
  }

  /**
   * A fresh process: the faultline_agent executable, started with
   * posix_spawn (so no FORK event, and nothing of Node's address space).
   * Unprivileged, it runs as nobody: no CAP_SYS_PTRACE, no /dev/userfaultfd.
   * @throws KernelError ENOENT when the agent executable was not built; the errno of posix_spawn
   *   (EAGAIN, ENOMEM) when it cannot start.
   */
  createProcess(options: { privileged?: boolean } = {}): ProcessBackend {
    if (!existsSync(NATIVE_AGENT_PATH)) {
      throw new KernelError({
        errno: ENOENT,
        syscall: 'posix_spawn',
        reason: `${NATIVE_AGENT_PATH} is missing (npm ci builds it with the addon)`,
      });
    }
    const spawned = this.addon.spawnAgent(NATIVE_AGENT_PATH, options.privileged ?? true);
    if (typeof spawned === 'number') check('posix_spawn', spawned);
    const [pid, socket] = spawned as [number, number];
    return this.adopt(pid, socket);
  }

  /**
   * A descriptor of this Node process for the file `fd` of `from` refers to (the same open file,
   * as SCM_RIGHTS passes it; pidfd_getfd), held by `node` (its close() and dispose() close it).
   * @throws KernelError with the errno of pidfd_open or pidfd_getfd (ESRCH for an agent gone, EBADF);
   *   ENOSYS with a build of the addon that predates it (`npm run build:native`).
   */
  takeFd(from: ProcessBackend, fd: number): number {
    if (this.addon.pidfdGetfd === undefined) {
      throw new KernelError({
        errno: ENOSYS,
        syscall: 'pidfd_getfd',
        reason: 'the native addon predates it: npm run build:native',
      });
    }
    return this.node.adoptFd(check('pidfd_getfd', this.addon.pidfdGetfd(from.pid, fd)));
  }

  /** Whether `takeFd` works with this build of the addon. */
  get canTakeFds(): boolean {
    return this.addon.pidfdGetfd !== undefined;
  }

  /** The backend of a process running the agent at the other end of `socket`. */
  adopt(pid: number, socket: number): ProcessBackend {
    const remote = new RemoteProcessBackend(this, this.addon, pid, socket);
    this.others.add(remote);
    return remote;
  }

  zeroPagePfn(): number {
    return this.node.zeroPagePfn();
  }

  /**
   * Resolves when every access thread has ended or sleeps in the kernel on
   * userfaultfd. Stable means seen twice, with the event loop's pending I/O
   * (a handler's wake-up) run in between.
   */
  async settle(): Promise<void> {
    // Bounded: a thread that neither ends nor sleeps (one spinning in the kernel, retrying a
    // kernel-mode fault with a signal pending) counts as blocked once the bound passes, and later
    // settles give it only a short look, so no step waits on it for long (SCENARIOS.md, settling).
    const started = performance.now();
    let stableRounds = 0;
    for (let round = 0; ; round++) {
      const elapsed = performance.now() - started;
      let running = false;
      for (const thread of this.threads) {
        if (thread.result() !== null) continue;
        if (thread.state() !== 'running') continue;
        if (this.spinning.has(thread) && elapsed >= SPINNING_LOOK_MS) continue;
        if (elapsed >= SETTLE_BOUND_MS) {
          this.spinning.add(thread);
          continue;
        }
        running = true;
        break;
      }
      if (!running && ++stableRounds >= 2) return;
      if (running) stableRounds = 0;
      if (round < 16) await new Promise<void>((resolve) => setImmediate(resolve));
      else await new Promise<void>((resolve) => setTimeout(resolve, 1));
    }
  }

  /** Threads seen running past a settle's bound: spinning in the kernel. */
  private readonly spinning = new WeakSet<ThreadBackend>();

  describe(): string {
    const where = this.self === this.node ? '' : `, program in process ${this.self.pid} (faultline_agent)`;
    return `host kernel Linux ${release()}, pid ${process.pid}${where}`;
  }

  /** `dispose`, by the name the model backend shares: a host program ends when its handler ends. */
  close(): void {
    this.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  /** Ends the other processes, then closes and unmaps what the program created in this one. */
  dispose(): void {
    for (const other of this.others) {
      try {
        other.exit();
      } catch {
        // Already gone.
      }
    }
    this.others.clear();
    this.node.dispose();
  }
}
