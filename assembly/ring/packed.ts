// Packed virtqueue, VIRTIO 1.3 §2.8: the same verbs as split.ts over one descriptor ring.
//
//   descriptor ring (align 16): N x { le64 addr; le32 len; le16 id; le16 flags }
//   driver event suppression (align 4): le16 off_wrap | le16 flags   (driver -> device)
//   device event suppression (align 4): le16 off_wrap | le16 flags   (device -> driver)
//
// Wrap counters start at 1. A descriptor is available when AVAIL == avail wrap counter and
// USED != it; used when AVAIL == USED == used wrap counter (§2.8.1):
//
//   driver makes available (wrap=1): AVAIL=1 USED=0     device marks used (wrap=1): AVAIL=1 USED=1
//   driver makes available (wrap=0): AVAIL=0 USED=1     device marks used (wrap=0): AVAIL=0 USED=0
//
// Positions (Q_AVAIL, Q_USED) are slots 0..N-1 with a separate wrap counter each.

import {
  Q_SIZE, Q_FLAGS, Q_DESC, Q_DRIVER, Q_DEVICE, Q_AVAIL, Q_AVAIL_WRAP, Q_USED, Q_USED_WRAP,
  Q_SIGNALLED, Q_PENDING, Q_FREE_HEAD, Q_NUM_FREE, Q_DSTATE, Q_INDIRECT, Q_INDIRECT_MAX,
  Q_DMA_BASE, Q_BATCH_ID, Q_BATCH_LEN, Q_STAT_CHAINS, Q_STAT_DESCS, Q_STAT_USED, Q_STAT_NOTIFY, Q_INFLIGHT,
  Q_F_EVENT_IDX, Q_F_INDIRECT, Q_F_IN_ORDER, Q_F_SIG_VALID, Q_F_CB_OFF,
  fail, addStat, needEvent,
} from "./state";
import {
  VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT, VRING_PACKED_DESC_F_AVAIL,
  VRING_PACKED_DESC_F_USED, VRING_PACKED_EVENT_FLAG_ENABLE, VRING_PACKED_EVENT_FLAG_DISABLE,
  VRING_PACKED_EVENT_FLAG_DESC, VRING_PACKED_EVENT_F_WRAP_CTR, REQ_REC, DSEG_REC, USED_REC, DSTATE_REC,
} from "./defs";
import {
  STATUS_CHAIN_TOO_LONG, STATUS_INDIRECT_NESTED, STATUS_INDIRECT_INVALID, STATUS_ADDRESS_UNMAPPED,
  STATUS_USED_ID_INVALID, STATUS_USED_ID_NOT_INFLIGHT, STATUS_BUFFER_ID_INVALID,
  STATUS_TOO_MANY_SEGMENTS, STATUS_INVALID_ARG,
} from "../status";
import { translateContig, findEntry, copyBytes, PERM_R, PERM_W, SEG_FULL, TLB_HDR, TLB_ENT } from "../mem";
import { ald16, ald32, ast16, ast32 } from "../sync";
import { beginChain, addData, chainAt, oneSegChain, requestInLen, INDIRECT_MAX_LEN, C_ID, C_NDESC, C_WRITTEN } from "./chain";
import { inFlight } from "./split";

/** Flag bits that make a descriptor available (wrap=1: AVAIL; wrap=0: USED). */
// @ts-ignore: decorator
@inline function availBits(wrap: u32): u32 {
  return wrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
}

/** Flag bits of a used descriptor (AVAIL == USED == wrap). */
// @ts-ignore: decorator
@inline function usedBits(wrap: u32): u32 {
  return wrap ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0;
}

/** True if flags mark a descriptor available for the device with avail wrap counter `wrap`. */
// @ts-ignore: decorator
@inline function isAvail(flags: u32, wrap: u32): bool {
  return (flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) == availBits(wrap);
}

/** True if flags mark a descriptor used for the driver with used wrap counter `wrap`. */
// @ts-ignore: decorator
@inline function isUsed(flags: u32, wrap: u32): bool {
  return (flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) == usedBits(wrap);
}

// ───────────────────────────── device side ─────────────────────────────

/**
 * Walks the chain whose head is at slot `pos` into `rec`, using at most `room` ring slots.
 * Returns the new segment count or a negative status. rec.ndesc = ring slots the chain
 * occupies (the device skips by it).
 */
