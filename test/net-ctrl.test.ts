// The virtio-net control queue end to end (VIRTIO 1.3 §5.1.6.5): RX mode, MAC table,
// MAC_ADDR_SET, VLAN filter and multiqueue, sent by VirtioNetDriver, applied by vdpasim_net's
// receive filter; malformed commands answered VIRTIO_NET_ERR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, Code, VdpaSimNet, NetCtrlState, VIRTIO_NET_OK, VIRTIO_NET_ERR,
  VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_VLAN, formatMac,
} from '../src/index.ts';

const tick = () => new Promise((r) => setTimeout(r, 0));
const OWN = [0x02, 0, 0, 0, 0, 1];

function frame(dst: number[], fill = 0, vlan?: number): Uint8Array {
  const f = new Uint8Array(64).fill(fill);
  f.set(dst, 0);
  f.set([0x02, 0, 0, 0, 0, 0x99], 6);
  if (vlan !== undefined) f.set([0x81, 0x00, (vlan >> 8) & 0x0f, vlan & 0xff, 0x88, 0xb5], 12);
  else f.set([0x88, 0xb5], 12);
  return f;
}

function host(maxVqp = 1) {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: formatMac(new Uint8Array(OWN)), maxVqp }) as VdpaSimNet;
  const wire: Uint8Array[] = [];
  dev.attachPort((frames) => { for (const f of frames) wire.push(f.slice()); });
  const drv = virtio.net('n');
  const got: Uint8Array[] = [];
  drv.onFrame((f) => got.push(f));
  /** Puts frames on the wire and returns which ones the driver received (by fill byte). */
  const offer = async (frames: Uint8Array[]) => {
    got.length = 0;
    dev.deliver(frames);
    await tick();
    return got.map((f) => f[f.length - 1]);
  };
  return { dev, drv, offer, wire };
}

test('RX mode: promiscuous at reset; then own MAC and broadcast only; nobcast; multicast rules', async () => {
  const { dev, drv, offer } = host();
  const other = [0x02, 0, 0, 0, 0, 7];
  const mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
  const BC = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
  const set = [frame(OWN, 1), frame(other, 2), frame(BC, 3), frame(mcast, 4)];
  assert.deepEqual(await offer(set), [1, 2, 3, 4], 'promiscuous by default (as QEMU)');
  await drv.setRxMode({ promisc: false });
  assert.deepEqual(await offer(set), [1, 3], 'own unicast and broadcast');
  assert.equal(dev.pairStats[0]!.filtered, 2);
  await drv.setRxMode({ allmulti: true });
  assert.deepEqual(await offer(set), [1, 3, 4]);
  await drv.setRxMode({ nobcast: true, nomulti: true });
  assert.deepEqual(await offer(set), [1]);
  await drv.setRxMode({ alluni: true });
  assert.deepEqual(await offer(set), [1, 2]);
  await drv.setRxMode({ nouni: true });
  assert.deepEqual(await offer(set), []);
  assert.deepEqual(dev.ctrl.rx, { promisc: false, allmulti: true, alluni: true, nomulti: true, nouni: true, nobcast: true });
});

test('MAC table: listed unicast and multicast addresses pass the filter; MAC_ADDR_SET moves the own address', async () => {
  const { dev, drv, offer } = host();
  await drv.setRxMode({ promisc: false });
  const extra = [0x02, 0, 0, 0, 0, 0x42];
  const group = [0x01, 0x00, 0x5e, 0, 0, 9];
  assert.deepEqual(await offer([frame(extra, 1), frame(group, 2)]), []);
  await drv.setMacTable([new Uint8Array(extra)], ['01:00:5e:00:00:09']);
  assert.deepEqual(await offer([frame(extra, 1), frame(group, 2), frame([1, 0, 0x5e, 0, 0, 8], 3)]), [1, 2]);
  assert.deepEqual(dev.ctrl.save().uni, ['02:00:00:00:00:42']);
  const g = dev.getGeneration();
  await drv.setMac('02:00:00:00:00:55');
  assert.deepEqual([...drv.mac], [2, 0, 0, 0, 0, 0x55]);
  assert.equal(dev.getGeneration(), g + 1, 'a config change');
  assert.deepEqual(await offer([frame([2, 0, 0, 0, 0, 0x55], 5), frame(OWN, 6)]), [5]);
  await assert.rejects(drv.setMac('01:00:00:00:00:01'), (e: { code: string }) => e.code === Code.InvalidArgument);
});

test('VLAN filter: tagged frames pass only for added ids', async () => {
  const { drv, offer } = host();
  await drv.setRxMode({ promisc: false });
  assert.deepEqual(await offer([frame(OWN, 1, 100), frame(OWN, 2)]), [2], 'untagged passes, VLAN 100 not added');
  await drv.addVlan(100);
  assert.deepEqual(await offer([frame(OWN, 1, 100), frame(OWN, 3, 200)]), [1]);
  await drv.removeVlan(100);
  assert.deepEqual(await offer([frame(OWN, 1, 100)]), []);
  await assert.rejects(drv.addVlan(4095), (e: { code: string }) => e.code === Code.InvalidArgument);
});

