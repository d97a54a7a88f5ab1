// A synchronous request slot in shared platform memory: how a thread that may block
// (any worker, and Node's main thread) makes a *synchronous* call into a device worker. The
// vdpa config ops are synchronous (Linux's vdpa_config_ops are plain function calls under the
// device's lock: virtio_vdpa reads status back right after writing FEATURES_OK), so a
// RemoteVdpaDevice cannot post them and carry on; it writes the request here, rings the
// mailbox doorbell the device worker watches, and sleeps in Atomics.wait until the answer.
//
//   mailbox (priv arena, 8-aligned)
//   ┌──────────┬─────────┬──────────────────────┬───────────────────────────┐
//   │ state i32│ len u32 │ doorbell (8 bytes)   │ payload (cap bytes, JSON) │
//   └──────────┴─────────┴──────────────────────┴───────────────────────────┘
//   state: 0 idle → 1 request written (client) → 2 answer written (server) → 0 (client read it);
//          3 closed (server: it serves no more; a call fails at once instead of timing out)
//
// The payload is JSON with bigints tagged ({"$big":"hex"}); Uint8Arrays (a migration state, a
// config-space read, ioctl bytes) travel as raw bytes after it, each named in the JSON by its
// index ({"$bin":k}), so a state of kilobytes costs a copy, not a number per byte:
//   payload: jsonLen u32 · nbins u32 · JSON · pad to 8 · nbins × (offset u32, length u32) · bytes
// (offsets from the payload's start, each 8-aligned). A browser main thread may not block:
// there a call throws FailedPrecondition (drive the device from a worker, or use the
// asynchronous channel).

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import { Doorbell, DoorbellWaiter, type DoorbellHandle } from './doorbell.ts';
import { errorFromWire, errorToWire } from './channel.ts';

/** Bytes before the payload: state, len, doorbell. */
export const MAILBOX_HEADER = 16;
/** Default payload capacity. */
export const MAILBOX_CAP = 16384;

/** How long a caller spins for the answer before it sleeps in Atomics.wait (ms). */
const SPIN_MS = 0.05;

const IDLE = 0;
const REQUEST = 1;
const ANSWER = 2;
/** The server stopped serving (the device was released in the worker): calls fail at once. */
const CLOSED = 3;

/** A mailbox as plain data (post it to the serving worker). */
export interface MailboxHandle {
  /** Memory offset of the mailbox. */
  addr: number;
  /** Payload capacity in bytes. */
  cap: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
// Arithmetic, not bitwise: a corrupt length near 2^32 must not wrap.
const align8 = (n: number): number => Math.ceil(n / 8) * 8;

/** @internal Writes `value` into the payload of the mailbox at `addr` (see the file comment); false if it does not fit. */
export function put(p: Platform, addr: number, cap: number, value: unknown): boolean {
  const bins: Uint8Array[] = [];
  const json = JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'bigint') return { $big: v.toString(16) };
    if (v instanceof Uint8Array) return { $bin: bins.push(v) - 1 };
    return v;
  });
  // encode() then copy: browsers refuse encodeInto/decode on views of shared memory.
  const b = enc.encode(json);
  const table = align8(8 + b.length);
  let end = table + 8 * bins.length;
  for (const x of bins) end = align8(end) + x.length;
  if (end > cap) return false;
  const base = addr + MAILBOX_HEADER; // 8-aligned
  const u32 = p.u32;
  u32[base >> 2] = b.length;
  u32[(base >> 2) + 1] = bins.length;
  p.u8.set(b, base + 8);
  let at = table + 8 * bins.length;
  for (let k = 0; k < bins.length; k++) {
    const x = bins[k]!;
    at = align8(at);
    u32[((base + table) >> 2) + 2 * k] = at;
    u32[((base + table) >> 2) + 2 * k + 1] = x.length;
    p.u8.set(x, base + at);
    at += x.length;
  }
  Atomics.store(u32, (addr >> 2) + 1, end);
  return true;
}

