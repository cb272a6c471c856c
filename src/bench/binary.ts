/**
 * The C test handler binary (test/handlers/fc_handler.c) serving MISSING
 * faults of 4 KiB pages, on the model through the seccomp interception and
 * on the host kernel with the real userfaultfd: the same program, the same
 * binary, the same session code (handlers/open.ts), only the backend
 * differs. A first fault (untimed) waits until the binary is up and has
 * received the uffd; then one vCPU thread touches every other page in
 * order, and the time to its end is the measurement.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelBackend } from '../api/backend.ts';
import { Process } from '../api/process.ts';
import { binaryHandler } from '../handlers/binary/serve.ts';
import { openSession } from '../handlers/open.ts';
import { UFFDIO_REGISTER_MODE_MISSING } from '../uapi/constants.ts';

const PAGE = 4096;
/** Where node-gyp puts the test handler. */
export const BENCH_HANDLER_PATH: string = join(
  new URL('.', import.meta.url).pathname,
  '..',
  '..',
  'build',
  'Release',
  'fc_handler',
);

export interface BinaryRun {
  readonly faults: number;
  readonly ns: number;
  /** Trapped calls answered per fault (the model only; 0 on the host). */
  readonly callsPerFault: number;
}

/** Why the binary rows cannot run here, or undefined. */
export function binaryBenchUnavailable(): string | undefined {
  if (!existsSync(BENCH_HANDLER_PATH)) return `the C test handler is not built (${BENCH_HANDLER_PATH})`;
  return undefined;
}

export async function runBinaryHandler(backend: KernelBackend, regionBytes: number): Promise<BinaryRun> {
  const vmm = new Process(backend.self);
  const pages = regionBytes / PAGE;
  const snapshot = vmm.memfd('snapshot', { size: regionBytes });
  const fill = new Uint8Array(PAGE);
  for (let i = 0; i < pages; i++) {
    new DataView(fill.buffer).setUint32(0, i + 1, true);
    vmm.pwrite(snapshot, fill, i * PAGE);
  }
  const guest = vmm.mmap({ length: regionBytes });
  const uffd = vmm.userfaultfd({ nonblock: true, cloexec: true });
  uffd.api([]);
  uffd.register({ start: guest, length: regionBytes }, UFFDIO_REGISTER_MODE_MISSING);
  const done = new AbortController();
  const opened = await openSession({
    backend,
    vmm,
    uffd,
    features: [],
    registerModes: ['missing'],
    regions: [
      { base_host_virt_addr: guest, size: regionBytes, offset: 0, page_size: PAGE, page_size_kib: PAGE },
    ],
    memoryFd: snapshot,
    signal: done.signal,
  });
  let calls = 0;
  const served = binaryHandler({
    path: BENCH_HANDLER_PATH,
    report: (report) => {
      calls = report.calls;
    },
  })(opened.session);
  const failed = served.then(
    () => new Promise<never>(() => {}),
    (error: unknown) => Promise.reject(error),
  );
  try {
    const read = (page: number) => ({ kind: 'read' as const, address: guest + page * PAGE, length: 8 });
    await Promise.race([vmm.thread([read(0)], 'warm-up').join(), failed]);
    const program = Array.from({ length: pages - 1 }, (_, i) => read(i + 1));
    const start = process.hrtime.bigint();
    const result = await Promise.race([vmm.thread(program, 'vcpu0').join(), failed]);
    const ns = Number(process.hrtime.bigint() - start);
    result.reads.forEach((bytes, i) => {
      const word = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
      if (word !== i + 2) throw new Error(`page ${i + 1} read ${word}, the snapshot has ${i + 2}`);
    });
    done.abort();
    await served;
    return { faults: pages - 1, ns, callsPerFault: backend.name === 'model' ? calls / pages : 0 };
  } finally {
    done.abort();
    await served.catch(() => {});
    opened.close();
    vmm.munmap(guest, regionBytes);
    vmm.close(snapshot);
  }
}
