// Every validation failure of the rings, with its code: "one field of a good state changed at a
// time". Each case starts from a hand-written chain that pops (the control), changes exactly one
// field, and checks that pop()/getUsed() throws the specific Code, that the queue is broken and
// stays broken (even once the field is restored), and that reset() makes the good chain work
// again. Spec references: VIRTIO 1.3 §2.7 (split) and §2.8 (packed); check order from
// assembly/ring/chain.ts addData (size before translation) and assembly/mem.ts translate.
// Caller misuse (InvalidArgument) must never break a queue. Nothing outside the device's map is
// ever read or written.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, DriverQueue, DeviceQueue, Iotlb, ringFeatures, Code, VirtioError, PERM_R, PERM_W, PERM_RW,
} from '../src/index.ts';
import {
  RawSplit, RawPacked, F_NEXT, F_WRITE, F_INDIRECT, F_AVAIL, usedBits,
  writeSplitDesc, readSplitDesc, writePackedDesc, readPackedDesc, type SplitDesc, type PackedDesc,
} from './helpers/raw-ring.ts';

const N = 8;
const TWO32 = 2n ** 32n;
const U64_TOP = 2n ** 64n - 8n;

function platform(): Platform {
  return Platform.create({ ramSize: 1 << 20 });
}

/** An assert.throws validator for a VirtioError with this code. */
function isCode(code: Code): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof VirtioError, `expected a VirtioError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  };
}

/** `fn` throws `code`, the queue is broken with it, and a second call throws it again. */
function expectPeerError(q: DeviceQueue | DriverQueue, fn: () => unknown, code: Code): void {
  assert.equal(q.broken, false, 'precondition: not broken');
  assert.throws(fn, isCode(code));
  assert.equal(q.broken, true);
  const st = q.state;
  assert.equal(st.state, 'broken');
  if (st.state === 'broken') assert.equal(st.error.code, code);
  assert.throws(fn, isCode(code), 'the error is sticky');
}

function patchSplit(p: Platform, table: number, i: number, patch: Partial<SplitDesc>): void {
  const d = { ...readSplitDesc(p, table, i), ...patch };
  writeSplitDesc(p, table, i, d.addr, d.len, d.flags, d.next);
}

function patchPacked(p: Platform, ring: number, i: number, patch: Partial<PackedDesc>): void {
  const d = { ...readPackedDesc(p, ring, i), ...patch };
  writePackedDesc(p, ring, i, d.addr, d.len, d.id, d.flags);
}

// ───────────────────────────── device side fixtures ─────────────────────────────

/** direct: a 3-descriptor chain; indirect: the same through a table; single: one writable descriptor. */
type Kind = 'direct' | 'indirect' | 'single';

interface DevFx {
  p: Platform;
  dev: DeviceQueue;
  /** Data buffers: a readable (16 bytes), b and c writable (32 bytes each). */
  a: number;
  b: number;
  c: number;
  /** Indirect table (3 entries). */
  table: number;
  /** Writes the known-good chain of this kind. */
  good(kind: Kind): void;
  /** What pop() returns for the good chain. */
  expected(kind: Kind): ReturnType<DeviceQueue['chain']>;
}

/**
 * Split, good chains: direct  desc0 R(a,16) -NEXT-> desc1 W(b,32) -NEXT-> desc2 W(c,32), head 0
 *                     (desc2.next = 1, unused without NEXT);
 *                     single   desc0 W(b,32), head 0 (the one-descriptor fast path of devPop).
 *                     indirect desc0 INDIRECT(table, 48) over the same three, linked 0 -> 1 -> 2.
 */
function splitFx(o: { indirect?: boolean; maxSegs?: number; iotlb?: Iotlb; p?: Platform; r?: RawSplit } = {}): DevFx & { r: RawSplit } {
  const p = o.p ?? platform();
  const r = o.r ?? RawSplit.alloc(p, N);
  const a = p.allocBuffer(64);
  const b = p.allocBuffer(64);
  const c = p.allocBuffer(64);
  const table = p.allocBuffer(3 * 16, 16);
  const dev = new DeviceQueue(p, {
    size: N, features: ringFeatures({ indirect: o.indirect ?? true }), ...r.addresses, maxSegs: o.maxSegs, iotlb: o.iotlb,
  });
  const fx = {
    p, r, dev, a, b, c, table,
    good(kind: Kind): void {
      if (kind === 'single') {
        r.setDesc(0, b, 32, F_WRITE, 0);
        r.setAvailRing(0, 0);
        r.availIdx = 1;
        return;
      }
      const t = kind === 'direct' ? r.desc : table;
      writeSplitDesc(p, t, 0, a, 16, F_NEXT, 1);
      writeSplitDesc(p, t, 1, b, 32, F_NEXT | F_WRITE, 2);
      writeSplitDesc(p, t, 2, c, 32, F_WRITE, 1); // next is ignored without NEXT
      if (kind === 'indirect') r.setDesc(0, table, 48, F_INDIRECT, 0);
      r.setAvailRing(0, 0);
      r.availIdx = 1;
    },
    expected(kind: Kind) {
      if (kind === 'single') return { id: 0, ndesc: 1, readable: [], writable: [{ addr: b, len: 32 }], readBytes: 0, writeBytes: 32 };
      return {
        id: 0, ndesc: kind === 'direct' ? 3 : 1,
        readable: [{ addr: a, len: 16 }], writable: [{ addr: b, len: 32 }, { addr: c, len: 32 }],
        readBytes: 16, writeBytes: 64,
      };
    },
  };
  return fx;
}

/**
 * Packed, good chains (buffer id 5): direct  slots 0..2 R(a,16) NEXT, W(b,32) NEXT, W(c,32);
 *                                    indirect slot 0 INDIRECT(table, 48) over the same three;
 *                                    single   slot 0 W(b,32).
 */
function packedFx(o: { indirect?: boolean; maxSegs?: number; iotlb?: Iotlb; p?: Platform; r?: RawPacked } = {}): DevFx & { r: RawPacked } {
  const p = o.p ?? platform();
  const r = o.r ?? RawPacked.alloc(p, N);
  const a = p.allocBuffer(64);
  const b = p.allocBuffer(64);
  const c = p.allocBuffer(64);
  const table = p.allocBuffer(3 * 16, 16);
  const dev = new DeviceQueue(p, {
    size: N, features: ringFeatures({ packed: true, indirect: o.indirect ?? true }), ...r.addresses, maxSegs: o.maxSegs, iotlb: o.iotlb,
  });
  return {
    p, r, dev, a, b, c, table,
    good(kind: Kind): void {
      if (kind === 'single') {
        r.setDesc(0, b, 32, 5, F_AVAIL | F_WRITE);
      } else if (kind === 'direct') {
        r.setDesc(0, a, 16, 5, F_AVAIL | F_NEXT);
        r.setDesc(1, b, 32, 5, F_AVAIL | F_NEXT | F_WRITE);
        r.setDesc(2, c, 32, 5, F_AVAIL | F_WRITE);
      } else {
        writePackedDesc(p, table, 0, a, 16, 0, 0);
        writePackedDesc(p, table, 1, b, 32, 0, F_WRITE);
        writePackedDesc(p, table, 2, c, 32, 0, F_WRITE);
        r.setDesc(0, table, 48, 5, F_AVAIL | F_INDIRECT);
      }
    },
    expected(kind: Kind) {
      if (kind === 'single') return { id: 5, ndesc: 1, readable: [], writable: [{ addr: b, len: 32 }], readBytes: 0, writeBytes: 32 };
      return {
        id: 5, ndesc: kind === 'direct' ? 3 : 1,
        readable: [{ addr: a, len: 16 }], writable: [{ addr: b, len: 32 }, { addr: c, len: 32 }],
        readBytes: 16, writeBytes: 64,
      };
    },
  };
}

/**
 * The one-field protocol: the good chain pops (control); reset; `mutate` changes one field;
 * pop() throws `code` and breaks the queue; restoring the good chain does not unbreak it;
 * reset() does, and the good chain pops again.
 */
function oneField(fx: DevFx, kind: Kind, mutate: (fx: DevFx) => void, code: Code): void {
  fx.good(kind);
  assert.equal(fx.dev.pop(), 1, 'control: the good chain pops');
  assert.deepEqual(fx.dev.chain(0), fx.expected(kind));
  fx.dev.reset();
  mutate(fx);
  expectPeerError(fx.dev, () => fx.dev.pop(), code);
  assert.equal(fx.dev.popped, 0);
  fx.good(kind);
  assert.throws(() => fx.dev.pop(), isCode(code), 'still broken with a good ring: only reset clears it');
  fx.dev.reset();
  assert.equal(fx.dev.broken, false);
  assert.deepEqual(fx.dev.state, { state: 'ready' });
  assert.equal(fx.dev.pop(), 1);
  assert.deepEqual(fx.dev.chain(0), fx.expected(kind));
}

function outsideRam(p: Platform): number {
  return p.ramBase + p.ramSize;
}

// Faults of a data buffer's address (§2.7.5 / §2.8.13 addr is a 64-bit IOVA the device maps).
function addressCases<F extends DevFx>(at: (fx: F) => { base: number; i: number }, kind: Kind, what: string): { name: string; kind: Kind; code: Code; mutate: (fx: F) => void }[] {
  const set = (fx: F, addr: bigint | number): void => {
    const { base, i } = at(fx);
    if (fx.dev.layout === 'split') patchSplit(fx.p, base, i, { addr: BigInt(addr) });
    else patchPacked(fx.p, base, i, { addr: BigInt(addr) });
  };
  return [
    { name: `${what} addr just past the end of RAM`, kind, code: Code.AddressUnmapped, mutate: (fx) => set(fx, outsideRam(fx.p)) },
    { name: `${what} addr + len crossing the end of the map`, kind, code: Code.AddressUnmapped, mutate: (fx) => set(fx, outsideRam(fx.p) - 8) },
    { name: `${what} addr with a high half (addr + 2^32)`, kind, code: Code.AddressUnmapped, mutate: (fx) => { const { base, i } = at(fx); set(fx, (fx.dev.layout === 'split' ? readSplitDesc(fx.p, base, i).addr : readPackedDesc(fx.p, base, i).addr) + TWO32); } },
    { name: `${what} addr in private memory (below RAM)`, kind, code: Code.AddressUnmapped, mutate: (fx) => set(fx, fx.p.privBase) },
    { name: `${what} addr pointing at the queue's own state block`, kind, code: Code.AddressUnmapped, mutate: (fx) => set(fx, fx.dev.qsb) },
    { name: `${what} addr + len wrapping past 2^64`, kind, code: Code.AddressUnmapped, mutate: (fx) => set(fx, U64_TOP) },
  ];
}

