// The platform: one WebAssembly.Memory standing for DMA-able memory, the data-plane module
// instantiated on it, and the allocators that lay it out (DESIGN.md "Memory and state").
//
//   0 ─────── 64 KiB ─────────────── privBase + privSize ─────────── ramBase + ramSize
//   │ wasm static │ private: state blocks, IOTLB tables, │ RAM: rings and buffers, what │
//   │   data      │ batch records (never mapped to a     │ the default (identity) map   │
//   │             │ device)                               │ gives devices: IOVA = offset │
//
// That is the layout create() makes. An attached handle may put the two arenas in either order
// (private memory above RAM too): arenas are told apart by their ranges, never by their order.
//
// foreign() opens a memory someone else owns (an emulator's, whose guest RAM lies somewhere in
// it): the caller says where RAM is, and the private arena goes where the caller says or in
// pages foreign() grows onto the memory. The owner may grow the memory at any time: an
// unshared memory's old ArrayBuffer is then detached, so the views below are getters that
// re-make themselves when they find their buffer detached: one `length` load per access (not
// `byteLength`, which V8 11 does not inline: 6× slower in bench/pci.bench.ts), no allocation
// unless a grow happened. A shared memory's buffers are never detached: the old
// views keep seeing every byte that existed when the platform was made, which is all it uses.

import { VirtioError, Code } from '../errors.ts';
import '../loader/wasm-global.ts';
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

/**
 * What a worker needs to open the same platform: post it with postMessage. The arenas may lie
 * in either order but must not overlap each other or the first 64 KiB (the module's static
 * data), and must fit the memory.
 */
export interface PlatformHandle {
  /** The memory (shared, for another worker). */
  memory: WebAssembly.Memory;
  /** The compiled ring module for that kind of memory. */
  module: WebAssembly.Module;
  /** First byte of private memory. */
  privBase: number;
  /** Bytes of private memory. */
  privSize: number;
  /** First byte of RAM. */
  ramBase: number;
  /** Bytes of RAM. */
  ramSize: number;
  /**
   * The part of private memory the attaching side may allocate from (carved out of the
   * creator's allocator by {@link Platform.handle}). Without it the attached side's
   * `priv` allocator refuses every allocation.
   */
  privSlice?: {
    /** Memory offset of the slice. */
    base: number;
    /** Bytes in the slice. */
    size: number;
  };
  /** The part of RAM the attaching side may allocate from; without it `ram` refuses. */
  ramSlice?: {
    /** Memory offset of the slice. */
    base: number;
    /** Bytes in the slice. */
    size: number;
  };
}

/** Options of {@link Platform.foreign}: a memory the caller owns and where guest RAM lies in it. */
export interface ForeignPlatformOptions {
  /** The memory (shared or not), e.g. an emulator's exported memory. */
  memory: WebAssembly.Memory;
  /** Offset of guest RAM in the memory (any byte offset at or above 64 KiB). */
  ramBase: number;
  /** Bytes of guest RAM. */
  ramSize: number;
  /**
   * Offset of the private arena (state blocks, IOTLB tables, doorbells), above or below RAM.
   * Without it foreign() grows the memory by `privateSize` and puts the arena in the new pages.
   */
  privBase?: number;
  /** Bytes of the private arena (rounded up to 64 KiB when foreign() grows it). @default 1 MiB */
  privateSize?: number;
  /**
   * Let {@link Platform.ram} allocate from guest RAM. Off by default: the guest owns its RAM and
   * the package would hand out bytes the guest uses. Turn it on when this side plays the guest.
   * @default false
   */
  allocateRam?: boolean;
  /** A compiled ring module to use instead of the embedded release build that fits the memory. */
  module?: WebAssembly.Module;
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
  /**
   * Allocator for state blocks, tables and records: the whole private arena on the creating
   * side, the handle's `privSlice` on an attached side, or (attached without a slice) a closed
   * allocator that throws VirtioError(FailedPrecondition) on every alloc().
   */
  readonly priv: Allocator;
  /** Allocator for rings and buffers: the whole RAM, the handle's `ramSlice`, or closed (see {@link priv}). */
  readonly ram: Allocator;
  private _u8!: Uint8Array;
  private _u16!: Uint16Array;
  private _u32!: Uint32Array;
  private _i32!: Int32Array;
  private _view!: DataView;
  private identity?: Iotlb;

