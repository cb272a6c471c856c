/**
 * What the host can run: userfaultfd access, root, hugetlb pages (made
 * available for the run through vm.nr_overcommit_hugepages, given back at exit),
 * KVM with guest_memfd. Every check answers with one line saying what is
 * missing, so a caller can skip with that reason; none of them throws.
 */
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { KVM_CAP_GUEST_MEMFD, O_CLOEXEC, O_NONBLOCK, O_RDWR } from '../uapi/constants.ts';
import { EACCES, EPERM, errnoName } from '../uapi/errno.ts';
import { native, nativeLoadError } from './native.ts';

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';
const NR_OVERCOMMIT_HUGEPAGES = '/proc/sys/vm/nr_overcommit_hugepages';
const HUGEPAGES_2M = '/sys/kernel/mm/hugepages/hugepages-2048kB';

/** Huge pages faultline asks for when a run needs hugetlb (64 MiB of 2 MiB pages). */
export const DEFAULT_HUGE_PAGES = 32;

let uffdReason: string | null | undefined;

/** Why the host backend cannot run at all (no addon, no userfaultfd access), or undefined. */
export function hostUnavailable(): string | undefined {
  if (nativeLoadError !== null || native === null) return nativeLoadError ?? 'the native addon is not loaded';
  if (uffdReason === undefined) uffdReason = probeUserfaultfd();
  return uffdReason ?? undefined;
}

function probeUserfaultfd(): string | null {
  const addon = native!;
  const fd = addon.userfaultfd(O_CLOEXEC | O_NONBLOCK);
  if (fd >= 0) {
    addon.close(fd);
    return null;
  }
  const device = addon.open('/dev/userfaultfd', O_RDWR | O_CLOEXEC);
  if (device >= 0) {
    addon.close(device);
    return null;
  }
  if (-fd !== EPERM) return `no userfaultfd: userfaultfd(2) gives ${errnoName(-fd)}`;
  const deviceProblem =
    -device === EACCES ? 'is not accessible (EACCES)' : `cannot be opened (${errnoName(-device)})`;
  return (
    'no userfaultfd access: userfaultfd(2) gives EPERM (vm.unprivileged_userfaultfd is 0 and the process ' +
    `lacks CAP_SYS_PTRACE) and /dev/userfaultfd ${deviceProblem}`
  );
}

