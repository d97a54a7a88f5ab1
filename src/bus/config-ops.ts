// The device contract of the vDPA control plane: Linux's struct vdpa_config_ops
// (include/linux/vdpa.h), camelCased and grouped as Linux groups them. Optional ops are
// optional members; callers check them before calling.

import type { VqState } from '../ring/vq-state.ts';
import type { IotlbEntry } from '../platform/iotlb.ts';

/** Where a virtqueue's doorbell is (vdpa_notification_area): a word in memory, or none. */
export interface VqNotification {
  /** Memory offset of a 32-bit doorbell word (Atomics.notify on it wakes the device), or -1. */
  addr: number;
  /** Bytes of the area. */
  size: number;
}

/** Per-queue counters the vendor reports (vdpa dev vstats: received_desc, completed_desc). */
export interface VqVendorStats {
  /** Queue type as vdpa prints it (rx, tx, control, …). */
  type: string;
  /** Named counters, in print order. */
  stats: [name: string, value: number][];
}

/** Linux struct vdpa_config_ops. */
export interface VdpaConfigOps {
  // Virtqueue ops
  /** Sets the IOVAs of a queue's three areas. Before DRIVER_OK, or while the queue is not ready. */
  setVqAddress(idx: number, descArea: number | bigint, driverArea: number | bigint, deviceArea: number | bigint): void;
  /** Sets a queue's size. */
  setVqNum(idx: number, num: number): void;
  /** The driver kicked queue idx (available buffers). */
  kickVq(idx: number): void;
  /** Sets the used-buffer notification (interrupt) callback of a queue; null clears it. */
  setVqCb(idx: number, cb: (() => void) | null): void;
  /** Enables or disables a queue. */
  setVqReady(idx: number, ready: boolean): void;
  /** True if the queue is enabled. */
  getVqReady(idx: number): boolean;
  /** Restores a queue's ring position (struct vdpa_vq_state). */
  setVqState(idx: number, state: VqState): void;
  /** The queue's ring position. */
  getVqState(idx: number): VqState;
  /** Largest queue size the device supports. */
  getVqNumMax(): number;
  /** Smallest queue size the device supports. */
  getVqNumMin?(): number;
  /** The virtqueue group of queue idx. */
  getVqGroup?(idx: number): number;
  /** Where the queue's doorbell is. */
  getVqNotification?(idx: number): VqNotification;
  /** Vendor counters of queue idx. */
  getVendorVqStats?(idx: number): VqVendorStats;
  /** The size queue idx has now (get_vq_size). */
  getVqSize?(idx: number): number;
  /** The virtqueue group of queue idx's descriptor table, when it can differ from getVqGroup (get_vq_desc_group). */
  getVqDescGroup?(idx: number): number;

  // Device ops
  /** Features the device offers (a 64-bit mask). */
  getDeviceFeatures(): bigint;
  /** Features the driver accepts; only between DRIVER and FEATURES_OK. */
  setDriverFeatures(features: bigint): void;
  /** Features the driver set. */
  getDriverFeatures(): bigint;
  /** Device status (VIRTIO_CONFIG_S_*). */
  getStatus(): number;
  /** Writes the device status; 0 resets. */
  setStatus(status: number): void;
  /** Resets the device: status 0, queues and mappings back to their initial state. */
  reset(): void;
  /** Stops processing: finishes the batch in flight; state is then stable to read. */
  suspend?(): void;
  /** Continues processing after suspend. */
  resume?(): void;
  /** Bytes of device configuration space. */
  getConfigSize(): number;
  /** Reads config space bytes (little-endian fields). */
  getConfig(offset: number, len: number): Uint8Array;
  /** Writes config space bytes (only fields the device class allows). */
  setConfig(offset: number, data: Uint8Array): void;
  /** Config generation: changes on every config change. */
  getGeneration(): number;
  /** Sets the config-change callback; null clears it. */
  setConfigCb(cb: (() => void) | null): void;
  /** Virtio device id (VIRTIO_ID_*). */
  getDeviceId(): number;
  /** Vendor id. */
  getVendorId(): number;
  /** Alignment of queue areas the device needs. */
  getVqAlign(): number;

  // DMA ops
  /** Replaces the whole map of address space asid (set_map). */
  setMap?(asid: number, entries: readonly IotlbEntry[]): void;
  /** Adds a mapping to address space asid. */
  dmaMap?(asid: number, entry: IotlbEntry): void;
  /** Removes mappings overlapping [iova, iova + size) from address space asid. */
  dmaUnmap?(asid: number, iova: number | bigint, size: number): void;
  /** Binds virtqueue group `group` to address space `asid`. */
  setGroupAsid?(group: number, asid: number): void;
  /** Puts address space asid back to the device's initial map (reset_map). */
  resetMap?(asid: number): void;
  /** vhost backend features (VHOST_BACKEND_F_* bits) the device itself supports (get_backend_features). */
  getBackendFeatures?(): bigint;
}
