// The VMM-faithful migration path over a vhost_vdpa node, as QEMU does it over vhost-vdpa
// (hw/virtio/vhost-vdpa.c, net/vhost-vdpa.c): the VMM sees the device only through the uAPI.
//
// Source: VHOST_VDPA_SUSPEND, VHOST_GET_VRING_BASE per queue, VHOST_VDPA_GET_CONFIG, plus what
// the VMM knows itself — the features it negotiated, the ring addresses it set, and the
// control-queue state it learnt by shadowing the control queue (QEMU's shadow CVQ: the
// guest's commands go through the VMM, which forwards each to the device from its own ASID and
// applies it to its model of the device only when the device acks VIRTIO_NET_OK).
//
// Destination: SET_FEATURES, SET_VRING_NUM / ADDR / BASE, kick and call, the control queue
// alone enabled, DRIVER_OK (with VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK), replay of the control
// state as commands through the control queue (QEMU's vhost_vdpa_net_load_*: MAC, MQ, RX mode,
// MAC tables, VLANs — same order), and only then SET_VRING_ENABLE for the data queues, so no
// frame is received under the destination's reset filter.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import type { VhostVdpaFile } from '../drivers/vhost-vdpa.ts';
import { DriverQueue } from '../ring/driver-queue.ts';
import { Doorbell, type DoorbellHandle } from '../worker/doorbell.ts';
import * as U from '../vhost/uapi.ts';
import { formatMac } from '../virtio/mac.ts';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_RING_PACKED, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_CTRL_MAC_ADDR, hasFeature,
} from '../virtio/constants.ts';
import {
  VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, VIRTIO_NET_CTRL_VLAN_DEL, VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_OK, type RxMode,
} from '../virtio/net-ctrl.ts';

const RX_KEYS = ['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'] as const;

/** A virtqueue as the VMM set it up (it knows the addresses: there is no GET_VRING_ADDR). */
export interface VhostVringSetup {
  /** Queue index. */
  index: number;
  /** VHOST_SET_VRING_NUM. */
  num: number;
  /** IOVA of the descriptor area. */
  desc: number;
  /** IOVA of the driver (avail) area. */
  avail: number;
  /** IOVA of the device (used) area. */
  used: number;
  /** Whether the guest enabled it (SET_VRING_ENABLE 1). */
  enabled: boolean;
}

/** A vring in the migration stream: the setup plus VHOST_GET_VRING_BASE's `num`. */
export interface VhostVringState extends VhostVringSetup {
  /** Split: last avail index; packed: avail | wrap << 15, used pair in the high 16 bits (as Linux). */
  base: number;
}

/** The net control state the VMM learnt by shadowing the control queue (QEMU's VirtIONet fields). */
export interface NetShadowState {
  /** VIRTIO_NET_CTRL_MAC_ADDR_SET, else the config space's MAC ("aa:bb:…"). */
  mac: string;
  /** RX mode bits. */
  rx: RxMode;
  /** Unicast MAC table. */
  uni: string[];
  /** Multicast MAC table. */
  multi: string[];
  /** VLAN ids added, ascending. */
  vlans: number[];
  /** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET. */
  pairs: number;
}

/** What the source VMM sends: uAPI reads plus its own knowledge. */
export interface VhostMigrationState {
  /** Format tag. */
  format: 'vdpa-wasm-vhost-state';
  /** Format version. */
  version: 1;
  /** VHOST_VDPA_GET_DEVICE_ID. */
  deviceId: number;
  /** The features the VMM negotiated (VHOST_SET_FEATURES; without VHOST_F_LOG_ALL). */
  features: bigint;
  /** VHOST_VDPA_GET_CONFIG of the whole config space. */
  config: Uint8Array;
  /** Every queue the VMM set up, with its base. */
  vrings: VhostVringState[];
  /** Net: the shadowed control state. */
  net?: NetShadowState;
}

const macBytes = (s: string): number[] => s.split(':').map((h) => parseInt(h, 16));

