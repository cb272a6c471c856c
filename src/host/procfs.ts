/**
 * What /proc says about a process: pagemap entries and the VMAs of smaps
 * with their userfaultfd flags.
 */
import { readFileSync } from 'node:fs';
import type { PageInfo, VmaInfo } from '../api/backend.ts';

/**
 * Decodes a pagemap entry (bits: 63 present, 62 swap or marker, 57 uffd-wp, 0-54 PFN or swap entry).
 * What pagemap cannot show stays invisible: a poison marker on hugetlb reads as an empty entry.
 */
export function pageInfo(view: DataView, offset: number, zeroPfn: number): PageInfo {
  const low = view.getUint32(offset, true);
  const high = view.getUint32(offset + 4, true);
  const present = (high & 0x80000000) !== 0;
  const swap = (high & 0x40000000) !== 0;
  const uffdWp = (high & 0x02000000) !== 0;
  let marker: PageInfo['marker'] = 'none';
  if (!present && swap) {
    // A pte marker is a swap entry of type 31 (SWP_PTE_MARKER) whose offset
    // holds the marker bits: 1 uffd-wp, 2 poisoned. Without CAP_SYS_ADMIN the
    // entry reads as 0, and a non-present swap entry without uffd-wp is taken
    // to be a poison marker (faultline never swaps).
    const entryKnown = low !== 0 || (high & 0x007fffff) !== 0;
    if (entryKnown) {
      if ((low & 31) === 31) {
        const bits = low >>> 5;
        marker = bits & 2 ? 'poison' : bits & 1 ? 'wp' : 'none';
      }
    } else {
      marker = uffdWp ? 'wp' : 'poison';
    }
  } else if (!present && uffdWp) {
    // hugetlb reports a uffd-wp marker as bit 57 alone (and a poison marker not at all).
    marker = 'wp';
  }
  const pfn = low + (high & 0x007fffff) * 2 ** 32;
  return { present, uffdWp, marker, zeroPage: present && zeroPfn !== 0 && pfn === zeroPfn };
}

/** Decodes `pages` raw pagemap entries. */
export function decodePagemap(raw: Uint8Array, pages: number, zeroPfn: number): PageInfo[] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const infos: PageInfo[] = [];
  for (let i = 0; i < pages; i++) infos.push(pageInfo(view, i * 8, zeroPfn));
  return infos;
}

/** The PFN of a present entry, or 0. */
export function presentPfn(raw: Uint8Array): number {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const high = view.getUint32(4, true);
  return high & 0x80000000 ? view.getUint32(0, true) + (high & 0x007fffff) * 2 ** 32 : 0;
}

/** The VMAs of process `pid` ('self' for this one) intersecting [start, end), from smaps VmFlags. */
export function smapsVmas(pid: number | 'self', start: number, end: number): VmaInfo[] {
  const text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const vmas: VmaInfo[] = [];
  let current: { start: number; end: number } | null = null;
  for (const line of text.split('\n')) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (header !== null) {
      const vmaStart = Number.parseInt(header[1]!, 16);
      const vmaEnd = Number.parseInt(header[2]!, 16);
      current = vmaEnd > start && vmaStart < end ? { start: vmaStart, end: vmaEnd } : null;
      continue;
    }
    if (current !== null && line.startsWith('VmFlags:')) {
      const flags = new Set(line.slice('VmFlags:'.length).trim().split(/\s+/));
      vmas.push({
        start: current.start,
        end: current.end,
        modes: [
          ...(flags.has('um') ? (['missing'] as const) : []),
          ...(flags.has('uw') ? (['wp'] as const) : []),
          ...(flags.has('ui') ? (['minor'] as const) : []),
        ],
      });
      current = null;
    }
  }
  return vmas;
}
