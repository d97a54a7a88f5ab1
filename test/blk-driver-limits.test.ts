// The virtio-blk driver against limits: a request that can never fit the ring is refused at
// once (item 5); discard / write-zeroes are split by the device's config-space limits (item
// 13); requests wait for staging RAM instead of failing (item 15); read-only comes from the
// backend and errors name the operation and its cause (item 16).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimBlk, VdpaSimBlkMgmt, createVirtioVdpa, Code, VIRTIO_BLK_DRIVER_FEATURES,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_CFG, BLK_LIMITS, featureBit, hasFeature,
  type BlkBackend, type VdpaSimBlkOptions,
} from '../src/index.ts';
import { deferred, settle } from './helpers/blk-raw.ts';
import { trackEscapes } from './helpers/escapes.ts';

const escaped = trackEscapes();
after(() => assert.deepEqual(escaped, []));

function bring(o: { queueSize?: number; features?: bigint; ramSize?: number; dev?: (p: Platform) => VdpaSimBlk } = {}) {
  const p = Platform.create({ ramSize: o.ramSize ?? 4 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: o.queueSize ?? 16, blk: { features: o.features } });
  bus.registerDriver(virtio);
  const dev = o.dev ? o.dev(p) : new VdpaSimBlk(p, { name: 'd', capacity: 64 });
  bus.addDevice(dev);
  return { p, dev, blk: virtio.blk(dev.name) };
}

/** A backend recording discard / write-zeroes ranges, over a sparse disk of `capacity` sectors. */
function recorder(capacity: number, extra: Partial<BlkBackend> = {}) {
  const discards: [number, number][] = [];
  const zeroes: [number, number][] = [];
  const backend: BlkBackend = {
    capacity,
    read: async (_s, len) => new Uint8Array(len),
    write: async () => {},
    flush: async () => {},
    discard: async (s, n) => void discards.push([s, n]),
    writeZeroes: async (s, n) => void zeroes.push([s, n]),
    ...extra,
  };
  return { backend, discards, zeroes };
}

/** Ranges sorted, checked to tile [start, start + count) exactly. */
function assertTiles(ranges: [number, number][], start: number, count: number) {
  const r = ranges.slice().sort((a, b) => a[0] - b[0]);
  let at = start;
  for (const [s, n] of r) {
    assert.equal(s, at, 'ranges are contiguous');
    at += n;
  }
  assert.equal(at, start + count);
}

const NO_INDIRECT = VIRTIO_BLK_DRIVER_FEATURES & ~featureBit(VIRTIO_F_INDIRECT_DESC);

test('a 2-entry queue without indirect descriptors: 3-descriptor requests are refused for good, flushes all settle', async () => {
  const { dev, blk } = bring({ queueSize: 2, features: NO_INDIRECT });
  await assert.rejects(blk.read(0, new Uint8Array(512)), (e: { code: string }) => e.code === Code.Unsupported);
  await assert.rejects(blk.write(0, new Uint8Array(512)), (e: { code: string }) => e.code === Code.Unsupported);
  await assert.rejects(blk.getId(), (e: { code: string }) => e.code === Code.Unsupported);
  // 2-descriptor requests (header + status) still go through, one at a time.
  await Promise.all([blk.flush(), blk.flush(), blk.flush(), blk.flush(), blk.flush()]);
  await assert.rejects(blk.read(0, new Uint8Array(512)), (e: { code: string }) => e.code === Code.Unsupported);
  await blk.flush();
  assert.equal(blk.inFlight, 0);
  assert.equal(dev.getStatus() & 0x40, 0, 'no NEEDS_RESET');
  await settle();
  assert.deepEqual(escaped, []);
});

test('a 2-entry queue with indirect descriptors carries 3-descriptor requests', async () => {
  const { blk } = bring({ queueSize: 2 });
  const d = new Uint8Array(1024).fill(3);
  await Promise.all([blk.write(0, d), blk.write(2, d), blk.flush()]);
  const back = new Uint8Array(2048);
  await blk.read(0, back);
  assert.ok(back.every((b) => b === 3));
});

test('the driver exposes the config-space discard limits', () => {
  const { blk } = bring();
  assert.deepEqual(blk.discardLimits, {
    maxDiscardSectors: BLK_LIMITS.MAX_DISCARD_SECTORS, maxDiscardSeg: BLK_LIMITS.MAX_DISCARD_SEG,
    discardSectorAlignment: 1, maxWriteZeroesSectors: BLK_LIMITS.MAX_DISCARD_SECTORS,
    maxWriteZeroesSeg: BLK_LIMITS.MAX_DISCARD_SEG, writeZeroesMayUnmap: true,
  });
});

test('a discard and a write-zeroes of 10^6 sectors succeed, split within the limits', async () => {
  const { backend, discards, zeroes } = recorder(3_000_000);
  const { blk } = bring({ dev: (p) => new VdpaSimBlk(p, { name: 'big', backend }) });
  await blk.discard(12345, 1_000_000);
  assertTiles(discards, 12345, 1_000_000);
  assert.ok(discards.every(([, n]) => n <= BLK_LIMITS.MAX_DISCARD_SECTORS));
  await blk.writeZeroes(1_500_000, 1_000_000, true);
  assertTiles(zeroes, 1_500_000, 1_000_000);
  assert.ok(zeroes.every(([, n]) => n <= BLK_LIMITS.MAX_DISCARD_SECTORS));
});

