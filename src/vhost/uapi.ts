// The vhost / vhost-vdpa userspace ABI: request codes and struct layouts of Linux
// include/uapi/linux/vhost.h and vhost_types.h, so that a VMM written against the header can
// drive a vhost-vdpa node through a byte pipe. test/vhost-uapi.test.ts compiles a C program
// against the installed header (Linux 6.1 here) and compares every value below with it.
//
// Codes the 6.1 header lacks come from newer kernels' include/uapi/linux/vhost.h and
// vhost_types.h (as of Linux 6.10): VHOST_VDPA_RESUME (0x7E), VHOST_VDPA_GET_VRING_DESC_GROUP
// (0x7F), VHOST_VDPA_GET_VRING_SIZE (0x82); backend features RESUME (0x5),
// ENABLE_AFTER_DRIVER_OK (0x6), DESC_ASID (0x7), IOTLB_PERSIST (0x8).

// ── ioctl encoding (include/uapi/asm-generic/ioctl.h) ──
// bits 0..7 nr, 8..15 type, 16..29 size, 30..31 direction.

/** _IOC_NONE: no argument. */
export const IOC_NONE = 0;
/** _IOC_WRITE: userspace writes the argument (the kernel reads it). */
export const IOC_WRITE = 1;
/** _IOC_READ: userspace reads the argument (the kernel writes it). */
export const IOC_READ = 2;

