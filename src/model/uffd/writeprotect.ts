/** UFFDIO_WRITEPROTECT's range walk (mwriteprotect_range / uffd_wp_range). */
import { UFFD_FEATURE_WP_UNPOPULATED } from '../../uapi/constants.ts';
import { EINVAL, ENOENT } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE } from '../mem/physmem.ts';
import { PTE_MARKER_UFFD_WP, PTE_PRESENT, PTE_UFFD_WP, PTE_WRITE, PTE_ZERO } from '../mm/pagetable.ts';
import { VM_SHARED, VM_UFFD_WP, VM_WRITE, type Vma } from '../mm/vma.ts';
import type { UffdContext } from './context.ts';

/** Returns 0 or -errno. VMAs before a failing one have already been changed, as in Linux. */
export function writeProtectRange(ctx: UffdContext, start: number, length: number, protect: boolean): number {
  const mm = ctx.mm;
  const end = start + length;
  const vmas = mm.vmasIn(start, end);
  if (vmas.length === 0) return ctx.failure.fail(ENOENT, 'range', `no mapping in ${hex(start)}-${hex(end)}`);
  for (const vma of vmas) {
    if ((vma.flags & VM_UFFD_WP) === 0)
      return ctx.failure.fail(ENOENT, 'range', `${vma.describe()} is not registered for WP`);
    if (vma.pageShift > 12 && (start % vma.pageSize !== 0 || length % vma.pageSize !== 0)) {
      return ctx.failure.fail(EINVAL, 'range', `not aligned to the huge pages of ${vma.describe()}`);
    }
    const lo = Math.max(start, vma.start);
    const hi = Math.min(end, vma.end);
    // Unpopulated pages get markers on file memory always, on anonymous memory only with
    // WP_UNPOPULATED of the context the VMA is registered with, not of the one asking
    // (userfaultfd_wp_use_markers) [OBS 6.18: faultline fuzz --seed 20261733].
    const unpopulated = vma.uffdContext?.hasFeature(UFFD_FEATURE_WP_UNPOPULATED) ?? false;
    const markHoles = protect && (!vma.isAnonymous || unpopulated);
    applyWriteProtect(vma, lo, hi, protect, markHoles);
  }
  return 0;
}

function applyWriteProtect(vma: Vma, start: number, end: number, protect: boolean, markHoles: boolean): void {
  const mm = vma.mm;
  const table = mm.pageTable;
  const memory = mm.memory;
  for (let address = start; address < end; address += vma.pageSize) {
    const vpn = address / 4096;
    const flags = table.flagsAt(vpn);
    if (flags & PTE_PRESENT) {
      if (protect) {
        mm.setEntryFlags(address, vma.pageShift, (flags & ~PTE_WRITE) | PTE_UFFD_WP);
        continue;
      }
      let restored = flags & ~PTE_UFFD_WP;
      // Write permission comes back where a write would not need a COW anyway.
      if (vma.flags & VM_WRITE && !(flags & PTE_ZERO)) {
        const pfn = table.valueAt(vpn);
        const exclusiveAnon =
          memory.hasFlag(pfn, PG_ANON) &&
          memory.hasFlag(pfn, PG_ANON_EXCLUSIVE) &&
          memory.folioMapcount[pfn] === 1;
        if (vma.flags & VM_SHARED || exclusiveAnon) restored |= PTE_WRITE;
      }
      mm.setEntryFlags(address, vma.pageShift, restored);
      continue;
    }
    if (protect) {
      if (markHoles && flags === 0) mm.setEntries(address, vma.pageShift, PTE_MARKER_UFFD_WP, 0);
    } else if (flags & PTE_MARKER_UFFD_WP) {
      const rest = flags & ~PTE_MARKER_UFFD_WP;
      if (rest === 0) {
        for (let i = 0; i < vma.pageSize / 4096; i++) table.clear(vpn + i);
      } else {
        mm.setEntryFlags(address, vma.pageShift, rest);
      }
    }
  }
}
