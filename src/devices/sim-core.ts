// The vDPA device simulator core (Linux drivers/vdpa/vdpa_sim/vdpa_sim.c): what every
// simulated device class shares — status and feature negotiation (VIRTIO 1.3 §2.1-2.2, §3.1),
// virtqueue bookkeeping over the wasm ring core, address spaces (IOTLBs) and virtqueue
// groups, suspend/resume, reset, config space with a generation counter, per-queue stats,
// and `process(budget)`, which runs the class's datapath on ready queues in bounded batches.

import { VirtioError, Code, PEER_CODES } from '../errors.ts';
import { DeviceQueue } from '../ring/device-queue.ts';
import { RecordedChains } from '../ring/recorded-chains.ts';
import { checkQueueSize } from '../ring/queue-base.ts';
import { Q } from '../ring/layout.ts';
import { checkVqState, type VqState } from '../ring/vq-state.ts';
import { Iotlb, type IotlbEntry } from '../platform/iotlb.ts';
import type { Platform } from '../platform/platform.ts';
import type { VdpaConfigOps, VqNotification, VqVendorStats } from '../bus/config-ops.ts';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_FAILED, VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED,
  VIRTIO_CONFIG_S_SUSPEND, VIRTIO_F_SUSPEND, featureBit, hasFeature,
} from '../virtio/constants.ts';

/** What a device class tells the core about itself (Linux struct vdpasim_dev_attr). */
export interface VdpaSimAttrs {
  /** Device name on the bus. */
  name: string;
  /** Virtio device id (VIRTIO_ID_*). */
  deviceId: number;
  /** Vendor id. @default 0 (as vdpa_sim) */
  vendorId?: number;
  /** Features the device offers. VIRTIO_F_VERSION_1 is required. */
  supportedFeatures: bigint;
  /** Number of virtqueues. */
  nvqs: number;
  /** Virtqueue groups. @default 1 */
  ngroups?: number;
  /** Address spaces. @default 1 */
  nas?: number;
  /** Bytes of config space. */
  configSize: number;
  /** Largest queue size. @default 256 */
  vqNumMax?: number;
  /** Chains one datapath pass may take from a queue. @default 64 */
  batch?: number;
  /** Longest a suspend may wait for requests in flight before the device gives up (NEEDS_RESET). @default 1000 */
  suspendTimeoutMs?: number;
}

/** Per-virtqueue bookkeeping. */
interface SimVq {
  num: number;
  desc: bigint;
  driver: bigint;
  device: bigint;
  addrSet: boolean;
  ready: boolean;
  cb: (() => void) | null;
  queue: DeviceQueue | null;
  /** Position to start from when the queue is (re)enabled; set_vq_state before ready. */
  saved: VqState | null;
  doorbell: number;
}

/** Detail of a `needs-reset` event: which queue broke and how. */
export interface NeedsResetDetail {
  /** Queue index, or -1 for a fault of the device itself (a backend or datapath error). */
  vq: number;
  /** The peer error. */
  error: VirtioError;
}

const STATUS_ORDER: [bit: number, needs: number, name: string][] = [
  [VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE, 'DRIVER needs ACKNOWLEDGE'],
  [VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER, 'FEATURES_OK needs DRIVER'],
  [VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, 'DRIVER_OK needs FEATURES_OK'],
];

/**
 * A simulated vDPA device: the config ops over wasm rings. Subclasses give the config space
 * layout, feature checks and the datapath. Lifecycle events: `needs-reset` (a driver broke a
 * ring; detail {@link NeedsResetDetail}), `status` (status written), `config` (config changed).
 */
export abstract class VdpaSim extends EventTarget implements VdpaConfigOps {
  /** The platform whose memory holds rings and buffers. */
  readonly platform: Platform;
  /** Device name. */
  readonly name: string;
  /** Virtqueues. */
  readonly nvqs: number;
  /** Virtqueue groups. */
  readonly ngroups: number;
  /** Address spaces. */
  readonly nas: number;
  /** Chains one datapath pass may take from a queue. */
  readonly batch: number;
  /** Config space bytes (little-endian fields); subclasses write it through {@link updateConfig}. */
  protected readonly config: Uint8Array;
  /** DataView over {@link config}. */
  protected readonly configView: DataView;
  private readonly attrs: Required<Omit<VdpaSimAttrs, 'name'>>;
  private status = 0;
  private driverFeatures = 0n;
  private generation = 0;
  private configCb: (() => void) | null = null;
  private suspended = false;
  /** A suspend is finishing requests in flight: nothing new is popped, completions still go out. */
  private quiescing: { viaStatus: boolean; record: boolean; done: (() => void)[]; fail: ((e: VirtioError) => void)[]; timer: ReturnType<typeof setTimeout> | null } | null = null;
  /** Config changes made while suspended: applied and notified on resume (VIRTIO 1.4 §3.4). */
  private deferredConfig: ((view: DataView) => void)[] = [];
  private moreScheduled = false;
  private readonly vqs: SimVq[];
  private readonly iotlbs: Iotlb[];
  private readonly groupAsid: number[];
  /** Platform memory this device holds (freed by destroy(), or if construction fails). */
  private readonly owned: { arena: 'priv' | 'ram'; off: number }[] = [];
  private destroyed = false;
  /**
   * Migration: set by an early load (the control state is in, the ring positions are not):
   * the id of that early state. The device stays suspended until loadPositions() with it.
   */
  private earlyBase: number | null = null;

  protected constructor(platform: Platform, attrs: VdpaSimAttrs) {
    super();
    if (!hasFeature(attrs.supportedFeatures, VIRTIO_F_VERSION_1)) throw new VirtioError(Code.InvalidArgument, 'a device must offer VIRTIO_F_VERSION_1');
    this.platform = platform;
    this.name = attrs.name;
    this.attrs = { vendorId: 0, ngroups: 1, nas: 1, vqNumMax: 256, batch: 64, suspendTimeoutMs: 1000, ...attrs };
    const t = this.attrs.suspendTimeoutMs;
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw new VirtioError(Code.InvalidArgument, `suspendTimeoutMs ${String(t)} must be a finite number ≥ 0`);
    this.nvqs = attrs.nvqs;
    this.ngroups = this.attrs.ngroups;
    this.nas = this.attrs.nas;
    this.batch = this.attrs.batch;
    this.config = new Uint8Array(attrs.configSize);
    this.configView = new DataView(this.config.buffer);
    // Whatever this constructor (or a subclass's) allocates is released if construction fails
    // (see constructDevice): a failed `vdpa dev add` leaves the platform memory as it was.
    constructing?.push(this);
    this.iotlbs = [];
    this.groupAsid = new Array<number>(this.ngroups).fill(0);
    this.vqs = [];
    try {
      for (let i = 0; i < this.nas; i++) this.iotlbs.push(new Iotlb(platform, 256));
      for (let i = 0; i < this.nvqs; i++) {
        this.vqs.push({
          num: 0, desc: 0n, driver: 0n, device: 0n, addrSet: false, ready: false, cb: null, queue: null, saved: null,
          doorbell: this.allocPriv(4, 4),
        });
      }
      this.resetState();
    } catch (e) {
      VdpaSim.abandon(this);
      throw e;
    }
  }

  // ───────────────────────── Virtqueue ops ─────────────────────────

