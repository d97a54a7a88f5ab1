// Queue limits and state (issue 7 item 18, ring parts): the largest queue size works with the
// default options; setState() does not repair a broken queue (only reset() does); the driver
// validates used entries against its own in-flight count, which the statistics counters
// cannot change.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, DeviceQueue, DriverQueue, Q, ringFeatures } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform } from './helpers/builds.ts';

const isCode = (code: string) => (e: unknown) => (e as { code?: string }).code === code;

for (const build of BUILDS) {
  for (const layout of LAYOUTS) {
    const features = ringFeatures({ packed: layout === 'packed' });
    describe(`${layout} queue limits, ${build} build`, () => {
      test('a size-32768 queue works with the default options', () => {
        const p = makePlatform(build, { ramSize: 4 << 20, privateSize: 8 << 20 });
        const drv = new DriverQueue(p, { size: 32768, features });
        const dev = new DeviceQueue(p, { size: 32768, features, ...drv.addresses });
        assert.equal(dev.maxSegs, 65535);
        const buf = p.allocBuffer(64);
        for (let t = 0; t < 300; t++) drv.stageOne(t, buf, 64);
        assert.equal(drv.submit(), 300);
        let seen = 0;
        for (let n; (n = dev.pop()) > 0; seen += n) dev.pushPopped(n);
        assert.equal(seen, 300);
        assert.equal(drv.reclaim().length, 300);
      });

      test('setState() keeps a broken queue broken; reset() clears it', () => {
        const p = makePlatform(build);
        const drv = new DriverQueue(p, { size: 8, features });
        const dev = new DeviceQueue(p, { size: 8, features, ...drv.addresses });
        // Break the queue from the driver side: a head/id outside the queue.
        if (layout === 'split') {
          p.view.setUint16(drv.addresses.driverArea + 4, 9, true); // avail ring[0] = 9
          p.view.setUint16(drv.addresses.driverArea + 2, 1, true); // avail idx = 1
        } else {
          const d = drv.addresses.descArea;
          p.view.setUint32(d, p.allocBuffer(16), true);
          p.view.setUint32(d + 8, 16, true);
          p.view.setUint16(d + 12, 9, true); // buffer id 9 >= size
          p.view.setUint16(d + 14, 1 << 7, true); // AVAIL, wrap 1
        }
        assert.throws(() => dev.pop());
        assert.equal(dev.broken, true);
        const code = dev.state.state === 'broken' ? dev.state.error.code : '';
        const s = dev.getState();
        dev.setState(s);
        assert.equal(dev.broken, true, 'setState does not repair');
        assert.equal(dev.state.state === 'broken' && dev.state.error.code, code, 'same error');
        assert.deepEqual(dev.getState(), s, 'the position is restored all the same');
        assert.throws(() => dev.pop(), isCode(code));
        dev.reset();
        assert.equal(dev.broken, false);
        assert.equal(dev.state.state, 'ready');
      });

      test('clearing the statistics does not make a valid used entry be rejected', () => {
        const p = makePlatform(build);
        const f = ringFeatures({ packed: layout === 'packed', inOrder: true });
        const drv = new DriverQueue(p, { size: 8, features: f });
        const dev = new DeviceQueue(p, { size: 8, features: f, ...drv.addresses });
        const buf = p.allocBuffer(64);
        for (let t = 0; t < 3; t++) drv.stageOne(t, buf, 64);
        drv.submit();
        assert.equal(dev.pop(), 3);
        dev.pushPopped(3, true); // one used entry for the batch (§2.7.9 / §2.8.10)
        // Counters restored from elsewhere (e.g. migrated statistics): all zero.
        p.u8.fill(0, drv.qsb + Q.STAT_CHAINS, drv.qsb + Q.STAT_NOTIFY + 8);
        assert.equal(drv.inFlight, 3);
        assert.deepEqual(drv.reclaim().map((u) => u.token), [0, 1, 2]);
        assert.equal(drv.state.state, 'ready');
        assert.equal(drv.inFlight, 0);
      });

      if (layout === 'split') {
        test('inflated statistics do not make an invalid used index be accepted', () => {
          const p = makePlatform(build);
          const drv = new DriverQueue(p, { size: 8, features });
          const dev = new DeviceQueue(p, { size: 8, features, ...drv.addresses });
          const buf = p.allocBuffer(64);
          drv.stageOne(1, buf, 64);
          drv.submit();
          assert.equal(dev.pop(), 1);
          dev.pushPopped();
          p.view.setUint32(drv.qsb + Q.STAT_CHAINS, 1000, true);
          // A device that claims three used entries for the one buffer in flight.
          p.view.setUint16(drv.addresses.deviceArea + 2, 3, true);
          assert.throws(() => drv.getUsed(), isCode(Code.UsedIdxInvalid));
          assert.equal(drv.inFlight, 1, 'nothing was reclaimed');
        });
      }
    });
  }
}
