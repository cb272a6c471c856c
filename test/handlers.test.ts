/**
 * Handlers users bring (HANDLERS.md §1): the module loader, the session on
 * both backends, the built-in handler as one such module, and model time
 * (a handler's sleep costs no wall time and replays).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ModelBackend } from '../src/api/model-backend.ts';
import builtin from '../src/handlers/builtin.ts';
import { loadHandlerModule } from '../src/handlers/load.ts';
import type { Serve } from '../src/handlers/session.ts';
import { hostUnavailable } from '../src/host/capabilities.ts';
import { HostBackend } from '../src/host/host-backend.ts';
import { Trace } from '../src/trace/trace.ts';
import { HandlerError, runSnapshotRestore } from '../src/workloads/snapshot-restore.ts';

const fixture = (name: string): string =>
  fileURLToPath(new URL(`./fixtures/handlers/${name}`, import.meta.url));
const example = (name: string): string =>
  fileURLToPath(new URL(`../examples/handlers/${name}`, import.meta.url));

function restore(backend: ModelBackend | HostBackend, handler: Serve, balloonPages = 8) {
  return runSnapshotRestore({
    backend,
    mode: 'anon',
    guestBytes: 64 * 4096,
    vcpus: 2,
    pattern: 'random',
    seed: 3,
    handler,
    prefetchWindow: 0,
    balloonPages,
    trace: new Trace(1, false),
  });
}

describe('handler modules', () => {
  it('the loader names the file and what is wrong with it', async () => {
    await assert.rejects(
      loadHandlerModule('no/such/handler.ts'),
      /--handler no\/such\/handler.ts: no such file/,
    );
    await assert.rejects(loadHandlerModule(fixture('no-default.mjs')), /no default export/);
    await assert.rejects(
      loadHandlerModule(fixture('not-a-function.mjs')),
      /default export is a number, not a function/,
    );
  });

  it('a module handler serves the guest on the model, balloon included, and every read is right', async () => {
    const serve = await loadHandlerModule(example('careful.ts'));
    const result = await restore(new ModelBackend({ seed: 5 }), serve);
    assert.deepEqual(result.wrongReads, []);
    assert.equal(result.verifiedPages, result.pages);
    assert.equal(result.threads.length, 3, 'two vCPUs and the balloon');
  });

  it('the built-in handler is such a module too', async () => {
    const serve = await loadHandlerModule(
      fileURLToPath(new URL('../src/handlers/builtin.ts', import.meta.url)),
    );
    assert.equal(typeof serve, 'function');
    const result = await restore(new ModelBackend({ seed: 5 }), builtin);
    assert.deepEqual(result.wrongReads, []);
    assert.equal(result.verifiedPages, result.pages);
  });

  it('a handler that throws is reported as such', async () => {
    const failing: Serve = async (session) => {
      await session.poll();
      throw new Error('boom');
    };
    await assert.rejects(restore(new ModelBackend(), failing, 0), (error: unknown) => {
      assert.ok(error instanceof HandlerError);
      assert.match(error.message, /the handler threw: boom/);
      return true;
    });
  });
});

describe('model time', () => {
  it("a handler's sleep advances the model's clock, not the wall clock, and blocked time replays", async () => {
    const serve = await loadHandlerModule(fixture('sleepy.ts'));
    const wallStart = performance.now();
    const first = await restore(new ModelBackend({ seed: 9 }), serve);
    const second = await restore(new ModelBackend({ seed: 9 }), serve);
    assert.ok(performance.now() - wallStart < 10_000, 'two 10 s sleeps took no wall time');
    const blocked = first.threads.slice(0, 2).map((thread) => thread.blockedMs!);
    assert.ok(
      blocked.some((ms) => ms >= 10_000),
      `a vCPU slept through the handler's 10 s: ${blocked}`,
    );
    assert.deepEqual(
      second.threads.map((thread) => thread.blockedMs),
      first.threads.map((thread) => thread.blockedMs),
    );
  });
});

describe('handler modules on the host kernel', { skip: hostUnavailable() }, () => {
  it('the same module serves the guest on the host, the uffd passed over SCM_RIGHTS', async () => {
    const serve = await loadHandlerModule(example('careful.ts'));
    const result = await restore(new HostBackend(), serve);
    assert.deepEqual(result.wrongReads, []);
    assert.equal(result.verifiedPages, result.pages);
  });
});
