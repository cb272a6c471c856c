/**
 * Parallel vCPUs: simulated threads whose user-mode accesses run on worker
 * threads, so a guest's memory accesses and the userfaultfd handler (on the
 * main thread) use separate cores.
 *
 * The line is where hardware and kernel divide the work. A vCPU
 * (`vcpu-worker.js`) is the hardware: it walks its program through a
 * translation cache (a direct-mapped TLB in a SharedArrayBuffer) and touches
 * the frames, which `PhysicalMemory` keeps on SharedArrayBuffers. Everything
 * else is the kernel, on the main thread and single-threaded as before: a TLB
 * miss, a write through a read-only entry, a kernel-mode access or a syscall
 * traps (a message to the main thread; the worker sleeps in Atomics.wait) and
 * runs here as an access of the thread's `Task` through the normal path —
 * fault handling, userfaultfd, sleeping on the handler, signals — after which
 * the kernel refills the TLB from the page table and wakes the vCPU. The TLB
 * is software-refilled (MIPS-style): the vCPU never reads a page table.
 *
 * Shootdown: every page-table write goes through SparseArray.set/setFlags,
 * whose `onWrite` hook is set on the page table of an mm with vCPUs. It
 * invalidates the entry in each vCPU's TLB and, if one was cached, waits
 * until that vCPU is not inside a fast-path access (its SEQ word is even or
 * has moved on) — the IPI and its acknowledgement — before the change is
 * made. A vCPU publishes SEQ before it reads the TLB and the kernel reads SEQ
 * after it invalidated (all Atomics, sequentially consistent), so either the
 * vCPU sees the invalid entry and traps, or its access finishes against the
 * old frame before the kernel goes on. Frames freed by a zap are reused only
 * by a later allocation on the main thread, after the shootdown.
 *
 * Determinism is lost: which vCPU runs when, and so the interleaving of
 * faults, depends on real time. The seed still drives the kernel's scheduler
 * among the tasks that are in the kernel at once.
 */

import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import type { ModelKernel } from '../kernel.ts';
import type { AddressSpace } from '../mm/mm.ts';
import { PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_WRITE, PTE_ZERO } from '../mm/pagetable.ts';
import type { ModelProcess } from '../process.ts';
import { type Access, Task } from '../task.ts';
import {
  type ArenaMessage,
  CTL_BELL,
  CTL_EXITED,
  CTL_FAST,
  CTL_LOG_COUNT,
  CTL_NAP,
  CTL_REPLY,
  CTL_SEQ,
  CTL_STOP,
  CTL_TRAP_ACCESS,
  CTL_TRAP_DONE,
  CTL_TRAPS,
  CTL_WAIT_US,
  CTL_WORDS,
  encodeProgram,
  LOG_ENTRIES,
  REPLY_KILLED,
  REPLY_RESUME,
  TLB_ENTRIES,
  TLB_INVALID,
  TLB_WRITABLE,
  TRAP_FLUSH,
  VCPU_LAYOUT,
} from './layout.ts';

const PAGE = 4096;
const TLB_MASK = TLB_ENTRIES - 1;
/** Pages of an access's remainder the kernel refills after a trap (present ones only). */
const REFILL_PAGES = 64;
/** Busy-wait iterations before the kernel naps while a vCPU finishes an access. */
const SPINS_BEFORE_NAP = 2000;

const WORKER_URL = new URL('./vcpu-worker.js', import.meta.url);

/** Atomics.waitAsync (ES2024; the project's lib is ES2023). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      array: Int32Array,
      index: number,
      value: number,
    ): { async: false; value: string } | { async: true; value: Promise<string> };
  }
).waitAsync;

/** Workers started and not yet exited, over the whole process (tests check it drops to 0). */
let liveWorkers = 0;
const exitWaiters: Array<() => void> = [];

export function liveVcpuWorkers(): number {
  return liveWorkers;
}

/** Resolves when every vCPU worker of this process has exited. */
export function allVcpuWorkersExited(): Promise<void> {
  if (liveWorkers === 0) return Promise.resolve();
  return new Promise((resolve) => exitWaiters.push(resolve));
}

export interface VcpuStats {
  /** Page spans the vCPUs did from their TLBs, without the kernel. */
  readonly fastSpans: number;
  /** Traps to the kernel: TLB misses and permission upgrades, syscalls, full read logs, the program's end. */
  readonly traps: number;
  /** Time the vCPUs spent waiting for the kernel's replies to their traps, in milliseconds. */
  readonly trapWaitMs: number;
  /** TLB entries invalidated by page-table changes. */
  readonly shootdowns: number;
  /** Shootdowns that found the vCPU inside an access and waited for it. */
  readonly shootdownWaits: number;
}

