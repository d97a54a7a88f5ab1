// The worker channel (src/worker/channel.ts): ordered request/response over a MessagePort,
// typed errors across it, and a closed port rejecting pending and later requests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel, Worker } from 'node:worker_threads';
import { Channel, VirtioError, Code } from '../src/index.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('answers come back in request order even when handlers are async and finish out of order', async () => {
  const { port1, port2 } = new MessageChannel();
  const order: number[] = [];
  const server = new Channel(port2, {
    handler: async (op, args) => {
      const n = args[0] as number;
      await sleep(n % 3 === 0 ? 10 : 0); // earlier requests are slower
      order.push(n);
      return { op, n, big: BigInt(n) << 40n, bytes: new Uint8Array([n, n + 1]) };
    },
  });
  const client = new Channel(port1);
  const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => client.request('echo', i)));
  assert.deepEqual(order, Array.from({ length: 12 }, (_, i) => i), 'handled one at a time, in order');
  answers.forEach((a, i) => assert.deepEqual(a, { op: 'echo', n: i, big: BigInt(i) << 40n, bytes: new Uint8Array([i, i + 1]) }));
  client.close();
  server.close();
});

test('a VirtioError crosses with its code and message; other throws become Internal', async () => {
  const { port1, port2 } = new MessageChannel();
  const server = new Channel(port2, {
    handler: (op) => {
      if (op === 'typed') throw new VirtioError(Code.AlreadyExists, 'device net1 already exists');
      if (op === 'plain') throw new TypeError('boom');
      if (op === 'fn') return () => 1; // not cloneable
      return 'ok';
    },
  });
  const client = new Channel(port1);
  await assert.rejects(client.request('typed'), (e: unknown) => e instanceof VirtioError && e.code === Code.AlreadyExists && e.rawMessage === 'device net1 already exists');
  await assert.rejects(client.request('plain'), (e: unknown) => e instanceof VirtioError && e.code === Code.Internal && /boom/.test(e.rawMessage));
  await assert.rejects(client.request('fn'), (e: unknown) => e instanceof VirtioError && e.code === Code.Internal);
  assert.equal(await client.request('after'), 'ok', 'the channel still works after errors');
  // A side without a handler refuses requests.
  await assert.rejects(server.request('x'), (e: unknown) => e instanceof VirtioError && e.code === Code.Unsupported);
  client.close();
  server.close();
});

test('closing one end rejects the pending and later requests of the other with Cancelled', async () => {
  const { port1, port2 } = new MessageChannel();
  let release: (() => void) | null = null;
  const server = new Channel(port2, { handler: () => new Promise<void>((f) => (release = f)) });
  const client = new Channel(port1);
  const pending = client.request('slow');
  while (!release) await sleep(1); // the server is inside the handler
  server.close();
  await assert.rejects(pending, (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
  await assert.rejects(client.request('later'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
  assert.equal(client.pendingCount, 0);
  (release as unknown as () => void)();
});

test('a worker that exits rejects pending requests (no hang, no unhandled rejection)', async () => {
  const w = new Worker('setTimeout(() => process.exit(3), 20)', { eval: true });
  const ch = new Channel(w, { name: 'doomed' });
  let reason: VirtioError | null = null;
  ch.onClose((e) => (reason = e));
  await assert.rejects(ch.request('never-answered'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled && /exited/.test(e.rawMessage));
  assert.ok(reason);
  await assert.rejects(ch.request('again'), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
});

test('a port-like object without message events is refused with InvalidArgument', () => {
  assert.throws(() => new Channel({ postMessage() {} }), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
  assert.throws(() => new Channel({} as never), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
});
