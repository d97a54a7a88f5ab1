// Every device access to driver memory is checked against the map in force at the moment of
// the access (issue 7 item 2, DeviceQueue level): a chain popped before a dmaUnmap/setMap
// may not be read, written, copied or completed into memory the device no longer has. A
// failed check breaks the queue with AddressUnmapped and touches nothing. Canaries prove it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, DeviceQueue, DriverQueue, Iotlb, PERM_R, PERM_RW, ringFeatures } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform, type Build } from './helpers/builds.ts';

const isCode = (code: string) => (e: unknown) => (e as { code?: string }).code === code;

/** The code the queue is broken with, or 'ready'. */
function brokenCode(q: DeviceQueue): string {
  const st = q.state;
  return st.state === 'broken' ? st.error.code : st.state;
}

const BUF_IOVA = 0x1_0000_0000; // buffers live at a high IOVA, rings identity-mapped
const CANARY = 0xaa;

/** A driver and a device whose map has one entry per ring area and one for the buffers. */
function setup(build: Build, layout: 'split' | 'packed') {
  const p = makePlatform(build);
  const features = ringFeatures({ packed: layout === 'packed' });
  const drv = new DriverQueue(p, { size: 8, features });
  const sizes = layout === 'packed' ? { desc: 128, driver: 4, device: 4 } : { desc: 128, driver: 6 + 16, device: 6 + 64 };
  const buf = p.allocBuffer(4096);
  p.u8.fill(CANARY, buf, buf + 4096);
  const iotlb = new Iotlb(p, 8);
  const a = drv.addresses;
  iotlb.setMap([
    { iova: a.descArea, size: sizes.desc, addr: a.descArea },
    { iova: a.driverArea, size: sizes.driver, addr: a.driverArea },
    { iova: a.deviceArea, size: sizes.device, addr: a.deviceArea },
    { iova: BUF_IOVA, size: 4096, addr: buf },
  ]);
  const dev = new DeviceQueue(p, { size: 8, features, iotlb, ...a });
  const canaryIntact = () => p.u8.subarray(buf, buf + 4096).every((b) => b === CANARY);
  return { p, drv, dev, iotlb, buf, canaryIntact };
}

