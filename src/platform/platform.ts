// The platform: one WebAssembly.Memory standing for DMA-able memory, the data-plane module
// instantiated on it, and the allocators that lay it out (DESIGN.md "Memory and state").
//
//   0 ─────── 64 KiB ─────────────── privBase + privSize ─────────── ramBase + ramSize
//   │ wasm static │ private: state blocks, IOTLB tables, │ RAM: rings and buffers, what │
//   │   data      │ batch records (never mapped to a     │ the default (identity) map   │
//   │             │ device)                               │ gives devices: IOVA = offset │

import { VirtioError, Code } from '../errors.ts';
import { defaultModule, instantiate } from '../loader/wasm.ts';
import type { RingExports } from '../loader/exports.ts';
import { Allocator } from './allocator.ts';
import { Iotlb } from './iotlb.ts';

const PAGE = 65536;

/** Options of {@link Platform.create}. */
export interface PlatformOptions {
  /** Bytes of RAM for rings and buffers (rounded up to 64 KiB). @default 16 MiB */
  ramSize?: number;
  /** Bytes of private memory for state blocks, tables, records and device staging (rounded up to 64 KiB). @default 8 MiB */
  privateSize?: number;
  /** Make the memory shared, so workers can map the same bytes. @default false */
  shared?: boolean;
  /** A compiled ring module to use instead of the embedded release build (e.g. the debug build). */
  module?: WebAssembly.Module;
}

/** What a worker needs to open the same platform: post it with postMessage. */
export interface PlatformHandle {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  privBase: number;
  privSize: number;
  ramBase: number;
  ramSize: number;
  /** The slice of each arena the attaching side may allocate from, if any. */
  privSlice?: { base: number; size: number };
  ramSlice?: { base: number; size: number };
}

function roundPages(n: number): number {
  return Math.ceil(n / PAGE) * PAGE;
}

/** One memory, the ring module on it, and its layout. */
export class Platform {
  /** The memory every queue and buffer lives in. */
  readonly memory: WebAssembly.Memory;
  /** The compiled ring module (post it to workers with the memory). */
  readonly module: WebAssembly.Module;
  /** The ring module's exports, instantiated on {@link memory}. */
  readonly exports: RingExports;
  /** True if {@link memory} is shared. */
  readonly shared: boolean;
  /** First byte of private memory. */
  readonly privBase: number;
  /** Bytes of private memory. */
  readonly privSize: number;
  /** First byte of RAM (IOVA = offset under the identity map). */
  readonly ramBase: number;
  /** Bytes of RAM. */
  readonly ramSize: number;
  /** Allocator for state blocks, tables and records. */
  readonly priv: Allocator;
  /** Allocator for rings and buffers. */
  readonly ram: Allocator;
  /** Byte view of the whole memory. */
  readonly u8: Uint8Array;
  /** u32 view of the whole memory (index = offset / 4). */
  readonly u32: Uint32Array;
  /** i32 view of the whole memory (index = offset / 4). */
  readonly i32: Int32Array;
  /** DataView of the whole memory (little-endian accessors for spec layouts). */
  readonly view: DataView;
  private identity?: Iotlb;

  private constructor(h: PlatformHandle, shared: boolean) {
    this.memory = h.memory;
    this.module = h.module;
    this.shared = shared;
    this.privBase = h.privBase;
    this.privSize = h.privSize;
    this.ramBase = h.ramBase;
    this.ramSize = h.ramSize;
    const buf = h.memory.buffer;
    if (buf.byteLength < h.ramBase + h.ramSize) throw new VirtioError(Code.InvalidArgument, 'memory is smaller than the layout says');
    this.u8 = new Uint8Array(buf);
    this.u32 = new Uint32Array(buf);
    this.i32 = new Int32Array(buf);
    this.view = new DataView(buf);
    const ps = h.privSlice ?? { base: h.privBase, size: h.privSize };
    const rs = h.ramSlice ?? { base: h.ramBase, size: h.ramSize };
    this.priv = new Allocator(ps.base, ps.size);
    this.ram = new Allocator(rs.base, rs.size);
    this.exports = instantiate(h.module, h.memory);
  }

  /** Creates a memory with the given layout and instantiates the ring module on it. */
  static create(opts: PlatformOptions = {}): Platform {
    const ramSize = roundPages(opts.ramSize ?? 16 << 20);
    const privSize = roundPages(opts.privateSize ?? 8 << 20);
    const shared = opts.shared ?? false;
    if (ramSize <= 0 || privSize <= 0) throw new VirtioError(Code.InvalidArgument, 'ramSize and privateSize must be positive');
    const privBase = PAGE;
    const ramBase = privBase + privSize;
    const pages = (ramBase + ramSize) / PAGE;
    if (pages > 65536) throw new VirtioError(Code.InvalidArgument, `layout needs ${pages} pages, over the 4 GiB of wasm32`);
    let memory: WebAssembly.Memory;
    try {
      memory = new WebAssembly.Memory(shared ? { initial: pages, maximum: pages, shared: true } : { initial: pages, maximum: pages });
    } catch (e) {
      throw new VirtioError(Code.ResourceExhausted, `cannot create a ${shared ? 'shared ' : ''}memory of ${pages} pages: ${(e as Error).message}`, { cause: e });
    }
    const module = opts.module ?? defaultModule(shared);
    return new Platform({ memory, module, privBase, privSize, ramBase, ramSize }, shared);
  }

  /** Opens a platform made elsewhere (another worker) from its handle. */
  static attach(h: PlatformHandle): Platform {
    const shared = typeof SharedArrayBuffer !== 'undefined' && h.memory.buffer instanceof SharedArrayBuffer;
    return new Platform(h, shared);
  }

  /**
   * A handle for another worker. Give it slices (carved from this side's allocators) if the
   * other side will allocate; otherwise it can only open queues made here.
   */
  handle(slices: { priv?: number; ram?: number } = {}): PlatformHandle {
    const h: PlatformHandle = {
      memory: this.memory, module: this.module,
      privBase: this.privBase, privSize: this.privSize, ramBase: this.ramBase, ramSize: this.ramSize,
    };
    if (slices.priv) h.privSlice = { base: this.priv.alloc(slices.priv, 64), size: slices.priv };
    if (slices.ram) h.ramSlice = { base: this.ram.alloc(slices.ram, 4096), size: slices.ram };
    return h;
  }

  /** The shared default map: RAM with IOVA = memory offset, read/write. */
  get identityMap(): Iotlb {
    if (!this.identity) {
      this.identity = new Iotlb(this, 1);
      this.identity.setIdentity();
    }
    return this.identity;
  }

  /** Allocates a RAM buffer (for descriptors to point at). Returns its offset = identity IOVA. */
  allocBuffer(size: number, align = 64): number {
    return this.ram.alloc(size, align);
  }

  /** Copies bytes out of memory. Throws for a range outside the memory. */
  read(addr: number, len: number): Uint8Array {
    this.checkRange(addr, len);
    return this.u8.slice(addr, addr + len);
  }

  /** Copies bytes into memory. Throws for a range outside the memory. */
  write(addr: number, data: ArrayLike<number>): void {
    this.checkRange(addr, data.length);
    this.u8.set(data, addr);
  }

  private checkRange(addr: number, len: number): void {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0 || addr + len > this.u8.length) {
      throw new VirtioError(Code.InvalidArgument, `range [${addr}, +${len}) is outside the memory`);
    }
  }
}
