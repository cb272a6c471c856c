// UFFDIO_REGISTER and UFFDIO_UNREGISTER (uapi-facts.md §3.2, §3.3): the observed 6.18 return table crossed
// with every memory type, then the range rules (holes, splits, merges, hugetlb alignment), re-registration,
// and the rules between two userfaultfds. Expected masks and errnos are the facts' numbers.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Process, Uffd } from '../src/api/process.ts';
import { VM_UFFD_MINOR, VM_UFFD_MISSING, VM_UFFD_WP } from '../src/model/mm/vma.ts';
import { encodeUffdioRange, encodeUffdioRegister } from '../src/uapi/structs.ts';
import { createTestModel, expectErrno, HUGE, PAGE } from './helpers.ts';
import {
  ALL_KINDS,
  ANON_PRIVATE,
  ANON_SHARED,
  HUGETLB_PRIVATE,
  HUGETLB_SHARED,
  MEMFD_PRIVATE,
  MEMFD_SHARED,
  type MemKind,
  vmasIn,
} from './memkinds.ts';

const EPERM = 1;
const EBUSY = 16;
const EINVAL = 22;
const TASK_SIZE = 0x7ffffffff000;
const O_RDONLY = 0;
const PROT_NONE = 0;
const PROT_READ = 1;
const MAP_SHARED = 0x01;
const MAP_FIXED = 0x10;
const MAP_DROPPABLE = 0x08;
const MAP_ANONYMOUS = 0x20;

const MISSING = 1;
const WP = 2;
const MINOR = 4;
const UFFDIO_REGISTER = 0xc020aa00;
const UFFDIO_UNREGISTER = 0x8010aa01;
const UFFDIO_WAKE = 0x8010aa02;
const UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR;

/** The seven mode combinations in the facts' column order. */
const MODES: readonly (readonly [string, number])[] = [
  ['MISSING', MISSING],
  ['WP', WP],
  ['MISSING|WP', MISSING | WP],
  ['MINOR', MINOR],
  ['MINOR|MISSING', MINOR | MISSING],
  ['MINOR|WP', MINOR | WP],
  ['MISSING|WP|MINOR', MISSING | WP | MINOR],
];

/** §3.2's observed table; 'EINVAL' where registration fails. */
const SHMEM_ROW = [0x13cn, 0x17cn, 0x17cn, 0x1bcn, 0x1bcn, 0x1fcn, 0x1fcn] as const;
const HUGETLB_ROW = [0x10cn, 0x14cn, 0x14cn, 0x18cn, 0x18cn, 0x1ccn, 0x1ccn] as const;
const TABLE: ReadonlyMap<MemKind, readonly (bigint | 'EINVAL')[]> = new Map<
  MemKind,
  readonly (bigint | 'EINVAL')[]
>([
  [ANON_PRIVATE, [0x13cn, 0x17cn, 0x17cn, 'EINVAL', 'EINVAL', 'EINVAL', 'EINVAL']],
  [ANON_SHARED, SHMEM_ROW],
  [MEMFD_SHARED, SHMEM_ROW],
  [MEMFD_PRIVATE, SHMEM_ROW],
  [HUGETLB_SHARED, HUGETLB_ROW],
  [HUGETLB_PRIVATE, HUGETLB_ROW],
]);

function vmFlagsFor(mode: number): number {
  return (
    (mode & MISSING ? VM_UFFD_MISSING : 0) | (mode & WP ? VM_UFFD_WP : 0) | (mode & MINOR ? VM_UFFD_MINOR : 0)
  );
}

function setup() {
  const model = createTestModel();
  const uffd = model.process.userfaultfd();
  uffd.api();
  return { ...model, uffd };
}

/** The uffd flags of each VMA in [start, end), in address order. */
function uffdFlags(model: ReturnType<typeof setup>, start: number, end: number): number[] {
  return vmasIn(model.backend, model.process, start, end).map((vma) => vma.flags & UFFD_FLAGS);
}