// ───────────────────────────── split device side ─────────────────────────────

type SFx = DevFx & { r: RawSplit };

const splitCases: { name: string; kind: Kind; code: Code; mutate: (fx: SFx) => void }[] = [
  // §2.7.6: ring[] entries are heads, < queue size.
  { name: 'avail ring head = N', kind: 'direct', code: Code.HeadOutOfRange, mutate: (fx) => fx.r.setAvailRing(0, N) },
  { name: 'avail ring head = 0xffff', kind: 'direct', code: Code.HeadOutOfRange, mutate: (fx) => fx.r.setAvailRing(0, 0xffff) },
  // §2.7.13.3: avail->idx never runs more than the queue size ahead.
  { name: 'avail->idx N+1 ahead of the device', kind: 'direct', code: Code.AvailIdxInvalid, mutate: (fx) => { fx.r.availIdx = N + 1; } },
  { name: 'avail->idx one behind the device (runs backwards)', kind: 'direct', code: Code.AvailIdxInvalid, mutate: (fx) => { fx.r.availIdx = 0xffff; } },
  // §2.7.5: next is an index into the descriptor table.
  { name: 'next = N', kind: 'direct', code: Code.NextOutOfRange, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { next: N }) },
  { name: 'next = 0xffff', kind: 'direct', code: Code.NextOutOfRange, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 1, { next: 0xffff }) },
  // §2.7.5.2: a chain longer than the table is a loop.
  { name: 'loop desc 1 -> 1', kind: 'direct', code: Code.ChainTooLong, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 1, { next: 1 }) },
  { name: 'self loop desc 0 -> 0', kind: 'direct', code: Code.ChainTooLong, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { next: 0 }) },
  { name: 'last descriptor gets NEXT (0 -> 1 -> 2 -> 1)', kind: 'direct', code: Code.ChainTooLong, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 2, { flags: F_WRITE | F_NEXT }) },
  // §2.7.4.2 / §2.7.5.2: readable before writable, at most 2^32-1 bytes.
  { name: 'last descriptor readable after writable ones', kind: 'direct', code: Code.WriteBeforeRead, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 2, { flags: 0 }) },
  { name: 'last len 0xffffffff: total > 2^32-1 (checked before the unmapped tail)', kind: 'direct', code: Code.ChainTooBig, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 2, { len: 0xffffffff }) },
  // §2.7.5.3.1: INDIRECT never with NEXT.
  { name: 'ring descriptor INDIRECT|NEXT in a direct chain', kind: 'direct', code: Code.IndirectInvalid, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { flags: F_INDIRECT | F_NEXT }) },
  ...addressCases<SFx>((fx) => ({ base: fx.r.desc, i: 0 }), 'direct', 'readable buffer'),
  { name: 'writable buffer crossing the end of the map', kind: 'direct', code: Code.AddressUnmapped, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 2, { addr: BigInt(outsideRam(fx.p) - 16) }) },

  // The one-descriptor fast path must fall back to the full checks for every fault.
  ...addressCases<SFx>((fx) => ({ base: fx.r.desc, i: 0 }), 'single', 'writable buffer'),
  { name: 'head = N', kind: 'single', code: Code.HeadOutOfRange, mutate: (fx) => fx.r.setAvailRing(0, N) },

  { name: 'INDIRECT|NEXT', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { flags: F_INDIRECT | F_NEXT, next: 1 }) },
  { name: 'indirect len 0', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { len: 0 }) },
  { name: 'indirect len 40 (not a multiple of 16)', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { len: 40 }) },
  { name: 'indirect len 8 (less than one descriptor)', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { len: 8 }) },
  { name: 'indirect len 65537·16 (over the 65536-entry limit)', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { len: 65537 * 16 }) },
  { name: 'nested indirect (INDIRECT inside the table)', kind: 'indirect', code: Code.IndirectNested, mutate: (fx) => patchSplit(fx.p, fx.table, 1, { flags: F_NEXT | F_WRITE | F_INDIRECT }) },
  { name: 'table next = 3: inside the queue size but outside its 3-entry table', kind: 'indirect', code: Code.NextOutOfRange, mutate: (fx) => patchSplit(fx.p, fx.table, 0, { next: 3 }) },
  { name: 'loop inside the table (entry 2 -> 1)', kind: 'indirect', code: Code.ChainTooLong, mutate: (fx) => patchSplit(fx.p, fx.table, 2, { flags: F_WRITE | F_NEXT }) },
  { name: 'table entry readable after writable ones', kind: 'indirect', code: Code.WriteBeforeRead, mutate: (fx) => patchSplit(fx.p, fx.table, 2, { flags: 0 }) },
  { name: 'table entry len 0xffffffff: total > 2^32-1', kind: 'indirect', code: Code.ChainTooBig, mutate: (fx) => patchSplit(fx.p, fx.table, 2, { len: 0xffffffff }) },
  { name: 'table address past the end of RAM', kind: 'indirect', code: Code.AddressUnmapped, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { addr: BigInt(outsideRam(fx.p)) }) },
  { name: 'table crossing the end of the map', kind: 'indirect', code: Code.AddressUnmapped, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { addr: BigInt(outsideRam(fx.p) - 16) }) },
  { name: 'table in private memory', kind: 'indirect', code: Code.AddressUnmapped, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { addr: BigInt(fx.p.privBase) }) },
  { name: 'table address with a high half', kind: 'indirect', code: Code.AddressUnmapped, mutate: (fx) => patchSplit(fx.p, fx.r.desc, 0, { addr: BigInt(fx.table) + TWO32 }) },
  ...addressCases<SFx>((fx) => ({ base: fx.table, i: 0 }), 'indirect', 'table entry buffer'),
];

