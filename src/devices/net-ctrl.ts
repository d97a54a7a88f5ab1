// virtio-net control virtqueue constants and state (VIRTIO 1.3 §5.1.6.5, linux/virtio_net.h):
// RX mode, MAC table, MAC address, VLAN filter, multiqueue pairs. The state lives in a filter
// block in the platform memory; the wasm datapath (assembly/dev/net.ts) is the only command
// parser and the only receive filter (§5.1.6.5.1-2); this file lays the block out and reads it.

// The command constants are the spec's (src/virtio/net-ctrl.ts); re-exported for device users.
export {
  VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, VIRTIO_NET_CTRL_RX_ALLMULTI, VIRTIO_NET_CTRL_RX_ALLUNI,
  VIRTIO_NET_CTRL_RX_NOMULTI, VIRTIO_NET_CTRL_RX_NOUNI, VIRTIO_NET_CTRL_RX_NOBCAST, VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MAC_ADDR_SET, VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD, VIRTIO_NET_CTRL_VLAN_DEL, VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_OK, VIRTIO_NET_ERR,
} from '../virtio/net-ctrl.ts';
export type { RxMode } from '../virtio/net-ctrl.ts';
import type { RxMode } from '../virtio/net-ctrl.ts';
import { VirtioError, Code } from '../errors.ts';
import { macAt, putMac } from '../virtio/mac.ts';

/** Most entries per MAC table we keep (QEMU's MAC_TABLE_ENTRIES is 64). */
export const MAC_TABLE_MAX = 64;

// The filter block (assembly/dev/net.ts lays out the same offsets): the device's whole
// control-queue state, which the wasm command parser writes and the wasm receive filter reads.
const F_FLAGS = 0;
const F_MAC = 4;
const F_PAIRS = 10;
const F_NUNI = 12;
const F_NMULTI = 16;
const F_UNI = 20;
const F_MULTI = 404;
const F_VLANS = 788;
const F_CAPS = 1300;
const F_EVENTS = 1304;

/** Bytes of the filter block. */
export const FILTER_BLOCK_SIZE = 1312;

/** Caps bits of the filter block: the command groups the negotiated features allow. */
export const CTRL_CAP_RX = 1;
/** VIRTIO_NET_F_CTRL_RX_EXTRA. */
export const CTRL_CAP_RX_EXTRA = 2;
/** VIRTIO_NET_F_CTRL_VLAN (the VLAN filter is on). */
export const CTRL_CAP_VLAN = 4;
/** VIRTIO_NET_F_CTRL_MAC_ADDR. */
export const CTRL_CAP_MAC_ADDR = 8;
/** VIRTIO_NET_F_MQ. */
export const CTRL_CAP_MQ = 16;
/** VIRTIO_NET_F_GUEST_ANNOUNCE. */
export const CTRL_CAP_ANNOUNCE = 32;

const RX_KEYS = ['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'] as const;

/** Plain-data control-queue state (for migration and inspection). */
export interface NetCtrlSnapshot {
  /** RX mode flags. */
  rx: RxMode;
  /** Unicast MAC table ("aa:bb:cc:dd:ee:ff"). */
  uni: string[];
  /** Multicast MAC table. */
  multi: string[];
  /** VLAN ids added, ascending. */
  vlans: number[];
  /** Active queue pairs. */
  pairs: number;
}

/**
 * Control-queue state of one device: a read-only view of the filter block in the platform's
 * memory. Commands are parsed and applied in wasm (assembly/dev/net.ts, the only parser), and
 * the receive filter runs there too; this class reads the result.
 */
export class NetCtrlState {
  private readonly mem: () => Uint8Array;
  /** Memory offset of the filter block. */
  readonly offset: number;

  constructor(mem: () => Uint8Array, offset: number) {
    this.mem = mem;
    this.offset = offset;
  }

  private get dv(): DataView {
    const u8 = this.mem();
    return new DataView(u8.buffer, u8.byteOffset + this.offset, FILTER_BLOCK_SIZE);
  }

