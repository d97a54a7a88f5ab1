// The synchronous mailbox (src/worker/mailbox.ts) without a second thread: what the caller sees
// when nobody answers, or when a request cannot fit. Round trips are in worker-device.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, MailboxClient, MailboxServer, DoorbellWaiter, VirtioError, Code } from '../src/index.ts';

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
