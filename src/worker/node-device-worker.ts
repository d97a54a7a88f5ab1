// Entry of a device worker under Node's worker_threads: serves a vdpa bus (host.ts) on the
// parent port until the parent closes the channel or terminates the worker. Adds `threadCpu`:
// this thread's CPU time in µs (Linux /proc/thread-self/schedstat, else null), for the
// "an idle device worker does not spin" figures.
import { parentPort } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { serveVdpa } from './host.ts';
import type { PortLike } from './channel.ts';

function threadCpuUs(): number | null {
  try {
    // schedstat: time on CPU (ns), time waiting (ns), timeslices.
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1000;
  } catch {
    return null;
  }
}

if (!parentPort) throw new Error('node-device-worker.ts runs inside a worker_threads Worker');
const port = parentPort;
void serveVdpa(port as unknown as PortLike, { requests: { threadCpu: () => threadCpuUs() } }).then(() => port.close());
