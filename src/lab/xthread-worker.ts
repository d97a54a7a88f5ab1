// The ring lab's cross-thread side: one of two workers (the driver or the device) on a shared
// platform, with doorbells (src/worker/doorbell.ts) for kicks and calls. The modes:
//   poll      both sides spin on the ring; kicks and calls are suppressed (disableKick/disableCb),
//   wait      an idle side arms notifications and sleeps at once (Atomics.wait on its waker),
//   adaptive  an idle side spins `spinUs`, then arms and sleeps.
// Batch 1 runs ping-pong (one chain in flight) and records each round trip; larger batches keep
// the ring full. Messages come from src/lab/node-runner.ts (or a page's runner) over the port.

import { Platform, type PlatformHandle } from '../platform/platform.ts';
import { DriverQueue } from '../ring/driver-queue.ts';
import { DeviceQueue } from '../ring/device-queue.ts';
import { ringFeatures } from '../ring/queue-base.ts';
import { Doorbell, DoorbellWaiter, type DoorbellHandle } from '../worker/doorbell.ts';
import type { VqAddresses } from '../ring/driver-queue.ts';
import type { LabPoint } from './sweep.ts';
import type { LabRun } from './same-thread.ts';

/** Control words the runner allocates: [stop, calls]. */
export interface XControl {
  /** Memory offset of two i32: stop flag, device call count. */
  addr: number;
}

/** Messages a lab worker understands. */
export type XMessage =
  | {
    /** Attach to the runner's platform. */
    op: 'attach';
    /** The platform to attach ({@link Platform.attach}). */
    handle: PlatformHandle;
  }
  | {
    /** Make the driver side of a point. */
    op: 'driver-setup';
    /** The point measured. */
    pt: LabPoint;
    /** The runner's control words. */
    ctl: XControl;
  }
  | {
    /** Make the device side of a point over the driver's rings. */
    op: 'device-setup';
    /** The point measured. */
    pt: LabPoint;
    /** The runner's control words. */
    ctl: XControl;
    /** Ring addresses the driver side reported. */
    addresses: VqAddresses;
    /** The driver's kick doorbell. */
    kick: DoorbellHandle;
  }
  | {
    /** Give the driver the device's call doorbell. */
    op: 'driver-call';
    /** The device's call doorbell. */
    call: DoorbellHandle;
  }
  | {
    /** Serve the rings until the stop word is set. */
    op: 'device-run';
    /** Microseconds an idle device spins before it sleeps. */
    spinUs: number;
  }
  | {
    /** Drive `rounds` rounds of `chains` chains, timing them. */
    op: 'driver-run';
    /** Chains per round. */
    chains: number;
    /** Rounds. */
    rounds: number;
    /** Microseconds an idle driver spins before it sleeps. */
    spinUs: number;
  }
  | {
    /** Free everything this worker made. */
    op: 'teardown';
  };

/** Anything with postMessage/onmessage (a worker_threads parentPort, a Web Worker's self). */
export interface XPort {
  /** Sends a reply to the runner. */
  postMessage(m: unknown): void;
  /** Node worker_threads style: calls `cb` with each message. */
  on?(ev: 'message', cb: (m: XMessage) => void): void;
  /** Web Worker style: calls `cb` with each message event. */
  addEventListener?(ev: 'message', cb: (e: { data: XMessage }) => void): void;
}

/** Serves lab messages on `port` until the runner terminates the worker. */
export function serveLab(port: XPort): void {
  let p: Platform | null = null;
  let teardown: (() => void) | null = null;
  let drv: { q: DriverQueue; kick: Doorbell; waiter: DoorbellWaiter; call: Doorbell | null; pt: LabPoint; ctl: Int32Array; c: number; bufs: number[] } | null = null;
  let dev: { q: DeviceQueue; call: Doorbell; waiter: DoorbellWaiter; kick: Doorbell; pt: LabPoint; c: number; sink: number } | null = null;

  const handle = (m: XMessage): void => {
    try {
      switch (m.op) {
        case 'attach':
          p = Platform.attach(m.handle);
          port.postMessage({ ok: true });
          return;
        case 'driver-setup': {
          const pl = p!;
          const pt = m.pt;
          const features = ringFeatures({ packed: pt.layout === 'packed', eventIdx: pt.eventIdx, indirect: pt.indirect, inOrder: pt.inOrder });
          const q = new DriverQueue(pl, { size: pt.queueSize, features, batch: pt.batch });
          const bufs: number[] = [];
          for (let t = 0; t < pt.queueSize; t++) bufs.push(pl.allocBuffer(pt.payload, 64));
          const kick = Doorbell.alloc(pl);
          const waiter = new DoorbellWaiter(pl);
          drv = { q, kick, waiter, call: null, pt, ctl: pl.i32, c: m.ctl.addr >> 2, bufs };
          teardown = () => {
            waiter.close();
            kick.free();
            q.destroy();
            for (const b of bufs) pl.release(b);
          };
          port.postMessage({ ok: true, addresses: q.addresses, kick: kick.handle });
          return;
        }
        case 'driver-call':
          drv!.call = new Doorbell(p!, m.call);
          drv!.waiter.watch(drv!.call, () => {});
          port.postMessage({ ok: true });
          return;
        case 'device-setup': {
          const pl = p!;
          const pt = m.pt;
          const features = ringFeatures({ packed: pt.layout === 'packed', eventIdx: pt.eventIdx, indirect: pt.indirect, inOrder: pt.inOrder });
          const q = new DeviceQueue(pl, { size: pt.queueSize, features, ...m.addresses, batch: pt.batch });
          const call = Doorbell.alloc(pl);
          const kick = new Doorbell(pl, m.kick);
          const waiter = new DoorbellWaiter(pl);
          waiter.watch(kick, () => {});
          const sink = pl.allocBuffer(pt.batch * pt.payload, 64);
          dev = { q, call, waiter, kick, pt, c: m.ctl.addr >> 2, sink };
          teardown = () => {
            waiter.close();
            call.free();
            q.destroy();
            pl.release(sink);
          };
          port.postMessage({ ok: true, call: call.handle });
          return;
        }
        case 'device-run':
          deviceLoop(p!, dev!, m.spinUs);
          port.postMessage({ ok: true });
          return;
        case 'driver-run':
          port.postMessage({ ok: true, runs: driverRounds(p!, drv!, m.chains, m.rounds, m.spinUs) });
          return;
        case 'teardown':
          teardown?.();
          teardown = null;
          drv = null;
          dev = null;
          port.postMessage({ ok: true });
          return;
      }
    } catch (e) {
      port.postMessage({ ok: false, error: (e as Error)?.message ?? String(e) });
    }
  };
  if (port.on) port.on('message', handle);
  else port.addEventListener!('message', (e) => handle(e.data));
}

