/**
 * The memory-type seam: what a memory type module declares and implements,
 * and the narrow services the core lends it. This file belongs to the core;
 * memory types import it, never the other way round.
 *
 * A type never receives a page table, a VMA it may change, or a way to map a
 * page. It answers questions about its own files and page cache, and the core
 * checks every answer (see `hooks.ts`).
 */

/** Kinds of object the syscall layer asks the registry for. */
export type Provision =
  /** Private anonymous memory; also the COW and private-fill memory of private file mappings. */
  | 'anonymous'
  /** memfd_create without MFD_HUGETLB, and MAP_SHARED|MAP_ANONYMOUS. */
  | 'memfd'
  /** memfd_create with MFD_HUGETLB, and MAP_ANONYMOUS|MAP_HUGETLB. */
  | 'memfd-hugetlb';

/**
 * Read-only facts about a file, as a memory type may see them (a view of
 * the core's inode, never the inode itself). `typeState` is the type's own.
 */
export interface InodeView {
  readonly id: number;
  readonly name: string;
  /** log2 of the folio size this file caches: 12, or 21 for 2 MiB hugetlb. */
  readonly pageShift: number;
  readonly sizeBytes: number;
  readonly pageSize: number;
  /** Folio pages per cached folio, in 4 KiB units. */
  readonly pagesPerFolio: number;
  /** State owned by the memory type (its "inode info"). */
  typeState: unknown;
}

/** Read-only facts about a VMA, as a memory type may see them (a view, never the VMA). */
export interface VmaView {
  readonly start: number;
  readonly end: number;
  /** VM_* flags (see vma.ts). */
  readonly flags: number;
  /** Offset into the file in 4 KiB pages. */
  readonly pgoff: number;
  /** log2 of the VMA's page size: 12, 21 or 30. */
  readonly pageShift: number;
  readonly inode: InodeView | null;
}

/**
 * Services the core lends a memory type: folios and its own page cache.
 * While one of the type's hooks runs, the core journals these calls (see
 * `HookChecker.watchServices` in hooks.ts) to judge and, on a violation, undo
 * what the hook did; it refuses a put of the last reference to a folio the
 * hook did not allocate, and any call on a frame that is not a folio.
 */
export interface MemoryTypeServices {
  /** A zeroed folio of 2^order pages with one reference, or -1. */
  allocFolio(order: number, options?: { hugetlb?: boolean }): number;
  getFolio(pfn: number): void;
  putFolio(pfn: number): void;
  lockFolio(pfn: number): void;
  unlockFolio(pfn: number): void;
  /** The folio cached at `pgoff` (head-aligned for large folios), or -1. */
  filemapLookup(inode: InodeView, pgoff: number): number;
  /** Inserts with a reference of the cache's own; false when occupied. */
  filemapInsert(inode: InodeView, pfn: number, pgoff: number): boolean;
  filemapDelete(inode: InodeView, pgoff: number): void;
  /** The page-cache index (4 KiB units) a folio is cached at. */
  folioIndex(pfn: number): number;
  /** Copies bytes into a folio (for a type's own write path). */
  copyIntoFolio(pfn: number, offset: number, source: Uint8Array, sourceOffset: number, length: number): void;
  /** A new inode of `type` (for types whose files come from a device ioctl). */
  createInode(type: MemoryType, name: string, pageShift: number, sizeBytes: number): InodeView;
  /** A kernel option by name (e.g. the emulated version), for types whose behaviour changed across releases. */
  kernelOption(name: string): unknown;
}

/**
 * What a device ioctl may hand back: a number (-errno without a reason), a
 * failure naming the argument at fault and why, or a new open file to
 * install as an fd.
 */
export type DeviceIoctlResult =
  | number
  | DeviceIoctlFailure
  | { readonly installDevice: DeviceFile }
  | { readonly installInode: InodeView; readonly accessMode: number };

/** A failed device ioctl: `errno` (positive), the argument at fault and the reason, as the caller's error says. */
export interface DeviceIoctlFailure {
  readonly errno: number;
  readonly argument: string;
  readonly reason: string;
}

/** An open device file (a /dev node, or an fd a device handed out, such as a KVM VM). */
export interface DeviceFile {
  readonly name: string;
  ioctl(request: number, arg: Uint8Array | number | null): DeviceIoctlResult;
}

/**
 * The system calls a `conformanceFile` recipe may make: the raw calls of the
 * process API, which throw errno errors. The conformance suite passes the
 * process it tests in; the model itself never calls the recipe.
 */
export interface ConformanceSyscalls {
  open(path: string, flags: number): number;
  ioctl(fd: number, request: number, arg: Uint8Array | number | null): number;
  close(fd: number): void;
}

/** A character device a memory type brings (a device that hands out files of the type). */
export interface DeviceDriver {
  readonly path: string;
  /** 0 when the caller may open it, else the errno (EACCES). */
  openCheck(privileged: boolean): number;
  open(): DeviceFile;
}

/** Returned by `fault` when the page must come from anonymous memory (private hugetlb holes). */
export const FAULT_ALLOC_PRIVATE = -4096;
/** Returned by `fault` for an access the file cannot back (SIGBUS). */
export const FAULT_SIGBUS = -4097;
/** Returned by `fault` when no memory is left (the kernel's VM_FAULT_OOM, shown as SIGBUS for hugetlb). */
export const FAULT_OOM = -4098;

/**
 * The final (2026) shape of `vm_uffd_ops`. Every hook that hands back a folio
 * hands back a pfn; negative numbers are errnos (-ENOENT: "not present").
 */
