// What device-side and driver-side queues share: the queue state block, the negotiated ring
// features, the broken state, and the counters.

import { VirtioError, Code, codeOfStatus, fromStatus } from '../errors.ts';
import { Q, QF, QSB_SIZE } from './layout.ts';
import type { Platform } from '../platform/platform.ts';
import {
  VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1,
  VIRTQUEUE_MAX_SIZE, featureBit, hasFeature,
} from '../virtio/constants.ts';

/** Ring layout. */
export type Layout = 'split' | 'packed';

/** Ring features to negotiate, as booleans. */
export interface RingFeatureOptions {
  /** VIRTIO_F_RING_PACKED. @default false */
  packed?: boolean;
  /** VIRTIO_F_EVENT_IDX. @default false */
  eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC. @default false */
  indirect?: boolean;
  /** VIRTIO_F_IN_ORDER. @default false */
  inOrder?: boolean;
}

/** The feature mask (with VIRTIO_F_VERSION_1) for a set of ring features. */
export function ringFeatures(o: RingFeatureOptions = {}): bigint {
  let f = featureBit(VIRTIO_F_VERSION_1);
  if (o.packed) f |= featureBit(VIRTIO_F_RING_PACKED);
  if (o.eventIdx) f |= featureBit(VIRTIO_F_EVENT_IDX);
  if (o.indirect) f |= featureBit(VIRTIO_F_INDIRECT_DESC);
  if (o.inOrder) f |= featureBit(VIRTIO_F_IN_ORDER);
  return f;
}

/** Lifecycle of a queue. */
export type QueueState =
  | {
    /** The queue works. */
    state: 'ready';
  }
  | {
    /** A peer error broke the queue: every call refuses until reset. */
    state: 'broken';
    /** The error that broke it. */
    error: VirtioError;
  };

/** Counters kept in the state block. */
export interface QueueStats {
  /** Chains popped (device) or added (driver). */
  chains: number;
  /** Descriptors walked (device) or written (driver). */
  descs: number;
  /** Used elements pushed (device) or reclaimed (driver). */
  used: number;
  /** Notifications decided: calls (device) or kicks (driver). */
  notifies: number;
}

/** Checks a queue size: 1..32768, a power of two for split (VIRTIO 1.3 §2.7, §2.8). */
export function checkQueueSize(size: number, packed: boolean): void {
  if (!Number.isInteger(size) || size < 1 || size > VIRTQUEUE_MAX_SIZE) {
    throw new VirtioError(Code.InvalidArgument, `queue size ${size} must be an integer in 1..${VIRTQUEUE_MAX_SIZE}`);
  }
  if (!packed && (size & (size - 1)) !== 0) {
    throw new VirtioError(Code.InvalidArgument, `split queue size ${size} must be a power of two (VIRTIO 1.3 §2.7)`);
  }
}

/** A queue state block and what both sides do with it. */
export abstract class QueueBase {
  /** The platform whose memory holds the queue. */
  readonly platform: Platform;
  /** Queue size (number of descriptors). */
  readonly size: number;
  /** The negotiated features this queue follows. */
  readonly features: bigint;
  /** Ring layout, from VIRTIO_F_RING_PACKED. */
  readonly layout: Layout;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  readonly eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  readonly indirect: boolean;
  /** VIRTIO_F_IN_ORDER negotiated. */
  readonly inOrder: boolean;
  /** Offset of this queue's state block. */
  readonly qsb: number;
  protected readonly owned: number[] = [];
  /** The platform's ring exports (one field load on the per-batch paths). */
  protected readonly ex: Platform['exports'];
  private brokenError: VirtioError | undefined;
  private dead = false;