function vmaCount(model: ReturnType<typeof setup>, start: number, end: number): number {
  return vmasIn(model.backend, model.process, start, end).length;
}

describe('the register table (§3.2)', () => {
  for (const kind of ALL_KINDS) {
    const row = TABLE.get(kind)!;
    describe(kind.name, () => {
      MODES.forEach(([modeName, mode], column) => {
        const expected = row[column]!;
        it(`${modeName} → ${expected === 'EINVAL' ? 'EINVAL' : `0x${expected.toString(16)}`}`, () => {
          const model = setup();
          const area = kind.map(model.process, 2);
          const range = { start: area.address, length: area.length };
          if (expected === 'EINVAL') {
            expectErrno(() => model.uffd.register(range, mode), EINVAL);
            assert.deepEqual(uffdFlags(model, area.address, area.address + area.length), [0]);
            return;
          }
          assert.equal(model.uffd.register(range, mode), expected);
          const vmas = vmasIn(model.backend, model.process, area.address, area.address + area.length);
          assert.equal(vmas.length, 1);
          assert.equal(vmas[0]!.flags & UFFD_FLAGS, vmFlagsFor(mode));
          assert.equal(vmas[0]!.start, area.address);
          assert.equal(vmas[0]!.end, area.address + area.length);
        });
      });
    });
  }

  describe('memfd MAP_SHARED through a read-only fd: EPERM for every mode (no VM_MAYWRITE)', () => {
    for (const [modeName, mode] of MODES) {
      it(modeName, () => {
        const model = setup();
        const fd = model.process.memfd('ro', { size: 2 * PAGE });
        const readOnly = model.process.backend.reopen(fd, O_RDONLY);
        const address = model.process.mmap({ length: 2 * PAGE, fd: readOnly, shared: true, prot: PROT_READ });
        expectErrno(() => model.uffd.register({ start: address, length: 2 * PAGE }, mode), EPERM);
        assert.deepEqual(uffdFlags(model, address, address + 2 * PAGE), [0]);
      });
    }
  });

  it('memfd MAP_PRIVATE through a read-only fd registers fine', () => {
    const model = setup();
    const fd = model.process.memfd('ro', { size: 2 * PAGE });
    const readOnly = model.process.backend.reopen(fd, O_RDONLY);
    const address = model.process.mmap({ length: 2 * PAGE, fd: readOnly, prot: PROT_READ });
    assert.equal(model.uffd.register({ start: address, length: 2 * PAGE }, MISSING | WP | MINOR), 0x1fcn);
  });

  for (const [name, prot] of [
    ['PROT_NONE', PROT_NONE],
    ['PROT_READ', PROT_READ],
  ] as const) {
    it(`anon ${name} registers like any anon vma (no prot check)`, () => {
      const model = setup();
      const address = model.process.mmap({ length: 2 * PAGE, prot });
      assert.equal(model.uffd.register({ start: address, length: 2 * PAGE }, MISSING), 0x13cn);
      assert.equal(model.uffd.register({ start: address, length: 2 * PAGE }, MISSING | WP), 0x17cn);
      expectErrno(() => model.uffd.register({ start: address, length: 2 * PAGE }, MINOR), EINVAL);
    });
  }

  describe('MAP_DROPPABLE is never registrable', () => {
    for (const [modeName, mode] of MODES) {
      it(modeName, () => {
        const model = setup();
        const address = model.process.backend.mmap({
          address: 0,
          length: 2 * PAGE,
          prot: 3,
          flags: MAP_DROPPABLE | MAP_ANONYMOUS,
          fd: -1,
          offset: 0,
        });
        expectErrno(() => model.uffd.register({ start: address, length: 2 * PAGE }, mode), EINVAL);
        assert.deepEqual(uffdFlags(model, address, address + 2 * PAGE), [0]);
      });
    }
  });
});

