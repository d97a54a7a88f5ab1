// Issue 7 item 3 and the lifecycle parts of item 18: a deleted device's handle refuses every op
// and touches nothing; a failed devAdd leaks nothing; any device on the bus can be deleted; a
// datapath fault (not a driver's) stops the device with NEEDS_RESET instead of escaping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VdpaSimBlk, VdpaSim, createVirtioVdpa, Code, VirtioError,
  VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_ID_BLOCK, VIRTIO_NET_F_MAC, features, constructDevice, DriverQueue,
  type NeedsResetDetail, type VdpaDevice,
} from '../src/index.ts';

function setup(privateSize = 8 << 20) {
  const p = Platform.create({ ramSize: 16 << 20, privateSize });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  return { p, bus };
}

function throwsCode(fn: () => unknown, code: string) {
  assert.throws(fn, (e: unknown) => e instanceof VirtioError && e.code === code);
}

/** Every config op, called with plausible arguments. */
function everyOp(d: VdpaDevice): [string, () => unknown][] {
  return [
    ['reset', () => d.reset()], ['setStatus', () => d.setStatus(1)], ['getStatus', () => d.getStatus()],
    ['setVqNum', () => d.setVqNum(0, 16)], ['setVqAddress', () => d.setVqAddress(0, 0, 0, 0)],
    ['setVqReady', () => d.setVqReady(0, true)], ['getVqReady', () => d.getVqReady(0)], ['kickVq', () => d.kickVq(0)],
    ['setVqCb', () => d.setVqCb(0, null)], ['getVqState', () => d.getVqState(0)],
    ['setVqState', () => d.setVqState(0, { version: 1, layout: 'split', size: 16, availIndex: 0 })],
    ['getDeviceFeatures', () => d.getDeviceFeatures()], ['setDriverFeatures', () => d.setDriverFeatures(0n)],
    ['getConfig', () => d.getConfig(0, 1)], ['setConfig', () => d.setConfig(0, new Uint8Array(1))],
    ['setConfigCb', () => d.setConfigCb(null)], ['getGeneration', () => d.getGeneration()],
    ['setMap', () => d.setMap?.(0, [])], ['dmaMap', () => d.dmaMap?.(0, { iova: 0, size: 4096, addr: 0 })],
    ['dmaUnmap', () => d.dmaUnmap?.(0, 0, 4096)], ['suspend', () => d.suspend?.()], ['resume', () => d.resume?.()],
    ['getVqNotification', () => d.getVqNotification?.(0)], ['getDeviceId', () => d.getDeviceId()],
  ];
}

for (const mgmt of ['vdpasim_net', 'vdpasim_blk']) {
  test(`${mgmt}: after devDel every op on the old handle throws not_found and no byte of memory changes`, () => {
    const { p, bus } = setup();
    const a = bus.devAdd(mgmt, 'a');
    bus.devDel('a');
    // A later device takes the freed memory (IOTLB tables, doorbells) and sets its own map.
    const b = bus.devAdd(mgmt, 'b');
    b.setMap!(0, [{ iova: 0x10000, size: 4096, addr: p.ramBase }]);
    const before = p.u8.slice();
    for (const [name, op] of everyOp(a)) {
      assert.throws(op, (e: unknown) => e instanceof VirtioError && e.code === Code.NotFound, `${name} on a deleted device`);
    }
    assert.ok(Buffer.compare(before, p.u8) === 0, 'memory is untouched');
    assert.deepEqual(b.getStatus(), 0);
    bus.devDel('b');
  });
}

test('a class driver\'s reset() after devDel throws not_found and touches nothing', async () => {
  const { p, bus } = setup();
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  bus.devAdd('vdpasim_blk', 'a');
  const blk = virtio.blk('a');
  const w = new Uint8Array(512).fill(7);
  await blk.write(0, w);
  bus.devDel('a');
  bus.devAdd('vdpasim_blk', 'b'); // reuses a's memory
  const before = p.u8.slice();
  throwsCode(() => blk.reset(), Code.NotFound);
  assert.ok(Buffer.compare(before, p.u8) === 0, 'memory is untouched');
  await assert.rejects(blk.read(0, new Uint8Array(512)), (e: unknown) => e instanceof VirtioError);
  // The new device works.
  const b = virtio.blk('b');
  await b.write(0, w);
  const r = new Uint8Array(512);
  await b.read(0, r);
  assert.deepEqual(r, w);
});