function walk(q: usize, tbl: usize, pos: u32, rec: usize, segs: usize, segIdx: i32, maxSegs: i32, room: u32): i32 {
  const size = load<u32>(q, Q_SIZE);
  const ring = <usize>load<u32>(q, Q_DESC);
  let ndesc: u32 = 0;
  let id: u32 = 0;
  beginChain(rec, segIdx);
  while (true) {
    // §2.8.6: a chain is at most queue-size descriptors long, and it cannot run into slots the
    // device still holds (popped, not yet marked used): more means a runaway NEXT.
    if (++ndesc > room) return STATUS_CHAIN_TOO_LONG;
    const d = ring + (<usize>pos << 4);
    const flags = <u32>load<u16>(d, 14);
    if (flags & VRING_DESC_F_INDIRECT) {
      // §2.8.8: INDIRECT only if negotiated, never with NEXT; table len a multiple of 16.
      if ((flags & VRING_DESC_F_NEXT) || !(load<u32>(q, Q_FLAGS) & Q_F_INDIRECT)) return STATUS_INDIRECT_INVALID;
      const len = load<u32>(d, 8);
      if (len == 0 || (len & 15) != 0 || len > INDIRECT_MAX_LEN) return STATUS_INDIRECT_INVALID;
      const t = translateContig(tbl, load<u64>(d), len, PERM_R);
      if (t < 0) return STATUS_ADDRESS_UNMAPPED;
      // Table entries are consecutive; only WRITE is meaningful in them (§2.8.8).
      const cnt = len >> 4;
      for (let j: u32 = 0; j < cnt; j++) {
        const e = <usize>t + (<usize>j << 4);
        const ef = <u32>load<u16>(e, 14);
        if (ef & VRING_DESC_F_INDIRECT) return STATUS_INDIRECT_NESTED;
        const r = addData(tbl, rec, load<u64>(e), load<u32>(e, 8), ef, segs, segIdx, maxSegs);
        if (r < 0) return r;
        segIdx = r;
      }
      id = <u32>load<u16>(d, 12);
      break;
    }
    const r = addData(tbl, rec, load<u64>(d), load<u32>(d, 8), flags, segs, segIdx, maxSegs);
    if (r < 0) return r;
    segIdx = r;
    if (!(flags & VRING_DESC_F_NEXT)) {
      // §2.8.6: the buffer id is in the last descriptor of the chain.
      id = <u32>load<u16>(d, 12);
      break;
    }
    if (++pos == size) pos = 0;
  }
  if (id >= size) return STATUS_BUFFER_ID_INVALID;
  store<u32>(rec, id, C_ID);
  store<u32>(rec, ndesc, C_NDESC);
  return segIdx;
}

/** Pops up to maxChains available buffers. Same contract as split devPop. */
export function devPop(q: usize, tbl: usize, chains: usize, maxChains: i32, segs: usize, maxSegs: i32): i32 {
  const size = load<u32>(q, Q_SIZE);
  const ring = <usize>load<u32>(q, Q_DESC);
  let pos = load<u32>(q, Q_AVAIL);
  let wrap = load<u32>(q, Q_AVAIL_WRAP);
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
  // Ring slots the driver can have filled: the device holds the slots from its used position
  // to its avail position (both with wrap counters, §2.8.1); a buffer cannot reach into them.
  const usedAt = load<u32>(q, Q_USED) + (load<u32>(q, Q_USED_WRAP) ? 0 : size);
  const held = (pos + (wrap ? 0 : size) + 2 * size - usedAt) % (2 * size);
  let room = held <= size ? size - held : size; // an inconsistent restored state: only the size bound
  while (n < maxChains) {
    // Acquire: the head's flags are written last by the driver (§2.8.21.2).
    const d = ring + (<usize>pos << 4);
    const flags = <u32>ald16(d, 14);
    if (!isAvail(flags, wrap)) break;
    const rec = chainAt(chains, n);
    // Hot path: one direct descriptor inside the last-used mapping. Anything else walks.
    if (stale) {
      const e = tbl + TLB_HDR + load<u32>(tbl, 4) * TLB_ENT;
      hPerm = load<u32>(tbl) != 0 ? load<u32>(e, 20) : 0; // no entries: nothing hits
      hFirst = load<u64>(e);
      hLast = load<u64>(e, 8);
      hTarget = load<u32>(e, 16);
      stale = false;
    }
    if ((flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) == 0 && segIdx < maxSegs && room != 0) {
      const len = load<u32>(d, 8);
      const id = <u32>load<u16>(d, 12);
      const w = (flags & VRING_DESC_F_WRITE) != 0;
      const a = load<u64>(d);
      const end = a + <u64>len - 1;
      const want = w ? PERM_W : PERM_R;
      if ((hPerm & want) == want && len != 0 && a >= hFirst && end <= hLast && end >= a && id < size) {
        oneSegChain(rec, id, segs, segIdx, hTarget + <u32>(a - hFirst), len, w);
        segIdx++;
        descs++;
        room--;
        if (++pos == size) { pos = 0; wrap ^= 1; }
        n++;
        continue;
      }
    }
    const r = walk(q, tbl, pos, rec, segs, segIdx, maxSegs, room);
    stale = true;
    if (r < 0) {
      if (r == SEG_FULL) {
        if (n > 0) break;
        return fail(q, STATUS_TOO_MANY_SEGMENTS);
      }
      return fail(q, r);
    }
    segIdx = r;
    const nd = load<u32>(rec, C_NDESC);
    descs += nd;
    room -= nd;
    pos += nd;
    if (pos >= size) { pos -= size; wrap ^= 1; }
    n++;
  }
  store<u32>(q, pos, Q_AVAIL);
  store<u32>(q, wrap, Q_AVAIL_WRAP);
  addStat(q, Q_STAT_CHAINS, <u64>n);
  addStat(q, Q_STAT_DESCS, <u64>descs);
  return n;
}

