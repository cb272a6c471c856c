// userfaultfd(2), /dev/userfaultfd and UFFDIO_API (uapi-facts.md §1.1, §3.0b, §3.1, §7). Every expected
// number comes from the facts, never from the model's own constants, so a wrong constant cannot pass by
// symmetry.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Process } from '../src/api/process.ts';
import {
  encodeUffdioApi,
  encodeUffdioContinue,
  encodeUffdioCopy,
  encodeUffdioMove,
  encodeUffdioPoison,
  encodeUffdioRange,
  encodeUffdioRegister,
  encodeUffdioWriteprotect,
  encodeUffdioZeropage,
} from '../src/uapi/structs.ts';
import { createTestModel, expectErrno, PAGE } from './helpers.ts';
import { modelProcess } from './memkinds.ts';

const EPERM = 1;
const EAGAIN = 11;
const EACCES = 13;
const EINVAL = 22;

const O_RDONLY = 0;
const O_RDWR = 2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const UFFD_USER_MODE_ONLY = 1;

const POLLIN = 0x1;
const POLLERR = 0x8;

const UFFDIO_API = 0xc018aa3f;
const USERFAULTFD_IOC_NEW = 0xaa00;

const FEATURE_EVENT_FORK = 0x2;
const ALL_FEATURES = 0x1ffff;
const API_IOCTLS = 0x8000000000000003n;

function u64s(bytes: Uint8Array): bigint[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.byteLength / 8 }, (_, i) => view.getBigUint64(i * 8, true));
}

function apiArg(api: bigint, features: bigint, ioctls = 0x1234n): Uint8Array {
  return encodeUffdioApi({ api, features, ioctls });
}

describe('userfaultfd(2) flags (§1.1)', () => {
  const accepted: readonly (readonly [string, number])[] = [
    ['0', 0],
    ['O_CLOEXEC', O_CLOEXEC],
    ['O_NONBLOCK', O_NONBLOCK],
    ['UFFD_USER_MODE_ONLY', UFFD_USER_MODE_ONLY],
    ['all three', O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY],
  ];
  for (const [name, flags] of accepted) {
    it(`accepts ${name}`, () => {
      const { process } = createTestModel();
      const fd = process.backend.userfaultfd(flags);
      assert.ok(fd >= 3, `fd ${fd}`);
    });
  }

  const rejected: readonly (readonly [string, number])[] = [
    ['O_RDWR', O_RDWR],
    ['bit 1', 0x2],
    ['O_NONBLOCK|0x10', O_NONBLOCK | 0x10],
    ['bit 31', 0x80000000],
  ];
  for (const [name, flags] of rejected) {
    it(`refuses ${name} with EINVAL`, () => {
      const { process } = createTestModel();
      expectErrno(() => process.backend.userfaultfd(flags), EINVAL);
    });
  }
});

