// The driving side of "the device in a worker" (issue 8 §2): a RemoteVdpaBus talks to a device
// worker (host.ts) over a Channel, and a RemoteVdpaDevice implements the vdpa config ops over it
// so that virtio_vdpa with VirtioNetDriver/VirtioBlkDriver (or any other bus driver) runs
// unchanged against a device in another worker: add it to a local VdpaBus.
//
// How synchronous ops stay synchronous (the choice, and why): the config ops are synchronous in
// Linux and in our drivers (virtio_vdpa reads the status back right after writing FEATURES_OK;
// the net driver reads config fields inline). So:
//   - what never changes for a device's life is cached at open: device features, config size,
//     device/vendor id, vq num min/max, vq alignment — no round trip;
//   - every other op is a synchronous call through a shared-memory mailbox (mailbox.ts): the
//     request is written to shared memory, the device worker is woken by a doorbell, and this
//     thread blocks in Atomics.wait until the answer. Ops therefore apply in program order and
//     their errors are thrown here, with the device's VirtioError code. This needs a thread that
//     may block: any worker, and Node's main thread. A browser main thread may not block, so
//     there drive the device from a worker (a call throws FailedPrecondition);
//   - kickVq rings the queue's kick doorbell (three atomics, no round trip), and the callbacks
//     set with setVqCb/setConfigCb run when the device worker rings the call/config doorbells,
//     watched here with Atomics.waitAsync (no thread is blocked for them).
// A device worker that exits or a channel that closes makes every open device dead: its config
// callback runs, getStatus() then reports DEVICE_NEEDS_RESET (so drivers fail their requests, as
// after any device error), reset() does nothing (there is nothing left to reset) and every other
// op throws VirtioError(Cancelled). A synchronous call the worker does not answer within
// `syncTimeoutMs` kills the device the same way instead of hanging.
//
// vhost-vdpa nodes of the worker open two ways: RemoteVhostFile (openVhost) sends each ioctl and
// IOTLB message as a channel request and resolves later, for a VMM that may await;
// RemoteVhostSyncFile (openVhostSync) sends the same bytes through a mailbox of its own and
// answers before returning, for a caller inside a synchronous guest register access (a
// VirtioPciFunction). Its typed methods are VhostVdpaFile's (VhostTypedFile); it dies as a device
// does (worker gone, channel closed, no answer in time: Cancelled).

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import type { VqNotification, VqVendorStats } from '../bus/config-ops.ts';
import type { VqState } from '../ring/vq-state.ts';
import type { IotlbEntry } from '../platform/iotlb.ts';
import type { MgmtDevAttrs } from '../mgmt/mgmtdev.ts';
import type { SuspendOptions } from '../devices/sim-core.ts';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../virtio/constants.ts';
import { Doorbell, DoorbellWaiter, type DoorbellHandle } from './doorbell.ts';
import { Channel, type PortLike } from './channel.ts';
import { MailboxClient } from './mailbox.ts';
import type { OpenedDevice, HostStats, MigSaved, MigSavedSync, MigLoaded, MigStarted, MigStorage } from './host.ts';
import type { BlkBackendDescriptor } from './backend.ts';
import type { SwitchLinkEndHandle } from './switch-link.ts';
import type { SwitchPortStats } from '../devices/switch.ts';
import { VhostError, ERRNO, errnoName, type ErrnoName } from '../vhost/errno.ts';
import { VhostTypedFile } from '../vhost/typed-file.ts';
import type { VhostVdpaNodeInfo, VhostVdpaFile } from '../drivers/vhost-vdpa.ts';
import type { VirtioPciFunction } from '../pci/virtio-pci.ts';

/** Bytes of the platform's arenas the device worker gets for its devices. */
export interface AttachSlices {
  /** Private memory: state blocks, IOTLB tables, doorbells. */
  priv: number;
  /** RAM: RAM disks and device staging buffers. */
  ram: number;
}

/** What `devAdd` answers. */
export interface RemoteDevInfo {
  /** Device name. */
  name: string;
  /** Virtqueues. */
  nvqs: number;
  /** Virtio device id. */
  deviceId: number;
}

/**
 * Attributes of a device worker's `devAdd`: those of `vdpa dev add` (MgmtDevAttrs), posted to
 * the worker — so a blk `backend` is a descriptor the worker opens itself (`{ file }` in a Node
 * worker, `{ opfs }` in a browser worker), not a BlkBackend object.
 */
export type RemoteDevAttrs = Omit<MgmtDevAttrs, 'backend'> & {
  /** The blk device's disk: storage the worker opens (and closes when the device is deleted). */
  backend?: BlkBackendDescriptor;
};

/** ioctl() as the syscall answers. */
export interface IoctlResult {
  /** 0, or -errno. */
  ret: number;
  /** The struct written back, or null (write-only requests, errors). */
  out: Uint8Array | null;
}