describe('argument checks (§3.0, §3.2)', () => {
  // Each case gets a 4-page anon mapping at `area` and says which range and mode to register.
  const cases: readonly (readonly [
    string,
    (area: number) => { start: number; length: number; mode: number },
  ])[] = [
    ['mode 0', (area) => ({ start: area, length: PAGE, mode: 0 })],
    ['mode 8', (area) => ({ start: area, length: PAGE, mode: 8 })],
    ['mode 9 (MISSING plus an unknown bit)', (area) => ({ start: area, length: PAGE, mode: 9 })],
    ['mode 1<<32', (area) => ({ start: area, length: PAGE, mode: 2 ** 32 + 1 })],
    ['unaligned start', (area) => ({ start: area + 1, length: PAGE, mode: MISSING })],
    ['start + 2048', (area) => ({ start: area + 2048, length: PAGE, mode: MISSING })],
    ['unaligned len', (area) => ({ start: area, length: PAGE + 1, mode: MISSING })],
    ['len 0', (area) => ({ start: area, length: 0, mode: MISSING })],
    ['start = TASK_SIZE', () => ({ start: TASK_SIZE, length: PAGE, mode: MISSING })],
    ['start = 0x800000000000', () => ({ start: 0x800000000000, length: PAGE, mode: MISSING })],
    ['start + len > TASK_SIZE', () => ({ start: TASK_SIZE - PAGE, length: 2 * PAGE, mode: MISSING })],
    ['no vma in the range', (area) => ({ start: area - 16 * PAGE, length: 4 * PAGE, mode: MISSING })],
    ['start below mmap_min_addr', () => ({ start: 0, length: PAGE, mode: MISSING })],
  ];
  for (const [name, make] of cases) {
    it(`${name} → EINVAL, nothing registered`, () => {
      const model = setup();
      const area = model.process.mmap({ length: 4 * PAGE });
      // Keep the pages below the area free, for the "no vma" case.
      model.process.mmap({ length: PAGE, fixedAddress: area + 4 * PAGE });
      const { start, length, mode } = make(area);
      expectErrno(() => model.uffd.register({ start, length }, mode), EINVAL);
      assert.deepEqual(uffdFlags(model, area, area + 4 * PAGE), [0]);
      assert.equal(vmaCount(model, area, area + 4 * PAGE), 1);
    });
  }
});

describe('lengths that wrap (§3.0)', () => {
  for (const [name, len] of [
    ['2^64 - start', (start: bigint) => (1n << 64n) - start],
    ['2^64 - 4096', () => (1n << 64n) - 4096n],
    ['2^63', () => 1n << 63n],
  ] as const) {
    it(`len ${name} is EINVAL for REGISTER, UNREGISTER and WAKE`, () => {
      const model = setup();
      const area = model.process.mmap({ length: PAGE });
      const start = BigInt(area);
      const register = encodeUffdioRegister({ range: { start, len: len(start) }, mode: 1n, ioctls: 5n });
      expectErrno(() => model.process.backend.ioctl(model.uffd.fd, UFFDIO_REGISTER, register), EINVAL);
      assert.equal(
        new DataView(register.buffer).getBigUint64(24, true),
        5n,
        'ioctls is written on success only',
      );
      for (const request of [UFFDIO_UNREGISTER, UFFDIO_WAKE]) {
        const range = encodeUffdioRange({ start, len: len(start) });
        expectErrno(() => model.process.backend.ioctl(model.uffd.fd, request, range), EINVAL);
      }
      assert.deepEqual(uffdFlags(model, area, area + PAGE), [0]);
    });
  }
});

