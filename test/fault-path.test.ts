// The ordinary fault path and the memory syscalls, without userfaultfd: what a page-table entry holds after
// each kind of access, COW of private file pages, SIGBUS/SIGSEGV, VMA splits and merges, hole punching,
// truncation, the hugetlb pool, and the errno paths of mmap and memfd_create. The page-table checks read the
// model's entries the way a test on Linux reads /proc/self/pagemap.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Process } from '../src/api/process.ts';
import { PTE_DIRTY, PTE_PRESENT, PTE_WRITE, PTE_ZERO } from '../src/model/mm/pagetable.ts';
import { SignalError } from '../src/uapi/errno.ts';
import { createTestModel, expectErrno, HUGE, PAGE } from './helpers.ts';
import {
  assertBytes,
  cachedFolios,
  mapsAnonymousPage,
  pattern,
  pteFlags,
  ptePfn,
  vmasIn,
} from './memkinds.ts';

const EBADF = 9;
const ENOMEM = 12;
const EACCES = 13;
const EEXIST = 17;
const ENODEV = 19;
const EINVAL = 22;

const SIGBUS = 7;
const SIGSEGV = 11;
const SEGV_MAPERR = 1;
const SEGV_ACCERR = 2;
const BUS_ADRERR = 2;

const PROT_NONE = 0;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_DROPPABLE = 0x08;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;
const MAP_HUGETLB = 0x40000;
const MAP_FIXED_NOREPLACE = 0x100000;
const O_RDONLY = 0;
const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
const MFD_HUGETLB = 0x4;
const MFD_NOEXEC_SEAL = 0x8;
const MFD_EXEC = 0x10;
const MFD_HUGE_2MB = 21 << 26;
const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;

/** The present/zero/write bits of the entry at `address`. */
function entry(model: ReturnType<typeof createTestModel>, address: number): number {
  return pteFlags(model.backend, model.process, address) & (PTE_PRESENT | PTE_ZERO | PTE_WRITE);
}

function vmaCount(model: ReturnType<typeof createTestModel>, start: number, end: number): number {
  return vmasIn(model.backend, model.process, start, end).length;
}

/** Runs one access in a thread and returns its result. */
async function access(process: Process, kind: 'read' | 'write', address: number) {
  const program =
    kind === 'read'
      ? [{ kind: 'read' as const, address, length: 1 }]
      : [{ kind: 'write' as const, address, data: new Uint8Array([1]) }];
  return process.thread(program).join();
}

function expectSignal(call: () => unknown, signal: number, siCode: number, address: number): void {
  assert.throws(call, (error: unknown) => {
    assert.ok(error instanceof SignalError, `expected a SignalError, got ${String(error)}`);
    assert.equal(error.signal, signal);
    assert.equal(error.siCode, siCode);
    assert.equal(error.address, address);
    return true;
  });
}

describe('anonymous memory', () => {
  it('a read maps the shared zero page read-only; a write then allocates a private page', () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: 2 * PAGE });
    assert.equal(entry(model, area), 0);
    assert.deepEqual(model.process.read(area + 10, 4), new Uint8Array(4));
    assert.equal(entry(model, area), PTE_PRESENT | PTE_ZERO);
    model.process.read(area + PAGE, 1);
    assert.equal(
      ptePfn(model.backend, model.process, area),
      ptePfn(model.backend, model.process, area + PAGE),
    );
    model.process.write(area + 10, new Uint8Array([7]));
    assert.equal(entry(model, area), PTE_PRESENT | PTE_WRITE);
    assert.ok(mapsAnonymousPage(model.backend, model.process, area));
    assert.equal(model.process.read(area + 10, 1)[0], 7);
    // The other page still maps the zero page.
    assert.equal(entry(model, area + PAGE), PTE_PRESENT | PTE_ZERO);
  });

  it('a first write allocates at once: present, writable and dirty', () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: PAGE });
    model.process.write(area + 100, new Uint8Array([1, 2, 3]));
    const flags = pteFlags(model.backend, model.process, area);
    assert.equal(
      flags & (PTE_PRESENT | PTE_WRITE | PTE_DIRTY | PTE_ZERO),
      PTE_PRESENT | PTE_WRITE | PTE_DIRTY,
    );
    const expected = new Uint8Array(PAGE);
    expected.set([1, 2, 3], 100);
    assertBytes(model.process.read(area, PAGE), expected, 'the page');
  });

  it('accesses spanning pages fault each page in', async () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: 3 * PAGE });
    const data = pattern(PAGE + 200, 1);
    model.process.write(area + PAGE - 100, data);
    const result = await model.process
      .thread([{ kind: 'read', address: area + PAGE - 100, length: PAGE + 200 }])
      .join();
    assertBytes(result.reads[0]!, data, 'the read');
    assert.deepEqual(
      [0, 1, 2].map((n) => entry(model, area + n * PAGE)),
      [PTE_PRESENT | PTE_WRITE, PTE_PRESENT | PTE_WRITE, PTE_PRESENT | PTE_WRITE],
    );
  });
});