  /** Sets the IOVAs of queue idx's areas (only while the queue is not ready). */
  setVqAddress(idx: number, descArea: number | bigint, driverArea: number | bigint, deviceArea: number | bigint): void {
    this.live();
    const vq = this.vqNotReady(idx, 'set_vq_address');
    const iova = (v: number | bigint, what: string): bigint => {
      if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new VirtioError(Code.InvalidArgument, `${what} ${v} is not an integer`);
      const b = BigInt(v);
      if (b < 0n || b >= 1n << 64n) throw new VirtioError(Code.InvalidArgument, `${what} ${v} is not a u64`);
      return b;
    };
    const d = iova(descArea, 'descArea');
    const dr = iova(driverArea, 'driverArea');
    const dv = iova(deviceArea, 'deviceArea');
    vq.desc = d;
    vq.driver = dr;
    vq.device = dv;
    vq.addrSet = true;
  }

  /** Sets queue idx's size (1..getVqNumMax(); only while the queue is not ready). */
  setVqNum(idx: number, num: number): void {
    this.live();
    const vq = this.vqNotReady(idx, 'set_vq_num');
    if (!Number.isInteger(num) || num < this.getVqNumMin() || num > this.attrs.vqNumMax) {
      throw new VirtioError(Code.InvalidArgument, `queue size ${num} is outside ${this.getVqNumMin()}..${this.attrs.vqNumMax}`);
    }
    vq.num = num;
  }

  /**
   * The driver has made buffers available on queue idx: run the datapath now. Work beyond one
   * budget continues in a microtask, as vdpa_sim reschedules its work item.
   */
  kickVq(idx: number): void {
    this.live();
    this.vq(idx);
    this.runBudgeted(idx);
  }

  /** Sets queue idx's used-buffer notification callback. */
  setVqCb(idx: number, cb: (() => void) | null): void {
    this.live();
    this.vq(idx).cb = cb;
  }

  /**
   * Enables queue idx: its rings are translated and checked now (needs FEATURES_OK, a size
   * and addresses). Disabling keeps the ring position for a later enable.
   */
  setVqReady(idx: number, ready: boolean): void {
    this.live();
    const vq = this.vq(idx);
    if (!ready) {
      if (vq.queue) {
        vq.saved = vq.queue.getState();
        vq.queue.destroy();
        vq.queue = null;
      }
      vq.ready = false;
      return;
    }
    if (vq.ready) return;
    if (!(this.status & VIRTIO_CONFIG_S_FEATURES_OK)) throw new VirtioError(Code.FailedPrecondition, `queue ${idx} cannot be enabled before FEATURES_OK`);
    if (!vq.addrSet || vq.num === 0) throw new VirtioError(Code.FailedPrecondition, `queue ${idx} needs set_vq_num and set_vq_address before it is enabled`);
    const packed = hasFeature(this.driverFeatures, VIRTIO_F_RING_PACKED);
    checkQueueSize(vq.num, packed);
    const q = new DeviceQueue(this.platform, {
      size: vq.num, features: this.driverFeatures, descArea: vq.desc, driverArea: vq.driver, deviceArea: vq.device,
      iotlb: this.iotlbs[this.groupAsid[this.getVqGroup(idx)]!]!, batch: Math.min(this.batch, vq.num),
    });
    if (vq.saved) {
      try {
        q.setState(vq.saved);
      } catch (e) {
        q.destroy();
        throw e;
      }
    }
    vq.queue = q;
    vq.ready = true;
  }

  /** True if queue idx is enabled. */
  getVqReady(idx: number): boolean {
    this.live();
    return this.vq(idx).ready;
  }

  /**
   * Restores queue idx's ring position (struct vdpa_vq_state). Allowed before DRIVER_OK,
   * while suspended, or while the queue is disabled; validated first.
   */
  setVqState(idx: number, state: VqState): void {
    this.live();
    const vq = this.vq(idx);
    if ((this.status & VIRTIO_CONFIG_S_DRIVER_OK) && !this.suspended && vq.ready) {
      throw new VirtioError(Code.FailedPrecondition, `queue ${idx} is running: suspend the device first`);
    }
    const packed = hasFeature(this.driverFeatures, VIRTIO_F_RING_PACKED);
    if (vq.num === 0) throw new VirtioError(Code.FailedPrecondition, `queue ${idx} has no size yet`);
    const s = checkVqState(state, packed ? 'packed' : 'split', vq.num);
    if (vq.queue) vq.queue.setState(s);
    vq.saved = s;
  }

  /** Queue idx's ring position. */
  getVqState(idx: number): VqState {
    this.live();
    const vq = this.vq(idx);
    if (vq.queue) return vq.queue.getState();
    if (vq.saved) return vq.saved;
    const size = vq.num || this.attrs.vqNumMax;
    return hasFeature(this.driverFeatures, VIRTIO_F_RING_PACKED)
      ? { version: 1, layout: 'packed', size, lastAvailIdx: 0, lastAvailWrap: 1, lastUsedIdx: 0, lastUsedWrap: 1 }
      : { version: 1, layout: 'split', size, availIndex: 0, usedIndex: 0 };
  }

  /** Largest queue size. */
  getVqNumMax(): number {
    this.live();
    return this.attrs.vqNumMax;
  }

  /** Smallest queue size. */
  getVqNumMin(): number {
    this.live();
    return 1;
  }

  /** The virtqueue group of queue idx (subclasses with several groups override). */
  getVqGroup(idx: number): number {
    this.live();
    this.vq(idx);
    return 0;
  }

  /** Queue idx's size: what set_vq_num set, or the maximum before that (get_vq_size). */
  getVqSize(idx: number): number {
    this.live();
    return this.vq(idx).num || this.attrs.vqNumMax;
  }

  /** Queue idx's doorbell: a u32 in private memory; Atomics.notify on it from another worker. */
  getVqNotification(idx: number): VqNotification {
    this.live();
    return { addr: this.vq(idx).doorbell, size: 4 };
  }

  /** received_desc / completed_desc of queue idx (as vdpa_sim_net reports them). */
  getVendorVqStats(idx: number): VqVendorStats {
    this.live();
    const q = this.vq(idx).queue;
    const st = q?.stats;
    return { type: this.vqType(idx), stats: [['received_desc', st?.chains ?? 0], ['completed_desc', st?.used ?? 0]] };
  }

  // ───────────────────────── Device ops ─────────────────────────

  /** Features the device offers. */
  getDeviceFeatures(): bigint {
    this.live();
    return this.attrs.supportedFeatures;
  }

