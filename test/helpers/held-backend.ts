// Device workers whose blk disks answer only when told (./held-backend-worker.ts), for the
// migration suites that need requests out at a backend at the moment of a suspend.
import type { Platform } from '../../src/index.ts';
import { startModuleWorker } from '../../src/worker/node.ts';
import { RemoteVdpaBus, type RemoteVdpaDevice } from '../../src/worker/remote-device.ts';
import type { PortLike } from '../../src/worker/channel.ts';

/** A held-backend device worker and its bus. */
export interface HeldWorker {
  worker: ReturnType<typeof startModuleWorker>;
  bus: RemoteVdpaBus;
}

/** Starts `n` held-backend device workers on platform `p`. */
export async function spawnHeldWorkers(p: Platform, n = 2): Promise<HeldWorker[]> {
  const out: HeldWorker[] = [];
  for (let i = 0; i < n; i++) {
    const worker = startModuleWorker(import.meta.url, './held-backend-worker');
    out.push({ worker, bus: await RemoteVdpaBus.connect(worker as unknown as PortLike, p) });
  }
  return out;
}

/** A blk device named `name` over the held disk "disk" in worker `w`, opened. */
export async function heldBlk(w: HeldWorker, name: string): Promise<RemoteVdpaDevice> {
  await w.bus.devAdd('vdpasim_blk', name, { backend: { file: 'disk' } });
  return w.bus.openDevice(name);
}

/** Closes their buses and ends the workers. */
export async function stopHeldWorkers(w: HeldWorker[]): Promise<void> {
  for (const x of w) {
    x.bus.close();
    await x.worker.terminate();
  }
}
