/**
 * Firecracker's userfaultfd handshake. The page-fault handler binds a Unix
 * socket; the VMM maps guest memory, creates the userfaultfd, registers every
 * region, connects and sends one message: a JSON array of regions as data and
 * the userfaultfd as an SCM_RIGHTS descriptor. Nothing else crosses the socket.
 *
 * The socket calls go through the native addon, so the handshake needs the
 * host backend: descriptors are real descriptors of this Node process.
 */
import { rmSync } from 'node:fs';
import type { KernelBackend } from '../api/backend.ts';
import { check } from '../host/common.ts';
import { type NativeAddon, native, nativeLoadError } from '../host/native.ts';
import { POLLERR, POLLHUP, POLLIN } from '../uapi/constants.ts';
import { EAGAIN, KernelError } from '../uapi/errno.ts';

/** One guest memory region as Firecracker describes it to its handler (serde field names). */
export interface GuestRegionUffdMapping {
  /** Where the VMM mapped the region (u64). */
  readonly base_host_virt_addr: number;
  /** Bytes. */
  readonly size: number;
  /** Offset of the region in the snapshot memory file (regions lie end to end). */
  readonly offset: number;
  /** Page size in bytes. */
  readonly page_size: number;
  /** Deprecated; despite the name it holds bytes too (the same value as page_size). */
  readonly page_size_kib: number;
}

/** Largest handshake message the handler reads. */
export const HANDSHAKE_MAX_BYTES = 64 * 1024;

const FIELDS = ['base_host_virt_addr', 'size', 'offset', 'page_size', 'page_size_kib'] as const;

/** The handshake's data: the regions as a JSON array. */
export function encodeRegions(regions: readonly GuestRegionUffdMapping[]): Uint8Array {
  const json = regions.map((region) => Object.fromEntries(FIELDS.map((field) => [field, region[field]])));
  const data = new TextEncoder().encode(JSON.stringify(json));
  // Round trip: never send what the handler side would reject.
  parseRegions(data);
  return data;
}

/** The regions of a handshake message; throws an Error naming the region and field at fault. */
export function parseRegions(data: Uint8Array | string): GuestRegionUffdMapping[] {
  const text = typeof data === 'string' ? data : new TextDecoder('utf-8', { fatal: false }).decode(data);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`Firecracker handshake: the regions are not JSON (${(error as Error).message})`);
  }
  if (!Array.isArray(value)) throw new Error('Firecracker handshake: the regions are not a JSON array');
  if (value.length === 0) throw new Error('Firecracker handshake: the region array is empty');
  let expectedOffset = 0;
  return value.map((item: unknown, index): GuestRegionUffdMapping => {
    const where = `Firecracker handshake: region ${index}`;
    if (typeof item !== 'object' || item === null || Array.isArray(item))
      throw new Error(`${where} is not an object`);
    const record = item as Record<string, unknown>;
    const field = (name: (typeof FIELDS)[number]): number => {
      const raw = record[name];
      if (raw === undefined) throw new Error(`${where}: field '${name}' is missing`);
      if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw < 0)
        throw new Error(`${where}: field '${name}' is ${JSON.stringify(raw)}, not a non-negative integer`);
      return raw;
    };
    const region: GuestRegionUffdMapping = {
      base_host_virt_addr: field('base_host_virt_addr'),
      size: field('size'),
      offset: field('offset'),
      page_size: field('page_size'),
      page_size_kib: field('page_size_kib'),
    };
    const pageSize = region.page_size;
    if (pageSize === 0 || (pageSize & (pageSize - 1)) !== 0)
      throw new Error(`${where}: field 'page_size' is ${pageSize}, not a power of two`);
    if (region.page_size_kib !== pageSize)
      throw new Error(
        `${where}: field 'page_size_kib' is ${region.page_size_kib}; it holds bytes and must equal page_size (${pageSize})`,
      );
    if (region.size === 0 || region.size % pageSize !== 0)
      throw new Error(
        `${where}: field 'size' is ${region.size}, not a positive multiple of page_size ${pageSize}`,
      );
    if (region.base_host_virt_addr % pageSize !== 0)
      throw new Error(
        `${where}: field 'base_host_virt_addr' is 0x${region.base_host_virt_addr.toString(16)}, not aligned to page_size ${pageSize}`,
      );
    if (region.offset !== expectedOffset)
      throw new Error(
        `${where}: field 'offset' is ${region.offset}, but regions lie end to end in the memory file (expected ${expectedOffset})`,
      );
    expectedOffset += region.size;
    return region;
  });
}

/** The offset in the memory file of guest address `address`, or undefined outside every region. */
export function regionFileOffset(
  regions: readonly GuestRegionUffdMapping[],
  address: number,
): number | undefined {
  for (const region of regions) {
    const delta = address - region.base_host_virt_addr;
    if (delta >= 0 && delta < region.size) return region.offset + delta;
  }
  return undefined;
}

