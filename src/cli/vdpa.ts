// The `vdpa` command-line tool (iproute2 vdpa/vdpa.c; man pages vdpa(8), vdpa-dev(8),
// vdpa-mgmtdev(8)) over an in-process vdpa bus. The tool plays both sides of iproute2's
// netlink socket: it parses arguments as vdpa.c does, answers the request from the bus as the
// kernel's drivers/vdpa/vdpa.c would (which attributes a reply carries), and prints the reply
// with vdpa.c's text layout or lib/json_writer.c's JSON (4-space indentation with -p).
// Errors thrown by the bus print as netlink errors do: "Error: <extack>." then
// "kernel answers: <strerror(errno)>". Everything a user can get wrong returns exit code 1;
// runVdpa never throws.

import { VirtioError, Code } from '../errors.ts';
import { formatMac } from '../mgmt/mgmtdev.ts';
import type { VdpaBus, VdpaDevice } from '../bus/bus.ts';
import type { MgmtDevice, MgmtDevAttrs } from '../mgmt/mgmtdev.ts';
import {
  VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_VQ,
} from '../virtio/constants.ts';

// ───────────────────────── context ─────────────────────────

/** Where runVdpa reads and writes. */
export interface VdpaCliContext {
  /** The bus the commands act on (one bus for a whole -batch run). */
  bus: VdpaBus;
  /** Standard output: receives whole chunks, newlines included. */
  out: (s: string) => void;
  /** Standard error: receives whole lines, newlines included. */
  err: (s: string) => void;
  /** Reads a -batch file ("-" is standard input). Without it, -batch fails. */
  readFile?: (path: string) => string;
  /** Version string printed by -V. @default "vdpa-wasm" */
  version?: string;
}

// ───────────────────────── feature and class names (vdpa.c) ─────────────────────────

/** Virtio-net feature names (vdpa.c net_feature_strs), by bit. */
export const NET_FEATURE_NAMES: Readonly<Record<number, string>> = {
  0: 'CSUM', 1: 'GUEST_CSUM', 2: 'CTRL_GUEST_OFFLOADS', 3: 'MTU', 5: 'MAC', 7: 'GUEST_TSO4', 8: 'GUEST_TSO6',
  9: 'GUEST_ECN', 10: 'GUEST_UFO', 11: 'HOST_TSO4', 12: 'HOST_TSO6', 13: 'HOST_ECN', 14: 'HOST_UFO',
  15: 'MRG_RXBUF', 16: 'STATUS', 17: 'CTRL_VQ', 18: 'CTRL_RX', 19: 'CTRL_VLAN', 20: 'CTRL_RX_EXTRA',
  21: 'GUEST_ANNOUNCE', 22: 'MQ', 23: 'CTRL_MAC_ADDR', 24: 'NOTIFY_ON_EMPTY', 27: 'ANY_LAYOUT',
  57: 'HASH_REPORT', 60: 'RSS', 61: 'RSC_EXT', 62: 'STANDBY', 63: 'SPEED_DUPLEX',
};

/** Transport feature names, bits 28..41 (vdpa.c ext_feature_strs). */
export const TRANSPORT_FEATURE_NAMES: Readonly<Record<number, string>> = {
  28: 'RING_INDIRECT_DESC', 29: 'RING_EVENT_IDX', 32: 'VERSION_1', 33: 'ACCESS_PLATFORM', 34: 'RING_PACKED',
  35: 'IN_ORDER', 36: 'ORDER_PLATFORM', 37: 'SR_IOV', 38: 'NOTIFICATION_DATA',
};

const TRANSPORT_F_START = 28;
const TRANSPORT_F_END = 41;

/**
 * The features of `features` as vdpa.c's print_features names them: transport bits by
 * name, device bits by name for net (dev_id 1), any other bit as its number (printed bit_N).
 */
export function featureNames(features: bigint, deviceId: number): (string | number)[] {
  const names: (string | number)[] = [];
  for (let i = 0; i < 64; i++) {
    if (!((features >> BigInt(i)) & 1n)) continue;
    const s = i >= TRANSPORT_F_START && i <= TRANSPORT_F_END
      ? TRANSPORT_FEATURE_NAMES[i]
      : deviceId === VIRTIO_ID_NET ? NET_FEATURE_NAMES[i] : undefined;
    names.push(s ?? i);
  }
  return names;
}

/** Class names of vdpa.c's class_map. */
const CLASS_IDS: Readonly<Record<string, number>> = { net: VIRTIO_ID_NET, block: VIRTIO_ID_BLOCK };

