// Self-test of the pure-TypeScript ring baseline (bench/baseline/ts-ring.ts), VIRTIO 1.3 §2.7/§2.8.
// Run: node --import tsx bench/baseline/ts-ring.check.ts   (exits 1 on any failure)
//
// 1. Round trips for both layouts × batch 1/32/256 × copy/nocopy: tokens come back in order,
//    sink bytes equal the payload, split indices wrap past 65535, packed wrap counters toggle
//    (and the used flags in ring memory alternate with them).
// 2. Multi-descriptor chains (packed chains that wrap mid-chain) and every copy path.
// 3. Every device and driver validation check, one broken field at a time.

import {
  createTsRoundTrip,
  PackedDevice,
  RingMemory,
  SplitDevice,
  Status,
  statusName,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  type Layout,
  type PackedDriver,
  type SplitDriver,
  type TsRoundTripInstance,
} from './ts-ring.ts';

let passed = 0;
let failed = 0;

function test(name: string, fn: () => void): void {
  try {
    fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${e instanceof Error ? e.message : String(e)}`);
  }
}

function eq(got: unknown, want: unknown, what: string): void {
  if (got !== want) throw new Error(`${what}: got ${String(got)}, want ${String(want)}`);
}

function eqStatus(got: number, want: number, what: string): void {
  if (got !== want) throw new Error(`${what}: got ${statusName(got)}, want ${statusName(want)}`);
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips
// ---------------------------------------------------------------------------------------------

const SIZE = 256;
/** Chains per configuration: enough for split's u16 indices to wrap three times. */
const CHAINS = 3 * 65536 + 1000;

for (const layout of ['split', 'packed'] as Layout[]) {
  for (const batch of [1, 32, 256]) {
    for (const copy of [false, true]) {
      test(`${layout} batch ${batch} ${copy ? 'copy' : 'nocopy'}: ${CHAINS} chains round trip`, () => {
        const rt = createTsRoundTrip({ layout, size: SIZE, batch, copy, payload: 64 });
        const iterations = Math.ceil(CHAINS / batch);
        if (layout === 'split') splitRounds(rt, iterations, batch);
        else packedRounds(rt, iterations, batch, 1);
        rt.check();
        const st = rt.stats();
        eq(st.chains, iterations * batch, 'chains');
        eq(st.descs, iterations * batch, 'descriptors');
      });
    }
  }
}

/** Runs one iteration at a time and watches the published u16 indices wrap. */
function splitRounds(rt: TsRoundTripInstance, iterations: number, batch: number): void {
  const drv = rt.driver as SplitDriver;
  const dev = rt.device as SplitDevice;
  let wraps = 0;
  let prev = drv.publishedAvailIdx;
  for (let i = 0; i < iterations; i++) {
    const moved = rt.run(1);
    if (moved !== batch) throw new Error(`iteration ${i} moved ${moved}, want ${batch}`);
    const idx = drv.publishedAvailIdx;
    if (idx < prev) wraps++;
    if (idx !== ((prev + batch) & 0xffff)) throw new Error(`avail.idx went ${prev} -> ${idx}`);
    if (dev.usedIdxShadow !== idx || drv.lastUsedIdx !== idx) throw new Error(`used idx lags at ${idx}`);
    prev = idx;
    if ((i & 1023) === 0) rt.check();
  }
  const expected = Math.floor((iterations * batch) / 65536);
  eq(wraps, expected, 'u16 index wraps past 65535');
  if (expected < 3) throw new Error('test did not wrap the indices enough');
}

/**
 * Runs one iteration at a time, counts wrap-counter toggles on both sides and checks that the
 * used flags the device left in the ring carry the wrap counter of their lap.
 */
function packedRounds(rt: TsRoundTripInstance, iterations: number, batch: number, segments: number): void {
  const drv = rt.driver as PackedDriver;
  const dev = rt.device as PackedDevice;
  const u16 = rt.mem.u16;
  const flags16 = (slot: number): number => ((rt.map.areas.descArea + slot * 16) >> 1) + 7;
  const w = { da: drv.availWrapCounter, du: drv.usedWrapCounter, va: dev.availWrapCounter, vu: dev.usedWrapCounter };
  let toggles = 0;
  let wrapsSeen0 = 0;
  let descs = 0;
  for (let i = 0; i < iterations; i++) {
    rt.run(1);
    descs += batch * segments;
    const now = { da: drv.availWrapCounter, du: drv.usedWrapCounter, va: dev.availWrapCounter, vu: dev.usedWrapCounter };
    if (now.da !== w.da) toggles++;
    if (now.da !== now.du || now.da !== now.va || now.da !== now.vu) {
      throw new Error(`wrap counters disagree after iteration ${i}: ${JSON.stringify(now)}`);
    }
    Object.assign(w, now);
    // The last used element: written at the chain head before lastUsed, in the lap it belongs to.
    const lastHead = (drv.lastUsed - segments + SIZE) % SIZE;
    const lap = drv.lastUsed >= segments ? drv.usedWrapCounter : drv.usedWrapCounter ^ 1;
    const want = lap !== 0 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
    const got = u16[flags16(lastHead)]! & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
    if (got !== want) throw new Error(`used flags at slot ${lastHead} are ${got.toString(16)}, want ${want.toString(16)}`);
    if (now.da === 0) wrapsSeen0++;
    if ((i & 1023) === 0) rt.check();
  }
  eq(toggles, Math.floor(descs / SIZE), 'wrap counter toggles');
  if (wrapsSeen0 === 0) throw new Error('wrap counter never reached 0');
}

// ---------------------------------------------------------------------------------------------
// 2. Multi-descriptor chains and copy paths
// ---------------------------------------------------------------------------------------------

for (const layout of ['split', 'packed'] as Layout[]) {
  for (const [segments, batch, payload] of [
    [3, 85, 64], //  21+21+22 bytes: unaligned copies; 255-slot batches wrap packed mid-chain
    [3, 7, 64],
    [4, 64, 64], //  16-byte aligned segments
    [5, 13, 1500], // larger than the small-copy path
    [5, 16, 64], //  12- and 16-byte segments: word copies with a tail
    [1, 32, 52], //  one 52-byte segment: word copies with a tail
  ] as const) {
    test(`${layout} ${segments}-descriptor chains, batch ${batch}, payload ${payload}, copy`, () => {
      const rt = createTsRoundTrip({ layout, size: SIZE, batch, copy: true, payload, segments });
      const iterations = Math.ceil((3 * 65536) / batch / segments) + 50;
      if (layout === 'split') {
        for (let i = 0; i < iterations; i++) rt.run(1);
      } else {
        packedRounds(rt, iterations, batch, segments);
      }
      rt.check();
      eq(rt.stats().descs, iterations * batch * segments, 'descriptors');
    });
  }
}

test('run(n) returns descriptors moved and check() catches a corrupted sink', () => {
  const rt = createTsRoundTrip({ layout: 'split', size: SIZE, batch: 32, copy: true, payload: 64 });
  eq(rt.run(100), 3200, 'run(100) descriptors');
  rt.check();
  rt.mem.u8[rt.map.device.sinkBase + 5]! ^= 0xff;
  let threw = false;
  try {
    rt.check();
  } catch {
    threw = true;
  }
  eq(threw, true, 'check() throws on a corrupted sink byte');
});

test('options are validated', () => {
  const bad = [
    { layout: 'split', size: 100, batch: 1, copy: false, payload: 64 },
    { layout: 'split', size: 256, batch: 257, copy: false, payload: 64 },
    { layout: 'packed', size: 256, batch: 128, copy: false, payload: 64, segments: 3 },
    { layout: 'ring', size: 256, batch: 1, copy: false, payload: 64 },
  ];
  for (const opts of bad) {
    let threw = false;
    try {
      createTsRoundTrip(opts as Parameters<typeof createTsRoundTrip>[0]);
    } catch {
      threw = true;
    }
    eq(threw, true, `rejects ${JSON.stringify(opts)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// 3. Validation: break one field of a known-good ring per case
// ---------------------------------------------------------------------------------------------

interface D {
  addr?: number;
  hi?: number;
  len?: number;
  flags?: number;
  next?: number; // split
  id?: number; //   packed
}

/** A fresh instance whose rings are written by hand. */
function handRing(layout: Layout, copy = false): TsRoundTripInstance {
  return createTsRoundTrip({ layout, size: SIZE, batch: 1, copy, payload: 64 });
}

function writeDesc(rt: TsRoundTripInstance, i: number, d: D): void {
  const o = rt.map.areas.descArea + i * 16;
  const { u16, u32 } = rt.mem;
  u32[o >> 2] = d.addr ?? rt.map.bufBase;
  u32[(o >> 2) + 1] = d.hi ?? 0;
  u32[(o >> 2) + 2] = d.len ?? 64;
  if (rt.layout === 'split') {
    u16[(o >> 1) + 6] = d.flags ?? 0;
    u16[(o >> 1) + 7] = d.next ?? 0;
  } else {
    u16[(o >> 1) + 6] = d.id ?? 0;
    // Packed, wrap counter 1: available = AVAIL set, USED clear.
    u16[(o >> 1) + 7] = (d.flags ?? 0) | VIRTQ_DESC_F_AVAIL;
  }
}

/** Split: publish `heads` in the avail ring and set avail.idx. */
function publish(rt: TsRoundTripInstance, heads: number[], idx = heads.length): void {
  const a = rt.map.areas.driverArea;
  heads.forEach((h, k) => (rt.mem.u16[(a >> 1) + 2 + k] = h));
  rt.mem.u16[(a >> 1) + 1] = idx;
}

function pop(rt: TsRoundTripInstance): number {
  return rt.device.popAvail();
}

const RAM = (rt: TsRoundTripInstance) => rt.map.device;

for (const layout of ['split', 'packed'] as Layout[]) {
  const one = (d: D[], heads = [0]) => {
    const rt = handRing(layout);
    d.forEach((x, i) => writeDesc(rt, i, x));
    if (layout === 'split') publish(rt, heads);
    return rt;
  };
  const chain = (n: number, last: D = {}): D[] =>
    Array.from({ length: n }, (_, i) => (i + 1 < n ? { flags: VIRTQ_DESC_F_NEXT, next: i + 1 } : last));

  test(`${layout}: a good chain (readable, writable, zero length, buffer ending at ramEnd) pops`, () => {
    const rt = handRing(layout);
    const end = RAM(rt).ramEnd;
    writeDesc(rt, 0, { flags: VIRTQ_DESC_F_NEXT, next: 1, len: 10 });
    writeDesc(rt, 1, { flags: VIRTQ_DESC_F_NEXT, next: 2, len: 0, addr: end });
    writeDesc(rt, 2, { flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 3, addr: end - 64, len: 64 });
    writeDesc(rt, 3, { flags: VIRTQ_DESC_F_WRITE, len: 6, id: 7 });
    if (layout === 'split') publish(rt, [0]);
    eq(pop(rt), layout === 'split' ? 0 : 7, 'head / id');
    eq(rt.device.chainDescs, 4, 'descriptors');
    eq(rt.device.chainLen, 80, 'total length');
    eqStatus(pop(rt), Status.NONE, 'then empty');
  });

  test(`${layout}: INDIRECT is rejected, alone and with NEXT`, () => {
    eqStatus(pop(one([{ flags: VIRTQ_DESC_F_INDIRECT, len: 16 }])), Status.INDIRECT, 'INDIRECT');
    eqStatus(pop(one([{ flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 1 }, {}])), Status.INDIRECT, 'INDIRECT|NEXT');
    eqStatus(pop(one([{ flags: VIRTQ_DESC_F_NEXT, next: 1 }, { flags: VIRTQ_DESC_F_INDIRECT }])), Status.INDIRECT, 'INDIRECT later in chain');
  });

  test(`${layout}: a readable descriptor after a writable one is rejected`, () => {
    eqStatus(pop(one([{ flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: 1 }, {}])), Status.ORDER, 'ORDER');
  });

  test(`${layout}: buffers outside the DMA region are rejected`, () => {
    const ram = RAM(handRing(layout));
    eqStatus(pop(one([{ hi: 1 }])), Status.BAD_ADDR, 'nonzero high half');
    eqStatus(pop(one([{ hi: 0x8000_0000, len: 0 }])), Status.BAD_ADDR, 'high half only');
    eqStatus(pop(one([{ addr: ram.ramBase - 4 }])), Status.BAD_ADDR, 'below ramBase');
    eqStatus(pop(one([{ addr: ram.ramEnd - 60 }])), Status.BAD_ADDR, 'runs past ramEnd');
    eqStatus(pop(one([{ addr: ram.ramEnd + 4, len: 0 }])), Status.BAD_ADDR, 'starts past ramEnd');
    eqStatus(pop(one([{ addr: 0xffff_fff0, len: 0x20 }])), Status.BAD_ADDR, 'wraps 2^32');
    eqStatus(pop(one([{ flags: VIRTQ_DESC_F_NEXT, next: 1 }, { flags: VIRTQ_DESC_F_WRITE, hi: 2 }])), Status.BAD_ADDR, 'writable, later in chain');
  });

  test(`${layout}: a chain longer than the queue (a loop) is rejected`, () => {
    if (layout === 'split') {
      eqStatus(pop(one([{ flags: VIRTQ_DESC_F_NEXT, next: 1 }, { flags: VIRTQ_DESC_F_NEXT, next: 0 }])), Status.LOOP, 'two-cycle');
      eqStatus(pop(one([{ flags: VIRTQ_DESC_F_NEXT, next: 0 }])), Status.LOOP, 'self-loop');
    } else {
      // Every slot available and chained: the walk goes round the ring.
      eqStatus(pop(one(chain(SIZE, { flags: VIRTQ_DESC_F_NEXT }))), Status.LOOP, 'all NEXT');
    }
    // A chain of exactly `size` descriptors is fine.
    const rt = one(chain(SIZE, { len: 1, id: 3 }));
    eq(pop(rt), layout === 'split' ? 0 : 3, 'size-long chain');
    eq(rt.device.chainDescs, SIZE, 'descriptors');
  });

  test(`${layout}: a chain over 2^32-1 bytes is rejected`, () => {
    const rt = handRing(layout);
    // A device whose DMA region covers all of 32-bit space (it never touches the bytes: no copy).
    const cfg = { ...RAM(rt), ramBase: 0, ramEnd: 2 ** 32, copy: false };
    const dev = layout === 'split' ? new SplitDevice(rt.mem, rt.map.areas, cfg) : new PackedDevice(rt.mem, rt.map.areas, cfg);
    writeDesc(rt, 0, { flags: VIRTQ_DESC_F_NEXT, next: 1, addr: 0, len: 0x8000_0000 });
    writeDesc(rt, 1, { flags: VIRTQ_DESC_F_NEXT, next: 2, addr: 0x8000_0000, len: 0x7fff_ffff });
    writeDesc(rt, 2, { addr: 0, len: 1 });
    if (layout === 'split') publish(rt, [0]);
    eqStatus(dev.popAvail(), Status.TOO_LONG, 'TOO_LONG');
    // One byte less is accepted.
    const rt2 = handRing(layout);
    const dev2 = layout === 'split' ? new SplitDevice(rt2.mem, rt2.map.areas, cfg) : new PackedDevice(rt2.mem, rt2.map.areas, cfg);
    writeDesc(rt2, 0, { flags: VIRTQ_DESC_F_NEXT, next: 1, addr: 0, len: 0x8000_0000 });
    writeDesc(rt2, 1, { addr: 0x8000_0000, len: 0x7fff_ffff });
    if (layout === 'split') publish(rt2, [0]);
    eq(dev2.popAvail() >= 0, true, '2^32-1 bytes accepted');
    eq(dev2.chainLen, 0xffff_ffff, 'chainLen');
  });

  test(`${layout}: a readable part larger than the sink slot is rejected when copying`, () => {
    const rt = handRing(layout, true);
    writeDesc(rt, 0, { len: RAM(rt).sinkSlotBytes + 4 });
    if (layout === 'split') publish(rt, [0]);
    eqStatus(pop(rt), Status.SINK_OVERFLOW, 'SINK_OVERFLOW');
  });

  test(`${layout}: a broken queue stays broken`, () => {
    const rt = one([{ flags: VIRTQ_DESC_F_INDIRECT }]);
    eqStatus(pop(rt), Status.INDIRECT, 'first');
    writeDesc(rt, 0, {});
    eqStatus(pop(rt), Status.INDIRECT, 'sticky');
  });
}

test('split: avail.idx more than a ring ahead is rejected', () => {
  const rt = handRing('split');
  writeDesc(rt, 0, {});
  publish(rt, [0], SIZE + 1);
  eqStatus(pop(rt), Status.BAD_AVAIL_IDX, 'BAD_AVAIL_IDX');
  const ok = handRing('split');
  for (let i = 0; i < SIZE; i++) writeDesc(ok, i, {});
  publish(ok, Array.from({ length: SIZE }, (_, i) => i), SIZE);
  for (let i = 0; i < SIZE; i++) eq(pop(ok), i, `head ${i} of a full ring`);
  eqStatus(pop(ok), Status.NONE, 'then empty');
});

test('split: head and next indices >= size are rejected', () => {
  const rt = handRing('split');
  writeDesc(rt, 0, {});
  publish(rt, [SIZE]);
  eqStatus(pop(rt), Status.BAD_HEAD, 'BAD_HEAD');
  const rt2 = handRing('split');
  writeDesc(rt2, 0, { flags: VIRTQ_DESC_F_NEXT, next: SIZE });
  publish(rt2, [0]);
  eqStatus(pop(rt2), Status.BAD_NEXT, 'BAD_NEXT');
});

test('packed: availability follows the wrap counter; id comes from the last descriptor', () => {
  const rt = handRing('packed');
  const f16 = ((rt.map.areas.descArea >> 1) + 7);
  writeDesc(rt, 0, {});
  rt.mem.u16[f16] = 0; //                                    zeroed: not available
  eqStatus(pop(rt), Status.NONE, 'zeroed');
  rt.mem.u16[f16] = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED; // used-looking: not available
  eqStatus(pop(rt), Status.NONE, 'AVAIL|USED');
  rt.mem.u16[f16] = VIRTQ_DESC_F_USED; //                    available only in lap 0
  eqStatus(pop(rt), Status.NONE, 'USED only');
  writeDesc(rt, 0, { flags: VIRTQ_DESC_F_NEXT, id: 999 });
  writeDesc(rt, 1, { id: 5 });
  eq(pop(rt), 5, 'id of the last descriptor');
  writeDesc(rt, 2, { id: SIZE });
  eqStatus(pop(rt), Status.BAD_ID, 'BAD_ID');
});

test('split driver: bad used.idx, used id >= size and ids not in flight are rejected', () => {
  const mk = () => {
    const rt = handRing('split');
    const drv = rt.driver as SplitDriver;
    const sgA = new Uint32Array([rt.map.bufBase]);
    const sgL = new Uint32Array([64]);
    eq(drv.addBuf(sgA, sgL, 0, 1, 0, 42), 0, 'head');
    drv.kickPrepare();
    return { rt, drv, used: rt.map.areas.deviceArea };
  };
  let { rt, drv, used } = mk();
  rt.mem.u16[(used >> 1) + 1] = SIZE + 1;
  eqStatus(drv.getBuf(), Status.BAD_USED_IDX, 'BAD_USED_IDX');
  ({ rt, drv, used } = mk());
  rt.mem.u32[(used >> 2) + 1] = SIZE; // ring[0].id
  rt.mem.u16[(used >> 1) + 1] = 1;
  eqStatus(drv.getBuf(), Status.BAD_ID, 'BAD_ID');
  ({ rt, drv, used } = mk());
  rt.mem.u32[(used >> 2) + 1] = 9; //    never posted
  rt.mem.u16[(used >> 1) + 1] = 1;
  eqStatus(drv.getBuf(), Status.NOT_IN_FLIGHT, 'NOT_IN_FLIGHT');
  ({ rt, drv, used } = mk());
  rt.mem.u32[(used >> 2) + 1] = 0; //    completed twice
  rt.mem.u32[(used >> 2) + 3] = 0;
  rt.mem.u16[(used >> 1) + 1] = 2;
  eq(drv.getBuf(), 42, 'first completion returns the token');
  eqStatus(drv.getBuf(), Status.NOT_IN_FLIGHT, 'double completion');
});

test('packed driver: used id >= size and ids not in flight are rejected', () => {
  const mk = () => {
    const rt = handRing('packed');
    const drv = rt.driver as PackedDriver;
    eq(drv.addBuf(new Uint32Array([rt.map.bufBase]), new Uint32Array([64]), 0, 1, 0, 42), 0, 'id');
    drv.kickPrepare();
    return { rt, drv, o16: rt.map.areas.descArea >> 1 };
  };
  let { rt, drv, o16 } = mk();
  eqStatus(drv.getBuf(), Status.NONE, 'nothing used yet');
  rt.mem.u16[o16 + 6] = SIZE;
  rt.mem.u16[o16 + 7] = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
  eqStatus(drv.getBuf(), Status.BAD_ID, 'BAD_ID');
  ({ rt, drv, o16 } = mk());
  rt.mem.u16[o16 + 6] = 3;
  rt.mem.u16[o16 + 7] = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
  eqStatus(drv.getBuf(), Status.NOT_IN_FLIGHT, 'NOT_IN_FLIGHT');
});

test('split driver: out-of-order, partial completions keep the free list intact', () => {
  const rt = handRing('split');
  const drv = rt.driver as SplitDriver;
  const sgA = new Uint32Array([rt.map.bufBase, rt.map.bufBase + 64]);
  const sgL = new Uint32Array([64, 64]);
  const used32 = (rt.map.areas.deviceArea >> 2) + 1;
  const next = (i: number) => rt.mem.u16[((rt.map.areas.descArea + i * 16) >> 1) + 7]!;
  const inFlight = new Map<number, number>(); // head -> token
  let token = 0;
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  for (let round = 0; round < 40; round++) {
    // Refill with 2-descriptor chains until the ring is full.
    while (drv.numFree >= 2) {
      const h = drv.addBuf(sgA, sgL, 0, 1, 1, token);
      if (h < 0) throw new Error(`addBuf failed: ${statusName(h)}`);
      if (inFlight.has(h)) throw new Error(`head ${h} handed out twice`);
      inFlight.set(h, token++);
    }
    eqStatus(drv.addBuf(sgA, sgL, 0, 1, 0, 0), Status.NO_SPACE, 'NO_SPACE when full');
    drv.kickPrepare();
    // Every descriptor belongs to exactly one chain in flight.
    const seen = new Set<number>();
    for (const h of inFlight.keys()) {
      for (let i = h, n = 0; n < 2; n++, i = next(i)) {
        if (seen.has(i)) throw new Error(`descriptor ${i} in two chains (round ${round})`);
        seen.add(i);
      }
    }
    eq(seen.size, SIZE, 'descriptors in flight');
    // The device completes a random subset, in random order.
    const heads = [...inFlight.keys()].filter(() => rand() % 3 !== 0);
    heads.sort(() => (rand() & 1) - 0.5);
    const base = drv.lastUsedIdx;
    heads.forEach((h, j) => {
      rt.mem.u32[used32 + (((base + j) & (SIZE - 1)) << 1)] = h;
      rt.mem.u32[used32 + (((base + j) & (SIZE - 1)) << 1) + 1] = 7;
    });
    rt.mem.u16[(rt.map.areas.deviceArea >> 1) + 1] = (base + heads.length) & 0xffff;
    for (const h of heads) {
      eq(drv.getBuf(), inFlight.get(h), 'token of the completed chain');
      eq(drv.lastLen, 7, 'len');
      inFlight.delete(h);
    }
    eqStatus(drv.getBuf(), Status.NONE, 'all completions reclaimed');
    eq(drv.numFree, SIZE - 2 * inFlight.size, 'free count');
  }
});

test('packed driver: out-of-order completions free the right ids', () => {
  const rt = handRing('packed');
  const drv = rt.driver as PackedDriver;
  const sgA = new Uint32Array([rt.map.bufBase, rt.map.bufBase + 64]);
  const sgL = new Uint32Array([64, 64]);
  const o16 = (slot: number) => (rt.map.areas.descArea + slot * 16) >> 1;
  // In packed, slots are reused in ring order, so the device must complete a whole prefix of
  // the ring before slots come back; the ids within it may complete in any order.
  const inFlight = new Map<number, number>(); // id -> token
  const posted: number[] = []; //               ids in ring order
  let token = 0;
  let seed = 777;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  for (let round = 0; round < 40; round++) {
    while (drv.numFree >= 2) {
      const id = drv.addBuf(sgA, sgL, 0, 2, 0, token);
      if (id < 0) throw new Error(`addBuf failed: ${statusName(id)}`);
      if (inFlight.has(id)) throw new Error(`id ${id} handed out twice`);
      inFlight.set(id, token++);
      posted.push(id);
    }
    drv.kickPrepare();
    // Complete the oldest k chains, their ids shuffled; each used element covers 2 slots.
    const k = 1 + (rand() % posted.length);
    const done = posted.splice(0, k).sort(() => (rand() & 1) - 0.5);
    let slot = drv.lastUsed;
    let wrap = drv.usedWrapCounter;
    for (const id of done) {
      rt.mem.u16[o16(slot) + 6] = id;
      rt.mem.u16[o16(slot) + 7] = wrap !== 0 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
      slot += 2;
      if (slot >= SIZE) {
        slot -= SIZE;
        wrap ^= 1;
      }
    }
    for (const id of done) {
      eq(drv.getBuf(), inFlight.get(id), 'token of the completed chain');
      inFlight.delete(id);
    }
    eqStatus(drv.getBuf(), Status.NONE, 'all completions reclaimed');
    eq(drv.numFree, SIZE - 2 * inFlight.size, 'free count');
  }
});

test('RingMemory and devices refuse bad configuration', () => {
  let threw = 0;
  const mem = new RingMemory(1 << 16);
  const areas = { size: 64, descArea: 0x1000, driverArea: 0x1400, deviceArea: 0x1600 };
  const cfg = { ramBase: 0x1000, ramEnd: 0x8000, copy: true, sinkBase: 0x8000, sinkSlotBytes: 64, sinkSlots: 64 };
  for (const f of [
    () => new SplitDevice(mem, { ...areas, size: 48 }, cfg),
    () => new SplitDevice(mem, { ...areas, descArea: 0x1008 }, cfg),
    () => new PackedDevice(mem, areas, { ...cfg, sinkSlots: 48 }),
    () => new PackedDevice(mem, areas, { ...cfg, sinkBase: 0xf800 }),
    () => new PackedDevice(mem, areas, { ...cfg, ramEnd: 0x20000 }),
  ]) {
    try {
      f();
    } catch {
      threw++;
    }
  }
  eq(threw, 5, 'rejected configurations');
  new SplitDevice(mem, areas, cfg); // and the good one is accepted
});

console.log(`\nts-ring self-test: ${passed} passed, ${failed} failed`);
if (failed > 0) process.exitCode = 1;
