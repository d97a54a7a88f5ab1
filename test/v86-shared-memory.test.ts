// The WebAssembly rewriting of src/v86/shared-memory.ts on small modules assembled here byte by
// byte (core spec §5: sections, LEB128, limits; threads proposal: flags 0x03 = max + shared):
// a defined memory becomes an `env.memory` shared import whose data segments land in the
// memory passed in, a JIT block's unshared `e.m` import becomes shared, LEB128 edge cases,
// every truncation and random garbage (InvalidArgument, never a RangeError, a TypeError or a
// hang), out-of-range maxima; the realm-wide WebAssembly.instantiate hook; and v86's real
// v86.wasm rewritten, checked by its imports and booted to 'emulator-loaded' on the shared memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { V86 } from 'v86';
import { VirtioError, Code } from '../src/index.ts';
import { importSharedMemory, shareMemoryImport, v86SharedMemory } from '../src/v86/shared-memory.ts';
import { v86Memory, v86Platform } from '../src/v86/index.ts';
import { v86WasmPath } from './helpers/v86-guest.ts';

const PAGE = 65536;

// ───────────────────────── a small assembler ─────────────────────────

/** Unsigned LEB128, canonical, or padded to `width` bytes (non-canonical but valid, §5.2.2). */
function leb(v: number, width = 0): number[] {
  const out: number[] = [];
  do {
    let b = v % 128;
    v = Math.floor(v / 128);
    if (v || out.length + 1 < width) b |= 0x80;
    out.push(b);
  } while (v || out.length < width);
  return out;
}
/** Signed LEB128 (i32.const immediates). */
function sleb(v: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(b & 0x40)) || (v === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}
const str = (s: string, w = 0) => [...leb(s.length, w), ...new TextEncoder().encode(s)];
const vec = (items: number[][], w = 0) => [...leb(items.length, w), ...items.flat()];
const section = (id: number, body: number[], w = 0) => [id, ...leb(body.length, w), ...body];
const custom = (name: string, payload: number[] = [1, 2, 3]) => section(0, [...str(name), ...payload]);
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const limits = (min: number, max?: number, w = 0) => (max === undefined ? [0x00, ...leb(min, w)] : [0x01, ...leb(min, w), ...leb(max, w)]);

const T_LOAD = [0x60, 1, 0x7f, 1, 0x7f]; // (i32) → i32
const T_VOID = [0x60, 0, 0]; // () → ()
/** load(addr) = i32.load(addr) */
const LOAD_BODY = [0x00, 0x20, 0x00, 0x28, 0x02, 0x00, 0x0b];
const code = (bodies: number[][]) => vec(bodies.map((b) => [...leb(b.length), ...b]));
const dataSeg = (offset: number, bytes: number[]) => [0x00, 0x41, ...sleb(offset), 0x0b, ...leb(bytes.length), ...bytes];

interface DefOpts {
  min?: number;
  max?: number;
  /** Imports before the function: a function env.f and a global env.g. */
  imports?: boolean;
  customs?: boolean;
  data?: [number, number[]][];
  /** Pad every LEB (section sizes, counts, limits) to 5 bytes. */
  padded?: boolean;
  memFlags?: number;
}

