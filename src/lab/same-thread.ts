// The ring lab's same-thread engine: a driver and a device on one pair of rings, taking turns in
// the calling thread, each following Linux's notification protocol so that kicks and calls are
// what suppression really leaves:
//   device (vhost handle_kick): woken by a kick → disable kicks → pop/serve/push until the ring
//     is empty → re-enable kicks (vhost_enable_notify) → if buffers raced in, go on, else sleep;
//     after each pass a call if needCall() (vring_need_event / packed event suppression);
//   driver (virtio-net NAPI style): adds up to `batch` chains per turn and kicks if
//     kickPrepare(); reclaims while awake; with nothing left to reclaim it re-arms callbacks
//     (enableCb) and sleeps until a call.
// Everything is allocated before the clock starts: the measured loop allocates nothing.

import type { Platform } from '../platform/platform.ts';
import { DriverQueue, type Buf } from '../ring/driver-queue.ts';
import { DeviceQueue } from '../ring/device-queue.ts';
import { ringFeatures } from '../ring/queue-base.ts';
import { seeded, type LabPoint } from './sweep.ts';

/** What one run moved and how many notifications it took. */
export interface LabCounters {
  /** Chains completed (used and reclaimed). */
  chains: number;
  /** Descriptors in those chains (chainLen each). */
  descs: number;
  /** Kicks the driver sent (kickPrepare() said yes). */
  kicks: number;
  /** Calls the device sent (needCall() said yes). */
  calls: number;
}

/** One run of a point. */
export interface LabRun extends LabCounters {
  /** Wall time of the measured loop, ms. */
  ms: number;
  /** Round-trip latencies in µs (cross-thread batch-1 runs), else empty. */
  latUs?: number[];
}

/** A point set up in memory, ready to run repeatedly. */
export interface SameThreadRig {
  /** Runs until `chains` chains are completed; returns counts and time. */
  run(chains: number): LabRun;
  /** Frees the rings and buffers. */
  free(): void;
}

/**
 * Lays a point out in `platform` (rings, buffers, a copy sink) and returns a rig that runs it.
 * `seed` drives the out-of-order completion shuffle.
 */
export function sameThreadRig(platform: Platform, pt: LabPoint, seed: number): SameThreadRig {
  const features = ringFeatures({ packed: pt.layout === 'packed', eventIdx: pt.eventIdx, indirect: pt.indirect, inOrder: pt.inOrder });
  const descPerChain = pt.indirect && pt.chainLen > 1 ? 1 : pt.chainLen;
  const maxInflight = Math.floor(pt.queueSize / descPerChain);
  const batch = Math.min(pt.batch, maxInflight);
  const drv = new DriverQueue(platform, { size: pt.queueSize, features, batch: Math.max(batch, 1), maxSegs: Math.max(batch * pt.chainLen, 64), indirectMax: Math.max(16, pt.chainLen) });
  const allocs: number[] = [];
  let dev: DeviceQueue | null = null;
  try {
    dev = new DeviceQueue(platform, { size: pt.queueSize, features, ...drv.addresses, batch: Math.max(batch, 1), maxSegs: Math.max(2 * pt.queueSize * pt.chainLen, 64) });
    const seg = Math.floor(pt.payload / pt.chainLen);
    const last = pt.payload - seg * (pt.chainLen - 1);
    const bufs: Buf[][] = [];
    for (let t = 0; t < maxInflight; t++) {
      const base = platform.allocBuffer(pt.payload, 64);
      allocs.push(base);
      platform.u8.fill(t & 0xff, base, base + pt.payload);
      const chain: Buf[] = [];
      for (let s = 0; s < pt.chainLen; s++) chain.push({ addr: base + s * seg, len: s === pt.chainLen - 1 ? last : seg });
      bufs.push(chain);
    }
    const sink = platform.allocBuffer(Math.max(batch, 1) * pt.payload, 64);
    allocs.push(sink);
    const d = dev;
    const free = new Int32Array(maxInflight);
    const order = new Int32Array(Math.max(batch, 1));
    const rnd = seeded(seed);
    const one = pt.chainLen === 1;

    const run = (target: number): LabRun => {
      let nFree = maxInflight;
      for (let t = 0; t < maxInflight; t++) free[t] = maxInflight - 1 - t;
      let chains = 0, kicks = 0, calls = 0;
      let napi = false; // a call arrived: the driver's poll is scheduled, callbacks disabled
      const reclaim = (): number => {
        let got = 0;
        for (;;) {
          const m = drv.getUsed(batch);
          for (let i = 0; i < m; i++) free[nFree++] = drv.usedToken(i);
          got += m;
          if (m < batch) return got;
        }
      };
      const t0 = performance.now();
      while (chains < target) {
        // Driver: its poll after a call (virtnet_poll): reclaim, re-arm, reclaim what raced in.
        if (napi) {
          chains += reclaim();
          while (!drv.enableCb()) {
            drv.disableCb();
            chains += reclaim();
          }
          napi = false;
        } else if (nFree === 0) {
          chains += reclaim(); // out of buffers: reclaim without a call (start_xmit's free_old_xmit)
        }
        if (chains >= target) break;
        // Driver: add a batch (as much as is free), kick if the device asks for it.
        let k = 0;
        while (k < batch && nFree > 0) {
          const t = free[--nFree]!;
          if (one) drv.stageOne(t, bufs[t]![0]!.addr, bufs[t]![0]!.len);
          else drv.stage(t, bufs[t]!);
          k++;
        }
        if (k === 0) continue;
        drv.submit();
        if (!drv.kickPrepare()) continue;
        kicks++;
        // Device (handle_kick): kicks off, passes until the ring is empty, kicks back on.
        d.disableKick();
        for (;;) {
          const n = d.pop(batch);
          if (n === 0) {
            if (d.enableKick()) {
              d.disableKick(); // buffers raced in: keep going
              continue;
            }
            break;
          }
          if (pt.copy) d.copyOut(n, sink, pt.payload);
          if (pt.completion === 'in-order') d.pushPopped(n, pt.inOrder);
          else {
            for (let i = 0; i < n; i++) order[i] = i;
            for (let i = n - 1; i > 0; i--) {
              const j = Math.floor(rnd() * (i + 1));
              const x = order[i]!;
              order[i] = order[j]!;
              order[j] = x;
            }
            for (let i = 0; i < n; i++) d.complete(d.chainId(order[i]!), d.chainDescs(order[i]!), 0);
            d.flushUsed();
          }
          if (d.needCall()) {
            calls++;
            // The driver's interrupt handler (vring_interrupt → napi_schedule): callbacks off.
            if (!napi) {
              napi = true;
              drv.disableCb();
            }
          }
        }
      }
      const ms = performance.now() - t0;
      // Drain what is still in flight so the next run starts from an idle ring.
      for (let guard = 0; drv.inFlight > 0 && guard < 4 * maxInflight; guard++) {
        const n = d.pop(batch);
        if (n > 0) d.pushPopped(n, pt.inOrder);
        drv.getUsed(batch);
      }
      d.enableKick();
      drv.enableCb();
      return { chains, descs: chains * pt.chainLen, kicks, calls, ms };
    };
    return {
      run,
      free() {
        d.destroy();
        drv.destroy();
        for (const a of allocs) platform.release(a);
      },
    };
  } catch (e) {
    dev?.destroy();
    drv.destroy();
    for (const a of allocs) platform.release(a);
    throw e;
  }
}
