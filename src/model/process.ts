/**
 * A simulated process: an address space, a file-descriptor table, threads
 * and credentials. The system calls live in the layer they belong to —
 * memory calls in `mm/` (mmap.ts, munmap.ts, mprotect.ts, madvise.ts,
 * mremap.ts), file calls in `fs/`, fork in fork.ts — and take the process as
 * their first argument, as Linux's take `current`. Every call returns its
 * result or -errno; `process.fail` records the argument and reason on the
 * kernel's `failure`.
 */
import { EBADF, EINVAL } from '../uapi/errno.ts';
import type { FailureRecord } from './failure.ts';
import type { Inode } from './mem/pagecache.ts';
import type { PhysicalMemory } from './mem/physmem.ts';
import type { FaultEnvironment } from './mm/fault.ts';
import type { HookChecker } from './mm/hooks.ts';
import type { DeviceDriver, DeviceFile, MemoryType, Provision } from './mm/memtype.ts';
import { AddressSpace } from './mm/mm.ts';
import { type Access, Task } from './task.ts';
import type { UffdContext, Waker } from './uffd/context.ts';
import { type UffdCaller, UffdFile } from './uffd/ioctl.ts';
import { releaseContext } from './uffd/register.ts';

/** An open file description, shared by every fd (in any process) that refers to it. */
export type OpenFile =
  | { kind: 'inode'; inode: Inode; accessMode: number; flags: number; references: number; position?: number }
  | { kind: 'uffd'; uffd: UffdFile; references: number }
  | { kind: 'dev-userfaultfd'; fmode: number; references: number }
  | { kind: 'device'; device: DeviceFile; fmode: number; inodeType: 'chr' | 'anon'; references: number };

/** An open regular file (memfd, a type's inode). */
export type InodeFile = OpenFile & { kind: 'inode' };

/**
 * What a process and its system calls need of the kernel instance
 * (`ModelKernel` implements it), so that nothing below the kernel imports it.
 */
export interface ProcessKernel extends Waker {
  readonly memory: PhysicalMemory;
  readonly env: FaultEnvironment;
  readonly hooks: HookChecker;
  readonly failure: FailureRecord;
  /** vm.unprivileged_userfaultfd. */
  readonly unprivilegedUserfaultfd: 0 | 1;
  /** Explore controls the schedule: a syscall's thread finishes its events' work itself. */
  readonly controlled: boolean;
  readonly processes: Map<number, ModelProcess>;
  allocateMmId(): number;
  allocateContextId(): number;
  allocateAnonVmaId(): number;
  allocateTid(): number;
  provider(provision: Provision): MemoryType | undefined;
  device(path: string): DeviceDriver | undefined;
  createInode(type: MemoryType, name: string, pageShift: number, sizeBytes: number): Inode | number;
  maybeReleaseInode(inode: Inode): void;
  createProcess(options?: { privileged?: boolean }): ModelProcess;
  enqueue(task: Task): void;
  finishTask(task: Task, state: 'done' | 'sigbus' | 'segv'): void;
}

export class ModelProcess {
  readonly mm: AddressSpace;
  readonly fds = new Map<number, OpenFile>();
  readonly tasks: Task[] = [];
  exited = false;
  /** Who this process is to a userfaultfd ioctl (its mm and privilege), made once. */
  private caller: UffdCaller | null = null;

  constructor(
    readonly kernel: ProcessKernel,
    readonly pid: number,
    /** Root with every capability (CAP_SYS_PTRACE, access to /dev/userfaultfd). */
    readonly privileged: boolean,
  ) {
    this.mm = new AddressSpace(kernel.allocateMmId(), kernel.memory, () => kernel.allocateAnonVmaId());
  }

  /** Records why a call of this process failed (argument and reason) and returns -errno. */
  fail(errno: number, argument: string, reason: string): number {
    return this.kernel.failure.fail(errno, argument, reason);
  }

  get uffdCaller(): UffdCaller {
    this.caller ??= { mm: this.mm, capSysPtrace: this.privileged };
    return this.caller;
  }

  // --- file descriptors ------------------------------------------------

  installFd(file: OpenFile): number {
    let fd = 3;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, file);
    return fd;
  }

  file(fd: number): OpenFile | undefined {
    return this.fds.get(fd);
  }

  /** The regular file `fd` names, or -EBADF / -EINVAL. */
  inodeFile(fd: number): InodeFile | number {
    const file = this.fds.get(fd);
    if (file === undefined) return this.fail(EBADF, 'fd', `${fd} is not open`);
    if (file.kind !== 'inode') return this.fail(EINVAL, 'fd', `${fd} is not a regular file`);
    return file;
  }

  uffdFile(fd: number): UffdFile | undefined {
    const file = this.fds.get(fd);
    return file?.kind === 'uffd' ? file.uffd : undefined;
  }

  /** Installs a new fd for a userfaultfd context (FORK event delivery, SCM_RIGHTS). */
  installUffd(ctx: UffdContext): number {
    ctx.fileReferences++;
    const uffd = new UffdFile(ctx, this.kernel.env, ctx.openFlags);
    return this.installFd({ kind: 'uffd', uffd, references: 1 });
  }

  close(fd: number): number {
    const file = this.fds.get(fd);
    if (file === undefined) return this.fail(EBADF, 'fd', `${fd} is not open`);
    this.fds.delete(fd);
    this.releaseFile(file);
    return 0;
  }

  private releaseFile(file: OpenFile): void {
    if (--file.references > 0) return;
    if (file.kind === 'inode') {
      file.inode.references--;
      this.kernel.maybeReleaseInode(file.inode);
    } else if (file.kind === 'uffd') {
      const ctx = file.uffd.ctx;
      if (--ctx.fileReferences === 0) releaseContext(ctx);
    }
  }

  // --- threads -------------------------------------------------------------

  spawnThread(program: Iterable<Access>, name = ''): Task {
    const task = new Task(this.kernel.allocateTid(), this, program[Symbol.iterator](), name);
    this.tasks.push(task);
    this.kernel.enqueue(task);
    return task;
  }

  /** exit_group: threads end, fds close, the address space goes away. */
  exit(): void {
    if (this.exited) return;
    this.exited = true;
    for (const task of this.tasks) if (!task.finished) this.kernel.finishTask(task, 'done');
    for (const fd of [...this.fds.keys()]) this.close(fd);
    if (--this.mm.users === 0) {
      this.mm.dead = true;
      for (const vma of [...this.mm.vmas]) {
        this.mm.zapRange(vma, vma.start, vma.end);
        this.mm.remove(vma);
        if (vma.inode !== null) this.kernel.maybeReleaseInode(vma.inode);
      }
    }
    this.kernel.processes.delete(this.pid);
  }
}
