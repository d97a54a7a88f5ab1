// A raw virtio-blk driver for device tests: builds request chains by hand in platform RAM on a
// DriverQueue brought up with virtioInit, kicks, and reads used entries — so tests can send
// what our VirtioBlkDriver never would (malformed chains, huge descriptors, remapped buffers).

import {
  DriverQueue, Platform, VdpaSimBlk, VIRTIO_BLK_DRIVER_FEATURES, VIRTIO_F_RING_PACKED, featureBit,
  type BlkBackend,
} from '../../src/index.ts';
import { virtioInit } from './virtio-driver.ts';

/** Split-ring features with every blk feature our driver knows. */
export const BLK_SPLIT: bigint = VIRTIO_BLK_DRIVER_FEATURES & ~featureBit(VIRTIO_F_RING_PACKED);

/** A buffer of a raw request chain: memory offset, length, device-writable. */
export interface RawBuf {
  addr: number;
  len: number;
  w?: boolean;
}

/** Options of {@link rawBlk}. */
export interface RawBlkOptions {
  backend?: BlkBackend;
  /** RAM disk sectors (without a backend). @default 64 */
  capacity?: number;
  readOnly?: boolean;
  /** Queue size. @default 16 */
  size?: number;
  want?: bigint;
  ramSize?: number;
  /** DriverQueue options beyond size/features. */
  queue?: { indirectMax?: number; maxSegs?: number };
}

/** A blk device driven by hand. */
export class RawBlk {
  readonly p: Platform;
  readonly dev: VdpaSimBlk;
  readonly q: DriverQueue;
  private tok = 1;
  /** Used entries seen, by token: the written length. */
  readonly used = new Map<number, number>();

  constructor(o: RawBlkOptions = {}) {
    this.p = Platform.create({ ramSize: o.ramSize ?? 4 << 20, privateSize: 4 << 20 });
    this.dev = new VdpaSimBlk(this.p, { name: 'raw', backend: o.backend, capacity: o.capacity ?? 64, readOnly: o.readOnly });
    const want = (o.want ?? BLK_SPLIT) & this.dev.getDeviceFeatures();
    const size = o.size ?? 16;
    const queues = o.queue ? [new DriverQueue(this.p, { size, features: want, ...o.queue })] : undefined;
    this.q = virtioInit(this.dev, this.p, { want, size, queues }).queues[0]!;
  }

  /** A zeroed RAM buffer. */
  buf(len: number, align = 64): number {
    const a = this.p.allocBuffer(len, align);
    this.p.u8.fill(0, a, a + len);
    return a;
  }

  /** A 16-byte request header { le32 type; le32 reserved; le64 sector } in RAM. */
  hdr(type: number, sector: number | bigint): number {
    const a = this.buf(16);
    this.p.view.setUint32(a, type, true);
    this.p.view.setBigUint64(a + 8, BigInt(sector), true);
    return a;
  }

  /** Adds one chain (readable buffers first) and kicks. Returns its token. */
  send(bufs: RawBuf[], kick = true): number {
    const t = this.tok++;
    this.q.stage(t, bufs.filter((b) => !b.w), bufs.filter((b) => b.w));
    if (this.q.submit() !== 1) throw new Error('ring full');
    if (kick) this.dev.kickVq(0);
    return t;
  }

  /** Reclaims used entries into {@link used}. */
  reap(): Map<number, number> {
    for (;;) {
      const n = this.q.getUsed();
      if (n === 0) break;
      for (let i = 0; i < n; i++) this.used.set(this.q.usedToken(i), this.q.usedLen(i));
    }
    return this.used;
  }
}

/** Lets promise callbacks (backend answers) run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** A promise with its resolve/reject outside. */
export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
