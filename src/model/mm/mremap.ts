/**
 * mremap(2): shrink, grow in place, or move (MREMAP_MAYMOVE, MREMAP_FIXED,
 * MREMAP_DONTUNMAP), with the userfaultfd consequences of §4.6: a moved VMA
 * keeps its registration and raises REMAP only when its context asked for
 * EVENT_REMAP, and is unregistered otherwise; unmapped ranges raise UNMAP.
 */
import {
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  TASK_SIZE,
} from '../../uapi/constants.ts';
import { EFAULT, EINVAL, ENOMEM } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { ModelProcess } from '../process.ts';
import type { UffdContext } from '../uffd/context.ts';
import {
  type EventWait,
  raiseRemapEvent,
  raiseUnmapEvents,
  remapWanted,
  unmapContexts,
} from '../uffd/events.ts';
import { clearUffdWp } from '../uffd/register.ts';
import { removeVma, splitEdges, unmapRange } from './munmap.ts';
import { VM_DONTEXPAND, VM_UFFD_FLAGS, Vma } from './vma.ts';

/** mremap(2)'s arguments as the C call takes them. */
export interface MremapRequest {
  readonly oldAddress: number;
  readonly oldLength: number;
  readonly newLength: number;
  readonly flags: number;
  readonly newAddress: number;
}

/** The arguments checked: lengths rounded to pages, and whether the destination is fixed. */
interface MremapCall {
  readonly process: ModelProcess;
  readonly oldAddress: number;
  readonly oldLength: number;
  readonly newLength: number;
  readonly flags: number;
  readonly newAddress: number;
  readonly fixed: boolean;
  readonly wait: EventWait | null;
}

/** The unmapped tail of a shrinking move: its UNMAP event is queued after the REMAP. */
interface UnmappedTail {
  readonly contexts: UffdContext[];
  readonly start: number;
  readonly end: number;
}

/** One move_vma: [oldAddress, oldAddress + oldLength) of `vma` to `target`, `newLength` long. */
interface VmaMove {
  readonly process: ModelProcess;
  readonly vma: Vma;
  readonly oldAddress: number;
  readonly oldLength: number;
  readonly target: number;
  readonly newLength: number;
  readonly dontUnmap: boolean;
  readonly wait: EventWait | null;
  readonly tail: UnmappedTail | null;
}

/** mremap(2); `wait` is the thread's event wait when a simulated thread makes the call. */
export function mremap(process: ModelProcess, args: MremapRequest, wait: EventWait | null): number {
  const call = checkMremapArgs(process, args, wait);
  if (typeof call === 'number') return call;
  const { oldAddress, oldLength, newLength, flags, newAddress, fixed } = call;
  const vma = process.mm.findVma(oldAddress);
  if (vma === undefined) return process.fail(EFAULT, 'old_address', `${hex(oldAddress)} is not mapped`);
  if (oldAddress + oldLength > vma.end) {
    // Since 6.17 a pure move (MAYMOVE|FIXED, same length, no DONTUNMAP) may span several VMAs
    // and gaps (remap_move) [OBS 6.18: faultline fuzz against the host].
    const pureMove = fixed && newLength === oldLength && !(flags & MREMAP_DONTUNMAP);
    if (!pureMove) return process.fail(EFAULT, 'old_size', 'the old range spans more than one mapping');
    return moveMultiple(process, oldAddress, oldLength, newAddress, wait);
  }
  if (vma.pageShift > 12 && (oldLength % vma.pageSize !== 0 || newLength % vma.pageSize !== 0)) {
    return process.fail(EINVAL, 'new_size', `not a multiple of the huge pages of ${vma.describe()}`);
  }
  if (fixed) {
    // The destination is unmapped first: its contexts hear UNMAP before anything else.
    const unmapped = unmapRange(process, newAddress, newAddress + newLength, wait);
    if (unmapped < 0) return unmapped;
  }
  if (!fixed) {
    const inPlace = resizeInPlace(call, vma);
    if (inPlace !== null) return inPlace;
  }
  if (!(flags & MREMAP_MAYMOVE))
    return process.fail(ENOMEM, 'new_size', 'cannot grow in place and MREMAP_MAYMOVE is not set');
  return mremapTo(call, vma);
}

