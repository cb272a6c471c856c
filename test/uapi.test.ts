// Tests of src/uapi: every number is checked against shared/uapi-facts.md (§1, §2, §7) or against the host's
// own tables (os.constants), never against the module itself, so a wrong constant cannot pass by symmetry.

import assert from 'node:assert/strict';
import os from 'node:os';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as uapi from '../src/uapi/index.ts';
import {
  _IOC_DIR,
  _IOC_NR,
  _IOC_READ,
  _IOC_SIZE,
  _IOC_TYPE,
  _IOC_WRITE,
  _IOR,
  _IOWR,
  decodeKvmCreateGuestMemfd,
  decodeUffdioApi,
  decodeUffdioContinue,
  decodeUffdioCopy,
  decodeUffdioMove,
  decodeUffdioPoison,
  decodeUffdioRange,
  decodeUffdioRegister,
  decodeUffdioWriteprotect,
  decodeUffdioZeropage,
  decodeUffdMsg,
  decodeUffdMsgs,
  EAGAIN,
  EEXIST,
  EINVAL,
  ERESTARTSYS,
  ERRNOS,
  EVENT_NAMES,
  encodeKvmCreateGuestMemfd,
  encodeUffdioApi,
  encodeUffdioContinue,
  encodeUffdioCopy,
  encodeUffdioMove,
  encodeUffdioPoison,
  encodeUffdioRange,
  encodeUffdioRegister,
  encodeUffdioWriteprotect,
  encodeUffdioZeropage,
  encodeUffdMsg,
  errnoName,
  errnoNumber,
  eventCode,
  eventName,
  FAULT_FLAG_NAMES,
  FEATURE_BITS,
  FEATURE_NAMES,
  faultFlagBit,
  faultFlagNames,
  featureBit,
  featureNames,
  IOCTL_NAMES,
  IOCTL_REQUESTS,
  ioctlBit,
  ioctlNames,
  KernelError,
  REGISTER_MODE_NAMES,
  registerModeBit,
  registerModeNames,
  SignalError,
  signalName,
  signalNumber,
  strerror,
  TASK_SIZE,
  toU64,
  type UffdMsg,
  u64ToNumber,
  uffdioRequestName,
} from '../src/uapi/index.ts';

const named = uapi as unknown as Readonly<Record<string, unknown>>;

function constant(name: string): unknown {
  assert.ok(Object.hasOwn(named, name), `${name} is exported`);
  return named[name];
}

function u64At(bytes: Uint8Array, offset: number): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(offset, true);
}

function s64At(bytes: Uint8Array, offset: number): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigInt64(offset, true);
}

function u32At(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(offset, true);
}

// Field markers whose bytes all differ, so a field written at the wrong offset cannot match by accident.
function marker(field: number): bigint {
  let value = 0n;
  for (let byte = 0; byte < 8; byte++) value |= BigInt(((field + 1) << 4) | byte) << BigInt(8 * byte);
  return value;
}

/** Checks that field number i of a struct holds marker(i) at offsets[i]. */
function expectMarkers(bytes: Uint8Array, offsets: readonly number[]): void {
  for (const [field, offset] of offsets.entries()) {
    assert.equal(u64At(bytes, offset), marker(field), `field ${field} at byte ${offset}`);
  }
}