  /**
   * Back to the reset state: promiscuous, as QEMU's virtio-net is "for compatibility" until
   * the driver sets a mode (the spec leaves the initial filter to the device); empty tables,
   * no VLANs, one queue pair; `mac` is the device's own address.
   */
  reset(mac: Uint8Array): void {
    const u8 = this.mem();
    u8.fill(0, this.offset, this.offset + FILTER_BLOCK_SIZE);
    const dv = this.dv;
    dv.setUint32(F_FLAGS, 1, true);
    u8.set(mac, this.offset + F_MAC);
    dv.setUint16(F_PAIRS, 1, true);
  }

  /** Sets the device's own MAC address (`vdpa dev set … mac`), keeping the tables. */
  setMac(mac: Uint8Array): void {
    this.mem().set(mac, this.offset + F_MAC);
  }

  /** Sets the command groups the negotiated features allow and the most queue pairs. */
  setCaps(caps: number, maxPairs: number): void {
    this.dv.setUint32(F_CAPS, (caps & 0xffff) | (maxPairs << 16), true);
  }

  /** Returns and clears the MAC address a MAC_ADDR_SET wrote, or null if none did. */
  takeNewMac(): Uint8Array | null {
    const dv = this.dv;
    const ev = dv.getUint32(F_EVENTS, true);
    if (!(ev & 1)) return null;
    dv.setUint32(F_EVENTS, ev & ~1, true);
    return this.mem().slice(this.offset + F_MAC, this.offset + F_MAC + 6);
  }

  /** Returns and clears "the driver acked an announcement" (VIRTIO_NET_CTRL_ANNOUNCE_ACK ran). */
  takeAnnounceAck(): boolean {
    const dv = this.dv;
    const ev = dv.getUint32(F_EVENTS, true);
    if (!(ev & 2)) return false;
    dv.setUint32(F_EVENTS, ev & ~2, true);
    return true;
  }

  /**
   * Writes a saved state back (migration): RX mode, both MAC tables, VLANs, pairs, and the
   * device's own address `mac`. The caller validated it (`checkNetCtrlSnapshot`).
   */
  load(s: NetCtrlSnapshot, mac: Uint8Array): void {
    const u8 = this.mem();
    const caps = this.dv.getUint32(F_CAPS, true);
    u8.fill(0, this.offset, this.offset + FILTER_BLOCK_SIZE);
    const dv = this.dv;
    let fl = 0;
    RX_KEYS.forEach((k, i) => { if (s.rx[k]) fl |= 1 << i; });
    dv.setUint32(F_FLAGS, fl, true);
    u8.set(mac, this.offset + F_MAC);
    dv.setUint16(F_PAIRS, s.pairs, true);
    dv.setUint32(F_NUNI, s.uni.length, true);
    s.uni.forEach((m, i) => putMac(m, u8, this.offset + F_UNI + 6 * i));
    dv.setUint32(F_NMULTI, s.multi.length, true);
    s.multi.forEach((m, i) => putMac(m, u8, this.offset + F_MULTI + 6 * i));
    for (const v of s.vlans) u8[this.offset + F_VLANS + (v >> 3)]! |= 1 << (v & 7);
    dv.setUint32(F_CAPS, caps, true);
  }

  /** RX mode (a copy). */
  get rx(): RxMode {
    const fl = this.dv.getUint32(F_FLAGS, true);
    const r = {} as RxMode;
    RX_KEYS.forEach((k, i) => { r[k] = (fl & (1 << i)) !== 0; });
    return r;
  }

  /** Extra unicast addresses accepted. */
  get uni(): string[] {
    return this.table(F_NUNI, F_UNI);
  }

  /** Multicast addresses accepted. */
  get multi(): string[] {
    return this.table(F_NMULTI, F_MULTI);
  }

  /** VLAN ids accepted (enforced only when VIRTIO_NET_F_CTRL_VLAN was negotiated), ascending. */
  get vlans(): number[] {
    const u8 = this.mem();
    const out: number[] = [];
    for (let v = 0; v < 4096; v++) if (u8[this.offset + F_VLANS + (v >> 3)]! & (1 << (v & 7))) out.push(v);
    return out;
  }

