// The demo page's device worker: the vdpa bus with the vdpasim_net and vdpasim_blk management
// devices, net devices connected to an L2 switch, all on the page's shared Platform. The
// `vdpa` console runs here, against this bus. A bus driver ("page_vdpa") hands every device to
// the page, which drives it through the protocol in protocol.ts (the role vhost_vdpa plays for
// a userspace driver in Linux).

import {
  Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VdpaSimNet, VdpaSimBlk, OpfsBackend, L2Switch, VirtioError, formatMac,
  VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VIRTIO_NET_F_MAC, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_BLK_CFG,
  type VdpaDevice, type VdpaBusDriver,
} from '../src/index.ts';
import { runVdpa } from '../src/cli/vdpa.ts';
import { CTL, type ToWorker, type FromWorker, type DeviceInfo, type QueueSetup, type QueueSnapshot } from './protocol.ts';

const post = (m: FromWorker) => (self as unknown as Worker).postMessage(m);

let p: Platform;
let i32: Int32Array;
let ctl = 0;
const bus = new VdpaBus();
const sw = new L2Switch();
/** Switch port of each net device. */
const ports = new Map<string, number>();
/** Bound queues by kick/call bit. */
const slots: ({ dev: VdpaDevice; q: QueueSetup; calls: number; kicks: number } | null)[] = [];

function info(dev: VdpaDevice): DeviceInfo {
  const f = dev.getDeviceFeatures();
  const d: DeviceInfo = {
    name: dev.name, mgmtdev: bus.mgmtDeviceOf(dev.name), deviceId: dev.getDeviceId(), nvqs: dev.nvqs,
    features: f.toString(16), vqNumMax: dev.getVqNumMax(),
  };
  if (d.deviceId === VIRTIO_ID_NET && (f >> BigInt(VIRTIO_NET_F_MAC)) & 1n) d.mac = formatMac(dev.getConfig(0, 6));
  if (d.deviceId === VIRTIO_ID_BLOCK) {
    const c = dev.getConfig(VIRTIO_BLK_CFG.CAPACITY, 8);
    d.capacity = new DataView(c.buffer, c.byteOffset, 8).getUint32(0, true) + new DataView(c.buffer, c.byteOffset, 8).getUint32(4, true) * 2 ** 32;
  }
  return d;
}

/** Forgets the bound queues of `name` (its rings belong to the page, which frees them). */
function dropSlots(name: string): void {
  for (let s = 0; s < slots.length; s++) if (slots[s]?.dev.name === name) slots[s] = null;
}

/** The bus driver standing for the page: every device is offered to it. */
const pageDriver: VdpaBusDriver = {
  name: 'page_vdpa',
  probe(dev) {
    if (dev instanceof VdpaSimNet) {
      const port = sw.connect(dev);
      ports.set(dev.name, port);
      dev.attachPort((frames) => sw.input(port, frames));
    }
    post({ t: 'probe', dev: info(dev) });
  },
  remove(dev) {
    const port = ports.get(dev.name);
    if (port !== undefined) {
      sw.disconnect(port);
      ports.delete(dev.name);
      if (dev instanceof VdpaSimNet) dev.attachPort(null);
    }
    dropSlots(dev.name);
    dev.reset();
    if (dev instanceof VdpaSimBlk && opfsDisk && dev.backend === opfsDisk) {
      opfsDisk.close(); // releases the image's lock (vdpa dev del disk0)
      opfsDisk = null;
    }
    post({ t: 'remove', name: dev.name });
  },
};

