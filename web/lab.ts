// The ring lab on the page: same-thread points run in this thread (one point at a time, so the
// page repaints between points); cross-thread points run in two Web Workers (lab-worker.ts:
// serveLab, the driver and the device halves) on one shared platform, as the Node runner
// (src/lab/node-runner.ts) does with worker_threads. This thread only posts messages and never
// blocks; the workers sleep in Atomics.wait on their doorbells.

import {
  Platform, VirtioError, Code, runLab, expandSweep, labEnvironment,
  type CrossThreadRunner, type LabPoint, type LabResult, type LabSweep, type LabRun, type XMessage,
} from '../src/index.ts';

interface Reply {
  ok: boolean;
  error?: string;
  [k: string]: unknown;
}

/** One lab worker with ordered request/response (src/lab/node-runner.ts LabWorker, for Web Workers). */
class LabWorker {
  private readonly w: Worker;
  private readonly waiting: ((r: Reply) => void)[] = [];
  private dead: Error | null = null;

  constructor(name: string) {
    this.w = new Worker(new URL('./lab-worker.js', import.meta.url), { type: 'module', name });
    this.w.onmessage = (e: MessageEvent<Reply>) => this.waiting.shift()?.(e.data);
    this.w.onerror = (e) => {
      e.preventDefault();
      this.dead = new Error(`lab worker ${name}: ${e.message}`);
      for (const f of this.waiting.splice(0)) f({ ok: false, error: this.dead.message });
    };
  }

  ask(m: XMessage): Promise<Reply> {
    if (this.dead) return Promise.reject(new VirtioError(Code.Cancelled, `lab worker is gone: ${this.dead.message}`));
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.push((r) => (r.ok ? resolve(r) : reject(new VirtioError(Code.Internal, `lab worker: ${r.error}`))));
      this.w.postMessage(m);
    });
  }

  terminate(): void {
    this.w.terminate();
  }
}

/** A cross-thread runner over two Web Workers, and how to stop them. */
export interface BrowserLabRunner {
  runner: CrossThreadRunner;
  close(): void;
}

/** Starts the driver and device lab workers on a shared platform (needs cross-origin isolation). */
export async function browserCrossThreadRunner(): Promise<BrowserLabRunner> {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const ctl = p.priv.alloc(8, 8);
  const drvW = new LabWorker('lab-driver');
  const devW = new LabWorker('lab-device');
  try {
    await drvW.ask({ op: 'attach', handle: p.handle({ priv: 4 << 20, ram: 40 << 20 }) });
    await devW.ask({ op: 'attach', handle: p.handle({ priv: 4 << 20, ram: 4 << 20 }) });
  } catch (e) {
    drvW.terminate();
    devW.terminate();
    throw e;
  }
  const runner: CrossThreadRunner = async (pt: LabPoint, o) => {
    Atomics.store(p.i32, ctl >> 2, 0);
    Atomics.store(p.i32, (ctl >> 2) + 1, 0);
    const d = await drvW.ask({ op: 'driver-setup', pt, ctl: { addr: ctl } });
    const v = await devW.ask({ op: 'device-setup', pt, ctl: { addr: ctl }, addresses: d.addresses as never, kick: d.kick as never });
    await drvW.ask({ op: 'driver-call', call: v.call as never });
    const devDone = devW.ask({ op: 'device-run', spinUs: o.spinUs });
    let runs: LabRun[];
    try {
      runs = (await drvW.ask({ op: 'driver-run', chains: o.chains, rounds: o.rounds, spinUs: o.spinUs })).runs as LabRun[];
    } finally {
      // Stop the device and wake it if it sleeps (as the Node runner does).
      const kick = d.kick as { addr: number };
      Atomics.store(p.i32, ctl >> 2, 1);
      Atomics.add(p.i32, kick.addr >> 2, 1);
      const waker = Atomics.load(p.i32, (kick.addr >> 2) + 1);
      if (waker) {
        Atomics.add(p.i32, waker >> 2, 1);
        Atomics.notify(p.i32, waker >> 2);
      }
      await devDone;
      await Promise.all([drvW.ask({ op: 'teardown' }), devW.ask({ op: 'teardown' })]);
    }
    return runs;
  };
  return {
    runner,
    close() {
      drvW.terminate();
      devW.terminate();
    },
  };
}

/** Options of {@link runPageLab}. */
export interface PageLabOptions {
  sweep: Partial<LabSweep>;
  rounds: number;
  chains: number;
  onProgress: (done: number, total: number, pt: LabPoint | null) => void;
}

/**
 * Runs a sweep point by point (yielding to the page between points) and returns one result,
 * as runLab would for the whole sweep.
 */
export async function runPageLab(o: PageLabOptions): Promise<LabResult> {
  const points = expandSweep(o.sweep);
  const cross = points.some((pt) => pt.mode !== 'same-thread');
  const xr = cross ? await browserCrossThreadRunner() : null;
  const env = { ...labEnvironment(), shared: cross };
  try {
    let out: LabResult | null = null;
    for (let i = 0; i < points.length; i++) {
      const pt = points[i]!;
      o.onProgress(i, points.length, pt);
      await new Promise((r) => setTimeout(r, 0)); // let the progress line paint
      const single = Object.fromEntries(Object.entries(pt).map(([k, v]) => [k, [v]])) as unknown as LabSweep;
      const r = await runLab({ sweep: single, rounds: o.rounds, chains: o.chains, env, ...(xr ? { crossThread: xr.runner } : {}) });
      if (!out) out = { ...r, sweep: o.sweep, results: [] };
      out.results.push(...r.results);
    }
    o.onProgress(points.length, points.length, null);
    return out!;
  } finally {
    xr?.close();
  }
}