describe('access control (§7)', () => {
  it('an unprivileged caller gets EPERM with the sysctl at 0, unless it asks for UFFD_USER_MODE_ONLY', () => {
    const { backend } = createTestModel();
    assert.equal(backend.kernel.unprivilegedUserfaultfd, 0, 'the default is 0');
    const user = new Process(backend.createProcess({ privileged: false }));
    expectErrno(() => user.backend.userfaultfd(O_CLOEXEC | O_NONBLOCK), EPERM);
    expectErrno(() => user.userfaultfd(), EPERM);
    const uffd = user.userfaultfd({ userModeOnly: true });
    assert.deepEqual(uffd.api(), { features: ALL_FEATURES, ioctls: API_IOCTLS });
  });

  it('vm.unprivileged_userfaultfd=1 lets an unprivileged caller in (option and live sysctl)', () => {
    const { backend } = createTestModel({ unprivilegedUserfaultfd: 1 });
    const user = new Process(backend.createProcess({ privileged: false }));
    assert.ok(user.backend.userfaultfd(0) >= 3);

    const other = createTestModel();
    const second = new Process(other.backend.createProcess({ privileged: false }));
    expectErrno(() => second.backend.userfaultfd(0), EPERM);
    other.backend.kernel.unprivilegedUserfaultfd = 1;
    assert.ok(second.backend.userfaultfd(0) >= 3);
  });

  it('the sysctl check comes before flag validation: EPERM, not EINVAL, for bad flags', () => {
    const { backend } = createTestModel();
    const user = new Process(backend.createProcess({ privileged: false }));
    expectErrno(() => user.backend.userfaultfd(O_RDWR), EPERM);
    // With USER_MODE_ONLY the caller passes the gate and the flags are then checked.
    expectErrno(() => user.backend.userfaultfd(UFFD_USER_MODE_ONLY | O_RDWR), EINVAL);
  });

  it('UFFDIO_API with EVENT_FORK needs CAP_SYS_PTRACE: EPERM and the struct zeroed, even on a legal fd', () => {
    const { backend } = createTestModel();
    const user = new Process(backend.createProcess({ privileged: false }));
    const uffd = user.userfaultfd({ userModeOnly: true });
    const arg = apiArg(0xaan, BigInt(FEATURE_EVENT_FORK));
    expectErrno(() => user.backend.ioctl(uffd.fd, UFFDIO_API, arg), EPERM);
    assert.deepEqual(u64s(arg), [0n, 0n, 0n]);
    // The failure left the context uninitialized: a retry without EVENT_FORK works.
    assert.equal(uffd.api().features, ALL_FEATURES);
  });

  it("the checks run in the kernel's order: api, then EVENT_FORK, then unknown bits", () => {
    const { backend } = createTestModel();
    const user = new Process(backend.createProcess({ privileged: false }));
    const uffd = user.userfaultfd({ userModeOnly: true });
    expectErrno(
      () => user.backend.ioctl(uffd.fd, UFFDIO_API, apiArg(0xabn, BigInt(FEATURE_EVENT_FORK))),
      EINVAL,
    );
    expectErrno(
      () => user.backend.ioctl(uffd.fd, UFFDIO_API, apiArg(0xaan, BigInt(FEATURE_EVENT_FORK) | (1n << 17n))),
      EPERM,
    );
  });

  it('EVENT_FORK is fine for a privileged caller', () => {
    const { process } = createTestModel();
    assert.equal(process.userfaultfd().api(['event_fork']).features, ALL_FEATURES);
  });

  it('/dev/userfaultfd: root gets a working uffd, with no sysctl check', () => {
    const { process, backend } = createTestModel();
    assert.equal(backend.kernel.unprivilegedUserfaultfd, 0);
    const uffd = process.userfaultfd({ via: 'dev' });
    assert.deepEqual(uffd.api(), { features: ALL_FEATURES, ioctls: API_IOCTLS });
    const area = process.mmap({ length: 2 * PAGE });
    assert.equal(uffd.register({ start: area, length: 2 * PAGE }, 1), 0x13cn);
  });

  it('/dev/userfaultfd: an unprivileged open fails with EACCES (mode 0600 root)', () => {
    const { backend } = createTestModel({ unprivilegedUserfaultfd: 1 });
    const user = new Process(backend.createProcess({ privileged: false }));
    expectErrno(() => user.userfaultfd({ via: 'dev' }), EACCES);
    expectErrno(() => user.backend.open('/dev/userfaultfd', O_RDWR), EACCES);
  });

  it('/dev/userfaultfd: USERFAULTFD_IOC_NEW validates the flags; any other request is EINVAL', () => {
    const { process } = createTestModel();
    const device = process.backend.open('/dev/userfaultfd', O_RDWR | O_CLOEXEC);
    expectErrno(() => process.backend.ioctl(device, USERFAULTFD_IOC_NEW, O_RDWR), EINVAL);
    expectErrno(() => process.backend.ioctl(device, USERFAULTFD_IOC_NEW, 0x10), EINVAL);
    expectErrno(() => process.backend.ioctl(device, 0xaa01, 0), EINVAL);
    expectErrno(() => process.backend.ioctl(device, UFFDIO_API, apiArg(0xaan, 0n)), EINVAL);
    const fd = process.backend.ioctl(device, USERFAULTFD_IOC_NEW, O_NONBLOCK | UFFD_USER_MODE_ONLY);
    assert.ok(fd >= 3 && fd !== device);
  });
});

