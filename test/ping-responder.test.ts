// PingResponder (src/devices/ping-responder.ts) against hand-built frames: the ARP reply's bytes
// (RFC 826), the ICMP echo reply's (RFC 792) with both checksums checked by an independent
// RFC 1071 sum, and every frame it must ignore (other hosts, fragments, bad checksums, every
// truncation, malformed headers, other protocols). inetChecksum is checked against the
// reference sum on RFC 1071's example and on random and large buffers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PingResponder, inetChecksum, VirtioError, Code } from '../src/index.ts';

const OUR_MAC = [0x02, 0x00, 0x00, 0x00, 0x01, 0x01];
const OUR_IP = [10, 0, 0, 1];
const PEER_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER_IP = [10, 0, 0, 2];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

const responder = () => new PingResponder({ mac: '02:00:00:00:01:01', ip: '10.0.0.1' });

/** RFC 1071 by the book: 16-bit big-endian words, odd byte padded with zero, end-around carry with BigInt. */
function refChecksum(b: Uint8Array, from = 0, to = b.length): number {
  let s = 0n;
  for (let i = from; i < to; i += 2) s += BigInt((b[i]! << 8) | (i + 1 < to ? b[i + 1]! : 0));
  while (s > 0xffffn) s = (s & 0xffffn) + (s >> 16n);
  return Number(~s & 0xffffn);
}

const be16 = (b: Uint8Array, at: number) => (b[at]! << 8) | b[at + 1]!;
const put16 = (b: Uint8Array, at: number, v: number) => {
  b[at] = v >> 8;
  b[at + 1] = v & 0xff;
};

interface ArpOpts { op?: number; htype?: number; ptype?: number; hlen?: number; plen?: number; tpa?: number[]; spa?: number[]; sha?: number[]; tha?: number[]; dst?: number[]; pad?: number }
function arp(o: ArpOpts = {}): Uint8Array {
  const f = new Uint8Array(42 + (o.pad ?? 0));
  f.set(o.dst ?? BCAST, 0);
  f.set(PEER_MAC, 6);
  put16(f, 12, 0x0806);
  put16(f, 14, o.htype ?? 1);
  put16(f, 16, o.ptype ?? 0x0800);
  f[18] = o.hlen ?? 6;
  f[19] = o.plen ?? 4;
  put16(f, 20, o.op ?? 1);
  f.set(o.sha ?? PEER_MAC, 22);
  f.set(o.spa ?? PEER_IP, 28);
  f.set(o.tha ?? [0, 0, 0, 0, 0, 0], 32);
  f.set(o.tpa ?? OUR_IP, 38);
  if (o.pad) f.fill(0xa5, 42); // Ethernet padding to 60
  return f;
}

interface EchoOpts {
  payload?: Uint8Array; id?: number; seq?: number; ttl?: number; dst?: number[]; src?: number[]; proto?: number;
  type?: number; code?: number; flagsFrag?: number; options?: number[]; version?: number; tos?: number; ipId?: number;
  /** Bytes after the IP datagram (Ethernet padding). */
  trailer?: number;
  /** Applied to the finished frame (checksums already set). */
  mutate?: (f: Uint8Array) => void;
}
function echo(o: EchoOpts = {}): Uint8Array {
  const payload = o.payload ?? Uint8Array.from({ length: 56 }, (_, i) => i);
  const opts = o.options ?? [];
  const ihl = 20 + opts.length;
  const total = ihl + 8 + payload.length;
  const f = new Uint8Array(14 + total + (o.trailer ?? 0));
  f.set(OUR_MAC, 0);
  f.set(PEER_MAC, 6);
  put16(f, 12, 0x0800);
  f[14] = ((o.version ?? 4) << 4) | (ihl / 4);
  f[15] = o.tos ?? 0;
  put16(f, 16, total);
  put16(f, 18, o.ipId ?? 0x1234);
  put16(f, 20, o.flagsFrag ?? 0x4000); // DF, as Linux's ping sends it
  f[22] = o.ttl ?? 64;
  f[23] = o.proto ?? 1;
  f.set(o.src ?? PEER_IP, 26);
  f.set(o.dst ?? OUR_IP, 30);
  f.set(opts, 34);
  put16(f, 24, refChecksum(f, 14, 14 + ihl));
  const icmp = 14 + ihl;
  f[icmp] = o.type ?? 8;
  f[icmp + 1] = o.code ?? 0;
  put16(f, icmp + 4, o.id ?? 0xbeef);
  put16(f, icmp + 6, o.seq ?? 7);
  f.set(payload, icmp + 8);
  put16(f, icmp + 2, refChecksum(f, icmp, 14 + total));
  if (o.trailer) f.fill(0x5a, 14 + total);
  o.mutate?.(f);
  return f;
}

