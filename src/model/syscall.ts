/**
 * The system calls a simulated thread makes as part of its program: the
 * calls that can sleep until their userfaultfd events are read (madvise,
 * munmap, mremap, fork). The kernel's scheduler runs them through here.
 */
import { forkProcess } from './fork.ts';
import { prepareMadvise } from './mm/madvise.ts';
import { mremap } from './mm/mremap.ts';
import { munmap } from './mm/munmap.ts';
import type { ModelProcess } from './process.ts';
import type { SyscallAccess, Task } from './task.ts';
import { EventWait } from './uffd/events.ts';

/** A thread's syscall went to sleep (waiting for a userfaultfd event to be read). */
export const SYSCALL_BLOCKED = 1 << 30;

/**
 * A syscall made by a simulated thread of `process`. Returns its result (or
 * -errno), or SYSCALL_BLOCKED when the task went to sleep waiting for an
 * event read.
 */
export function threadSyscall(process: ModelProcess, task: Task, access: SyscallAccess): number {
  const resume = task.syscallContinuation;
  if (resume !== null) {
    task.syscallContinuation = null;
    return resume();
  }
  const kernel = process.kernel;
  const wait = new EventWait(() => kernel.wake(task), kernel.controlled);
  const finish = startSyscall(process, task, access, wait);
  if (wait.outstanding === 0) return finish();
  task.syscallContinuation = wait.onThread ? continueOnThread(task, wait, finish) : finish;
  task.state = 'blocked';
  return SYSCALL_BLOCKED;
}

/** Runs the call up to its events; returns what finishes it once they are read. */
function startSyscall(
  process: ModelProcess,
  task: Task,
  access: SyscallAccess,
  wait: EventWait,
): () => number {
  const args = access.args;
  switch (access.call) {
    case 'madvise': {
      // The event is read before the pages go (userfaultfd_remove waits first).
      const prepared = prepareMadvise(process, args[0] ?? 0, args[1] ?? 0, args[2] ?? 0, wait);
      return typeof prepared === 'number' ? () => prepared : prepared;
    }
    case 'munmap': {
      const result = munmap(process, args[0] ?? 0, args[1] ?? 0, wait);
      return () => result;
    }
    case 'mremap': {
      const [oldAddress = 0, oldLength = 0, newLength = 0, flags = 0, newAddress = 0] = args;
      const result = mremap(process, { oldAddress, oldLength, newLength, flags, newAddress }, wait);
      return () => result;
    }
    case 'fork': {
      const child = forkProcess(process, wait);
      if (typeof child !== 'number') task.children.push(child);
      return () => (typeof child === 'number' ? child : child.pid);
    }
  }
}

/**
 * What the thread of a syscall that raised events does each time it runs
 * (explore): the steps of `EventWait.resume`, then the syscall's return.
 */
function continueOnThread(task: Task, wait: EventWait, finish: () => number): () => number {
  const resume = (): number => {
    const next = wait.resume();
    if (next === 'done') return finish();
    task.syscallContinuation = resume;
    if (next === 'blocked') task.state = 'blocked';
    return SYSCALL_BLOCKED;
  };
  return resume;
}
