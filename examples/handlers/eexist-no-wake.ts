/**
 * BUG: EEXIST "handled" without the UFFDIO_WAKE its waiter needs. This
 * handler also fills the next page when it serves a fault, with
 * UFFDIO_COPY_MODE_DONTWAKE (it wakes only the page that faulted). If
 * another vCPU already sleeps on that next page, the fill does not wake it;
 * its own message then meets EEXIST, which the handler takes for "done" —
 * but a fill that fails wakes no one, and the vCPU sleeps forever. explore
 * finds it as `hang` (`--pattern random`, so the vCPUs' pages interleave).
 */
import type { HandlerSession } from '../../src/handlers/session.ts';

const EAGAIN = 11;
const EEXIST = 17;
const PROT_READ = 1;
const UFFDIO_COPY_MODE_DONTWAKE = 1;

export default async function serve(session: HandlerSession): Promise<void> {
  const { uffd, process, regions } = session;
  const region = regions[0]!;
  const pageSize = region.page_size;
  const base = region.base_host_virt_addr;
  const end = base + region.size;
  const snapshot = process.mmap({ length: region.size, fd: session.memoryFd, prot: PROT_READ });
  const removed = new Set<number>();
  let deferred: number[] = [];

  /** 'filled', 'present' (EEXIST) or 'again' (EAGAIN). */
  const fill = (address: number, mode: number): string => {
    try {
      if (removed.has(address - base)) uffd.zeropage({ start: address, length: pageSize }, mode);
      else uffd.copy({ dst: address, src: snapshot + (address - base), length: pageSize, mode });
    } catch (error) {
      const errno = (error as { errno?: number }).errno;
      if (errno === EAGAIN) return 'again';
      if (errno === EEXIST) return 'present'; // The bug: no UFFDIO_WAKE for this fault's waiter.
      throw error;
    }
    return 'filled';
  };

  const serveFault = (address: number): boolean => {
    const outcome = fill(address, 0);
    if (outcome === 'again') return false;
    const next = address + pageSize;
    if (outcome === 'filled' && next < end) fill(next, UFFDIO_COPY_MODE_DONTWAKE);
    return true;
  };

  for (;;) {
    const readable = await session.poll(deferred.length > 0 ? 1 : -1);
    const messages = readable ? uffd.readMessages(64) : [];
    for (const message of messages) {
      if (message.event !== 'remove') continue;
      for (let at = Number(message.start); at < Number(message.end); at += pageSize) removed.add(at - base);
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
