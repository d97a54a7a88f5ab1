// virtio_vdpa end to end: devices created through the management API, bound by the bus,
// initialized per VIRTIO 1.3 §3.1.1, used through VirtioNetDriver / VirtioBlkDriver.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, createVirtioVdpa, Code, VdpaSimNet, VdpaSimBlk,
  VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_RING_PACKED, featureBit, features,
  VIRTIO_BLK_F_RO, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_NET_DRIVER_FEATURES,
} from '../src/index.ts';
import { rng } from './helpers/builds.ts';

const tick = () => new Promise((r) => setTimeout(r, 0));

function setup(opts: { packed?: boolean } = {}) {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  // The driver takes the packed ring when it is offered unless told not to.
  const netFeatures = opts.packed === false ? VIRTIO_NET_DRIVER_FEATURES & ~featureBit(VIRTIO_F_RING_PACKED) : VIRTIO_NET_DRIVER_FEATURES;
  const virtio = createVirtioVdpa(p, { queueSize: 64, net: { features: netFeatures } });
  bus.registerDriver(virtio);
  return { p, bus, virtio };
}

for (const packed of [false, true]) {
  test(`net (${packed ? 'packed' : 'split'}): frames sent come back through loopback, in order and intact`, async () => {
    const { bus, virtio } = setup({ packed });
    const dev = bus.devAdd('vdpasim_net', 'net0', { mac: '02:00:00:00:00:01', mtu: 1500 }) as VdpaSimNet;
    await runNet(virtio.net('net0'), dev, packed);
  });
}

async function runNet(net: ReturnType<ReturnType<typeof createVirtioVdpa>['net']>, dev: VdpaSimNet, packed: boolean) {
  assert.equal(((dev.getDriverFeatures() >> 34n) & 1n) === 1n, packed);
  assert.deepEqual([...net.mac], [2, 0, 0, 0, 0, 1]);
  assert.equal(net.mtu, 1500);
  assert.equal(net.linkUp, true);
  const got: Uint8Array[] = [];
  net.onFrame((f) => got.push(f));
  const frames = Array.from({ length: 500 }, (_, i) => new Uint8Array(60 + (i % 1400)).fill(i & 0xff));
  for (let i = 0; i < frames.length; i += 16) {
    assert.equal(net.sendBatch(frames.slice(i, i + 16)), Math.min(16, frames.length - i));
    await tick(); // let the driver refill rx between bursts
  }
  await tick();
  assert.equal(got.length, frames.length);
  got.forEach((f, i) => assert.deepEqual(f, frames[i]));
  assert.equal(dev.pairStats[0]!.packets, 500);
  assert.equal(dev.pairStats[0]!.drops, 0);
  assert.equal(net.stats.txPackets, 500);
  assert.equal(net.stats.rxPackets, 500);
}

test('net: the async iterator yields frames in order; oversize and runt frames are refused', async () => {
  const { bus, virtio } = setup();
  bus.devAdd('vdpasim_net', 'n', {});
  const net = virtio.net('n');
  const it = net.frames();
  net.send(new Uint8Array(64).fill(1));
  net.send(new Uint8Array(64).fill(2));
  assert.equal((await it.next()).value![0], 1);
  assert.equal((await it.next()).value![0], 2);
  assert.throws(() => net.send(new Uint8Array(10)), (e: { code: string }) => e.code === Code.InvalidArgument);
  assert.throws(() => net.send(new Uint8Array(1600)), (e: { code: string }) => e.code === Code.InvalidArgument);
});

test('net: frames beyond the posted rx buffers are dropped and counted by the device', async () => {
  const { bus, virtio } = setup();
  const dev = bus.devAdd('vdpasim_net', 'n', {}) as VdpaSimNet;
  const net = virtio.net('n');
  let n = 0;
  for (let i = 0; i < 100; i++) n += net.sendBatch([new Uint8Array(64)]);
  await tick();
  assert.equal(n, 100);
  assert.equal(net.stats.rxPackets, 32, 'half of a 64-entry ring is posted for rx');
  assert.equal(dev.pairStats[0]!.drops, 68);
});

test('net: a link change raises the config callback and the driver emits link', async () => {
  const { bus, virtio } = setup();
  const dev = bus.devAdd('vdpasim_net', 'n', {}) as VdpaSimNet;
  const net = virtio.net('n');
  const seen: boolean[] = [];
  net.addEventListener('link', (e) => seen.push((e as CustomEvent<boolean>).detail));
  const g = dev.getGeneration();
  dev.setLink(false);
  assert.equal(net.linkUp, false);
  dev.setLink(true);
  assert.deepEqual(seen, [false, true]);
  assert.equal(dev.getGeneration(), g + 2);
});

