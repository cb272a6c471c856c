/**
 * The conformance cases: one table, crossed with every memory type. A case
 * names what the type must declare (its requirements) and runs on a fresh
 * model with the type under test; what it expects comes from uapi-facts.md
 * (cited as §) and final-ops.md, and from the type's declaration
 * (declared.ts), never from what the type happens to do. A case that cannot
 * set itself up for a reason the declaration does not show (a type that
 * refuses MAP_PRIVATE) skips with that reason.
 *
 * Areas are drawn in pages of the type's page size (4 KiB, or 2 MiB for
 * hugetlbfs); "file 3" means the file behind the mapping is 3 pages long.
 */
import { Process } from '../api/process.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  MADV_DONTNEED,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PROT_NONE,
  UFFD_FEATURE_EVENT_FORK,
  UFFD_FEATURE_EVENT_REMAP,
  UFFD_FEATURE_EVENT_REMOVE,
  UFFD_FEATURE_EVENT_UNMAP,
  UFFD_FEATURE_WP_ASYNC,
  UFFD_PAGEFAULT_FLAG_MINOR,
  UFFD_PAGEFAULT_FLAG_WP,
  UFFD_PAGEFAULT_FLAG_WRITE,
  UFFDIO_CONTINUE_MODE_WP,
  UFFDIO_COPY_MODE_WP,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
  UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
  UFFDIO_WRITEPROTECT_MODE_WP,
} from '../uapi/constants.ts';
import { EAGAIN, EEXIST, EFAULT, EINVAL, ENOENT, errnoName, KernelError } from '../uapi/errno.ts';
import type { Area, CaseContext } from './context.ts';
import { describeMessage, ensure, ensureBytes, hexOf } from './context.ts';
import {
  declaredModes,
  declares,
  expectedRegisterIoctls,
  expectedWpAsyncIoctls,
  files,
  ioctl,
  type RangeIoctlName,
  type Requirement,
  someUndeclaredIoctl,
  userfaultfd,
} from './declared.ts';

/** A case may skip at run time, with the reason, when its setup is refused. */
export interface CaseSkip {
  readonly skip: string;
}

export interface ConformanceCase {
  readonly name: string;
  /** One sentence: what the case checks, citing the facts. */
  readonly description: string;
  readonly requires: readonly Requirement[];
  /** Resolves when the case passes; throws (a CaseFailure, or any error) when it fails. */
  run(t: CaseContext): Promise<CaseSkip | undefined>;
}

const MODE_NAMES: Record<number, string> = {
  [UFFDIO_REGISTER_MODE_MISSING]: 'MISSING',
  [UFFDIO_REGISTER_MODE_WP]: 'WP',
  [UFFDIO_REGISTER_MODE_MINOR]: 'MINOR',
};

function modeName(modes: number): string {
  const names = [1, 2, 4].filter((bit) => modes & bit).map((bit) => MODE_NAMES[bit]);
  return names.join('|') || '0';
}

const whole = (area: Area) => ({ start: area.address, length: area.length });
const onePage = (t: CaseContext, area: Area, index: number, pages = 1) => ({
  start: t.page(area, index),
  length: pages * t.pageSize,
});

/** A read of `length` bytes at `offset` into page `index`. */
const read = (t: CaseContext, area: Area, index: number, offset = 0, length = 16): ThreadAccessRead => ({
  kind: 'read',
  address: t.page(area, index) + offset,
  length,
});
type ThreadAccessRead = { kind: 'read'; address: number; length: number };

/** A private mapping of the area's file, or the errno that refused it. */
function privateAlias(t: CaseContext, area: Area): Area | CaseSkip {
  try {
    return t.alias(area, { shared: false });
  } catch (error) {
    if (!(error instanceof KernelError)) throw error;
    return {
      skip: `mmap(MAP_PRIVATE) of its file fails with ${errnoName(error.errno)}: no private mappings`,
    };
  }
}

/** Registers `area` in every mode the declaration gives; returns the modes. */
function registerDeclared(t: CaseContext, uffd: ReturnType<CaseContext['uffd']>, area: Area): number {
  const modes = declaredModes(t.type);
  uffd.register(whole(area), modes);
  return modes;
}

function vmaModes(t: CaseContext, address: number, process = t.process): string {
  const [vma] = process.backend.vmas(address, address + 1);
  ensure(vma !== undefined, `no VMA at ${hexOf(address)}`);
  return vma.modes.join('|');
}

function expectedVmaModes(modes: number): string {
  return [
    ...(modes & UFFDIO_REGISTER_MODE_MISSING ? ['missing'] : []),
    ...(modes & UFFDIO_REGISTER_MODE_WP ? ['wp'] : []),
    ...(modes & UFFDIO_REGISTER_MODE_MINOR ? ['minor'] : []),
  ].join('|');
}

// --- registration ----------------------------------------------------------

