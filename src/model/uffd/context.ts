/**
 * A userfaultfd context (struct userfaultfd_ctx): its features, the queues of
 * faults and events, and the waiters. Faults live in two queues, as in the
 * kernel: `pending` (not yet read) and `read` (read, the thread still asleep).
 */
import { UFFD_FEATURE_INITIALIZED } from '../../uapi/constants.ts';
import type { FailureRecord } from '../failure.ts';
import type { AddressSpace } from '../mm/mm.ts';
import type { Task } from '../task.ts';

declare module '../mm/vma.ts' {
  // A VMA's context is this class (see VmaUffdContext).
  interface VmaUffdContext extends UffdContext {}
}

declare module '../task.ts' {
  // A sleeping task's waiter is a FaultWaiter (see TaskWaiter).
  interface TaskWaiter extends FaultWaiter {}
}

export interface FaultWaiter {
  readonly task: Task;
  readonly context: UffdContext;
  /** The address in the message: page-masked, or exact with EXACT_ADDRESS. Wake ranges match it. */
  readonly address: number;
  readonly flags: number;
  readonly ptid: number;
}

/** What reading an event may need from the reader: FORK installs a new fd in the reader's process. */
export interface EventReader {
  installUffd(ctx: UffdContext): number;
}

/** A queued non-cooperative event. */
export interface QueuedEvent {
  /** For diagnostics, e.g. "REMOVE 0x7f0000000000-0x7f0000004000". */
  readonly description: string;
  /** The 32-byte message, made when it is read (FORK installs its fd then); -errno keeps it queued. */
  encode(reader: EventReader): Uint8Array | number;
  /** Called once the event has been read, or dropped when the context is released. */
  readonly onDone?: () => void;
  /**
   * mmap_changing drops when the thread that raised the event runs again
   * after the read (userfaultfd_event_wait_completion decrements it after
   * waking), not at the read: see `completeOnThread`.
   */
  readonly completesOnThread?: boolean;
}

export interface Waker {
  wake(task: Task): void;
  /**
   * A fault's message was queued: true when the task may be preempted before
   * it sleeps (explore), so that userfaultfd_must_wait runs as a step of its own.
   */
  queuedFault(task: Task): boolean;
  /** Model time in milliseconds. */
  now(): number;
  /** Where a failing call records its argument and reason. */
  readonly failure: FailureRecord;
}

/**
 * The pollers of a context, called on any change that may make the fd
 * readable: the part of a Set that pollers use, over an array, since a
 * handler adds and removes a poller around every fault and a Set's table
 * churns with that.
 */
export class PollWaiters {
  /** The first `count` slots are the pollers; the array keeps its length so that it never regrows. */
  private readonly list: Array<(() => void) | null> = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  add(waiter: () => void): void {
    const list = this.list;
    for (let i = 0; i < this.count; i++) if (list[i] === waiter) return;
    if (this.count === list.length) list.push(waiter);
    else list[this.count] = waiter;
    this.count++;
  }

  delete(waiter: () => void): boolean {
    const list = this.list;
    let index = 0;
    while (index < this.count && list[index] !== waiter) index++;
    if (index === this.count) return false;
    for (let i = index + 1; i < this.count; i++) list[i - 1] = list[i]!;
    list[--this.count] = null;
    return true;
  }

  /** Calls every poller registered now (one removed or added by an earlier call is still called, or not). */
  notify(): void {
    if (this.count === 1) this.list[0]!();
    else if (this.count > 1) for (const waiter of this.list.slice(0, this.count)) waiter!();
  }
}

export class UffdContext {
  /** Features requested at UFFDIO_API, with UFFD_FEATURE_INITIALIZED once it succeeded. */
  features = 0;
  released = false;
  /** Non-zero while a non-cooperative event is unread (mmap_changing). */
  mmapChanging = 0;
  /** Events prepared (mmap_changing raised) that wait their turn behind a syscall's earlier events. */
  readonly reserved: string[] = [];
  readonly pending: FaultWaiter[] = [];
  readonly read: FaultWaiter[] = [];
  readonly events: QueuedEvent[] = [];
  /** Events read whose thread has not run since: mmap_changing is still raised for them. */
  readonly completing: string[] = [];
  /** O_NONBLOCK/O_CLOEXEC of the file that created it; fds installed for it later (FORK) get the same. */
  openFlags = 0;
  /** Open file descriptions referring to this context. */
  fileReferences = 0;
  /** Callbacks for pollers; each is called on any change that may make the fd readable. */
  readonly pollWaiters = new PollWaiters();

  constructor(
    readonly id: number,
    readonly mm: AddressSpace,
    readonly userModeOnly: boolean,
    private readonly waker: Waker,
  ) {}

  /** The kernel's failure record: a failing call on this context says there why. */
  get failure(): FailureRecord {
    return this.waker.failure;
  }

