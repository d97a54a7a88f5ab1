// The page ↔ device-worker protocol of the demo page (web/). Devices (the vdpa bus, its
// management devices and the L2 switch) live in device-worker.ts; the drivers live in the page.
// Both sides share one Platform (a shared WebAssembly.Memory): the page lays out the rings and
// buffers in it, the worker's devices read and write them directly.
//
// This is the demo's own small protocol, made to be swapped for the package's device-in-worker
// RPC once that exists: the page asks the worker, by message, to run the virtio initialization
// (VIRTIO 1.3 §3.1.1) on a device with the page's ring addresses, as vhost_vdpa's ioctls let a
// userspace driver do (drivers/vhost/vdpa.c: VHOST_SET_FEATURES, VHOST_SET_VRING_NUM/ADDR,
// VHOST_VDPA_SET_VRING_ENABLE, VHOST_VDPA_SET_STATUS). Notifications do not go through messages:
// they are words in the shared memory (eventfd's role, as src/worker/doorbell.ts does).
//   kick: the page sets its queue's bit in KICK_BITS, bumps KICK_SEQ and Atomics.notify()s it;
//         the worker sleeps in Atomics.waitAsync on KICK_SEQ and calls kickVq for every bit set.
//   call: the device's callback sets the queue's bit in CALL_BITS and bumps CALL_SEQ; the page
//         sleeps in Atomics.waitAsync on CALL_SEQ (a page's main thread must never block).

import type { PlatformHandle, VqState } from '../src/index.ts';

/** Control block: i32 words at `ctl` in the shared memory. */
export const CTL = { KICK_SEQ: 0, KICK_BITS: 1, CALL_SEQ: 2, CALL_BITS: 3, WORDS: 4 } as const;
/** Queues that can be bound at once (one bit each in KICK_BITS / CALL_BITS). */
export const MAX_SLOTS = 32;

/** A ring the page set up, as set_vq_num / set_vq_address take it. */
export interface QueueSetup {
  /** Queue index on the device. */
  idx: number;
  /** Kick/call bit. */
  slot: number;
  size: number;
  desc: number;
  driver: number;
  device: number;
}

/** Page → worker. */
export type ToWorker =
  | { t: 'init'; handle: PlatformHandle; ctl: number; commands: string[][]; opfs: { path: string; sectors: number } | null }
  | { t: 'vdpa'; id: number; argv: string[] }
  | { t: 'bind'; id: number; name: string; features: string; queues: QueueSetup[] }
  | { t: 'snapshot'; id: number }
  /** The device side takes its kicks only every `ms` (0: at once), so the rings visibly fill. */
  | { t: 'pace'; ms: number };

/** What the worker says about a device that appeared on the bus. */
export interface DeviceInfo {
  name: string;
  mgmtdev: string | null;
  deviceId: number;
  nvqs: number;
  /** Offered features, as a hex string (bigint does not cross postMessage everywhere). */
  features: string;
  vqNumMax: number;
  /** net: the MAC in config space. */
  mac?: string;
  /** blk: capacity in sectors. */
  capacity?: number;
}

/** Device-side view of one bound queue. */
export interface QueueSnapshot {
  name: string;
  idx: number;
  slot: number;
  state: VqState;
  /** received_desc, completed_desc (getVendorVqStats). */
  received: number;
  completed: number;
  /** Calls the device made (used-buffer notifications). */
  calls: number;
  /** Kicks the worker delivered to the device. */
  kicks: number;
}

/** Worker → page. */
export type FromWorker =
  | { t: 'ready'; devices: DeviceInfo[] }
  | { t: 'probe'; dev: DeviceInfo }
  | { t: 'remove'; name: string }
  | { t: 'vdpa'; id: number; rc: number; out: string; err: string }
  | { t: 'bound'; id: number; ok: boolean; error?: string; features?: string }
  | { t: 'snapshot'; id: number; queues: QueueSnapshot[]; switchPorts: { name: string; rx: number; tx: number; drops: number }[] }
  | { t: 'note'; message: string }
  | { t: 'error'; message: string };
