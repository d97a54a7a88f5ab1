// A VirtioPciFunction in this thread in front of devices that run in a device worker: the
// worker's vdpasim_net and vdpasim_blk are bound to vhost_vdpa there, each node is opened with
// RemoteVdpaBus.openVhostSync (ioctl bytes and IOTLB messages through a shared-memory mailbox,
// answered before the guest's register access returns), and the register-level guest driver of
// the PCI suite (test/helpers/pci-guest.ts) brings the function up over guest RAM in the shared
// platform memory. Kicks reach the worker as doorbells; interrupts come back as call doorbells
// that this thread raises with poll() (or awaits with callWaiter.waitAsync). Bad cases: a node
// already open or owned (EBUSY), a closed file (EBADF), the worker terminated under the function.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VirtioPciFunction, VirtioError, VhostError, Code, featureBit, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC,
  VHOST_VDPA_GET_STATUS, type PciInterruptSink, type RemoteVhostSyncFile, type VhostFileOps,
} from '../src/index.ts';
import { spawnDeviceWorker, type DeviceWorker } from '../src/node.ts';
import * as C from '../src/pci/constants.ts';
import { Guest, S_DRIVER_OK } from './helpers/pci-guest.ts';
import { eth } from './helpers/net.ts';
import { until } from './helpers/until.ts';

const GUEST_RAM = 4 << 20;

interface Irq {
  msi: number[];
  intx: boolean[];
}

/** A shared platform, a device worker on it, and guest RAM carved from this side's RAM arena. */
async function world(syncTimeoutMs = 5000) {
  const platform = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w = await spawnDeviceWorker({ platform, syncTimeoutMs });
  const ramOffset = platform.ram.alloc(GUEST_RAM, 4096);
  const guestMemory = [{ gpa: 0, size: GUEST_RAM, offset: ramOffset }];
  const irq: Irq = { msi: [], intx: [] };
  const interrupts: PciInterruptSink = { msi: (_lo, _hi, _data, v) => irq.msi.push(v), setIntx: (level) => irq.intx.push(level) };
  /** Adds `name` in the worker, binds it to vhost_vdpa there and opens its node synchronously. */
  const open = async (mgmtdev: string, name: string): Promise<RemoteVhostSyncFile> => {
    await w.bus.devAdd(mgmtdev, name);
    return w.bus.openVhostSync((await w.bus.bind(name, 'vhost_vdpa'))!);
  };
  const fn = (file: VhostFileOps, msixVectors?: number) => new VirtioPciFunction(platform, file, { guestMemory, interrupts, msixVectors });
  const guest = (f: VirtioPciFunction) => new Guest(f, platform.memory, ramOffset);
  return { platform, w, irq, open, fn, guest };
}

/** Polls the function's call doorbells (the emulator loop's part) until `cond()`. */
const pollUntil = (f: VirtioPciFunction, cond: () => boolean, what: string) => until(() => {
  f.poll();
  return cond();
}, 5000, what);

