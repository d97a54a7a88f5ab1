// The device's address map (IOTLB): IOVA ranges → memory offsets with permissions, kept in a
// table in private memory that the wasm data plane reads (assembly/mem.ts). This is what
// vdpa_config_ops.set_map / dma_map / dma_unmap install (Linux drivers/vhost/iotlb.c).

import { VirtioError, Code } from '../errors.ts';
import { TLB } from '../ring/layout.ts';
import type { Platform } from './platform.ts';

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
  last: bigint;
  addr: number;
  perm: number;
}

const U64_MAX = (1n << 64n) - 1n;

/** An address map with a fixed capacity, mirrored into wasm-visible memory on every change. */
export class Iotlb {
  /** Offset of the table in the platform memory (what the QSB's IOTLB field holds). */
  readonly offset: number;
  /** Most entries the table holds. */
  readonly capacity: number;
  private readonly platform: Platform;
  private entries: Entry[] = [];
  private readonly listeners = new Set<() => void>();
  private gen = 0;

  constructor(platform: Platform, capacity = 64) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65536) throw new VirtioError(Code.InvalidArgument, `IOTLB capacity ${capacity} must be 1..65536`);
    this.platform = platform;
    this.capacity = capacity;
    this.offset = platform.priv.alloc(TLB.HDR + TLB.ENT * capacity, 8);
    this.flush();
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
   * len 0 is always allowed.
   */
  allows(addr: number, len: number, perm: number): boolean {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0) return false;
    if (len === 0) return true;
    // The targets may be covered by several adjacent entries; walk them by target address.
    let cur = addr;
    const end = addr + len;
    while (cur < end) {
      let next = -1;
      for (const e of this.entries) {
        if ((e.perm & perm) !== perm) continue;
        const size = Number(e.last - e.first + 1n);
        if (cur >= e.addr && cur < e.addr + size) next = Math.max(next, e.addr + size);
      }
      if (next < 0) return false;
      cur = next;
    }
    return true;
  }

  /** The current mappings, sorted by IOVA. */
  get mappings(): readonly Readonly<{ iova: bigint; size: number; addr: number; perm: number }>[] {
    return this.entries.map((e) => ({ iova: e.first, size: Number(e.last - e.first + 1n), addr: e.addr, perm: e.perm }));
  }

  /** Replaces the whole map (set_map). Validates every entry first; on error nothing changes. */
  setMap(list: readonly IotlbEntry[]): void {
    const next: Entry[] = [];
    for (const e of list) this.insertChecked(next, this.check(e));
    this.entries = next;
    this.flush();
  }

  /** Adds one mapping (dma_map). Overlap with an existing mapping is an error. */
  dmaMap(e: IotlbEntry): void {
    const next = this.entries.slice();
    this.insertChecked(next, this.check(e));
    this.entries = next;
    this.flush();
  }

  /** Removes every mapping that overlaps [iova, iova + size) (dma_unmap, as vhost_iotlb_del_range). */
  dmaUnmap(iova: bigint | number, size: number): number {
    const first = BigInt(iova);
    if (!Number.isSafeInteger(size) || size <= 0) throw new VirtioError(Code.InvalidArgument, `unmap size ${size} must be a positive integer`);
    const last = first + BigInt(size) - 1n;
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => e.last < first || e.first > last);
    this.flush();
    return before - this.entries.length;
  }

  /** Maps [ramBase, ramBase + ramSize) with IOVA = memory offset (the default map). */
  setIdentity(): void {
    const p = this.platform;
    this.setMap([{ iova: p.ramBase, size: p.ramSize, addr: p.ramBase, perm: PERM_RW }]);
  }

  /**
   * Translates a range that must be contiguous in one mapping with `perm`.
   * Returns the memory offset, or -1.
   */
  translate(iova: bigint | number, len: number, perm: number): number {
    const first = BigInt(iova);
    const last = first + BigInt(Math.max(len, 1)) - 1n;
    for (const e of this.entries) {
      if (first >= e.first && first <= e.last) {
        if (last > e.last || (e.perm & perm) !== perm) return -1;
        return e.addr + Number(first - e.first);
      }
    }
    return -1;
  }

  /** Frees the table's memory; the map must not be used afterwards. */
  destroy(): void {
    this.listeners.clear();
    this.platform.priv.release(this.offset);
  }

  /** Calls `fn` after every change (queues re-check their ring areas). Returns an unsubscribe. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private check(e: IotlbEntry): Entry {
    let first: bigint;
    try {
      first = BigInt(e.iova);
    } catch {
      throw new VirtioError(Code.InvalidArgument, `IOVA ${String(e.iova)} is not an integer`);
    }
    const perm = e.perm ?? PERM_RW;
    if (first < 0n || first > U64_MAX) throw new VirtioError(Code.InvalidArgument, `IOVA ${first} is outside 0..2^64-1`);
    if (!Number.isSafeInteger(e.size) || e.size <= 0) throw new VirtioError(Code.InvalidArgument, `map size ${e.size} must be a positive integer`);
    const last = first + BigInt(e.size) - 1n;
    if (last > U64_MAX) throw new VirtioError(Code.InvalidArgument, `map [${first}, +${e.size}) runs past 2^64`);
    if (perm !== PERM_R && perm !== PERM_W && perm !== PERM_RW) throw new VirtioError(Code.InvalidArgument, `perm ${perm} must be PERM_R, PERM_W or PERM_RW`);
    const p = this.platform;
    if (!Number.isSafeInteger(e.addr) || e.addr < p.ramBase || e.addr + e.size > p.ramBase + p.ramSize) {
      throw new VirtioError(Code.InvalidArgument, `map target [${e.addr}, +${e.size}) is outside the platform RAM [${p.ramBase}, +${p.ramSize})`);
    }
    return { first, last, addr: e.addr, perm };
  }

  private insertChecked(list: Entry[], e: Entry): void {
    for (const o of list) {
      if (e.first <= o.last && o.first <= e.last) throw new VirtioError(Code.InvalidArgument, `map at IOVA ${e.first} overlaps the mapping at ${o.first}`);
    }
    if (list.length >= this.capacity) throw new VirtioError(Code.ResourceExhausted, `IOTLB is full (${this.capacity} entries)`);
    list.push(e);
    list.sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  }

  private flush(): void {
    this.gen = (this.gen + 1) >>> 0;
    const dv = this.platform.view;
    const o = this.offset;
    dv.setUint32(o, this.entries.length, true);
    dv.setUint32(o + 4, 0, true);
    this.entries.forEach((e, i) => {
      const p = o + TLB.HDR + i * TLB.ENT;
      dv.setBigUint64(p, e.first, true);
      dv.setBigUint64(p + 8, e.last, true);
      dv.setUint32(p + 16, e.addr, true);
      dv.setUint32(p + 20, e.perm, true);
    });
    for (const fn of this.listeners) fn();
  }
}
