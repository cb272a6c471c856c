/**
 * Scenario ops on files and memory: memfd, guest_memfd, mmap, mprotect,
 * fallocate, pwrite, pread, lseek, read, write, pagemap and vmas. One function per
 * op, each given the step typed by its schema.
 */
import { WouldBlockError } from '../api/backend.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  O_RDONLY,
  PROT_READ,
  PROT_WRITE,
} from '../uapi/constants.ts';
import { SignalError } from '../uapi/errno.ts';
import { dataBytes, type OpCall, type OpTable, observe, syscallSize } from './context.ts';
import { errnoOf, type ObservedResult } from './result.ts';

const PROT: Record<string, number> = { rw: PROT_READ | PROT_WRITE, r: PROT_READ, none: 0 };
const WHENCE: Record<string, number> = { set: 0, cur: 1, end: 2, data: 3, hole: 4 };

/** The fd a file step acts on: the file's, or the userfaultfd's it names instead. */
function fdOf(context: OpCall<'pread'>['context'], target: { file?: string; uffd?: string }): number {
  if (target.file !== undefined) return context.files.get(target.file)!.fd;
  return context.uffds.get(target.uffd!)!.fd;
}

function mmap({ context, args: a, process, processName }: OpCall<'mmap'>): ObservedResult {
  const { backend } = process;
  return observe(() => {
    let fd = -1;
    if (a.file !== undefined) {
      fd = context.files.get(a.file)!.fd;
      if (a.fd_readonly === true) fd = backend.reopen(fd, O_RDONLY);
    }
    let flags = a.shared === true ? MAP_SHARED : MAP_PRIVATE;
    if (fd < 0) flags |= MAP_ANONYMOUS;
    if (a.hugetlb !== undefined && a.hugetlb !== false && fd < 0)
      flags |= MAP_HUGETLB | (a.hugetlb === '1G' ? 30 << 26 : 0);
    const length = syscallSize(a.length);
    const address = backend.mmap({
      address: 0,
      length,
      prot: PROT[a.prot ?? 'rw']!,
      flags,
      fd,
      offset: syscallSize(a.offset ?? 0),
    });
    if (a.fd_readonly === true) backend.close(fd);
    context.maps.set(a.name, { process: processName, address, length });
  });
}

/**
 * read and write from the runner's own thread: a signal is observed; a
 * uffd fault would block the runner, so the step says to use a thread.
 */
function touch(
  call: OpCall<'read'> | OpCall<'write'>,
  access: (address: number) => ObservedResult,
): ObservedResult {
  const { context, step, args } = call;
  try {
    return access(context.address(args.map, args.offset));
  } catch (error) {
    if (error instanceof SignalError) return { signal: error.signalName };
    if (error instanceof WouldBlockError) {
      throw new Error(`step ${step.index} (${step.op}) would block on a userfaultfd fault; use a thread`);
    }
    return { errno: errnoOf(error) };
  }
}

export const MEMORY_OPS: OpTable<
  | 'memfd'
  | 'guest_memfd'
  | 'mmap'
  | 'mprotect'
  | 'fallocate'
  | 'pwrite'
  | 'pread'
  | 'lseek'
  | 'read'
  | 'write'
> = {
  memfd: ({ context, args: a, process, processName }) =>
    observe(() => {
      const fd = process.memfd(a.name, { size: syscallSize(a.size), hugetlb: a.hugetlb === true });
      context.files.set(a.name, { process: processName, fd });
    }),
  guest_memfd: ({ context, args: a, process, processName }) =>
    observe(() => {
      const fd = process.guestMemfd({
        size: syscallSize(a.size),
        mmap: a.mmap ?? true,
        ...(a.init_shared === undefined ? {} : { initShared: a.init_shared }),
      });
      context.files.set(a.name, { process: processName, fd });
    }),
  mmap,
  mprotect: ({ context, args: a, process }) =>
    observe(() =>
      process.mprotect(
        context.address(a.map, a.offset),
        Number(context.lengthOf(a.map, a.offset, a.length)),
        PROT[a.prot]!,
      ),
    ),
  fallocate: ({ context, args: a, process }) =>
    observe(() =>
      process.fallocate(
        fdOf(context, a),
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
        syscallSize(a.offset),
        syscallSize(a.length),
      ),
    ),
  pwrite: ({ context, args: a, process }) =>
    observe(() => process.pwrite(fdOf(context, a), dataBytes(a.data), syscallSize(a.offset))),
  pread: ({ context, args: a, process }) => {
    try {
      return {
        data: process.pread(fdOf(context, a), syscallSize(a.length), syscallSize(a.offset)),
      };
    } catch (error) {
      return { errno: errnoOf(error) };
    }
  },
  lseek: ({ context, args: a, process }) => {
    try {
      return { position: process.lseek(fdOf(context, a), syscallSize(a.offset), WHENCE[a.whence ?? 'set']) };
    } catch (error) {
      return { errno: errnoOf(error) };
    }
  },
  read: (call) =>
    touch(call, (address) => ({ data: call.process.read(address, syscallSize(call.args.length)) })),
  write: (call) =>
    touch(call, (address) => {
      call.process.write(address, dataBytes(call.args.data));
      return {};
    }),
};

/** What the kernel reports of memory: pagemap bits per page, the VMAs a map spans. */
export const INSPECT_OPS: OpTable<'pagemap' | 'vmas'> = {
  pagemap: ({ context, args: a, process }) => {
    const pages = process.backend.pagemap(
      context.address(a.map, a.offset),
      Math.ceil(syscallSize(a.length) / 4096),
    );
    return {
      pages: pages.map((page) => ({
        present: page.present,
        uffd_wp: page.uffdWp,
        marker: page.marker,
        zero_page: page.zeroPage,
      })),
    };
  },
  vmas: ({ context, args: a }) => {
    const map = context.maps.get(a.map)!;
    const owner = context.process(a.process ?? map.process);
    const vmas = owner.backend.vmas(map.address, map.address + map.length);
    return { count: vmas.length, flags: vmas.map((vma) => [...vma.modes]) };
  },
};
