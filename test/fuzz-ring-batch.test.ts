// Seeded fuzz of driver batches against the device (issue 7 items 1 and 18): random chains
// (some that can never fit, refused at stage()), partial submits on a full ring, partial pops
// and pushes, statistics cleared at random moments. Invariants: every chain submit() reports
// is popped by the device exactly once and reclaimed by the driver exactly once; the device
// never sees anything else; inFlight follows the model; no queue breaks. The fused verbs
// (addBufs, serve, reclaimUsed; issue 11) are mixed in with the general ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, DeviceQueue, DriverQueue, Q, ringFeatures } from '../src/index.ts';
import { BUILDS, makePlatform } from './helpers/builds.ts';
import { fuzz } from './helpers/fuzz.ts';

test('fuzz: driver batches publish exactly what they report', () => {
  fuzz('ring-batch', 60, (r) => {
    const build = r.pick(BUILDS);
    const layout = r.pick(['split', 'packed'] as const);
    const size = layout === 'split' ? r.pick([1, 2, 4, 8, 16]) : r.range(1, 17);
    const features = ringFeatures({ packed: layout === 'packed', indirect: r.chance(0.5), inOrder: r.chance(0.3) });
    const p = makePlatform(build);
    const drv = new DriverQueue(p, { size, features, batch: r.range(1, 8), indirectMax: r.range(2, 6) });
    const dev = new DeviceQueue(p, { size, features, ...drv.addresses });
    const buf = p.allocBuffer(64);
    const sink = p.allocBuffer(64 * (size + 2));
    const staged: number[] = []; // tokens, in staging order
    const inFlight = new Set<number>();
    let next = 1;
    for (let op = 0; op < 200; op++) {
      const what = r.int(9);
      if (what <= 1) {
        const n = r.range(1, size + 4);
        if (!drv.canStage(n) && n <= drv.maxSegs) continue;
        const nOut = r.int(n + 1);
        const out = Array.from({ length: nOut }, () => ({ addr: buf, len: r.range(1, 64) }));
        const inp = Array.from({ length: n - nOut }, () => ({ addr: buf, len: r.range(1, 64) }));
        if (n > drv.maxChainSegs || n > drv.maxSegs) {
          assert.throws(() => drv.stage(next, out, inp), (e: { code?: string }) => e.code === Code.InvalidArgument);
        } else {
          drv.stage(next, out, inp);
          staged.push(next);
        }
        next++;
      } else if (what === 2) {
        const k = drv.submit();
        for (const t of staged.splice(0, k)) inFlight.add(t);
        assert.equal(drv.stagedCount, staged.length);
      } else if (what === 3) {
        const n = dev.pop(r.range(1, size));
        // Push some of this pop now, in pop order (what pushPopped does).
        const m = r.int(n + 1);
        dev.pushPopped(m);
        for (let i = m; i < n; i++) dev.complete(dev.chainId(i), dev.chainDescs(i), 0);
        dev.flushUsed();
      } else if (what === 4) {
        for (const u of drv.reclaim()) assert.ok(inFlight.delete(u.token), `token ${u.token} reclaimed once, and only if it was added`);
      } else if (what === 5) {
        p.u8.fill(0, drv.qsb + Q.STAT_CHAINS, drv.qsb + Q.STAT_NOTIFY + 8);
      } else if (what === 6) {
        const k = r.range(0, drv.batch);
        for (let i = 0; i < k; i++) drv.setBuf(i, next + i, buf, r.range(0, 64));
        const added = drv.addBufs(k, r.chance(0.3));
        assert.ok(added <= k);
        for (let i = 0; i < added; i++) inFlight.add(next + i);
        next += k;
      } else if (what === 7) {
        const stride = r.chance(0.5) ? 64 : 0;
        dev.serve(r.range(0, size + 2), stride ? sink : 0, stride);
        if (dev.serveStopped) dev.pushPopped(dev.pop(1));
      } else {
        const n = drv.reclaimUsed(r.range(0, drv.batch));
        for (let i = 0; i < n; i++) assert.ok(inFlight.delete(drv.usedTokens[i]!), `token ${drv.usedTokens[i]} reclaimed once, and only if it was added`);
      }
      assert.equal(drv.inFlight, inFlight.size);
      assert.equal(drv.state.state, 'ready');
      assert.equal(dev.state.state, 'ready');
    }
    // Drain: everything reported as added comes back, nothing else.
    for (let guard = 0; guard < 4 * size + 8 && (inFlight.size > 0 || staged.length > 0); guard++) {
      const k = drv.submit();
      for (const t of staged.splice(0, k)) inFlight.add(t);
      dev.serve();
      const n = dev.pop();
      dev.pushPopped(n);
      for (const u of drv.reclaim()) assert.ok(inFlight.delete(u.token));
    }
    assert.equal(inFlight.size, 0);
    assert.equal(staged.length, 0);
    assert.equal(dev.pop(), 0, 'the device sees nothing more');
  });
});
