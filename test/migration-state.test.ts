// Device state (src/migration/state.ts): a suspended device's full state — net control state
// with every rx mode bit, 64 + 64 MAC entries, hundreds of VLANs, 8 queue pairs — survives
// the JSON view and the binary encoding unchanged and loads into a fresh device; bad or
// incompatible states are refused with a typed error and change nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaSimBlk, VirtioError, Code, saveState, loadState, encodeState, decodeState, featureBit,
  VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_CONFIG_S_DRIVER_OK, type DeviceState, type VdpaSimNet,
} from '../src/index.ts';
import { netDev, netDriver, NET_MIG_FEATURES, SharedDisk, blkDev, type Layout } from './helpers/migration.ts';

const mac = (a: number, b: number) => [a, 0x11, 0x22, 0x33, b >> 8, b & 0xff].map((x) => x.toString(16).padStart(2, '0')).join(':');

async function configured(p: Platform, layout: Layout): Promise<VdpaSimNet> {
  const src = netDev(p, 8, [2, 0, 0, 0, 0, 0x41]);
  const { drv } = netDriver(p, src, layout);
  await drv.setRxMode({ promisc: true, allmulti: true, alluni: true, nomulti: true, nouni: true, nobcast: true });
  await drv.setMacTable(Array.from({ length: 64 }, (_, i) => mac(0x02, i)), Array.from({ length: 64 }, (_, i) => mac(0x01, i)));
  for (let v = 1; v <= 300; v++) await drv.addVlan(v * 13 % 4095);
  await drv.setQueuePairs(8);
  await drv.setMac('02:aa:bb:cc:dd:ee');
  return src;
}

for (const layout of ['split', 'packed'] as const) {
  test(`${layout}: full net control state round-trips through JSON and binary and loads identically`, async () => {
    const p = Platform.create({ ramSize: 16 << 20 });
    const src = await configured(p, layout);
    await src.suspendDrained();
    const st = saveState(src);
    assert.equal(st.net!.uni.length, 64);
    assert.equal(st.net!.multi.length, 64);
    assert.equal(st.net!.vlans.length, 300);
    assert.equal(st.net!.pairs, 8);
    assert.ok(Object.values(st.net!.rx).every((b) => b === true));
    assert.equal(st.vqs.length, 17);
    assert.ok(st.vqs.every((q) => q.state?.layout === layout));
    // JSON view: plain data, unchanged by a text round trip.
    assert.deepEqual(JSON.parse(JSON.stringify(st)), st);
    // Binary: stable (encode ∘ decode ∘ encode is the identity on bytes) and lossless.
    const bin = encodeState(st);
    assert.deepEqual(decodeState(bin), st);
    assert.deepEqual(encodeState(decodeState(bin)), bin);
    // Load into a fresh device provisioned with another MAC: the guest's state wins.
    const dst = netDev(p, 8, [2, 0, 0, 0, 0, 0x99]);
    loadState(dst, bin);
    assert.ok(dst.isSuspended);
    assert.deepEqual(dst.saveNetState(), src.saveNetState());
    assert.deepEqual(dst.mac, src.mac);
    assert.equal(dst.getDriverFeatures(), src.getDriverFeatures());
    for (let i = 0; i < 17; i++) assert.deepEqual(dst.getVqState(i), src.getVqState(i));
    assert.deepEqual(saveState(dst), st);
    dst.resume();
    assert.ok(dst.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK);
    assert.equal(dst.activePairs, 8);
  });
}

function refused(fn: () => void, code: string): void {
  assert.throws(fn, (e: unknown) => e instanceof VirtioError && e.code === code);
}

