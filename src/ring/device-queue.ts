// The device side of a virtqueue (what Linux vringh / vhost do): pop available chains —
// walked, validated and translated through the device's map in wasm — expose their
// readable/writable segments, push used entries with the written length, and decide
// notifications. Same methods for split (VIRTIO 1.3 §2.7) and packed (§2.8).

import { VirtioError, Code } from '../errors.ts';
import { Q, QF, REC, ringAreaAligns, ringAreaSizes } from './layout.ts';
import { QueueBase, ringFeatures } from './queue-base.ts';
import { PERM_R, PERM_W, PERM_RW, type Iotlb } from '../platform/iotlb.ts';
import type { Platform } from '../platform/platform.ts';
import { type VqState, checkVqState } from './vq-state.ts';
import type { RecordedChains } from './recorded-chains.ts';

/** setState's copy of a queue's counters across its reset (8 words). */
const statsScratch = new Uint32Array(8);

/** Options of {@link DeviceQueue}. */
export interface DeviceQueueOptions {
  /** Queue size: 1..32768, a power of two for split. */
  size: number;
  /** Negotiated features (ring bits used: RING_PACKED, EVENT_IDX, INDIRECT_DESC, IN_ORDER). @default ringFeatures() */
  features?: bigint;
  /** IOVA of the descriptor area. */
  descArea: number | bigint;
  /** IOVA of the driver area (split avail ring / packed driver event suppression). */
  driverArea: number | bigint;
  /** IOVA of the device area (split used ring / packed device event suppression). */
  deviceArea: number | bigint;
  /** The device's address map; must belong to the same platform (InvalidArgument otherwise). @default platform.identityMap */
  iotlb?: Iotlb;
  /** Most chains one pop() returns. @default min(size, 256) */
  batch?: number;
  /** Segment records per pop, at most 65535 (a chain more fragmented than this breaks the queue). @default min(max(2 × size, 64), 65535) */
  maxSegs?: number;
}

/** A readable or writable piece of a popped chain, as a memory offset (already translated). */
export interface Segment {
  /** Memory offset. */
  addr: number;
  /** Bytes. */
  len: number;
}

/** A popped chain as plain data (see {@link DeviceQueue.chain}). */
export interface Chain {
  /** Head index (split) or buffer id (packed): what the used entry names. */
  id: number;
  /** Ring descriptors the chain occupies (packed: the used descriptor skips by it). */
  ndesc: number;
  /** Device-readable segments, in order. */
  readable: Segment[];
  /** Device-writable segments, in order. */
  writable: Segment[];
  /** Total readable bytes. */
  readBytes: number;
  /** Total writable bytes. */
  writeBytes: number;
}

/**
 * The device side of one virtqueue over rings the driver laid out.
 *
 * Memory access rule: pop() translates buffers under the map in force then. The methods that
 * touch buffer memory later (read, write, copyOut, copyIn, pushPopped of written chains)
 * re-check the segments they touch against the map in force at that moment when the map
 * changed since the pop (Iotlb.generation); memory the device no longer has breaks the queue
 * with AddressUnmapped, thrown, with nothing touched. Code that touches segments itself
 * (from chain(i), or through chainsAddr/segsAddr in wasm) checks accessible(i) or
 * iotlb.allows first.
 */
export class DeviceQueue extends QueueBase {
  /** Most chains one pop() returns. */
  readonly batch: number;
  /** Segment records per pop. */
  readonly maxSegs: number;
  /** The map ring and buffer addresses go through. */
  readonly iotlb: Iotlb;
  private readonly chains: number;
  private readonly segs: number;
  private readonly pushRecs: number;
  // Views through the platform, never cached: the memory's owner may grow it (detaching the buffer).
  private get u32(): Uint32Array {
    return this.platform.u32;
  }
  private get u16(): Uint16Array {
    return this.platform.u16;
  }
  /** True if the last {@link serve} decided the driver needs a used-buffer notification now. */
  serveCall = false;
  /** True if the last {@link serve} stopped at a chain it does not serve: pop() it. */
  serveStopped = false;
  private nPopped = 0;
  private nPushed = 0;
  private nPending = 0;
  /** The map's generation when the chains of the last pop() were translated. */
  private popGen = 0;
  private readonly areas: { desc: bigint; driver: bigint; device: bigint };
  private readonly unsubscribe: () => void;
  /** The ring areas' memory offsets (desc, driver, device) found under map generation `ringsGen` (-1: none). */
  private readonly ringOffs = [0, 0, 0];
  private ringsGen = -1;

