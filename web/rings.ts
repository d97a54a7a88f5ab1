// Draws a virtqueue as the driver and the device see it: every descriptor slot coloured by
// state, and the indices, in-flight count, notification rates and (packed) wrap counters.
// The driver's side is read live from the shared memory (its rings and its queue state block);
// the device's position comes from the worker's getVqState snapshots (a few per second).
//
// Split (VIRTIO 1.3 §2.7): avail ring entries from the driver's last_used to avail->idx are in
// flight; of those, the first (used->idx − last_used) are used and not yet reclaimed, the last
// (avail->idx − device last_avail) are posted and not yet seen by the device, the rest the
// device holds. Packed (§2.8): the in-flight descriptors start at the driver's used index; a
// slot whose AVAIL and USED flags are equal is used, else the device's last_avail splits the
// rest into held and posted. Both readings assume in-order completion, which is what the
// simulator devices do (vdpa_sim completes in pop order too).

import { Q, type DriverQueue, type Platform, type VqState } from '../src/index.ts';

export const FREE = 0;
export const POSTED = 1;
export const DEVICE = 2;
export const USED = 3;
export const STATE_NAMES = ['free', 'available (posted)', 'held by the device', 'used, not reclaimed'] as const;
export const COLORS = ['#e4e7eb', '#3b82f6', '#f59e0b', '#10b981'] as const;

/** VIRTQ_DESC_F_NEXT (split), VRING_PACKED_DESC_F_AVAIL / _USED bits (linux/virtio_ring.h). */
const DESC_F_NEXT = 1;
const PACKED_F_AVAIL = 7;
const PACKED_F_USED = 15;

/** What one drawing shows, besides the slot states. */
export interface RingView {
  layout: 'split' | 'packed';
  size: number;
  states: Uint8Array;
  /** Split: avail->idx and used->idx from the rings; packed: the driver's next avail / used slot. */
  availIdx: number;
  usedIdx: number;
  /** The driver's last_used_idx (reclaimed up to here). */
  lastUsed: number;
  inFlight: number;
  numFree: number;
  /** Packed wrap counters: driver avail/used, device avail/used (-1 when unknown). */
  wraps: [number, number, number, number] | null;
  counts: [number, number, number, number];
}

/** Reads the ring of `dq` (device position from `dev`, possibly a little old). */
export function readRing(p: Platform, dq: DriverQueue, dev: VqState | null): RingView {
  const size = dq.size;
  const u8 = p.u8;
  const dv = new DataView(u8.buffer);
  const qw = (off: number) => p.u32[(dq.qsb + off) >> 2]!;
  const { descArea, driverArea, deviceArea } = dq.addresses;
  const states = new Uint8Array(size);
  const inFlight = dq.inFlight;
  const numFree = dq.numFree;
  if (dq.layout === 'split') {
    const availIdx = dv.getUint16(driverArea + 2, true);
    const usedIdx = dv.getUint16(deviceArea + 2, true);
    const lastUsed = qw(Q.USED) & 0xffff;
    const devAvail = dev && dev.layout === 'split' ? dev.availIndex & 0xffff : lastUsed;
    const total = Math.min((availIdx - lastUsed) & 0xffff, size);
    const used = Math.min((usedIdx - lastUsed) & 0xffff, total);
    const posted = Math.min((availIdx - devAvail) & 0xffff, total - used);
    for (let k = 0; k < total; k++) {
      const st = k < used ? USED : k >= total - posted ? POSTED : DEVICE;
      let i = dv.getUint16(driverArea + 4 + 2 * ((lastUsed + k) % size), true);
      for (let n = 0; n < size && i < size; n++) {
        states[i] = st;
        const flags = dv.getUint16(descArea + 16 * i + 12, true);
        if (!(flags & DESC_F_NEXT)) break;
        i = dv.getUint16(descArea + 16 * i + 14, true);
      }
    }
    return { layout: 'split', size, states, availIdx, usedIdx, lastUsed, inFlight, numFree, wraps: null, counts: count(states) };
  }
  const availIdx = qw(Q.AVAIL);
  const lastUsed = qw(Q.USED);
  const drvAvailWrap = qw(Q.AVAIL_WRAP);
  const drvUsedWrap = qw(Q.USED_WRAP);
  const busy = size - numFree; // descriptors in flight, from the driver's used index on
  // Positions on a 2·size circle (the wrap counter is the lap's parity; counters start at 1).
  const abs = (idx: number, wrap: number) => ((wrap ^ 1) * size + idx) % (2 * size);
  const ahead = (a: number, b: number) => (a - b + 2 * size) % (2 * size);
  // Descriptors (from the driver's used index) the device has taken. A snapshot older than the
  // driver's own progress (device used index behind the driver's) says nothing: count none.
  let devDist = 0;
  if (dev && dev.layout === 'packed') {
    const u = abs(lastUsed, drvUsedWrap);
    const du = ahead(abs(dev.lastUsedIdx, dev.lastUsedWrap), u);
    const da = ahead(abs(dev.lastAvailIdx, dev.lastAvailWrap), u);
    if (du <= da && da <= busy) devDist = da;
  }
  for (let k = 0; k < busy; k++) {
    const i = (lastUsed + k) % size;
    const flags = dv.getUint16(descArea + 16 * i + 14, true);
    const a = (flags >> PACKED_F_AVAIL) & 1;
    const u = (flags >> PACKED_F_USED) & 1;
    states[i] = a === u ? USED : k >= devDist ? POSTED : DEVICE;
  }
  const wraps: [number, number, number, number] = dev && dev.layout === 'packed'
    ? [drvAvailWrap, drvUsedWrap, dev.lastAvailWrap, dev.lastUsedWrap]
    : [drvAvailWrap, drvUsedWrap, -1, -1];
  return { layout: 'packed', size, states, availIdx, usedIdx: lastUsed, lastUsed, inFlight, numFree, wraps, counts: count(states) };
}

function count(states: Uint8Array): [number, number, number, number] {
  const c: [number, number, number, number] = [0, 0, 0, 0];
  for (const s of states) c[s as 0]++;
  return c;
}

/** Paints the slots of `v` into `canvas`, `cols` per row. */
export function paintRing(canvas: HTMLCanvasElement, v: RingView): void {
  const cols = Math.min(32, v.size);
  const cell = 11;
  const rows = Math.ceil(v.size / cols);
  const w = cols * cell + 1;
  const h = rows * cell + 1;
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const g = canvas.getContext('2d');
  if (!g) return;
  g.fillStyle = '#fff';
  g.fillRect(0, 0, w, h);
  for (let i = 0; i < v.size; i++) {
    g.fillStyle = COLORS[v.states[i]!]!;
    g.fillRect((i % cols) * cell + 1, Math.floor(i / cols) * cell + 1, cell - 1, cell - 1);
  }
  // The driver's next avail slot (packed) / the head of the avail window (split), outlined.
  const mark = v.layout === 'packed' ? v.availIdx % v.size : -1;
  if (mark >= 0) {
    g.strokeStyle = '#111';
    g.lineWidth = 1;
    g.strokeRect((mark % cols) * cell + 0.5, Math.floor(mark / cols) * cell + 0.5, cell, cell);
  }
}
