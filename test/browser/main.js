// The browser test page's script (driver side). It imports the built package from /dist and
// runs, in Chromium:
//   1. single-thread round trips on an unshared platform, split and packed: DriverQueue and
//      DeviceQueue in this thread, every chain checked;
//   2. round trips on a shared platform with the device in a module worker
//      (device-worker.js): doorbells are words in the shared memory, the device sleeps in
//      Atomics.wait and this thread (which must not block) in Atomics.waitAsync.
// The outcome lands in window.__result = { ok, details } for the Node test to read.

import {
  Platform, DriverQueue, DeviceQueue, ringFeatures, VdpaBus, VdpaSimNetMgmt, VdpaSimBlk, createVirtioVdpa, IdbBackend,
} from '/dist/index.js';
import { SLOT, fillPayload, reply, checkReply } from './echo.js';

/** Wall-clock budget of one round-trip run (a run that needs longer fails, it does not hang). */
const RUN_TIMEOUT_MS = 20_000;
/** Longest single sleep on a doorbell; a notification that has not come by then was lost. */
const WAIT_MS = 2_000;
/** Chains per single-thread run, and per worker run. */
const LOCAL_CHAINS = 1200;
const WORKER_CHAINS = 2000;
/**
 * Packed ring slots the worker runs keep free. 0: a full ring in flight is part of the test
 * (it caught a lost notification when the device pushed exactly a whole ring).
 */
const PACKED_RESERVE = 0;

/** Buffer slots: an out and an in buffer of SLOT bytes each, handed out per request. */
class Pool {
  constructor(platform, slots, total) {
    this.platform = platform;
    this.base = platform.allocBuffer(slots * 2 * SLOT, 64);
    this.free = Array.from({ length: slots }, (_, i) => slots - 1 - i);
    this.slotOf = new Int32Array(total).fill(-1); // request → slot while in flight
  }
  out(s) { return this.base + 2 * s * SLOT; }
  in(s) { return this.base + (2 * s + 1) * SLOT; }
  release() { this.platform.ram.release(this.base); }
}

/**
 * The driver's bookkeeping for one run: stages requests [next, total) as room allows and
 * checks what comes back, which must be every request once, in order, with the right reply.
 */
class Requests {
  /** `reserve`: ring slots to leave free (see PACKED_RESERVE). */
  constructor(platform, dq, total, reserve = 0) {
    this.u8 = platform.u8;
    this.dq = dq;
    this.total = total;
    this.reserve = reserve;
    this.pool = new Pool(platform, dq.size, total);
    this.next = 0; // next request to add
    this.done = 0; // requests reclaimed and checked
  }

  /** Stages and submits as many requests as fit (2 descriptors each). Returns how many. */
  add() {
    const { dq, pool, u8 } = this;
    let k = 0;
    while (this.next < this.total && k < dq.batch && dq.numFree - this.reserve >= 2 * (k + 1) && pool.free.length > 0) {
      const seq = this.next++;
      const s = pool.free.pop();
      pool.slotOf[seq] = s;
      const len = fillPayload(u8, pool.out(s), seq);
      u8.fill(0, pool.in(s), pool.in(s) + SLOT); // a stale reply must not pass the check
      dq.stage(seq, [{ addr: pool.out(s), len }], [{ addr: pool.in(s), len: SLOT }]);
      k++;
    }
    if (k > 0) {
      const added = dq.submit();
      if (added !== k) throw new Error(`submit added ${added} of ${k} staged requests`);
    }
    return k;
  }

  /** Reclaims used buffers and checks each. Returns how many. */
  reclaim() {
    const { dq, pool, u8 } = this;
    const n = dq.getUsed();
    for (let i = 0; i < n; i++) {
      const seq = dq.usedToken(i);
      if (seq !== this.done) throw new Error(`used token ${seq}, expected ${this.done} (the device completes in order)`);
      const s = pool.slotOf[seq];
      if (s === undefined || s < 0) throw new Error(`used token ${seq} is not in flight`);
      const bad = checkReply(u8, pool.in(s), seq, dq.usedLen(i));
      if (bad) throw new Error(bad);
      pool.slotOf[seq] = -1;
      pool.free.push(s);
      this.done++;
    }
    return n;
  }

  /** Checks the end state: everything back, ring empty. */
  finish() {
    const { dq } = this;
    if (this.done !== this.total) throw new Error(`${this.done}/${this.total} requests completed`);
    if (dq.numFree !== dq.size || dq.inFlight !== 0) throw new Error(`ring not empty at the end: numFree ${dq.numFree}, inFlight ${dq.inFlight}`);
    if (dq.stats.chains !== this.total || dq.stats.used !== this.total) throw new Error(`driver stats ${JSON.stringify(dq.stats)}`);
    this.pool.release();
  }
}

function deadlineCheck(start, what) {
  return (progress) => {
    if (performance.now() - start > RUN_TIMEOUT_MS) throw new Error(`${what} timed out after ${RUN_TIMEOUT_MS} ms (${progress})`);
  };
}

