// The demo page's drivers: a virtio-net and a virtio-blk driver at ring level, in the page's
// thread, on rings in the shared platform; the devices run in device-worker.ts. They are traffic
// generators that check what comes back (frames reach the peer intact, blocks read back as
// written), and notify through the doorbell words of protocol.ts.

import {
  DriverQueue, VirtioError, parseMac, featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED,
  VIRTIO_NET_F_MAC, VIRTIO_NET_HDR_SIZE, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_S_OK,
  type Platform,
} from '../src/index.ts';
import { CTL, type DeviceInfo, type QueueSetup } from './protocol.ts';

/** One driver-side queue the page draws. */
export interface PageQueue {
  /** `net0/tx`, … */
  label: string;
  dev: string;
  idx: number;
  slot: number;
  dq: DriverQueue;
  /** Kicks the page actually rang (kickPrepare said yes). */
  kicks: number;
  /** Calls the page received for this queue. */
  calls: number;
}

/** Rings queue `q`'s kick doorbell (see protocol.ts). */
export function kick(i32: Int32Array, ctl: number, q: PageQueue): void {
  q.kicks++;
  Atomics.or(i32, ctl + CTL.KICK_BITS, 1 << q.slot);
  Atomics.add(i32, ctl + CTL.KICK_SEQ, 1);
  Atomics.notify(i32, ctl + CTL.KICK_SEQ);
}

/** What every page driver does. */
export interface PageDriver {
  readonly dev: DeviceInfo;
  readonly queues: PageQueue[];
  /** Negotiated features (after bind). */
  features: bigint;
  /** Adds up to `n` requests. */
  pump(n: number): void;
  /** A call arrived for queue `q` (or the page polls): reclaim and refill. */
  service(q: PageQueue): void;
  /** Counters to show. */
  counters(): Record<string, number>;
  /** Frees the rings and buffers (after the device is gone or reset). */
  destroy(): void;
}

const SLOT = 2048;

/** A virtio-net driver: RX filled with buffers, TX sends numbered frames to `peer`. */
export class PageNetDriver implements PageDriver {
  readonly queues: PageQueue[];
  features = 0n;
  private readonly rx: PageQueue;
  private readonly tx: PageQueue;
  private readonly rxBase: number;
  private readonly txBase: number;
  private readonly txFree: number[];
  private seq = 0;
  private expect = new Map<string, number>();
  readonly stats = { sent: 0, received: 0, flooded: 0, bad: 0, rxPosted: 0 };
  /** The MAC frames go to (set by the page once both ends exist). */
  peer: Uint8Array | null = null;
  private readonly mac: Uint8Array;