const registerModes: ConformanceCase = {
  name: 'register-modes',
  description:
    'UFFDIO_REGISTER in each of the 8 mode combinations succeeds exactly for the modes the declared ioctls give, returning the declared mask filtered by the modes; others are EINVAL (§3.2, final-ops registration)',
  requires: [],
  async run(t) {
    const area = t.area();
    const uffd = t.uffd();
    checkModes(t, uffd, area);
    return undefined;
  },
};

function checkModes(t: CaseContext, uffd: ReturnType<CaseContext['uffd']>, area: Area): void {
  for (let modes = 0; modes <= 7; modes++) {
    const expected = expectedRegisterIoctls(t.type, modes);
    const what = `UFFDIO_REGISTER ${modeName(modes)} on a ${area.shared ? 'shared' : 'private'} mapping`;
    if (expected === null) {
      t.expectErrno(() => uffd.register(whole(area), modes), EINVAL, what);
      continue;
    }
    const ioctls = uffd.register(whole(area), modes);
    ensure(ioctls === expected, `${what}: expected ioctls ${hexOf(expected)}, got ${hexOf(ioctls)}`);
    ensure(
      vmaModes(t, area.address) === expectedVmaModes(modes),
      `${what}: the VMA has modes ${vmaModes(t, area.address)}`,
    );
    uffd.unregister(whole(area));
  }
}

const registerWpAsync: ConformanceCase = {
  name: 'register-wp-async',
  description:
    'WP alone on a WP_ASYNC userfaultfd registers on any VMA, whatever the type declares, with the mask filtered by WP (§3.2 wp_async, §5.4)',
  requires: [],
  async run(t) {
    const area = t.area();
    const uffd = t.uffd(UFFD_FEATURE_WP_ASYNC);
    const ioctls = uffd.register(whole(area), UFFDIO_REGISTER_MODE_WP);
    const expected = expectedWpAsyncIoctls(t.type);
    ensure(ioctls === expected, `expected ioctls ${hexOf(expected)}, got ${hexOf(ioctls)}`);
    return undefined;
  },
};

// --- faults and their resolution ------------------------------------------

const missingFault: ConformanceCase = {
  name: 'missing-fault',
  description:
    'MISSING: a read miss queues flags 0 at the page-masked address, a write miss flags WRITE; COPY resolves both with the copied bytes, and for shared file memory the page cache holds them (§4.1, §4.3, §3.5, §5.2)',
  requires: [ioctl('COPY')],
  async run(t) {
    // | 0 | 1: read miss | 2: write miss | 3 |
    const area = t.area();
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MISSING);
    const reader = t.thread([read(t, area, 1, 0x123)]);
    await t.fault(uffd, reader, t.page(area, 1), 0);
    ensure(uffd.copyBytes(t.page(area, 1), t.pattern(1)) === t.pageSize, 'COPY returns the bytes copied');
    const readResult = await t.ends(reader, 'done', 'the reader');
    ensureBytes(
      readResult.reads[0]!,
      t.pattern(1).subarray(0x123, 0x133),
      'the reader sees the copied bytes',
    );

    const written = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    const writer = t.thread([{ kind: 'write', address: t.page(area, 2) + 0x40, data: written }]);
    await t.fault(uffd, writer, t.page(area, 2), UFFD_PAGEFAULT_FLAG_WRITE);
    uffd.copyBytes(t.page(area, 2), t.pattern(2));
    await t.ends(writer, 'done', 'the writer');
    const expected = t.pattern(2);
    expected.set(written, 0x40);
    ensureBytes(t.process.read(t.page(area, 2), t.pageSize), expected, 'the write lands on the copied page');

    if (area.shared) {
      const alias = t.alias(area);
      ensureBytes(t.process.read(t.page(alias, 1), t.pageSize), t.pattern(1), 'another mapping of the file');
    }
    return undefined;
  },
};

const missingZeropage: ConformanceCase = {
  name: 'missing-zeropage',
  description:
    'ZEROPAGE resolves a MISSING fault with zeros; on a populated page it is EEXIST (field -17), and a range whose second page is populated is EAGAIN with one page done (§3.6)',
  requires: [ioctl('COPY'), ioctl('ZEROPAGE')],
  async run(t) {
    // | 0: zeropage | 1 | 2: copied |
    const area = t.area({ pages: 3 });
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MISSING);
    const reader = t.thread([read(t, area, 0, 0, 8)]);
    await t.fault(uffd, reader, t.page(area, 0), 0);
    ensure(uffd.zeropage(onePage(t, area, 0)) === t.pageSize, 'ZEROPAGE returns the bytes filled');
    const result = await t.ends(reader, 'done', 'the reader');
    ensureBytes(result.reads[0]!, new Uint8Array(8), 'the reader sees zeros');
    t.expectFieldErrno(() => uffd.zeropage(onePage(t, area, 0)), EEXIST, 'ZEROPAGE of a populated page');
    uffd.copyBytes(t.page(area, 2), t.pattern(2));
    t.expectFieldErrno(
      () => uffd.zeropage(onePage(t, area, 1, 2)),
      EAGAIN,
      'ZEROPAGE of [hole, populated]',
      t.pageSize,
    );
    return undefined;
  },
};