/** Options of {@link RemoteVdpaBus.connect}. */
export interface RemoteVdpaBusOptions {
  /**
   * Send an `attach` with a handle carved from `platform` (priv/ram slices of these sizes) for
   * the worker's devices. Set false when the worker was started with its platform already.
   * @default { priv: 4 MiB, ram: 16 MiB }
   */
  attach?: AttachSlices | false;
  /** Milliseconds a synchronous config op may wait for the worker. @default 5000 */
  syncTimeoutMs?: number;
}

/** What `vdpa ARGV…` printed in the device worker, and its exit code. */
export interface RemoteVdpaOutput {
  /** Exit code: 0, or 1 on any error. */
  code: number;
  /** Standard output. */
  out: string;
  /** Standard error. */
  err: string;
}

/** A client of a device worker: its management requests, and the devices opened through it. */
export class RemoteVdpaBus {
  /** The shared platform (this thread's view). */
  readonly platform: Platform;
  /** The channel to the worker. */
  readonly channel: Channel;
  /** Watches the call and config doorbells of the devices opened here. */
  readonly waiter: DoorbellWaiter;
  /** Milliseconds a synchronous config op may wait. */
  readonly syncTimeoutMs: number;
  private readonly wake: Doorbell;
  private readonly open = new Map<string, RemoteVdpaDevice>();
  private readonly syncFiles = new Set<RemoteVhostSyncFile>();
  private pumping = false;
  private closed = false;

  private constructor(platform: Platform, channel: Channel, wake: DoorbellHandle, syncTimeoutMs: number) {
    this.platform = platform;
    this.channel = channel;
    this.wake = new Doorbell(platform, wake);
    this.waiter = new DoorbellWaiter(platform);
    this.syncTimeoutMs = syncTimeoutMs;
    channel.onClose((e) => this.lost(e));
  }

  /**
   * Connects to a device worker on `port` (a Node Worker, a browser Worker, a MessagePort).
   * Rejects with the worker's VirtioError, or Cancelled if it dies first.
   */
  static async connect(port: PortLike, platform: Platform, opts: RemoteVdpaBusOptions = {}): Promise<RemoteVdpaBus> {
    if (!platform.shared) throw new VirtioError(Code.InvalidArgument, 'a device worker needs a shared platform (Platform.create({ shared: true }))');
    const ch = new Channel(port, { name: 'device worker' });
    const a = opts.attach ?? { priv: 4 << 20, ram: 16 << 20 };
    try {
      const r = (a ? await ch.request('attach', platform.handle(a)) : await ch.request('hello')) as { wake: DoorbellHandle };
      return new RemoteVdpaBus(platform, ch, r.wake, opts.syncTimeoutMs ?? 5000);
    } catch (e) {
      ch.close();
      throw e;
    }
  }

  /** Sends a channel request and wakes the worker's loop so it reads it. */
  request(op: string, ...args: unknown[]): Promise<unknown> {
    const r = this.channel.request(op, ...args);
    if (!this.channel.closedReason) this.wake.ring();
    return r;
  }

  /** Runs `vdpa ARGV…` (iproute2's tool) against the worker's bus; resolves to what it printed. */
  async vdpa(argv: readonly string[]): Promise<RemoteVdpaOutput> {
    return (await this.request('vdpa', [...argv])) as RemoteVdpaOutput;
  }

  /**
   * `vdpa dev add`: creates a device on the worker's bus. A blk `backend` descriptor is opened
   * by the worker; it rejects with `invalid_argument` for a descriptor it does not know,
   * `unsupported` for one its runtime cannot open (a file in a browser worker, OPFS in Node),
   * or the storage's own error (`not_found` for a missing file given without a size).
   */
  async devAdd(mgmtdev: string, name: string, attrs: RemoteDevAttrs = {}): Promise<RemoteDevInfo> {
    return (await this.request('devAdd', mgmtdev, name, attrs)) as RemoteDevInfo;
  }

  /** `vdpa dev del`: releases the device if it is open here, then deletes it in the worker (and closes a backend it opened for it). */
  async devDel(name: string): Promise<void> {
    const d = this.open.get(name);
    d?.markDead(new VirtioError(Code.NotFound, `device ${name} was deleted`));
    this.open.delete(name);
    await this.request('devDel', name);
    d?.freeMailbox(); // the worker released it: it writes the mailbox no more
  }

  /** Puts a vdpasim_net device of the worker on the worker's L2 switch (port mode). Resolves to the port. */
  async switchConnect(name: string): Promise<number> {
    return (await this.request('switchConnect', name)) as number;
  }

  /**
   * Attaches end `end` of a SwitchLink (SwitchLink.create on the shared platform) to the
   * worker's L2 switch, so it and the switch at the other end form one learning L2 segment.
   * Links must form a tree (no loops: the switches run no spanning tree). Resolves to the link's
   * port; rejects with AlreadyExists if that end is attached somewhere already.
   */
  async switchLink(end: SwitchLinkEndHandle): Promise<number> {
    return (await this.request('switchLink', end)) as number;
  }

