/**
 * The layer check: every import in src/ (values and types alike, dynamic
 * imports too) goes to a file of the same layer or a lower one, and no
 * files import each other in a cycle. The allowed order is `LAYERS`, written
 * once here; docs/architecture.md draws the same picture.
 *
 *   node --import tsx tools/layers.ts [ROOT]     exit 0 clean, 1 violations
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * Bottom first. A file belongs to the layer of its longest matching entry
 * (a folder ending in '/' or one file); a file may import its own layer or
 * any layer below it.
 */
export const LAYERS: readonly (readonly [name: string, paths: readonly string[]])[] = [
  ['uapi', ['src/uapi/']],
  ['trace', ['src/trace/']],
  ['model base', ['src/model/failure.ts', 'src/model/prng.ts', 'src/model/inject.ts', 'src/model/clock.ts']],
  ['model mem', ['src/model/mem/']],
  ['model task', ['src/model/task.ts']],
  ['model mm core', ['src/model/mm/', 'src/model/mem/pagecache.ts']],
  ['model memtypes', ['src/model/memtypes/']],
  ['model uffd', ['src/model/uffd/', 'src/model/schedule.ts']],
  ['model process', ['src/model/process.ts']],
  ['model fs', ['src/model/fs/']],
  [
    'model calls',
    [
      'src/model/mm/mmap.ts',
      'src/model/mm/munmap.ts',
      'src/model/mm/mprotect.ts',
      'src/model/mm/madvise.ts',
      'src/model/mm/mremap.ts',
      'src/model/fork.ts',
      'src/model/syscall.ts',
    ],
  ],
  ['model kernel', ['src/model/kernel.ts', 'src/model/check.ts', 'src/model/hang.ts']],
  ['model parallel', ['src/model/parallel/']],
  ['api interface', ['src/api/backend.ts', 'src/api/validate.ts']],
  ['backends', ['src/api/model-backend.ts', 'src/host/']],
  ['api', ['src/api/']],
  [
    'programs',
    [
      'src/scenario/',
      'src/workloads/',
      'src/conformance/',
      'src/fuzz/',
      'src/bench/',
      'src/handlers/',
      'src/explore/',
    ],
  ],
  ['cli', ['src/cli/']],
];

/**
 * Imports that break the order, each with why it is tolerated; the check
 * fails on any other. Empty: issue 13 moved the system calls out of
 * process.ts, the last file that called upwards.
 */
export const KNOWN_VIOLATIONS: readonly string[] = [];

export interface LayerViolation {
  readonly kind: 'upward' | 'cycle' | 'unlayered';
  readonly message: string;
}

/** The layer index of a src-relative path, or -1. */
export function layerOf(path: string): number {
  let best = -1;
  let bestLength = -1;
  LAYERS.forEach(([, paths], index) => {
    for (const entry of paths) {
      const matches = entry.endsWith('/') ? path.startsWith(entry) : path === entry;
      if (matches && entry.length > bestLength) {
        best = index;
        bestLength = entry.length;
      }
    }
  });
  return best;
}

function sourceFiles(root: string, folder = 'src'): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(join(root, folder), { withFileTypes: true })) {
    const path = `${folder}/${entry.name}`;
    if (entry.isDirectory()) files.push(...sourceFiles(root, path));
    else if (/\.(ts|js)$/.test(entry.name)) files.push(path);
  }
  return files.sort();
}

export interface Import {
  /** Repository-relative path of the imported file. */
  readonly target: string;
  /** Only types cross (import type, export type, or every name marked type). */
  readonly typeOnly: boolean;
}

