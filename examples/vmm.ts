// The minimal VMM, run end to end (issue 8 §3): `node --import tsx examples/vmm.ts`.
// Three threads on one shared memory: this one is the VMM (control plane: vhost ioctls and IOTLB
// messages over the channel), a device worker runs vdpasim_net ×2 on a switch and vdpasim_blk
// bound to vhost_vdpa, a guest worker drives them over guest RAM whose guest-physical 0 is at a
// non-zero memory offset. Prints what moved and how often the VMM thread woke during it.
import { readFileSync } from 'node:fs';
import { featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_EVENT_IDX, VIRTIO_NET_F_MAC } from '../src/index.ts';
import { startVmm } from '../src/node.ts';
import type { GuestNetResult, GuestBlkResult } from '../src/vmm/guest.ts';

/** This thread's CPU time in µs (Linux), or NaN. */
function cpuUs(): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1000;
  } catch {
    return NaN;
  }
}

const base = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_F_EVENT_IDX);
const s = await startVmm();
try {
  const { vmm, devices, guest } = s;
  console.log(`guest RAM: ${guest.ram.ramSize >> 20} MiB, guest-physical 0 = memory offset 0x${guest.ram.gpaBase.toString(16)}`);
  await devices.bus.devAdd('vdpasim_net', 'net1', { mac: '02:00:00:00:00:01' });
  await devices.bus.devAdd('vdpasim_net', 'net2', { mac: '02:00:00:00:00:02' });
  await devices.bus.switchConnect('net1');
  await devices.bus.switchConnect('net2');
  await devices.bus.devAdd('vdpasim_blk', 'blk0');
  for (const [name, f, q] of [['net1', base | featureBit(VIRTIO_NET_F_MAC), 2], ['net2', base | featureBit(VIRTIO_NET_F_MAC), 2], ['blk0', base, 1]] as const) {
    const d = await vmm.attach(name, f, q);
    console.log(`${name}: ${d.node}, features 0x${d.features.toString(16)}, ${q} × ${d.queueSize}-entry queues`);
  }
  console.log((await devices.bus.vdpa(['dev', 'show'])).out.trimEnd());
  const mac1 = await vmm.config('net1', 0, 6);
  const mac2 = await vmm.config('net2', 0, 6);
  let wakes = 0;
  const count = () => wakes++;
  devices.worker.on('message', count);
  guest.worker.on('message', count);
  const h0 = await devices.bus.stats();
  wakes = 0;
  const c0 = cpuUs();
  const t0 = performance.now();
  const net = (await guest.channel.request('net', 'net1', 'net2', mac1, mac2, 2000, 1)) as GuestNetResult;
  const blk = (await guest.channel.request('blk', 'blk0', 1000, 8192, 2)) as GuestBlkResult;
  const ms = performance.now() - t0;
  const cpu = cpuUs() - c0;
  const seen = wakes;
  devices.worker.off('message', count);
  guest.worker.off('message', count);
  const h1 = await devices.bus.stats();
  const g = (await guest.channel.request('counters')) as { kicks: number; sleeps: number };
  console.log(`net: ${net.sent} frames each way, received ${net.received.join(' / ')}, mismatches ${net.mismatches}`);
  console.log(`blk: ${blk.writes} writes, ${blk.reads} reads of 8 sectors, mismatches ${blk.mismatches}, errors ${blk.errors}`);
  console.log(`data phase ${ms.toFixed(0)} ms: VMM thread got ${seen} messages (the two answers) and used ${(cpu / 1000).toFixed(1)} ms CPU; ` +
    `device worker took ${h1.kicks - h0.kicks} kicks by doorbell, ${h1.syncOps - h0.syncOps} control requests; guest rang ${g.kicks} kicks, slept ${g.sleeps} times on call doorbells`);
} finally {
  await s.close();
}
