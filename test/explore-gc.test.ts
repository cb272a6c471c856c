/**
 * A finished schedule's model must be garbage for the young-generation GC
 * too. When an old-generation object that died with the run still pointed
 * at its young objects (a closure V8 allocated old, a pretenured promise
 * left pending), every scavenge kept the whole model and promoted it, and
 * the full GCs that freed it cost a campaign a second core. Memory, not
 * time, is asserted: what survives a minor GC after a batch of schedules.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { type GuestConfig, runSchedule } from '../src/explore/run.ts';
import { RandomStrategy } from '../src/explore/strategy.ts';
import { loadHandlerModule } from '../src/handlers/load.ts';
import { HANDLERS_GUEST } from './helpers.ts';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as (options?: { type: 'minor' | 'major' }) => void;

const careful = fileURLToPath(new URL('../examples/handlers/careful.ts', import.meta.url));
const guest: GuestConfig = HANDLERS_GUEST;

function youngBytes(): number {
  return v8.getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')!.space_used_size;
}

describe('explore and the garbage collector', () => {
  it('a finished schedule leaves (almost) nothing a young-generation GC keeps', async () => {
    const serve = await loadHandlerModule(careful);
    // Warm: the JIT has compiled the path, and V8 has made its pretenuring decisions.
    for (let i = 0; i < 300; i++) await runSchedule(serve, guest, new RandomStrategy(i));
    await new Promise((resolve) => setImmediate(resolve));
    gc({ type: 'minor' });
    gc({ type: 'minor' });
    const before = youngBytes();
    const runs = 20;
    for (let i = 0; i < runs; i++) {
      const outcome = await runSchedule(serve, guest, new RandomStrategy(1000 + i));
      assert.equal(outcome.kind, null, outcome.message);
    }
    gc({ type: 'minor' });
    const perSchedule = (youngBytes() - before) / runs;
    // A schedule's model is ~80 KB; when one was kept, all were. 2-3 KB stay (caches, the last run's result).
    assert.ok(
      perSchedule < 16 * 1024,
      `${Math.round(perSchedule)} bytes of each finished schedule survived a young-generation GC`,
    );
  });
});
