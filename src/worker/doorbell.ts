// Doorbells: what eventfds are to Linux vhost (drivers/vhost/vhost.c, VHOST_SET_VRING_KICK/CALL),
// as words in platform memory so that they cross workers on a shared memory. A kick (driver →
// device), a call (device → driver) or a config interrupt is one doorbell.
//
//   doorbell (8 bytes, priv arena)         waker (8 bytes, priv arena), one per waiting thread
//   ┌───────────┬──────────────┐           ┌────────────┬────────────┐
//   │ count u32 │ waker addr   │ ───────►  │ seq i32    │ parked i32 │
//   └───────────┴──────────────┘           └────────────┴────────────┘
//
// ring(): count += 1 (the event), then if a waiter watches this doorbell, seq += 1 and, only if
// that waiter said it is parked, Atomics.notify(seq) — so a busy (polling) waiter costs the
// ringer three atomics and no futex syscall. A waiter polls the counts of every doorbell it
// watches; to sleep it sets parked = 1, polls once more (a ring that raced in is not lost),
// then Atomics.wait(seq, seen). The guest side of a vhost queue may ring the kick doorbell
// directly (the get_vq_notification doorbell page), so no VMM code runs per request.
//
// In one thread the same words work: ring() also schedules a microtask poll of any waiter that
// lives in this thread, so in-thread doorbells need no loop.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';

/** Bytes of a doorbell: count u32 @0, waker address u32 @4. */
export const DOORBELL_SIZE = 8;
/** Bytes of a waker: seq i32 @0, parked i32 @4. */
export const WAKER_SIZE = 8;

/** A doorbell as plain data (post it to another worker): the offset of its 8 bytes. */
export interface DoorbellHandle {
  /** Memory offset of the doorbell (8-byte aligned). */
  readonly addr: number;
}

/** Waiters that live in this thread, by memory then waker address (for same-thread rings). */
const local = new WeakMap<WebAssembly.Memory, Map<number, DoorbellWaiter>>();

/** A doorbell: a counter one side rings and the other watches. */
export class Doorbell {
  /** The platform whose memory holds the doorbell. */
  readonly platform: Platform;
  /** Its handle (post it to another worker). */
  readonly handle: DoorbellHandle;
  private readonly i: number;
  private readonly owned: boolean;

  /**
   * The doorbell at `handle` in `platform`'s memory (made elsewhere). Throws
   * VirtioError(InvalidArgument) for an address that is not 8-byte aligned inside the memory.
   */
  constructor(platform: Platform, handle: DoorbellHandle, owned = false) {
    const a = handle?.addr;
    if (typeof a !== 'number' || !Number.isSafeInteger(a) || a <= 0 || a % 8 !== 0 || a + DOORBELL_SIZE > platform.u8.length) {
      throw new VirtioError(Code.InvalidArgument, `doorbell address ${String(a)} is not an 8-byte aligned offset inside the memory`);
    }
    this.platform = platform;
    this.handle = { addr: a };
    this.i = a >> 2;
    this.owned = owned;
  }

  /** Allocates a new doorbell in `platform`'s private arena (count 0, nobody watching). */
  static alloc(platform: Platform): Doorbell {
    const addr = platform.priv.alloc(DOORBELL_SIZE, 8);
    platform.i32[addr >> 2] = 0;
    platform.i32[(addr >> 2) + 1] = 0;
    return new Doorbell(platform, { addr }, true);
  }

  /** Rings: count += 1, and wakes the watching waiter if it is parked. */
  ring(): void {
    const m = this.platform.i32;
    Atomics.add(m, this.i, 1);
    const w = Atomics.load(m, this.i + 1);
    if (w === 0) return;
    Atomics.add(m, w >> 2, 1);
    if (Atomics.load(m, (w >> 2) + 1) !== 0) Atomics.notify(m, w >> 2);
    local.get(this.platform.memory)?.get(w)?.schedule();
  }

  /** Rings since the doorbell was made (a wrapping u32). */
  get count(): number {
    return Atomics.load(this.platform.u32, this.i);
  }

  /** Frees the doorbell's memory if {@link alloc} made it here. */
  free(): void {
    if (this.owned) this.platform.release(this.handle.addr);
  }

  /** @internal the waker address word. */
  setWaker(addr: number): void {
    Atomics.store(this.platform.i32, this.i + 1, addr);
  }
}

interface Watch {
  db: Doorbell;
  seen: number;
  cb: () => void;
}

/**
 * One thread's view of the doorbells it serves: watch() them, then poll() (callbacks of those
 * that rang since), wait() (Atomics.wait, in workers and Node's main thread) or waitAsync()
 * (a browser main thread may not block).
 */
export class DoorbellWaiter {
  /** The platform whose memory holds the waker. */
  readonly platform: Platform;
  /** Memory offset of this waiter's waker (seq, parked). */
  readonly addr: number;
  private readonly i: number;
  private readonly watches: Watch[] = [];
  private scheduled = false;
  private closed = false;
  /** Times wait()/waitAsync() actually slept (for "the VMM thread stayed idle" figures). */
  sleeps = 0;
  /** Times a sleep ended because a doorbell rang (not a timeout). */
  wakeups = 0;

