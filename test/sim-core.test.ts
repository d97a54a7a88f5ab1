// The simulator core (src/devices/sim-core.ts) and its two device classes (net.ts, blk.ts)
// through the vdpa_config_ops, driven by DriverQueues the way a virtio driver would:
// config space and generation (VIRTIO 1.3 §2.5, §5.1.4, §5.2.4), virtqueue setup rules,
// net loopback on split and packed rings, suspend/resume, vq state migration to a second
// device, address spaces with a non-identity IOVA window, DEVICE_NEEDS_RESET after a driver
// error (§2.1.2), virtio-blk requests (§5.2.6), vendor vq stats.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VdpaSim, VdpaSimNet, VdpaSimBlk, VdpaSimBlkMgmt, DriverQueue, VirtioError, Code,
  VDPASIM_BLK_FEATURES, PERM_RW, featureBit, features,
  VIRTIO_F_RING_PACKED, VIRTIO_F_EVENT_IDX, VIRTIO_BLK_F_RO,
  VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_FAILED, VIRTIO_ID_NET, VIRTIO_ID_BLOCK,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, SECTOR_SIZE,
  type Platform, type NeedsResetDetail, type VqState,
} from '../src/index.ts';
import {
  virtioInit, testPlatform, frame, NetDriver, BufPool, NET_SPLIT, NET_PACKED, S_ACK, S_DRIVER, S_FEATURES_OK, S_DRIVER_OK,
} from './helpers/virtio-driver.ts';
import { writeSplitDesc, writePackedDesc, availBits, F_NEXT, F_WRITE } from './helpers/raw-ring.ts';

const ALL_OK = S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
const NEEDS_RESET = VIRTIO_CONFIG_S_NEEDS_RESET;
const MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const SPLIT = NET_SPLIT;
const LAYOUTS = ['split', 'packed'] as const;
type LayoutName = (typeof LAYOUTS)[number];
const netWant = (l: LayoutName): bigint => (l === 'packed' ? NET_PACKED : NET_SPLIT);

