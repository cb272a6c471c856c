/**
 * The hook checker: the only way the core calls a memory type. A hook is
 * code the core does not own, so every call runs under a journal of what the
 * hook did through its services (hook-journal.ts, hook-services.ts) and every
 * answer is checked (hook-checks.ts) before the core acts on it: the folio
 * must be the right one (inode and index, inside the file), of the mapping's
 * page size, locked or not as the contract says, with exactly the references
 * the contract gives; a "noalloc" hook must not allocate; an allocator must
 * return a fresh, unowned, unlocked folio; filemap_add must leave the folio
 * in the right slot with the cache's reference; a hook that only answers a
 * question (mmap_check, inode_page_shift, ...) must change nothing.
 *
 * A throw of any value, a result of the wrong kind or a lasting side effect
 * the contract does not allow is a violation: it becomes -EFAULT (SIGBUS for
 * a fault, false for can_userfault) and one warning naming the type and the
 * hook, and the journal is rolled back, so the core's state is exactly what
 * it was before the call. Whatever happens, the journal ends with the call.
 * Bytes a hook copies into folios are not rolled back.
 */
import { EFAULT, EINVAL } from '../../uapi/errno.ts';
import type { Inode } from '../mem/pagecache.ts';
import { NO_INODE, type PhysicalMemory } from '../mem/physmem.ts';
import {
  addedFolioProblem,
  type CachedFolioRequest,
  cachedFolioProblem,
  describeThrown,
  describeValue,
  freshFolioProblem,
  referenceProblem,
} from './hook-checks.ts';
import { HookJournal } from './hook-journal.ts';
import { type CoreServices, type LentServices, lendServices } from './hook-services.ts';
import { HookViews } from './hook-views.ts';
import type { InodeRequest, MemoryType, MmapRequest, VmUffdOps } from './memtype.ts';
import type { Vma } from './vma.ts';

/** The hooks the core calls through the checker, by their kernel names. */
export type HookName =
  | 'can_userfault'
  | 'get_folio_noalloc'
  | 'alloc_folio'
  | 'filemap_add'
  | 'filemap_remove'
  | 'fault'
  | 'get_folio_for_write'
  | 'write'
  | 'mmap_check'
  | 'fallocate_check'
  | 'init_inode'
  | 'inode_page_shift';

/** Every hook name, in the order reports list them. */
export const HOOK_NAMES: readonly HookName[] = [
  'inode_page_shift',
  'init_inode',
  'mmap_check',
  'can_userfault',
  'get_folio_noalloc',
  'alloc_folio',
  'filemap_add',
  'filemap_remove',
  'fault',
  'get_folio_for_write',
  'write',
  'fallocate_check',
];

const PAGE_SHIFTS = [12, 21, 30];

function isErrno(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value < 0 && value > -4096;
}

/** A hook as a call names it: its kernel name, and the label its warnings carry. */
interface HookSite {
  readonly hook: HookName;
  readonly label: string;
}

const site = (hook: HookName, label: string = hook): HookSite => Object.freeze({ hook, label });
const CAN_USERFAULT = site('can_userfault');
const ALLOC_FOLIO = site('alloc_folio');
const FILEMAP_ADD = site('filemap_add');
const FILEMAP_REMOVE = site('filemap_remove');
const FAULT = site('fault');
const GET_FOLIO_FOR_WRITE = site('get_folio_for_write', 'getFolioForWrite');
const WRITE = site('write');
const MMAP_CHECK = site('mmap_check', 'mmapCheck');
const FALLOCATE_CHECK = site('fallocate_check', 'fallocateCheck');
const INODE_PAGE_SHIFT = site('inode_page_shift', 'inodePageShift');
const INIT_INODE = site('init_inode', 'initInode');

/** A judge returns the problem with the hook's answer, or null to accept it. */
type Judge = (result: unknown) => string | null;

