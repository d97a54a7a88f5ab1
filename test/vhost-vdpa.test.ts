// The vhost_vdpa bus driver (src/drivers/vhost-vdpa.ts) against Linux drivers/vhost/vdpa.c:
// nodes and the single owner, each ioctl rule with its errno, backend features that follow the
// device's ops, IOTLB v1/v2 messages (batches, ASIDs, persistence), and full bring-ups of
// vdpasim_net and vdpasim_blk by ioctl bytes in one thread with traffic through the rings,
// the guest reaching RAM only through an IOTLB map that is not the identity.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VdpaSimNet, VhostVdpa, VhostError, VirtioError,
  DriverQueue, Doorbell, DoorbellWaiter, featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_NET_F_MAC, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VIRTIO_F_RING_PACKED,
  type VdpaDevice, type VdpaBusDriver,
} from '../src/index.ts';
import * as U from '../src/vhost/uapi.ts';
import { eth, tick } from './helpers/net.ts';
import { rng } from './helpers/builds.ts';

const S_ACK = 1;
const S_DRIVER = 2;
const S_DRIVER_OK = 4;
const S_FEATURES_OK = 8;
const NET_CFG_SIZE = 12;

function setup(o: { ram?: number } = {}) {
  const p = Platform.create({ ramSize: o.ram ?? 4 << 20, privateSize: 4 << 20 });
  const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 64));
  const vhost = new VhostVdpa(p);
  bus.registerDriver(vhost);
  return { p, bus, vhost };
}

/** Asserts that fn throws a VhostError (still a VirtioError) with errno `name` (and inner `detail`). */
function errno(fn: () => unknown, name: string, detail?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VhostError, `expected a VhostError, got ${String(e)}`);
    assert.ok(e instanceof VirtioError);
    assert.equal(e.errnoName, name, e.message);
    if (detail !== undefined) assert.equal(e.detail, detail, e.message);
    return true;
  });
}

const u64 = U.encodeU64;
const st = U.encodeVringState;

/** An opened, owned net node at ACK|DRIVER with `features` set and FEATURES_OK. */
function netAtFeaturesOk(features = featureBit(VIRTIO_F_VERSION_1)) {
  const s = setup();
  const dev = s.bus.devAdd('vdpasim_net', 'net0');
  const f = s.vhost.open(s.vhost.nodeOf('net0'));
  f.setOwner();
  f.setStatus(S_ACK);
  f.setStatus(S_ACK | S_DRIVER);
  f.setFeatures(features);
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
  assert.ok(f.getStatus() & S_FEATURES_OK);
  return { ...s, dev: dev as VdpaSimNet, f };
}

