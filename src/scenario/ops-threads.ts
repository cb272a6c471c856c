/**
 * Scenario ops on threads and processes: thread, join, signal, exit, and
 * the system calls that can sleep until the monitor reads the event they
 * raise (madvise, munmap, mremap, fork), which run in a thread of their own.
 */
import type { ThreadAccess, ThreadResult } from '../api/backend.ts';
import { Process } from '../api/process.ts';
import {
  MADV_DONTNEED,
  MADV_FREE,
  MADV_PAGEOUT,
  MADV_REMOVE,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  siCodeName,
  signalName,
  signalNumber,
} from '../uapi/constants.ts';
import { errnoName } from '../uapi/errno.ts';
import { dataBytes, type OpCall, type OpTable, observe, syscallSize } from './context.ts';
import type { ObservedResult } from './result.ts';
import type { OpName, Step } from './schema.ts';

function thread({ context, args: a, process }: OpCall<'thread'>): ObservedResult {
  const address = context.address(a.map, a.offset);
  const access: ThreadAccess =
    a.access === 'read'
      ? { kind: 'read', address, length: syscallSize(a.length ?? 1) }
      : a.access === 'write'
        ? { kind: 'write', address, data: dataBytes(a.data!) }
        : {
            kind: 'write',
            address,
            data: a.data === undefined ? new Uint8Array(syscallSize(a.length ?? 1)) : dataBytes(a.data),
            kernel: true,
          };
  context.threads.set(a.name, process.thread([access], a.name));
  return {};
}

async function join({ context, args: a }: OpCall<'join'>): Promise<ObservedResult> {
  const thread = context.threads.get(a.thread)!;
  await context.backend.settle();
  const result = thread.result();
  if (result === null) return { state: 'blocked' };
  const observed: ObservedResult = { state: result.state };
  if (result.reads[0] !== undefined) observed.data = result.reads[0];
  if (result.errno !== 0) observed.errno = errnoName(result.errno);
  if (result.signal !== undefined) {
    observed.si_code = siCodeName(result.signal.signal, result.signal.siCode);
    observed.signal = signalName(result.signal.signal);
  }
  return observed;
}

export const THREAD_OPS: OpTable<'thread' | 'join' | 'exit' | 'signal'> = {
  thread,
  join,
  exit: ({ context, args: a }) => observe(() => context.process(a.process).exit()),
  signal: ({ context, args: a, process }) => {
    const signo = signalNumber(a.signal);
    if (signo === undefined) throw new Error(`unknown signal ${a.signal}`);
    process.backend.signalThread(context.threads.get(a.thread)!, signo);
    return {};
  },
};

const ADVICE: Record<string, number> = {
  dontneed: MADV_DONTNEED,
  free: MADV_FREE,
  remove: MADV_REMOVE,
  pageout: MADV_PAGEOUT,
};

/** A system call a step makes in its own thread, and what the step observes when it returns. */
interface SleepingCall {
  readonly access: ThreadAccess;
  /** What the step observes once the call returned (its thread ended `done`). */
  readonly finish: (result: ThreadResult) => ObservedResult;
}

function errnoOrNothing(result: ThreadResult): ObservedResult {
  const value = result.returns[0]!;
  return value < 0 ? { errno: errnoName(-value) } : {};
}

function madvise({ context, args: a }: OpCall<'madvise'>): SleepingCall {
  const args = [
    context.address(a.map, a.offset),
    Number(context.lengthOf(a.map, a.offset, a.length)),
    ADVICE[a.advice]!,
  ];
  return { access: { kind: 'syscall', call: 'madvise', args }, finish: errnoOrNothing };
}

function munmap({ context, args: a }: OpCall<'munmap'>): SleepingCall {
  const args = [context.address(a.map, a.offset), Number(context.lengthOf(a.map, a.offset, a.length))];
  return { access: { kind: 'syscall', call: 'munmap', args }, finish: errnoOrNothing };
}

function mremap({ context, args: a, processName }: OpCall<'mremap'>): SleepingCall {
  const map = context.maps.get(a.map)!;
  const newLength = Number(a.length ?? map.length);
  // Without `onto` it still moves: onto a fresh reservation of the new length, as a same-length
  // MREMAP_MAYMOVE alone would leave the mapping where it is (SCENARIOS.md).
  const target =
    a.onto === undefined
      ? context.runnerMapping(processName, newLength, true)
      : context.maps.get(a.onto)!.address;
  // The destination is fixed, so `to` names it at once: events read while the mremap waits on
  // them can name it.
  context.maps.set(a.to, { process: processName, address: target, length: newLength });
  const args = [map.address, map.length, newLength, MREMAP_MAYMOVE | MREMAP_FIXED, target];
  const finish = (result: ThreadResult): ObservedResult => {
    const value = result.returns[0]!;
    // On failure `to` keeps naming the destination, so later steps on it fail as the kernel fails
    // them instead of naming nothing; a reservation stays (a failed move of several VMAs may have
    // moved some onto it already).
    if (value < 0) return { errno: errnoName(-value) };
    context.maps.set(a.to, { process: processName, address: value, length: newLength });
    return {};
  };
  return { access: { kind: 'syscall', call: 'mremap', args }, finish };
}

function fork({ context, args: a }: OpCall<'fork'>): SleepingCall {
  const finish = (result: ThreadResult): ObservedResult => {
    const value = result.returns[0]!;
    if (value < 0) return { errno: errnoName(-value) };
    context.processes.set(a.name, new Process(result.children[0]!));
    return {};
  };
  return { access: { kind: 'syscall', call: 'fork', args: [] }, finish };
}

/**
 * Runs the call in a thread: if it sleeps (on an event the monitor has not
 * read), the step goes to the background and is checked when it returns.
 */
async function inThread<O extends OpName>(
  call: OpCall<O>,
  { access, finish }: SleepingCall,
): Promise<ObservedResult> {
  const { context, step } = call;
  // A call whose process died under it (a signal, on the host an agent that crashed) never returned.
  const ended = (result: ThreadResult): ObservedResult =>
    result.state === 'done' ? finish(result) : { signal: signalName(result.signal?.signal ?? 0) };
  const thread = call.process.thread([access], `${step.op}@${step.index}`);
  await context.backend.settle();
  const result = thread.result();
  if (result !== null) return ended(result);
  context.background.push({ step: step as Step, thread, finish: ended });
  return { background: true };
}

export const SLEEPING_OPS: OpTable<'madvise' | 'munmap' | 'mremap' | 'fork'> = {
  madvise: (call) => inThread(call, madvise(call)),
  munmap: (call) => inThread(call, munmap(call)),
  mremap: (call) => inThread(call, mremap(call)),
  fork: (call) => inThread(call, fork(call)),
};