const minorFault: ConformanceCase = {
  name: 'minor-fault',
  description:
    'MINOR: a read of a cached page queues flags MINOR, a write MINOR|WRITE; CONTINUE maps the cached bytes, a second CONTINUE is EEXIST, and a write through the shared mapping reaches the file (§4.1, §3.8)',
  requires: [ioctl('CONTINUE')],
  async run(t) {
    // | 0: cached, read | 1: cached, written | 2 | 3 |
    const area = t.area();
    t.fillCache(area, 0, t.pattern(0));
    t.fillCache(area, 1, t.pattern(1));
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MINOR);
    const reader = t.thread([read(t, area, 0, 0x10)]);
    await t.fault(uffd, reader, t.page(area, 0), UFFD_PAGEFAULT_FLAG_MINOR);
    ensure(uffd.continue(onePage(t, area, 0)) === t.pageSize, 'CONTINUE returns the bytes mapped');
    const result = await t.ends(reader, 'done', 'the reader');
    ensureBytes(result.reads[0]!, t.pattern(0).subarray(0x10, 0x20), 'the reader sees the cached bytes');
    t.expectFieldErrno(() => uffd.continue(onePage(t, area, 0)), EEXIST, 'a second CONTINUE');

    const written = new Uint8Array([9, 8, 7, 6]);
    const writer = t.thread([{ kind: 'write', address: t.page(area, 1) + 8, data: written }]);
    await t.fault(uffd, writer, t.page(area, 1), UFFD_PAGEFAULT_FLAG_MINOR | UFFD_PAGEFAULT_FLAG_WRITE);
    uffd.continue(onePage(t, area, 1));
    await t.ends(writer, 'done', 'the writer');
    const alias = t.alias(area);
    ensureBytes(t.process.read(t.page(alias, 1) + 8, 4), written, 'the write reaches the file');
    return undefined;
  },
};

const minorAndMissing: ConformanceCase = {
  name: 'minor-and-missing',
  description:
    'Registered MISSING|MINOR, a cached page faults MINOR and an absent one MISSING; CONTINUE and COPY resolve them (§4.1, final-ops fault path)',
  requires: [ioctl('COPY'), ioctl('CONTINUE')],
  async run(t) {
    // | 0: cached | 1: absent |
    const area = t.area({ pages: 2 });
    t.fillCache(area, 0, t.pattern(0));
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);
    const cached = t.thread([read(t, area, 0)]);
    await t.fault(uffd, cached, t.page(area, 0), UFFD_PAGEFAULT_FLAG_MINOR);
    uffd.continue(onePage(t, area, 0));
    await t.ends(cached, 'done', 'the reader of the cached page');
    const absent = t.thread([read(t, area, 1)]);
    await t.fault(uffd, absent, t.page(area, 1), 0);
    uffd.copyBytes(t.page(area, 1), t.pattern(1));
    const result = await t.ends(absent, 'done', 'the reader of the absent page');
    ensureBytes(result.reads[0]!, t.pattern(1).subarray(0, 16), 'the copied bytes');
    return undefined;
  },
};

const minorAbsent: ConformanceCase = {
  name: 'minor-absent-page',
  description:
    'Registered MINOR only, a page absent from the page cache faults in as usual with no message (§4.1 F6b, final-ops fault path)',
  requires: [ioctl('CONTINUE')],
  async run(t) {
    const area = t.area({ pages: 2 });
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MINOR);
    const reader = t.thread([read(t, area, 1, 0, 8)]);
    await t.backend.settle();
    const result = await t.ends(reader, 'done', 'the reader of an absent page');
    ensureBytes(result.reads[0]!, new Uint8Array(8), 'a new page reads zeros');
    t.noMessage(uffd, 'a MINOR-only range with the page absent');
    return undefined;
  },
};

const wpFault: ConformanceCase = {
  name: 'wp-fault',
  description:
    'WP: reads of a write-protected page need no message, a write queues flags WP|WRITE and sleeps until the page is unprotected, then lands (§3.7, §4.1)',
  requires: [ioctl('WRITEPROTECT')],
  async run(t) {
    const area = t.area({ pages: 2 });
    t.process.write(t.page(area, 0), t.pattern(0));
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_WP);
    uffd.writeprotect(onePage(t, area, 0), UFFDIO_WRITEPROTECT_MODE_WP);
    const reader = t.thread([read(t, area, 0)]);
    const readResult = await t.ends(reader, 'done', 'the reader of a protected page');
    ensureBytes(readResult.reads[0]!, t.pattern(0).subarray(0, 16), 'the protected page reads as before');
    t.noMessage(uffd, 'a read of a write-protected page');
    const data = new Uint8Array([0xee, 0xdd]);
    const writer = t.thread([{ kind: 'write', address: t.page(area, 0) + 4, data }]);
    await t.fault(uffd, writer, t.page(area, 0), UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE);
    uffd.writeprotect(onePage(t, area, 0), 0);
    await t.ends(writer, 'done', 'the writer');
    ensureBytes(t.process.read(t.page(area, 0) + 4, 2), data, 'the write lands after unprotect');
    return undefined;
  },
};

