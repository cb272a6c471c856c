// The fill ioctls and wake-ups (uapi-facts.md §3.4–§3.8, §4.1–§4.5, §5.1–§5.3): a thread faults, the test
// reads the message as a handler would, resolves it, and checks the bytes, the result field and the
// page tables, crossed with every memory type each case applies to.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Process, Uffd } from '../src/api/process.ts';
import { PTE_PRESENT, PTE_UFFD_WP, PTE_WRITE, PTE_ZERO } from '../src/model/mm/pagetable.ts';
import { VM_UFFD_MINOR, VM_UFFD_MISSING, VM_UFFD_WP } from '../src/model/mm/vma.ts';
import { KernelError } from '../src/uapi/errno.ts';
import { encodeUffdioContinue, encodeUffdioCopy, encodeUffdioZeropage } from '../src/uapi/structs.ts';
import { createTestModel, expectErrno, HUGE, PAGE, type TestModel } from './helpers.ts';
import {
  ALL_KINDS,
  ANON_PRIVATE,
  ANON_SHARED,
  type Area,
  assertBytes,
  cachedFolios,
  FILE_KINDS,
  fillPageCache,
  HUGETLB_PRIVATE,
  HUGETLB_SHARED,
  MEMFD_PRIVATE,
  MEMFD_SHARED,
  type MemKind,
  mapsAnonymousPage,
  pattern,
  pteFlags,
  ptePfn,
  vmasIn,
} from './memkinds.ts';

const ENOENT = 2;
const EAGAIN = 11;
const EFAULT = 14;
const EEXIST = 17;
const EINVAL = 22;

const MISSING = 1;
const WP = 2;
const MINOR = 4;

// Message flags (§1.6, §4.3).
const READ_MISS = 0;
const WRITE_MISS = 1;
const WRITE_WP = 3;
const MINOR_READ = 4;
const MINOR_WRITE = 5;

const DONTWAKE = 1;
const COPY_MODE_WP = 2;
const CONTINUE_MODE_WP = 2;

const UFFDIO_COPY = 0xc028aa03;
const UFFDIO_ZEROPAGE = 0xc020aa04;
const UFFDIO_CONTINUE = 0xc020aa07;

interface Setup extends TestModel {
  readonly uffd: Uffd;
  readonly area: Area;
  /** Address of page `n` of the area, in the kind's page size. */
  page(n: number): number;
}

/** A fresh model with `pages` pages of `kind` registered for `mode`. */
function setup(kind: MemKind, pages: number, mode: number): Setup {
  const model = createTestModel();
  const uffd = model.process.userfaultfd();
  uffd.api();
  const area = kind.map(model.process, pages);
  uffd.register({ start: area.address, length: area.length }, mode);
  return { ...model, uffd, area, page: (n) => area.address + n * kind.pageSize };
}

function message(flags: number, address: number) {
  return { event: 'pagefault', flags, address: BigInt(address), ptid: 0 };
}

/** What the file (page cache) holds at `offset`: pread for shmem, a fresh shared alias for hugetlbfs. */
function fileBytes(process: Process, kind: MemKind, area: Area, offset: number, length: number): Uint8Array {
  if (!kind.hugetlb) return process.pread(area.fd!, length, offset);
  const alias = kind.alias!(process, area, { shared: true });
  const bytes = process.read(alias + offset, length);
  process.munmap(alias, area.length);
  return bytes;
}

/** Runs an ioctl on raw argument bytes; returns the errno (0 on success) and the s64 result field. */
function raw(
  process: Process,
  uffd: Uffd,
  request: number,
  arg: Uint8Array,
  fieldOffset: number,
): { errno: number; field: bigint } {
  let errno = 0;
  try {
    process.backend.ioctl(uffd.fd, request, arg);
  } catch (error) {
    if (!(error instanceof KernelError)) throw error;
    errno = error.errno;
  }
  return { errno, field: new DataView(arg.buffer, arg.byteOffset).getBigInt64(fieldOffset, true) };
}

function copyArg(dst: number, src: number, len: number, mode = 0n): Uint8Array {
  return encodeUffdioCopy({ dst: BigInt(dst), src: BigInt(src), len: BigInt(len), mode, copy: 777n });
}

describe('fault messages and their resolution (§4.1, §4.3)', () => {
  for (const kind of ALL_KINDS) {
    describe(kind.name, () => {
      it('a read miss queues flags 0 at the page-masked address; COPY resolves it with the copied bytes', async () => {
        //   [ page 0 | page 1 ]  the thread reads 16 bytes at page 1 + 0x123
        const s = setup(kind, 2, MISSING);
        const thread = s.process.thread([{ kind: 'read', address: s.page(1) + 0x123, length: 16 }]);
        await s.backend.settle();
        assert.equal(thread.state(), 'blocked');
        assert.deepEqual(s.uffd.readMessages(), [message(READ_MISS, s.page(1))]);
        const data = pattern(kind.pageSize, 1);
        assert.equal(s.uffd.copyBytes(s.page(1), data), kind.pageSize);
        const result = await thread.join();
        assert.equal(result.state, 'done');
        assert.equal(result.faults, 1);
        assertBytes(result.reads[0]!, data.subarray(0x123, 0x133), 'the thread read');
        assertBytes(s.process.read(s.page(1), kind.pageSize), data, 'page 1');
        // The shared kinds put the page in the page cache; the private ones fill anonymous memory.
        if (s.area.fd !== null) {
          const expected = kind.shared ? data : new Uint8Array(kind.pageSize);
          assertBytes(fileBytes(s.process, kind, s.area, kind.pageSize, kind.pageSize), expected, 'the file');
        }
        assert.equal(mapsAnonymousPage(s.backend, s.process, s.page(1)), !kind.shared);
      });

      it('a write miss queues flags 1; after COPY the write lands on the copied page', async () => {
        const s = setup(kind, 2, MISSING);
        const thread = s.process.thread([
          { kind: 'write', address: s.page(0) + 0x10, data: new Uint8Array([0xde, 0xad]) },
        ]);
        await s.backend.settle();
        assert.deepEqual(s.uffd.readMessages(), [message(WRITE_MISS, s.page(0))]);
        const data = pattern(kind.pageSize, 2);
        s.uffd.copyBytes(s.page(0), data);
        assert.equal((await thread.join()).state, 'done');
        const expected = data.slice();
        expected.set([0xde, 0xad], 0x10);
        assertBytes(s.process.read(s.page(0), kind.pageSize), expected, 'page 0');
      });

      it('a handler loop serves every page of a sequential reader', async () => {
        const pages = 4;
        const s = setup(kind, pages, MISSING);
        const thread = s.process.thread(
          Array.from({ length: pages }, (_, n) => ({
            kind: 'read' as const,
            address: s.page(n) + n,
            length: 4,
          })),
        );
        let served = 0;
        const handler = (async () => {
          while (served < pages) {
            for (const msg of await s.uffd.nextMessages()) {
              assert.equal(msg.event, 'pagefault');
              if (msg.event !== 'pagefault') continue;
              assert.equal(msg.flags, READ_MISS);
              const n = (Number(msg.address) - s.area.address) / kind.pageSize;
              assert.equal(n, served, 'faults arrive in page order');
              s.uffd.copyBytes(Number(msg.address), pattern(kind.pageSize, 10 + n));
              served++;
            }
          }
        })();
        const result = await thread.join();
        await handler;
        assert.equal(result.faults, pages);
        result.reads.forEach((bytes, n) => {
          assertBytes(bytes, pattern(kind.pageSize, 10 + n).subarray(n, n + 4), `read ${n}`);
        });
      });
    });
  }

  for (const kind of FILE_KINDS) {
    describe(`${kind.name}, MINOR`, () => {
      it('a read of a cached page queues flags 4; CONTINUE maps the cached bytes', async () => {
        const s = setup(kind, 2, MINOR);
        const data = pattern(kind.pageSize, 3);
        fillPageCache(s.process, kind, s.area, kind.pageSize, data);
        const offset = kind.hugetlb ? 0x13123 : 0x123;
        const thread = s.process.thread([{ kind: 'read', address: s.page(1) + offset, length: 8 }]);
        await s.backend.settle();
        assert.equal(thread.state(), 'blocked');
        assert.deepEqual(s.uffd.readMessages(), [message(MINOR_READ, s.page(1))]);
        assert.equal(s.uffd.continue({ start: s.page(1), length: kind.pageSize }), kind.pageSize);
        const result = await thread.join();
        assertBytes(result.reads[0]!, data.subarray(offset, offset + 8), 'the thread read');
        assertBytes(s.process.read(s.page(1), kind.pageSize), data, 'page 1');
      });

      it('a write to a cached page queues flags 5; after CONTINUE the write lands (shared) or COWs (private)', async () => {
        const s = setup(kind, 1, MINOR);
        const data = pattern(kind.pageSize, 4);
        fillPageCache(s.process, kind, s.area, 0, data);
        const thread = s.process.thread([
          { kind: 'write', address: s.page(0) + 8, data: new Uint8Array([0x77]) },
        ]);
        await s.backend.settle();
        assert.deepEqual(s.uffd.readMessages(), [message(MINOR_WRITE, s.page(0))]);
        s.uffd.continue({ start: s.page(0), length: kind.pageSize });
        assert.equal((await thread.join()).state, 'done');
        const written = data.slice();
        written[8] = 0x77;
        assertBytes(s.process.read(s.page(0), kind.pageSize), written, 'the mapping');
        assertBytes(
          fileBytes(s.process, kind, s.area, 0, kind.pageSize),
          kind.shared ? written : data,
          'the page cache',
        );
      });
    });
  }

  it('hugetlb masks the address to 2 MiB; 4 KiB kinds mask it to 4 KiB', async () => {
    //   hugetlb: [ huge page 0 |   huge page 1    ]     anon: [ 512 small pages ]
    //                    fault ^ (0x1ff123 in)                 fault ^ (0x1ff123 in)
    for (const [kind, pages, expectedOffset] of [
      [HUGETLB_SHARED, 2, 0],
      [HUGETLB_PRIVATE, 1, 0],
      [ANON_PRIVATE, 512, 0x1ff000],
      [MEMFD_SHARED, 512, 0x1ff000],
    ] as const) {
      const s = setup(kind, pages, MISSING);
      const thread = s.process.thread([{ kind: 'read', address: s.area.address + 0x1ff123, length: 1 }]);
      await s.backend.settle();
      const expected = s.area.address + expectedOffset;
      assert.deepEqual(s.uffd.readMessages(), [message(READ_MISS, expected)], kind.name);
      s.uffd.copyBytes(expected, new Uint8Array(kind.pageSize));
      await thread.join();
    }
  });
});

