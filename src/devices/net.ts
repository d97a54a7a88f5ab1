// vdpasim_net (Linux drivers/vdpa/vdpa_sim/vdpa_sim_net.c): a virtio-net device (VIRTIO 1.3
// §5.1). In loopback mode (the default, as Linux's simulator) every frame sent on a tx queue
// comes back on the paired rx queue; in port mode the device's wire side is a port: transmitted
// frames go to a callback in batches, and deliver() puts frames on the wire into rx — so devices
// can share an L2Switch or be bridged to anything. Queues: rx1, tx1, …, rxN, txN, then the
// control queue (at 2N when VIRTIO_NET_F_MQ is negotiated, else at 2; §5.1.2), whose commands
// set the receive filter (RX mode, MAC table, VLAN) and the active queue pairs.
// Frames move in batches: the wasm core parses control commands, filters, copies tx chains into
// rx chains (loopback) and scatters frames staged off the wire into rx chains, one call per batch.
// Rx never merges buffers: a frame goes into one rx buffer or, if it is bigger than the next one,
// is dropped (counted as too big) and that buffer waits for the next frame.

import { VirtioError, Code } from '../errors.ts';
import { VdpaSim, features } from './sim-core.ts';
import { parseMac } from '../virtio/mac.ts';
import type { Platform } from '../platform/platform.ts';
import type { PcapWriter } from './pcap.ts';
import type { SwitchEndpoint } from './switch.ts';
import {
  NetCtrlState, checkNetCtrlSnapshot, type NetCtrlSnapshot, FILTER_BLOCK_SIZE, CTRL_CAP_RX, CTRL_CAP_RX_EXTRA, CTRL_CAP_VLAN, CTRL_CAP_MAC_ADDR, CTRL_CAP_MQ, CTRL_CAP_ANNOUNCE,
} from './net-ctrl.ts';
import {
  VIRTIO_ID_NET, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_S_ANNOUNCE, hasFeature,
} from '../virtio/constants.ts';
import type { VqVendorStats } from '../bus/config-ops.ts';
import type { DeviceQueue } from '../ring/device-queue.ts';

/** Size of struct virtio_net_hdr_v1 (VIRTIO 1.3 §5.1.6): every buffer starts with one. */
export const VIRTIO_NET_HDR_SIZE = 12;

// struct virtio_net_config (VIRTIO 1.3 §5.1.4): mac[6] @0, le16 status @6,
// le16 max_virtqueue_pairs @8, le16 mtu @10.
const CFG_MAC = 0;
const CFG_STATUS = 6;
const CFG_MAX_VQP = 8;
const CFG_MTU = 10;
const CFG_SIZE = 12;

/** Features vdpasim_net offers. */
export const VDPASIM_NET_FEATURES: bigint = features(
  VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER,
);

/** Most queue pairs a vdpasim_net device has. */
export const VDPASIM_NET_MAX_VQP = 8;

/** Features that need VIRTIO_NET_F_CTRL_VQ (§5.1.3.1). */
const NEEDS_CTRL_VQ = [VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_MAC_ADDR];

/** Options of {@link VdpaSimNet}. */
export interface VdpaSimNetOptions {
  /** Device name. */
  name: string;
  /** MAC address, 6 bytes. @default 52:54:00 + 3 random bytes */
  mac?: Uint8Array;
  /** MTU, 68..65535. @default 1500 */
  mtu?: number;
  /** Queue pairs. @default 1 */
  maxVqp?: number;
  /** Offered features (a subset of VDPASIM_NET_FEATURES with VERSION_1). @default VDPASIM_NET_FEATURES */
  deviceFeatures?: bigint;
}

/**
 * Per-pair counters. Every frame taken from tx (txPackets) or offered to {@link VdpaSimNet.deliver}
 * ends up in exactly one of: packets, filtered, a drop cause, or (port mode) the wire or
 * txDropsLinkDown.
 */
