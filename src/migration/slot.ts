// What a VMM's guest-facing virtio function is bound to: a stable handle whose device can be
// swapped (the source before a migration, the destination after), as QEMU re-points its
// virtio-pci function at a new vhost-vdpa backend. Drivers bind to the handle; callbacks they
// install (used-buffer and config callbacks) move with it.

import type { VdpaSim } from '../devices/sim-core.ts';

/** A swappable binding to a device (see {@link createSlot}). */
export interface DeviceSlot<T extends VdpaSim> {
  /** The handle to give drivers: behaves as the current device. */
  readonly device: T;
  /** The device behind the handle now. */
  readonly current: T;
  /** Puts `next` behind the handle: the callbacks set through it move to `next`, and leave the old device. */
  switchTo(next: T): void;
}

/** A slot over `initial`. */
export function createSlot<T extends VdpaSim>(initial: T): DeviceSlot<T> {
  let cur = initial;
  const vqCbs = new Map<number, (() => void) | null>();
  let cfgCb: (() => void) | null | undefined;
  const device = new Proxy(initial, {
    get(_t, key) {
      if (key === 'setVqCb') return (idx: number, cb: (() => void) | null) => { cur.setVqCb(idx, cb); vqCbs.set(idx, cb); };
      if (key === 'setConfigCb') return (cb: (() => void) | null) => { cur.setConfigCb(cb); cfgCb = cb; };
      const v: unknown = Reflect.get(cur, key, cur);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(cur) : v;
    },
  });
  return {
    device,
    get current() { return cur; },
    switchTo(next: T) {
      for (const [i, cb] of vqCbs) {
        next.setVqCb(i, cb);
        if (!cur.isDestroyed) cur.setVqCb(i, null);
      }
      if (cfgCb !== undefined) {
        next.setConfigCb(cfgCb);
        if (!cur.isDestroyed) cur.setConfigCb(null);
      }
      cur = next;
    },
  };
}
