// A net device migrated back and forth between two device workers stays on one L2 segment
// (issue 9 §4: "net with traffic across the switch — frames lost only inside the suspend
// window and counted"). Host H is a vdpasim_net on this thread's switch; each worker's switch
// is linked to it by a SwitchLink (A — H — B, a tree). The guest G's device lives in worker A
// or B, its driver here, bound through a slot. After each migration G's driver answers the
// destination's ANNOUNCE with a RARP, and every switch learns G's new way. H→G frames sent
// outside the suspend windows all arrive, once and in order; those sent inside a window that
// are lost are counted from sequence numbers and equal what the devices and the links count
// (the suspended source's rx_drops_link_down, less the one RARP it also drops per migration,
// plus the links' full-ring drops). G→H loses nothing: what G sends while suspended waits in
// its ring for the destination.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, L2Switch, SwitchLink, SwitchLinkEnd, VirtioBinding, VirtioNetDriver, migrateBetweenWorkers, createVdpaSlot,
  type RemoteVdpaDevice,
} from '../src/index.ts';
import { spawnDeviceWorker, type DeviceWorker } from '../src/node.ts';
import { netDev, netDriver, NET_MIG_FEATURES } from './helpers/migration.ts';

const H = [2, 0, 0, 0, 0, 0x48];
const G = [2, 0, 0, 0, 0, 0x47];
const hex = (m: number[]) => m.map((x) => x.toString(16).padStart(2, '0')).join(':');
const DATA = 0x88b5;
const RARP = 0x8035;

function frame(dst: number[], src: number[], seq: number): Uint8Array {
  const f = new Uint8Array(128);
  f.set(dst, 0);
  f.set(src, 6);
  f.set([DATA >> 8, DATA & 0xff], 12);
  new DataView(f.buffer).setUint32(14, seq);
  for (let i = 18; i < f.length; i++) f[i] = (seq + i) & 0xff;
  return f;
}

