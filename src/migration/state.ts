// Device migration state (DESIGN.md "Live migration"; Linux vDPA's device state as QEMU's
// vhost-vdpa migration carries it): a versioned, self-describing plain-data object (its JSON
// view) with a stable little-endian binary encoding. saveState() reads a suspended device;
// loadState() validates everything first — format, version, class, feature compatibility,
// queues, control state — and changes nothing on error.
//
// blk requests in flight (version 2): recorded and re-submitted. A migration suspends the
// source with suspendDrained({ record: true }): requests still out at its backend stay there,
// and the state carries each one's descriptor chain by IOVA (blk.requests). The destination
// re-pops those chains under the same map when it runs and sends them to its own backend
// (over the same storage); the source, never resumed, drops its late answers, so nothing
// completes twice. A read completes as soon as the destination's backend answers it. A write
// (flush, discard, write-zeroes) re-submitted on the destination completes only once the
// source's backend writes are idle (VdpaSimBlk.writesIdle → releaseFence, which migrate() and
// migrateBetweenWorkers() do): otherwise the driver, seeing it complete, could write that block
// again and the source's own copy, still out at shared storage, could land over it. A fence not
// released within suspendTimeoutMs completes those writes with IOERR. A flush is finished at
// the source (it covers the writes completed at that backend). (QEMU's virtio-blk
// migrates its pending request list and restarts it on the destination; its vhost-user-blk
// inflight tracking records descriptor heads to re-submit.) A request the state cannot name
// (its buffers unmapped since its pop, its ring replaced) is finished before the save. Without
// `record` (the SUSPEND status bit, or migrate({ inflight: 'drain' })) everything is finished
// and the state carries none. Version 1 states (no requests) still load.

import { VirtioError, Code } from '../errors.ts';
import type { VdpaSim, SimCoreState, SimPositions, ControlStateMark } from '../devices/sim-core.ts';
import { RecordedChains } from '../ring/recorded-chains.ts';
import { macAt, putMac } from '../virtio/mac.ts';
import { VdpaSimNet } from '../devices/net.ts';
import { VdpaSimBlk } from '../devices/blk.ts';
import type { NetCtrlSnapshot } from '../devices/net-ctrl.ts';
import type { VqState } from '../ring/vq-state.ts';

/** The `format` field of every state. */
export const DEVICE_STATE_FORMAT = 'vdpa-wasm-device-state';
/** The state version this code writes (it reads 1 as well: a version 1 state has no requests in flight). */
export const DEVICE_STATE_VERSION = 2;

/** A piece of a recorded request's buffers in a {@link DeviceState}. */
export interface RequestPiece {
  /** IOVA (hex). */
  iova: string;
  /** Bytes (1..2^32-1). */
  len: number;
}

/** A request in flight carried by a state: its queue and descriptor chain, by IOVA. */
export interface RequestEntry {
  /** Queue index. */
  vq: number;
  /** Head index (split) or buffer id (packed): what its used entry will name. */
  id: number;
  /** Ring descriptors the chain occupies. */
  ndesc: number;
  /** Device-readable pieces (the request header), in order. */
  readable: RequestPiece[];
  /** Device-writable pieces (data, then the status byte), in order. */
  writable: RequestPiece[];
}

/** A virtqueue in a {@link DeviceState}. u64 values are "0x…" hex strings (JSON has no u64). */
export interface VqStateEntry {
  /** Queue size (0: never set up). */
  num: number;
  /** Descriptor area IOVA. */
  desc: string;
  /** Driver area IOVA. */
  driver: string;
  /** Device area IOVA. */
  device: string;
  /** Enabled. */
  ready: boolean;
  /** Ring position (split: avail/used index; packed: indices with wrap counters). */
  state: VqState | null;
}

/** One IOTLB mapping in a {@link DeviceState}. */
export interface MapEntry {
  /** First IOVA (hex). */
  iova: string;
  /** Bytes. */
  size: number;
  /** Memory offset it maps to. */
  addr: number;
  /** PERM_R | PERM_W. */
  perm: number;
}

/** The migratable state of a vdpasim_net or vdpasim_blk device: plain JSON-able data. */
export interface DeviceState {
  /** Always {@link DEVICE_STATE_FORMAT}. */
  format: typeof DEVICE_STATE_FORMAT;
  /** {@link DEVICE_STATE_VERSION} (or 1, read from an older encoding). */
  version: 1 | 2;
  /** Device class. */
  class: 'net' | 'blk';
  /** Virtio device id. */
  deviceId: number;
  /** Features the source offered (hex). */
  deviceFeatures: string;
  /** Negotiated features (hex). */
  driverFeatures: string;
  /** Device status byte. */
  status: number;
  /** Config generation. */
  generation: number;
  /** Config space (hex bytes). */
  config: string;
  /** Address space of each virtqueue group. */
  groupAsid: number[];
  /** Mappings per address space. */
  maps: MapEntry[][];
  /** Every virtqueue. */
  vqs: VqStateEntry[];
  /** net: control-queue state (rx mode, MAC tables, VLANs, queue pairs). */
  net?: NetCtrlSnapshot;
  /**
   * An early state ({@link saveEarlyState}): a running source's control state without ring
   * positions, loaded into the destination during pre-copy with {@link loadEarlyState}.
   */
  early?: true;
  /** blk: disk identity and requests in flight. */
  blk?: {
    /** Disk size in 512-byte sectors (VIRTIO 1.3 §5.2.4 `capacity`). */
    capacity: number;
    /** The disk refuses writes (VIRTIO_BLK_F_RO). */
    readOnly: boolean;
    /** Requests in flight at save: requests.length (0 in version 1). */
    inFlight: number;
    /** Requests in flight at save, re-submitted by the destination (absent in version 1). */
    requests?: RequestEntry[];
  };
}