describe('nodes, binding and the single owner', () => {
  test('each bound device gets vhost-vdpa-N (smallest free minor); one open at a time; close resets', () => {
    const { bus, vhost } = setup();
    const net = bus.devAdd('vdpasim_net', 'net0');
    bus.devAdd('vdpasim_blk', 'blk0');
    assert.deepEqual(vhost.nodes, [
      { name: 'vhost-vdpa-0', device: 'net0', open: false },
      { name: 'vhost-vdpa-1', device: 'blk0', open: false },
    ]);
    const f = vhost.open('vhost-vdpa-0');
    errno(() => vhost.open('vhost-vdpa-0'), 'EBUSY');
    errno(() => vhost.open('vhost-vdpa-9'), 'ENOENT');
    f.setStatus(S_ACK);
    assert.equal(net.getStatus(), S_ACK);
    f.close();
    f.close(); // idempotent
    assert.equal(net.getStatus(), 0, 'release resets the device');
    errno(() => f.getStatus(), 'EBADF');
    const g = vhost.open('vhost-vdpa-0');
    assert.equal(g.getDeviceId(), VIRTIO_ID_NET);
    g.close();
    // A freed minor is reused.
    bus.devDel('net0');
    bus.devAdd('vdpasim_blk', 'blk1');
    assert.deepEqual(vhost.nodes.map((n) => [n.name, n.device]), [['vhost-vdpa-0', 'blk1'], ['vhost-vdpa-1', 'blk0']]);
  });

  test('open/close cycles with doorbells leak no platform memory', () => {
    const { p, bus, vhost } = setup();
    bus.devAdd('vdpasim_net', 'net0');
    const db = Doorbell.alloc(p);
    const cycle = () => {
      const f = vhost.open('vhost-vdpa-0');
      f.setOwner();
      f.setVringKick(0, db.handle);
      f.setVringCall(1, db.handle);
      f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: 0, size: 4096, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW });
      f.close();
    };
    cycle();
    const priv = p.priv.available;
    const ram = p.ram.available;
    for (let i = 0; i < 50; i++) cycle();
    assert.equal(p.priv.available, priv);
    assert.equal(p.ram.available, ram);
  });

  test('a device deleted while open: the file is released and refuses everything with ENODEV', () => {
    const { bus, vhost } = setup();
    bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open('vhost-vdpa-0');
    f.setOwner();
    bus.devDel('net0');
    assert.equal(f.isOpen, false);
    errno(() => f.getFeatures(), 'ENODEV');
    errno(() => f.iotlb({ type: U.VHOST_IOTLB_BATCH_BEGIN }), 'ENODEV');
    f.close();
    assert.deepEqual(vhost.nodes, []);
  });

  test('bind() sets a driver override: the other driver never probes the device, also after unbind', () => {
    const p = Platform.create({ ramSize: 1 << 20, privateSize: 4 << 20 });
    const bus = new VdpaBus();
    bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
    const probed: string[] = [];
    const other: VdpaBusDriver = { name: 'virtio_vdpa', probe: (d) => probed.push(d.name), remove: () => {} };
    const vhost = new VhostVdpa(p);
    bus.registerDriver(vhost);
    bus.devAdd('vdpasim_net', 'a');
    assert.equal(bus.driverOf('a'), vhost, 'no default: the first registered driver that matches');
    bus.registerDriver(other);
    bus.bind('a', 'vhost_vdpa');
    assert.equal(bus.driverOverride('a'), 'vhost_vdpa');
    bus.unbind('a');
    assert.equal(bus.driverOf('a'), null);
    assert.deepEqual(vhost.nodes, []);
    bus.unregisterDriver('virtio_vdpa');
    bus.registerDriver(other);
    assert.deepEqual(probed, [], 'virtio_vdpa never probed a device overridden to vhost_vdpa');
    bus.bind('a', 'virtio_vdpa');
    assert.deepEqual(probed, ['a']);
    bus.setDriverOverride('a', null);
    assert.equal(bus.driverOf('a'), other);
  });

  test('a bus default driver: new devices bind only to it', () => {
    const p = Platform.create({ ramSize: 1 << 20, privateSize: 4 << 20 });
    const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
    bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
    const probed: string[] = [];
    bus.registerDriver({ name: 'virtio_vdpa', probe: (d) => probed.push(d.name), remove: () => {} });
    bus.devAdd('vdpasim_net', 'a');
    assert.equal(bus.driverOf('a'), null);
    const vhost = new VhostVdpa(p);
    bus.registerDriver(vhost);
    assert.equal(bus.driverOf('a'), vhost);
    assert.deepEqual(probed, []);
    assert.equal(vhost.nodeOf('a'), 'vhost-vdpa-0');
  });

  test('SET_OWNER: once (EBUSY again); vring ioctls and IOTLB messages need it (EPERM)', () => {
    const { bus, vhost } = setup();
    bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open('vhost-vdpa-0');
    assert.equal(f.getVqsCount(), 3, 'queries need no owner');
    errno(() => f.setVringNum({ index: 0, num: 64 }), 'EPERM');
    errno(() => f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: 0, size: 4096, uaddr: 0, perm: 3 }), 'EFAULT', 'EPERM');
    f.setOwner();
    errno(() => f.setOwner(), 'EBUSY');
    f.resetOwner();
    f.setOwner();
  });

  test('request codes: unknown → ENOTTY, dirty-log eventfd → ENOTTY, short argument → EFAULT, queue index → ENOBUFS', () => {
    const { bus, vhost } = setup();
    bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open('vhost-vdpa-0');
    f.setOwner();
    errno(() => f.ioctl(U.IOW(U.VHOST_VIRTIO, 0x6f, 8), st(0, 0)), 'ENOTTY');
    errno(() => f.ioctl(U.VHOST_SET_LOG_FD, U.encodeU32(0)), 'ENOTTY');
    errno(() => f.ioctl(U.VHOST_SET_VRING_ENDIAN, st(0, 0)), 'ENOTTY');
    errno(() => f.ioctl(U.VHOST_SET_MEM_TABLE, new Uint8Array(8)), 'ENOTTY');
    errno(() => f.ioctl(U.VHOST_SET_FEATURES, new Uint8Array(4)), 'EFAULT');
    errno(() => f.ioctl(U.VHOST_SET_VRING_ADDR, st(0, 0)), 'EFAULT');
    errno(() => f.ioctl(U.VHOST_SET_VRING_NUM), 'EFAULT');
    errno(() => f.setVringNum({ index: 3, num: 64 }), 'ENOBUFS');
    errno(() => f.getVringBase(100), 'ENOBUFS');
    // The syscall-shaped faces: 0 / -errno, never a throw.
    assert.deepEqual(f.ioctlRaw(U.VHOST_SET_VRING_NUM, st(3, 64)), { ret: -105, out: null });
    assert.deepEqual(f.ioctlRaw(U.VHOST_VDPA_GET_VQS_COUNT), { ret: 0, out: U.encodeU32(3) });
    assert.deepEqual(f.ioctlRaw(U.VHOST_SET_OWNER), { ret: -16, out: null });
    assert.equal(f.writeRaw(new Uint8Array(2)), -22);
    assert.equal(f.writeRaw(U.encodeIotlbMsg({ type: U.VHOST_IOTLB_BATCH_BEGIN })), 72);
    f.close();
    assert.deepEqual(f.ioctlRaw(U.VHOST_VDPA_GET_VQS_COUNT), { ret: -9, out: null });
  });
});

