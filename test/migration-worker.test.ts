// Live migration between device workers (issue 9 §4): the source device in one worker, the
// destination in another, on one shared platform; the drivers run in the main thread, bound
// through a slot, and keep their rings. blk: a verified random read/write workload across ≥ 50
// migrations back and forth (no lost, duplicated or corrupted write); net: loopback traffic
// across the switchovers (every frame back once, byte for byte); a refusing destination leaves
// the source running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VirtioBlkDriver, VirtioNetDriver, migrateBetweenWorkers, createVdpaSlot,
  VirtioError, Code, type RemoteVdpaDevice,
} from '../src/index.ts';
import { spawnDeviceWorker, type DeviceWorker } from '../src/node.ts';
import { blkWorkload, blockPattern, slotDriver } from './helpers/migration.ts';
import { until } from './helpers/until.ts';

const BLOCK = 4096;
const BLOCKS = 64;
const SECTORS = BLOCKS * (BLOCK / 512);
const DEPTH = 8;

const pattern = (b: number, tag: number): Uint8Array => blockPattern(b, tag, BLOCK);

const turn = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

async function twoWorkers(): Promise<{ p: Platform; w: [DeviceWorker, DeviceWorker] }> {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const a = await spawnDeviceWorker({ platform: p });
  const b = await spawnDeviceWorker({ platform: p });
  return { p, w: [a, b] };
}

let names = 0;

test('blk: 60 migrations between two workers under a verified random workload, RAM disk moved while stopped', async () => {
  const { p, w } = await twoWorkers();
  try {
    const add = async (side: number): Promise<RemoteVdpaDevice> => {
      const name = `wblk${++names}`;
      await w[side]!.bus.devAdd('vdpasim_blk', name, { capacity: SECTORS });
      return w[side]!.bus.openDevice(name);
    };
    let side = 0;
    let cur = await add(side);
    const { slot, drv } = slotDriver(p, cur, 64, VirtioBlkDriver);
    const work = blkWorkload(drv, { blocks: BLOCKS, depth: DEPTH, seed: 5, block: BLOCK });
    const { model, stats } = work;
    const N = Number(process.env.WMIGS ?? 60);
    const downtime: number[] = [];
    let sawQueued = 0;
    for (let m = 0; m < N; m++) {
      await turn();
      const other = 1 - side;
      const dst = await add(other);
      if (stats.inflight > 0) sawQueued++;
      const rep = await migrateBetweenWorkers({ source: cur, destination: dst, switchover: (d) => slot.switchTo(d) });
      assert.equal(rep.diskBytes, SECTORS * 512);
      downtime.push(rep.downtimeMs);
      await w[side]!.bus.devDel(cur.name); // the suspended source goes away
      cur = dst;
      side = other;
    }
    await work.stop();
    assert.deepEqual(stats.errors, []);
    assert.equal(stats.inflight, 0);
    assert.ok(sawQueued > N / 2, `driver requests were outstanding at most switchovers (${sawQueued}/${N})`);
    assert.ok(stats.writes > N && stats.reads > N, `workload ran (${stats.writes} writes, ${stats.reads} reads)`);
    // The whole disk, read through the guest's ring from the last destination, is the model.
    for (let b = 0; b < BLOCKS; b++) {
      const buf = new Uint8Array(BLOCK);
      await drv.read(b * 8, buf);
      assert.deepEqual(buf, pattern(b, model[b]!), `block ${b}`);
    }
    downtime.sort((a, c) => a - c);
    console.log(`# blk between workers: ${N} migrations, ${stats.writes} writes, ${stats.reads} reads; downtime p50 ${downtime[N >> 1]!.toFixed(3)} ms`);
  } finally {
    await Promise.all(w.map((x) => x.close()));
  }
});

