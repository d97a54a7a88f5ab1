// Builds and runs the native C baseline of the virtio ring round trip (bench/native/ring.c,
// VIRTIO 1.3 §2.7 split / §2.8 packed) and returns its descriptors-per-second figures.
//
// Run directly for a table:  node --import tsx bench/native/run.ts [seconds-per-combination]

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One measured combination. */
export interface NativeResult {
  layout: 'split' | 'packed';
  batch: number;
  copy: boolean;
  /** Descriptors per second over the timed window (after a warm-up). */
  descPerSec: number;
}

/** The full JSON line ring.c prints per combination. */
interface RingLine extends NativeResult {
  descs: number;
  seconds: number;
  iterations: number;
  checksum: number;
}

const LAYOUTS = ['split', 'packed'] as const;
const BATCHES = [1, 32, 256] as const;
// Next to this file when run from source; from the repository root when run compiled (build/js).
const LOCAL_SOURCE = fileURLToPath(new URL('./ring.c', import.meta.url));
const SOURCE = existsSync(LOCAL_SOURCE) ? LOCAL_SOURCE : resolve('bench/native/ring.c');

/**
 * Compiles ring.c with the system `cc` into a temporary directory, runs its self-test, then runs
 * it once per layout × batch (1, 32, 256) × copy combination, each for `seconds` (default 0.3)
 * after a 0.1 s warm-up, timed by `clock` (wall: CLOCK_MONOTONIC, the default; cpu: the process's
 * CPU time, CLOCK_PROCESS_CPUTIME_ID). Returns `{ skipped }` if `cc` is missing or the build fails; throws if
 * the program reports a failed self-test or protocol error (a bug, not an environment problem).
 */
export function runNative(opts: { seconds?: number; clock?: 'wall' | 'cpu' } = {}): NativeResult[] | { skipped: string } {
  const seconds = opts.seconds ?? 0.3;
  const clock = opts.clock ?? 'wall';
  if (!(seconds > 0 && seconds <= 60)) throw new RangeError(`seconds must be in (0, 60], got ${seconds}`);

  const probe = spawnSync('cc', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    return { skipped: `no C compiler: 'cc --version' ${probe.error ? `failed (${probe.error.message})` : `exited ${probe.status}`}` };
  }

  const dir = mkdtempSync(join(tmpdir(), 'vdpa-ring-'));
  try {
    const exe = join(dir, 'ring');
    const build = spawnSync('cc', ['-O2', '-std=c11', '-o', exe, SOURCE], { encoding: 'utf8' });
    if (build.error || build.status !== 0) {
      const why = build.error?.message ?? build.stderr.trim().split('\n').slice(0, 5).join(' | ');
      return { skipped: `cc failed to build ring.c: ${why}` };
    }

    const self = spawnSync(exe, ['--selftest'], { encoding: 'utf8', timeout: 60_000 });
    if (self.status !== 0) {
      throw new Error(`ring --selftest failed (${self.status ?? self.signal}): ${self.stderr.trim() || self.stdout.trim()}`);
    }

    const results: NativeResult[] = [];
    for (const layout of LAYOUTS) {
      for (const batch of BATCHES) {
        for (const copy of [false, true]) {
          // One process per combination, so one run's heap and caches do not shape the next.
          const args = ['--seconds', String(seconds), '--clock', clock, '--layout', layout, '--batch', String(batch), '--copy', copy ? '1' : '0'];
          const r = spawnSync(exe, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
          if (r.error || r.status !== 0) {
            throw new Error(`ring ${args.join(' ')} failed (${r.error?.message ?? r.status}): ${r.stderr.trim()}`);
          }
          const line = parseLine(r.stdout, layout, batch, copy);
          results.push({ layout: line.layout, batch: line.batch, copy: line.copy, descPerSec: line.descPerSec });
        }
      }
    }
    return results;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Parses the single JSON line of one run and checks it answers the question asked. */
function parseLine(stdout: string, layout: string, batch: number, copy: boolean): RingLine {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) throw new Error(`ring printed ${lines.length} lines, expected 1: ${stdout}`);
  const v = JSON.parse(lines[0]!) as RingLine;
  if (v.layout !== layout || v.batch !== batch || v.copy !== copy || !(v.descPerSec > 0)) {
    throw new Error(`unexpected ring output for ${layout}/${batch}/${copy}: ${lines[0]}`);
  }
  return v;
}

// Direct run: print a table.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const seconds = process.argv[2] !== undefined ? Number(process.argv[2]) : undefined;
  const out = runNative(seconds !== undefined ? { seconds } : {});
  if ('skipped' in out) {
    console.log(`native baseline skipped: ${out.skipped}`);
  } else {
    for (const r of out) {
      const name = `${r.layout.padEnd(6)} batch ${String(r.batch).padStart(3)} ${r.copy ? 'copy  ' : 'nocopy'}`;
      console.log(`${name} ${(r.descPerSec / 1e6).toFixed(1).padStart(7)} M desc/s`);
    }
  }
}
