// One L2 segment across threads (issue 9 §4: a net device that migrates between device workers
// keeps its segment): a SwitchLink is a full-duplex cable between two L2Switches that live in
// different threads — device workers, the main thread — made of two FrameRings (one per
// direction) and two Doorbells in the shared platform memory. Each end is a SwitchEndpoint on
// its thread's switch: frames the switch forwards to the link port are pushed onto the end's
// outgoing ring (never blocking: a full ring drops and counts, and the switch counts them as
// the port's txDrops), and the end's doorbell wakes the other thread, whose end drains the ring
// into its switch as frames entering on its link port. Switches learn source MACs on link ports
// as on any port, so linked switches form one learning segment: a guest's RARP after a
// migration teaches every switch the MAC's new way.
//
// Topology: a tree. The switches run no spanning tree (IEEE 802.1D forwarding without STP), so
// links must not form a loop — a broadcast would circle it until the rings drop it.
//
//   thread A                     shared memory                      thread B
//   L2Switch ─ port ─ end 0 ──push──► ring a→b ──drain──► end 1 ─ port ─ L2Switch
//                           ◄─drain── ring b→a ◄──push──
//                      rings bell b ─────────────► watched by B's waiter (and back)

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { L2Switch, SwitchEndpoint } from '../devices/switch.ts';
import { Doorbell, DoorbellWaiter, type DoorbellHandle } from './doorbell.ts';
import { FrameRing, type FrameRingHandle, type FrameRingOptions, type FrameRingStats } from './frame-ring.ts';

/** One end of a SwitchLink as plain data (post it to the worker whose switch takes that end). */
export interface SwitchLinkEndHandle {
  /** The ring this end sends on. */
  readonly tx: FrameRingHandle;
  /** The ring this end receives from. */
  readonly rx: FrameRingHandle;
  /** The doorbell this end rings after sending (the other end watches it). */
  readonly txBell: DoorbellHandle;
  /** The doorbell the other end rings (this end watches it). */
  readonly rxBell: DoorbellHandle;
}

/** Options of {@link SwitchLink.create}: the geometry of each direction's ring. */
export type SwitchLinkOptions = FrameRingOptions;

/** Both directions' counters of a link. */
export interface SwitchLinkStats {
  /** End 0 → end 1. */
  forward: FrameRingStats;
  /** End 1 → end 0. */
  backward: FrameRingStats;
}

/**
 * The cable: two frame rings and two doorbells in a platform's private arena. Attach
 * `ends[0]` to a switch in one thread and `ends[1]` to a switch in another
 * ({@link SwitchLinkEnd.attach} here, `RemoteVdpaBus.switchLink` in a device worker).
 */
export class SwitchLink {
  /** The platform whose memory holds the link. */
  readonly platform: Platform;
  /** The two ends. */
  readonly ends: readonly [SwitchLinkEndHandle, SwitchLinkEndHandle];
  private readonly rings: [FrameRing, FrameRing];
  private readonly bells: [Doorbell, Doorbell];
  private freed = false;

  private constructor(platform: Platform, rings: [FrameRing, FrameRing], bells: [Doorbell, Doorbell]) {
    this.platform = platform;
    this.rings = rings;
    this.bells = bells;
    const [ab, ba] = rings;
    const [toB, toA] = bells;
    this.ends = [
      { tx: ab.handle, rx: ba.handle, txBell: toB.handle, rxBell: toA.handle },
      { tx: ba.handle, rx: ab.handle, txBell: toA.handle, rxBell: toB.handle },
    ];
  }

  /** Allocates a link in `platform`'s private arena (throws as the allocator does when it is full). */
  static create(platform: Platform, opts: SwitchLinkOptions = {}): SwitchLink {
    const made: { free(): void }[] = [];
    try {
      const ab = FrameRing.alloc(platform, opts);
      made.push(ab);
      const ba = FrameRing.alloc(platform, opts);
      made.push(ba);
      const toB = Doorbell.alloc(platform);
      made.push(toB);
      const toA = Doorbell.alloc(platform);
      return new SwitchLink(platform, [ab, ba], [toB, toA]);
    } catch (e) {
      for (const m of made) m.free();
      throw e;
    }
  }

  /** Both directions' counters (read from shared memory: valid whichever threads hold the ends). */
  stats(): SwitchLinkStats {
    return { forward: this.rings[0].stats, backward: this.rings[1].stats };
  }

  /** Frees the link's memory. Detach both ends first (their threads would read freed memory). */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    for (const r of this.rings) r.free();
    for (const b of this.bells) b.free();
  }
}

/** Counters of one end. */
export interface SwitchLinkEndStats {
  /** The ring this end sends on. */
  tx: FrameRingStats;
  /** The ring this end receives from. */
  rx: FrameRingStats;
  /** Why this end stopped receiving (the incoming ring was corrupt), or null. */
  broken: string | null;
  /** Batches whose input into the switch threw (an endpoint's fault; the frames count as taken). */
  inputErrors: number;
}

