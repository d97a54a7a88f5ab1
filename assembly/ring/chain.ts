// Descriptor-chain walking shared by both layouts: the checks of VIRTIO 1.3 §2.7.5.2 (total
// length, readable-before-writable), §2.7.5.3 / §2.8.8 (indirect tables), and translation of
// every buffer through the device's map into chain/segment records (defs.ts).

import { translate, PERM_R, PERM_W } from "../mem";
import { CHAIN_REC, SEG_REC, DSEG_REC, VRING_DESC_F_WRITE } from "./defs";
import { STATUS_CHAIN_TOO_BIG, STATUS_WRITE_BEFORE_READ } from "../status";

// Chain record field offsets (defs.ts).
// @ts-ignore: decorator
@inline export const C_ID: u32 = 0;
// @ts-ignore: decorator
@inline export const C_NDESC: u32 = 4;
// @ts-ignore: decorator
@inline export const C_SEG: u32 = 8;
// @ts-ignore: decorator
@inline export const C_NREAD: u32 = 12;
// @ts-ignore: decorator
@inline export const C_NWRITE: u32 = 14;
// @ts-ignore: decorator
@inline export const C_RBYTES: u32 = 16;
// @ts-ignore: decorator
@inline export const C_WBYTES: u32 = 20;
// @ts-ignore: decorator
@inline export const C_WRITTEN: u32 = 24;
// @ts-ignore: decorator
@inline export const C_SAWWRITE: u32 = 28;

/** Largest indirect table we accept: 65536 descriptors (as vhost's get_indirect limit). */
// @ts-ignore: decorator
@inline export const INDIRECT_MAX_LEN: u32 = 65536 * 16;

/** Starts a chain record whose segments begin at segIdx. */
// @ts-ignore: decorator
@inline export function beginChain(rec: usize, segIdx: i32): void {
  store<u32>(rec, <u32>segIdx, C_SEG);
  store<u32>(rec, 0, C_NREAD); // nRead and nWrite (two u16)
  store<u64>(rec, 0, C_RBYTES); // readBytes and writeBytes
  store<u64>(rec, 0, C_WRITTEN); // written and the walk's saw-write flag
}

/**
 * Adds one data descriptor (addr, len, flags) to the chain in `rec`: enforces
 * readable-before-writable and the 2^32-1 byte total, translates the buffer with the
 * permission its direction needs. Returns the new segment count or a negative status
 * (SEG_FULL when the segment array is full).
 */
export function addData(tbl: usize, rec: usize, addr: u64, len: u32, flags: u32, segs: usize, segIdx: i32, maxSegs: i32): i32 {
  const rb = load<u32>(rec, C_RBYTES);
  const wb = load<u32>(rec, C_WBYTES);
  // VIRTIO 1.3 §2.7.5.2: drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total.
  if (<u64>rb + <u64>wb + <u64>len > 0xFFFF_FFFF) return STATUS_CHAIN_TOO_BIG;
  if (flags & VRING_DESC_F_WRITE) {
    const r = translate(tbl, addr, len, PERM_W, segs, segIdx, maxSegs);
    if (r < 0) return r;
    store<u16>(rec, load<u16>(rec, C_NWRITE) + <u16>(r - segIdx), C_NWRITE);
    store<u32>(rec, wb + len, C_WBYTES);
    store<u32>(rec, 1, C_SAWWRITE);
    return r;
  }
  // §2.7.4.2: a driver MUST place any device-writable descriptor after any device-readable one.
  if (load<u32>(rec, C_SAWWRITE) != 0) return STATUS_WRITE_BEFORE_READ;
  const r = translate(tbl, addr, len, PERM_R, segs, segIdx, maxSegs);
  if (r < 0) return r;
  store<u16>(rec, load<u16>(rec, C_NREAD) + <u16>(r - segIdx), C_NREAD);
  store<u32>(rec, rb + len, C_RBYTES);
  return r;
}

/** Address of chain record i. */
// @ts-ignore: decorator
@inline export function chainAt(chains: usize, i: i32): usize {
  return chains + <usize>i * CHAIN_REC;
}

/** Address of segment record i. */
// @ts-ignore: decorator
@inline export function segAt(segs: usize, i: u32): usize {
  return segs + <usize>i * SEG_REC;
}

/**
 * Fills chain record `rec` for a chain of one direct descriptor already translated to `addr`
 * (the hot path: no walk, no call). `write` says whether the buffer is device-writable.
 */
// @ts-ignore: decorator
@inline export function oneSegChain(rec: usize, id: u32, segs: usize, segIdx: i32, addr: u32, len: u32, write: bool): void {
  store<u64>(segAt(segs, <u32>segIdx), <u64>addr | (<u64>len << 32));
  store<u64>(rec, <u64>id | (<u64>1 << 32), C_ID); // id, ndesc = 1
  // segStart, then nRead/nWrite as two u16: one readable or one writable segment.
  store<u64>(rec, <u64>(<u32>segIdx) | (<u64>(write ? 1 << 16 : 1) << 32), C_SEG);
  store<u64>(rec, write ? <u64>len << 32 : <u64>len, C_RBYTES); // readBytes, writeBytes
  store<u64>(rec, write ? <u64>1 << 32 : 0, C_WRITTEN); // written 0, saw-write flag
}

/**
 * Driver side: checks that a request's readable segments precede its writable ones
 * (§2.7.4.2, before anything touches the ring). Returns the writable bytes, or -1.
 */
export function requestInLen(seg0: usize, nsegs: u32): i64 {
  let inLen: u64 = 0;
  let sawWrite = false;
  for (let j: u32 = 0; j < nsegs; j++) {
    const s = seg0 + <usize>j * DSEG_REC;
    if (load<u32>(s, 12) & 1) {
      sawWrite = true;
      inLen += load<u32>(s, 8);
    } else if (sawWrite) {
      return -1;
    }
  }
  return <i64>inLen;
}

/**
 * Copies up to `len` bytes between memory at `mem` and the segments [s0, s0 + n) of a popped
 * chain, starting `skip` bytes into them. toSegs: memory → segments (device writes the driver's
 * buffer); else segments → memory. Returns the bytes copied (less than len when the segments
 * end first). The segments were translated and checked at pop time; the device datapaths that
 * call this run in the same call as the pop, so the map cannot have changed in between.
 */
export function segCopy(segs: usize, s0: u32, n: u32, skip: u32, mem: usize, len: u32, toSegs: bool): u32 {
  let done: u32 = 0;
  for (let j: u32 = 0; j < n && done < len; j++) {
    const s = segAt(segs, s0 + j);
    let l = load<u32>(s, 4);
    if (skip >= l) {
      skip -= l;
      continue;
    }
    const a = <usize>load<u32>(s) + skip;
    l -= skip;
    skip = 0;
    if (l > len - done) l = len - done;
    if (toSegs) memory.copy(a, mem + done, l);
    else memory.copy(mem + done, a, l);
    done += l;
  }
  return done;
}
