/**
 * fs/userfaultfd.c's file side: the userfaultfd(2) system call and the
 * /dev/userfaultfd device with its USERFAULTFD_IOC_NEW.
 */
import { O_ACCMODE, O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY } from '../../uapi/constants.ts';
import { EACCES, EINVAL, EPERM } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { ModelProcess } from '../process.ts';
import { UffdContext } from '../uffd/context.ts';
import { UffdFile } from '../uffd/ioctl.ts';
import { openedFmode } from './file.ts';

export function userfaultfd(process: ModelProcess, flags: number): number {
  const allowed =
    flags & UFFD_USER_MODE_ONLY || process.privileged || process.kernel.unprivilegedUserfaultfd === 1;
  if (!allowed)
    return process.fail(
      EPERM,
      'flags',
      'vm.unprivileged_userfaultfd is 0 and the caller lacks CAP_SYS_PTRACE',
    );
  return newUserfaultfd(process, flags);
}

/** A new context and its fd; the caller has passed the permission check (sysctl or the device node). */
export function newUserfaultfd(process: ModelProcess, flags: number): number {
  const known = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
  if ((flags & ~known) !== 0) return process.fail(EINVAL, 'flags', `unknown flags ${hex(flags & ~known)}`);
  const kernel = process.kernel;
  const ctx = new UffdContext(
    kernel.allocateContextId(),
    process.mm,
    (flags & UFFD_USER_MODE_ONLY) !== 0,
    kernel,
  );
  ctx.fileReferences = 1;
  ctx.openFlags = flags & (O_CLOEXEC | O_NONBLOCK);
  const uffd = new UffdFile(ctx, kernel.env, flags & (O_CLOEXEC | O_NONBLOCK));
  return process.installFd({ kind: 'uffd', uffd, references: 1 });
}

/** open("/dev/userfaultfd"): a root-only device node (mode 0600). */
export function openDevUserfaultfd(process: ModelProcess, accessMode: number): number {
  if (!process.privileged) return process.fail(EACCES, 'path', '/dev/userfaultfd is mode 0600 root');
  if ((accessMode & O_ACCMODE) === O_ACCMODE) return process.fail(EINVAL, 'flags', 'bad access mode');
  // userfaultfd_dev_fops has no read or write: read(2) and write(2) are EINVAL, pwrite EBADF when read-only.
  const fmode = openedFmode(accessMode, { read: false, write: false });
  return process.installFd({ kind: 'dev-userfaultfd', fmode, references: 1 });
}
