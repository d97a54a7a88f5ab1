// Address translation (the device's IOTLB) and copies over linear memory.
// Descriptors carry IOVAs (VIRTIO 1.3 §2.7.5 "addr"); the device maps them through its table,
// as Linux vringh_iov_*_iotlb does, and checks every byte of every segment against it.

import { STATUS_ADDRESS_UNMAPPED } from "./status";

/** Internal: the segment array is full; the chain is retried in the next batch. Never exported. */
// @ts-ignore: decorator
@inline export const SEG_FULL: i32 = -1000;
import { SEG_REC } from "./ring/defs";

// Translation table, laid out by TypeScript (src/platform/iotlb.ts) in private memory:
//   0 u32 count | 4 u32 lastHit | 8 entries[count], 24 bytes each:
//   0 u64 first IOVA | 8 u64 last IOVA (inclusive) | 16 u32 target (memory offset) | 20 u32 perm
// Entries are sorted by first IOVA and do not overlap (the TS side validates on setMap/dmaMap);
// slots at and past count are zero (perm 0: nothing hits them). Targets lie inside memory.
// @ts-ignore: decorator
@inline export const TLB_HDR: u32 = 8;
// @ts-ignore: decorator
@inline export const TLB_ENT: u32 = 24;
/** Device may read (VHOST_ACCESS_RO). */
// @ts-ignore: decorator
@inline export const PERM_R: u32 = 1;
/** Device may write (VHOST_ACCESS_WO). */
// @ts-ignore: decorator
@inline export const PERM_W: u32 = 2;

/**
 * Finds the entry holding `iova` with `perm`; returns its index or -1. Remembers the hit.
 * The table is sorted by first IOVA and its entries do not overlap (src/platform/iotlb.ts keeps
 * it so), so the only candidate is the last entry whose first IOVA is <= iova: an upper-bound
 * binary search finds it in O(log n) (65 536 entries: 16 probes), then one compare on its last
 * IOVA and one on its permission decide.
 */
export function findEntry(tbl: usize, iova: u64, perm: u32): i32 {
  let lo: u32 = 0;
  let hi = load<u32>(tbl);
  // Invariant: entries [0, lo) start at or below iova, entries [hi, count) start above it.
  while (lo < hi) {
    const mid = lo + ((hi - lo) >> 1);
    if (load<u64>(tbl + TLB_HDR + <usize>mid * TLB_ENT) <= iova) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0) return -1; // below the first entry (or no entries)
  const i = lo - 1;
  const e = tbl + TLB_HDR + <usize>i * TLB_ENT;
  if (iova > load<u64>(e, 8)) return -1; // in the gap after entry i
  if ((load<u32>(e, 20) & perm) != perm) return -1;
  store<u32>(tbl, i, 4);
  return <i32>i;
}

/**
 * Translates [iova, iova+len) into segments appended at segs[segIdx..], splitting at entry
 * boundaries. Returns the new segment count, SEG_FULL if `maxSegs` is reached, or
 * STATUS_ADDRESS_UNMAPPED if any byte is unmapped or lacks `perm`. len 0 adds nothing.
 */
export function translate(tbl: usize, iova: u64, len: u32, perm: u32, segs: usize, segIdx: i32, maxSegs: i32): i32 {
  if (len == 0) return segIdx;
  const lastByte = iova + <u64>(len - 1);
  if (lastByte < iova) return STATUS_ADDRESS_UNMAPPED; // wraps past 2^64
  // Fast path: the entry that served the previous lookup holds the whole range.
  const hit = tbl + TLB_HDR + load<u32>(tbl, 4) * TLB_ENT;
  if (load<u32>(tbl) != 0 && iova >= load<u64>(hit) && lastByte <= load<u64>(hit, 8) && (load<u32>(hit, 20) & perm) == perm) {
    if (segIdx >= maxSegs) return SEG_FULL;
    const s = segs + <usize>segIdx * SEG_REC;
    store<u32>(s, load<u32>(hit, 16) + <u32>(iova - load<u64>(hit)));
    store<u32>(s, len, 4);
    return segIdx + 1;
  }
  let cur = iova;
  let left: u64 = <u64>len;
  while (left != 0) {
    const i = findEntry(tbl, cur, perm);
    if (i < 0) return STATUS_ADDRESS_UNMAPPED;
    const e = tbl + TLB_HDR + <u32>i * TLB_ENT;
    let chunk = load<u64>(e, 8) - cur + 1; // 0 means the entry spans 2^64 bytes
    if (chunk == 0 || chunk > left) chunk = left;
    if (segIdx >= maxSegs) return SEG_FULL;
    const s = segs + <usize>segIdx * SEG_REC;
    store<u32>(s, load<u32>(e, 16) + <u32>(cur - load<u64>(e)));
    store<u32>(s, <u32>chunk, 4);
    segIdx++;
    cur += chunk;
    left -= chunk;
  }
  return segIdx;
}

/**
 * Translates a range that must be contiguous in one entry (ring areas, indirect tables, and
 * TypeScript's Iotlb.translate through the tlb_translate export). len 0 checks the one byte at
 * `iova`. Returns the memory offset, or -1 (as i64) when not mapped whole with `perm`.
 */
export function translateContig(tbl: usize, iova: u64, len: u64, perm: u32): i64 {
  const lastByte = iova + (len == 0 ? 0 : len - 1);
  if (lastByte < iova) return -1; // wraps past 2^64
  const i = findEntry(tbl, iova, perm);
  if (i < 0) return -1;
  const e = tbl + TLB_HDR + <usize>i * TLB_ENT;
  if (lastByte > load<u64>(e, 8)) return -1;
  return <i64>(load<u32>(e, 16) + <u32>(iova - load<u64>(e)));
}

/**
 * Copies len bytes. Small copies (the 64-byte frames of the hot path) use 16-byte SIMD moves
 * where the build has SIMD (8-byte moves otherwise); large ones use memory.copy.
 */
// @ts-ignore: decorator
@inline export function copyBytes(dst: usize, src: usize, len: u32): void {
  if (len <= 128) {
    let o: u32 = 0;
    if (ASC_FEATURE_SIMD) {
      while (o + 16 <= len) {
        v128.store(dst + o, v128.load(src + o));
        o += 16;
      }
    } else {
      while (o + 8 <= len) {
        store<u64>(dst + o, load<u64>(src + o));
        o += 8;
      }
    }
    while (o < len) {
      store<u8>(dst + o, load<u8>(src + o));
      o++;
    }
  } else {
    memory.copy(dst, src, len);
  }
}
