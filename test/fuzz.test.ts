/**
 * The differential fuzzer's generator: every generated case becomes a
 * scenario file that parses under the contract and runs on the model, and a
 * divergence between two backends is found and shrunk.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzCaseArbitrary, materialize, scenarioYaml } from '../src/fuzz/generate.ts';
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
});
