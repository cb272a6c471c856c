/**
 * The simulated kernel: physical memory, the memory-type registry, inodes,
 * processes and the deterministic scheduler that runs simulated threads.
 */

import type { KernelTracer } from '../trace/trace.ts';
import { BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, SIGBUS, SIGSEGV } from '../uapi/constants.ts';
import { EFAULT } from '../uapi/errno.ts';
import { ModelClock, STEP_COST_NS } from './clock.ts';
import { FailureRecord } from './failure.ts';
import { FaultInjector, type InjectionRates } from './inject.ts';
import { filemapDelete, filemapInsert, filemapLookup, Inode } from './mem/pagecache.ts';
import { DEFAULT_PHYSICAL_MEMORY, PhysicalMemory, type PhysicalMemoryOptions } from './mem/physmem.ts';
import { BUILTIN_MEMORY_TYPES } from './memtypes/builtin.ts';
import { accessRange, type UserAccess } from './mm/access.ts';
import {
  FAULT_HANDLED,
  FAULT_RESULT_SIGBUS,
  FAULT_RESULT_SIGSEGV,
  FAULT_RESULT_SIGSEGV_ACCERR,
  FAULT_RETRY,
  type FaultEnvironment,
} from './mm/fault.ts';
import type { CoreServices } from './mm/hook-services.ts';
import { HookChecker } from './mm/hooks.ts';
import type { DeviceDriver, MemoryType, MemoryTypeModule, Provision } from './mm/memtype.ts';
import { MemoryTypeRegistry } from './mm/registry.ts';
import { Prng } from './prng.ts';
import { ModelProcess, type ProcessKernel } from './process.ts';
import { userfaultMustWait } from './schedule.ts';
import { SYSCALL_BLOCKED, threadSyscall } from './syscall.ts';
import type { Access, Task } from './task.ts';
import { handleUserfault } from './uffd/userfault.ts';

/** The Linux behaviour the model emulates. */
export type KernelVersion = '6.18' | '7.1';

export interface ModelKernelOptions {
  /** Seed of the scheduler and of fault injection; printed on failure. */
  readonly seed?: number;
  readonly version?: KernelVersion;
  readonly memory?: Partial<PhysicalMemoryOptions>;
  /** Memory types registered after the built-in ones (a later type may replace a provision). */
  readonly extraMemoryTypes?: readonly MemoryTypeModule[];
  /** Replace the built-in list entirely. */
  readonly memoryTypes?: readonly MemoryTypeModule[];
  /**
   * Options read by individual memory types; `uffdGuestMemfd` switches
   * userfaultfd support of the guest_memfd type (its default follows `version`).
   */
  readonly uffdGuestMemfd?: boolean;
  /** vm.unprivileged_userfaultfd (0 on current kernels). */
  readonly unprivilegedUserfaultfd?: 0 | 1;
  /** Called with each hook-violation warning. */
  readonly warn?: (message: string) => void;
  /** Read the wall clock instead of model time (the parallel model, which does not replay). */
  readonly wallClock?: boolean;
  /** Fault injection: a rate per named point (see inject.ts); all off by default. */
  readonly inject?: InjectionRates;
}

export class ModelKernel implements ProcessKernel {
  readonly seed: number;
  readonly version: KernelVersion;
  readonly memory: PhysicalMemory;
  readonly registry: MemoryTypeRegistry;
  readonly hooks: HookChecker;
  readonly env: FaultEnvironment;
  readonly prng: Prng;
  /** Model time: blocked time, latencies and trace timestamps on the model come from it. */
  readonly clock: ModelClock;
  /** Seeded fault injection; reports what it injected. */
  readonly injector: FaultInjector;
  /** Why the last failing call failed (its argument and reason), for the syscall boundary. */
  readonly failure = new FailureRecord();
  unprivilegedUserfaultfd: 0 | 1;

