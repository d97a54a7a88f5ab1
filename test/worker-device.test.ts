// Devices in a worker, drivers in the main thread (issue 8 §2): virtio_vdpa with the net and blk
// drivers over RemoteVdpaDevice, config ops through the mailbox, kicks and calls as doorbells.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, VdpaBus, createVirtioVdpa, VirtioError, Code, VIRTIO_CONFIG_S_NEEDS_RESET } from '../src/index.ts';
import { spawnDeviceWorker } from '../src/node.ts';
import { until } from './helpers/until.ts';

const MAC = (n: number) => [0x02, 0, 0, 0, 0, n];
const macStr = (n: number) => MAC(n).map((x) => x.toString(16).padStart(2, '0')).join(':');

function frame(dst: number[], src: number[], seed: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 14; i < len; i++) f[i] = (seed * 31 + i * 7) & 0xff;
  f.set(dst, 0);
  f.set(src, 6);
  f.set([0x88, 0xb5], 12);
  return f;
}

async function setup() {
  const platform = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 16 << 20 });
  const w = await spawnDeviceWorker({ platform });
  const bus = new VdpaBus();
  const virtio = createVirtioVdpa(platform, { queueSize: 64 });
  bus.registerDriver(virtio);
  return { platform, w, bus, virtio };
}

test('net pair on the worker switch: frames both ways, byte for byte, drivers in the main thread', async () => {
  const { w, bus, virtio } = await setup();
  try {
    for (const n of [1, 2]) {
      await w.bus.devAdd('vdpasim_net', `net${n}`, { mac: macStr(n) });
      await w.bus.switchConnect(`net${n}`);
      bus.addDevice(await w.bus.openDevice(`net${n}`));
    }
    const show = await w.bus.vdpa(['dev', 'show']);
    assert.equal(show.code, 0);
    assert.match(show.out, /^net1: type network mgmtdev vdpasim_net/m);
    const a = virtio.net('net1');
    const b = virtio.net('net2');
    assert.deepEqual([...a.mac], MAC(1));
    const gotA: Uint8Array[] = [];
    const gotB: Uint8Array[] = [];
    a.onFrame((f) => gotA.push(f));
    b.onFrame((f) => gotB.push(f));
    const toB: Uint8Array[] = [];
    const toA: Uint8Array[] = [];
    for (let i = 0; i < 200; i++) {
      toB.push(frame(MAC(2), MAC(1), i, 60 + ((i * 37) % 1400)));
      toA.push(frame(MAC(1), MAC(2), 1000 + i, 60 + ((i * 53) % 1400)));
    }
    for (let i = 0; i < 200; i += 10) {
      assert.equal(a.sendBatch(toB.slice(i, i + 10)), 10);
      assert.equal(b.sendBatch(toA.slice(i, i + 10)), 10);
      await until(() => gotB.length >= i + 10 && gotA.length >= i + 10, 5000, `frames ${i}..${i + 9}`);
    }
    assert.deepEqual(gotB, toB);
    assert.deepEqual(gotA, toA);
    const st = await w.bus.stats();
    assert.ok(st.kicks > 0, 'kicks crossed as doorbells');
  } finally {
    await w.close();
  }
});

test('blk in a worker: writes then reads match a model; flush and GET_ID cross', async () => {
  const { w, bus, virtio } = await setup();
  try {
    await w.bus.devAdd('vdpasim_blk', 'blk0');
    bus.addDevice(await w.bus.openDevice('blk0'));
    const d = virtio.blk('blk0');
    const sectors = d.capacity;
    assert.equal(sectors, 8192); // the RAM disk's capacity, read through getConfig in the worker
    const model = new Uint8Array(sectors * 512);
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8);
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 64; i++) {
      const n = 1 + (rnd() % 16);
      const s = rnd() % (sectors - n);
      const data = new Uint8Array(n * 512);
      for (let k = 0; k < data.length; k++) data[k] = rnd() & 0xff;
      model.set(data, s * 512);
      pending.push(d.write(s, data));
      if (pending.length === 8) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    await d.flush();
    for (let s = 0; s < sectors; s += 256) {
      const buf = new Uint8Array(256 * 512);
      await d.read(s, buf);
      assert.deepEqual(buf, model.subarray(s * 512, (s + 256) * 512), `sectors ${s}..${s + 255}`);
    }
    assert.equal(typeof (await d.getId()), 'string');
  } finally {
    await w.close();
  }
});

