/**
 * The one generic fill loop behind UFFDIO_COPY, ZEROPAGE, CONTINUE and
 * POISON (mfill_atomic), for every memory type and page size. hugetlb takes
 * this path too, at its own page size.
 */
import { _UFFDIO_CONTINUE, _UFFDIO_COPY, _UFFDIO_POISON, _UFFDIO_ZEROPAGE } from '../../uapi/constants.ts';
import { EAGAIN, EEXIST, EFAULT, EINVAL, ENOENT } from '../../uapi/errno.ts';
import { fail, hex } from '../failure.ts';
import { PAGE_SIZE, PG_ANON, PG_ANON_EXCLUSIVE, PG_UPTODATE, type PhysicalMemory } from '../mem/physmem.ts';
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
import { VM_SHARED, VM_UFFD_WP, VM_WRITE, type Vma } from '../mm/vma.ts';
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

/** The last type whose rangeIoctls were asked, and its mask as a number (every UFFDIO_* bit is below 32). */
let maskType: MemoryType | null = null;
let maskBits: bigint = 0n;
let maskLow = 0;

function supportsIoctl(type: MemoryType, kind: number): boolean {
  if (type !== maskType || type.rangeIoctls !== maskBits) {
    maskType = type;
    maskBits = type.rangeIoctls;
    maskLow = Number(BigInt.asUintN(32, maskBits));
    if (maskBits >> 32n !== 0n) maskType = null;
  }
  if (maskType === null) return (type.rangeIoctls & (1n << BigInt(kind))) !== 0n;
  return (maskLow & (1 << kind)) !== 0;
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

const copyRuns = new CopyRuns();

/**
 * The source of the page being filled, planned before it is installed: a
 * piece per source page, its frame's buffer (null for the zero page) and
 * offset. Reused from page to page.
 */
const planBuffers: Array<Uint8Array | null> = [];
const planOffsets: number[] = [];
const planLengths: number[] = [];
let planCount = 0;

/**
 * Plans the copy of [address, address + length) of `mm` if every page of it
 * is present, so that reading it cannot fault; false (and no plan) if not.
 */
function planSourceCopy(memory: PhysicalMemory, mm: AddressSpace, address: number, length: number): boolean {
  const table = mm.pageTable;
  planCount = 0;
  let done = 0;
  while (done < length) {
    const at = address + done;
    const inPage = at % PAGE_SIZE;
    const span = Math.min(length - done, PAGE_SIZE - inPage);
    const vpn = (at - inPage) / PAGE_SIZE;
    const flags = table.flagsAt(vpn);
    if ((flags & (PTE_PRESENT | PTE_PROTNONE)) !== PTE_PRESENT) {
      planCount = 0;
      return false;
    }
    if (flags & PTE_ZERO) {
      planBuffers[planCount] = null;
      planOffsets[planCount] = 0;
    } else {
      const sourcePfn = table.valueAt(vpn);
      planBuffers[planCount] = memory.frameBuffer(sourcePfn);
      planOffsets[planCount] = memory.frameOffset(sourcePfn) + inPage;
    }
    planLengths[planCount++] = span;
    done += span;
  }
  return true;
}

/** Queues the planned copy into folio `pfn`. */
function queuePlannedCopy(memory: PhysicalMemory, pfn: number): void {
  const destination = memory.frameBuffer(pfn);
  let at = memory.frameOffset(pfn);
  for (let i = 0; i < planCount; i++) {
    const length = planLengths[i]!;
    copyRuns.add(destination, at, planBuffers[i]!, planOffsets[i]!, length);
    at += length;
  }
  planCount = 0;
}

/**
 * Returns the bytes filled (> 0) or -errno when nothing was filled. Stops at
 * the first failing page, as the kernel does.
 */
export function mfillAtomic(env: FaultEnvironment, ctx: UffdContext, request: MfillRequest): number {
  if (request.kind !== MFILL_COPY) return mfillRange(env, ctx, request);
  const { dst, src, lengthBytes } = request;
  // The source and destination overlap in one mm: a page may read what an earlier page filled.
  copyRuns.deferring = !(request.sourceMm === ctx.mm && src < dst + lengthBytes && dst < src + lengthBytes);
  try {
    return mfillRange(env, ctx, request);
  } finally {
    copyRuns.flush();
    copyRuns.deferring = false;
  }
}

function mfillRange(env: FaultEnvironment, ctx: UffdContext, request: MfillRequest): number {
  const mm = ctx.mm;
  const { dst, lengthBytes } = request;
  const name = NAMES[request.kind]!;
  const vma = mm.findVma(dst);
  if (vma === undefined) return fail(ENOENT, 'dst', `no mapping at ${hex(dst)}`);
  if (dst + lengthBytes > vma.end)
    return fail(ENOENT, 'len', `the range runs past the end of ${vma.describe()}`);
  if (vma.uffdContext === null)
    return fail(ENOENT, 'dst', `${vma.describe()} is not registered with userfaultfd`);
  if (ctx.mmapChanging > 0) return fail(EAGAIN, 'uffd', ctx.changingReason());
  if (request.writeProtect && (vma.flags & VM_UFFD_WP) === 0) {
    return fail(EINVAL, 'mode', `MODE_WP on ${vma.describe()}, which is not registered for WP`);
  }
  if (dst % vma.pageSize !== 0 || lengthBytes % vma.pageSize !== 0) {
    return fail(
      EINVAL,
      'dst',
      `range not aligned to the ${vma.pageSize / 1024} KiB pages of ${vma.describe()}`,
    );
  }
  const type = vma.memoryType;
  if (type.uffdOps === null)
    return fail(EINVAL, 'dst', `memory type ${type.name} does not support UFFDIO_${name}`);
  if (!supportsIoctl(type, request.kind)) {
    return fail(EINVAL, 'dst', `memory type ${type.name} does not support UFFDIO_${name}`);
  }
  // mfill_atomic prepares a private VMA's anon_vma before the first page, whatever the fill (even
  // ZEROPAGE, which maps no anonymous page). Neighbours faulted in later while the flags differ then
  // get an anon_vma of their own, and the VMAs no longer merge on unregister [OBS: probe q1a].
  if (!vma.isShared) mm.prepareAnonVma(vma);

  let done = 0;
  let error = 0;
  for (; done < lengthBytes; done += vma.pageSize) {
    const result = mfillPage(env, ctx, vma, request, dst + done, request.src + done);
    if (result < 0) {
      error = result;
      break;
    }
  }
  return done > 0 ? done : error;
}

function mfillPage(
  env: FaultEnvironment,
  ctx: UffdContext,
  vma: Vma,
  request: MfillRequest,
  address: number,
  source: number,
): number {
  const mm = ctx.mm;
  const entry = mm.pageTable.flagsAt(address / 4096);
  const kind = request.kind;
  // COPY and CONTINUE may replace a uffd marker, and so may ZEROPAGE where it
  // allocates a page-cache folio (shared memory); the zero-page path and POISON
  // want pte_none [OBS: tools/probes q5].
  const privateFill = (vma.flags & VM_SHARED) === 0;
  const markerReplaceable =
    kind === MFILL_COPY || kind === MFILL_CONTINUE || (kind === MFILL_ZEROPAGE && !privateFill);
  // CONTINUE looks the page up before it looks at the entry (see mfillContinue).
  if (kind !== MFILL_CONTINUE && (markerReplaceable ? entry & PTE_PRESENT : entry !== 0)) {
    return fail(EEXIST, 'dst', `${hex(address)} is already populated`);
  }
  // CONTINUE leaves the end of the file to the page-cache lookup (EINVAL on shmem, EFAULT on hugetlb).
  if (kind !== MFILL_CONTINUE && vma.inode !== null && vma.pgoffAt(address) * 4096 >= vma.inode.sizeBytes) {
    return fail(EFAULT, 'dst', `${hex(address)} lies beyond the end of the file`);
  }
  const wpBit = request.writeProtect ? PTE_UFFD_WP : 0;
  if (kind === MFILL_POISON) {
    mm.setEntries(address, vma.pageShift, PTE_MARKER_POISONED, 0);
    return 0;
  }
  if (kind === MFILL_CONTINUE) return mfillContinue(env, vma, mm, address, wpBit);

  // COPY and ZEROPAGE: a private mapping (anonymous, or MAP_PRIVATE of a file)
  // is filled with anonymous memory and never touches the page cache.
  if (kind === MFILL_ZEROPAGE && privateFill) {
    mm.setEntries(address, vma.pageShift, PTE_PRESENT | PTE_ZERO | wpBit | vmaProtNone(vma), 0);
    return 0;
  }
  const fillType = privateFill ? env.anonymousType : vma.memoryType;
  const ops: VmUffdOps = fillType.uffdOps!;
  if (ops.allocFolio === undefined)
    return fail(EINVAL, 'dst', `memory type ${vma.memoryType.name} cannot allocate`);
  // The checker hands back a fresh folio of the VMA's page size, an errno, or -EFAULT for a broken answer.
  // COPY writes every byte of the folio before it can be seen, so a reused frame need not be zeroed first.
  env.memory.overwriteNextAllocations = kind === MFILL_COPY;
  let pfn: number;
  try {
    pfn = env.hooks.allocFolio(fillType, vma, address);
  } finally {
    env.memory.overwriteNextAllocations = false;
  }
  if (pfn < 0) {
    return fail(-pfn, 'dst', env.hooks.lastViolation ?? `allocating a folio for ${hex(address)} failed`);
  }
  const memory = env.memory;
  // A present source is copied once the page is installed (see CopyRuns).
  let queueCopy = false;
  if (kind === MFILL_COPY && planSourceCopy(memory, request.sourceMm, source, vma.pageSize)) {
    // The copy_from_user of a present source (a faulting one draws in accessRange below).
    if (env.inject.active && env.inject.fire('fail_usercopy', 'UFFDIO_COPY source', source)) {
      planCount = 0;
      memory.putFolio(pfn);
      return fail(
        EFAULT,
        'src',
        `copy_from_user of the source at ${hex(source)} failed (injected fail_usercopy)`,
      );
    }
    queueCopy = true;
  } else if (kind === MFILL_COPY) {
    copyRuns.flush();
    const bytes = memory.frameBuffer(pfn);
    const view = bytes.subarray(memory.frameOffset(pfn), memory.frameOffset(pfn) + vma.pageSize);
    // copy_from_user: a kernel-mode read of the source, faulting it in (it cannot sleep on a uffd).
    const read: UserAccess = {
      mm: request.sourceMm,
      address: source,
      write: false,
      task: null,
      userMode: false,
      start: source,
      buffer: view,
      doneBytes: 0,
    };
    const copied = accessRange(env, read);
    if (copied !== FAULT_HANDLED) {
      memory.putFolio(pfn);
      return fail(EFAULT, 'src', `reading the source at ${hex(source + read.doneBytes)} faulted`);
    }
  }
  memory.setFlag(pfn, PG_UPTODATE);
  if (!privateFill && ops.filemapAdd !== undefined) {
    memory.lockFolio(pfn);
    const added = env.hooks.filemapAdd(fillType, pfn, vma, address);
    if (added < 0) {
      // Undo the core's own steps: the checker already undid whatever the hook did.
      memory.unlockFolio(pfn);
      memory.putFolio(pfn);
      const reason =
        env.hooks.lastViolation ??
        (added === -EEXIST
          ? `the page cache already holds the page at ${hex(address)}`
          : `adding the page at ${hex(address)} to the page cache failed`);
      return fail(-added, 'dst', reason);
    }
    memory.unlockFolio(pfn);
  } else {
    mm.prepareAnonVma(vma);
    memory.setFlag(pfn, PG_ANON | PG_ANON_EXCLUSIVE);
  }
  const writable = vma.flags & VM_WRITE && !request.writeProtect ? PTE_WRITE : 0;
  mm.mapFolio(pfn);
  mm.setEntries(address, vma.pageShift, PTE_PRESENT | PTE_DIRTY | writable | wpBit | vmaProtNone(vma), pfn);
  if (queueCopy) queuePlannedCopy(memory, pfn);
  memory.putFolio(pfn);
  return 0;
}

/** CONTINUE maps what the page cache already holds; it never allocates. */
function mfillContinue(
  env: FaultEnvironment,
  vma: Vma,
  mm: AddressSpace,
  address: number,
  wpBit: number,
): number {
  const type = vma.memoryType;
  if (type.uffdOps?.getFolioNoalloc === undefined)
    return fail(EINVAL, 'range', `memory type ${type.name} has no page cache`);
  const inode = vma.inode!;
  const pgoff = vma.pgoffAt(address);
  const pfn = env.hooks.getFolioNoalloc(type, 'UFFDIO_CONTINUE', { inode, pgoff, pageShift: vma.pageShift });
  if (pfn === -ENOENT) return fail(EFAULT, 'range', `no page in the page cache at ${hex(address)}`);
  if (pfn < 0) {
    const pastEof = pgoff * 4096 >= inode.sizeBytes ? ', which lies at or past the end of the file' : '';
    const reason =
      env.hooks.lastViolation ?? `the memory type could not provide the page at ${hex(address)}${pastEof}`;
    return fail(-pfn, 'range', reason);
  }
  // The page-cache lookup comes first, so a mapped page that is not in the cache (a private
  // copy) gives EFAULT, and only a cached one EEXIST [OBS: faultline fuzz against the host].
  if (mm.pageTable.flagsAt(address / 4096) & PTE_PRESENT) {
    env.memory.unlockFolio(pfn);
    env.memory.putFolio(pfn);
    return fail(EEXIST, 'range', `${hex(address)} is already populated`);
  }
  // A page-cache page is writable only through a shared mapping; a private one COWs on write.
  const writable = vma.flags & VM_SHARED && vma.flags & VM_WRITE && !wpBit ? PTE_WRITE : 0;
  mm.mapFolio(pfn);
  mm.setEntries(address, vma.pageShift, PTE_PRESENT | PTE_DIRTY | writable | wpBit | vmaProtNone(vma), pfn);
  env.memory.unlockFolio(pfn);
  env.memory.putFolio(pfn);
  return 0;
}