/** A module defining one memory, exporting it as "memory" and load(addr) as "load". */
function defining(o: DefOpts = {}): Uint8Array {
  const w = o.padded ? 5 : 0;
  const min = o.min ?? 1;
  const imports = o.imports ? [[...str('env'), ...str('f'), 0x00, 0x01], [...str('env'), ...str('g'), 0x03, 0x7f, 0x00]] : [];
  const loadIdx = imports.length ? 1 : 0;
  const mem = o.memFlags !== undefined ? [o.memFlags, ...leb(min, w), ...(o.memFlags & 1 ? leb(o.max ?? min, w) : [])] : limits(min, o.max, w);
  const data = o.data ?? [[16, [0x11, 0x22, 0x33, 0x44]]];
  return Uint8Array.from([
    ...HEADER,
    ...(o.customs ? custom('first') : []),
    ...section(1, vec([T_LOAD, T_VOID], w), w),
    ...(o.customs ? custom('between') : []),
    ...(imports.length ? section(2, vec(imports, w), w) : []),
    ...section(3, vec([[0x00]], w), w),
    ...section(5, vec([mem], w), w),
    ...section(7, vec([[...str('memory', w), 0x02, 0x00], [...str('load', w), 0x00, loadIdx]], w), w),
    ...section(10, code([LOAD_BODY]), w),
    ...(data.length ? section(11, vec(data.map(([off, b]) => dataSeg(off, b)), w), w) : []),
    ...(o.customs ? custom('name', [0]) : []),
  ]);
}

interface JitOpts {
  /** Limits of the e.m import (flags byte first). */
  mem?: number[];
  /** Imports before e.m: functions, a table with and without max, a global, a tag. */
  before?: number[][];
  nameWidth?: number;
}

/** A module as v86's JIT emits one: imports memory `e.m` (unshared, no maximum), exports f = load. */
function jit(o: JitOpts = {}): Uint8Array {
  const w = o.nameWidth ?? 0;
  const before = o.before ?? [];
  const funcImports = before.filter((i) => funcImports_.has(i)).length;
  return Uint8Array.from([
    ...HEADER,
    ...section(1, vec([T_LOAD, T_VOID])),
    ...section(2, vec([...before, [...str('e', w), ...str('m', w), 0x02, ...(o.mem ?? [0x00, 0x01])]])),
    ...section(3, vec([[0x00]])),
    ...section(7, vec([[...str('f'), 0x00, ...leb(funcImports)]])),
    ...section(10, code([LOAD_BODY])),
  ]);
}
const funcImports_ = new WeakSet<number[]>();
/** A function import e.<n> of type 1 (() → ()). */
const FUNC_IMPORT = (n: string): number[] => {
  const i = [...str('e'), ...str(n), 0x00, 0x01];
  funcImports_.add(i);
  return i;
};

// ───────────────────────── an independent reader of memory imports ─────────────────────────

interface MemImport { module: string; name: string; flags: number; min: number; max?: number }

/** The memory imports and the count of memory definitions of a module, read independently. */
function memories(b: Uint8Array): { imports: MemImport[]; defined: number } {
  let at = 8;
  const u = (): number => {
    let v = 0;
    for (let s = 0; ; s += 7) {
      const x = b[at++]!;
      v += (x & 0x7f) * 2 ** s;
      if (!(x & 0x80)) return v;
    }
  };
  const name = () => {
    const n = u();
    const s = new TextDecoder().decode(b.subarray(at, at + n));
    at += n;
    return s;
  };
  const lim = () => {
    const flags = b[at++]!;
    const min = u();
    return { flags, min, ...(flags & 1 ? { max: u() } : {}) };
  };
  const out: { imports: MemImport[]; defined: number } = { imports: [], defined: 0 };
  while (at < b.length) {
    const id = b[at++]!;
    const size = u();
    const end = at + size;
    if (id === 2) {
      for (let n = u(); n > 0; n--) {
        const module = name();
        const nm = name();
        const kind = b[at++]!;
        if (kind === 0) u();
        else if (kind === 1) {
          at++;
          lim();
        } else if (kind === 2) out.imports.push({ module, name: nm, ...lim() });
        else if (kind === 3) at += 2;
        else if (kind === 4) {
          at++;
          u();
        }
      }
    }
    if (id === 5) out.defined += u();
    at = end;
  }
  return out;
}

/** WebAssembly.validate of bytes on any buffer. */
const validate = (b: Uint8Array): boolean => WebAssembly.validate(b as Uint8Array<ArrayBuffer>);

