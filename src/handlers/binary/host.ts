/**
 * A handler binary on the host kernel: the session's userfaultfd is a real
 * descriptor of this process, so the binary gets a duplicate of it through
 * the throwaway connector (no filter: every call goes to the real kernel),
 * and faultline only watches: the binary's end, and its silence.
 */
import { POLLIN } from '../../uapi/constants.ts';
import type { HandlerSession } from '../session.ts';
import {
  type BinaryHandlerOptions,
  DEFAULT_HANDLER_TIMEOUT_MS,
  HandlerBinaryError,
  HandlerChild,
  memoryWriter,
  regionsJson,
} from './child.ts';

export async function serveOnHost(session: HandlerSession, options: BinaryHandlerOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_HANDLER_TIMEOUT_MS;
  const child = new HandlerChild({
    path: options.path,
    args: options.args ?? [],
    trap: 0,
    memory: memoryWriter(session),
  });
  let timer: NodeJS.Timeout | undefined;
  let failed = true;
  try {
    const exited = new Promise<'exit'>((resolve) => child.onceExited(() => resolve('exit')));
    const done = new Promise<'done'>((resolve) => {
      if (session.signal.aborted) resolve('done');
      session.signal.addEventListener('abort', () => resolve('done'), { once: true });
    });
    const fds = session.guestMemfd === undefined ? [session.uffd.fd] : [session.uffd.fd, session.guestMemfd];
    const handshake = child.connect(regionsJson(session.regions), fds, timeoutMs).then(() => 'sent' as const);
    const first = await Promise.race([handshake, exited, done]);
    if (first === 'exit') throw new HandlerBinaryError(`handler binary ${child.describeExit()}`);
    // Messages nobody reads for the whole timeout: the binary is not serving its uffd.
    const silent = new Promise<'silent'>((resolve) => {
      let since = performance.now();
      timer = setInterval(() => {
        if ((session.process.backend.poll(session.uffd.fd) & POLLIN) === 0) since = performance.now();
        else if (performance.now() - since > timeoutMs) resolve('silent');
      }, 50);
    });
    const outcome = await Promise.race([done, exited, silent]);
    if (outcome === 'exit') throw new HandlerBinaryError(`handler binary ${child.describeExit()}`);
    if (outcome === 'silent') {
      throw new HandlerBinaryError(
        `handler binary left faults unread for ${timeoutMs / 1000} s${child.where()}; killed`,
      );
    }
    // The guest is done; the binary is ended now. A status other than our SIGKILL or a clean
    // exit means it died on its own first.
    const status = child.kill();
    if (status !== null && status !== 9 && status !== 0)
      throw new HandlerBinaryError(`handler binary ${child.describeExit()} before the guest was done`);
    failed = false;
  } finally {
    clearInterval(timer);
    child.dispose();
    // A failed binary leaves faults unresolved: closing the last uffd releases the vCPUs (zero pages).
    if (failed) session.uffd.close();
  }
}
