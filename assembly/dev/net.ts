// vdpasim_net's datapath in wasm (VIRTIO 1.3 §5.1.6): the one home of the control-queue
// command parser (§5.1.6.5) and of the receive filter it configures (§5.1.6.5.1-2), and the
// copies into rx chains — from tx chains (loopback) or from frames staged off the wire. One
// call per batch; frames and commands never visit JavaScript.

import { chainAt, segAt, segCopy, C_SEG, C_NREAD, C_NWRITE, C_RBYTES, C_WBYTES, C_WRITTEN } from "../ring/chain";
import { devUnpop } from "../ring/unpop";

/** Bytes of struct virtio_net_hdr_v1 (VIRTIO 1.3 §5.1.6). */
// @ts-ignore: decorator
@inline const HDR: u32 = 12;
/** Ethernet header. */
// @ts-ignore: decorator
@inline const ETH: u32 = 14;

// The filter block: the whole control-queue state of a device, laid out by
// src/devices/net-ctrl.ts (FILTER_* there mirror these):
//   0 u32 rx mode flags | 4 u8 mac[6] | 10 u16 queue pairs | 12 u32 nuni | 16 u32 nmulti
//   20 uni[64][6] | 404 multi[64][6] | 788 VLAN bitmap (4096 bits)
//   1300 u32 caps (negotiated command groups; bits 16-31 max pairs) | 1304 u32 events
// @ts-ignore: decorator
@inline const F_MAC: u32 = 4;
// @ts-ignore: decorator
@inline const F_PAIRS: u32 = 10;
// @ts-ignore: decorator
@inline const F_NUNI: u32 = 12;
// @ts-ignore: decorator
@inline const F_NMULTI: u32 = 16;
// @ts-ignore: decorator
@inline const UNI: u32 = 20;
// @ts-ignore: decorator
@inline const MULTI: u32 = 404;
// @ts-ignore: decorator
@inline const VLANS: u32 = 788;
// @ts-ignore: decorator
@inline const F_CAPS: u32 = 1300;
// @ts-ignore: decorator
@inline const F_EVENTS: u32 = 1304;

// Rx mode flags: bit n is VIRTIO_NET_CTRL_RX command n (linux/virtio_net.h).
// @ts-ignore: decorator
@inline const M_PROMISC: u32 = 1;
// @ts-ignore: decorator
@inline const M_ALLMULTI: u32 = 2;
// @ts-ignore: decorator
@inline const M_ALLUNI: u32 = 4;
// @ts-ignore: decorator
@inline const M_NOMULTI: u32 = 8;
// @ts-ignore: decorator
@inline const M_NOUNI: u32 = 16;
// @ts-ignore: decorator
@inline const M_NOBCAST: u32 = 32;

// Caps: which command groups the negotiated features allow (§5.1.6.5).
// @ts-ignore: decorator
@inline const CAP_RX: u32 = 1;        // VIRTIO_NET_F_CTRL_RX
// @ts-ignore: decorator
@inline const CAP_RX_EXTRA: u32 = 2;  // VIRTIO_NET_F_CTRL_RX_EXTRA
// @ts-ignore: decorator
@inline const CAP_VLAN: u32 = 4;      // VIRTIO_NET_F_CTRL_VLAN (also: the VLAN filter is on)
// @ts-ignore: decorator
@inline const CAP_MAC_ADDR: u32 = 8;  // VIRTIO_NET_F_CTRL_MAC_ADDR
// @ts-ignore: decorator
@inline const CAP_MQ: u32 = 16;       // VIRTIO_NET_F_MQ
// @ts-ignore: decorator
@inline const CAP_ANNOUNCE: u32 = 32; // VIRTIO_NET_F_GUEST_ANNOUNCE

/** Events bit: MAC_ADDR_SET changed the MAC at F_MAC (the device updates its config space). */
// @ts-ignore: decorator
@inline const EV_MAC: u32 = 1;
/** Events bit: the driver acked an announcement (VIRTIO_NET_CTRL_ANNOUNCE_ACK). */
// @ts-ignore: decorator
@inline const EV_ANNOUNCE_ACK: u32 = 2;

/** Most entries per MAC table (QEMU's MAC_TABLE_ENTRIES is 64). */
// @ts-ignore: decorator
@inline const MAC_TABLE_MAX: u32 = 64;
/**
 * The longest legitimate command: class, command and a MAC_TABLE_SET of two full tables
 * (2 + 2 × (4 + 6 × 64) = 778 bytes). Nothing longer is read.
 */
