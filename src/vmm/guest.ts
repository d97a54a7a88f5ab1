// The "guest" of the minimal VMM (issue 8 §3): a virtio driver side that runs in its own worker
// over guest RAM, a region of the shared platform memory whose guest-physical address 0 is at a
// non-zero memory offset. It lays out split rings with the package's DriverQueue, speaks only
// guest-physical addresses to the device (the VMM maps them with IOTLB UPDATE messages), rings
// the kick doorbells itself and sleeps on the call doorbells (Atomics.wait: it is a worker), so
// no VMM code runs per request. Its traffic generators check what they get: net frames byte for
// byte (VIRTIO 1.3 §5.1.6, virtio_net_hdr_v1 of 12 bytes, VERSION_1), blk writes then reads
// against a model (§5.2.6: out header type/reserved/sector, data, in status byte).
//
// Requests (channel): attach(handle) · queues(dev, n, size, features) · doorbells(dev, kicks,
// calls) · net(a, b, count, seed) · blk(dev, count, seed) · counters().

import { VirtioError, Code } from '../errors.ts';
import { Platform, type PlatformHandle } from '../platform/platform.ts';
import { DriverQueue } from '../ring/driver-queue.ts';
import { Doorbell, DoorbellWaiter, type DoorbellHandle } from '../worker/doorbell.ts';
import { Channel, type PortLike } from '../worker/channel.ts';

/** Bytes of struct virtio_net_hdr_v1 (VIRTIO 1.3 §5.1.6). */
const NET_HDR = 12;
/** struct virtio_blk_req header: le32 type, le32 reserved, le64 sector (VIRTIO 1.3 §5.2.6). */
const BLK_HDR = 16;
/** VIRTIO_BLK_T_IN / OUT (§5.2.6). */
const T_IN = 0;
const T_OUT = 1;
/** How long a guest waits for the device before it reports a hang. */
const WAIT_MS = 5000;

interface GuestDev {
  qs: DriverQueue[];
  kicks: Doorbell[];
  calls: Doorbell[];
}

/** Guest-side counters. */
export interface GuestCounters {
  /** Kick doorbells rung. */
  kicks: number;
  /** Times the guest slept on a call doorbell. */
  sleeps: number;
}

/** Result of a `net` run. */
export interface GuestNetResult {
  /** Frames sent each way. */
  sent: number;
  /** Frames received a → b and b → a. */
  received: [number, number];
  /** Frames that differ from what was sent (must be 0). */
  mismatches: number;
}

/** Result of a `blk` run. */
export interface GuestBlkResult {
  /** Write requests completed. */
  writes: number;
  /** Read requests (8 sectors each) completed. */
  reads: number;
  /** Sectors read back that differ from the model (must be 0). */
  mismatches: number;
  /** Requests whose status byte was not VIRTIO_BLK_S_OK. */
  errors: number;
}