  constructor(platform: Platform, opts: DeviceQueueOptions) {
    // The wasm data plane reads the table at iotlb.offset in *this* platform's memory: a map
    // of another platform would be read as whatever bytes sit there. (Iotlb keeps its
    // platform private; checked before anything is allocated.)
    if (opts.iotlb !== undefined && opts.iotlb.platform !== platform) throw new VirtioError(Code.InvalidArgument, 'the iotlb belongs to another Platform');
    super(platform, opts.size, opts.features ?? ringFeatures());
    // Whatever was allocated before a bad option or an unmapped ring throws is returned.
    try {
      this.batch = opts.batch ?? Math.min(this.size, 256);
      // A chain record counts its segments in u16s (defs.ts), hence the 65535 cap.
      this.maxSegs = opts.maxSegs ?? Math.min(Math.max(2 * this.size, 64), 65535);
      if (!Number.isInteger(this.batch) || this.batch < 1 || this.batch > 65536) throw new VirtioError(Code.InvalidArgument, `batch ${this.batch} must be 1..65536`);
      if (!Number.isInteger(this.maxSegs) || this.maxSegs < 1 || this.maxSegs > 65535) throw new VirtioError(Code.InvalidArgument, `maxSegs ${this.maxSegs} must be 1..65535`);
      this.iotlb = opts.iotlb ?? platform.identityMap;
      this.areas = { desc: toIova(opts.descArea, 'descArea'), driver: toIova(opts.driverArea, 'driverArea'), device: toIova(opts.deviceArea, 'deviceArea') };
      this.chains = this.allocPriv(this.batch * REC.CHAIN, 16);
      this.segs = this.allocPriv(this.maxSegs * REC.SEG, 16);
      this.pushRecs = this.allocPriv(this.batch * REC.CHAIN, 16);
      this.mapRings(true);
      this.setWord(Q.IOTLB, this.iotlb.offset);
      this.ex.dev_reset(this.qsb);
      // A map change under a live ring re-translates it; a ring that lost its mapping breaks the queue.
      this.unsubscribe = this.iotlb.onChange(() => this.mapRings(false));
    } catch (e) {
      super.destroy();
      throw e;
    }
  }

  /** Memory offset of the chain records (for device datapaths in wasm). */
  get chainsAddr(): number {
    return this.chains;
  }

  /** Memory offset of the segment records (for device datapaths in wasm). */
  get segsAddr(): number {
    return this.segs;
  }

  /** Chains returned by the last pop(). */
  get popped(): number {
    return this.nPopped;
  }

  /**
   * Pops up to `max` available chains (validated and translated in wasm). Returns the count
   * (0: ring empty); read them with chain(i) or the index accessors until the next pop().
   * Throws a VirtioError with the peer's error code when the driver broke the spec (the
   * queue is then broken until reset: the device should set DEVICE_NEEDS_RESET).
   */
  pop(max = this.batch): number {
    this.live();
    const m = Math.min(max, this.batch);
    const r = this.ex.dev_pop(this.qsb, this.chains, m, this.segs, this.maxSegs);
    if (r < 0) {
      this.nPopped = this.nPushed = 0;
      this.fail(r, 'dev_pop');
    }
    this.nPopped = r;
    this.nPushed = 0;
    this.popGen = this.iotlb.generation;
    return r;
  }

