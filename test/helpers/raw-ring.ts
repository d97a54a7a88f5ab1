// Raw, spec-offset access to virtqueue memory for layout and validation tests. Everything here
// reads and writes the platform memory through a little-endian DataView at the byte offsets of
// VIRTIO 1.3 §2.7 (split) and §2.8 (packed); nothing goes through the ring code under test.
// Addresses are memory offsets; under the platform's identity map they are also the IOVAs.

import type { Platform } from '../../src/index.ts';

// linux/virtio_ring.h (include/uapi/linux/virtio_ring.h)
/** VRING_DESC_F_NEXT: the buffer continues via `next` (split) / the next slot (packed). */
export const F_NEXT = 1;
/** VRING_DESC_F_WRITE: device-writable buffer. */
export const F_WRITE = 2;
/** VRING_DESC_F_INDIRECT: the buffer holds a table of descriptors. */
export const F_INDIRECT = 4;
/** VRING_PACKED_DESC_F_AVAIL = 1 << 7. */
export const F_AVAIL = 1 << 7;
/** VRING_PACKED_DESC_F_USED = 1 << 15. */
export const F_USED = 1 << 15;
/** VRING_USED_F_NO_NOTIFY (split used->flags). */
export const VRING_USED_F_NO_NOTIFY = 1;
/** VRING_AVAIL_F_NO_INTERRUPT (split avail->flags). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** VRING_PACKED_EVENT_FLAG_ENABLE / _DISABLE / _DESC (packed event suppression flags). */
export const EV_ENABLE = 0;
export const EV_DISABLE = 1;
export const EV_DESC = 2;
/** VRING_PACKED_EVENT_F_WRAP_CTR: bit 15 of off_wrap. */
export const EV_WRAP_SHIFT = 15;

/** Size of struct virtq_desc / struct pvirtq_desc. */
export const DESC_SIZE = 16;

/** Packed flags that make a descriptor available under driver wrap counter `wrap` (§2.8.1). */
export function availBits(wrap: number): number {
  return wrap ? F_AVAIL : F_USED;
}

/** Packed flags of a used descriptor under device wrap counter `wrap`: AVAIL == USED == wrap. */
export function usedBits(wrap: number): number {
  return wrap ? F_AVAIL | F_USED : 0;
}

