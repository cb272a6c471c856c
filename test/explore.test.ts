/**
 * faultline explore: the race windows the model opens under a controller
 * (each checked against what fs/userfaultfd.c does), the strategies, and
 * the examples — every buggy handler's bug found with its kind within a
 * bounded number of schedules, its replay file reproducing it, and the
 * careful handler passing.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ModelBackend } from '../src/api/model-backend.ts';
import { Process } from '../src/api/process.ts';
import {
  type CampaignConfig,
  defaultWorkers,
  type ReplayFile,
  runCampaign,
} from '../src/explore/campaign.ts';
import { type GuestConfig, runSchedule } from '../src/explore/run.ts';
import { ExhaustiveSearch, RandomStrategy, ReplayStrategy } from '../src/explore/strategy.ts';
import { loadHandlerModule } from '../src/handlers/load.ts';
import { MADV_DONTNEED, UFFDIO_REGISTER_MODE_MISSING } from '../src/uapi/constants.ts';
import { EAGAIN, KernelError } from '../src/uapi/errno.ts';
import { HANDLERS_GUEST } from './helpers.ts';

const example = (name: string): string =>
  fileURLToPath(new URL(`../examples/handlers/${name}.ts`, import.meta.url));
const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const out = mkdtempSync(join(tmpdir(), 'faultline-explore-'));
after(() => rmSync(out, { recursive: true, force: true }));

const GUEST: GuestConfig = HANDLERS_GUEST;

function config(handler: string, guest: Partial<GuestConfig>, schedules: number): CampaignConfig {
  return {
    handler: example(handler),
    guest: { ...GUEST, ...guest },
    strategy: 'random',
    depth: 3,
    preemptions: 2,
    schedules,
    seed: 1,
    shard: { index: 0, count: 1 },
    keepGoing: false,
  };
}

/** A controlled model with one registered page, a faulting thread, and nothing run yet. */
function controlledGuest(features: string[] = []) {
  const backend = new ModelBackend();
  backend.kernel.controlled = true;
  const process = new Process(backend.self);
  const uffd = process.userfaultfd();
  uffd.api(features);
  const area = process.mmap({ length: 4 * 4096 });
  uffd.register({ start: area, length: 4 * 4096 }, UFFDIO_REGISTER_MODE_MISSING);
  const source = process.mmap({ length: 4096 });
  process.write(source, new Uint8Array(4096).fill(9));
  return { backend, kernel: backend.kernel, process, uffd, area, source };
}

describe('race windows under a controller', () => {
  it('a fault filled between queuing its message and userfaultfd_must_wait: the thread does not sleep, its unread message is gone', () => {
    const { kernel, process, uffd, area, source } = controlledGuest();
    const thread = process.thread([{ kind: 'read', address: area, length: 8 }]);
    const task = kernel.runnableTasks()[0]!;
    kernel.stepChosen(task); // the fault: message queued (__add_wait_queue), not yet asleep
    assert.equal(task.state, 'runnable');
    assert.equal(uffd.poll() & 1, 1, 'the message is visible to poll');
    uffd.copy({ dst: area, src: source, length: 4096 }); // fills and wakes the range before the thread sleeps
    kernel.stepChosen(task); // userfaultfd_must_wait: the pte is present
    assert.equal(uffd.readMessages().length, 0, 'the message left the queue unread');
    while (kernel.runnableTasks().length > 0) kernel.stepChosen(task);
    assert.equal(thread.result()?.reads[0]?.[0], 9);
  });

  it('a fault read by the handler, then must_wait: the thread sleeps and the handler is woken then', () => {
    const { kernel, process, uffd, area } = controlledGuest();
    process.thread([{ kind: 'read', address: area, length: 8 }]);
    const task = kernel.runnableTasks()[0]!;
    kernel.stepChosen(task);
    const [message] = uffd.readMessages();
    assert.equal(message?.event, 'pagefault');
    kernel.stepChosen(task);
    assert.equal(task.state, 'blocked', 'the page is still missing: it sleeps, its message already read');
  });

  it('EAGAIN persists after the REMOVE is read, until the thread inside madvise runs again; its zap comes a step later', () => {
    const { kernel, process, uffd, area, source } = controlledGuest(['event_remove']);
    uffd.copy({ dst: area, src: source, length: 4096 });
    const balloon = process.thread([{ kind: 'syscall', call: 'madvise', args: [area, 4096, MADV_DONTNEED] }]);
    const task = kernel.runnableTasks()[0]!;
    kernel.stepChosen(task); // queues REMOVE, sleeps in userfaultfd_event_wait_completion
    assert.equal(uffd.readMessages()[0]?.event, 'remove');
    const copyAgain = () => uffd.copy({ dst: area + 4096, src: source, length: 4096 });
    assert.throws(copyAgain, (error: unknown) => error instanceof KernelError && error.errno === EAGAIN);
    kernel.stepChosen(task); // the madvise thread runs: mmap_changing drops
    assert.equal(copyAgain(), 4096, 'mmap_changing dropped before the zap');
    assert.equal(process.backend.pagemap(area, 1)[0]?.present, true, 'not zapped yet');
    kernel.stepChosen(task); // the zap, and madvise returns
    assert.equal(process.backend.pagemap(area, 1)[0]?.present, false);
    while (kernel.runnableTasks().length > 0) kernel.stepChosen(task);
    assert.deepEqual(balloon.result()?.returns, [0]);
  });
});

