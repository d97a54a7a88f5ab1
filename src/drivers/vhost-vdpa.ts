// The vhost_vdpa bus driver (Linux drivers/vhost/vdpa.c): each bound device gets a node
// `vhost-vdpa-N`; opening it gives one owner the vhost uAPI (include/uapi/linux/vhost.h) over
// the device's config ops — a byte-level ioctl() whose argument structs are laid out as the
// uapi, a typed facade that encodes into the same ioctl(), and writeMsg() for IOTLB messages
// (struct vhost_msg / vhost_msg_v2). Errors are the errno Linux returns (VhostError).
//
// Kick and call are doorbells (src/worker/doorbell.ts), what eventfds are to Linux: the `fd`
// of struct vhost_vring_file is the doorbell's memory offset (-1 unbinds, VHOST_FILE_UNBIND).
// The node watches the kick doorbell and calls kick_vq; the device's used-buffer callback
// rings the call doorbell. In one thread, doorbell rings are delivered in a microtask.
//
// Every rule below follows Linux ≥ 6.10's drivers/vhost/vdpa.c and drivers/vhost/vhost.c;
// where this file differs (a device op that Linux treats as void but our simulator refuses)
// the comment says so.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { VdpaBusDriver, VdpaDevice } from '../bus/bus.ts';
import type { IotlbEntry } from '../platform/iotlb.ts';
import type { VqState } from '../ring/vq-state.ts';
import { Doorbell, DoorbellWaiter, DOORBELL_SIZE } from '../worker/doorbell.ts';
import { VhostTypedFile } from '../vhost/typed-file.ts';
import { VhostError, ERRNO, type ErrnoName } from '../vhost/errno.ts';
import {
  VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_RING_PACKED, hasFeature,
} from '../virtio/constants.ts';
import * as U from '../vhost/uapi.ts';
import { VHOST_LOG_PAGE } from '../migration/dirty-log.ts';

const U64_MAX = (1n << 64n) - 1n;
const BIT = (b: number): bigint => 1n << BigInt(b);

/**
 * vdpa.c VHOST_VDPA_BACKEND_FEATURES: what every vhost-vdpa node offers; SUSPEND, RESUME,
 * DESC_ASID and IOTLB_PERSIST are added only when the device can do them.
 */
const VHOST_VDPA_BACKEND_FEATURES = BIT(U.VHOST_BACKEND_F_IOTLB_MSG_V2) | BIT(U.VHOST_BACKEND_F_IOTLB_BATCH) | BIT(U.VHOST_BACKEND_F_IOTLB_ASID);
/** What SET_BACKEND_FEATURES may ask for (vhost_vdpa_unlocked_ioctl). */
const SETTABLE_BACKEND_FEATURES = VHOST_VDPA_BACKEND_FEATURES | BIT(U.VHOST_BACKEND_F_DESC_ASID) |
  BIT(U.VHOST_BACKEND_F_IOTLB_PERSIST) | BIT(U.VHOST_BACKEND_F_SUSPEND) | BIT(U.VHOST_BACKEND_F_RESUME) |
  BIT(U.VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK);

const EMPTY = new Uint8Array(0);
/** vhost.h VHOST_F_LOG_ALL as a mask. */
const LOG_ALL = BIT(U.VHOST_F_LOG_ALL);

function fail(errno: ErrnoName, msg: string, opts?: { cause?: unknown; detail?: ErrnoName }): never {
  throw new VhostError(errno, msg, opts);
}

/**
 * The errno for an error a device op threw. `busy` is what a FailedPrecondition becomes
 * (EINVAL for most ops; Linux's own ops are void or return -EINVAL there).
 */
