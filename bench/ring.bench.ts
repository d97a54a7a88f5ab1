// Ring round-trip benchmark (tinybench): driver add → device pop (validate, translate)
// [→ copy the payload out] → push used → driver reclaim, for 1-descriptor 64-byte chains,
// split and packed, batch 1 / 32 / 256. The same workload runs in the same process, interleaved,
// on: the wasm core through its fused verbs (DriverQueue.addBufs, DeviceQueue.serve,
// DriverQueue.reclaimUsed: three wasm calls per batch), the wasm core through the general verbs
// (stage/submit, kickPrepare, pop, copyOut, pushPopped, needCall, getUsed), the plain-TypeScript
// baseline (bench/baseline/ts-ring.ts), the strongest plain-JS baseline (bench/baseline/
// js-fast-ring.ts: one function per side, state in locals) and, when a C compiler is present,
// native C (bench/native/). ROUNDS rounds (default 3) each run every task once; the figure is
// the median round, and each ratio is taken within a round and then the median.
//
//   npm run bench                          full run (about 2 minutes)
//   BENCH_TIME=200 ROUNDS=1 npm run bench  shorter: per-task time in ms, one round
// npm run bench compiles this file, the library and the baselines with tsc (build/js) and runs
// the JavaScript with plain node: a TS loader hook (tsx) in the process costs the library's
// per-call paths up to 40% and would measure the loader, not the code.
import { Bench } from 'tinybench';
import { statSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { Platform, DriverQueue, DeviceQueue, ringFeatures, hasSimd } from '../src/index.ts';
import { createTsRoundTrip } from './baseline/ts-ring.ts';
import { createJsFastRoundTrip } from './baseline/js-fast-ring.ts';
import { runNative, type NativeResult } from './native/run.ts';

const SIZE = 256;
const PAYLOAD = 64;
const BATCHES = [1, 32, 256];
const LAYOUTS = ['split', 'packed'] as const;
const TIME = Number(process.env.BENCH_TIME ?? 300);
const ROUNDS = Math.max(1, Number(process.env.ROUNDS ?? 3));
// BENCH_CLOCK=cpu (default): every task and the C program are timed by this process's CPU time
// (getrusage user+system; C: CLOCK_PROCESS_CPUTIME_ID), so other load on a shared machine does
// not count against whichever task it happened to land on. BENCH_CLOCK=wall: performance.now.
const CLOCK = process.env.BENCH_CLOCK === 'wall' ? 'wall' : 'cpu';
const cpuNow = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000; // ms
};

// One platform (one memory, one module instance) for every case, as an application has: with
// a platform per case the engine sees a different wasm function behind each export call site.
const p = Platform.create({ ramSize: 16 << 20 });

/** One wasm round trip case through the public API: one wasm call per verb per batch. */
function wasmRoundTrip(layout: 'split' | 'packed', batch: number, copy: boolean) {
  const features = ringFeatures({ packed: layout === 'packed' });
  const drv = new DriverQueue(p, { size: SIZE, features, batch });
  const dev = new DeviceQueue(p, { size: SIZE, features, ...drv.addresses, batch });
  const bufs = p.allocBuffer(batch * PAYLOAD);
  const sink = p.allocBuffer(batch * PAYLOAD);
  for (let i = 0; i < batch; i++) {
    p.u8.fill(i & 0xff, bufs + i * PAYLOAD, bufs + (i + 1) * PAYLOAD);
    drv.stageOne(i, bufs + i * PAYLOAD, PAYLOAD);
  }
  let checksum = 0;
  const run = (iterations: number): number => {
    let moved = 0;
    for (let it = 0; it < iterations; it++) {
      drv.submit(true); // the prepared batch is resubmitted as-is (buffers recycled)
      drv.kickPrepare();
      const n = dev.pop(batch);
      if (copy) dev.copyOut(n, sink, PAYLOAD);
      dev.pushPopped(n);
      dev.needCall();
      const m = drv.getUsed(batch);
      checksum += drv.usedToken(m - 1);
      moved += m;
    }
    return moved;
  };
  const check = () => {
    if (copy && p.u8[sink + (batch - 1) * PAYLOAD] !== ((batch - 1) & 0xff)) throw new Error('copy did not happen');
    if (drv.inFlight !== 0) throw new Error('buffers left in flight');
  };
  return { run, check, checksum: () => checksum };
}

