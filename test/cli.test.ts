// The vdpa tool (src/cli): iproute2's text and JSON layouts for every command, its parse
// errors, bus errors printed as netlink errors, -batch (with -force), and the real binary.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, createVirtioVdpa, VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK,
} from '../src/index.ts';
import { runVdpa, formatJson, parseBatch, featureNames, matches, VDPA_HELP } from '../src/cli/vdpa.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`./cli-batch/${name}`, import.meta.url));
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function setup() {
  const platform = Platform.create({ ramSize: 32 << 20, privateSize: 16 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(platform));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(platform));
  return { platform, bus };
}

/** Runs one vdpa invocation; returns exit code, stdout and stderr. */
function vdpa(bus: VdpaBus, ...argv: string[]) {
  let out = '';
  let err = '';
  const rc = runVdpa(argv, {
    bus,
    out: (s) => (out += s),
    err: (s) => (err += s),
    readFile: (p) => readFileSync(p, 'utf8'),
    version: 'vdpa-wasm-test',
  });
  return { rc, out, err };
}

const args = (s: string) => s.split(' ');
const ok = (bus: VdpaBus, cmd: string) => {
  const r = vdpa(bus, ...args(cmd));
  assert.equal(r.err, '', `${cmd}: ${r.err}`);
  assert.equal(r.rc, 0);
  return r.out;
};

// What a device offers (and a driver negotiates) by default …
const NET_DEV_FEATURES = 'MTU MAC MRG_RXBUF STATUS CTRL_VQ CTRL_RX CTRL_VLAN CTRL_RX_EXTRA MQ CTRL_MAC_ADDR RING_INDIRECT_DESC RING_EVENT_IDX VERSION_1 ACCESS_PLATFORM RING_PACKED IN_ORDER';
const NET_DEV_FEATURES_JSON = '["MTU","MAC","MRG_RXBUF","STATUS","CTRL_VQ","CTRL_RX","CTRL_VLAN","CTRL_RX_EXTRA","MQ","CTRL_MAC_ADDR","RING_INDIRECT_DESC","RING_EVENT_IDX","VERSION_1","ACCESS_PLATFORM","RING_PACKED","IN_ORDER"]';
const NET_DEV_FEATURES_PRETTY = '[ "MTU","MAC","MRG_RXBUF","STATUS","CTRL_VQ","CTRL_RX","CTRL_VLAN","CTRL_RX_EXTRA","MQ","CTRL_MAC_ADDR","RING_INDIRECT_DESC","RING_EVENT_IDX","VERSION_1","ACCESS_PLATFORM","RING_PACKED","IN_ORDER" ]';
// … and what the management device supports: also GUEST_ANNOUNCE and SUSPEND (bit 43, which
// iproute2 does not name), which a device that migrates is provisioned with.
const NET_FEATURES = 'MTU MAC MRG_RXBUF STATUS CTRL_VQ CTRL_RX CTRL_VLAN CTRL_RX_EXTRA GUEST_ANNOUNCE MQ CTRL_MAC_ADDR RING_INDIRECT_DESC RING_EVENT_IDX VERSION_1 ACCESS_PLATFORM RING_PACKED IN_ORDER bit_43';
const NET_FEATURES_JSON = '["MTU","MAC","MRG_RXBUF","STATUS","CTRL_VQ","CTRL_RX","CTRL_VLAN","CTRL_RX_EXTRA","GUEST_ANNOUNCE","MQ","CTRL_MAC_ADDR","RING_INDIRECT_DESC","RING_EVENT_IDX","VERSION_1","ACCESS_PLATFORM","RING_PACKED","IN_ORDER",43]';
const NET_FEATURES_PRETTY = '[ "MTU","MAC","MRG_RXBUF","STATUS","CTRL_VQ","CTRL_RX","CTRL_VLAN","CTRL_RX_EXTRA","GUEST_ANNOUNCE","MQ","CTRL_MAC_ADDR","RING_INDIRECT_DESC","RING_EVENT_IDX","VERSION_1","ACCESS_PLATFORM","RING_PACKED","IN_ORDER",43 ]';
const BLK_FEATURES = 'bit_1 bit_2 bit_5 bit_6 bit_9 bit_13 bit_14 RING_INDIRECT_DESC RING_EVENT_IDX VERSION_1 ACCESS_PLATFORM RING_PACKED';
const MGMTDEV_NET_TEXT = `vdpasim_net: \n  supported_classes net\n  max_supported_vqs 17\n  dev_features ${NET_FEATURES}\n`;
const MGMTDEV_BLK_TEXT = `vdpasim_blk: \n  supported_classes block\n  max_supported_vqs 1\n  dev_features ${BLK_FEATURES}\n`;
const DEV0 = 'vdpa0: type network mgmtdev vdpasim_net vendor_id 0 max_vqs 3 max_vq_size 256\n';
const DEV0_JSON = '"vdpa0":{"type":"network","mgmtdev":"vdpasim_net","vendor_id":0,"max_vqs":3,"max_vq_size":256}';
const BLK0 = 'blk0: type block mgmtdev vdpasim_blk vendor_id 0 max_vqs 1 max_vq_size 256\n';
const BLK0_JSON = '"blk0":{"type":"block","mgmtdev":"vdpasim_blk","vendor_id":0,"max_vqs":1,"max_vq_size":256}';
const BLK0_CONFIG = 'blk0: capacity 8192 size_max 65536 blk_size 512 seg_max 128 max_discard_sec 65535 max_discard_seg 16 discard_sec_align 1 max_write_zeroes_sec 65535 max_write_zeroes_seg 16 read_only false flush true \n';
const ADD0 = 'dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55 mtu 1500';

