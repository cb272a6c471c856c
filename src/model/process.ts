/**
 * A simulated process: an address space, a file-descriptor table, threads,
 * credentials, and the system calls the process API needs. Every call
 * returns its result or -errno; the reason of a failure is in `lastFailure`.
 */
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
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
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_EXEC,
  MFD_HUGETLB,
  MFD_NAME_MAX_LEN,
  MFD_NOEXEC_SEAL,
  O_ACCMODE,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PAGE_SIZE,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  TASK_SIZE,
  UFFD_USER_MODE_ONLY,
  USERFAULTFD_IOC_NEW,
} from '../uapi/constants.ts';
import {
  EACCES,
  EBADF,
  EEXIST,
  EFAULT,
  EINVAL,
  ENODEV,
  ENOENT,
  ENOMEM,
  ENOTTY,
  EOPNOTSUPP,
  EPERM,
  ESPIPE,
} from '../uapi/errno.ts';
import { fail, hex } from './failure.ts';
import type { ModelKernel } from './kernel.ts';
import { filemapDelete, filemapLookup, type Inode } from './mem/pagecache.ts';
import { accessRange, type UserAccess } from './mm/access.ts';
import { FAULT_HANDLED, FAULT_RESULT_WOULD_BLOCK, vmaProtNone } from './mm/fault.ts';
import { inodeOfView } from './mm/hook-views.ts';
import type { DeviceFile, MemoryType } from './mm/memtype.ts';
import { AddressSpace, ZAP_KEEP_POISON, ZAP_KEEP_WP } from './mm/mm.ts';
import { PTE_PRESENT, PTE_PROTNONE, PTE_WRITE } from './mm/pagetable.ts';
import {
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
} from './mm/vma.ts';
import { type Access, type SyscallAccess, Task } from './task.ts';

/** A thread's syscall went to sleep (waiting for a userfaultfd event to be read). */
export const SYSCALL_BLOCKED = 1 << 30;

import { forkProcess } from './fork.ts';
import { prepareMadvise } from './mm/madvise.ts';
import { doMremap } from './mm/mremap.ts';
import { UffdContext } from './uffd/context.ts';
import { EventWait, raiseUnmapEvents, unmapContexts } from './uffd/events.ts';
import { type UffdCaller, UffdFile } from './uffd/ioctl.ts';
import { unregisterAll } from './uffd/register.ts';

/** An open file description, shared by every fd (in any process) that refers to it. */
export type OpenFile =
  | { kind: 'inode'; inode: Inode; accessMode: number; flags: number; references: number; position?: number }
  | { kind: 'uffd'; uffd: UffdFile; references: number }
  | { kind: 'dev-userfaultfd'; references: number }
  | { kind: 'device'; device: DeviceFile; references: number };

export interface MmapArgs {
  readonly address: number;
  readonly length: number;
  readonly prot: number;
  readonly flags: number;
  readonly fd: number;
  readonly offset: number;
}

/** The result of a direct memory access by the calling thread. */
export type DirectAccessResult =
  | { readonly ok: true; readonly data: Uint8Array }
  | { readonly ok: false; readonly fault: number; readonly address: number };

export class ModelProcess {
  readonly mm: AddressSpace;
  readonly fds = new Map<number, OpenFile>();
  readonly tasks: Task[] = [];
  exited = false;
  /** Who this process is to a userfaultfd ioctl (its mm and privilege), made once. */
  private uffdCaller: UffdCaller | null = null;

  constructor(
    readonly kernel: ModelKernel,
    readonly pid: number,
    /** Root with every capability (CAP_SYS_PTRACE, access to /dev/userfaultfd). */
    readonly privileged: boolean,
  ) {
    this.mm = new AddressSpace(kernel.nextMmId++, kernel.memory, () => kernel.allocateAnonVmaId());
  }

  // --- file descriptors ------------------------------------------------

