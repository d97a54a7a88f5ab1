// The host side of the guest in Chromium (test/guest-browser.test.ts): the devices the Debian
// guest drives and what stands behind them, in whichever worker runs the devices (the emulator
// worker, or the device worker). A vdpasim_net on an L2 switch whose other port is a
// PingResponder, and a vdpasim_blk over an in-memory disk with a known pattern the guest reads
// back; `requests` answers the test's host-side questions (disk bytes, responder counters).
import { L2Switch, PingResponder } from '/dist/index.js';

/** The guest's MAC, and the address of the host it pings on the far side of the switch. */
export const NET_MAC = '52:54:00:12:02:01';
export const PEER_MAC = '52:54:00:12:01:01';
export const PEER_IP = '10.0.0.1';
/** Disk bytes (16 MiB), and where the host's pattern lies (8 MiB..9 MiB). */
export const DISK_BYTES = 16 << 20;
export const PATTERN_AT = 8 << 20;
export const PATTERN_BYTES = 1 << 20;

/**
 * A BlkBackend in this worker's memory: the foreign (v86) platform has no RAM arena for the
 * RAM disk of vdpasim_blk, and a backend is what a device worker in a page would use anyway.
 */
export class MemDisk {
  constructor(bytes) {
    this.bytes = new Uint8Array(bytes);
    this.capacity = bytes / 512;
  }

  range(sector, len) {
    const at = sector * 512;
    if (!Number.isSafeInteger(at) || at < 0 || at + len > this.bytes.length) throw new RangeError(`sector ${sector} + ${len} bytes is outside the disk`);
    return at;
  }

  async read(sector, len) {
    const at = this.range(sector, len);
    return this.bytes.slice(at, at + len);
  }

  async write(sector, data) {
    this.bytes.set(data, this.range(sector, data.length));
  }

  async flush() {}
}

/** The pattern at PATTERN_AT: the same formula as test/guest-v86.test.ts's disk 0. */
function fillPattern(b) {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let j = PATTERN_AT; j < PATTERN_AT + PATTERN_BYTES; j += 4) v.setUint32(j, Math.imul(j, 2654435761) >>> 0, true);
}

function base64(b) {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * Adds `gnet0` (on a switch with the PingResponder) and `gblk0` (over a MemDisk) to `bus`
 * (a VdpaBus with vdpasim_net and vdpasim_blk that binds new devices to vhost_vdpa).
 */
export function addGuestDevices(bus) {
  const sw = new L2Switch();
  const responder = new PingResponder({ mac: PEER_MAC, ip: PEER_IP });
  // The responder is a switch endpoint: its replies enter the switch a microtask later, not
  // from inside the delivery that carried the request.
  const peer = sw.connect({
    deliver(frames) {
      const out = [];
      for (const f of frames) {
        const r = responder.answer(f);
        if (r) out.push(r);
      }
      if (out.length) queueMicrotask(() => sw.input(peer, out));
      return frames.length;
    },
  });
  const net = bus.devAdd('vdpasim_net', 'gnet0', { mac: NET_MAC });
  const port = sw.connect(net);
  net.attachPort((frames) => sw.input(port, frames));
  const disk = new MemDisk(DISK_BYTES);
  fillPattern(disk.bytes);
  bus.devAdd('vdpasim_blk', 'gblk0', { backend: disk });
  return {
    responder,
    disk,
    /** Host-side questions, as requests (serveVdpa's `requests` take an argument array). */
    requests: {
      disk: ([at, len]) => base64(disk.bytes.subarray(at, at + len)),
      responder: () => ({ ...responder.stats }),
      switchPorts: () => ({ guest: sw.stats(port), peer: sw.stats(peer) }),
    },
  };
}
