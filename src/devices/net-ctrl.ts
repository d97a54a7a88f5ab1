// virtio-net control virtqueue state and commands (VIRTIO 1.3 §5.1.6.5, linux/virtio_net.h):
// RX mode, MAC table, MAC address, VLAN filter, multiqueue pairs — and the receive filter they
// add up to (§5.1.6.5.1-2), which the datapath applies to every frame headed for rx.

/** Command classes and commands (linux/virtio_net.h). */
export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;
export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;
export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;
export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
/** Command answers. */
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;

/** Most entries per MAC table we keep (QEMU's MAC_TABLE_ENTRIES is 64). */
export const MAC_TABLE_MAX = 64;

/** Bytes of the filter block: flags, mac, two 64-entry tables, a 4096-bit VLAN bitmap. */
export const FILTER_BLOCK_SIZE = 788 + 512;

/** The RX mode flags (VIRTIO_NET_CTRL_RX_*). */
export interface RxMode {
  promisc: boolean;
  allmulti: boolean;
  alluni: boolean;
  nomulti: boolean;
  nouni: boolean;
  nobcast: boolean;
}

/** Which command groups the negotiated features allow. */
export interface CtrlCaps {
  rx: boolean;
  rxExtra: boolean;
  vlan: boolean;
  macAddr: boolean;
  mq: boolean;
  announce: boolean;
  maxPairs: number;
}

/** Control-queue state of one device: what survives migration as "control-queue state". */
export class NetCtrlState {
  /**
   * RX mode. Promiscuous at reset, as QEMU's virtio-net does "for compatibility" until the
   * driver sets a mode (the spec leaves the initial filter to the device).
   */
  rx: RxMode = { promisc: true, allmulti: false, alluni: false, nomulti: false, nouni: false, nobcast: false };
  /** Extra unicast addresses accepted. */
  uni: string[] = [];
  /** Multicast addresses accepted. */
  multi: string[] = [];
  /** VLAN ids accepted (only enforced when VIRTIO_NET_F_CTRL_VLAN was negotiated). */
  vlans = new Set<number>();
  /** Active queue pairs (1 until VQ_PAIRS_SET). */
  pairs = 1;
  /** The tables changed since the last sync(). */
  dirty = true;

  /** Back to the reset state. */
  reset(): void {
    Object.assign(this, new NetCtrlState());
  }

  /**
   * Writes the filter block the wasm datapath reads (assembly/dev/net.ts): flags, own MAC,
   * and — when they changed — the MAC tables and the VLAN bitmap. FILTER_BLOCK_SIZE bytes.
   */
  sync(u8: Uint8Array, at: number, ownMac: Uint8Array, vlanFilter: boolean): void {
    const r = this.rx;
    const flags = (r.promisc ? 1 : 0) | (r.allmulti ? 2 : 0) | (r.alluni ? 4 : 0) | (r.nomulti ? 8 : 0) |
      (r.nouni ? 16 : 0) | (r.nobcast ? 32 : 0) | (vlanFilter ? 64 : 0);
    const dv = new DataView(u8.buffer, at, FILTER_BLOCK_SIZE);
    dv.setUint32(0, flags, true);
    u8.set(ownMac, at + 4);
    if (!this.dirty) return;
    dv.setUint32(12, this.uni.length, true);
    dv.setUint32(16, this.multi.length, true);
    const put = (list: string[], o: number) => list.forEach((m, i) => u8.set(m.split(':').map((x) => parseInt(x, 16)), at + o + 6 * i));
    put(this.uni, 20);
    put(this.multi, 404);
    u8.fill(0, at + 788, at + FILTER_BLOCK_SIZE);
    for (const v of this.vlans) u8[at + 788 + (v >> 3)]! |= 1 << (v & 7);
    this.dirty = false;
  }

