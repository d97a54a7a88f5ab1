// A minimal VMM (issue 8 §3): the control plane only. Devices run in a device worker
// (src/worker/host.ts), bound to vhost_vdpa there; the guest's virtio driver side runs in a guest
// worker (src/vmm/guest.ts) over guest RAM, a region of the shared memory whose guest-physical 0
// is at a non-zero memory offset. The VMM opens each device's vhost-vdpa node over the channel
// and brings it up the way QEMU's vhost-vdpa backend does, with ioctl bytes laid out as the uapi
// (include/uapi/linux/vhost.h): SET_OWNER, GET/SET_FEATURES, GET/SET_BACKEND_FEATURES, status
// ACKNOWLEDGE → DRIVER → FEATURES_OK, guest RAM mapped with IOTLB UPDATE messages (vhost_msg_v2
// in a BATCH_BEGIN/END), SET_VRING_NUM/BASE/ADDR (guest-physical addresses from the guest),
// SET_VRING_KICK/CALL (doorbells: the guest rings the kick doorbell itself, the device rings the
// call doorbell the guest sleeps on), SET_VRING_ENABLE and DRIVER_OK. After that the VMM is out
// of the data path: its thread takes no message and runs no code per request.

import { VirtioError, Code } from '../errors.ts';
import type { Platform } from '../platform/platform.ts';
import { Doorbell } from '../worker/doorbell.ts';
import type { Channel } from '../worker/channel.ts';
import type { RemoteVdpaBus, RemoteVhostFile } from '../worker/remote-device.ts';
import * as U from '../vhost/uapi.ts';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER_OK,
} from '../virtio/constants.ts';

/** A device the VMM brought up for its guest. */
export interface VmmDevice {
  /** Device name on the device worker's bus. */
  name: string;
  /** Its vhost node (`vhost-vdpa-N`). */
  node: string;
  /** The open node. */
  file: RemoteVhostFile;
  /** Negotiated features. */
  features: bigint;
  /** Virtio device id (VHOST_VDPA_GET_DEVICE_ID). */
  deviceId: number;
  /** Queue size used. */
  queueSize: number;
  /** Kick doorbell of each queue (the guest rings it; the VMM's ioeventfds). */
  kicks: Doorbell[];
  /** Call doorbell of each queue (the device rings it; the VMM's irqfds). */
  calls: Doorbell[];
}

/** Where the guest's RAM is: guest-physical 0 at memory offset `gpaBase`, `ramSize` bytes. */
export interface GuestRam {
  /** Memory offset of guest-physical address 0 (not 0). */
  gpaBase: number;
  /** Bytes of guest RAM. */
  ramSize: number;
}

const u64 = (b: Uint8Array | number): bigint => new DataView((b as Uint8Array).buffer, (b as Uint8Array).byteOffset, 8).getBigUint64(0, true);
const u32 = (b: Uint8Array | number): number => new DataView((b as Uint8Array).buffer, (b as Uint8Array).byteOffset, 4).getUint32(0, true);
const u16 = (b: Uint8Array | number): number => new DataView((b as Uint8Array).buffer, (b as Uint8Array).byteOffset, 2).getUint16(0, true);
const bit = (n: number): bigint => 1n << BigInt(n);

/** The VMM's control plane over a device worker and a guest worker. */
export class Vmm {
  /** The shared platform. */
  readonly platform: Platform;
  /** The device worker's bus. */
  readonly devices: RemoteVdpaBus;
  /** The guest worker's channel. */
  readonly guest: Channel;
  /** The guest's RAM. */
  readonly ram: GuestRam;
  /** Devices brought up, by name. */
  readonly attached = new Map<string, VmmDevice>();

  constructor(platform: Platform, devices: RemoteVdpaBus, guest: Channel, ram: GuestRam) {
    if (!(ram.gpaBase > 0)) throw new VirtioError(Code.InvalidArgument, 'guest-physical 0 must sit at a non-zero memory offset');
    this.platform = platform;
    this.devices = devices;
    this.guest = guest;
    this.ram = ram;
  }