describe('holes, splits and merges (§3.2, §3.3)', () => {
  it('a range that starts in a hole registers the vma it covers', () => {
    //   hole  [ vma: 3 pages ]
    //   ^ start          end ^
    const model = setup();
    const area = model.process.mmap({ length: 4 * PAGE });
    model.process.munmap(area, PAGE);
    assert.equal(model.uffd.register({ start: area, length: 4 * PAGE }, MISSING), 0x13cn);
    assert.deepEqual(uffdFlags(model, area, area + 4 * PAGE), [VM_UFFD_MISSING]);
    const vmas = vmasIn(model.backend, model.process, area, area + 4 * PAGE);
    assert.equal(vmas[0]!.start, area + PAGE);
  });

  it('a hole in the middle is skipped; both sides are registered, and unregistered again', () => {
    //   [ vma A ] hole [ vma B ]
    //   ^ start             end ^
    const model = setup();
    const area = model.process.mmap({ length: 5 * PAGE });
    model.process.munmap(area + 2 * PAGE, PAGE);
    assert.equal(model.uffd.register({ start: area, length: 5 * PAGE }, MISSING | WP), 0x17cn);
    assert.deepEqual(uffdFlags(model, area, area + 5 * PAGE), [
      VM_UFFD_MISSING | VM_UFFD_WP,
      VM_UFFD_MISSING | VM_UFFD_WP,
    ]);
    model.uffd.unregister({ start: area, length: 5 * PAGE });
    assert.deepEqual(uffdFlags(model, area, area + 5 * PAGE), [0, 0]);
  });

  for (const kind of ALL_KINDS) {
    it(`${kind.name}: registering the middle splits the vma into three; unregistering merges it back`, () => {
      //   [ page 0 | page 1 (registered) | page 2 ]   (pages of the kind's size)
      const model = setup();
      const area = kind.map(model.process, 3);
      const end = area.address + area.length;
      const middle = { start: area.address + kind.pageSize, length: kind.pageSize };
      const mask = model.uffd.register(middle, MISSING);
      assert.equal(mask, kind.hugetlb ? 0x10cn : 0x13cn);
      assert.deepEqual(uffdFlags(model, area.address, end), [0, VM_UFFD_MISSING, 0]);
      const pieces = vmasIn(model.backend, model.process, area.address, end);
      assert.deepEqual(
        pieces.map((vma) => [vma.start - area.address, vma.end - area.address]),
        [
          [0, kind.pageSize],
          [kind.pageSize, 2 * kind.pageSize],
          [2 * kind.pageSize, 3 * kind.pageSize],
        ],
      );
      model.uffd.unregister(middle);
      // hugetlbfs vmas are VM_DONTEXPAND, which is VM_SPECIAL: the kernel never merges them back.
      assert.deepEqual(uffdFlags(model, area.address, end), kind.hugetlb ? [0, 0, 0] : [0]);
    });
  }

  it('a partial unregister splits; unregistering the rest merges everything into one vma', () => {
    //   [ r | r | r | r ]  →  [ r | r ][ - | - ]  →  [ - - - - ]
    const model = setup();
    const area = model.process.mmap({ length: 4 * PAGE });
    model.uffd.register({ start: area, length: 4 * PAGE }, MISSING);
    model.uffd.unregister({ start: area + 2 * PAGE, length: 2 * PAGE });
    assert.deepEqual(uffdFlags(model, area, area + 4 * PAGE), [VM_UFFD_MISSING, 0]);
    model.uffd.unregister({ start: area, length: 2 * PAGE });
    assert.deepEqual(uffdFlags(model, area, area + 4 * PAGE), [0]);
    // Unregistering again is fine.
    model.uffd.unregister({ start: area, length: 4 * PAGE });
  });

  it('a range starting in a hole below a hugetlb vma must be 2 MiB-aligned too', () => {
    //   hole (4 KiB) [ hugetlb 2 MiB ]
    const model = setup();
    const huge = HUGETLB_SHARED.map(model.process, 1);
    expectErrno(
      () => model.uffd.register({ start: huge.address - PAGE, length: PAGE + HUGE }, MISSING),
      EINVAL,
    );
    assert.equal(model.uffd.register({ start: huge.address - HUGE, length: 2 * HUGE }, MISSING), 0x10cn);
    assert.deepEqual(uffdFlags(model, huge.address - HUGE, huge.address + HUGE), [VM_UFFD_MISSING]);
  });

  it('two adjacent registrations with the same mode merge into one vma', () => {
    const model = setup();
    const area = model.process.mmap({ length: 3 * PAGE });
    model.uffd.register({ start: area, length: PAGE }, MISSING);
    model.uffd.register({ start: area + PAGE, length: PAGE }, MISSING);
    assert.deepEqual(uffdFlags(model, area, area + 3 * PAGE), [VM_UFFD_MISSING, 0]);
    assert.equal(vmasIn(model.backend, model.process, area, area + 3 * PAGE)[0]!.end, area + 2 * PAGE);
  });

  it('populated anon pages do not stop the split and the merge', () => {
    const model = setup();
    const area = model.process.mmap({ length: 3 * PAGE });
    model.process.write(area, new Uint8Array([1]));
    model.process.write(area + 2 * PAGE, new Uint8Array([3]));
    model.uffd.register({ start: area + PAGE, length: PAGE }, WP);
    assert.equal(vmaCount(model, area, area + 3 * PAGE), 3);
    model.uffd.unregister({ start: area + PAGE, length: PAGE });
    assert.equal(vmaCount(model, area, area + 3 * PAGE), 1);
    assert.equal(model.process.read(area + 2 * PAGE, 1)[0], 3);
  });
});