// @ts-ignore: decorator
@inline const CTRL_MAX: u32 = 2 + 2 * (4 + 6 * MAC_TABLE_MAX);

// Command classes and commands (linux/virtio_net.h).
// @ts-ignore: decorator
@inline const CTRL_RX: u8 = 0;
// @ts-ignore: decorator
@inline const CTRL_MAC: u8 = 1;
// @ts-ignore: decorator
@inline const CTRL_MAC_TABLE_SET: u8 = 0;
// @ts-ignore: decorator
@inline const CTRL_MAC_ADDR_SET: u8 = 1;
// @ts-ignore: decorator
@inline const CTRL_VLAN: u8 = 2;
// @ts-ignore: decorator
@inline const CTRL_VLAN_ADD: u8 = 0;
// @ts-ignore: decorator
@inline const CTRL_VLAN_DEL: u8 = 1;
// @ts-ignore: decorator
@inline const CTRL_ANNOUNCE: u8 = 3;
// @ts-ignore: decorator
@inline const CTRL_ANNOUNCE_ACK: u8 = 0;
// @ts-ignore: decorator
@inline const CTRL_MQ: u8 = 4;
// @ts-ignore: decorator
@inline const CTRL_MQ_VQ_PAIRS_SET: u8 = 0;
// @ts-ignore: decorator
@inline const NET_OK: u8 = 0;
// @ts-ignore: decorator
@inline const NET_ERR: u8 = 1;

/** Copies up to len bytes at offset `skip` of a chain's readable segments to `dst`; returns bytes copied. */
// @ts-ignore: decorator
@inline function readAt(segs: usize, s0: u32, n: u32, skip: u32, dst: usize, len: u32): u32 {
  return segCopy(segs, s0, n, skip, dst, len, false);
}

/** Copies len bytes from `src` into a chain's writable segments at offset `skip`; returns bytes copied. */
// @ts-ignore: decorator
@inline function writeAt(segs: usize, s0: u32, n: u32, skip: u32, src: usize, len: u32): u32 {
  return segCopy(segs, s0, n, skip, src, len, true);
}

/** True if the 6 bytes at a equal the 6 bytes at b. */
// @ts-ignore: decorator
@inline function mac6(a: usize, b: usize): bool {
  return load<u32>(a) == load<u32>(b) && load<u16>(a, 4) == load<u16>(b, 4);
}

/** True if the MAC at `m` is in the table of `count` entries at `tbl`. */
function inTable(tbl: usize, count: u32, m: usize): bool {
  for (let i: u32 = 0; i < count; i++) if (mac6(tbl + i * 6, m)) return true;
  return false;
}

/**
 * The receive filter for the Ethernet header (dst, src, type, tci) at `h` (§5.1.6.5.1-2, in
 * QEMU's receive_filter order): promiscuous takes all; with VLAN filtering a tagged frame needs
 * its id in the table; broadcast unless nobcast; multicast by nomulti / allmulti / table;
 * unicast by nouni / alluni / own MAC / table.
 */
function accepts(f: usize, h: usize): bool {
  const fl = load<u32>(f);
  if (fl & M_PROMISC) return true;
  if ((load<u32>(f, F_CAPS) & CAP_VLAN) && load<u8>(h, 12) == 0x81 && load<u8>(h, 13) == 0) {
    const vid = ((<u32>load<u8>(h, 14) << 8) | <u32>load<u8>(h, 15)) & 0xfff;
    if (!(load<u8>(f + VLANS + (vid >> 3)) & (1 << (vid & 7)))) return false;
  }
  if (load<u8>(h) & 1) {
    if (load<u32>(h) == 0xffffffff && load<u16>(h, 4) == 0xffff) return (fl & M_NOBCAST) == 0;
    if (fl & M_NOMULTI) return false;
    return (fl & M_ALLMULTI) != 0 || inTable(f + MULTI, load<u32>(f, F_NMULTI), h);
  }
  if (fl & M_NOUNI) return false;
  if (fl & M_ALLUNI) return true;
  return mac6(f + F_MAC, h) || inTable(f + UNI, load<u32>(f, F_NUNI), h);
}

/**
 * Runs one command of `len` bytes (class, command, data) at `c` against the filter block.
 * Returns VIRTIO_NET_OK or VIRTIO_NET_ERR; a refused command changes nothing.
 */