test('net: loopback traffic across 50 switchovers between workers: every frame back once, byte for byte', async () => {
  const { p, w } = await twoWorkers();
  try {
    const add = async (side: number): Promise<RemoteVdpaDevice> => {
      const name = `wnet${++names}`;
      await w[side]!.bus.devAdd('vdpasim_net', name, { mac: '02:00:00:00:00:07' });
      return w[side]!.bus.openDevice(name);
    };
    let side = 0;
    let cur = await add(side);
    const { slot, drv } = slotDriver(p, cur, 64, VirtioNetDriver);
    const got: Uint8Array[] = [];
    drv.onFrame((f) => got.push(f.slice()));
    const sent: Uint8Array[] = [];
    const frame = (i: number): Uint8Array => {
      const f = new Uint8Array(60 + ((i * 37) % 900));
      f.set([0x02, 0, 0, 0, 0, 7, 0x02, 0, 0, 0, 0, 7, 0x88, 0xb5]);
      for (let j = 14; j < f.length; j++) f[j] = (i * 31 + j * 7) & 0xff;
      new DataView(f.buffer).setUint32(14, i, true);
      return f;
    };
    let seq = 0;
    const N = 50;
    let sentWhileStopped = 0;
    for (let m = 0; m < N; m++) {
      // Traffic before the switch, some queued during it (the device is stopped), more after.
      for (let k = 0; k < 4; k++) {
        const f = frame(seq++);
        if (drv.sendBatch([f]) === 1) sent.push(f);
      }
      const dst = await add(1 - side);
      // The slot form: callbacks installed on the destination before the source stops.
      const mig = migrateBetweenWorkers({ source: cur, destination: dst, slot });
      for (let k = 0; k < 2; k++) {
        const f = frame(seq++);
        if (drv.sendBatch([f]) === 1) { sent.push(f); sentWhileStopped++; }
      }
      await mig;
      await until(() => got.length >= sent.length - sentWhileStopped, 10000, `frames after migration ${m}`);
      await w[side]!.bus.devDel(cur.name);
      cur = dst;
      side = 1 - side;
    }
    await until(() => got.length >= sent.length, 10000, 'every frame');
    await turn();
    // No frame lost, duplicated, reordered or corrupted: loopback on one device, the ring moved.
    assert.equal(got.length, sent.length);
    for (let i = 0; i < sent.length; i++) assert.deepEqual(got[i], sent[i], `frame ${i}`);
    assert.ok(sentWhileStopped > 0);
  } finally {
    await Promise.all(w.map((x) => x.close()));
  }
});

test('a destination that refuses the state (another disk size) leaves the source running', async () => {
  const { p, w } = await twoWorkers();
  try {
    await w[0].bus.devAdd('vdpasim_blk', 'src', { capacity: SECTORS });
    await w[1].bus.devAdd('vdpasim_blk', 'small', { capacity: SECTORS / 2 });
    await w[1].bus.devAdd('vdpasim_net', 'net', {});
    const src = await w[0].bus.openDevice('src');
    const small = await w[1].bus.openDevice('small');
    const net = await w[1].bus.openDevice('net');
    const { slot, drv } = slotDriver(p, src, 64, VirtioBlkDriver);
    await drv.write(8, pattern(1, 1));
    let switched = false;
    await assert.rejects(migrateBetweenWorkers({ source: src, destination: small, switchover: () => (switched = true) }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
    assert.equal(switched, false);
    assert.equal(small.getStatus(), 0, 'the refusing destination changed nothing');
    // The same with the slot form: the callbacks it installed ahead on the destination are removed.
    await assert.rejects(migrateBetweenWorkers({ source: src, destination: small, slot }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
    assert.equal(slot.current, src);
    await assert.rejects(migrateBetweenWorkers({ source: src, destination: net as RemoteVdpaDevice }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
    // A switchover that throws: the destination forgets the state, the source runs on.
    await w[1].bus.devAdd('vdpasim_blk', 'same', { capacity: SECTORS });
    const same = await w[1].bus.openDevice('same');
    await assert.rejects(migrateBetweenWorkers({ source: src, destination: same, switchover: () => { throw new VirtioError(Code.Cancelled, 'no'); } }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    assert.equal(same.getStatus(), 0);
    // The source still serves the guest's ring.
    const buf = new Uint8Array(BLOCK);
    await drv.read(8, buf);
    assert.deepEqual(buf, pattern(1, 1));
    await drv.write(16, pattern(2, 2));
    await drv.read(16, buf);
    assert.deepEqual(buf, pattern(2, 2));
    // And it can still migrate afterwards.
    const rep = await migrateBetweenWorkers({ source: src, destination: same, switchover: (d) => slot.switchTo(d) });
    assert.ok(rep.stateBytes > 0);
    await drv.read(16, buf);
    assert.deepEqual(buf, pattern(2, 2));
  } finally {
    await Promise.all(w.map((x) => x.close()));
  }
});

test('a source that is not running (no DRIVER_OK) is refused by its worker; workers on another memory are refused', async () => {
  const { w } = await twoWorkers();
  const other = Platform.create({ shared: true, ramSize: 24 << 20, privateSize: 8 << 20 });
  const w3 = await spawnDeviceWorker({ platform: other });
  try {
    await w[0].bus.devAdd('vdpasim_net', 'idle', {});
    await w[1].bus.devAdd('vdpasim_net', 'dst', {});
    await w3.bus.devAdd('vdpasim_net', 'far', {});
    const idle = await w[0].bus.openDevice('idle');
    const dst = await w[1].bus.openDevice('dst');
    const far = await w3.bus.openDevice('far');
    const slot = createVdpaSlot(idle);
    await assert.rejects(migrateBetweenWorkers({ source: idle, destination: dst, slot }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
    assert.equal(slot.current, idle);
    assert.equal(dst.getStatus(), 0);
    await assert.rejects(migrateBetweenWorkers({ source: idle, destination: far }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
    await assert.rejects(migrateBetweenWorkers({ source: idle, destination: idle }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
  } finally {
    await Promise.all([...w, w3].map((x) => x.close()));
  }
});
