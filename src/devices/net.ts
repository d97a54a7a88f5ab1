// vdpasim_net (Linux drivers/vdpa/vdpa_sim/vdpa_sim_net.c): a virtio-net device (VIRTIO 1.3
// §5.1) whose datapath loops every frame sent on a tx queue back on the paired rx queue.
// Queues: rx0, tx0, rx1, tx1, … (2 × max_virtqueue_pairs). Frames move in batches: the device
// gathers a batch of tx chains into a staging area and scatters them into rx chains, both in
// wasm (one call per batch).

import { VirtioError, Code } from '../errors.ts';
import { VdpaSim, features } from './sim-core.ts';
import type { Platform } from '../platform/platform.ts';
import {
  VIRTIO_ID_NET, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER, VIRTIO_F_ACCESS_PLATFORM,
} from '../virtio/constants.ts';

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
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_IN_ORDER,
);

/** Most queue pairs a vdpasim_net device has (multiqueue steering comes with the control queue). */
export const VDPASIM_NET_MAX_VQP = 1;

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
  /** Frames looped back. */
  packets: number;
  /** Bytes looped back (headers included). */
  bytes: number;
  /** Frames dropped: no rx buffer, or larger than the rx buffer. */
  drops: number;
}

/** A simulated virtio-net device in loopback. */
export class VdpaSimNet extends VdpaSim {
  /** Queue pairs. */
  readonly maxVqp: number;
  /** Per-pair loopback counters. */
  readonly pairStats: NetPairStats[];
  private readonly staging: number;
  private readonly stride: number;
  private readonly lens: number;

  constructor(platform: Platform, opts: VdpaSimNetOptions) {
    const maxVqp = opts.maxVqp ?? 1;
    const mtu = opts.mtu ?? 1500;
    const deviceFeatures = opts.deviceFeatures ?? VDPASIM_NET_FEATURES;
    if (!Number.isInteger(maxVqp) || maxVqp < 1 || maxVqp > VDPASIM_NET_MAX_VQP) throw new VirtioError(Code.InvalidArgument, `max_vqp ${maxVqp} is outside 1..${VDPASIM_NET_MAX_VQP}`);
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new VirtioError(Code.InvalidArgument, `mtu ${mtu} is outside 68..65535`);
    super(platform, { name: opts.name, deviceId: VIRTIO_ID_NET, supportedFeatures: deviceFeatures, nvqs: 2 * maxVqp, configSize: CFG_SIZE });
    this.maxVqp = maxVqp;
    this.pairStats = Array.from({ length: maxVqp }, () => ({ packets: 0, bytes: 0, drops: 0 }));
    const mac = opts.mac ?? randomMac();
    if (mac.length !== 6) throw new VirtioError(Code.InvalidArgument, 'a MAC address has 6 bytes');
    this.config.set(mac, CFG_MAC);
    this.configView.setUint16(CFG_STATUS, VIRTIO_NET_S_LINK_UP, true);
    this.configView.setUint16(CFG_MAX_VQP, maxVqp, true);
    this.configView.setUint16(CFG_MTU, mtu, true);
    // Staging for one batch: header + Ethernet header + MTU per frame.
    this.stride = VIRTIO_NET_HDR_SIZE + 14 + mtu;
    this.staging = platform.priv.alloc(this.batch * this.stride, 64);
    this.lens = platform.priv.alloc(this.batch * 4, 4);
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

  protected override vqType(idx: number): string {
    return idx % 2 === 0 ? 'rx' : 'tx';
  }

  protected override datapath(budget: number, only?: number): number {
    let done = 0;
    for (let pair = 0; pair < this.maxVqp; pair++) {
      if (only !== undefined && only >> 1 !== pair) continue;
      done += this.loop(pair, budget);
    }
    return done;
  }

  /** Loops tx frames of one pair back into its rx buffers, a batch at a time. */
  private loop(pair: number, budget: number): number {
    const tx = this.queue(2 * pair + 1);
    const rx = this.queue(2 * pair);
    if (!tx) return 0;
    const st = this.pairStats[pair]!;
    let done = 0;
    let rearmed = false;
    while (done < budget) {
      const n = tx.pop(Math.min(this.batch, budget - done));
      if (n === 0) {
        // Ask for the next kick, then look once more for buffers that raced in (as vhost's
        // handle_tx does with vhost_enable_notify).
        if (!rearmed && tx.enableKick()) {
          rearmed = true;
          continue;
        }
        break;
      }
      rearmed = false;
      const m = rx && this.linkUp ? rx.pop(n) : 0;
      // Gather the frames (header included) into staging, scatter them into the rx chains.
      if (m > 0) {
        tx.copyOut(m, this.staging, this.stride);
        const u32 = this.platform.u32;
        for (let i = 0; i < m; i++) {
          const len = tx.readBytes(i);
          const fits = len <= this.stride && len <= rx!.writeBytes(i) && len >= VIRTIO_NET_HDR_SIZE;
          u32[(this.lens >> 2) + i] = fits ? len : 0;
          if (fits) {
            st.packets++;
            st.bytes += len;
          } else {
            st.drops++;
          }
        }
        rx!.copyIn(m, this.staging, this.stride, this.lens);
        rx!.pushPopped(m);
      }
      st.drops += n - m;
      tx.pushPopped(n);
      done += n;
    }
    return done;
  }
}

/** A locally administered MAC with QEMU's 52:54:00 prefix and three random bytes. */
export function randomMac(): Uint8Array {
  const m = new Uint8Array(6);
  m.set([0x52, 0x54, 0x00]);
  crypto.getRandomValues(m.subarray(3));
  return m;
}