export class HookChecker {
  private readonly warned = new Set<string>();
  readonly warnings: string[] = [];
  /** The warning of the last rejected hook call, for the reason of the errno it became. */
  lastViolation: string | null = null;
  /** Told of every hook call (the conformance suite records which hooks a case exercised). */
  onHook: ((type: MemoryType, hook: HookName) => void) | null = null;
  private readonly journal: HookJournal;
  /** The views of inodes and VMAs this kernel's memory types are shown. */
  readonly views = new HookViews();
  /** The accepted answer of the last call. */
  private answer: unknown = undefined;
  /** What the current call asks, for the judges (kept in fields: COPY calls alloc_folio per page). */
  private request: CachedFolioRequest = { inode: null as unknown as Inode, pgoff: 0, pageShift: 12 };
  private requestVma: Vma | null = null;
  private requestRange = { start: 0, end: 0 };
  /** get_folio_noalloc's site per caller, built once (the fault path asks on every fault). */
  private readonly noallocSites = new Map<string, HookSite>();

  constructor(
    readonly memory: PhysicalMemory,
    private readonly emitWarning: (message: string) => void = () => {},
  ) {
    this.journal = new HookJournal(memory);
  }

  /** Services for one memory type's factory (see hook-services.ts); `bind` names the type it made. */
  lendServices(core: CoreServices): LentServices {
    return lendServices({
      journal: this.journal,
      views: this.views,
      core,
      outside: (type, problem) => this.misuse(type, problem),
      violation: () => this.lastViolation ?? 'a hook broke its contract',
    });
  }

  /** A type's misuse outside any hook call: one warning per problem, nothing done. */
  private misuse(type: MemoryType | null, problem: string): void {
    const message = `faultline: memory type '${type?.name ?? '(being created)'}' ${problem}`;
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.warnings.push(message);
    this.emitWarning(message);
  }

  /** Records one warning per (type, hook, problem). */
  violation(type: MemoryType, hook: string, problem: string): void {
    const message = `faultline: memory type '${type.name}' hook ${hook}: ${problem}`;
    this.lastViolation = message;
    const key = `${type.name}.${hook}: ${problem}`;
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.warnings.push(message);
    this.emitWarning(message);
  }

  // --- the one way a hook is called ---------------------------------------

  /**
   * Calls `invoke` under the journal and judges its answer. Returns true with
   * the answer in `answer`, or false after undoing the call and warning.
   */
  private run(
    type: MemoryType,
    at: HookSite,
    inode: Inode | null,
    invoke: () => unknown,
    judge: Judge,
  ): boolean {
    const { hook, label } = at;
    const journal = this.journal;
    if (journal.active) throw new Error(`HookChecker: ${hook} called inside another hook call`);
    this.onHook?.(type, hook);
    this.lastViolation = null;
    journal.begin(inode);
    try {
      let result: unknown;
      let problem: string | null;
      try {
        result = invoke();
        problem = judge(result);
      } catch (thrown) {
        // Described while the journal still runs: a message getter's service calls are undone too.
        problem = `threw: ${describeThrown(thrown)}`;
      }
      if (problem !== null) {
        journal.rollback();
        this.violation(type, label, problem);
        return false;
      }
      this.answer = result;
      journal.commit();
      return true;
    } finally {
      // Only reached active when something outside the hook threw: leave no journal behind.
      if (journal.active) journal.rollback();
    }
  }

  /** An errno answer passes when the hook left nothing behind. */
  private errnoProblem(result: number): string | null {
    const change = this.journal.lastingChange(-1);
    return change === null ? null : `returned ${describeValue(result)} but ${change}`;
  }

  /** A hook that only answers with 0 or -errno, changing nothing. */
  private readonly judgeStatus: Judge = (result) => {
    if (result !== 0 && !isErrno(result)) return `returned ${describeValue(result)}, neither 0 nor -errno`;
    return this.journal.lastingChange(-1);
  };

  private number(): number {
    return this.answer as number;
  }

  // --- userfaultfd hooks ----------------------------------------------------

