// vdpasim_blk's request parser and RAM-disk datapath (VIRTIO 1.3 §5.2.6). One parser for both
// backends: blk_parse validates a batch of popped request chains and answers at once what needs
// no disk (malformed, unsupported, GET_ID), writing one record per request that says what the
// asynchronous TS backend must do; blk_serve runs the same parser and executes the records
// against a disk image in linear memory. A request is
// { le32 type; le32 reserved; le64 sector } + data + u8 status (the last writable byte).

import { chainAt, segAt, segCopy, C_SEG, C_NREAD, C_NWRITE, C_RBYTES, C_WBYTES, C_WRITTEN } from "../ring/chain";

// Request types and status values (linux/virtio_blk.h).
// @ts-ignore: decorator
@inline const T_IN: u32 = 0;
// @ts-ignore: decorator
@inline const T_OUT: u32 = 1;
// @ts-ignore: decorator
@inline const T_FLUSH: u32 = 4;
// @ts-ignore: decorator
@inline const T_GET_ID: u32 = 8;
// @ts-ignore: decorator
@inline const T_DISCARD: u32 = 11;
// @ts-ignore: decorator
@inline const T_WRITE_ZEROES: u32 = 13;
// @ts-ignore: decorator
@inline const S_OK: u8 = 0;
// @ts-ignore: decorator
@inline const S_IOERR: u8 = 1;
// @ts-ignore: decorator
@inline const S_UNSUPP: u8 = 2;
/** VIRTIO_BLK_ID_BYTES. */
// @ts-ignore: decorator
@inline const ID_BYTES: u32 = 20;
/** VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP. */
// @ts-ignore: decorator
@inline const F_UNMAP: u32 = 1;

// The constants below are mirrored in src/devices/blk.ts (BLK_FLAG, BLK_REQ, BLK_LIMITS);
// test/blk-parse-sync.test.ts checks them against this file.

/** blk_parse / blk_serve flag: the device is read-only (VIRTIO_BLK_F_RO offered). */
// @ts-ignore: decorator
@inline export const BLK_F_RO: u32 = 1;
/** Flag: VIRTIO_BLK_F_DISCARD negotiated. */
// @ts-ignore: decorator
@inline export const BLK_F_DISCARD: u32 = 2;
/** Flag: VIRTIO_BLK_F_WRITE_ZEROES negotiated. */
// @ts-ignore: decorator
@inline export const BLK_F_WRITE_ZEROES: u32 = 4;

/** max_discard_sectors and max_write_zeroes_sectors the device's config space offers. */
// @ts-ignore: decorator
@inline export const BLK_MAX_DISCARD_SECTORS: u32 = 65535;
/** max_discard_seg and max_write_zeroes_seg the config space offers. */
// @ts-ignore: decorator
@inline export const BLK_MAX_DISCARD_SEG: u32 = 16;

/**
 * size_max the config space offers (VIRTIO_BLK_F_SIZE_MAX): 64 KiB, Linux's default maximum
 * segment size (BLK_MAX_SEGMENT_SIZE in include/linux/blkdev.h), so a Linux guest keeps its usual
 * segments while one of our driver's 64 KiB descriptors still moves a lot per request.
 */
// @ts-ignore: decorator
@inline export const BLK_SIZE_MAX: u32 = 65536;
/**
 * Largest seg_max the config space offers (VIRTIO_BLK_F_SEG_MAX): 128, Linux's default
 * BLK_MAX_SEGMENTS; the device offers min(this, vq_num_max - 2) and passes the value it offers
 * in the flag word's bits BLK_F_SEG_SHIFT.. (see BLK_F_SEG_SHIFT).
 */
