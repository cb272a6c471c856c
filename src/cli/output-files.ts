/**
 * Files the command line writes (`--trace`, `--plot`, `--record-working-set`):
 * checked before anything runs, so a mistyped path costs no run. faultline
 * creates the file, never a directory: a missing parent directory is a usage
 * error (as for `cc -o` or `tar -f`), since creating directories wherever a
 * path points leaves them behind on every typo.
 */
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { UsageError } from './errors.ts';

/** Throws a one-line UsageError naming `option` when `file` cannot be created or replaced. */
export function checkOutputFile(option: string, file: string): void {
  if (file === '') throw new UsageError(`${option}: an empty path`);
  const parent = dirname(file);
  const parentType = fileType(parent);
  if (parentType === 'missing')
    throw new UsageError(`${option} ${file}: directory ${parent} does not exist (create it first)`);
  if (parentType !== 'directory') throw new UsageError(`${option} ${file}: ${parent} is not a directory`);
  if (fileType(file) === 'directory') throw new UsageError(`${option} ${file}: is a directory`);
}

function fileType(path: string): 'missing' | 'directory' | 'other' {
  try {
    return statSync(path).isDirectory() ? 'directory' : 'other';
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    // ENOTDIR: a component of the path is a file; ELOOP, EACCES: the path cannot be reached.
    if (code === 'ENOTDIR') return 'other';
    throw error;
  }
}
