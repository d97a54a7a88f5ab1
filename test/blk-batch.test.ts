// VirtioBlkDriver.readMany / writeMany: batches of same-size requests, one ring publish and one
// kick per batch, checked against a byte model of the disk (split and packed, staged and
// zero-copy buffers, batches larger than the ring), and every error path: bad arguments
// (InvalidArgument, nothing submitted), read-only, a failing request (IoError, the rest still
// done), reset with a batch in flight (rejects), staging RAM returned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimBlkMgmt, VdpaSimBlk, createVirtioVdpa, Code, VIRTIO_F_RING_PACKED, featureBit,
  VIRTIO_BLK_DRIVER_FEATURES, type BlkBackend,
} from '../src/index.ts';
import { rng } from './helpers/builds.ts';

const SECTORS = 4096; // 2 MiB disk

function setup(packed: boolean, queueSize = 64) {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, SECTORS));
  const features = packed ? VIRTIO_BLK_DRIVER_FEATURES : VIRTIO_BLK_DRIVER_FEATURES & ~featureBit(VIRTIO_F_RING_PACKED);
  const virtio = createVirtioVdpa(p, { queueSize, blk: { features } });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_blk', 'b', {}) as VdpaSimBlk;
  return { p, bus, dev, blk: virtio.blk('b'), virtio };
}

const isCode = (code: string) => (e: { code: string }) => e.code === code;

for (const packed of [false, true]) {
  for (const zeroCopy of [false, true]) {
    test(`${packed ? 'packed' : 'split'}${zeroCopy ? ', zero-copy' : ''}: random readMany/writeMany batches equal a byte model of the disk`, async () => {
      const { p, dev, blk } = setup(packed);
      const model = new Uint8Array(SECTORS * 512);
      const rand = rng(packed ? 7 : 3);
      const ramFree = p.ram.size - [...(p.ram as unknown as { live: Map<number, number> }).live.values()].reduce((a, b) => a + b, 0);
      for (let round = 0; round < 30; round++) {
        // Up to 150 requests: more than the 64-entry ring holds, so batches go in as room frees.
        const count = 1 + Math.floor(rand() * 150);
        const len = 512 * (1 + Math.floor(rand() * 16));
        const n = len / 512;
        // Distinct, non-overlapping blocks inside one batch (requests of a batch are unordered).
        const used = new Set<number>();
        const secs: number[] = [];
        while (secs.length < count) {
          const s = Math.floor(rand() * Math.floor(SECTORS / n)) * n;
          if (!used.has(s)) {
            used.add(s);
            secs.push(s);
          }
        }
        const buf = zeroCopy ? blk.allocBuffer(count * len) : new Uint8Array(count * len);
        if (rand() < 0.5) {
          for (let i = 0; i < buf.length; i++) buf[i] = (rand() * 256) | 0;
          await blk.writeMany(secs, len, buf);
          secs.forEach((s, i) => model.set(buf.subarray(i * len, (i + 1) * len), s * 512));
        } else {
          buf.fill(0x5a);
          await blk.readMany(secs, len, buf);
          secs.forEach((s, i) => assert.deepEqual(buf.subarray(i * len, (i + 1) * len), model.subarray(s * 512, s * 512 + len), `request ${i} of ${count}`));
        }
        if (zeroCopy) blk.freeBuffer(buf);
        assert.equal(blk.inFlight, 0);
      }
      assert.deepEqual(p.u8.subarray(dev.disk, dev.disk + SECTORS * 512), model, 'the disk equals the model');
      const ramFreeAfter = p.ram.size - [...(p.ram as unknown as { live: Map<number, number> }).live.values()].reduce((a, b) => a + b, 0);
      assert.equal(ramFreeAfter, ramFree, 'every staging block returned');
    });
  }
}

test('a batch is one ring publish and one kick; plain reads kick per request', async () => {
  const { dev, blk } = setup(false, 256);
  let kicks = 0;
  const kick = dev.kickVq.bind(dev);
  dev.kickVq = (idx: number) => {
    kicks++;
    kick(idx);
  };
  const secs = Array.from({ length: 32 }, (_, i) => i * 8);
  await blk.readMany(secs, 4096, new Uint8Array(32 * 4096));
  assert.equal(kicks, 1, 'one kick for 32 requests');
  assert.deepEqual(dev.getVendorVqStats(0).stats, [['received_desc', 32], ['completed_desc', 32]]);
  kicks = 0;
  await Promise.all(secs.slice(0, 4).map((s) => blk.read(s, new Uint8Array(4096))));
  assert.equal(kicks, 4, 'read() submits (and kicks) at once, per request');
});

test('readMany fills the caller\'s buffer with a batch written by writeMany, and mixes with read()/write()', async () => {
  const { blk } = setup(true);
  const data = new Uint8Array(8 * 1024).map((_, i) => (i * 7) & 255);
  const secs = [10, 0, 30, 20, 50, 40, 70, 60];
  await blk.writeMany(secs, 1024, data);
  const one = new Uint8Array(1024);
  await blk.read(30, one);
  assert.deepEqual(one, data.subarray(2048, 3072));
  const back = new Uint8Array(8 * 1024);
  const [, other] = await Promise.all([blk.readMany(secs, 1024, back), blk.write(100, new Uint8Array(512).fill(9))]);
  assert.equal(other, undefined);
  assert.deepEqual(back, data);
  // The buffer may be longer than count × len: the rest is not touched.
  const longer = new Uint8Array(3 * 1024).fill(0xcc);
  await blk.readMany([0, 10], 1024, longer);
  assert.deepEqual(longer.subarray(0, 1024), data.subarray(1024, 2048));
  assert.ok(longer.subarray(2048).every((b) => b === 0xcc));
});

