// The device's address map (IOTLB): IOVA ranges → memory offsets with permissions, kept in a
// table in private memory that the wasm data plane reads (assembly/mem.ts). This is what
// vdpa_config_ops.set_map / dma_map / dma_unmap install (Linux drivers/vhost/iotlb.c).

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from './platform.ts';

// The platform does not import from src/ring/ (the rings import the platform): the table
// layout lives here, and ring/layout.ts re-exports it.
/** IOTLB table (assembly/mem.ts): u32 count, u32 lastHit, then entries {u64 first, u64 last, u32 target, u32 perm}. */
export const TLB = {
  /** Header bytes (u32 count, u32 lastHit). */
  HDR: 8,
  /** Bytes per entry. */
  ENT: 24,
} as const;

/** Device may read the range (VHOST_ACCESS_RO). */
export const PERM_R = 1;
/** Device may write the range (VHOST_ACCESS_WO). */
export const PERM_W = 2;
/** Device may read and write (VHOST_ACCESS_RW). */
export const PERM_RW = 3;

/** One mapping: IOVA range [iova, iova + size) → memory offset `addr`. */
export interface IotlbEntry {
  /** First IOVA of the range. */
  iova: bigint | number;
  /** Bytes in the range (> 0). */
  size: number;
  /** Memory offset the range maps to (inside the platform's RAM). */
  addr: number;
  /** PERM_R | PERM_W. @default PERM_RW */
  perm?: number;
}

interface Entry {
  first: bigint;
  /** first as a number (inexact, and then unused, at 2^53 and above). */
  firstNum: number;
  last: bigint;
  /** Bytes (last - first + 1; ≤ the platform RAM, so a safe number). */
  size: number;
  addr: number;
  perm: number;
}

/** Target ranges [start, end) granting one permission mask, merged and sorted (see allows()). */
interface Coverage {
  starts: number[];
  ends: number[];
}

const U64_MAX = (1n << 64n) - 1n;

/** An IOVA argument as a u64, or VirtioError(InvalidArgument). Numbers must be safe integers (use a bigint above 2^53). */
function toIova(v: unknown, what: string): bigint {
  if (typeof v === 'bigint') {
    if (v < 0n || v > U64_MAX) throw new VirtioError(Code.InvalidArgument, `${what} ${v} is outside 0..2^64-1`);
    return v;
  }
  if (typeof v === 'number' && Number.isSafeInteger(v)) {
    if (v < 0) throw new VirtioError(Code.InvalidArgument, `${what} ${v} is outside 0..2^64-1`);
    return BigInt(v);
  }
  throw new VirtioError(Code.InvalidArgument, `${what} ${String(v)} must be a safe integer or a bigint`);
}

const byFirst = (a: Entry, b: Entry): number => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0);

/**
 * An address map with a fixed capacity, mirrored into wasm-visible memory on every change.
 *
 * Costs: setMap of n entries is O(n log n); dmaMap and dmaUnmap find their place by binary
 * search and move the table tail with one memmove; translate is O(log n) (the wasm walk the
 * data plane uses, see translate()); allows is O(log n)
 * after the first call following a change (which builds its index in O(n log n)).
 */
export class Iotlb {
  /** Offset of the table in the platform memory (what the QSB's IOTLB field holds). */
  readonly offset: number;
  /** Most entries the table holds. */
  readonly capacity: number;
  /** The platform whose memory holds the table and whose RAM the map targets. */
  readonly platform: Platform;
  /** Mappings sorted by IOVA, never overlapping: the source of the wasm table. */
  private entries: Entry[] = [];
  private readonly listeners = new Set<() => void>();
  private gen = 0;
  /** allows() index per permission mask 0..3, dropped on every change. */
  private readonly coverage: (Coverage | undefined)[] = [undefined, undefined, undefined, undefined];
  private destroyed = false;