/** What the kernel is running for a vCPU after a trap. */
interface TrapInKernel {
  readonly access: Access;
  /** A page span of a user access (else a whole kernel-mode access or syscall). */
  readonly span: boolean;
  /** Pages the refill looks at: [firstVpn, endVpn). */
  readonly firstVpn: number;
  readonly endVpn: number;
}

class Vcpu {
  readonly task: Task;
  private readonly ctl: Int32Array;
  private readonly tlb: Int32Array;
  private readonly data: Uint8Array;
  private readonly log: Int32Array;
  private readonly worker: Worker;
  private readonly chunkPort: MessagePort;
  private readonly arenaPort: MessagePort;
  /** The vCPU's read arenas, by id, as announced on the arena port. */
  private readonly arenas: Uint8Array[] = [];
  /** The last BELL value handled. */
  private bell = 0;
  private chunksSent: number;
  /** The access handed to the kernel at the next `program.next()`. */
  private pending: Access | null = null;
  private inKernel: TrapInKernel | null = null;
  private ended = false;
  /** False once the thread has ended: no more shootdowns, the worker is going. */
  attached = true;
  shootdowns = 0;
  shootdownWaits = 0;

  constructor(
    private readonly cpus: ParallelCpus,
    readonly process: ModelProcess,
    private readonly program: readonly Access[],
    name: string,
  ) {
    const kernel = cpus.kernel;
    this.task = new Task(kernel.allocateTid(), process, { next: () => this.next() }, name);
    this.task.state = 'user';
    this.task.exitCallbacks.push(() => this.stop());
    this.ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
    this.tlb = new Int32Array(new SharedArrayBuffer(TLB_ENTRIES * 2 * 4)).fill(TLB_INVALID);
    this.data = new Uint8Array(new SharedArrayBuffer(PAGE));
    this.log = new Int32Array(new SharedArrayBuffer(LOG_ENTRIES * 3 * 4));
    const memory = kernel.memory;
    const chunks: Uint8Array[] = [];
    for (let index = 0; index < memory.chunkCount; index++) chunks.push(memory.chunk(index));
    if (chunks.length > 0 && !(chunks[0]!.buffer instanceof SharedArrayBuffer)) {
      throw new Error('parallel vCPUs need the kernel memory option `shared`');
    }
    this.chunksSent = chunks.length;
    const chunkChannel = new MessageChannel();
    const arenaChannel = new MessageChannel();
    this.chunkPort = chunkChannel.port1;
    this.arenaPort = arenaChannel.port1;
    this.worker = new Worker(WORKER_URL, {
      execArgv: [],
      name: `vcpu ${this.task.tid}${name === '' ? '' : ` ${name}`}`,
      workerData: {
        program: encodeProgram(program),
        ctlBuffer: this.ctl.buffer,
        tlbBuffer: this.tlb.buffer,
        dataBuffer: this.data.buffer,
        logBuffer: this.log.buffer,
        chunks,
        chunkPort: chunkChannel.port2,
        arenaPort: arenaChannel.port2,
        layout: VCPU_LAYOUT,
      },
      transferList: [chunkChannel.port2, arenaChannel.port2],
    });
    liveWorkers++;
    void this.listen();
    this.worker.on('error', (error) => {
      // A bug in the vCPU: end the thread and surface the error.
      if (!this.task.finished) cpus.kernel.finishTask(this.task, 'done');
      queueMicrotask(() => {
        throw error;
      });
    });
    this.worker.on('exit', () => {
      this.attached = false;
      this.chunkPort.close();
      this.arenaPort.close();
      if (--liveWorkers === 0) for (const resolve of exitWaiters.splice(0)) resolve();
    });
  }

  get running(): boolean {
    return this.task.state === 'user' && !this.ended;
  }

  get fastSpans(): number {
    return Atomics.load(this.ctl, CTL_FAST);
  }

  get traps(): number {
    return Atomics.load(this.ctl, CTL_TRAPS);
  }

  get trapWaitMs(): number {
    return Atomics.load(this.ctl, CTL_WAIT_US) / 1000;
  }

  /** Waits for the vCPU's doorbell (on the event loop, without blocking the kernel) until it stops. */
  private async listen(): Promise<void> {
    while (this.attached) {
      const wait = waitAsync(this.ctl, CTL_BELL, this.bell);
      if (wait.async) await wait.value;
      const bell = Atomics.load(this.ctl, CTL_BELL);
      if (bell === this.bell || !this.attached) continue;
      this.bell = bell;
      this.onTrap();
    }
  }