test('destroy() is idempotent; a microtask continuation scheduled before devDel does nothing', async () => {
  const { p, bus } = setup();
  const dev = bus.devAdd('vdpasim_blk', 'a') as VdpaSimBlk;
  // Bring the device up by hand with a ring holding more chains than one budget, kick, delete.
  const size = 256;
  const q = new DriverQueue(p, { size, features: features() });
  dev.setStatus(1); dev.setStatus(3); dev.setDriverFeatures(features()); dev.setStatus(11);
  dev.setVqNum(0, size);
  dev.setVqAddress(0, q.addresses.descArea, q.addresses.driverArea, q.addresses.deviceArea);
  dev.setVqReady(0, true);
  dev.setStatus(15);
  const buf = p.allocBuffer(64 * 17);
  for (let i = 0; i < 100; i++) q.stage(i, [{ addr: buf + (i % 64) * 17, len: 16 }], [{ addr: buf + (i % 64) * 17 + 16, len: 1 }]);
  assert.equal(q.submit(), 100);
  dev.kickVq(0); // serves one budget (64) and schedules the rest in a microtask
  bus.devDel('a');
  dev.destroy();
  const errors: unknown[] = [];
  const onErr = (e: unknown) => errors.push(e);
  process.on('uncaughtException', onErr);
  await new Promise((r) => setTimeout(r, 10));
  process.off('uncaughtException', onErr);
  assert.deepEqual(errors, []);
  q.destroy();
});

for (const left of [8 << 10, 13 << 10]) test(`a failed devAdd (private memory runs out half-way, ${left >> 10} KiB left) leaves the allocators as they were`, () => {
  // 8 KiB: the first IOTLB table fits, the second does not. 13 KiB: both fit, the doorbells and
  // the filter block after them do not. (The staging areas are allocated when first used, so
  // they no longer make construction run out.)
  const { p, bus } = setup(1 << 20);
  const hog = p.priv.alloc(p.priv.available - left, 16);
  const priv = p.priv.available;
  const ram = p.ram.available;
  for (let i = 0; i < 5; i++) {
    throwsCode(() => bus.devAdd('vdpasim_net', 'n', { mtu: 65535 }), Code.ResourceExhausted);
    assert.equal(p.priv.available, priv, `attempt ${i}: private memory`);
    assert.equal(p.ram.available, ram, `attempt ${i}: RAM`);
  }
  assert.deepEqual(bus.devices, []);
  p.priv.release(hog);
  bus.devAdd('vdpasim_net', 'n'); // a device that fits still can be made
});

test('constructDevice releases what a throwing subclass constructor had allocated', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  class Bad extends VdpaSim {
    constructor() {
      super(p, { name: 'bad', deviceId: VIRTIO_ID_BLOCK, supportedFeatures: features(), nvqs: 4, nas: 2, configSize: 8 });
      this.allocPriv(4096, 64);
      this.allocRam(8192, 4096);
      throw new VirtioError(Code.InvalidArgument, 'refused after allocating');
    }
    protected datapath(): number { return 0; }
  }
  const priv = p.priv.available;
  const ram = p.ram.available;
  throwsCode(() => constructDevice(() => new Bad()), Code.InvalidArgument);
  assert.equal(p.priv.available, priv);
  assert.equal(p.ram.available, ram);
});

test('a datapath fault that is not the driver\'s sets NEEDS_RESET (vq -1) instead of escaping the kick', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  let fail = false;
  class Faulty extends VdpaSim {
    constructor() {
      super(p, { name: 'f', deviceId: VIRTIO_ID_BLOCK, supportedFeatures: features(), nvqs: 1, configSize: 8 });
    }
    protected datapath(): number {
      if (fail) throw new TypeError('backend exploded');
      return 0;
    }
  }
  const dev = new Faulty();
  const q = new DriverQueue(p, { size: 8, features: features() });
  dev.setStatus(1); dev.setStatus(3); dev.setDriverFeatures(features()); dev.setStatus(11);
  dev.setVqNum(0, 8);
  dev.setVqAddress(0, q.addresses.descArea, q.addresses.driverArea, q.addresses.deviceArea);
  dev.setVqReady(0, true);
  dev.setStatus(15);
  const events: NeedsResetDetail[] = [];
  dev.addEventListener('needs-reset', (e) => events.push((e as CustomEvent<NeedsResetDetail>).detail));
  let configCalls = 0;
  dev.setConfigCb(() => configCalls++);
  fail = true;
  dev.kickVq(0); // must not throw
  assert.ok(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.equal(events.length, 1);
  assert.equal(events[0]!.vq, -1);
  assert.equal(events[0]!.error.code, Code.Internal);
  assert.equal(configCalls, 1);
  dev.kickVq(0); // stopped: nothing runs, nothing throws
  assert.equal(events.length, 1);
  dev.destroy();
});