describe('ioctl request codes (§1.3)', () => {
  const table: readonly (readonly [string, number, number, number, string])[] = [
    // name, request code, command number, struct size, size constant
    ['UFFDIO_REGISTER', 0xc020aa00, 0x00, 32, 'UFFDIO_REGISTER_SIZE'],
    ['UFFDIO_UNREGISTER', 0x8010aa01, 0x01, 16, 'UFFDIO_RANGE_SIZE'],
    ['UFFDIO_WAKE', 0x8010aa02, 0x02, 16, 'UFFDIO_RANGE_SIZE'],
    ['UFFDIO_COPY', 0xc028aa03, 0x03, 40, 'UFFDIO_COPY_SIZE'],
    ['UFFDIO_ZEROPAGE', 0xc020aa04, 0x04, 32, 'UFFDIO_ZEROPAGE_SIZE'],
    ['UFFDIO_MOVE', 0xc028aa05, 0x05, 40, 'UFFDIO_MOVE_SIZE'],
    ['UFFDIO_WRITEPROTECT', 0xc018aa06, 0x06, 24, 'UFFDIO_WRITEPROTECT_SIZE'],
    ['UFFDIO_CONTINUE', 0xc020aa07, 0x07, 32, 'UFFDIO_CONTINUE_SIZE'],
    ['UFFDIO_POISON', 0xc020aa08, 0x08, 32, 'UFFDIO_POISON_SIZE'],
    ['UFFDIO_API', 0xc018aa3f, 0x3f, 24, 'UFFDIO_API_SIZE'],
  ];

  for (const [name, request, nr, size, sizeName] of table) {
    it(`${name} = 0x${request.toString(16)}`, () => {
      assert.equal(constant(name), request);
      assert.equal(constant(`_${name}`), nr);
      assert.equal(_IOC_NR(request), nr);
      assert.equal(_IOC_TYPE(request), 0xaa);
      assert.equal(_IOC_SIZE(request), size);
      // The argument-struct size constant must agree with the size encoded in the request.
      assert.equal(constant(sizeName), size);
      assert.equal(uffdioRequestName(request), name);
    });
  }

  it('UNREGISTER and WAKE keep the historic _IOR direction; the rest are _IOWR', () => {
    assert.equal(_IOC_DIR(uapi.UFFDIO_UNREGISTER), _IOC_READ);
    assert.equal(_IOC_DIR(uapi.UFFDIO_WAKE), _IOC_READ);
    assert.equal(_IOC_DIR(uapi.UFFDIO_COPY), _IOC_READ | _IOC_WRITE);
  });

  it('encodes unsigned 32-bit values and rejects fields that do not fit', () => {
    assert.equal(_IOWR(0xaa, 0x3f, 24), 0xc018aa3f);
    assert.ok(_IOWR(0xaa, 0, 0) > 0);
    assert.equal(_IOR(0xaa, 1, 16), 0x8010aa01);
    assert.throws(() => _IOWR(0xaa, 0x100, 0), RangeError);
    assert.throws(() => _IOWR(0x100, 0, 0), RangeError);
    assert.throws(() => _IOWR(0xaa, 0, 1 << 14), RangeError);
  });

  it('IOCTL_REQUESTS maps every scenario name to its request', () => {
    for (const name of IOCTL_NAMES) {
      assert.equal(IOCTL_REQUESTS[name], constant(`UFFDIO_${name.toUpperCase()}`));
    }
    assert.equal(uffdioRequestName(0xc028aa09), undefined);
  });

  it('USERFAULTFD_IOC_NEW is 0xAA00 and the API magic is 0xAA (§1.1, §7)', () => {
    assert.equal(uapi.USERFAULTFD_IOC_NEW, 0xaa00);
    assert.equal(uapi.UFFD_API, 0xaa);
    assert.equal(uapi.UFFDIO, 0xaa);
    assert.equal(uapi.USERFAULTFD_IOC, 0xaa);
    assert.equal(uapi.UFFD_USER_MODE_ONLY, 1);
    assert.equal(uapi.UFFD_SHARED_FCNTL_FLAGS, 0o2004000);
  });

  it('KVM requests (§9)', () => {
    assert.equal(uapi.KVM_GET_API_VERSION, 0xae00);
    assert.equal(uapi.KVM_CREATE_VM, 0xae01);
    assert.equal(uapi.KVM_CHECK_EXTENSION, 0xae03);
    assert.equal(uapi.KVM_CREATE_GUEST_MEMFD, 0xc040aed4);
    assert.equal(_IOC_SIZE(uapi.KVM_CREATE_GUEST_MEMFD), uapi.KVM_CREATE_GUEST_MEMFD_SIZE);
    assert.equal(uapi.KVM_CAP_GUEST_MEMFD, 234);
    assert.equal(uapi.KVM_CAP_GUEST_MEMFD_FLAGS, 244);
    assert.equal(uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED, 0x3);
  });
});

