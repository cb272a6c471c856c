/**
 * A handler binary as a handler module: `binaryHandler(...)` returns a
 * `serve(session)` that starts the binary under a seccomp filter, hands it a
 * fake userfaultfd (a pipe) through a throwaway connector speaking
 * Firecracker's protocol, and answers every call the filter traps from the
 * model, through the session:
 *
 * - ioctl(fake uffd, UFFDIO_*): the struct is read from the binary
 *   (process_vm_readv), COPY's source bytes too (they are staged in the
 *   handler's model process and the struct's `src` points there), the ioctl
 *   runs on `session.uffd`, the struct is written back with its original
 *   `src`, and the errno is the model's.
 * - read(fake uffd): the model's read(2) of the userfaultfd (EAGAIN when the
 *   fd is non-blocking and nothing is there; a blocking read waits in
 *   `session.poll()`).
 * - poll/ppoll naming the fake uffd: revents from the model; with nothing
 *   ready, `session.poll(timeout)` in the model's time.
 * - write/pwrite64/lseek on the fake guest_memfd: the model's guest_memfd.
 *
 * Calls on other descriptors go on in the real kernel
 * (SECCOMP_USER_NOTIF_FLAG_CONTINUE). Each trapped call is answered before
 * the next one is received, and the model only moves inside these answers,
 * so a single-threaded binary that waits only on its uffd replays exactly.
 */
import { readFileSync } from 'node:fs';
import {
  O_NONBLOCK,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  PROT_READ,
  UFFDIO_COPY,
} from '../../uapi/constants.ts';
import { EAGAIN, EBADF, EFAULT, EINVAL, EPERM, KernelError } from '../../uapi/errno.ts';
import type { HandlerSession, Serve } from '../session.ts';
import {
  type BinaryHandlerOptions,
  DEFAULT_HANDLER_TIMEOUT_MS,
  HandlerBinaryError,
  HandlerChild,
  hookSignals,
  memoryWriter,
  regionsJson,
  TRAP_UFFD,
  TRAP_WAITS,
  TRAP_WRITES,
} from './child.ts';
import { serveOnHost } from './host.ts';

export type { BinaryHandlerOptions, BinaryRunReport } from './child.ts';

const NR_READ = 0;
const NR_WRITE = 1;
const NR_POLL = 7;
const NR_LSEEK = 8;
const NR_IOCTL = 16;
const NR_PWRITE64 = 18;
const NR_PPOLL = 271;
const NR_USERFAULTFD = 323;
const CONTINUE = 1;
/** Largest COPY source staged in one call (the kernel has no such limit; a guest page is at most 1 GiB). */
const MAX_STAGED = 1 << 30;
/** How long the Node thread sleeps in poll(2) for the binary's next call before the event loop takes over. */
const QUICK_WAIT_MS = 2;

/**
 * serve(session) for the binary at `options.path`: on the model through the
 * interception below, on the host with the session's real userfaultfd.
 */
export function binaryHandler(options: BinaryHandlerOptions): Serve {
  // Before any session: the main thread cleans up after its workers' sessions on Ctrl-C too.
  hookSignals();
  return async (session) => {
    if (session.backend === 'host') return serveOnHost(session, options);
    const gmem = session.guestMemfd !== undefined;
    const child = new HandlerChild({
      path: options.path,
      args: options.args ?? [],
      trap: TRAP_UFFD | TRAP_WAITS | (gmem ? TRAP_WRITES : 0),
      memory: memoryWriter(session),
    });
    try {
      const supervisor = new Supervisor(child, session, options.timeoutMs ?? DEFAULT_HANDLER_TIMEOUT_MS);
      await supervisor.run(regionsJson(session.regions));
      options.report?.({
        calls: supervisor.calls,
        digest: supervisor.digest.toString(16),
        threads: supervisor.threads.size,
      });
    } finally {
      child.dispose();
    }
  };
}

