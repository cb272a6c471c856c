/**
 * Argument checks at the process API's edge, before anything reaches the
 * kernel: a value of the wrong JavaScript type is a TypeError naming the call
 * and the argument (C would not have compiled it), and nothing changes.
 * Integers go through as the kernel reads them: an `unsigned long` given as a
 * negative number is its two's complement (mmap of length -4096 asks for
 * 2^64 - 4096 bytes and gets the kernel's ENOMEM, never a reversed VMA).
 */
import type { ThreadAccess } from './backend.ts';

const TWO_64 = 2 ** 64;

function describe(value: unknown): string {
  if (typeof value === 'string') return `the string ${JSON.stringify(value.slice(0, 40))}`;
  if (value === null) return 'null';
  if (typeof value === 'object') return `a ${(value as object).constructor?.name ?? 'object'}`;
  return `${typeof value} ${String(value)}`;
}

/** A C integer argument: a safe integer (negative allowed), else a TypeError naming it. */
export function int(call: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${call}: ${name} must be an integer, not ${describe(value)}`);
  }
  return value;
}

/** An `unsigned long` (address, length): a negative integer is read as the kernel reads it, modulo 2^64. */
export function ulong(call: string, name: string, value: unknown): number {
  const n = int(call, name, value);
  return n < 0 ? n + TWO_64 : n;
}

/** A length of bytes JavaScript allocates (a direct read): a non-negative safe integer. */
export function byteCount(call: string, name: string, value: unknown): number {
  const n = int(call, name, value);
  if (n < 0 || n > 2 ** 32) throw new TypeError(`${call}: ${name} must be from 0 to 2^32, not ${n}`);
  return n;
}

export function bytes(call: string, name: string, value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${call}: ${name} must be a Uint8Array, not ${describe(value)}`);
  }
  return value;
}

export function text(call: string, name: string, value: unknown): string {
  if (typeof value !== 'string')
    throw new TypeError(`${call}: ${name} must be a string, not ${describe(value)}`);
  return value;
}

const SYSCALLS: ReadonlySet<string> = new Set(['madvise', 'munmap', 'mremap', 'fork']);

/** The most accesses one thread program may have (programs are read up front). */
export const MAX_PROGRAM_ACCESSES = 1 << 24;

/** One access of a thread's program, checked; syscall arguments as the kernel reads them. */
function checkAccess(access: unknown, at: string): ThreadAccess {
  const call = 'spawnThread';
  if (typeof access !== 'object' || access === null) {
    throw new TypeError(`${call}: ${at} must be an access object, not ${describe(access)}`);
  }
  const a = access as Record<string, unknown>;
  if (a.kernel !== undefined && typeof a.kernel !== 'boolean') {
    throw new TypeError(`${call}: ${at}.kernel must be a boolean, not ${describe(a.kernel)}`);
  }
  switch (a.kind) {
    case 'read':
      ulong(call, `${at}.address`, a.address);
      byteCount(call, `${at}.length`, a.length);
      return access as ThreadAccess;
    case 'write':
      ulong(call, `${at}.address`, a.address);
      bytes(call, `${at}.data`, a.data);
      return access as ThreadAccess;
    case 'syscall': {
      if (typeof a.call !== 'string' || !SYSCALLS.has(a.call)) {
        throw new TypeError(
          `${call}: ${at}.call must be madvise, munmap, mremap or fork, not ${describe(a.call)}`,
        );
      }
      if (!Array.isArray(a.args))
        throw new TypeError(`${call}: ${at}.args must be an array, not ${describe(a.args)}`);
      const args = a.args.map((value, i) => ulong(call, `${at}.args[${i}]`, value));
      return { kind: 'syscall', call: a.call as 'madvise', args };
    }
    default:
      throw new TypeError(`${call}: ${at}.kind must be read, write or syscall, not ${describe(a.kind)}`);
  }
}

/**
 * A thread's program, read to the end and checked before the thread exists:
 * a bad access is a TypeError to the caller, never an exception inside the
 * scheduler that would take the process down later.
 */
export function checkProgram(program: unknown): ThreadAccess[] {
  if (typeof program !== 'object' || program === null || !(Symbol.iterator in program)) {
    throw new TypeError(`spawnThread: program must be an iterable of accesses, not ${describe(program)}`);
  }
  const accesses: ThreadAccess[] = [];
  for (const access of program as Iterable<unknown>) {
    if (accesses.length >= MAX_PROGRAM_ACCESSES) {
      throw new TypeError(`spawnThread: program has more than ${MAX_PROGRAM_ACCESSES} accesses`);
    }
    accesses.push(checkAccess(access, `program[${accesses.length}]`));
  }
  return accesses;
}
