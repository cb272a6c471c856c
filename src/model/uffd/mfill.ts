/**
 * The one generic fill loop behind UFFDIO_COPY, ZEROPAGE, CONTINUE and
 * POISON (mfill_atomic), for every memory type and page size. hugetlb takes
 * this path too, at its own page size.
 */
import { _UFFDIO_CONTINUE, _UFFDIO_COPY, _UFFDIO_POISON, _UFFDIO_ZEROPAGE } from '../../uapi/constants.ts';
import { EAGAIN, EEXIST, EFAULT, EINVAL, ENOENT } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import { filemapDelete, filemapLookup } from '../mem/pagecache.ts';
import { PAGE_SIZE, PG_ANON, PG_ANON_EXCLUSIVE, PG_UPTODATE } from '../mem/physmem.ts';
import { accessRange, type UserAccess } from '../mm/access.ts';
import { FAULT_HANDLED, type FaultEnvironment, vmaProtNone } from '../mm/fault.ts';
import type { MemoryType, VmUffdOps } from '../mm/memtype.ts';
import type { AddressSpace } from '../mm/mm.ts';
import {
  PTE_DIRTY,
  PTE_MARKER_POISONED,
  PTE_PRESENT,
  PTE_PROTNONE,
  PTE_UFFD_WP,
  PTE_WRITE,
  PTE_ZERO,
} from '../mm/pagetable.ts';
import { VM_HUGETLB, VM_SHARED, VM_UFFD_WP, VM_WRITE, type Vma } from '../mm/vma.ts';
import type { UffdContext } from './context.ts';

export const MFILL_COPY = _UFFDIO_COPY;
export const MFILL_ZEROPAGE = _UFFDIO_ZEROPAGE;
export const MFILL_CONTINUE = _UFFDIO_CONTINUE;
export const MFILL_POISON = _UFFDIO_POISON;

const NAMES: Record<number, string> = {
  [MFILL_COPY]: 'COPY',
  [MFILL_ZEROPAGE]: 'ZEROPAGE',
  [MFILL_CONTINUE]: 'CONTINUE',
  [MFILL_POISON]: 'POISON',
};

/** One fill request; a single object carries the loop's state, as mfill_atomic's state does. */
export interface MfillRequest {
  kind: number;
  dst: number;
  /** COPY only: the source address in `sourceMm`. */
  src: number;
  lengthBytes: number;
  /** Map the result write-protected (COPY_MODE_WP, CONTINUE_MODE_WP). */
  writeProtect: boolean;
  sourceMm: AddressSpace;
}

/**
 * What a userfaultfd file keeps from fill to fill: COPY's run merger, the
 * plan of the page being filled, and the last memory type's ioctl mask. One
 * per UffdFile (so owned by the kernel instance, not by this module), reused
 * by every fill so that a fill allocates nothing per page.
 */
export class MfillBuffers {
  readonly copyRuns = new CopyRuns();
  /**
   * The source of the page being filled, planned before it is installed: a
   * piece per source page, its frame's buffer (null for the zero page) and
   * offset.
   */
  readonly planBuffers: Array<Uint8Array | null> = [];
  readonly planOffsets: number[] = [];
  readonly planLengths: number[] = [];
  planCount = 0;
  /** The last type whose rangeIoctls were asked, and its mask as a number (every UFFDIO_* bit is below 32). */
  private maskType: MemoryType | null = null;
  private maskBits: bigint = 0n;
  private maskLow = 0;

  supportsIoctl(type: MemoryType, kind: number): boolean {
    if (type !== this.maskType || type.rangeIoctls !== this.maskBits) {
      this.maskType = type;
      this.maskBits = type.rangeIoctls;
      this.maskLow = Number(BigInt.asUintN(32, this.maskBits));
      if (this.maskBits >> 32n !== 0n) this.maskType = null;
    }
    if (this.maskType === null) return (type.rangeIoctls & (1n << BigInt(kind))) !== 0n;
    return (this.maskLow & (1 << kind)) !== 0;
  }
}

/**
 * mfill_state: one fill, carried from page to page (the kernel's struct
 * mfill_state), so each step of the loop takes one object.
 */