describe('anon_vma and the merge on unregister (probe q1a)', () => {
  //   guard [ page 0 | page 1 (registered) | page 2 ] guard
  // A fill prepares the middle VMA's anon_vma while its flags differ from its neighbours'; neighbours
  // written afterwards get anon_vmas of their own, so the three never merge again. Outer pages written
  // before the fill share one anon_vma with it, and untouched neighbours adopt it: both merge back.
  const cases: readonly (readonly [string, 'copy' | 'zeropage', 'before' | 'after' | 'never', number])[] = [
    ['COPY, outer pages written afterwards', 'copy', 'after', 3],
    ['ZEROPAGE, outer pages written afterwards', 'zeropage', 'after', 3],
    ['COPY, outer pages never touched', 'copy', 'never', 1],
    ['ZEROPAGE, outer pages written before registration', 'zeropage', 'before', 1],
  ];
  for (const [name, fill, outer, vmas] of cases) {
    it(`${name}: ${vmas} vma${vmas > 1 ? 's' : ''} after unregister`, () => {
      const model = setup();
      const src = model.process.mmap({ length: PAGE });
      const guard = model.process.mmap({ length: 5 * PAGE, prot: PROT_NONE });
      const area = model.process.mmap({ length: 3 * PAGE, fixedAddress: guard + PAGE });
      const writeOuter = () => {
        model.process.write(area, new Uint8Array([1]));
        model.process.write(area + 2 * PAGE, new Uint8Array([3]));
      };
      if (outer === 'before') writeOuter();
      const middle = { start: area + PAGE, length: PAGE };
      model.uffd.register(middle, MISSING);
      if (fill === 'copy') model.uffd.copy({ dst: middle.start, src, length: PAGE });
      else model.uffd.zeropage(middle);
      if (outer === 'after') writeOuter();
      assert.equal(vmaCount(model, area, area + 3 * PAGE), 3);
      model.uffd.unregister(middle);
      assert.equal(vmaCount(model, area, area + 3 * PAGE), vmas);
    });
  }
});

