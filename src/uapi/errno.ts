/**
 * Linux errno values (x86_64, include/uapi/asm-generic/errno-base.h and errno.h), their glibc message
 * texts, and the two error classes the backends throw: KernelError for a failed system call and SignalError
 * for a memory access that raises a signal.
 *
 * The texts are glibc's strerror() strings, so that a message reads exactly as perror() prints it in the C
 * programs the host backend is compared with. Linux leaves 41 and 58 unused; glibc calls them "Unknown error".
 */

import { siCodeName, signalName } from './constants.ts';

export const EPERM: number = 1;
export const ENOENT: number = 2;
export const ESRCH: number = 3;
export const EINTR: number = 4;
export const EIO: number = 5;
export const ENXIO: number = 6;
export const E2BIG: number = 7;
export const ENOEXEC: number = 8;
export const EBADF: number = 9;
export const ECHILD: number = 10;
export const EAGAIN: number = 11;
export const ENOMEM: number = 12;
export const EACCES: number = 13;
export const EFAULT: number = 14;
export const ENOTBLK: number = 15;
export const EBUSY: number = 16;
export const EEXIST: number = 17;
export const EXDEV: number = 18;
export const ENODEV: number = 19;
export const ENOTDIR: number = 20;
export const EISDIR: number = 21;
export const EINVAL: number = 22;
export const ENFILE: number = 23;
export const EMFILE: number = 24;
export const ENOTTY: number = 25;
export const ETXTBSY: number = 26;
export const EFBIG: number = 27;
export const ENOSPC: number = 28;
export const ESPIPE: number = 29;
export const EROFS: number = 30;
export const EMLINK: number = 31;
export const EPIPE: number = 32;
export const EDOM: number = 33;
export const ERANGE: number = 34;
export const EDEADLK: number = 35;
export const ENAMETOOLONG: number = 36;
export const ENOLCK: number = 37;
export const ENOSYS: number = 38;
export const ENOTEMPTY: number = 39;
export const ELOOP: number = 40;
export const ENOMSG: number = 42;
export const EIDRM: number = 43;
export const ECHRNG: number = 44;
export const EL2NSYNC: number = 45;
export const EL3HLT: number = 46;
export const EL3RST: number = 47;
export const ELNRNG: number = 48;
export const EUNATCH: number = 49;
export const ENOCSI: number = 50;
export const EL2HLT: number = 51;
export const EBADE: number = 52;
export const EBADR: number = 53;
export const EXFULL: number = 54;
export const ENOANO: number = 55;
export const EBADRQC: number = 56;
export const EBADSLT: number = 57;
export const EBFONT: number = 59;
export const ENOSTR: number = 60;
export const ENODATA: number = 61;
export const ETIME: number = 62;
export const ENOSR: number = 63;
export const ENONET: number = 64;
export const ENOPKG: number = 65;
export const EREMOTE: number = 66;
export const ENOLINK: number = 67;
export const EADV: number = 68;
export const ESRMNT: number = 69;
export const ECOMM: number = 70;
export const EPROTO: number = 71;
export const EMULTIHOP: number = 72;
export const EDOTDOT: number = 73;
export const EBADMSG: number = 74;
export const EOVERFLOW: number = 75;
export const ENOTUNIQ: number = 76;
export const EBADFD: number = 77;
export const EREMCHG: number = 78;
export const ELIBACC: number = 79;
export const ELIBBAD: number = 80;
export const ELIBSCN: number = 81;
export const ELIBMAX: number = 82;
export const ELIBEXEC: number = 83;
export const EILSEQ: number = 84;
export const ERESTART: number = 85;
export const ESTRPIPE: number = 86;
export const EUSERS: number = 87;
export const ENOTSOCK: number = 88;
export const EDESTADDRREQ: number = 89;
export const EMSGSIZE: number = 90;
export const EPROTOTYPE: number = 91;
export const ENOPROTOOPT: number = 92;
export const EPROTONOSUPPORT: number = 93;
export const ESOCKTNOSUPPORT: number = 94;
export const EOPNOTSUPP: number = 95;
export const EPFNOSUPPORT: number = 96;
export const EAFNOSUPPORT: number = 97;
export const EADDRINUSE: number = 98;
export const EADDRNOTAVAIL: number = 99;
export const ENETDOWN: number = 100;
export const ENETUNREACH: number = 101;
export const ENETRESET: number = 102;
export const ECONNABORTED: number = 103;
export const ECONNRESET: number = 104;
export const ENOBUFS: number = 105;
export const EISCONN: number = 106;
export const ENOTCONN: number = 107;
export const ESHUTDOWN: number = 108;
export const ETOOMANYREFS: number = 109;
export const ETIMEDOUT: number = 110;
export const ECONNREFUSED: number = 111;
export const EHOSTDOWN: number = 112;
export const EHOSTUNREACH: number = 113;
export const EALREADY: number = 114;
export const EINPROGRESS: number = 115;
export const ESTALE: number = 116;
export const EUCLEAN: number = 117;
export const ENOTNAM: number = 118;
export const ENAVAIL: number = 119;
export const EISNAM: number = 120;
export const EREMOTEIO: number = 121;
export const EDQUOT: number = 122;
export const ENOMEDIUM: number = 123;
export const EMEDIUMTYPE: number = 124;
export const ECANCELED: number = 125;
export const ENOKEY: number = 126;
export const EKEYEXPIRED: number = 127;
export const EKEYREVOKED: number = 128;
export const EKEYREJECTED: number = 129;
export const EOWNERDEAD: number = 130;
export const ENOTRECOVERABLE: number = 131;
export const ERFKILL: number = 132;
export const EHWPOISON: number = 133;

