// The wasm export surface of vdpa-wasm's data plane (VIRTIO 1.3 §2.7 split, §2.8 packed).
// Every export takes the offset of a queue state block (ring/state.ts) and works on one batch;
// TypeScript (src/ring/) lays the memory out and calls these once per batch, never per
// descriptor. Nothing here allocates: all state lives in memory the caller owns.

import {
  Q_SIZE, Q_FLAGS, Q_STATUS, Q_IOTLB, Q_AVAIL, Q_AVAIL_WRAP, Q_USED, Q_USED_WRAP, Q_SIGNALLED,
  Q_PENDING, Q_FREE_HEAD, Q_NUM_FREE, Q_BATCH_ID, Q_BATCH_LEN, Q_NEXT_HEAD, Q_EVENT_SHADOW,
  Q_STAT_CHAINS, Q_INFLIGHT, Q_F_PACKED, Q_F_SIG_VALID, Q_F_CB_OFF,
} from "./ring/state";
import * as split from "./ring/split";
import * as packed from "./ring/packed";
import { STATUS_BROKEN, STATUS_INVALID_ARG } from "./status";
import { copyBytes, translateContig } from "./mem";
import { chainAt, segAt, C_SEG, C_NREAD, C_NWRITE, C_WRITTEN } from "./ring/chain";
import { blkServe, blkParse } from "./dev/blk";
import { netCtrl, netFilter, netFilterStaged, netLoop, netPlace } from "./dev/net";
import { dirtyOn, dirtyLogSet, dirtyMark, dirtyMarkChains, dirtyMarkRing } from "./dirty";

export * from "./status";

// @ts-ignore: decorator
@inline function isPacked(q: usize): bool { return (load<u32>(q, Q_FLAGS) & Q_F_PACKED) != 0; }
// @ts-ignore: decorator
@inline function broken(q: usize): bool { return load<i32>(q, Q_STATUS) != 0; }

/** Layout version of the state block and records; TS refuses a module that differs. */
export function abi_version(): i32 { return 2; }

// ─────────────────────────── device side ───────────────────────────

/** Resets the device-side indices (split: 0/0; packed: slot 0, wrap counters 1) and the broken flag. */
export function dev_reset(q: usize): void {
  store<i32>(q, 0, Q_STATUS);
  store<u32>(q, 0, Q_AVAIL);
  store<u32>(q, 0, Q_USED);
  store<u32>(q, 1, Q_AVAIL_WRAP);
  store<u32>(q, 1, Q_USED_WRAP);
  store<u32>(q, 0, Q_SIGNALLED);
  store<u32>(q, 0, Q_PENDING);
  store<u32>(q, load<u32>(q, Q_FLAGS) & ~Q_F_SIG_VALID, Q_FLAGS);
  memory.fill(q + Q_STAT_CHAINS, 0, 32);
}

/**
 * Pops up to maxChains chains into chain records and at most maxSegs segments.
 * Returns chains popped (0: empty), or a negative status: STATUS_BROKEN if the queue was
 * already broken, else the peer error that broke it now.
 */
export function dev_pop(q: usize, chains: usize, maxChains: i32, segs: usize, maxSegs: i32): i32 {
  if (broken(q)) return STATUS_BROKEN;
  const tbl = <usize>load<u32>(q, Q_IOTLB);
  const n = isPacked(q)
    ? packed.devPop(q, tbl, chains, maxChains, segs, maxSegs)
    : split.devPop(q, tbl, chains, maxChains, segs, maxSegs);
  if (dirtyOn && n > 0) dirtyMarkChains(chains, n, segs); // the buffers this pass may write (dirty.ts)
  return n;
}

/**
 * Returns n chains (records from dev_pop, `written` filled in) to the driver as used.
 * inOrderBatch != 0 writes one used element for the batch (only with VIRTIO_F_IN_ORDER).
 * Returns n, STATUS_BROKEN, or STATUS_INVALID_ARG (a record that dev_pop cannot have made).
 */