describe('UFFDIO_COPY errors and partial progress (§3.5)', () => {
  for (const kind of ALL_KINDS) {
    describe(kind.name, () => {
      it('EEXIST (field -17) on a populated page, and the page is kept', () => {
        const s = setup(kind, 1, MISSING);
        const first = pattern(kind.pageSize, 5);
        s.uffd.copyBytes(s.page(0), first);
        const error = expectErrno(() => s.uffd.copyBytes(s.page(0), pattern(kind.pageSize, 6)), EEXIST);
        assert.equal(error.progress, -EEXIST);
        assertBytes(s.process.read(s.page(0), kind.pageSize), first, 'page 0');
      });

      it('two pages with the second populated: EAGAIN with progress one page', () => {
        //   [ page 0: none | page 1: populated ]  COPY both
        const s = setup(kind, 2, MISSING);
        const second = pattern(kind.pageSize, 7);
        s.uffd.copyBytes(s.page(1), second);
        const data = pattern(2 * kind.pageSize, 8);
        const error = expectErrno(() => s.uffd.copyBytes(s.page(0), data), EAGAIN);
        assert.equal(error.progress, kind.pageSize);
        assertBytes(s.process.read(s.page(0), kind.pageSize), data.subarray(0, kind.pageSize), 'page 0');
        assertBytes(s.process.read(s.page(1), kind.pageSize), second, 'page 1');
      });

      const early: readonly (readonly [string, (s: Setup, src: number) => Uint8Array])[] = [
        ['dst unaligned', (s, src) => copyArg(s.page(0) + 1, src, kind.pageSize)],
        ['dst + 2 KiB', (s, src) => copyArg(s.page(0) + 2048, src, kind.pageSize)],
        ['len unaligned', (s, src) => copyArg(s.page(0), src, PAGE + 1)],
        ['len 0', (s, src) => copyArg(s.page(0), src, 0)],
        ['mode bit 2', (s, src) => copyArg(s.page(0), src, kind.pageSize, 4n)],
        ['mode bit 63', (s, src) => copyArg(s.page(0), src, kind.pageSize, 1n << 63n)],
      ];
      for (const [name, make] of early) {
        it(`${name}: EINVAL, the result field not written`, () => {
          const s = setup(kind, 1, MISSING);
          const src = s.process.mmap({ length: kind.pageSize });
          const arg = make(s, src);
          const before = arg.slice();
          assert.deepEqual(raw(s.process, s.uffd, UFFDIO_COPY, arg, 32), { errno: EINVAL, field: 777n });
          assert.deepEqual(arg, before);
          assert.equal(pteFlags(s.backend, s.process, s.page(0)), 0);
        });
      }

      it('the typed API reports an untouched field as progress 0', () => {
        const s = setup(kind, 1, MISSING);
        const error = expectErrno(
          () => s.uffd.copy({ dst: s.page(0) + 1, src: s.page(0), length: kind.pageSize }),
          EINVAL,
        );
        assert.equal(error.progress, 0);
      });

      it('ENOENT (field -2): dst not registered, range crossing the vma end, no vma', () => {
        //   [ registered: 2 pages ] hole        [ unregistered: 1 page ]
        const s = setup(kind, 2, MISSING);
        const src = s.process.mmap({ length: 2 * kind.pageSize });
        const unregistered = kind.map(s.process, 1);
        for (const [what, dst, len] of [
          ['not registered', unregistered.address, kind.pageSize],
          ['crossing the end', s.page(1), 2 * kind.pageSize],
        ] as const) {
          const result = raw(s.process, s.uffd, UFFDIO_COPY, copyArg(dst, src, len), 32);
          assert.deepEqual(result, { errno: ENOENT, field: -2n }, what);
        }
        s.process.munmap(s.area.address, s.area.length);
        assert.deepEqual(raw(s.process, s.uffd, UFFDIO_COPY, copyArg(s.page(0), src, kind.pageSize), 32), {
          errno: ENOENT,
          field: -2n,
        });
        const error = expectErrno(() => s.uffd.copy({ dst: s.page(0), src, length: kind.pageSize }), ENOENT);
        assert.equal(error.progress, -ENOENT);
      });

      it('an unaligned src is allowed', () => {
        const s = setup(kind, 1, MISSING);
        const source = pattern(kind.pageSize + PAGE, 9);
        const src = s.process.mmap({ length: kind.pageSize + PAGE });
        s.process.write(src, source);
        assert.equal(s.uffd.copy({ dst: s.page(0), src: src + 5, length: kind.pageSize }), kind.pageSize);
        assertBytes(
          s.process.read(s.page(0), kind.pageSize),
          source.subarray(5, 5 + kind.pageSize),
          'page 0',
        );
      });

      it('an unmapped src is EFAULT (field -14) and nothing is mapped', () => {
        const s = setup(kind, 1, MISSING);
        const src = s.process.mmap({ length: kind.pageSize });
        s.process.munmap(src, kind.pageSize);
        assert.deepEqual(raw(s.process, s.uffd, UFFDIO_COPY, copyArg(s.page(0), src, kind.pageSize), 32), {
          errno: EFAULT,
          field: -14n,
        });
        assert.equal(pteFlags(s.backend, s.process, s.page(0)), 0);
      });
    });
  }

  for (const kind of [HUGETLB_SHARED, HUGETLB_PRIVATE]) {
    it(`${kind.name}: 4 KiB-aligned but not 2 MiB-aligned dst or len is EINVAL with field -22`, () => {
      const s = setup(kind, 2, MISSING);
      const src = s.process.mmap({ length: 2 * HUGE });
      for (const [dst, len] of [
        [s.page(0) + PAGE, HUGE],
        [s.page(0), PAGE],
        [s.page(0), HUGE + PAGE],
      ] as const) {
        assert.deepEqual(raw(s.process, s.uffd, UFFDIO_COPY, copyArg(dst, src, len), 32), {
          errno: EINVAL,
          field: -22n,
        });
      }
    });
  }

  for (const kind of [ANON_PRIVATE, ANON_SHARED, MEMFD_SHARED, MEMFD_PRIVATE]) {
    it(`${kind.name}: COPY onto a page ZEROPAGE filled is EEXIST`, () => {
      const s = setup(kind, 1, MISSING);
      s.uffd.zeropage({ start: s.page(0), length: PAGE });
      const error = expectErrno(() => s.uffd.copyBytes(s.page(0), pattern(PAGE, 1)), EEXIST);
      assert.equal(error.progress, -EEXIST);
      assertBytes(s.process.read(s.page(0), PAGE), new Uint8Array(PAGE), 'page 0');
    });
  }

  it('a src that runs into an unmapped or PROT_NONE page: EAGAIN with copy = 4096 (probe q4)', () => {
    //   src: [ page 0 | page 1: hole or PROT_NONE ]
    for (const prot of [-1, 0]) {
      const s = setup(ANON_PRIVATE, 2, MISSING);
      const src = s.process.mmap({ length: 2 * PAGE });
      s.process.write(src, pattern(PAGE, 3));
      if (prot < 0) s.process.munmap(src + PAGE, PAGE);
      else s.process.mprotect(src + PAGE, PAGE, prot);
      assert.deepEqual(raw(s.process, s.uffd, UFFDIO_COPY, copyArg(s.page(0), src, 2 * PAGE), 32), {
        errno: EAGAIN,
        field: 4096n,
      });
      assertBytes(s.process.read(s.page(0), PAGE), pattern(PAGE, 3), 'page 0');
      assert.equal(pteFlags(s.backend, s.process, s.page(1)), 0);
    }
  });

  it('a range running into an adjacent registered vma is ENOENT: the range must lie in one vma', () => {
    //   [ MISSING ][ MISSING|WP ]   (two vmas, both registered)
    const s = setup(ANON_PRIVATE, 2, MISSING);
    s.uffd.register({ start: s.page(1), length: PAGE }, MISSING | WP);
    assert.equal(vmasIn(s.backend, s.process, s.page(0), s.page(2)).length, 2);
    const error = expectErrno(() => s.uffd.copyBytes(s.page(0), pattern(2 * PAGE, 4)), ENOENT);
    assert.equal(error.progress, -ENOENT);
    const zero = expectErrno(() => s.uffd.zeropage({ start: s.page(0), length: 2 * PAGE }), ENOENT);
    assert.equal(zero.progress, -ENOENT);
    assert.equal(pteFlags(s.backend, s.process, s.page(0)), 0);
  });

  it("EEXIST wakes nobody; the handler must UFFDIO_WAKE (as the selftests' copy_page does)", async () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    const thread = s.process.thread([{ kind: 'read', address: s.page(0), length: 1 }]);
    await s.backend.settle();
    s.uffd.copyBytes(s.page(0), new Uint8Array(PAGE).fill(8), DONTWAKE);
    expectErrno(() => s.uffd.copyBytes(s.page(0), new Uint8Array(PAGE).fill(9)), EEXIST);
    await s.backend.settle();
    assert.equal(thread.state(), 'blocked');
    s.uffd.wake({ start: s.page(0), length: PAGE });
    assert.deepEqual((await thread.join()).reads[0], new Uint8Array([8]));
  });

  it('a partial COPY wakes the faults in the part it did', async () => {
    //   [ page 0: thread A | page 1: populated | page 2: thread C ]   COPY all three
    const s = setup(ANON_PRIVATE, 3, MISSING);
    s.uffd.copyBytes(s.page(1), new Uint8Array(PAGE).fill(1));
    const a = s.process.thread([{ kind: 'read', address: s.page(0), length: 1 }]);
    const c = s.process.thread([{ kind: 'read', address: s.page(2), length: 1 }]);
    await s.backend.settle();
    assert.equal(s.uffd.readMessages().length, 2);
    const error = expectErrno(() => s.uffd.copyBytes(s.page(0), new Uint8Array(3 * PAGE).fill(2)), EAGAIN);
    assert.equal(error.progress, PAGE);
    assert.deepEqual((await a.join()).reads[0], new Uint8Array([2]));
    await s.backend.settle();
    assert.equal(c.state(), 'blocked');
    s.uffd.zeropage({ start: s.page(2), length: PAGE });
    await c.join();
  });

  it('COPY_MODE_WP maps the page write-protected: reads work, the next write is a WP fault', async () => {
    const s = setup(ANON_PRIVATE, 1, MISSING | WP);
    s.uffd.copyBytes(s.page(0), new Uint8Array(PAGE).fill(6), COPY_MODE_WP);
    assert.equal(pteFlags(s.backend, s.process, s.page(0)) & (PTE_PRESENT | PTE_WRITE), PTE_PRESENT);
    const thread = s.process.thread([
      { kind: 'read', address: s.page(0), length: 1 },
      { kind: 'write', address: s.page(0), data: new Uint8Array([7]) },
    ]);
    await s.backend.settle();
    assert.deepEqual(s.uffd.readMessages(), [message(WRITE_WP, s.page(0))]);
    s.uffd.writeprotect({ start: s.page(0), length: PAGE }, 0);
    const result = await thread.join();
    assert.deepEqual(result.reads[0], new Uint8Array([6]));
    assert.equal(s.process.read(s.page(0), 1)[0], 7);
  });

  it('COPY into a PROT_READ vma maps the page read-only: reads see it, a write is SIGSEGV', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api();
    const area = model.process.mmap({ length: PAGE, prot: 1 });
    uffd.register({ start: area, length: PAGE }, MISSING);
    uffd.copyBytes(area, new Uint8Array(PAGE).fill(0x2a));
    assert.equal(pteFlags(model.backend, model.process, area) & (PTE_PRESENT | PTE_WRITE), PTE_PRESENT);
    assert.equal(model.process.read(area, 1)[0], 0x2a);
    const write = await model.process
      .thread([{ kind: 'write', address: area, data: new Uint8Array([1]) }])
      .join();
    assert.equal(write.state, 'segv');
  });

  it('COPY_MODE_WP on a vma without WP mode is EINVAL with field -22', () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    const error = expectErrno(() => s.uffd.copyBytes(s.page(0), pattern(PAGE, 1), COPY_MODE_WP), EINVAL);
    assert.equal(error.progress, -EINVAL);
  });

  it('COPY through a second uffd into a vma another uffd registered works (not ENOENT)', () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    const other = s.process.userfaultfd();
    other.api();
    assert.equal(other.copyBytes(s.page(0), pattern(PAGE, 2)), PAGE);
  });
});

