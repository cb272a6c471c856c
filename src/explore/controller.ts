/**
 * The explorer's controller on a model backend: every scheduling decision
 * of one run goes through it. Program code (the handler) is thread 0; the
 * simulated threads are their tids. Decisions happen before each system
 * call of the handler (`beforeSyscall`), whenever something became runnable
 * or the handler began to wait (`pump`), and when the event loop went idle
 * (`idle`: a timer's time has come, or nothing can run — a hang).
 */
import type { ModelBackend } from '../api/model-backend.ts';
import type { ModelKernel } from '../model/kernel.ts';
import type { ScheduleController } from '../model/schedule.ts';
import type { Task } from '../model/task.ts';
import { type DecisionRecord, defaultChoice, HANDLER_ID, type Strategy } from './strategy.ts';

/** A vCPU refaulting this many times without finishing an access is livelocked. */
export const LIVELOCK_FAULTS = 200;
/** Decisions a run may take before it counts as a hang (no progress). */
export const MAX_DECISIONS = 1_000_000;
/** Handler system calls allowed after the guest finished before it counts as not returning. */
export const MAX_CALLS_AFTER_GUEST = 100_000;

export type StopKind = 'hang' | 'handler-error';

export interface StepObserver {
  observeStep(task: Task, step: number): void;
}

export interface ControllerOptions {
  readonly backend: ModelBackend;
  readonly strategy: Strategy;
  /** Keep every decision (the exhaustive search needs them). */
  readonly recordDecisions: boolean;
  /** Called once when the run must stop: a hang, or a handler that does not return. */
  readonly stop: (kind: StopKind, message: string) => void;
  /** Who waits on what, for a hang report. */
  readonly describe: () => string;
  /** Whether every guest thread has finished. */
  readonly guestDone: () => boolean;
}

export class ExploreController implements ScheduleController {
  private readonly kernel: ModelKernel;
  private readonly backend: ModelBackend;
  private readonly strategy: Strategy;
  /** Decisions so far; deviations from the default policy. */
  decisions = 0;
  readonly deviations: Array<[number, number]> = [];
  readonly records: DecisionRecord[] = [];
  private current = HANDLER_ID;
  /** Set once the handler's serve settled: it never runs again. */
  handlerDone = false;
  private halted = false;
  /** Steps taken so far: the clock of the oracle's order. */
  stepCount = 0;
  /** Per tid: the step at which each of its reads completed. */
  readonly readSteps = new Map<number, number[]>();
  private readonly progress = new Map<Task, { accesses: number; faults: number }>();
  private callsAfterGuest = 0;
  private readonly enabled: number[] = [];

  constructor(private readonly options: ControllerOptions) {
    this.backend = options.backend;
    this.kernel = options.backend.kernel;
    this.strategy = options.strategy;
  }

  beforeSyscall(name: string): void {
    if (this.halted) return;
    if (this.options.guestDone() && ++this.callsAfterGuest > MAX_CALLS_AFTER_GUEST) {
      this.stop(
        'handler-error',
        `the handler made ${MAX_CALLS_AFTER_GUEST} calls after the guest finished without returning (last: ${name})`,
      );
      return;
    }
    this.run(true);
  }

  pump(): void {
    if (this.halted) return;
    this.run(this.handlerEnabled());
    if (!this.halted && this.kernel.runnableCount === 0 && !this.handlerEnabled())
      this.backend.scheduleIdle();
  }

  private handlerEnabled(): boolean {
    return !this.handlerDone && (this.backend.waitsOutstanding === 0 || this.backend.waitResolved);
  }

  /** Decides until the handler is picked or nothing else can run. */
  private run(handlerReady: boolean): void {
    const kernel = this.kernel;
    for (;;) {
      const clock = kernel.clock;
      if (clock.pending > 0 && clock.nextDeadlineNs() <= clock.nowNs) {
        clock.fireNext();
        handlerReady = this.handlerEnabled();
      }
      const tasks = kernel.runnableTasks();
      if (tasks.length === 0) return;
      // Refilled in place: `length = 0` would drop the backing store and
      // the pushes after it allocate a new one on every decision.
      const enabled = this.enabled;
      let count = 0;
      if (handlerReady) enabled[count++] = HANDLER_ID;
      for (let i = 0; i < tasks.length; i++) enabled[count++] = tasks[i]!.tid;
      if (enabled.length !== count) enabled.length = count;
      sortSmall(enabled);
      const choice = this.decide(enabled);
      if (choice === HANDLER_ID) {
        this.backend.waitResolved = false;
        return;
      }
      this.step(taskWithTid(tasks, choice));
      if (this.halted) return;
      handlerReady = handlerReady || this.handlerEnabled();
    }
  }

