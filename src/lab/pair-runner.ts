// The cross-thread runner both hosts share (Node worker_threads in node-runner.ts, browser Web
// Workers in browser/lab-runner.ts): given a driver worker and a device worker that already
// attached the platform and serve src/lab/xthread-worker.ts's messages, it runs one lab point —
// set both sides up, run the device, run the driver's rounds, then stop the device (waking it
// if it sleeps) and tear both down.

import type { Platform } from '../platform/platform.ts';
import type { CrossThreadRunner } from './lab.ts';
import type { LabRun } from './same-thread.ts';
import type { LabPoint } from './sweep.ts';
import type { XMessage } from './xthread-worker.ts';

/** A lab worker's answer: `ok`, or `error`, plus the fields of the question's reply. */
export interface LabReply {
  /** The worker did what was asked. */
  ok: boolean;
  /** Why not, when `ok` is false. */
  error?: string;
  /** The reply's fields (addresses, doorbells, runs). */
  [k: string]: unknown;
}

/** What the runner needs of a lab worker: an ordered question/answer. */
export interface LabAsker {
  /** Sends `m`; resolves with the worker's answer to it. */
  ask(m: XMessage): Promise<LabReply>;
}

/**
 * The runner over a driver worker and a device worker on platform `p`; `ctl` is the 8-byte
 * control block (stop flag, ready flag) in `p`'s private memory both workers were given.
 */
export function pairRunner(p: Platform, ctl: number, drvW: LabAsker, devW: LabAsker): CrossThreadRunner {
  return async (pt: LabPoint, o) => {
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
      // Stop the device and wake it if it sleeps (a kick on its own doorbell would do; the
      // stop flag is checked at most 100 ms later in any case).
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
}