  readonly processes = new Map<number, ModelProcess>();
  private readonly inodes = new Map<number, Inode>();
  private readonly runQueue: Task[] = [];
  /** Tracepoints (blocked spans), set by whoever wants a trace. */
  tracer: KernelTracer | null = null;
  /** Called when a task becomes runnable (the async layer schedules a pump). */
  onRunnable: (() => void) | null = null;
  private nextPid = 1;
  private nextTid = 1;
  private nextInodeId = 1;
  private nextAnonVmaId = 1;
  private nextContextId = 1;
  private nextMmId = 1;
  steps = 0;
  /**
   * Explore (model/schedule.ts): a controller picks every step, and the
   * kernel's own windows become steps — a faulting thread checks
   * userfaultfd_must_wait after its message is queued, and a syscall's
   * thread finishes its events' work itself when it runs again.
   */
  controlled = false;

  /** Options memory types may read (`version`, `uffdGuestMemfd`, ...). */
  readonly options: Record<string, unknown>;

  constructor(options: ModelKernelOptions = {}) {
    const version = options.version ?? '6.18';
    this.options = { ...options, version };
    this.seed = options.seed ?? 1;
    this.version = options.version ?? '6.18';
    this.prng = new Prng(this.seed);
    this.clock = new ModelClock(options.wallClock === true);
    this.injector = new FaultInjector(this.seed, options.inject);
    this.unprivilegedUserfaultfd = options.unprivilegedUserfaultfd ?? 0;
    this.memory = new PhysicalMemory({ ...DEFAULT_PHYSICAL_MEMORY, ...options.memory });
    this.hooks = new HookChecker(this.memory, options.warn);
    // Memory types get journaled services, so the hook checker can judge and undo what a hook did.
    const core = this.makeServices();
    this.registry = new MemoryTypeRegistry(() => this.hooks.lendServices(core));
    for (const module of options.memoryTypes ?? BUILTIN_MEMORY_TYPES) this.registry.register(module);
    for (const module of options.extraMemoryTypes ?? []) this.registry.register(module);
    const anonymousType = this.registry.provider('anonymous');
    if (anonymousType === undefined) throw new Error('ModelKernel: no memory type provides anonymous memory');
    this.env = {
      memory: this.memory,
      anonymousType,
      hooks: this.hooks,
      inject: this.injector,
      failure: this.failure,
      handleUserfault,
    };
    // Set last, so that nothing the kernel allocates while it boots fails.
    this.memory.injector = this.injector;
  }

  private makeServices(): CoreServices {
    const memory = this.memory;
    return {
      allocFolio: (order, options) => memory.allocFolio(order, options?.hugetlb ?? false),
      getFolio: (pfn) => memory.getFolio(pfn),
      putFolio: (pfn) => memory.putFolio(pfn),
      lockFolio: (pfn) => memory.lockFolio(pfn),
      unlockFolio: (pfn) => memory.unlockFolio(pfn),
      filemapLookup: (inode, pgoff) => filemapLookup(inode, pgoff),
      filemapInsert: (inode, pfn, pgoff) => filemapInsert(memory, inode, pfn, pgoff),
      filemapDelete: (inode, pgoff) => filemapDelete(memory, inode, pgoff),
      folioIndex: (pfn) => memory.folioIndex[pfn]!,
      copyIntoFolio: (pfn, offset, source, sourceOffset, length) =>
        memory.copyIntoFolio(pfn, offset, source, sourceOffset, length),
      createInode: (type, name, pageShift, sizeBytes) => this.createInode(type, name, pageShift, sizeBytes),
      kernelOption: (name) => this.options[name],
    };
  }

  provider(provision: Provision): MemoryType | undefined {
    return this.registry.provider(provision);
  }

  /** The driver of a device path, from the registered memory types. */
  device(path: string): DeviceDriver | undefined {
    for (const type of this.registry.all()) {
      const driver = type.devices?.find((candidate) => candidate.path === path);
      if (driver !== undefined) return driver;
    }
    return undefined;
  }

  allocateMmId(): number {
    return this.nextMmId++;
  }

  allocateContextId(): number {
    return this.nextContextId++;
  }

  allocateAnonVmaId(): number {
    return this.nextAnonVmaId++;
  }

  /** A new inode of `type`, or -EFAULT when the type's initInode broke its contract (nothing is kept). */
  createInode(type: MemoryType, name: string, pageShift: number, sizeBytes: number): Inode | number {
    const inode = new Inode(this.nextInodeId++, type, name, pageShift, sizeBytes);
    if (this.hooks.initInode(type, inode) < 0) return -EFAULT;
    this.inodes.set(inode.id, inode);
    return inode;
  }

