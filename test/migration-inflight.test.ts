// blk requests in flight across a migration (state.ts, "blk requests in flight"): reads still
// out at the source's backend move in the state as their descriptor chains, by IOVA, and the
// destination re-submits them; a write (flush, discard, write-zeroes) completes there only once
// the source's backend is idle. Checked: the record's byte layout; that the destination answers each read
// once with its own backend's data while the source's late answers touch nothing; IOVAs that
// are not memory offsets (an IOMMU map), split and packed; writes that move complete only once
// the source's copies have landed (IOERR if they never do);
// a refused destination leaves the source to answer its reads itself; every malformed record
// refused with nothing changed, and one naming unmapped memory ending in NEEDS_RESET, not a
// crash; the same between two device workers through the mailboxes; and the review's
// regressions (a request no record can name is finished, not lost; a device saved before it
// ran; more moved requests than one datapath budget).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaSimBlk, VirtioBlkDriver, VirtioError, Code, migrate, migrateBetweenWorkers, saveState, loadState, encodeState, decodeState,
  saveEarlyState, saveStateDelta, encodeStateDelta, decodeStateDelta, featureBit, VIRTIO_F_SUSPEND, VIRTIO_F_RING_PACKED,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_S_OK, VIRTIO_CONFIG_S_NEEDS_RESET, SECTOR_SIZE, VIRTIO_F_INDIRECT_DESC,
  type BlkBackend, type DeviceState, type DriverQueue,
} from '../src/index.ts';
import { BLK_MIG_FEATURES, blkDriver, slotDriver, SharedDisk, type Layout } from './helpers/migration.ts';
import { virtioInit } from './helpers/virtio-driver.ts';
import { spawnHeldWorkers, stopHeldWorkers, heldBlk } from './helpers/held-backend.ts';
import { BLK_SPLIT, settle } from './helpers/blk-raw.ts';
import { readSplitDesc, writeSplitDesc } from './helpers/raw-ring.ts';

const isCode = (code: string) => (e: unknown) => e instanceof VirtioError && e.code === code;

/**
 * A disk whose reads and writes are answered only when the test opens their gate; every read
 * answers with bytes `fill` (so which backend answered is visible in the driver's buffer).
 */
class GatedDisk implements BlkBackend {
  readonly capacity = 2048;
  readonly ops = { read: 0, write: 0 };
  readonly data = new Uint8Array(2048 * SECTOR_SIZE);
  private readonly gates = { read: [] as (() => void)[], write: [] as (() => void)[] };
  private readonly open = { read: true, write: true };
  constructor(private readonly fill: number | null) {}
  hold(kind: 'read' | 'write'): void { this.open[kind] = false; }
  release(kind: 'read' | 'write'): void {
    this.open[kind] = true;
    for (const g of this.gates[kind].splice(0)) setImmediate(g);
  }
  pending(kind: 'read' | 'write'): number { return this.gates[kind].length; }
  private later<T>(kind: 'read' | 'write', fn: () => T): Promise<T> {
    return new Promise((res) => {
      const go = () => res(fn());
      if (this.open[kind]) setImmediate(go);
      else this.gates[kind].push(go);
    });
  }
  read(sector: number, len: number): Promise<Uint8Array> {
    return this.later('read', () => {
      this.ops.read++;
      return this.fill === null ? this.data.slice(sector * SECTOR_SIZE, sector * SECTOR_SIZE + len) : new Uint8Array(len).fill(this.fill);
    });
  }
  write(sector: number, d: Uint8Array): Promise<void> {
    return this.later('write', () => { this.ops.write++; this.data.set(d, sector * SECTOR_SIZE); });
  }
  flush(): Promise<void> { return Promise.resolve(); }
}

const blk = (p: Platform, backend: BlkBackend, name: string) => new VdpaSimBlk(p, { name, backend, deviceFeatures: BLK_MIG_FEATURES });

/** A platform, a source over a gated disk answering `fill` (null: its data), and our driver bound through a slot. */
function driverRig(name: string, fill: number | null, o: { ramSize?: number; queueSize?: number } = {}) {
  const p = Platform.create({ ramSize: o.ramSize ?? 16 << 20 });
  const srcDisk = new GatedDisk(fill);
  const src = blk(p, srcDisk, name);
  const { slot, drv } = blkDriver(p, src, 'split', o.queueSize ?? 64);
  return { p, srcDisk, src, slot, drv };
}