// @ts-ignore: decorator
@inline export const BLK_SEG_MAX: u32 = 128;
/**
 * blk_parse / blk_serve flag word: bits 16..31 carry the seg_max the config space offers. An IN
 * or OUT request whose data exceeds size_max × seg_max (the most a request may legitimately carry,
 * as Linux vdpa_sim_blk refuses requests over VDPASIM_BLK_SIZE_MAX × VDPASIM_BLK_SEG_MAX) is IOERR
 * before a byte of it is copied.
 */
// @ts-ignore: decorator
@inline export const BLK_F_SEG_SHIFT: u32 = 16;

/** Bytes of one blk_parse output record. */
// @ts-ignore: decorator
@inline export const BLK_REQ_REC: u32 = 32;
/** Record field (u32): BLK_ACT_DONE or BLK_ACT_BACKEND. */
// @ts-ignore: decorator
@inline export const BLK_R_ACTION: u32 = 0;
/** Record field (u32): request type (valid with BLK_ACT_BACKEND). */
// @ts-ignore: decorator
@inline export const BLK_R_TYPE: u32 = 4;
/** Record field (u64): first sector (IN / OUT). */
// @ts-ignore: decorator
@inline export const BLK_R_SECTOR: u32 = 8;
/** Record field (u32): data bytes, a multiple of 512 within the disk (IN: to read, OUT: to write). */
// @ts-ignore: decorator
@inline export const BLK_R_BYTES: u32 = 16;
/** Record field (u32): DISCARD / WRITE_ZEROES ranges (validated, ≤ BLK_MAX_DISCARD_SEG). */
// @ts-ignore: decorator
@inline export const BLK_R_NRANGES: u32 = 20;
/** Record field (u32): index of the first range in the ranges area. */
// @ts-ignore: decorator
@inline export const BLK_R_RANGE0: u32 = 24;
/** Record field (u32): offset of the status byte in the writable bytes (writeBytes - 1). */
// @ts-ignore: decorator
@inline export const BLK_R_STATUS_AT: u32 = 28;
/** Action: answered in wasm (status byte and written length set, or no status byte at all). */
// @ts-ignore: decorator
@inline export const BLK_ACT_DONE: u32 = 0;
/** Action: valid request the backend must execute; the status byte is not written yet. */
// @ts-ignore: decorator
@inline export const BLK_ACT_BACKEND: u32 = 1;
/** Bytes of one range in the ranges area: struct virtio_blk_discard_write_zeroes. */
// @ts-ignore: decorator
@inline export const BLK_RANGE_REC: u32 = 16;
/** Private scratch bytes blk_parse and blk_serve need: header + one record + one request's ranges. */
// @ts-ignore: decorator
@inline export const BLK_SCRATCH: u32 = 16 + 32 + 16 * 16;

/** True if [sector, sector + count) lies within the disk (no overflow). */
// @ts-ignore: decorator
@inline function inRange(sector: u64, count: u64, capacity: u64): bool {
  return sector <= capacity && count <= capacity - sector;
}

/**
 * Validates popped chain `rec` and writes its record at `out`. Requests that need no disk
 * (malformed → IOERR, unknown or not negotiated → UNSUPP, GET_ID) are answered here: status
 * byte and written length set, action BLK_ACT_DONE. Valid IN/OUT/FLUSH/DISCARD/WRITE_ZEROES get
 * BLK_ACT_BACKEND; their ranges go to `ranges` from index `r0`. Every length is checked before
 * anything is copied, so a request never makes us copy more than it can legitimately carry.
 * `hdr` is 16 bytes of private memory. Returns the number of ranges used.
 */