/** A device whose state can be saved and loaded. */
export type MigratableDevice = VdpaSimNet | VdpaSimBlk;

/** The `format` field of a {@link DeviceStateDelta}. */
export const DEVICE_STATE_DELTA_FORMAT = 'vdpa-wasm-device-state-delta';

/**
 * The switchover part of a two-stage migration ({@link saveStateDelta}): what changes when a
 * device stops — status, config generation, ring positions — on top of the early state the
 * destination already holds (`base`, that state's id). A few dozen bytes encoded.
 */
export interface DeviceStateDelta {
  /** Always {@link DEVICE_STATE_DELTA_FORMAT}. */
  format: typeof DEVICE_STATE_DELTA_FORMAT;
  /** {@link DEVICE_STATE_VERSION} (or 1, read from an older encoding). */
  version: 1 | 2;
  /** Device class. */
  class: 'net' | 'blk';
  /** The id of the early state this builds on ({@link EarlyState.id}). */
  base: number;
  /** Device status byte at the stop. */
  status: number;
  /** Config generation at the stop. */
  generation: number;
  /** Every queue's ring position (null for a queue never sized). */
  vqs: (VqState | null)[];
  /** blk: requests in flight at the stop, re-submitted by the destination (absent in version 1; none for net). */
  requests?: RequestEntry[];
}

/** What {@link saveEarlyState} returns: the early state, its encoding and id, and the source's mark. */
export interface EarlyState {
  /** The early state (JSON view; `early: true`, no ring positions). */
  readonly state: DeviceState;
  /** Its binary encoding. */
  readonly bytes: Uint8Array;
  /** Its id: the CRC-32 that ends its encoding. A delta names the early state it builds on by it. */
  readonly id: number;
  /** Source side: what the control state was, to tell at switchover whether it moved. */
  readonly mark: ControlStateMark;
}

const hex64 = (v: bigint): string => '0x' + v.toString(16);
const bad = (why: string): never => { throw new VirtioError(Code.InvalidArgument, `device state: ${why}`); };

/**
 * The state of a device suspended with nothing in flight (after `await dev.suspendDrained()`,
 * or once the driver's SUSPEND reads 1). Throws FailedPrecondition otherwise.
 */
export function saveState(dev: MigratableDevice): DeviceState {
  return fromCore(dev, dev.saveCoreState());
}

function fromCore(dev: MigratableDevice, c: SimCoreState): DeviceState {
  const s: DeviceState = {
    format: DEVICE_STATE_FORMAT, version: 2, class: dev instanceof VdpaSimNet ? 'net' : 'blk',
    deviceId: c.deviceId, deviceFeatures: hex64(c.deviceFeatures), driverFeatures: hex64(c.driverFeatures),
    status: c.status, generation: c.generation, config: toHex(c.config), groupAsid: c.groupAsid,
    maps: c.maps.map((l) => l.map((m) => ({ iova: hex64(m.iova), size: m.size, addr: m.addr, perm: m.perm }))),
    vqs: c.vqs.map((v) => ({ num: v.num, desc: hex64(v.desc), driver: hex64(v.driver), device: hex64(v.device), ready: v.ready, state: v.state })),
  };
  if (dev instanceof VdpaSimNet) s.net = dev.saveNetState();
  else {
    const requests = c.requests ? toEntries(c.requests) : [];
    s.blk = { capacity: dev.capacity, readOnly: dev.readOnly, inFlight: requests.length, requests };
  }
  return s;
}

/** Recorded chains as the JSON view's entries. */
function toEntries(list: RecordedChains): RequestEntry[] {
  const out: RequestEntry[] = [];
  for (let c = 0; c < list.count; c++) {
    const e: RequestEntry = { vq: list.vq(c), id: list.id(c), ndesc: list.ndesc(c), readable: [], writable: [] };
    for (let k = 0; k < list.pieces(c); k++) (k < list.nread(c) ? e.readable : e.writable).push({ iova: '0x' + list.iova(c, k).toString(16), len: list.len(c, k) });
    out.push(e);
  }
  return out;
}

/** Checked entries (checkRequestEntries) as the device takes them. */
function fromEntries(entries: readonly RequestEntry[]): RecordedChains {
  const out = new RecordedChains(entries.length, 3 * entries.length);
  for (const r of entries) {
    out.begin(r.vq, r.id, r.ndesc, r.readable.length);
    for (const p of r.readable) out.piece(parseInt(p.iova.slice(2), 16), p.len);
    for (const p of r.writable) out.piece(parseInt(p.iova.slice(2), 16), p.len);
    out.end();
  }
  return out;
}

/**
 * Migration pre-copy, source side: the control state of a running device — everything
 * {@link saveState} carries but the ring positions (features, status, config, maps, queue
 * sizes/areas/enables, net control state, blk identity) — to load into the destination with
 * {@link loadEarlyState} while the source still runs, as QEMU sets a vhost-vdpa destination's
 * control state up before the switchover. At the stop only a {@link DeviceStateDelta} moves.
 */
export function saveEarlyState(dev: MigratableDevice): EarlyState {
  const mark = dev.markControlState();
  const s = fromCore(dev, dev.saveCoreState({ early: true }));
  s.early = true;
  const bytes = encodeState(s);
  const e: EarlyState = Object.freeze({ state: s, bytes, id: stateId(bytes), mark });
  issued.add(e);
  return e;
}

/** Early states saveEarlyState returned: a delta is saved only against one of these. */
const issued = new WeakSet<object>();

/**
 * Loads an early state (its JSON view or binary encoding) into a fresh device, validated as
 * {@link loadState} validates (nothing changes on error). The device ends suspended and
 * waits for its ring positions: {@link loadState} with the {@link DeviceStateDelta} that
 * builds on it (or, if the source's control state moved meanwhile, reset it and load the full
 * state). Returns the early state's id.
 */