  /** Sets the driver's features: only after DRIVER and before FEATURES_OK (VIRTIO 1.3 §3.1.1). */
  setDriverFeatures(features: bigint): void {
    this.live();
    if (typeof features !== 'bigint' || features < 0n || features >= 1n << 64n) throw new VirtioError(Code.InvalidArgument, 'features must be a u64 bigint');
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER) || (this.status & VIRTIO_CONFIG_S_FEATURES_OK)) {
      throw new VirtioError(Code.FailedPrecondition, 'features can be set only after DRIVER and before FEATURES_OK');
    }
    this.driverFeatures = features;
  }

  /** Features the driver set. */
  getDriverFeatures(): bigint {
    this.live();
    return this.driverFeatures;
  }

  /** Device status. */
  getStatus(): number {
    this.live();
    return this.status;
  }

  /**
   * Writes the device status (VIRTIO 1.3 §2.1, §3.1.1). 0 resets. Bits are set in order
   * (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK) and never cleared except by reset;
   * FAILED may be set at any time; NEEDS_RESET is the device's. At FEATURES_OK the device
   * checks the driver's features and leaves the bit clear if it rejects them. An illegal write
   * throws FailedPrecondition and changes nothing.
   */
  setStatus(status: number): void {
    this.live();
    if (!Number.isInteger(status) || status < 0 || status > 0xff) throw new VirtioError(Code.InvalidArgument, `status ${status} is not a u8`);
    if (status === 0) {
      this.reset();
      return;
    }
    this.notHoldingEarly();
    const old = this.status;
    if ((status & VIRTIO_CONFIG_S_NEEDS_RESET) && !(old & VIRTIO_CONFIG_S_NEEDS_RESET)) {
      throw new VirtioError(Code.FailedPrecondition, 'DEVICE_NEEDS_RESET is set by the device, not the driver');
    }
    // Without VIRTIO_F_SUSPEND negotiated bit 4 means nothing to the device (a driver MUST NOT
    // set it, VIRTIO 1.4 §2.1.1): it is kept like any other bit, as before SUSPEND existed.
    if (((status | old) & VIRTIO_CONFIG_S_SUSPEND) && hasFeature(this.driverFeatures, VIRTIO_F_SUSPEND) && (old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      this.setSuspendStatus(status);
      return;
    }
    const next = status | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
    const cleared = old & ~next;
    if (cleared) throw new VirtioError(Code.FailedPrecondition, `status bits 0x${cleared.toString(16)} can only be cleared by a reset`);
    // FAILED may be added at any time, but the other bits of the same write still keep order.
    for (const [bit, needs, why] of STATUS_ORDER) {
      if ((next & bit) && !(next & needs)) throw new VirtioError(Code.FailedPrecondition, why);
    }
    if ((next & VIRTIO_CONFIG_S_DRIVER_OK) && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      throw new VirtioError(Code.FailedPrecondition, 'DRIVER_OK before the device accepted FEATURES_OK');
    }
    let accepted = next;
    if ((next & VIRTIO_CONFIG_S_FEATURES_OK) && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      // §2.2.2: the device MUST NOT accept features it did not offer; §6.1: VERSION_1 is required.
      if (this.rejectFeatures(this.driverFeatures) !== null) accepted &= ~VIRTIO_CONFIG_S_FEATURES_OK;
    }
    this.status = accepted;
    this.dispatchEvent(new CustomEvent('status', { detail: accepted }));
    if ((accepted & VIRTIO_CONFIG_S_DRIVER_OK) && !(old & VIRTIO_CONFIG_S_DRIVER_OK)) this.runBudgeted();
  }

  /**
   * The SUSPEND status bit (VIRTIO 1.4 §2.1, §3.4 Device Suspend), with VIRTIO_F_SUSPEND
   * negotiated. Suspend: the driver writes its status plus SUSPEND, only after DRIVER_OK. The
   * device finishes what it must (requests in flight, within suspendTimeoutMs), then presents
   * SUSPEND = 1 and DRIVER_OK = 0; until then the status reads as before. While suspended the
   * device sends no notifications, touches no virtqueue and changes no config field (a change
   * meanwhile is applied and notified on resume). Resume: the driver sets DRIVER_OK (with or
   * without SUSPEND in the same write); the device clears SUSPEND and runs again. A device that
   * cannot suspend sets DEVICE_NEEDS_RESET.
   */
  private setSuspendStatus(status: number): void {
    const old = this.status;
    // §2.1: FAILED may be set at any time; the driver gave up, whatever else the write says.
    if ((status & VIRTIO_CONFIG_S_FAILED) && !(old & VIRTIO_CONFIG_S_FAILED)) {
      this.status = old | VIRTIO_CONFIG_S_FAILED;
      this.dispatchEvent(new CustomEvent('status', { detail: this.status }));
      return;
    }
    const base = old & ~(VIRTIO_CONFIG_S_SUSPEND | VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET);
    const extra = (status & ~(VIRTIO_CONFIG_S_SUSPEND | VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET)) ^ base;
    if (extra & ~VIRTIO_CONFIG_S_FAILED) throw new VirtioError(Code.FailedPrecondition, `status bits 0x${extra.toString(16)} cannot change together with SUSPEND`);
    if (!(old & VIRTIO_CONFIG_S_SUSPEND)) {
      // Suspend request: §3.4 the driver MUST NOT set SUSPEND before DRIVER_OK.
      if (!(old & VIRTIO_CONFIG_S_DRIVER_OK) || !(status & VIRTIO_CONFIG_S_DRIVER_OK)) throw new VirtioError(Code.FailedPrecondition, 'SUSPEND can be set only after DRIVER_OK');
      if (old & VIRTIO_CONFIG_S_NEEDS_RESET) throw new VirtioError(Code.FailedPrecondition, 'the device needs a reset');
      if (this.quiescing) return; // already finishing what it must
      void this.quiesce(true).catch(() => { /* NEEDS_RESET is the answer (§3.4) */ });
      return;
    }
    // Suspended (SUSPEND = 1, DRIVER_OK = 0): DRIVER_OK resumes; rewriting the status is a no-op.
    if (!(status & VIRTIO_CONFIG_S_DRIVER_OK)) {
      if ((status & ~VIRTIO_CONFIG_S_NEEDS_RESET) === (old & ~VIRTIO_CONFIG_S_NEEDS_RESET)) return;
      throw new VirtioError(Code.FailedPrecondition, 'a suspended device leaves SUSPEND only by DRIVER_OK (or a reset)');
    }
    this.status = (old & ~VIRTIO_CONFIG_S_SUSPEND) | VIRTIO_CONFIG_S_DRIVER_OK;
    this.suspended = false;
    this.dispatchEvent(new CustomEvent('status', { detail: this.status }));
    this.afterResume();
  }

  /**
   * Stops popping, waits (bounded) until the class has nothing in flight, then suspends:
   * with the status bit (viaStatus) or as the vdpa suspend op ({@link suspendDrained}).
   */
  private quiesce(viaStatus: boolean, record = false): Promise<void> {
    if (this.quiescing) throw new VirtioError(Code.FailedPrecondition, 'a suspend is already in progress');
    const q = { viaStatus, record, done: [] as (() => void)[], fail: [] as ((e: VirtioError) => void)[], timer: null as ReturnType<typeof setTimeout> | null };
    const p = new Promise<void>((res, rej) => { q.done.push(res); q.fail.push(rej); });
    this.quiescing = q;
    this.workProgress();
    if (this.quiescing === q) {
      q.timer = setTimeout(() => {
        if (this.quiescing !== q) return;
        this.quiescing = null;
        const err = new VirtioError(Code.FailedPrecondition, `${this.name}: ${this.pendingWork(q.record)} requests still in flight after ${this.attrs.suspendTimeoutMs} ms: cannot suspend`);
        this.needsReset(-1, err);
        for (const f of q.fail) f(err);
      }, this.attrs.suspendTimeoutMs);
    }
    return p;
  }

  /**
   * Subclasses call this when requests in flight finished: a pending suspend completes once
   * nothing is left.
   */
  protected workProgress(): void {
    const q = this.quiescing;
    if (!q || this.pendingWork(q.record) > 0) return;
    if (q.timer) clearTimeout(q.timer);
    this.quiescing = null;
    if (this.destroyed || !(this.status & VIRTIO_CONFIG_S_DRIVER_OK)) {
      const err = new VirtioError(Code.Cancelled, `${this.name} was reset while suspending`);
      for (const f of q.fail) f(err);
      return;
    }
    this.suspended = true;
    if (q.viaStatus) {
      this.status = (this.status & ~VIRTIO_CONFIG_S_DRIVER_OK) | VIRTIO_CONFIG_S_SUSPEND;
      this.dispatchEvent(new CustomEvent('status', { detail: this.status }));
    }
    for (const d of q.done) d();
  }

  /**
   * Requests in flight the device must finish before it is suspended (blk's async backend).
   * With `record`, only those a migration's state cannot carry ({@link saveRequests}): the
   * rest stay in flight and move as records. @default 0
   */
  protected pendingWork(_record: boolean): number {
    return 0;
  }

  /**
   * Migration: the requests in flight the state carries, as chains named by IOVA, each with
   * its queue (blk: requests still out at the backend, re-submitted by the destination). Called
   * on a suspended device whose pendingWork(true) is 0. @default none
   */
  protected saveRequests(): RecordedChains {
    // A list of this device's own: what a save returns is the caller's to read (and could be
    // appended to), so the shared empty list below never leaves the module.
    const none = (this.noRequests ??= new RecordedChains(0, 0));
    none.clear();
    return none;
  }

  /** The empty list saveRequests returns (made at the first save). */
  private noRequests: RecordedChains | undefined;

  /**
   * Migration, destination: why recorded requests `reqs` cannot be taken by this device with
   * queue sizes `nums` (null: they can). Must not change anything. @default only none
   */
  protected checkRequests(reqs: RecordedChains, _nums: readonly number[]): string | null {
    return reqs.count === 0 ? null : `${this.name} takes no requests in flight`;
  }

  /** Migration, destination: takes checked recorded requests, re-submitted when the device runs. */
  protected loadRequests(_reqs: RecordedChains): void {}

  /**
   * The vdpa suspend op for a VMM that migrates (VHOST_VDPA_SUSPEND as QEMU uses it): stops
   * taking new requests, lets the ones in flight finish and reach the used ring (bounded by
   * suspendTimeoutMs; past it the device sets NEEDS_RESET and this rejects), then suspends.
   * DRIVER_OK stays set. Resolves when the device is suspended with nothing in flight.
   */
  suspendDrained(opts: SuspendOptions = {}): Promise<void> {
    this.live();
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK) || this.suspended) return Promise.reject(new VirtioError(Code.FailedPrecondition, 'only a running device (DRIVER_OK) can be suspended'));
    if (this.quiescing) return Promise.reject(new VirtioError(Code.FailedPrecondition, 'a suspend is already in progress'));
    return this.quiesce(false, opts?.record === true);
  }

  /**
   * Requests in flight that a suspend must still finish: with `record`, only those a
   * migration's state cannot carry (see {@link SuspendOptions.record}). 0 means a suspend
   * completes at once.
   */
  mustFinish(record = false): number {
    this.live();
    return this.pendingWork(record === true);
  }

  /** Longest a suspend waits for requests in flight (the device option), in ms. */
  protected get suspendTimeout(): number {
    return this.attrs.suspendTimeoutMs;
  }

  /** True between a suspend request and the moment the device is suspended. */
  get isSuspending(): boolean {
    return this.quiescing !== null;
  }

  /** Why the device rejects a feature set, or null if it accepts it. */
  rejectFeatures(features: bigint): string | null {
    this.live();
    const extra = features & ~this.attrs.supportedFeatures;
    if (extra) return `features 0x${extra.toString(16)} were not offered`;
    if (!hasFeature(features, VIRTIO_F_VERSION_1)) return 'VIRTIO_F_VERSION_1 is required';
    return this.classRejectFeatures(features);
  }

  /** Resets the device: status 0, features 0, queues disabled and forgotten, identity maps. */
  reset(): void {
    this.live();
    for (const vq of this.vqs) vq.queue?.destroy();
    this.cancelQuiesce();
    this.resetState();
    this.dispatchEvent(new CustomEvent('status', { detail: 0 }));
  }

  /** Stops the datapath. Processing is synchronous, so no batch is in flight on return. */
  suspend(): void {
    this.live();
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK)) throw new VirtioError(Code.FailedPrecondition, 'only a running device (DRIVER_OK) can be suspended');
    this.suspended = true;
  }

  private cancelQuiesce(): void {
    const q = this.quiescing;
    if (!q) return;
    if (q.timer) clearTimeout(q.timer);
    this.quiescing = null;
    const err = new VirtioError(Code.Cancelled, `${this.name} was reset while suspending`);
    for (const f of q.fail) f(err);
  }

  /** Config changes deferred while suspended take effect (one notification), then the datapath runs. */
  private afterResume(): void {
    const d = this.deferredConfig.splice(0);
    if (d.length) this.updateConfig((v) => { for (const fn of d) fn(v); });
    this.onResume();
    this.runBudgeted();
  }

  /** Called when the device leaves a suspend (completions held meanwhile may go out now). */
  protected onResume(): void {}

  /** Continues after suspend and processes whatever arrived meanwhile. */
  resume(): void {
    this.live();
    if (!this.suspended) throw new VirtioError(Code.FailedPrecondition, 'the device is not suspended');
    this.notHoldingEarly();
    if (this.status & VIRTIO_CONFIG_S_SUSPEND) throw new VirtioError(Code.FailedPrecondition, 'the driver suspended the device (SUSPEND): it resumes it with DRIVER_OK');
    this.suspended = false;
    this.afterResume();
  }

  /** True while suspended. */
  get isSuspended(): boolean {
    return this.suspended;
  }

  /** Bytes of config space. */
  getConfigSize(): number {
    this.live();
    return this.config.length;
  }

  /** Reads config space (a copy). */
  getConfig(offset: number, len: number): Uint8Array {
    this.live();
    this.configRange(offset, len);
    return this.config.slice(offset, offset + len);
  }

  /** Writes config space: only ranges the class declares writable. */
  setConfig(offset: number, data: Uint8Array): void {
    this.live();
    this.configRange(offset, data.length);
    if (!this.configWritable(offset, data.length)) throw new VirtioError(Code.FailedPrecondition, `config bytes [${offset}, +${data.length}) are read-only`);
    this.config.set(data, offset);
    this.configChanged();
  }

  /** Config generation (VIRTIO 1.3 §2.5.1). */
  getGeneration(): number {
    this.live();
    return this.generation;
  }

  /** Sets the config-change callback. */
  setConfigCb(cb: (() => void) | null): void {
    this.live();
    this.configCb = cb;
  }

  /** Virtio device id. */
  getDeviceId(): number {
    this.live();
    return this.attrs.deviceId;
  }

  /** Vendor id. */
  getVendorId(): number {
    this.live();
    return this.attrs.vendorId;
  }

  /** Queue area alignment the device needs (vdpa_sim: VDPASIM_QUEUE_ALIGN, one page). */
  getVqAlign(): number {
    this.live();
    return 4096;
  }

  // ───────────────────────── DMA ops ─────────────────────────

  /** Replaces address space asid's map. */
  setMap(asid: number, entries: readonly IotlbEntry[]): void {
    this.live();
    this.as(asid).setMap(entries);
  }

  /** Adds a mapping to address space asid. */
  dmaMap(asid: number, entry: IotlbEntry): void {
    this.live();
    this.as(asid).dmaMap(entry);
  }

  /** Removes mappings overlapping [iova, iova + size) from address space asid. */
  dmaUnmap(asid: number, iova: number | bigint, size: number): void {
    this.live();
    this.as(asid).dmaUnmap(iova, size);
  }

  /** Address space asid's current mappings (a copy, sorted by IOVA): what the datapath translates through. */
  getMap(asid: number): readonly Readonly<{
    /** First IOVA. */
    iova: bigint;
    /** Bytes mapped. */
    size: number;
    /** Memory offset the IOVA maps to. */
    addr: number;
    /** PERM_R / PERM_W bits. */
    perm: number;
  }>[] {
    this.live();
    return this.as(asid).mappings;
  }

  /** Puts address space asid back to the identity map over RAM, the simulator's initial map (vdpasim_reset_map). */
  resetMap(asid: number): void {
    this.live();
    this.as(asid).setIdentity();
  }

  /**
   * vhost backend features the simulator supports beyond the config ops it has: queues may be
   * enabled after DRIVER_OK (bit 6, VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK), as Linux's
   * vdpasim_get_backend_features reports.
   */
  getBackendFeatures(): bigint {
    this.live();
    return 1n << 6n;
  }

  /** Binds group to address space asid (its queues must be disabled). */
  setGroupAsid(group: number, asid: number): void {
    this.live();
    if (!Number.isInteger(group) || group < 0 || group >= this.ngroups) throw new VirtioError(Code.InvalidArgument, `group ${group} is outside 0..${this.ngroups - 1}`);
    this.as(asid);
    for (let i = 0; i < this.nvqs; i++) {
      if (this.vqs[i]!.ready && this.getVqGroup(i) === group) throw new VirtioError(Code.FailedPrecondition, `queue ${i} of group ${group} is enabled`);
    }
    this.groupAsid[group] = asid;
  }

  /** The address space group `group` uses. */
  getGroupAsid(group: number): number {
    this.live();
    const a = this.groupAsid[group];
    if (a === undefined) throw new VirtioError(Code.InvalidArgument, `group ${group} is outside 0..${this.ngroups - 1}`);
    return a;
  }

  // ───────────────────────── Migration (src/migration/state.ts) ─────────────────────────

  /**
   * The core state of a suspended device with nothing in flight (after suspendDrained() or
   * the SUSPEND status bit). Throws FailedPrecondition otherwise.
   */
  saveCoreState(opts: { early?: boolean } = {}): SimCoreState {
    this.live();
    this.notHoldingEarly();
    const early = opts.early === true;
    if (!early) {
      this.stoppedToSave();
    }
    return {
      deviceId: this.attrs.deviceId, deviceFeatures: this.attrs.supportedFeatures, driverFeatures: this.driverFeatures,
      status: this.status, config: this.config.slice(), generation: this.generation, groupAsid: [...this.groupAsid],
      maps: this.iotlbs.map((t) => t.mappings.map((m) => ({ iova: m.iova, size: m.size, addr: m.addr, perm: m.perm }))),
      vqs: this.vqs.map((vq, i) => ({
        num: vq.num, desc: vq.desc, driver: vq.driver, device: vq.device, ready: vq.ready,
        state: vq.num === 0 || early ? null : this.getVqState(i),
      })),
      // A copy: the caller keeps this state, and the device's list is overwritten by its next save.
      requests: early ? new RecordedChains(0, 0) : this.saveRequests().copy(),
    };
  }

  /**
   * Migration pre-copy, source side: a mark of everything saveCoreState carries but the ring
   * positions and the DRIVER_OK / SUSPEND bits (features, other status bits, config and its
   * generation, address spaces and their maps, queue sizes, areas and enables, and the
   * class's control state), to tell at switchover, without allocating, whether any of it
   * changed since an early state was sent ({@link controlStateUnchanged}).
   */
  markControlState(): ControlStateMark {
    this.live();
    const m: ControlStateMark = {
      device: this, driverFeatures: this.driverFeatures, status: this.status & ~RUN_BITS, generation: this.generation,
      config: this.config.slice(), groupAsid: this.groupAsid.slice(), iotlbGens: this.iotlbs.map((t) => t.generation),
      vqs: this.vqs.map((v) => ({ num: v.num, desc: v.desc, driver: v.driver, device: v.device, ready: v.ready })),
      cls: this.classControlMark(),
    };
    marks.add(Object.freeze(m));
    return m;
  }

  /**
   * True if nothing {@link markControlState} covers changed since `m` was taken on this device.
   * InvalidArgument for anything markControlState did not return.
   */
  controlStateUnchanged(m: ControlStateMark): boolean {
    this.live();
    if (typeof m !== 'object' || m === null || !marks.has(m)) throw new VirtioError(Code.InvalidArgument, 'not a mark markControlState returned');
    if (m.device !== this) return false;
    if (m.driverFeatures !== this.driverFeatures || m.status !== (this.status & ~RUN_BITS) || m.generation !== this.generation) return false;
    const cfg = this.config;
    for (let i = 0; i < cfg.length; i++) if (cfg[i] !== m.config[i]) return false;
    for (let g = 0; g < this.groupAsid.length; g++) if (this.groupAsid[g] !== m.groupAsid[g]) return false;
    // An IOTLB bumps its generation on every change, even one that rewrites the same map.
    for (let a = 0; a < this.iotlbs.length; a++) if (this.iotlbs[a]!.generation !== m.iotlbGens[a]) return false;
    for (let i = 0; i < this.vqs.length; i++) {
      const v = this.vqs[i]!;
      const w = m.vqs[i]!;
      if (v.num !== w.num || v.desc !== w.desc || v.driver !== w.driver || v.device !== w.device || v.ready !== w.ready) return false;
    }
    return this.classControlUnchanged(m.cls);
  }

  /** The class's part of {@link markControlState} (net: its control-queue filter block). */
  protected classControlMark(): Uint8Array | null {
    return null;
  }

  /** Compares the class's control state with its {@link classControlMark}. */
  protected classControlUnchanged(_mark: Uint8Array | null): boolean {
    return true;
  }

  /**
   * Every queue's ring position (null for a queue never sized) and the status and generation:
   * what a migration's delta carries. Same preconditions as {@link saveCoreState}; reads
   * nothing else (no map or config copies inside the downtime).
   */
  savePositions(): SimPositions {
    this.live();
    this.notHoldingEarly();
    this.stoppedToSave();
    const vqs: (VqState | null)[] = [];
    for (let i = 0; i < this.vqs.length; i++) vqs.push(this.vqs[i]!.num === 0 ? null : this.getVqState(i));
    return { status: this.status, generation: this.generation, vqs, requests: this.saveRequests() };
  }

  /** FailedPrecondition while the device holds an early state without its ring positions. */
  private notHoldingEarly(): void {
    if (this.earlyBase !== null) throw new VirtioError(Code.FailedPrecondition, `${this.name} holds an early state without its ring positions: load the switchover state first`);
  }

  /** FailedPrecondition unless suspended with nothing in flight the state cannot carry (what a save needs). */
  private stoppedToSave(): void {
    if (!this.suspended) throw new VirtioError(Code.FailedPrecondition, `${this.name} must be suspended to save its state`);
    const n = this.pendingWork(true);
    if (n > 0) throw new VirtioError(Code.FailedPrecondition, `${this.name} has ${n} requests in flight that a state cannot carry: suspend with suspendDrained() or the SUSPEND status bit`);
  }

  /** The id of the early state this device holds without its ring positions, or null. */
  get earlyStateId(): number | null {
    return this.earlyBase;
  }

  /**
   * Checks that core state `s` (already well-formed) can be loaded into this device: a fresh
   * device (status 0) of the same class, queue count and config size, offering every feature
   * the source offered and accepting the negotiated ones, queue sizes and positions valid.
   * Throws FailedPrecondition / InvalidArgument; changes nothing.
   */
  checkCoreState(s: SimCoreState): void {
    this.live();
    const fail = (code: typeof Code.InvalidArgument | typeof Code.FailedPrecondition, why: string): never => { throw new VirtioError(code, `${this.name}: cannot load state: ${why}`); };
    if (this.status !== 0) fail(Code.FailedPrecondition, 'the destination must be a fresh (reset) device');
    if (s.deviceId !== this.attrs.deviceId) fail(Code.InvalidArgument, `device id ${s.deviceId} is not ${this.attrs.deviceId}`);
    // Linux's `vdpa dev add … device_features` exists for this: the destination must offer
    // everything the source offered, or the driver could have negotiated what it lacks.
    const missing = s.deviceFeatures & ~this.attrs.supportedFeatures;
    if (missing) fail(Code.FailedPrecondition, `the destination does not offer features 0x${missing.toString(16)} the source offered`);
    const why = this.rejectFeatures(s.driverFeatures);
    if (why !== null) fail(Code.FailedPrecondition, `negotiated features refused: ${why}`);
    if (s.config.length !== this.config.length) fail(Code.FailedPrecondition, `config size ${s.config.length} is not ${this.config.length}`);
    if (s.vqs.length !== this.nvqs) fail(Code.FailedPrecondition, `${s.vqs.length} queues, the destination has ${this.nvqs}`);
    if (s.groupAsid.length !== this.ngroups || s.groupAsid.some((a) => !Number.isInteger(a) || a < 0 || a >= this.nas)) fail(Code.InvalidArgument, 'group address spaces do not fit the destination');
    if (s.maps.length !== this.nas) fail(Code.InvalidArgument, `${s.maps.length} address spaces, the destination has ${this.nas}`);
    checkLiveStatus(s.status, s.driverFeatures, fail);
    const packed = hasFeature(s.driverFeatures, VIRTIO_F_RING_PACKED);
    s.vqs.forEach((v, i) => {
      if (v.num === 0) {
        if (v.ready) fail(Code.InvalidArgument, `queue ${i} is enabled without a size`);
        return;
      }
      if (!Number.isInteger(v.num) || v.num < 1 || v.num > this.attrs.vqNumMax) fail(Code.InvalidArgument, `queue ${i} size ${v.num} is outside 1..${this.attrs.vqNumMax}`);
      if (v.ready) checkQueueSize(v.num, packed);
      if (v.state) checkVqState(v.state, packed ? 'packed' : 'split', v.num);
    });
    const reqs = s.requests ?? NO_REQUESTS;
    if (!(reqs instanceof RecordedChains)) fail(Code.InvalidArgument, 'the requests in flight are not a RecordedChains');
    if (reqs.count > 0 && s.vqs.some((v) => v.state === null && v.num !== 0)) fail(Code.InvalidArgument, 'requests in flight without ring positions');
    const reqWhy = this.checkRequests(reqs, s.vqs.map((v) => v.num));
    if (reqWhy !== null) fail(Code.InvalidArgument, reqWhy);
  }

  /**
   * Loads core state `s` (checked with {@link checkCoreState}): features, config, maps,
   * queues with their positions; the device ends suspended — by the vdpa op (DRIVER_OK set:
   * resume() runs it) or, if the driver had suspended it, with SUSPEND (DRIVER_OK resumes).
   * If anything fails on the way the device is reset and the error thrown: nothing changed.
   */
  loadCoreState(s: SimCoreState, loadClass: () => void, early: number | null = null): void {
    this.checkCoreState(s);
    if (early !== null && s.vqs.some((v) => v.state !== null)) throw new VirtioError(Code.InvalidArgument, `${this.name}: an early state carries no ring positions`);
    try {
      this.status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
      this.driverFeatures = s.driverFeatures;
      s.maps.forEach((m, asid) => this.iotlbs[asid]!.setMap(m));
      s.groupAsid.forEach((a, g) => { this.groupAsid[g] = a; });
      this.config.set(s.config);
      s.vqs.forEach((v, i) => {
        const vq = this.vqs[i]!;
        if (v.num === 0) return;
        vq.num = v.num;
        vq.desc = v.desc;
        vq.driver = v.driver;
        vq.device = v.device;
        vq.addrSet = true;
        if (v.state) vq.saved = checkVqState(v.state, hasFeature(s.driverFeatures, VIRTIO_F_RING_PACKED) ? 'packed' : 'split', v.num);
      });
      loadClass();
      this.loadRequests(s.requests ?? NO_REQUESTS);
      s.vqs.forEach((v, i) => { if (v.ready) this.setVqReady(i, true); });
      this.suspended = true;
      this.status = s.status;
      this.generation = s.generation;
      this.earlyBase = early;
    } catch (e) {
      for (const vq of this.vqs) vq.queue?.destroy();
      this.resetState();
      throw e;
    }
  }

  /**
   * The switchover part of a migration, on a device an early state was loaded into
   * ({@link loadCoreState} with `early`): the source's status and config generation at its
   * stop and every queue's ring position (null for a queue never sized). `base` must be the
   * id of the early state this device holds. Everything is validated first; on error nothing
   * changes. Afterwards the device is suspended exactly as after a full load.
   */
  loadPositions(base: number, status: number, generation: number, vqs: readonly (VqState | null)[], requests: RecordedChains = NO_REQUESTS): void {
    this.live();
    const fail = (code: typeof Code.InvalidArgument | typeof Code.FailedPrecondition, why: string): never => { throw new VirtioError(code, `${this.name}: cannot load the switchover state: ${why}`); };
    if (this.earlyBase === null) fail(Code.FailedPrecondition, 'no early state was loaded (load the full state instead)');
    if (base !== this.earlyBase) fail(Code.FailedPrecondition, `it builds on early state ${hexId(base)}, this device holds ${hexId(this.earlyBase!)}`);
    checkLiveStatus(status, this.driverFeatures, fail);
    if (!Number.isInteger(generation) || generation < 0 || generation > 0xffffffff) fail(Code.InvalidArgument, `generation ${generation} is not a u32`);
    if (!Array.isArray(vqs)) fail(Code.InvalidArgument, 'the ring positions are not an array');
    if (vqs.length !== this.nvqs) fail(Code.InvalidArgument, `${vqs.length} queues, the device has ${this.nvqs}`);
    const layout = hasFeature(this.driverFeatures, VIRTIO_F_RING_PACKED) ? 'packed' : 'split';
    const checked: (VqState | null)[] = [];
    for (let i = 0; i < vqs.length; i++) {
      const st = vqs[i] ?? null;
      const num = this.vqs[i]!.num;
      if (num === 0) {
        if (st !== null) fail(Code.InvalidArgument, `queue ${i} was never sized but has a ring position`);
        checked.push(null);
      } else {
        if (st === null) fail(Code.InvalidArgument, `queue ${i} has no ring position`);
        checked.push(checkVqState(st, layout, num));
      }
    }
    if (!(requests instanceof RecordedChains)) fail(Code.InvalidArgument, 'the requests in flight are not a RecordedChains');
    const why = this.checkRequests(requests, this.vqs.map((v) => v.num));
    if (why !== null) fail(Code.InvalidArgument, why);
    for (let i = 0; i < checked.length; i++) {
      const st = checked[i];
      if (!st) continue;
      const vq = this.vqs[i]!;
      // A queue's ring position is set while suspended (set_vq_state): the ring is already
      // translated and checked, so this only moves indices.
      if (vq.queue) vq.queue.setState(st);
      vq.saved = st;
    }
    this.loadRequests(requests);
    this.status = status;
    this.generation = generation;
    this.earlyBase = null;
  }

  // ───────────────────────── Datapath ─────────────────────────

  /**
   * Runs the datapath on every ready queue (or only `only`), at most `budget` chains per
   * queue, then raises the used-buffer callbacks the rings ask for. A queue the driver broke
   * sets DEVICE_NEEDS_RESET and raises the config callback (VIRTIO 1.3 §2.1.2). Does nothing
   * unless DRIVER_OK, not suspended and not NEEDS_RESET. Returns chains processed.
   */
  process(budget = this.batch, only?: number): number {
    this.live();
    if (!this.running) return 0;
    // runDatapath without its closure: this runs once per kick.
    let done = 0;
    try {
      done = this.datapath(budget, only);
    } catch (e) {
      if (this.passFailed(e)) return done;
    }
    return this.afterPass(done);
  }

  /** One budget now; if it was used up, the rest in a microtask (until a pass finds less). */
  private runBudgeted(only?: number): void {
    if (this.destroyed) return; // a microtask scheduled before destroy(): nothing to do
    const done = this.process(this.batch, only);
    if (done >= this.batch && !this.moreScheduled) {
      this.moreScheduled = true;
      queueMicrotask(() => {
        this.moreScheduled = false;
        this.runBudgeted();
      });
    }
  }

  /**
   * Frees what the device holds in the platform memory (after devDel). Afterwards every op
   * throws NotFound and touches nothing (the freed tables may already belong to another
   * device); work scheduled earlier (microtasks, backend answers) is dropped. Idempotent.
   */
  destroy(): void {
    if (this.destroyed) return;
    // Reset (one `status` 0 event) unless the bus already did (removeDevice resets).
    if (this.status !== 0) this.reset();
    else {
      for (const vq of this.vqs) vq.queue?.destroy();
      this.resetState();
    }
    this.destroyed = true;
    this.onDestroy();
    this.releaseOwned();
  }

  /** True once {@link destroy} ran. */
  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** Throws NotFound if the device was destroyed. Every op calls it first. */
  protected live(): void {
    if (this.destroyed) throw new VirtioError(Code.NotFound, `device ${this.name} was deleted`);
  }

  /** Allocates private memory that destroy() (or a failed construction) frees. */
  protected allocPriv(size: number, align: number): number {
    const off = this.platform.priv.alloc(size, align);
    this.owned.push({ arena: 'priv', off });
    return off;
  }

  /** Allocates RAM that destroy() (or a failed construction) frees. */
  protected allocRam(size: number, align: number): number {
    const off = this.platform.ram.alloc(size, align);
    this.owned.push({ arena: 'ram', off });
    return off;
  }

  private releaseOwned(): void {
    for (const vq of this.vqs ?? []) vq.queue?.destroy();
    for (const t of this.iotlbs ?? []) t.destroy();
    for (const { arena, off } of this.owned.splice(0).reverse()) {
      (arena === 'priv' ? this.platform.priv : this.platform.ram).release(off);
    }
  }

  /**
   * Frees what a device whose construction failed had allocated (a subclass constructor calls
   * it from its catch; constructDevice calls it for any VdpaSim built inside). Idempotent.
   */
  static abandon(dev: VdpaSim): void {
    if (dev.destroyed) return;
    dev.destroyed = true;
    dev.releaseOwned();
  }

  /** Subclasses free their own memory here. */
  protected onDestroy(): void {}

  /** True when the datapath may run: DRIVER_OK, not suspended, not NEEDS_RESET or FAILED. */
  get running(): boolean {
    return this.canComplete && this.quiescing === null;
  }

  /** True when requests already taken may complete: running, or finishing them for a suspend. */
  protected get canComplete(): boolean {
    return !this.destroyed && (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && !this.suspended &&
      (this.status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED)) === 0;
  }

  /**
   * Runs datapath work `fn`, then handles what it left: a ring the driver broke sets
   * NEEDS_RESET; used buffers the driver wants to hear about raise its callbacks.
   */
  protected runDatapath(fn: () => number): number {
    let done = 0;
    try {
      done = fn();
    } catch (e) {
      if (this.passFailed(e)) return done;
    }
    return this.afterPass(done);
  }

  /**
   * Handles an error a datapath pass threw. Returns true if the pass is over (the device was
   * cancelled, or faulted and is now NEEDS_RESET); false for a peer error, which
   * {@link afterPass} finds on its queue.
   */
  private passFailed(e: unknown): boolean {
    // User code the pass called (a port, a backend, a config callback) reset, disabled or
    // deleted the device: the pass stops at the first touch of a destroyed queue. That is
    // the caller's doing, not a fault.
    if (e instanceof VirtioError && e.code === Code.Cancelled) return true;
    // A peer error broke a ring: afterPass finds the queue and sets NEEDS_RESET. Any other
    // error is the device's own fault (a backend, a bug): it must not escape into the
    // driver's kick or a microtask, so the device stops with NEEDS_RESET too (§2.1.2).
    if (!(e instanceof VirtioError) || !PEER_CODES.has(e.code)) {
      const err = e instanceof VirtioError ? e : new VirtioError(Code.Internal, `${this.name}: datapath fault: ${(e as Error)?.message ?? String(e)}`, { cause: e });
      this.needsReset(-1, err);
      return true;
    }
    return false;
  }

  /**
   * After a pass: a broken queue sets NEEDS_RESET; queues with used buffers the driver wants to
   * hear about raise their callbacks. Runs once per kick, so it reads the queue state blocks
   * (status, used-since-last-decision) from memory and calls into wasm (dev_need_call) only
   * for a queue that pushed used buffers: dev_need_call answers 0 without a side effect for a
   * broken queue or one with nothing pending (assembly/ring/split.ts, packed.ts devNeedCall).
   */
  private afterPass(done: number): number {
    const i32 = this.platform.i32;
    for (let i = 0; i < this.nvqs; i++) {
      const vq = this.vqs[i]!;
      const q = vq.queue;
      if (!q) continue;
      const qsb = q.qsb;
      if (i32[(qsb + Q.STATUS) >> 2] !== 0) {
        const st = q.state;
        if (st.state === 'broken') {
          this.needsReset(i, st.error);
          return done;
        }
      }
      if (i32[(qsb + Q.PENDING) >> 2] !== 0 && q.needCall()) vq.cb?.();
    }
    return done;
  }

  /**
   * Pops up to `max` chains. An empty ring re-arms the kick and is looked at once more, for
   * buffers that raced in meanwhile (vhost's handle_tx with vhost_enable_notify). 0 = idle.
   */
  protected popOrRearm(q: DeviceQueue, max: number): number {
    const n = q.pop(max);
    if (n > 0 || !q.enableKick()) return n;
    return q.pop(max);
  }

  /** The ready queue idx, or null. For datapaths. */
  protected queue(idx: number): DeviceQueue | null {
    return this.vqs[idx]?.queue ?? null;
  }

  /** Changes config space through `fn`, bumps the generation and raises the config callback. */
  protected updateConfig(fn: (view: DataView) => void): void {
    // VIRTIO 1.4 §3.4: a device its driver suspended changes no config field; the change waits
    // for resume. (The vdpa suspend op keeps Linux's vdpa_sim semantics: it stops the datapath only.)
    if (this.status & VIRTIO_CONFIG_S_SUSPEND) {
      this.deferredConfig.push(fn);
      return;
    }
    fn(this.configView);
    this.configChanged();
  }

  /**
   * The class's datapath: process up to `budget` chains per ready queue (or only queue
   * `only`). Peer errors thrown by the rings are handled by the core. Returns chains processed.
   */
  protected abstract datapath(budget: number, only?: number): number;

  /** Class-specific feature checks (dependencies between feature bits); null to accept. */
  protected classRejectFeatures(_features: bigint): string | null {
    return null;
  }

  /** Whether the driver may write config bytes [offset, offset + len). @default false */
  protected configWritable(_offset: number, _len: number): boolean {
    return false;
  }

  /** The queue's type as vdpa vstats prints it. */
  protected vqType(_idx: number): string {
    return 'vq';
  }

  /** Called on reset, after the core state is back to initial. */
  protected onReset(): void {}

  private needsReset(vq: number, error: VirtioError): void {
    if (this.destroyed || this.status & VIRTIO_CONFIG_S_NEEDS_RESET) return;
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    // One diagnostic per breakage, blaming the driver (shared/STYLE.md).
    this.dispatchEvent(new CustomEvent<NeedsResetDetail>('needs-reset', { detail: { vq, error } }));
    this.configChanged();
  }

  private configChanged(): void {
    this.generation = (this.generation + 1) >>> 0;
    this.dispatchEvent(new CustomEvent('config', { detail: this.generation }));
    this.configCb?.();
  }

  private resetState(): void {
    this.status = 0;
    this.earlyBase = null;
    this.driverFeatures = 0n;
    this.suspended = false;
    this.deferredConfig = [];
    for (const vq of this.vqs) {
      Object.assign(vq, { num: 0, desc: 0n, driver: 0n, device: 0n, addrSet: false, ready: false, cb: null, queue: null, saved: null });
      this.platform.u32[vq.doorbell >> 2] = 0;
    }
    for (const t of this.iotlbs) t.setIdentity();
    this.groupAsid.fill(0);
    this.onReset();
  }

  private vq(idx: number): SimVq {
    const vq = Number.isInteger(idx) ? this.vqs[idx] : undefined;
    if (!vq) throw new VirtioError(Code.InvalidArgument, `queue ${idx} is outside 0..${this.nvqs - 1}`);
    return vq;
  }

  private vqNotReady(idx: number, op: string): SimVq {
    const vq = this.vq(idx);
    if (vq.ready) throw new VirtioError(Code.FailedPrecondition, `${op}: queue ${idx} is enabled`);
    return vq;
  }

  private as(asid: number): Iotlb {
    const t = Number.isInteger(asid) ? this.iotlbs[asid] : undefined;
    if (!t) throw new VirtioError(Code.InvalidArgument, `address space ${asid} is outside 0..${this.nas - 1}`);
    return t;
  }

  private configRange(offset: number, len: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > this.config.length) {
      throw new VirtioError(Code.InvalidArgument, `config range [${offset}, +${len}) is outside the ${this.config.length}-byte config space`);
    }
  }
}

