// pcap capture (issue 7 item 18): record headers are byte-exact with microsecond timestamps from
// the high-resolution clock by default, and the capture shows every frame offered on the wire,
// including those the device then drops or filters.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, VdpaBus, VdpaSimNetMgmt, createVirtioVdpa, VdpaSimNet, PcapWriter, readPcap } from '../src/index.ts';
import { tick, eth } from './helpers/net.ts';

test('the default clock is performance.timeOrigin + performance.now() in microseconds: record header byte for byte', () => {
  const real = globalThis.performance;
  // A fixed high-resolution clock: 1_700_000_000_123.456 ms since the epoch → 1700000000 s, 123456 µs.
  const fake = { timeOrigin: 1_700_000_000_000, now: () => 123.456 } as unknown as Performance;
  Object.defineProperty(globalThis, 'performance', { value: fake, configurable: true, writable: true });
  const chunks: Uint8Array[] = [];
  try {
    const w = new PcapWriter((c) => chunks.push(c.slice()), { snaplen: 16 });
    w.write(eth(20, 7));
  } finally {
    Object.defineProperty(globalThis, 'performance', { value: real, configurable: true, writable: true });
  }
  assert.equal(chunks.length, 2);
  const le32 = (n: number) => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24];
  assert.deepEqual([...chunks[0]!], [
    ...le32(0xa1b2c3d4), 2, 0, 4, 0, ...le32(0), ...le32(0), ...le32(16), ...le32(1),
  ], 'global header');
  const rec = chunks[1]!;
  assert.deepEqual([...rec.subarray(0, 16)], [...le32(1_700_000_000), ...le32(123_456), ...le32(16), ...le32(20)], 'ts_sec, ts_usec, incl_len, orig_len');
  assert.deepEqual(rec.subarray(16), eth(20, 7).subarray(0, 16));
});

test('a clock the header cannot hold is clamped, never thrown from the datapath', () => {
  const chunks: Uint8Array[] = [];
  const w = new PcapWriter((c) => chunks.push(c.slice()), { now: () => -5 });
  w.write(eth(20, 1));
  assert.deepEqual([...chunks[1]!.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
});

test('capture on the wire includes frames the device dropped or filtered on rx', async () => {
  const p = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 16 }); // 8 rx buffers
  bus.registerDriver(virtio);
  const dev = bus.devAdd('vdpasim_net', 'n', { mac: '02:00:00:00:00:01' }) as VdpaSimNet;
  const drv = virtio.net('n');
  dev.attachPort(() => {});
  await drv.setRxMode({ promisc: false });
  const chunks: Uint8Array[] = [];
  let t = 1_000_000;
  dev.capture(new PcapWriter((c) => chunks.push(c.slice()), { now: () => (t += 7) }));
  const frames = [
    eth(64, 1), // delivered
    eth(64, 2, [2, 0, 0, 0, 0, 0x77]), // filtered (not our MAC)
    eth(2000, 3), // too big
    new Uint8Array(10).fill(4), // malformed
    ...Array.from({ length: 9 }, (_, i) => eth(64, 10 + i)), // 7 fit the remaining buffers, 2 do not
  ];
  assert.equal(dev.deliver(frames), 8);
  dev.setLink(false);
  dev.deliver([eth(64, 30)]); // link down: still seen on the wire
  await tick();
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) { all.set(c, o); o += c.length; }
  const cap = readPcap(all);
  assert.deepEqual(cap.frames.map((f) => f.data), [...frames, eth(64, 30)]);
  assert.deepEqual(cap.frames.slice(0, 3).map((f) => f.tsUs), [1_000_007, 1_000_014, 1_000_021]);
  const st = dev.pairStats[0]!;
  assert.deepEqual([st.packets, st.filtered, st.dropsTooBig, st.dropsMalformed, st.dropsNoBuffer, st.dropsLinkDown], [8, 1, 1, 1, 2, 1]);
});
