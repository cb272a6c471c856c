/**
 * What a folio handed back by a hook must be, by contract; each check
 * returns the problem, described, or null. They read the folio's state and
 * the call's journal, and touch nothing. Describing a value never calls
 * into it (no toString, no getter, no Proxy trap).
 */
import { errnoName } from '../../uapi/errno.ts';
import { filemapLookup, type Inode } from '../mem/pagecache.ts';
import { NO_INODE, type PhysicalMemory } from '../mem/physmem.ts';
import type { HookJournal } from './hook-journal.ts';

const MAX_DESCRIPTION = 200;

/** A value a hook returned, for a warning, without running any of its code. */
export function describeValue(value: unknown): string {
  if (typeof value === 'number' && Number.isInteger(value) && value < 0 && value > -4096) {
    return errnoName(-value);
  }
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'string') return JSON.stringify(clip(value));
  return String(value);
}

/**
 * What a hook threw, for a warning: an Error's message, a primitive as it
 * prints, anything else by its kind. A getter or Proxy trap that throws is
 * caught here too, so no thrown value can escape the checker.
 */
export function describeThrown(thrown: unknown): string {
  if (typeof thrown !== 'object' || thrown === null) {
    return typeof thrown === 'function' ? 'a function' : clip(String(thrown));
  }
  try {
    const message: unknown = (thrown as { message?: unknown }).message;
    if (typeof message === 'string') return clip(message);
  } catch {
    return 'an object whose message cannot be read';
  }
  return 'an object without a message';
}

function clip(text: string): string {
  const line = text.replace(/\s+/g, ' ');
  return line.length > MAX_DESCRIPTION ? `${line.slice(0, MAX_DESCRIPTION)}…` : line;
}

export function notAFolio(memory: PhysicalMemory, pfn: unknown): string | null {
  if (typeof pfn !== 'number' || !Number.isInteger(pfn) || pfn <= 0 || pfn >= memory.folioFlags.length) {
    return `returned ${describeValue(pfn)}, which is not a folio`;
  }
  if (!memory.isAllocated(pfn) || memory.folioRefcount[pfn]! <= 0)
    return `returned folio ${pfn}, which is free`;
  return null;
}

/** The request a cached folio answers: `pgoff` of `inode`, at `pageShift`. */
export interface CachedFolioRequest {
  readonly inode: Inode;
  readonly pgoff: number;
  readonly pageShift: number;
  /** The folio may lie past the end of the file (a write extends the file). */
  readonly pastEnd?: boolean;
}

/**
 * A folio said to cache the request's page: the right one, in the page
 * cache, of the mapping's page size, locked as asked (`locked` true: locked
 * by this call; false: unlocked; null: either).
 */
export function cachedFolioProblem(
  journal: HookJournal,
  request: CachedFolioRequest,
  pfn: number,
  locked: boolean | null,
): string | null {
  const memory = journal.memory;
  const invalid = notAFolio(memory, pfn);
  if (invalid !== null) return invalid;
  const { inode, pgoff, pageShift } = request;
  const owner = memory.folioInode[pfn]!;
  if (owner !== inode.id) {
    return owner === NO_INODE
      ? `returned folio ${pfn}, which no page cache holds`
      : `returned folio ${pfn} of another file (inode ${owner})`;
  }
  const index = memory.folioIndex[pfn]!;
  if (request.pastEnd !== true && index * 4096 >= inode.sizeBytes) {
    return `returned folio ${pfn} at index ${index}, beyond the end of the file (${inode.sizeBytes} bytes)`;
  }
  const pages = 2 ** (pageShift - 12);
  const head = pgoff - (pgoff % pages);
  if (index !== head) return `returned folio ${pfn} at index ${index}, wanted ${head}`;
  if (filemapLookup(inode, head) !== pfn) return `returned folio ${pfn}, which the page cache does not hold`;
  if (memory.folioOrder[pfn] !== pageShift - 12) {
    return `returned folio ${pfn} of order ${memory.folioOrder[pfn]}, the VMA maps order ${pageShift - 12}`;
  }
  const isLocked = memory.isLocked(pfn);
  if (locked === true && !isLocked) return `returned folio ${pfn} unlocked`;
  if (locked === true && journal.wasLocked(pfn)) return `returned folio ${pfn}, which was already locked`;
  if (locked === false && isLocked) return `returned folio ${pfn} locked`;
  return null;
}

/** The call must have added exactly `wanted` references to `pfn` (`returned`: the hook returned it). */
export function referenceProblem(
  journal: HookJournal,
  pfn: number,
  wanted: number,
  returned: boolean,
  whose: string,
): string | null {
  const added = journal.memory.folioRefcount[pfn]! - journal.refcountBefore(pfn);
  if (added === wanted) return null;
  const subject = `${returned ? 'returned' : 'left'} folio ${pfn}`;
  if (added === 0) return `${subject} without a reference ${whose}`;
  return `${subject} with ${added} new reference(s), wanted ${wanted} ${whose}`;
}

/** What alloc_folio hands over: fresh from this call, one reference, unlocked, unowned, of `order`. */
export function freshFolioProblem(journal: HookJournal, order: number, pfn: number): string | null {
  const memory = journal.memory;
  const invalid = notAFolio(memory, pfn);
  if (invalid !== null) return invalid;
  if (!journal.allocatedByHook(pfn)) return `returned folio ${pfn}, which it did not allocate`;
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
export function addedFolioProblem(
  memory: PhysicalMemory,
  inode: Inode,
  head: number,
  pfn: number,
): string | null {
  const cached = filemapLookup(inode, head);
  if (cached === pfn && memory.folioInode[pfn] === inode.id && memory.folioIndex[pfn] === head) return null;
  const owner = memory.folioInode[pfn]!;
  if (owner === NO_INODE) return `returned 0 without adding folio ${pfn} to the page cache`;
  if (owner !== inode.id) return `added folio ${pfn} to the page cache of another file (inode ${owner})`;
  return `added folio ${pfn} at index ${memory.folioIndex[pfn]}, wanted ${head}`;
}
