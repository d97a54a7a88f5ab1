#!/usr/bin/env node
// Fetches what the emulator guest test boots (issue 10 §3) and builds its initramfs:
//   Debian bookworm's i386 kernel (the package linux-image-686 depends on), busybox-static:i386
//   and seabios, each with `apt-get download` through a private i386 apt state (the machine's
//   own apt configuration and architecture are left alone), unpacked with dpkg-deb; then an
//   initramfs (newc cpio, gzip) with busybox, the kernel's virtio_pci / virtio_net / virtio_blk
//   modules in dependency order (from modules.dep) and an /init that loads them and starts a
//   shell on the serial console.
// Everything lands in a cache (VDPA_GUEST_CACHE, default .cache/guest) and a second run with
// the outputs present does nothing. Prints the manifest (paths, versions, sha256) as JSON.
//
//   node scripts/fetch-guest.mjs            fetch and build (or report the cached build)
//   node scripts/fetch-guest.mjs --rebuild  rebuild the initramfs from the cached packages
//
// Needs apt-get, apt-cache, dpkg-deb and xz (Debian/Ubuntu hosts); network on the first run.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = process.env.VDPA_GUEST_CACHE ?? join(root, '.cache', 'guest');
const out = join(cache, 'out');
const manifestPath = join(out, 'manifest.json');
const rebuild = process.argv.includes('--rebuild');
/** The modules the guest needs (ext4 mounts the ext2 filesystem the test makes; crc32c_generic is its softdep); their dependencies come from each module's depends=. */
const WANT = ['virtio_pci', 'virtio_net', 'virtio_blk', 'crc32c_generic', 'ext4'];

const sha256 = (p) => createHash('sha256').update(readFileSync(p)).digest('hex');
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });

if (!rebuild && existsSync(manifestPath)) {
  const m = JSON.parse(readFileSync(manifestPath, 'utf8'));
  // A cache built for an older module list is rebuilt (the packages stay cached).
  const built = new Set((m.modules ?? []).map((n) => n.replace(/\.ko$/, '').replace(/-/g, '_')));
  if (['kernel', 'initramfs', 'bios', 'vgabios'].every((k) => existsSync(m[k])) && WANT.every((w) => built.has(w))) {
    process.stdout.write(`${JSON.stringify(m, null, 2)}\n`);
    process.exit(0);
  }
}

