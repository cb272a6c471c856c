/**
 * mmap(2) (mm/mmap.c do_mmap): check the arguments, find what backs the
 * mapping (a file, or the memory type that provides anonymous, shared
 * anonymous or MAP_HUGETLB memory), work out the VM_* flags, place it, and
 * insert the VMA. MAP_FIXED unmaps what was there first (UNMAP events are
 * queued without waiting: the caller cannot sleep here).
 */
import {
  MAP_ANONYMOUS,
  MAP_DROPPABLE,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGE_MASK,
  MAP_HUGE_SHIFT,
  MAP_HUGETLB,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MAP_SHARED_VALIDATE,
  MAP_TYPE,
  O_RDONLY,
  O_WRONLY,
  PAGE_SIZE,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  TASK_SIZE,
} from '../../uapi/constants.ts';
import { EACCES, EBADF, EEXIST, EINVAL, ENODEV, ENOMEM } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { Inode } from '../mem/pagecache.ts';
import type { InodeFile, ModelProcess } from '../process.ts';
import type { MemoryType } from './memtype.ts';
import { unmapRange } from './munmap.ts';
import {
  VM_ACCOUNT,
  VM_DONTEXPAND,
  VM_DROPPABLE,
  VM_EXEC,
  VM_HUGETLB,
  VM_MAYEXEC,
  VM_MAYREAD,
  VM_MAYSHARE,
  VM_MAYWRITE,
  VM_NORESERVE,
  VM_READ,
  VM_SHARED,
  VM_WRITE,
  Vma,
} from './vma.ts';

export interface MmapArgs {
  readonly address: number;
  readonly length: number;
  readonly prot: number;
  readonly flags: number;
  readonly fd: number;
  readonly offset: number;
}

/** What backs a mapping: the file (none for anonymous memory), its inode, type and page size. */
interface Backing {
  readonly file: InodeFile | null;
  inode: Inode | null;
  readonly type: MemoryType;
  readonly pageShift: number;
}

/** The arguments as do_mmap reads them. */
interface MmapRequest {
  readonly args: MmapArgs;
  readonly mapType: number;
  readonly shared: boolean;
  readonly anonymous: boolean;
}

export function mmap(process: ModelProcess, args: MmapArgs): number {
  const request = checkMmapArgs(process, args);
  if (typeof request === 'number') return request;
  const backing = findBacking(process, request);
  if (typeof backing === 'number') return backing;
  const pageSize = 2 ** backing.pageShift;
  const length = Math.ceil(args.length / pageSize) * pageSize;
  if (length > TASK_SIZE)
    return process.fail(ENOMEM, 'length', `${hex(args.length)} is larger than the address space`);
  const vmFlags = mappingFlags(process, request, backing, length);
  if (vmFlags < 0) return vmFlags;
  const start = placeMapping(process, request, length, pageSize);
  if (start < 0) return start;
  const { flags, offset } = args;
  const { type, pageShift } = backing;
  const shared = request.shared;
  if (request.anonymous && (shared || flags & MAP_HUGETLB)) {
    const created = process.kernel.createInode(
      type,
      shared ? 'dev/zero' : 'anon_hugepage',
      pageShift,
      length,
    );
    if (typeof created === 'number')
      return process.fail(-created, 'flags', process.kernel.hooks.lastViolation!);
    backing.inode = created;
  }
  if (flags & MAP_FIXED) {
    // The caller cannot sleep here: UNMAP events are queued without waiting.
    const unmapped = unmapRange(process, start, start + length, null);
    if (unmapped < 0) return unmapped;
  }
  const inode = backing.inode;
  const pgoff = inode === null ? start / 4096 : offset / 4096;
  const vma = new Vma({
    start,
    end: start + length,
    flags: vmFlags,
    inode,
    pgoff,
    memoryType: type,
    pageShift,
    mm: process.mm,
  });
  process.mm.insert(vma);
  process.mm.mergeRange(start, start + length);
  return start;
}

function checkMmapArgs(process: ModelProcess, args: MmapArgs): MmapRequest | number {
  const { prot, flags, offset } = args;
  if (args.length === 0) return process.fail(EINVAL, 'length', 'is zero');
  if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0)
    return process.fail(EINVAL, 'prot', `unknown bits ${hex(prot)}`);
  const mapType = flags & MAP_TYPE;
  if (
    mapType !== MAP_SHARED &&
    mapType !== MAP_PRIVATE &&
    mapType !== MAP_SHARED_VALIDATE &&
    mapType !== MAP_DROPPABLE
  ) {
    return process.fail(EINVAL, 'flags', 'neither MAP_SHARED nor MAP_PRIVATE');
  }
  if (offset % PAGE_SIZE !== 0 || offset < 0)
    return process.fail(EINVAL, 'offset', `${hex(offset)} is not page aligned`);
  const shared = mapType === MAP_SHARED || mapType === MAP_SHARED_VALIDATE;
  const anonymous = (flags & MAP_ANONYMOUS) !== 0;
  if (mapType === MAP_DROPPABLE && !anonymous)
    return process.fail(EINVAL, 'flags', 'MAP_DROPPABLE needs MAP_ANONYMOUS');
  return { args, mapType, shared, anonymous };
}