describe('bit sets (§1.2–§1.6)', () => {
  it('ioctl sets', () => {
    assert.equal(uapi.UFFD_API_IOCTLS, 0x8000000000000003n);
    assert.equal(uapi.UFFD_API_RANGE_IOCTLS, 0x1fcn);
    assert.equal(uapi.UFFD_API_RANGE_IOCTLS_BASIC, 0x1ccn);
    assert.equal(uapi.UFFD_API_IOCTLS | uapi.UFFD_API_RANGE_IOCTLS, 0x80000000000001ffn);
  });

  it('features: bits 0–16, 0x1ffff in all, INITIALIZED is bit 31', () => {
    assert.equal(uapi.UFFD_API_FEATURES, 0x1ffff);
    assert.equal(uapi.UFFD_FEATURE_PAGEFAULT_FLAG_WP, 0x1);
    assert.equal(uapi.UFFD_FEATURE_MISSING_SHMEM, 0x20);
    assert.equal(uapi.UFFD_FEATURE_THREAD_ID, 0x100);
    assert.equal(uapi.UFFD_FEATURE_WP_ASYNC, 0x8000);
    assert.equal(uapi.UFFD_FEATURE_MOVE, 0x10000);
    assert.equal(uapi.UFFD_FEATURE_INITIALIZED, 0x80000000);
    let all = 0;
    FEATURE_NAMES.forEach((name, bit) => {
      const value = constant(`UFFD_FEATURE_${name.toUpperCase()}`);
      assert.equal(value, 2 ** bit, name);
      all |= value as number;
    });
    assert.equal(all, 0x1ffff);
  });

  it('register modes, mode flags, events and fault flags', () => {
    assert.equal(uapi.UFFD_API_REGISTER_MODES, 0x7);
    assert.equal(uapi.UFFDIO_REGISTER_MODE_MINOR, 4);
    assert.equal(uapi.UFFDIO_COPY_MODE_WP, 2);
    assert.equal(uapi.UFFDIO_WRITEPROTECT_MODE_WP, 1);
    assert.equal(uapi.UFFDIO_WRITEPROTECT_MODE_DONTWAKE, 2);
    assert.equal(uapi.UFFDIO_CONTINUE_MODE_WP, 2);
    assert.equal(uapi.UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, 2);
    assert.deepEqual(
      [
        uapi.UFFD_EVENT_PAGEFAULT,
        uapi.UFFD_EVENT_FORK,
        uapi.UFFD_EVENT_REMAP,
        uapi.UFFD_EVENT_REMOVE,
        uapi.UFFD_EVENT_UNMAP,
      ],
      [0x12, 0x13, 0x14, 0x15, 0x16],
    );
    assert.deepEqual(
      [uapi.UFFD_PAGEFAULT_FLAG_WRITE, uapi.UFFD_PAGEFAULT_FLAG_WP, uapi.UFFD_PAGEFAULT_FLAG_MINOR],
      [1, 2, 4],
    );
  });

  it('the mode flags each range ioctl takes, by name and as masks (§1.5)', () => {
    // The one table the scenario schema, the scenario runner and the model's EINVAL checks read.
    assert.deepEqual(uapi.UFFDIO_MODES, {
      copy: { dontwake: 1, wp: 2 },
      zeropage: { dontwake: 1 },
      continue: { dontwake: 1, wp: 2 },
      writeprotect: { wp: 1, dontwake: 2 },
      poison: { dontwake: 1 },
      move: { dontwake: 1, allow_src_holes: 2 },
    });
    assert.deepEqual(uapi.UFFDIO_MODE_MASKS, {
      copy: 3,
      zeropage: 1,
      continue: 3,
      writeprotect: 3,
      poison: 1,
      move: 3,
    });
  });

  it('memory-syscall constants', () => {
    assert.equal(TASK_SIZE, 0x7ffffffff000);
    assert.equal(uapi.PAGE_SIZE, 4096);
    assert.equal(uapi.HPAGE_PMD_SIZE, 2 * 1024 * 1024);
    assert.equal(uapi.HPAGE_PUD_SIZE, 1024 * 1024 * 1024);
    // hugetlb_encode.h: log2(size) << 26.
    assert.equal(uapi.MAP_HUGE_2MB, 0x54000000);
    assert.equal(uapi.MAP_HUGE_1GB, 0x78000000);
    assert.equal(uapi.MFD_HUGE_2MB, uapi.MAP_HUGE_2MB);
    assert.equal(uapi.MAP_FIXED_NOREPLACE, 0x100000);
    assert.equal(uapi.MADV_DONTNEED, 4);
    assert.equal(uapi.MADV_REMOVE, 9);
    assert.equal(uapi.MADV_COLLAPSE, 25);
    assert.equal(uapi.MREMAP_DONTUNMAP, 4);
    assert.equal(uapi.POLLRDNORM, 0x40);
  });
});

