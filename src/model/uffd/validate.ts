/** Range validation shared by the userfaultfd ioctls (validate_range, validate_unaligned_range). */
import { PAGE_SIZE, TASK_SIZE } from '../../uapi/constants.ts';
import { EINVAL } from '../../uapi/errno.ts';
import { type FailureRecord, hex } from '../failure.ts';

/** vm.mmap_min_addr's default: the kernel refuses ranges starting below it. */
export const MMAP_MIN_ADDR = 65536;

/** validate_unaligned_range: the start may be unaligned (COPY's src); the length may not. */
export function validateUnalignedRange(
  failure: FailureRecord,
  start: number,
  length: number,
  argument: string,
): number {
  if (length % PAGE_SIZE !== 0)
    return failure.fail(EINVAL, `${argument}.len`, `${hex(length)} is not a multiple of the page size`);
  if (length === 0) return failure.fail(EINVAL, `${argument}.len`, 'is zero');
  if (start < MMAP_MIN_ADDR) return failure.fail(EINVAL, argument, `${hex(start)} is below mmap_min_addr`);
  if (start >= TASK_SIZE) return failure.fail(EINVAL, argument, `${hex(start)} is beyond TASK_SIZE`);
  if (length > TASK_SIZE - start) return failure.fail(EINVAL, `${argument}.len`, 'runs past TASK_SIZE');
  return 0;
}

/** validate_range: also requires a page-aligned start. */
export function validateRange(
  failure: FailureRecord,
  start: number,
  length: number,
  argument: string,
): number {
  if (start % PAGE_SIZE !== 0) return failure.fail(EINVAL, argument, `${hex(start)} is not page aligned`);
  return validateUnalignedRange(failure, start, length, argument);
}
