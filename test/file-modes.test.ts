/**
 * File calls on descriptors that are not regular files (a userfaultfd,
 * /dev/userfaultfd, /dev/kvm, a KVM VM): the VFS decides them on the open
 * file's f_mode and inode type before the file's own operations, so Linux
 * 6.18 answers with ESPIPE, EBADF, ENODEV or noop_llseek's 0 rather than
 * EINVAL. The same table runs on the model and, where it can, on the host.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { ProcessBackend } from '../src/api/backend.ts';
import { Process } from '../src/api/process.ts';
import { hostUnavailable } from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  KVM_CREATE_VM,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
} from '../src/uapi/constants.ts';
import { EBADF, EINVAL, ENODEV, EOPNOTSUPP, ESPIPE, KernelError } from '../src/uapi/errno.ts';
import { createTestModel } from './helpers.ts';

type Kind = 'uffd' | 'dev-userfaultfd' | 'dev-userfaultfd-ro' | 'kvm' | 'vm' | 'gmem';
const KINDS: readonly Kind[] = ['uffd', 'dev-userfaultfd', 'dev-userfaultfd-ro', 'kvm', 'vm', 'gmem'];

function openKind(backend: ProcessBackend, kind: Kind): number {
  if (kind === 'uffd') return backend.userfaultfd(O_CLOEXEC | O_NONBLOCK);
  if (kind === 'dev-userfaultfd') return backend.open('/dev/userfaultfd', O_RDWR | O_CLOEXEC);
  if (kind === 'dev-userfaultfd-ro') return backend.open('/dev/userfaultfd', O_RDONLY | O_CLOEXEC);
  // guest_memfd is a regular memory file to mmap, but its file is a pseudo file without
  // FMODE_PREAD, FMODE_PWRITE, FMODE_LSEEK, read or write on 6.18.
  if (kind === 'gmem') return new Process(backend).guestMemfd({ size: 16384 });
  const kvm = backend.open('/dev/kvm', O_RDWR | O_CLOEXEC);
  if (kind === 'kvm') return kvm;
  const vm = backend.ioctl(kvm, KVM_CREATE_VM, 0);
  backend.close(kvm);
  return vm;
}

/** Each call, and what Linux 6.18 returns for each kind of fd (a number: success with that value). */
const CALLS: readonly {
  name: string;
  call: (backend: ProcessBackend, fd: number) => unknown;
  expect: Record<Kind, number | string>;
}[] = [
  {
    name: 'lseek(fd, 4096, SEEK_SET)',
    call: (b, fd) => b.lseek(fd, 4096, 0),
    expect: { uffd: 0, 'dev-userfaultfd': 0, 'dev-userfaultfd-ro': 0, kvm: 0, vm: 0, gmem: 'ESPIPE' },
  },
  {
    name: 'lseek(fd, -1, SEEK_CUR)',
    call: (b, fd) => b.lseek(fd, -1, 1),
    expect: { uffd: 0, 'dev-userfaultfd': 0, 'dev-userfaultfd-ro': 0, kvm: 0, vm: 0, gmem: 'ESPIPE' },
  },
  {
    name: 'lseek(fd, 0, 7)',
    call: (b, fd) => b.lseek(fd, 0, 7),
    expect: {
      uffd: 'EINVAL',
      'dev-userfaultfd': 'EINVAL',
      'dev-userfaultfd-ro': 'EINVAL',
      kvm: 'EINVAL',
      vm: 'EINVAL',
      gmem: 'EINVAL',
    },
  },
  {
    name: 'pread(fd, 1, 0)',
    call: (b, fd) => b.pread(fd, 1, 0),
    expect: {
      uffd: 'ESPIPE',
      'dev-userfaultfd': 'EINVAL',
      'dev-userfaultfd-ro': 'EINVAL',
      kvm: 'EINVAL',
      vm: 'ESPIPE',
      gmem: 'ESPIPE',
    },
  },
  {
    name: 'pread(fd, 1, -1)',
    call: (b, fd) => b.pread(fd, 1, -1),
    expect: {
      uffd: 'EINVAL',
      'dev-userfaultfd': 'EINVAL',
      'dev-userfaultfd-ro': 'EINVAL',
      kvm: 'EINVAL',
      vm: 'EINVAL',
      gmem: 'EINVAL',
    },
  },
  {
    name: 'pwrite(fd, 1 byte, 0)',
    call: (b, fd) => b.pwrite(fd, new Uint8Array(1), 0),
    expect: {
      uffd: 'ESPIPE',
      'dev-userfaultfd': 'EINVAL',
      'dev-userfaultfd-ro': 'EBADF',
      kvm: 'EINVAL',
      vm: 'ESPIPE',
      gmem: 'ESPIPE',
    },
  },
  {
    name: 'write(fd, 1 byte)',
    call: (b, fd) => b.write(fd, new Uint8Array(1)),
    expect: {
      uffd: 'EBADF',
      'dev-userfaultfd': 'EINVAL',
      'dev-userfaultfd-ro': 'EBADF',
      kvm: 'EINVAL',
      vm: 'EINVAL',
      gmem: 'EINVAL',
    },
  },
  {
    name: 'fallocate(fd, 0, 0, 4096)',
    call: (b, fd) => b.fallocate(fd, 0, 0, 4096),
    expect: {
      uffd: 'EBADF',
      'dev-userfaultfd': 'ENODEV',
      'dev-userfaultfd-ro': 'EBADF',
      kvm: 'ENODEV',
      vm: 'ENODEV',
      gmem: 'EOPNOTSUPP',
    },
  },
  {
    name: 'fallocate(fd, PUNCH_HOLE, 0, 4096)',
    call: (b, fd) => b.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096),
    expect: {
      uffd: 'EOPNOTSUPP',
      'dev-userfaultfd': 'EOPNOTSUPP',
      'dev-userfaultfd-ro': 'EOPNOTSUPP',
      kvm: 'EOPNOTSUPP',
      vm: 'EOPNOTSUPP',
      gmem: 'EOPNOTSUPP',
    },
  },
  {
    name: 'fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 0, 0)',
    call: (b, fd) => b.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 0),
    expect: {
      uffd: 'EINVAL',
      'dev-userfaultfd': 'EINVAL',
      'dev-userfaultfd-ro': 'EINVAL',
      kvm: 'EINVAL',
      vm: 'EINVAL',
      gmem: 'EINVAL',
    },
  },
  {
    name: 'ftruncate(fd, 4096)',
    call: (b, fd) => b.ftruncate(fd, 4096),
    expect: {
      uffd: 'EINVAL',
      'dev-userfaultfd': 'EINVAL',
      'dev-userfaultfd-ro': 'EINVAL',
      kvm: 'EINVAL',
      vm: 'EINVAL',
      gmem: 'EINVAL',
    },
  },
];

