// Split virtqueue byte layout, VIRTIO 1.3 §2.7, checked with raw little-endian reads and writes
// at the spec offsets (test/helpers/raw-ring.ts), never through the ring code under test:
//   descriptor: le64 addr @0 | le32 len @8 | le16 flags @12 | le16 next @14           (§2.7.5)
//   avail ring: le16 flags @0 | le16 idx @2 | le16 ring[N] @4 | le16 used_event @4+2N   (§2.7.6)
//   used ring:  le16 flags @0 | le16 idx @2 | {le32 id, le32 len}[N] @4 | le16 avail_event @4+8N (§2.7.8)
// Flag values from linux/virtio_ring.h: VRING_DESC_F_NEXT 1, _WRITE 2, _INDIRECT 4,
// VRING_USED_F_NO_NOTIFY 1, VRING_AVAIL_F_NO_INTERRUPT 1.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, DriverQueue, DeviceQueue, Iotlb, ringFeatures } from '../src/index.ts';
import {
  RawSplit, F_NEXT, F_WRITE, F_INDIRECT, VRING_USED_F_NO_NOTIFY, VRING_AVAIL_F_NO_INTERRUPT,
  readSplitDesc, writeSplitDesc, vringNeedEvent, type SplitDesc,
} from './helpers/raw-ring.ts';

const N = 8;

function platform(): Platform {
  return Platform.create({ ramSize: 1 << 20 });
}

/** A buffer of `len` bytes filled with `seed`, seed+1, … so copies can be told apart. */
function patterned(p: Platform, len: number, seed: number): number {
  const a = p.allocBuffer(len, 16);
  for (let i = 0; i < len; i++) p.u8[a + i] = (seed + i) & 0xff;
  return a;
}

/** Test-as-driver fixture: rings laid out by hand, consumed by a DeviceQueue. */
function handRing(opts: { eventIdx?: boolean; indirect?: boolean } = {}): { p: Platform; r: RawSplit; dev: DeviceQueue } {
  const p = platform();
  const r = RawSplit.alloc(p, N);
  const dev = new DeviceQueue(p, { size: N, features: ringFeatures(opts), ...r.addresses });
  return { p, r, dev };
}

/** Driver fixture: a DriverQueue whose rings the test reads (identity map: IOVA == offset). */
function driverRing(opts: { eventIdx?: boolean; indirect?: boolean } = {}, size = N): { p: Platform; drv: DriverQueue; r: RawSplit } {
  const p = platform();
  const drv = new DriverQueue(p, { size, features: ringFeatures(opts) });
  const a = drv.addresses;
  return { p, drv, r: new RawSplit(p, size, a.descArea, a.driverArea, a.deviceArea) };
}

/** Follows `next` from head through the raw table, as a device would (§2.7.5.2). */
function rawChain(r: RawSplit, head: number): SplitDesc[] {
  const out: SplitDesc[] = [];
  let i = head;
  for (let k = 0; k <= r.size; k++) {
    const d = r.getDesc(i);
    out.push(d);
    if (!(d.flags & F_NEXT)) return out;
    i = d.next;
  }
  throw new Error('raw chain loops');
}