  /**
   * The fused device pass: serves up to `max` available chains that are one device-readable
   * buffer of 1..`stride` bytes (any length when stride is 0) in ONE wasm call, with no chain
   * records: each is validated and translated exactly as pop() does, its bytes are copied to
   * memory at dst + i·stride (when stride > 0), its length is written to the u32 at lens + 4·i
   * (when lens > 0; both ranges must lie in RAM or in private memory), and it is returned as used with 0 bytes written. used->idx is published
   * once and the notification decision of needCall() is made: read it in {@link serveCall}.
   * This is what a transmit datapath does (vhost handle_tx with vhost_add_used_and_signal_n).
   *
   * Returns the chains served. It stops early at the first chain that is anything else
   * (several descriptors, indirect, writable, longer than stride, split across map entries,
   * or malformed): then {@link serveStopped} is true and pop() takes it from there, with the
   * details (and reports any spec violation in it). Throws like pop() for the errors it finds
   * itself (avail->idx too far ahead, head out of range). Chains popped earlier are not touched.
   */
  serve(max = this.batch, dst = 0, stride = 0, lens = 0): number {
    this.live();
    // Cheap integer checks: this wrapper runs once per batch, at batch 1 once per chain.
    if ((max >>> 0) !== max || max > 65536) throw new VirtioError(Code.InvalidArgument, `max ${max} must be 0..65536`);
    if ((stride >>> 0) !== stride) throw new VirtioError(Code.InvalidArgument, `stride ${stride} must be a u32`);
    if (stride !== 0) this.checkOut(dst, max * stride, 'copy destination');
    if (lens !== 0) this.checkOut(lens, 4 * max, 'lens array');
    const r = this.ex.dev_serve(this.qsb, max, dst, stride, lens);
    if (r < 0) {
      this.serveCall = this.serveStopped = false;
      this.fail(r, 'dev_serve');
    }
    // The notification decided in wasm is counted there (stats.notifies).
    this.serveStopped = (r & 2) !== 0;
    this.serveCall = (r & 1) !== 0;
    return r >>> 2;
  }

  /**
   * True if chain i's memory is, right now, still the device's: every readable segment
   * readable and every writable segment writable under the map in force (Iotlb.allows). A
   * single compare while the map has not changed since the pop. Devices that keep a chain
   * (or its segment list, see chain()) to finish later check this, or iotlb.allows on the
   * saved segments, before touching it.
   */
  accessible(i: number): boolean {
    this.live();
    this.checkIndex(i);
    return this.iotlb.generation === this.popGen || (this.segsAllowed(i, false, 0xffffffff) && this.segsAllowed(i, true, 0xffffffff));
  }

  /** Head index / buffer id of popped chain i. */
  chainId(i: number): number {
    this.live();
    return this.u32[(this.chains >> 2) + 8 * i]!;
  }

  /** Ring descriptors chain i occupies. */
  chainDescs(i: number): number {
    this.live();
    return this.u32[(this.chains >> 2) + 8 * i + 1]!;
  }

  /** Readable bytes of chain i. */
  readBytes(i: number): number {
    this.live();
    return this.u32[(this.chains >> 2) + 8 * i + 4]!;
  }

  /** Writable bytes of chain i. */
  writeBytes(i: number): number {
    this.live();
    return this.u32[(this.chains >> 2) + 8 * i + 5]!;
  }

  /** Sets the bytes written into chain i (what its used entry reports). */
  setWritten(i: number, n: number): void {
    this.live();
    this.checkIndex(i);
    if (!Number.isInteger(n) || n < 0 || n > this.writeBytes(i)) throw new VirtioError(Code.InvalidArgument, `written ${n} exceeds chain ${i}'s ${this.writeBytes(i)} writable bytes`);
    this.u32[(this.chains >> 2) + 8 * i + 6] = n;
  }

  /** Chain i as plain data (allocates; the index accessors do not). */
  chain(i: number): Chain {
    this.live();
    this.checkIndex(i);
    const b = (this.chains >> 2) + 8 * i;
    const u = this.u32;
    const start = u[b + 2]!;
    const nr = this.u16[((this.chains + 32 * i + 12) >> 1)]!;
    const nw = this.u16[((this.chains + 32 * i + 14) >> 1)]!;
    const seg = (j: number): Segment => ({ addr: u[(this.segs >> 2) + 2 * j]!, len: u[(this.segs >> 2) + 2 * j + 1]! });
    const readable: Segment[] = [];
    const writable: Segment[] = [];
    for (let j = 0; j < nr; j++) readable.push(seg(start + j));
    for (let j = 0; j < nw; j++) writable.push(seg(start + nr + j));
    return { id: u[b]!, ndesc: u[b + 1]!, readable, writable, readBytes: u[b + 4]!, writeBytes: u[b + 5]! };
  }