  /**
   * Runs one command: class, command and its data. Returns VIRTIO_NET_OK or VIRTIO_NET_ERR;
   * `setMac` is called for MAC_ADDR_SET (the device updates its config space).
   */
  execute(cls: number, cmd: number, data: Uint8Array, caps: CtrlCaps, setMac: (mac: Uint8Array) => void): number {
    this.dirty = true;
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    switch (cls) {
      case VIRTIO_NET_CTRL_RX: {
        if (!caps.rx || data.length !== 1) return VIRTIO_NET_ERR;
        const on = data[0] !== 0;
        const key = (['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'] as const)[cmd];
        if (key === undefined || (cmd >= VIRTIO_NET_CTRL_RX_ALLUNI && !caps.rxExtra)) return VIRTIO_NET_ERR;
        this.rx[key] = on;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_MAC: {
        if (cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
          if (!caps.macAddr || data.length !== 6 || data[0]! & 1) return VIRTIO_NET_ERR;
          setMac(data.slice());
          return VIRTIO_NET_OK;
        }
        if (cmd !== VIRTIO_NET_CTRL_MAC_TABLE_SET || !caps.rx) return VIRTIO_NET_ERR;
        // Two struct virtio_net_ctrl_mac { le32 entries; u8 macs[entries][6]; }: unicast, multicast.
        const tables: string[][] = [];
        let o = 0;
        for (let t = 0; t < 2; t++) {
          if (o + 4 > data.length) return VIRTIO_NET_ERR;
          const n = dv.getUint32(o, true);
          o += 4;
          if (n > MAC_TABLE_MAX || o + 6 * n > data.length) return VIRTIO_NET_ERR;
          const list: string[] = [];
          for (let i = 0; i < n; i++, o += 6) list.push(macKey(data, o));
          tables.push(list);
        }
        if (o !== data.length) return VIRTIO_NET_ERR;
        this.uni = tables[0]!;
        this.multi = tables[1]!;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_VLAN: {
        if (!caps.vlan || data.length !== 2) return VIRTIO_NET_ERR;
        const vid = dv.getUint16(0, true);
        if (vid >= 4095) return VIRTIO_NET_ERR; // 12-bit id; 4095 is reserved
        if (cmd === VIRTIO_NET_CTRL_VLAN_ADD) this.vlans.add(vid);
        else if (cmd === VIRTIO_NET_CTRL_VLAN_DEL) this.vlans.delete(vid);
        else return VIRTIO_NET_ERR;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_ANNOUNCE:
        return caps.announce && cmd === VIRTIO_NET_CTRL_ANNOUNCE_ACK && data.length === 0 ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
      case VIRTIO_NET_CTRL_MQ: {
        if (!caps.mq || cmd !== VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || data.length !== 2) return VIRTIO_NET_ERR;
        const n = dv.getUint16(0, true);
        // §5.1.6.5.6.1: 1 ≤ virtqueue_pairs ≤ max_virtqueue_pairs.
        if (n < 1 || n > caps.maxPairs) return VIRTIO_NET_ERR;
        this.pairs = n;
        return VIRTIO_NET_OK;
      }
      default:
        return VIRTIO_NET_ERR;
    }
  }

  /**
   * The receive filter (§5.1.6.5.1-2, QEMU receive_filter order): promiscuous takes all;
   * with VLAN filtering a tagged frame needs its id in the table; broadcast unless nobcast;
   * multicast by nomulti/allmulti/table; unicast by nouni/alluni/own MAC/table.
   */
  accepts(frame: Uint8Array, ownMac: Uint8Array, vlanFilter: boolean): boolean {
    if (frame.length < 14) return false; // not an Ethernet frame
    if (this.rx.promisc) return true;
    if (vlanFilter && frame.length >= 16 && frame[12] === 0x81 && frame[13] === 0x00) {
      const vid = ((frame[14]! << 8) | frame[15]!) & 0xfff;
      if (!this.vlans.has(vid)) return false;
    }
    const d0 = frame[0]!;
    if (d0 & 1) {
      if (frame[0] === 0xff && frame[1] === 0xff && frame[2] === 0xff && frame[3] === 0xff && frame[4] === 0xff && frame[5] === 0xff) {
        return !this.rx.nobcast;
      }
      if (this.rx.nomulti) return false;
      return this.rx.allmulti || this.multi.includes(macKey(frame, 0));
    }
    if (this.rx.nouni) return false;
    if (this.rx.alluni) return true;
    let own = true;
    for (let i = 0; i < 6; i++) if (frame[i] !== ownMac[i]) own = false;
    return own || this.uni.includes(macKey(frame, 0));
  }

  /** Plain-data snapshot (for migration). */
  save(): { rx: RxMode; uni: string[]; multi: string[]; vlans: number[]; pairs: number } {
    return { rx: { ...this.rx }, uni: [...this.uni], multi: [...this.multi], vlans: [...this.vlans].sort((a, b) => a - b), pairs: this.pairs };
  }
}

function macKey(b: Uint8Array, o: number): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += (i ? ':' : '') + b[o + i]!.toString(16).padStart(2, '0');
  return s;
}
