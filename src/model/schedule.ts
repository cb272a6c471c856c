/**
 * Explore's hooks in the model. Under a controller (`ModelKernel.controlled`,
 * `ModelBackend.controller`) nothing runs on its own: every system call of
 * program code (the handler) is a point where the controller may first run
 * any number of simulated-thread steps, and while program code waits the
 * controller picks which thread steps next until the wait is satisfied.
 * The kernel's own windows become steps of their own, as in Linux:
 *
 * - handle_userfault queues the message (`__add_wait_queue`), then checks
 *   `userfaultfd_must_wait` before it sleeps: a step in between lets the
 *   handler read the message, or a fill ioctl install the page, first; a
 *   page present by then means the thread does not sleep and its message
 *   leaves the queue again, read or not (`userfaultMustWait` below).
 * - a syscall that raised events (madvise's REMOVE, UNMAP, REMAP, FORK)
 *   sleeps in userfaultfd_event_wait_completion; mmap_changing drops only
 *   when that thread runs again after the read, and its work after the
 *   event (madvise's zap) is one step later (`EventWait.resume`).
 */
import { UFFD_PAGEFAULT_FLAG_WP } from '../uapi/constants.ts';
import { PTE_PRESENT, PTE_UFFD_WP } from './mm/pagetable.ts';
import type { Task } from './task.ts';

/** What explore plugs into the model backend. */
export interface ScheduleController {
  /** Program code is about to make a system call: run simulated-thread steps first, as the strategy decides. */
  beforeSyscall(name: string): void;
  /** Something became runnable, or program code began to wait. */
  pump(): void;
  /** The event loop went idle (program code is waiting on nothing that can run): time or a hang. */
  idle(): void;
  /** The run was abandoned (a hang was reported): program code that still runs must not touch the model. */
  readonly stopped: boolean;
}

/**
 * The rest of handle_userfault after the message was queued: if the fault's
 * page is still missing (userfaultfd_must_wait), sleep and wake the pollers;
 * else do not sleep, and take the message off whichever queue it is on.
 * A task woken meanwhile (a fill's wake took its waiter off) just retries.
 */
export function userfaultMustWait(task: Task): void {
  task.mustWait = false;
  const waiter = task.waiter;
  if (waiter === null) return;
  const access = task.current;
  const address =
    access === null || access.kind === 'syscall' ? waiter.address : access.address + task.progressBytes;
  const flags = waiter.context.mm.pageTable.flagsAt(Math.floor(address / 4096));
  const mustWait =
    (flags & PTE_PRESENT) === 0 ||
    ((waiter.flags & UFFD_PAGEFAULT_FLAG_WP) !== 0 && (flags & PTE_UFFD_WP) !== 0);
  if (mustWait && !waiter.context.released) {
    waiter.context.sleepOnFault(task);
    return;
  }
  waiter.context.forget(task);
  task.waiter = null;
}
