// Migration over the vhost_vdpa node (issue 9): VHOST_F_LOG_ALL + VHOST_SET_LOG_BASE (dirty
// pages the device writes, in vhost's log layout, indexed by GPA = memory offset − guest RAM
// base while the IOTLB maps RAM at a shifted IOVA), and the VMM-faithful migration path
// (src/migration/vhost-migrate.ts) against saveState/loadState.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VdpaSimNet, VdpaSimBlk, saveState, loadState, VhostNetCvq, vhostSave, vhostLoad, type VhostVringSetup, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_MQ, VDPASIM_NET_FEATURES, VDPASIM_BLK_FEATURES,
  Code, VirtioError, Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, VhostError, DriverQueue, Doorbell, DoorbellWaiter,
  featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_NET_F_MAC, VIRTIO_F_RING_PACKED,
} from '../src/index.ts';
import * as U from '../src/vhost/uapi.ts';
import { eth, tick } from './helpers/net.ts';
import { SharedDisk } from './helpers/migration.ts';


const S_ACK = 1;
const S_DRIVER = 2;
const S_DRIVER_OK = 4;
const S_FEATURES_OK = 8;
const PAGE = 4096;
const LOG_ALL = 1n << BigInt(U.VHOST_F_LOG_ALL);

function setup() {
  const p = Platform.create({ ramSize: 4 << 20, privateSize: 4 << 20 });
  const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 64));
  const vhost = new VhostVdpa(p);
  bus.registerDriver(vhost);
  return { p, bus, vhost };
}

function errno(fn: () => unknown, name: string): void {
  assert.throws(fn, (e: unknown) => e instanceof VhostError && e.errnoName === name);
}

/** A VMM bring-up of `nq` queues, guest RAM at IOVA G + offset (IOVA ≠ GPA ≠ memory offset). */
function bringUp(f: ReturnType<VhostVdpa['open']>, p: Platform, features: bigint, nq: number) {
  const G = 0x4000_0000;
  const dmaBase = G - p.ramBase;
  f.setOwner();
  f.setBackendFeatures((1n << 1n) | (1n << 2n) | (1n << 3n));
  f.setStatus(S_ACK | S_DRIVER);
  f.setFeatures(features);
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
  f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: G, size: p.ramSize, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW }, 0);
  const qs: DriverQueue[] = [];
  const kicks: Doorbell[] = [];
  const packed = (features & featureBit(VIRTIO_F_RING_PACKED)) !== 0n;
  for (let i = 0; i < nq; i++) {
    const q = new DriverQueue(p, { size: 64, features: features & ~LOG_ALL, dmaBase });
    qs.push(q);
    f.setVringNum({ index: i, num: 64 });
    const a = q.addresses;
    f.setVringAddr({ index: i, desc: a.descArea, avail: a.driverArea, used: a.deviceArea });
    f.setVringBase({ index: i, num: packed ? 0x8000 | (0x8000 << 16) : 0 });
    const kick = Doorbell.alloc(p);
    kicks.push(kick);
    f.setVringKick(i, kick.handle);
    f.setVringEnable({ index: i, num: 1 });
  }
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  const kick = (i: number) => {
    if (qs[i]!.kickPrepare()) kicks[i]!.ring();
  };
  return { qs, kick, iova: (off: number) => off + dmaBase };
}

/** Pages set in a vhost-layout bitmap. */
function pagesOf(p: Platform, bitmap: number, bytes: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < bytes; i++) for (let k = 0; k < 8; k++) if (p.u8[bitmap + i]! & (1 << k)) out.push(i * 8 + k);
  return out;
}

/** Pages of [off, off + len) as GPAs (off − ramBase) >> 12. */
function gpaPages(p: Platform, off: number, len: number, into: Set<number>): void {
  for (let a = off - p.ramBase; a < off - p.ramBase + len; a += 1) into.add(Math.floor(a / PAGE));
}

