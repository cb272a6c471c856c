/**
 * The model backend: the process API over the simulated kernel. Simulated
 * threads run when the program awaits (a message, a join, settle), driven by
 * a pump on the microtask queue; which runnable thread goes next is drawn
 * from the kernel's seeded PRNG, so a run replays from its seed.
 */

import { type ModelTimer, SYSCALL_COST_NS } from '../model/clock.ts';
import type { FailureRecord } from '../model/failure.ts';
import { forkProcess } from '../model/fork.ts';
import { ioctl } from '../model/fs/ioctl.ts';
import { memfdCreate } from '../model/fs/memfd.ts';
import { fallocate, ftruncate, openDevice, reopen } from '../model/fs/open.ts';
import { lseek, poll, pread, pwrite, read, write } from '../model/fs/read_write.ts';
import { userfaultfd } from '../model/fs/userfaultfd.ts';
import { describeSleepers, hasSleepers } from '../model/hang.ts';
import { ModelKernel, type ModelKernelOptions } from '../model/kernel.ts';
import { callerAccess } from '../model/mm/access.ts';
import { FAULT_RESULT_SIGBUS, FAULT_RESULT_SIGSEGV, FAULT_RESULT_WOULD_BLOCK } from '../model/mm/fault.ts';
import { madvise } from '../model/mm/madvise.ts';
import { mmap } from '../model/mm/mmap.ts';
import { mprotect } from '../model/mm/mprotect.ts';
import { mremap } from '../model/mm/mremap.ts';
import { munmap } from '../model/mm/munmap.ts';
import {
  PTE_MARKER_POISONED,
  PTE_MARKER_UFFD_WP,
  PTE_PRESENT,
  PTE_UFFD_WP,
  PTE_ZERO,
} from '../model/mm/pagetable.ts';
import { VM_UFFD_MINOR, VM_UFFD_MISSING, VM_UFFD_WP } from '../model/mm/vma.ts';
import { ParallelCpus } from '../model/parallel/cpus.ts';
import type { ModelProcess } from '../model/process.ts';
import type { ScheduleController } from '../model/schedule.ts';
import type { Task } from '../model/task.ts';
import type { PollWaiters } from '../model/uffd/context.ts';
import { BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, SIGBUS, SIGSEGV } from '../uapi/constants.ts';
import { KernelError, SignalError } from '../uapi/errno.ts';
import {
  type KernelBackend,
  type MmapArgs,
  type MremapArgs,
  type PageInfo,
  type ProcessBackend,
  type ThreadAccess,
  type ThreadBackend,
  type ThreadResult,
  type ThreadState,
  type VmaInfo,
  WouldBlockError,
} from './backend.ts';
import { byteCount, bytes, checkProgram, int, text, ulong } from './validate.ts';

/** A result, or the KernelError of its -errno with the argument and reason the kernel recorded. */
function check<T>(failure: FailureRecord, syscall: string, result: T | number): T {
  if (typeof result === 'number' && result < 0) {
    const { argument, reason } = failure.take();
    throw new KernelError({
      errno: -result,
      syscall,
      ...(argument === undefined ? {} : { argument }),
      ...(reason === undefined ? {} : { reason }),
    });
  }
  return result as T;
}

const IOCTL_NAMES: Record<number, string> = {
  3223366144: 'UFFDIO_REGISTER',
  2148575745: 'UFFDIO_UNREGISTER',
  2148575746: 'UFFDIO_WAKE',
  3223890435: 'UFFDIO_COPY',
  3223366148: 'UFFDIO_ZEROPAGE',
  3223890437: 'UFFDIO_MOVE',
  3222841862: 'UFFDIO_WRITEPROTECT',
  3223366151: 'UFFDIO_CONTINUE',
  3223366152: 'UFFDIO_POISON',
  3222841919: 'UFFDIO_API',
  43520: 'USERFAULTFD_IOC_NEW',
};

class ModelThread implements ThreadBackend {
  constructor(
    private readonly backend: ModelBackend,
    readonly task: Task,
  ) {}

  get tid(): number {
    return this.task.tid;
  }

  get name(): string {
    return this.task.name;
  }

  state(): ThreadState {
    const state = this.task.state;
    return state === 'runnable' || state === 'user' ? 'running' : state;
  }

