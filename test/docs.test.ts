// `npm run docs`: typedoc over the three entry points (vdpa-wasm, vdpa-wasm/node,
// vdpa-wasm/cli) with treatWarningsAsErrors and notDocumented validation (typedoc.json), so
// a public member without a doc comment, a broken {@link} or an exported type missing from
// the docs fails the suite. Validates only (--emit none); `npm run docs` writes build/docs/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';

const root = fileURLToPath(new URL('..', import.meta.url));

test('typedoc: every public member documented, zero warnings', () => {
  const cfg = JSON.parse(readFileSync(new URL('../typedoc.json', import.meta.url), 'utf8')) as { treatWarningsAsErrors?: boolean; validation?: { notDocumented?: boolean } };
  assert.equal(cfg.treatWarningsAsErrors, true);
  assert.equal(cfg.validation?.notDocumented, true);
  // bin/typedoc is not in the package's exports map: find it beside the resolved entry.
  const bin = fileURLToPath(new URL('../bin/typedoc', pathToFileURL(createRequire(import.meta.url).resolve('typedoc'))));
  const r = spawnSync(process.execPath, [bin, '--emit', 'none', '--logLevel', 'Warn'], { cwd: root, encoding: 'utf8' });
  // eslint-disable-next-line no-control-regex
  const log = (r.stdout + r.stderr).replace(/\x1b\[[0-9;]*m/g, '');
  assert.equal(r.status, 0, log);
  assert.doesNotMatch(log, /warning|error/i);
});