/** Checks an echo reply to request `q` byte by byte (RFC 792 + RFC 791). */
function checkEchoReply(q: Uint8Array, r: Uint8Array | null): void {
  assert.ok(r, 'an echo reply');
  const ihl = (q[14]! & 0x0f) * 4;
  const total = be16(q, 16);
  const icmp = 14 + ihl;
  assert.equal(r.length, 14 + total, 'the datagram, without the request\'s Ethernet padding');
  assert.deepEqual([...r.subarray(0, 6)], [...q.subarray(6, 12)], 'Ethernet dst: the pinger');
  assert.deepEqual([...r.subarray(6, 12)], OUR_MAC, 'Ethernet src: us');
  assert.equal(be16(r, 12), 0x0800);
  assert.equal(r[14], q[14], 'version and IHL');
  assert.equal(be16(r, 16), total, 'total length');
  assert.equal(r[22], 64, 'TTL 64');
  assert.equal(r[23], 1, 'protocol ICMP');
  assert.deepEqual([...r.subarray(26, 30)], [...q.subarray(30, 34)], 'IP src: the address pinged');
  assert.deepEqual([...r.subarray(30, 34)], [...q.subarray(26, 30)], 'IP dst: the pinger');
  assert.deepEqual([...r.subarray(34, 14 + ihl)], [...q.subarray(34, 14 + ihl)], 'IP options kept');
  assert.equal(refChecksum(r, 14, 14 + ihl), 0, 'IP header checksum');
  assert.equal(inetChecksum(r, 14, 14 + ihl), 0);
  assert.equal(r[icmp], 0, 'ICMP type 0: echo reply');
  assert.equal(r[icmp + 1], 0, 'code 0');
  assert.equal(refChecksum(r, icmp, 14 + total), 0, 'ICMP checksum over header and data');
  assert.equal(inetChecksum(r, icmp, 14 + total), 0);
  assert.deepEqual([...r.subarray(icmp + 4, 14 + total)], [...q.subarray(icmp + 4, 14 + total)], 'identifier, sequence number and data echoed');
}

test('inetChecksum is RFC 1071\'s sum: its worked example, odd lengths, ranges, random buffers', () => {
  // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2; the checksum is its complement.
  const ex = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7);
  assert.equal(inetChecksum(ex), ~0xddf2 & 0xffff);
  assert.equal(inetChecksum(new Uint8Array(0)), 0xffff);
  assert.equal(inetChecksum(Uint8Array.of(0xab)), ~0xab00 & 0xffff, 'odd byte padded with zero');
  assert.equal(inetChecksum(Uint8Array.of(0, 0, 0xab, 0xcd, 0xef), 2, 5), ~(0xabcd + 0xef00 - 0xffff) & 0xffff);
  let seed = 1;
  const rnd = () => ((seed = Math.imul(seed, 1103515245) + 12345) >>> 16) & 0xff;
  for (let n = 0; n < 300; n++) {
    const b = Uint8Array.from({ length: n }, rnd);
    assert.equal(inetChecksum(b), refChecksum(b), `length ${n}`);
    if (n > 4) assert.equal(inetChecksum(b, 1, n - 2), refChecksum(b, 1, n - 2), `range of ${n}`);
  }
});

