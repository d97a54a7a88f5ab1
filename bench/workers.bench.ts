// `npm run bench:workers`: the device in one worker, the driver in another (issue 8 §4). Raw
// rings on one shared memory, 1-descriptor 64-byte chains, queue 256, split + EVENT_IDX, through
// the ring lab's cross-thread pair (src/lab/xthread-worker.ts: doorbells for kicks and calls):
//   - throughput at batch 32 with polling, adaptive polling (spin 50 µs, then Atomics.wait) and
//     pure Atomics waits;
//   - round-trip latency of one descriptor (batch 1, ping-pong), p50/p99;
//   - CPU time of an idle device worker (src/worker/host.ts's serving loop, one net device
//     bound to virtio_vdpa in this thread) over 1 s, from /proc/thread-self/schedstat;
//   - all of it again with a competing CPU-bound thread (this machine has 2 cores).
// Compiled with tsc into build/js and run with plain node, like ring.bench.ts. `--quick` runs
// fewer rounds (a smoke run).
import { Worker } from 'node:worker_threads';
import { runLab, formatTable, Platform, VdpaBus, createVirtioVdpa } from '../src/index.ts';
import { nodeCrossThreadRunner, nodeLabEnvironment, spawnDeviceWorker, startVmm } from '../src/node.ts';
import { featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_EVENT_IDX, VIRTIO_NET_F_MAC } from '../src/index.ts';
import type { GuestNetResult, GuestBlkResult } from '../src/vmm/guest.ts';

const quick = process.argv.includes('--quick');
const rounds = quick ? 2 : 5;
const out = (s: string) => process.stdout.write(s);

/** A thread that burns a core until terminated. */
function competitor(): Worker {
  return new Worker('let x = 0; for (;;) { x = (x * 1103515245 + 12345) | 0; }', { eval: true });
}

async function rings(label: string): Promise<void> {
  const r = await nodeCrossThreadRunner();
  try {
    const t = await runLab({
      sweep: { mode: ['poll', 'adaptive', 'wait'], batch: [32] },
      rounds, chains: quick ? 50_000 : 200_000, spinUs: 50, crossThread: r.runner, env: nodeLabEnvironment(),
    });
    out(`\n## ${label}: throughput, batch 32 (driver worker ↔ device worker)\n${formatTable(t)}\n`);
    const l = await runLab({
      sweep: { mode: ['poll', 'adaptive', 'wait'], batch: [1] },
      rounds, chains: quick ? 2_000 : 10_000, spinUs: 50, crossThread: r.runner, env: nodeLabEnvironment(),
    });
    out(`\n## ${label}: round trip of one descriptor, batch 1\n${formatTable(l)}\n`);
  } finally {
    await r.close();
  }
}

async function idle(label: string): Promise<void> {
  const platform = Platform.create({ shared: true, ramSize: 32 << 20, privateSize: 16 << 20 });
  const w = await spawnDeviceWorker({ platform });
  try {
    const bus = new VdpaBus();
    const virtio = createVirtioVdpa(platform, { queueSize: 256 });
    bus.registerDriver(virtio);
    await w.bus.devAdd('vdpasim_net', 'net0');
    const dev = await w.bus.openDevice('net0');
    bus.addDevice(dev);
    // A synchronous config op from this thread: mailbox write, doorbell, Atomics.wait for the answer.
    const lat: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const t = performance.now();
      dev.getStatus();
      lat.push((performance.now() - t) * 1000);
    }
    lat.sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(1);
    out(`\n## ${label}: synchronous config op (getStatus) main thread → device worker, 2000 calls back to back\np50 ${q(0.5)} µs, p99 ${q(0.99)} µs\n`);
    const f = new Uint8Array(64).fill(0xff);
    for (let i = 0; i < 100; i++) virtio.net('net0').send(f); // some work first, then nothing
    await new Promise((r) => setTimeout(r, 200));
    const c0 = (await w.bus.request('threadCpu')) as number | null;
    const s0 = await w.bus.stats();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 1000));
    const c1 = (await w.bus.request('threadCpu')) as number | null;
    const s1 = await w.bus.stats();
    const sec = (performance.now() - t0) / 1000;
    const cpu = c0 === null || c1 === null ? 'n/a' : `${((c1 - c0) / 1000 / sec).toFixed(2)} ms/s (${((c1 - c0) / 10_000 / sec).toFixed(3)} % of a core)`;
    out(`\n## ${label}: idle device worker over ${sec.toFixed(2)} s\n` +
      `CPU ${cpu}; parks ${s1.sleeps - s0.sleeps}, polls ${s1.polls - s0.polls}, loop yields ${s1.yields - s0.yields}\n`);
  } finally {
    await w.close();
  }
}

/** The minimal VMM's data phase: guest worker ↔ device worker through vhost nodes, VMM idle. */
async function vmmPhase(label: string): Promise<void> {
  const s = await startVmm();
  try {
    const base = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_F_EVENT_IDX);
    for (const n of ['net1', 'net2']) {
      await s.devices.bus.devAdd('vdpasim_net', n);
      await s.devices.bus.switchConnect(n);
      await s.vmm.attach(n, base | featureBit(VIRTIO_NET_F_MAC), 2);
    }
    await s.devices.bus.devAdd('vdpasim_blk', 'blk0');
    await s.vmm.attach('blk0', base, 1);
    const m1 = await s.vmm.config('net1', 0, 6);
    const m2 = await s.vmm.config('net2', 0, 6);
    const frames = quick ? 2000 : 10_000;
    let msgs = 0;
    const count = () => msgs++;
    s.devices.worker.on('message', count);
    s.guest.worker.on('message', count);
    let t = performance.now();
    const net = (await s.guest.channel.request('net', 'net1', 'net2', m1, m2, frames, 1)) as GuestNetResult;
    const netMs = performance.now() - t;
    t = performance.now();
    const blk = (await s.guest.channel.request('blk', 'blk0', quick ? 1000 : 5000, 8192, 2)) as GuestBlkResult;
    const blkMs = performance.now() - t;
    s.devices.worker.off('message', count);
    s.guest.worker.off('message', count);
    out(`\n## ${label}: minimal VMM data phase (guest worker ↔ device worker via vhost nodes)\n` +
      `net: ${2 * frames} frames (60-1459 bytes, both ways, checked) in ${netMs.toFixed(0)} ms = ${((2 * frames) / netMs).toFixed(1)} k frames/s; ` +
      `blk: ${blk.writes} writes + ${blk.reads} reads (checked) in ${blkMs.toFixed(0)} ms; mismatches ${net.mismatches + blk.mismatches}; ` +
      `messages to the VMM thread: ${msgs} (the answers)\n`);
  } finally {
    await s.close();
  }
}

out(`# bench:workers — ${nodeLabEnvironment().runtime}, ${nodeLabEnvironment().cpu} × ${nodeLabEnvironment().cpus}${quick ? ' (quick)' : ''}\n`);
await rings('alone');
await idle('alone');
await vmmPhase('alone');
const hog = competitor();
try {
  await new Promise((r) => setTimeout(r, 100));
  await rings('with a competing CPU-bound thread');
  await idle('with a competing CPU-bound thread');
} finally {
  await hog.terminate();
}