interface MfillState {
  readonly env: FaultEnvironment;
  readonly ctx: UffdContext;
  readonly request: MfillRequest;
  readonly buffers: MfillBuffers;
  readonly vma: Vma;
  /** A private mapping (anonymous, or MAP_PRIVATE of a file): filled with anonymous memory. */
  readonly privateFill: boolean;
  /** The uffd-wp bit of the new entries (MODE_WP). */
  readonly wpBit: number;
  /** The page being filled, and (COPY) its source. */
  dst: number;
  src: number;
}

/**
 * COPY's byte copies, merged into runs: contiguous source bytes into
 * contiguous destination bytes become one TypedArray.set (a zero-page source
 * one fill), so a 2 MiB COPY of contiguous frames is one memcpy, not 512.
 *
 * A page's copy is queued once the page is installed, when every source page
 * it reads was present at the start of the page: reading a present entry has
 * no side effect, and nothing the fill does before the flush changes what a
 * present source entry maps or the bytes of a frame it maps (the fill writes
 * only frames it allocated, and maps them only where the destination had no
 * page). The one exception is a source overlapping the destination in the
 * same mm, where a later page may read an earlier page's new frame: then
 * each copy is done at once. A source that needs a fault is copied by the
 * ordinary access path, after the queue is flushed, in the kernel's order.
 */
class CopyRuns {
  /** Whether copies may wait for the flush (false: each is done when queued). */
  deferring = false;
  private destination: Uint8Array | null = null;
  private destinationOffset = 0;
  /** null: the run is zeroes. */
  private source: Uint8Array | null = null;
  private sourceOffset = 0;
  private length = 0;

  add(
    destination: Uint8Array,
    destinationOffset: number,
    source: Uint8Array | null,
    sourceOffset: number,
    length: number,
  ): void {
    if (
      this.length > 0 &&
      destination === this.destination &&
      destinationOffset === this.destinationOffset + this.length &&
      source === this.source &&
      (source === null || sourceOffset === this.sourceOffset + this.length)
    ) {
      this.length += length;
    } else {
      this.flush();
      this.destination = destination;
      this.destinationOffset = destinationOffset;
      this.source = source;
      this.sourceOffset = sourceOffset;
      this.length = length;
    }
    if (!this.deferring) this.flush();
  }

  flush(): void {
    const destination = this.destination;
    if (destination === null) return;
    const source = this.source;
    const start = this.destinationOffset;
    if (source === null) destination.fill(0, start, start + this.length);
    // Within one chunk, copyWithin needs no view (source and destination frames never overlap).
    else if (source === destination)
      destination.copyWithin(start, this.sourceOffset, this.sourceOffset + this.length);
    else destination.set(source.subarray(this.sourceOffset, this.sourceOffset + this.length), start);
    this.destination = null;
    this.source = null;
    this.length = 0;
  }
}

/**
 * Plans the copy of [address, address + length) of `mm` if every page of it
 * is present, so that reading it cannot fault; false (and no plan) if not.
 */
function planSourceCopy(state: MfillState, address: number, length: number): boolean {
  const { buffers } = state;
  const memory = state.env.memory;
  const table = state.request.sourceMm.pageTable;
  buffers.planCount = 0;
  let done = 0;
  while (done < length) {
    const at = address + done;
    const inPage = at % PAGE_SIZE;
    const span = Math.min(length - done, PAGE_SIZE - inPage);
    const vpn = (at - inPage) / PAGE_SIZE;
    const flags = table.flagsAt(vpn);
    if ((flags & (PTE_PRESENT | PTE_PROTNONE)) !== PTE_PRESENT) {
      buffers.planCount = 0;
      return false;
    }
    const piece = buffers.planCount++;
    if (flags & PTE_ZERO) {
      buffers.planBuffers[piece] = null;
      buffers.planOffsets[piece] = 0;
    } else {
      const sourcePfn = table.valueAt(vpn);
      buffers.planBuffers[piece] = memory.frameBuffer(sourcePfn);
      buffers.planOffsets[piece] = memory.frameOffset(sourcePfn) + inPage;
    }
    buffers.planLengths[piece] = span;
    done += span;
  }
  return true;
}

