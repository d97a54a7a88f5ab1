// The AssemblyScript status table (assembly/status.ts, exported as wasm globals) and the
// TypeScript Code map (src/errors.ts) must be the same table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { STATUS_CODES, codeOfStatus, Code, VirtioError, fromStatus, defaultModule } from '../src/index.ts';

test('every STATUS_* global of the module has the value and code TypeScript expects', () => {
  const mod = defaultModule(false);
  const names = WebAssembly.Module.exports(mod).filter((e) => e.kind === 'global').map((e) => e.name).sort();
  assert.deepEqual(names, Object.keys(STATUS_CODES).sort());
  const mem = new WebAssembly.Memory({ initial: 1, maximum: 1 });
  const inst = new WebAssembly.Instance(mod, { env: { memory: mem, abort() {} } });
  for (const name of names) {
    const g = inst.exports[name] as WebAssembly.Global;
    assert.equal(g.value, STATUS_CODES[name]![0], name);
    assert.equal(codeOfStatus(g.value as number), STATUS_CODES[name]![1], name);
  }
});

test('the AssemblyScript source declares exactly the statuses TypeScript maps', () => {
  const src = readFileSync(new URL('../assembly/status.ts', import.meta.url), 'utf8');
  const decl = [...src.matchAll(/export const (STATUS_\w+): i32 = (-?\d+);/g)].map((m) => [m[1]!, Number(m[2])] as const);
  assert.deepEqual(
    Object.fromEntries(decl),
    Object.fromEntries(Object.entries(STATUS_CODES).map(([k, [v]]) => [k, v])),
  );
});

test('status values and codes are unique, and unknown statuses map to internal', () => {
  const vals = Object.values(STATUS_CODES).map(([v]) => v);
  const codes = Object.values(STATUS_CODES).map(([, c]) => c);
  assert.equal(new Set(vals).size, vals.length);
  assert.equal(new Set(codes).size, codes.length);
  assert.equal(codeOfStatus(-999), Code.Internal);
  const e = fromStatus(-10, 'dev_pop');
  assert.ok(e instanceof VirtioError);
  assert.equal(e.code, Code.HeadOutOfRange);
  assert.match(e.message, /^\[head_out_of_range\] /);
});
