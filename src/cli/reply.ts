// The kernel's side of the vdpa netlink family (drivers/vdpa/vdpa.c): what each request
// answers — the attributes of a reply, or an errno with the extack message the kernel sets.
// The tool builds these replies from the in-process bus and prints them (format.ts).

import { VirtioError, Code } from '../errors.ts';
import type { VdpaBus, VdpaDevice } from '../bus/bus.ts';
import type { MgmtDevice } from '../mgmt/base.ts';
import {
  VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MQ, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_FLUSH,
} from '../virtio/constants.ts';
import { VIRTIO_BLK_CFG } from '../virtio/blk.ts';

// ───────────────────────── feature and class names (iproute2 vdpa.c) ─────────────────────────

/** Virtio-net feature names (vdpa.c net_feature_strs), by bit. */
export const NET_FEATURE_NAMES: Readonly<Record<number, string>> = {
  0: 'CSUM', 1: 'GUEST_CSUM', 2: 'CTRL_GUEST_OFFLOADS', 3: 'MTU', 5: 'MAC', 7: 'GUEST_TSO4', 8: 'GUEST_TSO6',
  9: 'GUEST_ECN', 10: 'GUEST_UFO', 11: 'HOST_TSO4', 12: 'HOST_TSO6', 13: 'HOST_ECN', 14: 'HOST_UFO',
  15: 'MRG_RXBUF', 16: 'STATUS', 17: 'CTRL_VQ', 18: 'CTRL_RX', 19: 'CTRL_VLAN', 20: 'CTRL_RX_EXTRA',
  21: 'GUEST_ANNOUNCE', 22: 'MQ', 23: 'CTRL_MAC_ADDR', 24: 'NOTIFY_ON_EMPTY', 27: 'ANY_LAYOUT',
  57: 'HASH_REPORT', 60: 'RSS', 61: 'RSC_EXT', 62: 'STANDBY', 63: 'SPEED_DUPLEX',
};

/** Transport feature names, bits 28..41 (vdpa.c ext_feature_strs). */
export const TRANSPORT_FEATURE_NAMES: Readonly<Record<number, string>> = {
  28: 'RING_INDIRECT_DESC', 29: 'RING_EVENT_IDX', 32: 'VERSION_1', 33: 'ACCESS_PLATFORM', 34: 'RING_PACKED',
  35: 'IN_ORDER', 36: 'ORDER_PLATFORM', 37: 'SR_IOV', 38: 'NOTIFICATION_DATA',
};

/** VIRTIO_TRANSPORT_F_START / _END (include/uapi/linux/virtio_config.h). */
const TRANSPORT_F_START = 28;
const TRANSPORT_F_END = 41;

/**
 * The features of `features` as vdpa.c's print_features names them: transport bits by
 * name, device bits by name for net (dev_id 1), any other bit as its number (printed bit_N).
 */
export function featureNames(features: bigint, deviceId: number): (string | number)[] {
  const names: (string | number)[] = [];
  for (let i = 0; i < 64; i++) {
    if (!((features >> BigInt(i)) & 1n)) continue;
    const s = i >= TRANSPORT_F_START && i <= TRANSPORT_F_END
      ? TRANSPORT_FEATURE_NAMES[i]
      : deviceId === VIRTIO_ID_NET ? NET_FEATURE_NAMES[i] : undefined;
    names.push(s ?? i);
  }
  return names;
}

/** Class names of vdpa.c's class_map. */
const CLASS_IDS: Readonly<Record<string, number>> = { net: VIRTIO_ID_NET, block: VIRTIO_ID_BLOCK };

/** vdpa.c device_type_name. */
export function deviceTypeName(id: number): string {
  return id === VIRTIO_ID_NET ? 'network' : id === VIRTIO_ID_BLOCK ? 'block' : '<unknown type>';
}

// ───────────────────────── errors ─────────────────────────

/** An errno and its strerror() text (glibc). */
export interface Errno {
  /** The positive errno value (include/uapi/asm-generic/errno-base.h, errno.h). */
  errno: number;
  /** strerror(errno), as iproute2 prints it after "kernel answers: ". */
  text: string;
}

