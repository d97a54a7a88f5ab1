// Seeded fuzzing of vdpasim_net through raw rings (issue 7): frames of 0 B … 1 MiB on tx and
// injected on rx, loopback and port mode, with and without MRG_RXBUF, split and packed, random rx
// buffer sizes, random control commands (valid, garbage, huge chains) and link flaps.
// Checks: nothing throws or traps; counters add up (every frame offered lands in exactly one
// counter); frames arrive byte-exact and in order; rx buffers are used in posting order and
// never returned empty; memory outside the device's map is untouched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VdpaSimNet, VDPASIM_NET_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_CONFIG_S_NEEDS_RESET,
  featureBit, type DriverQueue,
} from '../src/index.ts';
import { virtioInit } from './helpers/virtio-driver.ts';
import { makePlatform } from './helpers/builds.ts';
import { fuzz, fuzzAsync, type Rand } from './helpers/fuzz.ts';

const HDR = 12;
const MTU = 1500;
const OWN = [2, 0, 0, 0, 0, 1];
const SLOT = 64 << 10; // rx buffer slots; a buffer says it is 1 B … 64 KiB long
const NSLOT = 24;
const TX_ARENA = 2 << 20;
const BIG = 1 << 20; // what huge control chains point at, many times over

/** A frame of `len` bytes whose source MAC carries `id` (frames under 12 bytes carry none). */
function makeFrame(r: Rand, id: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  f.fill((id * 31) & 255);
  const dst = r.pick([OWN, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [1, 0, 0x5e, 0, 0, 1], [2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 8]]);
  const head = [...dst, 2, 0, (id >>> 24) & 255, (id >>> 16) & 255, (id >>> 8) & 255, id & 255, 0x88, 0xb5];
  if (r.chance(0.2)) head.splice(12, 2, 0x81, 0x00, 0, r.pick([10, 20]), 0x88, 0xb5); // 802.1Q tag
  f.set(head.slice(0, len));
  if (len > 20) f.set(r.bytes(Math.min(len - 20, 48)), 20);
  return f;
}

function frameLen(r: Rand): number {
  const k = r();
  if (k < 0.6) return r.range(14, MTU + 18);
  if (k < 0.75) return r.range(0, 13);
  if (k < 0.92) return r.range(MTU + 19, 70_000);
  return r.range(70_000, 1 << 20);
}

const idOf = (f: Uint8Array) => (((f[8]! << 24) | (f[9]! << 16) | (f[10]! << 8) | f[11]!) >>> 0);
const le32 = (n: number) => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24];

/** A random control command: valid ones of each class, or garbage. */
function command(r: Rand): number[] {
  switch (r.int(7)) {
    case 0: return r.chance(0.5) ? [0, 0, r.chance(0.3) ? 1 : 0] : [0, r.int(6), r.chance(0.5) ? 1 : 0];
    case 1: {
      const table = () => { const n = r.int(4); return [...le32(n), ...Array.from({ length: n }, () => [r.pick([2, 1]), 0, 0, 0, 0, r.pick([7, 8, 1])]).flat()]; };
      return [1, 0, ...table(), ...table()];
    }
    case 2: return [2, r.int(2), r.pick([10, 20, 30]), 0];
    case 3: return [1, 1, 2, 0, 0, 0, 0, r.pick([1, 0x55])];
    default: return [...r.bytes(r.pick([0, 1, 2, 3, 8, 100, 778, 779, 1200]))];
  }
}

