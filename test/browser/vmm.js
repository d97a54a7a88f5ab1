// The minimal VMM (issue 8 §3) in Chromium: this page's main thread is the VMM (it only makes
// asynchronous channel requests, which a page may), a module worker runs the devices
// (dist/worker/browser-device-worker.js) and another the guest (dist/vmm/browser-guest-worker.js),
// whose RAM is a slice of the shared memory at a non-zero offset mapped by IOTLB messages.
// The same scenario as test/vmm.test.ts: a net pair on the switch both ways and blk vs a model.
import {
  Platform, Channel, RemoteVdpaBus, Vmm, featureBit, VIRTIO_F_VERSION_1, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_EVENT_IDX, VIRTIO_NET_F_MAC,
} from '/dist/index.js';

const details = { crossOriginIsolated: self.crossOriginIsolated };
const workers = [];
try {
  const platform = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const dw = new Worker('/dist/worker/browser-device-worker.js', { type: 'module' });
  const gw = new Worker('/dist/vmm/browser-guest-worker.js', { type: 'module' });
  workers.push(dw, gw);
  const devices = await RemoteVdpaBus.connect(dw, platform);
  const guest = new Channel(gw, { name: 'guest worker' });
  const ram = await guest.request('attach', platform.handle({ priv: 2 << 20, ram: 16 << 20 }));
  details.gpaBase = ram.gpaBase;
  const vmm = new Vmm(platform, devices, guest, ram);
  const base = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_ACCESS_PLATFORM) | featureBit(VIRTIO_F_EVENT_IDX);
  await devices.devAdd('vdpasim_net', 'net1', { mac: '02:00:00:00:00:01' });
  await devices.devAdd('vdpasim_net', 'net2', { mac: '02:00:00:00:00:02' });
  await devices.switchConnect('net1');
  await devices.switchConnect('net2');
  await devices.devAdd('vdpasim_blk', 'blk0');
  details.nodes = [];
  for (const [name, f, q] of [['net1', base | featureBit(VIRTIO_NET_F_MAC), 2], ['net2', base | featureBit(VIRTIO_NET_F_MAC), 2], ['blk0', base, 1]]) {
    details.nodes.push((await vmm.attach(name, f, q)).node);
  }
  const mac1 = await vmm.config('net1', 0, 6);
  const mac2 = await vmm.config('net2', 0, 6);
  let messages = 0;
  const count = () => messages++;
  dw.addEventListener('message', count);
  gw.addEventListener('message', count);
  const h0 = await devices.stats();
  messages = 0;
  details.net = await guest.request('net', 'net1', 'net2', mac1, mac2, 200, 3);
  details.blk = await guest.request('blk', 'blk0', 100, 8192, 4);
  details.vmmMessages = messages;
  dw.removeEventListener('message', count);
  gw.removeEventListener('message', count);
  const h1 = await devices.stats();
  details.syncOps = h1.syncOps - h0.syncOps;
  details.kicks = h1.kicks - h0.kicks;
  // Blk backend descriptors in the browser device worker: { opfs } is opened there (a second
  // add after the delete shows the first closed its handle: OPFS handles are exclusive), a file
  // is refused (no file system here), an unknown kind is invalid.
  const refused = async (attrs) => devices.devAdd('vdpasim_blk', 'nope', attrs).then(() => 'opened', (e) => e.code);
  details.backends = { file: await refused({ backend: { file: 'disk.img' } }), unknown: await refused({ backend: { idb: 'disk' } }), opfs: [] };
  for (let i = 0; i < 2; i++) {
    const info = await devices.devAdd('vdpasim_blk', `opfs${i}`, { backend: { opfs: 'vmm-test/disk.img', sectors: 64 } });
    details.backends.opfs.push(info.name);
    await devices.devDel(info.name);
  }
  await vmm.close();
  devices.close();
  guest.close();
  window.__vmm = { ok: true, details };
} catch (e) {
  details.error = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e);
  window.__vmm = { ok: false, details };
} finally {
  for (const w of workers) w.terminate();
}
