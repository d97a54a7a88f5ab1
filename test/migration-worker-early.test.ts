// Two-stage migration between device workers: the early state moves before the stop and the
// delta inside the downtime through the devices' mailboxes; a control change after the early
// save makes the full state move instead (through the channel), and the destination ends with
// the change; `early: false` moves the whole state inside the downtime. The destination's
// state is read back from its worker (suspend + full save, decoded) and compared with the
// driver's view.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VirtioNetDriver, VirtioBlkDriver, migrateBetweenWorkers, VIRTIO_CONFIG_S_SUSPEND, decodeState, encodeState, VirtioError, Code, type RemoteVdpaDevice, type DeviceState,
} from '../src/index.ts';
import { spawnDeviceWorker } from '../src/node.ts';
import { slotDriver } from './helpers/migration.ts';
import { spawnHeldWorkers, stopHeldWorkers, heldBlk } from './helpers/held-backend.ts';
import { until } from './helpers/until.ts';

const hex = (m: number[]) => m.map((x) => x.toString(16).padStart(2, '0')).join(':');

/** The device's whole state, read from its worker (it is suspended for the read and resumed). */
async function stateOf(dev: RemoteVdpaDevice): Promise<DeviceState> {
  const saved = await dev.suspendAndSave();
  dev.resume();
  return decodeState(saved.state);
}