  result(): ThreadResult | null {
    const task = this.task;
    if (!task.finished) return null;
    return {
      state: task.state as ThreadResult['state'],
      reads: task.reads,
      ...(task.signal === null ? {} : { signal: task.signal }),
      errno: task.errno,
      faults: task.faultsTaken,
      returns: task.returns,
      blockedMs: task.blockedTotalMs,
      children: task.children.map((child) => this.backend.wrap(child as ModelProcess)),
    };
  }

  join(): Promise<ThreadResult> {
    const done = this.result();
    if (done !== null) return Promise.resolve(done);
    const backend = this.backend;
    awaitBegins(backend);
    return new Promise((resolve) => {
      this.task.exitCallbacks.push(() => {
        awaitEnds(backend);
        resolve(this.result()!);
      });
      backend.schedulePump();
    });
  }
}

class ModelProcessBackend implements ProcessBackend {
  constructor(
    private readonly backend: ModelBackend,
    readonly process: ModelProcess,
  ) {}

  /** The result, or the KernelError of its -errno with what the kernel recorded of the failure. */
  private check<T>(syscall: string, result: T | number): T {
    return check(this.backend.kernel.failure, syscall, result);
  }

  get pid(): number {
    return this.process.pid;
  }

  mmap(args: MmapArgs): number {
    if (typeof args !== 'object' || args === null) throw new TypeError('mmap: args must be an object');
    const checked: MmapArgs = {
      address: ulong('mmap', 'address', args.address),
      length: ulong('mmap', 'length', args.length),
      prot: int('mmap', 'prot', args.prot),
      flags: int('mmap', 'flags', args.flags),
      fd: int('mmap', 'fd', args.fd),
      offset: int('mmap', 'offset', args.offset),
    };
    this.backend.syscallPoint('mmap');
    return this.check('mmap', mmap(this.process, checked));
  }

  munmap(address: number, length: number): void {
    this.backend.syscallPoint('munmap');
    this.check(
      'munmap',
      munmap(this.process, ulong('munmap', 'address', address), ulong('munmap', 'length', length), null),
    );
  }

  mprotect(address: number, length: number, prot: number): void {
    const start = ulong('mprotect', 'address', address);
    const len = ulong('mprotect', 'length', length);
    this.backend.syscallPoint('mprotect');
    this.check('mprotect', mprotect(this.process, start, len, int('mprotect', 'prot', prot)));
  }

  memfdCreate(name: string, flags: number): number {
    const checked = text('memfd_create', 'name', name);
    this.backend.syscallPoint('memfd_create');
    return this.check(
      'memfd_create',
      memfdCreate(this.process, checked, int('memfd_create', 'flags', flags)),
    );
  }

  reopen(fd: number, accessMode: number): number {
    this.backend.syscallPoint('open');
    return this.check('open', reopen(this.process, int('open', 'fd', fd), int('open', 'flags', accessMode)));
  }

  ftruncate(fd: number, length: number): void {
    this.backend.syscallPoint('ftruncate');
    this.check(
      'ftruncate',
      ftruncate(this.process, int('ftruncate', 'fd', fd), int('ftruncate', 'length', length)),
    );
  }

  pread(fd: number, length: number, offset: number): Uint8Array {
    const count = int('pread', 'count', length);
    this.backend.syscallPoint('pread');
    return this.check(
      'pread',
      pread(this.process, int('pread', 'fd', fd), count, int('pread', 'offset', offset)),
    );
  }

  pwrite(fd: number, data: Uint8Array, offset: number): number {
    const buffer = bytes('pwrite', 'data', data);
    this.backend.syscallPoint('pwrite');
    return this.check(
      'pwrite',
      pwrite(this.process, int('pwrite', 'fd', fd), buffer, int('pwrite', 'offset', offset)),
    );
  }

  fallocate(fd: number, mode: number, offset: number, length: number): void {
    const at = int('fallocate', 'offset', offset);
    const len = int('fallocate', 'length', length);
    this.backend.syscallPoint('fallocate');
    this.check(
      'fallocate',
      fallocate(this.process, int('fallocate', 'fd', fd), int('fallocate', 'mode', mode), at, len),
    );
  }

  close(fd: number): void {
    this.backend.syscallPoint('close');
    this.check('close', this.process.close(int('close', 'fd', fd)));
  }

  userfaultfd(flags: number): number {
    this.backend.syscallPoint('userfaultfd');
    return this.check('userfaultfd', userfaultfd(this.process, int('userfaultfd', 'flags', flags)));
  }

