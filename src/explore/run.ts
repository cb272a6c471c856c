/**
 * One schedule: a fresh model, the snapshot-restore guest, the user's
 * handler, and a controller making every scheduling decision by a strategy.
 * The outcome is a failure kind with its message, or none.
 */
import { ModelBackend } from '../api/model-backend.ts';
import type { Serve } from '../handlers/session.ts';
import { checkInvariants, InvariantError } from '../model/check.ts';
import { describeSleepers } from '../model/hang.ts';
import type { InjectionRates } from '../model/inject.ts';
import type { Task } from '../model/task.ts';
import { Trace } from '../trace/trace.ts';
import type { AccessPattern } from '../workloads/guest.ts';
import { HandlerError, type RestoreMode, runSnapshotRestore } from '../workloads/snapshot-restore.ts';
import { ExploreController, type StopKind } from './controller.ts';
import type { DecisionRecord, Strategy } from './strategy.ts';

export type FailureKind = 'hang' | 'handler-error' | 'wrong-bytes' | 'invariant';

/** The guest of one campaign (HANDLERS.md §3). */
export interface GuestConfig {
  readonly mode: RestoreMode;
  readonly guestBytes: number;
  readonly vcpus: number;
  readonly pattern: AccessPattern;
  /** Seed of the guest's access pattern and of the model. */
  readonly seed: number;
  readonly balloonPages: number;
  readonly deflatePages?: number;
  /** Faults injected into the model (`--inject`), replayed with the schedule. */
  readonly inject?: InjectionRates;
}

export interface ScheduleOutcome {
  readonly kind: FailureKind | null;
  readonly message: string;
  readonly decisions: number;
  /** The schedule: where it left the default policy (decision index, thread id). */
  readonly deviations: readonly (readonly [number, number])[];
  readonly records: readonly DecisionRecord[];
  /** The handler waited on something outside the backend, which explore cannot control. */
  readonly externalWait: boolean;
}

export interface RunOptions {
  readonly recordDecisions?: boolean;
  /** Check the model's invariants after every step (default: at every handler decision and at the end). */
  readonly invariantsEveryStep?: boolean;
}

/** How often (wall time) a run checks that it is still making decisions. */
const WATCHDOG_MS = 100;
/** How long (wall time) a stopped run waits for the handler to wind down (a binary: to be killed). */
const WIND_DOWN_MS = 2000;

class Stopped extends Error {
  constructor(
    readonly kind: StopKind,
    message: string,
  ) {
    super(message);
  }
}

async function windDown(served: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, WIND_DOWN_MS);
  });
  await Promise.race([served, bound]);
  clearTimeout(timer);
}