  /** Detaches the link on port `port` of the worker's switch (the port forgets what it learned). */
  async switchUnlink(port: number): Promise<void> {
    await this.request('switchUnlink', port);
  }

  /** The worker switch's learned forwarding table: [MAC, port] pairs. */
  async switchTable(): Promise<[string, number][]> {
    return (await this.request('switchTable')) as [string, number][];
  }

  /** Counters of port `port` of the worker's switch (a device's or a link's). */
  async switchPortStats(port: number): Promise<SwitchPortStats> {
    return (await this.request('switchPortStats', port)) as SwitchPortStats;
  }

  /**
   * Binds device `name` of the worker's bus to `driver` ('vhost_vdpa', or 'remote_vdpa' to open
   * it with {@link openDevice}); resolves to the vhost node name for vhost_vdpa, else null.
   */
  async bind(name: string, driver: string): Promise<string | null> {
    return (await this.request('bind', name, driver)) as string | null;
  }

  /** Unbinds device `name` of the worker's bus from its driver. */
  async unbind(name: string): Promise<void> {
    await this.request('unbind', name);
  }

  /** The worker's vhost-vdpa nodes. */
  async vhostNodes(): Promise<VhostVdpaNodeInfo[]> {
    return (await this.request('vhostNodes')) as VhostVdpaNodeInfo[];
  }

  /**
   * Opens vhost node `node` (`vhost-vdpa-0`, …) in the worker: one owner at a time (EBUSY for a
   * second open), as open(2) of /dev/vhost-vdpa-N.
   */
  async openVhost(node: string): Promise<RemoteVhostFile> {
    const fid = (await this.request('vhostOpen', node)) as number;
    return new RemoteVhostFile(this, node, fid);
  }

  /**
   * Opens vhost node `node` in the worker for synchronous calls: the returned file's methods
   * (the {@link VhostTypedFile} set: what a {@link VirtioPciFunction} uses) carry the same ioctl
   * bytes and IOTLB messages as {@link openVhost}'s through a shared-memory mailbox, and return
   * or throw before the next line runs. One owner at a time (EBUSY for a second open). Needs a
   * thread that may block (any worker, Node's main thread); on a browser main thread each call
   * throws VirtioError(FailedPrecondition).
   */
  async openVhostSync(node: string): Promise<RemoteVhostSyncFile> {
    if (this.closed) throw this.channel.closedReason ?? new VirtioError(Code.Cancelled, 'the remote bus was closed');
    const mbox = new MailboxClient(this.platform);
    let fid: number;
    try {
      fid = (await this.request('vhostOpen', node, mbox.handle)) as number;
    } catch (e) {
      // A worker that may still run (the channel merely closed) may have begun serving it.
      if (!this.channel.closedReason || this.channel.peerExited) mbox.free();
      throw e;
    }
    const f = new RemoteVhostSyncFile(this, node, fid, mbox);
    this.syncFiles.add(f);
    return f;
  }

  /** @internal a synchronous vhost file closed or died: not open here any more. */
  droppedFile(f: RemoteVhostSyncFile): void {
    this.syncFiles.delete(f);
  }

  /** The worker loop's counters (sleeps, wakeups, kicks, sync ops, yields). */
  async stats(): Promise<HostStats> {
    return (await this.request('stats')) as HostStats;
  }

  /**
   * Opens device `name` of the worker: one owner at a time. Add the result to a local VdpaBus
   * to bind virtio_vdpa (or another bus driver) to it.
   */
  async openDevice(name: string): Promise<RemoteVdpaDevice> {
    if (this.closed) throw this.channel.closedReason ?? new VirtioError(Code.Cancelled, 'the remote bus was closed');
    if (this.open.has(name)) throw new VirtioError(Code.AlreadyExists, `${name} is already open here`);
    const mbox = new MailboxClient(this.platform);
    let o: OpenedDevice;
    try {
      o = (await this.request('open', name, mbox.handle)) as OpenedDevice;
    } catch (e) {
      mbox.free();
      throw e;
    }
    const dev = new RemoteVdpaDevice(this, o, mbox);
    this.open.set(name, dev);
    this.pump();
    return dev;
  }

  /** Closes the channel (the worker then releases its devices); devices opened here die. */
  close(): void {
    if (this.closed) return;
    this.channel.close();
  }

  /** @internal a device died on its own (released in the worker, or a call timed out): not open here any more. */
  dropped(dev: RemoteVdpaDevice): void {
    if (this.open.get(dev.name) === dev) this.open.delete(dev.name);
  }

  /** @internal a device released itself. */
  forget(dev: RemoteVdpaDevice): void {
    if (this.open.get(dev.name) === dev) this.open.delete(dev.name);
    // The mailbox is freed once the worker has released the device (its last write to it).
    if (!this.channel.closedReason) this.request('release', dev.name).then(() => dev.freeMailbox(), () => {});
  }

