// Boots the Debian i386 guest of scripts/fetch-guest.mjs in v86 under Node, and talks to its
// busybox shell on the serial console.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { V86 } from 'v86';
import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, L2Switch, createVirtioVdpa, PingResponder, SwitchLink, SwitchLinkEnd, type VdpaSimNet,
} from '../../src/index.ts';
import { FileBackend, spawnDeviceWorker, type DeviceWorker } from '../../src/node.ts';
import { attachV86, v86Platform, v86SharedMemory, type V86Attachment, type V86AttachOptions } from '../../src/v86/index.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** What scripts/fetch-guest.mjs prints. */
export interface GuestManifest {
  kernel: string;
  kernelRelease: string;
  initramfs: string;
  bios: string;
  vgabios: string;
  modules: string[];
  versions: Record<string, string>;
}

/** Fetches (first run) or finds (cached) the guest; the script prints its manifest. */
export function guestManifest(): GuestManifest {
  const out = execFileSync(process.execPath, [join(root, 'scripts', 'fetch-guest.mjs')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  return JSON.parse(out) as GuestManifest;
}

/** The path of v86's wasm build in node_modules. */
export function v86WasmPath(): string {
  return join(dirname(createRequire(import.meta.url).resolve('v86')), 'v86.wasm');
}

const image = (p: string) => {
  const b = readFileSync(p);
  return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer };
};

/** Kernel command line: serial console, quiet, no waiting on hardware v86 does not have. */
export const GUEST_CMDLINE = 'console=ttyS0 quiet loglevel=3 tsc=reliable mitigations=off random.trust_cpu=on';

/** A guest's first serial port: a v86 emulator, or a relay of one that runs elsewhere (a page's worker). */
export interface SerialConsole {
  /** Calls `listener` with each byte the guest writes. */
  add_listener(event: 'serial0-output-byte', listener: (byte: number) => void): void;
  /** Writes `data` to the guest. */
  serial0_send(data: string): void;
}

/** The busybox shell on the guest's serial console. */
export class SerialShell {
  /** Everything the guest printed. */
  log = '';
  private seq = 0;
  private waiters: Array<{ re: RegExp; from: number; resolve: (m: RegExpExecArray) => void }> = [];

  constructor(private readonly emulator: SerialConsole) {
    emulator.add_listener('serial0-output-byte', (b: number) => {
      this.log += String.fromCharCode(b);
      if (b !== 10) return;
      this.waiters = this.waiters.filter((w) => {
        w.re.lastIndex = w.from;
        const m = w.re.exec(this.log);
        if (m) w.resolve(m);
        return !m;
      });
    });
  }

  /** Waits for `re` (global flag) to match in what the guest prints from now on. */
  waitFor(re: RegExp, ms: number, what = re.source, from = this.log.length): Promise<RegExpExecArray> {
    re.lastIndex = from;
    const m = re.exec(this.log);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`guest: no ${what} within ${ms} ms; last output:\n${this.log.slice(-2000)}`));
      }, ms);
      const done = (x: RegExpExecArray) => {
        clearTimeout(t);
        resolve(x);
      };
      this.waiters.push({ re, from, resolve: done });
    });
  }

  /** Runs `cmd` in the guest shell; resolves to its output (without the echoed command) and exit code. */
  async run(cmd: string, ms = 60_000): Promise<{ out: string; code: number }> {
    const id = ++this.seq;
    const from = this.log.length;
    const marker = new RegExp(`@@(\\d+)@@${id}@@\\r?\\n`, 'g');
    this.emulator.serial0_send(`${cmd}; echo "@@$?@@${id}@@"\n`);
    const m = await this.waitFor(marker, ms, `end of "${cmd}"`, from);
    // The tty echoes the command line first (with `$?` unexpanded, so it cannot match the
    // marker; ash may redraw a long line): the output starts on the line after its end.
    const text = this.log.slice(from, m.index);
    const echoed = text.lastIndexOf(`@@${id}@@"`);
    const start = echoed < 0 ? 0 : text.indexOf('\n', echoed) + 1;
    return { out: text.slice(start).replace(/\r/g, ''), code: Number(m[1]) };
  }

  /** {@link run}, failing on a non-zero exit code. */
  async ok(cmd: string, ms?: number): Promise<string> {
    const r = await this.run(cmd, ms);
    if (r.code !== 0) throw new Error(`guest: "${cmd}" exited ${r.code}:\n${r.out}`);
    return r.out;
  }
}

