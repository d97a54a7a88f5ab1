// The vdpa bus (Linux drivers/vdpa/vdpa.c): management devices and vdpa devices register
// here, bus drivers (virtio_vdpa, vhost_vdpa) are matched to devices and probe/remove them.
// Names are unique on the bus. Lifecycle events: `mgmtdev-add`, `mgmtdev-remove`,
// `device-add`, `device-remove`, `bind`, `unbind` (CustomEvent, detail = the name).

import { VirtioError, Code } from '../errors.ts';
import type { VdpaConfigOps } from './config-ops.ts';
import type { MgmtDevice, MgmtDevAttrs } from '../mgmt/base.ts';

/** A device on the vdpa bus (struct vdpa_device): the config ops plus its identity. */
export interface VdpaDevice extends VdpaConfigOps {
  /** Unique name on the bus. */
  readonly name: string;
  /** Virtqueues. */
  readonly nvqs: number;
  /** Virtqueue groups. */
  readonly ngroups: number;
  /** Address spaces. */
  readonly nas: number;
  /** Frees the device's memory once it is off the bus (management devices' devices have it). */
  destroy?(): void;
}

/** A bus driver (struct vdpa_driver): binds to the devices it matches. */
export interface VdpaBusDriver {
  /** Driver name (virtio_vdpa, vhost_vdpa). */
  readonly name: string;
  /** True if this driver wants `dev`. @default every device */
  match?(dev: VdpaDevice): boolean;
  /** Takes `dev` over; throwing leaves the device unbound. */
  probe(dev: VdpaDevice): void;
  /** Lets `dev` go (before it is removed, or when the driver unregisters). */
  remove(dev: VdpaDevice): void;
}

interface Entry {
  dev: VdpaDevice;
  mgmtdev: string | null;
  driver: VdpaBusDriver | null;
  /** The only driver that may bind it (sysfs driver_override), or null. */
  override: string | null;
}

/** Options of {@link VdpaBus}. */
export interface VdpaBusOptions {
  /**
   * The driver new devices bind to when they have no driver override: with it set, a device
   * is probed by that driver only (a host that wants every device for vhost_vdpa says so here).
   * @default none: the first registered driver that matches, as Linux's bus does
   */
  defaultDriver?: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$/;

/** The vdpa bus. */
export class VdpaBus extends EventTarget {
  private readonly mgmt = new Map<string, MgmtDevice>();
  private readonly devs = new Map<string, Entry>();
  private readonly drivers: VdpaBusDriver[] = [];
  /** The driver devices without an override bind to, or null for any (see {@link VdpaBusOptions}). */
  readonly defaultDriver: string | null;

  constructor(opts: VdpaBusOptions = {}) {
    super();
    this.defaultDriver = opts.defaultDriver ?? null;
  }

  // ── management devices ──

  /** Registers a management device (vdpa_mgmtdev_register). */
  registerMgmtDevice(m: MgmtDevice): void {
    if (this.mgmt.has(m.name)) throw new VirtioError(Code.AlreadyExists, `management device ${m.name} is already registered`);
    this.mgmt.set(m.name, m);
    this.emit('mgmtdev-add', m.name);
  }

  /** Unregisters a management device and deletes the devices it created. */
  unregisterMgmtDevice(name: string): void {
    if (!this.mgmt.has(name)) throw new VirtioError(Code.NotFound, `management device ${name} is not registered`);
    for (const [n, e] of [...this.devs]) if (e.mgmtdev === name) this.devDel(n);
    this.mgmt.delete(name);
    this.emit('mgmtdev-remove', name);
  }

  /** Registered management devices, in registration order. */
  get mgmtDevices(): readonly MgmtDevice[] {
    return [...this.mgmt.values()];
  }

  /** The management device called `name`. */
  mgmtDevice(name: string): MgmtDevice {
    const m = this.mgmt.get(name);
    if (!m) throw new VirtioError(Code.NotFound, `management device ${name} not found`);
    return m;
  }

  /**
   * Creates a device through management device `mgmtdev` (vdpa dev add). Invalid attributes,
   * a taken or malformed name, or an unknown management device throw and leave the bus as it was.
   */
  devAdd(mgmtdev: string, name: string, attrs: MgmtDevAttrs = {}): VdpaDevice {
    const m = this.mgmtDevice(mgmtdev);
    this.checkFreeName(name);
    const dev = m.create(name, attrs);
    if (dev.name !== name) {
      dev.destroy?.();
      throw new VirtioError(Code.Internal, `${mgmtdev} created ${dev.name} for ${name}`);
    }
    this.insert(dev, mgmtdev);
    return dev;
  }

  /**
   * Deletes a device (vdpa dev del): unbinds it, takes it off the bus and frees it. Works for
   * devices made by a management device and for devices registered with addDevice (a device
   * over a custom backend, say): the bus owns what is on it. Afterwards the device's handle
   * refuses every op (NotFound) and touches nothing.
   */
  devDel(name: string): void {
    const e = this.entry(name);
    this.removeDevice(name);
    e.dev.destroy?.();
  }

  // ── devices ──

  /** Registers a device made without a management device (vdpa_register_device). */
  addDevice(dev: VdpaDevice): void {
    this.checkFreeName(dev.name);
    this.insert(dev, null);
  }

  /** Unbinds and removes a device (vdpa_unregister_device); resets it. */
  removeDevice(name: string): void {
    const e = this.entry(name);
    this.detach(e);
    this.devs.delete(name);
    e.dev.reset();
    this.emit('device-remove', name);
  }