describe('private file mappings (COW)', () => {
  it('a read maps the page-cache page read-only; a write copies it and leaves the cache alone', () => {
    const model = createTestModel();
    const fd = model.process.memfd('cow', { size: 2 * PAGE });
    const data = pattern(2 * PAGE, 2);
    model.process.pwrite(fd, data, 0);
    const area = model.process.mmap({ length: 2 * PAGE, fd });
    assertBytes(model.process.read(area, PAGE), data.subarray(0, PAGE), 'page 0 read');
    assert.equal(entry(model, area), PTE_PRESENT);
    assert.equal(mapsAnonymousPage(model.backend, model.process, area), false);
    const cachePfn = ptePfn(model.backend, model.process, area);

    model.process.write(area + 1, new Uint8Array([0xf0]));
    assert.equal(entry(model, area), PTE_PRESENT | PTE_WRITE);
    assert.ok(mapsAnonymousPage(model.backend, model.process, area));
    assert.notEqual(ptePfn(model.backend, model.process, area), cachePfn);
    const written = data.slice(0, PAGE);
    written[1] = 0xf0;
    assertBytes(model.process.read(area, PAGE), written, 'the private copy');
    assertBytes(model.process.pread(fd, 2 * PAGE, 0), data, 'the file');

    // A write with no read before it copies the cached contents too.
    model.process.write(area + PAGE + 2, new Uint8Array([0xf1]));
    const second = data.slice(PAGE);
    second[2] = 0xf1;
    assertBytes(model.process.read(area + PAGE, PAGE), second, 'page 1');
    assertBytes(model.process.pread(fd, PAGE, PAGE), data.subarray(PAGE), 'page 1 of the file');
    assert.equal(cachedFolios(model.backend, model.process, fd), 2);
  });

  it('a private read of a hole allocates a page-cache page; a write then COWs it (probe q2)', () => {
    const model = createTestModel();
    const fd = model.process.memfd('hole', { size: 2 * PAGE });
    const area = model.process.mmap({ length: 2 * PAGE, fd });
    assert.equal(model.process.read(area + PAGE, 1)[0], 0);
    assert.equal(cachedFolios(model.backend, model.process, fd), 1);
    assert.equal(mapsAnonymousPage(model.backend, model.process, area + PAGE), false);
    model.process.write(area + PAGE, new Uint8Array([0x33]));
    assert.ok(mapsAnonymousPage(model.backend, model.process, area + PAGE));
    assert.equal(model.process.pread(fd, 1, PAGE)[0], 0);
  });

  it('until the COW, file writes show through the private mapping; after it they do not', () => {
    const model = createTestModel();
    const fd = model.process.memfd('cow', { size: 2 * PAGE });
    const area = model.process.mmap({ length: 2 * PAGE, fd });
    model.process.read(area, 1);
    model.process.read(area + PAGE, 1);
    model.process.write(area + PAGE, new Uint8Array([0x55]));
    model.process.pwrite(fd, new Uint8Array([0x11]), 0);
    model.process.pwrite(fd, new Uint8Array([0x22]), PAGE);
    assert.equal(model.process.read(area, 1)[0], 0x11);
    assert.equal(model.process.read(area + PAGE, 1)[0], 0x55);
  });
});

