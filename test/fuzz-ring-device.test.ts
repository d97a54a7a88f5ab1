// Fuzz: the device side of both ring layouts against the reference parser (test/fuzz/ref-ring.ts,
// written from VIRTIO 1.3 §2.7/§2.8 and sharing no code with assembly/). Each case lays out a valid
// ring in raw memory (split or packed, every ring feature on or off, sizes 1..32768), maps it
// through a random IOTLB (read-only, write-only and read-write regions, adjacent and with holes),
// mostly mutates it (bit flips and edge values in descriptors, flags, next/id, len, indirect
// tables, avail idx and ring entries, event fields, the map), then pops and pushes through the
// public DeviceQueue and checks every chain or error class against the model. Memory is filled
// with canaries: a pop must not write anything, a push only the used entries the model predicts,
// and nothing outside the rings' device area is ever touched.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceQueue, Iotlb, ringFeatures, VirtioError, PERM_R, PERM_W, PERM_RW, QSB_SIZE, type Platform, type Chain } from '../src/index.ts';
import { BUILDS, makePlatform, type Build } from './helpers/builds.ts';
import { fuzz, makeRand, type Rand } from './helpers/fuzz.ts';
import { refPop, type RefChain, type RefMapping, type RefPos, type RefQueue } from './fuzz/ref-ring.ts';

// linux/virtio_ring.h
const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;
const U64_MAX = (1n << 64n) - 1n;

const RAM = 2 << 20;
/** Bytes of canary pattern the RAM is refilled from. */
let pattern: Uint8Array | undefined;

interface Env {
  p: Platform;
  iotlb: Iotlb;
  cases: number;
  /** Private memory serve() copies to (8 × 4096 bytes) and writes lengths to (after it). */
  sink: number;
}
const envs = new Map<Build, Env>();

function env(build: Build): Env {
  let e = envs.get(build);
  if (!e) {
    const p = makePlatform(build, { ramSize: RAM, privateSize: 2 << 20 });
    p.u8.set(canary(), p.ramBase);
    e = { p, iotlb: new Iotlb(p, 64), cases: 0, sink: p.priv.alloc(8 * 4096 + 64, 16) };
    envs.set(build, e);
  }
  return e;
}

function canary(): Uint8Array {
  if (!pattern) {
    const r = makeRand(0xca9a);
    pattern = r.bytes(RAM);
  }
  return pattern;
}

/** A random queue size: mostly small, sometimes up to the 32768 maximum. */
function pickSize(r: Rand, packed: boolean): number {
  const x = r();
  let n = x < 0.6 ? r.range(1, 16) : x < 0.87 ? r.range(17, 256) : x < 0.97 ? r.range(257, 4096) : r.range(4097, 32768);
  if (r.chance(0.05)) n = r.pick([1, 2, 32768, 32767, 256, 255]);
  if (!packed) n = 1 << Math.min(15, 31 - Math.clz32(n));
  return n;
}

interface Chunk {
  iova: bigint;
  off: number; // offset in the pool
  size: number;
  perm: number;
  addr: number; // memory target
}

/** One generated case: memory is written, the map is chosen. */
interface Case {
  packed: boolean;
  size: number;
  features: { eventIdx: boolean; indirect: boolean; inOrder: boolean };
  desc: number; // memory offsets of the ring areas
  driver: number;
  device: number;
  deviceLen: number;
  ringIova: bigint; // IOVA of memory ringBase
  ringBase: number;
  ringLen: number;
  chunks: Chunk[];
  map: RefMapping[];
  /** The first ringMaps entries of map hold the ring areas. */
  ringMaps: number;
  start: RefPos;
  usedStart: RefPos;
  /** Memory offsets worth mutating: [offset, byte width]. */
  hot: [number, number][];
  windowLo: number;
  windowHi: number;
}

function iovaOf(c: Case, mem: number): bigint {
  return c.ringIova + BigInt(mem - c.ringBase);
}

