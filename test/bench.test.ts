import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ModelBackend } from '../src/api/model-backend.ts';
import { type BenchReport, failures, isMeasurement, runBench } from '../src/bench/bench.ts';
import { BENCH_HANDLER_PATH, binaryBenchUnavailable } from '../src/bench/binary.ts';
import { measureExploreBinary } from '../src/bench/explore.ts';
import { runRoundTrip } from '../src/bench/round-trip.ts';
import { findRow, ROWS } from '../src/bench/rows.ts';
import { measureMetadata, measureSparse } from '../src/bench/scale.ts';
import { formatReport } from '../src/cli/bench.ts';
import { hostUnavailable } from '../src/host/capabilities.ts';

const MIB = 1024 * 1024;

describe('bench round trips on the model', () => {
  for (const row of ROWS) {
    it(`${row.id}: one fault per chunk, every byte checked`, async () => {
      const bytes = row.bytesPerFault >= 2 * MIB ? 8 * MIB : 2 * MIB;
      const backend = new ModelBackend({ seed: 7, memory: { hugePages2M: 8 } });
      const result = await runRoundTrip(backend, row, bytes);
      assert.equal(result.faults, bytes / row.bytesPerFault);
      assert.ok(result.ns > 0);
      // Everything the row set up is gone again: a second run over the same model works too.
      const again = await runRoundTrip(backend, row, bytes);
      assert.equal(again.faults, result.faults);
      assert.equal(backend.kernel.memory.hugePagesFree, 8);
    });
  }

  it('two faulting threads split the region and the handler serves both', async () => {
    const row = findRow('missing-copy-4k')!;
    const result = await runRoundTrip(new ModelBackend({ seed: 3 }), row, 4 * MIB, 2);
    assert.equal(result.faults, 1024);
  });

  it('rejects a region that does not split into chunks', async () => {
    const row = findRow('missing-copy-64k')!;
    await assert.rejects(runRoundTrip(new ModelBackend({ seed: 1 }), row, 100 * 1024), /not split|multiple/);
  });
});

describe('bench scale rows', () => {
  it('a 1 TiB sparse mapping registered for MISSING costs well under 16 MiB on the model', () => {
    const result = measureSparse(new ModelBackend({ seed: 1 }), 2 ** 40);
    assert.ok(result.addedBytes < 16 * MIB, `${result.addedBytes} bytes`);
  });

  it('explore with the C handler binary: one worker and two, the children counted, every schedule passing', {
    skip: binaryBenchUnavailable(),
  }, async () => {
    const result = await measureExploreBinary({ schedules: 12, path: BENCH_HANDLER_PATH });
    assert.ok(result !== null);
    assert.equal(result.failure, null);
    assert.deepEqual(
      [result.oneWorker.workers, result.oneWorker.schedules, result.allWorkers.schedules],
      [1, 12, 12],
    );
    assert.ok(result.allWorkers.workers >= 2);
    // The binaries' and the connectors' CPU is counted with the process's.
    assert.ok(result.oneWorker.cpuMsPerSchedule > 0 && result.allWorkers.cpuMsPerSchedule > 0);
    assert.equal(await measureExploreBinary({ schedules: 1, path: '/nonexistent/fc_handler' }), null);
  });

  it('metadata per populated page is measured beside the frames', () => {
    const result = measureMetadata(16 * 1024);
    assert.ok(result.frameBytes >= 16 * 1024 * 4096);
    assert.ok(result.bytesPerPage > 0 && result.bytesPerPage < 256, `${result.bytesPerPage}`);
  });
});

describe('faultline bench', () => {
  it('reports every backend, the ratios and the targets as one versioned document', async () => {
    const report: BenchReport = await runBench({
      quick: true,
      regionBytes: 2 * MIB,
      runs: 1,
      rows: ['missing-copy-4k', 'missing-zeropage-4k'],
      skipScale: true,
    });
    assert.equal(report.version, 1);
    assert.deepEqual(
      report.rows.map((row) => row.id),
      ['missing-copy-4k', 'missing-zeropage-4k'],
    );
    for (const row of report.rows) {
      assert.ok(isMeasurement(row.results.model), JSON.stringify(row.results.model));
      assert.equal(row.results.model.faults, 512);
      if (hostUnavailable() === undefined) {
        assert.ok(isMeasurement(row.results.cHost), JSON.stringify(row.results.cHost));
        assert.ok(isMeasurement(row.results.tsHost), JSON.stringify(row.results.tsHost));
        assert.equal(row.results.cHost.faults, 512);
        assert.ok((row.ratios.modelOverC ?? 0) > 0);
      } else {
        assert.equal(row.ratios.modelOverC, null);
      }
    }
    // The C handler binary: the same program on the model (interception) and the host, every byte checked.
    const binary = report.binaryHandler;
    assert.ok(binary !== null, 'the test handler is built by npm ci');
    assert.ok(isMeasurement(binary.model), JSON.stringify(binary.model));
    assert.equal(binary.model.faults, 511);
    assert.ok((binary.callsPerFault ?? 0) >= 1, `${binary.callsPerFault} trapped calls per fault`);
    if (hostUnavailable() === undefined) {
      assert.ok(isMeasurement(binary.host), JSON.stringify(binary.host));
      assert.ok((binary.modelOverHost ?? 0) > 0);
    }
    const names = report.targets.map((target) => target.name);
    assert.ok(names.includes('missing-copy-4k: model / C host'));
    assert.ok(names.includes('missing-copy-4k: TypeScript host / C host'));
    const text = formatReport(report).join('\n');
    assert.match(text, /MISSING \+ COPY 4 KiB/);
    assert.match(text, /targets:/);
    assert.match(text, /C handler binary .*\n.*\n\s*model, seccomp interception/);
    assert.doesNotThrow(() => JSON.parse(JSON.stringify(report)));
    assert.deepEqual(failures(report), []);
    const broken: BenchReport = {
      ...report,
      rows: report.rows.map((row, index) =>
        index === 0
          ? {
              ...row,
              results: { ...row.results, model: { unavailable: 'byte at offset 4096 is 0', failed: true } },
            }
          : row,
      ),
    };
    assert.deepEqual(failures(broken), ['missing-copy-4k on model: byte at offset 4096 is 0']);
  });

  it('names an unknown row', async () => {
    await assert.rejects(runBench({ quick: true, rows: ['nope'], skipScale: true }), /--rows: no row 'nope'/);
  });

  it('names a bad option in a one-line error', () => {
    const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
    for (const [args, message] of [
      [['--rows', 'nope'], /--rows <id>.*no row 'nope' \(rows: missing-copy-4k,/],
      [['--size', '3M'], /--size <bytes>.*'3M' is not a multiple of 2M/],
      [['--runs', '0'], /--runs <n>.*'0' is not a positive integer/],
    ] as const) {
      const run = spawnSync(process.execPath, ['--import', 'tsx', main, 'bench', ...args], {
        encoding: 'utf8',
      });
      assert.equal(run.status, 2, args.join(' '));
      assert.match(run.stderr, message);
      assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    }
  });
});
