// Random operation sequences give the same delivered buffers on split and packed rings, and a
// device saved and restored mid-sequence continues exactly as one that never stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverQueue, DeviceQueue, ringFeatures, type Platform } from '../src/index.ts';
import { makePlatform, rng } from './helpers/builds.ts';

interface Trace {
  /** What the device saw, in pop order: token (from the payload) and segment shape. */
  seen: string[];
  /** What the driver got back, in reclaim order. */
  back: string[];
}

/**
 * Runs `steps` random operations with the given seed. `restoreEvery` > 0 replaces the device
 * queue by a fresh one restored from getState() every that many steps.
 */
function run(layout: 'split' | 'packed', seed: number, steps: number, opts: { indirect: boolean; inOrder: boolean; restoreEvery?: number }): Trace {
  const p: Platform = makePlatform('release');
  const features = ringFeatures({ packed: layout === 'packed', eventIdx: true, indirect: opts.indirect, inOrder: opts.inOrder });
  const size = 16;
  const drv = new DriverQueue(p, { size, features });
  let dev = new DeviceQueue(p, { size, features, ...drv.addresses });
  const bufs = p.allocBuffer(64 * 1024);
  const rand = rng(seed);
  const trace: Trace = { seen: [], back: [] };
  /** Popped and not yet completed: [id, ndesc, token, writable bytes]. */
  const held: [number, number, number, number][] = [];
  let token = 1;
  for (let step = 0; step < steps; step++) {
    const op = rand();
    if (op < 0.4) {
      // Driver adds 1..4 chains of 1..4 readable and 0..2 writable buffers.
      const n = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < n; k++) {
        const nOut = 1 + Math.floor(rand() * 4);
        const nIn = Math.floor(rand() * 3);
        const t = token++;
        const base = bufs + (t % 200) * 256;
        p.view.setUint32(base, t, true); // the payload carries the token
        const out = [{ addr: base, len: 4 }];
        for (let j = 1; j < nOut; j++) out.push({ addr: base + 4 + 8 * j, len: 8 });
        const inp = Array.from({ length: nIn }, (_, j) => ({ addr: base + 128 + 32 * j, len: 32 }));
        drv.stage(t, out, inp);
      }
      drv.submit();
      drv.clearStaged(); // a full ring drops the rest: same decision on both layouts
    } else if (op < 0.7) {
      const n = dev.pop(1 + Math.floor(rand() * 6));
      for (let i = 0; i < n; i++) {
        const c = dev.chain(i);
        const t = p.view.getUint32(c.readable[0]!.addr, true);
        trace.seen.push(`${t}:${c.readable.length}r${c.writable.length}w${c.readBytes}/${c.writeBytes}`);
        held.push([c.id, c.ndesc, t, c.writeBytes]);
      }
    } else if (op < 0.9) {
      // Complete some held chains: in order when negotiated, else in a random order.
      const n = Math.floor(rand() * (held.length + 1));
      for (let k = 0; k < n; k++) {
        const i = opts.inOrder ? 0 : Math.floor(rand() * held.length);
        const [id, nd, t, wb] = held.splice(i, 1)[0]!;
        dev.complete(id, nd, Math.min(wb, t % 17));
      }
      dev.flushUsed(opts.inOrder && rand() < 0.5);
    } else if (op < 0.97) {
      const n = drv.getUsed(1 + Math.floor(rand() * 8));
      for (let i = 0; i < n; i++) trace.back.push(`${drv.usedToken(i)}:${drv.usedLen(i)}`);
    } else if (opts.restoreEvery) {
      // Migrate the device: save, throw the queue away, restore on a new one.
      const s = JSON.parse(JSON.stringify(dev.getState()));
      dev.destroy();
      dev = new DeviceQueue(p, { size, features, ...drv.addresses });
      dev.setState(s);
    }
  }
  return trace;
}

for (const indirect of [false, true]) {
  for (const inOrder of [false, true]) {
    test(`split and packed deliver the same buffers (indirect ${indirect}, in order ${inOrder})`, () => {
      for (let seed = 1; seed <= 20; seed++) {
        const a = run('split', seed, 3000, { indirect, inOrder });
        const b = run('packed', seed, 3000, { indirect, inOrder });
        assert.ok(a.seen.length > 100 && a.back.length > 100, 'the sequence moved traffic');
        assert.deepEqual(b.seen, a.seen, `seed ${seed}: device view differs`);
        assert.deepEqual(b.back, a.back, `seed ${seed}: driver view differs`);
      }
    });
  }
}

for (const layout of ['split', 'packed'] as const) {
  test(`${layout}: save → restore → identical continuation`, () => {
    for (let seed = 1; seed <= 20; seed++) {
      const plain = run(layout, seed, 3000, { indirect: false, inOrder: false });
      const migrated = run(layout, seed, 3000, { indirect: false, inOrder: false, restoreEvery: 1 });
      assert.deepEqual(migrated, plain, `seed ${seed}`);
    }
  });
}
