/**
 * The differential fuzzer's generator: every generated case becomes a
 * scenario file that parses under the contract and runs on the model, and a
 * divergence between two backends is found and shrunk.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  FUZZ_MEMORY,
  FUZZ_OP_KINDS,
  fuzzCaseArbitrary,
  materialize,
  scenarioYaml,
} from '../src/fuzz/generate.ts';
import { parseScenario } from '../src/scenario/parse.ts';
import { runScenario } from '../src/scenario/run.ts';

describe('fuzz cases', () => {
  it('serialize to scenario files that parse and run on the model', async () => {
    await fc.assert(
      fc.asyncProperty(fuzzCaseArbitrary(), async (fuzzCase) => {
        const scenario = materialize(fuzzCase, 'fuzz-roundtrip');
        const parsed = parseScenario(scenarioYaml(scenario), 'fuzz-roundtrip.yaml');
        assert.equal(parsed.steps.length, scenario.steps.length);
        assert.deepEqual(
          parsed.steps.map((step) => step.op),
          scenario.steps.map((step) => step.op),
        );
        const report = await runScenario(parsed, { backend: 'model', seed: 1, keepGoing: true });
        // No expectations are written, so only a runner error can fail a fuzz scenario.
        assert.ok(
          report.steps.every((step) => step.status !== 'error'),
          JSON.stringify(report.steps.filter((step) => step.status === 'error')),
        );
      }),
      { numRuns: 40, seed: 4242 },
    );
  });

  it('generates every op kind, every memory type and both userfaultfds', () => {
    const cases = fc.sample(fuzzCaseArbitrary(), { numRuns: 400, seed: 7 });
    const kinds = new Set(cases.flatMap((fuzzCase) => fuzzCase.ops.map((op) => op.op)));
    assert.deepEqual(
      [...FUZZ_OP_KINDS].filter((kind) => !kinds.has(kind)),
      [],
    );
    assert.deepEqual(
      FUZZ_MEMORY.filter((memory) => !cases.some((fuzzCase) => fuzzCase.memory === memory)),
      [],
    );
    const steps = cases.flatMap((fuzzCase) => materialize(fuzzCase, 'kinds').steps);
    const has = (predicate: (step: (typeof steps)[number]) => boolean) => steps.some(predicate);
    // The states the widened fuzzer must reach, as scenario steps.
    assert.ok(has((step) => step.op === 'register' && step.args.uffd === 'v'));
    assert.ok(has((step) => step.op === 'register' && step.args.map === 'b'));
    assert.ok(
      has((step) => step.op === 'copy' && (step.args.src as { map?: string } | undefined)?.map === 's'),
    );
    assert.ok(
      has((step) => step.op === 'copy' && (step.args.src as { map?: string } | undefined)?.map === 'b'),
    );
    // A COPY whose source is the destination map itself.
    assert.ok(
      has(
        (step) =>
          step.op === 'copy' && (step.args.src as { map?: string } | undefined)?.map === step.args.map,
      ),
    );
    assert.ok(has((step) => step.op === 'mremap' && step.args.onto === 'r'));
    assert.ok(has((step) => step.op === 'mremap' && step.args.onto === undefined));
    assert.ok(has((step) => step.op === 'mprotect' && step.args.prot === 'none'));
    assert.ok(has((step) => step.op === 'madvise' && step.args.advice === 'remove'));
    assert.ok(has((step) => step.op === 'fallocate'));
    assert.ok(has((step) => step.op === 'munmap'));
    assert.ok(has((step) => step.op === 'fork'));
    assert.ok(has((step) => step.op === 'exit'));
    assert.ok(has((step) => step.op === 'thread' && step.args.process !== undefined));
    assert.ok(has((step) => step.op === 'thread' && step.args.access === 'syscall_read'));
    assert.ok(has((step) => step.op === 'signal'));
    assert.ok(has((step) => step.op === 'read_event' && step.args.uffd === 'v'));
    assert.ok(has((step) => step.op === 'guest_memfd'));
    const features = new Set(cases.flatMap((fuzzCase) => [...fuzzCase.features, ...fuzzCase.featuresV]));
    for (const feature of ['event_fork', 'event_remap', 'event_unmap', 'event_remove'])
      assert.ok(features.has(feature), feature);
  });
});
