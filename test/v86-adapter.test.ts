// The v86 adapter (src/v86/v86.ts) against a real v86 0.5.462 loaded to 'emulator-loaded' (no
// BIOS, no guest: the test is the guest). What is not a loaded v86 and a platform over another
// memory are FailedPrecondition; slots and ports out of range or taken are InvalidArgument and
// leave the vhost node unowned and no I/O port registered. Register level: config space as
// v86 holds it and through config cycles on 0xCF8/0xCFC, the I/O BAR through v86's port
// dispatch (cpu.io.port_read*/port_write*), a frame looped through guest RAM by vdpasim_net,
// also after v86's memory grows. INTx through v86's PCI routing: functions sharing a pin, and
// pins the BIOS routes to one IRQ, keep the line up while any of them asserts it; close()
// lowers it and the function reads all ones.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { V86 } from 'v86';
import {
  Platform, VhostError, VirtioError, Code,
  featureBit, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_F_ACCESS_PLATFORM, type VdpaSimNet, type VhostVdpaFile, type BlkBackend,
} from '../src/index.ts';
import * as C from '../src/pci/constants.ts';
import { attachV86, v86Memory, v86Platform, type V86Attachment } from '../src/v86/index.ts';
import { v86WasmPath, v86VhostBus } from './helpers/v86-guest.ts';
import { eth, tick } from './helpers/net.ts';
import { Guest, S_ACK, S_DRIVER, S_FEATURES_OK } from './helpers/pci-guest.ts';

// ───────────────────────── v86 and its internals, as the test reaches them ─────────────────────────

interface Cpu {
  wasm_memory: WebAssembly.Memory;
  mem8: Uint8Array;
  memory_size: Uint32Array;
  io: {
    ports: { device?: unknown }[];
    port_read8(p: number): number; port_read16(p: number): number; port_read32(p: number): number;
    port_write8(p: number, v: number): void; port_write16(p: number, v: number): void; port_write32(p: number, v: number): void;
    register_read(p: number, dev: object, r8?: () => number, r16?: () => number, r32?: () => number): void;
  };
  devices: { pci: Pci };
  device_raise_irq(irq: number): void;
  device_lower_irq(irq: number): void;
}
interface Pci {
  devices: ({ name: string } | undefined)[];
  device_spaces: (Int32Array | undefined)[];
  isa_bridge_space8: Uint8Array;
  raise_irq(id: number): void;
  lower_irq(id: number): void;
}

const emulators: V86[] = [];
async function loadV86(): Promise<V86> {
  const emulator = new V86({
    wasm_path: v86WasmPath(), memory_size: 16 << 20, autostart: false,
    disable_keyboard: true, disable_mouse: true, disable_speaker: true,
  } as ConstructorParameters<typeof V86>[0]);
  emulators.push(emulator);
  await new Promise<void>((resolve) => emulator.add_listener('emulator-loaded', () => resolve()));
  return emulator;
}
const cpuOf = (e: V86): Cpu => (e as unknown as { v86: { cpu: Cpu } }).v86.cpu;

/** A platform over the emulator's memory with a vhost_vdpa bus on it. */
function world(emulator: V86) {
  const { p, bus, vhost } = v86VhostBus(emulator, 4 << 20);
  let n = 0;
  const net = (mac = `52:54:00:00:00:${(++n).toString(16).padStart(2, '0')}`) => {
    const name = `net${++n}`;
    const dev = bus.devAdd('vdpasim_net', name, { mac }) as VdpaSimNet;
    return { dev, name, file: vhost.open(vhost.nodeOf(name)), mac };
  };
  const blk = () => {
    const name = `blk${++n}`;
    // v86's RAM is the guest's: the disk lives in a backend, not in platform RAM.
    const disk = new Uint8Array(64 * 512);
    const backend: BlkBackend = {
      capacity: 64,
      read: async (sector, len) => disk.slice(sector * 512, sector * 512 + len),
      write: async (sector, data) => disk.set(data, sector * 512),
      flush: async () => {},
    };
    bus.devAdd('vdpasim_blk', name, { backend });
    return { name, file: vhost.open(vhost.nodeOf(name)) };
  };
  return { p, bus, vhost, net, blk };
}

/** Which I/O ports ≥ 0x1000 have a device, and which PCI functions exist: to compare before/after. */
function registrations(emulator: V86): string {
  const cpu = cpuOf(emulator);
  const ports: number[] = [];
  for (let i = 0x1000; i < 0x10000; i++) if (cpu.io.ports[i]?.device !== undefined) ports.push(i);
  const fns = cpu.devices.pci.devices.map((d, i) => (d ? `${i}:${d.name}` : '')).filter(Boolean);
  return JSON.stringify({ ports, fns });
}

