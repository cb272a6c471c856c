/**
 * fs/read_write.c and fs/select.c: pread, pwrite, write and lseek on files
 * (through the page cache, or a type's own write), read and poll on a
 * userfaultfd. The VFS's checks come first, on the open file's f_mode
 * (fs/file.ts), in the kernel's order, whatever kind of file the fd names.
 */
import { EBADF, EINVAL, ENXIO, ESPIPE } from '../../uapi/errno.ts';
import { filemapLookup, type Inode } from '../mem/pagecache.ts';
import { PG_UPTODATE } from '../mem/physmem.ts';
import type { ModelProcess, OpenFile } from '../process.ts';
import {
  describeFile,
  FMODE_CAN_READ,
  FMODE_CAN_WRITE,
  FMODE_LSEEK,
  FMODE_PREAD,
  FMODE_PWRITE,
  FMODE_READ,
  FMODE_WRITE,
  fmodeOf,
} from './file.ts';

const SEEK_CUR = 1;
const SEEK_END = 2;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
/** ksys_lseek refuses anything above SEEK_HOLE before the file's llseek. */
const SEEK_MAX = SEEK_HOLE;

/**
 * The VFS checks of a read at a position (ksys_pread64, vfs_read,
 * rw_verify_area), in their order; the open file when they pass, else -errno.
 */
function readableAt(process: ModelProcess, fd: number, length: number, offset: number): OpenFile | number {
  if (offset < 0) return process.fail(EINVAL, 'offset', `${offset} is negative`);
  const file = process.file(fd);
  if (file === undefined) return process.fail(EBADF, 'fd', `${fd} is not open`);
  const fmode = fmodeOf(file);
  if (!(fmode & FMODE_PREAD))
    return process.fail(ESPIPE, 'fd', `${describeFile(file)} has no file position to read at`);
  if (!(fmode & FMODE_READ))
    return process.fail(EBADF, 'fd', `${describeFile(file)} is not open for reading`);
  if (!(fmode & FMODE_CAN_READ))
    return process.fail(EINVAL, 'fd', `${describeFile(file)} has no read operation`);
  if (length < 0) return process.fail(EINVAL, 'count', `${length} is negative`);
  return file;
}

/** The VFS checks of a write (ksys_write or ksys_pwrite64, vfs_write), in their order. */
function writable(process: ModelProcess, fd: number, offset: number | null): OpenFile | number {
  if (offset !== null && offset < 0) return process.fail(EINVAL, 'offset', `${offset} is negative`);
  const file = process.file(fd);
  if (file === undefined) return process.fail(EBADF, 'fd', `${fd} is not open`);
  const fmode = fmodeOf(file);
  if (offset !== null && !(fmode & FMODE_PWRITE))
    return process.fail(ESPIPE, 'fd', `${describeFile(file)} has no file position to write at`);
  if (!(fmode & FMODE_WRITE))
    return process.fail(EBADF, 'fd', `${describeFile(file)} is not open for writing`);
  if (!(fmode & FMODE_CAN_WRITE))
    return process.fail(EINVAL, 'fd', `${describeFile(file)} has no write operation`);
  return file;
}

/** What passed the VFS checks but is not a file the model reads or writes through the page cache. */
function notAnInode(process: ModelProcess, file: OpenFile, call: string): number {
  return process.fail(EINVAL, 'fd', `${describeFile(file)} does not support ${call} in the model`);
}

export function pread(
  process: ModelProcess,
  fd: number,
  length: number,
  offset: number,
): Uint8Array | number {
  const file = readableAt(process, fd, length, offset);
  if (typeof file === 'number') return file;
  if (file.kind !== 'inode') return notAnInode(process, file, 'pread');
  const inode = file.inode;
  if (inode.memoryType.fileOps.pread !== 0) {
    return process.fail(
      inode.memoryType.fileOps.pread,
      'fd',
      `${inode.memoryType.name} files do not support pread`,
    );
  }
  const end = Math.min(offset + length, inode.sizeBytes);
  if (end <= offset) return new Uint8Array(0);
  const out = new Uint8Array(end - offset);
  const memory = process.kernel.memory;
  for (let at = offset; at < end; ) {
    const span = Math.min(end - at, 4096 - (at % 4096));
    const pgoff = Math.floor(at / 4096);
    const pfn = filemapLookup(inode, pgoff);
    if (pfn >= 0) {
      const tail = pgoff - memory.folioIndex[pfn]!;
      const source = memory.frameOffset(pfn) + tail * 4096 + (at % 4096);
      out.set(memory.frameBuffer(pfn).subarray(source, source + span), at - offset);
    }
    at += span;
  }
  return out;
}