  open(path: string, flags: number): number {
    this.backend.syscallPoint('open');
    return this.check(
      'open',
      openDevice(this.process, text('open', 'path', path), int('open', 'flags', flags)),
    );
  }

  write(fd: number, data: Uint8Array): number {
    this.backend.syscallPoint('write');
    return this.check('write', write(this.process, int('write', 'fd', fd), bytes('write', 'data', data)));
  }

  lseek(fd: number, offset: number, whence: number): number {
    const at = int('lseek', 'offset', offset);
    this.backend.syscallPoint('lseek');
    return this.check(
      'lseek',
      lseek(this.process, int('lseek', 'fd', fd), at, int('lseek', 'whence', whence)),
    );
  }

  ioctl(fd: number, request: number, arg: Uint8Array | number | null): number {
    if (arg !== null && typeof arg !== 'number' && !(arg instanceof Uint8Array)) {
      throw new TypeError('ioctl: arg must be a Uint8Array, an integer or null');
    }
    this.backend.syscallPoint('ioctl');
    const result = ioctl(this.process, fd, request, arg);
    // The syscall's name is only needed for an error.
    if (result < 0) {
      const name = IOCTL_NAMES[request >>> 0] ?? `0x${(request >>> 0).toString(16)}`;
      this.check(`ioctl(${name})`, result);
    }
    this.backend.schedulePumpIfRunnable();
    return result;
  }

  read(fd: number, count: number): Uint8Array {
    this.backend.syscallPoint('read');
    return this.check('read', read(this.process, int('read', 'fd', fd), byteCount('read', 'count', count)));
  }

  poll(fd: number): number {
    this.backend.syscallPoint('poll');
    return poll(this.process, fd);
  }

  waitReadable(fd: number): Promise<void> {
    this.backend.syscallPoint('poll');
    if (poll(this.process, fd) !== 0) return Promise.resolve();
    const uffd = this.process.uffdFile(fd);
    if (uffd === undefined) return Promise.resolve();
    const backend = this.backend;
    const label = `waits in poll() on fd ${fd} without a timeout`;
    backend.waitBegins(label);
    return new Promise((resolve) => {
      new ReadableWaiter(this.process, fd, uffd.ctx.pollWaiters, () => {
        backend.waitEnds(label);
        resolve();
      }).arm();
      backend.schedulePump();
    });
  }

  /**
   * poll(2) on one fd with a timeout in model time: true once it is readable,
   * false when the timeout passed (negative: none) or `signal` aborted first.
   */
  pollFor(fd: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    this.backend.syscallPoint('poll');
    if (poll(this.process, fd) !== 0) return Promise.resolve(true);
    if (signal?.aborted === true) return Promise.resolve(false);
    const uffd = this.process.uffdFile(fd);
    if (uffd === undefined) return Promise.resolve(true);
    const label =
      timeoutMs < 0
        ? `waits in poll() on fd ${fd} without a timeout`
        : `waits in poll() on fd ${fd} with a ${timeoutMs} ms timeout`;
    return this.backend.modelWait(
      label,
      (settle) => {
        const waiter = new ReadableWaiter(this.process, fd, uffd.ctx.pollWaiters, () => settle(true));
        waiter.arm();
        return () => waiter.disarm();
      },
      timeoutMs,
      signal,
    );
  }

  readMemory(address: number, length: number): Uint8Array {
    const at = ulong('read', 'address', address);
    const result = this.callerAccess(at, new Uint8Array(byteCount('read', 'length', length)), false);
    if (result.ok) return result.data;
    throw accessError(result.fault, result.address);
  }

  readMemoryInto(address: number, into: Uint8Array): void {
    // Into the caller's buffer (a handler reading page after page reuses one).
    const result = this.callerAccess(address, into, false);
    if (!result.ok) throw accessError(result.fault, result.address);
  }

  writeMemory(address: number, data: Uint8Array): void {
    const at = ulong('write', 'address', address);
    const result = this.callerAccess(at, bytes('write', 'data', data), true);
    if (!result.ok) throw accessError(result.fault, result.address);
  }

  /** The calling thread's own access: it cannot sleep on a userfaultfd (a fault that would is WouldBlockError). */
  private callerAccess(address: number, buffer: Uint8Array, write: boolean) {
    return callerAccess(this.backend.kernel.env, this.process.mm, address, buffer, write);
  }

