// Status codes: the only error channel out of wasm (shared/STYLE.md "Error model").
// Non-negative return values are results (counts, flags); negative ones are these codes.
// src/errors.ts mirrors this table; test/status-sync.test.ts keeps the two equal.

/** The caller passed a malformed request or record (not the peer's fault; queue unchanged). */
export const STATUS_INVALID_ARG: i32 = -1;
/** The queue is broken by an earlier peer error; the stored code says which. */
export const STATUS_BROKEN: i32 = -2;
/** Split: an avail ring entry (chain head) is >= the queue size. */
export const STATUS_HEAD_OUT_OF_RANGE: i32 = -10;
/** A descriptor's `next` is outside its table (queue size, or indirect table length). */
export const STATUS_NEXT_OUT_OF_RANGE: i32 = -11;
/** A chain holds more descriptors than its table: a loop, or longer than the queue size. */
export const STATUS_CHAIN_TOO_LONG: i32 = -12;
/** An indirect table contains an INDIRECT descriptor (VIRTIO 1.3 §2.7.5.3.1). */
export const STATUS_INDIRECT_NESTED: i32 = -13;
/** An indirect descriptor is malformed: not negotiated, NEXT also set, or len not a non-zero multiple of 16. */
export const STATUS_INDIRECT_INVALID: i32 = -14;
/** A chain totals more than 2^32-1 bytes (VIRTIO 1.3 §2.7.5.2). */
export const STATUS_CHAIN_TOO_BIG: i32 = -15;
/** A device-readable descriptor follows a device-writable one (VIRTIO 1.3 §2.7.4.2). */
export const STATUS_WRITE_BEFORE_READ: i32 = -16;
/** A buffer or indirect table lies (partly) outside the device's address map, or lacks the permission. */
export const STATUS_ADDRESS_UNMAPPED: i32 = -17;
/** Split: avail->idx is more than the queue size ahead of the device (or ran backwards). */
export const STATUS_AVAIL_IDX_INVALID: i32 = -18;
/** Driver side: a used element's id is >= the queue size. */
export const STATUS_USED_ID_INVALID: i32 = -19;
/** Driver side: a used element names a buffer that is not in flight. */
export const STATUS_USED_ID_NOT_INFLIGHT: i32 = -20;
/** Driver side, split: used->idx is further ahead than the number of buffers in flight. */
export const STATUS_USED_IDX_INVALID: i32 = -21;
/** Packed: a buffer id in an available descriptor is >= the queue size. */
export const STATUS_BUFFER_ID_INVALID: i32 = -22;
/** A chain needs more segments than the device's segment array holds (over-fragmented). */
export const STATUS_TOO_MANY_SEGMENTS: i32 = -23;
