// IOTLB map-maintenance benchmark (tinybench): setMap of 65 536 entries (sorted and shuffled),
// one dmaMap + dmaUnmap in the middle of a 65 535-entry map, and translate / allows lookups on
// it. Not part of `npm run bench`; run it on its own:
//   npx tsc -p tsconfig.bench.json && node build/js/bench/iotlb.bench.js
import { Bench } from 'tinybench';
import { Platform, Iotlb, PERM_R } from '../src/index.ts';
import type { IotlbEntry } from '../src/index.ts';

const N = 65536;
const TIME = Number(process.env.BENCH_TIME ?? 500);
const p = Platform.create({ ramSize: 16 << 20, privateSize: 4 << 20 });
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
await bench.run();
console.table(bench.table());
