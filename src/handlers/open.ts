/**
 * Handing a VMM's userfaultfd to a handler: the session a `serve` receives,
 * on either backend.
 *
 * On the model the handler gets a process of its own; the uffd, the memory
 * file (read-only) and a guest_memfd (read-write) are installed in it as
 * SCM_RIGHTS installs them, and the VMM closes its own uffd, as Firecracker
 * does once it has sent it. On the host a TypeScript handler runs inside
 * faultline's Node process, so its process is that one; the uffd still
 * crosses a Unix socket as SCM_RIGHTS data (Firecracker's handshake), and
 * the memory file is reopened read-only.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KernelBackend, ProcessBackend } from '../api/backend.ts';
import type { ModelBackend } from '../api/model-backend.ts';
import { Process, Uffd } from '../api/process.ts';
import { type HostBackend, HostProcessBackend } from '../host/host-backend.ts';
import { O_RDONLY, O_RDWR, POLLERR, POLLHUP, POLLIN } from '../uapi/constants.ts';
import { type GuestRegionUffdMapping, listenHandshake, sendHandshake } from '../workloads/firecracker.ts';
import type { HandlerSession } from './session.ts';

export interface SessionSetup {
  readonly backend: KernelBackend;
  /** The VMM's process and its userfaultfd (API and REGISTER done). */
  readonly vmm: Process;
  readonly uffd: Uffd;
  readonly features: readonly string[];
  readonly registerModes: readonly ('missing' | 'minor' | 'wp')[];
  readonly regions: readonly GuestRegionUffdMapping[];
  /** The VMM's descriptors of the memory file and of a guest_memfd. */
  readonly memoryFd: number;
  readonly guestMemfd?: number;
  /** Aborted once every guest thread has finished. */
  readonly signal: AbortSignal;
  /** Host: the Unix socket the uffd crosses (default a temporary path). */
  readonly socketPath?: string;
}

export interface OpenedSession {
  readonly session: HandlerSession;
  /** Closes the handler's descriptors (the uffd last: the guest is then unregistered). */
  close(): void;
}

const READY = POLLIN | POLLERR | POLLHUP;

/** The handler's own open of a file the VMM holds (`taken`: this process's descriptor of it), with `accessMode`. */
function reopenTaken(self: ProcessBackend, taken: number, original: number, accessMode: number): number {
  const fd = self.reopen(taken, accessMode);
  if (taken !== original) self.close(taken);
  return fd;
}

export async function openSession(setup: SessionSetup): Promise<OpenedSession> {
  return setup.backend.name === 'model' ? openModelSession(setup) : openHostSession(setup);
}

function openModelSession(setup: SessionSetup): OpenedSession {
  const backend = setup.backend as ModelBackend;
  const handlerBackend = backend.createProcess();
  const process = new Process(handlerBackend);
  const vmmBackend = setup.vmm.backend;
  const uffdFd = backend.sendFd(vmmBackend, setup.uffd.fd, handlerBackend, O_RDWR);
  setup.uffd.close();
  const memoryFd = backend.sendFd(vmmBackend, setup.memoryFd, handlerBackend, O_RDONLY);
  const guestMemfd =
    setup.guestMemfd === undefined
      ? undefined
      : backend.sendFd(vmmBackend, setup.guestMemfd, handlerBackend, O_RDWR);
  const uffd = new Uffd(process, uffdFd);
  const session: HandlerSession = {
    process,
    uffd,
    features: setup.features,
    registerModes: setup.registerModes,
    regions: setup.regions,
    memoryFd,
    ...(guestMemfd === undefined ? {} : { guestMemfd }),
    poll: (timeoutMs = -1) => backend.pollFor(handlerBackend, uffdFd, timeoutMs, setup.signal),
    sleep: (ms) => backend.sleep(ms),
    now: () => backend.kernel.clock.nowMs(),
    signal: setup.signal,
    backend: 'model',
  };
  return { session, close: () => handlerBackend.exit() };
}

async function openHostSession(setup: SessionSetup): Promise<OpenedSession> {
  const backend = setup.backend;
  const self = backend.self;
  // A VMM in an agent process (see snapshot-restore's vmmProcess): its descriptors are taken into
  // this process first, as the VMM's sendmsg would pass them; the VMM then closes its uffd.
  const vmm = setup.vmm.backend;
  const take = (fd: number): number => (vmm === self ? fd : (backend as HostBackend).takeFd(vmm, fd));
  const sentUffd = take(setup.uffd.fd);
  const socketPath =
    setup.socketPath ?? join(tmpdir(), `faultline-handler-${process.pid}-${Date.now()}.sock`);
  const listener = listenHandshake(backend, socketPath);
  let uffdFd: number;
  try {
    const accepted = listener.accept();
    sendHandshake(backend, socketPath, setup.regions, sentUffd);
    setup.uffd.close();
    if (sentUffd !== setup.uffd.fd) self.close(sentUffd);
    uffdFd = (await accepted).uffdFd;
  } finally {
    listener.close();
  }
  // The received uffd is the program's own descriptor now: its close() and the backend's close it.
  if (self instanceof HostProcessBackend) self.adoptFd(uffdFd);
  const handlerProcess = new Process(self);
  const uffd = new Uffd(handlerProcess, uffdFd);
  const memoryFd = reopenTaken(self, take(setup.memoryFd), setup.memoryFd, O_RDONLY);
  const guestMemfd =
    setup.guestMemfd === undefined
      ? undefined
      : reopenTaken(self, take(setup.guestMemfd), setup.guestMemfd, O_RDWR);
  const signal = setup.signal;
  const poll = (timeoutMs = -1): Promise<boolean> => {
    if ((self.poll(uffdFd) & READY) !== 0) return Promise.resolve(true);
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      let done = false;
      const finish = (value: boolean): void => {
        if (done) return;
        done = true;
        if (timer !== undefined) clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      };
      const onAbort = (): void => finish(false);
      const timer = timeoutMs >= 0 ? setTimeout(() => finish(false), timeoutMs) : undefined;
      signal.addEventListener('abort', onAbort);
      void self.waitReadable(uffdFd).then(() => finish(true));
    });
  };
  const session: HandlerSession = {
    process: handlerProcess,
    uffd,
    features: setup.features,
    registerModes: setup.registerModes,
    regions: setup.regions,
    memoryFd,
    ...(guestMemfd === undefined ? {} : { guestMemfd }),
    poll,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
    now: () => performance.now(),
    signal,
    backend: 'host',
  };
  const close = (): void => {
    if (guestMemfd !== undefined) self.close(guestMemfd);
    self.close(memoryFd);
    uffd.close();
  };
  return { session, close };
}
