// Packed virtqueue byte layout, VIRTIO 1.3 §2.8, checked with raw little-endian reads and writes
// at the spec offsets (test/helpers/raw-ring.ts), never through the ring code under test:
//   descriptor (struct pvirtq_desc): le64 addr @0 | le32 len @8 | le16 id @12 | le16 flags @14
//   event suppression (struct pvirtq_event_suppress): le16 off_wrap @0 (bit 15 = wrap) | le16 flags @2
//   driver area = driver event suppression, device area = device event suppression.
// Flags (linux/virtio_ring.h): NEXT 1, WRITE 2, INDIRECT 4, VRING_PACKED_DESC_F_AVAIL 1<<7,
// VRING_PACKED_DESC_F_USED 1<<15; VRING_PACKED_EVENT_FLAG_ENABLE 0, _DISABLE 1, _DESC 2.
// Wrap counters start at 1 (§2.8.1 "Driver and Device Ring Wrap Counters"): available means
// AVAIL == driver wrap and USED != it; used means AVAIL == USED == device wrap.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, DriverQueue, DeviceQueue, ringFeatures } from '../src/index.ts';
import {
  RawPacked, F_NEXT, F_WRITE, F_INDIRECT, F_AVAIL, F_USED, EV_ENABLE, EV_DISABLE, EV_DESC,
  availBits, usedBits, readPackedDesc, writePackedDesc,
} from './helpers/raw-ring.ts';

function platform(): Platform {
  return Platform.create({ ramSize: 1 << 20 });
}

type Opts = { eventIdx?: boolean; indirect?: boolean };

/** Test-as-driver fixture: a packed ring laid out by hand, consumed by a DeviceQueue. */
function handRing(size: number, opts: Opts = {}): { p: Platform; r: RawPacked; dev: DeviceQueue; buf: number } {
  const p = platform();
  const r = RawPacked.alloc(p, size);
  const dev = new DeviceQueue(p, { size, features: ringFeatures({ packed: true, ...opts }), ...r.addresses });
  return { p, r, dev, buf: p.allocBuffer(4096, 64) };
}

/** Driver fixture: a packed DriverQueue whose ring the test reads (identity map). */
function driverRing(size: number, opts: Opts = {}): { p: Platform; drv: DriverQueue; r: RawPacked; buf: number } {
  const p = platform();
  const drv = new DriverQueue(p, { size, features: ringFeatures({ packed: true, ...opts }) });
  const a = drv.addresses;
  return { p, drv, r: new RawPacked(p, size, a.descArea, a.driverArea, a.deviceArea), buf: p.allocBuffer(4096, 64) };
}

const WRAP_BITS = F_AVAIL | F_USED;

