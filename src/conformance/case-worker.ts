/**
 * The worker side of an isolated conformance case (see isolate.ts): loads
 * the modules, runs the one case in-process here, and posts the result.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { IsolatedCase, WorkerReply } from './isolate.ts';
import { loadMemoryTypeModule } from './module.ts';
import { type ExtraModule, runConformance } from './runner.ts';

async function main(request: IsolatedCase): Promise<WorkerReply> {
  try {
    const modules: ExtraModule[] = [];
    for (const path of request.modulePaths) modules.push(await loadMemoryTypeModule(path));
    const report = await runConformance({
      modules,
      memtypes: [request.type],
      cases: [request.case],
      version: request.version,
      seed: request.seed,
      timeoutMs: request.timeoutMs,
    });
    const result = report.results[0];
    if (result === undefined) return { error: 'the worker ran no case' };
    return {
      result: {
        status: result.status,
        ...(result.reason === undefined ? {} : { reason: result.reason }),
        hooks: result.hooks,
      },
    };
  } catch (error) {
    return { error: `the case's worker failed: ${error instanceof Error ? error.message : String(error)}` };
  }
}

parentPort?.postMessage(await main(workerData as IsolatedCase));
