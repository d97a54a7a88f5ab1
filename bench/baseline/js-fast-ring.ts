// The strongest plain-JavaScript baseline of the virtio ring round trip (VIRTIO 1.3 §2.7 split,
// §2.8 packed): what a JS author chasing speed writes. Same workload, same memory layout and the
// same checks as bench/baseline/ts-ring.ts (and as the wasm core and bench/native/ring.c), but
// each side's batch is ONE function with the whole queue state in locals:
//
//   driverAdd(n)      add n buffers, publish once, decide the kick        (virtio_ring.c)
//   deviceServe(max)  pop + validate + translate (DMA-region check) + copy + write used for
//                     every available chain, publish once, decide the call  (vhost / vringh)
//   driverReclaim()   validate used entries, free chains, hand back tokens  (virtio_ring.c)
//
// Typed-array views are created once; no allocation, no BigInt, no helper calls per descriptor
// (the 64-byte copy is an unrolled u32 loop inline; longer or unaligned copies use copyWithin).
// The device checks everything the driver controls (avail.idx distance, head/next bounds, loop
// guard, INDIRECT not negotiated, readable-before-writable, 2^32-1 total, DMA region, sink room);
// the driver checks everything the device controls (used.idx distance, used id bound, in flight).
// Results use the Status codes of ts-ring.ts; failures are sticky.
//
// Self-test: node --import tsx bench/baseline/js-fast-ring.check.ts

import {
  RingMemory, workloadLayout, payloadByte, statusName,
  type Layout, type TsRoundTrip, type TsRoundTripOptions, type WorkloadLayout,
} from './ts-ring.ts';

// Spec constants as module-local consts (the values of ts-ring.ts's exports): an imported binding
// compiled by a TS loader (tsx/esbuild) becomes a getter call per use, 20-30 % of this loop.
/** §2.7.5 / §2.8.6 VIRTQ_DESC_F_NEXT. */
const VIRTQ_DESC_F_NEXT = 1;
/** §2.7.5 / §2.8.3 VIRTQ_DESC_F_WRITE. */
const VIRTQ_DESC_F_WRITE = 2;
/** §2.7.5.3 / §2.8.7 VIRTQ_DESC_F_INDIRECT. */
const VIRTQ_DESC_F_INDIRECT = 4;
/** §2.8.1 packed AVAIL (bit 7) and USED (bit 15). */
const VIRTQ_DESC_F_AVAIL = 1 << 7;
const VIRTQ_DESC_F_USED = 1 << 15;
/** §2.7.7 avail.flags NO_INTERRUPT; §2.7.10 used.flags NO_NOTIFY; §2.8.10 RING_EVENT_FLAGS_DISABLE. */
const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
const VIRTQ_USED_F_NO_NOTIFY = 1;
const RING_EVENT_FLAGS_DISABLE = 1;
const AVAIL_USED = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
const U32_MAX = 0xffff_ffff;
// Status codes (ts-ring.ts Status), local for the same reason.
const NO_SPACE = -2;
const BAD_AVAIL_IDX = -3;
const BAD_HEAD = -4;
const BAD_NEXT = -5;
const LOOP = -6;
const INDIRECT = -7;
const ORDER = -8;
const TOO_LONG = -9;
const BAD_ADDR = -10;
const BAD_ID = -11;
const NOT_IN_FLIGHT = -12;
const BAD_USED_IDX = -13;
const SINK_OVERFLOW = -14;

/** A fast round-trip instance, its parts exposed for the self-test. */
export interface JsFastRoundTrip extends TsRoundTrip {
  readonly layout: Layout;
  readonly mem: RingMemory;
  readonly map: WorkloadLayout;
  /** Driver: adds `n` one-chain buffers (tokens continue from the last), publishes, decides the kick. Returns n or a Status. */
  driverAdd(n: number): number;
  /** Device: serves up to `max` available chains. Returns the count, or a negative Status (sticky). */
  deviceServe(max: number): number;
  /** Driver: reclaims every used buffer. Returns the count, or a negative Status (sticky). */
  driverReclaim(): number;
  /** Sticky driver / device failure (0 while healthy). */
  readonly driverBroken: number;
  readonly deviceBroken: number;
  /** Descriptors walked by the device and the length total of the chain served last. */
  readonly lastChainDescs: number;
  readonly lastChainLen: number;
  stats(): { iterations: number; chains: number; descs: number; kicks: number; calls: number; checksum: number };
}