function runCase(r: Rand): void {
  const p = makePlatform('release', { ramSize: 16 << 20, privateSize: 4 << 20 });
  const packed = r.chance(0.5);
  const mrg = r.chance(0.5);
  let want = VDPASIM_NET_FEATURES & ~featureBit(VIRTIO_NET_F_MQ); // one pair: rx 0, tx 1, control 2
  if (!packed) want &= ~featureBit(VIRTIO_F_RING_PACKED);
  if (!mrg) want &= ~featureBit(VIRTIO_NET_F_MRG_RXBUF);
  // Canaries around and between the buffers; the device's map leaves them out.
  const canaries = [p.ram.alloc(4096, 4096)];
  const rxArena = p.ram.alloc(NSLOT * SLOT, 4096);
  canaries.push(p.ram.alloc(4096, 4096));
  const txArena = p.ram.alloc(TX_ARENA, 4096);
  canaries.push(p.ram.alloc(4096, 4096));
  const big = p.ram.alloc(BIG, 4096);
  const ctrlBuf = p.ram.alloc(4096, 4096);
  canaries.push(p.ram.alloc(4096, 4096));
  for (const c of canaries) p.u8.fill(0xc5, c, c + 4096);
  const dev = new VdpaSimNet(p, { name: 'fz', mac: new Uint8Array(OWN), mtu: MTU });
  const size = packed ? r.pick([8, 24, 64]) : r.pick([8, 64]); // packed sizes need not be powers of two
  const d = virtioInit(dev, p, {
    want, size,
    afterFeatures: () => {
      // Identity over the RAM, except the canaries.
      const entries: { iova: number; size: number; addr: number }[] = [];
      let from = p.ramBase;
      for (const c of [...canaries].sort((a, b) => a - b)) {
        if (c > from) entries.push({ iova: from, size: c - from, addr: from });
        from = c + 4096;
      }
      entries.push({ iova: from, size: p.ramBase + p.ramSize - from, addr: from });
      dev.setMap(0, entries);
    },
  });
  const [rxq, txq, ctrlq] = d.queues as [DriverQueue, DriverQueue, DriverQueue];
  const port = r.chance(0.5);
  const wire: Uint8Array[] = [];
  if (port) dev.attachPort((frames) => { for (const f of frames) wire.push(f.slice()); });

  let nextId = 1;
  const sent = new Map<number, Uint8Array>(); // frames by id, for byte-exact checks
  let offered = 0; // frames given to deliver()
  let txNonFrames = 0;
  let lastRxId = 0;
  let lastWireId = 0;
  let onWire = 0;
  let received = 0;
  const freeSlots = Array.from({ length: NSLOT }, (_, i) => i);
  const posted: { slot: number; len: number }[] = []; // FIFO of posted rx buffers
  let tok = 1000;

  const checkRx = () => {
    const n = rxq.getUsed();
    for (let i = 0; i < n; i++) {
      const slot = rxq.usedToken(i);
      const len = rxq.usedLen(i);
      const head = posted.shift();
      assert.ok(head, 'a used rx buffer that was not posted');
      assert.equal(slot, head.slot, 'rx buffers are used in the order they were posted');
      assert.ok(len >= HDR + 14 && len <= head.len, `used length ${len} of a ${head.len}-byte buffer`);
      const at = rxArena + slot * SLOT;
      const hdr = p.u8.subarray(at, at + HDR);
      assert.deepEqual([...hdr], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], 'virtio_net_hdr_v1: no offloads, num_buffers 1');
      const data = p.u8.subarray(at + HDR, at + len);
      const id = idOf(data);
      assert.ok(id > lastRxId, `rx in order: ${id} after ${lastRxId}`);
      lastRxId = id;
      assert.deepEqual(data, sent.get(id), `frame ${id} byte-exact`);
      freeSlots.push(slot);
      received++;
    }
    rxq.enableCb();
  };
  const checkWire = () => {
    for (const f of wire.splice(0)) {
      const id = idOf(f);
      assert.ok(id > lastWireId, 'wire in order');
      lastWireId = id;
      onWire++;
      assert.deepEqual(f, sent.get(id), `wire frame ${id} byte-exact`);
    }
  };

  const steps = r.range(10, 30);
  for (let s = 0; s < steps; s++) {
    const op = r.int(11);
    if (op <= 2) {
      // tx: a few frames, each header + frame in one buffer of the arena.
      let o = 0;
      const n = r.range(1, 8);
      for (let i = 0; i < n; i++) {
        const len = frameLen(r);
        if (o + HDR + len > TX_ARENA) break;
        const id = nextId++;
        const f = makeFrame(r, id, len);
        if (len < 14 || len > MTU + 18) txNonFrames++;
        else sent.set(id, f);
        p.u8.fill(0, txArena + o, txArena + o + HDR);
        p.u8.set(f, txArena + o + HDR);
        txq.stageOne(tok++, txArena + o, HDR + len);
        o += HDR + len;
      }
      txq.submit();
      if (txq.kickPrepare()) dev.kickVq(1);
      while (txq.getUsed() > 0) { /* reclaimed */ }
      txq.enableCb();
    } else if (op <= 5) {
      // Post rx buffers of random sizes.
      const n = Math.min(r.range(1, Math.max(1, freeSlots.length)), rxq.numFree);
      for (let i = 0; i < n && freeSlots.length; i++) {
        const slot = freeSlots.splice(r.int(freeSlots.length), 1)[0]!;
        const len = r.chance(0.7) ? r.range(HDR + 14, 2048) : r.range(1, SLOT);
        rxq.stageOne(slot, rxArena + slot * SLOT, len, true);
        posted.push({ slot, len });
      }
      const staged = rxq.stagedCount;
      assert.equal(rxq.submit(), staged, 'every rx buffer staged is posted');
      if (rxq.kickPrepare()) dev.kickVq(0);
    } else if (op <= 7) {
      // Frames from the wire.
      const frames = Array.from({ length: r.range(0, 8) }, () => {
        const id = nextId++;
        const f = makeFrame(r, id, frameLen(r));
        sent.set(id, f);
        return f;
      });
      offered += frames.length;
      const got = dev.deliver(frames);
      assert.ok(got >= 0 && got <= frames.length);
    } else if (op <= 9) {
      // A control command: valid, garbage, or a huge chain over `big` many times.
      const bytes = command(r);
      const huge = r.chance(0.2);
      p.u8.set(bytes, ctrlBuf);
      const out = bytes.length ? [{ addr: ctrlBuf, len: bytes.length }] : [];
      // (a chain must fit the ring: at most size - 2 descriptors besides the command and its ack)
      if (huge) for (let i = 0, k = r.range(2, Math.min(40, size - 2)); i < k; i++) out.push({ addr: big, len: BIG });
      const ackLen = r.chance(0.1) ? 0 : r.range(1, 4);
      p.u8[ctrlBuf + 2048] = 0xee;
      if (out.length + (ackLen ? 1 : 0) === 0) continue;
      ctrlq.stage(tok++, out, ackLen ? [{ addr: ctrlBuf + 2048, len: ackLen }] : []);
      assert.equal(ctrlq.submit(), 1);
      if (ctrlq.kickPrepare()) dev.kickVq(2);
      assert.equal(ctrlq.getUsed(), 1, 'every command is answered');
      const ack = p.u8[ctrlBuf + 2048]!;
      if (ackLen) {
        assert.equal(ctrlq.usedLen(0), 1);
        assert.ok(ack === 0 || ack === 1, `ack ${ack}`);
        if (huge) assert.equal(ack, 1, 'a command longer than any command is refused');
      } else {
        assert.equal(ctrlq.usedLen(0), 0);
      }
      ctrlq.enableCb();
    } else {
      dev.setLink(r.chance(0.75));
    }
    checkRx();
    checkWire();
    assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0, 'the device never blames a correct driver');
  }

  const st = dev.pairStats[0]!;
  assert.equal(st.packets, received, 'packets = frames the driver got');
  assert.equal(st.txErrors, txNonFrames, 'tx errors = chains that were not frames');
  assert.equal(st.drops, st.dropsNoBuffer + st.dropsLinkDown + st.dropsTooBig + st.dropsMalformed, 'drops is the sum of its causes');
  const rxSide = st.packets + st.filtered + st.drops;
  if (port) {
    assert.equal(offered, rxSide, 'every frame offered on the wire is delivered, filtered or dropped once');
    assert.equal(st.txPackets, onWire + st.txDropsLinkDown, 'every tx frame went to the wire or was dropped for link down');
  } else {
    assert.equal(st.txDropsLinkDown, 0);
    assert.equal(st.txPackets + offered, rxSide, 'every frame looped or offered is delivered, filtered or dropped once');
  }
  for (const c of canaries) assert.ok(p.u8.subarray(c, c + 4096).every((b) => b === 0xc5), 'memory outside the map is untouched');
  dev.destroy();
}