test('multiqueue: the driver turns on every pair, sends on all of them, and receives on all of them', async () => {
  const { dev, drv, offer, wire } = host(4);
  await tick();
  assert.equal(drv.maxQueuePairs, 4);
  assert.equal(drv.queuePairs, 4);
  assert.equal(dev.activePairs, 4);
  for (let i = 0; i < 8; i++) drv.send(frame([0x02, 0, 0, 0, 0, 0x10 + i], i));
  assert.equal(wire.length, 8);
  // Each flow (here: MAC pair) has its tx queue; eight flows use more than one.
  assert.equal(dev.pairStats.reduce((s, st) => s + st.txPackets, 0), 8);
  assert.ok(dev.pairStats.filter((st) => st.txPackets > 0).length > 1, 'tx spread over the pairs');
  const many = Array.from({ length: 64 }, (_, i) => { const f = frame(OWN, i); f[6 + 5] = i; return f; });
  const got = await offer(many);
  assert.equal(got.length, 64);
  assert.ok(dev.pairStats.filter((s) => s.packets > 0).length > 1, 'steered over more than one rx queue');
  await drv.setQueuePairs(1);
  assert.equal(dev.activePairs, 1);
  await assert.rejects(drv.setQueuePairs(5), (e: { code: string }) => e.code === Code.InvalidArgument);
  assert.equal(dev.getVendorVqStats(dev.ctrlVq).type, 'control');
});

test('the device answers malformed or unsupported commands with VIRTIO_NET_ERR and changes nothing', () => {
  const s = new NetCtrlState();
  const caps = { rx: true, rxExtra: false, vlan: true, macAddr: true, mq: true, announce: false, maxPairs: 4 };
  let mac: Uint8Array | null = null;
  const ex = (cls: number, cmd: number, data: number[]) => s.execute(cls, cmd, new Uint8Array(data), caps, (m) => { mac = m; });
  assert.equal(ex(VIRTIO_NET_CTRL_RX, 0, [0]), VIRTIO_NET_OK);
  assert.equal(ex(VIRTIO_NET_CTRL_RX, 2, [1]), VIRTIO_NET_ERR, 'ALLUNI needs CTRL_RX_EXTRA');
  assert.equal(ex(VIRTIO_NET_CTRL_RX, 9, [1]), VIRTIO_NET_ERR, 'unknown command');
  assert.equal(ex(VIRTIO_NET_CTRL_RX, 0, [1, 1]), VIRTIO_NET_ERR, 'wrong length');
  assert.equal(ex(VIRTIO_NET_CTRL_MAC, 0, [1, 0, 0, 0]), VIRTIO_NET_ERR, 'table shorter than it says');
  assert.equal(ex(VIRTIO_NET_CTRL_MAC, 0, [0, 0, 0, 0, 0, 0, 0, 0, 9]), VIRTIO_NET_ERR, 'trailing bytes');
  assert.equal(ex(VIRTIO_NET_CTRL_MAC, 0, [65, 0, 0, 0, ...new Array(65 * 6).fill(2), 0, 0, 0, 0]), VIRTIO_NET_ERR, 'over 64 entries');
  assert.equal(ex(VIRTIO_NET_CTRL_MAC, 1, [1, 2, 3, 4, 5, 6]), VIRTIO_NET_ERR, 'multicast own address');
  assert.equal(mac, null);
  assert.equal(ex(VIRTIO_NET_CTRL_VLAN, 0, [0xff, 0x0f]), VIRTIO_NET_ERR, 'VLAN 4095');
  assert.equal(ex(VIRTIO_NET_CTRL_MQ, 0, [0, 0]), VIRTIO_NET_ERR, 'zero pairs');
  assert.equal(ex(VIRTIO_NET_CTRL_MQ, 0, [5, 0]), VIRTIO_NET_ERR, 'above max');
  assert.equal(ex(7, 0, []), VIRTIO_NET_ERR, 'unknown class');
  assert.deepEqual(s.save(), { rx: { promisc: false, allmulti: false, alluni: false, nomulti: false, nouni: false, nobcast: false }, uni: [], multi: [], vlans: [], pairs: 1 });
});

test('features that need the control queue are refused without it (FEATURES_OK stays clear)', () => {
  const { dev } = host();
  const f = dev.getDeviceFeatures();
  const noCtrl = f & ~(1n << 17n);
  assert.match(dev.rejectFeatures(noCtrl) ?? '', /CTRL_VQ/);
  assert.equal(dev.rejectFeatures(f), null);
});

test('loopback: the wasm receive filter accepts exactly what NetCtrlState.accepts does (random modes, tables, VLANs)', async () => {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 256 });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: formatMac(new Uint8Array(OWN)) }) as VdpaSimNet;
  const drv = virtio.net('n');
  const got: Uint8Array[] = [];
  drv.onFrame((f) => got.push(f));
  let seed = 5;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const macs = [OWN, [2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 8], [1, 0, 0x5e, 0, 0, 1], [1, 0, 0x5e, 0, 0, 2], [255, 255, 255, 255, 255, 255]];
  for (let round = 0; round < 12; round++) {
    await drv.setRxMode({ promisc: rand() < 0.2, allmulti: rand() < 0.3, alluni: rand() < 0.3, nomulti: rand() < 0.3, nouni: rand() < 0.2, nobcast: rand() < 0.3 });
    await drv.setMacTable(rand() < 0.5 ? ['02:00:00:00:00:07'] : [], rand() < 0.5 ? ['01:00:5e:00:00:01'] : []);
    if (rand() < 0.5) await drv.addVlan(10); else await drv.removeVlan(10);
    const frames = Array.from({ length: 40 }, (_, i) => {
      const vlan = rand() < 0.3 ? (rand() < 0.5 ? 10 : 20) : undefined;
      const f = frame(macs[Math.floor(rand() * macs.length)]!, i, vlan);
      return f;
    });
    const want = frames.filter((f) => dev.ctrl.accepts(f, dev.mac, true));
    got.length = 0;
    drv.sendBatch(frames);
    await tick();
    assert.deepEqual(got, want, `round ${round}`);
  }
});