test('a device the driver could not probe says why when its driver is asked for', () => {
  // A 4 MiB RAM disk fills a 4 MiB platform: the rings no longer fit, so probe fails.
  const p = Platform.create({ ramSize: 4 << 20, privateSize: 1 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  bus.devAdd('vdpasim_blk', 'b');
  assert.equal(bus.driverOf('b'), null);
  assert.throws(() => virtio.blk('b'), (e: unknown) =>
    e instanceof VirtioError && e.code === Code.NotFound &&
    e.cause instanceof VirtioError && e.cause.code === Code.ResourceExhausted);
});

test('net driver: a device that corrupts the rx used ring gives an error event, not an exception from a microtask', async () => {
  const { VdpaSimNet, Q } = await import('../src/index.ts');
  const p = Platform.create({ ramSize: 16 << 20, privateSize: 8 << 20 });
  class Corrupting extends VdpaSimNet {
    protected override datapath(budget: number, only?: number): number {
      const n = super.datapath(budget, only);
      const rx = this.queue(0);
      if (rx) {
        // used->idx jumps far ahead of what the driver has in flight (VIRTIO 1.3 §2.7.8).
        const used = p.u32[(rx.qsb + Q.DEVICE) >> 2]!;
        p.view.setUint16(used + 2, (p.view.getUint16(used + 2, true) + 1000) & 0xffff, true);
      }
      return n;
    }
  }
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 64, net: { features: features(VIRTIO_NET_F_MAC) } }); // split ring, no control queue
  bus.registerDriver(virtio);
  bus.addDevice(constructDevice(() => new Corrupting(p, { name: 'n' })));
  const net = virtio.net('n');
  const errors: VirtioError[] = [];
  net.addEventListener('error', (e) => errors.push((e as CustomEvent<VirtioError>).detail));
  const escaped: unknown[] = [];
  const onEscape = (e: unknown) => escaped.push(e);
  process.on('uncaughtException', onEscape);
  net.send(new Uint8Array(60).fill(1));
  await new Promise((r) => setTimeout(r, 10));
  process.off('uncaughtException', onEscape);
  assert.deepEqual(escaped, []);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.code, Code.UsedIdxInvalid);
});

/** Bytes that differ between two snapshots of the whole memory. */
function changed(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

/** A vdpasim_net device bound by virtio_vdpa, and a frame maker (tag fills the payload). */
async function netInPortMode() {
  const { VdpaSimNet } = await import('../src/index.ts');
  const { p, bus } = setup();
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: '02:00:00:00:00:01' }) as InstanceType<typeof VdpaSimNet>;
  const drv = virtio.net('n');
  const eth = (tag: number) => { const f = new Uint8Array(60).fill(tag); f.set([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 0x88, 0xb5]); return f; };
  return { p, bus, dev, drv, eth };
}

test('a port callback that deletes its device mid-pass: the pass stops, nothing is written after devDel', async () => {
  const { p, bus, dev, drv, eth } = await netInPortMode();
  let snap: Uint8Array | null = null;
  let calls = 0;
  dev.attachPort(() => {
    calls++;
    if (!dev.isDestroyed) {
      bus.devDel('n');
      snap = p.u8.slice();
    }
  });
  drv.sendBatch([eth(1), eth(2)]);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(calls, 1);
  assert.ok(snap);
  assert.equal(changed(snap, p.u8), 0, 'no byte changed after devDel returned');
});

test('a port callback that disables the tx queue: the disabled queue sends nothing more', async () => {
  const { p, bus, dev, drv, eth } = await netInPortMode();
  const seen: number[] = [];
  let saved: unknown = null;
  dev.attachPort((frames) => {
    for (const f of frames) seen.push(f[20]!);
    if (dev.getVqReady(1)) {
      dev.setVqReady(1, false); // its DeviceQueue is destroyed, the position saved
      saved = dev.getVqState(1);
      // The driver, unaware, sends more: the kick arrives inside the device's running pass.
      drv.sendBatch([eth(101), eth(102), eth(103)]);
    }
  });
  drv.sendBatch([eth(1), eth(2)]);
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(seen, [1, 2], 'only frames sent while the queue was enabled reach the wire');
  assert.deepEqual(dev.getVqState(1), saved, 'the saved ring position does not move while disabled');
});

