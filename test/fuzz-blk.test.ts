// Seeded fuzz of virtio-blk: (1) the driver API over backends that throw, reject, answer
// garbage, answer short or long, or never answer, checked against a model disk — then a
// driver reset cancels whatever hangs; (2) random raw request chains, valid and malformed,
// against the RAM disk and an async backend, checked against a model, with canaries outside
// the device's map and buffers unmapped while answers are pending. At the end of every case
// every promise settled, the device still serves, nothing escaped into a microtask.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimBlk, createVirtioVdpa, Code, VIRTIO_BLK_DRIVER_FEATURES, VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED, VIRTIO_CONFIG_S_NEEDS_RESET, featureBit, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP, type BlkBackend,
} from '../src/index.ts';
import { fuzzAsync, type Rand } from './helpers/fuzz.ts';
import { RawBlk, settle, type RawBuf } from './helpers/blk-raw.ts';
import { trackEscapes } from './helpers/escapes.ts';

const escaped = trackEscapes();

const CAP = 128;
type Fault = 'ok' | 'throw' | 'reject' | 'garbage' | 'short' | 'long' | 'hang';

/** A model disk behind a backend whose every call draws a fault. Faulty calls change nothing. */
function faultyBackend(r: Rand, pFault: number) {
  const disk = new Uint8Array(CAP * 512);
  let hangs = 0;
  const draw = (read: boolean): Fault => {
    if (!r.chance(pFault)) return 'ok';
    return r.pick<Fault>(read ? ['throw', 'reject', 'garbage', 'short', 'long', 'hang'] : ['throw', 'reject', 'hang']);
  };
  const later = <T>(f: Fault, v: () => T): Promise<T> => {
    if (f === 'throw') throw new Error('sync fault');
    if (f === 'reject') return Promise.reject(new Error('async fault'));
    if (f === 'hang') {
      hangs++;
      return new Promise(() => {});
    }
    return Promise.resolve().then(v);
  };
  const backend: BlkBackend = {
    capacity: CAP,
    read(s, len) {
      const f = draw(true);
      if (f === 'garbage') return Promise.resolve(r.pick([null, 'x', 5, {}, new ArrayBuffer(len)])) as Promise<Uint8Array>;
      if (f === 'short') return Promise.resolve(disk.slice(s * 512, s * 512 + len - r.range(1, len)));
      if (f === 'long') return Promise.resolve(new Uint8Array(len + r.range(1, 600)));
      return later(f, () => disk.slice(s * 512, s * 512 + len));
    },
    write(s, d) {
      const f = draw(false);
      const copy = d.slice();
      return later(f, () => void disk.set(copy, s * 512));
    },
    flush() {
      return later(draw(false), () => {});
    },
    discard(s, n) {
      return later(draw(false), () => void disk.fill(0, s * 512, (s + n) * 512));
    },
  };
  return { backend, disk, hangs: () => hangs };
}

test('fuzz: the blk driver over faulty backends, checked against a model', async () => {
  await fuzzAsync('blk-faulty-backend', 12, async (r) => {
    const p = Platform.create({ ramSize: 2 << 20 });
    const bus = new VdpaBus();
    let features = VIRTIO_BLK_DRIVER_FEATURES;
    if (r.chance(0.3)) features &= ~featureBit(VIRTIO_F_INDIRECT_DESC);
    if (r.chance(0.5)) features &= ~featureBit(VIRTIO_F_RING_PACKED);
    const virtio = createVirtioVdpa(p, { queueSize: r.pick([2, 4, 8, 32]), blk: { features } });
    bus.registerDriver(virtio);
    const { backend, disk, hangs } = faultyBackend(r, r.pick([0, 0.2, 0.5]));
    const dev = new VdpaSimBlk(p, { name: 'z', backend });
    bus.addDevice(dev);
    const blk = virtio.blk('z');
    const model = new Uint8Array(CAP * 512);
    for (let round = 0; round < 3; round++) {
      const busy = new Set<number>();
      const ops: { p: Promise<unknown>; done: boolean; err?: { code: string } }[] = [];
      const track = (pr: Promise<unknown>, onOk?: () => void) => {
        const o: (typeof ops)[number] = { p: pr, done: false };
        o.p = pr.then(() => {
          o.done = true;
          onOk?.();
        }, (e) => {
          o.done = true;
          o.err = e;
        });
        ops.push(o);
      };
      for (let k = 0; k < r.range(1, 16); k++) {
        const n = r.range(1, 8);
        const s = r.int(CAP - n);
        let clash = false;
        for (let i = s; i < s + n; i++) if (busy.has(i)) clash = true;
        if (clash) continue;
        for (let i = s; i < s + n; i++) busy.add(i);
        const what = r.int(5);
        if (what === 0) {
          const d = r.bytes(n * 512);
          // The model follows only writes that succeed (a faulty call changes nothing).
          track(blk.write(s, d), () => model.set(d, s * 512));
        } else if (what === 1) {
          const buf = new Uint8Array(n * 512);
          const want = () => model.slice(s * 512, (s + n) * 512);
          track(blk.read(s, buf), () => assert.deepEqual(buf, want()));
        } else if (what === 2) {
          track(blk.discard(s, n), () => model.fill(0, s * 512, (s + n) * 512));
        } else if (what === 3) {
          track(blk.flush());
        } else {
          track(blk.getId());
        }
      }
      await settle(8);
      if (ops.some((o) => !o.done)) {
        assert.ok(hangs() > 0, 'only a backend that never answers leaves a request pending');
        blk.reset(); // pending promises reject with Cancelled
        await settle(4);
        for (const o of ops) {
          assert.ok(o.done, 'every promise settled after the reset');
          if (o.err) assert.ok([Code.IoError, Code.Cancelled, Code.Unsupported].includes(o.err.code as never), o.err.code);
        }
        // What a cancelled write did is unknown: resynchronise the model with the disk.
        model.set(disk);
      }
      for (const o of ops) if (o.err) assert.ok([Code.IoError, Code.Cancelled, Code.Unsupported].includes(o.err.code as never), o.err.code);
      assert.deepEqual(disk, model, 'the backend disk equals the model');
    }
    // Still serving (fault-free): a round trip through a fresh backend state.
    assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    await settle();
    assert.deepEqual(escaped, []);
  });
});

