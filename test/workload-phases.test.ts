/**
 * The workloads' own numbers: every run is split into phases (setup, the
 * phase its faults happen in, verify), and the fault rate is taken over
 * that main phase alone, not over the wall time. Nothing here asserts a
 * duration: phases are checked by name and order, rates by how they are
 * derived from the reported counts and phase lengths.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ModelBackend } from '../src/api/model-backend.ts';
import { backgroundSnapshotCommand, gcCompactionCommand } from '../src/cli/workload.ts';
import { Trace } from '../src/trace/trace.ts';
import { runBackgroundSnapshot } from '../src/workloads/background-snapshot.ts';
import { runGcCompaction } from '../src/workloads/gc-compaction.ts';
import { runPostcopy } from '../src/workloads/postcopy.ts';
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
