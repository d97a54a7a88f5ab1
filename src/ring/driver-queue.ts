// The driver side of a virtqueue (what Linux virtio_ring.c does): add chains of out/in
// buffers with a token, decide kicks, reclaim used buffers, detach unused ones on reset.
// Same methods for split (VIRTIO 1.3 §2.7) and packed (§2.8); the wasm core does the work,
// one call per batch. Requests are staged in typed-array records (no allocation, no wasm call
// per descriptor) and submitted together.

import { VirtioError, Code } from '../errors.ts';
import { Q, REC, ringAreaAligns, ringAreaSizes } from './layout.ts';
import { QueueBase } from './queue-base.ts';
import type { Platform } from '../platform/platform.ts';
import { ringFeatures } from './queue-base.ts';

/** A buffer for a chain: IOVA and length. */
export interface Buf {
  /** IOVA (with the default map and dmaBase 0: the memory offset). */
  addr: number;
  /** Bytes. */
  len: number;
}

/** Options of {@link DriverQueue}. */
export interface DriverQueueOptions {
  /** Queue size: 1..32768, a power of two for split. */
  size: number;
  /** Negotiated features (ring bits used: RING_PACKED, EVENT_IDX, INDIRECT_DESC, IN_ORDER). @default ringFeatures() */
  features?: bigint;
  /** Descriptors per indirect table (used when INDIRECT_DESC is negotiated and a chain has > 1 buffer). @default 16 */
  indirectMax?: number;
  /** Requests that can be staged at once (and used buffers one getUsed() returns). @default max(size, 256) */
  batch?: number;
  /** Segments that can be staged at once. @default max(2 × batch, 64) */
  maxSegs?: number;
  /** IOVA of memory offset 0, for the ring areas and indirect tables this queue lays out. @default 0 */
  dmaBase?: number;
}

/** Where the device finds the rings (what set_vq_address takes), as IOVAs. */
export interface VqAddresses {
  /** Descriptor area: split descriptor table / packed descriptor ring. */
  descArea: number;
  /** Driver area: split avail ring / packed driver event suppression. */
  driverArea: number;
  /** Device area: split used ring / packed device event suppression. */
  deviceArea: number;
}

/** The driver side of one virtqueue, rings allocated in the platform's RAM. */
export class DriverQueue extends QueueBase {
  /** The ring addresses to give the device. */
  readonly addresses: VqAddresses;
  /** Requests that can be staged at once. */
  readonly batch: number;
  /** Segments that can be staged at once. */
  readonly maxSegs: number;
  /** Descriptors per indirect table (0: no tables). */
  readonly indirectMax: number;
  private readonly reqs: number;
  private readonly segs: number;
  private readonly usedOut: number;
  private readonly dstate: number;
  /** True if the last {@link addBufs} decided the device needs a kick now. */
  kickNeeded = false;
  // The fused verbs' records, allocated on first use (an idle queue does not pay for them):
  // buffer records (16 bytes each), reclaimed tokens and lengths (u32 each), `batch` of each.
  private bufRecs = 0;
  private tokArr = 0;
  private lenArr = 0;
  private tokView: Uint32Array | undefined;
  private lenView: Uint32Array | undefined;
  private staged = 0;
  private stagedSegs = 0;
  // A view through the platform, never cached: the memory's owner may grow it (detaching the buffer).
  private get u32(): Uint32Array {
    return this.platform.u32;
  }

