// Entry of a device worker under Node's worker_threads: serves a vdpa bus (host.ts) on the
// parent port until the parent closes the channel or terminates the worker. Adds `threadCpu`:
// this thread's CPU time in µs (Linux /proc/thread-self/schedstat, else null), for the
// "an idle device worker does not spin" figures. Resolves blk backend descriptors (backend.ts):
// `{ file }` opens a FileBackend here, in the worker; `{ opfs }` is refused (no OPFS in Node).
import { parentPort } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { serveVdpa } from './host.ts';
import { FileBackend } from '../node/file-backend.ts';
import { cannotResolve, type BlkBackendDescriptor, type ResolvedBackend } from './backend.ts';
import type { PortLike } from './channel.ts';

function threadCpuUs(): number | null {
  try {
    // schedstat: time on CPU (ns), time waiting (ns), timeslices.
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1000;
  } catch {
    return null;
  }
}

/** Opens a descriptor's file; its identity is the real path (two workers naming one file by two paths share it). */
async function resolveBackend(d: BlkBackendDescriptor): Promise<ResolvedBackend> {
  if (!('file' in d)) throw cannotResolve(d, 'a Node device worker');
  const fb = await FileBackend.open(d.file, { ...(d.size !== undefined ? { size: d.size } : {}), ...(d.readOnly !== undefined ? { readOnly: d.readOnly } : {}) });
  let real: string;
  try {
    real = await realpath(d.file);
  } catch {
    real = resolve(d.file);
  }
  return { backend: fb, storage: `file:${real}`, close: () => fb.close() };
}

if (!parentPort) throw new Error('node-device-worker.ts runs inside a worker_threads Worker');
const port = parentPort;
void serveVdpa(port as unknown as PortLike, { requests: { threadCpu: () => threadCpuUs() }, resolveBackend }).then(() => port.close());
