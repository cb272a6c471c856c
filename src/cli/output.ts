/** Terminal output helpers: a progress bar on TTYs, aligned tables. */

export class Progress {
  private lastDraw = 0;
  private readonly started = performance.now();
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly enabled: boolean,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  /** Redraws at most every 100 ms, and only after the first second. */
  update(done: number, total: number): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.started < 1000 && done < total) return;
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    const width = 30;
    const filled = Math.round((done / Math.max(1, total)) * width);
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    const percent = ((done / Math.max(1, total)) * 100).toFixed(0).padStart(3);
    this.stream.write(`\r${this.label} ${bar} ${percent}% ${done}/${total}`);
    this.drawn = true;
  }

  finish(): void {
    if (this.drawn) this.stream.write('\n');
  }
}

export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '),
    )
    .join('\n');
}