  private lost(e: VirtioError): void {
    this.closed = true;
    for (const d of [...this.open.values(), ...this.syncFiles]) {
      d.markDead(e);
      // A worker that exited writes nothing more; one whose channel merely closed may still be
      // releasing the device or file (it marks the mailbox closed), so its mailbox stays orphaned.
      if (this.channel.peerExited) d.freeMailbox();
    }
    this.open.clear();
    this.syncFiles.clear();
    // Closing wakes the pump's pending waitAsync, which then writes nothing (DoorbellWaiter.unpark).
    this.waiter.close();
    this.wake.free();
  }

  // Watches call/config doorbells without blocking: Atomics.waitAsync, bounded so a closed
  // waiter is noticed, until the bus closes.
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    const run = async () => {
      while (!this.closed && !this.waiter.isClosed) {
        try {
          await this.waiter.waitAsync(1000);
        } catch {
          break;
        }
      }
      this.pumping = false;
    };
    void run();
  }
}

/** A vdpa device that lives in a device worker, driven from this thread (see the file comment). */
export class RemoteVdpaDevice implements VdpaDevice {
  readonly name: string;
  readonly nvqs: number;
  readonly ngroups: number;
  readonly nas: number;
  private readonly remote: RemoteVdpaBus;
  private readonly o: OpenedDevice;
  private readonly mbox: MailboxClient;
  private readonly kicks: Doorbell[];
  private readonly calls: Doorbell[];
  private readonly configDb: Doorbell;
  private readonly cbs: ((() => void) | null)[];
  private configCb: (() => void) | null = null;
  private lastStatus = 0;
  private dead: VirtioError | null = null;

  /** @internal made by {@link RemoteVdpaBus.openDevice}. */
  constructor(remote: RemoteVdpaBus, o: OpenedDevice, mbox: MailboxClient) {
    this.remote = remote;
    this.o = o;
    this.mbox = mbox;
    this.name = o.name;
    this.nvqs = o.nvqs;
    this.ngroups = o.ngroups;
    this.nas = o.nas;
    const p = remote.platform;
    this.kicks = o.kicks.map((h) => new Doorbell(p, h));
    this.calls = o.calls.map((h) => new Doorbell(p, h));
    this.configDb = new Doorbell(p, o.config);
    this.cbs = new Array<(() => void) | null>(o.nvqs).fill(null);
    // A driver callback that throws must not stop the pump (no later call would be delivered).
    const safe = (f: (() => void) | null | undefined) => {
      try {
        f?.();
      } catch {
        /* the driver's own fault; the next call is still delivered */
      }
    };
    this.calls.forEach((d, i) => remote.waiter.watch(d, () => safe(this.cbs[i])));
    remote.waiter.watch(this.configDb, () => safe(this.configCb));
  }

  /** Why the device is dead (worker gone, channel closed, deleted), or null. */
  get deadReason(): VirtioError | null {
    return this.dead;
  }

  /** @internal frees the mailbox once the worker writes it no more (released, or the worker exited). */
  freeMailbox(): void {
    this.mbox.free();
  }

  /** @internal the device is gone: raise the config callback so drivers see NEEDS_RESET. */
  markDead(e: VirtioError): void {
    if (this.dead) return;
    this.dead = e;
    this.remote.dropped(this);
    if (!this.remote.waiter.isClosed) {
      for (const d of [...this.calls, this.configDb]) this.remote.waiter.unwatch(d);
    }
    const cb = this.configCb;
    if (cb) {
      queueMicrotask(() => {
        try {
          cb();
        } catch {
          /* a driver's callback must not escape into a microtask */
        }
      });
    }
  }

  private call(op: string, ...args: unknown[]): unknown {
    return syncCall(this, this.name, this.mbox, this.remote.syncTimeoutMs, op, args);
  }

  private vqIndex(idx: number): number {
    if (!Number.isInteger(idx) || idx < 0 || idx >= this.nvqs) throw new VirtioError(Code.InvalidArgument, `queue ${idx} is outside 0..${this.nvqs - 1}`);
    return idx;
  }

