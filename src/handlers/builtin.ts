/**
 * faultline's own handler for snapshot-restore, written as a handler module
 * (`serve(session)`) like any a user brings, and careful about every race
 * userfaultfd has:
 *
 * - events before faults: a REMOVE read in the same batch as a fault for a
 *   discarded page is applied first, so that page is served as zero, not
 *   refilled with stale snapshot bytes;
 * - EAGAIN (mmap_changing: an event unread, or read while the thread that
 *   raised it has not run since) defers the fault, and deferred faults are
 *   retried after a *bounded* poll — EAGAIN can outlast the read of the
 *   event, and no further message may ever come;
 * - EEXIST (another path filled the page: a prefetch, a racing fault) is
 *   success, but the fault's waiter still needs a UFFDIO_WAKE, since a fill
 *   that fails wakes no one.
 *
 * Modes follow from the session: MINOR faults are served with write() into
 * the guest_memfd then UFFDIO_CONTINUE; MISSING ones with UFFDIO_COPY from
 * the memory file mapped read-only, or UFFDIO_ZEROPAGE for a page the
 * balloon discarded (4 KiB pages; hugetlb has no ZEROPAGE and copies zeros).
 */

import { PROT_READ, UFFD_PAGEFAULT_FLAG_MINOR } from '../uapi/constants.ts';
import { EAGAIN, EEXIST, KernelError } from '../uapi/errno.ts';
import type { UffdMsgPagefault, UffdMsgRemove } from '../uapi/structs.ts';
import { regionAddress, regionFileOffset } from '../workloads/firecracker.ts';
import type { HandlerSession, Serve } from './session.ts';

/** How long the handler waits before retrying deferred faults (model time on the model). */
export const RETRY_POLL_MS = 1;

/** What the workload learns from its own handler (a user's handler reports nothing). */
export interface BuiltinObserver {
  /** A fault message was served (`latencyMs` from receiving it to the page being present). */
  fault?(page: number, flags: number, receivedMs: number, latencyMs: number, ptid: number): void;
  /** A page was made present: how, and why (a fault or a prefetch). */
  populated?(page: number, how: string, source: 'fault' | 'prefetch', startMs: number, endMs: number): void;
  /** A read(2) returned `count` messages. */
  read?(count: number, startMs: number, endMs: number): void;
  /** A REMOVE event covering `pages` pages was read. */
  removed?(firstPage: number, pages: number, atMs: number): void;
  /** A fault met EAGAIN and was deferred. */
  deferred?(page: number): void;
}

export interface BuiltinHandlerOptions {
  /** Pages to fill after each faulting page (0: none). */
  readonly prefetchWindow?: number;
  /** Pages to restore before serving any fault (REAP's recorded working set). */
  readonly workingSet?: readonly number[];
  readonly observer?: BuiltinObserver;
}

type Fill = 'filled' | 'present' | 'again';

/** The built-in handler with options (the workload's default). */
export function createBuiltinHandler(options: BuiltinHandlerOptions = {}): Serve {
  return (session) => new CarefulHandler(session, options).serve();
}

class CarefulHandler {
  private readonly pageSize: number;
  private readonly pages: number;
  private snapshot = 0;
  /** Pages this handler made present (a REMOVE clears them). */
  private readonly resolved: Uint8Array;
  /** Pages a REMOVE event discarded: they read as zero from now on. */
  private readonly removed: Uint8Array;
  /** Faults that met EAGAIN, to retry after a bounded poll. */
  private deferred: Array<{ page: number; minor: boolean }> = [];
  private readonly observer: BuiltinObserver;
  /** The page a write() fill goes through (MINOR mode). */
  private buffer: Uint8Array | null = null;

  constructor(
    private readonly session: HandlerSession,
    private readonly options: BuiltinHandlerOptions,
  ) {
    const regions = session.regions;
    this.pageSize = regions[0]!.page_size;
    const last = regions[regions.length - 1]!;
    this.pages = (last.offset + last.size) / this.pageSize;
    this.resolved = new Uint8Array(this.pages);
    this.removed = new Uint8Array(this.pages);
    this.observer = options.observer ?? {};
  }

  async serve(): Promise<void> {
    const session = this.session;
    this.snapshot = session.process.mmap({
      length: this.pages * this.pageSize,
      fd: session.memoryFd,
      prot: PROT_READ,
    });
    for (const page of this.options.workingSet ?? []) if (page < this.pages) this.fill(page, 'prefetch');
    for (;;) {
      const retrying = this.deferred.length > 0;
      const readable = await session.poll(retrying ? RETRY_POLL_MS : -1);
      if (readable) this.serveBatch();
      if (this.deferred.length > 0) this.retryDeferred();
      else if (!readable && session.signal.aborted) return;
    }
  }

