// Migration between device workers of a blk device over shared storage (issue 9 §4): source
// and destination each open the same file (`backend: { file }`, resolved in their worker), so
// nothing is copied — the source's backend writes in flight are drained at suspend, its reads
// in flight move in the state and are read again by the destination, which serves the same file. A verified random read/write workload runs across ≥ 60
// migrations back and forth; no write is lost, duplicated or corrupted, and at the end the
// file's bytes on disk are the model. Mismatched storage is refused before the source stops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Platform, VirtioBinding, VirtioBlkDriver, migrateBetweenWorkers, VirtioError, Code, type RemoteVdpaDevice,
} from '../src/index.ts';
import { spawnDeviceWorker, type DeviceWorker } from '../src/node.ts';
import { blkWorkload, blockPattern, turn, slotDriver } from './helpers/migration.ts';

const BLOCK = 4096;
const BLOCKS = 64;
const DEPTH = 8;

async function rig(): Promise<{ p: Platform; w: [DeviceWorker, DeviceWorker]; dir: string; done: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'vdpa-wmig-'));
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w: [DeviceWorker, DeviceWorker] = [await spawnDeviceWorker({ platform: p }), await spawnDeviceWorker({ platform: p })];
  return { p, w, dir, done: async () => { await Promise.all(w.map((x) => x.close())); rmSync(dir, { recursive: true, force: true }); } };
}

const isPrecondition = (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition;

test('blk over one file: 60 migrations between two workers under a verified random workload, nothing copied, the file is the model', async () => {
  const { p, w, dir, done } = await rig();
  try {
    const file = join(dir, 'disk.img');
    let names = 0;
    const add = async (side: number, create = false): Promise<RemoteVdpaDevice> => {
      const name = `fblk${++names}`;
      await w[side]!.bus.devAdd('vdpasim_blk', name, { backend: create ? { file, size: BLOCKS * BLOCK } : { file } });
      return w[side]!.bus.openDevice(name);
    };
    let side = 0;
    let cur = await add(side, true);
    const { slot, drv } = slotDriver(p, cur, 64, VirtioBlkDriver);
    const work = blkWorkload(drv, { blocks: BLOCKS, depth: DEPTH, seed: 11, block: BLOCK });
    const { model, stats } = work;
    const N = Number(process.env.WMIGS ?? 60);
    let drained = 0;
    let recorded = 0;
    let withDrain = 0;
    let viaMailbox = 0;
    for (let m = 0; m < N; m++) {
      await turn();
      const other = 1 - side;
      const dst = await add(other);
      const rep = await migrateBetweenWorkers({ source: cur, destination: dst, slot });
      assert.equal(rep.storage, 'backend');
      assert.equal(rep.diskBytes, 0, 'a shared file is not copied');
      drained += rep.drained;
      recorded += rep.recorded;
      if (rep.drained > 0) withDrain++;
      // Two-stage: the delta moves either way; a suspend that found file requests out went by
      // the channel (the mailbox answered "would block"), every other one by the mailboxes.
      assert.equal(rep.moved, 'delta');
      if (rep.drained > 0) assert.equal(rep.mailbox, false, 'requests out at the file: suspended through the channel');
      else viaMailbox += rep.mailbox ? 1 : 0;
      await w[side]!.bus.devDel(cur.name); // the suspended source closes its handle on the file
      cur = dst;
      side = other;
    }
    await work.stop();
    assert.deepEqual(stats.errors, []);
    assert.equal(stats.inflight, 0);
    assert.ok(stats.writes > N && stats.reads > N, `workload ran (${stats.writes} writes, ${stats.reads} reads)`);
    // How many suspends found file requests in flight is a race with the worker's fs calls (a
    // few per run here): it is printed, not asserted. That a suspend finishes them before the
    // save is sim-core's suspendDrained, tested deterministically with a held backend in
    // test/migration-suspend.test.ts; here it shows as no lost or duplicated write.
    // Through the guest's ring, from the last destination …
    for (let b = 0; b < BLOCKS; b++) {
      const buf = new Uint8Array(BLOCK);
      await drv.read(b * 8, buf);
      assert.deepEqual(buf, blockPattern(b, model[b]!, BLOCK), `block ${b} through the ring`);
    }
    // … and the bytes on disk, read by this thread with no device in between.
    const onDisk = new Uint8Array(readFileSync(file));
    assert.equal(onDisk.length, BLOCKS * BLOCK);
    for (let b = 0; b < BLOCKS; b++) assert.deepEqual(onDisk.subarray(b * BLOCK, (b + 1) * BLOCK), blockPattern(b, model[b]!, BLOCK), `block ${b} on disk`);
    console.log(`# blk over a file between workers: ${N} migrations, ${stats.writes} writes, ${stats.reads} reads, ${drained} requests drained at ${withDrain} suspends, ${recorded} reads moved in flight, ${viaMailbox} downtimes through the mailboxes only`);
  } finally {
    await done();
  }
});

test('a RAM disk on one side and a file on the other, or two different files, are refused before the source stops', async () => {
  const { p, w, dir, done } = await rig();
  try {
    const a = join(dir, 'a.img');
    const b = join(dir, 'b.img');
    await w[0].bus.devAdd('vdpasim_blk', 'onfile', { backend: { file: a, size: 128 * 512 } });
    await w[1].bus.devAdd('vdpasim_blk', 'inram', { capacity: 128 });
    await w[1].bus.devAdd('vdpasim_blk', 'otherfile', { backend: { file: b, size: 128 * 512 } });
    await w[1].bus.devAdd('vdpasim_blk', 'samefile', { backend: { file: join(dir, '.', 'a.img') } });
    const src = await w[0].bus.openDevice('onfile');
    const inram = await w[1].bus.openDevice('inram');
    const other = await w[1].bus.openDevice('otherfile');
    const same = await w[1].bus.openDevice('samefile');
    const { slot, drv } = slotDriver(p, src, 64, VirtioBlkDriver);
    await drv.write(8, blockPattern(1, 1));
    for (const dst of [inram, other]) {
      await assert.rejects(migrateBetweenWorkers({ source: src, destination: dst, slot }), isPrecondition);
      assert.equal(slot.current, src);
      assert.equal(dst.getStatus(), 0, 'the destination was never loaded');
    }
    // And the other way round: a RAM disk cannot move onto a file.
    await w[0].bus.devAdd('vdpasim_blk', 'ram0', { capacity: 128 });
    const ram0 = await w[0].bus.openDevice('ram0');
    const b2 = new VirtioBinding(ram0, p, 64);
    const d2 = new VirtioBlkDriver(ram0, b2);
    b2.init(d2);
    await assert.rejects(migrateBetweenWorkers({ source: ram0, destination: same }), isPrecondition);
    await d2.write(0, blockPattern(0, 3)); // still running
    // The source ran on throughout; the same file by another path is the same storage.
    const buf = new Uint8Array(4096);
    await drv.read(8, buf);
    assert.deepEqual(buf, blockPattern(1, 1));
    const rep = await migrateBetweenWorkers({ source: src, destination: same, slot });
    assert.equal(rep.storage, 'backend');
    await drv.read(8, buf);
    assert.deepEqual(buf, blockPattern(1, 1));
  } finally {
    await done();
  }
});