  constructor(private readonly p: Platform, private readonly i32: Int32Array, private readonly ctl: number,
    readonly dev: DeviceInfo, features: bigint, size: number, slots: [number, number]) {
    this.mac = parseMac(dev.mac ?? '02:00:00:00:00:00');
    const mk = (idx: number, slot: number, name: string): PageQueue => ({
      label: `${dev.name}/${name}`, dev: dev.name, idx, slot, dq: new DriverQueue(p, { size, features }), kicks: 0, calls: 0,
    });
    this.rx = mk(0, slots[0], 'rx');
    this.tx = mk(1, slots[1], 'tx');
    this.queues = [this.rx, this.tx];
    this.rxBase = p.allocBuffer(size * SLOT, 64);
    this.txBase = p.allocBuffer(size * SLOT, 64);
    this.txFree = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  setups(): QueueSetup[] {
    return this.queues.map((q) => ({ idx: q.idx, slot: q.slot, size: q.dq.size, desc: q.dq.addresses.descArea, driver: q.dq.addresses.driverArea, device: q.dq.addresses.deviceArea }));
  }

  /** Posts every free RX buffer (token = buffer index). */
  start(): void {
    const dq = this.rx.dq;
    for (let i = 0; i < dq.size && dq.numFree > 0; i++) {
      dq.stage(i, [], [{ addr: this.rxBase + i * SLOT, len: SLOT }]);
      this.stats.rxPosted++;
    }
    dq.submit();
    if (dq.kickPrepare()) kick(this.i32, this.ctl, this.rx);
  }

  pump(n: number): void {
    const dq = this.tx.dq;
    if (!this.peer) return;
    const u8 = this.p.u8;
    let k = 0;
    while (k < n && dq.numFree > 0 && this.txFree.length > 0) {
      const b = this.txFree.pop()!;
      const a = this.txBase + b * SLOT;
      const len = 60 + (this.seq % 200);
      u8.fill(0, a, a + VIRTIO_NET_HDR_SIZE); // virtio_net_hdr: no offloads
      const f = a + VIRTIO_NET_HDR_SIZE;
      u8.set(this.peer, f);
      u8.set(this.mac, f + 6);
      u8[f + 12] = 0x88; u8[f + 13] = 0xb5; // IEEE 802 local experimental ethertype
      new DataView(u8.buffer, f + 14, 4).setUint32(0, this.seq, true);
      for (let j = 18; j < len; j++) u8[f + j] = (this.seq + j) & 0xff;
      dq.stage(b, [{ addr: a, len: VIRTIO_NET_HDR_SIZE + len }]);
      this.seq++;
      k++;
    }
    if (k === 0) return;
    dq.submit();
    this.stats.sent += k;
    if (dq.kickPrepare()) kick(this.i32, this.ctl, this.tx);
  }

  service(q: PageQueue): void {
    const dq = q.dq;
    const u8 = this.p.u8;
    do {
      for (let n = dq.getUsed(); n > 0; n = dq.getUsed()) {
        for (let i = 0; i < n; i++) {
          const tok = dq.usedToken(i);
          if (q === this.tx) {
            this.txFree.push(tok);
            continue;
          }
          // A received frame: header, then dst = our MAC, src = the peer, numbered payload.
          const a = this.rxBase + tok * SLOT + VIRTIO_NET_HDR_SIZE;
          const len = dq.usedLen(i) - VIRTIO_NET_HDR_SIZE;
          const seq = new DataView(u8.buffer, a + 14, 4).getUint32(0, true);
          let ok = len >= 18 && u8[a + 12] === 0x88 && u8[a + 13] === 0xb5;
          for (let j = 18; ok && j < len; j++) ok = u8[a + j] === ((seq + j) & 0xff);
          // A well-formed frame for another MAC: the switch floods unicast it has not learned
          // yet (as a learning bridge does) and the simulator takes it (no receive filter
          // negotiated: VIRTIO_NET_F_CTRL_RX is off).
          if (!ok) this.stats.bad++;
          else if (this.mac.every((x, j) => u8[a + j] === x)) this.stats.received++;
          else this.stats.flooded++;
        }
        if (q === this.rx) {
          // Re-post the buffers just used.
          for (let i = 0; i < n; i++) {
            const tok = dq.usedToken(i);
            dq.stage(tok, [], [{ addr: this.rxBase + tok * SLOT, len: SLOT }]);
          }
          dq.submit();
          if (dq.kickPrepare()) kick(this.i32, this.ctl, this.rx);
        }
      }
    } while (!dq.enableCb());
  }

  counters(): Record<string, number> {
    return { ...this.stats };
  }

  destroy(): void {
    for (const q of this.queues) if (!q.dq.isDestroyed) q.dq.destroy();
    this.p.ram.release(this.rxBase);
    this.p.ram.release(this.txBase);
  }
}

/** A virtio-blk driver: writes numbered 4 KiB blocks, reads them back and checks them. */
export class PageBlkDriver implements PageDriver {
  readonly queues: PageQueue[];
  features = 0n;
  private readonly q: PageQueue;
  private readonly base: number;
  private readonly free: number[];
  /** Per request slot: [type, block]. */
  private readonly what: Int32Array;
  private next = 0;
  private readonly blocks: number;
  /** Blocks written at least once (a read of one is checked). */
  private readonly written: Uint8Array;
  readonly stats = { writes: 0, reads: 0, verified: 0, bad: 0, ioerr: 0 };
  /** Request slot: 16-byte header, 4096 data bytes, status byte. */
  private static readonly REQ = 16 + 4096 + 64;

  constructor(private readonly p: Platform, private readonly i32: Int32Array, private readonly ctl: number,
    readonly dev: DeviceInfo, features: bigint, size: number, slot: number) {
    this.q = { label: `${dev.name}/req`, dev: dev.name, idx: 0, slot, dq: new DriverQueue(p, { size, features }), kicks: 0, calls: 0 };
    this.queues = [this.q];
    // A request uses 3 descriptors: at most size / 3 in flight.
    const n = Math.max(1, Math.floor(size / 3));
    this.base = p.allocBuffer(n * PageBlkDriver.REQ, 64);
    this.free = Array.from({ length: n }, (_, i) => n - 1 - i);
    this.what = new Int32Array(2 * n);
    this.blocks = Math.max(1, Math.min(256, Math.floor((dev.capacity ?? 8) / 8))); // 1 MiB: reads start soon
    this.written = new Uint8Array(this.blocks);
  }

