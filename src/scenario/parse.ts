/**
 * Loading scenario files: YAML or JSON (parsed by the yaml library, which
 * keeps source positions for both), validated against the contract before
 * anything runs. Every problem is reported as `file:line:col: field: problem`.
 */
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isMap, isPair, isScalar, LineCounter, type Node, parseDocument } from 'yaml';
import type { z } from 'zod';
import {
  type AnyOpArgs,
  type AnyOpExpect,
  exactInt,
  OP_NAMES,
  OP_SCHEMAS,
  type OpName,
  ScenarioHeader,
  type Step,
} from './schema.ts';

export type { Step };

export class ScenarioError extends Error {
  override name = 'ScenarioError';
  constructor(
    readonly file: string,
    readonly line: number,
    readonly col: number,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${file}:${line}:${col}: ${field}: ${problem}`);
  }
}

export interface Scenario {
  readonly file: string;
  readonly name: string;
  readonly description: string;
  readonly kernel: '6.18' | '7.1';
  readonly requires: readonly string[];
  readonly divergence: string | undefined;
  readonly steps: readonly Step[];
}

type Path = readonly (string | number)[];

class Locator {
  private readonly lines = new LineCounter();
  readonly document;

  constructor(
    readonly file: string,
    text: string,
  ) {
    // Integers are read as bigints, so one beyond 2^53 stays exact; `toJS` turns the small ones back into numbers.
    this.document = parseDocument(text, {
      lineCounter: this.lines,
      prettyErrors: false,
      uniqueKeys: true,
      intAsBigInt: true,
    });
  }

  /** The node at `path`, or the nearest ancestor that exists. */
  private nodeAt(path: Path): { node: Node | null; found: boolean } {
    let node: unknown = this.document.contents;
    for (let i = 0; i < path.length; i++) {
      const next = (node as { get?: (key: unknown, keepScalar: boolean) => unknown })?.get?.(path[i], true);
      if (next === undefined || next === null) return { node: node as Node, found: false };
      node = next;
    }
    return { node: node as Node, found: true };
  }

  /** The key node of `key` inside the mapping at `path` (for unknown-field errors). */
  private keyAt(path: Path, key: string): Node | null {
    const { node, found } = this.nodeAt(path);
    if (!found || !isMap(node)) return null;
    for (const item of node.items) {
      if (isPair(item) && isScalar(item.key) && item.key.value === key) return item.key;
    }
    return null;
  }

  position(offset: number | undefined): { line: number; col: number } {
    if (offset === undefined) return { line: 1, col: 1 };
    return this.lines.linePos(offset);
  }

  error(path: Path, problem: string, key?: string): ScenarioError {
    const keyNode = key === undefined ? null : this.keyAt(path, key);
    const { node } = keyNode === null ? this.nodeAt(path) : { node: keyNode };
    const { line, col } = this.position(node?.range?.[0]);
    const fieldPath = key === undefined ? path : [...path, key];
    return new ScenarioError(this.file, line, col, formatPath(fieldPath), problem);
  }

  line(path: Path): number {
    const { node } = this.nodeAt(path);
    return this.position(node?.range?.[0]).line;
  }
}

function formatPath(path: Path): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out === '' ? part : `.${part}`;
  return out || '(file)';
}

/** Fields whose allowed forms are a size: an integer or a string with K, M or G. */
const SIZE_FIELDS = new Set(['size', 'length', 'offset', 'src_offset', 'buffer']);

/** Whether a value exists at `path` inside `raw` (zod v4 issues carry no `input` unless asked). */
function present(raw: unknown, path: readonly (string | number)[]): boolean {
  let node: unknown = raw;
  for (const part of path) {
    if (typeof node !== 'object' || node === null || !(part in node)) return false;
    node = (node as Record<string | number, unknown>)[part];
  }
  return node !== undefined;
}

function zodError(locator: Locator, base: Path, error: z.ZodError, raw: unknown): ScenarioError {
  const issue = error.issues[0]!;
  const path = [...base, ...(issue.path as (string | number)[])];
  if (issue.code === 'unrecognized_keys') {
    return locator.error(path, `unknown field '${issue.keys[0]}'`, issue.keys[0]);
  }
  if (
    (issue.code === 'invalid_type' || issue.code === 'invalid_union') &&
    !present(raw, issue.path as (string | number)[])
  ) {
    const parent = path.slice(0, -1);
    return locator.error(parent, `missing field '${String(path[path.length - 1])}'`);
  }
  if (issue.code === 'invalid_union') {
    const field = String(path[path.length - 1]);
    if (SIZE_FIELDS.has(field)) return locator.error(path, 'a size such as 4096, 16K, 2M or 1G');
    if (field === 'data')
      return locator.error(path, 'does not match any allowed form (data is {text}, {hex} or {fill, length})');
    return locator.error(path, 'does not match any allowed form');
  }
  return locator.error(path, issue.message);
}

/** Bigints that a number holds exactly become numbers; the rest stay bigints (u64 fields). */
function smallIntsAsNumbers(value: unknown): unknown {
  if (typeof value === 'bigint') return exactInt(value);
  if (Array.isArray(value)) return value.map(smallIntsAsNumbers);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, smallIntsAsNumbers(item)]));
  }
  return value;
}

/** Parses and validates one scenario's text; throws ScenarioError. */
export function parseScenario(text: string, file: string): Scenario {
  const locator = new Locator(file, text);
  const yamlError = locator.document.errors[0];
  if (yamlError !== undefined) {
    const { line, col } = locator.position(yamlError.pos[0]);
    throw new ScenarioError(file, line, col, '(syntax)', yamlError.message.split('\n')[0]!);
  }
  let raw: unknown;
  try {
    raw = smallIntsAsNumbers(locator.document.toJS({ maxAliasCount: MAX_ALIAS_COUNT }));
  } catch (error) {
    // The yaml library refuses aliases that expand past the limit (a "billion laughs" file).
    if (!(error instanceof ReferenceError)) throw error;
    throw locator.error(
      [],
      `YAML aliases expand too far (more than ${MAX_ALIAS_COUNT} uses of one anchor's nodes)`,
    );
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw locator.error([], 'a scenario is a mapping with name and steps');
  }
  const header = ScenarioHeader.safeParse(raw);
  if (!header.success) throw zodError(locator, [], header.error, raw);
  if (header.data.steps.length > MAX_STEPS) {
    throw locator.error(['steps'], `${header.data.steps.length} steps; a scenario has at most ${MAX_STEPS}`);
  }
  const steps: Step[] = [];
  header.data.steps.forEach((rawStep, index) => {
    const path = ['steps', index];
    if (typeof rawStep !== 'object' || rawStep === null || Array.isArray(rawStep)) {
      throw locator.error(path, 'a step is a one-key mapping such as "copy: {…}"');
    }
    const keys = Object.keys(rawStep);
    if (keys.length !== 1) throw locator.error(path, `a step has exactly one op, found ${keys.length} keys`);
    const op = keys[0]!;
    if (!(OP_NAMES as string[]).includes(op)) throw locator.error(path, `unknown op '${op}'`, op);
    const value = (rawStep as Record<string, unknown>)[op] ?? {};
    const parsed = OP_SCHEMAS[op as OpName].safeParse(value);
    if (!parsed.success) throw zodError(locator, [...path, op], parsed.error, value);
    const { expect, ...args } = parsed.data;
    // The schema of `op` parsed it: the record is op's step (TypeScript cannot follow the correlation).
    steps.push({ index, op, args, expect, line: locator.line(path) } as Step);
  });
  const scenario: Scenario = {
    file,
    name: header.data.name,
    description: header.data.description ?? '',
    kernel: header.data.kernel ?? '6.18',
    requires: header.data.requires ?? [],
    divergence: header.data.divergence,
    steps,
  };
  checkReferences(scenario, locator);
  checkBounds(scenario, locator);
  return scenario;
}

