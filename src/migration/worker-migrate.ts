// Live migration between device workers (issue 9 §4): the source device lives in one device
// worker, the destination in another, both on the same shared platform memory; the guest's
// driver runs in this thread, bound through a slot, and keeps its rings (they are in the shared
// memory both workers see, so no guest RAM moves). The order is migrate()'s (QEMU's for
// vhost-vdpa): suspend the source (blk requests in flight recorded, or finished), save its state (the binary
// encoding, as over a wire), load it into the destination, re-point the guest's binding, resume
// the destination; net then announces the guest. blk storage, checked before anything stops:
//   - RAM disk on both sides: each lives in its own worker's slice of the memory, so its bytes
//     are copied while stopped (a storage migration without a dirty log);
//   - a backend on both sides, the same storage (a `{ file }` descriptor naming one file, opened
//     by each worker): nothing is copied — requests still out at the source's backend move in
//     the state and the destination sends them again to the same storage; the writes among
//     them complete there only once the source's backend has no write out (its copies landed),
//     which this waits for after the switchover (state.ts says why). With `inflight: 'drain'`
//     the source finishes them before the save instead;
//   - anything else (a RAM disk on one side and a backend on the other, two different files, a
//     backend whose storage the worker cannot name) is refused with failed_precondition and the
//     source never stops.
// Two stages, as migrate() in one thread: before the stop the source worker saves its early
// state (the control state, no ring positions) and the destination worker loads it, setting
// its queues up; inside the downtime only the delta moves (status, generation, ring
// positions), and through the devices' mailboxes — each answered from the worker's serving
// loop, with no event-loop turn on either side; the destination's worker answers the load,
// then resumes the device (re-submitting the requests that moved, serving what was queued
// during the stop) while this thread runs on: the downtime ends with that answer, and the
// report gives the resume beside it (startMs, startedMs) — unless the source must wait for a backend
// (blk writes out: the suspend goes by the channel, which waits) or its control state moved
// since the early save (the full state goes by the channel and the destination starts over).
// If the destination refuses the state, the source resumes and runs on.

import { VirtioError, Code } from '../errors.ts';
import type { RemoteVdpaDevice } from '../worker/remote-device.ts';
import type { MigStorage } from '../worker/host.ts';
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
  /**
   * Two stages: the early state moves before the stop, the delta inside the downtime through
   * the mailboxes (see the file comment). false: the whole state moves inside the downtime,
   * through the channel. @default true
   */
  early?: boolean;
  /**
   * Runs after the early state moved and before the source stops (pre-copy work of the
   * caller's goes here). If the control state changes meanwhile, the full state moves instead
   * of the delta.
   */
  round?: () => void | Promise<void>;
  /**
   * blk requests in flight at the stop, as migrate()'s option: 'record' moves them in the state
   * (the destination re-submits them to its backend over the same storage; its writes complete
   * once the source's backend is idle, which this waits for before it resolves), 'drain'
   * finishes everything before the save. @default 'record'
   */
  inflight?: 'record' | 'drain';
  /**
   * After the switchover, how long to wait for the source's backend to go idle before the
   * destination may complete the blk writes it re-submitted (see state.ts). Past it they
   * complete with IOERR at the destination's own suspendTimeoutMs (which bounds the wait anyway:
   * the default matches the devices' default). @default 1000
   */
  fenceWaitMs?: number;
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
  /** Decoding + loadState in the destination worker (with a slot and a delta, the resume too: one mailbox call). */
  loadMs: number;
  /** Copy of the blk RAM disk in the shared memory (0 for net and for a shared backend). */
  diskMs: number;
  /** Bytes of RAM disk copied (0 for net and for a shared backend). */
  diskBytes: number;
  /** blk: backend requests the source's suspend finished first (drained). */
  drained: number;
  /** blk: requests that moved in flight, re-submitted by the destination (0 with `inflight: 'drain'`). */
  recorded: number;
  /** blk: 'ram' (the RAM disk was copied) or 'backend' (shared storage, nothing copied); null for net. */
  storage: MigStorage['kind'] | null;
  /** switchover() + resume() of the destination (0 when the load's mailbox call resumed it). */
  resumeMs: number;
  /**
   * Source suspend requested → destination resumed, or (two stages, with a slot) its load
   * answered: the switchover downtime, in which the driver's thread waits. In that second
   * case the destination's worker resumes the device right after answering, while the
   * driver's thread runs on: see `startMs` and `startedMs`.
   */
  downtimeMs: number;
  /**
   * The destination's resume in its worker after it answered the load: blk requests that
   * moved in flight re-submitted to its backend, what the driver queued during the stop
   * served (0 when the resume was inside the downtime).
   */
  startMs: number;
  /**
   * Source suspend requested → destination resumed in its worker (its datapath running; =
   * downtimeMs when the resume was inside the downtime). The worker resumes while its answer
   * travels back to this thread, so this may end before or after the downtime does.
   */
  startedMs: number;
  /** Bytes of the encoded state that moved inside the downtime. */
  stateBytes: number;
  /** The early state's save + load before the stop, through the channel (0 without `early`). */
  earlyMs: number;
  /** What moved inside the downtime: the delta, or the full state. */
  moved: 'delta' | 'full';
  /** The downtime's requests went through the mailboxes only (no channel round trip). */
  mailbox: boolean;
}

