// The package on a memory it does not own (issue 10 §1): Platform.foreign() over an
// emulator-style memory whose guest RAM sits at a non-zero offset, the private arena above or
// below RAM or in pages foreign() grows; instantiating the ring module writes nothing; and the
// owner growing the memory between operations breaks no view (platform, queues, devices).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, VirtioError, Code,
  DriverQueue, Doorbell, DoorbellWaiter, featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_NET_F_MAC, VIRTIO_F_RING_PACKED, ringModule, instantiate, loadRingModule, createVirtioVdpa,
} from '../src/index.ts';
import { code as unsharedSimd } from '../src/loader/wasm-code-unshared-simd.ts';
import { code as unsharedPlain } from '../src/loader/wasm-code-unshared-plain.ts';
import { code as sharedSimd } from '../src/loader/wasm-code-shared-simd.ts';
import { code as sharedPlain } from '../src/loader/wasm-code-shared-plain.ts';

const wasmCode = { unsharedSimd, unsharedPlain, sharedSimd, sharedPlain };
import * as U from '../src/vhost/uapi.ts';
import { eth, tick } from './helpers/net.ts';
import { rng } from './helpers/builds.ts';

const PAGE = 65536;

/** Section ids of a wasm binary, in order (binary format §5.5.2). */
function sectionIds(b: Uint8Array): number[] {
  let p = 8;
  const ids: number[] = [];
  const leb = () => {
    let r = 0, s = 0, x: number;
    do {
      x = b[p++]!;
      r |= (x & 127) << s;
      s += 7;
    } while (x & 128);
    return r >>> 0;
  };
  while (p < b.length) {
    ids.push(b[p++]!);
    const n = leb(); // (not `p += leb()`: that reads p before leb() moves it)
    p += n;
  }
  return ids;
}

/** A memory filled with a seeded pattern, as an emulator's would be full of its own bytes. */
function patterned(pages: number, maximum: number, shared = false): WebAssembly.Memory {
  const m = new WebAssembly.Memory(shared ? { initial: pages, maximum, shared: true } : { initial: pages, maximum });
  const u8 = new Uint8Array(m.buffer);
  const r = rng(7);
  for (let i = 0; i < u8.length; i++) u8[i] = r() & 0xff;
  return m;
}

function expectCode(fn: () => unknown, code: Code): void {
  assert.throws(fn, (e: unknown) => e instanceof VirtioError && e.code === code);
}

describe('the ring module on a foreign memory writes nothing', () => {
  test('no data section (11), no data count (12), no start function (8) in any embedded build', () => {
    for (const [name, b64] of Object.entries(wasmCode)) {
      const ids = sectionIds(Buffer.from(b64, 'base64'));
      for (const bad of [8, 11, 12]) assert.ok(!ids.includes(bad), `${name} has section ${bad}`);
    }
  });

  for (const shared of [false, true]) {
    test(`instantiating every ${shared ? 'shared' : 'unshared'} build and Platform.foreign leave every byte as it was`, async () => {
      const mem = patterned(8, 64, shared);
      const before = new Uint8Array(mem.buffer).slice();
      await loadRingModule({ shared, simd: false });
      for (const simd of [true, false]) {
        try {
          instantiate(ringModule({ shared, simd }), mem);
        } catch (e) {
          if (simd) continue; // an engine without SIMD
          throw e;
        }
      }
      const p = Platform.foreign({ memory: mem, ramBase: 3 * PAGE + 4096, ramSize: 2 * PAGE, privBase: PAGE, privateSize: 2 * PAGE });
      void p.identityMap; // an IOTLB table is only written once allocated; the allocator keeps its books in JS
      assert.equal(p.shared, shared);
      // Only the identity map's table (in the private arena) was written.
      const after = new Uint8Array(mem.buffer);
      let diffs = 0;
      for (let i = 0; i < before.length; i++) {
        if (after[i] !== before[i] && (i < p.privBase || i >= p.privBase + p.privSize)) diffs++;
      }
      assert.equal(diffs, 0, 'no byte outside the private arena changed');
      const q = Platform.foreign({ memory: mem, ramBase: 3 * PAGE + 4096, ramSize: 2 * PAGE, privBase: 6 * PAGE, privateSize: PAGE });
      assert.equal(q.privBase, 6 * PAGE);
      assert.deepEqual(new Uint8Array(mem.buffer).subarray(6 * PAGE, 7 * PAGE), before.subarray(6 * PAGE, 7 * PAGE));
    });
  }
});