/** struct virtio_net_ctrl_mac × 2: u32 entries + MACs, unicast then multicast (VIRTIO 1.3 §5.1.6.5.2). */
function macTable(uni: string[], multi: string[]): Uint8Array {
  const b = new Uint8Array(8 + 6 * (uni.length + multi.length));
  const v = new DataView(b.buffer);
  v.setUint32(0, uni.length, true);
  uni.forEach((m, i) => b.set(macBytes(m), 4 + 6 * i));
  const o = 4 + 6 * uni.length;
  v.setUint32(o, multi.length, true);
  multi.forEach((m, i) => b.set(macBytes(m), o + 4 + 6 * i));
  return b;
}

/** Bytes per command slot of the shadow control queue: header, the largest table we send (2 × 64 MACs), ack. */
const CMD_SLOT = 1024;

/** Options of {@link VhostNetCvq}. */
export interface VhostNetCvqOptions {
  /** Control queue index (2 × max queue pairs; 2 without MQ). */
  index: number;
  /** Negotiated features (the ring layout follows them). */
  features: bigint;
  /** The VMM's own ASID for the control queue's group. @default 1 */
  asid?: number;
  /** IOVA at which the VMM maps guest RAM in that ASID. @default 0x8000_0000 */
  iova?: number;
  /** Ring size: commands in flight per batch. @default 64 */
  size?: number;
}

/**
 * The VMM's shadow control queue (QEMU's shadow CVQ, net/vhost-vdpa.c): the control queue's
 * group gets the VMM's own address space, the VMM drives the ring, and it keeps a model of the
 * device's control state that changes only when the device acks a command with VIRTIO_NET_OK
 * (as virtio_net_handle_ctrl_iov is run only after the device accepted it). Set up with
 * {@link start} between FEATURES_OK and DRIVER_OK.
 */
export class VhostNetCvq {
  private readonly f: VhostVdpaFile;
  private readonly p: Platform;
  private readonly o: Required<VhostNetCvqOptions>;
  private q: DriverQueue | null = null;
  private kick: Doorbell | null = null;
  private buf = 0;
  /** The shadow model. */
  readonly state: NetShadowState;

  constructor(f: VhostVdpaFile, platform: Platform, opts: VhostNetCvqOptions) {
    this.f = f;
    this.p = platform;
    this.o = { asid: 1, iova: 0x8000_0000, size: 64, ...opts };
    // The device's reset state (QEMU's virtio_net_reset: promiscuous, empty tables, 1 pair).
    const mac = f.getConfig(0, 6);
    this.state = {
      mac: formatMac(mac),
      rx: { promisc: true, allmulti: false, alluni: false, nomulti: false, nouni: false, nobcast: false },
      uni: [], multi: [], vlans: [], pairs: 1,
    };
  }