describe('split layout: the test writes the rings, a DeviceQueue consumes them (§2.7)', () => {
  test('the device follows next through the table and returns readable then writable segments', () => {
    const { p, r, dev } = handRing();
    const a = patterned(p, 10, 0x10);
    const b = patterned(p, 20, 0x40);
    const c = p.allocBuffer(30, 16);
    // Deliberately scattered: 0 -> 3 -> 5.
    r.setDesc(0, a, 10, F_NEXT, 3);
    r.setDesc(3, b, 20, F_NEXT, 5);
    r.setDesc(5, c, 30, F_WRITE, 0);
    r.publish(0);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0), {
      id: 0, ndesc: 3,
      readable: [{ addr: a, len: 10 }, { addr: b, len: 20 }],
      writable: [{ addr: c, len: 30 }],
      readBytes: 30, writeBytes: 30,
    });
    // The readable bytes come out in chain order: a's bytes, then b's.
    const expected = [...p.u8.slice(a, a + 10), ...p.u8.slice(b, b + 20)];
    assert.deepEqual([...dev.read(0)], expected);
  });

  test('heads are taken from avail->ring[idx mod N] in order, only up to avail->idx', () => {
    const { p, r, dev } = handRing();
    const buf = p.allocBuffer(64);
    for (let i = 0; i < N; i++) r.setDesc(i, buf, 8 + i, 0);
    r.publish(6, 2);
    r.setAvailRing(2, 4); // written but not published: avail->idx is 2
    assert.equal(dev.pop(), 2);
    assert.deepEqual([dev.chain(0).id, dev.chain(1).id], [6, 2]);
    assert.deepEqual([dev.chain(0).readBytes, dev.chain(1).readBytes], [8 + 6, 8 + 2]);
    assert.equal(dev.pop(), 0);
  });

  test('the descriptor addr is a full le64: an IOVA above 4 GiB is translated, not truncated', () => {
    const p = platform();
    const r = RawSplit.alloc(p, N);
    const target = p.allocBuffer(256, 16);
    const t = new Iotlb(p, 4);
    const hi = 0x1_2345_6000n;
    t.setMap([
      { iova: p.ramBase, size: p.ramSize, addr: p.ramBase },
      { iova: hi, size: 256, addr: target },
    ]);
    const dev = new DeviceQueue(p, { size: N, ...r.addresses, iotlb: t });
    r.setDesc(0, hi + 0x10n, 32, F_WRITE);
    r.publish(0);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0).writable, [{ addr: target + 0x10, len: 32 }]);
  });

  test('an indirect descriptor points at a table of 16-byte split descriptors linked by next (§2.7.5.3)', () => {
    const { p, r, dev } = handRing({ indirect: true });
    const a = patterned(p, 4, 1);
    const b = patterned(p, 6, 2);
    const c = p.allocBuffer(8, 16);
    const table = p.allocBuffer(3 * 16, 16);
    // Table order 0 -> 2 -> 1 proves next is followed inside the table.
    writeSplitDesc(p, table, 0, a, 4, F_NEXT, 2);
    writeSplitDesc(p, table, 2, b, 6, F_NEXT, 1);
    writeSplitDesc(p, table, 1, c, 8, F_WRITE, 0);
    r.setDesc(2, table, 3 * 16, F_INDIRECT);
    r.publish(2);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0), {
      id: 2, ndesc: 1,
      readable: [{ addr: a, len: 4 }, { addr: b, len: 6 }],
      writable: [{ addr: c, len: 8 }],
      readBytes: 10, writeBytes: 8,
    });
  });

  test('the WRITE flag of the descriptor that refers to an indirect table is ignored (§2.7.5.3.2)', () => {
    const { p, r, dev } = handRing({ indirect: true });
    const a = p.allocBuffer(16);
    const table = p.allocBuffer(16, 16);
    writeSplitDesc(p, table, 0, a, 16, 0, 0);
    r.setDesc(0, table, 16, F_INDIRECT | F_WRITE);
    r.publish(0);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0).readable, [{ addr: a, len: 16 }]);
    assert.deepEqual(dev.chain(0).writable, []);
  });

  test('the device writes used elements {le32 id, le32 len} at 4 + 8·slot, then used->idx', () => {
    const { p, r, dev } = handRing();
    const w1 = p.allocBuffer(16);
    const w2 = p.allocBuffer(16);
    r.setDesc(5, w1, 16, F_WRITE);
    r.setDesc(1, w2, 16, F_WRITE);
    r.publish(5, 1);
    assert.equal(dev.pop(), 2);
    dev.setWritten(0, 3);
    assert.equal(dev.write(1, new Uint8Array([9, 8, 7, 6, 5, 4, 3])), 7);
    assert.equal(dev.pushPopped(2), 2);
    assert.deepEqual(r.usedElem(0), { id: 5, len: 3 });
    assert.deepEqual(r.usedElem(1), { id: 1, len: 7 });
    assert.equal(r.usedIdx, 2);
    assert.equal(r.usedFlags, 0);
    assert.deepEqual([...p.u8.slice(w2, w2 + 7)], [9, 8, 7, 6, 5, 4, 3]);
  });

  test('used elements go to slot used_idx mod N, wrapping at the ring end', () => {
    const { p, r, dev } = handRing();
    dev.setState({ version: 1, layout: 'split', size: N, availIndex: 7, usedIndex: 7 });
    const buf = p.allocBuffer(64);
    r.setDesc(3, buf, 64, F_WRITE);
    r.setDesc(4, buf, 64, F_WRITE);
    r.availIdx = 7;
    r.publish(3, 4); // ring[7] = 3, ring[0] = 4, avail->idx = 9
    assert.equal(r.availRing(7), 3);
    assert.equal(r.availRing(0), 4);
    assert.equal(dev.pop(), 2);
    dev.setWritten(0, 11);
    dev.setWritten(1, 22);
    dev.pushPopped(2);
    assert.deepEqual(r.usedElem(7), { id: 3, len: 11 });
    assert.deepEqual(r.usedElem(0), { id: 4, len: 22 });
    assert.equal(r.usedIdx, 9);
  });

  test('the device pops across the u16 wrap of avail->idx and used->idx wraps with it', () => {
    const { p, r, dev } = handRing();
    dev.setState({ version: 1, layout: 'split', size: N, availIndex: 65534, usedIndex: 65534 });
    const buf = p.allocBuffer(64);
    for (let i = 0; i < N; i++) r.setDesc(i, buf, 1 + i, 0);
    r.availIdx = 65534;
    r.publish(1, 2, 3, 4); // slots 6, 7, 0, 1; avail->idx = 2
    assert.equal(r.availIdx, 2);
    assert.equal(dev.pop(), 4);
    assert.deepEqual([0, 1, 2, 3].map((i) => dev.chain(i).id), [1, 2, 3, 4]);
    dev.pushPopped(4);
    assert.equal(r.usedIdx, 2);
    assert.deepEqual([6, 7, 0, 1].map((s) => r.usedElem(s).id), [1, 2, 3, 4]);
  });

  test('the device never writes the descriptor table or the avail ring (driver-owned, §2.7)', () => {
    const { p, r, dev } = handRing({ eventIdx: true });
    const buf = p.allocBuffer(64);
    r.setDesc(0, buf, 32, F_NEXT, 1);
    r.setDesc(1, buf + 32, 32, F_WRITE);
    r.publish(0);
    const descBefore = p.u8.slice(r.desc, r.desc + 16 * N);
    const availBefore = p.u8.slice(r.avail, r.avail + 6 + 2 * N);
    assert.equal(dev.pop(), 1);
    dev.write(0, new Uint8Array(32).fill(0xee));
    dev.pushPopped();
    dev.needCall();
    dev.enableKick();
    dev.disableKick();
    assert.deepEqual(p.u8.slice(r.desc, r.desc + 16 * N), descBefore);
    assert.deepEqual(p.u8.slice(r.avail, r.avail + 6 + 2 * N), availBefore);
  });
});

