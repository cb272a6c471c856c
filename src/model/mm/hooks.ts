/**
 * The core's checks on what memory-type hooks hand back. A hook is code the
 * core does not own, so every answer is checked before the core acts on it:
 * the folio must be the right one (inode and index, inside the file), of the
 * VMA's page size, locked or not as the contract says, with exactly the
 * references the contract gives; a "noalloc" hook must not allocate; an
 * allocator must return a fresh, unowned, unlocked folio; filemap_add must
 * leave the folio in the right slot with the cache's reference. A throw is
 * caught like any other broken answer.
 *
 * To judge a hook by what it did and not only by what it returned, the
 * services lent to memory types (`watchServices`) keep a journal while a hook
 * runs: the folios it allocated, the state of every older folio before it
 * first touched it, its page-cache insertions and deletions. A violation
 * becomes -EFAULT (SIGBUS for a fault, false for can_userfault) and one
 * warning naming the type and the hook, and the journal is rolled back, so
 * the core's state is exactly what it was before the call. The guard also
 * refuses the two misuses it could not undo: dropping the last reference of a
 * folio the hook did not allocate, and touching a frame that is not a folio.
 * Bytes a hook copies into folios are not rolled back.
 */
import { EFAULT, errnoName } from '../../uapi/errno.ts';
import { filemapLookup, type Inode } from '../mem/pagecache.ts';
import { NO_INODE, PG_ALLOCATED, PG_LOCKED, type PhysicalMemory } from '../mem/physmem.ts';
import type { MemoryType, MemoryTypeServices, VmaView, VmUffdOps } from './memtype.ts';

/** The hooks the core calls through the checker, by their kernel names. */
export type HookName = 'can_userfault' | 'get_folio_noalloc' | 'alloc_folio' | 'filemap_add' | 'fault';

/** Grows-only parallel arrays, reused by every hook call (no allocation on the fault path). */
class HookJournal {
  active = false;
  /** Folios the hook allocated (heads). */
  allocated: number[] = [];
  allocatedCount = 0;
  /** Older folios the hook touched, with their state before the first touch. */
  touchedPfn: number[] = [];
  touchedRefcount: number[] = [];
  touchedFlags: number[] = [];
  touchedInode: number[] = [];
  touchedIndex: number[] = [];
  touchedCount = 0;
  /** Page-cache insertions (true) and deletions (false), in order. */
  cacheInode: Inode[] = [];
  cachePgoff: number[] = [];
  cachePfn: number[] = [];
  cacheInserted: boolean[] = [];
  cacheCount = 0;
  /** The first service call the guard refused, described. */
  misuse: string | null = null;
  /** The VMA and inode fields a hook could write through the objects it is handed. */
  vma: VmaView | null = null;
  vmaStart = 0;
  vmaEnd = 0;
  vmaFlags = 0;
  vmaPgoff = 0;
  inode: Inode | null = null;
  inodeSizeBytes = 0;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function describeResult(result: unknown): string {
  if (typeof result === 'number' && Number.isInteger(result) && result < 0 && result > -4096) {
    return errnoName(-result);
  }
  return String(result);
}

export class HookChecker {
  private readonly warned = new Set<string>();
  readonly warnings: string[] = [];
  /** The warning of the last rejected hook call, for the reason of the errno it became. */
  lastViolation: string | null = null;
  /** Told of every hook call (the conformance suite records which hooks a case exercised). */
  onHook: ((type: MemoryType, hook: HookName) => void) | null = null;
  private readonly journal = new HookJournal();
  /** Who asked get_folio_noalloc (UFFDIO_CONTINUE, the fault path), for its warning. */
  private caller: string | null = null;

  constructor(
    readonly memory: PhysicalMemory,
    private readonly emitWarning: (message: string) => void = () => {},
  ) {}

  /** Records one warning per (type, hook, problem). */
  violation(type: MemoryType, hook: string, problem: string): void {
    const message = `faultline: memory type '${type.name}' hook ${hook}: ${problem}`;
    this.lastViolation = message;
    const key = `${type.name}.${hook}: ${problem}`;
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.warnings.push(message);
    this.emitWarning(message);
  }

  // --- the hooks, called through the checker ------------------------------

