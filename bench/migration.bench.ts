// Live-migration figures (issue 9), in one thread:
//  1. switchover downtime (source suspend requested → destination resumed and serving what the
//     driver queued meanwhile), p50/p99 over many migrations, for vdpasim_net with 8 queue
//     pairs and full control state (every rx mode bit, 64 + 64 MAC entries, 300 VLANs) and for
//     vdpasim_blk with 128 requests in flight at the backend, reads or writes: recorded in the
//     state and re-submitted by the destination (the default; a write completes there once the
//     source's copy has landed, after the window) or drained inside the downtime, for comparison;
//  2. the datapath cost of dirty-page logging, on vs off (tinybench, same run): device
//     pop + copy-in + push of 32 writable 1500-byte chains per batch, split and packed.
// Each workload first runs MIG_WARMUP migrations (default 500) that are not counted in the
// steady-state figures: V8 compiles the migration path while it runs. A function that runs once
// per migration turns hot only after a few hundred of them, and while TurboFan compiles it the
// main thread stalls about as long as the compile takes (0.5–4.5 ms here, with --trace-opt:
// every window over 0.5 ms in migrations 51–550 held a compile of a function the window
// runs). So the table also gives the warm-up's own p99 ("tier-up p99", migrations 2…WARMUP),
// and the very first switchover on its own ("cold"). Destinations are made before their
// switchover, as a VMM makes them during pre-copy, and two devices take turns (the old source, reset, is the next destination), so the loop
// does not pile up garbage from hundreds of destroyed devices that a single migration never has.
// Run: node --import tsx bench/migration.bench.ts   (MIG_N=… migrations, BENCH_TIME=… ms per task)
import { Bench } from 'tinybench';
import {
  Platform, DirtyLog, DriverQueue, DeviceQueue, ringFeatures, migrate, quantile, type MigrationReport, type VdpaSimNet, type VdpaSimBlk,
} from '../src/index.ts';
import { netDev, netDriver, blkDev, blkDriver, SharedDisk, turn, fullControlState } from '../test/helpers/migration.ts';

const N = Number(process.env.MIG_N ?? 300);
const WARMUP = Number(process.env.MIG_WARMUP ?? 500);
const TIME = Number(process.env.BENCH_TIME ?? 500);

/**
 * The figures a report gives, without the state it carries: a VMM does not keep every
 * migration's control state, and 550 of them held here (a net state's MAC tables, a blk delta's
 * bytes) would grow the old generation and bring major collections into later windows.
 */
type Timing = Omit<MigrationReport, 'state' | 'delta'>;
function timing(r: MigrationReport): Timing {
  const { state: _s, delta: _d, ...t } = Object.getOwnPropertyDescriptors(r) as unknown as Record<string, PropertyDescriptor>;
  const out: Record<string, unknown> = {};
  for (const [k, d] of Object.entries(t)) if ('value' in d) out[k] = d.value;
  return out as Timing;
}

function summary(name: string, all: Timing[]): Record<string, string> {
  const reps = all.slice(WARMUP);
  const q = (k: keyof Timing, p: number) => quantile(reps.map((r) => r[k] as number).sort((a, b) => a - b), p).toFixed(3);
  const tierUp = all.slice(1, WARMUP).map((r) => r.downtimeMs).sort((a, b) => a - b);
  return {
    workload: name, n: String(reps.length), 'cold (1st) ms': all[0]!.downtimeMs.toFixed(3),
    'tier-up p99 ms': tierUp.length > 0 ? quantile(tierUp, 0.99).toFixed(3) : '—',
    'downtime p50 ms': q('downtimeMs', 0.5), 'downtime p99 ms': q('downtimeMs', 0.99),
    'suspend p50': q('suspendMs', 0.5), 'save p50': q('saveMs', 0.5), 'load p50': q('loadMs', 0.5), 'resume p50': q('resumeMs', 0.5),
    'state bytes': String(reps[0]!.stateBytes), 'moved in flight': String(reps[0]!.recorded), 'early p50': q('earlyMs', 0.5),
  };
}

async function netDowntime(early: boolean): Promise<Timing[]> {
  const p = Platform.create({ ramSize: 32 << 20 });
  let src: VdpaSimNet = netDev(p, 8);
  const { slot, drv } = netDriver(p, src, 'split', 256);
  await fullControlState(drv, 8);
  const frame = new Uint8Array(64).fill(0x5a);
  const reps: Timing[] = [];
  let spare = netDev(p, 8);
  for (let m = 0; m < WARMUP + N; m++) {
    const dst = spare;
    reps.push(timing(await migrate({
      source: src, destination: dst, announce: false, early,
      // The driver sends while the device is stopped: the destination serves it on resume.
      switchover: (d) => { slot.switchTo(d); drv.send(frame); },
    })));
    src.reset();
    spare = src;
    src = dst;
    await turn();
  }
  return reps;
}

