// Round trips through both sides of the ring, on both layouts × both builds: data integrity,
// u16 index wraparound and packed wrap counters, full rings, indirect chains, in-order batches,
// detach on reset.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverQueue, DeviceQueue, ringFeatures, Code, type RingFeatureOptions } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform, type Build } from './helpers/builds.ts';

function pair(build: Build, layout: 'split' | 'packed', size: number, f: RingFeatureOptions = {}) {
  const p = makePlatform(build);
  const features = ringFeatures({ packed: layout === 'packed', ...f });
  const drv = new DriverQueue(p, { size, features });
  const dev = new DeviceQueue(p, { size, features, ...drv.addresses });
  return { p, drv, dev };
}

for (const build of BUILDS) {
  for (const layout of LAYOUTS) {
    describe(`${layout} ring, ${build} build`, () => {
      test('bytes the driver posts arrive, and the device reply comes back with its length', () => {
        const { p, drv, dev } = pair(build, layout, 16);
        const out = p.allocBuffer(256);
        const inb = p.allocBuffer(256);
        p.write(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        drv.stage(42, [{ addr: out, len: 3 }, { addr: out + 3, len: 5 }], [{ addr: inb, len: 16 }]);
        assert.equal(drv.submit(), 1);
        assert.equal(dev.pop(), 1);
        const c = dev.chain(0);
        assert.deepEqual(c.readable, [{ addr: out, len: 3 }, { addr: out + 3, len: 5 }]);
        assert.deepEqual(c.writable, [{ addr: inb, len: 16 }]);
        assert.equal(c.readBytes, 8);
        assert.equal(c.writeBytes, 16);
        assert.deepEqual([...dev.read(0)], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert.equal(dev.write(0, new Uint8Array([9, 9, 9])), 3);
        assert.equal(dev.pushPopped(), 1);
        assert.equal(drv.getUsed(), 1);
        assert.equal(drv.usedToken(0), 42);
        assert.equal(drv.usedLen(0), 3);
        assert.deepEqual([...p.read(inb, 4)], [9, 9, 9, 0]);
        assert.equal(drv.numFree, 16);
      });

      test('indices wrap past 65535 (split) and wrap counters flip (packed) with no loss', () => {
        const { p, drv, dev } = pair(build, layout, 8);
        const buf = p.allocBuffer(64);
        let next = 0;
        let expect = 0;
        const rounds = 70_000; // > 2^16 buffers through a size-8 ring
        for (let r = 0; r < rounds; r += 3) {
          for (let k = 0; k < 3; k++) drv.stageOne(next++ & 0xffffffff, buf, 64);
          assert.equal(drv.submit(), 3);
          assert.equal(dev.pop(), 3);
          dev.pushPopped();
          const n = drv.getUsed();
          assert.equal(n, 3);
          for (let i = 0; i < n; i++) assert.equal(drv.usedToken(i), expect++);
        }
        const s = dev.getState();
        if (s.layout === 'split') {
          assert.equal(s.availIndex, next & 0xffff);
          assert.equal(s.usedIndex, next & 0xffff);
        } else {
          // 1 slot per buffer: the slot is next mod 8, the wrap counter flips every 8.
          assert.equal(s.lastAvailIdx, next % 8);
          assert.equal(s.lastAvailWrap, (Math.floor(next / 8) + 1) % 2);
          assert.equal(s.lastUsedWrap, s.lastAvailWrap);
        }
        assert.equal(dev.stats.chains, next);
        assert.equal(drv.stats.used, next);
      });

      test('a full ring accepts no more; the rest stay staged until buffers come back', () => {
        const { p, drv, dev } = pair(build, layout, 4);
        const buf = p.allocBuffer(64);
        for (let t = 0; t < 6; t++) drv.stageOne(t, buf, 8);
        assert.equal(drv.submit(), 4);
        assert.equal(drv.stagedCount, 2);
        assert.equal(drv.numFree, 0);
        assert.equal(dev.pop(), 4);
        const later = [2, 3].map((i) => [dev.chainId(i), dev.chainDescs(i)] as const);
        dev.pushPopped(2);
        assert.equal(drv.getUsed(), 2);
        assert.deepEqual([drv.usedToken(0), drv.usedToken(1)], [0, 1]);
        assert.equal(drv.submit(), 2);
        assert.equal(drv.stagedCount, 0);
        // Complete the two older chains out of pop order, then the two new ones.
        for (const [id, nd] of later.reverse()) dev.complete(id, nd, 0);
        assert.equal(dev.flushUsed(), 2);
        assert.equal(dev.pop(), 2);
        dev.pushPopped();
        assert.deepEqual(drv.reclaim().map((u) => u.token), [3, 2, 4, 5]);
      });

      test('pushPopped returns popped chains in pop order, each once, across several calls', () => {
        const { p, drv, dev } = pair(build, layout, 8);
        const buf = p.allocBuffer(64);
        for (let t = 0; t < 5; t++) drv.stageOne(t, buf, 8);
        drv.submit();
        assert.equal(dev.pop(), 5);
        assert.equal(dev.pushPopped(2), 2);
        assert.deepEqual(drv.reclaim().map((u) => u.token), [0, 1]);
        assert.equal(dev.pushPopped(), 3, 'the rest');
        assert.deepEqual(drv.reclaim().map((u) => u.token), [2, 3, 4]);
        assert.equal(dev.pushPopped(), 0, 'nothing left to push');
      });

      test('chains longer than the free space wait; multi-descriptor chains skip correctly', () => {
        const { p, drv, dev } = pair(build, layout, 8);
        const buf = p.allocBuffer(1024);
        for (let r = 0; r < 500; r++) {
          const nOut = 1 + (r % 3);
          const nIn = r % 2;
          const out = Array.from({ length: nOut }, (_, i) => ({ addr: buf + 16 * i, len: 16 }));
          const inp = Array.from({ length: nIn }, (_, i) => ({ addr: buf + 512 + 16 * i, len: 16 }));
          drv.stage(r, out, inp);
          assert.equal(drv.submit(), 1);
          assert.equal(dev.pop(), 1);
          const c = dev.chain(0);
          assert.equal(c.readable.length, nOut);
          assert.equal(c.writable.length, nIn);
          assert.equal(c.ndesc, nOut + nIn);
          if (nIn) dev.setWritten(0, 7);
          dev.pushPopped();
          assert.equal(drv.getUsed(), 1);
          assert.equal(drv.usedToken(0), r);
          assert.equal(drv.usedLen(0), nIn ? 7 : 0);
          assert.equal(drv.numFree, 8);
        }
      });

      test('indirect: a many-buffer chain takes one ring slot and arrives whole', () => {
        const { p, drv, dev } = pair(build, layout, 4, { indirect: true });
        const buf = p.allocBuffer(4096);
        const out = Array.from({ length: 10 }, (_, i) => ({ addr: buf + 100 * i, len: 10 + i }));
        const inp = Array.from({ length: 3 }, (_, i) => ({ addr: buf + 2048 + 100 * i, len: 50 }));
        for (let t = 0; t < 4; t++) drv.stage(t, out.slice(0, 2 + t), inp);
        assert.equal(drv.submit(), 4);
        assert.equal(drv.numFree, 0, 'one descriptor per chain');
        assert.equal(dev.pop(), 4);
        for (let i = 0; i < 4; i++) {
          const c = dev.chain(i);
          assert.deepEqual(c.readable, out.slice(0, 2 + i));
          assert.deepEqual(c.writable, inp);
          assert.equal(c.ndesc, 1);
        }
        dev.pushPopped();
        assert.deepEqual(drv.reclaim().map((u) => u.token), [0, 1, 2, 3]);
      });

      test('in order: one used entry for a batch returns every buffer, in order', () => {
        const { p, drv, dev } = pair(build, layout, 8, { inOrder: true });
        const buf = p.allocBuffer(1024);
        for (let r = 0; r < 2000; r++) {
          const n = 1 + (r % 5);
          for (let k = 0; k < n; k++) drv.stage(r * 8 + k, [{ addr: buf, len: 4 }], k % 2 ? [{ addr: buf + 64, len: 32 }] : []);
          assert.equal(drv.submit(), n);
          assert.equal(dev.pop(), n);
          for (let k = 0; k < n; k++) if (k % 2) dev.setWritten(k, 5);
          dev.pushPopped(n, true);
          const got = drv.reclaim();
          assert.deepEqual(got.map((u) => u.token), Array.from({ length: n }, (_, k) => r * 8 + k));
          // The last buffer reports the written length; earlier ones their writable size (as Linux).
          const last = got[n - 1]!;
          assert.equal(last.len, (n - 1) % 2 ? 5 : 0);
          for (let k = 0; k < n - 1; k++) assert.equal(got[k]!.len, k % 2 ? 32 : 0);
        }
      });

      test('detachUnused returns the tokens in flight and leaves a reusable ring', () => {
        const { p, drv, dev } = pair(build, layout, 8);
        const buf = p.allocBuffer(64);
        for (let t = 10; t < 15; t++) drv.stageOne(t, buf, 8);
        assert.equal(drv.submit(), 5);
        assert.deepEqual(drv.detachUnused().sort((a, b) => a - b), [10, 11, 12, 13, 14]);
        assert.equal(drv.numFree, 8);
        assert.equal(drv.inFlight, 0);
        dev.reset();
        drv.stageOne(99, buf, 8);
        drv.submit();
        assert.equal(dev.pop(), 1);
        dev.pushPopped();
        assert.equal(drv.getUsed(), 1);
        assert.equal(drv.usedToken(0), 99);
      });

      test('device state saved and restored on a fresh queue continues identically', () => {
        const { p, drv, dev } = pair(build, layout, 8);
        const buf = p.allocBuffer(64);
        for (let t = 0; t < 13; t++) {
          drv.stageOne(t, buf, 8);
          drv.submit();
          dev.pop();
          dev.pushPopped();
          drv.getUsed();
        }
        drv.stageOne(100, buf, 8);
        drv.stageOne(101, buf, 8);
        drv.submit();
        const saved = dev.getState();
        const dev2 = new DeviceQueue(p, { size: 8, features: dev.features, ...drv.addresses });
        dev2.setState(JSON.parse(JSON.stringify(saved)));
        assert.deepEqual(dev2.getState(), saved);
        assert.equal(dev2.pop(), 2);
        dev2.pushPopped();
        assert.deepEqual(drv.reclaim().map((u) => u.token), [100, 101]);
      });

      test('a queue state for another layout, size or out of range is refused and changes nothing', () => {
        const { dev } = pair(build, layout, 8);
        const before = dev.getState();
        const bad: unknown[] = [
          { ...before, version: 2 },
          { ...before, size: 16 },
          { ...before, layout: layout === 'split' ? 'packed' : 'split' },
          layout === 'split' ? { ...before, availIndex: 65536 } : { ...before, lastAvailIdx: 8 },
          layout === 'split' ? { ...before, availIndex: 20, usedIndex: 5 } : { ...before, lastUsedWrap: 2 },
          null,
        ];
        for (const s of bad) {
          assert.throws(() => dev.setState(s as never), (e: { code: string }) => e.code === Code.InvalidArgument);
          assert.deepEqual(dev.getState(), before);
        }
      });
    });
  }
}
