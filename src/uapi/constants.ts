/**
 * Numeric constants of the Linux user ABI that the model and the host backend share: userfaultfd
 * (include/uapi/linux/userfaultfd.h), the memory system calls, signals and the guest_memfd part of KVM.
 *
 * Values are those of Linux 6.18 on x86_64 (see shared/uapi-facts.md §1 and §7). Names are spelled exactly
 * as Linux spells them so that a reader can grep the kernel for any of them. Constants are plain `number`s
 * (annotated, so that comparing two different constants never trips TypeScript's literal-type checks); the
 * 64-bit ioctl bit sets are `bigint`s because bit 63 does not fit a double.
 */

// ---------------------------------------------------------------------------------------------------------
// ioctl request encoding (include/uapi/asm-generic/ioctl.h, which x86_64 uses unchanged)
// ---------------------------------------------------------------------------------------------------------

export const _IOC_NRBITS: number = 8;
export const _IOC_TYPEBITS: number = 8;
export const _IOC_SIZEBITS: number = 14;
export const _IOC_DIRBITS: number = 2;

export const _IOC_NRSHIFT: number = 0;
export const _IOC_TYPESHIFT: number = _IOC_NRSHIFT + _IOC_NRBITS;
export const _IOC_SIZESHIFT: number = _IOC_TYPESHIFT + _IOC_TYPEBITS;
export const _IOC_DIRSHIFT: number = _IOC_SIZESHIFT + _IOC_SIZEBITS;

export const _IOC_NONE: number = 0;
export const _IOC_WRITE: number = 1;
export const _IOC_READ: number = 2;

function checkField(what: string, value: number, bits: number): void {
  // A field that does not fit would silently spill into its neighbour, so a bad constant is our bug.
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new RangeError(`_IOC: ${what} ${value} does not fit in ${bits} bits`);
  }
}

/**
 * Builds an ioctl request code as an unsigned 32-bit number, like the kernel's `_IOC()` macro.
 * @throws RangeError when a field does not fit its bits (a bad constant).
 */
export function _IOC(dir: number, type: number, nr: number, size: number): number {
  checkField('dir', dir, _IOC_DIRBITS);
  checkField('type', type, _IOC_TYPEBITS);
  checkField('nr', nr, _IOC_NRBITS);
  checkField('size', size, _IOC_SIZEBITS);
  return (
    ((dir << _IOC_DIRSHIFT) | (type << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)) >>>
    0
  );
}

/**
 * Builds an ioctl request code without an argument, like `_IO()`.
 * @throws RangeError as `_IOC` does.
 */
export function _IO(type: number, nr: number): number {
  return _IOC(_IOC_NONE, type, nr, 0);
}

/**
 * The size argument is `sizeof(struct ...)`, which C passes as a type and we pass as a byte count.
 * @throws RangeError as `_IOC` does.
 */
export function _IOR(type: number, nr: number, size: number): number {
  return _IOC(_IOC_READ, type, nr, size);
}

/**
 * Builds a write ioctl request code, like `_IOW()`.
 * @throws RangeError as `_IOC` does.
 */
export function _IOW(type: number, nr: number, size: number): number {
  return _IOC(_IOC_WRITE, type, nr, size);
}

/**
 * Builds a read-write ioctl request code, like `_IOWR()`.
 * @throws RangeError as `_IOC` does.
 */
export function _IOWR(type: number, nr: number, size: number): number {
  return _IOC(_IOC_READ | _IOC_WRITE, type, nr, size);
}

export function _IOC_DIR(request: number): number {
  return (request >>> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1);
}

export function _IOC_TYPE(request: number): number {
  return (request >>> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1);
}

export function _IOC_NR(request: number): number {
  return (request >>> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1);
}

export function _IOC_SIZE(request: number): number {
  return (request >>> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1);
}

// ---------------------------------------------------------------------------------------------------------
// userfaultfd: API version, ioctl magic, syscall and /dev/userfaultfd flags (§1.1)
// ---------------------------------------------------------------------------------------------------------

export const UFFD_API: number = 0xaa;
export const UFFDIO: number = 0xaa;
export const USERFAULTFD_IOC: number = 0xaa;
/** The only ioctl of /dev/userfaultfd; its argument is the same flags word the syscall takes. */
export const USERFAULTFD_IOC_NEW: number = _IO(USERFAULTFD_IOC, 0x00);