  installFd(file: OpenFile): number {
    let fd = 3;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, file);
    return fd;
  }

  file(fd: number): OpenFile | undefined {
    return this.fds.get(fd);
  }

  close(fd: number): number {
    const file = this.fds.get(fd);
    if (file === undefined) return fail(EBADF, 'fd', `${fd} is not open`);
    this.fds.delete(fd);
    this.releaseFile(file);
    return 0;
  }

  private releaseFile(file: OpenFile): void {
    if (--file.references > 0) return;
    if (file.kind === 'inode') {
      file.inode.references--;
      this.kernel.maybeReleaseInode(file.inode);
    } else if (file.kind === 'uffd') {
      const ctx = file.uffd.ctx;
      if (--ctx.fileReferences === 0) releaseUffdContext(ctx);
    }
  }

  private inodeFile(fd: number): (OpenFile & { kind: 'inode' }) | number {
    const file = this.fds.get(fd);
    if (file === undefined) return fail(EBADF, 'fd', `${fd} is not open`);
    if (file.kind !== 'inode') return fail(EINVAL, 'fd', `${fd} is not a regular file`);
    return file;
  }

  // --- memfd and files ---------------------------------------------------

  memfdCreate(name: string, flags: number): number {
    const known = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC;
    const hugeBits = (flags >>> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
    if (flags & MFD_HUGETLB) {
      if ((flags & ~(known | (MAP_HUGE_MASK << MAP_HUGE_SHIFT))) !== 0) {
        return fail(EINVAL, 'flags', `unknown flags ${hex(flags)}`);
      }
    } else if ((flags & ~known) !== 0) {
      return fail(EINVAL, 'flags', `unknown flags ${hex(flags & ~known)}`);
    }
    if (flags & MFD_NOEXEC_SEAL && flags & MFD_EXEC)
      return fail(EINVAL, 'flags', 'MFD_NOEXEC_SEAL with MFD_EXEC');
    if (name.length > MFD_NAME_MAX_LEN) return fail(EINVAL, 'name', `longer than ${MFD_NAME_MAX_LEN} bytes`);
    const type = this.kernel.provider(flags & MFD_HUGETLB ? 'memfd-hugetlb' : 'memfd');
    if (type === undefined) return fail(EINVAL, 'flags', 'no memory type provides this kind of memfd');
    const pageShift = this.kernel.hooks.inodePageShift(type, { hugePageShift: hugeBits });
    if (pageShift < 0) {
      const reason = this.kernel.hooks.lastViolation ?? `huge page size 2^${hugeBits} is not available`;
      return fail(-pageShift, 'flags', reason);
    }
    const inode = this.kernel.createInode(type, `memfd:${name}`, pageShift, 0);
    if (typeof inode === 'number') return fail(-inode, 'flags', this.kernel.hooks.lastViolation!);
    inode.references++;
    return this.installFd({
      kind: 'inode',
      inode,
      accessMode: O_RDWR,
      flags: flags & MFD_CLOEXEC ? O_CLOEXEC : 0,
      references: 1,
    });
  }

  /** Opens another description of the same inode with a different access mode (open("/proc/self/fd/N")). */
  reopen(fd: number, accessMode: number): number {
    const file = this.inodeFile(fd);
    if (typeof file === 'number') return file;
    if ((accessMode & ~O_ACCMODE) !== 0 || (accessMode & O_ACCMODE) === O_ACCMODE) {
      return fail(EINVAL, 'flags', `bad access mode ${hex(accessMode)}`);
    }
    file.inode.references++;
    return this.installFd({ kind: 'inode', inode: file.inode, accessMode, flags: 0, references: 1 });
  }

  ftruncate(fd: number, length: number): number {
    const file = this.inodeFile(fd);
    if (typeof file === 'number') return file;
    if (length < 0 || !Number.isInteger(length)) return fail(EINVAL, 'length', `${length} is negative`);
    if (file.accessMode === O_RDONLY) return fail(EINVAL, 'fd', 'not open for writing');
    const inode = file.inode;
    if (inode.pageShift > 12 && length % inode.pageSize !== 0) {
      return fail(
        EINVAL,
        'length',
        `${length} is not a multiple of the ${inode.pageSize / 1024} KiB huge pages`,
      );
    }
    if (length < inode.sizeBytes) this.truncatePagecache(inode, length, inode.sizeBytes, true);
    inode.sizeBytes = length;
    return 0;
  }

  /**
   * Removes cached pages of [from, to) and unmaps them everywhere (truncate
   * and punch hole). Partial folios at the edges are zeroed in place.
   */
  truncatePagecache(inode: Inode, from: number, to: number, evenCows: boolean): void {
    const memory = this.kernel.memory;
    const folioBytes = inode.pageSize;
    const firstWhole = Math.ceil(from / folioBytes) * folioBytes;
    const endWhole = Math.floor(to / folioBytes) * folioBytes;
    for (const edge of [from, to]) {
      if (edge % folioBytes === 0) continue;
      const head = Math.floor(edge / folioBytes) * folioBytes;
      const pfn = filemapLookup(inode, head / 4096);
      if (pfn < 0) continue;
      const lo = Math.max(from, head) - head;
      const hi = Math.min(to, head + folioBytes) - head;
      if (hi > lo)
        memory.frameBuffer(pfn).fill(0, memory.frameOffset(pfn) + lo, memory.frameOffset(pfn) + hi);
    }
    if (endWhole <= firstWhole) return;
    for (const vma of [...inode.mappings]) {
      const vmaFileStart = vma.pgoff * 4096;
      const vmaFileEnd = vmaFileStart + vma.lengthBytes;
      const lo = Math.max(firstWhole, vmaFileStart);
      const hi = Math.min(endWhole, vmaFileEnd);
      if (hi <= lo) continue;
      const start = vma.start + (lo - vmaFileStart);
      const end = vma.start + (hi - vmaFileStart);
      // hugetlb's invalidation (hugetlb_vmdelete_list) zaps a private mapping's own pages too
      // [OBS 6.18: faultline fuzz, punch hole and MADV_REMOVE under a MAP_PRIVATE view].
      if (evenCows || vma.flags & (VM_SHARED | VM_HUGETLB)) {
        vma.mm.zapRange(vma, start, end, invalidationZap(vma, evenCows));
      } else zapCachePagesOnly(vma, start, end, inode);
    }
    inode.cache.forEachInRange(firstWhole / 4096, endWhole / 4096, (pgoff) =>
      filemapDelete(memory, inode, pgoff),
    );
  }

  pread(fd: number, length: number, offset: number): Uint8Array | number {
    const file = this.inodeFile(fd);
    if (typeof file === 'number') return file;
    if (file.accessMode === O_WRONLY) return fail(EBADF, 'fd', 'not open for reading');
    const inode = file.inode;
    if (inode.memoryType.fileOps.pread !== 0) {
      return fail(
        inode.memoryType.fileOps.pread,
        'fd',
        `${inode.memoryType.name} files do not support pread`,
      );
    }
    if (offset < 0 || length < 0) return fail(EINVAL, offset < 0 ? 'offset' : 'count', 'is negative');
    const end = Math.min(offset + length, inode.sizeBytes);
    if (end <= offset) return new Uint8Array(0);
    const out = new Uint8Array(end - offset);
    const memory = this.kernel.memory;
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

  pwrite(fd: number, data: Uint8Array, offset: number): number {
    const file = this.inodeFile(fd);
    if (typeof file === 'number') return file;
    if (file.accessMode === O_RDONLY) return fail(EBADF, 'fd', 'not open for writing');
    const inode = file.inode;
    const type = inode.memoryType;
    if (type.fileOps.pwrite !== 0)
      return fail(type.fileOps.pwrite, 'fd', `${type.name} files do not support pwrite`);
    if (offset < 0) return fail(EINVAL, 'offset', 'is negative');
    if (type.getFolioForWrite === undefined)
      return fail(EINVAL, 'fd', `${type.name} files cannot be written`);
    const memory = this.kernel.memory;
    let written = 0;
    while (written < data.byteLength) {
      const at = offset + written;
      const span = Math.min(data.byteLength - written, 4096 - (at % 4096));
      const pgoff = Math.floor(at / 4096);
      const pfn = this.kernel.hooks.getFolioForWrite(type, inode, pgoff);
      if (pfn < 0) {
        if (written > 0) break;
        return fail(
          -pfn,
          'data',
          this.kernel.hooks.lastViolation ?? `allocating the page at offset ${at} failed`,
        );
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

  fallocate(fd: number, mode: number, offset: number, length: number): number {
    const file = this.inodeFile(fd);
    if (typeof file === 'number') return file;
    if (offset < 0 || length <= 0) return fail(EINVAL, offset < 0 ? 'offset' : 'len', 'must be positive');
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
      return fail(EOPNOTSUPP, 'mode', `unsupported mode ${hex(mode)}`);
    if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) {
      return fail(EOPNOTSUPP, 'mode', 'FALLOC_FL_PUNCH_HOLE needs FALLOC_FL_KEEP_SIZE');
    }
    if (file.accessMode === O_RDONLY) return fail(EBADF, 'fd', 'not open for writing');
    const inode = file.inode;
    const type = inode.memoryType;
    const refused = this.kernel.hooks.fallocateCheck(type, inode, mode);
    if (refused < 0) {
      const reason =
        this.kernel.hooks.lastViolation ?? `${type.name} files refuse fallocate mode ${hex(mode)}`;
      return fail(-refused, 'mode', reason);
    }
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      if (type.fileOps.punchHole !== 0)
        return fail(type.fileOps.punchHole, 'mode', `${type.name} cannot punch holes`);
      // Private COW copies survive a punched hole; only page-cache pages are unmapped.
      this.truncatePagecache(inode, offset, Math.min(offset + length, inode.sizeBytes), false);
      return 0;
    }
    if (type.getFolioForWrite === undefined)
      return fail(EOPNOTSUPP, 'mode', `${type.name} cannot preallocate`);
    const first = Math.floor(offset / inode.pageSize) * (inode.pageSize / 4096);
    for (let pgoff = first; pgoff * 4096 < offset + length; pgoff += inode.pageSize / 4096) {
      const pfn = this.kernel.hooks.getFolioForWrite(type, inode, pgoff);
      if (pfn < 0) {
        const reason =
          this.kernel.hooks.lastViolation ?? `allocating the page at offset ${pgoff * 4096} failed`;
        return fail(-pfn, 'len', reason);
      }
    }
    if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > inode.sizeBytes) inode.sizeBytes = offset + length;
    return 0;
  }

  // --- mappings ------------------------------------------------------------

  mmap(args: MmapArgs): number {
    const { address, prot, flags, fd, offset } = args;
    if (args.length === 0) return fail(EINVAL, 'length', 'is zero');
    if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0)
      return fail(EINVAL, 'prot', `unknown bits ${hex(prot)}`);
    const mapType = flags & MAP_TYPE;
    if (
      mapType !== MAP_SHARED &&
      mapType !== MAP_PRIVATE &&
      mapType !== MAP_SHARED_VALIDATE &&
      mapType !== MAP_DROPPABLE
    ) {
      return fail(EINVAL, 'flags', 'neither MAP_SHARED nor MAP_PRIVATE');
    }
    if (offset % PAGE_SIZE !== 0 || offset < 0)
      return fail(EINVAL, 'offset', `${hex(offset)} is not page aligned`);
    const shared = mapType === MAP_SHARED || mapType === MAP_SHARED_VALIDATE;
    const anonymous = (flags & MAP_ANONYMOUS) !== 0;
    if (mapType === MAP_DROPPABLE && !anonymous)
      return fail(EINVAL, 'flags', 'MAP_DROPPABLE needs MAP_ANONYMOUS');

    // Find what backs the mapping.
    let inode: Inode | null = null;
    let file: (OpenFile & { kind: 'inode' }) | null = null;
    let type: MemoryType;
    let pageShift = 12;
    if (!anonymous) {
      const opened = this.fds.get(fd);
      if (opened === undefined) return fail(EBADF, 'fd', `${fd} is not open`);
      if (opened.kind !== 'inode') return fail(ENODEV, 'fd', `${fd} cannot be mapped`);
      file = opened;
      inode = opened.inode;
      type = inode.memoryType;
      pageShift = inode.pageShift;
    } else if (flags & MAP_HUGETLB) {
      const hugetlb = this.kernel.provider('memfd-hugetlb');
      if (hugetlb === undefined) return fail(EINVAL, 'flags', 'no memory type provides MAP_HUGETLB');
      const shift = this.kernel.hooks.inodePageShift(hugetlb, {
        hugePageShift: (flags >>> MAP_HUGE_SHIFT) & MAP_HUGE_MASK,
      });
      if (shift < 0) return fail(-shift, 'flags', 'huge page size not available');
      type = hugetlb;
      pageShift = shift;
    } else if (shared) {
      const shmem = this.kernel.provider('memfd');
      if (shmem === undefined)
        return fail(EINVAL, 'flags', 'no memory type provides shared anonymous memory');
      type = shmem;
    } else {
      type = this.kernel.env.anonymousType;
    }
    const pageSize = 2 ** pageShift;
    const length = Math.ceil(args.length / pageSize) * pageSize;
    if (length > TASK_SIZE)
      return fail(ENOMEM, 'length', `${hex(args.length)} is larger than the address space`);

    let vmFlags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | type.vmFlags;
    if (prot & PROT_READ) vmFlags |= VM_READ;
    if (prot & PROT_WRITE) vmFlags |= VM_WRITE | VM_READ;
    if (prot & PROT_EXEC) vmFlags |= VM_EXEC;
    if (shared) vmFlags |= VM_SHARED | VM_MAYSHARE;
    if (mapType === MAP_DROPPABLE) vmFlags |= VM_DROPPABLE;
    if (flags & MAP_NORESERVE) vmFlags |= VM_NORESERVE;
    if (file !== null) {
      if (file.accessMode === O_WRONLY) return fail(EACCES, 'fd', 'not open for reading');
      if (shared && file.accessMode === O_RDONLY) {
        if (prot & PROT_WRITE)
          return fail(EACCES, 'prot', 'PROT_WRITE on a MAP_SHARED mapping of a read-only fd');
        // A shared mapping of a read-only file can never become writable: it is not VM_SHARED.
        vmFlags &= ~(VM_MAYWRITE | VM_SHARED);
      }
      const request = { shared, offsetBytes: offset, lengthBytes: length, prot };
      const checked = this.kernel.hooks.mmapCheck(type, inode!, request);
      if (checked < 0)
        return fail(
          -checked,
          'offset',
          this.kernel.hooks.lastViolation ?? `${type.name} refuses this mapping`,
        );
    }
    if (type.vmFlags & VM_DONTEXPAND && !(vmFlags & VM_NORESERVE)) {
      const needed = length / pageSize - (inode === null ? 0 : cachedFolios(inode, offset, length));
      if (needed > this.kernel.memory.hugePagesFree) {
        return fail(
          ENOMEM,
          'length',
          `needs ${needed} huge pages, the pool has ${this.kernel.memory.hugePagesFree} free`,
        );
      }
    }

    // Place it.
    let start: number;
    if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
      if (address % pageSize !== 0)
        return fail(EINVAL, 'addr', `${hex(address)} is not aligned to ${pageSize}`);
      if (address + length > TASK_SIZE || address < 0)
        return fail(ENOMEM, 'addr', 'outside the address space');
      if (flags & MAP_FIXED_NOREPLACE && !this.mm.isFree(address, address + length)) {
        return fail(EEXIST, 'addr', `${hex(address)} overlaps an existing mapping`);
      }
      start = address;
    } else {
      const hint = address !== 0 && address % pageSize === 0 ? address : 0;
      const align =
        pageSize > PAGE_SIZE
          ? pageSize
          : anonymous && !shared && length % (2 << 20) === 0
            ? 2 << 20
            : PAGE_SIZE;
      start =
        hint !== 0 && hint + length <= TASK_SIZE && this.mm.isFree(hint, hint + length)
          ? hint
          : this.mm.findFreeRange(length, align);
      if (start < 0) return fail(ENOMEM, 'length', 'no free range large enough');
    }

    if (anonymous && (shared || flags & MAP_HUGETLB)) {
      const created = this.kernel.createInode(type, shared ? 'dev/zero' : 'anon_hugepage', pageShift, length);
      if (typeof created === 'number') return fail(-created, 'flags', this.kernel.hooks.lastViolation!);
      inode = created;
    }
    if (flags & MAP_FIXED) {
      // The caller cannot sleep here: UNMAP events are queued without waiting.
      const unmapped = this.unmapRange(start, start + length, null);
      if (unmapped < 0) return unmapped;
    }
    const pgoff = inode === null ? start / 4096 : offset / 4096;
    const vma = new Vma(start, start + length, vmFlags, inode, pgoff, type, pageShift, this.mm);
    this.mm.insert(vma);
    this.mm.mergeRange(start, start + length);
    return start;
  }

  munmap(address: number, length: number, wait: EventWait | null = null): number {
    if (address % PAGE_SIZE !== 0) return fail(EINVAL, 'addr', `${hex(address)} is not page aligned`);
    if (length === 0) return fail(EINVAL, 'length', 'is zero');
    const end = address + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    if (end > TASK_SIZE || address < 0) return fail(EINVAL, 'addr', 'outside the address space');
    return this.unmapRange(address, end, wait);
  }

  /**
   * do_vmi_munmap: splits at the edges (refusing to break a huge page) and
   * removes what is inside; registered contexts with EVENT_UNMAP hear of it
   * afterwards, once each, with the whole range.
   */
  unmapRange(start: number, end: number, wait: EventWait | null = null): number {
    const contexts = unmapContexts(this.mm, start, end);
    const split = this.splitEdges(start, end);
    if (split < 0) return split;
    for (const vma of this.mm.vmasIn(start, end)) this.removeVma(vma);
    raiseUnmapEvents(contexts, start, end, wait);
    return 0;
  }

  /** Zaps and removes one whole VMA. */
  removeVma(vma: Vma): void {
    this.mm.zapRange(vma, vma.start, vma.end);
    this.mm.remove(vma);
    if (vma.inode !== null) this.kernel.maybeReleaseInode(vma.inode);
  }

  /**
   * Splits VMAs at `start`, then at `end`, refusing a split inside a huge
   * page. As in Linux, a refused end split leaves the start split done.
   */
  splitEdges(start: number, end: number): number {
    for (const edge of [start, end]) {
      const vma = this.mm.findVma(edge);
      if (vma !== undefined && edge > vma.start && edge % vma.pageSize !== 0) {
        return fail(
          EINVAL,
          edge === start ? 'addr' : 'len',
          `${hex(edge)} would split a huge page of ${vma.describe()}`,
        );
      }
      this.mm.splitAt(edge);
    }
    return 0;
  }

  mprotect(address: number, length: number, prot: number): number {
    if (address % PAGE_SIZE !== 0) return fail(EINVAL, 'addr', `${hex(address)} is not page aligned`);
    if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0)
      return fail(EINVAL, 'prot', `unknown bits ${hex(prot)}`);
    if (length === 0) return 0;
    const end = address + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    if (end > TASK_SIZE) return fail(ENOMEM, 'len', 'runs past the address space');
    const spans = this.mm.vmasIn(address, end).map((vma) => ({ vma, start: vma.start, end: vma.end }));
    if (spans.length === 0 || spans[0]!.start > address)
      return fail(ENOMEM, 'addr', `${hex(address)} is not mapped`);
    for (const { vma } of spans) {
      if (prot & PROT_WRITE && !(vma.flags & VM_MAYWRITE)) {
        return fail(EACCES, 'prot', `${vma.describe()} cannot be made writable`);
      }
    }
    const protFlags = (flags: number): number => {
      let next = flags & ~(VM_READ | VM_WRITE | VM_EXEC);
      if (prot & PROT_READ) next |= VM_READ;
      if (prot & PROT_WRITE) next |= VM_WRITE | VM_READ;
      if (prot & PROT_EXEC) next |= VM_EXEC;
      return next;
    };
    // mprotect_fixup leaves a VMA whose flags would not change alone: it is not split [OBS 6.18:
    // faultline fuzz, half of a hugetlb VMA, which never merges back].
    const changes = (vma: Vma) => protFlags(vma.flags) !== vma.flags;
    const first = spans[0]!;
    const last = spans[spans.length - 1]!;
    const split = this.splitEdges(
      changes(first.vma) ? address : first.start,
      changes(last.vma) ? end : last.end,
    );
    if (split < 0) return split;
    // Like Linux, VMAs before a hole are changed before the hole is found.
    let expected = address;
    for (const span of spans) {
      if (span.start > expected) return fail(ENOMEM, 'len', `${hex(expected)} is not mapped`);
      const lo = Math.max(address, span.start);
      const hi = Math.min(end, span.end);
      expected = hi;
      if (!changes(span.vma)) continue;
      this.mm.splitRange(lo, hi);
      for (const piece of this.mm.vmasIn(lo, hi)) {
        piece.flags = protFlags(piece.flags);
        this.changeProtection(piece, (prot & PROT_WRITE) === 0);
      }
      this.mm.mergeRange(lo, hi);
    }
    if (expected < end) return fail(ENOMEM, 'len', `${hex(expected)} is not mapped`);
    return 0;
  }

  /** change_protection: present entries follow the VMA's new protection (write, PROT_NONE). */
  private changeProtection(vma: Vma, dropWrite: boolean): void {
    const protNone = vmaProtNone(vma);
    this.mm.pageTable.forEachInRange(vma.start / 4096, vma.end / 4096, (vpn, flags) => {
      if (!(flags & PTE_PRESENT)) return;
      const next = ((dropWrite ? flags & ~PTE_WRITE : flags) & ~PTE_PROTNONE) | protNone;
      if (next !== flags) this.mm.pageTable.setFlags(vpn, next);
    });
  }

  // --- memory access by the calling thread ----------------------------------

  /** Reads memory as the calling thread; a fault that would sleep on userfaultfd is refused. */
  readMemory(address: number, length: number, into?: Uint8Array): DirectAccessResult {
    // Into the caller's buffer when given (a handler reading page after page reuses one).
    return this.directAccess(address, into ?? new Uint8Array(length), false);
  }

  writeMemory(address: number, data: Uint8Array): DirectAccessResult {
    return this.directAccess(address, data, true);
  }

  /** An access by the calling thread itself: it has no task, so it cannot sleep on a userfaultfd. */
  private directAccess(address: number, buffer: Uint8Array, write: boolean): DirectAccessResult {
    const access: UserAccess = {
      mm: this.mm,
      address,
      write,
      task: null,
      userMode: true,
      start: address,
      buffer,
      doneBytes: 0,
    };
    const result = accessRange(this.kernel.env, access);
    if (result === FAULT_HANDLED) return { ok: true, data: buffer };
    return { ok: false, fault: result, address: address + access.doneBytes };
  }

  static readonly WOULD_BLOCK = FAULT_RESULT_WOULD_BLOCK;

  // --- threads -------------------------------------------------------------

  spawnThread(program: Iterable<Access>, name = ''): Task {
    const task = new Task(this.kernel.allocateTid(), this, program[Symbol.iterator](), name);
    this.tasks.push(task);
    this.kernel.enqueue(task);
    return task;
  }

  /**
   * A syscall made by a simulated thread. Returns its result (or -errno), or
   * SYSCALL_BLOCKED when the task went to sleep waiting for an event read.
   */
  threadSyscall(task: Task, access: SyscallAccess): number {
    const resume = task.syscallContinuation;
    if (resume !== null) {
      task.syscallContinuation = null;
      return resume();
    }
    const wait = new EventWait(() => this.kernel.wake(task), this.kernel.controlled);
    const args = access.args;
    let finish: () => number;
    switch (access.call) {
      case 'madvise': {
        // The event is read before the pages go (userfaultfd_remove waits first).
        const prepared = prepareMadvise(this, args[0] ?? 0, args[1] ?? 0, args[2] ?? 0, wait);
        finish = typeof prepared === 'number' ? () => prepared : prepared;
        break;
      }
      case 'munmap': {
        const result = this.munmap(args[0] ?? 0, args[1] ?? 0, wait);
        finish = () => result;
        break;
      }
      case 'mremap': {
        const result = doMremap(
          this,
          args[0] ?? 0,
          args[1] ?? 0,
          args[2] ?? 0,
          args[3] ?? 0,
          args[4] ?? 0,
          wait,
        );
        finish = () => result;
        break;
      }
      case 'fork': {
        const child = forkProcess(this, wait);
        if (typeof child !== 'number') task.children.push(child);
        finish = () => (typeof child === 'number' ? child : child.pid);
        break;
      }
    }
    if (wait.outstanding === 0) return finish();
    task.syscallContinuation = wait.onThread ? continueOnThread(task, wait, finish) : finish;
    task.state = 'blocked';
    return SYSCALL_BLOCKED;
  }

  /** madvise(2) by the calling thread: events are queued, the call does not wait for them. */
  madvise(address: number, length: number, advice: number): number {
    const prepared = prepareMadvise(this, address, length, advice, null);
    return typeof prepared === 'number' ? prepared : prepared();
  }

  mremap(
    oldAddress: number,
    oldLength: number,
    newLength: number,
    flags: number,
    newAddress: number,
  ): number {
    return doMremap(this, oldAddress, oldLength, newLength, flags, newAddress, null);
  }

  fork(): ModelProcess | number {
    return forkProcess(this, null);
  }

  /** Installs a new fd for a userfaultfd context (FORK event delivery, SCM_RIGHTS). */
  installUffd(ctx: UffdContext): number {
    ctx.fileReferences++;
    const uffd = new UffdFile(ctx, this.kernel.env, ctx.openFlags);
    return this.installFd({ kind: 'uffd', uffd, references: 1 });
  }

  // --- userfaultfd -----------------------------------------------------------

  userfaultfd(flags: number): number {
    const allowed =
      flags & UFFD_USER_MODE_ONLY || this.privileged || this.kernel.unprivilegedUserfaultfd === 1;
    if (!allowed)
      return fail(EPERM, 'flags', 'vm.unprivileged_userfaultfd is 0 and the caller lacks CAP_SYS_PTRACE');
    return this.newUserfaultfd(flags);
  }

  private newUserfaultfd(flags: number): number {
    if ((flags & ~(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)) !== 0) {
      return fail(
        EINVAL,
        'flags',
        `unknown flags ${hex(flags & ~(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY))}`,
      );
    }
    const ctx = new UffdContext(
      this.kernel.nextContextId++,
      this.mm,
      (flags & UFFD_USER_MODE_ONLY) !== 0,
      this.kernel,
    );
    ctx.fileReferences = 1;
    ctx.openFlags = flags & (O_CLOEXEC | O_NONBLOCK);
    const uffd = new UffdFile(ctx, this.kernel.env, flags & (O_CLOEXEC | O_NONBLOCK));
    return this.installFd({ kind: 'uffd', uffd, references: 1 });
  }

  /** open("/dev/userfaultfd"): a root-only device node (mode 0600). */
  openDevUserfaultfd(accessMode: number): number {
    if (!this.privileged) return fail(EACCES, 'path', '/dev/userfaultfd is mode 0600 root');
    if ((accessMode & O_ACCMODE) === O_ACCMODE) return fail(EINVAL, 'flags', 'bad access mode');
    return this.installFd({ kind: 'dev-userfaultfd', references: 1 });
  }

  /** open(2) of a device node a memory type provides (or /dev/userfaultfd). */
  openDevice(path: string, accessMode: number): number {
    if (path === '/dev/userfaultfd') return this.openDevUserfaultfd(accessMode);
    const driver = this.kernel.device(path);
    if (driver === undefined) return fail(ENOENT, 'path', `${path} does not exist in the model`);
    const refused = driver.openCheck(this.privileged);
    if (refused < 0) return fail(-refused, 'path', `${path} refuses this caller`);
    return this.installFd({ kind: 'device', device: driver.open(), references: 1 });
  }

  /** write(2) at the file position: a type's own write, else the page cache as pwrite. */
  write(fd: number, data: Uint8Array): number {
    const file = this.inodeFile(fd);
    if (typeof file === 'number') return file;
    if (file.accessMode === O_RDONLY) return fail(EBADF, 'fd', 'not open for writing');
    const position = file.position ?? 0;
    const type = file.inode.memoryType;
    const written =
      type.write !== undefined
        ? this.kernel.hooks.write(type, file.inode, data, position)
        : this.pwrite(fd, data, position);
    if (written < 0) {
      const reason =
        this.kernel.hooks.lastViolation ?? `${type.name} refused the write at offset ${position}`;
      return fail(-written, 'data', reason);
    }
    file.position = position + written;
    return written;
  }

  /** lseek(2) with SEEK_SET (0) or SEEK_CUR (1). */
  lseek(fd: number, offset: number, whence: number): number {
    const file = this.inodeFile(fd);
    if (typeof file === 'number') return file;
    const base = whence === 0 ? 0 : whence === 1 ? (file.position ?? 0) : Number.NaN;
    if (Number.isNaN(base)) return fail(EINVAL, 'whence', `unsupported whence ${whence}`);
    if (base + offset < 0) return fail(EINVAL, 'offset', 'the position would be negative');
    file.position = base + offset;
    return file.position;
  }

  /** ioctl(2) on any fd. */
  ioctl(fd: number, request: number, arg: Uint8Array | number | null): number {
    const file = this.fds.get(fd);
    if (file === undefined) return fail(EBADF, 'fd', `${fd} is not open`);
    if (file.kind === 'dev-userfaultfd') {
      if (request !== USERFAULTFD_IOC_NEW)
        return fail(EINVAL, 'request', `unknown /dev/userfaultfd ioctl ${hex(request >>> 0)}`);
      // The device node's permissions are the only gate: no sysctl or capability check.
      return this.newUserfaultfd(typeof arg === 'number' ? arg : 0);
    }
    if (file.kind === 'device') {
      const result = file.device.ioctl(request, arg);
      if (typeof result === 'number') return result;
      if ('installDevice' in result)
        return this.installFd({ kind: 'device', device: result.installDevice, references: 1 });
      // A device hands back the view of a file the core made; anything else is refused.
      const inode = inodeOfView(result.installInode);
      if (inode === null)
        return fail(EFAULT, 'request', `${file.device.name} handed back a file the core did not make`);
      inode.references++;
      return this.installFd({
        kind: 'inode',
        inode,
        accessMode: result.accessMode,
        flags: 0,
        references: 1,
      });
    }
    if (file.kind === 'uffd') {
      if (typeof arg === 'number') return fail(EFAULT, 'arg', 'expected a pointer to the argument struct');
      this.uffdCaller ??= { mm: this.mm, capSysPtrace: this.privileged };
      return file.uffd.ioctl(this.uffdCaller, request, arg);
    }
    return fail(ENOTTY, 'fd', 'inappropriate ioctl for device');
  }

  /** read(2) on a userfaultfd (other files use pread). Never blocks. */
  read(fd: number, count: number): Uint8Array | number {
    const file = this.fds.get(fd);
    if (file === undefined) return fail(EBADF, 'fd', `${fd} is not open`);
    if (file.kind === 'uffd') return file.uffd.read(count, this);
    if (file.kind === 'inode') return fail(ESPIPE, 'fd', 'use pread on files');
    return fail(EINVAL, 'fd', 'not readable');
  }

  poll(fd: number): number {
    const file = this.fds.get(fd);
    if (file === undefined) return 0x20;
    if (file.kind === 'uffd') return file.uffd.poll();
    return 0x1 | 0x4;
  }

  uffdFile(fd: number): UffdFile | undefined {
    const file = this.fds.get(fd);
    return file?.kind === 'uffd' ? file.uffd : undefined;
  }

  /** exit_group: threads end, fds close, the address space goes away. */
  exit(): void {
    if (this.exited) return;
    this.exited = true;
    for (const task of this.tasks) if (!task.finished) this.kernel.finishTask(task, 'done');
    for (const fd of [...this.fds.keys()]) this.close(fd);
    if (--this.mm.users === 0) {
      this.mm.dead = true;
      for (const vma of [...this.mm.vmas]) {
        this.mm.zapRange(vma, vma.start, vma.end);
        this.mm.remove(vma);
        if (vma.inode !== null) this.kernel.maybeReleaseInode(vma.inode);
      }
    }
    this.kernel.processes.delete(this.pid);
  }
}

