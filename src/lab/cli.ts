// `vdpa-ringlab`: the ring lab from the command line (Node). Sweeps, presets, a progress line,
// a table, --json/--csv for notebooks, --svg/--html charts, and `compare A.json B.json`.
//
//   vdpa-ringlab --preset event-idx
//   vdpa-ringlab --layout split,packed --batch 1,32,256 --copy on,off --json out.json
//   vdpa-ringlab --preset cross-thread --html xthread.html
//   vdpa-ringlab compare before.json after.json

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { VirtioError } from '../errors.ts';
import { PRESETS, preset, DEFAULT_SWEEP, CROSS_THREAD_MODES, expandSweep, pointLabel, type LabPoint, type LabSweep } from './sweep.ts';
import { runLab, type LabBaseline, type LabResult } from './lab.ts';
import { formatTable, toCsv, toJson, charts, toHtml, compare, parseResult } from './report.ts';
import { nodeCrossThreadRunner, nodeLabEnvironment } from './node-runner.ts';

/** Where the CLI writes (tests capture it). */
export interface LabIo {
  /** Standard output. */
  out(s: string): void;
  /** Standard error (the progress line, errors). */
  err(s: string): void;
  /** True if stderr is a terminal (the progress line redraws in place). */
  tty?: boolean;
  /** Baselines to report ratios against (the repo's `npm run lab` passes the bench's). */
  baselines?: Record<string, LabBaseline>;
}

/** Usage text. */
export const LAB_USAGE = `usage: vdpa-ringlab [OPTIONS]            run a sweep (default: one point)
       vdpa-ringlab compare A.json B.json  two result files side by side, with B ÷ A
       vdpa-ringlab presets                 list the presets

sweep (comma-separated lists; on/off for switches):
  --preset NAME        ${PRESETS.map((p) => p.name).join(', ')} (options below override its lists)
  --layout L           split, packed                 --event-idx on,off
  --in-order on,off    (VIRTIO_F_IN_ORDER: one used entry per pass)
  --completion in-order,shuffled   (shuffled: seeded by --seed; same thread, without IN_ORDER)
  --indirect on,off    --queue-size N,…   --batch N,…   --chain-len N,…
  --payload BYTES,…    --copy on,off
  --mode M,…           same-thread, ${CROSS_THREAD_MODES.join(', ')} (cross-thread: two worker_threads)
run:
  --rounds N  (5)      --chains N (per round)   --seed S (1)   --spin-us N (50, adaptive mode)
output (default: the table on stdout):
  --json FILE|-        --csv FILE|-     --svg PREFIX (PREFIX-throughput.svg, PREFIX-notifications.svg)
  --html FILE          --x DIM (the charts' x axis; default the preset's, else the first swept dimension)
  --quiet              no progress line`;

const FLAG_DIM: Record<string, keyof LabPoint> = {
  '--layout': 'layout', '--event-idx': 'eventIdx', '--in-order': 'inOrder', '--completion': 'completion', '--indirect': 'indirect',
  '--queue-size': 'queueSize', '--batch': 'batch', '--chain-len': 'chainLen', '--payload': 'payload',
  '--copy': 'copy', '--mode': 'mode',
};

class UsageError extends Error {}

function parseList(dim: keyof LabPoint, v: string): unknown[] {
  const items = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new UsageError(`${dim}: empty list`);
  return items.map((s) => {
    const kind = typeof DEFAULT_SWEEP[dim][0];
    if (kind === 'boolean') {
      if (s === 'on' || s === 'true') return true;
      if (s === 'off' || s === 'false') return false;
      throw new UsageError(`${dim}: ${JSON.stringify(s)} is not on or off`);
    }
    if (kind === 'number') {
      if (!/^\d+$/.test(s)) throw new UsageError(`${dim}: ${JSON.stringify(s)} is not a whole number`);
      return Number(s);
    }
    return s;
  });
}

function intArg(name: string, v: string | undefined): number {
  if (v === undefined || !/^\d+$/.test(v)) throw new UsageError(`${name} needs a whole number`);
  return Number(v);
}

