/**
 * The one file that lists the built-in memory types. Adding a type means
 * adding its module here (or passing it to the kernel's options); nothing in
 * mm/ or uffd/ changes.
 */
import type { MemoryTypeModule } from '../mm/memtype.ts';
import { anonymous } from './anon.ts';
import { guestMemfd } from './guest_memfd/index.ts';
import { hugetlbfs } from './hugetlbfs.ts';
import { shmem } from './shmem.ts';

export const BUILTIN_MEMORY_TYPES: readonly MemoryTypeModule[] = [anonymous, shmem, hugetlbfs, guestMemfd];