describe('UFFDIO_COPY moves its bytes in runs, page by page in effect', () => {
  it('a source that runs into its own destination reads each page as the pages before left it', () => {
    //   [ page 0: data | pages 1-4: none ]  COPY dst = page 1, src = page 0, 4 pages
    const s = setup(ANON_PRIVATE, 5, MISSING);
    const first = pattern(PAGE, 3);
    s.uffd.copyBytes(s.page(0), first);
    assert.equal(s.uffd.copy({ dst: s.page(1), src: s.page(0), length: 4 * PAGE }), 4 * PAGE);
    for (let n = 0; n < 5; n++) assertBytes(s.process.read(s.page(n), PAGE), first, `page ${n}`);
  });

  it('a 2 MiB COPY from present, zero-page and untouched source pages, into frames an earlier munmap freed', () => {
    const model = createTestModel();
    const { process } = model;
    const uffd = process.userfaultfd();
    uffd.api();
    // Dirty frames, then free them: the COPY below reuses them.
    const old = process.mmap({ length: HUGE });
    process.write(old, new Uint8Array(HUGE).fill(0xee));
    const source = process.mmap({ length: HUGE });
    const data = pattern(HUGE, 9);
    process.write(source, data.subarray(0, HUGE / 2));
    // Second half: a quarter read (the zero page), a quarter never touched.
    process.read(source + HUGE / 2, HUGE / 4);
    process.munmap(old, HUGE);
    const area = process.mmap({ length: HUGE });
    uffd.register({ start: area, length: HUGE }, MISSING);
    assert.equal(uffd.copy({ dst: area, src: source, length: HUGE }), HUGE);
    const expected = new Uint8Array(HUGE);
    expected.set(data.subarray(0, HUGE / 2));
    assertBytes(process.read(area, HUGE), expected, 'area');
    // A fault into another reused frame still sees zeroes.
    const fresh = process.mmap({ length: PAGE });
    process.munmap(area, HUGE);
    assertBytes(process.read(fresh, PAGE), new Uint8Array(PAGE), 'fresh page');
    model.check();
  });

  it('hugetlb: a 2 MiB page copied from 4 KiB pages, some of them untouched', () => {
    const s = setup(HUGETLB_PRIVATE, 1, MISSING);
    const source = s.process.mmap({ length: HUGE });
    const data = pattern(HUGE / 2, 4);
    s.process.write(source + HUGE / 4, data);
    assert.equal(s.uffd.copy({ dst: s.page(0), src: source, length: HUGE }), HUGE);
    const expected = new Uint8Array(HUGE);
    expected.set(data, HUGE / 4);
    assertBytes(s.process.read(s.page(0), HUGE), expected, 'huge page');
    s.check();
  });
});