/**
 * The most bytes one step may populate, read or write (copy, zeropage, continue, poison, move,
 * read, write, pread, pwrite, a thread's access, read_raw's buffer, pagemap, data): a step past it
 * would grow the model (or the runner's buffers) without bound. A length at or past 2^47 (the end
 * of x86-64 user space) covers no mapping and stays allowed: it is an error path the kernel rejects
 * before touching memory.
 */
export const MAX_STEP_BYTES = 256 * 1024 * 1024;
/** The most bytes all of a scenario's steps may populate, read or write together. */
export const MAX_SCENARIO_BYTES = 1024 * 1024 * 1024;
const USER_SPACE_END = 2 ** 47;

const HUGE_PAGE: Record<string, number> = { '2M': 2 * 1024 * 1024, '1G': 1024 * 1024 * 1024 };

/** A size as a number (a u64 beyond 2^53 is a bigint; bounds need only its magnitude). */
function num(value: number | bigint | undefined): number | undefined {
  return value === undefined ? undefined : Number(value);
}

function dataLength(data: unknown): number {
  if (data === undefined || data === null || typeof data !== 'object') return 0;
  const spec = data as { text?: string; hex?: string; length?: number };
  if (spec.text !== undefined) return new TextEncoder().encode(spec.text).byteLength;
  if (spec.hex !== undefined) return spec.hex.replace(/\s+/g, '').length / 2;
  return num(spec.length) ?? 0;
}