/** Asks for a context that handles user-mode faults only, which unprivileged callers may always create. */
export const UFFD_USER_MODE_ONLY: number = 1;

export const O_RDONLY: number = 0;
export const O_WRONLY: number = 1;
export const O_RDWR: number = 2;
export const O_ACCMODE: number = 3;
export const O_NONBLOCK: number = 0o4000;
export const O_CLOEXEC: number = 0o2000000;
/** The kernel's name for the open flags userfaultfd(2) passes through to the new file. */
export const UFFD_SHARED_FCNTL_FLAGS: number = O_CLOEXEC | O_NONBLOCK;

// ---------------------------------------------------------------------------------------------------------
// userfaultfd ioctls (§1.3)
// ---------------------------------------------------------------------------------------------------------

export const _UFFDIO_REGISTER: number = 0x00;
export const _UFFDIO_UNREGISTER: number = 0x01;
export const _UFFDIO_WAKE: number = 0x02;
export const _UFFDIO_COPY: number = 0x03;
export const _UFFDIO_ZEROPAGE: number = 0x04;
export const _UFFDIO_MOVE: number = 0x05;
export const _UFFDIO_WRITEPROTECT: number = 0x06;
export const _UFFDIO_CONTINUE: number = 0x07;
export const _UFFDIO_POISON: number = 0x08;
/** Fixed at the top of the 0x00..0x3F command space so that new range ioctls can grow below it. */
export const _UFFDIO_API: number = 0x3f;

// The sizes below are sizeof() of the argument structs. structs.ts exports the same numbers as
// UFFDIO_*_SIZE; it imports this module, so importing it back would make a cycle. A test checks they agree.
export const UFFDIO_API: number = _IOWR(UFFDIO, _UFFDIO_API, 24);
export const UFFDIO_REGISTER: number = _IOWR(UFFDIO, _UFFDIO_REGISTER, 32);
/** Linux declares UNREGISTER and WAKE as _IOR although the kernel reads the range; the code keeps that. */
export const UFFDIO_UNREGISTER: number = _IOR(UFFDIO, _UFFDIO_UNREGISTER, 16);
export const UFFDIO_WAKE: number = _IOR(UFFDIO, _UFFDIO_WAKE, 16);
export const UFFDIO_COPY: number = _IOWR(UFFDIO, _UFFDIO_COPY, 40);
export const UFFDIO_ZEROPAGE: number = _IOWR(UFFDIO, _UFFDIO_ZEROPAGE, 32);
export const UFFDIO_MOVE: number = _IOWR(UFFDIO, _UFFDIO_MOVE, 40);
export const UFFDIO_WRITEPROTECT: number = _IOWR(UFFDIO, _UFFDIO_WRITEPROTECT, 24);
export const UFFDIO_CONTINUE: number = _IOWR(UFFDIO, _UFFDIO_CONTINUE, 32);
export const UFFDIO_POISON: number = _IOWR(UFFDIO, _UFFDIO_POISON, 32);

/** What UFFDIO_API writes into `ioctls`: the ioctls usable on the fd itself, before any registration. */
export const UFFD_API_IOCTLS: bigint =
  (1n << BigInt(_UFFDIO_REGISTER)) | (1n << BigInt(_UFFDIO_UNREGISTER)) | (1n << BigInt(_UFFDIO_API));

/** The ioctls usable on a registered range; REGISTER returns a subset of this in `ioctls`. */
export const UFFD_API_RANGE_IOCTLS: bigint =
  (1n << BigInt(_UFFDIO_WAKE)) |
  (1n << BigInt(_UFFDIO_COPY)) |
  (1n << BigInt(_UFFDIO_ZEROPAGE)) |
  (1n << BigInt(_UFFDIO_MOVE)) |
  (1n << BigInt(_UFFDIO_WRITEPROTECT)) |
  (1n << BigInt(_UFFDIO_CONTINUE)) |
  (1n << BigInt(_UFFDIO_POISON));

/** The set returned when the range holds a hugetlb vma, which has no zero page and no MOVE support. */
export const UFFD_API_RANGE_IOCTLS_BASIC: bigint =
  (1n << BigInt(_UFFDIO_WAKE)) |
  (1n << BigInt(_UFFDIO_COPY)) |
  (1n << BigInt(_UFFDIO_WRITEPROTECT)) |
  (1n << BigInt(_UFFDIO_CONTINUE)) |
  (1n << BigInt(_UFFDIO_POISON));