// Aliases Linux and glibc define for compatibility; errnoName() never returns them.
export const EWOULDBLOCK: number = EAGAIN;
export const EDEADLOCK: number = EDEADLK;
export const ENOTSUP: number = EOPNOTSUPP;

/**
 * Kernel-internal: a system call interrupted by a signal that is restarted transparently, or turned into
 * EINTR, on the way back to user space. The model uses it where the kernel does; user space never sees it.
 */
export const ERESTARTSYS: number = 512;

export interface ErrnoEntry {
  readonly errno: number;
  readonly name: string;
  /** glibc's strerror() text. */
  readonly text: string;
}

const ENTRIES: readonly (readonly [number, string, string])[] = [
  [EPERM, 'EPERM', 'Operation not permitted'],
  [ENOENT, 'ENOENT', 'No such file or directory'],
  [ESRCH, 'ESRCH', 'No such process'],
  [EINTR, 'EINTR', 'Interrupted system call'],
  [EIO, 'EIO', 'Input/output error'],
  [ENXIO, 'ENXIO', 'No such device or address'],
  [E2BIG, 'E2BIG', 'Argument list too long'],
  [ENOEXEC, 'ENOEXEC', 'Exec format error'],
  [EBADF, 'EBADF', 'Bad file descriptor'],
  [ECHILD, 'ECHILD', 'No child processes'],
  [EAGAIN, 'EAGAIN', 'Resource temporarily unavailable'],
  [ENOMEM, 'ENOMEM', 'Cannot allocate memory'],
  [EACCES, 'EACCES', 'Permission denied'],
  [EFAULT, 'EFAULT', 'Bad address'],
  [ENOTBLK, 'ENOTBLK', 'Block device required'],
  [EBUSY, 'EBUSY', 'Device or resource busy'],
  [EEXIST, 'EEXIST', 'File exists'],
  [EXDEV, 'EXDEV', 'Invalid cross-device link'],
  [ENODEV, 'ENODEV', 'No such device'],
  [ENOTDIR, 'ENOTDIR', 'Not a directory'],
  [EISDIR, 'EISDIR', 'Is a directory'],
  [EINVAL, 'EINVAL', 'Invalid argument'],
  [ENFILE, 'ENFILE', 'Too many open files in system'],
  [EMFILE, 'EMFILE', 'Too many open files'],
  [ENOTTY, 'ENOTTY', 'Inappropriate ioctl for device'],
  [ETXTBSY, 'ETXTBSY', 'Text file busy'],
  [EFBIG, 'EFBIG', 'File too large'],
  [ENOSPC, 'ENOSPC', 'No space left on device'],
  [ESPIPE, 'ESPIPE', 'Illegal seek'],
  [EROFS, 'EROFS', 'Read-only file system'],
  [EMLINK, 'EMLINK', 'Too many links'],
  [EPIPE, 'EPIPE', 'Broken pipe'],
  [EDOM, 'EDOM', 'Numerical argument out of domain'],
  [ERANGE, 'ERANGE', 'Numerical result out of range'],
  [EDEADLK, 'EDEADLK', 'Resource deadlock avoided'],
  [ENAMETOOLONG, 'ENAMETOOLONG', 'File name too long'],
  [ENOLCK, 'ENOLCK', 'No locks available'],
  [ENOSYS, 'ENOSYS', 'Function not implemented'],
  [ENOTEMPTY, 'ENOTEMPTY', 'Directory not empty'],
  [ELOOP, 'ELOOP', 'Too many levels of symbolic links'],
  [ENOMSG, 'ENOMSG', 'No message of desired type'],
  [EIDRM, 'EIDRM', 'Identifier removed'],
  [ECHRNG, 'ECHRNG', 'Channel number out of range'],
  [EL2NSYNC, 'EL2NSYNC', 'Level 2 not synchronized'],
  [EL3HLT, 'EL3HLT', 'Level 3 halted'],
  [EL3RST, 'EL3RST', 'Level 3 reset'],
  [ELNRNG, 'ELNRNG', 'Link number out of range'],
  [EUNATCH, 'EUNATCH', 'Protocol driver not attached'],
  [ENOCSI, 'ENOCSI', 'No CSI structure available'],
  [EL2HLT, 'EL2HLT', 'Level 2 halted'],
  [EBADE, 'EBADE', 'Invalid exchange'],
  [EBADR, 'EBADR', 'Invalid request descriptor'],
  [EXFULL, 'EXFULL', 'Exchange full'],
  [ENOANO, 'ENOANO', 'No anode'],
  [EBADRQC, 'EBADRQC', 'Invalid request code'],
  [EBADSLT, 'EBADSLT', 'Invalid slot'],
  [EBFONT, 'EBFONT', 'Bad font file format'],
  [ENOSTR, 'ENOSTR', 'Device not a stream'],
  [ENODATA, 'ENODATA', 'No data available'],
  [ETIME, 'ETIME', 'Timer expired'],
  [ENOSR, 'ENOSR', 'Out of streams resources'],
  [ENONET, 'ENONET', 'Machine is not on the network'],
  [ENOPKG, 'ENOPKG', 'Package not installed'],
  [EREMOTE, 'EREMOTE', 'Object is remote'],
  [ENOLINK, 'ENOLINK', 'Link has been severed'],
  [EADV, 'EADV', 'Advertise error'],
  [ESRMNT, 'ESRMNT', 'Srmount error'],
  [ECOMM, 'ECOMM', 'Communication error on send'],
  [EPROTO, 'EPROTO', 'Protocol error'],
  [EMULTIHOP, 'EMULTIHOP', 'Multihop attempted'],
  [EDOTDOT, 'EDOTDOT', 'RFS specific error'],
  [EBADMSG, 'EBADMSG', 'Bad message'],
  [EOVERFLOW, 'EOVERFLOW', 'Value too large for defined data type'],
  [ENOTUNIQ, 'ENOTUNIQ', 'Name not unique on network'],
  [EBADFD, 'EBADFD', 'File descriptor in bad state'],
  [EREMCHG, 'EREMCHG', 'Remote address changed'],
  [ELIBACC, 'ELIBACC', 'Can not access a needed shared library'],
  [ELIBBAD, 'ELIBBAD', 'Accessing a corrupted shared library'],
  [ELIBSCN, 'ELIBSCN', '.lib section in a.out corrupted'],
  [ELIBMAX, 'ELIBMAX', 'Attempting to link in too many shared libraries'],
  [ELIBEXEC, 'ELIBEXEC', 'Cannot exec a shared library directly'],
  [EILSEQ, 'EILSEQ', 'Invalid or incomplete multibyte or wide character'],
  [ERESTART, 'ERESTART', 'Interrupted system call should be restarted'],
  [ESTRPIPE, 'ESTRPIPE', 'Streams pipe error'],
  [EUSERS, 'EUSERS', 'Too many users'],
  [ENOTSOCK, 'ENOTSOCK', 'Socket operation on non-socket'],
  [EDESTADDRREQ, 'EDESTADDRREQ', 'Destination address required'],
  [EMSGSIZE, 'EMSGSIZE', 'Message too long'],
  [EPROTOTYPE, 'EPROTOTYPE', 'Protocol wrong type for socket'],
  [ENOPROTOOPT, 'ENOPROTOOPT', 'Protocol not available'],
  [EPROTONOSUPPORT, 'EPROTONOSUPPORT', 'Protocol not supported'],
  [ESOCKTNOSUPPORT, 'ESOCKTNOSUPPORT', 'Socket type not supported'],
  [EOPNOTSUPP, 'EOPNOTSUPP', 'Operation not supported'],
  [EPFNOSUPPORT, 'EPFNOSUPPORT', 'Protocol family not supported'],
  [EAFNOSUPPORT, 'EAFNOSUPPORT', 'Address family not supported by protocol'],
  [EADDRINUSE, 'EADDRINUSE', 'Address already in use'],
  [EADDRNOTAVAIL, 'EADDRNOTAVAIL', 'Cannot assign requested address'],
  [ENETDOWN, 'ENETDOWN', 'Network is down'],
  [ENETUNREACH, 'ENETUNREACH', 'Network is unreachable'],
  [ENETRESET, 'ENETRESET', 'Network dropped connection on reset'],
  [ECONNABORTED, 'ECONNABORTED', 'Software caused connection abort'],
  [ECONNRESET, 'ECONNRESET', 'Connection reset by peer'],
  [ENOBUFS, 'ENOBUFS', 'No buffer space available'],
  [EISCONN, 'EISCONN', 'Transport endpoint is already connected'],
  [ENOTCONN, 'ENOTCONN', 'Transport endpoint is not connected'],
  [ESHUTDOWN, 'ESHUTDOWN', 'Cannot send after transport endpoint shutdown'],
  [ETOOMANYREFS, 'ETOOMANYREFS', 'Too many references: cannot splice'],
  [ETIMEDOUT, 'ETIMEDOUT', 'Connection timed out'],
  [ECONNREFUSED, 'ECONNREFUSED', 'Connection refused'],
  [EHOSTDOWN, 'EHOSTDOWN', 'Host is down'],
  [EHOSTUNREACH, 'EHOSTUNREACH', 'No route to host'],
  [EALREADY, 'EALREADY', 'Operation already in progress'],
  [EINPROGRESS, 'EINPROGRESS', 'Operation now in progress'],
  [ESTALE, 'ESTALE', 'Stale file handle'],
  [EUCLEAN, 'EUCLEAN', 'Structure needs cleaning'],
  [ENOTNAM, 'ENOTNAM', 'Not a XENIX named type file'],
  [ENAVAIL, 'ENAVAIL', 'No XENIX semaphores available'],
  [EISNAM, 'EISNAM', 'Is a named type file'],
  [EREMOTEIO, 'EREMOTEIO', 'Remote I/O error'],
  [EDQUOT, 'EDQUOT', 'Disk quota exceeded'],
  [ENOMEDIUM, 'ENOMEDIUM', 'No medium found'],
  [EMEDIUMTYPE, 'EMEDIUMTYPE', 'Wrong medium type'],
  [ECANCELED, 'ECANCELED', 'Operation canceled'],
  [ENOKEY, 'ENOKEY', 'Required key not available'],
  [EKEYEXPIRED, 'EKEYEXPIRED', 'Key has expired'],
  [EKEYREVOKED, 'EKEYREVOKED', 'Key has been revoked'],
  [EKEYREJECTED, 'EKEYREJECTED', 'Key was rejected by service'],
  [EOWNERDEAD, 'EOWNERDEAD', 'Owner died'],
  [ENOTRECOVERABLE, 'ENOTRECOVERABLE', 'State not recoverable'],
  [ERFKILL, 'ERFKILL', 'Operation not possible due to RF-kill'],
  [EHWPOISON, 'EHWPOISON', 'Memory page has hardware error'],
  [ERESTARTSYS, 'ERESTARTSYS', 'Unknown error 512'],
];

