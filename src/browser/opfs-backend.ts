// A virtio-blk backend over a file in the Origin Private File System (OPFS), for browsers.
// It uses a FileSystemSyncAccessHandle, which browsers only hand out inside a dedicated Web
// Worker (WHATWG File System standard, "createSyncAccessHandle()"): run the device (and this
// backend) in a worker; on the main thread open() refuses with `unsupported`.
//
// Every request is one positioned read()/write() on the handle. Those calls are synchronous
// and complete before they return, so a write is in the file when its promise resolves;
// flush() calls the handle's flush() to make it durable (the fdatasync() role, as FileBackend
// in src/node/file-backend.ts does with datasync()). The handle holds the file's exclusive
// lock until close(): a second open of the same file fails with `failed_precondition`.
//
// The types below are structural (only what this file calls), so the package's declarations
// do not need the WebWorker lib.

import { VirtioError, Code } from '../errors.ts';
import type { BlkBackend } from '../devices/blk.ts';

const SECTOR = 512;

/** The part of FileSystemSyncAccessHandle this backend uses. */
export interface OpfsSyncAccessHandle {
  /** Reads into `buffer` from byte offset `at`; returns the bytes read (fewer at the end of the file). */
  read(buffer: Uint8Array, options?: { at?: number }): number;
  /** Writes `buffer` at byte offset `at`; returns the bytes written. */
  write(buffer: Uint8Array, options?: { at?: number }): number;
  /** Sets the file's size in bytes (new bytes read as zeros). */
  truncate(newSize: number): void;
  /** The file's size in bytes. */
  getSize(): number;
  /** Persists what was written. */
  flush(): void;
  /** Releases the handle and the file's lock. */
  close(): void;
}

/** The part of FileSystemDirectoryHandle / FileSystemFileHandle that open() uses. */
interface OpfsDir {
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<OpfsDir>;
  getFileHandle(name: string, options?: { create?: boolean }): Promise<OpfsFile>;
  removeEntry(name: string): Promise<void>;
}
interface OpfsFile {
  createSyncAccessHandle?(options?: { mode?: string }): Promise<OpfsSyncAccessHandle>;
}

/** Options of {@link OpfsBackend.open}. */
export interface OpfsBackendOptions {
  /**
   * Disk size in 512-byte sectors. A missing file is created with this size; an existing
   * image must already have exactly this size (it is never truncated or grown: a mismatch is
   * refused with `invalid_argument`). Without it the file must exist.
   */
  sectors?: number;
  /**
   * Open read-only: the device then offers VIRTIO_BLK_F_RO and write() refuses. The file must
   * exist. Where the browser supports it the handle is opened in mode `read-only`, which does
   * not take the exclusive lock. @default false
   */
  readOnly?: boolean;
}

/** Wraps a DOMException (or anything thrown by the handle) as a typed error. */
function wrap(e: unknown, what: string): VirtioError {
  if (e instanceof VirtioError) return e;
  const name = (e as { name?: unknown } | null)?.name;
  // InvalidStateError: the handle was closed (by us or by the browser, e.g. storage cleared).
  // NoModificationAllowedError: another handle holds the file's lock.
  const code =
    name === 'NotFoundError' ? Code.NotFound :
    name === 'InvalidStateError' || name === 'NoModificationAllowedError' ? Code.FailedPrecondition :
    name === 'QuotaExceededError' ? Code.ResourceExhausted :
    name === 'TypeError' ? Code.InvalidArgument :
    Code.IoError;
  return new VirtioError(code, `${what}: ${(e as { message?: unknown } | null)?.message ?? String(e)}`, { cause: e });
}

/** Splits an OPFS path (`a/b/disk.img`) into its parts; empty, `.` and `..` parts are refused. */
function splitPath(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '');
  if (parts.length === 0 || parts.some((p) => p === '.' || p === '..')) {
    throw new VirtioError(Code.InvalidArgument, `OPFS path '${path}' must name a file (no '.' or '..' parts)`);
  }
  return parts;
}

