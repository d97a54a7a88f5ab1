// Fuzz: the vdpa tool (src/cli/vdpa.ts runVdpa) with random argv — valid commands mutated, random
// tokens, huge numbers, unicode, empty strings, option clusters (-j/-p/-f/-V/-h), -batch files of
// random lines (quotes, backslash continuations, comments) — never throws, never leaves an
// uncaught error, always answers 0 or 1 with text, and -json output parses; valid commands keep
// working afterwards and `dev show -j` always agrees with the bus.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, type Platform } from '../src/index.ts';
import { runVdpa } from '../src/cli/vdpa.ts';
import { makePlatform } from './helpers/builds.ts';
import { fuzz, type Rand } from './helpers/fuzz.ts';

let platform: Platform | undefined;

function plat(): Platform {
  // A fresh platform once leaks of failed devAdds (a known issue, see fuzz-control) pile up.
  if (!platform || platform.priv.available < 12 << 20) platform = makePlatform('release', { ramSize: 32 << 20, privateSize: 16 << 20 });
  return platform;
}

const VALID = [
  'mgmtdev show', 'mgmtdev show vdpasim_net', 'mgmtdev show vdpasim_blk', 'mgmtdev list', 'mgmtdev help', 'help',
  'dev show', 'dev list', 'dev help', 'dev show vdpa0', 'dev config show', 'dev config show vdpa0', 'dev vstats show vdpa0 qidx 0',
  'dev add name vdpa0 mgmtdev vdpasim_net', 'dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55 mtu 1500 max_vqp 2',
  'dev add name blk0 mgmtdev vdpasim_blk', 'dev add name vdpa1 mgmtdev vdpasim_net device_features 0x300000000',
  'dev del vdpa0', 'dev del blk0', 'dev del vdpa1', 'dev config help', 'dev vstats help',
  'dev set name vdpa0 mac 02:00:00:00:00:01', 'dev set name blk0 mac 02:00:00:00:00:02', 'dev add name blk1 mgmtdev vdpasim_blk capacity 64k',
  'dev config show blk1', 'dev del blk1', '--json dev show', 'dev show -jp',
].map((s) => s.split(' '));

const TOKENS = [
  '', ' ', '-', '--', '-j', '-p', '-jp', '-json', '--json', '-pretty', '-V', '-f', '-force', '-h', '-b', '-batch', '-x', '-jx',
  'dev', 'mgmtdev', 'show', 'add', 'del', 'config', 'vstats', 'name', 'mgmtdev', 'mac', 'mtu', 'max_vqp', 'qidx', 'device_features',
  'vdpa0', 'blk0', 'vdpasim_net', 'vdpasim_blk', 'help', 'list', 's', 'd', 'm',
  '0', '1', '-1', '68', '65535', '65536', '4294967296', '18446744073709551615', '18446744073709551616', '1e3', '0x', '0x1ffffffffffffffff',
  '0xffffffffffffffff', 'NaN', 'Infinity', '1.5', '00:11:22:33:44:55', '01:00:00:00:00:00', '00:00:00:00:00:00', 'ff:ff', 'zz:zz:zz:zz:zz:zz',
  'ü', '名前', '\u0000', '\u202e', 'a'.repeat(5000), '"', "'", '\\', '#', '\n', 'vdpa0 vdpa1',
];

function mutateArgv(r: Rand, base: string[]): string[] {
  const a = base.slice();
  const n = r.range(0, 3);
  for (let k = 0; k < n; k++) {
    const x = r.int(5);
    const at = r.int(a.length + 1);
    if (x === 0) a.splice(at, 0, r.pick(TOKENS));
    else if (x === 1 && a.length) a.splice(Math.min(at, a.length - 1), 1);
    else if (x === 2 && a.length) a[Math.min(at, a.length - 1)] = r.pick(TOKENS);
    else if (x === 3 && a.length) {
      const i = Math.min(at, a.length - 1);
      const s = a[i]!;
      a[i] = s.slice(0, r.int(s.length + 1)); // a prefix (keywords match by prefix)
    } else a.splice(at, 0, String.fromCharCode(...Array.from({ length: r.int(6) }, () => r.int(0x3000))));
  }
  return a;
}