const failedPrecondition = (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition;
const invalidArgument = (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument;

/** Config cycles through v86's PCI host bridge ports, as a guest does them (mechanism #1). */
function cfg32(cpu: Cpu, slot: number, off: number): number {
  cpu.io.port_write32(0xcf8, (0x80000000 | (slot << 11) | (off & 0xfc)) | 0);
  return cpu.io.port_read32(0xcfc) >>> 0;
}
const cfg8 = (cpu: Cpu, slot: number, off: number) => (cfg32(cpu, slot, off) >>> (8 * (off & 3))) & 0xff;
const cfg16 = (cpu: Cpu, slot: number, off: number) => (cfg32(cpu, slot, off) >>> (8 * (off & 2))) & 0xffff;

/** The config bytes v86 holds for a function. */
function spaceOf(cpu: Cpu, slot: number): Uint8Array {
  const s = cpu.devices.pci.device_spaces[slot << 3];
  assert.ok(s, `a function at slot ${slot}`);
  return new Uint8Array(s.buffer, s.byteOffset, 256);
}

interface Cap { type: number; bar: number; offset: number; length: number; at: number; mult?: number }
/** The virtio vendor capabilities, read by config cycles; fails on an MSI-X capability. */
function capsOf(cpu: Cpu, slot: number): Map<number, Cap> {
  const caps = new Map<number, Cap>();
  assert.ok(cfg16(cpu, slot, C.PCI_STATUS) & 0x10, 'capability list');
  for (let at = cfg8(cpu, slot, C.PCI_CAPABILITY_LIST), n = 0; at !== 0 && n < 48; at = cfg8(cpu, slot, at + 1), n++) {
    assert.equal(at % 4, 0);
    const id = cfg8(cpu, slot, at);
    assert.notEqual(id, C.PCI_CAP_ID_MSIX, 'no MSI-X on v86');
    assert.equal(id, C.PCI_CAP_ID_VNDR);
    const type = cfg8(cpu, slot, at + C.VIRTIO_PCI_CAP_CFG_TYPE);
    if (caps.has(type)) continue;
    const cap: Cap = { type, at, bar: cfg8(cpu, slot, at + C.VIRTIO_PCI_CAP_BAR), offset: cfg32(cpu, slot, at + C.VIRTIO_PCI_CAP_OFFSET), length: cfg32(cpu, slot, at + C.VIRTIO_PCI_CAP_LENGTH) };
    if (type === C.VIRTIO_PCI_CAP_NOTIFY_CFG) cap.mult = cfg32(cpu, slot, at + 16);
    caps.set(type, cap);
  }
  return caps;
}

/** A port read or write of 1, 2 or 4 bytes through v86's dispatch, as in/out instructions do it. */
function portRead(cpu: Cpu, p: number, size: number): number {
  return size === 1 ? cpu.io.port_read8(p) : size === 2 ? cpu.io.port_read16(p) : cpu.io.port_read32(p) >>> 0;
}
function portWrite(cpu: Cpu, p: number, size: number, v: number): void {
  if (size === 1) cpu.io.port_write8(p, v);
  else if (size === 2) cpu.io.port_write16(p, v);
  else cpu.io.port_write32(p, v | 0);
}

/**
 * The shared register-level guest driver (test/helpers/pci-guest.ts) on a function v86 holds:
 * config space by config cycles on 0xCF8/0xCFC, BAR n through v86's port dispatch at the port
 * BAR n holds now (the BIOS may move it), split rings in v86's guest RAM from 1 MiB. Probed.
 */
function portGuest(emulator: V86, slot: number): Guest {
  const cpu = cpuOf(emulator);
  capsOf(cpu, slot); // vendor capabilities only, dword aligned, no MSI-X
  const cfgAddr = (off: number) => cpu.io.port_write32(0xcf8, (0x80000000 | (slot << 11) | (off & 0xfc)) | 0);
  const port = (bar: number) => cfg32(cpu, slot, C.PCI_BASE_ADDRESS_0 + 4 * bar) & ~3;
  const g = new Guest({
    configRead: (off, size) => (size === 1 ? cfg8(cpu, slot, off) : size === 2 ? cfg16(cpu, slot, off) : cfg32(cpu, slot, off)),
    configWrite: (off, size, v) => {
      cfgAddr(off);
      portWrite(cpu, 0xcfc + (off & 3), size, v);
    },
    read: (bar, off, size) => portRead(cpu, port(bar) + off, size),
    write: (bar, off, size, v) => portWrite(cpu, port(bar) + off, size, v),
  }, cpu.wasm_memory, cpu.mem8.byteOffset, { brk: 0x100000 });
  g.probe();
  return g;
}

/** Records v86's PCI raise_irq/lower_irq calls and the IRQ lines the PIC sees (wrapping the emulator's own methods). */
function watchIrqs(emulator: V86) {
  const cpu = cpuOf(emulator);
  const pci = cpu.devices.pci;
  const calls: string[] = [];
  const lines = new Map<number, boolean>();
  const raise = pci.raise_irq.bind(pci);
  const lower = pci.lower_irq.bind(pci);
  pci.raise_irq = (id) => {
    calls.push(`raise ${id >> 3}`);
    raise(id);
  };
  pci.lower_irq = (id) => {
    calls.push(`lower ${id >> 3}`);
    lower(id);
  };
  const draise = cpu.device_raise_irq.bind(cpu);
  const dlower = cpu.device_lower_irq.bind(cpu);
  cpu.device_raise_irq = (irq) => {
    lines.set(irq, true);
    draise(irq);
  };
  cpu.device_lower_irq = (irq) => {
    lines.set(irq, false);
    dlower(irq);
  };
  /** v86's PIRQ line of a slot's INTA# (pci.js raise_irq): the pin index, without BIOS routing. */
  const pinLevel = (slot: number) => {
    let level = false;
    for (const c of calls) {
      const [verb, s] = c.split(' ');
      if (((Number(s) - 1) & 3) === ((slot - 1) & 3)) level = verb === 'raise';
    }
    return level;
  };
  return { calls, lines, pinLevel };
}

/** A config interrupt from the device (link toggled): the function raises INTx until its ISR is read. */
async function configInterrupt(dev: VdpaSimNet): Promise<void> {
  dev.setLink(!dev.linkUp);
  for (let i = 0; i < 3; i++) await tick();
}

let shared: V86;
before(async () => {
  shared = await loadV86();
});
after(() => {
  for (const e of emulators) e.destroy();
});

// ───────────────────────── refusals ─────────────────────────

test('not a v86, or one not loaded yet: v86Memory, v86Platform and attachV86 throw FailedPrecondition', async () => {
  const cpu = cpuOf(shared);
  const fake = (patch: Record<string, unknown>) => ({ v86: { cpu: { ...cpu, wasm_memory: cpu.wasm_memory, mem8: cpu.mem8, memory_size: cpu.memory_size, io: cpu.io, devices: cpu.devices, ...patch } } });
  const notV86: [string, unknown][] = [
    ['undefined', undefined], ['null', null], ['a number', 42], ['a string', 'v86'], ['{}', {}], ['{ v86: {} }', { v86: {} }],
    ['{ v86: { cpu: {} } }', { v86: { cpu: {} } }], ['a function', () => {}],
    ['an unshared ArrayBuffer as memory', fake({ wasm_memory: new ArrayBuffer(8) })],
    ['no mem8', fake({ mem8: undefined })],
    ['no io', fake({ io: undefined })],
    ['io without register_read', fake({ io: { ...cpu.io, register_read: undefined, ports: cpu.io.ports, register_write: () => {} } })],
    ['no pci', fake({ devices: {} })],
    ['pci without raise_irq', fake({ devices: { pci: { devices: [], register_device: () => {}, lower_irq: () => {} } } })],
    ['no guest RAM (memory_size 0)', fake({ memory_size: Uint32Array.of(0) })],
  ];
  const w = world(shared);
  const { file } = w.net();
  for (const [what, e] of notV86) {
    assert.throws(() => v86Memory(e as never), failedPrecondition, `v86Memory: ${what}`);
    assert.throws(() => v86Platform(e as never), failedPrecondition, `v86Platform: ${what}`);
    assert.throws(() => attachV86(e as never, w.p, file), failedPrecondition, `attachV86: ${what}`);
  }
  // A V86 before its 'emulator-loaded' event.
  const early = new V86({ wasm_path: v86WasmPath(), memory_size: 16 << 20, autostart: false, disable_keyboard: true, disable_mouse: true, disable_speaker: true } as ConstructorParameters<typeof V86>[0]);
  emulators.push(early);
  assert.throws(() => v86Memory(early), failedPrecondition, 'not loaded');
  assert.throws(() => v86Platform(early), failedPrecondition, 'not loaded');
  assert.throws(() => attachV86(early, w.p, file), failedPrecondition, 'not loaded');
  await new Promise<void>((resolve) => early.add_listener('emulator-loaded', () => resolve()));
  // The node was never touched: the same file attaches.
  const a = attachV86(shared, w.p, file, { slot: 20 });
  assert.equal(a.slot, 20);
  a.close();
});

test('a platform over another memory is FailedPrecondition, and the node stays unowned', async () => {
  const w = world(shared);
  const { file } = w.net();
  const before = registrations(shared);
  const other = await loadV86();
  for (const p of [Platform.create({ ramSize: 1 << 20 }), v86Platform(other, { privateSize: 1 << 20 })]) {
    assert.throws(() => attachV86(shared, p, file), failedPrecondition);
  }
  // The right platform, but the attach is for the other emulator.
  assert.throws(() => attachV86(other, w.p, file), failedPrecondition);
  assert.equal(registrations(shared), before);
  const a = attachV86(shared, w.p, file, { slot: 21 });
  a.close();
});

test('a slot out of range or taken is InvalidArgument: nothing registered, the same file attaches next', () => {
  const w = world(shared);
  const { file } = w.net();
  const taken = attachV86(shared, w.p, w.net().file, { slot: 22 });
  const before = registrations(shared);
  for (const slot of [0, 32, 33, -1, 255, 256, 1.5, NaN, Infinity, '9', null, 9n]) {
    assert.throws(() => attachV86(shared, w.p, file, { slot: slot as never }), invalidArgument, `slot ${String(slot)}`);
  }
  for (const slot of [1 /* PIIX3 ISA bridge */, 5 /* ne2k */, 22 /* ours */]) {
    assert.ok(cpuOf(shared).devices.pci.devices[slot << 3], `slot ${slot} is taken`);
    assert.throws(() => attachV86(shared, w.p, file, { slot }), invalidArgument, `slot ${slot} taken`);
  }
  assert.equal(registrations(shared), before, 'no port or function registered by a refused attach');
  assert.ok(file.isOpen);
  const a = attachV86(shared, w.p, file, { slot: 23 });
  assert.equal(a.slot, 23);
  a.close();
  taken.close();
});

test('a port misaligned, below 0x1000, past 0xffff or taken is InvalidArgument: nothing registered, the same file attaches next', () => {
  const w = world(shared);
  const probe = w.net();
  const first = attachV86(shared, w.p, probe.file, { slot: 24, port: 0xc000 });
  const size = first.fn.description.bars[0]!.size;
  assert.equal(size & (size - 1), 0, 'a power of two');
  const cpu = cpuOf(shared);
  // Someone else's port inside the range at 0xd000.
  cpu.io.register_read(0xd000 + size - 1, { name: 'other' }, () => 0x12);
  const { file } = w.net();
  const before = registrations(shared);
  const bad = [
    0xc000 + 4, 0xc000 + size / 2, 0xc001, // misaligned
    0, 0x800, 0x1000 - size, 0xfff, -size, // below 0x1000
    0x10000, 0x10000 + size, 0x1_0000_0000, // past 0xffff
    0xc000, 0xd000, // taken: by the first function, and one port of it by another device
    0xc000 + 0.5, NaN, Infinity, '0xe000', null,
  ];
  for (const port of bad) {
    assert.throws(() => attachV86(shared, w.p, file, { slot: 25, port: port as never }), invalidArgument, `port ${String(port)}`);
    assert.equal(registrations(shared), before, `nothing left registered after port ${String(port)}`);
    assert.ok(file.isOpen, `the file is still open after port ${String(port)}`);
  }
  assert.equal(cpuOf(shared).devices.pci.devices[25 << 3], undefined);
  // The same file, unowned, attaches at the last port range below 0x10000.
  const a = attachV86(shared, w.p, file, { slot: 25, port: 0x10000 - size });
  assert.equal(a.port, 0x10000 - size);
  assert.equal(cpu.io.port_read16(0x10000 - size + C.VIRTIO_PCI_COMMON_NUMQ), a.fn.numQueues);
  assert.equal(cpu.io.port_read8(0xd000 + size - 1), 0x12, 'the other device keeps its port');
  a.close();
  first.close();
});

test('a node owned by someone else is refused (VhostError EBUSY) before anything is registered', () => {
  const w = world(shared);
  const { file } = w.net();
  file.setOwner();
  const before = registrations(shared);
  assert.throws(() => attachV86(shared, w.p, file, { slot: 26 }), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBUSY');
  assert.equal(registrations(shared), before);
  file.resetOwner();
  attachV86(shared, w.p, file, { slot: 26 }).close();
});

test('a closed file is refused (VhostError EBADF), options that are not an object (attachV86, v86Platform) are InvalidArgument; nothing registered', () => {
  const w = world(shared);
  const closed = w.net().file;
  closed.close();
  const before = registrations(shared);
  assert.throws(() => attachV86(shared, w.p, closed, { slot: 27 }), (e: unknown) => e instanceof VhostError && e.errnoName === 'EBADF');
  const { file } = w.net();
  for (const opts of [null, 42, 'slot 27']) {
    assert.throws(() => attachV86(shared, w.p, file, opts as never), invalidArgument, String(opts));
  }
  assert.equal(registrations(shared), before);
  for (const opts of [null, 42, { privateSize: -1 }, { privateSize: 0 }, { privateSize: 1.5 }]) {
    assert.throws(() => v86Platform(shared, opts as never), invalidArgument, `v86Platform ${JSON.stringify(opts)}`);
  }
  attachV86(shared, w.p, file, { slot: 27 }).close();
  // A closed function stays plugged (v86 cannot unplug): its slot and ports stay taken.
  assert.throws(() => attachV86(shared, w.p, w.net().file, { slot: 27 }), invalidArgument);
});

test('defaults: the first free slot from 8, a free port range from 0xe000 down, the name vdpa-<slot>', async () => {
  const emulator = await loadV86();
  const w = world(emulator);
  const a = attachV86(emulator, w.p, w.net().file);
  const b = attachV86(emulator, w.p, w.blk().file, { name: 'my-disk' });
  const size = a.fn.description.bars[0]!.size;
  assert.equal(a.slot, 8);
  assert.equal(b.slot, 9);
  assert.equal(a.port, 0xe000);
  assert.equal(b.port, 0xe000 - b.fn.description.bars[0]!.size);
  assert.ok(b.port + b.fn.description.bars[0]!.size <= a.port && size > 0);
  const pci = cpuOf(emulator).devices.pci;
  assert.equal(pci.devices[8 << 3]!.name, 'vdpa-8');
  assert.equal(pci.devices[9 << 3]!.name, 'my-disk');
  a.close();
  b.close();
});

// ───────────────────────── registers ─────────────────────────

test('config space as v86 holds it and through 0xCF8/0xCFC: IDs, class, BAR 0 at the port, INTA#, the virtio capabilities', () => {
  const w = world(shared);
  const net = w.net();
  const blk = w.blk();
  const an = attachV86(shared, w.p, net.file, { slot: 10, port: 0xa000 });
  const ab = attachV86(shared, w.p, blk.file, { slot: 11, port: 0xb000 });
  const cpu = cpuOf(shared);
  for (const [a, deviceId, klass] of [[an, 0x1041, 0x020000], [ab, 0x1042, 0x010000]] as const) {
    const s = a.slot;
    const space = spaceOf(cpu, s);
    const dv = new DataView(space.buffer, space.byteOffset, 256);
    assert.equal(dv.getUint16(0, true), 0x1af4, 'vendor (bytes v86 holds)');
    assert.equal(dv.getUint16(2, true), deviceId, 'device (bytes v86 holds)');
    assert.equal(cfg16(cpu, s, C.PCI_VENDOR_ID), 0x1af4, 'vendor (config cycle)');
    assert.equal(cfg16(cpu, s, 2), deviceId, 'device (config cycle)');
    assert.equal(cfg8(cpu, s, C.PCI_REVISION_ID), 1);
    assert.equal(cfg32(cpu, s, C.PCI_REVISION_ID) >>> 8, klass);
    assert.equal(cfg8(cpu, s, C.PCI_HEADER_TYPE), 0);
    assert.equal(cfg16(cpu, s, C.PCI_SUBSYSTEM_VENDOR_ID), 0x1af4);
    assert.ok(cfg16(cpu, s, C.PCI_SUBSYSTEM_ID) >= 0x40);
    assert.equal(cfg8(cpu, s, C.PCI_INTERRUPT_PIN), 1, 'INTA#');
    assert.equal(cfg32(cpu, s, C.PCI_BASE_ADDRESS_0), (a.port | 1) >>> 0, 'BAR 0: I/O space at the port');
    for (let i = 1; i < 6; i++) assert.equal(cfg32(cpu, s, C.PCI_BASE_ADDRESS_0 + 4 * i), 0, `BAR ${i}`);
    // Every dword a config cycle reads is what v86 holds, and (but for BAR 0) what the function snapshots.
    const snap = new DataView(a.fn.configSnapshot().buffer);
    for (let off = 0; off < 256; off += 4) {
      assert.equal(cfg32(cpu, s, off), dv.getUint32(off, true), `dword 0x${off.toString(16)}`);
      if (off !== C.PCI_BASE_ADDRESS_0) assert.equal(dv.getUint32(off, true), snap.getUint32(off, true), `dword 0x${off.toString(16)} of the snapshot`);
    }
    const caps = capsOf(cpu, s);
    const size = a.fn.description.bars[0]!.size;
    const common = caps.get(C.VIRTIO_PCI_CAP_COMMON_CFG)!;
    const isr = caps.get(C.VIRTIO_PCI_CAP_ISR_CFG)!;
    const dev = caps.get(C.VIRTIO_PCI_CAP_DEVICE_CFG)!;
    const notify = caps.get(C.VIRTIO_PCI_CAP_NOTIFY_CFG)!;
    assert.deepEqual([common.bar, common.offset], [0, 0]);
    assert.ok(common.length >= C.VIRTIO_PCI_COMMON_CFG_SIZE);
    assert.deepEqual([isr.bar, isr.offset], [0, 0x40]);
    assert.deepEqual([dev.bar, dev.offset, dev.length], [0, 0x60, a.fn.file.getConfigSize()]);
    assert.equal(notify.bar, 0);
    assert.equal(notify.mult, 4);
    assert.ok(notify.offset >= dev.offset + dev.length && notify.offset + notify.length <= size, 'notify inside the BAR, after device cfg');
    assert.ok(notify.length >= a.fn.numQueues * 4);
  }
  // An empty slot answers all ones.
  assert.equal(cfg32(cpu, 29, 0), 0xffffffff);
  an.close();
  ab.close();
});

test('I/O port reads and writes reach the function: status, features, queue select/size, device config; odd widths and unaligned read all ones', () => {
  const w = world(shared);
  const net = w.net('52:54:00:ab:cd:ef');
  const a = attachV86(shared, w.p, net.file, { slot: 12, port: 0x9000 });
  const cpu = cpuOf(shared);
  const io = cpu.io;
  const P = a.port;
  // device_status round trip (8-bit), reset by writing 0.
  io.port_write8(P + C.VIRTIO_PCI_COMMON_STATUS, 1);
  assert.equal(io.port_read8(P + C.VIRTIO_PCI_COMMON_STATUS), 1);
  io.port_write8(P + C.VIRTIO_PCI_COMMON_STATUS, 3);
  assert.equal(io.port_read8(P + C.VIRTIO_PCI_COMMON_STATUS), 3);
  assert.equal(net.dev.getStatus(), 3, 'the device got it through vhost');
  io.port_write8(P + C.VIRTIO_PCI_COMMON_STATUS, 0);
  assert.equal(io.port_read8(P + C.VIRTIO_PCI_COMMON_STATUS), 0);
  // num_queues, queue_select/queue_size (16-bit).
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_NUMQ), a.fn.numQueues);
  io.port_write16(P + C.VIRTIO_PCI_COMMON_Q_SELECT, 1);
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_Q_SELECT), 1);
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_Q_SIZE), a.fn.maxQueueSize);
  io.port_write16(P + C.VIRTIO_PCI_COMMON_Q_SIZE, 64);
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_Q_SIZE), 64);
  io.port_write16(P + C.VIRTIO_PCI_COMMON_Q_SELECT, 0);
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_Q_SIZE), a.fn.maxQueueSize, 'queue 0 kept its own size');
  // Device features (32-bit): VERSION_1 in the upper half, ACCESS_PLATFORM not offered by default.
  io.port_write32(P + C.VIRTIO_PCI_COMMON_DFSELECT, 1);
  assert.equal(io.port_read32(P + C.VIRTIO_PCI_COMMON_DFSELECT), 1);
  const hi = io.port_read32(P + C.VIRTIO_PCI_COMMON_DF) >>> 0;
  assert.ok(hi & 1, 'VIRTIO_F_VERSION_1');
  assert.equal(hi & 2, 0, 'no VIRTIO_F_ACCESS_PLATFORM without accessPlatform');
  // Device config: the MAC, as virtio_cread8 reads it.
  const mac = Array.from({ length: 6 }, (_, i) => io.port_read8(P + 0x60 + i));
  assert.deepEqual(mac, [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
  assert.equal(a.fn.badAccesses, 0);
  // Odd widths and unaligned accesses read all ones and are counted; writes of them are dropped.
  assert.equal(io.port_read8(P + C.VIRTIO_PCI_COMMON_Q_SELECT), 0xff, '8-bit read of a 16-bit field');
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_STATUS), 0xffff, '16-bit read of an 8-bit field');
  assert.equal(io.port_read32(P + C.VIRTIO_PCI_COMMON_Q_SELECT) >>> 0, 0xffffffff, '32-bit read of a 16-bit field');
  assert.equal(io.port_read16(P + 1), 0xffff, 'unaligned 16-bit');
  assert.equal(io.port_read32(P + 2) >>> 0, 0xffffffff, 'unaligned 32-bit');
  assert.equal(io.port_read32(P + 7) >>> 0, 0xffffffff, 'unaligned 32-bit, odd port');
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_DF + 2), 0xffff, '16-bit read inside a 32-bit field');
  io.port_write16(P + C.VIRTIO_PCI_COMMON_STATUS, 0x0101);
  io.port_write8(P + C.VIRTIO_PCI_COMMON_Q_SELECT, 1);
  io.port_write32(P + C.VIRTIO_PCI_COMMON_Q_SELECT + 1, -1);
  assert.equal(io.port_read8(P + C.VIRTIO_PCI_COMMON_STATUS), 0, 'status unchanged');
  assert.equal(io.port_read16(P + C.VIRTIO_PCI_COMMON_Q_SELECT), 0, 'queue_select unchanged');
  assert.equal(a.fn.badAccesses, 10);
  // Past the device config and notify area, inside the BAR: all ones; past the BAR: not ours.
  const size = a.fn.description.bars[0]!.size;
  assert.equal(io.port_read32(P + size - 4) >>> 0, 0xffffffff);
  assert.equal(io.port_read8(P + size), 0xff);
  assert.equal(cpu.io.ports[P + size]?.device, undefined, 'the BAR ends at its size');
  assert.equal(a.fn.backendErrors, 0);
  a.close();
  // accessPlatform: true offers VIRTIO_F_ACCESS_PLATFORM.
  const b = attachV86(shared, w.p, w.net().file, { slot: 12 + 1, port: 0x9800, accessPlatform: true });
  io.port_write32(b.port + C.VIRTIO_PCI_COMMON_DFSELECT, 1);
  assert.ok((io.port_read32(b.port + C.VIRTIO_PCI_COMMON_DF) >>> 0) & (1 << (VIRTIO_F_ACCESS_PLATFORM - 32)));
  b.close();
});

