// A virtio-blk driver (VIRTIO 1.3 §5.2, in the role of Linux drivers/block/virtio_blk.c) on a
// device bound through virtio_vdpa: Promise-based read/write/flush/getId with many requests in
// flight. Each request is a chain: 16-byte header (device-readable), data, 1 status byte
// (device-writable).

import { VirtioError, Code } from '../errors.ts';
import type { VdpaDevice } from '../bus/bus.ts';
import type { DriverQueue } from '../ring/driver-queue.ts';
import type { VirtioBinding, VirtioClassDriver } from './virtio-vdpa.ts';
import {
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_WRITE_ZEROES, featureBit, hasFeature,
} from '../virtio/constants.ts';
import {
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_ID_BYTES, SECTOR_SIZE,
} from '../devices/blk.ts';

/** Features this driver understands. */
export const VIRTIO_BLK_DRIVER_FEATURES: bigint = [
  VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_WRITE_ZEROES,
].reduce((f, b) => f | featureBit(b), 0n);

/** Options of {@link VirtioBlkDriver}. */
export interface VirtioBlkDriverOptions {
  /** Features to accept (masked with what the device offers). @default VIRTIO_BLK_DRIVER_FEATURES */
  features?: bigint;
}

interface Pending {
  type: number;
  mem: number;
  len: number;
  out: Uint8Array | null;
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

  constructor(dev: VdpaDevice, binding: VirtioBinding, opts: VirtioBlkDriverOptions = {}) {
    super();
    this.dev = dev;
    this.binding = binding;
    this.driverFeatures = opts.features ?? VIRTIO_BLK_DRIVER_FEATURES;
  }

  /** One request queue. */
  queueCount(): number {
    return 1;
  }

  /** Disk size in 512-byte sectors (virtio_blk_config.capacity). */
  get capacity(): number {
    const b = this.dev.getConfig(0, 8);
    return new DataView(b.buffer).getUint32(0, true) + new DataView(b.buffer).getUint32(4, true) * 2 ** 32;
  }

  /** Logical block size: blk_size with VIRTIO_BLK_F_BLK_SIZE, else 512. */
  get blockSize(): number {
    if (!hasFeature(this.binding.features, VIRTIO_BLK_F_BLK_SIZE)) return SECTOR_SIZE;
    return new DataView(this.dev.getConfig(20, 4).buffer).getUint32(0, true);
  }

  /** True if the device is read-only (VIRTIO_BLK_F_RO). */
  get readOnly(): boolean {
    return hasFeature(this.binding.features, VIRTIO_BLK_F_RO);
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
    this.dev.setVqCb(0, () => this.schedule());
  }

  stop(): void {
    const err = new VirtioError(Code.Cancelled, `${this.dev.name} was reset with the request in flight`);
    for (const p of this.inflight.values()) this.finish(p, err);
    for (const w of this.waiting.splice(0)) this.finish(w.p, err);
    this.inflight.clear();
    this.q = null;
  }

  /** Reads `buffer.length` bytes (a multiple of 512) from `sector` into `buffer`. */
  async read(sector: number, buffer: Uint8Array): Promise<void> {
    this.checkIo(sector, buffer.length);
    const data = await this.submit(VIRTIO_BLK_T_IN, sector, null, buffer.length);
    buffer.set(data!);
  }

  /** Writes `data` (a multiple of 512 bytes) at `sector`. */
  async write(sector: number, data: Uint8Array): Promise<void> {
    this.checkIo(sector, data.length);
    if (this.readOnly) throw new VirtioError(Code.FailedPrecondition, `${this.dev.name} is read-only`);
    await this.submit(VIRTIO_BLK_T_OUT, sector, data, 0);
  }

  /** Flushes the device's write cache (VIRTIO_BLK_T_FLUSH). */
  async flush(): Promise<void> {
    if (!hasFeature(this.binding.features, VIRTIO_BLK_F_FLUSH)) return; // no cache to flush (§5.2.6.2)
    await this.submit(VIRTIO_BLK_T_FLUSH, 0, null, 0);
  }

  /** Discards `count` sectors at `sector` (VIRTIO_BLK_T_DISCARD; needs VIRTIO_BLK_F_DISCARD). */
  async discard(sector: number, count: number): Promise<void> {
    await this.rangeCommand(VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_F_DISCARD, sector, count, false);
  }

  /** Writes zeroes over `count` sectors (VIRTIO_BLK_T_WRITE_ZEROES; `unmap` lets the device deallocate). */
  async writeZeroes(sector: number, count: number, unmap = false): Promise<void> {
    await this.rangeCommand(VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_F_WRITE_ZEROES, sector, count, unmap);
  }