/** The flag, alignment and overlap checks, in the kernel's order. */
function checkMremapArgs(
  process: ModelProcess,
  args: MremapRequest,
  wait: EventWait | null,
): MremapCall | number {
  const { oldAddress, flags, newAddress } = args;
  if (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP))
    return process.fail(EINVAL, 'flags', `unknown flags ${hex(flags)}`);
  if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) && !(flags & MREMAP_MAYMOVE)) {
    return process.fail(EINVAL, 'flags', 'MREMAP_FIXED and MREMAP_DONTUNMAP need MREMAP_MAYMOVE');
  }
  if (oldAddress % PAGE_SIZE !== 0)
    return process.fail(EINVAL, 'old_address', `${hex(oldAddress)} is not page aligned`);
  const oldLength = Math.ceil(args.oldLength / PAGE_SIZE) * PAGE_SIZE;
  const newLength = Math.ceil(args.newLength / PAGE_SIZE) * PAGE_SIZE;
  if (newLength === 0) return process.fail(EINVAL, 'new_size', 'is zero');
  const fixed = (flags & MREMAP_FIXED) !== 0;
  if (fixed) {
    if (newAddress % PAGE_SIZE !== 0)
      return process.fail(EINVAL, 'new_address', `${hex(newAddress)} is not page aligned`);
    if (newAddress + newLength > TASK_SIZE)
      return process.fail(EINVAL, 'new_address', 'outside the address space');
    if (newAddress < oldAddress + oldLength && oldAddress < newAddress + newLength) {
      return process.fail(EINVAL, 'new_address', 'the new range overlaps the old one');
    }
  }
  return { process, oldAddress, oldLength, newLength, flags, newAddress, fixed, wait };
}

/** Shrinks in place, or grows in place when the space after the VMA is free; null when it cannot. */
function resizeInPlace(call: MremapCall, vma: Vma): number | null {
  const { process, oldAddress, oldLength, newLength, wait } = call;
  if (newLength <= oldLength) {
    if (newLength < oldLength) {
      const shrunk = unmapRange(process, oldAddress + newLength, oldAddress + oldLength, wait);
      if (shrunk < 0) return shrunk;
    }
    return oldAddress;
  }
  if (!(vma.flags & VM_DONTEXPAND) && vma.end === oldAddress + oldLength) {
    const growEnd = oldAddress + newLength;
    if (growEnd <= TASK_SIZE && process.mm.isFree(vma.end, growEnd)) {
      vma.end = growEnd;
      return oldAddress;
    }
  }
  return null;
}

/** mremap_to: the move to a free range or the fixed destination (already unmapped). */
function mremapTo(call: MremapCall, vma: Vma): number {
  const { process, oldAddress, oldLength, newLength, flags, newAddress, fixed, wait } = call;
  const mm = process.mm;
  const target = fixed ? newAddress : mm.findFreeRange(newLength, vma.pageSize);
  if (target < 0) return process.fail(ENOMEM, 'new_size', 'no free range large enough');
  // mremap_to shrinks before it moves: the tail goes first, and only the kept head moves (REMAP
  // carries the new length); the tail's UNMAP is queued after the REMAP, then the head's
  // [OBS 6.18: faultline diff, mremap onto a reservation].
  let tail: UnmappedTail | null = null;
  if (fixed && newLength < oldLength) {
    const start = oldAddress + newLength;
    const end = oldAddress + oldLength;
    tail = { contexts: unmapContexts(mm, start, end), start, end };
    const split = splitEdges(process, start, end);
    if (split < 0) return split;
    for (const piece of mm.vmasIn(start, end)) removeVma(process, piece);
  }
  return moveRange({
    process,
    vma: tail === null ? vma : mm.findVma(oldAddress)!,
    oldAddress,
    oldLength: tail === null ? oldLength : newLength,
    target,
    newLength,
    dontUnmap: (flags & MREMAP_DONTUNMAP) !== 0,
    wait,
    tail,
  });
}

/**
 * remap_move over several VMAs: each VMA (clipped to the range) moves to the
 * same offset from `target`, its destination unmapped first; gaps stay gaps,
 * so what the destination held there stays. A uffd-armed VMA stops the walk
 * with EFAULT when it reaches it, the VMAs before it already moved [OBS 6.18:
 * host probes, with and without EVENT_REMAP].
 */
