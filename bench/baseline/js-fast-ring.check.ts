// Self-test of the strongest plain-JS ring baseline (bench/baseline/js-fast-ring.ts), VIRTIO 1.3
// §2.7/§2.8. Run: node --import tsx bench/baseline/js-fast-ring.check.ts   (exits 1 on any failure)
//
// 1. Round trips for both layouts × batch 1/32/256 × copy/nocopy past three u16 wraps: tokens in
//    order, sink bytes equal the payload, indices and wrap counters where they must be.
// 2. Differential: after the same work, ring memory is byte-identical to ts-ring.ts's (the
//    baseline whose checks are tested one by one in ts-ring.check.ts), multi-descriptor too.
// 3. Every device and driver check, one broken field at a time.

import { createJsFastRoundTrip, type JsFastRoundTrip } from './js-fast-ring.ts';
import {
  createTsRoundTrip, Status, statusName, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE, type Layout,
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

const SIZE = 256;
const CHAINS = 3 * 65536 + 1000;

for (const layout of ['split', 'packed'] as Layout[]) {
  for (const batch of [1, 32, 256]) {
    for (const copy of [false, true]) {
      test(`${layout} batch ${batch} ${copy ? 'copy' : 'nocopy'}: ${CHAINS} chains round trip`, () => {
        const rt = createJsFastRoundTrip({ layout, size: SIZE, batch, copy, payload: 64 });
        const it = Math.ceil(CHAINS / batch);
        for (let done = 0; done < it; done += 1000) {
          eq(rt.run(Math.min(1000, it - done)), Math.min(1000, it - done) * batch, 'descriptors moved');
          rt.check();
        }
        eq(rt.stats().chains, it * batch, 'chains');
      });
    }
  }
}

for (const layout of ['split', 'packed'] as Layout[]) {
  for (const [batch, segments, copy] of [[32, 1, true], [7, 3, true], [5, 4, false], [1, 64, true]] as const) {
    test(`${layout} batch ${batch} × ${segments}-desc ${copy ? 'copy' : 'nocopy'}: ring memory equals ts-ring's`, () => {
      const opts = { layout, size: SIZE, batch, copy, payload: 64, segments };
      const a = createJsFastRoundTrip(opts);
      const b = createTsRoundTrip(opts);
      for (let r = 0; r < 5; r++) {
        const n = 997 + r * 131;
        eq(a.run(n), b.run(n), 'descriptors moved');
        a.check();
        b.check();
        eq(Buffer.compare(Buffer.from(a.mem.buffer), Buffer.from(b.mem.buffer)), 0, `memory after round ${r}`);
      }
      eq(a.stats().checksum, b.stats().checksum, 'checksum');
    });
  }
}

// ---- 3. one broken field at a time ----

interface D { addr?: number; hi?: number; len?: number; flags?: number; next?: number; id?: number }

function hand(layout: Layout, copy = false): JsFastRoundTrip {
  return createJsFastRoundTrip({ layout, size: SIZE, batch: 1, copy, payload: 64 });
}
function writeDesc(rt: JsFastRoundTrip, i: number, d: D): void {
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
    u16[(o >> 1) + 7] = (d.flags ?? 0) | VIRTQ_DESC_F_AVAIL;
  }
}
function publish(rt: JsFastRoundTrip, heads: number[], idx = heads.length): void {
  const a = rt.map.areas.driverArea;
  heads.forEach((h, k) => (rt.mem.u16[(a >> 1) + 2 + k] = h));
  rt.mem.u16[(a >> 1) + 1] = idx;
}