describe('layout', () => {
  test('the private arena goes where the caller says (above or below RAM) or in pages foreign() grows', () => {
    const mem = patterned(6, 32);
    const below = Platform.foreign({ memory: mem, ramBase: 3 * PAGE, ramSize: 3 * PAGE, privBase: PAGE, privateSize: 2 * PAGE });
    assert.ok(below.priv.alloc(64) >= PAGE && below.priv.alloc(64) < 3 * PAGE);
    const above = Platform.foreign({ memory: mem, ramBase: PAGE + 100, ramSize: 3 * PAGE, privBase: 5 * PAGE, privateSize: PAGE });
    const a = above.priv.alloc(64);
    assert.ok(a >= 5 * PAGE && a < 6 * PAGE);
    const grown = Platform.foreign({ memory: mem, ramBase: PAGE, ramSize: 5 * PAGE, privateSize: 100_000 });
    assert.equal(grown.privBase, 6 * PAGE, 'the arena starts at the old end of the memory');
    assert.equal(grown.privSize, 2 * PAGE, 'rounded up to whole pages');
    assert.equal(mem.buffer.byteLength, 8 * PAGE);
    assert.equal(grown.u8.length, 8 * PAGE);
  });

  test('bad layouts are InvalidArgument; a memory at its maximum is ResourceExhausted; guest RAM is not allocated by default', () => {
    const mem = patterned(4, 4);
    const f = (o: object) => () => Platform.foreign({ memory: mem, ramBase: 2 * PAGE, ramSize: PAGE, ...o });
    expectCode(f({ privBase: 2 * PAGE + 64, privateSize: 64 }), Code.InvalidArgument); // inside RAM
    expectCode(f({ privBase: 0, privateSize: 64 }), Code.InvalidArgument); // below 64 KiB
    expectCode(f({ privBase: 3 * PAGE, privateSize: 2 * PAGE }), Code.InvalidArgument); // past the end
    expectCode(f({ ramSize: 5 * PAGE, privBase: PAGE, privateSize: 64 }), Code.InvalidArgument);
    expectCode(f({ privateSize: -1 }), Code.InvalidArgument);
    expectCode(() => Platform.foreign({ memory: {} as WebAssembly.Memory, ramBase: 0, ramSize: 1 }), Code.InvalidArgument);
    expectCode(f({}), Code.ResourceExhausted); // cannot grow past maximum 4
    assert.equal(mem.buffer.byteLength, 4 * PAGE);
    const p = Platform.foreign({ memory: mem, ramBase: 2 * PAGE, ramSize: PAGE, privBase: PAGE, privateSize: PAGE });
    expectCode(() => p.allocBuffer(64), Code.FailedPrecondition);
    const q = Platform.foreign({ memory: mem, ramBase: 2 * PAGE, ramSize: PAGE, privBase: PAGE, privateSize: PAGE, allocateRam: true });
    const b = q.allocBuffer(64);
    assert.ok(b >= 2 * PAGE && b < 3 * PAGE);
  });
});

const S_ACK = 1, S_DRIVER = 2, S_FEATURES_OK = 8, S_DRIVER_OK = 4;

/** vdpasim_net and vdpasim_blk behind vhost_vdpa on a foreign memory: RAM at offset 3 pages + 4 KiB, priv grown. */
function foreignSetup(shared: boolean) {
  const memory = shared ? new WebAssembly.Memory({ initial: 80, maximum: 400, shared: true }) : new WebAssembly.Memory({ initial: 80, maximum: 400 });
  const p = Platform.foreign({ memory, ramBase: 3 * PAGE + 4096, ramSize: 64 * PAGE, privateSize: 8 << 20, allocateRam: true });
  const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 64));
  const vhost = new VhostVdpa(p);
  bus.registerDriver(vhost);
  const grow = () => memory.grow(1);
  return { p, bus, vhost, grow, memory };
}

