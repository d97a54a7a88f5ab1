// A minimal virtio driver for control-plane tests: brings a vDPA device up through the
// VIRTIO 1.3 §3.1.1 initialization sequence over the vdpa_config_ops, with one DriverQueue
// per virtqueue, and a few helpers for virtio-net frames and virtio-blk requests.
//
//   1. reset (write 0, read back 0)        5. set FEATURES_OK
//   2. set ACKNOWLEDGE                     6. re-read status: FEATURES_OK must still be set
//   3. set DRIVER                          7. device-specific setup: virtqueues
//   4. read device features, write subset  8. set DRIVER_OK

import assert from 'node:assert/strict';
import {
  DriverQueue, Platform, features,
  VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED,
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER_OK,
  type VdpaConfigOps,
} from '../../src/index.ts';
import { makePlatform } from './builds.ts';

export const S_ACK = VIRTIO_CONFIG_S_ACKNOWLEDGE;
export const S_DRIVER = VIRTIO_CONFIG_S_DRIVER;
export const S_FEATURES_OK = VIRTIO_CONFIG_S_FEATURES_OK;
export const S_DRIVER_OK = VIRTIO_CONFIG_S_DRIVER_OK;

/**
 * The virtio-net features these tests negotiate: the data-plane ones (no control queue), so
 * queue 0 is rx0 and queue 1 is tx0 (§5.1.2).
 */
export const NET_SPLIT: bigint = features(
  VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER,
);
/** {@link NET_SPLIT} with VIRTIO_F_RING_PACKED. */
export const NET_PACKED: bigint = NET_SPLIT | (1n << BigInt(VIRTIO_F_RING_PACKED));

/** A platform big enough for a couple of devices with their staging areas and RAM disks. */
export function testPlatform(): Platform {
  return makePlatform('release', { ramSize: 4 << 20, privateSize: 4 << 20 });
}

/** Options of {@link virtioInit}. */
export interface InitOptions {
  /** Features the driver wants; it writes (wanted & offered). */
  want: bigint;
  /** Virtqueues to set up: indices 0..n-1. @default all of the device's (dev.nvqs) */
  nvqs?: number;
  /** Queue size. @default 64 */
  size?: number;
  /** IOVA of memory offset 0 for rings the DriverQueues lay out. @default 0 */
  dmaBase?: number;
  /** Reuse these driver queues (already laid out) instead of making new ones. */
  queues?: DriverQueue[];
  /** Called after FEATURES_OK was accepted, before any queue is set up (maps go here). */
  afterFeatures?: () => void;
  /** Called for each queue after set_vq_num / set_vq_address, before set_vq_ready. */
  beforeReady?: (idx: number, queue: DriverQueue) => void;
  /** Do not install used-buffer callbacks. */
  noCallbacks?: boolean;
  /** Called after every queue is ready, before DRIVER_OK (set_vq_state goes here). */
  beforeDriverOk?: (queues: DriverQueue[]) => void;
  /** Do not write DRIVER_OK. */
  noDriverOk?: boolean;
}

/** What {@link virtioInit} leaves: the negotiated features, the queues and per-queue call counters. */
export interface Driven {
  features: bigint;
  queues: DriverQueue[];
  /** Used-buffer notifications seen, per queue. */
  calls: number[];
}

/** A device with the ops a test drives plus the count of queues. */
export type Dev = VdpaConfigOps & { readonly nvqs: number };