test('inetChecksum of buffers past 128 KiB (sums past 2^32) stays RFC 1071\'s', () => {
  for (const n of [1 << 17, (1 << 17) + 2, 1 << 18, 3 << 17, 1 << 20]) {
    const ones = new Uint8Array(n).fill(0xff);
    assert.equal(inetChecksum(ones), refChecksum(ones), `${n} bytes of 0xff`);
    assert.equal(inetChecksum(ones), 0);
    const b = Uint8Array.from({ length: n }, (_, i) => (i * 7919) & 0xff);
    assert.equal(inetChecksum(b), refChecksum(b), `${n} bytes of a pattern`);
  }
});

test('an ARP request for our address gets an RFC 826 reply: opcode 2, we are the sender, the asker the target', () => {
  const r = responder();
  for (const pad of [0, 18]) {
    const q = arp({ pad, tha: [0xde, 0xad, 0xbe, 0xef, 0, 1] });
    const a = r.answer(q);
    assert.ok(a);
    assert.equal(a.length, 42);
    assert.deepEqual([...a.subarray(0, 6)], PEER_MAC, 'Ethernet dst: the asker (unicast)');
    assert.deepEqual([...a.subarray(6, 12)], OUR_MAC, 'Ethernet src: us');
    assert.equal(be16(a, 12), 0x0806, 'ethertype ARP');
    assert.equal(be16(a, 14), 1, 'ar$hrd Ethernet');
    assert.equal(be16(a, 16), 0x0800, 'ar$pro IPv4');
    assert.equal(a[18], 6, 'ar$hln');
    assert.equal(a[19], 4, 'ar$pln');
    assert.equal(be16(a, 20), 2, 'ar$op REPLY');
    assert.deepEqual([...a.subarray(22, 28)], OUR_MAC, 'ar$sha: our MAC');
    assert.deepEqual([...a.subarray(28, 32)], OUR_IP, 'ar$spa: our IP');
    assert.deepEqual([...a.subarray(32, 38)], PEER_MAC, 'ar$tha: the asker\'s MAC');
    assert.deepEqual([...a.subarray(38, 42)], PEER_IP, 'ar$tpa: the asker\'s IP');
  }
  // A unicast request (the asker refreshing its cache) is answered the same way.
  assert.ok(r.answer(arp({ dst: OUR_MAC })));
  assert.deepEqual(r.stats, { arpReplies: 3, echoReplies: 0, ignored: 0 });
});

test('the request is not modified and the reply does not alias it', () => {
  const r = responder();
  for (const q of [arp({ pad: 18 }), echo({ trailer: 6 })]) {
    const copy = q.slice();
    const a = r.answer(q)!;
    assert.deepEqual(q, copy);
    assert.notEqual(a.buffer, q.buffer);
  }
  // A frame that is a view into a larger buffer (a receive ring slot) at an odd offset.
  const q = echo();
  const big = new Uint8Array(q.length + 11).fill(0xee);
  big.set(q, 5);
  checkEchoReply(q, r.answer(big.subarray(5, 5 + q.length)));
  const a = arp();
  const big2 = new Uint8Array(a.length + 9).fill(0xee);
  big2.set(a, 3);
  assert.deepEqual(r.answer(big2.subarray(3, 3 + a.length)), r.answer(a));
});

test('ARP it must ignore: another address, replies, other hardware/protocol types or lengths, truncated', () => {
  const r = responder();
  const cases: [string, Uint8Array][] = [
    ['for another IP', arp({ tpa: [10, 0, 0, 3] })],
    ['for the broadcast address', arp({ tpa: [10, 0, 0, 255] })],
    ['an ARP reply (opcode 2)', arp({ op: 2 })],
    ['RARP request (opcode 3)', arp({ op: 3 })],
    ['opcode 0x0101', arp({ op: 0x0101 })],
    ['htype 6 (IEEE 802)', arp({ htype: 6 })],
    ['ptype IPv6', arp({ ptype: 0x86dd })],
    ['hlen 8', arp({ hlen: 8 })],
    ['plen 16', arp({ plen: 16 })],
  ];
  for (const [what, f] of cases) assert.equal(r.answer(f), null, what);
  const ok = arp();
  for (let n = 0; n < ok.length; n++) assert.equal(r.answer(ok.subarray(0, n)), null, `truncated to ${n}`);
  assert.deepEqual(r.stats, { arpReplies: 0, echoReplies: 0, ignored: cases.length + ok.length });
});