describe('Linux rules, one by one', () => {
  test('GET_* report the device as the uapi lays it out', () => {
    const { bus, vhost } = setup();
    bus.devAdd('vdpasim_net', 'net0', { mac: new Uint8Array([2, 0, 0, 0, 0, 1]) });
    const f = vhost.open('vhost-vdpa-0');
    assert.equal(f.getDeviceId(), VIRTIO_ID_NET);
    assert.equal(rd(f.ioctl(U.VHOST_VDPA_GET_DEVICE_ID)).getUint32(0, true), VIRTIO_ID_NET);
    assert.equal(f.getConfigSize(), NET_CFG_SIZE);
    assert.equal(f.getVringNum(), 256);
    assert.equal(f.getGroupNum(), 2);
    assert.equal(f.getAsNum(), 2);
    assert.deepEqual(f.getIovaRange(), { first: 0n, last: (1n << 64n) - 1n });
    assert.ok(f.getFeatures() & featureBit(VIRTIO_F_VERSION_1));
    // GET_CONFIG returns the vhost_vdpa_config header followed by buf.
    const c = f.ioctl(U.VHOST_VDPA_GET_CONFIG, U.encodeVdpaConfig(0, 6)) as Uint8Array;
    assert.equal(c.length, 14);
    assert.deepEqual([...c.subarray(8)], [2, 0, 0, 0, 0, 1]);
    assert.deepEqual([...f.getConfig(2, 4)], [0, 0, 0, 1]);
  });

  test('config offset/length bounds (vhost_vdpa_config_validate; both callers return EINVAL)', () => {
    const { bus, vhost } = setup();
    bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open('vhost-vdpa-0');
    errno(() => f.getConfig(0, 0), 'EINVAL');
    errno(() => f.getConfig(NET_CFG_SIZE + 1, 1), 'EINVAL');
    errno(() => f.getConfig(NET_CFG_SIZE - 2, 3), 'EINVAL', 'E2BIG');
    errno(() => f.getConfig(4, 0xffffffff), 'EINVAL', 'E2BIG');
    assert.equal(f.getConfig(NET_CFG_SIZE - 2, 2).length, 2);
    errno(() => f.ioctl(U.VHOST_VDPA_GET_CONFIG, new Uint8Array(4)), 'EFAULT');
    // SET_CONFIG whose buf is shorter than len: copy_from_user faults.
    const short = U.encodeVdpaConfig(0, 6).subarray(0, 10);
    errno(() => f.ioctl(U.VHOST_VDPA_SET_CONFIG, short), 'EFAULT');
  });

  test('features only before FEATURES_OK (EBUSY after)', () => {
    const { f, dev } = netAtFeaturesOk(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC));
    assert.equal(dev.getDriverFeatures(), featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC));
    errno(() => f.setFeatures(featureBit(VIRTIO_F_VERSION_1)), 'EBUSY');
    f.setStatus(0);
    f.setStatus(S_ACK | S_DRIVER);
    f.setFeatures(featureBit(VIRTIO_F_VERSION_1));
    assert.equal(dev.getDriverFeatures(), featureBit(VIRTIO_F_VERSION_1));
  });

  test('status bits clear only by writing 0, which resets', () => {
    const { bus, vhost } = setup();
    const dev = bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open('vhost-vdpa-0');
    f.setStatus(S_ACK | S_DRIVER);
    errno(() => f.setStatus(S_ACK), 'EINVAL');
    errno(() => f.setStatus(S_DRIVER), 'EINVAL');
    assert.equal(dev.getStatus(), S_ACK | S_DRIVER);
    f.setStatus(S_ACK | S_DRIVER); // same bits: allowed
    f.setStatus(0);
    assert.equal(f.getStatus(), 0);
    // Our simulator refuses an out-of-order write Linux's would take: EINVAL.
    errno(() => f.setStatus(S_DRIVER), 'EINVAL');
  });

  test('SET_VRING_NUM / ADDR argument checks (vhost_vring_set_num / set_addr)', () => {
    const { f } = netAtFeaturesOk();
    errno(() => f.setVringNum({ index: 0, num: 0 }), 'EINVAL');
    errno(() => f.setVringNum({ index: 0, num: 48 }), 'EINVAL');
    errno(() => f.setVringNum({ index: 0, num: 0x10000 }), 'EINVAL');
    errno(() => f.setVringNum({ index: 0, num: 512 }), 'EINVAL', undefined); // above the device maximum
    f.setVringNum({ index: 0, num: 64 });
    assert.equal(f.getVringSize(0), 64);
    errno(() => f.setVringAddr({ index: 0, desc: 0x1000, avail: 0x2001, used: 0x3000 }), 'EINVAL');
    errno(() => f.setVringAddr({ index: 0, desc: 0x1000, avail: 0x2000, used: 0x3002 }), 'EINVAL');
    errno(() => f.setVringAddr({ index: 0, desc: 0x1000, avail: 0x2000, used: 0x3000, flags: 2 }), 'EOPNOTSUPP');
    errno(() => f.setVringBase({ index: 0, num: 0x10000 }), 'EINVAL');
    // Linux's set_vq_ready is void; our device refuses a queue without addresses: EINVAL.
    errno(() => f.setVringEnable({ index: 0, num: 1 }), 'EINVAL');
  });

  test('SET_VRING_ADDR and SET_VRING_BASE are refused after DRIVER_OK unless suspended', () => {
    const { p, f } = netAtFeaturesOk();
    const qs = [0, 1].map((i) => {
      const q = new DriverQueue(p, { size: 64, features: featureBit(VIRTIO_F_VERSION_1) });
      f.setVringNum({ index: i, num: 64 });
      f.setVringAddr({ index: i, desc: q.addresses.descArea, avail: q.addresses.driverArea, used: q.addresses.deviceArea });
      f.setVringBase({ index: i, num: 5 });
      f.setVringEnable({ index: i, num: 1 });
      return q;
    });
    assert.deepEqual(f.getVringBase(0), { index: 0, num: 5 });
    f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    const a = qs[0]!.addresses;
    errno(() => f.setVringAddr({ index: 0, desc: a.descArea, avail: a.driverArea, used: a.deviceArea }), 'EINVAL');
    errno(() => f.setVringBase({ index: 0, num: 7 }), 'EINVAL');
    f.suspend();
    f.setVringBase({ index: 0, num: 7 });
    assert.deepEqual(f.getVringBase(0), { index: 0, num: 7 });
    // A queue disabled while suspended takes new addresses.
    f.setVringEnable({ index: 1, num: 0 });
    const b = qs[1]!.addresses;
    f.setVringAddr({ index: 1, desc: b.descArea, avail: b.driverArea, used: b.deviceArea });
    f.resume();
    errno(() => f.setVringBase({ index: 0, num: 9 }), 'EINVAL');
    // Suspend/resume before DRIVER_OK are no-ops (Linux ≥ 6.8).
    f.setStatus(0);
    f.suspend();
    f.resume();
  });

  test('packed ring base: avail | used << 16 with wrap counters in bit 15', () => {
    const packed = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_RING_PACKED);
    const { f } = netAtFeaturesOk(packed);
    f.setVringNum({ index: 0, num: 64 });
    const num = (3 | (1 << 15)) | ((2 | (0 << 15)) << 16);
    f.setVringBase({ index: 0, num });
    assert.deepEqual(f.getVringBase(0), { index: 0, num });
  });

  test('groups and address spaces: the control queue in group 1 (vdpa_sim_net), SET_GROUP_ASID checks', () => {
    const { f, dev } = netAtFeaturesOk(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_CTRL_VQ));
    assert.deepEqual([0, 1, 2].map((i) => f.getVringGroup(i)), [0, 0, 1]);
    assert.equal(rd(f.ioctl(U.VHOST_VDPA_GET_VRING_GROUP, st(2, 0))).getUint32(4, true), 1);
    errno(() => f.getVringDescGroup(0), 'EOPNOTSUPP');
    f.setGroupAsid(1, 1);
    assert.equal(dev.getGroupAsid(1), 1);
    errno(() => f.setGroupAsid(1, 2), 'EINVAL');
    errno(() => f.setGroupAsid(2, 0), 'EINVAL'); // group 2 of 2
    errno(() => f.setGroupAsid(5, 0), 'ENOBUFS'); // Linux checks the index against nvqs first
  });

  test('kick and call doorbells: a bad address is EBADF, -1 detaches', () => {
    const { p, f } = netAtFeaturesOk();
    errno(() => f.ioctl(U.VHOST_SET_VRING_KICK, U.encodeVringFile(0, 12)), 'EBADF');
    errno(() => f.ioctl(U.VHOST_SET_VRING_CALL, U.encodeVringFile(0, 0x7ffffff8)), 'EBADF');
    errno(() => f.setVringKick(0, { addr: p.allocBuffer(8) }), 'EBADF'); // guest RAM is never a doorbell
    errno(() => f.ioctl(U.VHOST_VDPA_SET_CONFIG_CALL, U.encodeU32(3)), 'EBADF');
    const db = Doorbell.alloc(p);
    f.setVringKick(0, db.handle);
    assert.ok(f.kickWaiter);
    f.setVringKick(0, null);
    f.setVringCall(0, db.handle);
    f.ioctl(U.VHOST_SET_VRING_CALL, U.encodeVringFile(0, -1));
    f.setConfigCall(db.handle);
    f.setConfigCall(null);
  });

  test('one kick doorbell may serve several queues (as one eventfd may); detaching one keeps the others', async () => {
    const { p, f, dev } = netAtFeaturesOk();
    const kicked: number[] = [];
    dev.kickVq = (i: number) => void kicked.push(i);
    const db = Doorbell.alloc(p);
    f.setVringKick(0, db.handle);
    f.setVringKick(1, db.handle);
    db.ring();
    await tick();
    assert.deepEqual(kicked.sort(), [0, 1]);
    f.setVringKick(0, null);
    kicked.length = 0;
    db.ring();
    await tick();
    assert.deepEqual(kicked, [1]);
    f.close();
    db.ring();
    await tick();
    assert.deepEqual(kicked, [1], 'no kick after release');
  });

  test('the config doorbell rings on a config change', async () => {
    const { p, f, dev } = netAtFeaturesOk();
    const db = Doorbell.alloc(p);
    f.setConfigCall(db.handle);
    dev.setLink(false);
    assert.equal(db.count, 1);
    f.close();
    dev.setLink(true);
    assert.equal(db.count, 1, 'no ring after release');
  });
});