describe('split layout: a DriverQueue writes the rings, the test reads them (§2.7.13)', () => {
  test('a chain is one descriptor per buffer, linked by next; readable first, last without NEXT', () => {
    const { p, drv, r } = driverRing();
    const a = p.allocBuffer(10);
    const b = p.allocBuffer(20);
    const c = p.allocBuffer(30);
    drv.stage(0xabcd, [{ addr: a, len: 10 }, { addr: b, len: 20 }], [{ addr: c, len: 30 }]);
    assert.equal(drv.submit(), 1);
    assert.equal(r.availIdx, 1);
    assert.equal(r.availFlags, 0);
    const head = r.availRing(0);
    assert.ok(head < N);
    const chain = rawChain(r, head);
    assert.deepEqual(chain.map((d) => [d.addr, d.len, d.flags & (F_NEXT | F_WRITE | F_INDIRECT)]), [
      [BigInt(a), 10, F_NEXT],
      [BigInt(b), 20, F_NEXT],
      [BigInt(c), 30, F_WRITE],
    ]);
    // Three distinct table entries.
    const idx = [head, chain[0]!.next, chain[1]!.next];
    assert.equal(new Set(idx).size, 3);
    assert.ok(idx.every((i) => i < N));
  });

  test('each chain gets its own head in avail->ring, published by one avail->idx store per submit', () => {
    const { p, drv, r } = driverRing();
    const buf = p.allocBuffer(64);
    drv.stageOne(1, buf, 1, false);
    drv.stageOne(2, buf, 2, true);
    drv.stageOne(3, buf, 3, false);
    assert.equal(drv.submit(), 3);
    assert.equal(r.availIdx, 3);
    const heads = [0, 1, 2].map((s) => r.availRing(s));
    assert.equal(new Set(heads).size, 3);
    assert.deepEqual(heads.map((h) => r.getDesc(h).len), [1, 2, 3]);
    assert.deepEqual(heads.map((h) => r.getDesc(h).flags), [0, F_WRITE, 0]);
    drv.stageOne(4, buf, 4);
    drv.submit();
    assert.equal(r.availIdx, 4);
    assert.equal(r.getDesc(r.availRing(3)).len, 4);
  });

  test('with INDIRECT_DESC a multi-buffer chain is one INDIRECT descriptor: addr = table, len = 16·n', () => {
    const { p, drv, r } = driverRing({ indirect: true });
    const a = p.allocBuffer(10);
    const b = p.allocBuffer(20);
    const c = p.allocBuffer(30);
    drv.stage(7, [{ addr: a, len: 10 }, { addr: b, len: 20 }], [{ addr: c, len: 30 }]);
    drv.submit();
    const d = r.getDesc(r.availRing(0));
    assert.equal(d.flags, F_INDIRECT); // no NEXT with INDIRECT (§2.7.5.3.1), WRITE meaningless
    assert.equal(d.len, 3 * 16);
    const table = Number(d.addr);
    assert.ok(table >= p.ramBase && table + 48 <= p.ramBase + p.ramSize);
    assert.equal(table % 16, 0);
    const entries = [0, 1, 2].map((i) => readSplitDesc(p, table, i));
    assert.deepEqual(entries.map((e) => [e.addr, e.len, e.flags]), [
      [BigInt(a), 10, F_NEXT],
      [BigInt(b), 20, F_NEXT],
      [BigInt(c), 30, F_WRITE],
    ]);
    assert.deepEqual([entries[0]!.next, entries[1]!.next], [1, 2]);
  });

  test('with INDIRECT_DESC a single-buffer chain stays a direct descriptor', () => {
    const { p, drv, r } = driverRing({ indirect: true });
    const a = p.allocBuffer(10);
    drv.stageOne(1, a, 10, true);
    drv.submit();
    const d = r.getDesc(r.availRing(0));
    assert.deepEqual([d.addr, d.len, d.flags], [BigInt(a), 10, F_WRITE]);
  });

  test('dmaBase offsets every IOVA the driver writes: ring addresses and indirect table addr', () => {
    const p = platform();
    const dmaBase = 0x40_0000_0000;
    const drv = new DriverQueue(p, { size: N, features: ringFeatures({ indirect: true }), dmaBase });
    const ad = drv.addresses;
    const r = new RawSplit(p, N, ad.descArea - dmaBase, ad.driverArea - dmaBase, ad.deviceArea - dmaBase);
    const a = p.allocBuffer(8);
    drv.stage(1, [{ addr: dmaBase + a, len: 8 }], [{ addr: dmaBase + a, len: 8 }]);
    drv.submit();
    const d = r.getDesc(r.availRing(0));
    const table = Number(d.addr) - dmaBase;
    assert.ok(table >= p.ramBase && table < p.ramBase + p.ramSize, `table IOVA ${d.addr} is dmaBase + a RAM offset`);
    assert.equal(readSplitDesc(p, table, 0).addr, BigInt(dmaBase + a));
  });

  test('getUsed returns the token of the used id and the len the device wrote, in used-ring order', () => {
    const { p, drv, r } = driverRing();
    const buf = p.allocBuffer(64);
    drv.stage(111, [{ addr: buf, len: 8 }], [{ addr: buf + 8, len: 8 }]);
    drv.stage(222, [], [{ addr: buf + 16, len: 16 }]);
    drv.submit();
    const h1 = r.availRing(0);
    const h2 = r.availRing(1);
    const freeBefore = drv.numFree;
    // The device completes out of order: the second chain first.
    r.setUsedElem(0, h2, 5);
    r.usedIdx = 1;
    assert.equal(drv.getUsed(), 1);
    assert.deepEqual([drv.usedToken(0), drv.usedLen(0)], [222, 5]);
    r.setUsedElem(1, h1, 0);
    r.usedIdx = 2;
    assert.equal(drv.getUsed(), 1);
    assert.deepEqual([drv.usedToken(0), drv.usedLen(0)], [111, 0]);
    assert.equal(drv.numFree, freeBefore + 3);
    assert.equal(drv.getUsed(), 0);
  });

  test('the driver reads used elements at slot last_used mod N across the ring end', () => {
    const { p, drv, r } = driverRing();
    const buf = p.allocBuffer(64);
    for (let k = 0; k < 2 * N + 3; k++) {
      drv.stageOne(1000 + k, buf, 4, true);
      assert.equal(drv.submit(), 1);
      const slot = k % N;
      assert.equal(r.availIdx, k + 1);
      r.setUsedElem(slot, r.availRing(slot), k);
      r.usedIdx = k + 1;
      assert.equal(drv.getUsed(), 1, `round ${k}`);
      assert.deepEqual([drv.usedToken(0), drv.usedLen(0)], [1000 + k, k]);
    }
  });
});

