// A reference model of the device side of a virtqueue, written from VIRTIO 1.3 §2.7 (split) and
// §2.8 (packed) for the fuzz suites. It shares no code with assembly/ or src/ring: given a memory
// image, an address map and the device's ring position it computes which chains a device must
// pop (buffer id, ring descriptors used, readable/writable segments translated through the map
// and split at mapping boundaries) or which error class the driver's mistake falls in.
//
// Where the spec leaves room, the model follows the limits the product documents
// (assembly/ring/chain.ts, split.ts, packed.ts), each marked "product limit" below:
//   - an indirect table is at most 65536 descriptors (vhost's limit) and must lie in ONE
//     mapping with read permission (the spec says nothing about maps; vhost would also accept a
//     table that spans adjacent mappings);
//   - a packed indirect table entry with INDIRECT set is rejected as nested (§2.8.8 calls the
//     bit reserved in tables);
//   - a pop that fills the device's segment array stops before the chain that does not fit
//     (it is popped next time), and a chain that alone does not fit breaks the queue.
// Errors within one descriptor are reported as the set of every class that applies, since the
// spec gives no order among them.

import { Code } from '../../src/errors.ts';

// linux/virtio_ring.h
const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const F_AVAIL = 1 << 7; // VRING_PACKED_DESC_F_AVAIL
const F_USED = 1 << 15; // VRING_PACKED_DESC_F_USED
/** Product limit: largest indirect table, in bytes (65536 descriptors × 16). */
export const INDIRECT_MAX_BYTES = 65536 * 16;

/** One mapping of the device's address map: IOVA [iova, iova+size) → memory [addr, addr+size). */
export interface RefMapping {
  iova: bigint;
  size: number;
  addr: number;
  /** bit 0: device may read, bit 1: device may write. */
  perm: number;
}

/** A piece of a buffer as a memory offset. */
export interface RefSeg {
  addr: number;
  len: number;
}

/** A chain the device must pop. */
export interface RefChain {
  id: number;
  ndesc: number;
  readable: RefSeg[];
  writable: RefSeg[];
  readBytes: number;
  writeBytes: number;
}

/** Where the device is in the ring. Split: `last` = last_avail_idx (u16). Packed: slot + wrap counter. */
export interface RefPos {
  last: number;
  wrap: number;
}

/** What one pop must do. */
export type RefPop =
  | { kind: 'ok'; chains: RefChain[]; pos: RefPos }
  | { kind: 'error'; codes: Set<string>; what: string };

/** The queue as the device sees it. */
export interface RefQueue {
  layout: 'split' | 'packed';
  size: number;
  indirect: boolean;
  /** IOVAs of the descriptor area and the driver area. */
  descArea: bigint;
  driverArea: bigint;
  map: readonly RefMapping[];
  /** The whole memory (offsets as the map targets). */
  mem: Uint8Array;
}

type Walk =
  | { ok: true; chain: RefChain; segs: number }
  | { ok: false; codes: Set<string>; what: string; segs: number };

/** Reads through the model's own map. */
class MapView {
  private readonly dv: DataView;
  constructor(private readonly q: RefQueue) {
    this.dv = new DataView(q.mem.buffer, q.mem.byteOffset, q.mem.byteLength);
  }

  /** The mapping holding IOVA `a`, if any. */
  find(a: bigint): RefMapping | undefined {
    for (const m of this.q.map) if (a >= m.iova && a < m.iova + BigInt(m.size)) return m;
    return undefined;
  }

  /**
   * Translates [iova, iova+len) with permission `perm` into segments split at mapping
   * boundaries. Returns the segments, or the segments made before the first unmapped byte.
   */
  translate(iova: bigint, len: number, perm: number): { ok: boolean; segs: RefSeg[] } {
    const segs: RefSeg[] = [];
    if (len === 0) return { ok: true, segs };
    if (iova + BigInt(len) - 1n > (1n << 64n) - 1n) return { ok: false, segs };
    let cur = iova;
    let left = len;
    while (left > 0) {
      const m = this.find(cur);
      if (!m || (m.perm & perm) !== perm) return { ok: false, segs };
      const inMap = Number(m.iova + BigInt(m.size) - cur);
      const n = Math.min(inMap, left);
      segs.push({ addr: m.addr + Number(cur - m.iova), len: n });
      cur += BigInt(n);
      left -= n;
    }
    return { ok: true, segs };
  }