describe('UFFDIO_API (§3.1)', () => {
  function fresh() {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    const ioctl = (arg: Uint8Array) => model.process.backend.ioctl(uffd.fd, UFFDIO_API, arg);
    return { ...model, uffd, ioctl };
  }

  it('success: api kept, features = 0x1ffff, ioctls = REGISTER|UNREGISTER|API', () => {
    const { ioctl } = fresh();
    const arg = apiArg(0xaan, 0n);
    assert.equal(ioctl(arg), 0);
    assert.deepEqual(u64s(arg), [0xaan, 0x1ffffn, 0x8000000000000003n]);
  });

  const badApis: readonly bigint[] = [0n, 0xabn, 0xa9n, 0x1aan, 0xffffffffffffffffn];
  for (const api of badApis) {
    it(`api=0x${api.toString(16)}: EINVAL with the whole struct zeroed`, () => {
      const { ioctl } = fresh();
      const arg = apiArg(api, 0x3n, 0x77n);
      expectErrno(() => ioctl(arg), EINVAL);
      assert.deepEqual(u64s(arg), [0n, 0n, 0n]);
    });
  }

  const badFeatures: readonly (readonly [string, bigint])[] = [
    ['bit 17', 1n << 17n],
    ['bit 31 (INITIALIZED)', 1n << 31n],
    ['bit 63', 1n << 63n],
    ['bit 17 with valid bits', (1n << 17n) | 0x1ffffn],
  ];
  for (const [name, features] of badFeatures) {
    it(`features ${name}: EINVAL with the struct zeroed, and the fd stays usable`, () => {
      const { ioctl, uffd } = fresh();
      const arg = apiArg(0xaan, features);
      expectErrno(() => ioctl(arg), EINVAL);
      assert.deepEqual(u64s(arg), [0n, 0n, 0n]);
      // The failure came before initialization, so the handshake can be retried on the same fd.
      assert.deepEqual(uffd.api(), { features: ALL_FEATURES, ioctls: API_IOCTLS });
    });
  }

  it('every known feature bit alone is accepted', () => {
    for (let bit = 0; bit <= 16; bit++) {
      const { ioctl } = fresh();
      const arg = apiArg(0xaan, 1n << BigInt(bit));
      assert.equal(ioctl(arg), 0, `bit ${bit}`);
      assert.deepEqual(u64s(arg), [0xaan, 0x1ffffn, 0x8000000000000003n], `bit ${bit}`);
    }
  });

  it('the context records the requested features plus INITIALIZED; WP_ASYNC adds WP_UNPOPULATED', () => {
    for (const [features, expected] of [
      [0, 0x80000000],
      [0x20, 0x80000020],
      [0x8000, 0x8000a000],
    ] as const) {
      const { process, backend, uffd } = fresh();
      uffd.api(features);
      const ctx = modelProcess(backend, process).uffdFile(uffd.fd)!.ctx;
      assert.equal(ctx.features >>> 0, expected, `features 0x${features.toString(16)}`);
    }
  });

  const seconds: readonly (readonly [string, bigint, bigint])[] = [
    ['features=0 twice', 0n, 0n],
    ['features=0 then PAGEFAULT_FLAG_WP', 0n, 1n],
    ['MISSING_SHMEM then features=0', 0x20n, 0n],
  ];
  for (const [name, first, second] of seconds) {
    it(`a second UFFDIO_API fails with EINVAL and a zeroed struct (${name})`, () => {
      const { ioctl } = fresh();
      assert.equal(ioctl(apiArg(0xaan, first)), 0);
      const arg = apiArg(0xaan, second);
      expectErrno(() => ioctl(arg), EINVAL);
      assert.deepEqual(u64s(arg), [0n, 0n, 0n]);
    });
  }

  it('a bad api on an initialized fd is still EINVAL and leaves it working', () => {
    const { ioctl, process, uffd } = fresh();
    assert.equal(ioctl(apiArg(0xaan, 0n)), 0);
    expectErrno(() => ioctl(apiArg(0xabn, 0n)), EINVAL);
    const area = process.mmap({ length: PAGE });
    assert.equal(uffd.register({ start: area, length: PAGE }, 1), 0x13cn);
  });

  it('a missing argument is EFAULT', () => {
    const { process, uffd } = fresh();
    expectErrno(() => process.backend.ioctl(uffd.fd, UFFDIO_API, null), 14);
    expectErrno(() => process.backend.ioctl(uffd.fd, UFFDIO_API, new Uint8Array(16)), 14);
    // Neither failure initialized anything.
    assert.equal(uffd.api().features, ALL_FEATURES);
  });
});

