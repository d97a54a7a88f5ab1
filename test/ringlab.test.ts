// The ring lab (src/lab/): sweep expansion and presets, the notification counters against
// hand-computed expectations on small deterministic cases, the output formats, the CLI, and a
// short cross-thread run. No wall-clock assertions: only counts, shapes and formats.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Platform, VirtioError, expandSweep, PRESETS, preset, sameThreadRig, runLab, formatTable, toCsv, toJson, parseResult,
  series, svgChart, charts, toHtml, compare, DEFAULT_SWEEP, type LabPoint, type LabResult,
} from '../src/index.ts';
import { labMain, nodeCrossThreadRunner } from '../src/node.ts';

const base: LabPoint = { ...Object.fromEntries(Object.entries(DEFAULT_SWEEP).map(([k, v]) => [k, v[0]])) } as unknown as LabPoint;
const code = (fn: () => unknown, c: string) => assert.throws(fn, (e: unknown) => e instanceof VirtioError && e.code === c);

test('a sweep expands to the cartesian product, last dimension fastest, impossible points refused', () => {
  const pts = expandSweep({ layout: ['split', 'packed'], batch: [1, 32], copy: [false, true] });
  assert.equal(pts.length, 8);
  assert.deepEqual(pts.slice(0, 3).map((p) => [p.layout, p.batch, p.copy]), [['split', 1, false], ['split', 1, true], ['split', 32, false]]);
  assert.equal(pts[4]!.layout, 'packed');
  // IN_ORDER with shuffled completion is not a point.
  assert.equal(expandSweep({ inOrder: [false, true], completion: ['in-order', 'shuffled'] }).length, 3);
  code(() => expandSweep({ queueSize: [100] }), 'invalid_argument'); // split needs a power of two
  assert.equal(expandSweep({ layout: ['packed'], queueSize: [100] }).length, 1);
  code(() => expandSweep({ batch: [512] }), 'invalid_argument'); // batch > queue size
  code(() => expandSweep({ queueSize: [4], chainLen: [8], payload: [64] }), 'invalid_argument');
  assert.equal(expandSweep({ queueSize: [4], chainLen: [8], payload: [64], indirect: [true], batch: [4] }).length, 1);
  code(() => expandSweep({ batch: [] }), 'invalid_argument');
  code(() => expandSweep({ mode: ['poll'], chainLen: [2], payload: [64] }), 'invalid_argument');
  code(() => expandSweep({ mode: ['sideways' as never] }), 'invalid_argument');
});

test('every preset expands; an unknown preset names the ones there are', () => {
  for (const p of PRESETS) assert.ok(expandSweep(p.sweep).length > 1, p.name);
  assert.deepEqual(PRESETS.map((p) => p.name), ['event-idx', 'split-vs-packed', 'in-order', 'indirect', 'cross-thread']);
  code(() => preset('nope'), 'not_found');
});

function counters(pt: Partial<LabPoint>, chains: number, seed = 1) {
  const p = Platform.create({ ramSize: 8 << 20, privateSize: 4 << 20 });
  const rig = sameThreadRig(p, { ...base, ...pt }, seed);
  try {
    return [rig.run(chains), rig.run(chains)];
  } finally {
    rig.free();
  }
}

