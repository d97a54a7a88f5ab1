// A virtio-net driver (VIRTIO 1.3 §5.1, in the role of Linux drivers/net/virtio_net.c) on a
// device bound through virtio_vdpa: rx buffers posted and refilled inside, frames sent with a
// zeroed virtio_net_hdr_v1, received by callback or async iterator.
//
// Datapath without per-frame allocation: onFrames() hands each rx batch over as views of the
// rx buffers (offsets and lengths in one reused batch object) before the buffers are posted
// again; per-frame copies and `frame` events are made only when someone listens for them.
// sendBatch() checks room once per batch; send(frame, more) queues bursts behind one kick. Tx
// buffers are allocated 32 at a time as sending needs them (an idle device holds none).

import { VirtioError, Code } from '../errors.ts';
import { parseMac } from '../virtio/mac.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import type { DriverQueue } from '../ring/driver-queue.ts';
import type { VirtioBinding, VirtioClassDriver } from './virtio-vdpa.ts';
import {
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER,
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_F_SUSPEND, featureBit, hasFeature,
} from '../virtio/constants.ts';
import {
  VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, VIRTIO_NET_CTRL_VLAN_DEL, VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_OK, VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, type RxMode,
} from '../virtio/net-ctrl.ts';

/** Bytes of struct virtio_net_hdr_v1 (VIRTIO 1.3 §5.1.6). */
const HDR = 12;
/** Ethernet header. */
const ETH = 14;

/** Features this driver understands. */
export const VIRTIO_NET_DRIVER_FEATURES: bigint = [
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER,
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_MQ,
  // Each rx buffer holds a whole frame, so num_buffers is always 1; taking the feature costs nothing.
  VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_F_SUSPEND,
].reduce((f, b) => f | featureBit(b), 0n);

/** How long a control command may take before it fails (a device in another worker). */
const CTRL_TIMEOUT_MS = 2000;

/** Options of {@link VirtioNetDriver}. */
export interface VirtioNetDriverOptions {
  /** Receive buffers kept posted. @default half the queue size */
  rxBuffers?: number;
  /** Transmit buffers. @default half the queue size */
  txBuffers?: number;
  /** Features to accept (masked with what the device offers). @default VIRTIO_NET_DRIVER_FEATURES */
  features?: bigint;
}

/** Driver counters. */
export interface NetDriverStats {
  /** Frames sent. */
  txPackets: number;
  /** Frames received. */
  rxPackets: number;
  /** Frames received shorter than a header (dropped). */
  rxErrors: number;
  /** Frames dropped because nobody consumed them and the backlog was full. */
  rxBacklogDrops: number;
}

/** Frames kept for an async iterator that is not reading (oldest dropped beyond). */
const BACKLOG_MAX = 1024;

/** Tx buffers are allocated this many at a time, when the ones there are all in flight. */
const TX_CHUNK = 32;

/**
 * A batch of received frames, handed to {@link VirtioNetDriver.onFrames} callbacks: frame i is
 * the Ethernet frame (no virtio-net header) at `data[offsets[i], offsets[i] + lengths[i])`, in
 * the rx buffer the device wrote it into. Valid only during the callback: the buffers are posted
 * again when it returns (copy what you keep). One object per driver, reused for every batch.
 */
export interface NetRxBatch {
  /** Frames in the batch. */
  readonly count: number;
  /** The memory the frames are in (the platform's). */
  readonly data: Uint8Array;
  /** Byte offset of frame i in {@link data}. */
  readonly offsets: Uint32Array;
  /** Bytes of frame i. */
  readonly lengths: Uint32Array;
  /** The rx queue (pair index) the batch came from. */
  readonly queue: number;
  /** A view of frame i (allocates the view; the zero-allocation way is data + offsets + lengths). */
  frame(i: number): Uint8Array;
}

class RxBatch implements NetRxBatch {
  count = 0;
  queue = 0;
  /** Re-pointed at the platform's current view before each delivery (the memory may have grown). */
  data: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  /** The rx buffer (token) of each used entry, to post again (driver-internal). */
  readonly slots: Uint32Array;
  constructor(data: Uint8Array, max: number) {
    this.data = data;
    this.offsets = new Uint32Array(max);
    this.lengths = new Uint32Array(max);
    this.slots = new Uint32Array(max);
  }
  frame(i: number): Uint8Array {
    if (!(i >= 0 && i < this.count)) throw new VirtioError(Code.InvalidArgument, `frame ${i} is outside the batch of ${this.count}`);
    return this.data.subarray(this.offsets[i]!, this.offsets[i]! + this.lengths[i]!);
  }
}

/**
 * The virtio-net driver of one device. Events: `frame` (detail: Uint8Array), `link`
 * (detail: boolean), `error` (detail: VirtioError — the device needs a reset; call reset()).
 */
