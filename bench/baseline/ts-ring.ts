// Pure-TypeScript baseline of the virtio ring round trip (VIRTIO 1.3 §2.7 split, §2.8 packed),
// for benchmarks that compare it with the WebAssembly virtqueue core.
//
// One flat little-endian memory (an ArrayBuffer) holds the rings, the driver's buffers and a
// device-side sink. The driver side (what Linux virtio_ring.c does) and the device side (what
// vringh / vhost do) both live here, each with the same verbs for both layouts:
//   driver: addBuf · kickPrepare · getBuf        device: popAvail · pushUsed · publishUsed
// plus the device's datapath loop `process(budget)` (pop + push per chain).
// The device validates everything the driver can change (indices, heads, next links, loops,
// INDIRECT, descriptor order, total length, DMA range); the driver validates what the device can
// change (used index, used ids) and keeps its bookkeeping in private arrays, never in ring memory.
//
// Performance notes (measured on Node 20 / V8 11.3):
// - Ring fields are elements of Uint16Array/Uint32Array views created once, indexed directly in
//   each method. Going through small load/store helper methods cost ~15% (split, batch 32), and a
//   DataView version measured the same or slightly slower than those helpers, so neither is used.
// - No BigInt: a 64-bit descriptor address is read as two u32 halves; the high half must be 0
//   because the DMA region lies below 4 GiB.
// - No allocation in the loop: scatter lists, tokens and per-id state are preallocated typed
//   arrays; results come back as numbers and fields (`lastLen`, `chainDescs`, …).
// - The round-trip loop is a class method (one per layout) that keeps its counters in locals and
//   writes them back afterwards: closure variables updated per chain were ~25% slower, and
//   per-instance closures slowed down by up to 35% once other configurations had run in the same
//   process.
// - The device pops and pushes in its own loop (`process`), as a device datapath does; calling
//   popAvail per chain from the round-trip loop made V8 stop inlining addBuf (packed: -15%).
// - Copies of <= 64 aligned bytes use an unrolled u32 loop (faster than copyWithin at that
//   size); larger or unaligned copies use copyWithin. A Float64Array loop is faster still but is
//   not byte-exact by the ECMAScript spec (NaN bit patterns may be canonicalised), so not used.

/** Ring layout: split (§2.7) or packed (§2.8). */
export type Layout = 'split' | 'packed';

/** One benchmark instance: a driver, a device and their shared memory. */
export interface TsRoundTrip {
  /** Runs `iterations` full batch round trips. Returns the number of descriptors moved. */
  run(iterations: number): number;
  /** Throws if the state is inconsistent (token order, free counts, indices, sink bytes). */
  check(): void;
}

/** Options of {@link createTsRoundTrip}. */
export interface TsRoundTripOptions {
  /** Ring layout. */
  layout: Layout;
  /** Queue size: a power of two, 1..32768. */
  size: number;
  /** Chains posted per iteration (1..size / segments). */
  batch: number;
  /** Whether the device copies the readable bytes of each chain into its sink. */
  copy: boolean;
  /** Bytes of driver payload per chain. */
  payload: number;
  /** Device-readable descriptors per chain (the payload is split across them). @default 1 */
  segments?: number;
  /** Size of the flat memory. @default 4 MiB */
  memoryBytes?: number;
}

// ---------------------------------------------------------------------------------------------
// Spec constants
// ---------------------------------------------------------------------------------------------

/** §2.7.5 / §2.8.6: this descriptor continues (split: via `next`; packed: in ring order). */
export const VIRTQ_DESC_F_NEXT = 1;
/** §2.7.5 / §2.8.3: the buffer is device-writable (otherwise device-readable). */
export const VIRTQ_DESC_F_WRITE = 2;
/** §2.7.5.3 / §2.8.7: the buffer holds a table of indirect descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** §2.8.1: packed descriptor AVAIL flag (bit 7). */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** §2.8.1: packed descriptor USED flag (bit 15). */
export const VIRTQ_DESC_F_USED = 1 << 15;
/** §2.7.6, §2.7.7: avail.flags: the driver does not want a used buffer notification. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** §2.7.8, §2.7.10: used.flags: the device does not want an available buffer notification. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** §2.8.10, §2.8.14: event suppression flags: notifications enabled. */
export const RING_EVENT_FLAGS_ENABLE = 0;
/** §2.8.10: event suppression flags: notifications disabled. */
export const RING_EVENT_FLAGS_DISABLE = 1;
/** §2.8.10: event suppression flags: notify at a descriptor (needs VIRTIO_F_RING_EVENT_IDX). */
export const RING_EVENT_FLAGS_DESC = 2;

/** Bytes per descriptor, split (§2.7.5) and packed (§2.8.13) alike. */
const DESC_BYTES = 16;
const AVAIL_USED = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
const U32_MAX = 0xffff_ffff;

/**
 * Result codes. Non-negative results are values (a head, a token); {@link NONE} means "nothing
 * to do" (empty ring / no used buffer), which is not an error; the rest are sticky failures.
 */
export const Status = {
  /** Nothing available / nothing used. Not an error. */
  NONE: -1,
  /** Driver: not enough free descriptors for the chain (caller must reclaim first). */
  NO_SPACE: -2,
  /** Device: avail.idx moved more than the queue size past last_avail_idx (§2.7.13: it cannot). */
  BAD_AVAIL_IDX: -3,
  /** Device: head index >= queue size (§2.7.6). */
  BAD_HEAD: -4,
  /** Device: `next` >= queue size (§2.7.5: an index into the descriptor table). */
  BAD_NEXT: -5,
  /** Device: chain longer than the queue size, i.e. a loop (§2.7.5.2, §2.7.5.3.1 / §2.8.17). */
  LOOP: -6,
  /** Device: INDIRECT not negotiated here (and INDIRECT|NEXT is always invalid, §2.7.5.3.1, §2.8.19). */
  INDIRECT: -7,
  /** Device: a readable descriptor after a writable one (§2.7.4.2 / §2.8.17). */
  ORDER: -8,
  /** Device: total chain length exceeds 2^32-1 (§2.7.5.2). */
  TOO_LONG: -9,
  /** Device: a buffer outside the DMA region, or a nonzero high address half. */
  BAD_ADDR: -10,
  /** Device (packed) or driver: buffer id >= queue size. */
  BAD_ID: -11,
  /** Driver: used id that is not in flight (double completion or made-up id). */
  NOT_IN_FLIGHT: -12,
  /** Driver: used.idx moved more than the queue size past last_used_idx. */
  BAD_USED_IDX: -13,
  /** Device: readable bytes of a chain exceed the sink slot (an oversized packet). */
  SINK_OVERFLOW: -14,
} as const;