test('net: a device that breaks surfaces as an error event; reset() brings it back', async () => {
  const { p, bus, virtio } = setup({ packed: false });
  const dev = bus.devAdd('vdpasim_net', 'n', {}) as VdpaSimNet;
  const net = virtio.net('n');
  const errors: string[] = [];
  net.addEventListener('error', (e) => errors.push((e as CustomEvent<{ code: string }>).detail.code));
  // Corrupt the tx ring as a buggy driver would: the next avail entry names head 999.
  const st = dev.getVqState(1) as { availIndex: number };
  const q = (virtio as unknown as { bound: Map<string, { binding: { queues: { addresses: { driverArea: number } }[] } }> }).bound.get('n')!.binding.queues[1]!;
  p.view.setUint16(q.addresses.driverArea + 4 + 2 * (st.availIndex % 64), 999, true);
  p.view.setUint16(q.addresses.driverArea + 2, (st.availIndex + 1) & 0xffff, true);
  dev.kickVq(1);
  assert.ok(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.deepEqual(errors, [Code.FailedPrecondition]);
  assert.throws(() => net.send(new Uint8Array(64)), (e: { code: string }) => e.code === Code.FailedPrecondition);
  net.reset();
  assert.ok(dev.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK);
  assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  const got: Uint8Array[] = [];
  net.onFrame((f) => got.push(f));
  net.send(new Uint8Array(64).fill(9));
  await tick();
  assert.equal(got.length, 1);
});

test('blk: random I/O with many requests in flight matches a model; the disk is byte-identical', async () => {
  const { bus, virtio } = setup();
  const dev = bus.devAdd('vdpasim_blk', 'b', {}) as VdpaSimBlk;
  const blk = virtio.blk('b');
  assert.equal(blk.capacity, 8192);
  assert.equal(blk.blockSize, 512);
  const model = new Uint8Array(blk.capacity * 512);
  const rand = rng(7);
  for (let round = 0; round < 20; round++) {
    const ops: Promise<void>[] = [];
    const touched = new Set<number>();
    for (let k = 0; k < 40; k++) {
      const sectors = 1 + Math.floor(rand() * 16);
      const sector = Math.floor(rand() * (blk.capacity - sectors));
      let clash = false;
      for (let s = sector; s < sector + sectors; s++) if (touched.has(s)) clash = true;
      if (clash) continue; // concurrent requests on one sector have no defined order
      for (let s = sector; s < sector + sectors; s++) touched.add(s);
      if (rand() < 0.5) {
        const data = new Uint8Array(sectors * 512).map(() => (rand() * 256) | 0);
        model.set(data, sector * 512);
        ops.push(blk.write(sector, data));
      } else {
        const buf = new Uint8Array(sectors * 512);
        const want = model.slice(sector * 512, (sector + sectors) * 512);
        ops.push(blk.read(sector, buf).then(() => assert.deepEqual(buf, want)));
      }
    }
    await Promise.all(ops);
  }
  await blk.flush();
  assert.deepEqual(dev.platform.u8.subarray(dev.disk, dev.disk + model.length), model);
});

test('blk: GET_ID, out-of-range and malformed requests, read-only devices', async () => {
  const { bus, virtio } = setup();
  bus.devAdd('vdpasim_blk', 'b', {});
  const blk = virtio.blk('b');
  assert.equal(await blk.getId(), 'vdpasim-b');
  await assert.rejects(blk.read(8192, new Uint8Array(512)), (e: { code: string }) => e.code === Code.InvalidArgument);
  await assert.rejects(blk.read(0, new Uint8Array(100)), (e: { code: string }) => e.code === Code.InvalidArgument);
  bus.devAdd('vdpasim_blk', 'ro', { deviceFeatures: features(VIRTIO_BLK_F_RO, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH) });
  const ro = virtio.blk('ro');
  assert.equal(ro.readOnly, true);
  await assert.rejects(ro.write(0, new Uint8Array(512)), (e: { code: string }) => e.code === Code.FailedPrecondition);
  await ro.read(0, new Uint8Array(512));
});

test('removing a device unbinds its driver and cancels what is in flight', async () => {
  const { bus, virtio } = setup();
  bus.devAdd('vdpasim_blk', 'b', {});
  const blk = virtio.blk('b');
  await blk.write(0, new Uint8Array(512).fill(1));
  bus.devDel('b');
  assert.throws(() => virtio.blk('b'), (e: { code: string }) => e.code === Code.NotFound);
  await assert.rejects(blk.read(0, new Uint8Array(512)), (e: { code: string }) => e.code === Code.NotFound);
});
