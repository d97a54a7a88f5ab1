// A virtio-net driver (VIRTIO 1.3 §5.1, in the role of Linux drivers/net/virtio_net.c) on a
// device bound through virtio_vdpa: rx buffers posted and refilled inside, frames sent with a
// zeroed virtio_net_hdr_v1, received by callback or async iterator.

import { VirtioError, Code } from '../errors.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import type { DriverQueue } from '../ring/driver-queue.ts';
import type { VirtioBinding, VirtioClassDriver } from './virtio-vdpa.ts';
import {
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER,
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
  featureBit, hasFeature,
} from '../virtio/constants.ts';

/** Bytes of struct virtio_net_hdr_v1 (VIRTIO 1.3 §5.1.6). */
const HDR = 12;
/** Ethernet header. */
const ETH = 14;

/** Features this driver understands. */
export const VIRTIO_NET_DRIVER_FEATURES: bigint = [
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER,
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
].reduce((f, b) => f | featureBit(b), 0n);

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

/**
 * The virtio-net driver of one device. Events: `frame` (detail: Uint8Array), `link`
 * (detail: boolean), `error` (detail: VirtioError — the device needs a reset; call reset()).
 */
export class VirtioNetDriver extends EventTarget implements VirtioClassDriver {
  readonly driverFeatures: bigint;
  /** Counters. */
  readonly stats: NetDriverStats = { txPackets: 0, rxPackets: 0, rxErrors: 0, rxBacklogDrops: 0 };
  private readonly dev: VdpaDevice;
  private readonly binding: VirtioBinding;
  private readonly opts: VirtioNetDriverOptions;
  private rx: DriverQueue | null = null;
  private tx: DriverQueue | null = null;
  private bufSize = 0;
  private rxPool = 0;
  private txPool = 0;
  private txFree: number[] = [];
  private scheduled = false;
  private listeners = new Set<(frame: Uint8Array) => void>();
  private waiters: ((r: IteratorResult<Uint8Array>) => void)[] = [];
  private backlog: Uint8Array[] = [];
  private lastLink = true;
  private failed: VirtioError | null = null;

  constructor(dev: VdpaDevice, binding: VirtioBinding, opts: VirtioNetDriverOptions = {}) {
    super();
    this.dev = dev;
    this.binding = binding;
    this.opts = opts;
    this.driverFeatures = opts.features ?? VIRTIO_NET_DRIVER_FEATURES;
  }

  /** One rx/tx pair (multiqueue needs the control queue). */
  queueCount(): number {
    return 2;
  }

  /** The MAC address: from config when VIRTIO_NET_F_MAC was negotiated. */
  get mac(): Uint8Array {
    if (!hasFeature(this.binding.features, VIRTIO_NET_F_MAC)) throw new VirtioError(Code.Unsupported, 'VIRTIO_NET_F_MAC was not negotiated');
    return this.dev.getConfig(0, 6);
  }

  /** The MTU: from config with VIRTIO_NET_F_MTU, else 1500. */
  get mtu(): number {
    if (!hasFeature(this.binding.features, VIRTIO_NET_F_MTU)) return 1500;
    const b = this.dev.getConfig(10, 2);
    return b[0]! | (b[1]! << 8);
  }