  // Virtqueue ops
  /** Sets a queue's area IOVAs (synchronous call). */
  setVqAddress(idx: number, descArea: number | bigint, driverArea: number | bigint, deviceArea: number | bigint): void {
    this.call('setVqAddress', idx, descArea, driverArea, deviceArea);
  }
  /** Sets a queue's size (synchronous call). */
  setVqNum(idx: number, num: number): void {
    this.call('setVqNum', idx, num);
  }
  /** Rings the queue's kick doorbell (no round trip). A dead device ignores kicks. */
  kickVq(idx: number): void {
    this.vqIndex(idx);
    if (!this.dead) this.kicks[idx]!.ring();
  }
  /** Sets the used-buffer callback; it runs when the device rings the queue's call doorbell. */
  setVqCb(idx: number, cb: (() => void) | null): void {
    this.vqIndex(idx);
    this.cbs[idx] = cb;
    if (!this.dead) this.call('setVqCb', idx, cb !== null);
  }
  /** Enables or disables a queue (synchronous call). */
  setVqReady(idx: number, ready: boolean): void {
    this.call('setVqReady', idx, ready);
  }
  /** True if the queue is enabled. */
  getVqReady(idx: number): boolean {
    return this.call('getVqReady', idx) as boolean;
  }
  /** Restores a queue's ring position. */
  setVqState(idx: number, state: VqState): void {
    this.call('setVqState', idx, state);
  }
  /** The queue's ring position. */
  getVqState(idx: number): VqState {
    return this.call('getVqState', idx) as VqState;
  }
  /** Largest queue size (cached). */
  getVqNumMax(): number {
    return this.o.cache.vqNumMax;
  }
  /** Smallest queue size (cached). */
  getVqNumMin(): number {
    return this.o.cache.vqNumMin;
  }
  /** The queue's group. */
  getVqGroup(idx: number): number {
    return this.call('getVqGroup', idx) as number;
  }
  /** The queue's kick doorbell (8 bytes: count, waker; ring it as Doorbell.ring does). */
  getVqNotification(idx: number): VqNotification {
    return { addr: this.kicks[this.vqIndex(idx)]!.handle.addr, size: 8 };
  }
  /** Vendor counters of a queue. */
  getVendorVqStats(idx: number): VqVendorStats {
    return this.call('getVendorVqStats', idx) as VqVendorStats;
  }

  // Device ops
  /** Device features (cached). */
  getDeviceFeatures(): bigint {
    return this.o.cache.deviceFeatures;
  }
  /** Sets the driver's features. */
  setDriverFeatures(features: bigint): void {
    this.call('setDriverFeatures', features);
  }
  /** The driver's features. */
  getDriverFeatures(): bigint {
    return this.call('getDriverFeatures') as bigint;
  }
  /** Device status; a dead device reports its last status with DEVICE_NEEDS_RESET. */
  getStatus(): number {
    if (this.dead) return this.lastStatus | VIRTIO_CONFIG_S_NEEDS_RESET;
    return (this.lastStatus = this.call('getStatus') as number);
  }
  /** Writes the status. */
  setStatus(status: number): void {
    this.call('setStatus', status);
  }
  /** Resets the device; on a dead device, does nothing. */
  reset(): void {
    if (this.dead) return;
    this.call('reset');
    this.lastStatus = 0;
  }
  /** Suspends the device. */
  suspend(): void {
    this.call('suspend');
  }
  /** Resumes the device. */
  resume(): void {
    this.call('resume');
  }
  /** Bytes of config space (cached). */
  getConfigSize(): number {
    return this.o.cache.configSize;
  }
  /** Reads config space. */
  getConfig(offset: number, len: number): Uint8Array {
    return this.call('getConfig', offset, len) as Uint8Array;
  }
  /** Writes config space. */
  setConfig(offset: number, data: Uint8Array): void {
    this.call('setConfig', offset, data);
  }
  /** Config generation. */
  getGeneration(): number {
    return this.call('getGeneration') as number;
  }
  /** Sets the config callback; it runs when the device rings the config doorbell (or dies). */
  setConfigCb(cb: (() => void) | null): void {
    this.configCb = cb;
    if (!this.dead) this.call('setConfigCb', cb !== null);
  }
  /** Virtio device id (cached). */
  getDeviceId(): number {
    return this.o.cache.deviceId;
  }
  /** Vendor id (cached). */
  getVendorId(): number {
    return this.o.cache.vendorId;
  }
  /** Queue alignment (cached). */
  getVqAlign(): number {
    return this.o.cache.vqAlign;
  }

  // DMA ops
  /** Replaces an address space's map. */
  setMap(asid: number, entries: readonly IotlbEntry[]): void {
    this.call('setMap', asid, entries);
  }
  /** Adds a mapping. */
  dmaMap(asid: number, entry: IotlbEntry): void {
    this.call('dmaMap', asid, entry);
  }
  /** Removes mappings. */
  dmaUnmap(asid: number, iova: number | bigint, size: number): void {
    this.call('dmaUnmap', asid, iova, size);
  }
  /** Binds a group to an address space. */
  setGroupAsid(group: number, asid: number): void {
    this.call('setGroupAsid', group, asid);
  }