// ---------------------------------------------------------------------------------------------------------
// Feature bits of uffdio_api.features (§1.2)
// ---------------------------------------------------------------------------------------------------------

export const UFFD_FEATURE_PAGEFAULT_FLAG_WP: number = 1 << 0;
export const UFFD_FEATURE_EVENT_FORK: number = 1 << 1;
export const UFFD_FEATURE_EVENT_REMAP: number = 1 << 2;
export const UFFD_FEATURE_EVENT_REMOVE: number = 1 << 3;
export const UFFD_FEATURE_MISSING_HUGETLBFS: number = 1 << 4;
export const UFFD_FEATURE_MISSING_SHMEM: number = 1 << 5;
export const UFFD_FEATURE_EVENT_UNMAP: number = 1 << 6;
export const UFFD_FEATURE_SIGBUS: number = 1 << 7;
export const UFFD_FEATURE_THREAD_ID: number = 1 << 8;
export const UFFD_FEATURE_MINOR_HUGETLBFS: number = 1 << 9;
export const UFFD_FEATURE_MINOR_SHMEM: number = 1 << 10;
export const UFFD_FEATURE_EXACT_ADDRESS: number = 1 << 11;
export const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: number = 1 << 12;
export const UFFD_FEATURE_WP_UNPOPULATED: number = 1 << 13;
export const UFFD_FEATURE_POISON: number = 1 << 14;
export const UFFD_FEATURE_WP_ASYNC: number = 1 << 15;
export const UFFD_FEATURE_MOVE: number = 1 << 16;

/** Every feature Linux 6.18 offers on x86_64; UFFDIO_API with features=0 reports exactly this [OBS]. */
export const UFFD_API_FEATURES: number = 0x1ffff;

/**
 * Kernel-internal bit OR-ed into the context's features once UFFDIO_API succeeds; visible in fdinfo. It is
 * 1u << 31 in C, written as 2 ** 31 here because `1 << 31` is negative in JavaScript.
 */
export const UFFD_FEATURE_INITIALIZED: number = 2 ** 31;

// ---------------------------------------------------------------------------------------------------------
// Register modes and per-ioctl mode flags (§1.4, §1.5)
// ---------------------------------------------------------------------------------------------------------

export const UFFDIO_REGISTER_MODE_MISSING: number = 1 << 0;
export const UFFDIO_REGISTER_MODE_WP: number = 1 << 1;
export const UFFDIO_REGISTER_MODE_MINOR: number = 1 << 2;
export const UFFD_API_REGISTER_MODES: number =
  UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR;

export const UFFDIO_COPY_MODE_DONTWAKE: number = 1 << 0;
export const UFFDIO_COPY_MODE_WP: number = 1 << 1;
export const UFFDIO_ZEROPAGE_MODE_DONTWAKE: number = 1 << 0;
export const UFFDIO_WRITEPROTECT_MODE_WP: number = 1 << 0;
export const UFFDIO_WRITEPROTECT_MODE_DONTWAKE: number = 1 << 1;
export const UFFDIO_CONTINUE_MODE_DONTWAKE: number = 1 << 0;
export const UFFDIO_CONTINUE_MODE_WP: number = 1 << 1;
export const UFFDIO_POISON_MODE_DONTWAKE: number = 1 << 0;
export const UFFDIO_MOVE_MODE_DONTWAKE: number = 1 << 0;
export const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: number = 1 << 1;

/**
 * The mode flags each range ioctl takes, by the names scenario files give
 * them, in the order the contract lists them. The one list of which modes
 * each ioctl allows: the scenario schema and the scenario runner (on either
 * backend) derive theirs from it.
 */
export const UFFDIO_MODES = {
  copy: { dontwake: UFFDIO_COPY_MODE_DONTWAKE, wp: UFFDIO_COPY_MODE_WP },
  zeropage: { dontwake: UFFDIO_ZEROPAGE_MODE_DONTWAKE },
  continue: { dontwake: UFFDIO_CONTINUE_MODE_DONTWAKE, wp: UFFDIO_CONTINUE_MODE_WP },
  writeprotect: { wp: UFFDIO_WRITEPROTECT_MODE_WP, dontwake: UFFDIO_WRITEPROTECT_MODE_DONTWAKE },
  poison: { dontwake: UFFDIO_POISON_MODE_DONTWAKE },
  move: { dontwake: UFFDIO_MOVE_MODE_DONTWAKE, allow_src_holes: UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES },
} as const satisfies Record<string, Record<string, number>>;

