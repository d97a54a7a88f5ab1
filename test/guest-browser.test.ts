// The Debian i386 guest of test/guest-v86.test.ts, booted in headless Chromium from a page
// (issue 10 §3): test/browser/guest.html starts an emulator worker running v86 on a shared
// WebAssembly.Memory (v86SharedMemory, JIT included) with the images fetched from this test's
// static server, and vdpasim_net + vdpasim_blk plugged in with attachV86. The guest's serial
// console is relayed worker → page → here, where SerialShell drives its busybox shell.
// Checked in the guest: virtio_net and virtio_blk bound to our two PCI functions, a ping across
// the switch to the PingResponder on its other port, a pattern written to /dev/vda that is on
// the host side's disk byte for byte, and the host's pattern read back with O_DIRECT.
// The devices run in a device worker (test/browser/guest-device-worker.js): the emulator worker
// opens their vhost nodes with RemoteVdpaBus.openVhostSync, so the guest's register accesses
// block there on a mailbox, and interrupts come back as call doorbells. VDPA_GUEST_DEVICES=inthread
// runs them in the emulator worker instead, as test/guest-v86.test.ts does in Node.
// Skipped without /usr/bin/chromium (outside CI), like test/vmm-browser.test.ts; needs dist/
// (npm run build) and the guest images (scripts/fetch-guest.mjs, run by guestManifest()).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, watchPage } from './helpers/chromium.ts';
import { serveStatic, type StaticServer } from './browser/server.ts';
import { GUEST_CMDLINE, guestManifest, SerialShell } from './helpers/v86-guest.ts';
import type { HostStats } from '../src/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Where the devices run: 'worker' (the device worker) or 'inthread' (in the emulator worker). */
const DEVICES = process.env.VDPA_GUEST_DEVICES === 'inthread' ? 'inthread' : 'worker';

interface Started { bootMs: number; loadMs: number; shared: boolean; devices: string }
interface GuestWindow {
  __guestStart(cfg: unknown): Promise<Started>;
  __guestCall(op: string, ...args: unknown[]): Promise<unknown>;
  __guestSend(s: string): void;
}
interface ResponderStats { arpReplies: number; echoReplies: number; ignored: number }

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

