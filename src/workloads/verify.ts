/**
 * Checking guest memory at memory speed: whole slices compared with one
 * memcmp (Buffer.compare), page by page only where a slice differs.
 */

/** Bytes of guest memory a verification reads and compares at a time. */
export const VERIFY_SLICE_BYTES = 16 * 1024 * 1024;

/** Byte-for-byte equality (memcmp through Buffer). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/** How many of the pages of `actual` equal those of `expected`: one memcmp when all do. */
export function matchingPages(actual: Uint8Array, expected: Uint8Array, pageSize: number): number {
  const pages = Math.floor(actual.byteLength / pageSize);
  if (equalBytes(actual, expected)) return pages;
  let matching = 0;
  for (let at = 0; at < pages * pageSize; at += pageSize) {
    if (equalBytes(actual.subarray(at, at + pageSize), expected.subarray(at, at + pageSize))) matching++;
  }
  return matching;
}

/** The indices of the pages of `actual` that differ from `expected`, up to `max` of them. */
export function differingPages(
  actual: Uint8Array,
  expected: Uint8Array,
  pageSize: number,
  max: number,
): number[] {
  const differing: number[] = [];
  if (equalBytes(actual, expected)) return differing;
  for (let at = 0; at < actual.byteLength && differing.length < max; at += pageSize) {
    if (!equalBytes(actual.subarray(at, at + pageSize), expected.subarray(at, at + pageSize)))
      differing.push(at / pageSize);
  }
  return differing;
}