test('fuzz: vdpasim_net under random traffic, buffers, control commands and link flaps', () => {
  fuzz('net', 24, (r) => runCase(r));
});

/** A UDP/IPv4 frame of `flow` carrying `seq`, `pad` bytes of payload. */
function udp(flow: number, seq: number, pad: number, dst = OWN): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + 8 + pad);
  f.set(dst, 0);
  f.set([2, 0, 0, 0, 0, 9, 0x08, 0x00], 6);
  f.set([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, (flow >> 8) & 255, flow & 255], 14);
  f.set([0x30, 0x39, (1000 + flow) >> 8, (1000 + flow) & 255], 34);
  const dv = new DataView(f.buffer);
  dv.setUint32(42, flow, true);
  dv.setUint32(46, seq, true);
  return f;
}

test('fuzz: VirtioNetDriver over vdpasim_net — batches good and bad, many flows over queue pairs, rx modes, resets, link flaps', async () => {
  const { Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, VirtioError, formatMac } = await import('../src/index.ts');
  const tick = () => new Promise((res) => setTimeout(res, 0));
  await fuzzAsync('net-driver', 6, async (r) => {
    const p = Platform.create({ ramSize: 32 << 20 });
    const bus = new VdpaBus();
    bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
    const virtio = createVirtioVdpa(p, { queueSize: r.pick([16, 64, 256]) });
    bus.registerDriver(virtio);
    const dev = bus.devAdd('vdpasim_net', 'n', { mac: formatMac(new Uint8Array(OWN)), maxVqp: r.range(1, 4) }) as VdpaSimNet;
    const drv = virtio.net('n');
    const port = r.chance(0.4);
    const wire: Uint8Array[] = [];
    if (port) dev.attachPort((frames) => { for (const f of frames) wire.push(f.slice()); });
    const got: Uint8Array[] = [];
    drv.onFrame((f) => got.push(f));
    const seq = new Array<number>(16).fill(0);
    const last = new Map<number, number>();
    const lastWire = new Map<number, number>();
    const inOrder = (frames: Uint8Array[], seen: Map<number, number>, where: string) => {
      for (const f of frames.splice(0)) {
        if (f.length < 50) continue;
        const dv = new DataView(f.buffer, f.byteOffset);
        const flow = dv.getUint32(42, true);
        const s = dv.getUint32(46, true);
        assert.ok(s > (seen.get(flow) ?? -1), `${where}: flow ${flow} in order (${s} after ${seen.get(flow)})`);
        seen.set(flow, s);
      }
    };
    let sentByDriver = 0;
    const devTotals = { tx: 0, rx: 0, linkDown: 0 };
    let onWire = 0;
    const account = () => {
      for (const st of dev.pairStats) {
        devTotals.tx += st.txPackets;
        devTotals.rx += st.packets + st.filtered + st.drops;
        devTotals.linkDown += st.txDropsLinkDown;
      }
    };
    await tick();
    for (let step = 0, n = r.range(10, 30); step < n; step++) {
      const op = r.int(10);
      try {
        if (op <= 5) {
          const bad = r.chance(0.1) ? r.int(100) : -1; // a batch with a frame the driver refuses
          const batch = Array.from({ length: r.range(1, 100) }, (_, i) => {
            const flow = r.int(16);
            if (i === bad) return r.chance(0.5) ? new Uint8Array(r.int(14)) : new Uint8Array(r.range(1600, 70_000));
            return udp(flow, ++seq[flow]!, r.range(0, 1400), r.chance(0.8) ? OWN : [2, 0, 0, 0, 0, 0x77]);
          });
          const sent = drv.sendBatch(batch);
          assert.ok(sent >= 0 && sent <= batch.length);
          sentByDriver += sent;
        } else if (op === 6) {
          await drv.setRxMode({ promisc: r.chance(0.5) });
        } else if (op === 7) {
          dev.setLink(r.chance(0.7));
        } else if (op === 8) {
          if (drv.maxQueuePairs > 1) await drv.setQueuePairs(r.range(1, drv.maxQueuePairs));
        } else {
          account();
          await drv.reset();
        }
      } catch (e) {
        assert.ok(e instanceof VirtioError, `only typed errors at the API: ${String(e)}`);
      }
      await tick();
      inOrder(got, last, 'rx');
      onWire += wire.length;
      inOrder(wire, lastWire, 'wire');
    }
    await tick();
    account();
    assert.equal(devTotals.tx, sentByDriver, 'the device took every frame the driver sent');
    if (!port) assert.equal(devTotals.rx, devTotals.tx, 'every looped frame is delivered, filtered or dropped once');
    else assert.equal(devTotals.tx, onWire + devTotals.linkDown, 'every frame sent went to the wire or was dropped for link down');
    bus.devDel('n');
  });
});
