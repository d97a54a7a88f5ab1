// Split virtqueue, VIRTIO 1.3 §2.7: the device side (what Linux vringh/vhost do) and the
// driver side (what Linux virtio_ring.c does), over rings at memory offsets in the QSB.
//
//   descriptor table (align 16): N x { le64 addr; le32 len; le16 flags; le16 next }
//   avail ring (align 2):  flags | idx | ring[N] | used_event      (driver -> device)
//   used ring  (align 4):  flags | idx | {id,len}[N] | avail_event  (device -> driver)
//
// Indices (avail->idx, used->idx, last_avail_idx, last_used_idx) are free-running u16.

import {
  Q_SIZE, Q_FLAGS, Q_DESC, Q_DRIVER, Q_DEVICE, Q_AVAIL, Q_USED, Q_SIGNALLED, Q_PENDING,
  Q_FREE_HEAD, Q_NUM_FREE, Q_DSTATE, Q_INDIRECT, Q_INDIRECT_MAX, Q_DMA_BASE, Q_BATCH_ID,
  Q_BATCH_LEN, Q_NEXT_HEAD, Q_EVENT_SHADOW, Q_STAT_CHAINS, Q_STAT_DESCS, Q_STAT_USED, Q_STAT_NOTIFY, Q_INFLIGHT,
  Q_F_EVENT_IDX, Q_F_INDIRECT, Q_F_IN_ORDER, Q_F_SIG_VALID, Q_F_CB_OFF,
  fail, addStat, needEvent,
} from "./state";
import {
  VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT, VRING_USED_F_NO_NOTIFY,
  VRING_AVAIL_F_NO_INTERRUPT, AVAIL_IDX, AVAIL_RING, USED_IDX, USED_RING, REQ_REC, DSEG_REC,
  USED_REC, DSTATE_REC,
} from "./defs";
import {
  STATUS_HEAD_OUT_OF_RANGE, STATUS_NEXT_OUT_OF_RANGE, STATUS_CHAIN_TOO_LONG, STATUS_INDIRECT_NESTED,
  STATUS_INDIRECT_INVALID, STATUS_ADDRESS_UNMAPPED, STATUS_AVAIL_IDX_INVALID, STATUS_USED_ID_INVALID,
  STATUS_USED_ID_NOT_INFLIGHT, STATUS_USED_IDX_INVALID, STATUS_TOO_MANY_SEGMENTS, STATUS_INVALID_ARG,
} from "../status";
import { translateContig, findEntry, copyBytes, PERM_R, PERM_W, SEG_FULL, TLB_HDR, TLB_ENT } from "../mem";
import { ald16, ast16 } from "../sync";
import { beginChain, addData, chainAt, oneSegChain, requestInLen, INDIRECT_MAX_LEN, C_ID, C_NDESC, C_WRITTEN } from "./chain";

// ───────────────────────────── device side ─────────────────────────────

/**
 * Walks the chain starting at `head` into chain record `rec` and segments from segIdx.
 * Returns the new segment count or a negative status.
 */
function walk(q: usize, tbl: usize, head: u32, rec: usize, segs: usize, segIdx: i32, maxSegs: i32): i32 {
  const size = load<u32>(q, Q_SIZE);
  let table = <usize>load<u32>(q, Q_DESC);
  let max = size;
  let i = head;
  let count: u32 = 0;
  let ndesc: u32 = 0;
  let inIndirect = false;
  beginChain(rec, segIdx);
  while (true) {
    // A chain longer than its table must revisit a descriptor: a loop (§2.7.5.2).
    if (++count > max) return STATUS_CHAIN_TOO_LONG;
    const d = table + (<usize>i << 4);
    const flags = <u32>load<u16>(d, 12);
    if (!inIndirect) ndesc++;
    if (flags & VRING_DESC_F_INDIRECT) {
      // §2.7.5.3.1: the driver MUST NOT set INDIRECT within an indirect table, MUST NOT set
      // both INDIRECT and NEXT, and MUST NOT use INDIRECT unless it was negotiated.
      if (inIndirect) return STATUS_INDIRECT_NESTED;
      if ((flags & VRING_DESC_F_NEXT) || !(load<u32>(q, Q_FLAGS) & Q_F_INDIRECT)) return STATUS_INDIRECT_INVALID;
      const len = load<u32>(d, 8);
      if (len == 0 || (len & 15) != 0 || len > INDIRECT_MAX_LEN) return STATUS_INDIRECT_INVALID;
      const t = translateContig(tbl, load<u64>(d), len, PERM_R);
      if (t < 0) return STATUS_ADDRESS_UNMAPPED;
      table = <usize>t;
      max = len >> 4;
      i = 0;
      count = 0;
      inIndirect = true;
      continue;
    }
    const r = addData(tbl, rec, load<u64>(d), load<u32>(d, 8), flags, segs, segIdx, maxSegs);
    if (r < 0) return r;
    segIdx = r;
    if (!(flags & VRING_DESC_F_NEXT)) break;
    i = <u32>load<u16>(d, 14);
    if (i >= max) return STATUS_NEXT_OUT_OF_RANGE;
  }
  store<u32>(rec, head, C_ID);
  store<u32>(rec, ndesc, C_NDESC);
  return segIdx;
}