async function blkDowntime(early: boolean, depth = 128, kind: 'read' | 'write' = 'read', inflight: 'record' | 'drain' = 'record'): Promise<Timing[]> {
  const p = Platform.create({ ramSize: 32 << 20 });
  const disk = new SharedDisk(4096);
  let src: VdpaSimBlk = blkDev(p, disk);
  let spare = blkDev(p, disk);
  const { slot, drv } = blkDriver(p, src, 'split', 256);
  const reps: Timing[] = [];
  // The driver's buffers are a fixed pool, as a guest's pages are (not a new ArrayBuffer per request).
  const bufs = Array.from({ length: depth }, () => new Uint8Array(4096));
  for (let m = 0; m < WARMUP + N; m++) {
    if (kind === 'write') for (const b of bufs) b.fill(m);
    const reqs = bufs.map((b, i) => (kind === 'read' ? drv.read(i * 8, b) : drv.write(i * 8, b)));
    await Promise.resolve();
    if (src.inFlight !== depth) throw new Error(`${src.inFlight} requests in flight, wanted ${depth}`);
    const dst = spare;
    const rep = await migrate({ source: src, destination: dst, early, inflight, switchover: (d) => slot.switchTo(d) });
    if (rep.recorded !== (inflight === 'record' ? depth : 0)) throw new Error(`${rep.recorded} requests moved in flight`);
    reps.push(timing(rep));
    await Promise.all(reqs);
    src.reset();
    spare = src;
    src = dst;
  }
  return reps;
}

function loggingCost(): Bench {
  const bench = new Bench({ time: TIME });
  for (const packed of [false, true]) {
    const p = Platform.create({ ramSize: 16 << 20 });
    const features = ringFeatures({ packed });
    const B = 32;
    const drv = new DriverQueue(p, { size: 256, features, batch: B });
    const dev = new DeviceQueue(p, { size: 256, features, ...drv.addresses, batch: B });
    const bufs = p.allocBuffer(B * 1536, 4096);
    const src = p.priv.alloc(B * 1536, 64);
    const lens = p.priv.alloc(4 * B, 4);
    for (let k = 0; k < B; k++) p.u32[(lens >> 2) + k] = 1500;
    for (let k = 0; k < B; k++) drv.stageOne(k, bufs + k * 1536, 1536, true);
    const round = () => {
      for (let r = 0; r < 16; r++) {
        drv.submit(true);
        const n = dev.pop(B);
        dev.copyIn(n, src, 1536, lens);
        dev.pushPopped(n);
        drv.getUsed(B);
      }
    };
    const log = new DirtyLog(p);
    const name = `${packed ? 'packed' : 'split'} pop+copy-in+push ${B}×1500 B writable chains`;
    bench.add(`${name}, log off`, round, { beforeAll: () => log.stop() });
    // Marking costs the same whatever the bitmap holds (load, or, store): the VMM's collect()
    // is not datapath work and stays out of the timed loop.
    bench.add(`${name}, log on`, round, { beforeAll: () => log.start(), afterAll: () => log.stop() });
  }
  return bench;
}

const rows = [];
for (const early of [true, false]) {
  const how = early ? 'two-stage (delta in the window)' : 'whole state in the window';
  rows.push(summary(`vdpasim_net 8 qp, full control state, ${how}`, await netDowntime(early)));
  rows.push(summary(`vdpasim_blk, 128 reads in flight (moved as records), ${how}`, await blkDowntime(early)));
}
rows.push(summary('vdpasim_blk, 128 writes in flight (moved as records), two-stage', await blkDowntime(true, 128, 'write')));
rows.push(summary('vdpasim_blk, 128 reads in flight drained (inflight: drain), two-stage', await blkDowntime(true, 128, 'read', 'drain')));
rows.push(summary('vdpasim_blk, 128 writes in flight drained (inflight: drain), two-stage', await blkDowntime(true, 128, 'write', 'drain')));
rows.push(summary('vdpasim_blk, nothing in flight, two-stage (delta in the window)', await blkDowntime(true, 0)));
console.log(`\nSwitchover downtime, one thread, ${N} migrations each after ${WARMUP} of warm-up (Node ${process.version})`);
console.table(rows);
// The machine is shared: run the on/off pairs ROUNDS times and take the median ratio.
const ROUNDS = Number(process.env.LOG_ROUNDS ?? 3);
const ratios: Record<string, number[]> = { split: [], packed: [] };
for (let r = 0; r < ROUNDS; r++) {
  const b = loggingCost();
  await b.run();
  if (r === ROUNDS - 1) console.table(b.table());
  // Median latency: the mean carries the outliers of a shared machine.
  const hz = (name: string): number => {
    const res = b.getTask(name)?.result;
    return res && 'latency' in res ? 1e3 / (res.latency as { p50: number }).p50 : NaN;
  };
  for (const l of ['split', 'packed']) {
    const base = `${l} pop+copy-in+push 32×1500 B writable chains`;
    ratios[l]!.push(hz(`${base}, log on`) / hz(`${base}, log off`));
  }
}
for (const [l, rs] of Object.entries(ratios)) {
  const m = quantile(rs, 0.5);
  console.log(`${l}: dirty logging on/off throughput ${m.toFixed(3)} (${((1 - m) * 100).toFixed(1)} % cost; rounds: ${rs.map((x) => x.toFixed(3)).join(', ')})`);
}