  /** can_userfault: a throw or a lasting side effect is a violation and answers false. */
  canUserfault(type: MemoryType, vma: VmaView, call: () => boolean): boolean {
    const hook = 'can_userfault';
    this.begin(type, hook, vma, vma.inode);
    let result: boolean;
    try {
      result = call();
    } catch (error) {
      this.reject(type, hook, `threw: ${messageOf(error)}`);
      return false;
    }
    const change = this.lastingChange(-1);
    if (change !== null) {
      this.reject(type, hook, change);
      return false;
    }
    this.end();
    return result === true;
  }

  /**
   * get_folio_noalloc: -ENOENT and other errnos pass through when the hook
   * changed nothing; a folio must be the one cached at `pgoff`, of the VMA's
   * page size, locked by this call, with one new reference for the caller,
   * and the call must not have allocated.
   */
  getFolioNoalloc(
    type: MemoryType,
    caller: string,
    inode: Inode,
    pgoff: number,
    pageShift: number,
    call: () => number,
  ): number {
    // The hook's label names the caller; it is built only for a warning.
    const hook = 'get_folio_noalloc';
    this.caller = caller;
    this.begin(type, hook, null, inode);
    let result: number;
    try {
      result = call();
    } catch (error) {
      return this.reject(type, hook, `threw: ${messageOf(error)}`);
    }
    if (this.journal.allocatedCount > 0) return this.reject(type, hook, 'allocated a folio');
    if (typeof result === 'number' && result < 0) return this.passError(type, hook, result);
    const problem =
      this.cachedFolioProblem(inode, pgoff, pageShift, result, true) ??
      this.referenceProblem(result, 1, true, 'for the caller') ??
      this.lastingChange(result);
    if (problem !== null) return this.reject(type, hook, problem);
    this.end();
    return result;
  }

  /**
   * alloc_folio: errnos pass through when the hook changed nothing; a folio
   * must be one this call allocated (and the only one it kept), of the VMA's
   * page size, with one reference, unlocked and owned by no file.
   */
  allocFolio(type: MemoryType, vma: VmaView, call: () => number): number {
    return this.checkAllocFolio(type, vma, call, null, null, 0);
  }

  /**
   * `allocFolio` of `ops.allocFolio` (`allocate`) at `address`, without a
   * closure: COPY calls it once per page.
   */
  allocFolioAt(
    type: MemoryType,
    vma: VmaView,
    ops: VmUffdOps,
    allocate: NonNullable<VmUffdOps['allocFolio']>,
    address: number,
  ): number {
    return this.checkAllocFolio(type, vma, null, ops, allocate, address);
  }

  private checkAllocFolio(
    type: MemoryType,
    vma: VmaView,
    call: (() => number) | null,
    ops: VmUffdOps | null,
    allocate: VmUffdOps['allocFolio'] | null,
    address: number,
  ): number {
    const hook = 'alloc_folio';
    this.begin(type, hook, vma, vma.inode);
    let result: number;
    try {
      result = call !== null ? call() : allocate!.call(ops, vma, address);
    } catch (error) {
      return this.reject(type, hook, `threw: ${messageOf(error)}`);
    }
    if (typeof result === 'number' && result < 0) return this.passError(type, hook, result);
    const problem = this.freshFolioProblem(vma, result) ?? this.lastingChange(result);
    if (problem !== null) return this.reject(type, hook, problem);
    this.end();
    return result;
  }

  /**
   * filemap_add of the core's locked folio `pfn`: 0 must mean the folio is now
   * cached by the VMA's file at the folio-aligned index of `address`, with the
   * cache's one reference, still locked; an errno must mean nothing changed.
   */
  filemapAdd(type: MemoryType, pfn: number, vma: VmaView, address: number, call: () => number): number {
    const hook = 'filemap_add';
    const inode = vma.inode;
    if (inode === null) throw new Error('HookChecker.filemapAdd: the VMA maps no file');
    this.begin(type, hook, vma, inode);
    let result: number;
    try {
      result = call();
    } catch (error) {
      return this.reject(type, hook, `threw: ${messageOf(error)}`);
    }
    if (result !== 0) {
      if (typeof result !== 'number' || !Number.isInteger(result) || result > 0) {
        return this.reject(type, hook, `returned ${String(result)}, neither 0 nor -errno`);
      }
      return this.passError(type, hook, result);
    }
    const pages = 2 ** (vma.pageShift - 12);
    const pgoff = vma.pgoff + (address - vma.start) / 4096;
    const head = pgoff - (pgoff % pages);
    const problem =
      this.addedFolioProblem(inode, head, pfn) ??
      this.referenceProblem(pfn, 1, false, 'for the page cache') ??
      (this.memory.isLocked(pfn) ? null : `unlocked folio ${pfn}, which the core holds locked`) ??
      this.lastingChange(pfn);
    if (problem !== null) return this.reject(type, hook, problem);
    this.end();
    return 0;
  }

