/**
 * The scenario file contract (docs/scenarios.md, from the shared SCENARIOS.md) as zod schemas. Names and
 * fields here are fixed by the contract; the project may add, never rename.
 * The JSON Schema published by `faultline schema` is generated from these.
 */
import { z } from 'zod';
import {
  EVENT_NAMES,
  FAULT_FLAG_NAMES,
  FEATURE_NAMES,
  IOCTL_NAMES,
  REGISTER_MODE_NAMES,
  UFFDIO_MODES,
  type UffdioModeIoctl,
  type UffdioModeName,
} from '../uapi/constants.ts';
import { errnoNumber } from '../uapi/errno.ts';

const SIZE_PATTERN = /^(0x[0-9a-fA-F]+|\d+)\s*([KMG])?$/;
const UNITS: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

const U64_MAX = (1n << 64n) - 1n;

/**
 * A number where it is exact, else a bigint: sizes run to 2^64-1 and are
 * read exactly (uapi fields are u64), and most stay small.
 */
export type Int64 = number | bigint;

export function exactInt(value: bigint): Int64 {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= -BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(value)
    : value;
}

/** Parses "16K", "2M", "0x1000" or a plain integer (NaN when malformed). */
export function parseSize(value: string | number): number {
  return Number(parseSizeExact(value));
}

/** As `parseSize`, exactly: a bigint beyond 2^53 (NaN when malformed or above 2^64-1). */
export function parseSizeExact(value: string | number | bigint): Int64 {
  if (typeof value !== 'string') return value;
  const match = SIZE_PATTERN.exec(value.trim());
  if (match === null) return Number.NaN;
  const bytes = BigInt(match[1]!) * BigInt(match[2] === undefined ? 1 : UNITS[match[2]]!);
  return bytes > U64_MAX ? Number.NaN : exactInt(bytes);
}

/** A u64 integer: a number, or a bigint for YAML integers beyond 2^53. */
const U64 = z.union([z.number().int().nonnegative(), z.bigint().min(0n).max(U64_MAX)]);

/** A size or offset: an integer, or a string with a K, M or G suffix (powers of two), up to 2^64-1. */
export const Size = z
  .union([U64, z.string().regex(SIZE_PATTERN, 'a size such as 4096, 16K, 2M or 1G')])
  .transform((value) => parseSizeExact(value))
  .refine((value) => !Number.isNaN(value), 'a size up to 2^64-1')
  .describe('bytes: an integer or a string with K, M or G');

const Name = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'a name: letters, digits, _ . -');

const ErrnoName = z.string().refine((name) => errnoNumber(name) !== undefined, {
  message: 'unknown errno name',
});

function nameList<T extends string>(names: readonly T[], what: string) {
  return z.array(z.enum(names as unknown as [T, ...T[]], { message: `unknown ${what}` }));
}

export const FeatureList = nameList(FEATURE_NAMES, 'feature');
export const IoctlList = nameList(IOCTL_NAMES, 'ioctl');
export const FaultFlagList = nameList(FAULT_FLAG_NAMES, 'fault flag');
export const ModeList = nameList(REGISTER_MODE_NAMES, 'register mode');

export const Data = z.union([
  z.strictObject({ text: z.string() }),
  z.strictObject({ hex: z.string().regex(/^([0-9a-fA-F]{2}\s*)*$/, 'an even number of hex digits') }),
  z.strictObject({ fill: z.number().int().min(0).max(255), length: Size }),
]);
export type DataSpec = z.infer<typeof Data>;

/** A progress field: bytes done, a negative errno, or "unwritten" (left as preset). */
const Progress = z.union([z.number().int(), z.literal('unwritten')]);

const Place = z.strictObject({ map: Name, offset: Size.optional() });

const ProcessField = { process: Name.optional() };

/**
 * Project addition: a step whose offset and length run past its map on purpose (an error path, an
 * UNMAP of more than the map). Without it the loader refuses such a step, so a shared file cannot
 * reach memory the scenario never mapped.
 */
const BeyondMap = { beyond_map: z.boolean().optional() };

const BaseExpect = { errno: ErrnoName.optional() };

/**
 * Project addition: a file step (fallocate, pwrite, pread, lseek) names a file, or instead a
 * userfaultfd (`uffd:`), for what Linux answers on an fd that is not a regular file. The loader
 * takes exactly one of the two.
 */
const FdTarget = { file: Name.optional(), uffd: Name.optional() };

function step<A extends z.ZodRawShape, E extends z.ZodRawShape>(args: A, expect: E) {
  return z.strictObject({ ...args, expect: z.strictObject({ ...BaseExpect, ...expect }).optional() });
}

const Prot = z.enum(['rw', 'r', 'none']);
/** The `mode:` list of a range ioctl: the flag names `UFFDIO_MODES` gives it. */
function modeFlags<I extends UffdioModeIoctl>(ioctl: I) {
  const names = Object.keys(UFFDIO_MODES[ioctl]) as UffdioModeName<I>[];
  return z.array(z.enum(names as [UffdioModeName<I>, ...UffdioModeName<I>[]]));
}

