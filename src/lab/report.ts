// The ring lab's outputs: a readable table, CSV and JSON for notebooks, charts as standalone SVG
// or an HTML page (throughput and notifications per descriptor against the swept x, one line per
// design), and `compare`, which puts two result files side by side with ratios. Pure functions
// of a LabResult: the same code draws the browser page's charts.

import { VirtioError, Code } from '../errors.ts';
import { designLabel, varyingKeys, type LabPoint } from './sweep.ts';
import type { LabResult, LabPointResult } from './lab.ts';

const f = (v: number, d = 2): string => (Number.isFinite(v) ? v.toFixed(d) : '-');

/** Pads columns into an aligned text table (first column left, the rest right). */
export function textTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

/** The result as a table: one row per point, medians with [min–max] spread, ratios, latency. */
export function formatTable(r: LabResult): string {
  const keys = varyingKeys(r.results.map((x) => x.point));
  const bases = [...new Set(r.results.flatMap((x) => Object.keys(x.ratios)))];
  const lat = r.results.some((x) => x.latency);
  const head = ['point', 'M desc/s', 'spread', 'ns/desc', 'kicks/desc', 'calls/desc', ...bases.map((b) => `× ${b}`), ...(lat ? ['p50 µs', 'p99 µs'] : [])];
  const rows = r.results.map((x) => [
    keys.length ? designLabel(x.point, keys) : x.label,
    f(x.mdps.median), `${f(x.mdps.min)}–${f(x.mdps.max)}`, f(x.nsPerDesc.median, 1),
    f(x.kicksPerDesc.median, 4), f(x.callsPerDesc.median, 4),
    ...bases.map((b) => (x.ratios[b] === undefined ? '' : `${f(x.ratios[b]!)}×`)),
    ...(lat ? [x.latency ? f(x.latency.p50, 1) : '', x.latency ? f(x.latency.p99, 1) : ''] : []),
  ]);
  const e = r.env;
  return [
    `ring lab: ${r.results.length} points × ${r.rounds} rounds × ${r.chains} chains, seed ${r.seed}`,
    `${e.runtime} · ${e.os} · ${e.cpu} × ${e.cpus} · load ${e.load >= 0 ? f(e.load) : 'n/a'} · build ${e.simd ? 'SIMD' : 'plain'}${e.shared ? ', shared' : ''} · ${e.date}`,
    `fixed:${commonText(r.results[0]!.point, keys)}`,
    '',
    textTable(head, rows),
  ].join('\n');
}

function commonText(p: LabPoint, vary: readonly (keyof LabPoint)[]): string {
  const fixed = (Object.keys(p) as (keyof LabPoint)[]).filter((k) => !vary.includes(k));
  return fixed.map((k) => ` ${k}=${String(p[k])}`).join('');
}

const CSV_POINT: (keyof LabPoint)[] = ['layout', 'eventIdx', 'inOrder', 'completion', 'indirect', 'queueSize', 'batch', 'chainLen', 'payload', 'copy', 'mode'];

