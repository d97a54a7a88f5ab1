// The IOTLB has one walk (issue 7, "IOVA checks are written in two places"): Iotlb.translate
// asks the wasm walk the data plane uses, and the walk's remembered entry (the table's lastHit
// word, assembly/mem.ts) never answers for a map that has changed since: after dmaUnmap,
// dmaMap or setMap under it, pops and translate see the new map.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, DeviceQueue, DriverQueue, Iotlb, PERM_R, PERM_W, PERM_RW, ringFeatures } from '../src/index.ts';
import type { IotlbEntry } from '../src/index.ts';
import { BUILDS, LAYOUTS, makePlatform, type Build } from './helpers/builds.ts';

const isUnmapped = (e: unknown) => (e as { code?: string }).code === Code.AddressUnmapped;
const X = 0x1_0000_0000; // entry A
const Y = 0x1_0000_2000; // entry B, right after a gap
const PAGE = 0x1000;

for (const build of BUILDS) {
  test(`Iotlb.translate runs the data plane's walk: its hit lands in the table's lastHit word, ${build} build`, () => {
    const p = makePlatform(build);
    const t = new Iotlb(p, 8);
    const base = p.allocBuffer(4 * PAGE, PAGE);
    t.setMap([0, 1, 2, 3].map((i) => ({ iova: 0x10_0000 + i * 2 * PAGE, size: PAGE, addr: base + i * PAGE })));
    const lastHit = () => p.view.getUint32(t.offset + 4, true);
    assert.equal(lastHit(), 0);
    assert.equal(t.translate(0x10_0000 + 2 * 2 * PAGE + 5, 16, PERM_RW), base + 2 * PAGE + 5);
    assert.equal(lastHit(), 2, 'the wasm walk found entry 2 and remembered it');
    assert.equal(t.translate(0x10_0000 + 3 * 2 * PAGE, 0, PERM_R), base + 3 * PAGE);
    assert.equal(lastHit(), 3);
    // A miss (the gap after entry 1) remembers nothing.
    assert.equal(t.translate(0x10_0000 + 1 * 2 * PAGE + PAGE, 1, PERM_R), -1);
    assert.equal(lastHit(), 3);
    // Bad arguments are still refused in TypeScript with a typed error, before any walk.
    assert.throws(() => t.translate(-1, 1, PERM_R), (e: unknown) => (e as { code?: string }).code === Code.InvalidArgument);
    assert.throws(() => t.translate(1n << 64n, 1, PERM_R), (e: unknown) => (e as { code?: string }).code === Code.InvalidArgument);
    assert.throws(() => t.translate(0, 0.5, PERM_R), (e: unknown) => (e as { code?: string }).code === Code.InvalidArgument);
    assert.throws(() => t.translate(0, 1, 4), (e: unknown) => (e as { code?: string }).code === Code.InvalidArgument);
    assert.equal(lastHit(), 3);
    // Lengths no entry can hold, and IOVA ranges that wrap past 2^64, are simply unmapped.
    assert.equal(t.translate(0x10_0000, 2 ** 40, PERM_R), -1);
    assert.equal(t.translate((1n << 64n) - 1n, 2, PERM_R), -1);
    // The raw export never traps on a length that is not a u64-convertible integer.
    for (const len of [NaN, -1, 0.5, Infinity, 2 ** 64]) assert.equal(p.exports.tlb_translate(t.offset, 0x10_0000, 0, len, PERM_R), -1);
    assert.equal(p.exports.tlb_translate(t.offset, 0x10_0000, 0, 1, PERM_R), base);
  });

  for (const layout of LAYOUTS) {
    describe(`${layout} pops after map changes never use the remembered entry of the old map, ${build} build`, () => {
      function setup(build: Build) {
        const p = makePlatform(build);
        const features = ringFeatures({ packed: layout === 'packed' });
        const drv = new DriverQueue(p, { size: 8, features });
        const a = drv.addresses;
        const at = [a.descArea, a.driverArea, a.deviceArea].map((v) => Number(v));
        const lo = Math.min(...at);
        const rings: IotlbEntry = { iova: lo, size: Math.max(...at) + 256 - lo, addr: lo };
        const buf = p.allocBuffer(4 * PAGE, PAGE);
        const t = new Iotlb(p, 8);
        // Index 0 is always the driver's rings, which every map below keeps.
        t.setMap([rings, { iova: X, size: PAGE, addr: buf }, { iova: Y, size: PAGE, addr: buf + PAGE }]);
        const dev = new DeviceQueue(p, { size: 8, features, iotlb: t, ...a, batch: 1 });
        /** Pops one 64-byte chain at iova (readable, or writable) and returns its segment address. */
        const popAt = (iova: number, writable = false): number => {
          drv.stageOne(0, iova, 64, writable);
          drv.submit();
          assert.equal(dev.pop(), 1);
          const c = dev.chain(0);
          const segs = writable ? c.writable : c.readable;
          assert.equal(segs.length, 1);
          dev.pushPopped(1);
          assert.equal(drv.getUsed(), 1);
          return segs[0]!.addr;
        };
        return { p, t, dev, buf, rings, popAt };
      }

      test('the same slot remapped elsewhere (dmaUnmap + dmaMap) serves the new target', () => {
        const { t, buf, popAt } = setup(build);
        assert.equal(popAt(X + 8), buf + 8); // remembers entry 1
        t.dmaUnmap(X, PAGE);
        t.dmaMap({ iova: X, size: PAGE, addr: buf + 2 * PAGE });
        assert.equal(popAt(X + 8), buf + 2 * PAGE + 8);
        assert.equal(t.translate(X + 8, 64, PERM_R), buf + 2 * PAGE + 8);
      });

      test('removing the remembered entry shifts the table: its IOVA is unmapped, the next entry still right', () => {
        const { t, dev, buf, popAt } = setup(build);
        assert.equal(popAt(Y + 16), buf + PAGE + 16); // remembers entry 2
        assert.equal(popAt(X + 16), buf + 16); // remembers entry 1
        t.dmaUnmap(X, PAGE); // entry B moves into slot 1
        assert.equal(t.translate(X + 16, 64, PERM_R), -1);
        assert.equal(popAt(Y + 16), buf + PAGE + 16);
        assert.equal(t.translate(Y + 16, 64, PERM_R), buf + PAGE + 16);
        assert.equal(dev.state.state, 'ready');
      });

      test('a remembered entry past the end of a shorter map never answers', () => {
        const { t, dev, rings, popAt, buf } = setup(build);
        assert.equal(popAt(Y + 32), buf + PAGE + 32); // remembers entry 2
        t.setMap([rings]); // slot 2 no longer exists
        assert.equal(t.translate(Y + 32, 64, PERM_R), -1);
        assert.throws(() => popAt(Y + 32), isUnmapped);
        assert.equal(dev.state.state, 'broken');
      });

      test('a permission taken away under the remembered entry is enforced', () => {
        const { t, popAt, buf } = setup(build);
        assert.equal(popAt(X + 64), buf + 64);
        t.dmaUnmap(X, PAGE);
        t.dmaMap({ iova: X, size: PAGE, addr: buf, perm: PERM_W });
        assert.equal(t.translate(X + 64, 64, PERM_R), -1);
        assert.equal(t.translate(X + 64, 64, PERM_W), buf + 64);
        assert.equal(popAt(X + 64, true), buf + 64); // writable still fine
        assert.throws(() => popAt(X + 64), isUnmapped); // readable is not
      });
    });
  }
}
