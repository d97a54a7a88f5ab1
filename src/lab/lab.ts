// The ring lab runner: runs every point of a sweep for repeated rounds and reports medians with
// their spread, notifications per descriptor, latency percentiles (cross-thread) and ratios
// against baselines where a baseline exists. Runs in Node and in browsers (the same-thread
// engine needs nothing else; cross-thread modes take a runner that owns the workers).

import { VirtioError, Code } from '../errors.ts';
import { Platform } from '../platform/platform.ts';
import { hasSimd } from '../loader/wasm.ts';
import { expandSweep, pointLabel, CROSS_THREAD_MODES, type LabPoint, type LabSweep } from './sweep.ts';
import { sameThreadRig, type LabRun } from './same-thread.ts';

/** Runs one cross-thread point for `rounds` rounds (Node: worker_threads; a page: Web Workers). */
export type CrossThreadRunner = (pt: LabPoint, o: { chains: number; rounds: number; seed: number; spinUs: number }) => Promise<LabRun[]>;

/**
 * A baseline to compare with: returns descriptors per second for a point it can run (same
 * workload, same checks), or null for points it does not cover.
 */
export type LabBaseline = (pt: LabPoint, o: { chains: number; rounds: number }) => number | null;

/** Options of {@link runLab}. */
export interface LabOptions {
  /** The sweep (missing dimensions take {@link DEFAULT_SWEEP}'s single value). */
  sweep: Partial<LabSweep>;
  /** Rounds per point; medians and spread are over them. @default 5 */
  rounds?: number;
  /** Chains per round. @default 200000 (same thread), 50000 (cross thread) */
  chains?: number;
  /** Seed of the workload (completion order); record it to repeat a run. @default 1 */
  seed?: number;
  /** Adaptive mode: µs to spin before sleeping. @default 50 */
  spinUs?: number;
  /** Runs cross-thread points; without it they throw Unsupported. */
  crossThread?: CrossThreadRunner;
  /** Baselines by name (e.g. `js`, `c`): each result gets `ratios[name]` = ours / theirs. */
  baselines?: Record<string, LabBaseline>;
  /** Called before each point (a progress line). */
  onProgress?: (done: number, total: number, pt: LabPoint) => void;
  /** The environment to record. @default what {@link labEnvironment} finds */
  env?: LabEnvironment;
}

/** Median and spread of one metric over the rounds. */
export interface LabStat {
  /** Median. */
  median: number;
  /** Smallest round. */
  min: number;
  /** Largest round. */
  max: number;
}

/** One point's result. */
export interface LabPointResult {
  /** The configuration. */
  point: LabPoint;
  /** Its label. */
  label: string;
  /** Throughput, million descriptors per second. */
  mdps: LabStat;
  /** Time per descriptor, ns. */
  nsPerDesc: LabStat;
  /** Driver kicks per descriptor. */
  kicksPerDesc: LabStat;
  /** Device calls per descriptor. */
  callsPerDesc: LabStat;
  /** Cross-thread batch-1: round-trip latency percentiles, µs. */
  latency?: {
    /** Median. */
    p50: number;
    /** 99th percentile. */
    p99: number;
  };
  /** Ours ÷ baseline throughput, per baseline that covers the point. */
  ratios: Record<string, number>;
}

/** Where and how a result was measured, so two runs can be compared honestly. */
export interface LabEnvironment {
  /** Runtime and version (`node v20.20.2`, or the browser's user agent). */
  runtime: string;
  /** CPU model, when known. */
  cpu: string;
  /** Logical CPUs. */
  cpus: number;
  /** Platform (linux, …). */
  os: string;
  /** 1-minute load average at the start (Node), else -1. */
  load: number;
  /** The ring build: SIMD or plain. */
  simd: boolean;
  /** Shared-memory build (cross-thread points always use it). */
  shared: boolean;
  /** When the run started (ISO 8601). */
  date: string;
}

/** A lab run: what was asked and what was measured. */
export interface LabResult {
  /** Format version of this object. */
  version: 1;
  /** The environment. */
  env: LabEnvironment;
  /** Rounds per point. */
  rounds: number;
  /** Chains per round. */
  chains: number;
  /** Workload seed. */
  seed: number;
  /** The sweep as given. */
  sweep: Partial<LabSweep>;
  /** Results, in sweep order. */
  results: LabPointResult[];
}

