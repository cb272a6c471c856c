// The host backend: real userfaultfd round trips on this machine's kernel through the typed process API,
// the same calls the model tests make. Everything is skipped, with the reason, where the host cannot run
// them (no native addon, no userfaultfd access, no huge pages).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WouldBlockError } from '../src/api/backend.ts';
import { Process, Uffd } from '../src/api/process.ts';
import {
  hostUnavailable,
  missingHostCapability,
  releaseHugePages,
  reserveHugePages,
} from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import { loadScenarios } from '../src/scenario/parse.ts';
import { runScenario } from '../src/scenario/run.ts';
import {
  BUS_ADRERR,
  MADV_DONTNEED,
  SIGBUS,
  SIGSEGV,
  SIGUSR2,
  UFFD_PAGEFAULT_FLAG_MINOR,
  UFFD_PAGEFAULT_FLAG_WRITE,
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
} from '../src/uapi/constants.ts';
import { KernelError, SignalError } from '../src/uapi/errno.ts';
import type { UffdMsg } from '../src/uapi/structs.ts';
import { expectErrno, filled, HUGE, MiB, PAGE } from './helpers.ts';

const EPERM = 1;
const ESRCH = 3;
const EBADF = 9;
const EACCES = 13;
const EFAULT = 14;
const EAGAIN = 11;
const EEXIST = 17;
const EINVAL = 22;

const MISSING = UFFDIO_REGISTER_MODE_MISSING;
const MINOR = UFFDIO_REGISTER_MODE_MINOR;

const unavailable = hostUnavailable();

/** Up to `count` messages, waiting for the first. */
async function messages(uffd: Uffd, count = 64): Promise<UffdMsg[]> {
  return uffd.nextMessages(count);
}

function pagefault(message: UffdMsg | undefined): { flags: number; address: number } {
  assert.ok(
    message !== undefined && message.event === 'pagefault',
    `expected a pagefault, got ${message?.event}`,
  );
  return { flags: message.flags, address: Number(message.address) };
}

function text(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('latin1');
}