describe('split device validation, one field at a time (§2.7)', () => {
  for (const c of splitCases) {
    test(`${c.kind}: ${c.name} -> ${c.code}`, () => oneField(splitFx(), c.kind, c.mutate as (fx: DevFx) => void, c.code));
  }

  test('INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated -> indirect_invalid (same ring, feature off)', () => {
    const p = platform();
    const r = RawSplit.alloc(p, N);
    const on = splitFx({ p, r, indirect: true });
    on.good('indirect');
    assert.equal(on.dev.pop(), 1, 'control: negotiated, the chain pops');
    const off = splitFx({ p, r, indirect: false });
    expectPeerError(off.dev, () => off.dev.pop(), Code.IndirectInvalid);
  });

  test('loop desc 0 -> 1 -> 0 (readable chain 0 -> 1, NEXT set on 1) -> chain_too_long', () => {
    const { p, r, dev } = splitFx();
    const buf = p.allocBuffer(64);
    r.setDesc(0, buf, 8, F_NEXT, 1);
    r.setDesc(1, buf, 8, 0, 0);
    r.publish(0);
    assert.equal(dev.pop(), 1, 'control: 0 -> 1 pops');
    dev.reset();
    patchSplit(p, r.desc, 1, { flags: F_NEXT });
    expectPeerError(dev, () => dev.pop(), Code.ChainTooLong);
    patchSplit(p, r.desc, 1, { flags: 0 });
    dev.reset();
    assert.equal(dev.pop(), 1);
  });

  test('a loop back to a readable descriptor after writable ones is caught as write_before_read first', () => {
    const { p, r, dev } = splitFx();
    const buf = p.allocBuffer(64);
    r.setDesc(0, buf, 8, F_NEXT, 1);
    r.setDesc(1, buf, 8, F_WRITE | F_NEXT, 0);
    r.publish(0);
    expectPeerError(dev, () => dev.pop(), Code.WriteBeforeRead);
  });

  test('a chain through all N descriptors is valid; pointing the last one back anywhere is chain_too_long', () => {
    const { p, r, dev } = splitFx();
    const buf = p.allocBuffer(64);
    for (let i = 0; i < N; i++) r.setDesc(i, buf, 4, i + 1 < N ? F_NEXT : 0, i + 1);
    r.publish(0);
    assert.equal(dev.pop(), 1);
    assert.deepEqual([dev.chain(0).ndesc, dev.chain(0).readBytes], [N, 4 * N]);
    dev.reset();
    patchSplit(p, r.desc, N - 1, { flags: F_NEXT, next: 5 });
    expectPeerError(dev, () => dev.pop(), Code.ChainTooLong);
  });

  test('avail->idx exactly N ahead is valid (a full ring)', () => {
    const { r, dev, good } = splitFx();
    good('direct');
    r.availIdx = N; // ring[1..N-1] are 0: head 0 again
    assert.equal(dev.pop(), N);
    assert.equal(dev.broken, false);
  });

  test('too many segments: the same chain pops with maxSegs 3 and breaks a queue with maxSegs 2', () => {
    const p = platform();
    const r = RawSplit.alloc(p, N);
    const ok = splitFx({ p, r, maxSegs: 3 });
    ok.good('direct');
    assert.equal(ok.dev.pop(), 1);
    const small = splitFx({ p, r, maxSegs: 2 });
    ok.good('direct');
    expectPeerError(small.dev, () => small.dev.pop(), Code.TooManySegments);
  });

  test('a chain that does not fit the segments left after earlier chains waits for the next pop (no error)', () => {
    const { r, dev, good } = splitFx({ maxSegs: 4 });
    good('direct'); // 3 segments
    r.publish(0); // the same chain again: 6 segments in all
    assert.equal(dev.pop(), 1);
    assert.equal(dev.pop(), 1);
    assert.equal(dev.pop(), 0);
    assert.equal(dev.broken, false);
  });

  test('the empty ring is not an error: pop() returns 0', () => {
    const { dev } = splitFx();
    assert.equal(dev.pop(), 0);
    assert.equal(dev.broken, false);
    assert.deepEqual(dev.state, { state: 'ready' });
  });
});

// ───────────────────────────── packed device side ─────────────────────────────

type PFx = DevFx & { r: RawPacked };

