// Live migration between device workers (issue 9 §4, target: switchover downtime < 5 ms between
// workers): the source device in one device worker, the destination in another, one shared
// platform, the driver in this thread bound through a slot. Downtime = source suspend requested
// → destination resumed. Two ways, measured in the same run: two-stage (the early state moves
// before the stop; inside it the delta goes through the devices' mailboxes — suspend+save,
// load, resume — answered from the workers' serving loops, unless a blk source must wait for
// its backend, which goes by the channel) and the whole state inside the downtime (channel
// round trips: suspend+save, load; then the mailbox resume). blk RAM disks are also copied
// while stopped.
// Workloads: vdpasim_net with 8 queue pairs and full control state (every rx bit, 64 + 64 MACs,
// 300 VLANs), a frame queued by the driver during every switchover; vdpasim_blk with a 256 KiB
// and a 4 MiB RAM disk (copied while stopped), and with a 4 MiB file both workers open
// (`backend: { file }`: shared storage, nothing copied; the source's file writes in flight are
// drained inside the suspend, its reads move as records), a write queued during every
// switchover, and the same file with 32 reads sent just before every stop.
// Run: npm run bench:migration-worker, or node --import tsx bench/migration-worker.bench.ts
// (MIG_N=… migrations per workload)
import {
  Platform, VirtioNetDriver, VirtioBlkDriver, migrateBetweenWorkers, quantile,
  type WorkerMigrationReport, type RemoteVdpaDevice,
} from '../src/index.ts';
import { spawnDeviceWorker, type DeviceWorker } from '../src/node.ts';
import { slotDriver, fullControlState } from '../test/helpers/migration.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const N = Number(process.env.MIG_N ?? 200);
let names = 0;

function summary(name: string, reps: WorkerMigrationReport[]): Record<string, string> {
  type Ms = 'downtimeMs' | 'suspendMs' | 'saveMs' | 'loadMs' | 'diskMs' | 'resumeMs';
  const q = (k: Ms, p: number) => quantile(reps.map((r) => r[k]).sort((a, b) => a - b), p).toFixed(3);
  return {
    workload: name, n: String(reps.length), 'downtime p50 ms': q('downtimeMs', 0.5), 'downtime p99 ms': q('downtimeMs', 0.99),
    'suspend p50': q('suspendMs', 0.5), 'save p50': q('saveMs', 0.5), 'load p50': q('loadMs', 0.5), 'disk p50': q('diskMs', 0.5),
    'resume p50': q('resumeMs', 0.5), 'state bytes': String(reps[0]!.stateBytes),
    'by mailbox': `${reps.filter((r) => r.mailbox).length}/${reps.length}`,
    'disk bytes copied': String(reps[0]!.diskBytes), drained: String(reps.reduce((a, r) => a + r.drained, 0)),
    'reads moved': String(reps.reduce((a, r) => a + r.recorded, 0)),
  };
}

async function net(p: Platform, w: DeviceWorker[], early: boolean): Promise<WorkerMigrationReport[]> {
  const add = async (s: number): Promise<RemoteVdpaDevice> => {
    const name = `bnet${++names}`;
    await w[s]!.bus.devAdd('vdpasim_net', name, { mac: '02:00:00:00:00:09', maxVqp: 8 });
    return w[s]!.bus.openDevice(name);
  };
  let side = 0;
  let cur = await add(side);
  const { slot, drv } = slotDriver(p, cur, 256, VirtioNetDriver);
  await fullControlState(drv, 8);
  let got = 0;
  drv.onFrame(() => got++);
  const frame = new Uint8Array(64).fill(0x5a);
  frame.set([2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 9]);
  const reps: WorkerMigrationReport[] = [];
  for (let m = 0; m < N; m++) {
    const dst = await add(1 - side);
    const mig = migrateBetweenWorkers({ source: cur, destination: dst, slot, early });
    drv.send(frame); // queued while the device is stopped
    reps.push(await mig);
    await w[side]!.bus.devDel(cur.name);
    cur = dst;
    side = 1 - side;
  }
  const end = Date.now() + 5000;
  while (got < N && Date.now() < end) await new Promise((r) => setTimeout(r, 2));
  if (got !== N) throw new Error(`net: ${got} of ${N} frames came back`);
  await w[side]!.bus.devDel(cur.name);
  return reps;
}

/** `file`: a disk image both workers open (created by the first device); else a RAM disk. */
async function blk(p: Platform, w: DeviceWorker[], early: boolean, sectors: number, file?: string, reads = 0, inflight: 'record' | 'drain' = 'record'): Promise<WorkerMigrationReport[]> {
  let first = true;
  const add = async (s: number): Promise<RemoteVdpaDevice> => {
    const name = `bblk${++names}`;
    await w[s]!.bus.devAdd('vdpasim_blk', name, file ? { backend: first ? { file, size: sectors * 512 } : { file } } : { capacity: sectors });
    first = false;
    return w[s]!.bus.openDevice(name);
  };
  let side = 0;
  let cur = await add(side);
  const { slot, drv } = slotDriver(p, cur, 64, VirtioBlkDriver);
  const data = new Uint8Array(4096).fill(0xa5);
  const bufs = Array.from({ length: reads }, () => new Uint8Array(4096));
  const reps: WorkerMigrationReport[] = [];
  for (let m = 0; m < N; m++) {
    const dst = await add(1 - side);
    // Reads sent just before the stop (in the last pre-copy round): those still out at the
    // source's file then move as records.
    let rd: Promise<unknown>[] = [];
    const round = () => { rd = bufs.map((b, i) => drv.read((i * 8) % sectors, b)); };
    const mig = migrateBetweenWorkers({ source: cur, destination: dst, slot, early, round, inflight });
    const wr = drv.write((m * 8) % sectors, data); // queued while the device is stopped
    reps.push(await mig);
    await wr;
    await Promise.all(rd);
    await w[side]!.bus.devDel(cur.name);
    cur = dst;
    side = 1 - side;
  }
  await w[side]!.bus.devDel(cur.name);
  return reps;
}

const p = Platform.create({ shared: true, ramSize: 64 << 20, privateSize: 16 << 20 });
const w = [await spawnDeviceWorker({ platform: p }), await spawnDeviceWorker({ platform: p })];
const dir = mkdtempSync(join(tmpdir(), 'vdpa-bench-'));
try {
  const rows = [];
  for (const early of [true, false]) {
    const how = early ? 'two-stage' : 'whole state';
    rows.push(
      summary(`vdpasim_net, 8 queue pairs, full control state, ${how}`, await net(p, w, early)),
      summary(`vdpasim_blk, 256 KiB RAM disk copied, ${how}`, await blk(p, w, early, 512)),
      summary(`vdpasim_blk, 4 MiB RAM disk copied, ${how}`, await blk(p, w, early, 8192)),
      summary(`vdpasim_blk, 4 MiB file shared (no copy), ${how}`, await blk(p, w, early, 8192, join(dir, `disk-${how}.img`))),
      summary(`vdpasim_blk, 4 MiB file shared, 32 reads sent just before the stop, ${how}`, await blk(p, w, early, 8192, join(dir, `disk-r-${how}.img`), 32)),
    );
    if (early) rows.push(summary('the same, reads drained (inflight: drain), two-stage', await blk(p, w, early, 8192, join(dir, 'disk-rd.img'), 32, 'drain')));
  }
  console.table(rows);
} finally {
  await Promise.all(w.map((x) => x.close()));
  rmSync(dir, { recursive: true, force: true });
}
