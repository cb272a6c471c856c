/**
 * The fault path (handle_mm_fault and friends): what happens when a task
 * touches a page whose entry does not allow the access. The userfaultfd step
 * is reached through `FaultEnvironment.handleUserfault`, injected by the
 * kernel, so that mm/ does not import uffd/.
 */
import { ENOENT } from '../../uapi/errno.ts';
import type { FailureRecord } from '../failure.ts';
import type { FaultInjector } from '../inject.ts';
import { filemapLookup } from '../mem/pagecache.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_UPTODATE, type PhysicalMemory } from '../mem/physmem.ts';
import type { Task } from '../task.ts';
import type { HookChecker } from './hooks.ts';
import { FAULT_ALLOC_PRIVATE, FAULT_OOM, FAULT_SIGBUS, type MemoryType } from './memtype.ts';
import type { AddressSpace } from './mm.ts';
import {
  PTE_DIRTY,
  PTE_MARKER_POISONED,
  PTE_MARKER_UFFD_WP,
  PTE_PRESENT,
  PTE_PROTNONE,
  PTE_UFFD_WP,
  PTE_WRITE,
  PTE_ZERO,
} from './pagetable.ts';
import {
  VM_EXEC,
  VM_HUGETLB,
  VM_READ,
  VM_SHARED,
  VM_UFFD_MINOR,
  VM_UFFD_MISSING,
  VM_UFFD_WP,
  VM_WRITE,
  type Vma,
} from './vma.ts';

/** The access is now allowed by the page table; retry it. */
export const FAULT_HANDLED = 0;
/** The task went to sleep on a userfaultfd (VM_FAULT_RETRY). */
export const FAULT_RETRY = 1;
export const FAULT_RESULT_SIGBUS = 2;
export const FAULT_RESULT_SIGSEGV = 3;
/** A userfaultfd would have put the caller to sleep, but the caller cannot sleep. */
export const FAULT_RESULT_WOULD_BLOCK = 5;
/** SIGSEGV for an access the VMA's protection forbids (SEGV_ACCERR). */
export const FAULT_RESULT_SIGSEGV_ACCERR = 6;

/** Why handle_userfault is called: exactly one of these. */
export const USERFAULT_MISSING = 1;
export const USERFAULT_WP = 2;
export const USERFAULT_MINOR = 3;

/**
 * One fault (the kernel's struct vm_fault), made once by the caller of
 * handle_mm_fault and carried down to handle_userfault, so the fault path
 * passes one object instead of the same five values at every level.
 */
export interface VmFault {
  readonly mm: AddressSpace;
  /** The faulting address; an access walking its pages moves it along. */
  address: number;
  readonly write: boolean;
  /** The sleeping thread, or null for a caller that cannot sleep (the process API's direct access). */
  readonly task: Task | null;
  /** A CPU's access; false for a kernel copy_{from,to}_user. */
  readonly userMode: boolean;
}

export interface FaultEnvironment {
  readonly memory: PhysicalMemory;
  readonly anonymousType: MemoryType;
  readonly hooks: HookChecker;
  /** Fault injection (fail_usercopy on the paths below, fault_signal in uffd/). */
  readonly inject: FaultInjector;
  /** Where a failing call records its argument and reason. */
  readonly failure: FailureRecord;
  /**
   * handle_userfault: queue a message and put the fault's task to sleep, or
   * decide the fault otherwise. Returns one of the FAULT_* results.
   */
  handleUserfault(vmf: VmFault, vma: Vma, reason: number): number;
}