/** Queues the planned copy into folio `pfn`. */
function queuePlannedCopy(state: MfillState, pfn: number): void {
  const { buffers } = state;
  const memory = state.env.memory;
  const destination = memory.frameBuffer(pfn);
  let at = memory.frameOffset(pfn);
  for (let i = 0; i < buffers.planCount; i++) {
    const length = buffers.planLengths[i]!;
    buffers.copyRuns.add(destination, at, buffers.planBuffers[i]!, buffers.planOffsets[i]!, length);
    at += length;
  }
  buffers.planCount = 0;
}

/**
 * Returns the bytes filled (> 0) or -errno when nothing was filled. Stops at
 * the first failing page, as the kernel does.
 */
export function mfillAtomic(
  env: FaultEnvironment,
  ctx: UffdContext,
  request: MfillRequest,
  buffers: MfillBuffers,
): number {
  const { dst, src, lengthBytes } = request;
  const runs = buffers.copyRuns;
  // The source and destination overlap in one mm: a page may read what an earlier page filled.
  runs.deferring =
    request.kind === MFILL_COPY &&
    !(request.sourceMm === ctx.mm && src < dst + lengthBytes && dst < src + lengthBytes);
  try {
    return mfillRange(env, ctx, request, buffers);
  } finally {
    runs.flush();
    runs.deferring = false;
  }
}

/** The checks of the whole range, in the kernel's order; 0 when the fill may start. */
function checkRange(
  ctx: UffdContext,
  request: MfillRequest,
  buffers: MfillBuffers,
  vma: Vma | undefined,
): number {
  const { dst, lengthBytes } = request;
  const name = NAMES[request.kind]!;
  if (vma === undefined) return ctx.failure.fail(ENOENT, 'dst', `no mapping at ${hex(dst)}`);
  if (dst + lengthBytes > vma.end)
    return ctx.failure.fail(ENOENT, 'len', `the range runs past the end of ${vma.describe()}`);
  if (vma.uffdContext === null)
    return ctx.failure.fail(ENOENT, 'dst', `${vma.describe()} is not registered with userfaultfd`);
  if (ctx.mmapChanging > 0) return ctx.failure.fail(EAGAIN, 'uffd', ctx.changingReason());
  if (request.writeProtect && (vma.flags & VM_UFFD_WP) === 0) {
    return ctx.failure.fail(EINVAL, 'mode', `MODE_WP on ${vma.describe()}, which is not registered for WP`);
  }
  if (dst % vma.pageSize !== 0 || lengthBytes % vma.pageSize !== 0) {
    return ctx.failure.fail(
      EINVAL,
      'dst',
      `range not aligned to the ${vma.pageSize / 1024} KiB pages of ${vma.describe()}`,
    );
  }
  const type = vma.memoryType;
  if (type.uffdOps === null || !buffers.supportsIoctl(type, request.kind)) {
    return ctx.failure.fail(EINVAL, 'dst', `memory type ${type.name} does not support UFFDIO_${name}`);
  }
  return 0;
}

function mfillRange(
  env: FaultEnvironment,
  ctx: UffdContext,
  request: MfillRequest,
  buffers: MfillBuffers,
): number {
  const vma = ctx.mm.findVma(request.dst);
  // uffd_mfill_lock prepares a private VMA's anon_vma as it looks the VMA up, before it checks the
  // range and the registration, whatever the fill (even ZEROPAGE, which maps no anonymous page), and
  // even when the fill is then refused. Neighbours faulted in later while the flags differ then get
  // an anon_vma of their own, and the VMAs no longer merge on unregister [OBS: probe q1a].
  if (vma !== undefined && !vma.isShared) ctx.mm.prepareAnonVma(vma);
  const refused = checkRange(ctx, request, buffers, vma);
  if (refused < 0 || vma === undefined) return refused;
  const state: MfillState = {
    env,
    ctx,
    request,
    buffers,
    vma,
    privateFill: (vma.flags & VM_SHARED) === 0,
    wpBit: request.writeProtect ? PTE_UFFD_WP : 0,
    dst: request.dst,
    src: request.src,
  };
  let done = 0;
  let error = 0;
  for (; done < request.lengthBytes; done += vma.pageSize) {
    state.dst = request.dst + done;
    state.src = request.src + done;
    const result = mfillPage(state);
    if (result < 0) {
      error = result;
      break;
    }
  }
  return done > 0 ? done : error;
}