  /** The reads the vCPU completed since its last trap, as views of its arenas. */
  private takeReads(): void {
    const count = this.ctl[CTL_LOG_COUNT]!;
    const log = this.log;
    for (let entry = 0; entry < count; entry++) {
      const id = log[entry * 3]!;
      while (this.arenas[id] === undefined) {
        const received = receiveMessageOnPort(this.arenaPort);
        if (received === undefined)
          throw new Error(`vcpu ${this.task.tid}: read arena ${id} was not announced`);
        const message = received.message as ArenaMessage;
        this.arenas[message.id] = message.arena;
      }
      const offset = log[entry * 3 + 1]!;
      this.task.reads.push(this.arenas[id]!.subarray(offset, offset + log[entry * 3 + 2]!));
    }
  }

  /** A trap (or the end of the program) rang: the thread enters the kernel. */
  private onTrap(): void {
    const task = this.task;
    this.takeReads();
    if (task.finished) {
      this.reply(REPLY_KILLED);
      return;
    }
    const index = this.ctl[CTL_TRAP_ACCESS]!;
    if (index === TRAP_FLUSH) {
      this.reply(REPLY_RESUME);
      return;
    }
    if (index >= this.program.length) {
      this.ended = true;
    } else {
      const access = this.program[index]!;
      const done = this.ctl[CTL_TRAP_DONE]!;
      if (access.kind === 'syscall' || access.kernel === true) {
        this.pending = access;
        this.inKernel = { access, span: false, firstVpn: 0, endVpn: 0 };
      } else {
        const at = access.address + done;
        const length = access.kind === 'read' ? access.length : access.data.byteLength;
        const span = Math.min(length - done, PAGE - (at % PAGE));
        const sub: Access =
          access.kind === 'read'
            ? { kind: 'read', address: at, length: span }
            : { kind: 'write', address: at, data: access.data.subarray(done, done + span) };
        const firstVpn = Math.floor(at / PAGE);
        const endVpn = Math.min(Math.ceil((access.address + length) / PAGE), firstVpn + REFILL_PAGES);
        this.pending = sub;
        this.inKernel = { access: sub, span: true, firstVpn, endVpn };
      }
    }
    task.state = 'runnable';
    this.cpus.kernel.enqueue(task);
    this.cpus.trapped();
  }

  /**
   * The task's program as the kernel sees it: the access the vCPU trapped
   * for, then (once the kernel has run it) a return to user mode.
   */
  private next(): IteratorResult<Access> {
    const pending = this.pending;
    if (pending !== null) {
      this.pending = null;
      return { done: false, value: pending };
    }
    if (this.inKernel !== null) this.returnToUser(this.inKernel);
    if (this.ended) return { done: true, value: undefined };
    this.task.state = 'user';
    return { done: true, value: undefined };
  }

  private returnToUser(trap: TrapInKernel): void {
    this.inKernel = null;
    if (trap.span && trap.access.kind === 'read') {
      // The span's bytes go back through the data slot, not into the thread's reads.
      const bytes = this.task.reads.pop()!;
      this.data.set(bytes);
    }
    this.refill(trap.firstVpn, trap.endVpn);
    this.sendNewChunks();
    this.reply(REPLY_RESUME);
  }

  /** Loads the TLB with the present entries of [firstVpn, endVpn) (the vCPU is asleep). */
  private refill(firstVpn: number, endVpn: number): void {
    const table = this.process.mm.pageTable;
    const tlb = this.tlb;
    for (let vpn = firstVpn; vpn < endVpn; vpn++) {
      const flags = table.flagsAt(vpn);
      if ((flags & (PTE_PRESENT | PTE_PROTNONE)) !== PTE_PRESENT) continue;
      const zero = (flags & PTE_ZERO) !== 0;
      const pfn = zero ? 0 : table.valueAt(vpn);
      // Writable only when a write needs no fault: write permission and already dirty.
      const writable = !zero && (flags & PTE_WRITE) !== 0 && (flags & PTE_DIRTY) !== 0;
      const slot = (vpn & TLB_MASK) << 1;
      tlb[slot + 1] = pfn * 2 + (writable ? TLB_WRITABLE : 0);
      Atomics.store(tlb, slot, Math.floor(vpn / TLB_ENTRIES));
    }
  }

  private sendNewChunks(): void {
    const memory = this.cpus.kernel.memory;
    while (this.chunksSent < memory.chunkCount) {
      const index = this.chunksSent++;
      this.chunkPort.postMessage({ index, chunk: memory.chunk(index) });
    }
  }

  private reply(value: number): void {
    Atomics.store(this.ctl, CTL_REPLY, value);
    Atomics.notify(this.ctl, CTL_REPLY);
  }