/** Options of {@link startGuest}. */
export interface StartGuestOptions {
  /** Guest RAM. @default 128 MiB */
  memoryMiB?: number;
  /** Plugs devices in after v86 loaded and before the CPU runs. */
  setup?: (emulator: V86) => void | Promise<void>;
  /** v86's `wasm_fn` (to instantiate its module yourself). */
  wasmFn?: (imports: WebAssembly.Imports) => Promise<WebAssembly.Exports>;
}

/** A booted guest at its shell prompt, with the time from run() to the prompt. */
export async function startGuest(m: GuestManifest, o: StartGuestOptions = {}): Promise<{ emulator: V86; shell: SerialShell; bootMs: number }> {
  const emulator = new V86({
    wasm_path: v86WasmPath(),
    ...(o.wasmFn ? { wasm_fn: o.wasmFn } : {}),
    bios: image(m.bios),
    vga_bios: image(m.vgabios),
    bzimage: image(m.kernel),
    initrd: image(m.initramfs),
    cmdline: GUEST_CMDLINE,
    memory_size: (o.memoryMiB ?? 128) << 20,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    fastboot: true,
  });
  const shell = new SerialShell(emulator);
  await new Promise<void>((resolve) => emulator.add_listener('emulator-loaded', () => resolve()));
  await o.setup?.(emulator);
  const t0 = performance.now();
  const ready = shell.waitFor(/VDPA-GUEST-READY/g, 180_000, 'the guest init');
  await emulator.run();
  await ready;
  const bootMs = performance.now() - t0;
  return { emulator, shell, bootMs };
}

/**
 * Hosts on the far side of guest switches: vdpasim_net devices on a platform of their own,
 * driven by our virtio-net driver, each answering ping with a PingResponder.
 */
export class PingHosts {
  private readonly bus: VdpaBus;
  private readonly virtio: ReturnType<typeof createVirtioVdpa>;
  private n = 0;

  constructor() {
    const hp = Platform.create({ ramSize: 16 << 20 });
    this.bus = new VdpaBus();
    this.bus.registerMgmtDevice(new VdpaSimNetMgmt(hp));
    this.virtio = createVirtioVdpa(hp, { queueSize: 256 });
    this.bus.registerDriver(this.virtio);
  }

  /** A host with `mac` and `ip` on a new port of `sw`; returns its responder (counters). */
  add(sw: L2Switch, mac: string, ip: string): PingResponder {
    const name = `host${this.n++}`;
    const dev = this.bus.devAdd('vdpasim_net', name, { mac }) as VdpaSimNet;
    const port = sw.connect(dev);
    dev.attachPort((f) => sw.input(port, f));
    const drv = this.virtio.net(name);
    const r = new PingResponder({ mac, ip });
    drv.onFrame((f) => {
      const reply = r.answer(f);
      if (reply) drv.send(reply);
    });
    return r;
  }
}

/** The guest side in the emulator's thread: a platform over v86's memory, a bus whose devices bind to vhost_vdpa. */
export function v86VhostBus(emu: V86, privateSize = 16 << 20): { p: Platform; bus: VdpaBus; vhost: VhostVdpa; plug(name: string, opts?: V86AttachOptions): V86Attachment } {
  const p = v86Platform(emu, { privateSize });
  const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
  const vhost = new VhostVdpa(p);
  bus.registerDriver(vhost);
  return { p, bus, vhost, plug: (name, opts) => attachV86(emu, p, vhost.open(vhost.nodeOf(name)), opts) };
}

/** Puts net device `dev` on a new port of `sw`. */
export function onSwitch(sw: L2Switch, dev: VdpaSimNet): void {
  const port = sw.connect(dev);
  dev.attachPort((f) => sw.input(port, f));
}

