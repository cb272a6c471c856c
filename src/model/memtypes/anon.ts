/**
 * Anonymous memory (the kernel's built-in anon_uffd_ops). Private anonymous
 * VMAs use it, and so do COPY and ZEROPAGE into MAP_PRIVATE file mappings:
 * what they fill is anonymous memory, the file's hole stays empty.
 */
import {
  _UFFDIO_COPY,
  _UFFDIO_MOVE,
  _UFFDIO_POISON,
  _UFFDIO_WAKE,
  _UFFDIO_WRITEPROTECT,
  _UFFDIO_ZEROPAGE,
} from '../../uapi/constants.ts';
import { ENOMEM } from '../../uapi/errno.ts';
import type { MemoryType, MemoryTypeModule } from '../mm/memtype.ts';
import { VM_HUGETLB } from '../mm/vma.ts';

const bit = (nr: number) => 1n << BigInt(nr);

export const anonymous: MemoryTypeModule = {
  name: 'anon',
  create(services) {
    return {
      name: 'anon',
      description: 'private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS)',
      provides: ['anonymous'],
      vmFlags: 0,
      // No CONTINUE: anonymous memory has no page cache, so MINOR mode is refused.
      rangeIoctls:
        bit(_UFFDIO_WAKE) |
        bit(_UFFDIO_COPY) |
        bit(_UFFDIO_ZEROPAGE) |
        bit(_UFFDIO_MOVE) |
        bit(_UFFDIO_WRITEPROTECT) |
        bit(_UFFDIO_POISON),
      fileOps: { pread: 0, pwrite: 0, punchHole: 0 },
      uffdOps: {
        canUserfault: () => true,
        allocFolio(vma) {
          // Private hugetlb fills come from the hugetlb pool at the VMA's page size.
          const pfn = services.allocFolio(vma.pageShift - 12, { hugetlb: (vma.flags & VM_HUGETLB) !== 0 });
          return pfn < 0 ? -ENOMEM : pfn;
        },
      },
    } satisfies MemoryType;
  },
};