export function pwrite(process: ModelProcess, fd: number, data: Uint8Array, offset: number): number {
  const file = writable(process, fd, offset);
  if (typeof file === 'number') return file;
  if (file.kind !== 'inode') return notAnInode(process, file, 'pwrite');
  return pwriteInode(process, file.inode, data, offset);
}

/** Writes through the page cache, a folio at a time; a short count when a later folio fails. */
function pwriteInode(process: ModelProcess, inode: Inode, data: Uint8Array, offset: number): number {
  const type = inode.memoryType;
  if (type.fileOps.pwrite !== 0)
    return process.fail(type.fileOps.pwrite, 'fd', `${type.name} files do not support pwrite`);
  if (type.getFolioForWrite === undefined)
    return process.fail(EINVAL, 'fd', `${type.name} files cannot be written`);
  const { memory, hooks } = process.kernel;
  let written = 0;
  while (written < data.byteLength) {
    const at = offset + written;
    const span = Math.min(data.byteLength - written, 4096 - (at % 4096));
    const pgoff = Math.floor(at / 4096);
    const pfn = hooks.getFolioForWrite(type, inode, pgoff);
    if (pfn < 0) {
      if (written > 0) break;
      return process.fail(-pfn, 'data', hooks.lastViolation ?? `allocating the page at offset ${at} failed`);
    }
    const tail = pgoff - memory.folioIndex[pfn]!;
    memory
      .frameBuffer(pfn)
      .set(data.subarray(written, written + span), memory.frameOffset(pfn) + tail * 4096 + (at % 4096));
    written += span;
    if (at + span > inode.sizeBytes) inode.sizeBytes = at + span;
  }
  return written;
}

/** write(2) at the file position: a type's own write, else the page cache as pwrite. */
export function write(process: ModelProcess, fd: number, data: Uint8Array): number {
  const file = writable(process, fd, null);
  if (typeof file === 'number') return file;
  if (file.kind !== 'inode') return notAnInode(process, file, 'write');
  const position = file.position ?? 0;
  const type = file.inode.memoryType;
  const hooks = process.kernel.hooks;
  const written =
    type.write !== undefined
      ? hooks.write(type, file.inode, data, position)
      : pwriteInode(process, file.inode, data, position);
  if (written < 0) {
    const reason = hooks.lastViolation ?? `${type.name} refused the write at offset ${position}`;
    return process.fail(-written, 'data', reason);
  }
  file.position = position + written;
  return written;
}

/**
 * lseek(2): ksys_lseek refuses an unknown whence, vfs_llseek a file without
 * llseek (ESPIPE: guest_memfd on 6.18). Every file the model has that is not
 * a regular one (a userfaultfd, /dev/userfaultfd, KVM's device and VM files)
 * has noop_llseek: the call succeeds and the position stays 0, whatever is
 * asked. A regular file takes its type's llseek (`FileOps.llseek`).
 */
