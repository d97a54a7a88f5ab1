// A Linux guest in v86 on vdpa devices: `npm run example:v86`.
// Boots Debian's i386 kernel (fetched and cached by scripts/fetch-guest.mjs) in v86 with two
// vdpa devices plugged in as PCI functions: a vdpasim_net on an L2 switch whose other port is
// a host answering ping at 10.0.0.1, and a vdpasim_blk over a 64 MiB disk image file. Your
// terminal is the guest's serial console (Ctrl-C or Ctrl-D quits). Try:
//   ifconfig eth0 10.0.0.2 up && ping -c 3 10.0.0.1
//   mke2fs -q /dev/vda && mount /dev/vda /mnt && echo hi > /mnt/x && umount /mnt
// With arguments, runs them as one shell command line in the guest, prints its output, exits:
//   npm run example:v86 -- 'ifconfig eth0 10.0.0.2 up && ping -c 3 10.0.0.1'
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { V86 } from 'v86';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, L2Switch, createVirtioVdpa, PingResponder, type VdpaSimNet,
} from '../src/index.ts';
import { FileBackend } from '../src/node.ts';
import { attachV86, v86Platform } from '../src/v86/index.ts';

const root = join(dirname(new URL(import.meta.url).pathname), '..');
const m = JSON.parse(execFileSync(process.execPath, [join(root, 'scripts/fetch-guest.mjs')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
const image = (p: string) => {
  const b = readFileSync(p);
  return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer };
};

// The host on the far side of the switch: its own platform, virtio_vdpa + the net driver.
const hp = Platform.create({ ramSize: 16 << 20 });
const hbus = new VdpaBus();
hbus.registerMgmtDevice(new VdpaSimNetMgmt(hp));
const virtio = createVirtioVdpa(hp);
hbus.registerDriver(virtio);
const sw = new L2Switch();
const peer = hbus.devAdd('vdpasim_net', 'host0', { mac: '52:54:00:00:01:01' }) as VdpaSimNet;
const peerPort = sw.connect(peer);
peer.attachPort((frames) => sw.input(peerPort, frames));
const hostNic = virtio.net('host0');
const host = new PingResponder({ mac: '52:54:00:00:01:01', ip: '10.0.0.1' });
hostNic.onFrame((f) => {
  const reply = host.answer(f);
  if (reply) hostNic.send(reply);
});
const disk = await FileBackend.open(join(tmpdir(), 'vdpa-v86-example.img'), { size: 64 << 20 });

const emulator = new V86({
  wasm_path: join(dirname(createRequire(import.meta.url).resolve('v86')), 'v86.wasm'),
  bios: image(m.bios),
  vga_bios: image(m.vgabios),
  bzimage: image(m.kernel),
  initrd: image(m.initramfs),
  cmdline: 'console=ttyS0 quiet loglevel=3 tsc=reliable mitigations=off',
  memory_size: 128 << 20,
  autostart: false,
  disable_keyboard: true,
  disable_mouse: true,
  disable_speaker: true,
  fastboot: true,
});

emulator.add_listener('emulator-loaded', () => {
  // v86 is loaded, the CPU has not run: plug the devices in, then start it.
  const p = v86Platform(emulator); // guest RAM where v86 keeps it; our private arena grown onto its memory
  const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' }); // devices bind to vhost_vdpa, as for a VMM
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const vhost = new VhostVdpa(p);
  bus.registerDriver(vhost);
  const net = bus.devAdd('vdpasim_net', 'net0', { mac: '52:54:00:00:02:01' }) as VdpaSimNet;
  const port = sw.connect(net);
  net.attachPort((frames) => sw.input(port, frames));
  bus.devAdd('vdpasim_blk', 'blk0', { backend: disk });
  const fns = ['net0', 'blk0'].map((name) => attachV86(emulator, p, vhost.open(vhost.nodeOf(name))));
  console.error(`vdpa devices at PCI slots ${fns.map((f) => f.slot).join(', ')}; booting…`);
  void emulator.run();
});

const script = process.argv.slice(2).join(' ');
let out = '';
emulator.add_listener('serial0-output-byte', (b: number) => {
  const c = String.fromCharCode(b);
  out += c;
  if (!script) process.stdout.write(c);
  else if (out.includes('VDPA-GUEST-READY') && !out.includes('@@')) {
    out = '@@';
    emulator.serial0_send(`${script}; echo "@@END $?"\n`);
  } else if (out.startsWith('@@')) {
    process.stdout.write(c);
    const end = /@@END (\d+)\r?\n/.exec(out);
    if (end) {
      emulator.destroy();
      process.exit(Number(end[1]));
    }
  }
});
if (!script) {
  process.stdin.setRawMode?.(true);
  process.stdin.on('data', (d: Buffer) => {
    if (d.includes(3) || d.includes(4)) {
      emulator.destroy();
      process.exit(0);
    }
    emulator.serial0_send(d.toString('latin1'));
  });
}