/** A booted guest with one vdpasim_net and one vdpasim_blk, and what the host side holds. */
export interface GuestRig {
  emulator: V86;
  shell: SerialShell;
  bootMs: number;
  /** The host at 10.0.0.1 on the far side of the switch. */
  responder: PingResponder;
  /** The blk device's image file. */
  diskPath: string;
  /** The PCI functions. */
  attached: V86Attachment[];
  /** The device worker (mode 'worker'). */
  worker?: DeviceWorker;
  close(): Promise<void>;
}

/**
 * Boots the guest with a vdpasim_net (MAC 52:54:00:00:02:01; on an L2 switch whose other port
 * is a host at 10.0.0.1: a vdpasim_net on its own platform driven by our virtio-net driver and a
 * PingResponder) and a vdpasim_blk over the image file `diskPath` (64 MiB by default).
 * mode 'thread': the devices in this thread, on v86's memory. mode 'worker': v86 on a shared
 * memory (v86SharedMemory), the devices in a device worker attached to it, their nodes opened
 * with openVhostSync, the worker's switch linked to this thread's switch by a SwitchLink.
 */
export async function guestWithDevices(m: GuestManifest, o: { mode: 'thread' | 'worker'; diskPath: string; diskBytes?: number; deviceFeatures?: { net?: bigint; blk?: bigint } }): Promise<GuestRig> {
  const sw = new L2Switch();
  const responder = new PingHosts().add(sw, '52:54:00:00:01:01', '10.0.0.1');
  const size = o.diskBytes ?? 64 << 20;
  const netAttrs = { mac: '52:54:00:00:02:01', ...(o.deviceFeatures?.net ? { deviceFeatures: o.deviceFeatures.net } : {}) };
  const blkFeatures = o.deviceFeatures?.blk ? { deviceFeatures: o.deviceFeatures.blk } : {};
  const attached: V86Attachment[] = [];
  let worker: DeviceWorker | undefined;
  let linkEnd: SwitchLinkEnd | undefined;
  let backend: FileBackend | undefined;
  let started: { emulator: V86; shell: SerialShell; bootMs: number };
  if (o.mode === 'thread') {
    const disk = (backend = await FileBackend.open(o.diskPath, { size }));
    started = await startGuest(m, {
      setup: (emu) => {
        const g = v86VhostBus(emu);
        onSwitch(sw, g.bus.devAdd('vdpasim_net', 'gnet', netAttrs) as VdpaSimNet);
        g.bus.devAdd('vdpasim_blk', 'gblk', { backend: disk, ...blkFeatures });
        attached.push(g.plug('gnet'), g.plug('gblk'));
      },
    });
  } else {
    const shared = v86SharedMemory(readFileSync(v86WasmPath()), { maximumBytes: 512 << 20 });
    started = await startGuest(m, {
      wasmFn: shared.wasmFn,
      setup: async (emu) => {
        const p = v86Platform(emu, { privateSize: 16 << 20 });
        worker = await spawnDeviceWorker({ platform: p, attach: { priv: 8 << 20, ram: 0 }, syncTimeoutMs: 30_000 });
        const link = SwitchLink.create(p);
        linkEnd = SwitchLinkEnd.attach(sw, p, link.ends[0]);
        await worker.bus.switchLink(link.ends[1]);
        await worker.bus.devAdd('vdpasim_net', 'gnet', netAttrs);
        await worker.bus.switchConnect('gnet');
        await worker.bus.devAdd('vdpasim_blk', 'gblk', { backend: { file: o.diskPath, size }, ...blkFeatures });
        for (const name of ['gnet', 'gblk']) {
          const node = await worker.bus.bind(name, 'vhost_vdpa');
          attached.push(attachV86(emu, p, await worker.bus.openVhostSync(node!)));
        }
      },
    });
  }
  return {
    ...started, responder, diskPath: o.diskPath, attached, ...(worker ? { worker } : {}),
    async close() {
      for (const a of attached) a.close();
      started.emulator.destroy();
      linkEnd?.close();
      await worker?.close();
      await backend?.close();
    },
  };
}