  /**
   * A map with room for `capacity` entries (1..65536), empty until setMap/dmaMap. Its table is
   * allocated from the platform's private memory (throws as Allocator.alloc does).
   */
  constructor(platform: Platform, capacity = 64) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65536) throw new VirtioError(Code.InvalidArgument, `IOTLB capacity ${capacity} must be 1..65536`);
    this.platform = platform;
    this.capacity = capacity;
    this.offset = platform.priv.alloc(TLB.HDR + TLB.ENT * capacity, 8);
    this.writeAll(capacity);
  }

  /**
   * Bumped on every change of the map. A device that translated buffers under generation g
   * may use those translations while the generation is still g; after a change it must check
   * each access again ({@link allows}) before touching memory.
   */
  get generation(): number {
    return this.gen;
  }

  /**
   * True if memory [addr, addr + len) is, at this moment, entirely the target of mappings that
   * grant `perm` (a bit set of PERM_R / PERM_W). This is the access-time check of memory
   * translated earlier: the device may touch only what it is given when it touches it.
   * len 0 is always allowed; bad arguments (negative, non-integer, unknown perm bits) are not.
   */
  allows(addr: number, len: number, perm: number): boolean {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0) return false;
    if (!Number.isInteger(perm) || perm < 0 || perm > PERM_RW) return false;
    if (len === 0) return true;
    if (this.destroyed) return false;
    const c = this.coverageOf(perm);
    // The last merged range starting at or below addr must reach addr + len.
    let lo = 0;
    let hi = c.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (c.starts[mid]! <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && c.ends[lo - 1]! >= addr + len;
  }

  /** The current mappings, sorted by IOVA. */
  get mappings(): readonly Readonly<{
    /** First IOVA. */
    iova: bigint;
    /** Bytes mapped. */
    size: number;
    /** Memory offset the IOVA maps to. */
    addr: number;
    /** PERM_R / PERM_W bits. */
    perm: number;
  }>[] {
    return this.entries.map((e) => ({ iova: e.first, size: e.size, addr: e.addr, perm: e.perm }));
  }

  /**
   * Replaces the whole map (set_map). Validates every entry first; on error nothing changes.
   * Throws VirtioError(InvalidArgument) for an invalid entry (checked in list order) or two
   * overlapping entries, then ResourceExhausted if the valid map has more than
   * {@link capacity} entries. The list may be in any order.
   */
  setMap(list: readonly IotlbEntry[]): void {
    this.checkLive();
    if (!Array.isArray(list)) throw new VirtioError(Code.InvalidArgument, 'setMap needs an array of entries');
    const next = list.map((e) => this.check(e));
    let sorted = true;
    for (let i = 1; i < next.length && sorted; i++) sorted = next[i - 1]!.first < next[i]!.first;
    if (!sorted) next.sort(byFirst);
    // Sorted by first IOVA, a map overlaps itself iff two neighbours overlap.
    for (let i = 1; i < next.length; i++) {
      const a = next[i - 1]!;
      const b = next[i]!;
      if (b.first <= a.last) throw new VirtioError(Code.InvalidArgument, `map at IOVA ${b.first} overlaps the mapping at ${a.first}`);
    }
    if (next.length > this.capacity) throw new VirtioError(Code.ResourceExhausted, `${next.length} mappings do not fit an IOTLB of ${this.capacity} entries`);
    const before = this.entries.length;
    this.entries = next;
    this.writeAll(before);
    this.changed();
  }

  /**
   * Adds one mapping (dma_map). Throws VirtioError(InvalidArgument) for an invalid entry or one
   * that overlaps an existing mapping, then ResourceExhausted when the map is full; on error
   * nothing changes.
   */
  dmaMap(e: IotlbEntry): void {
    this.checkLive();
    const ne = this.check(e);
    const list = this.entries;
    const i = this.upperBound(ne.first);
    const prev = list[i - 1];
    const next = list[i];
    if (prev && prev.last >= ne.first) throw new VirtioError(Code.InvalidArgument, `map at IOVA ${ne.first} overlaps the mapping at ${prev.first}`);
    if (next && next.first <= ne.last) throw new VirtioError(Code.InvalidArgument, `map at IOVA ${ne.first} overlaps the mapping at ${next.first}`);
    if (list.length >= this.capacity) throw new VirtioError(Code.ResourceExhausted, `IOTLB is full (${this.capacity} entries)`);
    const n = list.length;
    list.splice(i, 0, ne);
    // Open a slot at i in the table: one memmove of the tail.
    const ent = this.offset + TLB.HDR;
    this.platform.u8.copyWithin(ent + (i + 1) * TLB.ENT, ent + i * TLB.ENT, ent + n * TLB.ENT);
    this.writeEntry(i, ne);
    this.writeHeader();
    this.changed();
  }

  /**
   * Removes every mapping that overlaps [iova, iova + size) (dma_unmap, as
   * vhost_iotlb_del_range). Returns how many were removed; removing none is not a change (the
   * generation stays). Throws VirtioError(InvalidArgument) for an IOVA that is not an integer in
   * 0..2^64-1, a size that is not a positive integer, or a range that runs past 2^64.
   */
  dmaUnmap(iova: bigint | number, size: number): number {
    this.checkLive();
    const first = toIova(iova, 'unmap IOVA');
    if (!Number.isSafeInteger(size) || size <= 0) throw new VirtioError(Code.InvalidArgument, `unmap size ${size} must be a positive integer`);
    const last = first + BigInt(size) - 1n;
    if (last > U64_MAX) throw new VirtioError(Code.InvalidArgument, `unmap [${first}, +${size}) runs past 2^64`);
    const list = this.entries;
    // Entries are sorted and disjoint, so their `last`s are sorted too: the overlapping ones
    // are the run [lo, hi) from the first ending at or after `first` to the first starting after `last`.
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.last < first) lo = mid + 1;
      else hi = mid;
    }
    const end = this.upperBound(last);
    const k = end - lo;
    if (k <= 0) return 0;
    const n = list.length;
    list.splice(lo, k);
    const ent = this.offset + TLB.HDR;
    const u8 = this.platform.u8;
    u8.copyWithin(ent + lo * TLB.ENT, ent + end * TLB.ENT, ent + n * TLB.ENT);
    u8.fill(0, ent + (n - k) * TLB.ENT, ent + n * TLB.ENT);
    this.writeHeader();
    this.changed();
    return k;
  }

  /** Maps [ramBase, ramBase + ramSize) with IOVA = memory offset (the default map). */
  setIdentity(): void {
    const p = this.platform;
    this.setMap([{ iova: p.ramBase, size: p.ramSize, addr: p.ramBase, perm: PERM_RW }]);
  }

  /**
   * Translates a range that must be contiguous in one mapping with `perm` (len 0 checks the
   * one byte at `iova`). Returns the memory offset, or -1 when not mapped so. Throws
   * VirtioError(InvalidArgument) for an IOVA that is not an integer in 0..2^64-1 (numbers must
   * be safe integers), a len that is not a non-negative integer, or a perm outside 0..PERM_RW.
   *
   * The lookup is the data plane's own (the wasm export tlb_translate over this map's table,
   * O(log n)): what this answers is what a descriptor with the same address gets.
   */
  translate(iova: bigint | number, len: number, perm: number): number {
    // The IOVA crosses as two u32 halves and len as a number: no BigInt at the boundary, and
    // none made for a number (a migration's destination translates every recorded piece).
    let lo: number;
    let hi: number;
    if (typeof iova === 'number' && Number.isSafeInteger(iova) && iova >= 0) {
      lo = iova % 0x1_0000_0000;
      hi = Math.floor(iova / 0x1_0000_0000);
    } else {
      const first = toIova(iova, 'IOVA');
      lo = Number(first & 0xffff_ffffn);
      hi = Number(first >> 32n);
    }
    if (!Number.isSafeInteger(len) || len < 0) throw new VirtioError(Code.InvalidArgument, `length ${len} must be a non-negative integer`);
    if (!Number.isInteger(perm) || perm < 0 || perm > PERM_RW) throw new VirtioError(Code.InvalidArgument, `perm ${perm} must be a bit set of PERM_R and PERM_W`);
    this.checkLive();
    return this.platform.exports.tlb_translate(this.offset, lo, hi, len, perm);
  }

  /**
   * The IOVA that maps memory [addr, addr + len) with `perm`, inside one mapping, or -1 if no
   * mapping does: the inverse of {@link translate} for memory translated earlier (a request
   * recorded for migration names its buffers by IOVA, which the destination's identical map
   * translates back). Several IOVAs may map the same memory; any of them names the same bytes.
   * Answers a number: -1 also when the IOVA would be 2^53 or more (not exact in a number).
   * O(n) in the entries; allocates nothing.
   */
  reverse(addr: number, len: number, perm: number): number {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 1) return -1;
    for (const e of this.entries) {
      if ((e.perm & perm) === perm && addr >= e.addr && addr + len <= e.addr + e.size) {
        const iova = e.firstNum + (addr - e.addr);
        return Number.isSafeInteger(iova + len) ? iova : -1;
      }
    }
    return -1;
  }

  /**
   * Frees the table's memory. Afterwards every change and translate throws
   * VirtioError(FailedPrecondition) and allows() is false; a second destroy does nothing.
   * Throws VirtioError(FailedPrecondition), changing nothing, while anything follows the map
   * through {@link onChange} (a DeviceQueue does until it is destroyed): the wasm data plane
   * of such a queue would read its table from freed, reusable memory.
   */
  destroy(): void {
    if (this.destroyed) return;
    if (this.listeners.size > 0) throw new VirtioError(Code.FailedPrecondition, `this IOTLB is still followed by ${this.listeners.size} queue(s) or listener(s): destroy them first`);
    this.destroyed = true;
    this.listeners.clear();
    this.entries = [];
    this.platform.release(this.offset);
  }

  /** Calls `fn` after every change (queues re-check their ring areas). Returns an unsubscribe. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private checkLive(): void {
    if (this.destroyed) throw new VirtioError(Code.FailedPrecondition, 'this IOTLB was destroyed');
  }

  private check(e: IotlbEntry): Entry {
    if (typeof e !== 'object' || e === null) throw new VirtioError(Code.InvalidArgument, `map entry ${String(e)} is not an object`);
    const first = toIova(e.iova, 'IOVA');
    const perm = e.perm ?? PERM_RW;
    if (!Number.isSafeInteger(e.size) || e.size <= 0) throw new VirtioError(Code.InvalidArgument, `map size ${e.size} must be a positive integer`);
    const last = first + BigInt(e.size) - 1n;
    if (last > U64_MAX) throw new VirtioError(Code.InvalidArgument, `map [${first}, +${e.size}) runs past 2^64`);
    if (perm !== PERM_R && perm !== PERM_W && perm !== PERM_RW) throw new VirtioError(Code.InvalidArgument, `perm ${perm} must be PERM_R, PERM_W or PERM_RW`);
    const p = this.platform;
    if (!Number.isSafeInteger(e.addr) || e.addr < p.ramBase || e.addr + e.size > p.ramBase + p.ramSize) {
      throw new VirtioError(Code.InvalidArgument, `map target [${e.addr}, +${e.size}) is outside the platform RAM [${p.ramBase}, +${p.ramSize})`);
    }
    return { first, firstNum: Number(first), last, size: e.size, addr: e.addr, perm };
  }

  /** Index of the first entry whose first IOVA is > iova (entries.length if none). */
  private upperBound(iova: bigint): number {
    const list = this.entries;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.first <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The merged target ranges of the entries granting `perm`, rebuilt once per generation. */
  private coverageOf(perm: number): Coverage {
    const cached = this.coverage[perm];
    if (cached) return cached;
    const ranges: [number, number][] = [];
    for (const e of this.entries) if ((e.perm & perm) === perm) ranges.push([e.addr, e.addr + e.size]);
    ranges.sort((a, b) => a[0] - b[0]);
    const starts: number[] = [];
    const ends: number[] = [];
    for (const [s, t] of ranges) {
      // Overlapping or adjacent targets merge: an access may span several mappings.
      const k = ends.length - 1;
      if (k >= 0 && s <= ends[k]!) ends[k] = Math.max(ends[k]!, t);
      else {
        starts.push(s);
        ends.push(t);
      }
    }
    const c = { starts, ends };
    this.coverage[perm] = c;
    return c;
  }

  /** Header: count, and lastHit reset to 0 (wasm trusts lastHit < count whenever count > 0). */
  private writeHeader(): void {
    const dv = this.platform.view;
    dv.setUint32(this.offset, this.entries.length, true);
    dv.setUint32(this.offset + 4, 0, true);
  }

  private writeEntry(i: number, e: Entry): void {
    const dv = this.platform.view;
    const p = this.offset + TLB.HDR + i * TLB.ENT;
    dv.setBigUint64(p, e.first, true);
    dv.setBigUint64(p + 8, e.last, true);
    dv.setUint32(p + 16, e.addr, true);
    dv.setUint32(p + 20, e.perm, true);
  }

  /** Rewrites the whole table (setMap; construction), zeroing slots up to `stale` no longer used. */
  private writeAll(stale: number): void {
    const n = this.entries.length;
    for (let i = 0; i < n; i++) this.writeEntry(i, this.entries[i]!);
    const ent = this.offset + TLB.HDR;
    if (stale > n) this.platform.u8.fill(0, ent + n * TLB.ENT, ent + stale * TLB.ENT);
    this.writeHeader();
  }

  /** A change happened: new generation, then the listeners (queues re-check their ring areas). */
  private changed(): void {
    this.gen = (this.gen + 1) >>> 0;
    this.coverage.fill(undefined);
    for (const fn of this.listeners) fn();
  }
}
