/**
 * fs/open.c: opening a file again or a device node, truncate and fallocate.
 */
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, O_ACCMODE, O_RDONLY } from '../../uapi/constants.ts';
import { EBADF, EINVAL, ENODEV, ENOENT, ENXIO, EOPNOTSUPP } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { Inode } from '../mem/pagecache.ts';
import { truncatePagecache } from '../mm/truncate.ts';
import type { ModelProcess } from '../process.ts';
import { describeFile, FMODE_WRITE, fmodeOf, isPseudoFile, openedFmode } from './file.ts';
import { openDevUserfaultfd } from './userfaultfd.ts';

/** Opens another description of the same inode with a different access mode (open("/proc/self/fd/N")). */
export function reopen(process: ModelProcess, fd: number, accessMode: number): number {
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if (isPseudoFile(file.inode.memoryType.fileOps))
    return process.fail(ENXIO, 'path', `${describeFile(file)} is a pseudo file that cannot be opened again`);
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
  // A device node the core opens through its path: positioned, no read or write (DeviceFile has only ioctl).
  const fmode = openedFmode(accessMode, { read: false, write: false });
  return process.installFd({ kind: 'device', device: driver.open(), fmode, inodeType: 'chr', references: 1 });
}

export function ftruncate(process: ModelProcess, fd: number, length: number): number {
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if (length < 0 || !Number.isInteger(length)) return process.fail(EINVAL, 'length', `${length} is negative`);
  // do_ftruncate: a pseudo file's inode is not S_ISREG (and guest_memfd's setattr refuses a size).
  if (isPseudoFile(file.inode.memoryType.fileOps))
    return process.fail(EINVAL, 'fd', `${describeFile(file)} is not a regular file`);
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

/**
 * fallocate(2): preallocate, or punch a hole (with FALLOC_FL_KEEP_SIZE).
 * vfs_fallocate's checks in its order: the range, the mode, FMODE_WRITE,
 * then the file type (only regular files reach a file's fallocate here).
 */
export function fallocate(
  process: ModelProcess,
  fd: number,
  mode: number,
  offset: number,
  length: number,
): number {
  const file = process.file(fd);
  if (file === undefined) return process.fail(EBADF, 'fd', `${fd} is not open`);
  if (offset < 0 || length <= 0)
    return process.fail(EINVAL, offset < 0 ? 'offset' : 'len', 'must be positive');
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
    return process.fail(EOPNOTSUPP, 'mode', `unsupported mode ${hex(mode)}`);
  if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) {
    return process.fail(EOPNOTSUPP, 'mode', 'FALLOC_FL_PUNCH_HOLE needs FALLOC_FL_KEEP_SIZE');
  }
  if (!(fmodeOf(file) & FMODE_WRITE))
    return process.fail(EBADF, 'fd', `${describeFile(file)} is not open for writing`);
  if (file.kind !== 'inode')
    return process.fail(ENODEV, 'fd', `${describeFile(file)} is not a regular file or block device`);
  const inode = file.inode;
  if (mode & FALLOC_FL_PUNCH_HOLE) return punchHole(process, inode, offset, length);
  const refused = fallocateCheck(process, inode, mode);
  if (refused < 0) return refused;
  const allocated = preallocate(process, inode, offset, length);
  if (allocated < 0) return allocated;
  if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > inode.sizeBytes) inode.sizeBytes = offset + length;
  return 0;
}

/** The memory type's fallocate checks of `mode`: 0 or -errno. */
function fallocateCheck(process: ModelProcess, inode: Inode, mode: number): number {
  const type = inode.memoryType;
  const hooks = process.kernel.hooks;
  const refused = hooks.fallocateCheck(type, inode, mode);
  if (refused >= 0) return 0;
  const reason = hooks.lastViolation ?? `${type.name} files refuse fallocate mode ${hex(mode)}`;
  return process.fail(-refused, 'mode', reason);
}

/**
 * The file's fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE), past
 * vfs_fallocate's checks: from fallocate(2), and from MADV_REMOVE on the
 * file its VMA held. 0 or -errno.
 */
export function punchHole(process: ModelProcess, inode: Inode, offset: number, length: number): number {
  const refused = fallocateCheck(process, inode, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  if (refused < 0) return refused;
  const type = inode.memoryType;
  if (type.fileOps.punchHole !== 0)
    return process.fail(type.fileOps.punchHole, 'mode', `${type.name} cannot punch holes`);
  // Private COW copies survive a punched hole; only page-cache pages are unmapped.
  const to = Math.min(offset + length, inode.sizeBytes);
  truncatePagecache(process.kernel.memory, inode, { from: offset, to }, false);
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