/** Shared configuration and checks; one subclass per layout holds the three hot functions. */
abstract class FastBase {
  readonly layout: Layout;
  readonly mem: RingMemory;
  readonly map: WorkloadLayout;
  protected readonly size: number;
  protected readonly batch: number;
  protected readonly segments: number;
  protected readonly copy: boolean;
  protected readonly payload: number;
  protected readonly sgAddr: Uint32Array;
  protected readonly sgLen: Uint32Array;
  // Driver-private state (Linux desc_extra / desc_state), never read back from the ring.
  protected readonly dNext: Uint16Array;
  protected readonly dCount: Uint16Array;
  protected readonly dToken: Uint32Array;
  protected readonly dLive: Uint8Array;
  protected freeHead = 0;
  protected numFree: number;
  protected inFlight = 0;
  protected post = 0;
  protected expect = 0;
  protected checksum = 0;
  protected mismatches = 0;
  protected kicks = 0;
  protected calls = 0;
  protected devDescs = 0;
  protected popped = 0;
  driverBroken = 0;
  deviceBroken = 0;
  lastChainDescs = 0;
  lastChainLen = 0;
  private iterations = 0;
  private chains = 0;
  private descs = 0;

  constructor(opts: TsRoundTripOptions) {
    const { layout, size, batch, copy, payload } = opts;
    const segments = opts.segments ?? 1;
    const memoryBytes = opts.memoryBytes ?? 4 << 20;
    if (!Number.isInteger(segments) || segments < 1 || segments > payload) throw new RangeError(`segments must be in 1..payload, got ${segments}`);
    if (!Number.isInteger(batch) || batch < 1 || batch * segments > size) throw new RangeError(`batch * segments must be in 1..size, got ${batch} * ${segments}`);
    const map0 = workloadLayout(layout, size, payload, memoryBytes);
    this.layout = layout;
    this.map = { ...map0, device: { ...map0.device, copy } };
    this.mem = new RingMemory(memoryBytes);
    this.size = size;
    this.batch = batch;
    this.segments = segments;
    this.copy = copy;
    this.payload = payload;
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
    this.dNext = new Uint16Array(size);
    this.dCount = new Uint16Array(size);
    this.dToken = new Uint32Array(size);
    this.dLive = new Uint8Array(size);
    this.numFree = size;
  }

  abstract driverAdd(n: number): number;
  abstract deviceServe(max: number): number;
  abstract driverReclaim(): number;
  protected abstract checkIndices(errs: string[]): void;

  run(n: number): number {
    const batch = this.batch;
    const d0 = this.devDescs;
    for (let it = 0; it < n; it++) {
      const a = this.driverAdd(batch);
      if (a < 0) this.fail('driverAdd', a);
      const s = this.deviceServe(batch);
      if (s < 0) this.fail('deviceServe', s);
      const r = this.driverReclaim();
      if (r < 0) this.fail('driverReclaim', r);
    }
    const moved = this.devDescs - d0;
    this.iterations += n;
    this.chains += n * batch;
    this.descs += moved;
    return moved;
  }

  stats(): { iterations: number; chains: number; descs: number; kicks: number; calls: number; checksum: number } {
    const { iterations, chains, descs, kicks, calls, checksum } = this;
    return { iterations, chains, descs, kicks, calls, checksum };
  }

  private fail(who: string, code: number): never {
    throw new Error(`js-fast-ring ${this.layout}: ${who} failed with ${statusName(code)}`);
  }

