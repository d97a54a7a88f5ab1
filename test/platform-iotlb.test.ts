// The IOTLB's argument checks, its behaviour on large maps, the index behind allows(), and the
// wasm-visible table (issue 7 item 18, platform parts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, Iotlb, DeviceQueue, DriverQueue, Code, PERM_R, PERM_W, PERM_RW, TLB } from '../src/index.ts';
import type { IotlbEntry } from '../src/index.ts';

const isCode = (code: string) => (e: unknown) => (e as { code?: string }).code === code;
const U64 = 1n << 64n;

/** The table as wasm reads it: count, lastHit, entries. */
function table(p: Platform, t: Iotlb): { count: number; lastHit: number; entries: { first: bigint; last: bigint; addr: number; perm: number }[] } {
  const dv = p.view;
  const count = dv.getUint32(t.offset, true);
  const entries = [];
  for (let i = 0; i < count; i++) {
    const o = t.offset + TLB.HDR + i * TLB.ENT;
    entries.push({ first: dv.getBigUint64(o, true), last: dv.getBigUint64(o + 8, true), addr: dv.getUint32(o + 16, true), perm: dv.getUint32(o + 20, true) });
  }
  return { count, lastHit: dv.getUint32(t.offset + 4, true), entries };
}

function assertTableMatches(p: Platform, t: Iotlb): void {
  const tb = table(p, t);
  assert.equal(tb.count, t.mappings.length);
  assert.ok(tb.count === 0 || tb.lastHit < tb.count, `lastHit ${tb.lastHit} < count ${tb.count}`);
  assert.deepEqual(tb.entries, t.mappings.map((m) => ({ first: m.iova, last: m.iova + BigInt(m.size) - 1n, addr: m.addr, perm: m.perm })));
}

test('translate, dmaUnmap and map entries refuse non-integer, negative and past-2^64 IOVAs with InvalidArgument', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const t = new Iotlb(p, 8);
  t.setMap([{ iova: 0, size: 4096, addr: p.ramBase }, { iova: U64 - 4096n, size: 4096, addr: p.ramBase }]);
  const gen = t.generation;
  const badIovas: unknown[] = [1.5, -1, -1n, U64, U64 + 5n, Number.NaN, Infinity, 2 ** 60, '16', null, undefined];
  for (const v of badIovas) {
    assert.throws(() => t.translate(v as number, 1, PERM_R), isCode(Code.InvalidArgument), `translate ${String(v)}`);
    assert.throws(() => t.dmaUnmap(v as number, 1), isCode(Code.InvalidArgument), `dmaUnmap ${String(v)}`);
    assert.throws(() => t.dmaMap({ iova: v as number, size: 16, addr: p.ramBase + 8192 }), isCode(Code.InvalidArgument), `dmaMap ${String(v)}`);
  }
  assert.throws(() => t.dmaUnmap(U64 - 16n, 17), isCode(Code.InvalidArgument), 'unmap runs past 2^64');
  for (const len of [-1, 0.5, Number.NaN]) assert.throws(() => t.translate(0, len, PERM_R), isCode(Code.InvalidArgument));
  for (const perm of [4, -1, 1.5]) assert.throws(() => t.translate(0, 1, perm), isCode(Code.InvalidArgument));
  assert.equal(t.mappings.length, 2, 'nothing was unmapped');
  assert.equal(t.generation, gen, 'nothing changed');
  // The valid extremes still work.
  assert.equal(t.translate(U64 - 1n, 1, PERM_RW), p.ramBase + 4095);
  assert.equal(t.translate(U64 - 1n, 2, PERM_R), -1, 'runs past the mapping (and 2^64)');
  assert.equal(t.translate(2 ** 53 - 1, 1, PERM_R), -1);
  assert.equal(t.dmaUnmap(U64 - 1n, 1), 1);
});

test('Platform.read/write/allocBuffer refuse non-integer and negative arguments with InvalidArgument', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  for (const [a, l] of [[1.5, 2], [0, -1], [-1, 1], [0, 0.5], [Number.NaN, 1]] as const) {
    assert.throws(() => p.read(a, l), isCode(Code.InvalidArgument), `read(${a}, ${l})`);
  }
  assert.throws(() => p.write(0.5, [1]), isCode(Code.InvalidArgument));
  assert.throws(() => p.write(-4, [1]), isCode(Code.InvalidArgument));
  assert.throws(() => p.write(p.ramBase, null as unknown as number[]), isCode(Code.InvalidArgument));
  assert.throws(() => p.write(p.ramBase, 5 as unknown as number[]), isCode(Code.InvalidArgument));
  for (const [s, a] of [[1.5, 64], [-4, 64], [0, 64], [64, 3], [64, 0], [64, 1.5]] as const) {
    assert.throws(() => p.allocBuffer(s, a), isCode(Code.InvalidArgument), `allocBuffer(${s}, ${a})`);
  }
});