/** Returns the name of a status code, for messages. */
export function statusName(code: number): string {
  for (const [k, v] of Object.entries(Status)) if (v === code) return k;
  return `status ${code}`;
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/**
 * The flat memory and its views, created once. Typed-array views are host-endian and virtio is
 * little-endian, so a big-endian host is refused. Every ring field is naturally aligned (the
 * alignment tables of §2.7 and §2.8.10.1), so each is one element of the u16 or u32 view.
 */
export class RingMemory {
  readonly buffer: ArrayBuffer;
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;

  constructor(bytes: number) {
    if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
      throw new Error('ts-ring: typed-array ring access needs a little-endian host');
    }
    if (bytes % 4 !== 0) throw new RangeError(`memory size must be a multiple of 4, got ${bytes}`);
    this.buffer = new ArrayBuffer(bytes);
    this.u8 = new Uint8Array(this.buffer);
    this.u16 = new Uint16Array(this.buffer);
    this.u32 = new Uint32Array(this.buffer);
  }
}

/**
 * Copies `len` bytes from `src` to `dst` (non-overlapping). Small word-aligned copies use an
 * unrolled u32 loop, which beats copyWithin's call overhead up to about 64 bytes (measured:
 * +10% on the copy round trip); the rest use copyWithin.
 */
function copyBytes(u8: Uint8Array, u32: Uint32Array, dst: number, src: number, len: number): void {
  if (len <= 64 && ((dst | src | len) & 3) === 0) {
    let d = dst >> 2;
    let s = src >> 2;
    let n = len >> 2;
    for (; n >= 4; n -= 4, s += 4, d += 4) {
      const w0 = u32[s]!;
      const w1 = u32[s + 1]!;
      const w2 = u32[s + 2]!;
      const w3 = u32[s + 3]!;
      u32[d] = w0;
      u32[d + 1] = w1;
      u32[d + 2] = w2;
      u32[d + 3] = w3;
    }
    for (; n > 0; n--) u32[d++] = u32[s++]!;
  } else {
    u8.copyWithin(dst, src, src + len);
  }
}

// ---------------------------------------------------------------------------------------------
// Shared configuration
// ---------------------------------------------------------------------------------------------

/** Ring addresses (byte offsets in the memory), named as the spec's Descriptor/Driver/Device Area. */
export interface RingAreas {
  /** Queue size, a power of two. */
  readonly size: number;
  /** Descriptor table (split) or descriptor ring (packed); 16-byte aligned. */
  readonly descArea: number;
  /** Split: available ring (2-aligned). Packed: driver event suppression (4-aligned). */
  readonly driverArea: number;
  /** Split: used ring (4-aligned). Packed: device event suppression (4-aligned). */
  readonly deviceArea: number;
}

/** What the device may touch, and where it copies to. */
export interface DeviceConfig {
  /** DMA region start: every buffer must satisfy ramBase <= addr. */
  readonly ramBase: number;
  /** DMA region end (exclusive): every buffer must satisfy addr + len <= ramEnd. */
  readonly ramEnd: number;
  /** Whether readable bytes are copied into the sink (a net device's tx). */
  readonly copy: boolean;
  /** Sink area, device-private (outside the DMA region). */
  readonly sinkBase: number;
  /** Bytes per sink slot: the largest readable part the device accepts when copying. */
  readonly sinkSlotBytes: number;
  /** Sink slots, a power of two; the k-th popped chain goes to slot k & (sinkSlots-1). */
  readonly sinkSlots: number;
}

/** §2.7: a queue size is a power of two, at most 32768 (packed allows any size; we do not). */
function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > 32768 || (size & (size - 1)) !== 0) {
    throw new RangeError(`queue size must be a power of two in 1..32768, got ${size}`);
  }
}

function checkAreas(mem: RingMemory, a: RingAreas): void {
  const { size } = a;
  checkSize(size);
  if (a.descArea % 16 !== 0 || a.driverArea % 4 !== 0 || a.deviceArea % 4 !== 0) {
    throw new RangeError('ring areas must be aligned: desc 16, driver 4, device 4');
  }
  if (a.descArea + DESC_BYTES * size > mem.buffer.byteLength) throw new RangeError('ring outside memory');
}

function checkDeviceConfig(mem: RingMemory, c: DeviceConfig): void {
  if (!(c.ramBase >= 0 && c.ramBase <= c.ramEnd && c.ramEnd <= 2 ** 32)) throw new RangeError('bad DMA region');
  if (c.copy) {
    if (c.ramEnd > mem.buffer.byteLength) throw new RangeError('DMA region outside memory');
    if ((c.sinkSlots & (c.sinkSlots - 1)) !== 0 || c.sinkSlots < 1) throw new RangeError('sinkSlots: power of two');
    if (c.sinkBase + c.sinkSlots * c.sinkSlotBytes > mem.buffer.byteLength) throw new RangeError('sink outside memory');
  }
}

// Descriptor fields as element offsets from the descriptor's u32 / u16 index.
const D32_ADDR_LO = 0; // le64 addr, low half
const D32_ADDR_HI = 1; // le64 addr, high half
const D32_LEN = 2; //     le32 len
const D16_SPLIT_FLAGS = 6; // split: le16 flags; le16 next
const D16_SPLIT_NEXT = 7;
const D16_PACKED_ID = 6; //   packed: le16 id; le16 flags
const D16_PACKED_FLAGS = 7;

// ---------------------------------------------------------------------------------------------
// Split virtqueue (§2.7)
// ---------------------------------------------------------------------------------------------
//
//   descArea   struct virtq_desc  { le64 addr; le32 len; le16 flags; le16 next; } desc[size]
//   driverArea struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }
//   deviceArea struct virtq_used  { le16 flags; le16 idx; struct { le32 id; le32 len; } ring[size];
//                                   le16 avail_event; }
//
// avail.idx and used.idx are free-running u16 counters; entry k lives in ring[k & (size-1)].

/** Split-ring driver side (Linux virtio_ring.c, split part). */
export class SplitDriver {
  readonly size: number;
  private readonly mask: number;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly desc32: number;
  private readonly availFlags16: number;
  private readonly availIdx16: number;
  private readonly availRing16: number;
  private readonly usedFlags16: number;
  private readonly usedIdx16: number;
  private readonly usedRing32: number;

  // Driver-private bookkeeping (Linux desc_extra / desc_state), never read back from the ring.
  /** Free-list links. A posted chain keeps its links, so freeing it is one splice. */
  private readonly extraNext: Uint16Array;
  /** Descriptors in the chain headed here. */
  private readonly extraCount: Uint16Array;
  private readonly tokens: Uint32Array;
  private readonly inFlight: Uint8Array;
  private freeHead = 0;
  /** Free descriptors. */
  numFree: number;
  /** avail.idx plus the entries added since it was last published (u16). */
  private availIdxShadow = 0;
  /** Next used entry to reclaim (u16). */
  lastUsedIdx = 0;
  /** used.idx as last read (u16). */
  private usedIdxCache = 0;
  /** Length the device reported for the buffer {@link getBuf} returned last. */
  lastLen = 0;
  /** Sticky failure status; 0 while healthy. */
  broken = 0;

