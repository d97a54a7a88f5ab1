// The device worker of the guest in Chromium (test/guest-browser.test.ts, devices: 'worker'):
// the devices of guest-host.js (vdpasim_net on a switch with the PingResponder, vdpasim_blk over
// an in-memory disk) on a platform attached to v86's shared memory, served with serveVdpa to the
// emulator worker over a MessagePort. The page hands the port over ({ t: 'port' }); the first
// message on it is { t: 'attach', handle } from the emulator worker (a PlatformHandle of v86's
// memory with a private slice for this worker: the foreign platform has no RAM arena to give);
// this worker answers { t: 'ready', nodes } once the devices are up and the channel serves, and
// from then on the port carries serveVdpa's channel (the emulator worker opens the vhost nodes
// with RemoteVdpaBus.openVhostSync; its `requests` answer the test's host-side questions).
import { Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, serveVdpa } from '/dist/index.js';
import { addGuestDevices } from './guest-host.js';

self.onmessage = (e) => {
  if (e.data?.t !== 'port') return;
  const port = e.data.port;
  port.onmessage = (m) => {
    if (m.data?.t !== 'attach') return;
    // The channel's listener must be in place before this handler returns: the emulator
    // worker's first request may already be queued behind this message.
    port.onmessage = null;
    const p = Platform.attach(m.data.handle);
    const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
    bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
    bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
    const vhost = new VhostVdpa(p);
    bus.registerDriver(vhost);
    const host = addGuestDevices(bus);
    void serveVdpa(port, { platform: p, bus, requests: host.requests }).then(() => self.close());
    port.postMessage({ t: 'ready', nodes: { net: vhost.nodeOf('gnet0'), blk: vhost.nodeOf('gblk0') } });
  };
};
