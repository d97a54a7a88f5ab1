// The state block and record offsets in TypeScript (src/ring/layout.ts) must match the
// AssemblyScript source (assembly/ring/state.ts, assembly/mem.ts, assembly/ring/defs.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Q, QF, QSB_SIZE, REC, TLB } from '../src/index.ts';

function asConsts(file: string): Record<string, number> {
  const src = readFileSync(new URL(`../assembly/${file}`, import.meta.url), 'utf8');
  const out: Record<string, number> = {};
  for (const m of src.matchAll(/export const (\w+): u32 = ([^;]+);/g)) {
    const expr = m[2]!.replace(/\s/g, '');
    const v = /^\d+<<\d+$/.test(expr) ? Number(expr.split('<<')[0]) << Number(expr.split('<<')[1]) : Number(expr);
    if (!Number.isNaN(v)) out[m[1]!] = v;
  }
  return out;
}

test('queue state block offsets match assembly/ring/state.ts', () => {
  const as = asConsts('ring/state.ts');
  for (const [k, v] of Object.entries(Q)) assert.equal(as[`Q_${k}`], v, `Q_${k}`);
  assert.equal(as.QSB_SIZE, QSB_SIZE);
  for (const [k, v] of Object.entries(QF)) assert.equal(as[`Q_F_${k}`], v, `Q_F_${k}`);
  // Every Q_ offset in the source is mirrored.
  const asQ = Object.keys(as).filter((k) => /^Q_[A-Z_]+$/.test(k) && !k.startsWith('Q_F_'));
  assert.deepEqual(asQ.map((k) => k.slice(2)).sort(), Object.keys(Q).sort());
});

test('record sizes match assembly/ring/defs.ts and the IOTLB layout matches assembly/mem.ts', () => {
  const defs = asConsts('ring/defs.ts');
  assert.equal(defs.CHAIN_REC, REC.CHAIN);
  assert.equal(defs.SEG_REC, REC.SEG);
  assert.equal(defs.REQ_REC, REC.REQ);
  assert.equal(defs.DSEG_REC, REC.DSEG);
  assert.equal(defs.USED_REC, REC.USED);
  assert.equal(defs.DSTATE_REC, REC.DSTATE);
  const mem = asConsts('mem.ts');
  assert.equal(mem.TLB_HDR, TLB.HDR);
  assert.equal(mem.TLB_ENT, TLB.ENT);
});

test('ring constants match linux/virtio_ring.h', () => {
  const defs = asConsts('ring/defs.ts');
  // linux/virtio_ring.h: VRING_DESC_F_NEXT 1, WRITE 2, INDIRECT 4, PACKED AVAIL bit 7, USED bit 15.
  assert.equal(defs.VRING_DESC_F_NEXT, 1);
  assert.equal(defs.VRING_DESC_F_WRITE, 2);
  assert.equal(defs.VRING_DESC_F_INDIRECT, 4);
  assert.equal(defs.VRING_PACKED_DESC_F_AVAIL, 1 << 7);
  assert.equal(defs.VRING_PACKED_DESC_F_USED, 1 << 15);
  assert.equal(defs.VRING_PACKED_EVENT_FLAG_DESC, 2);
});