/** The frame's sequence number if it is an intact data frame from `src`, else -1 (-2: corrupt). */
function seqOf(f: Uint8Array, src: number[]): number {
  if (f.length !== 128 || ((f[12]! << 8) | f[13]!) !== DATA || f.subarray(6, 12).some((b, i) => b !== src[i])) return -1;
  const seq = new DataView(f.buffer, f.byteOffset).getUint32(14);
  for (let i = 18; i < f.length; i++) if (f[i] !== ((seq + i) & 0xff)) return -2;
  return seq;
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const stat = async (d: RemoteVdpaDevice, q: number, name: string): Promise<number> =>
  d.getVendorVqStats(q).stats.find(([k]) => k === name)![1];

test('net between two workers on one segment: 20 migrations A↔B with H on the main thread; frames lost only in the suspend windows, counted', async () => {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 24 << 20 });
  const w: [DeviceWorker, DeviceWorker] = [await spawnDeviceWorker({ platform: p }), await spawnDeviceWorker({ platform: p })];
  const ends: SwitchLinkEnd[] = [];
  try {
    // H on this thread's switch, and one link to each worker's switch.
    const swH = new L2Switch();
    const devH = netDev(p, 1, H);
    const portH = swH.connect(devH);
    devH.attachPort((frames) => swH.input(portH, frames));
    const h = netDriver(p, devH, 'split', 256);
    const links = [SwitchLink.create(p), SwitchLink.create(p)];
    const up: number[] = [];
    for (let s = 0; s < 2; s++) {
      ends.push(SwitchLinkEnd.attach(swH, p, links[s]!.ends[0]));
      up.push(await w[s]!.bus.switchLink(links[s]!.ends[1]));
    }
    const toG: number[] = []; // H→G sequence numbers G received
    const toH: number[] = []; // G→H sequence numbers H received
    let corrupt = 0;
    let rarpsAtH = 0;
    h.drv.onFrame((f) => {
      const s = seqOf(f, G);
      if (s >= 0) toH.push(s);
      else if (s === -2) corrupt++;
      else if (((f[12]! << 8) | f[13]!) === RARP) rarpsAtH++;
    });

    let names = 0;
    const add = async (side: number): Promise<{ dev: RemoteVdpaDevice; port: number }> => {
      const name = `gnet${++names}`;
      await w[side]!.bus.devAdd('vdpasim_net', name, { mac: hex(G), deviceFeatures: NET_MIG_FEATURES });
      const port = await w[side]!.bus.switchConnect(name);
      return { dev: await w[side]!.bus.openDevice(name), port };
    };
    let side = 0;
    let cur = await add(side);
    const slot = createVdpaSlot(cur.dev);
    const binding = new VirtioBinding(slot.device, p, 256);
    const g = new VirtioNetDriver(slot.device, binding);
    binding.init(g);
    g.onFrame((f) => {
      const s = seqOf(f, H);
      if (s >= 0) toG.push(s);
      else if (s === -2) corrupt++;
    });

    let seqHG = 0;
    let seqGH = 0;
    const outside = new Set<number>(); // H→G frames sent outside every suspend window
    const windowSent: number[] = [];
    let lostCounted = 0; // what the devices and links say was lost
    // G speaks first, so the switches learn where G is.
    assert.ok(g.send(frame(H, G, seqGH++)));
    await until(() => toH.length === 1, 'G→H before the first migration');
    assert.equal(swH.table.get(hex(G)), ends[0]!.port);

    const M = Number(process.env.SEG_MIGS ?? 20);
    for (let m = 0; m < M; m++) {
      // Outside a window: traffic both ways, all of it delivered before the next migration.
      for (let i = 0; i < 6; i++) {
        const s = seqHG++;
        assert.ok(h.drv.send(frame(G, H, s)));
        outside.add(s);
        assert.ok(g.send(frame(H, G, seqGH++)));
      }
      await until(() => toG.filter((s) => outside.has(s)).length === outside.size && toH.length === seqGH, `traffic before migration ${m}`);

      const other = 1 - side;
      const dst = await add(other);
      const oldLink = links[side]!;
      const dropsBefore = await stat(cur.dev, 0, 'rx_drops_link_down');
      const fullBefore = oldLink.stats().forward.dropsFull + links[other]!.stats().forward.dropsFull;
      const announced = g.announcements;
      // The window opens: the migration starts, and H and G keep sending.
      const mig = migrateBetweenWorkers({ source: cur.dev, destination: dst.dev, slot });
      for (let i = 0; i < 3; i++) {
        const s = seqHG++;
        assert.ok(h.drv.send(frame(G, H, s)));
        windowSent.push(s);
        assert.ok(g.send(frame(H, G, seqGH++)));
      }
      const rep = await mig;
      assert.equal(rep.storage, null);
      // More H→G while the announcement travels: still inside the window (H sends to the old way until it learns).
      for (let i = 0; i < 2; i++) {
        const s = seqHG++;
        assert.ok(h.drv.send(frame(G, H, s)));
        windowSent.push(s);
      }
      // G's driver answers ANNOUNCE with a RARP; every switch learns G's new way.
      await until(() => g.announcements === announced + 1, `announcement after migration ${m}`);
      await until(() => swH.table.get(hex(G)) === ends[other]!.port, `H's switch learning G behind link ${other}`);
      await until(async () => new Map(await w[other]!.bus.switchTable()).get(hex(G)) === dst.port, `worker ${other}'s switch learning G's port`);
      await until(async () => new Map(await w[side]!.bus.switchTable()).get(hex(G)) === up[side], `worker ${side}'s switch learning G is behind its uplink`);
      // The window closes. What went the old way has reached the old switch (its ring is empty), so the
      // source's counters are final: read them before the source goes.
      await until(() => oldLink.stats().forward.usedBytes === 0, 'the old link drained');
      const drops = (await stat(cur.dev, 0, 'rx_drops_link_down')) - dropsBefore;
      const full = oldLink.stats().forward.dropsFull + links[other]!.stats().forward.dropsFull - fullBefore;
      for (const k of ['rx_drops_no_buffer', 'rx_drops_too_big', 'rx_drops_malformed']) assert.equal(await stat(cur.dev, 0, k), 0, k);
      lostCounted += drops - 1 + full; // the source also dropped the destination's RARP, flooded back to it
      await w[side]!.bus.devDel(cur.dev.name);
      cur = dst;
      side = other;
    }
    // Last traffic, then everything settles.
    for (let i = 0; i < 6; i++) {
      const s = seqHG++;
      assert.ok(h.drv.send(frame(G, H, s)));
      outside.add(s);
      assert.ok(g.send(frame(H, G, seqGH++)));
    }
    await until(() => toG.filter((s) => outside.has(s)).length === outside.size && toH.length === seqGH, 'the last traffic');

    assert.equal(corrupt, 0, 'no frame corrupted');
    // H→G: exactly once, in order; every frame outside the windows arrived; the lost ones were counted.
    for (let i = 1; i < toG.length; i++) assert.ok(toG[i]! > toG[i - 1]!, `H→G in order, no duplicate (${toG[i - 1]} then ${toG[i]})`);
    const got = new Set(toG);
    for (const s of outside) assert.ok(got.has(s), `H→G frame ${s} (outside the windows) arrived`);
    const lost = windowSent.filter((s) => !got.has(s)).length;
    assert.equal(lost, lostCounted, `lost in the windows (${lost} of ${windowSent.length}) = counted by the devices and links`);
    assert.equal(toG.length, seqHG - lost);
    // G→H: everything, once, in order (sent while suspended, it waited in G's ring).
    assert.deepEqual(toH, Array.from({ length: seqGH }, (_, i) => i));
    assert.equal(rarpsAtH, M, 'one RARP per migration reached H');
    for (const l of links) {
      const st = l.stats();
      assert.equal(st.forward.dropsOversize + st.backward.dropsOversize, 0);
    }
    console.log(`# segment: ${M} migrations; H→G ${toG.length} received, ${lost} of ${windowSent.length} sent inside windows lost (counted ${lostCounted}); G→H ${toH.length}`);
  } finally {
    for (const e of ends) e.close();
    await Promise.all(w.map((x) => x.close()));
  }
});