export interface NetPairStats {
  /** Frames delivered into rx (looped back, or from the port). */
  packets: number;
  /** Bytes delivered into rx (virtio-net headers included). */
  bytes: number;
  /** Frames dropped on the way to rx, all causes: the sum of the four drops* counters. */
  drops: number;
  /** Dropped: no rx buffer posted (or the rx queue not enabled). */
  dropsNoBuffer: number;
  /** Dropped: link down or device not running (loopback tx, and frames offered to deliver()). */
  dropsLinkDown: number;
  /** Dropped: bigger than the next rx buffer (which stays for the next frame), or than MTU + headers. */
  dropsTooBig: number;
  /** Dropped: offered to deliver() shorter than an Ethernet header. */
  dropsMalformed: number;
  /** Frames the receive filter (RX mode, MAC table, VLAN) kept from rx. Not a drop cause. */
  filtered: number;
  /** Frames taken from tx. */
  txPackets: number;
  /** Tx chains that were not a frame (shorter than header + Ethernet header, or over the MTU). */
  txErrors: number;
  /** Port mode: frames taken from tx while the link was down, not put on the wire. */
  txDropsLinkDown: number;
}

type DropCause = 'dropsNoBuffer' | 'dropsLinkDown' | 'dropsTooBig' | 'dropsMalformed';

function zeroStats(): NetPairStats {
  return { packets: 0, bytes: 0, drops: 0, dropsNoBuffer: 0, dropsLinkDown: 0, dropsTooBig: 0, dropsMalformed: 0, filtered: 0, txPackets: 0, txErrors: 0, txDropsLinkDown: 0 };
}

function drop(st: NetPairStats, cause: DropCause, n: number): void {
  if (n === 0) return; // the common case, per datapath batch: skip the keyed update
  st[cause] += n;
  st.drops += n;
}

/** Where port-mode frames go: called with the frames one tx batch carried (views, valid during the call). */
export type NetPort = (frames: readonly Uint8Array[]) => void;

/** A simulated virtio-net device in loopback. */
export class VdpaSimNet extends VdpaSim implements SwitchEndpoint {
  /** Queue pairs. */
  readonly maxVqp: number;
  /** Per-pair loopback counters. */
  readonly pairStats: NetPairStats[];
  /**
   * Staging for one tx batch (port mode and capture) and for one batch off the wire
   * (deliver()): allocated when first needed (attachPort, capture, deliver), so a device in
   * plain loopback, which never leaves wasm, holds none (-1 until then).
   */
  private staging = -1;
  private rxStaging = -1;
  private readonly stride: number;
  private lens = -1;
  /** The filter block, verdict bytes, scratch and loopback counters the wasm datapath uses. */
  private readonly filterBlock: number;
  private readonly verdict: number;
  private readonly scratch: number;
  private readonly ctrlScratch: number;
  private readonly loopStats: number;
  private port: NetPort | null = null;
  private pcap: PcapWriter | null = null;
  /** A datapath pass is running; a kick arrived during it. */
  private inPass = false;
  private kickedInPass = false;
  /** The features the filter block's caps were written for (-1: not yet). */
  private capsFor = -1n;
  /** For capsFor: the control queue's index (-1 without VIRTIO_NET_F_CTRL_VQ) and whether MQ was negotiated (no BigInt work per pass). */
  private ctrlIdx = -1;
  private mq = false;
  /** Per pair: the rx ring whose kicks were turned off (see quietRx); a plain compare per pass. */
  private readonly quietRings: (DeviceQueue | null)[] = [];
  /** Control-queue state (a view of the filter block wasm keeps): the receive filter and the active queue pairs. */
  readonly ctrl: NetCtrlState;

