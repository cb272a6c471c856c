/**
 * The benchmark's rows: one userfaultfd round trip each (a faulting thread
 * touches a region one fault at a time, a handler thread resolves each
 * fault), run on the model, on the host with the TypeScript handler, and on
 * the host with the C reference handler compiled into the addon.
 */

export type RowId =
  | 'missing-copy-4k'
  | 'missing-copy-64k'
  | 'missing-copy-2m'
  | 'minor-continue-4k'
  | 'wp-4k'
  | 'missing-zeropage-4k'
  | 'hugetlb-copy-2m';

/** What the C reference handler calls the same row (native/bench.cc). */
export type NativeRow = 'missing-copy' | 'missing-zeropage' | 'minor-continue' | 'wp' | 'hugetlb-copy';

export interface Row {
  readonly id: RowId;
  readonly title: string;
  readonly native: NativeRow;
  /** Bytes resolved per fault: one fault per chunk of this size. */
  readonly bytesPerFault: number;
  /** The guest memory: anonymous private, a shmem memfd mapped shared, or hugetlb anonymous private. */
  readonly memory: 'anon' | 'shmem' | 'hugetlb';
  /** Which access the faulting thread makes: WP faults need writes. */
  readonly touch: 'read' | 'write';
}

const KIB = 1024;
const MIB = 1024 * KIB;

export const ROWS: readonly Row[] = [
  row('missing-copy-4k', 'MISSING + COPY 4 KiB', 'missing-copy', 4 * KIB, 'anon', 'read'),
  row('missing-copy-64k', 'MISSING + COPY 64 KiB', 'missing-copy', 64 * KIB, 'anon', 'read'),
  row('missing-copy-2m', 'MISSING + COPY 2 MiB', 'missing-copy', 2 * MIB, 'anon', 'read'),
  row('minor-continue-4k', 'MINOR + CONTINUE 4 KiB (shmem)', 'minor-continue', 4 * KIB, 'shmem', 'read'),
  row('wp-4k', 'WP + unprotect 4 KiB', 'wp', 4 * KIB, 'anon', 'write'),
  row('missing-zeropage-4k', 'MISSING + ZEROPAGE 4 KiB', 'missing-zeropage', 4 * KIB, 'anon', 'read'),
  row('hugetlb-copy-2m', 'hugetlb 2 MiB COPY', 'hugetlb-copy', 2 * MIB, 'hugetlb', 'read'),
];

function row(
  id: RowId,
  title: string,
  native: NativeRow,
  bytesPerFault: number,
  memory: Row['memory'],
  touch: Row['touch'],
): Row {
  return { id, title, native, bytesPerFault, memory, touch };
}

export function findRow(id: string): Row | undefined {
  return ROWS.find((candidate) => candidate.id === id);
}