  /**
   * Binds device `name` to vhost_vdpa in the device worker, opens its node and brings it up
   * for the guest with `queues` queues of `queueSize`, negotiating `want` ∩ offered features
   * (VIRTIO_F_VERSION_1 must be among them). Throws the node's VhostError on a refused step.
   */
  async attach(name: string, want: bigint, queues: number, queueSize = 64): Promise<VmmDevice> {
    const node = (await this.devices.bind(name, 'vhost_vdpa'))!;
    const f = await this.devices.openVhost(node);
    try {
      await f.ioctl(U.VHOST_SET_OWNER);
      const deviceId = u32(await f.ioctl(U.VHOST_VDPA_GET_DEVICE_ID));
      const offered = u64(await f.ioctl(U.VHOST_GET_FEATURES));
      // IOTLB v2 messages in batches, as QEMU asks when the backend offers them.
      const backend = u64(await f.ioctl(U.VHOST_GET_BACKEND_FEATURES)) & (bit(U.VHOST_BACKEND_F_IOTLB_MSG_V2) | bit(U.VHOST_BACKEND_F_IOTLB_BATCH));
      await f.ioctl(U.VHOST_SET_BACKEND_FEATURES, U.encodeU64(backend));
      const status = (s: number) => f.ioctl(U.VHOST_VDPA_SET_STATUS, Uint8Array.of(s));
      await status(VIRTIO_CONFIG_S_ACKNOWLEDGE);
      await status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
      const features = offered & want;
      await f.ioctl(U.VHOST_SET_FEATURES, U.encodeU64(features));
      await status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
      const st = ((await f.ioctl(U.VHOST_VDPA_GET_STATUS)) as Uint8Array)[0]!;
      if (!(st & VIRTIO_CONFIG_S_FEATURES_OK)) throw new VirtioError(Code.Unsupported, `${name} refused features 0x${features.toString(16)}`);
      // Guest RAM: guest-physical [0, ramSize) is memory [gpaBase, gpaBase + ramSize).
      const v2 = (backend & bit(U.VHOST_BACKEND_F_IOTLB_MSG_V2)) !== 0n ? 0 : undefined;
      const batch = (backend & bit(U.VHOST_BACKEND_F_IOTLB_BATCH)) !== 0n;
      if (batch) await f.writeMsg(U.encodeIotlbMsg({ type: U.VHOST_IOTLB_BATCH_BEGIN }, v2));
      await f.writeMsg(U.encodeIotlbMsg({ type: U.VHOST_IOTLB_UPDATE, iova: 0, size: this.ram.ramSize, uaddr: this.ram.gpaBase, perm: U.VHOST_ACCESS_RW }, v2));
      if (batch) await f.writeMsg(U.encodeIotlbMsg({ type: U.VHOST_IOTLB_BATCH_END }, v2));
      const size = Math.min(queueSize, u16(await f.ioctl(U.VHOST_VDPA_GET_VRING_NUM)));
      const addrs = (await this.guest.request('queues', name, queues, size, features)) as { desc: number; avail: number; used: number }[];
      const kicks: Doorbell[] = [];
      const calls: Doorbell[] = [];
      for (let i = 0; i < queues; i++) {
        const a = addrs[i]!;
        const kick = Doorbell.alloc(this.platform);
        const call = Doorbell.alloc(this.platform);
        kicks.push(kick);
        calls.push(call);
        await f.ioctl(U.VHOST_SET_VRING_NUM, U.encodeVringState(i, size));
        await f.ioctl(U.VHOST_SET_VRING_BASE, U.encodeVringState(i, 0));
        await f.ioctl(U.VHOST_SET_VRING_ADDR, U.encodeVringAddr({ index: i, desc: a.desc, avail: a.avail, used: a.used }));
        await f.ioctl(U.VHOST_SET_VRING_KICK, U.encodeVringFile(i, kick.handle.addr));
        await f.ioctl(U.VHOST_SET_VRING_CALL, U.encodeVringFile(i, call.handle.addr));
        await f.ioctl(U.VHOST_VDPA_SET_VRING_ENABLE, U.encodeVringState(i, 1));
      }
      await this.guest.request('doorbells', name, kicks.map((k) => k.handle), calls.map((c) => c.handle));
      await status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
      const d: VmmDevice = { name, node, file: f, features, deviceId, queueSize: size, kicks, calls };
      this.attached.set(name, d);
      return d;
    } catch (e) {
      await f.close().catch(() => {});
      throw e;
    }
  }

  /** Reads `len` bytes of a device's config space (VHOST_VDPA_GET_CONFIG). */
  async config(name: string, off: number, len: number): Promise<Uint8Array> {
    const d = this.attached.get(name);
    if (!d) throw new VirtioError(Code.NotFound, `${name} is not attached`);
    const out = (await d.file.ioctl(U.VHOST_VDPA_GET_CONFIG, U.encodeVdpaConfig(off, new Uint8Array(len)))) as Uint8Array;
    return out.slice(U.VHOST_VDPA_CONFIG.buf, U.VHOST_VDPA_CONFIG.buf + len);
  }

  /** Closes every node (the device worker resets the devices) and frees the doorbells. */
  async close(): Promise<void> {
    for (const d of this.attached.values()) {
      await d.file.close().catch(() => {});
      for (const db of [...d.kicks, ...d.calls]) db.free();
    }
    this.attached.clear();
  }
}