  /**
   * Chain i's segments in one small array: [nRead, nWrite, then (memory offset, length) per
   * segment, readable first]. What a device keeps of a chain it finishes later, instead of
   * {@link chain}'s objects. Written into `into` when it is long enough (nothing allocated),
   * else into a new array; returns the array written.
   */
  chainSegments(i: number, into?: Uint32Array): Uint32Array {
    this.live();
    this.checkIndex(i);
    const u = this.u32;
    const b = (this.chains >> 2) + 8 * i;
    const start = u[b + 2]!;
    const nr = this.u16[((this.chains + 32 * i + 12) >> 1)]!;
    const nw = this.u16[((this.chains + 32 * i + 14) >> 1)]!;
    const len = 2 + 2 * (nr + nw);
    const out = into !== undefined && into.length >= len ? into : new Uint32Array(len);
    out[0] = nr;
    out[1] = nw;
    // A word loop, not set(subarray()): a view per call would be an allocation per request.
    const from = (this.segs >> 2) + 2 * start;
    for (let k = 0; k < 2 * (nr + nw); k++) out[2 + k] = u[from + k]!;
    return out;
  }

  /**
   * True if a chain kept as {@link chainSegments} can be named by IOVA under the map in force
   * now: every segment still mapped with its direction's permission, below 2^53 (what
   * {@link recordInto} needs). Allocates nothing. For migration, not the datapath.
   */
  recordable(segs: Uint32Array): boolean {
    this.live();
    const nr = segs[0]!;
    const n = nr + segs[1]!;
    for (let k = 0; k < n; k++) {
      if (this.iotlb.reverse(segs[2 + 2 * k]!, segs[3 + 2 * k]!, k < nr ? PERM_R : PERM_W) < 0) return false;
    }
    return true;
  }

  /**
   * Appends a chain kept as {@link chainSegments} to `out`, named by IOVA under the map in force
   * now, as chain `id` of queue `vq` occupying `ndesc` descriptors. Returns false, with `out`
   * unchanged, if it cannot be named ({@link recordable}): that request must be finished instead.
   */
  recordInto(out: RecordedChains, vq: number, id: number, ndesc: number, segs: Uint32Array): boolean {
    this.live();
    const nr = segs[0]!;
    const n = nr + segs[1]!;
    out.begin(vq, id, ndesc, nr);
    for (let k = 0; k < n; k++) {
      const len = segs[3 + 2 * k]!;
      const iova = this.iotlb.reverse(segs[2 + 2 * k]!, len, k < nr ? PERM_R : PERM_W);
      if (iova < 0) {
        out.abort();
        return false;
      }
      out.piece(iova, len);
    }
    out.end();
    return true;
  }

  /**
   * Takes chains recorded elsewhere ({@link recordInto}) as if they had just been popped: chains
   * `list[from .. from + n)` (n ≤ batch) are translated under this queue's map, written as
   * chain and segment records, and read with chain(i) and the index accessors (and by wasm
   * datapaths) exactly as pop()'s. The ring indices do not move: these chains were popped
   * before (a migration's source did). Returns n. A recorded piece that does not translate
   * contiguously with its permission, or more pieces than maxSegs, breaks the queue
   * (AddressUnmapped), thrown, with nothing else touched. The caller checks the list's shape
   * (ids, counts; see VdpaSimBlk's checkRequests).
   */
  repop(list: RecordedChains, from: number, n: number): number {
    this.live();
    if (!Number.isInteger(from) || !Number.isInteger(n) || from < 0 || n < 0 || n > this.batch || from + n > list.count) {
      throw new VirtioError(Code.InvalidArgument, `cannot re-pop chains ${from}..${from + n} of ${list.count} (batch ${this.batch})`);
    }
    const u32 = this.u32;
    const u16 = this.u16;
    let seg = 0;
    for (let i = 0; i < n; i++) {
      const c = from + i;
      const np = list.pieces(c);
      const nread = list.nread(c);
      const b = (this.chains >> 2) + 8 * i;
      u32[b] = list.id(c);
      u32[b + 1] = list.ndesc(c);
      u32[b + 2] = seg;
      let rb = 0;
      let wb = 0;
      for (let k = 0; k < np; k++) {
        const iova = list.iova(c, k);
        const len = list.len(c, k);
        const readable = k < nread;
        const addr = seg < this.maxSegs && len >= 1 ? this.iotlb.translate(iova, len, readable ? PERM_R : PERM_W) : -1;
        if (addr < 0) {
          this.nPopped = this.nPushed = 0;
          this.breakUnmapped();
        }
        u32[(this.segs >> 2) + 2 * seg] = addr;
        u32[(this.segs >> 2) + 2 * seg + 1] = len;
        if (readable) rb += len;
        else wb += len;
        seg++;
      }
      u16[(this.chains + 32 * i + 12) >> 1] = nread;
      u16[(this.chains + 32 * i + 14) >> 1] = np - nread;
      u32[b + 4] = rb;
      u32[b + 5] = wb;
      u32[b + 6] = 0;
      u32[b + 7] = 0;
    }
    this.nPopped = n;
    this.nPushed = 0;
    this.popGen = this.iotlb.generation;
    return n;
  }