describe('before UFFDIO_API (§3.0b)', () => {
  function uninitialized() {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    const area = model.process.mmap({ length: 2 * PAGE });
    const source = model.process.mmap({ length: PAGE });
    return { ...model, uffd, area, source };
  }

  const start = (area: number) => ({ start: BigInt(area), len: BigInt(PAGE) });
  // Every range ioctl with otherwise valid arguments; the result fields are preset to 777 to show that they
  // are left alone (the kernel refuses the ioctl before it reads the struct).
  const requests: readonly (readonly [string, number, (area: number, src: number) => Uint8Array, number])[] =
    [
      ['REGISTER', 0xc020aa00, (a) => encodeUffdioRegister({ range: start(a), mode: 1n, ioctls: 777n }), 24],
      ['UNREGISTER', 0x8010aa01, (a) => encodeUffdioRange(start(a)), -1],
      ['WAKE', 0x8010aa02, (a) => encodeUffdioRange(start(a)), -1],
      [
        'COPY',
        0xc028aa03,
        (a, s) =>
          encodeUffdioCopy({ dst: BigInt(a), src: BigInt(s), len: BigInt(PAGE), mode: 0n, copy: 777n }),
        32,
      ],
      [
        'ZEROPAGE',
        0xc020aa04,
        (a) => encodeUffdioZeropage({ range: start(a), mode: 0n, zeropage: 777n }),
        24,
      ],
      [
        'MOVE',
        0xc028aa05,
        (a, s) =>
          encodeUffdioMove({ dst: BigInt(a), src: BigInt(s), len: BigInt(PAGE), mode: 0n, move: 777n }),
        32,
      ],
      ['WRITEPROTECT', 0xc018aa06, (a) => encodeUffdioWriteprotect({ range: start(a), mode: 1n }), -1],
      ['CONTINUE', 0xc020aa07, (a) => encodeUffdioContinue({ range: start(a), mode: 0n, mapped: 777n }), 24],
      ['POISON', 0xc020aa08, (a) => encodeUffdioPoison({ range: start(a), mode: 0n, updated: 777n }), 24],
    ];
  for (const [name, request, encode, fieldOffset] of requests) {
    it(`UFFDIO_${name} is EINVAL and writes nothing back`, () => {
      const { process, uffd, area, source } = uninitialized();
      const arg = encode(area, source);
      const before = arg.slice();
      expectErrno(() => process.backend.ioctl(uffd.fd, request, arg), EINVAL);
      assert.deepEqual(arg, before);
      if (fieldOffset >= 0) {
        const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
        assert.equal(view.getBigInt64(fieldOffset, true), 777n);
      }
    });
  }

  it('read(2) is EINVAL (not EAGAIN) and poll(2) is EPOLLERR', () => {
    const { process, uffd } = uninitialized();
    expectErrno(() => process.backend.read(uffd.fd, 32), EINVAL);
    expectErrno(() => process.backend.read(uffd.fd, 4096), EINVAL);
    assert.equal(uffd.poll(), POLLERR);
  });

  it('after a failed UFFDIO_API the fd is still uninitialized', () => {
    const { process, uffd, area } = uninitialized();
    expectErrno(() => process.backend.ioctl(uffd.fd, UFFDIO_API, apiArg(0xabn, 0n)), EINVAL);
    expectErrno(() => uffd.register({ start: area, length: PAGE }, 1), EINVAL);
    expectErrno(() => process.backend.read(uffd.fd, 32), EINVAL);
    assert.equal(uffd.poll(), POLLERR);
  });
});