export async function runSchedule(
  serve: Serve,
  guest: GuestConfig,
  strategy: Strategy,
  options: RunOptions = {},
): Promise<ScheduleOutcome> {
  const backend = new ModelBackend({
    seed: guest.seed,
    version: guest.mode.startsWith('gmem') ? '7.1' : '6.18',
    memory: { memoryBytesMax: Math.max(64 * 2 ** 20, guest.guestBytes * 4), hugePages2M: 64 },
  });
  const kernel = backend.kernel;
  kernel.controlled = true;
  let stop: (error: Stopped) => void = () => {};
  const cancel = new Promise<never>((_, reject) => {
    stop = reject;
  });
  cancel.catch(() => {});
  let guestTasks: Task[] = [];
  let balloonTid = -1;
  let handlerState = 'running';
  let served: Promise<void> | null = null;
  const describe = (): string => {
    const lines = describeSleepers(kernel).map((line) => `  ${line}`);
    lines.push(`  the handler ${handlerState === 'running' ? backend.describeWaits() : handlerState}`);
    return `some vCPU can never finish:\n${lines.join('\n')}`;
  };
  const controller = new ExploreController({
    backend,
    strategy,
    recordDecisions: options.recordDecisions ?? false,
    stop: (kind, message) => stop(new Stopped(kind, message)),
    describe,
    guestDone: () => guestTasks.length > 0 && guestTasks.every((task) => task.finished),
  });
  const madvise = { start: -1, end: Number.POSITIVE_INFINITY };
  let invariantError: InvariantError | null = null;
  controller.stepObserver = (task, step) => {
    if (task.tid === balloonTid) {
      if (madvise.start < 0) madvise.start = step;
      if (task.returns.length > 0 && madvise.end === Number.POSITIVE_INFINITY) madvise.end = step;
    }
    if (options.invariantsEveryStep === true) checkOrStop();
  };
  const checkOrStop = (): void => {
    if (invariantError !== null) return;
    try {
      checkInvariants(kernel);
    } catch (error) {
      if (!(error instanceof InvariantError)) throw error;
      invariantError = error;
      stop(new Stopped('hang', error.message));
    }
  };
  backend.controller = controller;
  // A safety net in wall time: if no decision was made for a while, the
  // event loop is waiting on something the model does not see.
  let lastDecisions = -1;
  const watchdog = setInterval(() => {
    if (controller.decisions === lastDecisions) {
      controller.idle();
    }
    lastDecisions = controller.decisions;
  }, WATCHDOG_MS);
  let kind: FailureKind | null = null;
  let message = '';
  try {
    const result = await runSnapshotRestore({
      backend,
      mode: guest.mode,
      guestBytes: guest.guestBytes,
      vcpus: guest.vcpus,
      pattern: guest.pattern,
      seed: guest.seed,
      handler: serve,
      prefetchWindow: 0,
      balloonPages: guest.balloonPages,
      ...(guest.deflatePages === undefined ? {} : { deflatePages: guest.deflatePages }),
      trace: new Trace(1, false),
      verify: false,
      cancel,
      order: {
        readAt: (tid, k) => controller.readSteps.get(tid)?.[k] ?? -1,
        get madvise() {
          return balloonTid < 0 ? null : madvise;
        },
      },
      onThreads: (threads) => {
        // Injection starts with the guest: the VMM's setup is not under test.
        for (const [name, rate] of Object.entries(guest.inject ?? {})) kernel.injector.set(name, rate ?? 0);
        const all = threads.balloon === null ? threads.vcpus : [...threads.vcpus, threads.balloon];
        guestTasks = all.map((thread) => (thread as unknown as { task: Task }).task);
        balloonTid = threads.balloon?.tid ?? -1;
        served = threads.served;
        void threads.served.then(() => {
          handlerState = 'returned from serve() while the vCPU still sleeps';
          controller.handlerDone = true;
          backend.schedulePump();
        });
      },
    });
    backend.controller = null;
    checkOrStop();
    if (invariantError !== null) {
      kind = 'invariant';
      message = (invariantError as InvariantError).message;
    } else if (result.wrongReads.length > 0) {
      kind = 'wrong-bytes';
      message =
        result.wrongReads.slice(0, 5).join('\n') +
        (result.wrongReads.length > 5 ? `\n… and ${result.wrongReads.length - 5} more` : '');
    } else if (result.verifiedPages !== result.pages) {
      kind = 'wrong-bytes';
      message = `after the run, ${result.pages - result.verifiedPages} of ${result.pages} touched pages differ from the oracle`;
    }
  } catch (error) {
    if (invariantError !== null) {
      kind = 'invariant';
      message = (invariantError as InvariantError).message;
    } else if (error instanceof Stopped) {
      kind = error.kind;
      message = error.message;
    } else if (error instanceof HandlerError) {
      kind = 'handler-error';
      message = error.message;
    } else if (error instanceof InvariantError) {
      kind = 'invariant';
      message = error.message;
    } else throw error;
  } finally {
    clearInterval(watchdog);
    // A stopped run (a hang) aborted the handler's session: let a binary be
    // killed and reaped before the next schedule, bounded for a handler that
    // ignores the abort.
    if (served !== null) await windDown(served);
    kernel.memory.release();
  }
  return {
    kind,
    message,
    decisions: controller.decisions,
    deviations: controller.deviations,
    records: controller.records,
    externalWait: controller.externalWait,
  };
}
