/**
 * hugetlbfs: memfd_create(MFD_HUGETLB) and MAP_ANONYMOUS|MAP_HUGETLB, with 2
 * MiB pages from the hugetlb pool. It goes through the same generic fault and
 * mfill paths as every other type, at its own page size.
 */
import { UFFD_API_RANGE_IOCTLS_BASIC } from '../../uapi/constants.ts';
import { EINVAL } from '../../uapi/errno.ts';
import type { MemoryType, MemoryTypeModule } from '../mm/memtype.ts';
import { VM_DONTEXPAND, VM_HUGETLB } from '../mm/vma.ts';
import { type FilemapPolicy, filemapFault, filemapGetForWrite, filemapUffdOps } from './filemap.ts';

const HPAGE_SHIFT_2M = 21;
const policy: FilemapPolicy = { order: HPAGE_SHIFT_2M - 12, hugetlb: true, privateHolesAreAnonymous: true };

export const hugetlbfs: MemoryTypeModule = {
  name: 'hugetlbfs',
  create(services) {
    return {
      name: 'hugetlbfs',
      description: 'hugetlbfs: MFD_HUGETLB memfds and MAP_HUGETLB, 2 MiB pages',
      provides: ['memfd-hugetlb'],
      // hugetlbfs_file_mmap sets VM_HUGETLB|VM_DONTEXPAND; the latter keeps its VMAs from merging.
      vmFlags: VM_HUGETLB | VM_DONTEXPAND,
      // No ZEROPAGE (there is no huge zero page) and no MOVE: the kernel's BASIC set.
      rangeIoctls: UFFD_API_RANGE_IOCTLS_BASIC,
      fileOps: { pread: 0, pwrite: EINVAL, punchHole: 0 },
      inodePageShift: (request) =>
        request.hugePageShift === 0 || request.hugePageShift === HPAGE_SHIFT_2M ? HPAGE_SHIFT_2M : -EINVAL,
      mmapCheck: (_inode, request) => (request.offsetBytes % 2 ** HPAGE_SHIFT_2M === 0 ? 0 : -EINVAL),
      fault: filemapFault(services, policy),
      getFolioForWrite: filemapGetForWrite(services, policy),
      uffdOps: filemapUffdOps(services, policy, () => true),
    } satisfies MemoryType;
  },
};
