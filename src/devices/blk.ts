// vdpasim_blk (Linux drivers/vdpa/vdpa_sim/vdpa_sim_blk.c): a virtio-blk device (VIRTIO 1.3
// §5.2). Two backends: a RAM disk in the platform memory, served entirely in wasm one batch
// at a time (assembly/dev/blk.ts), or an asynchronous BlkBackend (a file through Node's fs, a
// browser's OPFS or IndexedDB, anything) whose requests are tracked in flight and completed
// when the backend answers. Requests: IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES (with
// UNMAP); status OK, IOERR (malformed or out of range), UNSUPP (unknown or not negotiated).

import { VirtioError, Code } from '../errors.ts';
import { VdpaSim, features } from './sim-core.ts';
import type { Platform } from '../platform/platform.ts';
import type { Chain, DeviceQueue, Segment } from '../ring/device-queue.ts';
import {
  VIRTIO_ID_BLOCK, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED,
  VIRTIO_F_ACCESS_PLATFORM, hasFeature,
} from '../virtio/constants.ts';

// Request types and status values (linux/virtio_blk.h; VIRTIO 1.3 §5.2.6).
/** Read. */
export const VIRTIO_BLK_T_IN = 0;
/** Write. */
export const VIRTIO_BLK_T_OUT = 1;
/** Flush. */
export const VIRTIO_BLK_T_FLUSH = 4;
/** Get device id string. */
export const VIRTIO_BLK_T_GET_ID = 8;
/** Discard sectors. */
export const VIRTIO_BLK_T_DISCARD = 11;
/** Write zeroes. */
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
/** struct virtio_blk_discard_write_zeroes flags: unmap. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** Success. */
export const VIRTIO_BLK_S_OK = 0;
/** Device or driver error. */
export const VIRTIO_BLK_S_IOERR = 1;
/** Request unsupported. */
export const VIRTIO_BLK_S_UNSUPP = 2;
/** Bytes of the GET_ID string (VIRTIO_BLK_ID_BYTES). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Sector size of the request's `sector` field: always 512 (§5.2.6). */
export const SECTOR_SIZE = 512;

// struct virtio_blk_config (§5.2.4): le64 capacity @0, le32 size_max @8, le32 seg_max @12,
// geometry @16, le32 blk_size @20, topology @24, writeback @32, num_queues @34,
// le32 max_discard_sectors @36, max_discard_seg @40, discard_sector_alignment @44,
// le32 max_write_zeroes_sectors @48, max_write_zeroes_seg @52, u8 write_zeroes_may_unmap @56.
const CFG_CAPACITY = 0;
const CFG_SEG_MAX = 12;
const CFG_BLK_SIZE = 20;
const CFG_MAX_DISCARD_SECTORS = 36;
const CFG_MAX_DISCARD_SEG = 40;
const CFG_DISCARD_ALIGN = 44;
const CFG_MAX_WZ_SECTORS = 48;
const CFG_MAX_WZ_SEG = 52;
const CFG_WZ_MAY_UNMAP = 56;
const CFG_SIZE = 60;

/** Features vdpasim_blk offers (VIRTIO_BLK_F_RO is added for read-only devices). */
export const VDPASIM_BLK_FEATURES: bigint = features(
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED,
);

/** An asynchronous disk: sectors are 512 bytes. Rejections answer IOERR. */
export interface BlkBackend {
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Reads `len` bytes at `sector`. */
  read(sector: number, len: number): Promise<Uint8Array>;
  /** Writes `data` at `sector`. */
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
  /** Read-only disk (VIRTIO_BLK_F_RO). @default false */
  readOnly?: boolean;
  /** Offered features. @default VDPASIM_BLK_FEATURES (+ RO) */
  deviceFeatures?: bigint;
  /** An asynchronous backend instead of the RAM disk. */
  backend?: BlkBackend;
}

/** Largest discard / write-zeroes request, sectors, and segments per request. */
const MAX_DISCARD_SECTORS = 0xffff;
const MAX_DISCARD_SEG = 16;

interface InFlight {
  id: number;
  ndesc: number;
  writable: Segment[];
  inLen: number;
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
  /** Memory offset of the 20-byte GET_ID string. */
  private readonly id: number;
  private readonly scratch: number;
  private readonly inflight = new Set<InFlight>();
  /** Answers that came back while the device was suspended: delivered on resume. */
  private held: { req: InFlight; answer: () => number }[] = [];
  private drainWaiters: (() => void)[] = [];

