// Two-stage migration state: the early state (a running source's control state, loaded into
// the destination during pre-copy) and the delta that moves at the stop (status, config
// generation, ring positions). Checked: the delta's byte layout, that early + delta gives the
// same device as a full load (state, and frames served afterwards), that any control change
// after the early save turns the delta down (and migrate() falls back to the full state),
// that a device holding an early state cannot run until its delta, and that every bad delta
// is refused with nothing changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VirtioError, Code, migrate, saveState, loadState, saveEarlyState, loadEarlyState, saveStateDelta,
  encodeStateDelta, decodeStateDelta, checkStateDelta, encodeState, DEVICE_STATE_DELTA_FORMAT,
  VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK,
  type VdpaSimNet, type DeviceStateDelta,
} from '../src/index.ts';
import { netDev, netDriver, blkDev, blkDriver, SharedDisk, blockPattern, type Layout } from './helpers/migration.ts';

const hex = (m: number[]) => m.map((x) => x.toString(16).padStart(2, '0')).join(':');
const isCode = (code: string) => (e: unknown) => e instanceof VirtioError && e.code === code;

async function netRig(layout: Layout) {
  const p = Platform.create({ ramSize: 16 << 20 });
  const src = netDev(p, 4);
  const { slot, drv } = netDriver(p, src, layout, 64);
  await drv.setRxMode({ promisc: false, allmulti: true, alluni: false, nomulti: false, nouni: true, nobcast: false });
  await drv.setMacTable(Array.from({ length: 64 }, (_, i) => hex([2, 1, 0, 0, 0, i])), Array.from({ length: 64 }, (_, i) => hex([1, 0, 0x5e, 0, 0, i])));
  for (let v = 1; v <= 300; v++) await drv.addVlan(v * 13);
  await drv.setQueuePairs(4);
  const sent: Uint8Array[] = [];
  src.attachPort((frames) => { for (const f of frames) sent.push(f.slice()); });
  return { p, src, slot, drv, sent };
}

const frame = (seq: number): Uint8Array => {
  const f = new Uint8Array(80).fill(seq & 0xff);
  f.set([2, 9, 9, 9, 9, 9], 0);
  f.set([2, 0, 0, 0, 0, 1], 6);
  return f;
};

for (const layout of ['split', 'packed'] as const) {
  test(`${layout}: early + delta gives the device a full load gives, and it serves what the driver queued`, async () => {
    const r = await netRig(layout);
    for (let i = 0; i < 10; i++) r.drv.send(frame(i));
    const early = saveEarlyState(r.src);
    assert.equal(early.state.early, true);
    assert.ok(early.state.vqs.every((v) => v.state === null), 'an early state has no ring positions');
    // The source runs on after the early save: its rings move, its control state does not.
    for (let i = 10; i < 30; i++) r.drv.send(frame(i));
    assert.equal(r.sent.length, 30);
    const dst = netDev(r.p, 4);
    const id = loadEarlyState(dst, early.bytes);
    assert.equal(id, early.id);
    assert.equal(dst.earlyStateId, early.id);
    await r.src.suspendDrained();
    const delta = saveStateDelta(r.src, early);
    assert.ok(delta, 'nothing but ring positions changed');
    const wire = encodeStateDelta(delta!);
    assert.ok(wire.length < 200, `${wire.length} bytes`);
    loadState(dst, wire);
    assert.equal(dst.earlyStateId, null);
    assert.deepEqual(saveState(dst), saveState(r.src), 'the same state as the source at its stop');
    // And the same behaviour: frames queued while stopped go out from the destination.
    r.slot.switchTo(dst);
    const out: Uint8Array[] = [];
    dst.attachPort((frames) => { for (const f of frames) out.push(f.slice()); });
    r.drv.send(frame(30));
    dst.resume();
    r.drv.send(frame(31));
    assert.deepEqual(out.map((f) => f[20]), [30, 31]);
    assert.equal(r.sent.length, 30, 'the stopped source sent nothing more');
  });
}