describe('wake-ups (§3.4, §4.4)', () => {
  for (const kind of ALL_KINDS) {
    it(`${kind.name}: DONTWAKE installs the page but leaves the thread asleep until UFFDIO_WAKE`, async () => {
      const s = setup(kind, 1, MISSING);
      const thread = s.process.thread([{ kind: 'read', address: s.page(0), length: 4 }]);
      await s.backend.settle();
      assert.equal(s.uffd.readMessages().length, 1);
      const data = pattern(kind.pageSize, 12);
      assert.equal(s.uffd.copyBytes(s.page(0), data, DONTWAKE), kind.pageSize);
      await s.backend.settle();
      assert.equal(thread.state(), 'blocked');
      // The page is there: the test's own access does not fault.
      assertBytes(s.process.read(s.page(0), 4), data.subarray(0, 4), 'page 0');
      s.uffd.wake({ start: s.page(0), length: kind.pageSize });
      const result = await thread.join();
      assert.equal(result.faults, 1);
      assertBytes(result.reads[0]!, data.subarray(0, 4), 'the thread read');
    });
  }

  it('ZEROPAGE and CONTINUE honour DONTWAKE too', async () => {
    const s = setup(MEMFD_SHARED, 2, MISSING | MINOR);
    s.process.pwrite(s.area.fd!, pattern(PAGE, 13), PAGE);
    const threads = [0, 1].map((n) => s.process.thread([{ kind: 'read', address: s.page(n), length: 1 }]));
    await s.backend.settle();
    const flags = s.uffd.readMessages().map((msg) => (msg.event === 'pagefault' ? msg.flags : -1));
    assert.deepEqual(
      flags.sort((a, b) => a - b),
      [READ_MISS, MINOR_READ],
    );
    s.uffd.zeropage({ start: s.page(0), length: PAGE }, DONTWAKE);
    s.uffd.continue({ start: s.page(1), length: PAGE }, DONTWAKE);
    await s.backend.settle();
    assert.deepEqual(
      threads.map((thread) => thread.state()),
      ['blocked', 'blocked'],
    );
    s.uffd.wake({ start: s.page(0), length: 2 * PAGE });
    for (const thread of threads) assert.equal((await thread.join()).state, 'done');
  });

  it('two threads faulting the same page queue one message each; one COPY wakes both', async () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    const threads = [0, 1].map(() => s.process.thread([{ kind: 'read', address: s.page(0) + 8, length: 1 }]));
    await s.backend.settle();
    // Both messages fit in one 64-byte read.
    assert.equal(s.process.backend.read(s.uffd.fd, 64).byteLength, 64);
    s.uffd.copyBytes(s.page(0), new Uint8Array(PAGE).fill(0x42));
    for (const thread of threads) {
      const result = await thread.join();
      assert.equal(result.faults, 1);
      assert.equal(result.reads[0]![0], 0x42);
    }
  });

  it('two threads faulting the same page: the messages carry the same flags and address', async () => {
    const s = setup(MEMFD_SHARED, 1, MISSING);
    const threads = [
      s.process.thread([{ kind: 'read', address: s.page(0) + 100, length: 1 }]),
      s.process.thread([{ kind: 'write', address: s.page(0) + 200, data: new Uint8Array([9]) }]),
    ];
    await s.backend.settle();
    const messages = s.uffd.readMessages();
    assert.equal(messages.length, 2);
    assert.deepEqual(messages.map((msg) => (msg.event === 'pagefault' ? msg.flags : -1)).sort(), [
      READ_MISS,
      WRITE_MISS,
    ]);
    for (const msg of messages) assert.equal(msg.event === 'pagefault' && msg.address, BigInt(s.page(0)));
    s.uffd.zeropage({ start: s.page(0), length: PAGE });
    for (const thread of threads) assert.equal((await thread.join()).state, 'done');
    assert.equal(s.process.pread(s.area.fd!, 1, 200)[0], 9);
  });

  it('a message once read is never delivered again, although the thread still sleeps', async () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    const thread = s.process.thread([{ kind: 'read', address: s.page(0), length: 1 }]);
    await s.backend.settle();
    assert.equal(s.uffd.readMessages().length, 1);
    await s.backend.settle();
    assert.deepEqual(s.uffd.readMessages(), []);
    assert.equal(s.uffd.poll(), 0);
    assert.equal(thread.state(), 'blocked');
    s.uffd.zeropage({ start: s.page(0), length: PAGE });
    assert.equal((await thread.join()).faults, 1);
  });

  it('UFFDIO_WAKE of an unresolved fault: the thread faults again and queues a new message', async () => {
    const s = setup(ANON_PRIVATE, 2, MISSING);
    const thread = s.process.thread([{ kind: 'write', address: s.page(1) + 1, data: new Uint8Array([5]) }]);
    await s.backend.settle();
    assert.deepEqual(s.uffd.readMessages(), [message(WRITE_MISS, s.page(1))]);
    s.uffd.wake({ start: s.page(1), length: PAGE });
    await s.backend.settle();
    assert.equal(thread.state(), 'blocked');
    assert.deepEqual(s.uffd.readMessages(), [message(WRITE_MISS, s.page(1))]);
    s.uffd.zeropage({ start: s.page(1), length: PAGE });
    const result = await thread.join();
    assert.equal(result.faults, 2);
    assert.equal(s.process.read(s.page(1) + 1, 1)[0], 5);
  });

  it('UFFDIO_WAKE of an unread fault drops its message: the re-fault queues the only one', async () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    const thread = s.process.thread([{ kind: 'read', address: s.page(0), length: 1 }]);
    await s.backend.settle();
    s.uffd.wake({ start: s.page(0), length: PAGE });
    await s.backend.settle();
    assert.equal(thread.state(), 'blocked');
    assert.deepEqual(s.uffd.readMessages(), [message(READ_MISS, s.page(0))]);
    s.uffd.zeropage({ start: s.page(0), length: PAGE });
    assert.equal((await thread.join()).faults, 2);
  });

  it('UFFDIO_WAKE only wakes faults whose address lies in its range', async () => {
    //   [ page 0: thread A | page 1: thread B | page 2: thread C ]  WAKE page 1 only
    const s = setup(ANON_PRIVATE, 3, MISSING);
    const threads = [0, 1, 2].map((n) => s.process.thread([{ kind: 'read', address: s.page(n), length: 1 }]));
    await s.backend.settle();
    assert.equal(s.uffd.readMessages().length, 3);
    s.uffd.wake({ start: s.page(1), length: PAGE });
    await s.backend.settle();
    assert.deepEqual(s.uffd.readMessages(), [message(READ_MISS, s.page(1))]);
    assert.deepEqual(
      threads.map((thread) => thread.state()),
      ['blocked', 'blocked', 'blocked'],
    );
    s.uffd.zeropage({ start: s.page(0), length: 3 * PAGE });
    const results = await Promise.all(threads.map((thread) => thread.join()));
    assert.deepEqual(
      results.map((result) => result.faults),
      [1, 2, 1],
    );
  });

  it('UFFDIO_WAKE: len 0 or unaligned is EINVAL; a range without any vma returns 0', () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    expectErrno(() => s.uffd.wake({ start: s.page(0), length: 0 }), EINVAL);
    expectErrno(() => s.uffd.wake({ start: s.page(0) + 1, length: PAGE }), EINVAL);
    expectErrno(() => s.uffd.wake({ start: s.page(0), length: 100 }), EINVAL);
    const hole = s.process.mmap({ length: 4 * PAGE });
    s.process.munmap(hole, 4 * PAGE);
    s.uffd.wake({ start: hole, length: 4 * PAGE });
  });
});