/** Lays out a case in memory. */
function generate(r: Rand, p: Platform): Case {
  const packed = r.chance(0.5);
  const size = pickSize(r, packed);
  const features = { eventIdx: r.chance(0.5), indirect: r.chance(0.6), inOrder: r.chance(0.3) };
  const u8 = p.u8;
  const dv = p.view;
  // Rings at a random 16-aligned offset, then the buffer pool.
  const ringBase = p.ramBase + 16 * r.int(2048);
  const desc = ringBase;
  let at = desc + 16 * size;
  const driver = packed ? (at + 3) & ~3 : at;
  at = driver + (packed ? 4 : 6 + 2 * size);
  const device = (at + 3) & ~3;
  const deviceLen = packed ? 4 : 6 + 8 * size;
  at = device + deviceLen;
  const ringLen = at - ringBase;
  const poolOff = (at + 63) & ~63;
  const poolSize = r.pick([4096, 16384, 65536]);
  const windowLo = ringBase;
  const windowHi = poolOff + poolSize;
  u8.set(canary().subarray(windowLo - p.ramBase, windowHi - p.ramBase), windowLo);
  // IOVA space: the rings' mapping at ringIova, the pool right after (adjacent) or far away.
  const span = BigInt(ringLen + poolSize + 0x10000);
  const ringIova = r.pick([0n, BigInt(r.int(2 ** 32)), U64_MAX - span - BigInt(r.int(4096)), BigInt(p.ramBase), BigInt(ringBase)]);
  const poolIova = r.chance(0.5) ? ringIova + BigInt(poolOff - ringBase) : ringIova + BigInt(poolOff - ringBase) + BigInt(r.int(0x8000) * 2);
  const map: RefMapping[] = [];
  if (r.chance(0.5)) {
    map.push({ iova: ringIova, size: ringLen, addr: ringBase, perm: PERM_RW });
  } else {
    // One mapping per area, with the least permission the device needs (split desc/avail: R).
    map.push({ iova: iovaOf2(ringIova, ringBase, desc), size: 16 * size, addr: desc, perm: packed ? PERM_RW : r.pick([PERM_R, PERM_RW]) });
    map.push({ iova: iovaOf2(ringIova, ringBase, driver), size: packed ? 4 : 6 + 2 * size, addr: driver, perm: r.pick([PERM_R, PERM_RW]) });
    map.push({ iova: iovaOf2(ringIova, ringBase, device), size: deviceLen, addr: device, perm: PERM_RW });
  }
  const ringMaps = map.length;
  // The pool: adjacent chunks with random permissions, some left unmapped (holes), some
  // pointing elsewhere in the pool (non-contiguous targets).
  const chunks: Chunk[] = [];
  let off = 0;
  while (off < poolSize) {
    const sz = Math.min(poolSize - off, Math.max(poolSize >> 5, r.pick([64, 256, 1024, 4096, 1 + r.int(3000)])));
    const perm = r.pick([PERM_R, PERM_W, PERM_RW, PERM_RW, PERM_R | 0]);
    let addr = poolOff + off;
    if (r.chance(0.15)) addr = poolOff + r.int(poolSize - sz + 1);
    chunks.push({ iova: poolIova + BigInt(off), off, size: sz, perm, addr });
    off += sz;
  }
  for (const c of chunks) if (!r.chance(0.04)) map.push({ iova: c.iova, size: c.size, addr: c.addr, perm: c.perm });
  const mapped = chunks.filter((c) => map.some((m) => m.iova === c.iova));
  const hot: [number, number][] = [];

  /** A buffer for the given direction, mostly inside one suitable chunk, sometimes crossing into the next. */
  const buf = (write: boolean): { addr: bigint; len: number } => {
    const want = write ? PERM_W : PERM_R;
    const ok = mapped.filter((c) => (c.perm & want) === want);
    const c = ok.length && !r.chance(0.02) ? r.pick(ok) : r.pick(chunks);
    const o = r.int(c.size);
    let len = r.chance(0.05) ? 0 : 1 + r.int(Math.min(c.size - o, r.pick([16, 64, 300, 5000])));
    if (r.chance(0.08)) len += r.int(2000); // may cross into the adjacent chunk
    return { addr: c.iova + BigInt(o), len };
  };
  /** A readable place for an indirect table of n entries: its memory offset and IOVA. */
  const tablePlace = (n: number): { mem: number; iova: bigint } | null => {
    const ok = mapped.filter((c) => (c.perm & PERM_R) && c.size >= 16 * n);
    if (!ok.length) return null;
    const c = r.pick(ok);
    const o = 16 * r.int(Math.floor((c.size - 16 * n) / 16) + 1);
    return { mem: c.addr + o, iova: c.iova + BigInt(o) };
  };
  const dataList = (n: number): { addr: bigint; len: number; flags: number }[] => {
    const nr = r.int(n + 1);
    const out = [];
    for (let k = 0; k < n; k++) {
      const w = k >= nr;
      const b = buf(w);
      out.push({ ...b, flags: w ? F_WRITE : 0 });
    }
    return out;
  };

  // Chains: how many descriptors in all, and where the device starts.
  const budget = Math.min(size, r.pick([1, 2, 4, 8, 16, 64]));
  let start: RefPos;
  let usedStart: RefPos;
  if (!packed) {
    const last = r.chance(0.3) ? r.pick([0, 0xffff, 0xfffe, 0x8000]) : r.int(0x10000);
    const usedIdx = (last - r.int(size + 1)) & 0xffff; // the device has at most size buffers in flight
    start = { last, wrap: 1 };
    usedStart = { last: usedIdx, wrap: 1 };
    // Random distinct descriptor indices.
    const taken = new Set<number>();
    const freshIndex = (): number => {
      for (;;) {
        const i = r.int(size);
        if (!taken.has(i)) {
          taken.add(i);
          return i;
        }
      }
    };
    let used = 0;
    let availIdx = last;
    while (used < budget) {
      const nd = Math.min(budget - used, r.pick([1, 1, 1, 2, 3, 4, 8]));
      const n = r.range(1, 8);
      const t = features.indirect && r.chance(0.3) ? tablePlace(n) : null;
      const head = freshIndex();
      if (t) {
        const items = dataList(n);
        {
          items.forEach((d, k) => {
            const o = t.mem + 16 * k;
            dv.setBigUint64(o, d.addr, true);
            dv.setUint32(o + 8, d.len, true);
            dv.setUint16(o + 12, d.flags | (k + 1 < n ? F_NEXT : 0), true);
            dv.setUint16(o + 14, k + 1, true);
            hot.push([o, 16]);
          });
          const o = desc + 16 * head;
          dv.setBigUint64(o, t.iova, true);
          dv.setUint32(o + 8, 16 * n, true);
          dv.setUint16(o + 12, F_INDIRECT, true);
          dv.setUint16(o + 14, r.int(size), true);
          hot.push([o, 16]);
          used += 1;
        }
      } else {
        const items = dataList(nd);
        let idx = head;
        items.forEach((d, k) => {
          const next = k + 1 < nd ? freshIndex() : r.int(size);
          const o = desc + 16 * idx;
          dv.setBigUint64(o, d.addr, true);
          dv.setUint32(o + 8, d.len, true);
          dv.setUint16(o + 12, d.flags | (k + 1 < nd ? F_NEXT : 0), true);
          dv.setUint16(o + 14, next, true);
          hot.push([o, 16]);
          idx = next;
        });
        used += nd;
      }
      dv.setUint16(driver + 4 + 2 * (availIdx % size), head, true);
      hot.push([driver + 4 + 2 * (availIdx % size), 2]);
      availIdx = (availIdx + 1) & 0xffff;
    }
    dv.setUint16(driver, r.chance(0.8) ? 0 : r.int(0x10000), true); // avail flags
    dv.setUint16(driver + 2, availIdx, true);
    dv.setUint16(driver + 4 + 2 * size, r.int(0x10000), true); // used_event
    hot.push([driver + 2, 2], [driver, 2], [driver + 4 + 2 * size, 2]);
    dv.setUint16(device, 0, true);
    dv.setUint16(device + 2, usedIdx, true);
  } else {
    const pos = r.chance(0.3) ? r.pick([0, size - 1]) : r.int(size);
    const wrap = r.int(2);
    start = { last: pos, wrap };
    usedStart = { last: pos, wrap };
    const ids = new Set<number>();
    let slot = pos;
    let w = wrap;
    const put = (o: number, addr: bigint, len: number, id: number, flags: number): void => {
      dv.setBigUint64(o, addr, true);
      dv.setUint32(o + 8, len, true);
      dv.setUint16(o + 12, id, true);
      dv.setUint16(o + 14, flags, true);
      hot.push([o, 16]);
    };
    const step = (): void => {
      if (++slot === size) {
        slot = 0;
        w ^= 1;
      }
    };
    let used = 0;
    while (used < budget && ids.size < size) {
      let id = r.int(size);
      while (ids.has(id)) id = (id + 1) % size;
      ids.add(id);
      const n = r.range(1, 8);
      const t = features.indirect && r.chance(0.3) ? tablePlace(n) : null;
      if (t) {
        dataList(n).forEach((d, k) => put(t.mem + 16 * k, d.addr, d.len, r.int(0x10000), d.flags));
        put(desc + 16 * slot, t.iova, 16 * n, id, F_INDIRECT | (w ? F_AVAIL : F_USED));
        step();
        used++;
        continue;
      }
      const nd = Math.min(budget - used, r.pick([1, 1, 1, 2, 3, 4, 8]));
      dataList(nd).forEach((d, k) => {
        const wbits = w ? F_AVAIL : F_USED;
        put(desc + 16 * slot, d.addr, d.len, k + 1 < nd ? r.int(0x10000) : id, d.flags | wbits | (k + 1 < nd ? F_NEXT : 0));
        step();
      });
      used += nd;
    }
    // The slot after the last buffer is not available: it carries the used bits of the previous lap.
    if (used < size) dv.setUint16(desc + 16 * slot + 14, w ? 0 : F_AVAIL | F_USED, true);
    dv.setUint16(driver, r.int(0x10000), true); // driver event off_wrap
    dv.setUint16(driver + 2, r.int(3), true); // driver event flags
    hot.push([driver, 4]);
  }
  return {
    packed, size, features, desc, driver, device, deviceLen, ringIova, ringBase, ringLen, chunks, map, ringMaps, start, usedStart, hot,
    windowLo, windowHi,
  };
}

