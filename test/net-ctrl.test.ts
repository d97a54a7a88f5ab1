// The virtio-net control queue end to end (VIRTIO 1.3 §5.1.6.5): RX mode, MAC table,
// MAC_ADDR_SET, VLAN filter and multiqueue, sent by VirtioNetDriver, applied by vdpasim_net's
// receive filter; malformed commands answered VIRTIO_NET_ERR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, Code, VdpaSimNet, formatMac,
} from '../src/index.ts';
import { tick } from './helpers/net.ts';
import { macAt, putMac } from '../src/virtio/mac.ts';

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

// Malformed and oversized commands on a raw ring: test/net-ctrl-ring.test.ts.

test('features that need the control queue are refused without it (FEATURES_OK stays clear)', () => {
  const { dev } = host();
  const f = dev.getDeviceFeatures();
  const noCtrl = f & ~(1n << 17n);
  assert.match(dev.rejectFeatures(noCtrl) ?? '', /CTRL_VQ/);
  assert.equal(dev.rejectFeatures(f), null);
});

/** The wasm receive filter against hand-computed verdicts, on both of its inputs: tx chains (loopback) and frames from the wire. */
const B = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const U7 = [2, 0, 0, 0, 0, 7];
const U8 = [2, 0, 0, 0, 0, 8];
const M1 = [1, 0, 0x5e, 0, 0, 1];
const M2 = [1, 0, 0x5e, 0, 0, 2];
/** Frames (fill byte = index): own, U7, U8, M1, M2, broadcast, own on VLAN 10, own on VLAN 20, U7 on VLAN 10. */
const PROBES = [frame(OWN, 0), frame(U7, 1), frame(U8, 2), frame(M1, 3), frame(M2, 4), frame(B, 5), frame(OWN, 6, 10), frame(OWN, 7, 20), frame(U7, 8, 10)];
const CASES: { name: string; mode: Partial<import('../src/index.ts').RxMode>; uni?: string[]; multi?: string[]; vlan10?: boolean; want: number[] }[] = [
  { name: 'promiscuous (reset state) takes everything, VLANs included', mode: {}, want: [0, 1, 2, 3, 4, 5, 6, 7, 8] },
  { name: 'own unicast and broadcast; tagged frames need their VLAN', mode: { promisc: false }, want: [0, 5] },
  { name: 'VLAN 10 added', mode: { promisc: false }, vlan10: true, want: [0, 5, 6] },
  { name: 'MAC table: U7 and M1', mode: { promisc: false }, uni: ['02:00:00:00:00:07'], multi: ['01:00:5e:00:00:01'], vlan10: true, want: [0, 1, 3, 5, 6, 8] },
  { name: 'allmulti', mode: { promisc: false, allmulti: true }, want: [0, 3, 4, 5] },
  { name: 'allmulti + nomulti: nomulti wins', mode: { promisc: false, allmulti: true, nomulti: true }, want: [0, 5] },
  { name: 'nobcast', mode: { promisc: false, nobcast: true }, want: [0] },
  { name: 'alluni', mode: { promisc: false, alluni: true }, want: [0, 1, 2, 5] },
  { name: 'nouni beats alluni and the table', mode: { promisc: false, alluni: true, nouni: true }, uni: ['02:00:00:00:00:07'], want: [5] },
  { name: 'promiscuous overrides nouni, nobcast and VLANs', mode: { promisc: true, nouni: true, nobcast: true, nomulti: true }, want: [0, 1, 2, 3, 4, 5, 6, 7, 8] },
];

for (const path of ['loopback (tx chains)', 'port (frames from the wire)'] as const) {
  test(`receive filter, ${path}: hand-computed verdicts for each rx mode, table and VLAN`, async () => {
    for (const c of CASES) {
      const p = Platform.create({ ramSize: 32 << 20 });
      const bus = new VdpaBus();
      bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
      const virtio = createVirtioVdpa(p, { queueSize: 64 });
      bus.registerDriver(virtio);
      const dev = bus.devAdd('vdpasim_net', 'n', { mac: formatMac(new Uint8Array(OWN)) }) as VdpaSimNet;
      const drv = virtio.net('n');
      const got: number[] = [];
      drv.onFrame((f) => got.push(f[f.length - 1]!));
      await drv.setRxMode({ promisc: true, ...c.mode });
      if (c.uni || c.multi) await drv.setMacTable(c.uni ?? [], c.multi ?? []);
      if (c.vlan10) await drv.addVlan(10);
      if (path === 'loopback (tx chains)') {
        assert.equal(drv.sendBatch(PROBES), PROBES.length);
      } else {
        dev.attachPort(() => {});
        dev.deliver(PROBES);
      }
      await tick();
      assert.deepEqual(got, c.want, c.name);
      assert.equal(dev.pairStats[0]!.filtered, PROBES.length - c.want.length, c.name);
      bus.devDel('n');
    }
  });
}

test('macAt / putMac: every byte value round-trips through "xx:xx:xx:xx:xx:xx", either case read, lower case written', () => {
  const b = new Uint8Array(6 * 256 + 6);
  for (let k = 0; k < 256; k++) for (let i = 0; i < 6; i++) b[6 * k + i] = (k + 43 * i) & 0xff;
  for (let k = 0; k < 256; k++) {
    const s = macAt(b, 6 * k);
    assert.equal(s, formatMac(b.subarray(6 * k, 6 * k + 6)));
    assert.match(s, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    assert.equal(s, Array.from(b.subarray(6 * k, 6 * k + 6), (x) => x.toString(16).padStart(2, '0')).join(':'));
    const out = new Uint8Array(8);
    putMac(s.toUpperCase(), out, 1);
    assert.deepEqual(out, Uint8Array.of(0, ...b.subarray(6 * k, 6 * k + 6), 0));
  }
});
