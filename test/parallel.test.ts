/**
 * The parallel model: threads on vCPU workers over shared memory, the kernel
 * on the main thread. Runs are not deterministic, so every check here holds
 * whatever the interleaving.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ModelBackend } from '../src/api/model-backend.ts';
import { Process, type ThreadAccess, type Uffd } from '../src/api/process.ts';
import { checkInvariants } from '../src/model/check.ts';
import { allVcpuWorkersExited, liveVcpuWorkers } from '../src/model/parallel/cpus.ts';
import {
  MADV_DONTNEED,
  POLLIN,
  SEGV_MAPERR,
  SIGSEGV,
  UFFD_PAGEFAULT_FLAG_WP,
  UFFD_PAGEFAULT_FLAG_WRITE,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
  UFFDIO_WRITEPROTECT_MODE_WP,
} from '../src/uapi/constants.ts';
import { EEXIST, KernelError } from '../src/uapi/errno.ts';
import type { UffdMsgPagefault } from '../src/uapi/structs.ts';
import { PAGE } from './helpers.ts';

interface Setup {
  readonly backend: ModelBackend;
  readonly process: Process;
  readonly uffd: Uffd;
  readonly area: number;
}

/** Every model a test made: the hook after each test ends their processes, whatever happened. */
const made: Setup[] = [];

function setup(pages: number, mode = UFFDIO_REGISTER_MODE_MISSING): Setup {
  const backend = new ModelBackend({ seed: 1, parallel: true });
  backend.afterPump = () => checkInvariants(backend.kernel);
  const process = new Process(backend.self);
  const uffd = process.userfaultfd();
  uffd.api();
  const area = process.mmap({ length: pages * PAGE });
  uffd.register({ start: area, length: pages * PAGE }, mode);
  const s = { backend, process, uffd, area };
  made.push(s);
  return s;
}

/** UFFDIO_COPY that accepts EEXIST: when two threads fault on one page, the first copy resolves both. */
function copyOnce(s: Setup, address: number, data: Uint8Array): void {
  try {
    s.uffd.copyBytes(address, data);
  } catch (error) {
    if (!(error instanceof KernelError && error.errno === EEXIST)) throw error;
  }
}

/** Page `page`'s content, version `version`: its index, then a byte derived from both. */
function content(page: number, version = 0): Uint8Array {
  const bytes = new Uint8Array(PAGE).fill((page * 31 + version * 101 + 7) & 0xff);
  new DataView(bytes.buffer).setUint32(0, page, true);
  bytes[4] = version;
  return bytes;
}

/**
 * Serves page faults until `finished` settles and no message is left:
 * `decide` returns the action for each message (bytes to copy, or a function
 * that resolves the fault itself). Returns the messages seen.
 */
async function serve(
  s: Setup,
  decide: (message: UffdMsgPagefault, page: number) => Uint8Array | (() => Promise<void> | void),
  finished: Promise<unknown>,
): Promise<UffdMsgPagefault[]> {
  const seen: UffdMsgPagefault[] = [];
  const end = finished.then(() => 'end' as const);
  for (;;) {
    const messages = s.uffd.readMessages();
    if (messages.length === 0) {
      const why = await Promise.race([s.process.backend.waitReadable(s.uffd.fd).then(() => 'message'), end]);
      if (why === 'end' && (s.uffd.poll() & POLLIN) === 0) return seen;
      continue;
    }
    for (const message of messages) {
      if (message.event !== 'pagefault') continue;
      seen.push(message);
      const page = Math.floor((Number(message.address) - s.area) / PAGE);
      const action = decide(message, page);
      if (action instanceof Uint8Array) copyOnce(s, s.area + page * PAGE, action);
      else await action();
    }
  }
}

afterEach(async () => {
  // A failed test may leave threads asleep in the kernel: exiting their process ends them.
  for (const s of made.splice(0)) s.process.exit();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    allVcpuWorkersExited(),
    new Promise((resolve) => {
      timer = setTimeout(resolve, 5000);
    }),
  ]);
  clearTimeout(timer);
  assert.equal(liveVcpuWorkers(), 0, 'a vCPU worker is still running');
});