test('an Iotlb names its platform', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const q = Platform.create({ ramSize: 1 << 20 });
  assert.equal(new Iotlb(p, 1).platform, p);
  assert.equal(q.identityMap.platform, q);
});

/** 65 536 disjoint entries, interleaved in IOVA so that neighbours in the list are far apart. */
function bigMap(p: Platform, n = 65536): IotlbEntry[] {
  const list: IotlbEntry[] = [];
  for (let i = 0; i < n; i++) {
    const k = (i * 7919) % n; // a permutation of 0..n-1 (7919 is a prime that divides neither 65536 nor 65535)
    list.push({ iova: BigInt(k) * 0x1_0000n + 0x10_0000_0000n, size: 0x1000 + (k % 7), addr: p.ramBase + (k % 200) * 4096, perm: (k % 3) + 1 });
  }
  return list;
}

test('large maps: setMap of 65 536 entries in any order sorts, detects overlaps, respects capacity, and is atomic', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 4 << 20 });
  const t = new Iotlb(p, 65536);
  const list = bigMap(p);
  t.setMap(list);
  const m = t.mappings;
  assert.equal(m.length, 65536);
  for (let i = 1; i < m.length; i++) assert.ok(m[i - 1]!.iova < m[i]!.iova, 'sorted by IOVA');
  assertTableMatches(p, t);
  const k = 12345;
  const base = BigInt(k) * 0x1_0000n + 0x10_0000_0000n;
  assert.equal(t.translate(base + 3n, 8, k % 3 + 1), p.ramBase + (k % 200) * 4096 + 3);
  assert.equal(t.translate(base + 0x2000n, 1, PERM_R), -1, 'in the gap after the entry');
  const gen = t.generation;
  const before = table(p, t);
  // One overlap anywhere in the list (here: the last element overlaps an entry far away in the list).
  const overl = [...list, { iova: base + 0xfffn, size: 16, addr: p.ramBase }];
  assert.throws(() => t.setMap(overl), isCode(Code.InvalidArgument));
  // Overlap detection is not fooled by an entry covering several others.
  assert.throws(() => t.setMap([...list.slice(0, 1000), { iova: 0x10_0000_0000n, size: 1 << 20, addr: p.ramBase }]), isCode(Code.InvalidArgument));
  // Two identical entries.
  assert.throws(() => t.setMap([list[5]!, ...list.slice(0, 100)]), isCode(Code.InvalidArgument));
  // One bad entry at the end.
  assert.throws(() => t.setMap([...list.slice(1), { iova: 0, size: 0, addr: p.ramBase }]), isCode(Code.InvalidArgument));
  // Over capacity (valid otherwise).
  assert.throws(() => t.setMap([...list, { iova: 0, size: 16, addr: p.ramBase }]), isCode(Code.ResourceExhausted));
  assert.equal(t.generation, gen, 'refused maps change nothing');
  assert.deepEqual(table(p, t), before, 'and leave the wasm table alone');
  // A smaller map replaces it whole; the table shrinks and keeps lastHit in range.
  t.setMap(list.slice(0, 3));
  assert.equal(t.mappings.length, 3);
  assertTableMatches(p, t);
  t.setMap([]);
  assert.deepEqual(table(p, t), { count: 0, lastHit: 0, entries: [] });
});

