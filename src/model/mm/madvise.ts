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
import { punchHole } from '../fs/open.ts';
import { PG_ANON } from '../mem/physmem.ts';
import type { ModelProcess } from '../process.ts';
import { afterEvents, type EventWait, raiseRemoveEvent } from '../uffd/events.ts';
import { ZAP_KEEP_POISON, ZAP_KEEP_WP } from './mm.ts';
import { splitEdges } from './munmap.ts';
import { PTE_MARKER_POISONED, PTE_PRESENT, PTE_ZERO } from './pagetable.ts';
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
 * DONTNEED, FREE, REMOVE: madvise_walk_vmas. Each VMA is checked when the
 * walk reaches it, after the earlier ones lost their pages [OBS 6.18:
 * faultline fuzz, MADV_REMOVE over a hugetlb VMA and an anonymous one]. A
 * VMA whose REMOVE event is raised drops mmap_lock until the event is read;
 * the walk then goes on from where that VMA's work ended, looking the VMAs
 * up again, so a gap that opened meanwhile is ENOMEM and a VMA split
 * meanwhile raises a second event [OBS: host 6.18,
 * scenarios/events/remove-walk-*.yaml].
 */
function prepareDiscard(call: MadviseCall): () => number {
  const walk: DiscardWalk = { call, start: call.address, unmapped: false, result: null };
  walkVmas(walk, findVmaAfter(call.process, call.address));
  return () => (walk.result === null ? 0 : walk.result());
}

/** madvise_walk_vmas' state, kept across the waits for REMOVE events. */
interface DiscardWalk {
  readonly call: MadviseCall;
  /** range->start: where the next VMA's work begins. */
  start: number;
  /** A gap was crossed: the call ends with ENOMEM once the walk is over. */
  unmapped: boolean;
  /** The call's result once the walk ended (recording its failure again); null while it goes on. */
  result: (() => number) | null;
}

/** One VMA's work: an error, or where it ended and whether it dropped mmap_lock (REMOVE event, MADV_REMOVE). */
type VmaDone = { readonly error: number } | { readonly end: number; readonly dropped: boolean };

/** find_vma: the first VMA that ends after `address`. */
function findVmaAfter(process: ModelProcess, address: number): Vma | undefined {
  return process.mm.findIntersecting(address, Number.POSITIVE_INFINITY);
}

function walkVmas(walk: DiscardWalk, vma: Vma | undefined): void {
  const { process, end: lastEnd } = walk.call;
  if (vma === undefined) {
    failWalk(walk, process.fail(ENOMEM, 'length', `nothing is mapped from ${hex(walk.start)} on`));
    return;
  }
  if (walk.start < vma.start) {
    // A gap does not stop the walk: it makes the result ENOMEM.
    walk.unmapped = true;
    walk.start = vma.start;
    if (walk.start >= lastEnd) {
      endWalk(walk);
      return;
    }
  }
  const range = { start: walk.start, end: Math.min(vma.end, lastEnd) };
  const vmaEnd = vma.end;
  const next = (done: VmaDone): void => {
    if ('error' in done) {
      failWalk(walk, done.error);
      return;
    }
    // Without dropping mmap_lock the VMA is still valid and the walk goes on from its end; after
    // a drop it goes on from where the work ended (a VMA that shrank meanwhile ends it sooner).
    const end = done.dropped ? done.end : Math.max(done.end, vmaEnd);
    if (end >= lastEnd) {
      endWalk(walk);
      return;
    }
    walk.start = end;
    walkVmas(walk, findVmaAfter(process, end));
  };
  if (walk.call.advice === MADV_REMOVE) removeVma(walk.call, vma, range, next);
  else dontneedFreeVma(walk.call, vma, range, next);
}

function endWalk(walk: DiscardWalk): void {
  const process = walk.call.process;
  walk.result = walk.unmapped
    ? () => process.fail(ENOMEM, 'length', 'part of the range is not mapped')
    : () => 0;
}

/** Ends the walk with `error`, keeping the reason recorded with it for the call's return. */
function failWalk(walk: DiscardWalk, error: number): void {
  const process = walk.call.process;
  const { argument = 'advice', reason = 'madvise failed' } = process.kernel.failure;
  walk.result = () => process.fail(-error, argument, reason);
}

interface Range {
  readonly start: number;
  readonly end: number;
}

/**
 * madvise_dontneed_free: the REMOVE event first; if it dropped mmap_lock,
 * the VMA is looked up again at the start (ENOMEM when it went), checked
 * again, and the range cut at its end.
 */
function dontneedFreeVma(call: MadviseCall, vma: Vma, range: Range, next: (done: VmaDone) => void): void {
  const { process, advice, wait } = call;
  const end = validDontneedFree(process, vma, advice, range);
  const start = range.start;
  if (end < 0) next({ error: end });
  else if (start === end) next({ end, dropped: false });
  else if (!raiseRemoveEvent(vma, start, end, wait)) next(zapOrFree(call, vma, { start, end }, false));
  else afterEvents(wait, () => next(afterRemoveEvent(call, { start, end })));
}

