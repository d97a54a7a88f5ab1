// The package as a user gets it: declarations that type-check in a Node-only project
// (lib es2022 + @types/node, no skipLibCheck) and in a DOM/bundler one, declaration maps, no
// base64 in the .d.ts, the plain wasm builds loaded only on demand, a path to the .wasm files
// for Node, and shared memory refused early on a page without cross-origin isolation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, readdirSync, symlinkSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Platform, Code, VirtioError, ringModule } from '../src/index.ts';
import { ringWasmUrl } from '../src/node.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
let tmp = '';
let pkg = '';

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'vdpa-wasm-pkg-'));
  pkg = join(tmp, 'pkg');
  mkdirSync(pkg);
  writeFileSync(join(pkg, 'package.json'), readFileSync(join(root, 'package.json')));
  // The declarations as `npm run build` emits them (tsconfig.build.json), into a scratch copy.
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', join(pkg, 'dist'), '--emitDeclarationOnly'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

test('declarations: a map beside each, and no embedded wasm in them', () => {
  const files = walk(join(pkg, 'dist'));
  const dts = files.filter((f) => f.endsWith('.d.ts'));
  assert.ok(dts.length > 40);
  for (const f of dts) assert.ok(files.includes(f + '.map'), `${f}.map`);
  const codes = dts.filter((f) => /wasm-code-/.test(f));
  assert.equal(codes.length, 4, 'one module per release build');
  for (const f of [...codes, ...dts]) {
    assert.ok(statSync(f).size < 64 * 1024, `${f} is ${statSync(f).size} bytes`);
    assert.doesNotMatch(readFileSync(f, 'utf8'), /[A-Za-z0-9+/]{400}/, `${f} carries base64`);
  }
  assert.match(readFileSync(codes[0]!, 'utf8'), /export declare const code: string;/);
});

/** Type-checks `main.ts` against the scratch package with `compilerOptions`; returns tsc's output. */
function consumer(name: string, compilerOptions: Record<string, unknown>, main: string): { status: number | null; out: string } {
  const dir = join(tmp, name);
  mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true });
  symlinkSync(pkg, join(dir, 'node_modules', 'vdpa-wasm'), 'dir');
  symlinkSync(join(root, 'node_modules', '@types', 'node'), join(dir, 'node_modules', '@types', 'node'), 'dir');
  if (existsSync(join(root, 'node_modules', 'undici-types'))) symlinkSync(join(root, 'node_modules', 'undici-types'), join(dir, 'node_modules', 'undici-types'), 'dir');
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, ...compilerOptions }, files: ['main.ts'] }));
  writeFileSync(join(dir, 'main.ts'), main);
  const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

const MAIN = `
import { Platform, VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, DriverQueue, ringFeatures, loadRingModule, type BlkBackend, type VdpaDevice } from 'vdpa-wasm';
import { ringWasmUrl, FileBackend } from 'vdpa-wasm/node';
import { runVdpa } from 'vdpa-wasm/cli';
import { attachV86, v86Platform, v86SharedMemory, type V86Attachment } from 'vdpa-wasm/v86';

await loadRingModule({ shared: false, simd: false });
const p = Platform.create({ ramSize: 1 << 20 });
const bytes: number = p.memory.buffer.byteLength;
const bus = new VdpaBus();
bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
bus.registerMgmtDevice(new VdpaSimBlkMgmt(p));
const q = new DriverQueue(p, { size: 64, features: ringFeatures({ packed: true }) });
const url: URL = ringWasmUrl({ shared: true, simd: true });
const rc: number = runVdpa(['dev', 'show'], { bus, out: (s) => void s, err: (s) => void s });
const backend: BlkBackend | null = null;
// devAdd typed by management device name; events typed by name.
const net = bus.devAdd('vdpasim_net', 'vdpa0');
net.setMac('02:00:00:00:00:01');
const blkCap: number = bus.devAdd('vdpasim_blk', 'blk0', { capacity: 8 }).capacity;
bus.addEventListener('device-add', (e) => { const name: string = e.detail; void name; });
net.addEventListener('needs-reset', (e) => { const vq: number = e.detail.vq; void vq; });
export { blkCap };
// A management device of one's own registers the device type it makes.
interface MyDevice extends VdpaDevice { hello(): string }
declare module 'vdpa-wasm' { interface VdpaMgmtDeviceTypes { my_mgmt: MyDevice } }
const mine: string = bus.devAdd('my_mgmt', 'm0').hello();
export { mine };
export { bytes, q, url, rc, backend, FileBackend };
// The v86 adapter's declarations stand alone (v86 is an optional peer: not installed here).
const plug = (emulator: object, file: Parameters<typeof attachV86>[2]): V86Attachment => attachV86(emulator, v86Platform(emulator), file, { slot: 9 });
const shared: WebAssembly.Memory = v86SharedMemory(new Uint8Array(8)).memory;
export { plug, shared };
`;

test('a Node-only project (lib es2022, @types/node, no skipLibCheck) type-checks against the declarations', () => {
  const r = consumer('node-only', { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['es2022'], types: ['node'], skipLibCheck: false }, MAIN);
  assert.equal(r.status, 0, r.out);
});

