// Seeded fuzz of the IOTLB (issue 7 item 18): random setMap/dmaMap/dmaUnmap sequences with
// RO/WO/RW, adjacent, overlapping, invalid and huge ranges, checked after every operation
// against a trivial reference model (an unsorted list scanned linearly): outcome and error
// code, mappings, generation, translate(), allows(), the wasm-visible table, and what the wasm
// data plane sees when it pops a one-descriptor chain at a random IOVA through a DeviceQueue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Iotlb, DeviceQueue, DriverQueue, Code, PERM_R, PERM_W, PERM_RW, TLB, ringFeatures } from '../src/index.ts';
import type { IotlbEntry, Platform } from '../src/index.ts';
import { fuzz, type Rand } from './helpers/fuzz.ts';
import { BUILDS, makePlatform } from './helpers/builds.ts';
import { refSegments, type RefMapping } from './fuzz/ref-iotlb.ts';

const U64_MAX = (1n << 64n) - 1n;

type M = RefMapping;

type Outcome = { ok: true; value?: number } | { ok: false; code: string };

/** The reference: a plain list, every question answered by a linear scan. */
class Model {
  list: M[] = [];
  constructor(readonly capacity: number, readonly ramBase: number, readonly ramSize: number) {}

  private iova(v: unknown): bigint | null {
    if (typeof v === 'bigint') return v >= 0n && v <= U64_MAX ? v : null;
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
    return null;
  }

  private check(e: IotlbEntry): M | null {
    const first = this.iova(e.iova);
    if (first === null) return null;
    if (!Number.isSafeInteger(e.size) || e.size <= 0) return null;
    const last = first + BigInt(e.size) - 1n;
    if (last > U64_MAX) return null;
    const perm = e.perm ?? PERM_RW;
    if (perm !== PERM_R && perm !== PERM_W && perm !== PERM_RW) return null;
    if (!Number.isSafeInteger(e.addr) || e.addr < this.ramBase || e.addr + e.size > this.ramBase + this.ramSize) return null;
    return { first, last, addr: e.addr, perm };
  }

  private static overlaps(a: M, b: M): boolean {
    return a.first <= b.last && b.first <= a.last;
  }

  setMap(list: IotlbEntry[]): Outcome {
    const next: M[] = [];
    for (const e of list) {
      const m = this.check(e);
      if (!m) return { ok: false, code: Code.InvalidArgument };
      next.push(m);
    }
    for (let i = 0; i < next.length; i++) {
      for (let j = 0; j < i; j++) if (Model.overlaps(next[i]!, next[j]!)) return { ok: false, code: Code.InvalidArgument };
    }
    if (next.length > this.capacity) return { ok: false, code: Code.ResourceExhausted };
    this.list = next;
    return { ok: true };
  }

  dmaMap(e: IotlbEntry): Outcome {
    const m = this.check(e);
    if (!m || this.list.some((o) => Model.overlaps(o, m))) return { ok: false, code: Code.InvalidArgument };
    if (this.list.length >= this.capacity) return { ok: false, code: Code.ResourceExhausted };
    this.list.push(m);
    return { ok: true };
  }

  dmaUnmap(iova: unknown, size: number): Outcome {
    const first = this.iova(iova);
    if (first === null || !Number.isSafeInteger(size) || size <= 0) return { ok: false, code: Code.InvalidArgument };
    const last = first + BigInt(size) - 1n;
    if (last > U64_MAX) return { ok: false, code: Code.InvalidArgument };
    const before = this.list.length;
    this.list = this.list.filter((e) => e.last < first || e.first > last);
    return { ok: true, value: before - this.list.length };
  }

  sorted(): { iova: bigint; size: number; addr: number; perm: number }[] {
    return [...this.list].sort((a, b) => (a.first < b.first ? -1 : 1)).map((e) => ({ iova: e.first, size: Number(e.last - e.first + 1n), addr: e.addr, perm: e.perm }));
  }

