/**
 * guest_memfd: KVM guest memory as a file, created by KVM_CREATE_GUEST_MEMFD
 * on a VM fd from /dev/kvm, which this module also provides. Behaves as
 * Linux 6.18 does (uapi-facts.md §9), and, with the kernel option
 * `uffdGuestMemfd` (the default for version 7.1), supports userfaultfd MINOR
 * and MISSING through the final vm_uffd_ops, for files created with
 * GUEST_MEMFD_FLAG_INIT_SHARED.
 *
 * `write(2)` population (page-aligned offset and length, shared pages only)
 * follows the guest_memfd write patch (v7, Nov 2025), which is beyond 6.18.
 */
import {
  _UFFDIO_CONTINUE,
  _UFFDIO_COPY,
  _UFFDIO_WAKE,
  _UFFDIO_ZEROPAGE,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  GUEST_MEMFD_FLAG_INIT_SHARED,
  GUEST_MEMFD_FLAG_MMAP,
  KVM_API_VERSION,
  KVM_CAP_GUEST_MEMFD,
  KVM_CAP_GUEST_MEMFD_FLAGS,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_GUEST_MEMFD,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  O_CLOEXEC,
  O_RDWR,
} from '../../../uapi/constants.ts';
import { EFAULT, EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, ESPIPE } from '../../../uapi/errno.ts';
import {
  decodeKvmCreateGuestMemfd,
  encodeKvmCreateGuestMemfd,
  KVM_CREATE_GUEST_MEMFD_SIZE,
} from '../../../uapi/structs.ts';
import { hex } from '../../failure.ts';
import {
  type DeviceDriver,
  type DeviceFile,
  type DeviceIoctlFailure,
  FAULT_SIGBUS,
  type InodeView,
  type MemoryType,
  type MemoryTypeModule,
  type MemoryTypeServices,
} from '../../mm/memtype.ts';
import { type FilemapPolicy, filemapFault, filemapGetForWrite, filemapUffdOps } from '../filemap.ts';

const NAME = 'guest_memfd';
const VALID_FLAGS = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
const policy: FilemapPolicy = { order: 0, hugetlb: false, privateHolesAreAnonymous: false };
const bit = (nr: number) => 1n << BigInt(nr);

interface GuestMemfdState {
  readonly flags: number;
}

function flagsOf(inode: InodeView | null): number {
  return (inode?.typeState as GuestMemfdState | undefined)?.flags ?? 0;
}

/** A refused KVM ioctl, with the argument at fault and why. */
function refuse(errno: number, argument: string, reason: string): DeviceIoctlFailure {
  return { errno, argument, reason };
}

/** The KVM system fd and VM fds: just enough KVM to create guest_memfd files. */
function kvmSystem(create: (size: number, flags: number) => InodeView): DeviceFile {
  const checkExtension = (arg: Uint8Array | number | null): number => {
    if (arg === KVM_CAP_GUEST_MEMFD) return 1;
    if (arg === KVM_CAP_GUEST_MEMFD_FLAGS) return VALID_FLAGS;
    return 0;
  };
  const vm: DeviceFile = {
    name: 'kvm-vm',
    ioctl(request, arg) {
      if (request === KVM_CHECK_EXTENSION) return checkExtension(arg);
      if (request !== KVM_CREATE_GUEST_MEMFD)
        return refuse(EINVAL, 'request', `unknown KVM VM ioctl ${hex(request >>> 0)}`);
      if (!(arg instanceof Uint8Array) || arg.byteLength < KVM_CREATE_GUEST_MEMFD_SIZE) {
        return refuse(EFAULT, 'arg', 'expected struct kvm_create_guest_memfd');
      }
      const request_ = decodeKvmCreateGuestMemfd(arg);
      const size = Number(request_.size);
      const flags = Number(request_.flags);
      if (request_.flags & ~BigInt(VALID_FLAGS))
        return refuse(EINVAL, 'flags', `unknown flags ${hex(request_.flags)}`);
      if (request_.reserved.some((word) => word !== 0n)) return refuse(EINVAL, 'reserved', 'must be zero');
      if (size <= 0 || size % 4096 !== 0)
        return refuse(EINVAL, 'size', `${size} is not a positive multiple of the page size`);
      return { installInode: create(size, flags), accessMode: O_RDWR };
    },
  };
  return {
    name: 'kvm',
    ioctl(request, arg) {
      if (request === KVM_GET_API_VERSION) return KVM_API_VERSION;
      if (request === KVM_CHECK_EXTENSION) return checkExtension(arg);
      if (request === KVM_CREATE_VM) {
        if (arg !== 0 && arg !== null)
          return refuse(EINVAL, 'type', `VM type ${String(arg)} is not supported`);
        return { installDevice: vm };
      }
      return refuse(EINVAL, 'request', `unknown KVM ioctl ${hex(request >>> 0)}`);
    },
  };
}

