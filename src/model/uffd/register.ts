/**
 * UFFDIO_REGISTER and UFFDIO_UNREGISTER (userfaultfd_register/unregister in
 * fs/userfaultfd.c, checks in the order uapi-facts.md §3.2–3.3 gives). What a
 * VMA supports is derived from its memory type's declaration; no type is
 * named here.
 */
import {
  _UFFDIO_CONTINUE,
  _UFFDIO_COPY,
  _UFFDIO_WRITEPROTECT,
  UFFD_API_RANGE_IOCTLS,
  UFFD_FEATURE_WP_ASYNC,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
} from '../../uapi/constants.ts';
import { EBUSY, EINVAL, ENOMEM, EPERM } from '../../uapi/errno.ts';
import { hex } from '../failure.ts';
import type { HookChecker } from '../mm/hooks.ts';
import type { AddressSpace } from '../mm/mm.ts';
import { PTE_MARKER_UFFD_WP, PTE_PRESENT, PTE_UFFD_WP } from '../mm/pagetable.ts';
import {
  VM_DROPPABLE,
  VM_MAYWRITE,
  VM_UFFD_FLAGS,
  VM_UFFD_MINOR,
  VM_UFFD_MISSING,
  VM_UFFD_WP,
  type Vma,
} from '../mm/vma.ts';
import type { UffdContext } from './context.ts';
import { validateRange } from './validate.ts';

const bit = (nr: number) => 1n << BigInt(nr);

export function modesToVmFlags(modes: number): number {
  return (
    (modes & UFFDIO_REGISTER_MODE_MISSING ? VM_UFFD_MISSING : 0) |
    (modes & UFFDIO_REGISTER_MODE_WP ? VM_UFFD_WP : 0) |
    (modes & UFFDIO_REGISTER_MODE_MINOR ? VM_UFFD_MINOR : 0)
  );
}

export function vmFlagsToModes(flags: number): number {
  return (
    (flags & VM_UFFD_MISSING ? UFFDIO_REGISTER_MODE_MISSING : 0) |
    (flags & VM_UFFD_WP ? UFFDIO_REGISTER_MODE_WP : 0) |
    (flags & VM_UFFD_MINOR ? UFFDIO_REGISTER_MODE_MINOR : 0)
  );
}

/**
 * vma_can_userfault: whether `vma` may be registered for `modes`. The modes a
 * type supports follow from its declared range ioctls; its `canUserfault`
 * hook has the last word.
 */
export function vmaCanUserfault(vma: Vma, modes: number, wpAsync: boolean, hooks: HookChecker): boolean {
  if (vma.flags & VM_DROPPABLE) return false;
  // Asynchronous dirty tracking needs no help from the memory type.
  if (wpAsync && modes === UFFDIO_REGISTER_MODE_WP) return true;
  const type = vma.memoryType;
  const ops = type.uffdOps;
  if (ops === null) return false;
  const declared = type.rangeIoctls;
  if (modes & UFFDIO_REGISTER_MODE_MISSING && (declared & bit(_UFFDIO_COPY)) === 0n) return false;
  if (modes & UFFDIO_REGISTER_MODE_MINOR && (declared & bit(_UFFDIO_CONTINUE)) === 0n) return false;
  if (modes & UFFDIO_REGISTER_MODE_WP && (declared & bit(_UFFDIO_WRITEPROTECT)) === 0n) return false;
  if (!vma.isAnonymous && ops.getFolioNoalloc === undefined) return false;
  // Through the checker, a hook that throws or changes anything answers false and is reported.
  return hooks.canUserfault(type, ops, vma, modes);
}

/** A registration being checked and made: the context, the range and the modes asked for. */
interface RegisterRequest {
  readonly ctx: UffdContext;
  readonly start: number;
  readonly end: number;
  readonly modes: number;
  readonly hooks: HookChecker;
}

