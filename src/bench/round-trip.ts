/**
 * One benchmark row as a program on the process API: the same code runs on
 * the model and on the host (where the faulting thread is a native access
 * thread and this handler is TypeScript). It sets the region up, times the
 * faulting thread from its start to its end while the handler resolves one
 * fault per chunk, then checks every byte of the region.
 */

import type { KernelBackend } from '../api/backend.ts';
import { Process, type ThreadAccess, type Uffd } from '../api/process.ts';
import {
  EEXIST,
  KernelError,
  UFFD_FEATURE_MINOR_SHMEM,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
  UFFDIO_WRITEPROTECT_MODE_WP,
} from '../uapi/index.ts';
import type { Row } from './rows.ts';

const PAGE = 4096;
/** Setup and verification move memory in pieces of this size. */
const PIECE = 1024 * 1024;
/** Where in each chunk the faulting thread touches (past the page-index stamp). */
const TOUCH_OFFSET = 64;
const WRITTEN = 0x5a;

export interface RoundTripResult {
  readonly faults: number;
  readonly ns: number;
}

/** The page-content pattern: every 4 KiB page starts with its index, the rest is a byte derived from it. */
export function patternPiece(firstPage: number, bytes: number): Uint8Array {
  const piece = new Uint8Array(bytes);
  const view = new DataView(piece.buffer);
  for (let offset = 0; offset < bytes; offset += PAGE) {
    const page = firstPage + offset / PAGE;
    piece.fill((page * 31 + 7) & 0xff, offset, offset + PAGE);
    view.setUint32(offset, page, true);
  }
  return piece;
}

/**
 * Runs `row` once over `regionBytes` and returns the faults taken and the wall
 * time from the first faulting thread's start to the last one's end. With
 * `vcpus` > 1 each faulting thread takes an equal slice of the region.
 */
export async function runRoundTrip(
  backend: KernelBackend,
  row: Row,
  regionBytes: number,
  vcpus = 1,
): Promise<RoundTripResult> {
  if (regionBytes % (row.bytesPerFault * vcpus) !== 0) {
    throw new RangeError(
      `bench: region of ${regionBytes} bytes does not split into ${vcpus} slices of ${row.bytesPerFault}-byte chunks`,
    );
  }
  const process = new Process(backend.self);
  const setup = new Setup(process, row, regionBytes);
  try {
    setup.prepare();
    const uffd = setup.uffd;
    const chunks = regionBytes / row.bytesPerFault;
    const slice = chunks / vcpus;
    const started = globalThis.process.hrtime.bigint();
    const threads = [];
    for (let vcpu = 0; vcpu < vcpus; vcpu++) {
      threads.push(process.thread(touches(row, setup.area, vcpu * slice, slice), `bench-vcpu${vcpu}`));
    }
    const resolved = await serve(uffd, row, setup, chunks);
    const results = await Promise.all(threads.map((thread) => thread.join()));
    const ns = Number(globalThis.process.hrtime.bigint() - started);
    let faults = 0;
    for (const [vcpu, result] of results.entries()) {
      if (result.state !== 'done')
        throw new Error(`bench ${row.id}: vCPU ${vcpu} ended with ${result.state}`);
      setup.verifyReads(result.reads, vcpu * slice);
      faults += result.faults;
    }
    if (resolved !== chunks)
      throw new Error(`bench ${row.id}: ${resolved} faults resolved, ${chunks} expected`);
    setup.verify();
    return { faults: faults > 0 ? faults : resolved, ns };
  } finally {
    setup.release();
  }
}

function* touches(row: Row, area: number, first: number, chunks: number): Generator<ThreadAccess> {
  const data = Uint8Array.of(WRITTEN);
  for (let chunk = first; chunk < first + chunks; chunk++) {
    const address = area + chunk * row.bytesPerFault + TOUCH_OFFSET;
    yield row.touch === 'write' ? { kind: 'write', address, data } : { kind: 'read', address, length: 1 };
  }
}

/** Resolves faults until every chunk has been resolved once; returns how many were. */
async function serve(uffd: Uffd, row: Row, setup: Setup, chunks: number): Promise<number> {
  const done = new Uint8Array(chunks);
  const size = row.bytesPerFault;
  let resolved = 0;
  while (resolved < chunks) {
    for (const message of await uffd.nextMessages(64)) {
      if (message.event !== 'pagefault')
        throw new Error(`bench ${row.id}: unexpected ${message.event} event`);
      const offset = Math.floor((Number(message.address) - setup.area) / size) * size;
      const chunk = offset / size;
      if (done[chunk] === 1) continue;
      try {
        resolve(uffd, row, setup, offset);
      } catch (error) {
        if (!(error instanceof KernelError && error.errno === EEXIST)) throw error;
      }
      done[chunk] = 1;
      resolved++;
    }
  }
  return resolved;
}

