/**
 * Bounds on the command line's sizes and counts, so an option cannot make a
 * run grow without limit (`--size 1024G` filled the host's RAM, `--reads 2e9`
 * aborted V8): each is refused in one line naming the option (exit 2).
 */
import { totalmem } from 'node:os';
import { InvalidArgumentError } from 'commander';

/** Guest memory a workload may have: every page of it is touched, so at most half of this machine's RAM, and 64 GiB. */
export function maxGuestBytes(): number {
  return Math.min(64 * 2 ** 30, Math.floor(totalmem() / 2 / 2 ** 21) * 2 ** 21);
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(bytes % 2 ** 30 === 0 ? 0 : 1)} GiB`;
}

/** Throws the one-line error for a guest size past maxGuestBytes(); `option` prefixes it when commander does not. */
export function checkGuestBytes(option: string | null, bytes: number): number {
  const max = maxGuestBytes();
  if (bytes > max) {
    throw new InvalidArgumentError(
      `${option === null ? '' : `${option}: `}${gib(bytes)} is more than ${gib(max)} (half this machine's memory, at most 64 GiB): the workload touches every page`,
    );
  }
  return bytes;
}

/** A commander parser for an integer count from `min` to `max`. */
export function countArgument(min: number, max: number): (value: string) => number {
  return (value: string) => {
    const parsed = Number(value);
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(
        `'${value}' is not an integer from ${min} to ${max.toLocaleString('en-US')}`,
      );
    }
    return parsed;
  };
}

/** Threads (vCPUs, mutators) a workload or the demo may start. */
export const MAX_THREADS = 64;
/** Pages the demo faults per part (1 GiB). */
export const MAX_DEMO_PAGES = 262_144;
/** Per-thread counts (object reads, rounds): enough for any run people make, far from V8's array limits. */
export const MAX_COUNT = 10_000_000;