  constructor(mem: RingMemory, areas: RingAreas) {
    checkAreas(mem, areas);
    const size = areas.size;
    this.size = size;
    this.mask = size - 1;
    this.u16 = mem.u16;
    this.u32 = mem.u32;
    this.desc32 = areas.descArea >> 2;
    this.availFlags16 = areas.driverArea >> 1;
    this.availIdx16 = this.availFlags16 + 1;
    this.availRing16 = this.availFlags16 + 2;
    this.usedFlags16 = areas.deviceArea >> 1;
    this.usedIdx16 = this.usedFlags16 + 1;
    this.usedRing32 = (areas.deviceArea >> 2) + 1;
    this.extraNext = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.extraNext[i] = (i + 1) & this.mask;
    this.extraCount = new Uint16Array(size);
    this.tokens = new Uint32Array(size);
    this.inFlight = new Uint8Array(size);
    this.numFree = size;
    this.u16[this.availFlags16] = 0; // interrupts wanted
    this.u16[this.availIdx16] = 0;
  }

  /**
   * Adds a chain of `out` device-readable then `inn` device-writable buffers, taken from
   * `sgAddr[sgStart…]` / `sgLen[sgStart…]` (32-bit bus addresses), with a u32 `token` that
   * {@link getBuf} returns. The avail entry is written now, avail.idx by {@link kickPrepare}.
   * Returns the head index, or Status.NO_SPACE.
   */
  addBuf(sgAddr: Uint32Array, sgLen: Uint32Array, sgStart: number, out: number, inn: number, token: number): number {
    const n = out + inn;
    if (n === 0 || n > this.numFree) return Status.NO_SPACE;
    const u16 = this.u16;
    const u32 = this.u32;
    const extraNext = this.extraNext;
    const head = this.freeHead;
    let i = head;
    for (let s = 0; s < n; s++) {
      const d32 = this.desc32 + (i << 2);
      const next = extraNext[i]!;
      u32[d32 + D32_ADDR_LO] = sgAddr[sgStart + s]!;
      u32[d32 + D32_ADDR_HI] = 0;
      u32[d32 + D32_LEN] = sgLen[sgStart + s]!;
      // §2.7.4.2: device-readable descriptors before device-writable ones.
      u16[(d32 << 1) + D16_SPLIT_FLAGS] =
        (s < out ? 0 : VIRTQ_DESC_F_WRITE) | (s + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
      u16[(d32 << 1) + D16_SPLIT_NEXT] = next;
      i = next;
    }
    this.freeHead = i;
    this.numFree -= n;
    this.extraCount[head] = n;
    this.tokens[head] = token;
    this.inFlight[head] = 1;
    // §2.7.13.2: put the head in the next avail ring entry; invisible until avail.idx moves.
    u16[this.availRing16 + (this.availIdxShadow & this.mask)] = head;
    this.availIdxShadow = (this.availIdxShadow + 1) & 0xffff;
    return head;
  }

  /**
   * Publishes the chains added since the last call, then decides whether to notify.
   * Returns true if the device wants a notification (used.flags lacks NO_NOTIFY, §2.7.10.1).
   */
  kickPrepare(): boolean {
    // §2.7.13.3.1: descriptors and avail ring entries must be visible before avail.idx. One JS
    // thread needs no fence; across workers this store would be an Atomics.store.
    this.u16[this.availIdx16] = this.availIdxShadow;
    // §2.7.13.4.1: read used.flags only after publishing avail.idx.
    return (this.u16[this.usedFlags16]! & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /**
   * Reclaims the next used buffer. Returns its token (>= 0; the length is in {@link lastLen}),
   * Status.NONE if there is none, or a negative Status if the device misbehaved.
   */
  getBuf(): number {
    if (this.broken !== 0) return this.broken;
    const last = this.lastUsedIdx;
    if (last === this.usedIdxCache) {
      // §2.7.14: read used.idx only once the entries seen last time are consumed.
      const idx = this.u16[this.usedIdx16]!;
      if (idx === last) return Status.NONE;
      // The device controls used.idx: it cannot complete more than a ring's worth.
      if (((idx - last) & 0xffff) > this.size) return (this.broken = Status.BAD_USED_IDX);
      this.usedIdxCache = idx;
    }
    const e32 = this.usedRing32 + ((last & this.mask) << 1);
    const id = this.u32[e32]!;
    const len = this.u32[e32 + 1]!;
    // The device controls `id`: bound it and check that it is in flight before using it.
    if (id >= this.size) return (this.broken = Status.BAD_ID);
    if (this.inFlight[id] === 0) return (this.broken = Status.NOT_IN_FLIGHT);
    this.inFlight[id] = 0;
    // Splice the chain back onto the free list through the private links (detach_buf_split).
    const n = this.extraCount[id]!;
    let tail = id;
    for (let k = 1; k < n; k++) tail = this.extraNext[tail]!;
    this.extraNext[tail] = this.freeHead;
    this.freeHead = id;
    this.numFree += n;
    this.lastUsedIdx = (last + 1) & 0xffff;
    this.lastLen = len;
    return this.tokens[id]!;
  }

  /** avail.idx as published in ring memory. */
  get publishedAvailIdx(): number {
    return this.u16[this.availIdx16]!;
  }
}

/** Split-ring device side (vringh / vhost, split part). */
export class SplitDevice {
  readonly size: number;
  private readonly mask: number;
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly desc32: number;
  private readonly availFlags16: number;
  private readonly availIdx16: number;
  private readonly availRing16: number;
  private readonly usedIdx16: number;
  private readonly usedRing32: number;
  private readonly ramBase: number;
  private readonly ramEnd: number;
  private readonly copy: boolean;
  private readonly sinkBase: number;
  private readonly sinkSlotBytes: number;
  private readonly sinkMask: number;

  /** Next avail entry to pop (u16). */
  lastAvailIdx = 0;
  /** avail.idx as last read (u16). */
  private availIdxCache = 0;
  /** used.idx including the entries pushed but not yet published (u16). */
  usedIdxShadow = 0;
  /** Chains popped so far; selects the sink slot. */
  popped = 0;
  /** Descriptors completed by {@link process} so far. */
  descsDone = 0;
  /** Descriptors in the chain {@link popAvail} returned last. */
  chainDescs = 0;
  /** Total bytes of that chain. */
  chainLen = 0;
  /** Sticky failure status; 0 while healthy. */
  broken = 0;

  constructor(mem: RingMemory, areas: RingAreas, cfg: DeviceConfig) {
    checkAreas(mem, areas);
    checkDeviceConfig(mem, cfg);
    this.size = areas.size;
    this.mask = areas.size - 1;
    this.u8 = mem.u8;
    this.u16 = mem.u16;
    this.u32 = mem.u32;
    this.desc32 = areas.descArea >> 2;
    this.availFlags16 = areas.driverArea >> 1;
    this.availIdx16 = this.availFlags16 + 1;
    this.availRing16 = this.availFlags16 + 2;
    this.usedIdx16 = (areas.deviceArea >> 1) + 1;
    this.usedRing32 = (areas.deviceArea >> 2) + 1;
    this.ramBase = cfg.ramBase;
    this.ramEnd = cfg.ramEnd;
    this.copy = cfg.copy;
    this.sinkBase = cfg.sinkBase;
    this.sinkSlotBytes = cfg.sinkSlotBytes;
    this.sinkMask = cfg.sinkSlots - 1;
    this.u16[areas.deviceArea >> 1] = 0; // used.flags: notifications wanted
    this.u16[this.usedIdx16] = 0;
  }

  /**
   * Pops the next available chain and validates every descriptor (copying the readable bytes to
   * the sink if configured). Returns the head id (>= 0; see chainDescs/chainLen), Status.NONE if
   * the ring is empty, or a negative Status, after which the queue is broken.
   */
  popAvail(): number {
    if (this.broken !== 0) return this.broken;
    const u16 = this.u16;
    const u32 = this.u32;
    const size = this.size;
    const last = this.lastAvailIdx;
    if (last === this.availIdxCache) {
      // Read avail.idx only once the entries seen last time are consumed.
      const idx = u16[this.availIdx16]!;
      if (idx === last) return Status.NONE;
      // The driver controls avail.idx: it cannot be more than a ring ahead of us.
      if (((idx - last) & 0xffff) > size) return (this.broken = Status.BAD_AVAIL_IDX);
      this.availIdxCache = idx;
    }
    const head = u16[this.availRing16 + (last & this.mask)]!;
    // §2.7.6: the entry names a descriptor chain head; the driver controls it, so bound it.
    if (head >= size) return (this.broken = Status.BAD_HEAD);

    const ramBase = this.ramBase;
    const ramEnd = this.ramEnd;
    const copy = this.copy;
    let sinkPos = this.sinkBase + (this.popped & this.sinkMask) * this.sinkSlotBytes;
    let sinkRoom = this.sinkSlotBytes;
    let i = head;
    let count = 0;
    let total = 0;
    let writable = false;
    for (;;) {
      // §2.7.5.2 / §2.7.5.3.1: no chain is longer than the queue size; more means a loop.
      if (++count > size) return (this.broken = Status.LOOP);
      const d32 = this.desc32 + (i << 2);
      const flags = u16[(d32 << 1) + D16_SPLIT_FLAGS]!;
      // §2.7.5.3.1: INDIRECT together with NEXT is invalid, and INDIRECT alone needs
      // VIRTIO_F_INDIRECT_DESC, which this workload does not negotiate.
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) return (this.broken = Status.INDIRECT);
      const lo = u32[d32 + D32_ADDR_LO]!;
      const hi = u32[d32 + D32_ADDR_HI]!;
      const len = u32[d32 + D32_LEN]!;
      // [addr, addr+len) must lie inside the DMA region (written so that nothing overflows).
      if (hi !== 0 || lo < ramBase || lo > ramEnd || len > ramEnd - lo) return (this.broken = Status.BAD_ADDR);
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        writable = true;
      } else {
        // §2.7.4.2: device-readable descriptors must come before device-writable ones.
        if (writable) return (this.broken = Status.ORDER);
        if (copy) {
          if (len > sinkRoom) return (this.broken = Status.SINK_OVERFLOW);
          copyBytes(this.u8, u32, sinkPos, lo, len);
          sinkPos += len;
          sinkRoom -= len;
        }
      }
      total += len;
      // §2.7.5.2: a chain's total length must fit in 32 bits.
      if (total > U32_MAX) return (this.broken = Status.TOO_LONG);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      i = u16[(d32 << 1) + D16_SPLIT_NEXT]!;
      if (i >= size) return (this.broken = Status.BAD_NEXT);
    }
    this.lastAvailIdx = (last + 1) & 0xffff;
    this.popped++;
    this.chainDescs = count;
    this.chainLen = total;
    return head;
  }

  /**
   * The device's datapath loop (a net device's tx handler): pops up to `budget` chains, pushes a
   * used element {id, len: 0} for each (nothing is written to the driver's buffers), and leaves
   * publishing to {@link publishUsed}. Returns the number of chains completed, or a negative
   * Status; the descriptors they held are added to {@link descsDone}.
   */
  process(budget: number): number {
    let done = 0;
    while (done < budget) {
      const id = this.popAvail();
      if (id < 0) {
        if (id === Status.NONE) break;
        return id;
      }
      this.pushUsed(id, 0, this.chainDescs);
      this.descsDone += this.chainDescs;
      done++;
    }
    return done;
  }

  /**
   * Writes the used element {id, len} (`_ndescs` is for packed; split ids name whole chains).
   * The driver sees it after {@link publishUsed}.
   */
  pushUsed(id: number, len: number, _ndescs: number): void {
    const e32 = this.usedRing32 + ((this.usedIdxShadow & this.mask) << 1);
    this.u32[e32] = id;
    this.u32[e32 + 1] = len;
    this.usedIdxShadow = (this.usedIdxShadow + 1) & 0xffff;
  }

  /**
   * Publishes the used elements pushed since the last call. Returns true if the driver wants an
   * interrupt (avail.flags lacks NO_INTERRUPT, §2.7.7.1).
   */
  publishUsed(): boolean {
    // §2.7.8.2: used ring entries must be visible before used.idx.
    this.u16[this.usedIdx16] = this.usedIdxShadow;
    return (this.u16[this.availFlags16]! & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Packed virtqueue (§2.8)
// ---------------------------------------------------------------------------------------------
//
//   descArea   struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; } desc[size]
//   driverArea struct pvirtq_event_suppress { le16 desc; le16 flags; }   written by the driver
//   deviceArea struct pvirtq_event_suppress { le16 desc; le16 flags; }   written by the device
//
// Each side keeps wrap counters that start at 1 and flip whenever its index passes the end of
// the ring (§2.8.1). Seen by a side whose counter is W, a descriptor's flags mean:
//
//   AVAIL  USED
//     W     !W    available: the driver made it available in lap W
//     W      W    used: the device wrote it back in lap W
//   anything else: not (yet) for this side

/** Packed-ring driver side (Linux virtio_ring.c, packed part). */
export class PackedDriver {
  readonly size: number;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly desc32: number;
  private readonly deviceEventFlags16: number;

  // Driver-private bookkeeping by buffer id (Linux desc_state / desc_extra).
  private readonly idNext: Uint16Array;
  private readonly idCount: Uint16Array;
  private readonly tokens: Uint32Array;
  private readonly inFlight: Uint8Array;
  private freeId = 0;
  /** Free descriptor slots. */
  numFree: number;
  /** Next slot to fill. */
  nextAvail = 0;
  /** Driver ring wrap counter (§2.8.1), 1 or 0. */
  availWrapCounter = 1;
  /** Next slot to reclaim. */
  lastUsed = 0;
  /** Wrap counter that used flags at lastUsed must carry, 1 or 0. */
  usedWrapCounter = 1;
  /** Length the device reported for the buffer {@link getBuf} returned last. */
  lastLen = 0;
  /** Sticky failure status; 0 while healthy. */
  broken = 0;

  constructor(mem: RingMemory, areas: RingAreas) {
    checkAreas(mem, areas);
    const size = areas.size;
    this.size = size;
    this.u16 = mem.u16;
    this.u32 = mem.u32;
    this.desc32 = areas.descArea >> 2;
    this.deviceEventFlags16 = (areas.deviceArea >> 1) + 1;
    this.idNext = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.idNext[i] = i + 1; // `size` ends the list
    this.idCount = new Uint16Array(size);
    this.tokens = new Uint32Array(size);
    this.inFlight = new Uint8Array(size);
    this.numFree = size;
    // A zeroed ring reads as neither available nor used at wrap counter 1.
    for (let i = 0; i < size; i++) this.u16[((this.desc32 + (i << 2)) << 1) + D16_PACKED_FLAGS] = 0;
    this.u32[areas.driverArea >> 2] = 0; // driver event suppression: RING_EVENT_FLAGS_ENABLE
  }

  /**
   * Adds a chain (same arguments as SplitDriver.addBuf) and makes it available at once, as Linux
   * does: its head's flags are written last (§2.8.6). Returns the buffer id, or Status.NO_SPACE.
   */
  addBuf(sgAddr: Uint32Array, sgLen: Uint32Array, sgStart: number, out: number, inn: number, token: number): number {
    const n = out + inn;
    if (n === 0 || n > this.numFree) return Status.NO_SPACE;
    const u16 = this.u16;
    const u32 = this.u32;
    const size = this.size;
    const desc32 = this.desc32;
    const id = this.freeId; // numFree >= 1 implies a free id: each chain holds >= 1 slot
    this.freeId = this.idNext[id]!;
    const head = this.nextAvail;
    let i = head;
    let wrap = this.availWrapCounter;
    // §2.8.1: the driver makes a descriptor available with AVAIL = W and USED = !W.
    let availBits = wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
    let headFlags = 0;
    for (let s = 0; s < n; s++) {
      const d32 = desc32 + (i << 2);
      u32[d32 + D32_ADDR_LO] = sgAddr[sgStart + s]!;
      u32[d32 + D32_ADDR_HI] = 0;
      u32[d32 + D32_LEN] = sgLen[sgStart + s]!;
      u16[(d32 << 1) + D16_PACKED_ID] = id;
      const flags = availBits | (s < out ? 0 : VIRTQ_DESC_F_WRITE) | (s + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
      // §2.8.6: the head's flags go last, after the rest of its chain.
      if (s === 0) headFlags = flags;
      else u16[(d32 << 1) + D16_PACKED_FLAGS] = flags;
      if (++i === size) {
        i = 0;
        wrap ^= 1;
        availBits = wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
      }
    }
    this.nextAvail = i;
    this.availWrapCounter = wrap;
    this.numFree -= n;
    this.idCount[id] = n;
    this.tokens[id] = token;
    this.inFlight[id] = 1;
    // §2.8.21.1.1: the rest of the chain must be visible before the head's flags. One JS thread
    // needs no fence; across workers this store would be an Atomics.store.
    u16[((desc32 + (head << 2)) << 1) + D16_PACKED_FLAGS] = headFlags;
    return id;
  }

  /**
   * Decides whether to notify the device of the chains added since the last call (they are
   * already available). Returns true unless the device event suppression flags say DISABLE
   * (§2.8.21.3; without VIRTIO_F_RING_EVENT_IDX the DESC mode is not in use, so anything else
   * means enabled).
   */
  kickPrepare(): boolean {
    // §2.8.21.3.1: read the device's event suppression only after the flags are written.
    return this.u16[this.deviceEventFlags16] !== RING_EVENT_FLAGS_DISABLE;
  }

  /** Reclaims the next used buffer; same contract as SplitDriver.getBuf. */
  getBuf(): number {
    if (this.broken !== 0) return this.broken;
    const d32 = this.desc32 + (this.lastUsed << 2);
    const flags = this.u16[(d32 << 1) + D16_PACKED_FLAGS]!;
    // §2.8.1: used when AVAIL == USED == our used wrap counter.
    if ((flags & AVAIL_USED) !== (this.usedWrapCounter !== 0 ? AVAIL_USED : 0)) return Status.NONE;
    // §2.8.22: id and len are read only after the flags said "used".
    const id = this.u16[(d32 << 1) + D16_PACKED_ID]!;
    const len = this.u32[d32 + D32_LEN]!;
    // The device controls `id`: bound it and check that it is in flight before using it.
    if (id >= this.size) return (this.broken = Status.BAD_ID);
    if (this.inFlight[id] === 0) return (this.broken = Status.NOT_IN_FLIGHT);
    this.inFlight[id] = 0;
    // The chain's length comes from private state, never from the ring.
    const n = this.idCount[id]!;
    this.idNext[id] = this.freeId;
    this.freeId = id;
    this.numFree += n;
    // §2.8.6: one used element stands for the whole chain; skip all of its slots.
    let next = this.lastUsed + n;
    if (next >= this.size) {
      next -= this.size;
      this.usedWrapCounter ^= 1;
    }
    this.lastUsed = next;
    this.lastLen = len;
    return this.tokens[id]!;
  }
}

/** Packed-ring device side (vhost, packed part). */
export class PackedDevice {
  readonly size: number;
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly desc32: number;
  private readonly driverEventFlags16: number;
  private readonly ramBase: number;
  private readonly ramEnd: number;
  private readonly copy: boolean;
  private readonly sinkBase: number;
  private readonly sinkSlotBytes: number;
  private readonly sinkMask: number;

  /** Next slot to pop. */
  nextAvail = 0;
  /** Wrap counter that avail flags at nextAvail must carry, 1 or 0. */
  availWrapCounter = 1;
  /** Next slot to write a used element to. */
  nextUsed = 0;
  /** Device used wrap counter, 1 or 0. */
  usedWrapCounter = 1;
  /** Chains popped so far; selects the sink slot. */
  popped = 0;
  /** Descriptors completed by {@link process} so far. */
  descsDone = 0;
  /** Descriptors in the chain {@link popAvail} returned last. */
  chainDescs = 0;
  /** Total bytes of that chain. */
  chainLen = 0;
  /** Slot of the first used element of the unpublished batch, or -1. */
  private pendingUsed = -1;
  private pendingUsedFlags = 0;
  /** Sticky failure status; 0 while healthy. */
  broken = 0;

  constructor(mem: RingMemory, areas: RingAreas, cfg: DeviceConfig) {
    checkAreas(mem, areas);
    checkDeviceConfig(mem, cfg);
    this.size = areas.size;
    this.u8 = mem.u8;
    this.u16 = mem.u16;
    this.u32 = mem.u32;
    this.desc32 = areas.descArea >> 2;
    this.driverEventFlags16 = (areas.driverArea >> 1) + 1;
    this.ramBase = cfg.ramBase;
    this.ramEnd = cfg.ramEnd;
    this.copy = cfg.copy;
    this.sinkBase = cfg.sinkBase;
    this.sinkSlotBytes = cfg.sinkSlotBytes;
    this.sinkMask = cfg.sinkSlots - 1;
    this.u32[areas.deviceArea >> 2] = 0; // device event suppression: RING_EVENT_FLAGS_ENABLE
  }

  /** Pops and validates the next available chain; same contract as SplitDevice.popAvail. */
  popAvail(): number {
    if (this.broken !== 0) return this.broken;
    const u16 = this.u16;
    const u32 = this.u32;
    const size = this.size;
    let i = this.nextAvail;
    let wrap = this.availWrapCounter;
    let d32 = this.desc32 + (i << 2);
    let flags = u16[(d32 << 1) + D16_PACKED_FLAGS]!;
    // §2.8.1, §2.8.15: available when AVAIL == our wrap counter and USED != it.
    if ((flags & AVAIL_USED) !== (wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED)) return Status.NONE;

    const ramBase = this.ramBase;
    const ramEnd = this.ramEnd;
    const copy = this.copy;
    let sinkPos = this.sinkBase + (this.popped & this.sinkMask) * this.sinkSlotBytes;
    let sinkRoom = this.sinkSlotBytes;
    let count = 0;
    let total = 0;
    let writable = false;
    for (;;) {
      // §2.8.17: no list is longer than the queue size; more would mean a runaway walk.
      if (++count > size) return (this.broken = Status.LOOP);
      // §2.8.19: INDIRECT inside a NEXT-linked list is invalid; INDIRECT alone needs
      // VIRTIO_F_INDIRECT_DESC, which this workload does not negotiate.
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) return (this.broken = Status.INDIRECT);
      const lo = u32[d32 + D32_ADDR_LO]!;
      const hi = u32[d32 + D32_ADDR_HI]!;
      const len = u32[d32 + D32_LEN]!;
      if (hi !== 0 || lo < ramBase || lo > ramEnd || len > ramEnd - lo) return (this.broken = Status.BAD_ADDR);
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        writable = true;
      } else {
        // §2.8.17: device-readable descriptors before device-writable ones.
        if (writable) return (this.broken = Status.ORDER);
        if (copy) {
          if (len > sinkRoom) return (this.broken = Status.SINK_OVERFLOW);
          copyBytes(this.u8, u32, sinkPos, lo, len);
          sinkPos += len;
          sinkRoom -= len;
        }
      }
      total += len;
      if (total > U32_MAX) return (this.broken = Status.TOO_LONG);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      // §2.8.6, §2.8.18: the list continues in ring order, wrapping at the end of the ring.
      if (++i === size) {
        i = 0;
        wrap ^= 1;
      }
      d32 = this.desc32 + (i << 2);
      flags = u16[(d32 << 1) + D16_PACKED_FLAGS]!;
    }
    // §2.8.6: the buffer id is the one in the chain's last descriptor.
    const id = u16[(d32 << 1) + D16_PACKED_ID]!;
    if (id >= size) return (this.broken = Status.BAD_ID);
    if (++i === size) {
      i = 0;
      wrap ^= 1;
    }
    this.nextAvail = i;
    this.availWrapCounter = wrap;
    this.popped++;
    this.chainDescs = count;
    this.chainLen = total;
    return id;
  }

  /**
   * The device's datapath loop (a net device's tx handler): pops up to `budget` chains, pushes a
   * used element {id, len: 0} for each (nothing is written to the driver's buffers), and leaves
   * publishing to {@link publishUsed}. Returns the number of chains completed, or a negative
   * Status; the descriptors they held are added to {@link descsDone}.
   */
  process(budget: number): number {
    let done = 0;
    while (done < budget) {
      const id = this.popAvail();
      if (id < 0) {
        if (id === Status.NONE) break;
        return id;
      }
      this.pushUsed(id, 0, this.chainDescs);
      this.descsDone += this.chainDescs;
      done++;
    }
    return done;
  }

  /**
   * Writes the used element for buffer `id`, whose chain had `ndescs` descriptors, at nextUsed
   * and skips the chain's other slots (§2.8.2, §2.8.6). The first element of a batch becomes visible in
   * {@link publishUsed}.
   */
  pushUsed(id: number, len: number, ndescs: number): void {
    const d32 = this.desc32 + (this.nextUsed << 2);
    this.u16[(d32 << 1) + D16_PACKED_ID] = id;
    this.u32[d32 + D32_LEN] = len;
    // §2.8.1: a used descriptor has AVAIL == USED == the device's used wrap counter.
    const flags = this.usedWrapCounter !== 0 ? AVAIL_USED : 0;
    if (this.pendingUsed < 0) {
      this.pendingUsed = this.nextUsed;
      this.pendingUsedFlags = flags;
    } else {
      this.u16[(d32 << 1) + D16_PACKED_FLAGS] = flags;
    }
    let next = this.nextUsed + ndescs;
    if (next >= this.size) {
      next -= this.size;
      this.usedWrapCounter ^= 1;
    }
    this.nextUsed = next;
  }

  /**
   * Publishes the batch (the held-back first used flags). Returns true unless the driver event
   * suppression flags say DISABLE (§2.8.10).
   */
  publishUsed(): boolean {
    if (this.pendingUsed >= 0) {
      // §2.8.9: the batch's other used elements must be visible before the first one's flags.
      this.u16[((this.desc32 + (this.pendingUsed << 2)) << 1) + D16_PACKED_FLAGS] = this.pendingUsedFlags;
      this.pendingUsed = -1;
    }
    return this.u16[this.driverEventFlags16] !== RING_EVENT_FLAGS_DISABLE;
  }
}

// ---------------------------------------------------------------------------------------------
// The round-trip workload
// ---------------------------------------------------------------------------------------------

/** Where everything lives in the flat memory. */
export interface WorkloadLayout {
  readonly areas: RingAreas;
  /** First driver buffer; buffer j is at bufBase + j * bufStride. */
  readonly bufBase: number;
  readonly bufStride: number;
  readonly device: DeviceConfig;
}

const align = (x: number, a: number): number => Math.ceil(x / a) * a;

/**
 * Lays out rings, buffers and sink:
 *   0x0000  unmapped (below ramBase)
 *   0x1000  descArea, then driverArea, deviceArea (alignment tables of §2.7 / §2.8.10.1)
 *   page    size driver buffers, one per token & (size-1)         <- DMA region ends here
 *   page    size sink slots (device-private)
 */
export function workloadLayout(layout: Layout, size: number, payload: number, memoryBytes: number): WorkloadLayout {
  checkSize(size);
  if (!Number.isInteger(payload) || payload < 1) throw new RangeError(`payload must be >= 1, got ${payload}`);
  const descArea = 0x1000;
  let driverArea: number;
  let deviceArea: number;
  let ringEnd: number;
  if (layout === 'split') {
    driverArea = descArea + DESC_BYTES * size; //  align 2
    deviceArea = align(driverArea + 6 + 2 * size, 4); // align 4
    ringEnd = deviceArea + 6 + 8 * size;
  } else {
    driverArea = descArea + DESC_BYTES * size; //  align 4
    deviceArea = driverArea + 4; // align 4
    ringEnd = deviceArea + 4;
  }
  const bufBase = align(ringEnd, 4096);
  const bufStride = align(payload, 64);
  const ramEnd = bufBase + size * bufStride;
  const sinkBase = align(ramEnd, 4096);
  const sinkSlotBytes = align(payload, 64);
  const end = sinkBase + size * sinkSlotBytes;
  if (end > memoryBytes) throw new RangeError(`layout needs ${end} bytes, memory has ${memoryBytes}`);
  return {
    areas: { size, descArea, driverArea, deviceArea },
    bufBase,
    bufStride,
    device: { ramBase: 0x1000, ramEnd, copy: false, sinkBase, sinkSlotBytes, sinkSlots: size },
  };
}

/** Byte `b` of driver buffer `j`: distinct per buffer so a misrouted copy shows. */
export function payloadByte(j: number, b: number): number {
  return (j * 131 + b * 7 + 1) & 0xff;
}

/** Round-trip instance with its parts exposed, for the self-test. */
export interface TsRoundTripInstance extends TsRoundTrip {
  readonly layout: Layout;
  readonly mem: RingMemory;
  readonly map: WorkloadLayout;
  readonly driver: SplitDriver | PackedDriver;
  readonly device: SplitDevice | PackedDevice;
  /** Iterations, chains, descriptors, kicks, calls and a checksum of tokens and lengths. */
  stats(): { iterations: number; chains: number; descs: number; kicks: number; calls: number; checksum: number };
}

/**
 * State and checks shared by both layouts. The hot loop lives in one subclass per layout: class
 * methods have one closure and one feedback vector shared by every instance, so an instance's
 * speed does not depend on which instances ran before it in the same process (per-instance
 * closures measured up to 35% slower after other configurations had run).
 */
abstract class RoundTripBase {
  readonly layout: Layout;
  readonly mem: RingMemory;
  readonly map: WorkloadLayout;
  protected readonly size: number;
  protected readonly mask: number;
  protected readonly batch: number;
  protected readonly segments: number;
  protected readonly copy: boolean;
  protected readonly payload: number;
  /** Scatter list of driver buffer j at [j * segments …]: addresses and lengths. */
  protected readonly sgAddr: Uint32Array;
  protected readonly sgLen: Uint32Array;

  /** Next token to post (u32). */
  protected nextToken = 0;
  /** Next token expected back. */
  protected expectToken = 0;
  protected mismatches = 0;
  protected kicks = 0;
  protected calls = 0;
  /** Sum of returned tokens and lengths, mod 2^32. */
  protected checksum = 0;
  private iterations = 0;
  private chains = 0;
  private descs = 0;

  constructor(opts: TsRoundTripOptions) {
    const { layout, size, batch, copy, payload } = opts;
    const segments = opts.segments ?? 1;
    const memoryBytes = opts.memoryBytes ?? 4 << 20;
    if (!Number.isInteger(segments) || segments < 1 || segments > payload) {
      throw new RangeError(`segments must be in 1..payload, got ${segments}`);
    }
    if (!Number.isInteger(batch) || batch < 1 || batch * segments > size) {
      throw new RangeError(`batch * segments must be in 1..size, got ${batch} * ${segments}`);
    }
    const map0 = workloadLayout(layout, size, payload, memoryBytes);
    this.layout = layout;
    this.map = { ...map0, device: { ...map0.device, copy } };
    this.mem = new RingMemory(memoryBytes);
    this.size = size;
    this.mask = size - 1;
    this.batch = batch;
    this.segments = segments;
    this.copy = copy;
    this.payload = payload;
    // Driver buffers, prepared once.
    this.sgAddr = new Uint32Array(size * segments);
    this.sgLen = new Uint32Array(size * segments);
    const segLen = Math.floor(payload / segments);
    for (let j = 0; j < size; j++) {
      const base = this.map.bufBase + j * this.map.bufStride;
      for (let b = 0; b < payload; b++) this.mem.u8[base + b] = payloadByte(j, b);
      for (let s = 0; s < segments; s++) {
        this.sgAddr[j * segments + s] = base + s * segLen;
        this.sgLen[j * segments + s] = s + 1 < segments ? segLen : payload - s * segLen;
      }
    }
  }

  abstract readonly driver: SplitDriver | PackedDriver;
  abstract readonly device: SplitDevice | PackedDevice;
  /** Runs n iterations; returns the descriptors moved. */
  protected abstract loop(n: number): number;
  /** Layout-specific index checks; pushes problems onto errs. */
  protected abstract checkIndices(errs: string[]): void;

  run(n: number): number {
    const moved = this.loop(n);
    this.iterations += n;
    this.chains += n * this.batch;
    this.descs += moved;
    return moved;
  }

  stats(): { iterations: number; chains: number; descs: number; kicks: number; calls: number; checksum: number } {
    const { iterations, chains, descs, kicks, calls, checksum } = this;
    return { iterations, chains, descs, kicks, calls, checksum };
  }

  protected fail(who: string, code: number): never {
    throw new Error(`ts-ring ${this.layout}: ${who} failed with ${statusName(code)}`);
  }

  check(): void {
    const errs: string[] = [];
    const { size, segments, payload } = this;
    if (this.mismatches !== 0) errs.push(`${this.mismatches} tokens came back out of order`);
    if (this.expectToken !== this.nextToken) errs.push(`posted ${this.nextToken} tokens, got back ${this.expectToken}`);
    if (this.descs !== this.chains * segments) errs.push(`moved ${this.descs} descriptors, expected ${this.chains * segments}`);
    if (this.kicks !== this.iterations || this.calls !== this.iterations) {
      errs.push(`kicks ${this.kicks} / calls ${this.calls} != ${this.iterations}`);
    }
    if (this.driver.numFree !== size) errs.push(`driver has ${this.driver.numFree} free descriptors of ${size}`);
    if (this.driver.broken !== 0 || this.device.broken !== 0) errs.push('a side is broken');
    // Sum of tokens 0..T-1 plus lengths (all 0), mod 2^32: T(T-1)/2, halving the even factor
    // first; Math.imul gives the low 32 bits of the product exactly.
    const t = this.nextToken;
    const sum = (t % 2 === 0 ? Math.imul(t / 2, t - 1) : Math.imul(t, (t - 1) / 2)) >>> 0;
    if (sum !== this.checksum) errs.push(`checksum ${this.checksum} != ${sum}`);
    this.checkIndices(errs);
    // Sink: slot s holds the last chain popped with number = s (mod size), i.e. driver buffer s.
    if (this.copy) {
      const cfg = this.map.device;
      const filled = Math.min(this.chains, size);
      for (let s = 0; s < filled && errs.length < 8; s++) {
        for (let b = 0; b < payload; b++) {
          const got = this.mem.u8[cfg.sinkBase + s * cfg.sinkSlotBytes + b];
          if (got !== payloadByte(s, b)) {
            errs.push(`sink slot ${s} byte ${b} is ${got}, expected ${payloadByte(s, b)}`);
            break;
          }
        }
      }
    }
    if (errs.length > 0) {
      throw new Error(`ts-ring ${this.layout} batch ${this.batch}${this.copy ? ' copy' : ''}: ${errs.join('; ')}`);
    }
  }
}

/** The round trip over a split ring. */
class SplitRoundTrip extends RoundTripBase {
  readonly driver: SplitDriver;
  readonly device: SplitDevice;

  constructor(opts: TsRoundTripOptions) {
    super(opts);
    this.driver = new SplitDriver(this.mem, this.map.areas);
    this.device = new SplitDevice(this.mem, this.map.areas, this.map.device);
  }

  protected loop(n: number): number {
    const drv = this.driver;
    const dev = this.device;
    const { batch, segments, mask, size, sgAddr, sgLen } = this;
    const descs0 = dev.descsDone;
    // Counters live in locals in the loop and are written back at the end.
    let post = this.nextToken;
    let expect = this.expectToken;
    let sum = this.checksum;
    let bad = 0;
    let kicks = 0;
    let calls = 0;
    for (let it = 0; it < n; it++) {
      // Driver: post the batch, then publish it and decide on a kick.
      for (let k = 0; k < batch; k++) {
        const r = drv.addBuf(sgAddr, sgLen, (post & mask) * segments, segments, 0, post);
        if (r < 0) this.fail('addBuf', r);
        post = (post + 1) >>> 0;
      }
      if (drv.kickPrepare()) kicks++;
      // Device: pop, validate (and copy), push used; then publish and decide on an interrupt.
      const done = dev.process(size);
      if (done < 0) this.fail('process', done);
      if (dev.publishUsed()) calls++;
      // Driver: reclaim; tokens must come back in order (the device completes in order).
      let token: number;
      while ((token = drv.getBuf()) >= 0) {
        if (token !== expect) bad++;
        expect = (expect + 1) >>> 0;
        sum = (sum + token + drv.lastLen) >>> 0;
      }
      if (token !== Status.NONE) this.fail('getBuf', token);
    }
    this.nextToken = post;
    this.expectToken = expect;
    this.checksum = sum;
    this.mismatches += bad;
    this.kicks += kicks;
    this.calls += calls;
    return dev.descsDone - descs0;
  }

  protected checkIndices(errs: string[]): void {
    const drv = this.driver;
    const dev = this.device;
    const posted = this.nextToken & 0xffff;
    if (drv.publishedAvailIdx !== posted) errs.push(`avail.idx ${drv.publishedAvailIdx} != ${posted}`);
    if (dev.lastAvailIdx !== posted) errs.push(`device last_avail_idx ${dev.lastAvailIdx} != ${posted}`);
    if (dev.usedIdxShadow !== posted || drv.lastUsedIdx !== posted) {
      errs.push(`used idx ${dev.usedIdxShadow} / driver last_used ${drv.lastUsedIdx} != ${posted}`);
    }
  }
}

/** The round trip over a packed ring (same loop, packed verbs). */
class PackedRoundTrip extends RoundTripBase {
  readonly driver: PackedDriver;
  readonly device: PackedDevice;

  constructor(opts: TsRoundTripOptions) {
    super(opts);
    this.driver = new PackedDriver(this.mem, this.map.areas);
    this.device = new PackedDevice(this.mem, this.map.areas, this.map.device);
  }

  protected loop(n: number): number {
    const drv = this.driver;
    const dev = this.device;
    const { batch, segments, mask, size, sgAddr, sgLen } = this;
    const descs0 = dev.descsDone;
    let post = this.nextToken;
    let expect = this.expectToken;
    let sum = this.checksum;
    let bad = 0;
    let kicks = 0;
    let calls = 0;
    for (let it = 0; it < n; it++) {
      for (let k = 0; k < batch; k++) {
        const r = drv.addBuf(sgAddr, sgLen, (post & mask) * segments, segments, 0, post);
        if (r < 0) this.fail('addBuf', r);
        post = (post + 1) >>> 0;
      }
      if (drv.kickPrepare()) kicks++;
      const done = dev.process(size);
      if (done < 0) this.fail('process', done);
      if (dev.publishUsed()) calls++;
      let token: number;
      while ((token = drv.getBuf()) >= 0) {
        if (token !== expect) bad++;
        expect = (expect + 1) >>> 0;
        sum = (sum + token + drv.lastLen) >>> 0;
      }
      if (token !== Status.NONE) this.fail('getBuf', token);
    }
    this.nextToken = post;
    this.expectToken = expect;
    this.checksum = sum;
    this.mismatches += bad;
    this.kicks += kicks;
    this.calls += calls;
    return dev.descsDone - descs0;
  }

  protected checkIndices(errs: string[]): void {
    const drv = this.driver;
    const dev = this.device;
    const slots = this.stats().chains * this.segments; // descriptors posted since the start
    const pos = slots % this.size;
    const wrap = Math.floor(slots / this.size) % 2 === 0 ? 1 : 0;
    const sides: [string, number, number][] = [
      ['driver next_avail', drv.nextAvail, drv.availWrapCounter],
      ['device next_avail', dev.nextAvail, dev.availWrapCounter],
      ['device next_used', dev.nextUsed, dev.usedWrapCounter],
      ['driver last_used', drv.lastUsed, drv.usedWrapCounter],
    ];
    for (const [name, at, w] of sides) {
      if (at !== pos || w !== wrap) errs.push(`${name} ${at}/wrap ${w}, expected ${pos}/wrap ${wrap}`);
    }
  }
}

/**
 * Creates one round-trip benchmark instance: a driver and a device on a fresh memory, the
 * driver's buffers filled once. See the module comment for the workload.
 */
export function createTsRoundTrip(opts: TsRoundTripOptions): TsRoundTripInstance {
  if (opts.layout === 'split') return new SplitRoundTrip(opts);
  if (opts.layout === 'packed') return new PackedRoundTrip(opts);
  throw new RangeError(`unknown layout ${String(opts.layout)}`);
}