describe('struct layouts (§2)', () => {
  it('uffdio_api: api@0 features@8 ioctls@16, 24 bytes, little-endian', () => {
    const bytes = encodeUffdioApi({ api: 0xaan, features: 0x1ffffn, ioctls: 0x8000000000000003n });
    assert.equal(bytes.byteLength, 24);
    assert.deepEqual([...bytes.subarray(0, 2)], [0xaa, 0x00]);
    assert.equal(u64At(bytes, 8), 0x1ffffn);
    assert.deepEqual([...bytes.subarray(16, 24)], [3, 0, 0, 0, 0, 0, 0, 0x80]);
  });

  it('uffdio_range: start@0 len@8, 16 bytes', () => {
    const bytes = encodeUffdioRange({ start: marker(0), len: marker(1) });
    assert.equal(bytes.byteLength, 16);
    assert.equal(u64At(bytes, 0), marker(0));
    assert.equal(u64At(bytes, 8), marker(1));
  });

  it('uffdio_register: range@0 mode@16 ioctls@24, 32 bytes', () => {
    const value = { range: { start: marker(0), len: marker(1) }, mode: marker(2), ioctls: marker(3) };
    const bytes = encodeUffdioRegister(value);
    assert.equal(bytes.byteLength, 32);
    expectMarkers(bytes, [0, 8, 16, 24]);
    assert.equal(uapi.UFFDIO_REGISTER_IOCTLS_OFFSET, 24);
  });

  it('uffdio_copy: dst@0 src@8 len@16 mode@24 copy@32 (s64), 40 bytes', () => {
    const bytes = encodeUffdioCopy({
      dst: marker(0),
      src: marker(1),
      len: marker(2),
      mode: marker(3),
      copy: -17n,
    });
    assert.equal(bytes.byteLength, 40);
    expectMarkers(bytes, [0, 8, 16, 24]);
    // -EEXIST is stored in two's complement.
    assert.deepEqual([...bytes.subarray(32, 40)], [0xef, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert.equal(decodeUffdioCopy(bytes).copy, -17n);
    assert.equal(uapi.UFFDIO_COPY_COPY_OFFSET, 32);
  });

  it('uffdio_zeropage: range@0 mode@16 zeropage@24 (s64), 32 bytes', () => {
    const bytes = encodeUffdioZeropage({
      range: { start: marker(0), len: marker(1) },
      mode: marker(2),
      zeropage: -11n,
    });
    assert.equal(bytes.byteLength, 32);
    expectMarkers(bytes, [0, 8, 16]);
    assert.equal(s64At(bytes, 24), -11n);
    assert.equal(uapi.UFFDIO_ZEROPAGE_ZEROPAGE_OFFSET, 24);
  });

  it('uffdio_writeprotect: range@0 mode@16, 24 bytes', () => {
    const bytes = encodeUffdioWriteprotect({ range: { start: marker(0), len: marker(1) }, mode: marker(2) });
    assert.equal(bytes.byteLength, 24);
    expectMarkers(bytes, [0, 8, 16]);
  });

  it('uffdio_continue: range@0 mode@16 mapped@24 (s64), 32 bytes', () => {
    const bytes = encodeUffdioContinue({
      range: { start: marker(0), len: marker(1) },
      mode: marker(2),
      mapped: -1n,
    });
    assert.equal(bytes.byteLength, 32);
    expectMarkers(bytes, [0, 8, 16]);
    assert.equal(u64At(bytes, 24), 0xffffffffffffffffn);
    assert.equal(uapi.UFFDIO_CONTINUE_MAPPED_OFFSET, 24);
  });

  it('uffdio_poison: range@0 mode@16 updated@24 (s64), 32 bytes', () => {
    const bytes = encodeUffdioPoison({
      range: { start: marker(0), len: marker(1) },
      mode: marker(2),
      updated: 4096n,
    });
    assert.equal(bytes.byteLength, 32);
    expectMarkers(bytes, [0, 8, 16]);
    assert.equal(u64At(bytes, 24), 4096n);
    assert.equal(uapi.UFFDIO_POISON_UPDATED_OFFSET, 24);
  });

  it('uffdio_move: dst@0 src@8 len@16 mode@24 move@32 (s64), 40 bytes', () => {
    const bytes = encodeUffdioMove({
      dst: marker(0),
      src: marker(1),
      len: marker(2),
      mode: marker(3),
      move: -16n,
    });
    assert.equal(bytes.byteLength, 40);
    expectMarkers(bytes, [0, 8, 16, 24]);
    assert.equal(s64At(bytes, 32), -16n);
    assert.equal(uapi.UFFDIO_MOVE_MOVE_OFFSET, 32);
  });

  it('kvm_create_guest_memfd: size@0 flags@8 reserved[6]@16, 64 bytes', () => {
    const bytes = encodeKvmCreateGuestMemfd({ size: marker(0), flags: marker(1), reserved: [marker(2)] });
    assert.equal(bytes.byteLength, 64);
    assert.equal(u64At(bytes, 0), marker(0));
    assert.equal(u64At(bytes, 8), marker(1));
    assert.equal(u64At(bytes, 16), marker(2));
    // Reserved entries that were not given are zero.
    assert.ok(bytes.subarray(24).every((byte) => byte === 0));
    assert.equal(decodeKvmCreateGuestMemfd(bytes).reserved.length, 6);
    assert.throws(
      () => encodeKvmCreateGuestMemfd({ size: 0n, flags: 0n, reserved: [0n, 0n, 0n, 0n, 0n, 0n, 0n] }),
      RangeError,
    );
  });

  it('encodes into a caller buffer, including a view with a non-zero byteOffset', () => {
    const backing = new Uint8Array(64).fill(0xee);
    const view = backing.subarray(8, 48);
    const out = encodeUffdioCopy({ dst: 1n, src: 2n, len: 3n, mode: 4n, copy: 5n }, view);
    assert.equal(out, view);
    assert.equal(u64At(backing, 8), 1n);
    assert.equal(u64At(backing, 40), 5n);
    assert.equal(backing[7], 0xee);
    assert.equal(backing[48], 0xee);
    assert.deepEqual(decodeUffdioCopy(view), { dst: 1n, src: 2n, len: 3n, mode: 4n, copy: 5n });
  });

  it('throws RangeError on short buffers', () => {
    const decoders: readonly [(bytes: Uint8Array) => unknown, number][] = [
      [decodeUffdioApi, 24],
      [decodeUffdioRange, 16],
      [decodeUffdioRegister, 32],
      [decodeUffdioCopy, 40],
      [decodeUffdioZeropage, 32],
      [decodeUffdioWriteprotect, 24],
      [decodeUffdioContinue, 32],
      [decodeUffdioPoison, 32],
      [decodeUffdioMove, 40],
      [decodeKvmCreateGuestMemfd, 64],
      [decodeUffdMsg, 32],
    ];
    for (const [decode, size] of decoders) {
      assert.throws(() => decode(new Uint8Array(size - 1)), RangeError, decode.name);
      assert.doesNotThrow(() => decode(new Uint8Array(size)), decode.name);
    }
    assert.throws(() =>
      encodeUffdioCopy({ dst: 0n, src: 0n, len: 0n, mode: 0n, copy: 0n }, new Uint8Array(32)),
    );
  });
});

describe('uffd_msg (§2.1)', () => {
  it('pagefault: event@0, flags@8, address@16, ptid@24, everything else zero', () => {
    const into = new Uint8Array(32).fill(0xff);
    encodeUffdMsg({ event: 'pagefault', flags: 3, address: 0x7f0000001000n, ptid: 4242 }, into);
    assert.equal(into[0], 0x12);
    assert.deepEqual([...into.subarray(1, 8)], [0, 0, 0, 0, 0, 0, 0]);
    assert.equal(u64At(into, 8), 3n);
    assert.equal(u64At(into, 16), 0x7f0000001000n);
    assert.equal(u32At(into, 24), 4242);
    assert.deepEqual([...into.subarray(28, 32)], [0, 0, 0, 0]);
  });

  it('fork: ufd@8; remap: from@8 to@16 len@24; remove/unmap: start@8 end@16', () => {
    const fork = encodeUffdMsg({ event: 'fork', ufd: 7 });
    assert.equal(fork[0], 0x13);
    assert.equal(u32At(fork, 8), 7);
    assert.ok(fork.subarray(12).every((byte) => byte === 0));

    const remap = encodeUffdMsg({ event: 'remap', from: marker(0), to: marker(1), len: marker(2) });
    assert.equal(remap[0], 0x14);
    expectMarkers(remap, [8, 16, 24]);

    for (const [event, code] of [
      ['remove', 0x15],
      ['unmap', 0x16],
    ] as const) {
      const bytes = encodeUffdMsg({ event, start: 0x1000n, end: 0x3000n });
      assert.equal(bytes[0], code);
      assert.equal(u64At(bytes, 8), 0x1000n);
      assert.equal(u64At(bytes, 16), 0x3000n);
      assert.equal(u64At(bytes, 24), 0n);
    }
  });

  it('writes at an offset without touching neighbouring messages', () => {
    const buffer = new Uint8Array(96).fill(0xab);
    encodeUffdMsg({ event: 'fork', ufd: 9 }, buffer, 32);
    assert.ok(buffer.subarray(0, 32).every((byte) => byte === 0xab));
    assert.ok(buffer.subarray(64).every((byte) => byte === 0xab));
    assert.deepEqual(decodeUffdMsg(buffer, 32), { event: 'fork', ufd: 9 });
    assert.throws(() => encodeUffdMsg({ event: 'fork', ufd: 9 }, buffer, 65), RangeError);
  });

  it('decodes unknown event codes and ignores reserved bytes', () => {
    const bytes = new Uint8Array(32);
    bytes[0] = 0x11;
    assert.deepEqual(decodeUffdMsg(bytes), { event: 'unknown', code: 0x11 });
    bytes[0] = 0x13;
    bytes[1] = 0xff;
    bytes[4] = 0xff;
    assert.deepEqual(decodeUffdMsg(bytes), { event: 'fork', ufd: 0 });
  });

  it('rejects values that would not survive the round trip', () => {
    assert.throws(() => encodeUffdMsg({ event: 'unknown', code: 0x12 }), RangeError);
    assert.throws(() => encodeUffdMsg({ event: 'unknown', code: 256 }), RangeError);
    assert.throws(() => encodeUffdMsg({ event: 'fork', ufd: -1 }), RangeError);
    assert.throws(
      () => encodeUffdMsg({ event: 'pagefault', flags: 1, address: 0n, ptid: 2 ** 32 }),
      RangeError,
    );
    assert.throws(() => encodeUffdMsg({ event: 'pagefault', flags: -1, address: 0n, ptid: 0 }), RangeError);
  });

  it('decodeUffdMsgs splits a read() buffer and refuses partial messages', () => {
    const msgs: UffdMsg[] = [
      { event: 'pagefault', flags: 0, address: 0x1000n, ptid: 0 },
      { event: 'remove', start: 0x2000n, end: 0x4000n },
      { event: 'unmap', start: 0x5000n, end: 0x6000n },
    ];
    const buffer = new Uint8Array(96);
    for (const [index, msg] of msgs.entries()) encodeUffdMsg(msg, buffer, 32 * index);
    assert.deepEqual(decodeUffdMsgs(buffer), msgs);
    assert.deepEqual(decodeUffdMsgs(new Uint8Array(0)), []);
    assert.throws(() => decodeUffdMsgs(new Uint8Array(33)), RangeError);
  });
});

describe('encode∘decode is the identity (fast-check)', () => {
  const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
  const s64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
  const u32 = fc.bigInt({ min: 0n, max: 0xffffffffn }).map(Number);
  // deepEqual compares prototypes, and fast-check may otherwise build records with a null prototype.
  const record = <T extends object>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> =>
    fc.record(model, { noNullPrototype: true }) as fc.Arbitrary<T>;
  const range = record({ start: u64, len: u64 });

  function roundTrip<T>(
    arbitrary: fc.Arbitrary<T>,
    encode: (v: T) => Uint8Array,
    decode: (b: Uint8Array) => T,
  ) {
    fc.assert(fc.property(arbitrary, (value) => assert.deepEqual(decode(encode(value)), value)));
  }

  it('uffdio_api', () => {
    roundTrip(record({ api: u64, features: u64, ioctls: u64 }), encodeUffdioApi, decodeUffdioApi);
  });
  it('uffdio_range', () => {
    roundTrip(range, encodeUffdioRange, decodeUffdioRange);
  });
  it('uffdio_register', () => {
    roundTrip(record({ range, mode: u64, ioctls: u64 }), encodeUffdioRegister, decodeUffdioRegister);
  });
  it('uffdio_copy', () => {
    roundTrip(
      record({ dst: u64, src: u64, len: u64, mode: u64, copy: s64 }),
      encodeUffdioCopy,
      decodeUffdioCopy,
    );
  });
  it('uffdio_zeropage', () => {
    roundTrip(record({ range, mode: u64, zeropage: s64 }), encodeUffdioZeropage, decodeUffdioZeropage);
  });
  it('uffdio_writeprotect', () => {
    roundTrip(record({ range, mode: u64 }), encodeUffdioWriteprotect, decodeUffdioWriteprotect);
  });
  it('uffdio_continue', () => {
    roundTrip(record({ range, mode: u64, mapped: s64 }), encodeUffdioContinue, decodeUffdioContinue);
  });
  it('uffdio_poison', () => {
    roundTrip(record({ range, mode: u64, updated: s64 }), encodeUffdioPoison, decodeUffdioPoison);
  });
  it('uffdio_move', () => {
    roundTrip(
      record({ dst: u64, src: u64, len: u64, mode: u64, move: s64 }),
      encodeUffdioMove,
      decodeUffdioMove,
    );
  });
  it('kvm_create_guest_memfd', () => {
    roundTrip(
      record({ size: u64, flags: u64, reserved: fc.array(u64, { minLength: 6, maxLength: 6 }) }),
      encodeKvmCreateGuestMemfd,
      decodeKvmCreateGuestMemfd,
    );
  });
  it('uffd_msg of every kind', () => {
    const msg: fc.Arbitrary<UffdMsg> = fc.oneof(
      record({
        event: fc.constant('pagefault' as const),
        flags: fc.maxSafeNat(),
        address: u64,
        ptid: u32,
      }),
      record({ event: fc.constant('fork' as const), ufd: u32 }),
      record({ event: fc.constant('remap' as const), from: u64, to: u64, len: u64 }),
      record({ event: fc.constantFrom('remove' as const, 'unmap' as const), start: u64, end: u64 }),
      record({
        event: fc.constant('unknown' as const),
        code: fc.integer({ min: 0, max: 255 }).filter((code) => code < 0x12 || code > 0x16),
      }),
    );
    roundTrip(
      msg,
      (value) => encodeUffdMsg(value),
      (bytes) => decodeUffdMsg(bytes),
    );
    fc.assert(
      fc.property(fc.array(msg, { maxLength: 8 }), (msgs) => {
        const buffer = new Uint8Array(32 * msgs.length);
        for (const [index, value] of msgs.entries()) encodeUffdMsg(value, buffer, 32 * index);
        assert.deepEqual(decodeUffdMsgs(buffer), msgs);
      }),
    );
  });
});

describe('u64 helpers', () => {
  it('toU64 wraps like a C cast and rejects fractions', () => {
    assert.equal(toU64(-1), 2n ** 64n - 1n);
    assert.equal(toU64(-17n), 2n ** 64n - 17n);
    assert.equal(toU64(4096), 4096n);
    assert.equal(toU64(2n ** 64n + 5n), 5n);
    assert.throws(() => toU64(1.5), RangeError);
  });

  it('u64ToNumber is exact below 2**53 and stays above TASK_SIZE beyond it', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 53n - 1n }), (value) => {
        assert.equal(BigInt(u64ToNumber(value)), value);
      }),
    );
    fc.assert(
      fc.property(fc.bigInt({ min: 2n ** 53n, max: 2n ** 64n - 1n }), (value) => {
        assert.ok(u64ToNumber(value) > TASK_SIZE);
      }),
    );
    assert.equal(u64ToNumber(-1n), 2 ** 64);
  });
});

