// A request in flight at the backend survives its queue being disabled and enabled again over
// the same ring (as a VMM does around set_vq_state): the answer is delivered and the driver's
// promise settles. After the ring changed or the device was reset it is dropped, and the
// driver's reset cancels the promise. (Reviewer repro r8.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, VdpaBus, VdpaSimBlk, VdpaSimBlkMgmt, createVirtioVdpa, Code, type BlkBackend } from '../src/index.ts';
import { settle } from './helpers/blk-raw.ts';
import { trackEscapes } from './helpers/escapes.ts';

const escaped = trackEscapes();
after(() => assert.deepEqual(escaped, []));

function bring() {
  const p = Platform.create({ ramSize: 4 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  const answers: (() => void)[] = [];
  const backend: BlkBackend = {
    capacity: 64,
    read: (_s, len) => new Promise((res) => answers.push(() => res(new Uint8Array(len).fill(5)))),
    write: async () => {},
    flush: async () => {},
  };
  const dev = new VdpaSimBlk(p, { name: 'd', backend });
  bus.addDevice(dev);
  return { p, dev, answers, blk: virtio.blk('d') };
}

function track(pr: Promise<unknown>): { state: string } {
  const t = { state: 'pending' };
  pr.then(() => (t.state = 'fulfilled'), (e: { code?: string }) => (t.state = `rejected ${e.code}`));
  return t;
}

for (const when of ['after resume', 'while disabled']) {
  test(`an answer arriving ${when} reaches the re-enabled queue over the same ring`, async () => {
    const { dev, answers, blk } = bring();
    const buf = new Uint8Array(1024);
    const rd = track(blk.read(0, buf));
    await settle();
    assert.equal(dev.inFlight, 1);
    dev.suspend();
    dev.setVqReady(0, false);
    if (when === 'while disabled') {
      answers.shift()!();
      await settle();
      assert.equal(dev.heldCompletions, 1);
    }
    dev.setVqReady(0, true); // same rings: the saved position is restored
    dev.resume();
    if (when === 'after resume') answers.shift()!();
    await settle();
    assert.equal(rd.state, 'fulfilled');
    assert.ok(buf.every((b) => b === 5));
    assert.equal(dev.inFlight, 0);
    assert.equal(dev.heldCompletions, 0);
    assert.equal(blk.inFlight, 0);
    // The queue goes on serving.
    const b2 = new Uint8Array(512);
    const r2 = blk.read(1, b2);
    await settle();
    answers.shift()!();
    await r2;
    assert.equal(b2[0], 5);
  });
}

test('an answer after a device reset is dropped; the driver reset cancels the request', async () => {
  const { dev, answers, blk } = bring();
  const rd = track(blk.read(0, new Uint8Array(512)));
  await settle();
  assert.equal(dev.inFlight, 1);
  // Resetting the device through the driver: the ring is gone with it.
  blk.reset();
  await settle();
  answers.shift()!();
  await settle();
  assert.equal(rd.state, `rejected ${Code.Cancelled}`);
  assert.equal(dev.inFlight, 0);
  assert.equal(dev.heldCompletions, 0);
  // The new ring serves new requests; the stale answer did not touch it.
  const b = new Uint8Array(512);
  const r2 = blk.read(0, b);
  await settle();
  answers.shift()!();
  await r2;
  assert.equal(b[0], 5);
});

test('an answer for a ring that was moved while disabled is dropped, nothing written to the new ring', async () => {
  const { p, dev, answers, blk } = bring();
  const rd = track(blk.read(0, new Uint8Array(512)));
  await settle();
  assert.equal(dev.inFlight, 1);
  dev.suspend();
  const layout = dev.getVqState(0).layout;
  dev.setVqReady(0, false);
  // Another ring: zeroed areas elsewhere in RAM, position 0.
  const area = p.allocBuffer(4096, 4096);
  p.u8.fill(0, area, area + 4096);
  dev.setVqAddress(0, area, area + 1024, area + 2048);
  dev.setVqState(0, layout === 'split'
    ? { version: 1, layout: 'split', size: 16, availIndex: 0, usedIndex: 0 }
    : { version: 1, layout: 'packed', size: 16, lastAvailIdx: 0, lastAvailWrap: 1, lastUsedIdx: 0, lastUsedWrap: 1 });
  dev.setVqReady(0, true);
  dev.resume();
  answers.shift()!();
  await settle();
  assert.equal(dev.inFlight, 0);
  assert.equal(dev.heldCompletions, 0);
  // No used entry on the new ring (the device may still write its event-suppression fields).
  if (layout === 'split') assert.equal(p.view.getUint16(area + 2048 + 2, true), 0, 'used idx');
  else assert.ok(p.u8.subarray(area, area + 16 * 16).every((b) => b === 0), 'packed descriptor ring');
  assert.equal(rd.state, 'pending');
  blk.reset();
  await settle();
  assert.equal(rd.state, `rejected ${Code.Cancelled}`);
});
