/**
 * The workloads' own numbers: every run is split into phases (setup, the
 * phase its faults happen in, verify), and the fault rate is taken over
 * that main phase alone, not over the wall time. Nothing here asserts a
 * duration: phases are checked by name and order, rates by how they are
 * derived from the reported counts and phase lengths.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ModelBackend } from '../src/api/model-backend.ts';
import { Process } from '../src/api/process.ts';
import {
  backgroundSnapshotCommand,
  gcCompactionCommand,
  snapshotRestoreCommand,
} from '../src/cli/workload.ts';
import { Trace } from '../src/trace/trace.ts';
import { runBackgroundSnapshot } from '../src/workloads/background-snapshot.ts';
import { runGcCompaction } from '../src/workloads/gc-compaction.ts';
import { runPostcopy } from '../src/workloads/postcopy.ts';
import { backendClock, runSnapshotRestore } from '../src/workloads/snapshot-restore.ts';
import { WorkloadStats } from '../src/workloads/stats.ts';
import { differingPages, matchingPages } from '../src/workloads/verify.ts';
import { MiB } from './helpers.ts';

function phaseNames(stats: WorkloadStats): string[] {
  return stats.phases.map((phase) => phase.name);
}

/** Phases follow each other without gaps or overlaps. */
function assertContiguous(stats: WorkloadStats): void {
  for (let i = 1; i < stats.phases.length; i++)
    assert.equal(stats.phases[i]!.startMs, stats.phases[i - 1]!.endMs, `phase ${stats.phases[i]!.name}`);
}

describe('WorkloadStats phases', () => {
  it('the fault rate is over the main phase, not over setup and verification', () => {
    const stats = new WorkloadStats(1, 'restore');
    stats.beginPhase('setup', 0);
    stats.beginPhase('restore', 1000);
    for (let page = 0; page < 500; page++) stats.record({ atMs: 1500, page, kind: 'minor', latencyUs: 1 }, 0);
    stats.beginPhase('verify', 2000);
    stats.endPhase(10_000);
    assert.deepEqual(phaseNames(stats), ['setup', 'restore', 'verify']);
    assert.equal(stats.phaseMs('setup'), 1000);
    assert.equal(stats.phaseMs('restore'), 1000);
    assert.equal(stats.phaseMs('verify'), 8000);
    // 500 faults in the one second of the restore phase (over the 10 s of the run it would be 50/s).
    assert.equal(stats.faultRate, 500);
    const json = stats.toJson();
    assert.deepEqual(json.phasesMs, { setup: 1000, restore: 1000, verify: 8000 });
    assert.equal(json.mainPhase, 'restore');
    assert.equal(json.faultRate, 500);
  });

  it('has no rate before its main phase ended', () => {
    const stats = new WorkloadStats(1, 'restore');
    stats.beginPhase('setup', 0);
    stats.beginPhase('restore', 5);
    assert.ok(Number.isNaN(stats.faultRate));
    assert.equal(stats.toJson().faultRate, null);
  });

  it('endPhase without a phase under way does nothing', () => {
    const stats = new WorkloadStats(1);
    stats.endPhase(3);
    assert.deepEqual(stats.phases, []);
  });
});

