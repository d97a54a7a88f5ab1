// vdpasim_net in port mode: devices on a learning L2 switch, frames bridged to an application
// endpoint, and pcap capture of the wire side.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, L2Switch, PcapWriter, readPcap, LINKTYPE_ETHERNET, VdpaSimNet,
} from '../src/index.ts';
import { tick } from './helpers/net.ts';

/** An Ethernet frame dst ← src with a payload byte pattern. */
function frame(dst: number[], src: number[], fill: number, len = 64): Uint8Array {
  const f = new Uint8Array(len).fill(fill);
  f.set(dst, 0);
  f.set(src, 6);
  f.set([0x88, 0xb5], 12); // IEEE 802 local experimental ethertype
  return f;
}

const MAC = (n: number) => [0x02, 0, 0, 0, 0, n];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

function lan(n: number) {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  const sw = new L2Switch();
  const hosts = Array.from({ length: n }, (_, i) => {
    const name = `net${i + 1}`;
    const dev = bus.devAdd('vdpasim_net', name, { mac: MAC(i + 1).map((x) => x.toString(16).padStart(2, '0')).join(':') }) as VdpaSimNet;
    const port = sw.connect(dev);
    dev.attachPort((frames) => sw.input(port, frames));
    const drv = virtio.net(name);
    const got: Uint8Array[] = [];
    drv.onFrame((f) => got.push(f));
    return { dev, drv, port, got };
  });
  return { sw, hosts };
}

test('two drivers on one switch: broadcast floods, unicast goes only to the learned port', async () => {
  const { sw, hosts } = lan(3);
  const [a, b, c] = hosts as [typeof hosts[0], typeof hosts[0], typeof hosts[0]];
  assert.equal(a.dev.mode, 'port');
  // a broadcasts: b and c get it, a does not (no loopback in port mode).
  a.drv.send(frame(BCAST, MAC(1), 1));
  await tick();
  assert.equal(b.got.length, 1);
  assert.equal(c.got.length, 1);
  assert.equal(a.got.length, 0);
  assert.deepEqual(b.got[0], frame(BCAST, MAC(1), 1));
  // b answers a by unicast: the switch learned a's port, so c sees nothing.
  b.drv.send(frame(MAC(1), MAC(2), 2));
  await tick();
  assert.equal(a.got.length, 1);
  assert.equal(c.got.length, 1);
  assert.deepEqual(a.got[0], frame(MAC(1), MAC(2), 2));
  assert.equal(sw.table.get('02:00:00:00:00:01'), a.port);
  assert.equal(sw.table.get('02:00:00:00:00:02'), b.port);
  // Unknown unicast floods.
  a.drv.send(frame(MAC(9), MAC(1), 3));
  await tick();
  assert.equal(b.got.length, 2);
  assert.equal(c.got.length, 2);
  assert.equal(sw.stats(b.port).txFrames, 2);
});

test('many frames between two hosts arrive in order and intact', async () => {
  const { hosts } = lan(2);
  const [a, b] = hosts as [typeof hosts[0], typeof hosts[0]];
  b.drv.send(frame(BCAST, MAC(2), 0)); // let the switch learn b
  await tick();
  const sent: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) sent.push(frame(MAC(2), MAC(1), i & 0xff, 60 + (i * 7) % 1400));
  for (let i = 0; i < sent.length; i += 16) {
    a.drv.sendBatch(sent.slice(i, i + 16));
    await tick();
  }
  await tick();
  assert.equal(b.got.length, 300);
  b.got.forEach((f, i) => assert.deepEqual(f, sent[i]));
  assert.equal(b.dev.pairStats[0]!.drops, 0);
  assert.equal(a.dev.pairStats[0]!.txPackets, 300);
});

