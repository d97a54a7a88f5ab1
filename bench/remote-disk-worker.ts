// A device worker for bench/migration-worker.bench.ts whose blk disks sit on *networked* shared
// storage, modelled: a volume in a SharedArrayBuffer every such worker is given (workerData
// { volume, latencyUs }: the storage server's disk, outside any one worker), and every request
// answered latencyUs after it was issued (an iSCSI / NBD / Ceph round trip) by a copy to or
// from the volume — all a host does for a remote answer, the storage work being elsewhere. A
// descriptor `{ file: NAME }` opens it (storage identity `remote:NAME`, so two workers naming
// NAME share it). That is the storage where a migration finds requests in flight: a local
// file in the page cache answers in tens of µs, before the stop comes. Request `issued`:
// how many requests this worker's disks were sent so far.
import { parentPort, workerData } from 'node:worker_threads';
import { serveVdpa } from '../src/worker/host.ts';
import type { BlkBackend } from '../src/devices/blk.ts';
import type { BlkBackendDescriptor, ResolvedBackend } from '../src/worker/backend.ts';
import type { PortLike } from '../src/worker/channel.ts';

const { volume, latencyUs } = workerData as { volume: SharedArrayBuffer; latencyUs: number };
const disk = new Uint8Array(volume);
const ms = latencyUs / 1000;
/** Requests issued so far (the `issued` request). */
let issued = 0;
const after = <T>(fn: () => T): Promise<T> => {
  issued++;
  return new Promise((res) => { setTimeout(() => res(fn()), ms); });
};

const backend: BlkBackend = {
  capacity: disk.length / 512,
  read: (s, len) => after(() => disk.slice(s * 512, s * 512 + len)),
  readInto: (s, buf) => after(() => { buf.set(disk.subarray(s * 512, s * 512 + buf.length)); }),
  // The bytes are ours until the promise settles: they land then.
  write: (s, d) => after(() => { disk.set(d, s * 512); }),
  flush: () => after(() => {}),
};

async function resolveBackend(d: BlkBackendDescriptor): Promise<ResolvedBackend> {
  if (!('file' in d)) throw new Error('remote-disk-worker opens { file: NAME } only');
  return { backend, storage: `remote:${d.file}`, close: () => {} };
}

if (!parentPort) throw new Error('remote-disk-worker.ts runs inside a worker_threads Worker');
const port = parentPort;
void serveVdpa(port as unknown as PortLike, { resolveBackend, requests: { issued: () => issued } }).then(() => port.close());