const ERRNO: Record<string, number> = { EBADF, EINVAL, ENODEV, EOPNOTSUPP, ESPIPE };

/** The call's result as the table writes it, and the error when it failed. */
function outcome(call: () => unknown): { result: number | string; error?: KernelError } {
  try {
    return { result: call() as number };
  } catch (error) {
    if (!(error instanceof KernelError)) throw error;
    return { result: Object.keys(ERRNO).find((name) => ERRNO[name] === error.errno) ?? error.errno, error };
  }
}

function checkTable(backend: ProcessBackend): void {
  for (const kind of KINDS) {
    for (const { name, call, expect } of CALLS) {
      const fd = openKind(backend, kind);
      try {
        const { result } = outcome(() => call(backend, fd));
        assert.equal(result, expect[kind], `${name} on ${kind}`);
        // noop_llseek leaves the position where it was: a second seek still says 0.
        if (name.startsWith('lseek') && result === 0) assert.equal(backend.lseek(fd, 0, 1), 0);
      } finally {
        backend.close(fd);
      }
    }
  }
}

describe('file calls on fds that are not regular files (Linux 6.18)', () => {
  it('the model answers as the VFS does, for each kind of fd', () => {
    const { process } = createTestModel();
    checkTable(process.backend);
  });

  it('errors name the call, the argument and the reason', () => {
    const { process } = createTestModel();
    const uffd = openKind(process.backend, 'uffd');
    const vm = openKind(process.backend, 'vm');
    const gmem = openKind(process.backend, 'gmem');
    const cases: [() => unknown, RegExp][] = [
      [() => process.backend.pread(uffd, 1, 0), /pread.*fd.*userfaultfd has no file position/],
      [
        () => process.backend.write(uffd, new Uint8Array(1)),
        /write.*fd.*userfaultfd is not open for writing/,
      ],
      [() => process.backend.fallocate(vm, 0, 0, 4096), /fallocate.*fd.*kvm-vm file is not a regular file/],
      [() => process.backend.lseek(gmem, 0, 0), /lseek.*fd.*kvm-gmem has no llseek/],
      [() => process.backend.write(gmem, new Uint8Array(1)), /write.*fd.*kvm-gmem has no write operation/],
    ];
    for (const [call, pattern] of cases) {
      const { error } = outcome(call);
      assert.ok(error !== undefined, `${pattern} did not fail`);
      assert.match(error.message, pattern);
    }
  });

  const unavailable = hostUnavailable();
  describe('on the host', { skip: unavailable ?? false }, () => {
    let backend: HostBackend | undefined;
    after(() => backend?.dispose());
    it('Linux 6.18 answers the same table (the facts the model follows)', () => {
      backend = new HostBackend();
      checkTable(backend.self);
    });
  });
});