  /** can_userfault: a throw, a non-boolean or a lasting side effect is a violation and answers false. */
  canUserfault(type: MemoryType, ops: VmUffdOps, vma: Vma, modes: number): boolean {
    const view = this.views.vma(vma);
    const call = () => ops.canUserfault(view, modes);
    const ok = this.run(type, CAN_USERFAULT, vma.inode, call, (result) =>
      typeof result !== 'boolean'
        ? `returned ${describeValue(result)}, not a boolean`
        : this.journal.lastingChange(-1),
    );
    return ok && this.answer === true;
  }

  /**
   * get_folio_noalloc: -ENOENT and other errnos pass through when the hook
   * changed nothing; a folio must be the one cached at `pgoff`, of the VMA's
   * page size, locked by this call, with one new reference for the caller,
   * and the call must not have allocated. `caller` names who asked.
   */
  getFolioNoalloc(type: MemoryType, caller: string, request: CachedFolioRequest): number {
    const ops = type.uffdOps;
    const hook = ops?.getFolioNoalloc;
    if (hook === undefined) return -EINVAL;
    this.request = request;
    const view = this.views.inode(request.inode);
    let at = this.noallocSites.get(caller);
    if (at === undefined) {
      at = site('get_folio_noalloc', `get_folio_noalloc (from ${caller})`);
      this.noallocSites.set(caller, at);
    }
    // Unnamed arrows as arguments: tsx wraps every named closure (Object.defineProperty per call).
    const ok = this.run(
      type,
      at,
      request.inode,
      () => hook.call(ops, view, request.pgoff),
      this.judgeNoalloc,
    );
    return ok ? this.number() : -EFAULT;
  }

  private readonly judgeNoalloc: Judge = (result) => {
    const journal = this.journal;
    if (journal.allocatedCount > 0) return 'allocated a folio';
    if (isErrno(result)) return this.errnoProblem(result);
    const pfn = result as number;
    return (
      cachedFolioProblem(journal, this.request, pfn, true) ??
      referenceProblem(journal, pfn, 1, true, 'for the caller') ??
      journal.lastingChange(pfn)
    );
  };

  /**
   * alloc_folio of `ops` at `address`: errnos pass through when the hook
   * changed nothing; a folio must be one this call allocated (and the only
   * one it kept), of the VMA's page size, with one reference, unlocked and
   * owned by no file.
   */
  allocFolio(type: MemoryType, vma: Vma, address: number): number {
    const ops = type.uffdOps;
    const allocate = ops?.allocFolio;
    if (allocate === undefined) return -EINVAL;
    this.requestVma = vma;
    const view = this.views.vma(vma);
    const invoke = () => allocate.call(ops, view, address);
    if (!this.run(type, ALLOC_FOLIO, vma.inode, invoke, this.judgeAlloc)) return -EFAULT;
    return this.number();
  }

  private readonly judgeAlloc: Judge = (result) => {
    if (isErrno(result)) return this.errnoProblem(result);
    const pfn = result as number;
    return (
      freshFolioProblem(this.journal, this.requestVma!.pageShift - 12, pfn) ?? this.journal.lastingChange(pfn)
    );
  };

  /**
   * filemap_add of the core's locked folio `pfn`: 0 must mean the folio is now
   * cached by the VMA's file at the folio-aligned index of `address`, with the
   * cache's one reference, still locked; an errno must mean nothing changed.
   */
  filemapAdd(type: MemoryType, pfn: number, vma: Vma, address: number): number {
    const ops = type.uffdOps;
    const hook = ops?.filemapAdd;
    const inode = vma.inode;
    if (hook === undefined || inode === null) return -EINVAL;
    const view = this.views.vma(vma);
    const call = () => hook.call(ops, pfn, view, address);
    const pages = 2 ** (vma.pageShift - 12);
    const pgoff = vma.pgoff + (address - vma.start) / 4096;
    const head = pgoff - (pgoff % pages);
    const judge: Judge = (result) => {
      if (result !== 0) {
        if (!isErrno(result)) return `returned ${describeValue(result)}, neither 0 nor -errno`;
        return this.errnoProblem(result);
      }
      return (
        addedFolioProblem(this.memory, inode, head, pfn) ??
        referenceProblem(this.journal, pfn, 1, false, 'for the page cache') ??
        (this.memory.isLocked(pfn) ? null : `unlocked folio ${pfn}, which the core holds locked`) ??
        this.journal.lastingChange(pfn)
      );
    };
    if (!this.run(type, FILEMAP_ADD, inode, call, judge)) return -EFAULT;
    return this.number();
  }