/** A range ioctl that takes mode flags, by its scenario op name. */
export type UffdioModeIoctl = keyof typeof UFFDIO_MODES;
/** The mode flag names `ioctl` takes. */
export type UffdioModeName<I extends UffdioModeIoctl> = keyof (typeof UFFDIO_MODES)[I] & string;

/** Every mode bit each range ioctl defines (the rest are EINVAL), from `UFFDIO_MODES`. */
export const UFFDIO_MODE_MASKS: { readonly [I in UffdioModeIoctl]: number } = Object.fromEntries(
  Object.entries(UFFDIO_MODES).map(([ioctl, bits]) => [
    ioctl,
    Object.values<number>(bits).reduce((mask, bit) => mask | bit, 0),
  ]),
) as { [I in UffdioModeIoctl]: number };

// ---------------------------------------------------------------------------------------------------------
// Events and page-fault flags (§1.6)
// ---------------------------------------------------------------------------------------------------------

// Numbering starts at 0x12 on purpose: a zeroed or garbage message is then unlikely to look valid.
export const UFFD_EVENT_PAGEFAULT: number = 0x12;
export const UFFD_EVENT_FORK: number = 0x13;
export const UFFD_EVENT_REMAP: number = 0x14;
export const UFFD_EVENT_REMOVE: number = 0x15;
export const UFFD_EVENT_UNMAP: number = 0x16;

/** Neither WP nor MINOR set means a MISSING fault; WP faults always carry WRITE as well. */
export const UFFD_PAGEFAULT_FLAG_WRITE: number = 1 << 0;
export const UFFD_PAGEFAULT_FLAG_WP: number = 1 << 1;
export const UFFD_PAGEFAULT_FLAG_MINOR: number = 1 << 2;

// ---------------------------------------------------------------------------------------------------------
// Memory: pages, mmap, memfd, fallocate, madvise, mremap, poll
// ---------------------------------------------------------------------------------------------------------

export const PAGE_SHIFT: number = 12;
export const PAGE_SIZE: number = 1 << PAGE_SHIFT;
/** The user address-space limit with 4-level page tables; one guard page below 2**47. */
export const TASK_SIZE: number = 0x7ffffffff000;
export const HPAGE_PMD_SHIFT: number = 21;
export const HPAGE_PMD_SIZE: number = 2 ** HPAGE_PMD_SHIFT;
export const HPAGE_PUD_SHIFT: number = 30;
export const HPAGE_PUD_SIZE: number = 2 ** HPAGE_PUD_SHIFT;

export const PROT_NONE: number = 0x0;
export const PROT_READ: number = 0x1;
export const PROT_WRITE: number = 0x2;
export const PROT_EXEC: number = 0x4;

export const MAP_SHARED: number = 0x01;
export const MAP_PRIVATE: number = 0x02;
export const MAP_SHARED_VALIDATE: number = 0x03;
/** A mapping type like MAP_PRIVATE rather than a flag bit, which is why it lies inside MAP_TYPE. */
export const MAP_DROPPABLE: number = 0x08;
export const MAP_TYPE: number = 0x0f;
export const MAP_FIXED: number = 0x10;
export const MAP_ANONYMOUS: number = 0x20;
export const MAP_NORESERVE: number = 0x4000;
export const MAP_POPULATE: number = 0x8000;
export const MAP_HUGETLB: number = 0x40000;
export const MAP_FIXED_NOREPLACE: number = 0x100000;
/** MAP_HUGE_* and MFD_HUGE_* hold log2 of the huge page size in bits 26..31 (hugetlb_encode.h). */
export const MAP_HUGE_SHIFT: number = 26;
export const MAP_HUGE_MASK: number = 0x3f;
export const MAP_HUGE_2MB: number = 21 << MAP_HUGE_SHIFT;
export const MAP_HUGE_1GB: number = 30 << MAP_HUGE_SHIFT;