  /** Puts the control queue's group in the VMM's ASID, maps RAM there, sets the ring up and enables it. */
  start(): void {
    const { f, p, o } = this;
    f.setGroupAsid(f.getVringGroup(o.index), o.asid);
    f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: o.iova, size: p.ramSize, uaddr: p.ramBase, perm: U.VHOST_ACCESS_RW }, o.asid);
    const dmaBase = o.iova - p.ramBase;
    this.q = new DriverQueue(p, { size: o.size, features: o.features & ~(1n << BigInt(U.VHOST_F_LOG_ALL)), dmaBase });
    this.buf = p.allocBuffer(o.size * CMD_SLOT);
    this.kick = Doorbell.alloc(p);
    const a = this.q.addresses;
    f.setVringNum({ index: o.index, num: o.size });
    f.setVringAddr({ index: o.index, desc: a.descArea, avail: a.driverArea, used: a.deviceArea });
    if (hasFeature(o.features, VIRTIO_F_RING_PACKED)) f.setVringBase({ index: o.index, num: 0x8000 | (0x8000 << 16) });
    f.setVringKick(o.index, this.kick.handle);
    f.setVringEnable({ index: o.index, num: 1 });
  }

  /**
   * Sends one command (struct virtio_net_ctrl_hdr + data, then the ack byte) and waits for the
   * device's answer; on VIRTIO_NET_OK applies it to the shadow model. Returns the ack.
   */
  async command(cls: number, cmd: number, data: Uint8Array): Promise<number> {
    return (await this.commands([{ cls, cmd, data }]))[0]!;
  }

  /**
   * Sends commands in batches of half the ring size (2 descriptors each) with one kick per batch and waits for
   * every answer (as QEMU ≥ 8.2 loads the control state: all commands out, then all acks
   * checked), applying the acked-OK ones to the model in order. Returns the acks.
   */
  async commands(list: readonly { cls: number; cmd: number; data: Uint8Array }[]): Promise<number[]> {
    const q = this.q;
    const kick = this.kick;
    if (!q || !kick) throw new VirtioError(Code.FailedPrecondition, 'the shadow control queue is not started');
    const p = this.p;
    const dmaBase = this.o.iova - p.ramBase;
    const acks: number[] = [];
    // Each command is a 2-descriptor chain (out, in): half the ring's descriptors per batch.
    const per = Math.max(1, this.o.size >> 1);
    for (let at = 0; at < list.length; at += per) {
      const chunk = list.slice(at, at + per);
      chunk.forEach((c, k) => {
        if (c.data.length > CMD_SLOT - 3) throw new VirtioError(Code.InvalidArgument, `a ${c.data.length}-byte control command is too long`);
        const buf = this.buf + k * CMD_SLOT;
        const len = 2 + c.data.length;
        p.u8[buf] = c.cls;
        p.u8[buf + 1] = c.cmd;
        p.u8.set(c.data, buf + 2);
        p.u8[buf + len] = 0xff;
        if (!q.add(k, [{ addr: buf + dmaBase, len }], [{ addr: buf + len + dmaBase, len: 1 }])) {
          throw new VirtioError(Code.ResourceExhausted, 'the shadow control queue is full');
        }
      });
      if (q.kickPrepare()) kick.ring();
      let done = 0;
      for (let i = 0; i < 64 && done < chunk.length; i++) {
        done += q.getUsed(chunk.length);
        // A macrotask turn lets a device in another worker (or behind a timer) answer. Browsers have
        // no setImmediate: this module runs in pages and Web Workers too.
        if (done < chunk.length) await new Promise<void>((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));
      }
      if (done < chunk.length) throw new VirtioError(Code.IoError, `the device answered ${done} of ${chunk.length} control commands`);
      chunk.forEach((c, k) => {
        const st = p.u8[this.buf + k * CMD_SLOT + 2 + c.data.length]!;
        if (st === VIRTIO_NET_OK) this.apply(c.cls, c.cmd, c.data);
        acks.push(st);
      });
    }
    return acks;
  }

  /** VIRTIO_NET_CTRL_RX: one RX mode bit. */
  setRx(key: keyof RxMode, on: boolean): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_RX, RX_KEYS.indexOf(key), Uint8Array.of(on ? 1 : 0));
  }
  /** VIRTIO_NET_CTRL_MAC_ADDR_SET. */
  setMac(mac: string): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, Uint8Array.from(macBytes(mac)));
  }
  /** VIRTIO_NET_CTRL_MAC_TABLE_SET: both tables. */
  setMacTable(uni: string[], multi: string[]): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, macTable(uni, multi));
  }
  /** VIRTIO_NET_CTRL_VLAN_ADD (add) or _DEL. */
  vlan(add: boolean, id: number): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_VLAN, add ? VIRTIO_NET_CTRL_VLAN_ADD : VIRTIO_NET_CTRL_VLAN_DEL, Uint8Array.of(id & 0xff, id >> 8));
  }
  /** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET. */
  setPairs(n: number): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(n & 0xff, n >> 8));
  }

  /**
   * Replays `s` into the device, in QEMU's vhost_vdpa_net_load order (MAC, MQ, RX mode, MAC
   * tables, VLANs), sending only what differs from the reset state and what the negotiated
   * features allow. Every command must be acked OK (FailedPrecondition otherwise).
   */
  async replay(s: NetShadowState): Promise<void> {
    const feats = this.o.features;
    const list: { cls: number; cmd: number; data: Uint8Array; what: string }[] = [];
    if (hasFeature(feats, VIRTIO_NET_F_CTRL_MAC_ADDR) && s.mac !== this.state.mac) {
      list.push({ cls: VIRTIO_NET_CTRL_MAC, cmd: VIRTIO_NET_CTRL_MAC_ADDR_SET, data: Uint8Array.from(macBytes(s.mac)), what: 'MAC_ADDR_SET' });
    }
    if (hasFeature(feats, VIRTIO_NET_F_MQ) && s.pairs !== 1) {
      list.push({ cls: VIRTIO_NET_CTRL_MQ, cmd: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, data: Uint8Array.of(s.pairs & 0xff, s.pairs >> 8), what: 'VQ_PAIRS_SET' });
    }
    if (hasFeature(feats, VIRTIO_NET_F_CTRL_RX)) {
      // vhost_vdpa_net_load_rx: the device starts promiscuous; only the bits that differ are sent.
      RX_KEYS.forEach((k, i) => {
        const extra = k !== 'promisc' && k !== 'allmulti';
        if (extra && !hasFeature(feats, VIRTIO_NET_F_CTRL_RX_EXTRA)) return;
        if (s.rx[k] !== this.state.rx[k]) list.push({ cls: VIRTIO_NET_CTRL_RX, cmd: i, data: Uint8Array.of(s.rx[k] ? 1 : 0), what: `RX ${k}` });
      });
      if (s.uni.length || s.multi.length) list.push({ cls: VIRTIO_NET_CTRL_MAC, cmd: VIRTIO_NET_CTRL_MAC_TABLE_SET, data: macTable(s.uni, s.multi), what: 'MAC_TABLE_SET' });
    }
    if (hasFeature(feats, VIRTIO_NET_F_CTRL_VLAN)) {
      for (const v of s.vlans) list.push({ cls: VIRTIO_NET_CTRL_VLAN, cmd: VIRTIO_NET_CTRL_VLAN_ADD, data: Uint8Array.of(v & 0xff, v >> 8), what: `VLAN_ADD ${v}` });
    }
    const acks = await this.commands(list);
    const bad = acks.findIndex((a) => a !== VIRTIO_NET_OK);
    if (bad >= 0) throw new VirtioError(Code.FailedPrecondition, `the destination refused ${list[bad]!.what}`);
  }

  /** virtio_net_handle_ctrl's effect on the model, for an acked command. */
  private apply(cls: number, cmd: number, d: Uint8Array): void {
    const s = this.state;
    const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
    if (cls === VIRTIO_NET_CTRL_RX && cmd < RX_KEYS.length && d.length >= 1) s.rx[RX_KEYS[cmd]!] = d[0] !== 0;
    else if (cls === VIRTIO_NET_CTRL_MAC && cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET) s.mac = formatMac(d.subarray(0, 6));
    else if (cls === VIRTIO_NET_CTRL_MAC && cmd === VIRTIO_NET_CTRL_MAC_TABLE_SET) {
      const nu = v.getUint32(0, true);
      s.uni = Array.from({ length: nu }, (_, i) => formatMac(d.subarray(4 + 6 * i, 10 + 6 * i)));
      const o = 4 + 6 * nu;
      const nm = v.getUint32(o, true);
      s.multi = Array.from({ length: nm }, (_, i) => formatMac(d.subarray(o + 4 + 6 * i, o + 10 + 6 * i)));
    } else if (cls === VIRTIO_NET_CTRL_VLAN) {
      const id = v.getUint16(0, true);
      const set = new Set(s.vlans);
      if (cmd === VIRTIO_NET_CTRL_VLAN_ADD) set.add(id);
      else set.delete(id);
      s.vlans = [...set].sort((a, b) => a - b);
    } else if (cls === VIRTIO_NET_CTRL_MQ && cmd === VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) s.pairs = v.getUint16(0, true);
  }
}

