/**
 * An address space (the kernel's mm_struct): an ordered list of VMAs and one
 * page table. VMA list edits (split, merge, insert, remove) and page-table
 * zapping live here; the system calls that combine them are mmap.ts, munmap.ts,
 * mprotect.ts, madvise.ts and mremap.ts beside it.
 */
import { type PhysicalMemory, ZERO_PFN } from '../mem/physmem.ts';
import { SparseArray } from '../mem/sparse.ts';
import { PTE_MARKER_POISONED, PTE_MARKER_UFFD_WP, PTE_PRESENT, PTE_UFFD_WP, PTE_ZERO } from './pagetable.ts';
import { canMerge, VM_ACCESS_FLAGS, VM_UFFD_WP, type Vma } from './vma.ts';

/** Top of the mmap area; mappings are placed top-down below it, as on x86_64. */
export const MMAP_BASE = 0x7f0000000000;
/** Lowest address handed out by the allocator (mmap_min_addr and then some). */
/** zapRange details: keep uffd-wp state (markers, and markers for protected pages of file memory). */
export const ZAP_KEEP_WP = 1;
/** zapRange details: keep poison markers (a zap that does not zap cows). */
export const ZAP_KEEP_POISON = 2;

export const MMAP_MIN = 0x10000;

export class AddressSpace {
  /** Sorted by start, non-overlapping. */
  readonly vmas: Vma[] = [];
  /** Virtual page number -> entry. */
  readonly pageTable = new SparseArray();
  /** Set when the last process using the mm exits (mmget_not_zero fails). */
  dead = false;
  /** Processes using this mm. */
  users = 1;
  /**
   * The VMA `findVma` found last (the kernel's per-mm VMA cache): a hit is
   * checked against its current range, so splits, merges and mremap need no
   * invalidation; `remove` forgets it.
   */
  private cachedVma: Vma | null = null;

  constructor(
    readonly id: number,
    readonly memory: PhysicalMemory,
    private readonly nextAnonVmaId: () => number,
  ) {}

  /** Index of the first VMA with end > address. */
  private indexAfter(address: number): number {
    let lo = 0;
    let hi = this.vmas.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.vmas[mid]!.end > address) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** The VMA containing `address` (vma_lookup). */
  findVma(address: number): Vma | undefined {
    const cached = this.cachedVma;
    if (cached !== null && cached.start <= address && address < cached.end) return cached;
    const vma = this.vmas[this.indexAfter(address)];
    if (vma === undefined || vma.start > address) return undefined;
    this.cachedVma = vma;
    return vma;
  }

  /** The first VMA intersecting [start, end) (find_vma_intersection). */
  findIntersecting(start: number, end: number): Vma | undefined {
    const vma = this.vmas[this.indexAfter(start)];
    return vma !== undefined && vma.start < end ? vma : undefined;
  }

  /** VMAs intersecting [start, end), in order. */
  vmasIn(start: number, end: number): Vma[] {
    const result: Vma[] = [];
    for (let i = this.indexAfter(start); i < this.vmas.length; i++) {
      const vma = this.vmas[i]!;
      if (vma.start >= end) break;
      result.push(vma);
    }
    return result;
  }

  insert(vma: Vma): void {
    const index = this.indexAfter(vma.start);
    const next = this.vmas[index];
    if (next !== undefined && next.start < vma.end) {
      throw new Error(`AddressSpace.insert: ${vma.describe()} overlaps ${next.describe()}`);
    }
    this.vmas.splice(index, 0, vma);
    vma.inode?.mappings.add(vma);
    if (vma.inode !== null) vma.inode.references++;
  }

  remove(vma: Vma): void {
    const index = this.vmas.indexOf(vma);
    if (index < 0) throw new Error(`AddressSpace.remove: ${vma.describe()} is not in the mm`);
    this.vmas.splice(index, 1);
    if (this.cachedVma === vma) this.cachedVma = null;
    vma.inode?.mappings.delete(vma);
    if (vma.inode !== null) vma.inode.references--;
  }

  /**
   * Splits the VMA containing `address` so that a VMA starts there. The caller
   * has checked the address against the VMA's page size.
   */
  splitAt(address: number): void {
    const vma = this.findVma(address);
    if (vma === undefined || vma.start === address) return;
    const upper = vma.cloneRange(address, vma.end);
    vma.end = address;
    this.insert(upper);
  }

  /** Splits so that VMAs start at `start` and at `end`. */
  splitRange(start: number, end: number): void {
    this.splitAt(start);
    this.splitAt(end);
  }

  /** Merges every mergeable neighbouring pair touching [start, end] (vma_merge). */
  mergeRange(start: number, end: number): void {
    let index = Math.max(0, this.indexAfter(start) - 1);
    while (index + 1 < this.vmas.length) {
      const previous = this.vmas[index]!;
      const next = this.vmas[index + 1]!;
      if (previous.start > end) break;
      if (canMerge(previous, next)) {
        previous.end = next.end;
        if (previous.anonVma === 0) previous.anonVma = next.anonVma;
        this.remove(next);
        continue;
      }
      index++;
    }
  }

