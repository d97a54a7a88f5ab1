// Entry of a device worker in a browser (a module Web Worker): serves a vdpa bus (host.ts) on
// the worker's global scope. Start it with `new Worker(url, { type: 'module' })` on a
// cross-origin-isolated page, then `RemoteVdpaBus.connect(worker, platform)` from a thread that
// may block (another worker) to drive its devices; see remote-device.ts. Resolves blk backend
// descriptors (backend.ts): `{ opfs }` opens an OpfsBackend here (sync access handles exist only
// in dedicated workers, which this is); `{ file }` is refused (no file system in a browser).
import { serveVdpa } from './host.ts';
import { OpfsBackend } from '../browser/opfs-backend.ts';
import { cannotResolve, type BlkBackendDescriptor, type ResolvedBackend } from './backend.ts';
import type { PortLike } from './channel.ts';

async function resolveBackend(d: BlkBackendDescriptor): Promise<ResolvedBackend> {
  if (!('opfs' in d)) throw cannotResolve(d, 'a browser device worker');
  const ob = await OpfsBackend.open(d.opfs, { ...(d.sectors !== undefined ? { sectors: d.sectors } : {}), ...(d.readOnly !== undefined ? { readOnly: d.readOnly } : {}) });
  return { backend: ob, storage: `opfs:${d.opfs.split('/').filter((p) => p !== '').join('/')}`, close: () => ob.close() };
}

void serveVdpa(globalThis as unknown as PortLike, { resolveBackend }).then(() => (globalThis as unknown as { close?: () => void }).close?.());
