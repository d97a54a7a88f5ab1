// The platform around the rings: loader, memory layout, allocator, address map.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, Allocator, Iotlb, Code, PERM_R, PERM_W, PERM_RW, RING_EXPORT_NAMES, ringModule, hasSimd, loadRingModule,
  DeviceQueue, DriverQueue, ringFeatures,
} from '../src/index.ts';

const isCode = (code: string) => (e: unknown) => (e as { code?: string }).code === code;

test('every embedded variant exports exactly the functions the typed surface names', async () => {
  for (const shared of [false, true]) {
    for (const simd of [false, true]) {
      const m = await loadRingModule({ shared, simd });
      assert.equal(ringModule({ shared, simd }), m, 'compiled once, then synchronous');
      const fns = WebAssembly.Module.exports(m).filter((e) => e.kind === 'function').map((e) => e.name).sort();
      assert.deepEqual(fns, [...RING_EXPORT_NAMES].sort());
      const imports = WebAssembly.Module.imports(m).map((i) => `${i.module}.${i.name}:${i.kind}`).sort();
      assert.ok(imports.includes('env.memory:memory'));
      assert.ok(imports.every((i) => i === 'env.memory:memory' || i === 'env.abort:function'), imports.join());
    }
  }
  assert.equal(hasSimd(), true, 'Node 20 has wasm SIMD');
});

test('the memory layout puts private memory below RAM and both where the platform says', () => {
  const p = Platform.create({ ramSize: 3 << 20, privateSize: 100_000 });
  assert.equal(p.privBase, 65536);
  assert.equal(p.privSize, 131072, 'rounded up to 64 KiB');
  assert.equal(p.ramBase, p.privBase + p.privSize);
  assert.equal(p.ramSize, 3 << 20);
  assert.equal(p.memory.buffer.byteLength, p.ramBase + p.ramSize);
  const b = p.allocBuffer(100);
  assert.ok(b >= p.ramBase && b + 100 <= p.ramBase + p.ramSize);
  assert.equal(p.shared, false);
  assert.ok(Platform.create({ shared: true, ramSize: 65536 }).memory.buffer instanceof SharedArrayBuffer);
});

test('a ring module built for the other kind of memory is refused with a typed error', () => {
  assert.throws(() => Platform.create({ module: ringModule({ shared: true, simd: true }) }), isCode(Code.InvalidArgument));
});

test('read and write refuse ranges outside the memory', () => {
  const p = Platform.create({ ramSize: 65536 });
  const end = p.memory.buffer.byteLength;
  assert.throws(() => p.read(end - 2, 4), isCode(Code.InvalidArgument));
  assert.throws(() => p.write(-1, [1]), isCode(Code.InvalidArgument));
  p.write(end - 2, [7, 8]);
  assert.deepEqual([...p.read(end - 2, 2)], [7, 8]);
});

test('allocator: aligned first fit, exhaustion, release and coalescing', () => {
  const a = new Allocator(1000, 1000);
  const x = a.alloc(100, 64);
  assert.equal(x % 64, 0);
  assert.ok(x >= 1000);
  const y = a.alloc(300, 16);
  assert.ok(y >= x + 100);
  assert.throws(() => a.alloc(900), isCode(Code.ResourceExhausted));
  assert.throws(() => a.alloc(0), isCode(Code.InvalidArgument));
  assert.throws(() => a.alloc(8, 3), isCode(Code.InvalidArgument));
  assert.throws(() => a.release(x + 1), isCode(Code.InvalidArgument));
  a.release(x);
  a.release(y);
  assert.equal(a.available, 1000, 'everything coalesced back');
  assert.equal(a.alloc(1000, 8), 1000);
});

test('allocator: 20000 random allocations and releases never overlap, stay aligned and inside the arena, and coalesce back whole', () => {
  const base = 4096;
  const size = 64 * 1024;
  const a = new Allocator(base, size);
  const live = new Map<number, number>();
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  for (let step = 0; step < 20000; step++) {
    if (live.size > 0 && rnd(3) === 0) {
      const keys = [...live.keys()];
      const off = keys[rnd(keys.length)]!;
      a.release(off);
      live.delete(off);
    } else {
      const len = 1 + rnd(rnd(4) === 0 ? 4096 : 200);
      const align = 1 << rnd(8);
      let off: number;
      try {
        off = a.alloc(len, align);
      } catch (e) {
        assert.ok(isCode(Code.ResourceExhausted)(e));
        continue;
      }
      assert.equal(off % align, 0);
      assert.ok(off >= base && off + len <= base + size, `allocation [${off}, +${len}) outside the arena`);
      for (const [o, l] of live) assert.ok(off + len <= o || o + l <= off, `[${off}, +${len}) overlaps [${o}, +${l})`);
      live.set(off, len);
    }
    let used = 0;
    for (const l of live.values()) used += l;
    assert.ok(a.available <= size - used, 'free space never counts a live byte');
  }
  for (const off of live.keys()) a.release(off);
  assert.equal(a.available, size);
  assert.equal(a.alloc(size, 1), base, 'one range again');
});