test('large maps: dmaMap and dmaUnmap insert and remove in place, in order', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 4 << 20 });
  const t = new Iotlb(p, 65536);
  const list = bigMap(p, 65535);
  t.setMap(list);
  // The gap at index 65535 in the IOVA order is the end; put one entry in the middle of a gap instead.
  const mid = 30000n * 0x1_0000n + 0x10_0000_0000n + 0x8000n;
  assert.throws(() => t.dmaMap({ iova: mid - 0x7000n, size: 0x2000, addr: p.ramBase }), isCode(Code.InvalidArgument), 'overlaps its left neighbour');
  assert.throws(() => t.dmaMap({ iova: mid, size: 0x8001, addr: p.ramBase }), isCode(Code.InvalidArgument), 'overlaps its right neighbour');
  t.dmaMap({ iova: mid, size: 0x8000, addr: p.ramBase + 64, perm: PERM_W });
  assert.equal(t.mappings.length, 65536);
  assert.equal(t.mappings[30001]!.iova, mid);
  assertTableMatches(p, t);
  assert.throws(() => t.dmaMap({ iova: 0, size: 1, addr: p.ramBase }), isCode(Code.ResourceExhausted));
  assert.equal(t.translate(mid + 0x10n, 4, PERM_W), p.ramBase + 64 + 0x10);
  // Unmap a run in the middle: [entry 100 .. entry 199] plus the inserted one.
  const first = 100n * 0x1_0000n + 0x10_0000_0000n + 0x800n;
  assert.equal(t.dmaUnmap(first, 100 * 0x1_0000 - 0x800), 100, 'partial overlap with the first and last of the run removes them whole');
  assert.equal(t.dmaUnmap(mid + 0x7fffn, 1), 1);
  assert.equal(t.mappings.length, 65435);
  assertTableMatches(p, t);
  assert.equal(t.translate(first, 1, 0), -1);
  assert.equal(t.dmaUnmap(0, 1), 0, 'nothing there');
});

test('allows(): coverage by target address across adjacent, overlapping and permission-split mappings', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const r = p.ramBase;
  const t = new Iotlb(p, 16);
  t.setMap([
    { iova: 0x1000, size: 100, addr: r, perm: PERM_R },
    { iova: 0x2000, size: 100, addr: r, perm: PERM_W }, // same target, other permission
    { iova: 0x3000, size: 100, addr: r + 100, perm: PERM_RW }, // adjacent target
    { iova: 0x4000, size: 50, addr: r + 150, perm: PERM_R }, // overlapping target
    { iova: 0x5000, size: 10, addr: r + 1000, perm: PERM_RW }, // after a gap
  ]);
  assert.equal(t.allows(r, 200, PERM_R), true, 'r..r+200 readable through three mappings');
  assert.equal(t.allows(r, 200, PERM_W), true, 'W through the W mapping and the RW one');
  assert.equal(t.allows(r, 200, PERM_RW), false, 'only r+100.. is RW');
  assert.equal(t.allows(r + 100, 100, PERM_RW), true);
  assert.equal(t.allows(r + 150, 51, PERM_R), false, 'r+200 is not mapped');
  assert.equal(t.allows(r + 199, 1, PERM_R), true);
  assert.equal(t.allows(r + 200, 1, 0), false);
  assert.equal(t.allows(r + 999, 2, PERM_R), false);
  assert.equal(t.allows(r + 1000, 10, PERM_RW), true);
  assert.equal(t.allows(r + 1000, 11, PERM_RW), false);
  assert.equal(t.allows(r - 1, 1, PERM_R), false);
  assert.equal(t.allows(r + 5, 0, PERM_RW), true, 'len 0');
  for (const [a, l, pm] of [[-1, 1, PERM_R], [r, -1, PERM_R], [r + 0.5, 1, PERM_R], [r, 1, 4], [r, 1, 1.5]] as const) {
    assert.equal(t.allows(a, l, pm), false, `allows(${a}, ${l}, ${pm})`);
  }
  const g = t.generation;
  t.dmaUnmap(0x3000, 1);
  assert.ok(t.generation !== g);
  assert.equal(t.allows(r, 200, PERM_R), false, 'the index follows the change: r+100..r+150 is gone');
  assert.equal(t.allows(r, 100, PERM_R), true);
});

test('allows() on a large map answers by target address', () => {
  const p = Platform.create({ ramSize: 16 << 20, privateSize: 4 << 20 });
  const t = new Iotlb(p, 65536);
  const list: IotlbEntry[] = [];
  // 4096-byte pages of RAM, each mapped by 16 IOVAs with varying permissions; page 7 only RO.
  for (let i = 0; i < 65536; i++) {
    const page = i % 4096;
    list.push({ iova: BigInt(i) * 4096n, size: 4096, addr: p.ramBase + page * 4096, perm: page === 7 ? PERM_R : ((i >> 12) % 3) + 1 });
  }
  t.setMap(list);
  assert.equal(t.allows(p.ramBase, 4096 * 4096, PERM_R), true);
  assert.equal(t.allows(p.ramBase, 4096 * 4096, PERM_RW), false);
  assert.equal(t.allows(p.ramBase, 7 * 4096, PERM_RW), true);
  assert.equal(t.allows(p.ramBase + 7 * 4096 - 1, 2, PERM_W), false);
  assert.equal(t.allows(p.ramBase + 8 * 4096, 4096 * 4088, PERM_RW), true);
  assert.equal(t.allows(p.ramBase + 4096 * 4096, 1, PERM_R), false);
});

