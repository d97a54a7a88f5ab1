// vdpasim_blk (Linux drivers/vdpa/vdpa_sim/vdpa_sim_blk.c): a virtio-blk device (VIRTIO 1.3
// §5.2). Two backends: a RAM disk in the platform memory, served entirely in wasm one batch
// at a time (assembly/dev/blk.ts blk_serve), or an asynchronous BlkBackend (a file through
// Node's fs, a browser's OPFS or IndexedDB, anything) whose requests are tracked in flight and
// completed when the backend answers. Requests: IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES
// (with UNMAP); status OK, IOERR (malformed, out of range, or IN / OUT data over size_max ×
// seg_max), UNSUPP (unknown or not negotiated).
//
// One parser: both backends validate requests in wasm (assembly/dev/blk.ts). The async path
// asks blk_parse what each request is and only executes its records here.
//
// Invariants of the async path:
// - Every device access to driver memory is checked against the map in force at the moment
//   of the access. Buffers are translated at pop time; OUT data and discard ranges are read
//   then, synchronously. An answer that arrives after the map changed (Iotlb.generation moved)
//   is checked again with Iotlb.allows(): data segments no longer writable → IOERR written into
//   the status byte (written = 1, nothing else touched); the status byte itself no longer
//   writable → the request cannot be answered: the queue breaks (DEVICE_NEEDS_RESET).
// - Backend faults are contained per request: a method that throws, rejects, is missing, or
//   answers a read with anything but exactly the bytes asked ends that request with IOERR;
//   the device goes on serving. Nothing escapes into a microtask.

import { VirtioError, Code } from '../errors.ts';
import { VdpaSim, features } from './sim-core.ts';
import type { Platform } from '../platform/platform.ts';
import type { DeviceQueue } from '../ring/device-queue.ts';
import { RecordedChains } from '../ring/recorded-chains.ts';
import { PERM_W } from '../platform/iotlb.ts';
import {
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_ID_BYTES, SECTOR_SIZE, VIRTIO_BLK_CFG,
} from '../virtio/blk.ts';
import {
  VIRTIO_ID_BLOCK, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED,
  VIRTIO_F_ACCESS_PLATFORM, hasFeature,
} from '../virtio/constants.ts';

// The spec constants live in src/virtio/blk.ts; re-exported here, where they always were.
export {
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_ID_BYTES, SECTOR_SIZE,
};
const CFG_CAPACITY = VIRTIO_BLK_CFG.CAPACITY;
const CFG_SIZE_MAX = VIRTIO_BLK_CFG.SIZE_MAX;
const CFG_SEG_MAX = VIRTIO_BLK_CFG.SEG_MAX;
const CFG_BLK_SIZE = VIRTIO_BLK_CFG.BLK_SIZE;
const CFG_MAX_DISCARD_SECTORS = VIRTIO_BLK_CFG.MAX_DISCARD_SECTORS;
const CFG_MAX_DISCARD_SEG = VIRTIO_BLK_CFG.MAX_DISCARD_SEG;
const CFG_DISCARD_ALIGN = VIRTIO_BLK_CFG.DISCARD_SECTOR_ALIGNMENT;
const CFG_MAX_WZ_SECTORS = VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SECTORS;
const CFG_MAX_WZ_SEG = VIRTIO_BLK_CFG.MAX_WRITE_ZEROES_SEG;
const CFG_WZ_MAY_UNMAP = VIRTIO_BLK_CFG.WRITE_ZEROES_MAY_UNMAP;
const CFG_SIZE = VIRTIO_BLK_CFG.SIZE;

/**
 * Flag bits of blk_parse / blk_serve (assembly/dev/blk.ts BLK_F_*; test/blk-parse-sync.test.ts).
 * SEG_SHIFT: bits 16.. of the flag word carry the seg_max the config space offers.
 */
export const BLK_FLAG = {
  /** The disk is read-only (VIRTIO_BLK_F_RO). */
  RO: 1,
  /** DISCARD is offered. */
  DISCARD: 2,
  /** WRITE_ZEROES is offered. */
  WRITE_ZEROES: 4,
  /** Shift of the seg_max field in the flag word. */
  SEG_SHIFT: 16,
} as const;

/**
 * Limits the device offers in config space and enforces in wasm (assembly/dev/blk.ts
 * BLK_MAX_DISCARD_*, BLK_SIZE_MAX, BLK_SEG_MAX): per request at most MAX_DISCARD_SEG ranges of
 * MAX_DISCARD_SECTORS; size_max = SIZE_MAX (64 KiB, Linux's BLK_MAX_SEGMENT_SIZE) and seg_max =
 * min(SEG_MAX, vq_num_max - 2) (128 is Linux's BLK_MAX_SEGMENTS): an IN / OUT request carries
 * at most size_max × seg_max data bytes (8 MiB by default); a longer one is IOERR before any copy.
 */
export const BLK_LIMITS = {
  /** Most sectors in one discard or write-zeroes range. */
  MAX_DISCARD_SECTORS: 65535,
  /** Most discard or write-zeroes ranges in one request. */
  MAX_DISCARD_SEG: 16,
  /** size_max: largest data segment, bytes. */
  SIZE_MAX: 65536,
  /** Upper bound of seg_max. */
  SEG_MAX: 128,
} as const;

/** blk_parse output record layout (assembly/dev/blk.ts BLK_R_*, BLK_ACT_*, BLK_REQ_REC …). */
export const BLK_REQ = {
  /** Bytes per record. */
  REC: 32,
  /** u32 at this offset: ACT_DONE or ACT_BACKEND. */
  ACTION: 0,
  /** u32: the request type (VIRTIO_BLK_T_*). */
  TYPE: 4,
  /** u64: first sector. */
  SECTOR: 8,
  /** u32: data bytes. */
  BYTES: 16,
  /** u32: discard / write-zeroes ranges. */
  NRANGES: 20,
  /** u32: index of the request's first range in the ranges area. */
  RANGE0: 24,
  /** u32: offset of the status byte within the chain's writable bytes (writeBytes - 1). */
  STATUS_AT: 28,
  /** Action: answered in wasm already (status and written length set). */
  ACT_DONE: 0,
  /** Action: the backend must serve it. */
  ACT_BACKEND: 1,
  /** Bytes per range record (struct virtio_blk_discard_write_zeroes). */
  RANGE_REC: 16,
  /** Private scratch bytes blk_parse needs. */
  SCRATCH: 16 + 32 + 16 * 16,
} as const;

