// Non-cooperative events, fork, mremap, UFFDIO_MOVE, WRITEPROTECT and the SIGBUS/USER_MODE_ONLY features
// through the typed process API (uapi-facts.md §3.7–§3.10, §4.6, §5), for what scenario files cannot say:
// the EAGAIN diagnostics that name the unread event, handlers that ignore events against handlers that
// read them, copy-on-write after fork, page contents moved by mremap and UFFDIO_MOVE, exact message
// addresses, and the invariant checker (run after every pump by createTestModel, and at the end of each
// case). Syscalls that sleep until their event is read run as `{kind: 'syscall'}` thread accesses.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ProcessBackend, ThreadBackend } from '../src/api/backend.ts';
import { Process, Uffd } from '../src/api/process.ts';
import { PTE_PRESENT, PTE_UFFD_WP, PTE_WRITE } from '../src/model/mm/pagetable.ts';
import { VM_UFFD_MISSING, VM_UFFD_WP } from '../src/model/mm/vma.ts';
import {
  MADV_DONTNEED,
  MADV_FREE,
  MADV_PAGEOUT,
  MADV_REMOVE,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  SIGBUS,
  SIGSEGV,
  UFFDIO_MOVE,
} from '../src/uapi/constants.ts';
import { KernelError, SignalError } from '../src/uapi/errno.ts';
import { encodeUffdioMove, type UffdMsg } from '../src/uapi/structs.ts';
import { createTestModel, expectErrno, PAGE, type TestModel } from './helpers.ts';
import {
  ALL_KINDS,
  ANON_PRIVATE,
  assertBytes,
  HUGETLB_PRIVATE,
  HUGETLB_SHARED,
  MEMFD_PRIVATE,
  MEMFD_SHARED,
  type MemKind,
  modelProcess,
  pattern,
  pteFlags,
  vmasIn,
} from './memkinds.ts';

const ENOENT = 2;
const ESRCH = 3;
const EAGAIN = 11;
const ENOMEM = 12;
const EFAULT = 14;
const EBUSY = 16;
const EEXIST = 17;
const EINVAL = 22;

const MISSING = 1;
const WP = 2;
const MINOR = 4;

const WRITE_WP = 3;
const MODE_WP = 1;
const ALLOW_SRC_HOLES = 2;

// --- helpers -------------------------------------------------------------------------------------------

/** A thread making one syscall that may sleep until its event is read; settled, so it is blocked or done. */
async function syscall(
  model: TestModel,
  process: Process,
  call: 'madvise' | 'munmap' | 'mremap' | 'fork',
  args: readonly number[],
): Promise<ThreadBackend> {
  const thread = process.thread([{ kind: 'syscall', call, args }], call);
  await model.backend.settle();
  return thread;
}

/** The value the syscall returned; the thread must have finished. */
function returned(thread: ThreadBackend): number {
  const result = thread.result();
  assert.ok(result !== null, `${thread.name} is still blocked`);
  return result.returns[0]!;
}

/** fork(2) by a thread of `process`; with EVENT_FORK it sleeps until the event is read. */
async function forkThread(model: TestModel, process: Process = model.process): Promise<ThreadBackend> {
  return syscall(model, process, 'fork', []);
}

function child(thread: ThreadBackend): Process {
  const result = thread.result();
  assert.ok(result !== null, 'fork is still blocked');
  return new Process(result.children[0] as ProcessBackend);
}

/** UFFDIO_MOVE through the raw struct (the typed API has no wrapper); returns `move` or throws with progress. */
function move(uffd: Uffd, dst: number, src: number, length: number, mode = 0): number {
  const arg = encodeUffdioMove({
    dst: BigInt(dst),
    src: BigInt(src),
    len: BigInt(length),
    mode: BigInt(mode),
    move: 0n,
  });
  const view = new DataView(arg.buffer);
  try {
    uffd.process.backend.ioctl(uffd.fd, UFFDIO_MOVE, arg);
  } catch (error) {
    if (error instanceof KernelError) error.progress = Number(view.getBigInt64(32, true));
    throw error;
  }
  return Number(view.getBigInt64(32, true));
}

/** Expects EAGAIN from `call` whose message names the unread event; returns the progress field. */
function expectChanging(call: () => unknown, event: string): number | undefined {
  const error = expectErrno(call, EAGAIN);
  assert.match(error.message, new RegExp(`\\b${event}\\b`), `the EAGAIN should name the ${event} event`);
  assert.match(error.message, /unread/);
  return error.progress;
}

function onlyMessage(uffd: Uffd): UffdMsg {
  const messages = uffd.readMessages();
  assert.equal(messages.length, 1, `expected one message, got ${JSON.stringify(messages, bigints)}`);
  return messages[0]!;
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `0x${value.toString(16)}` : value;
}

function pagemap(process: Process, address: number, pages = 1) {
  return process.backend.pagemap(address, pages);
}

/** A fresh model with a uffd (features as given) over `pages` pages of `kind` registered for `mode`. */
function setup(kind: MemKind, pages: number, mode: number, features: readonly string[] = []) {
  const model = createTestModel();
  const uffd = model.process.userfaultfd();
  uffd.api(features);
  const area = kind.map(model.process, pages);
  uffd.register({ start: area.address, length: area.length }, mode);
  return { ...model, uffd, area, page: (n: number) => area.address + n * kind.pageSize };
}

// --- mmap_changing -------------------------------------------------------------------------------------

interface EventCase {
  readonly event: 'REMOVE' | 'UNMAP' | 'REMAP' | 'FORK';
  readonly what: string;
  readonly features: readonly string[];
  /** Starts the syscall that raises the event (it stays blocked); `spare` is a second registered map. */
  raise(model: TestModel, spare: number): Promise<ThreadBackend>;
  readonly message: UffdMsg['event'];
}

