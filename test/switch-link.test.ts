// SwitchLink (src/worker/switch-link.ts): switches in different threads as one learning L2
// segment. In one thread: frames cross both ways and each switch learns the far MACs on its
// link port; a full ring drops and counts (the ring's dropsFull = the switch port's txDrops)
// without blocking the sender; an end attached twice is refused; a closed end leaves the switch.
// Between two device workers linked directly (no switch on this thread): their devices reach
// each other, and each worker's switch learned the other's MAC behind its link.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, L2Switch, SwitchLink, SwitchLinkEnd, VirtioBinding, VirtioNetDriver, VirtioError, Code, type SwitchEndpoint,
} from '../src/index.ts';
import { spawnDeviceWorker } from '../src/node.ts';

const mac = (n: number) => [2, 0, 0, 0, 0, n];
const hex = (m: number[]) => m.map((x) => x.toString(16).padStart(2, '0')).join(':');

function frame(dst: number[], src: number[], seq: number, len = 64): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst, 0);
  f.set(src, 6);
  f.set([0x88, 0xb5], 12);
  new DataView(f.buffer).setUint32(14, seq);
  return f;
}

/** A switch port that records what it is given (copies: the views are valid during the call only). */
class Sink implements SwitchEndpoint {
  got: Uint8Array[] = [];
  deliver(frames: readonly Uint8Array[]): number {
    for (const f of frames) this.got.push(f.slice());
    return frames.length;
  }
}

const turns = async (n = 5): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setTimeout(r, 0));
};

test('two switches in one thread: frames cross both ways, the far MACs are learned on the link port, a full ring drops and counts', async () => {
  const p = Platform.create({ shared: true, ramSize: 1 << 20, privateSize: 4 << 20 });
  const link = SwitchLink.create(p, { capacity: 4096 });
  const [s1, s2] = [new L2Switch(), new L2Switch()];
  const [a, b] = [new Sink(), new Sink()];
  const pa = s1.connect(a);
  const pb = s2.connect(b);
  const e1 = SwitchLinkEnd.attach(s1, p, link.ends[0]);
  const e2 = SwitchLinkEnd.attach(s2, p, link.ends[1]);
  try {
    assert.throws(() => SwitchLinkEnd.attach(new L2Switch(), p, link.ends[0]), (e: unknown) => e instanceof VirtioError && e.code === Code.AlreadyExists);
    s1.input(pa, [frame(mac(2), mac(1), 1)]); // unknown destination: flooded across the link
    await turns();
    assert.equal(b.got.length, 1);
    assert.equal(s2.table.get(hex(mac(1))), e2.port, 'switch 2 learned MAC 1 behind its link');
    s2.input(pb, [frame(mac(1), mac(2), 2)]);
    await turns();
    assert.equal(a.got.length, 1);
    assert.equal(s1.table.get(hex(mac(2))), e1.port);
    // A burst larger than the ring, in one input(): what fits goes, the rest is dropped and
    // counted at once (the sender never waits).
    const burst = Array.from({ length: 100 }, (_, i) => frame(mac(2), mac(1), 100 + i, 200));
    s1.input(pa, burst);
    const st = e1.stats.tx;
    assert.ok(st.dropsFull > 0 && st.dropsFull < 100, `${st.dropsFull} dropped`);
    assert.equal(s1.stats(e1.port).txDrops, st.dropsFull, 'the switch port counts the same drops');
    await turns();
    const seqs = b.got.slice(1).map((f) => new DataView(f.buffer).getUint32(14));
    assert.deepEqual(seqs, Array.from({ length: 100 - st.dropsFull }, (_, i) => 100 + i), 'the first that fit arrive, in order');
    assert.deepEqual(link.stats().forward, { pushed: 101 - st.dropsFull, popped: 101 - st.dropsFull, dropsFull: st.dropsFull, dropsOversize: 0, usedBytes: 0 });
  } finally {
    e1.close();
    e2.close();
  }
  // Closed ends left their switches; the ends may be attached again.
  assert.throws(() => s1.stats(e1.port), (e: unknown) => e instanceof VirtioError && e.code === Code.NotFound);
  const again = SwitchLinkEnd.attach(s1, p, link.ends[0]);
  again.close();
  link.free();
});

test('two device workers linked directly: their net devices reach each other across the link', async () => {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w = [await spawnDeviceWorker({ platform: p }), await spawnDeviceWorker({ platform: p })];
  try {
    const link = SwitchLink.create(p);
    const up = [await w[0]!.bus.switchLink(link.ends[0]), await w[1]!.bus.switchLink(link.ends[1])];
    await assert.rejects(w[1]!.bus.switchLink(link.ends[1]), (e: unknown) => e instanceof VirtioError && e.code === Code.AlreadyExists);
    const drivers: VirtioNetDriver[] = [];
    const got: number[][] = [[], []];
    for (let s = 0; s < 2; s++) {
      await w[s]!.bus.devAdd('vdpasim_net', `n${s}`, { mac: hex(mac(s + 1)) });
      await w[s]!.bus.switchConnect(`n${s}`);
      const dev = await w[s]!.bus.openDevice(`n${s}`);
      const binding = new VirtioBinding(dev, p, 128);
      const drv = new VirtioNetDriver(dev, binding);
      binding.init(drv);
      drv.onFrame((f) => got[s]!.push(new DataView(f.buffer, f.byteOffset).getUint32(14)));
      drivers.push(drv);
    }
    for (let i = 0; i < 50; i++) {
      assert.ok(drivers[0]!.send(frame(mac(2), mac(1), i)));
      assert.ok(drivers[1]!.send(frame(mac(1), mac(2), 1000 + i)));
    }
    const end = Date.now() + 10000;
    while ((got[0]!.length < 50 || got[1]!.length < 50) && Date.now() < end) await new Promise((r) => setTimeout(r, 2));
    assert.deepEqual(got[1], Array.from({ length: 50 }, (_, i) => i));
    assert.deepEqual(got[0], Array.from({ length: 50 }, (_, i) => 1000 + i));
    assert.equal(new Map(await w[0]!.bus.switchTable()).get(hex(mac(2))), up[0]);
    assert.equal(new Map(await w[1]!.bus.switchTable()).get(hex(mac(1))), up[1]);
    assert.equal((await w[0]!.bus.switchPortStats(up[0]!)).rxFrames, 50);
    await w[0]!.bus.switchUnlink(up[0]!);
    await assert.rejects(w[0]!.bus.switchUnlink(up[0]!), (e: unknown) => e instanceof VirtioError && e.code === Code.NotFound);
    assert.equal(new Map(await w[0]!.bus.switchTable()).has(hex(mac(2))), false, 'the unlinked port forgot what it learned');
  } finally {
    await Promise.all(w.map((x) => x.close()));
  }
});