test('a DOM project with bundler resolution type-checks too (the WebAssembly types merge with lib.dom)', () => {
  const r = consumer('dom-bundler', { target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', lib: ['es2022', 'dom', 'dom.iterable'], types: ['node'], skipLibCheck: false }, MAIN);
  assert.equal(r.status, 0, r.out);
});

test('the plain (no SIMD) builds load on demand; the SIMD ones are there from the start', () => {
  // A fresh process: nothing has loaded the plain builds yet.
  const code = `
    import { ringModule, loadRingModule, Code } from './src/index.ts';
    const out = [];
    ringModule({ shared: false, simd: true }); ringModule({ shared: true, simd: true });
    try { ringModule({ shared: false, simd: false }); out.push('loaded'); } catch (e) { out.push(e.code); }
    const m = await loadRingModule({ shared: false, simd: false });
    out.push(ringModule({ shared: false, simd: false }) === m ? 'same' : 'other');
    try { ringModule({ shared: true, simd: false }); out.push('loaded'); } catch (e) { out.push(e.code); }
    console.log(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), [Code.FailedPrecondition, 'same', Code.FailedPrecondition]);
  const loader = readFileSync(join(root, 'src', 'loader', 'wasm.ts'), 'utf8');
  const statics = [...loader.matchAll(/^import .* from '(\.\/wasm-code-[^']+)'/gm)].map((m) => m[1]);
  assert.deepEqual(statics, ['./wasm-code-unshared-simd.ts', './wasm-code-shared-simd.ts']);
});

test('ringWasmUrl: the shipped .wasm files, the same modules the loader embeds', () => {
  for (const shared of [false, true]) {
    const file = ringWasmUrl({ shared, simd: true });
    const fromFile = new WebAssembly.Module(readFileSync(file));
    const embedded = ringModule({ shared, simd: true });
    assert.deepEqual(WebAssembly.Module.exports(fromFile), WebAssembly.Module.exports(embedded));
    assert.deepEqual(WebAssembly.Module.imports(fromFile), WebAssembly.Module.imports(embedded));
  }
  assert.match(ringWasmUrl().pathname, /\/build\/vdpa\.wasm$/);
  assert.match(ringWasmUrl({ shared: true, simd: false }).pathname, /\/build\/vdpa\.shared\.plain\.wasm$/);
});

test('shared: true on a page that is not cross-origin isolated fails at once, naming COOP/COEP', () => {
  const g = globalThis as { crossOriginIsolated?: boolean };
  g.crossOriginIsolated = false;
  try {
    assert.throws(() => Platform.create({ shared: true, ramSize: 65536 }), (e: unknown) => {
      assert.ok(e instanceof VirtioError);
      assert.equal(e.code, Code.Unsupported);
      assert.match(e.message, /Cross-Origin-Opener-Policy: same-origin/);
      assert.match(e.message, /Cross-Origin-Embedder-Policy: require-corp/);
      return true;
    });
    assert.equal(Platform.create({ ramSize: 65536 }).shared, false, 'an unshared memory needs no isolation');
    g.crossOriginIsolated = true;
    assert.equal(Platform.create({ shared: true, ramSize: 65536 }).shared, true);
  } finally {
    delete g.crossOriginIsolated;
  }
});

test('package.json: engines, sideEffects for the entry scripts only, the docs script', () => {
  const p = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string }; sideEffects: string[]; scripts: Record<string, string>; devDependencies: Record<string, string>; dependencies?: object };
  assert.equal(p.engines.node, '>=20');
  assert.equal(p.dependencies, undefined, 'no runtime dependencies');
  assert.ok(p.devDependencies.typedoc);
  assert.equal(p.scripts.docs, 'typedoc');
  assert.ok(Array.isArray(p.sideEffects));
  for (const entry of ['./src/cli/main.ts', './src/lab/node-worker.ts', './src/browser/lab-worker.ts']) {
    assert.ok(p.sideEffects.includes(entry), entry);
    assert.ok(existsSync(join(root, entry)), entry);
  }
  // Every module that runs code when imported (a worker or tool entry) is listed, or a bundler
  // drops `import './entry'` (web/lab-worker.ts bundles src/browser/lab-worker.ts that way).
  const srcFiles = walk(join(root, 'src')).filter((f) => f.endsWith('.ts'));
  const withTopLevelCalls = srcFiles.filter((f) => /^(?!export|import|const|let|var|function|class|interface|type|declare|async|enum|abstract)[A-Za-z_$][\w$.]*(?:\(|\s=\s).*[;{(,]$/m.test(readFileSync(f, 'utf8').replace(/^\s*\/\/.*$/gm, '')))
    .map((f) => './' + f.slice(root.length).replace(/\\/g, '/'));
  const listed = (f: string) => p.sideEffects.some((g) => new RegExp('^' + g.replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*') + '$').test(f));
  assert.deepEqual(withTopLevelCalls.filter((f) => !listed(f)), []);
});

test('the house: imports go one way (rings → platform, drivers → virtio/, never the reverse)', () => {
  const importsOf = (dir: string) => readdirSync(join(root, 'src', dir)).filter((f) => f.endsWith('.ts')).flatMap((f) =>
    [...readFileSync(join(root, 'src', dir, f), 'utf8').matchAll(/^(?:import|export)\b[^;]*?from '([^']+)'/gms)].map((m) => `${dir}/${f} → ${m[1]}`));
  assert.deepEqual(importsOf('platform').filter((s) => s.includes('../ring/')), [], 'the platform does not import the rings');
  assert.deepEqual(importsOf('drivers').filter((s) => /\.\.\/(devices|mgmt)\//.test(s)), [], 'a driver knows the spec, not the simulator');
});

test('the house: the generic management device imports no device class; each simulator one lives beside its device', () => {
  const base = readFileSync(join(root, 'src', 'mgmt', 'base.ts'), 'utf8');
  assert.deepEqual([...base.matchAll(/^import (?!type)[^;]*from '(\.\.\/devices\/[^']+)'/gm)].map((m) => m[1]), []);
  for (const f of ['net-mgmt.ts', 'blk-mgmt.ts']) assert.ok(existsSync(join(root, 'src', 'devices', f)), f);
});
