// vdpasim_net live migration with traffic across an L2 switch: frames are lost only at the
// suspended source and counted there; the destination announces the guest (RARP +
// VIRTIO_NET_CTRL_ANNOUNCE_ACK) and the switch learns the MAC's new port; the full control
// state is identical after every migration; split and packed rings; a migration the
// destination refuses leaves the source running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, L2Switch, migrate, VirtioError, Code, type VdpaSimNet } from '../src/index.ts';
import { netDev, netDriver, turn, type Layout } from './helpers/migration.ts';

const A = [2, 0, 0, 0, 0, 0xa];
const B = [2, 0, 0, 0, 0, 0xb];
const hex = (m: number[]) => m.map((x) => x.toString(16).padStart(2, '0')).join(':');

/** A frame dst ← src carrying a sequence number. */
function frame(dst: number[], src: number[], seq: number): Uint8Array {
  const f = new Uint8Array(128);
  f.set(dst, 0);
  f.set(src, 6);
  f.set([0x88, 0xb5], 12);
  new DataView(f.buffer).setUint32(14, seq);
  return f;
}

async function rig(layout: Layout) {
  const p = Platform.create({ ramSize: 16 << 20 });
  const sw = new L2Switch();
  const attach = (dev: VdpaSimNet): number => {
    const port = sw.connect(dev);
    dev.attachPort((frames) => sw.input(port, frames));
    return port;
  };
  const devA = netDev(p, 4, A);
  const portA = attach(devA);
  const a = netDriver(p, devA, layout, 128);
  const devB = netDev(p, 1, B);
  attach(devB);
  const b = netDriver(p, devB, layout, 128);
  const gotA: Uint8Array[] = [];
  const gotB: Uint8Array[] = [];
  a.drv.onFrame((f) => gotA.push(f));
  b.drv.onFrame((f) => gotB.push(f));
  // Full control state on A: rx mode bits, MAC tables, VLANs, 4 queue pairs.
  await a.drv.setRxMode({ promisc: false, allmulti: true, alluni: false, nomulti: false, nouni: false, nobcast: false });
  await a.drv.setMacTable(Array.from({ length: 64 }, (_, i) => hex([2, 1, 0, 0, 0, i])), Array.from({ length: 16 }, (_, i) => hex([1, 0, 0x5e, 0, 0, i])));
  for (let v = 1; v <= 200; v++) await a.drv.addVlan(v * 7);
  await a.drv.setQueuePairs(4);
  return { p, sw, attach, devA, portA, a, b, gotA, gotB };
}

for (const layout of ['split', 'packed'] as const) {
  test(`${layout}: 40 net migrations with traffic; losses only at the suspended source; announce moves the MAC's port`, async () => {
    const r = await rig(layout);
    const control = r.devA.saveNetState();
    let src = r.devA;
    let port = r.portA;
    let toA = 0;
    let toB = 0;
    let seq = 0;
    let lost = 0;
    const M = 40;
    for (let m = 0; m < M; m++) {
      for (let i = 0; i < 4; i++) {
        assert.ok(r.b.drv.send(frame(A, B, seq++)));
        assert.ok(r.a.drv.send(frame(B, A, seq++)));
        toA++;
        toB++;
      }
      await turn();
      const dst = netDev(r.p, 4, [2, 0, 0, 0, 0, 0x77]);
      let newPort = -1;
      const dropsBefore = src.pairStats.reduce((s, st) => s + st.dropsLinkDown, 0);
      await migrate({
        source: src, destination: dst,
        switchover: (d) => {
          // Inside the suspend window: B's frames reach the old port, whose device is suspended.
          for (let i = 0; i < 3; i++) { r.b.drv.send(frame(A, B, seq++)); toA++; }
          newPort = r.attach(d);
          r.a.slot.switchTo(d);
          // A's driver sends meanwhile: the frames wait in the ring for the destination.
          for (let i = 0; i < 2; i++) { r.a.drv.send(frame(B, A, seq++)); toB++; }
        },
      });
      lost += src.pairStats.reduce((s, st) => s + st.dropsLinkDown, 0) - dropsBefore;
      // The driver answers VIRTIO_NET_S_ANNOUNCE: RARP from the new port, then ANNOUNCE_ACK.
      for (let i = 0; i < 50 && r.a.drv.announcements < m + 1; i++) await turn();
      assert.equal(r.a.drv.announcements, m + 1);
      assert.equal(dst.announcing, false, 'ANNOUNCE_ACK cleared VIRTIO_NET_S_ANNOUNCE');
      assert.equal(r.sw.table.get(hex(A)), newPort, 'the switch learnt the MAC on its new port');
      r.sw.disconnect(port);
      src.destroy();
      src = dst;
      port = newPort;
      assert.deepEqual(dst.saveNetState(), control, 'control state identical after migration');
    }
    await turn();
    await turn();
    // Every B→A frame was received or dropped at a suspended source — exactly those sent in
    // the suspend windows — and no other drop cause occurred anywhere.
    // (The source also drops one frame per migration that is not B's: the destination's own
    // RARP broadcast, flooded to the old port before it is disconnected.)
    assert.equal(lost, 3 * M + M);
    assert.equal(r.gotA.length + 3 * M, toA);
    const seqs = r.gotA.map((f) => new DataView(f.buffer, f.byteOffset).getUint32(14));
    assert.equal(new Set(seqs).size, seqs.length, 'no frame duplicated');
    const dataToB = r.gotB.filter((f) => f[12] === 0x88);
    assert.equal(dataToB.length, toB, 'A→B: nothing lost, frames sent while suspended went out after resume');
    assert.equal(r.gotB.length - dataToB.length, M, 'one RARP per migration');
    for (const st of src.pairStats) assert.equal(st.dropsNoBuffer + st.dropsTooBig + st.dropsMalformed, 0);
  });
}

test('a migration the destination refuses leaves the source running', async () => {
  const r = await rig('split');
  const before = r.devA.saveNetState();
  const dst = netDev(r.p, 2, A); // 2 queue pairs: cannot take a 4-pair device's state
  await assert.rejects(
    migrate({ source: r.devA, destination: dst, switchover: () => assert.fail('no switchover') }),
    (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition,
  );
  assert.equal(r.devA.running, true);
  assert.equal(dst.getStatus(), 0);
  assert.deepEqual(r.devA.saveNetState(), before);
  r.b.drv.send(frame(A, B, 1));
  r.a.drv.send(frame(B, A, 2));
  await turn();
  assert.equal(r.gotA.length, 1);
  assert.equal(r.gotB.length, 1);
});