/**
 * Writes used descriptors for n chain records. The first one's flags are stored last so the
 * driver sees the batch at once (as vhost_add_used_n_packed). With inOrderBatch (IN_ORDER
 * negotiated) a single used descriptor carries the last buffer's id and the device skips the
 * whole batch (§2.8.10). Returns n, or STATUS_INVALID_ARG for a record that cannot be ours.
 */
export function devPush(q: usize, chains: usize, n: i32, inOrderBatch: bool): i32 {
  const size = load<u32>(q, Q_SIZE);
  const ring = <usize>load<u32>(q, Q_DESC);
  let pos = load<u32>(q, Q_USED);
  let wrap = load<u32>(q, Q_USED_WRAP);
  // Check every record before writing anything.
  let total: u32 = 0;
  for (let k: i32 = 0; k < n; k++) {
    const rec = chainAt(chains, k);
    const nd = load<u32>(rec, C_NDESC);
    if (load<u32>(rec, C_ID) >= size || nd == 0 || nd > size) return STATUS_INVALID_ARG;
    total += nd;
  }
  if (total > size) return STATUS_INVALID_ARG;
  const headPos = pos;
  // §2.8.3/§2.8.4: WRITE in a used descriptor says the device wrote `len` bytes; without it
  // len is reserved. (QEMU leaves WRITE out; Linux drivers read len either way.)
  let headFlags = usedBits(wrap);
  if (inOrderBatch && (load<u32>(q, Q_FLAGS) & Q_F_IN_ORDER)) {
    const rec = chainAt(chains, n - 1);
    const d = ring + (<usize>pos << 4);
    const written = load<u32>(rec, C_WRITTEN);
    if (written != 0) headFlags |= VRING_DESC_F_WRITE;
    store<u32>(d, written, 8);
    store<u16>(d, <u16>load<u32>(rec, C_ID), 12);
    pos += total;
    if (pos >= size) { pos -= size; wrap ^= 1; }
  } else {
    for (let k: i32 = 0; k < n; k++) {
      const rec = chainAt(chains, k);
      const d = ring + (<usize>pos << 4);
      const idNd = load<u64>(rec, C_ID); // id | ndesc << 32
      const written = load<u32>(rec, C_WRITTEN);
      const lenId = <u64>written | ((idNd & 0xffff) << 32);
      const wf: u32 = written != 0 ? VRING_DESC_F_WRITE : 0;
      if (k == 0) {
        headFlags |= wf;
        store<u32>(d, <u32>lenId, 8);
        store<u16>(d, <u16>idNd, 12);
      } else {
        // len, id and flags in one store: the driver reads this slot only after the head's
        // flags (stored last, below) say the batch is there.
        store<u32>(d, <u32>lenId, 8);
        store<u16>(d, <u16>idNd, 12);
        ast16(d, usedBits(wrap) | wf, 14);
      }
      pos += <u32>(idNd >> 32);
      if (pos >= size) { pos -= size; wrap ^= 1; }
    }
  }
  // Release: id and len before the flags that hand the descriptor back (§2.8.21.1).
  ast16(ring + (<usize>headPos << 4), <u16>headFlags, 14);
  store<u32>(q, pos, Q_USED);
  store<u32>(q, wrap, Q_USED_WRAP);
  store<u32>(q, load<u32>(q, Q_PENDING) + total, Q_PENDING);
  addStat(q, Q_STAT_USED, <u64>n);
  return n;
}

/**
 * The fused device pass ("serve"); same contract as split devServe. Used descriptors are
 * written at the device's used position as they are served, the first one's flags last (as
 * devPush), so the driver sees the batch at once. Returns (served << 2) | (stopped at a chain
 * for devPop << 1) | (notify the driver); it reports no errors itself (devPop does).
 */