describe('VHOST_F_LOG_ALL + VHOST_SET_LOG_BASE on the vhost_vdpa node', () => {
  for (const layout of ['split', 'packed'] as const) {
    test(`${layout}: exactly the GPA pages the device writes (rx buffers, used areas) are logged; LOG_ALL off → nothing`, async () => {
      for (const logOn of [true, false]) {
        const { p, bus, vhost } = setup();
        bus.devAdd('vdpasim_net', 'net0');
        const f = vhost.open(vhost.nodeOf('net0'));
        assert.ok(f.getFeatures() & LOG_ALL, 'LOG_ALL is offered');
        const base = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_NET_F_MAC) |
          (layout === 'packed' ? featureBit(VIRTIO_F_RING_PACKED) : 0n);
        const { qs, kick, iova } = bringUp(f, p, base | (logOn ? LOG_ALL : 0n), 2);
        assert.equal(f.getStatus() & 0x40, 0);
        const bytes = p.ramSize / PAGE / 8;
        const bitmap = p.priv.alloc(bytes, 8);
        p.u8.fill(0, bitmap, bitmap + bytes);
        f.ioctl(U.VHOST_SET_LOG_BASE, U.encodeU64(bitmap));
        assert.equal(f.logActive, logOn);
        const [rx, tx] = qs as [DriverQueue, DriverQueue];
        const rxBufs: number[] = [];
        for (let i = 0; i < 8; i++) {
          const b = p.allocBuffer(2048);
          rxBufs.push(b);
          assert.ok(rx.add(i, [], [{ addr: iova(b), len: 2048 }]));
        }
        kick(0);
        const frames = Array.from({ length: 6 }, (_, i) => eth(60 + i * 250, i));
        frames.forEach((fr, i) => {
          const b = p.allocBuffer(12 + fr.length);
          p.u8.fill(0, b, b + 12);
          p.u8.set(fr, b + 12);
          assert.ok(tx.add(100 + i, [{ addr: iova(b), len: 12 + fr.length }]));
        });
        kick(1);
        for (let i = 0; i < 5 && rx.usedPending() < frames.length; i++) await tick();
        const got = rx.reclaim();
        assert.equal(got.length, frames.length);
        assert.equal(tx.reclaim().length, frames.length);
        const logged = pagesOf(p, bitmap, bytes);
        if (!logOn) {
          assert.deepEqual(logged, [], 'without LOG_ALL nothing is logged');
        } else {
          const want = new Set<number>();
          for (const { token, len } of got) gpaPages(p, rxBufs[token]!, len, want);
          for (const q of qs) {
            const a = q.addresses;
            // The used (device) area: split used ring, packed device event area + descriptors the device rewrites.
            const dev = Number(a.deviceArea) - (iova(0));
            if (layout === 'split') gpaPages(p, dev, 4 + 8 * 64 + 2, want);
          }
          for (const pg of want) assert.ok(logged.includes(pg), `written page ${pg} is logged`);
          if (layout === 'split') assert.deepEqual(logged, [...want].sort((x, y) => x - y), 'and nothing else');
          // Nothing outside guest RAM, and no page beyond it.
          assert.ok(logged.every((pg) => pg < p.ramSize / PAGE));
        }
        f.close();
        assert.equal(f.logActive, false);
      }
    });
  }

  test('LOG_ALL toggles after FEATURES_OK (other feature changes stay EBUSY); SET_LOG_BASE needs the owner and a bitmap inside memory', () => {
    const { p, bus, vhost } = setup();
    const dev = bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open(vhost.nodeOf('net0'));
    errno(() => f.setLogBase(0), 'EPERM');
    f.setOwner();
    const feats = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC);
    f.setStatus(S_ACK | S_DRIVER);
    f.setFeatures(feats | LOG_ALL);
    assert.equal(dev.getDriverFeatures() & LOG_ALL, 0n, 'LOG_ALL never reaches the device');
    f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
    assert.equal(f.logActive, false, 'no base yet');
    errno(() => f.setLogBase(p.memory.buffer.byteLength - 8), 'EFAULT');
    const bitmap = p.priv.alloc(128, 8);
    f.setLogBase(bitmap);
    assert.equal(f.logActive, true);
    f.setFeatures(feats);
    assert.equal(f.logActive, false);
    f.setFeatures(feats | LOG_ALL);
    assert.equal(f.logActive, true);
    errno(() => f.setFeatures(featureBit(VIRTIO_F_VERSION_1) | LOG_ALL), 'EBUSY');
    errno(() => f.setLogRegion({ base: p.ramBase, size: 100 }), 'EINVAL');
    f.setLogRegion({ base: p.ramBase + PAGE, size: PAGE * 8 });
    f.setStatus(0);
    assert.equal(f.logActive, false, 'a reset clears LOG_ALL with the features');
    f.close();
  });
});