  /**
   * anon_vma_prepare: gives the VMA an anon_vma before its first anonymous
   * page, reusing a compatible neighbour's as the kernel does, so that later
   * merges behave like Linux's.
   */
  prepareAnonVma(vma: Vma): void {
    if (vma.anonVma !== 0) return;
    const index = this.vmas.indexOf(vma);
    for (const neighbour of [this.vmas[index - 1], this.vmas[index + 1]]) {
      if (neighbour === undefined || neighbour.anonVma === 0) continue;
      const adjacent = neighbour.end === vma.start || vma.end === neighbour.start;
      const sameKind =
        ((neighbour.flags ^ vma.flags) & ~VM_ACCESS_FLAGS) === 0 &&
        neighbour.inode === vma.inode &&
        neighbour.pgoff + (vma.start - neighbour.start) / 4096 === vma.pgoff;
      if (adjacent && sameKind) {
        vma.anonVma = neighbour.anonVma;
        return;
      }
    }
    vma.anonVma = this.nextAnonVmaId();
  }

  /**
   * A free range of `lengthBytes` aligned to `alignBytes`, searched top-down
   * from MMAP_BASE (arch_get_unmapped_area_topdown). -1 when none.
   */
  findFreeRange(lengthBytes: number, alignBytes: number): number {
    for (let i = this.vmas.length; i >= 0; i--) {
      const upper = Math.min(MMAP_BASE, i === this.vmas.length ? MMAP_BASE : this.vmas[i]!.start);
      const lower = Math.max(MMAP_MIN, i === 0 ? MMAP_MIN : this.vmas[i - 1]!.end);
      if (upper - lower < lengthBytes) continue;
      const candidate = Math.floor((upper - lengthBytes) / alignBytes) * alignBytes;
      if (candidate >= lower) return candidate;
    }
    return -1;
  }

  /** Whether [start, end) intersects no VMA. */
  isFree(start: number, end: number): boolean {
    return this.findIntersecting(start, end) === undefined;
  }

  /**
   * Clears the page-table entries of [start, end) inside `vma`, dropping the
   * references and mapcounts they held (zap_page_range). `details` says
   * which uffd markers the zap keeps (zap_details): with ZAP_KEEP_WP a
   * write-protected present page of file memory in a VM_UFFD_WP VMA leaves a
   * uffd-wp marker and wp markers stay (zap_install_uffd_wp_if_needed); with
   * ZAP_KEEP_POISON poison markers stay (a zap that does not zap cows).
   */
  zapRange(vma: Vma, start: number, end: number, details = 0): void {
    const pagesPerEntry = 2 ** (vma.pageShift - 12);
    const armWp = details & ZAP_KEEP_WP && !vma.isAnonymous && vma.flags & VM_UFFD_WP;
    this.pageTable.forEachInRange(start / 4096, end / 4096, (vpn, flags, pfn) => {
      if (flags & PTE_PRESENT) {
        if (!(flags & PTE_ZERO) && vpn % pagesPerEntry === 0) this.unmapFolio(pfn);
        if (armWp && flags & PTE_UFFD_WP) this.pageTable.set(vpn, PTE_MARKER_UFFD_WP, 0);
        else this.pageTable.clear(vpn);
        return;
      }
      if (details & ZAP_KEEP_WP && flags & PTE_MARKER_UFFD_WP) return;
      if (details & ZAP_KEEP_POISON && flags & PTE_MARKER_POISONED) return;
      this.pageTable.clear(vpn);
    });
  }

  /** Drops one mapping of a folio: its mapcount and the mapping's reference. */
  unmapFolio(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    this.memory.folioMapcount[pfn]!--;
    this.memory.putFolio(pfn);
  }

  /** Takes one mapping of a folio: a reference and a mapcount. */
  mapFolio(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    this.memory.folioMapcount[pfn]!++;
    this.memory.getFolio(pfn);
  }

  /**
   * Writes the entries for one VMA page at `address`: `pagesPerEntry` entries
   * with consecutive frames for a huge page, or one entry.
   */
  setEntries(address: number, pageShift: number, flags: number, pfn: number): void {
    const first = address / 4096;
    const count = 2 ** (pageShift - 12);
    const step = flags & PTE_PRESENT && !(flags & PTE_ZERO) ? 1 : 0;
    for (let i = 0; i < count; i++) this.pageTable.set(first + i, flags, pfn + i * step);
  }

  /** Replaces the flags of the entries of one VMA page (present or marker). */
  setEntryFlags(address: number, pageShift: number, flags: number): void {
    const first = address / 4096;
    const count = 2 ** (pageShift - 12);
    for (let i = 0; i < count; i++) this.pageTable.setFlags(first + i, flags);
  }
}