export function loadEarlyState(dev: MigratableDevice, state: DeviceState | Uint8Array): number {
  const s = state instanceof Uint8Array ? decodeState(state) : checkState(state);
  if (s.early !== true) throw new VirtioError(Code.InvalidArgument, 'device state: not an early state (load it with loadState)');
  const id = stateId(state instanceof Uint8Array ? state : encodeState(s));
  loadChecked(dev, s, id);
  return id;
}

/**
 * Migration switchover, source side: on the suspended source (nothing in flight), the delta
 * over `early` — or null if anything but ring positions and the run state changed since
 * `early` was saved (a control command, a config change, a map), in which case the caller
 * sends the full {@link saveState} instead. Allocates a few small objects; no comparison
 * walks more than the device's own state.
 */
export function saveStateDelta(dev: MigratableDevice, early: EarlyState): DeviceStateDelta | null {
  const c = positionsOver(dev, early);
  if (!c) return null;
  return { format: DEVICE_STATE_DELTA_FORMAT, version: 2, class: early.state.class, base: early.id, status: c.status, generation: c.generation, vqs: c.vqs, requests: toEntries(c.requests) };
}

/**
 * {@link saveStateDelta} straight to its binary encoding ({@link encodeStateDelta}'s bytes),
 * with no JSON view on the way: what a switchover sends. null when the full state must move.
 */
export function saveStateDeltaBytes(dev: MigratableDevice, early: EarlyState): Uint8Array | null {
  const c = positionsOver(dev, early);
  if (!c) return null;
  return encodeDeltaCore({ version: 2, cls: early.state.class, base: early.id, status: c.status, generation: c.generation, vqs: c.vqs, requests: c.requests });
}

/** The suspended source's positions for a delta over `early`, or null if its control state moved. */
function positionsOver(dev: MigratableDevice, early: EarlyState): SimPositions | null {
  if (typeof early !== 'object' || early === null || !issued.has(early)) throw new VirtioError(Code.InvalidArgument, 'device state: not an early state saveEarlyState returned');
  if (early.mark.device !== dev) throw new VirtioError(Code.InvalidArgument, `device state: that early state was saved from another device than ${dev.name}`);
  if (!dev.isSuspended) throw new VirtioError(Code.FailedPrecondition, `${dev.name} must be suspended to save its state`);
  if (!dev.controlStateUnchanged(early.mark)) return null;
  return dev.savePositions();
}

/**
 * Loads `state` (a {@link DeviceState}, its JSON text parsed, or its binary encoding) into a
 * fresh device of the same management device — or a {@link DeviceStateDelta} (or its
 * encoding) into the device its early state was loaded into. A full state. Everything is validated before anything is
 * applied; on any error the device is left as it was (fresh) and a VirtioError says why:
 * InvalidArgument for a malformed state, FailedPrecondition for one this device cannot take
 * (another class, features it does not offer, other queue pairs / MTU / disk). Afterwards the
 * device is suspended: `resume()` (or the driver's DRIVER_OK, if it had set SUSPEND) runs it.
 */
export function loadState(dev: MigratableDevice, state: DeviceState | DeviceStateDelta | Uint8Array): void {
  if (state instanceof Uint8Array ? isDeltaEncoding(state) : (state as { format?: unknown } | null)?.format === DEVICE_STATE_DELTA_FORMAT) {
    let d: DeltaCore;
    // The requests go to a list reused from load to load: the device copies them (loadRequests).
    if (state instanceof Uint8Array) d = decodeDeltaCore(state, deltaRequests);
    else {
      const j = checkStateDelta(state);
      d = { version: j.version, cls: j.class, base: j.base, status: j.status, generation: j.generation, vqs: j.vqs, requests: fromEntries(j.requests ?? []) };
    }
    const cls = dev instanceof VdpaSimNet ? 'net' : 'blk';
    if (d.cls !== cls) throw new VirtioError(Code.FailedPrecondition, `device state: a ${d.cls} delta cannot be loaded into ${dev.name}, a ${cls} device`);
    dev.loadPositions(d.base, d.status, d.generation, d.vqs, d.requests);
    return;
  }
  const s = state instanceof Uint8Array ? decodeState(state) : checkState(state);
  if (s.early === true) throw new VirtioError(Code.InvalidArgument, 'device state: an early state has no ring positions (load it with loadEarlyState, then the delta with loadState)');
  loadChecked(dev, s, null);
}

function loadChecked(dev: MigratableDevice, s: DeviceState, early: number | null): void {
  const core = toCore(s);
  const cls = dev instanceof VdpaSimNet ? 'net' : 'blk';
  if (s.class !== cls) throw new VirtioError(Code.FailedPrecondition, `device state: a ${s.class} state cannot be loaded into ${dev.name}, a ${cls} device`);
  dev.checkCoreState(core);
  let loadClass: () => void;
  if (dev instanceof VdpaSimNet) {
    loadClass = dev.prepareNetState(s.net, core.config);
  } else {
    const b = s.blk!;
    if (b.capacity !== dev.capacity || b.readOnly !== dev.readOnly) {
      throw new VirtioError(Code.FailedPrecondition, `device state: the source disk has ${b.capacity} sectors${b.readOnly ? ' (read-only)' : ''}, ${dev.name} ${dev.capacity}${dev.readOnly ? ' (read-only)' : ''}`);
    }
    loadClass = () => {};
  }
  (dev as VdpaSim).loadCoreState(core, loadClass, early);
}

