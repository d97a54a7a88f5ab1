// The emulator worker of the guest in Chromium (test/guest-browser.test.ts, guest.html): v86 on
// a shared WebAssembly.Memory (v86SharedMemory: its JIT included), its images fetched from the
// test's static server, and our virtio-pci functions plugged in with attachV86. The devices run
// either here (`devices: 'inthread'`, exactly as test/guest-v86.test.ts does in Node) or in the
// device worker (`'worker'`, guest-device-worker.js), reached through a MessagePort the page
// hands over. This is a worker, so the synchronous calls to a device worker may block here.
// v86 in a worker: no screen_container and no DOM are needed (no screen, keyboard, mouse or
// speaker); between ticks it yields through a timer Worker of its own (a blob: classic worker
// it starts when `Worker` exists and `process` does not: Chromium's dedicated workers have
// `Worker`), so this worker's event loop turns between ticks and the awaited call doorbells
// (attachV86's callWaiter.waitAsync loop) and the page's messages are served there.
//
// Messages from the page: { t: 'call', id, op, args } answered by { t: 'reply', id, ok, value |
// error }, and { t: 'input', s } (bytes for the guest's serial port). To the page: { t: 'serial',
// s }, the guest's serial output, line by line (and a partial line after a short pause).
// Calls: start(cfg) → { bootMs, loadMs, shared, ... } once the guest's init printed
// VDPA-GUEST-READY; host(op, args) asks the host side (disk bytes, responder counters);
// pci() → the functions' error counters; deviceStats() → the device worker's loop counters
// (HostStats) or null; stop().
import { V86 } from '/node_modules/v86/build/libv86.mjs';
import { VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, RemoteVdpaBus } from '/dist/index.js';
import { attachV86, v86Platform, v86SharedMemory } from '/dist/v86/index.js';
import { addGuestDevices } from './guest-host.js';

let emulator = null;
let host = null;
let devicePort = null;
let remote = null;
const attached = [];

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
  return r.arrayBuffer();
}

// Serial output to the page: whole lines at once, a partial line (a prompt) after 20 ms.
let out = '';
let flushTimer = 0;
function flush() {
  clearTimeout(flushTimer);
  flushTimer = 0;
  if (out) postMessage({ t: 'serial', s: out });
  out = '';
}
function serialByte(b) {
  out += String.fromCharCode(b);
  if (b === 10) flush();
  else if (!flushTimer) flushTimer = setTimeout(flush, 20);
}

async function start(cfg) {
  const t0 = performance.now();
  const [wasm, bios, vgabios, kernel, initrd] = await Promise.all(
    [cfg.files.wasm, cfg.files.bios, cfg.files.vgabios, cfg.files.kernel, cfg.files.initrd].map(fetchBytes));
  const { memory, wasmFn } = v86SharedMemory(wasm, { maximumBytes: 512 << 20 });
  emulator = new V86({
    wasm_fn: wasmFn,
    bios: { buffer: bios },
    vga_bios: { buffer: vgabios },
    bzimage: { buffer: kernel },
    initrd: { buffer: initrd },
    cmdline: cfg.cmdline,
    memory_size: cfg.memoryMiB << 20,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    fastboot: true,
  });
  await new Promise((resolve) => emulator.add_listener('emulator-loaded', resolve));
  const loadMs = performance.now() - t0;
  const p = v86Platform(emulator, { privateSize: 16 << 20 });
  if (p.memory !== memory) throw new Error('v86 is not running on the shared memory');
  if (cfg.devices === 'inthread') {
    const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
    bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
    bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
    const vhost = new VhostVdpa(p);
    bus.registerDriver(vhost);
    host = addGuestDevices(bus);
    attached.push(attachV86(emulator, p, vhost.open(vhost.nodeOf('gnet0')), { slot: 8 }));
    attached.push(attachV86(emulator, p, vhost.open(vhost.nodeOf('gblk0')), { slot: 9 }));
  } else if (cfg.devices === 'worker') {
    if (!devicePort) throw new Error('no port to the device worker');
    // The device worker attaches to v86's memory with a private slice of ours (state blocks,
    // IOTLB tables, doorbells) and answers once its devices are up.
    const ready = new Promise((resolve) => (devicePort.onmessage = (m) => m.data?.t === 'ready' && resolve(m.data)));
    devicePort.postMessage({ t: 'attach', handle: p.handle({ priv: 8 << 20 }) });
    const { nodes } = await ready;
    devicePort.onmessage = null;
    remote = await RemoteVdpaBus.connect(devicePort, p, { attach: false });
    // Synchronous vhost files: the guest's register accesses cross to the device worker through
    // a mailbox and block here until answered; interrupts come back on call doorbells that
    // attachV86 awaits (callWaiter.waitAsync) between v86's ticks.
    attached.push(attachV86(emulator, p, await remote.openVhostSync(nodes.net), { slot: 8 }));
    attached.push(attachV86(emulator, p, await remote.openVhostSync(nodes.blk), { slot: 9 }));
    host = { requests: new Proxy({}, { get: (_, op) => (args) => remote.request(op, ...args) }) };
  } else {
    throw new Error(`devices: ${cfg.devices} must be 'inthread' or 'worker'`);
  }
  let log = '';
  let ready;
  const booted = new Promise((resolve) => (ready = resolve));
  emulator.add_listener('serial0-output-byte', (b) => {
    serialByte(b);
    if (log !== null) {
      log += String.fromCharCode(b);
      if (b === 10 && log.includes('VDPA-GUEST-READY')) {
        log = null;
        ready();
      }
    }
  });
  const t1 = performance.now();
  await emulator.run();
  await booted;
  return {
    bootMs: performance.now() - t1,
    loadMs,
    shared: memory.buffer instanceof SharedArrayBuffer,
    devices: cfg.devices,
  };
}

const calls = {
  start: (cfg) => start(cfg),
  host: (op, args) => {
    const f = host?.requests[op];
    if (!f) throw new Error(`no host request ${op}`);
    return f(args);
  },
  // The device worker's serving-loop counters (null with the devices in this worker).
  deviceStats: () => remote?.stats() ?? null,
  pci: () => attached.map((a) => ({ slot: a.slot, badAccesses: a.fn.badAccesses, backendErrors: a.fn.backendErrors })),
  stop: async () => {
    for (const a of attached.splice(0)) a.close();
    remote?.close();
    await emulator?.destroy();
    emulator = null;
    return null;
  },
};

self.onmessage = async (e) => {
  const m = e.data;
  if (m.t === 'port') {
    devicePort = m.port;
    return;
  }
  if (m.t === 'input') {
    emulator?.serial0_send(m.s);
    return;
  }
  if (m.t !== 'call') return;
  try {
    const f = calls[m.op];
    if (!f) throw new Error(`no call ${m.op}`);
    postMessage({ t: 'reply', id: m.id, ok: true, value: await f(...m.args) });
  } catch (err) {
    postMessage({ t: 'reply', id: m.id, ok: false, error: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack}` : String(err) });
  }
};
