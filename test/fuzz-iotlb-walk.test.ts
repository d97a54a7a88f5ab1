// Seeded differential fuzz of the one IOVA walk (issue 7, "IOVA checks are written in two
// places"): the wasm binary search over the IOTLB table (assembly/mem.ts) answers both
// Iotlb.translate() and every descriptor a DeviceQueue pops. Both are checked against a tiny
// reference (a linear scan) over random sorted maps: adjacent entries, every permission,
// entries at IOVA 0 and ending at 2^64-1, len 0, ranges crossing an entry's end or a gap,
// 65 536-entry maps, and map changes between lookups (lastHit must never serve a stale entry).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, DeviceQueue, DriverQueue, Iotlb, PERM_R, PERM_W, PERM_RW, ringFeatures } from '../src/index.ts';
import type { IotlbEntry, Platform } from '../src/index.ts';
import { fuzz, type Rand } from './helpers/fuzz.ts';
import { BUILDS, LAYOUTS, makePlatform, type Build } from './helpers/builds.ts';
import { holder, refSegments, type RefMapping } from './fuzz/ref-iotlb.ts';

const U64_MAX = (1n << 64n) - 1n;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const PERMS = [PERM_R, PERM_W, PERM_RW];

type M = RefMapping;

/** Reference of Iotlb.translate: contiguous in one entry with perm; len 0 checks one byte. */
function refTranslate(list: readonly M[], iova: bigint, len: number, perm: number): number {
  const last = iova + BigInt(Math.max(len, 1)) - 1n;
  if (last > U64_MAX) return -1;
  const e = holder(list, iova);
  if (!e || last > e.last || (e.perm & perm) !== perm) return -1;
  return e.addr + Number(iova - e.first);
}


/**
 * n sorted, disjoint entries from IOVA `start`, each at most maxSize bytes, targets inside
 * [tBase, tBase + tSize). A third are adjacent to the previous one. With `top`, the last entry
 * ends exactly at 2^64-1 (if the others left room).
 */
function randomMap(r: Rand, n: number, start: bigint, maxSize: number, tBase: number, tSize: number, top = false): M[] {
  const list: M[] = [];
  let cur = start;
  for (let i = 0; i < n; i++) {
    const gap = r.chance(0.35) ? 0n : BigInt(r.pick([1, r.range(1, 64), r.range(1, maxSize * 4)]));
    const size = r.pick([1, r.range(1, maxSize), maxSize]);
    const first = i === 0 && r.chance(0.5) ? start : cur + gap;
    const last = first + BigInt(size) - 1n;
    if (last > U64_MAX) break;
    list.push({ first, last, addr: tBase + r.int(tSize - size + 1), perm: r.pick(PERMS) });
    cur = last + 1n;
  }
  if (top && list.length > 0 && list[list.length - 1]!.last < U64_MAX - 0x10000n) {
    const size = r.range(1, maxSize);
    list.push({ first: U64_MAX - BigInt(size) + 1n, last: U64_MAX, addr: tBase + r.int(tSize - size + 1), perm: r.pick(PERMS) });
  }
  return list;
}

const toEntries = (list: readonly M[]): IotlbEntry[] => list.map((e) => ({ iova: e.first, size: Number(e.last - e.first + 1n), addr: e.addr, perm: e.perm }));

/** An IOVA near an edge of a random entry (or anywhere), clamped to 0..max. */
function pickIova(r: Rand, list: readonly M[], max: bigint): bigint {
  const e = list.length > 0 ? r.pick(list) : undefined;
  let v: bigint;
  if (!e || r.chance(0.08)) v = r.pick([0n, max, BigInt(r.int(2 ** 31)) * BigInt(r.int(2 ** 22) + 1)]);
  else {
    const span = e.last - e.first;
    v = r.pick([e.first - 1n, e.first, e.last, e.last + 1n, e.first + (span * BigInt(r.int(1000))) / 1000n]);
  }
  return v < 0n ? 0n : v > max ? max : v;
}

/** A length: 0, 1, exactly to the holder's end, one past it, or random. */
function pickLen(r: Rand, list: readonly M[], iova: bigint, maxLen: number): number {
  const e = holder(list, iova);
  const toEnd = e ? Number(e.last - iova + 1n) : 1;
  const v = r.pick([0, 1, toEnd, toEnd + 1, r.range(1, maxLen), toEnd + r.range(1, maxLen)]);
  return Math.min(v, maxLen);
}

/** Checks Iotlb.translate against the reference on `queries` random questions. */
function checkTranslate(r: Rand, t: Iotlb, list: readonly M[], queries: number): void {
  for (let q = 0; q < queries; q++) {
    const iova = pickIova(r, list, U64_MAX);
    const len = pickLen(r, list, iova, 0x10000);
    const perm = r.int(4);
    const arg = iova <= SAFE && r.chance(0.5) ? Number(iova) : iova;
    assert.equal(t.translate(arg, len, perm), refTranslate(list, iova, len, perm), `translate(${iova}, ${len}, ${perm})`);
  }
}