/** The wasm round trip through the fused verbs: addBufs (+ kick decision), serve (+ copy, + call decision), reclaimUsed. */
function wasmServeRoundTrip(layout: 'split' | 'packed', batch: number, copy: boolean) {
  const features = ringFeatures({ packed: layout === 'packed' });
  const drv = new DriverQueue(p, { size: SIZE, features, batch });
  const dev = new DeviceQueue(p, { size: SIZE, features, ...drv.addresses, batch });
  const bufs = p.allocBuffer(batch * PAYLOAD);
  const sink = p.allocBuffer(batch * PAYLOAD);
  for (let i = 0; i < batch; i++) {
    p.u8.fill(i & 0xff, bufs + i * PAYLOAD, bufs + (i + 1) * PAYLOAD);
    drv.setBuf(i, i, bufs + i * PAYLOAD, PAYLOAD);
  }
  const dst = copy ? sink : 0;
  const stride = copy ? PAYLOAD : 0;
  const tokens = drv.usedTokens;
  let checksum = 0;
  let kicks = 0;
  let calls = 0;
  const run = (iterations: number): number => {
    let moved = 0;
    for (let it = 0; it < iterations; it++) {
      drv.addBufs(batch); // the same buffer records every time (buffers recycled)
      if (drv.kickNeeded) kicks++;
      dev.serve(batch, dst, stride);
      if (dev.serveCall) calls++;
      const m = drv.reclaimUsed(batch);
      checksum += tokens[m - 1]!;
      moved += m;
    }
    return moved;
  };
  const check = () => {
    if (copy && p.u8[sink + (batch - 1) * PAYLOAD] !== ((batch - 1) & 0xff)) throw new Error('copy did not happen');
    if (drv.inFlight !== 0) throw new Error('buffers left in flight');
    if (kicks === 0 || kicks !== calls) throw new Error(`kicks ${kicks} / calls ${calls}`);
  };
  return { run, check, checksum: () => checksum };
}

interface Row {
  layout: string;
  batch: number;
  copy: boolean;
  /** Rates (descriptors per second), median round. */
  serve: number;
  wasm: number;
  ts: number;
  js: number;
  native?: number;
  /** Ratios, median over rounds of the in-round ratio. */
  serveJs: number;
  serveTs: number;
  serveNative?: number;
}

