// Guest-visible figures (issue 10 §4): a Debian i386 kernel in v86 under Node, its own virtio
// drivers on vdpasim_net and vdpasim_blk through the v86 adapter, measured from inside the guest.
//   boot      run() → the guest's init line, without our devices and with a net + a blk device
//   ping      RTT p50/p99 of `ping -i 0.01` to a PingResponder host across the L2 switch
//   dd        MB/s of O_DIRECT writes and reads to /dev/vda (busybox dd prints them)
//   cost      share of the emulator thread's CPU samples spent in the package (V8 profiler on
//             this thread while the guest runs dd + ping): device in this thread vs in a worker
// Run: npm run bench:guest     (GUEST_BOOTS=n boots per arm, default 2; GUEST_PINGS, default 300)
import { Session } from 'node:inspector/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { V86 } from 'v86';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, L2Switch, createVirtioVdpa, PingResponder, quantile, type VdpaSimNet,
} from '../src/index.ts';
import { FileBackend } from '../src/node.ts';
import { attachV86, v86Platform, type V86Attachment } from '../src/v86/index.ts';
import { guestManifest, startGuest, type GuestManifest, type SerialShell } from '../test/helpers/v86-guest.ts';

const BOOTS = Number(process.env.GUEST_BOOTS ?? 2);
const PINGS = Number(process.env.GUEST_PINGS ?? 300);
const SRC = fileURLToPath(new URL('../src/', import.meta.url));

interface Rig { emulator: V86; shell: SerialShell; bootMs: number; close(): void }

/** Boots the guest with a net device (on a switch with a ping responder) and a 64 MiB blk file, in this thread. */
async function bootWithDevices(m: GuestManifest, dir: string): Promise<Rig> {
  const hp = Platform.create({ ramSize: 16 << 20 });
  const hbus = new VdpaBus();
  hbus.registerMgmtDevice(new VdpaSimNetMgmt(hp));
  const virtio = createVirtioVdpa(hp, { queueSize: 256 });
  hbus.registerDriver(virtio);
  const sw = new L2Switch();
  const peer = hbus.devAdd('vdpasim_net', 'peer', { mac: '52:54:00:00:01:01' }) as VdpaSimNet;
  const pp = sw.connect(peer);
  peer.attachPort((f) => sw.input(pp, f));
  const drv = virtio.net('peer');
  const responder = new PingResponder({ mac: '52:54:00:00:01:01', ip: '10.0.0.1' });
  drv.onFrame((f) => {
    const r = responder.answer(f);
    if (r) drv.send(r);
  });
  const backend = await FileBackend.open(join(dir, `disk-${Date.now()}.img`), { size: 64 << 20 });
  const attached: V86Attachment[] = [];
  const { emulator, shell, bootMs } = await startGuest(m, {
    setup: (emu) => {
      const p = v86Platform(emu, { privateSize: 16 << 20 });
      const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
      bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
      bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
      const vhost = new VhostVdpa(p);
      bus.registerDriver(vhost);
      const net = bus.devAdd('vdpasim_net', 'gnet', { mac: '52:54:00:00:02:01' }) as VdpaSimNet;
      const port = sw.connect(net);
      net.attachPort((f) => sw.input(port, f));
      bus.devAdd('vdpasim_blk', 'gblk', { backend });
      attached.push(attachV86(emu, p, vhost.open(vhost.nodeOf('gnet'))));
      attached.push(attachV86(emu, p, vhost.open(vhost.nodeOf('gblk'))));
    },
  });
  return {
    emulator, shell, bootMs,
    close() {
      for (const a of attached) a.close();
      emulator.destroy();
    },
  };
}

async function bootBare(m: GuestManifest): Promise<Rig> {
  const { emulator, shell, bootMs } = await startGuest(m);
  return { emulator, shell, bootMs, close: () => emulator.destroy() };
}

async function ping(shell: SerialShell, n: number): Promise<number[]> {
  await shell.ok('ifconfig eth0 10.0.0.2 netmask 255.255.255.0 up');
  const out = await shell.ok(`ping -q -c 3 10.0.0.1 >/dev/null; ping -c ${n} -i 0.01 10.0.0.1`, 120_000);
  const rtts = [...out.matchAll(/time=([\d.]+) ms/g)].map((x) => Number(x[1]));
  if (rtts.length !== n) throw new Error(`ping: ${rtts.length} of ${n} replies\n${out.slice(-500)}`);
  return rtts.sort((a, b) => a - b);
}

