// Migration over the vhost_vdpa node (issue 9): VHOST_F_LOG_ALL + VHOST_SET_LOG_BASE (dirty
// pages the device writes, in vhost's log layout, indexed by GPA = memory offset − guest RAM
// base while the IOTLB maps RAM at a shifted IOVA), and the VMM-faithful migration path
// (src/migration/vhost-migrate.ts) against saveState/loadState.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, VhostError, DriverQueue, Doorbell, DoorbellWaiter,
  featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_NET_F_MAC, VIRTIO_F_RING_PACKED,
} from '../src/index.ts';
import * as U from '../src/vhost/uapi.ts';
import { eth, tick } from './helpers/net.ts';

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