test('lastHit stays below count: a removed mapping is never used through the wasm fast path', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const t = new Iotlb(p, 8);
  const dmaBase = 2 ** 40;
  const drv = new DriverQueue(p, { size: 8, dmaBase });
  const bufs = [p.allocBuffer(4096, 4096), p.allocBuffer(4096, 4096)];
  // Rings: map the RAM below the buffers (where the driver laid them out) at dmaBase + ramBase.
  const ringBytes = bufs[0]! - p.ramBase;
  assert.ok(drv.addresses.deviceArea < dmaBase + p.ramBase + ringBytes);
  t.setMap([
    { iova: dmaBase + p.ramBase, size: ringBytes, addr: p.ramBase },
    { iova: 2 ** 44, size: 4096, addr: bufs[0]! },
    { iova: 2 ** 45, size: 4096, addr: bufs[1]! },
  ]);
  const dev = new DeviceQueue(p, { size: 8, ...drv.addresses, iotlb: t });
  p.write(bufs[1]!, [4, 5, 6]);
  drv.stageOne(1, 2 ** 45, 3);
  drv.submit();
  assert.equal(dev.pop(), 1);
  assert.deepEqual([...dev.read(0)], [4, 5, 6]);
  dev.pushPopped();
  drv.reclaim();
  assert.equal(table(p, t).lastHit, 2, 'wasm remembered the hit on the last entry');
  assert.equal(t.dmaUnmap(2 ** 45, 4096), 1);
  assertTableMatches(p, t);
  drv.stageOne(2, 2 ** 45, 3);
  drv.submit();
  assert.throws(() => dev.pop(), isCode(Code.AddressUnmapped));
  assert.equal(dev.broken, true);
});

test('a destroyed Iotlb refuses changes and translations, allows nothing, and returns its table', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const free = p.priv.available;
  const t = new Iotlb(p, 16);
  t.setIdentity();
  t.destroy();
  assert.equal(p.priv.available, free);
  assert.throws(() => t.dmaMap({ iova: 0, size: 1, addr: p.ramBase }), isCode(Code.FailedPrecondition));
  assert.throws(() => t.setMap([]), isCode(Code.FailedPrecondition));
  assert.throws(() => t.dmaUnmap(0, 1), isCode(Code.FailedPrecondition));
  assert.throws(() => t.translate(p.ramBase, 1, PERM_R), isCode(Code.FailedPrecondition));
  assert.equal(t.allows(p.ramBase, 1, PERM_R), false);
  t.destroy();
  assert.equal(p.priv.available, free, 'a second destroy releases nothing');
});

test('Platform.create refuses sizes that are not positive integers with InvalidArgument', () => {
  for (const o of [{ ramSize: Number.NaN }, { privateSize: Infinity }, { ramSize: 1.5 }, { ramSize: '1' as unknown as number }, { privateSize: -1 }, { ramSize: 0 }]) {
    assert.throws(() => Platform.create(o), isCode(Code.InvalidArgument), JSON.stringify(o));
  }
});

test('an Iotlb still used by a queue cannot be destroyed (its table would be freed under the wasm walk)', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const t = new Iotlb(p, 4);
  t.setIdentity();
  const drv = new DriverQueue(p, { size: 8 });
  const dev = new DeviceQueue(p, { size: 8, ...drv.addresses, iotlb: t });
  const free = p.priv.available;
  assert.throws(() => t.destroy(), isCode(Code.FailedPrecondition));
  assert.equal(p.priv.available, free, 'nothing was freed');
  assert.equal(t.translate(p.ramBase, 1, PERM_R), p.ramBase, 'the map still works');
  dev.destroy();
  t.destroy();
  assert.throws(() => t.setIdentity(), isCode(Code.FailedPrecondition));
});
