/**
 * The postcopy migration source, run as its own process by the postcopy
 * workload: `node --import tsx postcopy-source.ts '<SourceConfig JSON>'`.
 *
 * It listens on 127.0.0.1 (an ephemeral port, printed as one JSON line on
 * stdout), holds the guest RAM image, and once the destination is connected
 * sends a precopy pass (when some pages stay clean), the discard bitmap of
 * pages dirtied since, and then streams the dirty pages in address order.
 * A page the destination requests goes out at once: on the preempt
 * connection when there is one (QEMU's postcopy-preempt), else on the main
 * connection behind whatever the stream already queued there. As QEMU's
 * source does, it ignores a request for a page already sent (that page is
 * in flight on the stream).
 *
 * The process exits when the destination says COMPLETE, when a connection
 * or stdin closes (the workload died), or after `lifetimeMs` in any case.
 */
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import {
  CHANNEL_MAIN,
  CHANNEL_PREEMPT,
  encodeFrame,
  FRAME_COMPLETE,
  FRAME_DISCARD,
  FRAME_END,
  FRAME_PAGE,
  FRAME_REQUEST,
  FrameReader,
  isDirty,
  isZeroPage,
  PAGE_PRECOPY,
  PAGE_REQUESTED,
  PAGE_ZERO,
  ramPage,
  type SourceConfig,
} from './postcopy-wire.ts';

/** Frames are written in batches of about this many bytes. */
const BATCH_BYTES = 64 * 1024;

function fail(message: string): never {
  process.stderr.write(`postcopy-source: ${message}\n`);
  process.exit(2);
}

function parseConfig(text: string | undefined): SourceConfig {
  if (text === undefined) fail('usage: postcopy-source.ts <config JSON>');
  let config: SourceConfig;
  try {
    config = JSON.parse(text) as SourceConfig;
  } catch (error) {
    fail(`config: ${(error as Error).message}`);
  }
  if (config.version !== 1) fail('config: version: expected 1');
  for (const field of [
    'pages',
    'pageSize',
    'seed',
    'dirtyPercent',
    'bandwidthBytes',
    'lifetimeMs',
  ] as const) {
    if (!Number.isInteger(config[field]) || config[field] < 0)
      fail(`config: ${field}: not a non-negative integer`);
  }
  return config;
}

const config = parseConfig(process.argv[2]);
const { pages, pageSize, seed } = config;

// Whatever happens, this process does not outlive its lifetime or its parent.
setTimeout(() => fail(`lifetime of ${config.lifetimeMs} ms exceeded`), config.lifetimeMs).unref();
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();

const dirty = new Uint8Array(pages);
let dirtyCount = 0;
for (let i = 0; i < pages; i++) {
  if (isDirty(i, seed, config.dirtyPercent)) {
    dirty[i] = 1;
    dirtyCount++;
  }
}
/** Pages already sent in postcopy (by the stream or on request). */
const sent = new Uint8Array(pages);
let sentCount = 0;

let main: Socket | null = null;
let preempt: Socket | null = null;
let started = false;

function pageFrame(index: number, version: number, flags: number): Uint8Array {
  if (isZeroPage(index, seed)) return encodeFrame(FRAME_PAGE, flags | PAGE_ZERO, index);
  return encodeFrame(FRAME_PAGE, flags, index, ramPage(index, version, pageSize, seed));
}

function onRequest(index: number): void {
  if (index >= pages || dirty[index] === 0 || sent[index] === 1) return;
  sent[index] = 1;
  sentCount++;
  const frame = pageFrame(index, 1, PAGE_REQUESTED);
  (preempt ?? main)!.write(frame);
}

function onFrames(chunk: Buffer, reader: FrameReader): void {
  for (const frame of reader.push(chunk)) {
    if (frame.type === FRAME_REQUEST) onRequest(frame.index);
    else if (frame.type === FRAME_COMPLETE) process.exit(0);
    else fail(`unexpected frame type ${frame.type} from the destination`);
  }
}