/**
 * Source side: suspends the device (VHOST_VDPA_SUSPEND) and reads what the VMM needs through
 * the uAPI only. `vrings` are the queues the VMM set up (not the shadow control queue).
 */
export function vhostSave(f: VhostVdpaFile, o: { features: bigint; vrings: VhostVringSetup[]; cvq?: VhostNetCvq }): VhostMigrationState {
  f.suspend();
  const vrings = o.vrings.map((r) => ({ ...r, base: f.getVringBase(r.index).num }));
  return {
    format: 'vdpa-wasm-vhost-state',
    version: 1,
    deviceId: f.getDeviceId(),
    features: o.features & ~(1n << BigInt(U.VHOST_F_LOG_ALL)),
    config: f.getConfig(0, f.getConfigSize()),
    vrings,
    ...(o.cvq ? { net: structuredClone(o.cvq.state) } : {}),
  };
}

/** One IOTLB UPDATE of {@link VhostLoadOptions.maps}. */
export interface VhostLoadMap {
  /** First IOVA. */
  iova: number;
  /** Bytes. */
  size: number;
  /** Memory offset it maps to (the VMM's user address). */
  uaddr: number;
  /** VHOST_ACCESS_*. @default VHOST_ACCESS_RW */
  perm?: number;
  /** Address space. @default 0 */
  asid?: number;
}