  check(): void {
    const errs: string[] = [];
    const { size, segments, payload } = this;
    if (this.mismatches !== 0) errs.push(`${this.mismatches} tokens came back out of order`);
    if (this.expect !== this.post) errs.push(`posted ${this.post} tokens, got back ${this.expect}`);
    if (this.descs !== this.chains * segments) errs.push(`moved ${this.descs} descriptors, expected ${this.chains * segments}`);
    if (this.kicks !== this.iterations || this.calls !== this.iterations) errs.push(`kicks ${this.kicks} / calls ${this.calls} != ${this.iterations}`);
    if (this.numFree !== size || this.inFlight !== 0) errs.push(`driver has ${this.numFree} free descriptors of ${size}, ${this.inFlight} in flight`);
    if (this.driverBroken !== 0 || this.deviceBroken !== 0) errs.push('a side is broken');
    const t = this.post;
    const sum = (t % 2 === 0 ? Math.imul(t / 2, t - 1) : Math.imul(t, (t - 1) / 2)) >>> 0;
    if (sum !== this.checksum) errs.push(`checksum ${this.checksum} != ${sum}`);
    this.checkIndices(errs);
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
    if (errs.length > 0) throw new Error(`js-fast-ring ${this.layout} batch ${this.batch}${this.copy ? ' copy' : ''}: ${errs.join('; ')}`);
  }
}

/** Split ring (§2.7): avail ring in, used ring out. */
class SplitFast extends FastBase {
  private readonly desc32: number;
  private readonly availFlags16: number;
  private readonly usedFlags16: number;
  // Device state.
  lastAvail = 0;
  usedIdx = 0;
  // Driver state.
  availShadow = 0;
  lastUsed = 0;

  constructor(opts: TsRoundTripOptions) {
    super(opts);
    const a = this.map.areas;
    this.desc32 = a.descArea >> 2;
    this.availFlags16 = a.driverArea >> 1;
    this.usedFlags16 = a.deviceArea >> 1;
    for (let i = 0; i < this.size; i++) this.dNext[i] = (i + 1) & (this.size - 1);
  }

  driverAdd(n: number): number {
    if (this.driverBroken !== 0) return this.driverBroken;
    const u16 = this.mem.u16;
    const u32 = this.mem.u32;
    const { size, segments, sgAddr, sgLen, dNext, dCount, dToken, dLive, desc32 } = this;
    const mask = size - 1;
    const ring16 = this.availFlags16 + 2;
    let head = this.freeHead;
    let numFree = this.numFree;
    let shadow = this.availShadow;
    let post = this.post;
    let k = 0;
    for (; k < n; k++) {
      if (segments > numFree) break;
      const sg = (post & mask) * segments;
      const h = head;
      let i = h;
      for (let s = 0; s < segments; s++) {
        const d = desc32 + (i << 2);
        const next = dNext[i]!;
        u32[d] = sgAddr[sg + s]!;
        u32[d + 1] = 0;
        u32[d + 2] = sgLen[sg + s]!;
        // §2.7.4.2: readable before writable (this workload posts readable buffers only).
        u16[(d << 1) + 6] = s + 1 < segments ? VIRTQ_DESC_F_NEXT : 0;
        u16[(d << 1) + 7] = next;
        i = next;
      }
      head = i;
      numFree -= segments;
      dCount[h] = segments;
      dToken[h] = post;
      dLive[h] = 1;
      u16[ring16 + (shadow & mask)] = h;
      shadow = (shadow + 1) & 0xffff;
      post = (post + 1) >>> 0;
    }
    this.freeHead = head;
    this.numFree = numFree;
    this.inFlight += k;
    this.availShadow = shadow;
    this.post = post;
    // §2.7.13.3.1: descriptors and ring entries before avail.idx (one thread: program order).
    u16[this.availFlags16 + 1] = shadow;
    // §2.7.13.4.1: used.flags read after publishing.
    if ((u16[this.usedFlags16]! & VIRTQ_USED_F_NO_NOTIFY) === 0) this.kicks++;
    return k === n ? n : NO_SPACE;
  }