/** handle_mm_fault: resolves one fault at `vmf.address` for a read or a write. */
export function handleMmFault(env: FaultEnvironment, vmf: VmFault): number {
  const { mm, address, write } = vmf;
  const vma = mm.findVma(address);
  if (vma === undefined) return FAULT_RESULT_SIGSEGV;
  // access_error: a read needs an accessible VMA (x86 reads exec-only memory), a write VM_WRITE.
  if (write ? (vma.flags & VM_WRITE) === 0 : !vmaIsAccessible(vma)) return FAULT_RESULT_SIGSEGV_ACCERR;
  const pageAddress = address - (address % vma.pageSize);
  const entry = mm.pageTable.flagsAt(pageAddress / 4096);

  // A UFFDIO_POISON marker: SIGBUS with si_code BUS_ADRERR on 6.18 [OBS: faultline diff against the host].
  if (entry & PTE_MARKER_POISONED) return FAULT_RESULT_SIGBUS;
  if (entry & PTE_PRESENT) {
    // An entry left PROT_NONE in a VMA that is accessible again (mprotect restores it).
    if (entry & PTE_PROTNONE) mm.setEntryFlags(pageAddress, vma.pageShift, entry & ~PTE_PROTNONE);
    if (!write) return FAULT_HANDLED;
    if (entry & PTE_WRITE) {
      if (!(entry & PTE_DIRTY)) mm.setEntryFlags(pageAddress, vma.pageShift, entry | PTE_DIRTY);
      return FAULT_HANDLED;
    }
    if (entry & PTE_UFFD_WP && vma.flags & VM_UFFD_WP) {
      return env.handleUserfault(vmf, vma, USERFAULT_WP);
    }
    return writeProtectedFault(env, mm, vma, pageAddress, entry);
  }

  // A missing page is a MISSING fault even under a uffd-wp marker; the marker
  // makes a write a WP fault only when there is a page to protect [OBS: probes q5].
  // A uffd-wp marker survives as the wp bit of the new entry.
  const keepWp = entry & PTE_MARKER_UFFD_WP && vma.flags & VM_UFFD_WP ? PTE_UFFD_WP : 0;
  if (vma.isAnonymous) {
    if (vma.flags & VM_UFFD_MISSING) {
      return env.handleUserfault(vmf, vma, USERFAULT_MISSING);
    }
    const result = anonymousFault(env, vmf, vma, keepWp);
    // do_anonymous_page maps a write under a WP_UNPOPULATED marker as a zeroed page that is still
    // write-protected; the retried write then takes the WP fault on it, so a COPY there is EEXIST
    // [OBS 6.18: §5.5].
    if (result !== FAULT_HANDLED || !(keepWp && write)) return result;
    return env.handleUserfault(vmf, vma, USERFAULT_WP);
  }
  return fileFault(env, vmf, vma, keepWp);
}

/** vma_is_accessible: any of read, write, exec. */
export function vmaIsAccessible(vma: Vma): boolean {
  return (vma.flags & (VM_READ | VM_WRITE | VM_EXEC)) !== 0;
}

/** The PROT_NONE bit an entry mapped into `vma` carries (mfill maps with the VMA's protection). */
export function vmaProtNone(vma: Vma): number {
  return vmaIsAccessible(vma) ? 0 : PTE_PROTNONE;
}

/** do_anonymous_page: the zero page for a read, a fresh zeroed page for a write. */
function anonymousFault(env: FaultEnvironment, vmf: VmFault, vma: Vma, keepWp: number): number {
  const pageAddress = vmf.address - (vmf.address % vma.pageSize);
  if (!vmf.write) {
    vmf.mm.setEntries(pageAddress, vma.pageShift, PTE_PRESENT | PTE_ZERO | keepWp, 0);
    return FAULT_HANDLED;
  }
  return installNewAnonymousPage(env, vma, pageAddress, -1, anonEntry(!keepWp, keepWp));
}

/** The entry flags of a new anonymous page: writable pages are mapped dirty. */
function anonEntry(writable: boolean, uffdWp = 0): number {
  return PTE_PRESENT | (writable ? PTE_WRITE | PTE_DIRTY : 0) | uffdWp;
}

/**
 * Allocates an anonymous folio at the VMA's page size, fills it from
 * `sourcePfn` (or leaves it zeroed when -1), and maps it with `entry`'s flags.
 */
