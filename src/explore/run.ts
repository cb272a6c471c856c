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
import {
  type GuestOrder,
  type GuestThreads,
  HandlerError,
  type RestoreMode,
  runSnapshotRestore,
  type SnapshotRestoreResult,
} from '../workloads/snapshot-restore.ts';
import { ExploreController, type StepObserver, type StopKind } from './controller.ts';
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

/** What the cancel promise is settled with when a run is over (made once: an Error's stack costs). */
const RUN_OVER = new Stopped('hang', 'the run is over');

async function windDown(served: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, WIND_DOWN_MS);
  });
  await Promise.race([served, bound]);
  clearTimeout(timer);
}

/**
 * What one schedule's pieces share: the controller's stop and hang
 * description, the guest's callbacks, the balloon's madvise window for the
 * oracle, and the verdict.
 */
interface ScheduleState {
  readonly backend: ModelBackend;
  /** Rejects (with a Stopped) when the controller or an invariant stops the run. */
  readonly cancel: Promise<never>;
  readonly stop: (error: Stopped) => void;
  /** The vCPUs' and the balloon's tasks, once the guest started. */
  guestTasks: Task[];
  handlerState: string;
  served: Promise<void> | null;
  /** When each read happened and the balloon's madvise window, in controller steps. */
  order: ScheduleOrder | null;
  invariantError: InvariantError | null;
}

type Verdict = Pick<ScheduleOutcome, 'kind' | 'message'>;

export async function runSchedule(
  serve: Serve,
  guest: GuestConfig,
  strategy: Strategy,
  options: RunOptions = {},
): Promise<ScheduleOutcome> {
  const state = bootSchedule(guest);
  const controller = controlSchedule(state, strategy, options);
  const watchdog = startWatchdog(controller);
  let verdict: Verdict;
  try {
    const result = await restoreGuest(serve, guest, state, controller);
    state.backend.controller = null;
    checkOrStop(state);
    verdict = judgeRun(state, result);
  } catch (error) {
    verdict = judgeFailure(state, error);
  } finally {
    clearInterval(watchdog);
    // A stopped run (a hang) aborted the handler's session: let a binary be
    // killed and reaped before the next schedule, bounded for a handler that
    // ignores the abort.
    if (state.served !== null) await windDown(state.served);
    state.backend.cancelIdle();
    // Settled, the cancel promise drops the reactions of every race it was
    // in; V8 pretenures it, and an old promise left pending would keep them
    // (and through them the whole model) alive through young-generation GCs.
    state.stop(RUN_OVER);
    state.backend.kernel.memory.release();
  }
  return {
    ...verdict,
    decisions: controller.decisions,
    deviations: controller.deviations,
    records: controller.records,
    externalWait: controller.externalWait,
  };
}

/**
 * What the oracle is told of the order (GuestOrder), kept as the
 * controller's step observer: when each read completed, and the balloon's
 * madvise from its first step to its return. A class rather than closures
 * over the schedule's state: V8 keeps closures of some call sites in its
 * old generation, from where a finished schedule's whole model survived
 * every young-generation GC until the next full one.
 */
class ScheduleOrder implements GuestOrder, StepObserver {
  balloonTid = -1;
  private readonly window = { start: -1, end: Number.POSITIVE_INFINITY };

  constructor(
    private readonly controller: ExploreController,
    private readonly everyStep: (() => void) | null,
  ) {}

  readAt(tid: number, k: number): number {
    return this.controller.readSteps.get(tid)?.[k] ?? -1;
  }

  get madvise(): { start: number; end: number } | null {
    return this.balloonTid < 0 ? null : this.window;
  }

  observeStep(task: Task, step: number): void {
    if (task.tid === this.balloonTid) {
      const window = this.window;
      if (window.start < 0) window.start = step;
      if (task.returns.length > 0 && window.end === Number.POSITIVE_INFINITY) window.end = step;
    }
    this.everyStep?.();
  }
}

/** A fresh model under explore's control, and the promise that cancels its run. */
function bootSchedule(guest: GuestConfig): ScheduleState {
  const backend = new ModelBackend({
    seed: guest.seed,
    version: guest.mode.startsWith('gmem') ? '7.1' : '6.18',
    memory: { memoryBytesMax: Math.max(64 * 2 ** 20, guest.guestBytes * 4), hugePages2M: 64 },
  });
  backend.kernel.controlled = true;
  let stop: (error: Stopped) => void = () => {};
  const cancel = new Promise<never>((_, reject) => {
    stop = reject;
  });
  cancel.catch(() => {});
  return {
    backend,
    cancel,
    stop,
    guestTasks: [],
    handlerState: 'running',
    served: null,
    order: null,
    invariantError: null,
  };
}