// @ts-ignore: decorator
@inline export function devServe(q: usize, tbl: usize, max: i32, dst: usize, stride: u32, lens: usize): i32 {
  const size = load<u32>(q, Q_SIZE);
  const ring = <usize>load<u32>(q, Q_DESC);
  let pos = load<u32>(q, Q_AVAIL);
  let wrap = load<u32>(q, Q_AVAIL_WRAP);
  let upos = load<u32>(q, Q_USED);
  let uwrap = load<u32>(q, Q_USED_WRAP);
  // As devPop: the device holds the slots from its used to its avail position; a buffer cannot
  // lie in them. Serving keeps that count (each chain is used as it is popped).
  const usedAt = upos + (uwrap ? 0 : size);
  const held = (pos + (wrap ? 0 : size) + 2 * size - usedAt) % (2 * size);
  if (held >= size) return 1 << 1; // no slot can be the driver's: devPop decides
  const same = held == 0; // then the used position is the avail position, wrap counters alike
  const e0 = tbl + TLB_HDR + load<u32>(tbl, 4) * TLB_ENT;
  let hPerm: u32 = load<u32>(tbl) != 0 ? load<u32>(e0, 20) : 0;
  let hFirst = load<u64>(e0);
  let hLast = load<u64>(e0, 8);
  let hTarget = load<u32>(e0, 16);
  let n: i32 = 0;
  let stop: i32 = 0;
  let headAt: usize = 0;
  let headFlags: u32 = 0;
  // Flag patterns of the current lap, updated when the position wraps.
  let ab = availBits(wrap);
  let ub = usedBits(wrap);
  while (n < max) {
    const d = ring + (<usize>pos << 4);
    // Acquire: the head's flags are written last by the driver (§2.8.21.2).
    const flags = <u32>ald16(d, 14);
    if ((flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) != ab) break; // isAvail
    const len = load<u32>(d, 8);
    const id = <u32>load<u16>(d, 12);
    if ((flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE)) != 0 || len == 0 || (stride != 0 && len > stride) || id >= size) { stop = 1; break; }
    const a = load<u64>(d);
    const end = a + <u64>len - 1;
    if (end < a) { stop = 1; break; }
    if ((hPerm & PERM_R) == 0 || a < hFirst || end > hLast) {
      const i = findEntry(tbl, a, PERM_R);
      if (i < 0) { stop = 1; break; }
      const e = tbl + TLB_HDR + <usize>i * TLB_ENT;
      hPerm = load<u32>(e, 20);
      hFirst = load<u64>(e);
      hLast = load<u64>(e, 8);
      hTarget = load<u32>(e, 16);
      if (end > hLast) { stop = 1; break; }
    }
    const src = <usize>(hTarget + <u32>(a - hFirst));
    if (stride != 0) copyBytes(dst + <usize>n * stride, src, len);
    if (lens != 0) store<u32>(lens + (<usize>n << 2), len);
    // Used descriptor {len 0, id}; no WRITE flag: nothing was written (§2.8.3).
    if (same) {
      // The device holds no slot: the used descriptor goes where this one was read, and its id
      // is already there (the one just read and reported).
      store<u32>(d, 0, 8);
      if (n == 0) { headAt = d; headFlags = ub; } else ast16(d, ub, 14);
    } else {
      const u = ring + (<usize>upos << 4);
      store<u32>(u, 0, 8);
      store<u16>(u, <u16>id, 12);
      if (n == 0) { headAt = u; headFlags = usedBits(uwrap); } else ast16(u, usedBits(uwrap), 14);
      if (++upos == size) { upos = 0; uwrap ^= 1; }
    }
    if (++pos == size) { pos = 0; wrap ^= 1; ab = availBits(wrap); ub = usedBits(wrap); }
    n++;
  }
  if (n == 0) return stop << 1;
  if (same) { upos = pos; uwrap = wrap; }
  // Release: id and len before the flags that hand the batch back (§2.8.21.1).
  ast16(headAt, headFlags, 14);
  store<u32>(q, pos, Q_AVAIL);
  store<u32>(q, wrap, Q_AVAIL_WRAP);
  store<u32>(q, upos, Q_USED);
  store<u32>(q, uwrap, Q_USED_WRAP);
  store<u32>(q, load<u32>(q, Q_PENDING) + <u32>n, Q_PENDING);
  addStat(q, Q_STAT_CHAINS, <u64>n);
  addStat(q, Q_STAT_DESCS, <u64>n);
  addStat(q, Q_STAT_USED, <u64>n);
  const call = devNeedCall(q);
  addStat(q, Q_STAT_NOTIFY, <u64>call); // counted here: the caller gets the decision, not a verb to count it
  return (n << 2) | (stop << 1) | call;
}

/**
 * vring_need_event for packed event suppression (§2.8.10, §2.8.21): notify iff the descriptor
 * at `offWrap` (slot | wrap << 15) is among the `count` slots up to slot `pos` of the wrap
 * `wrap` (pos is the slot after the last one used / made available).
 *
 * old/new are running u16 counts, as Linux virtqueue_kick_prepare_packed computes them:
 * new = pos, old = pos - count (mod 2^16), and an event in the other wrap moves back by the
 * ring size. Passing the slot of the previous decision as `old` instead (QEMU's
 * vring_packed_need_event does) makes [old, new) nearly the whole u16 space whenever the
 * ring end lies between the two, and the peer is signalled almost every time. Needs
 * count < size (a whole ring or more passed every event offset: the callers notify).
 */
// @ts-ignore: decorator
@inline function packedNeedEvent(size: u32, wrap: u32, offWrap: u32, pos: u32, count: u32): bool {
  let off = offWrap & 0x7fff;
  if (wrap != (offWrap >> VRING_PACKED_EVENT_F_WRAP_CTR)) off -= size;
  return needEvent(off, pos, (pos - count) & 0xffff);
}

