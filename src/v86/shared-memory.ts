// v86 on a shared memory, so a device in another worker can reach guest RAM.
//
// v86's wasm module defines its own (unshared) memory and exports it. A device that runs in a
// worker needs guest RAM, the rings in it, in a SharedArrayBuffer. v86 lets its caller
// instantiate the module (the public `wasm_fn` option); here that instantiation first rewrites
// the module's memory definition into an import of a shared memory with the same minimum and
// a maximum, and passes that memory in. Nothing else in the module changes: the memory keeps
// index 0, so the export and the data segments refer to it as before; v86's JS reads
// `exports.memory` (now the shared one) and its views re-make themselves from `memory.buffer`.
// Only the binary's section framing is parsed (WebAssembly core spec §5.5: import section 2,
// memory section 5, limits flags 0x03 = has maximum + shared of the threads proposal).

import { VirtioError, Code } from '../errors.ts';

const SEC_IMPORT = 2;
const SEC_MEMORY = 5;
const EXTERN_MEMORY = 0x02;
const LIMITS_MAX_SHARED = 0x03;
const PAGE = 65536;

function readU32(b: Uint8Array, at: number): [value: number, next: number] {
  let v = 0;
  let shift = 0;
  for (let i = at; i < b.length && shift < 35; i++, shift += 7) {
    v += (b[i]! & 0x7f) * 2 ** shift;
    if (!(b[i]! & 0x80)) return [v, i + 1];
  }
  throw new VirtioError(Code.InvalidArgument, `bad LEB128 at byte ${at} of the v86 module`);
}

function u32(v: number): number[] {
  const out: number[] = [];
  do {
    let byte = v & 0x7f;
    v = Math.floor(v / 128);
    if (v) byte |= 0x80;
    out.push(byte);
  } while (v);
  return out;
}

const name = (s: string) => [...u32(s.length), ...new TextEncoder().encode(s)];

interface Section { id: number; body: Uint8Array }

function sectionsOf(wasm: Uint8Array): Section[] {
  if (!(wasm instanceof Uint8Array)) throw new VirtioError(Code.InvalidArgument, 'the module must be a Uint8Array');
  if (wasm.length < 8 || wasm[0] !== 0 || wasm[1] !== 0x61 || wasm[2] !== 0x73 || wasm[3] !== 0x6d) {
    throw new VirtioError(Code.InvalidArgument, 'not a WebAssembly binary');
  }
  const sections: Section[] = [];
  let at = 8;
  while (at < wasm.length) {
    const id = wasm[at]!;
    const [size, body] = readU32(wasm, at + 1);
    if (body + size > wasm.length) throw new VirtioError(Code.InvalidArgument, 'truncated section in the module');
    sections.push({ id, body: wasm.subarray(body, body + size) });
    at = body + size;
  }
  return sections;
}

function binaryOf(head: Uint8Array, sections: Section[]): Uint8Array {
  const heads = sections.map((s) => [s.id, ...u32(s.body.length)]);
  const bytes = new Uint8Array(8 + sections.reduce((n, s, i) => n + heads[i]!.length + s.body.length, 0));
  bytes.set(head.subarray(0, 8));
  let o = 8;
  sections.forEach((s, i) => {
    bytes.set(heads[i]!, o);
    o += heads[i]!.length;
    bytes.set(s.body, o);
    o += s.body.length;
  });
  return bytes;
}

/** Limits flags 0..3 (max, shared); memory64 (0x04) and later proposals' bits are refused, not dropped. */
function checkFlags(flags: number | undefined): void {
  if (flags === undefined || flags > 0x03) throw new VirtioError(Code.InvalidArgument, `memory limits flags 0x${Number(flags).toString(16)} (memory64 or a later proposal) are not supported`);
}

function checkMaximum(maximumPages: number, minimumPages: number): void {
  if (!Number.isInteger(maximumPages) || maximumPages < minimumPages || maximumPages > 65536) {
    throw new VirtioError(Code.InvalidArgument, `maximumPages ${maximumPages} must be ${minimumPages}..65536`);
  }
}

function skipName(b: Uint8Array, at: number): number {
  const [n, p] = readU32(b, at);
  return p + n;
}

/**
 * Rewrites the one memory a module imports (v86's JIT output imports `e.m`, unshared, without
 * a maximum) into a shared import with `maximumPages`, so the module links against a shared
 * memory. Returns null when the module imports no unshared memory (nothing to do).
 */