function execute(f: usize, c: usize, len: u32): u8 {
  if (len < 2) return NET_ERR;
  const cls = load<u8>(c);
  const cmd = load<u8>(c, 1);
  const d = c + 2;
  const dl = len - 2;
  const caps = load<u32>(f, F_CAPS);
  if (cls == CTRL_RX) {
    // §5.1.6.5.1: one byte, 0 off / non-zero on. ALLUNI, NOMULTI, NOUNI, NOBCAST need RX_EXTRA.
    if (!(caps & CAP_RX) || dl != 1 || cmd > 5 || (cmd >= 2 && !(caps & CAP_RX_EXTRA))) return NET_ERR;
    const bit: u32 = 1 << cmd;
    const fl = load<u32>(f);
    store<u32>(f, load<u8>(d) != 0 ? fl | bit : fl & ~bit);
    return NET_OK;
  }
  if (cls == CTRL_MAC) {
    if (cmd == CTRL_MAC_ADDR_SET) {
      // §5.1.6.5.2: a 6-byte address; a multicast one is refused (as QEMU).
      if (!(caps & CAP_MAC_ADDR) || dl != 6 || (load<u8>(d) & 1)) return NET_ERR;
      memory.copy(f + F_MAC, d, 6);
      store<u32>(f, load<u32>(f, F_EVENTS) | EV_MAC, F_EVENTS);
      return NET_OK;
    }
    if (cmd != CTRL_MAC_TABLE_SET || !(caps & CAP_RX)) return NET_ERR;
    // Two struct virtio_net_ctrl_mac { le32 entries; u8 macs[entries][6]; }: unicast, multicast.
    if (dl < 8) return NET_ERR;
    const nu = load<u32>(d);
    const mo: u32 = <u32>4 + <u32>6 * nu;
    if (nu > MAC_TABLE_MAX || mo + 4 > dl) return NET_ERR;
    const nm = load<u32>(d + mo);
    if (nm > MAC_TABLE_MAX || mo + <u32>4 + <u32>6 * nm != dl) return NET_ERR;
    store<u32>(f, nu, F_NUNI);
    memory.copy(f + UNI, d + 4, 6 * nu);
    store<u32>(f, nm, F_NMULTI);
    memory.copy(f + MULTI, d + mo + 4, 6 * nm);
    return NET_OK;
  }
  if (cls == CTRL_VLAN) {
    // §5.1.6.5.3: le16 id; 12 bits, and 4095 is reserved (IEEE 802.1Q).
    if (!(caps & CAP_VLAN) || dl != 2) return NET_ERR;
    const vid = <u32>load<u16>(d);
    if (vid >= 4095) return NET_ERR;
    const at = f + VLANS + (vid >> 3);
    const bit = <u8>(<u32>1 << (vid & 7));
    if (cmd == CTRL_VLAN_ADD) store<u8>(at, load<u8>(at) | bit);
    else if (cmd == CTRL_VLAN_DEL) store<u8>(at, load<u8>(at) & ~bit);
    else return NET_ERR;
    return NET_OK;
  }
  if (cls == CTRL_ANNOUNCE) {
    if (!(caps & CAP_ANNOUNCE) || cmd != CTRL_ANNOUNCE_ACK || dl != 0) return NET_ERR;
    // §5.1.6.5.4: the device clears VIRTIO_NET_S_ANNOUNCE (TS does, in config space).
    store<u32>(f, load<u32>(f, F_EVENTS) | EV_ANNOUNCE_ACK, F_EVENTS);
    return NET_OK;
  }
  if (cls == CTRL_MQ) {
    // §5.1.6.5.6.1: 1 ≤ virtqueue_pairs ≤ max_virtqueue_pairs.
    if (!(caps & CAP_MQ) || cmd != CTRL_MQ_VQ_PAIRS_SET || dl != 2) return NET_ERR;
    const n = <u32>load<u16>(d);
    if (n < 1 || n > (caps >> 16)) return NET_ERR;
    store<u16>(f, <u16>n, F_PAIRS);
    return NET_OK;
  }
  return NET_ERR;
}

/**
 * Serves popped control chains [0, n): struct virtio_net_ctrl { u8 class; u8 command; data;
 * u8 ack } (§5.1.6.5). Each command is read into `scratch` (CTRL_MAX bytes) only if its
 * readable size is one a command can have; a longer one is refused unread. The ack goes to the
 * first writable byte (written = 1); a chain with no writable byte gets nothing (written = 0).
 * Returns n.
 */