/** A device advertising a smaller max_discard_sectors and a discard alignment of 8. */
class AlignedBlk extends VdpaSimBlk {
  constructor(p: Platform, o: VdpaSimBlkOptions) {
    super(p, o);
    this.configView.setUint32(VIRTIO_BLK_CFG.MAX_DISCARD_SECTORS, 100, true);
    this.configView.setUint32(VIRTIO_BLK_CFG.MAX_DISCARD_SEG, 3, true);
    this.configView.setUint32(VIRTIO_BLK_CFG.DISCARD_SECTOR_ALIGNMENT, 8, true);
  }
}

test('discard ranges respect max_discard_sectors, max_discard_seg and discard_sector_alignment', async () => {
  const { backend, discards } = recorder(100_000);
  const { dev, blk } = bring({ dev: (p) => new AlignedBlk(p, { name: 'al', backend }) });
  assert.equal(blk.discardLimits.discardSectorAlignment, 8);
  const chains = () => dev.getVendorVqStats(0).stats.find(([k]) => k === 'received_desc')![1];
  const before = chains();
  await blk.discard(5, 1000);
  assertTiles(discards, 5, 1000);
  for (const [s, n] of discards) {
    assert.ok(n <= 100, `range of ${n}`);
    if (s !== 5) assert.equal(s % 8, 0, `range at ${s} starts aligned`);
  }
  // At most max_discard_seg (3) ranges per request.
  assert.equal(chains() - before, Math.ceil(discards.length / 3));
});

test('requests wait for staging RAM instead of failing, and all complete', async () => {
  const gate = deferred<void>();
  const { backend } = recorder(4096, {
    read: async (_s, len) => {
      await gate.promise;
      return new Uint8Array(len).fill(9);
    },
  });
  // 1 MiB of RAM: rings take some, each read stages 64 KiB: not all 24 fit at once.
  const { p, blk } = bring({ ramSize: 1 << 20, dev: (pl) => new VdpaSimBlk(pl, { name: 'r', backend }) });
  const bufs = Array.from({ length: 24 }, () => new Uint8Array(64 << 10));
  const all = Promise.allSettled(bufs.map((b, i) => blk.read(i * 128, b)));
  await settle();
  assert.ok(p.ram.available < 64 << 10, 'RAM ran short while requests wait');
  gate.resolve();
  const res = await all;
  assert.deepEqual(res.map((r) => r.status), bufs.map(() => 'fulfilled'));
  assert.ok(bufs.every((b) => b[0] === 9 && b[b.length - 1] === 9));
});

test('a request larger than the whole RAM arena is refused at once', async () => {
  const { backend } = recorder(8192);
  // Without VIRTIO_BLK_F_SIZE_MAX a read is one request, which can never be staged.
  const features = VIRTIO_BLK_DRIVER_FEATURES & ~featureBit(VIRTIO_BLK_F_SIZE_MAX);
  const { blk } = bring({ ramSize: 1 << 20, features, dev: (p) => new VdpaSimBlk(p, { name: 'r', backend }) });
  assert.equal(blk.maxTransfer, Infinity);
  await assert.rejects(blk.read(0, new Uint8Array(2 << 20)), (e: { code: string }) => e.code === Code.InvalidArgument);
  await blk.flush();
  // With size_max the same read is split into requests that each fit, and succeeds.
  const { blk: b2 } = bring({ ramSize: 1 << 20, dev: (p) => new VdpaSimBlk(p, { name: 'r', backend }) });
  assert.ok(b2.maxTransfer < 1 << 20);
  await b2.read(0, new Uint8Array(2 << 20));
});

test('a read-only backend makes the device offer VIRTIO_BLK_F_RO; errors name the cause', async () => {
  const { backend } = recorder(64, { readOnly: true } as Partial<BlkBackend>);
  const { dev, blk } = bring({ dev: (p) => new VdpaSimBlk(p, { name: 'ro', backend }) });
  assert.ok(hasFeature(dev.getDeviceFeatures(), VIRTIO_BLK_F_RO));
  assert.equal(dev.readOnly, true);
  assert.equal(blk.readOnly, true);
  await assert.rejects(blk.write(0, new Uint8Array(512)), (e: Error & { code: string }) =>
    e.code === Code.FailedPrecondition && /write/.test(e.message) && /read-only device/.test(e.message));
  await assert.rejects(blk.discard(0, 1), (e: Error & { code: string }) => /discard/.test(e.message) && /read-only device/.test(e.message));
});

test('a device error names the operation and the status, not a request type number', async () => {
  const { backend } = recorder(64, { write: async () => { throw new Error('disk on fire'); } });
  const { blk } = bring({ dev: (p) => new VdpaSimBlk(p, { name: 'e', backend }) });
  await assert.rejects(blk.write(3, new Uint8Array(1024)), (e: Error & { code: string }) =>
    e.code === Code.IoError && /write of 2 sectors at 3/.test(e.message) && /VIRTIO_BLK_S_IOERR/.test(e.message));
});