/**
 * Pops up to maxChains available chains into chain records and segments.
 * Returns the number popped (0: ring empty), or a negative status (queue now broken).
 */
export function devPop(q: usize, tbl: usize, chains: usize, maxChains: i32, segs: usize, maxSegs: i32): i32 {
  const size = load<u32>(q, Q_SIZE);
  const avail = <usize>load<u32>(q, Q_DRIVER);
  let last = load<u32>(q, Q_AVAIL);
  // Acquire: the ring entries and descriptors the driver wrote before avail->idx are visible after it.
  const availIdx = <u32>ald16(avail, AVAIL_IDX);
  // §2.7.13.3: avail->idx never runs more than the queue size ahead of what the device consumed.
  if (((availIdx - last) & 0xffff) > size) return fail(q, STATUS_AVAIL_IDX_INVALID);
  const mask = size - 1;
  const desc = <usize>load<u32>(q, Q_DESC);
  let n: i32 = 0;
  let segIdx: i32 = 0;
  let descs: u32 = 0;
  // The IOTLB entry that served the last lookup, kept in locals for the batch (stores to the
  // records would otherwise force the engine to reload it per chain); reloaded after a walk.
  let hPerm: u32 = 0;
  let hFirst: u64 = 0;
  let hLast: u64 = 0;
  let hTarget: u32 = 0;
  let stale = true;
  while (n < maxChains && ((availIdx - last) & 0xffff) != 0) {
    const head = <u32>load<u16>(avail + AVAIL_RING + ((<usize>(last & mask)) << 1));
    if (head >= size) return fail(q, STATUS_HEAD_OUT_OF_RANGE);
    const rec = chainAt(chains, n);
    // Hot path: one direct descriptor inside the last-used mapping. Anything else walks.
    const d = desc + (<usize>head << 4);
    const flags = <u32>load<u16>(d, 12);
    if (stale) {
      const e = tbl + TLB_HDR + load<u32>(tbl, 4) * TLB_ENT;
      hPerm = load<u32>(tbl) != 0 ? load<u32>(e, 20) : 0; // no entries: nothing hits
      hFirst = load<u64>(e);
      hLast = load<u64>(e, 8);
      hTarget = load<u32>(e, 16);
      stale = false;
    }
    if ((flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) == 0 && segIdx < maxSegs) {
      const len = load<u32>(d, 8);
      const w = (flags & VRING_DESC_F_WRITE) != 0;
      const a = load<u64>(d);
      const end = a + <u64>len - 1;
      const want = w ? PERM_W : PERM_R;
      if ((hPerm & want) == want && len != 0 && a >= hFirst && end <= hLast && end >= a) {
        oneSegChain(rec, head, segs, segIdx, hTarget + <u32>(a - hFirst), len, w);
        segIdx++;
        descs++;
        last = (last + 1) & 0xffff;
        n++;
        continue;
      }
    }
    const r = walk(q, tbl, head, rec, segs, segIdx, maxSegs);
    stale = true;
    if (r < 0) {
      if (r == SEG_FULL) {
        if (n > 0) break; // retry this chain in the next batch
        return fail(q, STATUS_TOO_MANY_SEGMENTS);
      }
      return fail(q, r);
    }
    segIdx = r;
    descs += load<u32>(rec, C_NDESC);
    last = (last + 1) & 0xffff;
    n++;
  }
  store<u32>(q, last, Q_AVAIL);
  addStat(q, Q_STAT_CHAINS, <u64>n);
  addStat(q, Q_STAT_DESCS, <u64>descs);
  return n;
}

/**
 * Writes n used elements {id, written} from chain records and publishes used->idx.
 * With inOrderBatch (VIRTIO_F_IN_ORDER negotiated) writes a single element for the last
 * buffer and advances used->idx by n (§2.7.9). Returns n, or STATUS_INVALID_ARG.
 */