const invalidArgument = (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument;

/** Calls fn; returns 'null', 'bytes' or 'invalid', and fails on any other outcome. */
function outcome(fn: () => Uint8Array | null | { bytes: Uint8Array }, what: string): 'null' | 'bytes' | 'invalid' {
  try {
    return fn() === null ? 'null' : 'bytes';
  } catch (e) {
    assert.ok(invalidArgument(e), `${what}: ${String(e)}`);
    return 'invalid';
  }
}

async function instantiate(bytes: Uint8Array, imports: WebAssembly.Imports): Promise<WebAssembly.Instance> {
  return new WebAssembly.Instance(await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>), imports);
}

const ENV_EXTRA = { f: () => {}, g: 7 };

// ───────────────────────── importSharedMemory ─────────────────────────

test('importSharedMemory: a defined memory (with/without max, with/without an import section, custom sections) becomes a shared env.memory import', async () => {
  for (const max of [undefined, 3]) {
    for (const imports of [false, true]) {
      for (const customs of [false, true]) {
        const what = `max ${max} imports ${imports} customs ${customs}`;
        const src = defining({ min: 2, max, imports, customs, data: [[16, [0x11, 0x22, 0x33, 0x44]], [PAGE + 8, [0xaa, 0xbb, 0xcc, 0xdd]]] });
        assert.ok(validate(src), what);
        const { bytes, minimumPages } = importSharedMemory(src, 16);
        assert.equal(minimumPages, 2, what);
        assert.ok(validate(bytes), what);
        const mod = await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
        assert.deepEqual(WebAssembly.Module.imports(mod), [
          ...(imports ? [{ module: 'env', name: 'f', kind: 'function' }, { module: 'env', name: 'g', kind: 'global' }] : []),
          { module: 'env', name: 'memory', kind: 'memory' },
        ], what);
        assert.deepEqual(WebAssembly.Module.exports(mod), WebAssembly.Module.exports(await WebAssembly.compile(src as Uint8Array<ArrayBuffer>)), what);
        assert.deepEqual(memories(bytes), { imports: [{ module: 'env', name: 'memory', flags: 0x03, min: 2, max: 16 }], defined: 0 }, what);
        if (customs) {
          assert.deepEqual(WebAssembly.Module.customSections(mod, 'first').map((s) => [...new Uint8Array(s)]), [[1, 2, 3]]);
          assert.equal(WebAssembly.Module.customSections(mod, 'between').length, 1);
        }
        // Linked against a shared memory of that shape: the data segments land in it, the export is it.
        const memory = new WebAssembly.Memory({ initial: 2, maximum: 16, shared: true });
        const inst = new WebAssembly.Instance(mod, { env: { memory, ...ENV_EXTRA } });
        assert.equal(inst.exports.memory, memory, what);
        assert.ok(memory.buffer instanceof SharedArrayBuffer);
        const m = new Uint8Array(memory.buffer);
        assert.deepEqual([...m.subarray(16, 20)], [0x11, 0x22, 0x33, 0x44], what);
        assert.deepEqual([...m.subarray(PAGE + 8, PAGE + 12)], [0xaa, 0xbb, 0xcc, 0xdd], what);
        const load = inst.exports.load as (a: number) => number;
        assert.equal(load(16) >>> 0, 0x44332211);
        new DataView(memory.buffer).setUint32(100, 0xfeedbeef, true);
        assert.equal(load(100) >>> 0, 0xfeedbeef, 'the module reads the memory passed in');
        // It grows up to the new maximum, not the module's old one.
        assert.equal(memory.grow(14), 2);
        assert.throws(() => memory.grow(1), RangeError);
        // A memory of another shape does not link.
        for (const bad of [
          new WebAssembly.Memory({ initial: 2, maximum: 16 }), // unshared
          new WebAssembly.Memory({ initial: 2, maximum: 17, shared: true }), // larger maximum
          new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true }), // below the minimum
        ]) {
          assert.throws(() => new WebAssembly.Instance(mod, { env: { memory: bad, ...ENV_EXTRA } }), WebAssembly.LinkError, what);
        }
      }
    }
  }
});