const now = () => performance.now();

/** The device: serves until the runner sets stop. */
function deviceLoop(p: Platform, d: NonNullable<{ q: DeviceQueue; call: Doorbell; waiter: DoorbellWaiter; pt: LabPoint; c: number; sink: number }>, spinUs: number): void {
  const { q, pt } = d;
  const m = p.i32;
  const mode = pt.mode;
  q.disableKick();
  let idleSince = -1;
  while (Atomics.load(m, d.c) === 0) {
    const n = q.pop(pt.batch);
    if (n > 0) {
      idleSince = -1;
      if (pt.copy) q.copyOut(n, d.sink, pt.payload);
      q.pushPopped(n, pt.inOrder);
      if (q.needCall()) {
        Atomics.add(m, d.c + 1, 1);
        d.call.ring();
      }
      continue;
    }
    if (mode === 'poll') continue;
    if (mode === 'adaptive') {
      const t = now();
      if (idleSince < 0) idleSince = t;
      if ((t - idleSince) * 1000 < spinUs) continue;
    }
    // Arm kicks; if buffers raced in, go on; else sleep until a kick (or a stop) rings.
    if (q.enableKick()) {
      q.disableKick();
      continue;
    }
    d.waiter.wait(100);
    q.disableKick();
    idleSince = -1;
  }
  // Leave the ring idle: hand back whatever is still in flight.
  for (let n = q.pop(pt.batch); n > 0; n = q.pop(pt.batch)) q.pushPopped(n);
}

/** The driver: `rounds` rounds of `chains` chains each; the clock runs here. */
function driverRounds(
  p: Platform,
  d: { q: DriverQueue; kick: Doorbell; waiter: DoorbellWaiter; pt: LabPoint; c: number; bufs: number[] },
  chains: number, rounds: number, spinUs: number,
): LabRun[] {
  const { q, pt, bufs } = d;
  const m = p.i32;
  const mode = pt.mode;
  const pingPong = pt.batch === 1;
  const inflightMax = pt.queueSize;
  const free = new Int32Array(inflightMax);
  let nFree = inflightMax;
  for (let t = 0; t < inflightMax; t++) free[t] = t;
  q.disableCb();
  const lat = pingPong ? new Float64Array(chains) : null;
  const runs: LabRun[] = [];
  // Waits for used buffers per mode; returns how many were reclaimed.
  const reclaim = (): number => {
    let got = 0;
    for (;;) {
      const k = q.getUsed(pt.batch);
      for (let i = 0; i < k; i++) free[nFree++] = q.usedToken(i);
      got += k;
      if (k < pt.batch) return got;
    }
  };
  const waitUsed = (): number => {
    let idleSince = -1;
    for (;;) {
      const got = reclaim();
      if (got > 0) return got;
      if (mode === 'poll') continue;
      if (mode === 'adaptive') {
        const t = now();
        if (idleSince < 0) idleSince = t;
        if ((t - idleSince) * 1000 < spinUs) continue;
      }
      if (!q.enableCb()) {
        q.disableCb();
        continue;
      }
      d.waiter.wait(100);
      q.disableCb();
      idleSince = -1;
    }
  };
  for (let r = -1; r < rounds; r++) {
    // Round -1 warms up (JIT tiers, caches) and is not reported.
    const target = r < 0 ? Math.min(chains, 2000) : chains;
    let done = 0, kicks = 0;
    const calls0 = Atomics.load(m, d.c + 1);
    const t0 = now();
    while (done < target) {
      let k = 0;
      const want = pingPong ? 1 : pt.batch;
      while (k < want && nFree > 0) {
        const t = free[--nFree]!;
        q.stageOne(t, bufs[t]!, pt.payload);
        k++;
      }
      const ts = pingPong ? now() : 0;
      if (k > 0) {
        q.submit();
        if (q.kickPrepare()) {
          kicks++;
          d.kick.ring();
        }
      }
      if (pingPong || nFree === 0) {
        const got = waitUsed();
        if (pingPong && lat && done < target) lat[done] = (now() - ts) * 1000;
        done += got;
      } else {
        done += reclaim();
      }
    }
    const ms = now() - t0;
    // Drain so that the next round starts idle.
    while (nFree < inflightMax) waitUsed();
    const calls = Atomics.load(m, d.c + 1) - calls0;
    if (r >= 0) runs.push({ chains: done, descs: done, kicks, calls, ms, ...(lat ? { latUs: Array.from(lat.subarray(0, Math.min(done, target))) } : {}) });
  }
  return runs;
}
