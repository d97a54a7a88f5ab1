// Packet capture in the classic libpcap format (https://wiki.wireshark.org/Development/LibpcapFileFormat):
// a 24-byte global header (magic 0xa1b2c3d4, version 2.4, LINKTYPE_ETHERNET = 1), then one
// 16-byte record header (ts_sec, ts_usec, incl_len, orig_len) per frame, all little-endian as
// written by this host. Opens in Wireshark / tcpdump -r.

import { VirtioError, Code } from '../errors.ts';

/** LINKTYPE_ETHERNET (tcpdump.org link-layer header types). */
export const LINKTYPE_ETHERNET = 1;
/** Classic pcap magic, microsecond timestamps. */
export const PCAP_MAGIC = 0xa1b2c3d4;

/** Options of {@link PcapWriter}. */
export interface PcapOptions {
  /** Longest part of a frame kept. @default 65535 */
  snaplen?: number;
  /**
   * Clock in microseconds since the epoch. @default (performance.timeOrigin + performance.now()) × 1000,
   * a microsecond clock (Date.now() has only milliseconds)
   */
  now?: () => number;
}

/** Writes frames as a pcap stream to `sink` (file appends, an array of chunks, a socket …). */
export class PcapWriter {
  /** Frames written. */
  frames = 0;
  private readonly sink: (chunk: Uint8Array) => void;
  private readonly snaplen: number;
  private readonly now: () => number;

  constructor(sink: (chunk: Uint8Array) => void, opts: PcapOptions = {}) {
    this.snaplen = opts.snaplen ?? 65535;
    if (!Number.isInteger(this.snaplen) || this.snaplen < 1 || this.snaplen > 0x7fffffff) throw new VirtioError(Code.InvalidArgument, `snaplen ${this.snaplen} is out of range`);
    this.sink = sink;
    this.now = opts.now ?? microsNow;
    const h = new DataView(new ArrayBuffer(24));
    h.setUint32(0, PCAP_MAGIC, true);
    h.setUint16(4, 2, true); // version_major
    h.setUint16(6, 4, true); // version_minor
    h.setInt32(8, 0, true); // thiszone
    h.setUint32(12, 0, true); // sigfigs
    h.setUint32(16, this.snaplen, true);
    h.setUint32(20, LINKTYPE_ETHERNET, true);
    sink(new Uint8Array(h.buffer));
  }

  /** Writes one frame with the current time (snaplen bytes of it at most; orig_len is its length). */
  write(frame: Uint8Array): void {
    // A clock value ts_sec cannot hold (negative, NaN, past 2106) is clamped: capture runs
    // inside the datapath and must not throw there.
    const us = Math.min(Math.max(Math.floor(this.now()) || 0, 0), 2 ** 32 * 1e6 - 1);
    const incl = Math.min(frame.length, this.snaplen);
    const rec = new Uint8Array(16 + incl);
    const v = new DataView(rec.buffer);
    v.setUint32(0, Math.floor(us / 1e6), true);
    v.setUint32(4, us % 1e6, true);
    v.setUint32(8, incl, true);
    v.setUint32(12, frame.length, true);
    rec.set(frame.subarray(0, incl), 16);
    this.sink(rec);
    this.frames++;
  }
}

/** Microseconds since the epoch from the high-resolution clock (timeOrigin is the epoch time of now() = 0). */
function microsNow(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

/** Parses a pcap byte stream back into frames (for tests and tools). */
export function readPcap(data: Uint8Array): {
  /** The global header's link type (LINKTYPE_ETHERNET for our streams). */
  linktype: number;
  /** The global header's snapshot length. */
  snaplen: number;
  /** The records, in order. */
  frames: {
    /** Capture time, µs since the epoch. */
    tsUs: number;
    /** The captured bytes (at most snaplen). */
    data: Uint8Array;
    /** The frame's length on the wire. */
    origLen: number;
  }[];
} {
  if (data.length < 24) throw new VirtioError(Code.InvalidArgument, 'pcap stream shorter than its header');
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (v.getUint32(0, true) !== PCAP_MAGIC) throw new VirtioError(Code.InvalidArgument, 'not a little-endian microsecond pcap stream');
  const frames: { tsUs: number; data: Uint8Array; origLen: number }[] = [];
  let o = 24;
  while (o + 16 <= data.length) {
    const incl = v.getUint32(o + 8, true);
    if (o + 16 + incl > data.length) throw new VirtioError(Code.InvalidArgument, 'truncated pcap record');
    frames.push({ tsUs: v.getUint32(o, true) * 1e6 + v.getUint32(o + 4, true), data: data.slice(o + 16, o + 16 + incl), origLen: v.getUint32(o + 12, true) });
    o += 16 + incl;
  }
  return { linktype: v.getUint32(20, true), snaplen: v.getUint32(16, true), frames };
}