const packedCases: { name: string; kind: Kind; code: Code; mutate: (fx: PFx) => void }[] = [
  // §2.8.13: the buffer id names one of the queue's buffers.
  { name: 'buffer id in the last descriptor = N', kind: 'direct', code: Code.BufferIdInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 2, { id: N }) },
  { name: 'buffer id in the last descriptor = 0xffff', kind: 'direct', code: Code.BufferIdInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 2, { id: 0xffff }) },
  { name: 'last descriptor readable after writable ones', kind: 'direct', code: Code.WriteBeforeRead, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 2, { flags: F_AVAIL }) },
  { name: 'last len 0xffffffff: total > 2^32-1 (checked before the unmapped tail)', kind: 'direct', code: Code.ChainTooBig, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 2, { len: 0xffffffff }) },
  { name: 'head INDIRECT|NEXT in a direct chain', kind: 'direct', code: Code.IndirectInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { flags: F_AVAIL | F_NEXT | F_INDIRECT }) },
  ...addressCases<PFx>((fx) => ({ base: fx.r.desc, i: 0 }), 'direct', 'readable buffer'),
  { name: 'writable buffer crossing the end of the map', kind: 'direct', code: Code.AddressUnmapped, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 2, { addr: BigInt(outsideRam(fx.p) - 16) }) },

  // The one-descriptor fast path must fall back to the full checks for every fault.
  ...addressCases<PFx>((fx) => ({ base: fx.r.desc, i: 0 }), 'single', 'writable buffer'),
  { name: 'buffer id = N', kind: 'single', code: Code.BufferIdInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { id: N }) },
  { name: 'buffer id = 0xffff', kind: 'single', code: Code.BufferIdInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { id: 0xffff }) },

  // §2.8.7 (indirect): negotiated, without NEXT, len a multiple of 16, no nesting.
  { name: 'INDIRECT|NEXT', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { flags: F_AVAIL | F_INDIRECT | F_NEXT }) },
  { name: 'indirect len 0', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { len: 0 }) },
  { name: 'indirect len 40 (not a multiple of 16)', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { len: 40 }) },
  { name: 'indirect len 65537·16 (over the 65536-entry limit)', kind: 'indirect', code: Code.IndirectInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { len: 65537 * 16 }) },
  { name: 'nested indirect (INDIRECT inside the table)', kind: 'indirect', code: Code.IndirectNested, mutate: (fx) => patchPacked(fx.p, fx.table, 1, { flags: F_WRITE | F_INDIRECT }) },
  { name: 'buffer id of the INDIRECT descriptor = N', kind: 'indirect', code: Code.BufferIdInvalid, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { id: N }) },
  { name: 'table entry readable after writable ones', kind: 'indirect', code: Code.WriteBeforeRead, mutate: (fx) => patchPacked(fx.p, fx.table, 2, { flags: 0 }) },
  { name: 'table entry len 0xffffffff: total > 2^32-1', kind: 'indirect', code: Code.ChainTooBig, mutate: (fx) => patchPacked(fx.p, fx.table, 2, { len: 0xffffffff }) },
  { name: 'table address past the end of RAM', kind: 'indirect', code: Code.AddressUnmapped, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { addr: BigInt(outsideRam(fx.p)) }) },
  { name: 'table crossing the end of the map', kind: 'indirect', code: Code.AddressUnmapped, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { addr: BigInt(outsideRam(fx.p) - 16) }) },
  { name: 'table in private memory', kind: 'indirect', code: Code.AddressUnmapped, mutate: (fx) => patchPacked(fx.p, fx.r.desc, 0, { addr: BigInt(fx.p.privBase) }) },
  ...addressCases<PFx>((fx) => ({ base: fx.table, i: 0 }), 'indirect', 'table entry buffer'),
];

describe('packed device validation, one field at a time (§2.8)', () => {
  for (const c of packedCases) {
    test(`${c.kind}: ${c.name} -> ${c.code}`, () => oneField(packedFx(), c.kind, c.mutate as (fx: DevFx) => void, c.code));
  }

  test('INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated -> indirect_invalid (same ring, feature off)', () => {
    const p = platform();
    const r = RawPacked.alloc(p, N);
    const on = packedFx({ p, r, indirect: true });
    on.good('indirect');
    assert.equal(on.dev.pop(), 1, 'control: negotiated, the chain pops');
    const off = packedFx({ p, r, indirect: false });
    expectPeerError(off.dev, () => off.dev.pop(), Code.IndirectInvalid);
  });

  test('a chain of N descriptors is valid; NEXT on the last one makes it longer than the queue: chain_too_long', () => {
    const { p, r, dev } = packedFx();
    const buf = p.allocBuffer(64);
    for (let i = 0; i < N; i++) r.setDesc(i, buf, 4, 1, F_AVAIL | (i + 1 < N ? F_NEXT : 0));
    assert.equal(dev.pop(), 1);
    assert.deepEqual([dev.chain(0).ndesc, dev.chain(0).readBytes], [N, 4 * N]);
    dev.reset();
    patchPacked(p, r.desc, N - 1, { flags: F_AVAIL | F_NEXT });
    expectPeerError(dev, () => dev.pop(), Code.ChainTooLong);
  });

  test('too many segments: the same chain pops with maxSegs 3 and breaks a queue with maxSegs 2', () => {
    const p = platform();
    const r = RawPacked.alloc(p, N);
    const ok = packedFx({ p, r, maxSegs: 3 });
    ok.good('direct');
    assert.equal(ok.dev.pop(), 1);
    const small = packedFx({ p, r, maxSegs: 2 });
    expectPeerError(small.dev, () => small.dev.pop(), Code.TooManySegments);
  });

  test('the empty (zeroed) ring is not an error: pop() returns 0', () => {
    const { dev } = packedFx();
    assert.equal(dev.pop(), 0);
    assert.equal(dev.broken, false);
  });
});

// ───────────────────────── total length at exactly 2^32 (big IOVA window) ─────────────────────────

/**
 * A map whose IOVA window [2^40, 2^40 + 2 GiB) is 2048 aliases of the 1 MiB RAM (targets must lie
 * in RAM; IOVA ranges must not overlap, targets may), plus the identity map for the rings.
 */
function bigWindow(p: Platform): { t: Iotlb; base: bigint } {
  const base = 1n << 40n;
  const entries: { iova: bigint | number; size: number; addr: number; perm: number }[] = [
    { iova: p.ramBase, size: p.ramSize, addr: p.ramBase, perm: PERM_RW },
  ];
  for (let k = 0; k < 2048; k++) entries.push({ iova: base + BigInt(k) * BigInt(p.ramSize), size: p.ramSize, addr: p.ramBase, perm: PERM_RW });
  const t = new Iotlb(p, entries.length);
  t.setMap(entries);
  return { t, base };
}