for (const layout of ['split', 'packed'] as Layout[]) {
  const one = (d: D[], heads = [0], copy = false) => {
    const rt = hand(layout, copy);
    d.forEach((x, i) => writeDesc(rt, i, x));
    if (layout === 'split') publish(rt, heads);
    return rt;
  };
  const serve = (rt: JsFastRoundTrip) => rt.deviceServe(SIZE);

  test(`${layout}: a good chain (readable, writable, zero length, buffer ending at ramEnd) is served`, () => {
    const rt = hand(layout);
    const end = rt.map.device.ramEnd;
    writeDesc(rt, 0, { flags: VIRTQ_DESC_F_NEXT, next: 1, len: 10 });
    writeDesc(rt, 1, { flags: VIRTQ_DESC_F_NEXT, next: 2, len: 0, addr: end });
    writeDesc(rt, 2, { flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 3, addr: end - 64, len: 64 });
    writeDesc(rt, 3, { flags: VIRTQ_DESC_F_WRITE, len: 6, id: 7 });
    if (layout === 'split') publish(rt, [0]);
    eq(serve(rt), 1, 'served');
    eq(rt.lastChainDescs, 4, 'descriptors');
    eq(rt.lastChainLen, 80, 'total length');
    eq(serve(rt), 0, 'then empty');
  });
  test(`${layout}: INDIRECT is rejected, alone, with NEXT and later in a chain`, () => {
    eqStatus(serve(one([{ flags: VIRTQ_DESC_F_INDIRECT, len: 16 }])), Status.INDIRECT, 'INDIRECT');
    eqStatus(serve(one([{ flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 1 }, {}])), Status.INDIRECT, 'INDIRECT|NEXT');
    eqStatus(serve(one([{ flags: VIRTQ_DESC_F_NEXT, next: 1 }, { flags: VIRTQ_DESC_F_INDIRECT }])), Status.INDIRECT, 'later');
  });
  test(`${layout}: a readable descriptor after a writable one is rejected`, () => {
    eqStatus(serve(one([{ flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: 1 }, {}])), Status.ORDER, 'ORDER');
  });
  test(`${layout}: buffers outside the DMA region are rejected`, () => {
    const ram = hand(layout).map.device;
    eqStatus(serve(one([{ hi: 1 }])), Status.BAD_ADDR, 'nonzero high half');
    eqStatus(serve(one([{ addr: ram.ramBase - 4 }])), Status.BAD_ADDR, 'below ramBase');
    eqStatus(serve(one([{ addr: ram.ramEnd - 60 }])), Status.BAD_ADDR, 'runs past ramEnd');
    eqStatus(serve(one([{ addr: ram.ramEnd + 4, len: 0 }])), Status.BAD_ADDR, 'starts past ramEnd');
    eqStatus(serve(one([{ addr: 0xffff_fff0, len: 0x20 }])), Status.BAD_ADDR, 'wraps 2^32');
    eqStatus(serve(one([{ flags: VIRTQ_DESC_F_NEXT, next: 1 }, { flags: VIRTQ_DESC_F_WRITE, hi: 2 }])), Status.BAD_ADDR, 'writable, later');
  });
  test(`${layout}: a loop is rejected; a chain of exactly size descriptors is served`, () => {
    if (layout === 'split') {
      eqStatus(serve(one([{ flags: VIRTQ_DESC_F_NEXT, next: 1 }, { flags: VIRTQ_DESC_F_NEXT, next: 0 }])), Status.LOOP, 'two-cycle');
      eqStatus(serve(one([{ flags: VIRTQ_DESC_F_NEXT, next: 0 }])), Status.LOOP, 'self-loop');
    } else {
      eqStatus(serve(one(Array.from({ length: SIZE }, () => ({ flags: VIRTQ_DESC_F_NEXT })))), Status.LOOP, 'all NEXT');
    }
    const rt = one(Array.from({ length: SIZE }, (_, i) => (i + 1 < SIZE ? { flags: VIRTQ_DESC_F_NEXT, next: i + 1, len: 1 } : { len: 1, id: 3 })));
    eq(serve(rt), 1, 'size-long chain');
    eq(rt.lastChainDescs, SIZE, 'descriptors');
  });
  test(`${layout}: a readable part larger than the sink slot is rejected when copying`, () => {
    eqStatus(serve(one([{ len: 128 }], [0], true)), Status.SINK_OVERFLOW, 'SINK_OVERFLOW');
  });
  test(`${layout}: a broken queue stays broken`, () => {
    const rt = one([{ flags: VIRTQ_DESC_F_INDIRECT }]);
    eqStatus(serve(rt), Status.INDIRECT, 'first');
    writeDesc(rt, 0, {});
    eqStatus(serve(rt), Status.INDIRECT, 'sticky');
  });
}