export function dev_push(q: usize, chains: usize, n: i32, inOrderBatch: i32): i32 {
  if (broken(q)) return STATUS_BROKEN;
  if (n <= 0) return n == 0 ? 0 : STATUS_INVALID_ARG;
  const r = isPacked(q) ? packed.devPush(q, chains, n, inOrderBatch != 0) : split.devPush(q, chains, n, inOrderBatch != 0);
  if (dirtyOn) dirtyMarkRing(q); // used entries (dirty.ts)
  return r;
}

/** Whether to notify the driver of used buffers now (event idx / flags). Returns 1 or 0. */
export function dev_need_call(q: usize): i32 {
  if (broken(q)) return 0;
  return isPacked(q) ? packed.devNeedCall(q) : split.devNeedCall(q);
}

/** Enables kicks from the driver. Returns 1 if buffers are already available (poll again). */
export function dev_enable_kick(q: usize): i32 {
  if (broken(q)) return 0;
  if (dirtyOn) dirtyMarkRing(q); // used flags / avail_event (dirty.ts)
  return isPacked(q) ? packed.devEnableKick(q) : split.devEnableKick(q);
}

/** Disables kicks from the driver. */
export function dev_disable_kick(q: usize): void {
  if (broken(q)) return;
  if (dirtyOn) dirtyMarkRing(q); // used flags (dirty.ts)
  if (isPacked(q)) packed.devDisableKick(q); else split.devDisableKick(q);
}

/** Split: number of chains available; packed: 1 if one is available. 0 when broken. */
export function dev_available(q: usize): i32 {
  if (broken(q)) return 0;
  return isPacked(q) ? packed.devAvailable(q) : split.devAvailable(q);
}

/**
 * Gathers the device-readable bytes of chains [0, n) into dst + i*stride (at most stride
 * bytes each). Returns the total bytes copied.
 */
export function dev_copy_out(chains: usize, n: i32, segs: usize, dst: usize, stride: u32): u32 {
  let total: u32 = 0;
  for (let i: i32 = 0; i < n; i++) {
    const rec = chainAt(chains, i);
    const s0 = load<u32>(rec, C_SEG);
    const nr = <u32>load<u16>(rec, C_NREAD);
    let out = dst + <usize>i * stride;
    let room = stride;
    for (let j: u32 = 0; j < nr && room != 0; j++) {
      const s = segAt(segs, s0 + j);
      let len = load<u32>(s, 4);
      if (len > room) len = room;
      copyBytes(out, <usize>load<u32>(s), len);
      out += len;
      room -= len;
    }
    total += stride - room;
  }
  return total;
}

/**
 * Scatters src + i*stride (lens[i] bytes, u32 each, at most the chain's writable size) into
 * the device-writable segments of chains [0, n) and sets each record's `written`.
 * Returns the total bytes written.
 */
export function dev_copy_in(chains: usize, n: i32, segs: usize, src: usize, stride: u32, lens: usize): u32 {
  let total: u32 = 0;
  for (let i: i32 = 0; i < n; i++) {
    const rec = chainAt(chains, i);
    const s0 = load<u32>(rec, C_SEG) + <u32>load<u16>(rec, C_NREAD);
    const nw = <u32>load<u16>(rec, C_NWRITE);
    let left = load<u32>(lens + (<usize>i << 2));
    if (left > stride) left = stride;
    let from = src + <usize>i * stride;
    let done: u32 = 0;
    for (let j: u32 = 0; j < nw && left != 0; j++) {
      const s = segAt(segs, s0 + j);
      let len = load<u32>(s, 4);
      if (len > left) len = left;
      copyBytes(<usize>load<u32>(s), from, len);
      from += len;
      left -= len;
      done += len;
    }
    store<u32>(rec, done, C_WRITTEN);
    total += done;
  }
  return total;
}

// ─────────────────────────── address translation ───────────────────────────

/**
 * Translates [iova, iova + len) through the IOTLB table at `tbl` (mem.ts layout), which must
 * hold it in one entry granting `perm`; len 0 checks the one byte at iova. This is the one
 * IOVA walk: the data plane uses it per descriptor and TypeScript's Iotlb.translate calls it.
 * The IOVA comes as two u32 halves and len as an f64 (a JS number) so that no BigInt crosses
 * the boundary. Returns the memory offset, or -1 when not mapped so (also for a len that is
 * not an integer in 0..2^53-1, so bad input never traps).
 */
