// The device side of "the device in a worker" (issue 8 §2): a VdpaBus with the management
// devices, on a platform attached from the driving thread's shared memory, served over a
// Channel. The worker is the devices' hardware: the control plane arrives as requests (mgmt
// requests on the channel, the synchronous vdpa config ops through a shared-memory mailbox per
// opened device, see mailbox.ts), the data plane only through shared memory. Kicks and calls
// are doorbells (doorbell.ts), the role eventfds play for Linux vhost: a kick doorbell rings →
// the device's kickVq runs here; the device's used-buffer / config callbacks ring call doorbells.
//
// The serving loop polls adaptively: after work it keeps polling its doorbells for `spinUs`
// (a busy driver's next kick costs no futex wake), then parks in Atomics.wait, bounded, so an
// idle worker sleeps (it wakes at most every `idleWaitMs` to let its event loop run timers);
// while a blk backend has requests out it parks in Atomics.waitAsync instead, so the answers
// (event-loop callbacks) are not held for a whole park.
// Channel messages are delivered by the worker's event loop, so the client rings a `wake`
// doorbell with every request and the loop yields to the event loop when it rings.
//
// The worker's bus has two bus drivers: `remote_vdpa` (the default: a device bound to it is
// opened from another thread as a RemoteVdpaDevice, for virtio_vdpa there) and `vhost_vdpa`
// (bind a device to it and a VMM opens its node `vhost-vdpa-N` over the channel: ioctl bytes
// and IOTLB messages as requests, kicks and calls as the doorbells SET_VRING_KICK/CALL name).
// A node opened with a mailbox also takes the same ioctl bytes and messages synchronously
// through it (ops ioctl(request, arg) · write(msg) · close()), served by the same code as the
// channel's requests, for a caller that cannot wait for a message (a PCI function in an emulator).
//
// Requests (channel): attach(handle) · vdpa(argv) · devAdd(mgmtdev, name, attrs) · devDel(name)
// · switchConnect(name) · switchLink(end) · switchUnlink(port) · switchTable() · switchPortStats(port)
// · open(name, mailbox) · release(name) · bind(name, driver) · unbind(name)
// · vhostNodes() · vhostOpen(node, mailbox?) · vhostIoctl(fid, request, arg) · vhostWrite(fid, msg)
// · vhostClose(fid) · stats() · shutdown() · migSuspend(name) · migSave(name, delta?) · migSuspendSave(name, delta?) · migLoad(name, bytes) · migStarted(name)
// · migEarlySave(name) · migEarlyLoad(name, bytes); and through an opened device's mailbox, inside a migration's
// downtime: migSuspendSaveSync() · migLoadSync(bytes, resume?)
// · migAnnounce(name) · migStorage(name).
//
// devAdd's attrs are posted, so a blk `backend` is a descriptor (backend.ts), not an object: the
// worker opens it through `resolveBackend` (given by the entry file: node-device-worker.ts opens
// files, browser-device-worker.ts OPFS files) and closes it when the device is deleted.
//
// The worker's L2 switch takes its devices (switchConnect) and links to switches in other
// threads (switchLink: an end of a SwitchLink, switch-link.ts, whose incoming doorbell this
// loop's waiter watches), so switches in several workers and the main thread form one L2
// segment — a tree of links, never a loop (the switches run no spanning tree).

import { VirtioError, Code } from '../errors.ts';
import { Platform, type PlatformHandle } from '../platform/platform.ts';
import { VdpaBus, type VdpaDevice, type VdpaBusDriver } from '../bus/bus.ts';
import { VhostVdpa, type VhostVdpaFile } from '../drivers/vhost-vdpa.ts';
import { VHOST_SET_VRING_KICK, VHOST_VRING_FILE, VHOST_FILE_UNBIND } from '../vhost/uapi.ts';
import { VdpaSimNetMgmt, VdpaSimBlkMgmt, type MgmtDevAttrs } from '../mgmt/mgmtdev.ts';
import { L2Switch } from '../devices/switch.ts';
import { VdpaSimNet } from '../devices/net.ts';
import { VIRTIO_CONFIG_S_DRIVER_OK } from '../virtio/constants.ts';
import { runVdpa } from '../cli/vdpa.ts';
import { Doorbell, DoorbellWaiter, type DoorbellHandle } from './doorbell.ts';
import { SwitchLinkEnd, type SwitchLinkEndHandle } from './switch-link.ts';
import { Channel, type PortLike } from './channel.ts';
import { MailboxServer, type MailboxHandle } from './mailbox.ts';
import { VdpaSimBlk, type BlkBackend } from '../devices/blk.ts';
import { saveState, loadState, encodeState, decodeState, saveEarlyState, loadEarlyState, saveStateDeltaBytes, isDeltaEncoding, type EarlyState } from '../migration/state.ts';
import type { IoctlResult } from './remote-device.ts';
import { checkBackendDescriptor, descriptorKind, type BackendResolver, type BlkBackendDescriptor, type ResolvedBackend } from './backend.ts';