test('the delta encoding, byte by byte (little-endian, as the comment in state.ts lays it out)', async () => {
  const r = await netRig('packed');
  const early = saveEarlyState(r.src);
  await r.src.suspendDrained();
  const d = saveStateDelta(r.src, early)!;
  const b = encodeStateDelta(d);
  const dv = new DataView(b.buffer);
  assert.equal(new TextDecoder().decode(b.subarray(0, 8)), 'VDPADLTA');
  assert.equal(dv.getUint16(8, true), 2, 'version');
  assert.equal(b[10], 1, 'class net');
  assert.equal(b[11], 0, 'flags');
  assert.equal(dv.getUint32(12, true), early.id, 'base: the early state id');
  assert.equal(early.id, new DataView(early.bytes.buffer, early.bytes.byteOffset).getUint32(early.bytes.length - 4, true), 'the id is the CRC that ends the early encoding');
  assert.equal(b[16], d.status);
  assert.ok(d.status & VIRTIO_CONFIG_S_DRIVER_OK);
  assert.equal(dv.getUint32(17, true), d.generation);
  assert.equal(dv.getUint16(21, true), 9, '4 pairs + the control queue');
  let o = 23;
  for (let i = 0; i < 9; i++) {
    const st = d.vqs[i]!;
    assert.ok(st && st.layout === 'packed');
    assert.equal(b[o], 2, `vq ${i} kind packed`);
    assert.equal(dv.getUint16(o + 1, true), st.size);
    assert.equal(dv.getUint16(o + 3, true), st.lastAvailIdx);
    assert.equal(b[o + 5], st.lastAvailWrap);
    assert.equal(dv.getUint16(o + 6, true), st.lastUsedIdx);
    assert.equal(b[o + 8], st.lastUsedWrap);
    o += 9;
  }
  assert.equal(dv.getUint16(o, true), 0, 'no requests in flight (net never has any)');
  o += 2;
  assert.equal(o + 4, b.length, 'then the CRC, last');
  assert.deepEqual(decodeStateDelta(b), d, 'round trip');
});

test('a control change after the early save turns the delta down; migrate() then moves the full state', async () => {
  const r = await netRig('split');
  const early = saveEarlyState(r.src);
  await r.drv.addVlan(4000);
  await r.src.suspendDrained();
  assert.equal(saveStateDelta(r.src, early), null, 'a VLAN added after the early save');
  r.src.resume();
  // Each kind of change: MAC table, rx mode, pairs, a map, a config change.
  const changes: [string, () => Promise<void> | void][] = [
    ['mac table', () => r.drv.setMacTable([hex([2, 7, 7, 7, 7, 7])], []).then(() => {})],
    ['rx mode', () => r.drv.setRxMode({ promisc: true, allmulti: false, alluni: false, nomulti: false, nouni: false, nobcast: false }).then(() => {})],
    ['pairs', () => r.drv.setQueuePairs(2).then(() => {})],
    ['a map', () => r.src.dmaMap(0, { iova: 1n << 40n, size: 4096, addr: r.p.ramBase, perm: 3 })],
    ['link status (config)', () => r.src.setLink(false)],
  ];
  for (const [what, change] of changes) {
    const e = saveEarlyState(r.src);
    await change();
    await r.src.suspendDrained();
    assert.equal(saveStateDelta(r.src, e), null, what);
    r.src.resume();
  }
  // migrate(): the early state goes ahead, the driver changes the control state during
  // pre-copy, and the early state goes again — still outside the downtime.
  const dst = netDev(r.p, 4);
  const rep = await migrate({ source: r.src, destination: dst, announce: false, round: () => r.drv.addVlan(4001).then(() => {}), switchover: (d) => r.slot.switchTo(d) });
  assert.equal(rep.earlySends, 2);
  assert.ok(rep.delta, 'a delta moved');
  assert.ok(rep.stateBytes < 200, `${rep.stateBytes} bytes inside the downtime`);
  assert.ok(dst.saveNetState().vlans.includes(4001));
  await dst.suspendDrained();
  assert.deepEqual(saveState(dst).net, saveState(r.src).net);
  dst.resume();
  // Without early, the whole state moves inside the downtime.
  const dst2 = netDev(r.p, 4);
  const rep2 = await migrate({ source: dst, destination: dst2, announce: false, early: false, switchover: (d) => r.slot.switchTo(d) });
  assert.equal(rep2.delta, null);
  assert.equal(rep2.earlySends, 0);
  assert.ok(rep2.stateBytes > 1000, `${rep2.stateBytes} bytes: MAC tables and VLANs`);
});

test('blk: a map changed while the source drains (inflight: drain, after the early save): the full state moves, nothing is lost', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const disk = new SharedDisk(256);
  const src = blkDev(p, disk);
  const { slot, drv } = blkDriver(p, src, 'split', 64);
  disk.hold = true;
  const writes = Array.from({ length: 8 }, (_, i) => drv.write(i * 8, blockPattern(i * 8, 3)));
  await Promise.resolve();
  assert.equal(src.inFlight, 8);
  const dst = blkDev(p, disk);
  // The VMM maps a window while the source drains: the early state no longer holds.
  setTimeout(() => { src.dmaMap(0, { iova: 1n << 40n, size: 4096, addr: p.ramBase, perm: 3 }); disk.release(); }, 5);
  const rep = await migrate({ source: src, destination: dst, inflight: 'drain', switchover: (d) => slot.switchTo(d) });
  assert.equal(rep.earlySends, 1);
  assert.equal(rep.delta, null, 'the full state moved');
  assert.ok(dst.getMap(0).some((m) => m.iova === 1n << 40n), 'with the new map');
  await Promise.all(writes);
  for (let i = 0; i < 8; i++) assert.deepEqual(disk.data.subarray(i * 8 * 512, i * 8 * 512 + 4096), blockPattern(i * 8, 3));
  assert.equal(disk.ops.write, 8);
});