const EVENT_CASES: readonly EventCase[] = [
  {
    event: 'REMOVE',
    what: 'madvise(MADV_DONTNEED)',
    features: ['event_remove'],
    raise: (model, spare) => syscall(model, model.process, 'madvise', [spare, PAGE, MADV_DONTNEED]),
    message: 'remove',
  },
  {
    event: 'REMOVE',
    what: 'madvise(MADV_FREE)',
    features: ['event_remove'],
    raise: (model, spare) => syscall(model, model.process, 'madvise', [spare, PAGE, MADV_FREE]),
    message: 'remove',
  },
  {
    event: 'UNMAP',
    what: 'munmap',
    features: ['event_unmap'],
    raise: (model, spare) => syscall(model, model.process, 'munmap', [spare, PAGE]),
    message: 'unmap',
  },
  {
    event: 'REMAP',
    what: 'mremap(MAYMOVE|FIXED)',
    features: ['event_remap'],
    raise: (model, spare) => {
      const target = model.process.mmap({ length: PAGE });
      return syscall(model, model.process, 'mremap', [
        spare,
        PAGE,
        PAGE,
        MREMAP_MAYMOVE | MREMAP_FIXED,
        target,
      ]);
    },
    message: 'remap',
  },
  {
    event: 'FORK',
    what: 'fork',
    features: ['event_fork'],
    raise: (model) => forkThread(model),
    message: 'fork',
  },
];

describe('mmap_changing: every filling ioctl fails with EAGAIN naming the unread event (§4.6)', () => {
  for (const c of EVENT_CASES) {
    it(`${c.what}: ${c.event} blocks the syscall, COPY/ZEROPAGE/CONTINUE/POISON/MOVE/WRITEPROTECT fail, WAKE/REGISTER/UNREGISTER work`, async () => {
      const model = createTestModel();
      const process = model.process;
      const uffd = process.userfaultfd();
      uffd.api(c.features);
      const area = process.mmap({ length: 4 * PAGE });
      const spare = process.mmap({ length: PAGE });
      const src = process.mmap({ length: PAGE });
      process.write(spare, pattern(PAGE, 2));
      uffd.register({ start: area, length: 4 * PAGE }, MISSING | WP);
      uffd.register({ start: spare, length: PAGE }, MISSING);

      const thread = await c.raise(model, spare);
      assert.equal(thread.state(), 'blocked', `${c.what} should sleep until the event is read`);
      // Written after a fork, so the page is not shared with the child and MOVE can take it later.
      process.write(src, pattern(PAGE, 1));
      const range = { start: area, length: PAGE };
      assert.equal(
        expectChanging(() => uffd.copyBytes(area, pattern(PAGE, 3)), c.event),
        -EAGAIN,
      );
      assert.equal(
        expectChanging(() => uffd.zeropage(range), c.event),
        -EAGAIN,
      );
      assert.equal(
        expectChanging(() => uffd.continue(range), c.event),
        -EAGAIN,
      );
      assert.equal(
        expectChanging(() => uffd.poison(range), c.event),
        -EAGAIN,
      );
      assert.equal(
        expectChanging(() => move(uffd, area, src, PAGE), c.event),
        -EAGAIN,
      );
      expectChanging(() => uffd.writeprotect(range, MODE_WP), c.event);
      // Even arguments that would be EINVAL get EAGAIN first: the check comes before the struct is read.
      assert.equal(
        expectChanging(() => uffd.zeropage({ start: area + 1, length: 5 }), c.event),
        -EAGAIN,
      );
      uffd.wake(range);
      uffd.unregister({ start: area + 3 * PAGE, length: PAGE });
      uffd.register({ start: area + 3 * PAGE, length: PAGE }, MISSING);
      assert.equal(thread.state(), 'blocked');

      const message = onlyMessage(uffd);
      assert.equal(message.event, c.message);
      await model.backend.settle();
      assert.equal(thread.state(), 'done');
      assert.ok(returned(thread) >= 0, `${c.what} returned ${returned(thread)}`);
      assert.equal(uffd.copyBytes(area, pattern(PAGE, 3)), PAGE);
      assert.equal(uffd.zeropage({ start: area + PAGE, length: PAGE }), PAGE);
      assert.equal(move(uffd, area + 2 * PAGE, src, PAGE), PAGE);
      uffd.writeprotect(range, MODE_WP);
      assert.equal(pagemap(process, area)[0]!.uffdWp, true);
      model.check();
    });
  }

  it('with several prepared events the message names the first and counts the rest, which come one at a time', async () => {
    // mremap(FIXED) onto a registered map: UNMAP of the destination, REMAP, UNMAP of the old range. All three
    // raise mmap_changing at once; their messages are queued one after the other.
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['event_remap', 'event_unmap']);
    const area = model.process.mmap({ length: 2 * PAGE });
    const target = model.process.mmap({ length: 2 * PAGE });
    const other = model.process.mmap({ length: PAGE });
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    uffd.register({ start: target, length: 2 * PAGE }, MISSING);
    uffd.register({ start: other, length: PAGE }, MISSING);
    const thread = await syscall(model, model.process, 'mremap', [
      area,
      2 * PAGE,
      2 * PAGE,
      MREMAP_MAYMOVE | MREMAP_FIXED,
      target,
    ]);
    assert.equal(thread.state(), 'blocked');
    const names = [
      /UNMAP 0x[0-9a-f]+-0x[0-9a-f]+ event and 2 more is unread/,
      /REMAP .* event and 1 more/,
      /UNMAP /,
    ];
    const kinds = ['unmap', 'remap', 'unmap'];
    for (let i = 0; i < 3; i++) {
      const error = expectErrno(() => uffd.copyBytes(other, pattern(PAGE, 1)), EAGAIN);
      assert.match(error.message, names[i]!);
      assert.equal(error.progress, -EAGAIN);
      // A read with room for every message still returns one: the next is queued after this read.
      const messages = uffd.readMessages();
      assert.deepEqual(
        messages.map((message) => message.event),
        [kinds[i]],
      );
      await model.backend.settle();
    }
    assert.deepEqual(uffd.readMessages(), []);
    assert.equal(returned(thread), target);
    assert.equal(uffd.copyBytes(other, pattern(PAGE, 1)), PAGE);
    model.check();
  });

  it('the EAGAIN of a fill is distinguishable from a partial fill: progress -11, not bytes done', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['event_unmap']);
    const area = model.process.mmap({ length: 2 * PAGE });
    const gone = model.process.mmap({ length: PAGE });
    uffd.register({ start: area, length: 2 * PAGE }, MISSING);
    uffd.register({ start: gone, length: PAGE }, MISSING);
    uffd.copyBytes(area + PAGE, pattern(PAGE, 1));
    const partial = expectErrno(() => uffd.copyBytes(area, pattern(2 * PAGE, 2)), EAGAIN);
    assert.equal(partial.progress, PAGE);
    assert.doesNotMatch(partial.message, /unread/);
    const thread = await syscall(model, model.process, 'munmap', [gone, PAGE]);
    const changing = expectErrno(() => uffd.zeropage({ start: area, length: PAGE }), EAGAIN);
    assert.equal(changing.progress, -EAGAIN);
    assert.match(changing.message, /UNMAP/);
    uffd.readMessages();
    await model.backend.settle();
    assert.equal(returned(thread), 0);
    model.check();
  });
});