/** Writes `data`, waiting while the socket's buffer is full (TCP backpressure). */
async function send(socket: Socket, data: Uint8Array): Promise<void> {
  if (!socket.write(data)) await once(socket, 'drain');
}

function concat(parts: readonly Uint8Array[], bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

async function stream(socket: Socket): Promise<void> {
  const startedMs = performance.now();
  let streamedBytes = 0;
  const flush = async (parts: Uint8Array[], bytes: number) => {
    await send(socket, concat(parts, bytes));
    // While the kernel takes every write at once, 'drain' comes without a turn of the event
    // loop; yield one so requests are read between batches (QEMU reads them in its own thread).
    await new Promise((resolve) => setImmediate(resolve));
    streamedBytes += bytes;
    if (config.bandwidthBytes > 0) {
      const dueMs = startedMs + (streamedBytes / config.bandwidthBytes) * 1000;
      const aheadMs = dueMs - performance.now();
      if (aheadMs > 1) await new Promise((resolve) => setTimeout(resolve, aheadMs));
    }
  };

  // Precopy: every page as it was, unless every page is dirty anyway (pure postcopy).
  if (config.dirtyPercent < 100) {
    let parts: Uint8Array[] = [];
    let bytes = 0;
    for (let i = 0; i < pages; i++) {
      const frame = pageFrame(i, 0, PAGE_PRECOPY);
      parts.push(frame);
      bytes += frame.byteLength;
      if (bytes >= BATCH_BYTES || i === pages - 1) {
        await flush(parts, bytes);
        parts = [];
        bytes = 0;
      }
    }
  }

  // Switchover: the destination discards the dirty pages and starts the guest.
  const bitmap = new Uint8Array(Math.ceil(pages / 8));
  for (let i = 0; i < pages; i++) if (dirty[i] === 1) bitmap[i >> 3]! |= 1 << (i & 7);
  await send(socket, encodeFrame(FRAME_DISCARD, 0, pages, bitmap));

  // Postcopy: the dirty pages in address order, skipping those already sent on request.
  let cursor = 0;
  while (sentCount < dirtyCount) {
    const parts: Uint8Array[] = [];
    let bytes = 0;
    while (bytes < BATCH_BYTES && cursor < pages) {
      const index = cursor++;
      if (dirty[index] === 0 || sent[index] === 1) continue;
      sent[index] = 1;
      sentCount++;
      const frame = pageFrame(index, 1, 0);
      parts.push(frame);
      bytes += frame.byteLength;
    }
    if (bytes > 0) await flush(parts, bytes);
    else if (cursor >= pages) break;
  }
  await send(socket, encodeFrame(FRAME_END, 0, sentCount));
}

function maybeStart(): void {
  if (started || main === null || (config.preempt && preempt === null)) return;
  started = true;
  stream(main).catch((error: Error) => fail(`stream: ${error.message}`));
}

const server = createServer((socket) => {
  socket.setNoDelay(true);
  const reader = new FrameReader();
  let channel = -1;
  socket.on('data', (chunk: Buffer) => {
    if (channel === -1) {
      channel = chunk[0]!;
      if (channel === CHANNEL_MAIN && main === null) main = socket;
      else if (channel === CHANNEL_PREEMPT && config.preempt && preempt === null) preempt = socket;
      else fail(`unexpected channel ${channel}`);
      chunk = chunk.subarray(1);
      maybeStart();
    }
    if (chunk.byteLength > 0) onFrames(chunk, reader);
  });
  // The destination went away: nothing left to serve.
  socket.on('close', () => process.exit(0));
  socket.on('error', (error) => fail(`socket: ${error.message}`));
});
server.on('error', (error) => fail(`listen: ${error.message}`));
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address === null || typeof address === 'string') fail('no TCP address');
  process.stdout.write(`${JSON.stringify({ port: address.port, dirtyPages: dirtyCount })}\n`);
});