describe('shared shmem', () => {
  for (const anonymous of [false, true]) {
    it(`${anonymous ? 'MAP_SHARED|MAP_ANONYMOUS' : 'memfd MAP_SHARED'}: writes map the cache page writable and are shared`, () => {
      const model = createTestModel();
      const fd = anonymous ? -1 : model.process.memfd('shared', { size: 2 * PAGE });
      const area = anonymous
        ? model.process.mmap({ length: 2 * PAGE, shared: true })
        : model.process.mmap({ length: 2 * PAGE, fd, shared: true });
      model.process.write(area + PAGE + 3, new Uint8Array([0x5a]));
      assert.equal(entry(model, area + PAGE), PTE_PRESENT | PTE_WRITE);
      assert.equal(mapsAnonymousPage(model.backend, model.process, area + PAGE), false);
      // A shared read maps the cache page (never the zero page), writable at once.
      model.process.read(area, 1);
      assert.equal(entry(model, area), PTE_PRESENT | PTE_WRITE);
      if (anonymous) return;
      assert.equal(model.process.pread(fd, 1, PAGE + 3)[0], 0x5a);
      model.process.pwrite(fd, new Uint8Array([0x6b]), 7);
      assert.equal(model.process.read(area + 7, 1)[0], 0x6b);
      const alias = model.process.mmap({ length: 2 * PAGE, fd, shared: true });
      assert.equal(model.process.read(alias + PAGE + 3, 1)[0], 0x5a);
      model.process.write(alias + 9, new Uint8Array([0x7c]));
      assert.equal(model.process.read(area + 9, 1)[0], 0x7c);
    });
  }

  it('a shared mapping of a read-only fd: reads work, a write is SIGSEGV', async () => {
    const model = createTestModel();
    const fd = model.process.memfd('ro', { size: PAGE });
    model.process.pwrite(fd, new Uint8Array([3]), 0);
    const readOnly = model.process.backend.reopen(fd, O_RDONLY);
    const area = model.process.mmap({ length: PAGE, fd: readOnly, shared: true, prot: PROT_READ });
    assert.equal(model.process.read(area, 1)[0], 3);
    const result = await access(model.process, 'write', area);
    assert.equal(result.state, 'segv');
    assert.deepEqual(result.signal, { signal: SIGSEGV, address: area, siCode: SEGV_ACCERR });
    expectErrno(() => model.process.mprotect(area, PAGE, PROT_READ | PROT_WRITE), EACCES);
  });
});

describe('signals', () => {
  for (const shared of [true, false]) {
    it(`a read beyond i_size of a ${shared ? 'shared' : 'private'} memfd mapping is SIGBUS`, async () => {
      //   file: [ page 0 ]   mapping: [ page 0 | page 1 ]
      const model = createTestModel();
      const fd = model.process.memfd('short', { size: PAGE });
      const area = model.process.mmap({ length: 2 * PAGE, fd, shared });
      assert.equal(model.process.read(area + PAGE - 1, 1)[0], 0);
      const result = await access(model.process, 'read', area + PAGE + 5);
      assert.equal(result.state, 'sigbus');
      assert.deepEqual(result.signal, { signal: SIGBUS, address: area + PAGE + 5, siCode: BUS_ADRERR });
      assert.equal((await access(model.process, 'write', area + PAGE)).state, 'sigbus');
      expectSignal(() => model.process.read(area + PAGE, 1), SIGBUS, BUS_ADRERR, area + PAGE);
      assert.equal(entry(model, area + PAGE), 0);
    });
  }

  it('an access that starts inside i_size and runs past it stops with SIGBUS at the first bad byte', async () => {
    const model = createTestModel();
    const fd = model.process.memfd('short', { size: PAGE });
    const area = model.process.mmap({ length: 2 * PAGE, fd, shared: true });
    const result = await model.process
      .thread([{ kind: 'read', address: area + PAGE - 8, length: 16 }])
      .join();
    assert.equal(result.state, 'sigbus');
    assert.equal(result.signal?.address, area + PAGE);
    assert.equal(result.reads.length, 0);
  });

  it('unmapped memory is SIGSEGV with SEGV_MAPERR', async () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: PAGE });
    model.process.munmap(area, PAGE);
    for (const kind of ['read', 'write'] as const) {
      const result = await access(model.process, kind, area + 12);
      assert.equal(result.state, 'segv');
      assert.deepEqual(result.signal, { signal: SIGSEGV, address: area + 12, siCode: SEGV_MAPERR });
    }
    expectSignal(() => model.process.read(area, 1), SIGSEGV, SEGV_MAPERR, area);
  });

  it('PROT_READ: reads work, writes are SIGSEGV with SEGV_ACCERR; PROT_NONE refuses both', async () => {
    const model = createTestModel();
    const readOnly = model.process.mmap({ length: PAGE, prot: PROT_READ });
    assert.equal((await access(model.process, 'read', readOnly)).state, 'done');
    const write = await access(model.process, 'write', readOnly + 4);
    assert.deepEqual(write.signal, { signal: SIGSEGV, address: readOnly + 4, siCode: SEGV_ACCERR });
    // The read mapped the zero page; the failed write left it alone.
    assert.equal(entry(model, readOnly), PTE_PRESENT | PTE_ZERO);
    const none = model.process.mmap({ length: PAGE, prot: PROT_NONE });
    for (const kind of ['read', 'write'] as const) {
      assert.equal((await access(model.process, kind, none)).signal?.siCode, SEGV_ACCERR);
    }
    expectSignal(() => model.process.write(readOnly, new Uint8Array([1])), SIGSEGV, SEGV_ACCERR, readOnly);
  });

  it('a signal ends the thread: later accesses of its program do not run', async () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: PAGE, prot: PROT_READ });
    const after = model.process.mmap({ length: PAGE });
    const result = await model.process
      .thread([
        { kind: 'read', address: area, length: 1 },
        { kind: 'write', address: area, data: new Uint8Array([1]) },
        { kind: 'write', address: after, data: new Uint8Array([1]) },
      ])
      .join();
    assert.equal(result.state, 'segv');
    assert.equal(result.reads.length, 1);
    assert.equal(entry(model, after), 0);
  });
});

