/**
 * What the conformance suite expects of a memory type, derived from its
 * declaration and the rules of the final vm_uffd_ops (final-ops.md,
 * uapi-facts.md §3.2), never from running the type: which modes register,
 * which `ioctls` mask UFFDIO_REGISTER returns, how the suite can obtain
 * memory of the type, and the requirements a case states.
 */
import type { MemoryType } from '../model/mm/memtype.ts';
import {
  _UFFDIO_CONTINUE,
  _UFFDIO_COPY,
  _UFFDIO_POISON,
  _UFFDIO_WRITEPROTECT,
  _UFFDIO_ZEROPAGE,
  UFFD_API_RANGE_IOCTLS,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
} from '../uapi/constants.ts';

const bit = (nr: number) => 1n << BigInt(nr);

/** The range ioctls a case may name, by their Linux names. */
export const RANGE_IOCTLS = {
  COPY: _UFFDIO_COPY,
  ZEROPAGE: _UFFDIO_ZEROPAGE,
  WRITEPROTECT: _UFFDIO_WRITEPROTECT,
  CONTINUE: _UFFDIO_CONTINUE,
  POISON: _UFFDIO_POISON,
} as const;
export type RangeIoctlName = keyof typeof RANGE_IOCTLS;

export function declares(type: MemoryType, ioctl: RangeIoctlName): boolean {
  return type.uffdOps !== null && (type.rangeIoctls & bit(RANGE_IOCTLS[ioctl])) !== 0n;
}

/** A type without files is the anonymous one; every other type has a page cache. */
export function isFileBacked(type: MemoryType): boolean {
  return !type.provides.includes('anonymous');
}

/** The UFFDIO_REGISTER_MODE_* bits that follow from the declared ioctls: COPY, CONTINUE, WRITEPROTECT. */
export function declaredModes(type: MemoryType): number {
  if (type.uffdOps === null) return 0;
  return (
    (declares(type, 'COPY') ? UFFDIO_REGISTER_MODE_MISSING : 0) |
    (declares(type, 'CONTINUE') ? UFFDIO_REGISTER_MODE_MINOR : 0) |
    (declares(type, 'WRITEPROTECT') ? UFFDIO_REGISTER_MODE_WP : 0)
  );
}

/**
 * The `ioctls` UFFDIO_REGISTER returns for `modes` on memory of this type,
 * or null where it must fail with EINVAL: mode 0, a type without uffdOps,
 * or a mode its ioctls do not give. The mask is the declared one filtered by
 * the requested modes (no WRITEPROTECT without WP, no CONTINUE without MINOR).
 */
export function expectedRegisterIoctls(type: MemoryType, modes: number): bigint | null {
  if (modes === 0 || type.uffdOps === null) return null;
  if ((modes & ~declaredModes(type)) !== 0) return null;
  return filterByModes(type.rangeIoctls & UFFD_API_RANGE_IOCTLS, modes);
}

/**
 * WP alone on a WP_ASYNC context registers on any VMA (dirty tracking needs no
 * help from the type); the mask is the type's, or the generic one for a type
 * without uffdOps, filtered by the mode.
 */
export function expectedWpAsyncIoctls(type: MemoryType): bigint {
  const declared = type.uffdOps === null ? UFFD_API_RANGE_IOCTLS : type.rangeIoctls & UFFD_API_RANGE_IOCTLS;
  return filterByModes(declared, UFFDIO_REGISTER_MODE_WP);
}

function filterByModes(mask: bigint, modes: number): bigint {
  let result = mask;
  if ((modes & UFFDIO_REGISTER_MODE_WP) === 0) result &= ~bit(_UFFDIO_WRITEPROTECT);
  if ((modes & UFFDIO_REGISTER_MODE_MINOR) === 0) result &= ~bit(_UFFDIO_CONTINUE);
  return result;
}

/** How the suite obtains memory of a type, from what it declares. */
export type MemorySource =
  /** Private anonymous mappings (the 'anonymous' provision). */
  | { readonly kind: 'anonymous' }
  /** memfd_create, with MFD_HUGETLB for the 'memfd-hugetlb' provision. */
  | { readonly kind: 'memfd'; readonly hugetlb: boolean }
  /** The type's own `conformanceFile` recipe (files a device hands out). */
  | { readonly kind: 'recipe' };

export function memorySource(type: MemoryType): MemorySource | null {
  if (type.provides.includes('anonymous')) return { kind: 'anonymous' };
  if (type.provides.includes('memfd')) return { kind: 'memfd', hugetlb: false };
  if (type.provides.includes('memfd-hugetlb')) return { kind: 'memfd', hugetlb: true };
  if (type.conformanceFile !== undefined) return { kind: 'recipe' };
  return null;
}

export function describeSource(source: MemorySource): string {
  if (source.kind === 'anonymous') return 'mmap(MAP_PRIVATE|MAP_ANONYMOUS)';
  if (source.kind === 'memfd') return source.hugetlb ? 'memfd_create(MFD_HUGETLB)' : 'memfd_create';
  return 'its conformanceFile recipe';
}

/** Something a case needs the type to declare; `unmet` says why a type does not qualify. */
export interface Requirement {
  readonly label: string;
  unmet(type: MemoryType): string | null;
}

/** The type declares `UFFDIO_<ioctl>`. */
export function ioctl(name: RangeIoctlName): Requirement {
  return {
    label: `UFFDIO_${name}`,
    unmet: (type) =>
      type.uffdOps === null
        ? 'declares no uffdOps'
        : declares(type, name)
          ? null
          : `does not declare UFFDIO_${name}`,
  };
}

/** The type has vm_uffd_ops and at least one mode follows from its ioctls. */
export const userfaultfd: Requirement = {
  label: 'a userfaultfd mode',
  unmet: (type) =>
    type.uffdOps === null
      ? 'declares no uffdOps'
      : declaredModes(type) === 0
        ? 'declares no ioctl that gives a mode (COPY, CONTINUE, WRITEPROTECT)'
        : null,
};

/** The type has files (a page cache), as every type but the anonymous one. */
export const files: Requirement = {
  label: 'files',
  unmet: (type) => (isFileBacked(type) ? null : 'has no files (anonymous memory)'),
};

/** Some range ioctl the case checks is not declared. */
export const someUndeclaredIoctl: Requirement = {
  label: 'an undeclared range ioctl',
  unmet: (type) =>
    (Object.keys(RANGE_IOCTLS) as RangeIoctlName[]).some((name) => !declares(type, name))
      ? null
      : 'declares every range ioctl the case checks',
};