test('importSharedMemory: LEB128 edge cases (multi-byte sizes, counts and limits; padded 5-byte forms) read and re-encode right', async () => {
  const cases: [string, DefOpts, number][] = [
    ['min 127 (1 byte)', { min: 127 }, 200],
    ['min 128 (2 bytes)', { min: 128 }, 200],
    ['min 200, max 300 (2 bytes)', { min: 200, max: 300 }, 16384],
    ['min 16384 (3 bytes)', { min: 16384 }, 16384],
    ['every LEB padded to 5 bytes', { min: 3, max: 5, padded: true, imports: true }, 65536],
    ['padded, without max', { min: 1, padded: true }, 2],
    ['a data segment of 200 bytes (2-byte length) in a section over 127 bytes', { min: 1, data: [[0, Array.from({ length: 200 }, (_, i) => i)]] }, 1],
    ['maximumPages 65536 (3-byte LEB in the output)', { min: 1 }, 65536],
    ['maximumPages = minimum', { min: 4, max: 9 }, 4],
  ];
  for (const [what, o, maxPages] of cases) {
    const src = defining(o);
    assert.ok(validate(src), what);
    const { bytes, minimumPages } = importSharedMemory(src, maxPages);
    assert.equal(minimumPages, o.min, what);
    assert.ok(validate(bytes), what);
    assert.deepEqual(memories(bytes).imports, [{ module: 'env', name: 'memory', flags: 3, min: o.min, max: maxPages }], what);
    if (o.min! <= 4) {
      const memory = new WebAssembly.Memory({ initial: o.min!, maximum: maxPages, shared: true });
      const inst = await instantiate(bytes, { env: { memory, ...ENV_EXTRA } });
      const [off, data] = (o.data ?? [[16, [0x11, 0x22, 0x33, 0x44]]])[0]!;
      assert.deepEqual([...new Uint8Array(memory.buffer, off, data.length)], data, what);
      assert.equal(inst.exports.memory, memory);
    }
  }
});

test('importSharedMemory: maximumPages below the minimum, above 65536 or not an integer is InvalidArgument', () => {
  const src = defining({ min: 4 });
  for (const m of [3, 0, -1, -65536, 65537, 2 ** 32, 4.5, NaN, Infinity, -Infinity, '16', null, undefined, 16n]) {
    assert.throws(() => importSharedMemory(src, m as never), invalidArgument, String(m));
  }
});

test('importSharedMemory: modules it cannot rewrite are InvalidArgument (shared already, no memory, two, memory64, no module at all)', () => {
  const bad: [string, unknown][] = [
    ['a shared memory already', defining({ memFlags: 0x03, min: 1, max: 2 })],
    ['imports its memory (JIT style)', jit()],
    ['no memory at all', Uint8Array.from([...HEADER, ...section(1, vec([T_VOID]))])],
    ['a memory section with no memory', Uint8Array.from([...HEADER, ...section(5, vec([]))])],
    ['two memories', Uint8Array.from([...HEADER, ...section(5, vec([limits(1), limits(1)]))])],
    ['memory64 (flags 0x04)', defining({ memFlags: 0x04 })],
    ['memory64 with max (flags 0x05)', defining({ memFlags: 0x05, max: 2 })],
    ['limits flags 0x08', defining({ memFlags: 0x08 })],
    ['empty', new Uint8Array(0)],
    ['the magic only', Uint8Array.from(HEADER.slice(0, 4))],
    ['wrong magic', Uint8Array.from([0x00, 0x61, 0x73, 0x6e, 1, 0, 0, 0])],
    ['version 2', Uint8Array.from([...HEADER.slice(0, 4), 2, 0, 0, 0, ...section(5, vec([limits(1)]))])],
    ['a section size past the end', Uint8Array.from([...HEADER, 5, 0x7f, 1, 0, 1])],
    ['a section size of 2^32 (5-byte LEB)', Uint8Array.from([...HEADER, 5, 0x80, 0x80, 0x80, 0x80, 0x10, 1, 0, 1])],
    ['an unterminated LEB (6 bytes)', Uint8Array.from([...HEADER, 5, 0x83, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 0, 1])],
    ['a LEB cut by the end', Uint8Array.from([...HEADER, 5, 0x83])],
    ['minimum 2^32 (5-byte LEB)', Uint8Array.from([...HEADER, ...section(5, [1, 0x00, 0x80, 0x80, 0x80, 0x80, 0x10])])],
    ['trailing bytes in the memory section', Uint8Array.from([...HEADER, ...section(5, [...vec([limits(1)]), 0xff, 0xff])])],
    ['an import section with a count past its entries', Uint8Array.from([...HEADER, ...section(2, [5, ...str('a'), ...str('b'), 0x03, 0x7f, 0x00]), ...section(5, vec([limits(1)]))])],
    ['null', null],
    ['undefined', undefined],
    ['a string', '\0asm\x01\0\0\0'],
    ['a plain array', [...defining()]],
  ];
  for (const [what, b] of bad) assert.throws(() => importSharedMemory(b as Uint8Array, 16), invalidArgument, what);
});