/** Options of {@link serveVdpa}. */
export interface ServeVdpaOptions {
  /**
   * The platform to serve on. Without it the first request must be `attach(handle)` (a
   * PlatformHandle with priv and ram slices for the devices' state and RAM disks).
   */
  platform?: Platform;
  /** The bus to serve. @default a bus with vdpasim_net and vdpasim_blk on the platform */
  bus?: VdpaBus;
  /** RAM disk sectors of the default vdpasim_blk management device. @default 8192 (4 MiB) */
  blkCapacity?: number;
  /** Microseconds the loop keeps polling after work before it parks. @default 50 */
  spinUs?: number;
  /** Longest park before the loop yields to the event loop. @default 50 */
  idleWaitMs?: number;
  /** Extra requests the entry adds (e.g. the Node entry's `threadCpu`), by name. */
  requests?: Record<string, (args: unknown[]) => unknown>;
  /**
   * Opens the blk backend descriptors devAdd names (the entry file's part: files in Node, OPFS
   * in browsers). Without it a descriptor is refused with `unsupported`.
   */
  resolveBackend?: BackendResolver;
}

/** What `open` answers: the device's identity, its doorbells and what the client may cache. */
export interface OpenedDevice {
  /** Device name. */
  name: string;
  /** Virtqueues. */
  nvqs: number;
  /** Virtqueue groups. */
  ngroups: number;
  /** Address spaces. */
  nas: number;
  /** Kick doorbell of each queue (the client rings it; a guest may too). */
  kicks: DoorbellHandle[];
  /** Call doorbell of each queue (the device rings it). */
  calls: DoorbellHandle[];
  /** Config-change doorbell. */
  config: DoorbellHandle;
  /** Answers that never change for the life of the device. */
  cache: OpenedDeviceCache;
}

/** The config-op answers a client caches at open (they never change for the device's life). */
export interface OpenedDeviceCache {
  /** get_device_features. */
  deviceFeatures: bigint;
  /** get_config_size. */
  configSize: number;
  /** get_device_id. */
  deviceId: number;
  /** get_vendor_id. */
  vendorId: number;
  /** get_vq_num_max. */
  vqNumMax: number;
  /** get_vq_num_min. */
  vqNumMin: number;
  /** get_vq_align. */
  vqAlign: number;
}

/** Counters of the serving loop (for "the worker sleeps when idle" figures). */
export interface HostStats {
  /** Times the loop parked in Atomics.wait. */
  sleeps: number;
  /** Parks that a doorbell ended (not a timeout). */
  wakeups: number;
  /** Kick doorbells handled. */
  kicks: number;
  /** Mailbox requests answered. */
  syncOps: number;
  /** Times the loop yielded to the event loop. */
  yields: number;
  /** Doorbell polls (spinning shows as a fast-growing count; an idle worker adds a few per park). */
  polls: number;
}

/** A vhost file the worker opened for a client: its kick doorbells the loop watches, its mailbox if synchronous. */
interface OpenFile {
  file: VhostVdpaFile;
  kicks: Map<number, Doorbell>;
  mbox: MailboxServer | null;
}

interface Served {
  dev: VdpaDevice;
  kicks: Doorbell[];
  calls: Doorbell[];
  config: Doorbell;
  mbox: MailboxServer;
}

/**
 * A blk device's RAM disk in the shared memory (absolute offset, bytes): a migration between
 * workers copies it while the device is stopped.
 */
export interface MigDisk {
  /** A RAM disk. */
  kind: 'ram';
  /** Memory offset of the disk's first byte. */
  addr: number;
  /** Bytes. */
  bytes: number;
}

/**
 * A blk device's backend, as a migration between workers sees it: storage both workers reach,
 * so nothing is copied — the source's requests in flight are drained at suspend and the
 * destination serves the same storage.
 */
export interface MigBackend {
  /** A backend. */
  kind: 'backend';
  /**
   * The storage's identity (`file:/real/path`, `opfs:path`) when the worker opened it from a
   * descriptor; null for a backend object the worker's own code gave the device (unknown storage).
   */
  storage: string | null;
  /** The descriptor the worker opened, or null. */
  descriptor: BlkBackendDescriptor | null;
}

/** Where a blk device's disk lives: RAM disk (copied by a migration) or backend (shared). */
export type MigStorage = MigDisk | MigBackend;

/** What a device worker answers to a save (migSave, migSuspendSave). */
export interface MigSaved {
  /** The device state, binary-encoded (encodeState). */
  state: Uint8Array;
  /** blk: the RAM disk's place or the backend's storage (which one says what a migration copies); null for net. */
  storage: MigStorage | null;
  /** migSuspendSave: ms the suspend took in the worker (0 for migSave). */
  suspendMs: number;
  /** migSuspendSave: ms the save took in the worker (0 for migSave). */
  saveMs: number;
  /** migSuspendSave: blk requests the suspend had to finish first (in flight at the backend, or answered and not yet used). */
  drained: number;
  /** blk requests that moved in flight in the state (a suspend with `record`), re-submitted by the destination. */
  recorded: number;
  /** The state is a delta over the early state the worker saved (migEarlySave), not the full state. */
  delta?: boolean;
}