  /** Byte view of the whole memory (re-made after a grow detached the old buffer). */
  get u8(): Uint8Array {
    return this._u8.length !== 0 ? this._u8 : this.remap()._u8;
  }
  /** u16 view of the whole memory (index = offset / 2). */
  get u16(): Uint16Array {
    return this._u8.length !== 0 ? this._u16 : this.remap()._u16;
  }
  /** u32 view of the whole memory (index = offset / 4). */
  get u32(): Uint32Array {
    return this._u8.length !== 0 ? this._u32 : this.remap()._u32;
  }
  /** i32 view of the whole memory (index = offset / 4). */
  get i32(): Int32Array {
    return this._u8.length !== 0 ? this._i32 : this.remap()._i32;
  }
  /** DataView of the whole memory (little-endian accessors for spec layouts). */
  get view(): DataView {
    return this._u8.length !== 0 ? this._view : this.remap()._view;
  }

  /**
   * Re-makes the views over the memory's current buffer. The getters do it by themselves when
   * a grow detached the old buffer; call it after growing a shared memory to see the new pages.
   */
  remap(): this {
    const buf = this.memory.buffer;
    this._u8 = new Uint8Array(buf);
    this._u16 = new Uint16Array(buf);
    this._u32 = new Uint32Array(buf);
    this._i32 = new Int32Array(buf);
    this._view = new DataView(buf);
    return this;
  }

  private constructor(h: PlatformHandle, shared: boolean, mode: 'create' | 'attach' | 'foreign', allocateRam = true) {
    checkHandle(h);
    this.memory = h.memory;
    this.module = h.module;
    this.shared = shared;
    this.privBase = h.privBase;
    this.privSize = h.privSize;
    this.ramBase = h.ramBase;
    this.ramSize = h.ramSize;
    this.remap();
    // The creator owns both arenas. An attached side may allocate only from the slices the
    // creator carved out for it: with the whole arena it would hand out the creator's offsets
    // again (a worker's queue state over the driver's rings).
    const refuse = (arena: string) =>
      Allocator.closed(`this platform was attached without a ${arena} slice, so it cannot allocate ${arena} memory; ` +
        `make the handle with handle({ priv, ram }) on the creating side to give it one`);
    if (mode === 'create') {
      this.priv = new Allocator(h.privBase, h.privSize);
      this.ram = new Allocator(h.ramBase, h.ramSize);
    } else if (mode === 'foreign') {
      this.priv = new Allocator(h.privBase, h.privSize);
      this.ram = allocateRam ? new Allocator(h.ramBase, h.ramSize)
        : Allocator.closed('guest RAM of a foreign platform belongs to the guest; open it with foreign({ allocateRam: true }) to allocate there');
    } else {
      this.priv = h.privSlice ? new Allocator(h.privSlice.base, h.privSlice.size) : refuse('priv');
      this.ram = h.ramSlice ? new Allocator(h.ramSlice.base, h.ramSlice.size) : refuse('ram');
    }
    this.exports = instantiate(h.module, h.memory);
  }