test('the BIOS sizes and moves the I/O BAR by config cycles (v86 moves the handlers): registers answer at the new port only', () => {
  const w = world(shared);
  const net = w.net('52:54:00:00:77:01');
  const a = attachV86(shared, w.p, net.file, { slot: 28, port: 0x6000 });
  const cpu = cpuOf(shared);
  const size = a.fn.description.bars[0]!.size;
  const wr = (off: number, v: number) => {
    cpu.io.port_write32(0xcf8, (0x80000000 | (28 << 11) | off) | 0);
    cpu.io.port_write32(0xcfc, v | 0);
  };
  // Sizing, as SeaBIOS's pci_bios_get_bar: write all ones, read the mask, restore.
  wr(C.PCI_BASE_ADDRESS_0, -1);
  assert.equal(cfg32(cpu, 28, C.PCI_BASE_ADDRESS_0) & 0xffff & ~3, (~(size - 1) & 0xfffc) >>> 0, 'the size mask');
  assert.equal(cfg32(cpu, 28, C.PCI_BASE_ADDRESS_0) & 1, 1, 'I/O space');
  // Placed elsewhere.
  wr(C.PCI_BASE_ADDRESS_0, 0x7000);
  assert.equal(cfg32(cpu, 28, C.PCI_BASE_ADDRESS_0), 0x7001);
  assert.equal(cpu.io.port_read16(0x7000 + C.VIRTIO_PCI_COMMON_NUMQ), a.fn.numQueues);
  assert.equal(cpu.io.port_read8(0x7000 + 0x60 + 5), 1, 'device config at the new place');
  cpu.io.port_write8(0x7000 + C.VIRTIO_PCI_COMMON_STATUS, 1);
  assert.equal(cpu.io.port_read8(0x7000 + C.VIRTIO_PCI_COMMON_STATUS), 1);
  assert.equal(net.dev.getStatus(), 1);
  assert.equal(cpu.io.port_read8(0x6000 + C.VIRTIO_PCI_COMMON_STATUS), 0xff, 'nothing at the old place');
  assert.equal(cpu.io.ports[0x6000]?.device, undefined);
  assert.equal(a.fn.badAccesses, 0);
  a.close();
});