test('a port can be any endpoint: frames bridged to and from the application', async () => {
  const { hosts } = lan(1);
  const h = hosts[0]!;
  const wire: Uint8Array[] = [];
  h.dev.attachPort((frames) => { for (const f of frames) wire.push(f.slice()); });
  h.drv.send(frame(BCAST, MAC(1), 7));
  assert.equal(wire.length, 1);
  assert.deepEqual(wire[0], frame(BCAST, MAC(1), 7));
  assert.equal(h.dev.deliver([frame(MAC(1), MAC(5), 8), frame(MAC(1), MAC(5), 9)]), 2);
  await tick();
  assert.deepEqual(h.got.map((f) => f[20]), [8, 9]);
  // Link down: the wire drops frames.
  h.dev.setLink(false);
  assert.equal(h.dev.deliver([frame(MAC(1), MAC(5), 10)]), 0);
});

test('pcap capture of the wire side reads back as LINKTYPE_ETHERNET with every frame', async () => {
  const { hosts } = lan(2);
  const [a, b] = hosts as [typeof hosts[0], typeof hosts[0]];
  const chunks: Uint8Array[] = [];
  let t = 1_700_000_000_000_000;
  const w = new PcapWriter((c) => chunks.push(c), { now: () => (t += 1500) });
  a.dev.capture(w);
  const f1 = frame(BCAST, MAC(1), 1, 100);
  const f2 = frame(MAC(1), MAC(2), 2, 200);
  a.drv.send(f1); // a's tx
  await tick();
  b.drv.send(f2); // arrives on a's rx
  await tick();
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  // Global header: magic, version 2.4, snaplen, LINKTYPE_ETHERNET.
  const v = new DataView(all.buffer);
  assert.equal(v.getUint32(0, true), 0xa1b2c3d4);
  assert.deepEqual([v.getUint16(4, true), v.getUint16(6, true)], [2, 4]);
  const cap = readPcap(all);
  assert.equal(cap.linktype, LINKTYPE_ETHERNET);
  assert.deepEqual(cap.frames.map((f) => f.data), [f1, f2]);
  assert.deepEqual(cap.frames.map((f) => f.tsUs), [1_700_000_000_001_500, 1_700_000_000_003_000]);
  assert.equal(w.frames, 2);
});

test('on the switch, flooded frames meet each receiver\'s filter: the rx mode decides what it sees', async () => {
  const { hosts } = lan(3);
  const [a, b, c] = hosts as [typeof hosts[0], typeof hosts[0], typeof hosts[0]];
  await b.drv.setRxMode({ promisc: false }); // b: own MAC and broadcast only
  await c.drv.setRxMode({ promisc: false, nobcast: true }); // c: own MAC only
  a.drv.send(frame(MAC(7), MAC(1), 1)); // unknown unicast: flooded to b and c
  a.drv.send(frame(BCAST, MAC(1), 2));
  a.drv.send(frame(MAC(3), MAC(1), 3)); // c's own address (not learned yet: flooded)
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(b.got.map((f) => f[20]), [2]);
  assert.deepEqual(c.got.map((f) => f[20]), [3]);
  assert.equal(b.dev.pairStats[0]!.filtered, 2);
  assert.equal(c.dev.pairStats[0]!.filtered, 2);
});

test('switch counters add up: runts from an endpoint are counted, each forwarded frame is taken or dropped once', async () => {
  const { sw, hosts } = lan(2);
  const [a, b] = hosts as [typeof hosts[0], typeof hosts[0]];
  const app: Uint8Array[] = [];
  const appPort = sw.connect({ deliver: (frames) => { app.push(...frames); return frames.length; } });
  sw.input(appPort, [new Uint8Array(5), frame(BCAST, MAC(9), 1), frame(MAC(2), MAC(9), 2, 3000)]);
  await tick();
  assert.deepEqual(sw.stats(appPort), { rxFrames: 2, rxErrors: 1, txFrames: 0, txDrops: 0 });
  // Both flooded (MAC 2 is not learned yet): each takes the broadcast and drops the frame over its MTU.
  for (const h of [a, b]) {
    assert.deepEqual(sw.stats(h.port), { rxFrames: 0, rxErrors: 0, txFrames: 1, txDrops: 1 });
    assert.equal(h.dev.pairStats[0]!.dropsTooBig, 1);
    assert.equal(h.got.length, 1);
  }
});