// --- handlers: ignoring events against reading them ---------------------------------------------------

interface HandlerCase {
  readonly kind: MemKind;
  readonly features: readonly string[];
  readonly event: string;
  /** Raises the event on page 1 of the area (or on a second registered map). */
  raise(model: TestModel, page1: number, kind: MemKind): Promise<ThreadBackend>;
}

const HANDLER_CASES: readonly HandlerCase[] = [
  {
    kind: ANON_PRIVATE,
    features: ['event_remove'],
    event: 'REMOVE',
    raise: (model, page1, kind) =>
      syscall(model, model.process, 'madvise', [page1, kind.pageSize, MADV_DONTNEED]),
  },
  {
    kind: MEMFD_SHARED,
    features: ['event_remove'],
    event: 'REMOVE',
    raise: (model, page1, kind) =>
      syscall(model, model.process, 'madvise', [page1, kind.pageSize, MADV_REMOVE]),
  },
  {
    kind: HUGETLB_SHARED,
    features: ['event_remove'],
    event: 'REMOVE',
    raise: (model, page1, kind) =>
      syscall(model, model.process, 'madvise', [page1, kind.pageSize, MADV_REMOVE]),
  },
  {
    kind: MEMFD_PRIVATE,
    features: ['event_unmap'],
    event: 'UNMAP',
    raise: (model, page1, kind) => syscall(model, model.process, 'munmap', [page1, kind.pageSize]),
  },
  {
    kind: HUGETLB_PRIVATE,
    features: ['event_fork'],
    event: 'FORK',
    raise: (model) => forkThread(model),
  },
];

/** Handles one fault, never reading anything else; returns how many COPY attempts got EAGAIN. */
async function ignoringHandler(
  model: TestModel,
  uffd: Uffd,
  kind: MemKind,
  attempts: number,
): Promise<number> {
  const [fault] = uffd.readMessages(1);
  assert.equal(fault?.event, 'pagefault');
  const address = Number((fault as UffdMsg & { event: 'pagefault' }).address);
  let refused = 0;
  for (let i = 0; i < attempts; i++) {
    try {
      uffd.copyBytes(address, new Uint8Array(kind.pageSize).fill(0x5a));
      return refused;
    } catch (error) {
      if (!(error instanceof KernelError) || error.errno !== EAGAIN) throw error;
      refused++;
    }
    await model.backend.settle();
  }
  return refused;
}

/** A handler that, on EAGAIN, reads the next message (the event) and retries: the issue 4 criterion. */
async function readingHandler(uffd: Uffd, kind: MemKind, address: number): Promise<string[]> {
  const seen: string[] = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    try {
      uffd.copyBytes(address, new Uint8Array(kind.pageSize).fill(0x5a));
      return seen;
    } catch (error) {
      if (!(error instanceof KernelError) || error.errno !== EAGAIN) throw error;
      for (const message of uffd.readMessages(1)) seen.push(message.event);
    }
  }
  throw new Error('the reading handler never got its COPY through');
}

describe('a handler that ignores events sees EAGAIN forever; one that reads them succeeds (issue 4)', () => {
  for (const c of HANDLER_CASES) {
    it(`${c.kind.name}, ${c.event}`, async () => {
      const model = setup(c.kind, 2, MISSING, c.features);
      const reader = model.process.thread(
        [{ kind: 'read', address: model.page(0) + 7, length: 1 }],
        'reader',
      );
      await model.backend.settle();
      assert.equal(reader.state(), 'blocked');
      const raiser = await c.raise(model, model.page(1), c.kind);
      assert.equal(raiser.state(), 'blocked');

      // Faults are read before events, so the handler gets the fault first and can ignore the event.
      const refused = await ignoringHandler(model, model.uffd, c.kind, 25);
      assert.equal(refused, 25, 'every COPY must fail while the event is unread');
      assert.equal(reader.state(), 'blocked');
      assert.equal(raiser.state(), 'blocked');

      const seen = await readingHandler(model.uffd, c.kind, model.page(0));
      assert.deepEqual(seen, [c.event.toLowerCase()]);
      const done = await reader.join();
      assert.equal(done.state, 'done');
      assert.equal(done.reads[0]![0], 0x5a);
      await model.backend.settle();
      assert.equal(raiser.state(), 'done');
      assert.ok(returned(raiser) >= 0);
      model.check();
    });
  }
});

// --- REMOVE, UNMAP, REMAP: exact message contents ------------------------------------------------------