test('a frame loops through guest RAM by the ports, INTx on the used buffer, lowered by the ISR read; also after v86\'s memory grows', async () => {
  const emulator = await loadV86();
  const w = world(emulator);
  const net = w.net();
  const irqs = watchIrqs(emulator);
  const a = attachV86(emulator, w.p, net.file, { slot: 14 });
  const cpu = cpuOf(emulator);
  const ram = v86Memory(emulator);
  const g = portGuest(emulator, 14);
  const want = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC);
  assert.equal(g.negotiate(want), want);
  assert.equal(g.status, S_ACK | S_DRIVER | S_FEATURES_OK, 'FEATURES_OK took');
  g.setupQueue(0, 16);
  cpu.wasm_memory.grow(3); // between bring-up and traffic
  g.setupQueue(1, 16);
  g.common(C.VIRTIO_PCI_COMMON_STATUS, 1, 15);
  assert.equal(g.status, 15);
  for (let round = 0; round < 3; round++) {
    if (round === 2) {
      cpu.wasm_memory.grow(16); // while buffers are outstanding
      assert.deepEqual(v86Memory(emulator), { ...ram }, 'guest RAM stays where it was');
    }
    const rx = g.alloc(2048);
    g.add(0, [], [{ gpa: rx, len: 2048 }]);
    g.kick(0);
    if (round === 1) cpu.wasm_memory.grow(1);
    const fr = eth(60 + 301 * round, round);
    const tx = g.alloc(12 + fr.length);
    g.bytes(tx, 12).fill(0);
    g.bytes(tx + 12, fr.length).set(fr);
    irqs.calls.length = 0;
    g.add(1, [{ gpa: tx, len: 12 + fr.length }], []);
    g.kick(1);
    for (let i = 0; i < 10 && !irqs.calls.length; i++) await tick();
    assert.deepEqual(irqs.calls, ['raise 14'], `round ${round}: INTx raised`);
    const got = g.used(0);
    assert.equal(got.length, 1, `round ${round}`);
    assert.equal(got[0]!.len, 12 + fr.length);
    assert.deepEqual(Uint8Array.from(g.bytes(rx + 12, fr.length)), fr, `round ${round}: the frame came back`);
    assert.equal(g.used(1).length, 1);
    assert.equal(g.isr() & 1, 1, 'ISR queue bit, read to clear');
    assert.deepEqual(irqs.calls, ['raise 14', 'lower 14'], 'the ISR read lowered INTx');
    assert.equal(g.isr(), 0);
  }
  assert.equal(w.p.memory, cpu.wasm_memory);
  assert.equal(a.fn.badAccesses + a.fn.backendErrors + a.fn.callbackErrors, 0);
  a.close();
});