/**
 * A source driven by hand (test/helpers/virtio-driver.ts) whose descriptors carry IOVAs
 * D + memory offset, through a map that says so: the records must name IOVAs, not offsets.
 */
function rawRig(layout: Layout) {
  const p = Platform.create({ ramSize: 8 << 20, privateSize: 8 << 20 });
  const srcDisk = new GatedDisk(0xee);
  const src = blk(p, srcDisk, 'rsrc');
  const D = 2 ** 40;
  const want = BLK_SPLIT | featureBit(VIRTIO_F_SUSPEND) | (layout === 'packed' ? featureBit(VIRTIO_F_RING_PACKED) : 0n);
  const q: DriverQueue = virtioInit(src, p, {
    want, size: 16, dmaBase: D, noCallbacks: true,
    afterFeatures: () => src.setMap(0, [{ iova: D + p.ramBase, size: p.ramSize, addr: p.ramBase }]),
  }).queues[0]!;
  const used = new Map<number, number>();
  const reap = () => {
    for (let n = q.getUsed(); n > 0; n = q.getUsed()) {
      for (let i = 0; i < n; i++) {
        const t = q.usedToken(i);
        assert.ok(!used.has(t), `request ${t} used twice`);
        used.set(t, q.usedLen(i));
      }
    }
    return used;
  };
  /** A read of 4 KiB at `sector`: header, data, status, each its own buffer. */
  const read = (tok: number, sector: number) => {
    const hdr = p.allocBuffer(16, 16);
    p.view.setUint32(hdr, VIRTIO_BLK_T_IN, true);
    p.view.setUint32(hdr + 4, 0, true);
    p.view.setBigUint64(hdr + 8, BigInt(sector), true);
    const data = p.allocBuffer(4096, 4096);
    p.u8.fill(0x11, data, data + 4096);
    const status = p.allocBuffer(1, 1);
    p.u8[status] = 0xff;
    // A buffer's address is what the descriptor holds: the IOVA.
    q.stage(tok, [{ addr: D + hdr, len: 16 }], [{ addr: D + data, len: 4096 }, { addr: D + status, len: 1 }]);
    assert.equal(q.submit(), 1);
    return { hdr, data, status };
  };
  return { p, src, srcDisk, q, reap, read, D };
}

test('the version 2 blk state and delta lay each request out as the comment in state.ts says, and round-trip', async () => {
  const r = rawRig('split');
  r.srcDisk.hold('read');
  const early = saveEarlyState(r.src);
  const bufs = [1, 2, 3].map((t) => r.read(t, t * 8));
  r.src.kickVq(0);
  assert.equal(r.srcDisk.pending('read'), 3);
  await r.src.suspendDrained({ record: true });
  // Full state: blk tail = u64 capacity | u8 readOnly | u32 inFlight | u16 n | records | CRC.
  const s = saveState(r.src);
  assert.equal(s.version, 2);
  assert.equal(s.blk!.inFlight, 3);
  const reqs = s.blk!.requests!;
  assert.deepEqual(reqs.map((q) => q.readable[0]!.iova), bufs.map((b) => '0x' + (r.D + b.hdr).toString(16)), 'headers named by IOVA (D + offset), not by memory offset');
  assert.deepEqual(reqs[0]!.writable, [{ iova: '0x' + (r.D + bufs[0]!.data).toString(16), len: 4096 }, { iova: '0x' + (r.D + bufs[0]!.status).toString(16), len: 1 }]);
  const bin = encodeState(s);
  const tail = 8 + 1 + 4 + 2 + 3 * (10 + 3 * 12) + 4;
  const dv = new DataView(bin.buffer, bin.byteOffset + bin.length - tail);
  assert.equal(dv.getBigUint64(0, true), 2048n, 'capacity');
  assert.equal(dv.getUint8(8), 0, 'readOnly');
  assert.equal(dv.getUint32(9, true), 3, 'inFlight');
  assert.equal(dv.getUint16(13, true), 3, 'n');
  let o = 15;
  for (const [k, q] of reqs.entries()) {
    assert.deepEqual([0, 2, 4, 6, 8].map((x) => dv.getUint16(o + x, true)), [0, q.id, q.ndesc, 1, 2], `request ${k}: vq, id, ndesc, nread, nwrite`);
    o += 10;
    for (const piece of [...q.readable, ...q.writable]) {
      assert.equal('0x' + dv.getBigUint64(o, true).toString(16), piece.iova);
      assert.equal(dv.getUint32(o + 8, true), piece.len);
      o += 12;
    }
  }
  assert.equal(o + 4, tail, 'then the CRC');
  assert.deepEqual(decodeState(bin), s, 'full state round trip');
  // The delta carries the same records after its ring positions (u16 n, then the records).
  const d = saveStateDelta(r.src, early)!;
  assert.deepEqual(d.requests, reqs);
  const db = encodeStateDelta(d);
  assert.equal(new DataView(db.buffer).getUint16(8, true), 2, 'delta version');
  assert.equal(new DataView(db.buffer).getUint16(db.length - 4 - 3 * 46 - 2, true), 3, 'the delta\'s request count');
  assert.deepEqual(decodeStateDelta(db), d, 'delta round trip');
  // A version 1 state (no requests) still decodes and loads.
  const plain = { ...s, version: 1 as const, blk: { capacity: 2048, readOnly: false, inFlight: 0 } };
  const v1 = encodeState(plain);
  assert.equal(new DataView(v1.buffer).getUint16(8, true), 1);
  assert.equal(v1.length, bin.length - 2 - 3 * 46, 'version 1 ends after inFlight');
  assert.deepEqual(decodeState(v1), plain);
  const dst = blk(r.p, new GatedDisk(0x22), 'v1dst');
  loadState(dst, v1);
  assert.equal(dst.inFlight, 0);
});

