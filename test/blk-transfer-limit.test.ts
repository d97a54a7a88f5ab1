// A blk request carries at most size_max × seg_max data bytes (VIRTIO_BLK_F_SIZE_MAX /
// VIRTIO_BLK_F_SEG_MAX, as Linux vdpa_sim_blk bounds its requests): a chain of overlapping
// whole-RAM descriptors on a large disk is IOERR before anything is gathered or asked of the
// backend, and the driver splits large reads and writes into requests within the limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimBlk, VdpaSimBlkMgmt, createVirtioVdpa, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_CFG, VIRTIO_CONFIG_S_NEEDS_RESET, Code, VIRTIO_BLK_DRIVER_FEATURES, VIRTIO_F_INDIRECT_DESC, featureBit,
  type BlkBackend,
} from '../src/index.ts';
import { RawBlk, settle } from './helpers/blk-raw.ts';

const RAM = 8 << 20;

/** A large sparse async disk that records what it is asked. */
function bigBackend() {
  const calls: string[] = [];
  const backend: BlkBackend = {
    capacity: 16 << 21, // 16 GiB
    read: async (_s, len) => (calls.push(`read ${len}`), new Uint8Array(len)),
    write: async (_s, d) => void calls.push(`write ${d.length}`),
    flush: async () => {},
  };
  return { backend, calls };
}

function cfgLimits(r: RawBlk): { sizeMax: number; segMax: number } {
  const v = new DataView(r.dev.getConfig(0, VIRTIO_BLK_CFG.SIZE).buffer);
  return { sizeMax: v.getUint32(VIRTIO_BLK_CFG.SIZE_MAX, true), segMax: v.getUint32(VIRTIO_BLK_CFG.SEG_MAX, true) };
}

for (const type of [VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_IN]) {
  const name = type === VIRTIO_BLK_T_OUT ? 'OUT' : 'IN';
  test(`${name} of 32 overlapping whole-RAM descriptors on a 16 GiB async disk is IOERR, the backend never asked`, async () => {
    const { backend, calls } = bigBackend();
    const r = new RawBlk({ backend, ramSize: RAM, size: 256, queue: { indirectMax: 1024, maxSegs: 2048 } });
    const before = process.memoryUsage().arrayBuffers;
    const hdr = r.hdr(type, 0);
    const status = r.buf(1);
    const wide = Array.from({ length: 32 }, () => ({ addr: r.p.ramBase, len: RAM, w: type === VIRTIO_BLK_T_IN }));
    const t = r.send([{ addr: hdr, len: 16 }, ...wide, { addr: status, len: 1, w: true }]);
    // 256 MiB would have been gathered (OUT) or asked for (IN); nothing near that was allocated.
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 << 20);
    await settle();
    assert.equal(r.reap().get(t), 1);
    assert.equal(r.p.u8[status], VIRTIO_BLK_S_IOERR);
    assert.deepEqual(calls, []);
    assert.equal(r.dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  });

  for (const ramDisk of [false, true]) {
    test(`${ramDisk ? 'RAM disk' : 'async backend'}: ${name} of exactly size_max × seg_max is served, 512 bytes more is IOERR`, async () => {
      const { backend, calls } = bigBackend();
      const r = new RawBlk({ backend: ramDisk ? undefined : backend, capacity: 20480, ramSize: 32 << 20, size: 256, queue: { indirectMax: 1024, maxSegs: 2048 } });
      const { sizeMax, segMax } = cfgLimits(r);
      assert.equal(sizeMax, 65536);
      assert.equal(segMax, 128);
      const data = r.buf(sizeMax);
      const w = type === VIRTIO_BLK_T_IN;
      for (const extra of [0, 512]) {
        const hdr = r.hdr(type, 0);
        const status = r.buf(1);
        const segs = Array.from({ length: segMax }, () => ({ addr: data, len: sizeMax, w }));
        if (extra) segs.push({ addr: data, len: extra, w });
        const t = r.send([{ addr: hdr, len: 16 }, ...segs, { addr: status, len: 1, w: true }]);
        await settle();
        const bytes: number = sizeMax * segMax;
        if (extra === 0) {
          assert.equal(r.p.u8[status], VIRTIO_BLK_S_OK);
          assert.equal(r.reap().get(t), (w ? bytes : 0) + 1);
        } else {
          assert.equal(r.p.u8[status], VIRTIO_BLK_S_IOERR);
          assert.equal(r.reap().get(t), 1);
        }
      }
      if (!ramDisk) assert.deepEqual(calls, [`${w ? 'read' : 'write'} ${sizeMax * segMax}`]);
    });
  }
}