/** vdpa.c device_type_name. */
export function deviceTypeName(id: number): string {
  return id === VIRTIO_ID_NET ? 'network' : id === VIRTIO_ID_BLOCK ? 'block' : '<unknown type>';
}

// ───────────────────────── replies (what the kernel would send) ─────────────────────────

/** A VDPA_CMD_MGMTDEV_GET reply. */
export interface MgmtdevInfo {
  name: string;
  /** Class names, in class-id order (the kernel sends a bitmask). */
  classes: string[];
  maxSupportedVqs: number;
  supportedFeatures: bigint;
}

/** A VDPA_CMD_DEV_GET reply. */
export interface DevInfo {
  name: string;
  deviceId: number;
  mgmtdev: string;
  vendorId: number;
  maxVqs: number;
  maxVqSize: number;
}

/** A VDPA_CMD_DEV_CONFIG_GET reply (attributes present as the kernel would put them). */
export interface DevConfigInfo {
  name: string;
  deviceId: number;
  mac?: Uint8Array;
  /** virtio_net_config.status (present with VIRTIO_NET_F_STATUS). */
  netStatus?: number;
  /** Present with VIRTIO_NET_F_MQ. */
  maxVqp?: number;
  mtu?: number;
  /** Present once the device status has FEATURES_OK. */
  negotiatedFeatures?: bigint;
}

/** A VDPA_CMD_DEV_VSTATS_GET reply. */
export interface DevVstatsInfo {
  name: string;
  deviceId: number;
  qidx: number;
  maxVqp?: number;
  negotiatedFeatures: bigint;
  stats: [name: string, value: number][];
}

function mgmtdevInfo(m: MgmtDevice): MgmtdevInfo {
  const classes = [...m.supportedClasses].sort((a, b) => (CLASS_IDS[a] ?? 64) - (CLASS_IDS[b] ?? 64));
  return { name: m.name, classes, maxSupportedVqs: m.maxSupportedVqs, supportedFeatures: m.supportedFeatures };
}

function devInfo(bus: VdpaBus, dev: VdpaDevice): DevInfo {
  return {
    name: dev.name, deviceId: dev.getDeviceId(), mgmtdev: bus.mgmtDeviceOf(dev.name) ?? '',
    vendorId: dev.getVendorId(), maxVqs: dev.nvqs, maxVqSize: dev.getVqNumMax(),
  };
}

const bit = (f: bigint, b: number): boolean => ((f >> BigInt(b)) & 1n) === 1n;

function devConfigInfo(dev: VdpaDevice): DevConfigInfo {
  const info: DevConfigInfo = { name: dev.name, deviceId: dev.getDeviceId() };
  if (dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK) info.negotiatedFeatures = dev.getDriverFeatures();
  if (info.deviceId === VIRTIO_ID_NET) {
    // vdpa_dev_net_config_fill: each field only if the device offers its feature.
    const f = dev.getDeviceFeatures();
    const cfg = dev.getConfig(0, 12);
    const v = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
    if (bit(f, VIRTIO_NET_F_MTU)) info.mtu = v.getUint16(10, true);
    if (bit(f, VIRTIO_NET_F_MAC)) info.mac = cfg.slice(0, 6);
    if (bit(f, VIRTIO_NET_F_STATUS)) info.netStatus = v.getUint16(6, true);
    if (bit(f, VIRTIO_NET_F_MQ)) info.maxVqp = v.getUint16(8, true);
  }
  return info;
}

/** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX: the kernel's upper bound for a vstats queue index. */
const VQ_PAIRS_MAX = 0x8000;

