// Per-virtqueue state that survives migration: Linux struct vdpa_vq_state (split: the avail
// index; packed: last avail/used index with their wrap counters), as plain versioned data.

import { VirtioError, Code } from '../errors.ts';
import type { Layout } from './queue-base.ts';

/** Split ring position. usedIndex is optional on restore (then = availIndex, as vdpa_sim). */
export interface SplitVqState {
  /** Format version of this record (1). */
  version: 1;
  /** The ring layout the state is for. */
  layout: 'split';
  /** Queue size the state is for. */
  size: number;
  /** last_avail_idx: the next avail ring entry the device reads (free-running u16). */
  availIndex: number;
  /** The device's used->idx (free-running u16). */
  usedIndex?: number;
}

/** Packed ring position (struct vdpa_vq_state_packed). */
export interface PackedVqState {
  /** Format version of this record (1). */
  version: 1;
  /** The ring layout the state is for. */
  layout: 'packed';
  /** Queue size the state is for. */
  size: number;
  /** Next descriptor slot the device reads. */
  lastAvailIdx: number;
  /** Device's avail wrap counter. */
  lastAvailWrap: 0 | 1;
  /** Next descriptor slot the device writes used. */
  lastUsedIdx: number;
  /** Device's used wrap counter. */
  lastUsedWrap: 0 | 1;
}

/** A virtqueue's migratable position. */
export type VqState = SplitVqState | PackedVqState;

function u16(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff) throw new VirtioError(Code.InvalidArgument, `${name} ${String(v)} must be a u16`);
  return v;
}

function bit(v: unknown, name: string): 0 | 1 {
  if (v !== 0 && v !== 1) throw new VirtioError(Code.InvalidArgument, `${name} ${String(v)} must be 0 or 1`);
  return v;
}

/** Validates a state for a queue of this layout and size; returns it typed. */
export function checkVqState(s: unknown, layout: Layout, size: number): VqState {
  if (typeof s !== 'object' || s === null) throw new VirtioError(Code.InvalidArgument, 'vq state must be an object');
  const o = s as Record<string, unknown>;
  if (o.version !== 1) throw new VirtioError(Code.InvalidArgument, `vq state version ${String(o.version)} is not 1`);
  if (o.layout !== layout) throw new VirtioError(Code.InvalidArgument, `vq state is for a ${String(o.layout)} ring, the queue is ${layout}`);
  if (o.size !== size) throw new VirtioError(Code.InvalidArgument, `vq state is for size ${String(o.size)}, the queue has ${size}`);
  if (layout === 'split') {
    const a = u16(o.availIndex, 'availIndex');
    const u = o.usedIndex === undefined ? a : u16(o.usedIndex, 'usedIndex');
    // The device can only have used what it consumed: 0 <= avail - used <= size (mod 2^16).
    if (((a - u) & 0xffff) > size) throw new VirtioError(Code.InvalidArgument, `usedIndex ${u} is not within ${size} behind availIndex ${a}`);
    return { version: 1, layout, size, availIndex: a, usedIndex: u };
  }
  const ai = u16(o.lastAvailIdx, 'lastAvailIdx');
  const ui = u16(o.lastUsedIdx, 'lastUsedIdx');
  if (ai >= size || ui >= size) throw new VirtioError(Code.InvalidArgument, `packed indices must be < size ${size}`);
  return { version: 1, layout, size, lastAvailIdx: ai, lastAvailWrap: bit(o.lastAvailWrap, 'lastAvailWrap'), lastUsedIdx: ui, lastUsedWrap: bit(o.lastUsedWrap, 'lastUsedWrap') };
}
