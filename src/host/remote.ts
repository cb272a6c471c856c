/**
 * Processes other than this Node process: a child forked by a thread's fork
 * access, or a fresh process started by createProcess(). Each runs the native
 * agent (native/agent.cc), which makes the system calls on request over a
 * socket; memory syscalls that may sleep on a userfaultfd event run in a
 * thread of the agent so that it keeps answering.
 */
import { constants } from 'node:os';
import type {
  MmapArgs,
  MremapArgs,
  PageInfo,
  ProcessBackend,
  ThreadAccess,
  ThreadBackend,
  ThreadResult,
  ThreadState,
  VmaInfo,
} from '../api/backend.ts';
import {
  O_CLOEXEC,
  SIGBUS,
  SIGSEGV,
  UFFD_FEATURE_EVENT_FORK,
  UFFDIO_API,
  UFFDIO_COPY,
} from '../uapi/constants.ts';
import { ENOSYS, ESRCH, KernelError } from '../uapi/errno.ts';
import {
  accessError,
  check,
  checkDevice,
  FD_IOCTLS,
  type ForkOptions,
  ioctlName,
  nativeOps,
  sleepsError,
} from './common.ts';
import type { NativeAddon, NativeAgentReply, NativeOp } from './native.ts';
import { decodePagemap, smapsVmas } from './procfs.ts';

/** Requests the agent serves (enum AgentOp in native/agent.h). */
const OP = {
  mmap: 1,
  munmap: 2,
  mprotect: 3,
  madvise: 4,
  mremap: 5,
  memfdCreate: 6,
  open: 7,
  ftruncate: 8,
  fallocate: 9,
  pread: 10,
  pwrite: 11,
  write: 12,
  lseek: 13,
  close: 14,
  userfaultfd: 15,
  ioctl: 16,
  read: 17,
  poll: 18,
  readMemory: 19,
  writeMemory: 20,
  pagemap: 21,
  spawn: 22,
  threadState: 23,
  threadResult: 24,
  threadSignal: 25,
  exit: 26,
  takeChild: 27,
} as const;

const OP_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(OP).map(([name, code]) => [code, name]));

const AGENT_WOULD_SLEEP = -1000;
const AGENT_GONE = -1001;
const AGENT_HUNG = -1002;
/** An agent that takes longer to answer is stuck (see RunFork in native/threads.cc) and is killed. */
export const AGENT_TIMEOUT_MS = 15_000;

/**
 * A process's agent crashed or stopped answering (it was killed and reaped):
 * a finding about the program, not an errno the kernel returned.
 */
export class AgentDiedError extends Error {
  override name = 'AgentDiedError';
}

/** UFFDIO_COPY whose source faulted on a userfaultfd nothing resolves: Linux puts the caller to sleep. */
export class CopySleepsError extends Error {
  override name = 'CopySleepsError';
}

const STATES: readonly ThreadState[] = ['running', 'blocked', 'done', 'sigbus', 'segv'];

/** What remote processes need from the backend that owns them. */
export interface RemoteOwner {
  /** Threads not yet ended, for settle(). */
  readonly threads: Set<ThreadBackend>;
  /** The shared zero page's PFN (0 when PFNs are hidden). */
  zeroPagePfn(): number;
  /** The backend of a process running the agent at the other end of `socket`. */
  adopt(pid: number, socket: number): ProcessBackend;
  /** How long an agent may take to answer a request before it counts as hung and is killed. */
  readonly agentTimeoutMs: number;
}

const encoder = new TextEncoder();

function signalName(signal: number): string {
  for (const [name, value] of Object.entries(constants.signals)) if (value === signal) return name;
  return `signal ${signal}`;
}

