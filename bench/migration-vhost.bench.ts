// The VMM-faithful migration path over vhost_vdpa (issue 9, src/migration/vhost-migrate.ts) vs the
// in-thread saveState/loadState, same device state, same run: vdpasim_net with 8 queue pairs and
// full control state (every rx mode bit, 64 + 64 MAC entries, 300 VLANs), split rings.
//   uAPI path:  vhostSave (SUSPEND, GET_VRING_BASE × 16, GET_CONFIG) → vhostLoad on a fresh node
//               (features, rings, CVQ, DRIVER_OK, replay of every control command, data queues enabled)
//   state path: suspend → saveState → loadState → resume
// Run: npm run bench:migration-vhost, or node --import tsx bench/migration-vhost.bench.ts   (MIG_N=… migrations)
import {
  Platform, VhostVdpa, VdpaSimNet, DriverQueue, Doorbell, VhostNetCvq, vhostSave, vhostLoad, saveState, loadState,
  featureBit, quantile, VDPASIM_NET_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED, VHOST_IOTLB_UPDATE, VHOST_ACCESS_RW,
  type VhostVringSetup,
} from '../src/index.ts';

const N = Number(process.env.MIG_N ?? 100);
const G = 0x4000_0000;
const p = Platform.create({ ramSize: 32 << 20, privateSize: 32 << 20 });
const vhost = new VhostVdpa(p);
let n = 0;
const mk = () => new VdpaSimNet(p, { name: `n${++n}`, maxVqp: 8, mac: Uint8Array.of(2, 0, 0, 0, 0, 1), deviceFeatures: VDPASIM_NET_FEATURES });

const src = mk();
vhost.probe(src);
const f = vhost.open(vhost.nodeOf(src.name));
f.setOwner();
f.setBackendFeatures(0x7en);
f.setStatus(3);
const features = (f.getFeatures() & (VDPASIM_NET_FEATURES | featureBit(VIRTIO_F_VERSION_1))) & ~featureBit(VIRTIO_F_RING_PACKED);
f.setFeatures(features);
f.setStatus(11);
f.iotlb({ type: VHOST_IOTLB_UPDATE, iova: G, size: p.ramSize, uaddr: p.ramBase, perm: VHOST_ACCESS_RW }, 0);
const cvq = new VhostNetCvq(f, p, { index: 16, features });
cvq.start();
const vrings: VhostVringSetup[] = [];
for (let i = 0; i < 16; i++) {
  const q = new DriverQueue(p, { size: 256, features, dmaBase: G - p.ramBase });
  const a = q.addresses;
  f.setVringNum({ index: i, num: 256 });
  f.setVringAddr({ index: i, desc: a.descArea, avail: a.driverArea, used: a.deviceArea });
  f.setVringEnable({ index: i, num: 1 });
  vrings.push({ index: i, num: 256, desc: a.descArea, avail: a.driverArea, used: a.deviceArea, enabled: true });
}
f.setStatus(15);
for (const k of ['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'] as const) await cvq.setRx(k, k !== 'promisc');
const mac = (a: number, i: number) => [a, 0x11, 0x22, 0x33, 0, i].map((x) => x.toString(16).padStart(2, '0')).join(':');
await cvq.setMacTable(Array.from({ length: 64 }, (_, i) => mac(2, i)), Array.from({ length: 64 }, (_, i) => mac(1, i)));
for (let v = 1; v <= 300; v++) await cvq.vlan(true, v * 13);
await cvq.setPairs(8);

const doorbells = new Map(Array.from({ length: 16 }, (_, i) => [i, Doorbell.alloc(p)]));
const uapi: { save: number; load: number; total: number }[] = [];
const state: { save: number; load: number; total: number }[] = [];
for (let m = 0; m < N; m++) {
  // uAPI path
  const t0 = performance.now();
  const st = vhostSave(f, { features, vrings, cvq });
  const t1 = performance.now();
  const dst = mk();
  vhost.probe(dst);
  const fB = vhost.open(vhost.nodeOf(dst.name));
  const t2 = performance.now();
  await vhostLoad(fB, p, st, { maps: [{ iova: G, size: p.ramSize, uaddr: p.ramBase }], doorbells: (i) => ({ kick: doorbells.get(i)?.handle ?? null, call: null }), cvq: { index: 16 } });
  const t3 = performance.now();
  uapi.push({ save: t1 - t0, load: t3 - t2, total: t1 - t0 + t3 - t2 });
  fB.close();
  vhost.remove(dst);
  dst.destroy();
  // state path, from the same (suspended) source
  const s0 = performance.now();
  const ds = saveState(src);
  const s1 = performance.now();
  const dst2 = mk();
  const s2 = performance.now();
  loadState(dst2, ds);
  dst2.resume();
  const s3 = performance.now();
  state.push({ save: s1 - s0, load: s3 - s2, total: s1 - s0 + s3 - s2 });
  dst2.destroy();
  f.resume();
}
const row = (name: string, r: { save: number; load: number; total: number }[]) => {
  const q = (k: 'save' | 'load' | 'total', x: number) => quantile(r.map((e) => e[k]).sort((a, b) => a - b), x).toFixed(3);
  return { path: name, n: r.length, 'save p50 ms': q('save', 0.5), 'load p50 ms': q('load', 0.5), 'total p50 ms': q('total', 0.5), 'total p99 ms': q('total', 0.99) };
};
console.table([row('uAPI (vhostSave → vhostLoad, CVQ replay)', uapi), row('saveState → loadState → resume', state)]);
console.log("commands replayed per uAPI load: 308 (MQ 1, the 6 rx bits (all differ from the reset state), MAC table 1, VLANs 300)");