export function isRoot(): boolean {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

function readNumber(path: string): number | undefined {
  try {
    const value = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isFinite(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The 2 MiB hugetlb pool: total pages, and free pages not reserved by existing mappings. */
export function hugePagePool(): { total: number; free: number } | undefined {
  const total = readNumber(`${HUGEPAGES_2M}/nr_hugepages`) ?? readNumber(NR_HUGEPAGES);
  const free = readNumber(`${HUGEPAGES_2M}/free_hugepages`);
  const reserved = readNumber(`${HUGEPAGES_2M}/resv_hugepages`) ?? 0;
  if (total === undefined || free === undefined) return undefined;
  return { total, free: Math.max(0, free - reserved) };
}

/** nr_overcommit_hugepages before faultline raised it, to restore at exit. */
let originalOvercommit: number | undefined;

/**
 * Makes sure `count` 2 MiB huge pages can be had for this run. Free pages
 * already in the pool are used as they are; otherwise faultline raises
 * vm.nr_overcommit_hugepages, so the kernel allocates surplus huge pages when
 * a mapping needs them and frees them when it goes: nothing stays reserved,
 * even if the run is killed. The limit is restored at exit (or by
 * releaseHugePages). Returns undefined, or the line saying why not.
 */
export function reserveHugePages(count = DEFAULT_HUGE_PAGES): string | undefined {
  const pool = hugePagePool();
  if (pool === undefined) return 'no hugetlb pages: the kernel has no 2 MiB hugetlb pool';
  if (pool.free >= count) return undefined;
  const overcommit = readNumber(`${HUGEPAGES_2M}/nr_overcommit_hugepages`) ?? 0;
  const surplus = readNumber(`${HUGEPAGES_2M}/surplus_hugepages`) ?? 0;
  if (pool.free + overcommit - surplus >= count) return undefined;
  if (!isRoot()) {
    return `no hugetlb pages: ${pool.free} free of ${count} needed, and not root to raise ${NR_OVERCOMMIT_HUGEPAGES}`;
  }
  const available = readMeminfo('MemAvailable');
  if (available !== undefined && available < count * 2 * 1024 * 1024 * 2) {
    return `no hugetlb pages: ${count} huge pages needed, only ${Math.floor(available / 1048576)} MiB of memory available`;
  }
  try {
    if (originalOvercommit === undefined) {
      originalOvercommit = overcommit;
      process.once('exit', releaseHugePages);
    }
    writeFileSync(NR_OVERCOMMIT_HUGEPAGES, `${Math.max(overcommit, surplus + count)}\n`);
  } catch (error) {
    return `no hugetlb pages: writing ${NR_OVERCOMMIT_HUGEPAGES} failed (${(error as NodeJS.ErrnoException).code})`;
  }
  return undefined;
}

function readMeminfo(field: string): number | undefined {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'));
    return match === null ? undefined : Number(match[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** Whether faultline has raised vm.nr_overcommit_hugepages and not restored it yet. */
export function hugePagesRaised(): boolean {
  return originalOvercommit !== undefined;
}

/** Restores vm.nr_overcommit_hugepages (surplus pages in use are freed as their mappings go). */
export function releaseHugePages(): void {
  if (originalOvercommit === undefined) return;
  // reserveHugePages adds the exit listener again once this has restored the limit.
  process.removeListener('exit', releaseHugePages);
  try {
    writeFileSync(NR_OVERCOMMIT_HUGEPAGES, `${originalOvercommit}\n`);
  } catch {
    // Nothing more to do at exit.
  }
  originalOvercommit = undefined;
}

let kvmReason: string | null | undefined;

/** Why KVM guest_memfd cannot be used, or undefined. */
export function kvmUnavailable(): string | undefined {
  if (kvmReason === undefined) kvmReason = probeKvm();
  return kvmReason ?? undefined;
}

function probeKvm(): string | null {
  const base = hostUnavailable();
  if (base !== undefined && native === null) return base;
  let fd: number;
  try {
    fd = openSync('/dev/kvm', 'r+');
  } catch (error) {
    return `no KVM: /dev/kvm cannot be opened (${(error as NodeJS.ErrnoException).code})`;
  }
  try {
    const guestMemfd = native!.kvmCheckExtension(fd, KVM_CAP_GUEST_MEMFD);
    if (guestMemfd <= 0) return 'no KVM guest_memfd: KVM_CHECK_EXTENSION(KVM_CAP_GUEST_MEMFD) gives 0';
  } finally {
    closeSync(fd);
  }
  const vm = native!.kvmCreateVm(0);
  if (vm < 0) return `no KVM: KVM_CREATE_VM gives ${errnoName(-vm)}`;
  native!.close(vm);
  return null;
}

/**
 * Why the host cannot run something needing `required` (scenario
 * capabilities: hugetlb, guest_memfd, vm_uffd_ops, root), or undefined.
 * hugetlb reserves pages for the run.
 */
export function missingHostCapability(required: readonly string[]): string | undefined {
  const base = hostUnavailable();
  if (base !== undefined) return base;
  for (const capability of required) {
    if (capability === 'root' && !isRoot()) return 'not root';
    if (capability === 'hugetlb') {
      const reason = reserveHugePages();
      if (reason !== undefined) return reason;
    }
    if (capability === 'guest_memfd') {
      const reason = kvmUnavailable();
      if (reason !== undefined) return reason;
    }
    if (capability === 'vm_uffd_ops') {
      return `the host kernel (Linux ${release()}) has no vm_uffd_ops memory-type API`;
    }
  }
  return undefined;
}