// ───────────────────────── INTx ─────────────────────────

test('INTx: two functions on one pin (slots 8 and 12, pin (slot-1)&3 = 3): lowering one keeps the line raised', async () => {
  const emulator = await loadV86();
  const w = world(emulator);
  const n8 = w.net();
  const n12 = w.net();
  const a8 = attachV86(emulator, w.p, n8.file, { slot: 8 });
  const a12 = attachV86(emulator, w.p, n12.file, { slot: 12 });
  const irqs = watchIrqs(emulator);
  const g8 = portGuest(emulator, 8);
  const g12 = portGuest(emulator, 12);
  await configInterrupt(n8.dev);
  assert.ok(irqs.pinLevel(8), 'raised by slot 8');
  await configInterrupt(n12.dev);
  assert.ok(irqs.pinLevel(12));
  assert.equal(g8.isr(), 2, 'config bit');
  assert.ok(irqs.pinLevel(12), 'still raised: slot 12 asserts it');
  assert.equal(g12.isr(), 2);
  assert.ok(!irqs.pinLevel(8), 'lowered with the last');
  // The other order, and a close() of the one still asserting.
  await configInterrupt(n12.dev);
  await configInterrupt(n8.dev);
  g12.isr();
  assert.ok(irqs.pinLevel(8), 'slot 8 still asserts it');
  a8.close();
  assert.ok(!irqs.pinLevel(8), 'close() lowered it');
  a12.close();
});

