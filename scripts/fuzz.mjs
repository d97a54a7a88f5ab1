#!/usr/bin/env node
// Runs the seeded fuzz suites (test/fuzz-*.test.ts) long: `npm run fuzz -- --seed S --cases N
// [--only NAME]`. --cases is the case count of every fuzz target (VDPA_FUZZ_CASES), --seed the
// base seed (VDPA_FUZZ_SEED; default: a random one, printed so a failure can be re-run), --only
// keeps the files whose name contains NAME (repeatable, or comma-separated). Exits with the
// test runner's code.

import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const usage = 'usage: npm run fuzz -- [--seed S] [--cases N] [--only NAME[,NAME…]] [--case I]';

function fail(msg) {
  console.error(`fuzz: ${msg}\n${usage}`);
  process.exit(2);
}

const args = process.argv.slice(2);
let seed = null;
let cases = null;
let oneCase = null;
const only = [];
for (let k = 0; k < args.length; k++) {
  const a = args[k];
  const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
  const value = () => {
    const v = inline ?? args[++k];
    if (v === undefined) fail(`${flag} needs a value`);
    return v;
  };
  const uint = (v, max) => {
    if (!/^\d+$/.test(v) || Number(v) > max) fail(`${flag} ${v} must be an integer in 0..${max}`);
    return Number(v);
  };
  if (flag === '--seed') seed = uint(value(), 0xffffffff);
  else if (flag === '--cases') cases = Math.max(1, uint(value(), Number.MAX_SAFE_INTEGER));
  else if (flag === '--case') oneCase = uint(value(), Number.MAX_SAFE_INTEGER);
  else if (flag === '--only') only.push(...value().split(',').filter(Boolean));
  else if (flag === '-h' || flag === '--help') {
    console.log(usage);
    process.exit(0);
  } else fail(`unknown argument ${a}`);
}
if (seed === null) seed = (Math.random() * 2 ** 32) >>> 0;

const testDir = join(root, 'test');
let files = readdirSync(testDir).filter((f) => /^fuzz-.*\.test\.ts$/.test(f)).sort();
if (only.length) files = files.filter((f) => only.some((o) => f.includes(o)));
if (!files.length) fail(`no fuzz file matches ${only.join(', ')}`);

const env = { ...process.env, VDPA_FUZZ_SEED: String(seed) };
if (cases !== null) env.VDPA_FUZZ_CASES = String(cases);
if (oneCase !== null) env.VDPA_FUZZ_CASE = String(oneCase);
const paths = files.map((f) => relative(root, join(testDir, f)));
console.log(`fuzz: seed ${seed}, ${cases ?? 'default'} cases per target, files: ${paths.join(' ')}`);
const started = Date.now();
const child = spawn(process.execPath, ['--import', 'tsx', '--test', ...paths], { cwd: root, env, stdio: 'inherit' });
child.on('exit', (code, signal) => {
  const s = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`fuzz: seed ${seed} ${code === 0 ? 'passed' : 'FAILED'} in ${s} s (re-run: npm run fuzz -- --seed ${seed}${cases !== null ? ` --cases ${cases}` : ''}${only.length ? ` --only ${only.join(',')}` : ''})`);
  process.exit(code ?? (signal ? 1 : 0));
});
