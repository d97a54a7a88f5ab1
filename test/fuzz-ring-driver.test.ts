// Fuzz: the driver side of both ring layouts against a device that writes garbage. A DriverQueue
// adds chains with unique tokens; a fake device sometimes completes them properly (through the
// public DeviceQueue) and then overwrites the used ring (split: used->idx, used elements) or the
// packed descriptor ring (flags, ids, lengths) with random and edge values. getUsed() must return
// only tokens that are in flight, each once, or throw a peer error (the queue is then broken and
// stays broken); it never traps and writes nothing but the driver's own event field. After a
// break, detachUnused() hands back exactly the tokens still in flight.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceQueue, DriverQueue, VirtioError, PEER_CODES, ringFeatures, type Platform } from '../src/index.ts';
import { BUILDS, makePlatform, type Build } from './helpers/builds.ts';
import { fuzz, type Rand } from './helpers/fuzz.ts';

// linux/virtio_ring.h
const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;

const RAM = 1 << 20;
const platforms = new Map<Build, { p: Platform; bufs: number }>();

function env(build: Build): { p: Platform; bufs: number } {
  let e = platforms.get(build);
  if (!e) {
    const p = makePlatform(build, { ramSize: RAM, privateSize: 2 << 20 });
    e = { p, bufs: p.allocBuffer(64 * 1024, 64) };
    platforms.set(build, e);
  }
  return e;
}

function pickSize(r: Rand, packed: boolean): number {
  let n = r.chance(0.7) ? r.range(1, 16) : r.chance(0.9) ? r.range(17, 256) : r.range(257, 2048);
  if (!packed) n = 1 << (31 - Math.clz32(n));
  return n;
}

/** Asserts RAM equals `snap` except inside [lo, hi). */
function checkRam(p: Platform, snap: Uint8Array, lo: number, hi: number, what: string): void {
  const cur = p.u8.subarray(p.ramBase, p.ramBase + RAM);
  if (Buffer.compare(cur, snap) === 0) return;
  for (let k = 0; k < snap.length; k++) {
    const a = p.ramBase + k;
    if (cur[k] !== snap[k] && (a < lo || a >= hi)) assert.fail(`${what}: memory at ${a} changed outside the driver's event field`);
  }
}