function devVstatsInfo(dev: VdpaDevice, qidx: number): DevVstatsInfo {
  // vdpa_dev_vendor_stats_fill / vdpa_fill_stats_rec.
  const deviceId = dev.getDeviceId();
  if (deviceId !== VIRTIO_ID_NET) throw new VirtioError(Code.Unsupported, `vendor stats are not supported for ${deviceTypeName(deviceId)} devices`);
  if (qidx > VQ_PAIRS_MAX) throw new KernelError(ERANGE, 'queue index exceeds max value');
  if (!dev.getVendorVqStats) throw new VirtioError(Code.Unsupported, `${dev.name} has no vendor statistics`);
  if (!(dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) throw new KernelError(EAGAIN, 'feature negotiation not complete');
  const negotiatedFeatures = dev.getDriverFeatures();
  // The kernel always sends max_virtqueue_pairs here; iproute2 uses it to spot the control queue.
  const cfg = dev.getConfig(8, 2);
  const info: DevVstatsInfo = { name: dev.name, deviceId, qidx, maxVqp: cfg[0]! | (cfg[1]! << 8), negotiatedFeatures, stats: [] };
  if (qidx >= dev.nvqs) throw new VirtioError(Code.InvalidArgument, `queue index ${qidx} is out of range (${dev.nvqs} queues)`);
  info.stats = dev.getVendorVqStats(qidx).stats.map(([n, v]) => [n, v]);
  return info;
}

// ───────────────────────── errors ─────────────────────────

interface Errno {
  errno: number;
  text: string;
}

const EINVAL: Errno = { errno: 22, text: 'Invalid argument' };
const EEXIST: Errno = { errno: 17, text: 'File exists' };
const ENODEV: Errno = { errno: 19, text: 'No such device' };
const EOPNOTSUPP: Errno = { errno: 95, text: 'Operation not supported' };
const EAGAIN: Errno = { errno: 11, text: 'Resource temporarily unavailable' };
const ENOMEM: Errno = { errno: 12, text: 'Cannot allocate memory' };
const ERANGE: Errno = { errno: 34, text: 'Numerical result out of range' };
const EIO: Errno = { errno: 5, text: 'Input/output error' };

/** An error "the kernel" answers with a specific errno. */
class KernelError extends Error {
  constructor(readonly errno: Errno, readonly extack: string) {
    super(extack);
  }
}

/** The errno a bus error answers with (the netlink error of the equivalent kernel call). */
export function errnoOf(code: Code): { errno: number; text: string } {
  switch (code) {
    case Code.InvalidArgument: return EINVAL;
    case Code.AlreadyExists: return EEXIST;
    case Code.NotFound: return ENODEV;
    case Code.Unsupported: return EOPNOTSUPP;
    case Code.FailedPrecondition: return EAGAIN;
    case Code.ResourceExhausted: return ENOMEM;
    default: return EIO;
  }
}

/** A user error found while parsing (already reported on stderr). */
class UsageError extends Error {}

// ───────────────────────── JSON (iproute2 lib/json_writer.c) ─────────────────────────

/** A JSON value; objects keep their key order. */
export type JsonValue = string | number | bigint | boolean | JsonValue[] | { [key: string]: JsonValue };

/**
 * Serializes as iproute2's json_writer does: compact (`{"a":[1,2]}`), or with pretty = true
 * objects indented by 4 spaces per level, `"key": value`, and arrays on one line as `[ 1,2 ]`.
 * No trailing newline (jsonw_destroy adds it).
 */
export function formatJson(v: JsonValue, pretty = false, depth = 0): string {
  const eol = (d: number) => (pretty ? '\n' + '    '.repeat(d) : '');
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'bigint') return v.toString();
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) {
    const items = v.map((x) => formatJson(x, pretty, depth + 1));
    if (!pretty) return `[${items.join(',')}]`;
    return `[ ${items.join(',')}${items.length ? ' ' : ''}]`;
  }
  const entries = Object.entries(v);
  if (entries.length === 0) return '{}';
  const body = entries.map(([k, x]) => `${eol(depth + 1)}${JSON.stringify(k)}:${pretty ? ' ' : ''}${formatJson(x, pretty, depth + 1)}`);
  return `{${body.join(',')}${eol(depth)}}`;
}

// ───────────────────────── formatters (text and JSON of each reply) ─────────────────────────

/** `vdpa mgmtdev show` text of one management device. */
export function formatMgmtdevText(m: MgmtdevInfo): string {
  const classId = m.classes.includes('net') ? VIRTIO_ID_NET : 0;
  return `${m.name}: \n  supported_classes${m.classes.map((c) => ' ' + c).join('')}\n`
    + `  max_supported_vqs ${m.maxSupportedVqs}\n`
    + `  dev_features${featureNames(m.supportedFeatures, classId).map((s) => ' ' + featureText(s)).join('')}\n`;
}

/** `vdpa -j mgmtdev show` value of one management device. */
export function mgmtdevJson(m: MgmtdevInfo): JsonValue {
  const classId = m.classes.includes('net') ? VIRTIO_ID_NET : 0;
  return { supported_classes: m.classes, max_supported_vqs: m.maxSupportedVqs, dev_features: featureNames(m.supportedFeatures, classId) };
}

const featureText = (s: string | number): string => (typeof s === 'number' ? `bit_${s}` : s);

/** `vdpa dev show` text of one device. */
export function formatDevText(d: DevInfo): string {
  return `${d.name}: type ${deviceTypeName(d.deviceId)} mgmtdev ${d.mgmtdev} vendor_id ${d.vendorId} max_vqs ${d.maxVqs} max_vq_size ${d.maxVqSize}\n`;
}