/** @internal Reads the payload {@link put} wrote. Throws VirtioError(Internal) for one that is malformed. */
export function get(p: Platform, addr: number, cap: number): unknown {
  const len = Atomics.load(p.u32, (addr >> 2) + 1);
  if (len > cap || len < 8) throw new VirtioError(Code.Internal, `mailbox payload of ${len} bytes does not fit its ${cap}`);
  const base = addr + MAILBOX_HEADER;
  const u32 = p.u32;
  const jl = u32[base >> 2]!;
  const nb = u32[(base >> 2) + 1]!;
  // Lengths the other thread wrote: checked against the payload before any is used.
  if (jl > len - 8 || nb > (len - 8) / 8) throw new VirtioError(Code.Internal, 'malformed mailbox payload');
  const table = align8(8 + jl);
  if (table + 8 * nb > len) throw new VirtioError(Code.Internal, 'malformed mailbox payload');
  const bin = (k: unknown): Uint8Array => {
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k >= nb) throw new VirtioError(Code.Internal, `mailbox payload names no bytes ${String(k)}`);
    const off = u32[((base + table) >> 2) + 2 * k]!;
    const n = u32[((base + table) >> 2) + 2 * k + 1]!;
    if (off > len || n > len - off) throw new VirtioError(Code.Internal, 'malformed mailbox payload');
    return p.u8.slice(base + off, base + off + n);
  };
  try {
    return JSON.parse(dec.decode(p.u8.slice(base + 8, base + 8 + jl)), (_k, v: unknown) => {
      if (v && typeof v === 'object') {
        const o = v as { $big?: unknown; $bin?: unknown };
        if (typeof o.$big === 'string') return BigInt(`0x${o.$big.replace(/^-/, '')}`) * (o.$big.startsWith('-') ? -1n : 1n);
        if (o.$bin !== undefined) return bin(o.$bin);
      }
      return v;
    });
  } catch (e) {
    if (e instanceof VirtioError) throw e;
    throw new VirtioError(Code.Internal, 'malformed mailbox payload', { cause: e });
  }
}

/** The calling side of a mailbox. */
export class MailboxClient {
  /** Its handle (give it to {@link MailboxServer}). */
  readonly handle: MailboxHandle;
  private readonly p: Platform;
  private readonly db: Doorbell;
  private readonly si: number;
  private busy = false;
  private freed = false;
  /** A call timed out: the server may still write its answer here, so the memory is never reused. */
  private stale = false;
  /** The server closed the mailbox: it writes it no more, so it may be freed. */
  serverClosed = false;

  /** Allocates a mailbox with `cap` payload bytes in `platform`'s private arena. */
  constructor(platform: Platform, cap = MAILBOX_CAP) {
    this.p = platform;
    const addr = platform.priv.alloc(MAILBOX_HEADER + cap, 8);
    platform.u8.fill(0, addr, addr + MAILBOX_HEADER);
    this.handle = { addr, cap };
    this.si = addr >> 2;
    this.db = new Doorbell(platform, { addr: addr + 8 });
  }

  /**
   * Sends `[op, args]` and blocks until the answer, or `timeoutMs`. Returns the answer; throws
   * the handler's VirtioError; Cancelled after the timeout (the server is presumed gone) or
   * once freed; FailedPrecondition on a thread that may not block; InvalidArgument if the
   * request does not fit; FailedPrecondition for a re-entrant call.
   */
  call(op: string, args: unknown[], timeoutMs: number): unknown {
    if (this.freed) throw new VirtioError(Code.Cancelled, 'the mailbox was freed');
    if (this.busy) throw new VirtioError(Code.FailedPrecondition, `${op}: a synchronous call is already in progress`);
    const { p, si } = this;
    const { addr, cap } = this.handle;
    if (!put(p, addr, cap, [op, args])) throw new VirtioError(Code.InvalidArgument, `${op}: the request exceeds the ${cap}-byte mailbox`);
    this.busy = true;
    const closed = () => {
      this.serverClosed = true;
      return new VirtioError(Code.Cancelled, `${op}: the device worker released this device`);
    };
    try {
      if (Atomics.compareExchange(p.i32, si, IDLE, REQUEST) !== IDLE) throw closed();
      this.db.ring();
      // Spin up to SPIN_MS first: an awake device worker answers in µs, a futex wake costs ~50.
      const spinEnd = performance.now() + SPIN_MS;
      while (Atomics.load(p.i32, si) !== ANSWER && performance.now() < spinEnd);
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const st = Atomics.load(p.i32, si);
        if (st === ANSWER) break;
        if (st === CLOSED) throw closed();
        const left = deadline - performance.now();
        if (left <= 0) {
          this.stale = true;
          throw new VirtioError(Code.Cancelled, `${op}: the device worker did not answer in ${timeoutMs} ms`);
        }
        try {
          Atomics.wait(p.i32, si, REQUEST, Math.min(left, 50));
        } catch (e) {
          throw new VirtioError(Code.FailedPrecondition, `${op}: this thread cannot block in Atomics.wait (a browser main thread): drive the device from a worker`, { cause: e });
        }
      }
      let ans: unknown;
      try {
        ans = get(p, addr, cap);
      } finally {
        Atomics.store(p.i32, si, IDLE); // read (or unreadable): the mailbox takes the next call
      }
      if (!Array.isArray(ans) || ans.length !== 2 || typeof ans[0] !== 'boolean') throw new VirtioError(Code.Internal, `${op}: malformed answer`);
      const [ok, value] = ans as [boolean, unknown];
      if (!ok) throw errorFromWire(value as { code: string; message: string });
      return value;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Frees the mailbox memory. Later calls throw Cancelled. After a timed-out call the memory
   * is left allocated (orphaned): a late answer must not land in someone else's bytes.
   */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    if (!this.stale) this.p.release(this.handle.addr);
  }
}

