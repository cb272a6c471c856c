/**
 * Behaviours measured on this machine's 6.18 kernel by tools/probes (see
 * tools/probes/RESULTS.md), where uapi-facts.md was silent or unconfirmed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  UFFD_FEATURE_WP_UNPOPULATED,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
  UFFDIO_WRITEPROTECT_MODE_WP,
} from '../src/uapi/constants.ts';
import { EEXIST, EINVAL } from '../src/uapi/errno.ts';
import { createTestModel, expectErrno, HUGE, MiB, PAGE } from './helpers.ts';

const MISSING_WP = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;

describe('hugetlb files (probe q3)', () => {
  it('ftruncate to a size that is not a whole number of huge pages fails with EINVAL', () => {
    const { process } = createTestModel();
    const fd = process.memfd('huge', { hugetlb: true });
    expectErrno(() => process.ftruncate(fd, 3 * MiB), EINVAL);
    assert.equal(process.pread(fd, 1, 0).byteLength, 0, 'the size stays 0');
    process.ftruncate(fd, 4 * MiB);
    expectErrno(() => process.ftruncate(fd, 4 * MiB + PAGE), EINVAL);
  });

  it('munmap ending inside a huge page fails but leaves the split at its aligned start', () => {
    const { backend, process, check } = createTestModel();
    const fd = process.memfd('huge', { hugetlb: true, size: 4 * MiB });
    const area = process.mmap({ length: 3 * MiB, fd, shared: true });
    const mm = backend.kernel.processes.get(process.pid)!.mm;
    assert.equal(mm.findVma(area)!.end - area, 4 * MiB, 'the length is rounded up to huge pages');
    expectErrno(() => process.munmap(area, MiB), EINVAL);
    assert.equal(mm.vmasIn(area, area + 4 * MiB).length, 1);
    expectErrno(() => process.munmap(area + HUGE, MiB), EINVAL);
    assert.equal(mm.vmasIn(area, area + 4 * MiB).length, 2);
    check();
  });
});

describe('uffd-wp markers (probe q5)', () => {
  it('shmem: ZEROPAGE and COPY replace a marker, POISON does not', () => {
    const { process } = createTestModel();
    const fd = process.memfd('shm', { size: 4 * PAGE });
    const area = process.mmap({ length: 4 * PAGE, fd, shared: true });
    const uffd = process.userfaultfd();
    uffd.api();
    uffd.register({ start: area, length: 4 * PAGE }, MISSING_WP);
    uffd.writeprotect({ start: area, length: 4 * PAGE }, UFFDIO_WRITEPROTECT_MODE_WP);
    assert.equal(uffd.zeropage({ start: area, length: PAGE }), PAGE);
    const poison = expectErrno(() => uffd.poison({ start: area + PAGE, length: PAGE }), EEXIST);
    assert.equal(poison.progress, -EEXIST);
    assert.equal(uffd.copyBytes(area + PAGE, new Uint8Array(PAGE).fill(1)), PAGE);
  });

  it('anonymous with WP_UNPOPULATED: ZEROPAGE on a marker is EEXIST, a write there is a MISSING fault', async () => {
    const { backend, process } = createTestModel();
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = process.userfaultfd();
    uffd.api(UFFD_FEATURE_WP_UNPOPULATED);
    uffd.register({ start: area, length: 2 * PAGE }, MISSING_WP);
    uffd.writeprotect({ start: area, length: 2 * PAGE }, UFFDIO_WRITEPROTECT_MODE_WP);
    const zero = expectErrno(() => uffd.zeropage({ start: area, length: PAGE }), EEXIST);
    assert.equal(zero.progress, -EEXIST);
    const writer = process.thread([{ kind: 'write', address: area + PAGE, data: new Uint8Array([5]) }]);
    await backend.settle();
    const [message] = uffd.readMessages();
    assert.deepEqual(message, { event: 'pagefault', flags: 1, address: BigInt(area + PAGE), ptid: 0 });
    uffd.copyBytes(area + PAGE, new Uint8Array(PAGE));
    assert.equal((await writer.join()).state, 'done');
  });
});
