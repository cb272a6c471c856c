// The native side of `faultline bench` (native/bench.cc through src/host/bench.ts): the C reference
// handler resolves exactly one fault per chunk in every row and leaves every page as expected, failures
// come back as error strings naming the call, and the host backend's spin-before-sleep wait still
// delivers faults. Skipped, with the reason, where the host backend is unavailable.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Process } from '../src/api/process.ts';
import {
  type ReferenceConfig,
  type ReferenceRow,
  referencePageSize,
  runMemcpyBaseline,
  runReferenceHandler,
} from '../src/host/bench.ts';
import { hostUnavailable, hugePagesRaised } from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import { native } from '../src/host/native.ts';
import { POLLIN, UFFDIO_REGISTER_MODE_MISSING } from '../src/uapi/constants.ts';
import { filled, HUGE, KiB, MiB, PAGE } from './helpers.ts';

const unavailable = hostUnavailable();

const CASES: ReadonlyArray<{ row: ReferenceRow; regionBytes: number; bytesPerFault: number }> = [
  { row: 'missing-copy', regionBytes: 8 * MiB, bytesPerFault: 4 * KiB },
  { row: 'missing-copy', regionBytes: 8 * MiB, bytesPerFault: 64 * KiB },
  { row: 'missing-copy', regionBytes: 8 * MiB, bytesPerFault: 2 * MiB },
  { row: 'missing-zeropage', regionBytes: 8 * MiB, bytesPerFault: 4 * KiB },
  { row: 'minor-continue', regionBytes: 8 * MiB, bytesPerFault: 4 * KiB },
  { row: 'wp', regionBytes: 8 * MiB, bytesPerFault: 4 * KiB },
  { row: 'hugetlb-copy', regionBytes: 2 * HUGE, bytesPerFault: HUGE },
];

/** Runs a row; a row this host cannot run (no hugetlb pages) skips the test with the reason. */
function run(t: { skip(reason: string): void }, config: ReferenceConfig) {
  const result = runReferenceHandler(config);
  if (result.unavailable !== null) t.skip(result.unavailable);
  return result;
}

describe('C reference handler', { skip: unavailable }, () => {
  for (const { row, regionBytes, bytesPerFault } of CASES) {
    it(`${row}, ${bytesPerFault / KiB} KiB per fault: one fault per chunk, every page as expected`, (t) => {
      const result = run(t, { row, regionBytes, bytesPerFault });
      if (result.unavailable !== null) return;
      assert.equal(result.error, null);
      assert.equal(result.expectedFaults, regionBytes / bytesPerFault);
      assert.equal(result.faults, result.expectedFaults);
      assert.ok(result.ns > 0, `ns ${result.ns}`);
      assert.ok(result.faultsPerSecond > 0 && result.usPerFault > 0 && result.mibPerSecond > 0);
    });
  }

  it('defaults bytesPerFault to the row page size', (t) => {
    assert.equal(referencePageSize('hugetlb-copy'), HUGE);
    const result = run(t, { row: 'missing-zeropage', regionBytes: MiB });
    assert.equal(result.bytesPerFault, PAGE);
    assert.equal(result.error, null);
    assert.equal(result.faults, MiB / PAGE);
  });

  it('sleeps in poll() when it may not spin, and resolves every fault either way', (t) => {
    const sleeping = run(t, { row: 'missing-copy', regionBytes: 2 * MiB, spin: 0 });
    assert.equal(sleeping.error, null);
    assert.equal(sleeping.faults, 512);
    assert.ok(sleeping.polls > 0, `polls ${sleeping.polls}`);
    for (const pin of ['same', 'split'] as const) {
      const pinned = run(t, { row: 'wp', regionBytes: 2 * MiB, pin });
      assert.equal(pinned.error, null, pin);
      assert.equal(pinned.faults, 512, pin);
    }
  });

  it('splits the region between several faulting threads, one handler serving them all', (t) => {
    for (const row of ['missing-copy', 'wp'] as const) {
      const result = run(t, { row, regionBytes: 2 * MiB, vcpus: 2 });
      assert.equal(result.error, null, row);
      assert.equal(result.faults, 512, row);
    }
    const tooMany = run(t, { row: 'missing-copy', regionBytes: 2 * PAGE, vcpus: 3 });
    assert.match(tooMany.error ?? '', /vcpus 3 is not between 1 and the 2 chunks/);
  });

  it('gives back the huge pages it raised the limit for', (t) => {
    const before = hugePagesRaised();
    const result = run(t, { row: 'hugetlb-copy', regionBytes: HUGE });
    if (result.unavailable !== null) return;
    assert.equal(result.error, null);
    assert.equal(hugePagesRaised(), before);
  });

  it('reports a bad config or a failing call as an error string', (t) => {
    const chunk = run(t, { row: 'missing-copy', regionBytes: MiB, bytesPerFault: 1000 });
    assert.match(
      chunk.error ?? '',
      /bytesPerFault 1000 is not a multiple of the missing-copy page size 4096/,
    );
    const region = run(t, { row: 'wp', regionBytes: MiB + PAGE, bytesPerFault: 8 * KiB });
    assert.match(region.error ?? '', /regionBytes \d+ is not a positive multiple of bytesPerFault 8192/);
    const row = run(t, { row: 'nonsense' as ReferenceRow, regionBytes: MiB });
    assert.match(row.error ?? '', /unknown row 'nonsense'/);
    // 256 TiB is more than the x86-64 (and arm64) user address space: mmap fails, nothing is touched.
    const huge = run(t, { row: 'missing-zeropage', regionBytes: 256 * 1024 * 1024 * MiB });
    assert.match(huge.error ?? '', /^mmap\(region\): ENOMEM \(Cannot allocate memory\)$/);
    assert.equal(huge.faults, 0);
    assert.throws(() => runReferenceHandler({ row: 'wp', regionBytes: -1 }), RangeError);
  });
});