/** madvise_dontneed_free once mmap_lock is taken again after the REMOVE event. */
function afterRemoveEvent(call: MadviseCall, range: Range): VmaDone {
  const { process, advice } = call;
  const start = range.start;
  const again = process.mm.findVma(start);
  if (again === undefined)
    return { error: process.fail(ENOMEM, 'addr', `${hex(start)} was unmapped during the REMOVE event`) };
  const checked = validDontneedFree(process, again, advice, range);
  if (checked < 0) return { error: checked };
  // The VMA may have shrunk or been split meanwhile: what lies past its end is the walk's next VMA
  // (and raises its own REMOVE event, a repetition the handler must take).
  const cut = Math.min(checked, again.end);
  if (cut === start) return { end: cut, dropped: true };
  return zapOrFree(call, again, { start, end: cut }, true);
}

/**
 * madvise_dontneed_free_valid_vma: -errno, or the end of the range to
 * discard (hugetlb takes only DONTNEED, from a huge-page boundary, and
 * rounds the end down to whole huge pages).
 */
function validDontneedFree(process: ModelProcess, vma: Vma, advice: number, range: Range): number {
  if (!(vma.flags & VM_HUGETLB)) {
    if (advice !== MADV_DONTNEED_LOCKED && vma.flags & VM_LOCKED)
      return process.fail(EINVAL, 'addr', `${vma.describe()} is locked`);
    return range.end;
  }
  if (advice !== MADV_DONTNEED && advice !== MADV_DONTNEED_LOCKED)
    return process.fail(EINVAL, 'advice', `MADV_FREE needs private anonymous memory, not ${vma.describe()}`);
  if (range.start % vma.pageSize !== 0)
    return process.fail(EINVAL, 'addr', `not aligned to the huge pages of ${vma.describe()}`);
  return range.end - (range.end % vma.pageSize);
}

/** madvise_dontneed_single_vma and madvise_free_single_vma. */
function zapOrFree(call: MadviseCall, vma: Vma, range: Range, dropped: boolean): VmaDone {
  const { process, advice } = call;
  if (advice === MADV_FREE) {
    // Refused only now, after the REMOVE event was raised and read [OBS: host 6.18]. Lazily freed
    // pages keep their data until reclaim, which the model never runs.
    if (!vma.isAnonymous) {
      const error = process.fail(
        EINVAL,
        'advice',
        `MADV_FREE needs private anonymous memory, not ${vma.describe()}`,
      );
      return { error };
    }
    // madvise_free_pte_range clears poison markers (UFFDIO_POISON's too); uffd-wp markers stay
    // [OBS: host 6.18, scenarios/poison/free-clears-marker.yaml].
    const table = process.mm.pageTable;
    table.forEachInRange(range.start / 4096, range.end / 4096, (vpn, flags) => {
      if (flags & PTE_MARKER_POISONED) table.clear(vpn);
    });
    return { end: range.end, dropped };
  }
  // DONTNEED: anonymous memory loses its markers too; file mappings keep uffd-wp markers, but poison
  // markers go everywhere (the zap is even_cows) [OBS: host 6.18, shmem and hugetlb, shared and private].
  process.mm.zapRange(vma, range.start, range.end, vma.isAnonymous ? 0 : ZAP_KEEP_WP);
  return { end: range.end, dropped };
}

/**
 * madvise_remove: checked before its event; the file is held (get_file)
 * while mmap_lock is dropped, so the hole is punched in it at the offset
 * the VMA gave, even if the range was unmapped or remapped meanwhile.
 */
function removeVma(call: MadviseCall, vma: Vma, range: Range, next: (done: VmaDone) => void): void {
  const { process, wait } = call;
  const refused = checkRemove(process, vma);
  if (refused < 0) {
    next({ error: refused });
    return;
  }
  const inode = vma.inode!;
  const offset = vma.pgoffAt(range.start) * 4096;
  raiseRemoveEvent(vma, range.start, range.end, wait);
  afterEvents(wait, () => {
    const punched = punchHole(process, inode, offset, range.end - range.start);
    next(punched < 0 ? { error: punched } : { end: range.end, dropped: true });
  });
}

function checkRemove(process: ModelProcess, vma: Vma): number {
  if (vma.flags & VM_LOCKED) return process.fail(EINVAL, 'addr', `${vma.describe()} is locked`);
  if (vma.inode === null)
    return process.fail(EINVAL, 'advice', `MADV_REMOVE needs a file mapping, not ${vma.describe()}`);
  // vma_is_shared_maywrite: a MAP_PRIVATE file mapping gets EACCES [OBS: host 6.18, memfd MAP_PRIVATE].
  if (!(vma.flags & VM_SHARED) || !(vma.flags & VM_MAYWRITE)) {
    return process.fail(
      EACCES,
      'advice',
      `MADV_REMOVE needs a shared writable mapping, not ${vma.describe()}`,
    );
  }
  return 0;
}

/** madvise(2) by the calling thread: events are queued, the call does not wait for them. */
export function madvise(process: ModelProcess, address: number, length: number, advice: number): number {
  const prepared = prepareMadvise(process, address, length, advice, null);
  return typeof prepared === 'number' ? prepared : prepared();
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