function iovaOf2(ringIova: bigint, ringBase: number, mem: number): bigint {
  return ringIova + BigInt(mem - ringBase);
}

/** Edge values for a field of `width` bytes. */
function edge(r: Rand, c: Case, width: number): bigint {
  const n = BigInt(c.size);
  const pool = c.chunks[0]!.iova;
  const b = r.pick(c.chunks);
  const vals: bigint[] = width === 2
    ? [0n, 1n, n - 1n, n, n + 1n, 0xffffn, 0x7fffn, 0x8000n]
    : width === 4
      ? [0n, 1n, 15n, 16n, 17n, 0xffffffffn, 0x80000000n, 65536n * 16n, 65537n * 16n, 0xfffffff0n]
      : [0n, U64_MAX, U64_MAX - 15n, pool - 1n, b.iova, b.iova + BigInt(b.size) - 1n, b.iova + BigInt(b.size), b.iova - 1n, c.ringIova];
  return r.pick(vals);
}

/** Flips bits / writes edge values into the generated ring; changes the map. */
function mutate(r: Rand, c: Case, p: Platform): void {
  const dv = p.view;
  const k = r.range(1, 3);
  for (let m = 0; m < k; m++) {
    const what = r();
    if (what < 0.55 && c.hot.length) {
      const [o, w] = r.pick(c.hot);
      if (w === 16) {
        // Descriptor: pick a field (split: addr, len, flags, next; packed: addr, len, id, flags).
        const f = r.pick([0, 8, 12, 14, 12, 14]);
        if (r.chance(0.5)) {
          const bit = r.int(f === 0 ? 64 : f === 8 ? 32 : 16);
          const byte = o + f + (bit >> 3);
          p.u8[byte]! ^= 1 << (bit & 7);
        } else if (f === 0) dv.setBigUint64(o, edge(r, c, 8), true);
        else if (f === 8) dv.setUint32(o + 8, Number(edge(r, c, 4)), true);
        else {
          const flagsAt = c.packed ? 14 : 12;
          const v = f === flagsAt ? r.int(8) | (r.chance(0.5) ? r.pick([0, F_AVAIL, F_USED, F_AVAIL | F_USED]) : 0) : Number(edge(r, c, 2));
          dv.setUint16(o + f, v, true);
        }
      } else {
        const byte = o + r.int(w);
        if (r.chance(0.5)) p.u8[byte]! ^= 1 << r.int(8);
        else dv.setUint16(o, Number(edge(r, c, 2)), true);
      }
    } else if (what < 0.62 && c.hot.length) {
      // A loop or a runaway chain: NEXT on, next pointing anywhere (split) / NEXT on a whole lap (packed).
      const [o, w] = r.pick(c.hot);
      if (w === 16) {
        const fo = c.packed ? 14 : 12;
        dv.setUint16(o + fo, dv.getUint16(o + fo, true) | F_NEXT, true);
        if (!c.packed) dv.setUint16(o + 14, r.int(c.size), true);
      }
    } else if (what < 0.7) {
      // A raw byte anywhere in the descriptor area or the driver area.
      const inDesc = r.chance(0.7);
      const o = inDesc ? c.desc + r.int(16 * c.size) : c.driver + r.int(c.packed ? 4 : 6 + 2 * c.size);
      p.u8[o]! ^= 1 << r.int(8);
    } else if (what < 0.85) {
      // The split avail idx: far ahead, behind, or at the edge of the allowed window.
      if (!c.packed) {
        const cur = dv.getUint16(c.driver + 2, true);
        dv.setUint16(c.driver + 2, (r.pick([cur + 1, cur - 1, c.start.last + c.size, c.start.last + c.size + 1, c.start.last - 1, r.int(0x10000)]) & 0xffff), true);
      } else {
        const o = c.desc + 16 * ((c.start.last + r.int(4)) % c.size) + 14;
        dv.setUint16(o, dv.getUint16(o, true) ^ r.pick([F_AVAIL, F_USED, F_AVAIL | F_USED, F_NEXT, F_INDIRECT]), true);
      }
    } else {
      // The map: drop a pool mapping, change its permission, or split it in two adjacent halves.
      if (c.map.length <= c.ringMaps) continue;
      const i = r.range(c.ringMaps, c.map.length - 1); // the rings stay mapped (else the queue cannot be set up)
      const m = c.map[i]!;
      const x = r.int(3);
      if (x === 0) c.map.splice(i, 1);
      else if (x === 1) c.map[i] = { ...m, perm: r.pick([PERM_R, PERM_W, PERM_RW]) };
      else if (m.size > 1) {
        const h = 1 + r.int(m.size - 1);
        c.map.splice(i, 1, { ...m, size: h }, { iova: m.iova + BigInt(h), size: m.size - h, addr: m.addr + h, perm: r.pick([PERM_R, PERM_W, PERM_RW]) });
      }
    }
  }
}

