// A real Linux guest on our devices (issue 10 §3): Debian's i386 kernel boots in v86 under
// Node, and its own virtio_pci / virtio_net / virtio_blk drivers drive vdpasim_net and
// vdpasim_blk through the v86 adapter (vdpa-wasm/v86: a VirtioPciFunction per device in front
// of its vhost_vdpa node, guest RAM mapped by IOTLB UPDATE).
//
// One boot carries every ring variant at once: four net and four blk devices, each with one of
// split/packed × EVENT_IDX on/off offered (the guest negotiates what is offered: the test reads
// the features back from sysfs). In the guest: the drivers are bound, each interface pings a
// host on the far side of its own L2 switch (a vdpasim_net + virtio_vdpa + PingResponder),
// each disk gets a pattern written through the guest's page cache and with O_DIRECT and read
// back (compared with the disk file on the host, both ways), and one disk gets an ext2
// filesystem made, mounted, written and unmounted in the guest, then `e2fsck -fn` on the host.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V86 } from 'v86';
import {
  L2Switch, type PingResponder,
  VDPASIM_NET_FEATURES, VDPASIM_BLK_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_EVENT_IDX, featureBit, type VdpaSimNet,
} from '../src/index.ts';
import { FileBackend } from '../src/node.ts';
import type { V86Attachment } from '../src/v86/index.ts';
import { guestManifest, startGuest, PingHosts, v86VhostBus, onSwitch, type SerialShell } from './helpers/v86-guest.ts';

const VARIANTS = [
  { packed: false, eventIdx: true },
  { packed: true, eventIdx: true },
  { packed: false, eventIdx: false },
  { packed: true, eventIdx: false },
] as const;
const name = (v: (typeof VARIANTS)[number]) => `${v.packed ? 'packed' : 'split'}${v.eventIdx ? '+event_idx' : ''}`;
const withVariant = (all: bigint, v: (typeof VARIANTS)[number]) =>
  (all & ~featureBit(VIRTIO_F_RING_PACKED) & ~featureBit(VIRTIO_F_EVENT_IDX)) |
  (v.packed ? featureBit(VIRTIO_F_RING_PACKED) : 0n) | (v.eventIdx ? featureBit(VIRTIO_F_EVENT_IDX) : 0n);

const DISK_BYTES = 16 << 20;
/** e2fsprogs live in /usr/sbin, which a non-root PATH may lack. */
const sbin = (tool: string) => (existsSync(`/usr/sbin/${tool}`) ? `/usr/sbin/${tool}` : tool);
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
const mac = (side: number, i: number) => `52:54:00:12:${side.toString(16).padStart(2, '0')}:${(i + 1).toString(16).padStart(2, '0')}`;

let dir = '';
let emulator: V86 | undefined;
let shell: SerialShell;
let bootMs = 0;
const attached: V86Attachment[] = [];
const responders: PingResponder[] = [];
const disks: string[] = [];

before(async () => {
  const m = guestManifest();
  dir = mkdtempSync(join(tmpdir(), 'vdpa-guest-'));
  // The far side of each switch: a host on its own platform (virtio_vdpa + the net driver).
  const hosts = new PingHosts();
  const switches = VARIANTS.map((_, i) => {
    const sw = new L2Switch();
    responders.push(hosts.add(sw, mac(1, i), `10.0.${i}.1`));
    return sw;
  });
  for (let i = 0; i < VARIANTS.length; i++) {
    const path = join(dir, `disk${i}.img`);
    // A known pattern at 8 MiB the guest reads back (the read direction, checked by md5).
    const img = new Uint8Array(DISK_BYTES);
    for (let j = 8 << 20; j < (9 << 20); j += 4) new DataView(img.buffer).setUint32(j, Math.imul(j ^ (i << 24), 2654435761) >>> 0, true);
    writeFileSync(path, img);
    disks.push(path);
  }
  const backends = await Promise.all(disks.map((p) => FileBackend.open(p)));

  ({ emulator, shell, bootMs } = await startGuest(m, {
    setup: (emu) => {
      const g = v86VhostBus(emu);
      VARIANTS.forEach((v, i) => {
        onSwitch(switches[i]!, g.bus.devAdd('vdpasim_net', `gnet${i}`, { mac: mac(2, i), deviceFeatures: withVariant(VDPASIM_NET_FEATURES, v) }) as VdpaSimNet);
        attached.push(g.plug(`gnet${i}`, { slot: 8 + i }));
      });
      VARIANTS.forEach((v, i) => {
        g.bus.devAdd('vdpasim_blk', `gblk${i}`, { backend: backends[i]!, deviceFeatures: withVariant(VDPASIM_BLK_FEATURES, v) });
        attached.push(g.plug(`gblk${i}`, { slot: 12 + i }));
      });
    },
  }));
});