/** Ops whose `length` (or data) is memory the step touches. */
const TOUCHING_OPS: ReadonlySet<string> = new Set([
  'copy',
  'zeropage',
  'continue',
  'poison',
  'move',
  'read',
  'write',
  'pread',
  'pwrite',
  'thread',
  'read_raw',
  'pagemap',
]);

/** The bytes a step touches, for the caps. */
function touchedBytes(step: Step): number {
  const a: AnyOpArgs = step.args;
  if (!TOUCHING_OPS.has(step.op)) return 0;
  // Sizes past 2^53 are bigints (exact u64s); as numbers they only need to compare here.
  if (step.op === 'read_raw') return Number(num(a.buffer));
  if (step.op === 'write' || step.op === 'pwrite') return dataLength(a.data);
  if (step.op === 'thread') return a.access === 'write' ? dataLength(a.data) : Number(num(a.length) ?? 1);
  return Math.max(Number(num(a.length) ?? 0), dataLength(a.data));
}

/**
 * Offsets and lengths stay inside the map they name (a map's length is fixed by its mmap or
 * mremap step), unless the step says `beyond_map: true`; and no step touches more than
 * MAX_STEP_BYTES, nor the whole scenario more than MAX_SCENARIO_BYTES.
 */
function checkBounds(scenario: Scenario, locator: Locator): void {
  const mapLength = new Map<string, number>();
  const hugeFiles = new Set<string>();
  let total = 0;
  for (const step of scenario.steps) {
    const a: AnyOpArgs = step.args;
    const base: Path = ['steps', step.index, step.op];
    const touched = touchedBytes(step);
    if (touched > MAX_STEP_BYTES && touched < USER_SPACE_END) {
      const field = step.op === 'read_raw' ? 'buffer' : num(a.length) !== undefined ? 'length' : 'data';
      throw locator.error(
        base,
        `${touched} bytes is more than one step may touch (${MAX_STEP_BYTES})`,
        field,
      );
    }
    if (touched < USER_SPACE_END) total += touched;
    if (total > MAX_SCENARIO_BYTES) {
      throw locator.error(
        base,
        `the steps so far touch ${total} bytes, more than a scenario may (${MAX_SCENARIO_BYTES})`,
      );
    }
    if (step.op === 'memfd' && step.args.hugetlb === true) hugeFiles.add(step.args.name);
    if (step.op === 'mmap') {
      const { hugetlb, file } = step.args;
      const page =
        hugetlb === '1G'
          ? HUGE_PAGE['1G']!
          : hugetlb !== undefined && hugetlb !== false
            ? HUGE_PAGE['2M']!
            : file !== undefined && hugeFiles.has(file)
              ? HUGE_PAGE['2M']!
              : 4096;
      mapLength.set(step.args.name, Math.ceil(Number(step.args.length) / page) * page);
      continue;
    }
    if (step.op === 'mremap') {
      const { to, map, length } = step.args;
      mapLength.set(to, Math.ceil((num(length) ?? mapLength.get(map) ?? 0) / 4096) * 4096);
      continue;
    }
    if (a.beyond_map === true) continue;
    for (const range of stepRanges(step)) {
      const length = mapLength.get(range.map);
      if (length === undefined) continue;
      if (range.offset > length || range.offset + range.length > length) {
        const end = range.offset + range.length;
        throw locator.error(
          range.path,
          `[${range.offset}, ${end}) runs past map '${range.map}' (${length} bytes); ` +
            'a step that goes past its map on purpose says beyond_map: true',
        );
      }
    }
  }
}

