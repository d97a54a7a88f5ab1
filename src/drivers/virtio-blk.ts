// A virtio-blk driver (VIRTIO 1.3 §5.2, in the role of Linux drivers/block/virtio_blk.c) on a
// device bound through virtio_vdpa: Promise-based read/write/flush/discard/writeZeroes/getId
// with many requests in flight. Each request is a chain: 16-byte header (device-readable),
// data, 1 status byte (device-writable), staged in one block of platform RAM.
//
// readMany/writeMany: a batch of same-size requests staged in one block (headers, status
// bytes and, unless the caller's buffer is in platform RAM, the data), added with one ring
// publish and one kick, answered as one promise; nothing is allocated per request (descriptor
// lists and request slots are reused), and no config space is read per I/O (capacity is cached
// at start and on a config change, as Linux's virtblk_update_capacity).
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
  /** What the request is, for error messages; null: built from type, sector and length when needed. */
  what: string | null;
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
  /** IN: where the data goes (read() copies straight into the caller's buffer; null: a new array). */
  dst: Uint8Array | null;
  resolve: (v: Uint8Array | null) => void;
  reject: (e: VirtioError) => void;
}

/** Tokens of batch requests: BATCH_TOKEN + slot (plain requests use 1..0x7fffffff). */
const BATCH_TOKEN = 0x80000000;

/**
 * One readMany()/writeMany() call: `count` requests of `len` data bytes, staged in one block
 * of platform RAM laid out as [count × len data (left out when the caller's buffer is in
 * platform RAM: the data descriptors then point at it)][count × 16-byte headers][count status
 * bytes]; the data area is contiguous, so a staged read is copied out in one call.
 */
