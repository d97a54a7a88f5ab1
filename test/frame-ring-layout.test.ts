// The frame ring's bytes (src/worker/frame-ring.ts), read back from memory: header fields at
// their documented offsets, records (u32 len, bytes, pad to 4), the WRAP marker when a frame
// does not fit before the end, a full ring dropping and counting (never blocking), empty and
// oversize frames refused, u32 head/tail wraparound, an empty ring taking a maximal frame at
// every position, and a corrupt record breaking the consumer side only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, FrameRing, FRAME_RING, FRAME_RING_MAGIC, FRAME_RING_WRAP, VirtioError, Code } from '../src/index.ts';

const CAP = 256;
const MAX = CAP / 2 - 8; // 120

function ring(opts: { capacity?: number; maxFrame?: number } = { capacity: CAP }) {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  const r = FrameRing.alloc(p, opts);
  const at = r.handle.addr;
  const u32 = (off: number) => p.view.getUint32(at + off, true);
  const data = (off: number, len: number) => p.u8.slice(at + FRAME_RING.HEADER + off, at + FRAME_RING.HEADER + off + len);
  const setRaw = (off: number, v: number) => p.view.setUint32(at + off, v, true);
  return { p, r, at, u32, data, setRaw };
}

const frame = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (seed * 31 + i * 7) & 0xff);

function drainAll(r: FrameRing, batch?: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  r.drain((fs) => { for (const f of fs) out.push(f.slice()); }, batch);
  return out;
}

test('header: magic, geometry, counters at their offsets; a record is u32 len + bytes + pad to 4', () => {
  const { r, at, u32, data } = ring();
  assert.equal(at % 64, 0);
  assert.equal(u32(FRAME_RING.MAGIC), FRAME_RING_MAGIC);
  assert.deepEqual(data(-FRAME_RING.HEADER, 4), Uint8Array.from([0x56, 0x46, 0x52, 0x4d]), '"VFRM"');
  assert.equal(u32(FRAME_RING.CAPACITY), CAP);
  assert.equal(u32(FRAME_RING.MAX_FRAME), MAX);
  assert.equal(u32(FRAME_RING.PRODUCER), 0);
  r.claim('producer');
  assert.equal(u32(FRAME_RING.PRODUCER), 1);
  assert.throws(() => r.claim('producer'), (e: unknown) => e instanceof VirtioError && e.code === Code.AlreadyExists, 'one producer at a time');
  r.claim('consumer');
  assert.equal(u32(FRAME_RING.CONSUMER), 1);
  r.unclaim('producer');
  r.unclaim('consumer');
  assert.equal(u32(FRAME_RING.PRODUCER) + u32(FRAME_RING.CONSUMER), 0);
  assert.equal(r.push([frame(5, 1), frame(8, 2)]), 2);
  assert.deepEqual([...data(0, 4)], [5, 0, 0, 0]);
  assert.deepEqual(data(4, 5), frame(5, 1));
  assert.deepEqual([...data(12, 4)], [8, 0, 0, 0], 'the next record starts 4-aligned after 3 bytes of pad');
  assert.deepEqual(data(16, 8), frame(8, 2));
  assert.equal(u32(FRAME_RING.HEAD), 24);
  assert.equal(u32(FRAME_RING.PUSHED), 2);
  assert.equal(u32(FRAME_RING.TAIL), 0);
  assert.deepEqual(r.stats, { pushed: 2, popped: 0, dropsFull: 0, dropsOversize: 0, usedBytes: 24 });
  // Drained in batches of one: tail moves record by record.
  const seen: number[] = [];
  assert.equal(r.drain((fs) => { seen.push(fs.length, u32(FRAME_RING.TAIL)); }, 1), 2);
  assert.deepEqual(seen, [1, 0, 1, 12], 'tail is stored only after each batch was handed out');
  assert.equal(u32(FRAME_RING.TAIL), 24);
  assert.equal(u32(FRAME_RING.POPPED), 2);
  assert.equal(r.empty, true);
});

test('wrap-around: a frame that does not fit before the end leaves a WRAP marker and starts at 0', () => {
  const { r, u32, data } = ring();
  for (let i = 0; i < 4; i++) assert.equal(r.push([frame(54, i)]), 1); // 4 × (4 + 56) = 240
  drainAll(r);
  assert.equal(u32(FRAME_RING.HEAD), 240);
  assert.equal(r.push([frame(12, 9)]), 1, 'a 16-byte record fits exactly before the end: no marker');
  assert.deepEqual([...data(240, 4)], [12, 0, 0, 0]);
  assert.equal(u32(FRAME_RING.HEAD), 256);
  assert.deepEqual(drainAll(r), [frame(12, 9)]);
  assert.equal(r.push([frame(100, 3)]), 1); // 0..104
  drainAll(r);
  assert.equal(r.push([frame(100, 4)]), 1); // 104..208
  drainAll(r);
  // Position 208: 48 bytes before the end; a 60-byte frame (a 64-byte record) wraps.
  assert.equal(r.push([frame(60, 5)]), 1);
  assert.deepEqual([...data(208, 4)], [0xff, 0xff, 0xff, 0xff], 'WRAP marker where the frame did not fit');
  assert.equal(FRAME_RING_WRAP, 0xffffffff);
  assert.deepEqual([...data(0, 4)], [60, 0, 0, 0], 'the record starts at the data area');
  assert.deepEqual(data(4, 60), frame(60, 5));
  assert.equal(u32(FRAME_RING.HEAD), 256 + 208 + 48 + 64);
  assert.equal(r.stats.usedBytes, 48 + 64, 'the skipped end counts as used until the consumer passes it');
  assert.deepEqual(drainAll(r), [frame(60, 5)]);
  assert.equal(r.stats.usedBytes, 0);
});