/** vring_need_event from linux/virtio_ring.h, as a reference for the tests' expectations. */
export function vringNeedEvent(event: number, newIdx: number, old: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

export interface SplitDesc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

export interface PackedDesc {
  addr: bigint;
  len: number;
  id: number;
  flags: number;
}

function dv(p: Platform): DataView {
  return new DataView(p.memory.buffer);
}

/** Writes a split descriptor (le64 addr @0, le32 len @8, le16 flags @12, le16 next @14) at table[i]. */
export function writeSplitDesc(p: Platform, table: number, i: number, addr: number | bigint, len: number, flags: number, next = 0): void {
  const v = dv(p);
  const o = table + i * DESC_SIZE;
  v.setBigUint64(o, BigInt(addr), true);
  v.setUint32(o + 8, len >>> 0, true);
  v.setUint16(o + 12, flags, true);
  v.setUint16(o + 14, next, true);
}

/** Reads a split descriptor at table[i]. */
export function readSplitDesc(p: Platform, table: number, i: number): SplitDesc {
  const v = dv(p);
  const o = table + i * DESC_SIZE;
  return { addr: v.getBigUint64(o, true), len: v.getUint32(o + 8, true), flags: v.getUint16(o + 12, true), next: v.getUint16(o + 14, true) };
}

/** Writes a packed descriptor (le64 addr @0, le32 len @8, le16 id @12, le16 flags @14) at ring[i]. */
export function writePackedDesc(p: Platform, ring: number, i: number, addr: number | bigint, len: number, id: number, flags: number): void {
  const v = dv(p);
  const o = ring + i * DESC_SIZE;
  v.setBigUint64(o, BigInt(addr), true);
  v.setUint32(o + 8, len >>> 0, true);
  v.setUint16(o + 12, id, true);
  v.setUint16(o + 14, flags, true);
}

/** Reads a packed descriptor at ring[i]. */
export function readPackedDesc(p: Platform, ring: number, i: number): PackedDesc {
  const v = dv(p);
  const o = ring + i * DESC_SIZE;
  return { addr: v.getBigUint64(o, true), len: v.getUint32(o + 8, true), id: v.getUint16(o + 12, true), flags: v.getUint16(o + 14, true) };
}

/**
 * A split ring laid out by the test (VIRTIO 1.3 §2.7):
 *   descriptor table: N × 16 bytes (align 16)
 *   avail ring:  le16 flags @0 | le16 idx @2 | le16 ring[N] @4 | le16 used_event @4+2N (align 2)
 *   used ring:   le16 flags @0 | le16 idx @2 | {le32 id, le32 len}[N] @4 | le16 avail_event @4+8N (align 4)
 */
export class RawSplit {
  constructor(readonly p: Platform, readonly size: number, readonly desc: number, readonly avail: number, readonly used: number) {}

  /** Allocates the three areas in RAM (zeroed) with the spec's alignments. */
  static alloc(p: Platform, size: number): RawSplit {
    const desc = p.allocBuffer(16 * size, 16);
    const avail = p.allocBuffer(6 + 2 * size, 2);
    const used = p.allocBuffer(6 + 8 * size, 4);
    p.u8.fill(0, desc, desc + 16 * size);
    p.u8.fill(0, avail, avail + 6 + 2 * size);
    p.u8.fill(0, used, used + 6 + 8 * size);
    return new RawSplit(p, size, desc, avail, used);
  }

  /** What DeviceQueue takes (identity map: offsets are IOVAs). */
  get addresses(): { descArea: number; driverArea: number; deviceArea: number } {
    return { descArea: this.desc, driverArea: this.avail, deviceArea: this.used };
  }

  private get v(): DataView {
    return dv(this.p);
  }

  setDesc(i: number, addr: number | bigint, len: number, flags: number, next = 0): void {
    writeSplitDesc(this.p, this.desc, i, addr, len, flags, next);
  }

  getDesc(i: number): SplitDesc {
    return readSplitDesc(this.p, this.desc, i);
  }

  get availFlags(): number { return this.v.getUint16(this.avail, true); }
  set availFlags(x: number) { this.v.setUint16(this.avail, x, true); }
  get availIdx(): number { return this.v.getUint16(this.avail + 2, true); }
  set availIdx(x: number) { this.v.setUint16(this.avail + 2, x & 0xffff, true); }
  availRing(slot: number): number { return this.v.getUint16(this.avail + 4 + 2 * slot, true); }
  setAvailRing(slot: number, head: number): void { this.v.setUint16(this.avail + 4 + 2 * slot, head, true); }
  /** used_event: le16 at avail + 4 + 2N (§2.7.7, VIRTIO_F_EVENT_IDX). */
  get usedEvent(): number { return this.v.getUint16(this.avail + 4 + 2 * this.size, true); }
  set usedEvent(x: number) { this.v.setUint16(this.avail + 4 + 2 * this.size, x & 0xffff, true); }

  get usedFlags(): number { return this.v.getUint16(this.used, true); }
  set usedFlags(x: number) { this.v.setUint16(this.used, x, true); }
  get usedIdx(): number { return this.v.getUint16(this.used + 2, true); }
  set usedIdx(x: number) { this.v.setUint16(this.used + 2, x & 0xffff, true); }
  usedElem(slot: number): { id: number; len: number } {
    const o = this.used + 4 + 8 * slot;
    return { id: this.v.getUint32(o, true), len: this.v.getUint32(o + 4, true) };
  }
  setUsedElem(slot: number, id: number, len: number): void {
    const o = this.used + 4 + 8 * slot;
    this.v.setUint32(o, id >>> 0, true);
    this.v.setUint32(o + 4, len >>> 0, true);
  }
  /** avail_event: le16 at used + 4 + 8N (§2.7.10, VIRTIO_F_EVENT_IDX). */
  get availEvent(): number { return this.v.getUint16(this.used + 4 + 8 * this.size, true); }
  set availEvent(x: number) { this.v.setUint16(this.used + 4 + 8 * this.size, x & 0xffff, true); }

  /** Driver step 2-4 of §2.7.13: put heads in the avail ring after avail->idx, then bump idx. */
  publish(...heads: number[]): void {
    let idx = this.availIdx;
    for (const h of heads) {
      this.setAvailRing(idx & (this.size - 1), h);
      idx = (idx + 1) & 0xffff;
    }
    this.availIdx = idx;
  }
}

/**
 * A packed ring laid out by the test (VIRTIO 1.3 §2.8):
 *   descriptor ring: N × 16 bytes (align 16)
 *   driver area = driver event suppression: le16 off_wrap @0 | le16 flags @2 (align 4)
 *   device area = device event suppression: le16 off_wrap @0 | le16 flags @2 (align 4)
 */
export class RawPacked {
  constructor(readonly p: Platform, readonly size: number, readonly desc: number, readonly driver: number, readonly device: number) {}

  static alloc(p: Platform, size: number): RawPacked {
    const desc = p.allocBuffer(16 * size, 16);
    const driver = p.allocBuffer(4, 4);
    const device = p.allocBuffer(4, 4);
    p.u8.fill(0, desc, desc + 16 * size);
    p.u8.fill(0, driver, driver + 4);
    p.u8.fill(0, device, device + 4);
    return new RawPacked(p, size, desc, driver, device);
  }

  get addresses(): { descArea: number; driverArea: number; deviceArea: number } {
    return { descArea: this.desc, driverArea: this.driver, deviceArea: this.device };
  }

  private get v(): DataView {
    return dv(this.p);
  }

  setDesc(i: number, addr: number | bigint, len: number, id: number, flags: number): void {
    writePackedDesc(this.p, this.desc, i, addr, len, id, flags);
  }

  getDesc(i: number): PackedDesc {
    return readPackedDesc(this.p, this.desc, i);
  }

  /** Rewrites only the flags of ring[i]. */
  setFlags(i: number, flags: number): void {
    this.v.setUint16(this.desc + i * DESC_SIZE + 14, flags, true);
  }

  get driverEvent(): { offWrap: number; flags: number } {
    return { offWrap: this.v.getUint16(this.driver, true), flags: this.v.getUint16(this.driver + 2, true) };
  }
  setDriverEvent(offWrap: number, flags: number): void {
    this.v.setUint16(this.driver, offWrap, true);
    this.v.setUint16(this.driver + 2, flags, true);
  }
  get deviceEvent(): { offWrap: number; flags: number } {
    return { offWrap: this.v.getUint16(this.device, true), flags: this.v.getUint16(this.device + 2, true) };
  }
  setDeviceEvent(offWrap: number, flags: number): void {
    this.v.setUint16(this.device, offWrap, true);
    this.v.setUint16(this.device + 2, flags, true);
  }
}

/** Reads the event suppression struct at `addr` (le16 off_wrap @0, le16 flags @2). */
export function readEventSuppress(p: Platform, addr: number): { offWrap: number; flags: number } {
  const v = dv(p);
  return { offWrap: v.getUint16(addr, true), flags: v.getUint16(addr + 2, true) };
}

/** Writes the event suppression struct at `addr`. */
export function writeEventSuppress(p: Platform, addr: number, offWrap: number, flags: number): void {
  const v = dv(p);
  v.setUint16(addr, offWrap, true);
  v.setUint16(addr + 2, flags, true);
}
