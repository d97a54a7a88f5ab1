// Device-level benchmark (tinybench): virtio-blk on the RAM disk and virtio-net in loopback,
// end to end through the public driver APIs (driver → ring → vdpasim device in wasm → ring →
// driver → caller), each figure a ratio against a baseline measured in the same run:
//   blk  4 KiB random read/write, queue depth 1 and 32: readMany/writeMany (staged and
//        zero-copy buffers) and read()/write(), vs a plain Uint8Array copy of the same bytes;
//        128 KiB sequential read, vs a plain copy of 128 KiB.
//   net  loopback, 64 B and 1514 B frames: sendBatch(32) + onFrames (the batch APIs) and
//        send() one at a time, vs sendBatch(32) + onFrame (the per-frame API).
//   footprint  RSS and platform bytes of 1000 idle net and 1000 idle blk devices with their
//        drivers (a child process: bench/devices-footprint.ts).
// Three rounds; the targets of issue 11 are checked against the median.
//
//   npm run bench:devices                   full run (about 1 minute)
//   BENCH_TIME=100 npm run bench:devices    shorter per-task time, ms
// Like bench/ring.bench.ts it runs the tsc output with plain node (no TS loader in the process).
import { Bench } from 'tinybench';
import { loadavg, cpus } from 'node:os';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PerformanceObserver } from 'node:perf_hooks';
import { Platform, VdpaBus, VdpaSimBlkMgmt, VdpaSimNetMgmt, createVirtioVdpa, hasSimd, type NetRxBatch } from '../src/index.ts';

const TIME = Number(process.env.BENCH_TIME ?? 300);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DISK = 64 << 20; // RAM disk bytes
const SECT = DISK / 512;

const p = Platform.create({ ramSize: 192 << 20, privateSize: 16 << 20 });
const bus = new VdpaBus();
bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, SECT));
bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
const virtio = createVirtioVdpa(p, { queueSize: 256 });
bus.registerDriver(virtio);
bus.devAdd('vdpasim_blk', 'b', {});
const blk = virtio.blk('b');
bus.devAdd('vdpasim_net', 'n', { mac: '02:00:00:00:00:01' });
const net = virtio.net('n');

// ── blk ──
/** Random 4 KiB-aligned sectors, precomputed (the same sequence for every case). */
const RAND = new Float64Array(1 << 16).map((_, i) => ((Math.imul(i + 1, 2654435761) >>> 0) % (SECT / 8)) * 8);
let ri = 0;
const plainDisk = new Uint8Array(DISK);
const bufs = Array.from({ length: 32 }, () => new Uint8Array(4096));
const staged32 = new Uint8Array(32 * 4096);
const zc32 = blk.allocBuffer(32 * 4096);
const secs = Array.from({ length: 33 }, (_, n) => new Float64Array(n));
const seqBuf = new Uint8Array(128 << 10);
const seqZc = blk.allocBuffer(128 << 10);
const seqZc8 = blk.allocBuffer(8 * (128 << 10));
const ITER_BLK = 16; // batches per task call

function nextSecs(n: number): Float64Array {
  const s = secs[n]!;
  for (let i = 0; i < n; i++) s[i] = RAND[ri++ & 0xffff]!;
  return s;
}

