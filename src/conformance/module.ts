/**
 * Loading a memory type written outside the repository (`--module PATH`): an
 * ES module (.js, or .ts through tsx) exporting a MemoryTypeModule as its
 * default export or as `memoryType`. The descriptor it creates is validated
 * when the suite registers it, like every built-in type.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { MemoryTypeModule } from '../model/mm/memtype.ts';
import type { ExtraModule } from './runner.ts';

export class ModuleLoadError extends Error {
  override name = 'ModuleLoadError';
}

function isMemoryTypeModule(value: unknown): value is MemoryTypeModule {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return typeof candidate.name === 'string' && typeof candidate.create === 'function';
}

let typescriptLoader: Promise<void> | undefined;

/**
 * A `.ts` module needs a TypeScript loader: tsx, registered in this process
 * on first need (a checkout has it; an installed package only when the user
 * installed it too).
 */
function loadTypeScript(path: string): Promise<void> {
  typescriptLoader ??= import('tsx/esm/api').then(
    ({ register }) => void register(),
    () => {
      typescriptLoader = undefined;
      throw new ModuleLoadError(
        `--module ${path}: a TypeScript module needs tsx (npm install --save-dev tsx), or compile it to .js`,
      );
    },
  );
  return typescriptLoader;
}

export async function loadMemoryTypeModule(path: string): Promise<ExtraModule> {
  const url = pathToFileURL(resolve(path)).href;
  if (/\.[cm]?ts$/.test(path)) await loadTypeScript(path);
  let namespace: Record<string, unknown>;
  try {
    namespace = (await import(url)) as Record<string, unknown>;
  } catch (error) {
    throw new ModuleLoadError(`--module ${path}: cannot import it: ${(error as Error).message}`);
  }
  const exported = namespace.default ?? namespace.memoryType;
  if (!isMemoryTypeModule(exported)) {
    throw new ModuleLoadError(
      `--module ${path}: exports no memory type module as default or as 'memoryType' ` +
        '(an object with a string name and a create(services) function returning a MemoryType)',
    );
  }
  return { module: exported, path };
}
