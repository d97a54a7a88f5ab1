// A virtio-blk backend over a file, through Node's fs (the `vdpa-wasm/node` entry point, so
// browser bundles never see node:fs). Every request is a positioned read/write on one handle.

import { open, type FileHandle } from 'node:fs/promises';
import { VirtioError, Code } from '../errors.ts';
import type { BlkBackend } from '../devices/blk.ts';

const SECTOR = 512;

/** Options of {@link FileBackend.open}. */
export interface FileBackendOptions {
  /**
   * Image size in bytes (a positive multiple of 512). A missing file is created with this
   * size; an existing image must already have exactly this size (it is never truncated or
   * grown: a mismatch is refused with `invalid_argument`). Without it the file must exist.
   */
  size?: number;
  /** Open read-only: the device then offers VIRTIO_BLK_F_RO. The file must exist. @default false */
  readOnly?: boolean;
}

/** A disk image file as a BlkBackend. */
export class FileBackend implements BlkBackend {
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Opened read-only (the device offers VIRTIO_BLK_F_RO). */
  readonly readOnly: boolean;
  private readonly fh: FileHandle;

  private constructor(fh: FileHandle, capacity: number, readOnly: boolean) {
    this.fh = fh;
    this.capacity = capacity;
    this.readOnly = readOnly;
  }

  /**
   * Opens a disk image, or creates it when it is missing and `size` is given. An existing
   * image keeps its contents; see {@link FileBackendOptions.size} for how sizes must agree.
   */
  static async open(path: string, opts: FileBackendOptions = {}): Promise<FileBackend> {
    const want = opts.size;
    if (want !== undefined && (!Number.isSafeInteger(want) || want <= 0 || want % SECTOR)) {
      throw new VirtioError(Code.InvalidArgument, `size ${want} must be a positive multiple of ${SECTOR}`);
    }
    const ro = opts.readOnly ?? false;
    let fh: FileHandle;
    let created = false;
    try {
      fh = await open(path, ro ? 'r' : 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || ro || want === undefined) {
        throw new VirtioError((e as NodeJS.ErrnoException).code === 'ENOENT' ? Code.NotFound : Code.InvalidArgument, `cannot open ${path}`, { cause: e });
      }
      // 'wx+': create, failing if someone created it meanwhile (never truncates an image).
      fh = await open(path, 'wx+');
      created = true;
    }
    try {
      if (created) await fh.truncate(want!);
      const { size } = await fh.stat();
      if (want !== undefined && size !== want) {
        throw new VirtioError(Code.InvalidArgument, `${path} is ${size} bytes, not the ${want} asked (an existing image is never truncated or grown)`);
      }
      if (size === 0 || size % SECTOR) throw new VirtioError(Code.InvalidArgument, `${path} is ${size} bytes, not a whole number of sectors`);
      return new FileBackend(fh, size / SECTOR, ro);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(sector: number, len: number): Promise<Uint8Array> {
    const buf = new Uint8Array(len);
    const { bytesRead } = await this.fh.read(buf, 0, len, sector * SECTOR);
    if (bytesRead !== len) throw new VirtioError(Code.IoError, `short read at sector ${sector}`);
    return buf;
  }

  /** Reads straight into `buf` (the device's buffer): no array per read. */
  async readInto(sector: number, buf: Uint8Array): Promise<void> {
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, sector * SECTOR);
    if (bytesRead !== buf.length) throw new VirtioError(Code.IoError, `short read at sector ${sector}`);
  }

  async write(sector: number, data: Uint8Array): Promise<void> {
    const { bytesWritten } = await this.fh.write(data, 0, data.length, sector * SECTOR);
    if (bytesWritten !== data.length) throw new VirtioError(Code.IoError, `short write at sector ${sector}`);
  }

  async flush(): Promise<void> {
    await this.fh.datasync();
  }

  async writeZeroes(sector: number, count: number): Promise<void> {
    const chunk = new Uint8Array(Math.min(count, 2048) * SECTOR);
    for (let s = sector; s < sector + count; s += chunk.length / SECTOR) {
      const n = Math.min(chunk.length / SECTOR, sector + count - s);
      await this.write(s, n === chunk.length / SECTOR ? chunk : chunk.subarray(0, n * SECTOR));
    }
  }

  /** Closes the file. */
  async close(): Promise<void> {
    await this.fh.close();
  }
}