  private decide(enabled: readonly number[]): number {
    const index = this.decisions++;
    if (index >= MAX_DECISIONS) {
      this.stop('hang', `no end after ${MAX_DECISIONS} scheduling decisions\n${this.options.describe()}`);
      return HANDLER_ID;
    }
    const current = this.current;
    const chosen = enabled.length === 1 ? enabled[0]! : this.strategy.choose(index, enabled, current);
    if (enabled.length > 1 && chosen !== defaultChoice(enabled, current))
      this.deviations.push([index, chosen]);
    if (this.options.recordDecisions) this.records.push({ enabled: [...enabled], current, chosen });
    this.current = chosen;
    return chosen;
  }

  private step(task: Task): void {
    const readsBefore = task.reads.length;
    this.kernel.stepChosen(task);
    const step = ++this.stepCount;
    if (task.reads.length > readsBefore) {
      let steps = this.readSteps.get(task.tid);
      if (steps === undefined) {
        steps = [];
        this.readSteps.set(task.tid, steps);
      }
      steps.push(step);
    }
    this.stepObserver?.observeStep(task, step);
    this.checkLivelock(task);
  }

  /** Told of every step (the balloon's madvise window). */
  stepObserver: StepObserver | null = null;

  private checkLivelock(task: Task): void {
    let seen = this.progress.get(task);
    if (seen === undefined || seen.accesses !== task.accessesDone) {
      if (seen === undefined) {
        seen = { accesses: task.accessesDone, faults: task.faultsTaken };
        this.progress.set(task, seen);
      }
      seen.accesses = task.accessesDone;
      seen.faults = task.faultsTaken;
      return;
    }
    if (task.faultsTaken - seen.faults < LIVELOCK_FAULTS) return;
    const access = task.current;
    const where =
      access === null || access.kind === 'syscall'
        ? ''
        : ` at 0x${(access.address + task.progressBytes).toString(16)}`;
    this.stop(
      'hang',
      `livelock: ${task.name || `tid ${task.tid}`} faulted ${LIVELOCK_FAULTS} times${where} without finishing its access\n${this.options.describe()}`,
    );
  }

  idle(): void {
    if (this.halted) return;
    if (this.kernel.runnableCount > 0 || this.handlerEnabled()) {
      this.backend.schedulePump();
      if (
        this.kernel.runnableCount === 0 &&
        this.handlerDone === false &&
        this.backend.waitsOutstanding === 0
      ) {
        // Program code waits on something outside the backend: explore cannot control it.
        this.externalWait = true;
      }
      return;
    }
    if (this.kernel.clock.fireNext()) {
      this.backend.schedulePump();
      return;
    }
    if (this.options.guestDone()) return;
    this.stop('hang', this.options.describe());
  }

  /** Program code waited on something outside the backend at least once. */
  externalWait = false;

  private stop(kind: StopKind, message: string): void {
    if (this.halted) return;
    this.halted = true;
    this.options.stop(kind, message);
  }

  get stopped(): boolean {
    return this.halted;
  }
}

/**
 * Insertion sort in place: the enabled set has a handful of ids, and
 * Array.prototype.sort allocates a work array on every call (a third of a
 * schedule's garbage when it ran once per decision).
 */
function sortSmall(ids: number[]): void {
  for (let i = 1; i < ids.length; i++) {
    const id = ids[i]!;
    let j = i - 1;
    while (j >= 0 && ids[j]! > id) {
      ids[j + 1] = ids[j]!;
      j--;
    }
    ids[j + 1] = id;
  }
}

function taskWithTid(tasks: readonly Task[], tid: number): Task {
  for (const task of tasks) if (task.tid === tid) return task;
  throw new Error(`explore: the strategy chose tid ${tid}, which is not runnable`);
}