describe('event messages (§4.6)', () => {
  it('REMOVE: one per registered VMA, clipped to it; none for an unregistered VMA in between', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['event_remove']);
    const area = model.process.mmap({ length: 12 * PAGE });
    uffd.register({ start: area, length: 4 * PAGE }, MISSING);
    uffd.register({ start: area + 8 * PAGE, length: 4 * PAGE }, MISSING | WP);
    uffd.copyBytes(area + 2 * PAGE, pattern(2 * PAGE, 1));
    uffd.copyBytes(area + 8 * PAGE, pattern(2 * PAGE, 2));
    const thread = await syscall(model, model.process, 'madvise', [area + 2 * PAGE, 8 * PAGE, MADV_DONTNEED]);
    // One at a time: the second VMA's event is queued after the first is read and its VMA zapped.
    assert.deepEqual(uffd.readMessages(), [
      { event: 'remove', start: BigInt(area + 2 * PAGE), end: BigInt(area + 4 * PAGE) },
    ]);
    assert.equal(pteFlags(model.backend, model.process, area + 2 * PAGE), 0);
    assert.ok(pteFlags(model.backend, model.process, area + 8 * PAGE) & PTE_PRESENT);
    assert.equal(thread.state(), 'blocked');
    assert.deepEqual(uffd.readMessages(), [
      { event: 'remove', start: BigInt(area + 8 * PAGE), end: BigInt(area + 10 * PAGE) },
    ]);
    await model.backend.settle();
    assert.equal(pteFlags(model.backend, model.process, area + 8 * PAGE), 0);
    assert.equal(returned(thread), 0);
    model.check();
  });

  it('REMOVE: the pages go only after the event is read; the range stays registered (MISSING again)', async () => {
    const model = setup(ANON_PRIVATE, 2, MISSING, ['event_remove']);
    model.uffd.copyBytes(model.area.address, pattern(2 * PAGE, 4));
    const thread = await syscall(model, model.process, 'madvise', [
      model.area.address,
      2 * PAGE,
      MADV_DONTNEED,
    ]);
    assert.ok(pteFlags(model.backend, model.process, model.page(1)) & PTE_PRESENT, 'zapped before the read');
    model.uffd.readMessages();
    await model.backend.settle();
    assert.equal(returned(thread), 0);
    assert.equal(pteFlags(model.backend, model.process, model.page(1)), 0);
    const reader = model.process.thread([{ kind: 'read', address: model.page(1), length: 1 }]);
    await model.backend.settle();
    assert.deepEqual(model.uffd.readMessages(), [
      { event: 'pagefault', flags: 0, address: BigInt(model.page(1)), ptid: 0 },
    ]);
    model.uffd.zeropage({ start: model.page(1), length: PAGE });
    assert.equal((await reader.join()).state, 'done');
    model.check();
  });

  it('REMOVE: MADV_PAGEOUT, unregistered VMAs and ctxs without EVENT_REMOVE raise nothing', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['event_remove']);
    const quiet = model.process.userfaultfd();
    quiet.api();
    const area = model.process.mmap({ length: 3 * PAGE });
    uffd.register({ start: area, length: PAGE }, MISSING);
    quiet.register({ start: area + 2 * PAGE, length: PAGE }, MISSING);
    for (const [address, advice] of [
      [area, MADV_PAGEOUT],
      [area + PAGE, MADV_DONTNEED],
      [area + 2 * PAGE, MADV_DONTNEED],
    ] as const) {
      const thread = await syscall(model, model.process, 'madvise', [address, PAGE, advice]);
      assert.equal(thread.state(), 'done');
      assert.equal(returned(thread), 0);
    }
    assert.deepEqual(uffd.readMessages(), []);
    assert.deepEqual(quiet.readMessages(), []);
    model.check();
  });

  it('UNMAP: the whole unmapped range, once per ctx, even over several registered VMAs', async () => {
    const model = createTestModel();
    const first = model.process.userfaultfd();
    first.api(['event_unmap']);
    const second = model.process.userfaultfd();
    second.api(['event_unmap']);
    const area = model.process.mmap({ length: 8 * PAGE });
    first.register({ start: area + PAGE, length: PAGE }, MISSING);
    first.register({ start: area + 2 * PAGE, length: PAGE }, MISSING | WP);
    second.register({ start: area + 5 * PAGE, length: PAGE }, MISSING);
    const thread = await syscall(model, model.process, 'munmap', [area, 8 * PAGE]);
    assert.equal(vmasIn(model.backend, model.process, area, area + 8 * PAGE).length, 0, 'unmapped at once');
    const whole = { event: 'unmap', start: BigInt(area), end: BigInt(area + 8 * PAGE) };
    assert.deepEqual(first.readMessages(), [whole]);
    await model.backend.settle();
    assert.equal(thread.state(), 'blocked', 'munmap waits for the second ctx too');
    assert.deepEqual(second.readMessages(), [whole]);
    await model.backend.settle();
    assert.equal(returned(thread), 0);
    expectErrno(() => first.copyBytes(area + PAGE, pattern(PAGE, 1)), ENOENT);
    model.check();
  });

  it('REMAP: from, to and the old length; then UNMAP of the old range; a shrink gives only UNMAP of the tail', async () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['event_remap', 'event_unmap']);
    const area = model.process.mmap({ length: 4 * PAGE });
    const target = model.process.mmap({ length: 4 * PAGE });
    uffd.register({ start: area, length: 4 * PAGE }, MISSING);
    const thread = await syscall(model, model.process, 'mremap', [
      area,
      4 * PAGE,
      4 * PAGE,
      MREMAP_MAYMOVE | MREMAP_FIXED,
      target,
    ]);
    assert.deepEqual(uffd.readMessages(), [
      { event: 'remap', from: BigInt(area), to: BigInt(target), len: BigInt(4 * PAGE) },
    ]);
    assert.deepEqual(uffd.readMessages(), [
      { event: 'unmap', start: BigInt(area), end: BigInt(area + 4 * PAGE) },
    ]);
    await model.backend.settle();
    assert.equal(returned(thread), target);
    const shrink = await syscall(model, model.process, 'mremap', [target, 4 * PAGE, PAGE, 0, 0]);
    assert.deepEqual(uffd.readMessages(), [
      { event: 'unmap', start: BigInt(target + PAGE), end: BigInt(target + 4 * PAGE) },
    ]);
    await model.backend.settle();
    assert.equal(returned(shrink), target);
    const [vma] = vmasIn(model.backend, model.process, target, target + 4 * PAGE);
    assert.equal(vma!.end - vma!.start, PAGE);
    assert.ok(vma!.flags & VM_UFFD_MISSING);
    model.check();
  });
});

// --- mremap moves page contents --------------------------------------------------------------------------

describe('mremap moves page contents, and the registration only with EVENT_REMAP', () => {
  for (const kind of ALL_KINDS) {
    for (const withEvent of [false, true]) {
      it(`${kind.name}, ${withEvent ? 'with' : 'without'} EVENT_REMAP`, async () => {
        const model = createTestModel();
        const uffd = model.process.userfaultfd();
        uffd.api(withEvent ? ['event_remap'] : []);
        const area = kind.map(model.process, 2);
        const target = kind.map(model.process, 2);
        const data = pattern(area.length, 7);
        model.process.write(area.address, data);
        uffd.register({ start: area.address, length: area.length }, MISSING | WP);
        uffd.writeprotect({ start: area.address, length: kind.pageSize }, MODE_WP);
        const thread = await syscall(model, model.process, 'mremap', [
          area.address,
          area.length,
          area.length,
          MREMAP_MAYMOVE | MREMAP_FIXED,
          target.address,
        ]);
        if (withEvent) {
          assert.equal(thread.state(), 'blocked');
          assert.deepEqual(uffd.readMessages(), [
            {
              event: 'remap',
              from: BigInt(area.address),
              to: BigInt(target.address),
              len: BigInt(area.length),
            },
          ]);
          await model.backend.settle();
        } else {
          assert.deepEqual(uffd.readMessages(), []);
        }
        assert.equal(returned(thread), target.address);
        assertBytes(model.process.read(target.address, area.length), data, 'the moved contents');
        assert.throws(
          () => model.process.read(area.address, 1),
          (error: unknown) => error instanceof SignalError && error.signal === SIGSEGV,
        );
        const vmas = vmasIn(model.backend, model.process, target.address, target.address + area.length);
        assert.equal(vmas.length, 1);
        assert.equal(
          vmas[0]!.flags & (VM_UFFD_MISSING | VM_UFFD_WP),
          withEvent ? VM_UFFD_MISSING | VM_UFFD_WP : 0,
        );
        // The protected page keeps its bit only while still registered.
        assert.equal(pagemap(model.process, target.address)[0]!.uffdWp, withEvent);
        model.check();
      });
    }
  }
});

