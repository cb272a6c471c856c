/**
 * guest_memfd in the model: the Linux 6.18 behaviour of uapi-facts.md §9, and
 * userfaultfd MINOR and MISSING through the final vm_uffd_ops (version 7.1),
 * including a 64 MiB snapshot restore each way with every byte verified.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Uffd } from '../src/api/process.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  ioctlNames,
  KVM_CAP_GUEST_MEMFD,
  KVM_CAP_GUEST_MEMFD_FLAGS,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  O_RDWR,
  UFFD_FEATURE_WP_ASYNC,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
} from '../src/uapi/constants.ts';
import { EINVAL, ENODEV, EOPNOTSUPP, ESPIPE, SignalError } from '../src/uapi/errno.ts';
import { createTestModel, expectErrno, MiB, PAGE } from './helpers.ts';

const ALL_MODES = [1, 2, 3, 4, 5, 6, 7];

describe('guest_memfd on Linux 6.18 (§9)', () => {
  it('KVM reports API version 12 and the guest_memfd capabilities', () => {
    const { process } = createTestModel();
    const kvm = process.backend.open('/dev/kvm', O_RDWR);
    assert.equal(process.backend.ioctl(kvm, KVM_GET_API_VERSION, 0), 12);
    assert.equal(process.backend.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD), 1);
    assert.equal(process.backend.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS), 3);
    const vm = process.backend.ioctl(kvm, KVM_CREATE_VM, 0);
    assert.equal(process.backend.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS), 3);
  });

  it('without GUEST_MEMFD_FLAG_MMAP, mmap fails with ENODEV', () => {
    const { process } = createTestModel();
    for (const initShared of [false, true]) {
      const fd = process.guestMemfd({ size: 4 * PAGE, mmap: false, initShared });
      expectErrno(() => process.mmap({ length: 4 * PAGE, fd, shared: true }), ENODEV);
    }
  });

  it('MAP_PRIVATE fails with EINVAL; without INIT_SHARED a touch is SIGBUS; with it the touch works', () => {
    const { process } = createTestModel();
    const privateOnly = process.guestMemfd({ size: 4 * PAGE, mmap: true, initShared: false });
    expectErrno(() => process.mmap({ length: 4 * PAGE, fd: privateOnly, shared: false }), EINVAL);
    const area = process.mmap({ length: 4 * PAGE, fd: privateOnly, shared: true });
    assert.throws(
      () => process.read(area, 1),
      (error) => error instanceof SignalError && error.signalName === 'SIGBUS',
    );
    const shared = process.guestMemfd({ size: 4 * PAGE });
    const view = process.mmap({ length: 4 * PAGE, fd: shared, shared: true });
    process.write(view, new Uint8Array([42]));
    assert.equal(process.read(view, 1)[0], 42);
  });

  it('fallocate: mode 0 is EOPNOTSUPP, KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE work; pwrite is ESPIPE', () => {
    const { process } = createTestModel();
    const fd = process.guestMemfd({ size: 4 * PAGE });
    expectErrno(() => process.fallocate(fd, 0, 0, PAGE), EOPNOTSUPP);
    process.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE);
    process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE);
    expectErrno(() => process.pwrite(fd, new Uint8Array(PAGE), 0), ESPIPE);
  });

  it('userfaultfd registration fails with EINVAL in every mode, except WP alone under WP_ASYNC', () => {
    const { process } = createTestModel();
    const fd = process.guestMemfd({ size: 4 * PAGE });
    const area = process.mmap({ length: 4 * PAGE, fd, shared: true });
    const uffd = process.userfaultfd();
    uffd.api();
    for (const mode of ALL_MODES)
      expectErrno(() => uffd.register({ start: area, length: 4 * PAGE }, mode), EINVAL);
    const tracking = process.userfaultfd();
    tracking.api(UFFD_FEATURE_WP_ASYNC);
    const ioctls = tracking.register({ start: area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_WP);
    assert.equal(ioctls, 0x17cn);
    expectErrno(() => tracking.copyBytes(area, new Uint8Array(PAGE)), EINVAL);
    expectErrno(() => tracking.continue({ start: area, length: PAGE }), EINVAL);
  });
});

describe('guest_memfd with the final vm_uffd_ops (7.1)', () => {
  it('registers MISSING and MINOR on INIT_SHARED files only, never WP', () => {
    const { process } = createTestModel({ version: '7.1' });
    const fd = process.guestMemfd({ size: 4 * PAGE });
    const area = process.mmap({ length: 4 * PAGE, fd, shared: true });
    const uffd = process.userfaultfd();
    uffd.api();
    const both = uffd.register(
      { start: area, length: 4 * PAGE },
      UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
    );
    assert.deepEqual(ioctlNames(both), ['wake', 'copy', 'zeropage', 'continue']);
    expectErrno(() => uffd.register({ start: area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_WP), EINVAL);
    const unshared = process.guestMemfd({ size: 4 * PAGE, mmap: true, initShared: false });
    const privateArea = process.mmap({ length: 4 * PAGE, fd: unshared, shared: true });
    expectErrno(
      () => uffd.register({ start: privateArea, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MINOR),
      EINVAL,
    );
  });

  it('the 6.18 behaviour can be chosen on 7.1 with uffdGuestMemfd: false', () => {
    const { process } = createTestModel({ version: '7.1', uffdGuestMemfd: false });
    const fd = process.guestMemfd({ size: PAGE });
    const area = process.mmap({ length: PAGE, fd, shared: true });
    const uffd = process.userfaultfd();
    uffd.api();
    expectErrno(() => uffd.register({ start: area, length: PAGE }, UFFDIO_REGISTER_MODE_MINOR), EINVAL);
  });

  it('write() population needs page-aligned offset and length and shared pages', () => {
    const { process } = createTestModel({ version: '7.1' });
    const fd = process.guestMemfd({ size: 4 * PAGE });
    expectErrno(() => process.writeFile(fd, new Uint8Array(100)), EINVAL);
    process.lseek(fd, 100);
    expectErrno(() => process.writeFile(fd, new Uint8Array(PAGE)), EINVAL);
    process.lseek(fd, 0);
    assert.equal(process.writeFile(fd, new Uint8Array(PAGE).fill(5)), PAGE);
    const unshared = process.guestMemfd({ size: 4 * PAGE, mmap: true, initShared: false });
    expectErrno(() => process.writeFile(unshared, new Uint8Array(PAGE)), EINVAL);
  });

  const pages = (64 * MiB) / PAGE;
  function pageBytes(index: number): Uint8Array {
    const page = new Uint8Array(PAGE);
    for (let i = 0; i < PAGE; i += 8) {
      page[i] = index & 0xff;
      page[i + 1] = index >>> 8;
      page[i + 2] = i >>> 8;
    }
    return page;
  }
  async function serve(uffd: Uffd, resolve: (address: number, flags: number) => void): Promise<void> {
    for (let served = 0; served < pages; ) {
      for (const message of await uffd.nextMessages(64)) {
        assert.equal(message.event, 'pagefault');
        if (message.event !== 'pagefault') continue;
        resolve(Number(message.address), message.flags);
        served++;
      }
    }
  }
  function* touch(start: number) {
    for (let i = 0; i < pages; i++) yield { kind: 'read' as const, address: start + i * PAGE, length: 1 };
  }

  it('restores a 64 MiB guest by MINOR + CONTINUE after write() population, every byte verified', async () => {
    const { process, check } = createTestModel({ version: '7.1', checkAfterPump: false });
    const fd = process.guestMemfd({ size: 64 * MiB });
    const guest = process.mmap({ length: 64 * MiB, fd, shared: true });
    const uffd = process.userfaultfd();
    uffd.api();
    uffd.register({ start: guest, length: 64 * MiB }, UFFDIO_REGISTER_MODE_MINOR);
    // Populate the page cache the way the secret-free Firecracker handler does: write() into the file.
    for (let i = 0; i < pages; i++) process.writeFile(fd, pageBytes(i));
    const vcpu = process.thread(touch(guest));
    await serve(uffd, (address, flags) => {
      assert.equal(flags, 4);
      uffd.continue({ start: address, length: PAGE });
    });
    assert.equal((await vcpu.join()).faults, pages);
    for (let i = 0; i < pages; i++) assert.deepEqual(process.read(guest + i * PAGE, PAGE), pageBytes(i));
    check();
  });

  it('restores a 64 MiB guest by MISSING + COPY into the page cache, every byte verified', async () => {
    const { process, check } = createTestModel({ version: '7.1', checkAfterPump: false });
    const fd = process.guestMemfd({ size: 64 * MiB });
    const guest = process.mmap({ length: 64 * MiB, fd, shared: true });
    const uffd = process.userfaultfd();
    uffd.api();
    uffd.register({ start: guest, length: 64 * MiB }, UFFDIO_REGISTER_MODE_MISSING);
    const vcpu = process.thread(touch(guest));
    await serve(uffd, (address, flags) => {
      assert.equal(flags, 0);
      uffd.copyBytes(address, pageBytes((address - guest) / PAGE));
    });
    assert.equal((await vcpu.join()).faults, pages);
    for (let i = 0; i < pages; i++) assert.deepEqual(process.read(guest + i * PAGE, PAGE), pageBytes(i));
    // The pages went into the guest_memfd's page cache: a second mapping sees them without faults.
    const second = process.mmap({ length: 64 * MiB, fd, shared: true });
    assert.deepEqual(process.read(second + 123 * PAGE, PAGE), pageBytes(123));
    check();
  });
});