  protected constructor(platform: Platform, size: number, features: bigint) {
    this.platform = platform;
    this.ex = platform.exports;
    this.features = features;
    this.layout = hasFeature(features, VIRTIO_F_RING_PACKED) ? 'packed' : 'split';
    checkQueueSize(size, this.layout === 'packed');
    this.size = size;
    this.eventIdx = hasFeature(features, VIRTIO_F_EVENT_IDX);
    this.indirect = hasFeature(features, VIRTIO_F_INDIRECT_DESC);
    this.inOrder = hasFeature(features, VIRTIO_F_IN_ORDER);
    this.qsb = this.allocPriv(QSB_SIZE, 64);
    platform.u8.fill(0, this.qsb, this.qsb + QSB_SIZE);
    this.setWord(Q.SIZE, size);
    this.setWord(
      Q.FLAGS,
      (this.layout === 'packed' ? QF.PACKED : 0) | (this.eventIdx ? QF.EVENT_IDX : 0) |
        (this.indirect ? QF.INDIRECT : 0) | (this.inOrder ? QF.IN_ORDER : 0),
    );
  }

  /** `{ state: 'ready' }`, or `{ state: 'broken', error }` after the peer broke the spec. */
  get state(): QueueState {
    const s = this.platform.i32[(this.qsb + Q.STATUS) >> 2]!;
    if (s === 0) return { state: 'ready' };
    this.brokenError ??= new VirtioError(codeOfStatus(s), `queue broken by the peer: ${codeOfStatus(s)} (status ${s})`);
    return { state: 'broken', error: this.brokenError };
  }

  /** True once the peer broke the spec; only a reset clears it. */
  get broken(): boolean {
    return this.platform.i32[(this.qsb + Q.STATUS) >> 2]! !== 0;
  }

  /** The counters of this queue. */
  get stats(): QueueStats {
    return {
      chains: this.word64(Q.STAT_CHAINS),
      descs: this.word64(Q.STAT_DESCS),
      used: this.word64(Q.STAT_USED),
      notifies: this.word64(Q.STAT_NOTIFY),
    };
  }

  /** Frees the memory this queue allocated. The queue must not be used afterwards. */
  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    // The platform finds each allocation's arena by range (private memory may lie above RAM).
    for (const off of this.owned.splice(0)) this.platform.release(off);
  }

  /** True once destroy() ran: every method then throws `cancelled` and touches nothing. */
  get isDestroyed(): boolean {
    return this.dead;
  }

  /**
   * Throws Cancelled if the queue was destroyed. A device's pass can outlive its queue when user
   * code it calls (a port, a backend, a config callback) resets, disables or deletes the device:
   * the freed state block may already belong to someone else, so nothing may touch it.
   */
  protected live(): void {
    if (this.dead) throw new VirtioError(Code.Cancelled, 'the queue was destroyed (its device was reset, disabled or deleted)');
  }

  protected allocPriv(size: number, align: number): number {
    const off = this.platform.priv.alloc(size, align);
    this.owned.push(off);
    return off;
  }

  protected allocRam(size: number, align: number): number {
    const off = this.platform.ram.alloc(size, align);
    this.owned.push(off);
    return off;
  }

  protected word(off: number): number {
    return this.platform.u32[(this.qsb + off) >> 2]!;
  }

  protected setWord(off: number, v: number): void {
    this.platform.u32[(this.qsb + off) >> 2] = v >>> 0;
  }

  protected word64(off: number): number {
    return this.word(off) + this.word(off + 4) * 2 ** 32;
  }

  protected countNotify(): void {
    const lo = this.word(Q.STAT_NOTIFY) + 1;
    this.setWord(Q.STAT_NOTIFY, lo);
    if (lo > 0xffffffff) this.setWord(Q.STAT_NOTIFY + 4, this.word(Q.STAT_NOTIFY + 4) + 1);
  }

  /** Clears the sticky error (after a reset of the ring state). */
  protected clearBroken(): void {
    this.brokenError = undefined;
  }

  /** Turns a negative status from an export into the thrown error. */
  protected fail(status: number, what: string): never {
    if (status === -2 /* STATUS_BROKEN */) throw this.state.state === 'broken' ? this.state.error : fromStatus(status, what);
    this.brokenError = undefined;
    const st = this.state;
    if (st.state === 'broken') throw st.error;
    throw fromStatus(status, what);
  }
}
