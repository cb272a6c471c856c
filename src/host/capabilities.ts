/**
 * What the host can run: userfaultfd access, root, hugetlb pages (made
 * available for the run through vm.nr_overcommit_hugepages, given back at exit),
 * KVM with guest_memfd. Every check answers with one line saying what is
 * missing, so a caller can skip with that reason; none of them throws.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
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

/**
 * Raising vm.nr_overcommit_hugepages is shared by every faultline run on the
 * machine: one state file lists the runs holding huge pages (pid → pages) and
 * the value before the first of them raised it, and a lock file makes each
 * read-modify-write of it exclusive. The limit is the original plus what the
 * live holders asked for, so concurrent runs never take each other's pages,
 * and the last one out restores the original. A holder that died without
 * releasing (SIGKILL) is dropped by the next run that takes the lock.
 */
const HUGEPAGE_STATE_DIR = join(tmpdir(), 'faultline-hugepages');
const HUGEPAGE_STATE = join(HUGEPAGE_STATE_DIR, 'state.json');
const HUGEPAGE_LOCK = join(HUGEPAGE_STATE_DIR, 'lock');

interface HugePageState {
  original: number;
  holders: Record<string, number>;
}

/** Whether this process holds raised huge pages (and must release them on its way out). */
let holding = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Runs `body` holding the lock file (taken over from a dead owner; 10 s at most, then an Error). */
function withHugePageLock<T>(body: () => T): T {
  mkdirSync(HUGEPAGE_STATE_DIR, { recursive: true, mode: 0o700 });
  for (let waited = 0; ; waited += 5) {
    try {
      writeFileSync(HUGEPAGE_LOCK, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = readNumber(HUGEPAGE_LOCK);
      if (owner !== undefined && !alive(owner)) rmSync(HUGEPAGE_LOCK, { force: true });
      else if (waited > 10_000) throw new Error(`${HUGEPAGE_LOCK} is held by process ${owner}`);
      else pause(5);
    }
  }
  try {
    return body();
  } finally {
    rmSync(HUGEPAGE_LOCK, { force: true });
  }
}

/** The state with dead holders dropped (null when no run holds pages). */
function liveState(): HugePageState | null {
  let state: HugePageState;
  try {
    state = JSON.parse(readFileSync(HUGEPAGE_STATE, 'utf8')) as HugePageState;
  } catch {
    return null;
  }
  for (const pid of Object.keys(state.holders)) if (!alive(Number(pid))) delete state.holders[pid];
  return state;
}

/** Writes the limit the holders need (the original once none is left) and the state. */
function applyState(state: HugePageState): void {
  const asked = Object.values(state.holders).reduce((sum, pages) => sum + pages, 0);
  writeFileSync(NR_OVERCOMMIT_HUGEPAGES, `${state.original + asked}\n`);
  if (asked === 0) rmSync(HUGEPAGE_STATE, { force: true });
  else writeFileSync(HUGEPAGE_STATE, JSON.stringify(state));
}

function hookExitPaths(): void {
  process.once('exit', releaseHugePages);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, releaseOnSignal);
}

/** Ctrl-C (or SIGTERM, SIGHUP): give the pages back, then die of the signal as before. */
function releaseOnSignal(signal: NodeJS.Signals): void {
  releaseHugePages();
  process.removeAllListeners(signal);
  process.kill(process.pid, signal);
}

/**
 * Makes sure `count` 2 MiB huge pages can be had for this run. Free pages
 * already in the pool are used as they are; otherwise faultline raises
 * vm.nr_overcommit_hugepages (see the state file above), so the kernel
 * allocates surplus huge pages when a mapping needs them and frees them when
 * it goes: nothing stays reserved. The limit is restored on every exit path
 * (exit, Ctrl-C, SIGTERM, SIGHUP, or releaseHugePages). Returns undefined, or
 * the line saying why not.
 */
export function reserveHugePages(count = DEFAULT_HUGE_PAGES): string | undefined {
  const pool = hugePagePool();
  if (pool === undefined) return 'no hugetlb pages: the kernel has no 2 MiB hugetlb pool';
  if (pool.free >= count && !holding) return undefined;
  if (!isRoot()) {
    const overcommit = readNumber(`${HUGEPAGES_2M}/nr_overcommit_hugepages`) ?? 0;
    const surplus = readNumber(`${HUGEPAGES_2M}/surplus_hugepages`) ?? 0;
    if (pool.free + overcommit - surplus >= count) return undefined;
    return `no hugetlb pages: ${pool.free} free of ${count} needed, and not root to raise ${NR_OVERCOMMIT_HUGEPAGES}`;
  }
  const available = readMeminfo('MemAvailable');
  if (available !== undefined && available < count * 2 * 1024 * 1024 * 2) {
    return `no hugetlb pages: ${count} huge pages needed, only ${Math.floor(available / 1048576)} MiB of memory available`;
  }
  try {
    withHugePageLock(() => {
      const state = liveState() ?? {
        original: readNumber(`${HUGEPAGES_2M}/nr_overcommit_hugepages`) ?? 0,
        holders: {},
      };
      const mine = state.holders[process.pid] ?? 0;
      state.holders[process.pid] = Math.max(mine, count);
      applyState(state);
    });
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    return `no hugetlb pages: raising ${NR_OVERCOMMIT_HUGEPAGES} failed (${reason})`;
  }
  if (!holding) hookExitPaths();
  holding = true;
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

/** Whether this run has raised vm.nr_overcommit_hugepages and not given its pages back yet. */
export function hugePagesRaised(): boolean {
  return holding;
}

/** Gives this run's pages back: the limit drops by them, to the original once no run holds any. */
export function releaseHugePages(): void {
  if (!holding) return;
  holding = false;
  process.removeListener('exit', releaseHugePages);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.removeListener(signal, releaseOnSignal);
  try {
    withHugePageLock(() => {
      const state = liveState();
      if (state === null) return;
      delete state.holders[process.pid];
      applyState(state);
    });
  } catch {
    // Nothing more to do on the way out; the next run drops this holder.
  }
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
