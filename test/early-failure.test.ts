/**
 * Bad arguments: every call fails with the Linux errno, a message naming the
 * argument, and leaves the model exactly as it was (property-based).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { digestKernel } from '../src/model/check.ts';
import {
  UFFDIO_COPY,
  UFFDIO_REGISTER,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
} from '../src/uapi/constants.ts';
import { EBADF, EINVAL, ENOENT, EPERM, KernelError } from '../src/uapi/errno.ts';
import { encodeUffdioCopy, encodeUffdioRegister } from '../src/uapi/structs.ts';
import { createTestModel, HUGE, PAGE } from './helpers.ts';

/*
 * The fixture's address space:
 *   anon   [ 8 pages, registered MISSING on pages 2..5, pages 0 and 6 populated ]
 *   shmem  [ 4 pages of a memfd, shared, page 1 in the page cache ]
 *   huge   [ 2 huge pages of a hugetlb memfd, shared ]
 */
function fixture(seed: number) {
  const model = createTestModel({ seed });
  const { process } = model;
  const uffd = process.userfaultfd();
  uffd.api();
  const anon = process.mmap({ length: 8 * PAGE });
  process.write(anon, new Uint8Array([1]));
  process.write(anon + 6 * PAGE, new Uint8Array([6]));
  uffd.register({ start: anon + 2 * PAGE, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MISSING);
  const fd = process.memfd('shmem', { size: 4 * PAGE });
  process.pwrite(fd, new Uint8Array([9]), PAGE);
  const shmem = process.mmap({ length: 4 * PAGE, fd, shared: true });
  const hugeFd = process.memfd('huge', { size: 2 * HUGE, hugetlb: true });
  const huge = process.mmap({ length: 2 * HUGE, fd: hugeFd, shared: true });
  const unprivileged = model.backend.createProcess({ privileged: false });
  return { ...model, uffd, anon, fd, shmem, hugeFd, huge, unprivileged };
}

type Fixture = ReturnType<typeof fixture>;

interface BadCall {
  readonly name: string;
  readonly errno: number;
  /** A word the error message must contain (the argument at fault). */
  readonly names: string;
  run(f: Fixture): void;
}

const offsets = fc.integer({ min: 1, max: PAGE - 1 });

const badCalls: fc.Arbitrary<BadCall>[] = [
  offsets.map((delta) => ({
    name: `register unaligned start +${delta}`,
    errno: EINVAL,
    names: 'range',
    run: (f: Fixture) =>
      f.uffd.register({ start: f.anon + delta, length: PAGE }, UFFDIO_REGISTER_MODE_MISSING),
  })),
  fc.integer({ min: 8, max: 255 }).map((mode) => ({
    name: `register mode ${mode}`,
    errno: EINVAL,
    names: 'mode',
    run: (f: Fixture) => f.uffd.register({ start: f.anon, length: PAGE }, mode),
  })),
  fc.constant({
    name: 'register MINOR on anonymous memory',
    errno: EINVAL,
    names: 'mode',
    run: (f: Fixture) => f.uffd.register({ start: f.anon, length: 8 * PAGE }, UFFDIO_REGISTER_MODE_MINOR),
  }),
  fc.integer({ min: 1, max: 511 }).map((pages) => ({
    name: `register hugetlb with an unaligned end (+${pages} pages)`,
    errno: EINVAL,
    names: 'range',
    run: (f: Fixture) =>
      f.uffd.register({ start: f.huge, length: pages * PAGE }, UFFDIO_REGISTER_MODE_MISSING),
  })),
  offsets.map((delta) => ({
    name: `copy to an unaligned dst +${delta}`,
    errno: EINVAL,
    names: 'dst',
    run: (f: Fixture) => f.uffd.copy({ dst: f.anon + 2 * PAGE + delta, src: f.anon, length: PAGE }),
  })),
  fc.constant({
    name: 'copy into an unregistered page',
    errno: ENOENT,
    names: 'dst',
    run: (f: Fixture) => f.uffd.copy({ dst: f.anon + 7 * PAGE, src: f.anon, length: PAGE }),
  }),
  fc.constant({
    name: 'continue on anonymous memory',
    errno: EINVAL,
    names: 'dst',
    run: (f: Fixture) => f.uffd.continue({ start: f.anon + 2 * PAGE, length: PAGE }),
  }),
  fc.constant({
    name: 'register through a short buffer',
    errno: 14,
    names: 'uffdio_register',
    run: (f: Fixture) =>
      f.process.backend.ioctl(
        f.uffd.fd,
        UFFDIO_REGISTER,
        encodeUffdioRegister({ range: { start: BigInt(f.anon), len: 4096n }, mode: 1n, ioctls: 0n }).subarray(
          0,
          16,
        ),
      ),
  }),
  fc.bigInt({ min: 4n, max: (1n << 64n) - 1n }).map((mode) => ({
    name: `copy with mode ${mode}`,
    errno: EINVAL,
    names: 'mode',
    run: (f: Fixture) =>
      f.process.backend.ioctl(
        f.uffd.fd,
        UFFDIO_COPY,
        encodeUffdioCopy({ dst: BigInt(f.anon + 2 * PAGE), src: BigInt(f.anon), len: 4096n, mode, copy: 0n }),
      ),
  })),
  offsets.map((delta) => ({
    name: `munmap unaligned +${delta}`,
    errno: EINVAL,
    names: 'addr',
    run: (f: Fixture) => f.process.munmap(f.anon + delta, PAGE),
  })),
  fc.integer({ min: 1, max: 511 }).map((pages) => ({
    name: `munmap splitting a huge page (+${pages} pages)`,
    errno: EINVAL,
    names: 'len',
    run: (f: Fixture) => f.process.munmap(f.huge, pages * PAGE),
  })),
  fc.integer({ min: 8, max: 1 << 20 }).map((prot) => ({
    name: `mprotect prot ${prot}`,
    errno: EINVAL,
    names: 'prot',
    run: (f: Fixture) => f.process.mprotect(f.anon, PAGE, prot),
  })),
  fc.integer({ min: 0x20, max: 0x3ff }).map((flags) => ({
    name: `memfd_create flags ${flags}`,
    errno: EINVAL,
    names: 'flags',
    run: (f: Fixture) => f.process.backend.memfdCreate('bad', flags & ~0x04),
  })),
  fc.integer({ min: -(2 ** 40), max: -1 }).map((length) => ({
    name: `ftruncate ${length}`,
    errno: EINVAL,
    names: 'length',
    run: (f: Fixture) => f.process.ftruncate(f.fd, length),
  })),
  fc.integer({ min: 100, max: 10_000 }).map((fd) => ({
    name: `pread of closed fd ${fd}`,
    errno: EBADF,
    names: 'fd',
    run: (f: Fixture) => f.process.pread(fd, 10, 0),
  })),
  fc.constant({
    name: 'fallocate punch hole without KEEP_SIZE',
    errno: 95,
    names: 'mode',
    run: (f: Fixture) => f.process.fallocate(f.fd, 2, 0, PAGE),
  }),
  fc.constant({
    name: 'api a second time',
    errno: EINVAL,
    names: 'uffd',
    run: (f: Fixture) => f.uffd.api(),
  }),
  fc.constant({
    name: 'userfaultfd from an unprivileged process',
    errno: EPERM,
    names: 'flags',
    run: (f: Fixture) => f.unprivileged.userfaultfd(0),
  }),
];

describe('a failing call', () => {
  it('returns the errno, names the argument, and changes nothing', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        fc.array(fc.oneof(...badCalls), { minLength: 1, maxLength: 6 }),
        (seed, calls) => {
          const f = fixture(seed);
          f.check();
          for (const call of calls) {
            const before = digestKernel(f.backend.kernel);
            let caught: unknown;
            try {
              call.run(f);
            } catch (error) {
              caught = error;
            }
            assert.ok(caught instanceof KernelError, `${call.name}: expected a KernelError, got ${caught}`);
            assert.equal(caught.errno, call.errno, `${call.name}: ${caught.message}`);
            assert.ok(
              caught.message.includes(call.names),
              `${call.name}: '${caught.message}' does not name ${call.names}`,
            );
            assert.equal(
              digestKernel(f.backend.kernel),
              before,
              `${call.name} changed the model (seed ${seed})`,
            );
          }
          f.check();
        },
      ),
      { numRuns: 150 },
    );
  });
});
