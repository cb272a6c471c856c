/**
 * The services lent to memory types. While a hook runs they are journaled
 * so the core can judge and undo what the hook did (see hook-journal.ts);
 * the guard refuses the misuses it could not undo: dropping the last
 * reference of a folio the hook did not allocate, acting on a frame that is
 * not a folio, copying bytes into a folio that is not the call's own, and
 * naming a file by anything but a view the core showed it.
 *
 * Outside hook calls a type has no business changing folios or page caches
 * (a timer or a promise of the type running later): those services are
 * refused and reported; lookups and `createInode` (a device's ioctl makes
 * files) stay available.
 */
import { EFAULT, KernelError } from '../../uapi/errno.ts';
import type { Inode } from '../mem/pagecache.ts';
import { NO_INODE, PG_ALLOCATED } from '../mem/physmem.ts';
import { describeValue } from './hook-checks.ts';
import type { HookJournal } from './hook-journal.ts';
import { type HookViews, inodeOfView } from './hook-views.ts';
import type { MemoryType, MemoryTypeServices } from './memtype.ts';

/** The kernel's own services, on its live objects; memory types get them through `lendServices`. */
export interface CoreServices {
  allocFolio(order: number, options?: { hugetlb?: boolean }): number;
  getFolio(pfn: number): void;
  putFolio(pfn: number): void;
  lockFolio(pfn: number): void;
  unlockFolio(pfn: number): void;
  filemapLookup(inode: Inode, pgoff: number): number;
  filemapInsert(inode: Inode, pfn: number, pgoff: number): boolean;
  filemapDelete(inode: Inode, pgoff: number): void;
  folioIndex(pfn: number): number;
  copyIntoFolio(pfn: number, offset: number, source: Uint8Array, sourceOffset: number, length: number): void;
  /** A new inode, or -EFAULT when the type's initInode broke its contract. */
  createInode(type: MemoryType, name: string, pageShift: number, sizeBytes: number): Inode | number;
  kernelOption(name: string): unknown;
}

/** Services lent to one memory type, and the binding to the type once its factory returned it. */
export interface LentServices {
  readonly services: MemoryTypeServices;
  bind(type: MemoryType): void;
}

/** Reports a service call made outside any hook call, naming the type. */
export type OutsideCall = (type: MemoryType | null, problem: string) => void;

/** What the services are lent with: the journal, the kernel's own services, and how to report. */
export interface LendContext {
  readonly journal: HookJournal;
  /** The views the types are shown (a device's new file is shown as one). */
  readonly views: HookViews;
  readonly core: CoreServices;
  /** Reports a state-changing call made outside any hook call. */
  readonly outside: OutsideCall;
  /** The reason of the last violation (a device's ioctl fails with it). */
  readonly violation: () => string;
}

/**
 * The checks every guarded service makes before it acts: inside a hook
 * call, on a live folio, on a file the core showed the type.
 */
class ServiceGuard {
  /** The type the services were lent to, once its factory returned. */
  owner: MemoryType | null = null;

  constructor(readonly lend: LendContext) {}

  /** Whether a state-changing service may run now: inside a hook call, or refused and reported. */
  inHook(call: string): boolean {
    if (this.lend.journal.active) return true;
    this.lend.outside(
      this.owner,
      `called ${call} outside any hook call (from a timer or a promise?): refused`,
    );
    return false;
  }

  /** Checks `pfn` is a live folio before a service acts on it, and snapshots it. */
  watchFolio(pfn: number, verb: string): boolean {
    const { journal } = this.lend;
    const memory = journal.memory;
    const live =
      typeof pfn === 'number' &&
      Number.isInteger(pfn) &&
      pfn > 0 &&
      pfn < memory.folioFlags.length &&
      (memory.folioFlags[pfn]! & PG_ALLOCATED) !== 0 &&
      memory.folioRefcount[pfn]! > 0;
    if (!live) {
      journal.refuse(`${verb} ${describeValue(pfn)}, which is not a folio`);
      return false;
    }
    journal.touch(pfn);
    return true;
  }

  /** The inode behind a view; anything else is refused. */
  inodeOf(view: unknown): Inode | null {
    const inode = inodeOfView(view);
    if (inode === null) this.lend.journal.refuse('named a file by an object the core did not show it');
    return inode;
  }
}

type FolioServices = Pick<
  MemoryTypeServices,
  'allocFolio' | 'getFolio' | 'putFolio' | 'lockFolio' | 'unlockFolio' | 'folioIndex'
>;
type CacheServices = Pick<MemoryTypeServices, 'filemapLookup' | 'filemapInsert' | 'filemapDelete'>;
type FileServices = Pick<MemoryTypeServices, 'copyIntoFolio' | 'createInode' | 'kernelOption'>;

export function lendServices(lend: LendContext): LentServices {
  const guard = new ServiceGuard(lend);
  // Object.assign, not a spread: with the spread, ~1.5 KB of every call's
  // objects outlived it through young-generation GCs (measured with
  // gc({ type: 'minor' }) around a loop of calls; none with Object.assign),
  // and explore boots a kernel, four calls, per schedule.
  const services: MemoryTypeServices = Object.assign(
    {},
    folioServices(guard),
    cacheServices(guard),
    fileServices(guard),
  );
  return {
    services,
    bind(type) {
      guard.owner = type;
    },
  };
}

