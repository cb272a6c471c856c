// Seeded fault injection (src/model/inject.ts): per point, the kernel's errno or signal reaches the
// caller and the invariants hold (checked after every pump and at the end); a run replays from its seed.
//
// Each case maps one region registered MISSING and faults it from a thread:
//   area: [ page 0 | page 1 | ... ]   anonymous private, MISSING
//   src:  a private buffer the handler copies from (written before injection is switched on)

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ThreadAccess } from '../src/api/backend.ts';
import type { Uffd } from '../src/api/process.ts';
import {
  describeInjections,
  FaultInjector,
  INJECTION_POINTS,
  type InjectionRates,
  parseInjection,
} from '../src/model/inject.ts';
import { SIGBUS } from '../src/uapi/constants.ts';
import { KernelError } from '../src/uapi/errno.ts';
import type { UffdMsg } from '../src/uapi/structs.ts';
import { createTestModel, expectErrno, filled, PAGE, type TestModel } from './helpers.ts';

const EFAULT = 14;
const ENOMEM = 12;
const EEXIST = 17;
const MISSING = 1;

interface Setup extends TestModel {
  readonly uffd: Uffd;
  readonly area: number;
  readonly src: number;
}

function setup(pages: number, options: { seed?: number; inject?: InjectionRates } = {}): Setup {
  const model = createTestModel(options);
  const { process } = model;
  const area = process.mmap({ length: pages * PAGE });
  const src = process.mmap({ length: pages * PAGE });
  for (let page = 0; page < pages; page++) process.write(src + page * PAGE, filled(PAGE, 0x40 + page));
  const uffd = process.userfaultfd({ nonblock: true });
  uffd.api();
  uffd.register({ start: area, length: pages * PAGE }, MISSING);
  return { ...model, uffd, area, src };
}

/** The address of a page-fault message. */
function at(message: UffdMsg | undefined): number {
  assert.equal(message?.event, 'pagefault');
  return Number((message as UffdMsg & { event: 'pagefault' }).address);
}

function reading(area: number, pages: number, kernel = false): ThreadAccess[] {
  return Array.from({ length: pages }, (_, page) => ({
    kind: 'read',
    address: area + page * PAGE,
    length: 8,
    kernel,
  }));
}