describe('strategies', () => {
  it('one seed gives one schedule: decisions and deviations replay', async () => {
    const serve = await loadHandlerModule(example('careful'));
    const first = await runSchedule(serve, GUEST, new RandomStrategy(7));
    const second = await runSchedule(serve, GUEST, new RandomStrategy(7));
    assert.equal(first.kind, null);
    assert.deepEqual(second.deviations, first.deviations);
    assert.ok(first.deviations.length > 0);
    const replayed = await runSchedule(serve, GUEST, new ReplayStrategy(first.deviations));
    assert.equal(replayed.decisions, first.decisions);
  });

  it('the exhaustive search enumerates every schedule of a small guest within its preemption bound, and ends', async () => {
    const serve = await loadHandlerModule(example('careful'));
    const guest: GuestConfig = { ...GUEST, guestBytes: 2 * 4096, balloonPages: 0 };
    const search = new ExhaustiveSearch(1);
    const seen = new Set<string>();
    let runs = 0;
    while (!search.done && runs < 500) {
      const outcome = await runSchedule(serve, guest, search.strategy(), { recordDecisions: true });
      assert.equal(outcome.kind, null, outcome.message);
      seen.add(JSON.stringify(outcome.records.map((record) => record.chosen)));
      search.record(outcome.records);
      runs++;
    }
    assert.ok(search.done, `the search ended (${runs} runs)`);
    assert.equal(seen.size, runs, 'no schedule ran twice');
    assert.ok(runs > 3);
  });
});

