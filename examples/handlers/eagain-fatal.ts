/**
 * BUG: EAGAIN treated as fatal. UFFDIO_COPY fails with EAGAIN while a
 * non-cooperative event (the balloon's REMOVE) is unread — and until the
 * thread that raised it runs again — so a handler that treats every errno
 * but EEXIST as fatal dies, killing the VM (as reported for fcvm and
 * Firecracker's example handler). explore finds it as `handler-error`.
 */
import type { HandlerSession } from '../../src/handlers/session.ts';

const EEXIST = 17;
const PROT_READ = 1;

export default async function serve(session: HandlerSession): Promise<void> {
  const { uffd, process, regions } = session;
  const region = regions[0]!;
  const pageSize = region.page_size;
  const base = region.base_host_virt_addr;
  const snapshot = process.mmap({ length: region.size, fd: session.memoryFd, prot: PROT_READ });
  const removed = new Set<number>();
  for (;;) {
    if (!(await session.poll())) {
      if (session.signal.aborted) return;
      continue;
    }
    const messages = uffd.readMessages(64);
    for (const message of messages) {
      if (message.event !== 'remove') continue;
      for (let at = Number(message.start); at < Number(message.end); at += pageSize) removed.add(at - base);
    }
    for (const message of messages) {
      if (message.event !== 'pagefault') continue;
      const address = Number(message.address) - ((Number(message.address) - base) % pageSize);
      try {
        if (removed.has(address - base)) uffd.zeropage({ start: address, length: pageSize });
        else uffd.copy({ dst: address, src: snapshot + (address - base), length: pageSize });
      } catch (error) {
        // The bug: only EEXIST is expected; EAGAIN ends the handler.
        if ((error as { errno?: number }).errno !== EEXIST) throw error;
        uffd.wake({ start: address, length: pageSize });
      }
    }
  }
}
