// Entry of a device worker in a browser (a module Web Worker): serves a vdpa bus (host.ts) on
// the worker's global scope. Start it with `new Worker(url, { type: 'module' })` on a
// cross-origin-isolated page, then `RemoteVdpaBus.connect(worker, platform)` from a thread that
// may block (another worker) to drive its devices; see remote-device.ts.
import { serveVdpa } from './host.ts';
import type { PortLike } from './channel.ts';

void serveVdpa(globalThis as unknown as PortLike).then(() => (globalThis as unknown as { close?: () => void }).close?.());