  constructor(platform: Platform) {
    this.platform = platform;
    this.addr = platform.priv.alloc(WAKER_SIZE, 8);
    this.i = this.addr >> 2;
    platform.i32[this.i] = 0;
    platform.i32[this.i + 1] = 0;
    let m = local.get(platform.memory);
    if (!m) local.set(platform.memory, (m = new Map()));
    m.set(this.addr, this);
  }

  /**
   * Calls `cb` (from poll/wait, or a microtask for rings made in this thread) whenever `db` has
   * rung since the last look. One waiter per doorbell: watching takes the doorbell over.
   */
  watch(db: Doorbell, cb: () => void): void {
    this.live();
    this.unwatch(db);
    this.watches.push({ db, seen: db.count, cb });
    db.setWaker(this.addr);
  }

  /** Stops watching `db`. */
  unwatch(db: Doorbell): void {
    const k = this.watches.findIndex((w) => w.db.handle.addr === db.handle.addr);
    if (k < 0) return;
    this.watches.splice(k, 1);
    if (Atomics.load(this.platform.i32, (db.handle.addr >> 2) + 1) === this.addr) db.setWaker(0);
  }

  /** Runs the callback of every watched doorbell that rang since the last look. Returns how many. */
  poll(): number {
    let n = 0;
    // Callbacks may watch/unwatch: iterate over a snapshot.
    for (const w of this.watches.slice()) {
      const c = w.db.count;
      if (c !== w.seen) {
        w.seen = c;
        n++;
        w.cb();
      }
    }
    return n;
  }

  /**
   * Sleeps until a watched doorbell rings or `timeoutMs` passes, then polls. Throws
   * VirtioError(FailedPrecondition) where the thread may not block (a browser main thread).
   * Returns what poll() returned.
   */
  wait(timeoutMs = Infinity): number {
    this.live();
    const m = this.platform.i32;
    const seq = Atomics.load(m, this.i);
    Atomics.store(m, this.i + 1, 1);
    try {
      const n = this.poll(); // a ring between the last poll and parked = 1 is seen here
      if (n > 0) return n;
      let r: string;
      try {
        r = Atomics.wait(m, this.i, seq, timeoutMs);
      } catch (e) {
        throw new VirtioError(Code.FailedPrecondition, `this thread cannot block in Atomics.wait (a browser main thread): use waitAsync()`, { cause: e });
      }
      this.sleeps++;
      if (r !== 'timed-out') this.wakeups++;
    } finally {
      this.unpark();
    }
    return this.poll();
  }

  /** wait() without blocking the thread: Atomics.waitAsync where there is one, else a timer poll. */
  async waitAsync(timeoutMs = Infinity): Promise<number> {
    this.live();
    const m = this.platform.i32;
    const seq = Atomics.load(m, this.i);
    Atomics.store(m, this.i + 1, 1);
    try {
      const n = this.poll();
      if (n > 0) return n;
      const wa = (Atomics as unknown as { waitAsync?: (a: Int32Array, i: number, v: number, t?: number) => { async: boolean; value: Promise<string> | string } }).waitAsync;
      let r: string;
      if (wa) {
        const res = wa(m, this.i, seq, timeoutMs);
        r = res.async ? await (res.value as Promise<string>) : (res.value as string);
      } else {
        await new Promise((f) => setTimeout(f, Math.min(timeoutMs, 1)));
        // Re-read the view after the await: an unshared memory's owner may have grown it.
        r = Atomics.load(this.platform.i32, this.i) !== seq ? 'ok' : 'timed-out';
      }
      this.sleeps++;
      if (r !== 'timed-out') this.wakeups++;
    } finally {
      this.unpark();
    }
    return this.poll();
  }

  /**
   * parked = 0, unless close() ran meanwhile (a callback of the poll inside wait(), or this
   * thread while waitAsync was pending): the waker's bytes are freed then, and may already be
   * a doorbell whose waker word this store would clear, silencing it.
   */
  private unpark(): void {
    if (!this.closed) Atomics.store(this.platform.i32, this.i + 1, 0);
  }

  /** Stops watching everything and frees the waker. */
  close(): void {
    if (this.closed) return;
    for (const w of this.watches.slice()) this.unwatch(w.db);
    this.closed = true;
    local.get(this.platform.memory)?.delete(this.addr);
    // Wake a thread parked on us so it sees the close.
    Atomics.add(this.platform.i32, this.i, 1);
    Atomics.notify(this.platform.i32, this.i);
    this.platform.release(this.addr);
  }

  /** True once {@link close} ran. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** @internal a ring made in this thread: poll in a microtask. */
  schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (!this.closed) this.poll();
    });
  }

  private live(): void {
    if (this.closed) throw new VirtioError(Code.Cancelled, 'the doorbell waiter was closed');
  }
}
