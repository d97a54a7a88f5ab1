// The `vdpa` command-line tool (iproute2 vdpa/vdpa.c; man pages vdpa(8), vdpa-dev(8),
// vdpa-mgmtdev(8)) over an in-process vdpa bus. The tool plays both sides of iproute2's
// netlink socket: it parses arguments as vdpa.c does (args.ts), answers each request from the
// bus as the kernel's drivers/vdpa/vdpa.c would (reply.ts), and prints the reply with
// vdpa.c's text layout or lib/json_writer.c's JSON (format.ts, json-writer.ts). Errors print
// as iproute2 prints a netlink error: "Error: vdpa: <extack>." then "kernel answers:
// <strerror(errno)>". Everything a user can get wrong returns exit code 1; runVdpa never
// throws. Ours, beyond upstream: -batch/-force (batch.ts), block device config in
// `dev config show`, and `capacity SIZE` on `dev add` for block devices.

import type { VdpaBus, VdpaDevice } from '../bus/bus.ts';
import type { MgmtDevice, MgmtDevAttrs, MgmtAttrName } from '../mgmt/base.ts';
import { VIRTIO_ID_NET, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_MQ } from '../virtio/constants.ts';
import { formatJson, type JsonValue } from './json-writer.ts';
import { parseBatch } from './batch.ts';
import { UsageError, matches, parseOptions, parseGlobalOptions, mgmtdevHandle, type ParsedOptions } from './args.ts';
import {
  KernelError, kernelAnswer, mgmtdevInfo, devInfo, devConfigInfo, devVstatsInfo, EINVAL, ENODEV, EOPNOTSUPP,
} from './reply.ts';
import {
  formatMgmtdevText, mgmtdevJson, formatDevText, devJson, formatDevConfigText, devConfigJson, formatVstatsText, vstatsJson,
} from './format.ts';

export { formatJson, type JsonValue } from './json-writer.ts';
export { parseBatch, type BatchCommand } from './batch.ts';
export { matches, getU16, getU32, getU64Hex, llAddrA2n, parseSize, parseGlobalOptions, type GlobalOptions } from './args.ts';
export {
  NET_FEATURE_NAMES, TRANSPORT_FEATURE_NAMES, featureNames, deviceTypeName, errnoOf, KernelError, VDPA_MODNAME,
  type Errno, type MgmtdevInfo, type DevInfo, type DevConfigInfo, type BlkConfigInfo, type DevVstatsInfo,
} from './reply.ts';
export {
  formatMgmtdevText, mgmtdevJson, formatDevText, devJson, formatDevConfigText, devConfigJson, queueTypeName,
  formatVstatsText, vstatsJson,
} from './format.ts';

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

/** vdpa.c help(), and our batch line. */
export const VDPA_HELP = 'Usage: vdpa [ OPTIONS ] OBJECT { COMMAND | help }\n'
  + '       vdpa [ -f[orce] ] -b[atch] filename   (vdpa-wasm extension)\n'
  + 'where  OBJECT := { mgmtdev | dev }\n'
  + '       OPTIONS := { -V[ersion] | -n[o-nice-names] | -j[son] | -p[retty] }\n';

const MGMTDEV_HELP = 'Usage: vdpa mgmtdev show [ DEV ]\n';
const DEV_HELP = 'Usage: vdpa dev show [ DEV ]\n'
  + '       vdpa dev add name NAME mgmtdev MANAGEMENTDEV [ device_features DEVICE_FEATURES]\n'
  + '                                                    [ mac MACADDR ] [ mtu MTU ]\n'
  + '                                                    [ max_vqp MAX_VQ_PAIRS ]\n'
  + '                                                    [ capacity SIZE ]   (vdpa-wasm: block)\n'
  + '       vdpa dev del DEV\n'
  + '       vdpa dev set name NAME [ mac MACADDR ]\n'
  + 'Usage: vdpa dev config COMMAND [ OPTIONS ]\n'
  + 'Usage: vdpa dev vstats COMMAND\n';
const DEV_CONFIG_HELP = 'Usage: vdpa dev config show [ DEV ]\n';
const DEV_VSTATS_HELP = 'Usage: vdpa dev vstats show DEV [qidx QUEUE_INDEX]\n';

/** The bit of each dev add attribute in a management device's config_attr_mask (include/uapi/linux/vdpa.h enum vdpa_attr). */
const ATTR_BITS: Readonly<Record<MgmtAttrName, number>> = {
  mac: 10, // VDPA_ATTR_DEV_NET_CFG_MACADDR
  max_vqp: 12, // VDPA_ATTR_DEV_NET_CFG_MAX_VQP
  mtu: 13, // VDPA_ATTR_DEV_NET_CFG_MTU
  device_features: 20, // VDPA_ATTR_DEV_FEATURES
  capacity: 21, // VDPA_ATTR_DEV_BLK_CFG_CAPACITY (Linux 6.9 uapi; the kernel takes it on dev add nowhere — ours)
  image: 63, // not on the wire: code only
  backend: 63,
};
/** VDPA_DEV_NET_ATTRS_MASK (drivers/vdpa/vdpa.c). */
const NET_ATTRS_MASK = (1n << 10n) | (1n << 12n) | (1n << 13n);