/** The core part of a device's migration state (plain data; src/migration/state.ts encodes it). */
export interface SimCoreState {
  /** Virtio device id. */
  deviceId: number;
  /** Features the source device offered (its provisioned device_features). */
  deviceFeatures: bigint;
  /** Negotiated features. */
  driverFeatures: bigint;
  /** Device status (DRIVER_OK with a vdpa suspend; SUSPEND without DRIVER_OK when the driver suspended it). */
  status: number;
  /** Config space bytes. */
  config: Uint8Array;
  /** Config generation. */
  generation: number;
  /** Address space of each virtqueue group. */
  groupAsid: number[];
  /** Mappings of each address space (memory offsets of the platform). */
  maps: {
    /** First IOVA of the mapping. */
    iova: bigint;
    /** Bytes mapped. */
    size: number;
    /** Memory offset the IOVA maps to. */
    addr: number;
    /** Access the device has (PERM_R | PERM_W). */
    perm: number;
  }[][];
  /** Every virtqueue: size, areas, enabled, ring position (null: never set up). */
  vqs: {
    /** Queue size set by setVqNum (0: never set). */
    num: number;
    /** Descriptor area address (IOVA). */
    desc: bigint;
    /** Driver area address (IOVA). */
    driver: bigint;
    /** Device area address (IOVA). */
    device: bigint;
    /** setVqReady(true) was called. */
    ready: boolean;
    /** Ring position (getVqState), or null for a queue never sized. */
    state: VqState | null;
  }[];
  /** Requests in flight the destination re-submits (blk; none in an early state). @default none */
  requests?: RecordedChains;
}

