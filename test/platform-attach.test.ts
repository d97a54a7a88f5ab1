// Platform.attach and the arenas (issue 7 item 17): an attached side never hands out what its
// creator hands out, arenas are told apart by range (private memory may lie above RAM), and
// releasing goes to the arena that holds the offset or is refused, touching nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, DeviceQueue, DriverQueue, Code, defaultModule, ringFeatures } from '../src/index.ts';
import type { PlatformHandle } from '../src/index.ts';

const isCode = (code: string) => (e: unknown) => (e as { code?: string }).code === code;
const PAGE = 65536;

/** Driver adds one readable buffer, device pops it and reads it, pushes it back, driver reclaims it. */
function roundTrip(drvSide: Platform, drv: DriverQueue, dev: DeviceQueue, bytes: number[]): void {
  const buf = drvSide.allocBuffer(64);
  drvSide.write(buf, bytes);
  drv.stageOne(7, buf, bytes.length);
  assert.equal(drv.submit(), 1);
  assert.equal(dev.pop(), 1);
  assert.deepEqual([...dev.read(0)], bytes);
  assert.equal(dev.pushPopped(), 1);
  assert.deepEqual(drv.reclaim(), [{ token: 7, len: 0 }]);
  drvSide.release(buf);
}

test('attached without slices: every allocation is refused, so a worker-side queue cannot alias the driver rings', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  const drv = new DriverQueue(p, { size: 8 });
  const w = Platform.attach(p.handle());
  // Before: the worker's allocators started where the creator's did, so this queue's state
  // block and records landed on the creator's own allocations.
  assert.throws(() => new DeviceQueue(w, { size: 8, ...drv.addresses }), isCode(Code.FailedPrecondition));
  assert.throws(() => w.allocBuffer(64), isCode(Code.FailedPrecondition));
  assert.throws(() => w.priv.alloc(64), isCode(Code.FailedPrecondition));
  assert.throws(() => w.identityMap, isCode(Code.FailedPrecondition));
  assert.throws(() => w.handle({ ram: 4096 }), isCode(Code.FailedPrecondition));
  // It still sees the memory.
  const buf = p.allocBuffer(16);
  p.write(buf, [1, 2, 3]);
  assert.deepEqual([...w.read(buf, 3)], [1, 2, 3]);
});

test('attached with slices: the worker allocates only inside them and the creator never hands them out', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  const drv = new DriverQueue(p, { size: 8 });
  const h = p.handle({ priv: 128 << 10, ram: 64 << 10 });
  assert.ok(h.privSlice && h.ramSlice);
  const w = Platform.attach(h);
  assert.deepEqual([w.priv.base, w.priv.size], [h.privSlice.base, h.privSlice.size]);
  assert.deepEqual([w.ram.base, w.ram.size], [h.ramSlice.base, h.ramSlice.size]);
  const dev = new DeviceQueue(w, { size: 8, ...drv.addresses });
  assert.ok(dev.qsb >= h.privSlice.base && dev.qsb < h.privSlice.base + h.privSlice.size, 'the worker queue lives in its slice');
  roundTrip(p, drv, dev, [9, 8, 7, 6]);
  // Fill both creator arenas: nothing it hands out may fall in a slice.
  const inSlice = (off: number, s: { base: number; size: number }) => off >= s.base && off < s.base + s.size;
  for (;;) {
    let off: number;
    try {
      off = p.priv.alloc(4096, 64);
    } catch (e) {
      assert.equal((e as { code?: string }).code, Code.ResourceExhausted);
      break;
    }
    assert.ok(!inSlice(off, h.privSlice), `creator priv allocation ${off} is in the worker's slice`);
  }
  for (;;) {
    let off: number;
    try {
      off = p.allocBuffer(4096);
    } catch (e) {
      assert.equal((e as { code?: string }).code, Code.ResourceExhausted);
      break;
    }
    assert.ok(!inSlice(off, h.ramSlice), `creator RAM allocation ${off} is in the worker's slice`);
  }
  // And the worker's RAM allocations stay in its slice.
  const wb = w.allocBuffer(4096);
  assert.ok(inSlice(wb, h.ramSlice));
  w.release(wb);
});