export class VirtioNetDriver extends EventTarget implements VirtioClassDriver {
  readonly driverFeatures: bigint;
  /**
   * No indirect tables: every chain this driver adds is one descriptor (a frame) or, on the
   * control queue, two or three; so no table pool is allocated for its queues.
   */
  readonly indirectMax = 0;
  /** Counters. */
  readonly stats: NetDriverStats = { txPackets: 0, rxPackets: 0, rxErrors: 0, rxBacklogDrops: 0 };
  private readonly dev: VdpaDevice;
  private readonly binding: VirtioBinding;
  private readonly opts: VirtioNetDriverOptions;
  private rxq: DriverQueue[] = [];
  private txq: DriverQueue[] = [];
  private ctrlq: DriverQueue | null = null;
  private bufSize = 0;
  /** Distance between tx buffers: bufSize rounded up to 4 bytes, so headers are aligned words. */
  private txStride = 0;
  private flushScheduled = false;
  /** Per rx queue: memory of its buffers. */
  private rxPools: number[] = [];
  /**
   * Per tx queue: its buffers, allocated TX_CHUNK at a time as sending needs them (an idle
   * queue holds none), slot s at txChunks[q][s / TX_CHUNK] + (s % TX_CHUNK) × bufSize; and a
   * stack of free slots.
   */
  private txChunks: number[][] = [];
  private txMax: number[] = [];
  private txFree: Int32Array[] = [];
  private txNfree: number[] = [];
  /** Batch receivers ({@link onFrames}); the batch they are handed. */
  private batchListeners = new Set<(batch: NetRxBatch) => void>();
  private rxBatch: RxBatch | null = null;
  /** `frame` event listeners added (an upper bound: `once` listeners stay counted). */
  private frameEvents = new Set<unknown>();
  private pairs = 1;
  private scheduled = false;
  private listeners = new Set<(frame: Uint8Array) => void>();
  private waiters: ((r: IteratorResult<Uint8Array>) => void)[] = [];
  private backlog: Uint8Array[] = [];
  private lastLink = true;
  private failed: VirtioError | null = null;
  /** Serializes control commands. */
  private ctrlLock: Promise<void> = Promise.resolve();
  private ctrlToken = 0;
  /** Control buffers the device may still hold (timed-out commands); freed with the queues. */
  private orphans: number[] = [];
  /**
   * The control state the device accepted, replayed after a reset (as Linux's virtnet_restore:
   * rx mode, MAC filter, VLANs, queue pairs), so a reset never silently changes the filter.
   */
  private readonly want: { rx: Partial<RxMode>; table: Uint8Array | null; vlans: Set<number>; mac: Uint8Array | null; pairs: number | null } =
    { rx: {}, table: null, vlans: new Set(), mac: null, pairs: null };
  /** The replay after the last (re)initialization. */
  private restored: Promise<void> = Promise.resolve();

  constructor(dev: VdpaDevice, binding: VirtioBinding, opts: VirtioNetDriverOptions = {}) {
    super();
    this.dev = dev;
    this.binding = binding;
    this.opts = opts;
    this.driverFeatures = opts.features ?? VIRTIO_NET_DRIVER_FEATURES;
  }

  /** Queues (§5.1.2): N rx/tx pairs (N = max_virtqueue_pairs with MQ, else 1) and the control queue. */
  queueCount(dev: VdpaDevice, negotiated: bigint): number {
    const mq = hasFeature(negotiated, VIRTIO_NET_F_MQ);
    const maxPairs = mq ? Math.max(1, le16(dev.getConfig(8, 2))) : 1;
    return 2 * maxPairs + (hasFeature(negotiated, VIRTIO_NET_F_CTRL_VQ) ? 1 : 0);
  }

  /** The MAC address: from config when VIRTIO_NET_F_MAC was negotiated. */
  get mac(): Uint8Array {
    if (!hasFeature(this.binding.features, VIRTIO_NET_F_MAC)) throw new VirtioError(Code.Unsupported, 'VIRTIO_NET_F_MAC was not negotiated');
    return this.dev.getConfig(0, 6);
  }

  /** The MTU: from config with VIRTIO_NET_F_MTU, else 1500. */
  get mtu(): number {
    if (!hasFeature(this.binding.features, VIRTIO_NET_F_MTU)) return 1500;
    return le16(this.dev.getConfig(10, 2));
  }