  /** Drops an inode nobody references any more, freeing its page cache. */
  maybeReleaseInode(inode: Inode): void {
    if (inode.references > 0) return;
    inode.cache.forEachInRange(0, Number.MAX_SAFE_INTEGER / 4096, (pgoff) =>
      filemapDelete(this.memory, inode, pgoff),
    );
    this.inodes.delete(inode.id);
  }

  liveInodes(): Iterable<Inode> {
    return this.inodes.values();
  }

  createProcess(options: { privileged?: boolean } = {}): ModelProcess {
    const process = new ModelProcess(this, this.nextPid++, options.privileged ?? true);
    this.processes.set(process.pid, process);
    return process;
  }

  allocateTid(): number {
    return this.nextTid++;
  }

  // --- scheduling -------------------------------------------------------

  /** Makes a task runnable (try_to_wake_up). */
  wake(task: Task): void {
    if (task.finished) return;
    // Woken before it slept (between queuing its fault and sleeping): already on the run queue.
    if (task.state === 'runnable') return;
    if (task.blockedSinceMs >= 0) {
      const now = this.clock.nowMs();
      task.blockedTotalMs += now - task.blockedSinceMs;
      this.tracer?.blocked(task.tid, task.waiter?.address ?? 0, task.blockedSinceMs, now);
      task.blockedSinceMs = -1;
    }
    task.state = 'runnable';
    this.runQueue.push(task);
    this.onRunnable?.();
  }

  enqueue(task: Task): void {
    this.runQueue.push(task);
    this.onRunnable?.();
  }

  /** The time a task went to sleep on a fault (read by the context that queues it). */
  now(): number {
    return this.clock.nowMs();
  }

  /** A task's fault message is queued: under a controller it sleeps only in a later step. */
  queuedFault(task: Task): boolean {
    if (!this.controlled) return false;
    task.mustWait = true;
    return true;
  }

  /** The runnable tasks, in run-queue order (stale entries dropped). */
  runnableTasks(): readonly Task[] {
    const queue = this.runQueue;
    let kept = 0;
    for (let i = 0; i < queue.length; i++) {
      const task = queue[i]!;
      if (task.state === 'runnable' && queue.indexOf(task) === i) queue[kept++] = task;
    }
    while (queue.length > kept) queue.pop();
    return queue;
  }

  /** Runs one step of `task`, which a controller chose among `runnableTasks()`. */
  stepChosen(task: Task): void {
    this.stepTask(task);
    this.steps++;
    if (task.state !== 'runnable') {
      const at = this.runQueue.indexOf(task);
      if (at >= 0) removeAt(this.runQueue, at);
    }
  }

  get runnableCount(): number {
    return this.runQueue.length;
  }

  /**
   * Runs simulated threads until none is runnable or `stepsMax` accesses
   * ran. The next thread is drawn from the seeded PRNG, so interleavings
   * replay. Returns the number of steps run.
   */
  runUntilIdle(stepsMax = Number.POSITIVE_INFINITY): number {
    let steps = 0;
    while (this.runQueue.length > 0 && steps < stepsMax) {
      const index = this.runQueue.length === 1 ? 0 : this.prng.nextInt(this.runQueue.length);
      const task = this.runQueue[index]!;
      if (task.state !== 'runnable') {
        removeAt(this.runQueue, index);
        continue;
      }
      this.stepTask(task);
      steps++;
      if (task.state !== 'runnable') {
        const at = this.runQueue.indexOf(task);
        if (at >= 0) removeAt(this.runQueue, at);
      }
    }
    this.steps += steps;
    return steps;
  }

  private readonly stepAccess: { -readonly [K in keyof UserAccess]: UserAccess[K] } = {
    mm: null as unknown as UserAccess['mm'],
    address: 0,
    write: false,
    task: null,
    userMode: true,
    start: 0,
    buffer: new Uint8Array(0),
    doneBytes: 0,
  };

