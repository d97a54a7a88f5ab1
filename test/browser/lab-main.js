// runLab with browserCrossThreadRunner() as a page using the built package gets it: the default
// workers load dist/browser/lab-worker.js next to the runner module. Publishes window.__result.
import { runLab, browserCrossThreadRunner } from '/dist/index.js';

async function main() {
  const xr = await browserCrossThreadRunner();
  try {
    const r = await runLab({
      sweep: { mode: ['wait', 'poll'], layout: ['split', 'packed'], batch: [16] }, chains: 1000, rounds: 2, crossThread: xr.runner,
    });
    return r.results.map((p) => ({ label: p.label, mode: p.point.mode, layout: p.point.layout, mdps: p.mdps.median, kicks: p.kicksPerDesc.median, calls: p.callsPerDesc.median }));
  } finally {
    xr.close();
  }
}

main().then(
  (results) => { window.__result = { ok: true, results }; },
  (e) => { window.__result = { ok: false, error: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) }; },
);