/** Features vdpasim_blk offers (VIRTIO_BLK_F_RO is added for read-only devices). */
export const VDPASIM_BLK_FEATURES: bigint = features(
  VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED,
);

/**
 * An asynchronous disk: sectors are 512 bytes. A method that throws, rejects or answers
 * something else than documented ends that request with IOERR (the device keeps serving).
 */
export interface BlkBackend {
  /** Disk size in sectors: a positive safe integer, read once when the device is created. */
  readonly capacity: number;
  /** A read-only disk: the device then offers VIRTIO_BLK_F_RO. @default false */
  readonly readOnly?: boolean;
  /** Reads `len` bytes at `sector`: must resolve to a Uint8Array of exactly `len` bytes. */
  read(sector: number, len: number): Promise<Uint8Array>;
  /**
   * Reads `buf.length` bytes at `sector` into `buf`; used instead of {@link read} when present
   * (no array per read: the device cuts `buf` from buffers it reuses). `buf` is the backend's
   * until the promise settles and no longer: fill it, never keep, transfer or detach it. Resolve
   * once all of it is filled; reject (or throw) for an I/O error.
   */
  readInto?(sector: number, buf: Uint8Array): Promise<void>;
  /**
   * Writes `data` at `sector`. `data` is the device's copy of the request's bytes, the
   * backend's until the promise settles and no longer: it is a view into a buffer the device
   * reuses for later writes' data once this promise settles (copy what you keep, as a cache
   * would), and shares with other writes meanwhile, so read it through the view and never
   * transfer or detach its buffer.
   */
  write(sector: number, data: Uint8Array): Promise<void>;
  /** Makes written data durable. */
  flush(): Promise<void>;
  /** Discards sectors (their content becomes undefined). Without it DISCARD writes zeroes. */
  discard?(sector: number, count: number): Promise<void>;
  /** Writes zeroes (may unmap). Without it zero blocks are written. */
  writeZeroes?(sector: number, count: number, unmap: boolean): Promise<void>;
}

/** Options of {@link VdpaSimBlk}. */
export interface VdpaSimBlkOptions {
  /** Device name. */
  name: string;
  /** RAM disk size in 512-byte sectors (ignored with a backend). @default 8192 (4 MiB) */
  capacity?: number;
  /** Read-only disk (VIRTIO_BLK_F_RO). A backend with `readOnly` makes the device read-only too. @default false */
  readOnly?: boolean;
  /** Offered features. @default VDPASIM_BLK_FEATURES (+ RO) */
  deviceFeatures?: bigint;
  /** An asynchronous backend instead of the RAM disk. */
  backend?: BlkBackend;
  /** Longest a suspend waits for backend requests in flight; past it the device sets NEEDS_RESET. @default 1000 */
  suspendTimeoutMs?: number;
}

/** What the last migration save of a {@link VdpaSimBlk} carried ({@link VdpaSimBlk.lastSavedRequests}). */
export interface SavedRequests {
  /** Requests in flight the state carried. */
  readonly all: number;
  /** Of those, writes, flushes, discards and write-zeroes known by type. */
  readonly writes: number;
}

/** Where a request record is ({@link InFlight.at}). */
const enum At {
  /** In the device's pool, unused. */
  FREE = 0,
  /** Out at the backend, in `inflight`. */
  OUT = 1,
  /** Out at the backend, dropped by a reset (its answer is thrown away when it settles). */
  DROPPED = 2,
  /** Answered, in `held` (pushed used when the device runs). */
  HELD = 3,
  /** Answered, a re-submitted write waiting in the fence's `held` ({@link VdpaSimBlk.releaseFence}). */
  FENCED = 4,
}

/**
 * A request handed to the backend, with what its completion may touch, and then its answer.
 * Records are pooled per device and reused (no object, segment array or closure per request):
 * a record goes back to the pool only once its backend operation settled and its answer was
 * used or dropped, so a record has at most one operation out, and its two settle callbacks,
 * made once with it, always answer that one.
 */
interface InFlight {
  q: DeviceQueue;
  /** The ring the chain was popped from ({@link VdpaSimBlk} ringId at pop). */
  ring: object;
  id: number;
  ndesc: number;
  /** Map generation when the buffers were translated (at pop). */
  gen: number;
  /** Memory offset of the status byte. */
  statusAddr: number;
  /**
   * The chain's segments (DeviceQueue.chainSegments: counts, then offset/length pairs,
   * readable first; the array may be longer): IN data goes to the first `bytes` writable
   * bytes, and a migration records the chain from them.
   */
  segs: Uint32Array;
  /** VIRTIO_BLK_T_*. */
  type: number;
  /** IN: bytes the backend must return. */
  bytes: number;
  /**
   * A migration's destination re-submitted this write (or discard, write-zeroes): 1 —
   * its completion waits for the source's backend to go idle ({@link VdpaSimBlk.releaseFence});
   * 2 — that wait timed out, it completes with IOERR; 0 otherwise.
   */
  fenced: 0 | 1 | 2;
  /** Whether the chain can be named by IOVA (DeviceQueue.recordable) under map generation `recGen`. */
  recOk: boolean;
  /** The map generation `recOk` was found under (-1: not yet). */
  recGen: number;
  /**
   * The slab this request's bytes were cut from, or null: a write's data (released when the
   * backend settles), or a read's buffer for BlkBackend.readInto (released once its answer is
   * used or dropped, never before the backend settled).
   */
  slab: OutSlab | null;
  /** IN through BlkBackend.readInto: the region the backend fills (then the answer's data). */
  readBuf: Uint8Array | null;
  /** The answer (once settled): the status to write and, for IN, the data. */
  status: number;
  data: Uint8Array | null;
  at: At;
  /** Links of the list the record is in (ReqList), or of the pool. */
  prev: InFlight | null;
  next: InFlight | null;
  /** The backend operation's settle callbacks, made once per record. */
  onOk: (answer: unknown) => void;
  onFail: () => void;
}

/** Request records in order, linked through the records (no allocation to add or remove one). */
class ReqList {
  head: InFlight | null = null;
  tail: InFlight | null = null;
  size = 0;

  /** Appends `r` (in no list) and marks where it is. */
  push(r: InFlight, at: At): void {
    r.at = at;
    r.prev = this.tail;
    r.next = null;
    if (this.tail) this.tail.next = r;
    else this.head = r;
    this.tail = r;
    this.size++;
  }

  /** Takes `r` (in this list) out. */
  remove(r: InFlight): void {
    if (r.prev) r.prev.next = r.next;
    else this.head = r.next;
    if (r.next) r.next.prev = r.prev;
    else this.tail = r.prev;
    r.prev = r.next = null;
    this.size--;
  }

