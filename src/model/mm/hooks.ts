/**
 * The core's checks on what memory-type hooks hand back. A hook is code the
 * core does not own, so every folio it returns is checked (right inode and
 * index, locked when it must be, referenced, the VMA's page size, nothing
 * allocated by a "noalloc" hook) before the core acts on it. A violation
 * becomes an errno and one warning naming the type and the hook; the core's
 * own state is left as it was.
 */
import { EFAULT } from '../../uapi/errno.ts';
import type { Inode } from '../mem/pagecache.ts';
import { PG_ALLOCATED, PG_LOCKED, type PhysicalMemory } from '../mem/physmem.ts';
import type { MemoryType } from './memtype.ts';

export class HookChecker {
  private readonly warned = new Set<string>();
  readonly warnings: string[] = [];

  constructor(
    readonly memory: PhysicalMemory,
    private readonly emitWarning: (message: string) => void = () => {},
  ) {}

  /** Records one warning per (type, hook, problem). */
  violation(type: MemoryType, hook: string, problem: string): void {
    const key = `${type.name}.${hook}: ${problem}`;
    if (this.warned.has(key)) return;
    this.warned.add(key);
    const message = `faultline: memory type '${type.name}' hook ${hook}: ${problem}`;
    this.warnings.push(message);
    this.emitWarning(message);
  }

  /**
   * Checks a folio said to cache `pgoff` of `inode` at the VMA's page size.
   * Returns the pfn, or -EFAULT after recording a violation.
   */
  checkCachedFolio(
    type: MemoryType,
    hook: string,
    inode: Inode,
    pgoff: number,
    pageShift: number,
    pfn: number,
    mustBeLocked: boolean,
  ): number {
    const memory = this.memory;
    if (!Number.isInteger(pfn) || pfn <= 0 || pfn >= memory.folioFlags.length) {
      this.violation(type, hook, `returned ${pfn}, which is not a folio`);
      return -EFAULT;
    }
    const flags = memory.folioFlags[pfn]!;
    if ((flags & PG_ALLOCATED) === 0 || memory.folioRefcount[pfn]! <= 0) {
      this.violation(type, hook, `returned folio ${pfn}, which is free or unreferenced`);
      return -EFAULT;
    }
    if (memory.folioInode[pfn] !== inode.id) {
      this.violation(type, hook, `returned folio ${pfn} of another file (inode ${memory.folioInode[pfn]})`);
      return -EFAULT;
    }
    const folioPages = 2 ** (pageShift - 12);
    const head = pgoff - (pgoff % folioPages);
    if (memory.folioIndex[pfn] !== head) {
      this.violation(type, hook, `returned folio ${pfn} at index ${memory.folioIndex[pfn]}, wanted ${head}`);
      return -EFAULT;
    }
    if (memory.folioOrder[pfn] !== pageShift - 12) {
      this.violation(
        type,
        hook,
        `returned folio ${pfn} of order ${memory.folioOrder[pfn]}, the VMA maps order ${pageShift - 12}`,
      );
      return -EFAULT;
    }
    if (mustBeLocked && (flags & PG_LOCKED) === 0) {
      this.violation(type, hook, `returned folio ${pfn} unlocked`);
      return -EFAULT;
    }
    if (!mustBeLocked && (flags & PG_LOCKED) !== 0) {
      this.violation(type, hook, `returned folio ${pfn} locked`);
      return -EFAULT;
    }
    return pfn;
  }

  /** Checks the folio an ordinary fault hook returned (referenced, unlocked). */
  checkFaultFolio(type: MemoryType, inode: Inode, pgoff: number, pageShift: number, pfn: number): number {
    const checked = this.checkCachedFolio(type, 'fault', inode, pgoff, pageShift, pfn, false);
    if (checked < 0) return checked;
    // The caller's reference and the page cache's: anything less is a missing get.
    if (this.memory.folioRefcount[pfn]! < 2) {
      this.violation(type, 'fault', `returned folio ${pfn} without a reference for the caller`);
      return -EFAULT;
    }
    return pfn;
  }
}

/**
 * Calls a type's get_folio_noalloc and checks the answer: -ENOENT and other
 * errnos pass through; a folio must be the right one, locked, referenced for
 * the caller, and the call must not have allocated.
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
  const hook = `get_folio_noalloc (from ${caller})`;
  const memory: PhysicalMemory = checker.memory;
  const before = memory.foliosAllocated;
  let result: number;
  try {
    result = call();
  } catch (error) {
    checker.violation(type, hook, `threw ${(error as Error).message}`);
    return -EFAULT;
  }
  if (memory.foliosAllocated !== before) {
    checker.violation(type, hook, 'allocated a folio');
    return -EFAULT;
  }
  if (result < 0) return result;
  const checked = checker.checkCachedFolio(type, hook, inode, pgoff, pageShift, result, true);
  if (checked < 0) return checked;
  if (memory.folioRefcount[result]! < 2) {
    checker.violation(type, hook, `returned folio ${result} without a reference for the caller`);
    memory.unlockFolio(result);
    return -EFAULT;
  }
  return result;
}