describe('the examples', () => {
  const cases: Array<[string, Partial<GuestConfig>, string]> = [
    ['eagain-fatal', {}, 'handler-error'],
    ['retry-on-next-message', { deflatePages: 0 }, 'hang'],
    ['stale-after-remove', {}, 'wrong-bytes'],
    ['eexist-fatal', { pattern: 'random' }, 'handler-error'],
    ['eexist-no-wake', { pattern: 'random' }, 'hang'],
  ];
  for (const [name, guest, kind] of cases) {
    it(`${name}: explore finds a ${kind} within 300 schedules, and its replay file reproduces it`, async () => {
      const serve = await loadHandlerModule(example(name));
      const result = await runCampaign(serve, config(name, guest, 300), { outDir: out, workers: 1 });
      assert.equal(result.failures.length, 1, `${name}: no failure in ${result.schedules} schedules`);
      const failure = result.failures[0]!;
      assert.equal(failure.kind, kind, failure.message);
      const file = JSON.parse(readFileSync(failure.replay, 'utf8')) as ReplayFile;
      assert.equal(file.kind, kind);
      const again = await runSchedule(serve, file.guest, new ReplayStrategy(file.deviations));
      assert.equal(again.kind, kind, 'the replay fails the same way');
      assert.equal(again.message, failure.message);
    });
  }

  it('--inject passes through: an injected ENOMEM fails the careful handler, and the replay file carries the rates', async () => {
    const serve = await loadHandlerModule(example('careful'));
    const result = await runCampaign(serve, config('careful', { inject: { fail_page_alloc: 1 } }, 5), {
      outDir: out,
      workers: 1,
    });
    assert.equal(result.failures[0]?.kind, 'handler-error');
    assert.match(result.failures[0]!.message, /ENOMEM/);
    const file = JSON.parse(readFileSync(result.failures[0]!.replay, 'utf8')) as ReplayFile;
    assert.deepEqual(file.guest.inject, { fail_page_alloc: 1 });
    const again = await runSchedule(serve, file.guest, new ReplayStrategy(file.deviations));
    assert.equal(again.message, result.failures[0]!.message);
  });

  it('by default uses only the workers a campaign is long enough to pay for', () => {
    // A worker boots and JIT-compiles on its own (~1 s): a short campaign is faster inline.
    assert.equal(defaultWorkers({ schedules: 1000, kind: 'module' }, 2), 1);
    assert.equal(defaultWorkers({ schedules: 4999, kind: 'module' }, 2), 1);
    assert.equal(defaultWorkers({ schedules: 5000, kind: 'module' }, 2), 2);
    assert.equal(defaultWorkers({ schedules: 100_000, kind: 'module' }, 2), 2);
    assert.equal(defaultWorkers({ schedules: 7500, kind: 'module' }, 8), 3);
    // A binary's schedule costs ~10 module schedules: its workers pay for themselves sooner.
    assert.equal(defaultWorkers({ schedules: 200, kind: 'binary' }, 2), 1);
    assert.equal(defaultWorkers({ schedules: 300, kind: 'binary' }, 2), 2);
    assert.equal(defaultWorkers(undefined, 4), 4);
  });

  it('on two worker threads a seed gives the failures and replays of one thread, whatever finishes first', async () => {
    const serve = await loadHandlerModule(example('eagain-fatal'));
    const campaign = { ...config('eagain-fatal', {}, 40), seed: 3 };
    const one = await runCampaign(serve, campaign, { outDir: join(out, 'one'), workers: 1 });
    const two = await runCampaign(serve, campaign, { outDir: join(out, 'two'), workers: 2 });
    assert.equal(one.failures.length, 1, 'eagain-fatal fails within 40 schedules');
    assert.equal(two.workers, 2);
    const replay = (file: string) => {
      const { schedule, deviations, message } = JSON.parse(readFileSync(file, 'utf8')) as ReplayFile;
      return { schedule, deviations, message };
    };
    assert.equal(two.failures[0]?.schedule, one.failures[0]!.schedule, 'the lowest failing schedule');
    assert.deepEqual(replay(two.failures[0]!.replay), replay(one.failures[0]!.replay));
    const all = { ...campaign, keepGoing: true };
    const oneAll = await runCampaign(serve, all, { outDir: join(out, 'one'), workers: 1 });
    const twoAll = await runCampaign(serve, all, { outDir: join(out, 'two'), workers: 2 });
    assert.equal(twoAll.schedules, 40);
    assert.ok(oneAll.failures.length > 1);
    assert.deepEqual(
      twoAll.failures.map((f) => [f.schedule, f.kind, f.message]),
      oneAll.failures.map((f) => [f.schedule, f.kind, f.message]),
    );
    assert.equal(
      twoAll.perWorker.reduce((sum, w) => sum + w.schedules, 0),
      40,
    );
  });

  it('the careful handler passes 150 random and 50 PCT schedules with a balloon', async () => {
    const serve = await loadHandlerModule(example('careful'));
    const random = await runCampaign(serve, config('careful', {}, 150), { outDir: out, workers: 1 });
    assert.deepEqual(random.failures, []);
    assert.equal(random.schedules, 150);
    const pct = await runCampaign(
      serve,
      { ...config('careful', { pattern: 'random' }, 50), strategy: 'pct' },
      { outDir: out, workers: 1 },
    );
    assert.deepEqual(pct.failures, []);
  });
});