  /** Empties the list and returns its first record: the rest follow through `next`, which stay set until each is handled. */
  takeAll(): InFlight | null {
    const h = this.head;
    this.head = this.tail = null;
    this.size = 0;
    return h;
  }
}

/**
 * A buffer write data and readInto buffers are cut from ({@link VdpaSimBlk.outBuffer}): `live`
 * regions are still held; once none is and the device has moved on to another slab, it is reused.
 */
interface OutSlab {
  readonly buf: Uint8Array;
  live: number;
  /**
   * Regions handed out before, by offset (at most SLAB_VIEWS_KEPT): a slab is cut the same way
   * again and again, and a view reused is one allocation fewer per request.
   */
  readonly views: Map<number, Uint8Array>;
}

/** A simulated virtio-blk device. */
export class VdpaSimBlk extends VdpaSim {
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Memory offset of the RAM disk (-1 with a backend). */
  readonly disk: number;
  /** True for a read-only disk. */
  readonly readOnly: boolean;
  /** The asynchronous backend, if any. */
  readonly backend: BlkBackend | null;
  /** seg_max offered in config space; size_max × segMax bounds every IN / OUT request. */
  private readonly segMax: number;
  /** Memory offset of the 20-byte GET_ID string. */
  private readonly id: number;
  private readonly scratch: number;
  /** blk_parse output: one record per chain of a batch, and the ranges area. */
  private readonly recs: number;
  private readonly ranges: number;
  private readonly inflight = new ReqList();
  /** Answers that came back while the device was suspended: delivered on resume. */
  private readonly held = new ReqList();
  /** Answers the running delivery pass has still to push (deliverHeld). */
  private delivering: InFlight | null = null;
  /** Request records ready for reuse (linked through `next`), at most REQS_KEPT. */
  private pool: InFlight | null = null;
  private pooled = 0;
  private drainWaiters: (() => void)[] = [];
  /** Backend writes (flushes, discards, write-zeroes) started and not settled, across resets ({@link writesIdle}). */
  private outstanding = 0;
  private idleWaiters: (() => void)[] = [];
  /**
   * Migration destination: closed while writes the source had in flight may still land there
   * (see {@link releaseFence}); their answers wait in its `held`.
   */
  private fence: { id: number; timer: ReturnType<typeof setTimeout> | null; held: ReqList } | null = null;
  /**
   * Migration destination: the requests the source had in flight, re-submitted when the device
   * runs (`replayAt` of them are; `replaying` while some are not).
   */
  private replay: RecordedChains | null = null;
  private replaying = false;
  private replayAt = 0;
  /** Migration source: what the last save carried (saveRequests), overwritten by the next. */
  private saved: RecordedChains | null = null;
  private savedAll = 0;
  private savedWrites = 0;
  /** checkRequests' record of the ids it saw (one byte per buffer id). */
  private idsSeen: Uint8Array | null = null;
  /** Where write data is copied for the backend ({@link outBuffer}). */
  private outSlab: OutSlab | null = null;
  private outSlabAt = 0;
  /** Slabs no backend holds a region of, ready to be cut again (at most OUT_SLABS_KEPT). */
  private freeSlabs: OutSlab[] = [];
  /**
   * Identity of the request queue's ring: replaced when its size or addresses change and on
   * reset. A queue disabled and enabled again over the same ring keeps it (sim-core saves the
   * ring position on disable and restores it on enable), so answers to chains popped before
   * are still delivered there; answers for another ring are dropped.
   */
  private ringId: object = {};
  private ringCfg = { num: 0, desc: 0n, driver: 0n, device: 0n };
  private backendErrors = 0;
  /** The features {@link flags} was computed for (-1: not yet). */
  private flagsFor = -1n;
  private flags = 0;

  constructor(platform: Platform, opts: VdpaSimBlkOptions) {
    const backend = opts.backend ?? null;
    let capacity: unknown;
    let backendRo = false;
    try {
      capacity = backend ? backend.capacity : (opts.capacity ?? 8192);
      backendRo = backend?.readOnly === true;
    } catch (e) {
      throw new VirtioError(Code.InvalidArgument, 'the backend\'s capacity cannot be read', { cause: e });
    }
    // Byte offsets of the whole disk must stay exact in a JS number.
    if (typeof capacity !== 'number' || !Number.isSafeInteger(capacity) || capacity < 1 || capacity * SECTOR_SIZE > Number.MAX_SAFE_INTEGER) {
      throw new VirtioError(Code.InvalidArgument, `capacity ${String(capacity)} must be a positive number of sectors below 2^53 bytes`);
    }
    const ro = (opts.readOnly ?? false) || backendRo;
    const roBit = 1n << BigInt(VIRTIO_BLK_F_RO);
    const offered = opts.deviceFeatures !== undefined ? opts.deviceFeatures | (ro ? roBit : 0n) : (VDPASIM_BLK_FEATURES | (ro ? roBit : 0n));
    super(platform, { name: opts.name, deviceId: VIRTIO_ID_BLOCK, supportedFeatures: offered, nvqs: 1, configSize: CFG_SIZE, ...(opts.suspendTimeoutMs !== undefined ? { suspendTimeoutMs: opts.suspendTimeoutMs } : {}) });
    // Anything below that throws (platform memory running out) frees what the device had
    // allocated, whether or not it was built through constructDevice().
    try {
      this.capacity = capacity;
      this.readOnly = ro || hasFeature(offered, VIRTIO_BLK_F_RO);
      this.backend = backend;
      if (backend) {
        this.disk = -1;
      } else {
        this.disk = this.allocRam(capacity * SECTOR_SIZE, 4096);
        platform.u8.fill(0, this.disk, this.disk + capacity * SECTOR_SIZE);
      }
      const v = this.configView;
      v.setBigUint64(CFG_CAPACITY, BigInt(capacity), true);
      // The limits hold whether or not the driver negotiated the features (as in vdpa_sim_blk).
      this.segMax = Math.max(1, Math.min(BLK_LIMITS.SEG_MAX, this.getVqNumMax() - 2));
      v.setUint32(CFG_SIZE_MAX, BLK_LIMITS.SIZE_MAX, true);
      v.setUint32(CFG_SEG_MAX, this.segMax, true);
      v.setUint32(CFG_BLK_SIZE, SECTOR_SIZE, true);
      v.setUint32(CFG_MAX_DISCARD_SECTORS, BLK_LIMITS.MAX_DISCARD_SECTORS, true);
      v.setUint32(CFG_MAX_DISCARD_SEG, BLK_LIMITS.MAX_DISCARD_SEG, true);
      v.setUint32(CFG_DISCARD_ALIGN, 1, true);
      v.setUint32(CFG_MAX_WZ_SECTORS, BLK_LIMITS.MAX_DISCARD_SECTORS, true);
      v.setUint32(CFG_MAX_WZ_SEG, BLK_LIMITS.MAX_DISCARD_SEG, true);
      this.config[CFG_WZ_MAY_UNMAP] = 1;
      this.id = this.allocPriv(VIRTIO_BLK_ID_BYTES, 4);
      platform.u8.fill(0, this.id, this.id + VIRTIO_BLK_ID_BYTES);
      platform.u8.set(new TextEncoder().encode(`vdpasim-${opts.name}`).subarray(0, VIRTIO_BLK_ID_BYTES), this.id);
      this.scratch = this.allocPriv(BLK_REQ.SCRATCH, 8);
      const maxBatch = Math.min(this.batch, this.getVqNumMax());
      this.recs = backend ? this.allocPriv(maxBatch * BLK_REQ.REC, 8) : -1;
      this.ranges = backend ? this.allocPriv(maxBatch * BLK_LIMITS.MAX_DISCARD_SEG * BLK_REQ.RANGE_REC, 8) : -1;
    } catch (e) {
      VdpaSim.abandon(this);
      throw e;
    }
  }

