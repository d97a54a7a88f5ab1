// serveVdpa on a platform given up front (its `platform` option: the served side already holds
// it, e.g. attached to an emulator's memory by a worker of its own) serves without an `attach`
// request, and its serving loop runs: it polls, parks and yields like one started by `attach`.
// The loop starts inside serveVdpa, so the test runs both ends in this thread over a
// MessageChannel (the loop parks at most idleWaitMs in Atomics.wait, which Node's main thread may).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, RemoteVdpaBus, serveVdpa } from '../src/index.ts';

test('serveVdpa({ platform }): no attach request, devices added over the channel, the loop polls and yields', async () => {
  const platform = Platform.create({ shared: true, ramSize: 16 << 20, privateSize: 8 << 20 });
  const { port1, port2 } = new MessageChannel();
  const served = serveVdpa(port1, { platform: Platform.attach(platform.handle({ priv: 2 << 20, ram: 8 << 20 })), idleWaitMs: 5 });
  const bus = await RemoteVdpaBus.connect(port2, platform, { attach: false });
  try {
    assert.deepEqual(await bus.devAdd('vdpasim_net', 'net0'), { name: 'net0', nvqs: 3, deviceId: 1 });
    const s0 = await bus.stats();
    // The loop parks 5 ms at a time and yields after each idle park: three yields come, however
    // slow the machine (the 10 s bound is a hang guard, not a time limit on the loop).
    let s1 = await bus.stats();
    for (let i = 0; i < 1000 && s1.yields <= s0.yields + 2; i++) {
      await new Promise((r) => setTimeout(r, 10));
      s1 = await bus.stats();
    }
    assert.ok(s1.yields > s0.yields + 2, `yields ${s0.yields} → ${s1.yields}`);
    assert.ok(s1.polls > s0.polls && s1.sleeps > s0.sleeps, JSON.stringify({ s0, s1 }));
    // The server stops right after answering (its goodbye may overtake the answer).
    await bus.request('shutdown').catch(() => {});
    await served;
  } finally {
    bus.close();
    port1.close();
  }
});
