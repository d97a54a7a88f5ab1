// A DoorbellWaiter closed while it waits (waitAsync pending, or a callback of the poll inside
// wait() closing it) frees its waker: the wait must not write those bytes afterwards, since the
// allocator hands them out again (here: to a doorbell whose waker word the store would clear,
// so its rings would no longer wake anybody).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Platform, Doorbell, DoorbellWaiter } from '../src/index.ts';

const wakerOf = (p: Platform, db: Doorbell) => p.i32[(db.handle.addr >> 2) + 1];

test('waitAsync pending across close(): a doorbell reusing the waker bytes keeps its waker', async () => {
  const p = Platform.create({ shared: true });
  const w = new DoorbellWaiter(p);
  const pending = w.waitAsync(5000);
  w.close();
  const db = Doorbell.alloc(p);
  assert.equal(db.handle.addr, w.addr, 'first fit gives the freed waker bytes to the doorbell');
  const w2 = new DoorbellWaiter(p);
  let rang = 0;
  w2.watch(db, () => rang++);
  assert.equal(await pending, 0);
  assert.equal(wakerOf(p, db), w2.addr);
  db.ring();
  assert.equal(w2.poll(), 1);
  assert.equal(rang, 1);
  w2.close();
});

test('a callback that closes its waiter inside wait() leaves the freed waker bytes alone', () => {
  const p = Platform.create({ shared: true });
  const w = new DoorbellWaiter(p);
  const a = Doorbell.alloc(p);
  let db: Doorbell | null = null;
  let w2: DoorbellWaiter | null = null;
  w.watch(a, () => {
    w.close();
    db = Doorbell.alloc(p);
    w2 = new DoorbellWaiter(p);
    w2.watch(db, () => {});
  });
  a.ring();
  assert.equal(w.wait(1000), 1);
  assert.equal(db!.handle.addr, w.addr);
  assert.equal(wakerOf(p, db!), w2!.addr);
  w2!.close();
});
