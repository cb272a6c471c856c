/**
 * The journal of one hook call: what the hook did through the services it
 * was lent (folios it allocated, the state of every older folio before its
 * first touch, page-cache insertions and deletions), so the checker can
 * judge the call by its effects and, on a violation, undo all of them.
 *
 * Every record is O(1): membership is a Set or a Map keyed by pfn (a scan
 * of at most a few entries while a call has touched only a few, which is
 * every call on the fault path), so a hook that touches n folios costs O(n)
 * to journal, judge and roll back. The arrays grow and are reused across
 * calls.
 */
import type { Inode } from '../mem/pagecache.ts';
import { NO_INODE, PG_LOCKED, type PhysicalMemory } from '../mem/physmem.ts';

export class HookJournal {
  active = false;
  /** Folios the hook allocated (heads), in order, and as a set. */
  readonly allocated: number[] = [];
  allocatedCount = 0;
  private readonly allocatedSet = new PfnMap();
  /** Older folios the hook touched, with their state before the first touch. */
  readonly touchedPfn: number[] = [];
  readonly touchedRefcount: number[] = [];
  readonly touchedFlags: number[] = [];
  readonly touchedInode: number[] = [];
  readonly touchedIndex: number[] = [];
  touchedCount = 0;
  private readonly touchedSlotOf = new PfnMap();
  /** Page-cache insertions (true) and deletions (false), in order. */
  readonly cacheInode: Inode[] = [];
  readonly cachePgoff: number[] = [];
  readonly cachePfn: number[] = [];
  readonly cacheInserted: boolean[] = [];
  cacheCount = 0;
  /** Folios the hook inserted into a page cache (the last insertion of each wins). */
  private readonly insertedSet = new PfnMap();
  /** The first service call the guard refused, described. */
  misuse: string | null = null;
  /** The file the call is about: a hook may copy bytes into its folios. */
  inode: Inode | null = null;

  constructor(readonly memory: PhysicalMemory) {}

  begin(inode: Inode | null): void {
    this.active = true;
    this.clear();
    this.misuse = null;
    this.inode = inode;
  }

  private clear(): void {
    this.allocatedCount = 0;
    this.allocatedSet.clear();
    this.touchedCount = 0;
    this.touchedSlotOf.clear();
    this.cacheCount = 0;
    this.insertedSet.clear();
    // Drop the objects the last call named, so the journal keeps nothing alive.
    if (this.cacheInode.length > 0) this.cacheInode.length = 0;
    this.inode = null;
  }

  refuse(problem: string): void {
    this.misuse ??= problem;
  }

  noteAllocated(pfn: number): void {
    if (this.allocatedSet.has(pfn)) return;
    this.allocatedSet.set(pfn, 1);
    this.allocated[this.allocatedCount++] = pfn;
  }

  allocatedByHook(pfn: number): boolean {
    return this.allocatedSet.has(pfn);
  }

  /** Snapshots an older folio before the hook's first touch of it. */
  touch(pfn: number): void {
    if (this.allocatedSet.has(pfn) || this.touchedSlotOf.has(pfn)) return;
    const memory = this.memory;
    const slot = this.touchedCount++;
    this.touchedSlotOf.set(pfn, slot);
    this.touchedPfn[slot] = pfn;
    this.touchedRefcount[slot] = memory.folioRefcount[pfn]!;
    this.touchedFlags[slot] = memory.folioFlags[pfn]!;
    this.touchedInode[slot] = memory.folioInode[pfn]!;
    this.touchedIndex[slot] = memory.folioIndex[pfn]!;
  }

  noteCache(inode: Inode, pgoff: number, pfn: number, inserted: boolean): void {
    const slot = this.cacheCount++;
    this.cacheInode[slot] = inode;
    this.cachePgoff[slot] = pgoff;
    this.cachePfn[slot] = pfn;
    this.cacheInserted[slot] = inserted;
    if (inserted) this.insertedSet.set(pfn, 1);
  }

  insertedByHook(pfn: number): boolean {
    return this.insertedSet.has(pfn);
  }

  /** References on `pfn` before the call: 0 for a folio the hook allocated. */
  refcountBefore(pfn: number): number {
    if (this.allocatedSet.has(pfn)) return 0;
    const slot = this.touchedSlotOf.get(pfn);
    return slot >= 0 ? this.touchedRefcount[slot]! : this.memory.folioRefcount[pfn]!;
  }

  wasLocked(pfn: number): boolean {
    const slot = this.touchedSlotOf.get(pfn);
    return slot >= 0 && (this.touchedFlags[slot]! & PG_LOCKED) !== 0;
  }