  constructor(platform: Platform, opts: VdpaSimNetOptions) {
    const maxVqp = opts.maxVqp ?? 1;
    const mtu = opts.mtu ?? 1500;
    const deviceFeatures = opts.deviceFeatures ?? VDPASIM_NET_FEATURES;
    if (!Number.isInteger(maxVqp) || maxVqp < 1 || maxVqp > VDPASIM_NET_MAX_VQP) throw new VirtioError(Code.InvalidArgument, `max_vqp ${maxVqp} is outside 1..${VDPASIM_NET_MAX_VQP}`);
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new VirtioError(Code.InvalidArgument, `mtu ${mtu} is outside 68..65535`);
    // 2 × pairs data queues + the control queue; the control queue is group 1 with its own
    // address space, as vdpa_sim_net does (so a VMM can shadow it).
    super(platform, { name: opts.name, deviceId: VIRTIO_ID_NET, supportedFeatures: deviceFeatures, nvqs: 2 * maxVqp + 1, ngroups: 2, nas: 2, configSize: CFG_SIZE });
    // Anything below that throws (a bad MAC, platform memory running out) frees what the
    // device had allocated, whether or not it was built through constructDevice().
    try {
      this.maxVqp = maxVqp;
      this.pairStats = Array.from({ length: maxVqp }, zeroStats);
      const mac = opts.mac ?? randomMac();
      if (mac.length !== 6) throw new VirtioError(Code.InvalidArgument, 'a MAC address has 6 bytes');
      this.config.set(mac, CFG_MAC);
      this.configView.setUint16(CFG_STATUS, VIRTIO_NET_S_LINK_UP, true);
      this.configView.setUint16(CFG_MAX_VQP, maxVqp, true);
      this.configView.setUint16(CFG_MTU, mtu, true);
      // Staging for one batch (allocated when first needed): header + Ethernet header (+ VLAN tag) + MTU per frame.
      this.stride = VIRTIO_NET_HDR_SIZE + 14 + 4 + mtu; // + an 802.1Q tag
      this.filterBlock = this.allocPriv(FILTER_BLOCK_SIZE, 8);
      this.verdict = this.allocPriv(this.batch, 8);
      this.scratch = this.allocPriv(32, 8);
      this.ctrlScratch = this.allocPriv(1024, 8);
      this.loopStats = this.allocPriv(16, 8);
      this.ctrl = new NetCtrlState(() => platform.u8, this.filterBlock);
      this.ctrl.reset(mac);
    } catch (e) {
      VdpaSim.abandon(this);
      throw e;
    }
  }

  /** 'loopback', or 'port' once a port is attached. */
  get mode(): 'loopback' | 'port' {
    return this.port ? 'port' : 'loopback';
  }

  /**
   * Port mode: transmitted frames (Ethernet, without the virtio-net header) go to `port` in
   * batches, as views valid during the call. null goes back to loopback.
   */
  attachPort(port: NetPort | null): void {
    this.live();
    if (port) this.txStaging();
    this.port = port;
  }

  /**
   * Captures the wire side into `w` (null stops): every frame the device transmits while the
   * link is up (to the port, or looped back), and every frame offered to {@link deliver} —
   * including those the device then drops or filters, as a capture on the wire would see them.
   * Looped-back frames are written once (as transmitted).
   */
  capture(w: PcapWriter | null): void {
    this.live();
    if (w) this.txStaging();
    this.pcap = w;
  }

  /**
   * Frames arriving on the wire: each goes into an rx buffer with a zeroed virtio_net_hdr_v1
   * (num_buffers 1), steered to a queue pair by its MAC addresses. The receive filter runs in
   * wasm over each batch. Frames that cannot be delivered are dropped and counted by cause in
   * {@link pairStats} (pair 0 when the device is not running). Returns how many were delivered.
   */
  deliver(frames: readonly Uint8Array[]): number {
    this.live();
    if (!Array.isArray(frames) || !frames.every((f) => f instanceof Uint8Array)) throw new VirtioError(Code.InvalidArgument, 'deliver() takes an array of Uint8Array frames');
    if (this.pcap) for (const f of frames) this.pcap.write(f);
    if (frames.length === 0) return 0;
    if (this.rxStaging < 0) {
      // First frames off the wire: take the staging they go through (throws if private memory is full).
      this.lens = this.allocPriv(this.batch * 4, 4);
      this.rxStaging = this.allocPriv(this.batch * this.stride, 64);
    }
    if (!this.running || !this.linkUp) {
      drop(this.pairStats[0]!, 'dropsLinkDown', frames.length);
      return 0;
    }
    let delivered = 0;
    this.runDatapath(() => {
      this.syncCaps();
      const pairs = this.activePairs;
      if (pairs === 1) {
        delivered = this.inject(0, frames);
      } else {
        // Steer by a hash of the MAC addresses so a flow stays on one queue (§5.1.6.5.6).
        const by: Uint8Array[][] = Array.from({ length: pairs }, () => []);
        for (const f of frames) by[flowHash(f) % pairs]!.push(f);
        by.forEach((list, pair) => { if (list.length) delivered += this.inject(pair, list); });
      }
      return delivered;
    });
    return delivered;
  }

