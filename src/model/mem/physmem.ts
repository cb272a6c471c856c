/**
 * Physical memory: page frames in large buffers, folio metadata in typed
 * arrays indexed by page frame number (pfn), a frame allocator, the shared
 * zero page and the hugetlb pool.
 *
 * A folio is named by the pfn of its head frame. Only head entries of the
 * metadata arrays are meaningful for large folios. Nothing here allocates a
 * JavaScript object per page.
 */

import type { FaultInjector } from '../inject.ts';

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;

/** Frames per buffer chunk: 64 MiB, large enough for 32 order-9 folios. */
export const CHUNK_SHIFT = 14;
const CHUNK_FRAMES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_FRAMES - 1;

/** Folio flags (a subset of the kernel's page flags). */
export const PG_LOCKED = 1 << 0;
export const PG_UPTODATE = 1 << 1;
export const PG_ANON = 1 << 2;
export const PG_DIRTY = 1 << 3;
/** Part of the hugetlb pool: returns to the pool, not to the buddy lists. */
export const PG_HUGETLB = 1 << 4;
/** The anonymous folio is mapped by one process only (PageAnonExclusive). */
export const PG_ANON_EXCLUSIVE = 1 << 5;
/** The frame is allocated (head or tail); cleared on free. */
export const PG_ALLOCATED = 1 << 6;

/** The pfn of the shared zero page. It is never allocated or freed. */
export const ZERO_PFN = 0;

/** The "no owner inode" value of `folioInode`. */
export const NO_INODE = -1;

export interface PhysicalMemoryOptions {
  /** Upper bound on memory the model may use for page data, in bytes. */
  readonly memoryBytesMax: number;
  /** Number of 2 MiB pages in the hugetlb pool (vm.nr_hugepages). */
  readonly hugePages2M: number;
  /**
   * Memory made resident at boot, in bytes (rounded up to whole 64 MiB
   * chunks, at most `memoryBytesMax`): its chunks are allocated and written
   * once when the memory is created, as a machine's RAM is all there before
   * anything runs. Frames beyond it are committed by the host when first
   * touched, which then costs a host page fault inside whatever touches
   * them (a fault, a COPY). Default 0.
   */
  readonly residentBytes?: number;
  /**
   * Frame chunks on SharedArrayBuffers, so worker threads (parallel vCPUs,
   * `model/parallel/`) can touch page data. Off by default.
   */
  readonly shared?: boolean;
}

export const DEFAULT_PHYSICAL_MEMORY: PhysicalMemoryOptions = {
  memoryBytesMax: 8 * 1024 ** 3,
  hugePages2M: 256,
};

/** One chunk with its folio metadata, given back by `release` for the next memory to reuse. */
interface PooledChunk {
  readonly chunk: Uint8Array;
  readonly order: Uint8Array;
  readonly flags: Uint8Array;
  readonly refcount: Int32Array;
  readonly mapcount: Int32Array;
  readonly inode: Int32Array;
  readonly index: Float64Array;
}

const NO_BYTES = new Uint8Array(0);
const NO_INTS = new Int32Array(0);
const NO_DOUBLES = new Float64Array(0);

/** Chunks released by memories that are gone (explore boots one model per schedule). */
const chunkPool: PooledChunk[] = [];
const CHUNK_POOL_MAX = 4;

export class PhysicalMemory {
  private readonly chunks: Uint8Array[] = [];
  private readonly framesMax: number;
  private readonly shared: boolean;
  /** Frames handed out so far by the bump allocator (never reused by it). */
  private framesUsedHigh = 0;
  /**
   * Free order-0 frames, a FIFO ring (capacity a power of two): frames come
   * back in the order they were freed, so a range freed in address order is
   * handed out again in address order, as contiguous frames that COPY fills
   * with one memcpy.
   */
  // Starts at 16 entries (64 bytes, which V8 keeps on its heap): explore
  // boots a memory per schedule, and a 4 KiB ring was an allocation outside
  // the heap for the GC's threads to sweep and free each time.
  private freeOrder0: Int32Array = new Int32Array(16);
  private freeOrder0Head = 0;
  private freeOrder0Count = 0;
  /** Freed order-9 blocks, kept whole for the hugetlb pool. */
  private readonly freeOrder9: number[] = [];