// --- errno paths -----------------------------------------------------------

const copyErrnos: ConformanceCase = {
  name: 'copy-errnos',
  description:
    'COPY: EEXIST (-17) on a populated page, EAGAIN with one page done for [hole, populated], ENOENT (-2) outside any registered VMA, EINVAL (-22) for MODE_WP without WP and for a dst not aligned to the page size, EFAULT (-14) beyond the end of the file (§3.5, §5.2, §5.3)',
  requires: [ioctl('COPY')],
  async run(t) {
    // | 0 | 1: copied first | 2 | 3: beyond the end of the file (file types) |   file 3
    const area = t.area({ pages: 4, filePages: 3 });
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MISSING);
    const page = t.pattern(5);
    uffd.copyBytes(t.page(area, 1), page);
    t.expectFieldErrno(() => uffd.copyBytes(t.page(area, 1), page), EEXIST, 'COPY onto a populated page');
    const twoPages = new Uint8Array(2 * t.pageSize).fill(3);
    t.expectFieldErrno(
      () => uffd.copyBytes(t.page(area, 0), twoPages),
      EAGAIN,
      'COPY of [hole, populated]',
      t.pageSize,
    );
    const other = t.area({ pages: 1 });
    t.expectFieldErrno(() => uffd.copyBytes(other.address, page), ENOENT, 'COPY into an unregistered VMA');
    t.expectFieldErrno(
      () => uffd.copyBytes(t.page(area, 2), page, UFFDIO_COPY_MODE_WP),
      EINVAL,
      'COPY_MODE_WP into a VMA not registered for WP',
    );
    if (t.pageSize > 4096) {
      t.expectFieldErrno(
        () => uffd.copyBytes(t.page(area, 2) + 4096, page),
        EINVAL,
        'COPY to a dst not aligned to the huge page',
      );
    }
    if (t.fileBacked) {
      t.expectFieldErrno(
        () => uffd.copyBytes(t.page(area, 3), page),
        EFAULT,
        'COPY beyond the end of the file',
      );
    }
    return undefined;
  },
};

const continueErrnos: ConformanceCase = {
  name: 'continue-errnos',
  description:
    'CONTINUE: EFAULT (-14) for a page not in the page cache, EINVAL (-22, shmem) or EFAULT (a lookup without the check) beyond the end of the file, EEXIST (-17) when mapped, EAGAIN with one page done for [cached, absent], EINVAL (-22) for MODE_WP without WP, and it works on a MISSING-only VMA (§3.8 K4 K7 K8, §5.5)',
  requires: [ioctl('CONTINUE')],
  async run(t) {
    // | 0: cached | 1: cached | 2: absent | 3: beyond the end |   file 3
    const area = t.area({ pages: 4, filePages: 3 });
    t.fillCache(area, 0, t.pattern(0));
    t.fillCache(area, 1, t.pattern(1));
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MINOR);
    t.expectFieldErrno(() => uffd.continue(onePage(t, area, 2)), EFAULT, 'CONTINUE of a page not cached');
    // A lookup that refuses an index past i_size (shmem's SGP_NOALLOC) gives EINVAL, one that only
    // finds nothing there (hugetlb, guest_memfd) EFAULT [OBS 6.18: §5.5].
    try {
      uffd.continue(onePage(t, area, 3));
      ensure(false, 'CONTINUE beyond the end of the file: expected EINVAL or EFAULT, but it succeeded');
    } catch (error) {
      if (!(error instanceof KernelError)) throw error;
      const what = `CONTINUE beyond the end of the file: got ${errnoName(error.errno)}`;
      ensure(error.errno === EINVAL || error.errno === EFAULT, `${what}, expected EINVAL or EFAULT`);
      ensure(error.progress === -error.errno, `${what} with the result field ${error.progress}`);
    }
    t.expectFieldErrno(
      () => uffd.continue(onePage(t, area, 0), UFFDIO_CONTINUE_MODE_WP),
      EINVAL,
      'CONTINUE_MODE_WP without WP',
    );
    uffd.continue(onePage(t, area, 0));
    t.expectFieldErrno(() => uffd.continue(onePage(t, area, 0)), EEXIST, 'CONTINUE of a mapped page');
    t.expectFieldErrno(
      () => uffd.continue(onePage(t, area, 1, 2)),
      EAGAIN,
      'CONTINUE of [cached, absent]',
      t.pageSize,
    );
    if (declares(t.type, 'COPY')) {
      const missingOnly = t.alias(area);
      uffd.register(whole(missingOnly), UFFDIO_REGISTER_MODE_MISSING);
      ensure(uffd.continue(onePage(t, missingOnly, 0)) === t.pageSize, 'CONTINUE on a MISSING-only VMA');
      ensureBytes(
        t.process.read(t.page(missingOnly, 0), 16),
        t.pattern(0).subarray(0, 16),
        'the mapped bytes',
      );
    }
    return undefined;
  },
};

