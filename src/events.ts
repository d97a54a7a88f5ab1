// Typed events. The package's event targets dispatch CustomEvents whose `detail` type depends
// on the event name: each has an event map here (name → detail type), and its
// addEventListener / removeEventListener get overloads typed by that map (as lib.dom types
// HTMLElement's events), merged into the class by module augmentation so the classes' own
// files stay as they are. Other event names keep EventTarget's untyped signature.

import type { VirtioError } from './errors.ts';
import type { NeedsResetDetail } from './devices/sim-core.ts';

// EventTarget's own parameter types, taken from EventTarget itself: lib.dom names them
// EventListenerOrEventListenerObject / AddEventListenerOptions, @types/node keeps them local.
/** Any listener EventTarget takes (EventListenerOrEventListenerObject in lib.dom). */
export type AnyEventListener = Parameters<EventTarget['addEventListener']>[1];
/** The options of EventTarget.addEventListener. */
export type AddListenerOptions = Parameters<EventTarget['addEventListener']>[2];
/** The options of EventTarget.removeEventListener. */
export type RemoveListenerOptions = Parameters<EventTarget['removeEventListener']>[2];

/** A listener for a CustomEvent whose detail is `D`: a function or an object with handleEvent. */
export type DetailListener<D> = ((ev: CustomEvent<D>) => void) | {
  /** Called with each event. */
  handleEvent(ev: CustomEvent<D>): void;
};

/** The events of a {@link VdpaBus}: the detail is the device's or management device's name. */
export interface VdpaBusEventMap {
  /** A management device was registered. */
  'mgmtdev-add': string;
  /** A management device was unregistered (after its devices were deleted). */
  'mgmtdev-remove': string;
  /** A device was added to the bus. */
  'device-add': string;
  /** A device was removed from the bus. */
  'device-remove': string;
  /** A bus driver was bound to a device. */
  bind: string;
  /** A device's bus driver was unbound. */
  unbind: string;
}

/** The events of a simulated device ({@link VdpaSim}). */
export interface VdpaSimEventMap {
  /** A driver broke a ring: the device set DEVICE_NEEDS_RESET. */
  'needs-reset': NeedsResetDetail;
  /** The driver wrote the status: the status the device accepted. */
  status: number;
  /** The config space changed: its new generation. */
  config: number;
}

/** The events of a {@link VirtioNetDriver}. */
export interface VirtioNetDriverEventMap {
  /** A received frame (without the virtio-net header). */
  frame: Uint8Array;
  /** The link went up (true) or down (false). */
  link: boolean;
  /** The device needs a reset (call reset()), or restoring the control state failed. */
  error: VirtioError;
}

/** The events of a {@link VirtioBlkDriver}. */
export interface VirtioBlkDriverEventMap {
  /** The device needs a reset: every request failed; call reset(). */
  error: VirtioError;
}

declare module './bus/bus.ts' {
  interface VdpaBus {
    /** Listens for one of the {@link VdpaBusEventMap} events: the listener gets a CustomEvent with its detail. */
    addEventListener<K extends keyof VdpaBusEventMap>(type: K, listener: DetailListener<VdpaBusEventMap[K]> | null, options?: AddListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    addEventListener(type: string, listener: AnyEventListener, options?: AddListenerOptions): void;
    /** Stops listening for one of the {@link VdpaBusEventMap} events. */
    removeEventListener<K extends keyof VdpaBusEventMap>(type: K, listener: DetailListener<VdpaBusEventMap[K]> | null, options?: RemoveListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    removeEventListener(type: string, listener: AnyEventListener, options?: RemoveListenerOptions): void;
  }
}

declare module './devices/sim-core.ts' {
  interface VdpaSim {
    /** Listens for one of the {@link VdpaSimEventMap} events: the listener gets a CustomEvent with its detail. */
    addEventListener<K extends keyof VdpaSimEventMap>(type: K, listener: DetailListener<VdpaSimEventMap[K]> | null, options?: AddListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    addEventListener(type: string, listener: AnyEventListener, options?: AddListenerOptions): void;
    /** Stops listening for one of the {@link VdpaSimEventMap} events. */
    removeEventListener<K extends keyof VdpaSimEventMap>(type: K, listener: DetailListener<VdpaSimEventMap[K]> | null, options?: RemoveListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    removeEventListener(type: string, listener: AnyEventListener, options?: RemoveListenerOptions): void;
  }
}

declare module './drivers/virtio-net.ts' {
  interface VirtioNetDriver {
    /** Listens for one of the {@link VirtioNetDriverEventMap} events: the listener gets a CustomEvent with its detail. */
    addEventListener<K extends keyof VirtioNetDriverEventMap>(type: K, listener: DetailListener<VirtioNetDriverEventMap[K]> | null, options?: AddListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    addEventListener(type: string, listener: AnyEventListener, options?: AddListenerOptions): void;
    /** Stops listening for one of the {@link VirtioNetDriverEventMap} events. */
    removeEventListener<K extends keyof VirtioNetDriverEventMap>(type: K, listener: DetailListener<VirtioNetDriverEventMap[K]> | null, options?: RemoveListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    removeEventListener(type: string, listener: AnyEventListener, options?: RemoveListenerOptions): void;
  }
}

declare module './drivers/virtio-blk.ts' {
  interface VirtioBlkDriver {
    /** Listens for one of the {@link VirtioBlkDriverEventMap} events: the listener gets a CustomEvent with its detail. */
    addEventListener<K extends keyof VirtioBlkDriverEventMap>(type: K, listener: DetailListener<VirtioBlkDriverEventMap[K]> | null, options?: AddListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    addEventListener(type: string, listener: AnyEventListener, options?: AddListenerOptions): void;
    /** Stops listening for one of the {@link VirtioBlkDriverEventMap} events. */
    removeEventListener<K extends keyof VirtioBlkDriverEventMap>(type: K, listener: DetailListener<VirtioBlkDriverEventMap[K]> | null, options?: RemoveListenerOptions): void;
    /** EventTarget's own signature, for any other event name. */
    removeEventListener(type: string, listener: AnyEventListener, options?: RemoveListenerOptions): void;
  }
}