export function devPush(q: usize, chains: usize, n: i32, inOrderBatch: bool): i32 {
  const size = load<u32>(q, Q_SIZE);
  const mask = size - 1;
  const used = <usize>load<u32>(q, Q_DEVICE);
  let idx = load<u32>(q, Q_USED);
  if (inOrderBatch && (load<u32>(q, Q_FLAGS) & Q_F_IN_ORDER)) {
    const rec = chainAt(chains, n - 1);
    const id = load<u32>(rec, C_ID);
    if (id >= size) return STATUS_INVALID_ARG;
    const e = used + USED_RING + (<usize>(idx & mask) << 3);
    store<u32>(e, id);
    store<u32>(e, load<u32>(rec, C_WRITTEN), 4);
  } else {
    for (let k: i32 = 0; k < n; k++) {
      const rec = chainAt(chains, k);
      const id = load<u32>(rec, C_ID);
      if (id >= size) return STATUS_INVALID_ARG;
      // struct vring_used_elem { le32 id; le32 len; } in one store.
      store<u64>(used + USED_RING + (<usize>((idx + <u32>k) & mask) << 3), <u64>id | (<u64>load<u32>(rec, C_WRITTEN) << 32));
    }
  }
  idx = (idx + <u32>n) & 0xffff;
  // Release: §2.7.8.2 the device MUST write the used elements before updating used->idx.
  ast16(used, <u16>idx, USED_IDX);
  store<u32>(q, idx, Q_USED);
  store<u32>(q, load<u32>(q, Q_PENDING) + <u32>n, Q_PENDING);
  addStat(q, Q_STAT_USED, <u64>n);
  return n;
}

/**
 * The fused device pass ("serve"; vhost's handle_tx loop with vhost_add_used_and_signal_n, no
 * chain or segment records): for up to max available chains that are ONE direct device-readable
 * descriptor of 1..stride bytes (any length when stride is 0) mapped readable in one IOTLB entry,
 * checks and translates it exactly as devPop does, copies its bytes to dst + i*stride (when
 * stride != 0), writes its length to lens[i] (u32, when lens != 0) and writes the used element
 * {id, 0}; then publishes used->idx once and decides the call (devNeedCall). It stops before the
 * first chain that is anything else (or fails a check devPop reports in a walk): that chain is
 * left for devPop, which applies every check and reports the error.
 * Returns (served << 2) | (stopped at a chain for devPop << 1) | (notify the driver), or a
 * negative status (queue now broken) for the errors devPop reports before looking at a chain
 * (avail->idx too far ahead, head out of range).
 */
// @ts-ignore: decorator
@inline export function devServe(q: usize, tbl: usize, max: i32, dst: usize, stride: u32, lens: usize): i32 {
  const size = load<u32>(q, Q_SIZE);
  const mask = size - 1;
  const avail = <usize>load<u32>(q, Q_DRIVER);
  const used = <usize>load<u32>(q, Q_DEVICE);
  const desc = <usize>load<u32>(q, Q_DESC);
  let last = load<u32>(q, Q_AVAIL);
  let uidx = load<u32>(q, Q_USED);
  // Acquire: ring entries and descriptors before avail->idx (as devPop).
  const availIdx = <u32>ald16(avail, AVAIL_IDX);
  // §2.7.13.3: avail->idx never runs more than the queue size ahead (as devPop).
  if (((availIdx - last) & 0xffff) > size) return fail(q, STATUS_AVAIL_IDX_INVALID);
  // The IOTLB entry that served the last lookup, in locals for the batch.
  const e0 = tbl + TLB_HDR + load<u32>(tbl, 4) * TLB_ENT;
  let hPerm: u32 = load<u32>(tbl) != 0 ? load<u32>(e0, 20) : 0; // no entries: nothing hits
  let hFirst = load<u64>(e0);
  let hLast = load<u64>(e0, 8);
  let hTarget = load<u32>(e0, 16);
  let n: i32 = 0;
  let stop: i32 = 0;
  while (n < max && last != availIdx) {
    const head = <u32>load<u16>(avail + AVAIL_RING + ((<usize>(last & mask)) << 1));
    if (head >= size) return fail(q, STATUS_HEAD_OUT_OF_RANGE);
    const d = desc + (<usize>head << 4);
    const flags = <u32>load<u16>(d, 12);
    const len = load<u32>(d, 8);
    if ((flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE)) != 0 || len == 0 || (stride != 0 && len > stride)) { stop = 1; break; }
    const a = load<u64>(d);
    const end = a + <u64>len - 1;
    if (end < a) { stop = 1; break; } // wraps 2^64: devPop reports it
    if ((hPerm & PERM_R) == 0 || a < hFirst || end > hLast) {
      const i = findEntry(tbl, a, PERM_R);
      if (i < 0) { stop = 1; break; } // unmapped: devPop reports it
      const e = tbl + TLB_HDR + <usize>i * TLB_ENT;
      hPerm = load<u32>(e, 20);
      hFirst = load<u64>(e);
      hLast = load<u64>(e, 8);
      hTarget = load<u32>(e, 16);
      if (end > hLast) { stop = 1; break; } // spans entries: two segments, devPop's
    }
    const src = <usize>(hTarget + <u32>(a - hFirst));
    if (stride != 0) copyBytes(dst + <usize>n * stride, src, len);
    if (lens != 0) store<u32>(lens + (<usize>n << 2), len);
    // struct vring_used_elem { le32 id; le32 len = 0 } in one store.
    store<u64>(used + USED_RING + (<usize>(uidx & mask) << 3), <u64>head);
    uidx = (uidx + 1) & 0xffff;
    last = (last + 1) & 0xffff;
    n++;
  }
  if (n == 0) return stop << 1;
  // Release: §2.7.8.2 used elements before used->idx.
  ast16(used, <u16>uidx, USED_IDX);
  store<u32>(q, last, Q_AVAIL);
  store<u32>(q, uidx, Q_USED);
  store<u32>(q, load<u32>(q, Q_PENDING) + <u32>n, Q_PENDING);
  addStat(q, Q_STAT_CHAINS, <u64>n);
  addStat(q, Q_STAT_DESCS, <u64>n);
  addStat(q, Q_STAT_USED, <u64>n);
  const call = devNeedCall(q);
  addStat(q, Q_STAT_NOTIFY, <u64>call); // counted here: the caller gets the decision, not a verb to count it
  return (n << 2) | (stop << 1) | call;
}

