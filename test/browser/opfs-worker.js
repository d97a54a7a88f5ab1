// The OPFS backend in a dedicated worker, next to the IndexedDB one: each gets the same seeded
// stream of writes, reads and flushes, checked against an in-memory model of the disk; then the
// OPFS backend's edges (capacity rules, out-of-range, closed and locked handles, read-only,
// writeZeroes, remove) and a vdpasim_blk device over it driven by virtio_vdpa's blk driver.
// Posts one report: { error?, model, edges, device }.

import {
  OpfsBackend, IdbBackend, VirtioError, Platform, VdpaBus, VdpaSimBlk, createVirtioVdpa,
} from '/dist/index.js';

const SECTOR = 512;
const DIR = 'vdpa-test';
const RUN = `${Date.now().toString(36)}-${Math.floor(Math.random() * 1e9).toString(36)}`;
const path = (name) => `${DIR}/${RUN}-${name}.img`;

/** xorshift32: the op stream is the same for both backends and from run to run. */
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s;
  };
}

/** `ops` random requests on `b` (a disk of `sectors`), checked against a model. */
async function modelRun(b, sectors, ops, seed) {
  const model = new Uint8Array(sectors * SECTOR);
  const next = rng(seed);
  const counts = { write: 0, read: 0, flush: 0, mismatches: 0, bytes: 0 };
  for (let i = 0; i < ops; i++) {
    const kind = next() % 8;
    const len = 1 + (next() % 16); // sectors
    const sector = next() % (sectors - len + 1);
    if (kind < 4) {
      const data = new Uint8Array(len * SECTOR);
      for (let j = 0; j < data.length; j += 4) {
        const v = next();
        data[j] = v; data[j + 1] = v >>> 8; data[j + 2] = v >>> 16; data[j + 3] = v >>> 24;
      }
      await b.write(sector, data);
      model.set(data, sector * SECTOR);
      counts.write++;
      counts.bytes += data.length;
    } else if (kind < 7) {
      const got = await b.read(sector, len * SECTOR);
      const want = model.subarray(sector * SECTOR, (sector + len) * SECTOR);
      if (got.length !== want.length || got.some((x, j) => x !== want[j])) counts.mismatches++;
      counts.read++;
    } else {
      await b.flush();
      counts.flush++;
    }
  }
  // The whole disk at the end.
  const all = await b.read(0, sectors * SECTOR);
  const whole = all.every((x, j) => x === model[j]);
  return { counts, whole, model };
}

/** The typed error code a promise rejects with, or 'resolved' / 'untyped: …'. */
async function codeOf(f) {
  try {
    await f();
    return 'resolved';
  } catch (e) {
    return e instanceof VirtioError ? e.code : `untyped: ${e?.name}: ${e?.message}`;
  }
}

async function edges(p, model, sectors) {
  const out = {};
  // Reopen without a size: the file's size decides the capacity, the contents persist.
  const b = await OpfsBackend.open(p);
  out.reopenCapacity = b.capacity;
  const all = await b.read(0, sectors * SECTOR);
  out.persisted = all.every((x, j) => x === model[j]);
  // The file's exclusive lock: a second handle is refused while this one is open.
  out.secondOpen = await codeOf(() => OpfsBackend.open(p));
  // Out of range and malformed requests (the device checks too; the backend must not rely on it).
  out.readPastEnd = await codeOf(() => b.read(sectors - 2, 4 * SECTOR));
  out.writePastEnd = await codeOf(() => b.write(sectors, new Uint8Array(SECTOR)));
  out.readNegative = await codeOf(() => b.read(-1, SECTOR));
  out.readPartialSector = await codeOf(() => b.read(0, 100));
  out.zeroesPastEnd = await codeOf(() => b.writeZeroes(sectors - 1, 2));
  // writeZeroes on a written range.
  await b.write(10, new Uint8Array(3 * SECTOR).fill(0xaa));
  await b.writeZeroes(10, 2);
  const z = await b.read(10, 3 * SECTOR);
  out.writeZeroes = z.subarray(0, 2 * SECTOR).every((x) => x === 0) && z.subarray(2 * SECTOR).every((x) => x === 0xaa);
  await b.flush();
  b.close();
  b.close(); // idempotent
  out.closedFlag = b.closed;
  out.readClosed = await codeOf(() => b.read(0, SECTOR));
  out.writeClosed = await codeOf(() => b.write(0, new Uint8Array(SECTOR)));
  out.flushClosed = await codeOf(() => b.flush());
  // Sizes: an existing image is never resized; a missing one needs a size.
  out.wrongSize = await codeOf(() => OpfsBackend.open(p, { sectors: sectors / 2 }));
  out.sameSize = await codeOf(async () => (await OpfsBackend.open(p, { sectors })).close());
  out.missingNoSize = await codeOf(() => OpfsBackend.open(path('missing')));
  out.zeroSectors = await codeOf(() => OpfsBackend.open(path('zero'), { sectors: 0 }));
  out.fractionalSectors = await codeOf(() => OpfsBackend.open(path('frac'), { sectors: 1.5 }));
  out.badPath = await codeOf(() => OpfsBackend.open('../escape.img', { sectors: 8 }));
  out.emptyPath = await codeOf(() => OpfsBackend.open('/', { sectors: 8 }));
  // Read-only: reads work, writes are refused, the device would offer VIRTIO_BLK_F_RO.
  const ro = await OpfsBackend.open(p, { readOnly: true });
  out.readOnly = ro.readOnly;
  out.readOnlyRead = (await ro.read(10, SECTOR)).every((x) => x === 0);
  out.readOnlyWrite = await codeOf(() => ro.write(0, new Uint8Array(SECTOR)));
  out.readOnlyCreate = await codeOf(() => OpfsBackend.open(path('ro-missing'), { sectors: 8, readOnly: true }));
  ro.close();
  // A new file reads as zeros.
  const fresh = await OpfsBackend.open(path('fresh'), { sectors: 16 });
  out.freshCapacity = fresh.capacity;
  out.freshZeros = (await fresh.read(0, 16 * SECTOR)).every((x) => x === 0);
  fresh.close();
  await OpfsBackend.remove(path('fresh'));
  out.removedThenOpen = await codeOf(() => OpfsBackend.open(path('fresh')));
  // fromHandle: a handle the caller opened; closed underneath, requests fail typed.
  const root = await navigator.storage.getDirectory();
  const fh = await root.getFileHandle(`${RUN}-raw.img`, { create: true });
  const raw = await fh.createSyncAccessHandle();
  raw.truncate(4 * SECTOR);
  const wrapped = OpfsBackend.fromHandle(raw);
  out.fromHandleCapacity = wrapped.capacity;
  await wrapped.write(1, new Uint8Array(SECTOR).fill(7));
  out.fromHandleRoundTrip = (await wrapped.read(1, SECTOR)).every((x) => x === 7);
  raw.close();
  out.readAfterExternalClose = await codeOf(() => wrapped.read(0, SECTOR));
  wrapped.close(); // the handle is already closed: still no throw
  await root.removeEntry(`${RUN}-raw.img`);
  out.fromHandleOddSize = await codeOf(async () => {
    const h = await (await root.getFileHandle(`${RUN}-odd.img`, { create: true })).createSyncAccessHandle();
    h.truncate(700);
    try {
      OpfsBackend.fromHandle(h);
    } finally {
      h.close();
      await root.removeEntry(`${RUN}-odd.img`);
    }
  });
  out.removeMissing = await codeOf(() => OpfsBackend.remove(path('fresh')));
  return out;
}