describe('host backend', { skip: unavailable }, () => {
  let backend: HostBackend;
  let process: Process;
  const uffds: Uffd[] = [];

  /** A userfaultfd after UFFDIO_API, closed after the suite (so no thread stays asleep). */
  function newUffd(features: number | readonly string[] = 0, options = {}): Uffd {
    const uffd = process.userfaultfd(options);
    uffd.api(features);
    uffds.push(uffd);
    return uffd;
  }

  before(() => {
    backend = new HostBackend();
    process = new Process(backend.self);
  });

  after(async () => {
    for (const uffd of uffds) {
      try {
        uffd.close();
      } catch {
        // closed by the test
      }
    }
    await backend.settle();
    backend.dispose();
    releaseHugePages();
  });

  it('describes itself as the host kernel', () => {
    assert.equal(backend.name, 'host');
    assert.match(backend.describe(), /^host kernel Linux /);
  });

  it('MISSING + COPY on anonymous memory: a thread sleeps, the message names the page, COPY wakes it', async () => {
    const area = process.mmap({ length: 4 * PAGE });
    const uffd = newUffd();
    assert.equal(uffd.register({ start: area, length: 4 * PAGE }, MISSING), 0x13cn);
    const thread = process.thread([{ kind: 'read', address: area + PAGE + 10, length: 5 }], 'reader');
    await backend.settle();
    assert.equal(thread.state(), 'blocked');
    assert.equal(thread.result(), null);
    const [message, ...rest] = await messages(uffd);
    assert.deepEqual(pagefault(message), { flags: 0, address: area + PAGE });
    assert.equal(rest.length, 0);
    assert.deepEqual(uffd.readMessages(), []);
    const page = filled(PAGE, 0x2e);
    page.set(Buffer.from('hello'), 10);
    assert.equal(uffd.copyBytes(area + PAGE, page), PAGE);
    const result = await thread.join();
    assert.equal(result.state, 'done');
    assert.equal(text(result.reads[0]!), 'hello');
    assert.equal(result.errno, 0);
    assert.equal(result.faults, 1);
    assert.equal(thread.state(), 'done');
    assert.deepEqual(
      backend.self.pagemap(area, 2).map((info) => info.present),
      [false, true],
    );
    const [vma] = backend.self.vmas(area, area + 4 * PAGE);
    assert.deepEqual(vma?.modes, ['missing']);
  });

  it('a write fault carries the WRITE flag and the thread stores its bytes after COPY', async () => {
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = newUffd();
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    const thread = process.thread([{ kind: 'write', address: area + 100, data: Buffer.from('xyz') }]);
    const [message] = await messages(uffd);
    assert.deepEqual(pagefault(message), { flags: UFFD_PAGEFAULT_FLAG_WRITE, address: area });
    uffd.copyBytes(area, filled(PAGE, 1));
    assert.equal((await thread.join()).state, 'done');
    const bytes = process.read(area + 99, 5);
    assert.deepEqual([...bytes], [1, 0x78, 0x79, 0x7a, 1]);
  });

  it('MINOR + CONTINUE on a memfd: the page cache filled through an alias, mapped by CONTINUE', async () => {
    const fd = process.memfd('minor', { size: 4 * PAGE });
    const alias = process.mmap({ length: 4 * PAGE, shared: true, fd });
    const area = process.mmap({ length: 4 * PAGE, shared: true, fd });
    process.write(alias + 2 * PAGE, Buffer.from('cached'));
    const uffd = newUffd();
    assert.equal(uffd.register({ start: area, length: 4 * PAGE }, MINOR), 0x1bcn);
    const thread = process.thread([{ kind: 'read', address: area + 2 * PAGE, length: 6 }]);
    const [message] = await messages(uffd);
    assert.deepEqual(pagefault(message), { flags: UFFD_PAGEFAULT_FLAG_MINOR, address: area + 2 * PAGE });
    // The handler may still change the contents through the alias before mapping the page.
    process.write(alias + 2 * PAGE, Buffer.from('CACHED'));
    assert.equal(uffd.continue({ start: area + 2 * PAGE, length: PAGE }), PAGE);
    const result = await thread.join();
    assert.equal(text(result.reads[0]!), 'CACHED');
    const again = expectErrno(() => uffd.continue({ start: area + 2 * PAGE, length: PAGE }), EEXIST);
    assert.equal(again.progress, -EEXIST);
    assert.equal(again.syscall, 'ioctl(UFFDIO_CONTINUE)');
    // A page missing from the cache: CONTINUE does not allocate.
    const absent = expectErrno(() => uffd.continue({ start: area + 3 * PAGE, length: PAGE }), EFAULT);
    assert.equal(absent.progress, -EFAULT);
    process.close(fd);
  });

  it('register masks: 0x13c for MISSING on anon, 0x17c with WP, 0x1bc for MINOR on shmem, EINVAL for MINOR on anon', () => {
    const anon = process.mmap({ length: PAGE });
    const shared = process.mmap({ length: PAGE, shared: true });
    const uffd = newUffd();
    assert.equal(uffd.register({ start: anon, length: PAGE }, MISSING), 0x13cn);
    assert.equal(uffd.register({ start: anon, length: PAGE }, MISSING | UFFDIO_REGISTER_MODE_WP), 0x17cn);
    assert.equal(uffd.register({ start: shared, length: PAGE }, MINOR), 0x1bcn);
    const error = expectErrno(
      () => uffd.register({ start: process.mmap({ length: PAGE }), length: PAGE }, MINOR),
      EINVAL,
    );
    assert.equal(error.syscall, 'ioctl(UFFDIO_REGISTER)');
    assert.deepEqual(backend.self.vmas(shared, shared + PAGE)[0]?.modes, ['minor']);
  });

  it('ZEROPAGE maps the shared zero page; a second one gives EEXIST with zeropage = -EEXIST', () => {
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = newUffd();
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    assert.equal(uffd.zeropage({ start: area, length: PAGE }), PAGE);
    const [info] = backend.self.pagemap(area, 1);
    assert.deepEqual(info, { present: true, uffdWp: false, marker: 'none', zeroPage: true });
    assert.deepEqual([...process.read(area, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
    const error = expectErrno(() => uffd.zeropage({ start: area, length: PAGE }), EEXIST);
    assert.equal(error.progress, -EEXIST);
  });

  it('partial progress: COPY over a populated second page gives EAGAIN with copy = 4096; nothing done gives EEXIST', () => {
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = newUffd();
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    uffd.copyBytes(area + PAGE, filled(PAGE, 2));
    const partial = expectErrno(() => uffd.copyBytes(area, filled(2 * PAGE, 3)), EAGAIN);
    assert.equal(partial.progress, PAGE);
    assert.equal(partial.syscall, 'ioctl(UFFDIO_COPY)');
    const none = expectErrno(() => uffd.copyBytes(area, filled(PAGE, 4)), EEXIST);
    assert.equal(none.progress, -EEXIST);
    // Early EINVAL: the result field is not written (the API's preset 0 survives).
    const early = expectErrno(() => uffd.copyBytes(area + 1, filled(PAGE, 5)), EINVAL);
    assert.equal(early.progress, 0);
    assert.deepEqual([...process.read(area + PAGE - 1, 2)], [3, 2]);
  });

  it('WP: a protected page shows uffd-wp in pagemap; a shmem marker shows as a wp marker; POISON as a poison marker', () => {
    const fd = process.memfd('markers', { size: 4 * PAGE });
    const area = process.mmap({ length: 4 * PAGE, shared: true, fd });
    const uffd = newUffd();
    uffd.register({ start: area, length: 4 * PAGE }, MISSING | UFFDIO_REGISTER_MODE_WP);
    uffd.writeprotect({ start: area, length: PAGE }, 1);
    uffd.poison({ start: area + PAGE, length: PAGE });
    uffd.copyBytes(area + 2 * PAGE, filled(PAGE, 9));
    uffd.writeprotect({ start: area + 2 * PAGE, length: PAGE }, 1);
    const pages = backend.self.pagemap(area, 4);
    assert.deepEqual(pages[0], { present: false, uffdWp: true, marker: 'wp', zeroPage: false });
    assert.deepEqual(pages[1], { present: false, uffdWp: false, marker: 'poison', zeroPage: false });
    assert.deepEqual(pages[2], { present: true, uffdWp: true, marker: 'none', zeroPage: false });
    assert.deepEqual(pages[3], { present: false, uffdWp: false, marker: 'none', zeroPage: false });
    assert.throws(
      () => process.read(area + PAGE, 1),
      (error: unknown) =>
        error instanceof SignalError && error.signal === SIGBUS && error.address === area + PAGE,
    );
    // A write to the protected present page would sleep on a WP fault.
    assert.throws(() => process.write(area + 2 * PAGE, Buffer.from('w')), WouldBlockError);
    assert.deepEqual(uffd.readMessages(), []);
    process.close(fd);
  });

  it('hugetlb: MISSING on a hugetlb memfd, the message masked to 2 MiB, COPY of a whole huge page', async (t) => {
    const reason = reserveHugePages(4);
    if (reason !== undefined) {
      t.skip(reason);
      return;
    }
    const fd = process.memfd('huge', { size: 2 * HUGE, hugetlb: true });
    const area = process.mmap({ length: 2 * HUGE, shared: true, fd });
    const uffd = newUffd();
    assert.equal(uffd.register({ start: area, length: 2 * HUGE }, MISSING), 0x10cn);
    const thread = process.thread([{ kind: 'read', address: area + HUGE + 3 * PAGE + 7, length: 4 }]);
    const [message] = await messages(uffd);
    assert.deepEqual(pagefault(message), { flags: 0, address: area + HUGE });
    const huge = filled(HUGE, 0x11);
    huge.set(Buffer.from('huge'), 3 * PAGE + 7);
    assert.equal(uffd.copyBytes(area + HUGE, huge), HUGE);
    assert.equal(text((await thread.join()).reads[0]!), 'huge');
    const unaligned = expectErrno(() => uffd.copyBytes(area, filled(PAGE, 1)), EINVAL);
    assert.equal(unaligned.progress, -EINVAL);
    expectErrno(() => uffd.zeropage({ start: area, length: HUGE }), EINVAL);
    assert.equal(text(process.pread(fd, 4, HUGE + 3 * PAGE + 7)), 'huge');
    process.close(fd);
  });

  it('SIGBUS in an access thread (a memfd mapping beyond EOF) is reported and ends only that thread', async () => {
    const fd = process.memfd('short', { size: PAGE });
    const area = process.mmap({ length: 3 * PAGE, shared: true, fd });
    const thread = process.thread([
      { kind: 'read', address: area, length: 2 },
      { kind: 'read', address: area + 2 * PAGE + 17, length: 2 },
      { kind: 'read', address: area, length: 2 },
    ]);
    const result = await thread.join();
    assert.equal(result.state, 'sigbus');
    assert.deepEqual(result.signal, { signal: SIGBUS, address: area + 2 * PAGE + 17, siCode: BUS_ADRERR });
    assert.equal(result.reads.length, 1);
    assert.equal(thread.state(), 'sigbus');
    // The same access from the calling thread is a SignalError, not a crash.
    assert.throws(
      () => process.write(area + PAGE, Buffer.from('x')),
      (error: unknown) => error instanceof SignalError && error.signal === SIGBUS,
    );
    process.close(fd);
  });

  it('SIGSEGV in an access thread and in the calling thread', async () => {
    const area = process.mmap({ length: PAGE, prot: 0 });
    const result = await process.thread([{ kind: 'write', address: area, data: Buffer.from('x') }]).join();
    assert.equal(result.state, 'segv');
    assert.equal(result.signal?.signal, SIGSEGV);
    assert.throws(() => process.read(area, 1), SignalError);
  });

  it('a direct access that would sleep throws WouldBlockError and leaves no message behind', () => {
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = newUffd();
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    assert.throws(
      () => process.read(area + PAGE, 4),
      (error: unknown) => error instanceof WouldBlockError && error.address === area + PAGE,
    );
    assert.equal(uffd.poll(), 0);
    assert.deepEqual(uffd.readMessages(), []);
  });

  it('kernel-mode accesses: read(2) into a missing page faults with WRITE; USER_MODE_ONLY makes it EFAULT', async () => {
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = newUffd();
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    const thread = process.thread([
      { kind: 'write', address: area + 8, data: Buffer.from('pipe'), kernel: true },
    ]);
    const [message] = await messages(uffd);
    assert.deepEqual(pagefault(message), { flags: UFFD_PAGEFAULT_FLAG_WRITE, address: area });
    uffd.zeropage({ start: area, length: PAGE });
    const result = await thread.join();
    assert.equal(result.errno, 0);
    assert.equal(text(process.read(area + 8, 4)), 'pipe');

    const userOnly = newUffd(0, { userModeOnly: true });
    const other = process.mmap({ length: PAGE });
    userOnly.register({ start: other, length: PAGE }, MISSING);
    const failed = await process.thread([{ kind: 'read', address: other, length: 4, kernel: true }]).join();
    assert.equal(failed.state, 'done');
    assert.equal(failed.errno, EFAULT);
    assert.deepEqual(userOnly.readMessages(), []);
  });

  it('a signal to a sleeping thread makes it retry the fault, which queues a second message', async () => {
    const area = process.mmap({ length: PAGE });
    const uffd = newUffd();
    uffd.register({ start: area, length: PAGE }, MISSING);
    const thread = process.thread([{ kind: 'read', address: area, length: 1 }]);
    assert.equal((await messages(uffd)).length, 1);
    await backend.settle();
    backend.self.signalThread(thread, SIGUSR2);
    const [again] = await messages(uffd);
    assert.deepEqual(pagefault(again), { flags: 0, address: area });
    uffd.copyBytes(area, filled(PAGE, 7));
    const result = await thread.join();
    assert.deepEqual([...result.reads[0]!], [7]);
    assert.equal(result.faults, 2);
  });

  it('syscall accesses: madvise(DONTNEED) sleeps until the REMOVE event is read', async () => {
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = newUffd(['event_remove']);
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    uffd.copyBytes(area, filled(2 * PAGE, 1));
    const thread = process.thread([
      { kind: 'syscall', call: 'madvise', args: [area, 2 * PAGE, MADV_DONTNEED] },
    ]);
    await backend.settle();
    assert.equal(thread.state(), 'blocked');
    const [event] = await messages(uffd);
    assert.deepEqual(event, { event: 'remove', start: BigInt(area), end: BigInt(area + 2 * PAGE) });
    const result = await thread.join();
    assert.deepEqual(result.returns, [0]);
    assert.deepEqual(
      backend.self.pagemap(area, 2).map((info) => info.present),
      [false, false],
    );
  });

  it('a calling-thread madvise that would sleep until an event is read throws instead of hanging', async () => {
    const area = process.mmap({ length: 2 * PAGE });
    const uffd = newUffd(['event_remove']);
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    uffd.copyBytes(area, filled(2 * PAGE, 1));
    assert.throws(
      () => backend.self.madvise(area, 2 * PAGE, MADV_DONTNEED),
      /sleeps until the monitor reads/,
    );
    const [event] = await messages(uffd);
    assert.equal(event?.event, 'remove');
    await backend.settle();
    assert.deepEqual(
      backend.self.pagemap(area, 2).map((info) => info.present),
      [false, false],
    );
    // Outside registered ranges the call does not sleep and returns at once.
    const other = process.mmap({ length: PAGE });
    process.write(other, Buffer.from('x'));
    backend.self.madvise(other, PAGE, MADV_DONTNEED);
    assert.deepEqual([...process.read(other, 1)], [0]);
  });

  it('errors are KernelErrors named as the model names them', () => {
    const error = expectErrno(() => process.munmap(1, PAGE), EINVAL);
    assert.ok(error instanceof KernelError);
    assert.equal(error.syscall, 'munmap');
    assert.equal(expectErrno(() => process.mmap({ length: 0 }), EINVAL).syscall, 'mmap');
    assert.equal(expectErrno(() => backend.self.read(-1, 32), EBADF).syscall, 'read');
  });

  it('fork with EVENT_FORK: the thread sleeps until the FORK event is read; the child keeps the registration', async () => {
    const area = process.mmap({ length: 2 * PAGE });
    process.write(area, Buffer.from('parent'));
    const uffd = newUffd(['event_fork']);
    uffd.register({ start: area + PAGE, length: PAGE }, MISSING);
    const forker = process.thread([{ kind: 'syscall', call: 'fork', args: [] }], 'forker');
    await backend.settle();
    assert.equal(forker.state(), 'blocked');
    const [event] = await messages(uffd);
    assert.ok(event?.event === 'fork');
    const childUffd = new Uffd(process, event.ufd);
    uffds.push(childUffd);
    const result = await forker.join();
    assert.equal(result.returns[0], result.children[0]?.pid);
    const child = new Process(result.children[0]!);
    assert.equal(text(child.read(area, 6)), 'parent');
    assert.deepEqual(child.backend.vmas(area + PAGE, area + 2 * PAGE)[0]?.modes, ['missing']);
    const reader = child.thread([{ kind: 'read', address: area + PAGE, length: 3 }]);
    const [fault] = await messages(childUffd);
    assert.deepEqual(pagefault(fault), { flags: 0, address: area + PAGE });
    assert.deepEqual(uffd.readMessages(), []);
    childUffd.copyBytes(area + PAGE, filled(PAGE, 0x6b));
    assert.equal(text((await reader.join()).reads[0]!), 'kkk');
    child.exit();
    // The child's mm is gone: its userfaultfd gives ESRCH.
    expectErrno(() => childUffd.copyBytes(area + PAGE, filled(PAGE, 1)), ESRCH);
  });

  it('createProcess: a fresh process with its own userfaultfd, handled from here', async () => {
    const child = new Process(backend.createProcess());
    assert.notEqual(child.pid, globalThis.process.pid);
    const area = child.mmap({ length: 2 * PAGE });
    const uffd = child.userfaultfd();
    uffd.api();
    assert.equal(uffd.register({ start: area, length: 2 * PAGE }, MISSING), 0x13cn);
    const thread = child.thread([{ kind: 'read', address: area + PAGE, length: 2 }]);
    await backend.settle();
    assert.equal(thread.state(), 'blocked');
    const [message] = await messages(uffd);
    assert.deepEqual(pagefault(message), { flags: 0, address: area + PAGE });
    uffd.copyBytes(area + PAGE, filled(PAGE, 0x21));
    assert.deepEqual([...(await thread.join()).reads[0]!], [0x21, 0x21]);
    assert.throws(() => child.read(area, 1), WouldBlockError);
    child.exit();
    expectErrno(() => child.mmap({ length: PAGE }), ESRCH);
  });

  it('createProcess({privileged: false}): EPERM from userfaultfd(2), EACCES from /dev/userfaultfd, USER_MODE_ONLY works', () => {
    const user = new Process(backend.createProcess({ privileged: false }));
    expectErrno(() => user.userfaultfd(), EPERM);
    expectErrno(() => user.userfaultfd({ via: 'dev' }), EACCES);
    const uffd = user.userfaultfd({ userModeOnly: true });
    assert.equal(uffd.api().ioctls, 0x8000000000000003n);
    expectErrno(() => uffd.api(), EINVAL);
    user.exit();
  });

  it('capability lines say what is missing', () => {
    assert.equal(missingHostCapability([]), undefined);
    assert.match(missingHostCapability(['vm_uffd_ops']) ?? '', /no vm_uffd_ops/);
  });

  it('runs scenarios/anon/missing-copy-thread.yaml', async () => {
    const [scenario] = loadScenarios('scenarios/anon/missing-copy-thread.yaml');
    const report = await runScenario(scenario!, { backend: 'host', seed: 1, keepGoing: false });
    assert.equal(report.status, 'pass', report.reason);
    assert.equal(report.backend, 'host');
  });

  it('a TypeScript handler resolves 65,536 MISSING faults on 256 MiB of anonymous memory, data verified', async (t) => {
    const size = 256 * MiB;
    const pages = size / PAGE;
    const threadCount = 8;
    const area = process.mmap({ length: size });
    const uffd = newUffd();
    uffd.register({ start: area, length: size }, MISSING);
    const page = new Uint8Array(PAGE);
    const view = new DataView(page.buffer);
    const stamp = (index: number, into: Uint8Array, at: DataView) => {
      into.fill(index & 0xff);
      at.setUint32(0, index, true);
    };
    const started = performance.now();
    const share = pages / threadCount;
    const threads = Array.from({ length: threadCount }, (_, n) =>
      process.thread(
        Array.from({ length: share }, (_, k) => ({
          kind: 'read' as const,
          address: area + (n * share + k) * PAGE,
          length: 8,
        })),
        `reader${n}`,
      ),
    );
    let resolved = 0;
    const faulted = new Set<number>();
    while (resolved < pages) {
      for (const message of await uffd.nextMessages(64)) {
        const { address } = pagefault(message);
        assert.ok(!faulted.has(address), `a second fault message for page ${(address - area) / PAGE}`);
        faulted.add(address);
        stamp((address - area) / PAGE, page, view);
        uffd.copyBytes(address, page);
        resolved++;
      }
    }
    const results = await Promise.all(threads.map((thread) => thread.join()));
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`${pages} faults in ${seconds.toFixed(2)} s: ${Math.round(pages / seconds)} faults/s`);
    assert.deepEqual(uffd.readMessages(), []);
    for (const [n, result] of results.entries()) {
      assert.equal(result.state, 'done');
      assert.equal(result.reads.length, share);
      for (const [k, bytes] of result.reads.entries()) {
        const index = n * share + k;
        const got = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        if (got.getUint32(0, true) !== index || bytes[4] !== (index & 0xff)) {
          assert.fail(`page ${index}: thread read ${Buffer.from(bytes).toString('hex')}`);
        }
      }
    }
    // Every page faulted exactly once (one message each, none left). The threads' own fault count
    // is not asserted: it counts touches that slept, and a wake-up that comes between queuing the
    // message and schedule() leaves the thread running, so it depends on timing.
    assert.equal(faulted.size, pages);
    // Every byte of the area, read back from the calling thread.
    const expected = new Uint8Array(PAGE);
    const expectedView = new DataView(expected.buffer);
    const chunk = 16 * MiB;
    for (let offset = 0; offset < size; offset += chunk) {
      const data = process.read(area + offset, chunk);
      for (let p = 0; p < chunk / PAGE; p++) {
        const index = offset / PAGE + p;
        stamp(index, expected, expectedView);
        if (Buffer.compare(expected, data.subarray(p * PAGE, (p + 1) * PAGE)) !== 0) {
          assert.fail(`page ${index} differs`);
        }
      }
    }
    process.munmap(area, size);
  });
});

describe('host backend unavailable', {
  skip: unavailable === undefined ? 'the host backend is available' : false,
}, () => {
  it('says why in one line and the scenario runner skips with it', async () => {
    assert.match(unavailable ?? '', /^[^\n]+$/);
    const [scenario] = loadScenarios('scenarios/anon/missing-copy-thread.yaml');
    const report = await runScenario(scenario!, { backend: 'host', seed: 1, keepGoing: false });
    assert.equal(report.status, 'skip');
    assert.equal(report.reason, unavailable);
  });
});
