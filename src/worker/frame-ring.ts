// A one-way frame channel between threads: a single-producer single-consumer ring of
// variable-length Ethernet frames in the shared platform memory (the wire of a SwitchLink,
// switch-link.ts, that makes switches in several workers one L2 segment). The producer never
// blocks and never waits for the consumer: a frame that does not fit is dropped and counted, as
// a full NIC queue drops. Wakeups are the link's doorbells, not this ring's business.
//
//   header (192 bytes; each side writes only its own 64-byte line)
//   ┌────────┬──────────────────────────────────────────────────────────────────────────┐
//   │ 0      │ u32 magic 0x4d524656 ("VFRM" little-endian)                               │
//   │ 4      │ u32 capacity: bytes of the data area, a power of two in 256..2^30         │
//   │ 8      │ u32 maxFrame: largest frame accepted, 1..capacity/2 − 8                   │
//   │ 12     │ u32 producer claimed (1) or free (0): one producing side at a time       │
//   │ 16     │ u32 consumer claimed (1) or free (0): one consuming side at a time       │
//   ├────────┼──────────────────────────────────── producer's line ─────────────────────┤
//   │ 64     │ u32 head: bytes ever written to the data area (wrapping)                  │
//   │ 68     │ u32 pushed: frames accepted                                               │
//   │ 72     │ u32 dropsFull: frames dropped because the ring had no room for them       │
//   │ 76     │ u32 dropsOversize: frames refused: empty or longer than maxFrame          │
//   ├────────┼──────────────────────────────────── consumer's line ─────────────────────┤
//   │ 128    │ u32 tail: bytes ever consumed (wrapping)                                  │
//   │ 132    │ u32 popped: frames taken                                                  │
//   ├────────┼──────────────────────────────────────────────────────────────────────────┤
//   │ 192    │ data[capacity]                                                            │
//   └────────┴──────────────────────────────────────────────────────────────────────────┘
//
// Records start at data[head mod capacity], 4-byte aligned, and never wrap:
//
//   │ u32 len │ len bytes of frame │ 0..3 bytes pad │      a frame (len 1..maxFrame)
//   │ u32 0xffffffff │ … to the end of the data area │     WRAP: the next record is at 0
//
// Bytes in use are head − tail (u32 arithmetic). A frame needs 4 + align4(len) bytes, plus the
// rest of the data area when it does not fit before the end (then a WRAP marker goes first).
// maxFrame ≤ capacity/2 − 8 guarantees that an empty ring takes any frame wherever head is.
// Publication: the producer writes records (plain stores), then head with Atomics.store; the
// consumer reads head with Atomics.load (so the records are visible), and stores tail only
// after the frames it handed out are no longer used — the producer never overwrites them.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';

/** Byte offsets of a frame ring's header fields, and its size. */
export const FRAME_RING = {
  /** u32 magic: {@link FRAME_RING_MAGIC}. */
  MAGIC: 0,
  /** u32 bytes of the data area. */
  CAPACITY: 4,
  /** u32 largest frame accepted. */
  MAX_FRAME: 8,
  /** u32 1 while a producer is attached. */
  PRODUCER: 12,
  /** u32 1 while a consumer is attached. */
  CONSUMER: 16,
  /** u32 bytes ever written (producer). */
  HEAD: 64,
  /** u32 frames accepted (producer). */
  PUSHED: 68,
  /** u32 frames dropped for want of room (producer). */
  DROPS_FULL: 72,
  /** u32 frames refused: empty or over maxFrame (producer). */
  DROPS_OVERSIZE: 76,
  /** u32 bytes ever consumed (consumer). */
  TAIL: 128,
  /** u32 frames taken (consumer). */
  POPPED: 132,
  /** Bytes of the header; the data area follows. */
  HEADER: 192,
} as const;