/** Every errno with a name, in numeric order, aliases excluded. */
export const ERRNOS: readonly ErrnoEntry[] = Object.freeze(
  ENTRIES.map(([errno, name, text]) => Object.freeze({ errno, name, text })),
);

const BY_NUMBER: ReadonlyMap<number, ErrnoEntry> = new Map(ERRNOS.map((entry) => [entry.errno, entry]));

const BY_NAME: ReadonlyMap<string, number> = new Map([
  ...ERRNOS.map((entry) => [entry.name, entry.errno] as const),
  ['EWOULDBLOCK', EWOULDBLOCK],
  ['EDEADLOCK', EDEADLOCK],
  ['ENOTSUP', ENOTSUP],
]);

/** Returns 'EINVAL' for 22, and 'E?' followed by the number when the number has no name. */
export function errnoName(errno: number): string {
  return BY_NUMBER.get(errno)?.name ?? `E?${errno}`;
}

/** Accepts every name errnoName() returns plus the aliases EWOULDBLOCK, EDEADLOCK and ENOTSUP. */
export function errnoNumber(name: string): number | undefined {
  return BY_NAME.get(name);
}

/** glibc's text for the errno, e.g. 'Invalid argument'; 'Unknown error N' like glibc for unnamed numbers. */
export function strerror(errno: number): string {
  return BY_NUMBER.get(errno)?.text ?? `Unknown error ${errno}`;
}