  private serveBatch(): void {
    const start = this.session.now();
    const messages = this.session.uffd.readMessages(64);
    if (messages.length === 0) return;
    this.observer.read?.(messages.length, start, this.session.now());
    // Events first: read() returns faults before events, but a REMOVE read now
    // already happened to the pages those faults are for.
    for (const message of messages) if (message.event === 'remove') this.onRemove(message);
    for (const message of messages) if (message.event === 'pagefault') this.onFault(message);
  }

  private onRemove(message: UffdMsgRemove): void {
    const regions = this.session.regions;
    const first = regionFileOffset(regions, Number(message.start));
    const last = regionFileOffset(regions, Number(message.end) - 1);
    if (first === undefined || last === undefined) return;
    const firstPage = first / this.pageSize;
    const lastPage = Math.floor(last / this.pageSize);
    for (let page = firstPage; page <= lastPage; page++) {
      this.removed[page] = 1;
      this.resolved[page] = 0;
    }
    this.observer.removed?.(firstPage, lastPage - firstPage + 1, this.session.now());
  }

  private onFault(message: UffdMsgPagefault): void {
    const received = this.session.now();
    const address = Number(message.address);
    const offset = regionFileOffset(this.session.regions, address);
    if (offset === undefined)
      throw new Error(`fault at 0x${address.toString(16)} outside every guest region`);
    const page = Math.floor(offset / this.pageSize);
    const minor = (message.flags & UFFD_PAGEFAULT_FLAG_MINOR) !== 0;
    this.serveFault(page, minor);
    for (let next = page + 1; next <= page + (this.options.prefetchWindow ?? 0) && next < this.pages; next++)
      if (this.resolved[next] === 0) this.fill(next, 'prefetch', minor);
    this.observer.fault?.(page, message.flags, received, this.session.now() - received, message.ptid);
  }

  /** Serves one fault: fill, or wake its waiter if the page is there already, or defer on EAGAIN. */
  private serveFault(page: number, minor: boolean): void {
    const outcome = this.resolved[page] === 1 ? 'present' : this.fill(page, 'fault', minor);
    if (outcome === 'present') this.session.uffd.wake({ start: this.address(page), length: this.pageSize });
    else if (outcome === 'again' && !this.deferred.some((fault) => fault.page === page)) {
      this.deferred.push({ page, minor });
      this.observer.deferred?.(page);
    }
  }

  private retryDeferred(): void {
    const retry = this.deferred;
    this.deferred = [];
    for (const fault of retry) this.serveFault(fault.page, fault.minor);
  }

  private address(page: number): number {
    const address = regionAddress(this.session.regions, page * this.pageSize);
    if (address === undefined) throw new Error(`snapshot page ${page} lies in no guest region`);
    return address;
  }

  /** Makes `page` present. */
  private fill(
    page: number,
    source: 'fault' | 'prefetch',
    minor = this.session.registerModes.includes('minor'),
  ): Fill {
    const { uffd, process } = this.session;
    const pageSize = this.pageSize;
    const address = this.address(page);
    const start = this.session.now();
    let how: string;
    try {
      if (minor) {
        how = 'write+UFFDIO_CONTINUE';
        const guestMemfd = this.session.guestMemfd!;
        process.lseek(guestMemfd, page * pageSize);
        // Through one reused buffer: the write copies it into the guest_memfd's page cache.
        this.buffer ??= new Uint8Array(pageSize);
        process.writeFile(guestMemfd, process.readInto(this.snapshot + page * pageSize, this.buffer));
        uffd.continue({ start: address, length: pageSize });
      } else if (this.removed[page] === 1 && pageSize === 4096) {
        how = 'UFFDIO_ZEROPAGE';
        uffd.zeropage({ start: address, length: pageSize });
      } else if (this.removed[page] === 1) {
        how = 'UFFDIO_COPY (zeros)';
        uffd.copyBytes(address, new Uint8Array(pageSize));
      } else {
        how = 'UFFDIO_COPY';
        uffd.copy({ dst: address, src: this.snapshot + page * pageSize, length: pageSize });
      }
    } catch (error) {
      if (!(error instanceof KernelError)) throw error;
      if (error.errno === EAGAIN) return 'again';
      if (error.errno !== EEXIST) throw error;
      this.resolved[page] = 1;
      return 'present';
    }
    this.resolved[page] = 1;
    this.observer.populated?.(page, how, source, start, this.session.now());
    return 'filled';
  }
}

/** The built-in handler with its defaults: the module `faultline workload snapshot-restore` runs. */
const serve: Serve = createBuiltinHandler();
export default serve;
