/**
 * The conformance runner: every case of the table against every memory type
 * under test, each run on a fresh model backend in which the type under test
 * is registered last (so it provides its objects even where another type
 * provides the same). A case is skipped, with the reason, when the type does
 * not declare what it requires or offers no memory the suite can obtain. A
 * case fails when it throws, when a hook broke its contract (the core's
 * warning), or when the invariant checker finds the core inconsistent during
 * or after it.
 */
import { ModelBackend } from '../api/model-backend.ts';
import { checkInvariants } from '../model/check.ts';
import type { KernelVersion } from '../model/kernel.ts';
import { BUILTIN_MEMORY_TYPES } from '../model/memtypes/builtin.ts';
import { HOOK_NAMES, type HookName } from '../model/mm/hooks.ts';
import type { MemoryType, MemoryTypeModule } from '../model/mm/memtype.ts';
import {
  ioctlNames,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
} from '../uapi/constants.ts';
import { CASES, type ConformanceCase } from './cases.ts';
import { CaseContext } from './context.ts';
import { declaredModes, describeSource, isFileBacked, memorySource } from './declared.ts';
import { type ProbeDeclarations, type ProbeRequest, probeModules, runIsolatedCase } from './isolate.ts';

export const CONFORMANCE_FORMAT = 'faultline-conformance';
export const CONFORMANCE_VERSION = 1;

/** A memory type module from outside the built-in list, with where it came from. */
export interface ExtraModule {
  readonly module: MemoryTypeModule;
  /** The file it was loaded from (`--module`), or null for one passed in code. */
  readonly path: string | null;
}

export interface ConformanceOptions {
  /** Modules registered after the built-in types. */
  readonly modules?: readonly ExtraModule[];
  /** Names of the types to check; default: the extra modules' types if any, else every registered type. */
  readonly memtypes?: readonly string[];
  /** Names of the cases to run; default: all. */
  readonly cases?: readonly string[];
  /** The kernel the model emulates; '7.1' (the default) has the final vm_uffd_ops for guest_memfd. */
  readonly version?: KernelVersion;
  readonly seed?: number;
  /** Milliseconds a case may take (default 30 s). */
  readonly timeoutMs?: number;
  /**
   * Run each case that applies in a worker thread of its own, killed at the
   * timeout or past `memoryMb` of heap (`conformance --module`). Needs every
   * extra module to come from a file.
   */
  readonly isolate?: boolean;
  /**
   * Memory type modules to load from these files in workers only: the probe
   * of their declarations (their top-level code and create()) and every case
   * run in workers of their own, with the timeout and the heap cap; none of
   * their code runs in this process (`conformance --module`).
   */
  readonly modulePaths?: readonly string[];
  /** The heap cap of an isolated case, in MiB (default 1024). */
  readonly memoryMb?: number;
  /** Called with each result as it is decided (text output streams them). */
  readonly onResult?: (result: CaseResult) => void;
}

export type CaseStatus = 'pass' | 'fail' | 'skip';

export interface CaseResult {
  readonly type: string;
  readonly case: string;
  readonly status: CaseStatus;
  /** Why it failed or was skipped. */
  readonly reason?: string;
  /** The hooks of the type under test the case called, by their kernel names. */
  readonly hooks: readonly HookName[];
  readonly durationMs: number;
}

export interface TypeSummary {
  readonly name: string;
  readonly description: string;
  /** 'builtin', or the module file it came from. */
  readonly source: string;
  readonly declares: {
    readonly provides: readonly string[];
    readonly rangeIoctls: readonly string[];
    readonly modes: readonly string[];
    readonly uffdOps: readonly string[] | null;
    readonly fileOps: MemoryType['fileOps'];
    readonly conformanceFile: boolean;
  };
  /** How the suite obtains its memory, or null when it cannot. */
  readonly memory: string | null;
}

export interface ConformanceReport {
  readonly format: typeof CONFORMANCE_FORMAT;
  readonly version: typeof CONFORMANCE_VERSION;
  readonly kernel: { readonly version: KernelVersion; readonly seed: number };
  readonly types: readonly TypeSummary[];
  readonly cases: readonly {
    readonly name: string;
    readonly description: string;
    readonly requires: readonly string[];
  }[];
  readonly results: readonly CaseResult[];
  readonly summary: { readonly passed: number; readonly failed: number; readonly skipped: number };
}