describe('split notification fields (§2.7.7 used buffer, §2.7.10 available buffer notifications)', () => {
  test('EVENT_IDX: enableKick writes avail_event = next avail index at used + 4 + 8N', () => {
    const { p, r, dev } = handRing({ eventIdx: true });
    const buf = p.allocBuffer(64);
    r.setDesc(0, buf, 8, 0);
    r.publish(0, 0, 0);
    assert.equal(dev.pop(), 3);
    r.availEvent = 0xbeef;
    assert.equal(dev.enableKick(), false);
    assert.equal(r.availEvent, 3);
    assert.equal(p.view.getUint16(r.used + 4 + 8 * N, true), 3);
    r.publish(0);
    assert.equal(dev.enableKick(), true, 'a buffer became available before kicks were enabled');
  });

  test('EVENT_IDX: the device keeps used->flags 0, disableKick included (§2.7.10)', () => {
    const { r, dev } = handRing({ eventIdx: true });
    dev.disableKick();
    assert.equal(r.usedFlags, 0);
    dev.enableKick();
    assert.equal(r.usedFlags, 0);
  });

  test('EVENT_IDX: enableCb writes used_event = last used index at avail + 4 + 2N', () => {
    const { p, drv, r } = driverRing({ eventIdx: true });
    const buf = p.allocBuffer(64);
    for (let k = 0; k < 3; k++) drv.stageOne(k, buf, 8, true);
    drv.submit();
    r.setUsedElem(0, r.availRing(0), 0);
    r.setUsedElem(1, r.availRing(1), 0);
    r.usedIdx = 2;
    assert.equal(drv.getUsed(), 2);
    r.usedEvent = 0xbeef;
    assert.equal(drv.enableCb(), true);
    assert.equal(r.usedEvent, 2);
    assert.equal(p.view.getUint16(r.avail + 4 + 2 * N, true), 2);
    r.setUsedElem(2, r.availRing(2), 0);
    r.usedIdx = 3;
    assert.equal(drv.enableCb(), false, 'a used buffer is already pending');
  });

  test('EVENT_IDX: the driver keeps avail->flags 0, disableCb included (§2.7.7)', () => {
    const { drv, r } = driverRing({ eventIdx: true });
    drv.disableCb();
    assert.equal(r.availFlags, 0);
    drv.enableCb();
    assert.equal(r.availFlags, 0);
  });

  test('no EVENT_IDX: disableKick sets VRING_USED_F_NO_NOTIFY in used->flags, enableKick clears it', () => {
    const { r, dev } = handRing();
    dev.disableKick();
    assert.equal(r.usedFlags, VRING_USED_F_NO_NOTIFY);
    dev.enableKick();
    assert.equal(r.usedFlags, 0);
  });

  test('no EVENT_IDX: disableCb sets VRING_AVAIL_F_NO_INTERRUPT in avail->flags, enableCb clears it', () => {
    const { drv, r } = driverRing();
    drv.disableCb();
    assert.equal(r.availFlags, VRING_AVAIL_F_NO_INTERRUPT);
    drv.enableCb();
    assert.equal(r.availFlags, 0);
  });

  test('no EVENT_IDX: kickPrepare follows NO_NOTIFY written by hand in used->flags', () => {
    const { p, drv, r } = driverRing();
    const buf = p.allocBuffer(64);
    drv.stageOne(1, buf, 8);
    drv.submit();
    r.usedFlags = VRING_USED_F_NO_NOTIFY;
    assert.equal(drv.kickPrepare(), false);
    drv.stageOne(2, buf, 8);
    drv.submit();
    r.usedFlags = 0;
    assert.equal(drv.kickPrepare(), true);
    assert.equal(drv.kickPrepare(), false, 'nothing added since the last decision');
  });

  test('EVENT_IDX: kickPrepare kicks iff avail_event (written by hand) is in [old, new)', () => {
    const { p, drv, r } = driverRing({ eventIdx: true });
    const buf = p.allocBuffer(64);
    const add = (n: number): void => {
      for (let k = 0; k < n; k++) drv.stageOne(k, buf, 8);
      assert.equal(drv.submit(), n);
    };
    r.availEvent = 0;
    add(1); // old 0, new 1
    assert.equal(drv.kickPrepare(), true);
    add(1); // old 1, new 2; event 0 already passed
    assert.equal(drv.kickPrepare(), false);
    r.availEvent = 2;
    add(1); // old 2, new 3
    assert.equal(drv.kickPrepare(), true);
    r.availEvent = 5;
    add(3); // old 3, new 6
    assert.equal(drv.kickPrepare(), true);
    // Free the ring by hand to add more.
    for (let s = 0; s < 6; s++) r.setUsedElem(s, r.availRing(s), 0);
    r.usedIdx = 6;
    assert.equal(drv.getUsed(), 6);
    r.availEvent = 8;
    add(2); // old 6, new 8: 8 itself is not in [6, 8)
    assert.equal(drv.kickPrepare(), false);
  });

  test('no EVENT_IDX: needCall follows NO_INTERRUPT written by hand in avail->flags', () => {
    const { p, r, dev } = handRing();
    const buf = p.allocBuffer(64);
    r.setDesc(0, buf, 8, F_WRITE);
    r.publish(0);
    dev.pop();
    dev.pushPopped();
    r.availFlags = VRING_AVAIL_F_NO_INTERRUPT;
    assert.equal(dev.needCall(), false);
    r.publish(0);
    dev.pop();
    dev.pushPopped();
    r.availFlags = 0;
    assert.equal(dev.needCall(), true);
    assert.equal(dev.needCall(), false, 'nothing used since the last decision');
  });

  test('EVENT_IDX: needCall notifies iff used_event (written by hand) is in [old, new)', () => {
    const { p, r, dev } = handRing({ eventIdx: true });
    const buf = p.allocBuffer(64);
    r.setDesc(0, buf, 8, F_WRITE);
    const useOne = (): void => {
      r.publish(0);
      assert.equal(dev.pop(), 1);
      dev.pushPopped();
    };
    useOne(); // used 0 -> 1
    assert.equal(dev.needCall(), true, 'the first decision always notifies (vhost signalled_used_valid)');
    r.usedEvent = 2;
    useOne(); // old 1, new 2: entry 2 not written yet
    assert.equal(dev.needCall(), false);
    useOne(); // old 2, new 3
    assert.equal(dev.needCall(), true);
    r.usedEvent = 3;
    useOne();
    useOne(); // old 3, new 5
    assert.equal(dev.needCall(), true);
  });

  /**
   * Device at used index 65534 after one notification decision, then four more used
   * entries: old = 65534, new = 2. Returns needCall() with used_event = `event`.
   */
  function needCallAcrossWrap(event: number): boolean {
    const { p, r, dev } = handRing({ eventIdx: true });
    dev.setState({ version: 1, layout: 'split', size: N, availIndex: 65530, usedIndex: 65530 });
    const buf = p.allocBuffer(64);
    for (let i = 0; i < N; i++) r.setDesc(i, buf, 8, F_WRITE);
    r.availIdx = 65530;
    r.publish(0, 1, 2, 3);
    assert.equal(dev.pop(), 4);
    dev.pushPopped();
    assert.equal(r.usedIdx, 65534);
    assert.equal(dev.needCall(), true);
    r.publish(4, 5, 6, 7);
    assert.equal(r.availIdx, 2);
    assert.equal(dev.pop(), 4);
    dev.pushPopped();
    assert.equal(r.usedIdx, 2);
    r.usedEvent = event;
    return dev.needCall();
  }

  test('vring_need_event across the u16 wrap: old 65534, new 2, used_event 65535 -> notify', () => {
    assert.equal(vringNeedEvent(65535, 2, 65534), true);
    assert.equal(needCallAcrossWrap(65535), true);
  });

  test('vring_need_event across the u16 wrap: old 65534, new 2, used_event 1 -> notify', () => {
    assert.equal(needCallAcrossWrap(1), true);
  });

  test('vring_need_event across the u16 wrap: old 65534, new 2, used_event 3 -> no notify', () => {
    assert.equal(vringNeedEvent(3, 2, 65534), false);
    assert.equal(needCallAcrossWrap(3), false);
  });

  test('vring_need_event across the u16 wrap: old 65534, new 2, used_event 2 (= new) -> no notify', () => {
    assert.equal(needCallAcrossWrap(2), false);
  });

  test('vring_need_event across the u16 wrap: old 65534, new 2, used_event 65533 (= old - 1) -> no notify', () => {
    assert.equal(vringNeedEvent(65533, 2, 65534), false);
    assert.equal(needCallAcrossWrap(65533), false);
  });

  /**
   * Driver at avail->idx 65534 (the ring run there by a DeviceQueue that consumes and a driver
   * that reclaims), then four chains added: old = 65534, new = 2. Returns kickPrepare() with
   * avail_event = `event`, and the avail ring slots the four heads went to.
   */
  function kickAcrossWrap(event: number): { kick: boolean; availIdx: number; heads: number[] } {
    const p = platform();
    const f = ringFeatures({ eventIdx: true });
    const drv = new DriverQueue(p, { size: N, features: f });
    const dev = new DeviceQueue(p, { size: N, features: f, ...drv.addresses });
    const a = drv.addresses;
    const r = new RawSplit(p, N, a.descArea, a.driverArea, a.deviceArea);
    const buf = p.allocBuffer(64);
    let idx = 0;
    while (idx < 65534) {
      const n = Math.min(N, 65534 - idx);
      for (let k = 0; k < n; k++) drv.stageOne(k, buf, 8, true);
      drv.submit();
      dev.pop();
      dev.pushPopped();
      assert.equal(drv.getUsed(), n);
      idx += n;
    }
    assert.equal(r.availIdx, 65534);
    drv.kickPrepare(); // settle the decision: old = 65534 from here
    for (let k = 0; k < 4; k++) drv.stageOne(k, buf, 8, true);
    assert.equal(drv.submit(), 4);
    r.availEvent = event;
    return { kick: drv.kickPrepare(), availIdx: r.availIdx, heads: [6, 7, 0, 1].map((s) => r.availRing(s)) };
  }

  test('kickPrepare across the u16 wrap: old 65534, new 2, avail_event 65535 -> kick', () => {
    const { kick, availIdx, heads } = kickAcrossWrap(65535);
    assert.equal(availIdx, 2);
    assert.equal(new Set(heads).size, 4, 'the four heads sit in ring slots 6, 7, 0, 1');
    assert.equal(kick, true);
  });

  test('kickPrepare across the u16 wrap: old 65534, new 2, avail_event 3 -> no kick', () => {
    assert.equal(kickAcrossWrap(3).kick, false);
  });
});
