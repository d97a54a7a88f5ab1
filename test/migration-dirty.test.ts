// Dirty-page logging (assembly/dirty.ts, src/migration/dirty-log.ts): every page the device
// writes in guest RAM — rx buffers, used ring entries, blk read data and status bytes written
// later by the async path — is in the vhost-layout log; nothing is marked when logging is off;
// pre-copy with the log ends with an exact copy of what the device wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, DirtyLog, VHOST_LOG_PAGE, migrate, VirtioError, Code, DriverQueue, DeviceQueue, ringFeatures } from '../src/index.ts';
import { netDev, netDriver, blkDev, blkDriver, SharedDisk, turn } from './helpers/migration.ts';
import { eth } from './helpers/net.ts';

/** Pages of [base, base + size) whose bytes differ between `before` and the memory now. */
function changedPages(p: Platform, before: Uint8Array, base: number): number[] {
  const out: number[] = [];
  for (let pg = 0; pg * VHOST_LOG_PAGE < before.length; pg++) {
    const o = pg * VHOST_LOG_PAGE;
    const now = p.u8.subarray(base + o, base + o + VHOST_LOG_PAGE);
    const was = before.subarray(o, o + VHOST_LOG_PAGE);
    for (let i = 0; i < VHOST_LOG_PAGE; i++) if (now[i] !== was[i]) { out.push(pg); break; }
  }
  return out;
}

function subset(a: number[], b: number[], what: string): void {
  const s = new Set(b);
  const missing = a.filter((x) => !s.has(x));
  assert.deepEqual(missing, [], `${what}: written pages missing from the log`);
}

for (const layout of ['split', 'packed'] as const) {
  test(`${layout} net rx: every page the device writes is logged, in vhost's bit layout`, async () => {
    const p = Platform.create({ ramSize: 4 << 20 });
    const dev = netDev(p);
    dev.attachPort(() => {});
    netDriver(p, dev, layout);
    dev.setVqCb(0, null); // the driver does not reclaim: only the device writes below
    const log = new DirtyLog(p);
    log.start();
    log.collect();
    const before = p.u8.slice(p.ramBase, p.ramBase + p.ramSize);
    assert.equal(dev.deliver(Array.from({ length: 20 }, (_, i) => eth(200 + i * 50, i))), 20);
    const changed = changedPages(p, before, p.ramBase);
    assert.ok(changed.length >= 2, 'rx buffers and the used ring were written');
    const bits = log.snapshot();
    const logged = log.collect();
    subset(changed, logged, 'net rx');
    // vhost layout: page n is bit n % 8 of byte n / 8.
    for (const pg of logged) assert.ok(bits[pg >> 3]! & (1 << (pg & 7)));
    assert.equal(log.count, 0, 'collect clears');
    // Off: one untaken branch, nothing marked.
    log.stop();
    dev.deliver([eth(100, 1)]);
    assert.deepEqual(log.snapshot(), new Uint8Array(log.snapshot().length));
    log.destroy();
  });

  test(`${layout} blk async: data and status written when the backend answers are logged`, async () => {
    const p = Platform.create({ ramSize: 4 << 20 });
    const disk = new SharedDisk(256);
    disk.data.fill(0xab);
    const dev = blkDev(p, disk);
    const { drv } = blkDriver(p, dev, layout);
    const log = new DirtyLog(p);
    log.start();
    disk.hold = true;
    const reads = [0, 40, 100].map((s) => drv.read(s, new Uint8Array(8192)));
    await turn();
    assert.equal(dev.inFlight, 3);
    dev.setVqCb(0, null);
    log.collect();
    const before = p.u8.slice(p.ramBase, p.ramBase + p.ramSize);
    disk.release();
    while (dev.inFlight > 0) await turn();
    const changed = changedPages(p, before, p.ramBase);
    assert.ok(changed.length >= 3);
    subset(changed, log.collect(), 'blk answers');
    log.destroy();
    void reads;
  });
}

test('pre-copy with the log ends with an exact copy of guest RAM while the device writes it', async () => {
  const p = Platform.create({ ramSize: 4 << 20 });
  const dev = netDev(p);
  dev.attachPort(() => {});
  const { slot } = netDriver(p, dev, 'split', 256);
  dev.setVqCb(0, null);
  const shadow = new Uint8Array(p.ramSize);
  const dst = netDev(p);
  let k = 0;
  let exact = false;
  const rep = await migrate({
    source: dev, destination: dst, ram: { to: shadow }, maxDirtyPages: 0, maxRounds: 4,
    round: () => { dev.deliver(Array.from({ length: 8 }, () => eth(1000, k++ & 0xff))); },
    switchover: (d) => {
      // At switchover the copy must equal the source's RAM: everything written after the
      // full copy was logged and copied again. (After it, the destination owns the memory.)
      exact = p.u8.subarray(p.ramBase, p.ramBase + p.ramSize).every((b, i) => b === shadow[i]);
      slot.switchTo(d);
    },
  });
  assert.deepEqual(rep.pagesPerRound[0], p.ramSize / VHOST_LOG_PAGE);
  assert.ok(rep.pagesPerRound.slice(1).every((n) => n > 0), 'each round found the device writes');
  assert.equal(k, 32);
  assert.ok(exact, 'the copy equals guest RAM at switchover');
  // And the destination runs.
  assert.equal(dst.running, true);
  assert.equal(dst.deliver([eth(100, 1)]), 1);
});

