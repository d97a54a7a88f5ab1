// IOTLB map-maintenance benchmark (tinybench): setMap of 65 536 entries (sorted and shuffled),
// one dmaMap + dmaUnmap in the middle of a 65 535-entry map, translate / allows lookups on
// it, and device pops whose every buffer misses the wasm walk's lastHit entry on a 65 536-entry
// map (the data plane's binary search). Not part of `npm run bench`; run it on its own:
//   npm run bench:iotlb
import { Bench } from 'tinybench';
import { Platform, Iotlb, PERM_R, DriverQueue, DeviceQueue, ringFeatures } from '../src/index.ts';
import type { IotlbEntry } from '../src/index.ts';

const N = 65536;
const TIME = Number(process.env.BENCH_TIME ?? 500);
const p = Platform.create({ ramSize: 16 << 20, privateSize: 8 << 20 });
const t = new Iotlb(p, N);

const sorted: IotlbEntry[] = [];
for (let i = 0; i < N; i++) sorted.push({ iova: BigInt(i) * 0x2000n, size: 0x1000, addr: p.ramBase + (i % 4096) * 4096, perm: (i % 3) + 1 });
// A fixed permutation (7919 is odd, so i·7919 mod 2^16 visits every index once).
const shuffled = sorted.map((_, i) => sorted[(i * 7919) % N]!);
const partial = sorted.filter((_, i) => i !== N / 2);
const mid = sorted[N / 2]!;

const bench = new Bench({ time: TIME });
bench
  .add(`setMap ${N} entries, sorted`, () => t.setMap(sorted))
  .add(`setMap ${N} entries, shuffled`, () => t.setMap(shuffled))
  .add(`dmaMap+dmaUnmap 1 entry in the middle of ${N - 1}`, () => {
    t.dmaMap(mid);
    t.dmaUnmap(mid.iova, 1);
  }, { beforeAll: () => t.setMap(partial) })
  .add(`translate on ${N - 1} entries`, () => {
    for (let i = 0; i < 1000; i++) t.translate(BigInt(i * 61) * 0x2000n + 5n, 16, 0);
  }, { beforeAll: () => t.setMap(partial) })
  .add(`allows on ${N - 1} entries (index built once per change)`, () => {
    for (let i = 0; i < 1000; i++) t.allows(p.ramBase + (i % 4096) * 4096, 64, PERM_R);
  }, { beforeAll: () => t.setMap(partial) });

// Pop case: IOVA ramBase + i·4 KiB (i < 65 536) maps to RAM page i mod 4096, so IOVA off + j·16 MiB
// (j < 16) reaches RAM offset off through entry j·4096 + page. Rings sit at j = 0 (identity);
// chain k's buffer uses j = k mod 16, so consecutive descriptors never share an entry and every
// translation misses lastHit and walks the table.
const POP_BATCH = 32;
const pages = 4096;
const popMap: IotlbEntry[] = [];
for (let i = 0; i < N; i++) popMap.push({ iova: BigInt(p.ramBase + i * 4096), size: 4096, addr: p.ramBase + (i % pages) * 4096 });
const t2 = new Iotlb(p, N);
t2.setMap(popMap);
const features = ringFeatures({ packed: false });
const drv = new DriverQueue(p, { size: 256, features, batch: POP_BATCH });
const dev = new DeviceQueue(p, { size: 256, features, ...drv.addresses, batch: POP_BATCH, iotlb: t2 });
const bufs = p.allocBuffer(POP_BATCH * 64, 4096);
for (let k = 0; k < POP_BATCH; k++) drv.stageOne(k, bufs + k * 64 + (k % 16) * pages * 4096, 64);
bench.add(`split pop+push ${POP_BATCH}×1-desc chains, ${N}-entry map, every lookup misses lastHit`, () => {
  for (let r = 0; r < 64; r++) {
    drv.submit(true);
    const n = dev.pop(POP_BATCH);
    if (n !== POP_BATCH) throw new Error(`popped ${n}: ${dev.state.state === "broken" ? dev.state.error.message : "empty"}`);
    dev.pushPopped(n);
    drv.getUsed(POP_BATCH);
  }
});
await bench.run();
console.table(bench.table());