  /**
   * The ordinary fault (vm_ops->fault): FAULT_* codes pass through when the
   * hook changed nothing; a folio must be the one cached at `pgoff` (inserted
   * by this call or already there), of the VMA's page size, unlocked, with one
   * new reference for the caller (and the cache's, when this call inserted it).
   */
  fault(type: MemoryType, inode: Inode, pgoff: number, pageShift: number, call: () => number): number {
    const hook = 'fault';
    this.begin(type, hook, null, inode);
    let result: number;
    try {
      result = call();
    } catch (error) {
      return this.reject(type, hook, `threw: ${messageOf(error)}`);
    }
    if (typeof result === 'number' && result < 0) return this.passError(type, hook, result);
    const inserted = this.insertedByHook(result);
    const problem =
      this.cachedFolioProblem(inode, pgoff, pageShift, result, false) ??
      this.referenceProblem(
        result,
        inserted ? 2 : 1,
        true,
        inserted ? 'for the caller and the cache' : 'for the caller',
      ) ??
      this.lastingChange(result);
    if (problem !== null) return this.reject(type, hook, problem);
    this.end();
    return result;
  }

  // --- the journaled services -------------------------------------------

  /**
   * The services lent to memory types, journaled while a hook runs so the
   * core can judge and undo what the hook did. Outside hook calls (a type's
   * own write path) they are the plain services.
   */
  watchServices(services: MemoryTypeServices): MemoryTypeServices {
    const journal = this.journal;
    const memory = this.memory;
    return {
      ...services,
      allocFolio: (order, options) => {
        const pfn = services.allocFolio(order, options);
        if (journal.active && pfn >= 0 && !this.allocatedByHook(pfn)) {
          journal.allocated[journal.allocatedCount++] = pfn;
        }
        return pfn;
      },
      getFolio: (pfn) => {
        if (journal.active && !this.watchFolio(pfn, 'took a reference on')) return;
        services.getFolio(pfn);
      },
      putFolio: (pfn) => {
        if (journal.active) {
          if (!this.watchFolio(pfn, 'dropped a reference on')) return;
          if (memory.folioRefcount[pfn]! <= 1 && !this.allocatedByHook(pfn)) {
            this.refuse(`dropped the last reference to folio ${pfn}, which it did not hold`);
            return;
          }
        }
        services.putFolio(pfn);
      },
      lockFolio: (pfn) => {
        if (journal.active && !this.watchFolio(pfn, 'locked')) return;
        services.lockFolio(pfn);
      },
      unlockFolio: (pfn) => {
        if (journal.active && !this.watchFolio(pfn, 'unlocked')) return;
        services.unlockFolio(pfn);
      },
      filemapInsert: (inode, pfn, pgoff) => {
        if (journal.active && !this.watchFolio(pfn, 'inserted')) return false;
        const inserted = services.filemapInsert(inode, pfn, pgoff);
        if (journal.active && inserted) this.noteCache(inode, pgoff, pfn, true);
        return inserted;
      },
      filemapDelete: (inode, pgoff) => {
        if (journal.active) {
          if (inode.cache.flagsAt(pgoff) === 0) return;
          const pfn = inode.cache.valueAt(pgoff);
          this.touch(pfn);
          if (memory.folioRefcount[pfn]! <= 1 && !this.allocatedByHook(pfn)) {
            this.refuse(`deleted folio ${pfn} from the page cache, which held its last reference`);
            return;
          }
          this.noteCache(inode, pgoff, pfn, false);
        }
        services.filemapDelete(inode, pgoff);
      },
    };
  }

  // --- the journal --------------------------------------------------------

