/**
 * madvise(2): the advices userfaultfd cares about (DONTNEED, FREE, REMOVE
 * raise REMOVE events; PAGEOUT does not) and the VMA-flag advices. Checks in
 * the kernel's order; a hole in the range gives ENOMEM after the mapped parts
 * were handled, as Linux does.
 */
import {
  MADV_COLD,
  MADV_DODUMP,
  MADV_DOFORK,
  MADV_DONTDUMP,
  MADV_DONTFORK,
  MADV_DONTNEED,
  MADV_DONTNEED_LOCKED,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MADV_NORMAL,
  MADV_PAGEOUT,
  MADV_RANDOM,
  MADV_REMOVE,
  MADV_SEQUENTIAL,
  MADV_WILLNEED,
  PAGE_SIZE,
  TASK_SIZE,
} from '../../uapi/constants.ts';
import { EACCES, EINVAL, ENOMEM } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import { PG_ANON } from '../mem/physmem.ts';
import type { ModelProcess } from '../process.ts';
import { afterEvents, type EventWait, raiseRemoveEvent } from '../uffd/events.ts';
import { ZAP_KEEP_POISON, ZAP_KEEP_WP } from './mm.ts';
import { splitEdges } from './munmap.ts';
import { PTE_PRESENT, PTE_ZERO } from './pagetable.ts';
import { truncatePagecache } from './truncate.ts';
import {
  VM_DONTCOPY,
  VM_HUGEPAGE,
  VM_HUGETLB,
  VM_LOCKED,
  VM_MAYWRITE,
  VM_NOHUGEPAGE,
  VM_SHARED,
  type Vma,
} from './vma.ts';

const NO_OP_ADVICE = new Set([
  MADV_NORMAL,
  MADV_RANDOM,
  MADV_SEQUENTIAL,
  MADV_WILLNEED,
  MADV_DONTDUMP,
  MADV_DODUMP,
]);
const FLAG_ADVICE: Record<number, { set: number; clear: number }> = {
  [MADV_DONTFORK]: { set: VM_DONTCOPY, clear: 0 },
  [MADV_DOFORK]: { set: 0, clear: VM_DONTCOPY },
  [MADV_HUGEPAGE]: { set: VM_HUGEPAGE, clear: VM_NOHUGEPAGE },
  [MADV_NOHUGEPAGE]: { set: VM_NOHUGEPAGE, clear: VM_HUGEPAGE },
};
const DISCARD_ADVICE = new Set([MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_REMOVE]);

/** A checked madvise: the page-rounded range, its VMAs, and the result a hole in it gives. */
interface MadviseCall {
  readonly process: ModelProcess;
  readonly address: number;
  readonly end: number;
  readonly advice: number;
  readonly vmas: readonly Vma[];
  /** 0, or ENOMEM when part of the range is not mapped (after the mapped parts were handled). */
  readonly holeResult: () => number;
  readonly wait: EventWait | null;
}

/**
 * Validates and, for the discarding advices, raises the REMOVE events.
 * Returns -errno, or the step that does the work: Linux reads the event
 * before the pages go, so a sleeping caller runs it after the read.
 */
export function prepareMadvise(
  process: ModelProcess,
  address: number,
  length: number,
  advice: number,
  wait: EventWait | null,
): number | (() => number) {
  if (address % PAGE_SIZE !== 0) return process.fail(EINVAL, 'addr', `${hex(address)} is not page aligned`);
  const known =
    NO_OP_ADVICE.has(advice) ||
    advice === MADV_PAGEOUT ||
    advice === MADV_COLD ||
    advice in FLAG_ADVICE ||
    DISCARD_ADVICE.has(advice);
  if (!known) return process.fail(EINVAL, 'advice', `unknown or unsupported advice ${advice}`);
  if (length === 0) return 0;
  const end = address + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
  if (end > TASK_SIZE || end < address) return process.fail(EINVAL, 'length', 'runs past the address space');
  const vmas = process.mm.vmasIn(address, end);
  if (vmas.length === 0) return process.fail(ENOMEM, 'addr', `${hex(address)}-${hex(end)} is not mapped`);
  const hasHole =
    vmas[0]!.start > address ||
    vmas.some((vma, i) => i > 0 && vmas[i - 1]!.end < vma.start) ||
    vmas[vmas.length - 1]!.end < end;
  const holeResult = () => (hasHole ? process.fail(ENOMEM, 'length', 'part of the range is not mapped') : 0);
  const call: MadviseCall = { process, address, end, advice, vmas, holeResult, wait };
  if (NO_OP_ADVICE.has(advice)) return holeResult;
  if (advice === MADV_PAGEOUT || advice === MADV_COLD) return prepareLru(call);
  const flagAdvice = FLAG_ADVICE[advice];
  if (flagAdvice !== undefined) return () => applyFlagAdvice(call, flagAdvice);
  return prepareDiscard(call);
}

