// The virtio_vdpa bus driver (Linux drivers/virtio/virtio_vdpa.c): binds a vdpa device as an
// in-process virtio device, runs the driver initialization of VIRTIO 1.3 §3.1.1 over the
// config ops, sets up the virtqueues (rings laid out by DriverQueue in the platform RAM) and
// hands the application a class driver: VirtioNetDriver or VirtioBlkDriver.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { VdpaBusDriver, VdpaDevice } from '../bus/bus.ts';
import { DriverQueue } from '../ring/driver-queue.ts';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VIRTIO_F_VERSION_1,
  VIRTIO_CONFIG_S_SUSPEND, VIRTIO_F_SUSPEND, hasFeature,
} from '../virtio/constants.ts';

/** What a class driver (net, blk) tells the bus driver. */
export interface VirtioClassDriver {
  /** Features this driver understands (ring features included). */
  readonly driverFeatures: bigint;
  /** Number of queues to set up for the negotiated features and config. */
  queueCount(dev: VdpaDevice, negotiated: bigint): number;
  /** Called before DRIVER_OK with the queues (post buffers here). */
  start(queues: DriverQueue[]): void;
  /** Called once the device is live (after DRIVER_OK): control commands may be sent now. */
  ready?(): void;
  /** Called before the device is reset or removed: forget buffers in flight. */
  stop(): void;
  /** The device set DEVICE_NEEDS_RESET. */
  onNeedsReset(): void;
  /** The config space changed. */
  onConfigChange(): void;
  /** Descriptors per indirect table of this driver's queues; 0: it never needs one, no table pool is allocated. @default 16 */
  readonly indirectMax?: number;
}

/** Options of {@link VirtioVdpa}. */
export interface VirtioVdpaOptions {
  /** Queue size to ask for (capped by the device's maximum). @default 256 */
  queueSize?: number;
  /** Makes the class driver for a device; return null to leave the device unbound. */
  classDriver: (dev: VdpaDevice, binding: VirtioBinding) => VirtioClassDriver | null;
}

/** One bound device: its queues and the negotiated features. */
export class VirtioBinding {
  /** The device. */
  readonly dev: VdpaDevice;
  /** The platform whose RAM holds the rings. */
  readonly platform: Platform;
  /** Negotiated features (0 before negotiation). */
  features = 0n;
  /** The queues, by index. */
  queues: DriverQueue[] = [];
  private readonly size: number;
  private cls: VirtioClassDriver | null = null;
  private detached = false;

  constructor(dev: VdpaDevice, platform: Platform, size: number) {
    this.dev = dev;
    this.platform = platform;
    this.size = size;
  }