type Wake = 'notification' | 'exit' | 'abort' | 'timeout';

/** Serves one binary's trapped calls from the model. */
class Supervisor {
  calls = 0;
  digest = 0x811c9dc5;
  readonly threads = new Set<number>();
  private readonly addon;
  private readonly notif = new BigUint64Array(9);
  private readonly fakeUffd: number;
  private readonly fakeGmem: number = -1;
  private wake: ((reason: Wake) => void) | null = null;
  private staging = { address: 0, length: 0 };

  private readonly fileView: FileView;

  constructor(
    private readonly child: HandlerChild,
    private readonly session: HandlerSession,
    private readonly timeoutMs: number,
  ) {
    this.addon = child.addon;
    this.fileView = new FileView(child, session);
    this.fakeUffd = child.pipe()[0];
    if (session.guestMemfd !== undefined) this.fakeGmem = child.pipe()[0];
    child.onceExited(() => this.wake?.('exit'));
    session.signal.addEventListener('abort', () => this.wake?.('abort'), { once: true });
  }

  async run(json: string): Promise<void> {
    const fds = this.fakeGmem >= 0 ? [this.fakeUffd, this.fakeGmem] : [this.fakeUffd];
    // The handshake runs while calls are served: the binary's startup may already trap.
    let handshakeError: unknown = null;
    this.child.connect(json, fds, this.timeoutMs).catch((error: unknown) => {
      handshakeError = error;
      this.wake?.('exit');
    });
    for (;;) {
      if (handshakeError !== null && !this.child.exited) throw handshakeError;
      if (this.session.signal.aborted) return;
      const reason = await this.next();
      if (reason === 'abort') return;
      if (reason === 'exit') {
        if (this.session.signal.aborted) return;
        if (handshakeError !== null && !this.child.exited) throw handshakeError;
        const status = this.child.status ?? 0;
        if (status === 0) return;
        throw new HandlerBinaryError(`handler binary ${this.child.describeExit()}`);
      }
      if (reason === 'timeout') throw new HandlerBinaryError(this.timeoutMessage());
      await this.serveOne();
    }
  }

  private timeoutMessage(): string {
    const where = this.child.where();
    return (
      `handler binary made no userfaultfd call for ${this.timeoutMs / 1000} s while the guest waits: ` +
      `it is busy or blocked outside its userfaultfd${where}; killed`
    );
  }

