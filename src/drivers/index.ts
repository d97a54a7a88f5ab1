// virtio_vdpa with the virtio-net and virtio-blk class drivers wired in.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import { VirtioVdpa } from './virtio-vdpa.ts';
import { VirtioNetDriver, type VirtioNetDriverOptions } from './virtio-net.ts';
import { VirtioBlkDriver, type VirtioBlkDriverOptions } from './virtio-blk.ts';
import { VIRTIO_ID_NET, VIRTIO_ID_BLOCK } from '../virtio/constants.ts';

/** Options of {@link createVirtioVdpa}. */
export interface VirtioDriversOptions {
  /** Queue size to ask devices for. @default 256 */
  queueSize?: number;
  /** Options for every virtio-net driver. */
  net?: VirtioNetDriverOptions;
  /** Options for every virtio-blk driver. */
  blk?: VirtioBlkDriverOptions;
}

/** virtio_vdpa plus typed access to the class driver of each bound device. */
export class VirtioDrivers extends VirtioVdpa {
  /** The virtio-net driver bound to device `name`. */
  net(name: string): VirtioNetDriver {
    const d = this.driverOf(name);
    if (!(d instanceof VirtioNetDriver)) throw new VirtioError(Code.InvalidArgument, `${name} is not a virtio-net device`);
    return d;
  }

  /** The virtio-blk driver bound to device `name`. */
  blk(name: string): VirtioBlkDriver {
    const d = this.driverOf(name);
    if (!(d instanceof VirtioBlkDriver)) throw new VirtioError(Code.InvalidArgument, `${name} is not a virtio-blk device`);
    return d;
  }
}

/** The virtio_vdpa bus driver with net and blk drivers; register it with bus.registerDriver(). */
export function createVirtioVdpa(platform: Platform, opts: VirtioDriversOptions = {}): VirtioDrivers {
  return new VirtioDrivers(platform, {
    queueSize: opts.queueSize ?? 256,
    classDriver: (dev, binding) => {
      switch (dev.getDeviceId()) {
        case VIRTIO_ID_NET:
          return new VirtioNetDriver(dev, binding, opts.net);
        case VIRTIO_ID_BLOCK:
          return new VirtioBlkDriver(dev, binding, opts.blk);
        default:
          return null;
      }
    },
  });
}