/** The relative imports of `file`: static, re-exports and dynamic import(). */
export function importsOf(file: string, text: string): Import[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false);
  const found: Import[] = [];
  const add = (specifier: string, typeOnly: boolean) => {
    if (!specifier.startsWith('.')) return;
    found.push({
      target: relative('.', join(dirname(file), specifier))
        .split('\\')
        .join('/'),
      typeOnly,
    });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, importIsTypeOnly(node.importClause));
    } else if (
      ts.isExportDeclaration(node) &&
      node.moduleSpecifier &&
      ts.isStringLiteral(node.moduleSpecifier)
    ) {
      add(node.moduleSpecifier.text, node.isTypeOnly);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      const literal = node.argument.literal;
      if (ts.isStringLiteral(literal)) add(literal.text, true);
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] !== undefined &&
      ts.isStringLiteral(node.arguments[0])
    ) {
      add(node.arguments[0].text, false);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

function importIsTypeOnly(clause: ts.ImportClause | undefined): boolean {
  if (clause === undefined) return false;
  if (clause.isTypeOnly) return true;
  if (clause.name !== undefined) return false;
  const bindings = clause.namedBindings;
  return (
    bindings !== undefined && ts.isNamedImports(bindings) && bindings.elements.every((e) => e.isTypeOnly)
  );
}

/** Checks the tree at `root`; `override` replaces the text of some files (for tests). */
export function checkLayers(
  root: string,
  override: ReadonlyMap<string, string> = new Map(),
): LayerViolation[] {
  const files = sourceFiles(root);
  const graph = new Map<string, Import[]>();
  const violations: LayerViolation[] = [];
  for (const file of files) {
    const text = override.get(file) ?? readFileSync(join(root, file), 'utf8');
    graph.set(file, importsOf(file, text));
  }
  for (const [file, imports] of graph) {
    const from = layerOf(file);
    if (from < 0) {
      violations.push({ kind: 'unlayered', message: `${file} belongs to no layer (add it to LAYERS)` });
      continue;
    }
    for (const { target } of imports) {
      const to = layerOf(target);
      const edge = `${file} -> ${target}`;
      if (to > from && !KNOWN_VIOLATIONS.includes(edge)) {
        violations.push({
          kind: 'upward',
          message: `${edge}: layer '${LAYERS[from]![0]}' imports the higher layer '${LAYERS[to]![0]}'`,
        });
      }
    }
  }
  // Types may refer to each other inside a layer (an inode lists its VMAs, a VMA names its inode);
  // values may not, since a cycle of modules makes their evaluation order matter.
  const valueGraph = new Map<string, string[]>();
  for (const [file, imports] of graph)
    valueGraph.set(
      file,
      imports.filter((i) => !i.typeOnly).map((i) => i.target),
    );
  for (const cycle of cycles(valueGraph)) {
    const edges = cycle.map((file, i) => `${file} -> ${cycle[(i + 1) % cycle.length]}`);
    if (edges.some((edge) => KNOWN_VIOLATIONS.includes(edge))) continue;
    violations.push({ kind: 'cycle', message: `import cycle: ${[...cycle, cycle[0]].join(' -> ')}` });
  }
  return violations;
}

/** One cycle through each strongly connected component of more than one file (Tarjan). */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let next = 0;
  const visit = (file: string): void => {
    index.set(file, next);
    low.set(file, next++);
    stack.push(file);
    onStack.add(file);
    for (const target of graph.get(file) ?? []) {
      if (!graph.has(target)) continue;
      if (!index.has(target)) {
        visit(target);
        low.set(file, Math.min(low.get(file)!, low.get(target)!));
      } else if (onStack.has(target)) low.set(file, Math.min(low.get(file)!, index.get(target)!));
    }
    if (low.get(file) !== index.get(file)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== file);
    if (component.length > 1) found.push(shortestCycle(graph, new Set(component), component[0]!));
  };
  for (const file of graph.keys()) if (!index.has(file)) visit(file);
  return found;
}

/** The shortest cycle through `start` inside one component (breadth first). */
function shortestCycle(graph: ReadonlyMap<string, readonly string[]>, members: Set<string>, start: string) {
  const parent = new Map<string, string>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    const file = queue[i]!;
    for (const target of graph.get(file) ?? []) {
      if (!members.has(target)) continue;
      if (target === start) {
        const path = [file];
        while (path[0] !== start) path.unshift(parent.get(path[0]!)!);
        return path;
      }
      if (!parent.has(target)) {
        parent.set(target, file);
        queue.push(target);
      }
    }
  }
  return [start];
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
  const violations = checkLayers(root);
  for (const violation of violations) console.error(`layers: ${violation.message}`);
  if (violations.length > 0) {
    console.error(`layers: ${violations.length} violation(s); the order is LAYERS in tools/layers.ts`);
    process.exit(1);
  }
  console.log(`layers: ${LAYERS.length} layers, no upward import, no cycle`);
}