/**
 * Decides whether the driver wants a used-buffer notification now (vhost_notify in
 * drivers/vhost/vhost.c). Returns 1 to notify, 0 to stay quiet.
 */
// @ts-ignore: decorator
@inline export function devNeedCall(q: usize): i32 {
  const f = load<u32>(q, Q_FLAGS);
  const avail = <usize>load<u32>(q, Q_DRIVER);
  const newIdx = load<u32>(q, Q_USED);
  const old = load<u32>(q, Q_SIGNALLED);
  const valid = (f & Q_F_SIG_VALID) != 0;
  // Nothing used since the last decision: nothing to tell (Linux only asks after adding used).
  // used->idx alone cannot say it after exactly 2^16 elements, so count them.
  const pushed = load<u32>(q, Q_PENDING);
  if (pushed == 0) return 0; // nothing used since the last decision (or ever)
  store<u32>(q, 0, Q_PENDING);
  store<u32>(q, newIdx, Q_SIGNALLED);
  store<u32>(q, f | Q_F_SIG_VALID, Q_FLAGS);
  if (!(f & Q_F_EVENT_IDX)) {
    return (ald16(avail) & VRING_AVAIL_F_NO_INTERRUPT) != 0 ? 0 : 1;
  }
  if (!valid || pushed >= 0x10000) return 1; // 2^16 used since: every event index was passed
  // §2.7.6 layout, §2.7.7 use: used_event sits after the avail ring entries.
  const size = load<u32>(q, Q_SIZE);
  const event = <u32>ald16(avail + AVAIL_RING + (<usize>size << 1));
  return needEvent(event, newIdx, old) ? 1 : 0;
}

/**
 * Asks the driver for available-buffer notifications (vhost_enable_notify). Returns 1 if
 * buffers are already available (the caller must process them: no kick will come for them).
 */
export function devEnableKick(q: usize): i32 {
  const size = load<u32>(q, Q_SIZE);
  const used = <usize>load<u32>(q, Q_DEVICE);
  const avail = <usize>load<u32>(q, Q_DRIVER);
  const last = load<u32>(q, Q_AVAIL);
  if (load<u32>(q, Q_FLAGS) & Q_F_EVENT_IDX) {
    // §2.7.8 layout, §2.7.10 use: avail_event after the used ring elements: "kick me when you pass `last`".
    ast16(used + USED_RING + (<usize>size << 3), <u16>last);
  } else {
    ast16(used, ald16(used) & ~<u16>VRING_USED_F_NO_NOTIFY);
  }
  // The seq-cst store above orders before this load (vhost's smp_mb()).
  return ((<u32>ald16(avail, AVAIL_IDX) - last) & 0xffff) != 0 ? 1 : 0;
}

/** Stops asking for kicks (vhost_disable_notify): sets NO_NOTIFY unless EVENT_IDX is on. */
export function devDisableKick(q: usize): void {
  if (load<u32>(q, Q_FLAGS) & Q_F_EVENT_IDX) return; // with event idx, Linux leaves avail_event behind
  const used = <usize>load<u32>(q, Q_DEVICE);
  ast16(used, ald16(used) | <u16>VRING_USED_F_NO_NOTIFY);
}

/** Number of chains available to pop (0 if none), without consuming them. */
export function devAvailable(q: usize): i32 {
  const avail = <usize>load<u32>(q, Q_DRIVER);
  return <i32>(((<u32>ald16(avail, AVAIL_IDX)) - load<u32>(q, Q_AVAIL)) & 0xffff);
}

// ───────────────────────────── driver side ─────────────────────────────