test('iotlb: setMap validates everything first, dmaMap refuses overlaps, dmaUnmap removes overlapping maps', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const t = new Iotlb(p, 4);
  const ram = p.ramBase;
  t.setMap([{ iova: 0x1000_0000n, size: 4096, addr: ram, perm: PERM_R }]);
  assert.throws(() => t.setMap([{ iova: 0, size: 4096, addr: ram }, { iova: 100, size: 10, addr: ram }]), isCode(Code.InvalidArgument));
  assert.equal(t.mappings.length, 1, 'a refused setMap changes nothing');
  assert.throws(() => t.dmaMap({ iova: 0x1000_0800n, size: 4096, addr: ram + 8192 }), isCode(Code.InvalidArgument));
  assert.throws(() => t.dmaMap({ iova: 0, size: 16, addr: p.privBase }), isCode(Code.InvalidArgument), 'private memory is never mappable');
  assert.throws(() => t.dmaMap({ iova: 0, size: 16, addr: ram + p.ramSize - 8 }), isCode(Code.InvalidArgument));
  assert.throws(() => t.dmaMap({ iova: (1n << 64n) - 8n, size: 16, addr: ram }), isCode(Code.InvalidArgument));
  assert.throws(() => t.dmaMap({ iova: 0, size: 16, addr: ram, perm: 4 }), isCode(Code.InvalidArgument));
  t.dmaMap({ iova: 0, size: 4096, addr: ram + 4096, perm: PERM_W });
  assert.equal(t.translate(0x1000_0010n, 16, PERM_R), ram + 16);
  assert.equal(t.translate(0x1000_0010n, 16, PERM_W), -1, 'read-only mapping');
  assert.equal(t.translate(4090, 16, PERM_W), -1, 'runs past the mapping');
  assert.equal(t.dmaUnmap(0, 1), 1);
  assert.equal(t.translate(0, 16, PERM_W), -1);
  for (let i = 0; i < 3; i++) t.dmaMap({ iova: 0x100000 * (i + 1), size: 16, addr: ram, perm: PERM_RW });
  assert.throws(() => t.dmaMap({ iova: 0x900000, size: 16, addr: ram }), isCode(Code.ResourceExhausted));
});

test('a device behind a non-identity map reads the driver buffers through it', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const features = ringFeatures({ packed: false });
  // The driver uses IOVA = offset + 2^40; the device map translates that window back.
  const dmaBase = 2 ** 40;
  const drv = new DriverQueue(p, { size: 8, features, dmaBase });
  const t = new Iotlb(p, 4);
  t.setMap([{ iova: BigInt(dmaBase + p.ramBase), size: p.ramSize, addr: p.ramBase }]);
  const dev = new DeviceQueue(p, { size: 8, features, ...drv.addresses, iotlb: t });
  const buf = p.allocBuffer(64);
  p.write(buf, [5, 6, 7]);
  drv.stageOne(1, buf + dmaBase, 3);
  drv.submit();
  assert.equal(dev.pop(), 1);
  assert.deepEqual([...dev.read(0)], [5, 6, 7]);
  // Unmapping the ring under a live queue breaks it with address_unmapped.
  t.dmaUnmap(BigInt(dmaBase + p.ramBase), 1);
  assert.equal(dev.broken, true);
  assert.equal(dev.state.state === 'broken' && dev.state.error.code, Code.AddressUnmapped);
});

test('queue options are validated: size, alignment and mapping of the ring areas', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const split = ringFeatures();
  const packed = ringFeatures({ packed: true });
  assert.throws(() => new DriverQueue(p, { size: 6, features: split }), isCode(Code.InvalidArgument));
  assert.throws(() => new DriverQueue(p, { size: 0, features: packed }), isCode(Code.InvalidArgument));
  assert.throws(() => new DriverQueue(p, { size: 32769, features: packed }), isCode(Code.InvalidArgument));
  new DriverQueue(p, { size: 6, features: packed }); // packed: any size ≤ 32768
  const drv = new DriverQueue(p, { size: 8, features: split });
  const a = drv.addresses;
  assert.throws(() => new DeviceQueue(p, { size: 8, features: split, ...a, descArea: a.descArea + 8 }), isCode(Code.InvalidArgument));
  assert.throws(() => new DeviceQueue(p, { size: 8, features: split, ...a, deviceArea: a.deviceArea + 2 }), isCode(Code.InvalidArgument));
  assert.throws(() => new DeviceQueue(p, { size: 8, features: split, ...a, driverArea: p.ramBase + p.ramSize - 4 }), isCode(Code.InvalidArgument));
  assert.throws(() => new DeviceQueue(p, { size: 8, features: split, ...a, descArea: 16 }), isCode(Code.InvalidArgument), 'private memory is not in the map');
});