  /** The next thing to act on: a trapped call, the binary's end, the guest's end, or the timeout. */
  private next(): Promise<Wake> {
    if (this.child.checkExited()) return Promise.resolve('exit');
    // The binary's next call usually follows within microseconds: sleep for it in poll(2) on this
    // thread (no event-loop round trip, and SYNC_WAKE_UP keeps the pair on one CPU), briefly.
    const quick = this.addon.notifWait(this.child.listener, this.child.pidfd, QUICK_WAIT_MS);
    if (quick === 1) return Promise.resolve('notification');
    if (quick === 2 && this.child.checkExited()) return Promise.resolve('exit');
    const revents = this.addon.poll(this.child.listener);
    if (revents > 0 && (revents & POLLIN) !== 0) return Promise.resolve('notification');
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (reason: Wake): void => {
        if (this.wake !== finish) return;
        this.wake = null;
        clearTimeout(timer);
        resolve(reason);
      };
      this.wake = finish;
      timer = setTimeout(() => finish('timeout'), this.timeoutMs);
      // A listener whose filter lost its last user reports POLLHUP: then only the pidfd has news.
      if (revents <= 0 || (revents & (POLLHUP | POLLERR)) === 0) {
        if (this.addon.waitReadable(this.child.listener, () => finish('notification')) < 0) finish('exit');
      }
    });
  }

  private async serveOne(): Promise<void> {
    const n = this.notif;
    const received = this.addon.notifRecv(this.child.listener, n);
    if (received < 0) {
      // ENOENT: the caller died before we looked. Yield to the event loop, where the pidfd reports it.
      await new Promise((resolve) => setImmediate(resolve));
      return;
    }
    const id = n[0] as bigint;
    const tid = Number(n[1]);
    const nr = Number(n[2]);
    this.calls++;
    let result: number;
    try {
      result = await this.emulate(tid, nr);
    } catch (error) {
      if (error instanceof KernelError) result = -error.errno;
      else throw error;
    }
    if (result !== CONTINUE_RESULT) this.threads.add(tid);
    this.mix(nr === NR_IOCTL ? this.arg(1) >>> 0 : nr);
    this.mix(result);
    if (result === CONTINUE_RESULT) this.addon.notifSend(this.child.listener, id, 0, 0, CONTINUE);
    else if (result < 0) this.addon.notifSend(this.child.listener, id, -1, result, 0);
    else this.addon.notifSend(this.child.listener, id, result, 0, 0);
  }

  private mix(value: number): void {
    // FNV-1a over the value's low and high 32 bits.
    for (const word of [value >>> 0, Math.floor(value / 2 ** 32) >>> 0]) {
      this.digest = Math.imul(this.digest ^ word, 0x01000193) >>> 0;
    }
  }

  private arg(index: number): number {
    return Number(this.notif[3 + index]);
  }

  private argInt(index: number): number {
    return Number(BigInt.asIntN(32, this.notif[3 + index] as bigint));
  }

  private isFake(tid: number, fd: number, own: number): boolean {
    return own >= 0 && fd >= 0 && this.addon.sameFile(tid, fd, own) === 1;
  }

  private async emulate(tid: number, nr: number): Promise<number> {
    switch (nr) {
      case NR_IOCTL:
        return this.isFake(tid, this.argInt(0), this.fakeUffd) ? this.ioctl(tid) : CONTINUE_RESULT;
      case NR_READ:
        return this.isFake(tid, this.argInt(0), this.fakeUffd) ? this.read(tid) : CONTINUE_RESULT;
      case NR_POLL:
        return this.poll(tid, this.argInt(2));
      case NR_PPOLL:
        return this.poll(tid, this.ppollTimeout(tid));
      case NR_USERFAULTFD:
        // Only the userfaultfd the VMM sends reaches the model; a handler's own would be the host's.
        return -EPERM;
      case NR_WRITE:
      case NR_PWRITE64:
      case NR_LSEEK:
        return this.isFake(tid, this.argInt(0), this.fakeGmem) ? this.gmemCall(tid, nr) : CONTINUE_RESULT;
      default:
        return CONTINUE_RESULT;
    }
  }

  private readBinary(tid: number, address: number, length: number): Uint8Array | null {
    const bytes = new Uint8Array(length);
    if (length === 0) return bytes;
    return this.addon.vmRead(tid, address, bytes) === length ? bytes : null;
  }

  private writeBinary(tid: number, address: number, bytes: Uint8Array): boolean {
    return bytes.byteLength === 0 || this.addon.vmWrite(tid, address, bytes) === bytes.byteLength;
  }

  private stage(bytes: Uint8Array): number {
    const process = this.session.process;
    if (this.staging.length < bytes.byteLength) {
      if (this.staging.length > 0) process.munmapIsolated(this.staging.address, this.staging.length);
      const length = Math.max(bytes.byteLength, 2 << 20);
      this.staging = { address: process.mmapIsolated(length), length };
    }
    process.write(this.staging.address, bytes);
    return this.staging.address;
  }

  private ioctl(tid: number): number {
    const request = this.arg(1) >>> 0;
    const pointer = this.arg(2);
    const size = (request >>> 16) & 0x3fff;
    const arg = this.readBinary(tid, pointer, size);
    if (arg === null) return -EFAULT;
    const view = new DataView(arg.buffer);
    let source: bigint | null = null;
    if (request === UFFDIO_COPY) {
      source = view.getBigUint64(8, true);
      const length = Number(view.getBigUint64(16, true));
      const mapped = this.fileView.translate(Number(source), length);
      if (mapped !== null) {
        view.setBigUint64(8, BigInt(mapped), true);
      } else {
        const bytes =
          length > 0 && length <= MAX_STAGED ? this.readBinary(tid, Number(source), length) : null;
        // An unreadable source stays unreadable in the model: a page the handler's process never
        // maps, at the same offset in its page.
        view.setBigUint64(8, bytes === null ? 0x10000n + (source & 0xfffn) : BigInt(this.stage(bytes)), true);
      }
    }
    let result: number;
    try {
      result = this.session.process.backend.ioctl(this.session.uffd.fd, request, arg);
    } catch (error) {
      if (!(error instanceof KernelError)) throw error;
      result = -error.errno;
    }
    if (source !== null) view.setBigUint64(8, source, true);
    // _IOC_READ: the kernel writes the struct back (results, and the partial progress of a failure).
    if (request >>> 31 === 1 && !this.writeBinary(tid, pointer, arg)) return -EFAULT;
    return result;
  }

  private nonblocking(fd: number): boolean {
    const flags = this.addon.fileFlags(fd);
    return flags >= 0 && (flags & O_NONBLOCK) !== 0;
  }

  private async read(tid: number): Promise<number> {
    const buffer = this.arg(1);
    const count = this.arg(2);
    const backend = this.session.process.backend;
    for (;;) {
      let data: Uint8Array;
      try {
        data = backend.read(this.session.uffd.fd, Math.min(count, 1 << 20));
      } catch (error) {
        if (!(error instanceof KernelError)) throw error;
        if (error.errno !== EAGAIN || this.nonblocking(this.fakeUffd)) return -error.errno;
        if (!(await this.modelPoll(-1))) return -EAGAIN;
        if (this.session.signal.aborted) return -EAGAIN;
        continue;
      }
      return this.writeBinary(tid, buffer, data) ? data.byteLength : -EFAULT;
    }
  }

  /**
   * session.poll for a trapped wait. Outside explore nothing decides that
   * the model can never wake an unbounded wait, so the handler timeout
   * (wall time) bounds it: then the binary waits on nothing that can come.
   */
  private modelPoll(timeoutMs: number): Promise<boolean> {
    const wait = this.session.poll(timeoutMs < 0 ? undefined : timeoutMs);
    if (timeoutMs >= 0) return wait;
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new HandlerBinaryError(
            `hang: the handler binary waits on its uffd with no timeout, and nothing arrived for ${this.timeoutMs / 1000} s while the guest waits`,
          ),
        );
      }, this.timeoutMs);
    });
    return Promise.race([wait, stuck]).finally(() => clearTimeout(timer));
  }

  private ppollTimeout(tid: number): number {
    const pointer = this.arg(2);
    if (pointer === 0) return -1;
    const spec = this.readBinary(tid, pointer, 16);
    if (spec === null) return Number.NaN;
    const view = new DataView(spec.buffer);
    return Number(view.getBigInt64(0, true)) * 1000 + Math.ceil(Number(view.getBigInt64(8, true)) / 1e6);
  }

  /** poll/ppoll: emulated when the set names the fake uffd, else left to the kernel. */
  private async poll(tid: number, timeoutMs: number): Promise<number> {
    const pointer = this.arg(0);
    const count = this.arg(1);
    if (count === 0 || count > 4096) return CONTINUE_RESULT;
    const fds = this.readBinary(tid, pointer, count * 8);
    if (fds === null) return CONTINUE_RESULT;
    const view = new DataView(fds.buffer);
    const ours: number[] = [];
    for (let i = 0; i < count; i++)
      if (this.isFake(tid, view.getInt32(i * 8, true), this.fakeUffd)) ours.push(i);
    if (ours.length === 0) return CONTINUE_RESULT;
    if (Number.isNaN(timeoutMs)) return -EFAULT;
    let ready = this.revents(view, count, ours);
    if (ready === 0 && timeoutMs !== 0) {
      await this.modelPoll(timeoutMs);
      ready = this.revents(view, count, ours);
    }
    return this.writeBinary(tid, pointer, fds) ? ready : -EFAULT;
  }

  /**
   * Fills in revents: the fake uffd's from the model; the binary's other
   * descriptors (its socket) are not watched and report nothing.
   */
  private revents(view: DataView, count: number, ours: readonly number[]): number {
    const mask = this.session.uffd.poll();
    let ready = 0;
    for (let i = 0; i < count; i++) {
      let revents = 0;
      if (ours.includes(i)) revents = mask & (view.getInt16(i * 8 + 4, true) | POLLERR | POLLHUP | POLLNVAL);
      view.setInt16(i * 8 + 6, revents, true);
      if (revents !== 0) ready++;
    }
    return ready;
  }

  private gmemCall(tid: number, nr: number): number {
    const process = this.session.process;
    const fd = this.session.guestMemfd;
    if (fd === undefined) return -EBADF;
    if (nr === NR_LSEEK) return process.lseek(fd, this.arg(1), this.argInt(2));
    const length = this.arg(2);
    if (length > MAX_STAGED) return -EINVAL;
    const data = this.readBinary(tid, this.arg(1), length);
    if (data === null) return -EFAULT;
    if (nr === NR_WRITE) return process.writeFile(fd, data);
    return process.pwrite(fd, data, this.arg(3));
  }
}