/** The guest address holding memory-file offset `offset`, or undefined past the last region. */
export function regionAddress(
  regions: readonly GuestRegionUffdMapping[],
  offset: number,
): number | undefined {
  for (const region of regions) {
    const delta = offset - region.offset;
    if (delta >= 0 && delta < region.size) return region.base_host_virt_addr + delta;
  }
  return undefined;
}

function hostAddon(backend: KernelBackend, side: string): NativeAddon {
  if (backend.name !== 'host') {
    throw new Error(
      `${side}: the Firecracker handshake needs the host backend (--backend host); ` +
        'it passes a real userfaultfd over a Unix socket, which the model does not have',
    );
  }
  if (native === null) throw new Error(`${side}: ${nativeLoadError ?? 'the native addon is not available'}`);
  return native;
}

function readable(addon: NativeAddon, fd: number): Promise<void> {
  return new Promise((resolve) => {
    if (addon.waitReadable(fd, resolve) < 0) resolve();
  });
}

/** What the handler receives: the regions and the userfaultfd (a descriptor of this process, close-on-exec). */
export interface Handshake {
  readonly regions: GuestRegionUffdMapping[];
  readonly uffdFd: number;
}

/** The handler's bound socket, listening before the VMM connects. */
export interface HandshakeListener {
  /** Waits (off the event loop's back: non-blocking accept) for the VMM's one message. */
  accept(): Promise<Handshake>;
  /** Closes the socket and removes its path. */
  close(): void;
}

/** Handler side, step one: bind and listen on `socketPath`. */
export function listenHandshake(backend: KernelBackend, socketPath: string): HandshakeListener {
  const addon = hostAddon(backend, `--firecracker-socket ${socketPath}`);
  const listener = check(`bind(${socketPath})`, addon.unixListen(socketPath));
  let closed = false;
  // Ctrl-C (or SIGTERM, SIGHUP, exit) before the VMM connects must not leave the socket file behind:
  // the next run's bind would fail with EADDRINUSE.
  const removePath = (): void => rmSync(socketPath, { force: true });
  const onSignal = (signal: NodeJS.Signals): void => {
    removePath();
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const signal of signals) process.on(signal, onSignal);
  process.once('exit', removePath);
  const close = (): void => {
    if (closed) return;
    closed = true;
    for (const signal of signals) process.removeListener(signal, onSignal);
    process.removeListener('exit', removePath);
    addon.close(listener);
    removePath();
  };
  const accept = async (): Promise<Handshake> => {
    let connection: number;
    for (;;) {
      if (closed) throw new Error(`Firecracker handshake: ${socketPath} was closed before the VMM connected`);
      const result = addon.unixAccept(listener);
      if (result !== -EAGAIN) {
        connection = check('accept4', result);
        break;
      }
      await readable(addon, listener);
    }
    try {
      // Never block the event loop in recvmsg: wait until the message (or a hangup) is there.
      while ((addon.poll(connection) & (POLLIN | POLLHUP | POLLERR)) === 0) await readable(addon, connection);
      const received = addon.recvFdWithData(connection, HANDSHAKE_MAX_BYTES);
      if (typeof received === 'number') throw new KernelError({ errno: -received, syscall: 'recvmsg' });
      const close = (): void => {
        if (received.fd >= 0) addon.close(received.fd);
      };
      if (received.fd < 0) {
        throw new Error(
          received.data.byteLength === 0
            ? 'Firecracker handshake: the VMM closed the socket without sending anything'
            : 'Firecracker handshake: the message carried no userfaultfd (SCM_RIGHTS)',
        );
      }
      if (received.truncated) {
        close();
        throw new Error(`Firecracker handshake: the message did not fit in ${HANDSHAKE_MAX_BYTES} bytes`);
      }
      try {
        return { regions: parseRegions(received.data), uffdFd: received.fd };
      } catch (error) {
        close();
        throw error;
      }
    } finally {
      // Firecracker keeps its end open; the handler needs nothing more from the socket.
      addon.close(connection);
    }
  };
  return { accept, close };
}

/** Handler side in one call: listen on `socketPath`, wait for the VMM, close the socket. */
export async function acceptHandshake(backend: KernelBackend, socketPath: string): Promise<Handshake> {
  const listener = listenHandshake(backend, socketPath);
  try {
    return await listener.accept();
  } finally {
    listener.close();
  }
}

/**
 * VMM side: connect to the handler's socket and send the regions with the
 * userfaultfd. The caller still owns `uffdFd` (Firecracker closes its copy
 * once it is sent).
 */
export function sendHandshake(
  backend: KernelBackend,
  socketPath: string,
  regions: readonly GuestRegionUffdMapping[],
  uffdFd: number,
): void {
  const addon = hostAddon(backend, 'Firecracker handshake (VMM side)');
  const data = encodeRegions(regions);
  const socket = check(`connect(${socketPath})`, addon.unixConnect(socketPath));
  try {
    const sent = check('sendmsg', addon.sendFdWithData(socket, data, uffdFd));
    if (sent !== data.byteLength)
      throw new Error(`Firecracker handshake: sendmsg sent ${sent} of ${data.byteLength} bytes`);
  } finally {
    addon.close(socket);
  }
}
