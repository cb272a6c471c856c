/**
 * `faultline/conformance`: the memory-type conformance suite — every case
 * against the built-in types and against memory type modules of your own.
 *
 * @packageDocumentation
 */
export { CASES, type CaseSkip, type ConformanceCase } from './cases.ts';
export { loadMemoryTypeModule, ModuleLoadError } from './module.ts';
export {
  type CaseResult,
  type CaseStatus,
  CONFORMANCE_FORMAT,
  CONFORMANCE_VERSION,
  ConformanceError,
  type ConformanceOptions,
  type ConformanceReport,
  type ExtraModule,
  runConformance,
  type TypeSummary,
} from './runner.ts';
