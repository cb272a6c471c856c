/**
 * The processes of a binary handler session: the handler binary itself
 * (started by the addon so a seccomp filter can be installed between fork
 * and exec), the throwaway connector that plays the VMM's end of
 * Firecracker's socket, and the scratch directory holding the socket, the
 * memory file and the binary's output. Everything is torn down by
 * `dispose()`, which also runs on SIGINT/SIGTERM, so neither a finding nor
 * Ctrl-C leaves a process, a descriptor or a file behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { type NativeAddon, native, nativeLoadError } from '../../host/native.ts';
import { EAGAIN } from '../../uapi/errno.ts';
import { encodeRegions, type GuestRegionUffdMapping } from '../../workloads/firecracker.ts';
import type { HandlerSession } from '../session.ts';

/** What the filter traps (binary_handler.cc). */
export const TRAP_UFFD = 1;
export const TRAP_WAITS = 2;
export const TRAP_WRITES = 4;

/** The addon's calls for handler binaries. */
export interface BinaryAddon {
  handlerSpawn(
    path: string,
    args: readonly string[],
    outFd: number,
    trap: number,
    extras?: { stdin?: number; fds?: readonly number[] },
  ): number[] | [number, string];
  notifRecv(listener: number, out: BigUint64Array): number;
  notifSend(listener: number, id: bigint, value: number, error: number, flags: number): number;
  notifWait(listener: number, pidfd: number, timeoutMs: number): number;
  notifIdValid(listener: number, id: bigint): number;
  vmRead(pid: number, address: number, into: Uint8Array): number;
  vmWrite(pid: number, address: number, from: Uint8Array): number;
  sameFile(pid: number, fd: number, ownFd: number): number;
  makePipe(blocking?: boolean): [number, number] | number;
  fileFlags(fd: number): number;
  killGroup(pid: number, signal: number): number;
  waitStatus(pid: number, block: boolean): [number, number] | number;
  /** The process-wide gate on creating scratch directories (absent in an addon built before it). */
  scratchEnter?(): boolean;
  scratchLeave?(): void;
  scratchClose?(timeoutMs: number): boolean;
  /** 2 once handlerSpawn takes { stdin, fds } (absent before). */
  readonly binarySpawnVersion?: number;
}

export function binaryAddon(): NativeAddon & BinaryAddon {
  if (native === null)
    throw new Error(`--handler: ${nativeLoadError ?? 'the native addon is not available'}`);
  const addon = native as NativeAddon & Partial<BinaryAddon>;
  if (addon.handlerSpawn === undefined)
    throw new Error(
      '--handler: the native addon predates handler binaries; rebuild it (npm run build:native)',
    );
  return addon as NativeAddon & BinaryAddon;
}

const BUILD = join(dirname(new URL(import.meta.url).pathname), '..', '..', '..', 'build', 'Release');
/** The connector executable (native/fc_connector.c). */
export const CONNECTOR_PATH: string = join(BUILD, 'faultline_fc_connector');

/** Whether `path` names a handler binary (an executable ELF file or script) rather than a module. */
export function isHandlerBinary(path: string): boolean {
  if (/\.(m?ts|m?js|cts|cjs)$/.test(path)) return false;
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    const head = readFileSync(path).subarray(0, 4);
    return (
      (head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46) ||
      head.subarray(0, 2).toString() === '#!'
    );
  } catch {
    return false;
  }
}

/** The ways a session ends that are the handler's doing: one line each. */
export class HandlerBinaryError extends Error {
  override readonly name = 'HandlerBinaryError';
}

const live = new Set<{ dispose(): void }>();
let signalsHooked = false;

/** Scratch directories are named after the process, so its main thread can find its workers' too. */
const SCRATCH_PREFIX = `faultline-handler-${process.pid}-`;

/**
 * Ctrl-C: tear every live session down, then die of the signal as before.
 * Signals reach the main thread only: it also removes the scratch
 * directories of sessions on worker threads (their binaries and connectors
 * die with the process: PR_SET_PDEATHSIG). Called when a binary handler is
 * loaded and when a session starts; a no-op on a worker thread.
 */
export function hookSignals(): void {
  if (signalsHooked || !isMainThread) return;
  signalsHooked = true;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      for (const session of [...live]) session.dispose();
      // Workers keep running until the process dies: first stop them creating directories.
      (native as Partial<BinaryAddon> | null)?.scratchClose?.(1000);
      removeScratch();
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    });
  }
}

