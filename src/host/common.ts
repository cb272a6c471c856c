/**
 * What the host backend's processes share: errors as the model reports them,
 * ioctl names, the devices open() accepts, thread programs for the addon.
 */
import { type ThreadAccess, WouldBlockError } from '../api/backend.ts';
import {
  KVM_CHECK_EXTENSION,
  KVM_CREATE_GUEST_MEMFD,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  PAGE_SIZE,
  UFFD_FEATURE_EVENT_FORK,
  UFFD_FEATURE_EVENT_REMAP,
  UFFD_FEATURE_EVENT_REMOVE,
  UFFD_FEATURE_EVENT_UNMAP,
  USERFAULTFD_IOC_NEW,
  uffdioRequestName,
} from '../uapi/constants.ts';
import { ENOENT, KernelError, SignalError } from '../uapi/errno.ts';
import type { NativeOp } from './native.ts';

const OTHER_IOCTL_NAMES: ReadonlyMap<number, string> = new Map([
  [USERFAULTFD_IOC_NEW, 'USERFAULTFD_IOC_NEW'],
  [KVM_GET_API_VERSION, 'KVM_GET_API_VERSION'],
  [KVM_CREATE_VM, 'KVM_CREATE_VM'],
  [KVM_CHECK_EXTENSION, 'KVM_CHECK_EXTENSION'],
  [KVM_CREATE_GUEST_MEMFD >>> 0, 'KVM_CREATE_GUEST_MEMFD'],
]);

/** ioctls whose result is a new file descriptor. */
export const FD_IOCTLS: ReadonlySet<number> = new Set([
  USERFAULTFD_IOC_NEW,
  KVM_CREATE_VM,
  KVM_CREATE_GUEST_MEMFD >>> 0,
]);

/** Features with which madvise, munmap, mremap, mmap(MAP_FIXED) and fork may sleep until an event is read. */
export const EVENT_FEATURES: number =
  UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP;

/** Device nodes open() accepts: the model's /dev/userfaultfd and /dev/kvm. */
const DEVICES: ReadonlySet<string> = new Set(['/dev/userfaultfd', '/dev/kvm']);

export const SYSCALL_CODES = { madvise: 0, munmap: 1, mremap: 2, fork: 3, mmap: 4 } as const;

export function ioctlName(request: number): string {
  const code = request >>> 0;
  return uffdioRequestName(code) ?? OTHER_IOCTL_NAMES.get(code) ?? `0x${code.toString(16)}`;
}

/** Throws a KernelError for -errno; returns anything else. */
export function check(syscall: string, result: number): number {
  if (result < 0) throw new KernelError({ errno: -result, syscall });
  return result;
}

export function checkDevice(path: string): void {
  if (!DEVICES.has(path)) {
    throw new KernelError({
      errno: ENOENT,
      syscall: 'open',
      argument: 'path',
      reason: `the host backend opens only ${[...DEVICES].join(' and ')}`,
    });
  }
}

export function pageRound(length: number): number {
  return Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
}

/** The error of a direct access: kind 1 a signal, 2 a fault that would sleep. */
export function accessError(kind: number, signal: number, address: number, siCode: number): Error {
  if (kind === 2) return new WouldBlockError(address);
  return new SignalError({ signal, address, siCode });
}

/** The Error for a call that went to sleep waiting for its userfaultfd event to be read. */
export function sleepsError(name: string): Error {
  return new Error(
    `${name} sleeps until the monitor reads the userfaultfd event it raised; on the host make this call ` +
      'from a thread (a syscall access). It completes in the background once the event is read',
  );
}

/** How a fork access forks: the descriptors the child keeps; whether a FORK event may make it sleep. */
export interface ForkOptions {
  readonly keep: readonly number[];
  readonly eventFork: boolean;
}

/** The native fork op (args[0] = 1 when it may sleep on a FORK event). */
export function forkOp(options: ForkOptions): NativeOp {
  return {
    kind: 2,
    address: 0,
    length: 0,
    call: SYSCALL_CODES.fork,
    args: [options.eventFork ? 1 : 0],
    keep: options.keep,
  };
}

/** A thread program as the addon takes it (read to the end: it must be finite). */
export function nativeOps(program: Iterable<ThreadAccess>, fork: () => ForkOptions): NativeOp[] {
  const ops: NativeOp[] = [];
  for (const access of program) {
    if (access.kind === 'syscall') {
      if (access.call === 'fork') ops.push(forkOp(fork()));
      else ops.push({ kind: 2, address: 0, length: 0, call: SYSCALL_CODES[access.call], args: access.args });
    } else if (access.kind === 'read') {
      ops.push({ kind: 0, address: access.address, length: access.length, kernel: access.kernel === true });
    } else {
      ops.push({
        kind: 1,
        address: access.address,
        length: access.data.byteLength,
        data: access.data,
        kernel: access.kernel === true,
      });
    }
  }
  return ops;
}
