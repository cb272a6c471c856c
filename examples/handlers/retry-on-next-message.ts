/**
 * BUG: faults deferred on EAGAIN are retried only when poll() — without a
 * timeout — reports the next message. EAGAIN can outlast the read of the
 * REMOVE event (mmap_changing drops only when the thread inside madvise runs
 * again), so when the deferred fault was the last one, no message ever comes
 * and the vCPU sleeps forever (as reported for buildbuddy's Firecracker
 * handler). explore finds it as `hang` (`--balloon 8 --deflate 0`: a deflate
 * would bring one more message and hide it).
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

  const serveFault = (address: number): boolean => {
    try {
      if (removed.has(address - base)) uffd.zeropage({ start: address, length: pageSize });
      else uffd.copy({ dst: address, src: snapshot + (address - base), length: pageSize });
    } catch (error) {
      const errno = (error as { errno?: number }).errno;
      if (errno === EAGAIN) return false;
      if (errno !== EEXIST) throw error;
      uffd.wake({ start: address, length: pageSize });
    }
    return true;
  };

  for (;;) {
    // The bug: no timeout, even with faults deferred.
    if (!(await session.poll())) {
      if (session.signal.aborted) return;
      continue;
    }
    const messages = uffd.readMessages(64);
    for (const message of messages) {
      if (message.event !== 'remove') continue;
      for (let at = Number(message.start); at < Number(message.end); at += pageSize) removed.add(at - base);
    }
    const retry = deferred;
    deferred = [];
    for (const address of retry) if (!serveFault(address)) deferred.push(address);
    for (const message of messages) {
      if (message.event !== 'pagefault') continue;
      const address = Number(message.address) - ((Number(message.address) - base) % pageSize);
      if (!serveFault(address)) deferred.push(address);
    }
  }
}