  spawnThread(unchecked: Iterable<ThreadAccess>, name = ''): ThreadBackend {
    const program = checkProgram(unchecked);
    const parallel = this.backend.parallel;
    const task =
      parallel === null
        ? this.process.spawnThread(program, name)
        : parallel.spawnThread(this.process, program, name);
    this.backend.schedulePump();
    return new ModelThread(this.backend, task);
  }

  madvise(address: number, length: number, advice: number): void {
    const start = ulong('madvise', 'address', address);
    const len = ulong('madvise', 'length', length);
    this.backend.syscallPoint('madvise');
    this.check('madvise', madvise(this.process, start, len, int('madvise', 'advice', advice)));
  }

  mremap(...[oldAddress, oldLength, newLength, flags, newAddress]: MremapArgs): number {
    const [from, oldLen, newLen, to] = [oldAddress, oldLength, newLength, newAddress].map((value, i) =>
      ulong('mremap', ['old_address', 'old_size', 'new_size', 'new_address'][i]!, value),
    );
    this.backend.syscallPoint('mremap');
    return this.check(
      'mremap',
      mremap(
        this.process,
        {
          oldAddress: from!,
          oldLength: oldLen!,
          newLength: newLen!,
          flags: int('mremap', 'flags', flags),
          newAddress: to!,
        },
        null,
      ),
    );
  }

  fork(): ProcessBackend {
    this.backend.syscallPoint('fork');
    return this.backend.wrap(this.check('fork', forkProcess(this.process, null)));
  }

  signalThread(thread: ThreadBackend, signal: number): void {
    this.backend.kernel.signalTask((thread as ModelThread).task, signal);
  }

  exit(): void {
    this.backend.syscallPoint('exit');
    this.process.exit();
  }

  pagemap(address: number, pages: number): PageInfo[] {
    const table = this.process.mm.pageTable;
    const infos: PageInfo[] = [];
    for (let i = 0; i < pages; i++) {
      const flags = table.flagsAt(Math.floor(address / 4096) + i);
      // Linux's pagemap does not show a poison marker in a hugetlb mapping [OBS: faultline diff].
      const huge = (this.process.mm.findVma(address + i * 4096)?.pageShift ?? 12) > 12;
      const poison = (flags & PTE_MARKER_POISONED) !== 0 && !huge;
      infos.push({
        present: (flags & PTE_PRESENT) !== 0,
        uffdWp: (flags & (PTE_UFFD_WP | PTE_MARKER_UFFD_WP)) !== 0,
        marker: poison ? 'poison' : flags & PTE_MARKER_UFFD_WP ? 'wp' : 'none',
        zeroPage: (flags & PTE_ZERO) !== 0,
      });
    }
    return infos;
  }

  vmas(start: number, end: number): VmaInfo[] {
    return this.process.mm.vmasIn(start, end).map((vma) => ({
      start: vma.start,
      end: vma.end,
      modes: [
        ...(vma.flags & VM_UFFD_MISSING ? (['missing'] as const) : []),
        ...(vma.flags & VM_UFFD_WP ? (['wp'] as const) : []),
        ...(vma.flags & VM_UFFD_MINOR ? (['minor'] as const) : []),
      ],
    }));
  }
}

/**
 * One waitReadable: a poller on the userfaultfd's context that resolves once
 * poll(fd) reports something, then removes itself. A method bound once, not
 * a closure per wait: the handler waits once per fault.
 */
class ReadableWaiter {
  private readonly callback: () => void;

  constructor(
    private readonly process: ModelProcess,
    private readonly fd: number,
    private readonly waiters: PollWaiters,
    private readonly resolve: () => void,
  ) {
    this.callback = this.fire.bind(this);
  }

  arm(): void {
    this.waiters.add(this.callback);
  }

  disarm(): void {
    this.waiters.delete(this.callback);
  }

  private fire(): void {
    if (poll(this.process, this.fd) === 0) return;
    this.waiters.delete(this.callback);
    this.resolve();
  }
}

function accessError(fault: number, address: number): Error {
  if (fault === FAULT_RESULT_WOULD_BLOCK) return new WouldBlockError(address);
  if (fault === FAULT_RESULT_SIGBUS) return new SignalError({ signal: SIGBUS, address, siCode: BUS_ADRERR });
  if (fault === FAULT_RESULT_SIGSEGV)
    return new SignalError({ signal: SIGSEGV, address, siCode: SEGV_MAPERR });
  return new SignalError({ signal: SIGSEGV, address, siCode: SEGV_ACCERR });
}

