// Footprint of idle devices: 1000 vdpasim_net and 1000 vdpasim_blk devices, each bound to its
// virtio driver (queue size 256), nothing sent. Prints platform bytes (what the allocators
// handed out: rings, buffers, staging, state) and the process RSS growth. Run by
// bench/devices.bench.ts in its own process; alone: node build/js/bench/devices-footprint.js
import { Platform, VdpaBus, VdpaSimBlkMgmt, VdpaSimNetMgmt, createVirtioVdpa } from '../src/index.ts';

const N = Number(process.env.FOOTPRINT_N ?? 1000);
const BLK_SECTORS = 128; // a 64 KiB RAM disk each (the disk is the device's data, not overhead)
const p = Platform.create({ ramSize: 640 << 20, privateSize: 256 << 20 });
const bus = new VdpaBus();
bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, BLK_SECTORS));
const virtio = createVirtioVdpa(p, { queueSize: 256 });
bus.registerDriver(virtio);
const used = () => ({ ram: p.ram.size - p.ram.available, priv: p.priv.size - p.priv.available });
const gc = (globalThis as { gc?: () => void }).gc;

function measure(kind: 'vdpasim_net' | 'vdpasim_blk'): string {
  gc?.();
  const u0 = used();
  const rss0 = process.memoryUsage().rss;
  for (let i = 0; i < N; i++) bus.devAdd(kind, `${kind}-${i}`, {});
  gc?.();
  const u1 = used();
  const rss1 = process.memoryUsage().rss;
  const ram = (u1.ram - u0.ram) / N;
  const priv = (u1.priv - u0.priv) / N;
  return `| ${N} × ${kind === 'vdpasim_net' ? 'net' : 'blk (64 KiB disk)'} | ${((ram + priv) / 1024).toFixed(1)} KiB | ${(ram / 1024).toFixed(1)} KiB | ${(priv / 1024).toFixed(1)} KiB | ${((u1.ram + u1.priv - u0.ram - u0.priv) / 2 ** 20).toFixed(1)} MiB | ${((rss1 - rss0) / 2 ** 20).toFixed(1)} MiB |`;
}

console.log(`footprint: idle devices bound to their virtio drivers, queue size 256 (platform memory ${(p.memory.buffer.byteLength / 2 ** 20).toFixed(0)} MiB reserved)\n`);
console.log('| devices | platform bytes per device | RAM arena | private arena | platform total | RSS growth |');
console.log('|---|---:|---:|---:|---:|---:|');
console.log(measure('vdpasim_net'));
console.log(measure('vdpasim_blk'));