for (const layout of ['split', 'packed'] as const) {
  for (const eventIdx of [true, false]) {
    test(`${layout}, event idx ${eventIdx}: a batch of the queue size costs exactly one kick and one call`, () => {
      // The device drains the ring on a kick and re-arms kicks; the driver reclaims on the call
      // and re-arms callbacks: one of each per batch, whatever the suppression mechanism.
      for (const r of counters({ layout, eventIdx, queueSize: 64, batch: 64 }, 64 * 10)) {
        assert.equal(r.chains, 640);
        assert.equal(r.descs, 640);
        assert.equal(r.kicks, 10);
        assert.equal(r.calls, 10);
      }
    });
    test(`${layout}, event idx ${eventIdx}: batch 1 kicks and calls once per chain`, () => {
      for (const r of counters({ layout, eventIdx, queueSize: 16, batch: 1 }, 100)) {
        assert.deepEqual([r.chains, r.kicks, r.calls], [100, 100, 100]);
      }
    });
  }
  test(`${layout}: multi-buffer chains without indirect tables fill the ring by descriptors`, () => {
    // 16 descriptors, 4 per chain: 4 chains in flight; batch 8 is capped to 4.
    for (const r of counters({ layout, queueSize: 16, batch: 8, chainLen: 4, payload: 256 }, 40)) {
      assert.deepEqual([r.chains, r.descs, r.kicks, r.calls], [40, 160, 10, 10]);
    }
  });
  test(`${layout}: shuffled completion is deterministic for a seed and moves every chain`, () => {
    const a = counters({ layout, queueSize: 64, batch: 16, completion: 'shuffled' }, 320, 7);
    const b = counters({ layout, queueSize: 64, batch: 16, completion: 'shuffled' }, 320, 7);
    assert.deepEqual(a.map((r) => [r.chains, r.kicks, r.calls]), b.map((r) => [r.chains, r.kicks, r.calls]));
    assert.equal(a[0]!.chains, 320);
  });
}

async function small(): Promise<LabResult> {
  return runLab({
    sweep: { layout: ['split', 'packed'], batch: [1, 4, 16], eventIdx: [true] }, rounds: 2, chains: 400,
    baselines: { fake: (pt) => (pt.batch === 1 ? null : 1e6) },
  });
}

test('runLab: one result per point with medians, notifications per descriptor and baseline ratios', async () => {
  const r = await small();
  assert.equal(r.results.length, 6);
  assert.equal(r.rounds, 2);
  for (const x of r.results) {
    assert.ok(x.mdps.min <= x.mdps.median && x.mdps.median <= x.mdps.max);
    assert.equal(x.kicksPerDesc.median, 1 / x.point.batch);
    assert.equal(x.callsPerDesc.median, 1 / x.point.batch);
    if (x.point.batch === 1) assert.equal(x.ratios.fake, undefined);
    else assert.ok(Math.abs(x.ratios.fake! - x.mdps.median) < 1e-9);
  }
  await assert.rejects(runLab({ sweep: { mode: ['poll'] } }), (e: unknown) => e instanceof VirtioError && e.code === 'unsupported');
  await assert.rejects(runLab({ sweep: {}, rounds: 0 }), (e: unknown) => e instanceof VirtioError && e.code === 'invalid_argument');
});

test('outputs: table, CSV, JSON round trip, SVG with one line per design, HTML, compare', async () => {
  const r = await small();
  const t = formatTable(r);
  assert.match(t, /6 points × 2 rounds × 400 chains, seed 1/);
  assert.match(t, /× fake/);
  const csv = toCsv(r).trim().split('\n');
  assert.equal(csv.length, 7);
  const head = csv[0]!.split(',');
  assert.equal(head.length, csv[1]!.split(',').length);
  const kick = head.indexOf('kicks_per_desc');
  assert.equal(Number(csv[2]!.split(',')[kick]), 0.25); // split, batch 4
  const back = parseResult(JSON.parse(toJson(r)));
  assert.deepEqual(back.results.map((x) => x.label), r.results.map((x) => x.label));
  code(() => parseResult({ version: 2 }), 'invalid_argument');
  code(() => parseResult({ version: 1, env: {}, results: [{}] }), 'invalid_argument');
  const lines = series(r, 'batch', (x) => x.mdps.median);
  assert.deepEqual(lines.map((l) => l.name), ['split', 'packed']);
  assert.deepEqual(lines[0]!.points.map((p) => p[0]), [1, 4, 16]);
  const c = charts(r, 'batch');
  for (const svg of [c.throughput, c.notifications]) {
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.ok(svg.trim().endsWith('</svg>'));
    assert.doesNotMatch(svg, /<script/);
  }
  assert.equal((c.throughput.match(/<polyline/g) ?? []).length, 2);
  assert.equal((c.notifications.match(/<polyline/g) ?? []).length, 4); // kicks + calls per design
  assert.match(svgChart('a<b', 'x', 'y', [{ name: '"&"', points: [[1, 1]] }]), /a&lt;b[\s\S]*&quot;&amp;&quot;/);
  assert.match(toHtml(r, 'batch'), /<!doctype html>[\s\S]*<svg[\s\S]*<pre>/);
  const cmp = compare(r, { ...r, results: r.results.slice(1).map((x) => ({ ...x, mdps: { ...x.mdps, median: x.mdps.median * 2 } })) });
  assert.match(cmp, /2\.00×/);
  assert.match(cmp, new RegExp(`${r.results[0]!.label}\\s+\\S+\\s+-`));
});

