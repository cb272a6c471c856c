/**
 * The QEMU and ART workloads on the model at small sizes: every byte
 * verified, counts that add up, and (postcopy) no source process left
 * behind, whether the migration completes or times out.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ModelBackend } from '../src/api/model-backend.ts';
import { gcCompactionCommand, postcopyCommand } from '../src/cli/workload.ts';
import { Trace } from '../src/trace/trace.ts';
import { runBackgroundSnapshot, type SnapshotMode } from '../src/workloads/background-snapshot.ts';
import { type CompactionMode, runGcCompaction } from '../src/workloads/gc-compaction.ts';
import { type PostcopyOptions, runPostcopy, touchOffset } from '../src/workloads/postcopy.ts';
import { isDirty } from '../src/workloads/postcopy-wire.ts';
import { MiB } from './helpers.ts';

function exited(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function postcopy(overrides: Partial<PostcopyOptions>) {
  return runPostcopy({
    backend: new ModelBackend({ seed: 1 }),
    mode: 'anon',
    guestBytes: 4 * MiB,
    vcpus: 2,
    pattern: 'random',
    seed: 1,
    dirtyPercent: 100,
    preempt: true,
    bandwidthBytes: 0,
    timeoutMs: 20_000,
    trace: new Trace(1, false),
    ...overrides,
  });
}

describe('postcopy: a source process over TCP, the destination on the model', () => {
  const cases = [
    { name: 'anon, pure postcopy, preempt', mode: 'anon', dirtyPercent: 100, preempt: true },
    { name: 'anon, 30% dirty after precopy, one connection', mode: 'anon', dirtyPercent: 30, preempt: false },
    { name: 'shmem MINOR, 30% dirty after precopy, preempt', mode: 'shmem', dirtyPercent: 30, preempt: true },
  ] as const;
  for (const c of cases) {
    it(`${c.name}: every page and every vCPU read matches the source`, async () => {
      const result = await postcopy({ mode: c.mode, dirtyPercent: c.dirtyPercent, preempt: c.preempt });
      assert.equal(result.verifiedPages, result.pages);
      assert.equal(result.verifiedReads, result.reads);
      assert.equal(result.reads, result.pages, 'the vCPUs read every page once');
      assert.equal(result.precopyPages, c.dirtyPercent === 100 ? 0 : result.pages);
      if (c.dirtyPercent === 100) assert.equal(result.dirtyPages, result.pages);
      else assert.ok(result.dirtyPages > result.pages * 0.2 && result.dirtyPages < result.pages * 0.4);
      assert.equal(result.stats.bytesMoved, result.dirtyPages * result.pageSize);
      const { requests, stats } = result;
      assert.equal(requests.answered.count + requests.viaStream.count, requests.count);
      assert.ok((stats.faultsByKind.get('fetched') ?? 0) >= requests.count, 'each request follows a fault');
      if (c.mode === 'shmem')
        assert.ok((stats.faultsByKind.get('clean') ?? 0) > 0, 'clean pages are continued');
      assert.ok(requests.latencyUs.max >= requests.latencyUs.p50 && requests.latencyUs.p50 >= 0);
      assert.equal(stats.blockedMs.length, 2);
      for (const ms of stats.blockedMs) assert.ok(ms >= 0 && Number.isFinite(ms));
      for (const thread of result.threads) assert.equal(thread.state, 'done');
      assert.ok(exited(result.sourcePid), 'the source process is gone');
    });
  }

  it('a migration that overruns its timeout fails and the source is killed', async () => {
    let pid = 0;
    await assert.rejects(
      postcopy({
        guestBytes: 16 * MiB,
        bandwidthBytes: 1 * MiB,
        timeoutMs: 300,
        onSourceStarted: (p) => (pid = p),
      }),
      /took longer than 300 ms/,
    );
    assert.ok(pid > 0);
    assert.ok(exited(pid), 'the source process is gone');
  });
});

describe('background-snapshot: RAM saved under write protection while vCPUs write', () => {
  const run = (mode: SnapshotMode) =>
    runBackgroundSnapshot({
      backend: new ModelBackend({ seed: 1 }),
      mode,
      guestBytes: 2 * MiB,
      vcpus: 2,
      seed: 1,
      writePercent: 50,
      rounds: 2,
      chunkPages: 16,
      trace: new Trace(1, false),
    });

  for (const mode of ['wp-unpopulated', 'prefault', 'shmem'] as const) {
    it(`${mode}: the image equals memory at the snapshot instant, byte for byte`, async () => {
      const result = await run(mode);
      assert.equal(result.imageVerifiedPages, result.pages);
      assert.deepEqual(result.imageDifferingPages, []);
      assert.equal(result.memoryVerifiedPages, result.pages);
      assert.equal(result.savedByFault + result.savedByBackground, result.pages);
      assert.ok(result.savedByFault > 0 && result.savedByBackground > 0);
      assert.equal(
        result.stats.faults,
        result.savedByFault + (result.stats.faultsByKind.get('wp (saved already)') ?? 0),
      );
      assert.equal(result.stats.bytesMoved, result.pages * result.pageSize);
      for (const thread of result.threads) assert.equal(thread.state, 'done');
    });
  }

  it('no-prefault: writes to empty anon pages escape write protection, and the check catches it', async () => {
    const result = await run('no-prefault');
    assert.ok(result.imageVerifiedPages < result.pages);
    // Only never-populated pages (every fourth) can be wrong.
    for (const page of result.imageDifferingPages) assert.equal(page % 4, 3);
    assert.equal(result.memoryVerifiedPages, result.pages);
  });

  it('replays from its seed', async () => {
    const [a, b] = [await run('wp-unpopulated'), await run('wp-unpopulated')];
    assert.equal(a.savedByFault, b.savedByFault);
    assert.equal(a.stats.faults, b.stats.faults);
  });
});

describe('gc-compaction: SIGBUS on the to-space, compaction by mutators and a compaction thread', () => {
  const run = (mode: CompactionMode) =>
    runGcCompaction({
      backend: new ModelBackend({ seed: 1 }),
      mode,
      heapBytes: 4 * MiB,
      mutators: 2,
      seed: 1,
      livePercent: 50,
      readsPerMutator: 2000,
      chunkPages: 8,
      trace: new Trace(1, false),
    });

  for (const mode of ['move', 'copy'] as const) {
    it(`${mode}: the to-space and every mutator read equal the reference compaction`, async () => {
      const result = await run(mode);
      assert.equal(result.verifiedPages, result.toPages);
      assert.equal(result.verifiedReads, result.reads);
      assert.equal(result.reads, 2 * 2000);
      assert.ok(result.toPages > result.fromPages * 0.4 && result.toPages < result.fromPages * 0.6);
      assert.equal(result.compactedByMutators + result.compactedByCompactor, result.toPages);
      assert.ok(result.compactedByMutators > 0 && result.compactedByCompactor > 0);
      assert.equal(result.sigbus, result.compactedByMutators + result.sigbusAlreadyDone);
      assert.equal(
        result.sigbusPerMutator.reduce((a, b) => a + b, 0),
        result.sigbus,
      );
      if (mode === 'move') assert.equal(result.pagesRecycled + result.pagesAllocated, result.toPages);
      else assert.equal(result.pagesAllocated, result.toPages);
      for (const thread of result.threads) assert.equal(thread.state, 'done');
    });
  }

  it('replays from its seed', async () => {
    const [a, b] = [await run('move'), await run('move')];
    assert.equal(a.sigbus, b.sigbus);
    assert.equal(a.compactedByMutators, b.compactedByMutators);
  });
});

describe('faultline workload commands', () => {
  it('gc-compaction --json reports a verified run', async () => {
    const lines: string[] = [];
    const code = await gcCompactionCommand(
      {
        backend: 'model',
        seed: 1,
        json: true,
        mode: 'copy',
        size: MiB,
        mutators: 1,
        live: 50,
        reads: 100,
        chunk: 8,
      },
      (line) => lines.push(line),
    );
    assert.equal(code, 0);
    const report = JSON.parse(lines.join('\n')) as Record<string, unknown>;
    assert.equal(report.version, 1);
    assert.equal(report.workload, 'gc-compaction');
    assert.equal(report.verifiedPages, report.toPages);
  });

  it('a bad option is named in a one-line error', () => {
    const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', main, 'workload', 'postcopy', '--dirty', '120'],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(run.status, 2, 'a usage error');
    assert.match(run.stderr, /--dirty <percent>.*'120' is not a percentage from 0 to 100/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
  });
});

describe('snapshot-restore that fills its model RAM', () => {
  // A 4 GiB restore needs 8 GiB of frames plus the zero page: it ran out on
  // its last page when the model had the default 8 GiB. The same boundary at 1 MiB.
  const restore = async (memoryBytesMax: number) => {
    const { runSnapshotRestore } = await import('../src/workloads/snapshot-restore.ts');
    return runSnapshotRestore({
      backend: new ModelBackend({ seed: 5, memory: { memoryBytesMax, residentBytes: 2 * MiB } }),
      mode: 'anon',
      guestBytes: MiB,
      vcpus: 2,
      pattern: 'sequential',
      seed: 5,
      prefetchWindow: 0,
      trace: new Trace(1, false),
    });
  };
  it('the snapshot and the guest exactly as large as the RAM: the last page cannot be allocated', async () => {
    // Which page runs out (the COPY's source, or its destination) depends on the order of faults.
    await assert.rejects(restore(2 * MiB), /(ENOMEM|EFAULT).*UFFDIO_COPY/);
  });
  it("sized by the workload's modelMemory, every page is restored and verified", async () => {
    const { modelMemory } = await import('../src/cli/workload.ts');
    const memory = modelMemory(2 * MiB, 0);
    assert.ok(memory.memoryBytesMax > 2 * MiB);
    const result = await restore(memory.memoryBytesMax);
    assert.equal(result.verifiedPages, 256);
    assert.equal(result.pages, 256);
  });
});

describe('snapshot-restore with a balloon', () => {
  it('reads the REMOVE event, serves discarded pages as zeros, and verifies every page', async () => {
    const { runSnapshotRestore } = await import('../src/workloads/snapshot-restore.ts');
    const result = await runSnapshotRestore({
      backend: new ModelBackend({ seed: 3 }),
      mode: 'anon',
      guestBytes: 4 * MiB,
      vcpus: 2,
      pattern: 'random',
      seed: 3,
      prefetchWindow: 0,
      balloonPages: 256,
      trace: new Trace(1, false),
    });
    assert.equal(result.stats.removeEvents, 1);
    assert.equal(result.verifiedPages, 1024);
    assert.equal(result.pages, 1024);
  });
});

describe('postcopy on guest_memfd (the 7.1 model)', () => {
  it('resolves MINOR faults with CONTINUE after the precopy fill, verified against the source', async () => {
    const result = await postcopy({ mode: 'gmem', backend: new ModelBackend({ seed: 2, version: '7.1' }) });
    assert.equal(result.verifiedPages, result.pages);
  });
});

describe('postcopy on hugetlbfs: MINOR with 2 MiB pages', () => {
  const HUGE = 2 * MiB;

  for (const c of [
    { name: '30% dirty after precopy, preempt', dirtyPercent: 30, preempt: true },
    { name: 'pure postcopy, one connection', dirtyPercent: 100, preempt: false },
  ] as const) {
    it(`${c.name}: every huge page and every vCPU read matches the source`, async () => {
      const guestBytes = 32 * MiB;
      const pages = guestBytes / HUGE;
      const result = await postcopy({
        mode: 'hugetlb',
        guestBytes,
        dirtyPercent: c.dirtyPercent,
        preempt: c.preempt,
      });
      assert.equal(result.pageSize, HUGE);
      assert.equal(result.pages, pages);
      assert.equal(result.verifiedPages, pages, 'every byte of every huge page');
      assert.equal(result.reads, pages);
      assert.equal(result.verifiedReads, result.reads);
      const dirty = Array.from({ length: pages }, (_, i) => isDirty(i, 1, c.dirtyPercent)).filter(
        Boolean,
      ).length;
      assert.equal(result.dirtyPages, dirty);
      assert.equal(result.precopyPages, c.dirtyPercent === 100 ? 0 : pages);
      // A whole huge page travels, is refreshed and is continued per request.
      assert.equal(result.stats.bytesMoved, dirty * HUGE);
      const { requests, stats } = result;
      assert.ok(requests.count <= dirty);
      assert.equal(requests.answered.count + requests.viaStream.count, requests.count);
      assert.equal(stats.faults, pages, 'one MINOR fault per huge page, wherever inside it the vCPU touched');
      if (c.dirtyPercent < 100) assert.ok((stats.faultsByKind.get('clean') ?? 0) > 0);
      for (const ms of stats.blockedMs) assert.ok(ms >= 0 && Number.isFinite(ms));
      for (const thread of result.threads) assert.equal(thread.state, 'done');
      assert.ok(exited(result.sourcePid), 'the source process is gone');
    });
  }

  for (const dirtyPercent of [40, 100]) {
    it(`hugetlb-missing (QEMU's way: punch dirty pages out, COPY whole huge pages), ${dirtyPercent}% dirty`, async () => {
      const guestBytes = 16 * MiB;
      const pages = guestBytes / HUGE;
      const result = await postcopy({ mode: 'hugetlb-missing', guestBytes, dirtyPercent, preempt: true });
      assert.equal(result.pageSize, HUGE);
      assert.equal(result.verifiedPages, pages, 'every byte of every huge page');
      assert.equal(result.verifiedReads, result.reads);
      const dirty = Array.from({ length: pages }, (_, i) => isDirty(i, 1, dirtyPercent)).filter(
        Boolean,
      ).length;
      assert.equal(result.dirtyPages, dirty);
      // Only dirtied pages travel again; a clean page stays in the file and never faults.
      assert.equal(result.stats.bytesMoved, dirty * HUGE);
      assert.ok(result.stats.faults <= dirty, `${result.stats.faults} faults for ${dirty} dirty pages`);
      for (const thread of result.threads) assert.equal(thread.state, 'done');
    });
  }

  it('vCPUs touch inside huge pages, not only at their start; 4 KiB pages are read at their start', () => {
    const offsets = Array.from({ length: 16 }, (_, i) => touchOffset(i, HUGE));
    assert.ok(offsets.some((offset) => offset >= 4096));
    for (const offset of offsets) assert.ok(offset >= 0 && offset + 8 <= HUGE);
    for (let i = 0; i < 16; i++) assert.equal(touchOffset(i, 4096), 0);
  });

  it('a size that is not whole huge pages is refused, naming --size', async () => {
    await assert.rejects(
      postcopy({ mode: 'hugetlb', guestBytes: 3 * MiB }),
      /--size: .* 2 MiB huge pages of --mode hugetlb/,
    );
    await assert.rejects(
      postcopyCommand(
        {
          backend: 'model',
          seed: 1,
          json: true,
          mode: 'hugetlb',
          size: 3 * MiB,
          vcpus: 2,
          pattern: 'random',
          dirty: 100,
          preempt: true,
          bandwidth: 0,
          timeout: 10,
        },
        () => {},
      ),
      /--size: 3145728 bytes is not a multiple of 2\.0 MiB, the huge page size of --mode hugetlb/,
    );
  });
});