export function tlb_translate(tbl: usize, iovaLo: u32, iovaHi: u32, len: f64, perm: u32): f64 {
  if (!(len >= 0 && len <= 9007199254740991.0) || len != Math.floor(len)) return -1;
  return <f64>translateContig(tbl, (<u64>iovaHi << 32) | <u64>iovaLo, <u64>len, perm);
}

// ─────────────────────────── device datapaths ───────────────────────────

/**
 * virtio-blk RAM disk: serves popped request chains [0, n) against the disk at `disk`
 * (capacity sectors of 512 bytes; capacity passed as two u32 halves), flags: BLK_F_RO,
 * BLK_F_DISCARD, BLK_F_WRITE_ZEROES (assembly/dev/blk.ts). Sets written lengths and status
 * bytes; `scratch`: BLK_SCRATCH private bytes.
 * Returns n.
 */
export function blk_serve(chains: usize, n: i32, segs: usize, disk: usize, capLo: u32, capHi: u32, flags: u32, id: usize, scratch: usize): i32 {
  if (n <= 0) return 0;
  return blkServe(chains, n, segs, disk, (<u64>capHi << 32) | <u64>capLo, flags, id, scratch);
}

/**
 * virtio-blk request parser for asynchronous backends: validates popped chains [0, n) exactly
 * as blk_serve does, answers at once those that need no disk (status byte and written length
 * set), and writes one 32-byte record per chain at `out` (see assembly/dev/blk.ts BLK_R_*)
 * plus DISCARD / WRITE_ZEROES ranges at `ranges` (room for n × 16 ranges of 16 bytes).
 * `scratch`: BLK_SCRATCH private bytes. Returns n.
 */
export function blk_parse(chains: usize, n: i32, segs: usize, capLo: u32, capHi: u32, flags: u32, id: usize, out: usize, ranges: usize, scratch: usize): i32 {
  if (n <= 0) return 0;
  return blkParse(chains, n, segs, (<u64>capHi << 32) | <u64>capLo, flags, id, out, ranges, scratch);
}

/**
 * virtio-net control queue: runs popped commands [0, n) against the filter block (the
 * device's whole control state) and writes their acks. `scratch`: 1 KiB. Returns n.
 */
export function net_ctrl(chains: usize, n: i32, segs: usize, filter: usize, scratch: usize): i32 {
  if (n <= 0) return 0;
  return netCtrl(chains, n, segs, filter, scratch);
}

/**
 * virtio-net receive filter over popped tx chains [0, n): writes a verdict byte per chain
 * (1 deliver, 0 filtered, 2 not a frame). Returns how many are to be delivered.
 */
export function net_filter(chains: usize, n: i32, segs: usize, filter: usize, maxLen: u32, verdict: usize, scratch: usize): i32 {
  if (n <= 0) return 0;
  return netFilter(chains, n, segs, filter, maxLen, verdict, scratch);
}

/**
 * virtio-net receive filter over n frames staged at base + i·stride (lens: u32 each):
 * compacts the accepted ones to the front. Returns how many were accepted.
 */
export function net_filter_staged(base: usize, stride: u32, lens: usize, n: i32, filter: usize, scratch: usize): i32 {
  if (n <= 0) return 0;
  return netFilterStaged(base, stride, lens, n, filter, scratch);
}

/**
 * virtio-net loopback: copies tx chains with verdict 1 into rx chains [0, m) (fresh header,
 * num_buffers 1); too-big frames are dropped without using a buffer, and unused rx chains go
 * back to the ring rxq. Updates stats {delivered, bytes, too big, tx looked at}. Returns rx chains used.
 */
export function net_loop(tx: usize, n: i32, txSegs: usize, verdict: usize, rxq: usize, rx: usize, m: i32, rxSegs: usize, stats: usize, scratch: usize): i32 {
  if (n <= 0 || m <= 0) return 0;
  return netLoop(tx, n, txSegs, verdict, rxq, rx, m, rxSegs, stats, scratch);
}

/**
 * virtio-net rx from staged frames: places n frames (base + j·stride, lens) into rx chains
 * [0, m) in order, as net_loop does. Updates stats {delivered, bytes, too big, frames consumed}.
 * Returns rx chains used.
 */