  /** Memory offset of [iova, iova+len) if it lies in one mapping with `perm`, else -1. */
  contiguous(iova: bigint, len: number, perm: number): number {
    const m = this.find(iova);
    if (!m || (m.perm & perm) !== perm) return -1;
    if (iova + BigInt(len) > m.iova + BigInt(m.size)) return -1;
    return m.addr + Number(iova - m.iova);
  }

  u16(off: number): number {
    return this.dv.getUint16(off, true);
  }
  u32(off: number): number {
    return this.dv.getUint32(off, true);
  }
  u64(off: number): bigint {
    return this.dv.getBigUint64(off, true);
  }
}

/** A descriptor as §2.7.5 / §2.8.13 lay it out (split: next at 14; packed: id at 12, flags at 14). */
interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  /** split: next; packed: buffer id. */
  x: number;
}

function readDesc(v: MapView, off: number, packed: boolean): Desc {
  return packed
    ? { addr: v.u64(off), len: v.u32(off + 8), x: v.u16(off + 12), flags: v.u16(off + 14) }
    : { addr: v.u64(off), len: v.u32(off + 8), flags: v.u16(off + 12), x: v.u16(off + 14) };
}

/** Accumulates a chain's data descriptors: §2.7.4.2 ordering, §2.7.5.2 total length. */
class ChainAcc {
  readable: RefSeg[] = [];
  writable: RefSeg[] = [];
  readBytes = 0;
  writeBytes = 0;
  sawWrite = false;

  get segs(): number {
    return this.readable.length + this.writable.length;
  }

  /** Adds one data descriptor. Returns the error set (empty if fine) and the segments it made before failing. */
  add(v: MapView, d: Desc): { codes: Set<string>; partial: number } {
    const codes = new Set<string>();
    const w = (d.flags & F_WRITE) !== 0;
    // §2.7.5.2: a chain MUST NOT total more than 2^32 bytes (the used len is a le32).
    if (this.readBytes + this.writeBytes + d.len > 0xffffffff) codes.add(Code.ChainTooBig);
    // §2.7.4.2: device-writable descriptors come after every device-readable one.
    if (!w && this.sawWrite) codes.add(Code.WriteBeforeRead);
    const t = v.translate(d.addr, d.len, w ? 2 : 1);
    if (!t.ok) codes.add(Code.AddressUnmapped);
    if (codes.size > 0) return { codes, partial: codes.has(Code.AddressUnmapped) && codes.size === 1 ? t.segs.length : 0 };
    if (w) {
      this.writable.push(...t.segs);
      this.writeBytes += d.len;
      this.sawWrite = true;
    } else {
      this.readable.push(...t.segs);
      this.readBytes += d.len;
    }
    return { codes, partial: 0 };
  }

  done(id: number, ndesc: number): RefChain {
    return { id, ndesc, readable: this.readable, writable: this.writable, readBytes: this.readBytes, writeBytes: this.writeBytes };
  }
}

/** Checks an indirect descriptor (§2.7.5.3.1 / §2.8.8). Returns its table's memory offset or the errors. */
function indirectTable(v: MapView, q: RefQueue, d: Desc): { off: number; codes: Set<string> } {
  const codes = new Set<string>();
  if (!q.indirect || (d.flags & F_NEXT)) codes.add(Code.IndirectInvalid);
  if (d.len === 0 || d.len % 16 !== 0 || d.len > INDIRECT_MAX_BYTES) codes.add(Code.IndirectInvalid);
  let off = -1;
  if (!codes.has(Code.IndirectInvalid)) {
    off = v.contiguous(d.addr, d.len, 1);
    if (off < 0) codes.add(Code.AddressUnmapped);
  }
  return { off, codes };
}