export const MFD_CLOEXEC: number = 0x0001;
export const MFD_ALLOW_SEALING: number = 0x0002;
export const MFD_HUGETLB: number = 0x0004;
export const MFD_NOEXEC_SEAL: number = 0x0008;
export const MFD_EXEC: number = 0x0010;
export const MFD_HUGE_SHIFT: number = MAP_HUGE_SHIFT;
export const MFD_HUGE_MASK: number = MAP_HUGE_MASK;
export const MFD_HUGE_2MB: number = MAP_HUGE_2MB;
export const MFD_HUGE_1GB: number = MAP_HUGE_1GB;
/** NAME_MAX (255) minus the 6 bytes of the "memfd:" prefix the kernel puts in front of the name. */
export const MFD_NAME_MAX_LEN: number = 249;

export const FALLOC_FL_KEEP_SIZE: number = 0x01;
export const FALLOC_FL_PUNCH_HOLE: number = 0x02;

export const MADV_NORMAL: number = 0;
export const MADV_RANDOM: number = 1;
export const MADV_SEQUENTIAL: number = 2;
export const MADV_WILLNEED: number = 3;
export const MADV_DONTNEED: number = 4;
export const MADV_FREE: number = 8;
export const MADV_REMOVE: number = 9;
export const MADV_DONTFORK: number = 10;
export const MADV_DOFORK: number = 11;
export const MADV_MERGEABLE: number = 12;
export const MADV_UNMERGEABLE: number = 13;
export const MADV_HUGEPAGE: number = 14;
export const MADV_NOHUGEPAGE: number = 15;
export const MADV_DONTDUMP: number = 16;
export const MADV_DODUMP: number = 17;
export const MADV_WIPEONFORK: number = 18;
export const MADV_KEEPONFORK: number = 19;
export const MADV_COLD: number = 20;
export const MADV_PAGEOUT: number = 21;
export const MADV_POPULATE_READ: number = 22;
export const MADV_POPULATE_WRITE: number = 23;
export const MADV_DONTNEED_LOCKED: number = 24;
export const MADV_COLLAPSE: number = 25;

export const MREMAP_MAYMOVE: number = 1;
export const MREMAP_FIXED: number = 2;
export const MREMAP_DONTUNMAP: number = 4;

export const POLLIN: number = 0x0001;
export const POLLPRI: number = 0x0002;
export const POLLOUT: number = 0x0004;
export const POLLERR: number = 0x0008;
export const POLLHUP: number = 0x0010;
export const POLLNVAL: number = 0x0020;
export const POLLRDNORM: number = 0x0040;

// ---------------------------------------------------------------------------------------------------------
// Signals and si_code values (x86_64)
// ---------------------------------------------------------------------------------------------------------

export const SIGHUP: number = 1;
export const SIGINT: number = 2;
export const SIGQUIT: number = 3;
export const SIGILL: number = 4;
export const SIGTRAP: number = 5;
export const SIGABRT: number = 6;
export const SIGBUS: number = 7;
export const SIGFPE: number = 8;
export const SIGKILL: number = 9;
export const SIGUSR1: number = 10;
export const SIGSEGV: number = 11;
export const SIGUSR2: number = 12;
export const SIGPIPE: number = 13;
export const SIGALRM: number = 14;
export const SIGTERM: number = 15;
export const SIGSTKFLT: number = 16;
export const SIGCHLD: number = 17;
export const SIGCONT: number = 18;
export const SIGSTOP: number = 19;
export const SIGTSTP: number = 20;
export const SIGTTIN: number = 21;
export const SIGTTOU: number = 22;
export const SIGURG: number = 23;
export const SIGXCPU: number = 24;
export const SIGXFSZ: number = 25;
export const SIGVTALRM: number = 26;
export const SIGPROF: number = 27;
export const SIGWINCH: number = 28;
export const SIGIO: number = 29;
export const SIGPWR: number = 30;
export const SIGSYS: number = 31;

