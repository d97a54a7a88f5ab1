// A batch publishes exactly the chains it reports (issue 7 item 1): a chain that can never be
// added is refused at stage() time, and in wasm a malformed request later in a batch ends the
// batch after the good ones are published. Both layouts × both builds; the device side must
// pop exactly the reported chains and the driver must reclaim exactly them.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, DeviceQueue, DriverQueue, Q, REC, ringFeatures, type Platform } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform, type Build } from './helpers/builds.ts';

const isCode = (code: string) => (e: unknown) => (e as { code?: string }).code === code;

function pair(build: Build, layout: 'split' | 'packed', size: number, indirect = false) {
  const p = makePlatform(build);
  const features = ringFeatures({ packed: layout === 'packed', indirect });
  const drv = new DriverQueue(p, { size, features });
  const dev = new DeviceQueue(p, { size, features, ...drv.addresses });
  return { p, drv, dev, buf: p.allocBuffer(4096) };
}

/** Pops everything and returns the popped ids' tokens as seen by a full used round trip. */
function roundTrip(drv: DriverQueue, dev: DeviceQueue): number[] {
  const n = dev.pop();
  dev.pushPopped(n);
  return drv.reclaim().map((u) => u.token);
}

/**
 * Raw drv_add requests, each a list of segments [len, writable]: what a caller of the wasm
 * export (not DriverQueue, which validates at stage time) may hand it.
 */
function rawRequests(p: Platform, buf: number, reqs: (readonly [number, 0 | 1])[][]): { reqs: number; segs: number } {
  const total = reqs.reduce((a, r) => a + r.length, 0);
  const r0 = p.priv.alloc(REC.REQ * reqs.length, 16);
  const s0 = p.priv.alloc(REC.DSEG * Math.max(total, 1), 16);
  let s = 0;
  reqs.forEach((segs, k) => {
    p.view.setUint32(r0 + REC.REQ * k, 100 + k, true); // token
    p.view.setUint32(r0 + REC.REQ * k + 4, s, true);
    p.view.setUint32(r0 + REC.REQ * k + 8, segs.length, true);
    for (const [len, w] of segs) {
      const o = s0 + REC.DSEG * s++;
      p.view.setUint32(o, buf, true);
      p.view.setUint32(o + 4, 0, true);
      p.view.setUint32(o + 8, len, true);
      p.view.setUint32(o + 12, w, true);
    }
  });
  return { reqs: r0, segs: s0 };
}