  /** Link state: config status with VIRTIO_NET_F_STATUS, else always up (§5.1.4.2). */
  get linkUp(): boolean {
    if (!hasFeature(this.binding.features, VIRTIO_NET_F_STATUS)) return true;
    return (this.dev.getConfig(6, 1)[0]! & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** Queue pairs the device has (max_virtqueue_pairs with MQ, else 1). */
  get maxQueuePairs(): number {
    return this.rxq.length;
  }

  /** Queue pairs in use. */
  get queuePairs(): number {
    return this.pairs;
  }

  /** Called by virtio_vdpa after the queues are set up: posts every rx buffer. */
  start(queues: DriverQueue[]): void {
    const f = this.binding.features;
    const ctrl = hasFeature(f, VIRTIO_NET_F_CTRL_VQ);
    const data = ctrl ? queues.slice(0, -1) : queues;
    if (data.length < 2 || data.length % 2) throw new VirtioError(Code.Internal, 'virtio-net needs rx/tx pairs');
    this.rxq = data.filter((_, i) => i % 2 === 0);
    this.txq = data.filter((_, i) => i % 2 === 1);
    this.ctrlq = ctrl ? queues[queues.length - 1]! : null;
    this.pairs = 1;
    this.failed = null;
    const p = this.binding.platform;
    this.bufSize = HDR + ETH + this.mtu + 4; // + room for a VLAN tag
    this.txStride = (this.bufSize + 3) & ~3;
    this.rxPools = [];
    this.txChunks = [];
    this.txMax = [];
    this.txFree = [];
    this.txNfree = [];
    this.rxBatch = new RxBatch(p.u8, Math.max(...this.rxq.map((q) => q.batch)));
    this.rxq.forEach((rx, qi) => {
      const nrx = Math.min(this.opts.rxBuffers ?? Math.max(1, rx.size >> 1), rx.size);
      const pool = p.ram.alloc(nrx * this.bufSize, 64);
      this.rxPools.push(pool);
      for (let i = 0; i < nrx; i++) rx.stageOne(i, pool + i * this.bufSize, this.bufSize, true);
      rx.submit();
      this.dev.setVqCb(2 * qi, () => this.schedule());
    });
    this.txq.forEach((tx, qi) => {
      const ntx = this.opts.txBuffers ?? Math.max(1, tx.size >> 1);
      // Lazily: the first TX_CHUNK buffers come with the first frame sent (see growTx).
      this.txChunks.push([]);
      this.txMax.push(ntx);
      this.txFree.push(new Int32Array(ntx));
      this.txNfree.push(0);
      this.dev.setVqCb(2 * qi + 1, () => this.schedule());
    });
    this.lastLink = this.linkUp;
  }

  /**
   * Device is live: put back the control state set before a reset (rx mode, MAC table, VLANs,
   * MAC address, as Linux's virtnet_restore does), then with MQ turn on the chosen queue pairs
   * (every pair by default, as Linux does up to its CPUs). A failure is an `error` event.
   */
  ready(): void {
    const run = this.replay();
    run.catch((e: unknown) => {
      // Cancelled: a newer reset started its own replay.
      if (!(e instanceof VirtioError && e.code === Code.Cancelled)) this.dispatchEvent(new CustomEvent('error', { detail: e }));
    });
    this.restored = run;
  }

  private async replay(): Promise<void> {
    const w = this.want;
    const f = this.binding.features;
    const rxKeys = Object.keys(w.rx) as (keyof RxMode)[];
    if (rxKeys.length && hasFeature(f, VIRTIO_NET_F_CTRL_RX)) await this.setRxMode(w.rx);
    if (w.table && hasFeature(f, VIRTIO_NET_F_CTRL_RX)) await this.command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, w.table);
    if (hasFeature(f, VIRTIO_NET_F_CTRL_VLAN)) for (const v of [...w.vlans]) await this.vlan(VIRTIO_NET_CTRL_VLAN_ADD, v);
    if (w.mac && hasFeature(f, VIRTIO_NET_F_CTRL_MAC_ADDR)) await this.setMac(w.mac);
    if (this.rxq.length > 1 && hasFeature(f, VIRTIO_NET_F_MQ)) await this.setPairs(Math.min(w.pairs ?? this.rxq.length, this.rxq.length));
  }

  /** Forgets buffers in flight (the device is being reset). */
  stop(): void {
    const p = this.binding.platform;
    for (const m of [...this.rxPools, ...this.txChunks.flat(), ...this.orphans]) p.ram.release(m);
    this.orphans = [];
    this.rxPools = [];
    this.txChunks = [];
    this.txMax = [];
    this.txNfree = [];
    this.rxq = [];
    this.txq = [];
    this.ctrlq = null;
    this.txFree = [];
  }

  /**
   * Sends one Ethernet frame. Returns false if its tx queue has no free buffer (try again later).
   * With `more` (Linux's netdev_xmit_more()), more frames follow at once: this one is queued but
   * published and kicked with the next send() without `more` (or, at the latest, from a
   * microtask), so a burst costs one ring publish and one kick. Without it the frame is handed
   * to the device before send() returns.
   */
  send(frame: Uint8Array, more = false): boolean {
    if (this.failed) throw this.failed;
    if (this.txq.length === 0) throw new VirtioError(Code.FailedPrecondition, 'the driver is not started');
    if (!(frame instanceof Uint8Array) || frame.length < ETH || frame.length > this.bufSize - HDR) {
      throw new VirtioError(Code.InvalidArgument, `frame of ${(frame as Uint8Array | undefined)?.length} bytes is outside ${ETH}..${this.bufSize - HDR}`);
    }
    if (this.pairs !== 1) return this.sendBatch([frame]) === 1;
    // One frame on queue 0, without the batch's bookkeeping (no array, no allocation).
    const tx = this.txq[0]!;
    if (this.txNfree[0] === 0 || tx.numFree <= tx.stagedCount) this.reclaimTx(0);
    if (this.txNfree[0] === 0 && !this.growTx(0)) return false;
    if (tx.numFree <= tx.stagedCount || !tx.canStage(1)) return false;
    const slot = this.txFree[0]![--this.txNfree[0]!]!;
    const at = this.txAddr(0, slot);
    this.fillTx(at, frame);
    tx.stageOne(slot, at, HDR + frame.length);
    this.stats.txPackets++;
    if (!more) {
      this.publishTx(0);
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flushTx);
    }
    return true;
  }

  /** Publishes the frames staged on tx queue qi and kicks if the device wants it. Throws if the ring broke. */
  private publishTx(qi: number): void {
    const tx = this.txq[qi]!;
    const staged = tx.stagedCount;
    if (staged === 0) return;
    let added: number;
    try {
      added = tx.submit();
    } finally {
      // Room was checked when each frame was staged; never leave one staged.
      tx.clearStaged();
    }
    if (added !== staged) throw new VirtioError(Code.Internal, `tx ring ${qi} took ${added} of ${staged}`);
    if (tx.kickPrepare()) this.dev.kickVq(2 * qi + 1);
  }

