/**
 * Virtual memory areas. Flag names follow the kernel's VM_* flags; the bit
 * values are the model's own.
 */
import type { Inode } from '../mem/pagecache.ts';
import type { MemoryType, VmaView } from './memtype.ts';
import type { AddressSpace } from './mm.ts';

export const VM_READ = 1 << 0;
export const VM_WRITE = 1 << 1;
export const VM_EXEC = 1 << 2;
export const VM_SHARED = 1 << 3;
export const VM_MAYREAD = 1 << 4;
export const VM_MAYWRITE = 1 << 5;
export const VM_MAYEXEC = 1 << 6;
export const VM_MAYSHARE = 1 << 7;
export const VM_UFFD_MISSING = 1 << 8;
export const VM_UFFD_WP = 1 << 9;
export const VM_UFFD_MINOR = 1 << 10;
export const VM_HUGETLB = 1 << 11;
/** Never merged or expanded (VM_SPECIAL for merging purposes). */
export const VM_DONTEXPAND = 1 << 12;
export const VM_DROPPABLE = 1 << 13;
export const VM_LOCKED = 1 << 14;
/** MADV_DONTFORK. */
export const VM_DONTCOPY = 1 << 15;
export const VM_HUGEPAGE = 1 << 16;
export const VM_NOHUGEPAGE = 1 << 17;
export const VM_NORESERVE = 1 << 18;
/**
 * The mapping's pages are charged to the commit limit: a private writable
 * mapping (accountable_mapping). Merging compares it, so an anonymous VMA
 * made read-only before it had an anon_vma (which loses it) and one made
 * read-only after (which keeps it) do not merge.
 */
export const VM_ACCOUNT = 1 << 19;

export const VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR;
export const VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC;

/**
 * The userfaultfd context a VMA is registered with. mm/ compares it only by
 * identity; uffd/context.ts fills the interface in with the context's class
 * (as mm_types.h knows struct userfaultfd_ctx only by a forward declaration),
 * so mm/ needs no import of uffd/.
 */
// biome-ignore lint/suspicious/noEmptyInterface: completed by declaration merging in uffd/context.ts
export interface VmaUffdContext {}

/** What a new VMA is made of (vm_area_struct's fields that are set when it is created). */
export interface VmaInit {
  readonly start: number;
  readonly end: number;
  readonly flags: number;
  /** The backing inode; null for private anonymous memory. */
  readonly inode: Inode | null;
  /** Offset into the file in 4 KiB pages (for anonymous memory: start >> 12, as Linux sets it). */
  readonly pgoff: number;
  readonly memoryType: MemoryType;
  readonly pageShift: number;
  /** The address space the VMA belongs to. */
  readonly mm: AddressSpace;
}

export class Vma implements VmaView {
  /** The userfaultfd context this VMA is registered with (vm_userfaultfd_ctx). */
  uffdContext: VmaUffdContext | null = null;
  /** Identity of the anon_vma, 0 before the first anonymous page (anon_vma_prepare). */
  anonVma = 0;
  /** 2^pageShift, kept as a field: the fault and fill paths read it on every page. */
  readonly pageSize: number;
  start: number;
  end: number;
  flags: number;
  /** The backing inode; null for private anonymous memory. */
  readonly inode: Inode | null;
  /** Offset into the file in 4 KiB pages (for anonymous memory: start >> 12, as Linux sets it). */
  pgoff: number;
  readonly memoryType: MemoryType;
  readonly pageShift: number;
  /** The address space this VMA belongs to. */
  readonly mm: AddressSpace;

  constructor(init: VmaInit) {
    this.start = init.start;
    this.end = init.end;
    this.flags = init.flags;
    this.inode = init.inode;
    this.pgoff = init.pgoff;
    this.memoryType = init.memoryType;
    this.pageShift = init.pageShift;
    this.mm = init.mm;
    this.pageSize = 2 ** init.pageShift;
  }

  get lengthBytes(): number {
    return this.end - this.start;
  }

  /** vma_is_anonymous: no file behind it. */
  get isAnonymous(): boolean {
    return this.inode === null;
  }

  get isShared(): boolean {
    return (this.flags & VM_SHARED) !== 0;
  }

  /** The file page (4 KiB units) backing `address`. */
  pgoffAt(address: number): number {
    return this.pgoff + (address - this.start) / 4096;
  }

  /** A copy covering [start, end) of this VMA (used by splits). */
  cloneRange(start: number, end: number): Vma {
    const copy = new Vma({ ...this.shape(), start, end, pgoff: this.pgoff + (start - this.start) / 4096 });
    copy.uffdContext = this.uffdContext;
    copy.anonVma = this.anonVma;
    return copy;
  }

  /** Its fields as a VmaInit, for a VMA made in its image (a split, a copy at fork, a move). */
  shape(): VmaInit {
    const { start, end, flags, inode, pgoff, memoryType, pageShift, mm } = this;
    return { start, end, flags, inode, pgoff, memoryType, pageShift, mm };
  }

  describe(): string {
    const hex = (n: number) => `0x${n.toString(16)}`;
    return `${hex(this.start)}-${hex(this.end)} ${this.memoryType.name}`;
  }
}

/**
 * Whether `next` may be merged onto the end of `previous` (is_mergeable_vma
 * and its anon_vma/file-offset conditions).
 */
export function canMerge(previous: Vma, next: Vma): boolean {
  if (previous.end !== next.start) return false;
  if (previous.flags !== next.flags) return false;
  if ((previous.flags & VM_DONTEXPAND) !== 0) return false;
  if (previous.inode !== next.inode) return false;
  if (previous.memoryType !== next.memoryType) return false;
  if (previous.uffdContext !== next.uffdContext) return false;
  if (previous.pageShift !== next.pageShift) return false;
  if (previous.pgoff + (previous.end - previous.start) / 4096 !== next.pgoff) return false;
  // Two different anon_vmas never merge; an unset one adopts its neighbour's.
  if (previous.anonVma !== 0 && next.anonVma !== 0 && previous.anonVma !== next.anonVma) return false;
  return true;
}
