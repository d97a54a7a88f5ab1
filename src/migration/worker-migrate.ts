// Live migration between device workers (issue 9 §4): the source device lives in one device
// worker, the destination in another, both on the same shared platform memory; the guest's
// driver runs in this thread, bound through a slot, and keeps its rings (they are in the shared
// memory both workers see, so no guest RAM moves). The order is migrate()'s (QEMU's for
// vhost-vdpa): suspend the source with requests in flight finished, save its state (the binary
// encoding, as over a wire), load it into the destination, re-point the guest's binding, resume
// the destination; net then announces the guest. A blk RAM disk lives in its own worker's slice
// of the memory, so its bytes are copied while stopped (a storage migration without a dirty log;
// shared storage would skip it). If the destination refuses, the source resumes and runs on.

import { VirtioError, Code } from '../errors.ts';
import type { RemoteVdpaDevice } from '../worker/remote-device.ts';
import type { MigDisk } from '../worker/host.ts';
import type { VdpaSlot } from './slot.ts';
import { VIRTIO_CONFIG_S_SUSPEND } from '../virtio/constants.ts';

/** Options of {@link migrateBetweenWorkers}. */
export interface WorkerMigrateOptions {
  /** The running source, opened from its device worker. */
  source: RemoteVdpaDevice;
  /** A fresh device of the same management device in another worker on the same platform (status 0). */
  destination: RemoteVdpaDevice;
  /** Called once the destination holds the state, before it resumes: re-point the guest's binding. */
  switchover?: (destination: RemoteVdpaDevice) => void;
  /**
   * The slot the guest's driver is bound through (instead of `switchover`): its callbacks are
   * installed on the destination before the source stops and cleared from the source after the
   * destination resumed, so the downtime holds no per-queue call between threads.
   */
  slot?: VdpaSlot<RemoteVdpaDevice>;
  /** net: raise VIRTIO_NET_S_ANNOUNCE on the destination after resume (with GUEST_ANNOUNCE). @default true */
  announce?: boolean;
  /** Clock in ms. @default performance.now */
  now?: () => number;
}

/** What {@link migrateBetweenWorkers} did, phase by phase (times in ms). */
export interface WorkerMigrationReport {
  /**
   * Suspend requested → source suspended with nothing in flight (one request suspends and
   * saves: the worker's suspend time plus half the request's round trip).
   */
  suspendMs: number;
  /** saveState + encoding in the source worker, plus half the round trip (the bytes' way here). */
  saveMs: number;
  /** Decoding + loadState in the destination worker. */
  loadMs: number;
  /** Copy of the blk RAM disk in the shared memory (0 for net). */
  diskMs: number;
  /** Bytes of RAM disk copied. */
  diskBytes: number;
  /** switchover() + resume() of the destination. */
  resumeMs: number;
  /** Source suspend requested → destination resumed: the switchover downtime. */
  downtimeMs: number;
  /** Bytes of the encoded state. */
  stateBytes: number;
}

/**
 * Migrates `source` (in one device worker) to `destination` (in another) on the same shared
 * platform. Resolves with the report; the source is left suspended (delete it). Rejects if the
 * source cannot be suspended, or if the destination refuses the state or the switchover
 * throws — then the source was resumed and runs on and the destination is reset.
 */
export async function migrateBetweenWorkers(o: WorkerMigrateOptions): Promise<WorkerMigrationReport> {
  const now = o.now ?? (() => performance.now());
  const src = o.source;
  const dst = o.destination;
  if (src === dst) throw new VirtioError(Code.InvalidArgument, 'source and destination are the same device');
  const p = src.remoteBus.platform;
  if (dst.remoteBus.platform.memory !== p.memory) throw new VirtioError(Code.InvalidArgument, 'source and destination workers must share one platform memory');
  if (src.getDeviceId() !== dst.getDeviceId()) throw new VirtioError(Code.FailedPrecondition, `${src.name} is device id ${src.getDeviceId()}, ${dst.name} ${dst.getDeviceId()}`);
  const slot = o.slot;
  if (slot && o.switchover) throw new VirtioError(Code.InvalidArgument, 'give either a slot or a switchover, not both');
  if (slot && slot.current !== src) throw new VirtioError(Code.InvalidArgument, `the slot is bound to ${slot.current.name}, not the source ${src.name}`);
  slot?.prepare(dst);
  // A device its driver suspended (SUSPEND status bit, VIRTIO 1.4 §3.4) is stopped and stays so.
  const byDriver = (src.getStatus() & VIRTIO_CONFIG_S_SUSPEND) !== 0;
  const t0 = now();
  const forget = (): void => { if (slot?.current === src) slot.detach(dst); };
  const restart = (): void => {
    forget();
    if (!byDriver) src.resume();
  };
  let saved: { state: Uint8Array; disk: MigDisk | null };
  let tSusp: number;
  if (!byDriver) {
    // Suspend and save in one request to the source worker: the split is the worker's clock.
    let r: Awaited<ReturnType<RemoteVdpaDevice['suspendAndSave']>>;
    try {
      r = await src.suspendAndSave();
    } catch (e) {
      forget(); // not suspended, or resumed by the worker after a failed save: it runs on
      throw e;
    }
    saved = r;
    const trip = now() - t0 - r.suspendMs - r.saveMs;
    tSusp = t0 + r.suspendMs + trip / 2;
  } else {
    tSusp = now();
    try {
      saved = await src.saveState();
    } catch (e) {
      restart();
      throw e;
    }
  }
  const tSave = now();
  let loaded: Awaited<ReturnType<RemoteVdpaDevice['loadState']>>;
  try {
    loaded = await dst.loadState(saved.state);
  } catch (e) {
    restart(); // the destination refused (and changed nothing): the source runs on
    throw e;
  }
  const tLoad = now();
  let diskBytes = 0;
  const undo = (e: unknown): never => {
    try {
      dst.reset();
    } catch {
      /* a dead destination has nothing to forget */
    }
    restart();
    throw e;
  };
  if (saved.disk || loaded.disk) {
    if (!saved.disk || !loaded.disk || saved.disk.bytes !== loaded.disk.bytes) {
      undo(new VirtioError(Code.FailedPrecondition, `${src.name} and ${dst.name}: both need a RAM disk of the same size (a backend is not copied)`));
    }
    p.u8.copyWithin(loaded.disk!.addr, saved.disk!.addr, saved.disk!.addr + saved.disk!.bytes);
    diskBytes = saved.disk!.bytes;
  }
  const tDisk = now();
  try {
    if (slot) slot.switchTo(dst, { keepOld: true });
    else o.switchover?.(dst);
  } catch (e) {
    if (slot?.current === dst) slot.switchTo(src, { keepOld: true });
    undo(e);
  }
  if (!byDriver) dst.resume(); // else the driver resumes it with DRIVER_OK
  const tRes = now();
  slot?.detach(src); // after the downtime: the suspended source rings nothing anyway
  if (o.announce ?? true) await dst.announce();
  return {
    suspendMs: tSusp - t0, saveMs: tSave - tSusp, loadMs: tLoad - tSave, diskMs: tDisk - tLoad, diskBytes,
    resumeMs: tRes - tDisk, downtimeMs: tRes - t0, stateBytes: saved.state.length,
  };
}