  /**
   * Creates a memory with the given layout and instantiates the ring module on it. Throws
   * VirtioError(InvalidArgument) for sizes that are not positive integers or a layout over
   * 4 GiB, ResourceExhausted when the engine cannot make the memory, Unsupported for
   * `shared: true` on a page that is not cross-origin isolated (COOP/COEP headers missing).
   */
  static create(opts: PlatformOptions = {}): Platform {
    const rawRam = opts.ramSize ?? 16 << 20;
    const rawPriv = opts.privateSize ?? 8 << 20;
    if (!Number.isSafeInteger(rawRam) || !Number.isSafeInteger(rawPriv) || rawRam <= 0 || rawPriv <= 0) {
      throw new VirtioError(Code.InvalidArgument, `ramSize ${String(rawRam)} and privateSize ${String(rawPriv)} must be positive integers`);
    }
    const ramSize = roundPages(rawRam);
    const privSize = roundPages(rawPriv);
    const shared = opts.shared ?? false;
    const privBase = PAGE;
    const ramBase = privBase + privSize;
    const pages = (ramBase + ramSize) / PAGE;
    if (pages > 65536) throw new VirtioError(Code.InvalidArgument, `layout needs ${pages} pages, over the 4 GiB of wasm32`);
    // A page that is not cross-origin isolated can make a shared memory in some engines but
    // cannot post it to a worker (DataCloneError much later): refuse it here, naming the fix.
    if (shared && (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === false) {
      throw new VirtioError(Code.Unsupported, 'shared: true needs a cross-origin isolated page (crossOriginIsolated is false): '
        + 'serve it with the headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp');
    }
    let memory: WebAssembly.Memory;
    try {
      memory = new WebAssembly.Memory(shared ? { initial: pages, maximum: pages, shared: true } : { initial: pages, maximum: pages });
    } catch (e) {
      throw new VirtioError(Code.ResourceExhausted, `cannot create a ${shared ? 'shared ' : ''}memory of ${pages} pages: ${(e as Error).message}`, { cause: e });
    }
    const module = opts.module ?? defaultModule(shared);
    return new Platform({ memory, module, privBase, privSize, ramBase, ramSize }, shared, 'create');
  }

  /**
   * Opens a platform made elsewhere (another worker) from its handle. The attached side never
   * allocates what the creator allocates: its `priv`/`ram` allocators cover only the handle's
   * slices, and an arena without a slice refuses every allocation with
   * VirtioError(FailedPrecondition) (so, without a `priv` slice, no queue or IOTLB can be made
   * there: make the handle with `handle({ priv, ram })`). Attach each handle with slices once:
   * two platforms attached from the same handle share its slices.
   * Throws VirtioError(InvalidArgument) for a handle whose layout is inconsistent (arenas that
   * overlap, lie in the first 64 KiB or outside the memory; slices outside their arena).
   */
  static attach(h: PlatformHandle): Platform {
    if (typeof h !== 'object' || h === null || !(h.memory instanceof WebAssembly.Memory)) {
      throw new VirtioError(Code.InvalidArgument, 'a platform handle needs a WebAssembly.Memory');
    }
    const shared = typeof SharedArrayBuffer !== 'undefined' && h.memory.buffer instanceof SharedArrayBuffer;
    return new Platform(h, shared, 'attach');
  }

  /**
   * Opens a memory the caller owns (an emulator's) whose guest RAM is [ramBase, +ramSize).
   * The private arena is [privBase, +privateSize) if given (above or below RAM, apart from it),
   * else `privateSize` bytes in pages grown onto the memory here. Nothing is written into the
   * memory (the ring module has no data segments and no start function; allocators keep their
   * books in JS). The owner may grow the memory later (see {@link u8}). Throws
   * VirtioError(InvalidArgument) for a layout that overlaps, starts below 64 KiB or lies outside
   * the memory, ResourceExhausted when the memory cannot grow by the private arena.
   */
  static foreign(opts: ForeignPlatformOptions): Platform {
    if (typeof opts !== 'object' || opts === null || !(opts.memory instanceof WebAssembly.Memory)) {
      throw new VirtioError(Code.InvalidArgument, 'foreign() needs { memory: WebAssembly.Memory, ramBase, ramSize }');
    }
    const { memory } = opts;
    const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
    const rawPriv = opts.privateSize ?? 1 << 20;
    if (!isCount(rawPriv) || rawPriv === 0) throw new VirtioError(Code.InvalidArgument, `privateSize ${String(rawPriv)} must be a positive integer`);
    if (!isCount(opts.ramBase) || !isCount(opts.ramSize) || opts.ramBase + opts.ramSize > memory.buffer.byteLength) {
      throw new VirtioError(Code.InvalidArgument, `guest RAM [${String(opts.ramBase)}, +${String(opts.ramSize)}) is not inside the memory`);
    }
    let privBase = opts.privBase;
    let privSize = rawPriv;
    if (privBase === undefined) {
      privSize = roundPages(rawPriv);
      try {
        privBase = memory.grow(privSize / PAGE) * PAGE;
      } catch (e) {
        throw new VirtioError(Code.ResourceExhausted, `cannot grow the memory by ${privSize / PAGE} pages for the private arena: ${(e as Error).message}`, { cause: e });
      }
    }
    const module = opts.module ?? defaultModule(shared);
    return new Platform({ memory, module, privBase, privSize, ramBase: opts.ramBase, ramSize: opts.ramSize }, shared, 'foreign', opts.allocateRam ?? false);
  }

  /**
   * A handle for another worker. Give it slices (carved from this side's allocators, so never
   * handed out here again) if the other side will allocate: `priv` bytes for its queue state
   * blocks, records and IOTLB tables, `ram` bytes for rings and buffers. Without a slice the
   * attached side's allocator for that arena refuses (FailedPrecondition); without any it can
   * only read and write memory. Throws like {@link Allocator.alloc} when a slice does not fit.
   */
  handle(slices: { priv?: number; ram?: number } = {}): PlatformHandle {
    const h: PlatformHandle = {
      memory: this.memory, module: this.module,
      privBase: this.privBase, privSize: this.privSize, ramBase: this.ramBase, ramSize: this.ramSize,
    };
    const priv = slices.priv ?? 0;
    const ram = slices.ram ?? 0;
    for (const [n, v] of [['priv', priv], ['ram', ram]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new VirtioError(Code.InvalidArgument, `${n} slice ${v} must be a non-negative integer`);
    }
    // Carve both before handing either out, so a refused ram slice leaks no priv slice.
    const privBase = priv > 0 ? this.priv.alloc(priv, 64) : -1;
    let ramBase = -1;
    try {
      if (ram > 0) ramBase = this.ram.alloc(ram, 4096);
    } catch (e) {
      if (privBase >= 0) this.priv.release(privBase);
      throw e;
    }
    if (privBase >= 0) h.privSlice = { base: privBase, size: priv };
    if (ramBase >= 0) h.ramSlice = { base: ramBase, size: ram };
    return h;
  }

  /**
   * Returns an allocation of {@link priv} or {@link ram} to the arena whose range holds
   * `offset` (arenas are found by range, whichever lies lower in memory). Throws
   * VirtioError(InvalidArgument), changing nothing, for an offset that is not a live
   * allocation of either.
   */
  release(offset: number): void {
    if (this.priv.contains(offset)) this.priv.release(offset);
    else if (this.ram.contains(offset)) this.ram.release(offset);
    else throw new VirtioError(Code.InvalidArgument, `offset ${offset} is not in an arena this platform allocates from`);
  }

  /** The shared default map: RAM with IOVA = memory offset, read/write. */
  get identityMap(): Iotlb {
    if (!this.identity) {
      this.identity = new Iotlb(this, 1);
      this.identity.setIdentity();
    }
    return this.identity;
  }

  /**
   * Allocates a RAM buffer (for descriptors to point at). Returns its offset = identity IOVA.
   * Throws like {@link Allocator.alloc} (InvalidArgument for a size that is not a positive
   * integer or an alignment that is not a power of two). Free it with {@link release}.
   */
  allocBuffer(size: number, align = 64): number {
    return this.ram.alloc(size, align);
  }

  /** Copies bytes out of memory. Throws VirtioError(InvalidArgument) for a range outside the memory or non-integer/negative arguments. */
  read(addr: number, len: number): Uint8Array {
    this.checkRange(addr, len);
    return this.u8.slice(addr, addr + len);
  }

  /** Copies bytes into memory. Throws VirtioError(InvalidArgument) for a range outside the memory or data that is not array-like. */
  write(addr: number, data: ArrayLike<number>): void {
    if (typeof data !== 'object' || data === null) throw new VirtioError(Code.InvalidArgument, 'write needs an array of bytes');
    this.checkRange(addr, data.length);
    this.u8.set(data, addr);
  }

  private checkRange(addr: number, len: number): void {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0 || addr + len > this.u8.length) {
      throw new VirtioError(Code.InvalidArgument, `range [${addr}, +${len}) is outside the memory`);
    }
  }
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Checks a handle's layout: arenas above the static data, apart, inside the memory; slices inside their arena. */
function checkHandle(h: PlatformHandle): void {
  const bad = (why: string): never => {
    throw new VirtioError(Code.InvalidArgument, `platform handle: ${why}`);
  };
  if (!(h.memory instanceof WebAssembly.Memory)) bad('memory is not a WebAssembly.Memory');
  if (!(h.module instanceof WebAssembly.Module)) bad('module is not a WebAssembly.Module');
  const { privBase, privSize, ramBase, ramSize } = h;
  if (![privBase, privSize, ramBase, ramSize].every(isCount)) bad('privBase, privSize, ramBase and ramSize must be non-negative integers');
  if (privSize === 0 || ramSize === 0) bad('privSize and ramSize must be positive');
  // The module's static data lives in the first page (asconfig initialMemory 1).
  if (privBase < PAGE || ramBase < PAGE) bad(`arenas must start at or above ${PAGE} (the module's static data)`);
  if (privBase < ramBase + ramSize && ramBase < privBase + privSize) bad(`private [${privBase}, +${privSize}) overlaps RAM [${ramBase}, +${ramSize})`);
  const len = h.memory.buffer.byteLength;
  if (privBase + privSize > len || ramBase + ramSize > len) bad(`the memory (${len} bytes) is smaller than the layout says`);
  for (const [name, sl, base, size] of [['privSlice', h.privSlice, privBase, privSize], ['ramSlice', h.ramSlice, ramBase, ramSize]] as const) {
    if (sl === undefined) continue;
    if (typeof sl !== 'object' || sl === null || !isCount(sl.base) || !isCount(sl.size) || sl.size === 0) bad(`${name} must be { base, size } with a positive size`);
    if (sl.base < base || sl.base + sl.size > base + size) bad(`${name} [${sl.base}, +${sl.size}) is outside its arena [${base}, +${size})`);
  }
}