/** (1) Driver and device in this thread, on an unshared memory. */
function runLocal(layout, size, total) {
  const start = performance.now();
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 16 });
  if (p.shared) throw new Error('unshared platform reports shared memory');
  const features = ringFeatures({ packed: layout === 'packed' });
  const dq = new DriverQueue(p, { size, features, batch: 16 });
  const dev = new DeviceQueue(p, { size, features, ...dq.addresses });
  const req = new Requests(p, dq, total);
  const check = deadlineCheck(start, `local ${layout} run`);
  // Every round moves at least one request unless something is wrong: bound the rounds too.
  for (let round = 0; req.done < total; round++) {
    check(`${req.done}/${total} done`);
    if (round > 4 * total) throw new Error(`local ${layout} run made no progress: ${req.done}/${total} done`);
    req.add();
    dq.kickPrepare(); // same thread: the decision is exercised, the kick itself is implicit
    const n = dev.pop();
    for (let i = 0; i < n; i++) {
      const data = dev.read(i);
      if (data.length !== dev.readBytes(i) || dev.writeBytes(i) !== SLOT) throw new Error(`chain ${i}: ${data.length} readable, ${dev.writeBytes(i)} writable bytes`);
      dev.write(i, reply(data));
    }
    dev.pushPopped(n);
    dev.needCall();
    req.reclaim();
  }
  req.finish();
  if (dev.stats.chains !== total || dev.stats.used !== total) throw new Error(`device stats ${JSON.stringify(dev.stats)}`);
  return { layout, size, chains: total, ms: Math.round(performance.now() - start) };
}

/** Messages from the device worker, awaited by type with a timeout; worker failures surface here. */
class Inbox {
  constructor(worker) {
    this.queue = [];
    this.failure = null;
    this.wake = null;
    worker.onmessage = (e) => {
      if (e.data?.type === 'error') this.failure ??= new Error(`device worker: ${e.data.message}`);
      else this.queue.push(e.data);
      this.wake?.();
    };
    worker.onerror = (e) => {
      e.preventDefault();
      this.failure ??= new Error(`device worker error: ${e.message} (${e.filename}:${e.lineno})`);
      this.wake?.();
    };
    worker.onmessageerror = () => {
      this.failure ??= new Error('device worker: a message could not be deserialized');
      this.wake?.();
    };
  }

  /** Throws what the worker reported, if anything. */
  check() {
    if (this.failure) throw this.failure;
  }

  /** The next message of `type` (id-matched if given), or throws after `ms`. */
  async next(type, ms, id) {
    const end = performance.now() + ms;
    for (;;) {
      this.check();
      const i = this.queue.findIndex((m) => m.type === type && (id === undefined || m.id === id));
      if (i >= 0) return this.queue.splice(i, 1)[0];
      const left = end - performance.now();
      if (left <= 0) throw new Error(`no '${type}' message from the device worker within ${ms} ms`);
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, Math.min(left, 100));
      });
      this.wake = null;
    }
  }
}

/** Rings a doorbell word: bump it and wake whoever sleeps on it. */
function ring(i32, off) {
  Atomics.add(i32, off >> 2, 1);
  Atomics.notify(i32, off >> 2);
}

/** (2) Driver here, device in the worker, on the shared platform. */
async function runWorker(p, inbox, worker, bells, cfg, id) {
  const start = performance.now();
  const { layout, size, eventIdx } = cfg;
  const total = WORKER_CHAINS;
  const features = ringFeatures({ packed: layout === 'packed', eventIdx });
  const dq = new DriverQueue(p, { size, features, batch: 32 });
  const req = new Requests(p, dq, total, layout === 'packed' ? PACKED_RESERVE : 0);
  const i32 = p.i32;
  worker.postMessage({
    type: 'serve', id, size, features, addresses: dq.addresses, kick: bells.kick, call: bells.call,
    // The device gives up a little earlier, so its own report reaches this side first.
    total, timeoutMs: RUN_TIMEOUT_MS - 2_000, waitMs: WAIT_MS,
  });
  await inbox.next('serving', 5_000, id);
  const name = `worker ${layout}${eventIdx ? '+event_idx' : ''} run`;
  const check = deadlineCheck(start, name);
  let kicks = 0; // doorbell rings sent
  let wakeups = 0; // waits ended by a call
  dq.disableCb(); // polling while busy
  while (req.done < total) {
    check(`${req.done}/${total} done, ${dq.inFlight} in flight`);
    inbox.check();
    const added = req.add();
    if (added > 0 && dq.kickPrepare()) {
      ring(i32, bells.kick);
      kicks++;
    }
    // Progress: go on polling (the worker's messages get through when this thread next
    // sleeps below, which it does once the device falls behind or the run ends).
    if (req.reclaim() > 0 || added > 0) continue;
    // Nothing to add, nothing used: ask for a call, re-check, then sleep on the call word.
    const seq = Atomics.load(i32, bells.call >> 2);
    if (!dq.enableCb()) {
      dq.disableCb();
      continue;
    }
    const w = Atomics.waitAsync(i32, bells.call >> 2, seq, WAIT_MS);
    const r = w.async ? await w.value : w.value;
    dq.disableCb();
    if (r === 'ok' || r === 'not-equal') wakeups++;
    // The device calls right after publishing used buffers: used buffers after a whole
    // WAIT_MS with the call word unchanged mean the device skipped a call the driver asked for.
    else if (dq.usedPending() > 0 && Atomics.load(i32, bells.call >> 2) === seq) {
      throw new Error(`${name}: lost call: used buffers waited ${WAIT_MS} ms without a notification ` +
        `(${req.done}/${total} done, ${dq.inFlight} in flight, driver state ${JSON.stringify(dq.stats)})`);
    }
  }
  const done = await inbox.next('done', 5_000, id);
  req.finish();
  dq.destroy();
  if (done.served !== total || done.stats.chains !== total || done.stats.used !== total) {
    throw new Error(`${name}: device report ${JSON.stringify(done)}`);
  }
  return {
    layout, eventIdx, size, chains: total, kicks, calls: done.calls,
    driverWakeups: wakeups, deviceWakeups: done.wakeups,
    ms: Math.round(performance.now() - start),
  };
}