describe('the Debian guest in Chromium: v86 in a worker on our devices', { skip: existsSync(CHROMIUM) || process.env.CI ? false : `${CHROMIUM} not found: skipped` }, () => {
  let server: StaticServer | undefined;
  let browser: Browser | undefined;
  let page: Page;
  let shell: SerialShell;
  let started: Started;
  const problems: string[] = [];
  const call = (op: string, ...args: unknown[]) =>
    page.evaluate(([o, a]) => (window as unknown as GuestWindow).__guestCall(o as string, ...(a as unknown[])), [op, args] as const);
  const host = (op: string, ...args: unknown[]) => call('host', op, args);
  /** Host-side disk bytes [at, at + len). */
  const disk = async (at: number, len: number) => Buffer.from((await host('disk', at, len)) as string, 'base64');

  before(async () => {
    if (!existsSync(path.join(ROOT, 'dist/v86/index.js'))) assert.fail('dist/v86/index.js is missing: run `npm run build` first');
    const m = guestManifest();
    server = await serveStatic(ROOT, ['dist', 'test/browser', 'node_modules/v86/build'], {
      files: { '/guest/kernel': m.kernel, '/guest/initrd': m.initramfs, '/guest/bios': m.bios, '/guest/vgabios': m.vgabios },
    });
    browser = await launchChromium();
    page = await browser.newPage();
    watchPage(page, (p) => problems.push(p));
    const listeners: Array<(b: number) => void> = [];
    await page.exposeFunction('__guestSerial', (s: string) => {
      for (let i = 0; i < s.length; i++) for (const l of listeners) l(s.charCodeAt(i));
    });
    shell = new SerialShell({
      add_listener: (_event, l) => void listeners.push(l),
      serial0_send: (s) => {
        page.evaluate((x) => (window as unknown as GuestWindow).__guestSend(x), s).catch((e: Error) => problems.push(`serial input: ${e.message}`));
      },
    });
    await page.goto(`${server.url}/test/browser/guest.html`);
    await page.waitForFunction(() => '__guestPage' in window, undefined, { timeout: 30_000 });
    const cfg = {
      devices: DEVICES,
      cmdline: GUEST_CMDLINE,
      memoryMiB: 128,
      files: { wasm: '/node_modules/v86/build/v86.wasm', kernel: '/guest/kernel', initrd: '/guest/initrd', bios: '/guest/bios', vgabios: '/guest/vgabios' },
    };
    try {
      started = await page.evaluate((c) => (window as unknown as GuestWindow).__guestStart(c), cfg);
    } catch (e) {
      throw new Error(`${(e as Error).message}\nguest output:\n${shell.log.slice(-3000)}`);
    }
  }, { timeout: 150_000 });

  after(async () => {
    if (browser) await call('stop').catch(() => {});
    await browser?.close();
    await server?.close();
  });

  test('v86 runs on the shared memory and the guest binds virtio_net and virtio_blk to our two PCI functions', async (t) => {
    t.diagnostic(`devices ${DEVICES}: v86 loaded in ${started.loadMs.toFixed(0)} ms, the guest booted to its shell in ${started.bootMs.toFixed(0)} ms`);
    assert.equal(started.shared, true);
    assert.equal(started.devices, DEVICES);
    assert.ok(started.bootMs > 0);
    const drivers = await shell.ok('ls /sys/bus/virtio/drivers/virtio_net /sys/bus/virtio/drivers/virtio_blk');
    assert.equal((drivers.match(/virtio\d+/g) ?? []).length, 2, drivers);
    const ids = await shell.ok('cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device | tr "\\n" " "');
    assert.equal((ids.match(/0x1af4/g) ?? []).length, 2, ids);
    assert.equal((ids.match(/0x1041/g) ?? []).length, 1, ids); // 0x1040 + VIRTIO_ID_NET
    assert.equal((ids.match(/0x1042/g) ?? []).length, 1, ids); // 0x1040 + VIRTIO_ID_BLOCK
  });

  test('virtio_net: the guest pings the PingResponder across the switch', async () => {
    assert.equal((await shell.ok('cat /sys/class/net/eth0/address')).trim(), '52:54:00:12:02:01');
    await shell.ok('ifconfig eth0 10.0.0.2 netmask 255.255.255.0 up');
    const out = await shell.ok('ping -c 10 -i 0.05 -W 2 10.0.0.1', 60_000);
    assert.match(out, /10 packets transmitted, 10 packets received/, out);
    const r = (await host('responder')) as ResponderStats;
    assert.ok(r.echoReplies >= 10, JSON.stringify(r));
    assert.ok(r.arpReplies >= 1, JSON.stringify(r));
  });

  test('virtio_blk: a pattern written in the guest is on the host-side disk, and the host\'s pattern reads back', async () => {
    assert.equal((await shell.ok('blockdev --getsize64 /dev/vda')).trim(), String(16 << 20));
    // 1 MiB of random bytes through the page cache at 1 MiB, 1 MiB with O_DIRECT at 4 MiB.
    await shell.ok('dd if=/dev/urandom of=/tmp/p bs=64k count=16 2>/dev/null');
    const sum = (await shell.ok('md5sum /tmp/p')).split(' ')[0]!;
    await shell.ok('dd if=/tmp/p of=/dev/vda bs=64k seek=16 conv=fsync 2>/dev/null');
    await shell.ok('dd if=/tmp/p of=/dev/vda bs=64k seek=64 oflag=direct 2>/dev/null');
    assert.equal(md5(await disk(1 << 20, 1 << 20)), sum);
    assert.equal(md5(await disk(4 << 20, 1 << 20)), sum);
    // Read direction: the host's pattern at 8 MiB, with O_DIRECT so the page cache cannot answer.
    const back = (await shell.ok('dd if=/dev/vda bs=64k skip=128 count=16 iflag=direct 2>/dev/null | md5sum')).split(' ')[0];
    assert.equal(back, md5(await disk(8 << 20, 1 << 20)));
  });

  test('no bad register accesses or backend errors, and the page stayed clean', async () => {
    const pci = (await call('pci')) as Array<{ slot: number; badAccesses: number; backendErrors: number }>;
    assert.equal(pci.length, 2);
    for (const f of pci) assert.equal(f.badAccesses + f.backendErrors, 0, JSON.stringify(f));
    const dev = (await call('deviceStats')) as HostStats | null;
    if (DEVICES === 'worker') {
      // The guest's register accesses crossed the mailboxes, its notifies rang the kick doorbells.
      assert.ok(dev && dev.syncOps > 50 && dev.kicks > 50, JSON.stringify(dev));
    } else assert.equal(dev, null);
    assert.deepEqual(problems, []);
  });
});