describe('total chain length against 2^32-1 with a 2 GiB IOVA window (§2.7.5.2)', () => {
  test('split: 0x80000000 + 0x7fffffff bytes is valid, one more byte is chain_too_big', () => {
    const p = platform();
    const { t, base } = bigWindow(p);
    const r = RawSplit.alloc(p, N);
    const dev = new DeviceQueue(p, { size: N, ...r.addresses, iotlb: t, maxSegs: 4096 });
    r.setDesc(0, base, 0x8000_0000, F_NEXT, 1);
    r.setDesc(1, base, 0x7fff_ffff, 0);
    r.publish(0);
    assert.equal(dev.pop(), 1, 'control: exactly 2^32-1 bytes');
    assert.equal(dev.readBytes(0), 0xffff_ffff);
    assert.equal(dev.chain(0).readable.length, 4096);
    dev.reset();
    patchSplit(p, r.desc, 1, { len: 0x8000_0000 });
    expectPeerError(dev, () => dev.pop(), Code.ChainTooBig);
  });

  test('split: the size check comes before translation (unmapped second half -> chain_too_big, not address_unmapped)', () => {
    const p = platform();
    const { t, base } = bigWindow(p);
    const r = RawSplit.alloc(p, N);
    const dev = new DeviceQueue(p, { size: N, ...r.addresses, iotlb: t, maxSegs: 4096 });
    const unmapped = 1n << 50n;
    r.setDesc(0, base, 0x8000_0000, F_NEXT, 1);
    r.setDesc(1, unmapped, 0x7fff_ffff, 0);
    r.publish(0);
    expectPeerError(dev, () => dev.pop(), Code.AddressUnmapped);
    dev.reset();
    patchSplit(p, r.desc, 1, { len: 0x8000_0000 });
    expectPeerError(dev, () => dev.pop(), Code.ChainTooBig);
  });

  test('packed: 0x80000000 + 0x7fffffff bytes is valid, one more byte is chain_too_big', () => {
    const p = platform();
    const { t, base } = bigWindow(p);
    const r = RawPacked.alloc(p, N);
    const dev = new DeviceQueue(p, { size: N, features: ringFeatures({ packed: true }), ...r.addresses, iotlb: t, maxSegs: 4096 });
    r.setDesc(1, base, 0x7fff_ffff, 0, F_AVAIL | F_WRITE);
    r.setDesc(0, base, 0x8000_0000, 0, F_AVAIL | F_NEXT);
    assert.equal(dev.pop(), 1, 'control: exactly 2^32-1 bytes');
    assert.deepEqual([dev.readBytes(0), dev.writeBytes(0)], [0x8000_0000, 0x7fff_ffff]);
    dev.reset();
    patchPacked(p, r.desc, 1, { len: 0x8000_0000 });
    expectPeerError(dev, () => dev.pop(), Code.ChainTooBig);
  });
});

// ───────────────────────────── driver side ─────────────────────────────

describe('split driver validation of the used ring, one field at a time (§2.7.8)', () => {
  /** Two chains in flight: token 1 = 2 descriptors (head h1, second d1), token 2 = 1 descriptor (h2). */
  function fx(): { p: Platform; drv: DriverQueue; r: RawSplit; h1: number; d1: number; h2: number; free: number; good(): void } {
    const p = platform();
    const drv = new DriverQueue(p, { size: N });
    const a = drv.addresses;
    const r = new RawSplit(p, N, a.descArea, a.driverArea, a.deviceArea);
    const buf = p.allocBuffer(64);
    drv.stage(1, [{ addr: buf, len: 8 }], [{ addr: buf + 8, len: 8 }]);
    drv.stage(2, [], [{ addr: buf + 16, len: 8 }]);
    drv.submit();
    const h1 = r.availRing(0);
    const d1 = r.getDesc(h1).next;
    const h2 = r.availRing(1);
    const used = new Set([h1, d1, h2]);
    const free = [...Array(N).keys()].find((i) => !used.has(i))!;
    return {
      p, drv, r, h1, d1, h2, free,
      good() {
        r.setUsedElem(0, h1, 4);
        r.setUsedElem(1, h2, 0);
        r.usedIdx = 2;
      },
    };
  }

  test('control: the good used ring returns both tokens', () => {
    const f = fx();
    f.good();
    assert.equal(f.drv.getUsed(), 2);
    assert.deepEqual([f.drv.usedToken(0), f.drv.usedLen(0), f.drv.usedToken(1), f.drv.usedLen(1)], [1, 4, 2, 0]);
    assert.equal(f.drv.broken, false);
  });

  const cases: { name: string; code: Code; mutate: (f: ReturnType<typeof fx>) => void; goodFirst?: number }[] = [
    { name: 'used id = N', code: Code.UsedIdInvalid, mutate: (f) => f.r.setUsedElem(0, N, 4) },
    { name: 'used id = 0xffffffff', code: Code.UsedIdInvalid, mutate: (f) => f.r.setUsedElem(0, 0xffffffff, 4) },
    { name: 'used id = a descriptor never added', code: Code.UsedIdNotInflight, mutate: (f) => f.r.setUsedElem(0, f.free, 4) },
    { name: 'used id = the second descriptor of a chain, not its head', code: Code.UsedIdNotInflight, mutate: (f) => f.r.setUsedElem(0, f.d1, 4) },
    // The first entry is good: it is reclaimed, and the next call reports the bad second one.
    { name: 'the same head used twice', code: Code.UsedIdNotInflight, mutate: (f) => f.r.setUsedElem(1, f.h1, 0), goodFirst: 1 },
    { name: 'used->idx 3 with 2 buffers in flight', code: Code.UsedIdxInvalid, mutate: (f) => { f.r.usedIdx = 3; } },
    { name: 'used->idx running backwards (0xffff)', code: Code.UsedIdxInvalid, mutate: (f) => { f.r.usedIdx = 0xffff; } },
  ];
  for (const c of cases) {
    test(`${c.name} -> ${c.code}`, () => {
      const f = fx();
      f.good();
      c.mutate(f);
      if (c.goodFirst) {
        assert.equal(f.drv.getUsed(), c.goodFirst, 'the good entries before the bad one are returned');
        assert.equal(f.drv.broken, true, 'and the queue is broken');
        assert.throws(() => f.drv.getUsed(), isCode(c.code));
        assert.throws(() => f.drv.getUsed(), isCode(c.code), 'the error is sticky');
      } else expectPeerError(f.drv, () => f.drv.getUsed(), c.code);
      f.drv.stageOne(9, f.p.allocBuffer(8), 8);
      assert.throws(() => f.drv.submit(), isCode(c.code), 'submit on a broken queue throws the peer code');
      f.drv.clearStaged();
      f.drv.reset();
      assert.equal(f.drv.broken, false);
      // A full round trip works again after the reset.
      f.drv.stageOne(77, f.p.allocBuffer(8), 8, true);
      assert.equal(f.drv.submit(), 1);
      f.r.setUsedElem(0, f.r.availRing(0), 3);
      f.r.usedIdx = 1;
      assert.equal(f.drv.getUsed(), 1);
      assert.deepEqual([f.drv.usedToken(0), f.drv.usedLen(0)], [77, 3]);
    });
  }

  test('nothing used is not an error: getUsed() returns 0', () => {
    const f = fx();
    assert.equal(f.drv.getUsed(), 0);
    assert.equal(f.drv.broken, false);
  });
});