  /**
   * Copies chain i's readable bytes out (allocates). If the map changed since the pop and a
   * segment is no longer readable, breaks the queue (AddressUnmapped) and throws it.
   */
  read(i: number): Uint8Array {
    this.live();
    const c = this.chain(i);
    if (this.iotlb.generation !== this.popGen && !this.segsAllowed(i, false, 0xffffffff)) this.breakUnmapped();
    const out = new Uint8Array(c.readBytes);
    let o = 0;
    for (const s of c.readable) {
      out.set(this.platform.u8.subarray(s.addr, s.addr + s.len), o);
      o += s.len;
    }
    return out;
  }

  /**
   * Writes `data` into chain i's writable segments and sets its written length. Returns bytes
   * written. If the map changed since the pop and a segment it would write is no longer
   * writable, breaks the queue (AddressUnmapped) and throws it, having written nothing.
   */
  write(i: number, data: Uint8Array): number {
    this.live();
    const c = this.chain(i);
    if (data.length > c.writeBytes) throw new VirtioError(Code.InvalidArgument, `${data.length} bytes do not fit chain ${i}'s ${c.writeBytes} writable bytes`);
    if (this.iotlb.generation !== this.popGen && !this.segsAllowed(i, true, data.length)) this.breakUnmapped();
    let o = 0;
    for (const s of c.writable) {
      if (o >= data.length) break;
      const n = Math.min(s.len, data.length - o);
      this.platform.u8.set(data.subarray(o, o + n), s.addr);
      o += n;
    }
    this.u32[(this.chains >> 2) + 8 * i + 6] = o;
    return o;
  }

  /**
   * Gathers the readable bytes of popped chains [0, n) into memory at dst + i·stride (at most
   * stride bytes each), in one wasm call. Returns the total bytes copied. If the map changed
   * since the pop, every segment it would read is checked first (once for the batch); one
   * that is no longer readable breaks the queue (AddressUnmapped), which is thrown, and
   * nothing is copied.
   */
  copyOut(n: number, dst: number, stride: number): number {
    this.live();
    this.checkBatchRange(n, dst, stride);
    if (this.iotlb.generation !== this.popGen) {
      for (let i = 0; i < n; i++) if (!this.segsAllowed(i, false, stride)) this.breakUnmapped();
    }
    return this.ex.dev_copy_out(this.chains, n, this.segs, dst, stride);
  }

  /**
   * Scatters src + i·stride (lens: memory offset of n u32 lengths) into the writable
   * segments of popped chains [0, n), setting their written lengths, in one wasm call. If the
   * map changed since the pop, every segment it would write is checked first (once for the
   * batch); one that is no longer writable breaks the queue (AddressUnmapped), which is
   * thrown, and nothing is written.
   */
  copyIn(n: number, src: number, stride: number, lens: number): number {
    this.live();
    this.checkBatchRange(n, src, stride);
    if (!Number.isInteger(lens) || lens < 0 || lens + 4 * n > this.platform.u8.length) throw new VirtioError(Code.InvalidArgument, 'lens array is outside the memory');
    if (this.iotlb.generation !== this.popGen) {
      const view = this.platform.view;
      for (let i = 0; i < n; i++) {
        if (!this.segsAllowed(i, true, Math.min(view.getUint32(lens + 4 * i, true), stride))) this.breakUnmapped();
      }
    }
    return this.ex.dev_copy_in(this.chains, n, this.segs, src, stride, lens);
  }