  constructor(platform: Platform, opts: DriverQueueOptions) {
    super(platform, opts.size, opts.features ?? ringFeatures());
    // Whatever was allocated before a bad option or an unmapped ring throws is returned.
    try {
      const size = this.size;
      const packed = this.layout === 'packed';
      this.batch = opts.batch ?? Math.max(size, 256);
      this.maxSegs = opts.maxSegs ?? Math.max(2 * this.batch, 64);
      this.indirectMax = this.indirect ? (opts.indirectMax ?? 16) : 0;
      const dmaBase = opts.dmaBase ?? 0;
      if (!Number.isInteger(this.batch) || this.batch < 1 || this.batch > 65536) throw new VirtioError(Code.InvalidArgument, `batch ${this.batch} must be 1..65536`);
      if (!Number.isInteger(this.maxSegs) || this.maxSegs < 1 || this.maxSegs > 1 << 20) throw new VirtioError(Code.InvalidArgument, `maxSegs ${this.maxSegs} must be 1..2^20`);
      if (!Number.isInteger(this.indirectMax) || this.indirectMax < 0 || this.indirectMax > 65536) throw new VirtioError(Code.InvalidArgument, `indirectMax ${this.indirectMax} must be 0..65536`);
      if (!Number.isSafeInteger(dmaBase) || dmaBase < 0) throw new VirtioError(Code.InvalidArgument, `dmaBase ${dmaBase} must be a non-negative integer`);
      const sz = ringAreaSizes(size, packed);
      const al = ringAreaAligns(packed);
      const desc = this.allocRam(sz.desc, al.desc);
      const driver = this.allocRam(sz.driver, al.driver);
      const device = this.allocRam(sz.device, al.device);
      this.addresses = { descArea: desc + dmaBase, driverArea: driver + dmaBase, deviceArea: device + dmaBase };
      this.reqs = this.allocPriv(this.batch * REC.REQ, 16);
      this.segs = this.allocPriv(this.maxSegs * REC.DSEG, 16);
      this.usedOut = this.allocPriv(this.batch * REC.USED, 16);
      this.dstate = this.allocPriv(size * REC.DSTATE, 16);
      const pool = this.indirectMax > 0 ? this.allocRam(size * this.indirectMax * 16, 16) : 0;
      this.setWord(Q.DESC, desc);
      this.setWord(Q.DRIVER, driver);
      this.setWord(Q.DEVICE, device);
      this.setWord(Q.DSTATE, this.dstate);
      this.setWord(Q.INDIRECT, pool);
      this.setWord(Q.INDIRECT_MAX, this.indirectMax);
      this.setWord(Q.DMA_BASE, dmaBase % 2 ** 32);
      this.setWord(Q.DMA_BASE + 4, Math.floor(dmaBase / 2 ** 32));
      this.reset();
    } catch (e) {
      super.destroy();
      throw e;
    }
  }

  /** Free descriptors (ring slots). */
  get numFree(): number {
    return this.word(Q.NUM_FREE);
  }

  /**
   * Buffers added and not yet reclaimed. Its own state-block field (what used entries from the
   * device are validated against), not a difference of the statistics counters.
   */
  get inFlight(): number {
    return this.word(Q.INFLIGHT);
  }

  /**
   * Most buffers one chain can have on this queue: the queue size, or `indirectMax` when it is
   * larger (a chain of 2..indirectMax buffers takes one descriptor through an indirect table).
   * {@link stage} refuses longer chains: they could never be added.
   */
  get maxChainSegs(): number {
    return Math.max(this.size, this.indirectMax);
  }

  /** Requests staged and not yet submitted. */
  get stagedCount(): number {
    return this.staged;
  }

  /**
   * Stages a chain: `out` buffers the device reads, then `inp` buffers it writes (so readable
   * always precede writable, VIRTIO 1.3 §2.7.4.2). Throws InvalidArgument, staging nothing,
   * for an empty chain, a chain longer than {@link maxChainSegs} (it could never be added) or
   * a bad buffer; ResourceExhausted if staging is full.
   */
  stage(token: number, out: readonly Buf[], inp: readonly Buf[] = []): void {
    this.live();
    const n = out.length + inp.length;
    if (n === 0) throw new VirtioError(Code.InvalidArgument, 'a chain needs at least one buffer');
    // Linux virtqueue_add_split/packed: without an indirect table a chain takes one
    // descriptor per buffer, and a queue of `size` descriptors can never hold more.
    if (n > this.maxChainSegs) {
      throw new VirtioError(Code.InvalidArgument, `a chain of ${n} buffers never fits a size-${this.size} queue (${this.indirectMax > 0 ? `indirect tables hold ${this.indirectMax}` : 'no indirect tables'})`);
    }
    if (n > this.maxSegs) throw new VirtioError(Code.InvalidArgument, `a chain of ${n} buffers is more than the staging area holds (maxSegs ${this.maxSegs})`);
    if (this.staged >= this.batch || this.stagedSegs + n > this.maxSegs) throw new VirtioError(Code.ResourceExhausted, 'staging area is full: submit() first');
    this.checkToken(token);
    let s = this.stagedSegs;
    for (const b of out) this.putSeg(s++, b.addr, b.len, 0);
    for (const b of inp) this.putSeg(s++, b.addr, b.len, 1);
    this.putReq(token, n);
  }