test('a blk backend that deletes its device from inside read(): nothing is written after devDel', async () => {
  const p = Platform.create({ ramSize: 4 << 20, privateSize: 4 << 20 });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  let snap: Uint8Array | null = null;
  bus.addDevice(constructDevice(() => new VdpaSimBlk(p, {
    name: 'd',
    backend: {
      capacity: 64,
      read(_s, len) {
        if (!snap) { bus.devDel('d'); snap = p.u8.slice(); }
        return Promise.resolve(new Uint8Array(len));
      },
      write: async () => {}, flush: async () => {},
    },
  })));
  const blk = virtio.blk('d');
  const out = await Promise.allSettled([0, 1, 2].map((s) => blk.read(s, new Uint8Array(512))));
  assert.ok(out.every((r) => r.status === 'rejected'), 'every read fails: the device went away');
  assert.ok(snap);
  assert.equal(changed(snap, p.u8), 0, 'no byte changed after devDel returned');
});

test('new VdpaSimNet(...) refused after the base constructor ran leaks nothing, without constructDevice', async () => {
  const { VdpaSimNet } = await import('../src/index.ts');
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 6 << 20 });
  p.priv.alloc(p.priv.available - (13 << 10), 16); // room for the IOTLB tables, not for the rest
  const priv = p.priv.available;
  for (let i = 0; i < 3; i++) {
    throwsCode(() => new VdpaSimNet(p, { name: 'n', mac: new Uint8Array(5) }), Code.InvalidArgument);
    throwsCode(() => new VdpaSimNet(p, { name: 'n', mtu: 65535 }), Code.ResourceExhausted);
  }
  assert.equal(p.priv.available, priv);
});

test('net driver: a control command answered with a broken used ring leaks no staging RAM', async () => {
  const { VdpaSimNet, Q, VIRTIO_NET_DRIVER_FEATURES, VIRTIO_F_RING_PACKED, featureBit } = await import('../src/index.ts');
  const p = Platform.create({ ramSize: 16 << 20, privateSize: 8 << 20 });
  let corrupt = false;
  class BadCtrl extends VdpaSimNet {
    protected override datapath(budget: number, only?: number): number {
      const n = super.datapath(budget, only);
      const cq = this.queue(this.ctrlVq);
      if (corrupt && cq) {
        // Rewrite the id of the used element just pushed (split ring, VIRTIO 1.3 §2.7.8).
        const used = p.u32[(cq.qsb + Q.DEVICE) >> 2]!;
        const idx = p.view.getUint16(used + 2, true);
        if (idx) p.view.setUint32(used + 4 + 8 * ((idx - 1) % cq.size), 999, true);
      }
      return n;
    }
  }
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 16, net: { features: VIRTIO_NET_DRIVER_FEATURES & ~featureBit(VIRTIO_F_RING_PACKED) } });
  bus.registerDriver(virtio);
  bus.addDevice(constructDevice(() => new BadCtrl(p, { name: 'n', mac: new Uint8Array([2, 0, 0, 0, 0, 1]) })));
  const drv = virtio.net('n');
  drv.addEventListener('error', () => {});
  await drv.setRxMode({ promisc: true });
  const base = p.ram.available;
  corrupt = true;
  await assert.rejects(drv.setRxMode({ allmulti: true }), (e: unknown) => e instanceof VirtioError && e.code === Code.UsedIdInvalid);
  corrupt = false;
  await drv.reset().catch(() => {});
  assert.equal(p.ram.available, base);
});

test('new VdpaSimBlk(...) refused when its RAM disk does not fit leaks nothing, without constructDevice', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 2 << 20 });
  const priv = p.priv.available;
  const ram = p.ram.available;
  for (let i = 0; i < 3; i++) throwsCode(() => new VdpaSimBlk(p, { name: 'b', capacity: 4096 }), Code.ResourceExhausted);
  assert.equal(p.priv.available, priv);
  assert.equal(p.ram.available, ram);
});
