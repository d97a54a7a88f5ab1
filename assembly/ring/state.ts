// The queue state block (QSB): every word of a virtqueue's state, at an offset TypeScript
// chooses in private memory. Nothing lives in wasm globals, so any number of instances can
// share one memory, and saving a queue for migration is reading these bytes (DESIGN.md).
// src/ring/layout.ts mirrors these offsets; test/layout-sync.test.ts compares the two.

// @ts-ignore: decorator
@inline export const Q_SIZE: u32 = 0;        // queue size (num)
// @ts-ignore: decorator
@inline export const Q_FLAGS: u32 = 4;       // Q_F_* below
// @ts-ignore: decorator
@inline export const Q_STATUS: u32 = 8;      // 0, or the negative status that broke the queue
// @ts-ignore: decorator
@inline export const Q_DESC: u32 = 12;       // memory offset of the descriptor area
// @ts-ignore: decorator
@inline export const Q_DRIVER: u32 = 16;     // avail ring (split) / driver event suppression (packed)
// @ts-ignore: decorator
@inline export const Q_DEVICE: u32 = 20;     // used ring (split) / device event suppression (packed)
// @ts-ignore: decorator
@inline export const Q_IOTLB: u32 = 24;      // device side: address translation table (mem.ts)
// @ts-ignore: decorator
@inline export const Q_AVAIL: u32 = 28;      // device: last_avail_idx; driver: avail idx shadow (split u16 / packed slot)
// @ts-ignore: decorator
@inline export const Q_AVAIL_WRAP: u32 = 32; // packed: avail wrap counter (0/1)
// @ts-ignore: decorator
@inline export const Q_USED: u32 = 36;       // device: used idx; driver: last_used_idx (split u16 / packed slot)
// @ts-ignore: decorator
@inline export const Q_USED_WRAP: u32 = 40;  // packed: used wrap counter (0/1)
// @ts-ignore: decorator
@inline export const Q_SIGNALLED: u32 = 44;  // device: used idx when we last decided to notify
// @ts-ignore: decorator
@inline export const Q_PENDING: u32 = 48;    // driver: added since the last kick decision (split buffers / packed slots); device: used since the last call decision (split elements / packed slots)
// @ts-ignore: decorator
@inline export const Q_FREE_HEAD: u32 = 52;  // driver: head of the private free list (split desc / packed id)
// @ts-ignore: decorator
@inline export const Q_NUM_FREE: u32 = 56;   // driver: free descriptors (ring slots)
// @ts-ignore: decorator
@inline export const Q_DSTATE: u32 = 60;     // driver: private per-descriptor state array (DSTATE_REC each)
// @ts-ignore: decorator
@inline export const Q_INDIRECT: u32 = 64;   // driver: indirect table pool, memory offset (0 = none)
// @ts-ignore: decorator
@inline export const Q_INDIRECT_MAX: u32 = 68; // driver: descriptors per indirect table
// @ts-ignore: decorator
@inline export const Q_DMA_BASE: u32 = 72;   // driver: u64 IOVA of memory offset 0 (for its own indirect tables)
// @ts-ignore: decorator
@inline export const Q_BATCH_ID: u32 = 80;   // driver, in-order: id of the last buffer of a pending used batch (~0 = none)
// @ts-ignore: decorator
@inline export const Q_BATCH_LEN: u32 = 84;  // driver, in-order: its used length
// @ts-ignore: decorator
@inline export const Q_NEXT_HEAD: u32 = 88;  // driver, in-order: head (split) / id (packed) of the oldest buffer in flight
// @ts-ignore: decorator
@inline export const Q_EVENT_SHADOW: u32 = 92; // driver: avail->flags shadow (split) / driver event flags shadow (packed)
// @ts-ignore: decorator
@inline export const Q_STAT_CHAINS: u32 = 96;  // u64: chains popped (device) / added (driver)
// @ts-ignore: decorator
@inline export const Q_STAT_DESCS: u32 = 104;  // u64: descriptors walked (device) / written (driver)
// @ts-ignore: decorator
@inline export const Q_STAT_USED: u32 = 112;   // u64: used elements written (device) / buffers reclaimed (driver)
// @ts-ignore: decorator
@inline export const Q_STAT_NOTIFY: u32 = 120; // u64: notifications decided: calls (device) / kicks (driver)
// @ts-ignore: decorator
@inline export const Q_INFLIGHT: u32 = 128;    // driver: buffers added and not yet reclaimed (validates used entries; not a statistic)
// @ts-ignore: decorator
@inline export const QSB_SIZE: u32 = 136;

// Q_FLAGS bits
// @ts-ignore: decorator
@inline export const Q_F_PACKED: u32 = 1;      // VIRTIO_F_RING_PACKED negotiated
// @ts-ignore: decorator
@inline export const Q_F_EVENT_IDX: u32 = 2;   // VIRTIO_F_EVENT_IDX (VIRTIO_RING_F_EVENT_IDX) negotiated
// @ts-ignore: decorator
@inline export const Q_F_INDIRECT: u32 = 4;    // VIRTIO_F_INDIRECT_DESC negotiated
// @ts-ignore: decorator
@inline export const Q_F_IN_ORDER: u32 = 8;    // VIRTIO_F_IN_ORDER negotiated
// @ts-ignore: decorator
@inline export const Q_F_SIG_VALID: u32 = 16;  // device: Q_SIGNALLED holds a value (vhost signalled_used_valid)
// @ts-ignore: decorator
@inline export const Q_F_CB_OFF: u32 = 32;     // driver: callbacks disabled

/** Marks the queue broken with `code` (sticky) and returns it. */
export function fail(q: usize, code: i32): i32 {
  store<i32>(q, code, Q_STATUS);
  return code;
}

// @ts-ignore: decorator
@inline export function qflags(q: usize): u32 { return load<u32>(q, Q_FLAGS); }

// @ts-ignore: decorator
@inline export function addStat(q: usize, off: u32, n: u64): void {
  store<u64>(q + off, load<u64>(q + off) + n);
}

/** vring_need_event (linux/virtio_ring.h): notify iff event_idx lies in [old, new) modulo 2^16. */
// @ts-ignore: decorator
@inline export function needEvent(event: u32, newIdx: u32, old: u32): bool {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}
