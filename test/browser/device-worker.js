// The device side of the browser test, in a module worker. It opens the page's shared
// platform from a PlatformHandle, then, per 'serve' message, runs a DeviceQueue over rings the
// page laid out: pop → reply with the readable bytes reversed → pushPopped → needCall. The
// page kicks through a doorbell word in shared memory; the device calls back through another.
// The worker may block, so it sleeps in Atomics.wait (bounded) when the ring is empty.
//
// Messages in:  { type: 'init', handle }
//               { type: 'serve', id, size, features, addresses, kick, call, total, timeoutMs, waitMs }
// Messages out: { type: 'ready', shared } · { type: 'serving', id } · { type: 'done', id, ... }
//               { type: 'error', message }

import { Platform, DeviceQueue } from '/dist/index.js';
import { reply } from './echo.js';

/** @type {Platform | undefined} */
let platform;

self.onmessage = (e) => {
  const m = e.data;
  try {
    if (m.type === 'init') {
      platform = Platform.attach(m.handle);
      self.postMessage({ type: 'ready', shared: platform.shared });
    } else if (m.type === 'serve') {
      if (!platform) throw new Error('serve before init');
      self.postMessage(serve(platform, m));
    } else {
      throw new Error(`unknown message type ${m.type}`);
    }
  } catch (err) {
    self.postMessage({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
};

/** Serves `m.total` chains on one queue, then returns the 'done' report. Throws on a timeout or a lost kick. */
function serve(p, m) {
  const dev = new DeviceQueue(p, { size: m.size, features: m.features, ...m.addresses });
  const i32 = p.i32;
  const kick = m.kick >> 2;
  const call = m.call >> 2;
  const start = performance.now();
  const deadline = start + m.timeoutMs;
  let served = 0;
  let calls = 0; // notifications sent
  let wakeups = 0; // waits ended by a kick
  let stats;
  // Tell the page the device is set up (dev_reset has run); it adds buffers only after this.
  self.postMessage({ type: 'serving', id: m.id });
  try {
    dev.disableKick(); // polling while busy
    while (served < m.total) {
      if (performance.now() > deadline) {
        throw new Error(`device timed out after ${m.timeoutMs} ms: served ${served}/${m.total}, available ${dev.available()}, ` +
          `calls ${calls}, wakeups ${wakeups}, state ${JSON.stringify(dev.getState())}`);
      }
      const n = dev.pop();
      if (n > 0) {
        for (let i = 0; i < n; i++) dev.write(i, reply(dev.read(i)));
        dev.pushPopped(n);
        served += n;
        if (dev.needCall()) {
          Atomics.add(i32, call, 1);
          Atomics.notify(i32, call);
          calls++;
        }
        continue;
      }
      // Ring empty: ask for kicks, re-check (the driver may have added before seeing the
      // request), then sleep until the doorbell word moves past `seq`.
      const seq = Atomics.load(i32, kick);
      if (dev.enableKick()) {
        dev.disableKick();
        continue;
      }
      const r = Atomics.wait(i32, kick, seq, m.waitMs);
      dev.disableKick();
      if (r === 'ok' || r === 'not-equal') wakeups++;
      // A kick is rung right after buffers are published: buffers present after a whole
      // waitMs with the doorbell unchanged mean the driver skipped a kick the device asked for.
      else if (dev.available() > 0 && Atomics.load(i32, kick) === seq) {
        throw new Error(`lost kick: buffers waited ${m.waitMs} ms without a notification (served ${served}/${m.total})`);
      }
    }
    stats = dev.stats;
  } finally {
    dev.destroy();
  }
  return {
    type: 'done', id: m.id, served, calls, wakeups,
    ms: performance.now() - start, stats,
  };
}
