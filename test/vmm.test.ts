// The minimal VMM (issue 8 §3) in Node: the VMM in this thread, devices in a device worker bound
// to vhost_vdpa, the guest's driver side in a guest worker over guest RAM at a non-zero offset
// mapped by IOTLB UPDATE messages. Net pair on the switch and blk move real traffic, checked in
// the guest; the VMM thread takes no message during the data phase but each run's answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VirtioError, Code, VhostError, featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_EVENT_IDX, VIRTIO_NET_F_MAC,
  VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VHOST_GET_FEATURES, VHOST_SET_OWNER, VHOST_SET_VRING_ENDIAN, encodeVringState,
} from '../src/index.ts';
import { startVmm } from '../src/node.ts';
import type { GuestNetResult, GuestBlkResult } from '../src/vmm/guest.ts';

const NET = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_NET_F_MAC);
const BLK = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_F_EVENT_IDX);

test('VMM + device worker + guest worker: net pair both ways byte for byte, blk writes/reads vs a model, VMM idle in the data phase', async () => {
  const s = await startVmm();
  try {
    const { vmm, devices } = s;
    assert.ok(s.guest.ram.gpaBase > 0, 'guest-physical 0 is not memory offset 0');
    await devices.bus.devAdd('vdpasim_net', 'net1', { mac: '02:00:00:00:00:01' });
    await devices.bus.devAdd('vdpasim_net', 'net2', { mac: '02:00:00:00:00:02' });
    await devices.bus.switchConnect('net1');
    await devices.bus.switchConnect('net2');
    await devices.bus.devAdd('vdpasim_blk', 'blk0');
    const n1 = await vmm.attach('net1', NET, 2);
    const n2 = await vmm.attach('net2', NET, 2);
    const b0 = await vmm.attach('blk0', BLK, 1);
    assert.deepEqual([n1.node, n2.node, b0.node], ['vhost-vdpa-0', 'vhost-vdpa-1', 'vhost-vdpa-2']);
    assert.equal(n1.deviceId, VIRTIO_ID_NET);
    assert.equal(b0.deviceId, VIRTIO_ID_BLOCK);
    assert.equal(n1.features, NET);
    const mac1 = await vmm.config('net1', 0, 6);
    const mac2 = await vmm.config('net2', 0, 6);
    assert.deepEqual([...mac1], [2, 0, 0, 0, 0, 1]);
    const capacity = Number(new DataView((await vmm.config('blk0', 0, 8)).buffer).getBigUint64(0, true));
    assert.equal(capacity, 8192);

    // Data phase: count what reaches the VMM thread.
    let vmmMessages = 0;
    const count = () => vmmMessages++;
    devices.worker.on('message', count);
    s.guest.worker.on('message', count);
    const host0 = await devices.bus.stats();
    vmmMessages = 0;
    const net = (await s.guest.channel.request('net', 'net1', 'net2', mac1, mac2, 300, 5)) as GuestNetResult;
    const blk = (await s.guest.channel.request('blk', 'blk0', 200, capacity, 9)) as GuestBlkResult;
    const during = vmmMessages;
    devices.worker.off('message', count);
    s.guest.worker.off('message', count);
    const host1 = await devices.bus.stats();

    assert.deepEqual(net, { sent: 300, received: [300, 300], mismatches: 0 });
    assert.equal(blk.writes, 200);
    assert.equal(blk.reads, 64);
    assert.equal(blk.mismatches, 0);
    assert.equal(blk.errors, 0);
    // The VMM thread got the two answers and nothing else; the device worker was driven by
    // doorbells only (no request crossed the channel or the mailbox during the data phase).
    assert.equal(during, 2, `messages to the VMM thread during the data phase: ${during}`);
    assert.equal(host1.syncOps, host0.syncOps);
    assert.ok(host1.kicks > host0.kicks, 'kicks arrived as doorbells');
    const g = (await s.guest.channel.request('counters')) as { kicks: number; sleeps: number };
    assert.ok(g.kicks > 0);
  } finally {
    await s.close();
  }
});

test('vhost nodes over the channel: one owner (EBUSY), Linux errno for unknown ioctls, a node-bound device is not opened remotely', async () => {
  const s = await startVmm();
  try {
    const bus = s.devices.bus;
    await bus.devAdd('vdpasim_net', 'net1');
    const node = await bus.bind('net1', 'vhost_vdpa');
    assert.equal(node, 'vhost-vdpa-0');
    assert.deepEqual(await bus.vhostNodes(), [{ name: 'vhost-vdpa-0', device: 'net1', open: false }]);
    const f = await bus.openVhost(node!);
    await assert.rejects(bus.openVhost(node!), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBUSY');
    await assert.rejects(bus.openVhost('vhost-vdpa-9'), (e: unknown) => e instanceof VhostError && e.errnoName === 'ENOENT');
    const feats = (await f.ioctl(VHOST_GET_FEATURES)) as Uint8Array;
    assert.equal(feats.length, 8);
    await assert.rejects(f.ioctl(VHOST_SET_VRING_ENDIAN, encodeVringState(0, 0)), (e: unknown) => e instanceof VhostError && e.errnoName === 'EPERM', 'no owner yet');
    await f.ioctl(VHOST_SET_OWNER);
    await assert.rejects(f.ioctl(VHOST_SET_VRING_ENDIAN, encodeVringState(0, 0)), (e: unknown) => e instanceof VhostError && e.errnoName === 'ENOTTY');
    const raw = await f.ioctlRaw(VHOST_GET_FEATURES, new Uint8Array(0));
    assert.equal(raw.ret, 0);
    await assert.rejects(bus.openDevice('net1'), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
    await f.close();
    const again = await bus.openVhost(node!); // closed: free again
    await again.close();
    await bus.bind('net1', 'remote_vdpa');
    const dev = await bus.openDevice('net1');
    assert.equal(dev.getDeviceId(), VIRTIO_ID_NET);
  } finally {
    await s.close();
  }
});

test('the device worker dies under the VMM: node requests reject with Cancelled, closing does not hang', async () => {
  const s = await startVmm();
  try {
    await s.devices.bus.devAdd('vdpasim_blk', 'blk0');
    const d = await s.vmm.attach('blk0', BLK, 1);
    await s.devices.worker.terminate();
    await assert.rejects(d.file.ioctl(VHOST_GET_FEATURES), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    await assert.rejects(s.devices.bus.openVhost('vhost-vdpa-0'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    await s.vmm.close();
  } finally {
    await s.close();
  }
});
