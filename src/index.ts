// vdpa-wasm public API: values first, then types (shared/STYLE.md).

export { VirtioError, Code, STATUS_CODES, PEER_CODES, codeOfStatus, fromStatus } from './errors.ts';
export { Platform } from './platform/platform.ts';
export { Allocator } from './platform/allocator.ts';
export { Iotlb, PERM_R, PERM_W, PERM_RW } from './platform/iotlb.ts';
export { DriverQueue } from './ring/driver-queue.ts';
export { DeviceQueue } from './ring/device-queue.ts';
export { RecordedChains } from './ring/recorded-chains.ts';
export { ringFeatures, checkQueueSize } from './ring/queue-base.ts';
export { checkVqState } from './ring/vq-state.ts';
export { Q, QF, QSB_SIZE, REC, TLB, ringAreaSizes, ringAreaAligns } from './ring/layout.ts';
export { hasSimd, ringModule, defaultModule, instantiate, loadRingModule } from './loader/wasm.ts';
export { ABI_VERSION, RING_EXPORT_NAMES } from './loader/exports.ts';
export * from './virtio/constants.ts';
export { VdpaBus } from './bus/bus.ts';
export { VdpaSim, features, constructDevice } from './devices/sim-core.ts';
export { VdpaSimNet, VDPASIM_NET_FEATURES, VDPASIM_NET_MAX_VQP, VIRTIO_NET_HDR_SIZE, randomMac } from './devices/net.ts';
export {
  VdpaSimBlk, VDPASIM_BLK_FEATURES, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_ID_BYTES, SECTOR_SIZE,
  BLK_FLAG, BLK_LIMITS, BLK_REQ,
} from './devices/blk.ts';
export { VIRTIO_BLK_CFG } from './virtio/blk.ts';
export { VirtioVdpa, VirtioBinding } from './drivers/virtio-vdpa.ts';
export { VirtioNetDriver, VIRTIO_NET_DRIVER_FEATURES } from './drivers/virtio-net.ts';
export { VirtioBlkDriver, VIRTIO_BLK_DRIVER_FEATURES } from './drivers/virtio-blk.ts';
export { createVirtioVdpa, VirtioDrivers } from './drivers/index.ts';
export { L2Switch } from './devices/switch.ts';
export { IdbBackend } from './browser/idb-backend.ts';
export { OpfsBackend } from './browser/opfs-backend.ts';
export { browserCrossThreadRunner } from './browser/lab-runner.ts';
export {
  NetCtrlState, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_OK, VIRTIO_NET_ERR, MAC_TABLE_MAX,
} from './devices/net-ctrl.ts';
export {
  PRESETS, DEFAULT_SWEEP, CROSS_THREAD_MODES, preset, expandSweep, checkPoint, pointLabel, designLabel, varyingKeys, seeded,
} from './lab/sweep.ts';
export { runLab, labEnvironment, summarize, stat, quantile } from './lab/lab.ts';
export { sameThreadRig } from './lab/same-thread.ts';
export { serveLab } from './lab/xthread-worker.ts';
export { formatTable, textTable, toCsv, toJson, parseResult, series, svgChart, charts, toHtml, compare } from './lab/report.ts';
export { Doorbell, DoorbellWaiter, DOORBELL_SIZE, WAKER_SIZE } from './worker/doorbell.ts';
export { PcapWriter, readPcap, LINKTYPE_ETHERNET, PCAP_MAGIC } from './devices/pcap.ts';
export { MgmtDevice, VdpaSimNetMgmt, VdpaSimBlkMgmt, parseMac, formatMac } from './mgmt/mgmtdev.ts';
export { VhostVdpa, VhostVdpaFile } from './drivers/vhost-vdpa.ts';
export { VhostTypedFile } from './vhost/typed-file.ts';
export { VhostError, ERRNO, errnoName } from './vhost/errno.ts';
export * from './vhost/uapi.ts';
export { Channel, errorToWire, errorFromWire } from './worker/channel.ts';
export { MailboxClient, MailboxServer, MAILBOX_HEADER, MAILBOX_CAP } from './worker/mailbox.ts';
export { serveVdpa } from './worker/host.ts';
export { RemoteVdpaBus, RemoteVdpaDevice, RemoteVhostFile, RemoteVhostSyncFile } from './worker/remote-device.ts';
export { FrameRing, FRAME_RING, FRAME_RING_MAGIC, FRAME_RING_WRAP } from './worker/frame-ring.ts';
export { SwitchLink, SwitchLinkEnd } from './worker/switch-link.ts';
export { REMOTE_VDPA } from './worker/host.ts';
export { Vmm } from './vmm/vmm.ts';
export { serveGuest } from './vmm/guest.ts';

