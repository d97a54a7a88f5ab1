// Dirty-page log of a platform's guest RAM (VHOST_F_LOG_ALL + VHOST_SET_LOG_BASE semantics at
// the device API): while started, every byte a device on this platform writes into driver
// memory marks its 4 KiB page in a bitmap laid out as vhost's log — one bit per page of
// guest-physical address, bit (gpa / 4096) % 8 of byte gpa / 32768 (include/uapi/linux/vhost.h
// VHOST_LOG_PAGE 0x1000). The marking runs in wasm on the datapath (assembly/dirty.ts); the
// VMM reads and clears it between pre-copy rounds.
//
// IOVA vs GPA: descriptors carry IOVAs, which the device's IOTLB translates to memory offsets
// before any access; the log is indexed by offset - base, the guest-physical address of the
// byte when guest RAM starts at `base`. A non-identity map (a vIOMMU) therefore changes which
// page a descriptor names, never how that page is logged — as vhost's log_write_hva goes
// HVA → GPA through the memory table, not through the IOTLB.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';

/** include/uapi/linux/vhost.h VHOST_LOG_PAGE. */
export const VHOST_LOG_PAGE = 0x1000;

/** Options of {@link DirtyLog}. */
export interface DirtyLogOptions {
  /** Memory offset of guest-physical address 0. @default platform.ramBase */
  base?: number;
  /** Bytes of guest RAM logged (a multiple of 4096). @default platform.ramSize */
  size?: number;
}

const active = new WeakMap<Platform, DirtyLog>();

/** A vhost-layout dirty bitmap over a platform's guest RAM, filled by the wasm datapath. */
export class DirtyLog {
  /** The platform whose devices log. */
  readonly platform: Platform;
  /** Memory offset of guest-physical address 0. */
  readonly base: number;
  /** Pages logged. */
  readonly pages: number;
  /** Memory offset of the bitmap (pages / 8 bytes, in private memory). */
  readonly bitmap: number;
  private readonly bytes: number;
  private on = false;
  private destroyed = false;

  constructor(platform: Platform, opts: DirtyLogOptions = {}) {
    const base = opts.base ?? platform.ramBase;
    const size = opts.size ?? platform.ramSize;
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(size) || base < 0 || size <= 0 || size % VHOST_LOG_PAGE !== 0 || base + size > platform.memory.buffer.byteLength) {
      throw new VirtioError(Code.InvalidArgument, `log range [${base}, +${size}) must be whole pages inside the memory`);
    }
    this.platform = platform;
    this.base = base;
    this.pages = size / VHOST_LOG_PAGE;
    this.bytes = Math.ceil(this.pages / 8);
    this.bitmap = platform.priv.alloc(this.bytes, 8);
    platform.u8.fill(0, this.bitmap, this.bitmap + this.bytes);
  }

  /** True while logging. */
  get logging(): boolean {
    return this.on;
  }

  /** Starts logging (clears the bitmap). One log per platform at a time (the wasm instance holds one). */
  start(): void {
    this.live();
    const other = active.get(this.platform);
    if (other && other !== this) throw new VirtioError(Code.FailedPrecondition, 'another dirty log is active on this platform');
    this.platform.u8.fill(0, this.bitmap, this.bitmap + this.bytes);
    this.platform.exports.dirty_log_set(this.bitmap, this.base, this.pages);
    active.set(this.platform, this);
    this.on = true;
  }

  /** Stops logging (the datapath's hooks go back to one untaken branch). */
  stop(): void {
    if (!this.on) return;
    this.platform.exports.dirty_log_set(0, 0, 0);
    active.delete(this.platform);
    this.on = false;
  }

  /** Pages marked since start or the last collect, ascending; clears them (read-and-clear, as a VMM's sync). */
  collect(): number[] {
    this.live();
    const u8 = this.platform.u8;
    const out: number[] = [];
    for (let i = 0; i < this.bytes; i++) {
      const b = u8[this.bitmap + i]!;
      if (b === 0) continue;
      u8[this.bitmap + i] = 0;
      for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
    }
    return out;
  }

  /** Pages marked now, without clearing. */
  get count(): number {
    const u8 = this.platform.u8;
    let n = 0;
    for (let i = 0; i < this.bytes; i++) {
      let b = u8[this.bitmap + i]!;
      while (b) { n += b & 1; b >>= 1; }
    }
    return n;
  }

  /** The bitmap bytes (a copy), in vhost's layout. */
  snapshot(): Uint8Array {
    this.live();
    return this.platform.u8.slice(this.bitmap, this.bitmap + this.bytes);
  }

  /** Stops and frees the bitmap. Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.stop();
    this.platform.priv.release(this.bitmap);
    this.destroyed = true;
  }

  private live(): void {
    if (this.destroyed) throw new VirtioError(Code.NotFound, 'the dirty log was destroyed');
  }
}
