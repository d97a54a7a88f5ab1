// An ordered request/response channel over a MessagePort-like object: the control plane between
// a device worker and the thread that drives it (issue 8 §2). Node worker_threads (Worker,
// MessagePort, parentPort) and browser Web Workers / MessagePorts are abstracted to
// {postMessage, message events, close}. Requests are answered in the order they were sent (the
// serving side runs one handler at a time, async handlers included), so state-changing requests
// posted back to back apply in order. A VirtioError thrown by a handler crosses with its code
// and message. A port that closes, a worker that exits or errors, or close() here rejects every
// pending request and every later one with VirtioError(Cancelled) — never a hang.
//
//   request  { vdpaRpc: 1, t: 'req', id, op, args }
//   response { vdpaRpc: 1, t: 'res', id, ok: true, value } | { …, ok: false, error: { code, message } }
//   goodbye  { vdpaRpc: 1, t: 'bye' }  (the other side closed its end)
//
// A VhostError crosses as itself (errno preserved). Values cross by structured clone (bigint, Uint8Array, WebAssembly.Memory/Module all do).

import { VirtioError, Code } from '../errors.ts';
import { VhostError, ERRNO, type ErrnoName } from '../vhost/errno.ts';

/** Listener shape shared by Node's EventEmitter-style and the DOM's EventTarget-style ports. */
export type PortListener = (x: unknown) => void;
type Listener = PortListener;

/**
 * What a channel needs of a port: postMessage plus either Node-style on/off or DOM-style
 * add/removeEventListener. A Node Worker, MessagePort or parentPort, and a browser Worker,
 * MessagePort or a worker's `self` all fit.
 */
export interface PortLike {
  /** Posts a message to the other end (structured clone). */
  postMessage(message: unknown): void;
  /** Node style: adds a listener for `event` ('message', 'close', 'exit', 'error'). */
  on?(event: string, listener: PortListener): unknown;
  /** Node style: removes a listener. */
  off?(event: string, listener: PortListener): unknown;
  /** DOM style: adds a listener ('message' events carry the message in `.data`). */
  addEventListener?(event: string, listener: PortListener): void;
  /** DOM style: removes a listener. */
  removeEventListener?(event: string, listener: PortListener): void;
  /** MessagePort.close(): called by {@link Channel.close}. */
  close?(): void;
  /** Node MessagePort/Worker: lets the process exit while the port is open. */
  unref?(): void;
}

/** Serves one request: returns (or resolves to) the answer; throws a VirtioError to fail it. */
export type RequestHandler = (op: string, args: unknown[]) => unknown;

/** Options of {@link Channel}. */
export interface ChannelOptions {
  /** Serves the other side's requests. @default none (requests are refused with Unsupported) */
  handler?: RequestHandler;
  /** Name used in error messages. @default "channel" */
  name?: string;
}

interface Wire {
  vdpaRpc: 1;
  t: 'req' | 'res' | 'bye';
  id?: number;
  op?: string;
  args?: unknown[];
  ok?: boolean;
  value?: unknown;
  error?: WireError;
}

/** An error as plain data: VirtioError code and raw message, plus the errno of a VhostError. */
export interface WireError {
  /** The VirtioError code. */
  code: string;
  /** The raw message (without the code prefix). */
  message: string;
  /** VhostError: the errno name ('EBUSY'). */
  errno?: string;
  /** VhostError: the inner errno name Linux folded into `errno`, or null. */
  detail?: string | null;
}

const CODES = new Set<string>(Object.values(Code));

/** A VirtioError as plain data (code and raw message; a VhostError's errno too). */
export function errorToWire(e: unknown): WireError {
  if (e instanceof VhostError) return { code: e.code, message: e.rawMessage.replace(`${e.errnoName}: `, ''), errno: e.errnoName, detail: e.detail };
  if (e instanceof VirtioError) return { code: e.code, message: e.rawMessage };
  return { code: Code.Internal, message: (e as Error)?.message ?? String(e) };
}

/** The VirtioError (or VhostError) that {@link errorToWire} describes (unknown codes become Internal). */
export function errorFromWire(w: { code?: unknown; message?: unknown; errno?: unknown; detail?: unknown } | undefined): VirtioError {
  if (typeof w?.errno === 'string' && Object.hasOwn(ERRNO, w.errno)) {
    const detail = typeof w.detail === 'string' && Object.hasOwn(ERRNO, w.detail) ? (w.detail as ErrnoName) : undefined;
    return new VhostError(w.errno as ErrnoName, typeof w.message === 'string' ? w.message : 'malformed error from the peer', detail ? { detail } : undefined);
  }
  const code = typeof w?.code === 'string' && CODES.has(w.code) ? (w.code as Code) : Code.Internal;
  return new VirtioError(code, typeof w?.message === 'string' ? w.message : 'malformed error from the peer');
}

function listen(port: PortLike, ev: string, fn: Listener): () => void {
  if (port.on) {
    port.on(ev, fn);
    return () => port.off?.(ev, fn);
  }
  if (port.addEventListener) {
    // DOM message events carry the message in .data.
    const h: Listener = ev === 'message' ? (e) => fn((e as { data: unknown }).data) : fn;
    port.addEventListener(ev, h);
    // A MessagePort's onmessage starts it implicitly; addEventListener needs start().
    (port as { start?: () => void }).start?.();
    return () => port.removeEventListener?.(ev, h);
  }
  throw new VirtioError(Code.InvalidArgument, 'a port needs on() or addEventListener()');
}