/** `vdpa -j dev show` value of one device. */
export function devJson(d: DevInfo): JsonValue {
  return { type: deviceTypeName(d.deviceId), mgmtdev: d.mgmtdev, vendor_id: d.vendorId, max_vqs: d.maxVqs, max_vq_size: d.maxVqSize };
}

/** `vdpa dev config show` text of one device (vdpa.c pr_out_dev_config: fields end with a space). */
export function formatDevConfigText(c: DevConfigInfo): string {
  let s = `${c.name}: `;
  if (c.deviceId === VIRTIO_ID_NET) {
    if (c.mac) s += `mac ${formatMac(c.mac)} `;
    if (c.netStatus !== undefined) s += `link ${c.netStatus & 1 ? 'up' : 'down'} link_announce ${c.netStatus & 2 ? 'true' : 'false'} `;
    if (c.maxVqp !== undefined) s += `max_vq_pairs ${c.maxVqp} `;
    if (c.mtu !== undefined) s += `mtu ${c.mtu} `;
    if (c.negotiatedFeatures !== undefined) {
      s += `\n  negotiated_features${featureNames(c.negotiatedFeatures, c.deviceId).map((x) => ' ' + featureText(x)).join('')}`;
    }
  }
  return s + '\n';
}

/**
 * `vdpa -j dev config show` value of one device. The "link " and "link_announce " keys end
 * with a space, as vdpa.c spells them.
 */
export function devConfigJson(c: DevConfigInfo): JsonValue {
  const o: { [k: string]: JsonValue } = {};
  if (c.deviceId !== VIRTIO_ID_NET) return o;
  if (c.mac) o.mac = formatMac(c.mac);
  if (c.netStatus !== undefined) {
    o['link '] = c.netStatus & 1 ? 'up' : 'down';
    o['link_announce '] = (c.netStatus & 2) !== 0;
  }
  if (c.maxVqp !== undefined) o.max_vq_pairs = c.maxVqp;
  if (c.mtu !== undefined) o.mtu = c.mtu;
  if (c.negotiatedFeatures !== undefined) o.negotiated_features = featureNames(c.negotiatedFeatures, c.deviceId);
  return o;
}

/** vdpa.c print_queue_type: rx / tx by parity, control_vq after the data queues with CTRL_VQ. */
export function queueTypeName(qidx: number, maxVqp: number, negotiatedFeatures: bigint): string {
  if (bit(negotiatedFeatures, VIRTIO_NET_F_CTRL_VQ) && qidx === 2 * maxVqp) return 'control_vq';
  return qidx & 1 ? 'tx' : 'rx';
}

/** `vdpa dev vstats show` text. */
export function formatVstatsText(v: DevVstatsInfo): string {
  let s = `${v.name}: queue_type ${queueTypeName(v.qidx, v.maxVqp ?? 0, v.negotiatedFeatures)} `;
  for (const [n, x] of v.stats) s += `${n} ${x} `;
  return s + '\n';
}

/** `vdpa -j dev vstats show` value: queue_type, then each counter under its own name. */
export function vstatsJson(v: DevVstatsInfo): JsonValue {
  const o: { [k: string]: JsonValue } = { queue_type: queueTypeName(v.qidx, v.maxVqp ?? 0, v.negotiatedFeatures) };
  for (const [n, x] of v.stats) o[n] = x;
  return o;
}

// ───────────────────────── argument helpers (iproute2 utils.c) ─────────────────────────

/** iproute2's matches(): true if `arg` is a non-empty prefix of `word`. */
export function matches(arg: string, word: string): boolean {
  return arg.length > 0 && word.startsWith(arg);
}

/** get_u16/get_u32 in base 10. */
function parseUint(s: string, max: number): number | null {
  if (!/^\d+$/.test(s)) return null;
  const n = Number(s);
  return n <= max ? n : null;
}

/** get_u64 in base 16 (strtoull accepts an optional 0x). */
function parseHexU64(s: string): bigint | null {
  if (!/^(0[xX])?[0-9a-fA-F]+$/.test(s)) return null;
  const n = BigInt(s.startsWith('0x') || s.startsWith('0X') ? s : '0x' + s);
  return n < 1n << 64n ? n : null;
}

// ───────────────────────── the tool ─────────────────────────

interface Opts {
  json: boolean;
  pretty: boolean;
}

const HELP = 'Usage: vdpa [ OPTIONS ] OBJECT { COMMAND | help }\n'
  + '       vdpa [ -f[orce] ] -b[atch] filename\n'
  + 'where  OBJECT := { mgmtdev | dev }\n'
  + '       OPTIONS := { -V[ersion] | -j[son] | -p[retty] }\n';

