/**
 * UFFDIO_MOVE (move_pages): moves anonymous pages between two anonymous
 * VMAs of one mm, page by page, with the checks of uapi-facts.md §3.10.
 */
import { EAGAIN, EBUSY, EEXIST, EFAULT, EINVAL, ENOENT } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE } from '../mem/physmem.ts';
import { PTE_DIRTY, PTE_MARKER_MASK, PTE_PRESENT, PTE_WRITE, PTE_ZERO } from '../mm/pagetable.ts';
import { VM_ACCESS_FLAGS, VM_HUGETLB, VM_LOCKED, VM_SHARED, VM_WRITE, type Vma } from '../mm/vma.ts';
import type { UffdContext } from './context.ts';

export interface MoveRequest {
  readonly dst: number;
  readonly src: number;
  readonly lengthBytes: number;
  readonly allowSrcHoles: boolean;
}

function vmaProblem(ctx: UffdContext, src: Vma, dst: Vma, request: MoveRequest): string | undefined {
  if (src.flags & VM_SHARED || dst.flags & VM_SHARED) return 'MOVE needs private mappings';
  if (request.src + request.lengthBytes > src.end) return `the source runs past the end of ${src.describe()}`;
  if (request.dst + request.lengthBytes > dst.end)
    return `the destination runs past the end of ${dst.describe()}`;
  if ((src.flags & VM_ACCESS_FLAGS) !== (dst.flags & VM_ACCESS_FLAGS))
    return 'source and destination protections differ';
  if ((src.flags & VM_LOCKED) !== (dst.flags & VM_LOCKED)) return 'one of the mappings is mlocked';
  if (!(src.flags & VM_WRITE)) return 'the source is not writable';
  if (src.flags & VM_HUGETLB || dst.flags & VM_HUGETLB) return 'hugetlb pages cannot be moved';
  if (dst.uffdContext !== ctx)
    return `the destination ${dst.describe()} is not registered with this userfaultfd`;
  if (!src.isAnonymous || !dst.isAnonymous) return 'MOVE moves anonymous memory only';
  return undefined;
}

/** Returns bytes moved (> 0) or -errno. */
export function movePages(ctx: UffdContext, request: MoveRequest): number {
  const mm = ctx.mm;
  const dstVma = mm.findVma(request.dst);
  if (dstVma === undefined) return ctx.failure.fail(ENOENT, 'dst', `no mapping at ${hex(request.dst)}`);
  // uffd_move_lock prepares the destination's anon_vma as it looks the VMA up, before any check:
  // even a MOVE refused with EINVAL leaves it there, and it decides later merges (an mremap'd VMA
  // with an anon_vma keeps its pgoff) [OBS 6.18: faultline fuzz --seed 20261291].
  if (!dstVma.isShared) mm.prepareAnonVma(dstVma);
  const srcVma = mm.findVma(request.src);
  if (srcVma === undefined) return ctx.failure.fail(ENOENT, 'src', `no mapping at ${hex(request.src)}`);
  if (ctx.mmapChanging > 0) return ctx.failure.fail(EAGAIN, 'uffd', ctx.changingReason());
  const problem = vmaProblem(ctx, srcVma, dstVma, request);
  if (problem !== undefined) return ctx.failure.fail(EINVAL, 'src', problem);

  const table = mm.pageTable;
  const memory = mm.memory;
  let moved = 0;
  for (; moved < request.lengthBytes; moved += 4096) {
    const srcVpn = (request.src + moved) / 4096;
    const dstVpn = (request.dst + moved) / 4096;
    if (table.flagsAt(dstVpn) !== 0) {
      return moved > 0
        ? moved
        : ctx.failure.fail(EEXIST, 'dst', `${hex(request.dst + moved)} is already populated`);
    }
    const flags = table.flagsAt(srcVpn);
    if (flags === 0) {
      if (request.allowSrcHoles) continue;
      return moved > 0
        ? moved
        : ctx.failure.fail(ENOENT, 'src', `${hex(request.src + moved)} is not populated`);
    }
    if ((flags & PTE_PRESENT) === 0 && flags & PTE_MARKER_MASK) {
      return moved > 0
        ? moved
        : ctx.failure.fail(EFAULT, 'src', `${hex(request.src + moved)} holds a marker`);
    }
    const pfn = table.valueAt(srcVpn);
    if (flags & PTE_ZERO) {
      table.clear(srcVpn);
      table.set(dstVpn, PTE_PRESENT | PTE_ZERO, 0);
      continue;
    }
    const exclusive =
      memory.hasFlag(pfn, PG_ANON) &&
      memory.hasFlag(pfn, PG_ANON_EXCLUSIVE) &&
      memory.folioMapcount[pfn] === 1;
    if (!exclusive) {
      return moved > 0
        ? moved
        : ctx.failure.fail(
            EBUSY,
            'src',
            `the page at ${hex(request.src + moved)} is shared (not anon-exclusive)`,
          );
    }
    table.clear(srcVpn);
    const writable = dstVma.flags & VM_WRITE ? PTE_WRITE : 0;
    table.set(dstVpn, PTE_PRESENT | writable | (flags & PTE_DIRTY), pfn);
  }
  return moved;
}