/** Resets the driver side: zeroed rings, every descriptor free, linked i -> i+1 (mod size). */
export function drvInit(q: usize): void {
  const size = load<u32>(q, Q_SIZE);
  memory.fill(<usize>load<u32>(q, Q_DESC), 0, size << 4);
  memory.fill(<usize>load<u32>(q, Q_DRIVER), 0, 6 + (size << 1));
  memory.fill(<usize>load<u32>(q, Q_DEVICE), 0, 6 + (size << 3));
  const st = <usize>load<u32>(q, Q_DSTATE);
  for (let i: u32 = 0; i < size; i++) {
    const s = st + <usize>i * DSTATE_REC;
    store<u64>(s, 0); // token, ndesc
    // In-order drivers use descriptors in ring order with next = x+1, 0 after the last (§2.7.5.1).
    store<u32>(s, i + 1 == size ? 0 : i + 1, 8);
    store<u32>(s, 0, 12);
  }
}

/**
 * Adds up to n requests (REQ_REC each, segments DSEG_REC each) as chains and publishes
 * avail->idx once. Uses an indirect table when negotiated and the chain has > 1 segment (as
 * Linux does). Stops at the first request that does not fit (ring full) or is malformed (no
 * segments, writable before readable, more descriptors than the queue size): the requests
 * before it are published. Returns the number added and published, or STATUS_INVALID_ARG
 * when the first request is malformed (nothing is touched).
 */
export function drvAdd(q: usize, reqs: usize, n: i32, dsegs: usize): i32 {
  const size = load<u32>(q, Q_SIZE);
  const mask = size - 1;
  const f = load<u32>(q, Q_FLAGS);
  const desc = <usize>load<u32>(q, Q_DESC);
  const avail = <usize>load<u32>(q, Q_DRIVER);
  const st = <usize>load<u32>(q, Q_DSTATE);
  const pool = <usize>load<u32>(q, Q_INDIRECT);
  const imax = load<u32>(q, Q_INDIRECT_MAX);
  const dmaBase = load<u64>(q, Q_DMA_BASE);
  let shadow = load<u32>(q, Q_AVAIL);
  let freeHead = load<u32>(q, Q_FREE_HEAD);
  let numFree = load<u32>(q, Q_NUM_FREE);
  let k: i32 = 0;
  let descs: u32 = 0;
  for (; k < n; k++) {
    const r = reqs + <usize>k * REQ_REC;
    const token = load<u32>(r);
    const seg0 = dsegs + <usize>load<u32>(r, 4) * DSEG_REC;
    const nsegs = load<u32>(r, 8);
    if (nsegs == 1) {
      // Hot path: a one-buffer chain is one descriptor, nothing to order-check.
      if (numFree == 0) break;
      const head = freeHead;
      const hs = st + <usize>head * DSTATE_REC;
      const d = desc + (<usize>head << 4);
      const wr = load<u32>(seg0, 12) & 1;
      const len = load<u32>(seg0, 8);
      freeHead = load<u32>(hs, 8);
      store<u64>(d, load<u64>(seg0));
      store<u32>(d, len, 8);
      store<u16>(d, wr ? <u16>VRING_DESC_F_WRITE : 0, 12);
      store<u16>(d, <u16>freeHead, 14);
      store<u32>(hs, token);
      store<u32>(hs, 1, 4);
      store<u32>(hs, wr ? len : 0, 12);
      store<u16>(avail + AVAIL_RING + (<usize>(shadow & mask) << 1), <u16>head);
      shadow = (shadow + 1) & 0xffff;
      numFree--;
      descs++;
      continue;
    }
    const useIndirect = (f & Q_F_INDIRECT) != 0 && pool != 0 && nsegs > 1 && nsegs <= imax;
    const need: u32 = useIndirect ? 1 : nsegs;
    const inLen = requestInLen(seg0, nsegs);
    if (nsegs == 0 || need > size || inLen < 0) {
      // A malformed request ends the batch; the ones before it are published below.
      if (k == 0) return STATUS_INVALID_ARG;
      break;
    }
    if (need > numFree) break;
    const head = freeHead;
    if (useIndirect) {
      const table = pool + <usize>head * <usize>imax * 16;
      for (let j: u32 = 0; j < nsegs; j++) {
        const s = seg0 + <usize>j * DSEG_REC;
        const d = table + (<usize>j << 4);
        store<u64>(d, load<u64>(s));
        store<u32>(d, load<u32>(s, 8), 8);
        const wf: u32 = (load<u32>(s, 12) & 1) ? VRING_DESC_F_WRITE : 0;
        store<u16>(d, <u16>(wf | (j + 1 < nsegs ? VRING_DESC_F_NEXT : 0)), 12);
        store<u16>(d, <u16>(j + 1 < nsegs ? j + 1 : 0), 14);
      }
      const d = desc + (<usize>head << 4);
      store<u64>(d, dmaBase + <u64>table);
      store<u32>(d, nsegs << 4, 8);
      store<u16>(d, <u16>VRING_DESC_F_INDIRECT, 12);
      store<u16>(d, 0, 14);
      freeHead = load<u32>(st + <usize>head * DSTATE_REC, 8);
    } else {
      let i = head;
      for (let j: u32 = 0; j < nsegs; j++) {
        const s = seg0 + <usize>j * DSEG_REC;
        const d = desc + (<usize>i << 4);
        // The chain is linked through the private free list (Linux desc_extra[].next).
        const next = load<u32>(st + <usize>i * DSTATE_REC, 8);
        store<u64>(d, load<u64>(s));
        store<u32>(d, load<u32>(s, 8), 8);
        const wf: u32 = (load<u32>(s, 12) & 1) ? VRING_DESC_F_WRITE : 0;
        store<u16>(d, <u16>(wf | (j + 1 < nsegs ? VRING_DESC_F_NEXT : 0)), 12);
        store<u16>(d, <u16>next, 14);
        i = next;
      }
      freeHead = i;
    }
    const hs = st + <usize>head * DSTATE_REC;
    store<u32>(hs, token);
    store<u32>(hs, need, 4);
    store<u32>(hs, <u32>inLen, 12);
    store<u16>(avail + AVAIL_RING + (<usize>(shadow & mask) << 1), <u16>head);
    shadow = (shadow + 1) & 0xffff;
    numFree -= need;
    descs += need;
  }
  if (k > 0) {
    // Release: §2.7.13.2 descriptors and ring entries MUST be visible before avail->idx.
    ast16(avail, <u16>shadow, AVAIL_IDX);
    store<u32>(q, shadow, Q_AVAIL);
    store<u32>(q, freeHead, Q_FREE_HEAD);
    store<u32>(q, numFree, Q_NUM_FREE);
    store<u32>(q, load<u32>(q, Q_PENDING) + <u32>k, Q_PENDING);
    store<u32>(q, load<u32>(q, Q_INFLIGHT) + <u32>k, Q_INFLIGHT);
    addStat(q, Q_STAT_CHAINS, <u64>k);
    addStat(q, Q_STAT_DESCS, <u64>descs);
  }
  return k;
}