describe('each workload reports its phases', () => {
  it('background-snapshot: setup, snapshot (the WP faults), verify', async () => {
    const result = await runBackgroundSnapshot({
      backend: new ModelBackend({ seed: 1 }),
      mode: 'wp-unpopulated',
      guestBytes: MiB,
      vcpus: 2,
      seed: 1,
      writePercent: 50,
      rounds: 1,
      chunkPages: 16,
      trace: new Trace(1, false),
    });
    assert.deepEqual(phaseNames(result.stats), ['setup', 'snapshot', 'verify']);
    assert.equal(result.stats.mainPhase, 'snapshot');
    assertContiguous(result.stats);
    for (const fault of result.stats.samples) {
      const snapshot = result.stats.phases[1]!;
      assert.ok(
        fault.atMs >= snapshot.startMs && fault.atMs <= snapshot.endMs,
        'every fault is in the main phase',
      );
    }
  });

  it('gc-compaction: setup, compaction (the SIGBUS), verify', async () => {
    const result = await runGcCompaction({
      backend: new ModelBackend({ seed: 1 }),
      mode: 'copy',
      heapBytes: MiB,
      mutators: 2,
      seed: 1,
      livePercent: 50,
      readsPerMutator: 200,
      chunkPages: 8,
      trace: new Trace(1, false),
    });
    assert.deepEqual(phaseNames(result.stats), ['setup', 'compaction', 'verify']);
    assert.equal(result.stats.mainPhase, 'compaction');
    assertContiguous(result.stats);
    assert.equal(result.verifiedPages, result.toPages);
  });

  it('postcopy: setup, start source, precopy, postcopy (the faults), stop source, verify', async () => {
    const result = await runPostcopy({
      backend: new ModelBackend({ seed: 1 }),
      mode: 'anon',
      guestBytes: MiB,
      vcpus: 2,
      pattern: 'random',
      seed: 1,
      dirtyPercent: 50,
      preempt: true,
      bandwidthBytes: 0,
      timeoutMs: 20_000,
      trace: new Trace(1, false),
    });
    assert.deepEqual(phaseNames(result.stats), [
      'setup',
      'start source',
      'precopy',
      'postcopy',
      'stop source',
      'verify',
    ]);
    assert.equal(result.stats.mainPhase, 'postcopy');
    const postcopy = result.stats.phases[3]!;
    for (const fault of result.stats.samples)
      assert.ok(
        fault.atMs >= postcopy.startMs && fault.atMs <= postcopy.endMs,
        'every fault is after switchover',
      );
    assert.equal(result.verifiedPages, result.pages);
    assert.equal(result.verifiedReads, result.reads);
  });
});

describe('snapshot-restore reports setup, restore and verify', () => {
  for (const mode of ['anon', 'gmem-minor'] as const) {
    it(`${mode}: the faults all lie in the restore phase, on the run's clock`, async () => {
      const backend = new ModelBackend({ seed: 2, version: '7.1' });
      const result = await runSnapshotRestore({
        backend,
        mode,
        guestBytes: MiB,
        vcpus: 2,
        pattern: 'random',
        seed: 2,
        prefetchWindow: 0,
        trace: new Trace(1, false),
      });
      assert.deepEqual(phaseNames(result.stats), ['setup', 'restore', 'verify']);
      assert.equal(result.stats.mainPhase, 'restore');
      assertContiguous(result.stats);
      assert.equal(result.stats.faults, 256);
      // Samples are on the model's clock (the handler's session.now()); so are the phases' clock times.
      const restore = result.stats.phases[1]!;
      for (const fault of result.stats.samples)
        assert.ok(fault.atMs >= restore.clockStartMs && fault.atMs <= restore.clockEndMs, `${fault.atMs}`);
      assert.equal(result.verifiedPages, result.pages);
    });
  }

  it('--json: phasesMs and the rate over the restore phase; the trace is on the model clock', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'faultline-phases-'));
    const lines: string[] = [];
    const code = await snapshotRestoreCommand(
      {
        backend: 'model',
        mode: 'gmem-minor',
        size: '1M',
        vcpus: 2,
        pattern: 'sequential',
        seed: 1,
        prefetchWindow: 0,
        balloon: 0,
        handlerTimeout: 10_000,
        trace: join(dir, 'trace.json'),
        json: true,
      },
      (line) => lines.push(line),
    );
    assert.equal(code, 0);
    const report = JSON.parse(lines.join('\n')) as {
      faults: number;
      faultRate: number;
      mainPhase: string;
      phasesMs: Record<string, number>;
    };
    assert.deepEqual(Object.keys(report.phasesMs), ['setup', 'restore', 'verify']);
    assert.equal(report.mainPhase, 'restore');
    assert.equal(report.faults, 256);
    const expected = report.faults / (report.phasesMs.restore! / 1000);
    assert.ok(
      Math.abs(report.faultRate - expected) <= 1 + expected * 1e-3,
      `${report.faultRate} vs ${expected}`,
    );
    // Every event is on one clock: the model's, from 0 at boot (not clamped to 0 against the wall clock).
    const trace = JSON.parse(readFileSync(join(dir, 'trace.json'), 'utf8')) as {
      traceEvents: { ph: string; ts: number; name: string; cat: string; dur?: number }[];
    };
    const timed = trace.traceEvents.filter((event) => event.ph !== 'M');
    assert.ok(new Set(timed.map((event) => event.ts)).size > 256, 'faults at distinct times');
    const phases = timed.filter((event) => event.cat === 'phase').map((event) => event.name);
    assert.deepEqual(phases, ['setup', 'restore', 'verify']);
  });

  it('the run clock is the model clock on the model', () => {
    const backend = new ModelBackend({ seed: 1 });
    const clock = backendClock(backend);
    const before = clock();
    backend.kernel.clock.advance(5e6);
    assert.equal(clock() - before, 5);
  });
});