for (const layout of ['split', 'packed'] as const) {
  test(`${layout}: reads in flight move by IOVA; the destination answers each once, the source's late answers touch nothing`, async () => {
    const r = rawRig(layout);
    r.srcDisk.hold('read');
    const bufs = Array.from({ length: 8 }, (_, i) => r.read(i + 1, i * 8));
    r.src.kickVq(0);
    assert.equal(r.srcDisk.pending('read'), 8);
    const dstDisk = new GatedDisk(0x22);
    const dst = blk(r.p, dstDisk, `rdst-${layout}`);
    const rep = await migrate({ source: r.src, destination: dst });
    assert.equal(rep.recorded, 8);
    assert.equal(rep.delta?.requests?.length, 8, 'the records moved in the delta');
    assert.equal(dst.inFlight, 8, 'the destination re-submitted all eight at resume');
    await settle();
    const used = r.reap();
    assert.equal(used.size, 8);
    for (const [t, len] of used) assert.equal(len, 4097, `request ${t}: data + status written`);
    for (const b of bufs) {
      assert.equal(r.p.u8[b.status], VIRTIO_BLK_S_OK);
      assert.ok(r.p.u8.subarray(b.data, b.data + 4096).every((x) => x === 0x22), 'the destination\'s backend answered');
    }
    assert.equal(dstDisk.ops.read, 8);
    // The source's backend answers now: the suspended source drops every answer.
    r.srcDisk.release('read');
    await settle();
    assert.equal(r.srcDisk.ops.read, 8);
    assert.equal(r.reap().size, 8, 'no used entry from the source');
    for (const b of bufs) assert.ok(r.p.u8.subarray(b.data, b.data + 4096).every((x) => x === 0x22), 'nothing written by the source');
    assert.equal(dst.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  });
}

test('writes in flight move too, and complete at the destination only once the source\'s copies have landed', async () => {
  const { p, srcDisk, src, slot, drv } = driverRig('wsrc', null);
  srcDisk.hold('read');
  srcDisk.hold('write');
  let written = 0;
  const writes = [0, 1, 2, 3].map((k) => drv.write(k * 8, new Uint8Array(4096).fill(k + 1)).then(() => { written++; }));
  const reads = [4, 5, 6].map((k) => drv.read(k * 8, new Uint8Array(4096)));
  await settle(1);
  assert.equal(srcDisk.pending('write'), 4);
  assert.equal(srcDisk.pending('read'), 3);
  assert.equal(src.mustFinish(true), 0, 'a recording suspend waits for none of them');
  assert.equal(src.mustFinish(false), 7, 'a draining one for all seven');
  const dstDisk = new GatedDisk(null);
  const dst = blk(p, dstDisk, 'wdst');
  const rep = await migrate({ source: src, destination: dst, switchover: (d) => slot.switchTo(d) });
  assert.equal(rep.recorded, 7);
  assert.equal(rep.recordedWrites, 4);
  await Promise.all(reads);
  await settle();
  // The destination ran the writes, but holds their completions: the source's copies are still out.
  assert.equal(dstDisk.ops.write, 4);
  assert.equal(dst.fencedRequests, 4);
  assert.equal(written, 0, 'no write completed while the source\'s copy could still land');
  assert.ok(dst.fenceId > 0);
  for (let k = 0; k < 4; k++) assert.ok(dstDisk.data.subarray(k * 4096, (k + 1) * 4096).every((x) => x === k + 1));
  // A second migration of the destination now would have to wait for them: it cannot carry them.
  assert.equal(dst.mustFinish(true), 4);
  srcDisk.release('write');
  await Promise.all(writes);
  assert.equal(written, 4);
  assert.equal(srcDisk.ops.write, 4, 'the source\'s copies landed (their answers dropped)');
  assert.equal(dst.fencedRequests, 0);
  assert.equal(dst.fenceId, 0);
  srcDisk.release('read');
  await settle();
  assert.equal(drv.inFlight, 0);
  assert.equal(dst.backendFaults, 0);
  // inflight: 'drain' finishes everything before the save instead.
  const back = blk(p, new GatedDisk(null), 'wback');
  dstDisk.hold('read');
  const more = [7, 8].map((k) => drv.read(k * 8, new Uint8Array(4096)));
  await settle(1);
  const m2 = migrate({ source: dst, destination: back, inflight: 'drain', switchover: (d) => slot.switchTo(d) });
  await settle();
  dstDisk.release('read');
  const rep2 = await m2;
  assert.equal(rep2.recorded, 0);
  assert.equal(rep2.delta?.requests?.length, 0);
  await Promise.all(more);
});

test('a fence never released (the source\'s backend hangs) completes the re-submitted writes with IOERR after suspendTimeoutMs', async () => {
  const { p, srcDisk, src, slot, drv } = driverRig('hsrc', null);
  srcDisk.hold('write');
  const w = drv.write(8, new Uint8Array(4096).fill(9)).then(() => 'ok', (e: unknown) => e);
  await settle(1);
  const dst = new VdpaSimBlk(p, { name: 'hdst', backend: new GatedDisk(null), deviceFeatures: BLK_MIG_FEATURES, suspendTimeoutMs: 50 });
  const rep = await migrate({ source: src, destination: dst, switchover: (d) => slot.switchTo(d) });
  assert.equal(rep.recordedWrites, 1);
  await settle();
  assert.equal(dst.fencedRequests, 1);
  const res = await w;
  assert.ok(res instanceof VirtioError && res.code === Code.IoError, `the write failed with IOERR (${String(res)})`);
  assert.equal(dst.fenceId, 0);
  // A late release names a fence the device no longer holds: nothing happens.
  dst.releaseFence(1);
  srcDisk.release('write');
  await settle();
  assert.equal(drv.inFlight, 0);
});

test('a destination that refuses the state leaves the source to answer its reads itself, once', async () => {
  const { p, srcDisk, src, slot, drv } = driverRig('asrc', 0x5a);
  srcDisk.hold('read');
  const bufs = [0, 1, 2].map(() => new Uint8Array(4096));
  const reads = bufs.map((b, k) => drv.read(k * 8, b));
  await settle(1);
  const small = new VdpaSimBlk(p, { name: 'asmall', backend: { ...new GatedDisk(0), capacity: 1024, read: () => Promise.resolve(new Uint8Array(0)), write: () => Promise.resolve(), flush: () => Promise.resolve() }, deviceFeatures: BLK_MIG_FEATURES });
  await assert.rejects(migrate({ source: src, destination: small, switchover: (d) => slot.switchTo(d) }), isCode(Code.FailedPrecondition));
  assert.equal(small.getStatus(), 0, 'the destination was left fresh');
  assert.equal(src.isSuspended, false, 'the source runs on');
  srcDisk.release('read');
  await Promise.all(reads);
  for (const b of bufs) assert.ok(b.every((x) => x === 0x5a));
  assert.equal(srcDisk.ops.read, 3);
  assert.equal(src.inFlight, 0);
});

test('malformed records are refused with nothing changed; a record naming unmapped memory ends in NEEDS_RESET', async () => {
  const r = rawRig('split');
  r.srcDisk.hold('read');
  [1, 2].forEach((t) => r.read(t, t * 8));
  r.src.kickVq(0);
  await r.src.suspendDrained({ record: true });
  const good = saveState(r.src);
  const bad = (f: (s: DeviceState) => void): DeviceState => {
    const s = structuredClone(good);
    f(s);
    return s;
  };
  const forged: [string, DeviceState][] = [
    ['duplicate id', bad((s) => { s.blk!.requests![1]!.id = s.blk!.requests![0]!.id; })],
    ['id past the queue', bad((s) => { s.blk!.requests![0]!.id = 16; })],
    ['ndesc 0', bad((s) => { s.blk!.requests![0]!.ndesc = 0; })],
    ['no readable piece', bad((s) => { s.blk!.requests![0]!.readable = []; })],
    ['no writable piece', bad((s) => { s.blk!.requests![0]!.writable = []; })],
    ['a piece of 0 bytes', bad((s) => { s.blk!.requests![0]!.writable[0]!.len = 0; })],
    ['an IOVA past 2^53', bad((s) => { s.blk!.requests![0]!.readable[0]!.iova = '0x20000000000000'; })],
    ['an IOVA that is not hex', bad((s) => { s.blk!.requests![0]!.readable[0]!.iova = 'zz'; })],
    ['another queue', bad((s) => { s.blk!.requests![0]!.vq = 1; })],
    ['inFlight not the count', bad((s) => { s.blk!.inFlight = 1; })],
    ['more requests than the queue holds', bad((s) => { s.blk!.requests = Array.from({ length: 17 }, (_, i) => ({ ...s.blk!.requests![0]!, id: i })); s.blk!.inFlight = 17; })],
    ['requests in a version 1 state', bad((s) => { s.version = 1; })],
  ];
  for (const [why, s] of forged) {
    const dst = blk(r.p, new GatedDisk(1), `bad-${why.replace(/\W/g, '')}`);
    assert.throws(() => loadState(dst, s), isCode(Code.InvalidArgument), why);
    assert.equal(dst.getStatus(), 0, `${why}: nothing changed`);
  }
  // A RAM disk has nothing in flight to take.
  const ram = new VdpaSimBlk(r.p, { name: 'ramdst', capacity: 2048, deviceFeatures: BLK_MIG_FEATURES });
  assert.throws(() => loadState(ram, good), isCode(Code.InvalidArgument));
  assert.equal(ram.getStatus(), 0);
  // Well-formed, but naming memory the map does not give the device: the device cannot answer
  // it (its status byte is out of reach), so the queue breaks at resume — no throw, no write.
  const off = bad((s) => { s.blk!.requests![0]!.writable[1]!.iova = '0x10'; });
  const dst = blk(r.p, new GatedDisk(1), 'unmapped');
  loadState(dst, off);
  dst.resume();
  assert.ok(dst.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  await settle();
  r.srcDisk.release('read');
  await settle();
});

test('between workers: reads held at the source\'s backend move through the mailboxes, and the destination answers them', async () => {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w = await spawnHeldWorkers(p);
  try {
    const src = await heldBlk(w[0]!, 'isrc');
    const dst = await heldBlk(w[1]!, 'idst');
    const { slot, drv } = slotDriver(p, src, 64, VirtioBlkDriver);
    await drv.flush();
    await w[0]!.bus.request('hold', 'disk');
    const bufs = [1, 2, 3, 4].map(() => new Uint8Array(4096).fill(0x99));
    const reads = bufs.map((b, k) => drv.read(k * 8, b));
    for (let i = 0; i < 200 && (await w[0]!.bus.request('pending', 'disk')) !== 4; i++) await new Promise((res) => setTimeout(res, 2));
    assert.equal(await w[0]!.bus.request('pending', 'disk'), 4, 'four reads out at the held disk');
    const rep = await migrateBetweenWorkers({ source: src, destination: dst, slot, announce: false });
    assert.equal(rep.moved, 'delta');
    assert.equal(rep.mailbox, true, 'reads do not make the mailbox wait');
    assert.equal(rep.drained, 0);
    assert.equal(rep.recorded, 4);
    // The destination's worker answered the load, then resumed and re-submitted the four reads
    // while this thread ran on: that resume is reported beside the downtime, not inside it.
    assert.ok(rep.startMs > 0, `the destination's resume took ${rep.startMs} ms in its worker`);
    // It overlaps the answer's way back, so it is not ordered with the downtime's end; it is
    // after the suspend and holds at least the resume itself.
    assert.ok(rep.startedMs >= rep.startMs, `started ${rep.startedMs} ms after the suspend, the resume took ${rep.startMs} ms`);
    assert.equal(await dst.migStarted(), null, 'the record of that resume was read once');
    await Promise.all(reads);
    for (const b of bufs) assert.ok(b.every((x) => x === 0), 'read from the destination worker\'s (zeroed) disk');
    // The source worker's disk answers now; its device, suspended, drops the answers.
    await w[0]!.bus.request('release', 'disk');
    for (let i = 0; i < 200 && (await w[0]!.bus.request('pending', 'disk')) !== 0; i++) await new Promise((res) => setTimeout(res, 2));
    await drv.flush(); // the ring still works, with nothing stray in it
    assert.equal(drv.inFlight, 0);
    // Back, with writes held at this side's disk (released by its worker after 300 ms): they
    // move through the mailboxes too, and complete once the source's copies landed, before
    // migrateBetweenWorkers resolves (it waits for that).
    await w[0]!.bus.devDel('isrc');
    const back = await heldBlk(w[0]!, 'iback');
    await w[1]!.bus.request('hold', 'disk', 300);
    let done = 0;
    const writes = [5, 6, 7].map((k) => drv.write(k * 8, new Uint8Array(4096).fill(k)).then(() => { done++; }));
    for (let i = 0; i < 200 && (await w[1]!.bus.request('pending', 'disk')) !== 3; i++) await new Promise((res) => setTimeout(res, 2));
    assert.equal(await w[1]!.bus.request('pending', 'disk'), 3, 'three writes out at the held disk');
    const mig = migrateBetweenWorkers({ source: dst, destination: back, slot, announce: false });
    await new Promise((res) => setTimeout(res, 100)); // the switchover is done; the disk still holds
    assert.equal(done, 0, 'no moved write completed while the source\'s copies were held');
    const rep2 = await mig;
    assert.equal(rep2.mailbox, true, 'writes do not make the mailbox wait either');
    assert.equal(rep2.recorded, 3);
    assert.equal(await w[1]!.bus.request('pending', 'disk'), 0, 'resolved once the source\'s writes landed');
    await Promise.all(writes);
    assert.equal(done, 3);
    const got = new Uint8Array(4096);
    await drv.read(6 * 8, got);
    assert.ok(got.every((x) => x === 6), 'written at the new destination');
  } finally {
    await stopHeldWorkers(w);
  }
});

// Regressions from the review (each failed before its fix).

/** Resolves true if `p` settles within `ms`. */
const within = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

test('a request whose buffers sit at IOVA >= 2^53 cannot be recorded: the source finishes it before the save, once', async () => {
  const p = Platform.create({ ramSize: 8 << 20, privateSize: 8 << 20 });
  const srcDisk = new GatedDisk(0xee);
  const src = blk(p, srcDisk, 'hi-src');
  // The request's buffers live in [region, +64 KiB), mapped only at IOVA 2^60 (a legal u64 IOVA).
  const region = p.allocBuffer(65536, 65536);
  const HIGH = 2n ** 60n;
  const end = p.ramBase + p.ramSize;
  const want = (BLK_SPLIT | featureBit(VIRTIO_F_SUSPEND)) & ~featureBit(VIRTIO_F_INDIRECT_DESC);
  const q: DriverQueue = virtioInit(src, p, {
    want, size: 16, noCallbacks: true,
    afterFeatures: () => src.setMap(0, [
      ...(region > p.ramBase ? [{ iova: p.ramBase, size: region - p.ramBase, addr: p.ramBase }] : []),
      { iova: region + 65536, size: end - region - 65536, addr: region + 65536 },
      { iova: HIGH, size: 65536, addr: region },
    ]),
  }).queues[0]!;
  const hdr = region, data = region + 4096, status = region + 8192;
  p.view.setUint32(hdr, VIRTIO_BLK_T_IN, true);
  p.view.setUint32(hdr + 4, 0, true);
  p.view.setBigUint64(hdr + 8, 8n, true);
  p.u8[status] = 0xff;
  q.stage(1, [{ addr: hdr, len: 16 }], [{ addr: data, len: 4096 }, { addr: status, len: 1 }]);
  assert.equal(q.submit(), 1);
  // Rewrite the descriptors' addresses to the high IOVAs (DriverQueue only stages safe integers).
  const table = Number(q.addresses.descArea);
  for (let i = 0; i < 16; i++) {
    const d = readSplitDesc(p, table, i);
    if (d.addr >= BigInt(region) && d.addr < BigInt(region + 65536)) writeSplitDesc(p, table, i, HIGH + d.addr - BigInt(region), d.len, d.flags, d.next);
  }
  srcDisk.hold('read');
  src.kickVq(0);
  assert.equal(src.inFlight, 1, 'the read went to the backend (the high IOVA translated)');
  assert.equal(srcDisk.pending('read'), 1);
  const dst = blk(p, new GatedDisk(0x22), 'hi-dst');
  // If the source must finish the request (it cannot be named by a safe IOVA), it finishes once the disk answers.
  setTimeout(() => srcDisk.release('read'), 20);
  const rep = await migrate({ source: src, destination: dst });
  await settle();
  await new Promise((r) => setTimeout(r, 50));
  await settle();
  const used = q.getUsed();
  assert.equal(rep.recorded, 0, 'nothing moved');
  assert.equal(rep.delta?.requests?.length, 0);
  assert.equal(dst.inFlight, 0);
  assert.equal(used, 1, 'the read completed once, at the source, before the save');
  assert.equal(p.u8[status], 0, 'VIRTIO_BLK_S_OK');
});

test('a destination saved before it ran: refused while its fence is closed, then it carries the requests it was to re-submit', async () => {
  const { p, srcDisk, src: a, slot, drv } = driverRig('r2a-a', 0x5a);
  srcDisk.hold('read');
  const reads = [0, 1, 2].map((k) => drv.read(k * 8, new Uint8Array(4096)));
  await settle(1);
  assert.equal(a.inFlight, 3);
  await a.suspendDrained({ record: true });
  const s = saveState(a);
  assert.equal(s.blk!.requests!.length, 3);
  const b = blk(p, new GatedDisk(0x22), 'r2a-b');
  loadState(b, s);
  // b's fence is closed (nobody said a's writes are idle): some of what it owes may be writes.
  assert.throws(() => saveState(b), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
  await a.writesIdle();
  b.releaseFence(b.fenceId);
  const s2 = saveState(b);
  // ...but it must carry the three requests b still owes the driver.
  const c = blk(p, new GatedDisk(0x33), 'r2a-c');
  loadState(c, s2);
  slot.switchTo(c);
  c.resume();
  const ok = await within(Promise.all(reads), 300);
  srcDisk.release('read');
  assert.equal(s2.blk!.requests!.length, 3, 'the state of b carries b\'s pending re-submissions');
  assert.ok(ok, 'the three reads completed');
});

test('more moved requests than one datapath budget: all are re-submitted at resume, and a suspend right after carries them all', async () => {
  const { p, srcDisk, src: a, slot, drv } = driverRig('r2b-a', 0x5a, { ramSize: 32 << 20, queueSize: 128 });
  srcDisk.hold('read');
  const N = 100;
  const reads = Array.from({ length: N }, (_, k) => drv.read(k * 8, new Uint8Array(4096)));
  await settle(1);
  assert.equal(a.inFlight, N);
  await a.suspendDrained({ record: true });
  const s = saveState(a);
  assert.equal(s.blk!.requests!.length, N);
  const bDisk = new GatedDisk(0x22);
  bDisk.hold('read');
  const b = blk(p, bDisk, 'r2b-b');
  loadState(b, s);
  slot.switchTo(b);
  b.resume(); // re-submits all 100 now (the device batch is 64)
  assert.equal(b.inFlight, N);
  await b.suspendDrained({ record: true }); // e.g. the VMM migrates again at once
  const s2 = saveState(b);
  assert.equal(s2.blk!.requests!.length, N, `b's state carries all ${N} reads (b had ${b.inFlight} in flight)`);
  const c = blk(p, new GatedDisk(0x33), 'r2b-c');
  loadState(c, s2);
  slot.switchTo(c);
  c.resume();
  srcDisk.release('read');
  bDisk.release('read');
  assert.ok(await within(Promise.all(reads), 2000), 'every read completed, once');
});

test('request records are reused only after their backend settled: a dropped request\'s late answer never completes the request that took its record', async () => {
  // Reads answer when the test says, each filling the device's buffer with its sector's tag.
  // A's 16 reads move to B and are answered there, while A's own calls stay out at the backend.
  // A, reset, becomes the next destination and re-submits B's 16 new reads. Then A's old calls
  // answer first: were a record handed out again before its backend settled, an old answer
  // would complete a new read, before that read's own answer, with bytes not its own.
  const held: { s: number; go: () => void }[] = [];
  const tag = (s: number) => (s * 7 + 3) & 255;
  const disk: BlkBackend = {
    capacity: 8192,
    read: async () => { throw new Error('readInto is there'); },
    readInto: (s, buf) => new Promise<void>((res) => { held.push({ s, go: () => { buf.fill(tag(s)); res(); } }); }),
    write: async () => {},
    flush: async () => {},
  };
  /** Answers the first (or last) call still out for each of `sectors`. */
  const answer = (sectors: number[], which: 'first' | 'last' = 'first') => {
    for (const s of sectors) {
      let k = -1;
      for (let j = 0; j < held.length; j++) if (held[j]!.s === s && (k < 0 || which === 'last')) k = j;
      assert.ok(k >= 0, `a call for sector ${s} is out`);
      held.splice(k, 1)[0]!.go();
    }
  };
  const p = Platform.create({ ramSize: 16 << 20 });
  const mk = (name: string) => new VdpaSimBlk(p, { name, backend: disk, deviceFeatures: BLK_MIG_FEATURES });
  const a = mk('reuse-a');
  const b = mk('reuse-b');
  const { slot, drv } = blkDriver(p, a, 'split', 64);
  const turns = async (k = 3) => { for (let i = 0; i < k; i++) await new Promise((r) => setImmediate(r)); };
  const sectors = (base: number) => Array.from({ length: 16 }, (_, i) => base + 8 * i);
  // A has served reads before: its pool has records.
  const warm = sectors(4000);
  const w = warm.map((s) => drv.read(s, new Uint8Array(4096)));
  await turns();
  answer(warm);
  await Promise.all(w);
  const old = sectors(0);
  const oldBufs = old.map(() => new Uint8Array(4096));
  const first = old.map((s, i) => drv.read(s, oldBufs[i]!));
  await turns();
  assert.equal(a.inFlight, 16);
  await migrate({ source: a, destination: b, switchover: (d) => slot.switchTo(d) });
  await turns();
  answer(old, 'last'); // B's re-submissions; A's calls stay out
  await Promise.all(first);
  oldBufs.forEach((buf, i) => assert.ok(buf.every((x) => x === tag(old[i]!)), `moved read ${i} answered by B`));
  assert.equal(held.length, 16, 'A\'s own calls are still out');
  a.reset();
  const fresh = sectors(2000);
  const freshBufs = fresh.map(() => new Uint8Array(4096));
  const second = fresh.map((s, i) => drv.read(s, freshBufs[i]!));
  await turns();
  assert.equal(b.inFlight, 16);
  await migrate({ source: b, destination: a, switchover: (d) => slot.switchTo(d) });
  await turns();
  assert.equal(a.inFlight, 16, 'A re-submitted B\'s reads');
  let done = 0;
  for (const r of second) void r.then(() => done++);
  answer(old); // A's old calls: dropped by its reset, they complete nothing
  await turns();
  assert.equal(done, 0, 'no new read completed on an old answer');
  assert.equal(a.inFlight, 16);
  answer(fresh, 'last'); // A's re-submissions (B's own calls stay out, dropped when B is reset)
  await Promise.all(second);
  freshBufs.forEach((buf, i) => assert.ok(buf.every((x) => x === tag(fresh[i]!)), `read ${i} got its own sector's bytes`));
  b.reset();
  answer(fresh);
  await turns();
  assert.equal(held.length, 0);
  assert.equal(a.inFlight, 0);
});
