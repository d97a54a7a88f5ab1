// The smallest IPv4 host a guest can ping: answers ARP requests for its address (RFC 826) and
// ICMP echo requests to it (RFC 792) with the replies a Linux host would send. Feed it the
// frames a net driver receives and send what it returns; everything else is ignored (null).
// It is what the emulator example and the guest test put on the far side of the switch.

import { VirtioError, Code } from '../errors.ts';

const ETH_P_IP = 0x0800; // linux/if_ether.h
const ETH_P_ARP = 0x0806;
const ARPHRD_ETHER = 1; // linux/if_arp.h
const ARPOP_REQUEST = 1;
const ARPOP_REPLY = 2;
const IPPROTO_ICMP = 1; // linux/in.h
const ICMP_ECHOREPLY = 0; // linux/icmp.h
const ICMP_ECHO = 8;

/** The one's-complement sum of RFC 1071 over `b[from, to)`, folded and inverted. */
export function inetChecksum(b: Uint8Array, from = 0, to = b.length): number {
  let s = 0;
  for (let i = from; i + 1 < to; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if ((to - from) & 1) s += b[to - 1]! << 8;
  // Fold with division, not `>>> 16`: past 128 KiB the sum exceeds 2^32, which `>>>` truncates.
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

/** Counters of a {@link PingResponder}. */
export interface PingResponderStats {
  /** ARP requests for our address answered. */
  arpReplies: number;
  /** ICMP echo requests answered. */
  echoReplies: number;
  /** Frames that were neither (other hosts' traffic, other protocols, malformed): ignored. */
  ignored: number;
}

/** Answers ARP and ICMP echo for one IPv4 address. */
export class PingResponder {
  /** Our MAC (6 bytes). */
  readonly mac: Uint8Array;
  /** Our IPv4 address (4 bytes). */
  readonly ip: Uint8Array;
  /** What it answered and ignored. */
  readonly stats: PingResponderStats = { arpReplies: 0, echoReplies: 0, ignored: 0 };

  /** `mac` as 'aa:bb:…' or 6 bytes, `ip` as '10.0.0.1' or 4 bytes; InvalidArgument otherwise. */
  constructor(opts: { mac: string | Uint8Array; ip: string | Uint8Array }) {
    this.mac = typeof opts?.mac === 'string' ? parse(opts.mac, ':', 16, 6, 'mac') : Uint8Array.from(opts?.mac ?? []);
    this.ip = typeof opts?.ip === 'string' ? parse(opts.ip, '.', 10, 4, 'ip') : Uint8Array.from(opts?.ip ?? []);
    if (this.mac.length !== 6 || this.ip.length !== 4) throw new VirtioError(Code.InvalidArgument, 'PingResponder needs a 6-byte mac and a 4-byte ip');
  }

  /** The reply to `frame` (an Ethernet frame without virtio header), or null when it asks nothing of us (or is not a Uint8Array). */
  answer(frame: Uint8Array): Uint8Array | null {
    const r = frame instanceof Uint8Array && frame.length >= 14 ? this.reply(frame) : null;
    if (!r) this.stats.ignored++;
    return r;
  }

  private isMe(b: Uint8Array, at: number): boolean {
    return b[at] === this.ip[0] && b[at + 1] === this.ip[1] && b[at + 2] === this.ip[2] && b[at + 3] === this.ip[3];
  }

  private reply(f: Uint8Array): Uint8Array | null {
    const type = (f[12]! << 8) | f[13]!;
    if (type === ETH_P_ARP && f.length >= 42) {
      const v = new DataView(f.buffer, f.byteOffset + 14, 28);
      if (v.getUint16(0) !== ARPHRD_ETHER || v.getUint16(2) !== ETH_P_IP || f[18] !== 6 || f[19] !== 4) return null;
      if (v.getUint16(6) !== ARPOP_REQUEST || !this.isMe(f, 38)) return null;
      const r = new Uint8Array(42);
      r.set(f.subarray(6, 12), 0); // to the asker
      r.set(this.mac, 6);
      r.set(f.subarray(12, 22), 12); // type, htype, ptype, hlen, plen
      r[21] = ARPOP_REPLY;
      r.set(this.mac, 22); // sender: us
      r.set(this.ip, 28);
      r.set(f.subarray(22, 32), 32); // target: the asker's MAC and IP
      this.stats.arpReplies++;
      return r;
    }
    if (type !== ETH_P_IP || f.length < 34) return null;
    const ihl = (f[14]! & 0x0f) * 4;
    const total = (f[16]! << 8) | f[17]!;
    if (f[14]! >> 4 !== 4 || ihl < 20 || total < ihl + 8 || 14 + total > f.length) return null;
    if (f[23] !== IPPROTO_ICMP || !this.isMe(f, 30) || ((f[20]! << 8 | f[21]!) & 0x3fff) !== 0) return null; // not ours, or a fragment
    if (inetChecksum(f, 14, 14 + ihl) !== 0) return null;
    const icmp = 14 + ihl;
    if (f[icmp] !== ICMP_ECHO || f[icmp + 1] !== 0 || inetChecksum(f, icmp, 14 + total) !== 0) return null;
    const r = f.slice(0, 14 + total);
    r.set(f.subarray(6, 12), 0);
    r.set(this.mac, 6);
    r[22] = 64; // TTL, as Linux's default
    r.set(f.subarray(30, 34), 26); // src ← us
    r.set(f.subarray(26, 30), 30); // dst ← the pinger
    r[24] = 0;
    r[25] = 0;
    const ipSum = inetChecksum(r, 14, 14 + ihl);
    r[24] = ipSum >> 8;
    r[25] = ipSum & 0xff;
    r[icmp] = ICMP_ECHOREPLY;
    r[icmp + 2] = 0;
    r[icmp + 3] = 0;
    const sum = inetChecksum(r, icmp, 14 + total);
    r[icmp + 2] = sum >> 8;
    r[icmp + 3] = sum & 0xff;
    this.stats.echoReplies++;
    return r;
  }
}

function parse(s: string, sep: string, radix: number, n: number, what: string): Uint8Array {
  const parts = s.split(sep);
  const max = radix === 16 ? /^[0-9a-f]{1,2}$/i : /^[0-9]{1,3}$/;
  if (parts.length !== n || !parts.every((p) => max.test(p) && parseInt(p, radix) <= 255)) {
    throw new VirtioError(Code.InvalidArgument, `${what} '${s}' is not ${radix === 16 ? 'aa:bb:cc:dd:ee:ff' : 'a.b.c.d'}`);
  }
  return Uint8Array.from(parts.map((p) => parseInt(p, radix)));
}