interface StepRange {
  readonly map: string;
  readonly offset: number;
  readonly length: number;
  readonly path: Path;
}

/** The map ranges a step names, with the field to blame. */
function stepRanges(step: Step): StepRange[] {
  const base: Path = ['steps', step.index, step.op];
  if (step.op === 'move') {
    const { src, dst, length } = step.args;
    return [
      { map: src.map, offset: Number(num(src.offset) ?? 0), length: Number(length), path: [...base, 'src'] },
      { map: dst.map, offset: Number(num(dst.offset) ?? 0), length: Number(length), path: [...base, 'dst'] },
    ];
  }
  const a: AnyOpArgs = step.args;
  if (typeof a.map !== 'string' || step.op === 'vmas') return [];
  const offset = Number(num(a.offset) ?? 0);
  const field = num(a.length) !== undefined ? 'length' : 'offset';
  const ranges: StepRange[] = [];
  let length: number | undefined;
  if (step.op === 'read' || step.op === 'thread' || step.op === 'write') {
    length = a.data !== undefined ? dataLength(a.data) : Number(num(a.length) ?? 1);
  } else {
    length = num(a.length) === undefined ? undefined : Number(num(a.length));
  }
  ranges.push({ map: a.map, offset, length: length ?? 0, path: [...base, field] });
  if (step.op === 'copy' && typeof a.src === 'object') {
    ranges.push({
      map: a.src.map,
      offset: Number(num(a.src.offset) ?? 0),
      length: Number(num(a.length)),
      path: [...base, 'src'],
    });
  }
  return ranges;
}

type Kind = 'file' | 'map' | 'uffd' | 'thread' | 'process';

/** Ops that act on an fd: a file's, or a userfaultfd's. */
const FD_TARGET_OPS: ReadonlySet<string> = new Set(['fallocate', 'pwrite', 'pread', 'lseek']);

/** Names are defined before use, unique, and refer to objects of the right kind. */
function checkReferences(scenario: Scenario, locator: Locator): void {
  const defined = new Map<string, Kind>([['main', 'process']]);
  const define = (name: string, kind: Kind, path: Path) => {
    if (defined.has(name))
      throw locator.error(path, `duplicate name '${name}' (already a ${defined.get(name)})`);
    defined.set(name, kind);
  };
  const use = (name: unknown, kind: Kind, path: Path) => {
    if (typeof name !== 'string') return;
    const found = defined.get(name);
    if (found === undefined)
      throw locator.error(path, `unknown ${kind} '${name}' (not defined by an earlier step)`);
    if (found !== kind) throw locator.error(path, `'${name}' is a ${found}, not a ${kind}`);
  };
  for (const step of scenario.steps) {
    const base: Path = ['steps', step.index, step.op];
    const a: AnyOpArgs = step.args;
    const at = (field: string) => [...base, field];
    if (a.process !== undefined) use(a.process, 'process', at('process'));
    if (FD_TARGET_OPS.has(step.op) && (a.file === undefined) === (a.uffd === undefined))
      throw locator.error(base, "give one of 'file' and 'uffd'");
    if (a.file !== undefined) use(a.file, 'file', at('file'));
    if (a.map !== undefined) use(a.map, 'map', at('map'));
    if (a.uffd !== undefined) use(a.uffd, 'uffd', at('uffd'));
    if (step.op === 'join' || step.op === 'signal') use(a.thread, 'thread', at('thread'));
    if (a.onto !== undefined) use(a.onto, 'map', at('onto'));
    if (typeof a.src === 'object') use(a.src.map, 'map', [...at('src'), 'map']);
    if (typeof a.dst === 'object') use(a.dst.map, 'map', [...at('dst'), 'map']);
    switch (step.op) {
      case 'memfd':
      case 'guest_memfd':
        define(step.args.name, 'file', at('name'));
        break;
      case 'mmap':
        define(step.args.name, 'map', at('name'));
        break;
      case 'mremap':
        define(step.args.to, 'map', at('to'));
        break;
      case 'userfaultfd':
        define(step.args.name, 'uffd', at('name'));
        break;
      case 'thread':
        define(step.args.name, 'thread', at('name'));
        if (step.args.access === 'write' && step.args.data === undefined)
          throw locator.error(base, "missing field 'data'");
        break;
      case 'fork':
        define(step.args.name, 'process', at('name'));
        break;
      case 'copy':
        if (step.args.data === undefined && step.args.src === undefined)
          throw locator.error(base, "missing field 'data' (or 'src')");
        break;
      case 'register':
        if (step.args.modes === undefined && step.args.mode_bits === undefined) {
          throw locator.error(base, "missing field 'modes' (or 'mode_bits')");
        }
        break;
      default:
        break;
    }
    const expect: AnyOpExpect | undefined = step.expect;
    if (expect === undefined) continue;
    const expectPath = [...base, 'expect'];
    if (expect.map !== undefined) use(expect.map, 'map', [...expectPath, 'map']);
    if (typeof expect.ptid === 'string') use(expect.ptid, 'thread', [...expectPath, 'ptid']);
    if (typeof expect.from === 'object') use(expect.from.map, 'map', [...expectPath, 'from', 'map']);
    if (typeof expect.to === 'object') use(expect.to.map, 'map', [...expectPath, 'to', 'map']);
    if (expect.child_uffd !== undefined) define(expect.child_uffd, 'uffd', [...expectPath, 'child_uffd']);
  }
}