describe('packed driver validation of used descriptors, one field at a time (§2.8)', () => {
  /** Two buffers in flight in a size-4 ring: X (slots 0-1, token 1), Y (slot 2, token 2). */
  function fx(): { p: Platform; drv: DriverQueue; r: RawPacked; ix: number; iy: number; free: number; good(): void } {
    const p = platform();
    const drv = new DriverQueue(p, { size: 4, features: ringFeatures({ packed: true }) });
    const a = drv.addresses;
    const r = new RawPacked(p, 4, a.descArea, a.driverArea, a.deviceArea);
    const buf = p.allocBuffer(64);
    drv.stage(1, [{ addr: buf, len: 8 }], [{ addr: buf + 8, len: 8 }]);
    drv.stage(2, [], [{ addr: buf + 16, len: 8 }]);
    drv.submit();
    const ix = r.getDesc(1).id;
    const iy = r.getDesc(2).id;
    const free = [0, 1, 2, 3].find((i) => i !== ix && i !== iy)!;
    return {
      p, drv, r, ix, iy, free,
      good() {
        r.setDesc(2, 0, 0, iy, usedBits(1)); // written first: the driver reads slot 0 first
        r.setDesc(0, 0, 4, ix, usedBits(1));
      },
    };
  }

  test('control: the good used descriptors return both tokens', () => {
    const f = fx();
    f.good();
    assert.equal(f.drv.getUsed(), 2);
    assert.deepEqual([f.drv.usedToken(0), f.drv.usedLen(0), f.drv.usedToken(1)], [1, 4, 2]);
  });

  const cases: { name: string; code: Code; mutate: (f: ReturnType<typeof fx>) => void; goodFirst?: number }[] = [
    { name: 'used id = size', code: Code.UsedIdInvalid, mutate: (f) => patchPacked(f.p, f.r.desc, 0, { id: 4 }) },
    { name: 'used id = 0xffff', code: Code.UsedIdInvalid, mutate: (f) => patchPacked(f.p, f.r.desc, 0, { id: 0xffff }) },
    { name: 'used id of a buffer never added', code: Code.UsedIdNotInflight, mutate: (f) => patchPacked(f.p, f.r.desc, 0, { id: f.free }) },
    // The first buffer is good: it is reclaimed, and the next call reports the bad second one.
    { name: 'the same buffer id used twice', code: Code.UsedIdNotInflight, mutate: (f) => patchPacked(f.p, f.r.desc, 2, { id: f.ix }), goodFirst: 1 },
  ];
  for (const c of cases) {
    test(`${c.name} -> ${c.code}`, () => {
      const f = fx();
      f.good();
      c.mutate(f);
      if (c.goodFirst) {
        assert.equal(f.drv.getUsed(), c.goodFirst, 'the good entries before the bad one are returned');
        assert.equal(f.drv.broken, true, 'and the queue is broken');
        assert.throws(() => f.drv.getUsed(), isCode(c.code));
        assert.throws(() => f.drv.getUsed(), isCode(c.code), 'the error is sticky');
      } else expectPeerError(f.drv, () => f.drv.getUsed(), c.code);
      f.drv.reset();
      assert.equal(f.drv.broken, false);
      f.drv.stageOne(77, f.p.allocBuffer(8), 8, true);
      assert.equal(f.drv.submit(), 1);
      f.r.setDesc(0, 0, 3, f.r.getDesc(0).id, usedBits(1));
      assert.equal(f.drv.getUsed(), 1);
      assert.deepEqual([f.drv.usedToken(0), f.drv.usedLen(0)], [77, 3]);
    });
  }

  test('a descriptor not marked used is not an error: getUsed() returns 0', () => {
    const f = fx();
    patchPacked(f.p, f.r.desc, 0, { id: 0xffff }); // garbage id, but still flagged available
    assert.equal(f.drv.getUsed(), 0);
    assert.equal(f.drv.broken, false);
  });
});

// ───────────────────────────── caller misuse ─────────────────────────────

