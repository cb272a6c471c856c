/**
 * The memory types the userfaultfd tests cross their cases with, as the
 * kernel selftests' mem_types[] table does, and small probes into the model
 * (VMAs, page-table entries, page caches) for the checks user space cannot
 * make through the process API.
 */
import type { ModelBackend } from '../src/api/model-backend.ts';
import type { Process } from '../src/api/process.ts';
import type { ModelProcess } from '../src/model/process.ts';
import { HUGE, PAGE } from './helpers.ts';

/** One mapping made by a memory kind. */
export interface Area {
  readonly address: number;
  readonly length: number;
  /** The memfd behind the mapping; null for anonymous memory. */
  readonly fd: number | null;
}

export interface MemKind {
  readonly name: string;
  /** The page size faults, masks and fills work in: 4 KiB or 2 MiB. */
  readonly pageSize: number;
  readonly hugetlb: boolean;
  /** MAP_SHARED. */
  readonly shared: boolean;
  /** Maps `pages` pages of this kind; a memfd gets exactly that size. */
  map(process: Process, pages: number): Area;
  /** Another mapping of the same file (for page-cache kinds with an fd), shared unless said otherwise. */
  alias?(process: Process, area: Area, options?: { shared?: boolean }): number;
}

function memfdKind(name: string, shared: boolean, hugetlb: boolean): MemKind {
  const pageSize = hugetlb ? HUGE : PAGE;
  return {
    name,
    pageSize,
    hugetlb,
    shared,
    map(process, pages) {
      const fd = process.memfd(name, { size: pages * pageSize, hugetlb });
      return {
        address: process.mmap({ length: pages * pageSize, fd, shared }),
        length: pages * pageSize,
        fd,
      };
    },
    alias(process, area, options = {}) {
      return process.mmap({ length: area.length, fd: area.fd!, shared: options.shared ?? true });
    },
  };
}

export const ANON_PRIVATE: MemKind = {
  name: 'anon private',
  pageSize: PAGE,
  hugetlb: false,
  shared: false,
  map: (process, pages) => ({
    address: process.mmap({ length: pages * PAGE }),
    length: pages * PAGE,
    fd: null,
  }),
};

/** MAP_SHARED|MAP_ANONYMOUS is shmem without an fd. */
export const ANON_SHARED: MemKind = {
  name: 'anon shared',
  pageSize: PAGE,
  hugetlb: false,
  shared: true,
  map: (process, pages) => ({
    address: process.mmap({ length: pages * PAGE, shared: true }),
    length: pages * PAGE,
    fd: null,
  }),
};

export const MEMFD_SHARED = memfdKind('memfd shared', true, false);
export const MEMFD_PRIVATE = memfdKind('memfd private', false, false);
export const HUGETLB_SHARED = memfdKind('hugetlb shared', true, true);
export const HUGETLB_PRIVATE = memfdKind('hugetlb private', false, true);

export const ALL_KINDS: readonly MemKind[] = [
  ANON_PRIVATE,
  ANON_SHARED,
  MEMFD_SHARED,
  MEMFD_PRIVATE,
  HUGETLB_SHARED,
  HUGETLB_PRIVATE,
];

/** Kinds whose page cache the test can fill through an fd (pwrite, or a shared alias for hugetlbfs). */
export const FILE_KINDS: readonly MemKind[] = [MEMFD_SHARED, MEMFD_PRIVATE, HUGETLB_SHARED, HUGETLB_PRIVATE];

/** Puts `data` into the page cache at `offset`: pwrite for shmem; hugetlbfs has no write(), so a shared alias. */
export function fillPageCache(
  process: Process,
  kind: MemKind,
  area: Area,
  offset: number,
  data: Uint8Array,
): void {
  if (!kind.hugetlb) {
    process.pwrite(area.fd!, data, offset);
    return;
  }
  const alias = kind.alias!(process, area, { shared: true });
  process.write(alias + offset, data);
  process.munmap(alias, area.length);
}

/** The model's view of a process. */
export function modelProcess(backend: ModelBackend, process: Process): ModelProcess {
  const model = backend.kernel.processes.get(process.pid);
  if (model === undefined) throw new Error(`no model process ${process.pid}`);
  return model;
}

/** VMAs intersecting [start, end). */
export function vmasIn(backend: ModelBackend, process: Process, start: number, end: number) {
  return modelProcess(backend, process).mm.vmasIn(start, end);
}

/** The page-table entry flags (PTE_* of src/model/mm/pagetable.ts) at `address`. */
export function pteFlags(backend: ModelBackend, process: Process, address: number): number {
  return modelProcess(backend, process).mm.pageTable.flagsAt(Math.floor(address / PAGE));
}

/** Number of 4 KiB-indexed folios the memfd's page cache holds. */
export function cachedFolios(backend: ModelBackend, process: Process, fd: number): number {
  const file = modelProcess(backend, process).fds.get(fd);
  if (file?.kind !== 'inode') throw new Error(`fd ${fd} is not a file`);
  return file.inode.cache.countInRange(0, 2 ** 40);
}

/** The frame the page-table entry at `address` maps (meaningful for present entries only). */
export function ptePfn(backend: ModelBackend, process: Process, address: number): number {
  return modelProcess(backend, process).mm.pageTable.valueAt(Math.floor(address / PAGE));
}

/** Whether the present entry at `address` maps anonymous memory (no page-cache owner). */
export function mapsAnonymousPage(backend: ModelBackend, process: Process, address: number): boolean {
  const pfn = ptePfn(backend, process, address);
  return backend.kernel.memory.folioInode[pfn] === -1 && pfn !== 0;
}

/** Bytes whose value depends on the offset and a seed, so misplaced bytes never match by accident. */
export function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = ((i * 31 + (i >>> 12) * 7 + seed * 101) & 0xff) | 1;
  return bytes;
}

/** Asserts two byte arrays are equal, naming the first differing offset (fast for 2 MiB pages). */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.byteLength !== expected.byteLength) {
    throw new Error(`${what}: ${actual.byteLength} bytes, expected ${expected.byteLength}`);
  }
  if (Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected)) return;
  const at = actual.findIndex((byte, i) => byte !== expected[i]);
  throw new Error(`${what}: byte ${at} (0x${at.toString(16)}) is ${actual[at]}, expected ${expected[at]}`);
}
