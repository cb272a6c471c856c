/**
 * The native addon (native/*.cc, built by node-gyp into build/Release during
 * `npm ci`, or shipped prebuilt in an installed package). Every call returns its result or -errno; the backend turns
 * -errno into a KernelError naming the call. Loading never throws: a machine
 * without the addon gets `nativeLoadError` and the model still works.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MremapArgs } from '../api/backend.ts';

/** One access of a thread's program, as the addon takes it. */
export interface NativeOp {
  /** 0 read, 1 write, 2 syscall. */
  readonly kind: 0 | 1 | 2;
  readonly address: number;
  readonly length: number;
  readonly data?: Uint8Array;
  readonly kernel?: boolean;
  /** For syscalls: 0 madvise, 1 munmap, 2 mremap, 3 fork, 4 mmap (internal). */
  readonly call?: number;
  readonly args?: readonly number[];
  /** For a fork: the descriptors the child keeps (every other one is closed in it). */
  readonly keep?: readonly number[];
}

export interface NativeThreadResult {
  readonly state: 'done' | 'sigbus' | 'segv';
  readonly reads: Uint8Array[];
  readonly signal: number;
  readonly address: number;
  readonly code: number;
  readonly errno: number;
  readonly faults: number;
  /** Time in touches of memory that slept in the kernel (userfaultfd waits), in ms (BlockClock in threads.cc). */
  readonly blockedMs: number;
  readonly returns: number[];
  /** [pid, socket to its agent] of each child a fork access made. */
  readonly children: Array<[number, number]>;
}

/** An access thread's handle (an opaque external). */
export type NativeThread = { readonly __nativeThread: unique symbol };

export type NativeAgentReply = [
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  Uint8Array | null,
  /** A descriptor the agent passed with its reply (SCM_RIGHTS), or -1. */
  number,
];

/** [kind, signal, address, si_code]: kind 1 is a signal, 2 a fault that would sleep. */
export type NativeAccessOutcome = [number, number, number, number] | null;

