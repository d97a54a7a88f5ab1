// A modern (non-transitional) virtio-pci function, register by register (VIRTIO 1.3 §4.1), for
// an emulator to put in its PCI space. The guest's own virtio_pci_modern driver programs it; every
// control-plane write becomes what QEMU's vhost-vdpa backend would ask of /dev/vhost-vdpa-N:
//
//   device_status write     → VHOST_VDPA_SET_STATUS (0 resets; FEATURES_OK first SET_FEATURES)
//   device/driver_feature   → VHOST_GET_FEATURES / the value given to VHOST_SET_FEATURES
//   queue_enable = 1        → SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_KICK/CALL,
//                             VHOST_VDPA_SET_VRING_ENABLE
//   notify write            → rings that queue's kick doorbell (the device may sit in a worker)
//   device config access    → VHOST_VDPA_GET_CONFIG / SET_CONFIG
//   guest RAM               → IOTLB UPDATE messages: guest-physical address → offset in the memory
//
// Layout, as QEMU's virtio-pci lays it out (hw/virtio/virtio-pci.c): the virtio structures in
// one 16 KiB memory BAR (4 by default, 64-bit prefetchable): common cfg @0x0000, ISR @0x1000,
// device cfg @0x2000, notify @0x3000 with notify_off_multiplier 4 (queue q at 0x3000 + 4q);
// the MSI-X table @0 and PBA @0x800 of a 4 KiB BAR (1 by default). For emulators that can
// only relocate I/O BARs (v86), barKind 'io' packs the structures into ≥ 256 ports (common @0,
// ISR @0x40, device @0x60, notify after it); the guest finds them through the capabilities
// either way. Config space: type 0 header,
// capabilities from 0x40 (MSI-X, then the virtio vendor capabilities, last the PCI cfg window).
//
// Bad accesses are handled as hardware does: a read nothing decodes (wrong BAR, out of the
// BAR, a size other than 1/2/4, unaligned, not a field's width) returns all ones for its size,
// such a write is dropped; both are counted in {@link VirtioPciFunction.badAccesses}. Errors of
// the vhost node are counted in {@link VirtioPciFunction.backendErrors} and surface to the guest
// as a status that did not take (no FEATURES_OK) or a queue that did not enable — never thrown.
//
// The node may be in this thread (VhostVdpaFile) or in a device worker (RemoteVdpaBus
// .openVhostSync: each request a synchronous round trip through a shared-memory mailbox, inside
// the guest's register access). Then the device rings the call and config doorbells from the
// worker, where no microtask of this thread sees them: the emulator raises the interrupts by
// calling poll() from its loop, or by awaiting callWaiter.waitAsync(). A worker that dies makes
// every later request a VirtioError(Cancelled), counted in backendErrors like any other.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { VhostVdpaFile } from '../drivers/vhost-vdpa.ts';
import type { VhostTypedFile } from '../vhost/typed-file.ts';
import type { RemoteVdpaBus } from '../worker/remote-device.ts';
import { Doorbell, DoorbellWaiter } from '../worker/doorbell.ts';
import * as U from '../vhost/uapi.ts';
import {
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_RING_PACKED, VIRTIO_CONFIG_S_FEATURES_OK, featureBit,
  VIRTIO_ID_NET, VIRTIO_ID_BLOCK,
} from '../virtio/constants.ts';
import * as C from './constants.ts';

/**
 * What {@link VirtioPciFunction} asks of its vhost-vdpa node, every call synchronous (it runs
 * inside a guest register access): an in-thread {@link VhostVdpaFile}, or a node in a device
 * worker opened with {@link RemoteVdpaBus.openVhostSync}. Both are {@link VhostTypedFile}s, whose
 * methods these are.
 */
export interface VhostFileOps extends Pick<VhostTypedFile,
  'close' | 'getBackendFeatures' | 'getConfig' | 'getConfigSize' | 'getDeviceId' | 'getFeatures' | 'getStatus' |
  'getVqsCount' | 'getVringNum' | 'iotlb' | 'setBackendFeatures' | 'setConfig' | 'setConfigCall' | 'setFeatures' |
  'setOwner' | 'setStatus' | 'setVringAddr' | 'setVringBase' | 'setVringCall' | 'setVringEnable' | 'setVringKick' |
  'setVringNum'> {}

/** Guest RAM as the guest sees it: `size` bytes at guest-physical `gpa`, at `offset` in the memory. */
export interface GuestMemoryRegion {
  /** Guest-physical address of the first byte. */
  gpa: number | bigint;
  /** Bytes. */
  size: number;
  /** Offset of the first byte in the platform memory (inside its RAM). */
  offset: number;
}

/** Where the function's interrupts go (the emulator's interrupt controller). */
export interface PciInterruptSink {
  /** INTA# changed level (only while MSI-X is off). */
  setIntx?(level: boolean): void;
  /** An MSI-X message: write the 32-bit `data` to the 64-bit address `addressHi:addressLo`. */
  msi?(addressLo: number, addressHi: number, data: number, vector: number): void;
}

/** Options of {@link VirtioPciFunction}. */
export interface VirtioPciOptions {
  /** Guest RAM regions. @default all of the platform's RAM at guest-physical 0 */
  guestMemory?: GuestMemoryRegion[];
  /** MSI-X vectors (0..128); 0 leaves the function with INTx only. @default queues + 1 (config + one per queue) */
  msixVectors?: number;
  /** BAR of the virtio structures (0..5; a 64-bit BAR also takes the next). @default 4 */
  bar?: number;
  /**
   * Kind of that BAR: 64-bit prefetchable memory (QEMU's), 32-bit memory, or I/O ports for
   * emulators whose memory BARs cannot move (v86 relocates only I/O BARs). An I/O BAR packs the
   * structures: common @0, ISR @0x40, device cfg @0x60, notify after it; at least 256 bytes.
   * @default 'mem64'
   */
  barKind?: 'mem64' | 'mem32' | 'io';
  /** BAR of the MSI-X table and PBA. @default 1 */
  msixBar?: number;
  /** Offer VIRTIO_F_ACCESS_PLATFORM to the guest (only with a vIOMMU in the guest). @default false */
  accessPlatform?: boolean;
  /** Interrupt delivery. */
  interrupts?: PciInterruptSink;
}

