/**
 * fs/read_write.c and fs/select.c: pread, pwrite, write and lseek on files
 * (through the page cache, or a type's own write), read and poll on a
 * userfaultfd.
 */
import { O_RDONLY, O_WRONLY } from '../../uapi/constants.ts';
import { EBADF, EINVAL, ESPIPE } from '../../uapi/errno.ts';
import { filemapLookup } from '../mem/pagecache.ts';
import type { ModelProcess } from '../process.ts';

export function pread(
  process: ModelProcess,
  fd: number,
  length: number,
  offset: number,
): Uint8Array | number {
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if (file.accessMode === O_WRONLY) return process.fail(EBADF, 'fd', 'not open for reading');
  const inode = file.inode;
  if (inode.memoryType.fileOps.pread !== 0) {
    return process.fail(
      inode.memoryType.fileOps.pread,
      'fd',
      `${inode.memoryType.name} files do not support pread`,
    );
  }
  if (offset < 0 || length < 0) return process.fail(EINVAL, offset < 0 ? 'offset' : 'count', 'is negative');
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
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if (file.accessMode === O_RDONLY) return process.fail(EBADF, 'fd', 'not open for writing');
  const inode = file.inode;
  const type = inode.memoryType;
  if (type.fileOps.pwrite !== 0)
    return process.fail(type.fileOps.pwrite, 'fd', `${type.name} files do not support pwrite`);
  if (offset < 0) return process.fail(EINVAL, 'offset', 'is negative');
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
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  if (file.accessMode === O_RDONLY) return process.fail(EBADF, 'fd', 'not open for writing');
  const position = file.position ?? 0;
  const type = file.inode.memoryType;
  const hooks = process.kernel.hooks;
  const written =
    type.write !== undefined
      ? hooks.write(type, file.inode, data, position)
      : pwrite(process, fd, data, position);
  if (written < 0) {
    const reason = hooks.lastViolation ?? `${type.name} refused the write at offset ${position}`;
    return process.fail(-written, 'data', reason);
  }
  file.position = position + written;
  return written;
}

/** lseek(2) with SEEK_SET (0) or SEEK_CUR (1). */
export function lseek(process: ModelProcess, fd: number, offset: number, whence: number): number {
  const file = process.inodeFile(fd);
  if (typeof file === 'number') return file;
  const base = whence === 0 ? 0 : whence === 1 ? (file.position ?? 0) : Number.NaN;
  if (Number.isNaN(base)) return process.fail(EINVAL, 'whence', `unsupported whence ${whence}`);
  if (base + offset < 0) return process.fail(EINVAL, 'offset', 'the position would be negative');
  file.position = base + offset;
  return file.position;
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