/** emulate()'s answer for "let the real kernel run it". */
const CONTINUE_RESULT = Number.MAX_SAFE_INTEGER;

/**
 * COPY sources inside the binary's read-only mapping of the memory file.
 * Such bytes are the file's bytes, and the file is the session's memory
 * file: the model copies them from its own read-only mapping of
 * `session.memoryFd` at the same offset, and nothing crosses the process
 * boundary. Any other source (an anonymous buffer, a writable mapping) is
 * read from the binary and staged.
 */
class FileView {
  private maps: Array<{ start: number; end: number; offset: number }> = [];
  private modelBase = -1;
  private lookups = 0;
  private refreshedAt = -Infinity;

  constructor(
    private readonly child: HandlerChild,
    private readonly session: HandlerSession,
  ) {}

  /** The model address holding the binary's [source, source + length), or null. */
  translate(source: number, length: number): number | null {
    this.lookups++;
    let found = this.find(source, length);
    // A miss re-reads the binary's maps, at most once per 256 lookups (anonymous sources miss every time).
    if (found === null && this.lookups - this.refreshedAt > 256) {
      this.refresh();
      found = this.find(source, length);
    }
    if (found === null) return null;
    if (this.modelBase < 0) {
      const length = this.session.regions.reduce((end, r) => Math.max(end, r.offset + r.size), 0);
      this.modelBase = this.session.process.mmap({ length, fd: this.session.memoryFd, prot: PROT_READ });
    }
    return this.modelBase + found;
  }

  private find(source: number, length: number): number | null {
    for (const map of this.maps) {
      if (source >= map.start && source + length <= map.end) return map.offset + (source - map.start);
    }
    return null;
  }

  private refresh(): void {
    this.refreshedAt = this.lookups;
    this.maps = [];
    let text: string;
    try {
      text = readFileSync(`/proc/${this.child.pid}/maps`, 'utf8');
    } catch {
      return;
    }
    for (const line of text.split('\n')) {
      if (!line.endsWith(` ${this.child.memoryPath}`)) continue;
      const [range = '', perms = '', offset = '0'] = line.split(/\s+/);
      if (perms.includes('w')) continue;
      const [start = '0', end = '0'] = range.split('-');
      this.maps.push({
        start: Number.parseInt(start, 16),
        end: Number.parseInt(end, 16),
        offset: Number.parseInt(offset, 16),
      });
    }
  }
}