/** One BAR of {@link PciDescription}. */
export interface PciBarDescription {
  /** BAR number (0..5). */
  index: number;
  /** Bytes (a power of two). */
  size: number;
  /** 32- or 64-bit memory, or I/O ports. */
  kind: 'mem32' | 'mem64' | 'io';
  /** Prefetchable. */
  prefetchable: boolean;
}

/** What an emulator needs to place the function. */
export interface PciDescription {
  /** 0x1af4 (VIRTIO 1.3 §4.1.2). */
  vendorId: number;
  /** 0x1040 + the virtio device ID (a modern, non-transitional function). */
  deviceId: number;
  /** 0x1af4. */
  subsystemVendorId: number;
  /** 0x1100, as QEMU (≥ 0x40: §4.1.2.1). */
  subsystemId: number;
  /** 1 (non-transitional devices have revision ≥ 1, §4.1.2.1). */
  revision: number;
  /** class << 16 | subclass << 8 | prog-if. */
  classCode: number;
  /** 1 = INTA#. */
  interruptPin: number;
  /** The BARs the function decodes. */
  bars: PciBarDescription[];
  /** MSI-X table entries (0: INTx only). */
  msixVectors: number;
  /** Virtqueues (num_queues). */
  queues: number;
}

// Offsets of the structures in a memory BAR (QEMU: 0x1000 apart); an I/O BAR packs them (layout()).
const COMMON = 0x0000;
const MEM_LAYOUT = { isr: 0x1000, device: 0x2000, notify: 0x3000, size: 0x4000 };
const NOTIFY_MULT = 4;
const MSIX_BAR_SIZE = 0x1000;
const MSIX_PBA = 0x800;
const MAX_VECTORS = 128; // table (128 × 16 = 2 KiB) below the PBA at 0x800
const CAP_START = 0x40;

// Transport features this function does not implement: the guest is never offered them.
// VIRTIO 1.3 §6: SR_IOV 37, NOTIFICATION_DATA 38, NOTIF_CONFIG_DATA 39, RING_RESET 40, ADMIN_VQ 41.
const UNSUPPORTED = [37, 38, 39, 40, 41].reduce((m, b) => m | featureBit(b), 0n);

const ones = (size: number): number => (size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff);
const okSize = (size: unknown): size is 1 | 2 | 4 => size === 1 || size === 2 || size === 4;

interface Vq {
  size: number;
  vector: number;
  enabled: boolean;
  desc: [number, number];
  avail: [number, number];
  used: [number, number];
}

/**
 * A modern virtio-pci function in front of a vhost_vdpa node. Give it the platform and an open,
 * unowned node ({@link VhostFileOps}: a {@link VhostVdpaFile} in this thread, or one in a device
 * worker from {@link RemoteVdpaBus.openVhostSync}); it takes ownership, maps guest RAM and reads
 * the device's features, queue count and sizes. The emulator then routes the guest's config-space accesses
 * to {@link configRead}/{@link configWrite} and its BAR accesses to {@link read}/{@link write},
 * and delivers what {@link VirtioPciOptions.interrupts} receives.
 *
 * Throws VhostError if the node cannot be owned or queried (a node already owned: EBUSY),
 * VirtioError(InvalidArgument) for bad options.
 */
export class VirtioPciFunction {
  /** The vhost_vdpa node behind the function. */
  readonly file: VhostFileOps;
  /** The virtio device ID (VHOST_VDPA_GET_DEVICE_ID). */
  readonly virtioId: number;
  /** Queues. */
  readonly numQueues: number;
  /** Largest queue size. */
  readonly maxQueueSize: number;
  /** Accesses nothing decoded: reads answered with all ones, writes dropped. */
  badAccesses = 0;
  /** vhost_vdpa requests that failed (each surfaced to the guest as a status or enable that did not take). */
  backendErrors = 0;
  /** Interrupt callbacks that threw (counted, never rethrown into a doorbell microtask). */
  callbackErrors = 0;

  private readonly platform: Platform;
  private readonly sink: PciInterruptSink;
  private readonly cfg = new Uint8Array(256);
  private readonly wmask = new Uint8Array(256);
  private readonly cfgView: DataView;
  private readonly bar: number;
  private readonly barKind: 'mem64' | 'mem32' | 'io';
  private readonly bar64: boolean;
  /** Offsets of ISR, device cfg and notify in the virtio BAR, and its size. */
  private readonly lay: { isr: number; device: number; notify: number; size: number };
  private readonly msixBar: number;
  private readonly nvec: number;
  private readonly msixCap: number;
  private readonly pciCfgCap: number;
  private readonly configSize: number;
  private readonly offered: bigint;
  private readonly deviceAccessPlatform: bigint;
  private readonly persist: boolean;
  private readonly regions: GuestMemoryRegion[];
  private readonly kicks: Doorbell[];
  private readonly calls: Doorbell[];
  private readonly configDb: Doorbell;
  private readonly waiter: DoorbellWaiter;
  private readonly vqs: Vq[];
  private readonly msixTable: Uint32Array;
  private readonly pba: Uint32Array;
  private dfselect = 0;
  private gfselect = 0;
  private driverFeatures = 0n;
  private msixConfig = C.VIRTIO_MSI_NO_VECTOR;
  private queueSel = 0;
  private isr = 0;
  private generation = 0;
  private intx = false;
  private closed = false;