/** §2.7.5: walks the split chain at `head`. */
function walkSplit(v: MapView, q: RefQueue, descOff: number, head: number): Walk {
  const acc = new ChainAcc();
  let table = descOff;
  let limit = q.size; // a chain visits each descriptor of its table at most once
  let i = head;
  let visited = 0;
  let ndesc = 0;
  let indirect = false;
  const fail = (codes: Set<string>, what: string, partial = 0): Walk => ({ ok: false, codes, what, segs: acc.segs + partial });
  for (;;) {
    if (++visited > limit) return fail(new Set([Code.ChainTooLong]), `chain from head ${head} visits more than ${limit} descriptors`);
    const d = readDesc(v, table + 16 * i, false);
    if (!indirect) ndesc++;
    if (d.flags & F_INDIRECT) {
      if (indirect) {
        // §2.7.5.3.1: the driver MUST NOT set INDIRECT in a descriptor of an indirect table.
        const c = new Set<string>([Code.IndirectNested]);
        if (d.flags & F_NEXT) c.add(Code.IndirectInvalid);
        return fail(c, `nested indirect at table entry ${i}`);
      }
      const t = indirectTable(v, q, d);
      if (t.codes.size) return fail(t.codes, `bad indirect descriptor ${i}`);
      table = t.off;
      limit = d.len / 16;
      i = 0;
      visited = 0;
      indirect = true;
      continue;
    }
    const r = acc.add(v, d);
    const next = d.flags & F_NEXT ? d.x : -1;
    if (r.codes.size) {
      if (next >= limit) r.codes.add(Code.NextOutOfRange);
      return fail(r.codes, `bad descriptor ${i}`, r.partial);
    }
    if (next < 0) break;
    if (next >= limit) return fail(new Set([Code.NextOutOfRange]), `next ${next} of descriptor ${i} is outside a ${limit}-entry table`);
    i = next;
  }
  const chain = acc.done(head, ndesc);
  return { ok: true, chain, segs: acc.segs };
}

/** §2.8.6/§2.8.7: walks the packed chain whose first descriptor is at ring slot `pos`. */
function walkPacked(v: MapView, q: RefQueue, descOff: number, pos: number, room: number): Walk {
  const acc = new ChainAcc();
  const fail = (codes: Set<string>, what: string, partial = 0): Walk => ({ ok: false, codes, what, segs: acc.segs + partial });
  let ndesc = 0;
  let slot = pos;
  let id: number;
  for (;;) {
    // A buffer uses at most the ring slots the device does not hold (at most queue-size).
    if (++ndesc > room) return fail(new Set([Code.ChainTooLong]), `chain at slot ${pos} runs over the ${room} free descriptors`);
    const d = readDesc(v, descOff + 16 * slot, true);
    if (d.flags & F_INDIRECT) {
      const t = indirectTable(v, q, d);
      if (t.codes.size) return fail(t.codes, `bad indirect descriptor at slot ${slot}`);
      // §2.8.8: table entries are consecutive; WRITE is their only meaningful flag.
      for (let j = 0; j < d.len / 16; j++) {
        const e = readDesc(v, t.off + 16 * j, true);
        if (e.flags & F_INDIRECT) return fail(new Set([Code.IndirectNested]), `indirect flag in table entry ${j}`); // product limit
        const r = acc.add(v, e);
        if (r.codes.size) return fail(r.codes, `bad table entry ${j}`, r.partial);
      }
      id = d.x;
      break;
    }
    const r = acc.add(v, d);
    if (r.codes.size) return fail(r.codes, `bad descriptor at slot ${slot}`, r.partial);
    if (!(d.flags & F_NEXT)) {
      id = d.x; // §2.8.6: the buffer id is in the last descriptor
      break;
    }
    slot = slot + 1 === q.size ? 0 : slot + 1;
  }
  if (id >= q.size) return fail(new Set([Code.BufferIdInvalid]), `buffer id ${id} >= size ${q.size}`);
  return { ok: true, chain: acc.done(id, ndesc), segs: acc.segs };
}