  /**
   * Returns the next n popped chains (in pop order, each at most once) as used, with the
   * lengths set by setWritten/write/copyIn (0 otherwise). By default all that remain. With
   * `inOrderBatch` (only if IN_ORDER was negotiated) one used entry stands for the whole
   * batch (§2.7.9, §2.8.10). Returns n. Chains to finish later: save chainId/chainDescs and
   * use complete() + flushUsed(). If the map changed since the pop, a used entry that claims
   * `written` bytes in memory the device no longer has writable breaks the queue
   * (AddressUnmapped), which is thrown, and nothing is pushed.
   */
  pushPopped(n = this.nPopped - this.nPushed, inOrderBatch = false): number {
    this.live();
    const left = this.nPopped - this.nPushed;
    if (!Number.isInteger(n) || n < 0 || n > left) throw new VirtioError(Code.InvalidArgument, `cannot push ${n} chains: ${left} popped and not yet pushed`);
    if (inOrderBatch && !this.inOrder) throw new VirtioError(Code.FailedPrecondition, 'inOrderBatch needs VIRTIO_F_IN_ORDER');
    if (n === 0) return 0;
    if (this.iotlb.generation !== this.popGen) {
      for (let i = this.nPushed; i < this.nPushed + n; i++) {
        if (!this.segsAllowed(i, true, this.u32[(this.chains >> 2) + 8 * i + 6]!)) this.breakUnmapped();
      }
    }
    const r = this.ex.dev_push(this.qsb, this.chains + 32 * this.nPushed, n, inOrderBatch ? 1 : 0);
    if (r < 0) this.fail(r, 'dev_push');
    this.nPushed += n;
    return r;
  }

  /**
   * Stages one completed chain for {@link flushUsed}, for devices that complete out of pop
   * order (save chainId/chainDescs at pop time).
   */
  complete(id: number, ndesc: number, written: number): void {
    this.live();
    if (this.nPending >= this.batch) throw new VirtioError(Code.ResourceExhausted, 'completion staging is full: flushUsed() first');
    if (!Number.isInteger(id) || id < 0 || id >= this.size) throw new VirtioError(Code.InvalidArgument, `id ${id} is not a buffer of a size-${this.size} queue`);
    if (!Number.isInteger(ndesc) || ndesc < 1 || ndesc > this.size) throw new VirtioError(Code.InvalidArgument, `ndesc ${ndesc} must be 1..${this.size}`);
    if (!Number.isInteger(written) || written < 0 || written > 0xffffffff) throw new VirtioError(Code.InvalidArgument, `written ${written} must be a u32`);
    const b = (this.pushRecs >> 2) + 8 * this.nPending++;
    this.u32[b] = id;
    this.u32[b + 1] = ndesc;
    this.u32[b + 6] = written;
  }

  /** Completions staged with complete() and not yet flushed. */
  get stagedCompletions(): number {
    return this.nPending;
  }

  /** Pushes the chains staged with complete(). Returns how many. */
  flushUsed(inOrderBatch = false): number {
    this.live();
    if (this.nPending === 0) return 0;
    if (inOrderBatch && !this.inOrder) throw new VirtioError(Code.FailedPrecondition, 'inOrderBatch needs VIRTIO_F_IN_ORDER');
    const n = this.nPending;
    this.nPending = 0;
    const r = this.ex.dev_push(this.qsb, this.pushRecs, n, inOrderBatch ? 1 : 0);
    if (r < 0) this.fail(r, 'dev_push');
    return r;
  }

  /** Whether to send the driver a used-buffer notification now (event idx / flags). */
  needCall(): boolean {
    this.live();
    const c = this.ex.dev_need_call(this.qsb) === 1;
    if (c) this.countNotify();
    return c;
  }

  /** Asks the driver for kicks. Returns true if buffers are already available (pop again). */
  enableKick(): boolean {
    this.live();
    return this.ex.dev_enable_kick(this.qsb) === 1;
  }

  /** Tells the driver that kicks are not needed (the device is polling). */
  disableKick(): void {
    this.live();
    this.ex.dev_disable_kick(this.qsb);
  }

  /** Split: chains available; packed: 1 if one is. */
  available(): number {
    this.live();
    return this.ex.dev_available(this.qsb);
  }

  /** The ring position to migrate (Linux struct vdpa_vq_state). */
  getState(): VqState {
    this.live();
    if (this.layout === 'split') {
      return { version: 1, layout: 'split', size: this.size, availIndex: this.word(Q.AVAIL), usedIndex: this.word(Q.USED) };
    }
    return {
      version: 1, layout: 'packed', size: this.size,
      lastAvailIdx: this.word(Q.AVAIL), lastAvailWrap: this.word(Q.AVAIL_WRAP) as 0 | 1,
      lastUsedIdx: this.word(Q.USED), lastUsedWrap: this.word(Q.USED_WRAP) as 0 | 1,
    };
  }

