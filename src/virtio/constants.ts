// Spec constants in one place. Each cites its source: VIRTIO 1.3 (section) and the Linux uapi
// headers linux/virtio_config.h and linux/virtio_ring.h, whose names we keep so grep works.

// ── Feature bits (bit numbers) ────────────────────────────────────────────────────────────
/** linux/virtio_ring.h VIRTIO_RING_F_INDIRECT_DESC; VIRTIO 1.3 §6 "VIRTIO_F_INDIRECT_DESC (28)". */
export const VIRTIO_F_INDIRECT_DESC = 28;
/** linux/virtio_ring.h VIRTIO_RING_F_EVENT_IDX; VIRTIO 1.3 §6 "VIRTIO_F_EVENT_IDX (29)". */
export const VIRTIO_F_EVENT_IDX = 29;
/** linux/virtio_config.h VIRTIO_F_VERSION_1; VIRTIO 1.3 §6. */
export const VIRTIO_F_VERSION_1 = 32;
/** linux/virtio_config.h VIRTIO_F_ACCESS_PLATFORM; VIRTIO 1.3 §6. */
export const VIRTIO_F_ACCESS_PLATFORM = 33;
/** linux/virtio_config.h VIRTIO_F_RING_PACKED; VIRTIO 1.3 §6. */
export const VIRTIO_F_RING_PACKED = 34;
/** linux/virtio_config.h VIRTIO_F_IN_ORDER; VIRTIO 1.3 §6. */
export const VIRTIO_F_IN_ORDER = 35;

/** The feature mask with bit `n` set. */
export function featureBit(n: number): bigint {
  return 1n << BigInt(n);
}

/** True if `features` has bit `n`. */
export function hasFeature(features: bigint, n: number): boolean {
  return ((features >> BigInt(n)) & 1n) === 1n;
}

/** The ring features the data plane implements (both sides, both layouts). */
export const RING_FEATURES: bigint =
  featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_VERSION_1) |
  featureBit(VIRTIO_F_RING_PACKED) | featureBit(VIRTIO_F_IN_ORDER);

// ── Descriptor flags (linux/virtio_ring.h; VIRTIO 1.3 §2.7.5, §2.8.1) ──────────────────────
/** Buffer continues via next. */
export const VRING_DESC_F_NEXT = 1;
/** Device-writable buffer. */
export const VRING_DESC_F_WRITE = 2;
/** Buffer is a table of descriptors. */
export const VRING_DESC_F_INDIRECT = 4;
/** Packed: bit 7, the avail flag. */
export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
/** Packed: bit 15, the used flag. */
export const VRING_PACKED_DESC_F_USED = 1 << 15;

// ── Notification suppression (linux/virtio_ring.h; VIRTIO 1.3 §2.7.7, §2.7.10, §2.8.14) ──
/** used->flags: the device does not want kicks. */
export const VRING_USED_F_NO_NOTIFY = 1;
/** avail->flags: the driver does not want interrupts. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** Packed event suppression flags: always notify. */
export const VRING_PACKED_EVENT_FLAG_ENABLE = 0;
/** Packed event suppression flags: never notify. */
export const VRING_PACKED_EVENT_FLAG_DISABLE = 1;
/** Packed event suppression flags: notify at off_wrap (EVENT_IDX only). */
export const VRING_PACKED_EVENT_FLAG_DESC = 2;
/** Packed off_wrap: bit 15 is the wrap counter. */
export const VRING_PACKED_EVENT_F_WRAP_CTR = 15;

/** Largest queue size (VIRTIO 1.3 §2.7 / §2.8: Queue Size ≤ 32768). */
export const VIRTQUEUE_MAX_SIZE = 32768;
