// Guest-visible figures (issue 10 §4): a Debian i386 kernel in v86 under Node, its own virtio
// drivers on vdpasim_net and vdpasim_blk through the v86 adapter, measured from inside the guest.
//   boot      run() → the guest's init line, without our devices and with a net + a blk device
//   ping      RTT p50/p99 of `ping -i 0.01` to a PingResponder host across the L2 switch
//   dd        MB/s of O_DIRECT writes and reads to /dev/vda (busybox dd prints them)
//   cost      the emulator thread's CPU time for a fixed guest workload (dd + ping), and the
//             share of its busy samples in package code (V8 profiler on this thread):
//             devices in the emulator thread vs in a device worker (v86 on a shared memory)
// Run: npm run bench:guest     (GUEST_BOOTS=n boots per arm, default 2; GUEST_PINGS, default 300)
import { Session } from 'node:inspector/promises';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { V86 } from 'v86';
import { quantile } from '../src/index.ts';
import { guestManifest, guestWithDevices, startGuest, type GuestManifest, type SerialShell } from '../test/helpers/v86-guest.ts';

const BOOTS = Number(process.env.GUEST_BOOTS ?? 2);
const PINGS = Number(process.env.GUEST_PINGS ?? 300);
const SRC = fileURLToPath(new URL('../src/', import.meta.url));

interface Rig { emulator: V86; shell: SerialShell; bootMs: number; close(): void | Promise<void> }

async function bootBare(m: GuestManifest): Promise<Rig> {
  const { emulator, shell, bootMs } = await startGuest(m);
  return { emulator, shell, bootMs, close: () => emulator.destroy() };
}

/** This thread's CPU time in ms (Linux /proc/thread-self/schedstat). */
function threadCpuMs(): number {
  return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
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
let disks = 0;
const rigOf = (mode: 'thread' | 'worker') => guestWithDevices(m, { mode, diskPath: join(dir, `disk${++disks}.img`) });
const boots = { bare: [] as number[], thread: [] as number[], worker: [] as number[] };
for (let i = 0; i < BOOTS; i++) {
  for (const arm of ['bare', 'thread', 'worker'] as const) {
    const rig = arm === 'bare' ? await bootBare(m) : await rigOf(arm);
    boots[arm].push(rig.bootMs);
    await rig.close();
  }
}
const WORK = 'dd if=/dev/zero of=/dev/vda bs=64k count=512 oflag=direct 2>/dev/null; dd if=/dev/vda of=/dev/null bs=64k count=512 iflag=direct 2>/dev/null; ping -q -c 200 -i 0.01 10.0.0.1';
const rows: Record<string, string>[] = [];
const row = (figure: string, thread: string, worker: string) => rows.push({ figure, 'device in the emulator thread': thread, 'device in a worker': worker });
const res: Record<string, Record<string, number>> = {};
for (const mode of ['thread', 'worker'] as const) {
  const rig = await rigOf(mode);
  const r: Record<string, number> = (res[mode] = {});
  const rtt = await ping(rig.shell, PINGS);
  r.p50 = quantile(rtt, 0.5);
  r.p99 = quantile(rtt, 0.99);
  r.wr = await dd(rig.shell, 'if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct', 64 << 20);
  r.rd = await dd(rig.shell, 'if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct', 64 << 20);
  r.wr64 = await dd(rig.shell, 'if=/dev/zero of=/dev/vda bs=64k count=1024 oflag=direct', 64 << 20);
  r.rd64 = await dd(rig.shell, 'if=/dev/vda of=/dev/null bs=64k count=1024 iflag=direct', 64 << 20);
  const c0 = threadCpuMs();
  const t0 = performance.now();
  const cost = await packageShare(async () => {
    await rig.shell.ok(WORK, 120_000);
  });
  r.wall = performance.now() - t0;
  r.cpu = threadCpuMs() - c0;
  r.share = cost.share;
  await rig.close();
}
rmSync(dir, { recursive: true, force: true });

const med = (a: number[]) => quantile([...a].sort((x, y) => x - y), 0.5);
const runs = (a: number[]) => a.map((x) => x.toFixed(0)).join(', ');
const t = res.thread!;
const w = res.worker!;
row(`boot to init, ms (median of ${BOOTS}; without vdpa devices: ${med(boots.bare).toFixed(0)} [${runs(boots.bare)}])`, `${med(boots.thread).toFixed(0)} [${runs(boots.thread)}]`, `${med(boots.worker).toFixed(0)} [${runs(boots.worker)}]`);
row(`ping RTT p50 / p99, ms (n=${PINGS}, -i 0.01)`, `${t.p50!.toFixed(2)} / ${t.p99!.toFixed(2)}`, `${w.p50!.toFixed(2)} / ${w.p99!.toFixed(2)}`);
row('dd O_DIRECT 1 MiB blocks write / read, MB/s', `${t.wr!.toFixed(1)} / ${t.rd!.toFixed(1)}`, `${w.wr!.toFixed(1)} / ${w.rd!.toFixed(1)}`);
row('dd O_DIRECT 64 KiB blocks write / read, MB/s', `${t.wr64!.toFixed(1)} / ${t.rd64!.toFixed(1)}`, `${w.wr64!.toFixed(1)} / ${w.rd64!.toFixed(1)}`);
row('workload (32 MiB dd each way + 200 pings): emulator thread CPU ms / wall ms', `${t.cpu!.toFixed(0)} / ${t.wall!.toFixed(0)}`, `${w.cpu!.toFixed(0)} / ${w.wall!.toFixed(0)}`);
row('  of the emulator thread\'s busy samples, in package code', `${(100 * t.share!).toFixed(1)} %`, `${(100 * w.share!).toFixed(1)} %`);
console.log(`\nGuest-visible figures (v86 ${JSON.parse(readFileSync(new URL('../node_modules/v86/package.json', import.meta.url), 'utf8')).version}, kernel ${m.kernelRelease}, Node ${process.version})`);
console.table(rows);
process.exit(0);