const MGMTDEV_HELP = 'Usage: vdpa mgmtdev show [ DEV ]\n';
const DEV_HELP = 'Usage: vdpa dev show [ DEV ]\n'
  + '       vdpa dev add name NAME mgmtdev MANAGEMENTDEV [ device_features DEVICE_FEATURES]\n'
  + '                                                    [ mac MACADDR ] [ mtu MTU ]\n'
  + '                                                    [ max_vqp MAX_VQ_PAIRS ]\n'
  + '       vdpa dev del DEV\n'
  + 'Usage: vdpa dev config COMMAND [ OPTIONS ]\n'
  + 'Usage: vdpa dev vstats COMMAND\n';
const DEV_CONFIG_HELP = 'Usage: vdpa dev config show [ DEV ]\n';
const DEV_VSTATS_HELP = 'Usage: vdpa dev vstats show DEV [qidx QUEUE_INDEX]\n';

class Session {
  constructor(private readonly ctx: VdpaCliContext, private readonly o: Opts) {}

  private get bus(): VdpaBus {
    return this.ctx.bus;
  }

  /** Reports a parse error and aborts the command. */
  private usage(msg: string): never {
    this.ctx.err(msg);
    throw new UsageError(msg);
  }

  /** One command (vdpa_cmd). 0 on success. */
  run(argv: string[]): number {
    try {
      return this.object(argv);
    } catch (e) {
      if (e instanceof UsageError) return 1;
      this.reportKernelError(e);
      return 1;
    }
  }

  private reportKernelError(e: unknown): void {
    let errno: Errno;
    let extack: string;
    if (e instanceof KernelError) {
      errno = e.errno;
      extack = e.extack;
    } else if (e instanceof VirtioError) {
      errno = errnoOf(e.code);
      extack = e.rawMessage;
    } else {
      errno = EIO;
      extack = e instanceof Error ? e.message : String(e);
    }
    // nl_dump_ext_ack, then mnlu_gen_socket_sndrcv's perror-like line.
    if (extack) this.ctx.err(`Error: ${extack}${extack.endsWith('.') ? '' : '.'}\n`);
    this.ctx.err(`kernel answers: ${errno.text}\n`);
  }

  private object(argv: string[]): number {
    const [w, ...rest] = argv;
    if (w === undefined || matches(w, 'help')) {
      this.ctx.err(HELP);
      return 0;
    }
    if (matches(w, 'mgmtdev')) return this.mgmtdev(rest);
    if (matches(w, 'dev')) return this.dev(rest);
    this.ctx.err(`Object "${w}" not found\n`);
    return 1;
  }

  private commandNotFound(w: string): number {
    this.ctx.err(`Command "${w}" not found\n`);
    return 1;
  }

  // ── mgmtdev ──

  private mgmtdev(argv: string[]): number {
    const [w, ...rest] = argv;
    if (w === undefined || matches(w, 'help')) {
      this.ctx.err(MGMTDEV_HELP);
      return 0;
    }
    if (matches(w, 'show') || matches(w, 'list')) return this.mgmtdevShow(rest);
    return this.commandNotFound(w);
  }

  private mgmtdevShow(argv: string[]): number {
    let name: string | undefined;
    if (argv.length > 0) {
      name = this.mgmtdevHandle(argv[0]);
      this.parseOptions(argv.slice(1), {});
    }
    return this.section('mgmtdev', () => {
      const list = name === undefined ? this.bus.mgmtDevices : [this.findMgmtdev(name)];
      return list.map((m) => {
        const info = mgmtdevInfo(m);
        return [info.name, formatMgmtdevText(info), mgmtdevJson(info)];
      });
    });
  }

  /** vdpa_argv_handle: "name" or "bus/name". */
  private mgmtdevHandle(arg: string | undefined): string {
    if (arg === undefined) this.usage('vdpa identification ("mgmtdev_bus_name/mgmtdev_name") expected\n');
    if (arg.split('/').length > 2) {
      this.usage('Wrong vdpa mgmtdev identification string format\nExpected "mgmtdev_bus_name/mgmtdev_name"\nExpected "mgmtdev_name"\n');
    }
    return arg;
  }

  private findMgmtdev(handle: string): MgmtDevice {
    // The in-process bus has no parent bus: "bus/name" never names one of its devices.
    const m = this.bus.mgmtDevices.find((x) => x.name === handle);
    if (!m) throw new KernelError(ENODEV, 'Fail to find the specified mgmt device');
    return m;
  }

  // ── dev ──