/** Options of {@link SwitchLinkEnd.attach}. */
export interface SwitchLinkEndOptions {
  /**
   * The waiter that watches the incoming doorbell (a device worker's serving loop). Without it
   * the end makes its own and keeps it waiting with Atomics.waitAsync (no thread blocks), until
   * {@link SwitchLinkEnd.close}.
   */
  waiter?: DoorbellWaiter;
  /** Frames handed to the switch per input() call. @default 64 */
  batch?: number;
}

/** An end of a SwitchLink on a switch in this thread: the switch's port toward the other switch. */
export class SwitchLinkEnd implements SwitchEndpoint {
  /** The switch port this end sits on. */
  readonly port: number;
  private readonly sw: L2Switch;
  private readonly tx: FrameRing;
  private readonly rx: FrameRing;
  private readonly txBell: Doorbell;
  private readonly rxBell: Doorbell;
  private readonly waiter: DoorbellWaiter;
  private readonly ownWaiter: boolean;
  private readonly batch: number;
  private closed = false;
  private inputErrors = 0;
  private readonly input = (frames: Uint8Array[]): void => {
    try {
      this.sw.input(this.port, frames);
    } catch {
      this.inputErrors++; // an endpoint's fault must not stop the link (it runs from a waiter)
    }
  };

  private constructor(sw: L2Switch, platform: Platform, h: SwitchLinkEndHandle, opts: SwitchLinkEndOptions) {
    this.sw = sw;
    this.tx = new FrameRing(platform, h.tx);
    this.rx = new FrameRing(platform, h.rx);
    if (h.tx.addr === h.rx.addr) throw new VirtioError(Code.InvalidArgument, 'a link end sends and receives on one ring');
    this.txBell = new Doorbell(platform, h.txBell);
    this.rxBell = new Doorbell(platform, h.rxBell);
    this.batch = opts.batch ?? 64;
    // One producer and one consumer per ring, whichever threads: an end attached twice is refused.
    this.tx.claim('producer');
    try {
      this.rx.claim('consumer');
    } catch (e) {
      this.tx.unclaim('producer');
      throw e;
    }
    this.ownWaiter = !opts.waiter;
    this.waiter = opts.waiter ?? new DoorbellWaiter(platform);
    this.port = sw.connect(this);
    this.waiter.watch(this.rxBell, () => this.poll());
    if (this.ownWaiter) void this.pump();
    // Frames the other end sent before this one was attached.
    if (!this.rx.empty) queueMicrotask(() => this.poll());
  }

  /**
   * Attaches link end `end` to `sw` (a switch in this thread): connects a port and starts
   * taking the frames the other end sends. Throws VirtioError(InvalidArgument) for a handle
   * that is not a link end, AlreadyExists if that end is attached somewhere already.
   */
  static attach(sw: L2Switch, platform: Platform, end: SwitchLinkEndHandle, opts: SwitchLinkEndOptions = {}): SwitchLinkEnd {
    if (typeof end !== 'object' || end === null) throw new VirtioError(Code.InvalidArgument, 'a switch link end handle is an object { tx, rx, txBell, rxBell }');
    return new SwitchLinkEnd(sw, platform, end, opts);
  }

  /**
   * The switch forwards frames to the link: they go onto the outgoing ring (views are copied),
   * and the other end is woken. Never blocks; frames that do not fit are dropped and counted
   * (the ring's dropsFull, and the switch port's txDrops). Returns how many were taken.
   */
  deliver(frames: readonly Uint8Array[]): number {
    if (this.closed || frames.length === 0) return 0;
    const n = this.tx.push(frames);
    if (n > 0) this.txBell.ring();
    return n;
  }

  /** Takes what the other end sent into the switch (as frames entering on this port). Returns how many. */
  poll(): number {
    if (this.closed) return 0;
    return this.rx.drain(this.input, this.batch);
  }

  /** This end's counters. */
  get stats(): SwitchLinkEndStats {
    return { tx: this.tx.stats, rx: this.rx.stats, broken: this.rx.broken, inputErrors: this.inputErrors };
  }

  /** Detaches: the port leaves the switch (with what it learned), the incoming doorbell is no longer watched. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.waiter.isClosed) this.waiter.unwatch(this.rxBell);
    // Closing wakes the pump's pending waitAsync, which then writes nothing (DoorbellWaiter.unpark).
    if (this.ownWaiter) this.waiter.close();
    try {
      this.sw.disconnect(this.port);
    } catch {
      /* already disconnected */
    }
    this.tx.unclaim('producer');
    this.rx.unclaim('consumer');
  }

  /** True after {@link close}. */
  get isClosed(): boolean {
    return this.closed;
  }

  // Keeps the own waiter waiting without blocking the thread (bounded, so close() is noticed).
  private async pump(): Promise<void> {
    while (!this.closed && !this.waiter.isClosed) {
      try {
        await this.waiter.waitAsync(1000);
      } catch {
        break;
      }
    }
    this.waiter.close();
  }
}
