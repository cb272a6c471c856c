/**
 * The command line's error conventions: exit 2 for a usage or configuration
 * error (bad option, missing file, malformed scenario), 1 for failures found,
 * 0 otherwise. A user error is one line, never a stack trace; under `--json`
 * it is a JSON document on stdout, so a script that parses stdout sees it.
 */
import { CommanderError } from 'commander';
import { ScenarioError } from '../scenario/parse.ts';

/** Exit codes of every faultline command. */
export const EXIT_OK = 0;
export const EXIT_FINDINGS = 1;
export const EXIT_USAGE = 2;

/** A mistake in how faultline was called or configured: reported in one line, exit 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A Node system error about a path the user gave (ENOENT, EACCES, ELOOP, EISDIR…). */
function isPathError(error: unknown): error is NodeJS.ErrnoException & { path: string } {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).path === 'string';
}

/** The one line a user error prints, or undefined for an error that is faultline's own bug. */
export function userErrorLine(error: unknown): string | undefined {
  if (error instanceof UsageError || error instanceof ScenarioError) return error.message;
  if (error instanceof CommanderError) return error.message.replace(/^error: /, '');
  if (isPathError(error)) {
    const reason = error.code === undefined ? error.message : describeCode(error.code);
    return `${error.path}: ${reason}`;
  }
  return undefined;
}

function describeCode(code: string): string {
  const reasons: Record<string, string> = {
    ENOENT: 'no such file or directory (ENOENT)',
    EACCES: 'permission denied (EACCES)',
    ELOOP: 'too many levels of symbolic links (ELOOP)',
    EISDIR: 'is a directory (EISDIR)',
    ENOTDIR: 'not a directory (ENOTDIR)',
  };
  return reasons[code] ?? code;
}

export interface ErrorReport {
  readonly exitCode: number;
  /** What goes to stderr (text mode) or stdout (JSON mode). */
  readonly text: string;
}

/**
 * Turns anything a command threw into its exit code and what to print. A
 * user error is one line (exit 2); anything else is faultline's bug and keeps
 * its stack (exit 1), so it can be reported.
 */
export function reportError(error: unknown, json: boolean): ErrorReport {
  const line = userErrorLine(error);
  const exitCode = line === undefined ? EXIT_FINDINGS : EXIT_USAGE;
  const message = line ?? (error instanceof Error ? (error.stack ?? error.message) : String(error));
  if (json) {
    const kind = line === undefined ? 'internal' : 'usage';
    return { exitCode, text: JSON.stringify({ version: 1, error: { kind, message, exitCode } }, null, 2) };
  }
  return { exitCode, text: `faultline: ${line === undefined ? 'internal error: ' : ''}${message}` };
}

/**
 * Host commands say once, before anything runs, when the host backend cannot
 * run at all (on stderr, so --json output stays one document).
 */
export function warnHostUnavailable(reason: string | undefined): void {
  if (reason === undefined) return;
  console.error(
    `faultline: the host backend is unavailable: ${reason}; \`faultline doctor\` says how to fix it`,
  );
}

/**
 * A run where every case was skipped checked nothing: exit 2 (the host is not
 * set up for it) unless --allow-skip says that is expected. The line goes to
 * stderr, after the report, so --json output stays one document.
 */
export function skipExitCode(total: number, skipped: number, allowSkip: boolean, exitCode: number): number {
  if (total === 0 || skipped !== total || allowSkip) return exitCode;
  console.error(
    `faultline: nothing ran: ${total === 1 ? 'the one case was' : `all ${total} cases were`} skipped; --allow-skip accepts that`,
  );
  return EXIT_USAGE;
}