/** Standard signal names indexed by number; index 0 is not a signal. */
export const SIGNAL_NAMES: readonly string[] = Object.freeze([
  '',
  'SIGHUP',
  'SIGINT',
  'SIGQUIT',
  'SIGILL',
  'SIGTRAP',
  'SIGABRT',
  'SIGBUS',
  'SIGFPE',
  'SIGKILL',
  'SIGUSR1',
  'SIGSEGV',
  'SIGUSR2',
  'SIGPIPE',
  'SIGALRM',
  'SIGTERM',
  'SIGSTKFLT',
  'SIGCHLD',
  'SIGCONT',
  'SIGSTOP',
  'SIGTSTP',
  'SIGTTIN',
  'SIGTTOU',
  'SIGURG',
  'SIGXCPU',
  'SIGXFSZ',
  'SIGVTALRM',
  'SIGPROF',
  'SIGWINCH',
  'SIGIO',
  'SIGPWR',
  'SIGSYS',
]);

/** Returns 'SIGBUS' for 7, and 'SIG?' followed by the number for anything that is not a standard signal. */
export function signalName(signal: number): string {
  const name = Number.isInteger(signal) && signal > 0 ? SIGNAL_NAMES[signal] : undefined;
  return name ?? `SIG?${signal}`;
}

/** Accepts 'SIGBUS' or 'BUS'; returns undefined for anything else. */
export function signalNumber(name: string): number | undefined {
  const full = name.startsWith('SIG') ? name : `SIG${name}`;
  const signal = SIGNAL_NAMES.indexOf(full);
  return signal > 0 ? signal : undefined;
}

/** si_code of a signal the kernel raised itself without a more specific reason (e.g. a wild address). */
export const SI_KERNEL: number = 0x80;
export const SEGV_MAPERR: number = 1;
export const SEGV_ACCERR: number = 2;
export const SEGV_PKUERR: number = 4;
export const BUS_ADRALN: number = 1;
export const BUS_ADRERR: number = 2;
export const BUS_OBJERR: number = 3;
/** A hardware-poisoned page was consumed (the signal UFFDIO_POISON pages raise). */
export const BUS_MCEERR_AR: number = 4;
export const BUS_MCEERR_AO: number = 5;

// si_code values are only meaningful together with the signal, so the names are kept per signal.
const SI_CODE_NAMES: ReadonlyMap<number, ReadonlyMap<number, string>> = new Map([
  [
    SIGSEGV,
    new Map([
      [SEGV_MAPERR, 'SEGV_MAPERR'],
      [SEGV_ACCERR, 'SEGV_ACCERR'],
      [SEGV_PKUERR, 'SEGV_PKUERR'],
    ]),
  ],
  [
    SIGBUS,
    new Map([
      [BUS_ADRALN, 'BUS_ADRALN'],
      [BUS_ADRERR, 'BUS_ADRERR'],
      [BUS_OBJERR, 'BUS_OBJERR'],
      [BUS_MCEERR_AR, 'BUS_MCEERR_AR'],
      [BUS_MCEERR_AO, 'BUS_MCEERR_AO'],
    ]),
  ],
]);

/** Names an si_code in the context of its signal, e.g. (SIGBUS, 2) gives 'BUS_ADRERR'. */
export function siCodeName(signal: number, siCode: number): string {
  if (siCode === SI_KERNEL) return 'SI_KERNEL';
  return SI_CODE_NAMES.get(signal)?.get(siCode) ?? `si_code=${siCode}`;
}

// ---------------------------------------------------------------------------------------------------------
// KVM guest_memfd (include/uapi/linux/kvm.h; §9)
// ---------------------------------------------------------------------------------------------------------

export const KVMIO: number = 0xae;
export const KVM_GET_API_VERSION: number = _IO(KVMIO, 0x00);
export const KVM_CREATE_VM: number = _IO(KVMIO, 0x01);
export const KVM_CHECK_EXTENSION: number = _IO(KVMIO, 0x03);
/** The only version KVM_GET_API_VERSION has returned since the KVM API was declared stable. */
export const KVM_API_VERSION: number = 12;
export const KVM_CAP_GUEST_MEMFD: number = 234;
/** Added with guest_memfd mmap support (Linux 6.18); the value is taken from upstream kvm.h. */
export const KVM_CAP_GUEST_MEMFD_FLAGS: number = 244;
/** The size is sizeof(struct kvm_create_guest_memfd), KVM_CREATE_GUEST_MEMFD_SIZE in structs.ts. */
export const KVM_CREATE_GUEST_MEMFD: number = _IOWR(KVMIO, 0xd4, 64);
export const GUEST_MEMFD_FLAG_MMAP: number = 1 << 0;
export const GUEST_MEMFD_FLAG_INIT_SHARED: number = 1 << 1;

