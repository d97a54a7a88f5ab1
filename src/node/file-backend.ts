// A virtio-blk backend over a file, through Node's fs (the `vdpa-wasm/node` entry point, so
// browser bundles never see node:fs). Every request is a positioned read/write on one handle.

import { open, type FileHandle } from 'node:fs/promises';
import { VirtioError, Code } from '../errors.ts';
import type { BlkBackend } from '../devices/blk.ts';

const SECTOR = 512;

/** A disk image file as a BlkBackend. */
export class FileBackend implements BlkBackend {
  /** Disk size in sectors. */
  readonly capacity: number;
  private readonly fh: FileHandle;

  private constructor(fh: FileHandle, capacity: number) {
    this.fh = fh;
    this.capacity = capacity;
  }

  /**
   * Opens (or creates, with `size` bytes) a disk image. The size must be a whole number of
   * 512-byte sectors.
   */
  static async open(path: string, opts: { size?: number; readOnly?: boolean } = {}): Promise<FileBackend> {
    const fh = await open(path, opts.readOnly ? 'r' : opts.size !== undefined ? 'w+' : 'r+');
    try {
      if (opts.size !== undefined) {
        if (!Number.isSafeInteger(opts.size) || opts.size <= 0 || opts.size % SECTOR) throw new VirtioError(Code.InvalidArgument, `size ${opts.size} must be a positive multiple of ${SECTOR}`);
        await fh.truncate(opts.size);
      }
      const { size } = await fh.stat();
      if (size === 0 || size % SECTOR) throw new VirtioError(Code.InvalidArgument, `${path} is ${size} bytes, not a whole number of sectors`);
      return new FileBackend(fh, size / SECTOR);
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
