/**
 * The contract between faultline's guest (the VMM and its vCPUs) and a
 * userfaultfd handler users bring (HANDLERS.md §1): a handler is an ES module
 * whose default export is `serve(session)`.
 *
 * Everything a handler waits on goes through the session (`poll`, `sleep`)
 * or its `Uffd`/`Process` calls, so that on the model every wait and every
 * system call is a point the scheduler controls: before each call an
 * explorer may run guest steps, and a wait costs model time, not wall time.
 * An adapter that runs a handler *binary* as a `serve(session)` (its uffd
 * calls trapped and forwarded) must therefore forward each call to these
 * methods, one for one, to keep the binary's races reachable.
 */
import type { Process, Uffd } from '../api/process.ts';
import type { GuestRegionUffdMapping } from '../workloads/firecracker.ts';

export type { GuestRegionUffdMapping };

export interface HandlerSession {
  /** The handler's own process (not the VMM's); its calls go to the guest's backend. */
  readonly process: Process;
  /**
   * The VMM's userfaultfd, passed over as Firecracker passes it (SCM_RIGHTS):
   * UFFDIO_API and UFFDIO_REGISTER (over every region) are done; the fd is non-blocking.
   */
  readonly uffd: Uffd;
  /** The feature names the VMM passed to UFFDIO_API (`['event_remove']` with a balloon). */
  readonly features: readonly string[];
  /** The modes the VMM registered the regions with (`['missing']`, or `['minor']` for a preallocated guest_memfd). */
  readonly registerModes: readonly ('missing' | 'minor' | 'wp')[];
  /** Firecracker's regions; they lie end to end in the memory file. */
  readonly regions: readonly GuestRegionUffdMapping[];
  /** The snapshot memory file, read-only, in the handler's process (mmap it or pread it). */
  readonly memoryFd: number;
  /** guest_memfd modes only: the guest_memfd, read-write, filled before UFFDIO_CONTINUE. */
  readonly guestMemfd?: number;
  /**
   * Resolves true once the uffd is readable, false when `timeoutMs` passed
   * first (no argument or a negative one: no limit). On the model, time is
   * the model's clock: a timeout costs no wall time and replays.
   */
  poll(timeoutMs?: number): Promise<boolean>;
  /** Resolves after `ms` of the backend's time (the model's clock on the model). */
  sleep(ms: number): Promise<void>;
  /** The backend's time in milliseconds (the model's clock on the model): for latencies and traces. */
  now(): number;
  /** Aborted once every guest thread has finished; a pending `poll()` then resolves false. */
  readonly signal: AbortSignal;
  /** Which backend serves the calls. */
  readonly backend: 'model' | 'host';
}

/** A handler module's default export. */
export type Serve = (session: HandlerSession) => Promise<void>;
