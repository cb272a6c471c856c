// The handler API in its users' idiom: `for await` over a uffd's events with an AbortSignal, one
// address type on both sides (a message's bigint address goes straight into calls, a value that
// cannot be held exactly is refused), named modes, an opening that names missing features up
// front and falls back from /dev/userfaultfd to the syscall, and close/asyncDispose.
import assert from 'node:assert/strict';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { ProcessBackend } from '../src/api/backend.ts';
import { ModelBackend } from '../src/api/model-backend.ts';
import { addressNumber, alignDown, MissingFeaturesError, Process } from '../src/api/process.ts';
import { hostUnavailable } from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import { UFFD_FEATURE_MOVE, UFFDIO_API } from '../src/uapi/constants.ts';
import { KernelError } from '../src/uapi/errno.ts';

const PAGE = 4096;

function setup(seed = 1) {
  const backend = new ModelBackend({ seed });
  const proc = new Process(backend.self);
  return { backend, proc };
}

describe('uffd.events()', () => {
  it('yields each fault; a MISSING handler resolves them with bigint addresses; abort ends the loop', async () => {
    const { proc } = setup();
    const uffd = proc.openUffd();
    // [area: 8 pages, MISSING]
    const area = proc.mmap({ length: 8 * PAGE });
    uffd.register({ start: area, length: 8 * PAGE }, { missing: true });
    const vcpu = proc.thread(
      Array.from({ length: 8 }, (_, page) => ({
        kind: 'read' as const,
        address: area + page * PAGE + 12,
        length: 1,
      })),
    );
    const controller = new AbortController();
    const served: bigint[] = [];
    const done = vcpu.join().then((result) => {
      controller.abort();
      return result;
    });
    for await (const message of uffd.events({ signal: controller.signal })) {
      assert.equal(message.event, 'pagefault');
      if (message.event !== 'pagefault') continue;
      const page = alignDown(message.address, PAGE);
      served.push(page);
      uffd.copyBytes(page, new Uint8Array(PAGE).fill(served.length));
    }
    const result = await done;
    assert.equal(result.state, 'done');
    assert.deepEqual(
      result.reads.map((bytes) => bytes[0]),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.deepEqual(
      served,
      Array.from({ length: 8 }, (_, page) => BigInt(area + page * PAGE)),
    );
  });

  it('close() ends a loop waiting for a message, and asyncDispose closes', async () => {
    const { proc } = setup();
    const uffd = proc.openUffd();
    const loop = (async () => {
      let count = 0;
      for await (const _ of uffd.events()) count++;
      return count;
    })();
    await new Promise((resolve) => setImmediate(resolve));
    uffd.close();
    assert.equal(await loop, 0);
    assert.equal(uffd.closed, true);
    // Idempotent: the number is handed out again, and a second close leaves the new file open.
    const next = proc.openUffd();
    assert.equal(next.fd, uffd.fd, 'the model reuses the lowest free number, as Linux does');
    uffd.close();
    assert.equal(next.closed, false);
    next.register({ start: proc.mmap({ length: PAGE }), length: PAGE }, { missing: true });

    const { backend, proc: other } = setup();
    let kept: ReturnType<Process['openUffd']> | undefined;
    {
      await using disposable = other.openUffd();
      assert.equal(disposable.closed, false);
      kept = disposable;
    }
    assert.equal(kept?.closed, true);

    // Closing the backend ends the program: its sleeping thread wakes, its handler loop ends.
    const handled = other.openUffd();
    const area = other.mmap({ length: PAGE });
    handled.register({ start: area, length: PAGE }, { missing: true });
    const vcpu = other.thread([{ kind: 'read', address: area, length: 1 }]);
    const handler = (async () => {
      let faults = 0;
      for await (const _ of handled.events()) faults++;
      return faults;
    })();
    await backend.settle();
    assert.equal(vcpu.state(), 'blocked');
    await backend[Symbol.asyncDispose]();
    await vcpu.join();
    assert.equal(await handler, 1, 'the loop saw the fault, then ended');
  });
});

/** Opens /dev/null until Node holds descriptor number `fd` (freed just before); the others are closed again. */
function takeNumber(fd: number): number {
  const extra: number[] = [];
  try {
    for (let tries = 0; tries < 64; tries++) {
      const opened = openSync('/dev/null', 'r');
      if (opened === fd) return opened;
      extra.push(opened);
    }
  } finally {
    for (const other of extra) closeSync(other);
  }
  throw new Error(`fd ${fd} was not handed out again`);
}

describe('Uffd.close() on the host: owner-checked', { skip: hostUnavailable() ?? false }, () => {
  // The host program runs in faultline's own process: a number its backend closed is soon Node's.
  it("after the backend's close(), a uffd's close() is EBADF and leaves the reused number open", () => {
    const backend = new HostBackend();
    const proc = new Process(backend.self);
    const uffd = proc.openUffd();
    backend.close();
    const reused = takeNumber(uffd.fd);
    try {
      assert.throws(
        () => uffd.close(),
        (error: unknown) =>
          error instanceof KernelError &&
          error.code === 'EBADF' &&
          /by the backend's close\(\)/.test(error.message),
      );
      assert.equal(uffd.closed, true);
      uffd.close();
      uffd[Symbol.dispose]();
      assert.ok(fstatSync(reused).isCharacterDevice(), "Node's file is still open");
    } finally {
      closeSync(reused);
    }
  });

  it('a second close() does nothing; process.close of a number it never opened is EBADF', () => {
    const backend = new HostBackend();
    try {
      const proc = new Process(backend.self);
      const uffd = proc.openUffd();
      uffd.close();
      const reused = takeNumber(uffd.fd);
      try {
        uffd.close();
        assert.throws(
          () => proc.close(reused),
          (error: unknown) => error instanceof KernelError && error.code === 'EBADF',
        );
        assert.ok(fstatSync(reused).isCharacterDevice());
      } finally {
        closeSync(reused);
      }
    } finally {
      backend.close();
    }
  });
});

describe('addresses and modes', () => {
  it('alignDown keeps the type; addressNumber refuses what a number cannot hold exactly', () => {
    assert.equal(alignDown(0x7f12_3456_7abcn, PAGE), 0x7f12_3456_7000n);
    assert.equal(alignDown(0x7f12_3456_7abc, PAGE), 0x7f12_3456_7000);
    assert.equal(addressNumber(0x7fff_ffff_f000n), 0x7fff_ffff_f000);
    assert.throws(() => addressNumber(2n ** 60n), /does not fit a safe integer/);
    assert.throws(() => addressNumber(2 ** 60), /is not a safe integer/);
  });

  it('named modes: dontWake leaves the thread asleep until wake; an unknown name is a TypeError', async () => {
    const { backend, proc } = setup();
    const uffd = proc.openUffd();
    const area = proc.mmap({ length: PAGE });
    uffd.register({ start: BigInt(area), length: BigInt(PAGE) }, { missing: true, wp: true });
    const vcpu = proc.thread([{ kind: 'read', address: area, length: 1 }]);
    const [fault] = await uffd.nextMessages();
    assert.equal(fault?.event, 'pagefault');
    uffd.copy({ dst: area, src: proc.mmapIsolated(PAGE), length: PAGE, mode: { dontWake: true } });
    await backend.settle();
    assert.equal(vcpu.state(), 'blocked', 'DONTWAKE: still asleep');
    uffd.wake({ start: area, length: PAGE });
    assert.equal((await vcpu.join()).state, 'done');
    uffd.writeprotect({ start: area, length: PAGE }, { wp: true });
    assert.throws(
      () => uffd.writeprotect({ start: area, length: PAGE }, { protect: true } as never),
      /unknown mode 'protect' \(known: wp, dontWake\)/,
    );
  });
});

describe('Process.openUffd()', () => {
  it('names every requested feature the kernel lacks, before anything is registered', () => {
    const { backend } = setup();
    // An older kernel without UFFDIO_MOVE: UFFDIO_API offers everything but the move feature.
    const olderKernel = new Proxy(backend.self, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (key !== 'ioctl') return typeof value === 'function' ? value.bind(target) : value;
        return (fd: number, request: number, arg: Uint8Array | number | null) => {
          const result = target.ioctl(fd, request, arg);
          if (request === UFFDIO_API && arg instanceof Uint8Array) arg[10]! &= ~(UFFD_FEATURE_MOVE >> 16);
          return result;
        };
      },
    }) as ProcessBackend;
    const proc = new Process(olderKernel);
    assert.throws(
      () => proc.openUffd({ features: ['thread_id', 'move', 'event_remove'] }),
      (error: unknown) =>
        error instanceof MissingFeaturesError &&
        error.missing.length === 1 &&
        error.missing[0] === 'move' &&
        error.available.includes('thread_id') &&
        /the kernel lacks move/.test(error.message),
    );
    const uffd = proc.openUffd({ features: ['thread_id'] });
    assert.equal(uffd.closed, false);
  });

  it('falls back to the syscall when /dev/userfaultfd refuses an unprivileged process', () => {
    const { backend } = setup();
    const unprivileged = new Process(backend.createProcess({ privileged: false }));
    // /dev/userfaultfd: EACCES; userfaultfd(2) with UFFD_USER_MODE_ONLY: allowed.
    assert.throws(
      () => unprivileged.userfaultfd({ via: 'dev' }),
      (error: unknown) => error instanceof KernelError && error.code === 'EACCES',
    );
    const uffd = unprivileged.openUffd({ userModeOnly: true });
    assert.equal(uffd.closed, false);
  });
});
