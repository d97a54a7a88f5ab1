#!/usr/bin/env node
// `vdpa-ringlab`: the ring lab (src/lab/cli.ts, built into dist/ by `npx tsc -p tsconfig.build.json`).
import { labMain } from '../dist/lab/cli.js';

process.exitCode = await labMain(process.argv.slice(2), {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  tty: process.stderr.isTTY === true,
});