const blkCases: Record<string, { perCall: number; bytes: number; fn: () => Promise<void> | void }> = {
  'blk copy baseline 4K': {
    perCall: ITER_BLK * 32, bytes: 4096,
    fn: () => {
      for (let i = 0; i < ITER_BLK * 32; i++) {
        const o = RAND[ri++ & 0xffff]! * 512;
        bufs[i & 31]!.set(plainDisk.subarray(o, o + 4096));
      }
    },
  },
  'blk readMany 4K QD1': { perCall: ITER_BLK * 4, bytes: 4096, fn: async () => { for (let i = 0; i < ITER_BLK * 4; i++) await blk.readMany(nextSecs(1), 4096, staged32); } },
  'blk readMany 4K QD32': { perCall: ITER_BLK * 32, bytes: 4096, fn: async () => { for (let i = 0; i < ITER_BLK; i++) await blk.readMany(nextSecs(32), 4096, staged32); } },
  'blk readMany 4K QD32 zero-copy': { perCall: ITER_BLK * 32, bytes: 4096, fn: async () => { for (let i = 0; i < ITER_BLK; i++) await blk.readMany(nextSecs(32), 4096, zc32); } },
  'blk writeMany 4K QD1': { perCall: ITER_BLK * 4, bytes: 4096, fn: async () => { for (let i = 0; i < ITER_BLK * 4; i++) await blk.writeMany(nextSecs(1), 4096, staged32); } },
  'blk writeMany 4K QD32': { perCall: ITER_BLK * 32, bytes: 4096, fn: async () => { for (let i = 0; i < ITER_BLK; i++) await blk.writeMany(nextSecs(32), 4096, staged32); } },
  'blk read() 4K QD1': { perCall: ITER_BLK * 4, bytes: 4096, fn: async () => { for (let i = 0; i < ITER_BLK * 4; i++) await blk.read(RAND[ri++ & 0xffff]!, bufs[0]!); } },
  'blk read() 4K QD32': {
    perCall: ITER_BLK * 32, bytes: 4096,
    fn: async () => {
      const ps: Promise<void>[] = new Array(32);
      for (let i = 0; i < ITER_BLK; i++) {
        for (let k = 0; k < 32; k++) ps[k] = blk.read(RAND[ri++ & 0xffff]!, bufs[k]!);
        await Promise.all(ps);
      }
    },
  },
  'blk copy baseline 128K seq': {
    perCall: ITER_BLK, bytes: 128 << 10,
    fn: () => {
      for (let i = 0; i < ITER_BLK; i++) {
        const o = ((ri++ * 256) % (SECT - 256)) * 512;
        seqBuf.set(plainDisk.subarray(o, o + (128 << 10)));
      }
    },
  },
  'blk readMany 128K seq': { perCall: ITER_BLK, bytes: 128 << 10, fn: async () => { for (let i = 0; i < ITER_BLK; i++) { secs[1]![0] = (ri++ * 256) % (SECT - 256); await blk.readMany(secs[1]!, 128 << 10, seqBuf); } } },
  'blk readMany 128K seq QD8 zero-copy': {
    perCall: ITER_BLK * 8, bytes: 128 << 10,
    fn: async () => {
      const s = secs[8]!;
      for (let i = 0; i < ITER_BLK; i++) {
        const at = (ri++ * 2048) % (SECT - 2048);
        for (let k = 0; k < 8; k++) s[k] = at + 256 * k;
        await blk.readMany(s, 128 << 10, seqZc8);
      }
    },
  },
  'blk readMany 128K seq zero-copy': { perCall: ITER_BLK, bytes: 128 << 10, fn: async () => { for (let i = 0; i < ITER_BLK; i++) { secs[1]![0] = (ri++ * 256) % (SECT - 256); await blk.readMany(secs[1]!, 128 << 10, seqZc); } } },
};

// ── net ──
let rxFrames = 0;
// One receiver at a time, as an application has: with a per-frame listener registered the
// driver copies every frame for it.
let off: (() => void) | null = null;
let mode: 'batch' | 'frame' | null = null;
function receiveBy(m: 'batch' | 'frame'): void {
  if (mode === m) return;
  off?.();
  mode = m;
  off = m === 'batch' ? net.onFrames((b: NetRxBatch) => { rxFrames += b.count; }) : net.onFrame(() => { rxFrames++; });
}
function frame(len: number): Uint8Array {
  const f = new Uint8Array(len).fill(0x5a);
  f.set([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 0x88, 0xb5]);
  return f;
}
const ITER_NET = 16;
const netCases: Record<string, { perCall: number; fn: () => Promise<void> }> = {};
for (const len of [64, 1514]) {
  const frames = Array.from({ length: 32 }, () => frame(len));
  // The per-frame API (onFrame: a copy per frame), the baseline: what 0.1 offered.
  netCases[`net ${len}B sendBatch(32) + onFrame (per-frame API)`] = {
    perCall: ITER_NET * 32,
    fn: async () => {
      receiveBy('frame');
      for (let i = 0; i < ITER_NET; i++) {
        net.sendBatch(frames);
        await null; // rx is delivered from a microtask queued during the send
      }
    },
  };
  netCases[`net ${len}B sendBatch(32) + onFrames`] = {
    perCall: ITER_NET * 32,
    fn: async () => {
      receiveBy('batch');
      for (let i = 0; i < ITER_NET; i++) {
        net.sendBatch(frames);
        await null;
      }
    },
  };
  netCases[`net ${len}B send() ×32 + onFrames`] = {
    perCall: ITER_NET * 32,
    fn: async () => {
      receiveBy('batch');
      for (let i = 0; i < ITER_NET; i++) {
        for (let k = 0; k < 32; k++) net.send(frames[k]!);
        await null;
      }
    },
  };
  netCases[`net ${len}B send(f, more) ×32 + onFrames`] = {
    perCall: ITER_NET * 32,
    fn: async () => {
      receiveBy('batch');
      for (let i = 0; i < ITER_NET; i++) {
        for (let k = 0; k < 31; k++) net.send(frames[k]!, true);
        net.send(frames[31]!);
        await null;
      }
    },
  };
}