export function net_place(base: usize, stride: u32, lens: usize, n: i32, rxq: usize, rx: usize, m: i32, rxSegs: usize, stats: usize): i32 {
  if (n <= 0 || m <= 0) return 0;
  return netPlace(base, stride, lens, n, rxq, rx, m, rxSegs, stats);
}

// ─────────────────────────── driver side ───────────────────────────

/** Resets the driver side: zeroes its ring areas, frees every descriptor, clears counters. */
export function drv_init(q: usize): void {
  store<i32>(q, 0, Q_STATUS);
  store<u32>(q, 0, Q_AVAIL);
  store<u32>(q, 0, Q_USED);
  store<u32>(q, 1, Q_AVAIL_WRAP);
  store<u32>(q, 1, Q_USED_WRAP);
  store<u32>(q, 0, Q_PENDING);
  store<u32>(q, 0, Q_FREE_HEAD);
  store<u32>(q, load<u32>(q, Q_SIZE), Q_NUM_FREE);
  store<u32>(q, 0xFFFF_FFFF, Q_BATCH_ID);
  store<u32>(q, 0, Q_BATCH_LEN);
  store<u32>(q, 0, Q_NEXT_HEAD);
  store<u32>(q, 0, Q_EVENT_SHADOW);
  store<u32>(q, load<u32>(q, Q_FLAGS) & ~Q_F_CB_OFF, Q_FLAGS);
  memory.fill(q + Q_STAT_CHAINS, 0, 32);
  store<u32>(q, 0, Q_INFLIGHT);
  if (isPacked(q)) packed.drvInit(q); else split.drvInit(q);
}

/**
 * Adds up to n requests as chains and publishes them with one index/flags store.
 * Returns the number added and published: fewer than n when the ring is full or request k is
 * malformed (no segments, writable before readable, more descriptors than the queue size);
 * the batch then ends after the k good ones. STATUS_BROKEN, or STATUS_INVALID_ARG when the
 * first request is malformed (nothing is touched; the caller drops it).
 */
export function drv_add(q: usize, reqs: usize, n: i32, dsegs: usize): i32 {
  if (broken(q)) return STATUS_BROKEN;
  if (n <= 0) return n == 0 ? 0 : STATUS_INVALID_ARG;
  return isPacked(q) ? packed.drvAdd(q, reqs, n, dsegs) : split.drvAdd(q, reqs, n, dsegs);
}

/** Whether the device needs a kick for the buffers added since the last call. Returns 1 or 0. */
export function drv_kick_prepare(q: usize): i32 {
  if (broken(q)) return 0;
  return isPacked(q) ? packed.drvKickPrepare(q) : split.drvKickPrepare(q);
}

/**
 * Reclaims up to max used buffers into used records {token, len}. Returns the number
 * reclaimed (0: none), STATUS_BROKEN, or the peer error that broke the queue now. A bad used
 * entry after k > 0 good ones breaks the queue and returns k: the good ones are reclaimed, the
 * next call reports the error.
 */
export function drv_get_used(q: usize, out: usize, max: i32): i32 {
  if (broken(q)) return STATUS_BROKEN;
  return isPacked(q) ? packed.drvGetUsed(q, out, out + 4, 8, max) : split.drvGetUsed(q, out, out + 4, 8, max);
}

/** Enables used-buffer notifications. Returns 1 if used buffers are already pending. */
export function drv_enable_cb(q: usize): i32 {
  if (broken(q)) return 0;
  return isPacked(q) ? packed.drvEnableCb(q) : split.drvEnableCb(q);
}

/** Disables used-buffer notifications. */
export function drv_disable_cb(q: usize): void {
  if (broken(q)) return;
  if (isPacked(q)) packed.drvDisableCb(q); else split.drvDisableCb(q);
}

/** Split: used buffers the device claims are pending; packed: 1 if one is. */
export function drv_used_pending(q: usize): i32 {
  if (broken(q)) return 0;
  return isPacked(q) ? packed.drvUsedPending(q) : split.drvUsedPending(q);
}

/**
 * Detaches up to max buffers still in flight (virtqueue_detach_unused_buf), writing their
 * tokens to out (u32 each). Returns the number detached; call drv_init afterwards.
 */
