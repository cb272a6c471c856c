/**
 * Non-cooperative events (uapi-facts.md §4.6): which contexts an mm change
 * notifies, and the queued events themselves. A syscall that raised events
 * waits until every one of them is read; `EventWait` runs them in order.
 *
 * As in Linux, a syscall queues its events one at a time: the next message
 * appears only once the previous one has been read (each
 * userfaultfd_event_wait_completion waits before the next is queued), and
 * work between them, such as MADV_DONTNEED zapping one VMA before the REMOVE
 * of the next, happens in between. UNMAP, REMAP and FORK raise mmap_changing
 * on every context when they are prepared; REMOVE only when it is queued
 * [OBS: host 6.18, two contexts and two VMAs].
 */
import {
  UFFD_FEATURE_EVENT_REMAP,
  UFFD_FEATURE_EVENT_REMOVE,
  UFFD_FEATURE_EVENT_UNMAP,
} from '../../uapi/constants.ts';
import { encodeUffdMsg } from '../../uapi/structs.ts';
import { hex } from '../failure.ts';
import type { AddressSpace } from '../mm/mm.ts';
import type { Vma } from '../mm/vma.ts';
import type { QueuedEvent, UffdContext } from './context.ts';

/**
 * A syscall's events and the work between them, in order: each event is
 * queued once the one before it has been read (or dropped); `onAllRead` runs
 * when the last one is.
 */
export class EventWait {
  /** Events not yet read, queued or still waiting their turn. */
  outstanding = 0;
  private readonly steps: Array<() => boolean> = [];
  private blocked = false;
  /** On the thread (explore): read events whose thread has not run since, and whether mmap_changing dropped. */
  private readonly unfinished: Array<{ complete: () => void; decremented: boolean }> = [];

  /**
   * `wakeThread` runs when every event has been read; with `onThread` it
   * runs after each read instead, and the thread finishes the work itself in
   * `resume` steps, as Linux's does after userfaultfd_event_wait_completion.
   */
  constructor(
    private readonly wakeThread: () => void,
    readonly onThread = false,
  ) {}

  /**
   * Queues an event behind the earlier ones: `publish` queues it and calls
   * `done` once it is read or dropped; `complete` (on the thread) drops its
   * mmap_changing when the thread runs again.
   */
  add(publish: (done: () => void) => void, complete?: () => void): void {
    this.outstanding++;
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      if (this.onThread) {
        this.unfinished.push({ complete: complete ?? (() => {}), decremented: false });
        this.wakeThread();
        return;
      }
      this.settleOne();
      if (this.outstanding === 0) this.wakeThread();
    };
    this.steps.push(() => {
      publish(done);
      return !finished;
    });
    this.advance();
  }

  private settleOne(): void {
    this.blocked = false;
    this.outstanding--;
    this.advance();
  }

  /**
   * One step of the woken thread (`onThread`): first mmap_changing drops,
   * then (a step later, so a fill ioctl can land in between) the work after
   * the event runs — a zap, the next event. 'done' when the syscall can return.
   */
  resume(): 'step' | 'blocked' | 'done' {
    const first = this.unfinished[0];
    if (first !== undefined && !first.decremented) {
      first.decremented = true;
      first.complete();
      return 'step';
    }
    if (first !== undefined) {
      this.unfinished.shift();
      this.settleOne();
    }
    if (this.outstanding === 0) return 'done';
    return this.unfinished.length > 0 ? 'step' : 'blocked';
  }

  /** Runs `action` once every event added before it has been read (at once when none is pending). */
  after(action: () => void): void {
    this.steps.push(() => {
      action();
      return false;
    });
    this.advance();
  }

  private advance(): void {
    while (!this.blocked && this.steps.length > 0) {
      if (this.steps.shift()!()) this.blocked = true;
    }
  }
}

/** Runs `action` in the order of `wait`'s events, or at once for a caller that does not wait. */
export function afterEvents(wait: EventWait | null, action: () => void): void {
  if (wait === null) action();
  else wait.after(action);
}

/**
 * Queues an event. A `prepared` one raises mmap_changing at once, even while
 * it waits its turn behind the syscall's earlier events.
 */