/** The header's magic, "VFRM" read as a little-endian u32. */
export const FRAME_RING_MAGIC = 0x4d524656;
/** A record length that means "the next record is at the start of the data area". */
export const FRAME_RING_WRAP = 0xffffffff;

/** A frame ring as plain data (post it to another worker): its header's offset. */
export interface FrameRingHandle {
  /** Memory offset of the header (64-byte aligned). */
  readonly addr: number;
}

/** Options of {@link FrameRing.alloc}. */
export interface FrameRingOptions {
  /** Bytes of the data area: a power of two, 256..2^30. @default 262144 */
  capacity?: number;
  /** Largest frame accepted (bigger ones are refused and counted). @default min(65553, capacity/2 − 8): any vdpasim_net frame (MTU 65535 + Ethernet and VLAN headers) */
  maxFrame?: number;
}

/** A frame ring's counters (read from the shared header: any thread sees the same numbers). */
export interface FrameRingStats {
  /** Frames accepted by the producer. */
  pushed: number;
  /** Frames taken by the consumer. */
  popped: number;
  /** Frames dropped: the ring was full. */
  dropsFull: number;
  /** Frames refused: empty or longer than maxFrame. */
  dropsOversize: number;
  /** Bytes in use now (records and wrap padding). */
  usedBytes: number;
}

const align4 = (n: number): number => (n + 3) & ~3;

/**
 * One direction of a frame channel: the producer side calls {@link push}, the consumer side
 * {@link drain}; each side is one thread (SPSC). Both sides open the same ring with
 * `new FrameRing(platform, handle)`.
 */
export class FrameRing {
  /** The platform whose memory holds the ring. */
  readonly platform: Platform;
  /** Its handle (post it to another worker). */
  readonly handle: FrameRingHandle;
  /** Bytes of the data area. */
  readonly capacity: number;
  /** Largest frame accepted. */
  readonly maxFrame: number;
  private readonly addr: number;
  private readonly data: number;
  private readonly mask: number;
  private readonly owned: boolean;
  private brokenReason: string | null = null;

  /**
   * Opens the ring at `handle` (made by {@link FrameRing.alloc}, maybe in another thread).
   * Throws VirtioError(InvalidArgument) if no valid ring header is there.
   */
  constructor(platform: Platform, handle: FrameRingHandle, owned = false) {
    const a = handle?.addr;
    const bad = (why: string): never => {
      throw new VirtioError(Code.InvalidArgument, `frame ring at ${String(a)}: ${why}`);
    };
    if (typeof a !== 'number' || !Number.isSafeInteger(a) || a <= 0 || a % 64 !== 0 || a + FRAME_RING.HEADER > platform.u8.length) bad('not a 64-byte aligned offset inside the memory');
    const v = platform.view;
    if (v.getUint32(a + FRAME_RING.MAGIC, true) !== FRAME_RING_MAGIC) bad('no frame ring header (magic)');
    const cap = v.getUint32(a + FRAME_RING.CAPACITY, true);
    const max = v.getUint32(a + FRAME_RING.MAX_FRAME, true);
    if (cap < 256 || cap > 1 << 30 || (cap & (cap - 1)) !== 0) bad(`capacity ${cap} is not a power of two in 256..2^30`);
    if (max < 1 || max > cap / 2 - 8) bad(`maxFrame ${max} is outside 1..${cap / 2 - 8}`);
    if (a + FRAME_RING.HEADER + cap > platform.u8.length) bad('the data area runs past the memory');
    this.platform = platform;
    this.handle = { addr: a };
    this.addr = a;
    this.data = a + FRAME_RING.HEADER;
    this.capacity = cap;
    this.mask = cap - 1;
    this.maxFrame = max;
    this.owned = owned;
  }

