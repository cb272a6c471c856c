/**
 * `faultline/scenario`: scenario files as a library — load and validate them
 * (errors name `file:line:col: field`), run them on a backend, diff the model
 * against the host kernel, and the JSON Schema editors use.
 *
 * @packageDocumentation
 */
export { type DiffReport, type Divergence, diffScenario } from './diff.ts';
export {
  loadScenarios,
  parseScenario,
  type Scenario,
  ScenarioError,
  type Step,
  scenarioFiles,
} from './parse.ts';
export {
  type BackendName,
  type RunOptions,
  runScenario,
  type ScenarioReport,
  type StepReport,
} from './run.ts';
export { scenarioJsonSchema } from './schema.ts';