  deviceServe(max: number): number {
    if (this.deviceBroken !== 0) return this.deviceBroken;
    const u8 = this.mem.u8;
    const u16 = this.mem.u16;
    const u32 = this.mem.u32;
    const size = this.size;
    const mask = size - 1;
    const desc32 = this.desc32;
    const ring16 = this.availFlags16 + 2;
    const usedRing32 = (this.usedFlags16 >> 1) + 1;
    const { ramBase, ramEnd, copy, sinkBase, sinkSlotBytes } = this.map.device;
    let last = this.lastAvail;
    let used = this.usedIdx;
    let popped = this.popped;
    let descs = 0;
    const availIdx = u16[this.availFlags16 + 1]!;
    // §2.7.13.3: the driver cannot be more than a ring ahead.
    if (((availIdx - last) & 0xffff) > size) return (this.deviceBroken = BAD_AVAIL_IDX);
    let done = 0;
    let err = 0;
    let chainDescs = 0;
    let chainLen = 0;
    while (done < max && last !== availIdx) {
      const head = u16[ring16 + (last & mask)]!;
      if (head >= size) { err = BAD_HEAD; break; }
      let sinkPos = sinkBase + (popped & mask) * sinkSlotBytes;
      {
        // One direct descriptor (the common case): the same checks without the walk's state.
        const d = desc32 + (head << 2);
        const flags = u16[(d << 1) + 6]!;
        if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) === 0) {
          const lo = u32[d]!;
          const len = u32[d + 2]!;
          if (u32[d + 1]! !== 0 || lo < ramBase || lo > ramEnd || len > ramEnd - lo) { err = BAD_ADDR; break; }
          if (copy && (flags & VIRTQ_DESC_F_WRITE) === 0) {
            if (len > sinkSlotBytes) { err = SINK_OVERFLOW; break; }
            if (len === 64 && ((sinkPos | lo) & 3) === 0) {
              const o = sinkPos >> 2;
              const s = lo >> 2;
              for (let j = 0; j < 16; j += 4) {
                const a = u32[s + j]!; const b = u32[s + j + 1]!; const c = u32[s + j + 2]!; const e = u32[s + j + 3]!;
                u32[o + j] = a; u32[o + j + 1] = b; u32[o + j + 2] = c; u32[o + j + 3] = e;
              }
            } else {
              u8.copyWithin(sinkPos, lo, lo + len);
            }
          }
          const e = usedRing32 + ((used & mask) << 1);
          u32[e] = head;
          u32[e + 1] = 0;
          used = (used + 1) & 0xffff;
          last = (last + 1) & 0xffff;
          popped++;
          descs++;
          chainDescs = 1;
          chainLen = len;
          done++;
          continue;
        }
      }
      let sinkRoom = sinkSlotBytes;
      let i = head;
      let count = 0;
      let total = 0;
      let writable = false;
      for (;;) {
        if (++count > size) { err = LOOP; break; }
        const d = desc32 + (i << 2);
        const flags = u16[(d << 1) + 6]!;
        if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) { err = INDIRECT; break; }
        const lo = u32[d]!;
        const len = u32[d + 2]!;
        if (u32[d + 1]! !== 0 || lo < ramBase || lo > ramEnd || len > ramEnd - lo) { err = BAD_ADDR; break; }
        if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
          writable = true;
        } else {
          if (writable) { err = ORDER; break; }
          if (copy) {
            if (len > sinkRoom) { err = SINK_OVERFLOW; break; }
            if (len <= 64 && ((sinkPos | lo | len) & 3) === 0) {
              let o = sinkPos >> 2;
              let s = lo >> 2;
              let w = len >> 2;
              for (; w >= 4; w -= 4, s += 4, o += 4) {
                const a = u32[s]!; const b = u32[s + 1]!; const c = u32[s + 2]!; const e = u32[s + 3]!;
                u32[o] = a; u32[o + 1] = b; u32[o + 2] = c; u32[o + 3] = e;
              }
              for (; w > 0; w--) u32[o++] = u32[s++]!;
            } else {
              u8.copyWithin(sinkPos, lo, lo + len);
            }
            sinkPos += len;
            sinkRoom -= len;
          }
        }
        total += len;
        if (total > U32_MAX) { err = TOO_LONG; break; }
        if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
        i = u16[(d << 1) + 7]!;
        if (i >= size) { err = BAD_NEXT; break; }
      }
      if (err !== 0) break;
      // struct vring_used_elem { le32 id; le32 len } (nothing written: len 0).
      const e = usedRing32 + ((used & mask) << 1);
      u32[e] = head;
      u32[e + 1] = 0;
      used = (used + 1) & 0xffff;
      last = (last + 1) & 0xffff;
      popped++;
      descs += count;
      chainDescs = count;
      chainLen = total;
      done++;
    }
    this.lastAvail = last;
    this.usedIdx = used;
    this.popped = popped;
    this.devDescs += descs;
    this.lastChainDescs = chainDescs;
    this.lastChainLen = chainLen;
    if (done > 0) {
      // §2.7.8.2: used elements before used.idx; then the interrupt decision (§2.7.7.1).
      u16[this.usedFlags16 + 1] = used;
      if ((u16[this.availFlags16]! & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0) this.calls++;
    }
    if (err !== 0) return (this.deviceBroken = err);
    return done;
  }

  driverReclaim(): number {
    if (this.driverBroken !== 0) return this.driverBroken;
    const u16 = this.mem.u16;
    const u32 = this.mem.u32;
    const { size, dNext, dCount, dToken, dLive } = this;
    const mask = size - 1;
    const usedRing32 = (this.usedFlags16 >> 1) + 1;
    let last = this.lastUsed;
    const idx = u16[this.usedFlags16 + 1]!;
    const pending = (idx - last) & 0xffff;
    // The device cannot use more than is in flight.
    if (pending > this.inFlight) return (this.driverBroken = BAD_USED_IDX);
    let head = this.freeHead;
    let numFree = this.numFree;
    let expect = this.expect;
    let sum = this.checksum;
    let bad = 0;
    let k = 0;
    let err = 0;
    while (last !== idx) {
      const e = usedRing32 + ((last & mask) << 1);
      const id = u32[e]!;
      const len = u32[e + 1]!;
      if (id >= size) { err = BAD_ID; break; }
      if (dLive[id] === 0) { err = NOT_IN_FLIGHT; break; }
      dLive[id] = 0;
      const n = dCount[id]!;
      let tail = id;
      for (let j = 1; j < n; j++) tail = dNext[tail]!;
      dNext[tail] = head;
      head = id;
      numFree += n;
      const token = dToken[id]!;
      if (token !== expect) bad++;
      expect = (expect + 1) >>> 0;
      sum = (sum + token + len) >>> 0;
      last = (last + 1) & 0xffff;
      k++;
    }
    this.lastUsed = last;
    this.freeHead = head;
    this.numFree = numFree;
    this.inFlight -= k;
    this.expect = expect;
    this.checksum = sum;
    this.mismatches += bad;
    if (err !== 0) return (this.driverBroken = err);
    return k;
  }

  protected checkIndices(errs: string[]): void {
    const posted = this.post & 0xffff;
    const u16 = this.mem.u16;
    if (u16[this.availFlags16 + 1] !== posted) errs.push(`avail.idx ${u16[this.availFlags16 + 1]} != ${posted}`);
    if (this.lastAvail !== posted || this.usedIdx !== posted || this.lastUsed !== posted) {
      errs.push(`last_avail ${this.lastAvail} / used ${this.usedIdx} / last_used ${this.lastUsed} != ${posted}`);
    }
  }
}