describe('UFFDIO_ZEROPAGE (§3.6)', () => {
  for (const kind of [ANON_PRIVATE, MEMFD_PRIVATE]) {
    it(`${kind.name}: maps the zero page; a later write is an ordinary COW, not a userfault`, async () => {
      const s = setup(kind, 1, MISSING);
      const thread = s.process.thread([{ kind: 'read', address: s.page(0) + 4, length: 4 }]);
      await s.backend.settle();
      assert.deepEqual(s.uffd.readMessages(), [message(READ_MISS, s.page(0))]);
      assert.equal(s.uffd.zeropage({ start: s.page(0), length: PAGE }), PAGE);
      assert.deepEqual((await thread.join()).reads[0], new Uint8Array(4));
      const flags = pteFlags(s.backend, s.process, s.page(0));
      assert.equal(flags & (PTE_PRESENT | PTE_ZERO | PTE_WRITE), PTE_PRESENT | PTE_ZERO);
      // A direct access that needed the uffd would throw WouldBlockError.
      s.process.write(s.page(0) + 1, new Uint8Array([0x11]));
      assert.equal(pteFlags(s.backend, s.process, s.page(0)) & PTE_ZERO, 0);
      assert.equal(s.process.read(s.page(0) + 1, 1)[0], 0x11);
      assert.deepEqual(s.uffd.readMessages(), []);
      if (s.area.fd !== null) {
        assert.equal(cachedFolios(s.backend, s.process, s.area.fd), 0, 'the page cache is untouched');
        assert.equal(s.process.pread(s.area.fd, 1, 1)[0], 0);
      }
    });
  }

  for (const kind of [MEMFD_SHARED, ANON_SHARED]) {
    it(`${kind.name}: puts a zeroed page in the page cache and maps it writable`, async () => {
      const s = setup(kind, 2, MISSING);
      const thread = s.process.thread([
        { kind: 'write', address: s.page(1) + 3, data: new Uint8Array([0x33]) },
      ]);
      await s.backend.settle();
      assert.deepEqual(s.uffd.readMessages(), [message(WRITE_MISS, s.page(1))]);
      s.uffd.zeropage({ start: s.page(1), length: PAGE });
      await thread.join();
      const flags = pteFlags(s.backend, s.process, s.page(1));
      assert.equal(flags & (PTE_PRESENT | PTE_ZERO), PTE_PRESENT);
      assert.equal(mapsAnonymousPage(s.backend, s.process, s.page(1)), false);
      const expected = new Uint8Array(PAGE);
      expected[3] = 0x33;
      assertBytes(s.process.read(s.page(1), PAGE), expected, 'page 1');
      if (s.area.fd === null) return;
      assert.equal(cachedFolios(s.backend, s.process, s.area.fd), 1);
      assertBytes(s.process.pread(s.area.fd, PAGE, PAGE), expected, 'pread');
      // The mapping and the file share the page: pwrite shows through the mapping.
      s.process.pwrite(s.area.fd, new Uint8Array([0x44]), PAGE + 5);
      assert.equal(s.process.read(s.page(1) + 5, 1)[0], 0x44);
      // A second mapping sees the page, and a fill through it finds the page cache occupied.
      const alias = s.process.mmap({ length: 2 * PAGE, fd: s.area.fd, shared: true });
      s.uffd.register({ start: alias, length: 2 * PAGE }, MISSING);
      assert.equal(s.process.read(alias + PAGE + 5, 1)[0], 0x44);
      const error = expectErrno(() => s.uffd.zeropage({ start: alias + PAGE, length: PAGE }), EEXIST);
      assert.equal(error.progress, -EEXIST);
    });
  }

  for (const kind of [HUGETLB_SHARED, HUGETLB_PRIVATE]) {
    it(`${kind.name}: always EINVAL with field -22, and the thread stays asleep`, async () => {
      const s = setup(kind, 1, MISSING);
      const thread = s.process.thread([{ kind: 'read', address: s.page(0), length: 1 }]);
      await s.backend.settle();
      assert.equal(s.uffd.readMessages().length, 1);
      for (const length of [HUGE, PAGE]) {
        const arg = encodeUffdioZeropage({
          range: { start: BigInt(s.page(0)), len: BigInt(length) },
          mode: 0n,
          zeropage: 7n,
        });
        assert.deepEqual(raw(s.process, s.uffd, UFFDIO_ZEROPAGE, arg, 24), { errno: EINVAL, field: -22n });
      }
      await s.backend.settle();
      assert.equal(thread.state(), 'blocked');
      s.uffd.copyBytes(s.page(0), new Uint8Array(HUGE));
      await thread.join();
    });
  }

  for (const kind of [ANON_PRIVATE, ANON_SHARED, MEMFD_SHARED, MEMFD_PRIVATE]) {
    it(`${kind.name}: EEXIST on a populated page; partial EAGAIN with zeropage = 4096`, () => {
      const s = setup(kind, 2, MISSING);
      s.uffd.copyBytes(s.page(1), pattern(PAGE, 20));
      const error = expectErrno(() => s.uffd.zeropage({ start: s.page(1), length: PAGE }), EEXIST);
      assert.equal(error.progress, -EEXIST);
      const partial = expectErrno(() => s.uffd.zeropage({ start: s.page(0), length: 2 * PAGE }), EAGAIN);
      assert.equal(partial.progress, PAGE);
      assert.equal(pteFlags(s.backend, s.process, s.page(0)) & PTE_PRESENT, PTE_PRESENT);
      assertBytes(s.process.read(s.page(1), PAGE), pattern(PAGE, 20), 'page 1');
    });
  }

  it('mode bits other than DONTWAKE are EINVAL with the field untouched', () => {
    const s = setup(ANON_PRIVATE, 1, MISSING);
    for (const mode of [2n, 4n, 3n]) {
      const arg = encodeUffdioZeropage({
        range: { start: BigInt(s.page(0)), len: BigInt(PAGE) },
        mode,
        zeropage: 7n,
      });
      assert.deepEqual(raw(s.process, s.uffd, UFFDIO_ZEROPAGE, arg, 24), { errno: EINVAL, field: 7n });
    }
  });
});