test('INTx: pins the BIOS routes to one IRQ (SeaBIOS: PIRQA/B → 10, PIRQC/D → 11) keep the IRQ up while any function asserts it', async () => {
  const emulator = await loadV86();
  const cpu = cpuOf(emulator);
  // What SeaBIOS's piix_isa_bridge_setup writes to the PIIX3 PIRQ route control registers.
  cpu.devices.pci.isa_bridge_space8.set([10, 10, 11, 11], 0x60);
  const w = world(emulator);
  const nets = [9, 10, 11, 12].map((slot) => ({ slot, ...w.net() }));
  const atts = nets.map((n) => attachV86(emulator, w.p, n.file, { slot: n.slot }));
  const guests = new Map(nets.map((n) => [n.slot, portGuest(emulator, n.slot)]));
  const irqs = watchIrqs(emulator);
  const dev = (slot: number) => nets.find((n) => n.slot === slot)!.dev;
  // Slot 9 is on PIRQA, slot 10 on PIRQB: both IRQ 10.
  await configInterrupt(dev(9));
  await configInterrupt(dev(10));
  assert.equal(irqs.lines.get(10), true);
  guests.get(9)!.isr();
  assert.equal(irqs.lines.get(10), true, 'IRQ 10 stays up: slot 10 still asserts it');
  guests.get(10)!.isr();
  assert.equal(irqs.lines.get(10), false, 'down with the last');
  // Slots 11 (PIRQC) and 12 (PIRQD): IRQ 11; lowered by close() of one, then the ISR read of the other.
  await configInterrupt(dev(11));
  await configInterrupt(dev(12));
  atts[2]!.close();
  assert.equal(irqs.lines.get(11), true, 'IRQ 11 stays up after close() of slot 11');
  guests.get(12)!.isr();
  assert.equal(irqs.lines.get(11), false);
  // Different IRQs do not hold each other up.
  await configInterrupt(dev(9));
  await configInterrupt(dev(12));
  guests.get(9)!.isr();
  assert.equal(irqs.lines.get(10), false);
  assert.equal(irqs.lines.get(11), true);
  guests.get(12)!.isr();
  assert.equal(irqs.lines.get(11), false);
  for (const a of atts) a.close();
});