/** Packed ring (§2.8): one descriptor ring, wrap counters on both sides. */
class PackedFast extends FastBase {
  private readonly desc32: number;
  private readonly driverEvent16: number;
  private readonly deviceEvent16: number;
  // Driver state.
  nextAvail = 0;
  availWrap = 1;
  lastUsed = 0;
  usedWrap = 1;
  // Device state.
  devAvail = 0;
  devAvailWrap = 1;
  devUsed = 0;
  devUsedWrap = 1;

  constructor(opts: TsRoundTripOptions) {
    super(opts);
    const a = this.map.areas;
    this.desc32 = a.descArea >> 2;
    this.driverEvent16 = a.driverArea >> 1;
    this.deviceEvent16 = a.deviceArea >> 1;
    for (let i = 0; i < this.size; i++) this.dNext[i] = i + 1; // `size` ends the list
  }

  driverAdd(n: number): number {
    if (this.driverBroken !== 0) return this.driverBroken;
    const u16 = this.mem.u16;
    const u32 = this.mem.u32;
    const { size, segments, sgAddr, sgLen, dNext, dCount, dToken, dLive, desc32 } = this;
    const mask = size - 1;
    let freeId = this.freeHead;
    let numFree = this.numFree;
    let pos = this.nextAvail;
    let wrap = this.availWrap;
    let post = this.post;
    let k = 0;
    for (; k < n; k++) {
      if (segments > numFree) break;
      const sg = (post & mask) * segments;
      const id = freeId;
      freeId = dNext[id]!;
      const headPos = pos;
      let headFlags = 0;
      // §2.8.1: available = AVAIL is the wrap counter, USED its inverse.
      let bits = wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
      for (let s = 0; s < segments; s++) {
        const d = desc32 + (pos << 2);
        u32[d] = sgAddr[sg + s]!;
        u32[d + 1] = 0;
        u32[d + 2] = sgLen[sg + s]!;
        u16[(d << 1) + 6] = id;
        const f = bits | (s + 1 < segments ? VIRTQ_DESC_F_NEXT : 0);
        if (s === 0) headFlags = f;
        else u16[(d << 1) + 7] = f;
        if (++pos === size) {
          pos = 0;
          wrap ^= 1;
          bits = wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
        }
      }
      numFree -= segments;
      dCount[id] = segments;
      dToken[id] = post;
      dLive[id] = 1;
      // §2.8.21.1.1: the head's flags last.
      u16[((desc32 + (headPos << 2)) << 1) + 7] = headFlags;
      post = (post + 1) >>> 0;
    }
    this.freeHead = freeId;
    this.numFree = numFree;
    this.inFlight += k;
    this.nextAvail = pos;
    this.availWrap = wrap;
    this.post = post;
    // §2.8.21.3.1: device event suppression read after the flags.
    if (u16[this.deviceEvent16 + 1] !== RING_EVENT_FLAGS_DISABLE) this.kicks++;
    return k === n ? n : NO_SPACE;
  }