describe('packed layout: the test writes descriptors, a DeviceQueue consumes them (§2.8)', () => {
  test('wrap counters start at 1: AVAIL=1, USED=0 makes slot 0 available', () => {
    const { r, dev, buf } = handRing(4);
    r.setDesc(0, buf, 64, 3, F_AVAIL | F_WRITE);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0), {
      id: 3, ndesc: 1, readable: [], writable: [{ addr: buf, len: 64 }], readBytes: 0, writeBytes: 64,
    });
  });

  test('a zeroed slot, AVAIL == USED, or the wrap-0 pattern is not available in the first wrap', () => {
    const { r, dev, buf } = handRing(4);
    assert.equal(dev.pop(), 0, 'the descriptor ring is zero-initialized');
    r.setDesc(0, buf, 64, 0, F_AVAIL | F_USED);
    assert.equal(dev.pop(), 0, 'AVAIL == USED == 1 is a used descriptor');
    r.setFlags(0, F_USED);
    assert.equal(dev.pop(), 0, 'AVAIL=0 USED=1 is available only in wrap 0');
    r.setFlags(0, F_AVAIL);
    assert.equal(dev.pop(), 1);
  });

  test('a chain occupies consecutive slots linked by NEXT; the buffer id is the last descriptor\'s', () => {
    const { r, dev, buf } = handRing(8);
    // Ids in the non-last descriptors are junk: §2.8.6 "Buffer ID is included in the last descriptor".
    r.setDesc(0, buf, 10, 0xffff, F_AVAIL | F_NEXT);
    r.setDesc(1, buf + 64, 20, 0x7777, F_AVAIL | F_NEXT);
    r.setDesc(2, buf + 128, 30, 4, F_AVAIL | F_WRITE);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0), {
      id: 4, ndesc: 3,
      readable: [{ addr: buf, len: 10 }, { addr: buf + 64, len: 20 }],
      writable: [{ addr: buf + 128, len: 30 }],
      readBytes: 30, writeBytes: 30,
    });
  });

  test('the next chain starts after the previous chain\'s descriptors', () => {
    const { r, dev, buf } = handRing(8);
    r.setDesc(0, buf, 1, 9, F_AVAIL | F_NEXT);
    r.setDesc(1, buf, 2, 9, F_AVAIL | F_NEXT);
    r.setDesc(2, buf, 3, 1, F_AVAIL);
    r.setDesc(3, buf, 4, 0, F_AVAIL);
    assert.equal(dev.pop(), 2);
    assert.deepEqual([dev.chain(0).id, dev.chain(0).ndesc, dev.chain(0).readBytes], [1, 3, 6]);
    assert.deepEqual([dev.chain(1).id, dev.chain(1).ndesc, dev.chain(1).readBytes], [0, 1, 4]);
  });

  test('used descriptors: id @12, len @8 = bytes written, AVAIL == USED == 1; the device skips by ndesc', () => {
    const { p, r, dev, buf } = handRing(8);
    r.setDesc(0, buf, 16, 7, F_AVAIL | F_NEXT);
    r.setDesc(1, buf + 64, 16, 7, F_AVAIL | F_WRITE | F_NEXT);
    r.setDesc(2, buf + 128, 16, 1, F_AVAIL | F_WRITE);
    r.setDesc(3, buf + 192, 16, 6, F_AVAIL | F_WRITE);
    const slot1 = p.u8.slice(r.desc + 16, r.desc + 48);
    assert.equal(dev.pop(), 2);
    dev.write(0, new Uint8Array(20).fill(0xaa));
    dev.setWritten(1, 9);
    dev.pushPopped(2);
    const u0 = r.getDesc(0);
    const u1 = r.getDesc(3); // chain 0 took slots 0..2: the second used descriptor is at slot 3
    assert.deepEqual([u0.id, u0.len, u0.flags & WRAP_BITS], [1, 20, F_AVAIL | F_USED]);
    assert.deepEqual([u1.id, u1.len, u1.flags & WRAP_BITS], [6, 9, F_AVAIL | F_USED]);
    assert.deepEqual(p.u8.slice(r.desc + 16, r.desc + 48), slot1, 'slots 1 and 2 are skipped, not written');
    assert.deepEqual([...p.u8.slice(buf + 64, buf + 80)], new Array(16).fill(0xaa));
    assert.deepEqual([...p.u8.slice(buf + 128, buf + 132)], [0xaa, 0xaa, 0xaa, 0xaa]);
  });

  test('a used descriptor of a chain the device wrote into carries VIRTQ_DESC_F_WRITE (§2.8.3, §2.8.4)', () => {
    const { r, dev, buf } = handRing(4);
    r.setDesc(0, buf, 16, 2, F_AVAIL | F_WRITE);
    assert.equal(dev.pop(), 1);
    dev.setWritten(0, 5);
    dev.pushPopped();
    assert.equal(r.getDesc(0).flags & F_WRITE, F_WRITE);
  });

  test('after the ring end the driver wrap counter is 0: available = AVAIL 0, USED 1; used = both 0', () => {
    const { r, dev, buf } = handRing(4);
    for (let s = 0; s < 4; s++) r.setDesc(s, buf, 8, s, F_AVAIL);
    assert.equal(dev.pop(), 4);
    dev.pushPopped();
    for (let s = 0; s < 4; s++) assert.equal(r.getDesc(s).flags & WRAP_BITS, usedBits(1));
    // Wrap-1 "available" flags in slot 0 now mean nothing new to the device (its wrap is 0).
    r.setDesc(0, buf, 8, 3, F_AVAIL);
    assert.equal(dev.pop(), 0);
    r.setDesc(0, buf, 8, 3, availBits(0) | F_WRITE);
    assert.equal(availBits(0), F_USED);
    assert.equal(dev.pop(), 1);
    assert.equal(dev.chain(0).id, 3);
    dev.setWritten(0, 8);
    dev.pushPopped();
    const u = r.getDesc(0);
    assert.deepEqual([u.id, u.len, u.flags & WRAP_BITS], [3, 8, 0]);
    assert.deepEqual(dev.getState(), { version: 1, layout: 'packed', size: 4, lastAvailIdx: 1, lastAvailWrap: 0, lastUsedIdx: 1, lastUsedWrap: 0 });
  });

  test('a chain may cross the ring end: slot N-1 continues at slot 0 with the next wrap\'s flags', () => {
    const { r, dev, buf } = handRing(4);
    for (let s = 0; s < 3; s++) r.setDesc(s, buf, 8, s, F_AVAIL);
    assert.equal(dev.pop(), 3);
    dev.pushPopped();
    r.setDesc(0, buf + 64, 32, 2, availBits(0) | F_WRITE); // written first, in wrap 0
    r.setDesc(3, buf, 16, 0xffff, availBits(1) | F_NEXT); // head last, in wrap 1
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0), {
      id: 2, ndesc: 2, readable: [{ addr: buf, len: 16 }], writable: [{ addr: buf + 64, len: 32 }], readBytes: 16, writeBytes: 32,
    });
    dev.pushPopped();
    const u = r.getDesc(3);
    assert.deepEqual([u.id, u.flags & WRAP_BITS], [2, usedBits(1)], 'the used descriptor goes to the chain\'s first slot');
    const st = dev.getState();
    assert.equal(st.layout, 'packed');
    if (st.layout === 'packed') assert.deepEqual([st.lastAvailIdx, st.lastAvailWrap, st.lastUsedIdx, st.lastUsedWrap], [1, 0, 1, 0]);
  });

  test('indirect: one INDIRECT descriptor (addr = table, len = 16·n, id = buffer id) over consecutive packed entries', () => {
    const { p, r, dev, buf } = handRing(4, { indirect: true });
    const table = p.allocBuffer(3 * 16, 16);
    writePackedDesc(p, table, 0, buf, 10, 0, 0);
    writePackedDesc(p, table, 1, buf + 64, 20, 0, 0);
    writePackedDesc(p, table, 2, buf + 128, 30, 0, F_WRITE);
    r.setDesc(0, table, 48, 3, F_AVAIL | F_INDIRECT);
    r.setDesc(1, buf, 1, 1, F_AVAIL);
    assert.equal(dev.pop(), 2);
    assert.deepEqual(dev.chain(0), {
      id: 3, ndesc: 1,
      readable: [{ addr: buf, len: 10 }, { addr: buf + 64, len: 20 }],
      writable: [{ addr: buf + 128, len: 30 }],
      readBytes: 30, writeBytes: 30,
    });
    assert.deepEqual([dev.chain(1).id, dev.chain(1).ndesc], [1, 1], 'the next buffer is at slot 1');
  });

  test('indirect table entries: only WRITE is meaningful; NEXT, AVAIL/USED and ids are ignored (§2.8.7)', () => {
    const { p, r, dev, buf } = handRing(4, { indirect: true });
    const table = p.allocBuffer(2 * 16, 16);
    writePackedDesc(p, table, 0, buf, 10, 0x1234, F_NEXT | F_AVAIL);
    writePackedDesc(p, table, 1, buf + 64, 20, 0xffff, F_WRITE | F_NEXT | F_USED);
    // WRITE on the INDIRECT descriptor itself is reserved and ignored too.
    r.setDesc(0, table, 32, 2, F_AVAIL | F_INDIRECT | F_WRITE);
    assert.equal(dev.pop(), 1);
    assert.deepEqual(dev.chain(0), {
      id: 2, ndesc: 1, readable: [{ addr: buf, len: 10 }], writable: [{ addr: buf + 64, len: 20 }], readBytes: 10, writeBytes: 20,
    });
  });

  test('pushing one used buffer writes only the slot of its used descriptor', () => {
    const { p, r, dev, buf } = handRing(4);
    r.setDesc(0, buf, 8, 1, F_AVAIL);
    r.setDesc(1, buf, 8, 2, F_AVAIL);
    assert.equal(dev.pop(), 2);
    const rest = p.u8.slice(r.desc + 16, r.desc + 64);
    dev.pushPopped(1);
    assert.equal(r.getDesc(0).flags & WRAP_BITS, usedBits(1));
    assert.deepEqual(p.u8.slice(r.desc + 16, r.desc + 64), rest, 'slots 1..3 untouched');
  });
});

