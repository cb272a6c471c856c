/**
 * Schedule strategies. At every decision the explorer offers the enabled
 * threads — the handler (id 0) and the runnable simulated threads (their
 * tids), sorted — and the one that ran last; a strategy picks one.
 *
 * A schedule is written down as its deviations from the default policy
 * (`defaultChoice`: keep running the last thread while it can; else the
 * handler; else the lowest tid). A deviation where the last thread could
 * still run is a preemption; shrinking removes deviations.
 */
import { Prng } from '../model/prng.ts';

export const HANDLER_ID = 0;

export type StrategyName = 'random' | 'pct' | 'exhaustive';
export const STRATEGIES: readonly StrategyName[] = ['random', 'pct', 'exhaustive'];

export interface Strategy {
  /** Picks one of `enabled` (sorted ids, non-empty) at decision `index`; `current` ran last. */
  choose(index: number, enabled: readonly number[], current: number): number;
}

export function defaultChoice(enabled: readonly number[], current: number): number {
  if (enabled.includes(current)) return current;
  return enabled[0]!;
}

/** Seeded random walk: every enabled thread equally likely at every decision. */
export class RandomStrategy implements Strategy {
  private readonly prng: Prng;
  constructor(seed: number) {
    this.prng = new Prng(seed);
  }

  choose(_index: number, enabled: readonly number[]): number {
    return enabled.length === 1 ? enabled[0]! : enabled[this.prng.nextInt(enabled.length)]!;
  }
}

/**
 * PCT (Burckhardt et al., ASPLOS 2010): threads get random distinct
 * priorities; the highest-priority enabled thread runs; at `depth - 1`
 * random decisions the running thread drops below every other. A bug of
 * depth d is found with probability at least 1/(n k^(d-1)).
 */
export class PctStrategy implements Strategy {
  private readonly prng: Prng;
  private readonly priority = new Map<number, number>();
  private readonly changePoints: Map<number, number>;

  constructor(seed: number, depth: number, expectedDecisions: number) {
    this.prng = new Prng(seed);
    this.changePoints = new Map();
    for (let i = 0; i < depth - 1; i++) {
      this.changePoints.set(this.prng.nextInt(Math.max(1, expectedDecisions)), depth - 1 - i);
    }
  }

  private priorityOf(id: number): number {
    let value = this.priority.get(id);
    if (value === undefined) {
      // Initial priorities lie above every change point's (1 .. depth-1).
      value = 1000 + this.prng.nextInt(1_000_000);
      this.priority.set(id, value);
    }
    return value;
  }

  choose(index: number, enabled: readonly number[], current: number): number {
    const lowered = this.changePoints.get(index);
    if (lowered !== undefined) this.priority.set(current, lowered);
    let best = enabled[0]!;
    let bestPriority = -1;
    for (const id of enabled) {
      const priority = this.priorityOf(id);
      if (priority > bestPriority) {
        best = id;
        bestPriority = priority;
      }
    }
    return best;
  }
}

/** Follows recorded deviations; the default policy everywhere else. */
export class ReplayStrategy implements Strategy {
  private readonly at: Map<number, number>;
  constructor(deviations: readonly (readonly [number, number])[]) {
    this.at = new Map(deviations.map(([index, id]) => [index, id]));
  }

  choose(index: number, enabled: readonly number[], current: number): number {
    const id = this.at.get(index);
    return id !== undefined && enabled.includes(id) ? id : defaultChoice(enabled, current);
  }
}

/** One decision of a run, as the exhaustive search keeps it. */
export interface DecisionRecord {
  readonly enabled: readonly number[];
  readonly current: number;
  readonly chosen: number;
}

/**
 * Every schedule up to `bound` preemptions, depth first: each run follows a
 * prefix of the previous one's decisions, takes the next untried choice at
 * the deepest decision that has one within the bound, then the default.
 */
export class ExhaustiveSearch {
  /** The forced choices of the next run (decision index -> id), or null when the search is over. */
  private next: Map<number, number> | null = new Map();
  /** Per decision of the current path: choices tried there. */
  private tried: Array<Set<number>> = [];

  constructor(private readonly bound: number) {}

  get done(): boolean {
    return this.next === null;
  }

  /** The strategy for the next run. */
  strategy(): Strategy {
    const forced = this.next ?? new Map<number, number>();
    return {
      choose: (index, enabled, current) => {
        const id = forced.get(index);
        return id !== undefined && enabled.includes(id) ? id : defaultChoice(enabled, current);
      },
    };
  }

  /** After a run: its decisions. Picks the next run's choices. */
  record(decisions: readonly DecisionRecord[]): void {
    const tried = this.tried;
    for (let i = 0; i < decisions.length; i++) {
      if (tried[i] === undefined) tried[i] = new Set();
      tried[i]!.add(decisions[i]!.chosen);
    }
    tried.length = Math.min(tried.length, decisions.length);
    const preemptionsBefore: number[] = [];
    let preemptions = 0;
    for (let i = 0; i < decisions.length; i++) {
      preemptionsBefore.push(preemptions);
      const d = decisions[i]!;
      if (d.chosen !== d.current && d.enabled.includes(d.current)) preemptions++;
    }
    for (let i = decisions.length - 1; i >= 0; i--) {
      const d = decisions[i]!;
      for (const id of d.enabled) {
        if (tried[i]!.has(id)) continue;
        const cost = id !== d.current && d.enabled.includes(d.current) ? 1 : 0;
        if (preemptionsBefore[i]! + cost > this.bound) continue;
        const forced = new Map<number, number>();
        for (let j = 0; j < i; j++) forced.set(j, decisions[j]!.chosen);
        forced.set(i, id);
        this.next = forced;
        tried.length = i + 1;
        return;
      }
    }
    this.next = null;
  }
}