  deviceServe(max: number): number {
    if (this.deviceBroken !== 0) return this.deviceBroken;
    const u8 = this.mem.u8;
    const u16 = this.mem.u16;
    const u32 = this.mem.u32;
    const size = this.size;
    const mask = size - 1;
    const desc32 = this.desc32;
    const { ramBase, ramEnd, copy, sinkBase, sinkSlotBytes } = this.map.device;
    let pos = this.devAvail;
    let wrap = this.devAvailWrap;
    let upos = this.devUsed;
    let uwrap = this.devUsedWrap;
    let popped = this.popped;
    let descs = 0;
    let done = 0;
    let err = 0;
    let headUsed = -1;
    let headUsedFlags = 0;
    let chainDescs = 0;
    let chainLen = 0;
    while (done < max) {
      let d = desc32 + (pos << 2);
      let flags = u16[(d << 1) + 7]!;
      // §2.8.1: available when AVAIL == wrap and USED != wrap.
      if ((flags & AVAIL_USED) !== (wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED)) break;
      let sinkPos = sinkBase + (popped & mask) * sinkSlotBytes;
      if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) === 0) {
        // One direct descriptor (the common case): the same checks without the walk's state.
        const lo = u32[d]!;
        const len = u32[d + 2]!;
        if (u32[d + 1]! !== 0 || lo < ramBase || lo > ramEnd || len > ramEnd - lo) { err = BAD_ADDR; break; }
        if (copy && (flags & VIRTQ_DESC_F_WRITE) === 0) {
          if (len > sinkSlotBytes) { err = SINK_OVERFLOW; break; }
          if (len === 64 && ((sinkPos | lo) & 3) === 0) {
            const o = sinkPos >> 2;
            const s = lo >> 2;
            for (let j = 0; j < 16; j += 4) {
              const a = u32[s + j]!; const b = u32[s + j + 1]!; const c = u32[s + j + 2]!; const e = u32[s + j + 3]!;
              u32[o + j] = a; u32[o + j + 1] = b; u32[o + j + 2] = c; u32[o + j + 3] = e;
            }
          } else {
            u8.copyWithin(sinkPos, lo, lo + len);
          }
        }
        const id = u16[(d << 1) + 6]!;
        if (id >= size) { err = BAD_ID; break; }
        if (++pos === size) { pos = 0; wrap ^= 1; }
        const ud = desc32 + (upos << 2);
        u16[(ud << 1) + 6] = id;
        u32[ud + 2] = 0;
        const uf = uwrap !== 0 ? AVAIL_USED : 0;
        if (headUsed < 0) { headUsed = ud; headUsedFlags = uf; } else u16[(ud << 1) + 7] = uf;
        if (++upos === size) { upos = 0; uwrap ^= 1; }
        popped++;
        descs++;
        chainDescs = 1;
        chainLen = len;
        done++;
        continue;
      }
      let sinkRoom = sinkSlotBytes;
      let i = pos;
      let w = wrap;
      let count = 0;
      let total = 0;
      let writable = false;
      for (;;) {
        if (++count > size) { err = LOOP; break; }
        if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) { err = INDIRECT; break; }
        const lo = u32[d]!;
        const len = u32[d + 2]!;
        if (u32[d + 1]! !== 0 || lo < ramBase || lo > ramEnd || len > ramEnd - lo) { err = BAD_ADDR; break; }
        if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
          writable = true;
        } else {
          if (writable) { err = ORDER; break; }
          if (copy) {
            if (len > sinkRoom) { err = SINK_OVERFLOW; break; }
            if (len <= 64 && ((sinkPos | lo | len) & 3) === 0) {
              let o = sinkPos >> 2;
              let s = lo >> 2;
              let n = len >> 2;
              for (; n >= 4; n -= 4, s += 4, o += 4) {
                const a = u32[s]!; const b = u32[s + 1]!; const c = u32[s + 2]!; const e = u32[s + 3]!;
                u32[o] = a; u32[o + 1] = b; u32[o + 2] = c; u32[o + 3] = e;
              }
              for (; n > 0; n--) u32[o++] = u32[s++]!;
            } else {
              u8.copyWithin(sinkPos, lo, lo + len);
            }
            sinkPos += len;
            sinkRoom -= len;
          }
        }
        total += len;
        if (total > U32_MAX) { err = TOO_LONG; break; }
        if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
        if (++i === size) { i = 0; w ^= 1; }
        d = desc32 + (i << 2);
        flags = u16[(d << 1) + 7]!;
      }
      if (err !== 0) break;
      // §2.8.6: the buffer id is in the last descriptor.
      const id = u16[(d << 1) + 6]!;
      if (id >= size) { err = BAD_ID; break; }
      if (++i === size) { i = 0; w ^= 1; }
      pos = i;
      wrap = w;
      // Used descriptor at the device's used position; the batch's first flags go last.
      const ud = desc32 + (upos << 2);
      u16[(ud << 1) + 6] = id;
      u32[ud + 2] = 0;
      const uf = uwrap !== 0 ? AVAIL_USED : 0;
      if (headUsed < 0) { headUsed = ud; headUsedFlags = uf; } else u16[(ud << 1) + 7] = uf;
      upos += count;
      if (upos >= size) { upos -= size; uwrap ^= 1; }
      popped++;
      descs += count;
      chainDescs = count;
      chainLen = total;
      done++;
    }
    this.devAvail = pos;
    this.devAvailWrap = wrap;
    this.devUsed = upos;
    this.devUsedWrap = uwrap;
    this.popped = popped;
    this.devDescs += descs;
    this.lastChainDescs = chainDescs;
    this.lastChainLen = chainLen;
    if (headUsed >= 0) {
      // §2.8.9: the rest of the batch before the first used descriptor's flags.
      u16[(headUsed << 1) + 7] = headUsedFlags;
      if (u16[this.driverEvent16 + 1] !== RING_EVENT_FLAGS_DISABLE) this.calls++;
    }
    if (err !== 0) return (this.deviceBroken = err);
    return done;
  }

  driverReclaim(): number {
    if (this.driverBroken !== 0) return this.driverBroken;
    const u16 = this.mem.u16;
    const u32 = this.mem.u32;
    const { size, dNext, dCount, dToken, dLive, desc32 } = this;
    let pos = this.lastUsed;
    let wrap = this.usedWrap;
    let freeId = this.freeHead;
    let numFree = this.numFree;
    let expect = this.expect;
    let sum = this.checksum;
    let bad = 0;
    let k = 0;
    let err = 0;
    for (;;) {
      const d = desc32 + (pos << 2);
      const flags = u16[(d << 1) + 7]!;
      // §2.8.1: used when AVAIL == USED == the used wrap counter.
      if ((flags & AVAIL_USED) !== (wrap !== 0 ? AVAIL_USED : 0)) break;
      const id = u16[(d << 1) + 6]!;
      const len = u32[d + 2]!;
      if (id >= size) { err = BAD_ID; break; }
      if (dLive[id] === 0) { err = NOT_IN_FLIGHT; break; }
      dLive[id] = 0;
      const n = dCount[id]!;
      dNext[id] = freeId;
      freeId = id;
      numFree += n;
      const token = dToken[id]!;
      if (token !== expect) bad++;
      expect = (expect + 1) >>> 0;
      sum = (sum + token + len) >>> 0;
      pos += n;
      if (pos >= size) { pos -= size; wrap ^= 1; }
      k++;
    }
    this.lastUsed = pos;
    this.usedWrap = wrap;
    this.freeHead = freeId;
    this.numFree = numFree;
    this.inFlight -= k;
    this.expect = expect;
    this.checksum = sum;
    this.mismatches += bad;
    if (err !== 0) return (this.driverBroken = err);
    return k;
  }

  protected checkIndices(errs: string[]): void {
    const slots = this.stats().chains * this.segments;
    const pos = slots % this.size;
    const wrap = Math.floor(slots / this.size) % 2 === 0 ? 1 : 0;
    const sides: [string, number, number][] = [
      ['driver next_avail', this.nextAvail, this.availWrap],
      ['device next_avail', this.devAvail, this.devAvailWrap],
      ['device next_used', this.devUsed, this.devUsedWrap],
      ['driver last_used', this.lastUsed, this.usedWrap],
    ];
    for (const [name, at, w] of sides) if (at !== pos || w !== wrap) errs.push(`${name} ${at}/wrap ${w}, expected ${pos}/wrap ${wrap}`);
  }
}

/** Creates one fast round-trip instance (same options as createTsRoundTrip). */
export function createJsFastRoundTrip(opts: TsRoundTripOptions): JsFastRoundTrip {
  if (opts.layout === 'split') return new SplitFast(opts);
  if (opts.layout === 'packed') return new PackedFast(opts);
  throw new RangeError(`unknown layout ${String(opts.layout)}`);
}