test('an ICMP echo request to us gets an RFC 792 echo reply with valid IP and ICMP checksums and TTL 64', () => {
  const r = responder();
  checkEchoReply(echo(), r.answer(echo()));
  checkEchoReply(echo({ ttl: 1 }), r.answer(echo({ ttl: 1 })));
  checkEchoReply(echo({ ttl: 255, tos: 0xb8, ipId: 0, seq: 0xffff, id: 0 }), r.answer(echo({ ttl: 255, tos: 0xb8, ipId: 0, seq: 0xffff, id: 0 })));
  checkEchoReply(echo({ flagsFrag: 0 }), r.answer(echo({ flagsFrag: 0 })));
  // IP options (IHL 6..15): kept, and the header checksum covers them.
  for (const words of [1, 2, 10]) {
    const q = echo({ options: [...Array(words * 4 - 1).fill(1), 0] });
    checkEchoReply(q, r.answer(q));
  }
  // Ethernet padding after a short datagram is not echoed back.
  const padded = echo({ payload: new Uint8Array(2), trailer: 16 });
  checkEchoReply(padded, r.answer(padded));
  // A frame of 64 KiB (total length 65535).
  const big = echo({ payload: Uint8Array.from({ length: 65535 - 28 }, (_, i) => i * 31) });
  checkEchoReply(big, r.answer(big));
  assert.deepEqual(r.stats, { arpReplies: 0, echoReplies: 9, ignored: 0 });
});

test('odd-length ICMP payloads (the checksum pads the last byte with zero)', () => {
  const r = responder();
  for (const n of [0, 1, 2, 3, 5, 7, 55, 57, 99, 1471, 1473, 8191]) {
    const q = echo({ payload: Uint8Array.from({ length: n }, (_, i) => 0xff - (i & 0xff)) });
    checkEchoReply(q, r.answer(q));
  }
  assert.equal(r.stats.echoReplies, 12);
});

