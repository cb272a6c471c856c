/**
 * Snapshot restore, Firecracker style: a memory snapshot file, a guest
 * region restored lazily by a userfaultfd handler while vCPU threads touch
 * it. Modes: anonymous MISSING + COPY (ZEROPAGE for zero pages), hugetlb
 * 2 MiB MISSING + COPY, guest_memfd MINOR + write() + CONTINUE, and
 * guest_memfd MISSING + COPY. Prefetch: none, a fixed window after each
 * fault, or a working set recorded on an earlier run (REAP).
 */
import { writeFileSync } from 'node:fs';
import type { KernelBackend, ThreadResult } from '../api/backend.ts';
import { Process, Uffd } from '../api/process.ts';
import type { Trace } from '../trace/trace.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  MADV_DONTNEED,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
} from '../uapi/constants.ts';
import { EAGAIN, EEXIST, KernelError } from '../uapi/errno.ts';
import {
  type GuestRegionUffdMapping,
  listenHandshake,
  regionAddress,
  regionFileOffset,
  sendHandshake,
} from './firecracker.ts';
import { type AccessPattern, type GuestLayout, touchPages, vcpuPages, type WorkingSetFile } from './guest.ts';
import { type FaultSample, WorkloadStats } from './stats.ts';

export type RestoreMode = 'anon' | 'hugetlb' | 'gmem-minor' | 'gmem-missing';
export const RESTORE_MODES: readonly RestoreMode[] = ['anon', 'hugetlb', 'gmem-minor', 'gmem-missing'];

export interface SnapshotRestoreOptions {
  readonly backend: KernelBackend;
  readonly mode: RestoreMode;
  readonly guestBytes: number;
  readonly vcpus: number;
  readonly pattern: AccessPattern;
  readonly seed: number;
  /** Pages to copy after each faulting page (0: none). */
  readonly prefetchWindow: number;
  /**
   * Pages at the end of guest memory a balloon discards (MADV_DONTNEED) while
   * the guest runs (anon mode): the handler reads the REMOVE event, defers
   * faults that hit EAGAIN meanwhile, and serves removed pages with ZEROPAGE.
   */
  readonly balloonPages?: number;
  /** Pages to restore before the guest runs (REAP's recorded working set). */
  readonly workingSet?: readonly number[];
  /** Write the first-touch order of faulted pages here (record for a later run). */
  readonly recordWorkingSet?: string;
  readonly trace: Trace;
  /** Called with (pages resolved, pages total) as the restore goes. */
  readonly progress?: (done: number, total: number) => void;
  /**
   * Play Firecracker and its page-fault handler over this Unix socket (host
   * backend, anon and hugetlb modes): the handler listens, the VMM sends the
   * regions and the userfaultfd, and the handler serves faults on the
   * descriptor it received.
   */
  readonly firecrackerSocket?: string;
}

export interface SnapshotRestoreResult {
  readonly stats: WorkloadStats;
  readonly verifiedPages: number;
  readonly pages: number;
  readonly pageSize: number;
  readonly threads: readonly ThreadResult[];
}

/** The snapshot's content: deterministic per page, with every eighth page all zero. */
export function snapshotPage(index: number, pageSize: number): Uint8Array {
  const page = new Uint8Array(pageSize);
  if (index % 8 === 7) return page;
  const view = new DataView(page.buffer);
  for (let offset = 0; offset < pageSize; offset += 64) {
    view.setUint32(offset, index, true);
    view.setUint32(offset + 4, offset, true);
  }
  return page;
}

function isZeroPage(index: number): boolean {
  return index % 8 === 7;
}

