// The v86 adapter (`vdpa-wasm/v86`): puts a vdpa device in front of a running v86 guest as a
// PCI function its own virtio_pci driver probes, and opens v86's memory as a Platform.
//
// v86 (npm `v86`, BSD-2) keeps guest RAM inside its own WebAssembly.Memory and a device's PCI
// config space as bytes of its own; it relocates only I/O BARs. So the function is a
// VirtioPciFunction with an I/O BAR (common @0, ISR @0x40, device cfg @0x60, notify after it),
// no MSI-X (INTx through v86's PCI interrupt routing), registered the way v86's own virtio
// devices register (src/virtio.js: I/O port handlers first, then pci.register_device).
//
// What of v86 this touches, all on the object `emulator.v86` (the V86 starter's `v86` field),
// pinned to v86 ≥ 0.5.462 < 0.6 (the peer dependency range; v86 reports no version at run time,
// so attach checks that each of these has the shape used, FailedPrecondition otherwise):
//   cpu.wasm_memory                the WebAssembly.Memory
//   cpu.mem8.byteOffset            where guest RAM starts in it
//   cpu.memory_size[0]             guest RAM bytes
//   cpu.io.ports[port].device      to find free I/O ports
//   cpu.io.register_read/_write    I/O port handlers (port, device, r8, r16, r32)
//   cpu.devices.pci.devices        to find a free slot
//   cpu.devices.pci.register_device({ name, pci_id, pci_space, pci_bars })
//   cpu.devices.pci.raise_irq/lower_irq(pci_id)
// Nothing else of v86 is read or written.

import { VirtioError, Code } from '../errors.ts';
import { Platform } from '../platform/platform.ts';
import { VirtioPciFunction, type VirtioPciOptions, type VhostFileOps } from '../pci/virtio-pci.ts';
import { VhostVdpaFile } from '../drivers/vhost-vdpa.ts';
import * as C from '../pci/constants.ts';

/** The v86 versions the adapter was written against (what it checks at attach time). */
export const V86_VERSION_RANGE = '>=0.5.462 <0.6.0';

type PortRead = (port: number) => number;
type PortWrite = (port: number, value?: number) => void;
interface V86Io {
  ports: Array<{ device?: unknown } | undefined>;
  register_read(port: number, device: object, r8?: PortRead, r16?: PortRead, r32?: PortRead): void;
  register_write(port: number, device: object, w8?: (v: number) => void, w16?: (v: number) => void, w32?: (v: number) => void): void;
}
interface V86PciBus {
  devices: unknown[];
  register_device(dev: V86PciDevice): unknown;
  raise_irq(pciId: number): void;
  lower_irq(pciId: number): void;
}
interface V86PciDevice {
  name: string;
  pci_id: number;
  pci_space: number[];
  pci_bars: Array<{ size: number } | undefined>;
}
interface V86Cpu {
  wasm_memory: WebAssembly.Memory;
  mem8: { byteOffset: number };
  memory_size: ArrayLike<number>;
  io: V86Io;
  devices: { pci: V86PciBus };
}

/**
 * A v86 emulator (an instance of the `V86` class of the `v86` package) after its
 * `emulator-loaded` event. Its typings do not declare the machine object (`emulator.v86`) the
 * adapter reads, so any object is accepted and checked at run time (FailedPrecondition).
 */
export type V86Like = object;

function cpuOf(emulator: V86Like): V86Cpu {
  const cpu = (emulator as { v86?: { cpu?: Partial<V86Cpu> } })?.v86?.cpu;
  const ok = cpu && cpu.wasm_memory instanceof WebAssembly.Memory && cpu.mem8 && typeof cpu.mem8.byteOffset === 'number' &&
    cpu.memory_size && typeof cpu.io?.register_read === 'function' && typeof cpu.io.register_write === 'function' &&
    Array.isArray(cpu.io.ports) && typeof cpu.devices?.pci?.register_device === 'function' &&
    typeof cpu.devices.pci.raise_irq === 'function' && typeof cpu.devices.pci.lower_irq === 'function' && Array.isArray(cpu.devices.pci.devices);
  if (!ok) {
    throw new VirtioError(Code.FailedPrecondition,
      `not a loaded v86 ${V86_VERSION_RANGE} emulator: attach after its 'emulator-loaded' event (emulator.v86.cpu with wasm_memory, mem8, memory_size, io, devices.pci)`);
  }
  return cpu as V86Cpu;
}

/** Where v86 keeps guest RAM: the memory and the byte range guest-physical 0.. maps to. */
export interface V86Memory {
  /** v86's WebAssembly.Memory. */
  memory: WebAssembly.Memory;
  /** Offset of guest-physical address 0 in it. */
  ramBase: number;
  /** Guest RAM bytes (the emulator's `memory_size`). */
  ramSize: number;
}