test('a device holding an early state does not run, save or take a driver status until its delta', async () => {
  const r = await netRig('split');
  const early = saveEarlyState(r.src);
  const dst = netDev(r.p, 4);
  loadEarlyState(dst, early.state);
  assert.throws(() => dst.resume(), isCode(Code.FailedPrecondition));
  assert.throws(() => dst.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK), isCode(Code.FailedPrecondition));
  assert.throws(() => saveState(dst), isCode(Code.FailedPrecondition));
  assert.throws(() => saveEarlyState(dst), isCode(Code.FailedPrecondition));
  assert.equal(dst.process(), 0, 'no datapath');
  // A reset forgets it: the device is fresh again.
  dst.reset();
  assert.equal(dst.earlyStateId, null);
  assert.equal(dst.getStatus(), 0);
});

test('bad deltas and misuse are refused with a typed error and change nothing', async () => {
  const r = await netRig('split');
  const early = saveEarlyState(r.src);
  const dst = netDev(r.p, 4);
  loadEarlyState(dst, early.bytes);
  await r.src.suspendDrained();
  const d = saveStateDelta(r.src, early)!;
  const good = encodeStateDelta(d);
  const refuse = (what: string, v: DeviceStateDelta | Uint8Array, code: string) => {
    assert.throws(() => loadState(dst, v), isCode(code), what);
    assert.equal(dst.earlyStateId, early.id, `${what}: still waiting for its delta`);
  };
  const flip = (i: number) => { const b = good.slice(); b[i]! ^= 1; return b; };
  refuse('a flipped byte (CRC)', flip(30), Code.InvalidArgument);
  refuse('truncated', good.subarray(0, good.length - 5), Code.InvalidArgument);
  refuse('another base', { ...d, base: (d.base + 1) >>> 0 }, Code.FailedPrecondition);
  refuse('a status with NEEDS_RESET', { ...d, status: d.status | 0x40 }, Code.FailedPrecondition);
  refuse('a status without FEATURES_OK', { ...d, status: VIRTIO_CONFIG_S_DRIVER_OK }, Code.FailedPrecondition);
  refuse('too few queues', { ...d, vqs: d.vqs.slice(1) }, Code.InvalidArgument);
  refuse('a position past the ring', { ...d, vqs: d.vqs.map((v, i) => (i === 3 && v ? { ...v, size: 64, availIndex: 0, usedIndex: 200 } : v)) as DeviceStateDelta['vqs'] }, Code.InvalidArgument);
  refuse('a packed position on a split device', { ...d, vqs: d.vqs.map((v) => (v ? { version: 1, layout: 'packed', size: 64, lastAvailIdx: 0, lastAvailWrap: 1, lastUsedIdx: 0, lastUsedWrap: 1 } : v)) as DeviceStateDelta['vqs'] }, Code.InvalidArgument);
  refuse('a wrong layout size', { ...d, vqs: d.vqs.map((v) => (v ? { ...v, size: 128 } : v)) as DeviceStateDelta['vqs'] }, Code.InvalidArgument);
  assert.throws(() => checkStateDelta({ ...d, format: 'x' }), isCode(Code.InvalidArgument));
  assert.throws(() => checkStateDelta({ ...d, generation: -1 }), isCode(Code.InvalidArgument));
  assert.throws(() => decodeStateDelta(encodeState(saveState(r.src))), isCode(Code.InvalidArgument), 'a full state is not a delta');
  // The positions were not applied by any refused load: the good delta still gives the source's state.
  loadState(dst, good);
  assert.deepEqual(saveState(dst), saveState(r.src));
  // A delta needs the early state it builds on; an early state is not a full state.
  const fresh = netDev(r.p, 4);
  assert.throws(() => loadState(fresh, good), isCode(Code.FailedPrecondition));
  assert.equal(fresh.getStatus(), 0);
  assert.throws(() => loadState(fresh, early.bytes), isCode(Code.InvalidArgument));
  assert.throws(() => loadState(fresh, early.state), isCode(Code.InvalidArgument));
  assert.throws(() => loadEarlyState(fresh, saveState(r.src)), isCode(Code.InvalidArgument), 'a full state is not an early state');
  assert.equal(fresh.getStatus(), 0);
  // A delta saved against another device's early state, or from a running device.
  const other = netDev(r.p, 4);
  assert.throws(() => saveStateDelta(other, early), isCode(Code.InvalidArgument));
  r.src.resume();
  assert.throws(() => saveStateDelta(r.src, early), isCode(Code.FailedPrecondition));
  // A blk delta into a net device.
  assert.throws(() => loadState(dst, { ...d, class: 'blk' }), isCode(Code.FailedPrecondition));
  assert.equal(d.format, DEVICE_STATE_DELTA_FORMAT);
});