  // Migration between workers (src/migration/worker-migrate.ts): channel requests, ordered
  // after every synchronous op this thread made (those were answered before the call returned).
  /** The device worker's bus this device was opened through. */
  get remoteBus(): RemoteVdpaBus {
    return this.remote;
  }
  private live(): void {
    if (this.dead) throw new VirtioError(Code.Cancelled, `${this.name}: ${this.dead.rawMessage}`, { cause: this.dead });
  }
  /**
   * The vdpa suspend op a migrating VMM uses: the device stops taking requests, finishes those
   * in flight (bounded by its suspendTimeoutMs, past which it sets NEEDS_RESET and this
   * rejects) and suspends. With `record`, blk requests stay in flight and move in the state
   * ({@link SuspendOptions}).
   */
  async suspendDrained(opts: SuspendOptions = {}): Promise<void> {
    this.live();
    await this.remote.request('migSuspend', this.name, opts?.record === true);
  }
  /**
   * Saves the suspended device's state in the binary encoding (encodeState), with where its disk
   * lives (blk: RAM disk place or backend storage; net: null).
   */
  async saveState(opts: { delta?: boolean } = {}): Promise<MigSaved> {
    this.live();
    return (await this.remote.request('migSave', this.name, opts.delta === true)) as MigSaved;
  }
  /**
   * suspendDrained() then saveState() in one request; `suspendMs` / `saveMs` are the worker's
   * clock. If the save fails the worker resumes the device (it runs on) and this rejects.
   * With `delta`, the state is a delta over the early state saved by {@link saveEarlyState}
   * when the control state has not moved since (`delta: true` in the answer). With `record`,
   * blk requests in flight move in the state instead of being waited for ({@link SuspendOptions}).
   */
  async suspendAndSave(opts: { delta?: boolean; record?: boolean } = {}): Promise<MigSaved> {
    this.live();
    return (await this.remote.request('migSuspendSave', this.name, opts.delta === true, opts.record === true)) as MigSaved;
  }
  /**
   * Migration pre-copy: the running device's early state (control state, no ring positions;
   * saveEarlyState), binary-encoded. The worker keeps its mark, so that a later save with
   * `delta` sends only what changes at the stop.
   */
  async saveEarlyState(): Promise<Uint8Array> {
    this.live();
    return (await this.remote.request('migEarlySave', this.name)) as Uint8Array;
  }
  /** Loads an early state into this fresh device (loadEarlyState); a newer one replaces one it holds. */
  async loadEarlyState(state: Uint8Array): Promise<void> {
    this.live();
    await this.remote.request('migEarlyLoad', this.name, state);
  }
  /**
   * Inside a migration's downtime, through this device's mailbox (a synchronous call the worker
   * answers from its serving loop, no event-loop turn on either side): suspend and save the
   * delta over the early state. Answers `wouldBlock` (nothing done) for a blk device with
   * requests out at its backend that it must finish — use {@link suspendAndSave}, which waits
   * for them; with `record` reads need not be finished, they move in the delta — and `full`
   * (suspended) when the control state moved since the early save: fetch the full state with
   * {@link saveState}.
   */
  suspendAndSaveSync(opts: { record?: boolean } = {}): MigSavedSync {
    return this.call('migSuspendSaveSync', opts?.record === true) as MigSavedSync;
  }
  /**
   * {@link loadState} through the mailbox, for a delta (small): no event-loop turn. With
   * `resume`, the worker resumes the device right after it answers (before it serves anything
   * else), so this thread runs on while the device starts; {@link migStarted} tells when it did.
   */
  loadStateSync(state: Uint8Array, opts: { resume?: boolean } = {}): MigLoaded {
    return this.call('migLoadSync', state, opts.resume === true) as MigLoaded;
  }
  /**
   * After {@link loadStateSync} with `resume`: how the resume went. The worker answers that
   * call once the state is loaded and resumes the device right after (the calling thread runs
   * on meanwhile); this says when the resume ended and what it took. null if there is none to
   * tell (asked twice, or no such load).
   */
  async migStarted(): Promise<MigStarted | null> {
    this.live();
    return (await this.remote.request('migStarted', this.name)) as MigStarted | null;
  }
  /**
   * Loads an encoded state into this fresh device (loadState: validated first, nothing changes
   * on error); it is left suspended, resume() runs it. Resolves to where its disk lives.
   */
  async loadState(state: Uint8Array): Promise<MigLoaded> {
    this.live();
    return (await this.remote.request('migLoad', this.name, state)) as MigLoaded;
  }
  /** blk: resolves once the device's backend writes (flushes, discards, write-zeroes) have all settled (VdpaSimBlk.writesIdle); net: at once. */
  async writesIdle(): Promise<void> {
    this.live();
    await this.remote.request('migWritesIdle', this.name);
  }
  /** blk: completes the writes a migration re-submitted here (VdpaSimBlk.releaseFence; `id` from the load's answer). */
  async releaseFence(id?: number): Promise<void> {
    this.live();
    await this.remote.request('migReleaseFence', this.name, id);
  }
  /** blk: where the disk lives (RAM disk place, or the backend's storage identity); null for net. */
  async storage(): Promise<MigStorage | null> {
    this.live();
    return (await this.remote.request('migStorage', this.name)) as MigStorage | null;
  }
  /**
   * Runs each used-buffer callback set here once, in a microtask, as if every queue's call
   * doorbell had rung: a spurious interrupt, after which a driver finds whatever the used ring
   * holds. A migration ends with it, because a call the source rang just before it stopped may
   * reach this thread only after the driver's callbacks left the source — and the destination,
   * with nothing new to complete, would never ring again.
   */
  callAll(): void {
    if (this.dead) return;
    queueMicrotask(() => {
      if (this.dead) return;
      for (const cb of this.cbs) {
        try {
          cb?.();
        } catch {
          /* the driver's own fault, as for a real call */
        }
      }
    });
  }
  /** net: raises VIRTIO_NET_S_ANNOUNCE (with GUEST_ANNOUNCE negotiated); resolves to whether it did. */
  async announce(): Promise<boolean> {
    this.live();
    return (await this.remote.request('migAnnounce', this.name)) as boolean;
  }

