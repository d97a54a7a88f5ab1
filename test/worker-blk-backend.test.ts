// Blk backend descriptors in a Node device worker (src/worker/backend.ts): devAdd with
// `backend: { file }` opens a FileBackend in the worker (what the guest writes is in the file,
// the file is closed when the device is deleted); an unknown descriptor is invalid_argument, a
// missing file not_found, an OPFS descriptor (which only a browser worker can open)
// unsupported, and nothing is left open after any of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, readlinkSync, rmSync, existsSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Platform, VirtioBinding, VirtioBlkDriver, VirtioError, Code, checkBackendDescriptor } from '../src/index.ts';
import { spawnDeviceWorker } from '../src/node.ts';
import { blockPattern } from './helpers/migration.ts';

const isCode = (c: Code) => (e: unknown) => e instanceof VirtioError && e.code === c;

/** Paths of the files this process holds open (Linux: /proc/self/fd; workers share the process's descriptors). */
function openFiles(): string[] | null {
  if (!existsSync('/proc/self/fd')) return null;
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('checkBackendDescriptor keeps known fields and refuses anything else with invalid_argument', () => {
  assert.deepEqual(checkBackendDescriptor({ file: 'a.img', size: 4096, readOnly: false }), { file: 'a.img', size: 4096, readOnly: false });
  assert.deepEqual(checkBackendDescriptor({ opfs: 'd/a.img', sectors: 8 }), { opfs: 'd/a.img', sectors: 8 });
  for (const bad of [null, 'a.img', [], {}, { idb: 'x' }, { file: 'a', opfs: 'b' }, { file: '' }, { file: 3 }, { file: 'a', sectors: 8 },
    { opfs: 'a', size: 4096 }, { file: 'a', readOnly: 'yes' }, { file: 'a', size: '4096' }]) {
    assert.throws(() => checkBackendDescriptor(bad), isCode(Code.InvalidArgument), JSON.stringify(bad));
  }
});

test('a Node device worker opens { file } itself: the guest\'s writes are in the file, deleting the device closes it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdpa-wbk-'));
  const p = Platform.create({ shared: true, ramSize: 24 << 20, privateSize: 8 << 20 });
  const w = await spawnDeviceWorker({ platform: p });
  try {
    const file = join(dir, 'disk.img');
    const real = realpathSync(dir) + '/disk.img';
    // A missing file without a size: not_found, and no device.
    await assert.rejects(w.bus.devAdd('vdpasim_blk', 'b0', { backend: { file } }), isCode(Code.NotFound));
    // Unknown descriptors and a capacity next to a backend: invalid_argument.
    await assert.rejects(w.bus.devAdd('vdpasim_blk', 'b0', { backend: { idb: 'x' } as never }), isCode(Code.InvalidArgument));
    await assert.rejects(w.bus.devAdd('vdpasim_blk', 'b0', { backend: { file, size: 1 << 16 }, capacity: 128 }), isCode(Code.InvalidArgument));
    // OPFS exists only in browsers: a Node worker cannot open it.
    await assert.rejects(w.bus.devAdd('vdpasim_blk', 'b0', { backend: { opfs: 'disk.img', sectors: 128 } }), isCode(Code.Unsupported));
    // A net device takes no backend (its management device refuses the attribute).
    await assert.rejects(w.bus.devAdd('vdpasim_net', 'n0', { backend: { file, size: 1 << 16 } }), isCode(Code.Unsupported));
    assert.equal(existsSync(file), false, 'refused attributes are refused before the storage is opened: no file was created');
    assert.match((await w.bus.vdpa(['dev', 'show'])).out, /^$/, 'no device was left behind');

    // Created with a size; afterwards it exists and is opened without one.
    await w.bus.devAdd('vdpasim_blk', 'first', { backend: { file, size: 1 << 16 } });
    await w.bus.devDel('first');
    await until(() => !(openFiles()?.includes(real) ?? false));
    const info = await w.bus.devAdd('vdpasim_blk', 'b0', { backend: { file } });
    assert.equal(info.name, 'b0');
    assert.equal(readFileSync(file).length, 1 << 16);
    const dev = await w.bus.openDevice('b0');
    assert.deepEqual(await dev.storage(), { kind: 'backend', storage: `file:${real}`, descriptor: { file } });
    const binding = new VirtioBinding(dev, p, 64);
    const drv = new VirtioBlkDriver(dev, binding);
    binding.init(drv);
    assert.equal(drv.capacity, 128, 'the capacity is the file\'s');
    await drv.write(8, blockPattern(1, 7));
    assert.deepEqual(new Uint8Array(readFileSync(file).subarray(4096, 8192)), blockPattern(1, 7), 'the write is in the file');
    // Written behind the device's back (the same file): the guest reads it.
    const outside = Buffer.from(readFileSync(file));
    outside.set(blockPattern(2, 9), 8192);
    writeFileSync(file, outside);
    const buf = new Uint8Array(4096);
    await drv.read(16, buf);
    assert.deepEqual(buf, blockPattern(2, 9));
    await assert.rejects(w.bus.devAdd('vdpasim_blk', 'b0', { backend: { file } }), isCode(Code.AlreadyExists));
    if (openFiles()) assert.ok(openFiles()!.includes(real), 'the worker holds the file open');
    await w.bus.devDel('b0');
    if (openFiles()) assert.ok(!openFiles()!.includes(real), 'deleting the device closed the file');
  } finally {
    await w.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
