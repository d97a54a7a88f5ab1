// Node helper for "the device in a worker": starts a worker_threads device worker (host.ts) on
// a shared platform and connects a RemoteVdpaBus to it. Under tsx (running the .ts sources) the
// worker loads the sources through tsx's loader (an eval bootstrap that registers tsx/esm/api,
// as src/lab/node-runner.ts does: Node 20 workers do not inherit --import tsx); from dist/ it
// runs the compiled JavaScript.

import { Worker } from 'node:worker_threads';
import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import { RemoteVdpaBus, type RemoteVdpaBusOptions } from './remote-device.ts';

/** Options of {@link spawnDeviceWorker}. */
export interface SpawnDeviceWorkerOptions extends RemoteVdpaBusOptions {
  /** The shared platform the devices run on (Platform.create({ shared: true })). */
  platform: Platform;
}

/** A running device worker. */
export interface DeviceWorker {
  /** The management requests and device handles of the worker's bus. */
  bus: RemoteVdpaBus;
  /** The worker thread. */
  worker: Worker;
  /** Closes the channel and terminates the worker. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts a worker_threads Worker on module `rel` (a path like './node-device-worker', resolved
 * next to `base`, with .ts under tsx and .js from dist). `workerData` reaches the module as
 * worker_threads' `workerData` (a custom device worker entry's configuration, say).
 */
export function startModuleWorker(base: string, rel: string, workerData?: unknown): Worker {
  const self = new URL(base);
  const ts = self.pathname.endsWith('.ts');
  const entry = new URL(`${rel}${ts ? '.ts' : '.js'}`, self);
  if (ts) {
    const tsx = import.meta.resolve('tsx/esm/api');
    return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`, { eval: true, workerData });
  }
  return new Worker(entry, { workerData });
}

/** Starts a device worker thread; resolves once its bus is attached to `opts.platform`. */
export async function spawnDeviceWorker(opts: SpawnDeviceWorkerOptions): Promise<DeviceWorker> {
  if (!opts.platform?.shared) throw new VirtioError(Code.InvalidArgument, 'spawnDeviceWorker needs a shared platform (Platform.create({ shared: true }))');
  const worker = startModuleWorker(import.meta.url, './node-device-worker');
  let bus: RemoteVdpaBus;
  try {
    bus = await RemoteVdpaBus.connect(worker, opts.platform, opts);
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  let closing: Promise<void> | null = null;
  return {
    bus,
    worker,
    close() {
      closing ??= (async () => {
        bus.close();
        await worker.terminate();
      })();
      return closing;
    },
  };
}