/**
 * Adds up to n one-buffer chains from buffer records (BUF_REC each: u64 addr | u32 len |
 * u32 token), device-writable when flags bit 0 is set, and publishes avail->idx once
 * (virtqueue_add_outbuf/inbuf in a loop, then one publish). With flags bit 1 also decides the
 * kick (drvKickPrepare). Stops when the ring is full. Returns (added << 1) | kick.
 */
// @ts-ignore: decorator
@inline export function drvAddBufs(q: usize, bufs: usize, n: i32, flags: u32): i32 {
  const size = load<u32>(q, Q_SIZE);
  const mask = size - 1;
  const desc = <usize>load<u32>(q, Q_DESC);
  const avail = <usize>load<u32>(q, Q_DRIVER);
  const st = <usize>load<u32>(q, Q_DSTATE);
  const wr = (flags & 1) != 0;
  const dflags: u16 = wr ? <u16>VRING_DESC_F_WRITE : 0;
  let shadow = load<u32>(q, Q_AVAIL);
  let freeHead = load<u32>(q, Q_FREE_HEAD);
  let numFree = load<u32>(q, Q_NUM_FREE);
  let k: i32 = 0;
  for (; k < n && numFree != 0; k++) {
    const b = bufs + (<usize>k << 4);
    const head = freeHead;
    const hs = st + <usize>head * DSTATE_REC;
    const d = desc + (<usize>head << 4);
    const len = load<u32>(b, 8);
    freeHead = load<u32>(hs, 8);
    store<u64>(d, load<u64>(b));
    store<u32>(d, len, 8);
    store<u16>(d, dflags, 12);
    // The private link stays in `next`, as Linux leaves desc[].next (desc_extra[].next).
    store<u16>(d, <u16>freeHead, 14);
    // Private state: token, ndesc 1, (next kept), inLen.
    store<u64>(hs, <u64>load<u32>(b, 12) | (<u64>1 << 32));
    store<u32>(hs, wr ? len : 0, 12);
    store<u16>(avail + AVAIL_RING + (<usize>(shadow & mask) << 1), <u16>head);
    shadow = (shadow + 1) & 0xffff;
    numFree--;
  }
  if (k > 0) {
    // Release: §2.7.13.2 descriptors and ring entries MUST be visible before avail->idx.
    ast16(avail, <u16>shadow, AVAIL_IDX);
    store<u32>(q, shadow, Q_AVAIL);
    store<u32>(q, freeHead, Q_FREE_HEAD);
    store<u32>(q, numFree, Q_NUM_FREE);
    store<u32>(q, load<u32>(q, Q_PENDING) + <u32>k, Q_PENDING);
    store<u32>(q, load<u32>(q, Q_INFLIGHT) + <u32>k, Q_INFLIGHT);
    addStat(q, Q_STAT_CHAINS, <u64>k);
    addStat(q, Q_STAT_DESCS, <u64>k);
  }
  const kick = (flags & 2) != 0 ? drvKickPrepare(q) : 0;
  addStat(q, Q_STAT_NOTIFY, <u64>kick); // counted here, as kickPrepare() counts its kicks
  return (k << 1) | kick;
}

