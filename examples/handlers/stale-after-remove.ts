/**
 * BUG: REMOVE events read and ignored. After the balloon discards a page the
 * guest expects zeros there, but this handler serves the next fault on it
 * from the snapshot again — stale data in guest memory (as reported for E2B's
 * and Firecracker's handlers). explore finds it as `wrong-bytes`.
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
  let deferred: number[] = [];

  const serveFault = (address: number): boolean => {
    try {
      // The bug: every fault is served from the snapshot, discarded pages too.
      uffd.copy({ dst: address, src: snapshot + (address - base), length: pageSize });
    } catch (error) {
      const errno = (error as { errno?: number }).errno;
      if (errno === EAGAIN) return false;
      if (errno !== EEXIST) throw error;
      uffd.wake({ start: address, length: pageSize });
    }
    return true;
  };

  for (;;) {
    const readable = await session.poll(deferred.length > 0 ? 1 : -1);
    const messages = readable ? uffd.readMessages(64) : [];
    for (const message of messages) {
      if (message.event !== 'pagefault') continue; // REMOVE events: read, then ignored
      const address = Number(message.address) - ((Number(message.address) - base) % pageSize);
      if (!serveFault(address)) deferred.push(address);
    }
    const retry = deferred;
    deferred = [];
    for (const address of retry) if (!serveFault(address)) deferred.push(address);
    if (!readable && deferred.length === 0 && session.signal.aborted) return;
  }
}