function io() {
  const o = { out: '', err: '' };
  return { o, io: { out: (s: string) => { o.out += s; }, err: (s: string) => { o.err += s; } } };
}

test('CLI: presets, a sweep to JSON/CSV/SVG/HTML files, compare, and usage errors exit 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringlab-'));
  let c = io();
  assert.equal(await labMain(['presets'], c.io), 0);
  assert.match(c.o.out, /^event-idx\s+What does EVENT_IDX save/m);
  c = io();
  const j = join(dir, 'a.json');
  assert.equal(await labMain(['--batch', '1,8', '--layout', 'split,packed', '--rounds', '1', '--chains', '200', '--json', j, '--csv', join(dir, 'a.csv'), '--svg', join(dir, 'charts', 'a'), '--html', join(dir, 'a.html')], c.io), 0);
  assert.match(c.o.out, /4 points × 1 rounds × 200 chains/);
  assert.match(c.o.err, /\[1\/4\][\s\S]*done: 4 points/);
  assert.equal(parseResult(JSON.parse(readFileSync(j, 'utf8'))).results.length, 4);
  assert.equal(readFileSync(join(dir, 'a.csv'), 'utf8').trim().split('\n').length, 5);
  for (const f of ['charts/a-throughput.svg', 'charts/a-notifications.svg', 'a.html']) assert.ok(existsSync(join(dir, f)), f);
  writeFileSync(join(dir, 'b.json'), readFileSync(j, 'utf8'));
  c = io();
  assert.equal(await labMain(['compare', j, join(dir, 'b.json')], c.io), 0);
  assert.match(c.o.out, /1\.00×/);
  c = io();
  assert.equal(await labMain(['--json', '-', '--rounds', '1', '--chains', '100', '--quiet'], c.io), 0);
  assert.equal(parseResult(JSON.parse(c.o.out)).results.length, 1);
  for (const bad of [['--batch', 'x'], ['--copy', 'maybe'], ['--frobnicate'], ['--preset', 'nope'], ['--queue-size', '100'], ['--rounds'], ['compare', j], ['--x', 'colour']]) {
    c = io();
    assert.equal(await labMain(bad, c.io), 2, bad.join(' '));
    assert.match(c.o.err, /^vdpa-ringlab: /);
  }
  c = io();
  writeFileSync(join(dir, 'junk.json'), '{"version":1}');
  assert.equal(await labMain(['compare', j, join(dir, 'junk.json')], c.io), 2);
});

test('cross-thread: driver and device in two workers, every mode moves every chain; batch 1 reports latency', async () => {
  const x = await nodeCrossThreadRunner();
  try {
    const r = await runLab({ sweep: { mode: ['poll', 'wait', 'adaptive'], batch: [1, 16], layout: ['split', 'packed'] }, rounds: 1, chains: 500, crossThread: x.runner });
    assert.equal(r.results.length, 12);
    assert.ok(r.env.shared);
    for (const p of r.results) {
      assert.ok(p.mdps.median > 0, p.label);
      if (p.point.batch === 1) {
        assert.ok(p.latency && p.latency.p50 > 0 && p.latency.p99 >= p.latency.p50, p.label);
        // Ping-pong: one chain per round trip; in wait mode both sides sleep every time.
        if (p.point.mode === 'wait') assert.ok(p.kicksPerDesc.median > 0, p.label);
      } else assert.equal(p.latency, undefined);
      // Polling suppresses kicks (the device disabled them) beyond the first.
      if (p.point.mode === 'poll') assert.ok(p.kicksPerDesc.median <= 2 / 500, p.label);
    }
  } finally {
    await x.close();
  }
});
