// Ring layout constants from VIRTIO 1.3 §2.7 (split) and §2.8 (packed), and the Linux uapi
// header linux/virtio_ring.h, whose names we keep. Every size formula is given where it is used.

// struct virtq_desc / struct pvirtq_desc: 16 bytes each (§2.7.5, §2.8.13).
// split:  le64 addr | le32 len | le16 flags | le16 next
// packed: le64 addr | le32 len | le16 id    | le16 flags
// @ts-ignore: decorator
@inline export const DESC_SIZE: u32 = 16;

/** linux/virtio_ring.h VRING_DESC_F_NEXT: the buffer continues via `next` (split) / the next ring slot (packed). */
// @ts-ignore: decorator
@inline export const VRING_DESC_F_NEXT: u32 = 1;
/** linux/virtio_ring.h VRING_DESC_F_WRITE: device-writable buffer. */
// @ts-ignore: decorator
@inline export const VRING_DESC_F_WRITE: u32 = 2;
/** linux/virtio_ring.h VRING_DESC_F_INDIRECT: the buffer is a table of descriptors. */
// @ts-ignore: decorator
@inline export const VRING_DESC_F_INDIRECT: u32 = 4;
/** linux/virtio_ring.h VRING_PACKED_DESC_F_AVAIL = bit 7. */
// @ts-ignore: decorator
@inline export const VRING_PACKED_DESC_F_AVAIL: u32 = 1 << 7;
/** linux/virtio_ring.h VRING_PACKED_DESC_F_USED = bit 15. */
// @ts-ignore: decorator
@inline export const VRING_PACKED_DESC_F_USED: u32 = 1 << 15;

/** linux/virtio_ring.h VRING_USED_F_NO_NOTIFY (used->flags, split). */
// @ts-ignore: decorator
@inline export const VRING_USED_F_NO_NOTIFY: u32 = 1;
/** linux/virtio_ring.h VRING_AVAIL_F_NO_INTERRUPT (avail->flags, split). */
// @ts-ignore: decorator
@inline export const VRING_AVAIL_F_NO_INTERRUPT: u32 = 1;

// struct pvirtq_event_suppress (§2.8.14): le16 off_wrap (bits 0..14 offset, bit 15 wrap) | le16 flags.
/** linux/virtio_ring.h VRING_PACKED_EVENT_FLAG_ENABLE. */
// @ts-ignore: decorator
@inline export const VRING_PACKED_EVENT_FLAG_ENABLE: u32 = 0;
/** linux/virtio_ring.h VRING_PACKED_EVENT_FLAG_DISABLE. */
// @ts-ignore: decorator
@inline export const VRING_PACKED_EVENT_FLAG_DISABLE: u32 = 1;
/** linux/virtio_ring.h VRING_PACKED_EVENT_FLAG_DESC (only with VIRTIO_F_EVENT_IDX). */
// @ts-ignore: decorator
@inline export const VRING_PACKED_EVENT_FLAG_DESC: u32 = 2;
/** linux/virtio_ring.h VRING_PACKED_EVENT_F_WRAP_CTR = bit 15 of off_wrap. */
// @ts-ignore: decorator
@inline export const VRING_PACKED_EVENT_F_WRAP_CTR: u32 = 15;

// Split avail ring (§2.7.6): le16 flags | le16 idx | le16 ring[N] | le16 used_event  -> 6 + 2N bytes
// Split used ring  (§2.7.8): le16 flags | le16 idx | {le32 id, le32 len}[N] | le16 avail_event -> 6 + 8N
// @ts-ignore: decorator
@inline export const AVAIL_FLAGS: u32 = 0;
// @ts-ignore: decorator
@inline export const AVAIL_IDX: u32 = 2;
// @ts-ignore: decorator
@inline export const AVAIL_RING: u32 = 4;
// @ts-ignore: decorator
@inline export const USED_FLAGS: u32 = 0;
// @ts-ignore: decorator
@inline export const USED_IDX: u32 = 2;
// @ts-ignore: decorator
@inline export const USED_RING: u32 = 4;

// Device-side output records, laid out by TypeScript in private memory (src/ring/layout.ts mirrors).
// Chain record, 32 bytes:
//   0 id | 4 ndesc (ring slots consumed; packed skips by it) | 8 segStart | 12 u16 nRead | 14 u16 nWrite
//  16 readBytes | 20 writeBytes | 24 written (set by the datapath before push) | 28 reserved
// @ts-ignore: decorator
@inline export const CHAIN_REC: u32 = 32;
// Segment record, 8 bytes: 0 addr (memory offset, already translated) | 4 len
// @ts-ignore: decorator
@inline export const SEG_REC: u32 = 8;

// Driver-side input records.
// Request, 16 bytes: 0 token | 4 segStart | 8 nSegs | 12 reserved
// Segment, 16 bytes: 0 addr lo | 4 addr hi | 8 len | 12 flags (bit 0: device-writable)
// Used output, 8 bytes: 0 token | 4 len
// Private per-descriptor state, 16 bytes: 0 token | 4 ndesc (0 = not a live head) | 8 next | 12 inLen
// @ts-ignore: decorator
@inline export const REQ_REC: u32 = 16;
// @ts-ignore: decorator
@inline export const DSEG_REC: u32 = 16;
// @ts-ignore: decorator
@inline export const USED_REC: u32 = 8;
// @ts-ignore: decorator
@inline export const DSTATE_REC: u32 = 16;