  /** Runs one access of `task` (or the rest of a partly done one). */
  private stepTask(task: Task): void {
    this.clock.advance(STEP_COST_NS);
    if (task.mustWait) {
      userfaultMustWait(task);
      return;
    }
    const access = task.current ?? this.nextAccess(task);
    if (access === null) return;
    const process = this.processes.get(task.owner.pid);
    if (process === undefined || process.mm.dead) {
      this.finishTask(task, 'done');
      return;
    }
    if (access.kind === 'syscall') {
      const result = threadSyscall(process, task, access);
      if (result === SYSCALL_BLOCKED) return;
      task.returns.push(result);
      task.current = null;
      task.accessesDone++;
      return;
    }
    const write = access.kind === 'write';
    // One record per kernel, refilled: nothing keeps it past accessRange, and
    // a fresh one per step was a tenth of a schedule's garbage in explore.
    const userAccess = this.stepAccess;
    userAccess.mm = process.mm;
    userAccess.address = access.address;
    userAccess.write = write;
    userAccess.task = task;
    userAccess.userMode = access.kernel !== true;
    userAccess.start = access.address;
    userAccess.buffer = write ? access.data : task.readBuffer!;
    userAccess.doneBytes = task.progressBytes;
    const result = accessRange(this.env, userAccess);
    userAccess.task = null;
    task.progressBytes = userAccess.doneBytes;
    if (result === FAULT_HANDLED) {
      if (!write) task.reads.push(task.readBuffer!);
      this.accessDone(task);
    } else if (result !== FAULT_RETRY) {
      this.accessFailed(task, result, access.address + userAccess.doneBytes, userAccess.userMode);
    }
  }

  /** The task's next access from its program, made current; null when it has none to run now. */
  private nextAccess(task: Task): Access | null {
    const next = task.program.next();
    // A parallel vCPU's program hands the thread back to user mode on its own CPU.
    if (task.state === 'user') return null;
    if (next.done === true) {
      this.finishTask(task, 'done');
      return null;
    }
    const access = next.value;
    task.current = access;
    task.progressBytes = 0;
    task.readBuffer = access.kind === 'read' ? new Uint8Array(access.length) : null;
    return access;
  }

  private accessDone(task: Task): void {
    task.current = null;
    task.readBuffer = null;
    task.accessesDone++;
  }

  /**
   * A fault the access could not get past: a syscall's copy gets EFAULT and
   * the thread goes on; user code gets the signal, which ends the thread.
   */
  private accessFailed(task: Task, result: number, address: number, userMode: boolean): void {
    if (!userMode) {
      task.errno = EFAULT;
      this.accessDone(task);
      return;
    }
    if (result === FAULT_RESULT_SIGBUS) {
      task.signal = { signal: SIGBUS, address, siCode: BUS_ADRERR };
      this.finishTask(task, 'sigbus');
      return;
    }
    if (result === FAULT_RESULT_SIGSEGV || result === FAULT_RESULT_SIGSEGV_ACCERR) {
      const siCode = result === FAULT_RESULT_SIGSEGV ? SEGV_MAPERR : SEGV_ACCERR;
      task.signal = { signal: SIGSEGV, address, siCode };
      this.finishTask(task, 'segv');
      return;
    }
    throw new Error(`stepTask: unexpected fault result ${result}`);
  }

  /**
   * Delivers a signal the thread handles and ignores: a thread asleep on a
   * fault wakes, returns to user space and retries the access, which queues
   * a new message if the page is still missing.
   */
  signalTask(task: Task, _signal: number): void {
    const waiter = task.waiter;
    if (waiter === null) return;
    waiter.context.forget(task);
    task.waiter = null;
    this.wake(task);
  }

  finishTask(task: Task, state: 'done' | 'sigbus' | 'segv'): void {
    if (task.waiter !== null) {
      task.waiter.context.forget(task);
      task.waiter = null;
    }
    task.state = state;
    for (const callback of task.exitCallbacks.splice(0)) callback(task);
  }
}

/** Removes one element in place (splice would allocate the array of removed elements, once per step). */
function removeAt<T>(array: T[], index: number): void {
  for (let i = index + 1; i < array.length; i++) array[i - 1] = array[i]!;
  array.pop();
}
