/**
 * mprotect(2) (mm/mprotect.c): new protection for the VMAs of a range,
 * split only where their flags change, and present entries follow it.
 */
import { PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, TASK_SIZE } from '../../uapi/constants.ts';
import { EACCES, EINVAL, ENOMEM } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { ModelProcess } from '../process.ts';
import { vmaProtNone } from './fault.ts';
import type { AddressSpace } from './mm.ts';
import { splitEdges } from './munmap.ts';
import { PTE_PRESENT, PTE_PROTNONE, PTE_WRITE } from './pagetable.ts';
import {
  VM_ACCOUNT,
  VM_EXEC,
  VM_HUGETLB,
  VM_MAYWRITE,
  VM_NORESERVE,
  VM_READ,
  VM_SHARED,
  VM_WRITE,
  type Vma,
} from './vma.ts';

export function mprotect(process: ModelProcess, address: number, length: number, prot: number): number {
  if (address % PAGE_SIZE !== 0) return process.fail(EINVAL, 'addr', `${hex(address)} is not page aligned`);
  if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0)
    return process.fail(EINVAL, 'prot', `unknown bits ${hex(prot)}`);
  if (length === 0) return 0;
  const end = address + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
  if (end > TASK_SIZE) return process.fail(ENOMEM, 'len', 'runs past the address space');
  const mm = process.mm;
  const spans = mm.vmasIn(address, end).map((vma) => ({ vma, start: vma.start, end: vma.end }));
  if (spans.length === 0 || spans[0]!.start > address)
    return process.fail(ENOMEM, 'addr', `${hex(address)} is not mapped`);
  for (const { vma } of spans) {
    if (prot & PROT_WRITE && !(vma.flags & VM_MAYWRITE)) {
      return process.fail(EACCES, 'prot', `${vma.describe()} cannot be made writable`);
    }
  }
  // mprotect_fixup leaves a VMA whose flags would not change alone: it is not split [OBS 6.18:
  // faultline fuzz, half of a hugetlb VMA, which never merges back].
  const changes = (vma: Vma) => protFlags(vma.flags, prot) !== vma.flags;
  const first = spans[0]!;
  const last = spans[spans.length - 1]!;
  const split = splitEdges(
    process,
    changes(first.vma) ? address : first.start,
    changes(last.vma) ? end : last.end,
  );
  if (split < 0) return split;
  // Like Linux, VMAs before a hole are changed before the hole is found.
  let expected = address;
  for (const span of spans) {
    if (span.start > expected) return process.fail(ENOMEM, 'len', `${hex(expected)} is not mapped`);
    const lo = Math.max(address, span.start);
    const hi = Math.min(end, span.end);
    expected = hi;
    if (!changes(span.vma)) continue;
    mm.splitRange(lo, hi);
    for (const piece of mm.vmasIn(lo, hi)) {
      piece.flags = accountedFlags(piece, protFlags(piece.flags, prot));
      changeProtection(mm, piece, (prot & PROT_WRITE) === 0);
    }
    mm.mergeRange(lo, hi);
  }
  if (expected < end) return process.fail(ENOMEM, 'len', `${hex(expected)} is not mapped`);
  return 0;
}

/** A VMA's flags with `prot` in place of its VM_READ/WRITE/EXEC. */
function protFlags(flags: number, prot: number): number {
  let next = flags & ~(VM_READ | VM_WRITE | VM_EXEC);
  if (prot & PROT_READ) next |= VM_READ;
  if (prot & PROT_WRITE) next |= VM_WRITE | VM_READ;
  if (prot & PROT_EXEC) next |= VM_EXEC;
  return next;
}

/**
 * mprotect_fixup's commit accounting: a private mapping made writable is
 * charged (VM_ACCOUNT); an anonymous one made read-only before it has an
 * anon_vma is uncharged, later it stays charged [OBS 6.18: faultline fuzz
 * --seed 20261761, such VMAs do not merge].
 */
function accountedFlags(vma: Vma, flags: number): number {
  if (flags & VM_WRITE) {
    const unaccountable = VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE;
    return vma.flags & unaccountable ? flags : flags | VM_ACCOUNT;
  }
  if (vma.flags & VM_ACCOUNT && vma.isAnonymous && vma.anonVma === 0) return flags & ~VM_ACCOUNT;
  return flags;
}

/** change_protection: present entries follow the VMA's new protection (write, PROT_NONE). */
function changeProtection(mm: AddressSpace, vma: Vma, dropWrite: boolean): void {
  const protNone = vmaProtNone(vma);
  mm.pageTable.forEachInRange(vma.start / 4096, vma.end / 4096, (vpn, flags) => {
    if (!(flags & PTE_PRESENT)) return;
    const next = ((dropWrite ? flags & ~PTE_WRITE : flags) & ~PTE_PROTNONE) | protNone;
    if (next !== flags) mm.pageTable.setFlags(vpn, next);
  });
}
