// virtio-blk beyond read/write: DISCARD and WRITE_ZEROES on the wasm RAM disk, and the
// asynchronous backend path with a real file (Node fs) — many requests in flight, the image
// byte-identical to a model, backend failures answered IOERR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Platform, VdpaBus, VdpaSimBlkMgmt, VdpaSimBlk, createVirtioVdpa, Code, FileBackend, type BlkBackend,
} from '../src/node.ts';
import { rng } from './helpers/builds.ts';

function bus() {
  const p = Platform.create({ ramSize: 32 << 20 });
  const b = new VdpaBus();
  b.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const virtio = createVirtioVdpa(p, { queueSize: 64 });
  b.registerDriver(virtio);
  return { p, b, virtio };
}

test('RAM disk: discard and write-zeroes clear exactly their ranges', async () => {
  const { b, virtio } = bus();
  const dev = b.devAdd('vdpasim_blk', 'd') as VdpaSimBlk;
  const blk = virtio.blk('d');
  const data = new Uint8Array(16 * 512).fill(0xee);
  await blk.write(100, data);
  await blk.discard(102, 3);
  await blk.writeZeroes(110, 2, true);
  const back = new Uint8Array(16 * 512);
  await blk.read(100, back);
  for (let s = 0; s < 16; s++) {
    const zero = (s >= 2 && s < 5) || (s >= 10 && s < 12);
    assert.equal(back[s * 512], zero ? 0 : 0xee, `sector ${100 + s}`);
    assert.equal(back[s * 512 + 511], zero ? 0 : 0xee, `sector ${100 + s} end`);
  }
  assert.equal(dev.platform.u8[dev.disk + 99 * 512 + 511], 0, 'before the write untouched');
  await assert.rejects(blk.discard(8190, 5), (e: { code: string }) => e.code === Code.InvalidArgument);
});

test('file backend: random I/O with many requests in flight; the image equals the model', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdpa-blk-'));
  try {
    const file = join(dir, 'disk.img');
    const backend = await FileBackend.open(file, { size: 1 << 20 });
    const { p, b, virtio } = bus();
    const dev = new VdpaSimBlk(p, { name: 'f', backend });
    b.addDevice(dev);
    const blk = virtio.blk('f');
    assert.equal(blk.capacity, 2048);
    const model = new Uint8Array(1 << 20);
    const rand = rng(11);
    let sawInFlight = 0;
    for (let round = 0; round < 10; round++) {
      const ops: Promise<void>[] = [];
      const busy = new Set<number>();
      for (let k = 0; k < 24; k++) {
        const n = 1 + Math.floor(rand() * 8);
        const s = Math.floor(rand() * (2048 - n));
        let clash = false;
        for (let i = s; i < s + n; i++) if (busy.has(i)) clash = true;
        if (clash) continue;
        for (let i = s; i < s + n; i++) busy.add(i);
        const r = rand();
        if (r < 0.5) {
          const d = new Uint8Array(n * 512).map(() => (rand() * 256) | 0);
          model.set(d, s * 512);
          ops.push(blk.write(s, d));
        } else if (r < 0.6) {
          model.fill(0, s * 512, (s + n) * 512);
          ops.push(blk.writeZeroes(s, n));
        } else {
          const buf = new Uint8Array(n * 512);
          const want = model.slice(s * 512, (s + n) * 512);
          ops.push(blk.read(s, buf).then(() => assert.deepEqual(buf, want)));
        }
      }
      sawInFlight = Math.max(sawInFlight, dev.inFlight);
      await Promise.all(ops);
      assert.equal(dev.inFlight, 0);
    }
    assert.ok(sawInFlight > 1, `requests were in flight together (${sawInFlight})`);
    await blk.flush();
    await dev.drain();
    await backend.close();
    assert.deepEqual(new Uint8Array(readFileSync(file)), model, 'disk image byte-identical to the model');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a backend that fails answers IOERR; out-of-range requests never reach it', async () => {
  const calls: string[] = [];
  const failing: BlkBackend = {
    capacity: 64,
    read: async (s) => { calls.push(`read ${s}`); throw new Error('medium error'); },
    write: async (s) => { calls.push(`write ${s}`); },
    flush: async () => { calls.push('flush'); },
  };
  const { p, b, virtio } = bus();
  b.addDevice(new VdpaSimBlk(p, { name: 'x', backend: failing }));
  const blk = virtio.blk('x');
  await assert.rejects(blk.read(0, new Uint8Array(512)), (e: { code: string }) => e.code === Code.IoError);
  await blk.write(1, new Uint8Array(512));
  await blk.flush();
  assert.equal(await blk.getId(), 'vdpasim-x');
  assert.deepEqual(calls, ['read 0', 'write 1', 'flush']);
});

test('read-only with a backend: writes, discards and write-zeroes are refused', async () => {
  const { p, b, virtio } = bus();
  const mem: BlkBackend = { capacity: 8, read: async (_s, n) => new Uint8Array(n).fill(7), write: async () => { throw new Error('must not write'); }, flush: async () => {} };
  b.addDevice(new VdpaSimBlk(p, { name: 'ro', backend: mem, readOnly: true }));
  const blk = virtio.blk('ro');
  assert.equal(blk.readOnly, true);
  const buf = new Uint8Array(512);
  await blk.read(0, buf);
  assert.equal(buf[0], 7);
  await assert.rejects(blk.write(0, buf), (e: { code: string }) => e.code === Code.FailedPrecondition);
  await assert.rejects(blk.discard(0, 1), (e: { code: string }) => e.code === Code.FailedPrecondition);
});

