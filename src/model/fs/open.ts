/**
 * fs/open.c: opening a file again or a device node, truncate and fallocate.
 */
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, O_ACCMODE, O_RDONLY } from '../../uapi/constants.ts';
import { EBADF, EINVAL, ENOENT, EOPNOTSUPP } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { Inode } from '../mem/pagecache.ts';
import { truncatePagecache } from '../mm/truncate.ts';
import type { ModelProcess } from '../process.ts';
import { openDevUserfaultfd } from './userfaultfd.ts';

/** Opens another description of the same inode with a different access mode (open("/proc/self/fd/N")). */
export function reopen(process: ModelProcess, fd: number, accessMode: number): number {
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if ((accessMode & ~O_ACCMODE) !== 0 || (accessMode & O_ACCMODE) === O_ACCMODE) {
    return process.fail(EINVAL, 'flags', `bad access mode ${hex(accessMode)}`);
  }
  file.inode.references++;
  return process.installFd({ kind: 'inode', inode: file.inode, accessMode, flags: 0, references: 1 });
}

/** open(2) of a device node a memory type provides (or /dev/userfaultfd). */
export function openDevice(process: ModelProcess, path: string, accessMode: number): number {
  if (path === '/dev/userfaultfd') return openDevUserfaultfd(process, accessMode);
  const driver = process.kernel.device(path);
  if (driver === undefined) return process.fail(ENOENT, 'path', `${path} does not exist in the model`);
  const refused = driver.openCheck(process.privileged);
  if (refused < 0) return process.fail(-refused, 'path', `${path} refuses this caller`);
  return process.installFd({ kind: 'device', device: driver.open(), references: 1 });
}

export function ftruncate(process: ModelProcess, fd: number, length: number): number {
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if (length < 0 || !Number.isInteger(length)) return process.fail(EINVAL, 'length', `${length} is negative`);
  if (file.accessMode === O_RDONLY) return process.fail(EINVAL, 'fd', 'not open for writing');
  const inode = file.inode;
  if (inode.pageShift > 12 && length % inode.pageSize !== 0) {
    return process.fail(
      EINVAL,
      'length',
      `${length} is not a multiple of the ${inode.pageSize / 1024} KiB huge pages`,
    );
  }
  if (length < inode.sizeBytes)
    truncatePagecache(process.kernel.memory, inode, { from: length, to: inode.sizeBytes }, true);
  inode.sizeBytes = length;
  return 0;
}

/** fallocate(2): preallocate, or punch a hole (with FALLOC_FL_KEEP_SIZE). */
export function fallocate(
  process: ModelProcess,
  fd: number,
  mode: number,
  offset: number,
  length: number,
): number {
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if (offset < 0 || length <= 0)
    return process.fail(EINVAL, offset < 0 ? 'offset' : 'len', 'must be positive');
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
    return process.fail(EOPNOTSUPP, 'mode', `unsupported mode ${hex(mode)}`);
  if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) {
    return process.fail(EOPNOTSUPP, 'mode', 'FALLOC_FL_PUNCH_HOLE needs FALLOC_FL_KEEP_SIZE');
  }
  if (file.accessMode === O_RDONLY) return process.fail(EBADF, 'fd', 'not open for writing');
  const inode = file.inode;
  const type = inode.memoryType;
  const hooks = process.kernel.hooks;
  const refused = hooks.fallocateCheck(type, inode, mode);
  if (refused < 0) {
    const reason = hooks.lastViolation ?? `${type.name} files refuse fallocate mode ${hex(mode)}`;
    return process.fail(-refused, 'mode', reason);
  }
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    if (type.fileOps.punchHole !== 0)
      return process.fail(type.fileOps.punchHole, 'mode', `${type.name} cannot punch holes`);
    // Private COW copies survive a punched hole; only page-cache pages are unmapped.
    const to = Math.min(offset + length, inode.sizeBytes);
    truncatePagecache(process.kernel.memory, inode, { from: offset, to }, false);
    return 0;
  }
  const allocated = preallocate(process, inode, offset, length);
  if (allocated < 0) return allocated;
  if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > inode.sizeBytes) inode.sizeBytes = offset + length;
  return 0;
}

/** Allocates every folio of [offset, offset + length) through the type's getFolioForWrite. */
function preallocate(process: ModelProcess, inode: Inode, offset: number, length: number): number {
  const type = inode.memoryType;
  const hooks = process.kernel.hooks;
  if (type.getFolioForWrite === undefined)
    return process.fail(EOPNOTSUPP, 'mode', `${type.name} cannot preallocate`);
  const first = Math.floor(offset / inode.pageSize) * (inode.pageSize / 4096);
  for (let pgoff = first; pgoff * 4096 < offset + length; pgoff += inode.pageSize / 4096) {
    const pfn = hooks.getFolioForWrite(type, inode, pgoff);
    if (pfn < 0) {
      const reason = hooks.lastViolation ?? `allocating the page at offset ${pgoff * 4096} failed`;
      return process.fail(-pfn, 'len', reason);
    }
  }
  return 0;
}
