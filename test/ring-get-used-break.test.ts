// A used batch that breaks part-way: the good entries before the bad one are reclaimed, the
// error comes on the next call, and detachUnused() hands back exactly what is still in flight —
// no token is lost (found by the driver-side fuzzer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceQueue, DriverQueue, VirtioError, Code, ringFeatures } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform } from './helpers/builds.ts';

for (const build of BUILDS) for (const layout of LAYOUTS) {
  test(`${layout}/${build}: a bad used entry after a good one: the good token is returned, then the error`, () => {
    const p = makePlatform(build);
    const features = ringFeatures({ packed: layout === 'packed' });
    const drv = new DriverQueue(p, { size: 8, features });
    const dev = new DeviceQueue(p, { size: 8, features, ...drv.addresses });
    const buf = p.allocBuffer(64);
    for (const t of [100, 101, 102]) drv.stage(t, [{ addr: buf, len: 16 }]);
    assert.equal(drv.submit(), 3);
    assert.equal(dev.pop(1), 1);
    dev.pushPopped(1); // token 100, correctly
    // Then the device writes a second used entry naming a buffer that is not in flight.
    const dv = p.view;
    if (layout === 'split') {
      const used = drv.addresses.deviceArea;
      dv.setUint32(used + 4 + 8 * 1, 5, true); // used->ring[1].id = 5 (never added)
      dv.setUint32(used + 4 + 8 * 1 + 4, 0, true);
      dv.setUint16(used + 2, 2, true); // used->idx = 2
    } else {
      const d = drv.addresses.descArea + 16 * 1; // slot 1, marked used in this wrap, id 5
      dv.setUint16(d + 12, 5, true);
      dv.setUint16(d + 14, (1 << 7) | (1 << 15), true);
    }
    assert.equal(drv.getUsed(), 1);
    assert.equal(drv.usedToken(0), 100);
    assert.equal(drv.broken, true);
    assert.throws(() => drv.getUsed(), (e: unknown) => e instanceof VirtioError && e.code === Code.UsedIdNotInflight);
    assert.deepEqual(drv.detachUnused().sort(), [101, 102]);
    assert.equal(drv.broken, false);
  });
}
