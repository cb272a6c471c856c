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

export function doMremap(
  process: ModelProcess,
  oldAddress: number,
  oldLengthRaw: number,
  newLengthRaw: number,
  flags: number,
  newAddressRaw: number,
  wait: EventWait | null,
): number {
  const mm = process.mm;
  if (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP))
    return process.fail(EINVAL, 'flags', `unknown flags ${hex(flags)}`);
  if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) && !(flags & MREMAP_MAYMOVE)) {
    return process.fail(EINVAL, 'flags', 'MREMAP_FIXED and MREMAP_DONTUNMAP need MREMAP_MAYMOVE');
  }
  if (oldAddress % PAGE_SIZE !== 0)
    return process.fail(EINVAL, 'old_address', `${hex(oldAddress)} is not page aligned`);
  const oldLength = Math.ceil(oldLengthRaw / PAGE_SIZE) * PAGE_SIZE;
  const newLength = Math.ceil(newLengthRaw / PAGE_SIZE) * PAGE_SIZE;
  if (newLength === 0) return process.fail(EINVAL, 'new_size', 'is zero');
  const fixed = (flags & MREMAP_FIXED) !== 0;
  if (fixed) {
    if (newAddressRaw % PAGE_SIZE !== 0)
      return process.fail(EINVAL, 'new_address', `${hex(newAddressRaw)} is not page aligned`);
    if (newAddressRaw + newLength > TASK_SIZE)
      return process.fail(EINVAL, 'new_address', 'outside the address space');
    if (newAddressRaw < oldAddress + oldLength && oldAddress < newAddressRaw + newLength) {
      return process.fail(EINVAL, 'new_address', 'the new range overlaps the old one');
    }
  }
  const vma = mm.findVma(oldAddress);
  if (vma === undefined) return process.fail(EFAULT, 'old_address', `${hex(oldAddress)} is not mapped`);
  if (oldAddress + oldLength > vma.end) {
    // Since 6.17 a pure move (MAYMOVE|FIXED, same length, no DONTUNMAP) may span several VMAs
    // and gaps (remap_move) [OBS 6.18: faultline fuzz against the host].
    const pureMove = fixed && newLength === oldLength && !(flags & MREMAP_DONTUNMAP);
    if (!pureMove) return process.fail(EFAULT, 'old_size', 'the old range spans more than one mapping');
    return moveMultiple(process, oldAddress, oldLength, newAddressRaw, wait);
  }
  if (vma.pageShift > 12 && (oldLength % vma.pageSize !== 0 || newLength % vma.pageSize !== 0)) {
    return process.fail(EINVAL, 'new_size', `not a multiple of the huge pages of ${vma.describe()}`);
  }

  if (fixed) {
    // The destination is unmapped first: its contexts hear UNMAP before anything else.
    const unmapped = unmapRange(process, newAddressRaw, newAddressRaw + newLength, wait);
    if (unmapped < 0) return unmapped;
  }
  if (!fixed && newLength <= oldLength) {
    if (newLength < oldLength) {
      const shrunk = unmapRange(process, oldAddress + newLength, oldAddress + oldLength, wait);
      if (shrunk < 0) return shrunk;
    }
    return oldAddress;
  }
  if (!fixed && !(vma.flags & VM_DONTEXPAND) && vma.end === oldAddress + oldLength) {
    const growEnd = oldAddress + newLength;
    if (growEnd <= TASK_SIZE && mm.isFree(vma.end, growEnd)) {
      vma.end = growEnd;
      return oldAddress;
    }
  }
  if (!(flags & MREMAP_MAYMOVE))
    return process.fail(ENOMEM, 'new_size', 'cannot grow in place and MREMAP_MAYMOVE is not set');
  const target = fixed ? newAddressRaw : mm.findFreeRange(newLength, vma.pageSize);
  if (target < 0) return process.fail(ENOMEM, 'new_size', 'no free range large enough');
  // mremap_to shrinks before it moves: the tail goes first, and only the kept head moves (REMAP
  // carries the new length); the tail's UNMAP is queued after the REMAP, then the head's
  // [OBS 6.18: faultline diff, mremap onto a reservation].
  let tail: { contexts: UffdContext[]; start: number; end: number } | null = null;
  if (fixed && newLength < oldLength) {
    const start = oldAddress + newLength;
    const end = oldAddress + oldLength;
    tail = { contexts: unmapContexts(mm, start, end), start, end };
    const split = splitEdges(process, start, end);
    if (split < 0) return split;
    for (const piece of mm.vmasIn(start, end)) removeVma(process, piece);
  }
  const moving = tail === null ? vma : mm.findVma(oldAddress)!;
  return moveRange(
    process,
    moving,
    oldAddress,
    tail === null ? oldLength : newLength,
    target,
    newLength,
    (flags & MREMAP_DONTUNMAP) !== 0,
    wait,
    tail,
  );
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
    const moved = moveRange(process, vma, piece.start, size, destination, size, false, wait);
    if (moved < 0) return moved;
  }
  return target;
}

/** move_vma: a new VMA at `target` takes over the pages of [old, old + oldLength). */
function moveRange(
  process: ModelProcess,
  vma: Vma,
  oldAddress: number,
  oldLength: number,
  target: number,
  newLength: number,
  dontUnmap: boolean,
  wait: EventWait | null,
  tail: { contexts: UffdContext[]; start: number; end: number } | null = null,
): number {
  const mm = process.mm;
  const ctx = vma.uffdContext;
  const unmapTargets = dontUnmap ? [] : unmapContexts(mm, oldAddress, oldAddress + oldLength);
  // An unfaulted private anonymous VMA (no anon_vma) takes the pgoff of its new place, so it can
  // merge with its new neighbours [OBS 6.18: faultline fuzz, a moved VMA merged with the rest of
  // the range it landed on].
  const fresh = vma.inode === null && vma.anonVma === 0;
  const moved = new Vma(
    target,
    target + newLength,
    vma.flags,
    vma.inode,
    fresh ? target / 4096 : vma.pgoffAt(oldAddress),
    vma.memoryType,
    vma.pageShift,
    mm,
  );
  moved.anonVma = vma.anonVma;
  if (remapWanted(ctx)) {
    moved.uffdContext = ctx;
  } else {
    // Without EVENT_REMAP the kernel cannot tell the monitor, so the new VMA is not registered.
    moved.flags &= ~VM_UFFD_FLAGS;
  }
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