describe('munmap and mprotect', () => {
  it('munmap of the middle splits the vma in two; access there is SIGSEGV; the rest keeps its data', async () => {
    //   [ p0 | p1 | p2 | p3 ]  →  [ p0 ] hole hole [ p3 ]
    const model = createTestModel();
    const area = model.process.mmap({ length: 4 * PAGE });
    for (let n = 0; n < 4; n++) model.process.write(area + n * PAGE, new Uint8Array([n + 1]));
    model.process.munmap(area + PAGE, 2 * PAGE);
    assert.equal(vmaCount(model, area, area + 4 * PAGE), 2);
    assert.equal(entry(model, area + PAGE), 0);
    assert.equal((await access(model.process, 'read', area + 2 * PAGE)).state, 'segv');
    assert.equal(model.process.read(area, 1)[0], 1);
    assert.equal(model.process.read(area + 3 * PAGE, 1)[0], 4);
    // Unmapping a hole is fine; unaligned or empty ranges are not.
    model.process.munmap(area + PAGE, PAGE);
    expectErrno(() => model.process.munmap(area + 1, PAGE), EINVAL);
    expectErrno(() => model.process.munmap(area, 0), EINVAL);
  });

  it('munmap frees the pages: a new mapping at the same place reads zeros', () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: PAGE });
    model.process.write(area, new Uint8Array([9]));
    model.process.munmap(area, PAGE);
    const again = model.process.mmap({ length: PAGE, fixedAddress: area });
    assert.equal(again, area);
    assert.equal(model.process.read(area, 1)[0], 0);
  });

  it('mprotect of the middle splits into three; restoring the protection merges back into one', async () => {
    //   [ rw | rw | rw | rw ]  →  [ rw ][ r | r ][ rw ]  →  [ rw rw rw rw ]
    const model = createTestModel();
    const area = model.process.mmap({ length: 4 * PAGE });
    for (let n = 0; n < 4; n++) model.process.write(area + n * PAGE, new Uint8Array([n + 1]));
    model.process.mprotect(area + PAGE, 2 * PAGE, PROT_READ);
    assert.equal(vmaCount(model, area, area + 4 * PAGE), 3);
    assert.equal(entry(model, area + PAGE), PTE_PRESENT);
    assert.equal(entry(model, area), PTE_PRESENT | PTE_WRITE);
    assert.equal((await access(model.process, 'write', area + PAGE)).state, 'segv');
    assert.equal(model.process.read(area + 2 * PAGE, 1)[0], 3);
    model.process.mprotect(area + PAGE, 2 * PAGE, PROT_READ | PROT_WRITE);
    assert.equal(vmaCount(model, area, area + 4 * PAGE), 1);
    // The exclusive anonymous page is reused in place, with its data.
    const pfn = ptePfn(model.backend, model.process, area + PAGE);
    model.process.write(area + PAGE + 1, new Uint8Array([0x20]));
    assert.equal(ptePfn(model.backend, model.process, area + PAGE), pfn);
    assert.deepEqual(model.process.read(area + PAGE, 2), new Uint8Array([2, 0x20]));
  });

  it('mprotect over a hole is ENOMEM, after changing the part before the hole (probe q7)', async () => {
    //   [ vma: 3 pages ] hole [ vma: 4 pages ]   mprotect(R) over all 8 pages
    const model = createTestModel();
    const area = model.process.mmap({ length: 8 * PAGE });
    model.process.munmap(area + 3 * PAGE, PAGE);
    expectErrno(() => model.process.mprotect(area, 8 * PAGE, PROT_READ), ENOMEM);
    assert.equal((await access(model.process, 'write', area + 2 * PAGE)).state, 'segv');
    assert.equal((await access(model.process, 'write', area + 4 * PAGE)).state, 'done');
    expectErrno(() => model.process.mprotect(area + 3 * PAGE, PAGE, PROT_READ), ENOMEM);
    expectErrno(() => model.process.mprotect(area + 1, PAGE, PROT_READ), EINVAL);
    // A zero length is a no-op, even over a hole.
    model.process.mprotect(area + 3 * PAGE, 0, PROT_READ);
  });

  it('munmap rounds the length up to whole pages (probe q7)', () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: 8 * PAGE });
    model.process.munmap(area + 7 * PAGE, 100);
    const vmas = vmasIn(model.backend, model.process, area, area + 8 * PAGE);
    assert.deepEqual(
      vmas.map((vma) => [vma.start - area, vma.end - area]),
      [[0, 7 * PAGE]],
    );
  });

  it('a new mapping merges with neighbours unless their anon_vmas differ (probe q1b)', () => {
    //   [ A: written ][ B: mapped last ][ C: written ]  →  [ A B ][ C ]
    const model = createTestModel();
    const guard = model.process.mmap({ length: 5 * PAGE, prot: PROT_NONE });
    const a = model.process.mmap({ length: PAGE, fixedAddress: guard + PAGE });
    const c = model.process.mmap({ length: PAGE, fixedAddress: guard + 3 * PAGE });
    model.process.write(a, new Uint8Array([1]));
    model.process.write(c, new Uint8Array([3]));
    model.process.mmap({ length: PAGE, fixedAddress: guard + 2 * PAGE });
    const vmas = vmasIn(model.backend, model.process, a, c + PAGE);
    assert.deepEqual(
      vmas.map((vma) => [vma.start - a, vma.end - a]),
      [
        [0, 2 * PAGE],
        [2 * PAGE, 3 * PAGE],
      ],
    );
    // Two untouched neighbours merge into one.
    const d = model.process.mmap({ length: PAGE });
    model.process.mmap({ length: PAGE, fixedAddress: d - PAGE });
    assert.equal(vmasIn(model.backend, model.process, d - PAGE, d + PAGE).length, 1);
  });
});

