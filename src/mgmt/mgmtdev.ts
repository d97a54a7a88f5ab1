// Management devices (Linux struct vdpa_mgmt_dev): they create and delete vdpa devices with
// the attributes iproute2's `vdpa dev add` takes. vdpasim_net and vdpasim_blk mirror
// drivers/vdpa/vdpa_sim's management devices.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import { VdpaSimNet, VDPASIM_NET_FEATURES, VDPASIM_NET_MAX_VQP } from '../devices/net.ts';
import { VdpaSimBlk, VDPASIM_BLK_FEATURES, type BlkBackend } from '../devices/blk.ts';
import { constructDevice } from '../devices/sim-core.ts';
import { parseMac } from '../virtio/mac.ts';

export { parseMac, formatMac } from '../virtio/mac.ts';
import { VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VIRTIO_F_VERSION_1, hasFeature, VIRTIO_BLK_F_RO } from '../virtio/constants.ts';

/**
 * Attributes of `vdpa dev add` (VDPA_ATTR_DEV_NET_CFG_MACADDR, _MTU, _MAX_VQP,
 * VDPA_ATTR_DEV_FEATURES), and for block devices a capacity, an initial image or a backend
 * (ours: Linux's vdpasim_blk takes none of them).
 */
export interface MgmtDevAttrs {
  /** MAC address, "aa:bb:cc:dd:ee:ff" or 6 bytes (net). */
  mac?: string | Uint8Array;
  /** MTU (net), 68..65535. */
  mtu?: number;
  /** Queue pairs (net), 1..the management device's maximum. */
  maxVqp?: number;
  /** Features the new device offers: a subset of the management device's supported features. */
  deviceFeatures?: bigint;
  /** Disk size in 512-byte sectors (block; `vdpa dev add … capacity 1G`). @default the image's size, else 8192 */
  capacity?: number;
  /** Initial content of the RAM disk (block): copied in, zero-padded to the capacity. */
  image?: Uint8Array;
  /** An asynchronous backend instead of the RAM disk (block): the device serves it. */
  backend?: BlkBackend;
}

/** Attributes of `vdpa dev set` (VDPA_CMD_DEV_ATTR_SET). */
export interface MgmtDevSetAttrs {
  /** New MAC address (net): "aa:bb:cc:dd:ee:ff" or 6 bytes; unicast and not zero. */
  mac?: string | Uint8Array;
}

/** Attribute names as iproute2 spells them (and ours for block devices). */
export type MgmtAttrName = 'mac' | 'mtu' | 'max_vqp' | 'device_features' | 'capacity' | 'image' | 'backend';

/** A management device: creates devices of its classes. */
export abstract class MgmtDevice {
  /** Name (iproute2 prints it as the mgmtdev handle). */
  abstract readonly name: string;
  /** Device classes it creates (iproute2: "net", "block"). */
  abstract readonly supportedClasses: readonly string[];
  /** Virtio device ids it creates. */
  abstract readonly deviceIds: readonly number[];
  /** Most virtqueues a created device can have. */
  abstract readonly maxSupportedVqs: number;
  /** Features a created device may offer. */
  abstract readonly supportedFeatures: bigint;
  /** Attributes devAdd accepts (the config mask). */
  abstract readonly attrs: readonly MgmtAttrName[];

  /** Makes a device after validating the attributes. Throws InvalidArgument / Unsupported. */
  abstract create(name: string, attrs: MgmtDevAttrs): VdpaDevice;

  /**
   * Changes attributes of a device it made (vdpa_mgmtdev_ops.dev_set_attr, `vdpa dev set`).
   * Absent where the management device cannot (the kernel then answers EOPNOTSUPP).
   */
  setAttr?(dev: VdpaDevice, attrs: MgmtDevSetAttrs): void;

  /** Throws Unsupported for attributes this management device does not take. */
  protected checkAttrMask(attrs: MgmtDevAttrs): void {
    const given: [MgmtAttrName, unknown][] = [
      ['mac', attrs.mac], ['mtu', attrs.mtu], ['max_vqp', attrs.maxVqp], ['device_features', attrs.deviceFeatures],
      ['capacity', attrs.capacity], ['image', attrs.image], ['backend', attrs.backend],
    ];
    for (const [k, v] of given) {
      if (v !== undefined && !this.attrs.includes(k)) throw new VirtioError(Code.Unsupported, `${this.name} does not support attribute ${k}`);
    }
  }

  /** Validates a device_features mask against what this management device supports. */
  protected checkFeatures(f: bigint | undefined): bigint | undefined {
    if (f === undefined) return undefined;
    if (typeof f !== 'bigint' || f < 0n || f >= 1n << 64n) throw new VirtioError(Code.InvalidArgument, 'device_features must be a u64');
    const extra = f & ~this.supportedFeatures;
    if (extra) throw new VirtioError(Code.InvalidArgument, `device_features 0x${f.toString(16)} has unsupported bits 0x${extra.toString(16)}`);
    if (!hasFeature(f, VIRTIO_F_VERSION_1)) throw new VirtioError(Code.InvalidArgument, 'device_features must include VERSION_1 (bit 32)');
    return f;
  }
}

