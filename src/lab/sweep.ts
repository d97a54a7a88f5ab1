// The ring lab's sweep: the dimensions a ring designer varies (Linux tools/virtio/ringtest varies
// the ring design, the batch and the host/guest CPUs), the presets that answer the usual
// questions, and the expansion of a sweep into points. Pure data: no timing, no memory.

import { VirtioError, Code } from '../errors.ts';
import { checkQueueSize, type Layout } from '../ring/queue-base.ts';

/** How driver and device run against each other. */
export type LabMode =
  /** Both sides in the calling thread, taking turns (kicks and calls are function calls). */
  | 'same-thread'
  /** Driver and device in two workers; both spin on the ring and never sleep (kicks suppressed). */
  | 'poll'
  /** Two workers; an idle side sleeps at once (Atomics.wait) and is woken by a doorbell. */
  | 'wait'
  /** Two workers; an idle side spins for `spinUs`, then arms notifications and sleeps. */
  | 'adaptive';

/** The modes that need workers. */
export const CROSS_THREAD_MODES: readonly LabMode[] = ['poll', 'wait', 'adaptive'];

/** One measured configuration. */
export interface LabPoint {
  /** Ring layout (VIRTIO 1.3 §2.7 split, §2.8 packed). */
  layout: Layout;
  /** VIRTIO_F_EVENT_IDX negotiated (split: used_event/avail_event; packed: DESC event suppression). */
  eventIdx: boolean;
  /** VIRTIO_F_IN_ORDER negotiated: the device returns one used entry per pass (§2.7.9, §2.8.10). */
  inOrder: boolean;
  /**
   * The order the device completes each pass in: pop order, or a seeded shuffle (same-thread
   * only; needs inOrder off — sweeps leave out the IN_ORDER + shuffled combination).
   */
  completion: 'in-order' | 'shuffled';
  /** VIRTIO_F_INDIRECT_DESC negotiated (the driver puts chains of > 1 buffer in a table, as Linux does). */
  indirect: boolean;
  /** Queue size (descriptors). */
  queueSize: number;
  /** Chains the driver adds per submit (and the device takes per pass). */
  batch: number;
  /** Descriptors (buffers) per chain. */
  chainLen: number;
  /** Bytes per chain (split evenly over its buffers, at least one byte each). */
  payload: number;
  /** The device copies each chain's payload out of driver memory (else it only validates and returns it). */
  copy: boolean;
  /** How the two sides run. */
  mode: LabMode;
}

/** A sweep: every dimension a list; the points are their cartesian product. */
export type LabSweep = { [K in keyof LabPoint]: readonly LabPoint[K][] };

/** The sweep a preset runs, with what it answers. */
export interface LabPreset {
  /** Preset name (`vdpa-ringlab --preset NAME`). */
  name: string;
  /** The question it answers. */
  question: string;
  /** The dimension on the x axis of its charts. */
  x: keyof LabPoint;
  /** The sweep. */
  sweep: LabSweep;
}

/** Defaults of every dimension: one point. */
export const DEFAULT_SWEEP: LabSweep = {
  layout: ['split'], eventIdx: [true], inOrder: [false], completion: ['in-order'], indirect: [false], queueSize: [256],
  batch: [32], chainLen: [1], payload: [64], copy: [false], mode: ['same-thread'],
};

const BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/** The presets. */
export const PRESETS: readonly LabPreset[] = [
  {
    name: 'event-idx', question: 'What does EVENT_IDX save at each batch size?', x: 'batch',
    sweep: { ...DEFAULT_SWEEP, layout: ['split', 'packed'], eventIdx: [false, true], batch: BATCHES },
  },
  {
    name: 'split-vs-packed', question: 'Split vs packed across queue sizes', x: 'queueSize',
    sweep: { ...DEFAULT_SWEEP, layout: ['split', 'packed'], queueSize: [16, 64, 256, 1024, 4096], batch: [16], copy: [false, true] },
  },
  {
    name: 'in-order', question: 'In-order vs out-of-order completion', x: 'batch',
    sweep: { ...DEFAULT_SWEEP, layout: ['split', 'packed'], inOrder: [false, true], completion: ['in-order', 'shuffled'], batch: [1, 4, 16, 64, 256] },
  },
  {
    name: 'indirect', question: 'What do indirect tables cost or save for multi-buffer chains?', x: 'chainLen',
    sweep: { ...DEFAULT_SWEEP, layout: ['split', 'packed'], indirect: [false, true], chainLen: [1, 2, 4, 8], payload: [512] },
  },
  {
    name: 'cross-thread', question: 'What does crossing a thread cost?', x: 'batch',
    sweep: { ...DEFAULT_SWEEP, mode: ['same-thread', 'poll', 'adaptive', 'wait'], batch: [1, 8, 32, 128] },
  },
];

/** The preset called `name`. Throws VirtioError(NotFound) naming the presets there are. */
export function preset(name: string): LabPreset {
  const p = PRESETS.find((x) => x.name === name);
  if (!p) throw new VirtioError(Code.NotFound, `no preset ${JSON.stringify(name)}; presets: ${PRESETS.map((x) => x.name).join(', ')}`);
  return p;
}

