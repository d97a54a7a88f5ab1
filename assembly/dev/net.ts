// vdpasim_net's datapath in wasm (VIRTIO 1.3 §5.1.6): the receive filter of the control
// queue (§5.1.6.5.1-2) over a batch of frames still in their tx chains, and the loopback copy
// from tx chains straight into rx chains. One call per batch; frames never visit JavaScript.

import { chainAt, segAt, C_SEG, C_NREAD, C_NWRITE, C_RBYTES, C_WBYTES, C_WRITTEN } from "../ring/chain";

/** Bytes of struct virtio_net_hdr_v1. */
// @ts-ignore: decorator
@inline const HDR: u32 = 12;
/** Ethernet header. */
// @ts-ignore: decorator
@inline const ETH: u32 = 14;

// Filter block, laid out by src/devices/net-ctrl.ts (NetCtrlState.sync):
//   0 u32 flags | 4 u8 mac[6] | 12 u32 nuni | 16 u32 nmulti | 20 uni[64][6] | 404 multi[64][6]
//   788 vlan bitmap (4096 bits)
// @ts-ignore: decorator
@inline const F_PROMISC: u32 = 1;
// @ts-ignore: decorator
@inline const F_ALLMULTI: u32 = 2;
// @ts-ignore: decorator
@inline const F_ALLUNI: u32 = 4;
// @ts-ignore: decorator
@inline const F_NOMULTI: u32 = 8;
// @ts-ignore: decorator
@inline const F_NOUNI: u32 = 16;
// @ts-ignore: decorator
@inline const F_NOBCAST: u32 = 32;
// @ts-ignore: decorator
@inline const F_VLAN: u32 = 64;
// @ts-ignore: decorator
@inline const UNI: u32 = 20;
// @ts-ignore: decorator
@inline const MULTI: u32 = 404;
// @ts-ignore: decorator
@inline const VLANS: u32 = 788;

/** Copies up to len bytes at offset `skip` of a chain's readable segments to `dst`; returns bytes copied. */
function readAt(segs: usize, s0: u32, n: u32, skip: u32, dst: usize, len: u32): u32 {
  let done: u32 = 0;
  for (let j: u32 = 0; j < n && done < len; j++) {
    const s = segAt(segs, s0 + j);
    let l = load<u32>(s, 4);
    if (skip >= l) {
      skip -= l;
      continue;
    }
    let a = <usize>load<u32>(s) + skip;
    l -= skip;
    skip = 0;
    if (l > len - done) l = len - done;
    memory.copy(dst + done, a, l);
    done += l;
  }
  return done;
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

/** The receive filter for the Ethernet header (dst, src, type, tci) at `h` (QEMU receive_filter order). */
function accepts(f: usize, h: usize): bool {
  const fl = load<u32>(f);
  if (fl & F_PROMISC) return true;
  if ((fl & F_VLAN) && load<u8>(h, 12) == 0x81 && load<u8>(h, 13) == 0) {
    const vid = ((<u32>load<u8>(h, 14) << 8) | <u32>load<u8>(h, 15)) & 0xfff;
    if (!(load<u8>(f + VLANS + (vid >> 3)) & (1 << (vid & 7)))) return false;
  }
  if (load<u8>(h) & 1) {
    if (load<u32>(h) == 0xffffffff && load<u16>(h, 4) == 0xffff) return (fl & F_NOBCAST) == 0;
    if (fl & F_NOMULTI) return false;
    return (fl & F_ALLMULTI) != 0 || inTable(f + MULTI, load<u32>(f, 16), h);
  }
  if (fl & F_NOUNI) return false;
  if (fl & F_ALLUNI) return true;
  return mac6(f + 4, h) || inTable(f + UNI, load<u32>(f, 12), h);
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
 * Loopback: copies every tx chain with verdict 1 (header + frame) into the next rx chain
 * [0, m), zeroing the header's offload fields and setting num_buffers to 1 (§5.1.6.4: 1
 * without MRG_RXBUF; with it too, since this device never merges buffers).
 * A frame bigger than its rx buffer is dropped and the buffer returned with length 0.
 * stats[0] += frames delivered, stats[1] += bytes, stats[2] += drops (u32 each).
 * Returns the rx chains used.
 */
export function netLoop(tx: usize, n: i32, txSegs: usize, verdict: usize, rx: usize, m: i32, rxSegs: usize, stats: usize): i32 {
  let k: i32 = 0;
  for (let i: i32 = 0; i < n && k < m; i++) {
    if (load<u8>(verdict + i) != 1) continue;
    const t = chainAt(tx, i);
    const r = chainAt(rx, k++);
    const len = load<u32>(t, C_RBYTES);
    if (len > load<u32>(r, C_WBYTES)) {
      store<u32>(r, 0, C_WRITTEN);
      store<u32>(stats, load<u32>(stats, 8) + 1, 8);
      continue;
    }
    // Segment-to-segment copy: walk the tx readable and rx writable segments together.
    const ts0 = load<u32>(t, C_SEG);
    const tn = <u32>load<u16>(t, C_NREAD);
    const rs0 = load<u32>(r, C_SEG) + <u32>load<u16>(r, C_NREAD);
    const rn = <u32>load<u16>(r, C_NWRITE);
    let tj: u32 = 0;
    let toff: u32 = 0;
    let rj: u32 = 0;
    let roff: u32 = 0;
    let left = len;
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
    // The header the driver sees: no offloads, num_buffers 1 (when it sits in one segment).
    const hdr: usize = <usize>load<u32>(segAt(rxSegs, rs0));
    if (load<u32>(segAt(rxSegs, rs0), 4) >= HDR) {
      memory.fill(hdr, 0, HDR);
      store<u16>(hdr, 1, 10);
    }
    store<u32>(r, len, C_WRITTEN);
    store<u32>(stats, load<u32>(stats) + 1);
    store<u32>(stats, load<u32>(stats, 4) + len, 4);
  }
  return k;
}
