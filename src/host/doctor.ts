/**
 * `faultline doctor`: what this machine offers the host backend, one check
 * per piece (the addon, userfaultfd(2) and vm.unprivileged_userfaultfd,
 * /dev/userfaultfd, huge pages, KVM), each missing piece with the exact
 * command that fixes it. Probing never changes the machine.
 */
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { O_CLOEXEC, O_NONBLOCK } from '../uapi/constants.ts';
import { errnoName } from '../uapi/errno.ts';
import { hugePagePool, isRoot, kvmUnavailable } from './capabilities.ts';
import {
  NATIVE_ADDON_PATH,
  NATIVE_AGENT_PATH,
  NATIVE_DIRECTORY,
  type NativeAddon,
  native,
  nativeLoadError,
} from './native.ts';

export interface DoctorCheck {
  /** What was checked, e.g. `userfaultfd(2)`. */
  readonly name: string;
  readonly ok: boolean;
  /** What was found. */
  readonly detail: string;
  /** The command (or step) that fixes a missing piece. */
  readonly fix?: string;
  /** What needs this piece. */
  readonly neededBy: string;
}

/**
 * What the checks look at, as one record: `hostProbe()` reads this machine;
 * a test passes one that pretends a piece is missing.
 */
export interface DoctorProbe {
  /** The loaded addon (only what the checks call), or null with the reason it did not load. */
  readonly addon: Pick<NativeAddon, 'userfaultfd' | 'close'> | null;
  readonly addonLoadError: string | null;
  readonly addonPath: string;
  readonly agentPath: string;
  /** Whether this is a checkout (src/ beside the package), where the addon is built with npm. */
  readonly checkout: boolean;
  exists(path: string): boolean;
  /** Opens `path` read-write and closes it again; throws the open's error (with its `code`). */
  openReadWrite(path: string): void;
  /** A sysctl's value from /proc/sys, or undefined when it is absent. */
  sysctl(path: string): string | undefined;
  hugePagePool(): { total: number; free: number } | undefined;
  isRoot(): boolean;
  /** Why guest_memfd cannot be used, or undefined when it can. */
  kvmUnavailable(): string | undefined;
  /** The user a fix names (`$USER`). */
  readonly user: string | undefined;
}

/** The package root: build/Release and prebuilds/<platform>-<arch> are both two levels below it. */
const root = join(NATIVE_DIRECTORY, '..', '..');

/** This machine. */
export function hostProbe(): DoctorProbe {
  return {
    addon: native,
    addonLoadError: nativeLoadError,
    addonPath: NATIVE_ADDON_PATH,
    agentPath: NATIVE_AGENT_PATH,
    checkout: existsSync(join(root, 'src')),
    exists: existsSync,
    openReadWrite: (path) => closeSync(openSync(path, 'r+')),
    sysctl: (path) => {
      try {
        return readFileSync(path, 'utf8').trim();
      } catch {
        return undefined;
      }
    },
    hugePagePool,
    isRoot,
    kvmUnavailable,
    user: process.env.USER,
  };
}

function addonCheck(probe: DoctorProbe): DoctorCheck {
  const fix = probe.checkout
    ? 'apt-get install python3 make g++ && npm run build:native'
    : 'apt-get install python3 make g++ && npm rebuild faultline';
  if (probe.addon === null) {
    return {
      name: 'native addon',
      ok: false,
      detail: probe.addonLoadError ?? 'not loaded',
      fix,
      neededBy: 'every --backend host run',
    };
  }
  if (!probe.exists(probe.agentPath)) {
    return {
      name: 'native addon',
      ok: false,
      detail: `${probe.agentPath} is missing`,
      fix,
      neededBy: 'host scenarios (their agent process)',
    };
  }
  return {
    name: 'native addon',
    ok: true,
    detail: `loaded from ${probe.addonPath}`,
    neededBy: 'every --backend host run',
  };
}

