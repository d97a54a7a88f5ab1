// Where the installed package keeps its .wasm files, for Node code that wants them as files
// (`import 'vdpa-wasm/vdpa.wasm'` does not load in Node: it has no loader for .wasm).

import type { WasmVariant } from '../loader/wasm.ts';

/**
 * The file: URL of a release build of assembly/ in the installed package (build/vdpa*.wasm):
 * `new WebAssembly.Module(readFileSync(ringWasmUrl()))` gives the same module the embedded
 * loader compiles. Resolved from this file, so it works from src/ (tsx) and dist/ alike.
 * @param variant Which build. @default { shared: false, simd: true }
 */
export function ringWasmUrl(variant: WasmVariant = { shared: false, simd: true }): URL {
  return new URL(`../../build/vdpa${variant.shared ? '.shared' : ''}${variant.simd ? '' : '.plain'}.wasm`, import.meta.url);
}
