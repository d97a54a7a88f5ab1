// Node helper for the minimal VMM (issue 8 §3): three threads on one shared platform — this one
// (the VMM: control plane), a device worker (src/worker/host.ts) and a guest worker
// (src/vmm/guest.ts) whose RAM is a slice of the platform RAM at a non-zero offset.

import type { Worker } from 'node:worker_threads';
import { VirtioError, Code } from '../errors.ts';
import { Platform } from '../platform/platform.ts';
import { Channel } from '../worker/channel.ts';
import { spawnDeviceWorker, startModuleWorker, type DeviceWorker } from '../worker/node.ts';
import { Vmm, type GuestRam } from './vmm.ts';

/** Options of {@link startVmm}. */
export interface StartVmmOptions {
  /** Bytes of guest RAM. @default 16 MiB */
  guestRamSize?: number;
}

/** The guest worker of a {@link VmmSession}. */
export interface GuestWorker {
  /** The worker thread. */
  worker: Worker;
  /** Its channel (requests: queues, doorbells, net, blk, counters). */
  channel: Channel;
  /** Where its RAM is. */
  ram: GuestRam;
}

/** A running VMM with its two workers. */
export interface VmmSession {
  /** The VMM (control plane, this thread). */
  vmm: Vmm;
  /** The shared platform. */
  platform: Platform;
  /** The device worker. */
  devices: DeviceWorker;
  /** The guest worker and its channel. */
  guest: GuestWorker;
  /** Closes the nodes and terminates both workers. */
  close(): Promise<void>;
}

/** Starts the platform, the device worker and the guest worker, and gives the guest its RAM. */
export async function startVmm(opts: StartVmmOptions = {}): Promise<VmmSession> {
  const guestRamSize = opts.guestRamSize ?? 16 << 20;
  const platform = Platform.create({ shared: true, ramSize: guestRamSize + (32 << 20), privateSize: 16 << 20 });
  // The device worker's slices first, so the guest's RAM does not start at the RAM's base.
  const devices = await spawnDeviceWorker({ platform });
  const worker = startModuleWorker(import.meta.url, './node-guest-worker');
  const channel = new Channel(worker, { name: 'guest worker' });
  try {
    const ram = (await channel.request('attach', platform.handle({ priv: 2 << 20, ram: guestRamSize }))) as GuestRam;
    if (ram.gpaBase === 0) throw new VirtioError(Code.Internal, 'guest RAM landed at offset 0');
    const vmm = new Vmm(platform, devices.bus, channel, ram);
    return {
      vmm, platform, devices, guest: { worker, channel, ram },
      async close() {
        await vmm.close().catch(() => {});
        channel.close();
        await Promise.all([worker.terminate(), devices.close()]);
      },
    };
  } catch (e) {
    channel.close();
    await Promise.all([worker.terminate(), devices.close()]);
    throw e;
  }
}