test('net between workers: delta by mailbox; a VLAN added after the early save moves the full state; early: false moves it all', async () => {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w = [await spawnDeviceWorker({ platform: p }), await spawnDeviceWorker({ platform: p })];
  try {
    let n = 0;
    const add = async (side: number): Promise<RemoteVdpaDevice> => {
      const name = `enet${++n}`;
      await w[side]!.bus.devAdd('vdpasim_net', name, { mac: '02:00:00:00:00:07', maxVqp: 4 });
      return w[side]!.bus.openDevice(name);
    };
    let side = 0;
    let cur = await add(side);
    const { slot, drv } = slotDriver(p, cur, 64, VirtioNetDriver);
    await drv.setRxMode({ promisc: false, allmulti: true, alluni: false, nomulti: false, nouni: false, nobcast: false });
    await drv.setMacTable(Array.from({ length: 64 }, (_, i) => hex([2, 1, 0, 0, 0, i])), [hex([1, 0, 0x5e, 0, 0, 1])]);
    for (let v = 1; v <= 100; v++) await drv.addVlan(v * 11);
    await drv.setQueuePairs(4);
    let got = 0;
    drv.onFrame(() => got++);
    const frame = new Uint8Array(64).fill(0x33);
    frame.set([2, 0, 0, 0, 0, 7, 2, 0, 0, 0, 0, 7]);
    const migrateTo = async (opts: { early?: boolean; round?: () => Promise<void> } = {}) => {
      const dst = await add(1 - side);
      const rep = await migrateBetweenWorkers({ source: cur, destination: dst, slot, announce: false, ...opts });
      await w[side]!.bus.devDel(cur.name);
      cur = dst;
      side = 1 - side;
      drv.send(frame);
      await until(() => got === sent + 1, 5000, 'the frame back through the destination');
      sent++;
      return rep;
    };
    let sent = 0;
    const before = await stateOf(cur);

    const a = await migrateTo();
    assert.equal(a.moved, 'delta');
    assert.equal(a.mailbox, true, 'suspend+save, load+resume: mailbox calls only');
    assert.ok(a.stateBytes < 200, `${a.stateBytes} bytes`);
    const afterA = await stateOf(cur);
    assert.deepEqual(afterA.net, before.net, 'the control state came with the early state');
    assert.deepEqual(afterA.config, before.config);

    const b = await migrateTo({ round: async () => { await drv.addVlan(4000); } });
    assert.equal(b.moved, 'full', 'the control state moved after the early save');
    assert.equal(b.mailbox, false);
    const afterB = await stateOf(cur);
    assert.ok(afterB.net!.vlans.includes(4000), 'the destination has the VLAN added during pre-copy');
    assert.deepEqual(afterB.net!.vlans, [...before.net!.vlans, 4000]);

    const c = await migrateTo({ early: false });
    assert.equal(c.moved, 'full');
    assert.equal(c.mailbox, false);
    assert.equal(c.earlyMs, 0);
    assert.equal(c.startMs, 0, 'the whole state: resumed inside the downtime');
    assert.equal(c.startedMs, c.downtimeMs);
    assert.deepEqual((await stateOf(cur)).net, afterB.net);

    // A round that throws: nothing stopped, the destination forgets the early state.
    const dst = await add(1 - side);
    await assert.rejects(migrateBetweenWorkers({ source: cur, destination: dst, slot, round: () => { throw new VirtioError(Code.Cancelled, 'operator'); } }),
      (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    assert.equal(dst.getStatus(), 0, 'the destination is fresh again');
    assert.equal(slot.current, cur);
    drv.send(frame);
    await until(() => got === sent + 1, 5000, 'the frame back through the source');
  } finally {
    await Promise.all(w.map((x) => x.close()));
  }
});

test('garbage to the worker migration requests leaves a destination holding its early state as it was; the migration then works', async () => {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w = [await spawnDeviceWorker({ platform: p }), await spawnDeviceWorker({ platform: p })];
  try {
    await w[0]!.bus.devAdd('vdpasim_blk', 'gsrc', { capacity: 512 });
    await w[1]!.bus.devAdd('vdpasim_blk', 'gdst', { capacity: 512 });
    const src = await w[0]!.bus.openDevice('gsrc');
    const dst = await w[1]!.bus.openDevice('gdst');
    const { slot, drv } = slotDriver(p, src, 64, VirtioBlkDriver);
    await drv.write(8, new Uint8Array(4096).fill(0x6b));
    const early = await src.saveEarlyState();
    await dst.loadEarlyState(early);
    const held = dst.getStatus();
    assert.notEqual(held, 0);
    const invalid = (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument;
    await assert.rejects(dst.loadState(Uint8Array.from([1, 2, 3])), invalid);
    await assert.rejects(dst.loadEarlyState(new Uint8Array(40)), invalid);
    await assert.rejects(dst.loadEarlyState(encodeState(saveStateOfNothing())), invalid);
    assert.throws(() => dst.loadStateSync(Uint8Array.from([9, 9, 9])), invalid);
    assert.equal(dst.getStatus(), held, 'the early state is still held');
    // A device that is not running: the mailbox suspend refuses it, typed.
    assert.throws(() => dst.suspendAndSaveSync(), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
    // The same early state still takes its delta, and the destination serves the driver's
    // rings from where the source stopped (its own RAM disk: this test copies nothing).
    const r = src.suspendAndSaveSync();
    assert.ok(!r.wouldBlock && !r.full && r.delta === true);
    slot.switchTo(dst, { keepOld: true });
    dst.loadStateSync(r.state, { resume: true });
    await drv.write(16, new Uint8Array(4096).fill(0x3c));
    const back = new Uint8Array(4096);
    await drv.read(16, back);
    assert.ok(back.every((b) => b === 0x3c));
    assert.throws(() => src.suspendAndSaveSync(), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition, 'already suspended');
  } finally {
    await Promise.all(w.map((x) => x.close()));
  }
});

/** A well-formed full (not early) state, for a request that wants an early one. */
function saveStateOfNothing(): DeviceState {
  return {
    format: 'vdpa-wasm-device-state', version: 1, class: 'blk', deviceId: 2, deviceFeatures: '0x100000000', driverFeatures: '0x100000000',
    status: 15, generation: 0, config: '', groupAsid: [0], maps: [[]], vqs: [], blk: { capacity: 512, readOnly: false, inFlight: 0 },
  };
}

test('blk between workers with requests out at the backend: the mailbox answers "would block", the suspend goes by the channel and waits, a delta still moves', async () => {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w = await spawnHeldWorkers(p);
  try {
    const src = await heldBlk(w[0]!, 'hsrc');
    const dst = await heldBlk(w[1]!, 'hdst');
    const { slot, drv } = slotDriver(p, src, 64, VirtioBlkDriver);
    await drv.write(0, new Uint8Array(512).fill(1));
    await w[0]!.bus.request('hold', 'disk', 400);
    const writes = [1, 2, 3, 4].map((k) => drv.write(k * 8, new Uint8Array(4096).fill(k)));
    for (let i = 0; i < 100 && (await w[0]!.bus.request('pending', 'disk')) !== 4; i++) await new Promise((r) => setTimeout(r, 2));
    assert.equal(await w[0]!.bus.request('pending', 'disk'), 4, 'four writes out at the held disk');
    // The mailbox refuses to wait for a backend: nothing is done, the source still runs.
    assert.deepEqual(src.suspendAndSaveSync(), { wouldBlock: true });
    assert.equal(src.getStatus() & VIRTIO_CONFIG_S_SUSPEND, 0);
    // The migration: its suspend goes by the channel and waits for the disk's answers (released
    // by the worker 400 ms after the hold). Should the machine be so slow that they came first,
    // the mailbox path is taken instead: either way a delta moves and no write is lost.
    const rep = await migrateBetweenWorkers({ source: src, destination: dst, slot, announce: false });
    assert.equal(rep.moved, 'delta');
    assert.equal(rep.storage, 'backend');
    if (rep.drained > 0) assert.equal(rep.mailbox, false, 'suspended through the channel');
    console.log(`# drained ${rep.drained} at the suspend, by mailbox: ${rep.mailbox}`);
    await Promise.all(writes); // completed once, by the source, before the stop
    await drv.flush();
    assert.equal(await w[0]!.bus.request('pending', 'disk'), 0);
  } finally {
    await stopHeldWorkers(w);
  }
});