  /** Active queue pairs (1 until VQ_PAIRS_SET). */
  get pairs(): number {
    // Read per datapath pass: two byte loads, no DataView.
    const u8 = this.mem();
    const o = this.offset + F_PAIRS;
    return u8[o]! | (u8[o + 1]! << 8);
  }

  /**
   * A copy of the part of the filter block a migration carries (RX mode, own MAC, pairs, both
   * tables, VLANs; not the caps, which follow the features, nor the one-shot events): a
   * migration's early save compares it at switchover with {@link sameAs}.
   */
  mark(): Uint8Array {
    return this.mem().slice(this.offset, this.offset + F_CAPS);
  }

  /** True if the filter block still holds what {@link mark} copied (no allocation). */
  sameAs(m: Uint8Array): boolean {
    if (m.length !== F_CAPS) return false;
    const u8 = this.mem();
    const o = this.offset;
    for (let i = 0; i < F_CAPS; i++) if (u8[o + i] !== m[i]) return false;
    return true;
  }

  /** Plain-data snapshot (for migration). */
  save(): NetCtrlSnapshot {
    return { rx: this.rx, uni: this.uni, multi: this.multi, vlans: this.vlans, pairs: this.pairs };
  }

  private table(countAt: number, at: number): string[] {
    const n = Math.min(this.dv.getUint32(countAt, true), MAC_TABLE_MAX);
    const u8 = this.mem();
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(macAt(u8, this.offset + at + 6 * i));
    return out;
  }
}

/** The RX mode keys in flag-bit order (VIRTIO_NET_CTRL_RX_* command numbers). */
export const NET_RX_KEYS: readonly (keyof RxMode)[] = RX_KEYS;

/**
 * Validates a control-queue snapshot for a device with `maxPairs` queue pairs (migration):
 * every RX key a boolean, at most MAC_TABLE_MAX well-formed addresses per table, VLAN ids
 * 0..4095 ascending and unique, 1 ≤ pairs ≤ maxPairs. Throws InvalidArgument; returns it typed.
 */
export function checkNetCtrlSnapshot(v: unknown, maxPairs: number): NetCtrlSnapshot {
  const bad = (why: string): never => { throw new VirtioError(Code.InvalidArgument, `net control state: ${why}`); };
  if (typeof v !== 'object' || v === null) bad('not an object');
  const o = v as Record<string, unknown>;
  const rx = o.rx as Record<string, unknown> | null;
  if (typeof rx !== 'object' || rx === null) bad('rx is not an object');
  for (const k of RX_KEYS) if (typeof rx![k] !== 'boolean') bad(`rx.${k} is not a boolean`);
  const table = (t: unknown, name: string): string[] => {
    if (!Array.isArray(t) || t.length > MAC_TABLE_MAX) bad(`${name} must be an array of at most ${MAC_TABLE_MAX} MACs`);
    for (const m of t as unknown[]) if (typeof m !== 'string' || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m)) bad(`${name} entry ${String(m)} is not a MAC`);
    return [...(t as string[])];
  };
  const uni = table(o.uni, 'uni');
  const multi = table(o.multi, 'multi');
  if (!Array.isArray(o.vlans)) bad('vlans is not an array');
  const vlans = o.vlans as unknown[];
  vlans.forEach((x, i) => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 4095) bad(`vlan ${String(x)} is outside 0..4095`);
    if (i > 0 && (x as number) <= (vlans[i - 1] as number)) bad('vlans must be ascending and unique');
  });
  if (typeof o.pairs !== 'number' || !Number.isInteger(o.pairs) || o.pairs < 1 || o.pairs > maxPairs) bad(`pairs ${String(o.pairs)} is outside 1..${maxPairs}`);
  const r = {} as RxMode;
  for (const k of RX_KEYS) r[k] = rx![k] as boolean;
  return { rx: r, uni, multi, vlans: [...(vlans as number[])], pairs: o.pairs as number };
}