/** One page: the checks every mode shares, then the mode's own step. */
function mfillPage(state: MfillState): number {
  const { vma, dst: address } = state;
  const kind = state.request.kind;
  const entry = state.ctx.mm.pageTable.flagsAt(address / 4096);
  // COPY and CONTINUE may replace a uffd marker, and so may ZEROPAGE where it
  // allocates a page-cache folio (shared memory); the zero-page path and POISON
  // want pte_none [OBS: tools/probes q5].
  const markerReplaceable =
    kind === MFILL_COPY || kind === MFILL_CONTINUE || (kind === MFILL_ZEROPAGE && !state.privateFill);
  // COPY reads its source before it looks at the destination (mfill_atomic_pte_copy and
  // shmem_mfill_atomic_pte copy first; the install finds the file too short or the page there), so
  // a refused COPY has still faulted its source in [OBS 6.18: faultline fuzz --seed 20261751].
  // hugetlb looks at the entry, and a shared mapping's page cache, first (mfill_atomic_hugetlb,
  // hugetlb_mfill_atomic_pte), and at the file's size after the copy.
  const hugetlb = (vma.flags & VM_HUGETLB) !== 0;
  if (kind === MFILL_COPY && !hugetlb) return mfillNewFolio(state);
  // CONTINUE looks the page up before it looks at the entry (see mfillContinue).
  if (kind !== MFILL_CONTINUE && (markerReplaceable ? entry & PTE_PRESENT : entry !== 0)) {
    return state.ctx.failure.fail(EEXIST, 'dst', `${hex(address)} is already populated`);
  }
  if (kind === MFILL_COPY) {
    if (hugetlbCached(state))
      return state.ctx.failure.fail(
        EEXIST,
        'dst',
        `the page cache already holds the page at ${hex(address)}`,
      );
    return mfillNewFolio(state);
  }
  // CONTINUE leaves the end of the file to the page-cache lookup (EINVAL on shmem, EFAULT on hugetlb).
  if (kind !== MFILL_CONTINUE && beyondEof(state)) {
    return state.ctx.failure.fail(EFAULT, 'dst', `${hex(address)} lies beyond the end of the file`);
  }
  if (kind === MFILL_POISON) return mfillPoison(state);
  if (kind === MFILL_CONTINUE) return mfillContinue(state);
  // ZEROPAGE into a private mapping maps the zero page; into shared memory it adds a zeroed folio.
  if (kind === MFILL_ZEROPAGE && state.privateFill) return mfillZeroPage(state);
  return mfillNewFolio(state);
}

function beyondEof(state: MfillState): boolean {
  const { vma, dst } = state;
  return vma.inode !== null && vma.pgoffAt(dst) * 4096 >= vma.inode.sizeBytes;
}

/** A shared hugetlb destination whose page the page cache already holds (hugetlbfs_pagecache_present). */
function hugetlbCached(state: MfillState): boolean {
  const { vma, dst } = state;
  if (!(vma.flags & VM_SHARED) || vma.inode === null) return false;
  return filemapLookup(vma.inode, vma.pgoffAt(dst)) >= 0;
}

/**
 * The install step every mode that maps a folio shares
 * (mfill_atomic_install_pte): writable if the VMA is and the page is not
 * write-protected, except a page-cache page in a private mapping, which
 * copies on write.
 */
function mfillInstall(state: MfillState, pfn: number, inPageCache: boolean): void {
  const { vma, wpBit } = state;
  const mm = state.ctx.mm;
  const cowOnWrite = inPageCache && (vma.flags & VM_SHARED) === 0;
  const writable = vma.flags & VM_WRITE && !wpBit && !cowOnWrite ? PTE_WRITE : 0;
  mm.mapFolio(pfn);
  mm.setEntries(state.dst, vma.pageShift, PTE_PRESENT | PTE_DIRTY | writable | wpBit | vmaProtNone(vma), pfn);
}

/** POISON: a marker that makes any access SIGBUS. */
function mfillPoison(state: MfillState): number {
  state.ctx.mm.setEntries(state.dst, state.vma.pageShift, PTE_MARKER_POISONED, 0);
  return 0;
}

/** ZEROPAGE into a private mapping: the shared zero page, read-only. */
function mfillZeroPage(state: MfillState): number {
  const { vma } = state;
  state.ctx.mm.setEntries(
    state.dst,
    vma.pageShift,
    PTE_PRESENT | PTE_ZERO | state.wpBit | vmaProtNone(vma),
    0,
  );
  return 0;
}

