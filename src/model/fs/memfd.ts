/** mm/memfd.c: memfd_create(2), a file of the memory type that provides memfds. */
import {
  MAP_HUGE_MASK,
  MAP_HUGE_SHIFT,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_EXEC,
  MFD_HUGETLB,
  MFD_NAME_MAX_LEN,
  MFD_NOEXEC_SEAL,
  O_CLOEXEC,
  O_RDWR,
} from '../../uapi/constants.ts';
import { EINVAL } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { ModelProcess } from '../process.ts';

const KNOWN_FLAGS = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC;

export function memfdCreate(process: ModelProcess, name: string, flags: number): number {
  const refused = checkMemfdFlags(process, flags);
  if (refused < 0) return refused;
  if (name.length > MFD_NAME_MAX_LEN)
    return process.fail(EINVAL, 'name', `longer than ${MFD_NAME_MAX_LEN} bytes`);
  const kernel = process.kernel;
  const type = kernel.provider(flags & MFD_HUGETLB ? 'memfd-hugetlb' : 'memfd');
  if (type === undefined) return process.fail(EINVAL, 'flags', 'no memory type provides this kind of memfd');
  const hugeBits = (flags >>> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
  const pageShift = kernel.hooks.inodePageShift(type, { hugePageShift: hugeBits });
  if (pageShift < 0) {
    const reason = kernel.hooks.lastViolation ?? `huge page size 2^${hugeBits} is not available`;
    return process.fail(-pageShift, 'flags', reason);
  }
  const inode = kernel.createInode(type, `memfd:${name}`, pageShift, 0);
  if (typeof inode === 'number') return process.fail(-inode, 'flags', kernel.hooks.lastViolation!);
  inode.references++;
  return process.installFd({
    kind: 'inode',
    inode,
    accessMode: O_RDWR,
    flags: flags & MFD_CLOEXEC ? O_CLOEXEC : 0,
    references: 1,
  });
}

function checkMemfdFlags(process: ModelProcess, flags: number): number {
  if (flags & MFD_HUGETLB) {
    if ((flags & ~(KNOWN_FLAGS | (MAP_HUGE_MASK << MAP_HUGE_SHIFT))) !== 0) {
      return process.fail(EINVAL, 'flags', `unknown flags ${hex(flags)}`);
    }
  } else if ((flags & ~KNOWN_FLAGS) !== 0) {
    return process.fail(EINVAL, 'flags', `unknown flags ${hex(flags & ~KNOWN_FLAGS)}`);
  }
  if (flags & MFD_NOEXEC_SEAL && flags & MFD_EXEC)
    return process.fail(EINVAL, 'flags', 'MFD_NOEXEC_SEAL with MFD_EXEC');
  return 0;
}