// ── the VMM-faithful path vs saveState/loadState ──

const G = 0x4000_0000;
const BACKEND = (1n << 1n) | (1n << 2n) | (1n << 3n) | (1n << 4n) | (1n << 5n) | (1n << 6n);
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const hexMac = (m: number[]) => m.map((x) => x.toString(16).padStart(2, '0')).join(':');

/** The source VMM: owner, features, RAM at IOVA G in ASID 0, the queues `idx`, optional shadow CVQ at `cvqIndex`. */
function vmmBringUp(p: Platform, f: ReturnType<VhostVdpa['open']>, want: bigint, idx: number[], cvqIndex?: number) {
  const dmaBase = G - p.ramBase;
  f.setOwner();
  f.setBackendFeatures(BACKEND);
  f.setStatus(S_ACK | S_DRIVER);
  const features = f.getFeatures() & want;
  f.setFeatures(features);
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
  f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: G, size: p.ramSize, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW }, 0);
  const cvq = cvqIndex === undefined ? undefined : new VhostNetCvq(f, p, { index: cvqIndex, features });
  cvq?.start();
  const packed = (features & featureBit(VIRTIO_F_RING_PACKED)) !== 0n;
  const qs = new Map<number, DriverQueue>();
  const vrings: VhostVringSetup[] = [];
  for (const i of idx) {
    const q = new DriverQueue(p, { size: 64, features, dmaBase });
    qs.set(i, q);
    const a = q.addresses;
    f.setVringNum({ index: i, num: 64 });
    f.setVringAddr({ index: i, desc: a.descArea, avail: a.driverArea, used: a.deviceArea });
    f.setVringBase({ index: i, num: packed ? 0x8000 | (0x8000 << 16) : 0 });
    f.setVringEnable({ index: i, num: 1 });
    vrings.push({ index: i, num: 64, desc: a.descArea, avail: a.driverArea, used: a.deviceArea, enabled: true });
  }
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  assert.equal(f.getStatus() & 0x40, 0);
  return { features, qs, vrings, cvq, iova: (off: number) => off + dmaBase };
}

/** Kick doorbells a destination VMM binds. */
function kicks(p: Platform, idx: number[]) {
  const m = new Map(idx.map((i) => [i, Doorbell.alloc(p)]));
  return { doorbells: (i: number) => ({ kick: m.get(i)?.handle ?? null, call: null }), ring: (i: number) => m.get(i)!.ring() };
}

const MAC = [2, 0, 0, 0, 0, 0x41];
const NEW_MAC = [2, 0, 0, 0, 0, 0x42];
const netOpts = (name: string) => ({ name, maxVqp: 2, mac: Uint8Array.from(MAC), deviceFeatures: VDPASIM_NET_FEATURES });