/** The vdpasim_net management device. */
export class VdpaSimNetMgmt extends MgmtDevice {
  readonly name = 'vdpasim_net';
  readonly supportedClasses = ['net'] as const;
  readonly deviceIds = [VIRTIO_ID_NET] as const;
  readonly maxSupportedVqs = 2 * VDPASIM_NET_MAX_VQP + 1; // data pairs + the control queue
  readonly supportedFeatures = VDPASIM_NET_FEATURES;
  readonly attrs: readonly MgmtAttrName[] = ['mac', 'mtu', 'max_vqp', 'device_features'];

  constructor(private readonly platform: Platform) {
    super();
  }

  create(name: string, attrs: MgmtDevAttrs): VdpaSimNet {
    this.checkAttrMask(attrs);
    const mac = attrs.mac === undefined ? undefined : parseMac(attrs.mac);
    if (attrs.mtu !== undefined && (!Number.isInteger(attrs.mtu) || attrs.mtu < 68 || attrs.mtu > 65535)) {
      throw new VirtioError(Code.InvalidArgument, `mtu ${attrs.mtu} is outside 68..65535`);
    }
    if (attrs.maxVqp !== undefined && (!Number.isInteger(attrs.maxVqp) || attrs.maxVqp < 1 || attrs.maxVqp > VDPASIM_NET_MAX_VQP)) {
      throw new VirtioError(Code.InvalidArgument, `max_vqp ${attrs.maxVqp} is outside 1..${VDPASIM_NET_MAX_VQP}`);
    }
    const deviceFeatures = this.checkFeatures(attrs.deviceFeatures);
    const o: ConstructorParameters<typeof VdpaSimNet>[1] = { name };
    if (mac) o.mac = mac;
    if (attrs.mtu !== undefined) o.mtu = attrs.mtu;
    if (attrs.maxVqp !== undefined) o.maxVqp = attrs.maxVqp;
    if (deviceFeatures !== undefined) o.deviceFeatures = deviceFeatures;
    return constructDevice(() => new VdpaSimNet(this.platform, o));
  }

  /** vdpasim_net_set_attr: a new MAC address in config space. */
  setAttr(dev: VdpaDevice, attrs: MgmtDevSetAttrs): void {
    if (!(dev instanceof VdpaSimNet)) throw new VirtioError(Code.InvalidArgument, `${dev.name} is not a vdpasim_net device`);
    if (attrs.mac === undefined) throw new VirtioError(Code.Unsupported, 'no attribute to set');
    dev.setMac(parseMac(attrs.mac));
  }
}

/** The vdpasim_blk management device. */
export class VdpaSimBlkMgmt extends MgmtDevice {
  readonly name = 'vdpasim_blk';
  readonly supportedClasses = ['block'] as const;
  readonly deviceIds = [VIRTIO_ID_BLOCK] as const;
  readonly maxSupportedVqs = 1;
  readonly supportedFeatures = VDPASIM_BLK_FEATURES | (1n << BigInt(VIRTIO_BLK_F_RO));
  readonly attrs: readonly MgmtAttrName[] = ['device_features', 'capacity', 'image', 'backend'];

  /**
   * @param platform Where the devices' rings and RAM disks live.
   * @param capacity Default disk size in sectors for devices added without `capacity` or `image`.
   */
  constructor(private readonly platform: Platform, private readonly capacity = 8192) {
    super();
  }

  create(name: string, attrs: MgmtDevAttrs): VdpaSimBlk {
    this.checkAttrMask(attrs);
    const deviceFeatures = this.checkFeatures(attrs.deviceFeatures);
    const { image, backend } = attrs;
    if (image !== undefined && !(image instanceof Uint8Array)) throw new VirtioError(Code.InvalidArgument, 'image must be a Uint8Array');
    if (backend !== undefined && (image !== undefined || attrs.capacity !== undefined)) {
      throw new VirtioError(Code.InvalidArgument, 'a backend brings its own capacity and content: give no capacity or image with it');
    }
    const capacity = attrs.capacity ?? (image ? Math.max(1, Math.ceil(image.length / 512)) : this.capacity);
    if (image && image.length > capacity * 512) throw new VirtioError(Code.InvalidArgument, `image of ${image.length} bytes does not fit ${capacity} sectors`);
    const o: ConstructorParameters<typeof VdpaSimBlk>[1] = { name, capacity };
    if (backend) o.backend = backend;
    if (deviceFeatures !== undefined) {
      o.deviceFeatures = deviceFeatures;
      o.readOnly = hasFeature(deviceFeatures, VIRTIO_BLK_F_RO);
    }
    const dev = constructDevice(() => new VdpaSimBlk(this.platform, o));
    if (image) this.platform.write(dev.disk, image);
    return dev;
  }
}

/**
 * The device class each management device name creates, so `bus.devAdd('vdpasim_net', …)` is
 * typed as a {@link VdpaSimNet}. Augment it (declare module) for your own management devices.
 */
export interface VdpaMgmtDeviceTypes {
  /** {@link VdpaSimNetMgmt}. */
  vdpasim_net: VdpaSimNet;
  /** {@link VdpaSimBlkMgmt}. */
  vdpasim_blk: VdpaSimBlk;
}

declare module '../bus/bus.ts' {
  interface VdpaBus {
    /** Creates a device through a management device of {@link VdpaMgmtDeviceTypes}: typed as the device it makes. */
    devAdd<N extends keyof VdpaMgmtDeviceTypes>(mgmtdev: N, name: string, attrs?: MgmtDevAttrs): VdpaMgmtDeviceTypes[N];
  }
}