test('close(): the function reads all ones, writes are dropped, INTx is lowered; idempotent; its neighbours unaffected', async () => {
  const emulator = await loadV86();
  const w = world(emulator);
  const n = w.net();
  const m = w.net();
  const a = attachV86(emulator, w.p, n.file, { slot: 16, port: 0x8000 });
  const b = attachV86(emulator, w.p, m.file, { slot: 17, port: 0x8800 });
  const irqs = watchIrqs(emulator);
  const io = cpuOf(emulator).io;
  io.port_write8(a.port + C.VIRTIO_PCI_COMMON_STATUS, 1);
  await configInterrupt(n.dev);
  assert.ok(irqs.pinLevel(16));
  a.close();
  assert.ok(!irqs.pinLevel(16), 'INTx lowered');
  assert.equal(irqs.calls.at(-1), 'lower 16');
  assert.equal(n.file.isOpen, false, 'the node is closed');
  for (const off of [C.VIRTIO_PCI_COMMON_STATUS, C.VIRTIO_PCI_COMMON_NUMQ, 0x40, 0x60]) {
    assert.equal(io.port_read8(a.port + off), 0xff);
    assert.equal(io.port_read16(a.port + (off & ~1)), 0xffff);
    assert.equal(io.port_read32(a.port + (off & ~3)) >>> 0, 0xffffffff);
  }
  io.port_write8(a.port + C.VIRTIO_PCI_COMMON_STATUS, 1);
  assert.equal(io.port_read8(a.port + C.VIRTIO_PCI_COMMON_STATUS), 0xff);
  const calls = irqs.calls.length;
  a.close();
  assert.equal(irqs.calls.length, calls, 'a second close() does nothing');
  await configInterrupt(n.dev).catch(() => {});
  assert.equal(irqs.calls.length, calls, 'no interrupt from a closed function');
  // The neighbour still works.
  io.port_write8(b.port + C.VIRTIO_PCI_COMMON_STATUS, 1);
  assert.equal(io.port_read8(b.port + C.VIRTIO_PCI_COMMON_STATUS), 1);
  b.close();
});