/** Returns the `ioctls` mask to write back, or -errno. */
export function userfaultfdRegister(
  ctx: UffdContext,
  start: number,
  length: number,
  mode: bigint,
  hooks: HookChecker,
): bigint | number {
  if (mode === 0n) return ctx.failure.fail(EINVAL, 'mode', 'no mode requested');
  if ((mode & ~7n) !== 0n) return ctx.failure.fail(EINVAL, 'mode', `unknown mode bits ${hex(mode & ~7n)}`);
  const modes = Number(mode);
  const rangeError = validateRange(ctx.failure, start, length, 'range');
  if (rangeError < 0) return rangeError;
  const mm: AddressSpace = ctx.mm;
  if (mm.dead) return ctx.failure.fail(ENOMEM, 'uffd', 'the registered process has exited');
  const end = start + length;
  const vmas = mm.vmasIn(start, end);
  const first = vmas[0];
  if (first === undefined)
    return ctx.failure.fail(EINVAL, 'range', `no mapping in ${hex(start)}-${hex(end)}`);
  if (first.pageShift > 12 && start % first.pageSize !== 0) {
    return ctx.failure.fail(
      EINVAL,
      'range.start',
      `not aligned to the ${first.pageSize / 1024} KiB pages of ${first.describe()}`,
    );
  }
  const request: RegisterRequest = { ctx, start, end, modes, hooks };
  let ioctls = UFFD_API_RANGE_IOCTLS;
  for (const vma of vmas) {
    const refused = checkRegisterVma(request, vma);
    if (refused < 0) return refused;
    if (vma.memoryType.uffdOps !== null) ioctls &= vma.memoryType.rangeIoctls;
  }
  register(request, vmas);
  if ((modes & UFFDIO_REGISTER_MODE_WP) === 0) ioctls &= ~bit(_UFFDIO_WRITEPROTECT);
  if ((modes & UFFDIO_REGISTER_MODE_MINOR) === 0) ioctls &= ~bit(_UFFDIO_CONTINUE);
  return ioctls;
}

/** One VMA of the range may be registered: its type supports the modes, it is writable, aligned, free. */
function checkRegisterVma(request: RegisterRequest, vma: Vma): number {
  const { ctx, end, modes, hooks } = request;
  if (!vmaCanUserfault(vma, modes, ctx.hasFeature(UFFD_FEATURE_WP_ASYNC), hooks)) {
    return ctx.failure.fail(
      EINVAL,
      'mode',
      `${vma.describe()} does not support mode ${describeModes(modes)}`,
    );
  }
  if ((vma.flags & VM_MAYWRITE) === 0) {
    return ctx.failure.fail(
      EPERM,
      'range',
      `${vma.describe()} cannot be written (mapped through a read-only fd)`,
    );
  }
  if (vma.pageShift > 12 && end > vma.start && end < vma.end && end % vma.pageSize !== 0) {
    return ctx.failure.fail(
      EINVAL,
      'range.len',
      `end ${hex(end)} is not aligned to the huge pages of ${vma.describe()}`,
    );
  }
  if (vma.uffdContext !== null && vma.uffdContext !== ctx) {
    return ctx.failure.fail(EBUSY, 'range', `${vma.describe()} is registered with another userfaultfd`);
  }
  return 0;
}

/** Splits the VMAs at the range's edges, flags and ties them to the context, and merges what it can. */
function register(request: RegisterRequest, vmas: readonly Vma[]): void {
  const { ctx, start, end, modes } = request;
  const mm = ctx.mm;
  const vmFlags = modesToVmFlags(modes);
  for (const vma of vmas) {
    if (vma.uffdContext === ctx && (vma.flags & vmFlags) === vmFlags) continue;
    mm.splitRange(Math.max(start, vma.start), Math.min(end, vma.end));
  }
  for (const vma of mm.vmasIn(start, end)) {
    if (vma.uffdContext === ctx && (vma.flags & vmFlags) === vmFlags) continue;
    vma.flags = (vma.flags & ~VM_UFFD_FLAGS) | vmFlags;
    vma.uffdContext = ctx;
  }
  mm.mergeRange(start, end);
}