  translate(iova: bigint, len: number, perm: number): number {
    const last = iova + BigInt(Math.max(len, 1)) - 1n;
    for (const e of this.list) {
      if (iova >= e.first && iova <= e.last) return last <= e.last && (e.perm & perm) === perm ? e.addr + Number(iova - e.first) : -1;
    }
    return -1;
  }

  allows(addr: number, len: number, perm: number): boolean {
    if (len === 0) return true;
    let cur = addr;
    while (cur < addr + len) {
      let next = -1;
      for (const e of this.list) {
        const end = e.addr + Number(e.last - e.first + 1n);
        if ((e.perm & perm) === perm && cur >= e.addr && cur < end) next = Math.max(next, end);
      }
      if (next < 0) return false;
      cur = next;
    }
    return true;
  }

  /** What the device's walk gives for [iova, iova + len) with perm: segments split at entry boundaries, or null. */
  segments(iova: bigint, len: number, perm: number): { addr: number; len: number }[] | null {
    return refSegments(this.list, iova, len, perm);
  }
}

/** IOVA regions random ranges come from; the ring window (at DMA_BASE) is in none of them. */
const REGIONS: readonly bigint[] = [0n, 1n << 40n, 1n << 52n, (1n << 64n) - (1n << 20n)];
const REGION_SPAN = 1 << 20;
/** The driver's IOVA of memory offset 0: the ring window is DMA_BASE + ring offsets. */
const DMA_BASE = 2 ** 50;
/** Regions whose IOVAs a descriptor can carry (Buf.addr is a safe integer). */
const DESC_REGIONS = REGIONS.filter((r) => r < 1n << 53n);

interface Ctx {
  r: Rand;
  p: Platform;
  t: Iotlb;
  m: Model;
  /** IOVAs where recent ranges ended (+1): the next range may start there (adjacent). */
  edges: bigint[];
  /** Target addresses recently used, so targets overlap and abut. */
  targets: number[];
  /** Target of the ring window's mapping (never extended by random entries). */
  ringAddr: number;
}

function randIova(c: Ctx): bigint {
  const { r } = c;
  if (c.edges.length > 0 && r.chance(0.3)) return r.pick(c.edges) - (r.chance(0.2) ? 1n : 0n);
  return r.pick(REGIONS) + BigInt(r.chance(0.5) ? r.int(64) * 16 : r.int(REGION_SPAN));
}

function randSize(c: Ctx): number {
  const { r } = c;
  const k = r.int(20);
  if (k < 9) return r.range(1, 64);
  if (k < 17) return r.pick([256, 4096, 0x10000]);
  if (k < 19) return r.range(1, c.p.ramSize); // huge
  return c.p.ramSize;
}

function randEntry(c: Ctx): IotlbEntry {
  const { r, p } = c;
  const size = randSize(c);
  let iova = randIova(c);
  let perm = r.pick([PERM_R, PERM_W, PERM_RW, PERM_RW, undefined]);
  // Often right after (or before) a current mapping, mostly with its permission: chains that
  // cross mappings then translate into several segments.
  const near = c.m.list.filter((e) => e.addr !== c.ringAddr);
  if (near.length > 0 && r.chance(0.3)) {
    const e = r.pick(near);
    // Adjacent after or before it, or overlapping it by exactly one byte on either side.
    const at = r.pick([e.last + 1n, e.last + 1n, e.first - BigInt(size), e.last, e.first - BigInt(size) + 1n]);
    if (at >= 0n && at + BigInt(size) - 1n <= U64_MAX) iova = at;
    if (r.chance(0.7)) perm = e.perm;
  }
  let addr: number;
  if (c.targets.length > 0 && r.chance(0.4)) addr = Math.min(r.pick(c.targets), p.ramBase + p.ramSize - size);
  else addr = p.ramBase + r.int(p.ramSize - size + 1);
  if (addr < p.ramBase) addr = p.ramBase;
  const e: IotlbEntry = { iova, size, addr, ...(perm === undefined ? {} : { perm }) };
  // Now and then, something invalid.
  if (r.chance(0.08)) {
    switch (r.int(8)) {
      case 0: e.iova = -BigInt(r.range(1, 4096)); break;
      case 1: e.iova = U64_MAX - BigInt(r.int(16)); e.size = 17 + r.int(100); break; // runs past 2^64
      case 2: e.size = r.pick([0, -1, 1.5]); break;
      case 3: e.perm = r.pick([0, 4, 7]); break;
      case 4: e.addr = p.ramBase - r.range(1, 64); break;
      case 5: e.addr = p.ramBase + p.ramSize - size + r.range(1, 64); break;
      case 6: e.iova = r.pick([0.5, Number.NaN, 2 ** 60]); break;
      default: e.iova = 1n << 64n; break;
    }
  }
  return e;
}