/**
 * Migrates `source` (in one device worker) to `destination` (in another) on the same shared
 * platform. Resolves with the report once blk writes that moved in flight may complete (the
 * source's backend idle, bounded by `fenceWaitMs`); the source is left suspended (delete it). Rejects if the
 * source cannot be suspended, or if the destination refuses the state or the switchover
 * throws — then the source was resumed and runs on and the destination is reset. Two cases
 * leave the source suspended: the destination's worker did not answer the load within its
 * syncTimeoutMs (Cancelled) — it may still load and run the destination later; and a
 * destination that loaded the state but whose resume after the answer failed (Internal, from
 * migStarted).
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
  // Where each disk lives decides what moves; a mismatch is refused before the source stops.
  const [ss, ds] = await Promise.all([src.storage(), dst.storage()]);
  checkStorage(src.name, ss, dst.name, ds);
  const useEarly = o.early ?? true;
  const te = now();
  if (useEarly) {
    // Refused here, nothing stopped: the source runs on.
    await dst.loadEarlyState(await src.saveEarlyState());
  }
  const earlyMs = useEarly ? now() - te : 0;
  try {
    await o.round?.();
  } catch (e) {
    if (useEarly) dst.reset(); // nothing stopped: the destination forgets the early state
    throw e;
  }
  slot?.prepare(dst);
  // A device its driver suspended (SUSPEND status bit, VIRTIO 1.4 §3.4) is stopped and stays so.
  const byDriver = (src.getStatus() & VIRTIO_CONFIG_S_SUSPEND) !== 0;
  const t0 = now();
  // The same moment on the clock workers share (performance.timeOrigin + now), for startedMs.
  const t0Abs = performance.timeOrigin + performance.now();
  /** The destination resumes in its worker after answering the load (see startMs). */
  let startsLater = false;
  const forget = (): void => { if (slot?.current === src) slot.detach(dst); };
  const restart = (): void => {
    forget();
    if (!byDriver) src.resume();
  };
  const dropEarly = (): void => {
    if (!useEarly) return;
    try {
      dst.reset(); // the early state it holds is of no use now
    } catch {
      /* a dead destination holds nothing */
    }
  };
  // A mailbox call the destination's worker did not answer in time (Cancelled) may still be
  // carried out when that worker gets to it: the destination would then load and run on the
  // guest's rings. Resuming the source beside it would be two devices on one ring, so the
  // source stays suspended and the caller decides (delete the destination, or its worker,
  // first).
  const unanswered = (e: unknown): void => {
    if (!(e instanceof VirtioError) || e.code !== Code.Cancelled) return;
    forget();
    throw new VirtioError(Code.Cancelled, `${dst.name} did not answer the load in time and may still run it: ${src.name} stays suspended (delete ${dst.name}, or stop its worker, before resuming ${src.name})`, { cause: e });
  };
  let saved: { state: Uint8Array; drained?: number; recorded?: number; delta?: boolean } | null = null;
  /** The fence the destination's re-submitted writes wait for (0: none). */
  let fence = 0;
  const record = (o.inflight ?? 'record') === 'record';
  let tSusp = t0;
  let mailbox = useEarly;
  if (!byDriver) {
    try {
      let stopped = false;
      if (useEarly) {
        const r = src.suspendAndSaveSync({ record });
        if (!r.wouldBlock) {
          stopped = true;
          tSusp = t0 + r.suspendMs;
          if (!r.full) saved = r;
        }
      }
      if (!stopped) {
        // blk with requests out at its backend that it must finish (or no early state): the
        // channel waits for them.
        mailbox = false;
        const r = await src.suspendAndSave({ delta: useEarly, record });
        saved = r;
        const trip = now() - t0 - r.suspendMs - r.saveMs;
        tSusp = t0 + r.suspendMs + trip / 2;
      }
    } catch (e) {
      dropEarly();
      forget(); // not suspended, or resumed by the worker after a failed save: it runs on
      throw e;
    }
  } else {
    tSusp = now();
  }
  if (!saved) {
    // Suspended, and the full state is needed (driver-suspended, or the control state moved).
    mailbox = false;
    try {
      saved = await src.saveState({ delta: useEarly });
    } catch (e) {
      dropEarly();
      restart();
      throw e;
    }
  }
  const tSave = now();
  let diskBytes = 0;
  let diskMs = 0;
  let loadMs = 0;
  const copyDisk = (): void => {
    const t = now();
    if (ss?.kind === 'ram' && ds?.kind === 'ram') {
      p.u8.copyWithin(ds.addr, ss.addr, ss.addr + ss.bytes);
      diskBytes = ss.bytes;
    }
    diskMs = now() - t;
  };
  if (saved.delta && slot && !byDriver) {
    // One mailbox call loads the delta and resumes: the disk is copied first (the source is
    // stopped, the destination not yet serving) and the slot switched before it — nothing in
    // this thread runs between the switch and the call, so no kick can go astray.
    copyDisk();
    slot.switchTo(dst, { keepOld: true });
    const tl = now();
    try {
      fence = dst.loadStateSync(saved.state, { resume: true }).fence;
      startsLater = true;
    } catch (e) {
      slot.switchTo(src, { keepOld: true });
      unanswered(e);
      dropEarly();
      restart(); // the destination refused (and changed nothing): the source runs on
      throw e;
    }
    loadMs = now() - tl;
  } else {
    const tl = now();
    try {
      if (saved.delta) fence = dst.loadStateSync(saved.state).fence;
      else fence = (await dst.loadState(saved.state)).fence;
    } catch (e) {
      if (saved.delta) unanswered(e);
      dropEarly();
      restart(); // the destination refused (and changed nothing): the source runs on
      throw e;
    }
    loadMs = now() - tl;
    // A full state after an early one reset the destination first, and a reset clears queue
    // callbacks (as Linux's vdpasim_do_reset does): the slot installs them again.
    if (slot && useEarly && !saved.delta) slot.prepare(dst);
    const undo = (e: unknown): never => {
      try {
        dst.reset();
      } catch {
        /* a dead destination has nothing to forget */
      }
      restart();
      throw e;
    };
    copyDisk();
    try {
      if (slot) slot.switchTo(dst, { keepOld: true });
      else o.switchover?.(dst);
    } catch (e) {
      if (slot?.current === dst) slot.switchTo(src, { keepOld: true });
      undo(e);
    }
    if (!byDriver) dst.resume(); // else the driver resumes it with DRIVER_OK
  }
  const tRes = now();
  slot?.detach(src); // after the downtime: the suspended source rings nothing anyway
  // A call the source rang before it stopped may have been polled here after the driver's
  // callbacks left it (lost): one spurious interrupt lets the driver see what the used ring holds.
  dst.callAll();
  let startMs = 0;
  let startedMs = tRes - t0;
  if (startsLater) {
    const st = await dst.migStarted();
    if (st === null) throw new VirtioError(Code.Internal, `${dst.name} has no record of its resume after the load`);
    // Asked before the fence wait, so a failure shows at once. Left suspended: the state is
    // loaded and the source stopped, so the caller decides (reset both, or resume the source)
    // — as after an unanswered load.
    if (st.error !== null) throw new VirtioError(Code.Internal, `${dst.name} loaded the state but did not resume: ${st.error}; ${src.name} stays suspended`);
    startMs = st.ms;
    startedMs = st.at - t0Abs;
  }
  // Writes the destination re-submitted complete once the source's copies have landed: wait
  // (bounded) for the source's backend, then release them. Past the bound, or if the source's
  // worker is gone, the destination's own timeout completes them with IOERR.
  if (fence !== 0) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = await Promise.race([
      src.writesIdle().then(() => true, () => false),
      new Promise<boolean>((r) => { timer = setTimeout(() => r(false), o.fenceWaitMs ?? 1000); }),
    ]);
    clearTimeout(timer);
    if (idle) await dst.releaseFence(fence).catch(() => {});
  }
  if (o.announce ?? true) await dst.announce();
  return {
    suspendMs: tSusp - t0, saveMs: tSave - tSusp, loadMs, diskMs, diskBytes,
    resumeMs: tRes - tSave - loadMs - diskMs, downtimeMs: tRes - t0, startMs, startedMs, stateBytes: saved.state.length, drained: saved.drained ?? 0, recorded: saved.recorded ?? 0, storage: ss?.kind ?? null,
    earlyMs, moved: saved.delta ? 'delta' : 'full', mailbox,
  };
}

