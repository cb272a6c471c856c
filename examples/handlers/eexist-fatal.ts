/**
 * BUG: EEXIST treated as fatal. This handler fills the next page too when it
 * serves a fault (a small prefetch). When another vCPU's fault on that next
 * page was read in the same batch — or two threads fault on one page, as the
 * balloon's deflate and a vCPU can — the page is already there when its own
 * message is served, UFFDIO_COPY fails with EEXIST, and the handler dies.
 * explore finds it as `handler-error`.
 */
import type { HandlerSession } from '../../src/handlers/session.ts';

const EAGAIN = 11;
const PROT_READ = 1;

export default async function serve(session: HandlerSession): Promise<void> {
  const { uffd, process, regions } = session;
  const region = regions[0]!;
  const pageSize = region.page_size;
  const base = region.base_host_virt_addr;
  const end = base + region.size;
  const snapshot = process.mmap({ length: region.size, fd: session.memoryFd, prot: PROT_READ });
  const removed = new Set<number>();
  const filled = new Set<number>();
  let deferred: number[] = [];

  const fill = (address: number): boolean => {
    try {
      if (removed.has(address - base)) uffd.zeropage({ start: address, length: pageSize });
      else uffd.copy({ dst: address, src: snapshot + (address - base), length: pageSize });
    } catch (error) {
      // The bug: EAGAIN is expected, EEXIST is not.
      if ((error as { errno?: number }).errno === EAGAIN) return false;
      throw error;
    }
    filled.add(address);
    return true;
  };

  const serveFault = (address: number): boolean => {
    if (!fill(address)) return false;
    const next = address + pageSize;
    if (next < end && !filled.has(next)) fill(next);
    return true;
  };

  for (;;) {
    const readable = await session.poll(deferred.length > 0 ? 1 : -1);
    const messages = readable ? uffd.readMessages(64) : [];
    for (const message of messages) {
      if (message.event !== 'remove') continue;
      for (let at = Number(message.start); at < Number(message.end); at += pageSize) {
        removed.add(at - base);
        filled.delete(at);
      }
    }
    for (const message of messages) {
      if (message.event !== 'pagefault') continue;
      const address = Number(message.address) - ((Number(message.address) - base) % pageSize);
      if (!serveFault(address)) deferred.push(address);
    }
    const retry = deferred;
    deferred = [];
    for (const address of retry) if (!serveFault(address)) deferred.push(address);
    if (!readable && deferred.length === 0 && session.signal.aborted) return;
  }
}