  /** Shootdown of `vpn`: invalidate a cached translation and wait for an access using it. */
  invalidate(vpn: number): void {
    const slot = (vpn & TLB_MASK) << 1;
    // Only the kernel writes tags, so a plain read sees the current one.
    if (this.tlb[slot] !== Math.floor(vpn / TLB_ENTRIES)) return;
    Atomics.store(this.tlb, slot, TLB_INVALID);
    this.shootdowns++;
    this.quiesce();
  }

  /** Waits until the vCPU is outside any fast-path access it was in. */
  private quiesce(): void {
    const ctl = this.ctl;
    const seq = Atomics.load(ctl, CTL_SEQ);
    if (seq % 2 === 0) return;
    this.shootdownWaits++;
    let spins = 0;
    while (Atomics.load(ctl, CTL_SEQ) === seq && Atomics.load(ctl, CTL_EXITED) === 0) {
      // The worker may have been descheduled inside the access: nap instead of burning the core.
      if (++spins > SPINS_BEFORE_NAP) Atomics.wait(ctl, CTL_NAP, 0, 0.05);
    }
  }

  /** The thread ended (exit callback): stop the vCPU before anything is torn down. */
  private stop(): void {
    Atomics.store(this.ctl, CTL_STOP, 1);
    this.quiesce();
    // From here the vCPU starts no access; wake it if it sleeps on a trap.
    this.reply(REPLY_KILLED);
    this.cpus.detach(this);
    this.cpus.trapped();
    // End the doorbell wait, then the worker (it has nothing left to hand over).
    Atomics.notify(this.ctl, CTL_BELL);
    void this.worker.terminate();
  }
}

/** The parallel vCPUs of one kernel. */
export class ParallelCpus {
  private readonly vcpus = new Set<Vcpu>();
  /** vCPUs by the mm whose page table they cache. */
  private readonly byMm = new Map<AddressSpace, Vcpu[]>();
  private readonly trapWaiters: Array<() => void> = [];
  private finished: VcpuStats = { fastSpans: 0, traps: 0, trapWaitMs: 0, shootdowns: 0, shootdownWaits: 0 };

  constructor(readonly kernel: ModelKernel) {}

  /**
   * Starts a thread of `process` on a vCPU of its own. The program is read to
   * the end here, so it must be finite and must not depend on what earlier
   * accesses did; its bytes are copied to the worker.
   */
  spawnThread(process: ModelProcess, program: Iterable<Access>, name = ''): Task {
    const vcpu = new Vcpu(this, process, Array.from(program), name);
    process.tasks.push(vcpu.task);
    this.vcpus.add(vcpu);
    const mm = process.mm;
    let list = this.byMm.get(mm);
    if (list === undefined) {
      list = [];
      this.byMm.set(mm, list);
      const attached = list;
      mm.pageTable.onWrite = (vpn) => {
        for (const cpu of attached) cpu.invalidate(vpn);
      };
    }
    list.push(vcpu);
    return vcpu.task;
  }

  detach(vcpu: Vcpu): void {
    if (!this.vcpus.delete(vcpu)) return;
    vcpu.attached = false;
    this.finished = addStats(this.finished, statsOf(vcpu));
    const mm = vcpu.process.mm;
    const list = this.byMm.get(mm);
    if (list === undefined) return;
    list.splice(list.indexOf(vcpu), 1);
    if (list.length === 0) {
      this.byMm.delete(mm);
      mm.pageTable.onWrite = null;
    }
  }

  /** Resolves when a vCPU next enters the kernel or stops. */
  nextTrap(): Promise<void> {
    return new Promise((resolve) => this.trapWaiters.push(resolve));
  }

  trapped(): void {
    for (const resolve of this.trapWaiters.splice(0)) resolve();
  }

  /** Threads running in user mode on their vCPUs (neither in the kernel nor ended). */
  get running(): number {
    let count = 0;
    for (const vcpu of this.vcpus) if (vcpu.running) count++;
    return count;
  }

  /** Totals over every vCPU this kernel has run. */
  stats(): VcpuStats {
    let total = this.finished;
    for (const vcpu of this.vcpus) total = addStats(total, statsOf(vcpu));
    return total;
  }
}

function statsOf(vcpu: Vcpu): VcpuStats {
  return {
    fastSpans: vcpu.fastSpans,
    traps: vcpu.traps,
    trapWaitMs: vcpu.trapWaitMs,
    shootdowns: vcpu.shootdowns,
    shootdownWaits: vcpu.shootdownWaits,
  };
}

function addStats(a: VcpuStats, b: VcpuStats): VcpuStats {
  return {
    fastSpans: a.fastSpans + b.fastSpans,
    traps: a.traps + b.traps,
    trapWaitMs: a.trapWaitMs + b.trapWaitMs,
    shootdowns: a.shootdowns + b.shootdowns,
    shootdownWaits: a.shootdownWaits + b.shootdownWaits,
  };
}
