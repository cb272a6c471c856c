/**
 * shmem: memfd_create, MAP_SHARED|MAP_ANONYMOUS, tmpfs. Pages live in the
 * inode's page cache; every userfaultfd mode and range ioctl is supported.
 */
import { UFFD_API_RANGE_IOCTLS } from '../../uapi/constants.ts';
import { EINVAL } from '../../uapi/errno.ts';
import type { MemoryType, MemoryTypeModule } from '../mm/memtype.ts';
import { type FilemapPolicy, filemapFault, filemapGetForWrite, filemapUffdOps } from './filemap.ts';

const policy: FilemapPolicy = {
  order: 0,
  hugetlb: false,
  privateHolesAreAnonymous: false,
  noallocPastEofInvalid: true,
};

export const shmem: MemoryTypeModule = {
  name: 'shmem',
  create(services) {
    return {
      name: 'shmem',
      description: 'shared memory: memfd_create, MAP_SHARED|MAP_ANONYMOUS, tmpfs',
      provides: ['memfd'],
      vmFlags: 0,
      // 6.18 returns the generic mask, MOVE included, although MOVE on shmem fails at run time.
      rangeIoctls: UFFD_API_RANGE_IOCTLS,
      fileOps: { pread: 0, pwrite: 0, punchHole: 0, llseek: 'page-cache' },
      inodePageShift: (request) => (request.hugePageShift === 0 ? 12 : -EINVAL),
      fault: filemapFault(services, policy),
      mapPages: true,
      getFolioForWrite: filemapGetForWrite(services, policy),
      uffdOps: filemapUffdOps(services, policy, () => true),
    } satisfies MemoryType;
  },
};