  constructor(platform: Platform, opts: VdpaSimBlkOptions) {
    const backend = opts.backend ?? null;
    const capacity = backend ? backend.capacity : (opts.capacity ?? 8192);
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new VirtioError(Code.InvalidArgument, `capacity ${capacity} must be a positive number of sectors`);
    const ro = opts.readOnly ?? false;
    const offered = opts.deviceFeatures ?? (VDPASIM_BLK_FEATURES | (ro ? 1n << BigInt(VIRTIO_BLK_F_RO) : 0n));
    super(platform, { name: opts.name, deviceId: VIRTIO_ID_BLOCK, supportedFeatures: offered, nvqs: 1, configSize: CFG_SIZE });
    this.capacity = capacity;
    this.readOnly = ro || hasFeature(offered, VIRTIO_BLK_F_RO);
    this.backend = backend;
    if (backend) {
      this.disk = -1;
    } else {
      this.disk = platform.ram.alloc(capacity * SECTOR_SIZE, 4096);
      platform.u8.fill(0, this.disk, this.disk + capacity * SECTOR_SIZE);
    }
    const v = this.configView;
    v.setBigUint64(CFG_CAPACITY, BigInt(capacity), true);
    v.setUint32(CFG_SEG_MAX, this.getVqNumMax() - 2, true);
    v.setUint32(CFG_BLK_SIZE, SECTOR_SIZE, true);
    v.setUint32(CFG_MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS, true);
    v.setUint32(CFG_MAX_DISCARD_SEG, MAX_DISCARD_SEG, true);
    v.setUint32(CFG_DISCARD_ALIGN, 1, true);
    v.setUint32(CFG_MAX_WZ_SECTORS, MAX_DISCARD_SECTORS, true);
    v.setUint32(CFG_MAX_WZ_SEG, MAX_DISCARD_SEG, true);
    this.config[CFG_WZ_MAY_UNMAP] = 1;
    this.id = platform.priv.alloc(VIRTIO_BLK_ID_BYTES, 4);
    platform.u8.fill(0, this.id, this.id + VIRTIO_BLK_ID_BYTES);
    platform.u8.set(new TextEncoder().encode(`vdpasim-${opts.name}`).subarray(0, VIRTIO_BLK_ID_BYTES), this.id);
    this.scratch = platform.priv.alloc(16, 8);
  }

  /** Requests handed to the backend and not answered yet (device state to migrate). */
  get inFlight(): number {
    return this.inflight.size;
  }

  /** Answers held back while suspended, to be pushed used on resume. */
  get heldCompletions(): number {
    return this.held.length;
  }

  /** Resolves once no request is in flight. */
  drain(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  protected override vqType(): string {
    return 'req';
  }

  protected override onReset(): void {
    // Answers that arrive after a reset are dropped (their chains belong to the old rings).
    this.inflight?.clear();
    if (this.held) this.held = [];
    for (const w of this.drainWaiters?.splice(0) ?? []) w();
  }

  protected override onDestroy(): void {
    if (this.disk >= 0) this.platform.ram.release(this.disk);
    this.platform.priv.release(this.id);
    this.platform.priv.release(this.scratch);
  }

  protected override datapath(budget: number): number {
    const q = this.queue(0);
    if (!q) return 0;
    if (this.held.length) queueMicrotask(() => this.deliverHeld()); // resumed: answers held while suspended
    const f = this.getDriverFeatures();
    const flags = (this.readOnly ? 1 : 0) | (hasFeature(f, VIRTIO_BLK_F_DISCARD) ? 2 : 0) | (hasFeature(f, VIRTIO_BLK_F_WRITE_ZEROES) ? 4 : 0);
    let done = 0;
    while (done < budget) {
      const n = this.popOrRearm(q, Math.min(this.batch, budget - done));
      if (n === 0) break;
      if (this.backend) {
        for (let i = 0; i < n; i++) this.startAsync(q, q.chain(i), flags);
        q.flushUsed(); // requests answered at once (malformed ones)
      } else {
        const cap = this.capacity;
        this.platform.exports.blk_serve(q.chainsAddr, n, q.segsAddr, this.disk, cap % 2 ** 32, Math.floor(cap / 2 ** 32), flags, this.id, this.scratch);
        q.pushPopped(n);
      }
      done += n;
    }
    return done;
  }

  /** Parses one request for the async backend; answers at once if it is malformed. */
  private startAsync(q: DeviceQueue, c: Chain, flags: number): void {
    const u8 = this.platform.u8;
    if (c.writeBytes < 1) {
      q.complete(c.id, c.ndesc, 0);
      return;
    }
    const inLen = c.writeBytes - 1;
    const req: InFlight = { id: c.id, ndesc: c.ndesc, writable: c.writable, inLen };
    const answer = (status: number, data: Uint8Array | null) => {
      let written = 0;
      if (data) written = scatter(u8, req.writable, data, inLen);
      writeAt(u8, req.writable, inLen, status);
      return written + 1;
    };
    if (c.readBytes < 16) {
      q.complete(c.id, c.ndesc, answer(VIRTIO_BLK_S_IOERR, null));
      return;
    }
    const hdr = gather(u8, c.readable, 0, 16);
    const dv = new DataView(hdr.buffer);
    const type = dv.getUint32(0, true);
    const sector = Number(dv.getBigUint64(8, true));
    const outLen = c.readBytes - 16;
    const inRange = (count: number) => Number.isSafeInteger(sector) && sector <= this.capacity && count <= this.capacity - sector;
    const b = this.backend!;
    let op: Promise<Uint8Array | null> | null = null;
    let bad = VIRTIO_BLK_S_OK;
    switch (type) {
      case VIRTIO_BLK_T_IN:
        if (inLen % SECTOR_SIZE || !inRange(inLen / SECTOR_SIZE)) bad = VIRTIO_BLK_S_IOERR;
        else op = b.read(sector, inLen);
        break;
      case VIRTIO_BLK_T_OUT:
        if (flags & 1 || outLen % SECTOR_SIZE || !inRange(outLen / SECTOR_SIZE)) bad = VIRTIO_BLK_S_IOERR;
        else op = b.write(sector, gather(u8, c.readable, 16, outLen)).then(() => null);
        break;
      case VIRTIO_BLK_T_FLUSH:
        op = b.flush().then(() => null);
        break;
      case VIRTIO_BLK_T_GET_ID:
        op = Promise.resolve(u8.slice(this.id, this.id + Math.min(inLen, VIRTIO_BLK_ID_BYTES)));
        break;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const wz = type === VIRTIO_BLK_T_WRITE_ZEROES;
        if (!(flags & (wz ? 4 : 2))) bad = VIRTIO_BLK_S_UNSUPP;
        else if (flags & 1 || outLen === 0 || outLen % 16) bad = VIRTIO_BLK_S_IOERR;
        else {
          const segs = gather(u8, c.readable, 16, outLen);
          const sv = new DataView(segs.buffer);
          const ranges: [number, number, boolean][] = [];
          if (outLen / 16 > MAX_DISCARD_SEG) bad = VIRTIO_BLK_S_IOERR; // max_discard_seg / max_write_zeroes_seg
          for (let o = 0; o < outLen && bad === VIRTIO_BLK_S_OK; o += 16) {
            const s = Number(sv.getBigUint64(o, true));
            const n = sv.getUint32(o + 8, true);
            const fl = sv.getUint32(o + 12, true);
            if ((!wz && fl !== 0) || (wz && fl & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)) bad = VIRTIO_BLK_S_UNSUPP;
            else if (n > MAX_DISCARD_SECTORS || !(Number.isSafeInteger(s) && s <= this.capacity && n <= this.capacity - s)) bad = VIRTIO_BLK_S_IOERR;
            else ranges.push([s, n, (fl & 1) !== 0]);
          }
          if (bad === VIRTIO_BLK_S_OK) {
            op = Promise.all(ranges.map(([s, n, unmap]) => {
              if (!wz && b.discard) return b.discard(s, n);
              if (b.writeZeroes) return b.writeZeroes(s, n, unmap);
              return writeZeroChunks(b, s, n);
            })).then(() => null);
          }
        }
        break;
      }
      default:
        bad = VIRTIO_BLK_S_UNSUPP;
    }
    if (!op) {
      q.complete(c.id, c.ndesc, answer(bad, null));
      return;
    }
    this.inflight.add(req);
    op.then(
      (data) => this.finishAsync(req, () => answer(VIRTIO_BLK_S_OK, data)),
      () => this.finishAsync(req, () => answer(VIRTIO_BLK_S_IOERR, null)),
    );
  }