  private async rangeCommand(type: number, bit: number, sector: number, count: number, unmap: boolean): Promise<void> {
    if (!hasFeature(this.binding.features, bit)) throw new VirtioError(Code.Unsupported, `feature bit ${bit} was not negotiated`);
    if (this.readOnly) throw new VirtioError(Code.FailedPrecondition, `${this.dev.name} is read-only`);
    if (!Number.isInteger(count) || count < 1 || count > 0xffffffff) throw new VirtioError(Code.InvalidArgument, `count ${count} must be 1..2^32-1`);
    this.checkIo(sector, count * SECTOR_SIZE);
    // struct virtio_blk_discard_write_zeroes { le64 sector; le32 num_sectors; le32 flags; }
    const seg = new Uint8Array(16);
    const v = new DataView(seg.buffer);
    v.setBigUint64(0, BigInt(sector), true);
    v.setUint32(8, count, true);
    v.setUint32(12, unmap ? 1 : 0, true);
    await this.submit(type, 0, seg, 0);
  }

  /** The device id string (VIRTIO_BLK_T_GET_ID, up to 20 bytes). */
  async getId(): Promise<string> {
    const b = (await this.submit(VIRTIO_BLK_T_GET_ID, 0, null, VIRTIO_BLK_ID_BYTES))!;
    const end = b.indexOf(0);
    return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
  }

  /** After an `error` event: reset the device and initialize it again. */
  reset(): void {
    this.binding.reinit();
  }

  onConfigChange(): void {}

  onNeedsReset(): void {
    this.failed = new VirtioError(Code.FailedPrecondition, `${this.dev.name} needs a reset (DEVICE_NEEDS_RESET)`);
    this.stop();
    this.dispatchEvent(new CustomEvent('error', { detail: this.failed }));
  }

  private checkIo(sector: number, len: number): void {
    if (!Number.isSafeInteger(sector) || sector < 0) throw new VirtioError(Code.InvalidArgument, `sector ${sector} must be a non-negative integer`);
    if (!Number.isSafeInteger(len) || len <= 0 || len % SECTOR_SIZE !== 0) throw new VirtioError(Code.InvalidArgument, `length ${len} must be a positive multiple of ${SECTOR_SIZE}`);
    if (sector + len / SECTOR_SIZE > this.capacity) throw new VirtioError(Code.InvalidArgument, `[${sector}, +${len / SECTOR_SIZE}) is beyond the ${this.capacity}-sector disk`);
  }

  private submit(type: number, sector: number, out: Uint8Array | null, inLen: number): Promise<Uint8Array | null> {
    if (this.failed) return Promise.reject(this.failed);
    if (!this.q) return Promise.reject(new VirtioError(Code.FailedPrecondition, 'the driver is not started'));
    const p = this.binding.platform;
    const outLen = out?.length ?? 0;
    // One allocation holds header, data and status: [hdr 16][out data | in data][status 1]
    const mem = p.ram.alloc(16 + outLen + inLen + 1, 16);
    p.view.setUint32(mem, type, true);
    p.view.setUint32(mem + 4, 0, true);
    p.view.setBigUint64(mem + 8, BigInt(sector), true);
    if (out) p.u8.set(out, mem + 16);
    p.u8[mem + 16 + outLen + inLen] = 0xff;
    return new Promise((resolve, reject) => {
      const pend: Pending = { type, mem, len: outLen + inLen, out, resolve, reject };
      const token = this.nextToken;
      this.nextToken = (this.nextToken % 0x7fffffff) + 1;
      this.waiting.push({ token, p: pend });
      this.pump();
    });
  }

  /** Moves waiting requests into the ring as room allows, then kicks once. */
  private pump(): void {
    const q = this.q;
    if (!q || this.waiting.length === 0) return;
    let added = 0;
    try {
      for (const w of this.waiting) {
        const { mem, out, len } = w.p;
        const outLen = out?.length ?? 0;
        const segs = [{ addr: mem, len: 16 }];
        if (outLen) segs.push({ addr: mem + 16, len: outLen });
        const inp = [];
        if (len - outLen) inp.push({ addr: mem + 16 + outLen, len: len - outLen });
        inp.push({ addr: mem + 16 + len, len: 1 });
        if (!q.canStage(segs.length + inp.length)) break;
        q.stage(w.token, segs, inp);
      }
      added = q.submit();
    } finally {
      // Whatever did not fit stays waiting, never half-staged.
      q.clearStaged();
    }
    for (const w of this.waiting.splice(0, added)) this.inflight.set(w.token, w.p);
    if (added > 0 && q.kickPrepare()) this.dev.kickVq(0);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.complete();
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
          const outLen = p.out?.length ?? 0;
          const data = p.len - outLen > 0 ? u8.slice(p.mem + 16 + outLen, p.mem + 16 + p.len) : null;
          this.finish(p, null, data);
        } else {
          this.finish(p, new VirtioError(st === VIRTIO_BLK_S_UNSUPP ? Code.Unsupported : Code.IoError, `${this.dev.name}: request type ${p.type} answered status ${st}`));
        }
      }
      // Drained: re-enable the interrupt; used buffers that raced in mean one more round.
      if (n === 0 && q.enableCb()) break;
    }
    this.pump();
  }

  private finish(p: Pending, err: VirtioError | null, data: Uint8Array | null = null): void {
    this.binding.platform.ram.release(p.mem);
    if (err) p.reject(err);
    else p.resolve(data);
  }
}
