// What a VMM's guest-facing virtio function is bound to: a stable handle whose device can be
// swapped (the source before a migration, the destination after), as QEMU re-points its
// virtio-pci function at a new vhost-vdpa backend. Drivers bind to the handle; callbacks they
// install (used-buffer and config callbacks) move with it.

import type { VdpaSim } from '../devices/sim-core.ts';
import type { VdpaDevice } from '../bus/bus.ts';

/** A swappable binding to any vdpa device (a RemoteVdpaDevice, say): see {@link createVdpaSlot}. */
export interface VdpaSlot<T extends VdpaDevice> {
  /** The handle to give drivers: behaves as the current device. */
  readonly device: T;
  /** The device behind the handle now. */
  readonly current: T;
  /**
   * Installs the callbacks set through the handle on `next` ahead of a switch (a fresh device
   * never runs them before it is resumed), so the switch itself makes no call per queue. A
   * reset of `next` clears them (as any reset clears queue callbacks): prepare it again.
   */
  prepare(next: T): void;
  /**
   * Puts `next` behind the handle: the callbacks set through it move to `next` (unless prepared)
   * and leave the old device — at once, or with `{ keepOld: true }` when {@link detach} is called.
   */
  switchTo(next: T, opts?: { keepOld?: boolean }): void;
  /** Clears the callbacks set through the handle from `old` (a device switched away from). */
  detach(old: T): void;
}

/**
 * A slot over `initial` (createSlot for any VdpaDevice): drivers bind to `device`; the
 * used-buffer and config callbacks they install move with {@link VdpaSlot.switchTo}.
 */
export function createVdpaSlot<T extends VdpaDevice>(initial: T): VdpaSlot<T> {
  let cur = initial;
  const vqCbs = new Map<number, (() => void) | null>();
  let cfgCb: (() => void) | null | undefined;
  // Methods of the current device, bound once per device (the driver calls through the handle
  // on every kick and completion: no bound function per call).
  let bound = new Map<PropertyKey, unknown>();
  const setVqCb = (idx: number, cb: (() => void) | null) => { cur.setVqCb(idx, cb); vqCbs.set(idx, cb); };
  const setConfigCb = (cb: (() => void) | null) => { cur.setConfigCb(cb); cfgCb = cb; };
  const device = new Proxy(initial, {
    get(_t, key) {
      if (key === 'setVqCb') return setVqCb;
      if (key === 'setConfigCb') return setConfigCb;
      const v: unknown = Reflect.get(cur, key, cur);
      if (typeof v !== 'function') return v;
      let b = bound.get(key);
      if (b === undefined || (b as { fn?: unknown }).fn !== v) {
        const f = (v as (...a: unknown[]) => unknown).bind(cur);
        b = Object.assign(f, { fn: v });
        bound.set(key, b);
      }
      return b;
    },
  });
  const quiet = (f: () => void): void => {
    try {
      f();
    } catch {
      /* the old device is gone: it has no callbacks left to clear */
    }
  };
  let prepared: T | null = null;
  const install = (next: T): void => {
    for (const [i, cb] of vqCbs) next.setVqCb(i, cb);
    if (cfgCb !== undefined) next.setConfigCb(cfgCb);
  };
  const detach = (old: T): void => {
    for (const i of vqCbs.keys()) quiet(() => old.setVqCb(i, null));
    if (cfgCb !== undefined) quiet(() => old.setConfigCb(null));
  };
  return {
    device,
    get current() { return cur; },
    prepare(next: T) {
      install(next);
      prepared = next;
    },
    switchTo(next: T, opts: { keepOld?: boolean } = {}) {
      const old = cur;
      if (prepared !== next) install(next);
      prepared = null;
      if (cur !== next) bound = new Map();
      cur = next;
      if (!opts.keepOld && old !== next) detach(old);
    },
    detach,
  };
}

/** A slot over a simulator device (the in-thread migrations' form of {@link VdpaSlot}). */
export type DeviceSlot<T extends VdpaSim> = VdpaSlot<T>;

/** A slot over `initial`: {@link createVdpaSlot} for a simulator device. */
export function createSlot<T extends VdpaSim>(initial: T): DeviceSlot<T> {
  return createVdpaSlot(initial);
}
