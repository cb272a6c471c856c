/**
 * The worker side of the declaration probe (see isolate.ts `probeModules`):
 * loads the modules, registers them (their create() runs here), and posts
 * the selected types' declarations as plain data. Before each import and
 * each create() it posts where it is, so a module that never finishes is
 * named when the worker is killed.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { MemoryTypeModule, MemoryTypeServices } from '../model/mm/memtype.ts';
import type { ProbeReply, ProbeRequest, ProbeStage } from './isolate.ts';
import { loadMemoryTypeModule } from './module.ts';
import { declareTypes, type ExtraModule } from './runner.ts';

function post(stage: ProbeStage): void {
  parentPort?.postMessage(stage);
}

/** `module`, its create() announced first. */
function announced(module: MemoryTypeModule, path: string): MemoryTypeModule {
  return {
    name: module.name,
    create(services: MemoryTypeServices) {
      post({ stage: 'create', path });
      return module.create(services);
    },
  };
}

async function main(request: ProbeRequest): Promise<ProbeReply> {
  try {
    const modules: ExtraModule[] = [];
    for (const path of request.modulePaths) {
      post({ stage: 'import', path });
      const loaded = await loadMemoryTypeModule(path);
      modules.push({ module: announced(loaded.module, path), path });
    }
    // Plain data only: what a type's descriptor holds besides (functions, getters) stays here.
    return { declared: JSON.parse(JSON.stringify(declareTypes(modules, request))) };
  } catch (error) {
    return { error: describe(error) };
  }
}

/** One line for anything thrown (a module may throw a value that cannot be printed). */
function describe(error: unknown): string {
  try {
    return (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').slice(0, 500);
  } catch {
    return 'a module threw a value that cannot be described';
  }
}

parentPort?.postMessage(await main(workerData as ProbeRequest));