/** A problem with the options (an unknown type or case name). */
export class ConformanceError extends Error {
  override name = 'ConformanceError';
}

export async function runConformance(options: ConformanceOptions = {}): Promise<ConformanceReport> {
  const version = options.version ?? '7.1';
  const seed = options.seed ?? 1;
  const extras = options.modules ?? [];
  const cases = selectCases(options.cases);
  const settings = { version, seed, timeoutMs: options.timeoutMs ?? 30_000 };
  const paths: readonly (string | null)[] =
    options.modulePaths ?? (options.isolate === true ? extras.map((extra) => extra.path) : []);
  if (paths.length > 0 && !paths.includes(null))
    return runIsolated(options, paths as string[], cases, {
      ...settings,
      memoryMb: options.memoryMb ?? 1024,
    });
  const modules = [...BUILTIN_MEMORY_TYPES, ...extras.map((extra) => extra.module)];
  const { types, sources, selected } = registerTypes(extras, options.memtypes, version, seed);
  const results: CaseResult[] = [];
  for (const index of selected) {
    for (const testCase of cases) {
      const result = await runCase(testCase, types[index]!, modules, index, settings);
      results.push(result);
      options.onResult?.(result);
    }
  }
  const summaries = selected.map((index) => summarizeType(types[index]!, sources[index]!));
  return makeReport({ version, seed }, summaries, cases, results);
}

/**
 * Modules from files, none of whose code runs in this process: a worker
 * loads them and reads their declarations (their top-level code and create()
 * bounded by the timeout and the heap cap), and every case that applies runs
 * in a worker of its own.
 */
async function runIsolated(
  options: ConformanceOptions,
  paths: readonly string[],
  cases: readonly ConformanceCase[],
  settings: RunSettings & { readonly memoryMb: number },
): Promise<ConformanceReport> {
  const probed = await probeModules({
    modulePaths: paths,
    ...(options.memtypes === undefined ? {} : { memtypes: options.memtypes }),
    cases: cases.map((testCase) => testCase.name),
    ...settings,
  });
  if ('error' in probed) throw new ConformanceError(probed.error);
  const { types, skips } = probed.declared;
  const results: CaseResult[] = [];
  for (let t = 0; t < types.length; t++) {
    for (let c = 0; c < cases.length; c++) {
      const result = await runCaseInWorker(cases[c]!, types[t]!.name, skips[t]![c]!, paths, settings);
      results.push(result);
      options.onResult?.(result);
    }
  }
  return makeReport(settings, types, cases, results);
}

/**
 * Registers the built-in types and `extras` in a kernel (each module's
 * create() runs here) and selects the types to check.
 */
function registerTypes(
  extras: readonly ExtraModule[],
  memtypes: readonly string[] | undefined,
  version: KernelVersion,
  seed: number,
): { types: readonly MemoryType[]; sources: string[]; selected: number[] } {
  const modules = [...BUILTIN_MEMORY_TYPES, ...extras.map((extra) => extra.module)];
  // One kernel to read the declarations: each module registers exactly one type, in order.
  const probe = new ModelBackend({ seed, version, memoryTypes: modules }).kernel;
  const types = probe.registry.all();
  const sources = types.map((_, i) =>
    i < BUILTIN_MEMORY_TYPES.length ? 'builtin' : (extras[i - BUILTIN_MEMORY_TYPES.length]!.path ?? 'module'),
  );
  return { types, sources, selected: selectTypes(types, sources, memtypes, extras.length > 0) };
}

/** The selected types' declarations as plain data, and which cases each skips (the probe worker's answer). */
export function declareTypes(
  extras: readonly ExtraModule[],
  request: Pick<ProbeRequest, 'memtypes' | 'cases' | 'version' | 'seed'>,
): ProbeDeclarations {
  const { types, sources, selected } = registerTypes(extras, request.memtypes, request.version, request.seed);
  const cases = selectCases(request.cases);
  return {
    types: selected.map((index) => summarizeType(types[index]!, sources[index]!)),
    skips: selected.map((index) => cases.map((testCase) => skipReason(testCase, types[index]!))),
  };
}