  /** Stages a one-buffer chain without arrays (the hot path). */
  stageOne(token: number, addr: number, len: number, writable = false): void {
    this.live();
    if (this.staged >= this.batch || this.stagedSegs >= this.maxSegs) throw new VirtioError(Code.ResourceExhausted, 'staging area is full: submit() first');
    this.checkToken(token);
    this.putSeg(this.stagedSegs, addr, len, writable ? 1 : 0);
    this.putReq(token, 1);
  }

  /**
   * Adds the staged chains to the ring and publishes them with one index (split) or flags
   * (packed) store. Returns how many were added, and exactly those are published (the device
   * sees them, {@link inFlight} counts them): fewer than staged when the ring is full (the
   * rest stay staged, to be submitted when room is freed). With `keep`, a fully added batch
   * stays staged, to be submitted again (buffers recycled as-is). Throws the peer's error if
   * the queue is broken.
   */
  submit(keep = false): number {
    this.live();
    if (this.staged === 0) return 0;
    const r = this.ex.drv_add(this.qsb, this.reqs, this.staged, this.segs);
    if (r < 0) this.fail(r, 'drv_add');
    if (r === this.staged) {
      if (!keep) this.staged = this.stagedSegs = 0;
    } else if (r > 0) {
      this.dropStaged(r);
    }
    return r;
  }

  /**
   * Sets buffer record i (0..batch-1) for {@link addBufs}: a one-buffer chain of `len` bytes at
   * IOVA `addr`, returned with `token`. Records stay set until overwritten, so a ring that
   * recycles the same buffers sets them once.
   */
  setBuf(i: number, token: number, addr: number, len: number): void {
    this.live();
    if (this.bufRecs === 0) this.allocFused();
    if (!Number.isInteger(i) || i < 0 || i >= this.batch) throw new VirtioError(Code.InvalidArgument, `buffer record ${i} must be 0..${this.batch - 1}`);
    this.checkToken(token);
    if (!Number.isSafeInteger(addr) || addr < 0) throw new VirtioError(Code.InvalidArgument, `buffer address ${addr} must be a non-negative integer`);
    if (!Number.isInteger(len) || len < 0 || len > 0xffffffff) throw new VirtioError(Code.InvalidArgument, `buffer length ${len} must be a u32`);
    const w = (this.bufRecs >> 2) + 4 * i;
    const u = this.u32;
    u[w] = addr >>> 0;
    u[w + 1] = Math.floor(addr / 2 ** 32);
    u[w + 2] = len;
    u[w + 3] = token;
  }

  /**
   * Adds buffer records [from, from + n) (see {@link setBuf}) as one-buffer chains, device-
   * readable (or device-writable with `writable`), in ONE wasm call: descriptors, ring entries,
   * one publish, and the kick decision of kickPrepare(), read in {@link kickNeeded}. Returns
   * how many were added: fewer than n when the ring is full (exactly those are published).
   * Throws the peer's error if the queue is broken. Staged requests (stage/submit) are separate.
   */
  addBufs(n: number, writable = false, from = 0): number {
    this.live();
    // Cheap integer checks: this wrapper runs once per batch, at batch 1 once per chain.
    if ((n >>> 0) !== n || (from >>> 0) !== from || from + n > this.batch) {
      throw new VirtioError(Code.InvalidArgument, `buffer records [${from}, +${n}) are not within 0..${this.batch}`);
    }
    if (this.bufRecs === 0) this.allocFused(); // records never set: zero-length buffers, token 0
    const r = this.ex.drv_add_bufs(this.qsb, this.bufRecs + 16 * from, n, writable ? 3 : 2);
    if (r < 0) {
      this.kickNeeded = false;
      this.fail(r, 'drv_add_bufs');
    }
    // The kick decided in wasm is counted there (stats.notifies).
    this.kickNeeded = (r & 1) !== 0;
    return r >>> 1;
  }