function runCase(build: Build, r: Rand): void {
  const { p, bufs } = env(build);
  const packed = r.chance(0.5);
  const size = pickSize(r, packed);
  const features = ringFeatures({ packed, eventIdx: r.chance(0.5), indirect: r.chance(0.5), inOrder: r.chance(0.4) });
  const drv = new DriverQueue(p, { size, features, indirectMax: r.pick([2, 4, 8]) });
  const dev = new DeviceQueue(p, { size, features, ...drv.addresses, maxSegs: Math.max(64, 2 * size * 8) });
  const dv = p.view;
  const { descArea, driverArea, deviceArea } = drv.addresses;
  const drvEvent: [number, number] = [driverArea, driverArea + (packed ? 4 : 6 + 2 * size)];
  const inflight = new Set<number>();
  let nextToken = r.int(2 ** 32);
  try {
    const steps = r.range(1, 12);
    for (let s = 0; s < steps; s++) {
      // Add a few chains.
      const adds = r.range(0, Math.min(8, size));
      for (let k = 0; k < adds; k++) {
        // A chain longer than the ring can never be added (InvalidArgument): stay within size.
        const nout = r.int(Math.min(3, size));
        const nin = nout === 0 ? 1 + r.int(Math.min(2, size)) : r.int(Math.min(3, size - nout + 1));
        const b = () => ({ addr: bufs + r.int(60000), len: r.range(1, 4000) });
        const token = nextToken >>> 0;
        nextToken = (nextToken + 1 + r.int(3)) >>> 0;
        const ok = drv.broken ? false : drv.add(token, Array.from({ length: nout }, b), Array.from({ length: nin }, b));
        if (ok) inflight.add(token);
      }
      if (!drv.broken && r.chance(0.5)) drv.kickPrepare();
      // The device: complete some properly, then scribble.
      if (!dev.broken && r.chance(0.6)) {
        try {
          const n = dev.pop(r.range(1, 8));
          for (let i = 0; i < n; i++) dev.setWritten(i, r.int(dev.writeBytes(i) + 1));
          if (n) dev.pushPopped(n, dev.inOrder && r.chance(0.3));
        } catch (e) {
          assert.ok(e instanceof VirtioError, String(e));
        }
      }
      const garbage = r.range(0, 3);
      for (let g = 0; g < garbage; g++) {
        if (!packed) {
          const x = r();
          if (x < 0.3) dv.setUint16(deviceArea + 2, (dv.getUint16(deviceArea + 2, true) + r.pick([1, 2, size, size + 1, 0xffff, r.int(0x10000)])) & 0xffff, true);
          else if (x < 0.7) {
            const o = deviceArea + 4 + 8 * r.int(size);
            dv.setUint32(o, r.chance(0.5) ? r.int(size) : r.pick([size, 0xffff, 0xffffffff, r.int(2 ** 32)]), true);
          } else if (x < 0.85) dv.setUint32(deviceArea + 8 + 8 * r.int(size), r.int(2 ** 32), true);
          else p.u8[deviceArea + r.int(6 + 8 * size)]! ^= 1 << r.int(8);
        } else {
          const o = descArea + 16 * r.int(size);
          const x = r();
          if (x < 0.4) dv.setUint16(o + 14, dv.getUint16(o + 14, true) ^ r.pick([F_AVAIL, F_USED, F_AVAIL | F_USED, F_WRITE, F_NEXT, F_INDIRECT]), true);
          else if (x < 0.7) dv.setUint16(o + 12, r.chance(0.5) ? r.int(size) : r.pick([size, 0xffff, r.int(0x10000)]), true);
          else if (x < 0.85) dv.setUint32(o + 8, r.int(2 ** 32), true);
          else p.u8[o + r.int(16)]! ^= 1 << r.int(8);
        }
      }
      // The driver reclaims.
      const snap = p.u8.slice(p.ramBase, p.ramBase + RAM);
      const was = drv.broken;
      try {
        for (let round = 0; round < 3; round++) {
          const n = drv.getUsed(r.chance(0.3) ? r.range(1, 4) : drv.batch);
          for (let i = 0; i < n; i++) {
            const t = drv.usedToken(i);
            assert.ok(inflight.has(t), `getUsed returned token ${t}, which is not in flight (${inflight.size} in flight)`);
            inflight.delete(t);
          }
          if (n === 0) break;
        }
        assert.equal(was, false, 'a broken queue must refuse getUsed');
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        assert.ok(e instanceof VirtioError, `getUsed threw ${String(e)}`);
        assert.ok(PEER_CODES.has(e.code), `getUsed threw ${e.code}, not a peer error`);
        assert.equal(drv.broken, true, 'a peer error breaks the queue');
        assert.throws(() => drv.getUsed(), (x: unknown) => x instanceof VirtioError && x.code === e.code, 'the error is sticky');
      }
      checkRam(p, snap, drvEvent[0], drvEvent[1], 'getUsed');
      if (!drv.broken && r.chance(0.3)) {
        drv.enableCb();
        if (r.chance(0.5)) drv.disableCb();
        drv.usedPending();
        checkRam(p, snap, drvEvent[0], drvEvent[1], 'enableCb/disableCb');
      }
      if (drv.broken || r.chance(0.05)) {
        const wasBroken = drv.broken;
        // Reset the device, take back what is still in flight: exactly our set.
        const back = drv.detachUnused();
        assert.equal(new Set(back).size, back.length, 'detachUnused returned a token twice');
        for (const t of back) assert.ok(inflight.has(t), `detachUnused returned token ${t}, which is not in flight`);
        // Every token is accounted for even after a break: the good entries of a batch that broke
        // on a bad one were returned by getUsed(), the rest come back here.
        assert.deepEqual(new Set(back), inflight, `detachUnused returns the tokens in flight (${wasBroken ? 'after a break' : 'no break'})`);
        inflight.clear();
        assert.equal(drv.numFree, size);
        assert.equal(drv.broken, false);
        dev.reset();
      }
    }
  } finally {
    dev.destroy();
    drv.destroy();
  }
}

describe('fuzz: driver side against a device that writes garbage', () => {
  after(() => platforms.clear());
  for (const build of BUILDS) {
    test(`${build}: getUsed returns in-flight tokens once or a peer error, never a trap`, () => {
      fuzz(`ring-driver-${build}`, 150, (r) => runCase(build, r));
    });
  }
});