export function shareMemoryImport(wasm: Uint8Array, maximumPages: number): Uint8Array | null {
  const sections = sectionsOf(wasm);
  const imp = sections.find((s) => s.id === SEC_IMPORT);
  if (!imp) return null;
  const b = imp.body;
  const [n, first] = readU32(b, 0);
  let at = first;
  for (let i = 0; i < n; i++) {
    at = skipName(b, skipName(b, at));
    const kind = b[at++]!;
    if (kind === EXTERN_MEMORY) {
      const flags = b[at]!;
      checkFlags(flags);
      if (flags & 0x02) return null;
      const [min, afterMin] = readU32(b, at + 1);
      const end = flags & 0x01 ? readU32(b, afterMin)[1] : afterMin;
      checkMaximum(maximumPages, min);
      imp.body = Uint8Array.from([...b.subarray(0, at), LIMITS_MAX_SHARED, ...u32(min), ...u32(maximumPages), ...b.subarray(end)]);
      return binaryOf(wasm, sections);
    }
    if (kind === 0x00) at = readU32(b, at)[1]; // function: type index
    else if (kind === 0x01) { // table: reftype, limits
      const flags = b[at + 1]!;
      at = readU32(b, at + 2)[1];
      if (flags & 0x01) at = readU32(b, at)[1];
    } else if (kind === 0x03) at += 2; // global: valtype, mut
    else if (kind === 0x04) at = readU32(b, at + 1)[1]; // tag: attribute, type index
    else throw new VirtioError(Code.InvalidArgument, `unknown import kind ${kind}`);
  }
  return null;
}

/**
 * Rewrites a wasm binary whose one memory is defined in the module into one that imports it as
 * `env.memory`, shared, with the module's minimum and `maximumPages`. Returns the new bytes
 * and the minimum in pages. Throws InvalidArgument for a binary that is not such a module.
 */
export function importSharedMemory(wasm: Uint8Array, maximumPages: number): { bytes: Uint8Array; minimumPages: number } {
  const sections = sectionsOf(wasm);
  // Only the framing is parsed here: the engine judges the rest, so a truncated or corrupt
  // module is refused now rather than rewritten into one that fails to compile later.
  if (!WebAssembly.validate(wasm as Uint8Array<ArrayBuffer>)) throw new VirtioError(Code.InvalidArgument, 'not a valid WebAssembly module');
  const mem = sections.find((s) => s.id === SEC_MEMORY);
  if (!mem) throw new VirtioError(Code.InvalidArgument, 'the module defines no memory (does it import one already?)');
  const [count, p] = readU32(mem.body, 0);
  if (count !== 1) throw new VirtioError(Code.InvalidArgument, `the module defines ${count} memories, not one`);
  const flags = mem.body[p]!;
  checkFlags(flags);
  if (flags & 0x02) throw new VirtioError(Code.InvalidArgument, 'the module\'s memory is shared already');
  const [minimumPages] = readU32(mem.body, p + 1);
  checkMaximum(maximumPages, minimumPages);
  const entry = [...name('env'), ...name('memory'), EXTERN_MEMORY, LIMITS_MAX_SHARED, ...u32(minimumPages), ...u32(maximumPages)];
  let imp = sections.find((s) => s.id === SEC_IMPORT);
  if (imp) {
    const [n, q] = readU32(imp.body, 0);
    imp.body = Uint8Array.from([...u32(n + 1), ...imp.body.subarray(q), ...entry]);
  } else {
    imp = { id: SEC_IMPORT, body: Uint8Array.from([1, ...entry]) };
    // Sections come in id order (custom sections, 0, aside): before the first with a larger id.
    const i = sections.findIndex((s) => s.id > SEC_IMPORT && s.id !== 0);
    sections.splice(i < 0 ? sections.length : i, 0, imp);
  }
  return { bytes: binaryOf(wasm, sections.filter((s) => s !== mem)), minimumPages };
}

/** Shared memories made here: JIT modules that import one of them get their import rewritten. */
const ours = new WeakMap<WebAssembly.Memory, number>(); // → maximum pages
let hooked = false;

