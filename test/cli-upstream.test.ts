// The vdpa tool against upstream iproute2 (vdpa/vdpa.c at iproute2 9fe68807 and later,
// lib/utils.c, lib/ll_addr.c, glibc getopt_long) and drivers/vdpa/vdpa.c's extack messages:
// `dev set`, the global option parser, number and address parsing; and our additions for
// block devices (capacity on dev add, dev config show, image/backend through the API).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VdpaSimNet, Code, type BlkBackend,
} from '../src/index.ts';
import { runVdpa, VDPA_HELP, getU16, getU32, getU64Hex, llAddrA2n, parseSize, parseGlobalOptions } from '../src/cli/vdpa.ts';

function setup() {
  const platform = Platform.create({ ramSize: 32 << 20, privateSize: 16 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(platform));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(platform));
  return { platform, bus };
}

function vdpa(bus: VdpaBus, cmd: string | string[]) {
  let out = '';
  let err = '';
  const rc = runVdpa(typeof cmd === 'string' ? cmd.split(' ') : cmd, { bus, out: (s) => (out += s), err: (s) => (err += s), version: 'v' });
  return { rc, out, err };
}

const ok = (bus: VdpaBus, cmd: string) => {
  const r = vdpa(bus, cmd);
  assert.deepEqual({ rc: r.rc, err: r.err }, { rc: 0, err: '' }, cmd);
  return r.out;
};

const UNKNOWN = (getoptMsg: string) => ({ rc: 1, out: '', err: `${getoptMsg}Unknown option.\n${VDPA_HELP}` });