const KEYS = Object.keys(DEFAULT_SWEEP) as (keyof LabPoint)[];

/**
 * The points of a sweep, in a stable order (the last dimension varies fastest). Every point is
 * checked (queue size legal for its layout, batch ≤ queue size, a chain fits the queue or an
 * indirect table, payload ≥ chainLen): a sweep with an impossible point throws
 * VirtioError(InvalidArgument) naming it, before anything runs.
 */
export function expandSweep(s: Partial<LabSweep>): LabPoint[] {
  const full = { ...DEFAULT_SWEEP, ...s } as LabSweep;
  for (const k of KEYS) {
    const v = full[k];
    if (!Array.isArray(v) || v.length === 0) throw new VirtioError(Code.InvalidArgument, `sweep dimension ${k} must be a non-empty list`);
  }
  let pts: Partial<LabPoint>[] = [{}];
  for (const k of KEYS) {
    const next: Partial<LabPoint>[] = [];
    for (const p of pts) for (const v of full[k] as readonly unknown[]) next.push({ ...p, [k]: v });
    pts = next;
  }
  // IN_ORDER forbids completing out of order: that combination is not a point of any sweep.
  const out = (pts as LabPoint[]).filter((p) => !(p.inOrder && p.completion === 'shuffled'));
  out.forEach(checkPoint);
  return out;
}

/** Checks one point; throws VirtioError(InvalidArgument). */
export function checkPoint(p: LabPoint): void {
  const bad = (why: string): never => {
    throw new VirtioError(Code.InvalidArgument, `lab point ${pointLabel(p)}: ${why}`);
  };
  if (p.layout !== 'split' && p.layout !== 'packed') bad(`layout ${String(p.layout)} is not split or packed`);
  for (const k of ['eventIdx', 'inOrder', 'indirect', 'copy'] as const) if (typeof p[k] !== 'boolean') bad(`${k} must be true or false`);
  if (p.completion !== 'in-order' && p.completion !== 'shuffled') bad(`completion ${String(p.completion)} is not in-order or shuffled`);
  if (p.inOrder && p.completion === 'shuffled') bad('VIRTIO_F_IN_ORDER forbids shuffled completion');
  if (p.mode !== 'same-thread' && p.completion === 'shuffled') bad('shuffled completion runs in the same thread only');
  if (p.mode !== 'same-thread' && (p.chainLen !== 1 || p.indirect)) bad('cross-thread modes run 1-descriptor chains without indirect tables');
  if (!['same-thread', ...CROSS_THREAD_MODES].includes(p.mode)) bad(`mode ${String(p.mode)} is not one of same-thread, ${CROSS_THREAD_MODES.join(', ')}`);
  try {
    checkQueueSize(p.queueSize, p.layout === 'packed');
  } catch (e) {
    bad((e as Error).message);
  }
  const int = (v: number, lo: number, hi: number, what: string) => {
    if (!Number.isInteger(v) || v < lo || v > hi) bad(`${what} ${v} is outside ${lo}..${hi}`);
  };
  int(p.batch, 1, p.queueSize, 'batch');
  int(p.chainLen, 1, 64, 'chainLen');
  int(p.payload, p.chainLen, 1 << 20, 'payload');
  // Without indirect tables a chain takes chainLen descriptors: a full batch must fit the ring.
  const descPerChain = p.indirect && p.chainLen > 1 ? 1 : p.chainLen;
  if (descPerChain > p.queueSize) bad(`a ${p.chainLen}-buffer chain does not fit a size-${p.queueSize} queue without indirect tables`);
}

/** A short label: `split evt q256 b32 c1 64B`, with the options that are on. */
export function pointLabel(p: LabPoint): string {
  return [
    p.layout, p.eventIdx ? 'evt' : 'flags', p.inOrder ? 'in-order' : null, p.completion === 'shuffled' ? 'shuffled' : null, p.indirect ? 'indirect' : null,
    `q${p.queueSize}`, `b${p.batch}`, `c${p.chainLen}`, `${p.payload}B`, p.copy ? 'copy' : null,
    p.mode === 'same-thread' ? null : p.mode,
  ].filter((x) => x !== null).join(' ');
}

/** The dimensions that take more than one value among `points`, in sweep order. */
export function varyingKeys(points: readonly LabPoint[]): (keyof LabPoint)[] {
  return KEYS.filter((k) => new Set(points.map((p) => p[k])).size > 1);
}

/**
 * The "design" of a point for charts and tables: its values of the `keys` dimensions (those the
 * sweep varies) except `x`, so a chart draws one line per design against x.
 */
export function designLabel(p: LabPoint, keys: readonly (keyof LabPoint)[], x?: keyof LabPoint): string {
  const parts: string[] = [];
  for (const k of keys) {
    if (k === x) continue;
    const v = p[k];
    parts.push(typeof v === 'boolean' ? (v ? k : `no ${k}`) : k === 'layout' || k === 'mode' ? String(v) : `${k} ${v}`);
  }
  return parts.join(', ') || 'all';
}

/** A seeded generator (mulberry32): the lab's workloads are deterministic for a seed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