  /**
   * Releases the device (the local bus calls it after devDel/removeDevice): the worker resets
   * it and frees its doorbells; this handle is dead afterwards.
   */
  destroy(): void {
    if (this.dead) return;
    this.markDead(new VirtioError(Code.NotFound, `device ${this.name} was released`));
    this.remote.forget(this);
  }
}

/**
 * A vhost-vdpa node opened in a device worker, driven over the channel: the byte-level face of
 * VhostVdpaFile (ioctl with uapi-laid-out argument structs, IOTLB messages as write()), each an
 * ordered request. Failures are VhostErrors with Linux's errno, rebuilt from the -errno the
 * worker answers. Kicks and calls never pass here: they are the doorbells SET_VRING_KICK/CALL name.
 */
export class RemoteVhostFile {
  /** Node name. */
  readonly node: string;
  private readonly remote: RemoteVdpaBus;
  private readonly fid: number;
  private closed = false;

  /** @internal made by {@link RemoteVdpaBus.openVhost}. */
  constructor(remote: RemoteVdpaBus, node: string, fid: number) {
    this.remote = remote;
    this.node = node;
    this.fid = fid;
  }

  /** ioctl() as the syscall answers: `ret` 0 or -errno, `out` the struct written back (or null). */
  async ioctlRaw(request: number, arg: Uint8Array = new Uint8Array(0)): Promise<IoctlResult> {
    if (this.closed) return { ret: -9, out: null }; // EBADF
    return (await this.remote.request('vhostIoctl', this.fid, request >>> 0, arg)) as IoctlResult;
  }

  /** One ioctl: resolves to the struct written back (reads) or 0; rejects with a VhostError. */
  async ioctl(request: number, arg: Uint8Array = new Uint8Array(0)): Promise<Uint8Array | number> {
    const r = await this.ioctlRaw(request, arg);
    if (r.ret < 0) throw errnoError(-r.ret, `ioctl 0x${(request >>> 0).toString(16)} on ${this.node}`);
    return r.out ?? 0;
  }

  /** write() of one IOTLB message (vhost_msg / vhost_msg_v2): the bytes consumed or -errno. */
  async writeRaw(msg: Uint8Array): Promise<number> {
    if (this.closed) return -9;
    return (await this.remote.request('vhostWrite', this.fid, msg)) as number;
  }

  /** Writes one IOTLB message; rejects with a VhostError. */
  async writeMsg(msg: Uint8Array): Promise<number> {
    const n = await this.writeRaw(msg);
    if (n < 0) throw errnoError(-n, `IOTLB message on ${this.node}`);
    return n;
  }

  /** Closes the file: the worker resets the device and drops its maps and doorbells. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.remote.request('vhostClose', this.fid);
  }
}

/**
 * A vhost-vdpa node opened in a device worker with {@link RemoteVdpaBus.openVhostSync}: the
 * byte-level face of {@link RemoteVhostFile} made synchronous. Each ioctl and IOTLB message
 * crosses as the uapi's bytes through a shared-memory mailbox (the calling thread blocks in
 * Atomics.wait until the answer), and the worker serves it with the code that serves the
 * channel's requests; the typed methods are {@link VhostTypedFile}'s, so they are
 * {@link VhostVdpaFile}'s, with the same errno. Errors:
 * - the node's: VhostError with Linux's errno, rebuilt from the -errno the worker answers (a
 *   closed file: EBADF, as an in-thread one);
 * - the worker's: VirtioError(Cancelled) once it exited, its channel closed or it stopped serving
 *   the file, or when a call got no answer in the bus's `syncTimeoutMs` (the file is dead from
 *   then on: every later call throws Cancelled at once);
 * - a thread that may not block (a browser main thread): VirtioError(FailedPrecondition).
 * Kicks and calls never pass here: they are the doorbells SET_VRING_KICK/CALL name.
 */
export class RemoteVhostSyncFile extends VhostTypedFile {
  /** Node name. */
  readonly node: string;
  private readonly remote: RemoteVdpaBus;
  private readonly fid: number;
  private readonly mbox: MailboxClient;
  private closed = false;
  private dead: VirtioError | null = null;