export interface VmUffdOps {
  /**
   * Asked at UFFDIO_REGISTER for each VMA, after the core's own checks.
   * `modes` is the set of UFFDIO_REGISTER_MODE_* bits requested.
   */
  canUserfault(vma: VmaView, modes: number): boolean;
  /**
   * The folio at `pgoff` in the page cache, locked and with a reference for
   * the caller; never allocates. -ENOENT when nothing is cached there. Used by
   * UFFDIO_CONTINUE and by the fault path to tell MINOR from MISSING.
   */
  getFolioNoalloc?(inode: InodeView, pgoff: number): number;
  /** A fresh folio for COPY/ZEROPAGE at `address`, with one reference; -ENOSPC/-ENOMEM/-EFAULT on failure. */
  allocFolio?(vma: VmaView, address: number): number;
  /** Inserts the filled, locked folio into the page cache; 0 or -errno (-EEXIST when occupied). */
  filemapAdd?(pfn: number, vma: VmaView, address: number): number;
  /** Undoes `filemapAdd` when mapping the folio fails. */
  filemapRemove?(pfn: number, vma: VmaView): void;
}

export interface InodeRequest {
  /** log2 of the huge page size asked for (MFD_HUGE_* / MAP_HUGE_*), or 0 for the default. */
  readonly hugePageShift: number;
}

export interface MmapRequest {
  readonly shared: boolean;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly prot: number;
}

export interface FileOps {
  /** 0 when pread works, else the errno it fails with. */
  readonly pread: number;
  readonly pwrite: number;
  /** The errno fallocate(PUNCH_HOLE) fails with, or 0. */
  readonly punchHole: number;
  /**
   * The file's llseek: `'default'` (the default when absent) is
   * default_llseek, where the whole file up to its size is data for
   * SEEK_DATA and SEEK_HOLE (hugetlbfs); `'page-cache'` is
   * shmem_file_llseek, where they follow the up-to-date folios in the page
   * cache (mapping_seek_hole_data); `'none'` is a file without llseek, so
   * without FMODE_LSEEK: every lseek is ESPIPE (guest_memfd on 6.18).
   */
  readonly llseek?: 'default' | 'page-cache' | 'none';
}

/**
 * A memory type. A module exports a factory that receives the kernel's
 * services and returns the descriptor; the registry validates it once.
 */
export interface MemoryType {
  readonly name: string;
  readonly description: string;
  readonly provides: readonly Provision[];
  /** VM_* flags every mapping of this type carries (VM_HUGETLB, VM_DONTEXPAND). */
  readonly vmFlags: number;
  /**
   * The range ioctls (bit = 1 << _UFFDIO_nr) the type supports; the modes
   * follow from them: COPY gives MISSING, CONTINUE gives MINOR,
   * WRITEPROTECT gives WP. UFFDIO_REGISTER returns this mask filtered by the
   * requested modes.
   */
  readonly rangeIoctls: bigint;
  readonly fileOps: FileOps;
  /** log2 of the folio size for a new inode, or -errno. Absent for types without files. */
  inodePageShift?(request: InodeRequest): number;
  /** Per-inode state the type keeps, created with the inode. */
  initInode?(inode: InodeView): void;
  /** Extra checks at mmap; 0 or -errno. */
  mmapCheck?(inode: InodeView, request: MmapRequest): number;
  /**
   * The ordinary fault (vm_ops->fault): the folio caching `pgoff`, allocated
   * into the page cache when absent, with a reference for the caller and not
   * locked; or FAULT_ALLOC_PRIVATE / FAULT_SIGBUS / FAULT_OOM.
   */
  fault?(inode: InodeView, pgoff: number, mayShare: boolean): number;
  /**
   * The cached folio at `pgoff`, allocated when absent (pwrite, fallocate):
   * the page cache's reference only, unlocked; or -errno.
   */
  getFolioForWrite?(inode: InodeView, pgoff: number): number;
  /**
   * vm_ops->map_pages: a read fault also maps the neighbouring pages already
   * in the page cache (fault-around, 64 KiB), as filemap_map_pages does.
   */
  readonly mapPages?: boolean;
  /** Character devices the type brings; the core routes open(2) of their paths to them. */
  readonly devices?: readonly DeviceDriver[];
  /** Extra checks on fallocate(2) modes; 0 or -errno (a type may refuse plain allocation). */
  fallocateCheck?(inode: InodeView, mode: number): number;
  /**
   * write(2) at `offset` (the file position): bytes written or -errno.
   * Absent: the core uses the page cache as pwrite does.
   */
  write?(inode: InodeView, data: Uint8Array, offset: number): number;
  /** The type's vm_uffd_ops, or null when it does not support userfaultfd. */
  readonly uffdOps: VmUffdOps | null;
  /**
   * For the conformance suite (src/conformance/), and only for types no
   * provision reaches (files handed out by a device, as guest_memfd's by
   * /dev/kvm): makes a new file of this type, `sizeBytes` long, with system
   * calls alone, and returns its fd. The file must be mappable MAP_SHARED
   * and, when the type supports userfaultfd, one `canUserfault` accepts:
   * the suite's expectations come from the declaration and assume so.
   */
  conformanceFile?(syscalls: ConformanceSyscalls, sizeBytes: number): number;
}

/** What a memory type module exports: a name and a factory bound to one kernel. */
export interface MemoryTypeModule {
  readonly name: string;
  create(services: MemoryTypeServices): MemoryType;
}
