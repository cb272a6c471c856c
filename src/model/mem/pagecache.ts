/**
 * Inodes and their page cache. A page cache maps a file offset in 4 KiB pages
 * (pgoff) to the head pfn of the folio caching it; a large folio sits at its
 * aligned head offset only, as the kernel's multi-index xarray entries do.
 */
import type { MemoryType } from '../mm/memtype.ts';
import type { Vma } from '../mm/vma.ts';
import { PG_UPTODATE, type PhysicalMemory } from './physmem.ts';
import { SparseArray } from './sparse.ts';

export class Inode {
  readonly cache = new SparseArray();
  /** VMAs mapping this inode (the kernel's i_mmap), for hole punching. */
  readonly mappings = new Set<Vma>();
  /** Open file descriptions and VMAs holding the inode. */
  references = 0;
  /** State owned by the memory type (its "inode info"). */
  typeState: unknown = undefined;

  constructor(
    readonly id: number,
    readonly memoryType: MemoryType,
    readonly name: string,
    /** log2 of the folio size this inode caches: 12, or 21 for 2 MiB hugetlb. */
    readonly pageShift: number,
    public sizeBytes: number,
  ) {}

  get pageSize(): number {
    return 2 ** this.pageShift;
  }

  /** Folio pages per cached folio, in 4 KiB units. */
  get pagesPerFolio(): number {
    return 2 ** (this.pageShift - 12);
  }
}

/** The folio caching `pgoff` (aligned down to the inode's folio size), or -1. */
export function filemapLookup(inode: Inode, pgoff: number): number {
  const head = pgoff - (pgoff % inode.pagesPerFolio);
  return inode.cache.flagsAt(head) === 0 ? -1 : inode.cache.valueAt(head);
}

/**
 * Inserts a folio at `pgoff` (filemap_add_folio). The cache takes its own
 * reference and becomes the folio's owner. Returns false when the slot is
 * already occupied.
 */
export function filemapInsert(memory: PhysicalMemory, inode: Inode, pfn: number, pgoff: number): boolean {
  if (inode.cache.flagsAt(pgoff) !== 0) return false;
  inode.cache.set(pgoff, 1, pfn);
  memory.getFolio(pfn);
  memory.folioInode[pfn] = inode.id;
  memory.folioIndex[pfn] = pgoff;
  // Every page the model caches holds valid data (zeroes or what was written).
  memory.setFlag(pfn, PG_UPTODATE);
  return true;
}

/** Removes the folio at `pgoff` and drops the cache's reference. */
export function filemapDelete(memory: PhysicalMemory, inode: Inode, pgoff: number): void {
  if (inode.cache.flagsAt(pgoff) === 0) return;
  const pfn = inode.cache.valueAt(pgoff);
  inode.cache.clear(pgoff);
  memory.folioInode[pfn] = -1;
  memory.putFolio(pfn);
}
