// vdpasim_blk live migration under a verified random read/write workload: 1000 migrations in
// one thread per ring layout with requests in flight at every switchover — zero lost,
// duplicated or corrupted writes (every read checked against a model, the backend ran exactly
// the driver's operations plus, once more at the destination, those that moved in flight, the
// whole disk checked at the end). Requests in flight move as records (the default: a write
// re-submitted at the destination completes once the source's copy has landed); a shorter run
// drains everything instead (inflight: 'drain').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, migrate, type VdpaSimBlk } from '../src/index.ts';
import { blkDev, blkDriver, blkWorkload, blockPattern, SharedDisk, turn, type Layout } from './helpers/migration.ts';

const BLOCK = 4096;
const BLOCKS = 128;
const DEPTH = 16;

const pattern = (b: number, tag: number): Uint8Array => blockPattern(b, tag, BLOCK);

async function run(layout: Layout, migrations: number, inflight: 'record' | 'drain' = 'record'): Promise<void> {
  const p = Platform.create({ ramSize: 8 << 20 });
  const disk = new SharedDisk(BLOCKS * (BLOCK / 512));
  let cur: VdpaSimBlk = blkDev(p, disk);
  const { slot, drv } = blkDriver(p, cur, layout, 64);
  const work = blkWorkload(drv, { blocks: BLOCKS, depth: DEPTH, seed: layout === 'split' ? 7 : 11, block: BLOCK });
  const { model, stats } = work;
  let withInflight = 0;
  let recorded = 0;
  let recordedWrites = 0;
  const downtime: number[] = [];
  for (let m = 0; m < migrations; m++) {
    await turn();
    const dst = blkDev(p, disk);
    if (cur.inFlight > 0) withInflight++;
    const rep = await migrate({ source: cur, destination: dst, inflight, switchover: (d) => slot.switchTo(d) });
    downtime.push(rep.downtimeMs);
    recorded += rep.recorded;
    recordedWrites += rep.recordedWrites;
    // The destination re-submitted the reads that moved when it resumed (their answers come in a later turn).
    assert.ok(dst.inFlight >= rep.recorded, `${dst.inFlight} in flight on the destination, ${rep.recorded} moved`);
    cur.destroy();
    cur = dst;
  }
  await work.stop();
  assert.deepEqual(stats.errors, []);
  assert.equal(stats.inflight, 0);
  assert.ok(withInflight > migrations / 2, `requests were in flight at most switchovers (${withInflight}/${migrations})`);
  // No write lost or duplicated: the backend ran each of the driver's operations once, plus
  // once more for each that moved in flight (the source's copy, whose answer it dropped, and
  // the destination's); the disk check below shows no late copy landed over a newer write.
  assert.equal(disk.ops.write, stats.writes + recordedWrites);
  assert.equal(disk.ops.read, stats.reads + recorded - recordedWrites);
  if (inflight === 'record') {
    assert.ok(recorded > migrations / 4, `requests moved in flight (${recorded} over ${migrations} migrations)`);
    assert.ok(recordedWrites > 0 && recordedWrites < recorded, `writes and reads both moved (${recordedWrites} of ${recorded})`);
  } else assert.equal(recorded, 0);
  // No write corrupted or lost: the disk is the model.
  for (let b = 0; b < BLOCKS; b++) assert.deepEqual(disk.data.subarray(b * BLOCK, (b + 1) * BLOCK), pattern(b, model[b]!), `block ${b}`);
  downtime.sort((a, c) => a - c);
  console.log(`# ${layout} (${inflight}): ${migrations} migrations, ${stats.writes} writes, ${stats.reads} reads, ${recorded} requests moved in flight (${recordedWrites} writes); downtime p50 ${downtime[migrations >> 1]!.toFixed(3)} ms`);
}

test('split: 1000 blk migrations under a verified random workload', () => run('split', Number(process.env.MIGS ?? 1000)));
test('packed: 1000 blk migrations under a verified random workload', () => run('packed', Number(process.env.MIGS ?? 1000)));
test('split: 300 blk migrations draining everything in flight (inflight: drain)', () => run('split', Math.max(1, Math.round(Number(process.env.MIGS ?? 1000) * 0.3)), 'drain'));