describe('fallocate(PUNCH_HOLE) and ftruncate', () => {
  /**
   *   file:    [ page 0: 0xaa... | page 1: 0xaa... ]
   *   shared:  both pages mapped from the cache
   *   private: page 0 COWed (byte 0 = 0x01), page 1 mapped from the cache
   */
  function populated() {
    const model = createTestModel();
    const fd = model.process.memfd('punch', { size: 2 * PAGE });
    model.process.pwrite(fd, new Uint8Array(2 * PAGE).fill(0xaa), 0);
    const shared = model.process.mmap({ length: 2 * PAGE, fd, shared: true });
    const priv = model.process.mmap({ length: 2 * PAGE, fd });
    model.process.read(shared, 1);
    model.process.read(shared + PAGE, 1);
    model.process.write(priv, new Uint8Array([0x01]));
    model.process.read(priv + PAGE, 1);
    return { model, fd, shared, priv };
  }

  it('punching a hole zaps the shared mappings but keeps the private COW copies', () => {
    const { model, fd, shared, priv } = populated();
    model.process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * PAGE);
    assert.equal(cachedFolios(model.backend, model.process, fd), 0);
    assert.equal(entry(model, shared), 0);
    assert.equal(entry(model, priv + PAGE), 0, 'the private mapping of a cache page is zapped');
    assert.equal(entry(model, priv), PTE_PRESENT | PTE_WRITE, 'the COW copy stays');
    const cow = new Uint8Array(PAGE).fill(0xaa);
    cow[0] = 0x01;
    assertBytes(model.process.read(priv, PAGE), cow, 'the COW copy');
    assertBytes(model.process.read(shared, 2 * PAGE), new Uint8Array(2 * PAGE), 'the shared mapping');
    assertBytes(model.process.read(priv + PAGE, PAGE), new Uint8Array(PAGE), 'private page 1');
    assertBytes(model.process.pread(fd, 2 * PAGE, 0), new Uint8Array(2 * PAGE), 'the file');
  });

  it('a hole inside one page zeroes that part of the cached page, seen by every mapping', () => {
    const { model, fd, shared, priv } = populated();
    model.process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, PAGE + 100, 200);
    const expected = new Uint8Array(PAGE).fill(0xaa);
    expected.fill(0, 100, 300);
    assertBytes(model.process.pread(fd, PAGE, PAGE), expected, 'the file');
    assertBytes(model.process.read(shared + PAGE, PAGE), expected, 'the shared mapping');
    assertBytes(model.process.read(priv + PAGE, PAGE), expected, 'the private mapping of the cache page');
    assert.equal(cachedFolios(model.backend, model.process, fd), 2);
  });

  it('punch hole needs KEEP_SIZE', () => {
    const { model, fd } = populated();
    expectErrno(() => model.process.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, PAGE), 95);
  });

  it('ftruncate shrinking removes pages beyond the new size, even private COW copies', async () => {
    const { model, fd, shared, priv } = populated();
    model.process.write(priv + PAGE, new Uint8Array([0x02]));
    model.process.ftruncate(fd, PAGE);
    assert.equal(cachedFolios(model.backend, model.process, fd), 1);
    assert.equal(entry(model, shared + PAGE), 0);
    assert.equal(entry(model, priv + PAGE), 0);
    for (const address of [shared + PAGE, priv + PAGE]) {
      assert.equal((await access(model.process, 'read', address)).state, 'sigbus');
    }
    assert.equal(model.process.read(shared, 1)[0], 0xaa);
    assert.equal(model.process.read(priv, 1)[0], 0x01);
    // Growing again brings back a hole, not the old data.
    model.process.ftruncate(fd, 2 * PAGE);
    assertBytes(model.process.read(shared + PAGE, PAGE), new Uint8Array(PAGE), 'page 1 after regrowth');
    assert.equal(model.process.pread(fd, 1, PAGE)[0], 0);
  });

  it('ftruncate to the middle of a page zeroes its tail; pread stops at i_size', () => {
    const { model, fd, shared } = populated();
    model.process.ftruncate(fd, PAGE + 100);
    assert.equal(model.process.pread(fd, 2 * PAGE, 0).byteLength, PAGE + 100);
    const expected = new Uint8Array(PAGE);
    expected.fill(0xaa, 0, 100);
    assertBytes(model.process.read(shared + PAGE, PAGE), expected, 'the partial page');
  });

  it('ftruncate through a read-only fd is EINVAL', () => {
    const { model, fd } = populated();
    const readOnly = model.process.backend.reopen(fd, O_RDONLY);
    expectErrno(() => model.process.ftruncate(readOnly, 0), EINVAL);
    expectErrno(
      () => model.process.fallocate(readOnly, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE),
      EBADF,
    );
  });
});