/** Serves the guest on `port` (a worker's parentPort or `self`). */
export function serveGuest(port: PortLike): Channel {
  let p: Platform | null = null;
  let gpaBase = 0;
  let ramSize = 0;
  let waiter: DoorbellWaiter | null = null;
  const devs = new Map<string, GuestDev>();
  const counters: GuestCounters = { kicks: 0, sleeps: 0 };

  const need = () => {
    if (!p || !waiter) throw new VirtioError(Code.FailedPrecondition, 'the guest has no RAM yet');
    return { p, waiter };
  };
  const dev = (name: unknown) => {
    const d = devs.get(String(name));
    if (!d) throw new VirtioError(Code.NotFound, `the guest has no device ${String(name)}`);
    return d;
  };
  /** Guest-physical address of memory offset `off` (guest RAM only). */
  const gpa = (off: number) => {
    if (off < gpaBase || off >= gpaBase + ramSize) throw new VirtioError(Code.Internal, `offset ${off} is outside guest RAM`);
    return off - gpaBase;
  };
  const kick = (d: GuestDev, i: number) => {
    if (d.qs[i]!.kickPrepare()) {
      counters.kicks++;
      d.kicks[i]!.ring();
    }
  };
  /** Reclaims used buffers of queue i, sleeping on its call doorbell until at least one. */
  const waitUsed = (d: GuestDev, i: number): { token: number; len: number }[] => {
    const q = d.qs[i]!;
    const w = need().waiter;
    const end = performance.now() + WAIT_MS;
    for (;;) {
      const got = q.reclaim();
      if (got.length) return got;
      if (!q.enableCb()) continue; // used buffers raced in: no call will come for them
      if (performance.now() > end) throw new VirtioError(Code.Cancelled, `queue ${i}: the device answered nothing in ${WAIT_MS} ms`);
      counters.sleeps++;
      w.wait(100);
      q.disableCb();
    }
  };

  const handler = (op: string, args: unknown[]): unknown => {
    switch (op) {
      case 'attach': {
        if (p) throw new VirtioError(Code.FailedPrecondition, 'the guest is already attached');
        const h = args[0] as PlatformHandle;
        if (!h?.ramSlice) throw new VirtioError(Code.InvalidArgument, 'the guest needs a RAM slice (its guest RAM)');
        p = Platform.attach(h);
        gpaBase = h.ramSlice.base;
        ramSize = h.ramSlice.size;
        waiter = new DoorbellWaiter(p);
        return { gpaBase, ramSize };
      }
      case 'queues': {
        const { p } = need();
        const [name, n, size, features] = args as [string, number, number, bigint];
        if (devs.has(name)) throw new VirtioError(Code.AlreadyExists, `the guest already has ${name}`);
        const qs: DriverQueue[] = [];
        for (let i = 0; i < n; i++) qs.push(new DriverQueue(p, { size, features }));
        devs.set(name, { qs, kicks: [], calls: [] });
        // The device sees guest-physical addresses only.
        return qs.map((q) => ({ desc: gpa(q.addresses.descArea), avail: gpa(q.addresses.driverArea), used: gpa(q.addresses.deviceArea) }));
      }
      case 'doorbells': {
        const { p, waiter } = need();
        const d = dev(args[0]);
        d.kicks = (args[1] as DoorbellHandle[]).map((h) => new Doorbell(p, h));
        d.calls = (args[2] as DoorbellHandle[]).map((h) => new Doorbell(p, h));
        for (const c of d.calls) waiter.watch(c, () => {});
        return null;
      }
      case 'net':
        return net(dev(args[0]), dev(args[1]), args[2] as Uint8Array, args[3] as Uint8Array, Number(args[4]), Number(args[5]));
      case 'blk':
        return blk(dev(args[0]), Number(args[1]), Number(args[2]), Number(args[3]));
      case 'counters':
        return { ...counters };
      default:
        throw new VirtioError(Code.Unsupported, `the guest has no request ${op}`);
    }
  };

  /** Sends `count` frames a → b and b → a (port mode: through the device worker's switch). */
  function net(a: GuestDev, b: GuestDev, macA: Uint8Array, macB: Uint8Array, count: number, seed: number): GuestNetResult {
    const { p } = need();
    const BUF = 2048;
    const frame = (dst: Uint8Array, src: Uint8Array, k: number): Uint8Array => {
      const len = 60 + ((k * 97 + seed) % 1400);
      const f = new Uint8Array(len);
      f.set(dst, 0);
      f.set(src, 6);
      f.set([0x88, 0xb5], 12);
      for (let i = 14; i < len; i++) f[i] = (k * 131 + i * 7 + seed) & 0xff;
      return f;
    };
    // Post rx buffers on both sides (queue 0 = receiveq1).
    const rxPool = new Map<GuestDev, number>();
    const rxCount = new Map<GuestDev, number>();
    for (const d of [a, b]) {
      const q = d.qs[0]!;
      const n = q.numFree;
      const pool = p.ram.alloc(n * BUF, 64);
      rxPool.set(d, pool);
      rxCount.set(d, n);
      for (let t = 0; t < n; t++) q.add(t, [], [{ addr: gpa(pool + t * BUF), len: BUF }]);
      kick(d, 0);
    }
    const txBuf = new Map<GuestDev, number>();
    for (const d of [a, b]) txBuf.set(d, p.ram.alloc(d.qs[1]!.numFree * BUF, 64));
    const res: GuestNetResult = { sent: count, received: [0, 0], mismatches: 0 };
    const exchange = (from: GuestDev, to: GuestDev, want: Uint8Array[], dir: 0 | 1) => {
      const tx = from.qs[1]!;
      let sent = 0;
      let got = 0;
      const txb = txBuf.get(from)!;
      const pool = rxPool.get(to)!;
      const rxBufs = rxCount.get(to)!;
      while (got < want.length) {
        // Fill tx as far as there is room, and never more frames on the wire than the receiver
        // has rx buffers posted (a frame without a buffer is dropped, as on a real NIC).
        while (sent < want.length && tx.numFree > 0 && sent - got < rxBufs) {
          const slot = sent % 64;
          const off = txb + slot * BUF;
          const f = want[sent]!;
          p.u8.fill(0, off, off + NET_HDR);
          p.u8.set(f, off + NET_HDR);
          tx.add(slot, [{ addr: gpa(off), len: NET_HDR + f.length }]);
          sent++;
          if (sent % 8 === 0 || sent === want.length) kick(from, 1);
        }
        kick(from, 1);
        const used = waitUsed(to, 0);
        for (const u of used) {
          const off = pool + u.token * BUF;
          const f = want[got]!;
          const ok = u.len === NET_HDR + f.length && p.u8.subarray(off + NET_HDR, off + u.len).every((x, i) => x === f[i]);
          if (!ok) res.mismatches++;
          got++;
          res.received[dir]++;
          to.qs[0]!.add(u.token, [], [{ addr: gpa(off), len: BUF }]); // repost
        }
        kick(to, 0);
        tx.reclaim();
      }
      while (tx.inFlight > 0) waitUsed(from, 1);
    };
    const ab = Array.from({ length: count }, (_, k) => frame(macB, macA, k));
    const ba = Array.from({ length: count }, (_, k) => frame(macA, macB, 100_000 + k));
    exchange(a, b, ab, 0);
    exchange(b, a, ba, 1);
    return res;
  }

  /** `count` writes of 1..8 sectors at seeded places, then the touched range read back. */
  function blk(d: GuestDev, count: number, capacity: number, seed: number): GuestBlkResult {
    const { p } = need();
    const q = d.qs[0]!;
    let s = seed >>> 0 || 1;
    const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8);
    const span = Math.min(capacity, 512);
    const model = new Uint8Array(span * 512);
    const hdr = p.ram.alloc(BLK_HDR * 64, 64);
    const status = p.ram.alloc(64, 64);
    const data = p.ram.alloc(64 * 8 * 512, 64);
    const res: GuestBlkResult = { writes: 0, reads: 0, mismatches: 0, errors: 0 };
    const req = (slot: number, type: number, sector: number, n: number) => {
      const h = hdr + slot * BLK_HDR;
      p.view.setUint32(h, type, true);
      p.view.setUint32(h + 4, 0, true);
      p.view.setBigUint64(h + 8, BigInt(sector), true);
      p.u8[status + slot] = 0xff;
      const buf = { addr: gpa(data + slot * 4096), len: n * 512 };
      const st = { addr: gpa(status + slot), len: 1 };
      if (type === T_OUT) q.add(slot, [{ addr: gpa(h), len: BLK_HDR }, buf], [st]);
      else q.add(slot, [{ addr: gpa(h), len: BLK_HDR }], [buf, st]);
    };
    const drain = (pending: Map<number, () => void>) => {
      kick(d, 0);
      while (pending.size) {
        for (const u of waitUsed(d, 0)) {
          if (p.u8[status + u.token] !== 0) res.errors++;
          pending.get(u.token)?.();
          pending.delete(u.token);
        }
      }
    };
    // Writes, 16 in flight at a time (each slot owns 8 sectors of staging).
    const pending = new Map<number, () => void>();
    for (let i = 0; i < count; i++) {
      const slot = i % 16;
      if (pending.has(slot)) drain(pending);
      const n = 1 + (rnd() % 8);
      const sector = rnd() % (span - n);
      const off = data + slot * 4096;
      for (let k = 0; k < n * 512; k++) p.u8[off + k] = rnd() & 0xff;
      model.set(p.u8.subarray(off, off + n * 512), sector * 512);
      req(slot, T_OUT, sector, n);
      pending.set(slot, () => res.writes++);
    }
    drain(pending);
    // Read the span back, 8 sectors per request.
    for (let sector = 0; sector < span; sector += 8) {
      const slot = (sector / 8) % 16;
      if (pending.has(slot)) drain(pending);
      req(slot, T_IN, sector, 8);
      pending.set(slot, () => {
        res.reads++;
        const off = data + slot * 4096;
        for (let k = 0; k < 8; k++) {
          const a = p.u8.subarray(off + k * 512, off + (k + 1) * 512);
          const m = model.subarray((sector + k) * 512, (sector + k + 1) * 512);
          if (!a.every((x, i) => x === m[i])) res.mismatches++;
        }
      });
    }
    drain(pending);
    return res;
  }

  return new Channel(port, { handler, name: 'guest' });
}
