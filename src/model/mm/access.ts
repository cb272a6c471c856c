/**
 * Reading and writing an address space's memory through the page table,
 * faulting pages in as a CPU (user mode) or copy_{to,from}_user (kernel
 * mode) would.
 */

import {
  FAULT_HANDLED,
  FAULT_RESULT_SIGSEGV,
  type FaultEnvironment,
  handleMmFault,
  type VmFault,
} from './fault.ts';
import type { AddressSpace } from './mm.ts';
import { PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_WRITE, PTE_ZERO } from './pagetable.ts';

/**
 * One access of user memory: a thread's read or write, or a kernel
 * copy_{from,to}_user. The fault record of its current page, plus the
 * buffer and the progress, which the caller reads back when it stops.
 */
export interface UserAccess extends VmFault {
  /** The first byte; `address` is where the access is now. */
  readonly start: number;
  /** Bytes to store (a write) or the space the bytes read go to; its length is the access's. */
  readonly buffer: Uint8Array;
  /** Bytes done: where the access resumes, and how far it got when it stopped. */
  doneBytes: number;
}

/**
 * Makes the page at `vmf.address` accessible for the access, faulting as
 * often as needed. Returns FAULT_HANDLED or the fault result that stopped it.
 */
export function faultInPage(env: FaultEnvironment, vmf: VmFault): number {
  const { mm, write } = vmf;
  const vpn = Math.floor(vmf.address / 4096);
  for (let attempt = 0; ; attempt++) {
    const flags = mm.pageTable.flagsAt(vpn);
    if ((flags & (PTE_PRESENT | PTE_PROTNONE)) === PTE_PRESENT && (!write || flags & PTE_WRITE)) {
      if (write && !(flags & PTE_DIRTY)) mm.pageTable.setFlags(vpn, flags | PTE_DIRTY);
      return FAULT_HANDLED;
    }
    if (attempt > 8) throw new Error(`faultInPage: no progress at 0x${vmf.address.toString(16)}`);
    const result = handleMmFault(env, vmf);
    if (result !== FAULT_HANDLED) return result;
  }
}

/** Spans up to this many bytes are copied byte by byte: cheaper than a subarray and a set. */
const SMALL_COPY = 16;

/** Copies `length` bytes at `access.address` (within one page) of present memory into the buffer. */
function readPresent(env: FaultEnvironment, access: UserAccess, length: number): void {
  const { mm, address, buffer: into } = access;
  const intoOffset = access.doneBytes;
  const vpn = Math.floor(address / 4096);
  const flags = mm.pageTable.flagsAt(vpn);
  if (flags & PTE_ZERO) {
    into.fill(0, intoOffset, intoOffset + length);
    return;
  }
  const pfn = mm.pageTable.valueAt(vpn);
  const frame = env.memory.frameBuffer(pfn);
  const offset = env.memory.frameOffset(pfn) + (address % 4096);
  if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) into[intoOffset + i] = frame[offset + i]!;
    return;
  }
  into.set(frame.subarray(offset, offset + length), intoOffset);
}

/** Copies `length` bytes of the buffer into present, writable memory at `access.address` (within one page). */
function writePresent(env: FaultEnvironment, access: UserAccess, length: number): void {
  const { mm, address, buffer: from } = access;
  const fromOffset = access.doneBytes;
  const pfn = mm.pageTable.valueAt(Math.floor(address / 4096));
  const frame = env.memory.frameBuffer(pfn);
  const offset = env.memory.frameOffset(pfn) + (address % 4096);
  if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) frame[offset + i] = from[fromOffset + i]!;
    return;
  }
  frame.set(from.subarray(fromOffset, fromOffset + length), offset);
}

/**
 * Runs `access` page by page from `access.doneBytes` on. Returns the fault
 * result that stopped it (FAULT_HANDLED when the whole range was done);
 * `access.doneBytes` says how far it got.
 */
export function accessRange(env: FaultEnvironment, access: UserAccess): number {
  const length = access.buffer.byteLength;
  access.address = access.start + access.doneBytes;
  // A kernel-mode access is one copy_{from,to}_user: fail_usercopy fails it as a bad address would.
  if (
    !access.userMode &&
    env.inject.active &&
    env.inject.fire('fail_usercopy', access.write ? 'copy_to_user' : 'copy_from_user', access.address)
  ) {
    return FAULT_RESULT_SIGSEGV;
  }
  while (access.doneBytes < length) {
    const at = access.start + access.doneBytes;
    access.address = at;
    const span = Math.min(length - access.doneBytes, 4096 - (at % 4096));
    const result = faultInPage(env, access);
    if (result !== FAULT_HANDLED) return result;
    if (access.write) writePresent(env, access, span);
    else readPresent(env, access, span);
    access.doneBytes += span;
  }
  return FAULT_HANDLED;
}

/** The result of a direct memory access by the calling thread. */
export type DirectAccessResult =
  | { readonly ok: true; readonly data: Uint8Array }
  | { readonly ok: false; readonly fault: number; readonly address: number };

/**
 * An access by the calling thread itself (the API's own reads and writes):
 * it has no task, so it cannot sleep on a userfaultfd, and a fault that
 * would is refused with FAULT_RESULT_WOULD_BLOCK.
 */
export function callerAccess(
  env: FaultEnvironment,
  mm: AddressSpace,
  address: number,
  buffer: Uint8Array,
  write: boolean,
): DirectAccessResult {
  const access: UserAccess = {
    mm,
    address,
    write,
    task: null,
    userMode: true,
    start: address,
    buffer,
    doneBytes: 0,
  };
  const result = accessRange(env, access);
  if (result === FAULT_HANDLED) return { ok: true, data: buffer };
  return { ok: false, fault: result, address: address + access.doneBytes };
}