/**
 * COPY, and ZEROPAGE into shared memory: a new folio (anonymous for a
 * private mapping, the type's own for shared memory), filled, added to the
 * page cache (shared) or made anonymous (private), and installed.
 */
function mfillNewFolio(state: MfillState): number {
  const { env, vma } = state;
  const memory = env.memory;
  const fillType = state.privateFill ? env.anonymousType : vma.memoryType;
  const pfn = allocFillFolio(state, fillType);
  if (pfn < 0) return pfn;
  // A present source is copied once the page is installed (see CopyRuns).
  const copied = state.request.kind === MFILL_COPY ? copySource(state, pfn) : 0;
  if (copied < 0) {
    memory.putFolio(pfn);
    return copied;
  }
  memory.setFlag(pfn, PG_UPTODATE);
  // COPY looks at the file's size only now, its source read (mfill_file_over_size, shmem's max_off).
  if (state.request.kind === MFILL_COPY && beyondEof(state)) {
    state.buffers.planCount = 0;
    memory.putFolio(pfn);
    return state.ctx.failure.fail(EFAULT, 'dst', `${hex(state.dst)} lies beyond the end of the file`);
  }
  const ops: VmUffdOps = fillType.uffdOps!;
  const inPageCache = !state.privateFill && ops.filemapAdd !== undefined;
  if (inPageCache) {
    const added = addToPageCache(state, fillType, pfn);
    if (added < 0) return added;
  }
  // mfill_atomic_install_pte looks at the entry again: reading the source may have faulted a page in
  // there (a source inside the destination). Then the fill is undone: filemap_remove after
  // filemap_add, then folio_put [OBS 6.18: faultline diff, COPY of a MAP_PRIVATE file page onto itself].
  if (state.ctx.mm.pageTable.flagsAt(state.dst / 4096) & PTE_PRESENT) {
    state.buffers.planCount = 0;
    if (inPageCache) removeFromPageCache(state, fillType, pfn);
    memory.putFolio(pfn);
    return state.ctx.failure.fail(EEXIST, 'dst', `${hex(state.dst)} was populated while the source was read`);
  }
  if (!inPageCache) {
    state.ctx.mm.prepareAnonVma(vma);
    memory.setFlag(pfn, PG_ANON | PG_ANON_EXCLUSIVE);
  }
  mfillInstall(state, pfn, inPageCache);
  if (copied === COPY_QUEUED) queuePlannedCopy(state, pfn);
  memory.putFolio(pfn);
  return 0;
}

/** A fresh folio of the VMA's page size from the fill type's allocFolio, through the checker; or -errno. */
function allocFillFolio(state: MfillState, fillType: MemoryType): number {
  const { env, vma, dst: address } = state;
  if (fillType.uffdOps!.allocFolio === undefined)
    return state.ctx.failure.fail(EINVAL, 'dst', `memory type ${vma.memoryType.name} cannot allocate`);
  // The checker hands back a fresh folio of the VMA's page size, an errno, or -EFAULT for a broken answer.
  // COPY writes every byte of the folio before it can be seen, so a reused frame need not be zeroed first.
  env.memory.overwriteNextAllocations = state.request.kind === MFILL_COPY;
  let pfn: number;
  try {
    pfn = env.hooks.allocFolio(fillType, vma, address);
  } finally {
    env.memory.overwriteNextAllocations = false;
  }
  if (pfn < 0) {
    return state.ctx.failure.fail(
      -pfn,
      'dst',
      env.hooks.lastViolation ?? `allocating a folio for ${hex(address)} failed`,
    );
  }
  return pfn;
}

/** copySource's answer when the copy waits in the run queue until the page is installed. */
const COPY_QUEUED = 1;

/**
 * COPY's copy_from_user of the page's source into folio `pfn`: planned for
 * later (COPY_QUEUED) when every source page is present, else read now
 * through the fault path (0); -errno when the source cannot be read.
 */