describe('device-side caller misuse throws invalid_argument and does not break the queue', () => {
  function popped(): { p: Platform; r: RawSplit; dev: DeviceQueue } {
    const f = splitFx();
    f.good('direct');
    assert.equal(f.dev.pop(), 1);
    return { p: f.p, r: f.r, dev: f.dev };
  }

  function stillWorks(r: RawSplit, dev: DeviceQueue): void {
    assert.equal(dev.broken, false);
    dev.setWritten(0, 10);
    assert.equal(dev.pushPopped(1), 1);
    assert.deepEqual(r.usedElem(0), { id: 0, len: 10 });
    assert.equal(r.usedIdx, 1);
  }

  test('pushPopped(n) with n greater than the chains popped', () => {
    const { r, dev } = popped();
    assert.throws(() => dev.pushPopped(2), isCode(Code.InvalidArgument));
    assert.equal(r.usedIdx, 0, 'nothing pushed');
    stillWorks(r, dev);
  });

  test('pushPopped(-1) and pushPopped(0.5)', () => {
    const { r, dev } = popped();
    assert.throws(() => dev.pushPopped(-1), isCode(Code.InvalidArgument));
    assert.throws(() => dev.pushPopped(0.5), isCode(Code.InvalidArgument));
    stillWorks(r, dev);
  });

  test('pushPopped a second time for the same pop (a buffer is used once)', () => {
    const { r, dev } = popped();
    dev.pushPopped(1);
    assert.throws(() => dev.pushPopped(1), isCode(Code.InvalidArgument));
    assert.equal(r.usedIdx, 1, 'the buffer was returned once');
  });

  test('setWritten beyond the chain\'s writable bytes, negative, or fractional', () => {
    const { r, dev } = popped();
    assert.throws(() => dev.setWritten(0, 65), isCode(Code.InvalidArgument));
    assert.throws(() => dev.setWritten(0, -1), isCode(Code.InvalidArgument));
    assert.throws(() => dev.setWritten(0, 1.5), isCode(Code.InvalidArgument));
    stillWorks(r, dev);
  });

  test('setWritten on a chain index that was not popped', () => {
    const { dev } = popped();
    assert.throws(() => dev.setWritten(1, 0), isCode(Code.InvalidArgument));
    assert.throws(() => dev.setWritten(-1, 0), isCode(Code.InvalidArgument));
  });

  test('write() of more bytes than the chain can take, chain(i) of a chain not popped', () => {
    const { r, dev } = popped();
    assert.throws(() => dev.write(0, new Uint8Array(65)), isCode(Code.InvalidArgument));
    assert.throws(() => dev.chain(1), isCode(Code.InvalidArgument));
    assert.throws(() => dev.read(-1), isCode(Code.InvalidArgument));
    stillWorks(r, dev);
  });

  test('pushPopped(n, inOrderBatch) without VIRTIO_F_IN_ORDER is failed_precondition, not a peer error', () => {
    const { r, dev } = popped();
    assert.throws(() => dev.pushPopped(1, true), isCode(Code.FailedPrecondition));
    stillWorks(r, dev);
  });

  const badSplit: [string, unknown][] = [
    ['version 2', { version: 2, layout: 'split', size: N, availIndex: 0 }],
    ['layout packed on a split queue', { version: 1, layout: 'packed', size: N, lastAvailIdx: 0, lastAvailWrap: 1, lastUsedIdx: 0, lastUsedWrap: 1 }],
    ['size 16 on a size-8 queue', { version: 1, layout: 'split', size: 16, availIndex: 0 }],
    ['availIndex 65536', { version: 1, layout: 'split', size: N, availIndex: 65536 }],
    ['availIndex -1', { version: 1, layout: 'split', size: N, availIndex: -1 }],
    ['availIndex 1.5', { version: 1, layout: 'split', size: N, availIndex: 1.5 }],
    ['usedIndex more than the size behind availIndex', { version: 1, layout: 'split', size: N, availIndex: 20, usedIndex: 11 }],
    ['usedIndex ahead of availIndex', { version: 1, layout: 'split', size: N, availIndex: 5, usedIndex: 6 }],
    ['null', null],
  ];
  for (const [name, s] of badSplit) {
    test(`split setState with ${name} throws and changes nothing`, () => {
      const { r, dev } = popped();
      const before = dev.getState();
      assert.throws(() => dev.setState(s as never), isCode(Code.InvalidArgument));
      assert.deepEqual(dev.getState(), before);
      stillWorks(r, dev);
    });
  }

  const badPacked: [string, unknown][] = [
    ['lastAvailIdx = size', { version: 1, layout: 'packed', size: N, lastAvailIdx: N, lastAvailWrap: 1, lastUsedIdx: 0, lastUsedWrap: 1 }],
    ['lastUsedIdx = size', { version: 1, layout: 'packed', size: N, lastAvailIdx: 0, lastAvailWrap: 1, lastUsedIdx: N, lastUsedWrap: 1 }],
    ['lastAvailWrap 2', { version: 1, layout: 'packed', size: N, lastAvailIdx: 0, lastAvailWrap: 2, lastUsedIdx: 0, lastUsedWrap: 1 }],
    ['lastUsedWrap true', { version: 1, layout: 'packed', size: N, lastAvailIdx: 0, lastAvailWrap: 1, lastUsedIdx: 0, lastUsedWrap: true }],
    ['layout split on a packed queue', { version: 1, layout: 'split', size: N, availIndex: 0 }],
  ];
  for (const [name, s] of badPacked) {
    test(`packed setState with ${name} throws and changes nothing`, () => {
      const f = packedFx();
      f.good('direct');
      assert.equal(f.dev.pop(), 1);
      const before = f.dev.getState();
      assert.throws(() => f.dev.setState(s as never), isCode(Code.InvalidArgument));
      assert.deepEqual(f.dev.getState(), before);
      assert.equal(f.dev.broken, false);
      f.dev.pushPopped();
      assert.equal(f.r.getDesc(0).id, 5);
    });
  }

  test('a DeviceQueue whose ring areas are not mapped (or misaligned) is refused with invalid_argument', () => {
    const p = platform();
    const r = RawSplit.alloc(p, N);
    assert.throws(() => new DeviceQueue(p, { size: N, ...r.addresses, descArea: outsideRam(p) }), isCode(Code.InvalidArgument));
    assert.throws(() => new DeviceQueue(p, { size: N, ...r.addresses, deviceArea: r.used + 2 }), isCode(Code.InvalidArgument));
    const ro = new Iotlb(p, 1);
    ro.setMap([{ iova: p.ramBase, size: p.ramSize, addr: p.ramBase, perm: PERM_R }]);
    assert.throws(() => new DeviceQueue(p, { size: N, ...r.addresses, iotlb: ro }), isCode(Code.InvalidArgument), 'the used ring needs write permission');
  });
});

describe('driver-side caller misuse throws invalid_argument and does not break the queue', () => {
  function fx(): { p: Platform; drv: DriverQueue; r: RawSplit; buf: number } {
    const p = platform();
    const drv = new DriverQueue(p, { size: N });
    const a = drv.addresses;
    return { p, drv, r: new RawSplit(p, N, a.descArea, a.driverArea, a.deviceArea), buf: p.allocBuffer(64) };
  }

  const bad: [string, (f: ReturnType<typeof fx>) => void][] = [
    ['an empty chain', (f) => f.drv.stage(1, [], [])],
    ['a token of -1', (f) => f.drv.stage(-1, [{ addr: f.buf, len: 1 }])],
    ['a token of 2^32', (f) => f.drv.stage(2 ** 32, [{ addr: f.buf, len: 1 }])],
    ['a token of 1.5', (f) => f.drv.stageOne(1.5, f.buf, 1)],
    ['a token of NaN', (f) => f.drv.stageOne(NaN, f.buf, 1)],
    ['a negative len', (f) => f.drv.stage(1, [{ addr: f.buf, len: 8 }], [{ addr: f.buf, len: -1 }])],
    ['a len of 2^32', (f) => f.drv.stageOne(1, f.buf, 2 ** 32)],
    ['a negative addr', (f) => f.drv.stageOne(1, -16, 8)],
  ];
  for (const [name, call] of bad) {
    test(`stage with ${name}`, () => {
      const f = fx();
      assert.throws(() => call(f), isCode(Code.InvalidArgument));
      assert.equal(f.drv.stagedCount, 0, 'nothing staged');
      assert.equal(f.drv.broken, false);
      // The next good chain is exactly what lands in the ring.
      f.drv.stageOne(5, f.buf, 7, true);
      assert.equal(f.drv.submit(), 1);
      assert.equal(f.r.availIdx, 1);
      const d = f.r.getDesc(f.r.availRing(0));
      assert.deepEqual([d.addr, d.len, d.flags], [BigInt(f.buf), 7, F_WRITE]);
    });
  }
});

// ───────────────────────────── never outside the map ─────────────────────────────