const bitOf = (f: bigint, b: number): boolean => ((f >> BigInt(b)) & 1n) === 1n;

interface Opts {
  json: boolean;
  pretty: boolean;
}

class Session {
  constructor(private readonly ctx: VdpaCliContext, private readonly o: Opts) {}

  private get bus(): VdpaBus {
    return this.ctx.bus;
  }

  /** One command (vdpa_cmd). 0 on success. */
  run(argv: string[]): number {
    try {
      return this.object(argv);
    } catch (e) {
      if (e instanceof UsageError) {
        this.ctx.err(e.message);
        return 1;
      }
      return this.reportKernelAnswer(e);
    }
  }

  /** nl_dump_ext_ack, then mnlu_gen_socket_sndrcv's "kernel answers" line. */
  private reportKernelAnswer(e: unknown): number {
    const { errno, extack } = kernelAnswer(e);
    if (extack) this.ctx.err(`${errno ? 'Error' : 'Warning'}: ${extack}${extack.endsWith('.') ? '' : '.'}\n`);
    if (!errno) return 0;
    this.ctx.err(`kernel answers: ${errno.text}\n`);
    return 1;
  }

  private object(argv: string[]): number {
    const [w, ...rest] = argv;
    if (w === undefined || matches(w, 'help')) {
      this.ctx.err(VDPA_HELP);
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
      name = mgmtdevHandle(argv[0]);
      parseOptions(argv.slice(1), {});
    }
    return this.section('mgmtdev', () => {
      const list = name === undefined ? this.bus.mgmtDevices : [this.findMgmtdev(name, 'Fail to find the specified mgmt device')];
      return list.map((m) => {
        const info = mgmtdevInfo(m);
        return [info.name, formatMgmtdevText(info), mgmtdevJson(info)];
      });
    });
  }

  /** vdpa_mgmtdev_get_from_attr. The in-process bus has no parent bus: "bus/name" never names one of its devices. */
  private findMgmtdev(handle: string, msg: string): MgmtDevice {
    const m = this.bus.mgmtDevices.find((x) => x.name === handle);
    if (!m) throw KernelError.mod(ENODEV, msg);
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
    if (w === 'set') return this.devSet(rest);
    return this.commandNotFound(w);
  }

  /** A device handle (VDPA_OPT_VDEV_HANDLE) and nothing after it. */
  private devHandle(argv: string[]): string {
    const name = argv[0];
    if (name === undefined) throw new UsageError('String parameter expected\n');
    parseOptions(argv.slice(1), {});
    return name;
  }

  /** A managed device by name (the kernel's doit handlers: bus_find_device, then vdev->mdev). */
  private findDev(name: string): VdpaDevice {
    const dev = this.bus.devices.find((d) => d.name === name);
    if (!dev) throw KernelError.mod(ENODEV, 'device not found');
    if (this.bus.mgmtDeviceOf(name) === null) throw KernelError.mod(EINVAL, 'unmanaged vdpa device');
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
    const p = parseOptions(argv, { name: true, mgmtdev: true, mac: true, mtu: true, max_vqp: true, device_features: true, capacity: true });
    if (p.mgmtdev === undefined) throw new UsageError('management device handle not set.\n');
    if (p.name === undefined) throw new UsageError('device name is not set.\n');
    this.kernelDevAdd(p.mgmtdev, p.name, p);
    return 0;
  }

