/**
 * Test helpers: a model backend whose invariants are checked after every pump
 * of simulated threads and on demand, with the seed in every failure.
 */

import { ModelBackend } from '../src/api/model-backend.ts';
import { Process } from '../src/api/process.ts';
import type { GuestConfig } from '../src/explore/run.ts';
import { checkInvariants } from '../src/model/check.ts';
import type { ModelKernelOptions } from '../src/model/kernel.ts';
import { KernelError } from '../src/uapi/errno.ts';

export interface TestModel {
  readonly backend: ModelBackend;
  readonly process: Process;
  /** Runs the invariant checker now. */
  check(): void;
}

export function createTestModel(options: ModelKernelOptions & { checkAfterPump?: boolean } = {}): TestModel {
  const backend = new ModelBackend({ seed: 1, ...options });
  const check = () => checkInvariants(backend.kernel);
  if (options.checkAfterPump ?? true) backend.afterPump = check;
  return { backend, process: new Process(backend.self), check };
}

/** Runs `call`, expecting a KernelError with `errno`; returns it. */
export function expectErrno(call: () => unknown, errno: number): KernelError {
  try {
    call();
  } catch (error) {
    if (error instanceof KernelError) {
      if (error.errno !== errno) {
        throw new Error(`expected errno ${errno}, got ${error.errno}: ${error.message}`);
      }
      return error;
    }
    throw error;
  }
  throw new Error(`expected errno ${errno}, but the call succeeded`);
}

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const PAGE = 4096;
export const HUGE = 2 * MiB;

export function filled(length: number, byte: number): Uint8Array {
  return new Uint8Array(length).fill(byte);
}

/** The snapshot-restore guest of HANDLERS.md that explore's tests and bench run: 64 pages, 2 vCPUs, balloon 8. */
export const HANDLERS_GUEST: GuestConfig = {
  mode: 'anon',
  guestBytes: 64 * 4096,
  vcpus: 2,
  pattern: 'sequential',
  seed: 1,
  balloonPages: 8,
};
