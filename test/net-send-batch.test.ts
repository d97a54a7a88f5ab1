// VirtioNetDriver.sendBatch: a batch is all-or-nothing when a frame is bad, reports exactly the
// prefix it queued, and keeps each flow on one tx queue (Linux skb_tx_hash) so a flow's frames
// arrive in order across queue pairs and back-to-back batches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, Code, VdpaSimNet, formatMac } from '../src/index.ts';
import { tick } from './helpers/net.ts';

const OWN = [0x02, 0, 0, 0, 0, 1];

function host(maxVqp = 1, queueSize = 64) {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: formatMac(new Uint8Array(OWN)), maxVqp }) as VdpaSimNet;
  const drv = virtio.net('n');
  const got: Uint8Array[] = [];
  drv.onFrame((f) => got.push(f));
  return { dev, drv, got };
}

/** A UDP/IPv4 frame of flow `flow` carrying sequence number `seq`. */
function udp(flow: number, seq: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + 8);
  f.set(OWN, 0);
  f.set([0x02, 0, 0, 0, 0, 0x99], 6);
  f.set([0x08, 0x00], 12);
  f.set([0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, (flow >> 8) & 255, flow & 255], 14);
  f.set([0x30, 0x39, (1000 + flow) >> 8, (1000 + flow) & 255, 0, 16, 0, 0], 34);
  new DataView(f.buffer).setUint32(42, flow, true);
  new DataView(f.buffer).setUint32(46, seq, true);
  return f;
}

test('a batch with a bad frame sends nothing, and the next send() works and is counted', async () => {
  const { dev, drv, got } = host();
  const good = udp(1, 1);
  assert.throws(() => drv.sendBatch([good, new Uint8Array(5)]), (e: { code: string }) => e.code === Code.InvalidArgument);
  assert.equal(drv.stats.txPackets, 0);
  assert.equal(drv.send(udp(1, 2)), true, 'no frame left staged from the refused batch');
  await tick();
  assert.deepEqual(got.map((f) => new DataView(f.buffer, f.byteOffset).getUint32(46, true)), [2], 'only the frame sent');
  assert.equal(drv.stats.txPackets, 1);
  assert.equal(dev.pairStats[0]!.txPackets, 1);
});

test('a batch larger than the free tx buffers queues exactly a prefix and says how long', async () => {
  const { dev, drv, got } = host(1, 16); // 8 tx buffers
  const frames = Array.from({ length: 20 }, (_, i) => udp(1, i));
  dev.suspend(); // nothing is reclaimed meanwhile
  const n = drv.sendBatch(frames);
  assert.equal(n, 8);
  dev.resume();
  await tick();
  assert.deepEqual(got.map((f) => new DataView(f.buffer, f.byteOffset).getUint32(46, true)), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(drv.stats.txPackets, 8);
});

test('multiqueue: each flow keeps its order on the wire across back-to-back batches, and flows spread over the queues', async () => {
  const { dev, drv } = host(4, 256);
  const got: Uint8Array[] = [];
  dev.attachPort((frames) => { for (const f of frames) got.push(f.slice()); });
  await tick();
  assert.equal(drv.queuePairs, 4);
  // Batches of 100 frames: more than the device's 64-chain budget per kick, so part of each
  // is served later (the case that interleaved round-robin batches).
  const FLOWS = 20;
  const PER = 15; // 300 frames, ~75 per queue: within each rx queue's 128 buffers
  const seqs = new Array<number>(FLOWS).fill(0);
  for (let b = 0; b < 3; b++) {
    const batch: Uint8Array[] = [];
    for (let k = 0; k < 100; k++) {
      const flow = (k * 7 + b) % FLOWS;
      if (seqs[flow]! < PER) batch.push(udp(flow, seqs[flow]!++));
    }
    assert.equal(drv.sendBatch(batch), batch.length);
  }
  for (let i = 0; i < 10 && got.length < FLOWS * PER; i++) await tick();
  assert.equal(got.length, FLOWS * PER);
  const next = new Array<number>(FLOWS).fill(0);
  for (const f of got) {
    const dv = new DataView(f.buffer, f.byteOffset);
    const flow = dv.getUint32(42, true);
    assert.equal(dv.getUint32(46, true), next[flow], `flow ${flow} in order`);
    next[flow]!++;
  }
  const used = dev.pairStats.filter((s) => s.txPackets > 0).length;
  assert.ok(used >= 3, `flows spread over ${used} of 4 tx queues`);
});

test('a port callback that sends again from inside the kick loses nothing', async () => {
  const { dev, drv } = host(4, 64);
  await tick();
  const wire: number[] = [];
  dev.attachPort((frames) => {
    for (const f of frames) {
      const dv = new DataView(f.buffer, f.byteOffset);
      const flow = dv.getUint32(42, true);
      const seq = dv.getUint32(46, true);
      wire.push(flow * 1000 + seq);
      if (seq < 100) assert.equal(drv.send(udp(flow + 100, seq + 100)), true); // an answer, sent synchronously
    }
  });
  const batch = Array.from({ length: 12 }, (_, i) => udp(i, i));
  assert.equal(drv.sendBatch(batch), 12);
  for (let i = 0; i < 5; i++) await tick();
  const want = [...batch.map((_, i) => i * 1000 + i), ...batch.map((_, i) => (i + 100) * 1000 + i + 100)];
  assert.deepEqual([...wire].sort((a, b) => a - b), want.sort((a, b) => a - b));
});
