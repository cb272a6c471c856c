/**
 * Helpers for memory types whose pages live in their own page cache (shmem,
 * hugetlbfs and others): the ordinary fault and the page-cache half of
 * vm_uffd_ops, parameterised by folio order. A type composes these; the core
 * never sees this file.
 */
import { EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM } from '../../uapi/errno.ts';
import {
  FAULT_ALLOC_PRIVATE,
  FAULT_OOM,
  type InodeView,
  type MemoryTypeServices,
  type VmaView,
  type VmUffdOps,
} from '../mm/memtype.ts';

export interface FilemapPolicy {
  /** Folio order of every page-cache folio (0, or 9 for 2 MiB). */
  readonly order: number;
  /** Allocate from the hugetlb pool. */
  readonly hugetlb: boolean;
  /** A private mapping's hole is filled with a private page, not a page-cache page (hugetlb_no_page). */
  readonly privateHolesAreAnonymous: boolean;
  /**
   * The no-allocation lookup refuses an index at or past i_size with EINVAL
   * before it looks (shmem_get_folio with SGP_NOALLOC), so CONTINUE there is
   * EINVAL rather than EFAULT [OBS 6.18: uapi-facts §5.5].
   */
  readonly noallocPastEofInvalid?: boolean;
}

function headOf(pgoff: number, order: number): number {
  const pages = 2 ** order;
  return pgoff - (pgoff % pages);
}

function pgoffOf(vma: VmaView, address: number): number {
  return vma.pgoff + (address - vma.start) / 4096;
}

/** vm_ops->fault for a page-cache-backed type (shmem_fault, hugetlb_no_page). */
export function filemapFault(services: MemoryTypeServices, policy: FilemapPolicy) {
  return (inode: InodeView, pgoff: number, mayShare: boolean): number => {
    const head = headOf(pgoff, policy.order);
    const cached = services.filemapLookup(inode, head);
    if (cached >= 0) {
      services.getFolio(cached);
      return cached;
    }
    if (!mayShare && policy.privateHolesAreAnonymous) return FAULT_ALLOC_PRIVATE;
    const pfn = services.allocFolio(policy.order, { hugetlb: policy.hugetlb });
    if (pfn < 0) return FAULT_OOM;
    services.filemapInsert(inode, pfn, head);
    return pfn;
  };
}

/** Finds or allocates the cached folio at `pgoff`, for pwrite; -ENOMEM/-ENOSPC on failure. */
export function filemapGetForWrite(services: MemoryTypeServices, policy: FilemapPolicy) {
  return (inode: InodeView, pgoff: number): number => {
    const head = headOf(pgoff, policy.order);
    const cached = services.filemapLookup(inode, head);
    if (cached >= 0) return cached;
    const pfn = services.allocFolio(policy.order, { hugetlb: policy.hugetlb });
    if (pfn < 0) return -ENOMEM;
    services.filemapInsert(inode, pfn, head);
    services.putFolio(pfn);
    return pfn;
  };
}

/** The page-cache half of vm_uffd_ops: lookup without allocation, allocation, insertion, removal. */
export function filemapUffdOps(
  services: MemoryTypeServices,
  policy: FilemapPolicy,
  canUserfault: VmUffdOps['canUserfault'],
): VmUffdOps {
  return {
    canUserfault,
    getFolioNoalloc(inode: InodeView, pgoff: number): number {
      if (policy.noallocPastEofInvalid && pgoff * 4096 >= inode.sizeBytes) return -EINVAL;
      const pfn = services.filemapLookup(inode, headOf(pgoff, policy.order));
      if (pfn < 0) return -ENOENT;
      services.getFolio(pfn);
      services.lockFolio(pfn);
      return pfn;
    },
    allocFolio(vma: VmaView, address: number): number {
      const inode = vma.inode;
      if (inode === null || pgoffOf(vma, address) * 4096 >= inode.sizeBytes) return -EFAULT;
      const pfn = services.allocFolio(policy.order, { hugetlb: policy.hugetlb });
      return pfn < 0 ? -ENOMEM : pfn;
    },
    filemapAdd(pfn: number, vma: VmaView, address: number): number {
      const inode = vma.inode;
      if (inode === null) return -EFAULT;
      const head = headOf(pgoffOf(vma, address), policy.order);
      return services.filemapInsert(inode, pfn, head) ? 0 : -EEXIST;
    },
    filemapRemove(pfn: number, vma: VmaView): void {
      const inode = vma.inode;
      if (inode === null) return;
      removeByPfn(services, inode, pfn);
    },
  };
}

function removeByPfn(services: MemoryTypeServices, inode: InodeView, pfn: number): void {
  const index = services.folioIndex(pfn);
  if (services.filemapLookup(inode, index) === pfn) services.filemapDelete(inode, index);
}