/** Validates the shape of a state object (JSON view); returns it typed. Throws InvalidArgument. */
export function checkState(v: unknown): DeviceState {
  if (typeof v !== 'object' || v === null) bad('not an object');
  const o = v as Record<string, unknown>;
  if (o.format !== DEVICE_STATE_FORMAT) bad(`format ${String(o.format)} is not ${DEVICE_STATE_FORMAT}`);
  if (o.version !== 1 && o.version !== 2) bad(`version ${String(o.version)} is not 1 or 2`);
  if (o.class !== 'net' && o.class !== 'blk') bad(`class ${String(o.class)} is not net or blk`);
  if (o.early !== undefined && o.early !== true) bad('early is not true (or absent)');
  const int = (x: unknown, name: string, max: number): number => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > max) bad(`${name} ${String(x)} is not an integer in 0..${max}`);
    return x as number;
  };
  int(o.deviceId, 'deviceId', 0xffffffff);
  hexU64(o.deviceFeatures, 'deviceFeatures');
  hexU64(o.driverFeatures, 'driverFeatures');
  int(o.status, 'status', 0xff);
  int(o.generation, 'generation', 0xffffffff);
  if (typeof o.config !== 'string' || !/^([0-9a-f]{2})*$/.test(o.config) || o.config.length > 2 * 0xffff) bad('config is not hex bytes');
  if (!Array.isArray(o.groupAsid) || o.groupAsid.length > 255) bad('groupAsid is not an array');
  (o.groupAsid as unknown[]).forEach((a, i) => int(a, `groupAsid[${i}]`, 255));
  if (!Array.isArray(o.maps) || o.maps.length > 255) bad('maps is not an array');
  for (const l of o.maps as unknown[]) {
    if (!Array.isArray(l) || l.length > 0xffff) bad('maps entry is not an array');
    for (const m of l as Record<string, unknown>[]) {
      if (typeof m !== 'object' || m === null) bad('a mapping is not an object');
      hexU64(m.iova, 'mapping iova');
      int(m.size, 'mapping size', 0xffffffff);
      int(m.addr, 'mapping addr', 0xffffffff);
      int(m.perm, 'mapping perm', 3);
    }
  }
  if (!Array.isArray(o.vqs) || o.vqs.length > 0xffff) bad('vqs is not an array');
  for (const [i, q] of (o.vqs as Record<string, unknown>[]).entries()) {
    if (typeof q !== 'object' || q === null) bad(`vq ${i} is not an object`);
    int(q.num, `vq ${i} num`, 0xffff);
    hexU64(q.desc, `vq ${i} desc`);
    hexU64(q.driver, `vq ${i} driver`);
    hexU64(q.device, `vq ${i} device`);
    if (typeof q.ready !== 'boolean') bad(`vq ${i} ready is not a boolean`);
    if (q.state !== null && (typeof q.state !== 'object' || (q.state as { layout?: unknown }).layout === undefined)) bad(`vq ${i} state is not a vq state or null`);
    if (o.early === true && q.state !== null) bad(`vq ${i}: an early state carries no ring positions`);
  }
  if (o.class === 'net' && (typeof o.net !== 'object' || o.net === null)) bad('a net state needs `net`');
  if (o.class === 'blk') {
    const b = o.blk as Record<string, unknown> | undefined;
    if (typeof b !== 'object' || b === null) bad('a blk state needs `blk`');
    if (typeof b!.capacity !== 'number' || !Number.isSafeInteger(b!.capacity) || (b!.capacity as number) < 1) bad('blk.capacity is not a positive integer');
    if (typeof b!.readOnly !== 'boolean') bad('blk.readOnly is not a boolean');
    if (o.version === 1 || b!.requests === undefined) {
      if (b!.inFlight !== 0 || b!.requests !== undefined) bad('blk.inFlight must be 0 in a version 1 state (and blk.requests is version 2)');
    } else {
      checkRequestEntries(b!.requests, 'blk.requests');
      if (b!.inFlight !== (b!.requests as unknown[]).length) bad('blk.inFlight is not the number of blk.requests');
      if (o.early === true && (b!.requests as unknown[]).length > 0) bad('an early state carries no requests in flight');
    }
  }
  return v as DeviceState;
}

/** Every request entry has the shape (and field ranges) its encoding holds; throws InvalidArgument. */
function checkRequestEntries(v: unknown, name: string): void {
  if (!Array.isArray(v) || v.length > 0xffff) bad(`${name} is not an array (of at most 65535)`);
  const list = v as unknown[];
  for (let k = 0; k < list.length; k++) {
    const r = list[k] as Record<string, unknown> | null | undefined;
    if (typeof r !== 'object' || r === null) bad(`${name}[${k}] is not an object`);
    for (const f of ['vq', 'id', 'ndesc'] as const) {
      const x = r![f];
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 0xffff) bad(`${name}[${k}].${f} ${String(x)} is not an integer in 0..65535`);
    }
    for (const side of ['readable', 'writable'] as const) {
      const ps = r![side];
      if (!Array.isArray(ps) || ps.length > 0xffff) bad(`${name}[${k}].${side} is not an array`);
      for (let j = 0; j < (ps as unknown[]).length; j++) {
        const p = (ps as unknown[])[j] as Record<string, unknown> | null | undefined;
        if (typeof p !== 'object' || p === null) bad(`${name}[${k}].${side}[${j}] is not an object`);
        hexSafe(p!.iova, `${name}[${k}].${side}[${j}].iova`);
        if (typeof p!.len !== 'number' || !Number.isInteger(p!.len) || p!.len < 1 || p!.len > 0xffffffff) bad(`${name}[${k}].${side}[${j}].len ${String(p!.len)} is not an integer in 1..2^32-1`);
      }
    }
  }
}

/** Writes requests: u16 n | per request u16 vq, u16 id, u16 ndesc, u16 nread, u16 nwrite, (u64 iova, u32 len) × pieces. */
function writeRequests(w: Writer, reqs: RecordedChains): void {
  w.u16(reqs.count);
  for (let c = 0; c < reqs.count; c++) {
    const np = reqs.pieces(c);
    w.u16(reqs.vq(c)); w.u16(reqs.id(c)); w.u16(reqs.ndesc(c)); w.u16(reqs.nread(c)); w.u16(np - reqs.nread(c));
    for (let k = 0; k < np; k++) { w.u64n(reqs.iova(c, k)); w.u32(reqs.len(c, k)); }
  }
}

