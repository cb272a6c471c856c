/** `faultline doctor`: what the host backend can use here, and the fix for each missing piece. */
import { type DoctorCheck, doctorChecks } from '../host/doctor.ts';

/** 0 when every piece is there, 1 when one is missing (`checks`: this machine's, unless a test passes its own). */
export function doctorCommand(
  options: { json: boolean },
  out: (line: string) => void,
  checks: readonly DoctorCheck[] = doctorChecks(),
): number {
  const missing = checks.filter((check) => !check.ok).length;
  if (options.json) {
    out(JSON.stringify({ version: 1, checks, missing }, null, 2));
    return missing === 0 ? 0 : 1;
  }
  for (const check of checks) {
    out(`${check.ok ? 'ok     ' : 'MISSING'} ${check.name}: ${check.detail}`);
    if (!check.ok) {
      out(`        needed by: ${check.neededBy}`);
      out(`        fix: ${check.fix}`);
    }
  }
  out(missing === 0 ? 'everything the host backend uses is here' : `${missing} missing`);
  return missing === 0 ? 0 : 1;
}