function makeReport(
  kernel: { readonly version: KernelVersion; readonly seed: number },
  types: readonly TypeSummary[],
  cases: readonly ConformanceCase[],
  results: readonly CaseResult[],
): ConformanceReport {
  const count = (status: CaseStatus) => results.filter((result) => result.status === status).length;
  return {
    format: CONFORMANCE_FORMAT,
    version: CONFORMANCE_VERSION,
    kernel: { version: kernel.version, seed: kernel.seed },
    types,
    cases: cases.map((testCase) => ({
      name: testCase.name,
      description: testCase.description,
      requires: testCase.requires.map((requirement) => requirement.label),
    })),
    results,
    summary: { passed: count('pass'), failed: count('fail'), skipped: count('skip') },
  };
}

function selectTypes(
  types: readonly MemoryType[],
  sources: readonly string[],
  names: readonly string[] | undefined,
  haveExtras: boolean,
): number[] {
  if (names !== undefined && names.length > 0) {
    return names.map((name) => {
      const index = types.findIndex((type) => type.name === name);
      if (index < 0) {
        const known = types.map((type) => type.name).join(', ');
        throw new ConformanceError(`no memory type named '${name}' (registered: ${known})`);
      }
      return index;
    });
  }
  const all = types.map((_, i) => i);
  return haveExtras ? all.filter((i) => sources[i] !== 'builtin') : all;
}

function selectCases(names: readonly string[] | undefined): readonly ConformanceCase[] {
  if (names === undefined || names.length === 0) return CASES;
  return names.map((name) => {
    const found = CASES.find((testCase) => testCase.name === name);
    if (found === undefined) {
      throw new ConformanceError(
        `no conformance case named '${name}' (cases: ${CASES.map((c) => c.name).join(', ')})`,
      );
    }
    return found;
  });
}

interface RunSettings {
  readonly version: KernelVersion;
  readonly seed: number;
  readonly timeoutMs: number;
}

/** A result of `testCase` on `type`, timed from `started`. */
function resultOf(
  testCase: ConformanceCase,
  type: string,
  started: number,
  outcome: { status: CaseStatus; reason?: string | undefined; hooks?: readonly HookName[] },
): CaseResult {
  return {
    type,
    case: testCase.name,
    status: outcome.status,
    ...(outcome.reason === undefined ? {} : { reason: outcome.reason }),
    hooks: outcome.hooks ?? [],
    durationMs: Math.round((performance.now() - started) * 10) / 10,
  };
}

/** `runCase` in a worker of its own (see isolate.ts), unless the probe found it skipped. */
async function runCaseInWorker(
  testCase: ConformanceCase,
  type: string,
  skip: string | null,
  modulePaths: readonly string[],
  settings: RunSettings & { readonly memoryMb: number },
): Promise<CaseResult> {
  const started = performance.now();
  if (skip !== null) return resultOf(testCase, type, started, { status: 'skip', reason: skip });
  const reply = await runIsolatedCase({ modulePaths, type, case: testCase.name, ...settings });
  if ('error' in reply) return resultOf(testCase, type, started, { status: 'fail', reason: reply.error });
  const hooks = HOOK_NAMES.filter((hook) => reply.result.hooks.includes(hook));
  return resultOf(testCase, type, started, { ...reply.result, hooks });
}

/** Why `testCase` does not apply to `declared`, from its declaration alone; or null. */
function skipReason(testCase: ConformanceCase, declared: MemoryType): string | null {
  for (const requirement of testCase.requires) {
    const unmet = requirement.unmet(declared);
    if (unmet !== null) return unmet;
  }
  if (memorySource(declared) === null) {
    return 'offers no memory the suite can obtain (no provision and no conformanceFile)';
  }
  return null;
}

async function runCase(
  testCase: ConformanceCase,
  declared: MemoryType,
  modules: readonly MemoryTypeModule[],
  index: number,
  settings: RunSettings,
): Promise<CaseResult> {
  const started = performance.now();
  const skip = skipReason(testCase, declared);
  if (skip !== null) return resultOf(testCase, declared.name, started, { status: 'skip', reason: skip });
  return resultOf(
    testCase,
    declared.name,
    started,
    await executeCase(testCase, declared, modules, index, settings),
  );
}