export interface ModelBackendOptions extends ModelKernelOptions {
  /**
   * Run threads on parallel vCPUs (worker threads over shared memory, see
   * model/parallel/cpus.ts): programs are read up front, as on the host
   * backend, and runs no longer replay from the seed.
   */
  readonly parallel?: boolean;
}

const RESOLVED = Promise.resolve();

/**
 * The kernel's wake-up callback, made here rather than in the constructor:
 * V8 allocates an arrow function created in that constructor in the old
 * generation, and an old object dead since its run ended still holds
 * whatever young objects it points to through every young-generation GC
 * until the next full one. Explore boots a backend per schedule: through
 * that one closure, every finished schedule's model survived each
 * scavenge and was promoted (measured: all of it, ~40 KB a boot).
 */
function pumpOnRunnable(backend: ModelBackend): () => void {
  return () => backend.schedulePump();
}

/**
 * Backends a program awaits something of (a join, a poll): when the event
 * loop empties with the program's top-level await unsettled while one of
 * them has a thread asleep on a userfaultfd, the program is stuck for good.
 * Instead of Node's silent exit (status 13), say who waits on what and exit
 * 1. Explore reports its hangs itself.
 */
const awaited = new Map<ModelBackend, number>();
let hangReportInstalled = false;

function awaitBegins(backend: ModelBackend): void {
  if (backend.controller !== null) return;
  awaited.set(backend, (awaited.get(backend) ?? 0) + 1);
  if (!hangReportInstalled) {
    hangReportInstalled = true;
    process.on('beforeExit', reportHangs);
  }
}

function awaitEnds(backend: ModelBackend): void {
  const count = awaited.get(backend);
  if (count === undefined) return;
  if (count <= 1) awaited.delete(backend);
  else awaited.set(backend, count - 1);
}

function reportHangs(): void {
  // Only where Node would exit 13: its own 'exit' listener marks an unsettled top-level await. A
  // program that merely left a join behind (a race it no longer cares about) ends as it would.
  if (!process.listeners('exit').some((listener) => listener.name === 'handleProcessExit')) return;
  for (const backend of awaited.keys()) {
    if (!hasSleepers(backend.kernel)) continue;
    const lines = describeSleepers(backend.kernel).map((line) => `  ${line}`);
    process.stderr.write(
      `faultline: the program waits on the model, but nothing left to run can wake it (${backend.describe()}):\n` +
        `${lines.join('\n')}\n  the program ${backend.describeWaits()}\n`,
    );
    process.exitCode = 1;
  }
  awaited.clear();
}

export class ModelBackend implements KernelBackend {
  readonly name = 'model' as const;
  readonly kernel: ModelKernel;
  /** The parallel vCPUs, with `parallel: true`. */
  readonly parallel: ParallelCpus | null;
  readonly self: ProcessBackend;
  private pumpScheduled = false;
  private pumps = 0;
  /** Set by tests: runs after every pump (the invariant checker). */
  afterPump: (() => void) | null = null;

  /**
   * A fresh model kernel with one process (`self`) for the program.
   * @throws MemoryTypeError for a memory type module whose descriptor is invalid (naming the type and
   *   the field), or two types of one name.
   * @throws Error when no memory type provides anonymous memory.
   */
  constructor(options: ModelBackendOptions = {}) {
    const parallel = options.parallel === true;
    this.kernel = new ModelKernel(
      parallel ? { ...options, memory: { ...options.memory, shared: true }, wallClock: true } : options,
    );
    this.parallel = parallel ? new ParallelCpus(this.kernel) : null;
    this.kernel.onRunnable = pumpOnRunnable(this);
    this.self = new ModelProcessBackend(this, this.kernel.createProcess({ privileged: true }));
  }

  /** A new process (unprivileged: `{ privileged: false }`), with nothing mapped or open. */
  createProcess(options: { privileged?: boolean } = {}): ProcessBackend {
    return this.wrap(this.kernel.createProcess(options));
  }

  /** The backend object of a model process (one per process). */
  wrap(process: ModelProcess): ProcessBackend {
    let wrapped = this.wrappers.get(process);
    if (wrapped === undefined) {
      wrapped = new ModelProcessBackend(this, process);
      this.wrappers.set(process, wrapped);
    }
    return wrapped;
  }

