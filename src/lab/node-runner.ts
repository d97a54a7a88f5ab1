// The ring lab's cross-thread runner for Node: two worker_threads (driver, device) on one shared
// platform, reused across points. Under tsx (running the .ts sources) the workers load the
// sources through tsx's loader; from dist/ they run the compiled JavaScript.

import { Worker } from 'node:worker_threads';
import { cpus, loadavg } from 'node:os';
import { VirtioError, Code } from '../errors.ts';
import { Platform } from '../platform/platform.ts';
import type { CrossThreadRunner, LabEnvironment } from './lab.ts';
import { labEnvironment } from './lab.ts';
import type { XMessage } from './xthread-worker.ts';
import { pairRunner, type LabReply } from './pair-runner.ts';

type Reply = LabReply;

/** One lab worker and its ordered request/response. */
class LabWorker {
  private readonly w: Worker;
  private readonly waiting: ((r: Reply) => void)[] = [];
  private dead: Error | null = null;

  constructor() {
    const self = new URL(import.meta.url);
    const ts = self.pathname.endsWith('.ts');
    const entry = new URL(ts ? './node-worker.ts' : './node-worker.js', self);
    if (ts) {
      const tsx = import.meta.resolve('tsx/esm/api');
      this.w = new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`, { eval: true });
    } else {
      this.w = new Worker(entry);
    }
    this.w.on('message', (r: Reply) => this.waiting.shift()?.(r));
    const fail = (e: Error) => {
      this.dead = e;
      for (const f of this.waiting.splice(0)) f({ ok: false, error: e.message });
    };
    this.w.on('error', fail);
    this.w.on('exit', (c) => fail(new Error(`lab worker exited (${c})`)));
  }

  ask(m: XMessage): Promise<Reply> {
    if (this.dead) return Promise.reject(new VirtioError(Code.Cancelled, `lab worker is gone: ${this.dead.message}`));
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.push((r) => (r.ok ? resolve(r) : reject(new VirtioError(Code.Internal, `lab worker: ${r.error}`))));
      this.w.postMessage(m);
    });
  }

  terminate(): Promise<number> {
    return this.w.terminate();
  }
}

/** A cross-thread runner and how to stop its workers. */
export interface NodeLabRunner {
  /** Give it to runLab({ crossThread }). */
  runner: CrossThreadRunner;
  /** Terminates the workers. */
  close(): Promise<void>;
}

/** Starts the two lab workers (driver and device) on a shared platform. */
export async function nodeCrossThreadRunner(): Promise<NodeLabRunner> {
  const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const ctl = p.priv.alloc(8, 8);
  const drvW = new LabWorker();
  const devW = new LabWorker();
  try {
    await drvW.ask({ op: 'attach', handle: p.handle({ priv: 4 << 20, ram: 40 << 20 }) });
    await devW.ask({ op: 'attach', handle: p.handle({ priv: 4 << 20, ram: 4 << 20 }) });
  } catch (e) {
    await Promise.all([drvW.terminate(), devW.terminate()]);
    throw e;
  }
  const runner = pairRunner(p, ctl, drvW, devW);
  return {
    runner,
    async close() {
      await Promise.all([drvW.terminate(), devW.terminate()]);
    },
  };
}

/** The environment with what Node knows (CPU model, load). */
export function nodeLabEnvironment(): LabEnvironment {
  const c = cpus();
  return { ...labEnvironment(), cpu: c[0]?.model.trim() ?? 'unknown', cpus: c.length, load: loadavg()[0] ?? -1 };
}
