// Shared set-up for the migration suites: devices with VIRTIO_F_SUSPEND (and GUEST_ANNOUNCE),
// drivers bound through a DeviceSlot so the device behind them can move, and a shared
// in-memory disk that stands for the storage both hosts see, and a verified random blk workload.
import {
  Platform, VdpaSimNet, VdpaSimBlk, VirtioBinding, VirtioNetDriver, VirtioBlkDriver, createSlot, createVdpaSlot, featureBit,
  VDPASIM_NET_FEATURES, VDPASIM_BLK_FEATURES, VIRTIO_F_SUSPEND, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_F_RING_PACKED,
  VIRTIO_NET_DRIVER_FEATURES, VIRTIO_BLK_DRIVER_FEATURES, SECTOR_SIZE, seeded,
  type DeviceSlot, type BlkBackend, type VdpaDevice, type VirtioClassDriver,
} from '../../src/index.ts';

export type Layout = 'split' | 'packed';

/** Net features offered: the default set plus SUSPEND and GUEST_ANNOUNCE. */
export const NET_MIG_FEATURES = VDPASIM_NET_FEATURES | featureBit(VIRTIO_F_SUSPEND) | featureBit(VIRTIO_NET_F_GUEST_ANNOUNCE);
/** Blk features offered: the default set plus SUSPEND. */
export const BLK_MIG_FEATURES = VDPASIM_BLK_FEATURES | featureBit(VIRTIO_F_SUSPEND);

/** Driver features for a layout (packed is negotiated only when asked for). */
export function driverFeatures(base: bigint, layout: Layout): bigint {
  return layout === 'packed' ? base : base & ~featureBit(VIRTIO_F_RING_PACKED);
}

let n = 0;

/** A net device with `pairs` queue pairs. */
export function netDev(p: Platform, pairs = 1, mac = [2, 0, 0, 0, 0, 1], deviceFeatures = NET_MIG_FEATURES): VdpaSimNet {
  return new VdpaSimNet(p, { name: `mnet${++n}`, maxVqp: pairs, mac: Uint8Array.from(mac), deviceFeatures });
}

/** A net driver bound through a slot. */
export function netDriver(p: Platform, dev: VdpaSimNet, layout: Layout, queueSize = 64): { slot: DeviceSlot<VdpaSimNet>; drv: VirtioNetDriver; binding: VirtioBinding } {
  const slot = createSlot(dev);
  const binding = new VirtioBinding(slot.device, p, queueSize);
  const drv = new VirtioNetDriver(slot.device, binding, { features: driverFeatures(VIRTIO_NET_DRIVER_FEATURES, layout) });
  binding.init(drv);
  return { slot, drv, binding };
}

/** What SharedDisk's answer does (its queue holds the kind). */
const enum DiskOp { READ = 0, READ_INTO = 1, WRITE = 2, FLUSH = 3 }

/** The Promise executor of SharedDisk: one function for every request (no closure per call). */
let resolver: ((v?: unknown) => void) | null = null;
const takeResolver = (res: (v?: unknown) => void): void => { resolver = res; };

/**
 * An in-memory disk both hosts see (shared storage), answering in a later macrotask. Every
 * request started in one turn is answered in one setImmediate, first in first out, and costs
 * only its promise: the migration bench re-submits 128 of them inside each switchover, and
 * what a backend allocates there counts as much as what the device does.
 */