/** Returns 0 or -errno. `wake` wakes fault waiters of a MISSING range. */
export function userfaultfdUnregister(
  ctx: UffdContext,
  start: number,
  length: number,
  wake: (start: number, length: number) => void,
  hooks: HookChecker,
): number {
  const rangeError = validateRange(ctx.failure, start, length, 'range');
  if (rangeError < 0) return rangeError;
  const mm = ctx.mm;
  if (mm.dead) return ctx.failure.fail(ENOMEM, 'uffd', 'the registered process has exited');
  const end = start + length;
  const vmas = mm.vmasIn(start, end);
  const first = vmas[0];
  if (first === undefined)
    return ctx.failure.fail(EINVAL, 'range', `no mapping in ${hex(start)}-${hex(end)}`);
  if (first.pageShift > 12 && start % first.pageSize !== 0) {
    return ctx.failure.fail(EINVAL, 'range.start', `not aligned to the huge pages of ${first.describe()}`);
  }
  const wpAsync = ctx.hasFeature(UFFD_FEATURE_WP_ASYNC);
  for (const vma of vmas) {
    if (vma.uffdContext !== null && vma.uffdContext !== ctx) {
      return ctx.failure.fail(EINVAL, 'range', `${vma.describe()} is registered with another userfaultfd`);
    }
    if (vma.uffdContext === null && !vmaCanUserfault(vma, vmFlagsToModes(vma.flags), wpAsync, hooks)) {
      return ctx.failure.fail(EINVAL, 'range', `${vma.describe()} cannot be registered with userfaultfd`);
    }
    if (vma.uffdContext === ctx && vma.pageShift > 12) {
      const splitStart = Math.max(start, vma.start);
      const splitEnd = Math.min(end, vma.end);
      if (splitStart % vma.pageSize !== 0 || splitEnd % vma.pageSize !== 0) {
        return ctx.failure.fail(EINVAL, 'range', `splitting ${vma.describe()} there would break a huge page`);
      }
    }
  }
  for (const vma of vmas) {
    if (vma.uffdContext !== ctx) continue;
    const lo = Math.max(start, vma.start);
    const hi = Math.min(end, vma.end);
    if (vma.flags & VM_UFFD_MISSING) wake(lo, hi - lo);
    if (vma.flags & VM_UFFD_WP) clearUffdWp(mm, lo, hi);
    mm.splitRange(lo, hi);
  }
  for (const vma of mm.vmasIn(start, end)) {
    if (vma.uffdContext !== ctx) continue;
    vma.flags &= ~VM_UFFD_FLAGS;
    vma.uffdContext = null;
  }
  mm.mergeRange(start, end);
  return 0;
}

/** Removes every uffd-wp bit and marker in [start, end) (uffd_wp_range(..., false)). */
export function clearUffdWp(mm: AddressSpace, start: number, end: number): void {
  mm.pageTable.forEachInRange(start / 4096, end / 4096, (vpn, flags) => {
    if (flags & PTE_PRESENT) {
      if (flags & PTE_UFFD_WP) mm.pageTable.setFlags(vpn, flags & ~PTE_UFFD_WP);
    } else if (flags & PTE_MARKER_UFFD_WP) {
      const rest = flags & ~PTE_MARKER_UFFD_WP;
      if (rest === 0) mm.pageTable.clear(vpn);
      else mm.pageTable.setFlags(vpn, rest);
    }
  });
}

/** Releases every VMA registered with `ctx` (userfaultfd_release). */
export function unregisterAll(ctx: UffdContext): void {
  const mm = ctx.mm;
  const registered = mm.vmas.filter((vma) => vma.uffdContext === ctx);
  for (const vma of registered) {
    if (vma.flags & VM_UFFD_WP) clearUffdWp(mm, vma.start, vma.end);
    vma.flags &= ~VM_UFFD_FLAGS;
    vma.uffdContext = null;
  }
  for (const vma of registered) mm.mergeRange(vma.start, vma.end);
}

/** userfaultfd_release: the last file reference went; unregister everything and wake everyone. */
export function releaseContext(ctx: UffdContext): void {
  ctx.released = true;
  if (!ctx.mm.dead) unregisterAll(ctx);
  ctx.wakeAll();
  for (const event of ctx.events.splice(0)) event.onDone?.();
  ctx.mmapChanging = 0;
  ctx.completing.length = 0;
  ctx.notifyPollers();
}

export function describeModes(modes: number): string {
  const names: string[] = [];
  if (modes & UFFDIO_REGISTER_MODE_MISSING) names.push('MISSING');
  if (modes & UFFDIO_REGISTER_MODE_WP) names.push('WP');
  if (modes & UFFDIO_REGISTER_MODE_MINOR) names.push('MINOR');
  return names.join('|') || '0';
}