  // Folio metadata, indexed by pfn. Grown when chunks are added.
  // Empty until the constructor's ensureFrames: shared, never written.
  folioOrder: Uint8Array = NO_BYTES;
  folioFlags: Uint8Array = NO_BYTES;
  folioRefcount: Int32Array = NO_INTS;
  folioMapcount: Int32Array = NO_INTS;
  folioInode: Int32Array = NO_INTS;
  folioIndex: Float64Array = NO_DOUBLES;

  hugePagesTotal: number;
  hugePagesFree: number;
  /**
   * Set by a caller that writes every byte of the folios it allocates before
   * anything can read them (UFFDIO_COPY, as mfill_atomic_pte_copy allocates
   * without __GFP_ZERO): reused frames are then not zeroed first.
   */
  overwriteNextAllocations = false;
  /** The kernel's fault injector (fail_page_alloc), set once the kernel is up: boot never fails. */
  injector: FaultInjector | null = null;
  /** Folios currently allocated (heads), by order: for leak checks. */
  foliosAllocated = 0;
  framesAllocated = 0;

  constructor(options: PhysicalMemoryOptions = DEFAULT_PHYSICAL_MEMORY) {
    this.framesMax = Math.floor(options.memoryBytesMax / PAGE_SIZE);
    this.shared = options.shared ?? false;
    this.hugePagesTotal = options.hugePages2M;
    this.hugePagesFree = options.hugePages2M;
    // pfn 0 is the zero page: allocated forever, never written.
    this.ensureFrames(1);
    const resident = Math.min(options.residentBytes ?? 0, options.memoryBytesMax);
    if (resident > 0) this.makeResident(Math.ceil(resident / PAGE_SIZE));
    this.framesUsedHigh = 1;
    this.folioFlags[ZERO_PFN] = PG_ALLOCATED | PG_UPTODATE;
    this.folioRefcount[ZERO_PFN] = 1;
    this.folioInode[ZERO_PFN] = NO_INODE;
  }

  /** The buffer holding frame `pfn`; use with `frameOffset`. */
  frameBuffer(pfn: number): Uint8Array {
    return this.chunks[pfn >>> CHUNK_SHIFT]!;
  }

  frameOffset(pfn: number): number {
    return (pfn & CHUNK_MASK) << PAGE_SHIFT;
  }

  /** Frame chunks allocated so far; chunk `i` holds frames [i << CHUNK_SHIFT, (i + 1) << CHUNK_SHIFT). */
  get chunkCount(): number {
    return this.chunks.length;
  }

  /** The buffer of chunk `index` (on a SharedArrayBuffer when `shared`). */
  chunk(index: number): Uint8Array {
    return this.chunks[index]!;
  }

  /**
   * Allocates a folio of 2^order frames, zero-filled, with refcount 1 and no
   * owner. Order-9 folios come from the hugetlb pool when `hugetlb` is set.
   * Returns -1 when memory (or the pool) is exhausted.
   */
  allocFolio(order: number, hugetlb = false): number {
    const injector = this.injector;
    if (
      injector?.active &&
      injector.fire('fail_page_alloc', hugetlb ? 'hugetlb folio' : `order-${order} folio`)
    ) {
      return -1;
    }
    if (hugetlb) {
      if (this.hugePagesFree === 0) return -1;
    }
    const pfn = order === 0 ? this.allocFrame0() : this.allocBlock(order);
    if (pfn < 0) return -1;
    if (hugetlb) this.hugePagesFree--;
    const frames = 1 << order;
    this.folioOrder[pfn] = order;
    this.folioFlags[pfn] = PG_ALLOCATED | (hugetlb ? PG_HUGETLB : 0);
    this.folioRefcount[pfn] = 1;
    this.folioMapcount[pfn] = 0;
    this.folioInode[pfn] = NO_INODE;
    this.folioIndex[pfn] = 0;
    for (let i = 1; i < frames; i++) this.folioFlags[pfn + i] = PG_ALLOCATED;
    this.foliosAllocated++;
    this.framesAllocated += frames;
    return pfn;
  }

  private allocFrame0(): number {
    if (this.freeOrder0Count > 0) {
      const pfn = this.freeOrder0[this.freeOrder0Head]!;
      this.freeOrder0Head = (this.freeOrder0Head + 1) & (this.freeOrder0.length - 1);
      this.freeOrder0Count--;
      // Freed frames are dirty; the kernel hands out zeroed pages for user memory.
      if (!this.overwriteNextAllocations) {
        this.frameBuffer(pfn).fill(0, this.frameOffset(pfn), this.frameOffset(pfn) + PAGE_SIZE);
      }
      return pfn;
    }
    if (this.framesUsedHigh >= this.framesMax) return -1;
    const pfn = this.framesUsedHigh;
    if (!this.ensureFrames(pfn + 1)) return -1;
    this.framesUsedHigh++;
    return pfn;
  }