const poison: ConformanceCase = {
  name: 'poison',
  description:
    'POISON: a poisoned page raises SIGBUS on access, POISON again is EEXIST (-17), COPY replaces the marker, and beyond the end of the file it is EFAULT (-14) (§3.9)',
  requires: [ioctl('POISON')],
  async run(t) {
    // | 0: poisoned | 1 | 2 | 3: beyond the end |   file 3
    const area = t.area({ pages: 4, filePages: 3 });
    const uffd = t.uffd();
    registerDeclared(t, uffd, area);
    ensure(uffd.poison(onePage(t, area, 0)) === t.pageSize, 'POISON returns the bytes poisoned');
    const reader = t.thread([read(t, area, 0)]);
    const result = await t.ends(reader, 'sigbus', 'a read of a poisoned page');
    ensure(result.signal?.address === t.page(area, 0), `SIGBUS at ${hexOf(t.page(area, 0))}`);
    t.expectFieldErrno(() => uffd.poison(onePage(t, area, 0)), EEXIST, 'POISON of a poisoned page');
    if (declares(t.type, 'COPY')) {
      uffd.copyBytes(t.page(area, 0), t.pattern(0));
      ensureBytes(t.process.read(t.page(area, 0), 16), t.pattern(0).subarray(0, 16), 'COPY onto the marker');
    }
    if (t.fileBacked) {
      t.expectFieldErrno(() => uffd.poison(onePage(t, area, 3)), EFAULT, 'POISON beyond the end of the file');
    }
    return undefined;
  },
};

const wpErrnos: ConformanceCase = {
  name: 'wp-errnos',
  description:
    'WRITEPROTECT: WP with DONTWAKE is EINVAL, a range not registered for WP is ENOENT, protecting unpopulated pages succeeds (§3.7)',
  requires: [ioctl('WRITEPROTECT')],
  async run(t) {
    const area = t.area({ pages: 2 });
    const uffd = t.uffd();
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_WP);
    t.expectErrno(
      () => uffd.writeprotect(whole(area), UFFDIO_WRITEPROTECT_MODE_WP | UFFDIO_WRITEPROTECT_MODE_DONTWAKE),
      EINVAL,
      'WRITEPROTECT with WP|DONTWAKE',
    );
    uffd.writeprotect(whole(area), UFFDIO_WRITEPROTECT_MODE_WP);
    const unregistered = t.area({ pages: 1 });
    t.expectErrno(
      () => uffd.writeprotect(whole(unregistered), UFFDIO_WRITEPROTECT_MODE_WP),
      ENOENT,
      'WRITEPROTECT of an unregistered VMA',
    );
    if (declares(t.type, 'COPY')) {
      const missingOnly = t.area({ pages: 1 });
      uffd.register(whole(missingOnly), UFFDIO_REGISTER_MODE_MISSING);
      t.expectErrno(
        () => uffd.writeprotect(whole(missingOnly), UFFDIO_WRITEPROTECT_MODE_WP),
        ENOENT,
        'WRITEPROTECT of a MISSING-only VMA',
      );
    }
    return undefined;
  },
};

const undeclaredIoctls: ConformanceCase = {
  name: 'undeclared-ioctls',
  description:
    'Each range ioctl the type does not declare fails on a range registered in its declared modes: COPY, ZEROPAGE, CONTINUE and POISON with EINVAL (-22), WRITEPROTECT with ENOENT (§3.6 H1, §3.8 K1, §3.7)',
  requires: [userfaultfd, someUndeclaredIoctl],
  async run(t) {
    const area = t.area({ pages: 2 });
    const uffd = t.uffd();
    registerDeclared(t, uffd, area);
    const range = onePage(t, area, 0);
    const calls: Record<RangeIoctlName, [() => unknown, number]> = {
      COPY: [() => uffd.copyBytes(range.start, t.pattern(0)), EINVAL],
      ZEROPAGE: [() => uffd.zeropage(range), EINVAL],
      CONTINUE: [() => uffd.continue(range), EINVAL],
      POISON: [() => uffd.poison(range), EINVAL],
      WRITEPROTECT: [() => uffd.writeprotect(range, UFFDIO_WRITEPROTECT_MODE_WP), ENOENT],
    };
    for (const [name, [call, errno]] of Object.entries(calls) as [
      RangeIoctlName,
      [() => unknown, number],
    ][]) {
      if (declares(t.type, name)) continue;
      if (name === 'WRITEPROTECT') t.expectErrno(call, errno, `undeclared UFFDIO_${name}`);
      else t.expectFieldErrno(call, errno, `undeclared UFFDIO_${name}`);
    }
    return undefined;
  },
};

