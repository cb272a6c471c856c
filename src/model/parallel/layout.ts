/**
 * The memory shared between the kernel (the main thread) and a parallel
 * vCPU (a worker thread), each on its own SharedArrayBuffer: a control block,
 * a translation cache (TLB), a one-page data slot (a trapped read span's
 * bytes), the read log, and the read arenas the vCPU allocates. The worker
 * (`vcpu-worker.js`, plain JavaScript) receives these numbers in its
 * workerData, so this file is the one description of the layout.
 *
 * TLB entry i (two Int32 words): the tag, vpn / TLB_ENTRIES (TLB_INVALID when
 * empty), then pfn * 2 | TLB_WRITABLE. Entry i caches vpn with vpn % TLB_ENTRIES = i.
 */

import { CHUNK_SHIFT, PAGE_SHIFT } from '../mem/physmem.ts';
import type { Access } from '../task.ts';

/** TLB entries per vCPU: direct-mapped on the low bits of the virtual page number. */
export const TLB_ENTRIES = 4096;

/**
 * Words of the control block (an Int32Array):
 * - SEQ: odd while the vCPU is inside a fast-path access (it reads the TLB
 *   and touches the frame between two increments); a shootdown waits for it.
 * - STOP: set by the kernel to stop the vCPU (its thread ended).
 * - BELL: incremented by the vCPU for each trap (the kernel waits on it with
 *   Atomics.waitAsync); TRAP_ACCESS, TRAP_DONE and LOG_COUNT describe the
 *   trap: the access index (TRAP_FLUSH: only hand over the read log; the
 *   program's length: the program ended), the bytes of it done, and the reads
 *   completed since the last trap, whose (arena, offset, length) are in the
 *   read log.
 * - REPLY: the answer to a trap, REPLY_WAIT until the kernel has one; the
 *   vCPU sleeps on it with Atomics.wait.
 * - FAST, TRAPS, WAIT_US: page spans done from the TLB, traps taken, and
 *   microseconds spent waiting for the kernel's replies (statistics, written
 *   by the vCPU only).
 * - EXITED: set by the vCPU when its loop has ended.
 * - NAP: never written; the kernel sleeps on it for a moment while it waits
 *   for a vCPU that was descheduled inside an access.
 */
export const CTL_SEQ = 0;
export const CTL_STOP = 1;
export const CTL_BELL = 2;
export const CTL_TRAP_ACCESS = 3;
export const CTL_TRAP_DONE = 4;
export const CTL_LOG_COUNT = 5;
export const CTL_REPLY = 6;
export const CTL_FAST = 7;
export const CTL_TRAPS = 8;
export const CTL_EXITED = 9;
export const CTL_NAP = 10;
export const CTL_WAIT_US = 11;
export const CTL_WORDS = 16;

/** TRAP_ACCESS of a trap that only hands the read log over (it is full). */
export const TRAP_FLUSH = -1;

export const REPLY_WAIT = 0;
/** The kernel ran what the vCPU trapped for; it goes on with the next page or access. */
export const REPLY_RESUME = 1;
/** The thread has ended (a signal, exit, or the end of its program): the vCPU stops. */
export const REPLY_KILLED = 2;

/** A TLB tag that matches no virtual page. */
export const TLB_INVALID = -1;

/** Bit 0 of a TLB value: writes allowed (the entry is writable and dirty). */
export const TLB_WRITABLE = 1;

/**
 * Completed reads are written into arenas, SharedArrayBuffers the vCPU
 * allocates and announces on its arena port; the kernel hands out views of
 * them as the thread's reads, so a read is never copied or transferred again.
 */
export const ARENA_BYTES = 4 * 1024 * 1024;
/** Entries (arena, offset, length) of the read log. */
export const LOG_ENTRIES = 4096;

/**
 * A program as the vCPU receives it: OP_WORDS float64 per access (kind,
 * address, length, offset of a write's bytes in `data`), so handing it over
 * copies two buffers instead of cloning an object per access.
 */
export const OP_WORDS = 4;
export const OP_READ = 0;
export const OP_WRITE = 1;
/** A syscall or a kernel-mode access: the kernel runs it whole. */
export const OP_KERNEL = 2;

/** The vCPU's workerData `layout`. */
export interface VcpuLayout {
  readonly pageShift: number;
  readonly chunkShift: number;
  readonly tlbEntries: number;
  readonly ctlSeq: number;
  readonly ctlStop: number;
  readonly ctlBell: number;
  readonly ctlTrapAccess: number;
  readonly ctlTrapDone: number;
  readonly ctlLogCount: number;
  readonly ctlReply: number;
  readonly ctlFast: number;
  readonly ctlTraps: number;
  readonly ctlWaitUs: number;
  readonly ctlExited: number;
  readonly replyWait: number;
  readonly replyResume: number;
  readonly replyKilled: number;
  readonly tlbWritable: number;
  readonly trapFlush: number;
  readonly arenaBytes: number;
  readonly logEntries: number;
  readonly opWords: number;
  readonly opRead: number;
  readonly opWrite: number;
  readonly opKernel: number;
}

export const VCPU_LAYOUT: VcpuLayout = {
  pageShift: PAGE_SHIFT,
  chunkShift: CHUNK_SHIFT,
  tlbEntries: TLB_ENTRIES,
  ctlSeq: CTL_SEQ,
  ctlStop: CTL_STOP,
  ctlBell: CTL_BELL,
  ctlTrapAccess: CTL_TRAP_ACCESS,
  ctlTrapDone: CTL_TRAP_DONE,
  ctlLogCount: CTL_LOG_COUNT,
  ctlReply: CTL_REPLY,
  ctlFast: CTL_FAST,
  ctlTraps: CTL_TRAPS,
  ctlWaitUs: CTL_WAIT_US,
  ctlExited: CTL_EXITED,
  replyWait: REPLY_WAIT,
  replyResume: REPLY_RESUME,
  replyKilled: REPLY_KILLED,
  tlbWritable: TLB_WRITABLE,
  trapFlush: TRAP_FLUSH,
  arenaBytes: ARENA_BYTES,
  logEntries: LOG_ENTRIES,
  opWords: OP_WORDS,
  opRead: OP_READ,
  opWrite: OP_WRITE,
  opKernel: OP_KERNEL,
};

/** An arena announcement on the arena port. */
export interface ArenaMessage {
  readonly id: number;
  readonly arena: Uint8Array;
}

export interface EncodedProgram {
  readonly ops: Float64Array;
  readonly data: Uint8Array;
}

export function encodeProgram(program: readonly Access[]): EncodedProgram {
  const ops = new Float64Array(program.length * OP_WORDS);
  let dataBytes = 0;
  for (const access of program) {
    if (access.kind === 'write' && access.kernel !== true) dataBytes += access.data.byteLength;
  }
  const data = new Uint8Array(dataBytes);
  let dataOffset = 0;
  program.forEach((access, index) => {
    const at = index * OP_WORDS;
    if (access.kind === 'syscall' || access.kernel === true) {
      ops[at] = OP_KERNEL;
      return;
    }
    ops[at + 1] = access.address;
    if (access.kind === 'read') {
      ops[at] = OP_READ;
      ops[at + 2] = access.length;
      return;
    }
    ops[at] = OP_WRITE;
    ops[at + 2] = access.data.byteLength;
    ops[at + 3] = dataOffset;
    data.set(access.data, dataOffset);
    dataOffset += access.data.byteLength;
  });
  return { ops, data };
}