function sameChain(got: Chain, want: RefChain, i: number): void {
  const ctx = `chain ${i}`;
  assert.equal(got.id, want.id, `${ctx} id`);
  assert.equal(got.ndesc, want.ndesc, `${ctx} ndesc`);
  assert.equal(got.readBytes, want.readBytes, `${ctx} readBytes`);
  assert.equal(got.writeBytes, want.writeBytes, `${ctx} writeBytes`);
  assert.deepEqual(got.readable, want.readable, `${ctx} readable segments`);
  assert.deepEqual(got.writable, want.writable, `${ctx} writable segments`);
}

/** Asserts memory [lo, lo + snap.length) equals `snap` except in the allowed ranges. */
function checkWindow(p: Platform, snap: Uint8Array, lo: number, allowed: [number, number][], what: string): void {
  const cur = p.u8.subarray(lo, lo + snap.length);
  if (Buffer.compare(cur, snap) === 0) return;
  // Compare the gaps between the allowed ranges with memcmp; look at bytes only in a gap that differs.
  const cuts = allowed.map(([a, b]) => [Math.max(0, a - lo), Math.min(snap.length, b - lo)] as const).filter(([a, b]) => a < b).sort((x, y) => x[0] - y[0]);
  let from = 0;
  for (const [a, b] of [...cuts, [snap.length, snap.length] as const]) {
    if (a > from && Buffer.compare(cur.subarray(from, a), snap.subarray(from, a)) !== 0) {
      for (let k = from; k < a; k++) {
        if (cur[k] !== snap[k]) assert.fail(`${what}: memory at ${lo + k} changed (${snap[k]} -> ${cur[k]}) outside what the device may write`);
      }
    }
    from = Math.max(from, b);
  }
}

