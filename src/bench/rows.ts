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
  {
    id: 'missing-copy-4k',
    title: 'MISSING + COPY 4 KiB',
    native: 'missing-copy',
    bytesPerFault: 4 * KIB,
    memory: 'anon',
    touch: 'read',
  },
  {
    id: 'missing-copy-64k',
    title: 'MISSING + COPY 64 KiB',
    native: 'missing-copy',
    bytesPerFault: 64 * KIB,
    memory: 'anon',
    touch: 'read',
  },
  {
    id: 'missing-copy-2m',
    title: 'MISSING + COPY 2 MiB',
    native: 'missing-copy',
    bytesPerFault: 2 * MIB,
    memory: 'anon',
    touch: 'read',
  },
  {
    id: 'minor-continue-4k',
    title: 'MINOR + CONTINUE 4 KiB (shmem)',
    native: 'minor-continue',
    bytesPerFault: 4 * KIB,
    memory: 'shmem',
    touch: 'read',
  },
  {
    id: 'wp-4k',
    title: 'WP + unprotect 4 KiB',
    native: 'wp',
    bytesPerFault: 4 * KIB,
    memory: 'anon',
    touch: 'write',
  },
  {
    id: 'missing-zeropage-4k',
    title: 'MISSING + ZEROPAGE 4 KiB',
    native: 'missing-zeropage',
    bytesPerFault: 4 * KIB,
    memory: 'anon',
    touch: 'read',
  },
  {
    id: 'hugetlb-copy-2m',
    title: 'hugetlb 2 MiB COPY',
    native: 'hugetlb-copy',
    bytesPerFault: 2 * MIB,
    memory: 'hugetlb',
    touch: 'read',
  },
];

export function findRow(id: string): Row | undefined {
  return ROWS.find((candidate) => candidate.id === id);
}