/** MADV_COLD and MADV_PAGEOUT, refused on memory that is not on the LRU. */
function prepareLru(call: MadviseCall): number | (() => number) {
  const { process, address, end, advice, vmas, holeResult } = call;
  // can_madv_lru_vma: locked and hugetlb memory is not on the LRU [OBS: faultline fuzz against the host].
  const refused = vmas.find((vma) => vma.flags & (VM_LOCKED | VM_HUGETLB));
  if (refused !== undefined) return process.fail(EINVAL, 'advice', `${refused.describe()} is not on the LRU`);
  if (advice === MADV_COLD) return holeResult;
  return () => {
    for (const vma of process.mm.vmasIn(address, end))
      pageOut(process, vma, Math.max(address, vma.start), Math.min(end, vma.end));
    return holeResult();
  };
}

/** MADV_DONTFORK, MADV_DOFORK, MADV_HUGEPAGE, MADV_NOHUGEPAGE: VMA flags, split and merged. */
function applyFlagAdvice(call: MadviseCall, flagAdvice: { set: number; clear: number }): number {
  const { process, address, end } = call;
  const mm = process.mm;
  const split = splitEdges(process, address, end);
  if (split < 0) return split;
  for (const vma of mm.vmasIn(address, end)) vma.flags = (vma.flags | flagAdvice.set) & ~flagAdvice.clear;
  mm.mergeRange(address, end);
  return call.holeResult();
}

/**
 * DONTNEED, FREE, REMOVE. The first VMA's checks come before anything
 * happens; later VMAs are checked when the walk reaches them, after the
 * earlier ones lost their pages (madvise_walk_vmas) [OBS 6.18: faultline
 * fuzz, MADV_REMOVE over a hugetlb VMA and an anonymous one].
 */
function prepareDiscard(call: MadviseCall): number | (() => number) {
  const { process, address, end, advice, vmas, wait } = call;
  const mm = process.mm;
  const refusedFirst = checkDiscard(process, vmas[0]!, advice, address);
  if (refusedFirst < 0) return refusedFirst;
  // VMA by VMA, as madvise walks them: each VMA's REMOVE event is decided when the walk reaches
  // it, after the previous VMA's event was read and its pages went, so a VMA registered meanwhile
  // raises one too [OBS: host 6.18; faultline fuzz].
  const outcome: { refused: Vma | null; invalid: number } = { refused: null, invalid: 0 };
  const walk = (cursor: number): void => {
    const vma = mm.findIntersecting(cursor, end);
    if (vma === undefined) return;
    const invalid = cursor === address ? 0 : checkDiscard(process, vma, advice, address);
    if (invalid < 0) {
      outcome.invalid = invalid;
      return;
    }
    const dropped = raiseRemoveEvent(vma, Math.max(cursor, address), end, wait);
    // madvise_free_single_vma refuses non-anonymous memory only after userfaultfd_remove has
    // raised (and waited for) the REMOVE event, and the walk stops there [OBS: host 6.18].
    if (advice === MADV_FREE && !vma.isAnonymous) {
      outcome.refused = vma;
      return;
    }
    const lo = Math.max(cursor, vma.start);
    // hugetlb discards whole huge pages only: the end is rounded down.
    const top = Math.min(end, vma.end);
    const hi = top - (top % vma.pageSize);
    const next = vma.end;
    afterEvents(wait, () => {
      if (dropped && advice !== MADV_REMOVE) {
        // madvise_dontneed_free dropped mmap_lock for the event: it looks the VMA up again at the
        // start, and an unmapped start ends the call with ENOMEM [OBS 6.18: faultline fuzz --seed
        // 20261722, the range unmapped while the REMOVE event was unread].
        const again = mm.findVma(lo);
        if (again === undefined) {
          outcome.invalid = process.fail(ENOMEM, 'addr', `${hex(lo)} was unmapped during the REMOVE event`);
          return;
        }
        const invalid = checkDiscard(process, again, advice, lo);
        if (invalid < 0) {
          outcome.invalid = invalid;
          return;
        }
      }
      if (hi > lo) {
        for (const current of mm.vmasIn(lo, hi)) {
          discard(process, current, Math.max(lo, current.start), Math.min(hi, current.end), advice);
        }
      }
      walk(next);
    });
  };
  walk(address);
  return () => {
    if (outcome.invalid < 0) return outcome.invalid;
    const refused = outcome.refused;
    if (refused !== null) {
      return process.fail(
        EINVAL,
        'advice',
        `MADV_FREE needs private anonymous memory, not ${refused.describe()}`,
      );
    }
    return call.holeResult();
  };
}

