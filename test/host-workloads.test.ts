/**
 * The workloads on the host kernel, end to end through the CLI at small
 * sizes: each run verifies guest memory byte for byte and exits 0 only when
 * every page matches. Skipped, with the reason, where the host backend is
 * unavailable.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hostUnavailable } from '../src/host/capabilities.ts';
import { encodeRegions, type GuestRegionUffdMapping, parseRegions } from '../src/workloads/firecracker.ts';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const missing = hostUnavailable();

function workload(args: readonly string[]): Record<string, unknown> {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', main, 'workload', ...args, '--backend', 'host', '--json'],
    {
      encoding: 'utf8',
      timeout: 120_000,
    },
  );
  assert.equal(
    run.status,
    0,
    `faultline workload ${args.join(' ')} exited ${run.status}: ${run.stderr}\n${run.stdout}`,
  );
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

describe('workloads on the host kernel', { skip: missing }, () => {
  it('snapshot-restore, anonymous memory: every page restored and verified', () => {
    const result = workload(['snapshot-restore', '--mode', 'anon', '--size', '8M', '--vcpus', '2']);
    assert.equal(result.verifiedPages, 2048);
    assert.equal(result.faults, 2048);
  });

  it('snapshot-restore over the Firecracker handshake: regions and uffd passed on a Unix socket', () => {
    const dir = mkdtempSync(join(tmpdir(), 'faultline-fc-'));
    try {
      const socket = join(dir, 'uffd.sock');
      const result = workload([
        'snapshot-restore',
        '--mode',
        'anon',
        '--size',
        '8M',
        '--firecracker-socket',
        socket,
      ]);
      assert.equal(result.verifiedPages, 2048);
      assert.equal(result.firecrackerSocket, socket);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('postcopy, anonymous MISSING and shmem MINOR: verified against the source process', () => {
    for (const mode of ['anon', 'shmem']) workload(['postcopy', '--mode', mode, '--size', '8M']);
  });

  it('background-snapshot: the saved image equals memory at the snapshot instant', () => {
    workload(['background-snapshot', '--size', '8M']);
  });

  it('gc-compaction with UFFDIO_MOVE: the heap matches the reference compaction', () => {
    workload(['gc-compaction', '--size', '8M']);
  });
});

describe('Firecracker handshake regions', () => {
  const region: GuestRegionUffdMapping = {
    base_host_virt_addr: 0x7f00_0000_0000,
    size: 8 * 2 ** 20,
    offset: 0,
    page_size: 4096,
    page_size_kib: 4096,
  };
  const second: GuestRegionUffdMapping = {
    ...region,
    base_host_virt_addr: 0x7f10_0000_0000,
    offset: region.size,
  };

  it("encodes a JSON array with exactly Firecracker's field names and parses it back", () => {
    const data = encodeRegions([region, second]);
    const json = JSON.parse(new TextDecoder().decode(data)) as Record<string, unknown>[];
    assert.deepEqual(Object.keys(json[0] ?? {}).sort(), [
      'base_host_virt_addr',
      'offset',
      'page_size',
      'page_size_kib',
      'size',
    ]);
    assert.deepEqual(parseRegions(data), [region, second]);
  });

  it('rejects bad input with a message naming the field', () => {
    const bad = (value: unknown, pattern: RegExp): void => {
      assert.throws(() => parseRegions(JSON.stringify(value)), pattern);
    };
    assert.throws(() => parseRegions('not json'), /not JSON/);
    bad({ ...region }, /not a JSON array/);
    bad([], /empty/);
    bad([42], /region 0 is not an object/);
    const { size: _size, ...noSize } = region;
    bad([noSize], /region 0: field 'size' is missing/);
    bad([{ ...region, base_host_virt_addr: '0x7f00' }], /field 'base_host_virt_addr'/);
    bad([{ ...region, base_host_virt_addr: -4096 }], /field 'base_host_virt_addr'/);
    bad([{ ...region, page_size: 3000, page_size_kib: 3000 }], /field 'page_size'/);
    bad([{ ...region, page_size_kib: 4 }], /field 'page_size_kib'/);
    bad([{ ...region, size: 4095 }], /field 'size'/);
    bad([region, { ...second, offset: 0 }], /region 1: field 'offset'/);
    assert.throws(() => encodeRegions([{ ...region, offset: 1.5 }]), /field 'offset'/);
  });
});
