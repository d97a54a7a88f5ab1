// Spec constants in src/virtio/constants.ts agree with the Linux uapi headers where installed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as C from '../src/index.ts';

function defines(file: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of readFileSync(file, 'utf8').matchAll(/#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b/g)) out.set(m[1]!, Number(m[2]));
  return out;
}

const ring = '/usr/include/linux/virtio_ring.h';
const config = '/usr/include/linux/virtio_config.h';

test('ring constants match linux/virtio_ring.h', { skip: !existsSync(ring) && 'no kernel headers here' }, () => {
  const d = defines(ring);
  assert.equal(C.VRING_DESC_F_NEXT, d.get('VRING_DESC_F_NEXT'));
  assert.equal(C.VRING_DESC_F_WRITE, d.get('VRING_DESC_F_WRITE'));
  assert.equal(C.VRING_DESC_F_INDIRECT, d.get('VRING_DESC_F_INDIRECT'));
  assert.equal(C.VRING_PACKED_DESC_F_AVAIL, 1 << d.get('VRING_PACKED_DESC_F_AVAIL')!);
  assert.equal(C.VRING_PACKED_DESC_F_USED, 1 << d.get('VRING_PACKED_DESC_F_USED')!);
  assert.equal(C.VRING_USED_F_NO_NOTIFY, d.get('VRING_USED_F_NO_NOTIFY'));
  assert.equal(C.VRING_AVAIL_F_NO_INTERRUPT, d.get('VRING_AVAIL_F_NO_INTERRUPT'));
  assert.equal(C.VRING_PACKED_EVENT_FLAG_ENABLE, d.get('VRING_PACKED_EVENT_FLAG_ENABLE'));
  assert.equal(C.VRING_PACKED_EVENT_FLAG_DISABLE, d.get('VRING_PACKED_EVENT_FLAG_DISABLE'));
  assert.equal(C.VRING_PACKED_EVENT_FLAG_DESC, d.get('VRING_PACKED_EVENT_FLAG_DESC'));
  assert.equal(C.VRING_PACKED_EVENT_F_WRAP_CTR, d.get('VRING_PACKED_EVENT_F_WRAP_CTR'));
  assert.equal(C.VIRTIO_F_INDIRECT_DESC, d.get('VIRTIO_RING_F_INDIRECT_DESC'));
  assert.equal(C.VIRTIO_F_EVENT_IDX, d.get('VIRTIO_RING_F_EVENT_IDX'));
});

test('feature bits match linux/virtio_config.h', { skip: !existsSync(config) && 'no kernel headers here' }, () => {
  const d = defines(config);
  for (const name of ['VIRTIO_F_VERSION_1', 'VIRTIO_F_ACCESS_PLATFORM', 'VIRTIO_F_RING_PACKED', 'VIRTIO_F_IN_ORDER'] as const) {
    assert.equal(C[name], d.get(name), name);
  }
});

test('ringFeatures sets exactly the requested bits plus VERSION_1', () => {
  assert.equal(C.ringFeatures(), 1n << 32n);
  assert.equal(C.ringFeatures({ packed: true, eventIdx: true, indirect: true, inOrder: true }), C.RING_FEATURES);
  assert.equal(C.hasFeature(C.ringFeatures({ inOrder: true }), C.VIRTIO_F_IN_ORDER), true);
  assert.equal(C.hasFeature(C.ringFeatures({ inOrder: true }), C.VIRTIO_F_RING_PACKED), false);
});