function encodeOps(ops: readonly NativeOp[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, ops.length, true);
  parts.push(count);
  for (const op of ops) {
    const keep = op.keep ?? [];
    const data = op.data ?? new Uint8Array(0);
    const head = new Uint8Array(16 + 16 + 48 + 4 * keep.length + 4);
    const view = new DataView(head.buffer);
    view.setInt32(0, op.kind, true);
    view.setInt32(4, op.kernel ? 1 : 0, true);
    view.setInt32(8, op.call ?? 0, true);
    view.setInt32(12, keep.length, true);
    view.setBigInt64(16, BigInt(op.address), true);
    view.setBigInt64(24, BigInt(op.length), true);
    for (let i = 0; i < 6; i++) view.setBigInt64(32 + 8 * i, BigInt(Math.trunc(op.args?.[i] ?? 0)), true);
    keep.forEach((fd, i) => {
      view.setInt32(80 + 4 * i, fd, true);
    });
    view.setUint32(80 + 4 * keep.length, data.byteLength, true);
    parts.push(head, data);
  }
  const total = parts.reduce((sum, part) => sum + part.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

function decodeResult(data: Uint8Array, childPids: number[]): ThreadResult {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  const end = view.getInt32(at, true);
  const signal = view.getInt32(at + 4, true);
  const address = Number(view.getBigInt64(at + 8, true));
  const siCode = view.getInt32(at + 16, true);
  const errno = view.getInt32(at + 20, true);
  const faults = Number(view.getBigInt64(at + 24, true));
  at += 32;
  const returns: number[] = [];
  const returnCount = view.getUint32(at, true);
  at += 4;
  for (let i = 0; i < returnCount; i++, at += 8) returns.push(view.getFloat64(at, true));
  const reads: Uint8Array[] = [];
  const readCount = view.getUint32(at, true);
  at += 4;
  for (let i = 0; i < readCount; i++) {
    const length = view.getUint32(at, true);
    at += 4;
    reads.push(new Uint8Array(data.subarray(at, at + length)));
    at += length;
  }
  const childCount = at + 4 <= data.byteLength ? view.getUint32(at, true) : 0;
  at += 4;
  for (let i = 0; i < childCount; i++, at += 4) childPids.push(view.getInt32(at, true));
  // Time the thread slept in faulting touches (an agent built before it sends none).
  const blockedNs = at + 8 <= data.byteLength ? Number(view.getBigInt64(at, true)) : undefined;
  const state = end === 1 ? 'sigbus' : end === 2 ? 'segv' : 'done';
  return {
    state,
    reads,
    ...(state === 'done' ? {} : { signal: { signal, address, siCode } }),
    errno,
    faults,
    ...(blockedNs === undefined ? {} : { blockedMs: blockedNs / 1e6 }),
    returns,
    children: [],
  };
}

class RemoteThread implements ThreadBackend {
  private final: ThreadResult | null = null;

  constructor(
    private readonly process: RemoteProcessBackend,
    readonly index: number,
    readonly tid: number,
    readonly name: string,
    /** The descriptors a fork access's child keeps (it inherits them). */
    private readonly keep: readonly number[],
  ) {}

  belongsTo(process: RemoteProcessBackend): boolean {
    return this.process === process;
  }

  state(): ThreadState {
    if (this.result() !== null) return this.final!.state;
    const reply = this.process.agent(OP.threadState, [this.index]);
    return STATES[reply[0]] ?? 'running';
  }

  result(): ThreadResult | null {
    if (this.final !== null) return this.final;
    const reply = this.process.agent(OP.threadResult, [this.index]);
    if (reply[0] === AGENT_GONE) {
      // The process exited, or died by a signal: its threads ended with it, the same way.
      const signal = this.process.deathSignal;
      const state = signal === SIGSEGV ? 'segv' : signal === SIGBUS ? 'sigbus' : 'done';
      this.final = {
        state,
        reads: [],
        ...(state === 'done' ? {} : { signal: { signal, address: 0, siCode: 0 } }),
        errno: 0,
        faults: 0,
        returns: [],
        children: [],
      };
    } else if (reply[0] === 1 && reply[9] !== null) {
      const pids: number[] = [];
      const final = decodeResult(reply[9], pids);
      this.final = {
        ...final,
        children: pids.map((_, i) => this.process.takeChild(this.index, i, this.keep)),
      };
    } else {
      return null;
    }
    this.process.owner.threads.delete(this);
    return this.final;
  }

  async join(): Promise<ThreadResult> {
    for (let round = 0; ; round++) {
      const result = this.result();
      if (result !== null) return result;
      await new Promise<void>((resolve) =>
        round < 16 ? setImmediate(resolve) : setTimeout(resolve, Math.min(round - 15, 10)),
      );
    }
  }
}

export class RemoteProcessBackend implements ProcessBackend {
  private exited = false;
  /** The signal that ended the agent when it did not exit on request (0 if none or unknown). */
  deathSignal = 0;
  /** Why the agent is gone when it did not exit on request (crashed, hung), or null. */
  private death: string | null = null;
  /** The descriptors the program has open here: a fork access's child keeps them. */
  private readonly fds = new Set<number>();
  /** Set once a userfaultfd asked for FORK events: a fork may then sleep (see RunFork in native/threads.cc). */
  private forkEvents = false;

  constructor(
    readonly owner: RemoteOwner,
    private readonly addon: NativeAddon,
    readonly pid: number,
    private readonly socket: number,
  ) {}

  /** One request to the agent (AGENT_GONE once the process has exited, crashed or hung). */
  agent(op: number, args: readonly number[], data: Uint8Array | null = null): NativeAgentReply {
    if (this.exited) return [AGENT_GONE, 0, 0, 0, 0, 0, 0, 0, 0, null, -1];
    const reply = this.addon.agentCall(this.socket, this.pid, op, args, data, this.owner.agentTimeoutMs);
    if (reply[0] === AGENT_HUNG) {
      this.gone(
        `process ${this.pid} (faultline_agent) did not answer ${OP_NAMES.get(op) ?? op} within ` +
          `${this.owner.agentTimeoutMs} ms; it was killed`,
      );
      reply[0] = AGENT_GONE;
    } else if (reply[0] === AGENT_GONE && !this.exited) {
      this.gone(`process ${this.pid} (faultline_agent) died serving ${OP_NAMES.get(op) ?? op}`);
    }
    return reply;
  }

  /** The socket is closed and the process killed (if it still runs) and reaped; `why` if it did not exit on request. */
  private gone(why: string | null): void {
    if (this.exited) return;
    this.exited = true;
    this.addon.close(this.socket);
    // Only a child of this process is killed: another process's pid may already be reused.
    let status = this.addon.reapStatus(this.pid, why === null);
    if (status === 0) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
      status = this.addon.reapStatus(this.pid, true);
    }
    if (why === null) return;
    let how = '';
    if (typeof status !== 'number') this.deathSignal = status[2];
    if (typeof status !== 'number')
      how = status[2] !== 0 ? `: killed by ${signalName(status[2])}` : `: exit status ${status[1]}`;
    this.death = `${why}${how}`;
  }

  /** The child a fork access of thread `index` made, with the descriptors it inherited. */
  takeChild(index: number, child: number, keep: readonly number[]): ProcessBackend {
    const reply = this.agent(OP.takeChild, [index, child]);
    if (reply[0] === AGENT_GONE) this.call('fork', OP.takeChild, []);
    check('fork', reply[0]);
    const adopted = this.owner.adopt(reply[0], reply[10]);
    if (adopted instanceof RemoteProcessBackend) {
      for (const fd of keep) adopted.fds.add(fd);
      adopted.forkEvents = this.forkEvents;
    }
    return adopted;
  }

  private opened(fd: number): number {
    this.fds.add(fd);
    return fd;
  }

  /** A system call in the process: its result, or a KernelError (ESRCH once it has exited). */
  private call(name: string, op: number, args: readonly number[], data: Uint8Array | null = null): number {
    const reply = this.agent(op, args, data);
    const result = reply[0];
    if (result === AGENT_GONE) {
      if (this.death !== null) throw new AgentDiedError(`${name}: ${this.death}`);
      throw new KernelError({ errno: ESRCH, syscall: name, reason: `process ${this.pid} has exited` });
    }
    if (result === AGENT_WOULD_SLEEP) throw sleepsError(name);
    return check(name, result);
  }

  mmap(args: MmapArgs): number {
    return this.call('mmap', OP.mmap, [
      args.address,
      args.length,
      args.prot,
      args.flags,
      args.fd,
      args.offset,
    ]);
  }

  munmap(address: number, length: number): void {
    this.call('munmap', OP.munmap, [address, length]);
  }

  mprotect(address: number, length: number, prot: number): void {
    this.call('mprotect', OP.mprotect, [address, length, prot]);
  }

  memfdCreate(name: string, flags: number): number {
    return this.opened(this.call('memfd_create', OP.memfdCreate, [flags], encoder.encode(name)));
  }

  reopen(fd: number, accessMode: number): number {
    return this.opened(
      this.call('open', OP.open, [accessMode | O_CLOEXEC], encoder.encode(`/proc/self/fd/${fd}`)),
    );
  }

  ftruncate(fd: number, length: number): void {
    this.call('ftruncate', OP.ftruncate, [fd, length]);
  }

  pread(fd: number, length: number, offset: number): Uint8Array {
    const reply = this.agent(OP.pread, [fd, length, offset]);
    if (reply[0] === AGENT_GONE) this.call('pread', OP.pread, []);
    check('pread', reply[0]);
    return reply[9] === null ? new Uint8Array(0) : new Uint8Array(reply[9]);
  }

  pwrite(fd: number, data: Uint8Array, offset: number): number {
    return this.call('pwrite', OP.pwrite, [fd, offset], data);
  }

  write(fd: number, data: Uint8Array): number {
    return this.call('write', OP.write, [fd], data);
  }

  lseek(fd: number, offset: number, whence: number): number {
    return this.call('lseek', OP.lseek, [fd, offset, whence]);
  }

  fallocate(fd: number, mode: number, offset: number, length: number): void {
    this.call('fallocate', OP.fallocate, [fd, mode, offset, length]);
  }

  close(fd: number): void {
    this.call('close', OP.close, [fd]);
    this.fds.delete(fd);
  }

  userfaultfd(flags: number): number {
    return this.opened(this.call('userfaultfd', OP.userfaultfd, [flags]));
  }

  open(path: string, flags: number): number {
    checkDevice(path);
    return this.opened(this.call('open', OP.open, [flags], encoder.encode(path)));
  }

  ioctl(fd: number, request: number, arg: Uint8Array | number | null): number {
    const name = `ioctl(${ioctlName(request)})`;
    const kind = arg instanceof Uint8Array ? 0 : typeof arg === 'number' ? 1 : 2;
    const reply = this.agent(
      OP.ioctl,
      [fd, request >>> 0, kind, typeof arg === 'number' ? arg : 0],
      kind === 0 ? (arg as Uint8Array) : null,
    );
    if (reply[0] === AGENT_GONE) this.call(name, OP.ioctl, []);
    // The kernel writes the struct back even when the call fails (result fields, a zeroed uffdio_api).
    if (arg instanceof Uint8Array && reply[9] !== null) arg.set(reply[9].subarray(0, arg.byteLength));
    if (reply[0] === AGENT_WOULD_SLEEP && request >>> 0 === UFFDIO_COPY) {
      throw new CopySleepsError(
        `${name} sleeps in the kernel: its source faulted on a userfaultfd-registered range, and Linux puts ` +
          'the caller to sleep until that fault is resolved (the model, whose caller cannot sleep, answers EFAULT)',
      );
    }
    const result = check(name, reply[0]);
    if (FD_IOCTLS.has(request >>> 0)) this.fds.add(result);
    if (request >>> 0 === UFFDIO_API && arg instanceof Uint8Array && arg.byteLength >= 16) {
      const features = new DataView(arg.buffer, arg.byteOffset, arg.byteLength).getUint32(8, true);
      if ((features & UFFD_FEATURE_EVENT_FORK) !== 0) this.forkEvents = true;
    }
    return result;
  }

  read(fd: number, count: number): Uint8Array {
    const reply = this.agent(OP.read, [fd, count]);
    if (reply[0] === AGENT_GONE) this.call('read', OP.read, []);
    check('read', reply[0]);
    return reply[9] === null ? new Uint8Array(0) : new Uint8Array(reply[9]);
  }

  poll(fd: number): number {
    const result = this.agent(OP.poll, [fd])[0];
    return result < 0 ? 0x20 : result;
  }

  async waitReadable(fd: number): Promise<void> {
    for (let round = 0; this.poll(fd) === 0 && !this.exited; round++) {
      await new Promise<void>((resolve) =>
        round < 16 ? setImmediate(resolve) : setTimeout(resolve, Math.min(round - 15, 10)),
      );
    }
  }

  readMemory(address: number, length: number): Uint8Array {
    const reply = this.agent(OP.readMemory, [address, length]);
    if (reply[0] === AGENT_GONE) this.call('read', OP.readMemory, []);
    if (reply[0] !== 0) throw accessError(reply[0], reply[1], reply[2], reply[3]);
    return reply[9] === null ? new Uint8Array(length) : new Uint8Array(reply[9]);
  }

  writeMemory(address: number, data: Uint8Array): void {
    const reply = this.agent(OP.writeMemory, [address], data);
    if (reply[0] === AGENT_GONE) this.call('write', OP.writeMemory, []);
    if (reply[0] !== 0) throw accessError(reply[0], reply[1], reply[2], reply[3]);
  }

  /**
   * The program is read to the end here: it must be finite. A fork access makes a child that runs
   * the agent too and keeps the descriptors the program opened here.
   */
  spawnThread(program: Iterable<ThreadAccess>, name = ''): ThreadBackend {
    const options: ForkOptions = { keep: [...this.fds], eventFork: this.forkEvents };
    const ops = nativeOps(program, () => options);
    const reply = this.agent(OP.spawn, [], encodeOps(ops));
    if (reply[0] === AGENT_GONE) this.call('clone', OP.spawn, []);
    check('clone', reply[0]);
    const thread = new RemoteThread(this, reply[0], reply[1], name, options.keep);
    this.owner.threads.add(thread);
    return thread;
  }

  madvise(address: number, length: number, advice: number): void {
    this.call('madvise', OP.madvise, [address, length, advice]);
  }

  mremap(...args: MremapArgs): number {
    return this.call('mremap', OP.mremap, [...args]);
  }

  /** fork(2) from a thread of the agent; with EVENT_FORK it sleeps until the event is read: use a thread's fork access then. */
  fork(): ProcessBackend {
    const thread = this.spawnThread([{ kind: 'syscall', call: 'fork', args: [] }], 'fork');
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (let round = 0; thread.state() === 'running'; round++)
      Atomics.wait(pause, 0, 0, round < 100 ? 0.05 : 1);
    const result = thread.result();
    if (result === null) throw sleepsError('fork');
    check('fork', result.returns[0] ?? -ENOSYS);
    return result.children[0]!;
  }

  signalThread(thread: ThreadBackend, signal: number): void {
    if (!(thread instanceof RemoteThread)) throw new TypeError('signalThread: not a thread of this process');
    if (thread.result() !== null) return;
    this.call('tgkill', OP.threadSignal, [thread.index, signal]);
  }

  /** exit_group: the agent exits, its threads end, its descriptors close. */
  exit(): void {
    if (this.exited) return;
    const reply = this.addon.agentCall(this.socket, this.pid, OP.exit, [], null, this.owner.agentTimeoutMs);
    this.gone(
      reply[0] === AGENT_HUNG ? `process ${this.pid} (faultline_agent) did not exit; it was killed` : null,
    );
    for (const thread of [...this.owner.threads]) {
      if (thread instanceof RemoteThread && thread.belongsTo(this)) thread.result();
    }
  }

  get hasExited(): boolean {
    return this.exited;
  }

  pagemap(address: number, pages: number): PageInfo[] {
    const reply = this.agent(OP.pagemap, [address, pages]);
    if (reply[0] === AGENT_GONE) this.call('pread(/proc/pid/pagemap)', OP.pagemap, []);
    check('pread(/proc/pid/pagemap)', reply[0]);
    return decodePagemap(reply[9] ?? new Uint8Array(pages * 8), pages, this.owner.zeroPagePfn());
  }

  vmas(start: number, end: number): VmaInfo[] {
    if (this.exited) return [];
    return smapsVmas(this.pid, start, end);
  }
}