/** MB/s of `dd bs=… count=…`, timed by the guest's own clock (/proc/uptime, 10 ms ticks). */
async function dd(shell: SerialShell, args: string, bytes: number): Promise<number> {
  const out = await shell.ok(`cut -d' ' -f1 /proc/uptime; dd ${args} 2>/dev/null; cut -d' ' -f1 /proc/uptime`, 300_000);
  const [t0, t1] = out.trim().split('\n').map(Number);
  if (!(t1! > t0!)) throw new Error(`dd ${args}: ${out}`);
  return bytes / (t1! - t0!) / 1e6;
}

/** Share of this thread's CPU profile samples that have package code (src/) on the stack. */
async function packageShare(work: () => Promise<void>): Promise<{ share: number; samples: number }> {
  const s = new Session();
  s.connect();
  await s.post('Profiler.enable');
  await s.post('Profiler.setSamplingInterval', { interval: 200 });
  await s.post('Profiler.start');
  await work();
  const { profile } = await s.post('Profiler.stop');
  s.disconnect();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const ours = new Map<number, boolean>();
  const isOurs = (id: number): boolean => {
    const known = ours.get(id);
    if (known !== undefined) return known;
    const n = byId.get(id)!;
    const url = n.callFrame.url.startsWith('file://') ? fileURLToPath(n.callFrame.url) : n.callFrame.url;
    const mine = url.startsWith(SRC) && !url.includes(`${sep}v86${sep}`) ? true : parent.has(id) ? isOurs(parent.get(id)!) : false;
    ours.set(id, mine);
    return mine;
  };
  let idle = 0;
  let hit = 0;
  for (const id of profile.samples ?? []) {
    const fn = byId.get(id)!.callFrame.functionName;
    if (fn === '(idle)' || fn === '(program)' || fn === '(garbage collector)') {
      if (fn === '(idle)') idle++;
      continue;
    }
    if (isOurs(id)) hit++;
  }
  const busy = (profile.samples?.length ?? 0) - idle;
  return { share: hit / Math.max(1, busy), samples: busy };
}

const m = guestManifest();
const dir = mkdtempSync(join(tmpdir(), 'vdpa-guest-bench-'));
const boots = { bare: [] as number[], devices: [] as number[] };
for (let i = 0; i < BOOTS; i++) {
  for (const arm of ['bare', 'devices'] as const) {
    const rig = arm === 'bare' ? await bootBare(m) : await bootWithDevices(m, dir);
    boots[arm].push(rig.bootMs);
    rig.close();
  }
}
const rig = await bootWithDevices(m, dir);
const rtt = await ping(rig.shell, PINGS);
const wr = await dd(rig.shell, 'if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct', 64 << 20);
const rd = await dd(rig.shell, 'if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct', 64 << 20);
const wr64 = await dd(rig.shell, 'if=/dev/zero of=/dev/vda bs=64k count=1024 oflag=direct', 64 << 20);
const rd64 = await dd(rig.shell, 'if=/dev/vda of=/dev/null bs=64k count=1024 iflag=direct', 64 << 20);
const cost = await packageShare(async () => {
  await rig.shell.ok('dd if=/dev/zero of=/dev/vda bs=64k count=256 oflag=direct 2>/dev/null; dd if=/dev/vda of=/dev/null bs=64k count=256 iflag=direct 2>/dev/null; ping -q -c 100 -i 0.01 10.0.0.1', 120_000);
});
rig.close();
rmSync(dir, { recursive: true, force: true });

const med = (a: number[]) => quantile([...a].sort((x, y) => x - y), 0.5);
console.table([
  { figure: 'boot to init, no vdpa devices (ms)', value: med(boots.bare).toFixed(0), runs: boots.bare.map((x) => x.toFixed(0)).join(' ') },
  { figure: 'boot to init, net + blk (ms)', value: med(boots.devices).toFixed(0), runs: boots.devices.map((x) => x.toFixed(0)).join(' ') },
  { figure: `ping RTT p50 (ms, n=${PINGS})`, value: quantile(rtt, 0.5).toFixed(3), runs: '' },
  { figure: 'ping RTT p99 (ms)', value: quantile(rtt, 0.99).toFixed(3), runs: '' },
  { figure: 'dd write 1 MiB blocks, O_DIRECT (MB/s)', value: wr.toFixed(1), runs: '' },
  { figure: 'dd read 1 MiB blocks, O_DIRECT (MB/s)', value: rd.toFixed(1), runs: '' },
  { figure: 'dd write 64 KiB blocks, O_DIRECT (MB/s)', value: wr64.toFixed(1), runs: '' },
  { figure: 'dd read 64 KiB blocks, O_DIRECT (MB/s)', value: rd64.toFixed(1), runs: '' },
  { figure: 'emulator thread in package code, device in this thread (%)', value: (100 * cost.share).toFixed(1), runs: `${cost.samples} samples` },
]);
process.exit(0);