/** The largest scenario file the loader reads (the corpus's largest is a few KiB). */
export const MAX_SCENARIO_FILE_BYTES = 1024 * 1024;
/** Steps in one scenario. */
export const MAX_STEPS = 10_000;
/** Uses of YAML aliases a document may expand (the yaml library's count). */
export const MAX_ALIAS_COUNT = 100;

/** What a path that is not a regular file is, for the message. */
function fileKind(stats: ReturnType<typeof statSync>): string {
  if (stats === undefined) return 'missing';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** The text of a scenario file: a regular file of at most MAX_SCENARIO_FILE_BYTES, read without blocking on it. */
function readScenarioFile(file: string): string {
  const stats = statSync(file);
  if (!stats.isFile()) {
    throw new ScenarioError(
      file,
      1,
      1,
      '(file)',
      `${fileKind(stats)}, not a regular file: scenarios are files`,
    );
  }
  const tooBig = () =>
    new ScenarioError(
      file,
      1,
      1,
      '(file)',
      `larger than ${MAX_SCENARIO_FILE_BYTES} bytes, the most a scenario file may have`,
    );
  if (stats.size > MAX_SCENARIO_FILE_BYTES) throw tooBig();
  // Read at most one byte past the limit: a file that grows (or a /proc file whose size says 0) stays bounded.
  const buffer = Buffer.alloc(MAX_SCENARIO_FILE_BYTES + 1);
  const fd = openSync(file, 'r');
  let length = 0;
  try {
    for (;;) {
      const count = readSync(fd, buffer, length, buffer.length - length, null);
      if (count === 0) break;
      length += count;
      if (length > MAX_SCENARIO_FILE_BYTES) throw tooBig();
    }
  } finally {
    closeSync(fd);
  }
  return buffer.toString('utf8', 0, length);
}

/** Every scenario file under `path` (a file or a directory, recursively), sorted. */
export function scenarioFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  const files: string[] = [];
  for (const entry of readdirSync(path).sort()) {
    const full = join(path, entry);
    if (statSync(full).isDirectory()) files.push(...scenarioFiles(full));
    else if (/\.(ya?ml|json)$/.test(entry)) files.push(full);
  }
  return files;
}

/** Loads every scenario under `path`; the first malformed file stops the load. */
export function loadScenarios(path: string): Scenario[] {
  const scenarios: Scenario[] = [];
  const names = new Map<string, string>();
  for (const file of scenarioFiles(path)) {
    const scenario = parseScenario(readScenarioFile(file), file);
    const previous = names.get(scenario.name);
    if (previous !== undefined) {
      throw new ScenarioError(
        file,
        1,
        1,
        'name',
        `duplicate scenario name '${scenario.name}' (also in ${previous})`,
      );
    }
    names.set(scenario.name, file);
    scenarios.push(scenario);
  }
  return scenarios;
}