/**
 * What a device at `pos` must do when asked for at most `max` chains with room for `maxSegs`
 * segments. Split: §2.7.13 (avail ring), packed: §2.8.1/§2.8.9 (avail flags and wrap counter).
 * Packed: `used` is the device's used position; the slots from it to `pos` hold buffers the
 * device has not marked used yet, so the driver cannot have put new descriptors there: a
 * buffer that would reach them is a runaway chain.
 */
export function refPop(q: RefQueue, pos: RefPos, max: number, maxSegs: number, used: RefPos = pos): RefPop {
  const v = new MapView(q);
  const packed = q.layout === 'packed';
  const descOff = v.contiguous(q.descArea, 16 * q.size, 1);
  if (descOff < 0) return { kind: 'error', codes: new Set([Code.AddressUnmapped]), what: 'descriptor area unmapped' };
  const chains: RefChain[] = [];
  let segs = 0;
  let last = pos.last;
  let wrap = pos.wrap;
  const tooMany = (): RefPop =>
    chains.length > 0
      ? { kind: 'ok', chains, pos: { last, wrap } }
      : { kind: 'error', codes: new Set([Code.TooManySegments]), what: `a chain needs more than ${maxSegs} segments` };
  if (!packed) {
    const availOff = v.contiguous(q.driverArea, 6 + 2 * q.size, 1);
    if (availOff < 0) return { kind: 'error', codes: new Set([Code.AddressUnmapped]), what: 'avail ring unmapped' };
    const availIdx = v.u16(availOff + 2);
    // §2.7.13.3: the driver never makes more than queue-size buffers available ahead of the device.
    if (((availIdx - last) & 0xffff) > q.size) {
      return { kind: 'error', codes: new Set([Code.AvailIdxInvalid]), what: `avail idx ${availIdx} vs last ${last}` };
    }
    while (chains.length < max && last !== availIdx) {
      const head = v.u16(availOff + 4 + 2 * (last % q.size));
      if (head >= q.size) return { kind: 'error', codes: new Set([Code.HeadOutOfRange]), what: `head ${head}` };
      const w = walkSplit(v, q, descOff, head);
      if (segs + w.segs > maxSegs) return tooMany();
      if (!w.ok) return { kind: 'error', codes: w.codes, what: w.what };
      chains.push(w.chain);
      segs += w.segs;
      last = (last + 1) & 0xffff;
    }
    return { kind: 'ok', chains, pos: { last, wrap } };
  }
  // Slots in flight, counting laps with the wrap counters (a lap with wrap 0 is the second one).
  const lin = (x: RefPos) => x.last + (x.wrap ? 0 : q.size);
  const held = (lin(pos) - lin(used) + 2 * q.size) % (2 * q.size);
  let room = held <= q.size ? q.size - held : q.size; // an inconsistent restored state: the size bound only
  while (chains.length < max) {
    // §2.8.1: available when AVAIL equals the device's avail wrap counter and USED does not.
    const flags = v.u16(descOff + 16 * last + 14);
    const a = (flags & F_AVAIL) !== 0 ? 1 : 0;
    const u = (flags & F_USED) !== 0 ? 1 : 0;
    if (!(a === wrap && u !== wrap)) break;
    const w = walkPacked(v, q, descOff, last, room);
    if (segs + w.segs > maxSegs) return tooMany();
    if (!w.ok) return { kind: 'error', codes: w.codes, what: w.what };
    chains.push(w.chain);
    segs += w.segs;
    room -= w.chain.ndesc;
    last += w.chain.ndesc;
    if (last >= q.size) {
      last -= q.size;
      wrap ^= 1;
    }
  }
  return { kind: 'ok', chains, pos: { last, wrap } };
}