  private dev(argv: string[]): number {
    const [w, ...rest] = argv;
    if (w === undefined) return this.devShow([]);
    if (matches(w, 'help')) {
      this.ctx.err(DEV_HELP);
      return 0;
    }
    if (matches(w, 'show') || matches(w, 'list')) return this.devShow(rest);
    if (matches(w, 'add')) return this.devAdd(rest);
    if (matches(w, 'del')) return this.devDel(rest);
    if (matches(w, 'config')) return this.devConfig(rest);
    if (w === 'vstats') return this.devVstats(rest);
    return this.commandNotFound(w);
  }

  /** A device handle (VDPA_OPT_VDEV_HANDLE) and nothing after it. */
  private devHandle(argv: string[]): string {
    const name = argv[0];
    if (name === undefined) this.usage('String parameter expected\n');
    this.parseOptions(argv.slice(1), {});
    return name;
  }

  /** A managed device by name (the kernel's get_doit: bus_find_device, then vdev->mdev). */
  private findDev(name: string): VdpaDevice {
    const dev = this.bus.devices.find((d) => d.name === name);
    if (!dev) throw new KernelError(ENODEV, 'device not found');
    if (this.bus.mgmtDeviceOf(name) === null) throw new KernelError(EINVAL, 'unmanaged vdpa device');
    return dev;
  }

  /** Devices a dump returns: those created through a management device. */
  private managedDevs(): VdpaDevice[] {
    return this.bus.devices.filter((d) => this.bus.mgmtDeviceOf(d.name) !== null);
  }

  private devShow(argv: string[]): number {
    const name = argv.length > 0 ? this.devHandle(argv) : undefined;
    return this.section('dev', () => {
      const list = name === undefined ? this.managedDevs() : [this.findDev(name)];
      return list.map((d) => {
        const info = devInfo(this.bus, d);
        return [info.name, formatDevText(info), devJson(info)];
      });
    });
  }

  private devAdd(argv: string[]): number {
    const p = this.parseOptions(argv, { name: true, mgmtdev: true, mac: true, mtu: true, max_vqp: true, device_features: true });
    if (p.mgmtdev === undefined) this.usage('management device handle not set.\n');
    if (p.name === undefined) this.usage('device name is not set.\n');
    const attrs: MgmtDevAttrs = {};
    if (p.mac !== undefined) attrs.mac = p.mac;
    if (p.mtu !== undefined) attrs.mtu = p.mtu;
    if (p.maxVqp !== undefined) attrs.maxVqp = p.maxVqp;
    if (p.deviceFeatures !== undefined) attrs.deviceFeatures = p.deviceFeatures;
    const m = this.bus.mgmtDevices.find((x) => x.name === p.mgmtdev);
    if (!m) throw new KernelError(ENODEV, 'Fail to find the specified management device');
    this.bus.devAdd(m.name, p.name, attrs);
    return 0;
  }

  private devDel(argv: string[]): number {
    const name = this.devHandle(argv);
    if (!this.bus.devices.some((d) => d.name === name)) throw new KernelError(ENODEV, 'device not found');
    if (this.bus.mgmtDeviceOf(name) === null) throw new KernelError(EINVAL, 'Only user created device can be deleted by user');
    this.bus.devDel(name);
    return 0;
  }

  private devConfig(argv: string[]): number {
    const [w, ...rest] = argv;
    if (w === undefined) return this.devConfigShow([]);
    if (matches(w, 'help')) {
      this.ctx.err(DEV_CONFIG_HELP);
      return 0;
    }
    if (matches(w, 'show')) return this.devConfigShow(rest);
    return this.commandNotFound(w);
  }

  private devConfigShow(argv: string[]): number {
    const name = argv.length > 0 ? this.devHandle(argv) : undefined;
    return this.section('config', () => {
      const list = name === undefined ? this.managedDevs() : [this.findDev(name)];
      return list.map((d) => {
        const info = devConfigInfo(d);
        return [info.name, formatDevConfigText(info), devConfigJson(info)];
      });
    });
  }

  private devVstats(argv: string[]): number {
    const [w, ...rest] = argv;
    if (w === undefined) {
      this.ctx.err(DEV_VSTATS_HELP);
      return 1;
    }
    if (w === 'help') {
      this.ctx.err(DEV_VSTATS_HELP);
      return 0;
    }
    if (w === 'show') return this.devVstatsShow(rest);
    return this.commandNotFound(w);
  }