test('dev set name NAME mac MAC: the new address in config space, and upstream errors', () => {
  const { bus, platform } = setup();
  ok(bus, 'dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55');
  ok(bus, 'dev add name blk0 mgmtdev vdpasim_blk');
  const gen = bus.device('vdpa0').getGeneration();
  assert.equal(ok(bus, 'dev set name vdpa0 mac 02:aa:bb:cc:dd:ee'), '');
  assert.match(ok(bus, 'dev config show vdpa0'), /^vdpa0: mac 02:aa:bb:cc:dd:ee /);
  assert.notEqual(bus.device('vdpa0').getGeneration(), gen, 'a config change the driver sees');
  assert.equal(ok(bus, 'dev set n vdpa0 mac 2:0:0:0:0:1'), '', 'name by prefix; short hex bytes');
  assert.match(ok(bus, 'dev config show vdpa0'), /mac 02:00:00:00:00:01 /);
  // iproute2 parse errors.
  assert.deepEqual(vdpa(bus, 'dev set'), { rc: 1, out: '', err: 'device name is not set.\n' });
  assert.deepEqual(vdpa(bus, 'dev set name vdpa0 mtu 1500'), { rc: 1, out: '', err: 'Unknown option "mtu"\n' });
  assert.deepEqual(vdpa(bus, 'dev set name vdpa0 mac'), { rc: 1, out: '', err: 'String parameter expected\n' });
  // vdpa_nl_cmd_dev_attr_set_doit / vdpa_dev_net_device_attr_set.
  assert.deepEqual(vdpa(bus, 'dev set name nope mac 02:00:00:00:00:01'), { rc: 1, out: '', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n' });
  assert.deepEqual(vdpa(bus, 'dev set name vdpa0'), { rc: 1, out: '', err: 'kernel answers: Operation not supported\n' });
  assert.deepEqual(vdpa(bus, 'dev set name vdpa0 mac 01:00:5e:00:00:01'), { rc: 1, out: '', err: 'Error: vdpa: Invalid MAC address.\nkernel answers: Operation not supported\n' });
  assert.deepEqual(vdpa(bus, 'dev set name vdpa0 mac 0:0:0:0:0:0'), { rc: 1, out: '', err: 'Error: vdpa: Invalid MAC address.\nkernel answers: Operation not supported\n' });
  assert.deepEqual(vdpa(bus, 'dev set name blk0 mac 02:00:00:00:00:01'), { rc: 0, out: '', err: 'Warning: vdpa: blk0 device not supported.\n' }, 'the kernel answers 0 with an extack');
  bus.addDevice(new VdpaSimNet(platform, { name: 'raw' }));
  assert.deepEqual(vdpa(bus, 'dev set name raw mac 02:00:00:00:00:01'), { rc: 1, out: '', err: 'Error: vdpa: unmanaged vdpa device.\nkernel answers: Invalid argument\n' });
  assert.match(ok(bus, 'dev config show vdpa0'), /mac 02:00:00:00:00:01 /, 'failed sets changed nothing');
});

test('dev set through the management API; a MAC set keeps the receive filter in step', () => {
  const { bus } = setup();
  const dev = bus.devAdd('vdpasim_net', 'vdpa0', { mac: '02:00:00:00:00:01' });
  const m = bus.mgmtDevices.find((x) => x.name === 'vdpasim_net')!;
  m.setAttr!(dev, { mac: '02:00:00:00:00:02' });
  assert.deepEqual([...dev.mac], [2, 0, 0, 0, 0, 2]);
  assert.throws(() => m.setAttr!(dev, {}), (e: unknown) => (e as { code?: string }).code === Code.Unsupported);
  assert.throws(() => m.setAttr!(dev, { mac: '03:00:00:00:00:02' }), (e: unknown) => (e as { code?: string }).code === Code.InvalidArgument);
  const blkMgmt = bus.mgmtDevices.find((x) => x.name === 'vdpasim_blk')!;
  assert.equal(blkMgmt.setAttr, undefined, 'vdpasim_blk has no dev_set_attr');
});

test('blk: capacity on dev add, and dev config show with its VDPA_ATTR_DEV_BLK_CFG_* fields', () => {
  const { bus } = setup();
  ok(bus, 'dev add name blk1 mgmtdev vdpasim_blk capacity 1M');
  ok(bus, 'dev add name blk2 mgmtdev vdpasim_blk capacity 4k device_features 0x100000020');
  assert.equal(ok(bus, 'dev config show blk2'), 'blk2: capacity 8 read_only true flush false \n', 'only what RO + VERSION_1 offer');
  assert.equal(ok(bus, '-j dev config show blk2'), '{"config":{"blk2":{"capacity":8,"read_only":true,"flush":false}}}\n');
  assert.match(ok(bus, 'dev config show blk1'), /^blk1: capacity 2048 size_max 65536 blk_size 512 seg_max \d+ max_discard_sec 65535 /);
  assert.deepEqual(vdpa(bus, 'dev add name big mgmtdev vdpasim_blk capacity 1G'), { rc: 1, out: '', err: 'kernel answers: Cannot allocate memory\n' });
  assert.deepEqual(vdpa(bus, 'dev add name z mgmtdev vdpasim_blk capacity 0'), {
    rc: 1, out: '', err: 'Error: capacity "0" is not a positive multiple of 512 bytes (suffixes K, M, G, T).\n',
  });
  assert.deepEqual(bus.devices.map((d) => d.name), ['blk1', 'blk2']);
});

test('blk through the management API: capacity, an initial image, a backend; created and deleted like the others', async () => {
  const { bus, platform } = setup();
  const image = new Uint8Array(1000).map((_, i) => i & 0xff);
  const withImage = bus.devAdd('vdpasim_blk', 'img', { image });
  assert.equal(withImage.capacity, 2, 'the image rounded up to whole sectors');
  assert.deepEqual(platform.read(withImage.disk, 1024), new Uint8Array(1024).map((_, i) => (i < 1000 ? i & 0xff : 0)));
  assert.throws(() => bus.devAdd('vdpasim_blk', 'x', { image, capacity: 1 }), (e: unknown) => (e as { code?: string }).code === Code.InvalidArgument);
  const store = new Uint8Array(64 * 512);
  const backend: BlkBackend = {
    capacity: 64,
    read: async (s, len) => store.slice(s * 512, s * 512 + len),
    write: async (s, d) => { store.set(d, s * 512); },
    flush: async () => {},
  };
  const viaBackend = bus.devAdd('vdpasim_blk', 'be', { backend });
  assert.equal(viaBackend.backend, backend);
  assert.equal(viaBackend.capacity, 64);
  assert.throws(() => bus.devAdd('vdpasim_blk', 'y', { backend, capacity: 8 }), (e: unknown) => (e as { code?: string }).code === Code.InvalidArgument);
  assert.throws(() => bus.devAdd('vdpasim_net', 'n', { capacity: 8 }), (e: unknown) => (e as { code?: string }).code === Code.Unsupported);
  assert.equal(bus.mgmtDeviceOf('be'), 'vdpasim_blk');
  assert.match(ok(bus, 'dev show be'), /^be: type block mgmtdev vdpasim_blk /);
  assert.equal(ok(bus, 'dev del be'), '');
  assert.deepEqual(bus.devices.map((d) => d.name), ['img']);
});

test('global options as getopt_long parses vdpa.c\'s "Vjpsh" and long options', () => {
  const { bus } = setup();
  assert.equal(ok(bus, '-jp dev show'), '{\n    "dev": {}\n}\n');
  assert.equal(ok(bus, '--json dev show'), '{"dev":{}}\n');
  assert.equal(ok(bus, '--js --pr dev show'), '{\n    "dev": {}\n}\n', 'long options abbreviate');
  assert.equal(ok(bus, 'dev show -j'), '{"dev":{}}\n', 'GNU getopt permutes');
  assert.deepEqual(vdpa(bus, 'dev show -- -j'), { rc: 1, out: '', err: 'Error: vdpa: device not found.\nkernel answers: No such device\n' });
  assert.deepEqual(vdpa(bus, '-V'), { rc: 0, out: 'vdpa utility, v\n', err: '' });
  assert.deepEqual(vdpa(bus, '--Version'), { rc: 0, out: 'vdpa utility, v\n', err: '' });
  assert.deepEqual(vdpa(bus, '--help'), { rc: 0, out: '', err: VDPA_HELP });
  // "-json" is -j -s -o -n to getopt_long: 's' is in the optstring but not in vdpa.c's switch.
  assert.deepEqual(vdpa(bus, '-json dev show'), UNKNOWN(''));
  assert.deepEqual(vdpa(bus, '-pretty dev show'), UNKNOWN("vdpa: invalid option -- 'r'\n"));
  // -n[o-nice-names] is in vdpa.c's help but not in its optstring.
  assert.deepEqual(vdpa(bus, '-n dev show'), UNKNOWN("vdpa: invalid option -- 'n'\n"));
  assert.deepEqual(vdpa(bus, '--no-nice-names dev show'), UNKNOWN("vdpa: unrecognized option '--no-nice-names'\n"));
  assert.deepEqual(vdpa(bus, '--json=yes dev show'), UNKNOWN("vdpa: option '--json' doesn't allow an argument\n"));
  assert.deepEqual(vdpa(bus, '--batch'), UNKNOWN("vdpa: option '--batch' requires an argument\n"));
  assert.match(VDPA_HELP, /-b\[atch\] filename {3}\(vdpa-wasm extension\)/, 'help says -batch/-force are ours');
  const g = parseGlobalOptions(['-f', '--batch=x', 'dev'], 'vdpa', '');
  assert.deepEqual({ force: g.force, batch: g.batch, rest: g.rest, stop: g.stop }, { force: true, batch: 'x', rest: ['dev'], stop: null });
  const h = parseGlobalOptions(['-force', '-ba', 'f.batch'], 'vdpa', '');
  assert.deepEqual({ force: h.force, batch: h.batch }, { force: true, batch: 'f.batch' }, 'one-dash long forms of our options');
});

test('numbers as get_u16 / get_u32 / get_u64 read them; addresses as ll_addr_a2n', () => {
  assert.deepEqual(['7', '+7', ' 7', '-0', '65535'].map(getU16), [7, 7, 7, 0, 65535]);
  assert.deepEqual(['65536', '-1', '0x10', '7 ', '', 'big'].map(getU16), [null, null, null, null, null, null]);
  assert.equal(getU32('4294967295'), 4294967295);
  assert.equal(getU32('4294967296'), null);
  assert.equal(getU64Hex('0x300000021'), 0x300000021n);
  assert.equal(getU64Hex('FFFFFFFFFFFFFFFF'), (1n << 64n) - 1n);
  assert.equal(getU64Hex('10000000000000000'), null, 'ERANGE');
  assert.equal(getU64Hex('-1'), (1n << 64n) - 1n, 'strtoull negates modulo 2^64');
  const mac = (s: string) => [...llAddrA2n(s)].map((b) => b.toString(16).padStart(2, '0')).join(':');
  assert.equal(mac('2:11:22'), '02:11:22:00:00:00', 'fewer bytes: the rest stay zero');
  assert.equal(mac('0x2:1:2:3:4:5:6:7'), '02:01:02:03:04:05', 'more: ignored');
  assert.equal(mac('1g:2:3:4:5:6'), '01:02:03:04:05:06', 'sscanf stops at the first non-hex digit');
  assert.equal(mac('10.1.2.3'), '0a:01:02:03:00:00', 'an IPv4 address gives four bytes');
  assert.throws(() => llAddrA2n('1:2:300'), { message: '"300" is invalid lladdr.\n' });
  assert.throws(() => llAddrA2n('1:-2'), { message: '"-2" is invalid lladdr.\n' });
  assert.deepEqual(['512', '4k', '1M', '1MiB', '2g', '1T'].map(parseSize), [1, 8, 2048, 2048, 4194304, 2147483648]);
  assert.deepEqual(['0', '511', '1.5M', 'x', ''].map(parseSize), [null, null, null, null, null]);
});