/** The result as CSV (RFC 4180, one header row), for notebooks. */
export function toCsv(r: LabResult): string {
  const bases = [...new Set(r.results.flatMap((x) => Object.keys(x.ratios)))];
  const head = [
    ...CSV_POINT, 'mdps_median', 'mdps_min', 'mdps_max', 'ns_per_desc', 'kicks_per_desc', 'calls_per_desc',
    'lat_p50_us', 'lat_p99_us', ...bases.map((b) => `ratio_${b}`), 'runtime', 'simd', 'seed',
  ];
  const q = (v: unknown) => {
    const s = String(v ?? '');
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const rows = r.results.map((x) => [
    ...CSV_POINT.map((k) => x.point[k]), x.mdps.median, x.mdps.min, x.mdps.max, x.nsPerDesc.median,
    x.kicksPerDesc.median, x.callsPerDesc.median, x.latency?.p50 ?? '', x.latency?.p99 ?? '',
    ...bases.map((b) => x.ratios[b] ?? ''), r.env.runtime, r.env.simd, r.seed,
  ].map(q).join(','));
  return [head.join(','), ...rows].join('\n') + '\n';
}

/** The result as JSON (the object itself; `compare` reads it back). */
export function toJson(r: LabResult): string {
  return JSON.stringify(r, null, 2) + '\n';
}

/** Checks that `v` is a lab result (a file read back); throws VirtioError(InvalidArgument). */
export function parseResult(v: unknown, what = 'result'): LabResult {
  const o = v as LabResult;
  if (typeof o !== 'object' || o === null || o.version !== 1 || !Array.isArray(o.results) || typeof o.env !== 'object') {
    throw new VirtioError(Code.InvalidArgument, `${what} is not a ring lab result (version 1)`);
  }
  for (const x of o.results) {
    if (typeof x?.label !== 'string' || typeof x.mdps?.median !== 'number' || typeof x.point !== 'object') {
      throw new VirtioError(Code.InvalidArgument, `${what} has a malformed point`);
    }
  }
  return o;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** One chart's series: a line per design, points (x, y) sorted by x. */
export interface ChartSeries {
  /** Line label. */
  name: string;
  /** Points. */
  points: [x: number, y: number][];
}

/** Groups results into lines: one per design (every varying dimension but `x`), y picked by `y`. */
export function series(r: LabResult, x: keyof LabPoint, y: (p: LabPointResult) => number): ChartSeries[] {
  const keys = varyingKeys(r.results.map((p) => p.point));
  const byName = new Map<string, [number, number][]>();
  for (const p of r.results) {
    const name = designLabel(p.point, keys, x);
    const xv = Number(p.point[x]);
    if (!byName.has(name)) byName.set(name, []);
    byName.get(name)!.push([xv, y(p)]);
  }
  return [...byName].map(([name, points]) => ({ name, points: points.sort((a, b) => a[0] - b[0]) }));
}

/**
 * A line chart as a standalone SVG document: log2 x axis when x spans powers of two, linear y
 * from 0, a legend. No script, no external reference.
 */
export function svgChart(title: string, xLabel: string, yLabel: string, lines: readonly ChartSeries[]): string {
  const W = 720, H = 420, L = 64, R = 16, T = 36, B = 48;
  const legendH = 16 * lines.length;
  const xs = lines.flatMap((l) => l.points.map((p) => p[0]));
  const ys = lines.flatMap((l) => l.points.map((p) => p[1])).filter(Number.isFinite);
  const log = xs.length > 0 && xs.every((v) => v > 0) && Math.max(...xs) / Math.min(...xs) >= 8;
  const tx = (v: number) => (log ? Math.log2(v) : v);
  const x0 = xs.length ? Math.min(...xs.map(tx)) : 0, x1 = xs.length ? Math.max(...xs.map(tx)) : 1;
  const y1 = ys.length ? Math.max(...ys) * 1.1 || 1 : 1;
  const px = (v: number) => L + ((tx(v) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const py = (v: number) => T + legendH + (1 - v / y1) * (H - T - B - legendH);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T + legendH}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">${esc(yLabel)}</text>`,
  ];
  for (const v of [...new Set(xs)].sort((a, b) => a - b)) {
    out.push(`<line x1="${px(v).toFixed(1)}" y1="${H - B}" x2="${px(v).toFixed(1)}" y2="${H - B + 4}" stroke="black"/>`);
    out.push(`<text x="${px(v).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${v}</text>`);
  }
  for (let i = 0; i <= 4; i++) {
    const v = (y1 * i) / 4;
    out.push(`<line x1="${L - 4}" y1="${py(v).toFixed(1)}" x2="${W - R}" y2="${py(v).toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${(py(v) + 4).toFixed(1)}" text-anchor="end">${Number(v.toPrecision(3))}</text>`);
  }
  lines.forEach((l, i) => {
    const c = PALETTE[i % PALETTE.length]!;
    const pts = l.points.filter((p) => Number.isFinite(p[1])).map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"><title>${esc(l.name)}</title></polyline>`);
    for (const p of l.points) if (Number.isFinite(p[1])) out.push(`<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="2.5" fill="${c}"/>`);
    out.push(`<rect x="${L + 8}" y="${T + 16 * i - 8}" width="10" height="10" fill="${c}"/><text x="${L + 22}" y="${T + 16 * i + 1}">${esc(l.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** The two charts of a result against `x`: throughput, and kicks + calls per descriptor. */
export function charts(r: LabResult, x: keyof LabPoint): {
  /** SVG: M descriptors/s against `x`. */
  throughput: string;
  /** SVG: kicks and calls per descriptor against `x`. */
  notifications: string;
} {
  const thr = series(r, x, (p) => p.mdps.median);
  const kicks = series(r, x, (p) => p.kicksPerDesc.median).map((s) => ({ ...s, name: `kicks: ${s.name}` }));
  const calls = series(r, x, (p) => p.callsPerDesc.median).map((s) => ({ ...s, name: `calls: ${s.name}` }));
  return {
    throughput: svgChart(`Throughput against ${x}`, x, 'M descriptors / s (median)', thr),
    notifications: svgChart(`Notifications per descriptor against ${x}`, x, 'per descriptor (median)', [...kicks, ...calls]),
  };
}

/** A standalone HTML page with both charts and the table. */
export function toHtml(r: LabResult, x: keyof LabPoint): string {
  const c = charts(r, x);
  return `<!doctype html>\n<html><head><meta charset="utf-8"><title>vdpa-wasm ring lab</title></head><body>\n` +
    `<h1>vdpa-wasm ring lab</h1>\n${c.throughput}${c.notifications}<pre>${esc(formatTable(r))}</pre>\n</body></html>\n`;
}

/**
 * Two results side by side: points matched by label; for each, both medians and b ÷ a. Points
 * in only one file are listed with a dash.
 */
export function compare(a: LabResult, b: LabResult): string {
  const mb = new Map(b.results.map((x) => [x.label, x]));
  const seen = new Set<string>();
  const rows: string[][] = [];
  for (const x of a.results) {
    const y = mb.get(x.label);
    seen.add(x.label);
    rows.push([x.label, f(x.mdps.median), y ? f(y.mdps.median) : '-', y ? `${f(y.mdps.median / x.mdps.median)}×` : '-',
      f(x.kicksPerDesc.median + x.callsPerDesc.median, 4), y ? f(y.kicksPerDesc.median + y.callsPerDesc.median, 4) : '-']);
  }
  for (const y of b.results) if (!seen.has(y.label)) rows.push([y.label, '-', f(y.mdps.median), '-', '-', f(y.kicksPerDesc.median + y.callsPerDesc.median, 4)]);
  return [
    `A: ${a.env.runtime} · ${a.env.cpu} · ${a.env.simd ? 'SIMD' : 'plain'} · ${a.env.date}`,
    `B: ${b.env.runtime} · ${b.env.cpu} · ${b.env.simd ? 'SIMD' : 'plain'} · ${b.env.date}`,
    '',
    textTable(['point', 'A M desc/s', 'B M desc/s', 'B ÷ A', 'A notif/desc', 'B notif/desc'], rows),
  ].join('\n');
}