/** A queue's doorbells (VHOST_SET_VRING_KICK / CALL; null leaves it unbound). */
export interface VhostLoadDoorbells {
  /** What the driver rings. */
  kick: DoorbellHandle | null;
  /** What the device rings. */
  call: DoorbellHandle | null;
}

/** Options of {@link vhostLoad}. */
export interface VhostLoadOptions {
  /** The destination VMM's IOTLB maps, sent before the rings start. */
  maps: VhostLoadMap[];
  /** The kick and call doorbells of each queue. */
  doorbells: (index: number) => VhostLoadDoorbells;
  /** Net: the destination's shadow control queue (index and options); made and started here. */
  cvq?: Omit<VhostNetCvqOptions, 'features'>;
}

const BIT = (b: number): bigint => 1n << BigInt(b);

const u32ok = (x: unknown): boolean => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffff_ffff;
const macOk = (x: unknown): boolean => typeof x === 'string' && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(x);

/** Shape checks of a received state (InvalidArgument), before anything is sent to the device. */
export function checkVhostState(s: VhostMigrationState): void {
  const bad = (why: string): never => { throw new VirtioError(Code.InvalidArgument, `vhost migration state: ${why}`); };
  if (!s || typeof s !== 'object' || s.format !== 'vdpa-wasm-vhost-state' || s.version !== 1) bad('not a vhost migration state of version 1');
  if (!u32ok(s.deviceId)) bad('deviceId');
  if (typeof s.features !== 'bigint' || s.features < 0n || s.features >= 1n << 64n) bad('features must be a u64 bigint');
  if (!(s.config instanceof Uint8Array)) bad('config must be bytes');
  if (!Array.isArray(s.vrings)) bad('vrings must be an array');
  const seen = new Set<number>();
  for (const r of s.vrings) {
    if (!r || typeof r !== 'object' || ![r.index, r.num, r.desc, r.avail, r.used, r.base].every(u32ok) || typeof r.enabled !== 'boolean') bad('a vring entry is malformed');
    if (seen.has(r.index)) bad(`vring ${r.index} appears twice`);
    seen.add(r.index);
  }
  const n = s.net;
  if (n !== undefined) {
    if (!n || typeof n !== 'object' || !macOk(n.mac) || !n.rx || typeof n.rx !== 'object' || !RX_KEYS.every((k) => typeof n.rx[k] === 'boolean')) bad('net: mac or rx mode');
    if (!Array.isArray(n.uni) || !Array.isArray(n.multi) || !n.uni.every(macOk) || !n.multi.every(macOk) || n.uni.length + n.multi.length > 128) bad('net: MAC tables');
    if (!Array.isArray(n.vlans) || !n.vlans.every((v) => Number.isInteger(v) && v >= 0 && v < 4096)) bad('net: vlans');
    if (!Number.isInteger(n.pairs) || n.pairs < 1 || n.pairs > 0xffff) bad('net: pairs');
  }
}