test('IPv4 it must ignore: other addresses, fragments, bad checksums, malformed headers, other protocols and ethertypes', () => {
  const r = responder();
  const flip = (at: number) => (f: Uint8Array) => {
    f[at]! ^= 0x01;
  };
  const withHeader = (patch: (f: Uint8Array) => void) => (f: Uint8Array) => {
    patch(f);
    put16(f, 24, 0);
    put16(f, 24, refChecksum(f, 14, 14 + (f[14]! & 0x0f) * 4));
  };
  const cases: [string, Uint8Array][] = [
    ['to another address', echo({ dst: [10, 0, 0, 3] })],
    ['to the broadcast address', echo({ dst: [255, 255, 255, 255] })],
    ['a first fragment (MF)', echo({ flagsFrag: 0x2000 })],
    ['a first fragment (MF|DF)', echo({ flagsFrag: 0x6000 })],
    ['a later fragment (offset 8)', echo({ flagsFrag: 0x0001 })],
    ['a last fragment (offset, no MF)', echo({ flagsFrag: 0x1fff })],
    ['bad IP header checksum', echo({ mutate: flip(25) })],
    ['IP header bit flipped (checksum not updated)', echo({ mutate: flip(15) })],
    ['bad ICMP checksum', echo({ mutate: flip(14 + 20 + 3) })],
    ['ICMP data bit flipped', echo({ mutate: flip(14 + 20 + 8 + 10) })],
    ['ICMP echo reply (type 0)', echo({ type: 0 })],
    ['ICMP timestamp (type 13)', echo({ type: 13 })],
    ['ICMP echo with code 1', echo({ code: 1 })],
    ['UDP (protocol 17)', echo({ proto: 17 })],
    ['IPv6 version nibble', echo({ version: 6 })],
    ['IHL 4 (16-byte header)', echo({ mutate: withHeader((f) => (f[14] = 0x44)) })],
    ['IHL 0', echo({ mutate: withHeader((f) => (f[14] = 0x40)) })],
    ['total length past the frame', echo({ mutate: withHeader((f) => put16(f, 16, be16(f, 16) + 1)) })],
    ['total length 0xffff in a short frame', echo({ mutate: withHeader((f) => put16(f, 16, 0xffff)) })],
    ['total length shorter than the ICMP header', echo({ mutate: withHeader((f) => put16(f, 16, 27)) })],
    ['total length shorter than IHL', echo({ options: [1, 1, 1, 0], mutate: withHeader((f) => put16(f, 16, 20)) })],
    ['total length 0', echo({ mutate: withHeader((f) => put16(f, 16, 0)) })],
    ['IHL 15 past total length', echo({ payload: new Uint8Array(8), mutate: withHeader((f) => (f[14] = 0x4f)) })],
    ['ethertype IPv6', echo({ mutate: (f) => put16(f, 12, 0x86dd) })],
    ['ethertype 0x0801', echo({ mutate: (f) => put16(f, 12, 0x0801) })],
  ];
  // An 802.1Q-tagged echo request to us (TPID 0x8100, VID 5, then the IPv4 ethertype).
  const plain = echo();
  const tagged = new Uint8Array(plain.length + 4);
  tagged.set(plain.subarray(0, 12), 0);
  tagged.set([0x81, 0x00, 0x00, 0x05], 12);
  tagged.set(plain.subarray(12), 16);
  cases.push(['VLAN-tagged (802.1Q)', tagged]);
  const qinq = new Uint8Array(tagged.length + 4);
  qinq.set(tagged.subarray(0, 12), 0);
  qinq.set([0x88, 0xa8, 0x00, 0x07], 12);
  qinq.set(tagged.subarray(12), 16);
  cases.push(['QinQ-tagged (802.1ad)', qinq]);
  for (const [what, f] of cases) assert.equal(r.answer(f), null, what);
  assert.deepEqual(r.stats, { arpReplies: 0, echoReplies: 0, ignored: cases.length });
});

test('an echo request truncated at every length 0..len is ignored (and never read past its end)', () => {
  const r = responder();
  for (const q of [echo(), echo({ payload: Uint8Array.of(1, 2, 3) }), echo({ options: [1, 1, 1, 1, 1, 1, 1, 0] })]) {
    // Each prefix as its own buffer (no bytes past the end to read by mistake) and as a view
    // into the full frame (whose later bytes are valid: a length check, not luck, must stop it).
    for (let n = 0; n < q.length; n++) {
      assert.equal(r.answer(q.slice(0, n)), null, `copy truncated to ${n} of ${q.length}`);
      assert.equal(r.answer(q.subarray(0, n)), null, `view truncated to ${n} of ${q.length}`);
    }
    checkEchoReply(q, r.answer(q));
  }
  assert.equal(r.stats.echoReplies, 3);
  assert.equal(r.stats.ignored, 2 * (echo().length + echo({ payload: Uint8Array.of(1, 2, 3) }).length + echo({ options: [1, 1, 1, 1, 1, 1, 1, 0] }).length));
});

test('garbage frames of every small length never throw', () => {
  const r = responder();
  let seed = 7;
  const rnd = () => ((seed = Math.imul(seed, 1103515245) + 12345) >>> 16) & 0xff;
  let answered = 0;
  for (let i = 0; i < 3000; i++) {
    const f = Uint8Array.from({ length: i % 100 }, rnd);
    // Half of them look like IPv4 to us or ARP, so the deeper checks run on garbage too.
    if (f.length >= 14 && i & 1) put16(f, 12, i & 2 ? 0x0800 : 0x0806);
    if (f.length >= 34 && i & 1 && i & 2) f.set(OUR_IP, 30);
    if (r.answer(f)) answered++;
  }
  assert.equal(r.stats.ignored + r.stats.arpReplies + r.stats.echoReplies, 3000);
  assert.equal(answered, r.stats.arpReplies + r.stats.echoReplies);
});