interface CaseOutcome {
  readonly status: CaseStatus;
  readonly reason?: string | undefined;
  readonly hooks: readonly HookName[];
}

/** Runs one case on a fresh kernel and audits the core after it, and again after timers ran. */
async function executeCase(
  testCase: ConformanceCase,
  declared: MemoryType,
  modules: readonly MemoryTypeModule[],
  index: number,
  settings: RunSettings,
): Promise<CaseOutcome> {
  // The type under test registers last, so that its provisions are the ones the syscalls reach.
  const ordered = [...modules.filter((_, i) => i !== index), modules[index]!];
  const backend = new ModelBackend({ seed: settings.seed, version: settings.version, memoryTypes: ordered });
  const kernel = backend.kernel;
  const type = kernel.registry.byName(declared.name)!;
  const pageShift = isFileBacked(type) ? kernel.hooks.inodePageShift(type, { hugePageShift: 0 }) : 12;
  if (pageShift < 0) {
    const reason =
      kernel.hooks.lastViolation ?? `inodePageShift refuses the default page size (-${-pageShift})`;
    return { status: kernel.hooks.lastViolation === null ? 'skip' : 'fail', reason, hooks: [] };
  }
  const called = new Set<HookName>();
  kernel.hooks.onHook = (caller, hook) => {
    if (caller === type) called.add(hook);
  };
  let inconsistency: string | null = null;
  const checkCore = () => {
    if (inconsistency !== null) return;
    try {
      checkInvariants(kernel);
    } catch (error) {
      inconsistency = error instanceof Error ? error.message : String(error);
    }
  };
  backend.afterPump = checkCore;

  let failure: string | null = null;
  let skip: string | null = null;
  try {
    const context = new CaseContext(backend, type, memorySource(type)!, 2 ** pageShift);
    const outcome = await withTimeout(testCase.run(context), settings.timeoutMs);
    if (outcome !== undefined) skip = outcome.skip;
  } catch (error) {
    failure = error instanceof Error ? error.message : String(error);
  }
  kernel.hooks.onHook = null;
  checkCore();
  // A type may act later, from a timer: wait a tick of the event loop and audit again.
  await new Promise((resolve) => setTimeout(resolve, 0));
  await new Promise((resolve) => setImmediate(resolve));
  checkCore();
  const hooks = HOOK_NAMES.filter((hook) => called.has(hook));
  const warnings = kernel.hooks.warnings;
  const problems = [
    ...(warnings.length > 0 ? [`hook contract broken: ${warnings.join('; ')}`] : []),
    ...(failure === null ? [] : [failure]),
    ...(inconsistency === null ? [] : [`core state inconsistent: ${inconsistency}`]),
  ];
  if (problems.length > 0) return { status: 'fail', reason: problems.join(' | '), hooks };
  if (skip !== null) return { status: 'skip', reason: skip, hooks };
  return { status: 'pass', hooks };
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function summarizeType(type: MemoryType, source: string): TypeSummary {
  const ops = type.uffdOps;
  const opNames =
    ops === null
      ? null
      : Object.keys(ops).filter((key) => typeof ops[key as keyof typeof ops] === 'function');
  const modes = declaredModes(type);
  const memory = memorySource(type);
  return {
    name: type.name,
    description: type.description,
    source,
    declares: {
      provides: [...type.provides],
      rangeIoctls: ioctlNames(type.rangeIoctls),
      modes: [
        ...(modes & UFFDIO_REGISTER_MODE_MISSING ? ['missing'] : []),
        ...(modes & UFFDIO_REGISTER_MODE_WP ? ['wp'] : []),
        ...(modes & UFFDIO_REGISTER_MODE_MINOR ? ['minor'] : []),
      ],
      uffdOps: opNames,
      fileOps: type.fileOps,
      conformanceFile: type.conformanceFile !== undefined,
    },
    memory: memory === null ? null : describeSource(memory),
  };
}
