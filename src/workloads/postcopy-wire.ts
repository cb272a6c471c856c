/**
 * What the postcopy source and destination share: the guest RAM image (a
 * pure function of the seed, so the destination can check every byte it
 * received), the set of pages dirtied after precopy, and the framing of the
 * TCP channels. Imports nothing from the model: the source process loads
 * only this file.
 */

/** How the source knows a connection: the first byte the destination sends. */
export const CHANNEL_MAIN = 0;
export const CHANNEL_PREEMPT = 1;

/** Source → destination. */
export const FRAME_PAGE = 1;
/** Switchover: the payload is the bitmap of pages dirtied since precopy (the discard bitmap). */
export const FRAME_DISCARD = 2;
/** Every dirty page has been sent. */
export const FRAME_END = 3;
/** Destination → source: send this page now. */
export const FRAME_REQUEST = 4;
/** Destination → source: migration complete, exit. */
export const FRAME_COMPLETE = 5;

/** PAGE flags. */
export const PAGE_ZERO = 1 << 0;
export const PAGE_PRECOPY = 1 << 1;
export const PAGE_REQUESTED = 1 << 2;

/** u8 type, u8 flags, u16 reserved, u32 index, u32 payload bytes. */
export const FRAME_HEADER_BYTES = 12;

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly index: number;
  readonly payload: Uint8Array;
}

/** What the source is started with (JSON in argv[2]). */
export interface SourceConfig {
  readonly version: 1;
  readonly pages: number;
  /**
   * The run's page size: the host page size of the guest RAM (4 KiB, or 2 MiB on hugetlbfs). Page
   * indices in frames, requests and the discard bitmap all count in it.
   */
  readonly pageSize: number;
  readonly seed: number;
  readonly dirtyPercent: number;
  /** Requested pages go on a second connection (postcopy-preempt). */
  readonly preempt: boolean;
  /** Background stream limit in bytes per second; 0 for none. */
  readonly bandwidthBytes: number;
  /** The source exits on its own after this long, whatever happens. */
  readonly lifetimeMs: number;
}

export function encodeFrame(type: number, flags: number, index: number, payload?: Uint8Array): Uint8Array {
  const length = payload?.byteLength ?? 0;
  const frame = new Uint8Array(FRAME_HEADER_BYTES + length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, type);
  view.setUint8(1, flags);
  view.setUint32(4, index, true);
  view.setUint32(8, length, true);
  if (payload !== undefined) frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

/** Reassembles frames from the chunks a TCP stream delivers. */
export class FrameReader {
  private buffer = new Uint8Array(0);
  private used = 0;

  /** Appends `chunk` and returns the frames it completed. */
  push(chunk: Uint8Array): Frame[] {
    if (this.used + chunk.byteLength > this.buffer.byteLength) {
      const grown = new Uint8Array(Math.max(this.buffer.byteLength * 2, this.used + chunk.byteLength, 65536));
      grown.set(this.buffer.subarray(0, this.used));
      this.buffer = grown;
    }
    this.buffer.set(chunk, this.used);
    this.used += chunk.byteLength;
    const frames: Frame[] = [];
    let offset = 0;
    const view = new DataView(this.buffer.buffer, this.buffer.byteOffset);
    while (this.used - offset >= FRAME_HEADER_BYTES) {
      const length = view.getUint32(offset + 8, true);
      if (this.used - offset < FRAME_HEADER_BYTES + length) break;
      frames.push({
        type: view.getUint8(offset),
        flags: view.getUint8(offset + 1),
        index: view.getUint32(offset + 4, true),
        // A copy: the buffer is reused for the next chunks.
        payload: this.buffer.slice(offset + FRAME_HEADER_BYTES, offset + FRAME_HEADER_BYTES + length),
      });
      offset += FRAME_HEADER_BYTES + length;
    }
    this.buffer.copyWithin(0, offset, this.used);
    this.used -= offset;
    return frames;
  }
}

/** A 32-bit mix of the page index and the seed (splitmix-style). */
function mix(index: number, seed: number): number {
  let z = (Math.imul(index, 0x9e3779b9) ^ Math.imul(seed, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Whether the guest dirtied page `index` after precopy (it must then travel again in postcopy). */
export function isDirty(index: number, seed: number, dirtyPercent: number): boolean {
  if (dirtyPercent >= 100) return true;
  return mix(index, seed ^ 0x5a5a) % 100 < dirtyPercent;
}

/** Every sixteenth page of the image is all zero (QEMU sends those as zero-page flags). */
export function isZeroPage(index: number, seed: number): boolean {
  return mix(index, seed) % 16 === 0;
}

/**
 * Page `index` of the RAM image: `version` 0 is what precopy sent, 1 what
 * the guest left in dirtied pages. Zero pages stay zero in both versions.
 */
export function ramPage(index: number, version: number, pageSize: number, seed: number): Uint8Array {
  const page = new Uint8Array(pageSize);
  writeRamPage({ index, version, pageSize, seed }, page, 0);
  return page;
}

/**
 * Writes page `index` of the RAM image into `into` at byte `offset` (a
 * multiple of 4), zeroes included, without allocating: the verification
 * builds whole slices of the image this way.
 */
export function writeRamPage(
  page: { index: number; version: number; pageSize: number; seed: number },
  into: Uint8Array,
  offset: number,
): void {
  const { index, version, pageSize, seed } = page;
  if (isZeroPage(index, seed)) {
    into.fill(0, offset, offset + pageSize);
    return;
  }
  // Little-endian words, as the source's pages are laid out on the wire.
  const words = new DataView(into.buffer, into.byteOffset + offset, pageSize);
  const tag = mix(index, seed + version);
  for (let at = 0; at < pageSize; at += 16) {
    words.setUint32(at, index, true);
    words.setUint32(at + 4, version, true);
    words.setUint32(at + 8, at, true);
    words.setUint32(at + 12, tag, true);
  }
}

/** The page as the guest last left it: version 1 if dirtied after precopy, else 0. */
export function finalPage(index: number, config: SourceConfig): Uint8Array {
  const page = new Uint8Array(config.pageSize);
  writeFinalPage(index, config, page, 0);
  return page;
}

/** Writes `finalPage(index, config)` into `into` at byte `offset`. */
export function writeFinalPage(index: number, config: SourceConfig, into: Uint8Array, offset: number): void {
  const version = isDirty(index, config.seed, config.dirtyPercent) ? 1 : 0;
  writeRamPage({ index, version, pageSize: config.pageSize, seed: config.seed }, into, offset);
}