// --- files ------------------------------------------------------------------

const punchHole: ConformanceCase = {
  name: 'punch-hole',
  description:
    'fallocate(PUNCH_HOLE|KEEP_SIZE) fails with the errno the type declares, or empties the range: the hole reads zeros, the rest keeps its bytes, and a MISSING-registered hole faults MISSING again (§4.1 MISSING)',
  requires: [files],
  async run(t) {
    // | 0: punched, unregistered | 1: punched while registered MISSING |
    const area = t.area({ pages: 2 });
    t.process.write(t.page(area, 0), t.pattern(0));
    t.process.write(t.page(area, 1), t.pattern(1));
    const punch = (index: number) =>
      t.process.fallocate(
        area.fd!,
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
        index * t.pageSize,
        t.pageSize,
      );
    const declared = t.type.fileOps.punchHole;
    if (declared !== 0) {
      t.expectErrno(() => punch(0), declared, 'fallocate(PUNCH_HOLE) of a type that declares it fails');
      return undefined;
    }
    punch(0);
    ensureBytes(t.process.read(t.page(area, 0), 16), new Uint8Array(16), 'the hole reads zeros');
    ensureBytes(
      t.process.read(t.page(area, 1), 16),
      t.pattern(1).subarray(0, 16),
      'the rest keeps its bytes',
    );
    if (declares(t.type, 'COPY')) {
      const uffd = t.uffd();
      uffd.register(whole(area), UFFDIO_REGISTER_MODE_MISSING);
      punch(1);
      const reader = t.thread([read(t, area, 1)]);
      await t.fault(uffd, reader, t.page(area, 1), 0);
      uffd.copyBytes(t.page(area, 1), t.pattern(9));
      const result = await t.ends(reader, 'done', 'the reader of the punched page');
      ensureBytes(result.reads[0]!, t.pattern(9).subarray(0, 16), 'the copied bytes');
    }
    return undefined;
  },
};

const privateMapping: ConformanceCase = {
  name: 'private-mapping',
  description:
    'A MAP_PRIVATE mapping of the file reads the file, a write to it copies the page and leaves the file alone, and it registers in the same modes as a shared one (§3.2 table, §5.2)',
  requires: [files],
  async run(t) {
    // shared: | 0 | 1 |   private: the same file
    const area = t.area({ pages: 2 });
    t.process.write(t.page(area, 0), t.pattern(0));
    const priv = privateAlias(t, area);
    if ('skip' in priv) return priv;
    ensureBytes(
      t.process.read(t.page(priv, 0), 16),
      t.pattern(0).subarray(0, 16),
      'the private view reads the file',
    );
    t.process.write(t.page(priv, 0), new Uint8Array([0x77]));
    ensure(
      t.process.read(t.page(area, 0), 1)[0] === t.pattern(0)[0],
      'a private write must not reach the file',
    );
    ensure(t.process.read(t.page(priv, 0), 1)[0] === 0x77, 'the private write is visible privately');
    checkModes(t, t.uffd(), priv);
    return undefined;
  },
};

const privateFill: ConformanceCase = {
  name: 'private-fill',
  description:
    'COPY and ZEROPAGE into a MAP_PRIVATE mapping of the file fill anonymous memory: the private mapping sees the bytes, the file stays a hole (§5.2 S3, final-ops COPY/ZEROPAGE)',
  requires: [files, ioctl('COPY')],
  async run(t) {
    // private: | 0: COPY | 1: ZEROPAGE |   shared view of the same file
    const area = t.area({ pages: 2 });
    const priv = privateAlias(t, area);
    if ('skip' in priv) return priv;
    const uffd = t.uffd();
    uffd.register(whole(priv), UFFDIO_REGISTER_MODE_MISSING);
    const reader = t.thread([read(t, priv, 0)]);
    await t.fault(uffd, reader, t.page(priv, 0), 0);
    uffd.copyBytes(t.page(priv, 0), t.pattern(3));
    const result = await t.ends(reader, 'done', 'the reader of the private mapping');
    ensureBytes(result.reads[0]!, t.pattern(3).subarray(0, 16), 'the private mapping sees the copy');
    if (declares(t.type, 'ZEROPAGE')) uffd.zeropage(onePage(t, priv, 1));
    ensureBytes(t.process.read(t.page(area, 0), 16), new Uint8Array(16), 'the file stays a hole');
    return undefined;
  },
};