for (const build of BUILDS) {
  describe(`one IOVA walk: Iotlb.translate against a reference, ${build} build`, () => {
    test('random small maps (adjacent entries, all perms, IOVA 0 and 2^64-1 edges, len 0, crossing ends)', () => {
      const p = makePlatform(build);
      const t = new Iotlb(p, 64);
      fuzz(`iotlb-walk-translate-${build}`, 400, (r) => {
        const start = r.pick([0n, BigInt(r.int(2 ** 31)), U64_MAX - BigInt(r.int(2 ** 20)) - 0x100000n]);
        const list = randomMap(r, r.range(0, 40), start, 4096, p.ramBase, p.ramSize, r.chance(0.5));
        t.setMap(toEntries(list));
        checkTranslate(r, t, list, 60);
      });
    });

    test('65 536-entry maps, and lookups after dmaMap/dmaUnmap changes', () => {
      const p = makePlatform(build, { privateSize: 4 << 20 });
      const t = new Iotlb(p, 65536);
      fuzz(`iotlb-walk-translate-65536-${build}`, 1, (r) => {
        let list = randomMap(r, 65536, BigInt(r.int(2 ** 20)), 256, p.ramBase, p.ramSize);
        list = list.slice(0, 65536);
        t.setMap(toEntries(list));
        checkTranslate(r, t, list, 300);
        // Change the map under the remembered hit, then ask again.
        for (let k = 0; k < 10; k++) {
          const victim = r.pick(list);
          t.dmaUnmap(victim.first, Number(victim.last - victim.first + 1n));
          list = list.filter((e) => e !== victim);
          if (r.chance(0.5)) {
            const again: M = { ...victim, addr: p.ramBase + r.int(p.ramSize - 256), perm: r.pick(PERMS) };
            t.dmaMap(toEntries([again])[0]!);
            list = [...list, again].sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
          }
          const e = holder(list, victim.first) ?? victim;
          for (const iova of [victim.first, victim.last, e.first]) {
            for (const perm of [PERM_R, PERM_W]) assert.equal(t.translate(iova, 1, perm), refTranslate(list, iova, 1, perm));
          }
          checkTranslate(r, t, list, 10);
        }
      });
    });
  });

  for (const layout of LAYOUTS) {
    describe(`one IOVA walk: ${layout} pops against a reference, ${build} build`, () => {
      const isUnmapped = (e: unknown) => (e as { code?: string }).code === Code.AddressUnmapped;

      /** Rings identity-mapped below 4 GiB, random buffer entries from 2^33 (DriverQueue addresses are safe integers). */
      function setup(p: Platform, t: Iotlb, buf: number, r: Rand, n: number, maxSize: number) {
        const features = ringFeatures({ packed: layout === 'packed' });
        const drv = new DriverQueue(p, { size: 8, features });
        const a = drv.addresses;
        const at = [a.descArea, a.driverArea, a.deviceArea].map((x) => Number(x));
        const lo = Math.min(...at);
        const rings: M[] = [{ first: BigInt(lo), last: BigInt(Math.max(...at) + 255), addr: lo, perm: PERM_RW }];
        const list = [...rings, ...randomMap(r, n, 1n << 33n, maxSize, buf, 1 << 16)];
        t.setMap(toEntries(list));
        const dev = new DeviceQueue(p, { size: 8, features, iotlb: t, ...a, maxSegs: 256 });
        return { drv, dev, list };
      }

      test('one-descriptor chains: segments equal the reference walk; unmapped breaks with AddressUnmapped', () => {
        const p = makePlatform(build, { privateSize: 4 << 20 });
        const t = new Iotlb(p, 65536);
        const buf = p.allocBuffer(1 << 16);
        fuzz(`iotlb-walk-pop-${layout}-${build}`, 40, (r, i) => {
          const big = i % 20 === 19; // every 20th case: a 65 536-entry map
          let { drv, dev, list } = setup(p, t, buf, r, big ? 65533 : r.range(1, 30), big ? 64 : 512);
          for (let q = 0; q < 30; q++) {
            const iova = pickIova(r, list.slice(1), SAFE);
            const len = pickLen(r, list, iova, 1024);
            const writable = r.chance(0.5);
            const perm = writable ? PERM_W : PERM_R;
            const want = refSegments(list, iova, len, perm);
            if (want !== null && want.length > 200) continue; // more fragmented than maxSegs allows
            drv.stageOne(q, Number(iova), len, writable);
            drv.submit();
            if (want === null) {
              assert.throws(() => dev.pop(), isUnmapped, `pop of [${iova}, +${len}) ${writable ? 'W' : 'R'}`);
              dev.destroy();
              drv.destroy();
              ({ drv, dev, list } = setup(p, t, buf, r, r.range(1, 30), 512));
              continue;
            }
            assert.equal(dev.pop(), 1);
            const c = dev.chain(0);
            assert.deepEqual(writable ? c.writable : c.readable, want, `pop of [${iova}, +${len}) ${writable ? 'W' : 'R'}`);
            assert.deepEqual(writable ? c.readable : c.writable, []);
            // The same walk answers Iotlb.translate: contiguous ranges give the pop's one segment.
            const off = t.translate(iova, len, perm);
            if (len > 0) assert.equal(off >= 0, want.length === 1, 'translate agrees with the pop on contiguity');
            if (off >= 0 && len > 0) assert.equal(off, want[0]!.addr);
            dev.pushPopped(1);
            assert.equal(drv.getUsed(), 1);
          }
          dev.destroy();
          drv.destroy();
        });
      });
    });
  }
}
