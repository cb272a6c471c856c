/**
 * Why a failing kernel call failed. Kernel functions return -errno on the
 * hot path; the function that decides a failure also records on the
 * kernel's `FailureRecord` which argument was at fault and why, and the
 * syscall boundary (`ModelBackend`) takes both into a KernelError. Each
 * kernel instance owns its record; the code reaches it through the process
 * (`process.fail`), the userfaultfd context (`ctx.failure`) or the fault
 * environment (`env.failure`) of the call.
 */
export interface FailureDetail {
  readonly argument: string | undefined;
  readonly reason: string | undefined;
}

export class FailureRecord implements FailureDetail {
  argument: string | undefined = undefined;
  reason: string | undefined = undefined;

  /** Records the argument and reason, and returns -errno. */
  fail(errno: number, argument: string, reason: string): number {
    this.argument = argument;
    this.reason = reason;
    return -errno;
  }

  /** The detail of the last failure, which is then forgotten. */
  take(): FailureDetail {
    const detail = { argument: this.argument, reason: this.reason };
    this.argument = undefined;
    this.reason = undefined;
    return detail;
  }
}

export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}