describe('re-registration through the same uffd (§3.2)', () => {
  it('replaces the modes: MISSING, then WP leaves WP only, then MISSING|WP sets both', () => {
    const model = setup();
    const area = model.process.mmap({ length: 2 * PAGE });
    const range = { start: area, length: 2 * PAGE };
    assert.equal(model.uffd.register(range, MISSING), 0x13cn);
    assert.equal(model.uffd.register(range, WP), 0x17cn);
    assert.deepEqual(uffdFlags(model, area, area + 2 * PAGE), [VM_UFFD_WP]);
    assert.equal(model.uffd.register(range, MISSING | WP), 0x17cn);
    assert.deepEqual(uffdFlags(model, area, area + 2 * PAGE), [VM_UFFD_MISSING | VM_UFFD_WP]);
  });

  it('a subset leaves the vma as it is but returns the mask of the requested mode', () => {
    const model = setup();
    const fd = model.process.memfd('m', { size: 2 * PAGE });
    const area = model.process.mmap({ length: 2 * PAGE, fd, shared: true });
    const range = { start: area, length: 2 * PAGE };
    assert.equal(model.uffd.register(range, MISSING | WP | MINOR), 0x1fcn);
    assert.equal(model.uffd.register(range, MISSING), 0x13cn);
    assert.deepEqual(uffdFlags(model, area, area + 2 * PAGE), [VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR]);
    assert.equal(model.uffd.register(range, MINOR), 0x1bcn);
    assert.deepEqual(uffdFlags(model, area, area + 2 * PAGE), [VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR]);
  });

  it('re-registering part of a range with new modes splits it there', () => {
    //   [ MISSING | MISSING | MISSING ]  →  [ MISSING ][ WP ][ MISSING ]
    const model = setup();
    const area = model.process.mmap({ length: 3 * PAGE });
    model.uffd.register({ start: area, length: 3 * PAGE }, MISSING);
    model.uffd.register({ start: area + PAGE, length: PAGE }, WP);
    assert.deepEqual(uffdFlags(model, area, area + 3 * PAGE), [VM_UFFD_MISSING, VM_UFFD_WP, VM_UFFD_MISSING]);
    model.uffd.register({ start: area + PAGE, length: PAGE }, MISSING);
    assert.deepEqual(uffdFlags(model, area, area + 3 * PAGE), [VM_UFFD_MISSING]);
  });
});

describe('two userfaultfds (§3.2, §3.3)', () => {
  function twoUffds() {
    const model = setup();
    const other: Uffd = model.process.userfaultfd();
    other.api();
    return { ...model, other };
  }

  it('another uffd on an overlapping range gets EBUSY; nothing changes', () => {
    const model = twoUffds();
    const area = model.process.mmap({ length: 4 * PAGE });
    model.uffd.register({ start: area + PAGE, length: 2 * PAGE }, MISSING);
    expectErrno(() => model.other.register({ start: area, length: 2 * PAGE }, MISSING), EBUSY);
    expectErrno(() => model.other.register({ start: area + 2 * PAGE, length: PAGE }, WP), EBUSY);
    assert.deepEqual(uffdFlags(model, area, area + 4 * PAGE), [0, VM_UFFD_MISSING, 0]);
    // A range that does not overlap is fine.
    assert.equal(model.other.register({ start: area + 3 * PAGE, length: PAGE }, WP), 0x17cn);
  });

  it('unregistering through another uffd is EINVAL and leaves the registration alone', () => {
    const model = twoUffds();
    const area = model.process.mmap({ length: 2 * PAGE });
    model.uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    expectErrno(() => model.other.unregister({ start: area, length: 2 * PAGE }), EINVAL);
    expectErrno(() => model.other.unregister({ start: area + PAGE, length: PAGE }), EINVAL);
    assert.deepEqual(uffdFlags(model, area, area + 2 * PAGE), [VM_UFFD_MISSING]);
  });

  it('unregistering a never-registered range returns 0, through either uffd, twice', () => {
    const model = twoUffds();
    const area = model.process.mmap({ length: 2 * PAGE });
    model.uffd.unregister({ start: area, length: 2 * PAGE });
    model.other.unregister({ start: area, length: 2 * PAGE });
    model.other.unregister({ start: area, length: 2 * PAGE });
    assert.deepEqual(uffdFlags(model, area, area + 2 * PAGE), [0]);
  });

  it('unregistering a range without any vma is EINVAL', () => {
    const model = setup();
    const area = model.process.mmap({ length: 2 * PAGE });
    model.process.munmap(area, 2 * PAGE);
    expectErrno(() => model.uffd.unregister({ start: area, length: 2 * PAGE }), EINVAL);
    expectErrno(() => model.uffd.unregister({ start: area + 1, length: PAGE }), EINVAL);
    expectErrno(() => model.uffd.unregister({ start: area, length: 0 }), EINVAL);
  });

  it('after close, another uffd may register the range', () => {
    const model = twoUffds();
    const area = model.process.mmap({ length: 2 * PAGE });
    model.uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    model.uffd.close();
    assert.deepEqual(uffdFlags(model, area, area + 2 * PAGE), [0]);
    assert.equal(model.other.register({ start: area, length: 2 * PAGE }, MISSING), 0x13cn);
  });
});

