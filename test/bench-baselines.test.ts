// The benchmark's baselines are only worth comparing against if they do the same work with the
// same checks: their self-tests (bench/baseline/*.check.ts — round trips past the u16 wraps,
// every check broken one field at a time, and the strongest-JS ring's memory byte-identical to
// the TS ring's after the same work) run here, so CI keeps them honest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

for (const name of ['ts-ring', 'js-fast-ring']) {
  test(`bench/baseline/${name}.check.ts passes (exit 0, no failed check)`, () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', `bench/baseline/${name}.check.ts`], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /(^|\s)[1-9]\d* passed, 0 failed/m);
  });
}
