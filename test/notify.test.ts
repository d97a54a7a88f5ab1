// Notification suppression through the public API, both layouts × both builds: flags
// (VRING_USED_F_NO_NOTIFY / VRING_AVAIL_F_NO_INTERRUPT, packed ENABLE/DISABLE) and
// VIRTIO_F_EVENT_IDX (vring_need_event) across the u16 wrap of the indices.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverQueue, DeviceQueue, ringFeatures } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform, type Build } from './helpers/builds.ts';

function pair(build: Build, layout: 'split' | 'packed', size: number, eventIdx: boolean) {
  const p = makePlatform(build);
  const features = ringFeatures({ packed: layout === 'packed', eventIdx });
  const drv = new DriverQueue(p, { size, features });
  const dev = new DeviceQueue(p, { size, features, ...drv.addresses });
  return { buf: p.allocBuffer(64), drv, dev };
}

for (const build of BUILDS) {
  for (const layout of LAYOUTS) {
    describe(`${layout} notifications, ${build} build`, () => {
      for (const eventIdx of [false, true]) {
        test(`${eventIdx ? 'event idx' : 'flags'}: re-enabled notifications fire once per batch, across 70000 buffers`, () => {
          const { buf, drv, dev } = pair(build, layout, 8, eventIdx);
          let kicks = 0;
          let calls = 0;
          for (let r = 0; r < 70_000; r += 2) {
            assert.equal(dev.enableKick(), false, 'nothing pending before the add');
            drv.stageOne(r, buf, 8);
            drv.stageOne(r + 1, buf, 8);
            drv.submit();
            if (drv.kickPrepare()) kicks++;
            assert.equal(drv.kickPrepare(), false, 'nothing added since the last decision');
            assert.equal(drv.enableCb(), true, 'nothing used yet');
            dev.pop();
            dev.pushPopped();
            if (dev.needCall()) calls++;
            assert.equal(dev.needCall(), false, 'nothing pushed since the last decision');
            assert.equal(drv.getUsed(), 2);
          }
          assert.equal(kicks, 35_000);
          assert.equal(calls, 35_000);
          assert.equal(drv.stats.notifies, 35_000);
          assert.equal(dev.stats.notifies, 35_000);
        });

        test(`${eventIdx ? 'event idx' : 'flags'}: disabled notifications stay quiet`, () => {
          const { buf, drv, dev } = pair(build, layout, 8, eventIdx);
          dev.disableKick();
          drv.disableCb();
          // With EVENT_IDX, a disabled side's event index stays where it was: split wakes once
          // per 2^16 buffers (Linux writes used_event = 0 and leaves avail_event behind).
          let kicks = 0;
          let calls = 0;
          for (let r = 0; r < 1000; r++) {
            drv.stageOne(r, buf, 8);
            drv.submit();
            if (drv.kickPrepare()) kicks++;
            dev.pop();
            dev.pushPopped();
            if (dev.needCall()) calls++;
            drv.getUsed();
          }
          if (!eventIdx) {
            assert.equal(kicks, 0);
            assert.equal(calls, 0);
          } else {
            assert.ok(kicks <= 1, `kicks ${kicks}`);
            assert.ok(calls <= 1, `calls ${calls}`);
          }
        });
      }

      test('event idx: enableKick reports buffers that raced in, enableCb reports used ones', () => {
        const { buf, drv, dev } = pair(build, layout, 8, true);
        dev.disableKick();
        drv.stageOne(1, buf, 8);
        drv.submit();
        assert.equal(dev.enableKick(), true, 'a buffer is already available');
        assert.equal(dev.pop(), 1);
        assert.equal(dev.enableKick(), false);
        drv.disableCb();
        dev.pushPopped();
        assert.equal(drv.enableCb(), false, 'a used buffer is already there');
        assert.equal(drv.getUsed(), 1);
        assert.equal(drv.enableCb(), true);
      });

      if (layout === 'split') {
        test('event idx: a delayed used_event wakes exactly when used->idx passes it', () => {
          const { buf, drv, dev } = pair(build, layout, 8, true);
          // Start both sides near the wrap: the device at 65533, the driver after as many buffers.
          for (let i = 0; i < 65533; i++) {
            drv.stageOne(i, buf, 8);
            drv.submit();
            dev.pop();
            dev.pushPopped();
            drv.getUsed();
          }
          dev.needCall();
          assert.equal(dev.getState().layout === 'split' && (dev.getState() as { usedIndex: number }).usedIndex, 65533);
          drv.enableCb(); // used_event = 65533: notify when the device writes entry 65533
          const calls: boolean[] = [];
          for (let i = 0; i < 6; i++) {
            drv.stageOne(i, buf, 8);
            drv.submit();
            dev.pop();
            dev.pushPopped();
            calls.push(dev.needCall());
          }
          // Entries 65533, 65534, 65535, 0, 1, 2: only the first crosses used_event.
          assert.deepEqual(calls, [true, false, false, false, false, false]);
        });
      }
    });
  }
}
