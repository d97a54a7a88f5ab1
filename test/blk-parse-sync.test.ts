// One parser: the blk_parse record layout, flag bits and limits in TypeScript
// (src/devices/blk.ts) must match assembly/dev/blk.ts, and the config space must offer the
// limits the wasm parser enforces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BLK_FLAG, BLK_LIMITS, BLK_REQ, VIRTIO_BLK_CFG, RING_EXPORT_NAMES, Platform, VdpaSimBlk } from '../src/index.ts';

function asConsts(): Record<string, number> {
  const src = readFileSync(new URL('../assembly/dev/blk.ts', import.meta.url), 'utf8');
  const out: Record<string, number> = {};
  for (const m of src.matchAll(/export const (\w+): u32 = ([^;]+);/g)) {
    // Only sums/products of integer literals appear here.
    if (/^[\d\s+*]+$/.test(m[2]!)) out[m[1]!] = Function(`return (${m[2]})`)() as number;
  }
  return out;
}

test('blk flag bits, limits and record layout match assembly/dev/blk.ts', () => {
  const as = asConsts();
  for (const [k, v] of Object.entries(BLK_FLAG)) assert.equal(as[`BLK_F_${k}`], v, `BLK_F_${k}`);
  for (const [k, v] of Object.entries(BLK_LIMITS)) assert.equal(as[`BLK_${k}`], v, `BLK_${k}`);
  const names: Record<string, string> = { REC: 'BLK_REQ_REC', RANGE_REC: 'BLK_RANGE_REC', SCRATCH: 'BLK_SCRATCH' };
  for (const [k, v] of Object.entries(BLK_REQ)) {
    const n = names[k] ?? (k.startsWith('ACT_') ? `BLK_${k}` : `BLK_R_${k}`);
    assert.equal(as[n], v, n);
  }
  // Every BLK_ constant of the source is mirrored.
  const mirrored = Object.keys(BLK_FLAG).length + Object.keys(BLK_LIMITS).length + Object.keys(BLK_REQ).length;
  assert.equal(Object.keys(as).filter((k) => k.startsWith('BLK_')).length, mirrored);
  assert.ok(RING_EXPORT_NAMES.includes('blk_parse'));
});

test('the config space offers the discard / write-zeroes limits wasm enforces', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 20 });
  const dev = new VdpaSimBlk(p, { name: 'b', capacity: 8 });
  const v = new DataView(dev.getConfig(0, VIRTIO_BLK_CFG.SIZE).buffer);
  assert.equal(v.getUint32(VIRTIO_BLK_CFG.MAX_DISCARD_SECTORS, true), BLK_LIMITS.MAX_DISCARD_SECTORS);
  assert.equal(v.getUint32(VIRTIO_BLK_CFG.MAX_DISCARD_SEG, true), BLK_LIMITS.MAX_DISCARD_SEG);
  assert.equal(v.getUint32(VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SECTORS, true), BLK_LIMITS.MAX_DISCARD_SECTORS);
  assert.equal(v.getUint32(VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SEG, true), BLK_LIMITS.MAX_DISCARD_SEG);
  // size_max × seg_max bounds every IN / OUT request in wasm.
  assert.equal(v.getUint32(VIRTIO_BLK_CFG.SIZE_MAX, true), BLK_LIMITS.SIZE_MAX);
  assert.equal(v.getUint32(VIRTIO_BLK_CFG.SEG_MAX, true), Math.min(BLK_LIMITS.SEG_MAX, dev.getVqNumMax() - 2));
});
