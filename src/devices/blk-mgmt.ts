// The vdpasim_blk management device (drivers/vdpa/vdpa_sim/vdpa_sim_blk.c vdpasim_blk_mgmtdev),
// with a capacity, an initial image or a backend for the disk (ours).

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import { MgmtDevice, type MgmtAttrName, type MgmtDevAttrs } from '../mgmt/base.ts';
import { VdpaSimBlk, VDPASIM_BLK_FEATURES } from './blk.ts';
import { constructDevice } from './sim-core.ts';
import { VIRTIO_ID_BLOCK, VIRTIO_BLK_F_RO, hasFeature } from '../virtio/constants.ts';

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

  override checkAttrs(attrs: MgmtDevAttrs): void {
    this.checkAttrMask(attrs);
    this.checkFeatures(attrs.deviceFeatures);
    const { image, backend } = attrs;
    if (image !== undefined && !(image instanceof Uint8Array)) throw new VirtioError(Code.InvalidArgument, 'image must be a Uint8Array');
    if (backend !== undefined && (image !== undefined || attrs.capacity !== undefined)) {
      throw new VirtioError(Code.InvalidArgument, 'a backend brings its own capacity and content: give no capacity or image with it');
    }
    const capacity = attrs.capacity ?? (image ? Math.max(1, Math.ceil(image.length / 512)) : this.capacity);
    if (image && image.length > capacity * 512) throw new VirtioError(Code.InvalidArgument, `image of ${image.length} bytes does not fit ${capacity} sectors`);
  }

  create(name: string, attrs: MgmtDevAttrs): VdpaSimBlk {
    this.checkAttrs(attrs);
    const deviceFeatures = this.checkFeatures(attrs.deviceFeatures);
    const { image, backend } = attrs;
    const capacity = attrs.capacity ?? (image ? Math.max(1, Math.ceil(image.length / 512)) : this.capacity);
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

declare module '../mgmt/base.ts' {
  interface VdpaMgmtDeviceTypes {
    /** {@link VdpaSimBlkMgmt} makes {@link VdpaSimBlk} devices. */
    vdpasim_blk: VdpaSimBlk;
  }
}