// ───────────────────────── mgmtdev ─────────────────────────

test('mgmtdev show: text of every management device, or of one', () => {
  const { bus } = setup();
  assert.equal(ok(bus, 'mgmtdev show'), MGMTDEV_NET_TEXT + MGMTDEV_BLK_TEXT);
  assert.equal(ok(bus, 'mgmtdev list'), MGMTDEV_NET_TEXT + MGMTDEV_BLK_TEXT);
  assert.equal(ok(bus, 'mgmtdev show vdpasim_blk'), MGMTDEV_BLK_TEXT);
  assert.equal(ok(bus, 'mgmt s vdpasim_net'), MGMTDEV_NET_TEXT, 'keywords match by prefix');
  assert.equal(ok(bus, 'm sh vdpasim_net'), MGMTDEV_NET_TEXT);
});

test('mgmtdev show -j: compact JSON; bits without a name are numbers', () => {
  const { bus } = setup();
  assert.equal(ok(bus, '-j mgmtdev show'),
    '{"mgmtdev":{"vdpasim_net":{"supported_classes":["net"],"max_supported_vqs":17,"dev_features":' + NET_FEATURES_JSON + '},'
    + '"vdpasim_blk":{"supported_classes":["block"],"max_supported_vqs":1,"dev_features":[1,2,5,6,9,13,14,"RING_INDIRECT_DESC","RING_EVENT_IDX","VERSION_1","ACCESS_PLATFORM","RING_PACKED"]}}}\n');
  assert.equal(ok(bus, '--json mgmtdev show vdpasim_net'),
    `{"mgmtdev":{"vdpasim_net":{"supported_classes":["net"],"max_supported_vqs":17,"dev_features":${NET_FEATURES_JSON}}}}\n`);
});

test('mgmtdev show -j -p: json_writer pretty layout (4 spaces, one-line arrays)', () => {
  const { bus } = setup();
  const want = [
    '{',
    '    "mgmtdev": {',
    '        "vdpasim_net": {',
    '            "supported_classes": [ "net" ],',
    '            "max_supported_vqs": 17,',
    `            "dev_features": ${NET_FEATURES_PRETTY}`,
    '        }',
    '    }',
    '}',
    '',
  ].join('\n');
  assert.equal(ok(bus, '-j -p mgmtdev show vdpasim_net'), want);
  assert.equal(ok(bus, '-jp mgmtdev show vdpasim_net'), want, 'grouped short options');
  assert.equal(ok(bus, 'mgmtdev show vdpasim_net -jp'), want, 'options after the command, as GNU getopt permutes');
  assert.equal(ok(bus, '--json --pretty mgmtdev show vdpasim_net'), want);
});

test('mgmtdev show: unknown management device, bad handle, extra arguments', () => {
  const { bus } = setup();
  assert.deepEqual(vdpa(bus, ...args('mgmtdev show nope')), {
    rc: 1, out: '', err: 'Error: vdpa: Fail to find the specified mgmt device.\nkernel answers: No such device\n',
  });
  assert.deepEqual(vdpa(bus, ...args('-j mgmtdev show nope')), {
    rc: 1, out: '{"mgmtdev":{}}\n', err: 'Error: vdpa: Fail to find the specified mgmt device.\nkernel answers: No such device\n',
  });
  assert.deepEqual(vdpa(bus, ...args('mgmtdev show a/b/c')), {
    rc: 1, out: '', err: 'Wrong vdpa mgmtdev identification string format\nExpected "mgmtdev_bus_name/mgmtdev_name"\nExpected "mgmtdev_name"\n',
  });
  assert.deepEqual(vdpa(bus, ...args('mgmtdev show vdpasim_net extra')), { rc: 1, out: '', err: 'Unknown option "extra"\n' });
  assert.deepEqual(vdpa(bus, ...args('mgmtdev frob')), { rc: 1, out: '', err: 'Command "frob" not found\n' });
  assert.deepEqual(vdpa(bus, 'mgmtdev'), { rc: 0, out: '', err: 'Usage: vdpa mgmtdev show [ DEV ]\n' });
});