  /**
   * filemap_remove of `pfn`, which filemap_add put in `inode`'s cache: the
   * folio must leave the cache with the cache's reference, and nothing else
   * change. Returns 0, or -EFAULT after undoing a broken call (the core then
   * removes the folio itself).
   */
  filemapRemove(type: MemoryType, pfn: number, vma: Vma): number {
    const ops = type.uffdOps;
    const hook = ops?.filemapRemove;
    const inode = vma.inode;
    if (hook === undefined || inode === null) return -EINVAL;
    const view = this.views.vma(vma);
    const call = () => hook.call(ops, pfn, view);
    const index = this.memory.folioIndex[pfn]!;
    const judge: Judge = () => {
      if (inode.cache.flagsAt(index) !== 0 && inode.cache.valueAt(index) === pfn) {
        return `left folio ${pfn} in the page cache of ${inode.name}`;
      }
      if (this.memory.folioInode[pfn] !== NO_INODE) return `left folio ${pfn} owned by a page cache`;
      const change = referenceProblem(this.journal, pfn, -1, false, 'of the page cache');
      return change ?? this.journal.lastingChange(pfn);
    };
    return this.run(type, FILEMAP_REMOVE, inode, call, judge) ? 0 : -EFAULT;
  }

  // --- the ordinary fault and file hooks -----------------------------------

  /**
   * The ordinary fault (vm_ops->fault): FAULT_* codes pass through when the
   * hook changed nothing; a folio must be the one cached at `pgoff` (inserted
   * by this call or already there), of the VMA's page size, unlocked, with one
   * new reference for the caller (and the cache's, when this call inserted it).
   */
  fault(type: MemoryType, request: CachedFolioRequest, mayShare: boolean): number {
    const hook = type.fault;
    if (hook === undefined) return -EINVAL;
    this.request = request;
    const view = this.views.inode(request.inode);
    const ok = this.run(
      type,
      FAULT,
      request.inode,
      () => hook.call(type, view, request.pgoff, mayShare),
      this.judgeFault,
    );
    return ok ? this.number() : -EFAULT;
  }

  private readonly judgeFault: Judge = (result) => {
    const journal = this.journal;
    // The FAULT_* codes (-4096 and below) and errnos.
    if (typeof result === 'number' && Number.isInteger(result) && result < 0 && result >= -4098) {
      return this.errnoProblem(result);
    }
    const pfn = result as number;
    const inserted = journal.insertedByHook(pfn);
    return (
      cachedFolioProblem(journal, this.request, pfn, false) ??
      referenceProblem(
        journal,
        pfn,
        inserted ? 2 : 1,
        true,
        inserted ? 'for the caller and the cache' : 'for the caller',
      ) ??
      journal.lastingChange(pfn)
    );
  };

  /**
   * getFolioForWrite (pwrite, fallocate): the folio cached at `pgoff`'s head
   * index of `inode` (past the end of the file too: a write extends it),
   * unlocked, with the page cache's reference only; it may allocate and
   * insert that folio and nothing else. Errnos pass when nothing changed.
   */
  getFolioForWrite(type: MemoryType, inode: Inode, pgoff: number): number {
    const hook = type.getFolioForWrite;
    if (hook === undefined) return -EINVAL;
    const view = this.views.inode(inode);
    this.request = { inode, pgoff, pageShift: inode.pageShift, pastEnd: true };
    const ok = this.run(
      type,
      GET_FOLIO_FOR_WRITE,
      inode,
      () => hook.call(type, view, pgoff),
      this.judgeForWrite,
    );
    return ok ? this.number() : -EFAULT;
  }