/** VIRTIO 1.3 §3.1.1 on the page's behalf, as virtio_vdpa's init does (src/drivers/virtio-vdpa.ts). */
function bind(name: string, want: bigint, queues: QueueSetup[]): bigint {
  const dev = bus.device(name);
  dropSlots(name);
  try {
    dev.reset();
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const features = dev.getDeviceFeatures() & want;
    dev.setDriverFeatures(features);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    if (!(dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) throw new Error(`${name} rejected features 0x${features.toString(16)}`);
    for (const q of queues) {
      dev.setVqNum(q.idx, q.size);
      dev.setVqAddress(q.idx, q.desc, q.driver, q.device);
      dev.setVqReady(q.idx, true);
      const entry = { dev, q, calls: 0, kicks: 0 };
      slots[q.slot] = entry;
      dev.setVqCb(q.idx, () => {
        entry.calls++;
        Atomics.or(i32, ctl + CTL.CALL_BITS, 1 << q.slot);
        Atomics.add(i32, ctl + CTL.CALL_SEQ, 1);
        Atomics.notify(i32, ctl + CTL.CALL_SEQ);
      });
    }
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    return features;
  } catch (e) {
    dropSlots(name);
    dev.reset();
    dev.setStatus(VIRTIO_CONFIG_S_FAILED);
    throw e;
  }
}

/** Milliseconds the device side lets kicks gather before serving them (the page's "device pace"). */
let paceMs = 0;

/** Sleeps on KICK_SEQ and delivers the kicks (never blocks: messages keep flowing). */
async function kickLoop(): Promise<void> {
  let seen = Atomics.load(i32, ctl + CTL.KICK_SEQ);
  for (;;) {
    const w = Atomics.waitAsync(i32, ctl + CTL.KICK_SEQ, seen, 1000);
    if (w.async) await w.value;
    // A slow device: the driver keeps adding meanwhile (kicks it still sends are folded into one).
    if (paceMs > 0) await new Promise((r) => setTimeout(r, paceMs));
    seen = Atomics.load(i32, ctl + CTL.KICK_SEQ);
    let bits = Atomics.exchange(i32, ctl + CTL.KICK_BITS, 0);
    while (bits !== 0) {
      const s = 31 - Math.clz32(bits);
      bits &= ~(1 << s);
      const e = slots[s];
      if (!e) continue; // unbound meanwhile
      e.kicks++;
      try {
        e.dev.kickVq(e.q.idx);
      } catch (err) {
        post({ t: 'error', message: `kick ${e.dev.name} queue ${e.q.idx}: ${(err as Error).message}` });
      }
    }
  }
}

function snapshot(id: number): FromWorker {
  const queues: QueueSnapshot[] = [];
  for (const e of slots) {
    if (!e) continue;
    const st = e.dev.getVendorVqStats?.(e.q.idx)?.stats ?? [];
    queues.push({
      name: e.dev.name, idx: e.q.idx, slot: e.q.slot, state: e.dev.getVqState(e.q.idx),
      received: st.find(([n]) => n === 'received_desc')?.[1] ?? 0,
      completed: st.find(([n]) => n === 'completed_desc')?.[1] ?? 0,
      calls: e.calls, kicks: e.kicks,
    });
  }
  const switchPorts = [...ports].map(([name, port]) => {
    const s = sw.stats(port);
    return { name, rx: s.rxFrames, tx: s.txFrames, drops: s.txDrops };
  });
  return { t: 'snapshot', id, queues, switchPorts };
}

/**
 * A vdpasim_blk device over a disk image in the Origin Private File System (OpfsBackend: sync
 * access handles exist only in dedicated workers, like this one), made through the management
 * device like the others (a backend is a management attribute given in code: the tool cannot
 * pass one). The image persists across reloads. Another tab holding the image's lock, or a
 * browser without OPFS, only costs the disk.
 */
let opfsDisk: OpfsBackend | null = null;
async function addOpfsDisk(o: { path: string; sectors: number } | null): Promise<void> {
  if (!o) return;
  try {
    opfsDisk = await OpfsBackend.open(o.path, { sectors: o.sectors });
  } catch (e) {
    post({ t: 'note', message: `no OPFS disk: ${e instanceof Error ? e.message : String(e)}` });
    return;
  }
  bus.devAdd('vdpasim_blk', 'disk0', { backend: opfsDisk });
}

function runCommand(argv: string[]): { rc: number; out: string; err: string } {
  let out = '';
  let err = '';
  const rc = runVdpa(argv, { bus, out: (s) => { out += s; }, err: (s) => { err += s; }, version: 'vdpa-wasm (browser demo)' });
  return { rc, out, err };
}

self.onmessage = (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  try {
    switch (m.t) {
      case 'init': {
        p = Platform.attach(m.handle);
        i32 = p.i32;
        ctl = m.ctl >> 2;
        bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
        bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
        bus.registerDriver(pageDriver);
        for (const argv of m.commands) {
          const r = runCommand(argv);
          if (r.rc !== 0) throw new Error(`vdpa ${argv.join(' ')}: ${r.err}`);
        }
        void kickLoop();
        void addOpfsDisk(m.opfs).finally(() => post({ t: 'ready', devices: bus.devices.map(info) }));
        return;
      }
      case 'vdpa':
        post({ t: 'vdpa', id: m.id, ...runCommand(m.argv) });
        return;
      case 'bind':
        try {
          post({ t: 'bound', id: m.id, ok: true, features: bind(m.name, BigInt(`0x${m.features}`), m.queues).toString(16) });
        } catch (e) {
          post({ t: 'bound', id: m.id, ok: false, error: e instanceof VirtioError ? `${e.code}: ${e.message}` : String((e as Error).message ?? e) });
        }
        return;
      case 'snapshot':
        post(snapshot(m.id));
        return;
      case 'pace':
        paceMs = Math.max(0, Math.min(1000, m.ms));
        return;
    }
  } catch (e) {
    post({ t: 'error', message: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) });
  }
};