function remember(c: Ctx, e: IotlbEntry): void {
  if ((typeof e.iova === 'bigint' || Number.isSafeInteger(e.iova)) && Number.isSafeInteger(e.size) && e.size > 0) {
    const end = BigInt(e.iova) + BigInt(e.size);
    if (end <= U64_MAX && end >= 0n && c.edges.length < 32) c.edges.push(end);
  }
  if (Number.isSafeInteger(e.addr) && c.targets.length < 32) c.targets.push(e.addr, e.addr + e.size);
}

function outcome(fn: () => number | void): Outcome {
  try {
    const v = fn();
    return typeof v === 'number' ? { ok: true, value: v } : { ok: true };
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === undefined) throw e; // a raw error is a failure in itself
    return { ok: false, code };
  }
}

/** Everything the model knows, compared with the Iotlb and its wasm table. */
function compare(c: Ctx, what: string): void {
  const { r, p, t, m } = c;
  assert.deepEqual(t.mappings, m.sorted(), `${what}: mappings`);
  // The table wasm reads: count, lastHit < count, entries sorted by IOVA.
  const dv = p.view;
  const count = dv.getUint32(t.offset, true);
  assert.equal(count, m.list.length, `${what}: table count`);
  const lastHit = dv.getUint32(t.offset + 4, true);
  assert.ok(count === 0 || lastHit < count, `${what}: lastHit ${lastHit} < count ${count}`);
  m.sorted().forEach((e, i) => {
    const o = t.offset + TLB.HDR + i * TLB.ENT;
    assert.equal(dv.getBigUint64(o, true), e.iova, `${what}: table[${i}].first`);
    assert.equal(dv.getBigUint64(o + 8, true), e.iova + BigInt(e.size) - 1n, `${what}: table[${i}].last`);
    assert.equal(dv.getUint32(o + 16, true), e.addr, `${what}: table[${i}].addr`);
    assert.equal(dv.getUint32(o + 20, true), e.perm, `${what}: table[${i}].perm`);
  });
  for (let k = 0; k < 8; k++) {
    let iova: bigint;
    if (m.list.length > 0 && r.chance(0.7)) {
      const e = r.pick(m.list);
      iova = r.pick([e.first, e.last, e.last + 1n, e.first - 1n, e.first + BigInt(r.int(Number(e.last - e.first + 1n)))]);
      if (iova < 0n || iova > U64_MAX) iova = e.first;
    } else {
      iova = randIova(c);
    }
    const len = r.pick([0, 1, 2, r.range(1, 8192), r.range(1, p.ramSize)]);
    const perm = r.int(4);
    assert.equal(t.translate(iova, len, perm), m.translate(iova, len, perm), `${what}: translate(${iova}, ${len}, ${perm})`);
  }
  for (let k = 0; k < 8; k++) {
    let addr: number;
    if (m.list.length > 0 && r.chance(0.7)) {
      const e = r.pick(m.list);
      const end = e.addr + Number(e.last - e.first + 1n);
      addr = r.pick([e.addr, e.addr - 1, end - 1, end, e.addr + r.int(end - e.addr)]);
    } else {
      addr = p.ramBase + r.int(p.ramSize) - r.int(2) * 16;
    }
    const len = r.pick([0, 1, r.range(1, 256), r.range(1, 0x10000), r.range(1, p.ramSize)]);
    const perm = r.int(4);
    assert.equal(t.allows(addr, len, perm), m.allows(addr, len, perm), `${what}: allows(${addr}, ${len}, ${perm})`);
  }
}

