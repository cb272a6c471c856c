/** Observed step results and their comparison with a step's `expect`. */
import { errnoName, KernelError } from '../uapi/errno.ts';
import type { DataSpec } from './schema.ts';

/** What a step did, in the vocabulary of `expect`. */
export type ObservedResult = Record<string, unknown>;

/**
 * The addresses behind the places an observed result names (`map`/`offset`,
 * `from`, `to`), under a symbol key so that they are neither shown nor
 * diffed: a place is compared by address, as two names may cover it.
 */
export const PLACE_ADDRESSES = Symbol('placeAddresses');

export interface PlaceAddresses {
  place?: number;
  from?: number;
  to?: number;
}

/** The address range a map name stands for in the scenario's context. */
export type PlaceResolver = (map: string) => { start: number; length: number } | undefined;

export function errnoOf(error: unknown): string {
  if (error instanceof KernelError) return errnoName(error.errno);
  throw error;
}

function sameList(a: unknown, b: unknown, ordered: boolean): boolean {
  if (!Array.isArray(a) || !Array.isArray(b)) return false;
  if (a.length !== b.length) return false;
  if (ordered) return a.every((value, i) => JSON.stringify(value) === JSON.stringify(b[i]));
  const sorted = (list: unknown[]) => list.map((value) => JSON.stringify(value)).sort();
  return JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
}

/** What comparing one step's result needs besides the two records. */
interface Comparison {
  readonly wanted: Record<string, unknown>;
  readonly observed: ObservedResult;
  readonly dataOf: (spec: DataSpec) => Uint8Array;
  readonly resolve: PlaceResolver | undefined;
  readonly addresses: PlaceAddresses | undefined;
}

/**
 * The fields of `expected` that `observed` does not match, as
 * "field: expected X, got Y" strings. A step without `errno` in its expect
 * must succeed.
 */
export function compare(
  expected: Record<string, unknown> | undefined,
  observed: ObservedResult,
  dataOf: (spec: DataSpec) => Uint8Array,
  resolve?: PlaceResolver,
): string[] {
  const problems: string[] = [];
  const wanted = expected ?? {};
  const addresses = (observed as { [PLACE_ADDRESSES]?: PlaceAddresses })[PLACE_ADDRESSES];
  const comparison: Comparison = { wanted, observed, dataOf, resolve, addresses };
  if (wanted.errno === undefined && observed.errno !== undefined && observed.state === undefined) {
    problems.push(`expected success, got ${observed.errno}`);
  }
  // A step's own access that took a signal did not succeed either (a join reports its thread's state instead).
  if (wanted.signal === undefined && observed.signal !== undefined && observed.state === undefined) {
    problems.push(`expected success, got ${String(observed.signal)}`);
  }
  for (const [field, value] of Object.entries(wanted)) {
    const got = observed[field];
    const matches: FieldMatch = Object.hasOwn(FIELD_MATCHES, field)
      ? FIELD_MATCHES[field]!
      : (want, have) => have === want;
    if (!matches(value, got, field, comparison))
      problems.push(`${field}: expected ${show(value, dataOf)}, got ${show(got, dataOf)}`);
  }
  return problems;
}

/** Whether the expected place names the observed address (by address, when both are known). */
function samePlace(
  { resolve }: Comparison,
  expected: { map: string; offset: number | undefined },
  address: number | undefined,
  got: unknown,
): boolean {
  const { map, offset } = expected;
  const range = resolve?.(map);
  const place = got as { map: string; offset: number } | undefined;
  if (range === undefined || address === undefined) {
    return place !== undefined && place.map === map && (offset === undefined || place.offset === offset);
  }
  if (offset !== undefined) return range.start + offset === address;
  return (address >= range.start && address < range.start + range.length) || place?.map === map;
}

type FieldMatch = (want: unknown, got: unknown, field: string, comparison: Comparison) => boolean;

const listMatch: FieldMatch = (want, got, field) =>
  sameList(want, got, field === 'flags' && Array.isArray((want as unknown[])[0]));

const placeMatch: FieldMatch = (want, got, field, comparison) => {
  const place = want as { map: string; offset?: number };
  const address = comparison.addresses?.[field as 'from' | 'to'];
  return samePlace(comparison, { map: place.map, offset: place.offset ?? 0 }, address, got);
};

/**
 * An event's place: map and offset name one address together; an offset
 * without a map stays relative to the map the runner named.
 */
const eventPlaceMatch: FieldMatch = (want, got, _field, comparison) => {
  const { wanted, observed, addresses } = comparison;
  const map = wanted.map as string | undefined;
  if (map === undefined || addresses?.place === undefined) return got === want;
  const here = { map: observed.map, offset: observed.offset };
  return samePlace(comparison, { map, offset: wanted.offset as number | undefined }, addresses.place, here);
};

/** How each `expect` field is compared, where it is more than equality. */
const FIELD_MATCHES: Readonly<Record<string, FieldMatch>> = {
  data: (want, got, _field, { dataOf }) => {
    const bytes = dataOf(want as DataSpec);
    return (
      got instanceof Uint8Array && got.length === bytes.length && got.every((byte, i) => byte === bytes[i])
    );
  },
  // The kernel may offer more; the scenario lists what must be there.
  features: (want, got) => Array.isArray(got) && (want as string[]).every((name) => got.includes(name)),
  ioctls: listMatch,
  flags: listMatch,
  events: listMatch,
  pages: (want, got) =>
    Array.isArray(got) &&
    (want as Record<string, unknown>[]).length === got.length &&
    (want as Record<string, unknown>[]).every((page, i) =>
      Object.entries(page).every(([key, value]) => (got[i] as Record<string, unknown>)[key] === value),
    ),
  from: placeMatch,
  to: placeMatch,
  map: eventPlaceMatch,
  offset: eventPlaceMatch,
};

export function show(value: unknown, dataOf?: (spec: DataSpec) => Uint8Array): string {
  if (value === undefined) return '(nothing)';
  if (value instanceof Uint8Array) return describeBytes(value);
  if (
    dataOf !== undefined &&
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    ('text' in value || 'hex' in value || 'fill' in value)
  ) {
    return describeBytes(dataOf(value as DataSpec));
  }
  return JSON.stringify(value);
}

function describeBytes(bytes: Uint8Array): string {
  const head = Array.from(bytes.subarray(0, 16), (byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${bytes.length} bytes ${head}${bytes.length > 16 ? '…' : ''}`;
}

/** The result as JSON: byte arrays become hex strings. */
export function jsonResult(result: ObservedResult): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(result)) {
    out[key] = value instanceof Uint8Array ? { hex: Buffer.from(value).toString('hex') } : value;
  }
  return out;
}
