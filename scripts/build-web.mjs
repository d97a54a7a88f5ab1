// Builds the demo page (web/) into build/web/: esbuild bundles the page, the device worker and
// the lab worker from the TypeScript sources (uPlot included: a dev dependency bundled into the
// page, never a dependency of the package). Needs src/loader/wasm-code-*.ts, which
// `node scripts/build-wasm.mjs` writes. Usable as a module: `await buildWeb()`.

import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const WEB_OUT = path.join(ROOT, 'build/web');

/** Bundles web/ into build/web/ and returns that directory. */
export async function buildWeb({ minify = false } = {}) {
  if (!existsSync(path.join(ROOT, 'src/loader/wasm-code-unshared-simd.ts'))) {
    throw new Error('src/loader/wasm-code-*.ts are missing: run `node scripts/build-wasm.mjs` first');
  }
  await mkdir(WEB_OUT, { recursive: true });
  await build({
    absWorkingDir: ROOT,
    entryPoints: ['web/main.ts', 'web/device-worker.ts', 'web/lab-worker.ts'],
    outdir: WEB_OUT,
    bundle: true,
    format: 'esm',
    target: 'es2022',
    platform: 'browser',
    sourcemap: true,
    minify,
    loader: { '.css': 'text' },
    logLevel: 'warning',
    // src/loader/wasm-global.ts only declares types: that its bare import is dropped is right.
    logOverride: { 'ignored-bare-import': 'silent' },
    // src/lab/node-runner.ts and src/node/* are never imported by the page; keep Node built-ins out.
    external: ['node:*'],
  });
  await copyFile(path.join(ROOT, 'web/index.html'), path.join(WEB_OUT, 'index.html'));
  return WEB_OUT;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const out = await buildWeb({ minify: process.argv.includes('--minify') });
  console.log(`built ${path.relative(ROOT, out)}/`);
}