/** A random chain carrying `head` then `data` readable bytes, split into 1..3 segments each. */
function split(r: Rand, at: number, len: number): RawBuf[] {
  const out: RawBuf[] = [];
  while (len > 0) {
    const n = r.chance(0.5) ? len : r.range(1, len);
    out.push({ addr: at, len: n });
    at += n;
    len -= n;
  }
  return out;
}

test('fuzz: raw request chains against the RAM disk and an async backend, with canaries and remaps', async () => {
  await fuzzAsync('blk-raw-chains', 16, async (r) => {
    const async = r.chance(0.5);
    const disk = new Uint8Array(CAP * 512);
    const gate: (() => void)[] = [];
    const backend: BlkBackend | undefined = async ? {
      capacity: CAP,
      // Answers wait for the test, so a map change can come in between.
      read: (s, len) => new Promise((res) => gate.push(() => res(disk.slice(s * 512, s * 512 + len)))),
      write: async (s, d) => void disk.set(d, s * 512),
      flush: async () => {},
      discard: async (s, n) => void disk.fill(0, s * 512, (s + n) * 512),
    } : undefined;
    const raw = new RawBlk({ backend, capacity: CAP, ramSize: 2 << 20, size: 64 });
    const { p } = raw;
    // The device sees only the first half of a 64 KiB pool; the second half is canary.
    const pool = raw.buf(65536, 4096);
    const mapped = 32768;
    const canary = pool + mapped;
    p.u8.fill(0xc5, canary, pool + 65536);
    const { ramBase, ramSize } = p;
    raw.dev.setMap(0, [
      { iova: ramBase, size: canary - ramBase, addr: ramBase },
      { iova: pool + 65536, size: ramBase + ramSize - pool - 65536, addr: pool + 65536 },
    ]);
    const ramDisk = () => (async ? disk : p.u8.subarray(raw.dev.disk, raw.dev.disk + CAP * 512));
    const model = new Uint8Array(CAP * 512);
    let cursor = pool;
    const take = (n: number) => {
      if (cursor + n > pool + mapped) cursor = pool;
      const a = cursor;
      cursor += (n + 15) & ~15;
      return a;
    };
    for (let round = 0; round < 4; round++) {
      cursor = pool;
      const expect: { t: number; status: number; len: number; st: number; check?: () => void }[] = [];
      const busy = new Set<number>();
      for (let k = 0; k < r.range(1, 12); k++) {
        const kind = r.int(9);
        const n = r.range(1, 4);
        const s = r.int(CAP - n);
        let clash = false;
        for (let i = s; i < s + n; i++) if (busy.has(i)) clash = true;
        if (clash) continue;
        for (let i = s; i < s + n; i++) busy.add(i);
        const h = take(16);
        const st = take(1);
        p.u8[st] = 0xee;
        const hdr = (type: number, sector: number) => {
          p.view.setUint32(h, type, true);
          p.view.setUint32(h + 4, 0, true);
          p.view.setBigUint64(h + 8, BigInt(sector), true);
        };
        const stat: RawBuf = { addr: st, len: 1, w: true };
        if (kind === 0) { // valid write
          hdr(VIRTIO_BLK_T_OUT, s);
          const d = take(n * 512);
          p.u8.set(r.bytes(n * 512), d);
          model.set(p.u8.subarray(d, d + n * 512), s * 512);
          expect.push({ t: raw.send([...split(r, h, 16), ...split(r, d, n * 512), stat], false), status: VIRTIO_BLK_S_OK, len: 1, st });
        } else if (kind === 1) { // valid read
          hdr(VIRTIO_BLK_T_IN, s);
          const d = take(n * 512);
          const want = () => model.slice(s * 512, (s + n) * 512);
          const w = split(r, d, n * 512).map((b) => ({ ...b, w: true }));
          expect.push({ t: raw.send([...split(r, h, 16), ...w, stat], false), status: VIRTIO_BLK_S_OK, len: n * 512 + 1, st, check: () => assert.deepEqual(p.u8.slice(d, d + n * 512), want()) });
        } else if (kind === 2) { // valid discard
          hdr(VIRTIO_BLK_T_DISCARD, 0);
          const seg = take(16);
          p.view.setBigUint64(seg, BigInt(s), true);
          p.view.setUint32(seg + 8, n, true);
          p.view.setUint32(seg + 12, 0, true);
          model.fill(0, s * 512, (s + n) * 512);
          expect.push({ t: raw.send([{ addr: h, len: 16 }, { addr: seg, len: 16 }, stat], false), status: VIRTIO_BLK_S_OK, len: 1, st });
        } else if (kind === 3) { // flush
          hdr(VIRTIO_BLK_T_FLUSH, 0);
          expect.push({ t: raw.send([{ addr: h, len: 16 }, stat], false), status: VIRTIO_BLK_S_OK, len: 1, st });
        } else if (kind === 4) { // unknown type
          hdr(r.pick([2, 3, 5, 6, 7, 9, 10, 12, 14, 0xffffffff]), s);
          expect.push({ t: raw.send([{ addr: h, len: 16 }, stat], false), status: VIRTIO_BLK_S_UNSUPP, len: 1, st });
        } else if (kind === 5) { // data not a multiple of 512, or beyond the disk
          const type = r.pick([VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT]);
          const beyond = r.chance(0.5);
          hdr(type, beyond ? r.pick([CAP, CAP + 1, 2 ** 40]) : s);
          const len = beyond ? 512 : r.range(1, 511) + 512 * r.int(2);
          const d = take(len);
          expect.push({ t: raw.send([{ addr: h, len: 16 }, { addr: d, len, w: type === VIRTIO_BLK_T_IN }, stat], false), status: VIRTIO_BLK_S_IOERR, len: 1, st });
        } else if (kind === 6) { // header shorter than 16 bytes
          hdr(VIRTIO_BLK_T_FLUSH, 0);
          expect.push({ t: raw.send([{ addr: h, len: r.range(1, 15) }, stat], false), status: VIRTIO_BLK_S_IOERR, len: 1, st });
        } else if (kind === 7) { // discard: too many segments, a ragged length, or flags
          hdr(VIRTIO_BLK_T_DISCARD, 0);
          const bad = r.int(3);
          const cnt = bad === 0 ? 17 : 1;
          const seg = take(16 * cnt);
          for (let i = 0; i < cnt; i++) {
            p.view.setBigUint64(seg + 16 * i, BigInt(s), true);
            p.view.setUint32(seg + 16 * i + 8, 1, true);
            p.view.setUint32(seg + 16 * i + 12, bad === 2 ? 1 : 0, true);
          }
          const len = bad === 1 ? 16 + r.range(1, 15) : 16 * cnt;
          expect.push({ t: raw.send([{ addr: h, len: 16 }, { addr: seg, len }, stat], false), status: bad === 2 ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR, len: 1, st });
        } else { // get id, or no status byte at all
          hdr(VIRTIO_BLK_T_GET_ID, 0);
          if (r.chance(0.5)) {
            expect.push({ t: raw.send([{ addr: h, len: 16 }], false), status: -1, len: 0, st });
          } else {
            const d = take(20);
            expect.push({ t: raw.send([{ addr: h, len: 16 }, { addr: d, len: 20, w: true }, stat], false), status: VIRTIO_BLK_S_OK, len: 21, st });
          }
        }
      }
      raw.dev.kickVq(0);
      // Sometimes the map changes while reads are pending: a pending read whose buffers are
      // no longer mapped must not write them.
      let remapped = false;
      if (async && gate.length && r.chance(0.3)) {
        remapped = true;
        raw.dev.setMap(0, [{ iova: ramBase, size: pool - ramBase, addr: ramBase }, { iova: pool + 65536, size: ramBase + ramSize - pool - 65536, addr: pool + 65536 }]);
      }
      const before = remapped ? p.u8.slice(pool, pool + mapped) : null;
      for (const g of gate.splice(0)) g();
      await settle();
      const used = raw.reap();
      if (remapped) {
        // Every buffer of the pool is gone: no answer may touch it; the queue broke (status
        // bytes are in the pool too) and a reset is needed.
        assert.deepEqual(p.u8.slice(pool, pool + mapped), before, 'unmapped buffers untouched');
        assert.ok(raw.dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
        break;
      }
      for (const e of expect) {
        assert.equal(used.get(e.t), e.len, `used length of token ${e.t}`);
        if (e.status >= 0) assert.equal(p.u8[e.st], e.status, `status of token ${e.t}`);
        e.check?.();
      }
      assert.deepEqual(ramDisk(), model, 'disk equals the model');
      assert.equal(raw.dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }
    assert.ok(p.u8.subarray(canary, pool + 65536).every((b) => b === 0xc5), 'canaries outside the map unchanged');
    await settle();
    assert.deepEqual(escaped, []);
  });
});