// ── apt: a private i386 state next to the cache ──
const apt = join(cache, 'apt');
for (const d of ['lists/partial', 'cache/archives/partial', 'state']) mkdirSync(join(apt, d), { recursive: true });
if (!existsSync(join(apt, 'status'))) writeFileSync(join(apt, 'status'), '');
const aptOpts = [
  '-o', `Dir::State=${join(apt, 'state')}`, '-o', `Dir::State::Lists=${join(apt, 'lists')}`,
  '-o', `Dir::State::status=${join(apt, 'status')}`, '-o', `Dir::Cache=${join(apt, 'cache')}`,
  '-o', 'APT::Architecture=i386', '-o', 'APT::Architectures::=i386', '-o', 'Debug::NoLocking=1',
];
const debs = join(cache, 'debs');
mkdirSync(debs, { recursive: true });
const have = () => readdirSync(debs).filter((f) => f.endsWith('.deb'));
if (!have().some((f) => f.startsWith('linux-image-')) || !have().some((f) => f.startsWith('busybox-static_')) || !have().some((f) => f.startsWith('seabios_'))) {
  if (readdirSync(join(apt, 'lists')).filter((f) => f.endsWith('Packages') || f.endsWith('Packages.lz4')).length === 0) {
    process.stderr.write('apt-get update (i386 lists, private state)…\n');
    run('apt-get', [...aptOpts, 'update'], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  // linux-image-686 is a metapackage: download the versioned image it depends on.
  const deps = run('apt-cache', [...aptOpts, 'depends', 'linux-image-686']);
  const image = /Depends: (linux-image-[0-9][^\s]*-686)\b/.exec(deps)?.[1];
  if (!image) throw new Error(`cannot find the image linux-image-686 depends on:\n${deps}`);
  process.stderr.write(`apt-get download ${image} busybox-static seabios…\n`);
  run('apt-get', [...aptOpts, 'download', image, 'busybox-static:i386', 'seabios'], { cwd: debs, stdio: ['ignore', 'ignore', 'inherit'] });
}

// ── unpack ──
const x = join(cache, 'x');
rmSync(x, { recursive: true, force: true });
mkdirSync(x, { recursive: true });
const versions = {};
for (const f of have()) {
  run('dpkg-deb', ['-x', join(debs, f), x]);
  const [pkg, ver] = basename(f, '.deb').split('_');
  versions[pkg] = decodeURIComponent(ver);
}
const kver = readdirSync(join(x, 'lib', 'modules'))[0];
const kernel = join(x, 'boot', `vmlinuz-${kver}`);
const modDir = join(x, 'lib', 'modules', kver);

// ── modules in dependency order ──
// The .deb ships no modules.dep (depmod makes it at install): read each module's own
// `depends=` from its .modinfo strings, walking from modules.order's paths.
const paths = readFileSync(join(modDir, 'modules.order'), 'utf8').split('\n').filter(Boolean)
  .map((p) => [p, p.replace(/\.xz$/, '')]).filter(([p]) => existsSync(join(modDir, p)) || existsSync(join(modDir, `${p}.xz`)));
const modName = (p) => basename(p).replace(/\.ko(\.xz)?$/, '').replace(/-/g, '_');
const byName = new Map(paths.map(([p]) => [modName(p), existsSync(join(modDir, p)) ? p : `${p}.xz`]));
const moduleBytes = (p) => (p.endsWith('.xz') ? execFileSync('xz', ['-dc', join(modDir, p)], { maxBuffer: 64 << 20 }) : readFileSync(join(modDir, p)));
const dependsOf = (p) => {
  const b = moduleBytes(p);
  const i = b.indexOf(Buffer.from('\0depends='));
  if (i < 0) return [];
  const s = b.subarray(i + 9, b.indexOf(0, i + 9)).toString();
  return s ? s.split(',').map((n) => n.replace(/-/g, '_')) : [];
};
const order = [];
const visit = (name) => {
  const p = byName.get(name);
  if (!p) {
    if (readFileSync(join(modDir, 'modules.builtin'), 'utf8').includes(`/${name}.ko`)) return;
    throw new Error(`module ${name} is neither a module nor built in`);
  }
  if (order.includes(p)) return;
  for (const d of dependsOf(p)) visit(d);
  order.push(p);
};
for (const m of WANT) visit(m);

// ── initramfs (newc) ──
const entries = []; // { name, mode, data?, rdev? }
const dir = (name) => entries.push({ name, mode: 0o040755 });
const file = (name, data, mode = 0o100644) => entries.push({ name, mode, data });
for (const d of ['bin', 'dev', 'proc', 'sys', 'mnt', 'tmp', 'lib', 'lib/modules']) dir(d);
entries.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] });
entries.push({ name: 'dev/ttyS0', mode: 0o020600, rdev: [4, 64] });
file('bin/busybox', readFileSync(join(x, 'bin', 'busybox')), 0o100755);
const names = [];
for (const p of order) {
  const data = moduleBytes(p);
  const n = basename(p).replace(/\.xz$/, '');
  names.push(n);
  file(`lib/modules/${n}`, data);
}
file('lib/modules/order', `${names.join('\n')}\n`);
file('init', [
  '#!/bin/busybox sh',
  '/bin/busybox --install -s /bin',
  'mount -t proc proc /proc',
  'mount -t sysfs sysfs /sys',
  'mount -t devtmpfs devtmpfs /dev',
  'for m in $(cat /lib/modules/order); do insmod /lib/modules/$m || echo "insmod $m failed"; done',
  'echo VDPA-GUEST-READY',
  'exec setsid cttyhack sh',
  '',
].join('\n'), 0o100755);

function newc(list) {
  const parts = [];
  const pad = (n) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const push = (name, mode, data, rdev = [0, 0]) => {
    const nb = Buffer.from(`${name}\0`);
    const fields = [ino++, mode, 0, 0, mode & 0o040000 ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], nb.length, 0];
    const h = Buffer.from(`070701${fields.map((v) => v.toString(16).padStart(8, '0')).join('')}`);
    parts.push(h, nb, pad(h.length + nb.length), data, pad(data.length));
  };
  for (const e of list) push(e.name, e.mode, e.data ? Buffer.from(e.data) : Buffer.alloc(0), e.rdev);
  push('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

mkdirSync(out, { recursive: true });
const initramfs = join(out, 'initramfs.cpio.gz');
writeFileSync(initramfs, gzipSync(newc(entries), { level: 9 }));
const seabios = join(x, 'usr', 'share', 'seabios');
const vga = ['vgabios-stdvga.bin', 'vgabios.bin'].map((f) => join(seabios, f)).find(existsSync);
const manifest = {
  kernel, kernelRelease: kver, initramfs, bios: join(seabios, 'bios.bin'), vgabios: vga,
  modules: names, versions,
  sha256: { kernel: sha256(kernel), initramfs: sha256(initramfs) },
  bytes: { kernel: statSync(kernel).size, initramfs: statSync(initramfs).size },
};
writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`);
