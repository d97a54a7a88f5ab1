// Item 6: a request is refused before anything is gathered when its chain carries more than
// its type can legitimately use. A chain of ~500 descriptors each covering the whole RAM
// (≈ 4 GiB of readable bytes from a few KiB of ring) must cost nothing: DISCARD and
// WRITE_ZEROES are bounded by 16-byte segments × max_discard_seg, OUT by the disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_OUT, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET, type BlkBackend,
} from '../src/index.ts';
import { RawBlk, settle } from './helpers/blk-raw.ts';

const RAM = 8 << 20;
const WIDE = 509; // 16 + 509 × 8 MiB < 2^32: a legal chain (§2.7.5.2)

function device(withBackend: boolean) {
  const calls: string[] = [];
  const backend: BlkBackend | undefined = withBackend ? {
    capacity: 1 << 20,
    read: async (_s, len) => new Uint8Array(len),
    write: async () => void calls.push('write'),
    flush: async () => {},
    discard: async () => void calls.push('discard'),
    writeZeroes: async () => void calls.push('writeZeroes'),
  } : undefined;
  const r = new RawBlk({ backend, capacity: 64, ramSize: RAM, size: 256, queue: { indirectMax: 1024, maxSegs: 2048 } });
  return { r, calls };
}

for (const withBackend of [false, true]) {
  for (const type of [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_OUT]) {
    test(`${withBackend ? 'async backend' : 'RAM disk'}: type ${type} with ${WIDE} whole-RAM descriptors is IOERR without a gather`, async () => {
      const { r, calls } = device(withBackend);
      const hdr = r.hdr(type, 0);
      const status = r.buf(1);
      const wide = Array.from({ length: WIDE }, () => ({ addr: r.p.ramBase, len: RAM }));
      const t = r.send([{ addr: hdr, len: 16 }, ...wide, { addr: status, len: 1, w: true }]);
      await settle();
      assert.equal(r.reap().get(t), 1);
      assert.equal(r.p.u8[status], VIRTIO_BLK_S_IOERR);
      assert.deepEqual(calls, [], 'the backend was never asked');
      assert.equal(r.dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
      // The device goes on serving: a valid one-range discard.
      const h2 = r.hdr(VIRTIO_BLK_T_DISCARD, 0);
      const seg = r.buf(16);
      r.p.view.setBigUint64(seg, 2n, true);
      r.p.view.setUint32(seg + 8, 4, true);
      const s2 = r.buf(1);
      const t2 = r.send([{ addr: h2, len: 16 }, { addr: seg, len: 16 }, { addr: s2, len: 1, w: true }]);
      await settle();
      assert.equal(r.reap().get(t2), 1);
      assert.equal(r.p.u8[s2], VIRTIO_BLK_S_OK);
    });
  }
}