  /** vdpa_nl_cmd_dev_add_set_doit: the attribute checks drivers/vdpa/vdpa.c makes, then dev_add. */
  private kernelDevAdd(mgmtdev: string, name: string, p: ParsedOptions): void {
    const attrs: MgmtDevAttrs = {};
    let mask = 0n;
    if (p.mac !== undefined) {
      attrs.mac = p.mac;
      mask |= 1n << BigInt(ATTR_BITS.mac);
    }
    if (p.mtu !== undefined) {
      attrs.mtu = p.mtu;
      mask |= 1n << BigInt(ATTR_BITS.mtu);
    }
    if (p.maxVqp !== undefined) {
      if (p.maxVqp === 0) throw KernelError.mod(EINVAL, 'At least one pair of VQs is required');
      attrs.maxVqp = p.maxVqp;
      mask |= 1n << BigInt(ATTR_BITS.max_vqp);
    }
    if (p.deviceFeatures !== undefined) {
      const f = p.deviceFeatures;
      let missing = 0n;
      if (p.mac !== undefined && !bitOf(f, VIRTIO_NET_F_MAC)) missing |= 1n << BigInt(VIRTIO_NET_F_MAC);
      if (p.mtu !== undefined && !bitOf(f, VIRTIO_NET_F_MTU)) missing |= 1n << BigInt(VIRTIO_NET_F_MTU);
      if (p.maxVqp !== undefined && p.maxVqp > 1 && !bitOf(f, VIRTIO_NET_F_MQ)) missing |= 1n << BigInt(VIRTIO_NET_F_MQ);
      if (missing) throw KernelError.mod(EINVAL, `Missing features 0x${missing.toString(16)} for provided attributes`);
      attrs.deviceFeatures = f;
      mask |= 1n << BigInt(ATTR_BITS.device_features);
    }
    if (p.capacity !== undefined) {
      attrs.capacity = p.capacity;
      mask |= 1n << BigInt(ATTR_BITS.capacity);
    }
    const m = this.findMgmtdev(mgmtdev, 'Fail to find the specified management device');
    let supported = 0n;
    for (const a of m.attrs) supported |= 1n << BigInt(ATTR_BITS[a]);
    if ((mask & supported) !== mask) {
      throw KernelError.mod(EOPNOTSUPP, `Some provided attributes are not supported: 0x${(mask & ~supported).toString(16)}`);
    }
    if (mask & NET_ATTRS_MASK && !m.deviceIds.includes(VIRTIO_ID_NET)) {
      throw KernelError.mod(EINVAL, 'Network class attributes provided on unsupported management device');
    }
    this.bus.devAdd(m.name, name, attrs);
  }

  private devDel(argv: string[]): number {
    const name = this.devHandle(argv);
    if (!this.bus.devices.some((d) => d.name === name)) throw KernelError.mod(ENODEV, 'device not found');
    if (this.bus.mgmtDeviceOf(name) === null) throw KernelError.mod(EINVAL, 'Only user created device can be deleted by user');
    this.bus.devDel(name);
    return 0;
  }

  /** `vdpa dev set name NAME [mac MAC]` (VDPA_CMD_DEV_ATTR_SET, vdpa_nl_cmd_dev_attr_set_doit). */
  private devSet(argv: string[]): number {
    const p = parseOptions(argv, { name: true, mac: true });
    if (p.name === undefined) throw new UsageError('device name is not set.\n');
    const dev = this.findDev(p.name);
    const m = this.bus.mgmtDevices.find((x) => x.name === this.bus.mgmtDeviceOf(p.name!))!;
    if (!m.deviceIds.includes(VIRTIO_ID_NET)) throw KernelError.mod(null, `${p.name} device not supported`);
    // vdpa_dev_net_device_attr_set: EOPNOTSUPP unless a valid MAC reaches dev_set_attr.
    if (p.mac === undefined) throw new KernelError(EOPNOTSUPP, '');
    if ((p.mac[0]! & 1) || p.mac.every((b) => b === 0)) throw KernelError.mod(EOPNOTSUPP, 'Invalid MAC address');
    if (!m.setAttr) throw KernelError.mod(EOPNOTSUPP, 'Operation not supported by the device.');
    m.setAttr(dev, { mac: p.mac });
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
    const p = parseOptions(argv.slice(1), { qidx: true });
    return this.section('vstats', () => {
      const dev = this.findDev(name);
      // The kernel needs the queue index attribute (vdpa_nl_cmd_dev_stats_get_doit), no extack.
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
}

/**
 * Runs `vdpa ARGV…` against ctx.bus and returns the exit code (0, or 1 on any error). Global
 * options as vdpa.c's getopt_long takes them, anywhere before "--": -V, -j, -p, -h (grouped
 * as in `-jp`; long forms --Version, --json, --pretty, --help, abbreviated as GNU allows),
 * plus ours: -f[orce] and -b[atch] FILE. With -batch the file's commands run one per line on
 * the same bus; the first failure stops the run (reported as "Command failed FILE:LINE")
 * unless -force is given.
 */
export function runVdpa(argv: string[], ctx: VdpaCliContext): number {
  const g = parseGlobalOptions(argv, 'vdpa', VDPA_HELP);
  if (g.stop === 'version') {
    ctx.out(`vdpa utility, ${ctx.version ?? 'vdpa-wasm'}\n`);
    return 0;
  }
  if (g.stop === 'help') {
    ctx.err(VDPA_HELP);
    return 0;
  }
  if (g.stop) {
    ctx.err(g.stop.error);
    return 1;
  }
  const session = new Session(ctx, { json: g.json, pretty: g.pretty });
  if (g.batch === null) return session.run(g.rest);

  const batch = g.batch;
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
      if (!force(g)) break;
    }
  }
  return rc;
}

const force = (g: { force: boolean }): boolean => g.force;
