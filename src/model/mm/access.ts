/**
 * Reading and writing an address space's memory through the page table,
 * faulting pages in as a CPU (user mode) or copy_{to,from}_user (kernel
 * mode) would.
 */

import type { Task } from '../task.ts';
import { FAULT_HANDLED, FAULT_RESULT_SIGSEGV, type FaultEnvironment, handleMmFault } from './fault.ts';
import type { AddressSpace } from './mm.ts';
import { PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_WRITE, PTE_ZERO } from './pagetable.ts';

/**
 * Makes the page at `address` accessible for a read or write, faulting as
 * often as needed. Returns FAULT_HANDLED or the fault result that stopped it.
 */
export function faultInPage(
  env: FaultEnvironment,
  mm: AddressSpace,
  address: number,
  write: boolean,
  task: Task | null,
  userMode: boolean,
): number {
  const vpn = Math.floor(address / 4096);
  for (let attempt = 0; ; attempt++) {
    const flags = mm.pageTable.flagsAt(vpn);
    if ((flags & (PTE_PRESENT | PTE_PROTNONE)) === PTE_PRESENT && (!write || flags & PTE_WRITE)) {
      if (write && !(flags & PTE_DIRTY)) mm.pageTable.setFlags(vpn, flags | PTE_DIRTY);
      return FAULT_HANDLED;
    }
    if (attempt > 8) throw new Error(`faultInPage: no progress at 0x${address.toString(16)}`);
    const result = handleMmFault(env, mm, address, write, task, userMode);
    if (result !== FAULT_HANDLED) return result;
  }
}

/** Spans up to this many bytes are copied byte by byte: cheaper than a subarray and a set. */
const SMALL_COPY = 16;

/** Copies the bytes of one page-bounded span out of present memory. */
export function readPresent(
  env: FaultEnvironment,
  mm: AddressSpace,
  address: number,
  into: Uint8Array,
  intoOffset: number,
  length: number,
): void {
  const vpn = Math.floor(address / 4096);
  const flags = mm.pageTable.flagsAt(vpn);
  if (flags & PTE_ZERO) {
    into.fill(0, intoOffset, intoOffset + length);
    return;
  }
  const pfn = mm.pageTable.valueAt(vpn);
  const buffer = env.memory.frameBuffer(pfn);
  const offset = env.memory.frameOffset(pfn) + (address % 4096);
  if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) into[intoOffset + i] = buffer[offset + i]!;
    return;
  }
  into.set(buffer.subarray(offset, offset + length), intoOffset);
}

/** Copies bytes into one page-bounded span of present, writable memory. */
export function writePresent(
  env: FaultEnvironment,
  mm: AddressSpace,
  address: number,
  from: Uint8Array,
  fromOffset: number,
  length: number,
): void {
  const pfn = mm.pageTable.valueAt(Math.floor(address / 4096));
  const buffer = env.memory.frameBuffer(pfn);
  const offset = env.memory.frameOffset(pfn) + (address % 4096);
  if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) buffer[offset + i] = from[fromOffset + i]!;
    return;
  }
  buffer.set(from.subarray(fromOffset, fromOffset + length), offset);
}

/** The bytes done by the last `accessRange` (a result object per access would cost more than the access). */
export let accessRangeDone = 0;

/**
 * Runs an access over [address, address + length) page by page, starting
 * `doneBytes` in. Returns the fault result that stopped it (FAULT_HANDLED
 * when the whole range was done) and leaves the bytes done in
 * `accessRangeDone`.
 */
export function accessRange(
  env: FaultEnvironment,
  mm: AddressSpace,
  address: number,
  length: number,
  write: boolean,
  buffer: Uint8Array,
  doneBytes: number,
  task: Task | null,
  userMode: boolean,
): number {
  let done = doneBytes;
  // A kernel-mode access is one copy_{from,to}_user: fail_usercopy fails it as a bad address would.
  if (
    !userMode &&
    env.inject.active &&
    env.inject.fire('fail_usercopy', write ? 'copy_to_user' : 'copy_from_user', address + done)
  ) {
    accessRangeDone = done;
    return FAULT_RESULT_SIGSEGV;
  }
  while (done < length) {
    const at = address + done;
    const span = Math.min(length - done, 4096 - (at % 4096));
    const result = faultInPage(env, mm, at, write, task, userMode);
    if (result !== FAULT_HANDLED) {
      accessRangeDone = done;
      return result;
    }
    if (write) writePresent(env, mm, at, buffer, done, span);
    else readPresent(env, mm, at, buffer, done, span);
    done += span;
  }
  accessRangeDone = done;
  return FAULT_HANDLED;
}