export function netCtrl(chains: usize, n: i32, segs: usize, filter: usize, scratch: usize): i32 {
  for (let i: i32 = 0; i < n; i++) {
    const rec = chainAt(chains, i);
    const s0 = load<u32>(rec, C_SEG);
    const nr = <u32>load<u16>(rec, C_NREAD);
    const len = load<u32>(rec, C_RBYTES);
    if (load<u32>(rec, C_WBYTES) == 0) {
      store<u32>(rec, 0, C_WRITTEN);
      continue;
    }
    let ack = NET_ERR;
    if (len >= 2 && len <= CTRL_MAX) {
      readAt(segs, s0, nr, 0, scratch, len);
      ack = execute(filter, scratch, len);
    }
    store<u8>(scratch, ack);
    writeAt(segs, s0 + nr, <u32>load<u16>(rec, C_NWRITE), 0, scratch, 1);
    store<u32>(rec, 1, C_WRITTEN);
  }
  return n;
}

/**
 * Classifies popped tx chains [0, n): verdict[i] = 1 to deliver, 0 filtered out, 2 not a frame
 * (shorter than header + Ethernet header, or longer than maxLen). `scratch` holds 32 bytes;
 * u32 counts of filtered and non-frames are added at scratch+24 and scratch+28.
 * Returns how many are to be delivered.
 */
export function netFilter(chains: usize, n: i32, segs: usize, filter: usize, maxLen: u32, verdict: usize, scratch: usize): i32 {
  let ok: i32 = 0;
  for (let i: i32 = 0; i < n; i++) {
    const rec = chainAt(chains, i);
    const len = load<u32>(rec, C_RBYTES);
    let v: u8 = 2;
    if (len >= HDR + ETH && len <= maxLen) {
      memory.fill(scratch, 0, 18);
      readAt(segs, load<u32>(rec, C_SEG), <u32>load<u16>(rec, C_NREAD), HDR, scratch, 18);
      v = accepts(filter, scratch) ? 1 : 0;
    }
    store<u8>(verdict + i, v);
    if (v == 1) ok++;
    else if (v == 0) store<u32>(scratch, load<u32>(scratch, 24) + 1, 24);
    else store<u32>(scratch, load<u32>(scratch, 28) + 1, 28);
  }
  return ok;
}

/**
 * Filters frames staged at base + i·stride (lens[i] bytes each: a virtio-net header, then the
 * Ethernet frame) in place: accepted ones move to the front, in order, with their lengths.
 * `scratch` holds 32 bytes. Returns how many were accepted.
 */
export function netFilterStaged(base: usize, stride: u32, lens: usize, n: i32, filter: usize, scratch: usize): i32 {
  let k: i32 = 0;
  for (let i: i32 = 0; i < n; i++) {
    const at = base + <usize>i * stride;
    const len = load<u32>(lens + (<usize>i << 2));
    memory.fill(scratch, 0, 18);
    const hl: u32 = len - HDR < 18 ? len - HDR : 18;
    memory.copy(scratch, at + HDR, <usize>hl);
    if (!accepts(filter, scratch)) continue;
    if (k != i) {
      memory.copy(base + <usize>k * stride, at, len);
      store<u32>(lens + (<usize>k << 2), len);
    }
    k++;
  }
  return k;
}

/** Writes the virtio_net_hdr_v1 the driver sees into rx chain `r`: no offloads, num_buffers 1. */
function putHeader(r: usize, rxSegs: usize, hdr: usize): void {
  // §5.1.6.4: num_buffers is how many buffers the frame took — 1 without MRG_RXBUF, and 1 with
  // it too, since this device never merges buffers (a frame that does not fit one is dropped).
  memory.fill(hdr, 0, HDR);
  store<u16>(hdr, 1, 10);
  writeAt(rxSegs, load<u32>(r, C_SEG) + <u32>load<u16>(r, C_NREAD), <u32>load<u16>(r, C_NWRITE), 0, hdr, HDR);
}

/**
 * Loopback: copies every tx chain with verdict 1 (its frame, after a fresh header) into the
 * next rx chain [0, m). A frame bigger than the next rx buffer is dropped and the buffer kept
 * for the frame after it; rx chains left unused go back to the ring (rxq: their queue state
 * block). `scratch`: 16 bytes. stats (u32 each): [0] += delivered, [1] += bytes,
 * [2] += too big, [3] = tx chains looked at. Returns the rx chains used.
 */
