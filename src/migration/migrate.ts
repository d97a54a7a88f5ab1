// Live migration of one device in one thread (DESIGN.md "Live migration"), the order QEMU
// follows for vhost-vdpa: pre-copy of guest RAM with the dirty log while the device runs,
// iterated until the dirty set is small; stop-and-copy (suspend the source with blk requests in
// flight recorded — or finished —, copy the last dirty pages, save the device state); load it into the
// destination, switch the guest's binding, resume; for net, ask the driver to announce itself.
// Every phase is timed. If the destination refuses the state, the source resumes and keeps
// running: an interrupted migration loses nothing.

import { VirtioError, Code } from '../errors.ts';
import { DirtyLog, VHOST_LOG_PAGE } from './dirty-log.ts';
import {
  saveState, loadState, encodeState, saveEarlyState, loadEarlyState, saveStateDelta, saveStateDeltaBytes, decodeStateDelta,
  type DeviceState, type DeviceStateDelta, type EarlyState, type MigratableDevice,
} from './state.ts';
import { VdpaSimNet } from '../devices/net.ts';
import { VdpaSimBlk } from '../devices/blk.ts';

/** Options of {@link migrate}. */
export interface MigrateOptions<T extends MigratableDevice> {
  /** The running source device. */
  source: T;
  /** A fresh device of the same management device (status 0). */
  destination: T;
  /**
   * Guest RAM to copy with the dirty log: the source platform's bytes [base, base + size) go
   * to `to` (size bytes; e.g. the same range of the destination platform's memory). Omit when
   * both devices see the same memory (a shared memory, or one platform).
   */
  ram?: {
    /** The destination's copy of guest RAM (`size` bytes). */
    to: Uint8Array;
    /** Memory offset of guest RAM on the source. @default the source platform's RAM base */
    base?: number;
    /** Bytes of guest RAM. @default the source platform's RAM size */
    size?: number;
  };
  /** Pre-copy stops when a round finds at most this many dirty pages. @default 16 */
  maxDirtyPages?: number;
  /** Pre-copy rounds at most (after the full copy). @default 8 */
  maxRounds?: number;
  /** Runs between pre-copy rounds while the device keeps running (the workload goes on here). */
  round?: () => void | Promise<void>;
  /**
   * Called once the destination holds the state, before it resumes: re-point the guest's
   * binding (a {@link DeviceSlot}), move a switch port, and so on. (`slot.switchTo(d)` installs
   * the driver's callbacks; a slot *prepared* for the destination before migrate() would lose
   * them if the destination is reset on the way — an early state re-sent, or the full state
   * after one — so prepare here, or not at all.)
   */
  switchover?: (destination: T) => void;
  /** net: raise VIRTIO_NET_S_ANNOUNCE on the destination after resume (with GUEST_ANNOUNCE). @default true */
  announce?: boolean;
  /**
   * Two-stage state: once pre-copy is done and while the source still runs, its control state
   * (features, config, maps, queue setup, net control-queue state) is loaded into the
   * destination, which sets its queues up then; at the stop only a delta moves (status, config
   * generation, ring positions), unless the control state changed in between, in which case
   * the destination is reset and takes the full state inside the downtime. QEMU does the
   * same for a vhost-vdpa destination (its control-queue state is replayed before the data
   * queues are enabled). false: the whole state moves inside the downtime. @default true
   */
  early?: boolean;
  /**
   * blk requests in flight at the stop. 'record': requests still out at the source's backend
   * stay there and move in the state, and the destination re-submits them (the source's late
   * answers are dropped); a re-submitted write completes once the source's backend is idle
   * (see state.ts). 'drain': every request is finished before the save. A source its driver
   * suspended (SUSPEND) has drained already. @default 'record'
   */
  inflight?: 'record' | 'drain';
  /** Use the binary encoding between source and destination (as over a wire). @default true */
  binary?: boolean;
  /** Clock in ms. @default performance.now */
  now?: () => number;
}