/** One end of an ordered request/response channel. */
export class Channel {
  /** Name used in error messages. */
  readonly name: string;
  private readonly port: PortLike;
  private readonly handler: RequestHandler | null;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: VirtioError) => void }>();
  private readonly unlisten: (() => void)[] = [];
  private readonly closeHooks: ((e: VirtioError) => void)[] = [];
  private nextId = 1;
  private serving: Promise<void> = Promise.resolve();
  private dead: VirtioError | null = null;
  private exited = false;

  constructor(port: PortLike, opts: ChannelOptions = {}) {
    if (!port || typeof port.postMessage !== 'function') throw new VirtioError(Code.InvalidArgument, 'a channel needs a port with postMessage()');
    this.port = port;
    this.name = opts.name ?? 'channel';
    this.handler = opts.handler ?? null;
    this.unlisten.push(listen(port, 'message', (m) => this.onMessage(m)));
    // Node: a MessagePort emits 'close'; a Worker emits 'exit' and 'error'. Browser: a Worker
    // emits 'error' (uncaught exception), a MessagePort 'close' where supported.
    const gone = (why: string) => (x: unknown) => {
      if (why === 'the worker exited') this.exited = true;
      this.fail(new VirtioError(Code.Cancelled, `${this.name}: ${why}${x instanceof Error ? `: ${x.message}` : typeof x === 'number' ? ` (code ${x})` : ''}`, x instanceof Error ? { cause: x } : undefined));
    };
    for (const [ev, why] of [['close', 'the port closed'], ['exit', 'the worker exited'], ['error', 'the worker failed'], ['messageerror', 'a message could not be deserialized']] as const) {
      try {
        this.unlisten.push(listen(port, ev, gone(why)));
      } catch {
        /* a port without that event */
      }
    }
  }

  /**
   * Sends a request; resolves to the handler's answer or rejects with its VirtioError.
   * Rejects with VirtioError(Cancelled) once the channel is closed or the peer is gone.
   */
  request(op: string, ...args: unknown[]): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      try {
        this.port.postMessage({ vdpaRpc: 1, t: 'req', id, op, args } satisfies Wire);
      } catch (e) {
        this.pending.delete(id);
        reject(new VirtioError(Code.InvalidArgument, `${this.name}: ${op} could not be posted: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
      }
    });
  }

  /** Requests sent and not yet answered. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** True if the channel closed because the worker at the other end exited (it runs no more code). */
  get peerExited(): boolean {
    return this.exited;
  }

  /** Why the channel is closed, or null while it is open. */
  get closedReason(): VirtioError | null {
    return this.dead;
  }

  /** Calls `fn` once when the channel closes (at once if it already has). */
  onClose(fn: (reason: VirtioError) => void): void {
    if (this.dead) fn(this.dead);
    else this.closeHooks.push(fn);
  }

  /** Closes this end: tells the peer, rejects pending requests, closes the port. Idempotent. */
  close(): void {
    if (this.dead) return;
    try {
      this.port.postMessage({ vdpaRpc: 1, t: 'bye' } satisfies Wire);
    } catch {
      /* the port is already gone */
    }
    this.fail(new VirtioError(Code.Cancelled, `${this.name}: the channel was closed`));
    try {
      this.port.close?.();
    } catch {
      /* already closed */
    }
  }

  /** Marks the channel dead with `err`: every pending and later request rejects with it. */
  fail(err: VirtioError): void {
    if (this.dead) return;
    this.dead = err;
    for (const u of this.unlisten.splice(0)) u();
    const p = [...this.pending.values()];
    this.pending.clear();
    for (const x of p) x.reject(err);
    for (const h of this.closeHooks.splice(0)) {
      try {
        h(err);
      } catch {
        /* a hook must not break the others */
      }
    }
  }

  private onMessage(raw: unknown): void {
    const m = raw as Wire;
    if (!m || typeof m !== 'object' || m.vdpaRpc !== 1) return; // not ours: other traffic may share the port
    if (m.t === 'res') {
      const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
      if (!p) return;
      this.pending.delete(m.id!);
      if (m.ok) p.resolve(m.value);
      else p.reject(errorFromWire(m.error));
      return;
    }
    if (m.t === 'bye') {
      this.fail(new VirtioError(Code.Cancelled, `${this.name}: the peer closed the channel`));
      return;
    }
    if (m.t !== 'req' || typeof m.id !== 'number' || typeof m.op !== 'string') return;
    const { id, op } = m;
    const args = Array.isArray(m.args) ? m.args : [];
    // One request at a time, in arrival order, even when handlers are async.
    this.serving = this.serving.then(async () => {
      let reply: Wire;
      try {
        if (!this.handler) throw new VirtioError(Code.Unsupported, `${this.name} serves no requests`);
        reply = { vdpaRpc: 1, t: 'res', id, ok: true, value: await this.handler(op, args) };
      } catch (e) {
        reply = { vdpaRpc: 1, t: 'res', id, ok: false, error: errorToWire(e) };
      }
      if (this.dead) return;
      try {
        this.port.postMessage(reply);
      } catch (e) {
        // The answer cannot be cloned (a function, say): fail the request instead.
        try {
          this.port.postMessage({ vdpaRpc: 1, t: 'res', id, ok: false, error: { code: Code.Internal, message: `${op}: the answer could not be posted: ${(e as Error)?.message ?? String(e)}` } } satisfies Wire);
        } catch {
          /* the port is gone */
        }
      }
    });
  }
}
