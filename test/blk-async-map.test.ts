// Item 2: an asynchronous blk answer is written under the map in force when it arrives, not
// the one the buffers were translated with. Data segments no longer writable → IOERR in the
// status byte (written 1, nothing else touched); status byte no longer writable → the request
// cannot be answered: DEVICE_NEEDS_RESET, and the byte stays as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VIRTIO_BLK_T_IN, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_CONFIG_S_NEEDS_RESET, PERM_R, type BlkBackend,
} from '../src/index.ts';
import { RawBlk, settle, deferred } from './helpers/blk-raw.ts';

/** A backend whose reads wait until the test answers them. */
function slowBackend() {
  const reads: { sector: number; len: number; answer: ReturnType<typeof deferred<Uint8Array>> }[] = [];
  const backend: BlkBackend = {
    capacity: 64,
    read(sector, len) {
      const answer = deferred<Uint8Array>();
      reads.push({ sector, len, answer });
      return answer.promise;
    },
    write: async () => {},
    flush: async () => {},
  };
  return { backend, reads };
}

/** The identity map of the platform RAM minus [hole, hole + len). */
function mapWithout(r: RawBlk, hole: number, len: number) {
  const { ramBase, ramSize } = r.p;
  return [
    { iova: ramBase, size: hole - ramBase, addr: ramBase },
    { iova: hole + len, size: ramBase + ramSize - hole - len, addr: hole + len },
  ];
}

function setup() {
  const { backend, reads } = slowBackend();
  const r = new RawBlk({ backend });
  const hdr = r.hdr(VIRTIO_BLK_T_IN, 3);
  const data = r.buf(4096, 4096);
  const status = r.buf(4096, 4096);
  r.p.u8.fill(0xaa, data, data + 512);
  r.p.u8[status] = 0x77;
  const t = r.send([{ addr: hdr, len: 16 }, { addr: data, len: 512, w: true }, { addr: status, len: 1, w: true }]);
  assert.equal(reads.length, 1, 'the read reached the backend');
  return { r, reads, data, status, t };
}

test('data buffer unmapped while the backend reads: IOERR, written 1, the buffer untouched', async () => {
  const { r, reads, data, status, t } = setup();
  r.dev.setMap(0, mapWithout(r, data, 4096));
  reads[0]!.answer.resolve(new Uint8Array(512).fill(0x11));
  await settle();
  assert.equal(r.reap().get(t), 1);
  assert.equal(r.p.u8[status], VIRTIO_BLK_S_IOERR);
  assert.ok(r.p.u8.subarray(data, data + 512).every((b) => b === 0xaa), 'unmapped data untouched');
  assert.equal(r.dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
});

test('data buffer remapped read-only while the backend reads: IOERR, untouched', async () => {
  const { r, reads, data, status, t } = setup();
  r.dev.setMap(0, [...mapWithout(r, data, 4096), { iova: data, size: 4096, addr: data, perm: PERM_R }]);
  reads[0]!.answer.resolve(new Uint8Array(512).fill(0x11));
  await settle();
  assert.equal(r.reap().get(t), 1);
  assert.equal(r.p.u8[status], VIRTIO_BLK_S_IOERR);
  assert.equal(r.p.u8[data], 0xaa);
});

test('status byte unmapped while the backend reads: DEVICE_NEEDS_RESET, nothing written', async () => {
  const { r, reads, data, status } = setup();
  let resets = 0;
  r.dev.addEventListener('needs-reset', () => resets++);
  r.dev.setMap(0, mapWithout(r, status, 4096));
  reads[0]!.answer.resolve(new Uint8Array(512).fill(0x11));
  await settle();
  assert.equal(r.reap().size, 0, 'no used entry for an unanswerable request');
  assert.equal(r.p.u8[status], 0x77);
  assert.equal(r.p.u8[data], 0xaa);
  assert.ok(r.dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.equal(resets, 1);
});

test('a map change that keeps the buffers writable still delivers the data', async () => {
  const { r, reads, data, status, t } = setup();
  r.dev.setMap(0, mapWithout(r, status + 4096, 4096)); // the generation moves, our buffers stay
  reads[0]!.answer.resolve(new Uint8Array(512).fill(0x11));
  await settle();
  assert.equal(r.reap().get(t), 513);
  assert.equal(r.p.u8[status], VIRTIO_BLK_S_OK);
  assert.ok(r.p.u8.subarray(data, data + 512).every((b) => b === 0x11));
});