// --- fork -------------------------------------------------------------------------------------------------

describe('fork: copy-on-write and shared memory (§4.6 FORK)', () => {
  for (const kind of ALL_KINDS) {
    it(`${kind.name}: a child's write ${kind.shared ? 'is' : 'is not'} seen by the parent, and the reverse`, async () => {
      const model = createTestModel();
      const area = kind.map(model.process, 2);
      const before = pattern(64, 1);
      model.process.write(area.address, before);
      const kid = child(await forkThread(model));
      assertBytes(kid.read(area.address, 64), before, 'the child inherits the contents');
      const mine = pattern(64, 2);
      kid.write(area.address, mine);
      assertBytes(
        model.process.read(area.address, 64),
        kind.shared ? mine : before,
        'the parent after the child write',
      );
      const theirs = pattern(64, 3);
      model.process.write(area.address + kind.pageSize, theirs);
      assertBytes(
        kid.read(area.address + kind.pageSize, 64),
        kind.shared ? theirs : new Uint8Array(64),
        'the child after a parent write to a page untouched at fork',
      );
      kid.exit();
      assertBytes(model.process.read(area.address, 64), kind.shared ? mine : before, 'after the child exits');
      model.check();
    });
  }

  it('without EVENT_FORK the child is unregistered: it faults nothing in and loses the uffd-wp bits', async () => {
    const model = setup(ANON_PRIVATE, 2, MISSING | WP, ['wp_unpopulated']);
    model.uffd.copyBytes(model.page(0), pattern(PAGE, 1));
    model.uffd.writeprotect({ start: model.area.address, length: 2 * PAGE }, MODE_WP);
    const kid = child(await forkThread(model));
    assert.equal(
      vmasIn(model.backend, kid, model.area.address, model.area.address + 2 * PAGE)[0]!.flags & VM_UFFD_WP,
      0,
    );
    assert.deepEqual(
      pagemap(kid, model.area.address, 2).map((page) => [page.present, page.uffdWp, page.marker]),
      [
        [true, false, 'none'],
        [false, false, 'none'],
      ],
    );
    // The child's write COWs without any fault; the parent's page stays protected.
    kid.write(model.page(0), pattern(8, 9));
    kid.write(model.page(1), pattern(8, 9));
    assert.deepEqual(model.uffd.readMessages(), []);
    assert.deepEqual(
      pagemap(model.process, model.area.address, 2).map((page) => page.uffdWp),
      [true, true],
    );
    assertBytes(model.process.read(model.page(0), PAGE), pattern(PAGE, 1), 'the parent page');
    model.check();
  });

  it('with EVENT_FORK the child ctx has the features, is initialized, keeps WP bits and gets the child faults', async () => {
    const model = setup(MEMFD_SHARED, 2, MISSING | WP, ['event_fork', 'thread_id']);
    model.uffd.copyBytes(model.page(0), pattern(PAGE, 1));
    model.uffd.writeprotect({ start: model.page(0), length: PAGE }, MODE_WP);
    const thread = await forkThread(model);
    assert.equal(thread.state(), 'blocked');
    const message = onlyMessage(model.uffd);
    assert.equal(message.event, 'fork');
    const childUffd = new Uffd(model.process, (message as { ufd: number }).ufd);
    await model.backend.settle();
    const kid = child(thread);
    expectErrno(() => childUffd.api(), EINVAL);
    assert.deepEqual(
      pagemap(kid, model.page(0)).map((page) => page.uffdWp),
      [true],
    );
    const writer = kid.thread(
      [{ kind: 'write', address: model.page(0) + 3, data: pattern(1, 5) }],
      'kid-writer',
    );
    await model.backend.settle();
    const [fault] = childUffd.readMessages();
    assert.equal(fault?.event, 'pagefault');
    assert.equal((fault as { flags: number }).flags, WRITE_WP);
    assert.equal((fault as { ptid: number }).ptid, writer.tid, 'THREAD_ID is inherited');
    assert.deepEqual(model.uffd.readMessages(), []);
    childUffd.writeprotect({ start: model.page(0), length: PAGE }, 0);
    assert.equal((await writer.join()).state, 'done');
    // Shared memory: the parent sees the child's write, and its own bit is untouched.
    assert.equal(model.process.read(model.page(0) + 3, 1)[0], pattern(1, 5)[0]);
    assert.equal(pagemap(model.process, model.page(0))[0]!.uffdWp, true);
    model.check();
  });

  it('after the monitored child exits: ESRCH for the fills (field unwritten), ENOMEM for (un)register, WAKE 0', async () => {
    const model = setup(ANON_PRIVATE, 2, MISSING | WP, ['event_fork']);
    const thread = await forkThread(model);
    const message = onlyMessage(model.uffd);
    const childUffd = new Uffd(model.process, (message as { ufd: number }).ufd);
    await model.backend.settle();
    child(thread).exit();
    const range = { start: model.page(0), length: PAGE };
    for (const call of [
      () => childUffd.copyBytes(model.page(0), pattern(PAGE, 1)),
      () => childUffd.zeropage(range),
      () => childUffd.continue(range),
      () => childUffd.poison(range),
    ]) {
      assert.equal(expectErrno(call, ESRCH).progress, 0, 'the result field keeps the caller value');
    }
    expectErrno(() => childUffd.writeprotect(range, MODE_WP), ESRCH);
    expectErrno(() => childUffd.register(range, MISSING), ENOMEM);
    expectErrno(() => childUffd.unregister(range), ENOMEM);
    childUffd.wake(range);
    assert.deepEqual(childUffd.readMessages(), []);
    assert.equal(childUffd.poll(), 0);
    childUffd.close();
    model.check();
  });
});

