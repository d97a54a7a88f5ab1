// The ring lab on the page: same-thread points run in this thread (one point at a time, so the
// page repaints between points); cross-thread points run in two Web Workers through the
// package's browserCrossThreadRunner (src/browser/lab-runner.ts), whose worker script the page
// bundles as lab-worker.js.

import { runLab, expandSweep, labEnvironment, browserCrossThreadRunner, type LabPoint, type LabResult, type LabSweep } from '../src/index.ts';

/** Options of {@link runPageLab}. */
export interface PageLabOptions {
  sweep: Partial<LabSweep>;
  rounds: number;
  chains: number;
  onProgress: (done: number, total: number, pt: LabPoint | null) => void;
}

/**
 * Runs a sweep point by point (yielding to the page between points) and returns one result,
 * as runLab would for the whole sweep.
 */
export async function runPageLab(o: PageLabOptions): Promise<LabResult> {
  const points = expandSweep(o.sweep);
  const cross = points.some((pt) => pt.mode !== 'same-thread');
  const xr = cross
    ? await browserCrossThreadRunner({ createWorker: (name) => new Worker(new URL('./lab-worker.js', import.meta.url), { type: 'module', name }) })
    : null;
  const env = { ...labEnvironment(), shared: cross };
  try {
    let out: LabResult | null = null;
    for (let i = 0; i < points.length; i++) {
      const pt = points[i]!;
      o.onProgress(i, points.length, pt);
      await new Promise((r) => setTimeout(r, 0)); // let the progress line paint
      const single = Object.fromEntries(Object.entries(pt).map(([k, v]) => [k, [v]])) as unknown as LabSweep;
      const r = await runLab({ sweep: single, rounds: o.rounds, chains: o.chains, env, ...(xr ? { crossThread: xr.runner } : {}) });
      if (!out) out = { ...r, sweep: o.sweep, results: [] };
      out.results.push(...r.results);
    }
    o.onProgress(points.length, points.length, null);
    return out!;
  } finally {
    xr?.close();
  }
}