export class SharedDisk implements BlkBackend {
  readonly capacity: number;
  readonly data: Uint8Array;
  /** Requests started and not answered yet. */
  pending = 0;
  /** Backend operations that ran (answered), by kind. */
  ops = { read: 0, write: 0, flush: 0 };
  /** When set, answers wait for release() instead of the next turn. */
  hold = false;
  // Requests not answered yet, in order (parallel arrays reused from turn to turn).
  private kinds: DiskOp[] = [];
  private sectors: number[] = [];
  private args: (Uint8Array | number | null)[] = [];
  private resolves: ((v?: unknown) => void)[] = [];
  private n = 0;
  private scheduled = false;
  private readonly answerFn = (): void => this.answer();
  constructor(sectors: number) {
    this.capacity = sectors;
    this.data = new Uint8Array(sectors * SECTOR_SIZE);
  }
  private later<T>(kind: DiskOp, sector: number, arg: Uint8Array | number | null): Promise<T> {
    this.pending++;
    const p = new Promise(takeResolver) as Promise<T>;
    const k = this.n++;
    this.kinds[k] = kind;
    this.sectors[k] = sector;
    this.args[k] = arg;
    this.resolves[k] = resolver!;
    resolver = null;
    if (!this.hold) this.schedule();
    return p;
  }
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.answerFn);
  }
  /** Answers every request queued when the turn began (those it starts wait for the next). */
  private answer(): void {
    this.scheduled = false;
    if (this.hold) return;
    const n = this.n;
    for (let k = 0; k < n; k++) {
      const at = this.sectors[k]! * SECTOR_SIZE;
      const arg = this.args[k]!;
      const res = this.resolves[k]!;
      this.args[k] = null;
      this.pending--;
      switch (this.kinds[k]) {
        case DiskOp.READ:
          this.ops.read++;
          res(this.data.slice(at, at + (arg as number)));
          break;
        case DiskOp.READ_INTO:
          this.ops.read++;
          (arg as Uint8Array).set(this.data.subarray(at, at + (arg as Uint8Array).length));
          res();
          break;
        case DiskOp.WRITE:
          // The write lands when it is answered (as a disk's cache would be flushed by then).
          this.ops.write++;
          this.data.set(arg as Uint8Array, at);
          res();
          break;
        default:
          this.ops.flush++;
          res();
      }
    }
    // Requests started by what the answers ran wait for the next turn.
    const left = this.n - n;
    for (let k = 0; k < left; k++) {
      this.kinds[k] = this.kinds[n + k]!;
      this.sectors[k] = this.sectors[n + k]!;
      this.args[k] = this.args[n + k]!;
      this.resolves[k] = this.resolves[n + k]!;
      this.args[n + k] = null;
    }
    this.n = left;
    if (left > 0) this.schedule();
  }
  /** Answers every held request (in a later turn). */
  release(): void {
    this.hold = false;
    if (this.n > 0) this.schedule();
  }
  read(sector: number, len: number): Promise<Uint8Array> {
    return this.later(DiskOp.READ, sector, len);
  }
  readInto(sector: number, buf: Uint8Array): Promise<void> {
    return this.later(DiskOp.READ_INTO, sector, buf);
  }
  write(sector: number, d: Uint8Array): Promise<void> {
    return this.later(DiskOp.WRITE, sector, d);
  }
  flush(): Promise<void> {
    return this.later(DiskOp.FLUSH, 0, null);
  }
}

/** A blk device over `disk`. */
export function blkDev(p: Platform, disk: SharedDisk, deviceFeatures = BLK_MIG_FEATURES, suspendTimeoutMs?: number): VdpaSimBlk {
  return new VdpaSimBlk(p, { name: `mblk${++n}`, backend: disk, deviceFeatures, ...(suspendTimeoutMs !== undefined ? { suspendTimeoutMs } : {}) });
}

/** A blk driver bound through a slot. */
export function blkDriver(p: Platform, dev: VdpaSimBlk, layout: Layout, queueSize = 64): { slot: DeviceSlot<VdpaSimBlk>; drv: VirtioBlkDriver; binding: VirtioBinding } {
  const slot = createSlot(dev);
  const binding = new VirtioBinding(slot.device, p, queueSize);
  const drv = new VirtioBlkDriver(slot.device, binding, { features: driverFeatures(VIRTIO_BLK_DRIVER_FEATURES, layout) });
  binding.init(drv);
  return { slot, drv, binding };
}

/**
 * A driver of class `Driver` (default features) bound through a slot over `dev` — a device in a
 * device worker, for the suites and the bench that migrate it between workers.
 */
export function slotDriver<T extends VdpaDevice, D extends VirtioClassDriver>(
  p: Platform, dev: T, queueSize: number, Driver: new (dev: VdpaDevice, binding: VirtioBinding) => D,
): { slot: ReturnType<typeof createVdpaSlot<T>>; binding: VirtioBinding; drv: D } {
  const slot = createVdpaSlot(dev);
  const binding = new VirtioBinding(slot.device, p, queueSize);
  const drv = new Driver(slot.device, binding);
  binding.init(drv);
  return { slot, binding, drv };
}