/** Checks the whole RAM outside the case window still holds the canary pattern. */
function checkCanaries(p: Platform, c: Case): void {
  const pat = canary();
  const lo = c.windowLo - p.ramBase;
  const hi = c.windowHi - p.ramBase;
  const ram = p.u8.subarray(p.ramBase, p.ramBase + RAM);
  assert.equal(Buffer.compare(ram.subarray(0, lo), pat.subarray(0, lo)), 0, 'canary below the case window changed');
  assert.equal(Buffer.compare(ram.subarray(hi), pat.subarray(hi)), 0, 'canary above the case window changed');
}

/** The used entries a push must write, as the spec lays them out (§2.7.8 split, §2.8.4 packed), applied to `img`. */
function expectPush(c: Case, img: DataView, lo: number, used: RefPos, recs: { id: number; ndesc: number; written: number }[], inOrderBatch: boolean): RefPos {
  const at = (o: number) => o - lo;
  let { last, wrap } = used;
  if (!c.packed) {
    const put = (slot: number, id: number, len: number) => {
      const o = at(c.device + 4 + 8 * (slot % c.size));
      img.setUint32(o, id, true);
      img.setUint32(o + 4, len, true);
    };
    if (inOrderBatch) put(last, recs[recs.length - 1]!.id, recs[recs.length - 1]!.written);
    else recs.forEach((x, k) => put((last + k) & 0xffff, x.id, x.written));
    last = (last + recs.length) & 0xffff;
    img.setUint16(at(c.device + 2), last, true);
    return { last, wrap };
  }
  const put = (slot: number, w: number, id: number, len: number) => {
    const o = at(c.desc + 16 * slot);
    img.setUint32(o + 8, len, true);
    img.setUint16(o + 12, id, true);
    img.setUint16(o + 14, (w ? F_AVAIL | F_USED : 0) | (len !== 0 ? F_WRITE : 0), true);
  };
  const adv = (n: number) => {
    last += n;
    if (last >= c.size) {
      last -= c.size;
      wrap ^= 1;
    }
  };
  if (inOrderBatch) {
    const x = recs[recs.length - 1]!;
    put(last, wrap, x.id, x.written);
    adv(recs.reduce((s, y) => s + y.ndesc, 0));
  } else {
    for (const x of recs) {
      put(last, wrap, x.id, x.written);
      adv(x.ndesc);
    }
  }
  return { last, wrap };
}

/**
 * One DeviceQueue.serve() call checked against the reference parser, one chain at a time: the
 * chains it serves, the bytes it copies and lengths it reports, the used entries it writes
 * (and nothing else in RAM or private memory), where it stops and the errors it may report.
 * Returns the positions after it, or null if it broke the queue.
 */