describe('parallel vCPUs', () => {
  for (const vcpus of [1, 2]) {
    it(`MISSING + COPY with ${vcpus} vCPU thread(s): every read matches what the handler copied`, async () => {
      const pages = 64;
      const s = setup(pages);
      // Each thread reads its pages whole, then again at an offset across the page boundary.
      const programs: ThreadAccess[][] = [];
      for (let thread = 0; thread < vcpus; thread++) {
        const program: ThreadAccess[] = [];
        for (let page = thread; page < pages; page += vcpus) {
          program.push({ kind: 'read', address: s.area + page * PAGE, length: PAGE });
          program.push({ kind: 'read', address: s.area + page * PAGE, length: PAGE });
          if (page + 1 < pages) {
            program.push({ kind: 'read', address: s.area + page * PAGE + 100, length: PAGE });
          }
        }
        programs.push(program);
      }
      const threads = programs.map((program, index) => s.process.thread(program, `vcpu${index}`));
      const joined = Promise.all(threads.map((thread) => thread.join()));
      const seen = await serve(s, (_message, page) => content(page), joined);
      const results = await joined;
      // Threads share the pages their reads cross into, so a page may fault in both.
      const faulted = new Set(seen.map((message) => Number(message.address)));
      assert.equal(faulted.size, pages, 'every page faulted');
      let faults = 0;
      results.forEach((result, thread) => {
        assert.equal(result.state, 'done');
        faults += result.faults;
        assert.equal(result.reads.length, programs[thread]!.length);
        programs[thread]!.forEach((access, index) => {
          assert.equal(access.kind, 'read');
          if (access.kind !== 'read') return;
          const page = Math.floor((access.address - s.area) / PAGE);
          const offset = access.address - s.area - page * PAGE;
          const expected = new Uint8Array(PAGE);
          expected.set(content(page).subarray(offset));
          if (offset > 0) expected.set(content(page + 1).subarray(0, offset), PAGE - offset);
          assert.deepEqual(result.reads[index], expected, `thread ${thread} read ${index}`);
        });
      });
      assert.equal(faults, seen.length);
      const stats = s.backend.parallel!.stats();
      assert.ok(stats.fastSpans > 0, 'some accesses went through the TLB');
      s.process.exit();
    });
  }

  it('settle() waits for a vCPU to trap and sleep on its fault', async () => {
    const s = setup(1);
    const thread = s.process.thread([{ kind: 'read', address: s.area + 8, length: 8 }]);
    await s.backend.settle();
    assert.equal(thread.state(), 'blocked');
    assert.deepEqual(
      s.uffd.readMessages().map((message) => message.event === 'pagefault' && Number(message.address)),
      [s.area],
    );
    s.uffd.copyBytes(s.area, content(0));
    const result = await thread.join();
    assert.deepEqual(result.reads, [content(0).subarray(8, 16)]);
    s.process.exit();
  });

  it('writes from vCPUs land in memory the main thread reads', async () => {
    const pages = 16;
    // One page more, for the last write's tail.
    const s = setup(pages + 1);
    const written = (page: number) => new Uint8Array(PAGE + 10).fill(0xc0 + (page % 16));
    const programs: ThreadAccess[][] = [[], []];
    for (let page = 0; page + 1 < pages; page += 2) {
      // A write that starts 5 bytes before the page's end runs into the next page.
      for (const [thread, first] of [
        [0, page],
        [1, page + 1],
      ] as const) {
        programs[thread]!.push({ kind: 'write', address: s.area + first * PAGE + 5, data: written(first) });
      }
    }
    const threads = programs.map((program) => s.process.thread(program));
    const joined = Promise.all(threads.map((thread) => thread.join()));
    await serve(s, () => new Uint8Array(PAGE), joined);
    for (const result of await joined) assert.equal(result.state, 'done');
    const memory = s.process.read(s.area, pages * PAGE);
    // Writes overlap by 15 bytes at each boundary; which thread's bytes win there depends on timing.
    for (let page = 0; page < pages; page++) {
      const body = memory.subarray(page * PAGE + 15, page * PAGE + PAGE);
      assert.ok(
        body.every((byte) => byte === 0xc0 + (page % 16)),
        `page ${page} holds its writer's bytes`,
      );
    }
    s.process.exit();
  });

  it('MADV_DONTNEED shoots down a translation a vCPU cached, while it sleeps in the kernel', async () => {
    const s = setup(2);
    const p = s.area;
    const q = s.area + PAGE;
    const program: ThreadAccess[] = [
      { kind: 'read', address: p, length: 64 },
      { kind: 'read', address: p, length: 64 },
      { kind: 'read', address: q, length: 64 },
      { kind: 'read', address: p, length: 64 },
    ];
    const thread = s.process.thread(program);
    const joined = thread.join();
    const before = s.backend.parallel!.stats().shootdowns;
    let version = 0;
    const seen = await serve(
      s,
      (_message, page) => {
        if (page === 1) {
          // The thread sleeps on q with p in its TLB: zap p before waking it.
          return () => {
            s.process.backend.madvise(p, PAGE, MADV_DONTNEED);
            s.uffd.copyBytes(q, content(1));
          };
        }
        return content(0, version++);
      },
      joined,
    );
    const result = await joined;
    assert.equal(result.state, 'done');
    assert.deepEqual(
      seen.map((message) => Number(message.address) - s.area),
      [0, PAGE, 0],
      'p faults again after the zap',
    );
    assert.equal(result.faults, 3);
    assert.deepEqual(result.reads[0], content(0, 0).subarray(0, 64));
    assert.deepEqual(result.reads[1], content(0, 0).subarray(0, 64));
    assert.deepEqual(result.reads[3], content(0, 1).subarray(0, 64));
    assert.ok(s.backend.parallel!.stats().shootdowns > before);
    s.process.exit();
  });

  it('MADV_DONTNEED while a vCPU is reading through its TLB: reads switch from old to new bytes', async () => {
    const s = setup(2);
    const p = s.area;
    const q = s.area + PAGE;
    const loop: ThreadAccess[] = Array.from({ length: 20000 }, () => ({
      kind: 'read',
      address: p,
      length: 64,
    }));
    // q's fault is held until p has been zapped, so the zap happens while the thread runs.
    const program = [...loop, { kind: 'read', address: q, length: 64 } as const, ...loop];
    const thread = s.process.thread(program);
    const joined = thread.join();
    let zapped: Promise<void> | null = null;
    let version = 0;
    await serve(
      s,
      (_message, page) => {
        if (page === 0 && version === 0) {
          zapped = new Promise((resolve) =>
            setTimeout(() => {
              s.process.backend.madvise(p, PAGE, MADV_DONTNEED);
              resolve();
            }, 2),
          );
        }
        if (page === 1) {
          return async () => {
            await zapped;
            s.uffd.copyBytes(q, content(1));
          };
        }
        return content(0, version++);
      },
      joined,
    );
    const result = await joined;
    assert.equal(result.state, 'done');
    assert.equal(result.faults, 3, 'p twice, q once');
    const versions = result.reads
      .filter((_read, index) => index !== loop.length)
      .map((read) => {
        const expected = content(0, read[4]!).subarray(0, 64);
        assert.deepEqual(read, expected, 'no read mixes two versions');
        return read[4]!;
      });
    const firstNew = versions.indexOf(1);
    assert.ok(firstNew > 0, 'the thread read the old page first');
    assert.ok(
      versions.slice(firstNew).every((v) => v === 1),
      'once the new page was read, the old one never was',
    );
    s.process.exit();
  });

  it('repeated zaps under two reading vCPUs: no read mixes a freed page with its successor', async () => {
    const pages = 4;
    const s = setup(pages);
    const reads = 40_000;
    const threads = [0, 1].map((thread) =>
      s.process.thread(
        Array.from(
          { length: reads },
          (_v, i) =>
            ({ kind: 'read', address: s.area + ((i + thread) % pages) * PAGE, length: 2048 }) as const,
        ),
      ),
    );
    const joined = Promise.all(threads.map((thread) => thread.join()));
    // Zapped frames go back to the allocator and come out again, zeroed, for the next copy.
    const zapper = setInterval(() => s.process.backend.madvise(s.area, pages * PAGE, MADV_DONTNEED), 1);
    let version = 0;
    await serve(
      s,
      (_message, page) => () => {
        version = (version % 255) + 1;
        copyOnce(s, s.area + page * PAGE, new Uint8Array(PAGE).fill(version));
      },
      joined,
    );
    clearInterval(zapper);
    for (const result of await joined) {
      assert.equal(result.state, 'done');
      assert.equal(result.reads.length, reads);
      for (const read of result.reads) {
        const first = read[0]!;
        assert.ok(first !== 0 && read.every((byte) => byte === first), 'a read saw one version of its page');
      }
    }
    s.process.exit();
  });

  it('UFFDIO_WRITEPROTECT of a page a vCPU cached writable: its next write takes a WP fault', async () => {
    const s = setup(2, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
    const p = s.area;
    const q = s.area + PAGE;
    const program: ThreadAccess[] = [
      { kind: 'write', address: p, data: new Uint8Array(16).fill(1) },
      { kind: 'write', address: p + 16, data: new Uint8Array(16).fill(2) },
      { kind: 'read', address: q, length: 8 },
      { kind: 'write', address: p + 32, data: new Uint8Array(16).fill(3) },
    ];
    const thread = s.process.thread(program);
    const joined = thread.join();
    const seen = await serve(
      s,
      (message, page) => {
        if (message.flags & UFFD_PAGEFAULT_FLAG_WP) {
          return () => s.uffd.writeprotect({ start: p, length: PAGE }, 0);
        }
        if (page === 1) {
          return () => {
            s.uffd.writeprotect({ start: p, length: PAGE }, UFFDIO_WRITEPROTECT_MODE_WP);
            s.uffd.copyBytes(q, content(1));
          };
        }
        return new Uint8Array(PAGE);
      },
      joined,
    );
    const result = await joined;
    assert.equal(result.state, 'done');
    assert.deepEqual(
      seen.map((message) => [Number(message.address) - s.area, message.flags]),
      [
        [0, UFFD_PAGEFAULT_FLAG_WRITE],
        [PAGE, 0],
        [0, UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP],
      ],
    );
    const memory = s.process.read(p, 48);
    assert.deepEqual(
      memory,
      Uint8Array.from({ length: 48 }, (_v, i) => 1 + Math.floor(i / 16)),
    );
    s.process.exit();
  });

  it('a vCPU touching unmapped memory ends with SIGSEGV after its earlier reads', async () => {
    const s = setup(1);
    // Below mmap_min_addr: never mapped.
    const hole = 0x2000;
    const thread = s.process.thread([
      { kind: 'read', address: s.area, length: 8 },
      { kind: 'read', address: hole + 8, length: 8 },
      { kind: 'read', address: s.area, length: 8 },
    ]);
    const joined = thread.join();
    await serve(s, () => content(0), joined);
    const result = await joined;
    assert.equal(result.state, 'segv');
    assert.deepEqual(result.signal, { signal: SIGSEGV, address: hole + 8, siCode: SEGV_MAPERR });
    assert.deepEqual(result.reads, [content(0).subarray(0, 8)]);
    s.process.exit();
  });

  it('ends a running vCPU when its process exits', async () => {
    const s = setup(1);
    s.uffd.copyBytes(s.area, content(0));
    const thread = s.process.thread(
      Array.from({ length: 200_000 }, () => ({ kind: 'read', address: s.area, length: 8 }) as const),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    s.process.exit();
    const result = await thread.join();
    assert.equal(result.state, 'done');
    assert.ok(result.reads.length < 200_000);
  });
});