test('fuzz: random requests, arguments and IOTLB messages only ever fail with a VhostError; the node still works after', () => {
  const { p, bus, vhost } = setup();
  const dev = bus.devAdd('vdpasim_net', 'net0');
  const next = rng(0x5eed);
  const codes = Object.values(U.VHOST_REQUESTS);
  const db = Doorbell.alloc(p);
  let f = vhost.open('vhost-vdpa-0');
  let fails = 0;
  for (let i = 0; i < 4000; i++) {
    const arg = new Uint8Array(next() % 48);
    for (let j = 0; j < arg.length; j++) arg[j] = next() & 0xff;
    // Keep fds to -1, a real doorbell or garbage: a random address inside the private arena
    // would be "a doorbell" over device state (as a random eventfd number is a real fd).
    if (arg.length >= 8 && next() % 2) new DataView(arg.buffer).setInt32(4, [-1, db.handle.addr, 12][next() % 3]!, true);
    if (arg.length >= 8 && next() % 2) new DataView(arg.buffer).setUint32(0, next() % 4, true);
    try {
      if (next() % 4 === 0) {
        const m = U.encodeIotlbMsg({ type: next() % 8, iova: next() % 0x10000, size: next() % 0x3000, uaddr: p.ramBase + (next() % 0x100000), perm: next() % 5 }, next() % 2 ? undefined : next() % 3);
        f.writeMsg(next() % 8 ? m : m.subarray(0, next() % 72));
      } else {
        const req = next() % 8 ? codes[next() % codes.length]! : next();
        if (req === U.VHOST_VDPA_SET_STATUS && arg.length > 0 && next() % 4) arg[0] = 0;
        f.ioctl(req, arg);
      }
    } catch (e) {
      assert.ok(e instanceof VhostError, `not a VhostError: ${String(e)}`);
      fails++;
    }
    if (i % 500 === 499) {
      f.close();
      f = vhost.open('vhost-vdpa-0');
    }
  }
  assert.ok(fails > 1000, `${fails} calls failed`);
  f.close();
  assert.equal(dev.getStatus(), 0);
  // The node still brings a device up.
  const g = vhost.open('vhost-vdpa-0');
  g.setOwner();
  g.setStatus(S_ACK | S_DRIVER);
  g.setFeatures(featureBit(VIRTIO_F_VERSION_1));
  g.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
  assert.ok(g.getStatus() & S_FEATURES_OK);
  g.close();
});