/** What this runtime is (best effort, no dependency on Node). */
export function labEnvironment(): LabEnvironment {
  const g = globalThis as unknown as { process?: { version?: string; platform?: string }; navigator?: { userAgent?: string; hardwareConcurrency?: number } };
  return {
    runtime: g.process?.version ? `node ${g.process.version}` : g.navigator?.userAgent ?? 'unknown',
    cpu: 'unknown', cpus: g.navigator?.hardwareConcurrency ?? 1, os: g.process?.platform ?? 'browser', load: -1,
    simd: hasSimd(), shared: false, date: new Date().toISOString(),
  };
}

/** Median, min and max of a non-empty list. */
export function stat(xs: readonly number[]): LabStat {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { median, min: s[0]!, max: s[n - 1]! };
}

/** The q-quantile (0..1) of a list, nearest rank. */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** Summarizes the rounds of one point. */
export function summarize(pt: LabPoint, runs: readonly LabRun[]): LabPointResult {
  const per = (f: (r: LabRun) => number) => stat(runs.map(f));
  const lat = runs.flatMap((r) => r.latUs ?? []);
  return {
    point: pt, label: pointLabel(pt),
    mdps: per((r) => r.descs / r.ms / 1000),
    nsPerDesc: per((r) => (r.ms * 1e6) / r.descs),
    kicksPerDesc: per((r) => r.kicks / r.descs),
    callsPerDesc: per((r) => r.calls / r.descs),
    ...(lat.length ? { latency: { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) } } : {}),
    ratios: {},
  };
}

/**
 * Runs a sweep. Same-thread points run here on one platform; cross-thread points through
 * `crossThread`. A sweep with an impossible point throws InvalidArgument before anything runs.
 */
export async function runLab(o: LabOptions): Promise<LabResult> {
  const points = expandSweep(o.sweep);
  const rounds = o.rounds ?? 5;
  const seed = o.seed ?? 1;
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 1000) throw new VirtioError(Code.InvalidArgument, `rounds ${rounds} must be 1..1000`);
  const cross = points.some((p) => CROSS_THREAD_MODES.includes(p.mode));
  if (cross && !o.crossThread) throw new VirtioError(Code.Unsupported, 'cross-thread modes need a runner (the vdpa-ringlab bin has one for Node)');
  // Same-thread rounds must last milliseconds, not fractions of one: at 30 M desc/s 20 000
  // chains took 0.7 ms and a single preemption or tier-up decided the figure.
  const chains = o.chains ?? (cross ? 50000 : 200000);
  if (!Number.isInteger(chains) || chains < 1) throw new VirtioError(Code.InvalidArgument, `chains ${chains} must be a positive integer`);
  const env = { ...(o.env ?? labEnvironment()), shared: cross || (o.env?.shared ?? false) };
  let platform: Platform | null = null;
  const results: LabPointResult[] = [];
  try {
    for (let i = 0; i < points.length; i++) {
      const pt = points[i]!;
      o.onProgress?.(i, points.length, pt);
      let runs: LabRun[];
      if (pt.mode === 'same-thread') {
        platform ??= Platform.create({ ramSize: 64 << 20, privateSize: 16 << 20 });
        runs = runSame(platform, pt, chains, rounds, seed);
      } else {
        runs = await o.crossThread!(pt, { chains, rounds, seed, spinUs: o.spinUs ?? 50 });
      }
      const r = summarize(pt, runs);
      for (const [name, b] of Object.entries(o.baselines ?? {})) {
        const theirs = b(pt, { chains, rounds });
        if (theirs !== null && theirs > 0) r.ratios[name] = (r.mdps.median * 1e6) / theirs;
      }
      results.push(r);
    }
  } finally {
    // The platform's memory is dropped with it; nothing else to free.
    platform = null;
  }
  o.onProgress?.(points.length, points.length, points[points.length - 1]!);
  return { version: 1, env, rounds, chains, seed, sweep: o.sweep, results };
}

function runSame(platform: Platform, pt: LabPoint, chains: number, rounds: number, seed: number): LabRun[] {
  const rig = sameThreadRig(platform, pt, seed);
  try {
    rig.run(Math.min(chains, 50000)); // warm-up: JIT tiers (wasm Liftoff → TurboFan), caches
    const runs: LabRun[] = [];
    for (let r = 0; r < rounds; r++) runs.push(rig.run(chains));
    return runs;
  } finally {
    rig.free();
  }
}
