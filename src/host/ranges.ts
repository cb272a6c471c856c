/**
 * A set of disjoint address ranges: the mappings a host backend made, so
 * that disposing of it unmaps exactly those and never memory Node owns.
 */
export class RangeSet {
  /** Sorted, disjoint, non-adjacent [start, end) pairs. */
  private ranges: Array<[number, number]> = [];

  add(start: number, length: number): void {
    if (length <= 0) return;
    let begin = start;
    let end = start + length;
    const kept: Array<[number, number]> = [];
    for (const [s, e] of this.ranges) {
      if (e < begin || s > end) kept.push([s, e]);
      else {
        begin = Math.min(begin, s);
        end = Math.max(end, e);
      }
    }
    kept.push([begin, end]);
    kept.sort((a, b) => a[0] - b[0]);
    this.ranges = kept;
  }

  remove(start: number, length: number): void {
    if (length <= 0) return;
    const end = start + length;
    const kept: Array<[number, number]> = [];
    for (const [s, e] of this.ranges) {
      if (e <= start || s >= end) {
        kept.push([s, e]);
        continue;
      }
      if (s < start) kept.push([s, start]);
      if (e > end) kept.push([end, e]);
    }
    this.ranges = kept;
  }

  /** Drains the set: every range, in address order. */
  take(): Array<[number, number]> {
    const all = this.ranges;
    this.ranges = [];
    return all;
  }

  get size(): number {
    return this.ranges.length;
  }
}