test('device worker terminated mid-I/O: pending blk requests reject, the device reports NEEDS_RESET, nothing hangs', async () => {
  const { w, bus, virtio } = await setup();
  await w.bus.devAdd('vdpasim_blk', 'blk0');
  const dev = await w.bus.openDevice('blk0');
  bus.addDevice(dev);
  const d = virtio.blk('blk0');
  const errors: unknown[] = [];
  d.addEventListener('error', (e) => errors.push((e as CustomEvent).detail));
  await d.write(0, new Uint8Array(512).fill(1)); // the device works
  // Requests in flight (the device is suspended, so they wait in the ring), then the worker dies under them.
  dev.suspend();
  const reqs: Promise<unknown>[] = [];
  for (let i = 0; i < 32; i++) reqs.push(d.write(i * 16, new Uint8Array(16 * 512).fill(i)).then(() => 'ok', (e: unknown) => e));
  await w.worker.terminate();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const results = await Promise.race([
    Promise.all(reqs),
    new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error('requests hung after the worker died')), 5000))),
  ]).finally(() => clearTimeout(timer));
  // Every request in flight rejected with the driver's DEVICE_NEEDS_RESET error.
  for (const r of results) assert.ok(r instanceof VirtioError && r.code === Code.FailedPrecondition, `typed error, got ${String(r)}`);
  assert.ok(errors.length >= 1, 'the driver raised an error event');
  await until(() => dev.deadReason !== null, 5000, 'the remote device to die');
  assert.ok(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.throws(() => dev.getConfig(0, 8), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
  await assert.rejects(d.read(0, new Uint8Array(512)), (e: unknown) => e instanceof VirtioError);
  await assert.rejects(w.bus.devAdd('vdpasim_blk', 'blk1'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
  bus.devDel('blk0'); // a dead device leaves the bus cleanly
  await w.close();
});

test('channel closed: management requests reject with a typed error, open devices die', async () => {
  const { w, bus } = await setup();
  try {
    await w.bus.devAdd('vdpasim_net', 'net1');
    const dev = await w.bus.openDevice('net1');
    bus.addDevice(dev);
    w.bus.close();
    assert.ok(dev.deadReason instanceof VirtioError);
    assert.equal(dev.deadReason.code, Code.Cancelled);
    await assert.rejects(w.bus.devAdd('vdpasim_net', 'net2'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    await assert.rejects(w.bus.openDevice('net1'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    // The worker saw the channel close, released its devices and ended by itself.
    const code = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the device worker did not exit after the channel closed')), 5000);
      w.worker.once('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    assert.equal(code, 0);
  } finally {
    await w.close();
  }
});

test('errors from the device cross typed: bad config range, unknown mgmtdev, duplicate name', async () => {
  const { w } = await setup();
  try {
    await assert.rejects(w.bus.devAdd('nope', 'x'), (e: unknown) => e instanceof VirtioError && e.code === Code.NotFound);
    await w.bus.devAdd('vdpasim_net', 'net1');
    await assert.rejects(w.bus.devAdd('vdpasim_net', 'net1'), (e: unknown) => e instanceof VirtioError && e.code === Code.AlreadyExists);
    const dev = await w.bus.openDevice('net1');
    assert.throws(() => dev.getConfig(0, 4096), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
    assert.throws(() => dev.setStatus(4), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
    await assert.rejects(w.bus.openDevice('net1'), (e: unknown) => e instanceof VirtioError && e.code === Code.AlreadyExists);
    // The device still answers after errors.
    assert.equal(dev.getStatus(), 0);
  } finally {
    await w.close();
  }
});

test('an idle device worker parks instead of spinning (a few polls per bounded park)', async () => {
  const { w, bus, virtio } = await setup();
  try {
    await w.bus.devAdd('vdpasim_net', 'net1');
    bus.addDevice(await w.bus.openDevice('net1'));
    virtio.net('net1').send(frame(MAC(2), MAC(1), 1, 64)); // some work, then nothing
    await new Promise((r) => setTimeout(r, 50));
    const a = await w.bus.stats();
    await new Promise((r) => setTimeout(r, 300));
    const b = await w.bus.stats();
    // A spinning loop polls millions of times in 300 ms; a parked one once per park (<= 50 ms)
    // plus the stats requests' wake-ups.
    assert.ok(b.polls - a.polls < 100, `polls while idle: ${b.polls - a.polls}`);
    assert.ok(b.sleeps > a.sleeps, 'the loop slept');
  } finally {
    await w.close();
  }
});

test('a device released in the worker (rebound to vhost_vdpa) fails the next synchronous op at once, not after the timeout', { timeout: 20_000 }, async () => {
  const platform = Platform.create({ shared: true, ramSize: 32 << 20, privateSize: 16 << 20 });
  const w = await spawnDeviceWorker({ platform, syncTimeoutMs: 60_000 });
  try {
    await w.bus.devAdd('vdpasim_net', 'net1');
    const dev = await w.bus.openDevice('net1');
    assert.equal(dev.getStatus(), 0);
    assert.equal(await w.bus.bind('net1', 'vhost_vdpa'), 'vhost-vdpa-0'); // remote_vdpa lets it go
    assert.throws(() => dev.getConfig(0, 6), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
    assert.ok(dev.deadReason);
    assert.ok(dev.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
    await assert.rejects(w.bus.openDevice('net1'), (e: unknown) => e instanceof VirtioError && e.code === Code.FailedPrecondition);
  } finally {
    await w.close();
  }
});