  /**
   * The first effect of the call that outlives it, other than on `allowed`
   * (the folio the contract lets the hook hand over) or the insertions
   * `mayInsert` accepts, described; or null.
   */
  lastingChange(
    allowed: number,
    mayInsert: ((inode: Inode, pgoff: number) => boolean) | null = null,
  ): string | null {
    if (this.misuse !== null) return this.misuse;
    const memory = this.memory;
    for (let i = 0; i < this.cacheCount; i++) {
      const pfn = this.cachePfn[i]!;
      if (pfn === allowed) continue;
      const owner = this.cacheInode[i]!;
      const pgoff = this.cachePgoff[i]!;
      const holds = owner.cache.flagsAt(pgoff) !== 0 && owner.cache.valueAt(pgoff) === pfn;
      if (this.cacheInserted[i] && holds && mayInsert?.(owner, pgoff) !== true) {
        return `inserted folio ${pfn} into the page cache of ${owner.name}`;
      }
      if (!this.cacheInserted[i] && !holds)
        return `removed folio ${pfn} from the page cache of ${owner.name}`;
    }
    for (let i = 0; i < this.allocatedCount; i++) {
      const pfn = this.allocated[i]!;
      if (pfn === allowed || !memory.isAllocated(pfn)) continue;
      // A folio kept only by the page-cache insertion the contract allows is not a leak.
      if (mayInsert !== null && this.insertedSet.has(pfn) && this.cachedOnly(pfn)) continue;
      return `allocated folio ${pfn} and kept it`;
    }
    for (let i = 0; i < this.touchedCount; i++) {
      const pfn = this.touchedPfn[i]!;
      if (pfn === allowed) continue;
      const references = memory.folioRefcount[pfn]! - this.touchedRefcount[i]!;
      if (references > 0) return `kept ${references} reference(s) on folio ${pfn}`;
      if (references < 0) return `dropped ${-references} reference(s) on folio ${pfn}`;
      if ((memory.folioFlags[pfn]! ^ this.touchedFlags[i]!) & PG_LOCKED) {
        return `${memory.isLocked(pfn) ? 'left folio locked' : 'unlocked folio'} ${pfn}`;
      }
    }
    return null;
  }

  /** A folio the hook allocated whose one reference is the page cache's, unlocked. */
  private cachedOnly(pfn: number): boolean {
    const memory = this.memory;
    return memory.folioRefcount[pfn] === 1 && !memory.isLocked(pfn) && memory.folioInode[pfn] !== NO_INODE;
  }

  /** Puts back everything the journal recorded, newest first, and ends the call. */
  rollback(): void {
    const memory = this.memory;
    this.active = false;
    for (let i = this.cacheCount - 1; i >= 0; i--) {
      const cache = this.cacheInode[i]!.cache;
      const pgoff = this.cachePgoff[i]!;
      const pfn = this.cachePfn[i]!;
      if (this.cacheInserted[i]) {
        if (cache.flagsAt(pgoff) !== 0 && cache.valueAt(pgoff) === pfn) cache.clear(pgoff);
      } else if (cache.flagsAt(pgoff) === 0) {
        cache.set(pgoff, 1, pfn);
      }
    }
    for (let i = 0; i < this.touchedCount; i++) {
      const pfn = this.touchedPfn[i]!;
      memory.folioRefcount[pfn] = this.touchedRefcount[i]!;
      memory.folioFlags[pfn] = this.touchedFlags[i]!;
      memory.folioInode[pfn] = this.touchedInode[i]!;
      memory.folioIndex[pfn] = this.touchedIndex[i]!;
    }
    // A hook cannot map a folio, so what it allocated has no mappings: free it outright.
    for (let i = 0; i < this.allocatedCount; i++) {
      const pfn = this.allocated[i]!;
      if (!memory.isAllocated(pfn)) continue;
      memory.folioRefcount[pfn] = 1;
      memory.clearFlag(pfn, PG_LOCKED);
      memory.folioInode[pfn] = NO_INODE;
      memory.putFolio(pfn);
    }
    this.clear();
  }

  /** Ends the call, keeping what the hook did. */
  commit(): void {
    this.active = false;
    this.clear();
  }
}
/** Entries a `PfnMap` scans before it builds a Map. */
const SCAN_ENTRIES = 8;

/**
 * A map from pfn to a non-negative number, for one hook call: a scan of a
 * short array while it holds a few entries, a Map beyond. Clearing it costs
 * nothing while it is small (clearing a Map allocates a new table in V8, and
 * the journal is cleared twice per hook call, several calls per fault).
 */
class PfnMap {
  private readonly keys: number[] = [];
  private readonly values: number[] = [];
  private count = 0;
  private large: Map<number, number> | null = null;

  /** The value of `pfn`, or -1. */
  get(pfn: number): number {
    if (this.large !== null) return this.large.get(pfn) ?? -1;
    for (let i = 0; i < this.count; i++) if (this.keys[i] === pfn) return this.values[i]!;
    return -1;
  }

  has(pfn: number): boolean {
    return this.get(pfn) >= 0;
  }

  set(pfn: number, value: number): void {
    if (this.large !== null) {
      this.large.set(pfn, value);
      return;
    }
    for (let i = 0; i < this.count; i++) {
      if (this.keys[i] === pfn) {
        this.values[i] = value;
        return;
      }
    }
    if (this.count < SCAN_ENTRIES) {
      this.keys[this.count] = pfn;
      this.values[this.count++] = value;
      return;
    }
    this.large = new Map();
    for (let i = 0; i < this.count; i++) this.large.set(this.keys[i]!, this.values[i]!);
    this.large.set(pfn, value);
  }

  clear(): void {
    this.count = 0;
    this.large = null;
  }
}
