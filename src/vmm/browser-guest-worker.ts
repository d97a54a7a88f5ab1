// Entry of the minimal VMM's guest worker in a browser (a module Web Worker): serves the guest
// (src/vmm/guest.ts) on the worker's global scope. The VMM itself only makes asynchronous
// channel requests, so it may run on a page's main thread; the guest and the devices block in
// Atomics.wait, which workers may do.
import { serveGuest } from './guest.ts';
import type { PortLike } from '../worker/channel.ts';

serveGuest(globalThis as unknown as PortLike);
