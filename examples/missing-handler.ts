/**
 * A MISSING handler: anonymous guest memory filled on first touch with
 * UFFDIO_COPY, as a lazy snapshot restore does. Two vCPU threads read every
 * page; the handler copies in a page whose bytes are its index.
 *
 *   npx tsx examples/missing-handler.ts          # on the model
 *   npx tsx examples/missing-handler.ts --host   # on this machine's kernel
 */
import { alignDown, HostBackend, KernelError, ModelBackend, Process } from 'faultline';

const PAGE = 4096;
const PAGES = 64;

const backend = process.argv.includes('--host') ? new HostBackend() : new ModelBackend({ seed: 1 });
const proc = new Process(backend.self);
const uffd = proc.openUffd({ features: ['thread_id'] });
const guest = proc.mmap({ length: PAGES * PAGE });
uffd.register({ start: guest, length: PAGES * PAGE }, { missing: true });

// vCPU v reads the first byte of every page, v from the front, the other from the back.
const order = (v: number) => Array.from({ length: PAGES }, (_, i) => (v === 0 ? i : PAGES - 1 - i));
const vcpus = [0, 1].map((v) =>
  proc.thread(
    order(v).map((page) => ({ kind: 'read' as const, address: guest + page * PAGE, length: 1 })),
    `vcpu${v}`,
  ),
);
// When the guest is done, closing the uffd ends the handler loop.
const guestDone = Promise.all(vcpus.map((vcpu) => vcpu.join())).finally(() => uffd.close());

let copied = 0;
let woken = 0;
for await (const message of uffd.events()) {
  if (message.event !== 'pagefault') continue;
  const page = alignDown(message.address, PAGE); // a bigint, straight from uffd_msg
  const index = Number((page - BigInt(guest)) / BigInt(PAGE));
  try {
    uffd.copyBytes(page, new Uint8Array(PAGE).fill(index));
    copied++;
  } catch (error) {
    // Both vCPUs faulted on this page: the first copy mapped it and woke the range; a second
    // message for it finds the page there (EEXIST), and its vCPU needs only a wake.
    if (!(error instanceof KernelError && error.code === 'EEXIST')) throw error;
    uffd.wake({ start: page, length: PAGE });
    woken++;
  }
}

const results = await guestDone;
for (const [v, result] of results.entries()) {
  const wrong = order(v).find((page, i) => result.reads[i]?.[0] !== page % 256);
  if (result.state !== 'done' || wrong !== undefined) throw new Error(`vcpu${v}: page ${wrong} read wrong`);
}
console.log(`missing-handler: ${copied} pages copied, ${woken} extra faults woken; every page read back its index`);
backend.close();
