/**
 * handle_userfault: what happens when a fault lands in a registered VMA
 * (uapi-facts.md §4.2, decisions in the kernel's order).
 */
import {
  UFFD_FEATURE_SIGBUS,
  UFFD_FEATURE_WP_ASYNC,
  UFFD_PAGEFAULT_FLAG_MINOR,
  UFFD_PAGEFAULT_FLAG_WP,
  UFFD_PAGEFAULT_FLAG_WRITE,
} from '../../uapi/constants.ts';
import {
  FAULT_HANDLED,
  FAULT_RESULT_SIGBUS,
  FAULT_RESULT_WOULD_BLOCK,
  FAULT_RETRY,
  USERFAULT_MINOR,
  USERFAULT_WP,
  type VmFault,
} from '../mm/fault.ts';
import { PTE_MARKER_UFFD_WP, PTE_PRESENT, PTE_UFFD_WP } from '../mm/pagetable.ts';
import type { Vma } from '../mm/vma.ts';
import { UffdFile } from './ioctl.ts';

export function handleUserfault(vmf: VmFault, vma: Vma, reason: number): number {
  const { address, task } = vmf;
  const ctx = vma.uffdContext;
  if (ctx === null) return FAULT_RESULT_SIGBUS;
  if (reason === USERFAULT_WP && ctx.hasFeature(UFFD_FEATURE_WP_ASYNC)) {
    resolveAsyncWriteProtect(vma, address);
    return FAULT_HANDLED;
  }
  if (ctx.hasFeature(UFFD_FEATURE_SIGBUS)) return FAULT_RESULT_SIGBUS;
  if (ctx.userModeOnly && !vmf.userMode) return FAULT_RESULT_SIGBUS;
  if (task === null) return FAULT_RESULT_WOULD_BLOCK;
  let flags = vmf.write ? UFFD_PAGEFAULT_FLAG_WRITE : 0;
  if (reason === USERFAULT_WP) flags |= UFFD_PAGEFAULT_FLAG_WP;
  if (reason === USERFAULT_MINOR) flags |= UFFD_PAGEFAULT_FLAG_MINOR;
  task.faultsTaken++;
  ctx.enqueueFault({
    task,
    context: ctx,
    address: UffdFile.reportedAddress(ctx, address, vma.pageSize),
    flags,
    ptid: UffdFile.reportsThreadId(ctx) ? task.tid : 0,
  });
  return FAULT_RETRY;
}

/** WP_ASYNC: the kernel clears the uffd-wp state itself; the retried fault then proceeds as a normal one. */
function resolveAsyncWriteProtect(vma: Vma, address: number): void {
  const mm = vma.uffdContext!.mm;
  const pageAddress = address - (address % vma.pageSize);
  const flags = mm.pageTable.flagsAt(pageAddress / 4096);
  if (flags & PTE_PRESENT) {
    mm.setEntryFlags(pageAddress, vma.pageShift, flags & ~PTE_UFFD_WP);
  } else if (flags & PTE_MARKER_UFFD_WP) {
    for (let i = 0; i < vma.pageSize / 4096; i++) mm.pageTable.clear(pageAddress / 4096 + i);
  }
}