// --- UFFDIO_MOVE -------------------------------------------------------------------------------------------

describe('UFFDIO_MOVE (§3.10)', () => {
  it('moves pages without copying: contents intact in every chunking, holes allowed, source left empty', async () => {
    const model = setup(ANON_PRIVATE, 16, MISSING, ['move']);
    const src = model.process.mmap({ length: 16 * PAGE });
    const data = pattern(16 * PAGE, 11);
    model.process.write(src, data);
    // Pages 5 and 12 are holes in the source.
    for (const hole of [5, 12]) model.process.backend.madvise(src + hole * PAGE, PAGE, MADV_DONTNEED);
    const frames = new Map<number, number>();
    const mm = modelProcess(model.backend, model.process).mm;
    for (let n = 0; n < 16; n++) frames.set(n, mm.pageTable.valueAt((src + n * PAGE) / PAGE));
    let offset = 0;
    for (const pages of [1, 3, 4, 8]) {
      const done = move(model.uffd, model.page(offset), src + offset * PAGE, pages * PAGE, ALLOW_SRC_HOLES);
      assert.equal(done, pages * PAGE);
      offset += pages;
    }
    const expected = data.slice();
    for (const hole of [5, 12]) expected.fill(0, hole * PAGE, (hole + 1) * PAGE);
    for (let n = 0; n < 16; n++) {
      const flags = pteFlags(model.backend, model.process, model.page(n));
      if (n === 5 || n === 12) {
        assert.equal(flags, 0, `page ${n} was a hole`);
        continue;
      }
      assert.equal(
        flags & (PTE_PRESENT | PTE_WRITE),
        PTE_PRESENT | PTE_WRITE,
        `page ${n} is mapped writable`,
      );
      assert.equal(mm.pageTable.valueAt(model.page(n) / PAGE), frames.get(n), `page ${n} moved its frame`);
      assert.equal(pteFlags(model.backend, model.process, src + n * PAGE), 0, `source page ${n} is empty`);
    }
    // Holes of the destination stay registered MISSING; fill them, then compare everything.
    model.uffd.zeropage({ start: model.page(5), length: PAGE });
    model.uffd.zeropage({ start: model.page(12), length: PAGE });
    assertBytes(model.process.read(model.area.address, 16 * PAGE), expected, 'the destination');
    model.process.write(model.page(0), pattern(8, 1));
    assert.deepEqual(model.uffd.readMessages(), []);
    model.check();
  });

  it('wakes the faulting readers of the moved range, and only them', async () => {
    const model = setup(ANON_PRIVATE, 3, MISSING);
    const src = model.process.mmap({ length: 3 * PAGE });
    model.process.write(src, pattern(3 * PAGE, 3));
    const readers = [0, 1, 2].map((n) =>
      model.process.thread([{ kind: 'read', address: model.page(n), length: PAGE }]),
    );
    await model.backend.settle();
    assert.equal(model.uffd.readMessages().length, 3);
    assert.equal(move(model.uffd, model.page(0), src, 2 * PAGE), 2 * PAGE);
    await model.backend.settle();
    assert.deepEqual(
      readers.map((reader) => reader.state()),
      ['done', 'done', 'blocked'],
    );
    assertBytes(
      (await readers[1]!.join()).reads[0]!,
      pattern(3 * PAGE, 3).subarray(PAGE, 2 * PAGE),
      'page 1',
    );
    assert.equal(move(model.uffd, model.page(2), src + 2 * PAGE, PAGE), PAGE);
    assertBytes((await readers[2]!.join()).reads[0]!, pattern(3 * PAGE, 3).subarray(2 * PAGE), 'page 2');
    model.check();
  });

  it('EBUSY for pages shared with a child after fork, even after the child wrote its copy or exited', async () => {
    const model = setup(ANON_PRIVATE, 2, MISSING);
    const src = model.process.mmap({ length: 2 * PAGE });
    model.process.write(src, pattern(2 * PAGE, 5));
    const kid = child(await forkThread(model));
    expectErrno(() => move(model.uffd, model.page(0), src, PAGE), EBUSY);
    kid.write(src, pattern(PAGE, 6));
    assert.equal(expectErrno(() => move(model.uffd, model.page(0), src, PAGE), EBUSY).progress, -EBUSY);
    assertBytes(kid.read(src, PAGE), pattern(PAGE, 6), 'the child copy');
    kid.exit();
    expectErrno(() => move(model.uffd, model.page(0), src, 2 * PAGE), EBUSY);
    // A parent write breaks the sharing; the page then moves.
    model.process.write(src + 10, pattern(4, 7));
    assert.equal(move(model.uffd, model.page(0), src, PAGE), PAGE);
    const expected = pattern(PAGE, 5);
    expected.set(pattern(4, 7), 10);
    assertBytes(model.process.read(model.page(0), PAGE), expected, 'the moved page');
    model.check();
  });

  it('refuses what it cannot move: EEXIST, ENOENT, EINVAL for shared, hugetlb, foreign or unregistered VMAs', () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api();
    const other = model.process.userfaultfd();
    other.api();
    const dst = model.process.mmap({ length: 2 * PAGE });
    const src = model.process.mmap({ length: 2 * PAGE });
    const shm = model.process.mmap({ length: PAGE, shared: true });
    const foreign = model.process.mmap({ length: PAGE });
    const plain = model.process.mmap({ length: PAGE });
    const holes = model.process.mmap({ length: PAGE });
    const huge = HUGETLB_PRIVATE.map(model.process, 1);
    model.process.write(src, pattern(2 * PAGE, 1));
    model.process.write(shm, pattern(PAGE, 2));
    uffd.register({ start: dst, length: 2 * PAGE }, MISSING);
    uffd.register({ start: shm, length: PAGE }, MISSING);
    uffd.register({ start: huge.address, length: huge.length }, MISSING);
    other.register({ start: foreign, length: PAGE }, MISSING);
    uffd.copyBytes(dst, pattern(PAGE, 3));
    const cases: Array<[string, () => number, number]> = [
      ['populated destination', () => move(uffd, dst, src, PAGE), EEXIST],
      ['source hole', () => move(uffd, dst + PAGE, holes, PAGE), ENOENT],
      ['shared source', () => move(uffd, dst + PAGE, shm, PAGE), EINVAL],
      ['shared destination', () => move(uffd, shm, src, PAGE), EINVAL],
      ['hugetlb destination', () => move(uffd, huge.address, src, PAGE), EINVAL],
      ['destination of another uffd', () => move(uffd, foreign, src, PAGE), EINVAL],
      ['unregistered destination', () => move(uffd, plain, src, PAGE), EINVAL],
      ['past the source VMA', () => move(uffd, dst + PAGE, src + PAGE, 2 * PAGE), EINVAL],
    ];
    for (const [what, call, errno] of cases) {
      const error = expectErrno(call, errno);
      assert.equal(error.progress, -errno, what);
    }
    assertBytes(model.process.read(src, 2 * PAGE), pattern(2 * PAGE, 1), 'the source is untouched');
    model.check();
  });
});