test('one active log per platform; bad ranges are refused', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const a = new DirtyLog(p);
  const b = new DirtyLog(p);
  a.start();
  assert.throws(() => b.start(), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
  a.stop();
  b.start();
  b.destroy();
  a.destroy();
  assert.throws(() => new DirtyLog(p, { size: 100 }), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
});

test('IOVA ≠ GPA (a non-identity map): the log is indexed by where the bytes are, not by the IOVA', async () => {
  const { virtioInit, NET_SPLIT } = await import('./helpers/virtio-driver.ts');
  const p = Platform.create({ ramSize: 4 << 20 });
  const dev = netDev(p);
  dev.attachPort(() => {});
  const D = 2 ** 36; // IOVA of memory offset 0: far from any offset
  const { queues } = virtioInit(dev, p, {
    want: NET_SPLIT, dmaBase: D, noCallbacks: true,
    afterFeatures: () => dev.setMap(0, [{ iova: D + p.ramBase, size: p.ramSize, addr: p.ramBase }]),
  });
  const rx = queues[0]!;
  const buf = p.allocBuffer(16 * 2048, 4096);
  for (let k = 0; k < 16; k++) rx.stageOne(k, D + buf + k * 2048, 2048, true);
  rx.submit();
  const log = new DirtyLog(p);
  log.start();
  const before = p.u8.slice(p.ramBase, p.ramBase + p.ramSize);
  assert.equal(dev.deliver(Array.from({ length: 16 }, (_, i) => eth(1500, i))), 16);
  const changed = changedPages(p, before, p.ramBase);
  const logged = log.collect();
  subset(changed, logged, 'non-identity map');
  // The rx buffers' pages, by guest-physical address (offset - base), are all there.
  for (let pg = (buf - p.ramBase) >> 12; pg < (buf - p.ramBase + 16 * 2048) >> 12; pg++) assert.ok(logged.includes(pg), `page ${pg}`);
  assert.ok(logged.every((pg) => pg < log.pages));
  log.destroy();
});

test('a migration interrupted during pre-copy stops the log and leaves the source running', async () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  const dev = netDev(p);
  dev.attachPort(() => {});
  netDriver(p, dev, 'split');
  const dst = netDev(p);
  await assert.rejects(migrate({
    source: dev, destination: dst, ram: { to: new Uint8Array(p.ramSize) },
    round: () => { throw new VirtioError(Code.Cancelled, 'operator cancelled'); },
  }), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
  assert.equal(dev.running, true);
  assert.equal(dst.getStatus(), 0);
  // The log is off (another one may start) and the device still delivers.
  const log = new DirtyLog(p);
  log.start();
  log.destroy();
  assert.equal(dev.deliver([eth(100, 1)]), 1);
});

for (const layout of ['split', 'packed'] as const) {
  test(`${layout} fused serve: the used ring it writes is logged; its sink only when it lies in guest RAM`, () => {
    const p = Platform.create({ ramSize: 2 << 20 });
    const features = ringFeatures({ packed: layout === 'packed' });
    const drv = new DriverQueue(p, { size: 64, features });
    const dev = new DeviceQueue(p, { size: 64, features, ...drv.addresses });
    const bufs = p.allocBuffer(16 * 64);
    const lens = p.priv.alloc(16 * 4, 8); // the device's own memory: not guest RAM
    const sink = p.allocBuffer(16 * 64); // inside guest RAM: logged like any device write
    const log = new DirtyLog(p);
    log.start();
    log.collect();
    const before = p.u8.slice(p.ramBase, p.ramBase + p.ramSize);
    for (let i = 0; i < 16; i++) drv.setBuf(i, i, bufs + i * 64, 64);
    assert.equal(drv.addBufs(16), 16);
    log.collect(); // the driver's own writes are not the device's
    const afterAdd = p.u8.slice(p.ramBase, p.ramBase + p.ramSize);
    assert.equal(dev.serve(16, sink, 64, lens), 16);
    const changed = changedPages(p, afterAdd, p.ramBase);
    assert.ok(changed.length >= 1, 'the sink (and the used ring, where it lies in RAM) written');
    const sinkPage = (sink - p.ramBase) >> 12;
    assert.ok(changed.includes(sinkPage));
    const logged = log.collect();
    subset(changed, logged, 'serve');
    assert.ok(logged.includes((Number(drv.addresses.deviceArea) - p.ramBase) >> 12), 'the used ring page');
    assert.notDeepEqual(before, afterAdd);
    // Off: serving marks nothing.
    log.stop();
    for (let i = 0; i < 16; i++) drv.setBuf(i, i, bufs + i * 64, 64);
    drv.reclaimUsed();
    assert.equal(drv.addBufs(16), 16);
    assert.equal(dev.serve(16, sink, 64, lens), 16);
    assert.deepEqual(log.snapshot(), new Uint8Array(log.snapshot().length));
    log.destroy();
  });
}