/** Guest RAM of a loaded v86 emulator. Throws FailedPrecondition when it is not one. */
export function v86Memory(emulator: V86Like): V86Memory {
  const cpu = cpuOf(emulator);
  const ramSize = cpu.memory_size[0]!;
  if (!(ramSize > 0)) throw new VirtioError(Code.FailedPrecondition, 'v86 has no guest RAM yet: attach after emulator-loaded');
  return { memory: cpu.wasm_memory, ramBase: cpu.mem8.byteOffset, ramSize };
}

/**
 * A Platform over v86's memory (Platform.foreign): guest RAM where v86 keeps it, the package's
 * private arena in pages grown onto the memory (v86's views re-make themselves after a grow).
 */
export function v86Platform(emulator: V86Like, opts: { privateSize?: number; module?: WebAssembly.Module } = {}): Platform {
  const m = v86Memory(emulator);
  if (typeof opts !== 'object' || opts === null) throw new VirtioError(Code.InvalidArgument, 'options must be an object');
  return Platform.foreign({ ...m, privateSize: opts.privateSize ?? 4 << 20, ...(opts.module ? { module: opts.module } : {}) });
}

/** Options of {@link attachV86}. */
export interface V86AttachOptions extends Pick<VirtioPciOptions, 'accessPlatform'> {
  /** PCI device number (slot) on bus 0, 1..31. @default the first free slot from 8 */
  slot?: number;
  /** First I/O port of the BAR before the BIOS moves it (≥ 0x1000, aligned to the BAR size). @default a free range from 0xe000 down */
  port?: number;
  /** Name v86 shows for the device. @default 'vdpa-' + the slot */
  name?: string;
  /**
   * Deliver the device's interrupts by awaiting its call doorbells (`callWaiter.waitAsync()`
   * in a loop, then `poll()`). Needed when the device runs in another worker (a node opened with
   * `RemoteVdpaBus.openVhostSync`): its rings are not seen in this thread otherwise. An in-thread
   * node raises them by itself. @default true unless `file` is an in-thread VhostVdpaFile
   */
  awaitCalls?: boolean;
}

/** A vdpa device plugged into v86. */
export interface V86Attachment {
  /** The PCI function the guest drives. */
  readonly fn: VirtioPciFunction;
  /** PCI slot (device number). */
  readonly slot: number;
  /** The I/O BAR's first port as registered (the BIOS may move it; v86 moves the handlers). */
  readonly port: number;
  /** Unplugs it: the function is closed (reads all ones, writes dropped), INTx lowered. */
  close(): void;
}

/**
 * Our functions asserting INTx (by PCI id), per PCI interrupt pin of each v86 machine. v86
 * routes slot s's INTA# to pin (s - 1) & 3 (pci.js raise_irq/lower_irq), and its PIC keeps one
 * level per IRQ with no count of who raised it. So functions that share a pin raise it on their
 * first and lower it on their last; and since the BIOS routes several pins to one IRQ
 * (SeaBIOS: pins A and B to IRQ 10, C and D to 11), lowering a pin raises again every other pin
 * that still has a function asserting it, whichever IRQ it shares.
 */
const asserting = new WeakMap<V86Cpu, Set<number>[]>();

const IO_MIN = 0x1000; // v86 moves only ports ≥ 0x1000 when the guest relocates a BAR (pci.js set_io_bars)

/**
 * Plugs the vhost_vdpa node `file` (open, unowned: an in-thread VhostVdpaFile, or a node in a
 * device worker from `RemoteVdpaBus.openVhostSync`) into v86 as a modern virtio-pci function.
 * Call it after `emulator-loaded` and before the guest scans PCI (before `run()` for a guest
 * that has not booted; a booted Linux guest finds it after `echo 1 > /sys/bus/pci/rescan`).
 * Guest-physical memory reaches the device through IOTLB UPDATE messages for v86's RAM.
 * Throws FailedPrecondition when `emulator` is not a loaded v86 or `platform` is not over its
 * memory, InvalidArgument for a slot or port that is taken or out of range, and what
 * VirtioPciFunction throws (a node already owned: VhostError EBUSY). A refused attach registers
 * nothing with v86 and leaves `file` open and unowned.
 */
