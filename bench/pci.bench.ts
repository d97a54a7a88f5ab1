// virtio-pci register costs (tinybench): what an emulator pays per guest access to the
// function — a register the function answers itself (queue_select), one that is a vhost ioctl
// underneath (device_status → VHOST_VDPA_GET_STATUS, a device config byte → GET_CONFIG), a
// notify write (rings a kick doorbell; the queue is not enabled, so only the ring is counted),
// an ISR read — and what the grow-safe Platform views cost: p.u8 through its getter against a
// cached Uint8Array. Ratios are taken within the same run. Not part of `npm run bench`:
//   node --import tsx bench/pci.bench.ts
import { Bench } from 'tinybench';
import { Platform, VdpaBus, VdpaSimNetMgmt, VhostVdpa, VirtioPciFunction } from '../src/index.ts';
import * as C from '../src/pci/constants.ts';

const TIME = Number(process.env.BENCH_TIME ?? 500);
const memory = new WebAssembly.Memory({ initial: 80, maximum: 400 });
const p = Platform.foreign({ memory, ramBase: 3 * 65536 + 4096, ramSize: 64 * 65536, privateSize: 8 << 20 });
const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
const vhost = new VhostVdpa(p);
bus.registerDriver(vhost);
bus.devAdd('vdpasim_net', 'net0');
const fn = new VirtioPciFunction(p, vhost.open('vhost-vdpa-0'));

let sink = 0; // keeps the JIT from dropping the loops
const cached = new Uint8Array(memory.buffer);
const bench = new Bench({ time: TIME });
bench
  .add('1000× read queue_select (answered by the function)', () => {
    for (let i = 0; i < 1000; i++) sink += fn.read(4, C.VIRTIO_PCI_COMMON_Q_SELECT, 2);
  })
  .add('1000× read device_status (VHOST_VDPA_GET_STATUS)', () => {
    for (let i = 0; i < 1000; i++) sink += fn.read(4, C.VIRTIO_PCI_COMMON_STATUS, 1);
  })
  .add('1000× read a device config byte (VHOST_VDPA_GET_CONFIG)', () => {
    for (let i = 0; i < 1000; i++) sink += fn.read(4, 0x2000, 1);
  })
  .add('1000× notify write (kick doorbell)', () => {
    for (let i = 0; i < 1000; i++) fn.write(4, 0x3000, 2, 0);
  })
  .add('1000× ISR read', () => {
    for (let i = 0; i < 1000; i++) sink += fn.read(4, 0x1000, 1);
  })
  .add('1M byte loads through p.u8 (grow-safe getter)', () => {
    const base = p.ramBase;
    for (let i = 0; i < 1_000_000; i++) sink += p.u8[base + (i & 0xffff)]!;
  })
  .add('1M byte loads through a cached Uint8Array', () => {
    const base = p.ramBase;
    for (let i = 0; i < 1_000_000; i++) sink += cached[base + (i & 0xffff)]!;
  });

await bench.run();
console.table(bench.table());
const mean = (name: string): number => {
  const r = bench.tasks.find((t) => t.name.startsWith(name))?.result;
  return r && 'latency' in r ? r.latency.mean : NaN;
};
for (const n of ['1000× read queue_select', '1000× read device_status', '1000× read a device config', '1000× notify', '1000× ISR']) {
  console.log(`${n}: ${(mean(n) * 1000 / 1000).toFixed(3)} µs per access`);
}
console.log(`p.u8 getter / cached view: ${(mean('1M byte loads through p.u8') / mean('1M byte loads through a cached')).toFixed(2)}×`);
fn.close();
if (sink < 0) console.log(sink);