/**
 * Decides whether the device needs a kick for what was added since the last call
 * (virtqueue_kick_prepare_split). Returns 1 to kick.
 */
// @ts-ignore: decorator
@inline export function drvKickPrepare(q: usize): i32 {
  const added = load<u32>(q, Q_PENDING);
  // Nothing new since the last decision: nothing to kick for.
  if (added == 0) return 0;
  store<u32>(q, 0, Q_PENDING);
  const newIdx = load<u32>(q, Q_AVAIL);
  const old = (newIdx - added) & 0xffff;
  const used = <usize>load<u32>(q, Q_DEVICE);
  // The seq-cst avail->idx store in drvAdd orders before these loads (Linux's virtio_mb()).
  if (load<u32>(q, Q_FLAGS) & Q_F_EVENT_IDX) {
    const size = load<u32>(q, Q_SIZE);
    const event = <u32>ald16(used + USED_RING + (<usize>size << 3));
    return needEvent(event, newIdx, old) ? 1 : 0;
  }
  return (ald16(used) & VRING_USED_F_NO_NOTIFY) != 0 ? 0 : 1;
}

/**
 * Buffers in flight (added, not yet reclaimed): the driver's own count, never the device's.
 * Kept in its own field, not derived from the statistics, so that clearing or restoring the
 * counters cannot change what a used entry is checked against.
 */
// @ts-ignore: decorator
@inline export function inFlight(q: usize): u32 {
  return load<u32>(q, Q_INFLIGHT);
}

/** Returns buffer `head` (ndesc descriptors) to the free list (LIFO, as Linux detach_buf_split). */
// @ts-ignore: decorator
@inline function freeChain(st: usize, head: u32, nd: u32, freeHead: u32): u32 {
  let i = head;
  for (let j: u32 = 1; j < nd; j++) i = load<u32>(st + <usize>i * DSTATE_REC, 8);
  store<u32>(st + <usize>i * DSTATE_REC, freeHead, 8);
  return head;
}

/**
 * Reclaims up to max used buffers: token k to outTok + k*stride, length to outLen + k*stride
 * (skipped when outLen is 0). Used records {token, len}: (out, out + 4, 8); token and length
 * arrays: (tokens, lens, 4). Returns the number reclaimed (0: none), or a negative status
 * (queue now broken).
 */
// @ts-ignore: decorator
@inline export function drvGetUsed(q: usize, outTok: usize, outLen: usize, stride: u32, max: i32): i32 {
  const size = load<u32>(q, Q_SIZE);
  const mask = size - 1;
  const used = <usize>load<u32>(q, Q_DEVICE);
  const st = <usize>load<u32>(q, Q_DSTATE);
  const inOrder = (load<u32>(q, Q_FLAGS) & Q_F_IN_ORDER) != 0;
  let last = load<u32>(q, Q_USED);
  // Acquire: used elements are read only after used->idx (Linux virtio_rmb()).
  const usedIdx = <u32>ald16(used, USED_IDX);
  const pending = (usedIdx - last) & 0xffff;
  if (pending > inFlight(q)) return fail(q, STATUS_USED_IDX_INVALID);
  let freeHead = load<u32>(q, Q_FREE_HEAD);
  let numFree = load<u32>(q, Q_NUM_FREE);
  let k: i32 = 0;
  // A bad entry breaks the queue, but the good entries before it in this batch are still
  // returned (and committed below): their tokens must not be lost to the caller.
  let err: i32 = 0;
  if (!inOrder) {
    // The common case in a loop of its own: the same checks, no in-order batch bookkeeping.
    while (k < max && last != usedIdx) {
      const e = load<u64>(used + USED_RING + (<usize>(last & mask) << 3)); // { id, len }
      const id = <u32>e;
      if (id >= size) { err = fail(q, STATUS_USED_ID_INVALID); break; }
      const s = st + <usize>id * DSTATE_REC;
      const nd = load<u32>(s, 4);
      if (nd == 0) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
      freeHead = freeChain(st, id, nd, freeHead);
      numFree += nd;
      store<u32>(outTok + <usize>k * stride, load<u32>(s));
      if (outLen != 0) store<u32>(outLen + <usize>k * stride, <u32>(e >> 32));
      store<u32>(s, 0, 4);
      last = (last + 1) & 0xffff;
      k++;
    }
  } else while (k < max && last != usedIdx) {
    let id: u32;
    let len: u32;
    if (inOrder) {
      // §2.7.9: an in-order device may write one element for a batch, for its last buffer,
      // and advance used->idx by the batch size. Buffers before it report their full
      // writable length, as Linux's in-order split ring does.
      let bid = load<u32>(q, Q_BATCH_ID);
      if (bid == 0xFFFF_FFFF) {
        const e = used + USED_RING + (<usize>(last & mask) << 3);
        bid = load<u32>(e);
        if (bid >= size) { err = fail(q, STATUS_USED_ID_INVALID); break; }
        store<u32>(q, bid, Q_BATCH_ID);
        store<u32>(q, load<u32>(e, 4), Q_BATCH_LEN);
      }
      id = load<u32>(q, Q_NEXT_HEAD);
      const s = st + <usize>id * DSTATE_REC;
      if (load<u32>(s, 4) == 0) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
      if (id == bid) {
        len = load<u32>(q, Q_BATCH_LEN);
        store<u32>(q, 0xFFFF_FFFF, Q_BATCH_ID);
      } else {
        // The batch must end within what used->idx covers.
        if (((last + 1) & 0xffff) == usedIdx) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
        len = load<u32>(s, 12);
      }
      const nd = load<u32>(s, 4);
      // Descriptors are used in ring order: the next buffer starts after this one's.
      let nh = id;
      for (let j: u32 = 0; j < nd; j++) nh = load<u32>(st + <usize>nh * DSTATE_REC, 8);
      store<u32>(q, nh, Q_NEXT_HEAD);
      numFree += nd;
    } else {
      const e = load<u64>(used + USED_RING + (<usize>(last & mask) << 3)); // { id, len }
      id = <u32>e;
      len = <u32>(e >> 32);
      if (id >= size) { err = fail(q, STATUS_USED_ID_INVALID); break; }
      const s = st + <usize>id * DSTATE_REC;
      const nd = load<u32>(s, 4);
      if (nd == 0) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
      freeHead = freeChain(st, id, nd, freeHead);
      numFree += nd;
    }
    const s = st + <usize>id * DSTATE_REC;
    store<u32>(outTok + <usize>k * stride, load<u32>(s));
    if (outLen != 0) store<u32>(outLen + <usize>k * stride, len);
    store<u32>(s, 0, 4);
    last = (last + 1) & 0xffff;
    k++;
  }
  addStat(q, Q_STAT_USED, <u64>k);
  store<u32>(q, load<u32>(q, Q_INFLIGHT) - <u32>k, Q_INFLIGHT);
  store<u32>(q, last, Q_USED);
  store<u32>(q, freeHead, Q_FREE_HEAD);
  store<u32>(q, numFree, Q_NUM_FREE);
  return k > 0 ? k : err;
}