test('importSharedMemory: every truncation of a valid module is InvalidArgument (except a cut between sections that leaves a valid module)', () => {
  for (const src of [defining(), defining({ imports: true, customs: true, max: 4 }), defining({ padded: true })]) {
    let rewritten = 0;
    for (let n = 0; n < src.length; n++) {
      for (const cut of [src.slice(0, n), src.subarray(0, n)]) {
        // A cut before the data or a trailing custom section is itself a valid module with a memory.
        if (validate(cut) && memories(cut).defined === 1) {
          assert.ok(validate(importSharedMemory(cut, 16).bytes));
          rewritten++;
        } else {
          assert.throws(() => importSharedMemory(cut, 16), invalidArgument, `truncated to ${n} of ${src.length}`);
        }
      }
    }
    assert.ok(rewritten <= 4, 'only cuts at a section boundary after the code section');
    assert.ok(importSharedMemory(src, 16).bytes.length > 0);
  }
});

test('importSharedMemory: random garbage and random corruption of a valid module: InvalidArgument or a module that validates, never another error or a hang', () => {
  let seed = 0x5eed;
  const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % n;
  const src = defining({ imports: true, max: 4 });
  const seen = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    let b: Uint8Array;
    if (i % 3 === 0) {
      b = Uint8Array.from({ length: 8 + rnd(64) }, () => rnd(256));
      b.set(HEADER);
    } else {
      b = src.slice();
      for (let k = 1 + rnd(3); k > 0; k--) b[8 + rnd(b.length - 8)] = rnd(256);
    }
    try {
      const r = importSharedMemory(b, 16);
      assert.ok(validate(r.bytes), `case ${i}: the rewrite of a valid module validates`);
      seen.add('bytes');
    } catch (e) {
      assert.ok(invalidArgument(e), `case ${i}: ${String(e)}`);
      seen.add('invalid');
    }
  }
  assert.deepEqual([...seen].sort(), ['bytes', 'invalid']);
});

// ───────────────────────── shareMemoryImport ─────────────────────────