describe('shmem fills (§5.2)', () => {
  it('MAP_PRIVATE shmem: COPY gives anonymous memory and the file still reads zeros', () => {
    const s = setup(MEMFD_PRIVATE, 2, MISSING);
    const data = pattern(PAGE, 21);
    s.uffd.copyBytes(s.page(0), data);
    assert.equal(mapsAnonymousPage(s.backend, s.process, s.page(0)), true);
    assert.equal(cachedFolios(s.backend, s.process, s.area.fd!), 0);
    assertBytes(s.process.pread(s.area.fd!, PAGE, 0), new Uint8Array(PAGE), 'pread');
    // A later write to the file does not show through the private page.
    s.process.pwrite(s.area.fd!, new Uint8Array(PAGE).fill(0xee), 0);
    assertBytes(s.process.read(s.page(0), PAGE), data, 'the private page');
    // Nor does COPY to the other page see the cache.
    s.uffd.copyBytes(s.page(1), pattern(PAGE, 22));
    assertBytes(s.process.pread(s.area.fd!, PAGE, PAGE), new Uint8Array(PAGE), 'pread page 1');
  });

  for (const kind of [MEMFD_SHARED, HUGETLB_SHARED]) {
    it(`${kind.name}: COPY when the page cache already holds the page is EEXIST`, () => {
      const s = setup(kind, 2, MISSING);
      const cached = pattern(kind.pageSize, 23);
      fillPageCache(s.process, kind, s.area, kind.pageSize, cached);
      const error = expectErrno(() => s.uffd.copyBytes(s.page(1), pattern(kind.pageSize, 24)), EEXIST);
      assert.equal(error.progress, -EEXIST);
      assert.equal(pteFlags(s.backend, s.process, s.page(1)), 0);
      assertBytes(fileBytes(s.process, kind, s.area, kind.pageSize, kind.pageSize), cached, 'the file');
      // Page 0 is absent from the cache: COPY of both pages does one and stops.
      const partial = expectErrno(() => s.uffd.copyBytes(s.page(0), pattern(2 * kind.pageSize, 25)), EAGAIN);
      assert.equal(partial.progress, kind.pageSize);
    });
  }

  for (const kind of [MEMFD_SHARED, MEMFD_PRIVATE]) {
    it(`${kind.name}: a dst beyond i_size is EFAULT (field -14) for COPY and ZEROPAGE`, () => {
      //   file: [ page 0 ]          mapping: [ page 0 | page 1 (beyond i_size) ]
      const model = createTestModel();
      const uffd = model.process.userfaultfd();
      uffd.api();
      const fd = model.process.memfd('short', { size: PAGE });
      const address = model.process.mmap({ length: 2 * PAGE, fd, shared: kind.shared });
      uffd.register({ start: address, length: 2 * PAGE }, MISSING);
      const copy = expectErrno(() => uffd.copyBytes(address + PAGE, pattern(PAGE, 1)), EFAULT);
      assert.equal(copy.progress, -EFAULT);
      const zero = expectErrno(() => uffd.zeropage({ start: address + PAGE, length: PAGE }), EFAULT);
      assert.equal(zero.progress, -EFAULT);
      // From inside i_size across the end: one page done, then EFAULT, so EAGAIN with 4096.
      const partial = expectErrno(() => uffd.copyBytes(address, pattern(2 * PAGE, 2)), EAGAIN);
      assert.equal(partial.progress, PAGE);
    });
  }
});

describe('UFFDIO_CONTINUE (§3.8)', () => {
  for (const kind of FILE_KINDS) {
    describe(kind.name, () => {
      it('maps the page-cache page with the bytes the file holds', () => {
        const s = setup(kind, 2, MINOR);
        const data = pattern(kind.pageSize, 30);
        fillPageCache(s.process, kind, s.area, kind.pageSize, data);
        assert.equal(s.uffd.continue({ start: s.page(1), length: kind.pageSize }), kind.pageSize);
        assertBytes(s.process.read(s.page(1), kind.pageSize), data, 'page 1');
        assert.equal(mapsAnonymousPage(s.backend, s.process, s.page(1)), false);
      });

      it('EFAULT (field -14) when the page is not cached; EEXIST (field -17) when already mapped', () => {
        const s = setup(kind, 2, MINOR);
        const absent = expectErrno(
          () => s.uffd.continue({ start: s.page(0), length: kind.pageSize }),
          EFAULT,
        );
        assert.equal(absent.progress, -EFAULT);
        assert.equal(pteFlags(s.backend, s.process, s.page(0)), 0);
        fillPageCache(s.process, kind, s.area, 0, pattern(kind.pageSize, 31));
        s.uffd.continue({ start: s.page(0), length: kind.pageSize });
        const mapped = expectErrno(
          () => s.uffd.continue({ start: s.page(0), length: kind.pageSize }),
          EEXIST,
        );
        assert.equal(mapped.progress, -EEXIST);
        // [ page 0: mapped | page 1: not cached ] from page 0 → EEXIST at once; from page 1 alone → EFAULT.
        const partialStart = expectErrno(
          () => s.uffd.continue({ start: s.page(0), length: 2 * kind.pageSize }),
          EEXIST,
        );
        assert.equal(partialStart.progress, -EEXIST);
      });

      it('a partial CONTINUE is EAGAIN with mapped = one page', () => {
        //   [ page 0: cached | page 1: not cached ]
        const s = setup(kind, 2, MINOR);
        fillPageCache(s.process, kind, s.area, 0, pattern(kind.pageSize, 32));
        const error = expectErrno(
          () => s.uffd.continue({ start: s.page(0), length: 2 * kind.pageSize }),
          EAGAIN,
        );
        assert.equal(error.progress, kind.pageSize);
        assert.equal(pteFlags(s.backend, s.process, s.page(0)) & PTE_PRESENT, PTE_PRESENT);
        assert.equal(pteFlags(s.backend, s.process, s.page(1)), 0);
      });

      it(`the pte is ${kind.shared ? 'writable and writes reach the file' : 'read-only: a write COWs and the file is unchanged'}`, () => {
        const s = setup(kind, 1, MINOR);
        const data = pattern(kind.pageSize, 33);
        fillPageCache(s.process, kind, s.area, 0, data);
        s.uffd.continue({ start: s.page(0), length: kind.pageSize });
        const cachePfn = ptePfn(s.backend, s.process, s.page(0));
        assert.equal((pteFlags(s.backend, s.process, s.page(0)) & PTE_WRITE) !== 0, kind.shared);
        s.process.write(s.page(0) + 2, new Uint8Array([0x99]));
        const written = data.slice();
        written[2] = 0x99;
        assertBytes(s.process.read(s.page(0), kind.pageSize), written, 'the mapping');
        assertBytes(
          fileBytes(s.process, kind, s.area, 0, kind.pageSize),
          kind.shared ? written : data,
          'the file',
        );
        assert.equal(ptePfn(s.backend, s.process, s.page(0)) === cachePfn, kind.shared);
      });

      it('works on a vma registered MISSING only', () => {
        const s = setup(kind, 1, MISSING);
        const data = pattern(kind.pageSize, 34);
        fillPageCache(s.process, kind, s.area, 0, data);
        assert.equal(s.uffd.continue({ start: s.page(0), length: kind.pageSize }), kind.pageSize);
        assertBytes(s.process.read(s.page(0), kind.pageSize), data, 'page 0');
      });

      it('CONTINUE_MODE_WP without WP mode is EINVAL (field -22); with it the pte is write-protected', async () => {
        const s = setup(kind, 1, MINOR);
        fillPageCache(s.process, kind, s.area, 0, pattern(kind.pageSize, 35));
        const error = expectErrno(
          () => s.uffd.continue({ start: s.page(0), length: kind.pageSize }, CONTINUE_MODE_WP),
          EINVAL,
        );
        assert.equal(error.progress, -EINVAL);
        s.uffd.register({ start: s.area.address, length: s.area.length }, MINOR | WP);
        s.uffd.continue({ start: s.page(0), length: kind.pageSize }, CONTINUE_MODE_WP);
        assert.equal(pteFlags(s.backend, s.process, s.page(0)) & PTE_WRITE, 0);
        const thread = s.process.thread([{ kind: 'write', address: s.page(0), data: new Uint8Array([1]) }]);
        await s.backend.settle();
        assert.deepEqual(s.uffd.readMessages(), [message(WRITE_WP, s.page(0))]);
        s.uffd.writeprotect({ start: s.page(0), length: kind.pageSize }, 0);
        assert.equal((await thread.join()).state, 'done');
      });
    });
  }

  it('anon shared: CONTINUE of a page that is not cached is EFAULT', () => {
    const s = setup(ANON_SHARED, 1, MINOR);
    const error = expectErrno(() => s.uffd.continue({ start: s.page(0), length: PAGE }), EFAULT);
    assert.equal(error.progress, -EFAULT);
  });

  it('anon private: EINVAL with field -22 (no page cache)', () => {
    const s = setup(ANON_PRIVATE, 1, MISSING | WP);
    const error = expectErrno(() => s.uffd.continue({ start: s.page(0), length: PAGE }), EINVAL);
    assert.equal(error.progress, -EINVAL);
  });

  for (const kind of [HUGETLB_SHARED, HUGETLB_PRIVATE]) {
    it(`${kind.name}: a range not 2 MiB-aligned is EINVAL with field -22`, () => {
      const s = setup(kind, 2, MINOR);
      fillPageCache(s.process, kind, s.area, 0, pattern(HUGE, 36));
      for (const [start, length] of [
        [s.page(0) + PAGE, HUGE],
        [s.page(0), PAGE],
      ] as const) {
        const arg = encodeUffdioContinue({
          range: { start: BigInt(start), len: BigInt(length) },
          mode: 0n,
          mapped: 7n,
        });
        assert.deepEqual(raw(s.process, s.uffd, UFFDIO_CONTINUE, arg, 24), { errno: EINVAL, field: -22n });
      }
      assert.equal(pteFlags(s.backend, s.process, s.page(0)), 0);
    });
  }

  it('early EINVAL (unaligned start, mode bit 2) leaves the field untouched', () => {
    const s = setup(MEMFD_SHARED, 1, MINOR);
    for (const [start, mode] of [
      [s.page(0) + 1, 0n],
      [s.page(0), 4n],
    ] as const) {
      const arg = encodeUffdioContinue({
        range: { start: BigInt(start), len: BigInt(PAGE) },
        mode,
        mapped: 7n,
      });
      assert.deepEqual(raw(s.process, s.uffd, UFFDIO_CONTINUE, arg, 24), { errno: EINVAL, field: 7n });
    }
  });
});