  /**
   * Restores a ring position (set_vq_state), validated first: on error nothing changes.
   * Split without usedIndex sets both indices to availIndex, as vdpa_sim does. Chains popped
   * and completions staged before are forgotten (they belong to the old position).
   *
   * A broken queue stays broken: setState moves the position (getState reads it back) but
   * does not clear the error; only {@link reset} does. The spec's way out of
   * DEVICE_NEEDS_RESET is a device reset (VIRTIO 1.3 §2.1.2), and Linux restores vq state
   * (set_vq_state) only on a stopped queue, never as a repair.
   */
  setState(s: VqState): void {
    this.live();
    const v = checkVqState(s, this.layout, this.size);
    // The counters are not ring position: they survive a restore (as vdpa_sim's stats do).
    // (Kept word by word in a scratch array: a restore runs inside a migration's downtime,
    // once per queue, and allocates nothing.)
    const w0 = (this.qsb + Q.STAT_CHAINS) >> 2;
    let u32 = this.u32;
    for (let k = 0; k < 8; k++) statsScratch[k] = u32[w0 + k]!;
    const status = this.platform.i32[(this.qsb + Q.STATUS) >> 2]!;
    this.ex.dev_reset(this.qsb);
    u32 = this.u32;
    for (let k = 0; k < 8; k++) u32[w0 + k] = statsScratch[k]!;
    this.nPopped = this.nPushed = this.nPending = 0;
    this.mapRings(false);
    // Sticky: a restore does not repair a queue the peer broke (mapRings may have just broken it too).
    if (status !== 0) this.platform.i32[(this.qsb + Q.STATUS) >> 2] = status;
    if (v.layout === 'split') {
      this.setWord(Q.AVAIL, v.availIndex);
      this.setWord(Q.USED, v.usedIndex ?? v.availIndex);
    } else {
      this.setWord(Q.AVAIL, v.lastAvailIdx);
      this.setWord(Q.AVAIL_WRAP, v.lastAvailWrap);
      this.setWord(Q.USED, v.lastUsedIdx);
      this.setWord(Q.USED_WRAP, v.lastUsedWrap);
    }
  }

  /** Back to the initial position (indices 0, wrap counters 1), not broken, counters cleared. */
  reset(): void {
    this.live();
    this.ex.dev_reset(this.qsb);
    this.clearBroken();
    this.nPopped = this.nPushed = this.nPending = 0;
    this.mapRings(false);
  }

  /** Frees this queue's records and stops following map changes. */
  override destroy(): void {
    this.unsubscribe();
    super.destroy();
  }

  /** Translates the three ring areas through the map (Iotlb.translate: the wasm walk the data plane uses) and checks their alignment. */
  private mapRings(initial: boolean): void {
    // The map has not changed since the areas were found: set them again (a reset or a
    // restore clears the state block), with nothing translated or allocated.
    if (!initial && this.ringsGen === this.iotlb.generation) {
      this.setWord(Q.DESC, this.ringOffs[0]!);
      this.setWord(Q.DRIVER, this.ringOffs[1]!);
      this.setWord(Q.DEVICE, this.ringOffs[2]!);
      return;
    }
    this.ringsGen = -1;
    const packed = this.layout === 'packed';
    const sz = ringAreaSizes(this.size, packed);
    const al = ringAreaAligns(packed);
    // The device writes the packed descriptor ring and both device areas.
    const want: [keyof typeof sz, bigint, number][] = [
      ['desc', this.areas.desc, packed ? PERM_RW : PERM_R],
      ['driver', this.areas.driver, PERM_R],
      ['device', this.areas.device, PERM_RW],
    ];
    const offs: number[] = [];
    for (const [name, iova, perm] of want) {
      const off = this.iotlb.translate(iova, sz[name], perm);
      if (off < 0 || off % al[name] !== 0) {
        const why = off < 0 ? `is not mapped whole with the permission the device needs` : `translates to offset ${off}, not ${al[name]}-aligned`;
        if (initial) throw new VirtioError(Code.InvalidArgument, `${name} area at IOVA ${iova} (${sz[name]} bytes) ${why}`);
        this.setWord(Q.STATUS, -17 /* STATUS_ADDRESS_UNMAPPED */);
        return;
      }
      offs.push(off);
    }
    this.setWord(Q.DESC, offs[0]!);
    this.setWord(Q.DRIVER, offs[1]!);
    this.setWord(Q.DEVICE, offs[2]!);
    for (let k = 0; k < 3; k++) this.ringOffs[k] = offs[k]!;
    this.ringsGen = this.iotlb.generation;
  }