function removeScratch(): void {
  try {
    for (const name of readdirSync(tmpdir())) {
      // A binary may still be binding its socket in there: retry a directory that is not empty yet.
      if (name.startsWith(SCRATCH_PREFIX))
        rmSync(join(tmpdir(), name), { recursive: true, force: true, maxRetries: 5, retryDelay: 10 });
    }
  } catch {
    // Nothing to remove, or not allowed to look: the signal still ends the process.
  }
}

/** A new scratch directory, unless a signal is tearing the process down (then the session fails). */
function scratchDirectory(addon: BinaryAddon): string {
  if (addon.scratchEnter?.() === false)
    throw new HandlerBinaryError('handler binary not started: faultline is exiting on a signal');
  try {
    return mkdtempSync(join(tmpdir(), SCRATCH_PREFIX));
  } finally {
    addon.scratchLeave?.();
  }
}

function describeStatus(status: number): string {
  const signal = status & 0x7f;
  if (signal === 0) return `exited with status ${(status >> 8) & 0xff}`;
  return `died on signal ${signal}${status & 0x80 ? ' (core dumped)' : ''}`;
}

export interface BinaryStart {
  readonly path: string;
  readonly args: readonly string[];
  /** TRAP_* bits, 0 for the host kernel. */
  readonly trap: number;
  /** Bytes of the memory file the handler maps. */
  readonly memory: (write: (chunk: Uint8Array) => void) => void;
}

/** A handler binary and its scratch directory. */
export class HandlerChild {
  readonly addon = binaryAddon();
  readonly dir: string;
  readonly socketPath: string;
  readonly memoryPath: string;
  readonly logPath: string;
  pid = -1;
  pidfd = -1;
  listener = -1;
  /** [exit status] once the binary has ended and been reaped. */
  status: number | null = null;
  private readonly fds = new Set<number>();
  /** The connector: its process, the write end of its stdin, the read end of its output. */
  private connector: { pid: number; input: number; output: number; status: number | null } | null = null;
  private nodeConnector: ChildProcess | null = null;
  private disposed = false;
  private exitWaiters: Array<() => void> = [];

  constructor(start: BinaryStart) {
    hookSignals();
    this.dir = scratchDirectory(this.addon);
    live.add(this);
    this.socketPath = join(this.dir, 'uffd.sock');
    this.memoryPath = join(this.dir, 'memory');
    this.logPath = join(this.dir, 'output');
    try {
      this.writeMemory(start.memory);
      // fs.openSync pairs with fs.closeSync, never the addon's close: on a worker thread Node
      // tracks such descriptors and closes them when the worker exits (trackUnmanagedFds), so one
      // closed behind its back is closed again by number then — by then another worker's listener.
      const out = openSync(this.logPath, 'w');
      try {
        const result = this.addon.handlerSpawn(
          start.path,
          [this.socketPath, this.memoryPath, ...start.args],
          out,
          start.trap,
        );
        if (result[0] === undefined || Number(result[0]) < 0) {
          const [errno, stage] = result as [number, string];
          throw new HandlerBinaryError(`handler binary ${start.path}: ${stage} failed (errno ${-errno})`);
        }
        const [pid = -1, pidfd = -1, listener = -1] = result as number[];
        this.pid = pid;
        this.pidfd = pidfd;
        this.listener = listener;
      } finally {
        closeSync(out);
      }
      this.fds.add(this.pidfd);
      if (this.listener >= 0) this.fds.add(this.listener);
      if (this.addon.waitReadable(this.pidfd, () => this.onExit()) < 0) this.onExit();
    } catch (error) {
      this.dispose();
      throw error;
    }
  }

  private writeMemory(memory: BinaryStart['memory']): void {
    const fd = openSync(this.memoryPath, 'w', 0o600);
    try {
      let offset = 0;
      memory((chunk) => {
        const written = this.addon.pwrite(fd, chunk, offset);
        if (written !== chunk.byteLength)
          throw new Error(`writing the memory file ${this.memoryPath} failed`);
        offset += chunk.byteLength;
      });
    } finally {
      closeSync(fd);
    }
  }

  private onExit(): void {
    if (this.status === null) {
      const reaped = this.addon.waitStatus(this.pid, false);
      if (typeof reaped === 'number' || reaped[0] === 0) {
        // Readable but not yet reapable cannot happen for a pidfd; be safe and look again soon.
        setTimeout(() => this.onExit(), 1);
        return;
      }
      this.status = reaped[1];
    }
    const waiters = this.exitWaiters;
    this.exitWaiters = [];
    for (const waiter of waiters) waiter();
  }

  /** Calls `callback` once the binary has ended (at once if it has). */
  onceExited(callback: () => void): void {
    if (this.status !== null) callback();
    else this.exitWaiters.push(callback);
  }

