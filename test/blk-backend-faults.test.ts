// Item 4: a BlkBackend that throws, rejects, answers garbage, answers short or long, lacks a
// method, or has a bad capacity: each request ends with IOERR (a typed IoError at the driver),
// the device goes on serving, and nothing throws from a microtask or is left unhandled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VdpaSimBlk, createVirtioVdpa, Code, VIRTIO_CONFIG_S_NEEDS_RESET, type BlkBackend,
} from '../src/index.ts';
import { settle } from './helpers/blk-raw.ts';
import { trackEscapes } from './helpers/escapes.ts';

const escaped = trackEscapes();

/** A model disk of 64 sectors whose methods a test can sabotage. */
function modelBackend(over: Partial<Record<'read' | 'write' | 'flush', unknown>> = {}): BlkBackend {
  const disk = new Uint8Array(64 * 512);
  const b = {
    capacity: 64,
    read: async (s: number, len: number) => disk.slice(s * 512, s * 512 + len),
    write: async (s: number, d: Uint8Array) => void disk.set(d, s * 512),
    flush: async () => {},
  };
  return Object.assign(b, over) as unknown as BlkBackend;
}

function bring(backend: BlkBackend) {
  const p = Platform.create({ ramSize: 4 << 20 });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(p, { queueSize: 16 });
  bus.registerDriver(virtio);
  const dev = new VdpaSimBlk(p, { name: 'f', backend });
  bus.addDevice(dev);
  return { dev, blk: virtio.blk('f') };
}

async function expectIoError(p: Promise<unknown>) {
  await assert.rejects(p, (e: { code: string }) => e.code === Code.IoError);
}

/** After a fault: the device still serves a write + read round trip and never needed a reset. */
async function stillServes(dev: VdpaSimBlk, blk: ReturnType<typeof bring>['blk']) {
  const d = new Uint8Array(512).fill(0x5a);
  await blk.write(7, d);
  const back = new Uint8Array(512);
  await blk.read(7, back);
  assert.deepEqual(back, d);
  assert.equal(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  await settle();
  assert.deepEqual(escaped, [], 'nothing escaped into a microtask or an unhandled rejection');
}

const readFaults: [string, unknown][] = [
  ['throws synchronously', () => { throw new Error('boom'); }],
  ['rejects', async () => { throw new Error('boom'); }],
  ['rejects with a non-error', () => Promise.reject(42)],
  ['resolves to a string', async () => 'not bytes'],
  ['resolves to undefined', async () => undefined],
  ['returns a number, not a promise', () => 7],
  ['answers short', async (_s: number, len: number) => new Uint8Array(len - 1)],
  ['answers long', async (_s: number, len: number) => new Uint8Array(len + 512)],
  ['answers an ArrayBuffer', async (_s: number, len: number) => new ArrayBuffer(len)],
  ['returns a thenable whose then throws', () => ({ then() { throw new Error('bad then'); } })],
];

for (const [name, read] of readFaults) {
  test(`read that ${name}: IoError, the device goes on`, async () => {
    const backend = modelBackend();
    const good = backend.read.bind(backend);
    let sabotage = true;
    backend.read = ((s: number, len: number) => (sabotage ? (read as (s: number, l: number) => Promise<Uint8Array>)(s, len) : good(s, len)));
    const { dev, blk } = bring(backend);
    await expectIoError(blk.read(0, new Uint8Array(1024)));
    assert.ok(dev.backendFaults >= 1);
    sabotage = false;
    await stillServes(dev, blk);
  });
}

test('a synchronous throw does not strand the requests popped after it in the same batch', async () => {
  const backend = modelBackend();
  const good = backend.read.bind(backend);
  backend.read = (s, len) => {
    if (s === 0) throw new Error('boom');
    return good(s, len);
  };
  const { dev, blk } = bring(backend);
  const results = await Promise.allSettled([0, 1, 2, 3].map((s) => blk.read(s, new Uint8Array(512))));
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
  await stillServes(dev, blk);
});

test('write that throws, flush that is missing: IoError each', async () => {
  const backend = modelBackend();
  const good = backend.write.bind(backend);
  let sabotage = true;
  backend.write = (s, d) => {
    if (sabotage) throw new TypeError('write exploded');
    return good(s, d);
  };
  delete (backend as { flush?: unknown }).flush;
  const { dev, blk } = bring(backend);
  await expectIoError(blk.write(0, new Uint8Array(512)));
  await expectIoError(blk.flush());
  await expectIoError(blk.writeZeroes(0, 4)); // falls back to write(), which throws
  sabotage = false;
  await stillServes(dev, blk);
});

test('a backend capacity that is not a positive safe integer is refused at creation', () => {
  const p = Platform.create({ ramSize: 1 << 20 });
  for (const capacity of [NaN, 1.5, -1, 0, 2 ** 53, '64', undefined]) {
    const backend = { ...modelBackend(), capacity } as unknown as BlkBackend;
    assert.throws(() => new VdpaSimBlk(p, { name: 'x', backend }), (e: { code: string }) => e.code === Code.InvalidArgument, String(capacity));
  }
  const throwing = Object.defineProperty(modelBackend(), 'capacity', { get() { throw new Error('no'); } });
  assert.throws(() => new VdpaSimBlk(p, { name: 'x', backend: throwing }), (e: { code: string }) => e.code === Code.InvalidArgument);
});

test('a capacity that changes later does not change the disk the device offers', async () => {
  let cap = 64;
  const backend = Object.defineProperty(modelBackend(), 'capacity', { get: () => cap });
  const { dev, blk } = bring(backend);
  cap = 1 << 30;
  assert.equal(dev.capacity, 64);
  assert.equal(blk.capacity, 64);
  await assert.rejects(blk.read(64, new Uint8Array(512)), (e: { code: string }) => e.code === Code.InvalidArgument);
  await stillServes(dev, blk);
});