/**
 * What the thread of a syscall that raised events does each time it runs
 * (explore): the steps of `EventWait.resume`, then the syscall's return.
 */
function continueOnThread(task: Task, wait: EventWait, finish: () => number): () => number {
  const resume = (): number => {
    const next = wait.resume();
    if (next === 'done') return finish();
    task.syscallContinuation = resume;
    if (next === 'blocked') task.state = 'blocked';
    return SYSCALL_BLOCKED;
  };
  return resume;
}

/** userfaultfd_release: unregister everything and wake everyone. */
export function releaseUffdContext(ctx: UffdContext): void {
  ctx.released = true;
  if (!ctx.mm.dead) unregisterAll(ctx);
  ctx.wakeAll();
  for (const event of ctx.events.splice(0)) event.onDone?.();
  ctx.mmapChanging = 0;
  ctx.completing.length = 0;
  ctx.notifyPollers();
}

/** Number of page-cache folios an inode holds in [offset, offset + length). */
function cachedFolios(inode: Inode, offset: number, length: number): number {
  return inode.cache.countInRange(offset / 4096, (offset + length) / 4096);
}

/** Unmaps the page-cache pages (not private COW copies) of a private mapping (punch hole). */
function zapCachePagesOnly(vma: Vma, start: number, end: number, inode: Inode): void {
  const memory = vma.mm.memory;
  vma.mm.pageTable.forEachInRange(start / 4096, end / 4096, (vpn, flags, pfn) => {
    if (flags & PTE_PRESENT && memory.folioInode[pfn] === inode.id) {
      vma.mm.zapRange(vma, vpn * 4096, vpn * 4096 + vma.pageSize, ZAP_KEEP_WP | ZAP_KEEP_POISON);
    }
  });
}

/**
 * What the page-cache invalidation zap (unmap_mapping_range) keeps: uffd-wp
 * state always (a protected page becomes a marker) and poison unless it zaps
 * cows (truncate); hugetlb keeps only wp, and not even that on truncate
 * (ZAP_FLAG_DROP_MARKER) [OBS 6.18: §5.5, punch hole and MADV_REMOVE].
 */
function invalidationZap(vma: Vma, evenCows: boolean): number {
  if (vma.flags & VM_HUGETLB) return evenCows ? 0 : ZAP_KEEP_WP;
  return evenCows ? ZAP_KEEP_WP : ZAP_KEEP_WP | ZAP_KEEP_POISON;
}
