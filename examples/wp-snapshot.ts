/**
 * A write-protect snapshot, as QEMU's background snapshot does it: the
 * guest's memory is write-protected with UFFDIO_WRITEPROTECT, a saver copies
 * pages out while the guest runs, and a guest write to a page not saved yet
 * raises a WP fault: the handler saves that page first, then unprotects it
 * and wakes the writer. The saved image is the memory as it was when the
 * snapshot began, whatever the guest wrote after.
 *
 *   npx tsx examples/wp-snapshot.ts
 */
import { alignDown, ModelBackend, Process, UFFD_PAGEFAULT_FLAG_WP } from 'faultline';

const PAGE = 4096;
const PAGES = 16;

const backend = new ModelBackend({ seed: 1 });
const proc = new Process(backend.self);
const guest = proc.mmap({ length: PAGES * PAGE });
for (let page = 0; page < PAGES; page++) proc.write(guest + page * PAGE, new Uint8Array(PAGE).fill(page));

const uffd = proc.openUffd({ features: ['pagefault_flag_wp'] });
uffd.register({ start: guest, length: PAGES * PAGE }, { wp: true });
uffd.writeprotect({ start: guest, length: PAGES * PAGE }, { wp: true });

const image: (Uint8Array | undefined)[] = new Array(PAGES);
const save = (page: number) => {
  if (image[page] !== undefined) return;
  image[page] = proc.read(guest + page * PAGE, PAGE);
  uffd.writeprotect({ start: guest + page * PAGE, length: PAGE }, {}); // unprotect, wake the writer
};

// The guest overwrites every other page with 0xff while the snapshot runs.
const writer = proc.thread(
  Array.from({ length: PAGES / 2 }, (_, i) => ({
    kind: 'write' as const,
    address: guest + 2 * i * PAGE,
    data: new Uint8Array(PAGE).fill(0xff),
  })),
  'vcpu0',
);
// The guest finishing ends the handler loop (the uffd stays open: the saver still unprotects).
const guestRan = new AbortController();
const guestDone = writer.join().finally(() => guestRan.abort());

let wpFaults = 0;
for await (const message of uffd.events({ signal: guestRan.signal })) {
  if (message.event !== 'pagefault' || (message.flags & UFFD_PAGEFAULT_FLAG_WP) === 0) continue;
  wpFaults++;
  save(Number((alignDown(message.address, PAGE) - BigInt(guest)) / BigInt(PAGE)));
}
await guestDone;
for (let page = 0; page < PAGES; page++) save(page); // the background saver's turn
uffd.close();

const wrong = image.findIndex((bytes, page) => bytes?.every((byte) => byte === page) !== true);
if (wrong >= 0) throw new Error(`the image's page ${wrong} is not the memory as the snapshot began`);
const now = proc.read(guest, 1)[0];
console.log(`wp-snapshot: ${wpFaults} WP faults saved first; the image is the memory at the start (page 0 is now 0x${now?.toString(16)})`);
backend.close();
