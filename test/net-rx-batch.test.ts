// VirtioNetDriver's batch datapath: onFrames() hands each rx batch over as views of the rx
// buffers (byte-for-byte the frames sent, no object per frame), the per-frame APIs (onFrame,
// `frame` events, frames()) keep working beside it and cost nothing when nobody uses them,
// send() one at a time, and the lazy footprint: an idle device + driver holds no staging and
// no tx buffers (≤ 300 KiB of platform memory at queue size 256); they appear when first used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, Code, VdpaSimNet, VIRTIO_NET_DRIVER_FEATURES, VIRTIO_F_RING_PACKED,
  featureBit, type NetRxBatch,
} from '../src/index.ts';
import { tick, eth } from './helpers/net.ts';

function host(opts: { packed?: boolean; queueSize?: number; txBuffers?: number; privateSize?: number } = {}) {
  const p = Platform.create({ ramSize: 32 << 20, privateSize: opts.privateSize ?? 8 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const features = opts.packed === false ? VIRTIO_NET_DRIVER_FEATURES & ~featureBit(VIRTIO_F_RING_PACKED) : VIRTIO_NET_DRIVER_FEATURES;
  const virtio = createVirtioVdpa(p, { queueSize: opts.queueSize ?? 256, net: { features, ...(opts.txBuffers ? { txBuffers: opts.txBuffers } : {}) } });
  bus.registerDriver(virtio);
  const used = () => (p.ram.size - p.ram.available) + (p.priv.size - p.priv.available);
  const before = used();
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: '02:00:00:00:00:01' }) as VdpaSimNet;
  const drv = virtio.net('n');
  return { p, bus, dev, drv, used, before };
}

/** Frames of assorted sizes whose bytes say which frame they are. */
function frames(n: number, seed: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => {
    const len = 14 + ((i * 97 + seed) % 1500);
    const f = eth(len, i & 255);
    for (let k = 14; k < len - 1; k++) f[k] = (k + i + seed) & 255;
    return f;
  });
}

for (const packed of [false, true]) {
  test(`${packed ? 'packed' : 'split'}: onFrames gets every looped-back frame byte for byte, in batches, as views of the rx buffers`, async () => {
    const { p, drv } = host({ packed });
    const got: Uint8Array[] = [];
    let batches = 0;
    let sawPlatformViews = true;
    const off = drv.onFrames((b: NetRxBatch) => {
      batches++;
      sawPlatformViews &&= b.data === p.u8 || b.data.buffer === p.u8.buffer;
      assert.equal(b.queue, 0);
      for (let i = 0; i < b.count; i++) got.push(b.data.slice(b.offsets[i]!, b.offsets[i]! + b.lengths[i]!));
      assert.deepEqual(b.frame(0), got[got.length - b.count]);
      assert.throws(() => b.frame(b.count), (e: { code: string }) => e.code === Code.InvalidArgument);
    });
    const sent: Uint8Array[] = [];
    for (let round = 0; round < 20; round++) {
      const fs = frames(1 + ((round * 13) % 40), round);
      assert.equal(drv.sendBatch(fs), fs.length);
      sent.push(...fs);
      await tick();
    }
    assert.equal(got.length, sent.length);
    got.forEach((f, i) => assert.deepEqual(f, sent[i], `frame ${i}`));
    assert.ok(batches < sent.length, `frames came in batches (${batches} for ${sent.length})`);
    assert.ok(sawPlatformViews, 'views of platform memory, not copies');
    assert.equal(drv.stats.rxPackets, sent.length);
    off();
    drv.send(eth(60, 1));
    await tick();
    assert.equal(got.length, sent.length, 'unsubscribed');
  });
}

