// A virtio-blk backend over IndexedDB, for browsers (and workers): the disk is stored as
// fixed-size chunks keyed by index in one object store; chunks never written read as zeros.
// Every request is one IndexedDB transaction, so a resolved write is durable (IDB commits the
// transaction before `complete` fires), and flush() has nothing left to do.

import { VirtioError, Code } from '../errors.ts';
import type { BlkBackend } from '../devices/blk.ts';

const SECTOR = 512;
const STORE = 'chunks';

/** An IndexedDB failure as a typed error: quota is resource_exhausted, the rest io_error. */
function idbError(e: unknown, what: string): VirtioError {
  if (e instanceof VirtioError) return e;
  const name = (e as { name?: unknown } | null)?.name;
  const code = name === 'QuotaExceededError' ? Code.ResourceExhausted : name === 'InvalidStateError' ? Code.FailedPrecondition : Code.IoError;
  return new VirtioError(code, `${what}: ${(e as { message?: unknown } | null)?.message ?? String(e)}`, { cause: e });
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(idbError(r.error, 'IndexedDB request failed'));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(idbError(tx.error, 'IndexedDB transaction failed'));
    tx.onabort = () => reject(idbError(tx.error, 'IndexedDB transaction aborted'));
  });
}

/** A disk image in IndexedDB database `name`. */
export class IdbBackend implements BlkBackend {
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Sectors per stored chunk. */
  readonly chunkSectors: number;
  private readonly db: IDBDatabase;
  private isClosed = false;

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

  /** A transaction on the store, after checking that [sector, sector + bytes) lies on the disk. */
  private tx(op: string, sector: number, bytes: number, mode: IDBTransactionMode): IDBTransaction {
    this.check(op, sector, bytes);
    try {
      return this.db.transaction(STORE, mode);
    } catch (e) {
      throw idbError(e, op); // the browser closed the database (storage cleared, version change)
    }
  }

  /** Throws unless open and [sector, sector + bytes) is a whole-sector range on the disk. */
  private check(op: string, sector: number, bytes: number): void {
    if (this.isClosed) throw new VirtioError(Code.FailedPrecondition, `${op}: the IndexedDB backend is closed`);
    if (!Number.isSafeInteger(sector) || sector < 0 || !Number.isSafeInteger(bytes) || bytes < 0 || bytes % SECTOR) {
      throw new VirtioError(Code.InvalidArgument, `${op}: sector ${sector}, ${bytes} bytes is not a whole-sector range`);
    }
    if (sector + bytes / SECTOR > this.capacity) {
      throw new VirtioError(Code.InvalidArgument, `${op}: sectors [${sector}, ${sector + bytes / SECTOR}) lie beyond the disk's ${this.capacity}`);
    }
  }

  /** Reads `len` bytes (whole sectors) at `sector`; never-written chunks read as zeros. */
  async read(sector: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    if (len === 0) {
      this.check('read', sector, 0);
      return out;
    }
    const tx = this.tx('read', sector, len, 'readonly');
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

  /** Writes `data` (whole sectors) at `sector` in one transaction, committed when it resolves. */
  async write(sector: number, data: Uint8Array): Promise<void> {
    if (data.length === 0) {
      this.check('write', sector, 0);
      return;
    }
    const tx = this.tx('write', sector, data.length, 'readwrite');
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

  /** Nothing to do: each write resolved only after its transaction committed. */
  async flush(): Promise<void> {
    if (this.isClosed) throw new VirtioError(Code.FailedPrecondition, 'flush: the IndexedDB backend is closed');
  }

  /** Closes the database (idempotent); later requests fail with `failed_precondition`. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.db.close();
  }
}