export function lseek(process: ModelProcess, fd: number, offset: number, whence: number): number {
  const file = process.file(fd);
  if (file === undefined) return process.fail(EBADF, 'fd', `${fd} is not open`);
  if (whence < 0 || whence > SEEK_MAX)
    return process.fail(EINVAL, 'whence', `${whence} is not a SEEK_ value`);
  if (!(fmodeOf(file) & FMODE_LSEEK))
    return process.fail(ESPIPE, 'fd', `${describeFile(file)} has no llseek`);
  if (file.kind !== 'inode') return 0;
  const inode = file.inode;
  let position: number;
  if (whence === SEEK_DATA || whence === SEEK_HOLE) {
    position =
      inode.memoryType.fileOps.llseek === 'page-cache'
        ? seekHoleDataPageCache(process, inode, offset, whence)
        : seekHoleDataDefault(process, inode, offset, whence);
    if (position < 0) return position;
  } else {
    const base = whence === SEEK_END ? inode.sizeBytes : whence === SEEK_CUR ? (file.position ?? 0) : 0;
    position = base + offset;
  }
  // vfs_setpos: a regular file's position is never negative.
  if (position < 0) return process.fail(EINVAL, 'offset', 'the position would be negative');
  file.position = position;
  return position;
}

function noData(process: ModelProcess, inode: Inode, offset: number, whence: number): number {
  const what = whence === SEEK_DATA ? 'no data' : 'no hole';
  return process.fail(
    ENXIO,
    'offset',
    `${what} in ${inode.name} at or after ${offset} (size ${inode.sizeBytes})`,
  );
}

/**
 * default_llseek: the whole file up to its size is data, with the virtual
 * hole at its end [OBS: host 6.18, hugetlbfs memfd]. ENXIO at or past the
 * size.
 */
function seekHoleDataDefault(process: ModelProcess, inode: Inode, offset: number, whence: number): number {
  if (offset < 0 || offset >= inode.sizeBytes) return noData(process, inode, offset, whence);
  return whence === SEEK_DATA ? offset : inode.sizeBytes;
}

/**
 * shmem_file_llseek through mapping_seek_hole_data: data is what the page
 * cache holds up to date (a fallocated folio not yet written counts as a
 * hole); SEEK_DATA finds the first such byte at or after `offset`, SEEK_HOLE
 * the first byte that is not, or the size. ENXIO for a negative offset, one
 * at or past the size, or no data after it [OBS: host 6.18, memfd].
 */
function seekHoleDataPageCache(process: ModelProcess, inode: Inode, offset: number, whence: number): number {
  const size = inode.sizeBytes;
  if (offset < 0 || offset >= size) return noData(process, inode, offset, whence);
  const memory = process.kernel.memory;
  const folioPages = inode.pagesPerFolio;
  const firstHead = Math.floor(offset / inode.pageSize) * folioPages;
  // The first up-to-date folio at or after offset, and the first hole.
  let start = offset;
  let found = -1;
  inode.cache.forEachInRange(firstHead, Math.ceil(size / 4096), (pgoff, _flags, pfn) => {
    if (found >= 0) return;
    const folioStart = pgoff * 4096;
    const folioEnd = folioStart + inode.pageSize;
    if (folioEnd <= start) return;
    const data = memory.hasFlag(pfn, PG_UPTODATE);
    if (whence === SEEK_HOLE) {
      // A gap before this folio, or a folio that is not data, is the hole at `start`.
      if (folioStart > start || !data) found = start;
      else start = folioEnd;
      return;
    }
    if (data) found = Math.max(start, folioStart);
  });
  if (found >= 0) return Math.min(found, size);
  if (whence === SEEK_DATA) return noData(process, inode, offset, whence);
  return Math.min(start, size);
}

/** read(2) on a userfaultfd (other files use pread). Never blocks. */
export function read(process: ModelProcess, fd: number, count: number): Uint8Array | number {
  const file = process.file(fd);
  if (file === undefined) return process.fail(EBADF, 'fd', `${fd} is not open`);
  if (file.kind === 'uffd') return file.uffd.read(count, process);
  if (file.kind === 'inode') return process.fail(ESPIPE, 'fd', 'use pread on files');
  return process.fail(EINVAL, 'fd', 'not readable');
}

/** poll(2) of one fd: its revents (POLLNVAL for a closed fd, POLLIN|POLLOUT for a file). */
export function poll(process: ModelProcess, fd: number): number {
  const file = process.file(fd);
  if (file === undefined) return 0x20;
  if (file.kind === 'uffd') return file.uffd.poll();
  return 0x1 | 0x4;
}