describe('fault injection', () => {
  it('is off by default: nothing draws, nothing is injected', async () => {
    const model = setup(1);
    const injector = model.backend.kernel.injector;
    assert.equal(injector.active, false);
    const thread = model.process.thread(reading(model.area, 1));
    const [message] = await model.uffd.nextMessages();
    model.uffd.copy({ dst: at(message), src: model.src, length: PAGE });
    assert.equal((await thread.join()).state, 'done');
    assert.deepEqual(injector.report().counts, { fail_page_alloc: 0, fail_usercopy: 0, fault_signal: 0 });
    model.check();
  });

  it('fail_page_alloc: UFFDIO_COPY and pwrite return ENOMEM, an anonymous write fault raises SIGBUS', async () => {
    const model = setup(2);
    const memfd = model.process.memfd('inject', { size: PAGE });
    const thread = model.process.thread(reading(model.area, 1));
    const [message] = await model.uffd.nextMessages();
    model.backend.kernel.injector.set('fail_page_alloc', 1);
    const error = expectErrno(
      () => model.uffd.copy({ dst: at(message), src: model.src, length: PAGE }),
      ENOMEM,
    );
    assert.match(error.message, /UFFDIO_COPY/);
    model.check();
    expectErrno(() => model.process.pwrite(memfd, filled(16, 1), 0), ENOMEM);
    // A fault that needs a new page cannot get one: SIGBUS at the address (the model's VM_FAULT_OOM).
    const fresh = model.process.mmap({ length: PAGE });
    const faulting = await model.process
      .thread([{ kind: 'write', address: fresh, data: filled(1, 1) }])
      .join();
    assert.equal(faulting.state, 'sigbus');
    assert.equal(faulting.signal?.signal, SIGBUS);
    assert.equal(faulting.signal?.address, fresh);
    // Switched off, the handler's retry succeeds and the sleeping reader finishes.
    model.backend.kernel.injector.set('fail_page_alloc', 0);
    model.uffd.copy({ dst: at(message), src: model.src, length: PAGE });
    const result = await thread.join();
    assert.deepEqual([...result.reads[0]!], [...filled(8, 0x40)]);
    const report = model.backend.kernel.injector.report();
    assert.equal(report.counts.fail_page_alloc, 3);
    assert.equal(report.injections[0]!.point, 'fail_page_alloc');
    model.check();
  });

  it('fail_usercopy: UFFDIO_COPY fails with EFAULT (source present or not), a kernel-mode access gets EFAULT', async () => {
    const model = setup(3);
    const thread = model.process.thread(reading(model.area, 1));
    const [message] = await model.uffd.nextMessages();
    model.backend.kernel.injector.set('fail_usercopy', 1);
    const present = expectErrno(
      () => model.uffd.copy({ dst: at(message), src: model.src, length: PAGE }),
      EFAULT,
    );
    assert.match(
      present.message,
      /copy_from_user of the source at 0x[0-9a-f]+ failed \(injected fail_usercopy\)/,
    );
    // A source with no page yet is read through the fault path: the same copy_from_user fails.
    const hole = model.process.mmap({ length: PAGE });
    expectErrno(() => model.uffd.copy({ dst: at(message), src: hole, length: PAGE }), EFAULT);
    model.check();
    // A syscall's copy_to_user into user memory (a kernel-mode write) fails: EFAULT, no signal.
    const kernelWrite = await model.process
      .thread([{ kind: 'write', address: model.src, data: filled(4, 9), kernel: true }])
      .join();
    assert.equal(kernelWrite.state, 'done');
    assert.equal(kernelWrite.errno, EFAULT);
    model.backend.kernel.injector.set('fail_usercopy', 0);
    model.uffd.copy({ dst: at(message), src: model.src, length: PAGE });
    assert.equal((await thread.join()).state, 'done');
    assert.deepEqual(model.backend.kernel.injector.report().counts, {
      fail_page_alloc: 0,
      fail_usercopy: 3,
      fault_signal: 0,
    });
    model.check();
  });

  it('fault_signal: the thread wakes after its message was read and faults again, a second message', async () => {
    const model = setup(1);
    const injector = model.backend.kernel.injector;
    const thread = model.process.thread(reading(model.area, 1));
    await model.backend.settle();
    injector.set('fault_signal', 1);
    const [first] = model.uffd.readMessages();
    assert.equal(at(first), model.area);
    await model.backend.settle();
    injector.set('fault_signal', 0);
    // The retried access found the page still missing: the handler hears of the same fault again.
    const [second] = model.uffd.readMessages();
    assert.equal(at(second), model.area);
    model.uffd.copy({ dst: model.area, src: model.src, length: PAGE });
    const result = await thread.join();
    assert.equal(result.state, 'done');
    assert.equal(result.faults, 2);
    assert.deepEqual([...result.reads[0]!], [...filled(8, 0x40)]);
    // A handler that resolves both messages meets EEXIST on the second: the page is already there.
    expectErrno(() => model.uffd.copy({ dst: model.area, src: model.src, length: PAGE }), EEXIST);
    assert.deepEqual(injector.report().injections, [
      { point: 'fault_signal', site: `tid ${thread.tid} asleep on`, address: model.area },
    ]);
    model.check();
  });

  it('fault_signal: a kernel-mode fault sleeps killable and is not interrupted', async () => {
    const model = setup(1, { inject: { fault_signal: 1 } });
    const thread = model.process.thread(reading(model.area, 1, true));
    const [message] = await model.uffd.nextMessages();
    await model.backend.settle();
    assert.deepEqual(model.uffd.readMessages(), []);
    model.uffd.copy({ dst: at(message), src: model.src, length: PAGE });
    const result = await thread.join();
    assert.equal(result.faults, 1);
    assert.equal(model.backend.kernel.injector.report().counts.fault_signal, 0);
    model.check();
  });

  it('replays from the seed: the same seed injects the same faults at the same places', async () => {
    async function run(seed: number) {
      const pages = 32;
      const model = setup(pages, { seed });
      model.backend.kernel.injector.set('fail_usercopy', 0.3);
      model.backend.kernel.injector.set('fault_signal', 0.3);
      const thread = model.process.thread(reading(model.area, pages));
      const outcomes: string[] = [];
      let resolved = 0;
      while (resolved < pages) {
        const messages = await model.uffd.nextMessages();
        for (const message of messages) {
          const page = (at(message) - model.area) / PAGE;
          try {
            model.uffd.copy({ dst: at(message), src: model.src + page * PAGE, length: PAGE });
            outcomes.push(`copy ${page}`);
            resolved++;
          } catch (error) {
            if (!(error instanceof KernelError)) throw error;
            outcomes.push(`${error.code} ${page}`);
            if (error.errno === EEXIST) resolved++;
            if (error.errno === EFAULT) model.uffd.wake({ start: at(message), length: PAGE });
          }
        }
      }
      const result = await thread.join();
      assert.equal(result.state, 'done');
      model.check();
      return { outcomes, report: model.backend.kernel.injector.report() };
    }
    const first = await run(7);
    const again = await run(7);
    const other = await run(8);
    assert.ok(
      first.report.counts.fail_usercopy > 0 && first.report.counts.fault_signal > 0,
      describeInjections(first.report),
    );
    assert.deepEqual(again, first);
    assert.notDeepEqual(other.report.injections, first.report.injections);
  });

  it('parses NAME:RATE and refuses unknown names and rates outside (0, 1]', () => {
    assert.deepEqual(parseInjection('fail_usercopy:0.25'), ['fail_usercopy', 0.25]);
    assert.deepEqual(parseInjection('fault_signal:5%'), ['fault_signal', 0.05]);
    assert.throws(
      () => parseInjection('fail_slab:0.1'),
      /unknown injection point 'fail_slab' \(fail_page_alloc, fail_usercopy, fault_signal\)/,
    );
    assert.throws(() => parseInjection('fail_usercopy:2'), /the rate must lie in \(0, 1\]/);
    assert.throws(() => parseInjection('fail_usercopy'), /expected NAME:RATE/);
    assert.throws(
      () => new FaultInjector(1, { nonsense: 1 } as InjectionRates),
      /unknown injection point 'nonsense'/,
    );
    assert.equal(INJECTION_POINTS.length, 3);
  });
});

describe('--inject on the command line', () => {
  it('faultline run reports what it injected and replays with the same rates', async () => {
    const { runCommand } = await import('../src/cli/run.ts');
    const lines: string[] = [];
    const options = {
      backend: 'model' as const,
      json: true,
      seed: 3,
      keepGoing: false,
      inject: { fail_usercopy: 1 },
      out: (line: string) => lines.push(line),
    };
    const exit = await runCommand('scenarios/copy/eexist.yaml', options);
    assert.equal(exit, 1);
    const document = JSON.parse(lines.join('\n'));
    const [report] = document.scenarios;
    assert.match(report.reason, /expected success, got EFAULT/);
    assert.equal(report.injections.counts.fail_usercopy, 1);
    assert.equal(report.injections.injections[0].site, 'UFFDIO_COPY source');
    assert.match(report.replay, / --seed 3 --inject fail_usercopy:1$/);
    // Without injection the same scenario passes: the failure was the injected one.
    assert.equal(await runCommand('scenarios/copy/eexist.yaml', { ...options, inject: {} }), 0);
  });
});
