// A virtio-blk driver (VIRTIO 1.3 §5.2, in the role of Linux drivers/block/virtio_blk.c) on a
// device bound through virtio_vdpa: Promise-based read/write/flush/discard/writeZeroes/getId
// with many requests in flight. Each request is a chain: 16-byte header (device-readable),
// data, 1 status byte (device-writable), staged in one block of platform RAM.
//
// Backpressure: a request waits (in submission order) for ring room and for staging RAM while
// earlier requests of this driver hold them; one that can never fit (more descriptors than the
// queue holds without indirect descriptors, more bytes than the whole RAM arena) is rejected
// at once. Discard / write-zeroes are split by the device's limits as Linux does; reads and
// writes are split into requests of at most size_max × seg_max bytes (and what one chain of the
// queue can carry), each data segment at most size_max bytes, all in flight together.

import { VirtioError, Code } from '../errors.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import type { DriverQueue } from '../ring/driver-queue.ts';
import type { VirtioBinding, VirtioClassDriver } from './virtio-vdpa.ts';
import {
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_SUSPEND,
  VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_WRITE_ZEROES, featureBit, hasFeature,
} from '../virtio/constants.ts';
import {
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_ID_BYTES, SECTOR_SIZE,
  VIRTIO_BLK_CFG, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from '../virtio/blk.ts';

/** Features this driver understands. */
export const VIRTIO_BLK_DRIVER_FEATURES: bigint = [
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_F_SUSPEND,
].reduce((f, b) => f | featureBit(b), 0n);

/** Options of {@link VirtioBlkDriver}. */
export interface VirtioBlkDriverOptions {
  /** Features to accept (masked with what the device offers). @default VIRTIO_BLK_DRIVER_FEATURES */
  features?: bigint;
}

/**
 * The device's DISCARD / WRITE_ZEROES limits (struct virtio_blk_config), as the driver uses
 * them: a 0 in config space means "no limit" for sectors (as Linux virtio_blk_probe does:
 * UINT_MAX) and 1 for segments. For max_discard_seg == 0 (out of spec) Linux instead uses
 * its data segment count (sg_elems, from seg_max) capped at MAX_DISCARD_SEGMENTS (256); one
 * range per request is our conservative choice, valid whatever the device meant.
 */
export interface BlkDiscardLimits {
  /** Most sectors in one discard range. */
  maxDiscardSectors: number;
  /** Most ranges in one DISCARD request. */
  maxDiscardSeg: number;
  /** Discard ranges are split at multiples of this many sectors. */
  discardSectorAlignment: number;
  /** Most sectors in one write-zeroes range. */
  maxWriteZeroesSectors: number;
  /** Most ranges in one WRITE_ZEROES request. */
  maxWriteZeroesSeg: number;
  /** Whether the device may deallocate written-zero sectors (write_zeroes_may_unmap). */
  writeZeroesMayUnmap: boolean;
}

/**
 * How the driver cuts reads and writes (from size_max / seg_max when negotiated, and the queue).
 */
export interface BlkTransferLimits {
  /** Most bytes of one data segment (size_max with VIRTIO_BLK_F_SIZE_MAX; else Infinity). */
  segmentSize: number;
  /** Most data segments of one request: seg_max (with VIRTIO_BLK_F_SEG_MAX) capped by what one chain of the queue carries. */
  segments: number;
  /** Most data bytes of one request, a multiple of 512 (Infinity without size_max). */
  maxTransfer: number;
}

const OP_NAMES: Record<number, string> = {
  [VIRTIO_BLK_T_IN]: 'read', [VIRTIO_BLK_T_OUT]: 'write', [VIRTIO_BLK_T_FLUSH]: 'flush',
  [VIRTIO_BLK_T_GET_ID]: 'get-id', [VIRTIO_BLK_T_DISCARD]: 'discard', [VIRTIO_BLK_T_WRITE_ZEROES]: 'write-zeroes',
};

interface Pending {
  type: number;
  /** What the request is, for error messages ("write of 8 sectors at 100"). */
  what: string;
  /** Bytes of its staging block: header, data, status. */
  size: number;
  /** Memory offset of the staging block; -1 while waiting for RAM. */
  mem: number;
  /** Data bytes (out or in). */
  len: number;
  /** Device-readable data; kept (copied) only while waiting for RAM. */
  out: Uint8Array | null;
  outLen: number;
  sector: number;
  resolve: (v: Uint8Array | null) => void;
  reject: (e: VirtioError) => void;
}

/** The virtio-blk driver of one device. Event: `error` (detail: VirtioError; call reset()). */
export class VirtioBlkDriver extends EventTarget implements VirtioClassDriver {
  readonly driverFeatures: bigint;
  private readonly dev: VdpaDevice;
  private readonly binding: VirtioBinding;
  private q: DriverQueue | null = null;
  private readonly inflight = new Map<number, Pending>();
  private readonly waiting: { token: number; p: Pending }[] = [];
  private nextToken = 1;
  private scheduled = false;
  private failed: VirtioError | null = null;
  private limits: BlkDiscardLimits | null = null;
  private xfer: BlkTransferLimits | null = null;

  constructor(dev: VdpaDevice, binding: VirtioBinding, opts: VirtioBlkDriverOptions = {}) {
    super();
    this.dev = dev;
    this.binding = binding;
    this.driverFeatures = opts.features ?? VIRTIO_BLK_DRIVER_FEATURES;
  }

  /** Suspends the device (SUSPEND status bit, VIRTIO 1.4 §3.4): resolves once requests in flight finished and SUSPEND reads 1. */
  suspend(timeoutMs?: number): Promise<void> {
    return this.binding.suspend(timeoutMs);
  }

  /** Resumes a device suspended by {@link suspend}. */
  resume(timeoutMs?: number): Promise<void> {
    return this.binding.resume(timeoutMs);
  }

  /** One request queue. */
  queueCount(): number {
    return 1;
  }

  /** Disk size in 512-byte sectors (virtio_blk_config.capacity). */
  get capacity(): number {
    const v = new DataView(this.dev.getConfig(VIRTIO_BLK_CFG.CAPACITY, 8).buffer);
    return v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32;
  }

  /** Logical block size: blk_size with VIRTIO_BLK_F_BLK_SIZE, else 512. */
  get blockSize(): number {
    if (!hasFeature(this.binding.features, VIRTIO_BLK_F_BLK_SIZE)) return SECTOR_SIZE;
    return new DataView(this.dev.getConfig(VIRTIO_BLK_CFG.BLK_SIZE, 4).buffer).getUint32(0, true);
  }

  /** True if the device is read-only (VIRTIO_BLK_F_RO). */
  get readOnly(): boolean {
    return hasFeature(this.binding.features, VIRTIO_BLK_F_RO);
  }

  /** The DISCARD / WRITE_ZEROES limits read from config space when the driver started. */
  get discardLimits(): Readonly<BlkDiscardLimits> {
    return this.limits ?? this.readLimits();
  }

  /**
   * How read()/write() are cut into requests (read from config space when the driver started):
   * each request carries at most `maxTransfer` data bytes in segments of at most `segmentSize`.
   */
  get transferLimits(): Readonly<BlkTransferLimits> {
    return this.xfer ?? this.readXfer(this.q);
  }

  /** Most data bytes one read or write request carries (larger calls are split). */
  get maxTransfer(): number {
    return this.transferLimits.maxTransfer;
  }

  /** Requests submitted and not yet answered. */
  get inFlight(): number {
    return this.inflight.size + this.waiting.length;
  }

  start(queues: DriverQueue[]): void {
    const q = queues[0];
    if (!q) throw new VirtioError(Code.Internal, 'virtio-blk needs a request queue');
    this.q = q;
    this.failed = null;
    this.limits = this.readLimits();
    this.xfer = this.readXfer(q);
    this.dev.setVqCb(0, () => this.schedule());
  }

  stop(): void {
    const err = new VirtioError(Code.Cancelled, `${this.dev.name} was reset with the request in flight`);
    const all = [...this.inflight.values(), ...this.waiting.splice(0).map((w) => w.p)];
    this.inflight.clear();
    this.q = null;
    for (const p of all) this.finish(p, err);
  }

  /**
   * Reads `buffer.length` bytes (a multiple of 512) from `sector` into `buffer`: one request per
   * {@link maxTransfer} bytes, all in flight together; `buffer` is filled only if all succeed.
   */
  async read(sector: number, buffer: Uint8Array): Promise<void> {
    this.checkIo(sector, buffer.length);
    const parts = await this.split(buffer.length, (off, len) => {
      const s = sector + off / SECTOR_SIZE;
      return this.submit(VIRTIO_BLK_T_IN, s, null, len, `read of ${len / SECTOR_SIZE} sectors at ${s}`);
    });
    let off = 0;
    for (const d of parts) {
      buffer.set(d!, off);
      off += d!.length;
    }
  }

  /** Writes `data` (a multiple of 512 bytes) at `sector`, split like {@link read}. */
  async write(sector: number, data: Uint8Array): Promise<void> {
    this.checkIo(sector, data.length);
    this.checkWritable('write');
    await this.split(data.length, (off, len) => {
      const s = sector + off / SECTOR_SIZE;
      return this.submit(VIRTIO_BLK_T_OUT, s, data.subarray(off, off + len), 0, `write of ${len / SECTOR_SIZE} sectors at ${s}`);
    });
  }

  /**
   * Submits [0, total) as requests of at most maxTransfer bytes, all at once; resolves with
   * their results in order when all did, or rejects with the first error once all settled.
   */
  private async split(total: number, one: (off: number, len: number) => Promise<Uint8Array | null>): Promise<(Uint8Array | null)[]> {
    const max = this.maxTransfer;
    const reqs: Promise<Uint8Array | null>[] = [];
    let first: unknown = null;
    let failed = false;
    for (let off = 0; off < total; off += max) {
      reqs.push(one(off, Math.min(max, total - off)).catch((e: unknown) => {
        if (!failed) {
          failed = true;
          first = e;
        }
        return null;
      }));
    }
    const out = await Promise.all(reqs);
    if (failed) throw first;
    return out;
  }

  /** Flushes the device's write cache (VIRTIO_BLK_T_FLUSH). */
  async flush(): Promise<void> {
    if (!hasFeature(this.binding.features, VIRTIO_BLK_F_FLUSH)) return; // no cache to flush (§5.2.6.2)
    await this.submit(VIRTIO_BLK_T_FLUSH, 0, null, 0, 'flush');
  }

  /**
   * Discards `count` sectors at `sector` (VIRTIO_BLK_T_DISCARD; needs VIRTIO_BLK_F_DISCARD).
   * Split into as many requests as the device's limits need (see {@link discardLimits}).
   */
  async discard(sector: number, count: number): Promise<void> {
    await this.rangeCommand(VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_F_DISCARD, sector, count, false);
  }

  /**
   * Writes zeroes over `count` sectors (VIRTIO_BLK_T_WRITE_ZEROES; `unmap` lets the device
   * deallocate). Split by the device's limits like {@link discard}.
   */
  async writeZeroes(sector: number, count: number, unmap = false): Promise<void> {
    await this.rangeCommand(VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_F_WRITE_ZEROES, sector, count, unmap);
  }

  private async rangeCommand(type: number, bit: number, sector: number, count: number, unmap: boolean): Promise<void> {
    const op = OP_NAMES[type]!;
    if (!hasFeature(this.binding.features, bit)) throw new VirtioError(Code.Unsupported, `${this.dev.name}: ${op} is not supported (feature bit ${bit} was not negotiated)`);
    this.checkWritable(op);
    if (!Number.isSafeInteger(count) || count < 1) throw new VirtioError(Code.InvalidArgument, `count ${count} must be a positive integer`);
    this.checkIo(sector, count * SECTOR_SIZE);
    const lim = this.discardLimits;
    const wz = type === VIRTIO_BLK_T_WRITE_ZEROES;
    const maxSectors = wz ? lim.maxWriteZeroesSectors : lim.maxDiscardSectors;
    const maxSeg = wz ? lim.maxWriteZeroesSeg : lim.maxDiscardSeg;
    // Ranges of at most maxSectors, cut at multiples of the alignment (discard_sector_alignment
    // applies to discard; Linux sets it as the discard granularity).
    const align = wz ? 1 : lim.discardSectorAlignment;
    const step = maxSectors >= align ? maxSectors - (maxSectors % align) : maxSectors;
    const ranges: [number, number][] = [];
    for (let s = sector; s < sector + count;) {
      const end = Math.min(sector + count, (Math.floor(s / step) + 1) * step);
      ranges.push([s, end - s]);
      s = end;
    }
    const reqs: Promise<unknown>[] = [];
    for (let i = 0; i < ranges.length; i += maxSeg) {
      const group = ranges.slice(i, i + maxSeg);
      // struct virtio_blk_discard_write_zeroes { le64 sector; le32 num_sectors; le32 flags; }
      const seg = new Uint8Array(16 * group.length);
      const v = new DataView(seg.buffer);
      group.forEach(([s, n], k) => {
        v.setBigUint64(16 * k, BigInt(s), true);
        v.setUint32(16 * k + 8, n, true);
        v.setUint32(16 * k + 12, unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0, true);
      });
      const first = group[0]![0];
      const last = group[group.length - 1]!;
      reqs.push(this.submit(type, 0, seg, 0, `${op} of ${last[0] + last[1] - first} sectors at ${first}`));
    }
    // Promise.all listens to every request, so a second failure is not left unhandled.
    await Promise.all(reqs);
  }

  /** The device id string (VIRTIO_BLK_T_GET_ID, up to 20 bytes). */
  async getId(): Promise<string> {
    const b = (await this.submit(VIRTIO_BLK_T_GET_ID, 0, null, VIRTIO_BLK_ID_BYTES, 'get-id'))!;
    const end = b.indexOf(0);
    return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
  }

  /** After an `error` event: reset the device and initialize it again. */
  reset(): void {
    this.binding.reinit();
  }

  onConfigChange(): void {}

  onNeedsReset(): void {
    this.fail(new VirtioError(Code.FailedPrecondition, `${this.dev.name} needs a reset (DEVICE_NEEDS_RESET)`));
  }

  /** Fails every request and refuses new ones until reset(); raises `error`. */
  private fail(err: VirtioError): void {
    this.failed = err;
    const all = [...this.inflight.values(), ...this.waiting.splice(0).map((w) => w.p)];
    this.inflight.clear();
    for (const p of all) this.finish(p, err);
    this.q = null;
    this.dispatchEvent(new CustomEvent('error', { detail: err }));
  }

  private readLimits(): BlkDiscardLimits {
    const v = new DataView(this.dev.getConfig(0, VIRTIO_BLK_CFG.SIZE).buffer);
    const f = this.binding.features;
    const u32 = (o: number) => v.getUint32(o, true);
    const d = hasFeature(f, VIRTIO_BLK_F_DISCARD);
    const w = hasFeature(f, VIRTIO_BLK_F_WRITE_ZEROES);
    // The fields are valid only with their feature; 0 means no limit (sectors, as in Linux) or
    // 1 (segments: Linux takes sg_elems capped at 256 for max_discard_seg 0, see above).
    return {
      maxDiscardSectors: (d && u32(VIRTIO_BLK_CFG.MAX_DISCARD_SECTORS)) || 0xffffffff,
      maxDiscardSeg: (d && u32(VIRTIO_BLK_CFG.MAX_DISCARD_SEG)) || 1,
      discardSectorAlignment: (d && u32(VIRTIO_BLK_CFG.DISCARD_SECTOR_ALIGNMENT)) || 1,
      maxWriteZeroesSectors: (w && u32(VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SECTORS)) || 0xffffffff,
      maxWriteZeroesSeg: (w && u32(VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SEG)) || 1,
      writeZeroesMayUnmap: w && v.getUint8(VIRTIO_BLK_CFG.WRITE_ZEROES_MAY_UNMAP) !== 0,
    };
  }

  /**
   * size_max / seg_max as this driver uses them: valid only with their feature (VIRTIO 1.3
   * §5.2.4); a size_max of 0 means no limit and one below 512 is taken as 512 (Linux refuses
   * a size_max below PAGE_SIZE); seg_max 0 is taken as 1. Segments are further capped by what
   * one chain of queue `q` carries minus header and status: an indirect table's worth
   * (q.indirectMax) when the queue has indirect tables, so a request takes one ring slot and
   * many are in flight together, else the ring (q.size); and by q.maxSegs.
   */
  private readXfer(q: DriverQueue | null): BlkTransferLimits {
    const f = this.binding.features;
    const v = new DataView(this.dev.getConfig(0, VIRTIO_BLK_CFG.SIZE).buffer);
    const sm = hasFeature(f, VIRTIO_BLK_F_SIZE_MAX) ? v.getUint32(VIRTIO_BLK_CFG.SIZE_MAX, true) : 0;
    const segmentSize = sm === 0 ? Infinity : Math.max(sm, SECTOR_SIZE);
    let segments = hasFeature(f, VIRTIO_BLK_F_SEG_MAX) ? Math.max(1, v.getUint32(VIRTIO_BLK_CFG.SEG_MAX, true)) : Infinity;
    if (q) segments = Math.min(segments, (q.indirectMax >= 3 ? q.indirectMax : q.size) - 2, q.maxSegs - 2);
    segments = Math.max(1, segments);
    const raw = segmentSize * (segmentSize === Infinity ? 1 : segments);
    const maxTransfer = raw === Infinity ? Infinity : Math.max(SECTOR_SIZE, raw - (raw % SECTOR_SIZE));
    return { segmentSize, segments, maxTransfer };
  }

  private checkWritable(op: string): void {
    if (this.readOnly) throw new VirtioError(Code.FailedPrecondition, `${this.dev.name}: ${op} refused: read-only device (VIRTIO_BLK_F_RO)`);
  }

  private checkIo(sector: number, len: number): void {
    if (!Number.isSafeInteger(sector) || sector < 0) throw new VirtioError(Code.InvalidArgument, `sector ${sector} must be a non-negative integer`);
    if (!Number.isSafeInteger(len) || len <= 0 || len % SECTOR_SIZE !== 0) throw new VirtioError(Code.InvalidArgument, `length ${len} must be a positive multiple of ${SECTOR_SIZE}`);
    if (sector + len / SECTOR_SIZE > this.capacity) throw new VirtioError(Code.InvalidArgument, `[${sector}, +${len / SECTOR_SIZE}) is beyond the ${this.capacity}-sector disk`);
  }

  private submit(type: number, sector: number, out: Uint8Array | null, inLen: number, what: string): Promise<Uint8Array | null> {
    if (this.failed) return Promise.reject(this.failed);
    const q = this.q;
    if (!q) return Promise.reject(new VirtioError(Code.FailedPrecondition, 'the driver is not started'));
    const p = this.binding.platform;
    const outLen = out?.length ?? 0;
    // Requests that can never be carried are refused for good, before anything is staged.
    const seg = this.transferLimits.segmentSize;
    const ndesc = 2 + Math.ceil((outLen + inLen) / seg);
    if (ndesc > q.size && ndesc > q.indirectMax) {
      return Promise.reject(new VirtioError(Code.Unsupported, `${this.dev.name}: ${what} needs ${ndesc} descriptors; a ${q.size}-entry queue without indirect descriptors can never hold it`));
    }
    if (ndesc > q.maxSegs) return Promise.reject(new VirtioError(Code.Unsupported, `${this.dev.name}: ${what} needs ${ndesc} descriptors; the queue stages at most ${q.maxSegs}`));
    // One block holds header, data and status: [hdr 16][out data | in data][status 1]
    const size = 16 + outLen + inLen + 1;
    if (size > p.ram.size) {
      return Promise.reject(new VirtioError(Code.InvalidArgument, `${this.dev.name}: ${what} needs ${size} bytes of staging RAM; the platform has ${p.ram.size}`));
    }
    const pend: Pending = { type, what, size, mem: -1, len: outLen + inLen, out, outLen, sector, resolve: () => {}, reject: () => {} };
    // Take RAM now unless earlier requests already wait for it (they keep their turn).
    if (!this.waiting.some((w) => w.p.mem < 0)) pend.mem = this.tryAlloc(pend);
    if (pend.mem < 0) {
      if (this.inflight.size === 0 && this.waiting.length === 0) {
        // Nothing of ours will free RAM: waiting could last forever.
        return Promise.reject(new VirtioError(Code.ResourceExhausted, `${this.dev.name}: ${what}: no ${size} bytes of staging RAM free and no request in flight to free any`));
      }
      pend.out = out ? out.slice() : null; // the caller may reuse its buffer meanwhile
    }
    return new Promise((resolve, reject) => {
      pend.resolve = resolve;
      pend.reject = reject;
      const token = this.nextToken;
      this.nextToken = (this.nextToken % 0x7fffffff) + 1;
      this.waiting.push({ token, p: pend });
      this.pump();
    });
  }

  /** Allocates and fills a request's staging block. Returns the offset, or -1 if RAM is short. */
  private tryAlloc(pend: Pending): number {
    const p = this.binding.platform;
    let mem: number;
    try {
      mem = p.ram.alloc(pend.size, 16);
    } catch (e) {
      if (e instanceof VirtioError && e.code === Code.ResourceExhausted) return -1;
      throw e;
    }
    p.view.setUint32(mem, pend.type, true);
    p.view.setUint32(mem + 4, 0, true);
    p.view.setBigUint64(mem + 8, BigInt(pend.sector), true);
    if (pend.out) p.u8.set(pend.out, mem + 16);
    p.u8[mem + 16 + pend.len] = 0xff;
    pend.out = null;
    return mem;
  }

  /**
   * Moves waiting requests into the ring as RAM and room allow, then kicks once. Never throws.
   *
   * A request waits for staging RAM only while requests of this driver are in flight: their
   * completions free RAM and run pump() again. Once none is, nothing of ours will wake the head
   * waiter, so it is rejected with ResourceExhausted (the rule submit() applies) and the next
   * waiters get their turn. RAM freed by someone else's allocation (another driver, the
   * application) does not wake waiters: such a request fails fast rather than hang.
   */
  private pump(): void {
    for (;;) {
      if (!this.pumpOnce()) return;
      const head = this.waiting[0];
      if (!head || head.p.mem >= 0 || this.inflight.size > 0 || this.failed || !this.q) return;
      this.waiting.shift();
      this.finish(head.p, new VirtioError(Code.ResourceExhausted, `${this.dev.name}: ${head.p.what}: no ${head.p.size} bytes of staging RAM free and no request in flight to free any`));
    }
  }

  /** One pass of {@link pump}. Returns false if the driver failed or has nothing to do. */
  private pumpOnce(): boolean {
    const q = this.q;
    if (!q || this.waiting.length === 0) return false;
    let added = 0;
    try {
      try {
        for (const w of this.waiting) {
          const pend = w.p;
          if (pend.mem < 0) pend.mem = this.tryAlloc(pend);
          if (pend.mem < 0) break; // wait for RAM that requests in flight will free
          const { mem, outLen, len } = pend;
          // Data in segments of at most size_max bytes (one when size_max was not offered).
          const seg = this.transferLimits.segmentSize;
          const segs = [{ addr: mem, len: 16 }];
          for (let o = 0; o < outLen; o += seg) segs.push({ addr: mem + 16 + o, len: Math.min(seg, outLen - o) });
          const inp = [];
          for (let o = outLen; o < len; o += seg) inp.push({ addr: mem + 16 + o, len: Math.min(seg, len - o) });
          inp.push({ addr: mem + 16 + len, len: 1 });
          if (!q.canStage(segs.length + inp.length)) break;
          q.stage(w.token, segs, inp);
        }
        added = q.submit();
      } finally {
        // Whatever did not fit stays waiting, never half-staged.
        q.clearStaged();
      }
    } catch (e) {
      this.fail(e instanceof VirtioError ? e : new VirtioError(Code.Internal, `${this.dev.name}: submitting requests failed`, { cause: e }));
      return false;
    }
    for (const w of this.waiting.splice(0, added)) this.inflight.set(w.token, w.p);
    if (added > 0 && q.kickPrepare()) this.dev.kickVq(0);
    return true;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      try {
        this.complete();
      } catch (e) {
        // A device that broke the used ring: nothing may throw from a microtask.
        this.fail(e instanceof VirtioError ? e : new VirtioError(Code.Internal, `${this.dev.name}: reclaiming used buffers failed`, { cause: e }));
      }
    });
  }

  private complete(): void {
    const q = this.q;
    if (!q || this.failed) return;
    const u8 = this.binding.platform.u8;
    for (;;) {
      const n = q.getUsed();
      for (let i = 0; i < n; i++) {
        const t = q.usedToken(i);
        const p = this.inflight.get(t);
        if (!p) continue;
        this.inflight.delete(t);
        const st = u8[p.mem + 16 + p.len]!;
        if (st === VIRTIO_BLK_S_OK) {
          const data = p.len - p.outLen > 0 ? u8.slice(p.mem + 16 + p.outLen, p.mem + 16 + p.len) : null;
          this.finish(p, null, data);
        } else if (st === VIRTIO_BLK_S_UNSUPP) {
          this.finish(p, new VirtioError(Code.Unsupported, `${this.dev.name}: ${p.what} failed: the device does not support it (VIRTIO_BLK_S_UNSUPP)`));
        } else {
          const why = st === 0xff ? 'the device did not write a status' : `the device answered ${st === 1 ? 'VIRTIO_BLK_S_IOERR' : `status ${st}`}`;
          this.finish(p, new VirtioError(Code.IoError, `${this.dev.name}: ${p.what} failed: ${why}`));
        }
      }
      // Drained: re-enable the interrupt; used buffers that raced in mean one more round.
      if (n === 0 && q.enableCb()) break;
    }
    this.pump();
  }

  private finish(p: Pending, err: VirtioError | null, data: Uint8Array | null = null): void {
    if (p.mem >= 0) this.binding.platform.ram.release(p.mem);
    p.mem = -1;
    if (err) p.reject(err);
    else p.resolve(data);
  }
}