  /** Whether the binary has ended, looking at the pidfd now rather than waiting for the event loop. */
  checkExited(): boolean {
    if (this.status === null && this.pidfd >= 0 && (this.addon.poll(this.pidfd) & 1) !== 0) this.onExit();
    return this.status !== null;
  }

  get exited(): boolean {
    return this.status !== null;
  }

  /** A pipe whose read end is handed to the binary (kept here too, to recognise it). */
  pipe(): [number, number] {
    const result = this.addon.makePipe();
    if (typeof result === 'number') throw new Error(`pipe2 failed (errno ${-result})`);
    this.fds.add(result[0]);
    this.fds.add(result[1]);
    return result;
  }

  /**
   * Starts the throwaway VMM side: it connects to the handler's socket and
   * sends `json` with `fds` (uffd, then the guest_memfd) as SCM_RIGHTS.
   * Resolves once sent; rejects with the connector's own one-line reason.
   */
  connect(json: string, fds: readonly number[], timeoutMs: number): Promise<void> {
    if ((this.addon.binarySpawnVersion ?? 1) < 2) return this.connectWithNode(json, fds, timeoutMs);
    // Started by the addon as the binary is (clone, not fork: see binary_handler.cc), with a
    // blocking stdin it holds the connection on, and stdout and stderr into one pipe.
    const [inRead, inWrite] = this.ownPipe(true);
    const [outRead, outWrite] = this.ownPipe(false);
    let result: number[] | [number, string];
    try {
      result = this.addon.handlerSpawn(
        CONNECTOR_PATH,
        [this.socketPath, String(timeoutMs), json],
        outWrite,
        0,
        { stdin: inRead, fds },
      );
    } finally {
      this.closeOwn(inRead);
      this.closeOwn(outWrite);
    }
    if (result[0] === undefined || Number(result[0]) < 0) {
      const [errno, stage] = result as [number, string];
      return Promise.reject(
        new HandlerBinaryError(`the VMM connector did not start: ${stage} failed (errno ${-errno})`),
      );
    }
    const [pid = -1, pidfd = -1] = result as number[];
    this.fds.add(pidfd);
    const connector = { pid, input: inWrite, output: outRead, status: null as number | null };
    this.connector = connector;
    return new Promise((resolve, reject) => {
      const output = new ConnectorOutput(this.addon, outRead);
      let settled = false;
      const onOutput = (): void => {
        if (this.disposed || settled) return;
        const open = output.drain();
        if (output.sent) {
          settled = true;
          resolve();
        } else if (open && this.addon.waitReadable(outRead, onOutput) < 0) onExit();
      };
      const onExit = (): void => {
        if (this.disposed || settled) return;
        settled = true;
        output.drain();
        const reaped = this.addon.waitStatus(pid, true);
        if (typeof reaped !== 'number') connector.status = reaped[1];
        if (output.sent) {
          resolve();
          return;
        }
        const reason =
          output.lastLine() || (connector.status === null ? 'it ended' : describeStatus(connector.status));
        reject(new HandlerBinaryError(`the VMM's handshake with the handler failed: ${reason}`));
      };
      if (this.addon.waitReadable(outRead, onOutput) < 0 || this.addon.waitReadable(pidfd, onExit) < 0)
        onExit();
    });
  }