export async function runSnapshotRestore(options: SnapshotRestoreOptions): Promise<SnapshotRestoreResult> {
  const { backend, mode, trace } = options;
  const process = new Process(backend.self);
  const pageSize = mode === 'hugetlb' ? 2 * 1024 * 1024 : 4096;
  if (options.guestBytes % pageSize !== 0) {
    throw new Error(
      `--size: ${options.guestBytes} bytes is not a multiple of the ${pageSize}-byte pages of mode ${mode}`,
    );
  }
  const pages = options.guestBytes / pageSize;
  const socketPath = options.firecrackerSocket;
  if (socketPath !== undefined && mode !== 'anon' && mode !== 'hugetlb') {
    throw new Error(`--firecracker-socket: mode ${mode} is not supported (anon and hugetlb only)`);
  }
  // The handler binds its socket before the VMM starts (needs the host backend: checked here).
  const listener = socketPath === undefined ? undefined : listenHandshake(backend, socketPath);
  const stats = new WorkloadStats(options.vcpus);

  // The snapshot memory file, and the handler's private read-only view of it.
  const snapshotFd = process.memfd('snapshot', { size: options.guestBytes });
  for (let i = 0; i < pages; i++) {
    const page = snapshotPage(i, pageSize);
    if (!isZeroPage(i)) process.pwrite(snapshotFd, page, i * pageSize);
  }
  const snapshot = process.mmap({ length: options.guestBytes, fd: snapshotFd, prot: 1 });

  // The guest region and the userfaultfd, as the VMM sets them up.
  let guest: number;
  let guestFd = -1;
  let registerMode = UFFDIO_REGISTER_MODE_MISSING;
  if (mode === 'anon') {
    guest = process.mmap({ length: options.guestBytes });
  } else if (mode === 'hugetlb') {
    guest = process.mmap({ length: options.guestBytes, hugetlb: true });
  } else {
    guestFd = process.guestMemfd({ size: options.guestBytes });
    guest = process.mmap({ length: options.guestBytes, fd: guestFd, shared: true });
    if (mode === 'gmem-minor') {
      // The VMM preallocates guest memory, so every first touch finds a page in the
      // cache and raises a MINOR fault that the handler answers with write() + CONTINUE.
      process.fallocate(guestFd, FALLOC_FL_KEEP_SIZE, 0, options.guestBytes);
      registerMode = UFFDIO_REGISTER_MODE_MINOR;
    }
  }
  const vmmUffd = process.userfaultfd({ nonblock: true, cloexec: true });
  vmmUffd.api(mode === 'anon' ? ['event_remove'] : []);
  vmmUffd.register({ start: guest, length: options.guestBytes }, registerMode);
  const layout: GuestLayout = { base: guest, pageSize, pages };

  // The handler's view of guest memory: the regions (from the handshake, or the VMM's own).
  let uffd: Uffd = vmmUffd;
  let regions: GuestRegionUffdMapping[] = [
    {
      base_host_virt_addr: guest,
      size: options.guestBytes,
      offset: 0,
      page_size: pageSize,
      page_size_kib: pageSize,
    },
  ];
  if (listener !== undefined && socketPath !== undefined) {
    try {
      const handshake = listener.accept();
      sendHandshake(backend, socketPath, regions, vmmUffd.fd);
      // Firecracker closes its own copy once sent: from here only the handler's descriptor remains.
      vmmUffd.close();
      const received = await handshake;
      regions = received.regions;
      // The VMM already did UFFDIO_API and UFFDIO_REGISTER on this file.
      uffd = new Uffd(process, received.uffdFd);
    } finally {
      listener.close();
    }
    for (const region of regions) {
      if (region.page_size !== pageSize)
        throw new Error(`Firecracker handshake: page_size ${region.page_size}, the guest uses ${pageSize}`);
    }
  }
  /** The guest address of snapshot page `index`, as the handler finds it in the regions. */
  const pageAddress = (index: number): number => {
    const address = regionAddress(regions, index * pageSize);
    if (address === undefined) throw new Error(`snapshot page ${index} lies in no guest region`);
    return address;
  };

  const resolved = new Uint8Array(pages);
  let resolvedCount = 0;
  const firstTouch: number[] = [];

  // Pages a balloon removed (REMOVE events read): they read as zero from now on.
  const removed = new Uint8Array(pages);
  /** Faults that met EAGAIN while a REMOVE event was unread; retried after the events are read. */
  let deferred: number[] = [];
  let deferredFaults = 0;

  /** Makes page `index` present; false if it was there already or must wait (EAGAIN: see `deferred`). */
  const populate = (index: number, source: 'fault' | 'prefetch'): boolean => {
    if (resolved[index] === 1) return false;
    const address = pageAddress(index);
    const start = performance.now();
    let name: string;
    try {
      if (mode === 'gmem-minor') {
        name = 'write+UFFDIO_CONTINUE';
        process.lseek(guestFd, index * pageSize);
        process.writeFile(guestFd, process.read(snapshot + index * pageSize, pageSize));
        uffd.continue({ start: address, length: pageSize });
      } else if (mode === 'anon' && (isZeroPage(index) || removed[index] === 1)) {
        name = 'UFFDIO_ZEROPAGE';
        uffd.zeropage({ start: address, length: pageSize });
      } else {
        name = 'UFFDIO_COPY';
        uffd.copy({ dst: address, src: snapshot + index * pageSize, length: pageSize });
      }
    } catch (error) {
      // Another path (a prefetch, a racing fault) got there first: the page is present.
      if (!(error instanceof KernelError && (error.errno === EEXIST || error.errno === EAGAIN))) throw error;
      if (error.errno === EAGAIN) {
        if (source === 'fault') {
          deferred.push(index);
          deferredFaults++;
        }
        return false;
      }
      name = 'EEXIST';
    }
    trace.span(name, source, 0, start, performance.now(), { page: index });
    resolved[index] = 1;
    resolvedCount++;
    stats.bytesMoved += pageSize;
    options.progress?.(resolvedCount, pages);
    return true;
  };

  // REAP: restore the recorded working set before the guest runs.
  if (options.workingSet !== undefined) {
    for (const index of options.workingSet) if (index < pages) populate(index, 'prefetch');
    stats.prefetched = resolvedCount;
  }

  const shares = vcpuPages(layout, options.vcpus, options.pattern, options.seed, options.workingSet);
  trace.nameThread(0, 'uffd handler');
  const threads = shares.map((share, v) => {
    const thread = process.thread(touchPages(layout, share), `vcpu${v}`);
    trace.nameThread(thread.tid, `vcpu${v}`);
    return thread;
  });
  const vcpuByTid = new Map(threads.map((thread, v) => [thread.tid, v]));
  const balloonPages = mode === 'anon' ? Math.min(options.balloonPages ?? 0, pages) : 0;
  const balloonFirst = pages - balloonPages;
  if (balloonPages > 0) {
    // virtio-balloon inflating: the VMM discards the pages, and userfaultfd tells the handler.
    const balloon = process.thread(
      [
        {
          kind: 'syscall',
          call: 'madvise',
          args: [pageAddress(balloonFirst), balloonPages * pageSize, MADV_DONTNEED],
        },
      ],
      'balloon',
    );
    trace.nameThread(balloon.tid, 'balloon');
    threads.push(balloon);
  }

  let finished = false;
  const joined = Promise.all(threads.map((thread) => thread.join())).then((results) => {
    finished = true;
    return results;
  });
  while (!finished) {
    const readStart = performance.now();
    const messages = await Promise.race([uffd.nextMessages(64), joined.then(() => [])]);
    if (messages.length > 0)
      trace.span('read(uffd)', 'handler', 0, readStart, performance.now(), { messages: messages.length });
    for (const message of messages) {
      if (message.event === 'remove') {
        const first = regionFileOffset(regions, Number(message.start));
        const last = regionFileOffset(regions, Number(message.end) - 1);
        if (first === undefined || last === undefined) continue;
        for (let index = first / pageSize; index <= Math.floor(last / pageSize); index++) {
          removed[index] = 1;
          resolved[index] = 0;
        }
        stats.removeEvents++;
        trace.instant('REMOVE', 'event', 0, performance.now(), {
          pages: Math.floor(last / pageSize) - first / pageSize + 1,
        });
        continue;
      }
      if (message.event !== 'pagefault') continue;
      const received = performance.now();
      const address = Number(message.address);
      const fileOffset = regionFileOffset(regions, address);
      if (fileOffset === undefined)
        throw new Error(`fault at 0x${address.toString(16)} outside every guest region`);
      const index = Math.floor(fileOffset / pageSize);
      trace.instant('fault', 'fault', 0, received, { page: index, flags: message.flags });
      if (resolved[index] === 0) firstTouch.push(index);
      const newlyResolved = populate(index, 'fault');
      // A fault for a page a prefetch already mapped only needs its waiter woken.
      if (!newlyResolved) uffd.wake({ start: address - (address % pageSize), length: pageSize });
      for (let next = index + 1; next <= index + options.prefetchWindow && next < pages; next++)
        populate(next, 'prefetch');
      const sample: FaultSample = {
        atMs: received,
        page: index,
        kind: message.flags & 4 ? 'minor' : message.flags & 1 ? 'write miss' : 'read miss',
        latencyUs: (performance.now() - received) * 1000,
      };
      stats.record(sample, vcpuByTid.get(message.ptid));
    }
    // With the events read, the deferred faults can go through.
    const retry = deferred;
    deferred = [];
    for (const index of retry) {
      if (!populate(index, 'fault') && !deferred.includes(index)) {
        const address = pageAddress(index);
        uffd.wake({ start: address, length: pageSize });
      }
    }
  }
  const results = await joined;
  results.slice(0, options.vcpus).forEach((result, v) => {
    stats.blockedMs[v] = result.blockedMs ?? Number.NaN;
  });
  stats.deferredFaults = deferredFaults;
  // Closing unregisters the guest, so discarded pages read as zero instead of faulting.
  uffd.close();

  // Every page the guest touched must hold the snapshot's bytes.
  let verifiedPages = 0;
  const touched = new Set(shares.flat());
  for (const index of touched) {
    const expected = index >= balloonFirst ? new Uint8Array(pageSize) : snapshotPage(index, pageSize);
    const actual = process.read(guest + index * pageSize, pageSize);
    if (actual.every((byte, i) => byte === expected[i])) verifiedPages++;
  }
  if (options.recordWorkingSet !== undefined) {
    const file: WorkingSetFile = { version: 1, pageSize, pages: firstTouch };
    writeFileSync(options.recordWorkingSet, JSON.stringify(file));
  }
  return { stats, verifiedPages, pages: touched.size, pageSize, threads: results };
}

export type { Uffd };