describe('the hugetlb pool', () => {
  it('a mapping needing more huge pages than the pool holds is ENOMEM', () => {
    const model = createTestModel({ memory: { hugePages2M: 1 } });
    const big = model.process.memfd('big', { size: 2 * HUGE, hugetlb: true });
    expectErrno(() => model.process.mmap({ length: 2 * HUGE, fd: big, shared: true }), ENOMEM);
    expectErrno(() => model.process.mmap({ length: 2 * HUGE, fd: big }), ENOMEM);
    expectErrno(() => model.process.mmap({ length: 2 * HUGE, hugetlb: true }), ENOMEM);
    // One huge page fits, and works.
    const area = model.process.mmap({ length: HUGE, fd: big, shared: true });
    model.process.write(area + HUGE - 1, new Uint8Array([1]));
    assert.equal(model.backend.kernel.memory.hugePagesFree, 0);
    // The pool is empty now; a mapping of the page already cached needs nothing more.
    const alias = model.process.mmap({ length: HUGE, fd: big, shared: true });
    assert.equal(model.process.read(alias + HUGE - 1, 1)[0], 1);
    expectErrno(() => model.process.mmap({ length: HUGE, hugetlb: true }), ENOMEM);
  });

  it('MAP_NORESERVE maps anyway; the fault that finds the pool empty is SIGBUS', async () => {
    const model = createTestModel({ memory: { hugePages2M: 1 } });
    const area = model.process.backend.mmap({
      address: 0,
      length: 2 * HUGE,
      prot: PROT_READ | PROT_WRITE,
      flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE,
      fd: -1,
      offset: 0,
    });
    assert.equal(area % HUGE, 0);
    assert.equal((await access(model.process, 'write', area)).state, 'done');
    const second = await access(model.process, 'write', area + HUGE);
    assert.equal(second.state, 'sigbus');
    assert.equal(second.signal?.address, area + HUGE);
  });

  it('an empty pool: MAP_HUGETLB is ENOMEM, memfd_create(MFD_HUGETLB) still works (probe q7)', () => {
    const model = createTestModel({ memory: { hugePages2M: 0 } });
    expectErrno(() => model.process.mmap({ length: HUGE, hugetlb: true }), ENOMEM);
    const fd = model.process.memfd('empty', { size: HUGE, hugetlb: true });
    expectErrno(() => model.process.mmap({ length: HUGE, fd, shared: true }), ENOMEM);
  });

  it('hugetlbfs: pwrite is EINVAL, pread reads what a mapping wrote (probe q3c)', () => {
    const model = createTestModel();
    const fd = model.process.memfd('h', { size: HUGE, hugetlb: true });
    expectErrno(() => model.process.pwrite(fd, new Uint8Array([1]), 0), EINVAL);
    const area = model.process.mmap({ length: HUGE, fd, shared: true });
    model.process.write(area + 2 * PAGE, new Uint8Array([0x4d, 0x4e]));
    assert.deepEqual(model.process.pread(fd, 2, 2 * PAGE), new Uint8Array([0x4d, 0x4e]));
    assert.equal(model.process.pread(fd, 16, HUGE).byteLength, 0);
  });

  it('hugetlbfs punch hole: a partial range is zeroed in place, a whole huge page is freed (probe q3d)', () => {
    const model = createTestModel();
    const fd = model.process.memfd('h', { size: HUGE, hugetlb: true });
    const area = model.process.mmap({ length: HUGE, fd, shared: true });
    model.process.write(area + PAGE - 1, new Uint8Array(102).fill(0x4d));
    const free = model.backend.kernel.memory.hugePagesFree;
    model.process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, PAGE, 100);
    assert.deepEqual(
      model.process.read(area + PAGE - 1, 102),
      new Uint8Array([0x4d, ...new Uint8Array(100), 0x4d]),
    );
    assert.equal(entry(model, area) & PTE_PRESENT, PTE_PRESENT);
    assert.equal(model.backend.kernel.memory.hugePagesFree, free);
    model.process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, HUGE);
    assert.equal(entry(model, area), 0);
    assert.equal(model.backend.kernel.memory.hugePagesFree, free + 1);
    assert.equal(cachedFolios(model.backend, model.process, fd), 0);
  });

  it('munmap returns the huge page to the pool', () => {
    const model = createTestModel({ memory: { hugePages2M: 1 } });
    const area = model.process.mmap({ length: HUGE, hugetlb: true });
    model.process.write(area, new Uint8Array([1]));
    assert.equal(model.backend.kernel.memory.hugePagesFree, 0);
    model.process.munmap(area, HUGE);
    assert.equal(model.backend.kernel.memory.hugePagesFree, 1);
    const again = model.process.mmap({ length: HUGE, hugetlb: true });
    assert.equal(model.process.read(again, 1)[0], 0);
  });

  it('hugetlb mappings are 2 MiB-aligned, and munmap may not split a huge page', () => {
    const model = createTestModel();
    const area = model.process.mmap({ length: HUGE + PAGE, hugetlb: true });
    assert.equal(area % HUGE, 0);
    assert.equal(vmasIn(model.backend, model.process, area, area + 2 * HUGE)[0]!.end, area + 2 * HUGE);
    expectErrno(() => model.process.munmap(area + PAGE, PAGE), EINVAL);
    expectErrno(() => model.process.mprotect(area, PAGE, PROT_READ), EINVAL);
  });
});