/** Bytes writeRequests writes. */
function requestBytes(reqs: RecordedChains): number {
  return 2 + 10 * reqs.count + 12 * reqs.pieceCount;
}

/**
 * Reads what writeRequests wrote into `out` (cleared first; nothing allocated once it is big
 * enough): IOVAs must be below 2^53, lengths at least 1. Returns `out`.
 */
function readRequests(r: Reader, out: RecordedChains): RecordedChains {
  out.clear();
  for (let n = r.u16(); n > 0; n--) {
    const vq = r.u16();
    const id = r.u16();
    const ndesc = r.u16();
    const nr = r.u16();
    const nw = r.u16();
    out.begin(vq, id, ndesc, nr);
    for (let j = 0; j < nr + nw; j++) {
      const iova = r.u64n();
      const len = r.u32();
      if (len === 0) bad('a request piece of 0 bytes');
      out.piece(iova, len);
    }
    out.end();
  }
  return out;
}

/** A "0x…" IOVA of a request piece: a number, at most 2^53 - 1 (what a recorded chain can hold). */
function hexSafe(x: unknown, name: string): number {
  if (typeof x !== 'string' || !/^0x[0-9a-f]{1,14}$/.test(x)) bad(`${name} ${String(x)} is not a hex integer below 2^53`);
  const v = parseInt((x as string).slice(2), 16);
  if (!Number.isSafeInteger(v)) bad(`${name} ${String(x)} is not below 2^53`);
  return v;
}

function hexU64(x: unknown, name: string): bigint {
  if (typeof x !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(x)) bad(`${name} ${String(x)} is not a hex u64`);
  return BigInt(x as string);
}

function toCore(s: DeviceState): SimCoreState {
  return {
    deviceId: s.deviceId, deviceFeatures: BigInt(s.deviceFeatures), driverFeatures: BigInt(s.driverFeatures),
    status: s.status, generation: s.generation, config: fromHex(s.config), groupAsid: [...s.groupAsid],
    maps: s.maps.map((l) => l.map((m) => ({ iova: BigInt(m.iova), size: m.size, addr: m.addr, perm: m.perm }))),
    vqs: s.vqs.map((v) => ({ num: v.num, desc: BigInt(v.desc), driver: BigInt(v.driver), device: BigInt(v.device), ready: v.ready, state: v.state })),
    requests: fromEntries(s.blk?.requests ?? []),
  };
}

function toHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

function fromHex(s: string): Uint8Array {
  const b = new Uint8Array(s.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return b;
}

// ───────────────────────── binary encoding ─────────────────────────
//
// Little-endian, in this order (version 2; version 1 differs only in the blk tail):
//   "VDPASTAT" | u16 version | u8 class (1 net, 2 blk) | u8 flags (bit 0: early) | u32 deviceId | u64 deviceFeatures
//   | u64 driverFeatures | u8 status | u32 generation | u16 configLen | config
//   | u8 ngroups | u8 asid × ngroups | u8 nas | per space: u16 n | n × (u64 iova, u32 size, u32 addr, u8 perm)
//   | u16 nvqs | per vq: u16 num | u64 desc | u64 driver | u64 device | u8 ready | u8 kind (0 none, 1 split, 2 packed)
//       split: u16 size u16 availIndex u16 usedIndex; packed: u16 size u16 lastAvailIdx u8 wrap u16 lastUsedIdx u8 wrap
//   | net: u8 rx flags (promisc, allmulti, alluni, nomulti, nouni, nobcast) | u8 n | 6n uni | u8 n | 6n multi
//          | u16 n | u16 × n vlans | u16 pairs
//   | blk: u64 capacity | u8 readOnly | u32 inFlight (version 1: always 0, nothing follows)
//          | version 2: u16 n (= inFlight) | per request: u16 vq | u16 id | u16 ndesc | u16 nread
//            | u16 nwrite | (u64 iova | u32 len) × (nread + nwrite), readable pieces first
//   | u32 CRC-32 (IEEE) of everything before it.

const MAGIC = [0x56, 0x44, 0x50, 0x41, 0x53, 0x54, 0x41, 0x54]; // "VDPASTAT"
const RX_KEYS = ['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'] as const;
/** Flags byte: an early state (no ring positions). */
const FLAG_EARLY = 1;

class Writer {
  private buf: Uint8Array;
  private dv: DataView;
  n = 0;
  /** `size`: the bytes expected (the buffer grows past it if needed). */
  constructor(size = 1024) {
    this.buf = new Uint8Array(size);
    this.dv = new DataView(this.buf.buffer);
  }
  private room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.n + k));
    b.set(this.buf);
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }
  u8(v: number): void { this.room(1); this.dv.setUint8(this.n, v); this.n += 1; }
  u16(v: number): void { this.room(2); this.dv.setUint16(this.n, v, true); this.n += 2; }
  u32(v: number): void { this.room(4); this.dv.setUint32(this.n, v, true); this.n += 4; }
  u64(v: bigint): void { this.room(8); this.dv.setBigUint64(this.n, v, true); this.n += 8; }
  /** A u64 from a safe-integer number. */
  u64n(v: number): void { this.u32(v % 0x1_0000_0000); this.u32(Math.floor(v / 0x1_0000_0000)); }
  bytes(b: ArrayLike<number>): void { this.room(b.length); this.buf.set(b, this.n); this.n += b.length; }
  /** A MAC string checkState accepted, as its six bytes. */
  mac(m: string): void { this.room(6); putMac(m, this.buf, this.n); this.n += 6; }
  /** The bytes written so far (a view, valid until the next write). */
  view(): Uint8Array { return this.buf.subarray(0, this.n); }
  /** The bytes written: the buffer itself when it was sized exactly, else a copy. */
  done(): Uint8Array { return this.n === this.buf.length ? this.buf : this.buf.slice(0, this.n); }
}