describe('a PCI function in front of a device worker (openVhostSync)', () => {
  let s: Awaited<ReturnType<typeof world>>;
  let w: DeviceWorker;
  before(async () => {
    s = await world();
    w = s.w;
  });
  after(() => w.close());

  test('vdpasim_blk: probe, FEATURES_OK, queue enabled, sectors written and read back byte for byte, INTx raised by poll()', async () => {
    const file = await s.open('vdpasim_blk', 'blk0');
    const ops0 = (await w.bus.stats()).syncOps;
    const blk = s.fn(file, 0);
    const g = s.guest(blk);
    g.probe();
    assert.equal(g.msixCap, 0);
    assert.equal(blk.description.deviceId, 0x1042);
    assert.equal(g.negotiate(featureBit(VIRTIO_F_VERSION_1)), featureBit(VIRTIO_F_VERSION_1));
    const capacity = g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, 0, 4) + g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, 4, 4) * 2 ** 32;
    assert.equal(capacity, 8192, 'virtio_blk_config.capacity read through VHOST_VDPA_GET_CONFIG in the worker');
    g.setupQueue(0, 16);
    g.addStatus(S_DRIVER_OK);
    assert.ok(g.status & S_DRIVER_OK);
    assert.ok((await w.bus.stats()).syncOps > ops0 + 10, 'the bring-up crossed the mailbox');

    const data = g.alloc(4 * 512);
    const want = Uint8Array.from({ length: 4 * 512 }, (_, i) => (i * 31 + 7) & 0xff);
    g.bytes(data, want.length).set(want);
    const st1 = g.blkRequest(1, 10, data, want.length);
    // The device completes in the worker and rings the call doorbell (after its pass, so the
    // status byte lands first: wait for the ring, which moves the function's waker word);
    // nothing in this thread raises the interrupt until the emulator polls.
    const waker = blk.callWaiter.addr >> 2;
    const rung = Atomics.load(s.platform.i32, waker);
    g.kick(0);
    await until(() => Atomics.load(s.platform.i32, waker) !== rung, 5000, 'the call doorbell');
    assert.equal(g.bytes(st1, 1)[0], 0, 'VIRTIO_BLK_S_OK');
    assert.deepEqual(s.irq.intx, [], 'no interrupt before poll()');
    assert.ok(blk.poll() >= 1);
    assert.deepEqual(s.irq.intx, [true], 'INTA# asserted by poll()');
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1), C.VIRTIO_PCI_ISR_QUEUE);
    assert.deepEqual(s.irq.intx, [true, false]);
    assert.equal(g.used(0).length, 1);

    const back = g.alloc(4 * 512);
    g.bytes(back, 4 * 512).fill(0);
    const st2 = g.blkRequest(0, 10, back, 4 * 512);
    g.kick(0);
    await pollUntil(blk, () => s.irq.intx.length === 3, 'the read interrupt');
    assert.equal(g.bytes(st2, 1)[0], 0);
    assert.equal(g.used(0).length, 1);
    assert.deepEqual(Uint8Array.from(g.bytes(back, 4 * 512)), want, 'the sectors came back');
    assert.equal(blk.backendErrors, 0);
    assert.equal(blk.badAccesses, 0);
    blk.close();
    assert.equal(file.isOpen, false);
  });

  test('vdpasim_net: MAC from device config, a frame out (tx) and back in (rx) byte for byte, MSI-X vectors by poll() and callWaiter.waitAsync()', async () => {
    const file = await s.open('vdpasim_net', 'net0');
    const net = s.fn(file);
    const g = s.guest(net);
    g.probe();
    g.enableMsix();
    const want = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC);
    assert.equal(g.negotiate(want), want);
    const mac = Array.from({ length: 6 }, (_, i) => g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, i, 1));
    assert.deepEqual(mac, Array.from(file.getConfig(0, 6)));
    g.setupQueue(0, 64, 1);
    g.setupQueue(1, 64, 2);
    g.addStatus(S_DRIVER_OK);
    const rx = g.alloc(2048);
    const head = g.add(0, [], [{ gpa: rx, len: 2048 }]);
    g.kick(0);
    const out = eth(142, 7);
    g.sendFrame(1, out);
    s.irq.msi.length = 0;
    g.kick(1);
    // The device loops the frame back: rx and tx vectors, raised when the emulator polls.
    await pollUntil(net, () => s.irq.msi.includes(1) && s.irq.msi.includes(2), 'rx and tx vectors');
    const used = g.used(0);
    assert.deepEqual(used, [{ id: head, len: 12 + out.length }]);
    assert.deepEqual(Uint8Array.from(g.bytes(rx + 12, out.length)), out, 'the frame came back in');
    assert.equal(g.used(1).length, 1, 'the frame went out');

    // An emulator that sleeps instead of polling: callWaiter.waitAsync() wakes on the call doorbell.
    const rx2 = g.alloc(2048);
    g.add(0, [], [{ gpa: rx2, len: 2048 }]);
    g.kick(0);
    s.irq.msi.length = 0;
    const again = eth(90, 8);
    g.sendFrame(1, again);
    g.kick(1);
    const end = Date.now() + 5000;
    while (!s.irq.msi.includes(1) && Date.now() < end) await net.callWaiter.waitAsync(1000);
    assert.ok(s.irq.msi.includes(1), `rx vector by waitAsync (${s.irq.msi.join(',')})`);
    assert.deepEqual(Uint8Array.from(g.bytes(rx2 + 12, again.length)), again);
    assert.equal(net.backendErrors, 0);
    net.close();
  });

  test('a node already open is EBUSY, as is one already owned (the function refuses it, leaving it usable)', async () => {
    await w.bus.devAdd('vdpasim_net', 'net1');
    const node = (await w.bus.bind('net1', 'vhost_vdpa'))!;
    const file = await w.bus.openVhostSync(node);
    await assert.rejects(w.bus.openVhostSync(node), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBUSY');
    file.setOwner();
    assert.throws(() => s.fn(file), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBUSY');
    assert.throws(() => file.setOwner(), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBUSY', 'the same errno as an in-thread node');
    assert.equal(file.getDeviceId(), 1, 'the node still answers');
    file.close();
  });

  test('a closed file is EBADF, and its node opens again at once', async () => {
    await w.bus.devAdd('vdpasim_blk', 'blk1');
    const node = (await w.bus.bind('blk1', 'vhost_vdpa'))!;
    const file = await w.bus.openVhostSync(node);
    const blk = s.fn(file);
    blk.close(); // closes the file: the worker resets the device and frees the node
    file.close(); // idempotent
    assert.throws(() => file.getStatus(), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBADF');
    assert.deepEqual(file.ioctlRaw(VHOST_VDPA_GET_STATUS), { ret: -9, out: null });
    assert.throws(() => file.iotlb({ type: 2, iova: 0, size: 4096 }), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBADF');
    assert.deepEqual(await w.bus.vhostNodes().then((n) => n.find((x) => x.name === node)?.open), false);
    const again = await w.bus.openVhostSync(node);
    assert.equal(again.getStatus(), 0);
    again.close();
  });
});

test('the device worker terminated under the function: accesses fail typed (backendErrors), nothing thrown into the emulator, nothing hangs', async () => {
  const timeout = 1500; // far above any pass here: "waited for the timeout" stays distinguishable on a loaded machine
  const s = await world(timeout);
  try {
    const file = await s.open('vdpasim_blk', 'blk0');
    const idle = await s.open('vdpasim_net', 'net0'); // no call in flight when the worker goes
    const blk = s.fn(file, 0);
    const g = s.guest(blk);
    g.probe();
    g.bringUp(featureBit(VIRTIO_F_VERSION_1), [{ size: 16 }]);
    const data = g.alloc(512);
    g.bytes(data, 512).fill(0x5c);
    const st = g.blkRequest(1, 1, data, 512);
    g.kick(0);
    await pollUntil(blk, () => s.irq.intx.includes(true), 'the write interrupt');
    assert.equal(g.bytes(st, 1)[0], 0);
    assert.equal(blk.backendErrors, 0);

    // Terminated with this thread about to block on it: a call either got its answer first or
    // ends after syncTimeoutMs with Cancelled (this thread cannot see the exit while it waits).
    const gone = s.w.worker.terminate();
    const t0 = performance.now();
    for (let i = 0; i < 3 && blk.backendErrors === 0; i++) g.status;
    assert.ok(blk.backendErrors >= 1, 'a status read failed');
    assert.ok(performance.now() - t0 < 3 * timeout + 1000, `bounded by syncTimeoutMs (${Math.round(performance.now() - t0)} ms)`);
    await gone;
    assert.ok(file.deadReason instanceof VirtioError && file.deadReason.code === Code.Cancelled);
    // The idle file learns it from the worker's exit (the channel), without a call timing out.
    await until(() => idle.deadReason !== null, 5000, 'the idle file to die');
    const t2 = performance.now();
    assert.throws(() => idle.getFeatures(), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    assert.ok(performance.now() - t2 < timeout);
    idle.close();

    // Dead now: every access is answered at once, as a card whose backend failed.
    const errors = blk.backendErrors;
    const t1 = performance.now();
    assert.equal(g.status, 0, 'device_status reads 0');
    g.common(C.VIRTIO_PCI_COMMON_STATUS, 1, 0); // a reset: refused by the node, counted
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, 0, 4), 0xffffffff, 'device config reads all ones');
    g.kick(0); // a notify rings a doorbell nobody watches: harmless
    assert.equal(blk.poll(), 0);
    assert.ok(performance.now() - t1 < timeout, 'no call waited for the timeout');
    assert.equal(blk.backendErrors, errors + 3);
    assert.throws(() => file.getStatus(), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    await assert.rejects(s.w.bus.openVhostSync('vhost-vdpa-0'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    blk.close(); // closing a function whose worker is gone neither throws nor waits
    assert.equal(file.isOpen, false);
  } finally {
    await s.w.close();
  }
});
