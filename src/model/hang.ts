/**
 * Who waits on what: the report for a run in which some simulated thread
 * can never finish — it sleeps on a fault (or in a syscall until its events
 * are read) and nothing still able to run will wake it. Explore prints it
 * for a `hang`, and the model backend when a program's event loop empties
 * with such a thread (HANDLERS.md §4).
 */
import type { ModelKernel } from './kernel.ts';
import type { UffdContext } from './uffd/context.ts';

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

/** The descriptors that refer to `ctx`, as "fd 3 of pid 2". */
function uffdNames(kernel: ModelKernel, ctx: UffdContext): string {
  const names: string[] = [];
  for (const process of kernel.processes.values()) {
    for (const [fd, file] of process.fds) {
      if (file.kind === 'uffd' && file.uffd.ctx === ctx) names.push(`fd ${fd} of pid ${process.pid}`);
    }
  }
  return `userfaultfd ${ctx.id}${names.length > 0 ? ` (${names.join(', ')})` : ' (no descriptor left open)'}`;
}

/** One line per unfinished simulated thread, then one per userfaultfd with something queued. */
export function describeSleepers(kernel: ModelKernel): string[] {
  const lines: string[] = [];
  const contexts = new Set<UffdContext>();
  for (const process of kernel.processes.values()) {
    for (const task of process.tasks) {
      if (task.finished) continue;
      const who = `${task.name || 'thread'} (tid ${task.tid}, pid ${process.pid})`;
      const waiter = task.waiter;
      if (waiter !== null) {
        const ctx = waiter.context;
        contexts.add(ctx);
        const read = ctx.read.some((candidate) => candidate.task === task);
        const kind = waiter.flags & 4 ? 'minor' : waiter.flags & 1 ? 'write' : 'read';
        lines.push(
          `${who} sleeps on a ${kind} fault at ${hex(waiter.address)} on ${uffdNames(kernel, ctx)}: ` +
            `its message was ${read ? 'read, and the page was never filled nor the thread woken' : 'never read'}`,
        );
      } else if (task.state === 'blocked' && task.current?.kind === 'syscall') {
        lines.push(`${who} sleeps in ${task.current.call}() until the userfaultfd events it raised are read`);
      } else {
        lines.push(`${who} is ${task.state}`);
      }
    }
  }
  for (const ctx of contexts) {
    const queued = ctx.pending.length + ctx.events.length;
    if (queued > 0 || ctx.mmapChanging > 0) {
      lines.push(
        `${uffdNames(kernel, ctx)}: ${ctx.pending.length} fault and ${ctx.events.length} event message(s) unread` +
          (ctx.mmapChanging > 0 ? `; fill ioctls fail with EAGAIN: ${ctx.changingReason()}` : ''),
      );
    }
  }
  return lines;
}

/** Whether some simulated thread sleeps on a userfaultfd fault or event. */
export function hasSleepers(kernel: ModelKernel): boolean {
  for (const process of kernel.processes.values()) {
    for (const task of process.tasks) if (!task.finished && task.state === 'blocked') return true;
  }
  return false;
}