class Reader {
  private readonly dv: DataView;
  n = 0;
  constructor(private readonly b: Uint8Array) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  private need(k: number): void { if (this.n + k > this.b.length) bad(`truncated at byte ${this.n}`); }
  u8(): number { this.need(1); return this.dv.getUint8(this.n++); }
  u16(): number { this.need(2); const v = this.dv.getUint16(this.n, true); this.n += 2; return v; }
  u32(): number { this.need(4); const v = this.dv.getUint32(this.n, true); this.n += 4; return v; }
  u64(): bigint { this.need(8); const v = this.dv.getBigUint64(this.n, true); this.n += 8; return v; }
  /** A u64 that must be below 2^53, as a number. */
  u64n(): number {
    const lo = this.u32();
    const hi = this.u32();
    if (hi >= 0x20_0000) bad(`a u64 at byte ${this.n - 8} is 2^53 or more`);
    return hi * 0x1_0000_0000 + lo;
  }
  bytes(k: number): Uint8Array { this.need(k); const v = this.b.slice(this.n, this.n + k); this.n += k; return v; }
  /** Six bytes as a MAC string. */
  mac(): string { this.need(6); const v = macAt(this.b, this.n); this.n += 6; return v; }
}

/** The stable binary encoding of a state (validated first). */
export function encodeState(state: DeviceState): Uint8Array {
  const s = checkState(state);
  const w = new Writer();
  w.bytes(MAGIC);
  w.u16(s.version);
  w.u8(s.class === 'net' ? 1 : 2);
  w.u8(s.early === true ? FLAG_EARLY : 0);
  w.u32(s.deviceId);
  w.u64(BigInt(s.deviceFeatures));
  w.u64(BigInt(s.driverFeatures));
  w.u8(s.status);
  w.u32(s.generation);
  const cfg = fromHex(s.config);
  w.u16(cfg.length);
  w.bytes(cfg);
  w.u8(s.groupAsid.length);
  for (const a of s.groupAsid) w.u8(a);
  w.u8(s.maps.length);
  for (const l of s.maps) {
    w.u16(l.length);
    for (const m of l) { w.u64(BigInt(m.iova)); w.u32(m.size); w.u32(m.addr); w.u8(m.perm); }
  }
  w.u16(s.vqs.length);
  for (const v of s.vqs) {
    w.u16(v.num); w.u64(BigInt(v.desc)); w.u64(BigInt(v.driver)); w.u64(BigInt(v.device)); w.u8(v.ready ? 1 : 0);
    writeVqState(w, v.state);
  }
  if (s.class === 'net') {
    const n = s.net!;
    let fl = 0;
    RX_KEYS.forEach((k, i) => { if (n.rx[k]) fl |= 1 << i; });
    w.u8(fl);
    for (const t of [n.uni, n.multi]) {
      w.u8(t.length);
      for (const m of t) w.mac(m);
    }
    w.u16(n.vlans.length);
    for (const v of n.vlans) w.u16(v);
    w.u16(n.pairs);
  } else {
    const b = s.blk!;
    w.u64(BigInt(b.capacity));
    w.u8(b.readOnly ? 1 : 0);
    w.u32(b.inFlight);
    if (s.version === 2) writeRequests(w, fromEntries(b.requests ?? []));
  }
  w.u32(crc32(w.view()));
  return w.done();
}

/** Decodes a binary state: checks magic, version, CRC and every length; returns the JSON view. */
export function decodeState(bytes: Uint8Array): DeviceState {
  if (!(bytes instanceof Uint8Array) || bytes.length < 12) bad('not a binary device state');
  const r = new Reader(bytes);
  const magic = r.bytes(8);
  if (!MAGIC.every((m, i) => magic[i] === m)) bad('bad magic (not a vdpa-wasm device state)');
  const version = r.u16();
  if (version !== 1 && version !== 2) bad(`version ${version} is not 1 or 2`);
  const body = bytes.subarray(0, bytes.length - 4);
  const crc = new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 4, 4).getUint32(0, true);
  if (crc32(body) !== crc) bad('CRC mismatch (corrupted state)');
  const clsByte = r.u8();
  if (clsByte !== 1 && clsByte !== 2) bad(`class ${clsByte} is not 1 (net) or 2 (blk)`);
  const flags = r.u8();
  if (flags & ~FLAG_EARLY) bad(`flags 0x${flags.toString(16)} has unknown bits`);
  const s: DeviceState = {
    format: DEVICE_STATE_FORMAT, version: version as 1 | 2, class: clsByte === 1 ? 'net' : 'blk', deviceId: r.u32(),
    deviceFeatures: hex64(r.u64()), driverFeatures: hex64(r.u64()), status: r.u8(), generation: r.u32(),
    config: toHex(r.bytes(r.u16())), groupAsid: [], maps: [], vqs: [],
  };
  for (let g = r.u8(); g > 0; g--) s.groupAsid.push(r.u8());
  for (let a = r.u8(); a > 0; a--) {
    const l: MapEntry[] = [];
    for (let k = r.u16(); k > 0; k--) l.push({ iova: hex64(r.u64()), size: r.u32(), addr: r.u32(), perm: r.u8() });
    s.maps.push(l);
  }
  for (let q = r.u16(); q > 0; q--) {
    const v: VqStateEntry = { num: r.u16(), desc: hex64(r.u64()), driver: hex64(r.u64()), device: hex64(r.u64()), ready: r.u8() === 1, state: null };
    v.state = readVqState(r);
    s.vqs.push(v);
  }
  if (s.class === 'net') {
    const fl = r.u8();
    const rx = {} as NetCtrlSnapshot['rx'];
    RX_KEYS.forEach((k, i) => { rx[k] = (fl & (1 << i)) !== 0; });
    const table = (): string[] => {
      const out: string[] = [];
      for (let k = r.u8(); k > 0; k--) out.push(r.mac());
      return out;
    };
    const uni = table();
    const multi = table();
    const vlans: number[] = [];
    for (let k = r.u16(); k > 0; k--) vlans.push(r.u16());
    s.net = { rx, uni, multi, vlans, pairs: r.u16() };
  } else {
    const cap = r.u64();
    if (cap > BigInt(Number.MAX_SAFE_INTEGER)) bad('blk capacity over 2^53');
    const readOnly = r.u8() === 1;
    const inFlight = r.u32();
    if (version === 1) {
      if (inFlight !== 0) bad('blk requests in flight must be 0 in a version 1 state');
      s.blk = { capacity: Number(cap), readOnly, inFlight: 0 };
    } else {
      const requests = toEntries(readRequests(r, new RecordedChains()));
      if (requests.length !== inFlight) bad(`blk inFlight ${inFlight} is not the ${requests.length} requests that follow`);
      s.blk = { capacity: Number(cap), readOnly, inFlight, requests };
    }
  }
  if (r.n !== bytes.length - 4) bad(`${bytes.length - 4 - r.n} trailing bytes`);
  if (flags & FLAG_EARLY) s.early = true;
  return checkState(s);
}

