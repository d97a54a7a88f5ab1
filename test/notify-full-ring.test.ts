// Regression: a push of exactly a whole ring between two decisions must still notify. With
// only the used slot to go by (packed), the device saw "nothing new" and the driver slept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverQueue, DeviceQueue, ringFeatures } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform } from './helpers/builds.ts';

for (const build of BUILDS) {
  for (const layout of LAYOUTS) {
    for (const eventIdx of [false, true]) {
      test(`${layout} ${build}${eventIdx ? ' event idx' : ''}: batches of 1..size all notify, a whole ring included`, () => {
        const p = makePlatform(build);
        const size = 4;
        const features = ringFeatures({ packed: layout === 'packed', eventIdx });
        const drv = new DriverQueue(p, { size, features });
        const dev = new DeviceQueue(p, { size, features, ...drv.addresses });
        const buf = p.allocBuffer(64);
        const calls: boolean[] = [];
        const kicks: boolean[] = [];
        for (let n = 1; n <= size; n++) {
          dev.enableKick();
          for (let i = 0; i < n; i++) drv.stageOne(i, buf, 8);
          assert.equal(drv.submit(), n);
          kicks.push(drv.kickPrepare());
          assert.equal(dev.pop(), n);
          assert.equal(drv.enableCb(), true);
          dev.pushPopped();
          calls.push(dev.needCall());
          assert.equal(drv.getUsed(), n);
        }
        assert.deepEqual(calls, [true, true, true, true]);
        assert.deepEqual(kicks, [true, true, true, true]);
      });
    }
  }
}
