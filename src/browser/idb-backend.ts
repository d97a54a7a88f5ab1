// A virtio-blk backend over IndexedDB, for browsers (and workers): the disk is stored as
// fixed-size chunks keyed by index in one object store; chunks never written read as zeros.
// Every request is one IndexedDB transaction, so a resolved write is durable (IDB commits the
// transaction before `complete` fires), and flush() has nothing left to do.

import { VirtioError, Code } from '../errors.ts';
import type { BlkBackend } from '../devices/blk.ts';

const SECTOR = 512;
const STORE = 'chunks';

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error('IndexedDB request failed'));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

/** A disk image in IndexedDB database `name`. */
export class IdbBackend implements BlkBackend {
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Sectors per stored chunk. */
  readonly chunkSectors: number;
  private readonly db: IDBDatabase;

  private constructor(db: IDBDatabase, capacity: number, chunkSectors: number) {
    this.db = db;
    this.capacity = capacity;
    this.chunkSectors = chunkSectors;
  }

  /** Opens (creating if needed) a disk of `sectors` 512-byte sectors in database `name`. */
  static async open(name: string, opts: { sectors: number; chunkSectors?: number }): Promise<IdbBackend> {
    if (typeof indexedDB === 'undefined') throw new VirtioError(Code.Unsupported, 'IndexedDB is not available here');
    const chunk = opts.chunkSectors ?? 64;
    if (!Number.isSafeInteger(opts.sectors) || opts.sectors < 1) throw new VirtioError(Code.InvalidArgument, `sectors ${opts.sectors} must be positive`);
    if (!Number.isInteger(chunk) || chunk < 1 || chunk > 4096) throw new VirtioError(Code.InvalidArgument, `chunkSectors ${chunk} must be 1..4096`);
    const open = indexedDB.open(name, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    const db = await req(open);
    return new IdbBackend(db, opts.sectors, chunk);
  }

  async read(sector: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    const tx = this.db.transaction(STORE, 'readonly');
    const st = tx.objectStore(STORE);
    const cb = this.chunkSectors * SECTOR;
    const start = sector * SECTOR;
    const first = Math.floor(start / cb);
    const last = Math.floor((start + len - 1) / cb);
    const chunks = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => req(st.get(first + i) as IDBRequest<Uint8Array | undefined>)));
    chunks.forEach((c, i) => {
      if (!c) return; // never written: zeros
      const base = (first + i) * cb;
      const from = Math.max(start, base);
      const to = Math.min(start + len, base + cb);
      out.set(c.subarray(from - base, to - base), from - start);
    });
    await done(tx);
    return out;
  }

  async write(sector: number, data: Uint8Array): Promise<void> {
    const tx = this.db.transaction(STORE, 'readwrite');
    const st = tx.objectStore(STORE);
    const cb = this.chunkSectors * SECTOR;
    const start = sector * SECTOR;
    const first = Math.floor(start / cb);
    const last = Math.floor((start + data.length - 1) / cb);
    for (let k = first; k <= last; k++) {
      const base = k * cb;
      const from = Math.max(start, base);
      const to = Math.min(start + data.length, base + cb);
      const whole = from === base && to === base + cb;
      const c = whole ? new Uint8Array(cb) : ((await req(st.get(k) as IDBRequest<Uint8Array | undefined>)) ?? new Uint8Array(cb));
      c.set(data.subarray(from - start, to - start), from - base);
      st.put(c, k);
    }
    await done(tx);
  }

  async flush(): Promise<void> {
    // Each write resolved only after its transaction committed.
  }

  /** Closes the database. */
  close(): void {
    this.db.close();
  }
}