  /** Devices on the bus, in the order they were added. */
  get devices(): readonly VdpaDevice[] {
    return [...this.devs.values()].map((e) => e.dev);
  }

  /** The device called `name`. */
  device(name: string): VdpaDevice {
    return this.entry(name).dev;
  }

  /** The management device that created `name`, or null. */
  mgmtDeviceOf(name: string): string | null {
    return this.entry(name).mgmtdev;
  }

  /** The driver bound to `name`, or null. */
  driverOf(name: string): VdpaBusDriver | null {
    return this.entry(name).driver;
  }

  // ── drivers ──

  /** Registers a bus driver and binds it to every unbound device it matches. */
  registerDriver(d: VdpaBusDriver): void {
    if (this.drivers.some((x) => x.name === d.name)) throw new VirtioError(Code.AlreadyExists, `driver ${d.name} is already registered`);
    this.drivers.push(d);
    for (const e of this.devs.values()) if (!e.driver && this.eligible(e, d)) this.tryBind(e, d);
  }

  /** Unbinds a driver from its devices and unregisters it. */
  unregisterDriver(name: string): void {
    const i = this.drivers.findIndex((x) => x.name === name);
    if (i < 0) throw new VirtioError(Code.NotFound, `driver ${name} is not registered`);
    const d = this.drivers[i]!;
    for (const e of this.devs.values()) if (e.driver === d) this.detach(e);
    this.drivers.splice(i, 1);
  }

  /** Registered bus drivers. */
  get busDrivers(): readonly VdpaBusDriver[] {
    return [...this.drivers];
  }

  /**
   * Binds device `name` to driver `driver`, unbinding any other first, and makes `driver` its
   * driver override (sysfs driver_override + bind): from now on no other driver probes it,
   * also after unbind() or when another driver registers. Throws NotFound for an unknown device
   * or driver, Unsupported if the driver does not match the device; a probe that throws leaves
   * the device unbound and the error propagates.
   */
  bind(name: string, driver: string): void {
    const e = this.entry(name);
    const d = this.drivers.find((x) => x.name === driver);
    if (!d) throw new VirtioError(Code.NotFound, `driver ${driver} is not registered`);
    if (d.match && !d.match(e.dev)) throw new VirtioError(Code.Unsupported, `driver ${driver} does not match ${name}`);
    e.override = driver;
    if (e.driver === d) return;
    this.detach(e);
    d.probe(e.dev);
    e.driver = d;
    this.emit('bind', name);
  }

  /** Unbinds device `name` from its driver, if any (sysfs unbind). Its driver override stays. */
  unbind(name: string): void {
    this.detach(this.entry(name));
  }

  /** Same as {@link unbind} (the older name). */
  unbindDevice(name: string): void {
    this.unbind(name);
  }

  /**
   * Sets (or with null clears) the only driver that may bind device `name` (sysfs
   * driver_override), without binding. If the device is unbound, it is then offered to the
   * eligible registered drivers, as writing drivers_probe does.
   */
  setDriverOverride(name: string, driver: string | null): void {
    const e = this.entry(name);
    if (driver !== null && typeof driver !== 'string') throw new VirtioError(Code.InvalidArgument, 'driver override must be a driver name or null');
    e.override = driver;
    if (!e.driver) for (const d of this.drivers) if (this.eligible(e, d) && this.tryBind(e, d)) break;
  }

  /** The driver override of device `name`, or null. */
  driverOverride(name: string): string | null {
    return this.entry(name).override;
  }

  private insert(dev: VdpaDevice, mgmtdev: string | null): void {
    const e: Entry = { dev, mgmtdev, driver: null, override: null };
    this.devs.set(dev.name, e);
    this.emit('device-add', dev.name);
    for (const d of this.drivers) if (this.eligible(e, d) && this.tryBind(e, d)) break;
  }

  /** Whether driver d may probe e: its override, else the bus default, else any. */
  private eligible(e: Entry, d: VdpaBusDriver): boolean {
    const only = e.override ?? this.defaultDriver;
    return only === null || only === d.name;
  }

  private tryBind(e: Entry, d: VdpaBusDriver): boolean {
    if (d.match && !d.match(e.dev)) return false;
    try {
      d.probe(e.dev);
    } catch {
      return false; // a failed probe leaves the device unbound, as Linux's really_probe does
    }
    e.driver = d;
    this.emit('bind', e.dev.name);
    return true;
  }

  private detach(e: Entry): void {
    if (!e.driver) return;
    const d = e.driver;
    e.driver = null;
    d.remove(e.dev);
    this.emit('unbind', e.dev.name);
  }

  private entry(name: string): Entry {
    const e = this.devs.get(name);
    if (!e) throw new VirtioError(Code.NotFound, `device ${name} not found`);
    return e;
  }

  private checkFreeName(name: string): void {
    if (typeof name !== 'string' || !NAME.test(name)) throw new VirtioError(Code.InvalidArgument, `device name ${JSON.stringify(name)} must be 1-63 characters of [A-Za-z0-9_.:-], starting alphanumeric`);
    if (this.devs.has(name)) throw new VirtioError(Code.AlreadyExists, `device ${name} already exists`);
  }

  private emit(type: string, name: string): void {
    this.dispatchEvent(new CustomEvent(type, { detail: name }));
  }
}