describe('hugetlb alignment (§3.2, §3.3, §5.3)', () => {
  for (const kind of [HUGETLB_SHARED, HUGETLB_PRIVATE]) {
    describe(kind.name, () => {
      const cases: readonly (readonly [string, number, number])[] = [
        // name, start offset, length
        ['start 4 KiB past a huge page', PAGE, HUGE],
        ['start 1 MiB past a huge page', HUGE / 2, HUGE],
        ['end 4 KiB past a huge page', 0, HUGE + PAGE],
        ['end 4 KiB short of a huge page', 0, HUGE - PAGE],
        ['4 KiB in all', 0, PAGE],
      ];
      for (const [name, offset, length] of cases) {
        it(`${name} → EINVAL`, () => {
          const model = setup();
          const area = kind.map(model.process, 2);
          expectErrno(() => model.uffd.register({ start: area.address + offset, length }, MISSING), EINVAL);
          assert.deepEqual(uffdFlags(model, area.address, area.address + area.length), [0]);
        });
      }

      it('an end in the hole after the vma needs no huge alignment', () => {
        //   [ hugetlb 2 MiB ] hole
        //   ^ start      end ^ (+4 KiB)
        const model = setup();
        const area = kind.map(model.process, 1);
        model.process.munmap(model.process.mmap({ length: PAGE, fixedAddress: area.address + HUGE }), PAGE);
        assert.equal(model.uffd.register({ start: area.address, length: HUGE + PAGE }, MISSING), 0x10cn);
        assert.deepEqual(uffdFlags(model, area.address, area.address + HUGE), [VM_UFFD_MISSING]);
      });

      it('unregister of 4 KiB at an aligned start is EINVAL (the split would break a huge page)', () => {
        const model = setup();
        const area = kind.map(model.process, 2);
        model.uffd.register({ start: area.address, length: area.length }, MISSING);
        expectErrno(() => model.uffd.unregister({ start: area.address, length: PAGE }), EINVAL);
        expectErrno(() => model.uffd.unregister({ start: area.address + PAGE, length: HUGE }), EINVAL);
        assert.deepEqual(uffdFlags(model, area.address, area.address + area.length), [VM_UFFD_MISSING]);
        model.uffd.unregister({ start: area.address + HUGE, length: HUGE });
        assert.deepEqual(uffdFlags(model, area.address, area.address + area.length), [VM_UFFD_MISSING, 0]);
      });
    });
  }
});