export function attachV86(emulator: V86Like, platform: Platform, file: VhostFileOps, opts: V86AttachOptions = {}): V86Attachment {
  const cpu = cpuOf(emulator);
  const { memory, ramBase, ramSize } = v86Memory(emulator);
  if (platform.memory !== memory) throw new VirtioError(Code.FailedPrecondition, 'the platform is not over this v86 memory: make it with v86Platform(emulator)');
  const pci = cpu.devices.pci;
  const bad = (why: string): never => {
    throw new VirtioError(Code.InvalidArgument, why);
  };
  if (typeof opts !== 'object' || opts === null) bad('options must be an object');
  let slot = opts.slot;
  if (slot === undefined) {
    slot = 8;
    while (slot < 32 && pci.devices[slot << 3] !== undefined) slot++;
    if (slot === 32) bad('no free PCI slot on bus 0');
  } else if (!Number.isInteger(slot) || slot < 1 || slot > 31) bad(`slot ${slot} must be 1..31`);
  else if (pci.devices[slot << 3] !== undefined) bad(`PCI slot ${slot} is taken`);
  const pciId = slot! << 3;

  let intx = false;
  let pins = asserting.get(cpu);
  if (!pins) asserting.set(cpu, (pins = [new Set(), new Set(), new Set(), new Set()]));
  const mine = pins[(slot! - 1) & 3]!;
  const setLine = (level: boolean): void => {
    if (level === intx) return;
    intx = level;
    if (level) {
      mine.add(pciId);
      if (mine.size === 1) pci.raise_irq(pciId);
      return;
    }
    mine.delete(pciId);
    if (mine.size > 0) return;
    pci.lower_irq(pciId);
    for (const other of pins!) {
      const [id] = other; // one function per pin still asserting: its IRQ may be the one just lowered
      if (id !== undefined) pci.raise_irq(id);
    }
  };
  // The port is checked before the function takes the node, so a refused attach leaves it unowned.
  const size = VirtioPciFunction.ioBarSize(file);
  const free = (p: number): boolean => {
    for (let i = 0; i < size; i++) if (cpu.io.ports[p + i]?.device !== undefined) return false;
    return true;
  };
  let port = opts.port;
  if (port === undefined) {
    for (let p = 0xe000; p >= IO_MIN && port === undefined; p -= size) if (free(p)) port = p;
    if (port === undefined) bad('no free I/O port range');
  } else if (!Number.isInteger(port) || port < IO_MIN || port + size > 0x10000 || port % size !== 0) {
    bad(`port 0x${Number(port).toString(16)} must be ≥ 0x${IO_MIN.toString(16)}, below 0x10000 and aligned to the BAR size 0x${size.toString(16)}`);
  } else if (!free(port)) bad(`I/O ports 0x${port.toString(16)}..+0x${size.toString(16)} are taken`);

  const fn = new VirtioPciFunction(platform, file, {
    guestMemory: [{ gpa: 0, size: ramSize, offset: ramBase }],
    msixVectors: 0,
    bar: 0,
    barKind: 'io',
    ...(opts.accessPlatform !== undefined ? { accessPlatform: opts.accessPlatform } : {}),
    interrupts: { setIntx: setLine },
  });
  try {
    const name = opts.name ?? `vdpa-${slot}`;
    const device: V86PciDevice = { name, pci_id: pciId, pci_space: [], pci_bars: [{ size }] };
    // Every port of the BAR answers every width; the function itself answers unaligned or
    // odd-sized accesses with all ones, as hardware does. Offsets are relative to the BAR, so
    // the handlers stay right when v86 moves them to where the BIOS or guest puts the BAR.
    for (let i = 0; i < size; i++) {
      cpu.io.register_read(port! + i, device,
        () => fn.read(0, i, 1), () => fn.read(0, i, 2), () => fn.read(0, i, 4) | 0);
      cpu.io.register_write(port! + i, device,
        (v) => fn.write(0, i, 1, v), (v) => fn.write(0, i, 2, v), (v) => fn.write(0, i, 4, v));
    }
    // v86 answers config-space accesses from bytes it keeps: hand it ours with BAR 0 set to the
    // port (I/O space indicator, bit 0) and the INTx line the BIOS will overwrite.
    const space = fn.configSnapshot();
    new DataView(space.buffer).setUint32(C.PCI_BASE_ADDRESS_0, port! | 1, true);
    device.pci_space = Array.from(space);
    pci.register_device(device);
    let closed = false;
    if (opts.awaitCalls ?? !(file instanceof VhostVdpaFile)) {
      // Each turn sleeps (Atomics.waitAsync) until the worker rings a call doorbell, then raises
      // what rang; it ends when close() closes the waiter (waitAsync throws then).
      void (async () => {
        while (!closed) {
          try {
            await fn.callWaiter.waitAsync();
          } catch {
            return;
          }
        }
      })();
    }
    return {
      fn,
      slot: slot!,
      port: port!,
      close() {
        if (closed) return;
        closed = true;
        fn.close();
        setLine(false);
      },
    };
  } catch (e) {
    fn.close();
    throw e;
  }
}