// --- WRITEPROTECT and markers ------------------------------------------------------------------------------

describe('UFFDIO_WRITEPROTECT and uffd-wp markers (§3.7, §5.5)', () => {
  const KINDS = [ANON_PRIVATE, MEMFD_SHARED, MEMFD_PRIVATE, HUGETLB_SHARED, HUGETLB_PRIVATE];
  for (const kind of KINDS) {
    for (const unpopulated of [false, true]) {
      it(`${kind.name}${unpopulated ? ' with WP_UNPOPULATED' : ''}: bits on present pages, markers on holes ${kind === ANON_PRIVATE && !unpopulated ? 'not installed' : 'installed'}`, async () => {
        const model = setup(kind, 2, WP, unpopulated ? ['wp_unpopulated'] : []);
        model.process.write(model.page(0), pattern(16, 1));
        model.uffd.writeprotect({ start: model.area.address, length: model.area.length }, MODE_WP);
        const markers = kind !== ANON_PRIVATE || unpopulated;
        const [present, hole] = [
          pagemap(model.process, model.page(0))[0]!,
          pagemap(model.process, model.page(1))[0]!,
        ];
        assert.deepEqual([present.present, present.uffdWp], [true, true]);
        assert.deepEqual([hole.present, hole.uffdWp, hole.marker], [false, markers, markers ? 'wp' : 'none']);
        assert.equal(pteFlags(model.backend, model.process, model.page(0)) & PTE_WRITE, 0);
        // Reads never fault.
        assertBytes(model.process.read(model.page(0), 16), pattern(16, 1), 'a read of a protected page');
        // A write to each page: WP faults where there is a bit or a marker.
        const writers = [0, 1].map((n) =>
          model.process.thread([{ kind: 'write', address: model.page(n) + 5, data: pattern(2, 4) }]),
        );
        await model.backend.settle();
        const faults = model.uffd
          .readMessages()
          .map((fault) => [(fault as { address: bigint }).address, (fault as { flags: number }).flags])
          .sort((a, b) => Number(a[0]) - Number(b[0]));
        assert.deepEqual(faults, [
          [BigInt(model.page(0)), WRITE_WP],
          ...(markers ? [[BigInt(model.page(1)), WRITE_WP]] : []),
        ]);
        model.uffd.writeprotect({ start: model.area.address, length: model.area.length }, 0);
        for (const writer of writers) assert.equal((await writer.join()).state, 'done');
        assert.deepEqual(
          pagemap(model.process, model.area.address, 2).map((page) => page.uffdWp),
          [false, false],
        );
        assert.ok(pteFlags(model.backend, model.process, model.page(1)) & PTE_WRITE);
        model.check();
      });
    }
  }

  it('WP_ASYNC: no message ever, written pages lose the bit, the others keep it', async () => {
    const model = setup(MEMFD_SHARED, 4, WP, ['wp_async']);
    model.process.write(model.page(0), pattern(8, 1));
    model.uffd.writeprotect({ start: model.area.address, length: model.area.length }, MODE_WP);
    const writer = model.process.thread([
      { kind: 'write', address: model.page(0), data: pattern(8, 2) },
      { kind: 'write', address: model.page(2), data: pattern(8, 3) },
    ]);
    assert.equal((await writer.join()).faults, 0);
    assert.deepEqual(model.uffd.readMessages(), []);
    assert.deepEqual(
      pagemap(model.process, model.area.address, 4).map((page) => page.uffdWp),
      [false, true, false, true],
    );
    model.check();
  });

  it('DONTNEED drops anon markers but keeps shared ones; unregister and close remove all of them', () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api(['wp_unpopulated']);
    const anon = ANON_PRIVATE.map(model.process, 2);
    const shmem = MEMFD_SHARED.map(model.process, 2);
    for (const area of [anon, shmem]) {
      model.process.write(area.address, pattern(8, 1));
      uffd.register({ start: area.address, length: area.length }, WP);
      uffd.writeprotect({ start: area.address, length: area.length }, MODE_WP);
      model.process.backend.madvise(area.address, area.length, MADV_DONTNEED);
    }
    assert.deepEqual(
      pagemap(model.process, anon.address, 2).map((page) => page.marker),
      ['none', 'none'],
    );
    assert.deepEqual(
      pagemap(model.process, shmem.address, 2).map((page) => page.marker),
      ['wp', 'wp'],
    );
    uffd.unregister({ start: shmem.address, length: PAGE });
    assert.deepEqual(
      pagemap(model.process, shmem.address, 2).map((page) => page.marker),
      ['none', 'wp'],
    );
    uffd.close();
    assert.deepEqual(
      pagemap(model.process, shmem.address, 2).map((page) => page.marker),
      ['none', 'none'],
    );
    assert.equal(pteFlags(model.backend, model.process, shmem.address + PAGE) & PTE_UFFD_WP, 0);
    model.check();
  });

  it('WP with DONTWAKE is EINVAL; the first VMA without WP is ENOENT after earlier VMAs changed', () => {
    const model = createTestModel();
    const uffd = model.process.userfaultfd();
    uffd.api();
    const area = model.process.mmap({ length: 3 * PAGE });
    model.process.write(area, pattern(3 * PAGE, 1));
    uffd.register({ start: area, length: PAGE }, WP);
    uffd.register({ start: area + PAGE, length: PAGE }, MISSING);
    uffd.register({ start: area + 2 * PAGE, length: PAGE }, WP);
    expectErrno(() => uffd.writeprotect({ start: area, length: PAGE }, MODE_WP | 2), EINVAL);
    expectErrno(() => uffd.writeprotect({ start: area, length: 3 * PAGE }, MODE_WP), ENOENT);
    assert.deepEqual(
      pagemap(model.process, area, 3).map((page) => page.uffdWp),
      [true, false, false],
    );
    model.check();
  });
});