function serveRound(c: Case, q: RefQueue, dq: DeviceQueue, p: Platform, iotlb: Iotlb, sink: number, r: Rand, pos: RefPos, used: RefPos, deviceWritable: [number, number][], round: number): { pos: RefPos; used: RefPos } | null {
  const max = r.range(1, 8);
  const stride = r.pick([0, 0, 8, 64, 4096]);
  const dst = stride !== 0 ? sink : 0;
  const lens = r.chance(0.5) ? sink + 8 * 4096 : 0;
  const want: RefChain[] = [];
  let end: 'empty' | 'stop' | Set<string> = 'empty';
  let ePos = pos;
  let eUsed = used;
  while (want.length < max) {
    const one = refPop(q, ePos, 1, 65535, eUsed);
    if (one.kind === 'error') { end = one.codes; break; }
    const ch = one.chains[0];
    if (ch === undefined) break;
    // What serve takes: one direct readable descriptor of 1..stride bytes in one map entry.
    const flags = c.packed ? p.view.getUint16(c.desc + 16 * ePos.last + 14, true) : p.view.getUint16(c.desc + 16 * ch.id + 12, true);
    if ((flags & (F_NEXT | F_INDIRECT | F_WRITE)) !== 0 || ch.readable.length !== 1 || ch.writable.length !== 0 || ch.readBytes === 0 || (stride !== 0 && ch.readBytes > stride)) {
      end = 'stop';
      break;
    }
    want.push(ch);
    ePos = one.pos;
    eUsed = c.packed ? (eUsed.last + 1 === c.size ? { last: 0, wrap: eUsed.wrap ^ 1 } : { last: eUsed.last + 1, wrap: eUsed.wrap }) : { last: (eUsed.last + 1) & 0xffff, wrap: eUsed.wrap };
  }
  const snap = p.u8.slice(c.windowLo, c.windowHi);
  const privSnap = p.u8.slice(p.privBase, p.privBase + p.privSize);
  let n = -1;
  let err: unknown;
  try {
    n = dq.serve(max, dst, stride, lens);
  } catch (x) {
    err = x;
  }
  checkWindow(p, privSnap, p.privBase, [[dq.qsb, dq.qsb + QSB_SIZE], [iotlb.offset + 4, iotlb.offset + 8], [sink, sink + 8 * 4096 + 64]], `round ${round} serve (private memory)`);
  tally(err ? 'serve-error' : `serve:${end instanceof Set ? 'stop-at-error' : end}`);
  if (err) {
    // serve() reports only errors pop() would report at that chain (split: avail idx, head).
    assert.ok(err instanceof VirtioError && end instanceof Set && end.has(err.code), `round ${round}: serve threw ${String(err)}, expected ${end instanceof Set ? [...end].join('|') : end}`);
    assert.equal(dq.broken, true);
    checkWindow(p, snap, c.windowLo, deviceWritable, `round ${round} serve error`);
    return null;
  }
  assert.equal(n, want.length, `round ${round}: chains served`);
  assert.equal(dq.serveStopped, end !== 'empty', `round ${round}: serveStopped`);
  for (let k = 0; k < n; k++) {
    const seg = want[k]!.readable[0]!;
    if (lens !== 0) assert.equal(p.view.getUint32(lens + 4 * k, true), seg.len, `served chain ${k} length`);
    if (stride !== 0) assert.equal(Buffer.compare(p.u8.subarray(dst + k * stride, dst + k * stride + seg.len), p.u8.subarray(seg.addr, seg.addr + seg.len)), 0, `served chain ${k} bytes`);
  }
  const img = new DataView(snap.buffer, snap.byteOffset, snap.byteLength);
  const nextUsed = n > 0 ? expectPush(c, img, c.windowLo, used, want.map((ch) => ({ id: ch.id, ndesc: 1, written: 0 })), false) : used;
  checkWindow(p, snap, c.windowLo, [], `round ${round} serve`);
  return { pos: ePos, used: nextUsed };
}