  /**
   * VIRTIO 1.3 §3.1.1: reset; ACKNOWLEDGE; DRIVER; read the device features, write the subset
   * we understand; FEATURES_OK and re-read it; set up the queues; DRIVER_OK. On failure the
   * device is left with FAILED set and the error is thrown.
   */
  init(cls: VirtioClassDriver): void {
    const dev = this.dev;
    this.cls = cls;
    try {
      dev.reset();
      dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
      dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
      const features = dev.getDeviceFeatures() & cls.driverFeatures;
      if (!hasFeature(features, VIRTIO_F_VERSION_1)) throw new VirtioError(Code.Unsupported, `${dev.name} does not offer VIRTIO_F_VERSION_1`);
      dev.setDriverFeatures(features);
      dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
      if (!(dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) throw new VirtioError(Code.Unsupported, `${dev.name} rejected features 0x${features.toString(16)}`);
      this.features = features;
      const n = cls.queueCount(dev, features);
      if (n > dev.nvqs) throw new VirtioError(Code.Unsupported, `${dev.name} has ${dev.nvqs} queues, the driver needs ${n}`);
      const size = Math.min(this.size, dev.getVqNumMax());
      this.queues = [];
      for (let i = 0; i < n; i++) {
        const q = new DriverQueue(this.platform, cls.indirectMax === undefined ? { size, features } : { size, features, indirectMax: cls.indirectMax });
        this.queues.push(q);
        dev.setVqNum(i, size);
        dev.setVqAddress(i, q.addresses.descArea, q.addresses.driverArea, q.addresses.deviceArea);
        dev.setVqReady(i, true);
      }
      dev.setConfigCb(() => {
        if (dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET) cls.onNeedsReset();
        else cls.onConfigChange();
      });
      cls.start(this.queues);
      dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
      cls.ready?.();
    } catch (e) {
      // Reset first so the device forgets rings that are about to be freed, then give up (FAILED).
      dev.setConfigCb(null);
      dev.reset();
      this.freeQueues();
      dev.setStatus(VIRTIO_CONFIG_S_FAILED);
      throw e;
    }
  }

  /** Resets the device and runs the whole initialization again (after DEVICE_NEEDS_RESET). */
  reinit(): void {
    if (this.detached) throw new VirtioError(Code.NotFound, `${this.dev.name} is no longer bound to virtio_vdpa`);
    if (!this.cls) throw new VirtioError(Code.FailedPrecondition, 'the device was never initialized');
    this.teardown();
    this.init(this.cls);
  }

  /**
   * Suspends the device through the SUSPEND status bit (VIRTIO 1.4 §3.4; needs VIRTIO_F_SUSPEND
   * negotiated, and DRIVER_OK): writes status | SUSPEND, then polls until the device presents
   * SUSPEND = 1 (it finishes requests in flight first), as Linux's virtio_device_set_suspend_bit.
   * Rejects with FailedPrecondition if the device sets DEVICE_NEEDS_RESET (it cannot suspend)
   * or does not answer within `timeoutMs`.
   */
  async suspend(timeoutMs = 2000): Promise<void> {
    const dev = this.dev;
    if (!hasFeature(this.features, VIRTIO_F_SUSPEND)) throw new VirtioError(Code.Unsupported, `${dev.name}: VIRTIO_F_SUSPEND was not negotiated`);
    const st = dev.getStatus();
    if (st & VIRTIO_CONFIG_S_SUSPEND) return;
    if (!(st & VIRTIO_CONFIG_S_DRIVER_OK)) throw new VirtioError(Code.FailedPrecondition, `${dev.name}: SUSPEND needs DRIVER_OK`);
    dev.setStatus(st | VIRTIO_CONFIG_S_SUSPEND);
    await this.waitStatus((s) => (s & VIRTIO_CONFIG_S_SUSPEND) !== 0, timeoutMs, 'suspend');
  }

  /** Resumes a device this driver suspended: sets DRIVER_OK and waits for SUSPEND to read 0 (VIRTIO 1.4 §3.4). */
  async resume(timeoutMs = 2000): Promise<void> {
    const dev = this.dev;
    const st = dev.getStatus();
    if (!(st & VIRTIO_CONFIG_S_SUSPEND)) throw new VirtioError(Code.FailedPrecondition, `${dev.name} is not suspended`);
    dev.setStatus(st | VIRTIO_CONFIG_S_DRIVER_OK);
    await this.waitStatus((s) => (s & VIRTIO_CONFIG_S_SUSPEND) === 0, timeoutMs, 'resume');
  }

  private async waitStatus(done: (s: number) => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = this.dev.getStatus();
      if (done(s)) return;
      if (s & VIRTIO_CONFIG_S_NEEDS_RESET) throw new VirtioError(Code.FailedPrecondition, `${this.dev.name} could not ${what} (DEVICE_NEEDS_RESET)`);
      if (Date.now() > deadline) throw new VirtioError(Code.FailedPrecondition, `${this.dev.name} did not ${what} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** Stops the class driver, resets the device and frees the rings. */
  teardown(): void {
    if (this.detached) return;
    this.cls?.stop();
    this.dev.setConfigCb(null);
    this.dev.reset();
    this.freeQueues();
  }

  /**
   * The device left this driver (unbind, vdpa dev del): the binding is dead. A class driver's
   * reset() then throws NotFound and touches neither the device nor memory.
   */
  detach(): void {
    this.detached = true;
  }

  /** True once the device was unbound. */
  get isDetached(): boolean {
    return this.detached;
  }

  private freeQueues(): void {
    for (const q of this.queues) q.destroy();
    this.queues = [];
  }
}

/** The virtio_vdpa bus driver. */
export class VirtioVdpa implements VdpaBusDriver {
  readonly name = 'virtio_vdpa';
  private readonly platform: Platform;
  private readonly opts: VirtioVdpaOptions;
  private readonly bound = new Map<string, { binding: VirtioBinding; cls: VirtioClassDriver }>();
  /** Why the last probe of a device failed (cleared by a later probe). */
  private readonly probeErrors = new Map<string, Error>();

  constructor(platform: Platform, opts: VirtioVdpaOptions) {
    this.platform = platform;
    this.opts = opts;
  }

  /** Devices this driver can drive: virtio-net and virtio-blk. */
  match(dev: VdpaDevice): boolean {
    const id = dev.getDeviceId();
    return id === VIRTIO_ID_NET || id === VIRTIO_ID_BLOCK;
  }

  /** Initializes the device and its class driver. */
  probe(dev: VdpaDevice): void {
    this.probeErrors.delete(dev.name);
    try {
      const binding = new VirtioBinding(dev, this.platform, this.opts.queueSize ?? 256);
      const cls = this.opts.classDriver(dev, binding);
      if (!cls) throw new VirtioError(Code.Unsupported, `no class driver for ${dev.name}`);
      binding.init(cls);
      this.bound.set(dev.name, { binding, cls });
    } catch (e) {
      // The bus leaves the device unbound (as Linux's really_probe does); keep the reason so
      // driverOf() can say why instead of just "not bound".
      this.probeErrors.set(dev.name, e instanceof Error ? e : new Error(String(e)));
      throw e;
    }
  }

  /** Stops the class driver and resets the device. */
  remove(dev: VdpaDevice): void {
    this.probeErrors.delete(dev.name);
    const b = this.bound.get(dev.name);
    if (!b) return;
    this.bound.delete(dev.name);
    b.binding.teardown();
    b.binding.detach();
  }

  /** The class driver bound to device `name`. */
  driverOf(name: string): VirtioClassDriver {
    const b = this.bound.get(name);
    if (!b) {
      const why = this.probeErrors.get(name);
      throw new VirtioError(Code.NotFound, `${name} is not bound to virtio_vdpa${why ? `: probe failed: ${why.message}` : ''}`, why ? { cause: why } : undefined);
    }
    return b.cls;
  }
}