const privateContinue: ConformanceCase = {
  name: 'private-continue',
  description:
    'CONTINUE on a MAP_PRIVATE mapping maps the cached page read-only: a later write copies it without a message and the file is unchanged (§3.8 K9, §5.2)',
  requires: [files, ioctl('CONTINUE')],
  async run(t) {
    const area = t.area({ pages: 1 });
    t.fillCache(area, 0, t.pattern(0));
    const priv = privateAlias(t, area);
    if ('skip' in priv) return priv;
    const uffd = t.uffd();
    uffd.register(whole(priv), UFFDIO_REGISTER_MODE_MINOR);
    const reader = t.thread([read(t, priv, 0)]);
    await t.fault(uffd, reader, t.page(priv, 0), UFFD_PAGEFAULT_FLAG_MINOR);
    uffd.continue(onePage(t, priv, 0));
    await t.ends(reader, 'done', 'the reader');
    const writer = t.thread([{ kind: 'write', address: t.page(priv, 0), data: new Uint8Array([0x66]) }]);
    await t.ends(writer, 'done', 'the writer (a copy-on-write, no message)');
    t.noMessage(uffd, 'a write to a CONTINUE-mapped private page');
    ensure(t.process.read(t.page(area, 0), 1)[0] === t.pattern(0)[0], 'the file is unchanged');
    ensure(t.process.read(t.page(priv, 0), 1)[0] === 0x66, 'the private copy holds the write');
    return undefined;
  },
};

// --- events and fork ------------------------------------------------------

const eventRemove: ConformanceCase = {
  name: 'event-remove',
  description:
    'EVENT_REMOVE: MADV_DONTNEED sleeps until the REMOVE event (its range) is read, fills fail with EAGAIN (-11) meanwhile; then anonymous pages are gone (MISSING again) while file pages stay in the page cache (§4.6, §5.2)',
  requires: [ioctl('COPY')],
  async run(t) {
    // | 0 | 1: dropped | 2: dropped | 3 |
    const area = t.area();
    const uffd = t.uffd(UFFD_FEATURE_EVENT_REMOVE);
    uffd.register(whole(area), UFFDIO_REGISTER_MODE_MISSING);
    for (let i = 0; i < area.pages; i++) uffd.copyBytes(t.page(area, i), t.pattern(i));
    const madvise = t.thread([
      { kind: 'syscall', call: 'madvise', args: [t.page(area, 1), 2 * t.pageSize, MADV_DONTNEED] },
    ]);
    await t.backend.settle();
    ensure(madvise.result() === null, 'madvise should sleep until the REMOVE event is read');
    t.expectFieldErrno(
      () => uffd.copyBytes(t.page(area, 1), t.pattern(1)),
      EAGAIN,
      'COPY while the REMOVE event is unread',
    );
    const event = await t.message(uffd);
    ensure(
      event.event === 'remove' &&
        Number(event.start) === t.page(area, 1) &&
        Number(event.end) === t.page(area, 3),
      `expected remove ${hexOf(t.page(area, 1))}-${hexOf(t.page(area, 3))}, got ${describeMessage(event)}`,
    );
    const done = await t.ends(madvise, 'done', 'madvise');
    ensure(done.returns[0] === 0, `madvise returns 0, got ${done.returns[0]}`);
    ensure(vmaModes(t, t.page(area, 1)) === 'missing', 'the range stays registered');
    const reader = t.thread([read(t, area, 1)]);
    if (t.fileBacked && area.shared) {
      const result = await t.ends(
        reader,
        'done',
        'a reader of a dropped file page (the page cache keeps it)',
      );
      ensureBytes(result.reads[0]!, t.pattern(1).subarray(0, 16), 'the page cache still holds the page');
    } else {
      await t.fault(uffd, reader, t.page(area, 1), 0);
      uffd.zeropage(onePage(t, area, 1));
      await t.ends(reader, 'done', 'the reader');
    }
    return undefined;
  },
};

const eventUnmap: ConformanceCase = {
  name: 'event-unmap',
  description:
    'EVENT_UNMAP: munmap of a registered range sleeps until the UNMAP event carrying the whole range is read; afterwards nothing is registered there (§4.6)',
  requires: [userfaultfd],
  async run(t) {
    const area = t.area();
    const uffd = t.uffd(UFFD_FEATURE_EVENT_UNMAP);
    registerDeclared(t, uffd, area);
    const munmap = t.thread([{ kind: 'syscall', call: 'munmap', args: [area.address, area.length] }]);
    await t.backend.settle();
    ensure(munmap.result() === null, 'munmap should sleep until the UNMAP event is read');
    const event = await t.message(uffd);
    ensure(
      event.event === 'unmap' &&
        Number(event.start) === area.address &&
        Number(event.end) === area.address + area.length,
      `expected unmap of the whole range, got ${describeMessage(event)}`,
    );
    const done = await t.ends(munmap, 'done', 'munmap');
    ensure(done.returns[0] === 0, `munmap returns 0, got ${done.returns[0]}`);
    ensure(
      t.process.backend.vmas(area.address, area.address + area.length).length === 0,
      'the range is unmapped',
    );
    return undefined;
  },
};

