// Regressions for the bugs an independent review found in the control plane and drivers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VdpaSimBlk, VdpaSimNet, createVirtioVdpa, VirtioVdpa, Code,
  VIRTIO_CONFIG_S_FAILED, type BlkBackend,
} from '../src/index.ts';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function setup() {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  return { p, bus, virtio };
}

/** A backend whose answers wait until release() is called. */
function gatedBackend(capacity = 64) {
  const data = new Uint8Array(capacity * 512);
  const gates: (() => void)[] = [];
  const gate = () => new Promise<void>((r) => gates.push(r));
  const b: BlkBackend = {
    capacity,
    read: async (s, n) => { await gate(); return data.slice(s * 512, s * 512 + n); },
    write: async (s, d) => { await gate(); data.set(d, s * 512); },
    flush: async () => { await gate(); },
  };
  return { b, release: () => { for (const g of gates.splice(0)) g(); }, pending: () => gates.length };
}

test('blk driver: 500 requests queued behind a full ring all complete (staging never overflows)', async () => {
  const { bus, virtio } = setup();
  const dev = bus.devAdd('vdpasim_blk', 'b') as VdpaSimBlk;
  const blk = virtio.blk('b');
  dev.suspend();
  const reads = Array.from({ length: 500 }, (_, i) => blk.read(i % 100, new Uint8Array(512)));
  dev.resume();
  const results = await Promise.allSettled(reads);
  assert.deepEqual(results.filter((r) => r.status === 'rejected'), []);
  assert.equal(blk.inFlight, 0);
});

test('blk: an answer that arrives while suspended is delivered on resume, not lost', async () => {
  const { p, bus, virtio } = setup();
  const g = gatedBackend();
  const dev = new VdpaSimBlk(p, { name: 'g', backend: g.b });
  bus.addDevice(dev);
  const blk = virtio.blk('g');
  let done = false;
  const w = blk.write(1, new Uint8Array(512).fill(3)).then(() => { done = true; });
  await tick();
  assert.equal(dev.inFlight, 1);
  dev.suspend();
  g.release();
  await dev.drain();
  await tick();
  assert.equal(done, false, 'a suspended device writes nothing back');
  assert.equal(dev.heldCompletions, 1);
  dev.resume();
  await w;
  assert.equal(done, true);
  assert.equal(dev.heldCompletions, 0);
});

test('blk: drain() resolves when the device is reset with requests in flight', async () => {
  const { p, bus } = setup();
  const g = gatedBackend();
  const dev = new VdpaSimBlk(p, { name: 'g', backend: g.b });
  bus.addDevice(dev);
  const virtio = bus.driverOf('g') as VirtioVdpa;
  void (virtio as ReturnType<typeof createVirtioVdpa>).blk('g').read(0, new Uint8Array(512)).catch(() => {});
  await tick();
  assert.equal(dev.inFlight, 1);
  const drained = dev.drain();
  bus.unbindDevice('g'); // resets the device
  await drained;
  g.release();
  await tick();
});

test('net: a maximum-size VLAN-tagged frame (MTU + 18) loops back; frames shorter than 14 bytes are dropped, not thrown', async () => {
  const { bus, virtio } = setup();
  const dev = bus.devAdd('vdpasim_net', 'n', { mtu: 1500 }) as VdpaSimNet;
  const net = virtio.net('n');
  const got: Uint8Array[] = [];
  net.onFrame((f) => got.push(f));
  const tagged = new Uint8Array(1518).fill(0x33);
  tagged.set([0x81, 0x00, 0x00, 0x0a], 12);
  assert.equal(net.send(tagged), true);
  await tick();
  assert.equal(got.length, 1);
  assert.deepEqual(got[0], tagged);
  assert.equal(dev.pairStats[0]!.txErrors, 0);
  // From the wire side, with the filter on: a runt is dropped and counted.
  dev.attachPort(() => {});
  await net.setRxMode({ promisc: false });
  const drops = dev.pairStats[0]!.drops;
  assert.equal(dev.deliver([new Uint8Array(3)]), 0);
  assert.equal(dev.pairStats[0]!.drops, drops + 1);
});

test('net: control commands issued together run one at a time and each gets its own answer', async () => {
  const { bus, virtio } = setup();
  const dev = bus.devAdd('vdpasim_net', 'n', { maxVqp: 4 }) as VdpaSimNet;
  const net = virtio.net('n');
  await Promise.all([net.setRxMode({ promisc: false }), net.addVlan(5), net.setQueuePairs(2), net.setMacTable(['02:00:00:00:00:09'], [])]);
  assert.equal(dev.ctrl.rx.promisc, false);
  assert.deepEqual(dev.ctrl.save().vlans, [5]);
  assert.equal(dev.activePairs, 2);
  await assert.rejects(Promise.all([net.addVlan(6), net.setQueuePairs(9)]), (e: { code: string }) => e.code === Code.InvalidArgument);
  assert.deepEqual(dev.ctrl.save().vlans, [5, 6]);
});

test('virtio_vdpa: a class driver that fails to start leaves the device reset and FAILED, with no queue enabled', () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const failing = new VirtioVdpa(p, {
    classDriver: () => ({
      driverFeatures: (1n << 32n), queueCount: () => 2, start: () => { throw new Error('no memory for buffers'); },
      stop: () => {}, onNeedsReset: () => {}, onConfigChange: () => {},
    }),
  });
  bus.registerDriver(failing);
  const dev = bus.devAdd('vdpasim_net', 'n', {});
  assert.equal(bus.driverOf('n'), null, 'probe failed: unbound');
  assert.equal(dev.getStatus(), VIRTIO_CONFIG_S_FAILED);
  assert.equal(dev.getVqReady(0), false);
  assert.equal(dev.getVqReady(1), false);
});