  private readonly wrappers = new WeakMap<ModelProcess, ProcessBackend>();

  describe(): string {
    return `model kernel ${this.kernel.version}, seed ${this.kernel.seed}`;
  }

  /**
   * Ends the program: its process exits (closing its files, so threads asleep
   * on its userfaultfds wake and handler loops end), and parallel vCPUs stop.
   * The model holds nothing else open. Again is a no-op.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.self.exit();
    } catch {
      // Already exited.
    }
    this.kernel.runUntilIdle();
  }

  private closed = false;

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }

  schedulePumpIfRunnable(): void {
    if (this.kernel.runnableCount > 0) this.schedulePump();
  }

  /**
   * Runs the simulated threads soon. Most pumps ride the microtask queue, which
   * keeps a handler round trip cheap; every 256th yields to the event loop so
   * timers and I/O are not starved.
   */
  schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    if (++this.pumps % 256 === 0) setImmediate(this.runPump);
    else RESOLVED.then(this.runPump);
  }

  /**
   * The pump itself, bound once (a closure per pump costs more than the pump
   * on a fast round trip). It rides a resolved promise rather than
   * queueMicrotask, which wraps every callback in an AsyncResource: the same
   * place in the microtask queue, at a third of the cost.
   */
  private readonly runPump = this.pump.bind(this);

  private pump(): void {
    this.pumpScheduled = false;
    try {
      if (this.controller !== null) {
        this.controller.pump();
        return;
      }
      this.kernel.runUntilIdle();
      this.afterPump?.();
    } catch (error) {
      // An uncaught exception, as it was from queueMicrotask, not a rejection nobody handles.
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  // --- model time and controlled scheduling ---------------------------------

  /**
   * Set by explore: decides at every system call of program code, and
   * whenever program code waits, which simulated threads run first. Null:
   * the pump runs every runnable thread before program code goes on.
   */
  controller: ScheduleController | null = null;
  /** Waits of program code (poll, sleep) not yet resolved. */
  waitsOutstanding = 0;
  /** A wait resolved since the controller last let program code run. */
  waitResolved = false;
  private idleScheduled = false;

  /**
   * A system call of program code: it costs model time, and is a scheduling point.
   * @throws Error when the explore run driving this backend was abandoned (its outcome is decided).
   */
  syscallPoint(name: string): void {
    this.kernel.clock.advance(SYSCALL_COST_NS);
    if (this.controller === null) return;
    // Program code that makes a call is running: whatever wait woke it has been seen.
    this.waitResolved = false;
    if (this.controller.stopped)
      throw new Error(`${name}: this explore run was abandoned (its outcome is decided)`);
    this.controller.beforeSyscall(name);
  }

  /** What program code waits on, for a hang report: label -> count. */
  private readonly waits = new Map<string, number>();

  waitBegins(label: string): void {
    awaitBegins(this);
    this.waitsOutstanding++;
    this.waits.set(label, (this.waits.get(label) ?? 0) + 1);
  }

  waitEnds(label: string): void {
    awaitEnds(this);
    this.waitsOutstanding--;
    this.waitResolved = true;
    const count = (this.waits.get(label) ?? 1) - 1;
    if (count === 0) this.waits.delete(label);
    else this.waits.set(label, count);
  }

  /** Where program code waits on the model, in words ("waits in poll() on fd 3 without a timeout"). */
  describeWaits(): string {
    if (this.waits.size === 0) return 'awaits a thread that sleeps (join), or something outside the model';
    return [...this.waits.keys()].join('; ');
  }

  /**
   * A wait of program code on the model: `arm` starts watching and returns
   * how to stop; `settle(true)` ends it; a timeout (model time, negative:
   * none) or an abort ends it with false.
   */
  modelWait(
    label: string,
    arm: (settle: (value: boolean) => void) => () => void,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      let done = false;
      let timer: ModelTimer | null = null;
      let disarm: () => void = () => {};
      let aborts: Set<(value: boolean) => void> | null = null;
      const settle = (value: boolean): void => {
        if (done) return;
        done = true;
        disarm();
        if (timer !== null) this.kernel.clock.cancel(timer);
        aborts?.delete(settle);
        this.waitEnds(label);
        resolve(value);
      };
      this.waitBegins(label);
      disarm = arm(settle);
      if (timeoutMs >= 0) {
        timer = this.kernel.clock.setTimer(timeoutMs, () => settle(false));
        this.scheduleIdle();
      }
      if (signal !== undefined) {
        aborts = this.abortWaits(signal);
        aborts.add(settle);
      }
      this.schedulePump();
    });
  }

  /**
   * The waits an abort of `signal` ends. One listener per signal rather than
   * an addEventListener and a removeEventListener per wait: a handler polls
   * once per fault, and Node's EventTarget bookkeeping was ~1 KB of garbage
   * and a few percent of the CPU of every fault.
   */
  private abortWaits(signal: AbortSignal): Set<(value: boolean) => void> {
    let waits = this.abortWaitsBySignal.get(signal);
    if (waits === undefined) {
      const created = new Set<(value: boolean) => void>();
      waits = created;
      this.abortWaitsBySignal.set(signal, created);
      signal.addEventListener(
        'abort',
        () => {
          for (const settle of [...created]) settle(false);
        },
        { once: true },
      );
    }
    return waits;
  }

  private readonly abortWaitsBySignal = new WeakMap<AbortSignal, Set<(value: boolean) => void>>();

  /** poll(2) with a timeout in model time by `process` on `fd` (see ModelProcessBackend.pollFor). */
  pollFor(process: ProcessBackend, fd: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return (process as ModelProcessBackend).pollFor(fd, timeoutMs, signal);
  }

  /** Resolves after `ms` of model time. */
  sleep(ms: number): Promise<void> {
    this.syscallPoint('nanosleep');
    return this.modelWait(`sleeps ${ms} ms`, () => () => {}, Math.max(0, ms)).then(() => {});
  }

  /**
   * When program code is idle (the event loop got this far) and no simulated
   * thread can run, model time jumps to the next timer.
   */
  scheduleIdle(): void {
    if (this.idleScheduled) return;
    this.idleScheduled = true;
    this.idleImmediate = setImmediate(this.runIdle);
  }

  private idleImmediate: NodeJS.Immediate | null = null;

  /**
   * Drops the idle callback still queued for the event loop. A run that
   * ends (explore's schedules) calls it: the queued callback holds the whole
   * model until the loop turns, long enough for the young-generation GC to
   * promote it to the old generation, whose collection then costs the
   * process a second core.
   */
  cancelIdle(): void {
    if (this.idleImmediate !== null) clearImmediate(this.idleImmediate);
    this.idleImmediate = null;
    this.idleScheduled = false;
  }

  private readonly runIdle = this.idle.bind(this);

  private idle(): void {
    this.idleScheduled = false;
    this.idleImmediate = null;
    if (this.controller !== null) {
      this.controller.idle();
      return;
    }
    if (this.kernel.clock.pending === 0) return;
    if (this.kernel.runnableCount > 0 || this.pumpScheduled) {
      this.scheduleIdle();
      return;
    }
    this.kernel.clock.fireNext();
    if (this.kernel.clock.pending > 0) this.scheduleIdle();
  }

  /**
   * Installs in `to` a descriptor for the file `fd` of `from` refers to, as
   * SCM_RIGHTS does (a userfaultfd, or a file reopened with `accessMode`).
   * @throws Error when `fd` is neither a userfaultfd nor a file of `from`.
   */
  sendFd(from: ProcessBackend, fd: number, to: ProcessBackend, accessMode: number): number {
    const source = (from as ModelProcessBackend).process;
    const target = (to as ModelProcessBackend).process;
    const uffd = source.uffdFile(fd);
    if (uffd !== undefined) return target.installUffd(uffd.ctx);
    const file = source.file(fd);
    if (file?.kind !== 'inode') throw new Error(`sendFd: fd ${fd} is neither a userfaultfd nor a file`);
    file.inode.references++;
    return target.installFd({ kind: 'inode', inode: file.inode, accessMode, flags: 0, references: 1 });
  }

  /**
   * Resolves once no simulated thread can run: each has ended or sleeps (on a fault, a wait), and the
   * handlers it woke have had their turn.
   */
  async settle(): Promise<void> {
    for (;;) {
      this.kernel.runUntilIdle();
      this.afterPump?.();
      // Let handlers that were woken run, then see whether they made threads runnable.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.kernel.runnableCount > 0) continue;
      if (this.parallel === null || this.parallel.running === 0) return;
      // Threads running on parallel vCPUs: wait for one to trap rather than poll.
      await this.parallel.nextTrap();
    }
  }
}