/**
 * What migSuspendSaveSync answers: the saved state, or why it did not save — `wouldBlock`
 * (blk requests are out at the backend: suspend through the channel, which waits for them)
 * or `full` (suspended, but the control state moved since the early save and the full state
 * goes through the channel, whose messages have no mailbox's size limit).
 */
export type MigSavedSync = MigSavedNow | MigWouldBlock | MigNeedsFull;

/** migSuspendSaveSync: suspended and saved (the delta). */
export interface MigSavedNow extends MigSaved {
  /** Absent. */
  wouldBlock?: false;
  /** Absent. */
  full?: false;
}

/** migSuspendSaveSync: nothing was done (blk requests are out at the backend). */
export interface MigWouldBlock {
  /** Always true. */
  wouldBlock: true;
  /** Absent. */
  full?: false;
}

/** migSuspendSaveSync: the device is suspended, but the full state is needed (fetch it with migSave). */
export interface MigNeedsFull {
  /** Absent. */
  wouldBlock?: false;
  /** Always true. */
  full: true;
  /** ms the suspend took in the worker. */
  suspendMs: number;
}

/** What a device worker answers to a load (migLoad). */
export interface MigLoaded {
  /** blk: the RAM disk's place or the backend's storage; null for net. */
  storage: MigStorage | null;
  /** blk: the fence the loaded requests in flight wait for (VdpaSimBlk.fenceId; 0: none). */
  fence: number;
}

/** How a migration's destination resumed after answering its load (migLoadSync with resume; migStarted). */
export interface MigStarted {
  /** When the resume ended: performance.timeOrigin + performance.now() in the worker (ms, comparable across threads). */
  at: number;
  /** ms the resume took in the worker: blk requests that moved re-submitted, what was queued meanwhile served. */
  ms: number;
  /** Why the resume failed (the device stays suspended), or null. */
  error: string | null;
}

/** Name of the worker bus's driver for devices driven from another thread. */
export const REMOTE_VDPA = 'remote_vdpa';

/** Config ops a client may call synchronously (everything but the callbacks and kicks, which are doorbells). */
const SYNC_OPS = new Set([
  'setVqAddress', 'setVqNum', 'setVqReady', 'getVqReady', 'setVqState', 'getVqState', 'getVqGroup', 'getVendorVqStats',
  'setDriverFeatures', 'getDriverFeatures', 'getStatus', 'setStatus', 'reset', 'suspend', 'resume', 'getConfig', 'setConfig',
  'getGeneration', 'setMap', 'dmaMap', 'dmaUnmap', 'setGroupAsid',
]);

// Module-level, not beside loop(): with `opts.platform` the loop starts inside serveVdpa, before
// the function's later `const`s would be initialized.
const now = () => performance.now();
const later = (f: () => void) => (typeof setImmediate === 'function' ? setImmediate(f) : setTimeout(f, 0));

/**
 * Serves a vdpa bus on `port` (a worker's parentPort or `self`, or any PortLike) until the
 * channel closes or `shutdown` is requested; then every served device is reset and released
 * and the returned promise resolves.
 */