test('bad arguments reject with InvalidArgument and submit nothing', async () => {
  const { blk, dev } = setup(false);
  const before = dev.getVendorVqStats(0);
  const buf = new Uint8Array(4 * 4096);
  await assert.rejects(blk.readMany([0, 8], 1000, buf), isCode(Code.InvalidArgument)); // not a multiple of 512
  await assert.rejects(blk.readMany([0, 8], 0, buf), isCode(Code.InvalidArgument));
  await assert.rejects(blk.readMany([0, SECTORS - 7], 4096, buf), isCode(Code.InvalidArgument)); // past the end
  await assert.rejects(blk.readMany([0, -8], 4096, buf), isCode(Code.InvalidArgument));
  await assert.rejects(blk.readMany([0, 1.5], 512, buf), isCode(Code.InvalidArgument));
  await assert.rejects(blk.readMany([0, 8, 16, 24, 32], 4096, buf), isCode(Code.InvalidArgument)); // buffer too short
  await assert.rejects(blk.writeMany([0], 512, 'x' as unknown as Uint8Array), isCode(Code.InvalidArgument));
  await assert.rejects(blk.readMany([0], blk.maxTransfer + 512, new Uint8Array(blk.maxTransfer + 512)), isCode(Code.InvalidArgument));
  await blk.readMany([], 4096, buf); // an empty batch is done at once
  assert.deepEqual(dev.getVendorVqStats(0), before, 'nothing reached the device');
  assert.equal(blk.inFlight, 0);
});

test('writeMany on a read-only device is refused (FailedPrecondition)', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  bus.addDevice(new VdpaSimBlk(p, { name: 'ro', readOnly: true }));
  const blk = virtio.blk('ro');
  await assert.rejects(blk.writeMany([0], 512, new Uint8Array(512)), isCode(Code.FailedPrecondition));
  await blk.readMany([0], 512, new Uint8Array(512));
});

/** A RAM backend whose reads of `bad` fail, and whose answers can be held back. */
function backend(bad: number): BlkBackend & { hold: boolean; release: () => void } {
  const disk = new Uint8Array(SECTORS * 512);
  const held: (() => void)[] = [];
  const b = {
    capacity: SECTORS,
    hold: false,
    release: () => { for (const f of held.splice(0)) f(); },
    read(sector: number, len: number): Promise<Uint8Array> {
      if (sector === bad) return Promise.reject(new Error('media error'));
      const out = disk.slice(sector * 512, sector * 512 + len);
      return b.hold ? new Promise((r) => held.push(() => r(out))) : Promise.resolve(out);
    },
    async write(sector: number, data: Uint8Array): Promise<void> {
      disk.set(data, sector * 512);
    },
    async flush(): Promise<void> {},
  };
  return b;
}

test('a failing request rejects its batch with IoError once every request was answered; the rest are done', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  const dev = new VdpaSimBlk(p, { name: 'f', backend: backend(16) });
  bus.addDevice(dev);
  const blk = virtio.blk('f');
  await blk.writeMany([0, 8, 24], 4096, new Uint8Array(3 * 4096).fill(3));
  const buf = new Uint8Array(3 * 4096).fill(0xee);
  await assert.rejects(blk.readMany([0, 16, 24], 4096, buf), isCode(Code.IoError));
  assert.ok(buf.every((b) => b === 0xee), 'a staged buffer is filled only if every request succeeded');
  assert.equal(blk.inFlight, 0);
  assert.equal(dev.inFlight, 0);
  await blk.readMany([0, 8, 24], 4096, buf);
  assert.ok(buf.every((b) => b === 3));
});

test('a reset with a batch in flight rejects it; the driver works again after', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  const be = backend(-1);
  const dev = new VdpaSimBlk(p, { name: 'f', backend: be });
  bus.addDevice(dev);
  const blk = virtio.blk('f');
  be.hold = true;
  const pending = blk.readMany([0, 8, 16], 4096, new Uint8Array(3 * 4096));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(blk.inFlight, 3);
  blk.reset();
  await assert.rejects(pending, isCode(Code.Cancelled));
  be.release();
  be.hold = false;
  await blk.readMany([0, 8], 4096, new Uint8Array(2 * 4096));
  assert.equal(blk.inFlight, 0);
});

test('a batch that finds the ring partly taken goes in as room frees up (the rest waits, in order)', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  const be = backend(-1);
  const dev = new VdpaSimBlk(p, { name: 'f', backend: be });
  bus.addDevice(dev);
  const blk = virtio.blk('f');
  const data = new Uint8Array(24 * 1024).map((_, i) => (i * 31) & 255);
  const secs = Array.from({ length: 24 }, (_, i) => 2 * i);
  await blk.writeMany(secs, 1024, data);
  be.hold = true;
  // 10 plain reads hold 10 of the 16 ring slots; the 24-request batch gets 6, then the rest.
  const plain = Array.from({ length: 10 }, (_, i) => blk.read(100 + i, new Uint8Array(512)));
  await new Promise((r) => setTimeout(r, 0));
  const back = new Uint8Array(24 * 1024);
  const batch = blk.readMany(secs, 1024, back);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(dev.inFlight, 16, 'the ring is full');
  assert.equal(blk.inFlight, 34);
  for (let i = 0; i < 20 && blk.inFlight > 0; i++) {
    be.release();
    await new Promise((r) => setTimeout(r, 0));
  }
  be.release();
  await Promise.all(plain);
  await batch;
  assert.deepEqual(back, data);
  assert.equal(blk.inFlight, 0);
});