/** Runs the §3.1.1 sequence on `dev`. Throws (assert) if the device refuses a step. */
export function virtioInit(dev: Dev, platform: Platform, o: InitOptions): Driven {
  // 1. Reset the device.
  dev.setStatus(0);
  assert.equal(dev.getStatus(), 0, 'device status after reset');
  // 2-3.
  dev.setStatus(S_ACK);
  dev.setStatus(S_ACK | S_DRIVER);
  // 4. Read device feature bits, write the subset understood.
  const features = o.want & dev.getDeviceFeatures();
  dev.setDriverFeatures(features);
  // 5-6.
  dev.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
  assert.ok(dev.getStatus() & S_FEATURES_OK, `device rejected features 0x${features.toString(16)}`);
  o.afterFeatures?.();
  // 7. Virtqueues.
  const nvqs = o.nvqs ?? dev.nvqs;
  const size = o.size ?? 64;
  const queues: DriverQueue[] = [];
  const calls: number[] = [];
  for (let i = 0; i < nvqs; i++) {
    assert.ok(size <= dev.getVqNumMax(), 'queue size above the device maximum');
    const q = o.queues?.[i] ?? new DriverQueue(platform, { size, features, dmaBase: o.dmaBase ?? 0 });
    queues.push(q);
    calls.push(0);
    dev.setVqNum(i, q.size);
    const a = q.addresses;
    dev.setVqAddress(i, a.descArea, a.driverArea, a.deviceArea);
    if (!o.noCallbacks) {
      dev.setVqCb(i, () => {
        calls[i]!++;
      });
    }
    o.beforeReady?.(i, q);
    dev.setVqReady(i, true);
    assert.equal(dev.getVqReady(i), true);
  }
  o.beforeDriverOk?.(queues);
  // 8.
  if (!o.noDriverOk) {
    dev.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    assert.equal(dev.getStatus() & 0xff, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  }
  return { features, queues, calls };
}

/** Bytes of virtio_net_hdr_v1. */
export const NET_HDR = 12;

/** A deterministic frame: a 12-byte zero header then `len` bytes derived from `seed`. */
export function frame(seed: number, len: number): Uint8Array {
  const f = new Uint8Array(NET_HDR + len);
  // virtio_net_hdr_v1 with no offloads and num_buffers = 1: what the device writes on rx
  // (§5.1.6.4: 1 without MRG_RXBUF); the device ignores num_buffers on tx.
  f[10] = 1;
  let s = (seed * 2654435761 + 12345) >>> 0 || 1;
  for (let i = NET_HDR; i < f.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    f[i] = s & 0xff;
  }
  return f;
}

/** A fixed pool of equal buffers in RAM, addressed by slot. */
export class BufPool {
  readonly base: number;
  constructor(readonly p: Platform, readonly count: number, readonly bufSize: number, readonly dmaBase = 0) {
    this.base = p.allocBuffer(count * bufSize, 4096);
    p.u8.fill(0, this.base, this.base + count * bufSize);
  }
  /** Memory offset of slot i. */
  off(i: number): number {
    return this.base + (i % this.count) * this.bufSize;
  }
  /** IOVA of slot i (what a descriptor holds). */
  iova(i: number): number {
    return this.off(i) + this.dmaBase;
  }
  /** Bytes of the whole pool. */
  get bytes(): number {
    return this.count * this.bufSize;
  }
}

/** When a NetDriver kicks: as the ring says (kick_prepare), always, or never. */
export type KickMode = 'auto' | 'always' | 'never';

/** A received frame. */
export interface RxFrame {
  token: number;
  len: number;
  data: Uint8Array;
}

/**
 * The virtio-net side of a test driver over queues rx0 (index 0) and tx0 (index 1): posts
 * receive buffers, sends frames from a buffer pool, kicks the device, reclaims.
 * Tokens are pool slots (a pool holds more buffers than a queue, so slots in flight never repeat).
 */
export class NetDriver {
  readonly rxPool: BufPool;
  readonly txPool: BufPool;
  private rxTok = 0;
  private txTok = 0;

  constructor(
    readonly p: Platform, public dev: Dev, readonly rx: DriverQueue, readonly tx: DriverQueue,
    o: { bufSize?: number; dmaBase?: number; rxPool?: BufPool; txPool?: BufPool } = {},
  ) {
    const bufSize = o.bufSize ?? 2048;
    this.rxPool = o.rxPool ?? new BufPool(p, 2 * Math.max(rx.size, 64), bufSize, o.dmaBase ?? 0);
    this.txPool = o.txPool ?? new BufPool(p, 2 * Math.max(tx.size, 64), bufSize, o.dmaBase ?? 0);
  }

  /** Posts n device-writable rx buffers; returns their tokens. */
  postRx(n: number, kick: KickMode = 'auto'): number[] {
    const toks: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = this.rxTok++ % this.rxPool.count;
      this.rx.stageOne(t, this.rxPool.iova(t), this.rxPool.bufSize, true);
      toks.push(t);
    }
    assert.equal(this.rx.submit(), n, 'rx ring has room');
    this.kick(0, this.rx, kick);
    return toks;
  }

  /** Sends frames (each one buffer, header included); returns their tokens. */
  send(frames: readonly Uint8Array[], kick: KickMode = 'auto'): number[] {
    const toks: number[] = [];
    for (const f of frames) {
      const t = this.txTok++ % this.txPool.count;
      assert.ok(f.length <= this.txPool.bufSize);
      this.p.write(this.txPool.off(t), f);
      this.tx.stageOne(t, this.txPool.iova(t), f.length);
      toks.push(t);
    }
    assert.equal(this.tx.submit(), frames.length, 'tx ring has room');
    this.kick(1, this.tx, kick);
    return toks;
  }

  /** Reclaims used rx buffers with the bytes the device wrote. */
  reclaimRx(): RxFrame[] {
    return reclaimAll(this.rx).map(({ token, len }) => ({ token, len, data: this.p.read(this.rxPool.off(token), len) }));
  }

  /** Reclaims used tx buffers; returns their tokens. */
  reclaimTx(): number[] {
    return reclaimAll(this.tx).map((u) => u.token);
  }

  private kick(idx: number, q: DriverQueue, mode: KickMode): void {
    const want = q.kickPrepare();
    if (mode === 'always' || (mode === 'auto' && want)) this.dev.kickVq(idx);
  }
}

/**
 * Reclaims every used buffer and re-arms the used-buffer notification, as a NAPI poll ends
 * (virtqueue_enable_cb: with EVENT_IDX this writes used_event; if buffers raced in, poll again).
 */
export function reclaimAll(q: DriverQueue): { token: number; len: number }[] {
  const out = q.reclaim();
  for (let i = 0; i < 4 && !q.enableCb(); i++) out.push(...q.reclaim());
  return out;
}
