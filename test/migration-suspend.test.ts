// The SUSPEND status bit as VIRTIO 1.4 §3.4 "Device Suspend" has it, on both simulated devices
// and through our drivers: only after DRIVER_OK and with VIRTIO_F_SUSPEND; the device finishes
// requests in flight, then presents SUSPEND = 1 and DRIVER_OK = 0; while suspended no
// notification, no virtqueue access, no config change (a change meanwhile is notified on
// resume); DRIVER_OK resumes; a device that cannot suspend sets DEVICE_NEEDS_RESET.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VirtioError, Code, VdpaSimNet, featureBit, VIRTIO_F_SUSPEND, VIRTIO_CONFIG_S_SUSPEND, VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK, VDPASIM_NET_FEATURES,
} from '../src/index.ts';
import { netDev, netDriver, blkDev, blkDriver, SharedDisk, turn } from './helpers/migration.ts';
import { eth } from './helpers/net.ts';

const isCode = (code: string) => (e: unknown) => e instanceof VirtioError && e.code === code;
const S_RUN = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

test('SUSPEND needs VIRTIO_F_SUSPEND negotiated and DRIVER_OK', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  // Not offered: our driver refuses to suspend; a driver that writes bit 4 anyway (it MUST NOT,
  // §2.1.1) suspends nothing: the device keeps running, the bit is kept as before SUSPEND existed.
  const plain = new VdpaSimNet(p, { name: 'plain', deviceFeatures: VDPASIM_NET_FEATURES });
  const { drv: d0 } = netDriver(p, plain, 'split');
  assert.equal(plain.getDriverFeatures() & featureBit(VIRTIO_F_SUSPEND), 0n);
  await assert.rejects(d0.suspend(), isCode(Code.Unsupported));
  assert.equal(plain.getStatus(), S_RUN);
  plain.setStatus(S_RUN | VIRTIO_CONFIG_S_SUSPEND);
  assert.equal(plain.running, true);
  assert.equal(plain.isSuspended, false);
  // Offered and negotiated, but before DRIVER_OK.
  const dev = netDev(p);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  dev.setDriverFeatures(dev.getDeviceFeatures());
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  assert.throws(() => dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_SUSPEND), isCode(Code.FailedPrecondition));
  assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_SUSPEND, 0);
});

for (const layout of ['split', 'packed'] as const) {
  test(`${layout} net: suspended = SUSPEND 1 / DRIVER_OK 0, no ring access, no notification, config change deferred to resume`, async () => {
    const p = Platform.create({ ramSize: 8 << 20 });
    const dev = netDev(p);
    const { drv } = netDriver(p, dev, layout);
    const got: Uint8Array[] = [];
    drv.onFrame((f) => got.push(f));
    drv.send(eth(64, 1));
    await turn();
    assert.equal(got.length, 1);
    await drv.suspend();
    const st = dev.getStatus();
    assert.equal(st & VIRTIO_CONFIG_S_SUSPEND, VIRTIO_CONFIG_S_SUSPEND);
    assert.equal(st & VIRTIO_CONFIG_S_DRIVER_OK, 0);
    // No virtqueue access: a kick pops nothing; frames from the wire are not delivered.
    const stats = { ...dev.pairStats[0]! };
    const chains = dev.getVendorVqStats(1).stats;
    drv.send(eth(64, 2));
    dev.kickVq(1);
    assert.equal(dev.process(), 0);
    assert.deepEqual(dev.getVendorVqStats(1).stats, chains);
    assert.equal(dev.deliver([eth(64, 3)]), 0);
    assert.equal(dev.pairStats[0]!.txPackets, stats.txPackets);
    await turn();
    assert.equal(got.length, 1, 'no used buffer, no notification while suspended');
    // No config change while suspended: the link change waits, with its notification.
    const gen = dev.getGeneration();
    const links: boolean[] = [];
    drv.addEventListener('link', (e) => links.push((e as CustomEvent<boolean>).detail));
    dev.setLink(false);
    assert.equal(dev.linkUp, true);
    assert.equal(dev.getGeneration(), gen);
    assert.deepEqual(links, []);
    // Suspending again is a no-op; clearing SUSPEND without DRIVER_OK is refused.
    await drv.suspend();
    assert.throws(() => dev.setStatus(st & ~VIRTIO_CONFIG_S_SUSPEND), isCode(Code.FailedPrecondition));
    // The vdpa resume op does not undo the driver's SUSPEND.
    assert.throws(() => dev.resume(), isCode(Code.FailedPrecondition));
    // Resume: DRIVER_OK; SUSPEND reads 0; the deferred change lands with one notification; the
    // frame queued meanwhile goes out.
    await drv.resume();
    assert.equal(dev.getStatus(), S_RUN);
    assert.equal(dev.linkUp, false);
    assert.equal(dev.getGeneration(), gen + 1);
    assert.deepEqual(links, [false]);
    await turn();
    assert.equal(dev.pairStats[0]!.txPackets, stats.txPackets + 1);
  });

  test(`${layout} blk: suspend waits for requests in flight, which complete; SUSPEND reads 1 only then`, async () => {
    const p = Platform.create({ ramSize: 8 << 20 });
    const disk = new SharedDisk(256);
    const dev = blkDev(p, disk);
    const { drv } = blkDriver(p, dev, layout);
    disk.hold = true;
    const data = new Uint8Array(4096).fill(7);
    const w = drv.write(8, data);
    const r = drv.read(0, new Uint8Array(512));
    await turn();
    assert.equal(dev.inFlight, 2);
    const s = drv.suspend();
    await turn();
    assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_SUSPEND, 0, 'still finishing what it must');
    assert.ok(dev.isSuspending);
    // A request submitted now is not taken.
    const late = drv.read(16, new Uint8Array(512));
    await turn();
    assert.equal(dev.inFlight, 2);
    disk.release();
    await s;
    await Promise.all([w, r]);
    assert.equal(dev.getStatus() & (VIRTIO_CONFIG_S_SUSPEND | VIRTIO_CONFIG_S_DRIVER_OK), VIRTIO_CONFIG_S_SUSPEND);
    assert.equal(dev.inFlight, 0);
    assert.deepEqual(disk.ops, { read: 1, write: 1, flush: 0 });
    await drv.resume();
    await late;
    assert.deepEqual(disk.ops, { read: 2, write: 1, flush: 0 });
    assert.deepEqual(disk.data.subarray(8 * 512, 8 * 512 + 4096), data);
  });
}