  /**
   * Allocates and initialises a ring in `platform`'s private arena (never mapped to a device).
   * Throws VirtioError(InvalidArgument) for a bad geometry, or as the allocator does when the
   * arena is full.
   */
  static alloc(platform: Platform, opts: FrameRingOptions = {}): FrameRing {
    const cap = opts.capacity ?? 262144;
    if (!Number.isInteger(cap) || cap < 256 || cap > 1 << 30 || (cap & (cap - 1)) !== 0) throw new VirtioError(Code.InvalidArgument, `frame ring capacity ${cap} must be a power of two in 256..2^30`);
    const max = opts.maxFrame ?? Math.min(65553, cap / 2 - 8);
    if (!Number.isInteger(max) || max < 1 || max > cap / 2 - 8) throw new VirtioError(Code.InvalidArgument, `frame ring maxFrame ${max} must be in 1..${cap / 2 - 8} (half the capacity less a record header and wrap slack)`);
    const addr = platform.priv.alloc(FRAME_RING.HEADER + cap, 64);
    platform.u8.fill(0, addr, addr + FRAME_RING.HEADER);
    const v = platform.view;
    v.setUint32(addr + FRAME_RING.CAPACITY, cap, true);
    v.setUint32(addr + FRAME_RING.MAX_FRAME, max, true);
    // The magic last: a reader that sees it sees the geometry (the handle is posted after this anyway).
    Atomics.store(platform.u32, (addr + FRAME_RING.MAGIC) >> 2, FRAME_RING_MAGIC);
    return new FrameRing(platform, { addr }, true);
  }

  private load(off: number): number {
    return Atomics.load(this.platform.u32, (this.addr + off) >> 2);
  }

  private store(off: number, v: number): void {
    Atomics.store(this.platform.u32, (this.addr + off) >> 2, v >>> 0);
  }

  /**
   * Producer: appends `frames` in order; each that does not fit is dropped (dropsFull), each
   * empty or longer than maxFrame refused (dropsOversize) — a later, smaller frame may still
   * fit. Never blocks. Returns how many were accepted; they are visible to the consumer when
   * this returns.
   */
  push(frames: readonly Uint8Array[]): number {
    const u8 = this.platform.u8;
    const view = this.platform.view;
    const cap = this.capacity;
    const tail = this.load(FRAME_RING.TAIL);
    let head = this.load(FRAME_RING.HEAD);
    let taken = 0;
    let full = 0;
    let oversize = 0;
    for (const f of frames) {
      const len = f.length;
      if (len === 0 || len > this.maxFrame) {
        oversize++;
        continue;
      }
      const rec = 4 + align4(len);
      const pos = head & this.mask;
      const room = cap - pos; // ≥ 4: records are 4-byte aligned
      const need = rec <= room ? rec : room + rec;
      if (need > cap - ((head - tail) >>> 0)) {
        full++;
        continue;
      }
      let at = pos;
      if (rec > room) {
        view.setUint32(this.data + pos, FRAME_RING_WRAP, true);
        head = (head + room) >>> 0;
        at = 0;
      }
      view.setUint32(this.data + at, len, true);
      u8.set(f, this.data + at + 4);
      head = (head + rec) >>> 0;
      taken++;
    }
    // Records before head: the consumer's Atomics.load of head makes them visible.
    if (taken) {
      this.store(FRAME_RING.HEAD, head);
      this.store(FRAME_RING.PUSHED, this.load(FRAME_RING.PUSHED) + taken);
    }
    if (full) this.store(FRAME_RING.DROPS_FULL, this.load(FRAME_RING.DROPS_FULL) + full);
    if (oversize) this.store(FRAME_RING.DROPS_OVERSIZE, this.load(FRAME_RING.DROPS_OVERSIZE) + oversize);
    return taken;
  }

