/** An explore worker thread: loads the handler, runs its share of schedules, reports to the main thread. */
import { parentPort, workerData } from 'node:worker_threads';
import { loadExploreHandler, runShare, type WorkerMessage, type WorkerTask } from './campaign.ts';

const port = parentPort!;
const task = workerData as WorkerTask;
let stopped = false;
port.on('message', (message) => {
  if (message === 'stop') stopped = true;
});
const post = (message: WorkerMessage): void => port.postMessage(message);
try {
  const handler = await loadExploreHandler(task.config.handler, {
    ...(task.config.handlerArgs === undefined ? {} : { args: task.config.handlerArgs }),
    ...(task.config.handlerTimeoutMs === undefined ? {} : { timeoutMs: task.config.handlerTimeoutMs }),
  });
  await runShare(handler, task, post, () => stopped);
} catch (error) {
  post({ type: 'error', message: error instanceof Error ? error.message : String(error) });
}
process.exit(0);
