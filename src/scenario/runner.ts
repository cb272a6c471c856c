/**
 * Runs a scenario's steps over the process API, so they run on any backend
 * (the model, or the host kernel). Each op is one function given its step
 * typed by the op's schema, found in one table keyed by op.
 */
import {
  type OpCall,
  type OpFunction,
  type OpTable,
  opCall,
  type ScenarioContext,
  UnsupportedStep,
} from './context.ts';
import { INSPECT_OPS, MEMORY_OPS } from './ops-memory.ts';
import { SLEEPING_OPS, THREAD_OPS } from './ops-threads.ts';
import { RANGE_OPS, UFFD_OPS } from './ops-uffd.ts';
import type { ObservedResult } from './result.ts';
import type { OpName, Step, StepOf } from './schema.ts';

export { KernelError } from '../uapi/errno.ts';
export { dataBytes, PROGRESS_PRESET, ScenarioContext, UnsupportedStep } from './context.ts';

/** Every op's function. */
const OPS: OpTable<OpName> = {
  ...MEMORY_OPS,
  ...INSPECT_OPS,
  ...THREAD_OPS,
  ...SLEEPING_OPS,
  ...UFFD_OPS,
  ...RANGE_OPS,
};

/** Runs one step; returns what was observed. Throws UnsupportedStep for an op without a function. */
export async function runStep(context: ScenarioContext, step: Step): Promise<ObservedResult> {
  return run(context, step as StepOf<typeof step.op>);
}

function run<O extends OpName>(
  context: ScenarioContext,
  step: StepOf<O>,
): ObservedResult | Promise<ObservedResult> {
  const fn: OpFunction<O> | undefined = OPS[step.op];
  if (fn === undefined) {
    throw new UnsupportedStep(`op '${step.op}' is not supported by the ${context.backend.name} backend yet`);
  }
  return fn(opCall(context, step) as OpCall<O>);
}
