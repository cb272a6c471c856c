/**
 * The guest side of a workload: vCPU threads touching guest memory in a
 * pattern (sequential, random, or a recorded working set), on any backend.
 */
import { readFileSync } from 'node:fs';
import type { ThreadAccess } from '../api/backend.ts';
import { Prng } from '../model/prng.ts';

export type AccessPattern = 'sequential' | 'random' | 'working-set';
export const ACCESS_PATTERNS: readonly AccessPattern[] = ['sequential', 'random', 'working-set'];

export interface GuestLayout {
  readonly base: number;
  readonly pageSize: number;
  readonly pages: number;
}

/**
 * The pages each vCPU touches, in order. Sequential splits the guest into
 * one contiguous share per vCPU; random shuffles all pages (seeded) and deals
 * them out; a working set touches only the recorded pages, in recorded order.
 */
export function vcpuPages(
  layout: GuestLayout,
  vcpus: number,
  pattern: AccessPattern,
  seed: number,
  workingSet?: readonly number[],
): number[][] {
  let order: number[];
  if (pattern === 'working-set') {
    if (workingSet === undefined) throw new Error('the working-set pattern needs a recorded working set');
    order = workingSet.filter((page) => page >= 0 && page < layout.pages);
  } else {
    order = Array.from({ length: layout.pages }, (_, i) => i);
    if (pattern === 'random') {
      const prng = new Prng(seed);
      for (let i = order.length - 1; i > 0; i--) {
        const j = prng.nextInt(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
    }
  }
  const shares: number[][] = Array.from({ length: vcpus }, () => []);
  if (pattern === 'sequential') {
    const per = Math.ceil(order.length / vcpus);
    for (let v = 0; v < vcpus; v++) shares[v] = order.slice(v * per, (v + 1) * per);
  } else {
    order.forEach((page, i) => {
      shares[i % vcpus]!.push(page);
    });
  }
  return shares;
}

/** A vCPU program: read the first bytes of each page in turn. */
export function* touchPages(layout: GuestLayout, pages: readonly number[]): Generator<ThreadAccess> {
  for (const page of pages) yield { kind: 'read', address: layout.base + page * layout.pageSize, length: 8 };
}

/** A working set file: JSON `{ "version": 1, "pageSize": N, "pages": [indices in first-touch order] }`. */
export interface WorkingSetFile {
  readonly version: 1;
  readonly pageSize: number;
  readonly pages: readonly number[];
}

export function readWorkingSet(file: string, pageSize: number): number[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`${file}: not a working-set file: ${(error as Error).message}`);
  }
  const value = parsed as Partial<WorkingSetFile>;
  if (value.version !== 1) throw new Error(`${file}: version: expected 1`);
  if (value.pageSize !== pageSize)
    throw new Error(`${file}: pageSize: recorded ${value.pageSize}, this guest uses ${pageSize}`);
  if (!Array.isArray(value.pages) || !value.pages.every((page) => Number.isInteger(page) && page >= 0)) {
    throw new Error(`${file}: pages: expected an array of page indices`);
  }
  return [...value.pages];
}