/**
 * Rate from CPU time: the machine is shared, so wall time measures the other tenants too.
 * Each task call's process CPU time (user + system, µs) is summed by cpuTimed().
 */
const cpu = new Map<string, { us: number; calls: number }>();
function cpuTimed(name: string, fn: () => Promise<void> | void): () => Promise<void> {
  const acc = { us: 0, calls: 0 };
  cpu.set(name, acc);
  return async () => {
    const c0 = process.cpuUsage();
    await fn();
    const c = process.cpuUsage(c0);
    acc.us += c.user + c.system;
    acc.calls++;
  };
}

function rateOf(bench: Bench, name: string, perCall: number): { wall: number; cpu: number } {
  const task = bench.getTask(name);
  const period = task?.result && 'period' in task.result ? (task.result.period as number) : NaN;
  const c = cpu.get(name)!;
  return { wall: (perCall * 1000) / period, cpu: (perCall * c.calls * 1e6) / c.us };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function round(): Promise<{ cpu: Map<string, number>; wall: Map<string, number> }> {
  const bench = new Bench({ time: TIME, warmup: true, warmupTime: 100 });
  const all = { ...blkCases, ...netCases } as Record<string, { perCall: number; fn: () => Promise<void> | void }>;
  for (const [name, c] of Object.entries(all)) bench.add(name, cpuTimed(name, c.fn));
  await bench.run();
  const out = { cpu: new Map<string, number>(), wall: new Map<string, number>() };
  for (const [name, c] of Object.entries(all)) {
    const r = rateOf(bench, name, c.perCall);
    out.cpu.set(name, r.cpu);
    out.wall.set(name, r.wall);
  }
  return out;
}

async function main() {
  const load0 = loadavg();
  const rounds: Map<string, number>[] = [];
  const wallRounds: Map<string, number>[] = [];
  const sent0 = net.stats.txPackets;
  rxFrames = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const o = await round();
    rounds.push(o.cpu);
    wallRounds.push(o.wall);
  }
  const wallMed = (name: string) => median(wallRounds.map((m) => m.get(name)!));
  const sent = net.stats.txPackets - sent0;
  const med = (name: string) => median(rounds.map((m) => m.get(name)!));
  const per = (name: string) => rounds.map((m) => m.get(name)!);
  const fmt = (x: number, unit: 'k' | 'M' | 'G') => (unit === 'k' ? `${(x / 1e3).toFixed(0)} k` : unit === 'M' ? (x / 1e6).toFixed(2) : (x / 1e9).toFixed(2));
  const ratios = (a: string, b: string) => rounds.map((m) => (m.get(a)! / m.get(b)!).toFixed(2)).join(' / ');

  console.log(`\nvdpa-wasm devices — Node ${process.version}, ${process.arch}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), SIMD ${hasSimd() ? 'on' : 'off'}`);
  console.log(`load average before: ${load0.map((x) => x.toFixed(2)).join(' ')}, after: ${loadavg().map((x) => x.toFixed(2)).join(' ')}; tinybench ${TIME} ms per task, ${ROUNDS} rounds (ratios per round, figures = median)`);
  console.log('Rates are per second of process CPU time (user + system) unless marked wall: the machine is shared, and wall time counts the other tenants.\n');

  console.log('virtio-blk, RAM disk of 64 MiB, queue size 256\n');
  console.log('| case | IOPS (median) | GB/s | vs plain copy (per round) | IOPS wall |');
  console.log('|---|---:|---:|---:|---:|');
  const copy4 = 'blk copy baseline 4K';
  const copy128 = 'blk copy baseline 128K seq';
  for (const [name, c] of Object.entries(blkCases)) {
    const base = c.bytes === 4096 ? copy4 : copy128;
    const m = med(name);
    console.log(`| ${name} | ${fmt(m, 'k')} | ${fmt(m * c.bytes, 'G')} | ${name === base ? '1' : ratios(name, base)} | ${fmt(wallMed(name), 'k')} |`);
  }
  const qd = (a: string, b: string) => `${ratios(a, b)} (median ${(med(a) / med(b)).toFixed(2)})`;
  console.log(`\nQD32/QD1: readMany ${qd('blk readMany 4K QD32', 'blk readMany 4K QD1')}; writeMany ${qd('blk writeMany 4K QD32', 'blk writeMany 4K QD1')}; read() ${qd('blk read() 4K QD32', 'blk read() 4K QD1')}`);
  console.log(`batch API vs read() at QD32: ${qd('blk readMany 4K QD32', 'blk read() 4K QD32')}`);

  console.log('\nvirtio-net loopback (vdpasim_net), queue size 256, frames received per second\n');
  console.log('| case | Mpps (median) | per round | vs per-frame API (per round) | Mpps wall |');
  console.log('|---|---:|---:|---:|---:|');
  for (const len of [64, 1514]) {
    const base = `net ${len}B sendBatch(32) + onFrame (per-frame API)`;
    for (const name of Object.keys(netCases).filter((n) => n.startsWith(`net ${len}B`))) {
      console.log(`| ${name} | ${fmt(med(name), 'M')} | ${per(name).map((x) => fmt(x, 'M')).join(' / ')} | ${name === base ? '1' : ratios(name, base)} | ${fmt(wallMed(name), 'M')} |`);
    }
  }
  if (rxFrames > sent) throw new Error(`received ${rxFrames} of ${sent}`);
  console.log(`(frames sent ${sent}, received ${rxFrames + 0}; ${net.stats.rxPackets} counted by the driver)`);

  // Allocation check: GCs while 1000 readMany(32) batches and 1000 net batches run.
  let gcs = 0;
  const obs = new PerformanceObserver((list) => { gcs += list.getEntries().length; });
  obs.observe({ entryTypes: ['gc'] });
  await new Promise((r) => setTimeout(r, 20));
  gcs = 0;
  const h0 = process.memoryUsage().heapUsed;
  for (let i = 0; i < 1000; i++) await blk.readMany(nextSecs(32), 4096, zc32);
  const h1 = process.memoryUsage().heapUsed;
  receiveBy('batch');
  const f64 = Array.from({ length: 32 }, () => frame(64));
  for (let i = 0; i < 1000; i++) {
    net.sendBatch(f64);
    await null;
  }
  const h2 = process.memoryUsage().heapUsed;
  await new Promise((r) => setTimeout(r, 20));
  obs.disconnect();
  console.log(`\nheap growth: 32,000 blk requests (readMany) ${((h1 - h0) / 32000).toFixed(0)} B/request; 32,000 net frames (sendBatch + onFrames) ${((h2 - h1) / 32000).toFixed(0)} B/frame; GC events ${gcs}`);

  const T = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const r32 = med('blk readMany 4K QD32');
  const w32 = med('blk writeMany 4K QD32');
  const seq = med('blk readMany 128K seq zero-copy') * (128 << 10);
  const seq8 = med('blk readMany 128K seq QD8 zero-copy') * (128 << 10);
  const seqCopy = med('blk readMany 128K seq') * (128 << 10);
  const n64 = med('net 64B sendBatch(32) + onFrames');
  const n1514 = med('net 1514B sendBatch(32) + onFrames');
  const s64 = med('net 64B send() ×32 + onFrames');
  const sm64 = med('net 64B send(f, more) ×32 + onFrames');
  console.log('\nissue 11 targets (medians):');
  console.log(`- blk 4 KiB random read QD32 ≥ 400 k IOPS: ${fmt(r32, 'k')} — ${T(r32 >= 4e5)}; ≥ 2× QD1: ${(r32 / med('blk readMany 4K QD1')).toFixed(2)}× — ${T(r32 >= 2 * med('blk readMany 4K QD1'))}`);
  console.log(`- blk 4 KiB random write QD32 ≥ 400 k IOPS: ${fmt(w32, 'k')} — ${T(w32 >= 4e5)}; ≥ 2× QD1: ${(w32 / med('blk writeMany 4K QD1')).toFixed(2)}× — ${T(w32 >= 2 * med('blk writeMany 4K QD1'))}`);
  console.log(`- blk 128 KiB sequential read ≥ 8 GB/s: QD1 zero-copy ${(seq / 1e9).toFixed(2)} GB/s — ${T(seq >= 8e9)}; QD8 zero-copy ${(seq8 / 1e9).toFixed(2)} GB/s — ${T(seq8 >= 8e9)}; QD1 into a JS buffer ${(seqCopy / 1e9).toFixed(2)} GB/s — ${T(seqCopy >= 8e9)}`);
  console.log(`- net 64 B ≥ 8 Mpps: ${fmt(n64, 'M')} — ${T(n64 >= 8e6)}; 1514 B ≥ 2 Mpps: ${fmt(n1514, 'M')} — ${T(n1514 >= 2e6)}; send() 64 B ≥ 2 Mpps: ${fmt(s64, 'M')} — ${T(s64 >= 2e6)} (send(f, more): ${fmt(sm64, 'M')} — ${T(sm64 >= 2e6)})`);

  // Footprint, in a fresh process so the benchmarks above do not count.
  const script = fileURLToPath(new URL('./devices-footprint.js', import.meta.url));
  console.log('\n' + execFileSync(process.execPath, [script], { encoding: 'utf8' }).trim());
}

await main();