/** Decides whether to send a used-buffer notification (virtio_packed_should_notify). */
// @ts-ignore: decorator
@inline export function devNeedCall(q: usize): i32 {
  const f = load<u32>(q, Q_FLAGS);
  const drv = <usize>load<u32>(q, Q_DRIVER);
  const newIdx = load<u32>(q, Q_USED);
  const valid = (f & Q_F_SIG_VALID) != 0;
  // Slots used since the last decision. Slots alone cannot say it: after a whole ring the
  // used slot is back where it was; and across the ring end the two slots are not a range.
  const pushed = load<u32>(q, Q_PENDING);
  if (pushed == 0) return 0; // nothing used since the last decision (or ever)
  store<u32>(q, 0, Q_PENDING);
  store<u32>(q, newIdx, Q_SIGNALLED);
  store<u32>(q, f | Q_F_SIG_VALID, Q_FLAGS);
  // One 32-bit read takes off_wrap (low half) and flags (high half) as one snapshot.
  const ev = ald32(drv);
  const evFlags = ev >> 16;
  if (evFlags == VRING_PACKED_EVENT_FLAG_DISABLE) return 0;
  if (evFlags != VRING_PACKED_EVENT_FLAG_DESC || !(f & Q_F_EVENT_IDX)) return 1;
  // A whole ring (or more) since the last decision passed every possible event offset; the
  // slot arithmetic of vring_packed_need_event would see old == new and stay quiet.
  if (!valid || pushed >= load<u32>(q, Q_SIZE)) return 1;
  return packedNeedEvent(load<u32>(q, Q_SIZE), load<u32>(q, Q_USED_WRAP), ev & 0xffff, newIdx, pushed) ? 1 : 0;
}

/** Asks for kicks through the device event suppression area. Returns 1 if buffers are pending. */
export function devEnableKick(q: usize): i32 {
  const dev = <usize>load<u32>(q, Q_DEVICE);
  const pos = load<u32>(q, Q_AVAIL);
  const wrap = load<u32>(q, Q_AVAIL_WRAP);
  if (load<u32>(q, Q_FLAGS) & Q_F_EVENT_IDX) {
    ast32(dev, pos | (wrap << VRING_PACKED_EVENT_F_WRAP_CTR) | (VRING_PACKED_EVENT_FLAG_DESC << 16));
  } else {
    ast32(dev, VRING_PACKED_EVENT_FLAG_ENABLE << 16);
  }
  const ring = <usize>load<u32>(q, Q_DESC);
  return isAvail(<u32>ald16(ring + (<usize>pos << 4), 14), wrap) ? 1 : 0;
}

/** Stops asking for kicks. */
export function devDisableKick(q: usize): void {
  const dev = <usize>load<u32>(q, Q_DEVICE);
  ast16(dev, <u16>VRING_PACKED_EVENT_FLAG_DISABLE, 2);
}

/** 1 if the descriptor at the next avail slot is available, else 0. */
export function devAvailable(q: usize): i32 {
  const ring = <usize>load<u32>(q, Q_DESC);
  const pos = load<u32>(q, Q_AVAIL);
  return isAvail(<u32>ald16(ring + (<usize>pos << 4), 14), load<u32>(q, Q_AVAIL_WRAP)) ? 1 : 0;
}

// ───────────────────────────── driver side ─────────────────────────────

/** Resets the driver side: zeroed ring and event areas, every id free (linked id -> id+1). */
export function drvInit(q: usize): void {
  const size = load<u32>(q, Q_SIZE);
  memory.fill(<usize>load<u32>(q, Q_DESC), 0, size << 4);
  store<u32>(<usize>load<u32>(q, Q_DRIVER), 0);
  store<u32>(<usize>load<u32>(q, Q_DEVICE), 0);
  const st = <usize>load<u32>(q, Q_DSTATE);
  for (let i: u32 = 0; i < size; i++) {
    const s = st + <usize>i * DSTATE_REC;
    store<u64>(s, 0);
    store<u32>(s, i + 1 == size ? 0 : i + 1, 8);
    store<u32>(s, 0, 12);
  }
}

/**
 * Adds up to n requests. Same contract as split drvAdd: a request that does not fit or is
 * malformed ends the batch, and exactly the requests before it are made available and counted.
 */
