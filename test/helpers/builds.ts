// The builds every ring suite runs on: the embedded release module and the debug build.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Platform, type PlatformOptions } from '../../src/index.ts';

/** A build of assembly/. */
export type Build = 'release' | 'debug';

/** Both builds. */
export const BUILDS: readonly Build[] = ['release', 'debug'];

/** Both layouts. */
export const LAYOUTS = ['split', 'packed'] as const;

const debugModules = new Map<boolean, WebAssembly.Module>();

/** The compiled debug module for a shared or unshared memory. */
export function debugModule(shared: boolean): WebAssembly.Module {
  let m = debugModules.get(shared);
  if (!m) {
    const file = fileURLToPath(new URL(`../../build/vdpa.debug${shared ? '.shared' : ''}.wasm`, import.meta.url));
    m = new WebAssembly.Module(readFileSync(file));
    debugModules.set(shared, m);
  }
  return m;
}

/** A platform on the given build. */
export function makePlatform(build: Build, opts: PlatformOptions = {}): Platform {
  const o: PlatformOptions = { ramSize: 1 << 20, privateSize: 1 << 20, ...opts };
  if (build === 'debug') o.module = debugModule(o.shared ?? false);
  return Platform.create(o);
}

/** A small deterministic PRNG (xorshift32) so failures reproduce. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}