/** An encoded state's id: the CRC-32 of everything before it, which ends the encoding. */
function stateId(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 4, 4).getUint32(0, true);
}

// ───────────────────────── the delta ─────────────────────────
//
// Little-endian (version 2): "VDPADLTA" | u16 version | u8 class (1 net, 2 blk) | u8 0
//   | u32 base (the early state's id) | u8 status | u32 generation | u16 nvqs
//   | per vq: u8 kind (0 none, 1 split, 2 packed) + the fields of the full encoding's vq state
//   | u16 n requests in flight + the full encoding's request records (version 2 only)
//   | u32 CRC-32 of everything before it.

const DELTA_MAGIC = [0x56, 0x44, 0x50, 0x41, 0x44, 0x4c, 0x54, 0x41]; // "VDPADLTA"

/** True if `b` starts as a delta's encoding ("VDPADLTA"), not a full state's. */
export function isDeltaEncoding(b: Uint8Array): boolean {
  if (b.length < 8) return false;
  for (let i = 0; i < 8; i++) if (b[i] !== DELTA_MAGIC[i]) return false;
  return true;
}

/** Validates the shape of a delta (JSON view); returns it typed. Throws InvalidArgument. */
export function checkStateDelta(v: unknown): DeviceStateDelta {
  if (typeof v !== 'object' || v === null) bad('delta: not an object');
  const o = v as Record<string, unknown>;
  if (o.format !== DEVICE_STATE_DELTA_FORMAT) bad(`format ${String(o.format)} is not ${DEVICE_STATE_DELTA_FORMAT}`);
  if (o.version !== 1 && o.version !== 2) bad(`delta version ${String(o.version)} is not 1 or 2`);
  if (o.class !== 'net' && o.class !== 'blk') bad(`delta class ${String(o.class)} is not net or blk`);
  const u = (x: unknown, name: string, max: number): void => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > max) bad(`delta ${name} ${String(x)} is not an integer in 0..${max}`);
  };
  u(o.base, 'base', 0xffffffff);
  u(o.status, 'status', 0xff);
  u(o.generation, 'generation', 0xffffffff);
  if (!Array.isArray(o.vqs) || o.vqs.length > 0xffff) bad('delta vqs is not an array');
  const vqs = o.vqs as unknown[];
  // Every entry (holes too) is null or a whole vq state whose fields fit their encoding; the
  // device checks the rest (layout against the features, indices against the queue size).
  for (let i = 0; i < vqs.length; i++) {
    const q = vqs[i] as Record<string, unknown> | null | undefined;
    if (q === null) continue;
    if (typeof q !== 'object') bad(`delta vq ${i} is not a vq state or null`);
    const f = (k: string, max: number): void => u(q![k], `vq ${i} ${k}`, max);
    if (q!.layout === 'split') {
      f('size', 0xffff); f('availIndex', 0xffff);
      if (q!.usedIndex !== undefined) f('usedIndex', 0xffff);
    } else if (q!.layout === 'packed') {
      f('size', 0xffff); f('lastAvailIdx', 0xffff); f('lastAvailWrap', 1); f('lastUsedIdx', 0xffff); f('lastUsedWrap', 1);
    } else bad(`delta vq ${i} layout ${String(q!.layout)} is not split or packed`);
  }
  if (o.requests !== undefined) {
    if (o.version === 1) bad('a version 1 delta has no requests');
    checkRequestEntries(o.requests, 'delta requests');
    if (o.class === 'net' && (o.requests as unknown[]).length > 0) bad('a net delta carries no requests in flight');
  }
  return v as DeviceStateDelta;
}

/** Where loadState decodes a binary delta's requests (read only until the device copied them). */
const deltaRequests = new RecordedChains(16, 48);

/** A delta as the encoding holds it (requests as numbers): what the switchover moves without a JSON view. */
interface DeltaCore {
  version: 1 | 2;
  cls: 'net' | 'blk';
  base: number;
  status: number;
  generation: number;
  vqs: readonly (VqState | null)[];
  requests: RecordedChains;
}

/** The binary encoding of a delta (validated first): a few dozen bytes, one allocation (plus 10 + 12 per piece for each request in flight). */
export function encodeStateDelta(delta: DeviceStateDelta): Uint8Array {
  const d = checkStateDelta(delta);
  return encodeDeltaCore({ version: d.version, cls: d.class, base: d.base, status: d.status, generation: d.generation, vqs: d.vqs, requests: fromEntries(d.requests ?? []) });
}

