// vdpasim_blk (Linux drivers/vdpa/vdpa_sim/vdpa_sim_blk.c): a virtio-blk device (VIRTIO 1.3
// §5.2) over a RAM disk in the platform memory. Requests: IN, OUT, FLUSH, GET_ID; any other
// type answers UNSUPP, a malformed or out-of-range request answers IOERR.

import { VirtioError, Code } from '../errors.ts';
import { VdpaSim, features } from './sim-core.ts';
import type { Platform } from '../platform/platform.ts';
import type { Chain, DeviceQueue, Segment } from '../ring/device-queue.ts';
import {
  VIRTIO_ID_BLOCK, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_ACCESS_PLATFORM,
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
// geometry @16, le32 blk_size @20, … 60 bytes through write_zeroes_may_unmap + padding.
const CFG_CAPACITY = 0;
const CFG_SEG_MAX = 12;
const CFG_BLK_SIZE = 20;
const CFG_SIZE = 60;

/** Features vdpasim_blk offers (VIRTIO_BLK_F_RO is added for read-only devices). */
export const VDPASIM_BLK_FEATURES: bigint = features(
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED,
);

/** Options of {@link VdpaSimBlk}. */
export interface VdpaSimBlkOptions {
  /** Device name. */
  name: string;
  /** Disk size in 512-byte sectors. @default 8192 (4 MiB) */
  capacity?: number;
  /** Read-only disk (VIRTIO_BLK_F_RO). @default false */
  readOnly?: boolean;
  /** Offered features. @default VDPASIM_BLK_FEATURES (+ RO) */
  deviceFeatures?: bigint;
}

/** A simulated virtio-blk device with a RAM disk. */
export class VdpaSimBlk extends VdpaSim {
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Memory offset of the RAM disk. */
  readonly disk: number;
  /** True for a read-only disk. */
  readonly readOnly: boolean;
  /** Memory offset of the 20-byte GET_ID string. */
  private readonly id: number;

  constructor(platform: Platform, opts: VdpaSimBlkOptions) {
    const capacity = opts.capacity ?? 8192;
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new VirtioError(Code.InvalidArgument, `capacity ${capacity} must be a positive number of sectors`);
    const ro = opts.readOnly ?? false;
    const offered = opts.deviceFeatures ?? (VDPASIM_BLK_FEATURES | (ro ? 1n << BigInt(VIRTIO_BLK_F_RO) : 0n));
    super(platform, { name: opts.name, deviceId: VIRTIO_ID_BLOCK, supportedFeatures: offered, nvqs: 1, configSize: CFG_SIZE });
    this.capacity = capacity;
    this.readOnly = ro;
    this.disk = platform.ram.alloc(capacity * SECTOR_SIZE, 4096);
    platform.u8.fill(0, this.disk, this.disk + capacity * SECTOR_SIZE);
    this.configView.setBigUint64(CFG_CAPACITY, BigInt(capacity), true);
    this.configView.setUint32(CFG_SEG_MAX, this.getVqNumMax() - 2, true);
    this.configView.setUint32(CFG_BLK_SIZE, SECTOR_SIZE, true);
    this.id = platform.priv.alloc(VIRTIO_BLK_ID_BYTES, 4);
    platform.u8.fill(0, this.id, this.id + VIRTIO_BLK_ID_BYTES);
    platform.u8.set(new TextEncoder().encode(`vdpasim-${opts.name}`).subarray(0, VIRTIO_BLK_ID_BYTES), this.id);
  }

  protected override vqType(): string {
    return 'req';
  }

  protected override onDestroy(): void {
    this.platform.ram.release(this.disk);
    this.platform.priv.release(this.id);
  }

  protected override datapath(budget: number): number {
    const q = this.queue(0);
    if (!q) return 0;
    let done = 0;
    let rearmed = false;
    while (done < budget) {
      const n = q.pop(Math.min(this.batch, budget - done));
      if (n === 0) {
        // Re-arm the kick and look once more (vhost_enable_notify).
        if (!rearmed && q.enableKick()) {
          rearmed = true;
          continue;
        }
        break;
      }
      rearmed = false;
      for (let i = 0; i < n; i++) this.request(q.chain(i), i, q);
      q.pushPopped(n);
      done += n;
    }
    return done;
  }

  /** Serves one request chain and sets its written length. */
  private request(c: Chain, i: number, q: DeviceQueue): void {
    const u8 = this.platform.u8;
    // The status byte is the last writable byte; without one there is nothing to answer.
    if (c.writeBytes < 1) return;
    const status = lastByte(c.writable);
    const dataIn = trim(c.writable, c.writeBytes - 1);
    let written = 0;
    let st = VIRTIO_BLK_S_OK;
    if (c.readBytes < 16) {
      st = VIRTIO_BLK_S_IOERR;
    } else {
      const hdr = gather(u8, c.readable, 0, 16);
      const dv = new DataView(hdr.buffer);
      const type = dv.getUint32(0, true);
      const sector = dv.getBigUint64(8, true);
      const dataOut = skip(c.readable, 16);
      const outLen = c.readBytes - 16;
      const inLen = c.writeBytes - 1;
      const range = (len: number): number => {
        if (len % SECTOR_SIZE !== 0 || sector > BigInt(this.capacity) || BigInt(len / SECTOR_SIZE) > BigInt(this.capacity) - sector) return -1;
        return this.disk + Number(sector) * SECTOR_SIZE;
      };
      switch (type) {
        case VIRTIO_BLK_T_IN: {
          const at = range(inLen);
          if (at < 0) st = VIRTIO_BLK_S_IOERR;
          else {
            scatter(u8, dataIn, at, inLen);
            written = inLen;
          }
          break;
        }
        case VIRTIO_BLK_T_OUT: {
          const at = this.readOnly ? -1 : range(outLen);
          if (at < 0) st = VIRTIO_BLK_S_IOERR;
          else gatherInto(u8, dataOut, at);
          break;
        }
        case VIRTIO_BLK_T_FLUSH:
          break;
        case VIRTIO_BLK_T_GET_ID: {
          const n = Math.min(inLen, VIRTIO_BLK_ID_BYTES);
          scatter(u8, dataIn, this.id, n);
          written = n;
          break;
        }
        default:
          st = VIRTIO_BLK_S_UNSUPP;
      }
    }
    u8[status] = st;
    q.setWritten(i, written + 1);
  }
}

/** Memory offset of the last byte of a segment list. */
function lastByte(segs: Segment[]): number {
  for (let j = segs.length - 1; j >= 0; j--) if (segs[j]!.len > 0) return segs[j]!.addr + segs[j]!.len - 1;
  return -1;
}

/** The first `len` bytes of a segment list. */
function trim(segs: Segment[], len: number): Segment[] {
  const out: Segment[] = [];
  for (const s of segs) {
    if (len <= 0) break;
    const n = Math.min(s.len, len);
    out.push({ addr: s.addr, len: n });
    len -= n;
  }
  return out;
}

/** A segment list without its first `n` bytes. */
function skip(segs: Segment[], n: number): Segment[] {
  const out: Segment[] = [];
  for (const s of segs) {
    if (n >= s.len) {
      n -= s.len;
      continue;
    }
    out.push({ addr: s.addr + n, len: s.len - n });
    n = 0;
  }
  return out;
}

/** Copies `len` bytes at `from` of a segment list into a new array. */
function gather(u8: Uint8Array, segs: Segment[], from: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let o = 0;
  for (const s of skip(segs, from)) {
    const n = Math.min(s.len, len - o);
    out.set(u8.subarray(s.addr, s.addr + n), o);
    o += n;
    if (o === len) break;
  }
  return out;
}

/** Copies a segment list's bytes to memory at `dst`. */
function gatherInto(u8: Uint8Array, segs: Segment[], dst: number): void {
  for (const s of segs) {
    u8.copyWithin(dst, s.addr, s.addr + s.len);
    dst += s.len;
  }
}

/** Copies `len` bytes from memory at `src` into a segment list. */
function scatter(u8: Uint8Array, segs: Segment[], src: number, len: number): void {
  for (const s of segs) {
    if (len <= 0) break;
    const n = Math.min(s.len, len);
    u8.copyWithin(s.addr, src, src + n);
    src += n;
    len -= n;
  }
}
