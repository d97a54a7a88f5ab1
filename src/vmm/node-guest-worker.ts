// Entry of the minimal VMM's guest worker under Node's worker_threads (src/vmm/guest.ts).
import { parentPort } from 'node:worker_threads';
import { serveGuest } from './guest.ts';
import type { PortLike } from '../worker/channel.ts';

if (!parentPort) throw new Error('node-guest-worker.ts runs inside a worker_threads Worker');
serveGuest(parentPort as unknown as PortLike);