test('shareMemoryImport: a JIT block\'s unshared e.m import (no maximum, or one) becomes shared with maximumPages', async () => {
  const variants: [string, JitOpts][] = [
    ['e.m alone, no maximum', {}],
    ['e.m with a maximum', { mem: [0x01, 0x01, 0x02] }],
    ['e.m minimum 0', { mem: [0x00, 0x00] }],
    ['after function, table (with and without max) and global imports', {
      before: [FUNC_IMPORT('a'), [...str('e'), ...str('t'), 0x01, 0x70, 0x00, 0x01], [...str('e'), ...str('u'), 0x01, 0x70, 0x01, 0x01, 0x02], [...str('e'), ...str('g'), 0x03, 0x7f, 0x00], FUNC_IMPORT('b')],
    }],
    ['names with 2-byte LEB lengths (padded)', { nameWidth: 2 }],
    ['after 200 imports (a 2-byte count)', { before: Array.from({ length: 200 }, (_, i) => FUNC_IMPORT(`f${i}`)) }],
    ['a padded 5-byte minimum', { mem: [0x00, ...leb(1, 5)] }],
  ];
  for (const [what, o] of variants) {
    const src = jit(o);
    assert.ok(validate(src), what);
    const before = memories(src).imports[0]!;
    const out = shareMemoryImport(src, 20);
    assert.ok(out, what);
    assert.ok(validate(out), what);
    assert.deepEqual(memories(out).imports, [{ module: 'e', name: 'm', flags: 3, min: before.min, max: 20 }], what);
    assert.deepEqual(WebAssembly.Module.imports(await WebAssembly.compile(out as Uint8Array<ArrayBuffer>)), WebAssembly.Module.imports(await WebAssembly.compile(src as Uint8Array<ArrayBuffer>)), what);
    // The original does not link against a shared memory; the rewrite does, and reads it.
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 20, shared: true });
    new DataView(memory.buffer).setUint32(64, 0x600dcafe, true);
    const env: Record<string, unknown> = { m: memory, a: () => {}, b: () => {}, g: 1, t: new WebAssembly.Table({ initial: 1, element: 'anyfunc' }), u: new WebAssembly.Table({ initial: 1, maximum: 2, element: 'anyfunc' }) };
    for (let i = 0; i < 200; i++) env[`f${i}`] = () => {};
    assert.throws(() => new WebAssembly.Instance(new WebAssembly.Module(src as Uint8Array<ArrayBuffer>), { e: env as WebAssembly.ModuleImports }), WebAssembly.LinkError, what);
    const inst = await instantiate(out, { e: env as WebAssembly.ModuleImports });
    assert.equal((inst.exports.f as (a: number) => number)(64) >>> 0, 0x600dcafe, what);
  }
});

test('shareMemoryImport: null when there is nothing to rewrite (no import section, no memory import, shared already)', () => {
  assert.equal(shareMemoryImport(defining(), 16), null, 'defines its memory');
  assert.equal(shareMemoryImport(Uint8Array.from([...HEADER, ...section(1, vec([T_VOID]))]), 16), null, 'no imports');
  assert.equal(shareMemoryImport(Uint8Array.from([...HEADER, ...section(1, vec([T_VOID])), ...section(2, vec([FUNC_IMPORT('a').map((x, i, a) => (i === a.length - 1 ? 0 : x))]))]), 16), null, 'a function import only');
  assert.equal(shareMemoryImport(jit({ mem: [0x03, 0x01, 0x10] }), 16), null, 'shared already');
  assert.equal(shareMemoryImport(Uint8Array.from(HEADER), 16), null, 'an empty module');
});

test('shareMemoryImport: maximumPages out of range or below the import\'s minimum is InvalidArgument (never a hang)', () => {
  const src = jit({ mem: [0x00, 0x04] });
  for (const m of [-1, -128, 0, 3, 65537, 2 ** 32, 1.5, NaN, Infinity, '16', undefined]) {
    assert.throws(() => shareMemoryImport(src, m as never), invalidArgument, String(m));
  }
  assert.ok(shareMemoryImport(src, 4));
  assert.ok(shareMemoryImport(src, 65536));
});

test('shareMemoryImport: memory64 or unknown limits flags are InvalidArgument, not rewritten into a 32-bit memory', () => {
  for (const mem of [[0x04, 0x01], [0x05, 0x01, 0x02], [0x08, 0x01], [0x07, 0x01, 0x02]]) {
    assert.throws(() => shareMemoryImport(jit({ mem }), 16), invalidArgument, `flags 0x${mem[0]!.toString(16)}`);
  }
});