  /** Publishes what send(frame, true) left staged and kicks (a microtask: never throws). */
  private readonly flushTx = (): void => {
    this.flushScheduled = false;
    if (this.failed) return;
    try {
      for (let qi = 0; qi < this.txq.length; qi++) this.publishTx(qi);
    } catch (e) {
      this.failed = e instanceof VirtioError ? e : new VirtioError(Code.Internal, `${this.dev.name}: sending failed`, { cause: e });
      this.dispatchEvent(new CustomEvent('error', { detail: this.failed }));
    }
  };

  /** Writes a zeroed virtio_net_hdr_v1 (no offloads) and the frame into the tx buffer at `at`. */
  private fillTx(at: number, frame: Uint8Array): void {
    const u8 = this.binding.platform.u8;
    // Buffers are 4-byte aligned (txStride): the header is three u32 stores.
    const w = at >> 2;
    const u32 = this.binding.platform.u32;
    u32[w] = 0;
    u32[w + 1] = 0;
    u32[w + 2] = 0;
    u8.set(frame, at + HDR);
  }

  /** Memory offset of tx buffer `slot` of queue qi. */
  private txAddr(qi: number, slot: number): number {
    return this.txChunks[qi]![(slot / TX_CHUNK) | 0]! + (slot % TX_CHUNK) * this.txStride;
  }

  /**
   * Allocates the next TX_CHUNK buffers of tx queue qi (up to txBuffers): sending grows the
   * pool as it needs it, so an idle queue holds no tx memory. Returns false at the limit.
   * Throws ResourceExhausted if the platform RAM is full.
   */
  private growTx(qi: number): boolean {
    const chunks = this.txChunks[qi]!;
    const first = chunks.length * TX_CHUNK;
    const n = Math.min(TX_CHUNK, this.txMax[qi]! - first);
    if (n <= 0) return false;
    chunks.push(this.binding.platform.ram.alloc(TX_CHUNK * this.txStride, 64));
    const free = this.txFree[qi]!;
    for (let i = n - 1; i >= 0; i--) free[this.txNfree[qi]!++] = first + i;
    return true;
  }

  /**
   * Sends frames, each on the tx queue of its flow (as Linux picks one with skb_tx_hash: the
   * IP addresses and TCP/UDP ports, else the MAC addresses and ethertype), so a flow's frames
   * stay in order across queues and batches. One ring publish and at most one kick per queue.
   * Every frame is checked before anything is queued (a bad one throws InvalidArgument and
   * nothing is sent). Returns how many were queued: always the first n frames, stopping at the
   * first frame whose queue has no free buffer.
   */
  sendBatch(frames: readonly Uint8Array[]): number {
    if (this.failed) throw this.failed;
    if (this.txq.length === 0) throw new VirtioError(Code.FailedPrecondition, 'the driver is not started');
    if (!Array.isArray(frames)) throw new VirtioError(Code.InvalidArgument, 'sendBatch() takes an array of frames');
    const max = this.bufSize - HDR;
    for (const f of frames) {
      if (!(f instanceof Uint8Array) || f.length < ETH || f.length > max) {
        throw new VirtioError(Code.InvalidArgument, `frame of ${(f as Uint8Array | undefined)?.length} bytes is outside ${ETH}..${max}`);
      }
    }
    if (frames.length === 0) return 0;
    const pairs = this.pairs;
    // Reclaim first (it may throw if the device broke a ring), and take tx memory as needed
    // (it may throw ResourceExhausted): from here on nothing throws.
    for (let qi = 0; qi < pairs; qi++) {
      if (this.txNfree[qi]! < frames.length || this.txq[qi]!.numFree < frames.length) this.reclaimTx(qi);
      while (this.txNfree[qi]! < frames.length && this.growTx(qi));
    }
    if (pairs === 1) {
      // One queue: no flow hashing, no per-call bookkeeping.
      const tx = this.txq[0]!;
      // Room for how many: free buffers, ring slots, staging room — checked once per batch.
      let room = Math.min(frames.length, this.txNfree[0]!, tx.numFree - tx.stagedCount, tx.batch - tx.stagedCount);
      while (room > 0 && !tx.canStage(room)) room--;
      const free = this.txFree[0]!;
      let top = this.txNfree[0]!;
      let n = 0;
      // fillTx and txAddr inlined, views and fields read once per batch (this loop runs per frame).
      const p = this.binding.platform;
      const u8 = p.u8;
      const u32 = p.u32;
      const chunks = this.txChunks[0]!;
      const stride = this.txStride;
      for (; n < room; n++) {
        const slot = free[--top]!;
        const at = chunks[slot >>> 5]! + (slot & (TX_CHUNK - 1)) * stride; // TX_CHUNK = 32
        const f = frames[n]!;
        const w = at >> 2; // a zeroed virtio_net_hdr_v1: three u32 stores (buffers are 4-byte aligned)
        u32[w] = 0;
        u32[w + 1] = 0;
        u32[w + 2] = 0;
        u8.set(f, at + HDR);
        tx.stageOne(slot, at, HDR + f.length);
      }
      this.txNfree[0] = top;
      const staged = tx.stagedCount;
      if (staged > 0) {
        const added = tx.submit();
        if (added !== staged) {
          tx.clearStaged();
          throw new VirtioError(Code.Internal, `tx ring 0 took ${added} of ${staged}`);
        }
      }
      this.stats.txPackets += n;
      if (staged > 0 && tx.kickPrepare()) this.dev.kickVq(1);
      return n;
    }
    // Per call (not a field): a kick may run a port callback that sends again, re-entering here.
    const touched = new Uint8Array(this.txq.length);
    let n = 0;
    for (const f of frames) {
      const qi = pairs === 1 ? 0 : txQueueOf(f, pairs);
      touched[qi] = 1;
      const tx = this.txq[qi]!;
      // One descriptor per frame: stop (keeping the sent prefix exact) when the queue is out of
      // buffers or ring slots.
      if (this.txNfree[qi] === 0 || tx.numFree <= tx.stagedCount || !tx.canStage(1)) break;
      const slot = this.txFree[qi]![--this.txNfree[qi]!]!;
      const at = this.txAddr(qi, slot);
      this.fillTx(at, f);
      tx.stageOne(slot, at, HDR + f.length);
      n++;
    }
    // Publish every queue first, then kick: nothing stays staged if a kick fails.
    for (let qi = 0; qi < touched.length; qi++) {
      if (!touched[qi]) continue;
      const tx = this.txq[qi]!;
      const staged = tx.stagedCount;
      if (staged === 0) {
        touched[qi] = 0;
        continue;
      }
      const added = tx.submit();
      if (added !== staged) {
        // Cannot happen (room was checked); never leave a frame staged for the next call.
        for (let q = 0; q < touched.length; q++) this.txq[q]!.clearStaged();
        throw new VirtioError(Code.Internal, `tx ring ${qi} took ${added} of ${staged}`);
      }
    }
    this.stats.txPackets += n;
    for (let qi = 0; qi < touched.length; qi++) {
      if (touched[qi] && this.txq[qi]!.kickPrepare()) this.dev.kickVq(2 * qi + 1);
    }
    return n;
  }