function copySource(state: MfillState, pfn: number): number {
  const { env, vma, src: source } = state;
  const memory = env.memory;
  if (planSourceCopy(state, source, vma.pageSize)) {
    // The copy_from_user of a present source (a faulting one draws in accessRange below).
    if (env.inject.active && env.inject.fire('fail_usercopy', 'UFFDIO_COPY source', source)) {
      state.buffers.planCount = 0;
      return state.ctx.failure.fail(
        EFAULT,
        'src',
        `copy_from_user of the source at ${hex(source)} failed (injected fail_usercopy)`,
      );
    }
    return COPY_QUEUED;
  }
  state.buffers.copyRuns.flush();
  const view = memory
    .frameBuffer(pfn)
    .subarray(memory.frameOffset(pfn), memory.frameOffset(pfn) + vma.pageSize);
  // copy_from_user: a kernel-mode read of the source, faulting it in (it cannot sleep on a uffd).
  const read: UserAccess = {
    mm: state.request.sourceMm,
    address: source,
    write: false,
    task: null,
    userMode: false,
    start: source,
    buffer: view,
    doneBytes: 0,
  };
  if (accessRange(env, read) !== FAULT_HANDLED) {
    return state.ctx.failure.fail(
      EFAULT,
      'src',
      `reading the source at ${hex(source + read.doneBytes)} faulted`,
    );
  }
  return 0;
}

/** filemapAdd of a new folio through the checker; on failure the folio is released and -errno returned. */
function addToPageCache(state: MfillState, fillType: MemoryType, pfn: number): number {
  const { env, vma, dst: address } = state;
  const memory = env.memory;
  memory.lockFolio(pfn);
  const added = env.hooks.filemapAdd(fillType, pfn, vma, address);
  memory.unlockFolio(pfn);
  if (added >= 0) return 0;
  // Undo the core's own steps: the checker already undid whatever the hook did.
  memory.putFolio(pfn);
  const reason =
    env.hooks.lastViolation ??
    (added === -EEXIST
      ? `the page cache already holds the page at ${hex(address)}`
      : `adding the page at ${hex(address)} to the page cache failed`);
  return state.ctx.failure.fail(-added, 'dst', reason);
}

/**
 * Undoes addToPageCache through the type's filemap_remove, on the locked
 * folio as the kernel calls it; when that hook breaks its contract (the
 * checker undid it), the core takes the folio out of the cache itself.
 */
function removeFromPageCache(state: MfillState, fillType: MemoryType, pfn: number): void {
  const { env, vma } = state;
  const inode = vma.inode!;
  const index = env.memory.folioIndex[pfn]!;
  env.memory.lockFolio(pfn);
  if (env.hooks.filemapRemove(fillType, pfn, vma) < 0 && filemapLookup(inode, index) === pfn) {
    filemapDelete(env.memory, inode, index);
  }
  env.memory.unlockFolio(pfn);
}

/** CONTINUE maps what the page cache already holds; it never allocates. */
function mfillContinue(state: MfillState): number {
  const { env, vma, dst: address } = state;
  const type = vma.memoryType;
  if (type.uffdOps?.getFolioNoalloc === undefined)
    return state.ctx.failure.fail(EINVAL, 'range', `memory type ${type.name} has no page cache`);
  const inode = vma.inode!;
  const pgoff = vma.pgoffAt(address);
  const pfn = env.hooks.getFolioNoalloc(type, 'UFFDIO_CONTINUE', { inode, pgoff, pageShift: vma.pageShift });
  if (pfn === -ENOENT)
    return state.ctx.failure.fail(EFAULT, 'range', `no page in the page cache at ${hex(address)}`);
  if (pfn < 0) {
    const pastEof = pgoff * 4096 >= inode.sizeBytes ? ', which lies at or past the end of the file' : '';
    const reason =
      env.hooks.lastViolation ?? `the memory type could not provide the page at ${hex(address)}${pastEof}`;
    return state.ctx.failure.fail(-pfn, 'range', reason);
  }
  // The page-cache lookup comes first, so a mapped page that is not in the cache (a private
  // copy) gives EFAULT, and only a cached one EEXIST [OBS: faultline fuzz against the host].
  if (state.ctx.mm.pageTable.flagsAt(address / 4096) & PTE_PRESENT) {
    env.memory.unlockFolio(pfn);
    env.memory.putFolio(pfn);
    return state.ctx.failure.fail(EEXIST, 'range', `${hex(address)} is already populated`);
  }
  mfillInstall(state, pfn, true);
  env.memory.unlockFolio(pfn);
  env.memory.putFolio(pfn);
  return 0;
}