/** What {@link migrate} did, phase by phase (times in ms). */
export interface MigrationReport {
  /** Pre-copy: the full copy and the rounds after it, and the early state's save + load. */
  precopyMs: number;
  /** Of precopyMs: the early state saved on the source and loaded into the destination (0 without `early`). */
  earlyMs: number;
  /** Early states sent: 1, plus 1 for each time the control state changed during pre-copy (0 without `early`). */
  earlySends: number;
  /** Pages copied: the full copy first, then each round. */
  pagesPerRound: number[];
  /** Suspend requested → source suspended with nothing in flight that the state cannot carry. */
  suspendMs: number;
  /** blk requests that moved in flight, re-submitted by the destination (0 with `inflight: 'drain'`). */
  recorded: number;
  /**
   * Of those, writes, flushes, discards and write-zeroes: the destination completes them once
   * the source's backend is idle (VdpaSimBlk.releaseFence, called here when it is).
   */
  recordedWrites: number;
  /** Copy of the pages dirtied since the last round (inside the downtime). */
  lastPagesMs: number;
  /** Pages copied while stopped. */
  lastPages: number;
  /** saveState + encoding. */
  saveMs: number;
  /** Decoding + loadState on the destination. */
  loadMs: number;
  /** switchover() + resume() of the destination (which serves what the driver queued meanwhile). */
  resumeMs: number;
  /** Source suspend requested → destination resumed and serving: the switchover downtime. */
  downtimeMs: number;
  /** Bytes of the encoded state that moved inside the downtime (the delta's, or the full state's). */
  stateBytes: number;
  /** The control state that moved: the early state, or the full state if it moved inside the downtime. */
  state: DeviceState;
  /** The delta that moved inside the downtime, or null if the full state did. */
  delta: DeviceStateDelta | null;
}

/**
 * Migrates `source` to `destination`. Resolves with the report; the source is left suspended
 * (delete it). Rejects if the source cannot be suspended (it then needs a reset) or if the
 * destination refuses the state — in that case the source was resumed and runs on, and the
 * destination is left fresh.
 */