/** What the page found; filled as runs complete, so a failure still shows how far it got. */
const details = { crossOriginIsolated: globalThis.crossOriginIsolated, local: [], worker: [], drivers: null };

/**
 * The control plane and drivers in the browser: a vdpasim_net device through the bus and
 * virtio_vdpa (loopback frames), and a vdpasim_blk device over an IndexedDB backend.
 */
async function runDrivers() {
  const p = Platform.create({ ramSize: 16 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  bus.devAdd('vdpasim_net', 'n0', { mac: '02:00:00:00:00:01' });
  const net = virtio.net('n0');
  const frames = [];
  net.onFrame((f) => frames.push(f[20]));
  for (let i = 0; i < 10; i++) net.send(new Uint8Array(100).fill(i));
  await new Promise((r) => setTimeout(r, 0));
  const dbName = `vdpa-wasm-test-${Date.now()}`;
  const backend = await IdbBackend.open(dbName, { sectors: 2048, chunkSectors: 16 });
  try {
    bus.addDevice(new VdpaSimBlk(p, { name: 'b0', backend }));
    const blk = virtio.blk('b0');
    const data = new Uint8Array(12 * 512).map((_, i) => (i * 13) & 255);
    await Promise.all([blk.write(100, data), blk.write(3, data.subarray(0, 512))]);
    const back = new Uint8Array(data.length);
    await blk.read(100, back);
    const three = new Uint8Array(512);
    await blk.read(3, three);
    const never = new Uint8Array(1024);
    await blk.read(2000, never);
    await blk.flush();
    return {
      frames,
      blkData: back.every((b, i) => b === data[i]) && three.every((b, i) => b === data[i]),
      zeros: never.every((b) => b === 0),
      id: await blk.getId(),
      capacity: blk.capacity,
    };
  } finally {
    backend.close();
    indexedDB.deleteDatabase(dbName);
  }
}

async function main() {
  if (globalThis.crossOriginIsolated !== true) throw new Error('page is not cross-origin isolated (COOP/COEP headers missing?)');
  if (typeof Atomics.waitAsync !== 'function') throw new Error('Atomics.waitAsync is not available');

  details.local.push(runLocal('split', 64, LOCAL_CHAINS));
  details.local.push(runLocal('packed', 50, LOCAL_CHAINS)); // not a power of two: packed allows it
  details.drivers = await runDrivers();

  const p = Platform.create({ shared: true, ramSize: 1 << 20 });
  if (!(p.memory.buffer instanceof SharedArrayBuffer) || !p.shared) throw new Error('shared platform has no SharedArrayBuffer');
  // Two doorbell words in private memory, a cache line apart: page → device, device → page.
  const bellBase = p.priv.alloc(128, 64);
  const bells = { kick: bellBase, call: bellBase + 64 };
  p.i32.fill(0, bellBase >> 2, (bellBase + 128) >> 2);

  const worker = new Worker(new URL('./device-worker.js', import.meta.url), { type: 'module', name: 'vdpa-device' });
  try {
    const inbox = new Inbox(worker);
    worker.postMessage({ type: 'init', handle: p.handle({ priv: 65536, ram: 65536 }) });
    const ready = await inbox.next('ready', 10_000);
    if (ready.shared !== true) throw new Error('the worker did not attach a shared memory');
    const configs = [
      { layout: 'split', size: 128, eventIdx: false },
      { layout: 'split', size: 128, eventIdx: true },
      { layout: 'packed', size: 100, eventIdx: false },
      { layout: 'packed', size: 100, eventIdx: true },
    ];
    for (const [id, cfg] of configs.entries()) details.worker.push(await runWorker(p, inbox, worker, bells, cfg, id));
  } finally {
    worker.terminate();
  }
}

main().then(
  () => {
    window.__result = { ok: true, details };
  },
  (err) => {
    details.error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    window.__result = { ok: false, details };
  },
);
