/**
 * Scale measurements: what an address space costs when it is huge and empty,
 * and what each populated page costs beside its 4 KiB of data.
 */

import { readFileSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { KernelBackend } from '../api/backend.ts';
import { ModelBackend } from '../api/model-backend.ts';
import { Process } from '../api/process.ts';
import { MAP_NORESERVE, UFFDIO_REGISTER_MODE_MISSING } from '../uapi/index.ts';

const PAGE = 4096;
const PIECE = 1024 * 1024;

let collect: (() => void) | undefined;

/** A full garbage collection, so memory deltas count live data only (and earlier rows' models are gone). */
export function gc(): void {
  if (collect === undefined) {
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as () => void;
  }
  collect();
  collect();
}

/** JavaScript heap plus array-buffer memory (where the model's typed arrays live). */
function modelMemory(): number {
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** VmRSS + VmPTE of this process from /proc/self/status, in bytes (the host kernel's side). */
function hostMemory(): { rss: number; pageTables: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    return match === null ? 0 : Number(match[1]) * 1024;
  };
  return { rss: field('VmRSS'), pageTables: field('VmPTE') };
}

export interface SparseResult {
  readonly bytes: number;
  /** Memory the mapping and its registration added. */
  readonly addedBytes: number;
  readonly mmapUs: number;
  readonly registerUs: number;
  /** What `addedBytes` counts. */
  readonly measure: string;
}

/** mmap of `bytes` (MAP_NORESERVE) and UFFDIO_REGISTER over all of it; nothing is touched. */
export function measureSparse(backend: KernelBackend, bytes: number): SparseResult {
  const process = new Process(backend.self);
  const model = backend.name === 'model';
  const uffd = process.userfaultfd({ nonblock: true });
  uffd.api();
  const before = model ? modelMemory() : hostMemory().pageTables;
  const t0 = performance.now();
  const area = process.mmap({ length: bytes, extraFlags: MAP_NORESERVE });
  const t1 = performance.now();
  uffd.register({ start: area, length: bytes }, UFFDIO_REGISTER_MODE_MISSING);
  const t2 = performance.now();
  const after = model ? modelMemory() : hostMemory().pageTables;
  process.munmap(area, bytes);
  uffd.close();
  return {
    bytes,
    addedBytes: Math.max(0, after - before),
    mmapUs: (t1 - t0) * 1000,
    registerUs: (t2 - t1) * 1000,
    measure: model ? 'JS heap + array buffers' : 'VmPTE (page tables)',
  };
}

export interface MetadataResult {
  readonly pages: number;
  /** Model memory added beyond the page frames themselves, per populated page. */
  readonly bytesPerPage: number;
  /** The frame storage the populated pages took. */
  readonly frameBytes: number;
  readonly populateMs: number;
}

/**
 * Populates `pages` 4 KiB anonymous pages on a fresh model by writing them
 * and reports the memory added beside their frames, per page: folio
 * metadata, page-table leaves, VMAs and everything else the model keeps.
 */
export function measureMetadata(pages: number): MetadataResult {
  const bytes = pages * PAGE;
  const backend = new ModelBackend({ seed: 1, memory: { memoryBytesMax: bytes + 64 * PIECE } });
  const physmem = backend.kernel.memory;
  const process = new Process(backend.self);
  const data = new Uint8Array(PIECE).fill(0xa5);
  const framesBefore = physmem.frameStorageBytes;
  const before = modelMemory();
  const t0 = performance.now();
  const area = process.mmap({ length: bytes });
  for (let offset = 0; offset < bytes; offset += PIECE) {
    process.write(area + offset, data.subarray(0, Math.min(PIECE, bytes - offset)));
  }
  const populateMs = performance.now() - t0;
  const after = modelMemory();
  const frameBytes = physmem.frameStorageBytes - framesBefore;
  const populated = physmem.framesAllocated;
  if (populated < pages) throw new Error(`bench metadata: ${populated} frames allocated for ${pages} pages`);
  const result = {
    pages,
    bytesPerPage: Math.max(0, after - before - frameBytes) / pages,
    frameBytes,
    populateMs,
  };
  process.munmap(area, bytes);
  return result;
}