export async function migrate<T extends MigratableDevice>(o: MigrateOptions<T>): Promise<MigrationReport> {
  const now = o.now ?? (() => performance.now());
  const src = o.source;
  const dst = o.destination;
  if (src === dst) throw new VirtioError(Code.InvalidArgument, 'source and destination are the same device');
  let log: DirtyLog | null = null;
  const copy = (pages: readonly number[]): void => {
    const u8 = src.platform.u8;
    const to = o.ram!.to;
    const base = log!.base;
    for (const p of pages) {
      const off = p * VHOST_LOG_PAGE;
      to.set(u8.subarray(base + off, base + off + VHOST_LOG_PAGE), off);
    }
  };
  const t0 = now();
  const pagesPerRound: number[] = [];
  const binary = o.binary ?? true;
  let early: EarlyState | null = null;
  let earlySends = 0;
  let earlyMs = 0;
  let precopyDone = false;
  /** The destination holds something of ours (an early state): only then is it ours to reset. */
  let dstHolds = false;
  // The destination refusing an early state costs nothing: the source was never stopped.
  const sendEarly = (): void => {
    const te = now();
    if (dstHolds) dst.reset();
    dstHolds = false;
    early = saveEarlyState(src);
    loadEarlyState(dst, binary ? early.bytes : early.state);
    dstHolds = true;
    earlySends++;
    earlyMs += now() - te;
  };
  try {
    if (o.ram) {
      log = new DirtyLog(src.platform, { base: o.ram.base, size: o.ram.size });
      if (o.ram.to.length < log.pages * VHOST_LOG_PAGE) throw new VirtioError(Code.InvalidArgument, `ram.to has ${o.ram.to.length} bytes, the log covers ${log.pages * VHOST_LOG_PAGE}`);
      // Log first, then copy everything: a page written during the copy is dirty for round 1.
      log.start();
      o.ram.to.set(src.platform.u8.subarray(log.base, log.base + log.pages * VHOST_LOG_PAGE));
      pagesPerRound.push(log.pages);
      if (o.early ?? true) sendEarly();
      const maxRounds = o.maxRounds ?? 8;
      const small = o.maxDirtyPages ?? 16;
      for (let r = 0; r < maxRounds; r++) {
        await o.round?.();
        const dirty = log.collect();
        copy(dirty);
        pagesPerRound.push(dirty.length);
        if (dirty.length <= small) break;
      }
    } else {
      if (o.early ?? true) sendEarly();
      await o.round?.();
    }
    // The driver changed the control state during pre-copy (a control-queue command, say):
    // the early state goes again, still outside the downtime.
    if (early && !src.controlStateUnchanged((early as EarlyState).mark)) sendEarly();
    precopyDone = true;
    const tPre = now();
    // Stop: blk requests in flight move in the state (or, with 'drain', finish and reach the
    // used ring, in guest RAM). A device its driver suspended (SUSPEND status bit) is already stopped and stays so.
    const byDriver = src.isSuspended;
    if (!byDriver) await src.suspendDrained({ record: (o.inflight ?? 'record') === 'record' });
    const restart = (): void => { if (!byDriver) src.resume(); };
    const tSusp = now();
    let lastPages = 0;
    if (log) {
      const dirty = log.collect();
      copy(dirty);
      lastPages = dirty.length;
    }
    const tCopy = now();
    let state: DeviceState;
    let delta: DeviceStateDelta | null = null;
    let wire: Uint8Array | null = null;
    let deltaWire = false;
    try {
      // Binary: the delta is encoded straight from the device (no JSON view inside the window).
      if (early && binary) {
        wire = saveStateDeltaBytes(src, early);
        deltaWire = wire !== null;
      } else delta = early ? saveStateDelta(src, early) : null;
      if (delta || deltaWire) {
        state = early!.state;
      } else {
        state = saveState(src);
        if (binary) wire = encodeState(state);
      }
    } catch (e) {
      if (dstHolds) dst.reset();
      restart();
      throw e;
    }
    const tSave = now();
    // blk requests the state carries (what the save just wrote).
    const recorded = src instanceof VdpaSimBlk ? src.lastSavedRequests.all : 0;
    const recordedWrites = src instanceof VdpaSimBlk ? src.lastSavedRequests.writes : 0;
    try {
      // The control state moved after the early save: the destination starts over.
      if (dstHolds && !delta && !deltaWire) dst.reset();
      loadState(dst, wire ?? delta ?? state);
    } catch (e) {
      // The destination refused (a full load changes nothing on error; a delta leaves the early
      // state, which it forgets): the source runs on, as if nothing happened. A destination
      // that was never ours (not fresh) is not touched.
      if (dstHolds) dst.reset();
      restart();
      throw e;
    }
    const tLoad = now();
    try {
      o.switchover?.(dst);
    } catch (e) {
      // The caller could not switch: the destination forgets the state, the source runs on.
      dst.reset();
      restart();
      throw e;
    }
    if (!byDriver) dst.resume(); // else the driver resumes it with DRIVER_OK (VIRTIO 1.4 §3.4)
    const tRes = now();
    // The writes the destination re-submitted complete once the source's copies have landed:
    // when its backend is idle (it keeps counting after a reset or destroy()).
    if (recorded > 0) {
      const d = dst as VdpaSimBlk;
      const fence = d.fenceId;
      void (src as VdpaSimBlk).writesIdle().then(() => d.releaseFence(fence));
    }
    if ((o.announce ?? true) && dst instanceof VdpaSimNet) dst.announce();
    const report: MigrationReport = {
      precopyMs: tPre - t0, earlyMs, earlySends, pagesPerRound, suspendMs: tSusp - tPre, lastPagesMs: tCopy - tSusp, lastPages,
      saveMs: tSave - tCopy, loadMs: tLoad - tSave, resumeMs: tRes - tLoad, downtimeMs: tRes - tPre,
      stateBytes: wire?.length ?? 0, state, delta, recorded, recordedWrites,
    };
    // The delta's JSON view, made only if the caller reads it (never inside the window).
    if (deltaWire) {
      const bytes = wire!;
      let view: DeviceStateDelta | null = null;
      Object.defineProperty(report, 'delta', { enumerable: true, configurable: true, get: () => (view ??= decodeStateDelta(bytes)) });
    }
    return report;
  } catch (e) {
    // Interrupted during pre-copy (a round threw, the destination refused the early state):
    // the source never stopped; the destination forgets what it was given.
    if (!precopyDone && dstHolds) dst.reset();
    throw e;
  } finally {
    log?.destroy();
  }
}