export function netLoop(tx: usize, n: i32, txSegs: usize, verdict: usize, rxq: usize, rx: usize, m: i32, rxSegs: usize, stats: usize, scratch: usize): i32 {
  let k: i32 = 0;
  let i: i32 = 0;
  for (; i < n && k < m; i++) {
    if (load<u8>(verdict + i) != 1) continue;
    const t = chainAt(tx, i);
    const r = chainAt(rx, k);
    const len = load<u32>(t, C_RBYTES);
    if (len > load<u32>(r, C_WBYTES)) {
      store<u32>(stats, load<u32>(stats, 8) + 1, 8);
      continue;
    }
    k++;
    // Segment-to-segment copy of the frame: the tx readable and rx writable segments together,
    // both past the header.
    const ts0 = load<u32>(t, C_SEG);
    const tn = <u32>load<u16>(t, C_NREAD);
    const rs0 = load<u32>(r, C_SEG) + <u32>load<u16>(r, C_NREAD);
    const rn = <u32>load<u16>(r, C_NWRITE);
    let tj: u32 = 0;
    let toff: u32 = HDR;
    let rj: u32 = 0;
    let roff: u32 = HDR;
    // Skip the header in whole segments first.
    while (tj < tn && toff >= load<u32>(segAt(txSegs, ts0 + tj), 4)) { toff -= load<u32>(segAt(txSegs, ts0 + tj), 4); tj++; }
    while (rj < rn && roff >= load<u32>(segAt(rxSegs, rs0 + rj), 4)) { roff -= load<u32>(segAt(rxSegs, rs0 + rj), 4); rj++; }
    let left = len - HDR;
    while (left != 0 && tj < tn && rj < rn) {
      const ts = segAt(txSegs, ts0 + tj);
      const rsg = segAt(rxSegs, rs0 + rj);
      let c = load<u32>(ts, 4) - toff;
      const rl = load<u32>(rsg, 4) - roff;
      if (rl < c) c = rl;
      if (left < c) c = left;
      memory.copy(<usize>load<u32>(rsg) + roff, <usize>load<u32>(ts) + toff, c);
      toff += c;
      roff += c;
      left -= c;
      if (toff == load<u32>(ts, 4)) { tj++; toff = 0; }
      if (roff == load<u32>(rsg, 4)) { rj++; roff = 0; }
    }
    putHeader(r, rxSegs, scratch);
    store<u32>(r, len, C_WRITTEN);
    store<u32>(stats, load<u32>(stats) + 1);
    store<u32>(stats, load<u32>(stats, 4) + len, 4);
  }
  store<u32>(stats, <u32>i, 12);
  devUnpop(rxq, rx, k, m);
  return k;
}

/**
 * Places frames staged at base + j·stride (lens[j] bytes: header, then frame) into popped rx
 * chains [0, m) in order. A frame bigger than the next rx buffer is dropped and the buffer kept
 * for the next frame; rx chains left unused go back to the ring (rxq: their queue state
 * block). stats (u32 each): [0] += delivered, [1] += bytes, [2] += too big, [3] = frames
 * consumed (delivered or dropped). Returns the rx chains used.
 */
export function netPlace(base: usize, stride: u32, lens: usize, n: i32, rxq: usize, rx: usize, m: i32, rxSegs: usize, stats: usize): i32 {
  let k: i32 = 0;
  let j: i32 = 0;
  for (; j < n && k < m; j++) {
    const len = load<u32>(lens + (<usize>j << 2));
    const r = chainAt(rx, k);
    if (len > load<u32>(r, C_WBYTES)) {
      store<u32>(stats, load<u32>(stats, 8) + 1, 8);
      continue;
    }
    k++;
    writeAt(rxSegs, load<u32>(r, C_SEG) + <u32>load<u16>(r, C_NREAD), <u32>load<u16>(r, C_NWRITE), 0, base + <usize>j * stride, len);
    store<u32>(r, len, C_WRITTEN);
    store<u32>(stats, load<u32>(stats) + 1);
    store<u32>(stats, load<u32>(stats, 4) + len, 4);
  }
  store<u32>(stats, <u32>j, 12);
  devUnpop(rxq, rx, k, m);
  return k;
}