// ───────────────────────── dev show / add / del ─────────────────────────

test('dev show: empty bus, then text and JSON of each device', () => {
  const { bus } = setup();
  assert.equal(ok(bus, 'dev show'), '');
  assert.equal(ok(bus, '-j dev show'), '{"dev":{}}\n');
  assert.equal(ok(bus, '-j -p dev show'), '{\n    "dev": {}\n}\n');
  assert.equal(ok(bus, ADD0), '');
  assert.equal(ok(bus, 'dev add name blk0 mgmtdev vdpasim_blk'), '');
  assert.equal(ok(bus, 'dev show'), DEV0 + BLK0);
  assert.equal(ok(bus, 'dev'), DEV0 + BLK0, 'dev alone shows');
  assert.equal(ok(bus, 'dev list'), DEV0 + BLK0);
  assert.equal(ok(bus, 'd s blk0'), BLK0);
  assert.equal(ok(bus, 'dev show vdpa0'), DEV0);
  assert.equal(ok(bus, '-j dev show'), `{"dev":{${DEV0_JSON},${BLK0_JSON}}}\n`);
  assert.equal(ok(bus, '-j dev show blk0'), `{"dev":{${BLK0_JSON}}}\n`);
  assert.equal(ok(bus, '-p -j dev show vdpa0'), [
    '{',
    '    "dev": {',
    '        "vdpa0": {',
    '            "type": "network",',
    '            "mgmtdev": "vdpasim_net",',
    '            "vendor_id": 0,',
    '            "max_vqs": 3,',
    '            "max_vq_size": 256',
    '        }',
    '    }',
    '}',
    '',
  ].join('\n'));
});