/** What {@link VdpaSim.savePositions} returns. */
export interface SimPositions {
  /** Device status. */
  status: number;
  /** Config generation. */
  generation: number;
  /** Every queue's ring position (null for a queue never sized). */
  vqs: (VqState | null)[];
  /**
   * Requests in flight the destination re-submits (blk): the device's own list, which its next
   * save overwrites (copy() it to keep it).
   */
  requests: RecordedChains;
}

/** The empty list of requests in flight (never appended to). */
const NO_REQUESTS = new RecordedChains(0, 0);

/** Options of {@link VdpaSim.suspendDrained}. */
export interface SuspendOptions {
  /**
   * Migration: leave in flight the requests a saved state can carry, instead of waiting for
   * them (blk: the destination re-submits them and the source's late answers are dropped;
   * a re-submitted write completes only once the source's backend is idle, see
   * VdpaSimBlk.releaseFence). The suspend then costs no backend round trip. @default false
   */
  record?: boolean;
}

/** What {@link VdpaSim.markControlState} took: opaque to callers, compared by the device. */
export interface ControlStateMark {
  /** The device it was taken on (a mark compares only with its own device). */
  readonly device: VdpaSim;
  /** Negotiated features. */
  readonly driverFeatures: bigint;
  /** Status without DRIVER_OK and SUSPEND (the bits a switchover changes). */
  readonly status: number;
  /** Config generation. */
  readonly generation: number;
  /** Config space bytes (a copy). */
  readonly config: Uint8Array;
  /** Address space of each group. */
  readonly groupAsid: readonly number[];
  /** Each IOTLB's generation (bumped on every map change). */
  readonly iotlbGens: readonly number[];
  /** Each queue's size, areas and enable bit. */
  readonly vqs: readonly {
    /** Queue size. */
    num: number;
    /** Descriptor area IOVA. */
    desc: bigint;
    /** Driver area IOVA. */
    driver: bigint;
    /** Device area IOVA. */
    device: bigint;
    /** Enabled. */
    ready: boolean;
  }[];
  /** The class's control state (net: its filter block), or null. */
  readonly cls: Uint8Array | null;
}