  /** Calls `fn` for every received frame (a copy it may keep); returns an unsubscribe function. */
  onFrame(fn: (frame: Uint8Array) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Calls `fn` with every batch of received frames, as views of the rx buffers (see
   * {@link NetRxBatch}): no copy, no object per frame. The batch is valid during the call only.
   * Frames taken by batch receivers alone are not kept for {@link frames}. Returns an
   * unsubscribe function.
   */
  onFrames(fn: (batch: NetRxBatch) => void): () => void {
    this.batchListeners.add(fn);
    return () => this.batchListeners.delete(fn);
  }

  /** As EventTarget's; `frame` listeners are counted, so frames are copied for events only when someone listens. */
  override addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: AddEventListenerOptions | boolean): void {
    if (type === 'frame' && listener) this.frameEvents.add(listener);
    super.addEventListener(type, listener, options);
  }

  /** As EventTarget's. */
  override removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: EventListenerOptions | boolean): void {
    if (type === 'frame' && listener) this.frameEvents.delete(listener);
    super.removeEventListener(type, listener, options);
  }

  /**
   * Received frames as an async iterator. Frames that arrive while no callback is registered
   * and the iterator is not waiting are kept in order (up to 1024, oldest dropped beyond).
   */
  frames(): AsyncIterableIterator<Uint8Array> {
    const self = this;
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      next(): Promise<IteratorResult<Uint8Array>> {
        const f = self.backlog.shift();
        if (f) return Promise.resolve({ value: f, done: false });
        return new Promise((resolve) => self.waiters.push(resolve));
      },
      return(): Promise<IteratorResult<Uint8Array>> {
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  // ── control commands (§5.1.6.5) ──

  /** Sets RX mode flags (VIRTIO_NET_CTRL_RX); flags left out are not sent. */
  async setRxMode(mode: Partial<RxMode>): Promise<void> {
    const order: (keyof RxMode)[] = ['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'];
    for (let cmd = 0; cmd < order.length; cmd++) {
      const v = mode[order[cmd]!];
      if (v === undefined) continue;
      this.need(cmd >= 2 ? VIRTIO_NET_F_CTRL_RX_EXTRA : VIRTIO_NET_F_CTRL_RX);
      await this.command(VIRTIO_NET_CTRL_RX, cmd, new Uint8Array([v ? 1 : 0]));
      this.want.rx[order[cmd]!] = v;
    }
  }

  /** Replaces the unicast and multicast MAC filter tables (VIRTIO_NET_CTRL_MAC_TABLE_SET). */
  async setMacTable(unicast: readonly (string | Uint8Array)[], multicast: readonly (string | Uint8Array)[]): Promise<void> {
    this.need(VIRTIO_NET_F_CTRL_RX);
    const toBytes = (m: string | Uint8Array): Uint8Array => (typeof m === 'string' ? new Uint8Array(m.split(':').map((x) => parseInt(x, 16))) : m);
    const data = new Uint8Array(8 + 6 * (unicast.length + multicast.length));
    const dv = new DataView(data.buffer);
    let o = 0;
    for (const table of [unicast, multicast]) {
      dv.setUint32(o, table.length, true);
      o += 4;
      for (const m of table) {
        const b = toBytes(m);
        if (b.length !== 6 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new VirtioError(Code.InvalidArgument, `bad MAC address ${String(m)}`);
        data.set(b, o);
        o += 6;
      }
    }
    await this.command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, data);
    this.want.table = data;
  }

  /** Sets the device's MAC address (VIRTIO_NET_CTRL_MAC_ADDR_SET). */
  async setMac(mac: string | Uint8Array): Promise<void> {
    this.need(VIRTIO_NET_F_CTRL_MAC_ADDR);
    const b = parseMac(mac);
    await this.command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, b);
    this.want.mac = b;
  }

  /** Accepts frames tagged with VLAN `id` (VIRTIO_NET_CTRL_VLAN_ADD). */
  async addVlan(id: number): Promise<void> {
    await this.vlan(VIRTIO_NET_CTRL_VLAN_ADD, id);
    this.want.vlans.add(id);
  }

  /** Stops accepting frames tagged with VLAN `id` (VIRTIO_NET_CTRL_VLAN_DEL). */
  async removeVlan(id: number): Promise<void> {
    await this.vlan(VIRTIO_NET_CTRL_VLAN_DEL, id);
    this.want.vlans.delete(id);
  }

  /** Uses `n` queue pairs (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET), 1..maxQueuePairs. */
  async setQueuePairs(n: number): Promise<void> {
    await this.setPairs(n);
    this.want.pairs = n;
  }

  private async setPairs(n: number): Promise<void> {
    this.need(VIRTIO_NET_F_MQ);
    if (!Number.isInteger(n) || n < 1 || n > this.rxq.length) throw new VirtioError(Code.InvalidArgument, `queue pairs ${n} is outside 1..${this.rxq.length}`);
    const d = new Uint8Array(2);
    new DataView(d.buffer).setUint16(0, n, true);
    await this.command(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, d);
    this.pairs = n;
  }

  /**
   * Resets the device and initializes it again (after an `error` event, for example). The
   * control state set through this driver (rx mode, MAC table, VLANs, MAC address, queue
   * pairs) is sent again; the promise settles when it has been (rejects if the device refused).
   */
  reset(): Promise<void> {
    this.binding.reinit();
    const r = this.restored;
    r.catch(() => {}); // also an `error` event: a caller that does not wait leaves nothing unhandled
    return r;
  }

  /** Suspends the device (SUSPEND status bit, VIRTIO 1.4 §3.4): resolves once SUSPEND reads 1. */
  suspend(timeoutMs?: number): Promise<void> {
    return this.binding.suspend(timeoutMs);
  }

  /** Resumes a device suspended by {@link suspend}. */
  resume(timeoutMs?: number): Promise<void> {
    return this.binding.resume(timeoutMs);
  }

  /** Announcements answered (VIRTIO_NET_S_ANNOUNCE → RARP sent + ANNOUNCE_ACK). */
  announcements = 0;
  private announcing = false;

  /**
   * VIRTIO 1.3 §5.1.6.5.4: the device asks the driver to announce itself (after a migration).
   * Sends a RARP broadcast from our MAC, as QEMU's self-announce does (we have no IP for a
   * gratuitous ARP; an L2 switch learns the MAC's new port from either), then acks with
   * VIRTIO_NET_CTRL_ANNOUNCE_ACK, which clears VIRTIO_NET_S_ANNOUNCE. Emits `announce`.
   */
  private announce(): void {
    if (this.announcing) return;
    this.announcing = true;
    const mac = this.mac;
    const f = new Uint8Array(60);
    f.fill(0xff, 0, 6);
    f.set(mac, 6);
    f.set([0x80, 0x35, 0, 1, 0x08, 0x00, 6, 4, 0, 3], 12); // RARP: ethertype, Ethernet/IPv4, 6/4, op 3 (request reverse)
    f.set(mac, 22);
    f.set(mac, 32);
    this.send(f);
    this.command(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, new Uint8Array(0)).then(
      () => {
        this.announcements++;
        this.dispatchEvent(new CustomEvent('announce', { detail: this.announcements }));
      },
      (e: unknown) => this.dispatchEvent(new CustomEvent('error', { detail: e })),
    ).finally(() => { this.announcing = false; });
  }

  /** Config changed: report link changes; answer an announcement request. */
  onConfigChange(): void {
    if (hasFeature(this.binding.features, VIRTIO_NET_F_GUEST_ANNOUNCE) && (this.dev.getConfig(6, 1)[0]! & VIRTIO_NET_S_ANNOUNCE)) {
      // The device's config callback may run inside its datapath: answer from a microtask.
      queueMicrotask(() => { if (!this.failed) this.announce(); });
    }
    const up = this.linkUp;
    if (up !== this.lastLink) {
      this.lastLink = up;
      this.dispatchEvent(new CustomEvent('link', { detail: up }));
    }
  }

  /** The device broke: surface it as an error event. */
  onNeedsReset(): void {
    this.failed = new VirtioError(Code.FailedPrecondition, `${this.dev.name} needs a reset (DEVICE_NEEDS_RESET)`);
    this.dispatchEvent(new CustomEvent('error', { detail: this.failed }));
  }

  private need(bit: number): void {
    if (!hasFeature(this.binding.features, bit)) throw new VirtioError(Code.Unsupported, `feature bit ${bit} was not negotiated`);
  }

  private async vlan(cmd: number, id: number): Promise<void> {
    this.need(VIRTIO_NET_F_CTRL_VLAN);
    if (!Number.isInteger(id) || id < 0 || id > 4094) throw new VirtioError(Code.InvalidArgument, `VLAN id ${id} is outside 0..4094`);
    const d = new Uint8Array(2);
    new DataView(d.buffer).setUint16(0, id, true);
    await this.command(VIRTIO_NET_CTRL_VLAN, cmd, d);
  }

  /**
   * Sends one command on the control queue and waits for its ack, polling as Linux's
   * virtnet_send_command does. Commands run one at a time (Linux holds a lock); each has its
   * own token, so a late answer to an earlier command is never taken for this one. A buffer
   * the device still holds is never freed: after a timeout it is kept until the queue is torn
   * down. Rejects with InvalidArgument on VIRTIO_NET_ERR.
   */
  private command(cls: number, cmd: number, data: Uint8Array): Promise<void> {
    const run = this.ctrlLock.then(() => this.commandNow(cls, cmd, data));
    this.ctrlLock = run.then(() => undefined, () => undefined);
    return run;
  }

  private async commandNow(cls: number, cmd: number, data: Uint8Array): Promise<void> {
    if (this.failed) throw this.failed;
    const q = this.ctrlq;
    if (!q) throw new VirtioError(Code.Unsupported, 'no control queue (VIRTIO_NET_F_CTRL_VQ not negotiated)');
    const p = this.binding.platform;
    const mem = p.ram.alloc(2 + data.length + 1, 16);
    // Until the command is answered, `mem` is either ours (not posted: free it on any error) or
    // the device's (posted: it may still write the ack, so it is freed with the queues).
    let posted = false;
    try {
      p.u8[mem] = cls;
      p.u8[mem + 1] = cmd;
      p.u8.set(data, mem + 2);
      p.u8[mem + 2 + data.length] = 0xff;
      const token = (this.ctrlToken = (this.ctrlToken + 1) >>> 0);
      const out = [{ addr: mem, len: 2 }];
      if (data.length) out.push({ addr: mem + 2, len: data.length });
      q.stage(token, out, [{ addr: mem + 2 + data.length, len: 1 }]);
      if (q.submit() !== 1) {
        q.clearStaged();
        throw new VirtioError(Code.ResourceExhausted, 'the control queue is full');
      }
      posted = true;
      if (q.kickPrepare()) this.dev.kickVq(this.txq.length * 2);
      const deadline = Date.now() + CTRL_TIMEOUT_MS;
      for (;;) {
        if (this.ctrlq !== q) throw new VirtioError(Code.Cancelled, 'the device was reset during the command');
        if (this.failed) throw this.failed;
        const n = q.getUsed(1);
        if (n === 1 && q.usedToken(0) === token) break;
        if (n === 1) continue; // the late answer of an earlier, timed-out command
        if (Date.now() > deadline) throw new VirtioError(Code.Internal, `control command ${cls}/${cmd} got no answer in ${CTRL_TIMEOUT_MS} ms`);
        await new Promise((r) => setTimeout(r, 1));
      }
    } catch (e) {
      // Not posted, or posted on rings a reset has since taken from the device: ours to free.
      // Posted on the live control queue: the device may still write the ack, so it is freed
      // with the queues.
      if (posted && this.ctrlq === q) this.orphans.push(mem);
      else p.ram.release(mem);
      throw e;
    }
    const ack = p.u8[mem + 2 + data.length];
    p.ram.release(mem);
    if (ack !== VIRTIO_NET_OK) throw new VirtioError(Code.InvalidArgument, `${this.dev.name} refused control command ${cls}/${cmd} (VIRTIO_NET_ERR)`);
  }

  /** Interrupts arrive inside kicks: deliver from a microtask, outside the device's loop. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(this.onInterrupt); // a field: no closure allocated per interrupt
  }

  /** The microtask of {@link schedule}: drains rx, reclaims tx. Never throws. */
  private readonly onInterrupt = (): void => {
    this.scheduled = false;
    if (this.failed) return;
    try {
      for (let qi = 0; qi < this.rxq.length; qi++) this.drainRx(qi);
      for (let qi = 0; qi < this.txq.length; qi++) this.reclaimTx(qi);
    } catch (e) {
      // A device that broke a used ring (the queue throws its peer error): nothing may throw
      // from a microtask. The driver stops, as Linux's virtqueue goes broken, and says so.
      this.failed = e instanceof VirtioError ? e : new VirtioError(Code.Internal, `${this.dev.name}: reclaiming used buffers failed`, { cause: e });
      this.dispatchEvent(new CustomEvent('error', { detail: this.failed }));
    }
  };

  private reclaimTx(qi: number): void {
    const tx = this.txq[qi];
    const free = this.txFree[qi];
    if (!tx || !free) return;
    for (;;) {
      const n = tx.getUsed();
      let k = this.txNfree[qi]!;
      // A token is a slot of ours (the ring core checks used ids against what is in flight).
      for (let i = 0; i < n; i++) free[k++] = tx.usedToken(i);
      this.txNfree[qi] = k;
      // Fewer than asked: drained at that moment, so re-enable at once (no empty getUsed);
      // used buffers that raced in mean one more round.
      if (n < tx.batch && tx.enableCb()) break;
    }
  }

  private drainRx(qi: number): void {
    const rx = this.rxq[qi];
    const pool = this.rxPools[qi];
    if (!rx || pool === undefined) return;
    const u8 = this.binding.platform.u8;
    for (;;) {
      if (this.rxq[qi] !== rx) return; // a receiver reset the driver: this ring is gone
      const n = rx.getUsed();
      // Drained: ask for the next interrupt; buffers that raced in mean one more round
      // (virtqueue_enable_cb's contract, as virtnet_poll uses it).
      if (n === 0) {
        if (rx.enableCb()) break;
        continue;
      }
      // Batch receivers see the frames in place, before the buffers go back to the device.
      const b = this.rxBatch!;
      b.data = u8; // an owner's grow of a foreign memory detaches the view made at setup
      let m = 0;
      const slots = b.slots;
      for (let i = 0; i < n; i++) {
        const slot = (slots[i] = rx.usedToken(i));
        const len = rx.usedLen(i);
        if (len < HDR + ETH || len > this.bufSize) {
          this.stats.rxErrors++;
          continue;
        }
        b.offsets[m] = pool + slot * this.bufSize + HDR;
        b.lengths[m] = len - HDR;
        m++;
      }
      this.stats.rxPackets += m;
      b.count = m;
      b.queue = qi;
      // Copies only for whoever wants frames one by one (onFrame, `frame` events, frames()).
      const perFrame = this.listeners.size > 0 || this.frameEvents.size > 0 || this.waiters.length > 0 || this.batchListeners.size === 0;
      const frames: Uint8Array[] | null = perFrame && m > 0 ? [] : null;
      if (frames) for (let i = 0; i < m; i++) frames.push(u8.slice(b.offsets[i]!, b.offsets[i]! + b.lengths[i]!));
      let failure: { e: unknown } | null = null;
      try {
        if (m > 0) for (const fn of this.batchListeners) fn(b);
      } catch (e) {
        failure = { e }; // reported once the buffers are back (see schedule())
      }
      b.count = 0;
      // A receiver that reset the driver (or the device went away): these buffers belonged to
      // rings that are gone.
      if (this.rxq[qi] !== rx) {
        if (failure) throw failure.e;
        return;
      }
      for (let i = 0; i < n; i++) {
        const slot = slots[i]!;
        rx.stageOne(slot, pool + slot * this.bufSize, this.bufSize, true);
      }
      rx.submit();
      if (rx.kickPrepare()) this.dev.kickVq(2 * qi);
      if (failure) throw failure.e;
      if (frames) for (const f of frames) this.deliver(f);
      // Fewer than asked: drained, so ask for the next interrupt now (no empty getUsed first).
      if (n < rx.batch && this.rxq[qi] === rx && rx.enableCb()) break;
    }
  }

  private deliver(f: Uint8Array): void {
    for (const fn of this.listeners) fn(f);
    if (this.frameEvents.size > 0) this.dispatchEvent(new CustomEvent('frame', { detail: f }));
    const w = this.waiters.shift();
    if (w) w({ value: f, done: false });
    else if (this.listeners.size === 0 && this.batchListeners.size === 0) {
      if (this.backlog.length >= BACKLOG_MAX) {
        this.backlog.shift();
        this.stats.rxBacklogDrops++;
      }
      this.backlog.push(f);
    }
  }
}

