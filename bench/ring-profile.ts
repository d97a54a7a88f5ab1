// Profiling driver for the ring round trip (not a benchmark): runs one case in a loop so that
// `node --cpu-prof build/js/bench/ring-profile.js LAYOUT BATCH COPY [serve|general]` shows where
// the time goes. Compiled with the bench (tsconfig.bench.json).
import { Platform, DriverQueue, DeviceQueue, ringFeatures } from '../src/index.ts';

const layout = (process.argv[2] ?? 'split') as 'split' | 'packed';
const batch = Number(process.argv[3] ?? 32);
const copy = process.argv[4] === '1' || process.argv[4] === 'copy';
const mode = process.argv[5] ?? 'serve';
const p = Platform.create({ ramSize: 16 << 20 });
const features = ringFeatures({ packed: layout === 'packed' });
const drv = new DriverQueue(p, { size: 256, features, batch });
const dev = new DeviceQueue(p, { size: 256, features, ...drv.addresses, batch });
const bufs = p.allocBuffer(batch * 64);
const sink = p.allocBuffer(batch * 64);
for (let i = 0; i < batch; i++) {
  drv.setBuf(i, i, bufs + i * 64, 64);
  drv.stageOne(i, bufs + i * 64, 64);
}
const iters = Math.ceil(4e7 / batch / (batch === 1 ? 4 : 1));
let moved = 0;
const t0 = process.cpuUsage();
if (mode === 'serve') {
  for (let it = 0; it < iters; it++) {
    drv.addBufs(batch);
    dev.serve(batch, copy ? sink : 0, copy ? 64 : 0);
    moved += drv.reclaimUsed(batch);
  }
} else {
  for (let it = 0; it < iters; it++) {
    drv.submit(true);
    drv.kickPrepare();
    const n = dev.pop(batch);
    if (copy) dev.copyOut(n, sink, 64);
    dev.pushPopped(n);
    dev.needCall();
    moved += drv.getUsed(batch);
  }
}
const t = process.cpuUsage(t0);
console.log(`${layout} batch ${batch}${copy ? ' copy' : ''} ${mode}: ${(moved / ((t.user + t.system) / 1e6) / 1e6).toFixed(1)} M desc/s (CPU time)`);
