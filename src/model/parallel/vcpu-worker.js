/**
 * A parallel vCPU: the hardware side of one simulated thread, on a worker
 * thread of its own. It runs the thread's program of accesses page span by
 * page span through its TLB, touching the frames (SharedArrayBuffers)
 * directly; whatever the TLB cannot do (a miss, a write through a read-only
 * entry, a kernel-mode access, a syscall) traps to the kernel on the main
 * thread and sleeps until the kernel answers. It never reads a page table or
 * any other kernel structure: a software-refilled TLB, as on MIPS.
 *
 * Plain JavaScript on purpose: it needs no TypeScript loader and imports
 * nothing but worker_threads. The layout comes from layout.ts in workerData.
 */
import { receiveMessageOnPort, workerData } from 'node:worker_threads';

const { program, ctlBuffer, tlbBuffer, dataBuffer, logBuffer, chunks, chunkPort, arenaPort, layout } =
  workerData;
const PAGE = 1 << layout.pageShift;
const CHUNK_MASK = (1 << layout.chunkShift) - 1;
const TLB_ENTRIES = layout.tlbEntries;
const TLB_MASK = TLB_ENTRIES - 1;
const ctl = new Int32Array(ctlBuffer);
const tlb = new Int32Array(tlbBuffer);
const data = new Uint8Array(dataBuffer);
/** The read log: (arena, offset, length) of each read completed since the last trap. */
const log = new Int32Array(logBuffer);

const MISS = 0;
const HIT = 1;
const STOP = 2;

/** The in-access sequence number (mirrors ctl[SEQ]): odd inside a fast-path access. */
let seq = 0;
let logCount = 0;
let arena = null;
let arenaId = -1;
let arenaUsed = 0;
let fast = 0;
let traps = 0;
let waitUs = 0;

/** The frame chunk holding `pfn`; chunks the kernel added since are waiting on the port. */
function chunkOf(pfn) {
  const index = pfn >>> layout.chunkShift;
  while (chunks[index] === undefined) {
    const received = receiveMessageOnPort(chunkPort);
    if (received === undefined) throw new Error(`vcpu: no frame chunk ${index} for pfn ${pfn}`);
    chunks[received.message.index] = received.message.chunk;
  }
  return chunks[index];
}

/**
 * One page span through the TLB. The kernel invalidates an entry and then
 * waits for SEQ to be even (or to move on), so the access either sees the
 * invalidation or finishes before the kernel relies on it.
 */
function tryFast(at, buffer, offset, span, write) {
  seq++;
  Atomics.store(ctl, layout.ctlSeq, seq);
  let result = MISS;
  if (Atomics.load(ctl, layout.ctlStop) !== 0) {
    result = STOP;
  } else {
    const vpn = Math.floor(at / PAGE);
    const slot = (vpn & TLB_MASK) << 1;
    if (Atomics.load(tlb, slot) === Math.floor(vpn / TLB_ENTRIES)) {
      const entry = tlb[slot + 1];
      if (!write || (entry & layout.tlbWritable) !== 0) {
        const pfn = entry >>> 1;
        const frames = chunkOf(pfn);
        const start = ((pfn & CHUNK_MASK) << layout.pageShift) + (at % PAGE);
        if (write) frames.set(buffer.subarray(offset, offset + span), start);
        else buffer.set(frames.subarray(start, start + span), offset);
        result = HIT;
      }
    }
  }
  seq++;
  Atomics.store(ctl, layout.ctlSeq, seq);
  return result;
}

/** Rings the kernel for access `index` at byte `done` and sleeps until it replies. */
function trap(index, done) {
  ctl[layout.ctlTrapAccess] = index;
  ctl[layout.ctlTrapDone] = done;
  ctl[layout.ctlLogCount] = logCount;
  logCount = 0;
  ctl[layout.ctlTraps] = ++traps;
  ctl[layout.ctlFast] = fast;
  Atomics.store(ctl, layout.ctlReply, layout.replyWait);
  const rang = performance.now();
  Atomics.add(ctl, layout.ctlBell, 1);
  Atomics.notify(ctl, layout.ctlBell);
  for (;;) {
    const reply = Atomics.load(ctl, layout.ctlReply);
    if (reply !== layout.replyWait) {
      waitUs += (performance.now() - rang) * 1000;
      ctl[layout.ctlWaitUs] = waitUs;
      return reply;
    }
    Atomics.wait(ctl, layout.ctlReply, layout.replyWait);
  }
}

/** Where a read of `length` bytes goes: the free end of the current arena, or a new one. */
function readBuffer(length) {
  if (arena === null || arenaUsed + length > arena.byteLength) {
    arena = new Uint8Array(new SharedArrayBuffer(Math.max(layout.arenaBytes, length)));
    arenaId++;
    arenaUsed = 0;
    // Queued before any trap that logs a read in it, so the kernel finds it there.
    arenaPort.postMessage({ id: arenaId, arena });
  }
  return arena.subarray(arenaUsed, arenaUsed + length);
}

function logRead(length) {
  log[logCount * 3] = arenaId;
  log[logCount * 3 + 1] = arenaUsed;
  log[logCount * 3 + 2] = length;
  logCount++;
  arenaUsed += length;
}

function run() {
  const { ops, data: writes } = program;
  const count = ops.length / layout.opWords;
  for (let index = 0; index < count; index++) {
    const op = index * layout.opWords;
    const kind = ops[op];
    if (kind === layout.opKernel) {
      // The kernel runs system calls and kernel-mode accesses whole.
      if (trap(index, 0) === layout.replyKilled) return;
      continue;
    }
    const address = ops[op + 1];
    const length = ops[op + 2];
    const write = kind === layout.opWrite;
    if (!write && logCount === layout.logEntries) {
      if (trap(layout.trapFlush, 0) === layout.replyKilled) return;
    }
    const buffer = write ? writes.subarray(ops[op + 3], ops[op + 3] + length) : readBuffer(length);
    let done = 0;
    while (done < length) {
      const at = address + done;
      const span = Math.min(length - done, PAGE - (at % PAGE));
      const result = tryFast(at, buffer, done, span, write);
      if (result === STOP) return;
      if (result === HIT) {
        fast++;
      } else {
        // The kernel faults the page in and does this span; a read's bytes come back in the data slot.
        if (trap(index, done) === layout.replyKilled) return;
        if (!write) buffer.set(data.subarray(0, span), done);
      }
      done += span;
    }
    if (!write) logRead(length);
  }
  // The end of the program: the kernel ends the thread and answers REPLY_KILLED.
  trap(count, 0);
}

try {
  run();
} finally {
  if (seq % 2 === 1) Atomics.store(ctl, layout.ctlSeq, ++seq);
  ctl[layout.ctlFast] = fast;
  Atomics.store(ctl, layout.ctlExited, 1);
  chunkPort.close();
  arenaPort.close();
}
