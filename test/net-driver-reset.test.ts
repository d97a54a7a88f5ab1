// VirtioNetDriver.reset() puts back the whole control state it had set (Linux virtnet_restore →
// virtnet_set_rx_mode, VLAN re-add, set queues): rx mode, MAC table, VLANs, MAC, queue pairs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, VdpaSimNet, formatMac } from '../src/index.ts';
import { tick } from './helpers/net.ts';

const OWN = [0x02, 0, 0, 0, 0, 1];

function frame(dst: number[], fill: number, vlan?: number): Uint8Array {
  const f = new Uint8Array(64).fill(fill);
  f.set(dst, 0);
  f.set([0x02, 0, 0, 0, 0, 0x99], 6);
  f.set(vlan !== undefined ? [0x81, 0x00, (vlan >> 8) & 0x0f, vlan & 0xff, 0x88, 0xb5] : [0x88, 0xb5], 12);
  return f;
}

test('after reset() the device filters exactly as before: rx mode, MAC table, VLANs, MAC and queue pairs come back', async () => {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: formatMac(new Uint8Array(OWN)), maxVqp: 4 }) as VdpaSimNet;
  const drv = virtio.net('n');
  const got: number[] = [];
  drv.onFrame((f) => got.push(f[f.length - 1]!));
  const offer = async (frames: Uint8Array[]) => {
    got.length = 0;
    dev.deliver(frames);
    await tick();
    return got.sort((a, b) => a - b);
  };
  await tick();
  await drv.setRxMode({ promisc: false, allmulti: true });
  await drv.setMacTable(['02:00:00:00:00:42'], []);
  await drv.addVlan(7);
  await drv.setMac('02:00:00:00:00:55');
  await drv.setQueuePairs(2);
  const set = [
    frame([2, 0, 0, 0, 0, 0x55], 1), frame([2, 0, 0, 0, 0, 0x42], 2), frame([2, 0, 0, 0, 0, 0x77], 3),
    frame([1, 0, 0x5e, 0, 0, 1], 4), frame([2, 0, 0, 0, 0, 0x55], 5, 7), frame([2, 0, 0, 0, 0, 0x55], 6, 8),
  ];
  const before = await offer(set);
  assert.deepEqual(before, [1, 2, 4, 5]);
  const saved = dev.ctrl.save();
  await drv.reset();
  assert.deepEqual(dev.ctrl.save(), saved, 'the device has the same control state again');
  assert.equal(drv.queuePairs, 2);
  assert.equal(dev.activePairs, 2);
  assert.deepEqual([...drv.mac], [2, 0, 0, 0, 0, 0x55]);
  assert.deepEqual(await offer(set), before, 'not promiscuous after the reset');
});

test('without any control command, reset() turns on every queue pair as the first start did', async () => {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { maxVqp: 3 }) as VdpaSimNet;
  const drv = virtio.net('n');
  await tick();
  assert.equal(dev.activePairs, 3);
  await drv.reset();
  assert.equal(dev.activePairs, 3);
  assert.equal(dev.ctrl.rx.promisc, true, 'the device default is kept');
});