function runCase(build: Build, r: Rand, i: number): void {
  const e = env(build);
  const { p, iotlb } = e;
  const c = generate(r, p);
  if (r.chance(0.7)) mutate(r, c, p);
  iotlb.setMap(c.map.map((m) => ({ iova: m.iova, size: m.size, addr: m.addr, perm: m.perm })));
  const features = ringFeatures({ packed: c.packed, ...c.features });
  const batch = r.chance(0.5) ? undefined : r.range(1, Math.min(c.size, 256));
  const maxSegs = c.size === 32768 || r.chance(0.3) ? r.pick([1, 2, 3, 8, 64, 65535, 65535, Math.min(65535, Math.max(64, 2 * c.size))]) : undefined;
  const dq = new DeviceQueue(p, {
    size: c.size, features, descArea: iovaOf(c, c.desc), driverArea: iovaOf(c, c.driver), deviceArea: iovaOf(c, c.device), iotlb, batch, maxSegs,
  });
  try {
    if (c.packed) dq.setState({ version: 1, layout: 'packed', size: c.size, lastAvailIdx: c.start.last, lastAvailWrap: c.start.wrap as 0 | 1, lastUsedIdx: c.usedStart.last, lastUsedWrap: c.usedStart.wrap as 0 | 1 });
    else dq.setState({ version: 1, layout: 'split', size: c.size, availIndex: c.start.last, usedIndex: c.usedStart.last });
    const q: { -readonly [K in keyof RefQueue]: RefQueue[K] } = {
      layout: c.packed ? 'packed' : 'split', size: c.size, indirect: c.features.indirect,
      descArea: iovaOf(c, c.desc), driverArea: iovaOf(c, c.driver), map: c.map, mem: p.u8,
    };
    let pos = c.start;
    let used = c.usedStart;
    const deviceWritable: [number, number][] = c.packed ? [[c.desc, c.desc + 16 * c.size], [c.device, c.device + 4]] : [[c.device, c.device + c.deviceLen]];
    const rounds = r.range(1, 3);
    let ringsLost = false;
    for (let round = 0; round < rounds; round++) {
      if (round > 0 && r.chance(0.25)) {
        // The map changes under the live ring (set_map / dma_unmap): a pool mapping, or one that
        // holds a ring area, goes away or loses a permission.
        const next = c.map.slice();
        const k = r.int(next.length);
        const m = next[k]!;
        if (r.chance(0.5)) next.splice(k, 1);
        else next[k] = { ...m, perm: r.pick([PERM_R, PERM_W, PERM_RW]) };
        c.map = next;
        q.map = next;
        iotlb.setMap(next.map((x) => ({ iova: x.iova, size: x.size, addr: x.addr, perm: x.perm })));
        // §2.7/§2.8 areas the device reads (desc, driver) and writes (used ring / packed ring, device area).
        const inOne = (iova: bigint, len: number, perm: number) =>
          next.some((x) => iova >= x.iova && iova + BigInt(len) <= x.iova + BigInt(x.size) && (x.perm & perm) === perm);
        ringsLost = !inOne(iovaOf(c, c.desc), 16 * c.size, c.packed ? PERM_RW : PERM_R) ||
          !inOne(iovaOf(c, c.driver), c.packed ? 4 : 6 + 2 * c.size, PERM_R) || !inOne(iovaOf(c, c.device), c.deviceLen, PERM_RW);
      }
      if (ringsLost) {
        const snap = p.u8.slice(c.windowLo, c.windowHi);
        assert.throws(() => dq.pop(), (x: unknown) => x instanceof VirtioError && x.code === 'address_unmapped', 'a ring area lost its mapping');
        assert.equal(dq.broken, true);
        checkWindow(p, snap, c.windowLo, [], 'pop after the rings lost their mapping');
        tally('rings-unmapped');
        break;
      }
      if (r.chance(0.3)) {
        // The fused pass first (issue 11): it must serve exactly the leading chains pop() would
        // return as one readable descriptor, and leave the rest (and every error) to pop().
        const s = serveRound(c, q, dq, p, iotlb, e.sink, r, pos, used, deviceWritable, round);
        if (s === null) break; // it found the error itself: the queue is broken, case done
        pos = s.pos;
        used = s.used;
      }
      const max = r.chance(0.3) ? r.range(1, 4) : dq.batch;
      const want = refPop(q, pos, Math.min(max, dq.batch), dq.maxSegs, used);
      const snap = p.u8.slice(c.windowLo, c.windowHi);
      const privSnap = p.u8.slice(p.privBase, p.privBase + p.privSize);
      let n = -1;
      let err: unknown;
      try {
        n = dq.pop(max);
      } catch (x) {
        err = x;
      }
      checkWindow(p, snap, c.windowLo, [], `round ${round} pop`);
      // In private memory a pop writes only its queue's state block and records, and the map's
      // last-hit index.
      checkWindow(p, privSnap, p.privBase, [
        [dq.qsb, dq.qsb + QSB_SIZE], [dq.chainsAddr, dq.chainsAddr + 32 * dq.batch], [dq.segsAddr, dq.segsAddr + 8 * dq.maxSegs],
        [iotlb.offset + 4, iotlb.offset + 8],
      ], `round ${round} pop (private memory)`);
      tally(want.kind === 'error' ? [...want.codes].sort().join('|') : want.chains.length ? `ok:${c.packed ? 'packed' : 'split'}` : 'empty');
      if (want.kind === 'error') {
        assert.ok(err instanceof VirtioError, `round ${round}: expected one of [${[...want.codes]}] (${want.what}), got ${err ? String(err) : `${n} chains`}`);
        assert.ok(want.codes.has(err.code), `round ${round}: expected one of [${[...want.codes]}] (${want.what}), got ${err.code}`);
        assert.equal(dq.broken, true, 'a peer error breaks the queue');
        assert.throws(() => dq.pop(), (x: unknown) => x instanceof VirtioError && x.code === (err as VirtioError).code, 'the error is sticky');
        checkWindow(p, snap, c.windowLo, [], 'pop on a broken queue');
        break;
      }
      if (err) assert.fail(`round ${round}: expected ${want.chains.length} chains, got ${String(err)}`);
      assert.equal(n, want.chains.length, `round ${round}: chains popped`);
      for (let k = 0; k < n; k++) sameChain(dq.chain(k), want.chains[k]!, k);
      pos = want.pos;
      if (n === 0) {
        if (r.chance(0.5)) {
          dq.enableKick();
          checkWindow(p, snap, c.windowLo, deviceWritable, 'enableKick');
        }
        break;
      }
      // Complete them: all at once, in two pushes, or staged out of order.
      const recs = want.chains.map((ch, k) => ({ id: ch.id, ndesc: ch.ndesc, written: r.chance(0.3) ? 0 : r.int(ch.writeBytes + 1), k }));
      const img = new DataView(snap.buffer, snap.byteOffset, snap.byteLength);
      const mode = r.int(3);
      if (mode === 0 || n === 1) {
        for (const x of recs) dq.setWritten(x.k, x.written);
        const iob = c.features.inOrder && r.chance(0.5);
        dq.pushPopped(n, iob);
        used = expectPush(c, img, c.windowLo, used, recs, iob);
      } else if (mode === 1) {
        for (const x of recs) dq.setWritten(x.k, x.written);
        const h = r.range(1, n - 1);
        dq.pushPopped(h);
        dq.pushPopped();
        used = expectPush(c, img, c.windowLo, used, recs, false);
      } else {
        const order = recs.slice().sort(() => r() - 0.5).slice(0, Math.min(recs.length, dq.batch));
        for (const x of order) dq.complete(x.id, x.ndesc, x.written);
        dq.flushUsed();
        used = expectPush(c, img, c.windowLo, used, order, false);
      }
      checkWindow(p, snap, c.windowLo, [], `round ${round} push`);
      if (r.chance(0.5)) {
        dq.needCall();
        dq.enableKick();
        if (r.chance(0.5)) dq.disableKick();
        // Notification decisions only write the device's own event fields.
        const s2 = p.u8.slice(c.windowLo, c.windowHi);
        checkWindow(p, snap, c.windowLo, [[c.device, c.device + c.deviceLen]], 'notify');
        snap.set(s2);
      }
    }
  } finally {
    dq.destroy();
  }
  if (++e.cases % 32 === 0 || i === 0) checkCanaries(p, c);
  // Back to all-canary RAM for the next case.
  p.u8.set(canary().subarray(c.windowLo - p.ramBase, c.windowHi - p.ramBase), c.windowLo);
}

