/**
 * A guest_memfd MINOR handler, Firecracker's secret-free style: guest memory
 * is a guest_memfd, preallocated, so every first touch finds a page in the
 * page cache and raises a MINOR fault; the handler writes the snapshot's
 * bytes into the file with write() and maps them with UFFDIO_CONTINUE.
 * guest_memfd userfaultfd is in the final vm_uffd_ops (Linux 7.1 in the
 * model), so this runs on the model.
 *
 *   npx tsx examples/gmem-minor-handler.ts
 */
import { alignDown, FALLOC_FL_KEEP_SIZE, ModelBackend, Process } from 'faultline';

const PAGE = 4096;
const PAGES = 32;

const backend = new ModelBackend({ seed: 1, version: '7.1' });
const proc = new Process(backend.self);
const gmem = proc.guestMemfd({ size: PAGES * PAGE });
proc.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, PAGES * PAGE);
const guest = proc.mmap({ length: PAGES * PAGE, fd: gmem, shared: true });
const uffd = proc.openUffd({ features: [] });
uffd.register({ start: guest, length: PAGES * PAGE }, { minor: true });

/** The snapshot's page: its index in every byte, plus one. */
const snapshotPage = (index: number) => new Uint8Array(PAGE).fill(index + 1);

const vcpu = proc.thread(
  Array.from({ length: PAGES }, (_, page) => ({ kind: 'read' as const, address: guest + page * PAGE, length: 4 })),
  'vcpu0',
);
const guestDone = vcpu.join().finally(() => uffd.close());

let minor = 0;
for await (const message of uffd.events()) {
  if (message.event !== 'pagefault') continue;
  const page = alignDown(message.address, PAGE);
  const index = Number((page - BigInt(guest)) / BigInt(PAGE));
  // write(2) at the page's offset puts the bytes in the page cache (guest_memfd has no pwrite).
  proc.lseek(gmem, index * PAGE);
  proc.writeFile(gmem, snapshotPage(index));
  uffd.continue({ start: page, length: PAGE }); // map the cached page and wake the vCPU
  minor++;
}

const result = await guestDone;
const wrong = result.reads.findIndex((bytes, page) => bytes[0] !== page + 1);
if (result.state !== 'done' || wrong >= 0) throw new Error(`page ${wrong} read wrong`);
console.log(`gmem-minor-handler: ${minor} MINOR faults answered with write + UFFDIO_CONTINUE`);
backend.close();