describe('backend features follow the device', () => {
  const B = (...bits: number[]) => bits.reduce((f, b) => f | (1n << BigInt(b)), 0n);

  test('vdpasim offers MSG_V2, BATCH, ASID, SUSPEND, RESUME, IOTLB_PERSIST and ENABLE_AFTER_DRIVER_OK, not DESC_ASID', () => {
    const { bus, vhost } = setup();
    bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open('vhost-vdpa-0');
    assert.equal(f.getBackendFeatures(), B(U.VHOST_BACKEND_F_IOTLB_MSG_V2, U.VHOST_BACKEND_F_IOTLB_BATCH, U.VHOST_BACKEND_F_IOTLB_ASID,
      U.VHOST_BACKEND_F_SUSPEND, U.VHOST_BACKEND_F_RESUME, U.VHOST_BACKEND_F_IOTLB_PERSIST, U.VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK));
    errno(() => f.setBackendFeatures(B(9)), 'EOPNOTSUPP');
    errno(() => f.setBackendFeatures(B(U.VHOST_BACKEND_F_DESC_ASID)), 'EINVAL');
    errno(() => f.setBackendFeatures(B(U.VHOST_BACKEND_F_DESC_ASID, U.VHOST_BACKEND_F_IOTLB_ASID)), 'EOPNOTSUPP');
    f.setBackendFeatures(f.getBackendFeatures());
  });

  test('a device without suspend, resume, reset_map or backend features gets only the base set', () => {
    const p = Platform.create({ ramSize: 1 << 20, privateSize: 4 << 20 });
    const net = new VdpaSimNet(p, { name: 'lite' });
    const drop = new Set(['suspend', 'resume', 'resetMap', 'getBackendFeatures', 'getVqSize']);
    const lite = new Proxy(net, {
      get(t, k) {
        if (typeof k === 'string' && drop.has(k)) return undefined;
        const v = Reflect.get(t, k, t) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    }) as unknown as VdpaDevice;
    const vhost = new VhostVdpa(p);
    vhost.probe(lite);
    const f = vhost.open('vhost-vdpa-0');
    assert.equal(f.getBackendFeatures(), B(U.VHOST_BACKEND_F_IOTLB_MSG_V2, U.VHOST_BACKEND_F_IOTLB_BATCH, U.VHOST_BACKEND_F_IOTLB_ASID));
    errno(() => f.setBackendFeatures(B(U.VHOST_BACKEND_F_SUSPEND)), 'EOPNOTSUPP');
    errno(() => f.setBackendFeatures(B(U.VHOST_BACKEND_F_RESUME)), 'EOPNOTSUPP');
    errno(() => f.setBackendFeatures(B(U.VHOST_BACKEND_F_IOTLB_PERSIST)), 'EOPNOTSUPP');
    f.setOwner();
    errno(() => f.getVringSize(0), 'EOPNOTSUPP');
    f.setStatus(S_ACK | S_DRIVER);
    f.setFeatures(featureBit(VIRTIO_F_VERSION_1));
    f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
    f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    errno(() => f.suspend(), 'EOPNOTSUPP');
    errno(() => f.resume(), 'EOPNOTSUPP');
  });

  test('a device with several groups but no map ops is refused at probe (EOPNOTSUPP)', () => {
    const p = Platform.create({ ramSize: 1 << 20, privateSize: 4 << 20 });
    const net = new VdpaSimNet(p, { name: 'nomap' });
    const drop = new Set(['setMap', 'dmaMap', 'dmaUnmap']);
    const dev = new Proxy(net, { get: (t, k) => (typeof k === 'string' && drop.has(k) ? undefined : Reflect.get(t, k, t)) }) as unknown as VdpaDevice;
    errno(() => new VhostVdpa(p).probe(dev), 'EOPNOTSUPP');
  });
});

describe('IOTLB messages', () => {
  const G = 0x4000_0000n;

  function owned(o: { backend?: bigint } = {}) {
    const s = setup();
    const dev = s.bus.devAdd('vdpasim_net', 'net0') as VdpaSimNet;
    const f = s.vhost.open('vhost-vdpa-0');
    f.setOwner();
    if (o.backend !== undefined) f.setBackendFeatures(o.backend);
    const calls: { asid: number; n: number }[] = [];
    const setMap = dev.setMap.bind(dev);
    dev.setMap = (asid, entries) => {
      calls.push({ asid, n: entries.length });
      setMap(asid, entries);
    };
    return { ...s, dev, f, calls };
  }
  const upd = (iova: bigint | number, size: number, uaddr: number, perm = U.VHOST_ACCESS_RW) => ({ type: U.VHOST_IOTLB_UPDATE, iova, size, uaddr, perm });

  test('v1 UPDATE maps at once (set_map), INVALIDATE unmaps every overlapping mapping; write returns 72', () => {
    const { p, f, dev, calls } = owned();
    const r = p.ramBase;
    assert.equal(f.writeMsg(U.encodeIotlbMsg(upd(G, 0x1000, r, U.VHOST_ACCESS_RO))), 72);
    assert.equal(f.iotlb(upd(G + 0x1000n, 0x2000, r + 0x1000, U.VHOST_ACCESS_WO)), 72);
    assert.deepEqual(dev.getMap(0).map((m) => [m.iova, m.size, m.addr, m.perm]), [[G, 0x1000, r, 1], [G + 0x1000n, 0x2000, r + 0x1000, 2]]);
    assert.deepEqual(calls, [{ asid: 0, n: 1 }, { asid: 0, n: 2 }]);
    f.iotlb({ type: U.VHOST_IOTLB_INVALIDATE, iova: G + 0xfffn, size: 2 });
    assert.deepEqual(dev.getMap(0), [], 'both mappings overlapped [G+0xfff, +2)');
  });

  test('errors: overlap EEXIST, bad range EINVAL, target outside RAM EFAULT — all reported as EFAULT by write', () => {
    const { p, f, dev } = owned({ backend: (1n << 1n) | (1n << 2n) | (1n << 3n) });
    f.iotlb(upd(G, 0x2000, p.ramBase));
    errno(() => f.iotlb(upd(G + 0x1000n, 0x1000, p.ramBase)), 'EFAULT', 'EEXIST');
    errno(() => f.iotlb(upd((1n << 64n) - 0x1000n, 0x2000, p.ramBase)), 'EFAULT', 'EINVAL');
    errno(() => f.iotlb(upd(0, 0x1000, p.ramBase + p.ramSize - 0x800)), 'EFAULT', 'EFAULT');
    errno(() => f.iotlb(upd(0, 0x1000, p.ramBase, 0)), 'EFAULT', 'EINVAL');
    errno(() => f.iotlb(upd(0, 0, p.ramBase)), 'EINVAL'); // size 0: vhost_chr_write_iter itself
    errno(() => f.iotlb({ type: 9 }), 'EFAULT', 'EINVAL');
    errno(() => f.iotlb({ type: U.VHOST_IOTLB_INVALIDATE, iova: 0, size: 1 }, 1), 'EFAULT', 'EINVAL'); // ASID 1 has no table
    const bad = U.encodeIotlbMsg(upd(0, 0x1000, p.ramBase));
    bad[0] = 7;
    errno(() => f.writeMsg(bad), 'EINVAL');
    errno(() => f.writeMsg(bad.subarray(0, 20)), 'EINVAL');
    assert.equal(dev.getMap(0).length, 1, 'failed messages changed nothing');
  });

  test('v2: the asid counts only once IOTLB_ASID is negotiated; per-ASID tables; asid ≥ nas is EINVAL', () => {
    const { p, f, dev } = owned();
    f.iotlb(upd(G, 0x1000, p.ramBase), 1);
    assert.equal(dev.getMap(0).length, 1, 'without IOTLB_ASID the v2 asid field is skipped: ASID 0');
    f.setBackendFeatures((1n << 1n) | (1n << 2n) | (1n << 3n));
    f.iotlb(upd(G, 0x1000, p.ramBase + 0x1000), 1);
    assert.deepEqual(dev.getMap(1).map((m) => [m.iova, m.addr]), [[G, p.ramBase + 0x1000]]);
    assert.equal(dev.getMap(0)[0]!.addr, p.ramBase);
    errno(() => f.iotlb(upd(0, 0x1000, p.ramBase), 2), 'EFAULT', 'EINVAL');
  });

  test('a batch reaches the device at BATCH_END in one set_map; other ASIDs are refused inside it', () => {
    const { p, f, dev, calls } = owned({ backend: (1n << 1n) | (1n << 2n) | (1n << 3n) });
    const before = dev.getMap(0);
    f.iotlb({ type: U.VHOST_IOTLB_BATCH_BEGIN }, 0);
    for (let i = 0; i < 3; i++) f.iotlb(upd(G + BigInt(i * 0x1000), 0x1000, p.ramBase + i * 0x1000), 0);
    errno(() => f.iotlb(upd(0, 0x1000, p.ramBase), 1), 'EFAULT', 'EINVAL');
    assert.deepEqual(dev.getMap(0), before, 'nothing reaches the device before BATCH_END');
    assert.deepEqual(calls, []);
    f.iotlb({ type: U.VHOST_IOTLB_BATCH_END }, 0);
    assert.deepEqual(calls, [{ asid: 0, n: 3 }]);
    assert.equal(dev.getMap(0).length, 3);
  });

  test('a batch the device cannot take leaves the device and the table as before BEGIN', () => {
    const { p, f, dev } = owned();
    f.iotlb(upd(0, 0x100, p.ramBase));
    f.iotlb({ type: U.VHOST_IOTLB_BATCH_BEGIN });
    for (let i = 1; i <= 256; i++) f.iotlb(upd(i * 0x100, 0x100, p.ramBase)); // 257 > the 256-entry IOTLB
    errno(() => f.iotlb({ type: U.VHOST_IOTLB_BATCH_END }), 'EFAULT', 'ENOMEM');
    assert.equal(dev.getMap(0).length, 1);
    f.iotlb(upd(0x100, 0x100, p.ramBase)); // not EEXIST: the failed batch is gone from the table
    assert.equal(dev.getMap(0).length, 2);
  });

  test('a batch dropped by a reset, or a second BEGIN, keeps the table equal to what the device has', () => {
    const { p, f, dev } = owned();
    f.iotlb({ type: U.VHOST_IOTLB_BATCH_BEGIN });
    f.iotlb(upd(G, 0x1000, p.ramBase));
    f.setStatus(0);
    f.iotlb(upd(G, 0x1000, p.ramBase)); // not EEXIST: the dropped batch left the table
    assert.deepEqual(dev.getMap(0).map((m) => m.iova), [G]);
    f.iotlb({ type: U.VHOST_IOTLB_BATCH_BEGIN });
    f.iotlb(upd(G + 0x1000n, 0x1000, p.ramBase));
    f.iotlb({ type: U.VHOST_IOTLB_BATCH_BEGIN });
    for (let i = 2; i <= 257; i++) f.iotlb(upd(G + BigInt(i * 0x1000), 0x1000, p.ramBase));
    errno(() => f.iotlb({ type: U.VHOST_IOTLB_BATCH_END }), 'EFAULT', 'ENOMEM');
    assert.deepEqual(dev.getMap(0).map((m) => m.iova), [G]);
    f.iotlb(upd(G + 0x1000n, 0x1000, p.ramBase)); // the whole batch, from the first BEGIN, is gone
  });

  test('IOTLB_PERSIST: without it a reset puts the device on its clean (identity) map; with it the maps stay', () => {
    const { p, f, dev } = owned();
    f.iotlb(upd(G, 0x1000, p.ramBase));
    f.setStatus(0);
    assert.deepEqual(dev.getMap(0).map((m) => [m.iova, m.size]), [[BigInt(p.ramBase), p.ramSize]], 'clean map');
    errno(() => f.iotlb(upd(G, 0x1000, p.ramBase)), 'EFAULT', 'EEXIST'); // Linux keeps its own table
    f.setBackendFeatures(1n << BigInt(U.VHOST_BACKEND_F_IOTLB_PERSIST));
    f.iotlb(upd(G + 0x1000n, 0x1000, p.ramBase));
    f.setStatus(S_ACK);
    f.setStatus(0);
    assert.deepEqual(dev.getMap(0).map((m) => m.iova), [G, G + 0x1000n], 'maps survive the reset');
    f.close();
    assert.deepEqual(dev.getMap(0).map((m) => m.iova), [BigInt(p.ramBase)], 'release puts the initial map back');
  });
});

// ── full bring-ups by ioctl bytes, one thread ──

/** A VMM-side bring-up of `nq` queues by raw ioctl bytes, guest RAM mapped at IOVA G + offset. */
function bringUp(f: ReturnType<VhostVdpa['open']>, p: Platform, want: bigint, nq: number, o: { enableAfterDriverOk?: boolean } = {}) {
  const G = 0x4000_0000;
  const dmaBase = G - p.ramBase;
  f.ioctl(U.VHOST_SET_OWNER);
  const offered = new DataView((f.ioctl(U.VHOST_GET_FEATURES) as Uint8Array).buffer).getBigUint64(0, true);
  const features = offered & want;
  const late = o.enableAfterDriverOk ? 1n << BigInt(U.VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK) : 0n;
  const offeredBackend = new DataView((f.ioctl(U.VHOST_GET_BACKEND_FEATURES) as Uint8Array).buffer).getBigUint64(0, true);
  assert.equal(offeredBackend & late, late);
  f.ioctl(U.VHOST_SET_BACKEND_FEATURES, u64((1n << 1n) | (1n << 2n) | (1n << 3n) | late));
  f.ioctl(U.VHOST_VDPA_SET_STATUS, Uint8Array.of(S_ACK));
  f.ioctl(U.VHOST_VDPA_SET_STATUS, Uint8Array.of(S_ACK | S_DRIVER));
  f.ioctl(U.VHOST_SET_FEATURES, u64(features));
  f.ioctl(U.VHOST_VDPA_SET_STATUS, Uint8Array.of(S_ACK | S_DRIVER | S_FEATURES_OK));
  assert.ok((f.ioctl(U.VHOST_VDPA_GET_STATUS) as Uint8Array)[0]! & S_FEATURES_OK);
  // All of RAM at IOVA G: nothing works through the identity map any more.
  f.writeMsg(U.encodeIotlbMsg({ type: U.VHOST_IOTLB_BATCH_BEGIN }, 0));
  f.writeMsg(U.encodeIotlbMsg({ type: U.VHOST_IOTLB_UPDATE, iova: G, size: p.ramSize, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW }, 0));
  f.writeMsg(U.encodeIotlbMsg({ type: U.VHOST_IOTLB_BATCH_END }, 0));
  const guest = new DoorbellWaiter(p);
  const qs: DriverQueue[] = [];
  const kicks: Doorbell[] = [];
  const calls = new Array<number>(nq).fill(0);
  for (let i = 0; i < nq; i++) {
    const q = new DriverQueue(p, { size: 64, features, dmaBase });
    qs.push(q);
    f.ioctl(U.VHOST_SET_VRING_NUM, st(i, 64));
    const a = q.addresses;
    f.ioctl(U.VHOST_SET_VRING_ADDR, U.encodeVringAddr({ index: i, desc: a.descArea, avail: a.driverArea, used: a.deviceArea }));
    // Packed rings start with both wrap counters at 1 (VIRTIO 1.3 §2.8.1): bit 15 of each half,
    // as QEMU passes them (last_avail_idx | wrap << 15, used in the upper 16 bits).
    const packed = (features & featureBit(VIRTIO_F_RING_PACKED)) !== 0n;
    f.ioctl(U.VHOST_SET_VRING_BASE, st(i, packed ? 0x8000 | (0x8000 << 16) : 0));
    const kick = Doorbell.alloc(p);
    const call = Doorbell.alloc(p);
    kicks.push(kick);
    guest.watch(call, () => calls[i]!++);
    f.ioctl(U.VHOST_SET_VRING_KICK, U.encodeVringFile(i, kick.handle.addr));
    f.ioctl(U.VHOST_SET_VRING_CALL, U.encodeVringFile(i, call.handle.addr));
    if (!late) f.ioctl(U.VHOST_VDPA_SET_VRING_ENABLE, st(i, 1));
  }
  f.ioctl(U.VHOST_VDPA_SET_STATUS, Uint8Array.of(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK));
  // VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK: the queues start after DRIVER_OK.
  if (late) for (let i = 0; i < nq; i++) f.ioctl(U.VHOST_VDPA_SET_VRING_ENABLE, st(i, 1));
  const kick = (i: number) => {
    if (qs[i]!.kickPrepare()) kicks[i]!.ring();
  };
  return { qs, kick, calls, guest, iova: (off: number) => off + dmaBase };
}

for (const layout of ['split', 'packed'] as const) {
test(`vdpasim_net (${layout}) brought up by ioctl bytes: frames loop back byte for byte through kick/call doorbells and a shifted IOTLB`, async () => {
  const { p, bus, vhost } = setup();
  bus.devAdd('vdpasim_net', 'net0');
  const f = vhost.open(vhost.nodeOf('net0'));
  const want = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_NET_F_MAC) |
    (layout === 'packed' ? featureBit(VIRTIO_F_RING_PACKED) : 0n);
  const { qs, kick, calls, guest, iova } = bringUp(f, p, want, 2);
  const [rx, tx] = qs as [DriverQueue, DriverQueue];
  const rxBufs: number[] = [];
  for (let i = 0; i < 16; i++) {
    const b = p.allocBuffer(2048);
    rxBufs.push(b);
    assert.ok(rx.add(i, [], [{ addr: iova(b), len: 2048 }]));
  }
  kick(0);
  const frames = Array.from({ length: 10 }, (_, i) => eth(60 + i * 37, i));
  frames.forEach((fr, i) => {
    const b = p.allocBuffer(12 + fr.length);
    p.u8.fill(0, b, b + 12);
    p.u8.set(fr, b + 12);
    assert.ok(tx.add(100 + i, [{ addr: iova(b), len: 12 + fr.length }]));
  });
  kick(1);
  for (let i = 0; i < 5 && calls[0] === 0; i++) await tick();
  assert.ok(calls[0]! > 0 && calls[1]! > 0, `the device rang both call doorbells (rx ${calls[0]}, tx ${calls[1]})`);
  const got = rx.reclaim();
  assert.equal(got.length, frames.length);
  got.forEach(({ token, len }, i) => {
    assert.equal(len, 12 + frames[i]!.length);
    assert.deepEqual(p.u8.slice(rxBufs[token]! + 12, rxBufs[token]! + len), frames[i]);
  });
  assert.equal(tx.reclaim().length, frames.length);
  assert.equal(f.kickErrors, 0);
  guest.close();
  f.close();
});
}