describe('Process.readInto', () => {
  it("fills the caller's buffer with what read() returns, across pages", () => {
    const process = new Process(new ModelBackend({ seed: 1 }).self);
    const address = process.mmap({ length: 3 * 4096 });
    const bytes = new Uint8Array(3 * 4096).map((_, i) => (i * 7) % 256);
    process.write(address, bytes);
    const into = new Uint8Array(4096 + 100);
    assert.equal(process.readInto(address + 4000, into), into);
    assert.deepEqual(into, process.read(address + 4000, into.byteLength));
    assert.deepEqual(into, bytes.subarray(4000, 4000 + into.byteLength));
  });
});

describe('workload commands print the phases and the rate over the main phase', () => {
  it('--json: phasesMs, and faultRate derived from the main phase alone', async () => {
    const lines: string[] = [];
    const code = await gcCompactionCommand(
      {
        backend: 'model',
        seed: 1,
        json: true,
        mode: 'move',
        size: MiB,
        mutators: 2,
        live: 50,
        reads: 500,
        chunk: 4,
      },
      (line) => lines.push(line),
    );
    assert.equal(code, 0);
    const report = JSON.parse(lines.join('\n')) as {
      faults: number;
      faultRate: number;
      mainPhase: string;
      phasesMs: Record<string, number>;
      elapsedMs: number;
    };
    assert.deepEqual(Object.keys(report.phasesMs), ['setup', 'compaction', 'verify']);
    assert.equal(report.mainPhase, 'compaction');
    assert.ok(report.faults > 0);
    const expected = report.faults / (report.phasesMs.compaction! / 1000);
    // Both sides are rounded (the rate to an integer, the phase to a microsecond).
    assert.ok(
      Math.abs(report.faultRate - expected) <= 1 + expected * 1e-3,
      `${report.faultRate} vs ${expected}`,
    );
    const phasesTotal = Object.values(report.phasesMs).reduce((sum, ms) => sum + ms, 0);
    assert.ok(phasesTotal <= report.elapsedMs + 1, 'the phases lie within the wall time');
  });

  it('text: a row per phase, the main phase marked, and the rate named after it', async () => {
    const lines: string[] = [];
    const code = await backgroundSnapshotCommand(
      {
        backend: 'model',
        seed: 1,
        json: false,
        mode: 'shmem',
        size: MiB,
        vcpus: 1,
        writePercent: 50,
        rounds: 1,
        chunk: 16,
      },
      (line) => lines.push(line),
    );
    assert.equal(code, 0);
    const text = lines.join('\n');
    assert.match(text, /^ {2}setup +[\d,.]+ ms$/m);
    assert.match(text, /^ {2}snapshot \(faults\) +[\d,.]+ ms$/m);
    assert.match(text, /^ {2}verify +[\d,.]+ ms$/m);
    assert.match(text, /^wall time +[\d,.]+ ms$/m);
    assert.match(text, /^fault rate \(snapshot\) +([\d,]+ faults\/s|n\/a)$/m);
  });
});

describe('verification compares whole slices, page by page only where they differ', () => {
  const pageSize = 4096;
  const expected = new Uint8Array(8 * pageSize).map((_, i) => i % 251);
  it('counts every page when all match', () => {
    assert.equal(matchingPages(expected.slice(), expected, pageSize), 8);
    assert.deepEqual(differingPages(expected.slice(), expected, pageSize, 16), []);
  });
  it('finds the pages that differ, one changed byte each', () => {
    const actual = expected.slice();
    actual[2 * pageSize + 17]! ^= 1;
    actual[7 * pageSize + pageSize - 1]! ^= 0x80;
    assert.equal(matchingPages(actual, expected, pageSize), 6);
    assert.deepEqual(differingPages(actual, expected, pageSize, 16), [2, 7]);
    assert.deepEqual(differingPages(actual, expected, pageSize, 1), [2]);
  });
});
