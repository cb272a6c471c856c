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
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Process } from '../src/api/process.ts';
import { hostUnavailable, reserveHugePages } from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import { UFFDIO_REGISTER_MODE_MISSING } from '../src/uapi/constants.ts';
import { encodeRegions, type GuestRegionUffdMapping, parseRegions } from '../src/workloads/firecracker.ts';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const missing = hostUnavailable();
/** Four 2 MiB huge pages for the hugetlb postcopy run (surplus pages, given back at exit). */
const hugetlbMissing = missing ?? reserveHugePages(4);

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
    for (const mode of ['anon', 'shmem']) {
      const result = workload(['postcopy', '--mode', mode, '--size', '8M']);
      // Blocked time is measured on the host too: numbers, not null ("n/a").
      const blocked = result.blockedMsPerVcpu as (number | null)[];
      assert.equal(blocked.length, 2);
      for (const ms of blocked) assert.ok(typeof ms === 'number' && ms >= 0, `blocktime ${ms}`);
    }
  });

  it('postcopy, hugetlb MINOR with 2 MiB pages: verified against the source process', {
    skip: hugetlbMissing,
  }, () => {
    const result = workload(['postcopy', '--mode', 'hugetlb', '--size', '8M', '--dirty', '50']);
    assert.equal(result.pages, 4);
    assert.equal(result.verifiedPages, 4);
    assert.equal(result.verifiedReads, 4);
    assert.equal(result.precopyPages, 4);
    assert.ok((result.postcopyPages as number) > 0);
    assert.equal(result.bytesMoved, (result.postcopyPages as number) * 2 * 2 ** 20);
  });

  it('postcopy, hugetlb-missing (MISSING + COPY of 2 MiB pages, dirty pages punched out)', {
    skip: hugetlbMissing,
  }, () => {
    const result = workload(['postcopy', '--mode', 'hugetlb-missing', '--size', '8M', '--dirty', '50']);
    assert.equal(result.pages, 4);
    assert.equal(result.verifiedPages, 4);
    assert.equal(result.verifiedReads, 4);
    assert.equal(result.bytesMoved, (result.postcopyPages as number) * 2 * 2 ** 20);
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

describe('blocked time on the host (native access threads)', { skip: missing }, () => {
  const backend = missing === undefined ? new HostBackend() : null;
  after(() => backend?.dispose());

  it('a thread whose fault the handler answers after 20 ms reports it; one that never faults, next to nothing', async () => {
    const proc = new Process(backend!.self);
    const length = 4 * 4096;
    const area = proc.mmap({ length });
    const uffd = proc.userfaultfd({ nonblock: true, cloexec: true });
    uffd.api(0);
    uffd.register({ start: area, length }, UFFDIO_REGISTER_MODE_MISSING);
    const resident = proc.mmap({ length });
    proc.write(resident, new Uint8Array(length).fill(1));

    const faulting = proc.thread([{ kind: 'read', address: area + 4096 + 8, length: 8 }], 'faulting');
    const [message] = await uffd.nextMessages(1);
    assert.equal(message?.event, 'pagefault');
    // The handler takes its time: the thread sleeps in the kernel meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 20));
    uffd.copyBytes(area + 4096, new Uint8Array(4096).fill(7));
    const slow = await faulting.join();
    assert.equal(slow.state, 'done');
    assert.deepEqual([...slow.reads[0]!], [7, 7, 7, 7, 7, 7, 7, 7]);
    assert.ok(slow.blockedMs !== undefined && slow.blockedMs >= 15, `blocked ${slow.blockedMs} ms`);
    assert.ok(slow.blockedMs! < 5000, `blocked ${slow.blockedMs} ms`);

    // A kernel-mode access (read(2) filling the range) sleeps in the same way.
    const syscall = proc.thread(
      [{ kind: 'read', address: area + 2 * 4096, length: 8, kernel: true }],
      'kernel',
    );
    await uffd.nextMessages(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    uffd.copyBytes(area + 2 * 4096, new Uint8Array(4096).fill(9));
    const viaKernel = await syscall.join();
    assert.deepEqual([...viaKernel.reads[0]!], [9, 9, 9, 9, 9, 9, 9, 9]);
    assert.ok(
      viaKernel.blockedMs !== undefined && viaKernel.blockedMs >= 15,
      `blocked ${viaKernel.blockedMs} ms`,
    );

    const quiet = await proc
      .thread(
        Array.from({ length: 64 }, (_, i) => ({
          kind: 'read' as const,
          address: resident + (i % 4) * 4096,
          length: 64,
        })),
        'resident',
      )
      .join();
    assert.equal(quiet.state, 'done');
    assert.equal(quiet.faults, 0);
    assert.ok(quiet.blockedMs !== undefined && quiet.blockedMs < 1, `blocked ${quiet.blockedMs} ms`);
    uffd.close();
  });
});