/** EINVAL (22). */
export const EINVAL: Errno = { errno: 22, text: 'Invalid argument' };
/** EEXIST (17). */
export const EEXIST: Errno = { errno: 17, text: 'File exists' };
/** ENODEV (19). */
export const ENODEV: Errno = { errno: 19, text: 'No such device' };
/** EOPNOTSUPP (95). */
export const EOPNOTSUPP: Errno = { errno: 95, text: 'Operation not supported' };
/** EAGAIN (11). */
export const EAGAIN: Errno = { errno: 11, text: 'Resource temporarily unavailable' };
/** ENOMEM (12). */
export const ENOMEM: Errno = { errno: 12, text: 'Cannot allocate memory' };
/** ERANGE (34). */
export const ERANGE: Errno = { errno: 34, text: 'Numerical result out of range' };
/** EIO (5). */
export const EIO: Errno = { errno: 5, text: 'Input/output error' };

/** The module name NL_SET_ERR_MSG_MOD puts before drivers/vdpa/vdpa.c's messages (KBUILD_MODNAME). */
export const VDPA_MODNAME = 'vdpa';

/**
 * A reply "the kernel" sends with an extack message: an error (errno set), or a warning on a
 * successful request (errno null; iproute2 prints "Warning: …" and succeeds).
 */
export class KernelError extends Error {
  /**
   * @param errno The error, or null for a warning on success.
   * @param extack The extended ack message as the kernel sends it ('' for none).
   */
  constructor(readonly errno: Errno | null, readonly extack: string) {
    super(extack);
  }

  /** A message set with NL_SET_ERR_MSG_MOD in drivers/vdpa/vdpa.c: "vdpa: " + msg. */
  static mod(errno: Errno | null, msg: string): KernelError {
    return new KernelError(errno, `${VDPA_MODNAME}: ${msg}`);
  }
}

/**
 * The errno a bus error answers with (the netlink error of the equivalent kernel call). The
 * simulator devices' dev_add and set_attr set no extack in Linux, so the tool prints only
 * this errno for them ("kernel answers: …"), as upstream would.
 */
export function errnoOf(code: Code): Errno {
  switch (code) {
    case Code.InvalidArgument: return EINVAL;
    case Code.AlreadyExists: return EEXIST;
    case Code.NotFound: return ENODEV;
    case Code.Unsupported: return EOPNOTSUPP;
    case Code.FailedPrecondition: return EAGAIN;
    case Code.ResourceExhausted: return ENOMEM;
    default: return EIO;
  }
}

/** What a failed request prints: the errno and the extack ('' for none). */
export function kernelAnswer(e: unknown): { errno: Errno | null; extack: string } {
  if (e instanceof KernelError) return { errno: e.errno, extack: e.extack };
  if (e instanceof VirtioError) return { errno: errnoOf(e.code), extack: '' };
  return { errno: EIO, extack: '' };
}

// ───────────────────────── replies ─────────────────────────

/** A VDPA_CMD_MGMTDEV_GET reply. */
export interface MgmtdevInfo {
  /** VDPA_ATTR_MGMTDEV_DEV_NAME. */
  name: string;
  /** Class names, in class-id order (the kernel sends a bitmask). */
  classes: string[];
  /** VDPA_ATTR_DEV_MGMTDEV_MAX_VQS. */
  maxSupportedVqs: number;
  /** VDPA_ATTR_DEV_SUPPORTED_FEATURES. */
  supportedFeatures: bigint;
}

/** A VDPA_CMD_DEV_GET reply. */
export interface DevInfo {
  /** VDPA_ATTR_DEV_NAME. */
  name: string;
  /** VDPA_ATTR_DEV_ID: the virtio device id. */
  deviceId: number;
  /** VDPA_ATTR_MGMTDEV_DEV_NAME of the management device that made it. */
  mgmtdev: string;
  /** VDPA_ATTR_DEV_VENDOR_ID. */
  vendorId: number;
  /** VDPA_ATTR_DEV_MAX_VQS. */
  maxVqs: number;
  /** VDPA_ATTR_DEV_MAX_VQ_SIZE. */
  maxVqSize: number;
}

/**
 * The block attributes of a VDPA_CMD_DEV_CONFIG_GET reply (vdpa_dev_blk_config_fill, Linux
 * 6.9+: VDPA_ATTR_DEV_BLK_CFG_*), each present when the device offers its feature.
 */