function fromDevice(e: unknown, what: string, busy: ErrnoName = 'EINVAL'): never {
  if (e instanceof VhostError) throw e;
  if (e instanceof VirtioError) {
    const errno: ErrnoName = e.code === Code.NotFound ? 'ENODEV'
      : e.code === Code.FailedPrecondition ? busy
      : e.code === Code.ResourceExhausted ? 'ENOMEM'
      : e.code === Code.Unsupported ? 'EOPNOTSUPP'
      : e.code === Code.InvalidArgument || e.code === Code.AlreadyExists ? 'EINVAL'
      : 'EIO';
    fail(errno, `${what}: ${e.rawMessage}`, { cause: e });
  }
  fail('EIO', `${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}

/** One mapping of a vhost address space (struct vhost_iotlb_map): [first, last] → uaddr. */
interface Map1 {
  first: bigint;
  last: bigint;
  uaddr: number;
  perm: number;
}

/** One vhost queue's bookkeeping (the parts of struct vhost_virtqueue vhost-vdpa uses). */
interface Vq {
  kick: Doorbell | null;
  call: Doorbell | null;
}

/** A node: one bound device (struct vhost_vdpa). */
class Node {
  readonly name: string;
  readonly minor: number;
  readonly dev: VdpaDevice;
  file: VhostVdpaFile | null = null;

  constructor(dev: VdpaDevice, minor: number) {
    this.dev = dev;
    this.minor = minor;
    this.name = `vhost-vdpa-${minor}`;
  }
}

/** A vhost-vdpa node as plain data. */
export interface VhostVdpaNodeInfo {
  /** Node name, as Linux names the char device (vhost-vdpa-0, …). */
  name: string;
  /** The vdpa device behind it. */
  device: string;
  /** True while a file has it open. */
  open: boolean;
}

/** The vhost_vdpa bus driver. */
export class VhostVdpa implements VdpaBusDriver {
  /** The driver's name on the bus (bind with bus.bind(dev, 'vhost_vdpa')). */
  readonly name = 'vhost_vdpa';
  /** The platform whose memory holds the doorbells (and the rings the VMM lays out). */
  readonly platform: Platform;
  private readonly nodesByDev = new Map<string, Node>();
  private readonly nodesByName = new Map<string, Node>();

  constructor(platform: Platform) {
    this.platform = platform;
  }

  /**
   * Takes `dev` over and makes its node (vhost_vdpa_probe). A device with several groups or
   * address spaces but no map ops of its own is refused (EOPNOTSUPP), as Linux does.
   */
  probe(dev: VdpaDevice): void {
    if (!dev.setMap && !dev.dmaMap && (dev.ngroups > 1 || dev.nas > 1)) {
      fail('EOPNOTSUPP', `${dev.name} has ${dev.ngroups} groups and ${dev.nas} address spaces but no map ops`);
    }
    // The smallest free minor, as vhost_vdpa_ida hands them out.
    const used = new Set([...this.nodesByDev.values()].map((n) => n.minor));
    let minor = 0;
    while (used.has(minor)) minor++;
    const node = new Node(dev, minor);
    this.nodesByDev.set(dev.name, node);
    this.nodesByName.set(node.name, node);
  }

  /**
   * Lets `dev` go (vhost_vdpa_remove). Linux waits for the file to be closed; here an open file
   * is closed at once (the device is reset) and refuses every later call with ENODEV.
   */
  remove(dev: VdpaDevice): void {
    const node = this.nodesByDev.get(dev.name);
    if (!node) return;
    this.nodesByDev.delete(dev.name);
    this.nodesByName.delete(node.name);
    node.file?.revoke();
    node.file = null;
  }

  /** The nodes, in minor order. */
  get nodes(): VhostVdpaNodeInfo[] {
    return [...this.nodesByDev.values()].sort((a, b) => a.minor - b.minor)
      .map((n) => ({ name: n.name, device: n.dev.name, open: n.file !== null }));
  }

  /** The node name of device `devName`. Throws VirtioError(NotFound) if it is not bound here. */
  nodeOf(devName: string): string {
    const n = this.nodesByDev.get(devName);
    if (!n) throw new VirtioError(Code.NotFound, `${devName} is not bound to vhost_vdpa`);
    return n.name;
  }

  /**
   * Opens node `name` (vhost_vdpa_open): the device is reset and the caller gets the only file
   * of it. ENOENT for no such node, EBUSY while another file has it open.
   */
  open(name: string): VhostVdpaFile {
    const node = this.nodesByName.get(name);
    if (!node) fail('ENOENT', `no vhost-vdpa node ${String(name)}`);
    if (node.file) fail('EBUSY', `${name} is already open`);
    const f = new VhostVdpaFile(this.platform, node.dev, node.name, () => {
      if (node.file === f) node.file = null;
    });
    node.file = f;
    return f;
  }
}

/**
 * An open vhost-vdpa node (the `struct file` of /dev/vhost-vdpa-N). Every method is plain data
 * in and out, so a channel can carry it to another thread. Calls on a closed file throw EBADF;
 * on a file whose device left the driver, ENODEV. The typed methods (getFeatures, setVringNum,
 * …) are {@link VhostTypedFile}'s, encoded into {@link ioctl} and {@link writeMsg}.
 */
export class VhostVdpaFile extends VhostTypedFile {
  /** Node name. */
  readonly node: string;
  private readonly platform: Platform;
  private readonly dev: VdpaDevice;
  private readonly onClose: () => void;
  private readonly vqs: Vq[];
  private owner = false;
  private acked = 0n;
  private suspended = false;
  private inBatch = false;
  private batchAsid = 0;
  private batchSnapshot: Map1[] | null = null;
  private configCall: Doorbell | null = null;
  /** Address spaces with their mappings, sorted by first IOVA (struct vhost_vdpa_as). */
  private readonly as = new Map<number, Map1[]>();
  private waiter: DoorbellWaiter | null = null;
  /** Queues kicked by each watched doorbell (by address): one eventfd may serve several vqs. */
  private readonly kickers = new Map<number, Set<number>>();
  private state: 'open' | 'closed' | 'revoked' = 'open';
  /** VHOST_F_LOG_ALL acked. */
  private logAll = false;
  /** VHOST_SET_LOG_BASE: memory offset of the bitmap, or -1. */
  private logBase = -1;
  /** Guest RAM the log covers: memory offset of GPA 0 and its bytes (setLogRegion). */
  private logRegion: { base: number; size: number };
  /** True while this node has the platform's (one) wasm log set. */
  private logging = false;
  /** Kicks whose kick_vq threw (a deleted device); counted, never thrown into a microtask. */
  kickErrors = 0;

  /** @internal made by {@link VhostVdpa.open}. */
  constructor(platform: Platform, dev: VdpaDevice, node: string, onClose: () => void) {
    super();
    this.platform = platform;
    this.dev = dev;
    this.node = node;
    this.onClose = onClose;
    this.vqs = Array.from({ length: dev.nvqs }, () => ({ kick: null, call: null }));
    this.logRegion = { base: platform.ramBase, size: platform.ramSize };
    try {
      this.resetDevice(); // vhost_vdpa_open resets the device, with a clean map
    } catch (e) {
      this.state = 'closed';
      onClose();
      fromDevice(e, 'open');
    }
  }

  // ───────────────────────── the byte-level face ─────────────────────────

  /**
   * One ioctl: `request` is a VHOST_* code, `arg` the argument struct as the uapi lays it out
   * (little-endian). Returns the struct the kernel would write back for a request that reads
   * (_IOR / _IOWR; VHOST_VDPA_GET_CONFIG returns header + buf), else 0. Throws VhostError with
   * Linux's errno: ENOTTY for a request vhost-vdpa does not know, EFAULT for an argument
   * shorter than its struct, and each op's own errors.
   */
  ioctl(request: number, arg: Uint8Array = EMPTY): Uint8Array | number {
    this.live();
    if (!(arg instanceof Uint8Array)) fail('EFAULT', 'the argument must be a Uint8Array');
    const req = request >>> 0;
    const a = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const dev = this.dev;
    switch (req) {
      case U.VHOST_SET_BACKEND_FEATURES:
        return this.setBackendFeaturesRaw(this.u64(a));
      case U.VHOST_VDPA_GET_DEVICE_ID:
        return out32(this.op(() => dev.getDeviceId(), 'get_device_id'));
      case U.VHOST_VDPA_GET_STATUS:
        return Uint8Array.of(this.op(() => dev.getStatus(), 'get_status'));
      case U.VHOST_VDPA_SET_STATUS:
        this.need(a, 1);
        return this.setStatusRaw(a.getUint8(0));
      case U.VHOST_VDPA_GET_CONFIG:
      case U.VHOST_VDPA_SET_CONFIG:
        return this.config(req === U.VHOST_VDPA_SET_CONFIG, a, arg);
      case U.VHOST_GET_FEATURES:
        // Beyond Linux: VHOST_F_LOG_ALL is offered too (vhost-vdpa has no dirty log; we do).
        return out64(this.op(() => dev.getDeviceFeatures(), 'get_device_features') | LOG_ALL);
      case U.VHOST_SET_FEATURES: {
        const f = this.u64(a);
        // VHOST_F_LOG_ALL is the node's, never the device's. As vhost (vhost_dev_set_features
        // while a VMM migrates), it may be toggled at any time: a SET_FEATURES after FEATURES_OK
        // that changes only that bit is accepted. Anything else then is EBUSY, as vdpa.c:
        // "It's not allowed to change the features after they have been negotiated."
        if (this.status() & VIRTIO_CONFIG_S_FEATURES_OK) {
          const cur = this.op(() => dev.getDriverFeatures(), 'get_driver_features');
          if ((f & ~LOG_ALL) !== cur) fail('EBUSY', 'features were already negotiated (FEATURES_OK)');
        } else {
          this.op(() => dev.setDriverFeatures(f & ~LOG_ALL), 'set_driver_features');
        }
        this.logAll = (f & LOG_ALL) !== 0n;
        this.updateLog();
        return 0;
      }
      case U.VHOST_VDPA_GET_VRING_NUM:
        return out16(this.op(() => dev.getVqNumMax(), 'get_vq_num_max'));
      case U.VHOST_VDPA_GET_GROUP_NUM:
        return out32(dev.ngroups);
      case U.VHOST_VDPA_GET_AS_NUM:
        return out32(dev.nas);
      case U.VHOST_SET_LOG_BASE:
        // Beyond Linux, whose vhost-vdpa returns -ENOIOCTLCMD (ENOTTY) here: see setLogBase().
        if (!this.owner) fail('EPERM', 'VHOST_SET_OWNER first');
        return this.setLogBaseRaw(this.u64(a));
      case U.VHOST_SET_LOG_FD:
        // vhost signals log writes through this eventfd; our log is polled by the VMM (DirtyLog's
        // read-and-clear), so, as Linux vhost-vdpa, ENOTTY.
        return fail('ENOTTY', 'no dirty-log eventfd: the VMM reads the bitmap');
      case U.VHOST_VDPA_SET_CONFIG_CALL: {
        this.need(a, 4);
        const db = this.doorbell(a.getInt32(0, true));
        this.configCall = db;
        this.op(() => dev.setConfigCb(db ? () => db.ring() : null), 'set_config_cb');
        return 0;
      }
      case U.VHOST_GET_BACKEND_FEATURES:
        return out64(this.offeredBackendFeatures());
      case U.VHOST_VDPA_GET_IOVA_RANGE: {
        // The device has no get_iova_range and does its own mapping: [0, U64_MAX], as vhost_vdpa_set_iova_range.
        const b = new Uint8Array(U.VHOST_VDPA_IOVA_RANGE.SIZE);
        new DataView(b.buffer).setBigUint64(U.VHOST_VDPA_IOVA_RANGE.last, U64_MAX, true);
        return b;
      }
      case U.VHOST_VDPA_GET_CONFIG_SIZE:
        return out32(this.op(() => dev.getConfigSize(), 'get_config_size'));
      case U.VHOST_VDPA_GET_VQS_COUNT:
        return out32(dev.nvqs);
      case U.VHOST_VDPA_SUSPEND:
        return this.suspendRaw();
      case U.VHOST_VDPA_RESUME:
        return this.resumeRaw();
      default:
        return this.devIoctl(req, a);
    }
  }

  /**
   * Writes one IOTLB message (vhost_chr_write_iter): a struct vhost_msg (type
   * VHOST_IOTLB_MSG) or vhost_msg_v2 (VHOST_IOTLB_MSG_V2; its asid counts only once
   * VHOST_BACKEND_F_IOTLB_ASID is negotiated). Returns the bytes consumed (72). As in Linux,
   * a malformed message is EINVAL and any failure of the message itself is EFAULT, with the
   * inner errno (EEXIST for an overlap, EINVAL for a bad range or ASID, EPERM without an owner,
   * ENOMEM for a full device map) in `detail`.
   *
   * UPDATE maps [iova, iova + size) to platform memory offset `uaddr` (the VMM's user address)
   * with perm RO/WO/RW; INVALIDATE removes every mapping overlapping the range; between
   * BATCH_BEGIN and BATCH_END updates of one ASID accumulate and reach the device at END in
   * one setMap (a failed END leaves the device map and this table as before BEGIN).
   */
  writeMsg(msg: Uint8Array): number {
    this.live();
    if (!(msg instanceof Uint8Array) || msg.length < 4) fail('EINVAL', 'an IOTLB message starts with a 4-byte type');
    const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    const type = v.getUint32(0, true);
    let asid = 0;
    if (type === U.VHOST_IOTLB_MSG_V2) {
      if (msg.length < 8) fail('EINVAL', 'short vhost_msg_v2');
      if (this.hasBackend(U.VHOST_BACKEND_F_IOTLB_ASID)) asid = v.getUint32(U.VHOST_MSG_V2.asid, true);
    } else if (type !== U.VHOST_IOTLB_MSG) {
      fail('EINVAL', `unknown message type ${type}`);
    }
    const o = U.VHOST_MSG.iotlb;
    if (msg.length < o + U.VHOST_IOTLB_MSG_LAYOUT.SIZE) fail('EINVAL', `an IOTLB message needs ${o + U.VHOST_IOTLB_MSG_LAYOUT.SIZE} bytes, got ${msg.length}`);
    const m = {
      iova: v.getBigUint64(o + U.VHOST_IOTLB_MSG_LAYOUT.iova, true),
      size: v.getBigUint64(o + U.VHOST_IOTLB_MSG_LAYOUT.size, true),
      uaddr: v.getBigUint64(o + U.VHOST_IOTLB_MSG_LAYOUT.uaddr, true),
      perm: v.getUint8(o + U.VHOST_IOTLB_MSG_LAYOUT.perm),
      type: v.getUint8(o + U.VHOST_IOTLB_MSG_LAYOUT.type),
    };
    if ((m.type === U.VHOST_IOTLB_UPDATE || m.type === U.VHOST_IOTLB_INVALIDATE) && m.size === 0n) fail('EINVAL', 'an update or invalidate of 0 bytes');
    try {
      this.iotlbMsg(asid, m);
    } catch (e) {
      if (e instanceof VhostError && this.state === 'open') {
        // vhost_chr_write_iter: "if (ret) { ret = -EFAULT; goto done; }"
        fail('EFAULT', e.rawMessage, { cause: e, detail: e.errnoName as ErrnoName });
      }
      throw e;
    }
    return U.VHOST_MSG.SIZE;
  }

  /**
   * ioctl() as a syscall answers, for byte pipes: never throws; `ret` is 0 or -errno, `out` the
   * struct written back (null for write-only requests and on error).
   */
  ioctlRaw(request: number, arg: Uint8Array = EMPTY): {
    /** 0, or the negative errno the ioctl returned. */
    ret: number;
    /** The bytes the kernel would copy back for an _IOR/_IOWR request, else null. */
    out: Uint8Array | null;
  } {
    try {
      const r = this.ioctl(request, arg);
      return { ret: 0, out: typeof r === 'number' ? null : r };
    } catch (e) {
      return { ret: -errnoOf(e), out: null };
    }
  }

  /** writeMsg() as write(2) answers: the bytes consumed, or -errno. Never throws. */
  writeRaw(msg: Uint8Array): number {
    try {
      return this.writeMsg(msg);
    } catch (e) {
      return -errnoOf(e);
    }
  }

  /** Closes the file (vhost_vdpa_release): the device is reset, maps and doorbells are dropped. Idempotent. */
  close(): void {
    if (this.state !== 'open') return;
    this.release();
    this.state = 'closed';
    this.onClose();
  }

  /** True until close() (or until the device left the driver). */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  /**
   * The waiter that watches this file's kick doorbells (null before the first SET_VRING_KICK).
   * A device worker waits on it (wait() / waitAsync()); in one thread rings arrive by microtask.
   */
  get kickWaiter(): DoorbellWaiter | null {
    return this.waiter;
  }

  /**
   * Our extension (no ioctl): the guest RAM the log covers, `[base, base + size)` in memory
   * offsets, GPA 0 at `base`; whole 4 KiB pages. EINVAL outside the memory.
   */
  setLogRegion(r: { base: number; size: number }): void {
    this.live();
    const mem = this.platform.memory.buffer.byteLength;
    if (!Number.isSafeInteger(r.base) || !Number.isSafeInteger(r.size) || r.base < 0 || r.size <= 0 || r.size % VHOST_LOG_PAGE !== 0 || r.base + r.size > mem) {
      fail('EINVAL', `log region [${r.base}, +${r.size}) must be whole pages inside the memory`);
    }
    if (this.logBase >= 0 && this.logBase + Math.ceil(r.size / VHOST_LOG_PAGE / 8) > mem) fail('EFAULT', 'the log bitmap would not fit the memory for that region');
    this.logRegion = { base: r.base, size: r.size };
    this.updateLog();
  }

  /** True while the device's writes are being logged (LOG_ALL acked and a log base set). */
  get logActive(): boolean {
    return this.logging;
  }

  // ───────────────────────── implementation ─────────────────────────

  /** vhost_dev_ioctl, then vhost_vdpa_vring_ioctl. */
  private devIoctl(req: number, a: DataView): Uint8Array | number {
    if (req === U.VHOST_SET_OWNER) {
      if (this.owner) fail('EBUSY', 'the device already has an owner');
      this.owner = true;
      return 0;
    }
    // vhost_dev_ioctl: every other request it sees needs the owner.
    if (!this.owner) fail('EPERM', 'VHOST_SET_OWNER first');
    if (req === U.VHOST_RESET_OWNER) {
      this.owner = false;
      return 0;
    }
    if (req === U.VHOST_SET_MEM_TABLE) fail('ENOTTY', 'vhost-vdpa maps memory through IOTLB messages, not a memory table');
    // vhost_vdpa_vring_ioctl: the first u32 of the argument is the queue index.
    this.need(a, 4);
    const idx = a.getUint32(0, true);
    const dev = this.dev;
    if (idx >= dev.nvqs) fail('ENOBUFS', `queue ${idx} is outside 0..${dev.nvqs - 1}`);
    const vq = this.vqs[idx]!;
    const driverOk = (this.status() & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    switch (req) {
      case U.VHOST_VDPA_SET_VRING_ENABLE:
        this.need(a, U.VHOST_VRING_STATE.SIZE);
        // Linux's set_vq_ready is void; our simulator refuses to enable a queue it cannot run
        // (no size/address, before FEATURES_OK): that is EINVAL here.
        this.op(() => dev.setVqReady(idx, a.getUint32(4, true) !== 0), 'set_vq_ready');
        return 0;
      case U.VHOST_VDPA_GET_VRING_GROUP:
      case U.VHOST_VDPA_GET_VRING_DESC_GROUP: {
        const get = req === U.VHOST_VDPA_GET_VRING_GROUP ? dev.getVqGroup : dev.getVqDescGroup;
        if (!get) fail('EOPNOTSUPP', 'the device has no virtqueue groups of this kind');
        const g = this.op(() => get.call(dev, idx), 'get_vq_group');
        if (g >= dev.ngroups) fail('EIO', `the device put queue ${idx} in group ${g} of ${dev.ngroups}`);
        return U.encodeVringState(idx, g);
      }
      case U.VHOST_VDPA_SET_GROUP_ASID: {
        this.need(a, U.VHOST_VRING_STATE.SIZE);
        const asid = a.getUint32(4, true);
        if (asid >= dev.nas) fail('EINVAL', `address space ${asid} is outside 0..${dev.nas - 1}`);
        if (!dev.setGroupAsid) fail('EOPNOTSUPP', 'the device cannot bind groups to address spaces');
        this.op(() => dev.setGroupAsid!(idx, asid), 'set_group_asid', 'EBUSY');
        return 0;
      }
      case U.VHOST_VDPA_GET_VRING_SIZE: {
        if (!dev.getVqSize) fail('EOPNOTSUPP', 'the device does not report queue sizes');
        return U.encodeVringState(idx, this.op(() => dev.getVqSize!(idx), 'get_vq_size'));
      }
      case U.VHOST_GET_VRING_BASE: {
        const s = this.op(() => dev.getVqState(idx), 'get_vq_state');
        const num = s.layout === 'packed'
          ? ((s.lastAvailIdx | (s.lastAvailWrap << 15)) | ((s.lastUsedIdx | (s.lastUsedWrap << 15)) << 16)) >>> 0
          : s.availIndex;
        return U.encodeVringState(idx, num);
      }
      case U.VHOST_SET_VRING_NUM: {
        this.need(a, U.VHOST_VRING_STATE.SIZE);
        const num = a.getUint32(4, true);
        // vhost_vring_set_num: "if (!s.num || s.num > 0xffff || (s.num & (s.num - 1))) return -EINVAL;"
        if (!num || num > 0xffff || (num & (num - 1))) fail('EINVAL', `queue size ${num} is not a power of two in 1..32768`);
        this.op(() => dev.setVqNum(idx, num), 'set_vq_num');
        return 0;
      }
      case U.VHOST_SET_VRING_ADDR: {
        this.need(a, U.VHOST_VRING_ADDR.SIZE);
        const flags = a.getUint32(U.VHOST_VRING_ADDR.flags, true);
        const desc = a.getBigUint64(U.VHOST_VRING_ADDR.desc_user_addr, true);
        const used = a.getBigUint64(U.VHOST_VRING_ADDR.used_user_addr, true);
        const avail = a.getBigUint64(U.VHOST_VRING_ADDR.avail_user_addr, true);
        const log = a.getBigUint64(U.VHOST_VRING_ADDR.log_guest_addr, true);
        // vhost_vring_set_addr: only VHOST_VRING_F_LOG is a known flag; avail 2-, used and log 4-aligned.
        if (flags & ~1) fail('EOPNOTSUPP', `unknown vring flags 0x${flags.toString(16)}`);
        if ((avail & 1n) || (used & 3n) || (log & 3n)) fail('EINVAL', 'the avail ring must be 2-aligned, the used ring and log 4-aligned');
        // Linux 6.8 ("vdpa: Block vq property changes in DRIVER_OK"): not while running, unless suspended.
        if (driverOk && !this.suspended) fail('EINVAL', 'queue addresses cannot change after DRIVER_OK unless the device is suspended');
        this.op(() => dev.setVqAddress(idx, desc, avail, used), 'set_vq_address');
        return 0;
      }
      case U.VHOST_SET_VRING_BASE: {
        this.need(a, U.VHOST_VRING_STATE.SIZE);
        const num = a.getUint32(4, true);
        const packed = hasFeature(this.op(() => dev.getDriverFeatures(), 'get_driver_features'), VIRTIO_F_RING_PACKED);
        if (!packed && num > 0xffff) fail('EINVAL', `split ring base ${num} is not a u16`);
        if (driverOk && !this.suspended) fail('EINVAL', 'the queue base cannot change after DRIVER_OK unless the device is suspended');
        const size = dev.getVqSize ? this.op(() => dev.getVqSize!(idx), 'get_vq_size') : this.op(() => dev.getVqNumMax(), 'get_vq_num_max');
        // Split: only the avail index crosses (vdpa_vq_state_split); the used index starts
        // equal to it, as vdpa_sim and vhost-user do.
        const st: VqState = packed
          ? {
            version: 1, layout: 'packed', size,
            lastAvailIdx: num & 0x7fff, lastAvailWrap: ((num >>> 15) & 1) as 0 | 1,
            lastUsedIdx: (num >>> 16) & 0x7fff, lastUsedWrap: ((num >>> 31) & 1) as 0 | 1,
          }
          : { version: 1, layout: 'split', size, availIndex: num, usedIndex: num };
        this.op(() => dev.setVqState(idx, st), 'set_vq_state');
        return 0;
      }
      case U.VHOST_SET_VRING_KICK: {
        this.need(a, U.VHOST_VRING_FILE.SIZE);
        const db = this.doorbell(a.getInt32(U.VHOST_VRING_FILE.fd, true));
        this.unkick(idx);
        vq.kick = db;
        if (db) {
          const set = this.kickers.get(db.handle.addr);
          if (set) {
            set.add(idx);
            return 0;
          }
          const mine = new Set([idx]);
          this.kickers.set(db.handle.addr, mine);
          if (!this.waiter) this.waiter = new DoorbellWaiter(this.platform);
          // handle_vq_kick: ops->kick_vq for each queue on this doorbell. A device deleted
          // meanwhile must not throw into a microtask: counted instead.
          this.waiter.watch(db, () => {
            for (const i of mine) {
              try {
                dev.kickVq(i);
              } catch {
                this.kickErrors++;
              }
            }
          });
        }
        return 0;
      }
      case U.VHOST_SET_VRING_CALL: {
        this.need(a, U.VHOST_VRING_FILE.SIZE);
        const db = this.doorbell(a.getInt32(U.VHOST_VRING_FILE.fd, true));
        vq.call = db;
        this.op(() => dev.setVqCb(idx, db ? () => db.ring() : null), 'set_vq_cb');
        return 0;
      }
      default:
        // VRING_ERR, ENDIAN, BUSYLOOP and anything unknown: -ENOIOCTLCMD, which the syscall returns as ENOTTY.
        return fail('ENOTTY', `request 0x${req.toString(16)} is not a vhost-vdpa ioctl`);
    }
  }

  /** Stops queue idx's kick doorbell from kicking it (and stops watching a doorbell no queue uses). */
  private unkick(idx: number): void {
    const vq = this.vqs[idx]!;
    const db = vq.kick;
    if (!db) return;
    vq.kick = null;
    const set = this.kickers.get(db.handle.addr);
    set?.delete(idx);
    if (set && set.size === 0) {
      this.kickers.delete(db.handle.addr);
      this.waiter?.unwatch(db);
    }
  }

  private setBackendFeaturesRaw(f: bigint): number {
    const dev = this.dev;
    if (f & ~SETTABLE_BACKEND_FEATURES) fail('EOPNOTSUPP', `backend features 0x${(f & ~SETTABLE_BACKEND_FEATURES).toString(16)} are unknown`);
    if ((f & BIT(U.VHOST_BACKEND_F_SUSPEND)) && !dev.suspend) fail('EOPNOTSUPP', 'the device cannot suspend');
    if ((f & BIT(U.VHOST_BACKEND_F_RESUME)) && !dev.resume) fail('EOPNOTSUPP', 'the device cannot resume');
    if ((f & BIT(U.VHOST_BACKEND_F_DESC_ASID)) && !(f & BIT(U.VHOST_BACKEND_F_IOTLB_ASID))) fail('EINVAL', 'DESC_ASID needs IOTLB_ASID');
    if ((f & BIT(U.VHOST_BACKEND_F_DESC_ASID)) && !dev.getVqDescGroup) fail('EOPNOTSUPP', 'the device has no descriptor groups');
    if ((f & BIT(U.VHOST_BACKEND_F_IOTLB_PERSIST)) && !this.hasPersistentMap()) fail('EOPNOTSUPP', 'the device cannot keep its maps across reset');
    this.acked = f;
    return 0;
  }

  private setLogBaseRaw(addr: bigint): number {
    const bytes = Math.ceil(this.logRegion.size / VHOST_LOG_PAGE / 8);
    // vhost's log_access_ok: the whole bitmap must be addressable (here: inside the memory).
    if (addr + BigInt(bytes) > BigInt(this.platform.memory.buffer.byteLength)) fail('EFAULT', `a ${bytes}-byte log at 0x${addr.toString(16)} is outside the memory`);
    this.logBase = Number(addr);
    this.updateLog();
    return 0;
  }

  /** Sets or clears the wasm log: on only with LOG_ALL acked and a base set. */
  private updateLog(): void {
    const on = this.logAll && this.logBase >= 0 && this.state === 'open';
    if (on) {
      this.platform.exports.dirty_log_set(this.logBase, this.logRegion.base, this.logRegion.size / VHOST_LOG_PAGE);
    } else if (this.logging) {
      this.platform.exports.dirty_log_set(0, 0, 0);
    }
    this.logging = on;
  }

  /** VHOST_GET_BACKEND_FEATURES: the base set plus what the device can really do. */
  private offeredBackendFeatures(): bigint {
    const dev = this.dev;
    let f = VHOST_VDPA_BACKEND_FEATURES;
    if (dev.suspend) f |= BIT(U.VHOST_BACKEND_F_SUSPEND);
    if (dev.resume) f |= BIT(U.VHOST_BACKEND_F_RESUME);
    if (dev.getVqDescGroup) f |= BIT(U.VHOST_BACKEND_F_DESC_ASID);
    if (this.hasPersistentMap()) f |= BIT(U.VHOST_BACKEND_F_IOTLB_PERSIST);
    return f | this.parentBackendFeatures();
  }

  private parentBackendFeatures(): bigint {
    return this.dev.getBackendFeatures ? this.op(() => this.dev.getBackendFeatures!(), 'get_backend_features') : 0n;
  }

  /** vhost_vdpa_has_persistent_map: no map of its own, a reset_map op, or the device says so. */
  private hasPersistentMap(): boolean {
    const dev = this.dev;
    return (!dev.setMap && !dev.dmaMap) || !!dev.resetMap || (this.parentBackendFeatures() & BIT(U.VHOST_BACKEND_F_IOTLB_PERSIST)) !== 0n;
  }

  private hasBackend(bit: number): boolean {
    return (this.acked & BIT(bit)) !== 0n;
  }

  private setStatusRaw(status: number): number {
    const old = this.status();
    // "Userspace shouldn't remove status bits unless reset the status to 0."
    if (status !== 0 && (old & ~status) !== 0) fail('EINVAL', `status bits 0x${(old & ~status).toString(16)} can only be cleared by a reset (status 0)`);
    if (status === 0) {
      this.resetDevice();
      return 0;
    }
    // Linux's vdpa_set_status is void; our simulator refuses writes that break the order of
    // VIRTIO 1.3 §3.1.1 (DRIVER before ACKNOWLEDGE …): EINVAL here.
    this.op(() => this.dev.setStatus(status), 'set_status');
    return 0;
  }

  /** _compat_vdpa_reset: reset; the maps stay only with IOTLB_PERSIST (else VDPA_RESET_F_CLEAN_MAP). */
  private resetDevice(): void {
    // A batch still open is dropped: its updates never reached the device, so the table goes
    // back to what the device had (Linux clears in_batch on open and release).
    const open = this.inBatch ? this.as.get(this.batchAsid) : undefined;
    if (open && this.batchSnapshot) {
      open.length = 0;
      open.push(...this.batchSnapshot);
    }
    this.inBatch = false;
    this.batchSnapshot = null;
    this.suspended = false;
    // A reset clears the negotiated features, LOG_ALL with them; the log base stays (vhost keeps log_base).
    this.logAll = false;
    this.updateLog();
    this.op(() => this.dev.reset(), 'reset');
    // Our simulator's reset puts every address space back on its identity map (the clean map).
    // With IOTLB_PERSIST the node's tables go back in. Without it, as in Linux, the node keeps
    // its tables (an UPDATE overlapping one is still EEXIST) while the device runs on the clean map.
    if (this.hasBackend(U.VHOST_BACKEND_F_IOTLB_PERSIST)) {
      for (const asid of this.as.keys()) this.apply(asid);
    }
  }

  private suspendRaw(): number {
    // Linux 6.8 ("vdpa: Track device suspended state"): a device that is not running (no
    // DRIVER_OK) is not suspended, the call is a no-op; v->suspended is what the vq rules test.
    if (!(this.status() & VIRTIO_CONFIG_S_DRIVER_OK)) return 0;
    if (!this.dev.suspend) fail('EOPNOTSUPP', 'the device cannot suspend');
    if (!this.suspended) this.op(() => this.dev.suspend!(), 'suspend');
    this.suspended = true;
    return 0;
  }

  private resumeRaw(): number {
    if (!(this.status() & VIRTIO_CONFIG_S_DRIVER_OK)) return 0;
    if (!this.dev.resume) fail('EOPNOTSUPP', 'the device cannot resume');
    // vdpa_sim's resume of a running device does nothing; ours would refuse, so skip it.
    if (this.suspended) this.op(() => this.dev.resume!(), 'resume');
    this.suspended = false;
    return 0;
  }

  /** VHOST_VDPA_GET_CONFIG / SET_CONFIG with vhost_vdpa_config_validate. */
  private config(write: boolean, a: DataView, arg: Uint8Array): Uint8Array | number {
    this.need(a, U.VHOST_VDPA_CONFIG.SIZE);
    const off = a.getUint32(U.VHOST_VDPA_CONFIG.off, true);
    const len = a.getUint32(U.VHOST_VDPA_CONFIG.len, true);
    const size = this.op(() => this.dev.getConfigSize(), 'get_config_size');
    // vhost_vdpa_config_validate returns EINVAL or E2BIG; both callers return -EINVAL for either.
    if (len === 0 || off > size) fail('EINVAL', `config range [${off}, +${len}) is empty or starts past ${size}`);
    if (len > size - off) fail('EINVAL', `config range [${off}, +${len}) runs past ${size}`, { detail: 'E2BIG' });
    if (write) {
      if (arg.length < U.VHOST_VDPA_CONFIG.SIZE + len) fail('EFAULT', `vhost_vdpa_config says ${len} bytes, the argument carries ${arg.length - U.VHOST_VDPA_CONFIG.SIZE}`);
      const data = arg.slice(U.VHOST_VDPA_CONFIG.buf, U.VHOST_VDPA_CONFIG.buf + len);
      // Linux's set_config is void; our device refuses read-only fields: EINVAL here.
      this.op(() => this.dev.setConfig(off, data), 'set_config');
      return 0;
    }
    const data = this.op(() => this.dev.getConfig(off, len), 'get_config');
    const b = new Uint8Array(U.VHOST_VDPA_CONFIG.SIZE + len);
    b.set(arg.subarray(0, U.VHOST_VDPA_CONFIG.SIZE));
    b.set(data, U.VHOST_VDPA_CONFIG.buf);
    return b;
  }

  /** vhost_vdpa_process_iotlb_msg. */
  private iotlbMsg(asid: number, m: { iova: bigint; size: bigint; uaddr: bigint; perm: number; type: number }): void {
    if (!this.owner) fail('EPERM', 'VHOST_SET_OWNER first');
    let table = this.as.get(asid);
    if (m.type === U.VHOST_IOTLB_UPDATE || m.type === U.VHOST_IOTLB_BATCH_BEGIN) {
      if (asid >= this.dev.nas) fail('EINVAL', `address space ${asid} is outside 0..${this.dev.nas - 1}`);
      if (!table) this.as.set(asid, (table = []));
    }
    if (this.inBatch && this.batchAsid !== asid) fail('EINVAL', `a batch for address space ${this.batchAsid} is open`);
    if (!table) fail('EINVAL', `address space ${asid} has no mappings`);
    switch (m.type) {
      case U.VHOST_IOTLB_UPDATE:
        this.update(asid, table, m);
        return;
      case U.VHOST_IOTLB_INVALIDATE: {
        const last = m.iova + m.size - 1n;
        const keep = table.filter((e) => e.last < m.iova || e.first > last);
        if (keep.length === table.length) return;
        const before = table.slice();
        table.length = 0;
        table.push(...keep);
        if (!this.inBatch) this.applyOrRestore(asid, table, before);
        return;
      }
      case U.VHOST_IOTLB_BATCH_BEGIN:
        // A second BEGIN continues the open batch (Linux just sets in_batch again): keep the
        // table as the device last saw it, to restore if END fails.
        if (!this.inBatch) this.batchSnapshot = table.slice();
        this.batchAsid = asid;
        this.inBatch = true;
        return;
      case U.VHOST_IOTLB_BATCH_END: {
        const snap = this.batchSnapshot;
        const was = this.inBatch;
        this.inBatch = false;
        this.batchSnapshot = null;
        if (was) this.applyOrRestore(asid, table, snap ?? []);
        return;
      }
      default:
        fail('EINVAL', `unknown IOTLB message type ${m.type}`);
    }
  }

  /** vhost_vdpa_process_iotlb_update (the map goes to the device now, or at BATCH_END). */
  private update(asid: number, table: Map1[], m: { iova: bigint; size: bigint; uaddr: bigint; perm: number }): void {
    // Range checks against the IOVA range [0, U64_MAX], as vhost_vdpa_process_iotlb_update.
    if (m.size === 0n || m.iova > U64_MAX - m.size + 1n) fail('EINVAL', `[${m.iova}, +${m.size}) runs past 2^64`);
    const last = m.iova + m.size - 1n;
    if (table.some((e) => e.first <= last && e.last >= m.iova)) fail('EEXIST', `[0x${m.iova.toString(16)}, +0x${m.size.toString(16)}) overlaps a mapping of address space ${asid}`);
    // Linux does not check perm (perm_to_iommu_flags warns); a device map needs RO, WO or RW.
    if (m.perm < U.VHOST_ACCESS_RO || m.perm > U.VHOST_ACCESS_RW) fail('EINVAL', `perm ${m.perm} is not RO, WO or RW`);
    // The "user address" is an offset into the platform memory; like pin_user_pages on an
    // unmapped address, a target outside the RAM is EFAULT.
    const p = this.platform;
    if (m.uaddr < BigInt(p.ramBase) || m.uaddr + m.size > BigInt(p.ramBase + p.ramSize)) {
      fail('EFAULT', `target [0x${m.uaddr.toString(16)}, +0x${m.size.toString(16)}) is outside the platform RAM`);
    }
    const e: Map1 = { first: m.iova, last, uaddr: Number(m.uaddr), perm: m.perm };
    let i = 0;
    while (i < table.length && table[i]!.first < e.first) i++;
    table.splice(i, 0, e);
    if (!this.inBatch) {
      const before = table.filter((x) => x !== e);
      this.applyOrRestore(asid, table, before);
    }
  }

  /** Installs `table` on the device; on failure puts `before` back in the table and throws. */
  private applyOrRestore(asid: number, table: Map1[], before: Map1[]): void {
    try {
      this.apply(asid);
    } catch (e) {
      table.length = 0;
      table.push(...before);
      throw e;
    }
  }

  /** The whole table of `asid` to the device: set_map (dma_map for a device with only that). */
  private apply(asid: number): void {
    const dev = this.dev;
    const table = this.as.get(asid) ?? [];
    const entries: IotlbEntry[] = table.map((e) => ({ iova: e.first, size: Number(e.last - e.first + 1n), addr: e.uaddr, perm: e.perm }));
    if (dev.setMap) {
      this.op(() => dev.setMap!(asid, entries), 'set_map');
    } else if (dev.dmaMap && dev.dmaUnmap) {
      this.op(() => {
        dev.dmaUnmap!(asid, 0n, Number.MAX_SAFE_INTEGER);
        for (const e of entries) dev.dmaMap!(asid, e);
      }, 'dma_map');
    }
  }

  /** vhost_vdpa_release: reset, drop doorbells and callbacks, remove the address spaces. */
  private release(): void {
    const dev = this.dev;
    const quiet = (fn: () => void) => {
      try {
        fn();
      } catch {
        // the device may already be gone (vdpa dev del): nothing left to undo there
      }
    };
    this.acked &= ~BIT(U.VHOST_BACKEND_F_IOTLB_PERSIST); // the reset on release cleans the maps
    this.logBase = -1;
    quiet(() => this.resetDevice());
    for (let i = 0; i < this.vqs.length; i++) {
      this.unkick(i);
      this.vqs[i]!.call = null;
      quiet(() => dev.setVqCb(i, null));
    }
    quiet(() => dev.setConfigCb(null));
    this.configCall = null;
    // vhost_vdpa_remove_as → reset_map: each address space back to the device's initial map.
    for (const asid of this.as.keys()) if (dev.resetMap) quiet(() => dev.resetMap!(asid));
    this.as.clear();
    this.waiter?.close();
    this.waiter = null;
    this.owner = false;
  }

  /** @internal the device left the driver: release now, refuse everything after (ENODEV). */
  revoke(): void {
    if (this.state !== 'open') return;
    this.release();
    this.state = 'revoked';
  }

  private live(): void {
    if (this.state === 'closed') fail('EBADF', `${this.node} is closed`);
    if (this.state === 'revoked') fail('ENODEV', `the device behind ${this.node} left vhost_vdpa`);
  }

  private status(): number {
    return this.op(() => this.dev.getStatus(), 'get_status');
  }

  private op<T>(fn: () => T, what: string, busy: ErrnoName = 'EINVAL'): T {
    try {
      return fn();
    } catch (e) {
      return fromDevice(e, what, busy);
    }
  }

  private need(a: DataView, n: number): void {
    if (a.byteLength < n) fail('EFAULT', `the argument has ${a.byteLength} bytes, the request needs ${n}`);
  }

  private u64(a: DataView): bigint {
    this.need(a, 8);
    return a.getBigUint64(0, true);
  }

  /**
   * The doorbell an fd field names: -1 (VHOST_FILE_UNBIND) is none. Doorbells live in the
   * platform's private arena (Doorbell.alloc), never in RAM the guest owns: any other address,
   * or one the Doorbell refuses, is EBADF (what a bad eventfd is to Linux).
   */
  private doorbell(fd: number): Doorbell | null {
    if (fd === U.VHOST_FILE_UNBIND) return null;
    const addr = fd >>> 0;
    const p = this.platform;
    if (addr < p.privBase || addr + DOORBELL_SIZE > p.privBase + p.privSize) fail('EBADF', `${fd} is not a doorbell: outside the private arena`);
    try {
      return new Doorbell(p, { addr });
    } catch (e) {
      return fail('EBADF', `${fd} is not a doorbell in this platform's memory`, { cause: e });
    }
  }
}

/** The errno of an error thrown by this file (anything that is not a VhostError is EIO). */
function errnoOf(e: unknown): number {
  return e instanceof VhostError ? e.errno : ERRNO.EIO;
}

function out16(x: number): Uint8Array {
  return Uint8Array.of(x & 0xff, (x >>> 8) & 0xff);
}

function out32(x: number): Uint8Array {
  return U.encodeU32(x);
}

function out64(x: bigint): Uint8Array {
  return U.encodeU64(x);
}