function queue(
  ctx: UffdContext,
  event: Pick<QueuedEvent, 'description' | 'encode' | 'onDone'>,
  wait: EventWait | null,
  prepared: boolean,
): void {
  const { description, encode, onDone } = event;
  if (wait === null) {
    ctx.enqueueEvent({ description, encode, ...(onDone === undefined ? {} : { onDone }) });
    return;
  }
  if (prepared) ctx.reserveEvent(description);
  const onThread = wait.onThread;
  wait.add(
    (done) => {
      const finish = () => {
        onDone?.();
        done();
      };
      if (ctx.released) {
        // Released while waiting its turn: the event is dropped, as the kernel drops it.
        if (prepared) ctx.dropReservation(description);
        finish();
        return;
      }
      ctx.enqueueEvent({ description, encode, onDone: finish, completesOnThread: onThread }, prepared);
    },
    onThread ? () => ctx.completeOnThread(description) : undefined,
  );
}

/**
 * REMOVE (MADV_DONTNEED, FREE, REMOVE) for one VMA, if its context asked for
 * it: madvise raises one per registered VMA, clipped to it, in VMA order.
 * Returns whether an event was raised.
 */
export function raiseRemoveEvent(vma: Vma, start: number, end: number, wait: EventWait | null): boolean {
  const ctx = vma.uffdContext;
  if (ctx === null || !ctx.hasFeature(UFFD_FEATURE_EVENT_REMOVE)) return false;
  const lo = Math.max(start, vma.start);
  const hi = Math.min(end, vma.end);
  const message = encodeUffdMsg({ event: 'remove', start: BigInt(lo), end: BigInt(hi) });
  queue(ctx, { description: `REMOVE ${hex(lo)}-${hex(hi)}`, encode: () => message }, wait, false);
  return true;
}

/** The contexts an unmap of [start, end) notifies: each once, with the whole range. */
export function unmapContexts(mm: AddressSpace, start: number, end: number): UffdContext[] {
  const contexts: UffdContext[] = [];
  for (const vma of mm.vmasIn(start, end)) {
    const ctx = vma.uffdContext;
    if (ctx?.hasFeature(UFFD_FEATURE_EVENT_UNMAP) && !contexts.includes(ctx)) contexts.push(ctx);
  }
  return contexts;
}

export function raiseUnmapEvents(
  contexts: UffdContext[],
  start: number,
  end: number,
  wait: EventWait | null,
): number {
  for (const ctx of contexts) {
    const message = encodeUffdMsg({ event: 'unmap', start: BigInt(start), end: BigInt(end) });
    queue(ctx, { description: `UNMAP ${hex(start)}-${hex(end)}`, encode: () => message }, wait, true);
  }
  return contexts.length;
}

export function remapWanted(ctx: UffdContext | null): ctx is UffdContext {
  return ctx?.hasFeature(UFFD_FEATURE_EVENT_REMAP) === true;
}

export function raiseRemapEvent(
  ctx: UffdContext,
  from: number,
  to: number,
  length: number,
  wait: EventWait | null,
): void {
  const message = encodeUffdMsg({ event: 'remap', from: BigInt(from), to: BigInt(to), len: BigInt(length) });
  const description = `REMAP ${hex(from)} -> ${hex(to)} (${length} bytes)`;
  queue(ctx, { description, encode: () => message }, wait, true);
}

/**
 * FORK: queued on the parent's context; reading it installs an fd for the
 * child's context in the reader's process.
 */
export function raiseForkEvent(
  parent: UffdContext,
  child: UffdContext,
  wait: EventWait | null,
  onDropped: () => void,
): void {
  let delivered = false;
  const event: Pick<QueuedEvent, 'description' | 'encode' | 'onDone'> = {
    description: `FORK (child context ${child.id})`,
    encode: (reader) => {
      const fd = reader.installUffd(child);
      if (fd < 0) return fd;
      delivered = true;
      return encodeUffdMsg({ event: 'fork', ufd: fd });
    },
    onDone: () => {
      if (!delivered) onDropped();
    },
  };
  queue(parent, event, wait, true);
}
