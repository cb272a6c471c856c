/**
 * mm/truncate.c: removing a file's cached pages and unmapping them from
 * every VMA that maps them (truncate, punch hole, MADV_REMOVE).
 */
import { filemapDelete, filemapLookup, type Inode } from '../mem/pagecache.ts';
import type { PhysicalMemory } from '../mem/physmem.ts';
import { ZAP_KEEP_POISON, ZAP_KEEP_WP } from './mm.ts';
import { PTE_PRESENT } from './pagetable.ts';
import { VM_HUGETLB, VM_SHARED, type Vma } from './vma.ts';

/**
 * Removes cached pages of [from, to) and unmaps them everywhere (truncate
 * and punch hole). Partial folios at the edges are zeroed in place.
 * `evenCows` (truncate) unmaps private COW copies too.
 */
export function truncatePagecache(
  memory: PhysicalMemory,
  inode: Inode,
  range: { readonly from: number; readonly to: number },
  evenCows: boolean,
): void {
  const { from, to } = range;
  const folioBytes = inode.pageSize;
  const firstWhole = Math.ceil(from / folioBytes) * folioBytes;
  const endWhole = Math.floor(to / folioBytes) * folioBytes;
  for (const edge of [from, to]) {
    if (edge % folioBytes === 0) continue;
    const head = Math.floor(edge / folioBytes) * folioBytes;
    const pfn = filemapLookup(inode, head / 4096);
    if (pfn < 0) continue;
    const lo = Math.max(from, head) - head;
    const hi = Math.min(to, head + folioBytes) - head;
    if (hi > lo) memory.frameBuffer(pfn).fill(0, memory.frameOffset(pfn) + lo, memory.frameOffset(pfn) + hi);
  }
  if (endWhole <= firstWhole) return;
  for (const vma of [...inode.mappings]) {
    const vmaFileStart = vma.pgoff * 4096;
    const vmaFileEnd = vmaFileStart + vma.lengthBytes;
    const lo = Math.max(firstWhole, vmaFileStart);
    const hi = Math.min(endWhole, vmaFileEnd);
    if (hi <= lo) continue;
    const start = vma.start + (lo - vmaFileStart);
    const end = vma.start + (hi - vmaFileStart);
    // hugetlb's invalidation (hugetlb_vmdelete_list) zaps a private mapping's own pages too
    // [OBS 6.18: faultline fuzz, punch hole and MADV_REMOVE under a MAP_PRIVATE view].
    if (evenCows || vma.flags & (VM_SHARED | VM_HUGETLB)) {
      vma.mm.zapRange(vma, start, end, invalidationZap(vma, evenCows));
    } else zapCachePagesOnly(vma, start, end, inode);
  }
  inode.cache.forEachInRange(firstWhole / 4096, endWhole / 4096, (pgoff) =>
    filemapDelete(memory, inode, pgoff),
  );
}

/** Unmaps the page-cache pages (not private COW copies) of a private mapping (punch hole). */
function zapCachePagesOnly(vma: Vma, start: number, end: number, inode: Inode): void {
  const memory = vma.mm.memory;
  vma.mm.pageTable.forEachInRange(start / 4096, end / 4096, (vpn, flags, pfn) => {
    if (flags & PTE_PRESENT && memory.folioInode[pfn] === inode.id) {
      vma.mm.zapRange(vma, vpn * 4096, vpn * 4096 + vma.pageSize, ZAP_KEEP_WP | ZAP_KEEP_POISON);
    }
  });
}

/**
 * What the page-cache invalidation zap (unmap_mapping_range) keeps: uffd-wp
 * state always (a protected page becomes a marker) and poison unless it zaps
 * cows (truncate); hugetlb keeps only wp, and not even that on truncate
 * (ZAP_FLAG_DROP_MARKER) [OBS 6.18: §5.5, punch hole and MADV_REMOVE].
 */
function invalidationZap(vma: Vma, evenCows: boolean): number {
  if (vma.flags & VM_HUGETLB) return evenCows ? 0 : ZAP_KEEP_WP;
  return evenCows ? ZAP_KEEP_WP : ZAP_KEEP_WP | ZAP_KEEP_POISON;
}
