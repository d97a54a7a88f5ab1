// Live migration between device workers (issue 9 §4, target: switchover downtime < 5 ms between
// workers): the source device in one device worker, the destination in another, one shared
// platform, the driver in this thread bound through a slot. Downtime = source suspend requested
// → destination resumed (two-stage with a slot: its load answered; the worker then resumes it,
// reported as startMs / startedMs). Two ways, measured in the same run: two-stage (the early
// state moves before the stop; inside it the delta goes through the devices' mailboxes —
// suspend+save, load — answered from the workers' serving loops, unless a blk source must wait
// for its backend, which goes by the channel) and the whole state inside the downtime (channel
// round trips: suspend+save, load; then the mailbox resume). blk RAM disks are also copied
// while stopped.
// Workloads: vdpasim_blk on a networked volume (bench/remote-disk-worker.ts: a SharedArrayBuffer
// volume both workers open, answering REMOTE_DISK_US after each request) with 128 reads or 128
// writes sent before every stop, which waits until the source has sent them all to the volume
// (so they are in flight: they move as records), and the same reads drained; vdpasim_net with
// 8 queue pairs and full control state (every rx bit, 64 + 64 MACs, 300 VLANs); vdpasim_blk
// with a 256 KiB and a 4 MiB RAM disk (copied while stopped), and with a 4 MiB file both
// workers open (`backend: { file }`: shared storage, nothing copied), also with 32 reads sent
// just before every stop. With every migration the driver also sends a frame or a 4 KiB write
// as it starts (the source serves it, or it moves in flight, or waits in the ring).
// Run: npm run bench:migration-worker, or node --import tsx bench/migration-worker.bench.ts
// (MIG_N=… migrations per workload, after MIG_WARMUP=… not counted, default 50)
import {
  Platform, VirtioNetDriver, VirtioBlkDriver, migrateBetweenWorkers, quantile,
  type WorkerMigrationReport, type RemoteVdpaDevice,
} from '../src/index.ts';
import { spawnDeviceWorker } from '../src/node.ts';
import { startModuleWorker } from '../src/worker/node.ts';
import { RemoteVdpaBus } from '../src/worker/remote-device.ts';
import { slotDriver, fullControlState } from '../test/helpers/migration.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const N = Number(process.env.MIG_N ?? 200);
/** Migrations run first and not counted (the workers' JIT compiles the path meanwhile), as in bench/migration.bench.ts. */
const WARMUP = Number(process.env.MIG_WARMUP ?? 50);
/** Device workers, by their buses; a networked-volume worker also tells how many requests its disk was sent. */
type Workers = { bus: RemoteVdpaBus; issued?: () => Promise<number> }[];
let names = 0;

function summary(name: string, all: WorkerMigrationReport[]): Record<string, string> {
  const reps = all.slice(WARMUP);
  type Ms = 'downtimeMs' | 'suspendMs' | 'saveMs' | 'loadMs' | 'diskMs' | 'resumeMs' | 'startMs' | 'startedMs';
  const q = (k: Ms, p: number) => quantile(reps.map((r) => r[k]).sort((a, b) => a - b), p).toFixed(3);
  return {
    workload: name, n: String(reps.length), 'cold (1st) ms': all[0]!.downtimeMs.toFixed(3), 'downtime p50 ms': q('downtimeMs', 0.5), 'downtime p99 ms': q('downtimeMs', 0.99),
    'suspend p50': q('suspendMs', 0.5), 'save p50': q('saveMs', 0.5), 'load p50': q('loadMs', 0.5), 'disk p50': q('diskMs', 0.5),
    'resume p50': q('resumeMs', 0.5), 'state bytes': String(reps[0]!.stateBytes),
    'by mailbox': `${reps.filter((r) => r.mailbox).length}/${reps.length}`,
    'disk bytes copied': String(reps[0]!.diskBytes), drained: String(reps.reduce((a, r) => a + r.drained, 0)),
    'moved in flight': String(reps.reduce((a, r) => a + r.recorded, 0)),
    'dst start p50': q('startMs', 0.5), 'started p50 ms': q('startedMs', 0.5), 'started p99 ms': q('startedMs', 0.99),
  };
}

async function net(p: Platform, w: Workers, early: boolean): Promise<WorkerMigrationReport[]> {
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
  for (let m = 0; m < WARMUP + N; m++) {
    const dst = await add(1 - side);
    const mig = migrateBetweenWorkers({ source: cur, destination: dst, slot, early });
    drv.send(frame); // sent as the migration starts: the source serves it, or it waits in the ring for the destination
    reps.push(await mig);
    await w[side]!.bus.devDel(cur.name);
    cur = dst;
    side = 1 - side;
  }
  const end = Date.now() + 5000;
  while (got < WARMUP + N && Date.now() < end) await new Promise((r) => setTimeout(r, 2));
  if (got !== WARMUP + N) throw new Error(`net: ${got} of ${WARMUP + N} frames came back`);
  await w[side]!.bus.devDel(cur.name);
  return reps;
}

/**
 * `file`: a disk image both workers open (created by the first device); else a RAM disk.
 * `sent` requests (`kind`) go out just before every stop.
 */