  /** Link state: config status with VIRTIO_NET_F_STATUS, else always up (§5.1.4.2). */
  get linkUp(): boolean {
    if (!hasFeature(this.binding.features, VIRTIO_NET_F_STATUS)) return true;
    return (this.dev.getConfig(6, 1)[0]! & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** Called by virtio_vdpa after the queues are set up: posts every rx buffer. */
  start(queues: DriverQueue[]): void {
    const [rx, tx] = queues;
    if (!rx || !tx) throw new VirtioError(Code.Internal, 'virtio-net needs an rx and a tx queue');
    this.rx = rx;
    this.tx = tx;
    this.failed = null;
    const p = this.binding.platform;
    this.bufSize = HDR + ETH + this.mtu + 4; // + room for a VLAN tag
    const nrx = this.opts.rxBuffers ?? Math.max(1, rx.size >> 1);
    const ntx = this.opts.txBuffers ?? Math.max(1, tx.size >> 1);
    this.rxPool = p.ram.alloc(nrx * this.bufSize, 64);
    this.txPool = p.ram.alloc(ntx * this.bufSize, 64);
    this.txFree = Array.from({ length: ntx }, (_, i) => ntx - 1 - i);
    for (let i = 0; i < Math.min(nrx, rx.size); i++) rx.stageOne(i, this.rxPool + i * this.bufSize, this.bufSize, true);
    rx.submit();
    this.lastLink = this.linkUp;
    this.dev.setVqCb(0, () => this.schedule());
    this.dev.setVqCb(1, () => this.schedule());
  }

  /** Forgets buffers in flight (the device is being reset). */
  stop(): void {
    const p = this.binding.platform;
    if (this.rxPool) p.ram.release(this.rxPool);
    if (this.txPool) p.ram.release(this.txPool);
    this.rxPool = this.txPool = 0;
    this.rx = this.tx = null;
    this.txFree = [];
  }

  /** Sends one Ethernet frame. Returns false if every tx buffer is in flight (try again later). */
  send(frame: Uint8Array): boolean {
    return this.sendBatch([frame]) === 1;
  }

  /** Sends frames with one ring publish and at most one kick. Returns how many were queued. */
  sendBatch(frames: readonly Uint8Array[]): number {
    const tx = this.live();
    this.reclaimTx();
    const p = this.binding.platform;
    const max = this.bufSize - HDR;
    let n = 0;
    for (const f of frames) {
      if (f.length < ETH || f.length > max) throw new VirtioError(Code.InvalidArgument, `frame of ${f.length} bytes is outside ${ETH}..${max}`);
      const slot = this.txFree.pop();
      if (slot === undefined) break;
      const at = this.txPool + slot * this.bufSize;
      p.u8.fill(0, at, at + HDR); // virtio_net_hdr_v1: no offloads
      p.u8.set(f, at + HDR);
      tx.stageOne(slot, at, HDR + f.length);
      n++;
    }
    if (n === 0) return 0;
    const added = tx.submit();
    if (added !== n) throw new VirtioError(Code.Internal, `tx ring took ${added} of ${n}`);
    this.stats.txPackets += n;
    if (tx.kickPrepare()) this.dev.kickVq(1);
    return n;
  }

  /** Calls `fn` for every received frame; returns an unsubscribe function. */
  onFrame(fn: (frame: Uint8Array) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Received frames as an async iterator (frames arriving with no consumer are kept in order). */
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

  /** After an `error` event: reset the device and initialize it again. */
  reset(): void {
    this.binding.reinit();
  }

  /** Config changed: report link changes. */
  onConfigChange(): void {
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

  private live(): DriverQueue {
    if (this.failed) throw this.failed;
    if (!this.tx) throw new VirtioError(Code.FailedPrecondition, 'the driver is not started');
    return this.tx;
  }

  /** Interrupts arrive inside kicks: deliver from a microtask, outside the device's loop. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (this.rx && !this.failed) this.drainRx();
      if (this.tx && !this.failed) this.reclaimTx();
    });
  }

  private reclaimTx(): void {
    const tx = this.tx!;
    for (;;) {
      const n = tx.getUsed();
      for (let i = 0; i < n; i++) this.txFree.push(tx.usedToken(i));
      if (n === 0 && tx.enableCb()) break;
    }
  }

  private drainRx(): void {
    const rx = this.rx!;
    const u8 = this.binding.platform.u8;
    for (;;) {
      const n = rx.getUsed();
      // Drained: ask for the next interrupt; buffers that raced in mean one more round
      // (virtqueue_enable_cb's contract, as virtnet_poll uses it).
      if (n === 0) {
        if (rx.enableCb()) break;
        continue;
      }
      const frames: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        const slot = rx.usedToken(i);
        const len = rx.usedLen(i);
        const at = this.rxPool + slot * this.bufSize;
        if (len < HDR + ETH || len > this.bufSize) this.stats.rxErrors++;
        else frames.push(u8.slice(at + HDR, at + len));
        rx.stageOne(slot, at, this.bufSize, true);
      }
      rx.submit();
      if (rx.kickPrepare()) this.dev.kickVq(0);
      for (const f of frames) this.deliver(f);
    }
  }

  private deliver(f: Uint8Array): void {
    this.stats.rxPackets++;
    for (const fn of this.listeners) fn(f);
    this.dispatchEvent(new CustomEvent('frame', { detail: f }));
    const w = this.waiters.shift();
    if (w) w({ value: f, done: false });
    else if (this.listeners.size === 0) {
      if (this.backlog.length >= BACKLOG_MAX) {
        this.backlog.shift();
        this.stats.rxBacklogDrops++;
      }
      this.backlog.push(f);
    }
  }
}