/**
 * Re-enables used-buffer notifications (virtqueue_enable_cb_prepare_split + poll).
 * Returns 1 if used buffers are already pending (the caller must reclaim them).
 */
export function drvEnableCb(q: usize): i32 {
  const f = load<u32>(q, Q_FLAGS);
  const avail = <usize>load<u32>(q, Q_DRIVER);
  const last = load<u32>(q, Q_USED);
  store<u32>(q, f & ~Q_F_CB_OFF, Q_FLAGS);
  if (f & Q_F_EVENT_IDX) {
    // §2.7.7: used_event = "interrupt me once you pass last_used_idx".
    const size = load<u32>(q, Q_SIZE);
    ast16(avail + AVAIL_RING + (<usize>size << 1), <u16>last);
  } else {
    const fl = load<u32>(q, Q_EVENT_SHADOW) & ~VRING_AVAIL_F_NO_INTERRUPT;
    store<u32>(q, fl, Q_EVENT_SHADOW);
    ast16(avail, <u16>fl);
  }
  const used = <usize>load<u32>(q, Q_DEVICE);
  return <u32>ald16(used, USED_IDX) != last ? 1 : 0;
}

/** Suppresses used-buffer notifications (virtqueue_disable_cb_split). */
export function drvDisableCb(q: usize): void {
  const f = load<u32>(q, Q_FLAGS);
  store<u32>(q, f | Q_F_CB_OFF, Q_FLAGS);
  const avail = <usize>load<u32>(q, Q_DRIVER);
  const fl = load<u32>(q, Q_EVENT_SHADOW) | VRING_AVAIL_F_NO_INTERRUPT;
  store<u32>(q, fl, Q_EVENT_SHADOW);
  if (f & Q_F_EVENT_IDX) {
    // Linux writes used_event = 0 here ("a hack", virtio_ring.c); the device then notifies
    // only when its used idx passes 0 again. The driver MUST keep avail->flags 0 (§2.7.7).
    const size = load<u32>(q, Q_SIZE);
    ast16(avail + AVAIL_RING + (<usize>size << 1), 0);
  } else {
    ast16(avail, <u16>fl);
  }
}

/** Used buffers waiting to be reclaimed (as the device claims; drvGetUsed validates). */
export function drvUsedPending(q: usize): i32 {
  const used = <usize>load<u32>(q, Q_DEVICE);
  return <i32>(((<u32>ald16(used, USED_IDX)) - load<u32>(q, Q_USED)) & 0xffff);
}