describe('read(2) and poll(2) after UFFDIO_API (§3.0b)', () => {
  it('read with count < 32 is EINVAL; with nothing queued it is EAGAIN', () => {
    const { process } = createTestModel();
    const uffd = process.userfaultfd();
    uffd.api();
    for (const count of [0, 1, 31]) expectErrno(() => process.backend.read(uffd.fd, count), EINVAL);
    for (const count of [32, 33, 64, 4096]) expectErrno(() => process.backend.read(uffd.fd, count), EAGAIN);
  });

  it('read returns only whole messages; a count < 32 is EINVAL even with a message queued', async () => {
    const { process, backend } = createTestModel();
    const uffd = process.userfaultfd();
    uffd.api();
    const area = process.mmap({ length: 2 * PAGE });
    uffd.register({ start: area, length: 2 * PAGE }, 1);
    const readers = [0, 1].map((page) =>
      process.thread([{ kind: 'read', address: area + page * PAGE, length: 1 }]),
    );
    await backend.settle();
    expectErrno(() => process.backend.read(uffd.fd, 31), EINVAL);
    // 63 bytes hold one message, not two.
    assert.equal(process.backend.read(uffd.fd, 63).byteLength, 32);
    assert.equal(process.backend.read(uffd.fd, 64).byteLength, 32);
    expectErrno(() => process.backend.read(uffd.fd, 64), EAGAIN);
    uffd.zeropage({ start: area, length: 2 * PAGE });
    for (const reader of readers) assert.equal((await reader.join()).state, 'done');
  });

  it('two pending messages: read(48) returns one, the next read(96) the other', async () => {
    const { process, backend } = createTestModel();
    const uffd = process.userfaultfd();
    uffd.api();
    const area = process.mmap({ length: 2 * PAGE });
    uffd.register({ start: area, length: 2 * PAGE }, 1);
    const readers = [0, 1].map((page) =>
      process.thread([{ kind: 'read', address: area + page * PAGE, length: 1 }]),
    );
    await backend.settle();
    assert.equal(process.backend.read(uffd.fd, 48).byteLength, 32);
    assert.equal(process.backend.read(uffd.fd, 96).byteLength, 32);
    expectErrno(() => process.backend.read(uffd.fd, 96), EAGAIN);
    uffd.zeropage({ start: area, length: 2 * PAGE });
    for (const reader of readers) assert.equal((await reader.join()).faults, 1);
  });

  it('poll: EPOLLERR without O_NONBLOCK; otherwise 0, then EPOLLIN while a fault is unread', async () => {
    const { process, backend } = createTestModel();
    const blocking = process.userfaultfd({ nonblock: false });
    blocking.api();
    assert.equal(blocking.poll(), POLLERR);

    const uffd = process.userfaultfd({ nonblock: true });
    uffd.api();
    assert.equal(uffd.poll(), 0);
    const area = process.mmap({ length: PAGE });
    uffd.register({ start: area, length: PAGE }, 1);
    const reader = process.thread([{ kind: 'read', address: area, length: 1 }]);
    await backend.settle();
    assert.equal(uffd.poll(), POLLIN);
    assert.equal(uffd.readMessages().length, 1);
    // Read but not resolved: nothing to report although the thread still sleeps.
    assert.equal(uffd.poll(), 0);
    assert.equal(reader.state(), 'blocked');
    uffd.zeropage({ start: area, length: PAGE });
    assert.equal((await reader.join()).state, 'done');
  });

  it('a blocking-mode uffd still queues faults that read(2) returns', async () => {
    const { process, backend } = createTestModel();
    const uffd = process.userfaultfd({ nonblock: false });
    uffd.api();
    const area = process.mmap({ length: PAGE });
    uffd.register({ start: area, length: PAGE }, 1);
    const reader = process.thread([{ kind: 'read', address: area, length: 1 }]);
    await backend.settle();
    const messages = uffd.readMessages();
    assert.equal(messages.length, 1);
    assert.deepEqual(messages[0], { event: 'pagefault', flags: 0, address: BigInt(area), ptid: 0 });
    uffd.zeropage({ start: area, length: PAGE });
    assert.equal((await reader.join()).state, 'done');
  });
});

describe('unknown requests (§1.3)', () => {
  const unknown: readonly (readonly [string, number])[] = [
    ['nr 0x09 (post-6.18 DEACTIVATE)', 0xc020aa09],
    ['COPY with the wrong size', 0xc020aa03],
    ['REGISTER with the wrong type byte', 0xc020ab00],
    ['API as _IOR', 0x8018aa3f],
    ['nr 0x3e', 0xc018aa3e],
  ];
  for (const [name, request] of unknown) {
    it(`${name} is EINVAL (not ENOTTY)`, () => {
      const { process } = createTestModel();
      const uffd = process.userfaultfd();
      uffd.api();
      expectErrno(() => process.backend.ioctl(uffd.fd, request, new Uint8Array(64)), EINVAL);
    });
  }

  it('a memfd is not a userfaultfd: UFFDIO_API there is ENOTTY', () => {
    const { process } = createTestModel();
    const fd = process.memfd('plain', { size: PAGE });
    const readOnly = process.backend.reopen(fd, O_RDONLY);
    expectErrno(() => process.backend.ioctl(readOnly, UFFDIO_API, apiArg(0xaan, 0n)), 25);
  });
});
