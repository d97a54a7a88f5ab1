// vdpasim_net rx drops (issue 7 items 10, 11): a frame bigger than the next rx buffer is dropped
// once and that buffer stays posted for the next frame (split and packed, across ring wraps);
// port mode drops tx while the link is down; every drop is counted under its cause.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, VdpaSimNet } from '../src/index.ts';
import { virtioInit, NetDriver, BufPool, NET_SPLIT, NET_PACKED } from './helpers/virtio-driver.ts';
import { makePlatform } from './helpers/builds.ts';
import { tick, eth } from './helpers/net.ts';

for (const layout of ['split', 'packed'] as const) {
  test(`${layout}: from the wire, a frame bigger than the next rx buffer is dropped once and the buffer takes the next frame`, () => {
    const p = makePlatform('release', { ramSize: 4 << 20, privateSize: 4 << 20 });
    const dev = new VdpaSimNet(p, { name: 'n', mac: new Uint8Array([2, 0, 0, 0, 0, 1]) });
    const d = virtioInit(dev, p, { nvqs: 2, want: layout === 'packed' ? NET_PACKED : NET_SPLIT, size: 8 });
    // 100-byte rx buffers: a frame of up to 88 bytes fits with its 12-byte header.
    const net = new NetDriver(p, dev, d.queues[0]!, d.queues[1]!, { rxPool: new BufPool(p, 16, 100), txPool: new BufPool(p, 16, 2048) });
    dev.attachPort(() => {});
    const st = dev.pairStats[0]!;
    let tag = 0;
    let want = 0;
    // Many rounds on a size-8 ring: positions and (packed) wrap counters go round several times.
    for (let round = 0; round < 12; round++) {
      net.postRx(3);
      const small = [eth(60, ++tag), eth(88, ++tag)];
      const frames = [eth(200, 0xee), small[0]!, eth(89, 0xee), eth(1000, 0xee), small[1]!];
      assert.equal(dev.deliver(frames), 2);
      const got = net.reclaimRx();
      assert.deepEqual(got.map((r) => r.data[r.len - 1]), small.map((f) => f[f.length - 1]), `round ${round}: the small frames, in order`);
      assert.deepEqual(got.map((r) => r.len), [72, 100]);
      want += 2;
      // The third buffer is still posted: the next frame takes it.
      assert.equal(dev.deliver([eth(64, ++tag)]), 1);
      assert.deepEqual(net.reclaimRx().map((r) => r.data[r.len - 1]), [tag]);
      want += 1;
    }
    assert.equal(st.packets, want);
    assert.equal(st.dropsTooBig, 12 * 3);
    assert.equal(st.drops, 12 * 3, 'each dropped frame counted once');
    assert.equal(st.dropsNoBuffer, 0);
    assert.deepEqual(dev.getVqState(0).layout, layout);
  });

  test(`${layout}: loopback, a frame bigger than the next rx buffer leaves it for the next frame`, () => {
    const p = makePlatform('release', { ramSize: 4 << 20, privateSize: 4 << 20 });
    const dev = new VdpaSimNet(p, { name: 'n', mac: new Uint8Array([2, 0, 0, 0, 0, 1]) });
    const d = virtioInit(dev, p, { nvqs: 2, want: layout === 'packed' ? NET_PACKED : NET_SPLIT, size: 8 });
    const net = new NetDriver(p, dev, d.queues[0]!, d.queues[1]!, { rxPool: new BufPool(p, 16, 100), txPool: new BufPool(p, 16, 2048) });
    const hdr = (f: Uint8Array) => { const b = new Uint8Array(12 + f.length); b[10] = 1; b.set(f, 12); return b; };
    for (let round = 0; round < 10; round++) {
      net.postRx(2);
      net.send([hdr(eth(300, 0xee)), hdr(eth(70, 2 * round)), hdr(eth(89, 0xee)), hdr(eth(80, 2 * round + 1))]);
      const got = net.reclaimRx();
      assert.deepEqual(got.map((r) => r.data[r.len - 1]), [2 * round, 2 * round + 1], `round ${round}`);
      assert.equal(net.reclaimTx().length, 4);
    }
    const st = dev.pairStats[0]!;
    assert.deepEqual([st.packets, st.dropsTooBig, st.dropsNoBuffer, st.drops, st.txPackets], [20, 20, 0, 20, 40]);
  });
}

test('VirtioNetDriver: a frame over the MTU from the wire costs no rx buffer and is no driver error', async () => {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 16 }); // 8 rx buffers
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: '02:00:00:00:00:01', mtu: 1500 }) as VdpaSimNet;
  const drv = virtio.net('n');
  dev.attachPort(() => {});
  const got: number[] = [];
  drv.onFrame((f) => got.push(f[f.length - 1]!));
  const frames = [eth(1500 + 18 + 1, 0xee), ...Array.from({ length: 8 }, (_, i) => eth(64, i))];
  assert.equal(dev.deliver(frames), 8);
  await tick();
  assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(drv.stats.rxErrors, 0);
  const st = dev.pairStats[0]!;
  assert.deepEqual([st.dropsTooBig, st.dropsNoBuffer, st.drops], [1, 0, 1]);
  // A runt is malformed; a device that is not running drops as link down.
  assert.equal(dev.deliver([new Uint8Array(13)]), 0);
  assert.equal(st.dropsMalformed, 1);
  dev.setLink(false);
  assert.equal(dev.deliver([eth(64, 1), eth(64, 2)]), 0);
  assert.deepEqual([st.dropsLinkDown, st.drops], [2, 4]);
});

test('port mode: frames sent while the link is down never reach the wire and are counted', async () => {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', {}) as VdpaSimNet;
  const drv = virtio.net('n');
  const wire: number[] = [];
  dev.attachPort((frames) => { for (const f of frames) wire.push(f[f.length - 1]!); });
  drv.send(eth(64, 1));
  dev.setLink(false);
  assert.equal(drv.sendBatch([eth(64, 2), eth(64, 3)]), 2, 'the driver may still queue them');
  await tick();
  dev.setLink(true);
  drv.send(eth(64, 4));
  await tick();
  assert.deepEqual(wire, [1, 4]);
  const st = dev.pairStats[0]!;
  assert.deepEqual([st.txPackets, st.txDropsLinkDown], [4, 2]);
  assert.deepEqual(dev.getVendorVqStats(1).stats.find(([n]) => n === 'tx_drops_link_down'), ['tx_drops_link_down', 2]);
});
