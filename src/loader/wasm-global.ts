// The WebAssembly types the public declarations name (WebAssembly.Module, WebAssembly.Memory),
// declared here so the package type-checks without the DOM lib: a Node-only project
// (`lib: ["es2022"]`, `types: ["node"]`, no skipLibCheck) has no WebAssembly namespace, since
// @types/node 20 does not declare it. Where lib.dom is loaded these merge with its
// declarations (same member types), so either setup compiles.

export {};

declare global {
  namespace WebAssembly {
    // A compiled WebAssembly module (lib.dom's WebAssembly.Module where the DOM lib is loaded).
    interface Module {}
    // A WebAssembly linear memory (lib.dom's WebAssembly.Memory where the DOM lib is loaded).
    interface Memory {
      // The memory's bytes: an ArrayBuffer, or a SharedArrayBuffer for a shared memory.
      readonly buffer: ArrayBuffer;
      // Grows the memory by `delta` 64 KiB pages; returns the previous size in pages.
      grow(delta: number): number;
    }
  }
}
