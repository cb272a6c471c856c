/**
 * The invariant checker: cross-checks page tables, folio refcounts and
 * mapcounts, page caches, VMAs and userfaultfd queues. Tests run it after
 * every step; it throws on the first inconsistency it finds, naming it.
 */
import type { ModelKernel } from './kernel.ts';
import { PG_ALLOCATED, PG_ANON, PG_LOCKED, ZERO_PFN } from './mem/physmem.ts';
import { PTE_MARKER_MASK, PTE_PRESENT, PTE_ZERO } from './mm/pagetable.ts';
import { VM_UFFD_FLAGS, type Vma } from './mm/vma.ts';

export class InvariantError extends Error {
  override name = 'InvariantError';
}

export function checkInvariants(kernel: ModelKernel): void {
  const memory = kernel.memory;
  const mapcounts = new Map<number, number>();
  const cacheRefs = new Map<number, number>();
  const liveVmas = new Set<Vma>();
  const failIf = (condition: boolean, message: () => string) => {
    if (condition) throw new InvariantError(`invariant: ${message()} (seed ${kernel.seed})`);
  };

  for (const process of kernel.processes.values()) {
    const mm = process.mm;
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
    // Every entry lies inside a VMA; present entries reference live frames.
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
      const pagesPerEntry = vma!.pageSize / 4096;
      if (vpn % pagesPerEntry !== 0) return;
      mapcounts.set(pfn, (mapcounts.get(pfn) ?? 0) + 1);
      // A mapped page-cache folio is the one its VMA's file caches at that offset.
      if ((memory.folioFlags[pfn]! & PG_ANON) === 0) {
        const inode = vma!.inode;
        const pgoff = vma!.pgoffAt(address);
        failIf(
          inode === null || memory.folioInode[pfn] !== inode.id || memory.folioIndex[pfn] !== pgoff,
          () =>
            `entry at 0x${address.toString(16)} maps folio ${pfn} (inode ${memory.folioInode[pfn]}, index ` +
            `${memory.folioIndex[pfn]}), not the page cache of ${inode?.name ?? 'a file'} at ${pgoff}`,
        );
      }
    });
  }

  for (const inode of kernel.liveInodes()) {
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

  for (const process of kernel.processes.values()) {
    for (const task of process.tasks) {
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