/** Allocation, references and locks: journaled, and never the last reference of a folio not the hook's. */
function folioServices(guard: ServiceGuard): FolioServices {
  const { journal, core } = guard.lend;
  const memory = journal.memory;
  return {
    allocFolio: (order, options) => {
      if (!guard.inHook(`allocFolio(${describeValue(order)})`)) return -1;
      if (!Number.isInteger(order) || order < 0 || order > 18) return -1;
      const pfn = core.allocFolio(order, options?.hugetlb === true ? { hugetlb: true } : undefined);
      if (pfn >= 0) journal.noteAllocated(pfn);
      return pfn;
    },
    getFolio: (pfn) => {
      if (!guard.inHook(`getFolio(${describeValue(pfn)})`) || !guard.watchFolio(pfn, 'took a reference on'))
        return;
      core.getFolio(pfn);
    },
    putFolio: (pfn) => {
      if (
        !guard.inHook(`putFolio(${describeValue(pfn)})`) ||
        !guard.watchFolio(pfn, 'dropped a reference on')
      )
        return;
      if (memory.folioRefcount[pfn]! <= 1 && !journal.allocatedByHook(pfn)) {
        journal.refuse(`dropped the last reference to folio ${pfn}, which it did not hold`);
        return;
      }
      core.putFolio(pfn);
    },
    lockFolio: (pfn) => {
      if (!guard.inHook(`lockFolio(${describeValue(pfn)})`) || !guard.watchFolio(pfn, 'locked')) return;
      core.lockFolio(pfn);
    },
    unlockFolio: (pfn) => {
      if (!guard.inHook(`unlockFolio(${describeValue(pfn)})`) || !guard.watchFolio(pfn, 'unlocked')) return;
      core.unlockFolio(pfn);
    },
    folioIndex: (pfn) => core.folioIndex(pfn),
  };
}

/** The type's page cache, named by views: insertions and deletions journaled. */
function cacheServices(guard: ServiceGuard): CacheServices {
  const { journal, core } = guard.lend;
  const memory = journal.memory;
  return {
    filemapLookup: (view, pgoff) => {
      const inode = inodeOfView(view);
      return inode === null || !Number.isInteger(pgoff) || pgoff < 0 ? -1 : core.filemapLookup(inode, pgoff);
    },
    filemapInsert: (view, pfn, pgoff) => {
      if (!guard.inHook(`filemapInsert(${describeValue(pfn)})`)) return false;
      const inode = guard.inodeOf(view);
      if (inode === null || !guard.watchFolio(pfn, 'inserted')) return false;
      if (!Number.isInteger(pgoff) || pgoff < 0) {
        journal.refuse(`inserted folio ${pfn} at ${describeValue(pgoff)}, which is not a file index`);
        return false;
      }
      const inserted = core.filemapInsert(inode, pfn, pgoff);
      if (inserted) journal.noteCache(inode, pgoff, pfn, true);
      return inserted;
    },
    filemapDelete: (view, pgoff) => {
      if (!guard.inHook(`filemapDelete(${describeValue(pgoff)})`)) return;
      const inode = guard.inodeOf(view);
      if (inode === null || !Number.isInteger(pgoff) || pgoff < 0 || inode.cache.flagsAt(pgoff) === 0) return;
      const pfn = inode.cache.valueAt(pgoff);
      journal.touch(pfn);
      if (memory.folioRefcount[pfn]! <= 1 && !journal.allocatedByHook(pfn)) {
        journal.refuse(`deleted folio ${pfn} from the page cache, which held its last reference`);
        return;
      }
      journal.noteCache(inode, pgoff, pfn, false);
      core.filemapDelete(inode, pgoff);
    },
  };
}

/** Bytes into the call's own folios, new files (outside hook calls only), the kernel's options. */
function fileServices(guard: ServiceGuard): FileServices {
  const { journal, core, violation, views } = guard.lend;
  const memory = journal.memory;
  return {
    copyIntoFolio: (pfn, offset, source, sourceOffset, length) => {
      if (!guard.inHook(`copyIntoFolio(${describeValue(pfn)})`) || !guard.watchFolio(pfn, 'copied into'))
        return;
      // Bytes are not journaled: refuse a copy into any folio but the call's own.
      const folioOwner = memory.folioInode[pfn]!;
      if (!journal.allocatedByHook(pfn) && (journal.inode === null || folioOwner !== journal.inode.id)) {
        const whose = folioOwner === NO_INODE ? 'no file' : `inode ${folioOwner}`;
        journal.refuse(`copied into folio ${pfn}, which belongs to ${whose}`);
        return;
      }
      core.copyIntoFolio(pfn, offset, source, sourceOffset, length);
    },
    createInode: (type, name, pageShift, sizeBytes) => {
      // initInode is a hook: it cannot run inside another hook call.
      if (journal.active) throw new Error('createInode called inside a hook call');
      const inode = core.createInode(type, name, pageShift, sizeBytes);
      // A device's ioctl made the file: the ioctl fails with the violation as its reason.
      if (typeof inode === 'number')
        throw new KernelError({ errno: EFAULT, syscall: 'ioctl', reason: violation() });
      return views.inode(inode);
    },
    kernelOption: (name) => core.kernelOption(name),
  };
}