  /**
   * Reclaims up to `max` used buffers in one wasm call into {@link usedTokens} and
   * {@link usedLens} (no records to read back one by one). Same checks and errors as getUsed().
   */
  reclaimUsed(max = this.batch): number {
    this.live();
    if ((max >>> 0) !== max) throw new VirtioError(Code.InvalidArgument, `max ${max} must be a non-negative integer`);
    if (this.tokArr === 0) this.allocFused();
    const r = this.ex.drv_reclaim(this.qsb, this.tokArr, this.lenArr, max < this.batch ? max : this.batch);
    if (r < 0) this.fail(r, 'drv_reclaim');
    return r;
  }

  /** Tokens of the last {@link reclaimUsed} (a view over private memory; `batch` entries). */
  get usedTokens(): Uint32Array {
    if (this.tokView === undefined) this.allocFused();
    return this.tokView!;
  }

  /** Lengths the device wrote into the buffers of the last {@link reclaimUsed} (`batch` entries). */
  get usedLens(): Uint32Array {
    if (this.lenView === undefined) this.allocFused();
    return this.lenView!;
  }

  private allocFused(): void {
    this.live();
    const b = this.batch;
    this.bufRecs = this.allocPriv(b * 16, 16);
    this.platform.u8.fill(0, this.bufRecs, this.bufRecs + b * 16);
    this.tokArr = this.allocPriv(b * 4, 16);
    this.lenArr = this.allocPriv(b * 4, 16);
    this.tokView = this.u32.subarray(this.tokArr >> 2, (this.tokArr >> 2) + b);
    this.lenView = this.u32.subarray(this.lenArr >> 2, (this.lenArr >> 2) + b);
  }

  /** Stages and submits one chain. Returns false if the ring had no room (nothing staged remains). */
  add(token: number, out: readonly Buf[], inp: readonly Buf[] = []): boolean {
    this.live();
    if (this.staged !== 0) throw new VirtioError(Code.FailedPrecondition, 'add() with requests staged: submit() them first');
    this.stage(token, out, inp);
    const n = this.submit();
    if (n === 0) this.staged = this.stagedSegs = 0;
    return n === 1;
  }

  /** True if a chain of `nsegs` buffers still fits in the staging area. */
  canStage(nsegs: number): boolean {
    this.live();
    return this.staged < this.batch && this.stagedSegs + nsegs <= this.maxSegs;
  }

  /** Drops every staged request. */
  clearStaged(): void {
    this.live();
    this.staged = this.stagedSegs = 0;
  }

  /** Whether the device wants a kick for what was added since the last call (kick_prepare). */
  kickPrepare(): boolean {
    this.live();
    const k = this.ex.drv_kick_prepare(this.qsb) === 1;
    if (k) this.countNotify();
    return k;
  }

  /**
   * Reclaims up to `max` used buffers. Returns the count; read each with usedToken(i) and
   * usedLen(i) until the next call. Throws the peer's error if the device broke the ring.
   */
  getUsed(max = this.batch): number {
    this.live();
    const m = Math.min(max, this.batch);
    const r = this.ex.drv_get_used(this.qsb, this.usedOut, m);
    if (r < 0) this.fail(r, 'drv_get_used');
    return r;
  }

  /** Token of the i-th buffer of the last getUsed(). */
  usedToken(i: number): number {
    this.live();
    return this.u32[(this.usedOut >> 2) + 2 * i]!;
  }

