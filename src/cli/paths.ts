/**
 * Scenario paths on the command line: files, directories and globs (quoted
 * globs are expanded here, so `'scenarios/**\/*.yaml'` works without a shell
 * that knows `**`), and `--filter` on scenario names.
 */
import { readdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { loadScenarios, type Scenario, ScenarioError } from '../scenario/parse.ts';
import { UsageError } from './errors.ts';

const GLOB_CHARS = /[*?[]/;

/** A glob (`*`, `**`, `?`, `[abc]`) as a regular expression over `/`-separated relative paths. */
export function globRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i]!;
    if (char === '*' && pattern[i + 1] === '*') {
      const slash = pattern[i + 2] === '/';
      source += slash ? '(?:.*/)?' : '.*';
      i += slash ? 2 : 1;
    } else if (char === '*') source += '[^/]*';
    else if (char === '?') source += '[^/]';
    else if (char === '[') {
      const close = pattern.indexOf(']', i + 1);
      if (close < 0) source += '\\[';
      else {
        source += `[${pattern
          .slice(i + 1, close)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\')}]`;
        i = close;
      }
    } else source += char.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/** Files under `directory`; symbolic links to directories are not followed, so a link loop ends. */
function walk(directory: string, files: string[]): void {
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const full = join(directory, entry.name);
    if (entry.isDirectory()) walk(full, files);
    else files.push(full);
  }
}

/** The files a glob matches, sorted; a glob that matches nothing is a usage error. */
export function expandGlob(pattern: string): string[] {
  const parts = pattern.split('/');
  const firstGlob = parts.findIndex((part) => GLOB_CHARS.test(part));
  const base = parts.slice(0, firstGlob).join('/') || (pattern.startsWith('/') ? '/' : '.');
  const regexp = globRegExp(parts.slice(firstGlob).join('/'));
  const files: string[] = [];
  try {
    walk(base, files);
  } catch {
    // A base directory that does not exist matches nothing.
  }
  const matches = files.filter((file) => regexp.test(relative(base, file).split(sep).join('/'))).sort();
  if (matches.length === 0) throw new UsageError(`no file matches '${pattern}'`);
  return matches;
}

/** Every path argument with its globs expanded, in order, each file once. */
export function expandPaths(args: readonly string[]): string[] {
  const paths = args.flatMap((arg) => (GLOB_CHARS.test(arg) ? expandGlob(arg) : [arg]));
  return [...new Set(paths)];
}

/** `--filter`: a glob on the scenario name when it has `*` or `?`, else a substring of the name. */
export function scenarioFilter(filter: string | undefined): (scenario: Scenario) => boolean {
  if (filter === undefined) return () => true;
  if (!GLOB_CHARS.test(filter)) return (scenario) => scenario.name.includes(filter);
  const regexp = globRegExp(filter);
  return (scenario) => regexp.test(scenario.name);
}

/**
 * Loads the scenarios of every path (files, directories, globs), keeping
 * those `--filter` selects. A malformed file, a missing path, a name given by
 * two files or a filter that selects nothing is a usage error: nothing runs.
 */
export function loadScenarioPaths(args: readonly string[], filter?: string): Scenario[] {
  const names = new Map<string, string>();
  const scenarios: Scenario[] = [];
  for (const path of expandPaths(args)) {
    for (const scenario of loadScenarios(path)) {
      const previous = names.get(scenario.name);
      if (previous === scenario.file) continue;
      if (previous !== undefined) {
        throw new ScenarioError(
          scenario.file,
          1,
          1,
          'name',
          `duplicate scenario name '${scenario.name}' (also in ${previous})`,
        );
      }
      names.set(scenario.name, scenario.file);
      scenarios.push(scenario);
    }
  }
  // Nothing to run is not a pass: an empty directory (or a wrong one) must not exit 0.
  if (scenarios.length === 0) {
    throw new UsageError(`no scenario file (*.yaml, *.yml, *.json) in ${args.join(', ')}`);
  }
  const selected = scenarios.filter(scenarioFilter(filter));
  if (filter !== undefined && selected.length === 0) {
    throw new UsageError(`--filter '${filter}' selects none of the ${scenarios.length} scenarios loaded`);
  }
  return selected;
}