test('shareMemoryImport: truncations and garbage give null or InvalidArgument, never another error or a hang', () => {
  const src = jit({ before: [FUNC_IMPORT('a'), [...str('e'), ...str('t'), 0x01, 0x70, 0x01, 0x01, 0x02]] });
  for (let n = 0; n < src.length; n++) outcome(() => shareMemoryImport(src.slice(0, n), 16), `truncated to ${n}`);
  let seed = 99;
  const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % n;
  const seen = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const b = src.slice();
    for (let k = 1 + rnd(3); k > 0; k--) b[8 + rnd(b.length - 8)] = rnd(256);
    seen.add(outcome(() => shareMemoryImport(b, 16), `case ${i}`));
  }
  assert.ok(seen.has('invalid') && seen.has('bytes'), [...seen].join());
  for (const b of [null, undefined, 'x', new Uint8Array(3)]) outcome(() => shareMemoryImport(b as never, 16), String(b));
});

// ───────────────────────── v86SharedMemory and the JIT hook ─────────────────────────

const v86Wasm = () => new Uint8Array(readFileSync(v86WasmPath()));

test('v86SharedMemory: v86.wasm rewritten imports env.memory shared (its minimum, the maximum asked), keeps every other import and export', async () => {
  const wasm = v86Wasm();
  const orig = memories(wasm);
  assert.equal(orig.defined, 1, 'v86.wasm defines its memory');
  assert.deepEqual(orig.imports, []);
  const { bytes, minimumPages } = importSharedMemory(wasm, 8192);
  const re = memories(bytes);
  assert.equal(re.defined, 0);
  assert.deepEqual(re.imports, [{ module: 'env', name: 'memory', flags: 3, min: minimumPages, max: 8192 }]);
  const [m0, m1] = await Promise.all([WebAssembly.compile(wasm), WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>)]);
  assert.deepEqual(WebAssembly.Module.imports(m1), [...WebAssembly.Module.imports(m0), { module: 'env', name: 'memory', kind: 'memory' }]);
  assert.ok(WebAssembly.Module.imports(m0).length > 20, 'v86 needs many imports');
  assert.deepEqual(WebAssembly.Module.exports(m1), WebAssembly.Module.exports(m0));
  assert.ok(WebAssembly.Module.exports(m0).some((e) => e.name === 'memory' && e.kind === 'memory'));

  const sm = v86SharedMemory(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength), { maximumBytes: 256 << 20 });
  assert.equal(sm.memory.buffer.byteLength, minimumPages * PAGE);
  assert.ok(sm.memory.buffer instanceof SharedArrayBuffer);
});

test('v86SharedMemory: v86 instantiates through wasmFn and runs on the shared memory (to emulator-loaded); a platform over it attaches', async () => {
  const sm = v86SharedMemory(v86Wasm(), { maximumBytes: 256 << 20 });
  const emulator = new V86({
    wasm_path: v86WasmPath(), wasm_fn: sm.wasmFn, memory_size: 16 << 20, autostart: false,
    disable_keyboard: true, disable_mouse: true, disable_speaker: true,
  } as ConstructorParameters<typeof V86>[0]);
  try {
    await new Promise<void>((resolve) => emulator.add_listener('emulator-loaded', () => resolve()));
    const m = v86Memory(emulator);
    assert.equal(m.memory, sm.memory, 'v86 runs on our memory');
    assert.equal(m.ramSize, 16 << 20);
    assert.ok(m.ramBase > 0 && m.ramBase + m.ramSize <= m.memory.buffer.byteLength);
    assert.ok(m.memory.buffer instanceof SharedArrayBuffer);
    const p = v86Platform(emulator, { privateSize: 1 << 20 });
    assert.equal(p.memory, sm.memory);
    assert.equal(p.shared, true);
  } finally {
    emulator.destroy();
  }
});