function parseOne(rec: usize, segs: usize, capacity: u64, flags: u32, id: usize, hdr: usize, out: usize, ranges: usize, r0: u32): u32 {
  const s0 = load<u32>(rec, C_SEG);
  const nr = <u32>load<u16>(rec, C_NREAD);
  const nw = <u32>load<u16>(rec, C_NWRITE);
  const rb = load<u32>(rec, C_RBYTES);
  const wb = load<u32>(rec, C_WBYTES);
  store<u32>(rec, 0, C_WRITTEN);
  store<u32>(out, BLK_ACT_DONE, BLK_R_ACTION);
  store<u32>(out, 0xffffffff, BLK_R_TYPE);
  store<u64>(out, 0, BLK_R_SECTOR);
  store<u32>(out, 0, BLK_R_BYTES);
  store<u32>(out, 0, BLK_R_NRANGES);
  store<u32>(out, r0, BLK_R_RANGE0);
  store<u32>(out, 0, BLK_R_STATUS_AT);
  if (wb == 0) return 0; // no status byte: nothing can be answered (§5.2.6.1 malformed)
  const inLen = wb - 1; // the status byte is the last writable byte
  store<u32>(out, inLen, BLK_R_STATUS_AT);
  let status = S_OK;
  let written: u32 = 0;
  let nranges: u32 = 0;
  let backend = false;
  // The most data one IN / OUT request may carry: size_max × seg_max, as offered.
  const maxData = <u64>BLK_SIZE_MAX * <u64>(flags >>> BLK_F_SEG_SHIFT);
  if (rb < 16) {
    status = S_IOERR;
  } else {
    segCopy(segs, s0, nr, 0, hdr, 16, false);
    const type = load<u32>(hdr);
    const sector = load<u64>(hdr, 8);
    const outLen = rb - 16;
    store<u32>(out, type, BLK_R_TYPE);
    if (type == T_IN) {
      if ((inLen & 511) != 0 || <u64>inLen > maxData || !inRange(sector, <u64>(inLen >> 9), capacity)) status = S_IOERR;
      else {
        store<u64>(out, sector, BLK_R_SECTOR);
        store<u32>(out, inLen, BLK_R_BYTES);
        backend = true;
      }
    } else if (type == T_OUT) {
      // Bounded by size_max × seg_max and by the disk: a chain whose readable bytes exceed
      // either is refused before a byte of it is gathered.
      if ((flags & BLK_F_RO) != 0 || (outLen & 511) != 0 || <u64>outLen > maxData || !inRange(sector, <u64>(outLen >> 9), capacity)) status = S_IOERR;
      else {
        store<u64>(out, sector, BLK_R_SECTOR);
        store<u32>(out, outLen, BLK_R_BYTES);
        backend = true;
      }
    } else if (type == T_FLUSH) {
      backend = true;
    } else if (type == T_GET_ID) {
      written = inLen < ID_BYTES ? inLen : ID_BYTES;
      segCopy(segs, s0 + nr, nw, 0, id, written, true);
    } else if (type == T_DISCARD || type == T_WRITE_ZEROES) {
      const wz = type == T_WRITE_ZEROES;
      if ((flags & (wz ? BLK_F_WRITE_ZEROES : BLK_F_DISCARD)) == 0) status = S_UNSUPP;
      else if ((flags & BLK_F_RO) != 0) status = S_IOERR;
      // At most max_discard_seg ranges of max_discard_sectors each, as the config space says;
      // the segment count is checked before any range is copied.
      else if (outLen == 0 || (outLen & 15) != 0 || (outLen >> 4) > BLK_MAX_DISCARD_SEG) status = S_IOERR;
      else {
        const cnt = outLen >> 4;
        const area = ranges + <usize>r0 * BLK_RANGE_REC;
        segCopy(segs, s0, nr, 16, area, outLen, false);
        // Every range is checked before any is applied: a bad one changes nothing.
        for (let k: u32 = 0; k < cnt && status == S_OK; k++) {
          const r = area + <usize>k * BLK_RANGE_REC;
          const sec = load<u64>(r);
          const num = <u64>load<u32>(r, 8);
          const fl = load<u32>(r, 12);
          // §5.2.6.2: UNSUPP for discard with the unmap flag, or unknown flag bits.
          if ((!wz && fl != 0) || (wz && (fl & ~F_UNMAP) != 0)) status = S_UNSUPP;
          else if (num > <u64>BLK_MAX_DISCARD_SECTORS || !inRange(sec, num, capacity)) status = S_IOERR;
        }
        if (status == S_OK) {
          nranges = cnt;
          store<u32>(out, cnt, BLK_R_NRANGES);
          backend = true;
        }
      }
    } else {
      status = S_UNSUPP;
    }
  }
  if (backend) {
    store<u32>(out, BLK_ACT_BACKEND, BLK_R_ACTION);
    return nranges;
  }
  // The status byte: the last byte of the writable segments.
  store<u8>(hdr, status);
  segCopy(segs, s0 + nr, nw, inLen, hdr, 1, true);
  store<u32>(rec, written + 1, C_WRITTEN);
  return 0;
}