// --- SIGBUS and USER_MODE_ONLY ------------------------------------------------------------------------------

describe('UFFD_FEATURE_SIGBUS and UFFD_USER_MODE_ONLY (§4.2)', () => {
  const CASES: Array<{ kind: MemKind; mode: number }> = [
    { kind: ANON_PRIVATE, mode: MISSING },
    { kind: MEMFD_SHARED, mode: MISSING },
    { kind: MEMFD_SHARED, mode: MINOR },
    { kind: HUGETLB_PRIVATE, mode: MISSING },
    { kind: HUGETLB_SHARED, mode: MINOR },
  ];
  for (const { kind, mode } of CASES) {
    const modeName = mode === MINOR ? 'MINOR' : 'MISSING';
    it(`${kind.name} ${modeName}: SIGBUS feature - the thread gets SIGBUS, the syscall EFAULT, no message`, async () => {
      const model = createTestModel();
      const uffd = model.process.userfaultfd();
      uffd.api(['sigbus']);
      const area = kind.map(model.process, 1);
      if (mode === MINOR) {
        const alias = kind.alias!(model.process, area);
        model.process.write(alias, pattern(8, 1));
      }
      uffd.register({ start: area.address, length: area.length }, mode);
      const user = await model.process
        .thread([{ kind: 'read', address: area.address + 1, length: 1 }])
        .join();
      assert.equal(user.state, 'sigbus');
      assert.equal(user.signal?.signal, SIGBUS);
      assert.equal(user.faults, 0);
      const kernel = await model.process
        .thread([{ kind: 'write', address: area.address, data: pattern(8, 2), kernel: true }])
        .join();
      assert.deepEqual([kernel.state, kernel.errno], ['done', EFAULT]);
      assert.deepEqual(uffd.readMessages(), []);
      model.check();
    });

    it(`${kind.name} ${modeName}: USER_MODE_ONLY - the syscall gets EFAULT, a user access queues a message`, async () => {
      const model = createTestModel();
      const uffd = model.process.userfaultfd({ userModeOnly: true });
      uffd.api();
      const area = kind.map(model.process, 1);
      if (mode === MINOR) {
        const alias = kind.alias!(model.process, area);
        model.process.write(alias, pattern(8, 1));
      }
      uffd.register({ start: area.address, length: area.length }, mode);
      const kernel = await model.process
        .thread([{ kind: 'write', address: area.address, data: pattern(8, 2), kernel: true }])
        .join();
      assert.deepEqual([kernel.state, kernel.errno, kernel.faults], ['done', EFAULT, 0]);
      assert.deepEqual(uffd.readMessages(), []);
      const user = model.process.thread([{ kind: 'read', address: area.address + 1, length: 1 }]);
      await model.backend.settle();
      const [fault] = uffd.readMessages();
      assert.equal(fault?.event, 'pagefault');
      if (mode === MINOR) uffd.continue({ start: area.address, length: area.length });
      else uffd.copyBytes(area.address, new Uint8Array(area.length).fill(3));
      const done = await user.join();
      assert.equal(done.state, 'done');
      assert.equal(done.faults, 1);
      model.check();
    });
  }
});

// --- the invariant checker over a long mixed run --------------------------------------------------------

describe('invariants', () => {
  it('fork, COW, events, MOVE, mremap, WP and exit leave consistent state and free every frame', async () => {
    const model = createTestModel();
    const process = model.process;
    const memory = model.backend.kernel.memory;
    const hugeFree = memory.hugePagesFree;
    const uffd = process.userfaultfd();
    uffd.api(['event_fork', 'event_remap', 'event_remove', 'event_unmap']);
    const anon = ANON_PRIVATE.map(process, 8);
    const shmem = MEMFD_SHARED.map(process, 4);
    const huge = HUGETLB_PRIVATE.map(process, 2);
    const target = process.mmap({ length: 8 * PAGE });
    for (const area of [anon, shmem, huge]) {
      process.write(area.address, pattern(64, area.length));
      uffd.register({ start: area.address, length: area.length }, MISSING | WP);
    }
    uffd.writeprotect({ start: shmem.address, length: shmem.length }, MODE_WP);
    const forking = await forkThread(model);
    const forkMessage = onlyMessage(uffd);
    const childUffd = new Uffd(process, (forkMessage as { ufd: number }).ufd);
    await model.backend.settle();
    const kid = child(forking);
    kid.write(anon.address, pattern(64, 99));
    kid.write(huge.address, pattern(64, 98));
    const remove = await syscall(model, process, 'madvise', [
      anon.address + 4 * PAGE,
      4 * PAGE,
      MADV_DONTNEED,
    ]);
    assert.equal(onlyMessage(uffd).event, 'remove');
    await model.backend.settle();
    assert.equal(returned(remove), 0);
    const src = process.mmap({ length: 2 * PAGE });
    process.write(src, pattern(2 * PAGE, 3));
    assert.equal(move(uffd, anon.address + 4 * PAGE, src, 2 * PAGE), 2 * PAGE);
    const remap = await syscall(model, process, 'mremap', [
      anon.address,
      anon.length,
      anon.length,
      MREMAP_MAYMOVE | MREMAP_FIXED,
      target,
    ]);
    assert.deepEqual(
      [...uffd.readMessages(), ...uffd.readMessages()].map((message) => message.event),
      ['remap', 'unmap'],
    );
    await model.backend.settle();
    assert.equal(returned(remap), target);
    assertBytes(process.read(target, 64), pattern(64, anon.length), 'the remapped anon page');
    assertBytes(kid.read(anon.address, 64), pattern(64, 99), 'the child copy');
    model.check();
    kid.exit();
    childUffd.close();
    model.check();
    process.exit();
    model.check();
    assert.equal(memory.framesAllocated, 1, 'only the zero page is left');
    assert.equal(memory.hugePagesFree, hugeFree);
  });
});