// ---------------------------------------------------------------------------------------------------------
// Name tables for scenario files: lower-case Linux names without their prefix
// ---------------------------------------------------------------------------------------------------------

/** Feature names indexed by bit number: FEATURE_NAMES[4] is 'missing_hugetlbfs' (1 << 4). */
export const FEATURE_NAMES = Object.freeze([
  'pagefault_flag_wp',
  'event_fork',
  'event_remap',
  'event_remove',
  'missing_hugetlbfs',
  'missing_shmem',
  'event_unmap',
  'sigbus',
  'thread_id',
  'minor_hugetlbfs',
  'minor_shmem',
  'exact_address',
  'wp_hugetlbfs_shmem',
  'wp_unpopulated',
  'poison',
  'wp_async',
  'move',
] as const);
export type FeatureName = (typeof FEATURE_NAMES)[number];

/** Ioctl names in command-number order. */
export const IOCTL_NAMES = Object.freeze([
  'register',
  'unregister',
  'wake',
  'copy',
  'zeropage',
  'move',
  'writeprotect',
  'continue',
  'poison',
  'api',
] as const);
export type IoctlName = (typeof IOCTL_NAMES)[number];

/** Event names in event-code order, starting at UFFD_EVENT_PAGEFAULT. */
export const EVENT_NAMES = Object.freeze(['pagefault', 'fork', 'remap', 'remove', 'unmap'] as const);
export type EventName = (typeof EVENT_NAMES)[number];

/** Page-fault flag names indexed by bit number. */
export const FAULT_FLAG_NAMES = Object.freeze(['write', 'wp', 'minor'] as const);
export type FaultFlagName = (typeof FAULT_FLAG_NAMES)[number];

/** Register mode names indexed by bit number. */
export const REGISTER_MODE_NAMES = Object.freeze(['missing', 'wp', 'minor'] as const);
export type RegisterModeName = (typeof REGISTER_MODE_NAMES)[number];

// Records built with a null prototype, so that looking up 'toString' or '__proto__' finds nothing.
function record<K extends string, V>(entries: readonly (readonly [K, V])[]): Readonly<Record<K, V>> {
  const out = Object.create(null) as Record<K, V>;
  for (const [key, value] of entries) out[key] = value;
  return Object.freeze(out);
}

function lookup<V>(table: Readonly<Record<string, V>>, name: string): V | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

export const FEATURE_BITS: Readonly<Record<FeatureName, number>> = record(
  FEATURE_NAMES.map((name, bit) => [name, 2 ** bit] as const),
);

export const IOCTL_NRS: Readonly<Record<IoctlName, number>> = record<IoctlName, number>([
  ['register', _UFFDIO_REGISTER],
  ['unregister', _UFFDIO_UNREGISTER],
  ['wake', _UFFDIO_WAKE],
  ['copy', _UFFDIO_COPY],
  ['zeropage', _UFFDIO_ZEROPAGE],
  ['move', _UFFDIO_MOVE],
  ['writeprotect', _UFFDIO_WRITEPROTECT],
  ['continue', _UFFDIO_CONTINUE],
  ['poison', _UFFDIO_POISON],
  ['api', _UFFDIO_API],
]);

export const IOCTL_BITS: Readonly<Record<IoctlName, bigint>> = record(
  IOCTL_NAMES.map((name) => [name, 1n << BigInt(IOCTL_NRS[name])] as const),
);

/** Full request codes by ioctl name, e.g. IOCTL_REQUESTS.copy === UFFDIO_COPY. */
export const IOCTL_REQUESTS: Readonly<Record<IoctlName, number>> = record<IoctlName, number>([
  ['register', UFFDIO_REGISTER],
  ['unregister', UFFDIO_UNREGISTER],
  ['wake', UFFDIO_WAKE],
  ['copy', UFFDIO_COPY],
  ['zeropage', UFFDIO_ZEROPAGE],
  ['move', UFFDIO_MOVE],
  ['writeprotect', UFFDIO_WRITEPROTECT],
  ['continue', UFFDIO_CONTINUE],
  ['poison', UFFDIO_POISON],
  ['api', UFFDIO_API],
]);