/** The controller making the schedule's decisions, installed on the backend. */
function controlSchedule(state: ScheduleState, strategy: Strategy, options: RunOptions): ExploreController {
  const { backend } = state;
  const controller = new ExploreController({
    backend,
    strategy,
    recordDecisions: options.recordDecisions ?? false,
    stop: (kind, message) => state.stop(new Stopped(kind, message)),
    describe: () => describeHang(state),
    guestDone: () => state.guestTasks.length > 0 && state.guestTasks.every((task) => task.finished),
  });
  state.order = new ScheduleOrder(
    controller,
    options.invariantsEveryStep === true ? () => checkOrStop(state) : null,
  );
  controller.stepObserver = state.order;
  backend.controller = controller;
  return controller;
}

function describeHang(state: ScheduleState): string {
  const lines = describeSleepers(state.backend.kernel).map((line) => `  ${line}`);
  lines.push(
    `  the handler ${state.handlerState === 'running' ? state.backend.describeWaits() : state.handlerState}`,
  );
  return `some vCPU can never finish:\n${lines.join('\n')}`;
}

/** Checks the model's invariants; the first violation is kept and stops the run. */
function checkOrStop(state: ScheduleState): void {
  if (state.invariantError !== null) return;
  try {
    checkInvariants(state.backend.kernel);
  } catch (error) {
    if (!(error instanceof InvariantError)) throw error;
    state.invariantError = error;
    state.stop(new Stopped('hang', error.message));
  }
}

/**
 * A safety net in wall time: if no decision was made for a while, the
 * event loop is waiting on something the model does not see.
 */
function startWatchdog(controller: ExploreController): NodeJS.Timeout {
  let lastDecisions = -1;
  return setInterval(() => {
    if (controller.decisions === lastDecisions) {
      controller.idle();
    }
    lastDecisions = controller.decisions;
  }, WATCHDOG_MS);
}

/** The snapshot-restore guest and the user's handler, on the controlled model; the oracle told the order. */
function restoreGuest(
  serve: Serve,
  guest: GuestConfig,
  state: ScheduleState,
  controller: ExploreController,
): Promise<SnapshotRestoreResult> {
  return runSnapshotRestore({
    backend: state.backend,
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
    cancel: state.cancel,
    order: state.order!,
    onThreads: (threads) => guestStarted(state, controller, guest, threads),
  });
}

function guestStarted(
  state: ScheduleState,
  controller: ExploreController,
  guest: GuestConfig,
  threads: GuestThreads,
): void {
  const { backend } = state;
  // Injection starts with the guest: the VMM's setup is not under test.
  for (const [name, rate] of Object.entries(guest.inject ?? {})) backend.kernel.injector.set(name, rate ?? 0);
  const all = threads.balloon === null ? threads.vcpus : [...threads.vcpus, threads.balloon];
  state.guestTasks = all.map((thread) => (thread as unknown as { task: Task }).task);
  state.order!.balloonTid = threads.balloon?.tid ?? -1;
  state.served = threads.served;
  void threads.served.then(() => {
    state.handlerState = 'returned from serve() while the vCPU still sleeps';
    controller.handlerDone = true;
    backend.schedulePump();
  });
}

/** The verdict on a run that ended: an invariant broken, a wrong read, or a page that differs. */
function judgeRun(state: ScheduleState, result: SnapshotRestoreResult): Verdict {
  if (state.invariantError !== null) return { kind: 'invariant', message: state.invariantError.message };
  if (result.wrongReads.length > 0) {
    return {
      kind: 'wrong-bytes',
      message:
        result.wrongReads.slice(0, 5).join('\n') +
        (result.wrongReads.length > 5 ? `\n… and ${result.wrongReads.length - 5} more` : ''),
    };
  }
  if (result.verifiedPages !== result.pages) {
    return {
      kind: 'wrong-bytes',
      message: `after the run, ${result.pages - result.verifiedPages} of ${result.pages} touched pages differ from the oracle`,
    };
  }
  return { kind: null, message: '' };
}

/** The verdict on a run that threw: an invariant, a stop (a hang), or the handler's error; anything else is ours. */
function judgeFailure(state: ScheduleState, error: unknown): Verdict {
  if (state.invariantError !== null) return { kind: 'invariant', message: state.invariantError.message };
  if (error instanceof Stopped) return { kind: error.kind, message: error.message };
  if (error instanceof HandlerError) return { kind: 'handler-error', message: error.message };
  if (error instanceof InvariantError) return { kind: 'invariant', message: error.message };
  throw error;
}