describe('name tables', () => {
  const unknownNames = ['', 'toString', '__proto__', 'constructor', 'hasOwnProperty', 'MOVE', 'Move', 'nope'];

  it('features', () => {
    assert.equal(FEATURE_NAMES.length, 17);
    for (const name of FEATURE_NAMES) {
      const bit = featureBit(name);
      assert.equal(bit, constant(`UFFD_FEATURE_${name.toUpperCase()}`));
      assert.equal(bit, FEATURE_BITS[name]);
      assert.deepEqual(featureNames(bit ?? 0), [name]);
    }
    assert.deepEqual(featureNames(uapi.UFFD_API_FEATURES), [...FEATURE_NAMES]);
    assert.deepEqual(featureNames(0), []);
    assert.deepEqual(featureNames(0x8000a000), ['wp_unpopulated', 'wp_async', '0x80000000']);
    for (const name of unknownNames) assert.equal(featureBit(name), undefined, name);
    assert.throws(() => featureNames(-1), RangeError);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x1ffff }), (mask) => {
        const sum = featureNames(mask).reduce((acc, name) => acc + (featureBit(name) ?? Number.NaN), 0);
        assert.equal(sum, mask);
      }),
    );
  });

  it('ioctls', () => {
    assert.deepEqual(
      [...IOCTL_NAMES],
      [
        'register',
        'unregister',
        'wake',
        'copy',
        'zeropage',
        'move',
        'writeprotect',
        'continue',
        'poison',
        'api',
      ],
    );
    for (const name of IOCTL_NAMES) {
      const nr = constant(`_UFFDIO_${name.toUpperCase()}`) as number;
      assert.equal(ioctlBit(name), 1n << BigInt(nr));
    }
    assert.deepEqual(ioctlNames(uapi.UFFD_API_IOCTLS), ['register', 'unregister', 'api']);
    assert.deepEqual(ioctlNames(0x13cn), ['wake', 'copy', 'zeropage', 'move', 'poison']);
    assert.deepEqual(ioctlNames(0x1ccn), ['wake', 'copy', 'writeprotect', 'continue', 'poison']);
    assert.deepEqual(ioctlNames(1n << 9n), ['0x200']);
    for (const name of unknownNames) assert.equal(ioctlBit(name), undefined, name);
  });

  it('events', () => {
    assert.deepEqual([...EVENT_NAMES], ['pagefault', 'fork', 'remap', 'remove', 'unmap']);
    for (const name of EVENT_NAMES) {
      const code = eventCode(name);
      assert.equal(code, constant(`UFFD_EVENT_${name.toUpperCase()}`));
      assert.equal(eventName(code ?? -1), name);
    }
    assert.equal(eventName(0x11), undefined);
    assert.equal(eventName(0x17), undefined);
    assert.equal(eventName(0), undefined);
    for (const name of unknownNames) assert.equal(eventCode(name), undefined, name);
  });

  it('fault flags and register modes', () => {
    for (const name of FAULT_FLAG_NAMES) {
      assert.equal(faultFlagBit(name), constant(`UFFD_PAGEFAULT_FLAG_${name.toUpperCase()}`));
    }
    assert.deepEqual(faultFlagNames(3), ['write', 'wp']);
    assert.deepEqual(faultFlagNames(0), []);
    for (const name of REGISTER_MODE_NAMES) {
      assert.equal(registerModeBit(name), constant(`UFFDIO_REGISTER_MODE_${name.toUpperCase()}`));
    }
    assert.deepEqual(registerModeNames(7), ['missing', 'wp', 'minor']);
    assert.deepEqual(registerModeNames(8), ['0x8']);
    for (const name of unknownNames) {
      assert.equal(faultFlagBit(name), undefined, name);
      assert.equal(registerModeBit(name), undefined, name);
    }
  });

  it('signals agree with the host on Linux', (t) => {
    assert.equal(signalName(7), 'SIGBUS');
    assert.equal(signalName(11), 'SIGSEGV');
    assert.equal(signalName(99), 'SIG?99');
    assert.equal(signalNumber('SIGUSR1'), 10);
    assert.equal(signalNumber('USR2'), 12);
    assert.equal(signalNumber('SIGNOPE'), undefined);
    assert.equal(signalNumber(''), undefined);
    if (process.platform !== 'linux') return t.skip('os.constants.signals differ outside Linux');
    for (let signal = 1; signal <= 31; signal++) {
      const name = signalName(signal);
      assert.equal((os.constants.signals as Record<string, number>)[name], signal, name);
    }
  });
});