test('dev show / del of an unknown device: No such device; JSON still closes its section', () => {
  const { bus } = setup();
  assert.deepEqual(vdpa(bus, ...args('dev show nope')), { rc: 1, out: '', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n' });
  assert.deepEqual(vdpa(bus, ...args('-j dev show nope')), { rc: 1, out: '{"dev":{}}\n', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n' });
  assert.deepEqual(vdpa(bus, ...args('dev del nope')), { rc: 1, out: '', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n' });
  assert.deepEqual(vdpa(bus, ...args('dev del')), { rc: 1, out: '', err: 'String parameter expected\n' });
  assert.deepEqual(vdpa(bus, ...args('dev show vdpa0 extra')), { rc: 1, out: '', err: 'Unknown option "extra"\n' });
});

test('dev add with every attribute, then dev del', () => {
  const { bus } = setup();
  assert.equal(ok(bus, 'dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55 mtu 9000 max_vqp 1 device_features 0x300010028'), '');
  assert.equal(ok(bus, 'dev config show vdpa0'), 'vdpa0: mac 00:11:22:33:44:55 link up link_announce false mtu 9000 \n', 'no MQ offered: no max_vq_pairs');
  assert.equal(bus.device('vdpa0').getDeviceFeatures(), 0x300010028n);
  assert.equal(ok(bus, 'dev a n blk0 m vdpasim_blk device_features 100000264'), '', 'prefixes for name/mgmtdev; hex without 0x');
  assert.equal(bus.device('blk0').getDeviceFeatures(), 0x100000264n);
  assert.equal(ok(bus, 'dev del blk0'), '');
  assert.equal(ok(bus, 'dev d vdpa0'), '');
  assert.equal(bus.devices.length, 0);
  assert.equal(ok(bus, '-j dev del'.replace(' del', ' show')), '{"dev":{}}\n');
});

test('dev add: device_features limits what dev config show reports', () => {
  const { bus } = setup();
  ok(bus, 'dev add name vdpa0 mgmtdev vdpasim_net mac 02:00:00:00:00:01 device_features 0x300000020');
  assert.equal(ok(bus, 'dev config show vdpa0'), 'vdpa0: mac 02:00:00:00:00:01 \n', 'no MTU or STATUS offered');
  assert.equal(ok(bus, '-j dev config show vdpa0'), '{"config":{"vdpa0":{"mac":"02:00:00:00:00:01"}}}\n');
});

/** Management errors: [command, stderr]; each leaves the bus as it was and exits 1. */
const ADD_ERRORS: [string, string][] = [
  // iproute2's own parse errors (ll_addr_a2n, vdpa_argv_parse); a bad number prints nothing.
  ['dev add name v mgmtdev vdpasim_net mac zz:11:22:33:44:55', '"zz" is invalid lladdr.\n'],
  ['dev add name v mgmtdev vdpasim_net mac 00:11:22:33:44:100', '"100" is invalid lladdr.\n'],
  ['dev add name v mgmtdev vdpasim_net mtu 65536', ''],
  ['dev add name v mgmtdev vdpasim_net mtu big', ''],
  ['dev add name v mgmtdev vdpasim_net device_features 0xg', ''],
  ['dev add name v mgmtdev vdpasim_net max_vqp 1x', ''],
  ['dev add name v mgmtdev vdpasim_net max_vqp -1', "vdpa: invalid option -- '1'\nUnknown option.\n" + VDPA_HELP],
  ['dev add name -bad mgmtdev vdpasim_net', "vdpa: invalid option -- 'b'\nUnknown option.\n" + VDPA_HELP],
  ['dev add name v', 'management device handle not set.\n'],
  ['dev add mgmtdev vdpasim_net', 'device name is not set.\n'],
  ['dev add name v mgmtdev', 'vdpa identification ("mgmtdev_bus_name/mgmtdev_name") expected\n'],
  ['dev add name v mgmtdev vdpasim_net mtu', 'number expected\n'],
  ['dev add name v mgmtdev vdpasim_net mac', 'String parameter expected\n'],
  ['dev add name v mgmtdev vdpasim_net speed 10', 'Unknown option "speed"\n'],
  ['dev add name v mgmtdev vdpasim_net mc 00:11:22:33:44:66', 'Unknown option "mc"\n'],
  ['dev add name v mgmtdev vdpasim_blk capacity 1000', 'Error: capacity "1000" is not a positive multiple of 512 bytes (suffixes K, M, G, T).\n'],
  ['dev add name v mgmtdev vdpasim_net capacity 1G', 'Error: vdpa: Some provided attributes are not supported: 0x200000.\nkernel answers: Operation not supported\n'],
  // drivers/vdpa/vdpa.c's checks: extack with the module prefix (NL_SET_ERR_MSG_MOD).
  ['dev add name v mgmtdev vdpasim_net max_vqp 0', 'Error: vdpa: At least one pair of VQs is required.\nkernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net mac 00:11:22:33:44:66 device_features 0x100000000', 'Error: vdpa: Missing features 0x20 for provided attributes.\nkernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net mtu 1500 max_vqp 2 device_features 0x100000000', 'Error: vdpa: Missing features 0x400008 for provided attributes.\nkernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev nope', 'Error: vdpa: Fail to find the specified management device.\nkernel answers: No such device\n'],
  ['dev add name v mgmtdev vdpasim_blk mac 00:11:22:33:44:66', 'Error: vdpa: Some provided attributes are not supported: 0x400.\nkernel answers: Operation not supported\n'],
  ['dev add name v mgmtdev vdpasim_blk mtu 1500 max_vqp 1', 'Error: vdpa: Some provided attributes are not supported: 0x3000.\nkernel answers: Operation not supported\n'],
  // The simulator's dev_add sets no extack: only the errno, as upstream prints it.
  ['dev add name v mgmtdev vdpasim_net mac 01:00:5e:00:00:01', 'kernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net mac 00:00:00:00:00:00', 'kernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net mtu 67', 'kernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net max_vqp 9', 'kernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net ma 9', 'kernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net device_features 0x300000021', 'kernel answers: Invalid argument\n'],
  ['dev add name v mgmtdev vdpasim_net device_features 0x20', 'kernel answers: Invalid argument\n'],
  ['dev add name vdpa0 mgmtdev vdpasim_net', 'kernel answers: File exists\n'],
  ['dev add name .bad mgmtdev vdpasim_net', 'kernel answers: Invalid argument\n'],
];

for (const [cmd, err] of ADD_ERRORS) {
  test(`dev add error: ${cmd.slice(8)}`, () => {
    const { bus } = setup();
    ok(bus, ADD0);
    assert.deepEqual(vdpa(bus, ...args(cmd)), { rc: 1, out: '', err });
    assert.equal(ok(bus, 'dev show'), 'vdpa0: type network mgmtdev vdpasim_net vendor_id 0 max_vqs 3 max_vq_size 256\n', 'bus unchanged');
  });
}

// ───────────────────────── dev config show ─────────────────────────

test('dev config show: net before and after feature negotiation, block with no fields', async () => {
  const { platform, bus } = setup();
  ok(bus, ADD0);
  ok(bus, 'dev add name blk0 mgmtdev vdpasim_blk');
  assert.equal(ok(bus, 'dev config show'), 'vdpa0: mac 00:11:22:33:44:55 link up link_announce false max_vq_pairs 1 mtu 1500 \n' + BLK0_CONFIG);
  assert.equal(ok(bus, 'dev config'), 'vdpa0: mac 00:11:22:33:44:55 link up link_announce false max_vq_pairs 1 mtu 1500 \n' + BLK0_CONFIG);
  assert.equal(ok(bus, '-j dev config show'),
    '{"config":{"vdpa0":{"mac":"00:11:22:33:44:55","link ":"up","link_announce ":false,"max_vq_pairs":1,"mtu":1500},"blk0":{"capacity":8192,"size_max":65536,"blk_size":512,"seg_max":128,"max_discard_sec":65535,"max_discard_seg":16,"discard_sec_align":1,"max_write_zeroes_sec":65535,"max_write_zeroes_seg":16,"read_only":false,"flush":true}}}\n');

  // A driver binds both and negotiates: negotiated_features appears for net.
  bus.registerDriver(createVirtioVdpa(platform, { queueSize: 64 }));
  await tick();
  assert.equal(ok(bus, 'dev c s vdpa0'),
    `vdpa0: mac 00:11:22:33:44:55 link up link_announce false max_vq_pairs 1 mtu 1500 \n  negotiated_features ${NET_DEV_FEATURES}\n`);
  assert.equal(ok(bus, 'dev config show blk0'), BLK0_CONFIG
    + '  negotiated_features bit_1 bit_2 bit_6 bit_9 bit_13 bit_14 RING_INDIRECT_DESC RING_EVENT_IDX VERSION_1 ACCESS_PLATFORM RING_PACKED\n');
  assert.equal(ok(bus, '-j dev config show vdpa0'),
    `{"config":{"vdpa0":{"mac":"00:11:22:33:44:55","link ":"up","link_announce ":false,"max_vq_pairs":1,"mtu":1500,"negotiated_features":${NET_DEV_FEATURES_JSON}}}}\n`);
  assert.equal(ok(bus, '-j -p dev config show vdpa0'), [
    '{',
    '    "config": {',
    '        "vdpa0": {',
    '            "mac": "00:11:22:33:44:55",',
    '            "link ": "up",',
    '            "link_announce ": false,',
    '            "max_vq_pairs": 1,',
    '            "mtu": 1500,',
    `            "negotiated_features": ${NET_DEV_FEATURES_PRETTY}`,
    '        }',
    '    }',
    '}',
    '',
  ].join('\n'));
});

test('dev config show: link down, and a driver that negotiated few features', () => {
  const { bus } = setup();
  ok(bus, ADD0);
  const dev = bus.device('vdpa0');
  (dev as unknown as { setLink(up: boolean): void }).setLink(false);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  dev.setDriverFeatures(0x100000020n);
  assert.equal(ok(bus, 'dev config show vdpa0'), 'vdpa0: mac 00:11:22:33:44:55 link down link_announce false max_vq_pairs 1 mtu 1500 \n', 'no FEATURES_OK yet');
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  assert.equal(ok(bus, 'dev config show vdpa0'), 'vdpa0: mac 00:11:22:33:44:55 link down link_announce false max_vq_pairs 1 mtu 1500 \n  negotiated_features MAC VERSION_1\n');
  assert.deepEqual(vdpa(bus, ...args('dev config show nope')), { rc: 1, out: '', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n' });
  assert.deepEqual(vdpa(bus, ...args('-j dev config show nope')), { rc: 1, out: '{"config":{}}\n', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n' });
  assert.deepEqual(vdpa(bus, ...args('dev config frob')), { rc: 1, out: '', err: 'Command "frob" not found\n' });
  assert.deepEqual(vdpa(bus, ...args('dev config help')), { rc: 0, out: '', err: 'Usage: vdpa dev config show [ DEV ]\n' });
});

// ───────────────────────── dev vstats show ─────────────────────────

test('dev vstats show: per-queue counters after traffic, text and JSON', async () => {
  const { platform, bus } = setup();
  ok(bus, ADD0);
  ok(bus, 'dev add name blk0 mgmtdev vdpasim_blk');
  assert.deepEqual(vdpa(bus, ...args('dev vstats show vdpa0 qidx 1')), {
    rc: 1, out: '', err: 'Error: vdpa: feature negotiation not complete.\nkernel answers: Resource temporarily unavailable\n',
  });
  const virtio = createVirtioVdpa(platform, { queueSize: 64 });
  bus.registerDriver(virtio);
  const net = virtio.net('vdpa0');
  for (let i = 0; i < 5; i++) assert.equal(net.send(new Uint8Array(64)), true);
  await tick(10);
  assert.equal(ok(bus, 'dev vstats show vdpa0 qidx 1'), 'vdpa0: queue_type tx received_desc 5 completed_desc 5 tx_packets 5 tx_errors 0 tx_drops_link_down 0 \n');
  assert.equal(ok(bus, 'dev vstats show vdpa0 qidx 0'), 'vdpa0: queue_type rx received_desc 5 completed_desc 5 rx_packets 5 rx_bytes 380 rx_drops 0 rx_filtered 0 rx_drops_no_buffer 0 rx_drops_link_down 0 rx_drops_too_big 0 rx_drops_malformed 0 \n');
  assert.equal(ok(bus, '-j dev vstats show vdpa0 qidx 1'), '{"vstats":{"vdpa0":{"queue_type":"tx","received_desc":5,"completed_desc":5,"tx_packets":5,"tx_errors":0,"tx_drops_link_down":0}}}\n');
  assert.equal(ok(bus, '-j -p dev vstats show vdpa0 qidx 1'), [
    '{',
    '    "vstats": {',
    '        "vdpa0": {',
    '            "queue_type": "tx",',
    '            "received_desc": 5,',
    '            "completed_desc": 5,',
    '            "tx_packets": 5,',
    '            "tx_errors": 0,',
    '            "tx_drops_link_down": 0',
    '        }',
    '    }',
    '}',
    '',
  ].join('\n'));

  const usage = 'Usage: vdpa dev vstats show DEV [qidx QUEUE_INDEX]\n';
  assert.deepEqual(vdpa(bus, ...args('dev vstats show vdpa0')), { rc: 1, out: '', err: 'kernel answers: Invalid argument\n' });
  assert.deepEqual(vdpa(bus, ...args('dev vstats show vdpa0 qidx')), { rc: 1, out: '', err: usage });
  assert.deepEqual(vdpa(bus, ...args('dev vstats show')), { rc: 1, out: '', err: usage });
  assert.deepEqual(vdpa(bus, ...args('dev vstats')), { rc: 1, out: '', err: usage });
  assert.deepEqual(vdpa(bus, ...args('dev vstats help')), { rc: 0, out: '', err: usage });
  assert.deepEqual(vdpa(bus, ...args('dev vstats s vdpa0 qidx 1')), { rc: 1, out: '', err: 'Command "s" not found\n' }, 'vstats takes no prefixes');
  assert.deepEqual(vdpa(bus, ...args('dev vs show vdpa0 qidx 1')), { rc: 1, out: '', err: 'Command "vs" not found\n' });
  assert.deepEqual(vdpa(bus, ...args('dev vstats show vdpa0 qidx x')), { rc: 1, out: '', err: '' });
  assert.deepEqual(vdpa(bus, ...args('dev vstats show vdpa0 q 1')), { rc: 1, out: '', err: 'Unknown option "q"\n' });
  assert.deepEqual(vdpa(bus, ...args('dev vstats show vdpa0 qidx 3')), {
    rc: 1, out: '', err: 'kernel answers: Invalid argument\n',
  });
  assert.deepEqual(vdpa(bus, ...args('dev vstats show vdpa0 qidx 40000')), {
    rc: 1, out: '', err: 'Error: vdpa: queue index exceeds max value.\nkernel answers: Numerical result out of range\n',
  });
  assert.deepEqual(vdpa(bus, ...args('dev vstats show blk0 qidx 0')), {
    rc: 1, out: '', err: 'kernel answers: Operation not supported\n',
  });
  assert.deepEqual(vdpa(bus, ...args('-j dev vstats show nope qidx 0')), {
    rc: 1, out: '{"vstats":{}}\n', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n',
  });
});

test('dev vstats show: multiqueue queue types; the control queue follows the data pairs', async () => {
  const { platform, bus } = setup();
  ok(bus, 'dev add name mq0 mgmtdev vdpasim_net mac 02:00:00:00:00:02 max_vqp 4');
  assert.equal(ok(bus, 'dev show mq0'), 'mq0: type network mgmtdev vdpasim_net vendor_id 0 max_vqs 9 max_vq_size 256\n');
  assert.equal(ok(bus, 'dev config show mq0'), 'mq0: mac 02:00:00:00:00:02 link up link_announce false max_vq_pairs 4 mtu 1500 \n');
  bus.registerDriver(createVirtioVdpa(platform, { queueSize: 64 }));
  await tick(10);
  const types = [0, 1, 6, 7, 8].map((q) => ok(bus, `dev vstats show mq0 qidx ${q}`).split(' ')[2]);
  assert.deepEqual(types, ['rx', 'tx', 'rx', 'tx', 'control_vq']);
  assert.match(ok(bus, '-j dev vstats show mq0 qidx 8'), /^\{"vstats":\{"mq0":\{"queue_type":"control_vq","received_desc":\d+,"completed_desc":\d+\}\}\}\n$/);
});

// ───────────────────────── global options, help, objects ─────────────────────────

const HELP = VDPA_HELP;

test('help, -V, unknown objects, commands and options', () => {
  const { bus } = setup();
  assert.deepEqual(vdpa(bus), { rc: 0, out: '', err: HELP });
  assert.deepEqual(vdpa(bus, 'help'), { rc: 0, out: '', err: HELP });
  assert.deepEqual(vdpa(bus, '-h'), { rc: 0, out: '', err: HELP });
  assert.deepEqual(vdpa(bus, '-V'), { rc: 0, out: 'vdpa utility, vdpa-wasm-test\n', err: '' });
  assert.deepEqual(vdpa(bus, '-Version'), { rc: 0, out: 'vdpa utility, vdpa-wasm-test\n', err: '' });
  assert.deepEqual(vdpa(bus, ...args('x show')), { rc: 1, out: '', err: 'Object "x" not found\n' });
  assert.deepEqual(vdpa(bus, ...args('dev frob')), { rc: 1, out: '', err: 'Command "frob" not found\n' });
  assert.deepEqual(vdpa(bus, ...args('-x dev show')), { rc: 1, out: '', err: "vdpa: invalid option -- 'x'\nUnknown option.\n" + HELP });
  assert.deepEqual(vdpa(bus, '-batch'), { rc: 1, out: '', err: "vdpa: option requires an argument -- 'b'\nUnknown option.\n" + HELP });
  const devHelp = vdpa(bus, ...args('dev help'));
  assert.equal(devHelp.rc, 0);
  assert.match(devHelp.err, /^Usage: vdpa dev show \[ DEV \]\n {7}vdpa dev add name NAME mgmtdev MANAGEMENTDEV \[ device_features DEVICE_FEATURES\]\n/);
  assert.deepEqual(vdpa(bus, ...args('-- dev show')), { rc: 0, out: '', err: '' });
});

// ───────────────────────── batch ─────────────────────────

const SESSION_OUT = MGMTDEV_NET_TEXT
  + 'vdpa0: type network mgmtdev vdpasim_net vendor_id 0 max_vqs 3 max_vq_size 256\n'
  + BLK0
  + 'vdpa0: mac 00:11:22:33:44:55 link up link_announce false max_vq_pairs 1 mtu 9000 \n'
  + 'vdpa0: type network mgmtdev vdpasim_net vendor_id 0 max_vqs 3 max_vq_size 256\n';

test('-batch: one bus for the whole file; comments and blank lines skipped', () => {
  const { bus } = setup();
  assert.deepEqual(vdpa(bus, '-batch', fixture('session.batch')), { rc: 0, out: SESSION_OUT, err: '' });
  assert.deepEqual(bus.devices.map((d) => d.name), ['vdpa0']);
});

test('-batch -j: one JSON document per command', () => {
  const { bus } = setup();
  assert.deepEqual(vdpa(bus, '-j', '-b', fixture('session.batch')), {
    rc: 0,
    err: '',
    out: `{"mgmtdev":{"vdpasim_net":{"supported_classes":["net"],"max_supported_vqs":17,"dev_features":${NET_FEATURES_JSON}}}}\n`
      + `{"dev":{${DEV0_JSON},${BLK0_JSON}}}\n`
      + '{"config":{"vdpa0":{"mac":"00:11:22:33:44:55","link ":"up","link_announce ":false,"max_vq_pairs":1,"mtu":9000}}}\n'
      + `{"dev":{${DEV0_JSON}}}\n`,
  });
});

test('-batch stops at the first failure and reports FILE:LINE; -force runs on', () => {
  const file = fixture('errors.batch');
  const dup = 'kernel answers: File exists\n';
  const mac = 'Error: vdpa: Some provided attributes are not supported: 0x400.\nkernel answers: Operation not supported\n';
  {
    const { bus } = setup();
    assert.deepEqual(vdpa(bus, '-batch', file), { rc: 1, out: '', err: `${dup}Command failed ${file}:4\n` });
    assert.deepEqual(bus.devices.map((d) => d.name), ['vdpa0']);
  }
  {
    const { bus } = setup();
    assert.deepEqual(vdpa(bus, '-force', '-batch', file), {
      rc: 1,
      out: 'vdpa0: type network mgmtdev vdpasim_net vendor_id 0 max_vqs 3 max_vq_size 256\n'
        + 'vdpa1: type network mgmtdev vdpasim_net vendor_id 0 max_vqs 3 max_vq_size 256\n',
      err: `${dup}Command failed ${file}:4\n${mac}Command failed ${file}:7\n`,
    });
    assert.equal((bus.device('vdpa1').getConfig(10, 2)[0]! | (bus.device('vdpa1').getConfig(10, 2)[1]! << 8)), 1280, 'continued line');
  }
  {
    const { bus } = setup();
    assert.deepEqual(vdpa(bus, '-b', '/nonexistent.batch'), {
      rc: 1, out: '', err: 'Cannot open file "/nonexistent.batch" for reading: No such file or directory\n',
    });
  }
});

test('parseBatch: comments, continuation, quotes, line numbers', () => {
  assert.deepEqual(parseBatch('# only a comment\n\n  dev show  # trailing\ndev add name "a b" \\\n  mgmtdev \'x\'\nbad "quote\n'), [
    { line: 3, argv: ['dev', 'show'] },
    { line: 5, argv: ['dev', 'add', 'name', 'a b', 'mgmtdev', 'x'] },
    { line: 6, argv: null, error: 'Unterminated quoted string\n' },
  ]);
});

// ───────────────────────── helpers ─────────────────────────

test('formatJson: json_writer layout; featureNames; matches', () => {
  assert.equal(formatJson({ a: [], b: {}, c: [1, 'x', true] }), '{"a":[],"b":{},"c":[1,"x",true]}');
  assert.equal(formatJson({ a: [], b: {}, c: [1, 'x'] }, true), '{\n    "a": [ ],\n    "b": {},\n    "c": [ 1,"x" ]\n}');
  assert.deepEqual(featureNames((1n << 63n) | (1n << 40n) | (1n << 30n) | (1n << 24n) | 1n, 1), ['CSUM', 'NOTIFY_ON_EMPTY', 30, 40, 'SPEED_DUPLEX']);
  assert.deepEqual(featureNames((1n << 63n) | (1n << 24n) | (1n << 38n), 2), [24, 'NOTIFICATION_DATA', 63]);
  assert.equal(matches('sh', 'show'), true);
  assert.equal(matches('', 'show'), false);
  assert.equal(matches('shows', 'show'), false);
});

// ───────────────────────── the real binary ─────────────────────────

const built = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

before(() => {
  // bin/vdpa.mjs runs the compiled dist/ (as the published package does).
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.ok(existsSync(built));
});

test('bin/vdpa.mjs: -batch FILE and -batch - (stdin), exit codes', () => {
  const bin = fileURLToPath(new URL('../bin/vdpa.mjs', import.meta.url));
  const file = fixture('session.batch');
  const a = spawnSync(process.execPath, [bin, '-batch', file], { cwd: root, encoding: 'utf8' });
  assert.equal(a.stderr, '');
  assert.equal(a.stdout, SESSION_OUT);
  assert.equal(a.status, 0);

  const b = spawnSync(process.execPath, [bin, '-batch', '-'], { cwd: root, encoding: 'utf8', input: readFileSync(fixture('errors.batch'), 'utf8') });
  assert.equal(b.stdout, '');
  assert.equal(b.stderr, 'kernel answers: File exists\nCommand failed -:4\n');
  assert.equal(b.status, 1);

  const c = spawnSync(process.execPath, [bin, '-V'], { cwd: root, encoding: 'utf8' });
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { name: string; version: string };
  assert.equal(c.stdout, `vdpa utility, ${pkg.name}-${pkg.version}\n`);
  assert.equal(c.status, 0);
});

test('src/cli/main.ts under tsx: one process, one bus', () => {
  const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
  const r = spawnSync(process.execPath, ['--import', 'tsx', main, '-j', 'dev', 'show', 'vdpa0'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.stdout, '{"dev":{}}\n', 'a device added by another process does not exist here');
  assert.equal(r.stderr, 'Error: vdpa: device not found.\nkernel answers: No such device\n');
  assert.equal(r.status, 1);
});
