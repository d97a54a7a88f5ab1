// Byte offsets of the queue state block and the batch records, mirroring assembly/ring/state.ts
// and assembly/ring/defs.ts. test/layout-sync.test.ts checks them against the AssemblyScript source.

/** Queue state block (QSB) field offsets, bytes. All fields are u32 unless noted. */
export const Q = {
  SIZE: 0,
  FLAGS: 4,
  STATUS: 8,
  DESC: 12,
  DRIVER: 16,
  DEVICE: 20,
  IOTLB: 24,
  AVAIL: 28,
  AVAIL_WRAP: 32,
  USED: 36,
  USED_WRAP: 40,
  SIGNALLED: 44,
  PENDING: 48,
  FREE_HEAD: 52,
  NUM_FREE: 56,
  DSTATE: 60,
  INDIRECT: 64,
  INDIRECT_MAX: 68,
  /** u64 */
  DMA_BASE: 72,
  BATCH_ID: 80,
  BATCH_LEN: 84,
  NEXT_HEAD: 88,
  EVENT_SHADOW: 92,
  /** u64 */
  STAT_CHAINS: 96,
  /** u64 */
  STAT_DESCS: 104,
  /** u64 */
  STAT_USED: 112,
  /** u64 */
  STAT_NOTIFY: 120,
  /** Driver: buffers added and not yet reclaimed (what used entries are validated against; not a statistic). */
  INFLIGHT: 128,
} as const;

/** Size of a queue state block, bytes. */
export const QSB_SIZE = 136;

/** Q.FLAGS bits. */
export const QF = {
  PACKED: 1,
  EVENT_IDX: 2,
  INDIRECT: 4,
  IN_ORDER: 8,
  SIG_VALID: 16,
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

/** IOTLB table: u32 count, u32 lastHit, then entries {u64 first, u64 last, u32 target, u32 perm}. */
export const TLB = { HDR: 8, ENT: 24 } as const;

/** Byte sizes of the ring areas, VIRTIO 1.3 §2.7 / §2.8 (with the event-idx words always present). */
export function ringAreaSizes(size: number, packed: boolean): { desc: number; driver: number; device: number } {
  // split: descriptor table 16·N, avail 6 + 2·N, used 6 + 8·N (§2.7, "Queue Size" table)
  // packed: descriptor ring 16·N, driver / device event suppression 4 bytes each (§2.8.10)
  return packed
    ? { desc: 16 * size, driver: 4, device: 4 }
    : { desc: 16 * size, driver: 6 + 2 * size, device: 6 + 8 * size };
}

/** Alignment of the ring areas: split 16/2/4 (linux/virtio_ring.h VRING_*_ALIGN_SIZE), packed 16/4/4 (§2.8.10.1). */
export function ringAreaAligns(packed: boolean): { desc: number; driver: number; device: number } {
  return packed ? { desc: 16, driver: 4, device: 4 } : { desc: 16, driver: 2, device: 4 };
}