interface Batch {
  type: number;
  count: number;
  len: number;
  /** Data segments per request (len cut at size_max). */
  nseg: number;
  /** The staging block (-1 while waiting for RAM). */
  mem: number;
  size: number;
  /** IOVA of request 0's data. */
  data: number;
  /** IOVA of request 0's header; the status bytes follow the headers. */
  hdr: number;
  /** The caller's buffer (IN: filled on completion unless zero-copy). */
  buffer: Uint8Array;
  /** The caller's buffer lies in platform RAM: no staging copy either way. */
  zeroCopy: boolean;
  /** Sectors, kept until the headers are written (waiting for RAM). */
  sectors: ArrayLike<number> | null;
  /** Next request to stage; requests answered. */
  next: number;
  done: number;
  /** First failed request's index and status (-1: none). */
  errAt: number;
  errStatus: number;
  resolve: () => void;
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
  /** Capacity cached at start and on config change (no config read per I/O); -1: not started. */
  private cap = -1;
  /** Batches waiting to be (fully) staged, in submission order. */
  private readonly batches: Batch[] = [];
  /** Batch requests in flight, by slot: batch and request index. Sized to the queue in start(). */
  private slotBatch: (Batch | null)[] = [];
  private slotReq = new Int32Array(0);
  /** Slot of each batch request staged in the current pump pass. */
  private stagedSlot = new Int32Array(0);
  private freeSlots = new Int32Array(0);
  private nfree = 0;
  /** Reused descriptor lists for batch requests (no allocation per request). */
  private readonly bufLists: { addr: number; len: number }[][][] = [[], []];

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
    return this.cap >= 0 ? this.cap : this.readCapacity();
  }

  private readCapacity(): number {
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
    let n = this.inflight.size + this.waiting.length;
    for (const b of this.batches) n += b.count - b.next;
    return n + this.slotBatch.length - this.nfree;
  }

  start(queues: DriverQueue[]): void {
    const q = queues[0];
    if (!q) throw new VirtioError(Code.Internal, 'virtio-blk needs a request queue');
    this.q = q;
    this.failed = null;
    this.limits = this.readLimits();
    this.xfer = this.readXfer(q);
    this.cap = this.readCapacity();
    this.slotBatch = new Array<Batch | null>(q.size).fill(null);
    this.slotReq = new Int32Array(q.size);
    this.stagedSlot = new Int32Array(q.size);
    this.freeSlots = new Int32Array(q.size);
    for (let i = 0; i < q.size; i++) this.freeSlots[i] = q.size - 1 - i;
    this.nfree = q.size;
    this.dev.setVqCb(0, () => this.schedule());
  }

  stop(): void {
    const err = new VirtioError(Code.Cancelled, `${this.dev.name} was reset with the request in flight`);
    const all = [...this.inflight.values(), ...this.waiting.splice(0).map((w) => w.p)];
    this.inflight.clear();
    this.q = null;
    this.cap = -1;
    for (const p of all) this.finish(p, err);
    this.failBatches(err);
  }

  /**
   * Reads `buffer.length` bytes (a multiple of 512) from `sector` into `buffer`: one request per
   * {@link maxTransfer} bytes, all in flight together; `buffer` is filled only if all succeed.
   */
  async read(sector: number, buffer: Uint8Array): Promise<void> {
    this.checkIo(sector, buffer.length);
    // One request: the data goes straight from the staging block into `buffer` (no copy in
    // between), and only once the device said OK.
    if (buffer.length <= this.maxTransfer) {
      await this.submit(VIRTIO_BLK_T_IN, sector, null, buffer.length, null, buffer);
      return;
    }
    const parts = await this.split(buffer.length, (off, len) => {
      const s = sector + off / SECTOR_SIZE;
      return this.submit(VIRTIO_BLK_T_IN, s, null, len, null);
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
    if (data.length <= this.maxTransfer) {
      await this.submit(VIRTIO_BLK_T_OUT, sector, data, 0, null);
      return;
    }
    await this.split(data.length, (off, len) => {
      const s = sector + off / SECTOR_SIZE;
      return this.submit(VIRTIO_BLK_T_OUT, s, data.subarray(off, off + len), 0, null);
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

  /** Config changed: the cached capacity is read again (as Linux virtblk_config_changed → virtblk_update_capacity). */
  onConfigChange(): void {
    if (this.cap >= 0) this.cap = this.readCapacity();
  }

  onNeedsReset(): void {
    this.fail(new VirtioError(Code.FailedPrecondition, `${this.dev.name} needs a reset (DEVICE_NEEDS_RESET)`));
  }

  /** Fails every request and refuses new ones until reset(); raises `error`. */
  private fail(err: VirtioError): void {
    this.failed = err;
    const all = [...this.inflight.values(), ...this.waiting.splice(0).map((w) => w.p)];
    this.inflight.clear();
    for (const p of all) this.finish(p, err);
    this.failBatches(err);
    this.q = null;
    this.cap = -1;
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

  private submit(type: number, sector: number, out: Uint8Array | null, inLen: number, label: string | null, dst: Uint8Array | null = null): Promise<Uint8Array | null> {
    if (this.failed) return Promise.reject(this.failed);
    const q = this.q;
    if (!q) return Promise.reject(new VirtioError(Code.FailedPrecondition, 'the driver is not started'));
    const p = this.binding.platform;
    const outLen = out?.length ?? 0;
    // Requests that can never be carried are refused for good, before anything is staged.
    const seg = this.transferLimits.segmentSize;
    const ndesc = 2 + Math.ceil((outLen + inLen) / seg);
    if (ndesc > q.size && ndesc > q.indirectMax) {
      return Promise.reject(new VirtioError(Code.Unsupported, `${this.dev.name}: ${label ?? reqLabel(type, sector, out?.length ?? inLen)} needs ${ndesc} descriptors; a ${q.size}-entry queue without indirect descriptors can never hold it`));
    }
    if (ndesc > q.maxSegs) return Promise.reject(new VirtioError(Code.Unsupported, `${this.dev.name}: ${label ?? reqLabel(type, sector, out?.length ?? inLen)} needs ${ndesc} descriptors; the queue stages at most ${q.maxSegs}`));
    // One block holds header, data and status: [hdr 16][out data | in data][status 1]
    const size = 16 + outLen + inLen + 1;
    if (size > p.ram.size) {
      return Promise.reject(new VirtioError(Code.InvalidArgument, `${this.dev.name}: ${label ?? reqLabel(type, sector, out?.length ?? inLen)} needs ${size} bytes of staging RAM; the platform has ${p.ram.size}`));
    }
    const pend: Pending = { type, what: label, size, mem: -1, len: outLen + inLen, out, outLen, sector, dst, resolve: noop, reject: noop };
    // Take RAM now unless earlier requests already wait for it (they keep their turn).
    if (!this.ramWaiters()) pend.mem = this.tryAlloc(pend);
    if (pend.mem < 0) {
      if (!this.busy() && this.waiting.length === 0 && this.batches.length === 0) {
        // Nothing of ours will free RAM: waiting could last forever.
        return Promise.reject(new VirtioError(Code.ResourceExhausted, `${this.dev.name}: ${label ?? reqLabel(type, sector, out?.length ?? inLen)}: no ${size} bytes of staging RAM free and no request in flight to free any`));
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

  /** True if a request or batch already waits for staging RAM (later ones queue behind it). */
  private ramWaiters(): boolean {
    for (const w of this.waiting) if (w.p.mem < 0) return true;
    for (const b of this.batches) if (b.mem < 0) return true;
    return false;
  }

  /** True if requests of this driver are in the ring (their completions free RAM and run pump()). */
  private busy(): boolean {
    return this.inflight.size > 0 || this.nfree < this.slotBatch.length;
  }


  /**
   * Reads `sectors.length` blocks of `len` bytes (a multiple of 512, at most
   * {@link maxTransfer}): request i reads at `sectors[i]` into `buffer[i × len, (i + 1) × len)`.
   * The requests go into the ring together behind one kick (as many as fit; the rest as room
   * frees up) and the promise settles once every one was answered: resolves when all
   * succeeded, else rejects with the first failed request's error (IoError for
   * VIRTIO_BLK_S_IOERR, Unsupported for UNSUPP). A staged `buffer` is filled only if all
   * succeed. Nothing is allocated per request. A `buffer` from
   * {@link allocBuffer} (in platform RAM) is read into directly by the device: no copy at all.
   * Bad arguments reject with InvalidArgument before anything is submitted.
   */
  readMany(sectors: ArrayLike<number>, len: number, buffer: Uint8Array): Promise<void> {
    return this.submitMany(VIRTIO_BLK_T_IN, sectors, len, buffer);
  }

  /**
   * Writes `sectors.length` blocks of `len` bytes: request i writes `data[i × len, (i + 1) × len)`
   * at `sectors[i]`; batched, settled and zero-copy like {@link readMany}. `data` (unless from
   * {@link allocBuffer}: the device reads it in place, keep it until the promise settles) is
   * copied into staging RAM during the call: the caller may reuse it at once.
   */
  writeMany(sectors: ArrayLike<number>, len: number, data: Uint8Array): Promise<void> {
    return this.submitMany(VIRTIO_BLK_T_OUT, sectors, len, data);
  }

  /**
   * A buffer in platform RAM for {@link readMany}/{@link writeMany}: the device moves data
   * straight between it and the disk (no staging copy). Give it back with {@link freeBuffer}.
   * Throws ResourceExhausted if the RAM arena has no `bytes` free.
   */
  allocBuffer(bytes: number): Uint8Array {
    if (!Number.isSafeInteger(bytes) || bytes < 1) throw new VirtioError(Code.InvalidArgument, `buffer size ${bytes} must be a positive integer`);
    const p = this.binding.platform;
    const at = p.ram.alloc(bytes, 4096);
    return p.u8.subarray(at, at + bytes);
  }

  /** Returns a buffer from {@link allocBuffer}; it must not be in use by a batch in flight. */
  freeBuffer(buf: Uint8Array): void {
    if (buf.buffer !== this.binding.platform.u8.buffer) throw new VirtioError(Code.InvalidArgument, 'not a buffer of this driver\'s platform');
    this.binding.platform.ram.release(buf.byteOffset);
  }

  private submitMany(type: number, sectors: ArrayLike<number>, len: number, buffer: Uint8Array): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const q = this.q;
    if (!q) return Promise.reject(new VirtioError(Code.FailedPrecondition, 'the driver is not started'));
    const op = OP_NAMES[type]!;
    const count = sectors?.length;
    let bad: string | null = null;
    if (type === VIRTIO_BLK_T_OUT && this.readOnly) {
      return Promise.reject(new VirtioError(Code.FailedPrecondition, `${this.dev.name}: ${op} refused: read-only device (VIRTIO_BLK_F_RO)`));
    }
    if (!Number.isSafeInteger(count) || count < 0) bad = 'sectors must be an array-like of sector numbers';
    else if (!Number.isSafeInteger(len) || len <= 0 || len % SECTOR_SIZE !== 0) bad = `length ${len} must be a positive multiple of ${SECTOR_SIZE}`;
    else if (len > this.maxTransfer) bad = `length ${len} is over the ${this.maxTransfer} bytes one request carries`;
    else if (!(buffer instanceof Uint8Array) || buffer.length < count * len) bad = `the buffer must be a Uint8Array of at least ${count} × ${len} bytes`;
    else {
      const cap = this.capacity;
      const n = len / SECTOR_SIZE;
      for (let i = 0; i < count; i++) {
        const s = sectors[i]!;
        if (!Number.isSafeInteger(s) || s < 0 || s + n > cap) {
          bad = `sector ${s} (request ${i}) must be an integer in [0, ${cap - n}]`;
          break;
        }
      }
    }
    if (bad) return Promise.reject(new VirtioError(Code.InvalidArgument, `${this.dev.name}: ${op} batch: ${bad}`));
    if (count === 0) return Promise.resolve();
    const seg = this.xfer!.segmentSize;
    const nseg = seg === Infinity ? 1 : Math.ceil(len / seg);
    const ndesc = 2 + nseg;
    if ((ndesc > q.size && ndesc > q.indirectMax) || ndesc > q.maxSegs) {
      return Promise.reject(new VirtioError(Code.Unsupported, `${this.dev.name}: ${op} of ${len} bytes needs ${ndesc} descriptors; this queue can never hold it`));
    }
    const p = this.binding.platform;
    const bytes = count * len;
    const zeroCopy = buffer.buffer === p.u8.buffer && buffer.byteOffset >= p.ram.base && buffer.byteOffset + bytes <= p.ram.base + p.ram.size;
    const size = (zeroCopy ? 0 : bytes) + 17 * count;
    if (size > p.ram.size) return Promise.reject(new VirtioError(Code.InvalidArgument, `${this.dev.name}: ${op} batch needs ${size} bytes of staging RAM; the platform has ${p.ram.size}`));
    const b: Batch = {
      type, count, len, nseg, mem: -1, size, data: 0, hdr: 0, buffer, zeroCopy, sectors, next: 0, done: 0, errAt: -1, errStatus: 0,
      resolve: noop, reject: noop,
    };
    if (!this.ramWaiters()) this.fillBatch(b);
    if (b.mem < 0) {
      if (!this.busy() && this.waiting.length === 0 && this.batches.length === 0) {
        return Promise.reject(new VirtioError(Code.ResourceExhausted, `${this.dev.name}: ${op} batch: no ${size} bytes of staging RAM free and no request in flight to free any`));
      }
      // Waiting for RAM: keep what the caller may reuse meanwhile.
      b.sectors = Array.from({ length: count }, (_, i) => sectors[i]!);
      if (type === VIRTIO_BLK_T_OUT && !zeroCopy) b.buffer = buffer.slice(0, bytes);
    }
    return new Promise<void>((resolve, reject) => {
      b.resolve = resolve;
      b.reject = reject;
      this.batches.push(b);
      this.pump();
    });
  }

  /**
   * Takes a batch's staging block and writes every header (and, for OUT, the data) into it.
   * Layout: [data: count × len, unless zero-copy][headers: count × 16][status bytes: count].
   * Returns false if RAM is short.
   */
  private fillBatch(b: Batch): boolean {
    const p = this.binding.platform;
    try {
      b.mem = p.ram.alloc(b.size, 16);
    } catch (e) {
      if (e instanceof VirtioError && e.code === Code.ResourceExhausted) return false;
      throw e;
    }
    const bytes = b.count * b.len;
    b.data = b.zeroCopy ? b.buffer.byteOffset : b.mem;
    b.hdr = b.mem + (b.zeroCopy ? 0 : bytes);
    const u32 = p.u32;
    const secs = b.sectors!;
    for (let i = 0, w = b.hdr >> 2; i < b.count; i++, w += 4) {
      // struct virtio_blk_outhdr { le32 type; le32 reserved; le64 sector; } (VIRTIO 1.3 §5.2.6)
      const s = secs[i]!;
      u32[w] = b.type;
      u32[w + 1] = 0;
      u32[w + 2] = s % 2 ** 32;
      u32[w + 3] = Math.floor(s / 2 ** 32);
    }
    // 0xff: a status the device never writes, so an unanswered request cannot look OK.
    p.u8.fill(0xff, b.hdr + 16 * b.count, b.hdr + 17 * b.count);
    if (b.type === VIRTIO_BLK_T_OUT && !b.zeroCopy) p.u8.set(b.buffer.length === bytes ? b.buffer : b.buffer.subarray(0, bytes), b.mem);
    b.sectors = null;
    return true;
  }

  /** Stages the waiting batches' requests while slots, staging and RAM allow. */
  private stageBatches(q: DriverQueue): void {
    const first = q.stagedCount;
    for (const b of this.batches) {
      if (b.mem < 0 && !this.fillBatch(b)) return; // waits for RAM, and every later batch behind it
      const read = b.type === VIRTIO_BLK_T_IN;
      const seg = this.xfer!.segmentSize;
      const out = this.bufList(0, read ? 1 : 1 + b.nseg);
      const inp = this.bufList(1, read ? 1 + b.nseg : 1);
      const data = read ? inp : out;
      const d0 = read ? 0 : 1;
      const n = out.length + inp.length;
      while (b.next < b.count) {
        if (this.nfree === 0 || !q.canStage(n)) return;
        const i = b.next;
        setBuf(out, 0, b.hdr + 16 * i, 16);
        for (let k = 0, o = 0; k < b.nseg; k++, o += seg) setBuf(data, d0 + k, b.data + i * b.len + o, Math.min(seg, b.len - o));
        setBuf(inp, inp.length - 1, b.hdr + 16 * b.count + i, 1);
        const slot = this.freeSlots[--this.nfree]!;
        this.slotBatch[slot] = b;
        this.slotReq[slot] = i;
        this.stagedSlot[q.stagedCount - first] = slot;
        q.stage(BATCH_TOKEN + slot, out, inp);
        b.next++;
      }
    }
  }

  /** The ring took fewer than staged: staged positions [from, to) go back to their batches. */
  private unstageBatches(from: number, to: number, first: number): void {
    for (let k = to - 1; k >= from; k--) {
      const slot = this.stagedSlot[k - first]!;
      const b = this.slotBatch[slot]!;
      b.next = this.slotReq[slot]!;
      this.slotBatch[slot] = null;
      this.freeSlots[this.nfree++] = slot;
      if (this.batches[0] !== b && !this.batches.includes(b)) this.batches.unshift(b);
    }
  }

  /** A batch request was answered: when its batch is complete, settle it. */
  private batchAnswered(slot: number): void {
    const b = this.slotBatch[slot];
    if (!b) return;
    const i = this.slotReq[slot]!;
    this.slotBatch[slot] = null;
    this.freeSlots[this.nfree++] = slot;
    const p = this.binding.platform;
    const st = p.u8[b.hdr + 16 * b.count + i]!;
    if (st !== VIRTIO_BLK_S_OK && b.errAt < 0) {
      b.errAt = i;
      b.errStatus = st;
    }
    if (++b.done < b.count) return;
    const op = OP_NAMES[b.type]!;
    let err: VirtioError | null = null;
    if (b.errAt >= 0) {
      const w = (b.hdr + 16 * b.errAt) >> 2;
      const sector = p.u32[w + 2]! + p.u32[w + 3]! * 2 ** 32;
      const what = `${op} of ${b.len / SECTOR_SIZE} sectors at ${sector} (request ${b.errAt} of a batch of ${b.count})`;
      if (b.errStatus === VIRTIO_BLK_S_UNSUPP) err = new VirtioError(Code.Unsupported, `${this.dev.name}: ${what} failed: the device does not support it (VIRTIO_BLK_S_UNSUPP)`);
      else {
        const why = b.errStatus === 0xff ? 'the device did not write a status' : `the device answered ${b.errStatus === 1 ? 'VIRTIO_BLK_S_IOERR' : `status ${b.errStatus}`}`;
        err = new VirtioError(Code.IoError, `${this.dev.name}: ${what} failed: ${why}`);
      }
    } else if (b.type === VIRTIO_BLK_T_IN && !b.zeroCopy) {
      // One copy for the whole batch (the data area is contiguous).
      b.buffer.set(p.u8.subarray(b.mem, b.mem + b.count * b.len));
    }
    p.ram.release(b.mem);
    b.mem = -1;
    if (err) b.reject(err);
    else b.resolve();
  }

  /** Rejects every batch, waiting or in flight, and frees their staging RAM. */
  private failBatches(err: VirtioError): void {
    const all = new Set<Batch>(this.batches.splice(0));
    for (let s = 0; s < this.slotBatch.length; s++) {
      const b = this.slotBatch[s];
      if (b) all.add(b);
      this.slotBatch[s] = null;
      this.freeSlots[s] = this.slotBatch.length - 1 - s;
    }
    this.nfree = this.slotBatch.length;
    const p = this.binding.platform;
    for (const b of all) {
      if (b.mem >= 0) p.ram.release(b.mem);
      b.mem = -1;
      b.reject(err);
    }
  }

  /** A reused list of `n` descriptors (`which`: 0 device-readable, 1 device-writable). */
  private bufList(which: number, n: number): { addr: number; len: number }[] {
    const lists = this.bufLists[which]!;
    let l = lists[n];
    if (!l) {
      l = Array.from({ length: n }, () => ({ addr: 0, len: 0 }));
      lists[n] = l;
    }
    return l;
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
    p.view.setUint32(mem + 8, pend.sector % 2 ** 32, true);
    p.view.setUint32(mem + 12, Math.floor(pend.sector / 2 ** 32), true);
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
      if (this.busy() || this.failed || !this.q) return;
      const head = this.waiting[0];
      if (head) {
        if (head.p.mem >= 0) return;
        this.waiting.shift();
        this.finish(head.p, new VirtioError(Code.ResourceExhausted, `${this.dev.name}: ${describe(head.p)}: no ${head.p.size} bytes of staging RAM free and no request in flight to free any`));
        continue;
      }
      const b = this.batches[0];
      if (!b || b.mem >= 0) return;
      this.batches.shift();
      b.reject(new VirtioError(Code.ResourceExhausted, `${this.dev.name}: ${OP_NAMES[b.type]} batch of ${b.count} × ${b.len} bytes: no ${b.size} bytes of staging RAM free and no request in flight to free any`));
    }
  }

  /** One pass of {@link pump}. Returns false if the driver failed or has nothing to do. */
  private pumpOnce(): boolean {
    const q = this.q;
    if (!q || (this.waiting.length === 0 && this.batches.length === 0)) return false;
    let added = 0;
    let plain = 0;
    let staged = 0;
    try {
      try {
        let all = true;
        for (const w of this.waiting) {
          all = false;
          const pend = w.p;
          if (pend.mem < 0) pend.mem = this.tryAlloc(pend);
          if (pend.mem < 0) break; // wait for RAM that requests in flight will free
          const { mem, outLen, len } = pend;
          // Data in segments of at most size_max bytes (one when size_max was not offered).
          // (Descriptor lists reused from call to call: no allocation per request.)
          const seg = this.xfer!.segmentSize;
          const nout = seg === Infinity ? Math.min(outLen, 1) : Math.ceil(outLen / seg);
          const nin = seg === Infinity ? Math.min(len - outLen, 1) : Math.ceil((len - outLen) / seg);
          const segs = this.bufList(0, 1 + nout);
          const inp = this.bufList(1, nin + 1);
          setBuf(segs, 0, mem, 16);
          for (let k = 0, o = 0; k < nout; k++, o += seg) setBuf(segs, 1 + k, mem + 16 + o, Math.min(seg, outLen - o));
          for (let k = 0, o = outLen; k < nin; k++, o += seg) setBuf(inp, k, mem + 16 + o, Math.min(seg, len - o));
          setBuf(inp, nin, mem + 16 + len, 1);
          if (!q.canStage(segs.length + inp.length)) break;
          q.stage(w.token, segs, inp);
          plain++;
          all = true;
        }
        // Batches after every plain request that waited (submission order is kept).
        if (all) this.stageBatches(q);
        staged = q.stagedCount;
        added = q.submit();
        if (added < staged) this.unstageBatches(Math.max(plain, added), staged, plain);
      } finally {
        // Whatever did not fit stays waiting, never half-staged.
        q.clearStaged();
      }
    } catch (e) {
      this.fail(e instanceof VirtioError ? e : new VirtioError(Code.Internal, `${this.dev.name}: submitting requests failed`, { cause: e }));
      return false;
    }
    for (const w of this.waiting.splice(0, Math.min(added, plain))) this.inflight.set(w.token, w.p);
    while (this.batches.length && this.batches[0]!.next === this.batches[0]!.count) this.batches.shift();
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
        if (t >= BATCH_TOKEN) {
          this.batchAnswered(t - BATCH_TOKEN);
          continue;
        }
        const p = this.inflight.get(t);
        if (!p) continue;
        this.inflight.delete(t);
        const st = u8[p.mem + 16 + p.len]!;
        if (st === VIRTIO_BLK_S_OK) {
          let data: Uint8Array | null = null;
          if (p.len - p.outLen > 0) {
            if (p.dst) p.dst.set(u8.subarray(p.mem + 16 + p.outLen, p.mem + 16 + p.len));
            else data = u8.slice(p.mem + 16 + p.outLen, p.mem + 16 + p.len);
          }
          this.finish(p, null, data);
        } else if (st === VIRTIO_BLK_S_UNSUPP) {
          this.finish(p, new VirtioError(Code.Unsupported, `${this.dev.name}: ${describe(p)} failed: the device does not support it (VIRTIO_BLK_S_UNSUPP)`));
        } else {
          const why = st === 0xff ? 'the device did not write a status' : `the device answered ${st === 1 ? 'VIRTIO_BLK_S_IOERR' : `status ${st}`}`;
          this.finish(p, new VirtioError(Code.IoError, `${this.dev.name}: ${describe(p)} failed: ${why}`));
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

function noop(): void {}

/** What a request is, for error messages ("write of 8 sectors at 100"). */
function describe(p: Pending): string {
  return p.what ?? `${OP_NAMES[p.type]} of ${(p.type === VIRTIO_BLK_T_OUT ? p.outLen : p.len - p.outLen) / SECTOR_SIZE} sectors at ${p.sector}`;
}

/** The label of a request for error messages. */
function reqLabel(type: number, sector: number, len: number): string {
  return `${OP_NAMES[type]} of ${len / SECTOR_SIZE} sectors at ${sector}`;
}

function setBuf(list: { addr: number; len: number }[], i: number, addr: number, len: number): void {
  const b = list[i]!;
  b.addr = addr;
  b.len = len;
}