test('write data slabs are reused only once every write cut from them settled: held writes keep their bytes', async () => {
  // A backend that answers writes only when told, and checks each write's bytes at that moment
  // (and again at its answer) against what the driver wrote: a slab cut again while a write of
  // it is still out would change them.
  const held: (() => void)[] = [];
  let checked = 0;
  const disk = new Uint8Array(8 << 20);
  const backend: BlkBackend = {
    capacity: disk.length / 512,
    read: async (s, len) => disk.slice(s * 512, s * 512 + len),
    write: (s, d) => new Promise<void>((res) => {
      const expect = (d[0]! << 8) | d[1]!;
      held.push(() => {
        // Every byte of the request still says which request it is.
        for (let k = 0; k < d.length; k += 512) assert.equal((d[k]! << 8) | d[k + 1]!, expect, `write at sector ${s}, byte ${k}`);
        disk.set(d, s * 512);
        checked++;
        res();
      });
    }),
    flush: async () => {},
  };
  const { p, b, virtio } = bus();
  b.addDevice(new VdpaSimBlk(p, { name: 's', backend }));
  const blk = virtio.blk('s');
  const tag = (n: number) => { const d = new Uint8Array(32 << 10); for (let k = 0; k < d.length; k += 512) { d[k] = n >> 8; d[k + 1] = n & 255; } return d; };
  const release = () => { for (const f of held.splice(0)) f(); };
  let n = 0;
  // Round A: 20 writes of 32 KiB (640 KiB: three slabs) held; round B is cut while they are out;
  // then A is answered, B is answered, and C (cut from slabs A and B freed) follows.
  const round = async (hold: (ps: Promise<void>[]) => Promise<void>) => {
    const ps = Array.from({ length: 20 }, () => { const k = n++; return blk.write(k * 64, tag(k)); });
    await hold(ps);
    return ps;
  };
  const wait = async (k: number) => { for (let i = 0; i < 200 && held.length < k; i++) await new Promise((r) => setImmediate(r)); };
  const a = await round(async () => wait(20));
  const bw = await round(async () => wait(40));
  assert.equal(held.length, 40, 'both rounds held at the backend');
  release();
  await Promise.all([...a, ...bw]);
  for (let r = 0; r < 5; r++) {
    const c = await round(async () => wait(20));
    release();
    await Promise.all(c);
  }
  assert.equal(checked, 140);
  for (let k = 0; k < n; k++) assert.equal((disk[k * 64 * 512]! << 8) | disk[k * 64 * 512 + 1]!, k, `request ${k} on disk`);
});

test('readInto: a read\'s buffer is not cut again until its answer is used — answers held over a suspend keep their bytes while new writes are cut on resume', async () => {
  // Reads answer when told (filling the device's buffer with their tag); writes at once.
  const heldReads: (() => void)[] = [];
  const disk = new Uint8Array(8 << 20);
  let intoCalls = 0;
  const backend: BlkBackend = {
    capacity: disk.length / 512,
    read: async () => { throw new Error('readInto is there: read() must not be used'); },
    readInto: (s, buf) => { intoCalls++; return new Promise<void>((res) => heldReads.push(() => { buf.fill(s & 255); res(); })); },
    write: async (s, d) => { disk.set(d, s * 512); },
    flush: async () => {},
  };
  const { p, b, virtio } = bus();
  const dev = new VdpaSimBlk(p, { name: 'ri', backend });
  b.addDevice(dev);
  const blk = virtio.blk('ri');
  const wait = async (k: number) => { for (let i = 0; i < 200 && heldReads.length < k; i++) await new Promise((r) => setImmediate(r)); };
  // 20 reads of 32 KiB (three slabs), sector k*64+k so each has its own tag.
  const bufs = Array.from({ length: 20 }, () => new Uint8Array(32 << 10));
  const reads = bufs.map((buf, k) => blk.read(k * 64 + k, buf));
  await wait(20);
  assert.equal(heldReads.length, 20);
  // Stop the device (a migration's suspend: nothing must finish first), then let the backend
  // answer: the answers wait in the device, their bytes in its buffers.
  await dev.suspendDrained({ record: true });
  for (const f of heldReads.splice(0)) f();
  await new Promise((r) => setImmediate(r));
  assert.equal(dev.heldCompletions, 20, 'answers held while suspended');
  // Writes queued while stopped are cut on resume, before the held answers go out.
  const w = Array.from({ length: 20 }, (_, k) => blk.write(4096 + k * 64, new Uint8Array(32 << 10).fill(0xee)));
  dev.resume();
  await Promise.all([...reads, ...w]);
  for (const [k, buf] of bufs.entries()) assert.ok(buf.every((x) => x === ((k * 64 + k) & 255)), `read ${k} got its own bytes, not a write's`);
  assert.equal(intoCalls, 20);
});