  private readonly judgeForWrite: Judge = (result) => {
    const journal = this.journal;
    if (isErrno(result)) return this.errnoProblem(result);
    const pfn = result as number;
    const inserted = journal.insertedByHook(pfn);
    return (
      cachedFolioProblem(journal, this.request, pfn, false) ??
      referenceProblem(
        journal,
        pfn,
        inserted ? 1 : 0,
        true,
        inserted ? 'for the page cache' : 'of its own',
      ) ??
      journal.lastingChange(pfn)
    );
  };

  /**
   * write(2) of the type: bytes written (0..length) or -errno; it may fill
   * the page cache of `inode` over the written range, nothing else.
   */
  write(type: MemoryType, inode: Inode, data: Uint8Array, offset: number): number {
    const hook = type.write;
    if (hook === undefined) return -EINVAL;
    const view = this.views.inode(inode);
    // What the judge needs goes in fields, not in a closure per call (write(2) is on the fault path).
    const range = this.requestRange;
    range.start = Math.floor(offset / inode.pageSize) * (inode.pageSize / 4096);
    range.end = Math.ceil((offset + data.byteLength) / 4096);
    this.writeInode = inode;
    this.writeLength = data.byteLength;
    const ok = this.run(type, WRITE, inode, () => hook.call(type, view, data, offset), this.judgeWrite);
    this.writeInode = null;
    return ok ? this.number() : -EFAULT;
  }

  private writeInode: Inode | null = null;
  private writeLength = 0;

  private readonly judgeWrite: Judge = (result) => {
    if (isErrno(result)) return this.errnoProblem(result);
    if (typeof result !== 'number' || !Number.isInteger(result) || result < 0 || result > this.writeLength) {
      return `returned ${describeValue(result)}, neither a byte count up to ${this.writeLength} nor -errno`;
    }
    return this.journal.lastingChange(-1, this.insertedByWrite);
  };

  /** A write may fill the page cache of its own inode over the written range, nothing else. */
  private readonly insertedByWrite = (owner: Inode, pgoff: number): boolean =>
    owner === this.writeInode && pgoff >= this.requestRange.start && pgoff < this.requestRange.end;

  /** mmapCheck: 0 or -errno, changing nothing. */
  mmapCheck(type: MemoryType, inode: Inode, request: MmapRequest): number {
    const hook = type.mmapCheck;
    if (hook === undefined) return 0;
    const view = this.views.inode(inode);
    const call = () => hook.call(type, view, request);
    return this.run(type, MMAP_CHECK, inode, call, this.judgeStatus) ? this.number() : -EFAULT;
  }

  /** fallocateCheck: 0 or -errno, changing nothing. */
  fallocateCheck(type: MemoryType, inode: Inode, mode: number): number {
    const hook = type.fallocateCheck;
    if (hook === undefined) return 0;
    const view = this.views.inode(inode);
    const call = () => hook.call(type, view, mode);
    const ok = this.run(type, FALLOCATE_CHECK, inode, call, this.judgeStatus);
    return ok ? this.number() : -EFAULT;
  }

  /** inodePageShift: a page size the core maps (4 KiB, 2 MiB, 1 GiB) or -errno, changing nothing. */
  inodePageShift(type: MemoryType, request: InodeRequest): number {
    const hook = type.inodePageShift;
    if (hook === undefined) return 12;
    const call = () => hook.call(type, request);
    const judge: Judge = (result) => {
      if (isErrno(result)) return this.errnoProblem(result);
      if (!PAGE_SHIFTS.includes(result as number)) {
        return `returned ${describeValue(result)}, neither a page shift (12, 21, 30) nor -errno`;
      }
      return this.journal.lastingChange(-1);
    };
    return this.run(type, INODE_PAGE_SHIFT, null, call, judge) ? this.number() : -EFAULT;
  }

  /** initInode: sets up the type's own state of a new inode, changing nothing of the core's. 0 or -EFAULT. */
  initInode(type: MemoryType, inode: Inode): number {
    const hook = type.initInode;
    if (hook === undefined) return 0;
    const view = this.views.inode(inode);
    const call = () => hook.call(type, view);
    const judge: Judge = () => this.journal.lastingChange(-1);
    return this.run(type, INIT_INODE, inode, call, judge) ? 0 : -EFAULT;
  }
}