describe('ranges spanning memory types (§3.2)', () => {
  /** An anon page directly below a shmem page: [ anon | shmem ], or the reverse. */
  function span(process: Process, anonFirst: boolean) {
    const base = process.mmap({ length: 2 * PAGE });
    const fd = process.memfd('span', { size: PAGE });
    process.mmap({ length: PAGE, fd, shared: true, fixedAddress: anonFirst ? base + PAGE : base });
    return base;
  }

  for (const anonFirst of [true, false]) {
    const order = anonFirst ? 'anon then shmem' : 'shmem then anon';
    it(`${order}: MISSING → 0x13c, MISSING|WP → 0x17c`, () => {
      const model = setup();
      const base = span(model.process, anonFirst);
      assert.equal(vmaCount(model, base, base + 2 * PAGE), 2);
      assert.equal(model.uffd.register({ start: base, length: 2 * PAGE }, MISSING), 0x13cn);
      assert.equal(model.uffd.register({ start: base, length: 2 * PAGE }, MISSING | WP), 0x17cn);
      assert.deepEqual(uffdFlags(model, base, base + 2 * PAGE), [
        VM_UFFD_MISSING | VM_UFFD_WP,
        VM_UFFD_MISSING | VM_UFFD_WP,
      ]);
    });

    it(`${order}: MINOR → EINVAL because of the anon vma, and neither vma is registered`, () => {
      const model = setup();
      const base = span(model.process, anonFirst);
      expectErrno(() => model.uffd.register({ start: base, length: 2 * PAGE }, MINOR), EINVAL);
      expectErrno(() => model.uffd.register({ start: base, length: 2 * PAGE }, MINOR | MISSING), EINVAL);
      assert.deepEqual(uffdFlags(model, base, base + 2 * PAGE), [0, 0]);
    });
  }

  it('anon then hugetlb: any hugetlb vma switches the mask to the BASIC set (0x10c)', () => {
    //   [ anon 4 KiB ][ hugetlb 2 MiB ]
    const model = setup();
    const huge = HUGETLB_SHARED.map(model.process, 1);
    model.process.mmap({ length: PAGE, fixedAddress: huge.address - PAGE });
    const range = { start: huge.address - PAGE, length: PAGE + HUGE };
    assert.equal(model.uffd.register(range, MISSING), 0x10cn);
    assert.equal(model.uffd.register(range, MISSING | WP), 0x14cn);
    assert.deepEqual(uffdFlags(model, range.start, range.start + range.length), [
      VM_UFFD_MISSING | VM_UFFD_WP,
      VM_UFFD_MISSING | VM_UFFD_WP,
    ]);
  });

  it('each vma is checked in turn: [read-only shmem][anon] with MINOR is EPERM, [anon][read-only shmem] EINVAL', () => {
    for (const readOnlyFirst of [true, false]) {
      const model = setup();
      const base = model.process.mmap({ length: 2 * PAGE });
      const readOnly = model.process.backend.reopen(model.process.memfd('ro', { size: PAGE }), O_RDONLY);
      model.process.backend.mmap({
        address: readOnlyFirst ? base : base + PAGE,
        length: PAGE,
        prot: PROT_READ,
        flags: MAP_SHARED | MAP_FIXED,
        fd: readOnly,
        offset: 0,
      });
      const errno = readOnlyFirst ? EPERM : EINVAL;
      expectErrno(() => model.uffd.register({ start: base, length: 2 * PAGE }, MINOR), errno);
      assert.deepEqual(uffdFlags(model, base, base + 2 * PAGE), [0, 0]);
    }
  });

  it('a failure on a later vma leaves the earlier ones unregistered (checks precede changes)', () => {
    //   [ memfd shared ][ memfd read-only shared ]
    const model = setup();
    const base = model.process.mmap({ length: 2 * PAGE });
    const fd = model.process.memfd('a', { size: PAGE });
    model.process.mmap({ length: PAGE, fd, shared: true, fixedAddress: base });
    const readOnly = model.process.backend.reopen(model.process.memfd('b', { size: PAGE }), O_RDONLY);
    model.process.backend.mmap({
      address: base + PAGE,
      length: PAGE,
      prot: PROT_READ,
      flags: MAP_SHARED | MAP_FIXED,
      fd: readOnly,
      offset: 0,
    });
    expectErrno(() => model.uffd.register({ start: base, length: 2 * PAGE }, MISSING), EPERM);
    assert.deepEqual(uffdFlags(model, base, base + 2 * PAGE), [0, 0]);
  });
});