  private begin(type: MemoryType, hook: HookName, vma: VmaView | null, inode: Inode | null): void {
    const journal = this.journal;
    if (journal.active) throw new Error('HookChecker: a hook call began inside another');
    if (hook !== 'get_folio_noalloc') this.caller = null;
    this.onHook?.(type, hook);
    journal.active = true;
    journal.allocatedCount = 0;
    journal.touchedCount = 0;
    journal.cacheCount = 0;
    journal.misuse = null;
    journal.vma = vma;
    if (vma !== null) {
      journal.vmaStart = vma.start;
      journal.vmaEnd = vma.end;
      journal.vmaFlags = vma.flags;
      journal.vmaPgoff = vma.pgoff;
    }
    journal.inode = inode;
    journal.inodeSizeBytes = inode?.sizeBytes ?? 0;
    this.lastViolation = null;
  }

  private end(): void {
    this.journal.active = false;
  }

  /** An errno answer: it passes through when the hook left nothing behind. */
  private passError(type: MemoryType, hook: HookName, result: number): number {
    const change = this.lastingChange(-1);
    if (change !== null) return this.reject(type, hook, `returned ${describeResult(result)} but ${change}`);
    this.end();
    return result;
  }

  /** Ends the call, undoes what the hook did, warns, and answers -EFAULT. */
  private reject(type: MemoryType, hook: HookName, problem: string): number {
    this.end();
    this.rollback();
    this.violation(type, this.caller === null ? hook : `${hook} (from ${this.caller})`, problem);
    return -EFAULT;
  }

  private refuse(problem: string): void {
    this.journal.misuse ??= problem;
  }

  /** Checks `pfn` is a live folio before a service acts on it, and snapshots it. */
  private watchFolio(pfn: number, verb: string): boolean {
    const memory = this.memory;
    const live =
      Number.isInteger(pfn) &&
      pfn > 0 &&
      pfn < memory.folioFlags.length &&
      (memory.folioFlags[pfn]! & PG_ALLOCATED) !== 0 &&
      memory.folioRefcount[pfn]! > 0;
    if (!live) {
      this.refuse(`${verb} ${String(pfn)}, which is not a folio`);
      return false;
    }
    this.touch(pfn);
    return true;
  }

  private touch(pfn: number): void {
    const journal = this.journal;
    if (this.allocatedByHook(pfn) || this.touchedSlot(pfn) >= 0) return;
    const memory = this.memory;
    const slot = journal.touchedCount++;
    journal.touchedPfn[slot] = pfn;
    journal.touchedRefcount[slot] = memory.folioRefcount[pfn]!;
    journal.touchedFlags[slot] = memory.folioFlags[pfn]!;
    journal.touchedInode[slot] = memory.folioInode[pfn]!;
    journal.touchedIndex[slot] = memory.folioIndex[pfn]!;
  }

  private noteCache(inode: Inode, pgoff: number, pfn: number, inserted: boolean): void {
    const journal = this.journal;
    const slot = journal.cacheCount++;
    journal.cacheInode[slot] = inode;
    journal.cachePgoff[slot] = pgoff;
    journal.cachePfn[slot] = pfn;
    journal.cacheInserted[slot] = inserted;
  }

  private allocatedByHook(pfn: number): boolean {
    const journal = this.journal;
    for (let i = 0; i < journal.allocatedCount; i++) if (journal.allocated[i] === pfn) return true;
    return false;
  }

  private touchedSlot(pfn: number): number {
    const journal = this.journal;
    for (let i = 0; i < journal.touchedCount; i++) if (journal.touchedPfn[i] === pfn) return i;
    return -1;
  }

  private insertedByHook(pfn: number): boolean {
    const journal = this.journal;
    for (let i = 0; i < journal.cacheCount; i++) {
      if (journal.cachePfn[i] === pfn && journal.cacheInserted[i]) return true;
    }
    return false;
  }

  /** References on `pfn` before the call: 0 for a folio the hook allocated. */
  private refcountBefore(pfn: number): number {
    if (this.allocatedByHook(pfn)) return 0;
    const slot = this.touchedSlot(pfn);
    return slot >= 0 ? this.journal.touchedRefcount[slot]! : this.memory.folioRefcount[pfn]!;
  }