/** Runs the CLI. Returns the exit status (0 ok, 1 a run failed, 2 bad usage). */
export async function labMain(argv: readonly string[], io: LabIo): Promise<number> {
  try {
    if (argv[0] === 'presets') {
      for (const p of PRESETS) io.out(`${p.name.padEnd(16)} ${p.question} (${expandSweep(p.sweep).length} points)\n`);
      return 0;
    }
    if (argv[0] === 'compare') {
      if (argv.length !== 3) throw new UsageError('compare needs two result files');
      const read = (f: string) => parseResult(JSON.parse(readFileSync(f, 'utf8')), f);
      io.out(compare(read(argv[1]!), read(argv[2]!)) + '\n');
      return 0;
    }
    let sweep: Partial<LabSweep> = {};
    let x: keyof LabPoint | undefined;
    let rounds: number | undefined, chains: number | undefined, seed: number | undefined, spinUs: number | undefined;
    let json: string | undefined, csv: string | undefined, svg: string | undefined, html: string | undefined;
    let quiet = false;
    const overrides: Partial<Record<keyof LabPoint, unknown[]>> = {};
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      const next = () => {
        const v = argv[++i];
        if (v === undefined) throw new UsageError(`${a} needs a value`);
        return v;
      };
      if (a === '-h' || a === '--help') {
        io.out(LAB_USAGE + '\n');
        return 0;
      } else if (a === '--preset') {
        const p = preset(next());
        sweep = { ...p.sweep };
        x ??= p.x;
      } else if (a in FLAG_DIM) {
        const dim = FLAG_DIM[a]!;
        overrides[dim] = parseList(dim, next());
      } else if (a === '--rounds') rounds = intArg(a, next());
      else if (a === '--chains') chains = intArg(a, next());
      else if (a === '--seed') seed = intArg(a, next());
      else if (a === '--spin-us') spinUs = intArg(a, next());
      else if (a === '--json') json = next();
      else if (a === '--csv') csv = next();
      else if (a === '--svg') svg = next();
      else if (a === '--html') html = next();
      else if (a === '--x') {
        const v = next();
        if (!(v in DEFAULT_SWEEP)) throw new UsageError(`--x ${v}: not a dimension (${Object.keys(DEFAULT_SWEEP).join(', ')})`);
        x = v as keyof LabPoint;
      } else if (a === '--quiet') quiet = true;
      else throw new UsageError(`unknown option ${a}`);
    }
    sweep = { ...sweep, ...(overrides as Partial<LabSweep>) };
    const points = expandSweep(sweep); // checks every point before anything runs
    x ??= (Object.keys(DEFAULT_SWEEP) as (keyof LabPoint)[]).find((k) => new Set(points.map((p) => p[k])).size > 1) ?? 'batch';
    const cross = points.some((p) => CROSS_THREAD_MODES.includes(p.mode));
    const xr = cross ? await nodeCrossThreadRunner() : null;
    let r: LabResult;
    const t0 = performance.now();
    try {
      r = await runLab({
        sweep, ...(rounds !== undefined ? { rounds } : {}), ...(chains !== undefined ? { chains } : {}),
        ...(seed !== undefined ? { seed } : {}), ...(spinUs !== undefined ? { spinUs } : {}),
        ...(xr ? { crossThread: xr.runner } : {}), ...(io.baselines ? { baselines: io.baselines } : {}),
        env: nodeLabEnvironment(),
        onProgress: quiet ? undefined : (i, n, pt) => {
          const line = i < n ? `[${i + 1}/${n}] ${pointLabel(pt)} · ${((performance.now() - t0) / 1000).toFixed(1)} s` : `done: ${n} points in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
          io.err(io.tty ? `\r\x1b[K${line}${i < n ? '' : '\n'}` : `${line}\n`);
        },
      });
    } finally {
      await xr?.close();
    }
    // Output files may name a directory that does not exist yet (build/lab/…): make it, as `-o` does elsewhere.
    const put = (dest: string, s: string) => { mkdirSync(dirname(dest), { recursive: true }); writeFileSync(dest, s); };
    const write = (dest: string, s: string) => (dest === '-' ? io.out(s) : put(dest, s));
    if (json) write(json, toJson(r));
    if (csv) write(csv, toCsv(r));
    if (svg) {
      const c = charts(r, x);
      put(`${svg}-throughput.svg`, c.throughput);
      put(`${svg}-notifications.svg`, c.notifications);
    }
    if (html) put(html, toHtml(r, x));
    if (json !== '-' && csv !== '-') io.out(formatTable(r) + '\n');
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`vdpa-ringlab: ${e.message}\n${LAB_USAGE}\n`);
      return 2;
    }
    if (e instanceof VirtioError && (e.code === 'invalid_argument' || e.code === 'not_found')) {
      io.err(`vdpa-ringlab: ${e.rawMessage}\n`);
      return 2;
    }
    io.err(`vdpa-ringlab: ${(e as Error)?.message ?? String(e)}\n`);
    return 1;
  }
}