test('vdpasim_blk brought up by ioctl bytes, its queue enabled after DRIVER_OK: writes then reads match a model', async () => {
  const { p, bus, vhost } = setup();
  const dev = bus.devAdd('vdpasim_blk', 'blk0');
  const f = vhost.open(vhost.nodeOf('blk0'));
  assert.equal(f.getDeviceId(), VIRTIO_ID_BLOCK);
  const { qs, kick, calls, guest, iova } = bringUp(f, p, featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM), 1, { enableAfterDriverOk: true });
  const q = qs[0]!;
  const model = new Uint8Array(64 * 512);
  const req = (type: number, sector: number) => {
    const h = p.allocBuffer(16);
    p.view.setUint32(h, type, true);
    p.view.setUint32(h + 4, 0, true);
    p.view.setBigUint64(h + 8, BigInt(sector), true);
    return h;
  };
  const status: number[] = [];
  // Writes of 1..4 sectors with distinct patterns.
  let tok = 0;
  for (const [sector, n] of [[0, 1], [3, 4], [10, 2], [60, 4]] as const) {
    const data = p.allocBuffer(n * 512);
    for (let i = 0; i < n * 512; i++) p.u8[data + i] = (sector * 7 + i * 13) & 0xff;
    model.set(p.u8.subarray(data, data + n * 512), sector * 512);
    const s = p.allocBuffer(1);
    p.u8[s] = 0xff;
    status.push(s);
    assert.ok(q.add(tok++, [{ addr: iova(req(1, sector)), len: 16 }, { addr: iova(data), len: n * 512 }], [{ addr: iova(s), len: 1 }]));
  }
  kick(0);
  for (let i = 0; i < 5 && q.usedPending() < 4; i++) await tick();
  assert.equal(q.reclaim().length, 4);
  for (const s of status) assert.equal(p.u8[s], 0, 'VIRTIO_BLK_S_OK');
  // Read the whole disk back in 8-sector requests.
  const reads: { data: number; sector: number }[] = [];
  for (let sector = 0; sector < 64; sector += 8) {
    const data = p.allocBuffer(8 * 512);
    const s = p.allocBuffer(1);
    reads.push({ data, sector });
    assert.ok(q.add(tok++, [{ addr: iova(req(0, sector)), len: 16 }], [{ addr: iova(data), len: 8 * 512 }, { addr: iova(s), len: 1 }]));
  }
  kick(0);
  for (let i = 0; i < 5 && q.usedPending() < reads.length; i++) await tick();
  assert.equal(q.reclaim().length, reads.length);
  for (const r of reads) assert.deepEqual(p.u8.slice(r.data, r.data + 4096), model.slice(r.sector * 512, r.sector * 512 + 4096));
  assert.ok(calls[0]! > 0);
  assert.equal(dev.getStatus() & 0x40, 0, 'no NEEDS_RESET');
  guest.close();
  f.close();
});