test('the constructor: mac and ip as strings or bytes; anything else is InvalidArgument', () => {
  const a = new PingResponder({ mac: Uint8Array.from(OUR_MAC), ip: Uint8Array.from(OUR_IP) });
  assert.deepEqual([...a.mac], OUR_MAC);
  assert.deepEqual([...a.ip], OUR_IP);
  const b = new PingResponder({ mac: 'AA:bb:0C:d:E:f', ip: '255.0.9.10' });
  assert.deepEqual([...b.mac], [0xaa, 0xbb, 0x0c, 0x0d, 0x0e, 0x0f]);
  assert.deepEqual([...b.ip], [255, 0, 9, 10]);
  // Bytes given are copied: changing the caller's array later changes nothing.
  const mac = Uint8Array.from(OUR_MAC);
  const c = new PingResponder({ mac, ip: '10.0.0.1' });
  mac[5] = 0x77;
  assert.deepEqual([...c.mac], OUR_MAC);
  const bad: unknown[] = [
    { mac: 'aa:bb:cc:dd:ee', ip: '10.0.0.1' },
    { mac: 'aa:bb:cc:dd:ee:ff:00', ip: '10.0.0.1' },
    { mac: 'aa:bb:cc:dd:ee:fg', ip: '10.0.0.1' },
    { mac: 'aa:bb:cc:dd:ee:100', ip: '10.0.0.1' },
    { mac: 'aa-bb-cc-dd-ee-ff', ip: '10.0.0.1' },
    { mac: 'aa:bb:cc:dd:ee:', ip: '10.0.0.1' },
    { mac: ' aa:bb:cc:dd:ee:ff', ip: '10.0.0.1' },
    { mac: '+a:bb:cc:dd:ee:ff', ip: '10.0.0.1' },
    { mac: '', ip: '10.0.0.1' },
    { mac: new Uint8Array(5), ip: '10.0.0.1' },
    { mac: new Uint8Array(7), ip: '10.0.0.1' },
    { mac: '02:00:00:00:01:01', ip: '10.0.0' },
    { mac: '02:00:00:00:01:01', ip: '10.0.0.1.5' },
    { mac: '02:00:00:00:01:01', ip: '10.0.0.256' },
    { mac: '02:00:00:00:01:01', ip: '10.0.0.-1' },
    { mac: '02:00:00:00:01:01', ip: '10.0.0.1 ' },
    { mac: '02:00:00:00:01:01', ip: '10.0.0.0x1' },
    { mac: '02:00:00:00:01:01', ip: '10.0.0.1000' },
    { mac: '02:00:00:00:01:01', ip: '10..0.1' },
    { mac: '02:00:00:00:01:01', ip: '::1' },
    { mac: '02:00:00:00:01:01', ip: new Uint8Array(3) },
    { mac: '02:00:00:00:01:01', ip: new Uint8Array(16) },
    { mac: '02:00:00:00:01:01' },
    { ip: '10.0.0.1' },
    { mac: null, ip: '10.0.0.1' },
    { mac: 42, ip: '10.0.0.1' },
    { mac: '02:00:00:00:01:01', ip: {} },
    {},
    null,
    undefined,
    42,
  ];
  for (const opts of bad) {
    assert.throws(() => new PingResponder(opts as never), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument, JSON.stringify(opts) ?? String(opts));
  }
});

test('stats count each answer and each ignored frame once, across a mixed stream', () => {
  const r = responder();
  const stream = [arp(), echo(), arp({ tpa: [10, 0, 0, 9] }), echo({ dst: [10, 0, 0, 9] }), new Uint8Array(0), echo({ seq: 2 }), arp({ op: 2 }), new Uint8Array(13)];
  const got = stream.map((f) => r.answer(f) !== null);
  assert.deepEqual(got, [true, true, false, false, false, true, false, false]);
  assert.deepEqual(r.stats, { arpReplies: 1, echoReplies: 2, ignored: 5 });
});
