/**
 * Non-cooperative events (uapi-facts.md §4.6): which contexts an mm change
 * notifies, and the queued events themselves. A syscall that raised events
 * waits until every one of them is read; `EventWait` counts them down.
 */
import {
  UFFD_FEATURE_EVENT_REMAP,
  UFFD_FEATURE_EVENT_REMOVE,
  UFFD_FEATURE_EVENT_UNMAP,
} from '../../uapi/constants.ts';
import { encodeUffdMsg } from '../../uapi/structs.ts';
import { hex } from '../failure.ts';
import type { AddressSpace } from '../mm/mm.ts';
import type { UffdContext } from './context.ts';

/** Counts a syscall's unread events; `onAllRead` runs when the last one is read (or dropped). */
export class EventWait {
  outstanding = 0;
  constructor(private readonly onAllRead: () => void) {}

  add(): () => void {
    this.outstanding++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.outstanding === 0) this.onAllRead();
    };
  }
}

function queue(ctx: UffdContext, description: string, message: Uint8Array, wait: EventWait | null): void {
  const onDone = wait?.add();
  ctx.enqueueEvent({ description, encode: () => message, ...(onDone === undefined ? {} : { onDone }) });
}

/**
 * REMOVE (MADV_DONTNEED, FREE, REMOVE): one event per registered VMA whose
 * context asked for it, clipped to the VMA.
 */
export function raiseRemoveEvents(
  mm: AddressSpace,
  start: number,
  end: number,
  wait: EventWait | null,
): number {
  let raised = 0;
  for (const vma of mm.vmasIn(start, end)) {
    const ctx = vma.uffdContext;
    if (ctx === null || !ctx.hasFeature(UFFD_FEATURE_EVENT_REMOVE)) continue;
    const lo = Math.max(start, vma.start);
    const hi = Math.min(end, vma.end);
    const message = encodeUffdMsg({ event: 'remove', start: BigInt(lo), end: BigInt(hi) });
    queue(ctx, `REMOVE ${hex(lo)}-${hex(hi)}`, message, wait);
    raised++;
  }
  return raised;
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
    queue(ctx, `UNMAP ${hex(start)}-${hex(end)}`, message, wait);
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
  queue(ctx, `REMAP ${hex(from)} -> ${hex(to)} (${length} bytes)`, message, wait);
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
  const onDone = wait?.add();
  let delivered = false;
  parent.enqueueEvent({
    description: `FORK (child context ${child.id})`,
    encode: (reader) => {
      const fd = reader.installUffd(child);
      if (fd < 0) return fd;
      delivered = true;
      return encodeUffdMsg({ event: 'fork', ufd: fd });
    },
    onDone: () => {
      if (!delivered) onDropped();
      onDone?.();
    },
  });
}
