// Seeded fuzzing for node:test suites: every fuzz test takes its seed and case count from here,
// so `npm test` runs a bounded number of cases and `npm run fuzz -- --seed S --cases N` runs long.
//   VDPA_FUZZ_SEED   base seed (default: fixed, so CI is reproducible)
//   VDPA_FUZZ_CASES  total cases per target (overrides the default count; `--cases N`)
//   VDPA_FUZZ_CASES_SCALE  multiplier over each target's default case count (default 1)
//   VDPA_FUZZ_CASE   run only this case index of each target (to reproduce one failure)
// A failing case throws with the target, seed and case index in the message and a command that
// re-runs exactly that case (each case's Rand depends only on the seed, the target and the index).

import { rng } from './builds.ts';

/** The base seed of this run. */
export const FUZZ_SEED: number = Number(process.env.VDPA_FUZZ_SEED ?? 0x5eed) >>> 0;

/** How many times each target's default case count to run. */
export const FUZZ_SCALE: number = Math.max(0, Number(process.env.VDPA_FUZZ_CASES_SCALE ?? 1));

/** Explicit total case count per target (overrides the scale), from `--cases N`. */
const FUZZ_CASES: number | null = process.env.VDPA_FUZZ_CASES ? Number(process.env.VDPA_FUZZ_CASES) : null;

/** A seeded random source with the helpers fuzz targets need. */
export interface Rand {
  /** [0, 1). */
  (): number;
  /** Integer in [0, n). */
  int(n: number): number;
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number;
  /** True with probability p. */
  chance(p: number): boolean;
  /** One element of a non-empty array. */
  pick<T>(a: readonly T[]): T;
  /** n random bytes. */
  bytes(n: number): Uint8Array;
}

/** A Rand from a seed. */
export function makeRand(seed: number): Rand {
  const f = rng(seed) as Rand;
  f.int = (n) => Math.floor(f() * n);
  f.range = (lo, hi) => lo + Math.floor(f() * (hi - lo + 1));
  f.chance = (p) => f() < p;
  f.pick = (a) => a[Math.floor(f() * a.length)]!;
  f.bytes = (n) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (f() * 256) | 0;
    return b;
  };
  return f;
}

/** Only this case index runs (VDPA_FUZZ_CASE), or null for all. */
const ONLY_CASE: number | null = process.env.VDPA_FUZZ_CASE ? Number(process.env.VDPA_FUZZ_CASE) : null;

/** Prints a target's seed and case count when it starts (only when run long or one case). */
function announce(target: string, n: number): void {
  if (FUZZ_CASES !== null || ONLY_CASE !== null || FUZZ_SCALE !== 1) {
    console.log(`fuzz ${target}: seed ${FUZZ_SEED}, ${ONLY_CASE !== null ? `case ${ONLY_CASE} only` : `${n} cases`}`);
  }
}

/** The case indices to run of a target with n cases. */
function caseRange(n: number): [number, number] {
  if (ONLY_CASE !== null && Number.isInteger(ONLY_CASE) && ONLY_CASE >= 0) return [ONLY_CASE, ONLY_CASE + 1];
  return [0, n];
}

/** Case count for a target whose default (in `npm test`) is `defaultCases`. */
export function fuzzCases(defaultCases: number): number {
  if (FUZZ_CASES !== null && Number.isFinite(FUZZ_CASES)) return Math.max(1, Math.floor(FUZZ_CASES));
  return Math.max(1, Math.round(defaultCases * FUZZ_SCALE));
}

/**
 * Runs `body` once per case with its own Rand (seeded from the base seed, the target name and
 * the case index). A failure is rethrown naming target, seed and case so it reproduces with
 * VDPA_FUZZ_SEED=<seed> and the same case count.
 */
export function fuzz(target: string, defaultCases: number, body: (r: Rand, i: number) => void): number {
  const n = fuzzCases(defaultCases);
  announce(target, n);
  const [from, to] = caseRange(n);
  for (let i = from; i < to; i++) {
    const r = caseRand(target, i);
    try {
      body(r, i);
    } catch (e) {
      throw caseError(target, i, e);
    }
  }
  return n;
}

/** The async twin of {@link fuzz}. */
export async function fuzzAsync(target: string, defaultCases: number, body: (r: Rand, i: number) => Promise<void>): Promise<number> {
  const n = fuzzCases(defaultCases);
  announce(target, n);
  const [from, to] = caseRange(n);
  for (let i = from; i < to; i++) {
    const r = caseRand(target, i);
    try {
      await body(r, i);
    } catch (e) {
      throw caseError(target, i, e);
    }
  }
  return n;
}

/** The Rand of case i of a target: seeded from the base seed, the target's name and i. */
export function caseRand(target: string, i: number): Rand {
  let h = FUZZ_SEED ^ 0x9e3779b9;
  for (let k = 0; k < target.length; k++) h = Math.imul(h ^ target.charCodeAt(k), 0x01000193) >>> 0;
  return makeRand((h + Math.imul(i, 0x85ebca6b)) >>> 0 || 1);
}

function caseError(target: string, i: number, e: unknown): Error {
  const file = process.argv.find((a) => /\.test\.[cm]?[jt]s$/.test(a)) ?? 'test/fuzz-*.test.ts';
  return new Error(
    `fuzz ${target}: case ${i} failed (VDPA_FUZZ_SEED=${FUZZ_SEED}): ${(e as Error).message}\n` +
      `  reproduce: VDPA_FUZZ_SEED=${FUZZ_SEED} VDPA_FUZZ_CASE=${i} node --import tsx --test ${file}`,
    { cause: e },
  );
}