describe('memcpy baseline', { skip: unavailable }, () => {
  it('copies into a prefaulted and a fresh destination and times both', () => {
    const result = runMemcpyBaseline({ regionBytes: 8 * MiB, chunkBytes: 4 * KiB });
    assert.equal(result.error, null);
    assert.ok(result.ns > 0 && result.nsFresh > 0, `ns ${result.ns} nsFresh ${result.nsFresh}`);
    assert.ok(result.mibPerSecond > 0 && result.mibPerSecondFresh > 0);
    // A chunk that does not divide the region: the last piece is shorter.
    assert.equal(runMemcpyBaseline({ regionBytes: MiB + 100, chunkBytes: 3000 }).error, null);
    assert.match(runMemcpyBaseline({ regionBytes: MiB, chunkBytes: 0 }).error ?? '', /must be positive/);
  });
});

describe('host backend: spin before sleep', { skip: unavailable }, () => {
  const backends: HostBackend[] = [];
  after(async () => {
    for (const backend of backends) {
      await backend.settle();
      backend.dispose();
    }
  });

  it('spinReadable reports POLLIN once a fault is queued, 0 while none is', async () => {
    const backend = new HostBackend({ spinTries: 0 });
    backends.push(backend);
    const process = new Process(backend.self);
    const uffd = process.userfaultfd({ nonblock: true });
    uffd.api();
    const area = process.mmap({ length: PAGE });
    uffd.register({ start: area, length: PAGE }, UFFDIO_REGISTER_MODE_MISSING);
    assert.equal(native!.spinReadable(uffd.fd, 10), 0);
    const thread = process.thread([{ kind: 'read', address: area + 5, length: 1 }]);
    assert.equal(native!.spinReadable(uffd.fd, 10_000_000) & POLLIN, POLLIN);
    const [message] = await uffd.nextMessages();
    assert.equal(message?.event, 'pagefault');
    uffd.copyBytes(area, filled(PAGE, 9));
    const result = await thread.join();
    assert.equal(result.state, 'done');
    assert.deepEqual([...result.reads[0]!], [9]);
  });

  for (const spinTries of [0, 1, 100_000]) {
    it(`a handler loop resolves every fault with spinTries ${spinTries}`, async () => {
      const backend = new HostBackend({ spinTries });
      backends.push(backend);
      const process = new Process(backend.self);
      const uffd = process.userfaultfd({ nonblock: true });
      uffd.api();
      const pages = 64;
      const area = process.mmap({ length: pages * PAGE });
      uffd.register({ start: area, length: pages * PAGE }, UFFDIO_REGISTER_MODE_MISSING);
      const thread = process.thread(
        Array.from({ length: pages }, (_, i) => ({
          kind: 'read' as const,
          address: area + i * PAGE,
          length: 1,
        })),
      );
      let served = 0;
      while (served < pages) {
        for (const message of await uffd.nextMessages()) {
          if (message.event !== 'pagefault') continue;
          const address = Number(message.address);
          uffd.copyBytes(address, filled(PAGE, ((address - area) / PAGE) & 0xff));
          served++;
        }
      }
      const result = await thread.join();
      assert.equal(result.state, 'done');
      assert.deepEqual(
        result.reads.map((bytes) => bytes[0]),
        Array.from({ length: pages }, (_, i) => i),
      );
      uffd.close();
    });
  }
});