test('refusals: malformed, corrupted, incompatible states change nothing on the destination', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const src = await configured(p, 'split');
  await src.suspendDrained();
  const st = saveState(src);
  const bin = encodeState(st);
  const dst = netDev(p, 8);
  const fresh = dst.saveNetState();
  const unchanged = () => {
    assert.equal(dst.getStatus(), 0);
    assert.deepEqual(dst.saveNetState(), fresh);
    for (let i = 0; i < 17; i++) assert.equal(dst.getVqReady(i), false);
  };
  // Every single flipped byte of the encoding is caught (CRC, magic, version, lengths).
  for (let i = 0; i < bin.length; i += 7) {
    const b = bin.slice();
    b[i]! ^= 0x5a;
    refused(() => loadState(dst, b), Code.InvalidArgument);
    unchanged();
  }
  refused(() => loadState(dst, bin.subarray(0, bin.length - 9)), Code.InvalidArgument);
  const bad = (f: (s: DeviceState) => void) => {
    const s = structuredClone(st);
    f(s);
    return s;
  };
  refused(() => loadState(dst, bad((s) => { (s as { version: number }).version = 3; })), Code.InvalidArgument);
  refused(() => loadState(dst, bad((s) => { s.net!.pairs = 9; })), Code.InvalidArgument);
  refused(() => loadState(dst, bad((s) => { s.net!.vlans = [5, 5]; })), Code.InvalidArgument);
  refused(() => loadState(dst, bad((s) => { s.vqs[0]!.state = { version: 1, layout: 'split', size: 64, availIndex: 100, usedIndex: 0 }; })), Code.InvalidArgument);
  refused(() => loadState(dst, bad((s) => { s.vqs[3]!.desc = '0x7fffffff000'; })), Code.InvalidArgument); // not mapped: the ring cannot be set up
  unchanged();
  // A destination that cannot offer what the source offered (device_features provisioning).
  const narrow = netDev(p, 8, [2, 0, 0, 0, 0, 3], NET_MIG_FEATURES & ~featureBit(VIRTIO_NET_F_GUEST_ANNOUNCE));
  refused(() => loadState(narrow, bin), Code.FailedPrecondition);
  assert.equal(narrow.getStatus(), 0);
  // Other queue pairs, another class.
  refused(() => loadState(netDev(p, 4), bin), Code.FailedPrecondition);
  const blk = blkDev(p, new SharedDisk(64));
  refused(() => loadState(blk as VdpaSimBlk, bin), Code.FailedPrecondition);
  assert.equal(blk.getStatus(), 0);
  // A running device cannot be saved; a loaded one cannot be loaded again.
  const running = netDev(p, 1);
  refused(() => saveState(running), Code.FailedPrecondition);
  // After all that, the real state still loads.
  loadState(dst, bin);
  assert.deepEqual(dst.saveNetState(), src.saveNetState());
  refused(() => loadState(dst, bin), Code.FailedPrecondition);
});

test('the destination makes the same receive-filter decisions as the source on a frame corpus', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const src = netDev(p, 4, [2, 0, 0, 0, 0, 0x41]);
  const { drv } = netDriver(p, src, 'split');
  await drv.setRxMode({ promisc: false, allmulti: false, alluni: false, nomulti: false, nouni: false, nobcast: false });
  await drv.setMacTable(Array.from({ length: 20 }, (_, i) => mac(0x02, i)), Array.from({ length: 20 }, (_, i) => mac(0x01, i)));
  for (let v = 10; v < 40; v += 3) await drv.addVlan(v);
  await drv.setQueuePairs(4);
  await src.suspendDrained();
  const st = saveState(src);
  src.resume();
  // The destination takes the state without the driver's rings (filter decisions only).
  const noRings = structuredClone(st);
  for (const q of noRings.vqs) q.ready = false;
  const dst = netDev(p, 4);
  loadState(dst, noRings);
  dst.resume();
  const bytes = (m: string) => m.split(':').map((h) => parseInt(h, 16));
  const dsts = [
    '02:00:00:00:00:41', 'ff:ff:ff:ff:ff:ff', mac(0x02, 3), mac(0x02, 19), mac(0x02, 21), mac(0x01, 5), mac(0x01, 25), '02:99:99:99:99:99', '33:33:00:00:00:01',
  ];
  const corpus: Uint8Array[] = [];
  for (const d of dsts) {
    for (const vlan of [-1, 10, 11, 13, 37, 38, 4000]) {
      const f = new Uint8Array(80).fill(0x5a);
      f.set(bytes(d), 0);
      f.set([2, 0, 0, 0, 0, 9], 6);
      if (vlan < 0) f.set([0x88, 0xb5], 12);
      else f.set([0x81, 0x00, vlan >> 8, vlan & 0xff, 0x88, 0xb5], 12);
      corpus.push(f);
    }
  }
  const filtered = (d: VdpaSimNet) => d.pairStats.reduce((s, x) => s + x.filtered, 0);
  const decide = (d: VdpaSimNet, f: Uint8Array) => {
    const before = filtered(d);
    d.deliver([f]);
    return filtered(d) === before;
  };
  const a = corpus.map((f) => decide(src, f));
  const b = corpus.map((f) => decide(dst, f));
  assert.deepEqual(b, a);
  assert.ok(a.some((x) => x) && a.some((x) => !x), 'the corpus has accepted and filtered frames');
});

test('the requests list a save returns is the device\'s own: appending to one device\'s leaves every other device\'s saves and loads as they were', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const a = netDev(p);
  netDriver(p, a, 'split');
  const b = netDev(p, 1, [2, 0, 0, 0, 0, 2]);
  netDriver(p, b, 'split');
  await new Promise((r) => setImmediate(r));
  a.suspend();
  b.suspend();
  const mine = a.savePositions().requests;
  assert.notEqual(mine, b.savePositions().requests);
  mine.begin(0, 0, 1, 1);
  mine.piece(0x1000, 1);
  mine.end();
  assert.equal(b.savePositions().requests.count, 0);
  assert.equal(a.savePositions().requests.count, 0, 'the next save starts the list over');
  // A fresh device still takes b's state (a request in a net state would be refused).
  const c = netDev(Platform.create({ ramSize: 16 << 20 }), 1, [2, 0, 0, 0, 0, 3]);
  c.checkCoreState(b.saveCoreState());
  const st = saveState(b);
  assert.equal(st.blk, undefined);
});