  get initialized(): boolean {
    return (this.features & UFFD_FEATURE_INITIALIZED) !== 0;
  }

  hasFeature(bit: number): boolean {
    return (this.features & bit) !== 0;
  }

  /** Queues a fault message and puts the task to sleep on it. */
  enqueueFault(waiter: FaultWaiter): void {
    waiter.task.waiter = waiter;
    this.pending.push(waiter);
    if (this.waker.queuedFault(waiter.task)) return;
    this.sleepOnFault(waiter.task);
  }

  /** The faulting task sleeps, and pollers hear of its message (handle_userfault's wake_up_poll). */
  sleepOnFault(task: Task): void {
    task.state = 'blocked';
    task.blockedSinceMs = this.waker.now();
    this.notifyPollers();
  }

  /**
   * Queues an event; until it is read, mmap_changing makes the fill ioctls fail
   * with EAGAIN. A `reserved` event raised mmap_changing when it was prepared.
   */
  enqueueEvent(event: QueuedEvent, reserved = false): void {
    if (reserved) this.dropReservation(event.description);
    else this.mmapChanging++;
    this.events.push(event);
    this.notifyPollers();
  }

  /** Raises mmap_changing for an event that will be queued later (userfaultfd_unmap_prep and the like). */
  reserveEvent(description: string): void {
    this.reserved.push(description);
    this.mmapChanging++;
  }

  /** Forgets a reservation; its mmap_changing count now belongs to the queued event (or was reset by release). */
  dropReservation(description: string): void {
    const index = this.reserved.indexOf(description);
    if (index >= 0) this.reserved.splice(index, 1);
  }

  /** Marks the first event read. */
  eventRead(event: QueuedEvent): void {
    if (event.completesOnThread === true) this.completing.push(event.description);
    else this.mmapChanging--;
    event.onDone?.();
  }

  /** The thread that raised a read event ran again: mmap_changing drops (userfaultfd_event_wait_completion). */
  completeOnThread(description: string): void {
    const index = this.completing.indexOf(description);
    if (index >= 0) this.completing.splice(index, 1);
    if (!this.released && this.mmapChanging > 0) this.mmapChanging--;
  }

  /** Why the fill ioctls fail with EAGAIN, naming the unread event. */
  changingReason(): string {
    const pending = [...this.events.map((event) => event.description), ...this.reserved];
    const first = pending[0];
    if (first === undefined && this.completing.length > 0) {
      return (
        `the ${this.completing[0]} event was read, but the thread that raised it has not run since ` +
        '(mmap_changing drops when it does): retry later'
      );
    }
    const what = first === undefined ? 'a non-cooperative event' : `the ${first} event`;
    const more = pending.length > 1 ? ` and ${pending.length - 1} more` : '';
    return `${what}${more} is unread (mmap_changing): read the userfaultfd first`;
  }

  notifyPollers(): void {
    this.pollWaiters.notify();
  }

  /** Whether read(2) would return something: an unread fault or event. */
  get readable(): boolean {
    return this.pending.length > 0 || this.events.length > 0;
  }

  /**
   * Wakes every fault waiter, read or not, whose message address lies in
   * [start, start + length) (userfaultfd_wake_function). Returns the count.
   */
  wakeRange(start: number, length: number): number {
    const end = start + length;
    return this.wakeIn(this.pending, start, end) + this.wakeIn(this.read, start, end);
  }

  private wakeIn(queue: FaultWaiter[], start: number, end: number): number {
    let woken = 0;
    let kept = 0;
    for (let i = 0; i < queue.length; i++) {
      const waiter = queue[i]!;
      if (waiter.address >= start && waiter.address < end) {
        this.release(waiter);
        woken++;
      } else {
        queue[kept++] = waiter;
      }
    }
    // Popped, not `length = kept`: the queue then keeps its backing store from fault to fault.
    while (queue.length > kept) queue.pop();
    return woken;
  }

  /** Wakes every waiter (close). */
  wakeAll(): void {
    for (const waiter of [...this.pending, ...this.read]) this.release(waiter);
    this.pending.length = 0;
    this.read.length = 0;
  }

  private release(waiter: FaultWaiter): void {
    // Woken first, so the waker still sees which fault the task slept on.
    this.waker.wake(waiter.task);
    waiter.task.waiter = null;
  }

  /** A signal woke the task (fault_signal): its message leaves the queues, the task retries the access. */
  interrupt(waiter: FaultWaiter): void {
    this.forget(waiter.task);
    this.release(waiter);
  }

  /** Drops a waiter whose task went away (exit) without waking anything. */
  forget(task: Task): void {
    for (const queue of [this.pending, this.read]) {
      const index = queue.findIndex((waiter) => waiter.task === task);
      if (index >= 0) queue.splice(index, 1);
    }
  }
}
