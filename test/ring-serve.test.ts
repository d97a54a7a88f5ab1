// The fused verbs (issue 11): DeviceQueue.serve (pop + validate/translate + copy + push used +
// call decision in one wasm call), DriverQueue.addBufs (one-buffer chains + publish + kick
// decision) and DriverQueue.reclaimUsed (tokens and lengths into arrays), on both layouts ×
// both builds: round trips past u16 / wrap-counter wraparound, ring memory identical to the
// general pop/push path, where serve stops and hands over to pop, and the errors it reports.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverQueue, DeviceQueue, Iotlb, ringFeatures, Code, VirtioError, PERM_R, PERM_RW, type RingFeatureOptions } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform, type Build } from './helpers/builds.ts';

function pair(build: Build, layout: 'split' | 'packed', size: number, f: RingFeatureOptions = {}, batch = 32) {
  const p = makePlatform(build, { ramSize: 2 << 20 });
  const features = ringFeatures({ packed: layout === 'packed', ...f });
  const drv = new DriverQueue(p, { size, features, batch });
  const dev = new DeviceQueue(p, { size, features, ...drv.addresses, batch });
  return { p, drv, dev };
}

const isCode = (c: string) => (e: unknown) => e instanceof VirtioError && e.code === c;

for (const build of BUILDS) {
  for (const layout of LAYOUTS) {
    describe(`fused verbs, ${layout} ring, ${build} build`, () => {
      test('addBufs → serve(copy) → reclaimUsed moves every byte and token, past index wraparound', () => {
        const size = 64;
        const batch = 24; // not a divisor of the size: batches straddle the ring end
        const { p, drv, dev } = pair(build, layout, size, { eventIdx: layout === 'split' }, batch);
        const bufs = p.allocBuffer(batch * 64);
        const sink = p.allocBuffer(batch * 64);
        const lens = p.allocBuffer(batch * 4);
        let token = 0;
        let expect = 0;
        for (let it = 0; it < 3000; it++) { // 72 000 chains: split u16 indices wrap, packed wrap counters flip
          const n = 1 + (it % batch);
          for (let i = 0; i < n; i++) {
            const len = 1 + ((token + i) % 64);
            p.u8.fill((token + i) & 0xff, bufs + i * 64, bufs + i * 64 + len);
            drv.setBuf(i, token + i, bufs + i * 64, len);
          }
          assert.equal(drv.addBufs(n), n);
          token += n;
          assert.equal(dev.serve(batch, sink, 64, lens), n);
          assert.equal(dev.serveStopped, false);
          for (let i = 0; i < n; i++) {
            const len = p.view.getUint32(lens + 4 * i, true);
            assert.equal(len, 1 + ((expect + i) % 64));
            assert.equal(p.u8[sink + i * 64 + len - 1], (expect + i) & 0xff);
          }
          assert.equal(drv.reclaimUsed(), n);
          for (let i = 0; i < n; i++) {
            assert.equal(drv.usedTokens[i], expect++);
            assert.equal(drv.usedLens[i], 0);
          }
        }
        assert.equal(drv.inFlight, 0);
        assert.equal(drv.numFree, size);
        assert.equal(dev.stats.chains, token);
        assert.equal(dev.stats.used, token);
        assert.equal(drv.stats.used, token);
        assert.equal(dev.serve(), 0, 'empty');
        assert.equal(dev.serveStopped, false);
      });

      test('ring memory after addBufs/serve equals stage/submit/pop/copyOut/pushPopped/needCall', () => {
        const a = pair(build, layout, 16, {}, 8);
        const b = pair(build, layout, 16, {}, 8);
        for (const x of [a, b]) {
          const buf = x.p.allocBuffer(8 * 16);
          for (let i = 0; i < 8; i++) x.p.u8.fill(i + 1, buf + 16 * i, buf + 16 * i + 16);
          (x as { buf?: number }).buf = buf;
        }
        const sinkA = a.p.allocBuffer(8 * 16);
        const sinkB = b.p.allocBuffer(8 * 16);
        const bufA = (a as { buf?: number }).buf!;
        const bufB = (b as { buf?: number }).buf!;
        for (let round = 0; round < 11; round++) {
          const n = 1 + (round % 8);
          for (let i = 0; i < n; i++) {
            a.drv.setBuf(i, 100 * round + i, bufA + 16 * i, 16);
            b.drv.stageOne(100 * round + i, bufB + 16 * i, 16);
          }
          assert.equal(a.drv.addBufs(n), n);
          assert.equal(b.drv.submit(), n);
          assert.equal(a.drv.kickNeeded, b.drv.kickPrepare());
          assert.equal(a.dev.serve(8, sinkA, 16), n);
          assert.equal(b.dev.pop(), n);
          b.dev.copyOut(n, sinkB, 16);
          b.dev.pushPopped();
          assert.equal(a.dev.serveCall, b.dev.needCall());
          assert.deepEqual(a.p.u8.subarray(a.p.ramBase, a.p.ramBase + (1 << 20)), b.p.u8.subarray(b.p.ramBase, b.p.ramBase + (1 << 20)), `RAM after round ${round}`);
          assert.equal(a.drv.reclaimUsed(), n);
          assert.equal(b.drv.getUsed(), n);
          for (let i = 0; i < n; i++) assert.equal(a.drv.usedTokens[i], b.drv.usedToken(i));
        }
        assert.deepEqual(a.dev.stats, b.dev.stats);
        assert.deepEqual(a.drv.stats, b.drv.stats);
      });

      test('serve stops at a chain it does not serve; pop takes it with its details', () => {
        const { p, drv, dev } = pair(build, layout, 16, { indirect: true });
        const buf = p.allocBuffer(256);
        drv.setBuf(0, 1, buf, 8);
        drv.setBuf(1, 2, buf, 8);
        assert.equal(drv.addBufs(2), 2);
        drv.stage(3, [{ addr: buf, len: 4 }], [{ addr: buf + 64, len: 4 }]); // two descriptors
        drv.stageOne(4, buf, 8, true); //                                       writable
        drv.stageOne(5, buf, 100); //                                          longer than stride
        drv.stageOne(6, buf, 0); //                                            empty
        assert.equal(drv.submit(), 4);
        assert.equal(drv.addBufs(1), 1); //                                    a simple one again (token 1)
        const served: number[] = [];
        const popped: number[] = [];
        for (let guard = 0; guard < 10; guard++) {
          served.push(dev.serve(16, p.allocBuffer(16 * 64), 64));
          if (!dev.serveStopped) break;
          assert.equal(dev.pop(1), 1);
          popped.push(dev.chainId(0));
          dev.pushPopped();
        }
        assert.deepEqual(served, [2, 0, 0, 0, 1]);
        assert.equal(popped.length, 4);
        const got: number[] = [];
        for (let n; (n = drv.reclaimUsed()) > 0;) for (let i = 0; i < n; i++) got.push(drv.usedTokens[i]!);
        assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 1]);
      });

      test('serve while the device holds popped chains: used entries go after them, tokens all come back', () => {
        const { p, drv, dev } = pair(build, layout, 8, {}, 8);
        const buf = p.allocBuffer(64);
        for (let round = 0; round < 40; round++) { // the ring end passes many times
          for (let i = 0; i < 5; i++) drv.setBuf(i, 10 * round + i, buf, 8);
          assert.equal(drv.addBufs(5), 5);
          assert.equal(dev.pop(2), 2); //   held by the device
          assert.equal(dev.serve(), 3); //  served around them
          assert.equal(dev.serveStopped, false);
          dev.pushPopped(); //              the held ones complete last
          const got: number[] = [];
          const n = drv.reclaimUsed();
          for (let i = 0; i < n; i++) got.push(drv.usedTokens[i]!);
          assert.deepEqual(got, [2, 3, 4, 0, 1].map((k) => 10 * round + k), `round ${round}`);
          assert.equal(drv.inFlight, 0);
        }
      });

      test('addBufs(writable) posts device-writable buffers (serve leaves them to pop)', () => {
        const { p, drv, dev } = pair(build, layout, 8);
        const buf = p.allocBuffer(64);
        drv.setBuf(0, 9, buf, 32);
        assert.equal(drv.addBufs(1, true), 1);
        assert.equal(dev.serve(), 0);
        assert.equal(dev.serveStopped, true);
        assert.equal(dev.pop(), 1);
        assert.equal(dev.writeBytes(0), 32);
        assert.equal(dev.readBytes(0), 0);
        assert.equal(dev.write(0, new Uint8Array([7, 7])), 2);
        dev.pushPopped();
        assert.equal(drv.reclaimUsed(), 1);
        assert.equal(drv.usedTokens[0], 9);
        assert.equal(drv.usedLens[0], 2);
      });

      test('a full ring: addBufs adds what fits and publishes exactly that', () => {
        const { p, drv, dev } = pair(build, layout, 8, {}, 16);
        const buf = p.allocBuffer(64);
        for (let i = 0; i < 16; i++) drv.setBuf(i, i, buf, 4);
        assert.equal(drv.addBufs(16), 8);
        assert.equal(drv.inFlight, 8);
        assert.equal(drv.addBufs(8, false, 8), 0);
        assert.equal(dev.serve(), 8);
        assert.equal(drv.reclaimUsed(3), 3);
        assert.equal(drv.addBufs(8, false, 8), 3);
        assert.deepEqual([...drv.usedTokens.subarray(0, 3)], [0, 1, 2]);
        assert.equal(dev.serve(), 3);
        assert.equal(drv.reclaimUsed(), 8);
        assert.deepEqual([...drv.usedTokens.subarray(0, 8)], [3, 4, 5, 6, 7, 8, 9, 10]);
      });

      test('a buffer outside the device map: serve stops, pop reports address_unmapped', () => {
        const p = makePlatform(build, { ramSize: 2 << 20 });
        const features = ringFeatures({ packed: layout === 'packed' });
        const drv = new DriverQueue(p, { size: 8, features });
        const iotlb = new Iotlb(p, 8);
        const buf = p.allocBuffer(4096, 4096);
        // The rings and the first half of the buffer page are mapped; the second half is not.
        iotlb.setMap([{ iova: BigInt(p.ramBase), size: buf + 2048 - p.ramBase, addr: p.ramBase, perm: PERM_RW }]);
        const dev = new DeviceQueue(p, { size: 8, features, ...drv.addresses, iotlb });
        drv.setBuf(0, 1, buf, 64);
        drv.setBuf(1, 2, buf + 2040, 16); // straddles the end of the mapping
        assert.equal(drv.addBufs(2), 2);
        assert.equal(dev.serve(), 1);
        assert.equal(dev.serveStopped, true);
        assert.throws(() => dev.pop(), isCode(Code.AddressUnmapped));
        assert.throws(() => dev.serve(), isCode(Code.AddressUnmapped), 'sticky');
        // A read-only map is enough for serve (it only reads buffers) but not a write-only one.
        const drv2 = new DriverQueue(p, { size: 8, features });
        const io2 = new Iotlb(p, 8);
        io2.setMap([{ iova: BigInt(p.ramBase), size: buf - p.ramBase, addr: p.ramBase, perm: PERM_RW }, { iova: BigInt(buf), size: 4096, addr: buf, perm: PERM_R }]);
        const dev2 = new DeviceQueue(p, { size: 8, features, ...drv2.addresses, iotlb: io2 });
        drv2.setBuf(0, 1, buf, 64);
        assert.equal(drv2.addBufs(1), 1);
        assert.equal(dev2.serve(), 1);
      });

      if (layout === 'split') {
        test('split: serve reports avail->idx too far ahead and a head out of range, and stays broken', () => {
          const { p, drv, dev } = pair(build, layout, 8);
          const avail = drv.addresses.driverArea;
          p.view.setUint16(avail + 2, 9, true);
          assert.throws(() => dev.serve(), isCode(Code.AvailIdxInvalid));
          assert.equal(dev.broken, true);
          assert.throws(() => dev.serve(), isCode(Code.AvailIdxInvalid));
          const b = pair(build, layout, 8);
          const av = b.drv.addresses.driverArea;
          b.p.view.setUint16(av + 4, 8, true); // ring[0] = 8
          b.p.view.setUint16(av + 2, 1, true);
          assert.throws(() => b.dev.serve(), isCode(Code.HeadOutOfRange));
        });
      }

      test('bad arguments are refused before anything is touched', () => {
        const { p, drv, dev } = pair(build, layout, 8);
        assert.throws(() => dev.serve(-1), isCode(Code.InvalidArgument));
        assert.throws(() => dev.serve(1.5), isCode(Code.InvalidArgument));
        assert.throws(() => dev.serve(4, p.u8.length - 10, 64), isCode(Code.InvalidArgument));
        assert.throws(() => dev.serve(4, 0, 0, p.u8.length - 4), isCode(Code.InvalidArgument));
        assert.throws(() => dev.serve(4, 0, -1), isCode(Code.InvalidArgument));
        assert.throws(() => dev.serve(4, 0, 64), isCode(Code.InvalidArgument), 'the module\'s static data is not a destination');
        assert.throws(() => dev.serve(4, 16, 0, 16), isCode(Code.InvalidArgument), 'nor for lengths');
        assert.throws(() => drv.setBuf(drv.batch, 0, 0, 0), isCode(Code.InvalidArgument));
        assert.throws(() => drv.setBuf(0, -1, 0, 0), isCode(Code.InvalidArgument));
        assert.throws(() => drv.addBufs(drv.batch + 1), isCode(Code.InvalidArgument));
        assert.throws(() => drv.addBufs(1, false, drv.batch), isCode(Code.InvalidArgument));
        assert.equal(drv.inFlight, 0);
        drv.destroy();
        dev.destroy();
        assert.throws(() => dev.serve(), isCode(Code.Cancelled));
        assert.throws(() => drv.addBufs(0), isCode(Code.Cancelled));
        assert.throws(() => drv.reclaimUsed(), isCode(Code.Cancelled));
      });
    });
  }
}