  /** @internal made by {@link RemoteVdpaBus.openVhostSync}. */
  constructor(remote: RemoteVdpaBus, node: string, fid: number, mbox: MailboxClient) {
    super();
    this.remote = remote;
    this.node = node;
    this.fid = fid;
    this.mbox = mbox;
  }

  /** ioctl() as the syscall answers: `ret` 0 or -errno, `out` the struct written back (or null). Throws only the worker's errors. */
  ioctlRaw(request: number, arg: Uint8Array = new Uint8Array(0)): IoctlResult {
    if (this.closed) return { ret: -ERRNO.EBADF, out: null };
    if (!(arg instanceof Uint8Array)) return { ret: -ERRNO.EFAULT, out: null };
    return this.call('ioctl', request >>> 0, arg) as IoctlResult;
  }

  /** One ioctl: returns the struct written back (reads) or 0; throws VhostError (see the class). */
  ioctl(request: number, arg: Uint8Array = new Uint8Array(0)): Uint8Array | number {
    const r = this.ioctlRaw(request, arg);
    if (r.ret < 0) throw errnoError(-r.ret, `ioctl 0x${(request >>> 0).toString(16)} on ${this.node}`);
    return r.out ?? 0;
  }

  /** write() of one IOTLB message (vhost_msg / vhost_msg_v2): the bytes consumed or -errno. Throws only the worker's errors. */
  writeRaw(msg: Uint8Array): number {
    if (this.closed) return -ERRNO.EBADF;
    if (!(msg instanceof Uint8Array) || msg.length < 4) return -ERRNO.EINVAL;
    return this.call('write', msg) as number;
  }

  /** Writes one IOTLB message; returns the bytes consumed; throws VhostError (see the class). */
  writeMsg(msg: Uint8Array): number {
    const n = this.writeRaw(msg);
    if (n < 0) throw errnoError(-n, `IOTLB message on ${this.node}`);
    return n;
  }

  /**
   * Closes the file: the worker resets the device and drops its maps and doorbells before this
   * returns, so the node may be opened again at once. Idempotent, never throws: a file whose
   * worker is gone has nothing left to close.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.remote.droppedFile(this);
    if (this.dead) return;
    try {
      this.mbox.call('close', [], this.remote.syncTimeoutMs);
      this.mbox.free(); // the answer was the worker's last write
    } catch (e) {
      if (this.mbox.serverClosed) this.mbox.free();
      else if (e instanceof VirtioError && e.code === Code.FailedPrecondition && !this.remote.channel.closedReason) {
        // This thread cannot block: close over the channel instead (the worker then no longer
        // serves the mailbox, whichever of the two requests it takes first).
        this.remote.request('vhostClose', this.fid).then(() => this.mbox.free(), () => {});
      }
      // No answer in time: the mailbox stays orphaned (a late answer must land in our bytes).
    }
  }

  /** True until close() (a file whose worker is gone stays open until closed, refusing calls with Cancelled). */
  get isOpen(): boolean {
    return !this.closed;
  }

  /** Why calls fail with Cancelled (the worker exited, the channel closed, no answer in time), or null. */
  get deadReason(): VirtioError | null {
    return this.dead;
  }

  /** @internal the worker is gone (or stopped serving this file): every later call throws Cancelled. */
  markDead(e: VirtioError): void {
    if (this.dead) return;
    this.dead = e;
    this.remote.droppedFile(this);
  }

  /** @internal frees the mailbox once the worker writes it no more. */
  freeMailbox(): void {
    this.mbox.free();
  }

  private call(op: string, ...args: unknown[]): unknown {
    return syncCall(this, this.node, this.mbox, this.remote.syncTimeoutMs, op, args);
  }
}

/** What dies with its device worker (a device, a synchronous vhost file): see {@link syncCall}. */
interface Mortal {
  readonly deadReason: VirtioError | null;
  markDead(e: VirtioError): void;
}

/**
 * One synchronous call through `mbox`. A dead `who` refuses at once with Cancelled; a call that
 * fails with Cancelled (the worker stopped serving the mailbox, or did not answer in `timeoutMs`)
 * kills it for good.
 */
function syncCall(who: Mortal, name: string, mbox: MailboxClient, timeoutMs: number, op: string, args: unknown[]): unknown {
  const dead = who.deadReason;
  if (dead) throw new VirtioError(Code.Cancelled, `${name}: ${dead.rawMessage}`, { cause: dead });
  try {
    return mbox.call(op, args, timeoutMs);
  } catch (e) {
    if (e instanceof VirtioError && e.code === Code.Cancelled && !who.deadReason) {
      who.markDead(e);
      if (mbox.serverClosed) mbox.free(); // the worker's last write was "closed"
    }
    throw e;
  }
}

function errnoError(errno: number, what: string): VhostError {
  const name = errnoName(errno);
  return new VhostError((/^E[A-Z0-9]+$/.test(name) && !/^E\d+$/.test(name) ? name : 'EIO') as ErrnoName, `${what} failed with errno ${errno} (${name})`);
}