function resolve(uffd: Uffd, row: Row, setup: Setup, offset: number): void {
  const start = setup.area + offset;
  const length = row.bytesPerFault;
  switch (row.native) {
    case 'missing-copy':
    case 'hugetlb-copy':
      uffd.copy({ dst: start, src: setup.source + offset, length });
      return;
    case 'missing-zeropage':
      uffd.zeropage({ start, length });
      return;
    case 'minor-continue':
      uffd.continue({ start, length });
      return;
    case 'wp':
      uffd.writeprotect({ start, length }, 0);
      return;
  }
}

/** The row's mappings, file and userfaultfd, made before timing and released after. */
class Setup {
  area = 0;
  source = 0;
  private memfd = -1;
  private uffdHandle: Uffd | null = null;

  constructor(
    private readonly process: Process,
    private readonly row: Row,
    private readonly bytes: number,
  ) {}

  get uffd(): Uffd {
    if (this.uffdHandle === null) throw new Error('bench: userfaultfd not set up');
    return this.uffdHandle;
  }

  prepare(): void {
    const { process, row, bytes } = this;
    const uffd = process.userfaultfd({ nonblock: true });
    this.uffdHandle = uffd;
    uffd.api(row.memory === 'shmem' ? UFFD_FEATURE_MINOR_SHMEM : 0);
    switch (row.native) {
      case 'missing-copy':
      case 'hugetlb-copy':
        this.source = process.mmap({ length: bytes });
        this.fill(this.source);
        this.area = process.mmap({ length: bytes, hugetlb: row.memory === 'hugetlb' });
        uffd.register({ start: this.area, length: bytes }, UFFDIO_REGISTER_MODE_MISSING);
        return;
      case 'missing-zeropage':
        this.area = process.mmap({ length: bytes });
        uffd.register({ start: this.area, length: bytes }, UFFDIO_REGISTER_MODE_MISSING);
        return;
      case 'minor-continue': {
        this.memfd = process.memfd('faultline-bench', { size: bytes });
        for (let offset = 0; offset < bytes; offset += PIECE) {
          process.pwrite(this.memfd, patternPiece(offset / PAGE, Math.min(PIECE, bytes - offset)), offset);
        }
        this.area = process.mmap({ length: bytes, shared: true, fd: this.memfd });
        uffd.register({ start: this.area, length: bytes }, UFFDIO_REGISTER_MODE_MINOR);
        return;
      }
      case 'wp':
        this.area = process.mmap({ length: bytes });
        this.fill(this.area);
        uffd.register({ start: this.area, length: bytes }, UFFDIO_REGISTER_MODE_WP);
        uffd.writeprotect({ start: this.area, length: bytes }, UFFDIO_WRITEPROTECT_MODE_WP);
        return;
    }
  }

  private fill(address: number): void {
    for (let offset = 0; offset < this.bytes; offset += PIECE) {
      this.process.write(address + offset, patternPiece(offset / PAGE, Math.min(PIECE, this.bytes - offset)));
    }
  }

  /** Every byte of the region as the row leaves it. */
  verify(): void {
    const { row, bytes } = this;
    const zero = row.native === 'missing-zeropage';
    for (let offset = 0; offset < bytes; offset += PIECE) {
      const length = Math.min(PIECE, bytes - offset);
      const expected = zero ? new Uint8Array(length) : patternPiece(offset / PAGE, length);
      if (row.touch === 'write') {
        for (let at = TOUCH_OFFSET; at < length; at += row.bytesPerFault) expected[at] = WRITTEN;
      }
      const actual = this.process.read(this.area + offset, length);
      const index = firstDifference(actual, expected);
      if (index >= 0) {
        throw new Error(
          `bench ${row.id}: byte at offset ${offset + index} is ${actual[index]}, expected ${expected[index]}`,
        );
      }
    }
  }

  /** Each byte a faulting thread read, its first chunk being `first`. */
  verifyReads(reads: readonly Uint8Array[], first: number): void {
    const { row } = this;
    for (let index = 0; index < reads.length; index++) {
      const offset = (first + index) * row.bytesPerFault + TOUCH_OFFSET;
      const expected = row.native === 'missing-zeropage' ? 0 : (Math.floor(offset / PAGE) * 31 + 7) & 0xff;
      if (reads[index]?.[0] !== expected) {
        throw new Error(
          `bench ${row.id}: the faulting thread read ${reads[index]?.[0]} at ${offset}, expected ${expected}`,
        );
      }
    }
  }

  release(): void {
    const { process, bytes } = this;
    this.uffdHandle?.close();
    if (this.area !== 0) process.munmap(this.area, bytes);
    if (this.source !== 0) process.munmap(this.source, bytes);
    if (this.memfd >= 0) process.close(this.memfd);
  }
}

function firstDifference(actual: Uint8Array, expected: Uint8Array): number {
  if (Buffer.compare(actual, expected) === 0) return -1;
  for (let index = 0; index < expected.length; index++) if (actual[index] !== expected[index]) return index;
  return actual.length;
}