function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VirtioError, `expected a VirtioError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

function netDev(p: Platform, o: Partial<ConstructorParameters<typeof VdpaSimNet>[1]> = {}): VdpaSimNet {
  return new VdpaSimNet(p, { name: 'net0', mac: MAC, ...o });
}

/** Records config callbacks, config events and needs-reset events of a device. */
function watch(dev: VdpaSim) {
  const w = { configCb: 0, configEvents: [] as number[], needsReset: [] as NeedsResetDetail[] };
  dev.setConfigCb(() => w.configCb++);
  dev.addEventListener('config', (e) => w.configEvents.push((e as CustomEvent<number>).detail));
  dev.addEventListener('needs-reset', (e) => w.needsReset.push((e as CustomEvent<NeedsResetDetail>).detail));
  return w;
}

/** A running net device with its driver. */
function runningNet(layout: LayoutName, o: { size?: number; want?: bigint; mtu?: number } = {}) {
  const p = testPlatform();
  const dev = netDev(p, o.mtu ? { mtu: o.mtu } : {});
  const d = virtioInit(dev, p, { nvqs: 2, want: o.want ?? netWant(layout), size: o.size ?? 32 });
  const net = new NetDriver(p, dev, d.queues[0]!, d.queues[1]!);
  return { p, dev, d, net };
}

/** Sends `frames` through the loopback (rx buffers first) and checks they all come back intact, in order. */
function roundTrip(net: NetDriver, frames: Uint8Array[]): void {
  net.postRx(frames.length);
  const txToks = net.send(frames);
  const got = net.reclaimRx();
  assert.equal(got.length, frames.length, 'every frame looped back');
  got.forEach((r, i) => {
    assert.equal(r.len, frames[i]!.length);
    assert.deepEqual(r.data, frames[i]);
  });
  assert.deepEqual(net.reclaimTx(), txToks, 'every tx buffer used, in order');
}

/** The ring counters of a queue's vendor stats (net adds frame counters after them). */
function ringStats(v: { stats: [string, number][] }): [string, number][] {
  return v.stats.slice(0, 2);
}

describe('config space (VIRTIO 1.3 §2.5, §5.1.4, §5.2.4)', () => {
  test('net: mac @0, status @6, max_virtqueue_pairs @8, mtu @10, little-endian', () => {
    const p = testPlatform();
    const dev = netDev(p, { mtu: 9000 });
    assert.equal(dev.getDeviceId(), VIRTIO_ID_NET);
    assert.equal(dev.getVendorId(), 0);
    assert.equal(dev.getVqAlign(), 4096);
    assert.equal(dev.getConfigSize(), 12);
    assert.deepEqual([...dev.getConfig(0, 12)], [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x01, 0x00, 0x01, 0x00, 0x28, 0x23]);
    assert.deepEqual([...dev.getConfig(10, 2)], [0x28, 0x23]);
    assert.deepEqual([...dev.getConfig(12, 0)], []);
    const copy = dev.getConfig(0, 6);
    copy.fill(0);
    assert.deepEqual(dev.getConfig(0, 6), MAC, 'getConfig returns a copy');
    assert.deepEqual(dev.mac, MAC);
    assert.equal(dev.mtu, 9000);
  });

  test('blk: capacity @0 (le64), size_max @8, seg_max @12, blk_size @20', () => {
    const p = testPlatform();
    const dev = new VdpaSimBlk(p, { name: 'blk0', capacity: 0x0f03 });
    assert.equal(dev.getDeviceId(), VIRTIO_ID_BLOCK);
    assert.equal(dev.getConfigSize(), 60);
    const c = dev.getConfig(0, 24);
    const v = new DataView(c.buffer);
    assert.equal(v.getBigUint64(0, true), 0x0f03n);
    // size_max 64 KiB, seg_max min(128, vq_num_max - 2): 8 MiB per request (src/devices/blk.ts BLK_LIMITS).
    assert.equal(v.getUint32(8, true), 65536);
    assert.equal(v.getUint32(12, true), Math.min(128, dev.getVqNumMax() - 2));
    assert.equal(v.getUint32(20, true), 512);
    assert.deepEqual([...c.subarray(0, 8)], [0x03, 0x0f, 0, 0, 0, 0, 0, 0]);
  });

  test('setLink: one generation bump, one config callback, one event per change', () => {
    const p = testPlatform();
    const dev = netDev(p);
    const w = watch(dev);
    const g0 = dev.getGeneration();
    assert.equal(dev.linkUp, true);
    dev.setLink(false);
    assert.equal(dev.getGeneration(), g0 + 1);
    assert.equal(w.configCb, 1);
    assert.deepEqual(w.configEvents, [g0 + 1]);
    assert.deepEqual([...dev.getConfig(6, 2)], [0, 0]);
    assert.equal(dev.linkUp, false);
    dev.setLink(false); // no change: nothing happens
    assert.equal(dev.getGeneration(), g0 + 1);
    assert.equal(w.configCb, 1);
    dev.setLink(true);
    assert.equal(dev.getGeneration(), g0 + 2);
    assert.equal(w.configCb, 2);
    assert.deepEqual([...dev.getConfig(6, 2)], [1, 0]);
    dev.setConfigCb(null);
    dev.setLink(false);
    assert.equal(w.configCb, 2, 'a cleared callback is not called');
    assert.equal(dev.getGeneration(), g0 + 3);
  });

  const badRanges: [number, number][] = [[11, 2], [0, 13], [12, 1], [-1, 1], [0, -1], [1.5, 1], [0, Number.NaN]];
  for (const [off, len] of badRanges) {
    test(`getConfig(${off}, ${len}) on the 12-byte net config → invalid_argument`, () => {
      const dev = netDev(testPlatform());
      throwsCode(() => dev.getConfig(off, len), Code.InvalidArgument);
    });
  }

  test('setConfig on read-only fields → failed_precondition, nothing changes; out of range → invalid_argument', () => {
    const p = testPlatform();
    for (const dev of [netDev(p), new VdpaSimBlk(p, { name: 'blk0', capacity: 8 })]) {
      const w = watch(dev);
      const before = dev.getConfig(0, dev.getConfigSize());
      const g = dev.getGeneration();
      throwsCode(() => dev.setConfig(0, new Uint8Array([2, 0, 0, 0, 0, 1])), Code.FailedPrecondition);
      throwsCode(() => dev.setConfig(6, new Uint8Array([0, 0])), Code.FailedPrecondition);
      throwsCode(() => dev.setConfig(dev.getConfigSize() - 1, new Uint8Array(2)), Code.InvalidArgument);
      assert.deepEqual(dev.getConfig(0, dev.getConfigSize()), before);
      assert.equal(dev.getGeneration(), g);
      assert.equal(w.configCb, 0);
      assert.deepEqual(w.configEvents, []);
    }
  });
});

describe('virtqueue setup rules', () => {
  /** A net device at FEATURES_OK with split rings, and a size-16 driver queue laid out. */
  function atFeaturesOk(want = SPLIT) {
    const p = testPlatform();
    const dev = netDev(p);
    dev.setStatus(S_ACK);
    dev.setStatus(S_ACK | S_DRIVER);
    dev.setDriverFeatures(want);
    dev.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
    const q = new DriverQueue(p, { size: 16, features: want });
    const a = q.addresses;
    return { p, dev, q, a };
  }

  test('vq num limits: 1..getVqNumMax()', () => {
    const { dev } = atFeaturesOk();
    assert.equal(dev.getVqNumMax(), 256);
    assert.equal(dev.getVqNumMin(), 1);
    for (const ok of [1, 16, 256]) dev.setVqNum(0, ok);
    for (const bad of [0, -1, 257, 1.5, Number.NaN]) throwsCode(() => dev.setVqNum(0, bad), Code.InvalidArgument);
    for (const idx of [dev.nvqs, -1, 0.5]) throwsCode(() => dev.setVqNum(idx, 16), Code.InvalidArgument);
  });

  test('bad IOVAs and queue indices → invalid_argument', () => {
    const { dev, a } = atFeaturesOk();
    throwsCode(() => dev.setVqAddress(0, -16, a.driverArea, a.deviceArea), Code.InvalidArgument);
    throwsCode(() => dev.setVqAddress(0, a.descArea, 1n << 64n, a.deviceArea), Code.InvalidArgument);
    throwsCode(() => dev.setVqAddress(0, a.descArea, a.driverArea, 2 ** 60), Code.InvalidArgument);
    throwsCode(() => dev.setVqAddress(0, 1.5, a.driverArea, a.deviceArea), Code.InvalidArgument);
    const n = dev.nvqs;
    throwsCode(() => dev.setVqAddress(n, a.descArea, a.driverArea, a.deviceArea), Code.InvalidArgument);
    for (const op of [() => dev.setVqReady(n, true), () => dev.getVqReady(-1), () => dev.kickVq(n + 3), () => dev.setVqCb(n, null), () => dev.getVqState(n), () => dev.getVendorVqStats(n)]) {
      throwsCode(op, Code.InvalidArgument);
    }
  });

  test('setVqReady before FEATURES_OK → failed_precondition', () => {
    const p = testPlatform();
    const dev = netDev(p);
    const q = new DriverQueue(p, { size: 16, features: SPLIT });
    dev.setStatus(S_ACK | S_DRIVER);
    dev.setDriverFeatures(SPLIT);
    dev.setVqNum(0, 16);
    dev.setVqAddress(0, q.addresses.descArea, q.addresses.driverArea, q.addresses.deviceArea);
    throwsCode(() => dev.setVqReady(0, true), Code.FailedPrecondition);
    assert.equal(dev.getVqReady(0), false);
    dev.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
    dev.setVqReady(0, true);
    assert.equal(dev.getVqReady(0), true);
  });

  test('setVqReady without a size or without addresses → failed_precondition', () => {
    const { dev, a } = atFeaturesOk();
    throwsCode(() => dev.setVqReady(0, true), Code.FailedPrecondition);
    dev.setVqNum(0, 16);
    throwsCode(() => dev.setVqReady(0, true), Code.FailedPrecondition);
    dev.setVqNum(1, 16);
    dev.setVqAddress(1, a.descArea, a.driverArea, a.deviceArea);
    dev.setVqAddress(0, a.descArea, a.driverArea, a.deviceArea);
    dev.setVqReady(0, true);
    assert.equal(dev.getVqReady(0), true);
    assert.equal(dev.getVqReady(1), false);
  });

  test('rings that are not mapped → invalid_argument and the queue stays disabled', () => {
    const { p, dev, a } = atFeaturesOk();
    dev.setVqNum(0, 16);
    // Below RAM: the identity map covers only the platform RAM.
    dev.setVqAddress(0, 0x100, a.driverArea, a.deviceArea);
    throwsCode(() => dev.setVqReady(0, true), Code.InvalidArgument);
    // Past the end of RAM.
    dev.setVqAddress(0, a.descArea, a.driverArea, p.ramBase + p.ramSize - 8);
    throwsCode(() => dev.setVqReady(0, true), Code.InvalidArgument);
    // Mapped but moved: a window at another IOVA leaves the offsets unmapped.
    dev.setVqAddress(0, a.descArea, a.driverArea, a.deviceArea);
    dev.setMap(0, [{ iova: 1n << 40n, size: p.ramSize, addr: p.ramBase }]);
    throwsCode(() => dev.setVqReady(0, true), Code.InvalidArgument);
    // Misaligned descriptor table (16-byte alignment, §2.7).
    dev.setMap(0, [{ iova: p.ramBase, size: p.ramSize, addr: p.ramBase }]);
    dev.setVqAddress(0, a.descArea + 8, a.driverArea, a.deviceArea);
    throwsCode(() => dev.setVqReady(0, true), Code.InvalidArgument);
    assert.equal(dev.getVqReady(0), false);
    dev.setVqAddress(0, a.descArea, a.driverArea, a.deviceArea);
    dev.setVqReady(0, true);
    assert.equal(dev.getVqReady(0), true);
  });

  test('a split queue size that is not a power of two is refused at enable', () => {
    const { dev, a } = atFeaturesOk();
    dev.setVqNum(0, 12);
    dev.setVqAddress(0, a.descArea, a.driverArea, a.deviceArea);
    throwsCode(() => dev.setVqReady(0, true), Code.InvalidArgument);
    assert.equal(dev.getVqReady(0), false);
  });

  test('setVqNum / setVqAddress on an enabled queue → failed_precondition, the queue keeps working', () => {
    const { dev, d, net } = runningNet('split', { size: 16 });
    const a = d.queues[1]!.addresses;
    throwsCode(() => dev.setVqNum(1, 8), Code.FailedPrecondition);
    throwsCode(() => dev.setVqAddress(1, a.descArea + 4096, a.driverArea, a.deviceArea), Code.FailedPrecondition);
    assert.equal(dev.getVqState(1).size, 16);
    roundTrip(net, [frame(1, 50), frame(2, 60)]);
    // Disabled, both may change again.
    dev.setVqReady(1, false);
    dev.setVqNum(1, 16);
    dev.setVqAddress(1, a.descArea, a.driverArea, a.deviceArea);
    dev.setVqReady(1, true);
    roundTrip(net, [frame(3, 50)]);
  });

  test('disabling a queue keeps its position for the next enable', () => {
    const { dev, net } = runningNet('split', { size: 16 });
    roundTrip(net, [frame(1, 40), frame(2, 40), frame(3, 40)]);
    dev.setVqReady(1, false);
    assert.equal(dev.getVqReady(1), false);
    assert.deepEqual(dev.getVqState(1), { version: 1, layout: 'split', size: 16, availIndex: 3, usedIndex: 3 });
    dev.setVqReady(1, true);
    roundTrip(net, [frame(4, 40), frame(5, 40)]);
    assert.deepEqual(dev.getVqState(1), { version: 1, layout: 'split', size: 16, availIndex: 5, usedIndex: 5 });
  });
});

describe('net loopback after §3.1 initialization', () => {
  for (const layout of LAYOUTS) {
    for (const eventIdx of [false, true]) {
      test(`${layout}${eventIdx ? ' + EVENT_IDX' : ''}: 400 frames over a size-32 ring, intact and in order, callbacks raised`, () => {
        const want = netWant(layout) & ~(eventIdx ? 0n : featureBit(VIRTIO_F_EVENT_IDX));
        const { dev, d, net } = runningNet(layout, { size: 32, want });
        assert.equal(d.features, want);
        assert.equal(dev.getDriverFeatures(), want);
        let seed = 0;
        let callsRx = 0;
        for (let round = 0; round < 20; round++) {
          const n = 1 + (round * 7) % 25; // 1..25 frames, varying so packed wrap lands anywhere
          // 26..1439 bytes: at least header + Ethernet header, at most header + 14 + MTU.
          const frames = Array.from({ length: n }, () => frame(seed, 14 + (seed++ * 37) % 1400));
          roundTrip(net, frames);
          assert.ok(d.calls[0]! > callsRx, `round ${round}: rx used-buffer callback`);
          callsRx = d.calls[0]!;
        }
        assert.ok(d.calls[1]! > 0, 'tx used-buffer callback');
        const st = dev.pairStats[0]!;
        assert.deepEqual([st.packets, st.txPackets, st.drops, st.txErrors], [seed, seed, 0, 0]);
        assert.equal(st.bytes, Array.from({ length: seed }, (_, i) => 12 + 14 + (i * 37) % 1400).reduce((a, b) => a + b, 0));
        const s = dev.getVqState(1);
        if (s.layout === 'split') assert.deepEqual([s.availIndex, s.usedIndex], [seed, seed]);
        else assert.deepEqual([s.lastAvailIdx, s.lastAvailWrap], [seed % 32, (Math.floor(seed / 32) + 1) % 2]);
      });
    }
  }

  test('packed ring with a size that is not a power of two (§2.8 allows it)', () => {
    const { net } = runningNet('packed', { size: 24 });
    for (let r = 0; r < 10; r++) roundTrip(net, Array.from({ length: 10 }, (_, i) => frame(r * 10 + i, 64)));
  });

  test('link down: tx is consumed and dropped, rx buffers stay posted', () => {
    const { dev, net } = runningNet('split', { size: 16 });
    dev.setLink(false);
    net.postRx(4);
    const toks = net.send([frame(1, 60), frame(2, 60), frame(3, 60)]);
    assert.deepEqual(net.reclaimTx(), toks);
    assert.deepEqual(net.reclaimRx(), []);
    assert.equal(dev.pairStats[0]!.drops, 3);
    dev.setLink(true);
    net.send([frame(4, 60)]);
    const got = net.reclaimRx();
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.data, frame(4, 60));
  });

  test('no rx buffer, or an rx buffer too small: dropped; not a frame (short, over the MTU): a tx error', () => {
    const p = testPlatform();
    const dev = netDev(p, { mtu: 100 });
    const d = virtioInit(dev, p, { nvqs: 2, want: SPLIT, size: 16 });
    const net = new NetDriver(p, dev, d.queues[0]!, d.queues[1]!, { bufSize: 160 });
    const st = dev.pairStats[0]!;
    net.send([frame(1, 60)]);
    assert.equal(net.reclaimTx().length, 1);
    assert.deepEqual([st.drops, st.txPackets, st.packets, st.txErrors], [1, 1, 0, 0], 'no rx buffer');
    // Within the MTU, but larger than the rx buffer.
    const small = new NetDriver(p, dev, d.queues[0]!, d.queues[1]!, { rxPool: new BufPool(p, 32, 40), txPool: net.txPool });
    small.postRx(1);
    small.send([frame(2, 60)]); // 72 bytes into a 40-byte buffer
    assert.deepEqual(small.reclaimRx(), [], 'the frame is dropped once; the rx buffer stays posted for the next one');
    assert.deepEqual([st.drops, st.dropsTooBig, st.txPackets, st.packets], [2, 1, 2, 0]);
    assert.equal(small.reclaimTx().length, 1);
    small.send([frame(7, 20)]); // 32 bytes: fits the buffer that stayed
    assert.deepEqual(small.reclaimRx().map((r) => r.len), [32]);
    assert.deepEqual([st.drops, st.txPackets, st.packets], [2, 3, 1]);
    assert.equal(small.reclaimTx().length, 1);
    // Over the MTU, or shorter than virtio_net_hdr + an Ethernet header: not a frame.
    net.postRx(2);
    // (an 802.1Q-tagged frame may be 4 bytes longer: ETH + tag + MTU is the limit)
    net.send([frame(3, 101 + 18), frame(4, 13)]);
    assert.equal(net.reclaimTx().length, 2, 'tx chains are consumed');
    assert.equal(st.txErrors, 2);
    assert.deepEqual(net.reclaimRx(), [], 'no rx buffer is used for them');
    assert.deepEqual([st.drops, st.txPackets, st.packets], [2, 3, 1]);
    // The two posted rx buffers take the next frames.
    const f = [frame(5, 100 + 14), frame(6, 14)];
    net.send(f);
    assert.deepEqual(net.reclaimRx().map((r) => r.data), f);
    assert.deepEqual([st.drops, st.txPackets, st.packets, st.txErrors], [2, 5, 3, 2]);
  });

  test('one kick with more chains than a batch processes them all (the rest in a microtask)', async () => {
    const { net } = runningNet('split', { size: 256 });
    net.postRx(101);
    const frames = Array.from({ length: 100 }, (_, i) => frame(i, 60));
    net.send(frames);
    // A 101st frame: the driver kicks only if the device's avail_event asks for it (§2.7.10).
    frames.push(frame(100, 60));
    net.send([frames[100]!]);
    await new Promise((r) => setTimeout(r, 0)); // vdpa_sim reschedules the rest of the work
    const got = net.reclaimRx();
    assert.equal(got.length, 101);
  });
});

describe('suspend / resume', () => {
  test('suspend before DRIVER_OK, resume when not suspended → failed_precondition', () => {
    const p = testPlatform();
    const dev = netDev(p);
    throwsCode(() => dev.suspend(), Code.FailedPrecondition);
    virtioInit(dev, p, { nvqs: 2, want: SPLIT, size: 16, noDriverOk: true });
    throwsCode(() => dev.suspend(), Code.FailedPrecondition);
    dev.setStatus(ALL_OK);
    throwsCode(() => dev.resume(), Code.FailedPrecondition);
    dev.suspend();
    assert.equal(dev.isSuspended, true);
    dev.resume();
    assert.equal(dev.isSuspended, false);
  });

  for (const layout of LAYOUTS) {
    test(`${layout}: kicks do nothing while suspended; state is readable, settable only while suspended; resume processes`, () => {
      const { dev, d, net } = runningNet(layout, { size: 16 });
      roundTrip(net, [frame(1, 30), frame(2, 30)]);
      const runningState = dev.getVqState(1);
      throwsCode(() => dev.setVqState(1, runningState), Code.FailedPrecondition);
      assert.deepEqual(dev.getVqState(1), runningState);
      const calls = [...d.calls];

      dev.suspend();
      net.postRx(6, 'always');
      const frames = [3, 4, 5, 6, 7].map((s) => frame(s, 100 + s));
      net.send(frames, 'always');
      dev.kickVq(0);
      dev.kickVq(1);
      assert.equal(dev.process(), 0);
      assert.deepEqual(net.reclaimRx(), []);
      assert.deepEqual(net.reclaimTx(), []);
      assert.deepEqual(d.calls, calls, 'no callbacks while suspended');
      assert.deepEqual(ringStats(dev.getVendorVqStats(1)), [['received_desc', 2], ['completed_desc', 2]]);
      // The state is stable and still the one before suspend: nothing was consumed.
      assert.deepEqual(dev.getVqState(1), runningState);
      assert.deepEqual(dev.getVqState(0), runningState, 'rx used exactly as many as tx');
      // Allowed while suspended (same position: nothing changes).
      dev.setVqState(1, dev.getVqState(1));
      throwsCode(() => dev.setVqState(1, { ...runningState, size: 8 }), Code.InvalidArgument);

      dev.resume();
      const got = net.reclaimRx();
      assert.deepEqual(got.map((r) => r.data), frames);
      assert.equal(net.reclaimTx().length, 5);
      assert.ok(d.calls[0]! > calls[0]!);
      assert.equal(dev.pairStats[0]!.packets, 7);
    });
  }

  test('set_vq_state of the same position while suspended keeps the vendor counters', {
  }, () => {
    const { dev, net } = runningNet('split', { size: 16 });
    roundTrip(net, [frame(1, 30), frame(2, 30), frame(3, 30)]);
    dev.suspend();
    dev.setVqState(1, dev.getVqState(1));
    dev.resume();
    assert.deepEqual(ringStats(dev.getVendorVqStats(1)), [['received_desc', 3], ['completed_desc', 3]]);
  });
});

describe('vq state migration to a second device', () => {
  for (const layout of LAYOUTS) {
    for (const when of ['before set_vq_ready', 'after set_vq_ready'] as const) {
      test(`${layout}, set_vq_state ${when}: traffic continues exactly on the new device`, () => {
        const p = testPlatform();
        const a = netDev(p, { name: 'src' });
        const d = virtioInit(a, p, { nvqs: 2, want: netWant(layout), size: 16 });
        const net = new NetDriver(p, a, d.queues[0]!, d.queues[1]!);
        let seed = 0;
        const batch = (n: number) => Array.from({ length: n }, () => frame(seed, 20 + (seed++ % 50)));
        for (let r = 0; r < 3; r++) roundTrip(net, batch(11)); // 33 frames: the packed ring wrapped twice

        // Source: suspend, then the driver keeps posting (nothing is processed).
        a.suspend();
        net.postRx(12, 'always');
        const pending = batch(5);
        const pendingToks = net.send(pending, 'always');
        assert.deepEqual(net.reclaimRx(), []);
        const saved = { features: a.getDriverFeatures(), states: [0, 1].map((i) => a.getVqState(i)) };
        if (layout === 'split') {
          assert.deepEqual(saved.states, [0, 1].map(() => ({ version: 1, layout: 'split', size: 16, availIndex: 33, usedIndex: 33 })));
        } else {
          for (const s of saved.states) {
            // 33 descriptors through a size-16 ring: slot 1, the wrap counters flipped twice.
            assert.deepEqual(s, { version: 1, layout: 'packed', size: 16, lastAvailIdx: 1, lastAvailWrap: 1, lastUsedIdx: 1, lastUsedWrap: 1 });
          }
        }
        a.reset();

        // Destination: same §3.1 sequence over the same rings, the saved positions before DRIVER_OK.
        const b = netDev(p, { name: 'dst' });
        const restore = (i: number) => b.setVqState(i, saved.states[i] as VqState);
        const d2 = virtioInit(b, p, {
          nvqs: 2, want: saved.features, queues: d.queues,
          ...(when === 'before set_vq_ready' ? { beforeReady: restore } : { beforeDriverOk: () => [0, 1].forEach(restore) }),
        });
        assert.equal(d2.features, saved.features);
        net.dev = b;
        // DRIVER_OK processed what was pending on the rings.
        const got = net.reclaimRx();
        assert.deepEqual(got.map((r) => r.data), pending);
        assert.deepEqual(net.reclaimTx(), pendingToks);
        assert.ok(d2.calls[0]! > 0);
        // The 7 rx buffers left are used next, then new ones.
        for (let r = 0; r < 4; r++) roundTrip(net, batch(9));
        assert.equal(b.pairStats[0]!.packets, 5 + 36);
        const s = b.getVqState(1);
        if (s.layout === 'split') assert.deepEqual([s.availIndex, s.usedIndex], [74, 74]);
        else assert.deepEqual(s, { version: 1, layout: 'packed', size: 16, lastAvailIdx: 74 % 16, lastAvailWrap: (Math.floor(74 / 16) + 1) % 2, lastUsedIdx: 74 % 16, lastUsedWrap: (Math.floor(74 / 16) + 1) % 2 });
      });
    }
  }

  test('a state for the other layout, another size, or a bad index → invalid_argument', () => {
    const p = testPlatform();
    const dev = netDev(p);
    virtioInit(dev, p, { nvqs: 2, want: SPLIT, size: 16, noDriverOk: true });
    const bad: unknown[] = [
      { version: 1, layout: 'packed', size: 16, lastAvailIdx: 0, lastAvailWrap: 1, lastUsedIdx: 0, lastUsedWrap: 1 },
      { version: 1, layout: 'split', size: 32, availIndex: 0 },
      { version: 2, layout: 'split', size: 16, availIndex: 0 },
      { version: 1, layout: 'split', size: 16, availIndex: 0x10000 },
      { version: 1, layout: 'split', size: 16, availIndex: 40, usedIndex: 20 },
    ];
    for (const s of bad) throwsCode(() => dev.setVqState(1, s as VqState), Code.InvalidArgument);
    assert.deepEqual(dev.getVqState(1), { version: 1, layout: 'split', size: 16, availIndex: 0, usedIndex: 0 });
  });

  test('set_vq_state on a queue with no size → failed_precondition', () => {
    const p = testPlatform();
    const dev = netDev(p);
    dev.setStatus(S_ACK | S_DRIVER);
    dev.setDriverFeatures(SPLIT);
    throwsCode(() => dev.setVqState(0, { version: 1, layout: 'split', size: 16, availIndex: 0 }), Code.FailedPrecondition);
  });
});

describe('address spaces: a non-identity IOVA window', () => {
  const D = 2 ** 32 + 0x10_0000; // IOVA = memory offset + D, above 4 GiB

  for (const layout of LAYOUTS) {
    test(`${layout}: traffic through a map at IOVA offset + 2^32; unmapping the tx buffers breaks the next chain`, () => {
      const p = testPlatform();
      const dev = netDev(p);
      const w = watch(dev);
      const want = netWant(layout);
      const qs = [0, 1].map(() => new DriverQueue(p, { size: 32, features: want, dmaBase: D }));
      const rxPool = new BufPool(p, 64, 2048, D);
      const txPool = new BufPool(p, 64, 2048, D);
      const ramEnd = p.ramBase + p.ramSize;
      const txEnd = txPool.base + txPool.bytes;
      const d = virtioInit(dev, p, {
        nvqs: 2, want, queues: qs,
        afterFeatures: () => {
          // Three mappings: below the tx pool (rings, rx pool), the tx pool, above it.
          dev.setMap(0, [{ iova: p.ramBase + D, size: txPool.base - p.ramBase, addr: p.ramBase, perm: PERM_RW }]);
          dev.dmaMap(0, { iova: txPool.base + D, size: txPool.bytes, addr: txPool.base });
          dev.dmaMap(0, { iova: txEnd + D, size: ramEnd - txEnd, addr: txEnd });
        },
      });
      const net = new NetDriver(p, dev, d.queues[0]!, d.queues[1]!, { rxPool, txPool });
      for (let r = 0; r < 5; r++) roundTrip(net, Array.from({ length: 12 }, (_, i) => frame(r * 12 + i, 100 + i)));

      // Replacing the map under live rings re-translates them: one entry for the whole window.
      dev.setMap(0, [{ iova: p.ramBase + D, size: p.ramSize, addr: p.ramBase }]);
      roundTrip(net, [frame(100, 64)]);
      dev.setMap(0, [
        { iova: p.ramBase + D, size: txPool.base - p.ramBase, addr: p.ramBase },
        { iova: txPool.base + D, size: txPool.bytes, addr: txPool.base },
        { iova: txEnd + D, size: ramEnd - txEnd, addr: txEnd },
      ]);
      roundTrip(net, [frame(101, 64)]);
      assert.equal(dev.getStatus(), ALL_OK);

      // Overlapping map → invalid_argument, the map is unchanged (traffic still flows).
      throwsCode(() => dev.dmaMap(0, { iova: txPool.base + D + 4096, size: 4096, addr: txPool.base }), Code.InvalidArgument);
      throwsCode(() => dev.dmaUnmap(0, txPool.base + D, 0), Code.InvalidArgument);
      roundTrip(net, [frame(102, 64)]);

      // Unmap the tx buffers: the rings are still mapped, the next tx chain is a driver error.
      dev.dmaUnmap(0, txPool.base + D, txPool.bytes);
      net.postRx(1);
      net.send([frame(103, 64)], 'always');
      assert.equal(dev.getStatus(), ALL_OK | NEEDS_RESET);
      assert.equal(w.needsReset.length, 1);
      assert.equal(w.needsReset[0]!.vq, 1);
      assert.equal(w.needsReset[0]!.error.code, Code.AddressUnmapped);
      assert.equal(w.configCb, 1);
      assert.deepEqual(net.reclaimRx(), []);
    });
  }

  test('bad address space ids and entries → invalid_argument', () => {
    const p = testPlatform();
    const dev = netDev(p);
    throwsCode(() => dev.setMap(dev.nas, []), Code.InvalidArgument);
    throwsCode(() => dev.dmaMap(dev.nas, { iova: 0, size: 4096, addr: p.ramBase }), Code.InvalidArgument);
    throwsCode(() => dev.dmaUnmap(-1, 0, 4096), Code.InvalidArgument);
    throwsCode(() => dev.setMap(0, [{ iova: 0, size: 4096, addr: 0 }]), Code.InvalidArgument); // target outside RAM
    throwsCode(() => dev.setMap(0, [{ iova: 0, size: 8192, addr: p.ramBase }, { iova: 4096, size: 4096, addr: p.ramBase }]), Code.InvalidArgument);
    // The rejected setMap left the identity map: queues still come up.
    virtioInit(dev, p, { nvqs: 2, want: SPLIT, size: 8 });
  });

  test('setGroupAsid: bad group or asid → invalid_argument; a group with an enabled queue → failed_precondition', () => {
    const p = testPlatform();
    const dev = netDev(p);
    dev.setGroupAsid(0, 0);
    throwsCode(() => dev.setGroupAsid(dev.ngroups, 0), Code.InvalidArgument);
    throwsCode(() => dev.setGroupAsid(0, dev.nas), Code.InvalidArgument);
    throwsCode(() => dev.setGroupAsid(-1, 0), Code.InvalidArgument);
    virtioInit(dev, p, { want: SPLIT, size: 8, nvqs: 1 });
    throwsCode(() => dev.setGroupAsid(0, 0), Code.FailedPrecondition);
    assert.equal(dev.getGroupAsid(0), 0);
    dev.setVqReady(0, false);
    dev.setGroupAsid(0, 0);
  });

  /** A device with one queue per group and two address spaces: queue i is in group i. */
  class TwoSpaces extends VdpaSim {
    constructor(p: Platform) {
      super(p, { name: 'two', deviceId: 0x1f, supportedFeatures: features(), nvqs: 2, ngroups: 2, nas: 2, configSize: 4 });
    }
    override getVqGroup(idx: number): number {
      super.getVqGroup(idx);
      return idx;
    }
    protected datapath(budget: number, only?: number): number {
      let n = 0;
      for (let i = 0; i < this.nvqs; i++) {
        const q = this.queue(i);
        if (!q || (only !== undefined && only !== i)) continue;
        const k = q.pop(budget);
        q.pushPopped(k);
        n += k;
      }
      return n;
    }
  }

  test('groups bound to different address spaces translate through their own map', () => {
    const p = testPlatform();
    const dev = new TwoSpaces(p);
    const D = 1 << 30;
    const f = features();
    const q0 = new DriverQueue(p, { size: 8, features: f });
    const q1 = new DriverQueue(p, { size: 8, features: f, dmaBase: D });
    const buf = p.allocBuffer(64);
    dev.setStatus(S_ACK | S_DRIVER);
    dev.setDriverFeatures(f);
    dev.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
    dev.setMap(1, [{ iova: p.ramBase + D, size: p.ramSize, addr: p.ramBase }]);
    [q0, q1].forEach((q, i) => {
      dev.setVqNum(i, 8);
      dev.setVqAddress(i, q.addresses.descArea, q.addresses.driverArea, q.addresses.deviceArea);
    });
    // Group 1 still on address space 0: its rings at IOVA + D are not mapped there.
    throwsCode(() => dev.setVqReady(1, true), Code.InvalidArgument);
    dev.setGroupAsid(1, 1);
    dev.setVqReady(0, true);
    dev.setVqReady(1, true);
    throwsCode(() => dev.setGroupAsid(1, 0), Code.FailedPrecondition);
    throwsCode(() => dev.setGroupAsid(0, 1), Code.FailedPrecondition);
    assert.deepEqual([dev.getGroupAsid(0), dev.getGroupAsid(1)], [0, 1]);
    dev.setStatus(ALL_OK);
    q0.stageOne(5, buf, 64);
    q0.submit();
    q1.stageOne(6, buf + D, 64);
    q1.submit();
    dev.kickVq(0);
    dev.kickVq(1);
    assert.deepEqual(q0.reclaim(), [{ token: 5, len: 0 }]);
    assert.deepEqual(q1.reclaim(), [{ token: 6, len: 0 }]);
    // Group 0 may move once its queue is disabled.
    dev.setVqReady(0, false);
    dev.setGroupAsid(0, 1);
    assert.equal(dev.getGroupAsid(0), 1);
  });
});

describe('driver errors: DEVICE_NEEDS_RESET (VIRTIO 1.3 §2.1.2)', () => {
  type Garbage = (p: Platform, tx: DriverQueue, state: VqState, buf: number) => void;
  const splitPublish = (p: Platform, tx: DriverQueue, head: number, bump = 1) => {
    const avail = tx.addresses.driverArea;
    const idx = p.view.getUint16(avail + 2, true);
    p.view.setUint16(avail + 4 + 2 * (idx % tx.size), head, true);
    p.view.setUint16(avail + 2, (idx + bump) & 0xffff, true);
  };
  const cases: [LayoutName, string, string, Garbage][] = [
    ['split', 'an avail entry ≥ the queue size', Code.HeadOutOfRange, (p, tx) => splitPublish(p, tx, tx.size + 3)],
    ['split', 'a descriptor whose next is out of the table', Code.NextOutOfRange, (p, tx, _s, buf) => {
      writeSplitDesc(p, tx.addresses.descArea, 0, buf, 16, F_NEXT, 999);
      splitPublish(p, tx, 0);
    }],
    ['split', 'a descriptor loop', Code.ChainTooLong, (p, tx, _s, buf) => {
      writeSplitDesc(p, tx.addresses.descArea, 0, buf, 16, F_NEXT, 1);
      writeSplitDesc(p, tx.addresses.descArea, 1, buf, 16, F_NEXT, 0);
      splitPublish(p, tx, 0);
    }],
    ['split', 'avail->idx more than the queue size ahead', Code.AvailIdxInvalid, (p, tx) => splitPublish(p, tx, 0, tx.size + 1)],
    ['split', 'a buffer outside the device\'s map', Code.AddressUnmapped, (p, tx) => {
      writeSplitDesc(p, tx.addresses.descArea, 0, 0x40, 16, 0);
      splitPublish(p, tx, 0);
    }],
    ['packed', 'a buffer id ≥ the queue size', Code.BufferIdInvalid, (p, tx, s, buf) => {
      if (s.layout !== 'packed') throw new Error('packed state expected');
      writePackedDesc(p, tx.addresses.descArea, s.lastAvailIdx, buf, 16, tx.size + 1, availBits(s.lastAvailWrap));
    }],
    ['packed', 'a readable descriptor after a writable one', Code.WriteBeforeRead, (p, tx, s, buf) => {
      if (s.layout !== 'packed') throw new Error('packed state expected');
      const flags = availBits(s.lastAvailWrap);
      writePackedDesc(p, tx.addresses.descArea, s.lastAvailIdx + 1, buf, 16, 0, flags);
      writePackedDesc(p, tx.addresses.descArea, s.lastAvailIdx, buf, 16, 0, flags | F_WRITE | F_NEXT);
    }],
  ];

  for (const [layout, what, code, garbage] of cases) {
    test(`${layout}: ${what} → NEEDS_RESET, config callback, needs-reset event (${code}); dead until reset; re-init recovers`, () => {
      const { p, dev, d, net } = runningNet(layout, { size: 16 });
      const w = watch(dev);
      roundTrip(net, [frame(1, 40), frame(2, 40), frame(3, 40)]);
      const g = dev.getGeneration();
      const buf = p.allocBuffer(64);
      garbage(p, d.queues[1]!, dev.getVqState(1), buf);
      dev.kickVq(1);

      assert.equal(dev.getStatus(), ALL_OK | NEEDS_RESET);
      assert.equal(w.needsReset.length, 1);
      assert.equal(w.needsReset[0]!.vq, 1);
      assert.ok(w.needsReset[0]!.error instanceof VirtioError);
      assert.equal(w.needsReset[0]!.error.code, code);
      assert.equal(w.configCb, 1);
      assert.deepEqual(w.configEvents, [g + 1]);
      assert.equal(dev.getGeneration(), g + 1);

      // Further kicks do nothing, on either queue.
      const calls = [...d.calls];
      const stats = [0, 1].map((i) => dev.getVendorVqStats(i));
      net.postRx(2, 'always');
      dev.kickVq(1);
      dev.kickVq(0);
      assert.equal(dev.process(), 0);
      assert.deepEqual(net.reclaimRx(), []);
      assert.deepEqual(d.calls, calls);
      assert.deepEqual([0, 1].map((i) => dev.getVendorVqStats(i)), stats);
      assert.equal(w.configCb, 1);
      assert.equal(w.needsReset.length, 1);
      // The driver's status writes keep the device's bit.
      dev.setStatus(ALL_OK);
      assert.equal(dev.getStatus(), ALL_OK | NEEDS_RESET);

      // Reset and re-initialize on the same rings (the driver takes its buffers back first).
      d.queues.forEach((q) => q.detachUnused());
      const d2 = virtioInit(dev, p, { nvqs: 2, want: netWant(layout), queues: d.queues });
      assert.equal(dev.getStatus(), ALL_OK);
      net.dev = dev;
      for (let r = 0; r < 3; r++) roundTrip(net, Array.from({ length: 7 }, (_, i) => frame(10 * r + i, 90)));
      assert.ok(d2.calls[0]! >= 3);
      assert.equal(w.needsReset.length, 1);
    });
  }

  test('FAILED stops the datapath', () => {
    const { dev, net } = runningNet('split', { size: 16 });
    roundTrip(net, [frame(1, 40)]);
    dev.setStatus(ALL_OK | VIRTIO_CONFIG_S_FAILED);
    net.postRx(1, 'always');
    net.send([frame(2, 40)], 'always');
    assert.equal(dev.process(), 0);
    assert.deepEqual(net.reclaimRx(), []);
    assert.deepEqual(net.reclaimTx(), []);
  });
});

describe('virtio-blk requests (VIRTIO 1.3 §5.2.6)', () => {
  const CAP = 64;
  const VIRTIO_BLK_T_DISCARD = 11;

  /** A running blk device and a function that sends one request and waits for it. */
  function runningBlk(layout: LayoutName, o: { readOnly?: boolean; viaMgmt?: boolean } = {}) {
    const p = testPlatform();
    const dev = o.viaMgmt
      ? new VdpaSimBlkMgmt(p, CAP).create('blk0', { deviceFeatures: VDPASIM_BLK_FEATURES | featureBit(VIRTIO_BLK_F_RO) })
      : new VdpaSimBlk(p, { name: 'blk0', capacity: CAP, readOnly: o.readOnly ?? false });
    const want = (VDPASIM_BLK_FEATURES | featureBit(VIRTIO_BLK_F_RO)) & ~(layout === 'packed' ? 0n : featureBit(VIRTIO_F_RING_PACKED));
    const d = virtioInit(dev, p, { want, size: 16 });
    const q = d.queues[0]!;
    const scratch = p.allocBuffer(8192, 4096);
    let token = 0;
    /**
     * type/sector in a 16-byte header (or `hdrLen` bytes), `out` data as `outPieces`
     * descriptors, `inLen` bytes to read into, then a 1-byte status.
     */
    const request = (type: number, sector: bigint, r: { out?: Uint8Array; outPieces?: number; inLen?: number; hdrLen?: number } = {}) => {
      const hdr = scratch;
      const data = scratch + 64;
      const inb = scratch + 4096;
      const status = scratch + 8191;
      p.view.setUint32(hdr, type, true);
      p.view.setUint32(hdr + 4, 0, true);
      p.view.setBigUint64(hdr + 8, sector, true);
      const outBufs = [{ addr: hdr, len: r.hdrLen ?? 16 }];
      if (r.out) {
        p.write(data, r.out);
        const pieces = r.outPieces ?? 1;
        const step = r.out.length / pieces;
        for (let i = 0; i < pieces; i++) outBufs.push({ addr: data + i * step, len: step });
      }
      const inLen = r.inLen ?? 0;
      p.u8.fill(0xee, inb, inb + inLen);
      p.u8[status] = 0xff;
      const inBufs = [...(inLen ? [{ addr: inb, len: inLen }] : []), { addr: status, len: 1 }];
      const t = token++;
      q.stage(t, outBufs, inBufs);
      assert.equal(q.submit(), 1);
      if (q.kickPrepare()) dev.kickVq(0);
      const used = q.reclaim();
      assert.deepEqual(used.map((u) => u.token), [t]);
      return { status: p.u8[status]!, len: used[0]!.len, data: p.read(inb, inLen) };
    };
    return { p, dev, d, request };
  }

  const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + (i >> 8)) & 0xff);

  for (const layout of LAYOUTS) {
    test(`${layout}: OUT then IN round trip, FLUSH, GET_ID`, () => {
      const { p, dev, request } = runningBlk(layout);
      const w1 = pattern(1024, 1);
      assert.deepEqual(request(VIRTIO_BLK_T_OUT, 3n, { out: w1 }), { status: VIRTIO_BLK_S_OK, len: 1, data: new Uint8Array(0) });
      assert.deepEqual(p.read(dev.disk + 3 * SECTOR_SIZE, 1024), w1, 'the RAM disk holds the sectors');
      const w2 = pattern(1536, 2);
      assert.equal(request(VIRTIO_BLK_T_OUT, 10n, { out: w2, outPieces: 3 }).status, VIRTIO_BLK_S_OK);

      const r1 = request(VIRTIO_BLK_T_IN, 3n, { inLen: 1024 });
      assert.deepEqual([r1.status, r1.len], [VIRTIO_BLK_S_OK, 1025]);
      assert.deepEqual(r1.data, w1);
      const r2 = request(VIRTIO_BLK_T_IN, 11n, { inLen: 512 });
      assert.deepEqual(r2.data, w2.subarray(512, 1024));
      const zero = request(VIRTIO_BLK_T_IN, 2n, { inLen: 512 });
      assert.deepEqual([zero.status, zero.len], [VIRTIO_BLK_S_OK, 513]);
      assert.deepEqual(zero.data, new Uint8Array(512));
      const last = request(VIRTIO_BLK_T_IN, BigInt(CAP - 1), { inLen: 512 });
      assert.equal(last.status, VIRTIO_BLK_S_OK);

      assert.deepEqual(request(VIRTIO_BLK_T_FLUSH, 0n), { status: VIRTIO_BLK_S_OK, len: 1, data: new Uint8Array(0) });

      const id = request(VIRTIO_BLK_T_GET_ID, 0n, { inLen: 20 });
      assert.deepEqual([id.status, id.len], [VIRTIO_BLK_S_OK, 21]);
      const want = new Uint8Array(20);
      want.set(new TextEncoder().encode('vdpasim-blk0'));
      assert.deepEqual(id.data, want);
      const shortId = request(VIRTIO_BLK_T_GET_ID, 0n, { inLen: 8 });
      assert.deepEqual([shortId.status, shortId.len], [VIRTIO_BLK_S_OK, 9]);
      assert.equal(new TextDecoder().decode(shortId.data), 'vdpasim-');
    });

    test(`${layout}: out of range → IOERR, unknown type → UNSUPP, malformed → IOERR; nothing written`, () => {
      const { p, dev, request } = runningBlk(layout);
      const disk = () => p.read(dev.disk, CAP * SECTOR_SIZE);
      const before = disk();
      const ioerr = { status: VIRTIO_BLK_S_IOERR, len: 1 };
      const pick = (r: { status: number; len: number }) => ({ status: r.status, len: r.len });
      assert.deepEqual(pick(request(VIRTIO_BLK_T_IN, BigInt(CAP), { inLen: 512 })), ioerr);
      assert.deepEqual(pick(request(VIRTIO_BLK_T_IN, BigInt(CAP - 1), { inLen: 1024 })), ioerr);
      assert.deepEqual(pick(request(VIRTIO_BLK_T_IN, (1n << 64n) - 1n, { inLen: 512 })), ioerr);
      assert.deepEqual(pick(request(VIRTIO_BLK_T_IN, 1n << 63n, { inLen: 512 })), ioerr);
      assert.deepEqual(pick(request(VIRTIO_BLK_T_OUT, BigInt(CAP), { out: pattern(512, 3) })), ioerr);
      assert.deepEqual(pick(request(VIRTIO_BLK_T_OUT, BigInt(CAP - 1), { out: pattern(1024, 3) })), ioerr);
      assert.deepEqual(pick(request(VIRTIO_BLK_T_OUT, 0n, { out: pattern(100, 3) })), ioerr, 'not a whole sector');
      assert.deepEqual(pick(request(VIRTIO_BLK_T_IN, 0n, { inLen: 100 })), ioerr, 'not a whole sector');
      assert.deepEqual(pick(request(VIRTIO_BLK_T_OUT, 0n, { out: pattern(512, 3), hdrLen: 8 })), ioerr, 'header shorter than 16 bytes');
      assert.deepEqual(disk(), before);
      const unsupp = { status: VIRTIO_BLK_S_UNSUPP, len: 1 };
      // §5.2.6.2: a discard segment with the unmap flag is answered UNSUPP.
      const unmap = new Uint8Array(16);
      new DataView(unmap.buffer).setUint32(8, 1, true);
      new DataView(unmap.buffer).setUint32(12, 1, true);
      assert.deepEqual(pick(request(VIRTIO_BLK_T_DISCARD, 0n, { out: unmap })), unsupp);
      assert.deepEqual(pick(request(99, 0n, { inLen: 512 })), unsupp);
      assert.deepEqual(pick(request(0xffffffff, 0n)), unsupp);
      assert.deepEqual(disk(), before);
      // The device is still healthy.
      assert.equal(dev.getStatus(), ALL_OK);
      assert.equal(request(VIRTIO_BLK_T_IN, 0n, { inLen: 512 }).status, VIRTIO_BLK_S_OK);
    });
  }

  for (const viaMgmt of [false, true]) {
    test(`read-only disk (VIRTIO_BLK_F_RO${viaMgmt ? ' in device_features through vdpasim_blk' : ''}): OUT → IOERR, IN works`, () => {
      const { p, dev, d, request } = runningBlk('split', viaMgmt ? { viaMgmt } : { readOnly: true });
      assert.ok(d.features & featureBit(VIRTIO_BLK_F_RO), 'RO offered and negotiated');
      assert.equal((dev as VdpaSimBlk).readOnly, true);
      const before = p.read(dev.disk, CAP * SECTOR_SIZE);
      assert.deepEqual(request(VIRTIO_BLK_T_OUT, 0n, { out: pattern(512, 5) }), { status: VIRTIO_BLK_S_IOERR, len: 1, data: new Uint8Array(0) });
      assert.deepEqual(p.read(dev.disk, CAP * SECTOR_SIZE), before);
      const r = request(VIRTIO_BLK_T_IN, 0n, { inLen: 512 });
      assert.deepEqual([r.status, r.len], [VIRTIO_BLK_S_OK, 513]);
      assert.equal(request(VIRTIO_BLK_T_FLUSH, 0n).status, VIRTIO_BLK_S_OK);
    });
  }
});

describe('vendor vq stats (received_desc / completed_desc)', () => {
  test('net: counts chains each queue received and completed', () => {
    const { dev, net } = runningNet('split', { size: 32 });
    assert.deepEqual(dev.getVendorVqStats(0), { type: 'rx', stats: [['received_desc', 0], ['completed_desc', 0], ['rx_packets', 0], ['rx_bytes', 0], ['rx_drops', 0], ['rx_filtered', 0],
      ['rx_drops_no_buffer', 0], ['rx_drops_link_down', 0], ['rx_drops_too_big', 0], ['rx_drops_malformed', 0]] });
    assert.deepEqual(dev.getVendorVqStats(1), { type: 'tx', stats: [['received_desc', 0], ['completed_desc', 0], ['tx_packets', 0], ['tx_errors', 0], ['tx_drops_link_down', 0]] });
    for (let r = 0; r < 4; r++) roundTrip(net, Array.from({ length: 10 }, (_, i) => frame(r * 10 + i, 50)));
    assert.deepEqual(ringStats(dev.getVendorVqStats(0)), [['received_desc', 40], ['completed_desc', 40]]);
    assert.deepEqual(ringStats(dev.getVendorVqStats(1)), [['received_desc', 40], ['completed_desc', 40]]);
    // Posted rx buffers are not counted until the device takes them.
    net.postRx(5);
    assert.deepEqual(ringStats(dev.getVendorVqStats(0)), [['received_desc', 40], ['completed_desc', 40]]);
    net.send([frame(99, 50), frame(98, 50)]);
    assert.deepEqual(ringStats(dev.getVendorVqStats(0)), [['received_desc', 42], ['completed_desc', 42]]);
    assert.deepEqual(ringStats(dev.getVendorVqStats(1)), [['received_desc', 42], ['completed_desc', 42]]);
    // Dropped frames (link down) are received and completed on tx only.
    dev.setLink(false);
    net.send([frame(97, 50), frame(96, 50), frame(95, 50)]);
    assert.deepEqual(ringStats(dev.getVendorVqStats(1)), [['received_desc', 45], ['completed_desc', 45]]);
    assert.deepEqual(ringStats(dev.getVendorVqStats(0)), [['received_desc', 42], ['completed_desc', 42]]);
  });

  test('blk: the request queue counts requests', () => {
    const p = testPlatform();
    const dev = new VdpaSimBlk(p, { name: 'blk0', capacity: 8 });
    const d = virtioInit(dev, p, { want: VDPASIM_BLK_FEATURES & ~featureBit(VIRTIO_F_RING_PACKED), size: 8 });
    const q = d.queues[0]!;
    const hdr = p.allocBuffer(16);
    const st = p.allocBuffer(1);
    p.view.setUint32(hdr, VIRTIO_BLK_T_FLUSH, true);
    for (let i = 0; i < 3; i++) q.stage(i, [{ addr: hdr, len: 16 }], [{ addr: st, len: 1 }]);
    q.submit();
    dev.kickVq(0);
    assert.equal(q.reclaim().length, 3);
    assert.deepEqual(dev.getVendorVqStats(0), { type: 'req', stats: [['received_desc', 3], ['completed_desc', 3]] });
  });
});