test('the per-frame APIs work beside onFrames; frame events only for listeners; frames() keeps a backlog only when nobody else takes the frames', async () => {
  const { drv } = host();
  const batch: number[] = [];
  const one: number[] = [];
  const events: number[] = [];
  drv.onFrames((b) => { for (let i = 0; i < b.count; i++) batch.push(b.data[b.offsets[i]! + b.lengths[i]! - 1]!); });
  drv.onFrame((f) => one.push(f[f.length - 1]!));
  drv.sendBatch([eth(60, 1), eth(61, 2)]);
  await tick();
  const ev = (e: Event) => events.push(((e as CustomEvent<Uint8Array>).detail).at(-1)!);
  drv.addEventListener('frame', ev);
  drv.sendBatch([eth(60, 3)]);
  await tick();
  drv.removeEventListener('frame', ev);
  drv.send(eth(60, 4));
  await tick();
  assert.deepEqual(batch, [1, 2, 3, 4]);
  assert.deepEqual(one, [1, 2, 3, 4]);
  assert.deepEqual(events, [3], 'events while a listener was there');
  // A batch receiver alone takes the frames: nothing piles up for an iterator nobody reads.
  const { drv: d2 } = host();
  d2.onFrames(() => {});
  d2.sendBatch([eth(60, 5)]);
  await tick();
  const it = d2.frames();
  const r = await Promise.race([it.next(), tick().then(() => 'none')]);
  assert.equal(r, 'none', 'no backlog behind a batch receiver');
  // Without any receiver the iterator still gets what arrived before it read.
  const { drv: d3 } = host();
  d3.sendBatch([eth(60, 6), eth(60, 7)]);
  await tick();
  const it3 = d3.frames();
  assert.equal((await it3.next()).value!.at(-1), 6);
  assert.equal((await it3.next()).value!.at(-1), 7);
});

test('a throwing batch receiver still gives the rx buffers back (the driver reports the error)', async () => {
  const { drv } = host({ queueSize: 16 });
  let calls = 0;
  const errs: unknown[] = [];
  drv.addEventListener('error', (e) => errs.push((e as CustomEvent).detail));
  drv.onFrames(() => {
    calls++;
    throw new Error('consumer bug');
  });
  drv.sendBatch([eth(60, 1)]);
  await tick();
  assert.equal(calls, 1);
  assert.equal(errs.length, 1, 'surfaced as an error event, not an unhandled exception');
});

test('send() one at a time: loops back in order; false when the tx buffers are all in flight, true again after', async () => {
  const { dev, drv } = host({ queueSize: 64, txBuffers: 4 });
  const got: number[] = [];
  drv.onFrames((b) => { for (let i = 0; i < b.count; i++) got.push(b.data[b.offsets[i]! + b.lengths[i]! - 1]!); });
  for (let i = 0; i < 10; i++) assert.equal(drv.send(eth(64, i)), true);
  await tick();
  assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  dev.suspend();
  const ok = [0, 1, 2, 3, 4].map((i) => drv.send(eth(64, 20 + i)));
  assert.deepEqual(ok, [true, true, true, true, false], 'four tx buffers');
  dev.resume();
  await tick();
  assert.equal(drv.send(eth(64, 30)), true);
  await tick();
  assert.deepEqual(got.slice(10), [20, 21, 22, 23, 30]);
  assert.equal(drv.stats.txPackets, 15);
  assert.throws(() => drv.send(new Uint8Array(5)), (e: { code: string }) => e.code === Code.InvalidArgument);
});

test('footprint: an idle net device with its driver (queue size 256) holds ≤ 300 KiB; staging and tx buffers come when used', async () => {
  const { p, dev, drv, used, before } = host();
  const idle = used() - before;
  assert.ok(idle <= 300 * 1024, `idle device + driver: ${(idle / 1024).toFixed(1)} KiB`);
  // The first frame sent takes one chunk of tx buffers (32), not the whole pool.
  drv.send(eth(60, 1));
  await tick();
  const one = used() - before - idle;
  assert.ok(one > 0 && one <= 32 * 1600, `first send took ${one} bytes`);
  // A burst beyond 32 frames in flight grows the pool by chunks.
  dev.suspend();
  assert.equal(drv.sendBatch(frames(80, 1)), 80);
  dev.resume();
  await tick();
  assert.ok(used() - before - idle > one, 'grew with the burst');
  // Port mode and frames off the wire take their staging when first needed.
  const priv0 = p.priv.available;
  dev.attachPort(() => {});
  assert.ok(p.priv.available < priv0, 'tx staging allocated by attachPort');
  const priv1 = p.priv.available;
  dev.deliver([eth(60, 2)]);
  assert.ok(p.priv.available < priv1, 'rx staging allocated by the first deliver');
});