  /** Bytes the device wrote into the i-th buffer of the last getUsed(). */
  usedLen(i: number): number {
    this.live();
    return this.u32[(this.usedOut >> 2) + 2 * i + 1]!;
  }

  /** Reclaims every used buffer as {token, len} objects (allocates; for convenience paths). */
  reclaim(): {
    /** The buffer's token. */
    token: number;
    /** Bytes the device wrote. */
    len: number;
  }[] {
    const out: { token: number; len: number }[] = [];
    for (;;) {
      const n = this.getUsed();
      for (let i = 0; i < n; i++) out.push({ token: this.usedToken(i), len: this.usedLen(i) });
      if (n < this.batch) return out;
    }
  }

  /**
   * Re-enables used-buffer notifications. As Linux virtqueue_enable_cb: returns false if used
   * buffers are already pending (reclaim them: no notification will come for them), else true.
   */
  enableCb(): boolean {
    this.live();
    return this.ex.drv_enable_cb(this.qsb) === 0;
  }

  /** Suppresses used-buffer notifications. */
  disableCb(): void {
    this.live();
    this.ex.drv_disable_cb(this.qsb);
  }

  /** Split: used buffers the device claims are pending; packed: 1 if any. */
  usedPending(): number {
    this.live();
    return this.ex.drv_used_pending(this.qsb);
  }

  /**
   * Takes back every buffer still in flight (virtqueue_detach_unused_buf after a device reset)
   * and re-initializes the rings. Returns their tokens.
   */
  detachUnused(): number[] {
    this.live();
    const tokens: number[] = [];
    const out = this.usedOut;
    for (;;) {
      const n = this.ex.drv_detach_unused(this.qsb, this.dstate, out, this.batch * 2);
      for (let i = 0; i < n; i++) tokens.push(this.u32[(out >> 2) + i]!);
      if (n < this.batch * 2) break;
    }
    this.reset();
    return tokens;
  }

  /** Re-initializes the rings and every counter; buffers in flight are forgotten. */
  reset(): void {
    this.live();
    this.ex.drv_init(this.qsb);
    this.staged = this.stagedSegs = 0;
    this.clearBroken();
  }

  private checkToken(token: number): void {
    if (!Number.isInteger(token) || token < 0 || token > 0xffffffff) throw new VirtioError(Code.InvalidArgument, `token ${token} must be a u32`);
  }

  private putSeg(i: number, addr: number, len: number, flags: number): void {
    if (!Number.isSafeInteger(addr) || addr < 0) throw new VirtioError(Code.InvalidArgument, `buffer address ${addr} must be a non-negative integer`);
    if (!Number.isInteger(len) || len < 0 || len > 0xffffffff) throw new VirtioError(Code.InvalidArgument, `buffer length ${len} must be a u32`);
    const w = (this.segs >> 2) + 4 * i;
    const u = this.u32;
    u[w] = addr >>> 0;
    u[w + 1] = Math.floor(addr / 2 ** 32);
    u[w + 2] = len;
    u[w + 3] = flags;
  }

  private putReq(token: number, nsegs: number): void {
    const w = (this.reqs >> 2) + 4 * this.staged;
    const u = this.u32;
    u[w] = token;
    u[w + 1] = this.stagedSegs;
    u[w + 2] = nsegs;
    this.staged++;
    this.stagedSegs += nsegs;
  }

  /** Removes the first k staged requests, compacting the rest. */
  private dropStaged(k: number): void {
    const u = this.u32;
    const r0 = this.reqs >> 2;
    const firstSeg = u[r0 + 4 * k + 1]!;
    const s0 = this.segs >> 2;
    u.copyWithin(s0, s0 + 4 * firstSeg, s0 + 4 * this.stagedSegs);
    for (let i = k; i < this.staged; i++) {
      const from = r0 + 4 * i;
      const to = r0 + 4 * (i - k);
      u[to] = u[from]!;
      u[to + 1] = u[from + 1]! - firstSeg;
      u[to + 2] = u[from + 2]!;
    }
    this.staged -= k;
    this.stagedSegs -= firstSeg;
  }
}
