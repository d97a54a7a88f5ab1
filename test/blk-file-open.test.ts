// Item 14: FileBackend.open never wipes an image. A missing file is created with `size`; an
// existing one is opened as it is, and a `size` that disagrees with it is refused (the file
// unchanged); `readOnly` needs an existing file and makes the device read-only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBackend, Code, Platform, VdpaSimBlk, VIRTIO_BLK_F_RO, hasFeature } from '../src/node.ts';

function withDir(fn: (dir: string) => Promise<void>) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vdpa-blk-open-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('open with size creates a missing image, and reopening keeps its data', withDir(async (dir) => {
  const file = join(dir, 'a.img');
  const b1 = await FileBackend.open(file, { size: 8192 });
  assert.equal(b1.capacity, 16);
  await b1.write(3, new Uint8Array(512).fill(0x42));
  await b1.close();
  const b2 = await FileBackend.open(file, { size: 8192 });
  const back = await b2.read(3, 512);
  assert.ok(back.every((x) => x === 0x42), 'the existing image was not wiped');
  await b2.close();
  const b3 = await FileBackend.open(file);
  assert.equal(b3.capacity, 16);
  await b3.close();
}));

test('a size that disagrees with an existing image is refused and the file is unchanged', withDir(async (dir) => {
  const file = join(dir, 'b.img');
  const img = new Uint8Array(4096).fill(7);
  writeFileSync(file, img);
  for (const size of [2048, 8192]) {
    await assert.rejects(FileBackend.open(file, { size }), (e: { code: string }) => e.code === Code.InvalidArgument);
  }
  assert.equal(statSync(file).size, 4096);
  assert.deepEqual(new Uint8Array(readFileSync(file)), img);
}));

test('a missing image without size, or read-only, is not found; bad sizes are refused', withDir(async (dir) => {
  const file = join(dir, 'none.img');
  await assert.rejects(FileBackend.open(file), (e: { code: string }) => e.code === Code.NotFound);
  await assert.rejects(FileBackend.open(file, { size: 4096, readOnly: true }), (e: { code: string }) => e.code === Code.NotFound);
  await assert.rejects(FileBackend.open(file, { size: 1000 }), (e: { code: string }) => e.code === Code.InvalidArgument);
}));

test('a read-only image makes the device offer VIRTIO_BLK_F_RO', withDir(async (dir) => {
  const file = join(dir, 'ro.img');
  writeFileSync(file, new Uint8Array(4096));
  const b = await FileBackend.open(file, { readOnly: true });
  assert.equal(b.readOnly, true);
  const dev = new VdpaSimBlk(Platform.create({ ramSize: 1 << 20 }), { name: 'ro', backend: b });
  assert.ok(hasFeature(dev.getDeviceFeatures(), VIRTIO_BLK_F_RO));
  await b.close();
}));