/** The file, or the memory type that provides this kind of anonymous memory. */
function findBacking(process: ModelProcess, request: MmapRequest): Backing | number {
  const { args, shared, anonymous } = request;
  const kernel = process.kernel;
  if (!anonymous) {
    const opened = process.file(args.fd);
    if (opened === undefined) return process.fail(EBADF, 'fd', `${args.fd} is not open`);
    if (opened.kind !== 'inode') return process.fail(ENODEV, 'fd', `${args.fd} cannot be mapped`);
    const inode = opened.inode;
    return { file: opened, inode, type: inode.memoryType, pageShift: inode.pageShift };
  }
  if (args.flags & MAP_HUGETLB) {
    const hugetlb = kernel.provider('memfd-hugetlb');
    if (hugetlb === undefined) return process.fail(EINVAL, 'flags', 'no memory type provides MAP_HUGETLB');
    const shift = kernel.hooks.inodePageShift(hugetlb, {
      hugePageShift: (args.flags >>> MAP_HUGE_SHIFT) & MAP_HUGE_MASK,
    });
    if (shift < 0) return process.fail(-shift, 'flags', 'huge page size not available');
    return { file: null, inode: null, type: hugetlb, pageShift: shift };
  }
  if (shared) {
    const shmem = kernel.provider('memfd');
    if (shmem === undefined)
      return process.fail(EINVAL, 'flags', 'no memory type provides shared anonymous memory');
    return { file: null, inode: null, type: shmem, pageShift: 12 };
  }
  return { file: null, inode: null, type: kernel.env.anonymousType, pageShift: 12 };
}

/** The VMA's VM_* flags, after the file's access mode, the type's mmapCheck and the hugetlb pool agree. */
function mappingFlags(process: ModelProcess, request: MmapRequest, backing: Backing, length: number): number {
  const { args, mapType, shared } = request;
  const { prot, flags, offset } = args;
  const { file, inode, type } = backing;
  let vmFlags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | type.vmFlags;
  if (prot & PROT_READ) vmFlags |= VM_READ;
  if (prot & PROT_WRITE) vmFlags |= VM_WRITE | VM_READ;
  if (prot & PROT_EXEC) vmFlags |= VM_EXEC;
  if (shared) vmFlags |= VM_SHARED | VM_MAYSHARE;
  if (mapType === MAP_DROPPABLE) vmFlags |= VM_DROPPABLE;
  if (flags & MAP_NORESERVE) vmFlags |= VM_NORESERVE;
  if (file !== null) {
    if (file.accessMode === O_WRONLY) return process.fail(EACCES, 'fd', 'not open for reading');
    if (shared && file.accessMode === O_RDONLY) {
      if (prot & PROT_WRITE)
        return process.fail(EACCES, 'prot', 'PROT_WRITE on a MAP_SHARED mapping of a read-only fd');
      // A shared mapping of a read-only file can never become writable: it is not VM_SHARED.
      vmFlags &= ~(VM_MAYWRITE | VM_SHARED);
    }
    const hooks = process.kernel.hooks;
    const checked = hooks.mmapCheck(type, inode!, { shared, offsetBytes: offset, lengthBytes: length, prot });
    if (checked < 0)
      return process.fail(-checked, 'offset', hooks.lastViolation ?? `${type.name} refuses this mapping`);
  }
  if (type.vmFlags & VM_DONTEXPAND && !(vmFlags & VM_NORESERVE)) {
    const reserved = hugePagesReserve(process, backing, offset, length);
    if (reserved < 0) return reserved;
  }
  // accountable_mapping: hugetlb is accounted by its own reservation.
  if (!(vmFlags & VM_HUGETLB) && (vmFlags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) === VM_WRITE)
    vmFlags |= VM_ACCOUNT;
  return vmFlags;
}

/** hugetlb_reserve_pages: every huge page not yet in the file's cache must be free in the pool. */
function hugePagesReserve(process: ModelProcess, backing: Backing, offset: number, length: number): number {
  const inode = backing.inode;
  const cached = inode === null ? 0 : inode.cache.countInRange(offset / 4096, (offset + length) / 4096);
  const needed = length / 2 ** backing.pageShift - cached;
  const free = process.kernel.memory.hugePagesFree;
  if (needed > free)
    return process.fail(ENOMEM, 'length', `needs ${needed} huge pages, the pool has ${free} free`);
  return 0;
}

/** The start address: the fixed one, the hint when it is free, or a free range suitably aligned. */
function placeMapping(process: ModelProcess, request: MmapRequest, length: number, pageSize: number): number {
  const { address, flags } = request.args;
  const mm = process.mm;
  if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
    if (address % pageSize !== 0)
      return process.fail(EINVAL, 'addr', `${hex(address)} is not aligned to ${pageSize}`);
    if (address + length > TASK_SIZE || address < 0)
      return process.fail(ENOMEM, 'addr', 'outside the address space');
    if (flags & MAP_FIXED_NOREPLACE && !mm.isFree(address, address + length)) {
      return process.fail(EEXIST, 'addr', `${hex(address)} overlaps an existing mapping`);
    }
    return address;
  }
  const hint = address !== 0 && address % pageSize === 0 ? address : 0;
  const thpAligned = request.anonymous && !request.shared && length % (2 << 20) === 0;
  const align = pageSize > PAGE_SIZE ? pageSize : thpAligned ? 2 << 20 : PAGE_SIZE;
  const start =
    hint !== 0 && hint + length <= TASK_SIZE && mm.isFree(hint, hint + length)
      ? hint
      : mm.findFreeRange(length, align);
  if (start < 0) return process.fail(ENOMEM, 'length', 'no free range large enough');
  return start;
}
