// vdpa-wasm public API: values first, then types (shared/STYLE.md).

export { VirtioError, Code, STATUS_CODES, PEER_CODES, codeOfStatus, fromStatus } from './errors.ts';
export { Platform } from './platform/platform.ts';
export { Allocator } from './platform/allocator.ts';
export { Iotlb, PERM_R, PERM_W, PERM_RW } from './platform/iotlb.ts';
export { DriverQueue } from './ring/driver-queue.ts';
export { DeviceQueue } from './ring/device-queue.ts';
export { ringFeatures, checkQueueSize } from './ring/queue-base.ts';
export { checkVqState } from './ring/vq-state.ts';
export { Q, QF, QSB_SIZE, REC, TLB, ringAreaSizes, ringAreaAligns } from './ring/layout.ts';
export { hasSimd, ringModule, defaultModule, instantiate } from './loader/wasm.ts';
export { ABI_VERSION, RING_EXPORT_NAMES } from './loader/exports.ts';
export * from './virtio/constants.ts';

export type { PlatformOptions, PlatformHandle } from './platform/platform.ts';
export type { IotlbEntry } from './platform/iotlb.ts';
export type { DriverQueueOptions, Buf, VqAddresses } from './ring/driver-queue.ts';
export type { DeviceQueueOptions, Segment, Chain } from './ring/device-queue.ts';
export type { Layout, RingFeatureOptions, QueueState, QueueStats } from './ring/queue-base.ts';
export type { VqState, SplitVqState, PackedVqState } from './ring/vq-state.ts';
export type { RingExports } from './loader/exports.ts';
export type { WasmVariant } from './loader/wasm.ts';