export function drvAdd(q: usize, reqs: usize, n: i32, dsegs: usize): i32 {
  const size = load<u32>(q, Q_SIZE);
  const f = load<u32>(q, Q_FLAGS);
  const inOrder = (f & Q_F_IN_ORDER) != 0;
  const ring = <usize>load<u32>(q, Q_DESC);
  const st = <usize>load<u32>(q, Q_DSTATE);
  const pool = <usize>load<u32>(q, Q_INDIRECT);
  const imax = load<u32>(q, Q_INDIRECT_MAX);
  const dmaBase = load<u64>(q, Q_DMA_BASE);
  let pos = load<u32>(q, Q_AVAIL);
  let wrap = load<u32>(q, Q_AVAIL_WRAP);
  let freeHead = load<u32>(q, Q_FREE_HEAD);
  let numFree = load<u32>(q, Q_NUM_FREE);
  let k: i32 = 0;
  let descs: u32 = 0;
  for (; k < n; k++) {
    const r = reqs + <usize>k * REQ_REC;
    const token = load<u32>(r);
    const seg0 = dsegs + <usize>load<u32>(r, 4) * DSEG_REC;
    const nsegs = load<u32>(r, 8);
    if (nsegs == 1 && !inOrder) {
      // Hot path: a one-buffer chain is one descriptor, nothing to order-check.
      if (numFree == 0) break;
      const id = freeHead;
      const hs = st + <usize>id * DSTATE_REC;
      freeHead = load<u32>(hs, 8);
      const d = ring + (<usize>pos << 4);
      const wr = load<u32>(seg0, 12) & 1;
      const len = load<u32>(seg0, 8);
      store<u64>(d, load<u64>(seg0));
      store<u32>(d, len, 8);
      store<u16>(d, <u16>id, 12);
      store<u32>(hs, token);
      store<u32>(hs, 1, 4);
      store<u32>(hs, wr ? len : 0, 12);
      ast16(d, (wr ? VRING_DESC_F_WRITE : 0) | availBits(wrap), 14);
      if (++pos == size) { pos = 0; wrap ^= 1; }
      numFree--;
      descs++;
      continue;
    }
    const useIndirect = (f & Q_F_INDIRECT) != 0 && pool != 0 && nsegs > 1 && nsegs <= imax;
    const need: u32 = useIndirect ? 1 : nsegs;
    const inLen = requestInLen(seg0, nsegs);
    if (nsegs == 0 || need > size || inLen < 0) {
      // A malformed request ends the batch; the ones before it are published below (their
      // flags are already stored: the position and counts must follow them).
      if (k == 0) return STATUS_INVALID_ARG;
      break;
    }
    if (need > numFree) break;
    // In order, the buffer id is the head slot: ids then come back in slot order.
    let id: u32;
    if (inOrder) {
      id = pos;
    } else {
      id = freeHead;
      freeHead = load<u32>(st + <usize>id * DSTATE_REC, 8);
    }
    const headPos = pos;
    let headFlags: u32;
    if (useIndirect) {
      const table = pool + <usize>id * <usize>imax * 16;
      for (let j: u32 = 0; j < nsegs; j++) {
        const s = seg0 + <usize>j * DSEG_REC;
        const d = table + (<usize>j << 4);
        store<u64>(d, load<u64>(s));
        store<u32>(d, load<u32>(s, 8), 8);
        store<u16>(d, 0, 12);
        store<u16>(d, (load<u32>(s, 12) & 1) ? <u16>VRING_DESC_F_WRITE : 0, 14);
      }
      const d = ring + (<usize>pos << 4);
      store<u64>(d, dmaBase + <u64>table);
      store<u32>(d, nsegs << 4, 8);
      store<u16>(d, <u16>id, 12);
      headFlags = VRING_DESC_F_INDIRECT | availBits(wrap);
      if (++pos == size) { pos = 0; wrap ^= 1; }
    } else {
      headFlags = 0;
      for (let j: u32 = 0; j < nsegs; j++) {
        const s = seg0 + <usize>j * DSEG_REC;
        const d = ring + (<usize>pos << 4);
        store<u64>(d, load<u64>(s));
        store<u32>(d, load<u32>(s, 8), 8);
        // Linux writes the id into every descriptor of the chain; the device reads the last.
        store<u16>(d, <u16>id, 12);
        const fl = ((load<u32>(s, 12) & 1) ? VRING_DESC_F_WRITE : 0) |
          (j + 1 < nsegs ? VRING_DESC_F_NEXT : 0) | availBits(wrap);
        if (j == 0) headFlags = fl; else store<u16>(d, <u16>fl, 14);
        if (++pos == size) { pos = 0; wrap ^= 1; }
      }
    }
    const hs = st + <usize>id * DSTATE_REC;
    store<u32>(hs, token);
    store<u32>(hs, need, 4);
    store<u32>(hs, <u32>inLen, 12);
    // Release: §2.8.21.2 the driver MUST NOT make the first descriptor available before the
    // rest of the chain: its flags go last.
    ast16(ring + (<usize>headPos << 4), <u16>headFlags, 14);
    numFree -= need;
    descs += need;
  }
  if (k > 0) {
    store<u32>(q, pos, Q_AVAIL);
    store<u32>(q, wrap, Q_AVAIL_WRAP);
    store<u32>(q, freeHead, Q_FREE_HEAD);
    store<u32>(q, numFree, Q_NUM_FREE);
    store<u32>(q, load<u32>(q, Q_PENDING) + <u32>descs, Q_PENDING);
    store<u32>(q, load<u32>(q, Q_INFLIGHT) + <u32>k, Q_INFLIGHT);
    addStat(q, Q_STAT_CHAINS, <u64>k);
    addStat(q, Q_STAT_DESCS, <u64>descs);
  }
  return k;
}

