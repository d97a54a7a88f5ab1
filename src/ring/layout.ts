// Byte offsets of the queue state block and the batch records, mirroring assembly/ring/state.ts
// and assembly/ring/defs.ts. test/layout-sync.test.ts checks them against the AssemblyScript source.

/** Queue state block (QSB) field offsets, bytes. All fields are u32 unless noted. */
export const Q = {
  /** u32: queue size (num). */
  SIZE: 0,
  /** u32: {@link QF} bits. */
  FLAGS: 4,
  /** i32: 0, or the negative status that broke the queue. */
  STATUS: 8,
  /** u32: memory offset of the descriptor area. */
  DESC: 12,
  /** u32: memory offset of the avail ring (split) or the driver event suppression area (packed). */
  DRIVER: 16,
  /** u32: memory offset of the used ring (split) or the device event suppression area (packed). */
  DEVICE: 20,
  /** u32, device side: memory offset of the address translation table ({@link TLB} layout). */
  IOTLB: 24,
  /** u32, device: last_avail_idx; driver: avail idx shadow (split u16 / packed slot). */
  AVAIL: 28,
  /** u32, packed: the avail wrap counter (0 or 1). */
  AVAIL_WRAP: 32,
  /** u32, device: used idx; driver: last_used_idx (split u16 / packed slot). */
  USED: 36,
  /** u32, packed: the used wrap counter (0 or 1). */
  USED_WRAP: 40,
  /** u32, device: the used idx when it last decided to notify (valid with {@link QF}.SIG_VALID). */
  SIGNALLED: 44,
  /** u32, driver: added since the last kick decision; device: used since the last call decision. */
  PENDING: 48,
  /** u32, driver: head of the private free list (split descriptor / packed buffer id). */
  FREE_HEAD: 52,
  /** u32, driver: free descriptors (ring slots). */
  NUM_FREE: 56,
  /** u32, driver: memory offset of the per-descriptor state array ({@link REC}.DSTATE bytes each). */
  DSTATE: 60,
  /** u32, driver: memory offset of the indirect table pool (0: none). */
  INDIRECT: 64,
  /** u32, driver: descriptors per indirect table. */
  INDIRECT_MAX: 68,
  /** u64, driver: the IOVA of memory offset 0 (for its own indirect tables). */
  DMA_BASE: 72,
  /** u32, driver with IN_ORDER: id of the last buffer of a pending used batch (~0: none). */
  BATCH_ID: 80,
  /** u32, driver with IN_ORDER: that buffer's used length. */
  BATCH_LEN: 84,
  /** u32, driver with IN_ORDER: head (split) or id (packed) of the oldest buffer in flight. */
  NEXT_HEAD: 88,
  /** u32, driver: shadow of avail->flags (split) or of the driver event flags (packed). */
  EVENT_SHADOW: 92,
  /** u64: chains popped (device) or added (driver). */
  STAT_CHAINS: 96,
  /** u64: descriptors walked (device) or written (driver). */
  STAT_DESCS: 104,
  /** u64: used elements written (device) or reclaimed (driver). */
  STAT_USED: 112,
  /** u64: notifications decided: calls (device) or kicks (driver). */
  STAT_NOTIFY: 120,
  /** Driver: buffers added and not yet reclaimed (what used entries are validated against; not a statistic). */
  INFLIGHT: 128,
} as const;

/** Size of a queue state block, bytes. */
export const QSB_SIZE = 136;

/** Q.FLAGS bits. */
export const QF = {
  /** VIRTIO_F_RING_PACKED negotiated. */
  PACKED: 1,
  /** VIRTIO_F_EVENT_IDX negotiated. */
  EVENT_IDX: 2,
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  INDIRECT: 4,
  /** VIRTIO_F_IN_ORDER negotiated. */
  IN_ORDER: 8,
  /** Device: {@link Q}.SIGNALLED holds a value (vhost's signalled_used_valid). */
  SIG_VALID: 16,
  /** Driver: used-buffer notifications are disabled (virtqueue_disable_cb). */
  CB_OFF: 32,
} as const;

/** Record sizes, bytes (assembly/ring/defs.ts). */
export const REC = {
  /** Device chain record: id, ndesc, segStart, u16 nRead, u16 nWrite, readBytes, writeBytes, written, reserved. */
  CHAIN: 32,
  /** Device segment: addr (memory offset), len. */
  SEG: 8,
  /** Driver request: token, segStart, nSegs, reserved. */
  REQ: 16,
  /** Driver segment: addr lo, addr hi, len, flags (bit 0 writable). */
  DSEG: 16,
  /** Driver used output: token, len. */
  USED: 8,
  /** Driver private per-descriptor state: token, ndesc, next, inLen. */
  DSTATE: 16,
} as const;

/** IOTLB table layout: defined beside the table's owner (platform/iotlb.ts); re-exported here with the other layouts. */
export { TLB } from '../platform/iotlb.ts';

/** Byte sizes of the ring areas, VIRTIO 1.3 §2.7 / §2.8 (with the event-idx words always present). */
export function ringAreaSizes(size: number, packed: boolean): {
  /** Descriptor table (split) or descriptor ring (packed). */
  desc: number;
  /** Avail ring (split) or driver event suppression (packed). */
  driver: number;
  /** Used ring (split) or device event suppression (packed). */
  device: number;
} {
  // split: descriptor table 16·N, avail 6 + 2·N, used 6 + 8·N (§2.7, "Queue Size" table)
  // packed: descriptor ring 16·N, driver / device event suppression 4 bytes each (§2.8.10)
  return packed
    ? { desc: 16 * size, driver: 4, device: 4 }
    : { desc: 16 * size, driver: 6 + 2 * size, device: 6 + 8 * size };
}

/** Alignment of the ring areas: split 16/2/4 (linux/virtio_ring.h VRING_*_ALIGN_SIZE), packed 16/4/4 (§2.8.10.1). */
export function ringAreaAligns(packed: boolean): {
  /** Alignment of the descriptor area. */
  desc: number;
  /** Alignment of the driver area. */
  driver: number;
  /** Alignment of the device area. */
  device: number;
} {
  return packed ? { desc: 16, driver: 4, device: 4 } : { desc: 16, driver: 2, device: 4 };
}