export interface BlkConfigInfo {
  /** Disk size in 512-byte sectors (always present). */
  capacity: bigint;
  /** Largest segment in bytes (VIRTIO_BLK_F_SIZE_MAX). */
  sizeMax?: number;
  /** Most segments in a request (VIRTIO_BLK_F_SEG_MAX). */
  segMax?: number;
  /** Logical block size in bytes (VIRTIO_BLK_F_BLK_SIZE). */
  blkSize?: number;
  /** Request queues (VIRTIO_BLK_F_MQ). */
  numQueues?: number;
  /** Most sectors in one discard segment (VIRTIO_BLK_F_DISCARD). */
  maxDiscardSectors?: number;
  /** Most discard segments in one request (VIRTIO_BLK_F_DISCARD). */
  maxDiscardSeg?: number;
  /** Discard alignment in sectors (VIRTIO_BLK_F_DISCARD). */
  discardSectorAlignment?: number;
  /** Most sectors in one write-zeroes segment (VIRTIO_BLK_F_WRITE_ZEROES). */
  maxWriteZeroesSectors?: number;
  /** Most write-zeroes segments in one request (VIRTIO_BLK_F_WRITE_ZEROES). */
  maxWriteZeroesSeg?: number;
  /** The device offers VIRTIO_BLK_F_RO. */
  readOnly: boolean;
  /** The device offers VIRTIO_BLK_F_FLUSH. */
  flush: boolean;
}

/** A VDPA_CMD_DEV_CONFIG_GET reply (attributes present as the kernel would put them). */
export interface DevConfigInfo {
  /** VDPA_ATTR_DEV_NAME. */
  name: string;
  /** VDPA_ATTR_DEV_ID. */
  deviceId: number;
  /** VDPA_ATTR_DEV_NET_CFG_MACADDR (present with VIRTIO_NET_F_MAC). */
  mac?: Uint8Array;
  /** virtio_net_config.status (present with VIRTIO_NET_F_STATUS). */
  netStatus?: number;
  /** Present with VIRTIO_NET_F_MQ. */
  maxVqp?: number;
  /** VDPA_ATTR_DEV_NET_CFG_MTU (present with VIRTIO_NET_F_MTU). */
  mtu?: number;
  /** Present once the device status has FEATURES_OK. */
  negotiatedFeatures?: bigint;
  /** Block devices: the VDPA_ATTR_DEV_BLK_CFG_* attributes. */
  blk?: BlkConfigInfo;
}

/** A VDPA_CMD_DEV_VSTATS_GET reply. */
export interface DevVstatsInfo {
  /** VDPA_ATTR_DEV_NAME. */
  name: string;
  /** VDPA_ATTR_DEV_ID. */
  deviceId: number;
  /** VDPA_ATTR_DEV_QUEUE_INDEX. */
  qidx: number;
  /** VDPA_ATTR_DEV_NET_CFG_MAX_VQP (iproute2 uses it to spot the control queue). */
  maxVqp?: number;
  /** VDPA_ATTR_DEV_NEGOTIATED_FEATURES. */
  negotiatedFeatures: bigint;
  /** VDPA_ATTR_DEV_VENDOR_ATTR_NAME / _VALUE pairs, in order. */
  stats: [name: string, value: number][];
}

/** VDPA_CMD_MGMTDEV_GET for one management device. */
export function mgmtdevInfo(m: MgmtDevice): MgmtdevInfo {
  const classes = [...m.supportedClasses].sort((a, b) => (CLASS_IDS[a] ?? 64) - (CLASS_IDS[b] ?? 64));
  return { name: m.name, classes, maxSupportedVqs: m.maxSupportedVqs, supportedFeatures: m.supportedFeatures };
}

/** VDPA_CMD_DEV_GET for one device. */
export function devInfo(bus: VdpaBus, dev: VdpaDevice): DevInfo {
  return {
    name: dev.name, deviceId: dev.getDeviceId(), mgmtdev: bus.mgmtDeviceOf(dev.name) ?? '',
    vendorId: dev.getVendorId(), maxVqs: dev.nvqs, maxVqSize: dev.getVqNumMax(),
  };
}

const bit = (f: bigint, b: number): boolean => ((f >> BigInt(b)) & 1n) === 1n;

