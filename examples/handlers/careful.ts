/**
 * A careful userfaultfd handler for faultline's snapshot-restore guest
 * (anonymous memory, MISSING faults, a balloon that may discard pages).
 *
 *   faultline explore snapshot-restore --handler examples/handlers/careful.ts --balloon 8
 *
 * What makes it careful — each point is a bug in one of the other examples:
 * - REMOVE events are applied before the faults read with them, and a
 *   discarded page is served as zeros (UFFDIO_ZEROPAGE), never refilled from
 *   the snapshot (stale-after-remove.ts);
 * - EAGAIN means an event is unread, or read while the thread that raised it
 *   has not yet run again (mmap_changing): the fault is deferred, not fatal
 *   (eagain-fatal.ts), and retried after a poll with a *timeout*, since no
 *   further message may ever come (retry-on-next-message.ts);
 * - EEXIST means the page is there already, and is not an error
 *   (eexist-fatal.ts) — but the fault's thread still sleeps until someone
 *   wakes it: UFFDIO_WAKE (eexist-no-wake.ts).
 */
import type { HandlerSession } from '../../src/handlers/session.ts';

const EAGAIN = 11;
const EEXIST = 17;
const PROT_READ = 1;

export default async function serve(session: HandlerSession): Promise<void> {
  const { uffd, process, regions } = session;
  const region = regions[0]!;
  const pageSize = region.page_size;
  const base = region.base_host_virt_addr;
  const snapshot = process.mmap({ length: region.size, fd: session.memoryFd, prot: PROT_READ });
  const removed = new Set<number>();
  let deferred: number[] = [];

  /** Fills the page at `address`: 'done', or 'again' on EAGAIN. */
  const serveFault = (address: number): 'done' | 'again' => {
    const page = address - base;
    try {
      if (removed.has(page)) uffd.zeropage({ start: address, length: pageSize });
      else uffd.copy({ dst: address, src: snapshot + page, length: pageSize });
    } catch (error) {
      const errno = (error as { errno?: number }).errno;
      if (errno === EAGAIN) return 'again';
      if (errno !== EEXIST) throw error;
      // Filled by another path meanwhile: a failed fill wakes no one, so wake the waiter.
      uffd.wake({ start: address, length: pageSize });
    }
    return 'done';
  };

  for (;;) {
    const readable = await session.poll(deferred.length > 0 ? 1 : -1);
    if (readable) {
      const messages = uffd.readMessages(64);
      for (const message of messages) {
        if (message.event !== 'remove') continue;
        for (let at = Number(message.start); at < Number(message.end); at += pageSize) removed.add(at - base);
      }
      for (const message of messages) {
        if (message.event !== 'pagefault') continue;
        const address = Number(message.address) - ((Number(message.address) - base) % pageSize);
        if (serveFault(address) === 'again') deferred.push(address);
      }
    }
    const retry = deferred;
    deferred = [];
    for (const address of retry) if (serveFault(address) === 'again') deferred.push(address);
    if (!readable && deferred.length === 0 && session.signal.aborted) return;
  }
}
