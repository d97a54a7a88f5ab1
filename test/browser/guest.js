// The page of the guest in Chromium (test/guest-browser.test.ts): starts the emulator worker
// (guest-emu-worker.js) and, for `devices: 'worker'`, the device worker (guest-device-worker.js)
// with a MessageChannel between them; relays the guest's serial console. The page itself never
// blocks: it only posts messages.
//
// For the test (through page.evaluate / exposeFunction):
//   window.__guestStart(cfg)   starts everything; resolves to what the emulator worker's start answers
//   window.__guestCall(op, ...args)   another call to the emulator worker (host, pci, stop)
//   window.__guestSend(s)      bytes for the guest's serial port
//   window.__guestSerial(s)    called with the guest's serial output (the test exposes it)
const workers = [];
let emu = null;
let nextId = 1;
const pending = new Map();

function call(op, ...args) {
  if (!emu) return Promise.reject(new Error('the emulator worker is not running'));
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    emu.postMessage({ t: 'call', id, op, args });
  });
}

window.__guestStart = async (cfg) => {
  if (!self.crossOriginIsolated) throw new Error('the page is not cross-origin isolated');
  emu = new Worker('./guest-emu-worker.js', { type: 'module' });
  workers.push(emu);
  // A worker that fails to load or throws at top level fails every call in flight.
  const failed = (who) => (e) => {
    const err = new Error(`${who} worker: ${e.message ?? 'failed to load'}`);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  emu.onerror = failed('emulator');
  emu.onmessage = (e) => {
    const m = e.data;
    if (m.t === 'serial') window.__guestSerial?.(m.s);
    else if (m.t === 'reply') {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.ok) p?.resolve(m.value);
      else p?.reject(new Error(m.error));
    }
  };
  if (cfg.devices === 'worker') {
    const dev = new Worker('./guest-device-worker.js', { type: 'module' });
    workers.push(dev);
    dev.onerror = failed('device');
    const ch = new MessageChannel();
    dev.postMessage({ t: 'port', port: ch.port2 }, [ch.port2]);
    emu.postMessage({ t: 'port', port: ch.port1 }, [ch.port1]);
  }
  return call('start', cfg);
};

window.__guestCall = (op, ...args) => call(op, ...args);
window.__guestSend = (s) => emu?.postMessage({ t: 'input', s });
window.addEventListener('pagehide', () => {
  for (const w of workers) w.terminate();
});
window.__guestPage = true;