function encodeDeltaCore(d: DeltaCore): Uint8Array {
  // Sized exactly: one allocation, no copy out.
  let n = 8 + 2 + 2 + 4 + 1 + 4 + 2 + 4;
  for (const v of d.vqs) n += v === null ? 1 : v.layout === 'split' ? 7 : 9;
  if (d.version === 2) {
    n += requestBytes(d.requests);
  }
  const w = new Writer(n);
  w.bytes(DELTA_MAGIC);
  w.u16(d.version);
  w.u8(d.cls === 'net' ? 1 : 2);
  w.u8(0);
  w.u32(d.base);
  w.u8(d.status);
  w.u32(d.generation);
  w.u16(d.vqs.length);
  for (const v of d.vqs) writeVqState(w, v);
  if (d.version === 2) writeRequests(w, d.requests);
  w.u32(crc32(w.view()));
  return w.done();
}

/** One vq state of either encoding: u8 kind (0 none, 1 split, 2 packed), then its fields (readVqState reads them). */
function writeVqState(w: Writer, st: VqState | null): void {
  if (!st) w.u8(0);
  else if (st.layout === 'split') { w.u8(1); w.u16(st.size); w.u16(st.availIndex); w.u16(st.usedIndex ?? st.availIndex); }
  else { w.u8(2); w.u16(st.size); w.u16(st.lastAvailIdx); w.u8(st.lastAvailWrap); w.u16(st.lastUsedIdx); w.u8(st.lastUsedWrap); }
}

/** Decodes a binary delta: magic, version, CRC and every length checked; returns the JSON view. */
export function decodeStateDelta(bytes: Uint8Array): DeviceStateDelta {
  const c = decodeDeltaCore(bytes, new RecordedChains());
  const d: DeviceStateDelta = { format: DEVICE_STATE_DELTA_FORMAT, version: c.version, class: c.cls, base: c.base, status: c.status, generation: c.generation, vqs: [...c.vqs] };
  if (c.version === 2) d.requests = toEntries(c.requests);
  return d;
}

/** Decodes a binary delta; its requests go into `requests` (cleared first). */
function decodeDeltaCore(bytes: Uint8Array, requests: RecordedChains): DeltaCore {
  if (!(bytes instanceof Uint8Array) || bytes.length < 12 || !isDeltaEncoding(bytes)) bad('not a binary device state delta');
  const r = new Reader(bytes);
  r.bytes(8);
  const version = r.u16();
  if (version !== 1 && version !== 2) bad(`delta version ${version} is not 1 or 2`);
  const crc = new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 4, 4).getUint32(0, true);
  if (crc32(bytes.subarray(0, bytes.length - 4)) !== crc) bad('CRC mismatch (corrupted delta)');
  const cls = r.u8();
  if (cls !== 1 && cls !== 2) bad(`delta class ${cls} is not 1 (net) or 2 (blk)`);
  if (r.u8() !== 0) bad('delta flags must be 0');
  const base = r.u32();
  const status = r.u8();
  const generation = r.u32();
  const vqs: (VqState | null)[] = [];
  for (let q = r.u16(); q > 0; q--) vqs.push(readVqState(r));
  if (version === 2) readRequests(r, requests);
  else requests.clear();
  if (cls === 1 && requests.count > 0) bad('a net delta carries no requests in flight');
  if (r.n !== bytes.length - 4) bad(`${bytes.length - 4 - r.n} trailing bytes`);
  return { version: version as 1 | 2, cls: cls === 1 ? 'net' : 'blk', base, status, generation, vqs, requests };
}

/** One vq state of either encoding: u8 kind, then split or packed fields. */
function readVqState(r: Reader): VqState | null {
  const kind = r.u8();
  if (kind === 0) return null;
  if (kind === 1) return { version: 1, layout: 'split', size: r.u16(), availIndex: r.u16(), usedIndex: r.u16() };
  if (kind !== 2) bad(`vq state kind ${kind} is not 0, 1 or 2`);
  const size = r.u16();
  const lastAvailIdx = r.u16();
  const lastAvailWrap = r.u8();
  const lastUsedIdx = r.u16();
  const lastUsedWrap = r.u8();
  if (lastAvailWrap > 1 || lastUsedWrap > 1) bad('a wrap counter is not 0 or 1');
  return { version: 1, layout: 'packed', size, lastAvailIdx, lastAvailWrap: lastAvailWrap as 0 | 1, lastUsedIdx, lastUsedWrap: lastUsedWrap as 0 | 1 };
}

let crcTables: Uint32Array | null = null;

/**
 * CRC-32 (IEEE 802.3, as zlib's crc32), four bytes per step ("slicing-by-4": table k holds the
 * CRC of a byte followed by k zero bytes). A delta with requests in flight is a few KiB and is
 * checked inside the downtime on both sides.
 */
function crc32(b: Uint8Array): number {
  if (!crcTables) {
    const t = new Uint32Array(4 * 256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[i] = c >>> 0;
    }
    for (let i = 0; i < 256; i++) {
      for (let k = 1; k < 4; k++) t[k * 256 + i] = (t[(k - 1) * 256 + i]! >>> 8) ^ t[t[(k - 1) * 256 + i]! & 0xff]!;
    }
    crcTables = t;
  }
  const t = crcTables;
  let c = 0xffffffff;
  const n = b.length;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    c ^= b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
    c = t[768 + (c & 0xff)]! ^ t[512 + ((c >>> 8) & 0xff)]! ^ t[256 + ((c >>> 16) & 0xff)]! ^ t[c >>> 24]!;
  }
  for (; i < n; i++) c = t[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