function create(services: MemoryTypeServices): MemoryType {
  // The final vm_uffd_ops reached mainline around 7.1; 6.18 refuses guest_memfd registration.
  const option = services.kernelOption('uffdGuestMemfd');
  const userfaultfd = typeof option === 'boolean' ? option : services.kernelOption('version') === '7.1';
  const getForWrite = filemapGetForWrite(services, policy);
  // 6.18's kvm_gmem_fops has neither write nor llseek [OBS: host 6.18, write EINVAL, lseek ESPIPE];
  // the model's 7.1 takes write() population at the file position, as Firecracker's handler uses it.
  const populateByWrite = services.kernelOption('version') === '7.1';
  const type: MemoryType = {
    name: NAME,
    description: 'KVM guest_memfd (KVM_CREATE_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP / INIT_SHARED)',
    provides: [],
    vmFlags: 0,
    // With the final vm_uffd_ops: MISSING (COPY, ZEROPAGE) and MINOR (CONTINUE); no WP.
    rangeIoctls: userfaultfd
      ? bit(_UFFDIO_WAKE) | bit(_UFFDIO_COPY) | bit(_UFFDIO_ZEROPAGE) | bit(_UFFDIO_CONTINUE)
      : 0n,
    // guest_memfd files are pseudo files (alloc_file_pseudo) without FMODE_PREAD / FMODE_PWRITE.
    fileOps: { pread: ESPIPE, pwrite: ESPIPE, punchHole: 0, llseek: populateByWrite ? 'default' : 'none' },
    inodePageShift: () => 12,
    mmapCheck(inode, request) {
      if ((flagsOf(inode) & GUEST_MEMFD_FLAG_MMAP) === 0) return -ENODEV;
      if (!request.shared) return -EINVAL;
      return 0;
    },
    fault(inode, pgoff, mayShare) {
      // Without INIT_SHARED the memory starts private to the guest: a host touch is SIGBUS.
      if ((flagsOf(inode) & GUEST_MEMFD_FLAG_INIT_SHARED) === 0) return FAULT_SIGBUS;
      return filemapFault(services, policy)(inode, pgoff, mayShare);
    },
    getFolioForWrite: getForWrite,
    fallocateCheck(_inode, mode) {
      if (mode & FALLOC_FL_PUNCH_HOLE) return 0;
      return mode & FALLOC_FL_KEEP_SIZE ? 0 : -EOPNOTSUPP;
    },
    ...(populateByWrite ? { write: gmemWrite(services, getForWrite) } : {}),
    uffdOps: userfaultfd
      ? filemapUffdOps(services, policy, (vma) => (flagsOf(vma.inode) & GUEST_MEMFD_FLAG_INIT_SHARED) !== 0)
      : null,
    // The conformance suite's file: mappable and shared from the start, as a VMM restoring a guest makes it.
    conformanceFile: kvmConformanceFile,
    devices: [kvmDevice(services, () => type)],
  };
  return type;
}

/** write(2) on guest_memfd: whole pages at a page offset, into memory shared with the host. */
function gmemWrite(
  services: MemoryTypeServices,
  getForWrite: (inode: InodeView, pgoff: number) => number,
): NonNullable<MemoryType['write']> {
  return (inode, data, offset) => {
    if (offset % 4096 !== 0 || data.byteLength % 4096 !== 0) return -EINVAL;
    if ((flagsOf(inode) & GUEST_MEMFD_FLAG_INIT_SHARED) === 0) return -EINVAL;
    if (offset + data.byteLength > inode.sizeBytes) return -EINVAL;
    for (let done = 0; done < data.byteLength; done += 4096) {
      const pfn = getForWrite(inode, (offset + done) / 4096);
      if (pfn < 0) return done > 0 ? done : -ENOMEM;
      services.copyIntoFolio(pfn, 0, data, done, 4096);
    }
    return data.byteLength;
  };
}

/** A guest_memfd made as a VMM makes it: /dev/kvm, KVM_CREATE_VM, KVM_CREATE_GUEST_MEMFD. */
const kvmConformanceFile: NonNullable<MemoryType['conformanceFile']> = (syscalls, sizeBytes) => {
  const kvm = syscalls.open('/dev/kvm', O_RDWR | O_CLOEXEC);
  try {
    const vm = syscalls.ioctl(kvm, KVM_CREATE_VM, 0);
    try {
      const arg = encodeKvmCreateGuestMemfd({
        size: BigInt(sizeBytes),
        flags: BigInt(VALID_FLAGS),
        reserved: [],
      });
      return syscalls.ioctl(vm, KVM_CREATE_GUEST_MEMFD, arg);
    } finally {
      syscalls.close(vm);
    }
  } finally {
    syscalls.close(kvm);
  }
};

/** /dev/kvm, whose VMs create files of this type (`type` once the factory made it). */
function kvmDevice(services: MemoryTypeServices, type: () => MemoryType): DeviceDriver {
  return {
    path: '/dev/kvm',
    openCheck: () => 0,
    open: () =>
      kvmSystem((size, flags) => {
        const inode = services.createInode(type(), 'kvm-gmem', 12, size);
        inode.typeState = { flags } satisfies GuestMemfdState;
        return inode;
      }),
  };
}

export const guestMemfd: MemoryTypeModule = { name: NAME, create };
