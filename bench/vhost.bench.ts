// vhost-vdpa control-plane benchmark (tinybench): the cost of the byte-level ioctl face over a
// direct config op, and IOTLB updates one by one (each reaches the device as a whole-map
// set_map, as Linux's vhost_vdpa_map does for a set_map device) against the same updates in
// one BATCH_BEGIN..BATCH_END. Ratios are taken within the same run. Not part of `npm run bench`:
//   node --import tsx bench/vhost.bench.ts
import { Bench } from 'tinybench';
import { Platform, VdpaBus, VdpaSimNetMgmt, VhostVdpa } from '../src/index.ts';
import * as U from '../src/vhost/uapi.ts';

const TIME = Number(process.env.BENCH_TIME ?? 500);
const N = 256; // the simulator's IOTLB holds 256 entries
const p = Platform.create({ ramSize: 16 << 20, privateSize: 8 << 20 });
const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
const vhost = new VhostVdpa(p);
bus.registerDriver(vhost);
const dev = bus.devAdd('vdpasim_net', 'net0');
const f = vhost.open(vhost.nodeOf('net0'));
f.setOwner();

const updates = Array.from({ length: N }, (_, i) =>
  U.encodeIotlbMsg({ type: U.VHOST_IOTLB_UPDATE, iova: 0x4000_0000 + i * 0x1000, size: 0x1000, uaddr: p.ramBase + i * 0x1000, perm: U.VHOST_ACCESS_RW }));
const begin = U.encodeIotlbMsg({ type: U.VHOST_IOTLB_BATCH_BEGIN });
const end = U.encodeIotlbMsg({ type: U.VHOST_IOTLB_BATCH_END });
const clear = U.encodeIotlbMsg({ type: U.VHOST_IOTLB_INVALIDATE, iova: 0x4000_0000, size: N * 0x1000 });
const getStatus = U.VHOST_VDPA_GET_STATUS;

let sink = 0; // keeps the JIT from dropping the loops
const bench = new Bench({ time: TIME });
bench
  .add('1000× getStatus() (config op)', () => {
    for (let i = 0; i < 1000; i++) sink += dev.getStatus();
  })
  .add('1000× ioctl(VHOST_VDPA_GET_STATUS) (bytes)', () => {
    for (let i = 0; i < 1000; i++) sink += (f.ioctl(getStatus) as Uint8Array)[0]!;
  })
  .add(`${N} IOTLB UPDATEs, one set_map each, + INVALIDATE`, () => {
    for (const m of updates) f.writeMsg(m);
    f.writeMsg(clear);
  })
  .add(`${N} IOTLB UPDATEs in one batch, + INVALIDATE`, () => {
    f.writeMsg(begin);
    for (const m of updates) f.writeMsg(m);
    f.writeMsg(end);
    f.writeMsg(clear);
  });

await bench.run();
console.table(bench.table());
const mean = (name: string): number => {
  const r = bench.tasks.find((t) => t.name.startsWith(name))?.result;
  return r && 'latency' in r ? r.latency.mean : NaN;
};
console.log(`ioctl bytes / config op: ${(mean('1000× ioctl') / mean('1000× getStatus')).toFixed(1)}×`);
console.log(`unbatched / batched IOTLB updates: ${(mean(`${N} IOTLB UPDATEs, one`) / mean(`${N} IOTLB UPDATEs in`)).toFixed(1)}×`);
f.close();
if (sink < 0) console.log(sink);