/** A vdpasim_blk device over an OPFS backend, driven by virtio_vdpa's blk driver, in this worker. */
async function device(p) {
  const backend = await OpfsBackend.open(p, { sectors: 2048 });
  const platform = Platform.create({ ramSize: 4 << 20 });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(platform, { queueSize: 64 });
  bus.registerDriver(virtio);
  try {
    bus.addDevice(new VdpaSimBlk(platform, { name: 'opfs0', backend }));
    const blk = virtio.blk('opfs0');
    const data = new Uint8Array(24 * SECTOR).map((_, i) => (i * 29 + 7) & 255);
    await Promise.all([blk.write(100, data), blk.write(7, data.subarray(0, SECTOR))]);
    await blk.flush();
    const back = new Uint8Array(data.length);
    await blk.read(100, back);
    const never = new Uint8Array(2 * SECTOR);
    await blk.read(2000, never);
    // What the driver wrote is in the file: read it back through the backend itself.
    const direct = await backend.read(100, data.length);
    // A backend closed under a running device: each request ends with IOERR, nothing crashes.
    backend.close();
    const afterClose = await codeOf(() => blk.read(0, new Uint8Array(SECTOR)));
    return {
      afterClose,
      capacity: blk.capacity,
      id: await blk.getId(),
      roundTrip: back.every((b, i) => b === data[i]),
      inFile: direct.every((b, i) => b === data[i]),
      zeros: never.every((b) => b === 0),
    };
  } finally {
    bus.removeDevice('opfs0');
    backend.close();
  }
}

async function main() {
  const report = {};
  const SECTORS = 256;
  const OPS = 300;
  const SEED = 0x5eed;
  const op = path('model');
  const opfs = await OpfsBackend.open(op, { sectors: SECTORS });
  report.opfsCapacity = opfs.capacity;
  const m = await modelRun(opfs, SECTORS, OPS, SEED);
  opfs.close();
  report.opfs = { ...m.counts, whole: m.whole };
  const dbName = `vdpa-opfs-test-${RUN}`;
  const idb = await IdbBackend.open(dbName, { sectors: SECTORS, chunkSectors: 8 });
  try {
    const mi = await modelRun(idb, SECTORS, OPS, SEED);
    report.idb = { ...mi.counts, whole: mi.whole };
    // The same range and lifecycle rules as the OPFS backend, typed the same way.
    report.idbEdges = {
      readPastEnd: await codeOf(() => idb.read(SECTORS - 2, 4 * SECTOR)),
      writePastEnd: await codeOf(() => idb.write(SECTORS, new Uint8Array(SECTOR))),
      readNegative: await codeOf(() => idb.read(-1, SECTOR)),
      readPartialSector: await codeOf(() => idb.read(0, 100)),
    };
    idb.close();
    idb.close(); // idempotent
    report.idbEdges.readClosed = await codeOf(() => idb.read(0, SECTOR));
    report.idbEdges.writeClosed = await codeOf(() => idb.write(0, new Uint8Array(SECTOR)));
    report.idbEdges.flushClosed = await codeOf(() => idb.flush());
  } finally {
    idb.close();
    indexedDB.deleteDatabase(dbName);
  }
  report.edges = await edges(op, m.model, SECTORS);
  report.device = await device(path('device'));
  for (const n of ['model', 'device']) await OpfsBackend.remove(path(n)).catch(() => {});
  return report;
}

main().then(
  (r) => postMessage(r),
  (e) => postMessage({ error: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e) }),
);