describe('the VMM-faithful path over vhost_vdpa (QEMU with a shadow control queue)', () => {
  for (const layout of ['split', 'packed'] as const) {
    test(`net (${layout}): uAPI save → replay through the control queue gives the control state, filter decisions and rings of saveState/loadState`, async () => {
      const p = Platform.create({ ramSize: 8 << 20, privateSize: 8 << 20 });
      const vhost = new VhostVdpa(p);
      const src = new VdpaSimNet(p, netOpts('src'));
      vhost.probe(src);
      const f = vhost.open(vhost.nodeOf('src'));
      const want = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_NET_F_MAC) |
        featureBit(VIRTIO_NET_F_CTRL_VQ) | featureBit(VIRTIO_NET_F_CTRL_RX) | featureBit(VIRTIO_NET_F_CTRL_RX_EXTRA) |
        featureBit(VIRTIO_NET_F_CTRL_VLAN) | featureBit(VIRTIO_NET_F_CTRL_MAC_ADDR) | featureBit(VIRTIO_NET_F_MQ) |
        (layout === 'packed' ? featureBit(VIRTIO_F_RING_PACKED) : 0n);
      const vm = vmmBringUp(p, f, want, [0, 1, 2, 3], 4);
      assert.equal(f.getVringGroup(4), 1, 'vdpasim_net: the control queue is group 1');
      const cvq = vm.cvq!;
      const kSrc = kicks(p, [0, 1, 2, 3]);
      for (const i of [0, 1, 2, 3]) f.setVringKick(i, kSrc.doorbells(i).kick);
      // The guest's control commands, relayed by the VMM's shadow CVQ.
      assert.equal(await cvq.setMac(hexMac(NEW_MAC)), 0);
      assert.equal(await cvq.setPairs(2), 0);
      assert.equal(await cvq.setRx('promisc', false), 0);
      assert.equal(await cvq.setRx('nobcast', true), 0);
      assert.equal(await cvq.setMacTable(Array.from({ length: 20 }, (_, i) => hexMac([2, 1, 0, 0, 0, i])), Array.from({ length: 10 }, (_, i) => hexMac([1, 0, 0x5e, 0, 0, i]))), 0);
      for (let v = 10; v < 40; v += 3) assert.equal(await cvq.vlan(true, v), 0);
      assert.equal(await cvq.vlan(false, 13), 0);
      assert.equal(await cvq.setPairs(9), 1, 'more pairs than the device has: VIRTIO_NET_ERR, the shadow keeps 2');
      assert.equal(cvq.state.pairs, 2);
      assert.deepEqual(src.ctrl.save(), { rx: cvq.state.rx, uni: cvq.state.uni, multi: cvq.state.multi, vlans: cvq.state.vlans, pairs: 2 }, 'the shadow model is the device state');
      // Traffic: frames to the new MAC loop back tx 1 → rx 0; rx buffers stay posted across the migration.
      const rx = vm.qs.get(0)!;
      const tx = vm.qs.get(1)!;
      const rxBufs: number[] = [];
      for (let i = 0; i < 16; i++) {
        const b = p.allocBuffer(2048);
        rxBufs.push(b);
        assert.ok(rx.add(i, [], [{ addr: vm.iova(b), len: 2048 }]));
      }
      if (rx.kickPrepare()) kSrc.ring(0);
      const send = (ring: (i: number) => void, n: number, seq0: number): Uint8Array[] => {
        const sent: Uint8Array[] = [];
        for (let i = 0; i < n; i++) {
          const fr = eth(100, seq0 + i);
          fr.set(NEW_MAC, 0);
          sent.push(fr);
          const b = p.allocBuffer(12 + fr.length);
          p.u8.fill(0, b, b + 12);
          p.u8.set(fr, b + 12);
          assert.ok(tx.add(seq0 + i, [{ addr: vm.iova(b), len: 12 + fr.length }]));
        }
        if (tx.kickPrepare()) ring(1);
        return sent;
      };
      send(kSrc.ring, 5, 100);
      for (let i = 0; i < 10 && rx.usedPending() < 5; i++) await turn();
      assert.equal(rx.reclaim().length, 5);
      assert.equal(tx.reclaim().length, 5);
      // Source: SUSPEND, GET_VRING_BASE, GET_CONFIG, the shadow state.
      const st = vhostSave(f, { features: vm.features, vrings: vm.vrings, cvq });
      assert.deepEqual([...st.config.subarray(0, 6)], NEW_MAC, 'GET_CONFIG shows the MAC the guest set');
      assert.equal(st.vrings[0]!.base & 0x7fff, 5, 'rx: the device used 5 of the 16 buffers made available (last_avail_idx)');
      assert.equal(st.vrings[1]!.base & 0x7fff, 5);
      // Path A: saveState/loadState (rings not taken over: A only decides on frames).
      const full = saveState(src);
      const noRings = structuredClone(full);
      for (const q of noRings.vqs) q.ready = false;
      const dstA = new VdpaSimNet(p, netOpts('dstA'));
      loadState(dstA, noRings);
      dstA.resume();
      // Path B: a fresh device behind a fresh node, uAPI only.
      const dstB = new VdpaSimNet(p, netOpts('dstB'));
      vhost.probe(dstB);
      const fB = vhost.open(vhost.nodeOf('dstB'));
      const kB = kicks(p, [0, 1, 2, 3]);
      const cvqB = await vhostLoad(fB, p, st, { maps: [{ iova: G, size: p.ramSize, uaddr: p.ramBase }], doorbells: kB.doorbells, cvq: { index: 4, size: layout === 'packed' ? 4 : 64 } }); // packed: a 4-entry CVQ, the replay in 2-command batches
      assert.equal(fB.getStatus() & 0x40, 0);
      assert.deepEqual(cvqB!.state, cvq.state, 'the destination VMM model after the replay');
      assert.deepEqual(dstB.ctrl.save(), src.ctrl.save(), 'control state rebuilt by commands');
      assert.deepEqual(dstB.ctrl.save(), dstA.ctrl.save());
      assert.deepEqual([...fB.getConfig(0, 6)], NEW_MAC);
      // The guest's rings go on at B: the tx queue's next frames land in the rx buffers still posted.
      const after = send(kB.ring, 4, 200);
      for (let i = 0; i < 10 && rx.usedPending() < 4; i++) await turn();
      const got = rx.reclaim();
      assert.deepEqual(got.map((g) => g.token), [5, 6, 7, 8], 'rx continues at the saved position');
      for (const [k, g] of got.entries()) assert.deepEqual(p.u8.slice(rxBufs[g.token]! + 12, rxBufs[g.token]! + g.len), after[k]);
      assert.equal(tx.reclaim().length, 4);
      // Same filter decisions on a corpus.
      const bytes = (m: string) => m.split(':').map((h) => parseInt(h, 16));
      const dsts = [hexMac(MAC), hexMac(NEW_MAC), 'ff:ff:ff:ff:ff:ff', hexMac([2, 1, 0, 0, 0, 3]), hexMac([2, 1, 0, 0, 0, 25]), hexMac([1, 0, 0x5e, 0, 0, 5]), hexMac([1, 0, 0x5e, 0, 0, 15]), '33:33:00:00:00:01'];
      const corpus: Uint8Array[] = [];
      for (const d of dsts) {
        for (const vlan of [-1, 10, 13, 16, 37, 38, 4000]) {
          const fr = new Uint8Array(80).fill(0x5a);
          fr.set(bytes(d), 0);
          fr.set([2, 0, 0, 0, 0, 9], 6);
          if (vlan < 0) fr.set([0x88, 0xb5], 12);
          else fr.set([0x81, 0x00, vlan >> 8, vlan & 0xff, 0x88, 0xb5], 12);
          corpus.push(fr);
        }
      }
      const filtered = (d: VdpaSimNet) => d.pairStats.reduce((s, x) => s + x.filtered, 0);
      const decide = (d: VdpaSimNet, fr: Uint8Array) => {
        const before = filtered(d);
        d.deliver([fr]);
        return filtered(d) === before;
      };
      const a = corpus.map((fr) => decide(dstA, fr));
      const b = corpus.map((fr) => decide(dstB, fr));
      assert.deepEqual(b, a);
      assert.ok(a.some((x) => x) && a.some((x) => !x), 'the corpus has accepted and filtered frames');
      f.close();
      fB.close();
    });

    test(`blk (${layout}): uAPI save/load and saveState/loadState give the same disk and the same ring positions`, async () => {
      const run = async (path: 'state' | 'vhost') => {
        const p = Platform.create({ ramSize: 8 << 20, privateSize: 8 << 20 });
        const disk = new SharedDisk(64);
        const vhost = new VhostVdpa(p);
        const src = new VdpaSimBlk(p, { name: 'src', backend: disk, deviceFeatures: VDPASIM_BLK_FEATURES });
        vhost.probe(src);
        const f = vhost.open(vhost.nodeOf('src'));
        const vm = vmmBringUp(p, f, featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | (layout === 'packed' ? featureBit(VIRTIO_F_RING_PACKED) : 0n), [0]);
        const q = vm.qs.get(0)!;
        let kick = (): void => { if (q.kickPrepare()) src.kickVq(0); };
        let tok = 0;
        const req = async (type: number, sector: number, data: Uint8Array | number) => {
          const h = p.allocBuffer(16);
          p.view.setUint32(h, type, true);
          p.view.setUint32(h + 4, 0, true);
          p.view.setBigUint64(h + 8, BigInt(sector), true);
          const s = p.allocBuffer(1);
          p.u8[s] = 0xff;
          const len = typeof data === 'number' ? data : data.length;
          const b = p.allocBuffer(len);
          if (typeof data !== 'number') p.u8.set(data, b);
          const bufs = [{ addr: vm.iova(b), len }];
          assert.ok(type === 1 ? q.add(tok++, [{ addr: vm.iova(h), len: 16 }, ...bufs], [{ addr: vm.iova(s), len: 1 }])
            : q.add(tok++, [{ addr: vm.iova(h), len: 16 }], [...bufs, { addr: vm.iova(s), len: 1 }]));
          kick();
          for (let i = 0; i < 20 && q.usedPending() === 0; i++) await turn();
          assert.equal(q.reclaim().length, 1);
          assert.equal(p.u8[s], 0, 'VIRTIO_BLK_S_OK');
          return p.u8.slice(b, b + len);
        };
        const pattern = (seed: number, n: number) => Uint8Array.from({ length: n }, (_, i) => (seed * 31 + i * 7) & 0xff);
        for (let k = 0; k < 6; k++) await req(1, k * 9, pattern(k, 1024));
        let dst: VdpaSimBlk;
        if (path === 'state') {
          src.suspend();
          dst = new VdpaSimBlk(p, { name: 'dst', backend: disk, deviceFeatures: VDPASIM_BLK_FEATURES });
          loadState(dst, saveState(src));
          dst.resume();
          const d = dst;
          kick = () => { if (q.kickPrepare()) d.kickVq(0); };
        } else {
          const st = vhostSave(f, { features: vm.features, vrings: vm.vrings });
          dst = new VdpaSimBlk(p, { name: 'dst', backend: disk, deviceFeatures: VDPASIM_BLK_FEATURES });
          vhost.probe(dst);
          const fB = vhost.open(vhost.nodeOf('dst'));
          const k = kicks(p, [0]);
          assert.equal(await vhostLoad(fB, p, st, { maps: [{ iova: G, size: p.ramSize, uaddr: p.ramBase }], doorbells: k.doorbells }), null);
          kick = () => { if (q.kickPrepare()) k.ring(0); };
        }
        // After the switch: more writes, then the whole disk read back through the same ring.
        for (let k = 6; k < 9; k++) await req(1, k * 5 + 1, pattern(k, 512));
        const read = await req(0, 0, 64 * 512);
        return { read, disk: disk.data.slice(), tok, status: dst.getStatus() };
      };
      const a = await run('state');
      const b = await run('vhost');
      assert.deepEqual(b.read, a.read, 'identical blk contents read through the guest ring');
      assert.deepEqual(b.disk, a.disk);
      assert.deepEqual(a.read, a.disk);
      assert.equal(a.status & 0x40, 0);
      assert.equal(b.status & 0x40, 0);
      assert.ok(a.read.some((x) => x !== 0));
    });
  }

  test('the destination refuses another device class or features it does not offer, before DRIVER_OK', async () => {
    const p = Platform.create({ ramSize: 4 << 20, privateSize: 4 << 20 });
    const vhost = new VhostVdpa(p);
    const src = new VdpaSimNet(p, netOpts('src'));
    vhost.probe(src);
    const f = vhost.open(vhost.nodeOf('src'));
    const vm = vmmBringUp(p, f, featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_NET_F_MQ) | featureBit(VIRTIO_NET_F_CTRL_VQ), [0, 1], 4);
    const st = vhostSave(f, { features: vm.features, vrings: vm.vrings, cvq: vm.cvq! });
    const blk = new VdpaSimBlk(p, { name: 'blk', backend: new SharedDisk(8), deviceFeatures: VDPASIM_BLK_FEATURES });
    vhost.probe(blk);
    const fb = vhost.open(vhost.nodeOf('blk'));
    await assert.rejects(vhostLoad(fb, p, st, { maps: [], doorbells: () => ({ kick: null, call: null }), cvq: { index: 4 } }), /device id/);
    const poor = new VdpaSimNet(p, { ...netOpts('poor'), deviceFeatures: VDPASIM_NET_FEATURES & ~featureBit(VIRTIO_NET_F_MQ) });
    vhost.probe(poor);
    const fp = vhost.open(vhost.nodeOf('poor'));
    await assert.rejects(vhostLoad(fp, p, st, { maps: [], doorbells: () => ({ kick: null, call: null }), cvq: { index: 4 } }), /offer every feature/);
    assert.equal(fp.getStatus() & S_DRIVER_OK, 0);
    // Malformed states: InvalidArgument before anything reaches the device.
    const fresh = new VdpaSimNet(p, netOpts('fresh'));
    vhost.probe(fresh);
    const ff = vhost.open(vhost.nodeOf('fresh'));
    const mangled: unknown[] = [
      null, { ...st, version: 2 }, { ...st, features: 5 }, { ...st, vrings: [{ ...st.vrings[0]!, base: -1 }] },
      { ...st, vrings: [st.vrings[0]!, st.vrings[0]!] }, { ...st, net: { ...st.net!, mac: 'nope' } },
      { ...st, net: { ...st.net!, vlans: [4096] } }, { ...st, net: { ...st.net!, uni: Array(129).fill('02:00:00:00:00:01') } },
    ];
    for (const m of mangled) {
      await assert.rejects(vhostLoad(ff, p, m as typeof st, { maps: [], doorbells: () => ({ kick: null, call: null }), cvq: { index: 4 } }), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
      assert.equal(ff.getStatus(), 0);
    }
    // A control command the destination refuses during the replay: the load fails and the destination is reset.
    const same = new VdpaSimNet(p, netOpts('same'));
    vhost.probe(same);
    const fs = vhost.open(vhost.nodeOf('same'));
    const bad = { ...st, net: { ...st.net!, pairs: 9 } };
    await assert.rejects(vhostLoad(fs, p, bad, { maps: [], doorbells: () => ({ kick: null, call: null }), cvq: { index: 4 } }), /refused VQ_PAIRS_SET/);
    assert.equal(fs.getStatus(), 0, 'reset');
  });
});
