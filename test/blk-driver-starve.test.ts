// A request waiting for staging RAM is never left hanging: once none of the driver's own
// requests is in flight (nothing of ours will free RAM), the RAM-starved head waiter is
// rejected with ResourceExhausted, as submit() refuses such a request up front.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, VdpaBus, VdpaSimBlk, VdpaSimBlkMgmt, createVirtioVdpa, Code } from '../src/index.ts';
import { trackEscapes } from './helpers/escapes.ts';

const escaped = trackEscapes();
after(() => assert.deepEqual(escaped, []));

function bring() {
  const p = Platform.create({ ramSize: 1 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  const dev = new VdpaSimBlk(p, { name: 'd', capacity: 64 }); // 32 KiB RAM disk
  bus.addDevice(dev);
  return { p, dev, blk: virtio.blk('d') };
}

/** Settles `pr` or reports it still pending after a few event-loop turns (no wall clock). */
async function outcome(pr: Promise<unknown>): Promise<string> {
  let state = 'pending';
  pr.then(() => (state = 'fulfilled'), (e: { code?: string }) => (state = `rejected ${e.code}`));
  for (let i = 0; i < 20 && state === 'pending'; i++) await new Promise((r) => setImmediate(r));
  return state;
}

test('a RAM-starved waiter is rejected once the driver has nothing in flight (reviewer r3)', async () => {
  const { p, blk } = bring();
  // Someone else holds all but 20 KiB of RAM.
  const other = p.ram.alloc(p.ram.available - (20 << 10), 64);
  const x = outcome(blk.read(0, new Uint8Array(16 << 10))); // fits: goes in flight
  const a = outcome(blk.read(0, new Uint8Array(24 << 10))); // waits for RAM x will not give it
  assert.equal(await x, 'fulfilled');
  assert.equal(await a, `rejected ${Code.ResourceExhausted}`);
  assert.equal(blk.inFlight, 0);
  p.ram.release(other);
  // The driver goes on: the same read now fits.
  const b = new Uint8Array(24 << 10);
  await blk.read(0, b);
});

test('after the starved head is rejected, a smaller waiter behind it is served', async () => {
  const { p, blk } = bring();
  const other = p.ram.alloc(p.ram.available - (20 << 10), 64);
  const x = outcome(blk.write(0, new Uint8Array(16 << 10).fill(3)));
  const big = outcome(blk.read(0, new Uint8Array(24 << 10)));
  const small = new Uint8Array(8 << 10);
  const s = outcome(blk.read(0, small));
  assert.equal(await x, 'fulfilled');
  assert.equal(await big, `rejected ${Code.ResourceExhausted}`);
  assert.equal(await s, 'fulfilled');
  assert.ok(small.every((v) => v === 3));
  assert.equal(blk.inFlight, 0);
  p.ram.release(other);
});