test('private memory above RAM: attach works, and destroy returns every allocation to its own arena', () => {
  const ramBase = PAGE;
  const ramSize = 1 << 20;
  const privBase = ramBase + ramSize;
  const privSize = 512 << 10;
  const pages = (privBase + privSize) / PAGE;
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  const h: PlatformHandle = {
    memory, module: defaultModule(false), privBase, privSize, ramBase, ramSize,
    privSlice: { base: privBase, size: privSize }, ramSlice: { base: ramBase, size: ramSize },
  };
  const p = Platform.attach(h);
  assert.ok(p.privBase > p.ramBase);
  for (const packed of [false, true]) {
    const features = ringFeatures({ packed });
    const drv = new DriverQueue(p, { size: 8, features });
    const dev = new DeviceQueue(p, { size: 8, features, ...drv.addresses });
    assert.ok(drv.qsb >= privBase && dev.qsb >= privBase, 'state blocks are in private memory, above RAM');
    roundTrip(p, drv, dev, [1, 2, 3]);
    // Before: destroy sent offsets >= ramBase to the RAM allocator, so the private ones
    // (above RAM) were refused and the queue leaked them.
    dev.destroy();
    drv.destroy();
  }
  p.identityMap.destroy();
  assert.equal(p.priv.available, privSize, 'every private allocation came back to the private arena');
  assert.equal(p.ram.available, ramSize, 'every RAM allocation came back to RAM');
});

test('release finds the arena by range; an offset of the wrong arena is refused with InvalidArgument, touching nothing', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  const po = p.priv.alloc(256, 64);
  const ro = p.allocBuffer(256);
  const privFree = p.priv.available;
  const ramFree = p.ram.available;
  assert.throws(() => p.ram.release(po), isCode(Code.InvalidArgument));
  assert.throws(() => p.priv.release(ro), isCode(Code.InvalidArgument));
  assert.throws(() => p.release(po + 8), isCode(Code.InvalidArgument), 'inside the arena but not an allocation');
  assert.throws(() => p.release(100), isCode(Code.InvalidArgument), 'in no arena (static data)');
  assert.throws(() => p.release(p.ramBase + p.ramSize), isCode(Code.InvalidArgument), 'past RAM');
  assert.throws(() => p.release(1.5), isCode(Code.InvalidArgument));
  assert.equal(p.priv.sizeOf(po), 256);
  assert.equal(p.ram.sizeOf(ro), 256);
  assert.equal(p.priv.available, privFree);
  assert.equal(p.ram.available, ramFree);
  p.release(po);
  p.release(ro);
  assert.equal(p.priv.sizeOf(po), undefined);
  assert.equal(p.ram.sizeOf(ro), undefined);
  assert.throws(() => p.release(ro), isCode(Code.InvalidArgument), 'a second release');
});

test('attach refuses a handle whose layout is inconsistent', () => {
  const pages = 40;
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  const good: PlatformHandle = { memory, module: defaultModule(false), privBase: PAGE, privSize: 4 * PAGE, ramBase: 5 * PAGE, ramSize: 32 * PAGE };
  Platform.attach(good);
  const bad: Partial<PlatformHandle>[] = [
    { privBase: 0 }, // over the module's static data
    { ramBase: 4 * PAGE }, // overlaps private memory
    { privBase: 20 * PAGE }, // private memory inside RAM (above its base)
    { ramSize: 40 * PAGE }, // past the memory
    { privBase: 37 * PAGE + 1, ramBase: PAGE, ramSize: 36 * PAGE }, // private memory past the end
    { privSize: 0 },
    { ramBase: 5 * PAGE + 0.5 },
    { privSlice: { base: 0, size: PAGE } },
    { ramSlice: { base: 5 * PAGE, size: 33 * PAGE } },
    { ramSlice: { base: 5 * PAGE, size: 0 } },
    { module: undefined as unknown as WebAssembly.Module },
  ];
  for (const b of bad) assert.throws(() => Platform.attach({ ...good, ...b }), isCode(Code.InvalidArgument), JSON.stringify(b));
  assert.throws(() => Platform.attach({} as PlatformHandle), isCode(Code.InvalidArgument));
});

test('handle() validates slice sizes and carves both or neither', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  const privFree = p.priv.available;
  for (const s of [{ priv: -1 }, { ram: 1.5 }, { priv: Number.NaN }]) assert.throws(() => p.handle(s), isCode(Code.InvalidArgument), JSON.stringify(s));
  assert.throws(() => p.handle({ priv: 4096, ram: 2 << 20 }), isCode(Code.ResourceExhausted));
  assert.equal(p.priv.available, privFree, 'the refused handle kept no private slice');
  const h = p.handle();
  assert.equal(h.privSlice, undefined);
  assert.equal(h.ramSlice, undefined);
});