export function drv_detach_unused(q: usize, st: usize, out: usize, max: i32): i32 {
  const size = load<u32>(q, Q_SIZE);
  let k: i32 = 0;
  for (let i: u32 = 0; i < size && k < max; i++) {
    const s = st + <usize>i * 16;
    if (load<u32>(s, 4) != 0) {
      store<u32>(out + (<usize>k << 2), load<u32>(s));
      store<u32>(s, 0, 4);
      k++;
    }
  }
  return k;
}

// ─────────────────────────── fused verbs (issue 11) ───────────────────────────

/**
 * The fused device pass: serves up to max available chains of one direct device-readable
 * descriptor (1..stride bytes; any length when stride is 0) in one call: the checks and
 * translation of dev_pop, the copy to dst + i*stride (when stride != 0), the length to lens[i]
 * (u32, when lens != 0), the used element {id, 0}, one publish, and the notification decision
 * of dev_need_call. Stops before the first chain that is anything else; dev_pop takes it from
 * there (and reports any error in it). At most 65536 chains per call. Returns (served << 2) | (stopped at such a chain << 1)
 * | (notify the driver now), STATUS_BROKEN, or the peer error that broke the queue now.
 */
export function dev_serve(q: usize, max: i32, dst: usize, stride: u32, lens: usize): i32 {
  if (broken(q)) return STATUS_BROKEN;
  if (max <= 0) return max == 0 ? 0 : STATUS_INVALID_ARG;
  if (max > 65536) max = 65536; // the count must fit the result's bits 2..31
  const tbl = <usize>load<u32>(q, Q_IOTLB);
  const r = isPacked(q) ? packed.devServe(q, tbl, max, dst, stride, lens) : split.devServe(q, tbl, max, dst, stride, lens);
  // Only device-readable chains are served, so the driver memory this pass writes is the used
  // ring (entries, packed flags); dst and lens are the device's own memory (dirty.ts skips
  // offsets outside the logged guest RAM, and logs them if the caller put them inside it).
  if (dirtyOn && r > 0) {
    dirtyMarkRing(q);
    const served = <u32>r >> 2;
    if (stride != 0 && served > 0) dirtyMark(dst, served * stride);
    if (lens != 0 && served > 0) dirtyMark(lens, served << 2);
  }
  return r;
}

/**
 * Adds up to n one-buffer chains from 16-byte buffer records {u64 addr, u32 len, u32 token}
 * (device-writable when flags bit 0 is set) and publishes them with one store; with flags bit 1
 * also decides the kick (drv_kick_prepare). Stops when the ring is full.
 * Returns (added << 1) | (kick the device now), STATUS_BROKEN or STATUS_INVALID_ARG.
 */
export function drv_add_bufs(q: usize, bufs: usize, n: i32, flags: u32): i32 {
  if (broken(q)) return STATUS_BROKEN;
  if (n <= 0) return n == 0 ? 0 : STATUS_INVALID_ARG;
  return isPacked(q) ? packed.drvAddBufs(q, bufs, n, flags) : split.drvAddBufs(q, bufs, n, flags);
}

/**
 * Reclaims up to max used buffers into a token array (u32 each) and, when lens != 0, a length
 * array. Same checks and results as drv_get_used.
 */
export function drv_reclaim(q: usize, tokens: usize, lens: usize, max: i32): i32 {
  if (broken(q)) return STATUS_BROKEN;
  return isPacked(q) ? packed.drvGetUsed(q, tokens, lens, 4, max) : split.drvGetUsed(q, tokens, lens, 4, max);
}

// ─────────────────────────── dirty-page logging (dirty.ts) ───────────────────────────

/**
 * Starts dirty-page logging into the vhost-layout bitmap at `bitmap` for guest RAM
 * [base, base + pages * 4096); pages 0 stops it. Per module instance.
 */
export function dirty_log_set(bitmap: usize, base: usize, pages: u32): void {
  dirtyLogSet(bitmap, base, pages);
}

/** Marks [addr, addr + len) dirty (for device writes made outside wasm). No-op when logging is off. */
export function dirty_mark(addr: usize, len: u32): void {
  if (dirtyOn) dirtyMark(addr, len);
}
