/**
 * The invariant checker: cross-checks page tables, folio refcounts and
 * mapcounts, page caches, VMAs and userfaultfd queues. Tests run it after
 * every step; it throws on the first inconsistency it finds, naming it.
 */
import type { ModelKernel } from './kernel.ts';
import type { Inode } from './mem/pagecache.ts';
import { PG_ALLOCATED, PG_ANON, PG_LOCKED, type PhysicalMemory, ZERO_PFN } from './mem/physmem.ts';
import type { AddressSpace } from './mm/mm.ts';
import { PTE_MARKER_MASK, PTE_PRESENT, PTE_ZERO } from './mm/pagetable.ts';
import { VM_UFFD_FLAGS, type Vma } from './mm/vma.ts';
import type { Task } from './task.ts';

export class InvariantError extends Error {
  override name = 'InvariantError';
}

/** What the checks gather as they go: the counts the folios must agree with at the end. */
interface Census {
  readonly memory: PhysicalMemory;
  /** Mappings seen per head pfn. */
  readonly mapcounts: Map<number, number>;
  /** Page-cache slots seen per head pfn. */
  readonly cacheRefs: Map<number, number>;
  readonly liveVmas: Set<Vma>;
  readonly failIf: (condition: boolean, message: () => string) => void;
}

export function checkInvariants(kernel: ModelKernel): void {
  const census: Census = {
    memory: kernel.memory,
    mapcounts: new Map(),
    cacheRefs: new Map(),
    liveVmas: new Set(),
    failIf: (condition, message) => {
      if (condition) throw new InvariantError(`invariant: ${message()} (seed ${kernel.seed})`);
    },
  };
  for (const process of kernel.processes.values()) {
    checkVmas(census, process.mm);
    checkPageTable(census, process.mm);
  }
  for (const inode of kernel.liveInodes()) checkPageCache(census, inode);
  checkFolioCounts(census);
  for (const process of kernel.processes.values()) checkSleepers(census, process.tasks);
}

/** VMAs are sorted, aligned, disjoint, registered consistently, and in their file's i_mmap. */
function checkVmas(census: Census, mm: AddressSpace): void {
  const { failIf, liveVmas } = census;
  let previousEnd = 0;
  for (const vma of mm.vmas) {
    failIf(vma.start >= vma.end, () => `empty VMA ${vma.describe()}`);
    failIf(vma.start < previousEnd, () => `VMA ${vma.describe()} overlaps its predecessor`);
    failIf(
      vma.start % vma.pageSize !== 0 || vma.end % vma.pageSize !== 0,
      () => `VMA ${vma.describe()} not aligned to its page size`,
    );
    failIf(vma.mm !== mm, () => `VMA ${vma.describe()} points at another mm`);
    const registered = vma.uffdContext !== null;
    failIf(
      registered !== ((vma.flags & VM_UFFD_FLAGS) !== 0),
      () => `VMA ${vma.describe()} has uffd flags without a context or the reverse`,
    );
    failIf(
      registered && vma.uffdContext!.mm !== mm,
      () => `VMA ${vma.describe()} registered to another mm's uffd`,
    );
    failIf(
      registered && vma.uffdContext!.released,
      () => `VMA ${vma.describe()} registered to a released uffd`,
    );
    // The inode's i_mmap must hold the VMA: a hole punch unmaps only what i_mmap names.
    failIf(
      vma.inode !== null && !vma.inode.mappings.has(vma),
      () => `VMA ${vma.describe()} maps ${vma.inode!.name} but is missing from its i_mmap`,
    );
    previousEnd = vma.end;
    liveVmas.add(vma);
  }
}

/** Every entry lies inside a VMA; present entries reference live frames, counted per head. */
function checkPageTable(census: Census, mm: AddressSpace): void {
  const { failIf, memory, mapcounts } = census;
  let vmaIndex = 0;
  mm.pageTable.forEachInRange(0, 2 ** 36, (vpn, flags, pfn) => {
    const address = vpn * 4096;
    while (vmaIndex < mm.vmas.length && mm.vmas[vmaIndex]!.end <= address) vmaIndex++;
    const vma = mm.vmas[vmaIndex];
    failIf(
      vma === undefined || vma.start > address,
      () => `page-table entry at 0x${address.toString(16)} lies outside every VMA`,
    );
    if (!(flags & PTE_PRESENT)) {
      failIf(
        (flags & PTE_MARKER_MASK) === 0,
        () => `non-present entry without a marker at 0x${address.toString(16)}`,
      );
      return;
    }
    if (flags & PTE_ZERO) {
      failIf(pfn !== ZERO_PFN, () => `zero-page entry with pfn ${pfn}`);
      return;
    }
    failIf(
      (memory.folioFlags[pfn]! & PG_ALLOCATED) === 0,
      () => `entry at 0x${address.toString(16)} maps free frame ${pfn}`,
    );
    if (vpn % (vma!.pageSize / 4096) !== 0) return;
    mapcounts.set(pfn, (mapcounts.get(pfn) ?? 0) + 1);
    if ((memory.folioFlags[pfn]! & PG_ANON) === 0) checkCacheMapping(census, vma!, address, pfn);
  });
}