/** madvise(2) by the calling thread: events are queued, the call does not wait for them. */
export function madvise(process: ModelProcess, address: number, length: number, advice: number): number {
  const prepared = prepareMadvise(process, address, length, advice, null);
  return typeof prepared === 'number' ? prepared : prepared();
}

function checkDiscard(process: ModelProcess, vma: Vma, advice: number, start: number): number {
  if (advice === MADV_DONTNEED && vma.flags & VM_LOCKED)
    return process.fail(EINVAL, 'addr', `${vma.describe()} is locked`);
  // hugetlb takes only DONTNEED; other non-anonymous memory fails MADV_FREE after its REMOVE event.
  if (advice === MADV_FREE && vma.flags & VM_HUGETLB) {
    return process.fail(EINVAL, 'advice', `MADV_FREE needs private anonymous memory, not ${vma.describe()}`);
  }
  if (advice === MADV_REMOVE && vma.inode === null) {
    return process.fail(EINVAL, 'advice', `MADV_REMOVE needs a file mapping, not ${vma.describe()}`);
  }
  // vma_is_shared_maywrite: a MAP_PRIVATE file mapping gets EACCES [OBS: host 6.18, memfd MAP_PRIVATE].
  if (advice === MADV_REMOVE && (!(vma.flags & VM_SHARED) || !(vma.flags & VM_MAYWRITE))) {
    return process.fail(
      EACCES,
      'advice',
      `MADV_REMOVE needs a shared writable mapping, not ${vma.describe()}`,
    );
  }
  if (vma.pageShift > 12 && Math.max(start, vma.start) % vma.pageSize !== 0) {
    return process.fail(EINVAL, 'addr', `not aligned to the huge pages of ${vma.describe()}`);
  }
  return 0;
}

function discard(process: ModelProcess, vma: Vma, start: number, end: number, advice: number): void {
  const mm = process.mm;
  if (advice === MADV_FREE) {
    // Lazily freed pages keep their data until reclaim, which the model never runs.
    return;
  }
  if (advice === MADV_REMOVE) {
    const inode = vma.inode!;
    const fileStart = vma.pgoffAt(start) * 4096;
    const to = Math.min(fileStart + (end - start), inode.sizeBytes);
    truncatePagecache(process.kernel.memory, inode, { from: fileStart, to }, false);
    return;
  }
  // DONTNEED: anonymous memory loses its markers too; file mappings keep uffd-wp markers, but poison
  // markers go everywhere (the zap is even_cows) [OBS: host 6.18, shmem and hugetlb, shared and private].
  mm.zapRange(vma, start, end, vma.isAnonymous ? 0 : ZAP_KEEP_WP);
}

/**
 * MADV_PAGEOUT reclaims what it can. Page-cache pages are unmapped from this
 * address space (they stay in the cache: without swap, shmem cannot be
 * written out); anonymous pages stay, as there is no swap in the model
 * [OBS: faultline fuzz against the host].
 */
function pageOut(process: ModelProcess, vma: Vma, start: number, end: number): void {
  const mm = process.mm;
  const memory = mm.memory;
  const cachePages: number[] = [];
  mm.pageTable.forEachInRange(start / 4096, end / 4096, (vpn, flags, pfn) => {
    if (!(flags & PTE_PRESENT) || flags & PTE_ZERO) return;
    if (!memory.hasFlag(pfn, PG_ANON)) cachePages.push(vpn * 4096);
  });
  for (const address of cachePages)
    mm.zapRange(vma, address, address + vma.pageSize, ZAP_KEEP_WP | ZAP_KEEP_POISON);
}
