/** An explore worker thread: loads the handler, runs the chunks of schedules it is handed, reports to the main thread. */
import { parentPort, workerData } from 'node:worker_threads';
import {
  type DispatchMessage,
  type IndexSource,
  loadExploreHandler,
  runShare,
  type WorkerMessage,
  type WorkerTask,
} from './campaign.ts';

const port = parentPort!;
const task = workerData as WorkerTask;
const post = (message: WorkerMessage): void => port.postMessage(message);

/** Chunks received and not yet started; the chunk being run. */
const chunks: number[][] = [];
let current: number[] = [];
let ended = false;
let limit = Number.POSITIVE_INFINITY;
let done = 0;
const externalWait = false;
let wake: (() => void) | null = null;
port.on('message', (message: DispatchMessage) => {
  if (message.type === 'chunk') chunks.push([...message.indices]);
  else if (message.type === 'limit') limit = Math.min(limit, message.failed);
  else ended = true;
  wake?.();
  wake = null;
});

const source: IndexSource = {
  async next() {
    while (current.length === 0) {
      const chunk = chunks.shift();
      if (chunk !== undefined) {
        current = chunk;
        // Starting the last buffered chunk: ask for the next one while this one runs.
        if (chunks.length === 0 && !ended) post({ type: 'more', done, externalWait, binaryThreads: 0 });
        break;
      }
      if (ended) return null;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    done++;
    return current.shift()!;
  },
  get limit() {
    return limit;
  },
};

try {
  const handler = await loadExploreHandler(task.config.handler, {
    ...(task.config.handlerArgs === undefined ? {} : { args: task.config.handlerArgs }),
    ...(task.config.handlerTimeoutMs === undefined ? {} : { timeoutMs: task.config.handlerTimeoutMs }),
  });
  await runShare(handler, task, source, post);
} catch (error) {
  post({ type: 'error', message: error instanceof Error ? error.message : String(error) });
}
process.exit(0);