  private allocBlock(order: number): number {
    const frames = 1 << order;
    if (order === 9 && this.freeOrder9.length > 0) {
      const pfn = this.freeOrder9.pop()!;
      const buffer = this.frameBuffer(pfn);
      const offset = this.frameOffset(pfn);
      if (!this.overwriteNextAllocations) buffer.fill(0, offset, offset + frames * PAGE_SIZE);
      return pfn;
    }
    if (frames > CHUNK_FRAMES) return -1;
    const aligned = Math.ceil(this.framesUsedHigh / frames) * frames;
    if (aligned + frames > this.framesMax) return -1;
    if (!this.ensureFrames(aligned + frames)) return -1;
    // Frames skipped for alignment are not lost: they serve order-0 requests.
    for (let pfn = this.framesUsedHigh; pfn < aligned; pfn++) this.pushFree0(pfn);
    this.framesUsedHigh = aligned + frames;
    return aligned;
  }

  /** Allocates the chunks holding `frames` frames and writes every page of them, so the host commits them now. */
  private makeResident(frames: number): void {
    this.ensureFrames(frames);
    const chunks = Math.ceil(frames / CHUNK_FRAMES);
    // Nothing is allocated yet: the chunks hold zeroes, and writing zeroes commits them.
    for (let index = 0; index < chunks; index++) this.chunks[index]!.fill(0);
  }

  private pushFree0(pfn: number): void {
    const ring = this.freeOrder0;
    if (this.freeOrder0Count === ring.length) {
      // Unrolled into the grown ring oldest first.
      const grown = new Int32Array(ring.length * 2);
      grown.set(ring.subarray(this.freeOrder0Head));
      grown.set(ring.subarray(0, this.freeOrder0Head), ring.length - this.freeOrder0Head);
      this.freeOrder0 = grown;
      this.freeOrder0Head = 0;
    }
    this.freeOrder0[(this.freeOrder0Head + this.freeOrder0Count++) & (this.freeOrder0.length - 1)] = pfn;
  }

  /**
   * Gives the frames back for reuse by the next PhysicalMemory: a model run
   * over (explore runs thousands) hands its one chunk and its metadata on,
   * zeroed where it was used, instead of a fresh 64 MiB allocation each. The
   * memory must not be used afterwards.
   */
  release(): void {
    const used = this.framesUsedHigh;
    if (this.shared || this.chunks.length !== 1 || this.folioOrder.length !== CHUNK_FRAMES) return;
    if (chunkPool.length >= CHUNK_POOL_MAX) return;
    this.chunks[0]!.fill(0, 0, used * PAGE_SIZE);
    for (const array of [
      this.folioOrder,
      this.folioFlags,
      this.folioRefcount,
      this.folioMapcount,
      this.folioInode,
    ])
      array.fill(0, 0, used);
    this.folioIndex.fill(0, 0, used);
    chunkPool.push({
      chunk: this.chunks.pop()!,
      order: this.folioOrder,
      flags: this.folioFlags,
      refcount: this.folioRefcount,
      mapcount: this.folioMapcount,
      inode: this.folioInode,
      index: this.folioIndex,
    });
    this.framesUsedHigh = this.framesMax;
  }

  private ensureFrames(frames: number): boolean {
    const chunksNeeded = Math.ceil(frames / CHUNK_FRAMES);
    if (chunksNeeded <= this.chunks.length) return true;
    if (this.chunks.length === 0 && chunksNeeded === 1 && !this.shared && chunkPool.length > 0) {
      const pooled = chunkPool.pop()!;
      this.chunks.push(pooled.chunk);
      this.folioOrder = pooled.order;
      this.folioFlags = pooled.flags;
      this.folioRefcount = pooled.refcount;
      this.folioMapcount = pooled.mapcount;
      this.folioInode = pooled.inode;
      this.folioIndex = pooled.index;
      return true;
    }
    while (this.chunks.length < chunksNeeded) {
      const bytes = CHUNK_FRAMES * PAGE_SIZE;
      this.chunks.push(this.shared ? new Uint8Array(new SharedArrayBuffer(bytes)) : new Uint8Array(bytes));
    }
    const capacity = this.chunks.length * CHUNK_FRAMES;
    if (capacity > this.folioOrder.length) {
      const grownCapacity = Math.max(capacity, this.folioOrder.length * 2);
      this.folioOrder = grow(this.folioOrder, new Uint8Array(grownCapacity));
      this.folioFlags = grow(this.folioFlags, new Uint8Array(grownCapacity));
      this.folioRefcount = grow(this.folioRefcount, new Int32Array(grownCapacity));
      this.folioMapcount = grow(this.folioMapcount, new Int32Array(grownCapacity));
      this.folioInode = grow(this.folioInode, new Int32Array(grownCapacity));
      this.folioIndex = grow(this.folioIndex, new Float64Array(grownCapacity));
    }
    return true;
  }

