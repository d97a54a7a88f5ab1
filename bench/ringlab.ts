// `npm run lab -- ARGS`: the ring lab (vdpa-ringlab) with this repository's baselines wired in,
// so each same-thread point also reports × ts (the plain-TypeScript ring in bench/baseline/,
// same workload and checks, lockstep round trips), × js (the strongest plain-JS ring,
// bench/baseline/js-fast-ring.ts: one function per side, state in locals) and × c
// (bench/native/ring.c, only where it has the point: queue size 256, 64-byte 1-descriptor
// chains, batch 1/32/256).
// Compiled with tsc into build/js and run with plain node, like ring.bench.ts.
import { labMain } from '../src/lab/cli.ts';
import type { LabBaseline } from '../src/lab/lab.ts';
import { createTsRoundTrip, type TsRoundTripOptions, type TsRoundTrip } from './baseline/ts-ring.ts';
import { createJsFastRoundTrip } from './baseline/js-fast-ring.ts';
import { runNative, type NativeResult } from './native/run.ts';

/** A baseline over one of the JS round trips (same points, same measurement). */
const jsBaseline = (create: (o: TsRoundTripOptions) => TsRoundTrip): LabBaseline => (pt, o) => {
  if (pt.mode !== 'same-thread' || pt.chainLen > 1 && pt.indirect) return null;
  if (pt.queueSize & (pt.queueSize - 1) || pt.batch * pt.chainLen > pt.queueSize) return null;
  const t = create({ layout: pt.layout, size: pt.queueSize, batch: pt.batch, copy: pt.copy, payload: pt.payload, segments: pt.chainLen, memoryBytes: 64 << 20 });
  const iters = Math.max(1, Math.ceil(o.chains / pt.batch));
  t.run(Math.max(1, Math.ceil(2000 / pt.batch))); // warm-up
  const rates: number[] = [];
  for (let r = 0; r < o.rounds; r++) {
    const t0 = performance.now();
    const descs = t.run(iters);
    rates.push(descs / ((performance.now() - t0) / 1000));
  }
  t.check();
  return rates.sort((a, b) => a - b)[rates.length >> 1]!;
};
const ts = jsBaseline(createTsRoundTrip);
const js = jsBaseline(createJsFastRoundTrip);

let native: NativeResult[] | null | undefined;
const c: LabBaseline = (pt) => {
  if (pt.mode !== 'same-thread' || pt.queueSize !== 256 || pt.payload !== 64 || pt.chainLen !== 1 || ![1, 32, 256].includes(pt.batch)) return null;
  if (native === undefined) {
    const n = runNative({ seconds: 0.2 });
    native = Array.isArray(n) ? n : null;
  }
  return native?.find((n) => n.layout === pt.layout && n.batch === pt.batch && n.copy === pt.copy)?.descPerSec ?? null;
};

process.exitCode = await labMain(process.argv.slice(2), {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  tty: process.stderr.isTTY === true,
  baselines: { ts, js, c },
});