/** The OPFS root directory, or `unsupported`. */
async function opfsRoot(): Promise<OpfsDir> {
  const storage = (globalThis as { navigator?: { storage?: { getDirectory?: () => Promise<OpfsDir> } } }).navigator?.storage;
  if (typeof storage?.getDirectory !== 'function') throw new VirtioError(Code.Unsupported, 'the Origin Private File System (navigator.storage.getDirectory) is not available here');
  try {
    return await storage.getDirectory();
  } catch (e) {
    throw wrap(e, 'navigator.storage.getDirectory()');
  }
}

/** A disk image in the Origin Private File System as a BlkBackend (dedicated workers only). */
export class OpfsBackend implements BlkBackend {
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Opened read-only (the device offers VIRTIO_BLK_F_RO). */
  readonly readOnly: boolean;
  private handle: OpfsSyncAccessHandle | null;

  private constructor(handle: OpfsSyncAccessHandle, capacity: number, readOnly: boolean) {
    this.handle = handle;
    this.capacity = capacity;
    this.readOnly = readOnly;
  }

  /**
   * Opens the OPFS file `path` (`/`-separated; missing directories are created when the file
   * is), or creates it when it is missing and `sectors` is given. Must run in a dedicated
   * worker: elsewhere it refuses with `unsupported`. See {@link OpfsBackendOptions.sectors}
   * for how sizes must agree.
   */
  static async open(path: string, opts: OpfsBackendOptions = {}): Promise<OpfsBackend> {
    const want = opts.sectors;
    if (want !== undefined && (!Number.isSafeInteger(want) || want < 1 || want * SECTOR > Number.MAX_SAFE_INTEGER)) {
      throw new VirtioError(Code.InvalidArgument, `sectors ${want} must be a positive integer`);
    }
    const ro = opts.readOnly ?? false;
    const parts = splitPath(path);
    const create = want !== undefined && !ro;
    let dir = await opfsRoot();
    let file: OpfsFile;
    try {
      for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p, { create });
      file = await dir.getFileHandle(parts[parts.length - 1]!, { create });
    } catch (e) {
      throw wrap(e, `cannot open OPFS file '${path}'`);
    }
    if (typeof file.createSyncAccessHandle !== 'function') {
      throw new VirtioError(Code.Unsupported, 'FileSystemSyncAccessHandle is only available in a dedicated Web Worker');
    }
    let handle: OpfsSyncAccessHandle;
    try {
      // Browsers without access modes ignore the dictionary and open read-write (exclusive).
      handle = await file.createSyncAccessHandle(ro ? { mode: 'read-only' } : {});
    } catch (e) {
      const err = wrap(e, `cannot open OPFS file '${path}'`);
      // In a window the method may exist but throw (Chromium exposes it on every FileSystemFileHandle).
      if (typeof (globalThis as { document?: unknown }).document !== 'undefined') {
        throw new VirtioError(Code.Unsupported, 'FileSystemSyncAccessHandle is only available in a dedicated Web Worker', { cause: e });
      }
      throw err;
    }
    try {
      let size = handle.getSize();
      if (size === 0 && create) {
        handle.truncate(want * SECTOR); // a new file: zeros
        handle.flush();
        size = handle.getSize();
      }
      if (want !== undefined && size !== want * SECTOR) {
        throw new VirtioError(Code.InvalidArgument, `OPFS file '${path}' is ${size} bytes, not the ${want * SECTOR} asked (an existing image is never truncated or grown)`);
      }
      if (size === 0 || size % SECTOR) throw new VirtioError(Code.InvalidArgument, `OPFS file '${path}' is ${size} bytes, not a whole number of sectors`);
      return new OpfsBackend(handle, size / SECTOR, ro);
    } catch (e) {
      handle.close();
      throw wrap(e, `cannot open OPFS file '${path}'`);
    }
  }

  /**
   * Wraps a sync access handle the caller opened (the file's size must be a positive multiple
   * of 512). The backend owns it from now on: close() closes it.
   */
  static fromHandle(handle: OpfsSyncAccessHandle, opts: { readOnly?: boolean } = {}): OpfsBackend {
    let size: number;
    try {
      size = handle.getSize();
    } catch (e) {
      throw wrap(e, 'sync access handle');
    }
    if (size === 0 || size % SECTOR) throw new VirtioError(Code.InvalidArgument, `the file is ${size} bytes, not a whole number of sectors`);
    return new OpfsBackend(handle, size / SECTOR, opts.readOnly ?? false);
  }

  /** True after close(). */
  get closed(): boolean {
    return this.handle === null;
  }

  /** The open handle, after checking that [sector, sector + bytes) lies on the disk. */
  private check(op: string, sector: number, bytes: number): OpfsSyncAccessHandle {
    if (!this.handle) throw new VirtioError(Code.FailedPrecondition, `${op}: the OPFS backend is closed`);
    if (!Number.isSafeInteger(sector) || sector < 0 || !Number.isSafeInteger(bytes) || bytes < 0 || bytes % SECTOR) {
      throw new VirtioError(Code.InvalidArgument, `${op}: sector ${sector}, ${bytes} bytes is not a whole-sector range`);
    }
    if (sector + bytes / SECTOR > this.capacity) {
      throw new VirtioError(Code.InvalidArgument, `${op}: sectors [${sector}, ${sector + bytes / SECTOR}) lie beyond the disk's ${this.capacity}`);
    }
    return this.handle;
  }

  /** Reads `len` bytes (whole sectors) at `sector`. */
  async read(sector: number, len: number): Promise<Uint8Array> {
    const h = this.check('read', sector, len);
    const buf = new Uint8Array(len);
    let n: number;
    try {
      n = h.read(buf, { at: sector * SECTOR });
    } catch (e) {
      throw wrap(e, `read at sector ${sector}`);
    }
    if (n !== len) throw new VirtioError(Code.IoError, `short read at sector ${sector}: ${n} of ${len} bytes`);
    return buf;
  }

  /** Writes `data` (whole sectors) at `sector`; in the file when the promise resolves. */
  async write(sector: number, data: Uint8Array): Promise<void> {
    const h = this.check('write', sector, data.length);
    if (this.readOnly) throw new VirtioError(Code.FailedPrecondition, 'write: the OPFS backend is read-only');
    let n: number;
    try {
      n = h.write(data, { at: sector * SECTOR });
    } catch (e) {
      throw wrap(e, `write at sector ${sector}`);
    }
    if (n !== data.length) throw new VirtioError(Code.IoError, `short write at sector ${sector}: ${n} of ${data.length} bytes`);
  }

  /** Makes written data durable (the handle's flush()). */
  async flush(): Promise<void> {
    const h = this.check('flush', 0, 0);
    if (this.readOnly) return;
    try {
      h.flush();
    } catch (e) {
      throw wrap(e, 'flush');
    }
  }

  /** Writes `count` sectors of zeros at `sector`, 1 MiB at a time. */
  async writeZeroes(sector: number, count: number): Promise<void> {
    if (!Number.isSafeInteger(count) || count < 0) throw new VirtioError(Code.InvalidArgument, `writeZeroes: count ${count}`);
    this.check('writeZeroes', sector, count * SECTOR);
    const chunk = new Uint8Array(Math.min(count, 2048) * SECTOR);
    for (let s = sector; s < sector + count; s += chunk.length / SECTOR) {
      const n = Math.min(chunk.length / SECTOR, sector + count - s);
      await this.write(s, n === chunk.length / SECTOR ? chunk : chunk.subarray(0, n * SECTOR));
    }
  }

  /**
   * Flushes (unless read-only) and closes the handle, releasing the file's lock. Idempotent,
   * and quiet when the handle was already closed underneath (by its opener, or by the browser);
   * a flush that fails otherwise is thrown as a typed error after the handle is closed.
   */
  close(): void {
    const h = this.handle;
    if (!h) return;
    this.handle = null;
    let err: VirtioError | null = null;
    try {
      if (!this.readOnly) h.flush();
    } catch (e) {
      if ((e as { name?: unknown } | null)?.name !== 'InvalidStateError') err = wrap(e, 'close: flush');
    }
    try {
      h.close();
    } catch {
      // Closing releases the lock; a handle that cannot be closed holds none.
    }
    if (err) throw err;
  }

  /** Deletes the OPFS file `path` (it must not be open). Missing files are `not_found`. */
  static async remove(path: string): Promise<void> {
    const parts = splitPath(path);
    let dir = await opfsRoot();
    try {
      for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p);
      await dir.removeEntry(parts[parts.length - 1]!);
    } catch (e) {
      throw wrap(e, `cannot remove OPFS file '${path}'`);
    }
  }
}