export function serveVdpa(port: PortLike, opts: ServeVdpaOptions = {}): Promise<void> {
  let p: Platform | null = opts.platform ?? null;
  let bus: VdpaBus | null = opts.bus ?? null;
  let waiter: DoorbellWaiter | null = null;
  let wake: Doorbell | null = null;
  const sw = new L2Switch();
  const switched = new Map<string, number>();
  /** Link ends on the switch, by port. */
  const links = new Map<number, SwitchLinkEnd>();
  const served = new Map<string, Served>();
  /** Backends opened from descriptors, by device name (closed when the device goes). */
  const backends = new Map<string, ResolvedBackend & { descriptor: BlkBackendDescriptor }>();
  const stats: HostStats = { sleeps: 0, wakeups: 0, kicks: 0, syncOps: 0, yields: 0, polls: 0 };
  const spinMs = (opts.spinUs ?? 50) / 1000;
  const idleWaitMs = opts.idleWaitMs ?? 50;
  let vhost: VhostVdpa | null = null;
  const files = new Map<number, OpenFile>();
  let nextFid = 1;
  let yieldSoon = false;
  let stopped = false;
  let looping = false;
  let finish!: () => void;
  const done = new Promise<void>((f) => (finish = f));

  const setup = (pl: Platform): void => {
    p = pl;
    if (!bus) {
      bus = new VdpaBus({ defaultDriver: REMOTE_VDPA });
      bus.registerMgmtDevice(new VdpaSimNetMgmt(pl));
      bus.registerMgmtDevice(new VdpaSimBlkMgmt(pl, opts.blkCapacity ?? 8192));
    }
    if (!bus.busDrivers.some((d) => d.name === REMOTE_VDPA)) bus.registerDriver(remoteDriver);
    vhost = (bus.busDrivers.find((d) => d.name === 'vhost_vdpa') as VhostVdpa | undefined) ?? null;
    if (!vhost) bus.registerDriver((vhost = new VhostVdpa(pl)));
    waiter = new DoorbellWaiter(pl);
    wake = Doorbell.alloc(pl);
    waiter.watch(wake, () => (yieldSoon = true));
    if (!looping) {
      looping = true;
      void loop();
    }
  };

  const need = (): { p: Platform; bus: VdpaBus; waiter: DoorbellWaiter } => {
    if (!p || !bus || !waiter) throw new VirtioError(Code.FailedPrecondition, 'the device worker is not attached to a platform yet');
    return { p, bus, waiter };
  };

  const release = (name: string): void => {
    const s = served.get(name);
    if (!s) return;
    served.delete(name);
    earlies.delete(name);
    s.mbox.close();
    for (const d of [...s.kicks, s.config]) waiter?.unwatch(d);
    try {
      if (!(s.dev as { isDestroyed?: boolean }).isDestroyed) {
        s.dev.setConfigCb(null);
        s.dev.reset(); // as vhost_vdpa's release does: the device forgets rings that may be freed
      }
    } catch {
      /* deleted meanwhile */
    }
    for (const d of [...s.kicks, ...s.calls, s.config]) d.free();
  };

  // The bus driver for devices driven from another thread: probing takes nothing; removal
  // (unbind, dev del) releases an open device, as vhost_vdpa's remove revokes its file.
  const remoteDriver: VdpaBusDriver = {
    name: REMOTE_VDPA,
    probe: () => {},
    remove: (dev) => release(dev.name),
  };

  const open = (name: string, mh: MailboxHandle): OpenedDevice => {
    const { p, bus, waiter } = need();
    if (served.has(name)) throw new VirtioError(Code.AlreadyExists, `${name} is already open`);
    const dev = bus.device(name);
    const drv = bus.driverOf(name);
    if (drv !== remoteDriver) throw new VirtioError(Code.FailedPrecondition, `${name} is ${drv ? `bound to ${drv.name}` : 'not bound'} in the device worker; bind it to ${REMOTE_VDPA} first`);
    const kicks: Doorbell[] = [];
    const calls: Doorbell[] = [];
    let config: Doorbell | null = null;
    try {
      for (let i = 0; i < dev.nvqs; i++) {
        kicks.push(Doorbell.alloc(p));
        calls.push(Doorbell.alloc(p));
      }
      config = Doorbell.alloc(p);
      const cfg = config;
      const s: Served = {
        dev, kicks, calls, config: cfg,
        mbox: new MailboxServer(p, mh, waiter, (op, args) => {
          stats.syncOps++;
          return syncOp(s, op, args);
        }),
      };
      kicks.forEach((k, i) =>
        waiter.watch(k, () => {
          stats.kicks++;
          try {
            dev.kickVq(i);
          } catch {
            // A kick on a deleted or reset device: nothing to do (a kick is a hint).
          }
        }));
      served.set(name, s);
      return {
        name, nvqs: dev.nvqs, ngroups: dev.ngroups, nas: dev.nas,
        kicks: kicks.map((d) => d.handle), calls: calls.map((d) => d.handle), config: cfg.handle,
        cache: {
          deviceFeatures: dev.getDeviceFeatures(), configSize: dev.getConfigSize(), deviceId: dev.getDeviceId(), vendorId: dev.getVendorId(),
          vqNumMax: dev.getVqNumMax(), vqNumMin: dev.getVqNumMin?.() ?? 1, vqAlign: dev.getVqAlign(),
        },
      };
    } catch (e) {
      for (const d of [...kicks, ...calls]) d.free();
      config?.free();
      throw e;
    }
  };

  const syncOp = (s: Served, op: string, args: unknown[]): unknown => {
    const dev = s.dev;
    if (op === 'migSuspendSaveSync') return migSuspendSaveSync(migDev(dev.name), args[0] === true);
    if (op === 'migLoadSync') {
      const d = migDev(dev.name);
      const r = migLoad(d, args[0]);
      if (args[1] === true) startAfterAnswer(d);
      return r;
    }
    if (op === 'setVqCb') {
      const [idx, on] = args as [number, boolean];
      const call = s.calls[idx];
      if (!Number.isInteger(idx) || !call) throw new VirtioError(Code.InvalidArgument, `queue ${idx} is outside 0..${dev.nvqs - 1}`);
      dev.setVqCb(idx, on ? () => call.ring() : null);
      return null;
    }
    if (op === 'setConfigCb') {
      dev.setConfigCb(args[0] ? () => s.config.ring() : null);
      return null;
    }
    if (!SYNC_OPS.has(op)) throw new VirtioError(Code.Unsupported, `${op} is not a config op the device worker serves`);
    const fn = (dev as unknown as Record<string, ((...a: unknown[]) => unknown) | undefined>)[op];
    if (typeof fn !== 'function') throw new VirtioError(Code.Unsupported, `${dev.name} has no ${op}`);
    return fn.apply(dev, args);
  };

  // A migration's load-and-resume (migLoadSync with resume) answers once the state is loaded;
  // the device resumes right after the answer is written — a microtask of this worker, before
  // its loop serves anything else (a kick rung meanwhile waits on the suspended device, which
  // takes it on resume) — so the driver's thread runs again while this one re-submits the blk
  // requests that moved in flight and serves what was queued during the stop. Linux's vdpa
  // ops return once a command is accepted in the same way; QEMU counts its downtime until the
  // VM runs, and the vhost-user-blk backend re-submits its inflight requests after that.
  // What the resume took is kept for migStarted.
  const starts = new Map<string, MigStarted>();
  const startAfterAnswer = (d: VdpaSimNet | VdpaSimBlk): void => {
    starts.delete(d.name);
    queueMicrotask(() => {
      const t = performance.now();
      let error: string | null = null;
      try {
        d.resume();
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
      }
      starts.set(d.name, { at: performance.timeOrigin + performance.now(), ms: performance.now() - t, error });
    });
  };

  const migDev = (name: unknown): VdpaSimNet | VdpaSimBlk => {
    const dev = need().bus.device(String(name));
    if (!(dev instanceof VdpaSimNet) && !(dev instanceof VdpaSimBlk)) throw new VirtioError(Code.Unsupported, `${String(name)} is not a vdpasim_net or vdpasim_blk device: it cannot migrate`);
    return dev;
  };

  /** Early states saved here (migEarlySave), by device name: a later save sends a delta over them. */
  const earlies = new Map<string, EarlyState>();
  const earlyOf = (dev: VdpaSimNet | VdpaSimBlk): EarlyState | null => {
    const e = earlies.get(dev.name);
    return e && e.mark.device === dev ? e : null;
  };
  /** The suspended device's state: the delta over its early state if it holds, else the full state. */
  // blk requests the state carries (what the save just wrote).
  const recordedIn = (dev: VdpaSimNet | VdpaSimBlk): number => (dev instanceof VdpaSimBlk ? dev.lastSavedRequests.all : 0);
  const saveMig = (dev: VdpaSimNet | VdpaSimBlk, delta: unknown): { state: Uint8Array; delta: boolean; recorded: number } => {
    const e = delta === true ? earlyOf(dev) : null;
    const d = e ? saveStateDeltaBytes(dev, e) : null;
    earlies.delete(dev.name); // used (or outdated): a next migration saves a new one
    if (d) return { state: d, delta: true, recorded: recordedIn(dev) };
    return { state: encodeState(saveState(dev)), delta: false, recorded: recordedIn(dev) };
  };
  const migLoad = (dev: VdpaSimNet | VdpaSimBlk, bytes: unknown): MigLoaded => {
    if (!(bytes instanceof Uint8Array)) throw new VirtioError(Code.InvalidArgument, 'migLoad needs the encoded state bytes');
    if (dev.earlyStateId !== null && !isDeltaEncoding(bytes)) {
      // A full state after an early one (the source's control state moved meanwhile): decoded
      // first — garbage leaves the early state in place — then the device starts over.
      const s = decodeState(bytes);
      dev.reset();
      loadState(dev, s);
    } else loadState(dev, bytes);
    return { storage: storageOf(dev), fence: dev instanceof VdpaSimBlk ? dev.fenceId : 0 };
  };
  // Inside the downtime, through the device's mailbox: answered by this loop's next poll, with
  // no event-loop turn on either side. Only a device that stops at once (nothing out at a
  // backend) is suspended here; the full state, if the early one no longer holds, goes by the
  // channel.
  const migSuspendSaveSync = (dev: VdpaSimNet | VdpaSimBlk, record: boolean): MigSavedSync => {
    // What suspendDrained() refuses, refused here as a throw (not a rejection to ignore).
    if (dev.isSuspended || dev.isSuspending || !(dev.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK)) {
      throw new VirtioError(Code.FailedPrecondition, 'only a running device (DRIVER_OK) can be suspended');
    }
    // Requests the suspend must finish (with `record`, only those a state cannot carry).
    if (dev.mustFinish(record) > 0) return { wouldBlock: true };
    const t0 = performance.now();
    // Nothing it must finish is in flight (what was just read): it suspends before
    // suspendDrained() returns, and the promise can only resolve.
    dev.suspendDrained({ record }).catch(() => {}); // (never rejects here; a rejection is not left unhandled)
    if (!dev.isSuspended) throw new VirtioError(Code.Internal, `${dev.name} did not suspend with nothing in flight`);
    const t1 = performance.now();
    const e = earlyOf(dev);
    let d;
    try {
      d = e ? saveStateDeltaBytes(dev, e) : null;
    } catch (err) {
      dev.resume();
      throw err;
    }
    // Used once; but kept when the full state is still to be fetched (migSave with delta, which
    // compares again and finds the same).
    if (!d) return { full: true, suspendMs: t1 - t0 };
    earlies.delete(dev.name);
    return { state: d, delta: true, storage: storageOf(dev), suspendMs: t1 - t0, saveMs: performance.now() - t1, drained: 0, recorded: recordedIn(dev) };
  };

  const storageOf = (dev: VdpaSimNet | VdpaSimBlk): MigStorage | null => {
    if (!(dev instanceof VdpaSimBlk)) return null;
    if (dev.disk >= 0) return { kind: 'ram', addr: dev.disk, bytes: dev.capacity * 512 };
    const b = backends.get(dev.name);
    return { kind: 'backend', storage: b && b.backend === dev.backend ? b.storage : null, descriptor: b && b.backend === dev.backend ? b.descriptor : null };
  };

  // Closes a backend opened for `name` once its device is gone (a close that fails is the
  // storage's business: the device is deleted either way).
  const closeBackend = (name: string): Promise<void> => {
    const b = backends.get(name);
    if (!b) return Promise.resolve();
    backends.delete(name);
    return Promise.resolve().then(() => b.close()).then(() => {}, () => {});
  };

  const devAdd = (mgmtdev: string, name: string, raw: unknown): unknown => {
    const { bus } = need();
    if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) throw new VirtioError(Code.InvalidArgument, 'devAdd attrs must be an object');
    const attrs = { ...(raw ?? {}) } as MgmtDevAttrs & { backend?: unknown };
    const info = (dev: VdpaDevice) => ({ name: dev.name, nvqs: dev.nvqs, deviceId: dev.getDeviceId() });
    if (attrs.backend === undefined) return info(bus.devAdd(mgmtdev, name, attrs));
    const descriptor = checkBackendDescriptor(attrs.backend);
    const resolve = opts.resolveBackend;
    if (!resolve) throw new VirtioError(Code.Unsupported, `this device worker opens no blk backend descriptors (asked for { ${descriptorKind(descriptor)} })`);
    // Refuse what the bus would refuse before the storage is opened (or created).
    bus.mgmtDevice(mgmtdev).checkAttrs({ ...attrs, backend: {} as BlkBackend });
    if (backends.has(name) || bus.devices.some((d) => d.name === name)) throw new VirtioError(Code.AlreadyExists, `device ${name} already exists`);
    return resolve(descriptor).then((r) => {
      let dev: VdpaDevice;
      try {
        dev = bus.devAdd(mgmtdev, name, { ...attrs, backend: r.backend });
      } catch (e) {
        void Promise.resolve().then(() => r.close()).catch(() => {});
        throw e;
      }
      backends.set(name, { ...r, descriptor });
      return info(dev);
    });
  };

  const fileOf = (fid: unknown) => {
    const f = typeof fid === 'number' ? files.get(fid) : undefined;
    if (!f) throw new VirtioError(Code.NotFound, `no open vhost file ${String(fid)}`);
    return f;
  };

  // `asked`: the client closes through the file's own mailbox, so the answer to that request
  // must be the last write there (the client frees it once read): stop serving without marking
  // it closed. Otherwise a call in progress or made later fails at once (Cancelled).
  const closeFile = (fid: number, asked = false): void => {
    const f = files.get(fid);
    if (!f) return;
    files.delete(fid);
    if (asked) f.mbox?.detach();
    else f.mbox?.close();
    for (const db of f.kicks.values()) waiter?.unwatch(db);
    f.file.close();
  };

  // A node's ioctl and IOTLB write, as the syscalls answer (0/-errno, never a throw for the
  // node's own errors): one code path for the channel requests and the mailbox.
  const vhostIoctl = (fid: unknown, request: unknown, arg: unknown): IoctlResult => {
    const f = fileOf(fid);
    const req = Number(request) >>> 0;
    const bytes = arg instanceof Uint8Array ? arg : new Uint8Array(0);
    const r = f.file.ioctlRaw(req, bytes);
    if (r.ret === 0 && req === VHOST_SET_VRING_KICK) adoptKick(f, bytes);
    return r;
  };

  const vhostWrite = (fid: unknown, msg: unknown): number =>
    fileOf(fid).file.writeRaw(msg instanceof Uint8Array ? msg : new Uint8Array(0));

  const vhostOpen = (node: string, mh: MailboxHandle | undefined): number => {
    const { p, waiter } = need();
    const file = vhost!.open(node);
    const fid = nextFid++;
    const f: OpenFile = { file, kicks: new Map(), mbox: null };
    files.set(fid, f);
    if (mh === undefined || mh === null) return fid;
    try {
      f.mbox = new MailboxServer(p, mh, waiter, (op, args) => {
        stats.syncOps++;
        switch (op) {
          case 'ioctl': return vhostIoctl(fid, args[0], args[1]);
          case 'write': return vhostWrite(fid, args[0]);
          case 'close': closeFile(fid, true); return null;
          default: throw new VirtioError(Code.Unsupported, `${op} is not a vhost file request`);
        }
      });
    } catch (e) {
      closeFile(fid);
      throw e;
    }
    return fid;
  };

  // The file's kick doorbells are watched by the file's own waiter; this loop parks on one
  // waker only, so it watches the same doorbells (taking their waker word) and hands each ring
  // to the file's waiter, which runs kick_vq. Re-done after every SET_VRING_KICK.
  const adoptKick = (f: OpenFile, arg: Uint8Array): void => {
    const { p, waiter } = need();
    if (arg.length < VHOST_VRING_FILE.SIZE) return;
    const v = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const index = v.getUint32(VHOST_VRING_FILE.index, true);
    const fd = v.getInt32(VHOST_VRING_FILE.fd, true);
    const old = f.kicks.get(index);
    if (old) waiter.unwatch(old);
    f.kicks.delete(index);
    if (fd === VHOST_FILE_UNBIND) return;
    const db = new Doorbell(p, { addr: fd >>> 0 });
    f.kicks.set(index, db);
    const file = f.file;
    waiter.watch(db, () => {
      stats.kicks++;
      file.kickWaiter?.poll();
    });
  };

  const handler = (op: string, args: unknown[]): unknown => {
    switch (op) {
      case 'attach': {
        if (p) throw new VirtioError(Code.FailedPrecondition, 'the device worker is already attached');
        setup(Platform.attach(args[0] as PlatformHandle));
        return { wake: wake!.handle, shared: p!.shared };
      }
      case 'hello':
        need();
        return { wake: wake!.handle, shared: p!.shared };
      case 'vdpa': {
        const { bus } = need();
        let out = '', err = '';
        const code = runVdpa((args[0] as string[]).map(String), { bus, out: (s) => (out += s), err: (s) => (err += s) });
        return { code, out, err };
      }
      case 'devAdd':
        return devAdd(String(args[0]), String(args[1]), args[2]);
      case 'devDel': {
        const { bus } = need();
        const name = String(args[0]);
        release(name);
        const port = switched.get(name);
        if (port !== undefined) {
          sw.disconnect(port);
          switched.delete(name);
        }
        bus.devDel(name);
        return closeBackend(name).then(() => null);
      }
      case 'switchConnect': {
        const { bus } = need();
        const name = String(args[0]);
        const dev = bus.device(name);
        if (!(dev instanceof VdpaSimNet)) throw new VirtioError(Code.InvalidArgument, `${name} is not a vdpasim_net device`);
        if (switched.has(name)) throw new VirtioError(Code.AlreadyExists, `${name} is already on the switch`);
        const port = sw.connect(dev);
        dev.attachPort((frames) => sw.input(port, frames));
        switched.set(name, port);
        return port;
      }
      case 'switchLink': {
        const { p, waiter } = need();
        const end = SwitchLinkEnd.attach(sw, p, args[0] as SwitchLinkEndHandle, { waiter });
        links.set(end.port, end);
        return end.port;
      }
      case 'switchUnlink': {
        const port = Number(args[0]);
        const end = links.get(port);
        if (!end) throw new VirtioError(Code.NotFound, `switch port ${String(args[0])} is not a link`);
        links.delete(port);
        end.close();
        return null;
      }
      case 'switchTable':
        return [...sw.table];
      case 'switchPortStats':
        return sw.stats(Number(args[0]));
      case 'open':
        return open(String(args[0]), args[1] as MailboxHandle);
      case 'bind':
        need().bus.bind(String(args[0]), String(args[1]));
        return String(args[1]) === 'vhost_vdpa' ? vhost!.nodeOf(String(args[0])) : null;
      case 'unbind':
        need().bus.unbind(String(args[0]));
        return null;
      case 'vhostNodes':
        need();
        return vhost!.nodes;
      case 'vhostOpen':
        return vhostOpen(String(args[0]), args[1] as MailboxHandle | undefined);
      case 'vhostIoctl':
        return vhostIoctl(args[0], args[1], args[2]);
      case 'vhostWrite':
        return vhostWrite(args[0], args[1]);
      case 'vhostClose':
        closeFile(args[0] as number);
        return null;
      case 'release':
        release(String(args[0]));
        return null;
      case 'stats':
        return { ...stats, sleeps: waiter?.sleeps ?? 0, wakeups: waiter?.wakeups ?? 0 };
      case 'shutdown':
        queueMicrotask(stop);
        return null;
      // Migration between workers (src/migration/worker-migrate.ts): the vdpa suspend op with
      // requests in flight finished, the binary state out / in, the RAM disk's place, announce.
      case 'migSuspend':
        return migDev(args[0]).suspendDrained({ record: args[1] === true }).then(() => null);
      case 'migSave': {
        const dev = migDev(args[0]);
        return { ...saveMig(dev, args[1]), storage: storageOf(dev), suspendMs: 0, saveMs: 0, drained: 0 } satisfies MigSaved;
      }
      case 'migEarlySave': {
        // Pre-copy: the running device's control state; the worker keeps the mark to send a
        // delta at the stop (migSuspendSave / migSuspendSaveSync).
        const dev = migDev(args[0]);
        const e = saveEarlyState(dev);
        earlies.set(dev.name, e);
        return e.bytes;
      }
      case 'migEarlyLoad': {
        const dev = migDev(args[0]);
        if (!(args[1] instanceof Uint8Array)) throw new VirtioError(Code.InvalidArgument, 'migEarlyLoad needs the encoded early state');
        if (dev.earlyStateId === null) return loadEarlyState(dev, args[1]);
        // A newer early state replaces the one held — once it decodes as one.
        const s = decodeState(args[1]);
        if (s.early !== true) throw new VirtioError(Code.InvalidArgument, 'device state: not an early state (load it with loadState)');
        dev.reset();
        return loadEarlyState(dev, args[1]);
      }
      case 'migSuspendSave': {
        // Both in one request (one channel round trip less inside the downtime). A save that
        // fails resumes the device: the caller's source runs on.
        const dev = migDev(args[0]);
        const t0 = performance.now();
        const record = args[2] === true;
        const drained = dev.mustFinish(record);
        return dev.suspendDrained({ record }).then(() => {
          const t1 = performance.now();
          try {
            return { ...saveMig(dev, args[1]), storage: storageOf(dev), suspendMs: t1 - t0, saveMs: performance.now() - t1, drained } satisfies MigSaved;
          } catch (e) {
            dev.resume();
            throw e;
          }
        });
      }
      case 'migLoad':
        return migLoad(migDev(args[0]), args[1]);
      case 'migStorage':
        return storageOf(migDev(args[0]));
      case 'migStarted': {
        const name = migDev(args[0]).name;
        const r = starts.get(name) ?? null;
        starts.delete(name);
        return r;
      }
      // After a migration that moved blk requests in flight: the source's backend idle (its
      // copies of the writes landed), then the destination's re-submitted writes complete.
      case 'migWritesIdle': {
        const dev = migDev(args[0]);
        return dev instanceof VdpaSimBlk ? dev.writesIdle().then(() => null) : null;
      }
      case 'migReleaseFence': {
        const dev = migDev(args[0]);
        if (dev instanceof VdpaSimBlk) dev.releaseFence(typeof args[1] === 'number' ? args[1] : undefined);
        return null;
      }
      case 'migAnnounce': {
        const dev = migDev(args[0]);
        return dev instanceof VdpaSimNet ? dev.announce() : false;
      }
      default: {
        const extra = opts.requests && Object.hasOwn(opts.requests, op) ? opts.requests[op] : undefined;
        if (extra) return extra(args);
        throw new VirtioError(Code.Unsupported, `the device worker has no request ${op}`);
      }
    }
  };

  const ch = new Channel(port, { handler, name: 'device worker' });
  ch.onClose(() => stop());
  if (p) setup(p);

  function stop(): void {
    if (stopped) return;
    stopped = true;
    for (const name of [...served.keys()]) release(name);
    for (const fid of [...files.keys()]) closeFile(fid);
    for (const end of links.values()) end.close();
    links.clear();
    // Devices go with the worker; the backends opened for them are closed (their files released).
    for (const name of [...backends.keys()]) {
      try {
        bus?.devDel(name);
      } catch {
        /* deleted already */
      }
      void closeBackend(name);
    }
    ch.close();
    if (!looping) cleanup();
  }

  function cleanup(): void {
    waiter?.close();
    wake?.free();
    finish();
  }

  /** Some blk device has requests out at its backend (their answers come through the event loop). */
  function backendBusy(): boolean {
    for (const d of bus?.devices ?? []) if (d instanceof VdpaSimBlk && d.inFlight > 0) return true;
    return false;
  }

  // The adaptive serving loop. It returns to the event loop (a macrotask turn) when a channel
  // request rang `wake`, and after each bounded park, so messages and timers are never starved;
  // between polls that found work it lets microtasks (a device's deferred budget) run.
  async function loop(): Promise<void> {
    const w = waiter!;
    // Spin only right after work: once a park timed out, the next one starts at once.
    let lastWork = -Infinity;
    for (;;) {
      if (stopped) break;
      for (;;) {
        let n = 0;
        stats.polls++;
        try {
          n = w.poll();
        } catch {
          /* a callback's fault is the device's: it has its own containment */
        }
        if (stopped || yieldSoon) break;
        if (n > 0) {
          lastWork = now();
          await 0; // let microtasks (deferred device work) run
          continue;
        }
        if (now() - lastWork < spinMs) continue;
        let got = 0;
        try {
          // A blk backend's answers (file reads and writes, OPFS) are callbacks of this
          // worker's event loop: parked in Atomics.wait they would wait out the whole park, one
          // park per request. While a backend has requests out, park in waitAsync instead —
          // the event loop runs, and a doorbell still ends the park.
          got = backendBusy() ? await w.waitAsync(idleWaitMs) : w.wait(idleWaitMs);
        } catch {
          break;
        }
        if (got === 0) break; // a whole idle park: give the event loop a turn
        lastWork = now();
        await 0;
      }
      yieldSoon = false;
      stats.yields++;
      await new Promise<void>((f) => later(f));
    }
    looping = false;
    cleanup();
  }

  return done;
}