// Found by this fuzzer (seed 20261206, case 2286): a packed chain whose NEXT runs on past the end
// of the ring into the slots of buffers popped in the same lap was popped, so the device held
// more descriptors than the ring has, and pushPopped() then refused the batch (InvalidArgument).
describe('packed pop: a chain cannot reach into slots the device still holds', () => {
  const N = 8;
  function ring(build: Build) {
    const p = makePlatform(build);
    const desc = p.allocBuffer(16 * N, 16);
    const drvEv = p.allocBuffer(4, 4);
    const devEv = p.allocBuffer(4, 4);
    const buf = p.allocBuffer(4096);
    const dv = p.view;
    // Slot s: a 16-byte readable buffer, made available for the first lap (wrap 1: AVAIL set).
    const put = (s: number, id: number, next: boolean) => {
      dv.setBigUint64(desc + 16 * s, BigInt(buf + 16 * s), true);
      dv.setUint32(desc + 16 * s + 8, 16, true);
      dv.setUint16(desc + 16 * s + 12, id, true);
      dv.setUint16(desc + 16 * s + 14, F_AVAIL | (next ? F_NEXT : 0), true);
    };
    put(0, 0, true); put(1, 0, false); // buffer 0: slots 0-1
    for (let s = 2; s < 6; s++) put(s, 1, s < 5); // buffer 1: slots 2-5
    put(6, 2, false); // buffer 2: slot 6
    put(7, 3, true); // buffer 3: slot 7, NEXT on into slot 0 (still buffer 0's)
    const dq = new DeviceQueue(p, { size: N, features: ringFeatures({ packed: true }), descArea: desc, driverArea: drvEv, deviceArea: devEv });
    return { p, dq };
  }
  for (const build of BUILDS) {
    test(`${build}: in one pop`, () => {
      const { dq } = ring(build);
      assert.throws(() => dq.pop(), (e: unknown) => e instanceof VirtioError && e.code === 'chain_too_long');
      assert.equal(dq.broken, true);
    });
    test(`${build}: across pops, and fine once the held buffers are used`, () => {
      const { dq } = ring(build);
      assert.equal(dq.pop(3), 3);
      assert.throws(() => dq.pop(), (e: unknown) => e instanceof VirtioError && e.code === 'chain_too_long');
      const { dq: dq2 } = ring(build);
      assert.equal(dq2.pop(3), 3);
      assert.equal(dq2.pushPopped(), 3); // slots 0-6 are the driver's again
      assert.equal(dq2.pop(), 1);
      // Slot 7, then slot 0, which now holds the used descriptor of buffer 0 (no NEXT, id 0):
      // the id comes from the last descriptor of a chain (§2.8.6).
      assert.deepEqual([dq2.chainId(0), dq2.chainDescs(0)], [0, 2]);
    });
  }
});

/** Outcome counts, printed with VDPA_FUZZ_STATS=1 (to see what the cases exercise). */
const stats = new Map<string, number>();
function tally(k: string): void {
  stats.set(k, (stats.get(k) ?? 0) + 1);
}

describe('fuzz: device side vs the reference parser', () => {
  after(() => {
    envs.clear();
    if (process.env.VDPA_FUZZ_STATS) console.log([...stats].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}: ${v}`).join('\n'));
  });
  for (const build of BUILDS) {
    test(`${build}: pop/push of mutated split and packed rings agree with VIRTIO 1.3 §2.7/§2.8`, () => {
      fuzz(`ring-device-${build}`, 700, (r, i) => runCase(build, r, i));
    });
  }
});
