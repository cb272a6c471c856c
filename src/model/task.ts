/**
 * Simulated threads. A task runs a program of memory accesses; an access can
 * block on a userfaultfd fault, and is retried from the faulting page when the
 * task is woken, as the kernel re-executes a fault after VM_FAULT_RETRY.
 */

/**
 * The fault a task sleeps on. uffd/context.ts fills the interface in with its
 * FaultWaiter (declaration merging), so task.ts does not import uffd/.
 */
// biome-ignore lint/suspicious/noEmptyInterface: completed by declaration merging in uffd/context.ts
export interface TaskWaiter {}

/**
 * `user`: running user code on a CPU of its own, outside the kernel and off
 * the run queue (a parallel vCPU, `model/parallel/`); it re-enters when it
 * traps.
 */
export type TaskState = 'runnable' | 'blocked' | 'user' | 'done' | 'sigbus' | 'segv';

/**
 * One access. `read` returns the bytes read; `write` stores `data`.
 * `kernel` makes it a kernel-mode access (a syscall such as read(2) filling
 * user memory): userfaultfd then treats it as a kernel fault, and a fault that
 * cannot be handled fails the access with EFAULT instead of a signal.
 */
export type Access =
  | { readonly kind: 'read'; readonly address: number; readonly length: number; readonly kernel?: boolean }
  | {
      readonly kind: 'write';
      readonly address: number;
      readonly data: Uint8Array;
      readonly kernel?: boolean;
    }
  | SyscallAccess;

/**
 * A system call made by the thread, for the calls that can block until a
 * userfaultfd event is read (madvise, munmap, mremap, fork). Arguments as
 * the C call takes them: madvise(addr, len, advice), munmap(addr, len),
 * mremap(old, oldLen, newLen, flags, newAddr), fork().
 */
export interface SyscallAccess {
  readonly kind: 'syscall';
  readonly call: 'madvise' | 'munmap' | 'mremap' | 'fork';
  readonly args: readonly number[];
}

export interface TaskSignal {
  readonly signal: number;
  readonly address: number;
  readonly siCode: number;
}

export interface TaskOwner {
  readonly pid: number;
}

export class Task {
  state: TaskState = 'runnable';
  /** The access being executed and how many of its bytes are done. */
  current: Access | null = null;
  progressBytes = 0;
  readBuffer: Uint8Array | null = null;
  /** Bytes of every completed read access, in order. */
  readonly reads: Uint8Array[] = [];
  /** The fault this task sleeps on, while blocked. */
  waiter: TaskWaiter | null = null;
  /** Explore: its fault is queued but it has not yet checked userfaultfd_must_wait and slept. */
  mustWait = false;
  signal: TaskSignal | null = null;
  /** Set when a kernel-mode access failed (EFAULT). */
  errno = 0;
  accessesDone = 0;
  /** When the current sleep on a fault began (model time, ms), or -1. */
  blockedSinceMs = -1;
  /** Total time asleep on userfaultfd faults, in milliseconds. */
  blockedTotalMs = 0;
  /** Return values (or -errno) of the syscall accesses, in order. */
  readonly returns: number[] = [];
  /** What finishes a syscall that slept until its userfaultfd events were read. */
  syscallContinuation: (() => number) | null = null;
  /** Children created by fork syscall accesses. */
  readonly children: TaskOwner[] = [];
  faultsTaken = 0;
  /** Called once when the task ends. */
  readonly exitCallbacks: Array<(task: Task) => void> = [];

  constructor(
    readonly tid: number,
    readonly owner: TaskOwner,
    readonly program: Iterator<Access>,
    readonly name: string,
  ) {}

  get finished(): boolean {
    return this.state === 'done' || this.state === 'sigbus' || this.state === 'segv';
  }
}