for (const build of BUILDS) {
  for (const layout of LAYOUTS) {
    describe(`${layout} submit with a malformed chain, ${build} build`, () => {
      test('stage() refuses a chain longer than the queue without indirect, and keeps the good ones', () => {
        const { drv, dev, buf } = pair(build, layout, 2);
        assert.equal(drv.maxChainSegs, 2);
        drv.stageOne(1, buf, 16);
        // A blk read on a 2-entry queue: header, data, status.
        assert.throws(() => drv.stage(2, [{ addr: buf, len: 16 }], [{ addr: buf + 16, len: 512 }, { addr: buf + 600, len: 1 }]), isCode(Code.InvalidArgument));
        assert.equal(drv.stagedCount, 1, 'the refused chain staged nothing');
        drv.stageOne(3, buf, 16, true);
        assert.equal(drv.submit(), 2);
        assert.equal(drv.inFlight, 2);
        assert.deepEqual(roundTrip(drv, dev).sort(), [1, 3]);
        assert.equal(drv.inFlight, 0);
        assert.equal(drv.numFree, 2);
      });

      test('with indirect tables the limit is the larger of size and indirectMax', () => {
        const { drv, dev, buf } = pair(build, layout, 2, true);
        assert.equal(drv.maxChainSegs, 16);
        drv.stage(7, Array.from({ length: 16 }, (_, j) => ({ addr: buf + 16 * j, len: 16 })));
        assert.throws(() => drv.stage(8, Array.from({ length: 17 }, (_, j) => ({ addr: buf + 16 * j, len: 16 }))), isCode(Code.InvalidArgument));
        assert.equal(drv.submit(), 1);
        assert.deepEqual(roundTrip(drv, dev), [7]);
      });

      const bad: [string, (readonly [number, 0 | 1])[]][] = [
        // (for the 4-entry queues below, no indirect tables)
        ['more descriptors than the queue size', [[16, 0], [16, 0], [16, 0], [16, 0], [16, 1]]],
        ['writable before readable', [[16, 1], [16, 0]]],
        ['no segments', []],
      ];
      for (const [name, segs] of bad) {
        test(`drv_add: ${name} later in a batch ends it after publishing the good ones`, () => {
          // [good 2-desc, bad, good] on a 4-entry queue: there is room for the third, but the
          // bad one ends the batch.
          const q = pair(build, layout, 4);
          const raw = rawRequests(q.p, q.buf, [[[16, 0], [16, 1]], segs, [[16, 0]]]);
          const r = q.p.exports.drv_add(q.drv.qsb, raw.reqs, 3, raw.segs);
          assert.equal(r, 1, 'one request added and reported');
          assert.equal(q.drv.inFlight, 1, 'the driver counts exactly it');
          assert.equal(q.drv.numFree, 2, 'two descriptors used');
          assert.equal(q.dev.available() > 0, true, 'the device sees it');
          assert.equal(q.dev.pop(), 1, 'the device pops exactly the reported chain');
          q.dev.pushPopped();
          assert.deepEqual(q.drv.reclaim(), [{ token: 100, len: 0 }]);
          assert.equal(q.drv.state.state, 'ready');
          assert.equal(q.dev.state.state, 'ready');
          // The queue goes on: the bad request is dropped by the caller, the last one is added.
          const again = rawRequests(q.p, q.buf, [[[16, 0]]]);
          assert.equal(q.p.exports.drv_add(q.drv.qsb, again.reqs, 1, again.segs), 1);
          assert.equal(q.dev.pop(), 1);
        });

        test(`drv_add: ${name} first in a batch touches nothing and does not wedge the queue`, () => {
          const q = pair(build, layout, 4);
          const before = q.p.u8.slice(q.drv.addresses.descArea, q.drv.addresses.descArea + 64);
          const raw = rawRequests(q.p, q.buf, [segs, [[16, 0]]]);
          assert.equal(q.p.exports.drv_add(q.drv.qsb, raw.reqs, 2, raw.segs), -1 /* STATUS_INVALID_ARG */);
          assert.deepEqual(q.p.u8.slice(q.drv.addresses.descArea, q.drv.addresses.descArea + 64), before);
          assert.equal(q.drv.inFlight, 0);
          assert.equal(q.drv.numFree, 4);
          assert.equal(q.p.u32[(q.drv.qsb + Q.STATUS) >> 2], 0, 'not broken');
          assert.equal(q.dev.pop(), 0, 'the device sees nothing');
          // Dropping the bad request, the rest goes through.
          assert.equal(q.p.exports.drv_add(q.drv.qsb, raw.reqs + REC.REQ, 1, raw.segs), 1);
          assert.equal(q.dev.pop(), 1);
        });
      }

      test('a full batch on a 2-entry queue is published and reclaimed exactly, over many rounds', () => {
        const { drv, dev, buf } = pair(build, layout, 2);
        for (let round = 0; round < 50; round++) {
          // Two 1-descriptor chains and a 2-descriptor one: only what fits is added.
          drv.stageOne(3 * round, buf, 16);
          drv.stage(3 * round + 1, [{ addr: buf, len: 16 }], [{ addr: buf + 16, len: 1 }]);
          drv.stageOne(3 * round + 2, buf, 16, true);
          let added = drv.submit();
          assert.equal(added, 1);
          const got: number[] = [];
          while (drv.stagedCount > 0 || drv.inFlight > 0) {
            const n = dev.pop();
            assert.equal(n, drv.inFlight, 'the device pops exactly what the driver reports in flight');
            dev.pushPopped(n);
            got.push(...drv.reclaim().map((u) => u.token));
            if (drv.stagedCount > 0) added += drv.submit();
          }
          assert.equal(added, 3);
          assert.deepEqual(got, [3 * round, 3 * round + 1, 3 * round + 2]);
        }
      });
    });
  }
}