test('blk: 20 two-stage migrations with 32 requests in flight each: every write lands (once, or twice with the same bytes if it moved), reads match', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const disk = new SharedDisk(1024);
  let cur = blkDev(p, disk);
  const { slot, drv } = blkDriver(p, cur, 'packed', 64);
  const model = new Uint8Array(disk.data.length);
  let moved = 0;
  for (let m = 0; m < 20; m++) {
    const writes = Array.from({ length: 32 }, (_, i) => {
      const sector = ((m * 32 + i) * 8) % 1024;
      const data = blockPattern(sector, m);
      model.set(data, sector * 512);
      return drv.write(sector, data);
    });
    const dst = blkDev(p, disk);
    const rep = await migrate({ source: cur, destination: dst, switchover: (d) => slot.switchTo(d) });
    assert.ok(rep.delta, `migration ${m}: a delta moved`);
    moved += rep.recordedWrites;
    await Promise.all(writes);
    cur.destroy();
    cur = dst;
  }
  // Each write ran once, and once more at the destination if it moved in flight (the same bytes).
  assert.ok(moved > 0);
  assert.equal(disk.ops.write, 20 * 32 + moved);
  assert.deepEqual(disk.data, model);
  const back = new Uint8Array(4096);
  await drv.read(8, back);
  assert.deepEqual(back, model.subarray(8 * 512, 8 * 512 + 4096));
});

test('migrate() to a destination that is not fresh refuses it and leaves it as it was (two-stage and whole state)', async () => {
  const r = await netRig('split');
  const busy = netDev(r.p, 4);
  netDriver(r.p, busy, 'split', 64); // a driver has it running
  const status = busy.getStatus();
  assert.ok(status & VIRTIO_CONFIG_S_DRIVER_OK);
  for (const early of [true, false]) {
    await assert.rejects(migrate({ source: r.src, destination: busy, early, announce: false }), isCode(Code.FailedPrecondition));
    assert.equal(busy.getStatus(), status, `early ${early}: the busy device is untouched`);
    assert.equal(r.src.running, true, `early ${early}: the source runs on`);
  }
});

test('garbage to the two-stage calls: InvalidArgument, never a TypeError', async () => {
  const r = await netRig('packed');
  const early = saveEarlyState(r.src);
  await r.src.suspendDrained();
  for (const [what, fake] of [['{}', {}], ['null', null], ['a copy', { ...early }], ['7', 7]] as const) {
    assert.throws(() => saveStateDelta(r.src, fake as never), isCode(Code.InvalidArgument), `early state: ${what}`);
  }
  assert.throws(() => r.src.controlStateUnchanged({ ...early.mark }), isCode(Code.InvalidArgument), 'a copied mark');
  assert.throws(() => r.src.controlStateUnchanged(null as never), isCode(Code.InvalidArgument));
  const d = saveStateDelta(r.src, early)!;
  const dst = netDev(r.p, 4);
  loadEarlyState(dst, early.bytes);
  assert.throws(() => dst.loadPositions(d.base, d.status, d.generation, null as never), isCode(Code.InvalidArgument));
  const sparse = d.vqs.slice();
  delete sparse[2];
  const bads: [string, DeviceStateDelta['vqs']][] = [
    ['a hole', sparse],
    ['layout x', d.vqs.map((v, i) => (i === 0 ? { ...v, layout: 'x' } : v)) as DeviceStateDelta['vqs']],
    ['an index past u16', d.vqs.map((v, i) => (i === 0 ? { ...v, lastAvailIdx: 65541 } : v)) as DeviceStateDelta['vqs']],
    ['a wrap of 2', d.vqs.map((v, i) => (i === 0 ? { ...v, lastUsedWrap: 2 } : v)) as DeviceStateDelta['vqs']],
    ['a string', d.vqs.map((v, i) => (i === 0 ? 'x' : v)) as unknown as DeviceStateDelta['vqs']],
  ];
  for (const [what, vqs] of bads) {
    assert.throws(() => encodeStateDelta({ ...d, vqs }), isCode(Code.InvalidArgument), `encode: ${what}`);
    assert.throws(() => loadState(dst, { ...d, vqs }), isCode(Code.InvalidArgument), `load: ${what}`);
    assert.equal(dst.earlyStateId, early.id);
  }
  loadState(dst, d);
  assert.deepEqual(saveState(dst), saveState(r.src));
});