test('fuzz: IOTLB operations match a reference list, in TypeScript and in what the wasm device sees', () => {
  const n = fuzz('iotlb', 96, (r, i) => {
    const build = BUILDS[i % BUILDS.length]!;
    const packed = ((i >> 1) & 1) === 1;
    const p = makePlatform(build, { ramSize: 1 << 20, privateSize: 1 << 20 });
    const capacity = r.range(3, 24);
    const t = new Iotlb(p, capacity);
    const m = new Model(capacity, p.ramBase, p.ramSize);
    const c: Ctx = { r, p, t, m, edges: [], targets: [], ringAddr: p.ramBase };
    const features = ringFeatures({ packed });
    const drv = new DriverQueue(p, { size: 8, features, dmaBase: DMA_BASE });
    // The ring window: RAM from ramBase up to the first buffer, where the driver laid out its rings.
    const bufArea = p.allocBuffer(64);
    const ring: IotlbEntry = { iova: BigInt(DMA_BASE + p.ramBase), size: bufArea - p.ramBase, addr: p.ramBase, perm: PERM_RW };
    assert.ok(drv.addresses.descArea >= DMA_BASE + p.ramBase && drv.addresses.deviceArea < DMA_BASE + bufArea);
    const apply = (what: string, got: Outcome, want: Outcome) => {
      assert.deepEqual(got, want, `${what}: outcome`);
      compare(c, what);
    };
    const doSetMap = (list: IotlbEntry[]) => {
      const g = t.generation;
      const want = m.setMap(list);
      apply('setMap', outcome(() => t.setMap(list)), want);
      assert.equal(t.generation !== g, want.ok, 'setMap: generation changes iff the map did');
    };
    const doDmaMap = (e: IotlbEntry) => {
      const g = t.generation;
      const want = m.dmaMap(e);
      apply(`dmaMap(${String(e.iova)}, ${e.size}, ${e.addr}, ${e.perm})`, outcome(() => t.dmaMap(e)), want);
      assert.equal(t.generation !== g, want.ok);
    };
    const doUnmap = (iova: bigint | number, size: number) => {
      const g = t.generation;
      const want = m.dmaUnmap(iova, size);
      apply(`dmaUnmap(${iova}, ${size})`, outcome(() => t.dmaUnmap(iova, size)), want);
      assert.equal(t.generation !== g, want.ok && want.value! > 0, 'dmaUnmap: generation changes iff something was removed');
    };
    doSetMap([ring]);
    const dev = new DeviceQueue(p, { size: 8, features, ...drv.addresses, iotlb: t });

    /** Puts the ring window back (through the API, in the model too) and resets a broken pair. */
    const ensureRing = (): boolean => {
      const first = BigInt(ring.iova);
      const has = m.list.some((e) => e.first === first && e.last === first + BigInt(ring.size) - 1n && e.addr === ring.addr && e.perm === PERM_RW);
      if (!has) {
        doUnmap(first, ring.size);
        if (m.list.length >= capacity) doUnmap(m.list[0]!.first, 1);
        doDmaMap(ring);
      }
      if (dev.broken) {
        drv.reset();
        dev.reset();
      }
      return !dev.broken;
    };

    /** The wasm walk of a one-descriptor chain at a random IOVA must give the model's segments, or AddressUnmapped. */
    const popCheck = () => {
      if (!ensureRing()) assert.fail('the queue stays broken with its rings mapped');
      let iova: bigint;
      let writable = r.chance(0.5);
      let len: number;
      const cands = m.list.filter((e) => e.first < 1n << 53n && e.first !== BigInt(ring.iova));
      // Entries with an IOVA-adjacent successor: a chain may run across them.
      const runs = cands.filter((e) => m.list.some((f) => f.first === e.last + 1n));
      if (cands.length > 0 && r.chance(0.8)) {
        const across = runs.length > 0 && r.chance(0.5);
        const e = r.pick(across ? runs : cands);
        if (r.chance(0.8)) writable = e.perm === PERM_W || (e.perm === PERM_RW && writable);
        const span = Number(e.last - e.first + 1n);
        iova = e.first + BigInt(r.pick([0, span - 1, r.int(span), span - r.range(1, 16)].map((x) => Math.max(0, Math.min(span - 1, x)))));
        // Inside the entry, or running on into whatever follows it.
        const rest = Math.min(Number(e.last - iova + 1n), 1 << 20);
        len = across ? rest + r.range(1, 128) : r.pick([1, r.range(1, rest), rest, rest, rest + r.range(1, 64), r.range(1, 1 << 18)]);
      } else {
        iova = r.pick(DESC_REGIONS) + BigInt(r.int(REGION_SPAN));
        len = r.pick([1, r.range(1, 64), r.range(1, 8192), r.range(1, 1 << 18)]);
      }
      const want = m.segments(iova, len, writable ? PERM_W : PERM_R);
      if (want && want.length > dev.maxSegs) return; // more fragmented than the queue's segment records hold
      drv.stageOne(1, Number(iova), len, writable);
      assert.equal(drv.submit(), 1);
      const what = `pop ${writable ? 'writable' : 'readable'} [${iova}, +${len})`;
      if (want === null) {
        assert.throws(() => dev.pop(), (e: unknown) => (e as { code?: string }).code === Code.AddressUnmapped, `${what}: AddressUnmapped`);
        assert.equal(dev.broken, true);
        return;
      }
      assert.equal(dev.pop(), 1, what);
      const ch = dev.chain(0);
      assert.deepEqual(writable ? ch.writable : ch.readable, want, `${what}: segments`);
      assert.deepEqual(writable ? ch.readable : ch.writable, []);
      assert.equal(dev.pushPopped(), 1);
      assert.deepEqual(drv.reclaim().map((u) => u.token), [1]);
    };

    const ops = r.range(15, 40);
    for (let k = 0; k < ops; k++) {
      const op = r.int(10);
      if (op < 2) {
        const list: IotlbEntry[] = [];
        const len = r.chance(0.1) ? capacity + r.range(0, 2) : r.int(capacity);
        for (let j = 0; j < len; j++) list.push(randEntry(c));
        // Mostly keep the ring window (no random range reaches it).
        if (r.chance(0.8)) list.splice(r.int(list.length + 1), 0, ring);
        list.forEach((e) => remember(c, e));
        doSetMap(list);
      } else if (op < 6) {
        const e = randEntry(c);
        remember(c, e);
        doDmaMap(e);
      } else if (op < 8) {
        let iova: bigint | number = randIova(c);
        let size = r.pick([1, r.range(1, 64), 4096, r.range(1, 1 << 24), 2 ** 53 - 1]);
        // Huge unmaps may wipe the ring window: ensureRing puts it back before the next pop.
        if (r.chance(0.05)) iova = r.pick([-1, 0.5, -5n, 1n << 64n]);
        if (r.chance(0.05)) size = r.pick([0, -3, 1.5]);
        if (r.chance(0.05)) {
          iova = U64_MAX - BigInt(r.int(8));
          size = 9 + r.int(8); // past 2^64
        }
        doUnmap(iova, size);
      } else {
        popCheck();
      }
    }
    dev.destroy();
    drv.destroy();
    t.destroy();
  });
  assert.ok(n > 0);
});