  /**
   * A backend answered: complete the chain. While the device is suspended the answer is held
   * (a suspended device writes nothing) and delivered on resume; after a reset it is dropped.
   */
  private finishAsync(req: InFlight, answer: () => number): void {
    if (!this.inflight.delete(req)) return;
    this.held.push({ req, answer });
    this.deliverHeld();
    if (this.inflight.size === 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  /** Pushes held answers used, if the device is running. */
  private deliverHeld(): void {
    const q = this.queue(0);
    if (!q || !this.running || this.held.length === 0) return;
    const list = this.held.splice(0);
    this.runDatapath(() => {
      for (const h of list) {
        q.complete(h.req.id, h.req.ndesc, h.answer());
        if (q.stagedCompletions >= q.batch) q.flushUsed();
      }
      return q.flushUsed();
    });
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

/** Copies `len` bytes at `from` of a segment list into a new array. */
function gather(u8: Uint8Array, segs: readonly Segment[], from: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let o = 0;
  for (const s of segs) {
    if (from >= s.len) {
      from -= s.len;
      continue;
    }
    const n = Math.min(s.len - from, len - o);
    out.set(u8.subarray(s.addr + from, s.addr + from + n), o);
    from = 0;
    o += n;
    if (o === len) break;
  }
  return out;
}

/** Copies `data` (at most `max` bytes) into a segment list; returns bytes copied. */
function scatter(u8: Uint8Array, segs: readonly Segment[], data: Uint8Array, max: number): number {
  let o = 0;
  const len = Math.min(data.length, max);
  for (const s of segs) {
    if (o >= len) break;
    const n = Math.min(s.len, len - o);
    u8.set(data.subarray(o, o + n), s.addr);
    o += n;
  }
  return o;
}

/** Writes one byte at offset `at` of a segment list. */
function writeAt(u8: Uint8Array, segs: readonly Segment[], at: number, v: number): void {
  for (const s of segs) {
    if (at < s.len) {
      u8[s.addr + at] = v;
      return;
    }
    at -= s.len;
  }
}