describe('MINOR and MISSING together (§4.1)', () => {
  for (const kind of FILE_KINDS) {
    it(`${kind.name}: MINOR|MISSING reports MINOR for a cached page and MISSING for an absent one`, async () => {
      //   [ page 0: cached | page 1: absent ]
      const s = setup(kind, 2, MINOR | MISSING);
      const cached = pattern(kind.pageSize, 40);
      fillPageCache(s.process, kind, s.area, 0, cached);
      const reader0 = s.process.thread([{ kind: 'read', address: s.page(0), length: 4 }]);
      await s.backend.settle();
      const reader1 = s.process.thread([{ kind: 'read', address: s.page(1), length: 4 }]);
      await s.backend.settle();
      assert.deepEqual(s.uffd.readMessages(), [
        message(MINOR_READ, s.page(0)),
        message(READ_MISS, s.page(1)),
      ]);
      s.uffd.continue({ start: s.page(0), length: kind.pageSize });
      const copied = pattern(kind.pageSize, 41);
      s.uffd.copyBytes(s.page(1), copied);
      assertBytes((await reader0.join()).reads[0]!, cached.subarray(0, 4), 'page 0');
      assertBytes((await reader1.join()).reads[0]!, copied.subarray(0, 4), 'page 1');
    });

    it(`${kind.name}: MINOR only, absent page: no message, an ordinary allocation`, async () => {
      const s = setup(kind, 1, MINOR);
      const thread = s.process.thread([{ kind: 'read', address: s.page(0) + 7, length: 2 }]);
      const result = await thread.join();
      assert.equal(result.faults, 0);
      assert.deepEqual(result.reads[0], new Uint8Array(2));
      assert.deepEqual(s.uffd.readMessages(), []);
      // Shared mappings and private reads both take the page from the page cache.
      const expectedCached = kind.shared || !kind.hugetlb ? 1 : 0;
      assert.equal(cachedFolios(s.backend, s.process, s.area.fd!), expectedCached);
    });
  }
});

describe('what the fault reports (§4.1–§4.3)', () => {
  it('MISSING on a private memfd: a cached page maps with no message, and its COW takes none either', async () => {
    const s = setup(MEMFD_PRIVATE, 1, MISSING);
    s.process.pwrite(s.area.fd!, new Uint8Array([0x21]), 0);
    const result = await s.process
      .thread([
        { kind: 'read', address: s.page(0), length: 1 },
        { kind: 'write', address: s.page(0), data: new Uint8Array([0x22]) },
      ])
      .join();
    assert.equal(result.faults, 0);
    assert.deepEqual(result.reads[0], new Uint8Array([0x21]));
    assert.ok(mapsAnonymousPage(s.backend, s.process, s.page(0)));
    assert.equal(s.process.pread(s.area.fd!, 1, 0)[0], 0x21);
  });

  it("THREAD_ID puts the faulting thread's id in ptid", async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['thread_id']);
    const area = model.process.mmap({ length: 2 * PAGE });
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    const threads = [0, 1].map((n) =>
      model.process.thread([{ kind: 'read', address: area + n * PAGE, length: 1 }]),
    );
    await model.backend.settle();
    const byAddress = new Map(
      uffd.readMessages().map((msg) => [msg.event === 'pagefault' ? Number(msg.address) : 0, msg]),
    );
    threads.forEach((thread, n) => {
      const msg = byAddress.get(area + n * PAGE);
      assert.equal(msg?.event === 'pagefault' && msg.ptid, thread.tid);
    });
    assert.notEqual(threads[0]!.tid, threads[1]!.tid);
    uffd.zeropage({ start: area, length: 2 * PAGE });
  });

  for (const kind of [ANON_PRIVATE, HUGETLB_SHARED]) {
    it(`${kind.name}: EXACT_ADDRESS reports the byte address, and a WAKE range must cover it`, async () => {
      const model = createTestModel();
      const uffd = model.process.userfaultfd();
      uffd.api(['exact_address']);
      const area = kind.map(model.process, 1);
      uffd.register({ start: area.address, length: area.length }, MISSING);
      const exact = area.address + 0x3123 - (kind.hugetlb ? 0 : PAGE * 3);
      const thread = model.process.thread([{ kind: 'write', address: exact, data: new Uint8Array([1]) }]);
      await model.backend.settle();
      assert.deepEqual(uffd.readMessages(), [message(WRITE_MISS, exact)]);
      uffd.copyBytes(area.address, new Uint8Array(kind.pageSize), DONTWAKE);
      await model.backend.settle();
      assert.equal(thread.state(), 'blocked');
      uffd.wake({ start: exact - (exact % PAGE), length: PAGE });
      assert.equal((await thread.join()).state, 'done');
    });
  }

  it('SIGBUS feature: the fault raises SIGBUS and queues nothing', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['sigbus']);
    const area = model.process.mmap({ length: PAGE });
    uffd.register({ start: area, length: PAGE }, MISSING);
    const result = await model.process.thread([{ kind: 'read', address: area + 8, length: 1 }]).join();
    assert.equal(result.state, 'sigbus');
    assert.equal(result.signal?.address, area + 8);
    assert.deepEqual(uffd.readMessages(), []);
  });

  it('a kernel-mode access (read(2) into the range) queues a WRITE message and blocks the syscall', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api();
    const area = model.process.mmap({ length: PAGE });
    uffd.register({ start: area, length: PAGE }, MISSING);
    const thread = model.process.thread([
      { kind: 'write', address: area, data: new Uint8Array([5]), kernel: true },
    ]);
    await model.backend.settle();
    assert.deepEqual(uffd.readMessages(), [message(WRITE_MISS, area)]);
    uffd.zeropage({ start: area, length: PAGE });
    const result = await thread.join();
    assert.equal(result.errno, 0);
    assert.equal(model.process.read(area, 1)[0], 5);
  });

  it('UFFD_USER_MODE_ONLY: a kernel-mode access fails with EFAULT, a user access still queues a message', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd({ userModeOnly: true });
    uffd.api();
    const area = model.process.mmap({ length: 2 * PAGE });
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    const kernel = await model.process
      .thread([{ kind: 'write', address: area, data: new Uint8Array([5]), kernel: true }])
      .join();
    assert.equal(kernel.state, 'done');
    assert.equal(kernel.errno, EFAULT);
    assert.deepEqual(uffd.readMessages(), []);
    const user = model.process.thread([{ kind: 'read', address: area + PAGE, length: 1 }]);
    await model.backend.settle();
    assert.deepEqual(uffd.readMessages(), [message(READ_MISS, area + PAGE)]);
    uffd.zeropage({ start: area, length: 2 * PAGE });
    await user.join();
  });
});