function installNewAnonymousPage(
  env: FaultEnvironment,
  vma: Vma,
  pageAddress: number,
  sourcePfn: number,
  entry: number,
): number {
  const mm = vma.mm;
  const pfn = env.memory.allocFolio(vma.pageShift - 12, (vma.flags & VM_HUGETLB) !== 0);
  if (pfn < 0) return vma.flags & VM_HUGETLB ? FAULT_RESULT_SIGBUS : FAULT_RESULT_SIGBUS;
  if (sourcePfn >= 0) env.memory.copyFolio(pfn, sourcePfn);
  mm.prepareAnonVma(vma);
  env.memory.setFlag(pfn, PG_ANON | PG_ANON_EXCLUSIVE);
  mm.mapFolio(pfn);
  env.memory.putFolio(pfn);
  mm.setEntries(pageAddress, vma.pageShift, entry, pfn);
  return FAULT_HANDLED;
}

/** do_wp_page: a write to a present, read-only entry of a writable VMA. */
function writeProtectedFault(
  env: FaultEnvironment,
  mm: AddressSpace,
  vma: Vma,
  pageAddress: number,
  entry: number,
): number {
  const writableFlags = (entry & ~PTE_UFFD_WP) | PTE_WRITE | PTE_DIRTY;
  if (vma.flags & VM_SHARED) {
    mm.setEntryFlags(pageAddress, vma.pageShift, writableFlags);
    return FAULT_HANDLED;
  }
  if (entry & PTE_ZERO) {
    mm.zapRange(vma, pageAddress, pageAddress + vma.pageSize);
    return installNewAnonymousPage(env, vma, pageAddress, -1, anonEntry(true));
  }
  const pfn = mm.pageTable.valueAt(pageAddress / 4096);
  const memory = env.memory;
  // An exclusive anonymous page is reused in place (wp_page_reuse).
  if (
    memory.hasFlag(pfn, PG_ANON) &&
    memory.folioMapcount[pfn] === 1 &&
    memory.folioRefcount[pfn] === 1 &&
    memory.hasFlag(pfn, PG_ANON_EXCLUSIVE)
  ) {
    mm.setEntryFlags(pageAddress, vma.pageShift, writableFlags);
    return FAULT_HANDLED;
  }
  memory.getFolio(pfn);
  mm.zapRange(vma, pageAddress, pageAddress + vma.pageSize);
  const result = installNewAnonymousPage(env, vma, pageAddress, pfn, anonEntry(true));
  memory.putFolio(pfn);
  return result;
}

