/**
 * A sparse array of small integers indexed by page number: the model's
 * stand-in for the kernel's radix trees (page tables, the xarray behind the
 * page cache). Leaves of 512 slots hang off a Map keyed by `index >>> 9`, so a
 * populated page costs a few bytes and an untouched terabyte costs nothing.
 */

export const LEAF_SHIFT = 9;
export const LEAF_SLOTS = 1 << LEAF_SHIFT;
const LEAF_MASK = LEAF_SLOTS - 1;

export class SparseLeaf {
  // One allocation for both: each is a buffer outside V8's heap, which its
  // GC threads sweep and free (explore makes a few leaves per schedule).
  private readonly buffer = new ArrayBuffer(LEAF_SLOTS * 5);
  readonly values = new Int32Array(this.buffer, 0, LEAF_SLOTS);
  readonly flags = new Uint8Array(this.buffer, LEAF_SLOTS * 4, LEAF_SLOTS);
  /** Slots whose flags are non-zero; a leaf with none is dropped. */
  used = 0;
}

/**
 * Slots hold a flags byte (0 means empty) and an Int32 value. Page tables
 * use both; the page cache uses the value only, with flag 1 meaning "present".
 */
export class SparseArray {
  private readonly leaves = new Map<number, SparseLeaf>();
  private cachedKey = -1;
  private cachedLeaf: SparseLeaf | undefined;
  /** The entry `cachedKey` held before: a table is often walked at two places at once (COPY's source and destination). */
  private otherKey = -1;
  private otherLeaf: SparseLeaf | undefined;
  /**
   * Called with the index before a slot is changed by `set`, `setFlags` or
   * `clear` (every write goes through them). The parallel model sets it on
   * page tables to shoot down cached translations; null (the default) costs
   * one test per write.
   */
  onWrite: ((index: number) => void) | null = null;

  get leafCount(): number {
    return this.leaves.size;
  }

  private leaf(index: number): SparseLeaf | undefined {
    const key = Math.floor(index / LEAF_SLOTS);
    if (key === this.cachedKey) return this.cachedLeaf;
    const leaf = key === this.otherKey ? this.otherLeaf : this.leaves.get(key);
    this.otherKey = this.cachedKey;
    this.otherLeaf = this.cachedLeaf;
    this.cachedKey = key;
    this.cachedLeaf = leaf;
    return leaf;
  }

  flagsAt(index: number): number {
    const leaf = this.leaf(index);
    return leaf === undefined ? 0 : leaf.flags[index & LEAF_MASK]!;
  }

  valueAt(index: number): number {
    const leaf = this.leaf(index);
    return leaf === undefined ? 0 : leaf.values[index & LEAF_MASK]!;
  }

  set(index: number, flags: number, value: number): void {
    if (this.onWrite !== null) this.onWrite(index);
    let leaf = this.leaf(index);
    if (flags === 0) {
      if (leaf === undefined) return;
      const slot = index & LEAF_MASK;
      if (leaf.flags[slot] !== 0) leaf.used--;
      leaf.flags[slot] = 0;
      leaf.values[slot] = 0;
      if (leaf.used === 0) this.dropLeaf(index);
      return;
    }
    if (leaf === undefined) {
      leaf = new SparseLeaf();
      const key = Math.floor(index / LEAF_SLOTS);
      this.leaves.set(key, leaf);
      this.cachedKey = key;
      this.cachedLeaf = leaf;
    }
    const slot = index & LEAF_MASK;
    if (leaf.flags[slot] === 0) leaf.used++;
    leaf.flags[slot] = flags;
    leaf.values[slot] = value;
  }

  /** Changes only the flags of an occupied slot (flags must stay non-zero). */
  setFlags(index: number, flags: number): void {
    if (this.onWrite !== null) this.onWrite(index);
    const leaf = this.leaf(index);
    if (leaf === undefined || leaf.flags[index & LEAF_MASK] === 0 || flags === 0) {
      throw new Error(`SparseArray.setFlags: slot ${index} is empty or flags are zero`);
    }
    leaf.flags[index & LEAF_MASK] = flags;
  }

  clear(index: number): void {
    this.set(index, 0, 0);
  }

  private dropLeaf(index: number): void {
    const key = Math.floor(index / LEAF_SLOTS);
    this.leaves.delete(key);
    if (this.cachedKey === key) this.cachedLeaf = undefined;
    if (this.otherKey === key) this.otherLeaf = undefined;
  }

  /**
   * Visits occupied slots in [first, end) in ascending order. The callback may
   * clear or change the slot it is given, but must not add slots.
   */
  forEachInRange(
    first: number,
    end: number,
    visit: (index: number, flags: number, value: number) => void,
  ): void {
    if (end <= first || this.leaves.size === 0) return;
    const firstKey = Math.floor(first / LEAF_SLOTS);
    const endKey = Math.floor((end - 1) / LEAF_SLOTS) + 1;
    let keys: number[];
    if (endKey - firstKey > this.leaves.size * 2) {
      // A huge, sparse range: walking the populated leaves beats probing keys.
      keys = [];
      for (const key of this.leaves.keys()) if (key >= firstKey && key < endKey) keys.push(key);
      keys.sort((a, b) => a - b);
    } else {
      keys = [];
      for (let key = firstKey; key < endKey; key++) if (this.leaves.has(key)) keys.push(key);
    }
    for (const key of keys) {
      const leaf = this.leaves.get(key);
      if (leaf === undefined) continue;
      const base = key * LEAF_SLOTS;
      const lo = Math.max(first, base) - base;
      const hi = Math.min(end, base + LEAF_SLOTS) - base;
      for (let slot = lo; slot < hi; slot++) {
        const flags = leaf.flags[slot]!;
        if (flags !== 0) visit(base + slot, flags, leaf.values[slot]!);
      }
    }
  }

  /** Number of occupied slots in [first, end). */
  countInRange(first: number, end: number): number {
    let count = 0;
    this.forEachInRange(first, end, () => {
      count++;
    });
    return count;
  }

  /** Bytes held by the leaves, for the metadata-per-page measurement. */
  get bytesUsed(): number {
    return this.leaves.size * (LEAF_SLOTS * 5 + 64);
  }
}