describe('packed layout: a DriverQueue writes descriptors, the test reads them (§2.8.13)', () => {
  test('a chain is consecutive slots, the buffer id in every descriptor, AVAIL=1 USED=0 in each', () => {
    const { drv, r, buf } = driverRing(4);
    drv.stage(42, [{ addr: buf, len: 10 }, { addr: buf + 64, len: 20 }], [{ addr: buf + 128, len: 30 }]);
    assert.equal(drv.submit(), 1);
    const d = [0, 1, 2].map((s) => r.getDesc(s));
    assert.deepEqual(d.map((x) => [x.addr, x.len]), [[BigInt(buf), 10], [BigInt(buf + 64), 20], [BigInt(buf + 128), 30]]);
    assert.deepEqual(d.map((x) => x.flags), [F_AVAIL | F_NEXT, F_AVAIL | F_NEXT, F_AVAIL | F_WRITE]);
    assert.ok(d[2]!.id < 4);
    assert.deepEqual(d.map((x) => x.id), [d[2]!.id, d[2]!.id, d[2]!.id]);
    assert.deepEqual(r.getDesc(3), { addr: 0n, len: 0, id: 0, flags: 0 }, 'slot 3 untouched');
  });

  test('the driver\'s descriptors carry AVAIL=0 USED=1 after it wraps past slot N-1', () => {
    const { drv, r, buf } = driverRing(4);
    for (let k = 0; k < 3; k++) drv.stageOne(k, buf, 8);
    drv.submit();
    drv.stage(3, [{ addr: buf, len: 8 }], [{ addr: buf, len: 8 }]);
    assert.equal(drv.submit(), 0, 'a 2-descriptor chain does not fit in the 1 free slot');
    drv.clearStaged();
    drv.stageOne(3, buf, 8);
    drv.submit();
    assert.deepEqual([0, 1, 2, 3].map((s) => r.getDesc(s).flags & WRAP_BITS), [F_AVAIL, F_AVAIL, F_AVAIL, F_AVAIL]);
    // Hand back all four as used (wrap 1), in order.
    for (let s = 0; s < 4; s++) r.setDesc(s, 0, 0, r.getDesc(s).id, usedBits(1));
    assert.equal(drv.getUsed(), 4);
    drv.stage(9, [{ addr: buf, len: 1 }], [{ addr: buf, len: 2 }]);
    drv.submit();
    const d0 = r.getDesc(0);
    const d1 = r.getDesc(1);
    assert.deepEqual([d0.flags, d1.flags], [F_USED | F_NEXT, F_USED | F_WRITE]);
    assert.deepEqual([d0.len, d1.len], [1, 2]);
  });

  test('a chain crossing the ring end: the slots after N-1 get the flipped wrap bits', () => {
    const { drv, r, buf } = driverRing(4);
    for (let k = 0; k < 3; k++) drv.stageOne(k, buf, 8);
    drv.submit();
    for (let s = 0; s < 3; s++) r.setDesc(s, 0, 0, r.getDesc(s).id, usedBits(1));
    assert.equal(drv.getUsed(), 3);
    drv.stage(5, [{ addr: buf, len: 1 }, { addr: buf, len: 2 }], [{ addr: buf, len: 3 }]); // slots 3, 0, 1
    assert.equal(drv.submit(), 1);
    assert.deepEqual([3, 0, 1].map((s) => r.getDesc(s).flags), [F_AVAIL | F_NEXT, F_USED | F_NEXT, F_USED | F_WRITE]);
    assert.deepEqual([3, 0, 1].map((s) => r.getDesc(s).len), [1, 2, 3]);
  });

  test('with INDIRECT_DESC: one descriptor INDIRECT|AVAIL, addr = table, len = 16·n; entries carry only WRITE', () => {
    const { p, drv, r, buf } = driverRing(4, { indirect: true });
    drv.stage(1, [{ addr: buf, len: 10 }, { addr: buf + 64, len: 20 }], [{ addr: buf + 128, len: 30 }]);
    drv.submit();
    const d = r.getDesc(0);
    assert.equal(d.flags, F_INDIRECT | F_AVAIL);
    assert.equal(d.len, 48);
    assert.ok(d.id < 4);
    const table = Number(d.addr);
    assert.equal(table % 16, 0);
    const e = [0, 1, 2].map((i) => readPackedDesc(p, table, i));
    assert.deepEqual(e.map((x) => [x.addr, x.len, x.flags]), [
      [BigInt(buf), 10, 0], [BigInt(buf + 64), 20, 0], [BigInt(buf + 128), 30, F_WRITE],
    ]);
    assert.equal(r.getDesc(1).flags, 0, 'one ring slot used');
  });

  test('getUsed reads id and len of the used descriptor and skips by that buffer\'s descriptor count', () => {
    const { drv, r, buf } = driverRing(8);
    drv.stage(10, [{ addr: buf, len: 1 }, { addr: buf, len: 1 }], [{ addr: buf, len: 100 }]); // slots 0..2
    drv.stageOne(20, buf, 50, true); // slot 3
    drv.submit();
    const idX = r.getDesc(2).id;
    const idY = r.getDesc(3).id;
    assert.notEqual(idX, idY);
    // Completion order Y, X: used descriptors are written in completion order from slot 0,
    // and each one makes the driver skip by its own buffer's length (§2.8.6).
    r.setDesc(0, 0, 33, idY, usedBits(1));
    assert.equal(drv.getUsed(), 1);
    assert.deepEqual([drv.usedToken(0), drv.usedLen(0)], [20, 33]);
    r.setDesc(1, 0, 77, idX, usedBits(1));
    assert.equal(drv.getUsed(), 1);
    assert.deepEqual([drv.usedToken(0), drv.usedLen(0)], [10, 77]);
    assert.equal(drv.numFree, 8);
    // Next used descriptor is expected at slot 1 + 3 = 4.
    drv.stageOne(30, buf, 8); // slot 4
    drv.submit();
    r.setDesc(4, 0, 1, r.getDesc(4).id, usedBits(1));
    assert.equal(drv.getUsed(), 1);
    assert.equal(drv.usedToken(0), 30);
  });

  test('a descriptor is consumed as used only when AVAIL == USED == the driver\'s used wrap counter', () => {
    const { drv, r, buf } = driverRing(4);
    drv.stageOne(1, buf, 8, true);
    drv.submit();
    const id = r.getDesc(0).id;
    r.setDesc(0, 0, 4, id, F_AVAIL);
    assert.equal(drv.getUsed(), 0, 'still available');
    r.setDesc(0, 0, 4, id, F_USED);
    assert.equal(drv.getUsed(), 0, 'AVAIL != USED');
    r.setDesc(0, 0, 4, id, 0);
    assert.equal(drv.getUsed(), 0, 'AVAIL == USED == 0 is wrap 0');
    r.setDesc(0, 0, 4, id, F_AVAIL | F_USED);
    assert.equal(drv.getUsed(), 1);
  });
});