  constructor(platform: Platform, file: VhostFileOps, opts: VirtioPciOptions = {}) {
    this.platform = platform;
    this.file = file;
    this.sink = opts.interrupts ?? {};
    const bad = (why: string): never => {
      throw new VirtioError(Code.InvalidArgument, why);
    };
    this.bar = opts.bar ?? 4;
    this.barKind = opts.barKind ?? 'mem64';
    if (!['mem64', 'mem32', 'io'].includes(this.barKind)) bad(`barKind ${String(this.barKind)} must be 'mem64', 'mem32' or 'io'`);
    this.bar64 = this.barKind === 'mem64';
    this.msixBar = opts.msixBar ?? 1;
    // Options are checked before the node is touched, so a refused function leaves it unowned.
    for (const [n, b] of [['bar', this.bar], ['msixBar', this.msixBar]] as const) {
      if (!Number.isInteger(b) || b < 0 || b > 5) bad(`${n} ${b} must be 0..5`);
    }
    if (this.bar64 && this.bar === 5) bad('a 64-bit BAR takes two slots: bar must be 0..4');
    const asked = opts.msixVectors;
    if (asked !== undefined && (!Number.isInteger(asked) || asked < 0 || asked > MAX_VECTORS)) bad(`msixVectors ${asked} must be 0..${MAX_VECTORS}`);
    if (asked !== 0 && (this.msixBar === this.bar || (this.bar64 && this.msixBar === this.bar + 1))) bad(`msixBar ${this.msixBar} collides with the virtio BAR ${this.bar}`);
    const regions = opts.guestMemory ?? [{ gpa: 0, size: platform.ramSize, offset: platform.ramBase }];
    if (!Array.isArray(regions) || !regions.every((r) => typeof r === 'object' && r !== null &&
      (typeof r.gpa === 'bigint' ? r.gpa >= 0n : Number.isSafeInteger(r.gpa) && r.gpa >= 0) &&
      Number.isSafeInteger(r.size) && r.size > 0 && Number.isSafeInteger(r.offset) && r.offset >= 0)) {
      bad('guestMemory must be an array of { gpa ≥ 0, size > 0, offset ≥ 0 }');
    }
    // vhost_vdpa maps only platform RAM (an UPDATE elsewhere is EFAULT): say so before owning the node.
    for (const r of regions) {
      if (r.offset < platform.ramBase || r.offset + r.size > platform.ramBase + platform.ramSize) {
        bad(`guest memory [${r.offset}, +${r.size}) is not inside the platform's RAM [${platform.ramBase}, +${platform.ramSize})`);
      }
    }
    file.setOwner();
    this.virtioId = file.getDeviceId();
    this.numQueues = file.getVqsCount();
    this.maxQueueSize = file.getVringNum();
    this.configSize = Math.min(file.getConfigSize(), 0x1000);
    const dev = file.getFeatures();
    // QEMU's vhost-vdpa forces VIRTIO_F_IOMMU_PLATFORM on the device (hw/virtio/vhost.c
    // vhost_dev_set_features with vhost_vdpa_force_iommu): the device reads guest memory through
    // the IOTLB this function programs, whether or not the guest negotiated ACCESS_PLATFORM.
    this.deviceAccessPlatform = dev & featureBit(VIRTIO_F_ACCESS_PLATFORM);
    this.offered = dev & ~UNSUPPORTED & (opts.accessPlatform ? ~0n : ~featureBit(VIRTIO_F_ACCESS_PLATFORM));
    // Config + one per queue, as QEMU gives virtio-net (Linux shares vectors when there are fewer).
    const nvec = asked ?? Math.min(this.numQueues + 1, MAX_VECTORS);
    this.lay = this.barKind === 'io' ? ioLayout(this.configSize, this.numQueues) : MEM_LAYOUT;
    this.nvec = nvec;
    this.msixTable = new Uint32Array(nvec * 4);
    for (let v = 0; v < nvec; v++) this.msixTable[v * 4 + 3] = C.PCI_MSIX_ENTRY_CTRL_MASKBIT; // masked at reset (PCI 3.0 §6.8.2.9)
    this.pba = new Uint32Array(Math.ceil(nvec / 32));
    this.vqs = Array.from({ length: this.numQueues }, () => this.freshVq());

    // Keep the guest's maps across resets where the node can (QEMU asks for IOTLB_PERSIST too).
    let persist = false;
    try {
      const want = BigInt(1 << U.VHOST_BACKEND_F_IOTLB_MSG_V2) | BigInt(1 << U.VHOST_BACKEND_F_IOTLB_PERSIST);
      const got = file.getBackendFeatures() & want;
      file.setBackendFeatures(got);
      persist = (got & BigInt(1 << U.VHOST_BACKEND_F_IOTLB_PERSIST)) !== 0n;
    } catch (e) {
      this.backendError(e);
    }
    this.persist = persist;
    this.regions = regions.map((r) => ({ ...r }));
    this.mapGuest(false);

    this.waiter = new DoorbellWaiter(platform);
    this.kicks = [];
    this.calls = [];
    for (let q = 0; q < this.numQueues; q++) {
      this.kicks.push(Doorbell.alloc(platform));
      const call = Doorbell.alloc(platform);
      this.calls.push(call);
      this.waiter.watch(call, () => this.queueInterrupt(q));
    }
    this.configDb = Doorbell.alloc(platform);
    this.waiter.watch(this.configDb, () => this.configInterrupt());
    file.setConfigCall(this.configDb.handle);

    this.cfgView = new DataView(this.cfg.buffer);
    const caps = this.buildConfigSpace();
    this.msixCap = caps.msix;
    this.pciCfgCap = caps.pciCfg;
  }

  /**
   * Bytes of the I/O BAR a function over `file` decodes with barKind 'io' (a power of two, at
   * least 256), read without owning the node: an emulator can place the BAR before the
   * function takes the node, so a refused placement leaves the node untouched. Throws what
   * the node's queries throw (a closed file: VhostError EBADF).
   */
  static ioBarSize(file: VhostFileOps): number {
    return ioLayout(Math.min(file.getConfigSize(), 0x1000), file.getVqsCount()).size;
  }

