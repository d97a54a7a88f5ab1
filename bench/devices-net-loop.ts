// A plain loop over the net loopback hot paths, for profiling (`node --cpu-prof`) and for quick
// before/after comparisons in one session: 64 B frames, sendBatch(32), send() ×32 and
// send(f, more) ×32, each followed by `await null` (rx is delivered from a microtask), rates per
// second of process CPU time, 3 rounds. The tinybench figures are bench/devices.bench.ts.
//
//   node --import tsx bench/devices-net-loop.ts [batch|send|more]
//   node --cpu-prof --import tsx bench/devices-net-loop.ts send
import { Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, type NetRxBatch } from '../src/index.ts';

const p = Platform.create({ ramSize: 64 << 20, privateSize: 16 << 20 });
const bus = new VdpaBus();
bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
const virtio = createVirtioVdpa(p, { queueSize: 256 });
bus.registerDriver(virtio);
bus.devAdd('vdpasim_net', 'n', { mac: '02:00:00:00:00:01' });
const net = virtio.net('n');
let rx = 0;
net.onFrames((b: NetRxBatch) => { rx += b.count; });
const f = new Uint8Array(64).fill(0x5a);
f.set([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 0x88, 0xb5]);
const frames = Array.from({ length: 32 }, () => f.slice());

async function run(name: string, body: () => void, iters: number): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    body();
    await null;
  }
  const r0 = rx;
  const c0 = process.cpuUsage();
  for (let i = 0; i < iters; i++) {
    body();
    await null;
  }
  const c = process.cpuUsage(c0);
  console.log(`${name}: ${((rx - r0) / (c.user + c.system)).toFixed(2)} Mpps (CPU time; ${rx - r0} frames)`);
}

const which = process.argv[2] ?? 'all';
for (let r = 0; r < 3; r++) {
  if (which === 'all' || which === 'batch') await run('64 B sendBatch(32) + onFrames', () => { net.sendBatch(frames); }, 40000);
  if (which === 'all' || which === 'send') await run('64 B send() ×32 + onFrames', () => { for (let k = 0; k < 32; k++) net.send(frames[k]!); }, 20000);
  if (which === 'all' || which === 'more') {
    await run('64 B send(f, more) ×32 + onFrames', () => {
      for (let k = 0; k < 31; k++) net.send(frames[k]!, true);
      net.send(frames[31]!);
    }, 20000);
  }
}