/** The status bits a migration's switchover changes (the rest must not move after an early save). */
const RUN_BITS = VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_SUSPEND;

/** Marks markControlState returned (a forged one is refused, not compared). */
const marks = new WeakSet<object>();

const hexId = (id: number): string => '0x' + (id >>> 0).toString(16).padStart(8, '0');

/** A migrated status must be a live device's: FEATURES_OK and DRIVER_OK or SUSPEND, no NEEDS_RESET/FAILED. */
function checkLiveStatus(st: number, driverFeatures: bigint, fail: (code: typeof Code.InvalidArgument | typeof Code.FailedPrecondition, why: string) => never): void {
  const okRunning = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
  if (!Number.isInteger(st) || st < 0 || st > 0xff || (st & okRunning) !== okRunning || !(st & RUN_BITS) || (st & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED))) {
    fail(Code.FailedPrecondition, `status 0x${Number(st).toString(16)} is not a live device's (FEATURES_OK and DRIVER_OK or SUSPEND, no NEEDS_RESET/FAILED)`);
  }
  if ((st & VIRTIO_CONFIG_S_SUSPEND) && !hasFeature(driverFeatures, VIRTIO_F_SUSPEND)) fail(Code.InvalidArgument, 'SUSPEND without VIRTIO_F_SUSPEND');
}

/** The feature mask of VERSION_1 plus the given bits. */
export function features(...bits: number[]): bigint {
  return bits.reduce((f, b) => f | featureBit(b), featureBit(VIRTIO_F_VERSION_1));
}

let constructing: VdpaSim[] | null = null;

/**
 * Runs a device constructor so that a failure leaks nothing: every VdpaSim constructed inside
 * `make` that does not come out of it releases the platform memory it allocated (through
 * allocPriv/allocRam, its IOTLBs and doorbells). Management devices create through this.
 */
export function constructDevice<T extends VdpaSim>(make: () => T): T {
  const outer = constructing;
  const mine: VdpaSim[] = [];
  constructing = mine;
  try {
    const dev = make();
    for (const d of mine) if (d !== dev) VdpaSim.abandon(d);
    return dev;
  } catch (e) {
    for (const d of mine) VdpaSim.abandon(d);
    throw e;
  } finally {
    constructing = outer;
  }
}
