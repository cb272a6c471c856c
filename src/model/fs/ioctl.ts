/** fs/ioctl.c: ioctl(2) dispatched by what the fd refers to. */
import { O_RDWR, USERFAULTFD_IOC_NEW } from '../../uapi/constants.ts';
import { EBADF, EFAULT, EINVAL, ENOTTY } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import { inodeOfView } from '../mm/hook-views.ts';
import type { DeviceFile } from '../mm/memtype.ts';
import type { ModelProcess } from '../process.ts';
import { pseudoFmode } from './file.ts';
import { newUserfaultfd } from './userfaultfd.ts';

export function ioctl(
  process: ModelProcess,
  fd: number,
  request: number,
  arg: Uint8Array | number | null,
): number {
  const file = process.file(fd);
  if (file === undefined) return process.fail(EBADF, 'fd', `${fd} is not open`);
  if (file.kind === 'dev-userfaultfd') {
    if (request !== USERFAULTFD_IOC_NEW)
      return process.fail(EINVAL, 'request', `unknown /dev/userfaultfd ioctl ${hex(request >>> 0)}`);
    // The device node's permissions are the only gate: no sysctl or capability check.
    return newUserfaultfd(process, typeof arg === 'number' ? arg : 0);
  }
  if (file.kind === 'device') return deviceIoctl(process, file.device, request, arg);
  if (file.kind === 'uffd') {
    if (typeof arg === 'number')
      return process.fail(EFAULT, 'arg', 'expected a pointer to the argument struct');
    return file.uffd.ioctl(process.uffdCaller, request, arg);
  }
  return process.fail(ENOTTY, 'fd', 'inappropriate ioctl for device');
}

/** A memory type's device: its ioctl may hand back a new device file or a file the core made. */
function deviceIoctl(
  process: ModelProcess,
  device: DeviceFile,
  request: number,
  arg: Uint8Array | number | null,
): number {
  const result = device.ioctl(request, arg);
  if (typeof result === 'number') return result;
  if ('errno' in result) return process.fail(result.errno, result.argument, result.reason);
  if ('installDevice' in result) {
    // anon_inode_getfd(..., O_RDWR), as KVM makes its VM and vCPU fds.
    const fmode = pseudoFmode(O_RDWR, { read: false, write: false });
    return process.installFd({
      kind: 'device',
      device: result.installDevice,
      fmode,
      inodeType: 'anon',
      references: 1,
    });
  }
  // A device hands back the view of a file the core made; anything else is refused.
  const inode = inodeOfView(result.installInode);
  if (inode === null)
    return process.fail(EFAULT, 'request', `${device.name} handed back a file the core did not make`);
  inode.references++;
  return process.installFd({ kind: 'inode', inode, accessMode: result.accessMode, flags: 0, references: 1 });
}
