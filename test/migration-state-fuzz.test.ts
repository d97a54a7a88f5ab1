// loadState against mutated states: every bad input is refused with a VirtioError (never a
// TypeError, a trap or a hang) and leaves the destination fresh; the binary decoder likewise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import {
  Platform, VirtioError, saveState, loadState, encodeState, decodeState, seeded, saveEarlyState, loadEarlyState, saveStateDelta,
  encodeStateDelta, decodeStateDelta, type DeviceState, type DeviceStateDelta,
} from '../src/index.ts';
import { netDev, netDriver, blkDev, blkDriver, SharedDisk } from './helpers/migration.ts';

const VALUES: unknown[] = [null, undefined, -1, 0, 1, 2 ** 53, 0.5, NaN, '', '0x', '0xffffffffffffffffff', 'zz', [], {}, true, 65535, 65536, 4096];

function paths(v: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(prefix);
  if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) paths(x, [...prefix, Array.isArray(v) ? Number(k) : k], out);
  return out;
}

function mutate(s: DeviceState | DeviceStateDelta, rnd: () => number): unknown {
  const c = structuredClone(s) as unknown as Record<string, unknown>;
  const all = paths(c).filter((p) => p.length > 0);
  const p = all[Math.floor(rnd() * all.length)]!;
  let o: Record<string | number, unknown> = c;
  for (const k of p.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  o[p[p.length - 1]!] = VALUES[Math.floor(rnd() * VALUES.length)];
  return c;
}

test('mutated net and blk states: typed refusals, destination unchanged', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const net = netDev(p, 2);
  const { drv } = netDriver(p, net, 'packed');
  await drv.setMacTable(['02:00:00:00:00:05'], ['01:00:5e:00:00:01']);
  await drv.addVlan(7);
  await net.suspendDrained();
  const disk = new SharedDisk(64);
  const blk = blkDev(p, disk);
  blkDriver(p, blk, 'split');
  await blk.suspendDrained();
  const rnd = seeded(42);
  let refused = 0;
  for (const [src, make] of [[net, () => netDev(p, 2)], [blk, () => blkDev(p, disk)]] as const) {
    const st = saveState(src);
    const bin = encodeState(st);
    for (let i = 0; i < 300; i++) {
      const dst = make();
      try {
        loadState(dst, mutate(st, rnd) as DeviceState);
      } catch (e) {
        assert.ok(e instanceof VirtioError, `not a VirtioError: ${String(e)}`);
        assert.equal(dst.getStatus(), 0);
        refused++;
      }
      dst.destroy();
      // Binary: random byte edits and truncations.
      const b = bin.slice(0, Math.max(1, bin.length - Math.floor(rnd() * 3)));
      b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      try {
        decodeState(b);
      } catch (e) {
        assert.ok(e instanceof VirtioError, `decode: not a VirtioError: ${String(e)}`);
      }
    }
  }
  console.log(`# refused ${refused} of 600`);
  assert.ok(refused > 300, `${refused} of 600 mutated states refused`);
});

test('mutated deltas: typed refusals, the destination still waits for its delta and takes the good one after', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const rnd = seeded(7);
  let refused = 0;
  for (const layout of ['split', 'packed'] as const) {
    const src = netDev(p, 2);
    const { drv } = netDriver(p, src, layout);
    await drv.addVlan(9);
    const early = saveEarlyState(src);
    const dst = netDev(p, 2);
    loadEarlyState(dst, early.bytes);
    await src.suspendDrained();
    const d = saveStateDelta(src, early)!;
    const bin = encodeStateDelta(d);
    for (let i = 0; i < 300; i++) {
      const m = mutate(d, rnd) as DeviceStateDelta;
      try {
        loadState(dst, m);
        // A mutation the device accepts (a value it takes, such as another ring position):
        // back to the early state for the next one.
        dst.reset();
        loadEarlyState(dst, early.bytes);
      } catch (e) {
        assert.ok(e instanceof VirtioError, `not a VirtioError: ${String(e)}`);
        assert.equal(dst.earlyStateId, early.id, 'still waiting for its delta');
        refused++;
      }
      const b = bin.slice(0, Math.max(1, bin.length - Math.floor(rnd() * 3)));
      b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      try {
        decodeStateDelta(b);
      } catch (e) {
        assert.ok(e instanceof VirtioError, `decode: not a VirtioError: ${String(e)}`);
      }
    }
    loadState(dst, bin);
    assert.deepEqual(saveState(dst), saveState(src));
  }
  console.log(`# refused ${refused} of 600 mutated deltas`);
  assert.ok(refused > 300, `${refused} of 600 mutated deltas refused`);
});

test('mutated blk states and deltas with reads in flight: typed refusals; what loads resumes without a throw', async () => {
  const p = Platform.create({ ramSize: 16 << 20 });
  const disk = new SharedDisk(256);
  const src = blkDev(p, disk);
  const { drv } = blkDriver(p, src, 'split');
  const early = saveEarlyState(src);
  disk.hold = true;
  const reads = [0, 1, 2, 3].map((k) => drv.read(k * 8, new Uint8Array(4096)));
  await Promise.resolve();
  await src.suspendDrained({ record: true });
  const st = saveState(src);
  const d = saveStateDelta(src, early)!;
  assert.equal(st.blk!.requests!.length, 4);
  assert.equal(d.requests!.length, 4);
  const rnd = seeded(99);
  let refused = 0;
  let loaded = 0;
  const dst = blkDev(p, disk);
  for (let i = 0; i < 400; i++) {
    const full = i % 2 === 0;
    if (!full) loadEarlyState(dst, early.bytes);
    try {
      loadState(dst, mutate(full ? st : d, rnd) as DeviceState);
      loaded++;
      // Accepted (a field the device takes as it is): it runs, or breaks its queue with
      // NEEDS_RESET — never a throw.
      if (dst.isSuspended) dst.resume();
    } catch (e) {
      assert.ok(e instanceof VirtioError, `not a VirtioError: ${String(e)}`);
      if (full) assert.equal(dst.getStatus(), 0);
      else assert.equal(dst.earlyStateId, early.id, 'still waiting for its delta');
      refused++;
    }
    dst.reset();
    // Binary: one byte changed, the CRC fixed up so that the decoder reads past it; what
    // decodes is loaded too.
    const b = (full ? encodeState(st) : encodeStateDelta(d)).slice();
    b[10 + Math.floor(rnd() * (b.length - 14))] = Math.floor(rnd() * 256);
    new DataView(b.buffer).setUint32(b.length - 4, crc32(b.subarray(0, b.length - 4)), true);
    try {
      const dec = full ? decodeState(b) : decodeStateDelta(b);
      if (!full) loadEarlyState(dst, early.bytes);
      loadState(dst, dec as DeviceState);
      if (dst.isSuspended) dst.resume();
    } catch (e) {
      assert.ok(e instanceof VirtioError, `binary: not a VirtioError: ${String(e)}`);
    }
    dst.reset();
  }
  console.log(`# blk with reads in flight: refused ${refused}, loaded ${loaded} of 400`);
  assert.ok(refused > 150, `${refused} of 400 refused`);
  disk.release();
  src.resume();
  await Promise.all(reads);
});