  /**
   * The first effect of the call that outlives it, other than on `allowed`
   * (the folio the contract lets the hook hand over), described; or null.
   */
  private lastingChange(allowed: number): string | null {
    const journal = this.journal;
    const memory = this.memory;
    if (journal.misuse !== null) return journal.misuse;
    const vma = journal.vma;
    if (
      vma !== null &&
      (vma.start !== journal.vmaStart ||
        vma.end !== journal.vmaEnd ||
        vma.flags !== journal.vmaFlags ||
        vma.pgoff !== journal.vmaPgoff)
    ) {
      return 'changed the VMA it was shown';
    }
    const inode = journal.inode;
    if (inode !== null && inode.sizeBytes !== journal.inodeSizeBytes)
      return `changed the size of ${inode.name}`;
    for (let i = 0; i < journal.allocatedCount; i++) {
      const pfn = journal.allocated[i]!;
      if (pfn !== allowed && memory.isAllocated(pfn)) return `allocated folio ${pfn} and kept it`;
    }
    for (let i = 0; i < journal.cacheCount; i++) {
      const pfn = journal.cachePfn[i]!;
      if (pfn === allowed) continue;
      const cache = journal.cacheInode[i]!.cache;
      const pgoff = journal.cachePgoff[i]!;
      const holds = cache.flagsAt(pgoff) !== 0 && cache.valueAt(pgoff) === pfn;
      const name = journal.cacheInode[i]!.name;
      if (journal.cacheInserted[i] && holds) return `inserted folio ${pfn} into the page cache of ${name}`;
      if (!journal.cacheInserted[i] && !holds) return `removed folio ${pfn} from the page cache of ${name}`;
    }
    for (let i = 0; i < journal.touchedCount; i++) {
      const pfn = journal.touchedPfn[i]!;
      if (pfn === allowed) continue;
      const references = memory.folioRefcount[pfn]! - journal.touchedRefcount[i]!;
      if (references > 0) return `kept ${references} reference(s) on folio ${pfn}`;
      if (references < 0) return `dropped ${-references} reference(s) on folio ${pfn}`;
      if ((memory.folioFlags[pfn]! ^ journal.touchedFlags[i]!) & PG_LOCKED) {
        return `${memory.isLocked(pfn) ? 'left folio locked' : 'unlocked folio'} ${pfn}`;
      }
    }
    return null;
  }

  /** Puts back everything the journal recorded, newest first. */
  private rollback(): void {
    const journal = this.journal;
    const memory = this.memory;
    for (let i = journal.cacheCount - 1; i >= 0; i--) {
      const cache = journal.cacheInode[i]!.cache;
      const pgoff = journal.cachePgoff[i]!;
      const pfn = journal.cachePfn[i]!;
      if (journal.cacheInserted[i]) {
        if (cache.flagsAt(pgoff) !== 0 && cache.valueAt(pgoff) === pfn) cache.clear(pgoff);
      } else if (cache.flagsAt(pgoff) === 0) {
        cache.set(pgoff, 1, pfn);
      }
    }
    for (let i = 0; i < journal.touchedCount; i++) {
      const pfn = journal.touchedPfn[i]!;
      memory.folioRefcount[pfn] = journal.touchedRefcount[i]!;
      memory.folioFlags[pfn] = journal.touchedFlags[i]!;
      memory.folioInode[pfn] = journal.touchedInode[i]!;
      memory.folioIndex[pfn] = journal.touchedIndex[i]!;
    }
    // A hook cannot map a folio, so what it allocated has no mappings: free it outright.
    for (let i = 0; i < journal.allocatedCount; i++) {
      const pfn = journal.allocated[i]!;
      if (!memory.isAllocated(pfn)) continue;
      memory.folioRefcount[pfn] = 1;
      memory.clearFlag(pfn, PG_LOCKED);
      memory.folioInode[pfn] = NO_INODE;
      memory.putFolio(pfn);
    }
    journal.allocatedCount = 0;
    journal.touchedCount = 0;
    journal.cacheCount = 0;
  }

  // --- what a returned folio must be --------------------------------------

  private notAFolio(pfn: unknown): string | null {
    const memory = this.memory;
    if (typeof pfn !== 'number' || !Number.isInteger(pfn) || pfn <= 0 || pfn >= memory.folioFlags.length) {
      return `returned ${String(pfn)}, which is not a folio`;
    }
    if (!memory.isAllocated(pfn) || memory.folioRefcount[pfn]! <= 0) {
      return `returned folio ${pfn}, which is free`;
    }
    return null;
  }

