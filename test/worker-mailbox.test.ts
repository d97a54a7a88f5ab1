// The synchronous mailbox (src/worker/mailbox.ts) without a second thread: what the caller sees
// when nobody answers, or when a request cannot fit. Round trips are in worker-device.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, MailboxClient, MailboxServer, DoorbellWaiter, VirtioError, Code } from '../src/index.ts';
import { put, get, MAILBOX_HEADER } from '../src/worker/mailbox.ts';
import { Worker } from 'node:worker_threads';

test('no server: the call gives up after its timeout with Cancelled, and the memory is never reused', () => {
  const p = Platform.create({ shared: true, ramSize: 1 << 20, privateSize: 1 << 20 });
  const m = new MailboxClient(p, 256);
  assert.throws(() => m.call('getStatus', [], 30), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
  m.free();
  // A late answer could still land in the orphaned mailbox: a new one must not get its bytes.
  const m2 = new MailboxClient(p, 256);
  assert.notEqual(m2.handle.addr, m.handle.addr);
  assert.throws(() => m.call('getStatus', [], 30), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled);
});

test('a request larger than the mailbox is refused before anything is written', () => {
  const p = Platform.create({ shared: true, ramSize: 1 << 20, privateSize: 1 << 20 });
  const m = new MailboxClient(p, 64);
  assert.throws(() => m.call('setConfig', [0, new Uint8Array(200)], 30), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
  m.free();
  const m2 = new MailboxClient(p, 64);
  assert.equal(m2.handle.addr, m.handle.addr, 'a mailbox that never timed out is freed for reuse');
});

test('a server refuses a handle outside the memory', () => {
  const p = Platform.create({ shared: true, ramSize: 1 << 20, privateSize: 1 << 20 });
  const w = new DoorbellWaiter(p);
  assert.throws(() => new MailboxServer(p, { addr: p.u8.length - 8, cap: 64 }, w, () => null), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
  assert.throws(() => new MailboxServer(p, { addr: 12, cap: 64 }, w, () => null), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument);
});

test('payload: byte arrays travel as raw bytes beside the JSON, at 8-aligned offsets, and come back as copies', () => {
  const p = Platform.create({ shared: true, ramSize: 1 << 20, privateSize: 1 << 20 });
  const m = new MailboxClient(p, 8192);
  const { addr, cap } = m.handle;
  const a = new Uint8Array(3000).map((_, i) => (i * 7) & 255);
  const b = new Uint8Array([1, 2, 3]);
  const value = ['migLoadSync', [a, { nested: [b, new Uint8Array(0)] }, 2n ** 70n, -5n, 'text', null]];
  assert.equal(put(p, addr, cap, value), true);
  // Layout (mailbox.ts): jsonLen u32 · nbins u32 · JSON · pad · table · bytes.
  const base = addr + MAILBOX_HEADER;
  const jl = p.u32[base >> 2]!;
  assert.equal(p.u32[(base >> 2) + 1], 3, 'three byte arrays');
  const json = new TextDecoder().decode(p.u8.slice(base + 8, base + 8 + jl));
  assert.ok(json.includes('{"$bin":0}') && json.includes('{"$bin":1}') && json.includes('{"$bin":2}'), json);
  assert.ok(json.length < 200, 'no number per byte in the JSON');
  const table = (base + ((8 + jl + 7) & ~7)) >> 2;
  const off0 = p.u32[table]!;
  assert.equal(off0 % 8, 0);
  assert.equal(p.u32[table + 1], 3000);
  assert.deepEqual(p.u8.slice(base + off0, base + off0 + 3000), a);
  assert.equal(p.u32[table + 2]! % 8, 0);
  const back = get(p, addr, cap) as [string, [Uint8Array, { nested: Uint8Array[] }, bigint, bigint, string, null]];
  assert.deepEqual(back, value);
  // A copy: the mailbox is written again by the next call.
  p.u8.fill(0, base + off0, base + off0 + 3000);
  assert.equal(back[1][0][1], 7);
  m.free();
});

test('payload: a value that does not fit is refused, and a malformed payload throws Internal, never reads outside it', () => {
  const p = Platform.create({ shared: true, ramSize: 1 << 20, privateSize: 1 << 20 });
  const m = new MailboxClient(p, 256);
  const { addr, cap } = m.handle;
  assert.equal(put(p, addr, cap, [new Uint8Array(240)]), false, 'JSON + table + 240 bytes exceed 256');
  assert.equal(put(p, addr, cap, [new Uint8Array(200)]), true);
  const base = addr + MAILBOX_HEADER;
  const bad = (why: string, poke: () => void) => {
    assert.equal(put(p, addr, cap, ['x', new Uint8Array(16)]), true);
    poke();
    assert.throws(() => get(p, addr, cap), (e: unknown) => e instanceof VirtioError && e.code === Code.Internal, why);
  };
  const jl = () => p.u32[base >> 2]!;
  const table = () => (base + ((8 + jl() + 7) & ~7)) >> 2;
  bad('length beyond the capacity', () => { p.u32[(addr >> 2) + 1] = cap + 1; });
  bad('JSON length beyond the payload', () => { p.u32[base >> 2] = 10_000; });
  bad('more byte arrays than the table holds', () => { p.u32[(base >> 2) + 1] = 1000; });
  bad('an offset past the payload', () => { p.u32[table()] = 4096; });
  bad('a length past the payload', () => { p.u32[table() + 1] = 0xffffffff; });
  bad('a reference to no byte array', () => { p.u32[(base >> 2) + 1] = 0; });
  // Lengths near 2^32 must not wrap an alignment into passing the checks (found in review).
  for (const jl of [0x7ffffffa, 0xfffffff8, 0xfffffffe, 0xffffffff]) bad(`JSON length ${jl}`, () => { p.u32[base >> 2] = jl; });
  bad('byte-array count near 2^32', () => { p.u32[(base >> 2) + 1] = 0xffffffff; });
  bad('JSON that does not parse', () => { p.u8[base + 8] = 0x7b; p.u8[base + 9] = 0x7b; });
  m.free();
});

test('a malformed answer fails the call with Internal and leaves the mailbox ready for the next call', async () => {
  const p = Platform.create({ shared: true, ramSize: 1 << 20, privateSize: 1 << 20 });
  const m = new MailboxClient(p, 256);
  const { addr } = m.handle;
  // A server thread that answers with a payload whose JSON length runs past the mailbox.
  const w = new Worker(`
    const { workerData } = require('node:worker_threads');
    const i32 = new Int32Array(workerData.buf);
    const si = workerData.addr >> 2;
    while (Atomics.load(i32, si) !== 1) Atomics.wait(i32, si, 0, 1000);
    i32[si + 1] = 16;               // payload length
    i32[(workerData.addr + ${MAILBOX_HEADER}) >> 2] = 0x7ffffffa; // JSON length: far past it
    Atomics.store(i32, si, 2);      // ANSWER
    Atomics.notify(i32, si);
  `, { eval: true, workerData: { buf: p.memory.buffer, addr } });
  await new Promise((r) => w.once('online', r));
  assert.throws(() => m.call('getStatus', [], 2000), (e: unknown) => e instanceof VirtioError && e.code === Code.Internal);
  await w.terminate();
  // Not stuck in ANSWER (which a next call would take for a released device): it waits for an answer.
  assert.throws(() => m.call('getStatus', [], 30), (e: unknown) => e instanceof VirtioError && e.code === Code.Cancelled && /did not answer/.test(e.message));
});