function bring(ramSize: number, dev: (p: Platform) => VdpaSimBlk, queueSize = 64, features?: bigint) {
  const p = Platform.create({ ramSize });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize, blk: { features } });
  bus.registerDriver(virtio);
  const d = dev(p);
  bus.addDevice(d);
  return { p, dev: d, blk: virtio.blk(d.name) };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

test('the driver reads size_max / seg_max and bounds each request by them and by the queue', () => {
  // With indirect descriptors (16 per table by default) a request fits one table: 14 data
  // segments; without, the ring: size - 2, capped by seg_max (128).
  for (const [queueSize, indirect, segs] of [[256, true, 14], [256, false, 128], [64, false, 62], [16, false, 14]] as const) {
    const features = indirect ? VIRTIO_BLK_DRIVER_FEATURES : VIRTIO_BLK_DRIVER_FEATURES & ~featureBit(VIRTIO_F_INDIRECT_DESC);
    const { blk } = bring(4 << 20, (p) => new VdpaSimBlk(p, { name: 'l', capacity: 64 }), queueSize, features);
    assert.deepEqual({ ...blk.transferLimits }, { segmentSize: 65536, segments: segs, maxTransfer: 65536 * segs });
    assert.equal(blk.maxTransfer, 65536 * segs);
  }
});

test('RAM disk: a 16 MiB write and read through the driver round-trip byte-exact', async () => {
  const { blk } = bring(48 << 20, (p) => new VdpaSimBlk(p, { name: 'r', capacity: 32768 + 8 }));
  const data = pattern(16 << 20, 7);
  await blk.write(8, data);
  const back = new Uint8Array(16 << 20);
  await blk.read(8, back);
  assert.ok(Buffer.from(back).equals(Buffer.from(data)));
  // Neighbours untouched.
  const edge = new Uint8Array(4096);
  await blk.read(0, edge);
  assert.ok(edge.every((b) => b === 0));
});

test('async backend: a 16 MiB write is split into requests within the limits, all in flight together', async () => {
  const disk = new Uint8Array(16 << 20);
  const sizes: number[] = [];
  let live = 0;
  let peak = 0;
  const backend: BlkBackend = {
    capacity: disk.length / 512,
    read: async (s, len) => disk.slice(s * 512, s * 512 + len),
    write: async (s, d) => {
      sizes.push(d.length);
      peak = Math.max(peak, ++live);
      await settle(2);
      live--;
      disk.set(d, s * 512);
    },
    flush: async () => {},
  };
  const { blk } = bring(40 << 20, (p) => new VdpaSimBlk(p, { name: 'a', backend }));
  const data = pattern(16 << 20, 11);
  await blk.write(0, data);
  assert.ok(Buffer.from(disk).equals(Buffer.from(data)));
  assert.equal(sizes.length, Math.ceil(data.length / blk.maxTransfer));
  assert.ok(sizes.every((n) => n <= blk.maxTransfer));
  assert.equal(peak, sizes.length);
  const back = new Uint8Array(16 << 20);
  await blk.read(0, back);
  assert.ok(Buffer.from(back).equals(Buffer.from(data)));
});

test('a split read that fails in one part rejects with that error and leaves the buffer untouched', async () => {
  let n = 0;
  const backend: BlkBackend = {
    capacity: 1 << 16,
    read: async (_s, len) => (++n === 2 ? Promise.reject(new Error('bad sector')) : new Uint8Array(len).fill(9)),
    write: async () => {},
    flush: async () => {},
  };
  const { blk } = bring(16 << 20, (p) => new VdpaSimBlk(p, { name: 'f', backend }), 16);
  const buf = new Uint8Array(blk.maxTransfer * 3);
  await assert.rejects(blk.read(0, buf), (e: { code: string }) => e.code === Code.IoError);
  assert.equal(n, 3, 'every part was submitted');
  assert.ok(buf.every((b) => b === 0));
  assert.equal(blk.inFlight, 0);
});
