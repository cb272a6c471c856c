/**
 * fork(2): a child process with a copy of the address space (copy-on-write
 * for private pages), the fd table, and the userfaultfd rules of §4.6: with
 * EVENT_FORK each registered parent context gets a child context and a FORK
 * event; without it the child's copies are unregistered and lose their
 * uffd-wp bits.
 */
import { UFFD_FEATURE_EVENT_FORK } from '../uapi/constants.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE } from './mem/physmem.ts';
import {
  PTE_MARKER_POISONED,
  PTE_MARKER_UFFD_WP,
  PTE_PRESENT,
  PTE_UFFD_WP,
  PTE_WRITE,
  PTE_ZERO,
} from './mm/pagetable.ts';
import { VM_DONTCOPY, VM_SHARED, VM_UFFD_FLAGS, VM_UFFD_WP, Vma } from './mm/vma.ts';
import type { ModelProcess } from './process.ts';
import { UffdContext } from './uffd/context.ts';
import { type EventWait, raiseForkEvent } from './uffd/events.ts';
import { unregisterAll } from './uffd/register.ts';

export function forkProcess(parent: ModelProcess, wait: EventWait | null): ModelProcess {
  const kernel = parent.kernel;
  const child = kernel.createProcess({ privileged: parent.privileged });
  const childContexts = new Map<UffdContext, UffdContext>();
  const contextFor = (ctx: UffdContext): UffdContext => {
    let copy = childContexts.get(ctx);
    if (copy === undefined) {
      copy = new UffdContext(kernel.allocateContextId(), child.mm, ctx.userModeOnly, kernel);
      copy.features = ctx.features;
      copy.openFlags = ctx.openFlags;
      childContexts.set(ctx, copy);
    }
    return copy;
  };

  for (const vma of parent.mm.vmas) {
    if (vma.flags & VM_DONTCOPY) continue;
    const copy = new Vma({ ...vma.shape(), mm: child.mm });
    // anon_vma_fork gives the child an anon_vma of its own.
    copy.anonVma = vma.anonVma === 0 ? 0 : kernel.allocateAnonVmaId();
    const ctx = vma.uffdContext;
    if (ctx?.hasFeature(UFFD_FEATURE_EVENT_FORK)) {
      copy.uffdContext = contextFor(ctx);
    } else {
      copy.flags &= ~VM_UFFD_FLAGS;
    }
    child.mm.insert(copy);
    if (needsPageCopy(vma, copy)) copyEntries(parent, child, vma, copy);
  }

  for (const [fd, file] of parent.fds) {
    file.references++;
    if (file.kind === 'inode') file.inode.references++;
    if (file.kind === 'uffd') file.uffd.ctx.fileReferences++;
    child.fds.set(fd, file);
  }

  for (const [parentContext, childContext] of childContexts) {
    raiseForkEvent(parentContext, childContext, wait, () => {
      // Nobody took the child's context: its VMAs go back to normal.
      if (childContext.fileReferences === 0) {
        childContext.released = true;
        if (!childContext.mm.dead) unregisterAll(childContext);
      }
    });
  }
  return child;
}

/**
 * vma_needs_copy: shared file memory refaults from the page cache, so its
 * entries are not copied, unless uffd-wp state must survive in the child or
 * the mapping holds anonymous pages.
 */
function needsPageCopy(parent: Vma, child: Vma): boolean {
  if (child.flags & VM_UFFD_WP) return true;
  if (parent.isAnonymous) return true;
  return parent.anonVma !== 0;
}

function copyEntries(parentProcess: ModelProcess, childProcess: ModelProcess, parent: Vma, child: Vma): void {
  const memory = parentProcess.kernel.memory;
  const parentTable = parentProcess.mm.pageTable;
  const childTable = childProcess.mm.pageTable;
  const keepWp = (child.flags & VM_UFFD_WP) !== 0;
  const pagesPerEntry = parent.pageSize / 4096;
  const updates: Array<[number, number]> = [];
  parentTable.forEachInRange(parent.start / 4096, parent.end / 4096, (vpn, flags, pfn) => {
    if (!(flags & PTE_PRESENT)) {
      // Poison markers always follow; uffd-wp markers only where the child keeps WP.
      const marker = (flags & PTE_MARKER_POISONED) | (keepWp ? flags & PTE_MARKER_UFFD_WP : 0);
      if (marker !== 0) childTable.set(vpn, marker, 0);
      return;
    }
    let childFlags = keepWp ? flags : flags & ~PTE_UFFD_WP;
    if (flags & PTE_ZERO) {
      childTable.set(vpn, childFlags, pfn);
      return;
    }
    const head = pfn - (vpn % pagesPerEntry);
    const anonymousPrivate = memory.hasFlag(head, PG_ANON) && (parent.flags & VM_SHARED) === 0;
    if (anonymousPrivate) {
      // Copy-on-write: both sides lose write permission and the page is no longer exclusive.
      childFlags &= ~PTE_WRITE;
      if (flags & PTE_WRITE) updates.push([vpn, flags & ~PTE_WRITE]);
      memory.clearFlag(head, PG_ANON_EXCLUSIVE);
    }
    if (vpn % pagesPerEntry === 0) childProcess.mm.mapFolio(head);
    childTable.set(vpn, childFlags, pfn);
  });
  for (const [vpn, flags] of updates) parentTable.setFlags(vpn, flags);
}