test('a full ring drops and counts (push returns at once); a smaller frame may still fit; order is kept', () => {
  const { r, u32 } = ring();
  const sent: Uint8Array[] = [];
  let dropped = 0;
  for (let i = 0; i < 10; i++) {
    const f = frame(60, i);
    if (r.push([f]) === 1) sent.push(f);
    else dropped++;
  }
  assert.equal(sent.length, 4, '4 × 64 bytes fill 256');
  assert.equal(dropped, 6);
  assert.equal(u32(FRAME_RING.DROPS_FULL), 6);
  assert.equal(r.push([frame(1, 0)]), 0, 'not even a 1-byte frame fits in a full ring');
  assert.equal(u32(FRAME_RING.DROPS_FULL), 7);
  assert.deepEqual(drainAll(r, 1), sent, 'what was accepted comes out, in order');
  // A batch takes what fits, drops the rest, and a later smaller frame may still fit.
  assert.equal(r.push([frame(120, 1), frame(120, 2), frame(8, 3), frame(4, 4)]), 3, 'two 124-byte records, then no room for 12 bytes, then room for 8');
  assert.equal(u32(FRAME_RING.DROPS_FULL), 8);
  assert.deepEqual(r.stats, { pushed: 7, popped: 4, dropsFull: 8, dropsOversize: 0, usedBytes: 256 });
  assert.deepEqual(drainAll(r), [frame(120, 1), frame(120, 2), frame(4, 4)]);
});

test('empty and oversize frames are refused and counted; a maxFrame frame is taken by an empty ring at every position', () => {
  const { r, u32, setRaw } = ring();
  assert.equal(r.push([new Uint8Array(0), frame(MAX + 1, 1), frame(MAX, 2)]), 1);
  assert.equal(u32(FRAME_RING.DROPS_OVERSIZE), 2);
  assert.deepEqual(drainAll(r), [frame(MAX, 2)]);
  for (let pos = 0; pos < CAP; pos += 4) {
    setRaw(FRAME_RING.HEAD, pos);
    setRaw(FRAME_RING.TAIL, pos);
    assert.equal(r.push([frame(MAX, pos)]), 1, `empty ring, head at ${pos}`);
    assert.deepEqual(drainAll(r), [frame(MAX, pos)]);
  }
  // Geometry is checked when a ring is made and when one is opened.
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  for (const o of [{ capacity: 300 }, { capacity: 128 }, { capacity: 256, maxFrame: 121 }, { capacity: 256, maxFrame: 0 }]) {
    assert.throws(() => FrameRing.alloc(p, o), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument, JSON.stringify(o));
  }
  assert.throws(() => new FrameRing(p, { addr: 64 * 1024 + 64 }), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument, 'no magic there');
  const d = FrameRing.alloc(p);
  assert.equal(d.capacity, 262144);
  assert.equal(d.maxFrame, 65553, 'any vdpasim_net frame by default');
});

test('u32 head and tail wrap past 2^32 with positions taken modulo the capacity', () => {
  const { r, u32, setRaw } = ring();
  setRaw(FRAME_RING.HEAD, 0xffffff80);
  setRaw(FRAME_RING.TAIL, 0xffffff80); // position 128
  const sent: Uint8Array[] = [];
  for (let i = 0; i < 40; i++) {
    const f = frame(20 + (i % 7) * 5, i);
    assert.equal(r.push([f]), 1);
    sent.push(f);
    if (i % 2 === 1) assert.deepEqual(drainAll(r), sent.splice(0));
  }
  assert.deepEqual(drainAll(r), sent);
  assert.ok(u32(FRAME_RING.HEAD) < 0x1000, `head wrapped (${u32(FRAME_RING.HEAD)})`);
  assert.equal(u32(FRAME_RING.HEAD), u32(FRAME_RING.TAIL));
});

test('a corrupt record (written by someone else) breaks the consumer side: nothing more is drained', () => {
  const { r, p, at } = ring();
  r.push([frame(10, 1), frame(10, 2)]);
  p.view.setUint32(at + FRAME_RING.HEADER + 16, MAX + 5, true); // second record's len
  const got = drainAll(r);
  assert.deepEqual(got, [], 'the batch with the bad record is not handed out');
  assert.match(r.broken ?? '', /corrupt/);
  assert.equal(r.drain(() => assert.fail('broken')), 0);
  // The producer side is unaffected (it never reads records).
  assert.equal(r.push([frame(4, 3)]), 1);
});