  /**
   * Consumer: hands the frames present now to `fn` in batches of up to `batch`, as views into
   * the ring valid during the call (copy what you keep), and frees their space after each call.
   * Frames the producer adds meanwhile wait for the next drain. If `fn` throws, its frames
   * count as taken and the error propagates. A record that breaks the layout
   * (the memory was written by something else) makes the ring broken: it drains nothing more.
   * Returns how many frames were handed out.
   */
  drain(fn: (frames: Uint8Array[]) => void, batch = 64): number {
    if (this.brokenReason) return 0;
    const u8 = this.platform.u8;
    const view = this.platform.view;
    const cap = this.capacity;
    const head = this.load(FRAME_RING.HEAD);
    let tail = this.load(FRAME_RING.TAIL);
    let total = 0;
    while (tail !== head) {
      const frames: Uint8Array[] = [];
      while (tail !== head && frames.length < batch) {
        const used = (head - tail) >>> 0;
        const pos = tail & this.mask;
        const room = cap - pos;
        // The producer controls these words: bound each before using it.
        if (used > cap || used < 4) return total + this.broke(`${used} bytes in use`);
        const len = view.getUint32(this.data + pos, true);
        if (len === FRAME_RING_WRAP) {
          if (room > used) return total + this.broke(`a wrap marker at ${pos} with ${used} bytes in use`);
          tail = (tail + room) >>> 0;
          continue;
        }
        const rec = 4 + align4(len);
        if (len === 0 || len > this.maxFrame || rec > room || rec > used) return total + this.broke(`a record of ${len} bytes at ${pos} (${used} bytes in use)`);
        frames.push(u8.subarray(this.data + pos + 4, this.data + pos + 4 + len));
        tail = (tail + rec) >>> 0;
      }
      try {
        if (frames.length) fn(frames);
      } finally {
        // After fn (even one that threw: handed out is consumed, never handed out twice), the
        // producer may reuse the bytes the views showed.
        this.store(FRAME_RING.TAIL, tail);
        if (frames.length) this.store(FRAME_RING.POPPED, this.load(FRAME_RING.POPPED) + frames.length);
      }
      total += frames.length;
    }
    return total;
  }

  /**
   * Claims one side of the ring for this thread (SPSC: one producer, one consumer, whichever
   * threads they are). Throws VirtioError(AlreadyExists) if that side is taken.
   */
  claim(side: 'producer' | 'consumer'): void {
    const i = (this.addr + (side === 'producer' ? FRAME_RING.PRODUCER : FRAME_RING.CONSUMER)) >> 2;
    if (Atomics.compareExchange(this.platform.u32, i, 0, 1) !== 0) throw new VirtioError(Code.AlreadyExists, `the frame ring at ${this.addr} already has a ${side}`);
  }

  /** Gives up a side claimed with {@link claim}. */
  unclaim(side: 'producer' | 'consumer'): void {
    Atomics.store(this.platform.u32, (this.addr + (side === 'producer' ? FRAME_RING.PRODUCER : FRAME_RING.CONSUMER)) >> 2, 0);
  }

  private broke(why: string): number {
    this.brokenReason ??= `frame ring at ${this.addr} is corrupt: ${why}`;
    return 0;
  }

  /** Why the consumer side stopped (a record broke the layout), or null. */
  get broken(): string | null {
    return this.brokenReason;
  }

  /** True if no frame waits for the consumer. */
  get empty(): boolean {
    return this.load(FRAME_RING.HEAD) === this.load(FRAME_RING.TAIL);
  }

  /** The ring's counters. */
  get stats(): FrameRingStats {
    return {
      pushed: this.load(FRAME_RING.PUSHED), popped: this.load(FRAME_RING.POPPED),
      dropsFull: this.load(FRAME_RING.DROPS_FULL), dropsOversize: this.load(FRAME_RING.DROPS_OVERSIZE),
      usedBytes: (this.load(FRAME_RING.HEAD) - this.load(FRAME_RING.TAIL)) >>> 0,
    };
  }

  /** Frees the ring's memory if {@link alloc} made it here (both sides must have stopped using it). */
  free(): void {
    if (!this.owned) return;
    this.store(FRAME_RING.MAGIC, 0);
    this.platform.release(this.addr);
  }
}