function le16(b: Uint8Array): number {
  return b[0]! | (b[1]! << 8);
}

/**
 * The tx queue of a frame's flow, as Linux's skb_tx_hash → reciprocal_scale(skb_get_hash()):
 * the flow is the IPv4/IPv6 addresses plus protocol and, for TCP/UDP/SCTP/UDP-Lite
 * (unfragmented), the ports; a frame that is not IP hashes on its MAC addresses and ethertype.
 * One 802.1Q/802.1ad tag is skipped. The hash is FNV-1a (any stable hash keeps flows in order).
 */
function txQueueOf(f: Uint8Array, pairs: number): number {
  return Math.floor((flowHash(f) * pairs) / 4294967296); // exact: < 2^47
}

/** The flow hash of an Ethernet frame (see {@link txQueueOf}). */
function flowHash(f: Uint8Array): number {
  let o = 12;
  let type = (f[o]! << 8) | f[o + 1]!;
  if ((type === 0x8100 || type === 0x88a8) && f.length >= 18) {
    o += 4;
    type = (f[o]! << 8) | f[o + 1]!;
  }
  o += 2;
  let h = 0x811c9dc5;
  const mix = (a: number, b: number): void => {
    for (let i = a; i < b; i++) h = Math.imul(h ^ f[i]!, 0x01000193);
  };
  let l4 = -1;
  let proto = -1;
  if (type === 0x0800 && f.length >= o + 20 && f[o]! >> 4 === 4) {
    // IPv4 (RFC 791): protocol @9, src @12, dst @16; ports only in the first fragment and unfragmented.
    const ihl = (f[o]! & 15) * 4;
    proto = f[o + 9]!;
    mix(o + 12, o + 20);
    const frag = ((f[o + 6]! << 8) | f[o + 7]!) & 0x3fff; // MF bit + fragment offset
    if (frag === 0 && ihl >= 20) l4 = o + ihl;
  } else if (type === 0x86dd && f.length >= o + 40 && f[o]! >> 4 === 6) {
    // IPv6 (RFC 8200): next header @6, src @8, dst @24 (extension headers are not walked).
    proto = f[o + 6]!;
    mix(o + 8, o + 40);
    l4 = o + 40;
  } else {
    mix(0, 14); // not IP: MAC addresses and ethertype
    return h >>> 0;
  }
  h = Math.imul(h ^ proto, 0x01000193);
  if (l4 >= 0 && (proto === 6 || proto === 17 || proto === 132 || proto === 136) && f.length >= l4 + 4) mix(l4, l4 + 4);
  return h >>> 0;
}