for (const build of BUILDS) {
  for (const layout of LAYOUTS) {
    describe(`${layout} device access after a map change, ${build} build`, () => {
      test('write() after dmaUnmap throws AddressUnmapped, writes nothing, breaks the queue', () => {
        const { drv, dev, iotlb, canaryIntact } = setup(build, layout);
        drv.stage(1, [], [{ addr: BUF_IOVA, len: 64 }]);
        drv.submit();
        assert.equal(dev.pop(), 1);
        assert.equal(dev.accessible(0), true);
        iotlb.dmaUnmap(BUF_IOVA, 4096);
        assert.equal(dev.state.state, 'ready', 'the rings are still mapped');
        assert.equal(dev.accessible(0), false);
        assert.throws(() => dev.write(0, new Uint8Array(64).fill(1)), isCode(Code.AddressUnmapped));
        assert.ok(canaryIntact(), 'nothing was written');
        assert.equal(brokenCode(dev), Code.AddressUnmapped);
        assert.throws(() => dev.pop(), isCode(Code.AddressUnmapped));
        assert.equal(drv.usedPending(), 0, 'nothing was completed');
      });

      test('the same memory remapped at another IOVA is still the device\'s: write() is allowed', () => {
        const { p, drv, dev, iotlb, buf } = setup(build, layout);
        drv.stage(1, [], [{ addr: BUF_IOVA, len: 64 }]);
        drv.submit();
        assert.equal(dev.pop(), 1);
        iotlb.dmaUnmap(BUF_IOVA, 4096);
        iotlb.dmaMap({ iova: 0x2_0000_0000, size: 4096, addr: buf, perm: PERM_RW });
        assert.equal(dev.accessible(0), true);
        assert.equal(dev.write(0, new Uint8Array(64).fill(7)), 64);
        assert.ok(p.u8.subarray(buf, buf + 64).every((b) => b === 7));
        dev.pushPopped();
        assert.deepEqual(drv.reclaim(), [{ token: 1, len: 64 }]);
        assert.equal(dev.state.state, 'ready');
      });

      test('a buffer remapped read-only may not be written', () => {
        const { drv, dev, iotlb, buf, canaryIntact } = setup(build, layout);
        drv.stage(1, [], [{ addr: BUF_IOVA, len: 64 }]);
        drv.submit();
        dev.pop();
        iotlb.dmaUnmap(BUF_IOVA, 4096);
        iotlb.dmaMap({ iova: BUF_IOVA, size: 4096, addr: buf, perm: PERM_R });
        assert.throws(() => dev.write(0, new Uint8Array(8)), isCode(Code.AddressUnmapped));
        assert.ok(canaryIntact());
      });

      test('an unrelated map change leaves a popped chain usable', () => {
        const { p, drv, dev, iotlb } = setup(build, layout);
        drv.stage(1, [], [{ addr: BUF_IOVA, len: 64 }]);
        drv.submit();
        dev.pop();
        const other = p.allocBuffer(64);
        iotlb.dmaMap({ iova: 0x3_0000_0000, size: 64, addr: other });
        assert.equal(dev.write(0, new Uint8Array(64).fill(3)), 64);
        assert.equal(dev.state.state, 'ready');
      });

      test('read() after dmaUnmap throws AddressUnmapped and breaks the queue', () => {
        const { drv, dev, iotlb } = setup(build, layout);
        drv.stage(1, [{ addr: BUF_IOVA, len: 64 }]);
        drv.submit();
        dev.pop();
        iotlb.dmaUnmap(BUF_IOVA, 4096);
        assert.throws(() => dev.read(0), isCode(Code.AddressUnmapped));
        assert.equal(dev.broken, true);
      });

      test('copyIn() after setMap without the buffers writes nothing', () => {
        const { p, drv, dev, iotlb, canaryIntact } = setup(build, layout);
        for (let t = 0; t < 4; t++) drv.stage(t, [], [{ addr: BUF_IOVA + 64 * t, len: 64 }]);
        drv.submit();
        assert.equal(dev.pop(), 4);
        // Keep the rings, drop the buffers.
        iotlb.setMap(iotlb.mappings.filter((m) => m.iova !== BigInt(BUF_IOVA)).map((m) => ({ ...m })));
        const src = p.allocBuffer(4 * 64);
        p.u8.fill(9, src, src + 4 * 64);
        const lens = p.allocBuffer(16);
        for (let i = 0; i < 4; i++) p.view.setUint32(lens + 4 * i, 64, true);
        assert.throws(() => dev.copyIn(4, src, 64, lens), isCode(Code.AddressUnmapped));
        assert.ok(canaryIntact());
        assert.equal(dev.broken, true);
      });

      test('copyOut() after dmaUnmap copies nothing', () => {
        const { p, drv, dev, iotlb } = setup(build, layout);
        for (let t = 0; t < 3; t++) drv.stage(t, [{ addr: BUF_IOVA + 64 * t, len: 64 }]);
        drv.submit();
        assert.equal(dev.pop(), 3);
        iotlb.dmaUnmap(BUF_IOVA, 4096);
        const dst = p.allocBuffer(3 * 64);
        p.u8.fill(0x55, dst, dst + 3 * 64);
        assert.throws(() => dev.copyOut(3, dst, 64), isCode(Code.AddressUnmapped));
        assert.ok(p.u8.subarray(dst, dst + 3 * 64).every((b) => b === 0x55), 'nothing was copied');
        assert.equal(dev.broken, true);
      });

      test('pushPopped() of a written chain whose memory is gone completes nothing', () => {
        const { drv, dev, iotlb } = setup(build, layout);
        drv.stage(1, [], [{ addr: BUF_IOVA, len: 64 }]);
        drv.submit();
        dev.pop();
        dev.setWritten(0, 64);
        iotlb.dmaUnmap(BUF_IOVA, 4096);
        assert.throws(() => dev.pushPopped(), isCode(Code.AddressUnmapped));
        assert.equal(drv.usedPending(), 0, 'no used entry was published');
        assert.equal(dev.broken, true);
      });

      test('the unchanged map needs no check: copyIn/copyOut/write run as before', () => {
        const { p, drv, dev, buf } = setup(build, layout);
        drv.stage(1, [{ addr: BUF_IOVA, len: 32 }], [{ addr: BUF_IOVA + 64, len: 32 }]);
        drv.submit();
        dev.pop();
        const dst = p.allocBuffer(64);
        assert.equal(dev.copyOut(1, dst, 64), 32);
        assert.equal(dev.write(0, new Uint8Array(32).fill(4)), 32);
        assert.equal(p.u8[buf + 64], 4);
      });

      test('an iotlb of another Platform is refused', () => {
        const p = makePlatform(build);
        const other = makePlatform(build);
        const features = ringFeatures({ packed: layout === 'packed' });
        const drv = new DriverQueue(p, { size: 8, features });
        assert.throws(() => new DeviceQueue(p, { size: 8, features, iotlb: other.identityMap, ...drv.addresses }), isCode(Code.InvalidArgument));
      });
    });
  }
}