after(() => {
  for (const a of attached) a.close();
  emulator?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the guest boots to its shell with our eight PCI functions and virtio drivers bound to them', async () => {
  assert.ok(bootMs > 0);
  const drivers = await shell.ok('ls /sys/bus/virtio/drivers/virtio_net /sys/bus/virtio/drivers/virtio_blk');
  assert.equal((drivers.match(/virtio\d+/g) ?? []).length, 8, drivers);
  const ids = await shell.ok('cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device | tr "\\n" " "');
  assert.equal((ids.match(/0x1af4/g) ?? []).length, 8, ids);
  assert.equal((ids.match(/0x1041/g) ?? []).length, 4, ids); // 0x1040 + VIRTIO_ID_NET
  assert.equal((ids.match(/0x1042/g) ?? []).length, 4, ids); // 0x1040 + VIRTIO_ID_BLOCK
  for (const a of attached) assert.equal(a.fn.badAccesses + a.fn.backendErrors, 0);
});

for (const [i, v] of VARIANTS.entries()) {
  test(`virtio_net over ${name(v)}: the guest negotiated it and pings a host across the switch`, async () => {
    const dev = (await shell.ok(`basename $(readlink /sys/class/net/eth${i}/device)`)).trim();
    const features = (await shell.ok(`cat /sys/bus/virtio/devices/${dev}/features`)).trim();
    assert.equal(features[VIRTIO_F_RING_PACKED], v.packed ? '1' : '0', features);
    assert.equal(features[VIRTIO_F_EVENT_IDX], v.eventIdx ? '1' : '0', features);
    const mac0 = (await shell.ok(`cat /sys/class/net/eth${i}/address`)).trim();
    await shell.ok(`ifconfig eth${i} 10.0.${i}.2 netmask 255.255.255.0 up`);
    const out = await shell.ok(`ping -c 10 -i 0.05 -W 2 10.0.${i}.1`, 60_000);
    assert.match(out, /10 packets transmitted, 10 packets received/, out);
    assert.ok(responders[i]!.stats.echoReplies >= 10);
    assert.ok(responders[i]!.stats.arpReplies >= 1);
    // The guest kept the MAC the management device provisioned (config space read through GET_CONFIG).
    assert.ok(['52:54:00:12:02:0' + (i + 1)].includes(mac0), mac0);
  });
}

for (const [i, v] of VARIANTS.entries()) {
  test(`virtio_blk over ${name(v)}: a pattern written in the guest is on the host's disk, and the host's pattern reads back`, async () => {
    const vd = `vd${String.fromCharCode(97 + i)}`;
    const dev = (await shell.ok(`basename $(readlink /sys/block/${vd}/device)`)).trim();
    const features = (await shell.ok(`cat /sys/bus/virtio/devices/${dev}/features`)).trim();
    assert.equal(features[VIRTIO_F_RING_PACKED], v.packed ? '1' : '0', features);
    assert.equal(features[VIRTIO_F_EVENT_IDX], v.eventIdx ? '1' : '0', features);
    assert.equal((await shell.ok(`blockdev --getsize64 /dev/${vd}`)).trim(), String(DISK_BYTES));
    // 1 MiB of random bytes through the page cache at 1 MiB, 1 MiB with O_DIRECT at 4 MiB.
    await shell.ok('dd if=/dev/urandom of=/tmp/p bs=64k count=16 2>/dev/null');
    const sum = (await shell.ok('md5sum /tmp/p')).split(' ')[0]!;
    await shell.ok(`dd if=/tmp/p of=/dev/${vd} bs=64k seek=16 conv=fsync 2>/dev/null`);
    await shell.ok(`dd if=/tmp/p of=/dev/${vd} bs=64k seek=64 oflag=direct 2>/dev/null`);
    const host = readFileSync(disks[i]!);
    assert.equal(md5(host.subarray(1 << 20, 2 << 20)), sum);
    assert.equal(md5(host.subarray(4 << 20, 5 << 20)), sum);
    // Read direction: the host's pattern at 8 MiB, with O_DIRECT so the page cache cannot answer.
    const back = (await shell.ok(`dd if=/dev/${vd} bs=64k skip=128 count=16 iflag=direct 2>/dev/null | md5sum`)).split(' ')[0];
    assert.equal(back, md5(host.subarray(8 << 20, 9 << 20)));
  });
}

test('an ext2 filesystem made and written in the guest passes e2fsck on the host, with the files intact', async () => {
  const vd = 'vdd';
  await shell.ok(`mke2fs -q -b 4096 /dev/${vd} 2>&1`, 120_000);
  await shell.ok(`mount -t ext2 /dev/${vd} /mnt`);
  await shell.ok('echo hello from the guest > /mnt/hello.txt && mkdir /mnt/d');
  await shell.ok('dd if=/dev/urandom of=/mnt/d/blob bs=1k count=700 2>/dev/null');
  const sum = (await shell.ok('md5sum /mnt/d/blob')).split(' ')[0]!;
  await shell.ok('umount /mnt && sync');
  const img = disks[3]!;
  execFileSync(sbin('e2fsck'), ['-fn', img], { stdio: 'pipe' }); // throws on any problem (exit ≠ 0)
  assert.equal(execFileSync(sbin('debugfs'), ['-R', 'cat /hello.txt', img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }), 'hello from the guest\n');
  const blob = join(dir, 'blob');
  execFileSync(sbin('debugfs'), ['-R', `dump /d/blob ${blob}`, img], { stdio: 'ignore' });
  assert.equal(md5(readFileSync(blob)), sum);
});
