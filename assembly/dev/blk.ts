// vdpasim_blk's RAM-disk datapath (VIRTIO 1.3 §5.2.6): serves a batch of popped request
// chains against a disk image in linear memory, all in wasm. A request is
// { le32 type; le32 reserved; le64 sector } + data + u8 status (the last writable byte).

import { chainAt, segAt, C_SEG, C_NREAD, C_NWRITE, C_RBYTES, C_WBYTES, C_WRITTEN } from "../ring/chain";

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

/** blk_serve flag bits. */
// @ts-ignore: decorator
@inline export const BLK_RO: u32 = 1;
// @ts-ignore: decorator
@inline export const BLK_DISCARD: u32 = 2;
// @ts-ignore: decorator
@inline export const BLK_WRITE_ZEROES: u32 = 4;

/**
 * Copies `len` bytes between memory at `mem` and the segments [s0, s0 + n) of a chain,
 * starting `skip` bytes into them. toSegs: memory → segments; else segments → memory.
 */
function segCopy(segs: usize, s0: u32, n: u32, skip: u32, mem: usize, len: u32, toSegs: bool): void {
  for (let j: u32 = 0; j < n && len != 0; j++) {
    const s = segAt(segs, s0 + j);
    let a = <usize>load<u32>(s);
    let l = load<u32>(s, 4);
    if (skip >= l) {
      skip -= l;
      continue;
    }
    a += skip;
    l -= skip;
    skip = 0;
    if (l > len) l = len;
    if (toSegs) memory.copy(a, mem, l);
    else memory.copy(mem, a, l);
    mem += l;
    len -= l;
  }
}

/** True if [sector, sector + count) lies within the disk (no overflow). */
// @ts-ignore: decorator
@inline function inRange(sector: u64, count: u64, capacity: u64): bool {
  return sector <= capacity && count <= capacity - sector;
}

/**
 * Serves chains [0, n) popped from the request queue against the disk at `disk` (capacity in
 * 512-byte sectors), setting each chain's written length and status byte. `id` points at the
 * 20-byte GET_ID string, `scratch` at 16 bytes of private memory. Returns n.
 */
export function blkServe(chains: usize, n: i32, segs: usize, disk: usize, capacity: u64, flags: u32, id: usize, scratch: usize): i32 {
  for (let i: i32 = 0; i < n; i++) {
    const rec = chainAt(chains, i);
    const s0 = load<u32>(rec, C_SEG);
    const nr = <u32>load<u16>(rec, C_NREAD);
    const nw = <u32>load<u16>(rec, C_NWRITE);
    const rb = load<u32>(rec, C_RBYTES);
    const wb = load<u32>(rec, C_WBYTES);
    store<u32>(rec, 0, C_WRITTEN);
    if (wb == 0) continue; // no status byte: nothing can be answered (§5.2.6.1 malformed)
    const inLen = wb - 1; // the status byte is the last writable byte
    let status = S_OK;
    let written: u32 = 0;
    if (rb < 16) {
      status = S_IOERR;
    } else {
      segCopy(segs, s0, nr, 0, scratch, 16, false);
      const type = load<u32>(scratch);
      const sector = load<u64>(scratch, 8);
      const outLen = rb - 16;
      if (type == T_IN) {
        if ((inLen & 511) != 0 || !inRange(sector, <u64>(inLen >> 9), capacity)) status = S_IOERR;
        else {
          segCopy(segs, s0 + nr, nw, 0, disk + <usize>(sector << 9), inLen, true);
          written = inLen;
        }
      } else if (type == T_OUT) {
        if ((flags & BLK_RO) != 0 || (outLen & 511) != 0 || !inRange(sector, <u64>(outLen >> 9), capacity)) status = S_IOERR;
        else segCopy(segs, s0, nr, 16, disk + <usize>(sector << 9), outLen, false);
      } else if (type == T_FLUSH) {
        // A RAM disk has no cache to write back.
      } else if (type == T_GET_ID) {
        written = inLen < ID_BYTES ? inLen : ID_BYTES;
        segCopy(segs, s0 + nr, nw, 0, id, written, true);
      } else if (type == T_DISCARD || type == T_WRITE_ZEROES) {
        const wz = type == T_WRITE_ZEROES;
        if ((flags & (wz ? BLK_WRITE_ZEROES : BLK_DISCARD)) == 0) status = S_UNSUPP;
        else if ((flags & BLK_RO) != 0) status = S_IOERR;
        // At most max_discard_seg (16) ranges of max_discard_sectors (0xffff) each, as the
        // config space says (src/devices/blk.ts).
        else if (outLen == 0 || (outLen & 15) != 0 || (outLen >> 4) > 16) status = S_IOERR;
        else {
          // First check every range, then apply: a bad segment changes nothing.
          const cnt = outLen >> 4;
          for (let k: u32 = 0; k < cnt && status == S_OK; k++) {
            segCopy(segs, s0, nr, 16 + (k << 4), scratch, 16, false);
            const sec = load<u64>(scratch);
            const num = <u64>load<u32>(scratch, 8);
            const fl = load<u32>(scratch, 12);
            // §5.2.6.2: UNSUPP for discard with the unmap flag, or unknown flag bits.
            if ((!wz && fl != 0) || (wz && (fl & ~F_UNMAP) != 0)) status = S_UNSUPP;
            else if (num > 0xffff || !inRange(sec, num, capacity)) status = S_IOERR;
          }
          for (let k: u32 = 0; k < cnt && status == S_OK; k++) {
            segCopy(segs, s0, nr, 16 + (k << 4), scratch, 16, false);
            // Discarded sectors read back as zeros here (allowed: their content is undefined).
            memory.fill(disk + <usize>(load<u64>(scratch) << 9), 0, <usize>(<u64>load<u32>(scratch, 8) << 9));
          }
        }
      } else {
        status = S_UNSUPP;
      }
    }
    // The status byte: the last byte of the writable segments.
    store<u8>(scratch, status);
    segCopy(segs, s0 + nr, nw, inLen, scratch, 1, true);
    store<u32>(rec, written + 1, C_WRITTEN);
  }
  return n;
}