function rd(b: Uint8Array | number): DataView {
  const u = b as Uint8Array;
  return new DataView(u.buffer, u.byteOffset, u.byteLength);
}

test('vdpasim_net control queue in its own group and ASID: a VMM can shadow it (group 1 → ASID 1, data in ASID 0)', async () => {
  const { p, bus, vhost } = setup();
  const dev = bus.devAdd('vdpasim_net', 'net0') as VdpaSimNet;
  const f = vhost.open(vhost.nodeOf('net0'));
  const G = 0x4000_0000;
  const H = 0x8000_0000;
  f.setOwner();
  f.setBackendFeatures((1n << 1n) | (1n << 2n) | (1n << 3n));
  f.setStatus(S_ACK | S_DRIVER);
  const features = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_NET_F_CTRL_VQ) | featureBit(VIRTIO_NET_F_CTRL_RX);
  f.setFeatures(features);
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
  assert.equal(f.getVringGroup(2), 1, 'the control queue is alone in group 1');
  f.setGroupAsid(1, 1);
  f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: G, size: p.ramSize, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW }, 0);
  f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: H, size: p.ramSize, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW }, 1);
  const q = new DriverQueue(p, { size: 16, features, dmaBase: H - p.ramBase });
  const kick = Doorbell.alloc(p);
  const call = Doorbell.alloc(p);
  f.setVringNum({ index: 2, num: 16 });
  f.setVringAddr({ index: 2, desc: q.addresses.descArea, avail: q.addresses.driverArea, used: q.addresses.deviceArea });
  f.setVringKick(2, kick.handle);
  f.setVringCall(2, call.handle);
  f.setVringEnable({ index: 2, num: 1 });
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  // Our simulator keeps a group's ASID while one of its queues is enabled (Linux's would switch): EBUSY.
  errno(() => f.setGroupAsid(1, 0), 'EBUSY');
  // struct virtio_net_ctrl { u8 class; u8 command; u8 on; } + u8 ack: RX_PROMISC on.
  const cmd = p.allocBuffer(3);
  p.u8.set([0, 0, 1], cmd);
  const ack = p.allocBuffer(1);
  p.u8[ack] = 0xff;
  const viaAsid1 = (off: number) => off + H - p.ramBase;
  assert.ok(q.add(1, [{ addr: viaAsid1(cmd), len: 3 }], [{ addr: viaAsid1(ack), len: 1 }]));
  if (q.kickPrepare()) kick.ring();
  for (let i = 0; i < 5 && q.usedPending() === 0; i++) await tick();
  assert.equal(p.u8[ack], 0, 'VIRTIO_NET_OK');
  assert.equal(dev.ctrl.rx.promisc, true);
  assert.equal(q.reclaim().length, 1);
  // A command addressed through ASID 0's IOVAs is outside the control queue's map: the device
  // refuses the chain (NEEDS_RESET) and writes nothing.
  p.u8[ack] = 0xff;
  const viaAsid0 = (off: number) => off + G - p.ramBase;
  assert.ok(q.add(2, [{ addr: viaAsid0(cmd), len: 3 }], [{ addr: viaAsid0(ack), len: 1 }]));
  if (q.kickPrepare()) kick.ring();
  await tick();
  assert.equal(p.u8[ack], 0xff);
  assert.ok(f.getStatus() & 0x40, 'DEVICE_NEEDS_RESET');
  f.close();
});