/**
 * Destination side, on a freshly opened node: negotiates the source's features, sets every
 * ring, starts with only the control queue enabled, replays the control state through it,
 * then enables the data queues the guest had enabled. Refuses (FailedPrecondition, before
 * DRIVER_OK) a device of another class or one that does not accept the features. Returns the
 * destination's shadow control queue (net), whose model equals the source's.
 */
export async function vhostLoad(f: VhostVdpaFile, platform: Platform, s: VhostMigrationState, o: VhostLoadOptions): Promise<VhostNetCvq | null> {
  checkVhostState(s);
  if (f.getDeviceId() !== s.deviceId) throw new VirtioError(Code.FailedPrecondition, `device id ${f.getDeviceId()} is not the source's ${s.deviceId}`);
  if (f.getConfigSize() !== s.config.length) throw new VirtioError(Code.FailedPrecondition, 'the config space size differs from the source');
  const late = BIT(U.VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK);
  if (!(f.getBackendFeatures() & late)) throw new VirtioError(Code.FailedPrecondition, 'the destination cannot enable queues after DRIVER_OK');
  f.setOwner();
  try {
    f.setBackendFeatures(BIT(U.VHOST_BACKEND_F_IOTLB_MSG_V2) | BIT(U.VHOST_BACKEND_F_IOTLB_BATCH) | BIT(U.VHOST_BACKEND_F_IOTLB_ASID) | late |
      (f.getBackendFeatures() & (BIT(U.VHOST_BACKEND_F_SUSPEND) | BIT(U.VHOST_BACKEND_F_RESUME))));
    f.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    if ((f.getFeatures() & s.features) !== s.features) {
      f.setStatus(0);
      throw new VirtioError(Code.FailedPrecondition, 'the destination does not offer every feature the source negotiated');
    }
    f.setFeatures(s.features);
    const fok = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    f.setStatus(fok);
    if (!(f.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) {
      f.setStatus(0);
      throw new VirtioError(Code.FailedPrecondition, 'the destination did not accept the features (FEATURES_OK)');
    }
    for (const m of o.maps) f.iotlb({ type: U.VHOST_IOTLB_UPDATE, iova: m.iova, size: m.size, uaddr: m.uaddr, perm: m.perm ?? U.VHOST_ACCESS_RW }, m.asid ?? 0);
    let cvq: VhostNetCvq | null = null;
    if (s.net) {
      if (!o.cvq) throw new VirtioError(Code.InvalidArgument, 'a net state needs the destination control queue (cvq)');
      cvq = new VhostNetCvq(f, platform, { ...o.cvq, features: s.features });
      cvq.start();
    }
    for (const r of s.vrings) {
      f.setVringNum({ index: r.index, num: r.num });
      f.setVringAddr({ index: r.index, desc: r.desc, avail: r.avail, used: r.used });
      f.setVringBase({ index: r.index, num: r.base });
      const d = o.doorbells(r.index);
      f.setVringKick(r.index, d.kick);
      f.setVringCall(r.index, d.call);
    }
    f.setStatus(fok | VIRTIO_CONFIG_S_DRIVER_OK);
    if (cvq && s.net) await cvq.replay(s.net);
    // Only now the data queues: no frame meets the filter before its state is back.
    for (const r of s.vrings) if (r.enabled) f.setVringEnable({ index: r.index, num: 1 });
    return cvq;
  } catch (e) {
    // A refused load leaves the destination reset (no half-configured device runs), as a
    // failed QEMU incoming migration resets its vhost device; the source is untouched.
    try {
      f.setStatus(0);
    } catch {
      // the node may be gone: nothing left to undo
    }
    throw e;
  }
}