describe('faultline explore (command line)', () => {
  const run = (args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', main, 'explore', ...args], {
      encoding: 'utf8',
      timeout: 120_000,
    });

  it('exits 1 with the fixed JSON when a schedule fails, and --replay reproduces it', () => {
    const found = run([
      '--handler',
      example('eagain-fatal'),
      '--balloon',
      '8',
      '--schedules',
      '100',
      '--workers',
      '1',
      '--out',
      out,
      '--json',
    ]);
    assert.equal(found.status, 1, found.stderr);
    const document = JSON.parse(found.stdout) as {
      version: number;
      schedules: number;
      failures: Array<{ kind: string; replay: string }>;
    };
    assert.equal(document.version, 1);
    assert.equal(document.failures[0]?.kind, 'handler-error');
    const replay = run(['--replay', document.failures[0]!.replay]);
    assert.equal(replay.status, 1);
    assert.match(replay.stdout, /handler-error \(reproduced\)/);
  });

  it('exits 0 when every schedule passes, on two workers and a shard', () => {
    const passed = run([
      '--handler',
      example('careful'),
      '--balloon',
      '8',
      '--schedules',
      '40',
      '--workers',
      '2',
      '--shard',
      '1/2',
      '--json',
    ]);
    assert.equal(passed.status, 0, passed.stderr + passed.stdout);
    assert.equal((JSON.parse(passed.stdout) as { schedules: number }).schedules, 20);
  });

  it('by default, a shard gets the workers its own share of the schedules pays for', () => {
    // 5,000 schedules would get two workers; shard 0/2 runs 2,500 of them: one.
    const shard = run([
      '--handler',
      example('careful'),
      '--size',
      '16K',
      '--schedules',
      '5000',
      '--shard',
      '0/2',
      '--json',
    ]);
    assert.equal(shard.status, 0, shard.stderr + shard.stdout);
    const document = JSON.parse(shard.stdout) as { schedules: number; workers: number };
    assert.equal(document.schedules, 2500);
    assert.equal(document.workers, 1);
  });

  it('exits 2 on a usage error, naming the option', () => {
    const bad = run(['--handler', example('careful'), '--shard', '3/2']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--shard: '3\/2'/);
    const missing = run(['--handler', 'no/such/handler.ts']);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /no such file/);
  });
});

describe('a hang outside explore', () => {
  it("the README's API example without its handler says which thread sleeps on which fault, and exits 1", () => {
    const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
    const example = /## Using the API\s+```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(example !== undefined, 'the README has its API example');
    // The handler is the example's `for await` loop over uffd.events(): without it the guest waits.
    const withoutHandler = example
      .replace(/\nfor await [\s\S]*?\n\}\n/, '\n')
      // The package's own name resolves to its compiled dist/; the test runs the sources.
      .replace(/from 'faultline'/g, "from './src/api/index.ts'");
    assert.notEqual(withoutHandler, example);
    const file = fileURLToPath(new URL(`../.hang-example-${process.pid}.ts`, import.meta.url));
    writeFileSync(file, withoutHandler);
    try {
      const run = spawnSync(process.execPath, ['--import', 'tsx', file], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(run.status, 1, run.stderr);
      assert.match(run.stderr, /nothing left to run can wake it/);
      assert.match(
        run.stderr,
        /\(tid 1, pid 1\) sleeps on a read fault at 0x[0-9a-f]+ on userfaultfd \d+ \(fd \d+ of pid 1\): its message was never read/,
      );
    } finally {
      rmSync(file, { force: true });
    }
  });
});
