// The vdpa bus (src/bus/bus.ts) and the vdpasim management devices (src/mgmt/mgmtdev.ts):
// management device registration, `vdpa dev add` / `dev del` with their attribute checks
// (each error leaves the bus exactly as it was), unique device names, and bus drivers:
// matching, probe/remove, the order of lifecycle events.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VdpaSimNet, VdpaSimBlk, VirtioError, Code,
  VDPASIM_NET_MAX_VQP, VDPASIM_BLK_FEATURES, features, featureBit, hasFeature,
  VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_BLK_F_RO, VIRTIO_ID_NET, VIRTIO_ID_BLOCK,
  type VdpaBusDriver, type VdpaDevice, type MgmtDevAttrs, type MgmtDevice,
} from '../src/index.ts';
import { makePlatform } from './helpers/builds.ts';
import { virtioInit, NET_SPLIT, S_ACK, S_DRIVER } from './helpers/virtio-driver.ts';

const EVENTS = ['mgmtdev-add', 'mgmtdev-remove', 'device-add', 'device-remove', 'bind', 'unbind'] as const;

function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VirtioError, `expected a VirtioError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

/** A bus with vdpasim_net and vdpasim_blk registered, and a log of every bus event as "type:name". */
function setup(o: { privateSize?: number } = {}) {
  const p = makePlatform('release', { ramSize: 4 << 20, privateSize: o.privateSize ?? (8 << 20) });
  const bus = new VdpaBus();
  const log: string[] = [];
  for (const t of EVENTS) bus.addEventListener(t, (e) => log.push(`${t}:${(e as CustomEvent<string>).detail}`));
  const net = new VdpaSimNetMgmt(p);
  const blk = new VdpaSimBlkMgmt(p, 64);
  bus.registerMgmtDevice(net);
  bus.registerMgmtDevice(blk);
  log.length = 0;
  return { p, bus, net, blk, log };
}

/** What the bus holds, for before/after comparisons. */
function snapshot(bus: VdpaBus) {
  return {
    mgmt: bus.mgmtDevices.map((m) => m.name),
    devices: bus.devices.map((d) => [d.name, bus.mgmtDeviceOf(d.name), bus.driverOf(d.name)?.name ?? null]),
    drivers: bus.busDrivers.map((d) => d.name),
  };
}

/** A bus driver that logs probe/remove into `log` (shared with the bus events, to check order). */
function recDriver(name: string, log: string[], o: { match?: (d: VdpaDevice) => boolean; probe?: (d: VdpaDevice) => void } = {}) {
  const d: VdpaBusDriver & { probed: string[]; removed: string[]; statusAtRemove: number[] } = {
    name,
    probed: [],
    removed: [],
    statusAtRemove: [],
    probe(dev) {
      log.push(`probe(${name}):${dev.name}`);
      o.probe?.(dev);
      d.probed.push(dev.name);
    },
    remove(dev) {
      log.push(`remove(${name}):${dev.name}`);
      d.removed.push(dev.name);
      d.statusAtRemove.push(dev.getStatus());
    },
  };
  if (o.match) d.match = o.match;
  return d;
}

const isNet = (d: VdpaDevice) => d.getDeviceId() === VIRTIO_ID_NET;
const isBlk = (d: VdpaDevice) => d.getDeviceId() === VIRTIO_ID_BLOCK;

/** The lowest feature bit `m` does not support (and that is not VERSION_1). */
function unsupportedBit(m: MgmtDevice): number {
  for (let b = 0; b < 64; b++) if (b !== VIRTIO_F_VERSION_1 && !hasFeature(m.supportedFeatures, b)) return b;
  throw new Error('every bit supported');
}

describe('management devices', () => {
  test('register: listed in order, found by name; a duplicate name → already_exists', () => {
    const p = makePlatform('release');
    const bus = new VdpaBus();
    const log: string[] = [];
    for (const t of EVENTS) bus.addEventListener(t, (e) => log.push(`${t}:${(e as CustomEvent<string>).detail}`));
    const net = new VdpaSimNetMgmt(p);
    bus.registerMgmtDevice(net);
    bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 8));
    assert.deepEqual(bus.mgmtDevices.map((m) => m.name), ['vdpasim_net', 'vdpasim_blk']);
    assert.equal(bus.mgmtDevice('vdpasim_net'), net);
    throwsCode(() => bus.registerMgmtDevice(new VdpaSimNetMgmt(p)), Code.AlreadyExists);
    throwsCode(() => bus.registerMgmtDevice(net), Code.AlreadyExists);
    assert.equal(bus.mgmtDevice('vdpasim_net'), net, 'the first registration stays');
    throwsCode(() => bus.mgmtDevice('vdpasim_foo'), Code.NotFound);
    throwsCode(() => bus.unregisterMgmtDevice('vdpasim_foo'), Code.NotFound);
    assert.deepEqual(log, ['mgmtdev-add:vdpasim_net', 'mgmtdev-add:vdpasim_blk']);
    bus.unregisterMgmtDevice('vdpasim_net');
    assert.deepEqual(bus.mgmtDevices.map((m) => m.name), ['vdpasim_blk']);
    throwsCode(() => bus.mgmtDevice('vdpasim_net'), Code.NotFound);
    bus.registerMgmtDevice(net);
    assert.deepEqual(bus.mgmtDevices.map((m) => m.name), ['vdpasim_blk', 'vdpasim_net']);
    assert.deepEqual(log.slice(2), ['mgmtdev-remove:vdpasim_net', 'mgmtdev-add:vdpasim_net']);
  });

  test('what the management devices declare', () => {
    const { net, blk } = setup();
    assert.deepEqual([...net.supportedClasses], ['net']);
    assert.deepEqual([...net.deviceIds], [VIRTIO_ID_NET]);
    assert.deepEqual([...net.attrs], ['mac', 'mtu', 'max_vqp', 'device_features']);
    assert.ok(hasFeature(net.supportedFeatures, VIRTIO_F_VERSION_1));
    assert.ok(net.maxSupportedVqs >= 2 * VDPASIM_NET_MAX_VQP);
    assert.deepEqual([...blk.supportedClasses], ['block']);
    assert.deepEqual([...blk.deviceIds], [VIRTIO_ID_BLOCK]);
    assert.deepEqual([...blk.attrs], ['device_features', 'capacity', 'image', 'backend']);
    assert.equal(blk.supportedFeatures, VDPASIM_BLK_FEATURES | featureBit(VIRTIO_BLK_F_RO));
  });
});

describe('vdpa dev add / dev del', () => {
  test('devAdd makes a device of the management device\'s class; devDel removes it', () => {
    const { bus, log } = setup();
    const n = bus.devAdd('vdpasim_net', 'net0');
    const b = bus.devAdd('vdpasim_blk', 'blk0');
    assert.ok(n instanceof VdpaSimNet);
    assert.ok(b instanceof VdpaSimBlk);
    assert.equal(n.name, 'net0');
    assert.equal(bus.device('net0'), n);
    assert.equal(bus.mgmtDeviceOf('net0'), 'vdpasim_net');
    assert.equal(bus.mgmtDeviceOf('blk0'), 'vdpasim_blk');
    assert.equal(bus.driverOf('net0'), null);
    assert.deepEqual(bus.devices.map((d) => d.name), ['net0', 'blk0']);
    bus.devDel('net0');
    assert.deepEqual(bus.devices.map((d) => d.name), ['blk0']);
    throwsCode(() => bus.device('net0'), Code.NotFound);
    throwsCode(() => bus.devDel('net0'), Code.NotFound);
    throwsCode(() => bus.mgmtDeviceOf('net0'), Code.NotFound);
    // The name is free again.
    const n2 = bus.devAdd('vdpasim_net', 'net0');
    assert.notEqual(n2, n);
    assert.deepEqual(bus.devices.map((d) => d.name), ['blk0', 'net0']);
    assert.deepEqual(log, ['device-add:net0', 'device-add:blk0', 'device-remove:net0', 'device-add:net0']);
  });

  test('names are unique on the whole bus, whatever made the device', () => {
    const { p, bus } = setup();
    bus.devAdd('vdpasim_net', 'dev0');
    const before = snapshot(bus);
    throwsCode(() => bus.devAdd('vdpasim_net', 'dev0'), Code.AlreadyExists);
    throwsCode(() => bus.devAdd('vdpasim_blk', 'dev0'), Code.AlreadyExists);
    throwsCode(() => bus.addDevice(new VdpaSimBlk(p, { name: 'dev0', capacity: 8 })), Code.AlreadyExists);
    assert.deepEqual(snapshot(bus), before);
    // Names differ by case.
    bus.devAdd('vdpasim_blk', 'DEV0');
    assert.deepEqual(bus.devices.map((d) => d.name), ['dev0', 'DEV0']);
  });

  const badNames: unknown[] = ['', '-net', '.net', '_net', 'a b', 'a/b', 'net0\n', 'x'.repeat(64), 'néт', 42, null, undefined];
  for (const name of badNames) {
    test(`device name ${JSON.stringify(name) ?? String(name)} → invalid_argument, nothing added`, () => {
      const { bus, log } = setup();
      throwsCode(() => bus.devAdd('vdpasim_net', name as string), Code.InvalidArgument);
      assert.deepEqual(bus.devices, []);
      assert.deepEqual(log, []);
    });
  }

  test('valid names: 1..63 of [A-Za-z0-9_.:-], starting alphanumeric', () => {
    const { bus } = setup();
    const names = ['a', '0', 'x'.repeat(63), 'vdpa0', 'A_b.c:d-e'];
    for (const n of names) bus.devAdd('vdpasim_blk', n);
    assert.deepEqual(bus.devices.map((d) => d.name), names);
  });

  test('an unknown management device → not_found, nothing added', () => {
    const { bus, log } = setup();
    throwsCode(() => bus.devAdd('vdpasim_foo', 'x0'), Code.NotFound);
    throwsCode(() => bus.devAdd('', 'x0'), Code.NotFound);
    assert.deepEqual(bus.devices, []);
    assert.deepEqual(log, []);
  });

  test('devDel also deletes (and frees) a device registered without a management device', () => {
    const { p, bus, log } = setup();
    const free = p.ram.available;
    const d = new VdpaSimBlk(p, { name: 'own0', capacity: 8 });
    assert.ok(p.ram.available < free, 'the RAM disk is allocated');
    bus.addDevice(d);
    assert.equal(bus.mgmtDeviceOf('own0'), null);
    bus.devDel('own0');
    assert.deepEqual(bus.devices, []);
    assert.equal(p.ram.available, free, 'the RAM disk is freed');
    throwsCode(() => bus.devDel('own0'), Code.NotFound);
    throwsCode(() => d.getStatus(), Code.NotFound);
    assert.deepEqual(log, ['device-add:own0', 'device-remove:own0']);
  });

  test('removeDevice takes a device off the bus without freeing it (the caller owns it)', () => {
    const { p, bus } = setup();
    const d = new VdpaSimBlk(p, { name: 'own0', capacity: 8 });
    bus.addDevice(d);
    bus.removeDevice('own0');
    assert.deepEqual(bus.devices, []);
    assert.equal(d.getStatus(), 0);
    throwsCode(() => bus.removeDevice('own0'), Code.NotFound);
    d.destroy();
  });

  test('devDel resets the device before freeing it', () => {
    const { p, bus } = setup();
    const dev = bus.devAdd('vdpasim_net', 'net0') as VdpaSimNet;
    virtioInit(dev, p, { nvqs: 2, want: NET_SPLIT, size: 16 });
    assert.equal(dev.getStatus(), 0x0f);
    assert.equal(dev.getVqReady(1), true);
    const statuses: number[] = [];
    dev.addEventListener('status', (e) => statuses.push((e as CustomEvent<number>).detail));
    bus.devDel('net0');
    assert.deepEqual(statuses, [0]);
    assert.equal(dev.isDestroyed, true);
  });

  test('attributes reach the device', () => {
    const { bus } = setup({ privateSize: 24 << 20 }); // mtu 65535 takes large staging areas
    const mac = new Uint8Array([0x0a, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
    const n0 = bus.devAdd('vdpasim_net', 'net0', { mac: '0A:bb:CC:dd:EE:ff', mtu: 9000, maxVqp: 1, deviceFeatures: features(VIRTIO_NET_F_MAC) }) as VdpaSimNet;
    assert.deepEqual(n0.mac, mac);
    assert.equal(n0.mtu, 9000);
    assert.equal(n0.maxVqp, 1);
    assert.equal(n0.getDeviceFeatures(), features(VIRTIO_NET_F_MAC));
    assert.deepEqual([...n0.getConfig(0, 6)], [...mac]);
    const bytes = new Uint8Array([0x02, 1, 2, 3, 4, 5]);
    const n1 = bus.devAdd('vdpasim_net', 'net1', { mac: bytes, mtu: 68 }) as VdpaSimNet;
    bytes[5] = 99;
    assert.deepEqual([...n1.mac], [0x02, 1, 2, 3, 4, 5], 'the device took a copy of the MAC');
    assert.equal(n1.mtu, 68);
    const n2 = bus.devAdd('vdpasim_net', 'net2', { mtu: 65535 }) as VdpaSimNet;
    assert.equal(n2.mtu, 65535);
    const b0 = bus.devAdd('vdpasim_blk', 'blk0', { deviceFeatures: VDPASIM_BLK_FEATURES | featureBit(VIRTIO_BLK_F_RO) }) as VdpaSimBlk;
    assert.equal(b0.readOnly, true);
    assert.ok(hasFeature(b0.getDeviceFeatures(), VIRTIO_BLK_F_RO));
    const b1 = bus.devAdd('vdpasim_blk', 'blk1', { deviceFeatures: features() }) as VdpaSimBlk;
    assert.equal(b1.readOnly, false);
    assert.equal(b1.getDeviceFeatures(), features());
  });

  describe('every management error → the right code, the bus unchanged', () => {
    const IA = Code.InvalidArgument;
    const cases: [mgmt: 'vdpasim_net' | 'vdpasim_blk', what: string, attrs: (m: MgmtDevice) => MgmtDevAttrs, code: string][] = [
      ['vdpasim_net', 'MAC with bad hex', () => ({ mac: 'zz:54:00:12:34:56' }), IA],
      ['vdpasim_net', 'MAC with 5 bytes', () => ({ mac: '52:54:00:12:34' }), IA],
      ['vdpasim_net', 'MAC with 7 bytes', () => ({ mac: '52:54:00:12:34:56:78' }), IA],
      ['vdpasim_net', 'MAC with dashes', () => ({ mac: '52-54-00-12-34-56' }), IA],
      ['vdpasim_net', 'MAC with one-digit groups', () => ({ mac: '2:54:0:12:34:56' }), IA],
      ['vdpasim_net', 'MAC of 5 bytes (array)', () => ({ mac: new Uint8Array(5).fill(2) }), IA],
      ['vdpasim_net', 'empty MAC', () => ({ mac: '' }), IA],
      ['vdpasim_net', 'multicast MAC', () => ({ mac: '01:00:5e:00:00:01' }), IA],
      ['vdpasim_net', 'multicast MAC (IPv6)', () => ({ mac: '33:33:00:00:00:01' }), IA],
      ['vdpasim_net', 'broadcast MAC', () => ({ mac: 'ff:ff:ff:ff:ff:ff' }), IA],
      ['vdpasim_net', 'multicast MAC (array)', () => ({ mac: new Uint8Array([3, 0, 0, 0, 0, 1]) }), IA],
      ['vdpasim_net', 'all-zero MAC', () => ({ mac: '00:00:00:00:00:00' }), IA],
      ['vdpasim_net', 'all-zero MAC (array)', () => ({ mac: new Uint8Array(6) }), IA],
      ['vdpasim_net', 'MTU 67', () => ({ mtu: 67 }), IA],
      ['vdpasim_net', 'MTU 65536', () => ({ mtu: 65536 }), IA],
      ['vdpasim_net', 'MTU 0', () => ({ mtu: 0 }), IA],
      ['vdpasim_net', 'MTU 1500.5', () => ({ mtu: 1500.5 }), IA],
      ['vdpasim_net', 'max_vqp 0', () => ({ maxVqp: 0 }), IA],
      ['vdpasim_net', `max_vqp ${VDPASIM_NET_MAX_VQP + 1} (above the maximum)`, () => ({ maxVqp: VDPASIM_NET_MAX_VQP + 1 }), IA],
      ['vdpasim_net', 'max_vqp 1.5', () => ({ maxVqp: 1.5 }), IA],
      ['vdpasim_net', 'device_features with an unsupported bit', (m) => ({ deviceFeatures: features(unsupportedBit(m)) }), IA],
      ['vdpasim_net', 'device_features with bit 63', () => ({ deviceFeatures: features(63) }), IA],
      ['vdpasim_net', 'device_features without VERSION_1', () => ({ deviceFeatures: featureBit(VIRTIO_NET_F_MAC) }), IA],
      ['vdpasim_net', 'device_features 0', () => ({ deviceFeatures: 0n }), IA],
      ['vdpasim_net', 'device_features ≥ 2^64', () => ({ deviceFeatures: 1n << 64n }), IA],
      ['vdpasim_net', 'device_features negative', () => ({ deviceFeatures: -1n }), IA],
      ['vdpasim_net', 'a good MAC with a bad MTU', () => ({ mac: '52:54:00:12:34:56', mtu: 67 }), IA],
      ['vdpasim_blk', 'mac (not a vdpasim_blk attribute)', () => ({ mac: '52:54:00:12:34:56' }), Code.Unsupported],
      ['vdpasim_blk', 'mtu (not a vdpasim_blk attribute)', () => ({ mtu: 1500 }), Code.Unsupported],
      ['vdpasim_blk', 'max_vqp (not a vdpasim_blk attribute)', () => ({ maxVqp: 1 }), Code.Unsupported],
      ['vdpasim_blk', 'device_features with an unsupported bit', (m) => ({ deviceFeatures: features(unsupportedBit(m)) }), IA],
      ['vdpasim_blk', 'device_features without VERSION_1', () => ({ deviceFeatures: featureBit(VIRTIO_BLK_F_RO) }), IA],
    ];
    for (const [mgmt, what, attrs, code] of cases) {
      test(`${mgmt}: ${what} → ${code}`, () => {
        const { bus, log } = setup();
        const drv = recDriver('catch-all', log);
        bus.registerDriver(drv);
        bus.devAdd(mgmt, 'keep0');
        const before = snapshot(bus);
        const logBefore = [...log];
        const m = bus.mgmtDevice(mgmt);
        throwsCode(() => bus.devAdd(mgmt, 'new0', attrs(m)), code);
        assert.deepEqual(snapshot(bus), before, 'same devices, drivers, bindings');
        assert.deepEqual(log, logBefore, 'no events, no probe');
        throwsCode(() => bus.device('new0'), Code.NotFound);
        // The name was not taken by the failed attempt.
        bus.devAdd(mgmt, 'new0');
        assert.deepEqual(bus.devices.map((d) => d.name), ['keep0', 'new0']);
      });
    }
  });

  test('repeated dev add / dev del does not run the platform out of memory', {
  }, () => {
    const { bus } = setup({ privateSize: 2 << 20 });
    for (let i = 0; i < 40; i++) {
      bus.devAdd('vdpasim_net', 'net0');
      bus.devAdd('vdpasim_blk', 'blk0');
      bus.devDel('net0');
      bus.devDel('blk0');
    }
    assert.deepEqual(bus.devices, []);
  });
});

describe('bus drivers', () => {
  test('registerDriver binds every matching device already on the bus, once', () => {
    const { bus, log } = setup();
    bus.devAdd('vdpasim_net', 'net0');
    bus.devAdd('vdpasim_blk', 'blk0');
    bus.devAdd('vdpasim_net', 'net1');
    log.length = 0;
    const vn = recDriver('virtio_net_only', log, { match: isNet });
    bus.registerDriver(vn);
    assert.deepEqual(vn.probed, ['net0', 'net1']);
    assert.deepEqual(log, ['probe(virtio_net_only):net0', 'bind:net0', 'probe(virtio_net_only):net1', 'bind:net1']);
    assert.equal(bus.driverOf('net0'), vn);
    assert.equal(bus.driverOf('blk0'), null);
    // A second driver takes only what is unbound.
    const all = recDriver('all', log);
    bus.registerDriver(all);
    assert.deepEqual(all.probed, ['blk0']);
    assert.deepEqual(vn.probed, ['net0', 'net1'], 'no second probe');
    assert.deepEqual(bus.busDrivers.map((d) => d.name), ['virtio_net_only', 'all']);
    throwsCode(() => bus.registerDriver(recDriver('all', log)), Code.AlreadyExists);
    assert.deepEqual(bus.busDrivers.map((d) => d.name), ['virtio_net_only', 'all']);
  });

  test('a device added later is bound to the first driver that matches', () => {
    const { bus, log } = setup();
    const vb = recDriver('blk_only', log, { match: isBlk });
    const vn = recDriver('net_only', log, { match: isNet });
    bus.registerDriver(vb);
    bus.registerDriver(vn);
    bus.devAdd('vdpasim_net', 'net0');
    bus.devAdd('vdpasim_blk', 'blk0');
    assert.deepEqual(log, ['device-add:net0', 'probe(net_only):net0', 'bind:net0', 'device-add:blk0', 'probe(blk_only):blk0', 'bind:blk0']);
    assert.equal(bus.driverOf('net0'), vn);
    assert.equal(bus.driverOf('blk0'), vb);
  });

  test('match() false: not probed, not bound; bind() to it → unsupported', () => {
    const { bus, log } = setup();
    const none = recDriver('none', log, { match: () => false });
    bus.registerDriver(none);
    bus.devAdd('vdpasim_net', 'net0');
    assert.deepEqual(none.probed, []);
    assert.equal(bus.driverOf('net0'), null);
    throwsCode(() => bus.bind('net0', 'none'), Code.Unsupported);
    throwsCode(() => bus.bind('net0', 'nope'), Code.NotFound);
    throwsCode(() => bus.bind('nope0', 'none'), Code.NotFound);
    assert.equal(bus.driverOf('net0'), null);
    assert.deepEqual(log, ['device-add:net0']);
  });

  test('a probe that throws leaves the device unbound (the next driver may take it)', () => {
    const { bus, log } = setup();
    const bad = recDriver('bad', log, { probe: () => { throw new Error('probe failed'); } });
    bus.registerDriver(bad);
    bus.devAdd('vdpasim_net', 'net0');
    assert.equal(bus.driverOf('net0'), null);
    assert.deepEqual(log, ['device-add:net0', 'probe(bad):net0']);
    // Removing an unbound device does not call remove().
    bus.devDel('net0');
    assert.deepEqual(bad.removed, []);
    // With a fallback registered after it, a new device ends up with the fallback.
    const good = recDriver('good', log);
    bus.registerDriver(good);
    log.length = 0;
    bus.devAdd('vdpasim_net', 'net1');
    assert.equal(bus.driverOf('net1'), good);
    assert.deepEqual(log, ['device-add:net1', 'probe(bad):net1', 'probe(good):net1', 'bind:net1']);
    // An explicit bind to the failing driver: the old driver lets go first, the probe error
    // surfaces, and the device is left unbound (as after any failed probe).
    log.length = 0;
    assert.throws(() => bus.bind('net1', 'bad'), (e: unknown) => e instanceof Error && !(e instanceof VirtioError));
    assert.equal(bus.driverOf('net1'), null);
    assert.deepEqual(log, ['remove(good):net1', 'unbind:net1', 'probe(bad):net1']);
  });

  test('devDel / removeDevice: remove() while the device is intact, then unbind, then device-remove; the device is reset', () => {
    const { p, bus, log } = setup();
    const drv = recDriver('virtio_vdpa', log, {
      probe: (dev) => {
        dev.setStatus(S_ACK);
        dev.setStatus(S_ACK | S_DRIVER);
      },
    });
    bus.registerDriver(drv);
    const dev = bus.devAdd('vdpasim_net', 'net0');
    const own = new VdpaSimBlk(p, { name: 'own0', capacity: 8 });
    bus.addDevice(own);
    bus.devDel('net0');
    bus.removeDevice('own0');
    assert.deepEqual(log, [
      'device-add:net0', 'probe(virtio_vdpa):net0', 'bind:net0',
      'device-add:own0', 'probe(virtio_vdpa):own0', 'bind:own0',
      'remove(virtio_vdpa):net0', 'unbind:net0', 'device-remove:net0',
      'remove(virtio_vdpa):own0', 'unbind:own0', 'device-remove:own0',
    ]);
    assert.deepEqual(drv.statusAtRemove, [S_ACK | S_DRIVER, S_ACK | S_DRIVER], 'remove() sees the device as the driver left it');
    throwsCode(() => dev.getStatus(), Code.NotFound); // deleted: the handle is dead
    assert.equal(own.getStatus(), 0); // removed only: reset, still the caller's
    assert.deepEqual(bus.devices, []);
  });

  test('unregisterDriver unbinds (remove() once per device) and keeps the devices; unknown → not_found', () => {
    const { bus, log } = setup();
    const drv = recDriver('virtio_vdpa', log);
    bus.registerDriver(drv);
    bus.devAdd('vdpasim_net', 'net0');
    bus.devAdd('vdpasim_blk', 'blk0');
    log.length = 0;
    bus.unregisterDriver('virtio_vdpa');
    assert.deepEqual(log, ['remove(virtio_vdpa):net0', 'unbind:net0', 'remove(virtio_vdpa):blk0', 'unbind:blk0']);
    assert.deepEqual(bus.devices.map((d) => d.name), ['net0', 'blk0']);
    assert.equal(bus.driverOf('net0'), null);
    assert.deepEqual(bus.busDrivers, []);
    throwsCode(() => bus.unregisterDriver('virtio_vdpa'), Code.NotFound);
    // Registering again binds again.
    bus.registerDriver(drv);
    assert.deepEqual(drv.probed, ['net0', 'blk0', 'net0', 'blk0']);
    assert.equal(bus.driverOf('blk0'), drv);
  });

  test('bind() moves a device between drivers; unbindDevice() releases it', () => {
    const { bus, log } = setup();
    const a = recDriver('vhost_vdpa', log);
    const b = recDriver('virtio_vdpa', log);
    bus.registerDriver(a);
    bus.registerDriver(b);
    bus.devAdd('vdpasim_net', 'net0');
    assert.equal(bus.driverOf('net0'), a);
    log.length = 0;
    bus.bind('net0', 'virtio_vdpa');
    assert.equal(bus.driverOf('net0'), b);
    bus.bind('net0', 'virtio_vdpa'); // already bound: nothing
    assert.deepEqual(log, ['remove(vhost_vdpa):net0', 'unbind:net0', 'probe(virtio_vdpa):net0', 'bind:net0']);
    bus.unbindDevice('net0');
    bus.unbindDevice('net0'); // unbound: nothing
    assert.equal(bus.driverOf('net0'), null);
    assert.deepEqual(log.slice(4), ['remove(virtio_vdpa):net0', 'unbind:net0']);
    throwsCode(() => bus.unbindDevice('nope0'), Code.NotFound);
  });

  test('unregisterMgmtDevice deletes the devices it created (drivers remove() them), and only those', () => {
    const { p, bus, log } = setup();
    const drv = recDriver('virtio_vdpa', log);
    bus.registerDriver(drv);
    bus.devAdd('vdpasim_net', 'net0');
    bus.devAdd('vdpasim_blk', 'blk0');
    bus.devAdd('vdpasim_net', 'net1');
    bus.addDevice(new VdpaSimNet(p, { name: 'own0', mtu: 68 }));
    log.length = 0;
    bus.unregisterMgmtDevice('vdpasim_net');
    assert.deepEqual(log, [
      'remove(virtio_vdpa):net0', 'unbind:net0', 'device-remove:net0',
      'remove(virtio_vdpa):net1', 'unbind:net1', 'device-remove:net1',
      'mgmtdev-remove:vdpasim_net',
    ]);
    assert.deepEqual(bus.devices.map((d) => d.name), ['blk0', 'own0']);
    assert.deepEqual(bus.mgmtDevices.map((m) => m.name), ['vdpasim_blk']);
    throwsCode(() => bus.devAdd('vdpasim_net', 'net2'), Code.NotFound);
    assert.equal(bus.driverOf('blk0'), drv);
  });
});