describe('errno', () => {
  it('names 1..133 round-trip and match the exported constants', () => {
    let namedCount = 0;
    for (let errno = 1; errno <= 133; errno++) {
      const name = errnoName(errno);
      if (errno === 41 || errno === 58) {
        // Linux leaves these two numbers unused.
        assert.equal(name, `E?${errno}`);
        assert.equal(strerror(errno), `Unknown error ${errno}`);
        continue;
      }
      namedCount++;
      assert.match(name, /^E[A-Z0-9]+$/);
      assert.equal(errnoNumber(name), errno, name);
      assert.equal(constant(name), errno, name);
      assert.doesNotMatch(strerror(errno), /^Unknown error/, name);
    }
    assert.equal(namedCount, 131);
    assert.equal(errnoName(133), 'EHWPOISON');
    assert.equal(errnoName(1), 'EPERM');
    assert.equal(errnoName(ERESTARTSYS), 'ERESTARTSYS');
    assert.equal(ERESTARTSYS, 512);
    assert.equal(errnoName(0), 'E?0');
    assert.equal(errnoName(134), 'E?134');
    assert.equal(ERRNOS.length, 132);
  });

  it('agrees with the host errno table on Linux', (t) => {
    if (process.platform !== 'linux') return t.skip('os.constants.errno differs outside Linux');
    for (const [name, errno] of Object.entries(os.constants.errno)) {
      assert.equal(errnoNumber(name), errno, name);
    }
  });

  it('aliases and unknown names', () => {
    assert.equal(errnoNumber('EWOULDBLOCK'), EAGAIN);
    assert.equal(errnoNumber('EDEADLOCK'), 35);
    assert.equal(errnoNumber('ENOTSUP'), 95);
    assert.equal(errnoName(EAGAIN), 'EAGAIN');
    for (const name of ['', 'E?41', 'toString', '__proto__', 'einval'])
      assert.equal(errnoNumber(name), undefined);
  });

  it('strerror uses glibc texts', () => {
    assert.equal(strerror(EINVAL), 'Invalid argument');
    assert.equal(strerror(EEXIST), 'File exists');
    assert.equal(strerror(EAGAIN), 'Resource temporarily unavailable');
    assert.equal(strerror(14), 'Bad address');
    assert.equal(strerror(3), 'No such process');
    assert.equal(strerror(16), 'Device or resource busy');
    assert.equal(strerror(12), 'Cannot allocate memory');
    assert.equal(strerror(1), 'Operation not permitted');
    assert.equal(strerror(95), 'Operation not supported');
    assert.equal(strerror(133), 'Memory page has hardware error');
    assert.equal(strerror(9999), 'Unknown error 9999');
  });
});