  /** What the emulator needs to place the function (IDs, class, BARs, vectors). */
  get description(): PciDescription {
    const bars: PciBarDescription[] = [{ index: this.bar, size: this.lay.size, kind: this.barKind, prefetchable: this.bar64 }];
    if (this.nvec > 0) bars.push({ index: this.msixBar, size: MSIX_BAR_SIZE, kind: 'mem32', prefetchable: false });
    bars.sort((a, b) => a.index - b.index);
    return {
      vendorId: C.PCI_VENDOR_ID_REDHAT_QUMRANET,
      deviceId: C.VIRTIO_PCI_DEVICE_ID_BASE + this.virtioId,
      subsystemVendorId: C.PCI_VENDOR_ID_REDHAT_QUMRANET,
      subsystemId: C.PCI_SUBDEVICE_ID_QEMU,
      revision: 1,
      classCode: classOf(this.virtioId),
      interruptPin: 1,
      bars,
      msixVectors: this.nvec,
      queues: this.numQueues,
    };
  }

  /** The address the guest programmed into BAR `index` (flags masked off), as a bigint; 0n if none. */
  barAddress(index: number): bigint {
    const d = this.description.bars.find((b) => b.index === index);
    if (!d) return 0n;
    const lo = BigInt((this.cfgView.getUint32(C.PCI_BASE_ADDRESS_0 + 4 * index, true) & (d.kind === 'io' ? ~0x3 : ~0xf)) >>> 0);
    const hi = d.kind === 'mem64' ? BigInt(this.cfgView.getUint32(C.PCI_BASE_ADDRESS_0 + 4 * index + 4, true)) : 0n;
    return ((hi << 32n) | lo) & 0xffff_ffff_ffff_ffffn;
  }

  // ───────────────────────── config space ─────────────────────────

  /**
   * A copy of the 256 config-space bytes as they are now, for emulators that keep a device's
   * config space as bytes of their own (v86 does). Such an emulator bypasses
   * {@link configWrite}: no BAR sizing through the write mask, no MSI-X (use msixVectors: 0).
   */
  configSnapshot(): Uint8Array {
    return this.cfg.slice();
  }