const median = (xs: number[]): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main() {
  const reps = (batch: number) => Math.max(1, Math.ceil(2048 / batch)); // ~2k descriptors per task call
  const perCall = new Map<string, number>();
  const checks: (() => void)[] = [];
  const tasks: [string, () => void][] = [];
  for (const layout of LAYOUTS) {
    for (const batch of BATCHES) {
      for (const copy of [false, true]) {
        const tag = `${layout} round trip ${batch}×1-desc ${PAYLOAD}B${copy ? ' +copy' : ''}`;
        const sv = wasmServeRoundTrip(layout, batch, copy);
        const w = wasmRoundTrip(layout, batch, copy);
        const t = createTsRoundTrip({ layout, size: SIZE, batch, copy, payload: PAYLOAD });
        const j = createJsFastRoundTrip({ layout, size: SIZE, batch, copy, payload: PAYLOAD });
        const r = reps(batch);
        for (const k of ['serve', 'wasm', 'ts', 'js']) perCall.set(`${k} ${tag}`, r * batch);
        tasks.push([`serve ${tag}`, () => { sv.run(r); }]);
        tasks.push([`wasm ${tag}`, () => { w.run(r); }]);
        tasks.push([`ts ${tag}`, () => { t.run(r); }]);
        tasks.push([`js ${tag}`, () => { j.run(r); }]);
        checks.push(sv.check, w.check, () => t.check(), () => j.check());
      }
    }
  }
  const nativeRounds: (NativeResult[] | { skipped: string })[] = [];
  const rateRounds: Map<string, number>[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // One tinybench run per round over every task (the implementations of a case run next to
    // each other), then the C program: load changes show up in all columns of a round alike.
    const bench = new Bench({ time: TIME, warmup: true, warmupTime: 100, ...(CLOCK === 'cpu' ? { now: cpuNow } : {}) });
    for (const [name, fn] of tasks) bench.add(name, fn);
    await bench.run();
    const rates = new Map<string, number>();
    for (const [name] of tasks) {
      const task = bench.getTask(name);
      const period = task?.result && 'period' in task.result ? (task.result.period as number) : NaN;
      rates.set(name, (perCall.get(name)! * 1000) / period); // descriptors per second
    }
    rateRounds.push(rates);
    nativeRounds.push(runNative({ seconds: 0.3, clock: CLOCK }));
  }
  for (const c of checks) c();

  const nativeRate = (round: number, layout: string, batch: number, copy: boolean): number | undefined => {
    const native = nativeRounds[round]!;
    return Array.isArray(native) ? native.find((n: NativeResult) => n.layout === layout && n.batch === batch && n.copy === copy)?.descPerSec : undefined;
  };

  const rows: Row[] = [];
  for (const layout of LAYOUTS) for (const batch of BATCHES) for (const copy of [false, true]) {
    const tag = `${layout} round trip ${batch}×1-desc ${PAYLOAD}B${copy ? ' +copy' : ''}`;
    const col = (k: string) => rateRounds.map((m) => m.get(`${k} ${tag}`)!);
    const sv = col('serve');
    const nat = rateRounds.map((_, i) => nativeRate(i, layout, batch, copy));
    const row: Row = {
      layout, batch, copy,
      serve: median(sv), wasm: median(col('wasm')), ts: median(col('ts')), js: median(col('js')),
      serveJs: median(sv.map((x, i) => x / col('js')[i]!)),
      serveTs: median(sv.map((x, i) => x / col('ts')[i]!)),
    };
    if (nat.every((x) => x !== undefined)) {
      row.native = median(nat as number[]);
      row.serveNative = median(sv.map((x, i) => x / nat[i]!));
    }
    rows.push(row);
  }
  const native = nativeRounds[0]!;

  // Allocation check: GCs observed while the hot loop runs a million descriptors.
  let gcs = 0;
  const obs = new PerformanceObserver((list) => { gcs += list.getEntries().length; });
  obs.observe({ entryTypes: ['gc'] });
  const hot = wasmRoundTrip('split', 32, true);
  hot.run(1000); // warm
  await new Promise((r) => setTimeout(r, 50));
  gcs = 0;
  const heap0 = process.memoryUsage().heapUsed;
  hot.run(1_000_000 / 32);
  const heap1 = process.memoryUsage().heapUsed;
  await new Promise((r) => setTimeout(r, 50));
  const gcsGeneral = gcs;
  const hot2 = wasmServeRoundTrip('split', 32, true);
  hot2.run(1000);
  await new Promise((r) => setTimeout(r, 50));
  gcs = 0;
  hot2.run(1_000_000 / 32);
  await new Promise((r) => setTimeout(r, 50));
  const gcsServe = gcs;
  gcs = gcsGeneral;
  obs.disconnect();

  const M = (x: number | undefined) => (x === undefined ? '—' : (x / 1e6).toFixed(1));
  const X = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(2));
  const ratio = (a: number, b: number | undefined) => (b === undefined ? '—' : (a / b).toFixed(2));
  const os = await import('node:os');
  console.log(`\nvdpa-wasm ring round trip — Node ${process.version}, ${process.arch}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, SIMD ${hasSimd() ? 'on' : 'off'}, queue size ${SIZE}, ${PAYLOAD}-byte 1-descriptor chains`);
  console.log(`Mdesc/s (millions of descriptors per second, one full round trip each), median of ${ROUNDS} interleaved round(s), ${CLOCK === 'cpu' ? 'CPU' : 'wall-clock'} time; tinybench time ${TIME} ms per task; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log('wasm serve: addBufs + serve + reclaimUsed (fused verbs); wasm pop/push: the general verbs; ratios: median of in-round ratios\n');
  console.log('| layout | batch | copy | wasm serve | wasm pop/push | TS baseline | strongest JS | native C | serve/JS | serve/C | serve/TS |');
  console.log('|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.layout} | ${r.batch} | ${r.copy ? 'yes' : 'no'} | ${M(r.serve)} | ${M(r.wasm)} | ${M(r.ts)} | ${M(r.js)} | ${M(r.native)} | ${X(r.serveJs)} | ${X(r.serveNative)} | ${X(r.serveTs)} |`);
  }
  if (!Array.isArray(native)) console.log(`\nnative C skipped: ${native.skipped}`);
  // Targets (issue 11): batch 32/256 serve ≥ 1.5× strongest JS and ≥ 0.9× C; batch 1 ≥ 1.0× JS; packed within 10 % of split.
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  console.log('\nTargets:');
  for (const r of rows) {
    const big = r.batch >= 32;
    const js = big ? 1.5 : 1.0;
    const parts = [`serve/JS ${X(r.serveJs)} (≥ ${js.toFixed(1)}: ${verdict(r.serveJs >= js)})`];
    if (big) parts.push(`serve/C ${X(r.serveNative)} (≥ 0.9: ${r.serveNative === undefined ? 'not measured' : verdict(r.serveNative >= 0.9)})`);
    console.log(`  ${r.layout} batch ${r.batch}${r.copy ? ' +copy' : ''}: ${parts.join(', ')}`);
  }
  const find = (layout: string, batch: number, copy: boolean) => rows.find((r) => r.layout === layout && r.batch === batch && r.copy === copy)!;
  const ps: string[] = [];
  for (const batch of BATCHES) for (const copy of [false, true]) {
    const q = find('packed', batch, copy).serve / find('split', batch, copy).serve;
    ps.push(`batch ${batch}${copy ? ' copy' : ''} ${q.toFixed(2)} (${verdict(q >= 0.9)})`);
  }
  console.log(`packed/split (wasm serve; target ≥ 0.90): ${ps.join(', ')}`);
  console.log(`GC events during 1,000,000 descriptors (split, batch 32, copy, general verbs): ${gcs}; fused verbs: ${gcsServe}; heap delta ${((heap1 - heap0) / 1024).toFixed(1)} KiB`);
  const size = statSync('build/vdpa.wasm').size;
  console.log(`module size: vdpa.wasm ${size} bytes (${(size / 1024).toFixed(1)} KiB)`);
  console.log(`(checksum ${hot.checksum()})`);
}

await main();