function syscallCheck(probe: DoctorProbe): DoctorCheck {
  const unprivileged = probe.sysctl('/proc/sys/vm/unprivileged_userfaultfd');
  const sysctl = `vm.unprivileged_userfaultfd = ${unprivileged ?? 'absent'}`;
  const neededBy =
    'userfaultfd opened through the syscall (the fallback when /dev/userfaultfd is not usable)';
  const addon = probe.addon;
  if (addon === null)
    return { name: 'userfaultfd(2)', ok: false, detail: `not probed without the addon; ${sysctl}`, neededBy };
  const fd = addon.userfaultfd(O_CLOEXEC | O_NONBLOCK);
  if (fd >= 0) {
    addon.close(fd);
    return {
      name: 'userfaultfd(2)',
      ok: true,
      detail: `works (${probe.isRoot() ? 'root' : sysctl})`,
      neededBy,
    };
  }
  return {
    name: 'userfaultfd(2)',
    ok: false,
    detail: `gives ${errnoName(-fd)}; ${sysctl}`,
    fix: 'sysctl -w vm.unprivileged_userfaultfd=1 (as root), or run faultline as root (CAP_SYS_PTRACE)',
    neededBy,
  };
}

function deviceCheck(probe: DoctorProbe): DoctorCheck {
  const neededBy = 'userfaultfd through /dev/userfaultfd (preferred: kernel faults too, without root)';
  if (!probe.exists('/dev/userfaultfd')) {
    return {
      name: '/dev/userfaultfd',
      ok: false,
      detail: 'absent (Linux 6.1+ built with CONFIG_USERFAULTFD has it)',
      fix: 'use a Linux 6.1 or newer kernel; until then the syscall serves',
      neededBy,
    };
  }
  try {
    probe.openReadWrite('/dev/userfaultfd');
    return { name: '/dev/userfaultfd', ok: true, detail: 'opens read-write', neededBy };
  } catch (error) {
    return {
      name: '/dev/userfaultfd',
      ok: false,
      detail: `cannot be opened (${(error as NodeJS.ErrnoException).code})`,
      fix: `setfacl -m u:${probe.user ?? '$USER'}:rw /dev/userfaultfd (as root; a udev rule keeps it across boots)`,
      neededBy,
    };
  }
}

function hugePagesCheck(probe: DoctorProbe): DoctorCheck {
  const neededBy = 'hugetlb scenarios and --mode hugetlb workloads on the host';
  const pool = probe.hugePagePool();
  if (pool === undefined) {
    return {
      name: 'huge pages (2 MiB)',
      ok: false,
      detail: 'the kernel has no 2 MiB hugetlb pool',
      fix: 'a kernel built with CONFIG_HUGETLBFS',
      neededBy,
    };
  }
  const overcommit = probe.sysctl('/proc/sys/vm/nr_overcommit_hugepages') ?? '0';
  const detail = `${pool.free} free of ${pool.total}, nr_overcommit_hugepages ${overcommit}`;
  if (pool.free > 0 || Number(overcommit) > 0)
    return { name: 'huge pages (2 MiB)', ok: true, detail, neededBy };
  if (probe.isRoot())
    return {
      name: 'huge pages (2 MiB)',
      ok: true,
      detail: `${detail}; as root, faultline raises nr_overcommit_hugepages for a run and restores it`,
      neededBy,
    };
  return {
    name: 'huge pages (2 MiB)',
    ok: false,
    detail,
    fix: 'sysctl -w vm.nr_hugepages=32 (as root)',
    neededBy,
  };
}

function kvmCheck(probe: DoctorProbe): DoctorCheck {
  const neededBy = 'guest_memfd scenarios and --mode gmem-* workloads on the host';
  const reason = probe.kvmUnavailable();
  if (reason === undefined)
    return {
      name: 'KVM guest_memfd',
      ok: true,
      detail: '/dev/kvm opens, KVM_CAP_GUEST_MEMFD, KVM_CREATE_VM works',
      neededBy,
    };
  const fix = probe.exists('/dev/kvm')
    ? `usermod -aG kvm ${probe.user ?? '$USER'} (as root; log in again), on a kernel with guest_memfd (6.8+)`
    : 'modprobe kvm_intel (or kvm_amd) as root; in a VM, enable nested virtualization';
  return { name: 'KVM guest_memfd', ok: false, detail: reason, fix, neededBy };
}

/** Every check, in the order a user fixes them. */
export function doctorChecks(probe: DoctorProbe = hostProbe()): DoctorCheck[] {
  return [addonCheck(probe), syscallCheck(probe), deviceCheck(probe), hugePagesCheck(probe), kvmCheck(probe)];
}