  /** A config-space read of `size` (1, 2, 4) bytes at `offset` (0..255, naturally aligned). */
  configRead(offset: number, size: number): number {
    if (this.closed || !okSize(size) || !Number.isInteger(offset) || offset < 0 || offset + size > 256 || offset % size !== 0) return this.bad(size);
    if (this.pciCfgCap && offset >= this.pciCfgCap + C.VIRTIO_PCI_CFG_CAP_DATA && offset < this.pciCfgCap + C.VIRTIO_PCI_CFG_CAP_SIZE) {
      return this.pciCfgData(false, 0) >>> (8 * (offset - this.pciCfgCap - C.VIRTIO_PCI_CFG_CAP_DATA)) & ones(size);
    }
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v << 8) | this.cfg[offset + i]!;
    // Status bit 3: INTx pending, whether or not INTx is disabled (PCI 3.0 §6.2.3).
    if (offset <= C.PCI_STATUS && offset + size > C.PCI_STATUS && this.isr !== 0 && !this.msixEnabled) {
      v |= C.PCI_STATUS_INTERRUPT << (8 * (C.PCI_STATUS - offset));
    }
    return v >>> 0;
  }

  /** A config-space write; read-only bits keep their value (BAR sizing works by the write mask). */
  configWrite(offset: number, size: number, value: number): void {
    if (this.closed || !okSize(size) || !Number.isInteger(offset) || offset < 0 || offset + size > 256 || offset % size !== 0 || typeof value !== 'number') {
      this.bad(size);
      return;
    }
    const wasEnabled = this.msixEnabled;
    const wasMasked = this.functionMasked;
    for (let i = 0; i < size; i++) {
      const o = offset + i;
      const b = (value >>> (8 * i)) & 0xff;
      this.cfg[o] = (this.cfg[o]! & ~this.wmask[o]!) | (b & this.wmask[o]!);
    }
    if (this.pciCfgCap && offset >= this.pciCfgCap + C.VIRTIO_PCI_CFG_CAP_DATA && offset < this.pciCfgCap + C.VIRTIO_PCI_CFG_CAP_SIZE) {
      this.pciCfgData(true, (value >>> 0) << (8 * (offset - this.pciCfgCap - C.VIRTIO_PCI_CFG_CAP_DATA)));
    }
    if (this.msixEnabled !== wasEnabled) this.updateIntx();
    if ((wasMasked && !this.functionMasked) || (!wasEnabled && this.msixEnabled)) this.flushPending();
    if (offset <= C.PCI_COMMAND + 1 && offset + size > C.PCI_COMMAND) this.updateIntx();
  }

  // ───────────────────────── BARs ─────────────────────────

  /** A read of `size` (1, 2, 4) bytes at `offset` in BAR `bar`. Never throws. */
  read(bar: number, offset: number, size: number): number {
    if (this.closed || !okSize(size) || !Number.isInteger(offset) || offset < 0 || offset % size !== 0) return this.bad(size);
    const l = this.lay;
    if (bar === this.bar && offset < l.size) {
      if (offset < l.isr) return this.commonRead(offset, size);
      if (offset < l.device) return offset - l.isr < 4 ? this.isrRead(offset - l.isr, size) : this.bad(size);
      if (offset < l.notify) return this.deviceRead(offset - l.device, size);
      return offset - l.notify < this.notifyLen ? 0 : this.bad(size);
    }
    if (bar === this.msixBar && this.nvec > 0 && offset < MSIX_BAR_SIZE) return this.msixRead(offset, size);
    return this.bad(size);
  }

  /** A write of `size` (1, 2, 4) bytes of `value` at `offset` in BAR `bar`. Never throws. */
  write(bar: number, offset: number, size: number, value: number): void {
    if (this.closed || !okSize(size) || !Number.isInteger(offset) || offset < 0 || offset % size !== 0 || typeof value !== 'number') {
      this.bad(size);
      return;
    }
    const v = (value >>> 0) & ones(size);
    const l = this.lay;
    if (bar === this.bar && offset < l.size) {
      if (offset < l.isr) this.commonWrite(offset, size, v);
      else if (offset < l.device) this.bad(size); // ISR is read-only
      else if (offset < l.notify) this.deviceWrite(offset - l.device, size, v);
      else this.notify(offset - l.notify);
      return;
    }
    if (bar === this.msixBar && this.nvec > 0 && offset < MSIX_BAR_SIZE) {
      this.msixWrite(offset, size, v);
      return;
    }
    this.bad(size);
  }

  /**
   * Polls the call and config doorbells and raises what they say (MSI-X messages, INTx, ISR
   * bits); returns how many rang. In one thread the doorbells do it by themselves (a microtask);
   * with the device in a worker (a node from {@link RemoteVdpaBus.openVhostSync}) nothing raises
   * an interrupt until this runs: call it from the emulator's loop (it costs a few atomic loads
   * per queue), or keep `await fn.callWaiter.waitAsync()` pending, which wakes on the rings (stop
   * when it throws Cancelled: the function was closed).
   */
  poll(): number {
    return this.closed ? 0 : this.waiter.poll();
  }

  /** The waiter of the call and config doorbells (for an emulator that sleeps on them). */
  get callWaiter(): DoorbellWaiter {
    return this.waiter;
  }

  /**
   * Resets the device, closes the node and frees the doorbells. Afterwards the function is
   * gone from the bus, as a hot-unplugged card: every access reads all ones and writes are dropped.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.waiter.close();
    try {
      this.file.close();
    } catch (e) {
      this.backendError(e);
    }
    for (const d of [...this.kicks, ...this.calls, this.configDb]) d.free();
  }

  // ───────────────────────── common cfg ─────────────────────────

  private get notifyLen(): number {
    return Math.max(this.numQueues, 1) * NOTIFY_MULT;
  }

  private commonRead(off: number, size: number): number {
    const q = this.vqs[this.queueSel];
    const w = FIELD_WIDTH[off];
    if (w !== size) return this.bad(size);
    switch (off) {
      case C.VIRTIO_PCI_COMMON_DFSELECT: return this.dfselect;
      case C.VIRTIO_PCI_COMMON_DF: return this.dfselect < 2 ? Number((this.offered >> BigInt(32 * this.dfselect)) & 0xffffffffn) : 0;
      case C.VIRTIO_PCI_COMMON_GFSELECT: return this.gfselect;
      case C.VIRTIO_PCI_COMMON_GF: return this.gfselect < 2 ? Number((this.driverFeatures >> BigInt(32 * this.gfselect)) & 0xffffffffn) : 0;
      case C.VIRTIO_PCI_COMMON_MSIX: return this.msixConfig;
      case C.VIRTIO_PCI_COMMON_NUMQ: return this.numQueues;
      case C.VIRTIO_PCI_COMMON_STATUS: return this.status();
      case C.VIRTIO_PCI_COMMON_CFGGENERATION: return this.generation;
      case C.VIRTIO_PCI_COMMON_Q_SELECT: return this.queueSel;
      // §4.1.4.3: queue_size reads 0 for a queue that does not exist.
      case C.VIRTIO_PCI_COMMON_Q_SIZE: return q ? q.size : 0;
      case C.VIRTIO_PCI_COMMON_Q_MSIX: return q ? q.vector : C.VIRTIO_MSI_NO_VECTOR;
      case C.VIRTIO_PCI_COMMON_Q_ENABLE: return q?.enabled ? 1 : 0;
      case C.VIRTIO_PCI_COMMON_Q_NOFF: return q ? this.queueSel : 0;
      case C.VIRTIO_PCI_COMMON_Q_DESCLO: return q ? q.desc[0] : 0;
      case C.VIRTIO_PCI_COMMON_Q_DESCHI: return q ? q.desc[1] : 0;
      case C.VIRTIO_PCI_COMMON_Q_AVAILLO: return q ? q.avail[0] : 0;
      case C.VIRTIO_PCI_COMMON_Q_AVAILHI: return q ? q.avail[1] : 0;
      case C.VIRTIO_PCI_COMMON_Q_USEDLO: return q ? q.used[0] : 0;
      case C.VIRTIO_PCI_COMMON_Q_USEDHI: return q ? q.used[1] : 0;
      default: return 0; // queue_notify_data, queue_reset, admin_queue_index/num: not offered
    }
  }

  private commonWrite(off: number, size: number, v: number): void {
    if (FIELD_WIDTH[off] !== size) {
      this.bad(size);
      return;
    }
    const q = this.vqs[this.queueSel];
    // Queue fields are frozen once the queue is enabled (§4.1.4.3.2: the driver MUST NOT change them).
    const qw = q && !q.enabled ? q : undefined;
    switch (off) {
      case C.VIRTIO_PCI_COMMON_DFSELECT: this.dfselect = v; return;
      case C.VIRTIO_PCI_COMMON_GFSELECT: this.gfselect = v; return;
      case C.VIRTIO_PCI_COMMON_GF:
        if (this.gfselect < 2) {
          const sh = BigInt(32 * this.gfselect);
          this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << sh)) | (BigInt(v) << sh);
        }
        return;
      case C.VIRTIO_PCI_COMMON_MSIX: this.msixConfig = this.vectorOrNone(v); return;
      case C.VIRTIO_PCI_COMMON_STATUS: this.writeStatus(v); return;
      case C.VIRTIO_PCI_COMMON_Q_SELECT: this.queueSel = v; return;
      case C.VIRTIO_PCI_COMMON_Q_SIZE: if (qw) qw.size = v; return;
      case C.VIRTIO_PCI_COMMON_Q_MSIX: if (q) q.vector = this.vectorOrNone(v); return;
      case C.VIRTIO_PCI_COMMON_Q_ENABLE: if (qw && v === 1) this.enableQueue(this.queueSel, qw); return;
      case C.VIRTIO_PCI_COMMON_Q_DESCLO: if (qw) qw.desc[0] = v; return;
      case C.VIRTIO_PCI_COMMON_Q_DESCHI: if (qw) qw.desc[1] = v; return;
      case C.VIRTIO_PCI_COMMON_Q_AVAILLO: if (qw) qw.avail[0] = v; return;
      case C.VIRTIO_PCI_COMMON_Q_AVAILHI: if (qw) qw.avail[1] = v; return;
      case C.VIRTIO_PCI_COMMON_Q_USEDLO: if (qw) qw.used[0] = v; return;
      case C.VIRTIO_PCI_COMMON_Q_USEDHI: if (qw) qw.used[1] = v; return;
      default: return; // read-only fields: writes ignored
    }
  }

  /** A vector the table has, else NO_VECTOR (Linux reads it back to see if it took: vp_modern_queue_vector). */
  private vectorOrNone(v: number): number {
    return v < this.nvec ? v : C.VIRTIO_MSI_NO_VECTOR;
  }

  private status(): number {
    try {
      return this.file.getStatus();
    } catch (e) {
      this.backendError(e);
      return 0;
    }
  }

  private writeStatus(v: number): void {
    const status = v & 0xff;
    if (status === 0) {
      this.reset();
      return;
    }
    try {
      const old = this.file.getStatus();
      if (status & VIRTIO_CONFIG_S_FEATURES_OK && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
        // Only what was offered reaches the device; a driver that wrote more does not get
        // FEATURES_OK (it reads the status back, §3.1.1).
        if (this.driverFeatures & ~this.offered) return;
        this.file.setFeatures(this.driverFeatures | this.deviceAccessPlatform);
      }
      this.file.setStatus(status);
    } catch (e) {
      this.backendError(e);
    }
  }

  private reset(): void {
    try {
      this.file.setStatus(0);
    } catch (e) {
      this.backendError(e);
    }
    this.dfselect = 0;
    this.gfselect = 0;
    this.driverFeatures = 0n;
    this.msixConfig = C.VIRTIO_MSI_NO_VECTOR;
    this.queueSel = 0;
    for (let i = 0; i < this.vqs.length; i++) this.vqs[i] = this.freshVq();
    this.isr = 0;
    this.updateIntx();
    if (!this.persist) this.mapGuest(true);
  }

  private freshVq(): Vq {
    return { size: this.maxQueueSize, vector: C.VIRTIO_MSI_NO_VECTOR, enabled: false, desc: [0, 0], avail: [0, 0], used: [0, 0] };
  }

  private enableQueue(index: number, q: Vq): void {
    const addr = (p: [number, number]) => (BigInt(p[1]) << 32n) | BigInt(p[0]);
    const packed = (this.driverFeatures & featureBit(VIRTIO_F_RING_PACKED)) !== 0n;
    try {
      this.file.setVringNum({ index, num: q.size });
      this.file.setVringAddr({ index, desc: addr(q.desc), avail: addr(q.avail), used: addr(q.used) });
      // Packed rings start with both wrap counters set (VIRTIO 1.3 §2.8.1), as QEMU passes them.
      this.file.setVringBase({ index, num: packed ? 0x8000 | (0x8000 << 16) : 0 });
      this.file.setVringKick(index, this.kicks[index]!.handle);
      this.file.setVringCall(index, this.calls[index]!.handle);
      this.file.setVringEnable({ index, num: 1 });
      q.enabled = true;
    } catch (e) {
      this.backendError(e);
    }
  }

  /** IOTLB UPDATEs for guest RAM (after an INVALIDATE of the same ranges on a re-map). */
  private mapGuest(again: boolean): void {
    for (const r of this.regions) {
      const iova = BigInt(r.gpa);
      try {
        if (again) this.file.iotlb({ type: U.VHOST_IOTLB_INVALIDATE, iova, size: r.size });
        this.file.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova, size: r.size, uaddr: r.offset, perm: U.VHOST_ACCESS_RW });
      } catch (e) {
        this.backendError(e);
      }
    }
  }

  // ───────────────────────── ISR, device cfg, notify ─────────────────────────

  private isrRead(off: number, size: number): number {
    if (off !== 0) return 0;
    // Read to clear (VIRTIO 1.3 §4.1.4.5.1), which de-asserts INTx.
    const v = this.isr & ones(size);
    this.isr = 0;
    this.updateIntx();
    return v;
  }

  private deviceRead(off: number, size: number): number {
    if (off + size > this.configSize) return this.bad(size);
    try {
      const b = this.file.getConfig(off, size);
      let v = 0;
      for (let i = size - 1; i >= 0; i--) v = (v << 8) | b[i]!;
      return v >>> 0;
    } catch (e) {
      this.backendError(e);
      return ones(size);
    }
  }

  private deviceWrite(off: number, size: number, v: number): void {
    if (off + size > this.configSize) {
      this.bad(size);
      return;
    }
    const b = new Uint8Array(size);
    for (let i = 0; i < size; i++) b[i] = (v >>> (8 * i)) & 0xff;
    try {
      this.file.setConfig(off, b);
    } catch (e) {
      this.backendError(e);
    }
  }

  private notify(off: number): void {
    // Any write to queue q's notify address kicks it; the value (the queue index, vp_notify) is not needed.
    const q = off / NOTIFY_MULT;
    if (off % NOTIFY_MULT !== 0 || q >= this.numQueues) {
      this.bad(4);
      return;
    }
    this.kicks[q]!.ring();
  }

  // ───────────────────────── interrupts ─────────────────────────

  private get msixEnabled(): boolean {
    return this.nvec > 0 && (this.cfg[this.msixCap + C.PCI_MSIX_FLAGS + 1]! & (C.PCI_MSIX_FLAGS_ENABLE >> 8)) !== 0;
  }

  private get functionMasked(): boolean {
    return this.nvec > 0 && (this.cfg[this.msixCap + C.PCI_MSIX_FLAGS + 1]! & (C.PCI_MSIX_FLAGS_MASKALL >> 8)) !== 0;
  }

  private queueInterrupt(q: number): void {
    if (this.msixEnabled) {
      this.msixNotify(this.vqs[q]!.vector);
      return;
    }
    this.isr |= C.VIRTIO_PCI_ISR_QUEUE;
    this.updateIntx();
  }

  private configInterrupt(): void {
    this.generation = (this.generation + 1) & 0xff;
    // The config bit is set with MSI-X too, as QEMU does (virtio_notify_config).
    this.isr |= C.VIRTIO_PCI_ISR_CONFIG;
    if (this.msixEnabled) this.msixNotify(this.msixConfig);
    else this.updateIntx();
  }

  private msixNotify(v: number): void {
    if (v >= this.nvec) return; // NO_VECTOR: no interrupt (§4.1.5.1.2)
    if (this.functionMasked || this.msixTable[v * 4 + 3]! & C.PCI_MSIX_ENTRY_CTRL_MASKBIT) {
      this.pba[v >> 5]! |= 1 << (v & 31);
      return;
    }
    this.deliver(v);
  }

  private deliver(v: number): void {
    const t = this.msixTable;
    try {
      this.sink.msi?.(t[v * 4]!, t[v * 4 + 1]!, t[v * 4 + 2]!, v);
    } catch {
      this.callbackErrors++;
    }
  }

  /** Delivers pending vectors that are no longer masked (PCI 3.0 §6.8.3.4). */
  private flushPending(): void {
    if (!this.msixEnabled || this.functionMasked) return;
    for (let v = 0; v < this.nvec; v++) {
      const bit = 1 << (v & 31);
      if (this.pba[v >> 5]! & bit && !(this.msixTable[v * 4 + 3]! & C.PCI_MSIX_ENTRY_CTRL_MASKBIT)) {
        this.pba[v >> 5]! &= ~bit;
        this.deliver(v);
      }
    }
  }

  private updateIntx(): void {
    const cmd = this.cfg[C.PCI_COMMAND]! | (this.cfg[C.PCI_COMMAND + 1]! << 8);
    const level = this.isr !== 0 && !this.msixEnabled && !(cmd & C.PCI_COMMAND_INTX_DISABLE);
    if (level === this.intx) return;
    this.intx = level;
    try {
      this.sink.setIntx?.(level);
    } catch {
      this.callbackErrors++;
    }
  }

  private msixRead(off: number, size: number): number {
    if (size !== 4) return this.bad(size);
    if (off < this.nvec * C.PCI_MSIX_ENTRY_SIZE) return this.msixTable[off >> 2]!;
    if (off >= MSIX_PBA && off < MSIX_PBA + this.pba.length * 4) return this.pba[(off - MSIX_PBA) >> 2]!;
    return this.bad(size);
  }

  private msixWrite(off: number, size: number, v: number): void {
    if (size !== 4 || off >= this.nvec * C.PCI_MSIX_ENTRY_SIZE) {
      this.bad(size); // the PBA is read-only
      return;
    }
    this.msixTable[off >> 2] = v;
    if ((off & 0xf) === C.PCI_MSIX_ENTRY_VECTOR_CTRL && !(v & C.PCI_MSIX_ENTRY_CTRL_MASKBIT)) this.flushPending();
  }

  // ───────────────────────── config space layout ─────────────────────────

  private buildConfigSpace(): { msix: number; pciCfg: number } {
    const c = this.cfgView;
    const d = this.description;
    c.setUint16(C.PCI_VENDOR_ID, d.vendorId, true);
    c.setUint16(C.PCI_DEVICE_ID, d.deviceId, true);
    c.setUint16(C.PCI_STATUS, C.PCI_STATUS_CAP_LIST, true);
    c.setUint8(C.PCI_REVISION_ID, d.revision);
    c.setUint8(C.PCI_CLASS_PROG, d.classCode & 0xff);
    c.setUint16(C.PCI_CLASS_DEVICE, d.classCode >>> 8, true);
    c.setUint8(C.PCI_HEADER_TYPE, 0);
    c.setUint16(C.PCI_SUBSYSTEM_VENDOR_ID, d.subsystemVendorId, true);
    c.setUint16(C.PCI_SUBSYSTEM_ID, d.subsystemId, true);
    c.setUint8(C.PCI_INTERRUPT_PIN, d.interruptPin);
    this.mask(C.PCI_COMMAND, 2, C.PCI_COMMAND_IO | C.PCI_COMMAND_MEMORY | C.PCI_COMMAND_MASTER | C.PCI_COMMAND_INTX_DISABLE);
    this.mask(C.PCI_INTERRUPT_LINE, 1, 0xff);
    for (const b of d.bars) {
      const at = C.PCI_BASE_ADDRESS_0 + 4 * b.index;
      const flags = b.kind === 'io' ? C.PCI_BASE_ADDRESS_SPACE_IO
        : (b.kind === 'mem64' ? C.PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) | (b.prefetchable ? C.PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
      c.setUint32(at, flags, true);
      // Address bits above the size are writable: writing all ones reads back the size (PCI 3.0 §6.2.5.1).
      this.mask(at, 4, ~(b.size - 1) >>> 0);
      if (b.kind === 'mem64') this.mask(at + 4, 4, 0xffffffff);
    }
    let at = CAP_START;
    let prev = C.PCI_CAPABILITY_LIST;
    const link = (len: number): number => {
      const here = at;
      this.cfg[prev] = here;
      prev = here + C.PCI_CAP_LIST_NEXT;
      at = (at + len + 3) & ~3;
      return here;
    };
    let msix = 0;
    if (this.nvec > 0) {
      msix = link(C.PCI_CAP_MSIX_SIZEOF);
      c.setUint8(msix, C.PCI_CAP_ID_MSIX);
      c.setUint16(msix + C.PCI_MSIX_FLAGS, (this.nvec - 1) & C.PCI_MSIX_FLAGS_QSIZE, true);
      c.setUint32(msix + C.PCI_MSIX_TABLE, 0 | this.msixBar, true);
      c.setUint32(msix + C.PCI_MSIX_PBA, MSIX_PBA | this.msixBar, true);
      this.mask(msix + C.PCI_MSIX_FLAGS, 2, C.PCI_MSIX_FLAGS_ENABLE | C.PCI_MSIX_FLAGS_MASKALL);
    }
    const vcap = (type: number, len: number, offset: number, length: number): number => {
      const p = link(len);
      c.setUint8(p + C.VIRTIO_PCI_CAP_VNDR, C.PCI_CAP_ID_VNDR);
      c.setUint8(p + C.VIRTIO_PCI_CAP_LEN, len);
      c.setUint8(p + C.VIRTIO_PCI_CAP_CFG_TYPE, type);
      c.setUint8(p + C.VIRTIO_PCI_CAP_BAR, this.bar);
      c.setUint32(p + C.VIRTIO_PCI_CAP_OFFSET, offset, true);
      c.setUint32(p + C.VIRTIO_PCI_CAP_LENGTH, length, true);
      return p;
    };
    vcap(C.VIRTIO_PCI_CAP_COMMON_CFG, C.VIRTIO_PCI_CAP_SIZE, COMMON, C.VIRTIO_PCI_MODERN_COMMON_CFG_SIZE);
    vcap(C.VIRTIO_PCI_CAP_ISR_CFG, C.VIRTIO_PCI_CAP_SIZE, this.lay.isr, 4);
    if (this.configSize > 0) vcap(C.VIRTIO_PCI_CAP_DEVICE_CFG, C.VIRTIO_PCI_CAP_SIZE, this.lay.device, this.configSize);
    const n = vcap(C.VIRTIO_PCI_CAP_NOTIFY_CFG, C.VIRTIO_PCI_NOTIFY_CAP_SIZE, this.lay.notify, this.notifyLen);
    c.setUint32(n + C.VIRTIO_PCI_NOTIFY_CAP_MULT, NOTIFY_MULT, true);
    // VIRTIO_PCI_CAP_PCI_CFG: a window onto the BARs through config space (§4.1.4.9); bar,
    // offset, length and data are the driver's to write.
    const w = vcap(C.VIRTIO_PCI_CAP_PCI_CFG, C.VIRTIO_PCI_CFG_CAP_SIZE, 0, 0);
    c.setUint8(w + C.VIRTIO_PCI_CAP_BAR, 0); // all zero until the driver programs it (as QEMU)
    this.mask(w + C.VIRTIO_PCI_CAP_BAR, 1, 0xff);
    this.mask(w + C.VIRTIO_PCI_CAP_OFFSET, 4, 0xffffffff);
    this.mask(w + C.VIRTIO_PCI_CAP_LENGTH, 4, 0xffffffff);
    this.mask(w + C.VIRTIO_PCI_CFG_CAP_DATA, 4, 0xffffffff);
    return { msix, pciCfg: w };
  }

  private mask(at: number, len: number, bits: number): void {
    for (let i = 0; i < len; i++) this.wmask[at + i] = (bits >>> (8 * i)) & 0xff;
  }

  /** VIRTIO_PCI_CAP_PCI_CFG data: a BAR access of cap.length (1, 2, 4) bytes at cap.offset in cap.bar. */
  private pciCfgData(write: boolean, value: number): number {
    const p = this.pciCfgCap;
    const bar = this.cfg[p + C.VIRTIO_PCI_CAP_BAR]!;
    const off = this.cfgView.getUint32(p + C.VIRTIO_PCI_CAP_OFFSET, true);
    const len = this.cfgView.getUint32(p + C.VIRTIO_PCI_CAP_LENGTH, true);
    if (write) {
      this.write(bar, off, len, value & ones(len));
      return 0;
    }
    const v = this.read(bar, off, len);
    this.cfgView.setUint32(p + C.VIRTIO_PCI_CFG_CAP_DATA, v, true);
    return v;
  }

  private bad(size: number): number {
    this.badAccesses++;
    return ones(size);
  }

  private backendError(e: unknown): void {
    if (!(e instanceof VirtioError)) throw e;
    this.backendErrors++;
  }
}

