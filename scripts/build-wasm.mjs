// Builds every wasm variant with asc and embeds each release one in src/loader/wasm-code-*.ts.
//   release × {unshared, shared} × {simd, plain}  (the loader picks one at run time)
//   debug   × {unshared, shared}                  (tests run the ring suites on it too)
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const asc = join(root, 'node_modules', 'assemblyscript', 'bin', 'asc.js');
mkdirSync(join(root, 'build'), { recursive: true });

const variants = [];
for (const target of ['release', 'debug']) {
  for (const shared of [false, true]) {
    for (const simd of target === 'release' ? [true, false] : [true]) {
      const name = `vdpa${target === 'debug' ? '.debug' : ''}${shared ? '.shared' : ''}${simd ? '' : '.plain'}`;
      const args = [asc, 'assembly/index.ts', '--config', 'asconfig.json', '--target', target,
        '-o', `build/${name}.wasm`, '-t', `build/${name}.wat`];
      if (shared) args.push('--sharedMemory', '--maximumMemory', '65536', '--use', 'VDPA_SHARED=1');
      if (!simd) args.push('--disable', 'simd');
      execFileSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
      const wat = readFileSync(join(root, 'build', `${name}.wat`), 'utf8');
      // The datapath must not allocate (shared/TOOLCHAIN.md): no runtime in the module.
      if (wat.includes('~lib/rt')) throw new Error(`${name}: assembly/ allocates (~lib/rt in the .wat)`);
      variants.push({ name, target, shared, simd, size: statSync(join(root, 'build', `${name}.wasm`)).size });
    }
  }
}

const release = variants.filter((v) => v.target === 'release');
// One module per release build, so an application (or a bundler) pulls in only the builds it
// loads: src/loader/wasm.ts imports the two SIMD builds and loads the plain ones on demand.
// Each literal is typed `string` so the declarations (.d.ts) stay free of the base64.
for (const v of release) {
  const key = `${v.shared ? 'shared' : 'unshared'}-${v.simd ? 'simd' : 'plain'}`;
  const b64 = readFileSync(join(root, 'build', `${v.name}.wasm`)).toString('base64');
  const out = '// generated — do not edit (scripts/build-wasm.mjs embeds build/*.wasm)\n'
    + `/** Base64 of build/${v.name}.wasm (${v.size} bytes): the ${v.shared ? 'shared' : 'unshared'}-memory, ${v.simd ? 'SIMD' : 'plain (no SIMD)'} release build. */\n`
    + `export const code: string = '${b64}';\n`;
  writeFileSync(join(root, 'src', 'loader', `wasm-code-${key}.ts`), out);
}
// The single-module wasm-code.ts of older builds (before one module per build) would still be
// compiled and packed: remove it.
rmSync(join(root, 'src', 'loader', 'wasm-code.ts'), { force: true });
for (const v of variants) console.log(`${v.name}.wasm ${v.size} bytes`);
const budget = 64 * 1024;
for (const v of release) if (v.size > budget) throw new Error(`${v.name}.wasm is ${v.size} bytes, over the ${budget}-byte budget`);