test('lazy staging under memory pressure: attachPort and deliver throw ResourceExhausted and leave the device as it was', async () => {
  const { p, dev, drv } = host({ privateSize: 1 << 20 });
  const got: number[] = [];
  drv.onFrames((b) => { got.push(b.count); });
  const hog: number[] = [];
  for (const sz of [65536, 4096, 256, 16]) {
    for (;;) {
      try {
        hog.push(p.priv.alloc(sz, 16));
      } catch {
        break;
      }
    }
  }
  assert.throws(() => dev.attachPort(() => {}), (e: { code: string }) => e.code === Code.ResourceExhausted);
  assert.equal(dev.mode, 'loopback');
  assert.throws(() => dev.deliver([eth(60, 1)]), (e: { code: string }) => e.code === Code.ResourceExhausted);
  drv.send(eth(60, 2));
  await tick();
  assert.deepEqual(got, [1], 'loopback still works: it needs no staging');
  for (const h of hog) p.priv.release(h);
  dev.attachPort(() => {});
  assert.equal(dev.mode, 'port');
});

test('send(frame, true) queues a burst behind one kick: published by the next plain send(), or by a microtask', async () => {
  const { dev, drv } = host({ queueSize: 64 });
  const got: number[] = [];
  drv.onFrames((b) => { for (let i = 0; i < b.count; i++) got.push(b.data[b.offsets[i]! + b.lengths[i]! - 1]!); });
  let kicks = 0;
  const kick = dev.kickVq.bind(dev);
  dev.kickVq = (idx: number) => {
    kicks++;
    kick(idx);
  };
  for (let i = 0; i < 9; i++) assert.equal(drv.send(eth(64, i), true), true);
  assert.equal(dev.pairStats[0]!.txPackets, 0, 'nothing handed to the device yet');
  assert.equal(drv.send(eth(64, 9)), true);
  assert.equal(kicks, 1, 'one kick for the burst');
  assert.equal(dev.pairStats[0]!.txPackets, 10);
  // Left with `more`: a microtask publishes it; a sendBatch in between keeps the order.
  drv.send(eth(64, 10), true);
  drv.sendBatch([eth(64, 11), eth(64, 12)]);
  drv.send(eth(64, 13), true);
  await tick();
  assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
  assert.equal(drv.stats.txPackets, 14);
});

test('a receiver may reset the driver from its callback: no error, and traffic flows after', async () => {
  for (const batchApi of [true, false]) {
    const { drv } = host({ queueSize: 64 });
    const errs: unknown[] = [];
    drv.addEventListener('error', (e) => errs.push((e as CustomEvent).detail));
    let got = 0;
    let resets = 0;
    const onReset = () => {
      if (resets++ === 0) void drv.reset();
    };
    if (batchApi) drv.onFrames((b) => { got += b.count; onReset(); });
    else drv.onFrame(() => { got++; onReset(); });
    drv.sendBatch([eth(60, 1), eth(60, 2)]);
    await tick();
    await tick();
    assert.deepEqual(errs, [], batchApi ? 'onFrames' : 'onFrame');
    const before = got;
    assert.equal(drv.sendBatch([eth(60, 3), eth(60, 4)]), 2);
    await tick();
    assert.equal(got, before + 2, 'frames flow after the reset');
  }
});
