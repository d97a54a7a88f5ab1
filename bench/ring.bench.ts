// Ring round-trip benchmark (tinybench): driver add → device pop (validate, translate)
// [→ copy the payload out] → push used → driver reclaim, for 1-descriptor 64-byte chains,
// split and packed, batch 1 / 32 / 256. The same workload runs in the same process on the
// plain-TypeScript baseline (bench/baseline/ts-ring.ts) and, when a C compiler is present, as
// native C (bench/native/), so the report shows wasm/TS and wasm/native ratios.
//
//   npm run bench                 full run (about 20 s)
//   BENCH_TIME=200 npm run bench  shorter per-task time, ms
// npm run bench compiles this file, the library and the baselines with tsc (build/js) and runs
// the JavaScript with plain node: a TS loader hook (tsx) in the process costs the library's
// per-call paths up to 40% and would measure the loader, not the code.
import { Bench } from 'tinybench';
import { statSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { Platform, DriverQueue, DeviceQueue, ringFeatures, hasSimd } from '../src/index.ts';
import { createTsRoundTrip } from './baseline/ts-ring.ts';
import { runNative, type NativeResult } from './native/run.ts';

const SIZE = 256;
const PAYLOAD = 64;
const BATCHES = [1, 32, 256];
const LAYOUTS = ['split', 'packed'] as const;
const TIME = Number(process.env.BENCH_TIME ?? 500);

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

interface Row {
  layout: string;
  batch: number;
  copy: boolean;
  wasm: number;
  ts: number;
  native?: number;
}

async function main() {
  const reps = (batch: number) => Math.max(1, Math.ceil(2048 / batch)); // ~2k descriptors per task call
  const bench = new Bench({ time: TIME, warmup: true, warmupTime: 100 });
  const perCall = new Map<string, number>();
  const checks: (() => void)[] = [];
  for (const layout of LAYOUTS) {
    for (const batch of BATCHES) {
      for (const copy of [false, true]) {
        const tag = `${layout} round trip ${batch}×1-desc ${PAYLOAD}B${copy ? ' +copy' : ''}`;
        const w = wasmRoundTrip(layout, batch, copy);
        const t = createTsRoundTrip({ layout, size: SIZE, batch, copy, payload: PAYLOAD });
        const r = reps(batch);
        perCall.set(`wasm ${tag}`, r * batch);
        perCall.set(`ts ${tag}`, r * batch);
        bench.add(`wasm ${tag}`, () => { w.run(r); });
        bench.add(`ts ${tag}`, () => { t.run(r); });
        checks.push(w.check, () => t.check());
      }
    }
  }
  await bench.run();
  for (const c of checks) c();

  const rate = (name: string): number => {
    const task = bench.getTask(name);
    const period = task?.result && 'period' in task.result ? (task.result.period as number) : NaN;
    return (perCall.get(name)! * 1000) / period; // descriptors per second
  };

  const native = runNative({ seconds: 0.3 });
  const nativeRate = (layout: string, batch: number, copy: boolean): number | undefined =>
    Array.isArray(native) ? native.find((n: NativeResult) => n.layout === layout && n.batch === batch && n.copy === copy)?.descPerSec : undefined;

  const rows: Row[] = [];
  for (const layout of LAYOUTS) for (const batch of BATCHES) for (const copy of [false, true]) {
    const tag = `${layout} round trip ${batch}×1-desc ${PAYLOAD}B${copy ? ' +copy' : ''}`;
    const row: Row = { layout, batch, copy, wasm: rate(`wasm ${tag}`), ts: rate(`ts ${tag}`) };
    const nr = nativeRate(layout, batch, copy);
    if (nr !== undefined) row.native = nr;
    rows.push(row);
  }

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
  obs.disconnect();

  const M = (x: number | undefined) => (x === undefined ? '—' : (x / 1e6).toFixed(1));
  const ratio = (a: number, b: number | undefined) => (b === undefined ? '—' : (a / b).toFixed(2));
  console.log(`\nvdpa-wasm ring round trip — Node ${process.version}, ${process.arch}, SIMD ${hasSimd() ? 'on' : 'off'}, queue size ${SIZE}, ${PAYLOAD}-byte 1-descriptor chains`);
  console.log(`Mdesc/s (millions of descriptors per second, one full round trip each); tinybench time ${TIME} ms per task\n`);
  console.log('| layout | batch | copy | wasm | TS baseline | native C | wasm/TS | wasm/native |');
  console.log('|---|---:|:---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.layout} | ${r.batch} | ${r.copy ? 'yes' : 'no'} | ${M(r.wasm)} | ${M(r.ts)} | ${M(r.native)} | ${ratio(r.wasm, r.ts)} | ${ratio(r.wasm, r.native)} |`);
  }
  if (!Array.isArray(native)) console.log(`\nnative C skipped: ${native.skipped}`);
  const at32 = (layout: string, copy: boolean) => rows.find((r) => r.layout === layout && r.batch === 32 && r.copy === copy)!;
  console.log('\npacked/split (wasm, batch 32): ' + [false, true].map((c) => `${c ? 'copy' : 'no copy'} ${ratio(at32('packed', c).wasm, at32('split', c).wasm)}`).join(', '));
  console.log(`GC events during 1,000,000 descriptors (split, batch 32, copy): ${gcs}; heap delta ${((heap1 - heap0) / 1024).toFixed(1)} KiB`);
  const size = statSync('build/vdpa.wasm').size;
  console.log(`module size: vdpa.wasm ${size} bytes (${(size / 1024).toFixed(1)} KiB)`);
  console.log(`(checksum ${hot.checksum()})`);
}

await main();