  /** A folio said to cache `pgoff` of `inode` at `pageShift`: the right one, locked as asked. */
  private cachedFolioProblem(
    inode: Inode,
    pgoff: number,
    pageShift: number,
    pfn: number,
    mustBeLocked: boolean,
  ): string | null {
    const invalid = this.notAFolio(pfn);
    if (invalid !== null) return invalid;
    const memory = this.memory;
    const owner = memory.folioInode[pfn]!;
    if (owner !== inode.id) {
      return owner === NO_INODE
        ? `returned folio ${pfn}, which no page cache holds`
        : `returned folio ${pfn} of another file (inode ${owner})`;
    }
    const index = memory.folioIndex[pfn]!;
    if (index * 4096 >= inode.sizeBytes) {
      return `returned folio ${pfn} at index ${index}, beyond the end of the file (${inode.sizeBytes} bytes)`;
    }
    const pages = 2 ** (pageShift - 12);
    const head = pgoff - (pgoff % pages);
    if (index !== head) return `returned folio ${pfn} at index ${index}, wanted ${head}`;
    if (filemapLookup(inode, head) !== pfn)
      return `returned folio ${pfn}, which the page cache does not hold`;
    if (memory.folioOrder[pfn] !== pageShift - 12) {
      return `returned folio ${pfn} of order ${memory.folioOrder[pfn]}, the VMA maps order ${pageShift - 12}`;
    }
    const locked = memory.isLocked(pfn);
    if (mustBeLocked && !locked) return `returned folio ${pfn} unlocked`;
    if (mustBeLocked && this.wasLocked(pfn)) return `returned folio ${pfn}, which was already locked`;
    if (!mustBeLocked && locked) return `returned folio ${pfn} locked`;
    return null;
  }

  private wasLocked(pfn: number): boolean {
    const slot = this.touchedSlot(pfn);
    return slot >= 0 && (this.journal.touchedFlags[slot]! & PG_LOCKED) !== 0;
  }

  /** The call must have added exactly `wanted` references to `pfn` (`returned`: the hook returned it). */
  private referenceProblem(pfn: number, wanted: number, returned: boolean, whose: string): string | null {
    const added = this.memory.folioRefcount[pfn]! - this.refcountBefore(pfn);
    if (added === wanted) return null;
    const subject = `${returned ? 'returned' : 'left'} folio ${pfn}`;
    if (added === 0) return `${subject} without a reference ${whose}`;
    return `${subject} with ${added} new reference(s), wanted ${wanted} ${whose}`;
  }

  /** What alloc_folio hands over: fresh from this call, one reference, unlocked, unowned, the VMA's size. */
  private freshFolioProblem(vma: VmaView, pfn: number): string | null {
    const invalid = this.notAFolio(pfn);
    if (invalid !== null) return invalid;
    const memory = this.memory;
    if (!this.allocatedByHook(pfn)) return `returned folio ${pfn}, which it did not allocate`;
    const order = vma.pageShift - 12;
    if (memory.folioOrder[pfn] !== order) {
      return `returned folio ${pfn} of order ${memory.folioOrder[pfn]}, the VMA maps order ${order}`;
    }
    if (memory.folioRefcount[pfn] !== 1) {
      return `returned folio ${pfn} with ${memory.folioRefcount[pfn]} references, wanted 1`;
    }
    if (memory.isLocked(pfn)) return `returned folio ${pfn} locked`;
    if (memory.folioInode[pfn] !== NO_INODE) {
      return `returned folio ${pfn} already owned by a page cache (inode ${memory.folioInode[pfn]})`;
    }
    return null;
  }

  /** After filemap_add returned 0: `pfn` must be cached by `inode` at `head`. */
  private addedFolioProblem(inode: Inode, head: number, pfn: number): string | null {
    const memory = this.memory;
    const cached = filemapLookup(inode, head);
    if (cached === pfn && memory.folioInode[pfn] === inode.id && memory.folioIndex[pfn] === head) return null;
    const owner = memory.folioInode[pfn]!;
    if (owner === NO_INODE) return `returned 0 without adding folio ${pfn} to the page cache`;
    if (owner !== inode.id) return `added folio ${pfn} to the page cache of another file (inode ${owner})`;
    return `added folio ${pfn} at index ${memory.folioIndex[pfn]}, wanted ${head}`;
  }
}

/**
 * Calls a type's get_folio_noalloc through the checker (see
 * `HookChecker.getFolioNoalloc`); `caller` names who asked, for the warning.
 */
export function checkNoallocFolio(
  checker: HookChecker,
  type: MemoryType,
  caller: string,
  inode: Inode,
  pgoff: number,
  pageShift: number,
  call: () => number,
): number {
  return checker.getFolioNoalloc(type, caller, inode, pgoff, pageShift, call);
}
