/**
 * A memory type written outside faultline, for `faultline conformance
 * --module`: a page-cache file type (4 KiB folios, created by memfd_create)
 * that supports MISSING faults answered with UFFDIO_COPY and MINOR faults
 * answered with UFFDIO_CONTINUE. It composes the page-cache helpers the
 * built-in shmem uses; its declaration is the whole contract the suite
 * checks it against (what registers, which ioctls each register returns).
 *
 *   npx faultline conformance --module examples/memtype/page-cache-type.ts --memtype page-cache-type
 */
import {
  filemapFault,
  filemapGetForWrite,
  filemapUffdOps,
  type MemoryType,
  type MemoryTypeModule,
} from 'faultline/memtype';
import { _UFFDIO_CONTINUE, _UFFDIO_COPY, _UFFDIO_WAKE, EINVAL } from 'faultline/uapi';

/** 4 KiB folios in the type's own page cache; a private mapping's hole gets a page-cache page too. */
const policy = { order: 0, hugetlb: false, privateHolesAreAnonymous: false };

const pageCacheType: MemoryTypeModule = {
  name: 'page-cache-type',
  create(services) {
    return {
      name: 'page-cache-type',
      description: 'an outside page-cache type: MISSING with COPY, MINOR with CONTINUE',
      provides: ['memfd'],
      vmFlags: 0,
      // The range ioctls it supports; the register modes follow (COPY: MISSING, CONTINUE: MINOR).
      rangeIoctls: (1n << BigInt(_UFFDIO_WAKE)) | (1n << BigInt(_UFFDIO_COPY)) | (1n << BigInt(_UFFDIO_CONTINUE)),
      fileOps: { pread: 0, pwrite: 0, punchHole: 0 },
      inodePageShift: (request) => (request.hugePageShift === 0 ? 12 : -EINVAL),
      fault: filemapFault(services, policy),
      getFolioForWrite: filemapGetForWrite(services, policy),
      uffdOps: filemapUffdOps(services, policy, () => true),
    } satisfies MemoryType;
  },
};

export default pageCacheType;