/** Width of each common cfg field by offset (struct virtio_pci_common_cfg + the modern tail). */
const FIELD_WIDTH: Record<number, number> = {
  [C.VIRTIO_PCI_COMMON_DFSELECT]: 4, [C.VIRTIO_PCI_COMMON_DF]: 4, [C.VIRTIO_PCI_COMMON_GFSELECT]: 4, [C.VIRTIO_PCI_COMMON_GF]: 4,
  [C.VIRTIO_PCI_COMMON_MSIX]: 2, [C.VIRTIO_PCI_COMMON_NUMQ]: 2, [C.VIRTIO_PCI_COMMON_STATUS]: 1, [C.VIRTIO_PCI_COMMON_CFGGENERATION]: 1,
  [C.VIRTIO_PCI_COMMON_Q_SELECT]: 2, [C.VIRTIO_PCI_COMMON_Q_SIZE]: 2, [C.VIRTIO_PCI_COMMON_Q_MSIX]: 2, [C.VIRTIO_PCI_COMMON_Q_ENABLE]: 2,
  [C.VIRTIO_PCI_COMMON_Q_NOFF]: 2, [C.VIRTIO_PCI_COMMON_Q_DESCLO]: 4, [C.VIRTIO_PCI_COMMON_Q_DESCHI]: 4, [C.VIRTIO_PCI_COMMON_Q_AVAILLO]: 4,
  [C.VIRTIO_PCI_COMMON_Q_AVAILHI]: 4, [C.VIRTIO_PCI_COMMON_Q_USEDLO]: 4, [C.VIRTIO_PCI_COMMON_Q_USEDHI]: 4,
  [C.VIRTIO_PCI_COMMON_Q_NDATA]: 2, [C.VIRTIO_PCI_COMMON_Q_RESET]: 2, 60: 2, 62: 2,
};

/** The packed layout of an I/O BAR: common @0 (64 bytes), ISR @0x40, device cfg @0x60, notify after it, a power of two ≥ 256. */
function ioLayout(configSize: number, nq: number): { isr: number; device: number; notify: number; size: number } {
  const device = 0x60;
  const notify = (device + Math.max(configSize, 4) + 3) & ~3;
  let size = 0x100;
  while (size < notify + Math.max(nq, 1) * NOTIFY_MULT) size *= 2;
  return { isr: 0x40, device, notify, size };
}

/** Class codes as QEMU's virtio-pci devices report them (virtio-net: Ethernet; virtio-blk: SCSI storage). */
function classOf(id: number): number {
  if (id === VIRTIO_ID_NET) return C.PCI_CLASS_NETWORK_ETHERNET;
  if (id === VIRTIO_ID_BLOCK) return C.PCI_CLASS_STORAGE_SCSI;
  return C.PCI_CLASS_OTHERS;
}