/** Throws VirtioError(FailedPrecondition) unless the two disks can migrate: see the file comment. */
function checkStorage(sn: string, s: MigStorage | null, dn: string, d: MigStorage | null): void {
  const what = (x: MigStorage | null): string => (x === null ? 'no disk' : x.kind === 'ram' ? `a RAM disk of ${x.bytes} bytes` : `a backend (${x.storage ?? 'storage unknown'})`);
  const refuse = (why: string): never => {
    throw new VirtioError(Code.FailedPrecondition, `${sn} has ${what(s)}, ${dn} ${what(d)}: ${why}`);
  };
  if (s === null && d === null) return;
  if (s === null || d === null) refuse('not the same device class');
  if (s!.kind !== d!.kind) refuse('a RAM disk is copied and a backend is shared storage, so both sides need the same kind');
  if (s!.kind === 'ram') {
    if (s!.bytes !== (d as { bytes: number }).bytes) refuse('RAM disks of different sizes');
    return;
  }
  const a = (s as { storage: string | null }).storage;
  const b = (d as { storage: string | null }).storage;
  if (a === null || b === null) refuse('a backend is not copied, and one the worker did not open from a descriptor cannot be shown to be shared');
  if (a !== b) refuse('a backend is not copied: both must open the same storage');
}