describe('MAP_SHARED|MAP_ANONYMOUS registered MINOR (probe q9)', () => {
  it('a page not in the cache faults normally with no message, and then stays mapped', async () => {
    const s = setup(ANON_SHARED, 2, MINOR);
    const result = await s.process
      .thread([
        { kind: 'read', address: s.page(0), length: 1 },
        { kind: 'write', address: s.page(1), data: new Uint8Array([4]) },
      ])
      .join();
    assert.equal(result.faults, 0);
    assert.deepEqual(s.uffd.readMessages(), []);
    assert.equal(s.process.read(s.page(1), 1)[0], 4);
    assert.equal(mapsAnonymousPage(s.backend, s.process, s.page(0)), false);
  });
});

describe('unregister and close wake the sleepers (§3.3, §4.5)', () => {
  it('UNREGISTER wakes MISSING waiters; the anon fault is then ordinary (a read gets zeros)', async () => {
    const s = setup(ANON_PRIVATE, 2, MISSING);
    const thread = s.process.thread([{ kind: 'read', address: s.page(1) + 8, length: 8 }]);
    await s.backend.settle();
    assert.equal(s.uffd.readMessages().length, 1);
    s.uffd.unregister({ start: s.area.address, length: s.area.length });
    const result = await thread.join();
    assert.equal(result.state, 'done');
    assert.equal(result.faults, 1);
    assert.deepEqual(result.reads[0], new Uint8Array(8));
    assert.equal(pteFlags(s.backend, s.process, s.page(1)) & PTE_ZERO, PTE_ZERO);
  });

  it('UNREGISTER of part of a range wakes only the waiters inside it', async () => {
    //   [ page 0: A (stays registered) | page 1: B (unregistered) ]
    const s = setup(ANON_PRIVATE, 2, MISSING);
    const a = s.process.thread([{ kind: 'read', address: s.page(0), length: 1 }]);
    const b = s.process.thread([{ kind: 'read', address: s.page(1), length: 1 }]);
    await s.backend.settle();
    s.uffd.unregister({ start: s.page(1), length: PAGE });
    assert.equal((await b.join()).state, 'done');
    await s.backend.settle();
    assert.equal(a.state(), 'blocked');
    s.uffd.zeropage({ start: s.page(0), length: PAGE });
    assert.equal((await a.join()).state, 'done');
  });

  it('UNREGISTER on shmem: the woken read allocates into the page cache', async () => {
    const s = setup(MEMFD_SHARED, 1, MISSING);
    const thread = s.process.thread([{ kind: 'read', address: s.page(0), length: 1 }]);
    await s.backend.settle();
    s.uffd.unregister({ start: s.area.address, length: s.area.length });
    assert.equal((await thread.join()).state, 'done');
    assert.equal(cachedFolios(s.backend, s.process, s.area.fd!), 1);
  });

  it('UNREGISTER does not wake a WP fault on a WP-only vma; UFFDIO_WAKE then does', async () => {
    const s = setup(MEMFD_SHARED, 1, WP);
    s.process.pwrite(s.area.fd!, new Uint8Array([1]), 0);
    s.process.read(s.page(0), 1);
    s.uffd.writeprotect({ start: s.page(0), length: PAGE }, 1);
    const thread = s.process.thread([{ kind: 'write', address: s.page(0), data: new Uint8Array([2]) }]);
    await s.backend.settle();
    assert.deepEqual(s.uffd.readMessages(), [message(WRITE_WP, s.page(0))]);
    s.uffd.unregister({ start: s.page(0), length: PAGE });
    // Unregistering a WP range removes the uffd-wp bits.
    assert.equal(pteFlags(s.backend, s.process, s.page(0)) & PTE_UFFD_WP, 0);
    await s.backend.settle();
    assert.equal(thread.state(), 'blocked');
    s.uffd.wake({ start: s.page(0), length: PAGE });
    assert.equal((await thread.join()).state, 'done');
    assert.equal(s.process.pread(s.area.fd!, 1, 0)[0], 2);
  });

  it('close wakes every waiter, unregisters everything, and the faults complete normally', async () => {
    //   anon: [ MISSING read ]   memfd: [ MINOR read (cached) | MISSING write ]
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api();
    const anon = ANON_PRIVATE.map(model.process, 1);
    const file = MEMFD_SHARED.map(model.process, 2);
    uffd.register({ start: anon.address, length: anon.length }, MISSING | WP);
    uffd.register({ start: file.address, length: file.length }, MISSING | MINOR);
    model.process.pwrite(file.fd!, new Uint8Array([0x61]), 0);
    const threads = [
      model.process.thread([{ kind: 'read', address: anon.address, length: 1 }]),
      model.process.thread([{ kind: 'read', address: file.address, length: 1 }]),
      model.process.thread([{ kind: 'write', address: file.address + PAGE, data: new Uint8Array([0x62]) }]),
    ];
    await model.backend.settle();
    assert.deepEqual(
      threads.map((thread) => thread.state()),
      ['blocked', 'blocked', 'blocked'],
    );
    assert.equal(uffd.readMessages().length, 3);
    uffd.close();
    const results = await Promise.all(threads.map((thread) => thread.join()));
    assert.deepEqual(
      results.map((result) => result.state),
      ['done', 'done', 'done'],
    );
    assert.deepEqual(results[0]!.reads[0], new Uint8Array([0]));
    assert.deepEqual(results[1]!.reads[0], new Uint8Array([0x61]));
    assert.equal(model.process.pread(file.fd!, 1, PAGE)[0], 0x62);
    for (const area of [anon, file]) {
      const vmas = vmasIn(model.backend, model.process, area.address, area.address + area.length);
      assert.equal(vmas.length, 1);
      assert.equal(vmas[0]!.flags & (VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR), 0);
      assert.equal(vmas[0]!.uffdContext, null);
    }
  });
});

describe('the install step looks at the entry again (mfill_atomic_install_pte)', () => {
  for (const kind of ALL_KINDS) {
    it(`${kind.name}: a COPY whose source is its own destination is EEXIST, the fill undone`, () => {
      // Registered WP only, the read of the source is an ordinary fault that maps a page at the
      // destination: a private fill finds it at the install step, a shared one in the page cache.
      const s = setup(kind, 1, WP);
      const copy = () => s.uffd.copy({ dst: s.page(0), src: s.page(0), length: kind.pageSize });
      assert.equal(expectErrno(copy, EEXIST).progress, -EEXIST);
      assert.equal(pteFlags(s.backend, s.process, s.page(0)) & PTE_PRESENT, PTE_PRESENT);
      s.check();
      assert.deepEqual(s.process.read(s.page(0), 8), new Uint8Array(8));
    });
  }
});
