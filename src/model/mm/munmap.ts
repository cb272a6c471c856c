/**
 * munmap(2) and the unmapping every other call shares (mm/vma.c
 * do_vmi_munmap): split at the edges, refusing to break a huge page, remove
 * what is inside, and tell the registered contexts with EVENT_UNMAP.
 */
import { PAGE_SIZE, TASK_SIZE } from '../../uapi/constants.ts';
import { EINVAL } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { ModelProcess } from '../process.ts';
import { type EventWait, raiseUnmapEvents, unmapContexts } from '../uffd/events.ts';
import type { Vma } from './vma.ts';

export function munmap(
  process: ModelProcess,
  address: number,
  length: number,
  wait: EventWait | null,
): number {
  if (address % PAGE_SIZE !== 0) return process.fail(EINVAL, 'addr', `${hex(address)} is not page aligned`);
  if (length === 0) return process.fail(EINVAL, 'length', 'is zero');
  const end = address + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
  if (end > TASK_SIZE || address < 0) return process.fail(EINVAL, 'addr', 'outside the address space');
  return unmapRange(process, address, end, wait);
}

/**
 * do_vmi_munmap: splits at the edges (refusing to break a huge page) and
 * removes what is inside; registered contexts with EVENT_UNMAP hear of it
 * afterwards, once each, with the whole range.
 */
export function unmapRange(
  process: ModelProcess,
  start: number,
  end: number,
  wait: EventWait | null,
): number {
  const contexts = unmapContexts(process.mm, start, end);
  const split = splitEdges(process, start, end);
  if (split < 0) return split;
  for (const vma of process.mm.vmasIn(start, end)) removeVma(process, vma);
  raiseUnmapEvents(contexts, start, end, wait);
  return 0;
}

/** Zaps and removes one whole VMA; its file goes when nothing else holds it. */
export function removeVma(process: ModelProcess, vma: Vma): void {
  process.mm.zapRange(vma, vma.start, vma.end);
  process.mm.remove(vma);
  if (vma.inode !== null) process.kernel.maybeReleaseInode(vma.inode);
}

/**
 * Splits VMAs at `start`, then at `end`, refusing a split inside a huge
 * page. As in Linux, a refused end split leaves the start split done.
 */
export function splitEdges(process: ModelProcess, start: number, end: number): number {
  const mm = process.mm;
  for (const edge of [start, end]) {
    const vma = mm.findVma(edge);
    if (vma !== undefined && edge > vma.start && edge % vma.pageSize !== 0) {
      return process.fail(
        EINVAL,
        edge === start ? 'addr' : 'len',
        `${hex(edge)} would split a huge page of ${vma.describe()}`,
      );
    }
    mm.splitAt(edge);
  }
  return 0;
}
