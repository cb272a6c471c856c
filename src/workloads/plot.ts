/**
 * A picture of a workload run: faults over time and address, and the fault
 * latency histogram, drawn with vega-lite and rendered headless to SVG (or
 * PNG through resvg).
 */
import { writeFileSync } from 'node:fs';
import type * as vegaLite from 'vega-lite';
import type { WorkloadStats } from './stats.ts';

const MAX_POINTS = 20_000;

export function plotSpec(stats: WorkloadStats, title: string): vegaLite.TopLevelSpec {
  const step = Math.max(1, Math.ceil(stats.samples.length / MAX_POINTS));
  // The histogram shows the bulk of the distribution; the rare outliers are in the summary's max.
  const p99 = stats.latencyPercentiles().p99;
  const extent = Math.max(1, Math.ceil(p99 * 1.5));
  const points = stats.samples
    .filter((_, i) => i % step === 0)
    .map((sample) => ({
      timeMs: Math.round((sample.atMs - stats.startedMs) * 1000) / 1000,
      page: sample.page,
      kind: sample.kind,
      latencyUs: Math.round(sample.latencyUs * 10) / 10,
    }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    data: { values: points },
    config: { font: 'DejaVu Sans', background: 'white' },
    hconcat: [
      {
        title: 'Faults over time and address',
        width: 420,
        height: 280,
        mark: { type: 'point', filled: true, size: 6, opacity: 0.6 },
        encoding: {
          x: { field: 'timeMs', type: 'quantitative', title: 'time since start (ms)' },
          y: { field: 'page', type: 'quantitative', title: 'guest page' },
          color: { field: 'kind', type: 'nominal', title: 'fault' },
        },
      },
      {
        title: `Fault latency (receive → page present), up to 1.5 × p99`,
        width: 320,
        height: 280,
        transform: [{ filter: `datum.latencyUs <= ${extent}` }],
        mark: 'bar',
        encoding: {
          x: {
            field: 'latencyUs',
            type: 'quantitative',
            bin: { maxbins: 40, extent: [0, extent] },
            title: 'latency (µs)',
          },
          y: {
            aggregate: 'count',
            type: 'quantitative',
            title: step === 1 ? 'faults' : `faults (1 in ${step} sampled)`,
          },
        },
      },
    ],
  };
}

export async function renderPlot(stats: WorkloadStats, title: string, file: string): Promise<void> {
  // vega is large: it loads only when a plot is asked for, so the rest of the CLI starts fast.
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const compiled = compile(plotSpec(stats, title)).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  if (file.endsWith('.svg')) {
    writeFileSync(file, svg);
    return;
  }
  if (!file.endsWith('.png')) throw new Error(`--plot: ${file}: the file must end in .svg or .png`);
  const { Resvg } = await import('@resvg/resvg-js');
  const png = new Resvg(svg, { fitTo: { mode: 'zoom', value: 2 }, background: 'white' }).render().asPng();
  writeFileSync(file, png);
}