  private devVstatsShow(argv: string[]): number {
    if (argv.length !== 1 && argv.length !== 3) {
      this.ctx.err(DEV_VSTATS_HELP);
      return 1;
    }
    const name = argv[0]!;
    const p = this.parseOptions(argv.slice(1), { qidx: true });
    return this.section('vstats', () => {
      const dev = this.findDev(name);
      // The kernel needs the queue index attribute (vdpa_nl_cmd_dev_stats_get_doit).
      if (p.qidx === undefined) throw new KernelError(EINVAL, '');
      const info = devVstatsInfo(dev, p.qidx);
      return [[info.name, formatVstatsText(info), vstatsJson(info)]];
    });
  }

  // ── shared ──

  /**
   * A show command: prints each [name, text, json] entry. In JSON mode the section object
   * is opened before the request and closed after it, even when the request fails
   * (pr_out_section_start / _end around mnlu_gen_socket_sndrcv).
   */
  private section(name: string, fetch: () => [string, string, JsonValue][]): number {
    let entries: [string, string, JsonValue][] = [];
    let failure: unknown = null;
    try {
      entries = fetch();
    } catch (e) {
      failure = e;
    }
    if (this.o.json) {
      const inner: { [k: string]: JsonValue } = {};
      for (const [n, , j] of entries) inner[n] = j;
      this.ctx.out(formatJson({ [name]: inner }, this.o.pretty) + '\n');
    } else if (entries.length) {
      this.ctx.out(entries.map(([, t]) => t).join(''));
    }
    if (failure !== null) throw failure;
    return 0;
  }

  /** vdpa_argv_parse's keyword loop over the options `allowed`. */
  private parseOptions(argv: string[], allowed: Partial<Record<'name' | 'mgmtdev' | 'mac' | 'mtu' | 'max_vqp' | 'qidx' | 'device_features', true>>): ParsedOptions {
    const p: ParsedOptions = {};
    let i = 0;
    const value = (msg: string): string => {
      const v = argv[++i];
      if (v === undefined) this.usage(msg);
      i++;
      return v;
    };
    while (i < argv.length) {
      const a = argv[i]!;
      if (allowed.name && matches(a, 'name')) {
        p.name = value('String parameter expected\n');
      } else if (allowed.mgmtdev && matches(a, 'mgmtdev')) {
        if (argv[i + 1] === undefined) this.usage('vdpa identification ("mgmtdev_bus_name/mgmtdev_name") expected\n');
        p.mgmtdev = this.mgmtdevHandle(value(''));
      } else if (allowed.mac && a === 'mac') {
        p.mac = this.parseMac(value('String parameter expected\n'));
      } else if (allowed.mtu && a === 'mtu') {
        const v = value('number expected\n');
        p.mtu = parseUint(v, 0xffff) ?? this.usage(`Error: argument "${v}" is wrong: mtu must be a number of 0..65535\n`);
      } else if (allowed.max_vqp && matches(a, 'max_vqp')) {
        const v = value('number expected\n');
        p.maxVqp = parseUint(v, 0xffff) ?? this.usage(`Error: argument "${v}" is wrong: max_vqp must be a number of 0..65535\n`);
      } else if (allowed.qidx && a === 'qidx') {
        const v = value('number expected\n');
        p.qidx = parseUint(v, 0xffffffff) ?? this.usage(`Error: argument "${v}" is wrong: qidx must be a number of 0..4294967295\n`);
      } else if (allowed.device_features && a === 'device_features') {
        const v = value('number expected\n');
        p.deviceFeatures = parseHexU64(v) ?? this.usage(`Error: argument "${v}" is wrong: device_features must be a hexadecimal u64\n`);
      } else {
        this.usage(`Unknown option "${a}"\n`);
      }
    }
    return p;
  }

  /** ll_addr_a2n for a 6-byte address: colon-separated hex bytes. */
  private parseMac(s: string): string {
    const parts = s.split(':');
    for (const x of parts) {
      if (!/^[0-9a-fA-F]{1,2}$/.test(x)) this.usage(`"${x}" is invalid lladdr.\n`);
    }
    if (parts.length !== 6) this.usage(`"${s}" is invalid lladdr.\n`);
    return parts.map((x) => x.padStart(2, '0')).join(':');
  }
}

interface ParsedOptions {
  name?: string;
  mgmtdev?: string;
  mac?: string;
  mtu?: number;
  maxVqp?: number;
  qidx?: number;
  deviceFeatures?: bigint;
}

// ───────────────────────── batch (iproute2 getcmdline / makeargs) ─────────────────────────

/**
 * Splits a batch file into commands as iproute2's getcmdline + makeargs do: `#` starts a
 * comment, a trailing backslash continues the line, words split on blanks, '…' and "…" quote.
 * Each command carries the number of the line it ends on (cmdlineno); blank ones are dropped.
 */
