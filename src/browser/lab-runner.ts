// The ring lab's cross-thread runner for browsers: two module Web Workers (driver and device,
// each running serveLab from lab-worker.ts) on one shared platform, reused across points — what
// src/lab/node-runner.ts does with worker_threads. The calling thread only posts messages and
// never blocks (a page's main thread may not Atomics.wait); the workers sleep on their doorbells.
// Needs a cross-origin isolated page (COOP/COEP) for the shared memory.

import { VirtioError, Code } from '../errors.ts';
import { Platform } from '../platform/platform.ts';
import type { CrossThreadRunner } from '../lab/lab.ts';
import type { XMessage } from '../lab/xthread-worker.ts';
import { pairRunner, type LabReply } from '../lab/pair-runner.ts';

/** The part of a Web Worker the runner uses (structural, so no DOM types are needed). */
export interface LabWorkerLike {
  /** Sends a lab message to the worker. */
  postMessage(m: unknown): void;
  /** Stops the worker. */
  terminate(): void;
  /** 'message' events carry `data`; 'error' events a `message` (and preventDefault). */
  addEventListener(type: 'message' | 'error', listener: (e: LabWorkerEvent) => void): void;
}

/** What the runner reads from a worker's events. */
export interface LabWorkerEvent {
  /** A 'message' event's payload. */
  data?: unknown;
  /** An 'error' event's text. */
  message?: string;
  /** Marks an 'error' event handled (no console report). */
  preventDefault?(): void;
}

/** Options of {@link browserCrossThreadRunner}. */
export interface BrowserLabRunnerOptions {
  /**
   * Starts one lab worker (a module worker whose script runs this package's
   * `browser/lab-worker.js`). @default `new Worker(new URL('./lab-worker.js', import.meta.url), { type: 'module', name })`,
   * which finds the file next to this module in `dist/browser/`; bundlers that move modules need their own.
   */
  createWorker?: (name: string) => LabWorkerLike;
  /**
   * How long a new worker may take to answer its first message. A worker that never answers
   * (its script did not call serveLab: a bundler dropped the import, say) then fails the
   * runner with `cancelled` instead of hanging (a cold start on a loaded machine can take seconds). @default 60000
   */
  startTimeoutMs?: number;
}

/** A cross-thread runner and how to stop its workers. */
export interface BrowserLabRunner {
  /** Give it to runLab({ crossThread }). */
  runner: CrossThreadRunner;
  /** Terminates the workers. */
  close(): void;
}

type Reply = LabReply;

/** One lab worker with ordered request/response. */
class LabWorker {
  private readonly waiting: ((r: Reply) => void)[] = [];
  private dead: Error | null = null;

  constructor(private readonly w: LabWorkerLike, name: string) {
    w.addEventListener('message', (e) => this.waiting.shift()?.(e.data as Reply));
    w.addEventListener('error', (e) => {
      e.preventDefault?.();
      this.dead = new Error(`lab worker ${name}: ${e.message ?? 'failed to load or crashed'}`);
      for (const f of this.waiting.splice(0)) f({ ok: false, error: this.dead.message });
    });
  }

  /** Sends `m`; resolves with the answer. With `timeoutMs`, a worker silent that long is declared dead. */
  ask(m: XMessage, timeoutMs = 0): Promise<Reply> {
    if (this.dead) return Promise.reject(new VirtioError(Code.Cancelled, `lab worker is gone: ${this.dead.message}`));
    return new Promise<Reply>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      this.waiting.push((r) => {
        clearTimeout(timer);
        if (r.ok) resolve(r);
        else reject(new VirtioError(Code.Internal, `lab worker: ${r.error}`));
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.dead = new Error(`no answer to '${m.op}' within ${timeoutMs} ms (does the worker script run serveLab? a bundler may have dropped a bare import)`);
          this.waiting.splice(0);
          reject(new VirtioError(Code.Cancelled, `lab worker: ${this.dead.message}`));
        }, timeoutMs);
      }
      this.w.postMessage(m);
    });
  }

  terminate(): void {
    this.w.terminate();
  }
}

function defaultWorker(name: string): LabWorkerLike {
  const W = (globalThis as { Worker?: new (url: URL, o: { type: 'module'; name: string }) => LabWorkerLike }).Worker;
  if (!W) throw new VirtioError(Code.Unsupported, 'Web Workers are not available here (in Node use nodeCrossThreadRunner from vdpa-wasm/node)');
  return new W(new URL('./lab-worker.js', import.meta.url), { type: 'module', name });
}

/** Starts the driver and device lab workers on a shared platform. */
export async function browserCrossThreadRunner(opts: BrowserLabRunnerOptions = {}): Promise<BrowserLabRunner> {
  if ((globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === false) {
    throw new VirtioError(Code.FailedPrecondition, 'the cross-thread lab needs shared memory: serve the page cross-origin isolated ' +
      '(Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy: require-corp)');
  }
  const make = opts.createWorker ?? defaultWorker;
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const ctl = p.priv.alloc(8, 8);
  const drvW = new LabWorker(make('vdpa-lab-driver'), 'driver');
  const devW = new LabWorker(make('vdpa-lab-device'), 'device');
  try {
    const t = opts.startTimeoutMs ?? 60_000;
    await Promise.all([
      drvW.ask({ op: 'attach', handle: p.handle({ priv: 4 << 20, ram: 40 << 20 }) }, t),
      devW.ask({ op: 'attach', handle: p.handle({ priv: 4 << 20, ram: 4 << 20 }) }, t),
    ]);
  } catch (e) {
    drvW.terminate();
    devW.terminate();
    throw e;
  }
  const runner = pairRunner(p, ctl, drvW, devW);
  return {
    runner,
    close() {
      drvW.terminate();
      devW.terminate();
    },
  };
}