export const EVENT_CODES: Readonly<Record<EventName, number>> = record(
  EVENT_NAMES.map((name, index) => [name, UFFD_EVENT_PAGEFAULT + index] as const),
);

export const FAULT_FLAG_BITS: Readonly<Record<FaultFlagName, number>> = record(
  FAULT_FLAG_NAMES.map((name, bit) => [name, 2 ** bit] as const),
);

export const REGISTER_MODE_BITS: Readonly<Record<RegisterModeName, number>> = record(
  REGISTER_MODE_NAMES.map((name, bit) => [name, 2 ** bit] as const),
);

/**
 * Names the set bits of `mask` in bit order. A set bit without a name is not dropped: the leftover bits are
 * appended as one hex string (e.g. '0x80000000'), so that a printed mask never hides what it contains.
 */
function maskNames(mask: bigint, names: ReadonlyMap<bigint, string>): string[] {
  const out: string[] = [];
  let rest = mask;
  for (const [bit, name] of names) {
    if ((mask & bit) === 0n) continue;
    out.push(name);
    rest &= ~bit;
  }
  if (rest !== 0n) out.push(`0x${rest.toString(16)}`);
  return out;
}

function maskFromNumber(what: string, mask: number): bigint {
  // Bitwise operators would silently truncate a number to 32 bits, so masks are handled as bigints.
  if (!Number.isSafeInteger(mask) || mask < 0) throw new RangeError(`${what}: ${mask} is not a valid mask`);
  return BigInt(mask);
}

function bitTable(bits: Readonly<Record<string, number | bigint>>): ReadonlyMap<bigint, string> {
  const entries = Object.entries(bits).map(([name, bit]) => [BigInt(bit), name] as const);
  return new Map(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const FEATURE_TABLE = bitTable(FEATURE_BITS);
const IOCTL_TABLE = bitTable(IOCTL_BITS);
const FAULT_FLAG_TABLE = bitTable(FAULT_FLAG_BITS);
const REGISTER_MODE_TABLE = bitTable(REGISTER_MODE_BITS);

/** The feature's value (not its bit number): featureBit('move') === UFFD_FEATURE_MOVE. */
export function featureBit(name: string): number | undefined {
  return lookup(FEATURE_BITS, name);
}

/**
 * The names of the features set in `bits` (an unknown bit as hex).
 * @throws RangeError for a negative or non-integer mask.
 */
export function featureNames(bits: number): string[] {
  return maskNames(maskFromNumber('featureNames', bits), FEATURE_TABLE);
}

/** The ioctl's bit in an `ioctls` mask: ioctlBit('copy') === 1n << 3n. */
export function ioctlBit(name: string): bigint | undefined {
  return lookup(IOCTL_BITS, name);
}

export function ioctlNames(mask: bigint): string[] {
  return maskNames(BigInt.asUintN(64, mask), IOCTL_TABLE);
}

/** Maps a full request code back to its Linux name, e.g. 0xc028aa03 gives 'UFFDIO_COPY'. */
export function uffdioRequestName(request: number): string | undefined {
  for (const name of IOCTL_NAMES) {
    if (IOCTL_REQUESTS[name] === request) return `UFFDIO_${name.toUpperCase()}`;
  }
  return undefined;
}

export function eventName(code: number): EventName | undefined {
  return EVENT_NAMES[code - UFFD_EVENT_PAGEFAULT];
}

export function eventCode(name: string): number | undefined {
  return lookup(EVENT_CODES, name);
}

export function faultFlagBit(name: string): number | undefined {
  return lookup(FAULT_FLAG_BITS, name);
}

/**
 * The names of the `uffd_msg.pagefault.flags` bits set in `flags`.
 * @throws RangeError for a negative or non-integer mask.
 */
export function faultFlagNames(flags: number): string[] {
  return maskNames(maskFromNumber('faultFlagNames', flags), FAULT_FLAG_TABLE);
}

export function registerModeBit(name: string): number | undefined {
  return lookup(REGISTER_MODE_BITS, name);
}

/**
 * The names of the UFFDIO_REGISTER_MODE_* bits set in `mode`.
 * @throws RangeError for a negative or non-integer mask.
 */
export function registerModeNames(mode: number): string[] {
  return maskNames(maskFromNumber('registerModeNames', mode), REGISTER_MODE_TABLE);
}