  /**
   * The connector by child_process.spawn, for an addon built before handlerSpawn took
   * { stdin, fds } (worktrees and installs keep a copied build/): a fork, slower, same result.
   */
  private connectWithNode(json: string, fds: readonly number[], timeoutMs: number): Promise<void> {
    const stdio: Array<'pipe' | number> = ['pipe', 'pipe', 'pipe', ...fds];
    const child = spawn(CONNECTOR_PATH, [this.socketPath, String(timeoutMs), json], { stdio });
    this.nodeConnector = child;
    return new Promise((resolve, reject) => {
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      child.stdout?.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('sent')) resolve();
      });
      child.on('error', (error) =>
        reject(new HandlerBinaryError(`the VMM connector did not start: ${error.message}`)),
      );
      child.on('exit', () => {
        const reason = stderr.trim().split('\n').pop() || 'it ended';
        reject(new HandlerBinaryError(`the VMM's handshake with the handler failed: ${reason}`));
      });
    });
  }

  /** A close-on-exec pipe whose ends dispose() closes unless closeOwn() did. */
  private ownPipe(blocking: boolean): [number, number] {
    const result = this.addon.makePipe(blocking);
    if (typeof result === 'number') throw new HandlerBinaryError(`pipe2 failed (errno ${-result})`);
    this.fds.add(result[0]);
    this.fds.add(result[1]);
    return result;
  }

  private closeOwn(fd: number): void {
    if (this.fds.delete(fd)) this.addon.close(fd);
  }

  /** The last lines the binary printed (stdout and stderr), for a finding's message. */
  output(lines = 3): string {
    try {
      const text = readFileSync(this.logPath, 'utf8').trim();
      if (text === '') return '';
      return text.split('\n').slice(-lines).join(' | ').slice(0, 400);
    } catch {
      return '';
    }
  }

  /** "exited with status 1 (fc_handler: ...)" */
  describeExit(): string {
    const output = this.output();
    return `${this.status === null ? 'is running' : describeStatus(this.status)}${output === '' ? '' : ` — it printed: ${output}`}`;
  }

  /** " (state S, wchan do_epoll_wait)": where the binary is, from /proc, or '' once it is gone. */
  where(): string {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '?';
      const wchan = readFileSync(`/proc/${this.pid}/wchan`, 'utf8').trim() || '-';
      return ` (state ${state}, wchan ${wchan})`;
    } catch {
      return '';
    }
  }

  /** SIGKILLs the binary's process group and reaps it: its wait status (9 when our kill ended it). */
  kill(): number | null {
    if (this.pid > 0 && this.status === null) {
      this.addon.killGroup(this.pid, 9);
      const reaped = this.addon.waitStatus(this.pid, true);
      if (typeof reaped !== 'number') this.status = reaped[1];
    }
    return this.status;
  }

  /** Kills and reaps everything, closes every descriptor, removes the directory. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    live.delete(this);
    this.kill();
    const child = this.nodeConnector;
    if (child !== null && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    child?.stdin?.destroy();
    child?.stdout?.destroy();
    child?.stderr?.destroy();
    const connector = this.connector;
    if (connector !== null && connector.status === null) {
      this.addon.killGroup(connector.pid, 9);
      const reaped = this.addon.waitStatus(connector.pid, true);
      connector.status = typeof reaped === 'number' ? -1 : reaped[1];
    }
    for (const fd of this.fds) this.addon.close(fd);
    this.fds.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface BinaryHandlerOptions {
  readonly path: string;
  /** Appended after SOCKET_PATH MEMORY_FILE_PATH (what follows `--`). */
  readonly args?: readonly string[];
  /** Wall time the binary may go without a trapped call while the guest waits (default 10 s). */
  readonly timeoutMs?: number;
  /** Called once with what the run learned (calls served, threads seen). */
  readonly report?: (report: BinaryRunReport) => void;
}

export interface BinaryRunReport {
  /** Trapped calls answered. */
  readonly calls: number;
  /**
   * A hash of the answered calls in order (call number, ioctl request, result):
   * equal for two runs that replayed the same way.
   */
  readonly digest: string;
  /** Threads of the binary whose uffd calls were emulated: above 1, their interleaving is the host's. */
  readonly threads: number;
}

export const DEFAULT_HANDLER_TIMEOUT_MS = 10_000;

function chunks(
  process: HandlerSession['process'],
  fd: number,
  length: number,
  write: (chunk: Uint8Array) => void,
): void {
  const step = 4 << 20;
  for (let offset = 0; offset < length; offset += step)
    write(process.pread(fd, Math.min(step, length - offset), offset));
}

function memoryLength(regions: readonly GuestRegionUffdMapping[]): number {
  return regions.reduce((end, region) => Math.max(end, region.offset + region.size), 0);
}

export function regionsJson(regions: readonly GuestRegionUffdMapping[]): string {
  return new TextDecoder().decode(encodeRegions(regions));
}

/** The memory file's bytes, read from the session's descriptor, for the real file the binary maps. */
export function memoryWriter(session: HandlerSession): (write: (chunk: Uint8Array) => void) => void {
  return (write) => chunks(session.process, session.memoryFd, memoryLength(session.regions), write);
}

/** What the connector printed ("sent", or its one-line reason), read as it comes. */
class ConnectorOutput {
  private text = '';
  private readonly buffer = new Uint8Array(4096);
  private readonly decoder = new TextDecoder();

  constructor(
    private readonly addon: NativeAddon,
    private readonly fd: number,
  ) {}

  /** Reads what is there; false once the connector's end is closed (EOF or an error). */
  drain(): boolean {
    for (;;) {
      const count = this.addon.read(this.fd, this.buffer);
      if (count > 0) this.text += this.decoder.decode(this.buffer.subarray(0, count), { stream: true });
      else return count === -EAGAIN;
    }
  }

  get sent(): boolean {
    return /^sent$/m.test(this.text);
  }

  lastLine(): string {
    const lines = this.text.split('\n').map((line) => line.trim());
    return lines.filter((line) => line !== '' && line !== 'sent').pop() ?? '';
  }
}
