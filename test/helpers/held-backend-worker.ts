// A device worker for tests whose blk backends answer only when the test says so: a backend
// descriptor `{ file: NAME }` opens an in-memory SharedDisk named NAME (storage identity
// `held:NAME`, so two workers opening NAME count as shared storage), and three extra requests
// drive it: hold(NAME, ms?) — answers wait, and are all released after ms if given (this
// worker's channel serves one request at a time, so a release request could not overtake a
// suspend that waits for the disk); release(NAME) — answer everything held; pending(NAME) —
// requests the disk has not answered. For the paths a real file only hits by chance (a
// suspend that finds requests out at the backend).
import { parentPort } from 'node:worker_threads';
import { serveVdpa } from '../../src/worker/host.ts';
import { SharedDisk } from './migration.ts';
import type { BlkBackendDescriptor, ResolvedBackend } from '../../src/worker/backend.ts';
import type { PortLike } from '../../src/worker/channel.ts';

const disks = new Map<string, SharedDisk>();
const disk = (name: unknown): SharedDisk => {
  const d = disks.get(String(name));
  if (!d) throw new Error(`no held disk ${String(name)}`);
  return d;
};

async function resolveBackend(d: BlkBackendDescriptor): Promise<ResolvedBackend> {
  if (!('file' in d)) throw new Error('held-backend-worker opens { file: NAME } only');
  const h = new SharedDisk(512); // the migration suites' disk: answers on a turn, or held
  disks.set(d.file, h);
  return { backend: h, storage: `held:${d.file}`, close: () => {} };
}

if (!parentPort) throw new Error('held-backend-worker.ts runs inside a worker_threads Worker');
const port = parentPort;
void serveVdpa(port as unknown as PortLike, {
  resolveBackend,
  requests: {
    hold: ([name, ms]) => {
      const d = disk(name);
      d.hold = true;
      if (typeof ms === 'number') setTimeout(() => d.release(), ms);
      return null;
    },
    release: ([name]) => { disk(name).release(); return null; },
    pending: ([name]) => disk(name).pending,
  },
}).then(() => port.close());