/** _IOC(dir, type, nr, size) as an unsigned 32-bit number. */
export function IOC(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
/** _IO(type, nr). */
export const IO = (type: number, nr: number): number => IOC(IOC_NONE, type, nr, 0);
/** _IOR(type, nr, size). */
export const IOR = (type: number, nr: number, size: number): number => IOC(IOC_READ, type, nr, size);
/** _IOW(type, nr, size). */
export const IOW = (type: number, nr: number, size: number): number => IOC(IOC_WRITE, type, nr, size);
/** _IOWR(type, nr, size). */
export const IOWR = (type: number, nr: number, size: number): number => IOC(IOC_READ | IOC_WRITE, type, nr, size);
/** _IOC_DIR(request). */
export const iocDir = (req: number): number => (req >>> 30) & 3;
/** _IOC_SIZE(request). */
export const iocSize = (req: number): number => (req >>> 16) & 0x3fff;

// ── struct layouts (vhost_types.h), byte offsets; all fields little-endian here ──

/** struct vhost_vring_state { unsigned int index; unsigned int num; } */
export const VHOST_VRING_STATE = {
  /** sizeof the struct, bytes. */
  SIZE: 8,
  /** Byte offset of `index`. */
  index: 0,
  /** Byte offset of `num`. */
  num: 4,
} as const;
/** struct vhost_vring_file { unsigned int index; int fd; } (fd -1 = VHOST_FILE_UNBIND) */
export const VHOST_VRING_FILE = {
  /** sizeof the struct, bytes. */
  SIZE: 8,
  /** Byte offset of `index`. */
  index: 0,
  /** Byte offset of `fd`. */
  fd: 4,
} as const;
/**
 * struct vhost_vring_addr { unsigned int index; unsigned int flags; __u64 desc_user_addr;
 * __u64 used_user_addr; __u64 avail_user_addr; __u64 log_guest_addr; } — note used before avail.
 */
export const VHOST_VRING_ADDR = {
  /** sizeof the struct, bytes. */
  SIZE: 40,
  /** Byte offset of `index`. */
  index: 0,
  /** Byte offset of `flags`. */
  flags: 4,
  /** Byte offset of `desc_user_addr`. */
  desc_user_addr: 8,
  /** Byte offset of `used_user_addr`. */
  used_user_addr: 16,
  /** Byte offset of `avail_user_addr`. */
  avail_user_addr: 24,
  /** Byte offset of `log_guest_addr`. */
  log_guest_addr: 32,
} as const;
/** struct vhost_vdpa_config { __u32 off; __u32 len; __u8 buf[]; } (sizeof is 8: buf is flexible) */
export const VHOST_VDPA_CONFIG = {
  /** sizeof the struct, bytes. */
  SIZE: 8,
  /** Byte offset of `off`. */
  off: 0,
  /** Byte offset of `len`. */
  len: 4,
  /** Byte offset of `buf`. */
  buf: 8,
} as const;
/** struct vhost_vdpa_iova_range { __u64 first; __u64 last; } */
export const VHOST_VDPA_IOVA_RANGE = {
  /** sizeof the struct, bytes. */
  SIZE: 16,
  /** Byte offset of `first`. */
  first: 0,
  /** Byte offset of `last`. */
  last: 8,
} as const;
/** struct vhost_iotlb_msg { __u64 iova; __u64 size; __u64 uaddr; __u8 perm; __u8 type; } (padded to 32) */
export const VHOST_IOTLB_MSG_LAYOUT = {
  /** sizeof the struct, bytes. */
  SIZE: 32,
  /** Byte offset of `iova`. */
  iova: 0,
  /** Byte offset of `size`. */
  size: 8,
  /** Byte offset of `uaddr`. */
  uaddr: 16,
  /** Byte offset of `perm`. */
  perm: 24,
  /** Byte offset of `type`. */
  type: 25,
} as const;
/** struct vhost_msg { int type; union { struct vhost_iotlb_msg iotlb; __u8 padding[64]; }; } (the union is 8-aligned) */
export const VHOST_MSG = {
  /** sizeof the struct, bytes. */
  SIZE: 72,
  /** Byte offset of `type`. */
  type: 0,
  /** Byte offset of `iotlb`. */
  iotlb: 8,
} as const;
/** struct vhost_msg_v2 { __u32 type; __u32 asid; union { struct vhost_iotlb_msg iotlb; __u8 padding[64]; }; } */
export const VHOST_MSG_V2 = {
  /** sizeof the struct, bytes. */
  SIZE: 72,
  /** Byte offset of `type`. */
  type: 0,
  /** Byte offset of `asid`. */
  asid: 4,
  /** Byte offset of `iotlb`. */
  iotlb: 8,
} as const;
/** struct vhost_memory { __u32 nregions; __u32 padding; struct vhost_memory_region regions[]; } */
export const VHOST_MEMORY = {
  /** sizeof the struct, bytes. */
  SIZE: 8,
} as const;

/** vhost.h VHOST_VIRTIO: the ioctl type byte. */
export const VHOST_VIRTIO = 0xaf;
/** vhost.h VHOST_FILE_UNBIND: the fd that detaches a kick/call. */
export const VHOST_FILE_UNBIND = -1;

// ── request codes (vhost.h) ──
const S = VHOST_VRING_STATE.SIZE;

/** Device features offered (u64 out). */
export const VHOST_GET_FEATURES = IOR(VHOST_VIRTIO, 0x00, 8);
/** Driver features accepted (u64 in). */
export const VHOST_SET_FEATURES = IOW(VHOST_VIRTIO, 0x00, 8);
/** Claims the device for this open file (the owner). */
export const VHOST_SET_OWNER = IO(VHOST_VIRTIO, 0x01);
/** Gives the ownership up. */
export const VHOST_RESET_OWNER = IO(VHOST_VIRTIO, 0x02);
/** vhost memory table (not used by vhost-vdpa, which maps through IOTLB messages). */
export const VHOST_SET_MEM_TABLE = IOW(VHOST_VIRTIO, 0x03, VHOST_MEMORY.SIZE);
/** Dirty log base (u64 in: where the log bitmap is). Linux vhost-vdpa: ENOTTY; our node implements it. */
export const VHOST_SET_LOG_BASE = IOW(VHOST_VIRTIO, 0x04, 8);
/** Dirty log eventfd (vhost-vdpa: ENOTTY). */
export const VHOST_SET_LOG_FD = IOW(VHOST_VIRTIO, 0x07, 4);
/** Queue size (vhost_vring_state in). */
export const VHOST_SET_VRING_NUM = IOW(VHOST_VIRTIO, 0x10, S);
/** Queue addresses (vhost_vring_addr in). */
export const VHOST_SET_VRING_ADDR = IOW(VHOST_VIRTIO, 0x11, VHOST_VRING_ADDR.SIZE);
/** Queue position (vhost_vring_state in). */
export const VHOST_SET_VRING_BASE = IOW(VHOST_VIRTIO, 0x12, S);
/** Queue position (vhost_vring_state in and out). */
export const VHOST_GET_VRING_BASE = IOWR(VHOST_VIRTIO, 0x12, S);
/** Ring endianness (legacy). */
export const VHOST_SET_VRING_ENDIAN = IOW(VHOST_VIRTIO, 0x13, S);
/** Ring endianness (legacy; _IOW in the header, sic). */
export const VHOST_GET_VRING_ENDIAN = IOW(VHOST_VIRTIO, 0x14, S);
/** Kick eventfd (vhost_vring_file in; here a doorbell address). */
export const VHOST_SET_VRING_KICK = IOW(VHOST_VIRTIO, 0x20, VHOST_VRING_FILE.SIZE);
/** Call eventfd (vhost_vring_file in; here a doorbell address). */
export const VHOST_SET_VRING_CALL = IOW(VHOST_VIRTIO, 0x21, VHOST_VRING_FILE.SIZE);
/** Error eventfd. */
export const VHOST_SET_VRING_ERR = IOW(VHOST_VIRTIO, 0x22, VHOST_VRING_FILE.SIZE);
/** Busy-loop timeout. */
export const VHOST_SET_VRING_BUSYLOOP_TIMEOUT = IOW(VHOST_VIRTIO, 0x23, S);
/** Busy-loop timeout (_IOW in the header, sic). */
export const VHOST_GET_VRING_BUSYLOOP_TIMEOUT = IOW(VHOST_VIRTIO, 0x24, S);
/** Backend features accepted (u64 in). */
export const VHOST_SET_BACKEND_FEATURES = IOW(VHOST_VIRTIO, 0x25, 8);
/** Backend features offered (u64 out). */
export const VHOST_GET_BACKEND_FEATURES = IOR(VHOST_VIRTIO, 0x26, 8);
/** Virtio device id (u32 out). */
export const VHOST_VDPA_GET_DEVICE_ID = IOR(VHOST_VIRTIO, 0x70, 4);
/** Device status (u8 out). */
export const VHOST_VDPA_GET_STATUS = IOR(VHOST_VIRTIO, 0x71, 1);
/** Device status (u8 in); 0 resets. */
export const VHOST_VDPA_SET_STATUS = IOW(VHOST_VIRTIO, 0x72, 1);
/** Config space read (vhost_vdpa_config in, buf out). */
export const VHOST_VDPA_GET_CONFIG = IOR(VHOST_VIRTIO, 0x73, VHOST_VDPA_CONFIG.SIZE);
/** Config space write (vhost_vdpa_config with buf in). */
export const VHOST_VDPA_SET_CONFIG = IOW(VHOST_VIRTIO, 0x74, VHOST_VDPA_CONFIG.SIZE);
/** Queue enable (vhost_vring_state in; num = 0/1). */
export const VHOST_VDPA_SET_VRING_ENABLE = IOW(VHOST_VIRTIO, 0x75, S);
/** Largest queue size (u16 out). */
export const VHOST_VDPA_GET_VRING_NUM = IOR(VHOST_VIRTIO, 0x76, 2);
/** Config-change eventfd (int in; here a doorbell address, -1 to detach). */
export const VHOST_VDPA_SET_CONFIG_CALL = IOW(VHOST_VIRTIO, 0x77, 4);
/** Usable IOVA range (vhost_vdpa_iova_range out). */
export const VHOST_VDPA_GET_IOVA_RANGE = IOR(VHOST_VIRTIO, 0x78, VHOST_VDPA_IOVA_RANGE.SIZE);
/** Config space size (u32 out). */
export const VHOST_VDPA_GET_CONFIG_SIZE = IOR(VHOST_VIRTIO, 0x79, 4);
/** Address spaces (unsigned int out). */
export const VHOST_VDPA_GET_AS_NUM = IOR(VHOST_VIRTIO, 0x7a, 4);
/** A queue's group (vhost_vring_state: index in, num out). */
export const VHOST_VDPA_GET_VRING_GROUP = IOWR(VHOST_VIRTIO, 0x7b, S);
/** Binds a group to an address space (vhost_vring_state: index = group, num = asid). */
export const VHOST_VDPA_SET_GROUP_ASID = IOW(VHOST_VIRTIO, 0x7c, S);
/** Stops the datapath. */
export const VHOST_VDPA_SUSPEND = IO(VHOST_VIRTIO, 0x7d);
/** Continues the datapath (Linux ≥ 6.4 uapi). */
export const VHOST_VDPA_RESUME = IO(VHOST_VIRTIO, 0x7e);
/** A queue's descriptor group (vhost_vring_state in/out; Linux ≥ 6.7 uapi). */
export const VHOST_VDPA_GET_VRING_DESC_GROUP = IOWR(VHOST_VIRTIO, 0x7f, S);
/** Virtqueues (u32 out). */
export const VHOST_VDPA_GET_VQS_COUNT = IOR(VHOST_VIRTIO, 0x80, 4);
/** Virtqueue groups (u32 out). */
export const VHOST_VDPA_GET_GROUP_NUM = IOR(VHOST_VIRTIO, 0x81, 4);
/** A queue's size (vhost_vring_state in/out; Linux ≥ 6.10 uapi). */
export const VHOST_VDPA_GET_VRING_SIZE = IOWR(VHOST_VIRTIO, 0x82, S);

/** Every request code by name (for tests, tracing and byte pipes). */
export const VHOST_REQUESTS: Readonly<Record<string, number>> = {
  VHOST_GET_FEATURES, VHOST_SET_FEATURES, VHOST_SET_OWNER, VHOST_RESET_OWNER, VHOST_SET_MEM_TABLE,
  VHOST_SET_LOG_BASE, VHOST_SET_LOG_FD, VHOST_SET_VRING_NUM, VHOST_SET_VRING_ADDR, VHOST_SET_VRING_BASE,
  VHOST_GET_VRING_BASE, VHOST_SET_VRING_ENDIAN, VHOST_GET_VRING_ENDIAN, VHOST_SET_VRING_KICK, VHOST_SET_VRING_CALL,
  VHOST_SET_VRING_ERR, VHOST_SET_VRING_BUSYLOOP_TIMEOUT, VHOST_GET_VRING_BUSYLOOP_TIMEOUT,
  VHOST_SET_BACKEND_FEATURES, VHOST_GET_BACKEND_FEATURES, VHOST_VDPA_GET_DEVICE_ID, VHOST_VDPA_GET_STATUS,
  VHOST_VDPA_SET_STATUS, VHOST_VDPA_GET_CONFIG, VHOST_VDPA_SET_CONFIG, VHOST_VDPA_SET_VRING_ENABLE,
  VHOST_VDPA_GET_VRING_NUM, VHOST_VDPA_SET_CONFIG_CALL, VHOST_VDPA_GET_IOVA_RANGE, VHOST_VDPA_GET_CONFIG_SIZE,
  VHOST_VDPA_GET_AS_NUM, VHOST_VDPA_GET_VRING_GROUP, VHOST_VDPA_SET_GROUP_ASID, VHOST_VDPA_SUSPEND,
  VHOST_VDPA_RESUME, VHOST_VDPA_GET_VRING_DESC_GROUP, VHOST_VDPA_GET_VQS_COUNT, VHOST_VDPA_GET_GROUP_NUM,
  VHOST_VDPA_GET_VRING_SIZE,
};

// ── IOTLB messages (vhost_types.h) ──

/** vhost_msg.type: a v1 message. */
export const VHOST_IOTLB_MSG = 0x1;
/** vhost_msg_v2.type: a v2 message (with asid). */
export const VHOST_IOTLB_MSG_V2 = 0x2;
/** vhost_iotlb_msg.type: the device missed a translation (device → VMM; unused by vhost-vdpa). */
export const VHOST_IOTLB_MISS = 1;
/** vhost_iotlb_msg.type: map [iova, iova + size) → uaddr. */
export const VHOST_IOTLB_UPDATE = 2;
/** vhost_iotlb_msg.type: unmap every mapping overlapping [iova, iova + size). */
export const VHOST_IOTLB_INVALIDATE = 3;
/** vhost_iotlb_msg.type: an access failed (device → VMM; unused by vhost-vdpa). */
export const VHOST_IOTLB_ACCESS_FAIL = 4;
/** vhost_iotlb_msg.type: start a batch (applied to the device at BATCH_END). */
export const VHOST_IOTLB_BATCH_BEGIN = 5;
/** vhost_iotlb_msg.type: end a batch. */
export const VHOST_IOTLB_BATCH_END = 6;
/** vhost_iotlb_msg.perm: device reads. */
export const VHOST_ACCESS_RO = 0x1;
/** vhost_iotlb_msg.perm: device writes. */
export const VHOST_ACCESS_WO = 0x2;
/** vhost_iotlb_msg.perm: both. */
export const VHOST_ACCESS_RW = 0x3;

// ── vhost feature bits in VHOST_GET/SET_FEATURES (vhost.h) ──

/** vhost.h VHOST_F_LOG_ALL (26): log every write the device makes, into the VHOST_SET_LOG_BASE bitmap. */
export const VHOST_F_LOG_ALL = 26;

// ── backend features (bit numbers, vhost_types.h) ──

/** IOTLB messages may be vhost_msg_v2. */
export const VHOST_BACKEND_F_IOTLB_MSG_V2 = 0x1;
/** IOTLB updates may be batched (BATCH_BEGIN/END). */
export const VHOST_BACKEND_F_IOTLB_BATCH = 0x2;
/** vhost_msg_v2.asid selects the address space. */
export const VHOST_BACKEND_F_IOTLB_ASID = 0x3;
/** VHOST_VDPA_SUSPEND works. */
export const VHOST_BACKEND_F_SUSPEND = 0x4;
/** VHOST_VDPA_RESUME works (Linux ≥ 6.4 uapi). */
export const VHOST_BACKEND_F_RESUME = 0x5;
/** Queues may be enabled after DRIVER_OK (Linux ≥ 6.7 uapi). */
export const VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK = 0x6;
/** Descriptor tables may live in their own group/ASID (Linux ≥ 6.7 uapi). */
export const VHOST_BACKEND_F_DESC_ASID = 0x7;
/** IOTLB mappings survive a device reset (Linux ≥ 6.7 uapi). */
export const VHOST_BACKEND_F_IOTLB_PERSIST = 0x8;

// ── encoders and decoders (no allocation beyond the returned bytes) ──

/** A vhost_vring_state. */
export function encodeVringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(VHOST_VRING_STATE.SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(VHOST_VRING_STATE.index, index >>> 0, true);
  v.setUint32(VHOST_VRING_STATE.num, num >>> 0, true);
  return b;
}

/** A vhost_vring_file (fd = doorbell address, or -1). */
export function encodeVringFile(index: number, fd: number): Uint8Array {
  const b = new Uint8Array(VHOST_VRING_FILE.SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(VHOST_VRING_FILE.index, index >>> 0, true);
  v.setInt32(VHOST_VRING_FILE.fd, fd | 0, true);
  return b;
}

/** A vhost_vring_addr. */
export function encodeVringAddr(a: { index: number; flags?: number; desc: number | bigint; avail: number | bigint; used: number | bigint; log?: number | bigint }): Uint8Array {
  const b = new Uint8Array(VHOST_VRING_ADDR.SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(VHOST_VRING_ADDR.index, a.index >>> 0, true);
  v.setUint32(VHOST_VRING_ADDR.flags, (a.flags ?? 0) >>> 0, true);
  v.setBigUint64(VHOST_VRING_ADDR.desc_user_addr, BigInt(a.desc), true);
  v.setBigUint64(VHOST_VRING_ADDR.used_user_addr, BigInt(a.used), true);
  v.setBigUint64(VHOST_VRING_ADDR.avail_user_addr, BigInt(a.avail), true);
  v.setBigUint64(VHOST_VRING_ADDR.log_guest_addr, BigInt(a.log ?? 0), true);
  return b;
}

/**
 * A vhost_vdpa_config: for a write, the header plus `data`; for a read (`len` a number), the
 * 8-byte header alone (buf is what the node returns).
 */
export function encodeVdpaConfig(off: number, lenOrData: number | Uint8Array): Uint8Array {
  const len = typeof lenOrData === 'number' ? lenOrData : lenOrData.length;
  const b = new Uint8Array(VHOST_VDPA_CONFIG.SIZE + (typeof lenOrData === 'number' ? 0 : len));
  const v = new DataView(b.buffer);
  v.setUint32(VHOST_VDPA_CONFIG.off, off >>> 0, true);
  v.setUint32(VHOST_VDPA_CONFIG.len, len >>> 0, true);
  if (typeof lenOrData !== 'number') b.set(lenOrData, VHOST_VDPA_CONFIG.buf);
  return b;
}

/** A u64 argument. */
export function encodeU64(x: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(x), true);
  return b;
}

/** A u32 / int argument. */
export function encodeU32(x: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, x >>> 0, true);
  return b;
}

/** An IOTLB message as plain data. */
export interface IotlbMsg {
  /** VHOST_IOTLB_UPDATE, INVALIDATE, BATCH_BEGIN or BATCH_END. */
  type: number;
  /** First IOVA. @default 0 */
  iova?: bigint | number;
  /** Bytes. @default 0 */
  size?: bigint | number;
  /** Target address: an offset into the platform memory (the VMM's "userspace address"). @default 0 */
  uaddr?: bigint | number;
  /** VHOST_ACCESS_RO/WO/RW. @default 0 */
  perm?: number;
}

/**
 * A vhost_msg (v1, asid omitted) or vhost_msg_v2 (asid given) carrying `m`, laid out as the
 * uapi: 72 bytes.
 */
export function encodeIotlbMsg(m: IotlbMsg, asid?: number): Uint8Array {
  const b = new Uint8Array(VHOST_MSG.SIZE);
  const v = new DataView(b.buffer);
  if (asid === undefined) {
    v.setInt32(VHOST_MSG.type, VHOST_IOTLB_MSG, true);
  } else {
    v.setUint32(VHOST_MSG_V2.type, VHOST_IOTLB_MSG_V2, true);
    v.setUint32(VHOST_MSG_V2.asid, asid >>> 0, true);
  }
  const o = VHOST_MSG.iotlb;
  v.setBigUint64(o + VHOST_IOTLB_MSG_LAYOUT.iova, BigInt(m.iova ?? 0), true);
  v.setBigUint64(o + VHOST_IOTLB_MSG_LAYOUT.size, BigInt(m.size ?? 0), true);
  v.setBigUint64(o + VHOST_IOTLB_MSG_LAYOUT.uaddr, BigInt(m.uaddr ?? 0), true);
  v.setUint8(o + VHOST_IOTLB_MSG_LAYOUT.perm, m.perm ?? 0);
  v.setUint8(o + VHOST_IOTLB_MSG_LAYOUT.type, m.type);
  return b;
}
