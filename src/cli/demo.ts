/**
 * `faultline demo`: a handler resolving MISSING faults on anonymous memory
 * with UFFDIO_COPY and MINOR faults on shmem with UFFDIO_CONTINUE, on the
 * model, narrating what happens.
 */
import { ModelBackend } from '../api/model-backend.ts';
import { Process, type Uffd } from '../api/process.ts';
import { checkInvariants } from '../model/check.ts';
import {
  faultFlagNames,
  ioctlNames,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
} from '../uapi/constants.ts';
import { KernelError } from '../uapi/errno.ts';

const PAGE = 4096;

export interface DemoOptions {
  readonly seed: number;
  readonly pages: number;
  readonly vcpus: number;
  readonly out: (line: string) => void;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** The bytes a page of the "snapshot" holds. */
function snapshotPage(index: number): Uint8Array {
  const page = new Uint8Array(PAGE);
  const text = new TextEncoder().encode(`snapshot page ${index}`);
  page.set(text);
  page.fill(index & 0xff, text.length);
  return page;
}

/** vCPU threads touching every page, interleaved: thread k touches pages k, k+n, k+2n, ... */
function guestThreads(process: Process, start: number, pages: number, vcpus: number) {
  return Array.from({ length: vcpus }, (_, k) => {
    const accesses = [];
    for (let i = k; i < pages; i += vcpus)
      accesses.push({ kind: 'read' as const, address: start + i * PAGE, length: 32 });
    return process.thread(accesses, `vcpu${k}`);
  });
}

async function serve(
  uffd: Uffd,
  pages: number,
  describe: (flags: number) => string,
  resolve: (address: number) => void,
  log: (line: string) => void,
): Promise<Map<string, number>> {
  const kinds = new Map<string, number>();
  let served = 0;
  while (served < pages) {
    for (const message of await uffd.nextMessages()) {
      if (message.event !== 'pagefault') continue;
      const kind = describe(message.flags);
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      if (served < 3)
        log(
          `    fault at ${hex(Number(message.address))} flags [${faultFlagNames(message.flags).join(',')}] → ${kind}`,
        );
      if (served === 3) log('    …');
      resolve(Number(message.address));
      served++;
    }
  }
  return kinds;
}

/** What both parts of the demo run on: one process of the model and its userfaultfd. */
interface DemoParts {
  readonly options: DemoOptions;
  readonly process: Process;
  readonly uffd: Uffd;
}

export async function runDemo(options: DemoOptions): Promise<number> {
  const { out } = options;
  const backend = new ModelBackend({ seed: options.seed });
  const process = new Process(backend.self);
  out(`faultline demo — ${backend.describe()}`);
  out('');
  const uffd = process.userfaultfd();
  const verified = await missingPart({ options, process, uffd });
  await minorPart({ options, process, uffd });
  checkInvariants(backend.kernel);
  out('');
  out(`invariants hold (page tables ↔ folio refcounts ↔ page cache); replay with --seed ${options.seed}`);
  return verified === options.pages ? 0 : 1;
}

/** Part 1: snapshot restore on anonymous memory (MISSING + COPY); returns the pages verified. */
async function missingPart({ options, process, uffd }: DemoParts): Promise<number> {
  const { out, pages, vcpus } = options;
  out(`1. MISSING faults on ${pages} pages of anonymous memory, resolved with UFFDIO_COPY`);
  const api = uffd.api();
  out(
    `   UFFDIO_API: features 0x${api.features.toString(16)}, ioctls [${ioctlNames(api.ioctls).join(', ')}]`,
  );
  const guest = process.mmap({ length: pages * PAGE });
  const ioctls = uffd.register({ start: guest, length: pages * PAGE }, UFFDIO_REGISTER_MODE_MISSING);
  out(
    `   registered ${hex(guest)}-${hex(guest + pages * PAGE)} MISSING → ioctls [${ioctlNames(ioctls).join(', ')}]`,
  );
  const started = performance.now();
  const threads = guestThreads(process, guest, pages, vcpus);
  const kinds = await serve(
    uffd,
    pages,
    (flags) => (flags & 1 ? 'write miss' : 'read miss'),
    (address) => uffd.copyBytes(address, snapshotPage((address - guest) / PAGE)),
    out,
  );
  const results = await Promise.all(threads.map((thread) => thread.join()));
  const elapsed = performance.now() - started;
  let verified = 0;
  for (let i = 0; i < pages; i++) {
    const expected = snapshotPage(i);
    const actual = process.read(guest + i * PAGE, PAGE);
    if (actual.every((byte, at) => byte === expected[at])) verified++;
  }
  out(
    `   ${results.length} vCPU threads done; ${[...kinds].map(([k, n]) => `${n} ${k}`).join(', ')}; ` +
      `${verified}/${pages} pages verified; ${(pages / (elapsed / 1000)).toFixed(0)} faults/s`,
  );
  try {
    uffd.copyBytes(guest, snapshotPage(0));
  } catch (error) {
    if (error instanceof KernelError)
      out(`   a second COPY of page 0: ${error.code}, copy field = ${error.progress}`);
  }
  out('');

  return verified;
}

/** Part 2: postcopy-style MINOR faults on shmem (CONTINUE). */
async function minorPart({ options, process, uffd }: DemoParts): Promise<void> {
  const { out, pages, vcpus } = options;
  out(
    `2. MINOR faults on ${pages} pages of shmem, page cache filled through a second mapping, resolved with UFFDIO_CONTINUE`,
  );
  const fd = process.memfd('guest-ram', { size: pages * PAGE });
  const fill = process.mmap({ length: pages * PAGE, fd, shared: true });
  for (let i = 0; i < pages; i++) process.write(fill + i * PAGE, snapshotPage(i));
  const ram = process.mmap({ length: pages * PAGE, fd, shared: true });
  const minorIoctls = uffd.register({ start: ram, length: pages * PAGE }, UFFDIO_REGISTER_MODE_MINOR);
  out(`   registered ${hex(ram)} MINOR → ioctls [${ioctlNames(minorIoctls).join(', ')}]`);
  const started = performance.now();
  const minorThreads = guestThreads(process, ram, pages, vcpus);
  const minorKinds = await serve(
    uffd,
    pages,
    (flags) => (flags & 4 ? 'minor' : 'other'),
    (address) => uffd.continue({ start: address, length: PAGE }),
    out,
  );
  await Promise.all(minorThreads.map((thread) => thread.join()));
  const elapsed = performance.now() - started;
  const sample = new TextDecoder().decode(process.read(ram + 7 * PAGE, 15));
  out(
    `   ${[...minorKinds].map(([k, n]) => `${n} ${k}`).join(', ')}; page 7 reads "${sample}"; ` +
      `${(pages / (elapsed / 1000)).toFixed(0)} faults/s`,
  );
}
