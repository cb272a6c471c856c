/**
 * The services lent to memory types, journaled while a hook runs so the
 * core can judge and undo what the hook did (see hook-journal.ts). The guard
 * refuses the two misuses it could not undo: dropping the last reference of
 * a folio the hook did not allocate, and acting on a frame that is not a
 * folio. Outside hook calls they are the plain services.
 */
import { NO_INODE, PG_ALLOCATED } from '../mem/physmem.ts';
import type { HookJournal } from './hook-journal.ts';
import type { MemoryTypeServices } from './memtype.ts';

export function watchServices(journal: HookJournal, services: MemoryTypeServices): MemoryTypeServices {
  const memory = journal.memory;
  /** Checks `pfn` is a live folio before a service acts on it, and snapshots it. */
  const watchFolio = (pfn: number, verb: string): boolean => {
    const live =
      Number.isInteger(pfn) &&
      pfn > 0 &&
      pfn < memory.folioFlags.length &&
      (memory.folioFlags[pfn]! & PG_ALLOCATED) !== 0 &&
      memory.folioRefcount[pfn]! > 0;
    if (!live) {
      journal.refuse(`${verb} ${String(pfn)}, which is not a folio`);
      return false;
    }
    journal.touch(pfn);
    return true;
  };
  return {
    ...services,
    allocFolio: (order, options) => {
      const pfn = services.allocFolio(order, options);
      if (journal.active && pfn >= 0) journal.noteAllocated(pfn);
      return pfn;
    },
    getFolio: (pfn) => {
      if (journal.active && !watchFolio(pfn, 'took a reference on')) return;
      services.getFolio(pfn);
    },
    putFolio: (pfn) => {
      if (journal.active) {
        if (!watchFolio(pfn, 'dropped a reference on')) return;
        if (memory.folioRefcount[pfn]! <= 1 && !journal.allocatedByHook(pfn)) {
          journal.refuse(`dropped the last reference to folio ${pfn}, which it did not hold`);
          return;
        }
      }
      services.putFolio(pfn);
    },
    lockFolio: (pfn) => {
      if (journal.active && !watchFolio(pfn, 'locked')) return;
      services.lockFolio(pfn);
    },
    unlockFolio: (pfn) => {
      if (journal.active && !watchFolio(pfn, 'unlocked')) return;
      services.unlockFolio(pfn);
    },
    filemapInsert: (inode, pfn, pgoff) => {
      if (journal.active && !watchFolio(pfn, 'inserted')) return false;
      const inserted = services.filemapInsert(inode, pfn, pgoff);
      if (journal.active && inserted) journal.noteCache(inode, pgoff, pfn, true);
      return inserted;
    },
    copyIntoFolio: (pfn, offset, source, sourceOffset, length) => {
      if (journal.active) {
        if (!watchFolio(pfn, 'copied into')) return;
        // Bytes are not journaled: refuse a copy into any folio but the call's own.
        const owner = memory.folioInode[pfn]!;
        if (!journal.allocatedByHook(pfn) && (journal.inode === null || owner !== journal.inode.id)) {
          journal.refuse(
            `copied into folio ${pfn}, which belongs to ${owner === NO_INODE ? 'no file' : `inode ${owner}`}`,
          );
          return;
        }
      }
      services.copyIntoFolio(pfn, offset, source, sourceOffset, length);
    },
    filemapDelete: (inode, pgoff) => {
      if (journal.active) {
        if (inode.cache.flagsAt(pgoff) === 0) return;
        const pfn = inode.cache.valueAt(pgoff);
        journal.touch(pfn);
        if (memory.folioRefcount[pfn]! <= 1 && !journal.allocatedByHook(pfn)) {
          journal.refuse(`deleted folio ${pfn} from the page cache, which held its last reference`);
          return;
        }
        journal.noteCache(inode, pgoff, pfn, false);
      }
      services.filemapDelete(inode, pgoff);
    },
  };
}