/**
 * Parses chains [0, n) (see parseOne) into n records of BLK_REQ_REC bytes at `out`, with the
 * ranges of DISCARD / WRITE_ZEROES requests at `ranges` (room for n × BLK_MAX_DISCARD_SEG
 * ranges). `id` points at the 20-byte GET_ID string, `scratch` at BLK_SCRATCH private bytes.
 * Returns n.
 */
export function blkParse(chains: usize, n: i32, segs: usize, capacity: u64, flags: u32, id: usize, out: usize, ranges: usize, scratch: usize): i32 {
  let r: u32 = 0;
  for (let i: i32 = 0; i < n; i++) {
    r += parseOne(chainAt(chains, i), segs, capacity, flags, id, scratch, out + <usize>i * BLK_REQ_REC, ranges, r);
  }
  return n;
}

/**
 * Serves chains [0, n) popped from the request queue against the disk at `disk` (capacity in
 * 512-byte sectors): the same parser as blkParse, then the RAM disk executes each record.
 * Sets each chain's written length and status byte. `scratch`: BLK_SCRATCH bytes. Returns n.
 */
export function blkServe(chains: usize, n: i32, segs: usize, disk: usize, capacity: u64, flags: u32, id: usize, scratch: usize): i32 {
  const out = scratch + 16;
  const ranges = scratch + 16 + BLK_REQ_REC;
  for (let i: i32 = 0; i < n; i++) {
    const rec = chainAt(chains, i);
    const cnt = parseOne(rec, segs, capacity, flags, id, scratch, out, ranges, 0);
    if (load<u32>(out, BLK_R_ACTION) != BLK_ACT_BACKEND) continue;
    const s0 = load<u32>(rec, C_SEG);
    const nr = <u32>load<u16>(rec, C_NREAD);
    const nw = <u32>load<u16>(rec, C_NWRITE);
    const type = load<u32>(out, BLK_R_TYPE);
    const at = disk + <usize>(load<u64>(out, BLK_R_SECTOR) << 9);
    const bytes = load<u32>(out, BLK_R_BYTES);
    let written: u32 = 0;
    if (type == T_IN) {
      segCopy(segs, s0 + nr, nw, 0, at, bytes, true);
      written = bytes;
    } else if (type == T_OUT) {
      segCopy(segs, s0, nr, 16, at, bytes, false);
    } else if (type == T_DISCARD || type == T_WRITE_ZEROES) {
      // Discarded sectors read back as zeros here (allowed: their content is undefined).
      for (let k: u32 = 0; k < cnt; k++) {
        const r = ranges + <usize>k * BLK_RANGE_REC;
        memory.fill(disk + <usize>(load<u64>(r) << 9), 0, <usize>(<u64>load<u32>(r, 8) << 9));
      }
    } // T_FLUSH: a RAM disk has no cache to write back.
    store<u8>(scratch, S_OK);
    segCopy(segs, s0 + nr, nw, load<u32>(out, BLK_R_STATUS_AT), scratch, 1, true);
    store<u32>(rec, written + 1, C_WRITTEN);
  }
  return n;
}