export interface NativeAddon {
  userfaultfd(flags: number): number;
  open(path: string, flags: number): number;
  ioctl(fd: number, request: number, arg: Uint8Array | number | null): number;
  mmap(address: number, length: number, prot: number, flags: number, fd: number, offset: number): number;
  /** mmap between PROT_NONE guards when the kernel places it: [address or -errno, guarded start, length]. */
  mmapIsolated(
    address: number,
    length: number,
    prot: number,
    flags: number,
    fd: number,
    offset: number,
  ): [number, number, number];
  munmap(address: number, length: number): number;
  mprotect(address: number, length: number, prot: number): number;
  madvise(address: number, length: number, advice: number): number;
  mremap(...args: MremapArgs): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, length: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  pread(fd: number, into: Uint8Array, offset: number): number;
  pwrite(fd: number, from: Uint8Array, offset: number): number;
  read(fd: number, into: Uint8Array): number;
  /** read(2) with RWF_NOWAIT: never sleeps, whatever O_NONBLOCK (absent from an addon built before it). */
  readNowait?(fd: number, into: Uint8Array): number;
  write(fd: number, from: Uint8Array): number;
  lseek(fd: number, offset: number, whence: number): number;
  /** poll(2) with a zero timeout for POLLIN|POLLOUT: the revents, or -errno. */
  poll(fd: number): number;
  /** Calls `callback` once the fd is readable (or errs, hangs up, or is closed); 0 or a negative libuv error. */
  waitReadable(fd: number, callback: () => void): number;
  close(fd: number): number;
  readMemory(address: number, into: Uint8Array): NativeAccessOutcome;
  writeMemory(address: number, from: Uint8Array): NativeAccessOutcome;
  /** The raw /proc/self/pagemap entries (8 bytes a page), or null. */
  pagemap(address: number, pages: number): Uint8Array | null;
  spawnThread(ops: readonly NativeOp[], name: string, onExit: () => void): NativeThread | number;
  threadTid(thread: NativeThread): number;
  threadState(thread: NativeThread): 'running' | 'blocked' | 'done' | 'sigbus' | 'segv';
  threadResult(thread: NativeThread): NativeThreadResult | null;
  /** Blocks until the thread has ended or sleeps on userfaultfd; its state then. */
  threadWait(thread: NativeThread): 'blocked' | 'done' | 'sigbus' | 'segv';
  signalThread(tid: number, signal: number): number;
  taskInfo(tid: number): { state: string; wchan: string };
  gettid(): number;
  /**
   * One request to an agent: [result, extra0..7, data, passed fd]; result -1001 when the agent is gone,
   * -1002 when it did not answer within timeoutMs (it is then killed with SIGKILL).
   */
  agentCall(
    socket: number,
    pid: number,
    op: number,
    args: readonly number[],
    data: Uint8Array | null,
    timeoutMs: number,
  ): NativeAgentReply;
  /** A fresh faultline_agent process: [pid, socket], or -errno. */
  spawnAgent(path: string, privileged: boolean): [number, number] | number;
  /** waitpid: the pid once it has exited, 0 while it runs (wait false), or -errno. */
  reap(pid: number, wait: boolean): number;
  /** waitpid: [pid, exit code or -1, signal or 0], 0 while it runs (wait false), or -errno (ECHILD: not a child). */
  reapStatus(pid: number, wait: boolean): [number, number, number] | number;
  kvmCreateVm(type: number): number;
  kvmCheckExtension(fd: number, capability: number): number;
  kvmCreateGuestMemfd(vmFd: number, size: number, flags: number): number;
  /** A bound, listening, non-blocking (close-on-exec) Unix stream socket at `path`, or -errno. */
  unixListen(path: string): number;
  /** accept4 on a listener: the connected socket (close-on-exec), or -errno (-EAGAIN: none pending). */
  unixAccept(fd: number): number;
  /** A Unix stream socket connected to `path`, or -errno. */
  unixConnect(path: string): number;
  /** One sendmsg carrying `data` and `fdToSend` as SCM_RIGHTS: the bytes sent, or -errno. */
  sendFdWithData(socket: number, data: Uint8Array, fdToSend: number): number;
  /**
   * One recvmsg (MSG_CMSG_CLOEXEC) of at most maxBytes: the data and the first descriptor received
   * (-1 when none; any further ones are closed), or -errno.
   */
  recvFdWithData(socket: number, maxBytes: number): { data: Buffer; fd: number; truncated: boolean } | number;
  /**
   * A duplicate in this process of descriptor `fd` of process `pid` (pidfd_getfd, close-on-exec), or
   * -errno. Optional: a build/ made before it lacks it.
   */
  pidfdGetfd?(pid: number, fd: number): number;
  /** poll(fd, POLLIN, 0) up to `tries` times (native/bench.cc): the revents once readable, 0 if never, or -errno. */
  spinReadable(fd: number, tries: number): number;
  /** The C reference handler, run inside the call (native/bench.cc; typed in bench.ts). */
  benchHandler(config: {
    row: string;
    regionBytes: number;
    bytesPerFault?: number;
    spin?: number;
    vcpus?: number;
    pin?: 'none' | 'same' | 'split';
  }): { faults: number; polls: number; ns: number; error: string | null };
  /** memcpy into a prefaulted and into a fresh destination (native/bench.cc; typed in bench.ts). */
  benchMemcpy(config: { regionBytes: number; chunkBytes: number }): {
    ns: number;
    nsFresh: number;
    error: string | null;
  };
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Where the addon and its executables are: a local build (node-gyp's
 * build/Release) wins, so a checkout always runs what it compiled; an
 * installed package without one uses the binaries it ships in
 * prebuilds/<platform>-<arch>/ (tools/prebuild.mjs, run at pack time).
 */
export const NATIVE_DIRECTORY: string = (() => {
  const local = join(root, 'build', 'Release');
  const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (existsSync(join(local, 'faultline_host.node')) || !existsSync(prebuilt)) return local;
  return prebuilt;
})();
/** The addon's file. */
export const NATIVE_ADDON_PATH: string = join(NATIVE_DIRECTORY, 'faultline_host.node');
/** The agent executable createProcess() starts (built with the addon). */
export const NATIVE_AGENT_PATH: string = join(NATIVE_DIRECTORY, 'faultline_agent');

function load(): { addon: NativeAddon | null; error: string | null } {
  if (process.platform !== 'linux')
    return { addon: null, error: `the host backend needs Linux, not ${process.platform}` };
  if (!existsSync(NATIVE_ADDON_PATH)) {
    return {
      addon: null,
      error: `the native addon is not built (${NATIVE_ADDON_PATH} is missing; \`faultline doctor\` says how to build it)`,
    };
  }
  try {
    const require = createRequire(import.meta.url);
    return { addon: require(NATIVE_ADDON_PATH) as NativeAddon, error: null };
  } catch (error) {
    return {
      addon: null,
      error: `the native addon does not load: ${(error as Error).message.split('\n')[0]}`,
    };
  }
}

const loaded = load();

/** The addon, or null when it is not available (see nativeLoadError). */
export const native: NativeAddon | null = loaded.addon;
/** Why the addon is not available, or null. */
export const nativeLoadError: string | null = loaded.error;