/** Each op's argument object, with `expect:` beside the args. */
export const OP_SCHEMAS = {
  memfd: step({ name: Name, size: Size, hugetlb: z.boolean().optional(), ...ProcessField }, {}),
  guest_memfd: step(
    {
      name: Name,
      size: Size,
      mmap: z.boolean().optional(),
      init_shared: z.boolean().optional(),
      ...ProcessField,
    },
    {},
  ),
  mmap: step(
    {
      name: Name,
      length: Size,
      prot: Prot.optional(),
      shared: z.boolean().optional(),
      file: Name.optional(),
      offset: Size.optional(),
      fd_readonly: z.boolean().optional(),
      hugetlb: z.union([z.boolean(), z.enum(['2M', '1G'])]).optional(),
      ...ProcessField,
    },
    {},
  ),
  munmap: step(
    { map: Name, offset: Size.optional(), length: Size.optional(), ...BeyondMap, ...ProcessField },
    {},
  ),
  mremap: step({ map: Name, to: Name, length: Size.optional(), onto: Name.optional(), ...ProcessField }, {}),
  mprotect: step(
    {
      map: Name,
      offset: Size.optional(),
      length: Size.optional(),
      prot: Prot,
      ...BeyondMap,
      ...ProcessField,
    },
    {},
  ),
  madvise: step(
    {
      map: Name,
      offset: Size.optional(),
      length: Size.optional(),
      advice: z.enum(['dontneed', 'free', 'remove', 'pageout']),
      ...BeyondMap,
      ...ProcessField,
    },
    {},
  ),
  fallocate: step(
    { ...FdTarget, offset: Size, length: Size, punch_hole: z.literal(true), ...ProcessField },
    {},
  ),
  pwrite: step({ ...FdTarget, offset: Size, data: Data, ...ProcessField }, {}),
  pread: step({ ...FdTarget, offset: Size, length: Size, ...ProcessField }, { data: Data.optional() }),
  lseek: step(
    {
      ...FdTarget,
      offset: Size,
      whence: z.enum(['set', 'cur', 'end', 'data', 'hole']).optional(),
      ...ProcessField,
    },
    { position: z.number().int().optional() },
  ),
  write: step(
    { map: Name, offset: Size, data: Data, ...BeyondMap, ...ProcessField },
    { signal: z.enum(['SIGBUS', 'SIGSEGV']).optional() },
  ),
  read: step(
    { map: Name, offset: Size, length: Size, ...BeyondMap, ...ProcessField },
    { data: Data.optional(), signal: z.enum(['SIGBUS', 'SIGSEGV']).optional() },
  ),
  thread: step(
    {
      name: Name,
      access: z.enum(['read', 'write', 'syscall_read']),
      map: Name,
      offset: Size,
      length: Size.optional(),
      data: Data.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    {},
  ),
  join: step(
    { thread: Name },
    {
      state: z.enum(['done', 'sigbus', 'segv', 'blocked']).optional(),
      data: Data.optional(),
      si_code: z.union([z.number().int(), z.string()]).optional(),
    },
  ),
  fork: step({ name: Name, ...ProcessField }, {}),
  exit: step({ process: Name }, {}),
  signal: step({ thread: Name, signal: z.string().regex(/^SIG[A-Z0-9]+$/) }, {}),
  userfaultfd: step(
    {
      name: Name,
      nonblock: z.boolean().optional(),
      user_mode_only: z.boolean().optional(),
      via: z.enum(['syscall', 'dev']).optional(),
      ...ProcessField,
    },
    {},
  ),
  api: step(
    { uffd: Name, features: FeatureList.optional(), ...ProcessField },
    { features: FeatureList.optional(), ioctls: IoctlList.optional() },
  ),
  register: step(
    {
      uffd: Name,
      map: Name,
      offset: Size.optional(),
      length: Size.optional(),
      modes: ModeList.optional(),
      mode_bits: U64.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    { ioctls: IoctlList.optional() },
  ),
  unregister: step(
    {
      uffd: Name,
      map: Name,
      offset: Size.optional(),
      length: Size.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    {},
  ),
  read_event: step(
    { uffd: Name, ...ProcessField },
    {
      event: z.enum(EVENT_NAMES as unknown as [string, ...string[]]).optional(),
      map: Name.optional(),
      offset: Size.optional(),
      flags: FaultFlagList.optional(),
      ptid: z.union([Name, z.literal(0)]).optional(),
      from: Place.optional(),
      to: Place.optional(),
      length: Size.optional(),
      child_uffd: Name.optional(),
    },
  ),
  read_raw: step(
    { uffd: Name, buffer: Size, ...ProcessField },
    { count: z.number().int().nonnegative().optional() },
  ),
  poll: step({ uffd: Name, ...ProcessField }, { events: z.array(z.enum(['in', 'err', 'hup'])).optional() }),
  copy: step(
    {
      uffd: Name,
      map: Name,
      offset: Size,
      length: Size,
      data: Data.optional(),
      src: Place.optional(),
      src_offset: Size.optional(),
      mode: modeFlags('copy').optional(),
      mode_bits: U64.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    { copy: Progress.optional() },
  ),
  zeropage: step(
    {
      uffd: Name,
      map: Name,
      offset: Size,
      length: Size,
      mode: modeFlags('zeropage').optional(),
      mode_bits: U64.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    { zeropage: Progress.optional() },
  ),
  continue: step(
    {
      uffd: Name,
      map: Name,
      offset: Size,
      length: Size,
      mode: modeFlags('continue').optional(),
      mode_bits: U64.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    { mapped: Progress.optional() },
  ),
  writeprotect: step(
    {
      uffd: Name,
      map: Name,
      offset: Size,
      length: Size,
      mode: modeFlags('writeprotect').optional(),
      mode_bits: U64.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    {},
  ),
  poison: step(
    {
      uffd: Name,
      map: Name,
      offset: Size,
      length: Size,
      mode: modeFlags('poison').optional(),
      mode_bits: U64.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    { updated: Progress.optional() },
  ),
  move: step(
    {
      uffd: Name,
      src: Place,
      dst: Place,
      length: Size,
      mode: modeFlags('move').optional(),
      mode_bits: U64.optional(),
      ...BeyondMap,
      ...ProcessField,
    },
    { move: Progress.optional() },
  ),
  wake: step({ uffd: Name, map: Name, offset: Size, length: Size, ...BeyondMap, ...ProcessField }, {}),
  close: step({ uffd: Name, ...ProcessField }, {}),
  pagemap: step(
    { map: Name, offset: Size, length: Size, ...BeyondMap, ...ProcessField },
    {
      pages: z
        .array(
          z.strictObject({
            present: z.boolean().optional(),
            uffd_wp: z.boolean().optional(),
            marker: z.enum(['wp', 'poison', 'none']).optional(),
            zero_page: z.boolean().optional(),
          }),
        )
        .optional(),
    },
  ),
  vmas: step(
    { map: Name, ...ProcessField },
    { count: z.number().int().nonnegative().optional(), flags: z.array(ModeList).optional() },
  ),
} as const;

export type OpName = keyof typeof OP_SCHEMAS;
export const OP_NAMES = Object.keys(OP_SCHEMAS) as OpName[];

/** Op `O`'s arguments (sizes parsed), without `expect`. */
export type OpArgs<O extends OpName> = Omit<z.infer<(typeof OP_SCHEMAS)[O]>, 'expect'>;
/** What op `O` may expect. */
export type OpExpect<O extends OpName> = NonNullable<z.infer<(typeof OP_SCHEMAS)[O]>['expect']>;

/** One step of op `O`, validated by its schema; `line` is where it starts in its file. */
export interface StepOf<O extends OpName> {
  readonly index: number;
  readonly op: O;
  readonly args: OpArgs<O>;
  readonly expect: OpExpect<O> | undefined;
  readonly line: number;
}

/** Any step: a union discriminated by `op`. */
export type Step = { [O in OpName]: StepOf<O> }[OpName];

type KeysOfUnion<T> = T extends unknown ? keyof T : never;
type ValueOfUnion<T, K extends PropertyKey> = T extends unknown ? (K extends keyof T ? T[K] : never) : never;
/** Every field any member of `T` has, optional, typed as the union of what the members give it. */
type Loose<T> = { readonly [K in KeysOfUnion<T>]?: ValueOfUnion<T, K> };

/**
 * Any op's arguments seen by field name: for the loader's checks that hold
 * for a field in every op that has it (a `map` names a map, `length` is bytes).
 */
export type AnyOpArgs = Loose<{ [O in OpName]: OpArgs<O> }[OpName]>;
/** Any op's `expect`, by field name. */
export type AnyOpExpect = Loose<{ [O in OpName]: OpExpect<O> }[OpName]>;

export const Capability = z.enum(['hugetlb', 'guest_memfd', 'vm_uffd_ops', 'root']);

/** The file header; `steps` is validated step by step so errors point at the step. */
export const ScenarioHeader = z.strictObject({
  name: Name,
  description: z.string().optional(),
  page_size: z.literal(4096).optional(),
  kernel: z.enum(['6.18', '7.1']).optional(),
  requires: z.array(Capability).optional(),
  /** Project addition: a divergence from the host that is intended, with its reason. */
  divergence: z.string().optional(),
  steps: z.array(z.unknown()).min(1, 'a scenario needs at least one step'),
});

/** The JSON Schema for editors: the header plus a one-key mapping per op. */
export function scenarioJsonSchema(): unknown {
  const stepSchema = z.union(OP_NAMES.map((op) => z.strictObject({ [op]: OP_SCHEMAS[op] })) as never);
  const file = ScenarioHeader.extend({ steps: z.array(stepSchema).min(1) });
  return {
    $id: 'https://faultline.invalid/scenario.schema.json',
    title: 'faultline scenario',
    ...z.toJSONSchema(file, { io: 'input', unrepresentable: 'any' }),
  };
}