test('split: avail.idx more than a ring ahead, head and next >= size are rejected', () => {
  const rt = hand('split');
  writeDesc(rt, 0, {});
  publish(rt, [0], SIZE + 1);
  eqStatus(rt.deviceServe(SIZE), Status.BAD_AVAIL_IDX, 'BAD_AVAIL_IDX');
  const r2 = hand('split');
  writeDesc(r2, 0, {});
  publish(r2, [SIZE]);
  eqStatus(r2.deviceServe(SIZE), Status.BAD_HEAD, 'BAD_HEAD');
  const r3 = hand('split');
  writeDesc(r3, 0, { flags: VIRTQ_DESC_F_NEXT, next: SIZE });
  publish(r3, [0]);
  eqStatus(r3.deviceServe(SIZE), Status.BAD_NEXT, 'BAD_NEXT');
});

test('packed: availability follows the wrap counter; the id of the last descriptor is bounded', () => {
  const rt = hand('packed');
  const f16 = (rt.map.areas.descArea >> 1) + 7;
  writeDesc(rt, 0, {});
  for (const f of [0, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED, VIRTQ_DESC_F_USED]) {
    rt.mem.u16[f16] = f;
    eq(rt.deviceServe(SIZE), 0, `flags ${f}: not available`);
  }
  writeDesc(rt, 0, { id: SIZE });
  eqStatus(rt.deviceServe(SIZE), Status.BAD_ID, 'BAD_ID');
});

test('split driver: bad used.idx, used id >= size and ids not in flight are rejected', () => {
  const mk = () => {
    const rt = hand('split');
    eq(rt.driverAdd(1), 1, 'added');
    return { rt, used: rt.map.areas.deviceArea };
  };
  let { rt, used } = mk();
  rt.mem.u16[(used >> 1) + 1] = 2;
  eqStatus(rt.driverReclaim(), Status.BAD_USED_IDX, 'BAD_USED_IDX');
  ({ rt, used } = mk());
  rt.mem.u32[(used >> 2) + 1] = SIZE;
  rt.mem.u16[(used >> 1) + 1] = 1;
  eqStatus(rt.driverReclaim(), Status.BAD_ID, 'BAD_ID');
  ({ rt, used } = mk());
  rt.mem.u32[(used >> 2) + 1] = 9;
  rt.mem.u16[(used >> 1) + 1] = 1;
  eqStatus(rt.driverReclaim(), Status.NOT_IN_FLIGHT, 'NOT_IN_FLIGHT');
  eqStatus(rt.driverReclaim(), Status.NOT_IN_FLIGHT, 'sticky');
});

test('packed driver: used id >= size and ids not in flight are rejected', () => {
  const mk = () => {
    const rt = hand('packed');
    eq(rt.driverAdd(1), 1, 'added');
    return { rt, o16: rt.map.areas.descArea >> 1 };
  };
  let { rt, o16 } = mk();
  eq(rt.driverReclaim(), 0, 'nothing used yet');
  rt.mem.u16[o16 + 6] = SIZE;
  rt.mem.u16[o16 + 7] = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
  eqStatus(rt.driverReclaim(), Status.BAD_ID, 'BAD_ID');
  ({ rt, o16 } = mk());
  rt.mem.u16[o16 + 6] = 3;
  rt.mem.u16[o16 + 7] = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
  eqStatus(rt.driverReclaim(), Status.NOT_IN_FLIGHT, 'NOT_IN_FLIGHT');
});

console.log(`\n${passed} passed, ${failed} failed`);
if (failed > 0) process.exitCode = 1;