export interface KernelErrorOptions {
  errno: number;
  /** The failing call as a reader would name it, e.g. 'ioctl(UFFDIO_COPY)' or 'mmap'. */
  syscall: string;
  /** The argument at fault, e.g. 'dst'. */
  argument?: string;
  /** Why the kernel refused, e.g. 'not page aligned'. */
  reason?: string;
}

/**
 * A failed system call, as every backend reports it. The message follows Node's system errors,
 * `EINVAL: Invalid argument, ioctl(UFFDIO_COPY) dst: not page aligned`, so it reads the way users already know;
 * `code` is the permanent errno name that programs should test.
 */
export class KernelError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  // Declared rather than initialised so that absent parts are absent, not listed as undefined.
  declare readonly argument?: string;
  declare readonly reason?: string;
  /**
   * The partial-progress value the kernel wrote back (e.g. uffdio_copy.copy) before failing. It is set by the
   * caller after construction because only the caller knows which field, if any, the kernel wrote.
   */
  declare progress?: number;

  constructor(options: KernelErrorOptions) {
    const code = errnoName(options.errno);
    super(KernelError.format(code, options));
    this.errno = options.errno;
    this.code = code;
    this.syscall = options.syscall;
    if (options.argument !== undefined) this.argument = options.argument;
    if (options.reason !== undefined) this.reason = options.reason;
  }

  private static format(code: string, options: KernelErrorOptions): string {
    let detail = options.syscall;
    if (options.argument !== undefined) detail += ` ${options.argument}`;
    if (options.reason !== undefined) detail += `: ${options.reason}`;
    return `${code}: ${strerror(options.errno)}, ${detail}`;
  }
}

// `name` lives on the prototype, as for Node's built-in errors, so that it is not listed among the fields.
Object.defineProperty(KernelError.prototype, 'name', {
  value: 'KernelError',
  writable: true,
  configurable: true,
});

export interface SignalErrorOptions {
  signal: number;
  /** The faulting address, as the kernel reports it in si_addr. */
  address: number;
  siCode: number;
}

/**
 * A memory access that raised a signal in the calling thread (SIGBUS for a poisoned page or a SIGBUS-mode
 * userfaultfd, SIGSEGV for an unmapped or protected address). It is thrown rather than returned because the
 * access has no result: the thread would not have continued past it.
 */
export class SignalError extends Error {
  readonly signal: number;
  readonly signalName: string;
  readonly address: number;
  readonly siCode: number;

  constructor(options: SignalErrorOptions) {
    const name = signalName(options.signal);
    super(`${name} at 0x${options.address.toString(16)} (${siCodeName(options.signal, options.siCode)})`);
    this.signal = options.signal;
    this.signalName = name;
    this.address = options.address;
    this.siCode = options.siCode;
  }
}

Object.defineProperty(SignalError.prototype, 'name', {
  value: 'SignalError',
  writable: true,
  configurable: true,
});
