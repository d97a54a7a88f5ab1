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

/**
 * VIRTIO 1.4 §6 "VIRTIO_F_SUSPEND (43)": the driver may suspend the device with the SUSPEND
 * status bit (§2.1 Device Status Field, §3.4 Device Suspend).
 */
export const VIRTIO_F_SUSPEND = 43;

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

// ── Device status (linux/virtio_config.h VIRTIO_CONFIG_S_*; VIRTIO 1.3 §2.1) ─────────────
/** The guest OS has noticed the device. */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
/** The guest OS knows how to drive the device. */
export const VIRTIO_CONFIG_S_DRIVER = 2;
/** The driver is set up and ready to drive the device. */
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
/** The driver has acknowledged the features it understands; negotiation is complete. */
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
/**
 * VIRTIO 1.4 §2.1: SUSPEND (16). The driver sets it (after DRIVER_OK, with VIRTIO_F_SUSPEND) to
 * suspend the device; the device presents it with DRIVER_OK clear once suspended.
 */
export const VIRTIO_CONFIG_S_SUSPEND = 0x10;
/** The device has experienced an error from which it cannot recover. */
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
/** Something went wrong in the guest; it has given up on the device. */
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// ── Device IDs (linux/virtio_ids.h; VIRTIO 1.3 §5) ─────────────────────────────────────────
/** virtio-net. */
export const VIRTIO_ID_NET = 1;
/** virtio-blk. */
export const VIRTIO_ID_BLOCK = 2;

// ── virtio-net feature bits (linux/virtio_net.h; VIRTIO 1.3 §5.1.3) ────────────────────────
/** Device handles packets with partial checksum. */
export const VIRTIO_NET_F_CSUM = 0;
/** Device reports its maximum MTU in config. */
export const VIRTIO_NET_F_MTU = 3;
/** Device has a MAC address in config. */
export const VIRTIO_NET_F_MAC = 5;
/** Driver can merge receive buffers. */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** virtio_net_config.status is available. */
export const VIRTIO_NET_F_STATUS = 16;
/** Control virtqueue is available. */
export const VIRTIO_NET_F_CTRL_VQ = 17;
/** Control channel RX mode support. */
export const VIRTIO_NET_F_CTRL_RX = 18;
/** Control channel VLAN filtering. */
export const VIRTIO_NET_F_CTRL_VLAN = 19;
/** Extra RX mode control support (ALLUNI, NOMULTI, NOUNI, NOBCAST). */
export const VIRTIO_NET_F_CTRL_RX_EXTRA = 20;
/** Driver can send gratuitous packets (ANNOUNCE). */
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
/** Multiqueue with automatic receive steering. */
export const VIRTIO_NET_F_MQ = 22;
/** Set MAC address through the control channel. */
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;
/** virtio_net_config.status: link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** linux/virtio_net.h VIRTIO_NET_S_ANNOUNCE; VIRTIO 1.3 §5.1.4: the driver should announce itself (GUEST_ANNOUNCE). */
export const VIRTIO_NET_S_ANNOUNCE = 2;

// ── virtio-blk feature bits (linux/virtio_blk.h; VIRTIO 1.3 §5.2.3) ────────────────────────
/** Maximum size of any single segment is in size_max. */
export const VIRTIO_BLK_F_SIZE_MAX = 1;
/** Maximum number of segments in a request is in seg_max. */
export const VIRTIO_BLK_F_SEG_MAX = 2;
/** Device is read-only. */
export const VIRTIO_BLK_F_RO = 5;
/** Block size of disk is in blk_size. */
export const VIRTIO_BLK_F_BLK_SIZE = 6;
/** Cache flush command support. */
export const VIRTIO_BLK_F_FLUSH = 9;
/** Device supports multiqueue. */
export const VIRTIO_BLK_F_MQ = 12;
/** Device can support discard command. */
export const VIRTIO_BLK_F_DISCARD = 13;
/** Device can support write zeroes command. */
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;