export function parseBatch(text: string): { line: number; argv: string[] | null; error?: string }[] {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const cmds: { line: number; argv: string[] | null; error?: string }[] = [];
  let no = 0;
  while (no < lines.length) {
    let line = lines[no++]!;
    let hash = line.indexOf('#');
    if (hash >= 0) line = line.slice(0, hash);
    while (line.endsWith('\\') && no < lines.length) {
      let next = lines[no++]!;
      hash = next.indexOf('#');
      if (hash >= 0) next = next.slice(0, hash);
      line = line.slice(0, -1) + next;
    }
    const r = makeArgs(line);
    if (typeof r === 'string') cmds.push({ line: no, argv: null, error: r });
    else if (r.length) cmds.push({ line: no, argv: r });
  }
  return cmds;
}

function makeArgs(line: string): string[] | string {
  const argv: string[] = [];
  const ws = ' \t\r\n';
  let i = 0;
  while (i < line.length) {
    while (i < line.length && ws.includes(line[i]!)) i++;
    if (i >= line.length) break;
    const c = line[i]!;
    if (c === '"' || c === "'") {
      const end = line.indexOf(c, i + 1);
      if (end < 0) return 'Unterminated quoted string\n';
      argv.push(line.slice(i + 1, end));
      i = end + 1;
    } else {
      let j = i;
      while (j < line.length && !ws.includes(line[j]!)) j++;
      argv.push(line.slice(i, j));
      i = j + 1;
    }
  }
  return argv;
}

// ───────────────────────── entry ─────────────────────────

/** Long options in iproute2's matching order ("-j" is -json, "-p" -pretty, …). */
const LONG_OPTIONS = ['-json', '-pretty', '-Version', '-force', '-batch', '-help'];

/**
 * Runs `vdpa ARGV…` against ctx.bus and returns the exit code (0, or 1 on any error). Global
 * options, anywhere before "--": -j[son], -p[retty], -V[ersion], -f[orce], -b[atch] FILE,
 * -h[elp] (any prefix, one or two dashes), or letters grouped as in `-jp`. With -batch the
 * file's commands run one per line on the same bus; the first failure stops the run (reported
 * as "Command failed FILE:LINE") unless -force is given.
 */
export function runVdpa(argv: string[], ctx: VdpaCliContext): number {
  const o: Opts = { json: false, pretty: false };
  let force = false;
  let batch: string | null = null;
  // Options may come anywhere before "--" (GNU getopt permutes vdpa's argv: `vdpa dev show -jp`).
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      rest.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      rest.push(arg);
      continue;
    }
    const long = arg.startsWith('--') ? arg.slice(1) : arg;
    let flags: string;
    const name = LONG_OPTIONS.find((x) => matches(long, x));
    if (name) flags = name[1]!;
    else if (/^-[jpVfhb]+$/.test(arg)) flags = arg.slice(1);
    else {
      ctx.err(`Option "${arg}" is unknown, try "vdpa -help".\n`);
      return 1;
    }
    for (const f of flags) {
      if (f === 'j') o.json = true;
      else if (f === 'p') o.pretty = true;
      else if (f === 'f') force = true;
      else if (f === 'V') {
        ctx.out(`vdpa utility, ${ctx.version ?? 'vdpa-wasm'}\n`);
        return 0;
      } else if (f === 'h') {
        ctx.err(HELP);
        return 0;
      } else {
        const file = argv[++i];
        if (file === undefined) {
          ctx.err(HELP);
          return 1;
        }
        batch = file;
      }
    }
  }
  const session = new Session(ctx, o);
  if (batch === null) return session.run(rest);

  let text: string;
  try {
    if (!ctx.readFile) throw new Error('no file access');
    text = ctx.readFile(batch);
  } catch (e) {
    // Node says "ENOENT: no such file or directory, open '…'"; iproute2 prints strerror().
    const msg = e instanceof Error ? e.message : String(e);
    const sys = /^E[A-Z]+: ([^,]+)/.exec(msg)?.[1];
    const why = sys ? sys[0]!.toUpperCase() + sys.slice(1) : msg;
    ctx.err(`Cannot open file "${batch}" for reading: ${why}\n`);
    return 1;
  }
  let rc = 0;
  for (const cmd of parseBatch(text)) {
    const failed = cmd.argv === null ? (ctx.err(cmd.error ?? ''), 1) : session.run(cmd.argv);
    if (failed) {
      ctx.err(`Command failed ${batch}:${cmd.line}\n`);
      rc = 1;
      if (!force) break;
    }
  }
  return rc;
}