  /** Requests handed to the backend and not answered yet (device state to migrate). */
  get inFlight(): number {
    return this.inflight.size;
  }

  /** Answers held back while suspended, to be pushed used on resume. */
  get heldCompletions(): number {
    return this.held.size;
  }

  /** Backend operations that threw, rejected or answered garbage (each answered IOERR). */
  get backendFaults(): number {
    return this.backendErrors;
  }

  /** Resolves once no request is in flight. */
  drain(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  override setVqNum(idx: number, num: number): void {
    super.setVqNum(idx, num);
    if (idx === 0 && num !== this.ringCfg.num) {
      this.ringCfg = { ...this.ringCfg, num };
      this.ringId = {};
    }
  }

  override setVqAddress(idx: number, descArea: number | bigint, driverArea: number | bigint, deviceArea: number | bigint): void {
    super.setVqAddress(idx, descArea, driverArea, deviceArea);
    if (idx !== 0) return;
    const [desc, driver, device] = [BigInt(descArea), BigInt(driverArea), BigInt(deviceArea)];
    const c = this.ringCfg;
    if (desc !== c.desc || driver !== c.driver || device !== c.device) {
      this.ringCfg = { num: c.num, desc, driver, device };
      this.ringId = {};
    }
  }

  protected override vqType(): string {
    return 'req';
  }

  protected override onReset(): void {
    // Answers that arrive after a reset are dropped (their chains belong to the old rings).
    // Held answers are settled: their read buffers go back now; a request still at the backend
    // keeps its buffer until it settles (finishAsync).
    // (Fields are not set yet when the base constructor resets.)
    if (this.inflight) for (let r = this.inflight.takeAll(); r !== null; r = r.next) r.at = At.DROPPED;
    if (this.held) this.dropAll(this.held.takeAll());
    this.replaying = false;
    if (this.fence?.timer) clearTimeout(this.fence.timer);
    if (this.fence) this.dropAll(this.fence.held.takeAll());
    this.fence = null;
    this.ringId = {};
    this.ringCfg = { num: 0, desc: 0n, driver: 0n, device: 0n };
    for (const w of this.drainWaiters?.splice(0) ?? []) w();
  }

  protected override datapath(budget: number): number {
    const q = this.queue(0);
    if (!q) return 0;
    if (this.held.size) queueMicrotask(() => this.deliverHeld()); // resumed: answers held while suspended
    // The flag word depends only on the negotiated features: computed once per negotiation,
    // not per kick (BigInt feature tests allocate).
    const f = this.getDriverFeatures();
    if (f !== this.flagsFor) {
      this.flagsFor = f;
      this.flags = (this.readOnly ? BLK_FLAG.RO : 0) | (hasFeature(f, VIRTIO_BLK_F_DISCARD) ? BLK_FLAG.DISCARD : 0) |
        (hasFeature(f, VIRTIO_BLK_F_WRITE_ZEROES) ? BLK_FLAG.WRITE_ZEROES : 0) | (this.segMax << BLK_FLAG.SEG_SHIFT);
    }
    const flags = this.flags;
    const cap = this.capacity;
    const capLo = cap % 2 ** 32;
    const capHi = Math.floor(cap / 2 ** 32);
    const x = this.platform.exports;
    let done = 0;
    // A migration's destination first re-submits what the source had in flight: all of it, in
    // batches, whatever the budget (they were popped already; a suspend right after the resume
    // must find them at the backend, not still in a list).
    while (this.replaying && this.backend) {
      const n = this.repopBatch(q, this.batch);
      this.startParsed(q, n, capLo, capHi, flags, true);
      done += n;
    }
    while (done < budget) {
      const n = this.popOrRearm(q, Math.min(this.batch, budget - done));
      if (n === 0) break;
      if (this.backend) this.startParsed(q, n, capLo, capHi, flags, false);
      else {
        x.blk_serve(q.chainsAddr, n, q.segsAddr, this.disk, capLo, capHi, flags, this.id, this.scratch);
        q.pushPopped(n);
      }
      done += n;
    }
    return done;
  }

  /**
   * The popped (or re-popped, `replayed`) chains 0..n-1 with a backend: one wasm call validates
   * the batch and answers what needs no backend; the rest start at the backend.
   */
  private startParsed(q: DeviceQueue, n: number, capLo: number, capHi: number, flags: number, replayed: boolean): void {
    this.platform.exports.blk_parse(q.chainsAddr, n, q.segsAddr, capLo, capHi, flags, this.id, this.recs, this.ranges, this.scratch);
    for (let i = 0; i < n; i++) this.startAsync(q, i, replayed);
    q.flushUsed();
  }

  /** Executes popped chain i's blk_parse record: completes it now, or starts the backend. */
  private startAsync(q: DeviceQueue, i: number, replayed = false): void {
    const u32 = this.platform.u32;
    const rec = (this.recs >> 2) + (BLK_REQ.REC >> 2) * i;
    const id = q.chainId(i);
    const ndesc = q.chainDescs(i);
    if (q.stagedCompletions >= q.batch) q.flushUsed();
    if (u32[rec + (BLK_REQ.ACTION >> 2)] !== BLK_REQ.ACT_BACKEND) {
      q.complete(id, ndesc, q.written(i));
      return;
    }
    const type = u32[rec + (BLK_REQ.TYPE >> 2)]!;
    const sector = u32[rec + (BLK_REQ.SECTOR >> 2)]! + u32[rec + (BLK_REQ.SECTOR >> 2) + 1]! * 2 ** 32;
    const bytes = u32[rec + (BLK_REQ.BYTES >> 2)]!;
    const statusAt = u32[rec + (BLK_REQ.STATUS_AT >> 2)]!;
    const req = this.takeReq();
    const segs = q.chainSegments(i, req.segs);
    req.q = q;
    req.ring = this.ringId;
    req.id = id;
    req.ndesc = ndesc;
    req.gen = q.iotlb.generation;
    req.statusAddr = byteAt(segs, 2 + 2 * segs[0]!, segs[1]!, statusAt);
    req.segs = segs;
    req.type = type;
    req.bytes = bytes;
    req.fenced = replayed && type !== VIRTIO_BLK_T_IN && this.fence !== null ? 1 : 0;
    req.recOk = false;
    req.recGen = -1;
    if (req.fenced) this.armFence();
    const b = this.backend!;
    let op: unknown;
    // A backend method that throws answers IOERR like one that rejects (no closure per call).
    try {
      switch (type) {
        case VIRTIO_BLK_T_IN:
          if (b.readInto) {
            req.readBuf = this.outBuffer(bytes, req);
            op = b.readInto(sector, req.readBuf);
          } else op = b.read(sector, bytes);
          break;
        case VIRTIO_BLK_T_OUT:
          // Gathered now, under the map the buffers were translated with; bounded by
          // size_max × seg_max and by the disk (blk_parse refused anything longer).
          op = b.write(sector, gather(this.platform.u8, segs, 2, segs[0]!, 16, this.outBuffer(bytes, req)));
          break;
        case VIRTIO_BLK_T_FLUSH:
          op = b.flush();
          break;
        default:
          op = this.startRanges(rec, type === VIRTIO_BLK_T_WRITE_ZEROES);
      }
    } catch (e) {
      op = Promise.reject(e);
    }
    this.inflight.push(req, At.OUT);
    if (type !== VIRTIO_BLK_T_IN) this.outstanding++;
    // (Promise.resolve of a native promise is that promise: nothing allocated.)
    Promise.resolve(op).then(req.onOk, req.onFail);
  }

  /**
   * DISCARD / WRITE_ZEROES of blk_parse record `rec`: the ranges it validated and copied to
   * private memory, each to the backend; settles once every range has (a migration waits for
   * the backend to go idle). (Its own method: startAsync keeps no closure, so no context is
   * allocated per request.)
   */
  private startRanges(rec: number, wz: boolean): Promise<void> {
    const b = this.backend!;
    const u32 = this.platform.u32;
    const v = this.platform.view;
    const r0 = this.ranges + u32[rec + (BLK_REQ.RANGE0 >> 2)]! * BLK_REQ.RANGE_REC;
    const n = u32[rec + (BLK_REQ.NRANGES >> 2)]!;
    const ops: Promise<unknown>[] = [];
    for (let k = 0; k < n; k++) {
      const o = r0 + k * BLK_REQ.RANGE_REC;
      const s = Number(v.getBigUint64(o, true));
      const cnt = v.getUint32(o + 8, true);
      const unmap = (v.getUint32(o + 12, true) & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0;
      ops.push(call(() => {
        if (!wz && b.discard) return b.discard(s, cnt);
        if (b.writeZeroes) return b.writeZeroes(s, cnt, unmap);
        return writeZeroChunks(b, s, cnt);
      }));
    }
    return Promise.allSettled(ops).then((rs) => {
      for (const r of rs) if (r.status === 'rejected') throw r.reason;
    });
  }

  /** A request record: from the pool, or a new one. */
  private takeReq(): InFlight {
    const r = this.pool;
    if (r === null) return this.newReq();
    this.pool = r.next;
    this.pooled--;
    r.next = null;
    return r;
  }

  /**
   * A new request record with its settle callbacks. (Its own method: closures in takeReq would
   * make V8 allocate takeReq's context on every call, the pool's hits included.)
   */
  private newReq(): InFlight {
    const req: InFlight = {
      q: null as unknown as DeviceQueue, ring: this.ringId, id: 0, ndesc: 0, gen: 0, statusAddr: 0, segs: new Uint32Array(8), type: 0, bytes: 0,
      fenced: 0, recOk: false, recGen: -1, slab: null, readBuf: null, status: 0, data: null, at: At.FREE, prev: null, next: null,
      onOk: (answer) => this.settled(req, true, answer),
      onFail: () => this.settled(req, false, undefined),
    };
    return req;
  }

  /** Request `r` is done (settled, and answered or dropped): its slab region goes back, and the record to the pool. */
  private dropReq(r: InFlight): void {
    this.releaseSlab(r);
    r.at = At.FREE;
    r.readBuf = null;
    r.data = null;
    r.prev = null;
    if (this.pooled >= REQS_KEPT) {
      r.next = null;
      return;
    }
    r.next = this.pool;
    this.pool = r;
    this.pooled++;
  }

  /** dropReq for `r` and every record after it through `next` (a list taken whole). */
  private dropAll(r: InFlight | null): void {
    while (r !== null) {
      const next = r.next;
      this.dropReq(r);
      r = next;
    }
  }

  /** The backend settled request `r`'s operation: fulfilled (`ok`) with `answer`, or rejected. Never throws. */
  private settled(r: InFlight, ok: boolean, answer: unknown): void {
    if (r.type !== VIRTIO_BLK_T_IN) this.backendSettled(r);
    let status = VIRTIO_BLK_S_OK;
    let data: Uint8Array | null = null;
    if (!ok) status = VIRTIO_BLK_S_IOERR;
    else if (r.type === VIRTIO_BLK_T_IN) {
      const d = r.readBuf ?? answer;
      // Exactly the bytes asked, as bytes: a short read would hand the driver stale memory.
      if (d instanceof Uint8Array && d.length === r.bytes) data = d;
      else status = VIRTIO_BLK_S_IOERR;
    }
    if (status !== VIRTIO_BLK_S_OK) this.backendErrors++;
    this.finishAsync(r, status, data);
  }

  /**
   * A region of `len` bytes for write data or a read's buffer, cut from a 256 KiB slab (no
   * allocation per request): the backend's until its promise settles (BlkBackend.write,
   * readInto), and a read's until its answer is used. `req` holds the slab, and a slab no
   * request holds a region of is cut again from its start. A longer request gets its own array.
   */
  private outBuffer(len: number, req: InFlight): Uint8Array {
    if (len > OUT_SLAB / 4) return new Uint8Array(len);
    let slab = this.outSlab;
    if (slab !== null && slab.live === 0) this.outSlabAt = 0; // every region settled: start over
    if (slab === null || this.outSlabAt + len > OUT_SLAB) {
      // The full slab goes back to the pool with its last region (releaseSlab).
      slab = this.freeSlabs.pop() ?? { buf: new Uint8Array(OUT_SLAB), live: 0, views: new Map() };
      this.outSlab = slab;
      this.outSlabAt = 0;
    }
    const at = this.outSlabAt;
    let r = slab.views.get(at);
    if (r === undefined || r.length !== len) {
      r = slab.buf.subarray(at, at + len);
      if (slab.views.size < SLAB_VIEWS_KEPT || slab.views.has(at)) slab.views.set(at, r);
    }
    // Regions start 8-byte aligned (a backend may view them as wider words).
    this.outSlabAt += (len + 7) & ~7;
    slab.live++;
    req.slab = slab;
    return r;
  }

  /**
   * Request `req` is done with its slab region (a write's data once the backend settled; a
   * read's buffer once its answer is used or dropped, after the backend settled): a slab left
   * with no region, and not the one being cut, is kept for reuse. Once per request.
   */
  private releaseSlab(req: InFlight): void {
    const slab = req.slab;
    if (slab === null) return;
    req.slab = null;
    if (--slab.live === 0 && slab !== this.outSlab && this.freeSlabs.length < OUT_SLABS_KEPT) this.freeSlabs.push(slab);
  }

  /** A backend write (flush, discard, write-zeroes) settled (counted across resets: the backend does not know of them). */
  private backendSettled(req: InFlight): void {
    this.releaseSlab(req);
    if (--this.outstanding === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Resolves once every operation that changes the disk (write, flush, discard, write-zeroes)
   * this device started at its backend has settled — also those of requests a reset or
   * destroy() dropped, and also after destroy(): what a migration's destination waits for
   * before it completes the writes it re-submitted ({@link releaseFence}). Reads are not
   * waited for (a late read changes nothing). Never rejects.
   */
  writesIdle(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /**
   * Migration destination: the writes (flushes, discards, write-zeroes) it re-submitted from
   * the source's state complete now — call it once the source's backend is idle
   * ({@link writesIdle}), so the source's own copy of each has landed and cannot land over a
   * later write. `migrate()` and `migrateBetweenWorkers()` call it. Without it, they complete
   * with IOERR suspendTimeoutMs after the first was re-submitted (the driver then knows those
   * blocks are undefined). With `id`, only the fence {@link fenceId} named (a late call for a
   * fence the device no longer holds, after a reset and a new load, must not open the new
   * one). Does nothing without such a fence, or on a deleted device.
   */
  releaseFence(id?: number): void {
    if (this.isDestroyed || this.fence === null || (id !== undefined && id !== this.fence.id)) return;
    this.openFence(0);
  }

  /** The fence this device holds (a positive integer), or 0: what {@link releaseFence} may name. */
  get fenceId(): number {
    return this.fence?.id ?? 0;
  }

  /** Requests re-submitted by a migration and waiting for {@link releaseFence}. */
  get fencedRequests(): number {
    let n = this.fence?.held.size ?? 0;
    for (let r = this.inflight.head; r !== null; r = r.next) if (r.fenced === 1) n++;
    return n;
  }

  /** Starts the fence's timeout at the first re-submitted write. */
  private armFence(): void {
    const f = this.fence!;
    if (f.timer !== null) return;
    f.timer = setTimeout(() => {
      if (this.fence === f) this.openFence(2);
    }, this.suspendTimeout);
  }

  /** Opens the fence: held fenced answers go out (with IOERR after a timeout, `to` = 2). */
  private openFence(to: 0 | 2): void {
    const f = this.fence!;
    this.fence = null;
    if (f.timer !== null) clearTimeout(f.timer);
    for (let r = this.inflight.head; r !== null; r = r.next) if (r.fenced === 1) r.fenced = to;
    for (let r = f.held.takeAll(); r !== null;) {
      const next = r.next;
      r.fenced = to;
      if (to === 2) r.status = VIRTIO_BLK_S_IOERR;
      this.held.push(r, At.HELD);
      r = next;
    }
    this.deliverHeld();
    this.workProgress();
  }

  /**
   * A backend answered: complete the chain. While the device is suspended the answer is held
   * (a suspended device writes nothing) and delivered on resume; after a reset it is dropped.
   * Runs in a microtask: never throws.
   */
  private finishAsync(r: InFlight, status: number, data: Uint8Array | null): void {
    if (r.at !== At.OUT) {
      this.dropReq(r); // dropped (a reset since): the backend is done with its buffer
      return;
    }
    this.inflight.remove(r);
    r.status = r.fenced === 2 ? VIRTIO_BLK_S_IOERR : status;
    r.data = data;
    // A re-submitted write done here completes once the source's copy has landed.
    if (r.fenced === 1 && this.fence !== null) this.fence.held.push(r, At.FENCED);
    else {
      this.held.push(r, At.HELD);
      this.deliverHeld();
    }
    if (this.inflight.size === 0) for (const w of this.drainWaiters.splice(0)) w();
    this.workProgress(); // a suspend waiting for requests in flight (sim-core quiesce)
  }

  /**
   * Answers held while suspended go out now — also when the driver asked for SUSPEND while the
   * VMM had the device stopped: the suspend waits for exactly these.
   */
  protected override onResume(): void {
    if (this.held.size) queueMicrotask(() => this.deliverHeld());
  }

  /**
   * Requests a suspend must finish first: in flight at the backend, or answered and not yet
   * used. With `record` (a migration's suspend) only those a state cannot carry: a request of a
   * ring replaced since its pop, one whose buffers the map no longer gives (it cannot be named
   * by IOVA), and a write this device re-submitted for an earlier migration that still waits
   * for its fence. The rest move as records and the destination re-submits them: reads at
   * once; writes, flushes, discards and write-zeroes too, but their completion waits until the
   * source's backend is idle ({@link releaseFence}), so the source's own copy cannot land over
   * a write the driver makes after seeing the first one complete.
   */
  protected override pendingWork(record: boolean): number {
    const fenced = this.fence?.held.size ?? 0;
    const unreplayed = this.replaying ? this.replay!.count - this.replayAt : 0;
    if (!record) return this.inflight.size + this.held.size + fenced + unreplayed;
    const q = this.queue(0);
    // Re-submitted writes still waiting for their source cannot move on: another destination
    // would not wait for that source. Nor can requests loaded and not yet re-submitted (a
    // device saved before it ever ran) while the fence is closed: some may be writes.
    let n = fenced + (this.fence !== null ? unreplayed : 0);
    for (let r = this.inflight.head; r !== null; r = r.next) if (!this.recordable(r, q)) n++;
    for (let r = this.held.head; r !== null; r = r.next) if (!this.recordable(r, q)) n++;
    return n;
  }

  /**
   * A request a migration can carry: of the current ring, not a flush (a flush covers the
   * writes completed at *this* backend: it runs here), not waiting for a fence, and nameable
   * by IOVA under the map in force (DeviceQueue.record, once per map generation: the save
   * uses the same answer; nothing is allocated).
   */
  private recordable(r: InFlight, q: DeviceQueue | null): boolean {
    if (r.fenced === 1 || r.type === VIRTIO_BLK_T_FLUSH || q === null || r.ring !== this.ringId || r.q.iotlb !== q.iotlb) return false;
    const gen = q.iotlb.generation;
    if (r.recGen !== gen) {
      r.recOk = q.recordable(r.segs);
      r.recGen = gen;
    }
    return r.recOk;
  }

  protected override saveRequests(): RecordedChains {
    const out = (this.saved ??= new RecordedChains(16, 48));
    out.clear();
    this.savedAll = this.savedWrites = 0;
    const q = this.queue(0);
    if (!q) return out;
    // Only recordable requests are left (a save checks pendingWork(true) first), in pop order.
    for (let r = this.inflight.head; r !== null; r = r.next) this.saveOne(out, r, q);
    for (let r = this.held.head; r !== null; r = r.next) this.saveOne(out, r, q);
    // Loaded and not re-submitted yet (saved before it ever ran; the fence is open, or the
    // check above refused): already by IOVA, they pass through.
    if (this.replaying) out.append(this.replay!, this.replayAt);
    this.savedAll = out.count;
    return out;
  }

  /** Records request `r` into `out` (saveRequests). */
  private saveOne(out: RecordedChains, r: InFlight, q: DeviceQueue): void {
    if (!this.recordable(r, q) || !q.recordInto(out, 0, r.id, r.ndesc, r.segs)) {
      throw new VirtioError(Code.Internal, `${this.name}: request ${r.id} cannot be recorded after the save's check`);
    }
    if (r.type !== VIRTIO_BLK_T_IN) this.savedWrites++;
  }

  /**
   * Of the last save's requests in flight: how many it carried, and how many of those are
   * writes, flushes, discards or write-zeroes (known by type; requests passed through unparsed
   * from an earlier load are counted in `all` only).
   */
  get lastSavedRequests(): SavedRequests {
    return { all: this.savedAll, writes: this.savedWrites };
  }

  protected override checkRequests(reqs: RecordedChains, nums: readonly number[]): string | null {
    const count = reqs.count;
    if (count === 0) return null;
    if (!this.backend) return 'a RAM disk has no requests in flight';
    const num = nums[0] ?? 0;
    if (count > num) return `${count} requests in flight on a queue of ${num}`;
    // Nothing allocated per request (a switchover checks up to a queue's worth of them).
    if (this.idsSeen === null || this.idsSeen.length < num) this.idsSeen = new Uint8Array(num);
    const seen = this.idsSeen;
    seen.fill(0, 0, num);
    let segs = 0;
    for (let k = 0; k < count; k++) {
      if (reqs.vq(k) !== 0) return `request ${k} is not on queue 0`;
      const id = reqs.id(k);
      if (id >= num || seen[id] !== 0) return `request ${k}: id ${id} is not a distinct buffer of a size-${num} queue`;
      seen[id] = 1;
      const ndesc = reqs.ndesc(k);
      if (ndesc < 1 || ndesc > num) return `request ${k}: ndesc ${ndesc} is outside 1..${num}`;
      const np = reqs.pieces(k);
      const nread = reqs.nread(k);
      if (nread < 1 || nread >= np) return `request ${k} needs readable and writable pieces (nread ${nread} of ${np})`;
      let bytes = 0;
      for (let j = 0; j < np; j++) {
        const iova = reqs.iova(k, j);
        const len = reqs.len(k, j);
        if (!Number.isSafeInteger(iova) || iova < 0) return `request ${k}: a piece's IOVA is not an integer in 0..2^53-1`;
        if (!Number.isInteger(len) || len < 1 || len > 0xffffffff) return `request ${k}: a piece's length ${len} is outside 1..2^32-1`;
        bytes += len;
      }
      if (bytes > 0xffffffff) return `request ${k} has more than 2^32-1 bytes`;
      segs += np;
    }
    if (segs > 0xffff) return `the requests in flight have ${segs} pieces (at most 65535)`;
    return null;
  }

  /** Keeps a copy of the checked list (a caller changing its own afterwards changes nothing here). */
  protected override loadRequests(reqs: RecordedChains): void {
    // Writes among them complete only once released (the fence's timeout starts at the first).
    this.fence = reqs.count > 0 ? { id: ++fences, timer: null, held: new ReqList() } : null;
    const list = (this.replay ??= new RecordedChains(16, 48));
    list.clear();
    list.append(reqs);
    this.replaying = list.count > 0;
    this.replayAt = 0;
  }

  /** Re-pops the next recorded requests, as many as fit one pop's chain and segment records. */
  private repopBatch(q: DeviceQueue, max: number): number {
    const list = this.replay!;
    let n = 0;
    let segs = 0;
    while (n < max && this.replayAt + n < list.count) {
      const k = list.pieces(this.replayAt + n);
      if (n > 0 && segs + k > q.maxSegs) break;
      segs += k;
      n++;
    }
    const from = this.replayAt;
    this.replayAt += n;
    if (this.replayAt >= list.count) this.replaying = false;
    return q.repop(list, from, n);
  }

  /** Pushes held answers used, if the device is running. Never throws (called from microtasks). */
  private deliverHeld(): void {
    const q = this.queue(0);
    if (!q || !this.canComplete || this.held.size === 0) return;
    // Taken whole (answers that arrive meanwhile start a new list), not copied out. The pass
    // walks `delivering` (a nested delivery, from something the pass called, keeps its own).
    const outer = this.delivering;
    this.delivering = this.held.takeAll();
    try {
      this.runDatapath(this.deliverPassFn);
      this.workProgress(); // a suspend waiting for these answers
    } catch {
      // Anything unexpected while pushing used: the queue can no longer be trusted.
      q.markUnmapped();
      try {
        this.runDatapath(() => 0);
      } catch {
        /* nothing more can be done from a microtask */
      }
    } finally {
      // What a broken queue left unanswered is dropped (and its records reused).
      this.dropAll(this.delivering);
      this.delivering = outer;
    }
  }

  /** The pass of {@link deliverHeld}, made once (a closure per delivery would be an allocation per answer). */
  private readonly deliverPassFn = (): number => this.deliverPass();

  /** Pushes the answers of `delivering` used; returns how many. */
  private deliverPass(): number {
    const q = this.queue(0)!;
    let k = 0;
    while (this.delivering !== null) {
      const a = this.delivering;
      // A chain of another ring (resized, moved, or reset since): not ours to answer. The
      // same ring disabled and enabled again (same size, addresses and map) gets it.
      if (a.ring !== this.ringId || a.q.iotlb !== q.iotlb) {
        this.delivering = a.next;
        this.dropReq(a);
        continue;
      }
      // (Taken off the list only after: an answer that throws leaves it there, for
      // deliverHeld's finally to drop with the rest, its slab region released.)
      const written = this.answer(a);
      this.delivering = a.next;
      const id = a.id;
      const ndesc = a.ndesc;
      this.dropReq(a); // its data is in the driver's buffers (or never will be)
      if (written < 0) {
        // The status byte is no longer ours to write: the request cannot be answered, nor
        // can the rest. They are dropped now, before the end of the pass runs callbacks: a
        // suspend waiting for answers would otherwise find them counted nowhere.
        this.dropAll(this.delivering);
        this.delivering = null;
        q.flushUsed();
        q.markUnmapped();
        return k;
      }
      if (q.stagedCompletions >= q.batch) q.flushUsed();
      q.complete(id, ndesc, written);
      k++;
    }
    q.flushUsed();
    return k;
  }

  /**
   * Writes an answer into driver memory, checked against the map in force now. Returns the
   * written length for the used entry, or -1 if the status byte is no longer writable.
   */
  private answer(req: InFlight): number {
    const a = req;
    const tlb = req.q.iotlb;
    const stale = tlb.generation !== req.gen;
    if (stale && !tlb.allows(req.statusAddr, 1, PERM_W)) return -1;
    const u8 = this.platform.u8;
    let status = a.status;
    let written = 0;
    const ex = this.platform.exports;
    const segs = req.segs;
    if (a.data) {
      // The first `bytes` writable bytes take the data (the status byte follows them).
      const w0 = 2 + 2 * segs[0]!;
      const wEnd = w0 + 2 * segs[1]!;
      if (stale && !dataAllowed(tlb, segs, w0, wEnd, req.bytes)) status = VIRTIO_BLK_S_IOERR;
      else {
        let left = req.bytes;
        for (let k = w0; k < wEnd && left > 0; k += 2) {
          const n = Math.min(segs[k + 1]!, left);
          // (The whole answer into one segment, the usual case, needs no view of it.)
          u8.set(written === 0 && n === a.data.length ? a.data : a.data.subarray(written, written + n), segs[k]!);
          ex.dirty_mark(segs[k]!, n); // written outside the pass that popped it (assembly/dirty.ts)
          written += n;
          left -= n;
        }
      }
    }
    u8[req.statusAddr] = status;
    ex.dirty_mark(req.statusAddr, 1);
    return written + 1;
  }
}

/** Bytes of a slab write data is cut from (VdpaSimBlk.outBuffer). */
const OUT_SLAB = 256 * 1024;
/** Settled slabs a device keeps for reuse (1 MiB); more are left to the GC. */
const OUT_SLABS_KEPT = 4;
/** Views of its regions a slab keeps for reuse (OutSlab.views): 64 regions of 4 KiB fill a slab. */
const SLAB_VIEWS_KEPT = 256;
/** Request records a device keeps for reuse (InFlight); more are left to the GC. */
const REQS_KEPT = 1024;

/** Fence ids, counted in this realm (releaseFence names one). */
let fences = 0;

/** Calls a backend method: a synchronous throw becomes a rejection, a non-promise a value. */
function call(fn: () => unknown): Promise<unknown> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Writes zeroes through a backend without writeZeroes, 256 sectors at a time. */
async function writeZeroChunks(b: BlkBackend, sector: number, count: number): Promise<void> {
  const chunk = new Uint8Array(Math.min(count, 256) * SECTOR_SIZE);
  for (let s = sector; s < sector + count; s += 256) {
    const n = Math.min(256, sector + count - s);
    await b.write(s, n === 256 ? chunk : chunk.subarray(0, n * SECTOR_SIZE));
  }
}

/**
 * Copies `out.length` bytes, starting `from` bytes in, of the `n` segments at segs[k0..]
 * (offset, length pairs: DeviceQueue.chainSegments) into `out`; returns it.
 */
function gather(u8: Uint8Array, segs: Uint32Array, k0: number, n: number, from: number, out: Uint8Array): Uint8Array {
  const len = out.length;
  let o = 0;
  for (let k = k0; k < k0 + 2 * n && o < len; k += 2) {
    const addr = segs[k]!;
    const sl = segs[k + 1]!;
    if (from >= sl) {
      from -= sl;
      continue;
    }
    const c = Math.min(sl - from, len - o);
    out.set(u8.subarray(addr + from, addr + from + c), o);
    from = 0;
    o += c;
  }
  return out;
}

/** Memory offset of byte `at` of the `n` segments at segs[k0..], or -1. */
function byteAt(segs: Uint32Array, k0: number, n: number, at: number): number {
  for (let k = k0; k < k0 + 2 * n; k += 2) {
    if (at < segs[k + 1]!) return segs[k]! + at;
    at -= segs[k + 1]!;
  }
  return -1;
}

/** True if the first `bytes` bytes of the segments segs[k0..kEnd) are writable under `tlb` now. */
function dataAllowed(tlb: DeviceQueue['iotlb'], segs: Uint32Array, k0: number, kEnd: number, bytes: number): boolean {
  for (let k = k0; k < kEnd && bytes > 0; k += 2) {
    const n = Math.min(segs[k + 1]!, bytes);
    if (!tlb.allows(segs[k]!, n, PERM_W)) return false;
    bytes -= n;
  }
  return true;
}

