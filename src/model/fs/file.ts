/**
 * include/linux/fs.h's f_mode and the inode's file type: what the VFS checks
 * before a read, write, seek or fallocate reaches a file's own operations.
 * Linux decides these calls on the open file description, not on what the
 * fd refers to, so the model does too: a file opened through a path (a
 * memfd, a device node) gets FMODE_PREAD | FMODE_PWRITE in do_dentry_open;
 * an anonymous-inode file (a userfaultfd, a KVM VM) does not, and its inode
 * is neither a regular file nor a device.
 */
import { O_ACCMODE, O_RDONLY, O_RDWR, O_WRONLY } from '../../uapi/constants.ts';
import type { OpenFile } from '../process.ts';

export const FMODE_READ = 0x1;
export const FMODE_WRITE = 0x2;
export const FMODE_PREAD = 0x8;
export const FMODE_PWRITE = 0x10;
/** Set when the file's f_op has read/read_iter (write/write_iter): vfs_read's EINVAL otherwise. */
export const FMODE_CAN_READ = 0x20000;
export const FMODE_CAN_WRITE = 0x40000;

/** S_IFMT of the file's inode, as far as the VFS checks tell them apart. */
export type InodeType = 'reg' | 'chr' | 'anon';

/** The f_op entries the VFS looks at before calling into them. */
export interface FileOperations {
  readonly read: boolean;
  readonly write: boolean;
}

/** OPEN_FMODE: the access mode's FMODE_READ / FMODE_WRITE. */
function accessFmode(accessMode: number): number {
  const mode = accessMode & O_ACCMODE;
  return (
    (mode === O_RDONLY || mode === O_RDWR ? FMODE_READ : 0) |
    (mode === O_WRONLY || mode === O_RDWR ? FMODE_WRITE : 0)
  );
}

function canFmode(fmode: number, ops: FileOperations): number {
  return (
    (fmode & FMODE_READ && ops.read ? FMODE_CAN_READ : 0) |
    (fmode & FMODE_WRITE && ops.write ? FMODE_CAN_WRITE : 0)
  );
}

/** do_dentry_open: a file opened through a path is positioned (pread/pwrite allowed). */
export function openedFmode(accessMode: number, ops: FileOperations): number {
  const fmode = accessFmode(accessMode) | FMODE_PREAD | FMODE_PWRITE;
  return fmode | canFmode(fmode, ops);
}

/** anon_inode_getfile / alloc_file_pseudo: no FMODE_PREAD / FMODE_PWRITE, so pread and pwrite are ESPIPE. */
export function pseudoFmode(accessMode: number, ops: FileOperations): number {
  const fmode = accessFmode(accessMode);
  return fmode | canFmode(fmode, ops);
}

/**
 * Every userfaultfd file, from userfaultfd(2), USERFAULTFD_IOC_NEW or a FORK
 * event, is anon_inode_getfd(..., O_RDONLY | flags) with userfaultfd_fops:
 * readable (read_iter), never writable, not positioned.
 */
const USERFAULTFD_FMODE = pseudoFmode(O_RDONLY, { read: true, write: false });

/**
 * The f_mode of an open file. A regular file's comes from its access mode
 * (shmem and hugetlbfs have read_iter and write_iter; a memory type that
 * refuses pread or pwrite says so through its fileOps); a device file
 * carries the f_mode it was made with.
 */
export function fmodeOf(file: OpenFile): number {
  if (file.kind === 'inode') return openedFmode(file.accessMode, { read: true, write: true });
  if (file.kind === 'uffd') return USERFAULTFD_FMODE;
  return file.fmode;
}

export function inodeTypeOf(file: OpenFile): InodeType {
  if (file.kind === 'inode') return 'reg';
  if (file.kind === 'device') return file.inodeType;
  return file.kind === 'dev-userfaultfd' ? 'chr' : 'anon';
}

/** How an error message names the file an fd refers to. */
export function describeFile(file: OpenFile): string {
  if (file.kind === 'inode') return file.inode.name;
  if (file.kind === 'uffd') return 'a userfaultfd';
  if (file.kind === 'dev-userfaultfd') return '/dev/userfaultfd';
  return file.inodeType === 'chr' ? `the ${file.device.name} device` : `a ${file.device.name} file`;
}