export type { PlatformOptions, PlatformHandle } from './platform/platform.ts';
export type { IotlbEntry } from './platform/iotlb.ts';
export type { DriverQueueOptions, Buf, VqAddresses } from './ring/driver-queue.ts';
export type { DeviceQueueOptions, Segment, Chain } from './ring/device-queue.ts';
export type { RecordedChain } from './ring/recorded-chains.ts';
export type { Layout, RingFeatureOptions, QueueState, QueueStats } from './ring/queue-base.ts';
export type { VqState, SplitVqState, PackedVqState } from './ring/vq-state.ts';
export type { RingExports } from './loader/exports.ts';
export type { WasmVariant } from './loader/wasm.ts';
export type { VdpaConfigOps, VqNotification, VqVendorStats } from './bus/config-ops.ts';
export type { VdpaDevice, VdpaBusDriver } from './bus/bus.ts';
export type { VdpaSimAttrs, NeedsResetDetail } from './devices/sim-core.ts';
export type { VdpaSimNetOptions, NetPairStats, NetPort } from './devices/net.ts';
export type { SwitchEndpoint, SwitchPortStats } from './devices/switch.ts';
export type { RxMode, NetCtrlSnapshot } from './devices/net-ctrl.ts';
export type { PcapOptions } from './devices/pcap.ts';
export type { VdpaSimBlkOptions, BlkBackend, SavedRequests } from './devices/blk.ts';
export type { MgmtDevAttrs, MgmtAttrName, MgmtDevSetAttrs, VdpaMgmtDeviceTypes } from './mgmt/mgmtdev.ts';
export type { VirtioClassDriver, VirtioVdpaOptions } from './drivers/virtio-vdpa.ts';
export type { VirtioNetDriverOptions, NetDriverStats } from './drivers/virtio-net.ts';
export type { VirtioBlkDriverOptions, BlkDiscardLimits, BlkTransferLimits } from './drivers/virtio-blk.ts';
export type { VirtioDriversOptions } from './drivers/index.ts';
export type { LabMode, LabPoint, LabSweep, LabPreset } from './lab/sweep.ts';
export type { LabOptions, LabResult, LabPointResult, LabStat, LabEnvironment, CrossThreadRunner, LabBaseline } from './lab/lab.ts';
export type { LabCounters, LabRun, SameThreadRig } from './lab/same-thread.ts';
export type { XMessage, XPort, XControl } from './lab/xthread-worker.ts';
export type { ChartSeries } from './lab/report.ts';
export type { DoorbellHandle } from './worker/doorbell.ts';
export type { VdpaBusOptions } from './bus/bus.ts';
export type { VhostVdpaNodeInfo } from './drivers/vhost-vdpa.ts';
export type { ErrnoName } from './vhost/errno.ts';
export type { DetailListener, AnyEventListener, AddListenerOptions, RemoveListenerOptions, VdpaBusEventMap, VdpaSimEventMap, VirtioNetDriverEventMap, VirtioBlkDriverEventMap } from './events.ts';
export type { NetRxBatch } from './drivers/virtio-net.ts';
export {
  saveState, loadState, encodeState, decodeState, checkState, DEVICE_STATE_FORMAT, DEVICE_STATE_VERSION,
  saveEarlyState, loadEarlyState, saveStateDelta, saveStateDeltaBytes, encodeStateDelta, decodeStateDelta, checkStateDelta, isDeltaEncoding, DEVICE_STATE_DELTA_FORMAT,
} from './migration/state.ts';
export { DirtyLog, VHOST_LOG_PAGE } from './migration/dirty-log.ts';
export { createSlot, createVdpaSlot } from './migration/slot.ts';
export { migrate } from './migration/migrate.ts';
export type { DeviceState, DeviceStateDelta, EarlyState, VqStateEntry, MapEntry, MigratableDevice, RequestEntry, RequestPiece } from './migration/state.ts';
export type { DirtyLogOptions } from './migration/dirty-log.ts';
export type { DeviceSlot, VdpaSlot } from './migration/slot.ts';
export type { MigrateOptions, MigrationReport } from './migration/migrate.ts';
export type { SimCoreState, SimPositions, ControlStateMark, SuspendOptions } from './devices/sim-core.ts';
export type { OpfsBackendOptions, OpfsSyncAccessHandle } from './browser/opfs-backend.ts';
export type { BrowserLabRunner, BrowserLabRunnerOptions, LabWorkerLike, LabWorkerEvent } from './browser/lab-runner.ts';
export type { PortLike, PortListener, RequestHandler, ChannelOptions } from './worker/channel.ts';
export type { MailboxHandle } from './worker/mailbox.ts';
export type { FrameRingHandle, FrameRingOptions, FrameRingStats } from './worker/frame-ring.ts';
export type { SwitchLinkEndHandle, SwitchLinkOptions, SwitchLinkStats, SwitchLinkEndStats, SwitchLinkEndOptions } from './worker/switch-link.ts';
export type { ServeVdpaOptions, OpenedDevice, OpenedDeviceCache, HostStats } from './worker/host.ts';
export type { RemoteVdpaBusOptions, RemoteVdpaOutput, AttachSlices, RemoteDevInfo, RemoteDevAttrs, IoctlResult } from './worker/remote-device.ts';
export type { WireError } from './worker/channel.ts';
export type { VmmDevice, GuestRam } from './vmm/vmm.ts';
export type { GuestCounters, GuestNetResult, GuestBlkResult } from './vmm/guest.ts';
export type { ForeignPlatformOptions } from './platform/platform.ts';
export { VirtioPciFunction } from './pci/virtio-pci.ts';
export type { VirtioPciOptions, PciInterruptSink, PciDescription, PciBarDescription, GuestMemoryRegion, VhostFileOps } from './pci/virtio-pci.ts';
export { VhostNetCvq, vhostSave, vhostLoad, checkVhostState } from './migration/vhost-migrate.ts';
export type { VhostVringSetup, VhostVringState, NetShadowState, VhostMigrationState, VhostNetCvqOptions, VhostLoadOptions, VhostLoadMap, VhostLoadDoorbells } from './migration/vhost-migrate.ts';
export { migrateBetweenWorkers } from './migration/worker-migrate.ts';
export type { WorkerMigrateOptions, WorkerMigrationReport } from './migration/worker-migrate.ts';
export type { MigDisk, MigBackend, MigStorage, MigSaved, MigSavedSync, MigSavedNow, MigWouldBlock, MigNeedsFull, MigLoaded, MigStarted } from './worker/host.ts';
export { checkBackendDescriptor, cannotResolve } from './worker/backend.ts';
export type { BlkBackendDescriptor, FileBackendDescriptor, OpfsBackendDescriptor, ResolvedBackend, BackendResolver } from './worker/backend.ts';
export { PingResponder, inetChecksum } from './devices/ping-responder.ts';
export type { PingResponderStats } from './devices/ping-responder.ts';