/** VDPA_CMD_DEV_CONFIG_GET for one device (vdpa_dev_net_config_fill / vdpa_dev_blk_config_fill). */
export function devConfigInfo(dev: VdpaDevice): DevConfigInfo {
  const info: DevConfigInfo = { name: dev.name, deviceId: dev.getDeviceId() };
  if (dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK) info.negotiatedFeatures = dev.getDriverFeatures();
  const f = dev.getDeviceFeatures();
  if (info.deviceId === VIRTIO_ID_NET) {
    // vdpa_dev_net_config_fill: each field only if the device offers its feature.
    const cfg = dev.getConfig(0, 12);
    const v = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
    if (bit(f, VIRTIO_NET_F_MTU)) info.mtu = v.getUint16(10, true);
    if (bit(f, VIRTIO_NET_F_MAC)) info.mac = cfg.slice(0, 6);
    if (bit(f, VIRTIO_NET_F_STATUS)) info.netStatus = v.getUint16(6, true);
    if (bit(f, VIRTIO_NET_F_MQ)) info.maxVqp = v.getUint16(8, true);
  } else if (info.deviceId === VIRTIO_ID_BLOCK) {
    // struct virtio_blk_config (VIRTIO 1.3 §5.2.4); num_queues is le16 at 34.
    const size = Math.min(dev.getConfigSize(), VIRTIO_BLK_CFG.SIZE);
    const cfg = new Uint8Array(VIRTIO_BLK_CFG.SIZE);
    cfg.set(dev.getConfig(0, size));
    const v = new DataView(cfg.buffer);
    const b: BlkConfigInfo = { capacity: v.getBigUint64(VIRTIO_BLK_CFG.CAPACITY, true), readOnly: bit(f, VIRTIO_BLK_F_RO), flush: bit(f, VIRTIO_BLK_F_FLUSH) };
    if (bit(f, VIRTIO_BLK_F_SIZE_MAX)) b.sizeMax = v.getUint32(VIRTIO_BLK_CFG.SIZE_MAX, true);
    if (bit(f, VIRTIO_BLK_F_SEG_MAX)) b.segMax = v.getUint32(VIRTIO_BLK_CFG.SEG_MAX, true);
    if (bit(f, VIRTIO_BLK_F_BLK_SIZE)) b.blkSize = v.getUint32(VIRTIO_BLK_CFG.BLK_SIZE, true);
    if (bit(f, VIRTIO_BLK_F_MQ)) b.numQueues = v.getUint16(34, true);
    if (bit(f, VIRTIO_BLK_F_DISCARD)) {
      b.maxDiscardSectors = v.getUint32(VIRTIO_BLK_CFG.MAX_DISCARD_SECTORS, true);
      b.maxDiscardSeg = v.getUint32(VIRTIO_BLK_CFG.MAX_DISCARD_SEG, true);
      b.discardSectorAlignment = v.getUint32(VIRTIO_BLK_CFG.DISCARD_SECTOR_ALIGNMENT, true);
    }
    if (bit(f, VIRTIO_BLK_F_WRITE_ZEROES)) {
      b.maxWriteZeroesSectors = v.getUint32(VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SECTORS, true);
      b.maxWriteZeroesSeg = v.getUint32(VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SEG, true);
    }
    info.blk = b;
  }
  return info;
}

/** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX: the kernel's upper bound for a vstats queue index. */
const VQ_PAIRS_MAX = 0x8000;

/** VDPA_CMD_DEV_VSTATS_GET (vdpa_dev_vendor_stats_fill / vdpa_fill_stats_rec). */
export function devVstatsInfo(dev: VdpaDevice, qidx: number): DevVstatsInfo {
  const deviceId = dev.getDeviceId();
  if (deviceId !== VIRTIO_ID_NET) throw new KernelError(EOPNOTSUPP, '');
  if (qidx > VQ_PAIRS_MAX) throw KernelError.mod(ERANGE, 'queue index exceeds max value');
  if (!dev.getVendorVqStats) throw new KernelError(EOPNOTSUPP, '');
  if (!(dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) throw KernelError.mod(EAGAIN, 'feature negotiation not complete');
  const negotiatedFeatures = dev.getDriverFeatures();
  // The kernel always sends max_virtqueue_pairs here; iproute2 uses it to spot the control queue.
  const cfg = dev.getConfig(8, 2);
  const info: DevVstatsInfo = { name: dev.name, deviceId, qidx, maxVqp: cfg[0]! | (cfg[1]! << 8), negotiatedFeatures, stats: [] };
  // The driver's get_vendor_vq_stats refuses a queue it does not have (no extack).
  if (qidx >= dev.nvqs) throw new KernelError(EINVAL, '');
  info.stats = dev.getVendorVqStats(qidx).stats.map(([n, v]) => [n, v]);
  return info;
}