/** A VMM-side bring-up by the vhost_vdpa facade; guest RAM at IOVA G + (offset - ramBase). Grows the memory between steps. */
function bringUp(f: ReturnType<VhostVdpa['open']>, p: Platform, want: bigint, nq: number, grow: () => void) {
  const G = 0x4000_0000;
  const dmaBase = G - p.ramBase;
  f.setOwner();
  const features = f.getFeatures() & want;
  f.setStatus(S_ACK);
  grow();
  f.setStatus(S_ACK | S_DRIVER);
  f.setFeatures(features);
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
  grow();
  f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: G, size: p.ramSize, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW });
  const guest = new DoorbellWaiter(p);
  const qs: DriverQueue[] = [];
  const kicks: Doorbell[] = [];
  const calls = new Array<number>(nq).fill(0);
  const packed = (features & featureBit(VIRTIO_F_RING_PACKED)) !== 0n;
  for (let i = 0; i < nq; i++) {
    const q = new DriverQueue(p, { size: 64, features, dmaBase });
    qs.push(q);
    grow();
    f.setVringNum({ index: i, num: 64 });
    const a = q.addresses;
    f.setVringAddr({ index: i, desc: a.descArea, avail: a.driverArea, used: a.deviceArea });
    f.setVringBase({ index: i, num: packed ? 0x8000 | (0x8000 << 16) : 0 });
    const kick = Doorbell.alloc(p);
    const call = Doorbell.alloc(p);
    kicks.push(kick);
    guest.watch(call, () => calls[i]!++);
    f.setVringKick(i, kick.handle);
    f.setVringCall(i, call.handle);
    f.setVringEnable({ index: i, num: 1 });
    grow();
  }
  f.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  grow();
  const kick = (i: number) => {
    if (qs[i]!.kickPrepare()) kicks[i]!.ring();
  };
  return { qs, kick, calls, guest, iova: (off: number) => off + dmaBase };
}