describe('the device never reads or writes outside its map', () => {
  test('a rejected pop leaves all of RAM byte-for-byte unchanged', () => {
    const f = splitFx();
    f.good('direct');
    f.p.u8.fill(0x5a, f.b, f.b + 64);
    f.p.u8.fill(0xa5, f.c, f.c + 64);
    patchSplit(f.p, f.r.desc, 2, { addr: BigInt(outsideRam(f.p) - 16) }); // last writable crosses the end
    const ram = f.p.u8.slice(f.p.ramBase, f.p.ramBase + f.p.ramSize);
    expectPeerError(f.dev, () => f.dev.pop(), Code.AddressUnmapped);
    assert.throws(() => f.dev.write(0, new Uint8Array([1])), isCode(Code.InvalidArgument), 'nothing popped to write into');
    assert.throws(() => f.dev.pushPopped(1), isCode(Code.InvalidArgument));
    assert.ok(Buffer.from(f.p.u8.subarray(f.p.ramBase, f.p.ramBase + f.p.ramSize)).equals(Buffer.from(ram)));
  });

  /**
   * A device whose map holds only its three ring areas (identity) and a 4 KiB window at IOVA
   * 0x1_0000_0000 over RAM [win, win + 4096), between two 4 KiB canary guards.
   */
  function windowed(perm = PERM_RW): { p: Platform; r: RawSplit; dev: DeviceQueue; win: number; guards: [number, number]; canary: number; iova: bigint } {
    const p = platform();
    const r = RawSplit.alloc(p, N);
    const region = p.allocBuffer(3 * 4096, 4096);
    const win = region + 4096;
    const canary = p.allocBuffer(4096, 4096);
    p.u8.fill(0xc3, region, region + 3 * 4096);
    p.u8.fill(0x3c, canary, canary + 4096);
    const iova = 0x1_0000_0000n;
    const t = new Iotlb(p, 8);
    t.setMap([
      { iova: r.desc, size: 16 * N, addr: r.desc, perm: PERM_R },
      { iova: r.avail, size: 6 + 2 * N, addr: r.avail, perm: PERM_R },
      { iova: r.used, size: 6 + 8 * N, addr: r.used, perm: PERM_RW },
      { iova, size: 4096, addr: win, perm },
    ]);
    const dev = new DeviceQueue(p, { size: N, features: ringFeatures({ indirect: true }), ...r.addresses, iotlb: t });
    return { p, r, dev, win, guards: [region, region + 8192], canary, iova };
  }

  function untouched(p: Platform, at: number, len: number, value: number): boolean {
    return p.u8.subarray(at, at + len).every((x) => x === value);
  }

  test('a window-mapped device gets the translated window, and writing it touches nothing else', () => {
    const { p, r, dev, win, guards, canary, iova } = windowed();
    r.setDesc(0, iova, 4096, F_WRITE);
    r.publish(0);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0).writable, [{ addr: win, len: 4096 }]);
    dev.write(0, new Uint8Array(4096).fill(0xff));
    dev.pushPopped();
    assert.ok(untouched(p, win, 4096, 0xff));
    assert.ok(untouched(p, guards[0], 4096, 0xc3) && untouched(p, guards[1], 4096, 0xc3), 'guards intact');
    assert.ok(untouched(p, canary, 4096, 0x3c), 'canary intact');
  });

  const escapes: [string, (w: ReturnType<typeof windowed>) => void][] = [
    ['a buffer at an identity RAM address (RAM, but not in this map)', (w) => w.r.setDesc(0, w.canary, 16, F_WRITE)],
    ['a buffer starting one byte before the window', (w) => w.r.setDesc(0, w.iova - 1n, 2, F_WRITE)],
    ['a buffer crossing the window end by one byte', (w) => w.r.setDesc(0, w.iova + 4095n, 2, F_WRITE)],
    ['a buffer just after the window', (w) => w.r.setDesc(0, w.iova + 4096n, 1, F_WRITE)],
    ['the whole window plus one byte', (w) => w.r.setDesc(0, w.iova, 4097, F_WRITE)],
    ['the window IOVA without its high half', (w) => w.r.setDesc(0, w.iova & 0xffff_ffffn, 16, F_WRITE)],
    ['a readable buffer in the canary (a read outside the map)', (w) => w.r.setDesc(0, w.canary, 16, 0)],
    ['a buffer in the target RAM of the window, by its identity address', (w) => w.r.setDesc(0, w.win, 16, F_WRITE)],
    ['an indirect table in the canary', (w) => {
      writeSplitDesc(w.p, w.canary, 0, w.iova, 16, F_WRITE, 0);
      w.r.setDesc(0, w.canary, 16, F_INDIRECT);
    }],
    ['a good window buffer followed by one outside it', (w) => {
      w.r.setDesc(0, w.iova, 16, F_WRITE | F_NEXT, 1);
      w.r.setDesc(1, w.canary, 16, F_WRITE);
    }],
  ];
  for (const [name, write] of escapes) {
    test(`windowed device: ${name} -> address_unmapped, canaries intact`, () => {
      const w = windowed();
      // Prime the device's last translation with the window entry (devPop's fast path starts
      // from it), so the escape is tested against the fast path's bounds as well.
      w.r.setDesc(7, w.iova + 64n, 16, F_WRITE);
      w.r.publish(7);
      assert.equal(w.dev.pop(), 1);
      assert.deepEqual(w.dev.chain(0).writable, [{ addr: w.win + 64, len: 16 }]);
      // The canary region holds the pattern; the indirect-table case writes a descriptor into it.
      write(w);
      const canaryBytes = w.p.u8.slice(w.canary, w.canary + 4096);
      w.r.publish(0);
      expectPeerError(w.dev, () => w.dev.pop(), Code.AddressUnmapped);
      assert.deepEqual(w.p.u8.slice(w.canary, w.canary + 4096), canaryBytes);
      assert.ok(untouched(w.p, w.guards[0], 4096, 0xc3) && untouched(w.p, w.guards[1], 4096, 0xc3));
      assert.ok(untouched(w.p, w.win, 4096, 0xc3), 'the window itself was not written either');
    });
  }

  test('permissions: a writable buffer in a read-only window is address_unmapped; a readable one is fine', () => {
    const w = windowed(PERM_R);
    w.r.setDesc(0, w.iova, 16, 0);
    w.r.publish(0);
    assert.equal(w.dev.pop(), 1);
    w.r.setDesc(0, w.iova, 16, F_WRITE);
    w.r.publish(0);
    expectPeerError(w.dev, () => w.dev.pop(), Code.AddressUnmapped);
  });

  test('permissions: a readable buffer in a write-only window is address_unmapped; a writable one is fine', () => {
    const w = windowed(PERM_W);
    w.r.setDesc(0, w.iova, 16, F_WRITE);
    w.r.publish(0);
    assert.equal(w.dev.pop(), 1);
    w.r.setDesc(0, w.iova, 16, 0);
    w.r.publish(0);
    expectPeerError(w.dev, () => w.dev.pop(), Code.AddressUnmapped);
  });

  test('unmapping a live ring area breaks the queue with address_unmapped; reset after re-mapping recovers', () => {
    const w = windowed();
    const t = w.dev.iotlb;
    assert.equal(t.dmaUnmap(w.r.avail, 6 + 2 * N), 1);
    assert.equal(w.dev.broken, true);
    assert.throws(() => w.dev.pop(), isCode(Code.AddressUnmapped));
    t.dmaMap({ iova: w.r.avail, size: 6 + 2 * N, addr: w.r.avail, perm: PERM_R });
    assert.throws(() => w.dev.pop(), isCode(Code.AddressUnmapped), 'still broken until reset');
    w.dev.reset();
    w.r.setDesc(0, w.iova, 16, F_WRITE);
    w.r.publish(0);
    assert.equal(w.dev.pop(), 1);
  });
});