const eventRemap: ConformanceCase = {
  name: 'event-remap',
  description:
    'EVENT_REMAP: mremap moving a registered VMA queues REMAP (from, to, length) and the moved VMA stays registered in the same modes (§4.6)',
  requires: [userfaultfd],
  async run(t) {
    const area = t.area({ pages: 2 });
    const uffd = t.uffd(UFFD_FEATURE_EVENT_REMAP);
    const modes = registerDeclared(t, uffd, area);
    // A destination aligned to the page size, reserved so nothing else lands there.
    const reserved = t.process.mmap({ length: area.length + t.pageSize, prot: PROT_NONE });
    const target = Math.ceil(reserved / t.pageSize) * t.pageSize;
    const mremap = t.thread([
      {
        kind: 'syscall',
        call: 'mremap',
        args: [area.address, area.length, area.length, MREMAP_MAYMOVE | MREMAP_FIXED, target],
      },
    ]);
    const event = await t.message(uffd, mremap);
    ensure(
      event.event === 'remap' &&
        Number(event.from) === area.address &&
        Number(event.to) === target &&
        Number(event.len) === area.length,
      `expected remap ${hexOf(area.address)} -> ${hexOf(target)}, got ${describeMessage(event)}`,
    );
    const done = await t.ends(mremap, 'done', 'mremap');
    ensure(done.returns[0] === target, `mremap returns the new address, got ${done.returns[0]}`);
    ensure(
      vmaModes(t, target) === expectedVmaModes(modes),
      `the moved VMA keeps modes ${expectedVmaModes(modes)}`,
    );
    return undefined;
  },
};

const forkEvent: ConformanceCase = {
  name: 'fork-event',
  description:
    'EVENT_FORK: fork sleeps until the FORK event is read; the child keeps the registration on a new userfaultfd handed to the reader, and a child MISSING fault reaches it (§4.6 FORK)',
  requires: [userfaultfd],
  async run(t) {
    // | 0 | 1: the child's MISSING fault |
    const area = t.area({ pages: 2 });
    const uffd = t.uffd(UFFD_FEATURE_EVENT_FORK);
    const modes = registerDeclared(t, uffd, area);
    const forker = t.thread([{ kind: 'syscall', call: 'fork', args: [] }]);
    const event = await t.message(uffd, forker);
    ensure(event.event === 'fork', `expected a fork event, got ${describeMessage(event)}`);
    const forked = await t.ends(forker, 'done', 'fork');
    const child = new Process(forked.children[0]!);
    ensure(
      vmaModes(t, area.address, child) === expectedVmaModes(modes),
      `the child's VMA keeps modes ${expectedVmaModes(modes)}, has ${vmaModes(t, area.address, child)}`,
    );
    if (declares(t.type, 'COPY')) {
      const childUffd = t.adoptUffd(event.ufd);
      const reader = t.thread([read(t, area, 1)], child);
      await t.fault(childUffd, reader, t.page(area, 1), 0);
      childUffd.copyBytes(t.page(area, 1), t.pattern(4));
      const result = await t.ends(reader, 'done', "the child's reader");
      ensureBytes(result.reads[0]!, t.pattern(4).subarray(0, 16), 'the child sees the copy');
      t.noMessage(uffd, "the parent's userfaultfd after the child's fault");
    }
    return undefined;
  },
};

const forkWithoutEvent: ConformanceCase = {
  name: 'fork-without-event',
  description:
    "Without EVENT_FORK, fork does not wait and the child's copy of a registered VMA is unregistered: its faults are ordinary; the parent stays registered (§4.6 FORK)",
  requires: [userfaultfd],
  async run(t) {
    const area = t.area({ pages: 2 });
    const uffd = t.uffd();
    const modes = registerDeclared(t, uffd, area);
    const child = new Process(t.process.backend.fork());
    ensure(
      vmaModes(t, area.address, child) === '',
      `the child's VMA is unregistered, has ${vmaModes(t, area.address, child)}`,
    );
    ensure(vmaModes(t, area.address) === expectedVmaModes(modes), 'the parent stays registered');
    const reader = t.thread([read(t, area, 1, 0, 8)], child);
    const result = await t.ends(reader, 'done', "the child's reader");
    ensureBytes(result.reads[0]!, new Uint8Array(8), 'an ordinary fault reads zeros');
    t.noMessage(uffd, "the parent's userfaultfd after the child's fault");
    return undefined;
  },
};

/** The table, in the order the report lists it. */
export const CASES: readonly ConformanceCase[] = [
  registerModes,
  registerWpAsync,
  missingFault,
  missingZeropage,
  minorFault,
  minorAndMissing,
  minorAbsent,
  wpFault,
  copyErrnos,
  continueErrnos,
  poison,
  wpErrnos,
  undeclaredIoctls,
  punchHole,
  privateMapping,
  privateFill,
  privateContinue,
  eventRemove,
  eventUnmap,
  eventRemap,
  forkEvent,
  forkWithoutEvent,
];
