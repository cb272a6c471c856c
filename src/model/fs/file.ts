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
import { ESPIPE } from '../../uapi/errno.ts';
import type { FileOps } from '../mm/memtype.ts';
import type { OpenFile } from '../process.ts';

export const FMODE_READ = 0x1;
export const FMODE_WRITE = 0x2;
/** The file has an llseek: without it lseek is ESPIPE (vfs_llseek). */
export const FMODE_LSEEK = 0x4;
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

/**
 * do_dentry_open: a file opened through a path is positioned (pread/pwrite
 * allowed). Every such file the model has (regular files, /dev/userfaultfd,
 * /dev/kvm) has an llseek.
 */
export function openedFmode(accessMode: number, ops: FileOperations): number {
  const fmode = accessFmode(accessMode) | FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE;
  return fmode | canFmode(fmode, ops);
}

/**
 * anon_inode_getfile / alloc_file_pseudo: no FMODE_PREAD / FMODE_PWRITE, so
 * pread and pwrite are ESPIPE; FMODE_LSEEK when the f_op has an llseek
 * (a userfaultfd's and a KVM VM's noop_llseek).
 */
export function pseudoFmode(accessMode: number, ops: FileOperations, llseek = true): number {
  const fmode = accessFmode(accessMode) | (llseek ? FMODE_LSEEK : 0);
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
  if (file.kind === 'inode') return inodeFmode(file);
  if (file.kind === 'uffd') return USERFAULTFD_FMODE;
  return file.fmode;
}

/**
 * A type whose files refuse pread and pwrite with ESPIPE makes them with
 * alloc_file_pseudo (guest_memfd): no FMODE_PREAD / FMODE_PWRITE, and an
 * inode whose i_fop is no_open_fops, so /proc/self/fd/N cannot be opened
 * again (ENXIO).
 */
export function isPseudoFile(ops: FileOps): boolean {
  return ops.pread === ESPIPE && ops.pwrite === ESPIPE;
}

/**
 * A memory type's file: opened through a path, unless its type says it is a
 * pseudo file (pread / pwrite ESPIPE: guest_memfd), which has FMODE_LSEEK
 * only with an llseek.
 */
function inodeFmode(file: OpenFile & { kind: 'inode' }): number {
  const type = file.inode.memoryType;
  const ops = type.fileOps;
  if (isPseudoFile(ops)) {
    // Its f_op has no read_iter; a write only when the type has its own write(2).
    const fops = { read: false, write: type.write !== undefined };
    return pseudoFmode(file.accessMode, fops, ops.llseek !== 'none');
  }
  const fmode = openedFmode(file.accessMode, { read: true, write: true });
  return (
    fmode &
    ~(ops.pread === ESPIPE ? FMODE_PREAD : 0) &
    ~(ops.pwrite === ESPIPE ? FMODE_PWRITE : 0) &
    ~(ops.llseek === 'none' ? FMODE_LSEEK : 0)
  );
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
