// Entry of a device worker under Node's worker_threads: serves a vdpa bus (host.ts) on the
// parent port until the parent closes the channel or terminates the worker.
import { parentPort } from 'node:worker_threads';
import { serveVdpa } from './host.ts';
import type { PortLike } from './channel.ts';

if (!parentPort) throw new Error('node-device-worker.ts runs inside a worker_threads Worker');
const port = parentPort;
void serveVdpa(port as unknown as PortLike).then(() => port.close());