describe('packed event suppression (§2.8.10 "Driver and Device Event Suppression")', () => {
  test('EVENT_IDX: dev.enableKick writes off_wrap = next avail slot | wrap << 15 and flags DESC in the device area', () => {
    const { r, dev, buf } = handRing(4, { eventIdx: true });
    assert.equal(dev.enableKick(), false);
    assert.deepEqual(r.deviceEvent, { offWrap: 0x8000, flags: EV_DESC });
    for (let s = 0; s < 3; s++) r.setDesc(s, buf, 8, s, F_AVAIL);
    assert.equal(dev.pop(), 3);
    dev.enableKick();
    assert.deepEqual(r.deviceEvent, { offWrap: 0x8003, flags: EV_DESC });
    dev.pushPopped();
    r.setDesc(3, buf, 8, 3, availBits(1) | F_NEXT);
    r.setDesc(0, buf, 8, 0, availBits(0));
    assert.equal(dev.enableKick(), true, 'a buffer is already available');
    assert.equal(dev.pop(), 1);
    dev.enableKick();
    assert.deepEqual(r.deviceEvent, { offWrap: 0x0001, flags: EV_DESC }, 'slot 1 in wrap 0');
  });

  test('no EVENT_IDX: enableKick writes flags ENABLE, disableKick writes DISABLE', () => {
    const { r, dev } = handRing(4);
    r.setDeviceEvent(0, 3);
    dev.disableKick();
    assert.equal(r.deviceEvent.flags, EV_DISABLE);
    dev.enableKick();
    assert.equal(r.deviceEvent.flags, EV_ENABLE);
  });

  test('EVENT_IDX: disableKick writes flags DISABLE', () => {
    const { r, dev } = handRing(4, { eventIdx: true });
    dev.enableKick();
    dev.disableKick();
    assert.equal(r.deviceEvent.flags, EV_DISABLE);
  });

  test('EVENT_IDX: drv.enableCb writes off_wrap = next used slot | wrap << 15, flags DESC; disableCb DISABLE', () => {
    const { drv, r, buf } = driverRing(4, { eventIdx: true });
    drv.disableCb();
    assert.equal(r.driverEvent.flags, EV_DISABLE);
    assert.equal(drv.enableCb(), true);
    assert.deepEqual(r.driverEvent, { offWrap: 0x8000, flags: EV_DESC });
    drv.stage(1, [{ addr: buf, len: 1 }], [{ addr: buf, len: 1 }]);
    drv.submit();
    r.setDesc(0, 0, 0, r.getDesc(1).id, usedBits(1));
    assert.equal(drv.enableCb(), false, 'a used buffer is pending');
    assert.equal(drv.getUsed(), 1);
    drv.enableCb();
    assert.deepEqual(r.driverEvent, { offWrap: 0x8002, flags: EV_DESC });
  });

  test('no EVENT_IDX: drv.enableCb writes flags ENABLE, disableCb DISABLE', () => {
    const { drv, r } = driverRing(4);
    drv.disableCb();
    assert.equal(r.driverEvent.flags, EV_DISABLE);
    drv.enableCb();
    assert.equal(r.driverEvent.flags, EV_ENABLE);
  });

  /** Makes one single-descriptor buffer available at the device's next slot and uses it. */
  function useOne(r: RawPacked, dev: DeviceQueue, buf: number): void {
    const st = dev.getState();
    if (st.layout !== 'packed') throw new Error('packed only');
    r.setDesc(st.lastAvailIdx, buf, 8, st.lastAvailIdx, availBits(st.lastAvailWrap) | F_WRITE);
    assert.equal(dev.pop(), 1);
    dev.pushPopped();
  }

  test('needCall honours DISABLE and ENABLE written by hand in the driver area', () => {
    const { r, dev, buf } = handRing(4);
    r.setDriverEvent(0, EV_DISABLE);
    useOne(r, dev, buf);
    assert.equal(dev.needCall(), false);
    r.setDriverEvent(0, EV_ENABLE);
    useOne(r, dev, buf);
    assert.equal(dev.needCall(), true);
    assert.equal(dev.needCall(), false, 'nothing used since the last decision');
  });

  test('EVENT_IDX: needCall honours DESC: notify once the used descriptor at off_wrap is written', () => {
    const { r, dev, buf } = handRing(4, { eventIdx: true });
    useOne(r, dev, buf); // used slot 0
    assert.equal(dev.needCall(), true, 'the first decision always notifies');
    r.setDriverEvent(2 | (1 << 15), EV_DESC); // slot 2, wrap 1
    useOne(r, dev, buf); // slot 1
    assert.equal(dev.needCall(), false);
    useOne(r, dev, buf); // slot 2
    assert.equal(dev.needCall(), true);
    r.setDriverEvent(0 | (0 << 15), EV_DESC); // slot 0 of the next lap (wrap 0)
    useOne(r, dev, buf); // slot 3, wrap 1
    assert.equal(dev.needCall(), false, 'slot 0 of wrap 0 not written yet');
    useOne(r, dev, buf); // slot 0, wrap 0
    assert.equal(dev.needCall(), true);
  });

  test('EVENT_IDX: needCall with DESC naming a slot of the wrong lap does not notify for it', () => {
    const { r, dev, buf } = handRing(4, { eventIdx: true });
    useOne(r, dev, buf);
    dev.needCall();
    r.setDriverEvent(2 | (0 << 15), EV_DESC); // slot 2 of the NEXT lap
    useOne(r, dev, buf); // slot 1
    useOne(r, dev, buf); // slot 2, wrap 1
    assert.equal(dev.needCall(), false);
  });

  test('without EVENT_IDX a DESC in the driver area is not honoured as an event index: the device notifies', () => {
    const { r, dev, buf } = handRing(4);
    r.setDriverEvent(3 | (1 << 15), EV_DESC);
    useOne(r, dev, buf);
    assert.equal(dev.needCall(), true);
  });

  test('kickPrepare honours DISABLE and ENABLE written by hand in the device area', () => {
    const { drv, r, buf } = driverRing(4);
    r.setDeviceEvent(0, EV_DISABLE);
    drv.stageOne(1, buf, 8);
    drv.submit();
    assert.equal(drv.kickPrepare(), false);
    r.setDeviceEvent(0, EV_ENABLE);
    drv.stageOne(2, buf, 8);
    drv.submit();
    assert.equal(drv.kickPrepare(), true);
    assert.equal(drv.kickPrepare(), false, 'nothing added since the last decision');
  });

  test('EVENT_IDX: kickPrepare with DESC naming a slot of the other lap does not kick for this lap\'s slot', () => {
    const { drv, r, buf } = driverRing(4, { eventIdx: true });
    r.setDeviceEvent(1 | (0 << 15), EV_DESC); // slot 1, wrap 0: the driver is in wrap 1
    drv.stageOne(1, buf, 8); // slot 0
    drv.submit();
    assert.equal(drv.kickPrepare(), false);
    drv.stageOne(2, buf, 8); // slot 1 of wrap 1
    drv.submit();
    assert.equal(drv.kickPrepare(), false);
  });

  test('EVENT_IDX: kickPrepare honours DESC: kick once the descriptor at off_wrap is made available', () => {
    const p = platform();
    const f = ringFeatures({ packed: true, eventIdx: true });
    const drv = new DriverQueue(p, { size: 4, features: f });
    const dev = new DeviceQueue(p, { size: 4, features: f, ...drv.addresses });
    const a = drv.addresses;
    const r = new RawPacked(p, 4, a.descArea, a.driverArea, a.deviceArea);
    const buf = p.allocBuffer(64);
    r.setDeviceEvent(1 | (1 << 15), EV_DESC); // slot 1, wrap 1
    drv.stageOne(1, buf, 8); // slot 0
    drv.submit();
    assert.equal(drv.kickPrepare(), false);
    drv.stageOne(2, buf, 8); // slot 1
    drv.submit();
    assert.equal(drv.kickPrepare(), true);
    r.setDeviceEvent(0 | (0 << 15), EV_DESC); // slot 0, wrap 0
    drv.stage(3, [{ addr: buf, len: 8 }, { addr: buf, len: 8 }]); // slots 2, 3
    drv.submit();
    assert.equal(drv.kickPrepare(), false, 'slot 0 of wrap 0 not made available yet');
    assert.equal(dev.pop(), 3);
    dev.pushPopped();
    assert.equal(drv.getUsed(), 3);
    drv.stageOne(4, buf, 8); // slot 0, wrap 0
    drv.submit();
    assert.equal(r.getDesc(0).flags & WRAP_BITS, F_USED);
    assert.equal(drv.kickPrepare(), true);
  });
});