/**
 * v86's JIT compiles each hot block into a small module that imports the memory as `e.m`,
 * declared unshared (src/rust/wasmgen/wasm_builder.rs write_memory_import), and instantiates it
 * with `WebAssembly.instantiate(code, { e: imports })` (cpu.js codegen_finalize). Such a module
 * cannot link against a shared memory, so this realm's WebAssembly.instantiate is wrapped once:
 * a call whose imports carry one of our shared memories as `e.m` gets the import rewritten to
 * shared; every other call goes to the original untouched.
 */
function hookJit(): void {
  if (hooked) return;
  hooked = true;
  const original = WebAssembly.instantiate.bind(WebAssembly) as (source: BufferSource | WebAssembly.Module, imports?: WebAssembly.Imports) => Promise<unknown>;
  const wrapped = (source: BufferSource | WebAssembly.Module, imports?: WebAssembly.Imports): Promise<unknown> => {
    const m = (imports?.e as Record<string, unknown> | undefined)?.m;
    if (m instanceof WebAssembly.Memory && ours.has(m) && !(source instanceof WebAssembly.Module)) {
      const bytes = ArrayBuffer.isView(source) ? new Uint8Array(source.buffer, source.byteOffset, source.byteLength) : new Uint8Array(source);
      let shared: Uint8Array | null = null;
      try {
        shared = shareMemoryImport(bytes, ours.get(m)!);
      } catch {
        // Not a module we can rewrite: the engine rejects it below, as instantiate always does
        // (a rejected promise, never a synchronous throw into v86's codegen_finalize).
      }
      if (shared) return original(shared, imports);
    }
    return original(source, imports);
  };
  (WebAssembly as { instantiate: unknown }).instantiate = wrapped;
}

/** Import object of a module (WebAssembly.Imports, spelled out: Node-only projects' libs lack it). */
export type WasmImports = Record<string, Record<string, unknown>>;
/**
 * Exports of an instance (WebAssembly.Exports, spelled out for the same reason; Node's typings
 * have no WebAssembly.Global or Table, so those exports are typed as the functions and memory
 * v86 reads: the type stays assignable to lib.dom's WebAssembly.Exports, which v86's option wants).
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- part of lib.dom's WebAssembly.ExportValue
export type WasmExports = Record<string, Function | WebAssembly.Memory>;

/** What {@link v86SharedMemory} returns. */
export interface V86SharedMemory {
  /** The shared memory v86 will run on (grows as v86 grows it, up to the maximum). */
  memory: WebAssembly.Memory;
  /** Pass as the `wasm_fn` option of `new V86({...})`. */
  wasmFn: (imports: WasmImports) => Promise<WasmExports>;
}

/**
 * Prepares v86's wasm build (`v86.wasm` bytes) to run on a shared memory of at most
 * `maximumBytes` (default 1 GiB; guest RAM, v86's own state and the package's private arena
 * must fit). Give `wasmFn` to v86 as its `wasm_fn` option; then `v86Platform(emulator)` is over
 * the shared memory and can be attached in a device worker (`platform.handle(...)`).
 * Throws InvalidArgument for bytes that are not v86's module, FailedPrecondition where
 * SharedArrayBuffer is unavailable (a page without cross-origin isolation).
 */
export function v86SharedMemory(wasm: Uint8Array | ArrayBuffer, opts: { maximumBytes?: number } = {}): V86SharedMemory {
  if (typeof SharedArrayBuffer === 'undefined') {
    throw new VirtioError(Code.FailedPrecondition, 'SharedArrayBuffer is not available (a page needs Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy headers)');
  }
  const maxBytes = opts.maximumBytes ?? 1 << 30;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0 || maxBytes > 4 * 2 ** 30) throw new VirtioError(Code.InvalidArgument, `maximumBytes ${maxBytes} must be 1..4 GiB`);
  const { bytes, minimumPages } = importSharedMemory(wasm instanceof Uint8Array ? wasm : new Uint8Array(wasm), Math.ceil(maxBytes / PAGE));
  const maxPages = Math.ceil(maxBytes / PAGE);
  const memory = new WebAssembly.Memory({ initial: minimumPages, maximum: maxPages, shared: true });
  ours.set(memory, maxPages);
  hookJit();
  return {
    memory,
    wasmFn: async (imports) => {
      const env = { ...(imports.env ?? {}), memory };
      const { instance } = (await WebAssembly.instantiate(bytes as Uint8Array<ArrayBuffer>, { ...imports, env })) as WebAssembly.WebAssemblyInstantiatedSource;
      return instance.exports as WasmExports;
    },
  };
}
