// A queue whose construction is refused (bad option, ring area not mapped) returns every byte it
// had allocated: a driver that retries set_vq_ready, or a fuzzer, cannot drain the platform.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, DeviceQueue, DriverQueue, VdpaBus, VdpaSimBlkMgmt, VirtioError, Code, features, ringFeatures,
} from '../src/index.ts';

const isCode = (code: string) => (e: unknown) => e instanceof VirtioError && e.code === code;

test('DeviceQueue and DriverQueue refused mid-construction leak nothing', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  const drv = new DriverQueue(p, { size: 64 });
  void p.identityMap; // made once, on first use: not a leak
  const priv = p.priv.available;
  const ram = p.ram.available;
  for (let i = 0; i < 100; i++) {
    // Areas outside the identity map: mapRings refuses after the records were allocated.
    assert.throws(() => new DeviceQueue(p, { size: 64, descArea: 0, driverArea: 0, deviceArea: 0 }), isCode(Code.InvalidArgument));
    assert.throws(() => new DeviceQueue(p, { size: 64, ...drv.addresses, batch: 0 }), isCode(Code.InvalidArgument));
    assert.throws(() => new DeviceQueue(p, { size: 64, ...drv.addresses, descArea: -1 }), isCode(Code.InvalidArgument));
    assert.throws(() => new DriverQueue(p, { size: 64, batch: 1e9 }), isCode(Code.InvalidArgument));
    assert.throws(() => new DriverQueue(p, { size: 64, features: ringFeatures({ indirect: true }), indirectMax: -3 }), isCode(Code.InvalidArgument));
  }
  assert.equal(p.priv.available, priv);
  assert.equal(p.ram.available, ram);
});

test('set_vq_ready refused for an unmapped ring, over and over, leaks nothing', () => {
  const p = Platform.create({ ramSize: 4 << 20, privateSize: 2 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 64));
  const dev = bus.devAdd('vdpasim_blk', 'b');
  dev.setStatus(1); dev.setStatus(3); dev.setDriverFeatures(features()); dev.setStatus(11);
  dev.setVqNum(0, 64);
  dev.setVqAddress(0, 1n << 40n, 1n << 40n, 1n << 40n); // nothing is mapped there
  const priv = p.priv.available;
  for (let i = 0; i < 1000; i++) assert.throws(() => dev.setVqReady(0, true), isCode(Code.InvalidArgument));
  assert.equal(p.priv.available, priv);
  assert.equal(dev.getVqReady(0), false);
});