function batchText(r: Rand): string {
  const lines: string[] = [];
  const n = r.range(0, 8);
  for (let k = 0; k < n; k++) {
    let l = mutateArgv(r, r.pick(VALID)).join(r.pick([' ', '  ', '\t']));
    if (r.chance(0.15)) l = `'${l}`; // unterminated quote
    if (r.chance(0.1)) l += ' \\';
    if (r.chance(0.1)) l = `# ${l}`;
    if (r.chance(0.1)) l += ` "${r.pick(TOKENS)} x"`;
    lines.push(l);
  }
  return lines.join(r.chance(0.9) ? '\n' : '\r\n') + (r.chance(0.5) ? '\n' : '');
}

interface Run {
  rc: number;
  out: string;
  err: string;
}

function vdpa(bus: VdpaBus, argv: string[], file?: string): Run {
  let out = '';
  let err = '';
  let rc: unknown;
  try {
    rc = runVdpa(argv, {
      bus, out: (s) => (out += s), err: (s) => (err += s),
      readFile: (p) => {
        if (file === undefined || p === 'missing') throw Object.assign(new Error(`ENOENT: no such file or directory, open '${p}'`), { code: 'ENOENT' });
        return file;
      },
    });
  } catch (e) {
    assert.fail(`runVdpa(${JSON.stringify(argv).slice(0, 300)}) threw: ${e instanceof Error ? e.stack : String(e)}`);
  }
  assert.ok(rc === 0 || rc === 1, `runVdpa(${JSON.stringify(argv).slice(0, 300)}) returned ${String(rc)}`);
  assert.equal(typeof out, 'string');
  return { rc: rc as number, out, err };
}

function runCase(r: Rand): void {
  const p = plat();
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 64));
  try {
    const cmds = r.range(1, 12);
    for (let k = 0; k < cmds; k++) {
      const x = r();
      let argv: string[];
      let file: string | undefined;
      if (x < 0.15) {
        argv = Array.from({ length: r.int(6) }, () => r.pick(TOKENS));
      } else if (x < 0.3) {
        argv = [r.pick(['-batch', '-b', '-fb', '-force', '-jb', '--batch']), r.pick(['-', 'cmds.txt', 'missing', ''])];
        if (argv[0] === '-force') argv.push('-b', 'cmds.txt');
        file = batchText(r);
      } else {
        argv = mutateArgv(r, r.pick(VALID));
        if (r.chance(0.3)) argv.splice(r.int(argv.length + 1), 0, r.pick(['-j', '-p', '-jp', '-pj', '-json']));
      }
      const res = vdpa(bus, argv, file);
      // -json answers of a single command parse as JSON (text lines of a batch may mix).
      const json = argv.some((a) => /^-(j|jp|pj|json)$/.test(a) || a === '--json');
      const single = !argv.some((a) => /^--?(b|batch|fb|jb)$/.test(a) || a === '-force');
      if (json && single && res.rc === 0 && res.out !== '' && !argv.some((a) => /^--?(V|h|help|Version|jV|Vj)/.test(a))) {
        try {
          JSON.parse(res.out);
        } catch {
          assert.fail(`${JSON.stringify(argv)}: -json output is not JSON: ${res.out.slice(0, 300)}`);
        }
      }
      // The bus and `dev show -j` agree after every command.
      const show = vdpa(bus, ['-j', 'dev', 'show']);
      assert.equal(show.rc, 0, `dev show failed after ${JSON.stringify(argv)}: ${show.err}`);
      const names = Object.keys((JSON.parse(show.out) as { dev: Record<string, unknown> }).dev).sort();
      assert.deepEqual(names, bus.devices.map((d) => d.name).sort(), `dev show -j vs the bus after ${JSON.stringify(argv)}`);
    }
    // Valid commands still work.
    const name = `fz${r.int(1e6)}`;
    assert.equal(vdpa(bus, ['dev', 'add', 'name', name, 'mgmtdev', 'vdpasim_blk']).rc, 0);
    assert.equal(vdpa(bus, ['dev', 'config', 'show', name]).rc, 0);
    assert.equal(vdpa(bus, ['dev', 'del', name]).rc, 0);
    assert.equal(vdpa(bus, ['mgmtdev', 'show']).rc, 0);
  } finally {
    for (const d of bus.devices.slice()) {
      try {
        bus.devDel(d.name);
      } catch {
        bus.removeDevice(d.name);
      }
    }
  }
}

describe('fuzz: the vdpa CLI', () => {
  after(() => (platform = undefined));
  test('random argv and -batch input: exit code 0/1 with text, never a throw; valid commands keep working', async () => {
    fuzz('cli', 1500, (r) => runCase(r));
    // Nothing deferred (microtasks of devices the commands created) fails later.
    await new Promise((res) => setImmediate(res));
  });
});
