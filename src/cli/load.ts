/** Loading scenario files for a command: a malformed file is reported as one line and nothing runs. */
import { loadScenarios, type Scenario, ScenarioError } from '../scenario/parse.ts';

export function loadOrReport(path: string, out: (line: string) => void): Scenario[] | undefined {
  try {
    return loadScenarios(path);
  } catch (error) {
    if (error instanceof ScenarioError) {
      out(error.message);
      return undefined;
    }
    throw error;
  }
}