/** A mapped page-cache folio is the one its VMA's file caches at that offset. */
function checkCacheMapping(census: Census, vma: Vma, address: number, pfn: number): void {
  const { memory } = census;
  const inode = vma.inode;
  const pgoff = vma.pgoffAt(address);
  census.failIf(
    inode === null || memory.folioInode[pfn] !== inode.id || memory.folioIndex[pfn] !== pgoff,
    () =>
      `entry at 0x${address.toString(16)} maps folio ${pfn} (inode ${memory.folioInode[pfn]}, index ` +
      `${memory.folioIndex[pfn]}), not the page cache of ${inode?.name ?? 'a file'} at ${pgoff}`,
  );
}

/** An inode's i_mmap names live VMAs that map it; its cache holds live folios it owns at their index. */
function checkPageCache(census: Census, inode: Inode): void {
  const { failIf, memory, cacheRefs, liveVmas } = census;
  for (const vma of inode.mappings) {
    failIf(
      vma.inode !== inode || !liveVmas.has(vma),
      () => `i_mmap of ${inode.name} holds ${vma.describe()}, which does not map it`,
    );
  }
  inode.cache.forEachInRange(0, 2 ** 40, (pgoff, _flags, pfn) => {
    failIf(
      (memory.folioFlags[pfn]! & PG_ALLOCATED) === 0,
      () => `page cache of ${inode.name} holds free frame ${pfn}`,
    );
    failIf(
      memory.folioInode[pfn] !== inode.id,
      () => `folio ${pfn} cached by ${inode.name} names another owner`,
    );
    failIf(
      memory.folioIndex[pfn] !== pgoff,
      () => `folio ${pfn} cached at ${pgoff} says index ${memory.folioIndex[pfn]}`,
    );
    cacheRefs.set(pfn, (cacheRefs.get(pfn) ?? 0) + 1);
  });
}

/** Each folio's mapcount and refcount are what was seen; none is left locked, none leaked. */
function checkFolioCounts(census: Census): void {
  const { failIf, memory, mapcounts, cacheRefs } = census;
  const heads = new Set([...mapcounts.keys(), ...cacheRefs.keys()]);
  for (const pfn of heads) {
    const mapped = mapcounts.get(pfn) ?? 0;
    const cached = cacheRefs.get(pfn) ?? 0;
    failIf(
      memory.folioMapcount[pfn] !== mapped,
      () => `folio ${pfn} mapcount ${memory.folioMapcount[pfn]}, mapped ${mapped} times`,
    );
    failIf(
      memory.folioRefcount[pfn] !== mapped + cached,
      () =>
        `folio ${pfn} refcount ${memory.folioRefcount[pfn]}, expected ${mapped} mappings + ${cached} cache`,
    );
    failIf((memory.folioFlags[pfn]! & PG_LOCKED) !== 0, () => `folio ${pfn} left locked`);
  }
  // The zero page is set up by hand and never counted, so every counted folio must be referenced.
  failIf(
    memory.foliosAllocated !== heads.size,
    () => `${memory.foliosAllocated} folios allocated but ${heads.size} referenced: a leak or a lost folio`,
  );
}

/** A task blocked on a fault is on one of its context's queues. */
function checkSleepers(census: Census, tasks: readonly Task[]): void {
  const { failIf } = census;
  for (const task of tasks) {
    if (task.state !== 'blocked') continue;
    // A syscall asleep until its userfaultfd events are read waits on no fault.
    if (task.syscallContinuation !== null) continue;
    const waiter = task.waiter;
    failIf(waiter === null, () => `task ${task.tid} is blocked on nothing`);
    const ctx = waiter!.context;
    failIf(
      !ctx.pending.includes(waiter!) && !ctx.read.includes(waiter!),
      () => `task ${task.tid} waits on a fault no queue holds`,
    );
  }
}

/**
 * A text digest of everything a failed call must leave alone: VMAs, page
 * tables, page caches, file sizes, folio counts and userfaultfd state.
 */
export function digestKernel(kernel: ModelKernel): string {
  const parts: string[] = [`folios ${kernel.memory.foliosAllocated}`];
  for (const process of kernel.processes.values()) {
    parts.push(`pid ${process.pid} fds ${[...process.fds.keys()].join(',')}`);
    for (const vma of process.mm.vmas) {
      parts.push(
        `vma ${vma.start}-${vma.end} ${vma.flags} ${vma.pgoff} ${vma.uffdContext?.id ?? 0} ${vma.anonVma}`,
      );
    }
    process.mm.pageTable.forEachInRange(0, 2 ** 36, (vpn, flags, value) => {
      parts.push(`pte ${vpn} ${flags} ${value}`);
    });
    for (const file of process.fds.values()) {
      if (file.kind !== 'uffd') continue;
      const ctx = file.uffd.ctx;
      parts.push(
        `uffd ${ctx.id} ${ctx.features} ${ctx.pending.length} ${ctx.read.length} ${ctx.events.length}`,
      );
    }
  }
  for (const inode of kernel.liveInodes()) {
    parts.push(`inode ${inode.id} ${inode.sizeBytes}`);
    inode.cache.forEachInRange(0, 2 ** 40, (pgoff, _flags, pfn) => {
      parts.push(`cache ${inode.id} ${pgoff} ${pfn}`);
    });
  }
  return parts.join('\n');
}