/** A fault on a file-backed VMA whose entry is none (or a uffd-wp marker). */
function fileFault(env: FaultEnvironment, vmf: VmFault, vma: Vma, keepWp: number): number {
  const mm = vmf.mm;
  let write = vmf.write;
  const pageAddress = vmf.address - (vmf.address % vma.pageSize);
  const inode = vma.inode!;
  const type = vma.memoryType;
  const pgoff = vma.pgoffAt(pageAddress);
  if (pgoff * 4096 >= inode.sizeBytes) return FAULT_RESULT_SIGBUS;
  // do_read_fault maps the cached neighbours first, even when the faulting page then goes to
  // userfaultfd as MISSING [OBS: faultline fuzz against the host].
  if (!write) faultAround(env, mm, vma, pageAddress);

  if (vma.flags & (VM_UFFD_MISSING | VM_UFFD_MINOR) && type.uffdOps?.getFolioNoalloc !== undefined) {
    const found = env.hooks.getFolioNoalloc(type, 'fault', { inode, pgoff, pageShift: vma.pageShift });
    if (found >= 0) {
      env.memory.unlockFolio(found);
      env.memory.putFolio(found);
      if (vma.flags & VM_UFFD_MINOR) {
        return env.handleUserfault(vmf, vma, USERFAULT_MINOR);
      }
    } else if (found === -ENOENT && vma.flags & VM_UFFD_MISSING) {
      return env.handleUserfault(vmf, vma, USERFAULT_MISSING);
    } else if (found !== -ENOENT) {
      return FAULT_RESULT_SIGBUS;
    }
  }

  // A write under a uffd-wp marker first maps the page with the wp bit (the page is allocated if
  // absent), then takes the WP fault on it [OBS: faultline fuzz against the host, hugetlb and shmem].
  const wpAfterMap = keepWp !== 0 && write;
  if (wpAfterMap) write = false;
  if (type.fault === undefined) return FAULT_RESULT_SIGBUS;
  const mayShare = (vma.flags & VM_SHARED) !== 0;
  // The checker hands back a checked folio, a FAULT_* code, or -EFAULT for a broken answer (SIGBUS).
  const pfn = env.hooks.fault(type, { inode, pgoff, pageShift: vma.pageShift }, mayShare);
  if (pfn === FAULT_SIGBUS || pfn === FAULT_OOM) return FAULT_RESULT_SIGBUS;
  if (pfn === FAULT_ALLOC_PRIVATE) {
    const installed = installNewAnonymousPage(env, vma, pageAddress, -1, anonEntry(write));
    if (installed !== FAULT_HANDLED || !keepWp) return installed;
    // The new private page keeps the marker's uffd-wp bit, read fault or write [OBS: faultline fuzz].
    const flags = mm.pageTable.flagsAt(pageAddress / 4096);
    mm.setEntryFlags(pageAddress, vma.pageShift, (flags & ~PTE_WRITE) | PTE_UFFD_WP);
    if (!wpAfterMap) return installed;
    return env.handleUserfault(vmf, vma, USERFAULT_WP);
  }
  if (pfn < 0) return FAULT_RESULT_SIGBUS;

  let result = FAULT_HANDLED;
  if (vma.flags & VM_SHARED) {
    mm.mapFolio(pfn);
    // A kept uffd-wp bit write-protects the entry (x86 pte_mkuffd_wp clears write), so a later write
    // is still a WP fault [§3.7, §4.1].
    const writable = vma.flags & VM_WRITE && !keepWp ? PTE_WRITE : 0;
    mm.setEntries(pageAddress, vma.pageShift, PTE_PRESENT | writable | (write ? PTE_DIRTY : 0) | keepWp, pfn);
  } else if (!write) {
    mm.mapFolio(pfn);
    mm.setEntries(pageAddress, vma.pageShift, PTE_PRESENT | keepWp, pfn);
  } else {
    result = installNewAnonymousPage(env, vma, pageAddress, pfn, anonEntry(true));
  }
  env.memory.putFolio(pfn);
  if (wpAfterMap && result === FAULT_HANDLED) {
    return env.handleUserfault(vmf, vma, USERFAULT_WP);
  }
  return result;
}

/** Bytes a read fault maps around itself (the kernel's fault_around_bytes default). */
const FAULT_AROUND_BYTES = 64 * 1024;

/**
 * do_fault_around: after a read fault, map the other pages of the aligned
 * 64 KiB window that are already in the page cache and have no entry. Not on
 * VMAs registered for MINOR or WP (uffd_disable_fault_around), and only for
 * types that declare `mapPages` [OBS: faultline fuzz against the host].
 */
function faultAround(env: FaultEnvironment, mm: AddressSpace, vma: Vma, pageAddress: number): void {
  if (vma.memoryType.mapPages !== true || vma.pageShift !== 12) return;
  if (vma.flags & (VM_UFFD_MINOR | VM_UFFD_WP)) return;
  const inode = vma.inode!;
  const windowStart = Math.max(vma.start, pageAddress - (pageAddress % FAULT_AROUND_BYTES));
  const windowEnd = Math.min(vma.end, windowStart + FAULT_AROUND_BYTES);
  const writable = vma.flags & VM_SHARED && vma.flags & VM_WRITE ? PTE_WRITE : 0;
  for (let address = windowStart; address < windowEnd; address += 4096) {
    if (address === pageAddress || mm.pageTable.flagsAt(address / 4096) !== 0) continue;
    const pgoff = vma.pgoffAt(address);
    if (pgoff * 4096 >= inode.sizeBytes) break;
    const pfn = filemapLookup(inode, pgoff);
    if (pfn < 0 || !env.memory.hasFlag(pfn, PG_UPTODATE) || env.memory.isLocked(pfn)) continue;
    mm.mapFolio(pfn);
    mm.setEntries(address, 12, PTE_PRESENT | writable, pfn);
  }
}
