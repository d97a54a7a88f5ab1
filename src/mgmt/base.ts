// Management devices (Linux struct vdpa_mgmt_dev): they create and delete vdpa devices with
// the attributes iproute2's `vdpa dev add` takes. This is the generic part; each concrete
// management device lives beside its device (devices/net-mgmt.ts, devices/blk-mgmt.ts) and
// registers the device type it makes in VdpaMgmtDeviceTypes.

import { VirtioError, Code } from '../errors.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import type { BlkBackend } from '../devices/blk.ts';
import { VIRTIO_F_VERSION_1, hasFeature } from '../virtio/constants.ts';

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

  /**
   * Validates `attrs` as create() would, creating nothing: a caller that must open storage for
   * the device (a device worker resolving a backend descriptor) asks first. Of `backend` only
   * its presence counts. The default checks the attribute mask.
   */
  checkAttrs(attrs: MgmtDevAttrs): void {
    this.checkAttrMask(attrs);
  }

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

/**
 * The device class each management device name creates, so `bus.devAdd('vdpasim_net', …)` is
 * typed as a VdpaSimNet. Each management device adds its entry (declare module); augment it
 * the same way for your own.
 */
export interface VdpaMgmtDeviceTypes {}

declare module '../bus/bus.ts' {
  interface VdpaBus {
    /** Creates a device through a management device of {@link VdpaMgmtDeviceTypes}: typed as the device it makes. */
    devAdd<N extends keyof VdpaMgmtDeviceTypes>(mgmtdev: N, name: string, attrs?: MgmtDevAttrs): VdpaMgmtDeviceTypes[N];
  }
}