/**
 * The issue's "full control state" on a net driver: every rx mode bit, 64 unicast and 64
 * multicast MACs, 300 VLANs, `pairs` queue pairs (the migration benches' net workload).
 */
export async function fullControlState(drv: VirtioNetDriver, pairs: number): Promise<void> {
  await drv.setRxMode({ promisc: true, allmulti: true, alluni: true, nomulti: true, nouni: true, nobcast: true });
  const mac = (a: number, i: number) => [a, 0x11, 0x22, 0x33, 0, i].map((x) => x.toString(16).padStart(2, '0')).join(':');
  await drv.setMacTable(Array.from({ length: 64 }, (_, i) => mac(2, i)), Array.from({ length: 64 }, (_, i) => mac(1, i)));
  for (let v = 1; v <= 300; v++) await drv.addVlan(v * 13);
  await drv.setQueuePairs(pairs);
}

/** Lets timers and microtasks run. */
export const turn = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

/** The bytes block `b` (of `size` bytes) holds after the write tagged `tag` (tag 0: never written, zeroes). */
export function blockPattern(b: number, tag: number, size = 4096): Uint8Array {
  const out = new Uint8Array(size);
  if (tag === 0) return out;
  let x = (b * 0x9e3779b1 + tag * 0x85ebca6b) >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x; out[i + 1] = x >>> 8; out[i + 2] = x >>> 16; out[i + 3] = x >>> 24;
  }
  return out;
}

/** What a {@link blkWorkload} did so far. */
export interface BlkWorkload {
  /** Tag of the last write each block saw (0: none): the model of the disk. */
  readonly model: number[];
  /** Writes and reads completed or failed, requests in flight now, and every mismatch or error. */
  readonly stats: { writes: number; reads: number; inflight: number; errors: string[] };
  /** Stops submitting and waits for what is in flight. */
  stop(): Promise<void>;
}

/**
 * A verified random workload of 4 KiB block writes and reads, `depth` requests in flight, never
 * two on one block at once; every read is checked against the model. Runs until stop().
 */
export function blkWorkload(drv: { write(sector: number, data: Uint8Array): Promise<unknown>; read(sector: number, buf: Uint8Array): Promise<unknown> },
  o: { blocks: number; depth: number; seed: number; block?: number }): BlkWorkload {
  const BLOCK = o.block ?? 4096;
  const rnd = seeded(o.seed);
  const model = new Array<number>(o.blocks).fill(0);
  const busy = new Set<number>();
  const stats = { writes: 0, reads: 0, inflight: 0, errors: [] as string[] };
  let tags = 0;
  let stopped = false;
  const one = async (): Promise<void> => {
    let b = Math.floor(rnd() * o.blocks);
    while (busy.has(b)) b = (b + 1) % o.blocks;
    busy.add(b);
    stats.inflight++;
    try {
      if (rnd() < 0.5) {
        const tag = ++tags;
        stats.writes++;
        await drv.write(b * (BLOCK / 512), blockPattern(b, tag, BLOCK));
        model[b] = tag;
      } else {
        stats.reads++;
        const buf = new Uint8Array(BLOCK);
        await drv.read(b * (BLOCK / 512), buf);
        const want = blockPattern(b, model[b]!, BLOCK);
        if (!buf.every((x, i) => x === want[i])) stats.errors.push(`block ${b}: read does not match write ${model[b]}`);
      }
    } catch (e) {
      stats.errors.push(String(e));
    } finally {
      busy.delete(b);
      stats.inflight--;
    }
  };
  const loop = (async () => {
    const live = new Set<Promise<void>>();
    while (!stopped) {
      while (live.size < o.depth) {
        const q = one();
        live.add(q);
        void q.finally(() => live.delete(q));
      }
      await Promise.race(live);
    }
    await Promise.all(live);
  })();
  return { model, stats, stop: async () => { stopped = true; await loop; } };
}