  /**
   * True if the segments of popped chain i on one side (readable, or writable) that the first
   * `limit` bytes touch are, under the map in force now, mapped with the permission that side
   * needs (readable: PERM_R, writable: PERM_W).
   */
  private segsAllowed(i: number, writable: boolean, limit: number): boolean {
    const u = this.u32;
    const b = (this.chains >> 2) + 8 * i;
    const nr = this.u16[(this.chains + 32 * i + 12) >> 1]!;
    const nw = this.u16[(this.chains + 32 * i + 14) >> 1]!;
    const first = u[b + 2]! + (writable ? nr : 0);
    const count = writable ? nw : nr;
    const perm = writable ? PERM_W : PERM_R;
    let left = limit;
    for (let j = 0; j < count && left > 0; j++) {
      const s = (this.segs >> 2) + 2 * (first + j);
      const len = Math.min(u[s + 1]!, left);
      if (!this.iotlb.allows(u[s]!, len, perm)) return false;
      left -= len;
    }
    return true;
  }

  /**
   * Breaks the queue with `address_unmapped` (an earlier error, if any, stays the one reported):
   * for a device that kept a chain past a map change and can no longer answer it at all (its
   * status byte is gone). The simulator core then sets DEVICE_NEEDS_RESET.
   */
  markUnmapped(): void {
    if (this.isDestroyed) return; // nothing left to break (called from error paths: never throws)
    if (!this.broken) this.setWord(Q.STATUS, -17 /* STATUS_ADDRESS_UNMAPPED */);
  }

  /** Bytes recorded as written into popped chain i (setWritten/write/copyIn or a wasm datapath). */
  written(i: number): number {
    this.live();
    this.checkIndex(i);
    return this.u32[(this.chains >> 2) + 8 * i + 6]!;
  }

  /** Breaks the queue: the device was about to touch memory that is no longer mapped to it. */
  private breakUnmapped(): never {
    this.markUnmapped();
    const st = this.state;
    throw st.state === 'broken' ? st.error : new VirtioError(Code.AddressUnmapped, 'buffer memory is no longer mapped');
  }

  private checkIndex(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.nPopped) throw new VirtioError(Code.InvalidArgument, `chain ${i} is not one of the ${this.nPopped} popped`);
  }

  /** A range serve() writes must lie whole in RAM or in private memory (never the module's static data). */
  private checkOut(base: number, bytes: number, what: string): void {
    const p = this.platform;
    const end = base + bytes;
    const inRam = base >= p.ramBase && end <= p.ramBase + p.ramSize;
    const inPriv = base >= p.privBase && end <= p.privBase + p.privSize;
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(bytes) || bytes < 0 || !(inRam || inPriv)) {
      throw new VirtioError(Code.InvalidArgument, `${what} [${base}, +${bytes}) is not inside RAM or private memory`);
    }
  }

  private checkBatchRange(n: number, base: number, stride: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.nPopped) throw new VirtioError(Code.InvalidArgument, `${n} exceeds the ${this.nPopped} popped chains`);
    if (!Number.isInteger(stride) || stride < 0 || !Number.isInteger(base) || base < 0 || base + n * stride > this.platform.u8.length) {
      throw new VirtioError(Code.InvalidArgument, `buffer [${base}, +${n}×${stride}) is outside the memory`);
    }
  }
}

function toIova(v: number | bigint, name: string): bigint {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new VirtioError(Code.InvalidArgument, `${name} ${v} must be an integer`);
  const b = BigInt(v);
  if (b < 0n || b >= 1n << 64n) throw new VirtioError(Code.InvalidArgument, `${name} ${v} must be a u64`);
  return b;
}

/** Flag bit values, re-exported for tests that inspect a state block. */
export const QUEUE_FLAGS = QF;
