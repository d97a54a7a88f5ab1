// Loads the data-plane module the same way in Node, browsers and workers: from embedded
// bytes (wasm-code.ts, generated), synchronously, choosing the shared or unshared build to
// match the memory, and the SIMD build where the engine validates SIMD.

import { wasmCode } from './wasm-code.ts';
import { VirtioError, Code } from '../errors.ts';
import { ABI_VERSION, RING_EXPORT_NAMES, type RingExports } from './exports.ts';

/** Which build of assembly/ a module is. */
export interface WasmVariant {
  /** Declares a shared memory import (for `shared: true` memories). */
  shared: boolean;
  /** Uses 128-bit SIMD for copies. */
  simd: boolean;
}

// The smallest module that uses a v128 instruction: (func (result v128) v128.const 0).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11,
]);

let simdSupported: boolean | undefined;

/** True if this engine validates wasm SIMD. */
export function hasSimd(): boolean {
  simdSupported ??= WebAssembly.validate(SIMD_PROBE);
  return simdSupported;
}

function decodeBase64(b64: string): Uint8Array {
  if (typeof atob === 'function') {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  throw new VirtioError(Code.Internal, 'no base64 decoder (atob) in this runtime');
}

const modules = new Map<string, WebAssembly.Module>();

/** The embedded release module for a variant, compiled once per variant and cached. */
export function ringModule(variant: WasmVariant): WebAssembly.Module {
  const key = `${variant.shared ? 'shared' : 'unshared'}${variant.simd ? 'Simd' : 'Plain'}` as keyof typeof wasmCode;
  let m = modules.get(key);
  if (!m) {
    m = new WebAssembly.Module(decodeBase64(wasmCode[key]) as Uint8Array<ArrayBuffer>);
    modules.set(key, m);
  }
  return m;
}

/** The release module that fits `memory` on this engine. */
export function defaultModule(shared: boolean): WebAssembly.Module {
  return ringModule({ shared, simd: hasSimd() });
}

/**
 * Instantiates `module` over `memory` and checks its export surface and ABI version.
 * The module's `abort` import (AssemblyScript assertions in debug builds) throws a
 * VirtioError(Code.Internal) naming the file and line.
 */
export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): RingExports {
  let instance: WebAssembly.Instance;
  try {
    instance = new WebAssembly.Instance(module, {
      env: {
        memory,
        abort(_msg: number, _file: number, line: number, column: number) {
          throw new VirtioError(Code.Internal, `wasm abort at assembly line ${line}:${column}`);
        },
      },
    });
  } catch (e) {
    throw new VirtioError(Code.InvalidArgument, `cannot instantiate the ring module on this memory: ${(e as Error).message}`, { cause: e });
  }
  const ex = instance.exports as unknown as RingExports;
  for (const name of RING_EXPORT_NAMES) {
    if (typeof ex[name] !== 'function') throw new VirtioError(Code.InvalidArgument, `ring module lacks export ${name}`);
  }
  const v = ex.abi_version();
  if (v !== ABI_VERSION) throw new VirtioError(Code.InvalidArgument, `ring module ABI ${v}, expected ${ABI_VERSION}`);
  return ex;
}