describe('KernelError and SignalError', () => {
  it('formats like a Node system error with every part', () => {
    const error = new KernelError({
      errno: EINVAL,
      syscall: 'ioctl(UFFDIO_COPY)',
      argument: 'dst',
      reason: 'not page aligned',
    });
    assert.equal(error.message, 'EINVAL: Invalid argument, ioctl(UFFDIO_COPY) dst: not page aligned');
    assert.equal(error.name, 'KernelError');
    assert.equal(error.errno, 22);
    assert.equal(error.code, 'EINVAL');
    assert.equal(error.syscall, 'ioctl(UFFDIO_COPY)');
    assert.equal(error.argument, 'dst');
    assert.equal(error.reason, 'not page aligned');
    assert.equal(error.progress, undefined);
    assert.ok(error instanceof Error);
    assert.match(error.stack ?? '', /^KernelError: EINVAL/);
    assert.equal(String(error), `KernelError: ${error.message}`);
  });

  it('omits absent parts cleanly', () => {
    assert.equal(
      new KernelError({ errno: 12, syscall: 'mmap' }).message,
      'ENOMEM: Cannot allocate memory, mmap',
    );
    assert.equal(
      new KernelError({ errno: 17, syscall: 'ioctl(UFFDIO_COPY)', argument: 'dst' }).message,
      'EEXIST: File exists, ioctl(UFFDIO_COPY) dst',
    );
    assert.equal(
      new KernelError({ errno: 16, syscall: 'ioctl(UFFDIO_REGISTER)', reason: 'registered to another uffd' })
        .message,
      'EBUSY: Device or resource busy, ioctl(UFFDIO_REGISTER): registered to another uffd',
    );
    const bare = new KernelError({ errno: 9999, syscall: 'read' });
    assert.equal(bare.code, 'E?9999');
    assert.equal(bare.message, 'E?9999: Unknown error 9999, read');
    assert.ok(!('argument' in bare) && !('reason' in bare));
  });

  it('carries partial progress set by the caller', () => {
    const error = new KernelError({ errno: EAGAIN, syscall: 'ioctl(UFFDIO_COPY)' });
    error.progress = 8192;
    assert.equal(error.progress, 8192);
  });

  it('SignalError names the signal and the si_code', () => {
    const bus = new SignalError({ signal: uapi.SIGBUS, address: 0x7f0000001000, siCode: uapi.BUS_ADRERR });
    assert.equal(bus.message, 'SIGBUS at 0x7f0000001000 (BUS_ADRERR)');
    assert.equal(bus.name, 'SignalError');
    assert.equal(bus.signal, 7);
    assert.equal(bus.signalName, 'SIGBUS');
    assert.equal(bus.address, 0x7f0000001000);
    assert.equal(bus.siCode, 2);
    assert.ok(bus instanceof Error);
    const segv = new SignalError({ signal: uapi.SIGSEGV, address: 0x1000, siCode: uapi.SEGV_MAPERR });
    assert.equal(segv.message, 'SIGSEGV at 0x1000 (SEGV_MAPERR)');
    const poison = new SignalError({ signal: uapi.SIGBUS, address: 0x2000, siCode: uapi.BUS_MCEERR_AR });
    assert.equal(poison.message, 'SIGBUS at 0x2000 (BUS_MCEERR_AR)');
  });
});
