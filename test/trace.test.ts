// Traces: microseconds with nanosecond fractions (spans nest as they ran, none pokes out of its
// parent), a flow per fault from the vCPU's sleep through the handler's read and ioctl to the
// wake, process_name metadata, and a streamed writer that caps the events it keeps and says so.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Trace, type TraceEvent } from '../src/trace/trace.ts';

const bin = fileURLToPath(new URL('../bin/faultline.js', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'faultline-trace-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Integer nanoseconds, as a trace viewer reads the microseconds. */
const ns = (us: number) => Math.round(us * 1000);

/** Pairs of spans on one thread that overlap without one containing the other. */
function misnested(events: readonly TraceEvent[]): string[] {
  const byThread = new Map<string, TraceEvent[]>();
  for (const event of events) {
    if (event.ph !== 'X') continue;
    const key = `${event.pid}/${event.tid}`;
    byThread.set(key, [...(byThread.get(key) ?? []), event]);
  }
  const problems: string[] = [];
  for (const [thread, spans] of byThread) {
    spans.sort((a, b) => ns(a.ts) - ns(b.ts) || ns(b.dur!) - ns(a.dur!));
    const open: TraceEvent[] = [];
    for (const span of spans) {
      while (open.length > 0 && ns(open.at(-1)!.ts + open.at(-1)!.dur!) <= ns(span.ts)) open.pop();
      const parent = open.at(-1);
      if (parent !== undefined && ns(span.ts + span.dur!) > ns(parent.ts + parent.dur!)) {
        problems.push(`${thread}: ${span.name}@${span.ts} ends after its parent ${parent.name}@${parent.ts}`);
      }
      open.push(span);
    }
  }
  return problems;
}

/** Whether a flow point at `ts` on `tid` lies inside some span there. */
function insideSpan(events: readonly TraceEvent[], tid: number, ts: number): boolean {
  return events.some(
    (e) => e.ph === 'X' && e.tid === tid && ns(e.ts) <= ns(ts) && ns(ts) <= ns(e.ts + e.dur!),
  );
}

describe('the trace of a model restore', () => {
  const file = join(scratch, 'restore.json');
  const run = spawnSync(
    process.execPath,
    [
      bin,
      'workload',
      'snapshot-restore',
      '--mode',
      'gmem-minor',
      '--size',
      '8M',
      '--vcpus',
      '2',
      '--trace',
      file,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );

  it('is one JSON document with the process named and fractional microseconds', () => {
    assert.equal(run.status, 0, run.stderr);
    const trace = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[]; otherData: object };
    const events = trace.traceEvents;
    const processName = events.find((e) => e.ph === 'M' && e.name === 'process_name');
    assert.equal(processName?.args?.name, 'faultline snapshot-restore gmem-minor (model)');
    assert.ok(events.some((e) => e.ph === 'M' && e.name === 'thread_name' && e.args?.name === 'vcpu0'));
    assert.ok(
      events.filter((e) => e.ph === 'X').some((e) => !Number.isInteger(e.ts)),
      'no fractional ts',
    );
    assert.deepEqual(misnested(events), []);
    assert.equal('capped' in trace.otherData, false);
  });

  it('links each fault: blocked (start) -> read(uffd) -> the ioctl -> blocked (end, the wake)', () => {
    const events = (JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[] }).traceEvents;
    const flows = new Map<number, TraceEvent[]>();
    for (const event of events) {
      if (event.ph === 's' || event.ph === 't' || event.ph === 'f') {
        flows.set(event.id!, [...(flows.get(event.id!) ?? []), event]);
      }
    }
    const faults = events.filter((e) => e.ph === 'i' && e.name === 'fault').length;
    assert.ok(faults > 0);
    const complete = [...flows.values()].filter(
      (flow) =>
        flow.map((e) => e.ph).join('') === 'sftt' ||
        flow
          .map((e) => e.ph)
          .sort()
          .join('') === 'fstt',
    );
    assert.ok(complete.length >= faults * 0.9, `${complete.length} complete flows for ${faults} faults`);
    for (const flow of complete) {
      const [start, step1, step2, end] = [...flow].sort(
        (a, b) => a.ts - b.ts || 'sttf'.indexOf(a.ph) - 'sttf'.indexOf(b.ph),
      );
      assert.deepEqual([start!.ph, step1!.ph, step2!.ph, end!.ph], ['s', 't', 't', 'f']);
      assert.equal(end!.bp, 'e');
      assert.equal(start!.tid, end!.tid, 'the vCPU that slept is the one woken');
      for (const point of flow)
        assert.ok(insideSpan(events, point.tid, point.ts), `${point.ph} outside any span`);
      // The handler's steps bind to its read(uffd) span, then to the ioctl's span.
      const read = events.find(
        (e) => e.ph === 'X' && e.tid === step1!.tid && e.ts <= step1!.ts && step1!.ts <= e.ts + e.dur!,
      );
      assert.equal(read?.name, 'read(uffd)');
      const ioctl = events.find(
        (e) => e.ph === 'X' && e.tid === step2!.tid && e.ts <= step2!.ts && step2!.ts <= e.ts + e.dur!,
      );
      assert.match(ioctl?.name ?? '', /UFFDIO_CONTINUE$/);
    }
  });
});

describe('a streamed trace', () => {
  it('writes events as they come, keeps at most eventsMax and says how many it dropped', () => {
    const file = join(scratch, 'capped.json');
    const trace = new Trace(7, true, { file, eventsMax: 10 });
    trace.nameProcess('capped');
    const t0 = performance.now();
    for (let i = 0; i < 25; i++)
      trace.span({ name: `span ${i}`, cat: 'test', tid: 1, startMs: t0 + i, endMs: t0 + i + 0.5 });
    assert.equal(trace.write(file, { run: 'x' }), 15);
    const written = JSON.parse(readFileSync(file, 'utf8')) as {
      traceEvents: TraceEvent[];
      otherData: Record<string, unknown>;
    };
    assert.equal(written.traceEvents.filter((e) => e.ph === 'X').length, 10);
    assert.equal(written.traceEvents.at(-1)?.name, 'process_name');
    assert.equal(written.otherData.run, 'x');
    assert.match(
      String(written.otherData.capped),
      /only the first 10 events are kept; 15 later ones were dropped/,
    );
  });
});