  /** Takes a reference (folio_get). */
  getFolio(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    this.folioRefcount[pfn]!++;
  }

  /** Drops a reference (folio_put); the last one frees the folio. */
  putFolio(pfn: number): void {
    if (pfn === ZERO_PFN) return;
    const count = --this.folioRefcount[pfn]!;
    if (count > 0) return;
    if (count < 0) throw new Error(`putFolio: pfn ${pfn} refcount went negative`);
    this.freeFolio(pfn);
  }

  private freeFolio(pfn: number): void {
    const order = this.folioOrder[pfn]!;
    const flags = this.folioFlags[pfn]!;
    if (this.folioMapcount[pfn] !== 0) {
      throw new Error(`freeFolio: pfn ${pfn} is still mapped ${this.folioMapcount[pfn]} times`);
    }
    const frames = 1 << order;
    for (let i = 0; i < frames; i++) this.folioFlags[pfn + i] = 0;
    this.folioInode[pfn] = NO_INODE;
    this.foliosAllocated--;
    this.framesAllocated -= frames;
    if (flags & PG_HUGETLB) this.hugePagesFree++;
    if (order === 0) this.pushFree0(pfn);
    else if (order === 9) this.freeOrder9.push(pfn);
    else for (let i = 0; i < frames; i++) this.pushFree0(pfn + i);
  }

  isAllocated(pfn: number): boolean {
    return (this.folioFlags[pfn]! & PG_ALLOCATED) !== 0;
  }

  lockFolio(pfn: number): void {
    if (this.folioFlags[pfn]! & PG_LOCKED) throw new Error(`lockFolio: pfn ${pfn} is already locked`);
    this.folioFlags[pfn]! |= PG_LOCKED;
  }

  unlockFolio(pfn: number): void {
    this.folioFlags[pfn]! &= ~PG_LOCKED;
  }

  isLocked(pfn: number): boolean {
    return (this.folioFlags[pfn]! & PG_LOCKED) !== 0;
  }

  setFlag(pfn: number, flag: number): void {
    this.folioFlags[pfn]! |= flag;
  }

  clearFlag(pfn: number, flag: number): void {
    this.folioFlags[pfn]! &= ~flag;
  }

  hasFlag(pfn: number, flag: number): boolean {
    return (this.folioFlags[pfn]! & flag) !== 0;
  }

  folioBytes(pfn: number): number {
    return PAGE_SIZE << this.folioOrder[pfn]!;
  }

  /** Copies `length` bytes from `source` into the folio at byte `offset`. */
  copyIntoFolio(pfn: number, offset: number, source: Uint8Array, sourceOffset: number, length: number): void {
    this.frameBuffer(pfn).set(
      source.subarray(sourceOffset, sourceOffset + length),
      this.frameOffset(pfn) + offset,
    );
  }

  /** Copies a whole folio's bytes into another folio of the same order. */
  copyFolio(destination: number, source: number): void {
    const length = this.folioBytes(source);
    const from = this.frameBuffer(source);
    const fromOffset = this.frameOffset(source);
    this.frameBuffer(destination).set(
      from.subarray(fromOffset, fromOffset + length),
      this.frameOffset(destination),
    );
  }

  /** Bytes of metadata held per frame, for the scale measurements. */
  static readonly metadataBytesPerFrame = 1 + 1 + 4 + 4 + 4 + 8;

  /** Bytes of page-frame storage (the chunks), which the metadata measurement subtracts. */
  get frameStorageBytes(): number {
    let bytes = 0;
    for (const chunk of this.chunks) bytes += chunk.byteLength;
    return bytes;
  }
}

function grow<T extends Uint8Array | Int32Array | Float64Array>(old: T, grown: T): T {
  grown.set(old as never);
  return grown;
}