for (const shared of [false, true]) {
  for (const layout of ['split', 'packed'] as const) {
    test(`${shared ? 'shared' : 'unshared'} foreign memory grown between every step: vdpasim_net (${layout}) loops frames back byte for byte`, async () => {
      const { p, bus, vhost, grow, memory } = foreignSetup(shared);
      bus.devAdd('vdpasim_net', 'net0');
      const f = vhost.open(vhost.nodeOf('net0'));
      const want = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_NET_F_MAC) |
        (layout === 'packed' ? featureBit(VIRTIO_F_RING_PACKED) : 0n);
      const pages0 = memory.buffer.byteLength / PAGE;
      const { qs, kick, calls, guest, iova } = bringUp(f, p, want, 2, grow);
      const [rx, tx] = qs as [DriverQueue, DriverQueue];
      for (let round = 0; round < 3; round++) {
        const rxBufs = new Map<number, number>();
        for (let i = 0; i < 8; i++) {
          const b = p.allocBuffer(2048);
          rxBufs.set(i, b);
          assert.ok(rx.add(i, [], [{ addr: iova(b), len: 2048 }]));
        }
        grow();
        kick(0);
        const frames = Array.from({ length: 8 }, (_, i) => eth(60 + i * 41 + round, i));
        frames.forEach((fr, i) => {
          const b = p.allocBuffer(12 + fr.length);
          p.u8.fill(0, b, b + 12);
          p.u8.set(fr, b + 12);
          assert.ok(tx.add(100 + i, [{ addr: iova(b), len: 12 + fr.length }]));
        });
        grow();
        const c0 = calls[0]!;
        kick(1);
        grow();
        for (let i = 0; i < 10 && calls[0] === c0; i++) await tick();
        grow();
        const got = rx.reclaim();
        assert.equal(got.length, frames.length, `round ${round}`);
        got.forEach(({ token, len }, i) => {
          const b = rxBufs.get(token)!;
          assert.equal(len, 12 + frames[i]!.length);
          assert.deepEqual(p.u8.slice(b + 12, b + len), frames[i]);
        });
        assert.equal(tx.reclaim().length, frames.length);
      }
      assert.ok(memory.buffer.byteLength / PAGE >= pages0 + 10, 'the memory grew under the platform');
      if (!shared) assert.equal(p.u8.length, memory.buffer.byteLength, 'the views follow an unshared memory');
      assert.equal(f.kickErrors, 0);
      guest.close();
      f.close();
    });
  }

  test(`${shared ? 'shared' : 'unshared'} foreign memory grown between requests: vdpasim_blk writes then reads back`, async () => {
    const { p, bus, vhost, grow } = foreignSetup(shared);
    bus.devAdd('vdpasim_blk', 'blk0');
    const f = vhost.open(vhost.nodeOf('blk0'));
    const { qs, kick, guest, iova } = bringUp(f, p, featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM), 1, grow);
    const q = qs[0]!;
    const hdr = (type: number, sector: number) => {
      const h = p.allocBuffer(16);
      p.view.setUint32(h, type, true);
      p.view.setUint32(h + 4, 0, true);
      p.view.setBigUint64(h + 8, BigInt(sector), true);
      return h;
    };
    const data = p.allocBuffer(8 * 512);
    for (let i = 0; i < 8 * 512; i++) p.u8[data + i] = (i * 13 + 5) & 0xff;
    const want = p.u8.slice(data, data + 8 * 512);
    const s1 = p.allocBuffer(1);
    p.u8[s1] = 0xff;
    assert.ok(q.add(1, [{ addr: iova(hdr(1, 8)), len: 16 }, { addr: iova(data), len: 8 * 512 }], [{ addr: iova(s1), len: 1 }]));
    grow();
    kick(0);
    grow();
    for (let i = 0; i < 10 && q.usedPending() < 1; i++) await tick();
    assert.equal(q.reclaim().length, 1);
    assert.equal(p.u8[s1], 0);
    grow();
    const back = p.allocBuffer(8 * 512);
    const s2 = p.allocBuffer(1);
    p.u8[s2] = 0xff;
    assert.ok(q.add(2, [{ addr: iova(hdr(0, 8)), len: 16 }], [{ addr: iova(back), len: 8 * 512 }, { addr: iova(s2), len: 1 }]));
    kick(0);
    grow();
    for (let i = 0; i < 10 && q.usedPending() < 1; i++) await tick();
    assert.equal(q.reclaim().length, 1);
    assert.equal(p.u8[s2], 0);
    assert.deepEqual(p.u8.slice(back, back + 8 * 512), want);
    guest.close();
    f.close();
  });
}

test('the package\'s own drivers (virtio_vdpa: virtio-net batches, virtio-blk) on an unshared foreign memory grown between operations', async () => {
  const memory = new WebAssembly.Memory({ initial: 70, maximum: 400 });
  const p = Platform.foreign({ memory, ramBase: 2 * PAGE + 4096, ramSize: 64 * PAGE, privateSize: 8 << 20, allocateRam: true });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 64));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  bus.registerDriver(virtio);
  bus.devAdd('vdpasim_net', 'net0', {});
  bus.devAdd('vdpasim_blk', 'blk0', {});
  const net = virtio.net('net0');
  const blk = virtio.blk('blk0');
  const seen: Uint8Array[] = [];
  net.onFrames((b) => {
    for (let i = 0; i < b.count; i++) seen.push(b.data.slice(b.offsets[i]!, b.offsets[i]! + b.lengths[i]!));
  });
  for (let round = 0; round < 4; round++) {
    memory.grow(1);
    const frames = Array.from({ length: 8 }, (_, i) => eth(64 + 50 * i + round, i));
    assert.equal(net.sendBatch(frames), frames.length);
    for (let i = 0; i < 5 && seen.length < 8 * (round + 1); i++) await tick();
    assert.deepEqual(seen.slice(8 * round), frames, `net round ${round}`);
    memory.grow(1);
    const data = new Uint8Array(1024).fill(0x40 + round);
    await blk.write(round * 2, data);
    memory.grow(1);
    const back = new Uint8Array(1024);
    await blk.read(round * 2, back);
    assert.deepEqual(back, data, `blk round ${round}`);
  }
  assert.equal(p.u8.length, memory.buffer.byteLength);
});