describe('memfd_create errors', () => {
  const bad: readonly (readonly [string, string, number])[] = [
    ['an unknown flag', 'x', 0x20],
    ['bit 31', 'x', 0x80000000],
    ['a huge page size without MFD_HUGETLB', 'x', MFD_HUGE_2MB],
    ['MFD_NOEXEC_SEAL with MFD_EXEC', 'x', MFD_NOEXEC_SEAL | MFD_EXEC],
    ['a 250-byte name', 'n'.repeat(250), 0],
  ];
  for (const [name, fileName, flags] of bad) {
    it(`${name} is EINVAL`, () => {
      const { process } = createTestModel();
      expectErrno(() => process.backend.memfdCreate(fileName, flags), EINVAL);
    });
  }

  const good: readonly (readonly [string, string, number])[] = [
    ['a 249-byte name', 'n'.repeat(249), 0],
    ['an empty name', '', 0],
    ['every plain flag', 'x', MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL],
    ['MFD_HUGETLB|MFD_HUGE_2MB', 'x', MFD_HUGETLB | MFD_HUGE_2MB],
    ['MFD_HUGETLB with MFD_CLOEXEC', 'x', MFD_HUGETLB | MFD_CLOEXEC],
  ];
  for (const [name, fileName, flags] of good) {
    it(`${name} is accepted, with size 0`, () => {
      const { process } = createTestModel();
      const fd = process.backend.memfdCreate(fileName, flags);
      assert.ok(fd >= 3);
      assert.equal(process.pread(fd, 10, 0).byteLength, 0);
    });
  }
});