test('attached functions survive many grows of v86\'s memory (views re-derived) and a second platform on the same emulator', async () => {
  const emulator = await loadV86();
  const cpu = cpuOf(emulator);
  const w1 = world(emulator);
  const w2 = world(emulator); // a second private arena grown onto the same memory
  const n1 = w1.net('52:54:00:00:10:01');
  const n2 = w2.net('52:54:00:00:10:02');
  const a1 = attachV86(emulator, w1.p, n1.file, { slot: 3 });
  const a2 = attachV86(emulator, w2.p, n2.file, { slot: 4 });
  for (let i = 0; i < 5; i++) {
    cpu.wasm_memory.grow(1 + i);
    for (const [a, last] of [[a1, 1], [a2, 2]] as const) {
      assert.equal(cpu.io.port_read8(a.port + 0x60 + 5), last, 'device config through GET_CONFIG');
      for (const st of [1, 3]) {
        cpu.io.port_write8(a.port + C.VIRTIO_PCI_COMMON_STATUS, st);
        assert.equal(cpu.io.port_read8(a.port + C.VIRTIO_PCI_COMMON_STATUS), st);
      }
      cpu.io.port_write8(a.port + C.VIRTIO_PCI_COMMON_STATUS, 0);
      assert.equal(cpu.io.port_read8(a.port + C.VIRTIO_PCI_COMMON_STATUS), 0);
    }
  }
  assert.equal(a1.fn.backendErrors + a2.fn.backendErrors, 0);
  a1.close();
  a2.close();
});

// Keep the type imports used.
export type { V86Attachment, VhostVdpaFile };
