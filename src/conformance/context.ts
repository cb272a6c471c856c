/**
 * What a conformance case gets: a fresh model backend in which the type under
 * test is registered, and helpers that obtain memory of that type the way
 * its declaration allows (a provision, or its `conformanceFile` recipe),
 * never by its name. Checks throw a `CaseFailure` with a message that says
 * what was expected and what happened.
 */
import type { ModelBackend } from '../api/model-backend.ts';
import { Process, type ThreadAccess, type ThreadBackend, Uffd } from '../api/process.ts';
import type { MemoryType } from '../model/mm/memtype.ts';
import { errnoName, KernelError } from '../uapi/errno.ts';
import type { UffdMsg, UffdMsgPagefault } from '../uapi/structs.ts';
import { isFileBacked, type MemorySource } from './declared.ts';

export class CaseFailure extends Error {
  override name = 'CaseFailure';
}

/** A check; the message says what should have held. */
export function ensure(condition: unknown, message: string): asserts condition {
  if (!condition) throw new CaseFailure(message);
}

export function hexOf(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

/** One mapping made by the suite. */
export interface Area {
  readonly address: number;
  readonly length: number;
  readonly pages: number;
  /** The file behind it; null for anonymous memory. */
  readonly fd: number | null;
  readonly shared: boolean;
}

export interface AreaOptions {
  /** Pages (of the type's page size) to map; 4 unless said. */
  readonly pages?: number;
  /** The file's size in pages, when it should differ from the mapping's (pages beyond the end of the file). */
  readonly filePages?: number;
  /** MAP_SHARED; the default is shared for files and private for anonymous memory. */
  readonly shared?: boolean;
}

export class CaseContext {
  readonly process: Process;
  readonly fileBacked: boolean;

  constructor(
    readonly backend: ModelBackend,
    /** The type under test, as registered in this backend. */
    readonly type: MemoryType,
    readonly source: MemorySource,
    /** The page size faults, fills and ranges work in. */
    readonly pageSize: number,
  ) {
    this.process = new Process(backend.self);
    this.fileBacked = isFileBacked(type);
  }

  /** The address of page `index` of `area`. */
  page(area: Area, index: number): number {
    return area.address + index * this.pageSize;
  }

  /** A new mapping of memory of the type: a new file (file types) or anonymous memory. */
  area(options: AreaOptions = {}): Area {
    const pages = options.pages ?? 4;
    const length = pages * this.pageSize;
    const shared = options.shared ?? this.fileBacked;
    if (!this.fileBacked) {
      if (shared) throw new Error('conformance case bug: anonymous memory of this type is private only');
      return { address: this.process.mmap({ length }), length, pages, fd: null, shared };
    }
    const fd = this.newFile((options.filePages ?? pages) * this.pageSize);
    return { address: this.process.mmap({ length, fd, shared }), length, pages, fd, shared };
  }

  /** A new file of the type, `sizeBytes` long. */
  newFile(sizeBytes: number): number {
    const source = this.source;
    if (source.kind === 'memfd')
      return this.process.memfd('conformance', { size: sizeBytes, hugetlb: source.hugetlb });
    if (source.kind === 'recipe') return this.type.conformanceFile!(this.process.backend, sizeBytes);
    throw new Error('conformance case bug: anonymous memory has no files');
  }

  /** Another mapping of the area's file: shared unless said otherwise. */
  alias(area: Area, options: { shared?: boolean } = {}): Area {
    if (area.fd === null) throw new Error('conformance case bug: an anonymous area has no file to map again');
    const shared = options.shared ?? true;
    const address = this.process.mmap({ length: area.length, fd: area.fd, shared });
    return { ...area, address, shared };
  }

  /**
   * Puts `data` into the file's page cache at page `index` through a shared
   * mapping nobody registered, as a VMM fills guest memory before a MINOR
   * restore: every file type the suite can map takes writes that way.
   */
  fillCache(area: Area, index: number, data: Uint8Array): void {
    const alias = this.alias(area, { shared: true });
    this.process.write(this.page(alias, index), data);
    this.process.munmap(alias.address, alias.length);
  }

  /** A userfaultfd, initialised with `features`. */
  uffd(features = 0): Uffd {
    const uffd = this.process.userfaultfd();
    uffd.api(features);
    return uffd;
  }

  /** A userfaultfd fd installed in this process (a FORK event's), as a `Uffd`. */
  adoptUffd(fd: number): Uffd {
    return new Uffd(this.process, fd);
  }

  /** Bytes of one page that differ per page and per `seed`, never all zero. */
  pattern(seed: number): Uint8Array {
    const bytes = new Uint8Array(this.pageSize);
    for (let i = 0; i < bytes.length; i += 4096) {
      for (let j = 0; j < 4096; j++) bytes[i + j] = ((j * 31 + (i >>> 12) * 7 + seed * 101) & 0xff) | 1;
    }
    return bytes;
  }

  thread(accesses: ThreadAccess[], process: Process = this.process): ThreadBackend {
    return process.thread(accesses);
  }

  /**
   * The next message of `uffd`, which must come before `thread` ends (a thread
   * that ends first, say with SIGBUS, would leave the wait unanswered).
   */
  async message(uffd: Uffd, thread?: ThreadBackend): Promise<UffdMsg> {
    const arrived = uffd.nextMessages(1).then((messages) => ({ messages }));
    const winner =
      thread === undefined
        ? await arrived
        : await Promise.race([arrived, thread.join().then((result) => ({ result }))]);
    if ('result' in winner) {
      const signal = winner.result.signal === undefined ? '' : ` at ${hexOf(winner.result.signal.address)}`;
      throw new CaseFailure(
        `expected a userfaultfd message, but the thread ended: ${winner.result.state}${signal}`,
      );
    }
    const [message] = winner.messages;
    ensure(message !== undefined, 'expected a userfaultfd message, but the fd reported none');
    return message;
  }

  /** The next message must be a page fault at `address` with `flags`. */
  async fault(uffd: Uffd, thread: ThreadBackend, address: number, flags: number): Promise<UffdMsgPagefault> {
    const message = await this.message(uffd, thread);
    ensure(message.event === 'pagefault', `expected a pagefault message, got ${describeMessage(message)}`);
    ensure(
      Number(message.address) === address && message.flags === flags,
      `expected a pagefault at ${hexOf(address)} with flags ${flags}, got ${describeMessage(message)}`,
    );
    return message;
  }

  /** No message may be waiting. */
  noMessage(uffd: Uffd, why: string): void {
    const messages = uffd.readMessages();
    ensure(
      messages.length === 0,
      `${why}: expected no message, got ${messages.map(describeMessage).join(', ')}`,
    );
  }

  /** `call` must fail with `errno`; returns the error (its `progress` is the result field). */
  expectErrno(call: () => unknown, errno: number, what: string): KernelError {
    try {
      call();
    } catch (error) {
      if (!(error instanceof KernelError)) throw error;
      ensure(
        error.errno === errno,
        `${what}: expected ${errnoName(errno)}, got ${errnoName(error.errno)} (${error.message})`,
      );
      return error;
    }
    throw new CaseFailure(`${what}: expected ${errnoName(errno)}, but it succeeded`);
  }

  /** As `expectErrno`, and the result field must read -errno (or `progress`). */
  expectFieldErrno(call: () => unknown, errno: number, what: string, progress = -errno): void {
    const error = this.expectErrno(call, errno, what);
    ensure(
      error.progress === progress,
      `${what}: expected the result field ${progress}, got ${error.progress}`,
    );
  }

  /** A thread must end in `state`. */
  async ends(thread: ThreadBackend, state: 'done' | 'sigbus' | 'segv', what: string) {
    const result = await thread.join();
    ensure(result.state === state, `${what}: expected the thread to end ${state}, it ended ${result.state}`);
    return result;
  }
}

export function describeMessage(message: UffdMsg): string {
  switch (message.event) {
    case 'pagefault':
      return `pagefault at ${hexOf(message.address)} flags ${message.flags}`;
    case 'fork':
      return `fork (ufd ${message.ufd})`;
    case 'remap':
      return `remap ${hexOf(message.from)} -> ${hexOf(message.to)} (${message.len} bytes)`;
    case 'remove':
    case 'unmap':
      return `${message.event} ${hexOf(message.start)}-${hexOf(message.end)}`;
    default:
      return 'an unknown event';
  }
}

/** Bytes must be equal; the message names the first difference. */
export function ensureBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  ensure(
    actual.byteLength === expected.byteLength,
    `${what}: ${actual.byteLength} bytes, expected ${expected.byteLength}`,
  );
  if (Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected)) return;
  const at = actual.findIndex((byte, i) => byte !== expected[i]);
  throw new CaseFailure(`${what}: byte ${hexOf(at)} is ${actual[at]}, expected ${expected[at]}`);
}