/** Adds up to n one-buffer chains from buffer records; same contract as split drvAddBufs. */
// @ts-ignore: decorator
@inline export function drvAddBufs(q: usize, bufs: usize, n: i32, flags: u32): i32 {
  const size = load<u32>(q, Q_SIZE);
  const inOrder = (load<u32>(q, Q_FLAGS) & Q_F_IN_ORDER) != 0;
  const ring = <usize>load<u32>(q, Q_DESC);
  const st = <usize>load<u32>(q, Q_DSTATE);
  const wr = (flags & 1) != 0;
  const wf: u32 = wr ? VRING_DESC_F_WRITE : 0;
  let pos = load<u32>(q, Q_AVAIL);
  let wrap = load<u32>(q, Q_AVAIL_WRAP);
  let freeHead = load<u32>(q, Q_FREE_HEAD);
  let numFree = load<u32>(q, Q_NUM_FREE);
  let ab = availBits(wrap); // this lap's AVAIL/USED pattern, updated when the position wraps
  let k: i32 = 0;
  for (; k < n && numFree != 0; k++) {
    const b = bufs + (<usize>k << 4);
    // In order, the buffer id is the head slot (as drvAdd); else the free list's head.
    let id: u32;
    if (inOrder) {
      id = pos;
    } else {
      id = freeHead;
      freeHead = load<u32>(st + <usize>id * DSTATE_REC, 8);
    }
    const hs = st + <usize>id * DSTATE_REC;
    const d = ring + (<usize>pos << 4);
    const len = load<u32>(b, 8);
    store<u64>(d, load<u64>(b));
    store<u32>(d, len, 8);
    store<u16>(d, <u16>id, 12);
    store<u64>(hs, <u64>load<u32>(b, 12) | (<u64>1 << 32)); // token, ndesc 1
    store<u32>(hs, wr ? len : 0, 12);
    // Release: §2.8.21.2 addr, len and id before the flags that make it available.
    ast16(d, wf | ab, 14);
    if (++pos == size) { pos = 0; wrap ^= 1; ab = availBits(wrap); }
    numFree--;
  }
  if (k > 0) {
    store<u32>(q, pos, Q_AVAIL);
    store<u32>(q, wrap, Q_AVAIL_WRAP);
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

/** Kick decision from the device event suppression area (virtqueue_kick_prepare_packed). */
// @ts-ignore: decorator
@inline export function drvKickPrepare(q: usize): i32 {
  const added = load<u32>(q, Q_PENDING);
  if (added == 0) return 0;
  store<u32>(q, 0, Q_PENDING);
  const ev = ald32(<usize>load<u32>(q, Q_DEVICE));
  const evFlags = ev >> 16;
  if (evFlags != VRING_PACKED_EVENT_FLAG_DESC || !(load<u32>(q, Q_FLAGS) & Q_F_EVENT_IDX)) {
    return evFlags != VRING_PACKED_EVENT_FLAG_DISABLE ? 1 : 0;
  }
  // Running counts: new = next avail slot, old = new - descriptors added (mod 2^16), and
  // event_idx moved back by the ring size when its wrap counter is not ours, as Linux
  // virtqueue_kick_prepare_packed.
  const size = load<u32>(q, Q_SIZE);
  // A whole ring added since the last decision passed every event offset (Linux's slot
  // arithmetic would see old == new here and not kick).
  if (added >= size) return 1;
  return packedNeedEvent(size, load<u32>(q, Q_AVAIL_WRAP), ev & 0xffff, load<u32>(q, Q_AVAIL), added) ? 1 : 0;
}

/** Reclaims up to max used buffers. Same contract (and outputs) as split drvGetUsed. */
// @ts-ignore: decorator
@inline export function drvGetUsed(q: usize, outTok: usize, outLen: usize, stride: u32, max: i32): i32 {
  const size = load<u32>(q, Q_SIZE);
  const ring = <usize>load<u32>(q, Q_DESC);
  const st = <usize>load<u32>(q, Q_DSTATE);
  const inOrder = (load<u32>(q, Q_FLAGS) & Q_F_IN_ORDER) != 0;
  let pos = load<u32>(q, Q_USED);
  let wrap = load<u32>(q, Q_USED_WRAP);
  let freeHead = load<u32>(q, Q_FREE_HEAD);
  let numFree = load<u32>(q, Q_NUM_FREE);
  let k: i32 = 0;
  // A bad entry breaks the queue, but the good entries before it in this batch are still
  // returned (and committed below): their tokens must not be lost to the caller.
  let err: i32 = 0;
  if (!inOrder) {
    // The common case in a loop of its own: the same checks, no in-order batch bookkeeping.
    let ub = usedBits(wrap);
    while (k < max) {
      const d = ring + (<usize>pos << 4);
      // Acquire: id and len are read after the flags that say the descriptor is used.
      if ((<u32>ald16(d, 14) & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) != ub) break;
      const id = <u32>load<u16>(d, 12);
      const len = load<u32>(d, 8);
      if (id >= size) { err = fail(q, STATUS_USED_ID_INVALID); break; }
      const s = st + <usize>id * DSTATE_REC;
      const nd = load<u32>(s, 4);
      if (nd == 0) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
      store<u32>(outTok + <usize>k * stride, load<u32>(s));
      if (outLen != 0) store<u32>(outLen + <usize>k * stride, len);
      store<u64>(s, <u64>freeHead << 32, 4); // ndesc = 0 (not in flight), next = free list
      freeHead = id;
      numFree += nd;
      pos += nd;
      if (pos >= size) { pos -= size; wrap ^= 1; ub = usedBits(wrap); }
      k++;
    }
  } else while (k < max) {
    let id: u32;
    let len: u32;
    if (inOrder) {
      // §2.8.10: one used descriptor may stand for a batch ending at its id; every buffer
      // before it is used too and reports its full writable length (as Linux).
      let bid = load<u32>(q, Q_BATCH_ID);
      if (bid == 0xFFFF_FFFF) {
        const d = ring + (<usize>pos << 4);
        if (!isUsed(<u32>ald16(d, 14), wrap)) break;
        bid = <u32>load<u16>(d, 12);
        if (bid >= size) { err = fail(q, STATUS_USED_ID_INVALID); break; }
        store<u32>(q, bid, Q_BATCH_ID);
        store<u32>(q, load<u32>(d, 8), Q_BATCH_LEN);
      }
      // A batch cannot stand for more buffers than are in flight (k are already reclaimed).
      if (<u32>k >= inFlight(q)) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
      id = pos; // ids are head slots; the oldest buffer in flight starts at pos
      const s = st + <usize>id * DSTATE_REC;
      if (load<u32>(s, 4) == 0) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
      if (id == bid) {
        len = load<u32>(q, Q_BATCH_LEN);
        store<u32>(q, 0xFFFF_FFFF, Q_BATCH_ID);
      } else {
        len = load<u32>(s, 12);
      }
    } else {
      const d = ring + (<usize>pos << 4);
      // Acquire: id and len are read after the flags that say the descriptor is used.
      // len is taken whether or not WRITE is set, as Linux does (QEMU never sets WRITE).
      if (!isUsed(<u32>ald16(d, 14), wrap)) break;
      id = <u32>load<u16>(d, 12);
      len = load<u32>(d, 8);
      if (id >= size) { err = fail(q, STATUS_USED_ID_INVALID); break; }
      if (load<u32>(st + <usize>id * DSTATE_REC, 4) == 0) { err = fail(q, STATUS_USED_ID_NOT_INFLIGHT); break; }
    }
    const s = st + <usize>id * DSTATE_REC;
    const nd = load<u32>(s, 4);
    store<u32>(outTok + <usize>k * stride, load<u32>(s));
    if (outLen != 0) store<u32>(outLen + <usize>k * stride, len);
    if (inOrder) {
      store<u32>(s, 0, 4);
    } else {
      store<u64>(s, <u64>freeHead << 32, 4); // ndesc = 0 (not in flight), next = free list
      freeHead = id;
    }
    numFree += nd;
    pos += nd;
    if (pos >= size) { pos -= size; wrap ^= 1; }
    k++;
  }
  addStat(q, Q_STAT_USED, <u64>k);
  store<u32>(q, load<u32>(q, Q_INFLIGHT) - <u32>k, Q_INFLIGHT);
  store<u32>(q, pos, Q_USED);
  store<u32>(q, wrap, Q_USED_WRAP);
  store<u32>(q, freeHead, Q_FREE_HEAD);
  store<u32>(q, numFree, Q_NUM_FREE);
  return k > 0 ? k : err;
}

/** Re-enables used-buffer notifications. Returns 1 if used buffers are already pending. */
export function drvEnableCb(q: usize): i32 {
  const f = load<u32>(q, Q_FLAGS);
  store<u32>(q, f & ~Q_F_CB_OFF, Q_FLAGS);
  const drv = <usize>load<u32>(q, Q_DRIVER);
  const pos = load<u32>(q, Q_USED);
  const wrap = load<u32>(q, Q_USED_WRAP);
  if (f & Q_F_EVENT_IDX) {
    // "Notify me when the device writes the used descriptor at slot pos in this wrap."
    ast32(drv, pos | (wrap << VRING_PACKED_EVENT_F_WRAP_CTR) | (VRING_PACKED_EVENT_FLAG_DESC << 16));
  } else {
    ast32(drv, VRING_PACKED_EVENT_FLAG_ENABLE << 16);
  }
  if (load<u32>(q, Q_BATCH_ID) != 0xFFFF_FFFF) return 1;
  const ring = <usize>load<u32>(q, Q_DESC);
  return isUsed(<u32>ald16(ring + (<usize>pos << 4), 14), wrap) ? 1 : 0;
}

/** Suppresses used-buffer notifications (flags = DISABLE, as virtqueue_disable_cb_packed). */
export function drvDisableCb(q: usize): void {
  store<u32>(q, load<u32>(q, Q_FLAGS) | Q_F_CB_OFF, Q_FLAGS);
  ast16(<usize>load<u32>(q, Q_DRIVER), <u16>VRING_PACKED_EVENT_FLAG_DISABLE, 2);
}

/** 1 if a used descriptor waits at the next used slot, else 0. */
export function drvUsedPending(q: usize): i32 {
  if (load<u32>(q, Q_BATCH_ID) != 0xFFFF_FFFF) return 1;
  const ring = <usize>load<u32>(q, Q_DESC);
  const pos = load<u32>(q, Q_USED);
  return isUsed(<u32>ald16(ring + (<usize>pos << 4), 14), load<u32>(q, Q_USED_WRAP)) ? 1 : 0;
}