test('v86SharedMemory: bad options and bytes are InvalidArgument; without SharedArrayBuffer FailedPrecondition', () => {
  const wasm = v86Wasm();
  for (const maximumBytes of [0, -1, 1.5, NaN, Infinity, 4 * 2 ** 30 + 1, 2 ** 53, '1' as never, 1 << 16 /* below v86's own minimum */]) {
    assert.throws(() => v86SharedMemory(wasm, { maximumBytes }), invalidArgument, String(maximumBytes));
  }
  for (const b of [new Uint8Array(0), defining({ memFlags: 0x03, max: 2 }), jit(), null, 'v86.wasm', new ArrayBuffer(9)]) {
    assert.throws(() => v86SharedMemory(b as never), invalidArgument, String(b));
  }
  const sab = Object.getOwnPropertyDescriptor(globalThis, 'SharedArrayBuffer')!;
  delete (globalThis as { SharedArrayBuffer?: unknown }).SharedArrayBuffer;
  try {
    assert.throws(() => v86SharedMemory(wasm), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
  } finally {
    Object.defineProperty(globalThis, 'SharedArrayBuffer', sab);
  }
});

test('the JIT hook: an instantiate carrying our memory as e.m is rewritten; every other call is the engine\'s own, errors included (a rejected promise, never a throw)', async () => {
  const sm = v86SharedMemory(defining({ min: 1 }), { maximumBytes: 4 * PAGE });
  new DataView(sm.memory.buffer).setUint32(32, 0x1234abcd, true);
  // v86's codegen_finalize: WebAssembly.instantiate(bytes, { e: imports }).
  const { instance } = (await WebAssembly.instantiate(jit() as Uint8Array<ArrayBuffer>, { e: { m: sm.memory } })) as unknown as WebAssembly.WebAssemblyInstantiatedSource;
  assert.equal((instance.exports.f as (a: number) => number)(32) >>> 0, 0x1234abcd);
  // An ArrayBuffer source and a view at an offset are rewritten the same way.
  const j = jit();
  const ab = j.buffer.slice(0) as ArrayBuffer;
  assert.ok(await WebAssembly.instantiate(ab, { e: { m: sm.memory } }));
  const big = new Uint8Array(j.length + 13);
  big.set(j, 7);
  assert.ok(await WebAssembly.instantiate(big.subarray(7, 7 + j.length), { e: { m: sm.memory } }));
  // Not our memory: untouched, so an unshared memory links as before and a shared one of another owner does not.
  const plain = new WebAssembly.Memory({ initial: 1 });
  assert.ok(await WebAssembly.instantiate(jit() as Uint8Array<ArrayBuffer>, { e: { m: plain } }));
  const foreign = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
  await assert.rejects(WebAssembly.instantiate(jit() as Uint8Array<ArrayBuffer>, { e: { m: foreign } }), WebAssembly.LinkError);
  // A Module source gives an Instance, as the engine's overload does.
  const inst = await WebAssembly.instantiate(new WebAssembly.Module(jit() as Uint8Array<ArrayBuffer>), { e: { m: plain } });
  assert.ok(inst instanceof WebAssembly.Instance);
  // Garbage with our memory: the engine's rejection (CompileError), not a synchronous throw.
  for (const garbage of [Uint8Array.of(1, 2, 3), Uint8Array.from([...HEADER, 2, 0x7f]), Uint8Array.from([...HEADER, ...section(2, [1, ...str('e'), ...str('m'), 0x02, 0x04, 0x01])])]) {
    let p: Promise<unknown> | undefined;
    assert.doesNotThrow(() => {
      p = WebAssembly.instantiate(garbage, { e: { m: sm.memory } });
    });
    await assert.rejects(p!, (e: unknown) => e instanceof WebAssembly.CompileError || e instanceof WebAssembly.LinkError || invalidArgument(e));
  }
  await assert.rejects(WebAssembly.instantiate(Uint8Array.of(1, 2, 3)), WebAssembly.CompileError);
});