test('blk: a backend that never answers → the device cannot suspend → DEVICE_NEEDS_RESET', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const disk = new SharedDisk(64);
  const dev = blkDev(p, disk, undefined, 20);
  const { drv } = blkDriver(p, dev, 'split');
  disk.hold = true;
  const r = drv.read(0, new Uint8Array(512));
  r.catch(() => {});
  await turn();
  await assert.rejects(drv.suspend(), isCode(Code.FailedPrecondition));
  assert.ok(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_SUSPEND, 0);
  // vdpa op path, same bound.
  const dev2 = blkDev(p, disk, undefined, 20);
  const { drv: drv2 } = blkDriver(p, dev2, 'split');
  const r2 = drv2.read(0, new Uint8Array(512));
  r2.catch(() => {});
  await turn();
  await assert.rejects(dev2.suspendDrained(), isCode(Code.FailedPrecondition));
  assert.ok(dev2.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  disk.release();
});

test('vdpa suspend/resume ops keep Linux semantics: immediate, DRIVER_OK stays, vq state settable while suspended', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const dev = netDev(p);
  netDriver(p, dev, 'split');
  dev.suspend();
  assert.equal(dev.getStatus(), S_RUN);
  const st = dev.getVqState(0);
  dev.setVqState(0, st);
  dev.resume();
  assert.throws(() => dev.resume(), isCode(Code.FailedPrecondition));
});

test('a device its driver suspended migrates suspended: the destination presents SUSPEND until the driver resumes it', async () => {
  const { migrate } = await import('../src/index.ts');
  const p = Platform.create({ ramSize: 8 << 20 });
  const disk = new SharedDisk(256);
  const src = blkDev(p, disk);
  const { slot, drv } = blkDriver(p, src, 'packed');
  await drv.write(0, new Uint8Array(512).fill(3));
  await drv.suspend();
  const queued = drv.read(0, new Uint8Array(512)); // waits in the ring
  await turn();
  const dst = blkDev(p, disk);
  await migrate({ source: src, destination: dst, switchover: (d) => slot.switchTo(d) });
  assert.equal(dst.getStatus() & (VIRTIO_CONFIG_S_SUSPEND | VIRTIO_CONFIG_S_DRIVER_OK), VIRTIO_CONFIG_S_SUSPEND);
  assert.equal(disk.ops.read, 0);
  await drv.resume();
  const buf = new Uint8Array(512);
  await queued;
  await drv.read(0, buf);
  assert.deepEqual(buf, new Uint8Array(512).fill(3));
  assert.equal(disk.ops.read, 2);
  assert.equal(dst.getStatus(), S_RUN);
});

test('the driver asks for SUSPEND while the VMM has the device stopped: answers held meanwhile go out on resume, then SUSPEND', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const disk = new SharedDisk(64);
  const dev = blkDev(p, disk);
  const { drv } = blkDriver(p, dev, 'split');
  disk.hold = true;
  const r = drv.read(0, new Uint8Array(512));
  await turn();
  dev.suspend(); // the VMM (vhost semantics): immediate
  disk.release();
  while (disk.pending > 0) await turn();
  assert.equal(dev.heldCompletions, 1);
  const s = drv.suspend();
  await turn();
  assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_SUSPEND, 0);
  dev.resume(); // the VMM lets it run: the held answer completes, then the device suspends
  await s;
  await r;
  assert.equal(dev.getStatus() & (VIRTIO_CONFIG_S_SUSPEND | VIRTIO_CONFIG_S_DRIVER_OK), VIRTIO_CONFIG_S_SUSPEND);
  await drv.resume();
  assert.equal(dev.getStatus(), S_RUN);
});

test('FAILED may be written while suspended; a second suspend request while one is in progress is refused', async () => {
  const p = Platform.create({ ramSize: 8 << 20 });
  const disk = new SharedDisk(64);
  const dev = blkDev(p, disk);
  const { drv } = blkDriver(p, dev, 'split');
  disk.hold = true;
  const r = drv.read(0, new Uint8Array(512));
  await turn();
  const s = dev.suspendDrained();
  await assert.rejects(dev.suspendDrained(), isCode(Code.FailedPrecondition));
  disk.release();
  await s;
  await r;
  dev.resume();
  await drv.suspend();
  dev.setStatus(dev.getStatus() | 0x80);
  assert.equal(dev.getStatus() & 0x80, 0x80);
  assert.equal(dev.running, false);
});
