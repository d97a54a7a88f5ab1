// The Debian guest with its devices in a device worker (issue 10 §2/§3): v86 runs in this thread
// on a shared memory (v86SharedMemory), vdpasim_net and vdpasim_blk run in a device worker
// attached to that memory, and the PCI functions in this thread reach their vhost_vdpa nodes
// through openVhostSync; the worker's switch is linked to this thread's switch, where a host
// answers ping; the disk is a file the worker opens itself. The guest's own drivers see the
// same devices as in test/guest-v86.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIRTIO_F_RING_PACKED, VIRTIO_F_EVENT_IDX } from '../src/index.ts';
import { guestManifest, guestWithDevices, type GuestRig } from './helpers/v86-guest.ts';

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
let dir = '';
let rig: GuestRig | undefined;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vdpa-guest-worker-'));
  rig = await guestWithDevices(guestManifest(), { mode: 'worker', diskPath: join(dir, 'disk.img'), diskBytes: 16 << 20 });
});

after(async () => {
  await rig?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('v86 runs on a shared memory and the devices answer from the worker', async () => {
  const r = rig!;
  const p = r.attached[0]!.fn;
  assert.ok(r.worker);
  const drivers = await r.shell.ok('ls /sys/bus/virtio/drivers/virtio_net /sys/bus/virtio/drivers/virtio_blk');
  assert.equal((drivers.match(/virtio\d+/g) ?? []).length, 2, drivers);
  // Every ring variant the device offers by default: the guest takes packed and EVENT_IDX.
  const features = (await r.shell.ok('cat /sys/bus/virtio/devices/virtio0/features')).trim();
  assert.equal(features[VIRTIO_F_RING_PACKED], '1');
  assert.equal(features[VIRTIO_F_EVENT_IDX], '1');
  const stats = await r.worker!.bus.stats();
  assert.ok(stats.kicks > 0, 'the guest kicked the worker');
  assert.ok(stats.syncOps > 0, 'the PCI functions reached the worker through the mailbox');
  for (const a of r.attached) assert.equal(a.fn.badAccesses + a.fn.backendErrors, 0);
  assert.ok(p.numQueues >= 2);
});

test('ping across the worker\'s switch, linked to this thread\'s switch, to a host here', async () => {
  const r = rig!;
  await r.shell.ok('ifconfig eth0 10.0.0.2 netmask 255.255.255.0 up');
  const out = await r.shell.ok('ping -c 20 -i 0.02 -W 2 10.0.0.1', 60_000);
  assert.match(out, /20 packets transmitted, 20 packets received/, out);
  assert.ok(r.responder.stats.echoReplies >= 20);
});

test('a pattern written by the guest lands in the file the worker opened, and the host\'s bytes read back', async () => {
  const r = rig!;
  await r.shell.ok('dd if=/dev/urandom of=/tmp/p bs=64k count=16 2>/dev/null');
  const sum = (await r.shell.ok('md5sum /tmp/p')).split(' ')[0]!;
  await r.shell.ok('dd if=/tmp/p of=/dev/vda bs=64k seek=32 oflag=direct 2>/dev/null');
  const disk = readFileSync(r.diskPath);
  assert.equal(md5(disk.subarray(2 << 20, 3 << 20)), sum);
  const back = (await r.shell.ok('dd if=/dev/vda bs=64k skip=32 count=16 iflag=direct 2>/dev/null | md5sum')).split(' ')[0];
  assert.equal(back, sum);
  const zero = (await r.shell.ok('dd if=/dev/vda bs=64k skip=128 count=16 iflag=direct 2>/dev/null | md5sum')).split(' ')[0];
  assert.equal(zero, md5(disk.subarray(8 << 20, 9 << 20)));
});

test('sequential O_DIRECT requests to the worker\'s file backend are answered without waiting out the serving loop\'s park', async () => {
  // Each 4 KiB request is one backend write whose answer is a callback of the worker's event
  // loop. A serving loop parked in Atomics.wait held every one for its whole park (50 ms):
  // 2048 requests took 100 s, each ending its park by the timeout. So the check counts parks
  // that timed out, not milliseconds (a time limit is load-dependent: 15 s of a 40 s limit on a
  // loaded 2-core machine). Fixed, a park times out only when the guest leaves the worker idle
  // a whole park (18 in 2048 requests); broken, one per request (2057). The shell's limit is a
  // hang guard above the broken case's 100 s.
  const r = rig!;
  const s0 = await r.worker!.bus.stats();
  await r.shell.ok('dd if=/dev/zero of=/dev/vda bs=4k count=2048 oflag=direct 2>/dev/null', 300_000);
  const stats = await r.worker!.bus.stats();
  assert.ok(stats.kicks >= 2048, `kicks ${stats.kicks}`);
  const timedOut = (stats.sleeps - stats.wakeups) - (s0.sleeps - s0.wakeups);
  assert.ok(timedOut < 512, `${timedOut} parks of the serving loop ran out their timeout during 2048 requests`);
});