/** The serving side: answers requests when the mailbox doorbell rings. */
export class MailboxServer {
  private readonly p: Platform;
  private readonly handle: MailboxHandle;
  private readonly db: Doorbell;
  private readonly waiter: DoorbellWaiter;
  private readonly handler: (op: string, args: unknown[]) => unknown;

  /**
   * Serves the mailbox at `handle` through `waiter` (its doorbell is watched there). Throws
   * InvalidArgument for a handle outside the memory.
   */
  constructor(platform: Platform, handle: MailboxHandle, waiter: DoorbellWaiter, handler: (op: string, args: unknown[]) => unknown) {
    const { addr, cap } = handle ?? {};
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(cap) || addr <= 0 || addr % 8 !== 0 || cap <= 0 || addr + MAILBOX_HEADER + cap > platform.u8.length) {
      throw new VirtioError(Code.InvalidArgument, `mailbox ${JSON.stringify(handle)} is not inside the memory`);
    }
    this.p = platform;
    this.handle = { addr, cap };
    this.db = new Doorbell(platform, { addr: addr + 8 } satisfies DoorbellHandle);
    this.waiter = waiter;
    this.handler = handler;
    waiter.watch(this.db, () => this.serve());
    this.serve(); // a request written before we watched
  }

  /** Answers the pending request, if any. Returns true if it answered one. */
  serve(): boolean {
    const { p } = this;
    const { addr, cap } = this.handle;
    const si = addr >> 2;
    if (Atomics.load(p.i32, si) !== REQUEST) return false;
    let ans: [boolean, unknown];
    try {
      const req = get(p, addr, cap) as [string, unknown[]];
      if (!Array.isArray(req) || typeof req[0] !== 'string' || !Array.isArray(req[1])) throw new VirtioError(Code.InvalidArgument, 'malformed mailbox request');
      ans = [true, this.handler(req[0], req[1]) ?? null];
    } catch (e) {
      ans = [false, errorToWire(e)];
    }
    if (!put(p, addr, cap, ans)) put(p, addr, cap, [false, { code: Code.ResourceExhausted, message: `the answer exceeds the ${cap}-byte mailbox` }]);
    // ANSWER unless close() raced in (it cannot: both run in this thread), so a plain store.
    Atomics.store(p.i32, si, ANSWER);
    Atomics.notify(p.i32, si);
    return true;
  }

  /**
   * Stops serving without a word to the client, for a request that ends the conversation (a
   * close the client asked for): the answer being written is then the last write to the
   * mailbox, so the client may free it once read. A later call would time out: the client
   * makes none.
   */
  detach(): void {
    this.waiter.unwatch(this.db);
  }

  /** Stops serving: a call in progress or made later fails at once with Cancelled. */
  close(): void {
    this.waiter.unwatch(this.db);
    const si = this.handle.addr >> 2;
    Atomics.store(this.p.i32, si, CLOSED);
    Atomics.notify(this.p.i32, si);
  }
}