  setups(): QueueSetup[] {
    const dq = this.q.dq;
    return [{ idx: 0, slot: this.q.slot, size: dq.size, desc: dq.addresses.descArea, driver: dq.addresses.driverArea, device: dq.addresses.deviceArea }];
  }

  /** Byte j of block b's content. */
  private static byte(b: number, j: number): number {
    return (b * 7 + j * 13 + (j >> 8)) & 0xff;
  }

  pump(n: number): void {
    const dq = this.q.dq;
    const u8 = this.p.u8;
    let k = 0;
    while (k < n && dq.numFree >= 3 && this.free.length > 0) {
      const s = this.free.pop()!;
      const a = this.base + s * PageBlkDriver.REQ;
      const block = this.next % this.blocks;
      // Write a block the first time round, then alternate reads and rewrites.
      const type = !this.written[block] || (this.next / this.blocks) % 2 < 1 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
      this.next++;
      const dv = new DataView(u8.buffer, a, 16);
      dv.setUint32(0, type, true);
      dv.setUint32(4, 0, true);
      dv.setUint32(8, block * 8, true); // sector, u64 little-endian (VIRTIO 1.3 §5.2.6)
      dv.setUint32(12, 0, true);
      const data = a + 16;
      if (type === VIRTIO_BLK_T_OUT) {
        for (let j = 0; j < 4096; j++) u8[data + j] = PageBlkDriver.byte(block, j);
        this.written[block] = 1;
      } else {
        u8.fill(0, data, data + 4096);
      }
      u8[data + 4096] = 0xff; // status: overwritten by the device
      this.what[2 * s] = type;
      this.what[2 * s + 1] = block;
      if (type === VIRTIO_BLK_T_OUT) dq.stage(s, [{ addr: a, len: 16 }, { addr: data, len: 4096 }], [{ addr: data + 4096, len: 1 }]);
      else dq.stage(s, [{ addr: a, len: 16 }], [{ addr: data, len: 4096 }, { addr: data + 4096, len: 1 }]);
      k++;
    }
    if (k === 0) return;
    dq.submit();
    if (dq.kickPrepare()) kick(this.i32, this.ctl, this.q);
  }

  service(q: PageQueue): void {
    const dq = q.dq;
    const u8 = this.p.u8;
    do {
      for (let n = dq.getUsed(); n > 0; n = dq.getUsed()) {
        for (let i = 0; i < n; i++) {
          const s = dq.usedToken(i);
          const a = this.base + s * PageBlkDriver.REQ;
          const data = a + 16;
          const type = this.what[2 * s]!;
          const block = this.what[2 * s + 1]!;
          if (u8[data + 4096] !== VIRTIO_BLK_S_OK) this.stats.ioerr++;
          else if (type === VIRTIO_BLK_T_OUT) this.stats.writes++;
          else {
            this.stats.reads++;
            let ok = true;
            for (let j = 0; ok && j < 4096; j++) ok = u8[data + j] === PageBlkDriver.byte(block, j);
            if (ok) this.stats.verified++;
            else this.stats.bad++;
          }
          this.free.push(s);
        }
      }
    } while (!dq.enableCb());
  }

  counters(): Record<string, number> {
    return { ...this.stats };
  }

  destroy(): void {
    if (!this.q.dq.isDestroyed) this.q.dq.destroy();
    this.p.ram.release(this.base);
  }
}

/**
 * The features the page drivers understand: VERSION_1, EVENT_IDX, PACKED when asked, and for
 * net VIRTIO_NET_F_MAC (bit 5 means something else for blk: VIRTIO_BLK_F_RO).
 */
export function pageFeatures(offered: bigint, packed: boolean, net: boolean): bigint {
  let f = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX);
  if (net) f |= featureBit(VIRTIO_NET_F_MAC);
  if (packed) f |= featureBit(VIRTIO_F_RING_PACKED);
  return offered & f;
}

export { VirtioError };