  /** Allocates the tx staging area if it is not there yet (throws if private memory is full). */
  private txStaging(): void {
    if (this.staging < 0) this.staging = this.allocPriv(this.batch * this.stride, 64);
  }

  /** The MAC address in config space. */
  get mac(): Uint8Array {
    return this.config.slice(CFG_MAC, CFG_MAC + 6);
  }

  /**
   * Sets the MAC address in config space, as `vdpa dev set name NAME mac MAC` does
   * (vdpasim_net_set_attr); the receive filter takes it as the device's own address and the
   * driver sees a config change. Throws InvalidArgument for a multicast or zero address.
   */
  setMac(mac: string | Uint8Array): void {
    this.live();
    const m = parseMac(mac);
    this.ctrl.setMac(m);
    this.updateConfig(() => this.config.set(m, CFG_MAC));
  }

  /** The MTU in config space. */
  get mtu(): number {
    return this.configView.getUint16(CFG_MTU, true);
  }

  /** Link state (VIRTIO_NET_S_LINK_UP in config status). */
  get linkUp(): boolean {
    return (this.configView.getUint16(CFG_STATUS, true) & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** Sets the link state: a config change with a new generation and the config callback. */
  setLink(up: boolean): void {
    this.live();
    if (up === this.linkUp) return;
    this.updateConfig((v) => v.setUint16(CFG_STATUS, (v.getUint16(CFG_STATUS, true) & ~VIRTIO_NET_S_LINK_UP) | (up ? VIRTIO_NET_S_LINK_UP : 0), true));
  }

  /**
   * Asks the driver to announce itself (after a migration, VIRTIO 1.3 §5.1.6.5.4): sets
   * VIRTIO_NET_S_ANNOUNCE in config status, if VIRTIO_NET_F_GUEST_ANNOUNCE was negotiated.
   * The driver sends gratuitous ARP and acks with VIRTIO_NET_CTRL_ANNOUNCE_ACK, which clears
   * the bit. Returns false (and does nothing) without GUEST_ANNOUNCE.
   */
  announce(): boolean {
    this.live();
    if (!hasFeature(this.getDriverFeatures(), VIRTIO_NET_F_GUEST_ANNOUNCE)) return false;
    this.updateConfig((v) => v.setUint16(CFG_STATUS, v.getUint16(CFG_STATUS, true) | VIRTIO_NET_S_ANNOUNCE, true));
    return true;
  }

  /** True while VIRTIO_NET_S_ANNOUNCE is set (an announcement not acked yet). */
  get announcing(): boolean {
    return (this.configView.getUint16(CFG_STATUS, true) & VIRTIO_NET_S_ANNOUNCE) !== 0;
  }

  /** Index of the control queue for the negotiated features (§5.1.2). */
  get ctrlVq(): number {
    return hasFeature(this.getDriverFeatures(), VIRTIO_NET_F_MQ) ? 2 * this.maxVqp : 2;
  }

  /** Data queue pairs in use: VQ_PAIRS_SET's value with MQ, else 1. */
  get activePairs(): number {
    return hasFeature(this.getDriverFeatures(), VIRTIO_NET_F_MQ) ? this.ctrl.pairs : 1;
  }

  override getVqGroup(idx: number): number {
    super.getVqGroup(idx);
    return idx === this.ctrlVq && hasFeature(this.getDriverFeatures(), VIRTIO_NET_F_CTRL_VQ) ? 1 : 0;
  }

  protected override vqType(idx: number): string {
    if (idx === this.ctrlVq && hasFeature(this.getDriverFeatures(), VIRTIO_NET_F_CTRL_VQ)) return 'control';
    return idx % 2 === 0 ? 'rx' : 'tx';
  }

  /** Ring counters plus the pair's frame counters, as `vdpa dev vstats show` prints them. */
  override getVendorVqStats(idx: number): VqVendorStats {
    const base = super.getVendorVqStats(idx);
    if (base.type === 'control') return base;
    const st = this.pairStats[idx >> 1];
    if (!st) return base;
    const extra: [string, number][] = base.type === 'rx'
      ? [['rx_packets', st.packets], ['rx_bytes', st.bytes], ['rx_drops', st.drops], ['rx_filtered', st.filtered],
        ['rx_drops_no_buffer', st.dropsNoBuffer], ['rx_drops_link_down', st.dropsLinkDown], ['rx_drops_too_big', st.dropsTooBig],
        ['rx_drops_malformed', st.dropsMalformed]]
      : [['tx_packets', st.txPackets], ['tx_errors', st.txErrors], ['tx_drops_link_down', st.txDropsLinkDown]];
    return { type: base.type, stats: [...base.stats, ...extra] };
  }

  protected override classRejectFeatures(f: bigint): string | null {
    if (!hasFeature(f, VIRTIO_NET_F_CTRL_VQ)) {
      for (const b of NEEDS_CTRL_VQ) if (hasFeature(f, b)) return `feature bit ${b} needs VIRTIO_NET_F_CTRL_VQ`;
    }
    if (hasFeature(f, VIRTIO_NET_F_CTRL_RX_EXTRA) && !hasFeature(f, VIRTIO_NET_F_CTRL_RX)) return 'VIRTIO_NET_F_CTRL_RX_EXTRA needs VIRTIO_NET_F_CTRL_RX';
    return null;
  }

  /** Migration: the control-queue state and whether an announcement is pending. */
  saveNetState(): NetCtrlSnapshot {
    this.live();
    return this.ctrl.save();
  }

  /**
   * Migration: checks that a source's net state and config fit this device (same MTU and queue
   * pairs: staging is sized by them) and returns the loader; throws and changes nothing if not.
   */
  prepareNetState(snap: unknown, config: Uint8Array): () => void {
    const s = checkNetCtrlSnapshot(snap, this.maxVqp);
    const v = new DataView(config.buffer, config.byteOffset, config.byteLength);
    if (v.getUint16(CFG_MAX_VQP, true) !== this.maxVqp) throw new VirtioError(Code.FailedPrecondition, `${this.name}: the source has ${v.getUint16(CFG_MAX_VQP, true)} queue pairs, this device ${this.maxVqp}`);
    if (v.getUint16(CFG_MTU, true) !== this.mtu) throw new VirtioError(Code.FailedPrecondition, `${this.name}: the source's MTU is ${v.getUint16(CFG_MTU, true)}, this device's ${this.mtu}`);
    return () => {
      this.ctrl.load(s, config.subarray(CFG_MAC, CFG_MAC + 6));
      this.capsFor = -1n;
    };
  }

  protected override classControlMark(): Uint8Array | null {
    return this.ctrl.mark();
  }

  protected override classControlUnchanged(mark: Uint8Array | null): boolean {
    return mark !== null && this.ctrl.sameAs(mark);
  }

  protected override onReset(): void {
    this.ctrl?.reset(this.config.subarray(CFG_MAC, CFG_MAC + 6));
    this.capsFor = -1n;
    for (const st of this.pairStats ?? []) Object.assign(st, zeroStats());
  }

  /**
   * A kick that arrives while a pass runs (a port callback or a config callback that sends
   * again) must not reuse the staging area the running pass handed out: it is noted, and the
   * running pass goes round once more over every queue before it returns.
   */
  protected override datapath(budget: number, only?: number): number {
    if (this.inPass) {
      this.kickedInPass = true;
      return 0;
    }
    this.inPass = true;
    let done = 0;
    try {
      done = this.pass(budget, only);
      while (this.kickedInPass && done < budget) {
        this.kickedInPass = false;
        done += this.pass(budget - done);
      }
    } finally {
      this.inPass = false;
    }
    // Work noted but beyond the budget: the core reschedules a full pass (done ≥ budget).
    return this.kickedInPass ? Math.max(done, budget) : done;
  }

  private pass(budget: number, only?: number): number {
    this.kickedInPass = false;
    this.syncCaps();
    let done = 0;
    const ctrl = this.ctrlIdx;
    // A kick on an rx queue (buffers posted) finds no work: nothing waits for rx buffers, as a
    // looped-back or delivered frame that finds none is dropped at once (vdpasim_net drops it
    // too). Linux's vdpasim_net_work serves tx on any kick; skipping it here saves a tx pass
    // per rx refill.
    if (only !== undefined && only !== ctrl && (only & 1) === 0) return 0;
    if (ctrl >= 0 && (only === undefined || only === ctrl)) done += this.control(ctrl, budget);
    const pairs = this.mq ? this.ctrl.pairs : 1;
    for (let pair = 0; pair < pairs; pair++) {
      if (only !== undefined && only !== ctrl && only >> 1 !== pair) continue;
      if (only === ctrl) break;
      done += this.loop(pair, budget);
    }
    return done;
  }

  /** Writes the command groups the negotiated features allow into the filter block (when they changed). */
  private syncCaps(): void {
    const f = this.getDriverFeatures();
    if (f === this.capsFor) return;
    this.capsFor = f;
    this.ctrlIdx = hasFeature(f, VIRTIO_NET_F_CTRL_VQ) ? this.ctrlVq : -1;
    this.mq = hasFeature(f, VIRTIO_NET_F_MQ);
    const caps = (hasFeature(f, VIRTIO_NET_F_CTRL_RX) ? CTRL_CAP_RX : 0) | (hasFeature(f, VIRTIO_NET_F_CTRL_RX_EXTRA) ? CTRL_CAP_RX_EXTRA : 0) |
      (hasFeature(f, VIRTIO_NET_F_CTRL_VLAN) ? CTRL_CAP_VLAN : 0) | (hasFeature(f, VIRTIO_NET_F_CTRL_MAC_ADDR) ? CTRL_CAP_MAC_ADDR : 0) |
      (hasFeature(f, VIRTIO_NET_F_MQ) ? CTRL_CAP_MQ : 0) | (hasFeature(f, VIRTIO_NET_F_GUEST_ANNOUNCE) ? CTRL_CAP_ANNOUNCE : 0);
    this.ctrl.setCaps(caps, this.maxVqp);
  }

  /**
   * Serves control commands: struct virtio_net_ctrl { u8 class; u8 command; data; u8 ack }
   * (§5.1.6.5), parsed and applied in wasm a batch at a time. A command is read only if its
   * length is one a command can have (at most two full MAC tables), so a chain of huge
   * descriptors costs nothing. MAC_ADDR_SET then updates config space.
   */
  private control(idx: number, budget: number): number {
    const q = this.queue(idx);
    if (!q) return 0;
    const ex = this.platform.exports;
    let done = 0;
    while (done < budget) {
      const n = this.popOrRearm(q, Math.min(this.batch, budget - done));
      if (n === 0) break;
      ex.net_ctrl(q.chainsAddr, n, q.segsAddr, this.ctrl.offset, this.ctrlScratch);
      q.pushPopped(n);
      done += n;
      const mac = this.ctrl.takeNewMac();
      if (mac) this.updateConfig(() => this.config.set(mac, CFG_MAC));
      if (this.ctrl.takeAnnounceAck() && this.announcing) {
        this.updateConfig((v) => v.setUint16(CFG_STATUS, v.getUint16(CFG_STATUS, true) & ~VIRTIO_NET_S_ANNOUNCE, true));
      }
    }
    return done;
  }

  /** Takes tx frames of one pair, a batch at a time: to the port, or back into rx (loopback). */
  /**
   * Asks the driver not to kick rx queue `rx` (VIRTIO 1.3 §2.7.10 / §2.8.10: the device may
   * suppress notifications): this device never waits for rx buffers (a frame that finds none is
   * dropped), so an rx kick would only run an empty pass. Once per ring.
   */
  private quietRx(pair: number, rx: DeviceQueue): void {
    if (this.quietRings[pair] === rx) return;
    rx.disableKick();
    this.quietRings[pair] = rx;
  }

  private loop(pair: number, budget: number): number {
    const rxq = this.queue(2 * pair);
    if (rxq) this.quietRx(pair, rxq);
    const tx = this.queue(2 * pair + 1);
    if (!tx) return 0;
    let done = 0;
    let max = Math.min(this.batch, budget);
    let n = this.popOrRearm(tx, max);
    while (n > 0) {
      if (this.port) this.portTx(pair, tx, n);
      else this.loopInWasm(pair, tx, n);
      done += n;
      if (done >= budget) break;
      const drained = n < max; // fewer than asked: the ring was empty at that pop
      max = Math.min(this.batch, budget - done);
      // Drained: re-arm the kick and look once more (what popOrRearm does after an empty pop,
      // without the empty pop).
      n = drained ? (tx.enableKick() ? tx.pop(max) : 0) : this.popOrRearm(tx, max);
    }
    return done;
  }

  /**
   * Port mode: the frames of a tx batch go to the port (and the capture) as views of the
   * staging area, gathered in wasm and never more than MTU + headers per chain; while the link
   * is down they are dropped and counted instead.
   */
  private portTx(pair: number, tx: DeviceQueue, n: number): void {
    const st = this.pairStats[pair]!;
    const u8 = this.platform.u8;
    const up = this.linkUp;
    if (up) tx.copyOut(n, this.staging, this.stride); // header + frame of every chain, bounded by stride
    const frames: Uint8Array[] = [];
    let nf = 0;
    for (let i = 0; i < n; i++) {
      const len = tx.readBytes(i);
      if (len < VIRTIO_NET_HDR_SIZE + 14 || len > this.stride) {
        st.txErrors++;
        continue;
      }
      nf++;
      if (!up) continue;
      const at = this.staging + i * this.stride;
      frames.push(u8.subarray(at + VIRTIO_NET_HDR_SIZE, at + len));
    }
    st.txPackets += nf;
    tx.pushPopped(n, tx.inOrder);
    if (!up) {
      st.txDropsLinkDown += nf;
      return;
    }
    if (this.pcap) for (const f of frames) this.pcap.write(f);
    if (frames.length) this.port!(frames);
  }

  /**
   * Loopback without leaving wasm: the receive filter classifies the tx batch, the accepted
   * frames are copied chain to chain into as many rx buffers, and counters come back in memory.
   */
  // Tx chains (here and in portTx) go back used exactly as popped, each with nothing written:
  // with VIRTIO_F_IN_ORDER one used entry stands for the whole batch (§2.7.9 / §2.8.10 allow
  // it; Linux's vdpasim_net writes one per chain, which costs a used entry per frame here).
  private loopInWasm(pair: number, tx: DeviceQueue, n: number): void {
    const ex = this.platform.exports;
    const u32 = this.platform.u32;
    const st = this.pairStats[pair]!;
    const sc = this.scratch >> 2;
    u32[sc + 6] = 0; // filtered
    u32[sc + 7] = 0; // not frames
    const ok = ex.net_filter(tx.chainsAddr, n, tx.segsAddr, this.ctrl.offset, this.stride, this.verdict, this.scratch);
    const filtered = u32[sc + 6]!;
    const bad = u32[sc + 7]!;
    st.txErrors += bad;
    st.txPackets += n - bad;
    if (!this.linkUp) {
      tx.pushPopped(n, tx.inOrder);
      drop(st, 'dropsLinkDown', n - bad);
      return;
    }
    // The capture copies now but writes last: its sink is user code, which must not run between
    // the pops and the copies that use their translations.
    if (this.pcap) tx.copyOut(n, this.staging, this.stride);
    st.filtered += filtered;
    const rx = ok > 0 ? this.queue(2 * pair) : null;
    const m = rx ? rx.pop(ok) : 0;
    let delivered = 0;
    let tooBig = 0;
    if (m > 0) {
      const ls = this.loopStats >> 2;
      u32[ls] = u32[ls + 1] = u32[ls + 2] = u32[ls + 3] = 0;
      const used = ex.net_loop(tx.chainsAddr, n, tx.segsAddr, this.verdict, rx!.qsb, rx!.chainsAddr, m, rx!.segsAddr, this.loopStats, this.scratch);
      delivered = u32[ls]!;
      tooBig = u32[ls + 2]!;
      st.packets += delivered;
      st.bytes += u32[ls + 1]!;
      drop(st, 'dropsTooBig', tooBig);
      rx!.pushPopped(used);
    }
    tx.pushPopped(n, tx.inOrder);
    drop(st, 'dropsNoBuffer', ok - delivered - tooBig); // no rx buffer for the rest
    if (this.pcap) this.captureStaged(tx, n);
  }

  /** Writes the frames of a tx batch staged by copyOut (not the non-frames) to the capture. */
  private captureStaged(tx: DeviceQueue, n: number): void {
    const u8 = this.platform.u8;
    for (let i = 0; i < n; i++) {
      const len = tx.readBytes(i);
      if (len < VIRTIO_NET_HDR_SIZE + 14 || len > this.stride) continue;
      const at = this.staging + i * this.stride;
      this.pcap!.write(u8.subarray(at + VIRTIO_NET_HDR_SIZE, at + len));
    }
  }

  /**
   * Puts frames from the wire into the rx queue of `pair`, a batch at a time: staged with a
   * zeroed header, filtered in wasm, then placed into rx buffers in wasm.
   */
  private inject(pair: number, all: readonly Uint8Array[]): number {
    const rx = this.queue(2 * pair);
    const st = this.pairStats[pair]!;
    const ex = this.platform.exports;
    const u8 = this.platform.u8;
    const u32 = this.platform.u32;
    const lens = this.lens >> 2;
    const ls = this.loopStats >> 2;
    let delivered = 0;
    for (let c = 0; c < all.length; c += this.batch) {
      const end = Math.min(all.length, c + this.batch);
      let j = 0;
      for (let i = c; i < end; i++) {
        const f = all[i]!;
        if (f.length < 14) {
          drop(st, 'dropsMalformed', 1); // not an Ethernet frame
          continue;
        }
        if (VIRTIO_NET_HDR_SIZE + f.length > this.stride) {
          drop(st, 'dropsTooBig', 1); // over MTU + headers: no rx buffer is meant for it
          continue;
        }
        const at = this.rxStaging + j * this.stride;
        u8.fill(0, at, at + VIRTIO_NET_HDR_SIZE);
        u8[at + 10] = 1; // num_buffers (§5.1.6.4)
        u8.set(f, at + VIRTIO_NET_HDR_SIZE);
        u32[lens + j] = VIRTIO_NET_HDR_SIZE + f.length;
        j++;
      }
      // The receive filter of the control queue (§5.1.6.5.1-2) decides what rx sees.
      const a = ex.net_filter_staged(this.rxStaging, this.stride, this.lens, j, this.ctrl.offset, this.scratch);
      st.filtered += j - a;
      let k = 0;
      while (rx && k < a) {
        const m = rx.pop(a - k);
        if (m === 0) break;
        u32[ls] = u32[ls + 1] = u32[ls + 2] = u32[ls + 3] = 0;
        const used = ex.net_place(this.rxStaging + k * this.stride, this.stride, this.lens + 4 * k, a - k, rx.qsb, rx.chainsAddr, m, rx.segsAddr, this.loopStats);
        rx.pushPopped(used);
        delivered += u32[ls]!;
        st.packets += u32[ls]!;
        st.bytes += u32[ls + 1]!;
        drop(st, 'dropsTooBig', u32[ls + 2]!);
        k += u32[ls + 3]!;
      }
      drop(st, 'dropsNoBuffer', a - k); // no rx buffer for the rest
    }
    return delivered;
  }
}
/** FNV-1a over the destination and source MAC: which rx queue a frame from the wire goes to. */
function flowHash(f: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < 12 && i < f.length; i++) h = Math.imul(h ^ f[i]!, 0x01000193) >>> 0;
  return h;
}

/** A locally administered MAC with QEMU's 52:54:00 prefix and three random bytes. */
export function randomMac(): Uint8Array {
  const m = new Uint8Array(6);
  m.set([0x52, 0x54, 0x00]);
  crypto.getRandomValues(m.subarray(3));
  return m;
}