describe('mmap errors', () => {
  interface Case {
    readonly name: string;
    readonly errno: number;
    readonly args: (process: Process) => {
      address?: number;
      length?: number;
      prot?: number;
      flags: number;
      fd?: number;
      offset?: number;
    };
  }
  const cases: readonly Case[] = [
    { name: 'length 0', errno: EINVAL, args: () => ({ length: 0, flags: MAP_PRIVATE | MAP_ANONYMOUS }) },
    { name: 'map type 0', errno: EINVAL, args: () => ({ flags: MAP_ANONYMOUS }) },
    { name: 'map type 0x04', errno: EINVAL, args: () => ({ flags: 0x04 | MAP_ANONYMOUS }) },
    { name: 'map type 0x0f', errno: EINVAL, args: () => ({ flags: 0x0f | MAP_ANONYMOUS }) },
    {
      name: 'unknown prot bits',
      errno: EINVAL,
      args: () => ({ prot: 0x10, flags: MAP_PRIVATE | MAP_ANONYMOUS }),
    },
    {
      name: 'an offset not page aligned',
      errno: EINVAL,
      args: (process) => ({ flags: MAP_SHARED, fd: process.memfd('o', { size: 2 * PAGE }), offset: 100 }),
    },
    {
      name: 'MAP_FIXED at an unaligned address',
      errno: EINVAL,
      args: () => ({ address: 0x10000001, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED }),
    },
    {
      name: 'MAP_FIXED beyond TASK_SIZE',
      errno: ENOMEM,
      args: () => ({ address: 0x800000000000, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED }),
    },
    { name: 'a closed fd', errno: EBADF, args: () => ({ flags: MAP_SHARED, fd: 99 }) },
    { name: 'fd -1 without MAP_ANONYMOUS', errno: EBADF, args: () => ({ flags: MAP_PRIVATE, fd: -1 }) },
    {
      name: 'a userfaultfd',
      errno: ENODEV,
      args: (process) => ({ flags: MAP_SHARED, fd: process.userfaultfd().fd }),
    },
    {
      name: 'MAP_DROPPABLE of a file',
      errno: EINVAL,
      args: (process) => ({ flags: MAP_DROPPABLE, fd: process.memfd('d', { size: PAGE }) }),
    },
    {
      name: 'PROT_WRITE MAP_SHARED of a read-only fd',
      errno: EACCES,
      args: (process) => ({
        flags: MAP_SHARED,
        fd: process.backend.reopen(process.memfd('r', { size: PAGE }), O_RDONLY),
      }),
    },
    {
      name: 'a hugetlb memfd at an offset not 2 MiB aligned',
      errno: EINVAL,
      args: (process) => ({
        flags: MAP_SHARED,
        fd: process.memfd('h', { size: 2 * HUGE, hugetlb: true }),
        offset: PAGE,
        length: HUGE,
      }),
    },
  ];
  for (const { name, errno, args } of cases) {
    it(`${name} → ${errno}`, () => {
      const { process, backend } = createTestModel();
      const a = args(process);
      const before = modelVmas(backend, process);
      expectErrno(
        () =>
          process.backend.mmap({
            address: a.address ?? 0,
            length: a.length ?? PAGE,
            prot: a.prot ?? PROT_READ | PROT_WRITE,
            flags: a.flags,
            fd: a.fd ?? -1,
            offset: a.offset ?? 0,
          }),
        errno,
      );
      assert.equal(modelVmas(backend, process), before, 'no mapping was made');
    });
  }

  it('MAP_FIXED_NOREPLACE over an existing mapping is EEXIST; MAP_FIXED replaces it', () => {
    const { process, backend } = createTestModel();
    const area = process.mmap({ length: 2 * PAGE });
    process.write(area + PAGE, new Uint8Array([5]));
    const args = { address: area + PAGE, length: PAGE, prot: PROT_READ | PROT_WRITE, fd: -1, offset: 0 };
    expectErrno(
      () => process.backend.mmap({ ...args, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE }),
      EEXIST,
    );
    assert.equal(process.read(area + PAGE, 1)[0], 5);
    assert.equal(
      process.backend.mmap({ ...args, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED }),
      area + PAGE,
    );
    assert.equal(process.read(area + PAGE, 1)[0], 0);
    // The replacement has the same flags, so the two vmas merge again.
    assert.equal(vmasIn(backend, process, area, area + 2 * PAGE).length, 1);
  });

  it('a length that is not a page multiple is rounded up', () => {
    const { process, backend } = createTestModel();
    const area = process.mmap({ length: PAGE + 1 });
    const [vma] = vmasIn(backend, process, area, area + 3 * PAGE);
    assert.equal(vma!.end - vma!.start, 2 * PAGE);
  });
});

function modelVmas(backend: ReturnType<typeof createTestModel>['backend'], process: Process): number {
  return backend.kernel.processes.get(process.pid)!.mm.vmas.length;
}