function moveMultiple(
  process: ModelProcess,
  oldAddress: number,
  length: number,
  target: number,
  wait: EventWait | null,
): number {
  const mm = process.mm;
  const end = oldAddress + length;
  const pieces = mm
    .vmasIn(oldAddress, end)
    .map((vma) => ({ start: Math.max(vma.start, oldAddress), end: Math.min(vma.end, end) }));
  for (const piece of pieces) {
    const size = piece.end - piece.start;
    const destination = target + (piece.start - oldAddress);
    const vma = mm.findVma(piece.start)!;
    if (vma.uffdContext !== null) {
      return process.fail(
        EFAULT,
        'old_address',
        `a move of several VMAs stops at ${vma.describe()}: it is uffd-armed`,
      );
    }
    const unmapped = unmapRange(process, destination, destination + size, wait);
    if (unmapped < 0) return unmapped;
    const moved = moveRange({
      process,
      vma,
      oldAddress: piece.start,
      oldLength: size,
      target: destination,
      newLength: size,
      dontUnmap: false,
      wait,
      tail: null,
    });
    if (moved < 0) return moved;
  }
  return target;
}

/** move_vma: a new VMA at `target` takes over the pages of [old, old + oldLength). */
function moveRange(move: VmaMove): number {
  const { process, vma, oldAddress, oldLength, target, newLength, dontUnmap, wait, tail } = move;
  const mm = process.mm;
  const ctx = vma.uffdContext;
  const unmapTargets = dontUnmap ? [] : unmapContexts(mm, oldAddress, oldAddress + oldLength);
  const moved = movedVma(move);
  // Entries move with the pages; mapcounts and references do not change.
  const shift = (target - oldAddress) / 4096;
  const entries: Array<[number, number, number]> = [];
  mm.pageTable.forEachInRange(
    oldAddress / 4096,
    (oldAddress + Math.min(oldLength, newLength)) / 4096,
    (vpn, flags, value) => {
      entries.push([vpn, flags, value]);
    },
  );
  if (!dontUnmap) {
    const split = splitEdges(process, oldAddress, oldAddress + oldLength);
    if (split < 0) return split;
  }
  for (const [vpn] of entries) mm.pageTable.clear(vpn);
  // The new VMA goes in before the old one leaves, so a file never looks unreferenced.
  mm.insert(moved);
  if (!dontUnmap) {
    for (const old of mm.vmasIn(oldAddress, oldAddress + oldLength)) removeVma(process, old);
  }
  for (const [vpn, flags, value] of entries) mm.pageTable.set(vpn + shift, flags, value);
  if (moved.uffdContext === null) clearUffdWp(mm, moved.start, moved.end);
  mm.mergeRange(moved.start, moved.end);
  if (remapWanted(ctx)) raiseRemapEvent(ctx, oldAddress, target, oldLength, wait);
  if (tail !== null) raiseUnmapEvents(tail.contexts, tail.start, tail.end, wait);
  raiseUnmapEvents(unmapTargets, oldAddress, oldAddress + oldLength, wait);
  return target;
}

/** The VMA at the move's target: registered still only when its context asked for EVENT_REMAP. */
function movedVma(move: VmaMove): Vma {
  const { vma, oldAddress, target, newLength } = move;
  // An unfaulted private anonymous VMA (no anon_vma) takes the pgoff of its new place, so it can
  // merge with its new neighbours [OBS 6.18: faultline fuzz, a moved VMA merged with the rest of
  // the range it landed on].
  const fresh = vma.inode === null && vma.anonVma === 0;
  const moved = new Vma({
    ...vma.shape(),
    start: target,
    end: target + newLength,
    pgoff: fresh ? target / 4096 : vma.pgoffAt(oldAddress),
  });
  moved.anonVma = vma.anonVma;
  const ctx = vma.uffdContext;
  if (remapWanted(ctx)) {
    moved.uffdContext = ctx;
  } else {
    // Without EVENT_REMAP the kernel cannot tell the monitor, so the new VMA is not registered.
    moved.flags &= ~VM_UFFD_FLAGS;
  }
  return moved;
}
