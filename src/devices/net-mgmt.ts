// The vdpasim_net management device (drivers/vdpa/vdpa_sim/vdpa_sim_net.c vdpasim_net_mgmtdev).

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import { MgmtDevice, type MgmtAttrName, type MgmtDevAttrs, type MgmtDevSetAttrs } from '../mgmt/base.ts';
import { VdpaSimNet, VDPASIM_NET_FEATURES, VDPASIM_NET_MAX_VQP } from './net.ts';
import { constructDevice } from './sim-core.ts';
import { parseMac } from '../virtio/mac.ts';
import { VIRTIO_ID_NET, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_F_SUSPEND, featureBit } from '../virtio/constants.ts';

/** The vdpasim_net management device. */
export class VdpaSimNetMgmt extends MgmtDevice {
  readonly name = 'vdpasim_net';
  readonly supportedClasses = ['net'] as const;
  readonly deviceIds = [VIRTIO_ID_NET] as const;
  readonly maxSupportedVqs = 2 * VDPASIM_NET_MAX_VQP + 1; // data pairs + the control queue
  /**
   * What a device may offer: the default set plus, provisioned with device_features,
   * VIRTIO_NET_F_GUEST_ANNOUNCE and VIRTIO_F_SUSPEND — what a device that migrates needs (the
   * destination asks its driver to announce the guest, so switches learn the MAC's new port).
   */
  readonly supportedFeatures = VDPASIM_NET_FEATURES | featureBit(VIRTIO_NET_F_GUEST_ANNOUNCE) | featureBit(VIRTIO_F_SUSPEND);
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

declare module '../mgmt/base.ts' {
  interface VdpaMgmtDeviceTypes {
    /** {@link VdpaSimNetMgmt} makes {@link VdpaSimNet} devices. */
    vdpasim_net: VdpaSimNet;
  }
}
