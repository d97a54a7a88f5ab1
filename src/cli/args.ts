// Argument parsing as iproute2 does it: the global options (vdpa.c main: getopt_long, GNU
// semantics), the keyword options of each command (vdpa.c vdpa_argv_parse), and the number
// and address parsers they call (lib/utils.c get_u16/get_u32/get_u64, lib/ll_addr.c).

/** A user error found while parsing: `message` is what iproute2 prints ('' for nothing). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
  }
}

const usage = (msg: string): never => {
  throw new UsageError(msg);
};

/** iproute2's matches(): true if `arg` is a non-empty prefix of `word`. */
export function matches(arg: string, word: string): boolean {
  return arg.length > 0 && word.startsWith(arg);
}

// ───────────────────────── numbers and addresses ─────────────────────────

/**
 * strtoul / strtoull: leading blanks, an optional sign, digits of `base` (base 16 takes an
 * optional 0x). A minus sign negates modulo 2^64, as C does. null if the whole string is not
 * one number or it overflows 64 bits.
 */
function strtou64(s: string, base: 10 | 16): bigint | null {
  const m = (base === 10 ? /^[ \t\n\v\f\r]*([+-]?)(\d+)$/ : /^[ \t\n\v\f\r]*([+-]?)(?:0[xX])?([0-9a-fA-F]+)$/).exec(s);
  if (!m) return null;
  const n = BigInt(base === 16 ? '0x' + m[2]! : m[2]!);
  if (n >= 1n << 64n) return null; // ERANGE
  return m[1] === '-' ? (n === 0n ? 0n : (1n << 64n) - n) : n;
}

/** get_u16(val, arg, 10): null where iproute2 returns -1 (it prints nothing). */
export function getU16(s: string): number | null {
  const n = strtou64(s, 10);
  return n !== null && n <= 0xffffn ? Number(n) : null;
}

/** get_u32(val, arg, 10). */
export function getU32(s: string): number | null {
  const n = strtou64(s, 10);
  return n !== null && n <= 0xffffffffn ? Number(n) : null;
}

/** get_u64(val, arg, 16). */
export function getU64Hex(s: string): bigint | null {
  return strtou64(s, 16);
}

/**
 * ll_addr_a2n for a 6-byte buffer, as vdpa.c's vdpa_argv_mac calls it: colon-separated
 * hexadecimal bytes (sscanf "%x" each); fewer than six leave the rest zero and more are
 * ignored, as in iproute2; a dotted IPv4 address gives four bytes. Throws UsageError with
 * iproute2's message for a part that is not a byte.
 */