async function blk(p: Platform, w: Workers, early: boolean, sectors: number, file?: string, sent = 0, inflight: 'record' | 'drain' = 'record', kind: 'read' | 'write' = 'read'): Promise<WorkerMigrationReport[]> {
  let first = true;
  const add = async (s: number): Promise<RemoteVdpaDevice> => {
    const name = `bblk${++names}`;
    await w[s]!.bus.devAdd('vdpasim_blk', name, file ? { backend: first ? { file, size: sectors * 512 } : { file } } : { capacity: sectors });
    first = false;
    return w[s]!.bus.openDevice(name);
  };
  let side = 0;
  let cur = await add(side);
  const { slot, drv } = slotDriver(p, cur, 512, VirtioBlkDriver);
  const data = new Uint8Array(4096).fill(0xa5);
  const bufs = Array.from({ length: sent }, () => new Uint8Array(4096).fill(0x5a));
  const reps: WorkerMigrationReport[] = [];
  for (let m = 0; m < WARMUP + N; m++) {
    const dst = await add(1 - side);
    // Requests sent just before the stop (in the last pre-copy round): those still out at the
    // source's backend then move as records.
    let rd: Promise<unknown>[] = [];
    const round = async () => {
      const issued = sent > 0 ? w[side]!.issued : undefined;
      const base = issued ? await issued() : 0;
      rd = bufs.map((b, i) => (kind === 'read' ? drv.read((i * 8) % sectors, b) : drv.write((i * 8) % sectors, b)));
      // At a networked volume: stop once the source has sent them all to its disk (in flight
      // for one round trip).
      if (issued) while ((await issued()) - base < sent);
    };
    const mig = migrateBetweenWorkers({ source: cur, destination: dst, slot, early, round, inflight });
    const wr = drv.write((m * 8) % sectors, data); // sent as the migration starts: served by the source, moved in flight, or left in the ring
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

const p = Platform.create({ shared: true, ramSize: 64 << 20, privateSize: 32 << 20 });
const w = [await spawnDeviceWorker({ platform: p }), await spawnDeviceWorker({ platform: p })];
// Two workers whose disks are networked storage one round trip (REMOTE_DISK_US) away.
const US = Number(process.env.REMOTE_DISK_US ?? 5000);
const volume = new SharedArrayBuffer(4 << 20);
const rw = [0, 1].map(() => startModuleWorker(import.meta.url, './remote-disk-worker', { volume, latencyUs: US }));
const remote: Workers = (await Promise.all(rw.map((x) => RemoteVdpaBus.connect(x, p, { attach: { priv: 4 << 20, ram: 4 << 20 } }))))
  .map((bus) => ({ bus, issued: () => bus.request('issued') as Promise<number> }));
const dir = mkdtempSync(join(tmpdir(), 'vdpa-bench-'));
try {
  const rows: Record<string, string>[] = [];
  // MIG_ONLY=regex runs only the workloads whose name matches.
  const only = process.env.MIG_ONLY ? new RegExp(process.env.MIG_ONLY) : null;
  const run = async (name: string, fn: () => Promise<WorkerMigrationReport[]>) => { if (!only || only.test(name)) rows.push(summary(name, await fn())); };
  const vol = `4 MiB networked volume (${US} µs away, shared)`;
  await run(`vdpasim_blk, ${vol}, 128 reads in flight, two-stage`, () => blk(p, remote, true, 8192, 'vol-r', 128));
  await run(`vdpasim_blk, ${vol}, 128 writes in flight, two-stage`, () => blk(p, remote, true, 8192, 'vol-w', 128, 'record', 'write'));
  await run(`vdpasim_blk, ${vol}, 128 reads drained (inflight: drain), two-stage`, () => blk(p, remote, true, 8192, 'vol-rd', 128, 'drain'));
  for (const early of [true, false]) {
    const how = early ? 'two-stage' : 'whole state';
    await run(`vdpasim_net, 8 queue pairs, full control state, ${how}`, () => net(p, w, early));
    await run(`vdpasim_blk, 256 KiB RAM disk copied, ${how}`, () => blk(p, w, early, 512));
    await run(`vdpasim_blk, 4 MiB RAM disk copied, ${how}`, () => blk(p, w, early, 8192));
    await run(`vdpasim_blk, 4 MiB file shared (no copy), ${how}`, () => blk(p, w, early, 8192, join(dir, `disk-${how}.img`)));
    await run(`vdpasim_blk, 4 MiB file shared, 32 reads sent just before the stop, ${how}`, () => blk(p, w, early, 8192, join(dir, `disk-r-${how}.img`), 32));
    if (early) await run('the same, reads drained (inflight: drain), two-stage', () => blk(p, w, early, 8192, join(dir, 'disk-rd.img'), 32, 'drain'));
  }
  console.table(rows);
} finally {
  await Promise.all(w.map((x) => x.close()));
  for (const x of remote) x.bus.close();
  await Promise.all(rw.map((x) => x.terminate()));
  rmSync(dir, { recursive: true, force: true });
}
