// virtio-blk spec constants (VIRTIO 1.3 §5.2; names and values from linux/virtio_blk.h), shared
// by the device (src/devices/blk.ts) and the driver (src/drivers/virtio-blk.ts): a driver knows
// the spec, not the simulator.

// Request types and status values (linux/virtio_blk.h; VIRTIO 1.3 §5.2.6).
/** Read. */
export const VIRTIO_BLK_T_IN = 0;
/** Write. */
export const VIRTIO_BLK_T_OUT = 1;
/** Flush. */
export const VIRTIO_BLK_T_FLUSH = 4;
/** Get device id string. */
export const VIRTIO_BLK_T_GET_ID = 8;
/** Discard sectors. */
export const VIRTIO_BLK_T_DISCARD = 11;
/** Write zeroes. */
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
/** struct virtio_blk_discard_write_zeroes flags: unmap. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** Success. */
export const VIRTIO_BLK_S_OK = 0;
/** Device or driver error. */
export const VIRTIO_BLK_S_IOERR = 1;
/** Request unsupported. */
export const VIRTIO_BLK_S_UNSUPP = 2;
/** Bytes of the GET_ID string (VIRTIO_BLK_ID_BYTES). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Sector size of the request's `sector` field: always 512 (§5.2.6). */
export const SECTOR_SIZE = 512;

/**
 * struct virtio_blk_config field offsets (linux/virtio_blk.h; VIRTIO 1.3 §5.2.4): le64 capacity
 * @0, le32 size_max @8, le32 seg_max @12, geometry @16, le32 blk_size @20, topology @24,
 * u8 writeback @32, u8 unused0 @33, le16 num_queues @34, le32 max_discard_sectors @36,
 * le32 max_discard_seg @40, le32 discard_sector_alignment @44, le32 max_write_zeroes_sectors
 * @48, le32 max_write_zeroes_seg @52, u8 write_zeroes_may_unmap @56, 3 unused bytes (size 60).
 */
export const VIRTIO_BLK_CFG = {
  /** le64 capacity: disk size in 512-byte sectors. */
  CAPACITY: 0,
  /** le32 size_max: largest segment, bytes (VIRTIO_BLK_F_SIZE_MAX). */
  SIZE_MAX: 8,
  /** le32 seg_max: most segments in a request (VIRTIO_BLK_F_SEG_MAX). */
  SEG_MAX: 12,
  /** le32 blk_size: logical block size, bytes (VIRTIO_BLK_F_BLK_SIZE). */
  BLK_SIZE: 20,
  /** le32 max_discard_sectors (VIRTIO_BLK_F_DISCARD). */
  MAX_DISCARD_SECTORS: 36,
  /** le32 max_discard_seg (VIRTIO_BLK_F_DISCARD). */
  MAX_DISCARD_SEG: 40,
  /** le32 discard_sector_alignment (VIRTIO_BLK_F_DISCARD). */
  DISCARD_SECTOR_ALIGNMENT: 44,
  /** le32 max_write_zeroes_sectors (VIRTIO_BLK_F_WRITE_ZEROES). */
  MAX_WRITE_ZEROES_SECTORS: 48,
  /** le32 max_write_zeroes_seg (VIRTIO_BLK_F_WRITE_ZEROES). */
  MAX_WRITE_ZEROES_SEG: 52,
  /** u8 write_zeroes_may_unmap (VIRTIO_BLK_F_WRITE_ZEROES). */
  WRITE_ZEROES_MAY_UNMAP: 56,
  /** Bytes of the config space up to and including write_zeroes_may_unmap (and its padding). */
  SIZE: 60,
} as const;