export function llAddrA2n(arg: string): Uint8Array {
  const out = new Uint8Array(6);
  if (arg.includes('.')) {
    const parts = arg.split('.');
    const ok = parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
    if (!ok) usage(`"${arg}" is invalid lladdr.\n`);
    parts.forEach((p, i) => (out[i] = Number(p)));
    return out;
  }
  let rest = arg;
  for (let i = 0; i < 6; i++) {
    const colon = rest.indexOf(':');
    const part = colon >= 0 ? rest.slice(0, colon) : rest;
    // sscanf("%x"): blanks, a sign, an optional 0x, then hex digits; trailing junk is ignored.
    const m = /^[ \t\n\v\f\r]*([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)/.exec(part);
    if (!m) usage(`"${part}" is invalid lladdr.\n`);
    const v = m![1] === '-' ? -parseInt(m![2]!, 16) : parseInt(m![2]!, 16);
    if (!(v >= 0 && v <= 255)) usage(`"${part}" is invalid lladdr.\n`);
    out[i] = v;
    if (colon < 0) break;
    rest = rest.slice(colon + 1);
  }
  return out;
}

/** Binary size suffixes of `capacity` (vdpa-wasm's extension). */
const SIZE_UNITS: Readonly<Record<string, bigint>> = { '': 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n };

/**
 * A disk size: bytes with an optional K, M, G or T suffix (powers of 1024, case-insensitive,
 * an optional trailing "B" or "iB"), a positive multiple of 512. Returns sectors, or null.
 */
export function parseSize(s: string): number | null {
  const m = /^(\d+)([kKmMgGtT]?)(?:i?[bB])?$/.exec(s);
  if (!m) return null;
  const bytes = BigInt(m[1]!) * SIZE_UNITS[m[2]!.toUpperCase()]!;
  if (bytes === 0n || bytes % 512n !== 0n || bytes > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(bytes / 512n);
}

// ───────────────────────── command options (vdpa_argv_parse) ─────────────────────────

/** The keyword options a command may take (vdpa.c VDPA_OPT_*, plus our `capacity`). */
export type OptionName = 'name' | 'mgmtdev' | 'mac' | 'mtu' | 'max_vqp' | 'qidx' | 'device_features' | 'capacity';

/** Options found on a command line. */
export interface ParsedOptions {
  /** name NAME (VDPA_OPT_VDEV_NAME). */
  name?: string;
  /** mgmtdev [BUS/]NAME (VDPA_OPT_VDEV_MGMTDEV_HANDLE). */
  mgmtdev?: string;
  /** mac MACADDR (VDPA_OPT_VDEV_MAC), six bytes. */
  mac?: Uint8Array;
  /** mtu MTU (VDPA_OPT_VDEV_MTU). */
  mtu?: number;
  /** max_vqp N (VDPA_OPT_MAX_VQP). */
  maxVqp?: number;
  /** qidx N (VDPA_OPT_QUEUE_INDEX). */
  qidx?: number;
  /** device_features HEX (VDPA_OPT_VDEV_FEATURES). */
  deviceFeatures?: bigint;
  /** capacity SIZE, in sectors (vdpa-wasm's extension for block devices). */
  capacity?: number;
}

/** vdpa_argv_handle: "name" or "bus/name"; prints iproute2's messages on a bad handle. */
export function mgmtdevHandle(arg: string | undefined): string {
  if (arg === undefined) usage('vdpa identification ("mgmtdev_bus_name/mgmtdev_name") expected\n');
  if (arg!.split('/').length > 2) {
    usage('Wrong vdpa mgmtdev identification string format\nExpected "mgmtdev_bus_name/mgmtdev_name"\nExpected "mgmtdev_name"\n');
  }
  return arg!;
}

/**
 * vdpa_argv_parse's keyword loop over the options `allowed`: `name` and `mgmtdev` and
 * `max_vqp` match by prefix, the others exactly. A bad number makes the command fail without
 * a message, as get_u16 and friends print none.
 */
export function parseOptions(argv: readonly string[], allowed: Partial<Record<OptionName, true>>): ParsedOptions {
  const p: ParsedOptions = {};
  let i = 0;
  const value = (msg: string): string => {
    const v = argv[++i];
    if (v === undefined) usage(msg);
    i++;
    return v!;
  };
  const num = <T>(v: T | null): T => (v === null ? usage('') : v);
  while (i < argv.length) {
    const a = argv[i]!;
    if (allowed.name && matches(a, 'name')) {
      p.name = value('String parameter expected\n');
    } else if (allowed.mgmtdev && matches(a, 'mgmtdev')) {
      p.mgmtdev = mgmtdevHandle(argv[i + 1]);
      i += 2;
    } else if (allowed.mac && a === 'mac') {
      p.mac = llAddrA2n(value('String parameter expected\n'));
    } else if (allowed.mtu && a === 'mtu') {
      p.mtu = num(getU16(value('number expected\n')));
    } else if (allowed.max_vqp && matches(a, 'max_vqp')) {
      p.maxVqp = num(getU16(value('number expected\n')));
    } else if (allowed.qidx && a === 'qidx') {
      p.qidx = num(getU32(value('number expected\n')));
    } else if (allowed.device_features && a === 'device_features') {
      p.deviceFeatures = num(getU64Hex(value('number expected\n')));
    } else if (allowed.capacity && a === 'capacity') {
      const v = value('size expected\n');
      p.capacity = parseSize(v) ?? usage(`Error: capacity "${v}" is not a positive multiple of 512 bytes (suffixes K, M, G, T).\n`);
    } else {
      usage(`Unknown option "${a}"\n`);
    }
  }
  return p;
}

// ───────────────────────── global options (getopt_long) ─────────────────────────

/** The global options of one run. */
export interface GlobalOptions {
  /** -j: JSON output. */
  json: boolean;
  /** -p: pretty JSON (4-space indentation). */
  pretty: boolean;
  /** -f: keep going after a failed batch command (vdpa-wasm's extension). */
  force: boolean;
  /** -b FILE: run the commands in FILE ("-" for standard input) (vdpa-wasm's extension). */
  batch: string | null;
  /** What getopt stopped at: a request to print the version or help, or a usage error. */
  stop: 'version' | 'help' | {
    /** What to print on standard error. */
    error: string;
  } | null;
  /** The words left for the command (non-options, in order). */
  rest: string[];
}

/** vdpa.c's long_options, then ours. `arg`: takes an argument. */
const LONG_OPTIONS: { name: string; flag: string; arg: boolean }[] = [
  { name: 'Version', flag: 'V', arg: false },
  { name: 'json', flag: 'j', arg: false },
  { name: 'pretty', flag: 'p', arg: false },
  { name: 'help', flag: 'h', arg: false },
  { name: 'batch', flag: 'b', arg: true },
  { name: 'force', flag: 'f', arg: false },
];

/**
 * vdpa.c's optstring "Vjpsh" plus our f ('s' is accepted by getopt, then refused by vdpa.c's
 * switch). Our -b is only ever a word of its own ("-b FILE"), so "-bad" stays an invalid
 * option as upstream has it.
 */
const SHORT = 'Vjpshf';

/**
 * getopt_long(argc, argv, "Vjpsh", long_options) with GNU argument permutation (options may
 * follow the command words until "--"), as vdpa.c's main runs it, plus our -f[orce] and
 * -b[atch] FILE. "-batch" and "-force" (one dash, any prefix) are taken whole, since as
 * short options they would read as -b "atch". Errors carry glibc's message, vdpa.c's
 * "Unknown option." and the help text.
 */
export function parseGlobalOptions(argv: readonly string[], prog: string, help: string): GlobalOptions {
  const g: GlobalOptions = { json: false, pretty: false, force: false, batch: null, stop: null, rest: [] };
  const fail = (msg: string): GlobalOptions => {
    g.stop = { error: `${msg}Unknown option.\n${help}` };
    return g;
  };
  const apply = (flag: string): boolean => {
    switch (flag) {
      case 'V': g.stop = 'version'; return false;
      case 'h': g.stop = 'help'; return false;
      case 'j': g.json = true; return true;
      case 'p': g.pretty = true; return true;
      case 'f': g.force = true; return true;
      default: fail(''); return false; // 's': in the optstring, not in the switch
    }
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      g.rest.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      g.rest.push(arg);
      continue;
    }
    if (!arg.startsWith('--') && (matches(arg.slice(1), 'batch') || matches(arg.slice(1), 'force'))) {
      // Our single-dash long forms.
      if (arg[1] === 'f') {
        g.force = true;
        continue;
      }
      const file = argv[++i];
      if (file === undefined) return fail(`${prog}: option requires an argument -- 'b'\n`);
      g.batch = file;
      continue;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const exact = LONG_OPTIONS.find((o) => o.name === name);
      const cands = exact ? [exact] : LONG_OPTIONS.filter((o) => o.name.startsWith(name));
      if (cands.length !== 1) {
        if (cands.length > 1) return fail(`${prog}: option '${arg}' is ambiguous\n`);
        return fail(`${prog}: unrecognized option '${arg}'\n`);
      }
      const o = cands[0]!;
      if (!o.arg) {
        if (eq >= 0) return fail(`${prog}: option '--${o.name}' doesn't allow an argument\n`);
        if (!apply(o.flag)) return g;
        continue;
      }
      const v = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (v === undefined) return fail(`${prog}: option '--${o.name}' requires an argument\n`);
      g.batch = v;
      continue;
    }
    // A cluster of short options: -jp.
    for (let k = 1; k < arg.length; k++) {
      const c = arg[k]!;
      if (!SHORT.includes(c)) return fail(`${prog}: invalid option -- '${c}'\n`);
      if (!apply(c)) return g;
    }
  }
  return g;
}
