/**
 * Why the last failing kernel call failed. Kernel functions return -errno on
 * the hot path; the function that decides a failure also records which
 * argument was at fault and why, and the syscall boundary turns both into a
 * KernelError. JavaScript runs one call at a time, so one record suffices.
 */
export interface FailureDetail {
  argument: string | undefined;
  reason: string | undefined;
}

export const lastFailure: FailureDetail = { argument: undefined, reason: undefined };

/** Records the argument and reason, and returns -errno. */
export function fail(errno: number, argument: string, reason: string): number {
  lastFailure.argument = argument;
  lastFailure.reason = reason;
  return -errno;
}

export function clearFailure(): void {
  lastFailure.argument = undefined;
  lastFailure.reason = undefined;
}

export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}
