// vdpasim_net (Linux drivers/vdpa/vdpa_sim/vdpa_sim_net.c): a virtio-net device (VIRTIO 1.3
// §5.1). In loopback mode (the default, as Linux's simulator) every frame sent on a tx queue
// comes back on the paired rx queue; in port mode the device's wire side is a port: transmitted
// frames go to a callback in batches, and deliver() puts frames on the wire into rx — so devices
// can share an L2Switch or be bridged to anything. Queues: rx1, tx1, …, rxN, txN, then the
// control queue (at 2N when VIRTIO_NET_F_MQ is negotiated, else at 2; §5.1.2), whose commands
// set the receive filter (RX mode, MAC table, VLAN) and the active queue pairs.
// Frames move in batches: the wasm core gathers tx chains into a staging area and scatters
// staged frames into rx chains, one call per batch.

import { VirtioError, Code } from '../errors.ts';
import { VdpaSim, features } from './sim-core.ts';
import type { Platform } from '../platform/platform.ts';
import type { PcapWriter } from './pcap.ts';
import type { SwitchEndpoint } from './switch.ts';
import { NetCtrlState, VIRTIO_NET_ERR, FILTER_BLOCK_SIZE, type CtrlCaps } from './net-ctrl.ts';
import {
  VIRTIO_ID_NET, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER, VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_MRG_RXBUF, hasFeature,
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

/** Per-pair counters. */
export interface NetPairStats {
  /** Frames delivered into rx (looped back, or from the port). */
  packets: number;
  /** Bytes delivered into rx (virtio-net headers included). */
  bytes: number;
  /** Frames dropped on the way to rx: no rx buffer, link down, or larger than the rx buffer. */
  drops: number;
  /** Frames taken from tx. */
  txPackets: number;
  /** Tx chains that were not a frame (shorter than header + Ethernet header, or over the MTU). */
  txErrors: number;
  /** Frames the receive filter (RX mode, MAC table, VLAN) kept from rx. */
  filtered: number;
}

/** Where port-mode frames go: called with the frames one tx batch carried (views, valid during the call). */
export type NetPort = (frames: readonly Uint8Array[]) => void;

/** A simulated virtio-net device in loopback. */
export class VdpaSimNet extends VdpaSim implements SwitchEndpoint {
  /** Queue pairs. */
  readonly maxVqp: number;
  /** Per-pair loopback counters. */
  readonly pairStats: NetPairStats[];
  private readonly staging: number;
  private readonly rxStaging: number;
  private readonly stride: number;
  private readonly lens: number;
  /** The filter block, verdict bytes, scratch and loopback counters the wasm datapath uses. */
  private readonly filterBlock: number;
  private readonly verdict: number;
  private readonly scratch: number;
  private readonly loopStats: number;
  private port: NetPort | null = null;
  private pcap: PcapWriter | null = null;
  /** Control-queue state: the receive filter and the active queue pairs. */
  readonly ctrl = new NetCtrlState();

  constructor(platform: Platform, opts: VdpaSimNetOptions) {
    const maxVqp = opts.maxVqp ?? 1;
    const mtu = opts.mtu ?? 1500;
    const deviceFeatures = opts.deviceFeatures ?? VDPASIM_NET_FEATURES;
    if (!Number.isInteger(maxVqp) || maxVqp < 1 || maxVqp > VDPASIM_NET_MAX_VQP) throw new VirtioError(Code.InvalidArgument, `max_vqp ${maxVqp} is outside 1..${VDPASIM_NET_MAX_VQP}`);
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new VirtioError(Code.InvalidArgument, `mtu ${mtu} is outside 68..65535`);
    // 2 × pairs data queues + the control queue; the control queue is group 1 with its own
    // address space, as vdpa_sim_net does (so a VMM can shadow it).
    super(platform, { name: opts.name, deviceId: VIRTIO_ID_NET, supportedFeatures: deviceFeatures, nvqs: 2 * maxVqp + 1, ngroups: 2, nas: 2, configSize: CFG_SIZE });
    this.maxVqp = maxVqp;
    this.pairStats = Array.from({ length: maxVqp }, () => ({ packets: 0, bytes: 0, drops: 0, txPackets: 0, txErrors: 0, filtered: 0 }));
    const mac = opts.mac ?? randomMac();
    if (mac.length !== 6) throw new VirtioError(Code.InvalidArgument, 'a MAC address has 6 bytes');
    this.config.set(mac, CFG_MAC);
    this.configView.setUint16(CFG_STATUS, VIRTIO_NET_S_LINK_UP, true);
    this.configView.setUint16(CFG_MAX_VQP, maxVqp, true);
    this.configView.setUint16(CFG_MTU, mtu, true);
    // Staging for one batch: header + Ethernet header (+ VLAN tag) + MTU per frame.
    this.stride = VIRTIO_NET_HDR_SIZE + 14 + 4 + mtu; // + an 802.1Q tag
    this.staging = platform.priv.alloc(this.batch * this.stride, 64);
    this.rxStaging = platform.priv.alloc(this.batch * this.stride, 64);
    this.lens = platform.priv.alloc(this.batch * 4, 4);
    this.filterBlock = platform.priv.alloc(FILTER_BLOCK_SIZE, 8);
    this.verdict = platform.priv.alloc(this.batch, 8);
    this.scratch = platform.priv.alloc(32, 8);
    this.loopStats = platform.priv.alloc(16, 8);
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
    this.port = port;
  }

  /** Captures every frame that crosses the wire side (tx and rx) into `w`; null stops. */
  capture(w: PcapWriter | null): void {
    this.pcap = w;
  }

  /**
   * Frames arriving on the wire: each goes into an rx buffer with a zeroed virtio_net_hdr_v1.
   * Frames with no rx buffer (or link down, or device not running, or too big) are dropped.
   * Returns how many were delivered.
   */
  deliver(frames: readonly Uint8Array[]): number {
    if (!this.running || !this.linkUp || frames.length === 0) {
      if (this.maxVqp > 0) this.pairStats[0]!.drops += frames.length;
      return 0;
    }
    let delivered = 0;
    this.runDatapath(() => {
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

  /** The MAC address in config space. */
  get mac(): Uint8Array {
    return this.config.slice(CFG_MAC, CFG_MAC + 6);
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
    if (up === this.linkUp) return;
    this.updateConfig((v) => v.setUint16(CFG_STATUS, up ? VIRTIO_NET_S_LINK_UP : 0, true));
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
      ? [['rx_packets', st.packets], ['rx_bytes', st.bytes], ['rx_drops', st.drops], ['rx_filtered', st.filtered]]
      : [['tx_packets', st.txPackets], ['tx_errors', st.txErrors]];
    return { type: base.type, stats: [...base.stats, ...extra] };
  }

  protected override classRejectFeatures(f: bigint): string | null {
    if (!hasFeature(f, VIRTIO_NET_F_CTRL_VQ)) {
      for (const b of NEEDS_CTRL_VQ) if (hasFeature(f, b)) return `feature bit ${b} needs VIRTIO_NET_F_CTRL_VQ`;
    }
    if (hasFeature(f, VIRTIO_NET_F_CTRL_RX_EXTRA) && !hasFeature(f, VIRTIO_NET_F_CTRL_RX)) return 'VIRTIO_NET_F_CTRL_RX_EXTRA needs VIRTIO_NET_F_CTRL_RX';
    return null;
  }

  protected override onReset(): void {
    this.ctrl?.reset();
    for (const st of this.pairStats ?? []) Object.assign(st, { packets: 0, bytes: 0, drops: 0, txPackets: 0, txErrors: 0, filtered: 0 });
  }

  protected override onDestroy(): void {
    for (const m of [this.staging, this.rxStaging, this.lens, this.filterBlock, this.verdict, this.scratch, this.loopStats]) this.platform.priv.release(m);
  }

  protected override datapath(budget: number, only?: number): number {
    let done = 0;
    const f = this.getDriverFeatures();
    const ctrl = hasFeature(f, VIRTIO_NET_F_CTRL_VQ) ? this.ctrlVq : -1;
    if (ctrl >= 0 && (only === undefined || only === ctrl)) done += this.control(ctrl, budget);
    for (let pair = 0; pair < this.activePairs; pair++) {
      if (only !== undefined && only !== ctrl && only >> 1 !== pair) continue;
      if (only === ctrl) break;
      done += this.loop(pair, budget);
    }
    return done;
  }

  /** Serves control commands: struct virtio_net_ctrl { u8 class; u8 command; data; u8 ack } (§5.1.6.5). */
  private control(idx: number, budget: number): number {
    const q = this.queue(idx);
    if (!q) return 0;
    const f = this.getDriverFeatures();
    const caps: CtrlCaps = {
      rx: hasFeature(f, VIRTIO_NET_F_CTRL_RX),
      rxExtra: hasFeature(f, VIRTIO_NET_F_CTRL_RX_EXTRA),
      vlan: hasFeature(f, VIRTIO_NET_F_CTRL_VLAN),
      macAddr: hasFeature(f, VIRTIO_NET_F_CTRL_MAC_ADDR),
      mq: hasFeature(f, VIRTIO_NET_F_MQ),
      announce: hasFeature(f, VIRTIO_NET_F_GUEST_ANNOUNCE),
      maxPairs: this.maxVqp,
    };
    let done = 0;
    while (done < budget) {
      const n = this.popOrRearm(q, Math.min(this.batch, budget - done));
      if (n === 0) break;
      for (let i = 0; i < n; i++) {
        // A command with no room for its ack byte gets nothing written; one too short for
        // class and command is answered VIRTIO_NET_ERR.
        if (q.writeBytes(i) < 1) continue;
        const cmd = q.read(i);
        const ack = cmd.length < 2 ? VIRTIO_NET_ERR : this.ctrl.execute(cmd[0]!, cmd[1]!, cmd.subarray(2), caps, (mac) => this.updateConfig(() => this.config.set(mac, CFG_MAC)));
        q.write(i, new Uint8Array([ack]));
      }
      q.pushPopped(n);
      done += n;
    }
    return done;
  }

  /** Takes tx frames of one pair, a batch at a time: to the port, or back into rx (loopback). */
  private loop(pair: number, budget: number): number {
    const tx = this.queue(2 * pair + 1);
    if (!tx) return 0;
    const st = this.pairStats[pair]!;
    const u8 = this.platform.u8;
    let done = 0;
    while (done < budget) {
      const n = this.popOrRearm(tx, Math.min(this.batch, budget - done));
      if (n === 0) break;
      if (!this.port && !this.pcap) {
        this.loopInWasm(pair, tx, n);
        tx.pushPopped(n);
        done += n;
        continue;
      }
      tx.copyOut(n, this.staging, this.stride); // header + frame of every chain, in wasm
      const frames: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        const len = tx.readBytes(i);
        if (len < VIRTIO_NET_HDR_SIZE + 14 || len > this.stride) {
          st.txErrors++;
          continue;
        }
        const at = this.staging + i * this.stride;
        frames.push(u8.subarray(at + VIRTIO_NET_HDR_SIZE, at + len));
      }
      st.txPackets += frames.length;
      tx.pushPopped(n);
      done += n;
      if (this.pcap) for (const f of frames) this.pcap.write(f);
      if (this.port) this.port(frames);
      else if (this.linkUp) this.inject(pair, frames, true);
      else st.drops += frames.length;
    }
    return done;
  }

  /**
   * Loopback without leaving wasm: the receive filter classifies the tx batch, the accepted
   * frames are copied chain to chain into as many rx buffers, and counters come back in memory.
   */
  private loopInWasm(pair: number, tx: DeviceQueue, n: number): void {
    const ex = this.platform.exports;
    const u32 = this.platform.u32;
    const st = this.pairStats[pair]!;
    const f = this.getDriverFeatures();
    this.ctrl.sync(this.platform.u8, this.filterBlock, this.config.subarray(CFG_MAC, CFG_MAC + 6), hasFeature(f, VIRTIO_NET_F_CTRL_VLAN));
    const sc = this.scratch >> 2;
    u32[sc + 6] = 0; // filtered
    u32[sc + 7] = 0; // not frames
    const ok = ex.net_filter(tx.chainsAddr, n, tx.segsAddr, this.filterBlock, this.stride, this.verdict, this.scratch);
    st.filtered += u32[sc + 6]!;
    st.txErrors += u32[sc + 7]!;
    st.txPackets += n - u32[sc + 7]!;
    const rx = this.queue(2 * pair);
    const m = rx && this.linkUp && ok > 0 ? rx.pop(ok) : 0;
    if (m > 0) {
      const ls = this.loopStats >> 2;
      u32[ls] = u32[ls + 1] = u32[ls + 2] = 0;
      ex.net_loop(tx.chainsAddr, n, tx.segsAddr, this.verdict, rx!.chainsAddr, m, rx!.segsAddr, this.loopStats);
      st.packets += u32[ls]!;
      st.bytes += u32[ls + 1]!;
      st.drops += u32[ls + 2]!;
      rx!.pushPopped(m);
    }
    st.drops += ok - m; // no rx buffer (or link down) for the rest
  }

  /** Puts frames into the rx queue of `pair`: staged with a zeroed header, scattered in wasm. */
  private inject(pair: number, all: readonly Uint8Array[], looped = false): number {
    const rx = this.queue(2 * pair);
    const st = this.pairStats[pair]!;
    // The receive filter of the control queue (§5.1.6.5.1-2) decides what rx sees.
    const own = this.config.subarray(CFG_MAC, CFG_MAC + 6);
    const vlanFilter = hasFeature(this.getDriverFeatures(), VIRTIO_NET_F_CTRL_VLAN);
    // Anything shorter than an Ethernet header is not a frame: dropped and counted.
    const whole = all.every((f) => f.length >= 14) ? all : all.filter((f) => f.length >= 14);
    st.drops += all.length - whole.length;
    const frames = this.ctrl.rx.promisc ? whole : whole.filter((f) => this.ctrl.accepts(f, own, vlanFilter));
    st.filtered += whole.length - frames.length;
    if (!rx) {
      st.drops += frames.length;
      return 0;
    }
    const u8 = this.platform.u8;
    const u32 = this.platform.u32;
    let delivered = 0;
    let k = 0;
    while (k < frames.length) {
      const m = rx.pop(Math.min(this.batch, frames.length - k));
      if (m === 0) break;
      for (let i = 0; i < m; i++) {
        const f = frames[k + i]!;
        const len = VIRTIO_NET_HDR_SIZE + f.length;
        const fits = len <= this.stride && len <= rx.writeBytes(i);
        u32[(this.lens >> 2) + i] = fits ? len : 0;
        if (fits) {
          const at = this.rxStaging + i * this.stride;
          u8.fill(0, at, at + VIRTIO_NET_HDR_SIZE);
          // §5.1.6.4: num_buffers is how many buffers the frame took — 1 without MRG_RXBUF, and
          // 1 with it too, since this device never merges (a frame that does not fit is dropped).
          u8[at + 10] = 1;
          u8.set(f, at + VIRTIO_NET_HDR_SIZE);
          st.packets++;
          st.bytes += len;
          delivered++;
          if (this.pcap && !looped) this.pcap.write(f);
        } else {
          st.drops++;
        }
      }
      rx.copyIn(m, this.rxStaging, this.stride, this.lens);
      rx.pushPopped(m);
      k += m;
    }
    st.drops += frames.length - k; // no rx buffer for the rest (oversize ones were counted above)
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
