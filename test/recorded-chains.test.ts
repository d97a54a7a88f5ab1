// Recorded chains (src/ring/recorded-chains.ts): the flat list a migration's requests in flight
// travel in, and DeviceQueue's recordInto / recordable / repop over it. Checked: values kept as
// appended across growth, abort and misuse, append/copy/get/from/toArray; a popped chain
// recorded by IOVA under a map that is not the identity and re-popped by another queue over
// the same map reads exactly as popped; a chain whose memory is no longer mapped cannot be
// recorded and leaves the list unchanged; chainSegments reuses the array it is given.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverQueue, DeviceQueue, Iotlb, RecordedChains, ringFeatures, Code, VirtioError, PERM_RW, type RecordedChain } from '../src/index.ts';
import { makePlatform } from './helpers/builds.ts';

const isCode = (c: string) => (e: unknown) => e instanceof VirtioError && e.code === c;

test('RecordedChains: values are kept as appended while the arrays grow; abort drops only the open chain', () => {
  const l = new RecordedChains(1, 1);
  const want: RecordedChain[] = [];
  for (let c = 0; c < 300; c++) {
    const np = 1 + (c % 5);
    const pieces = new Float64Array(2 * np);
    for (let j = 0; j < np; j++) {
      pieces[2 * j] = 2 ** 40 + c * 65536 + j * 4096; // above 2^32: kept exactly
      pieces[2 * j + 1] = 1 + ((c * 31 + j) % 0xffff);
    }
    want.push({ vq: c % 3, id: c, ndesc: np + 1, nread: 1, pieces });
    l.begin(c % 3, c, np + 1, 1);
    for (let j = 0; j < np; j++) l.piece(pieces[2 * j]!, pieces[2 * j + 1]!);
    l.end();
    // A chain begun and abandoned leaves no trace.
    l.begin(9, 9, 9, 9);
    l.piece(1, 1);
    l.abort();
  }
  assert.equal(l.count, 300);
  assert.equal(l.pieceCount, want.reduce((n, c) => n + c.pieces.length / 2, 0));
  assert.deepEqual(l.toArray(), want);
  assert.equal(l.iova(299, 4), want[299]!.pieces[8]);
  assert.equal(l.len(7, 2), want[7]!.pieces[5]);
  // from() and toArray() are inverse; copy() is a list of its own.
  assert.deepEqual(RecordedChains.from(want).toArray(), want);
  const c = l.copy();
  l.clear();
  assert.equal(l.count, 0);
  assert.equal(l.pieceCount, 0);
  assert.deepEqual(c.toArray(), want);
  // append(src, from, n) takes exactly that range.
  l.append(c, 10, 5);
  assert.deepEqual(l.toArray(), want.slice(10, 15));
  l.append(c, 298);
  assert.deepEqual(l.toArray(), [...want.slice(10, 15), ...want.slice(298)]);
});

test('RecordedChains: misuse is refused with a typed error', () => {
  const l = new RecordedChains();
  assert.throws(() => l.piece(1, 1), isCode(Code.FailedPrecondition));
  assert.throws(() => l.end(), isCode(Code.FailedPrecondition));
  l.begin(0, 1, 2, 1);
  assert.throws(() => l.begin(0, 2, 2, 1), isCode(Code.FailedPrecondition), 'one chain open at a time');
  l.piece(16, 16);
  l.end();
  for (const k of [-1, 1, 0.5, NaN]) assert.throws(() => l.get(k), isCode(Code.InvalidArgument));
  assert.deepEqual(l.get(0), { vq: 0, id: 1, ndesc: 2, nread: 1, pieces: new Float64Array([16, 16]) });
});

test('RecordedChains: a value the binary state cannot carry is refused, not wrapped or rounded, and the list stays as it was', () => {
  const l = new RecordedChains();
  l.begin(1, 2, 3, 1);
  l.piece(4096, 16);
  l.piece(8192, 1);
  l.end();
  const before = l.toArray();
  // vq, id, ndesc, nread: u16 each (a Uint32Array would have kept 2^32 as 0 and 1.5 as 1).
  for (const [vq, id, ndesc, nread] of [[2 ** 32, 0, 1, 0], [0, 1.5, 1, 0], [0, 0, 2.9, 0], [-1, 0, 1, 0], [0, -(2 ** 32 - 1), 1, 0], [0, 0, 1, 0x10000], [NaN, 0, 1, 0]]) {
    assert.throws(() => l.begin(vq!, id!, ndesc!, nread!), isCode(Code.InvalidArgument), `begin(${vq}, ${id}, ${ndesc}, ${nread})`);
  }
  l.begin(0, 0, 1, 0);
  for (const [iova, len] of [[-1, 1], [0.5, 1], [2 ** 53, 1], [NaN, 1], [0, 0], [0, 2 ** 32], [0, 1.5], [0, -1]]) {
    assert.throws(() => l.piece(iova!, len!), isCode(Code.InvalidArgument), `piece(${iova}, ${len})`);
  }
  assert.equal(l.pieceCount, 2, 'the open chain is not counted yet');
  l.abort();
  // More device-readable pieces than pieces: refused at end(), and the chain is dropped.
  l.begin(0, 0, 1, 3);
  l.piece(0, 1);
  assert.throws(() => l.end(), isCode(Code.InvalidArgument));
  assert.deepEqual(l.toArray(), before);
  assert.equal(l.pieceCount, 2);
  // from(): the same checks, and pieces must come in pairs.
  assert.throws(() => RecordedChains.from([{ vq: 2 ** 32, id: 0, ndesc: 1, nread: 0, pieces: new Float64Array([0, 1]) }]), isCode(Code.InvalidArgument));
  assert.throws(() => RecordedChains.from([{ vq: 0, id: 0, ndesc: 1, nread: 0, pieces: new Float64Array([0, 1, 2]) }]), isCode(Code.InvalidArgument));
  // append(): a range outside the source list.
  const m = new RecordedChains();
  for (const [from, n] of [[0, 2], [-1, 1], [1, 1], [0.5, 0]]) assert.throws(() => m.append(l, from, n), isCode(Code.InvalidArgument), `append(${from}, ${n})`);
  assert.equal(m.count, 0);
  m.append(l, 0, 1);
  assert.deepEqual(m.toArray(), before);
});

test('DeviceQueue: a chain recorded by IOVA under a non-identity map re-pops on another queue exactly as it was popped; an unmapped one is not recorded', () => {
  for (const packed of [false, true]) {
    const p = makePlatform('release', { ramSize: 2 << 20 });
    const features = ringFeatures({ packed });
    const drv = new DriverQueue(p, { size: 16, features });
    const buf = p.allocBuffer(3 * 4096, 4096);
    const X = 2 ** 36; // the buffers' IOVA: neither their offset nor below 2^32
    const map = (withLast: boolean) => {
      const t = [
        { iova: BigInt(p.ramBase), size: buf - p.ramBase, addr: p.ramBase, perm: PERM_RW },
        // Two entries back to back: a buffer across them is two pieces.
        { iova: BigInt(X), size: 4096, addr: buf, perm: PERM_RW },
        { iova: BigInt(X + 4096), size: 4096, addr: buf + 4096, perm: PERM_RW },
      ];
      if (withLast) t.push({ iova: BigInt(X + 8192), size: 4096, addr: buf + 8192, perm: PERM_RW });
      return t;
    };
    const iotlb = new Iotlb(p, 8);
    iotlb.setMap(map(true));
    const dev = new DeviceQueue(p, { size: 16, features, ...drv.addresses, iotlb });
    // A blk-like chain: a 16-byte header, data across the two entries, a status byte; and one
    // whose data lies in the last page.
    assert.ok(drv.add(7, [{ addr: X, len: 16 }], [{ addr: X + 2048, len: 4096 }, { addr: X + 6144 + 100, len: 1 }]));
    assert.ok(drv.add(9, [{ addr: X + 16, len: 16 }], [{ addr: X + 8192, len: 512 }, { addr: X + 8192 + 600, len: 1 }]));
    assert.equal(dev.pop(), 2);
    const popped = [dev.chain(0), dev.chain(1)];
    const into = new Uint32Array(32);
    const segs0 = dev.chainSegments(0, into);
    assert.equal(segs0, into, 'a long enough array is written, not replaced');
    assert.notEqual(dev.chainSegments(0, new Uint32Array(3)).length, 3, 'a short one is not');
    const segs1 = dev.chainSegments(1);
    const list = new RecordedChains(1, 1);
    assert.ok(dev.recordable(segs0) && dev.recordable(segs1));
    assert.ok(dev.recordInto(list, 0, dev.chainId(0), dev.chainDescs(0), segs0));
    assert.ok(dev.recordInto(list, 0, dev.chainId(1), dev.chainDescs(1), segs1));
    const r0 = list.get(0);
    assert.equal(r0.nread, 1);
    // Pieces are named by IOVA; the data buffer is split where the map's entries split it.
    assert.deepEqual([...r0.pieces], [X, 16, X + 2048, 2048, X + 4096, 2048, X + 6144 + 100, 1]);
    // Another queue over the same map takes them back as if it had popped them.
    const drv2 = new DriverQueue(p, { size: 16, features });
    const dev2 = new DeviceQueue(p, { size: 16, features, ...drv2.addresses, iotlb });
    assert.equal(dev2.repop(list, 0, 2), 2);
    for (let i = 0; i < 2; i++) {
      const c = dev2.chain(i);
      const o = popped[i]!;
      assert.equal(c.id, o.id);
      assert.equal(c.ndesc, o.ndesc);
      assert.equal(c.readBytes, o.readBytes);
      assert.equal(c.writeBytes, o.writeBytes);
      // Same memory, byte for byte (segments may be cut differently).
      const flat = (ss: { addr: number; len: number }[]) => ss.flatMap((s) => Array.from({ length: s.len }, (_, k) => s.addr + k));
      assert.deepEqual(flat(c.readable), flat(o.readable));
      assert.deepEqual(flat(c.writable), flat(o.writable));
    }
    assert.throws(() => dev2.repop(list, 1, 2), isCode(Code.InvalidArgument), 'past the list');
    // The last page leaves the map: chain 1 can no longer be named, and the list is unchanged.
    iotlb.setMap(map(false));
    assert.equal(dev.recordable(segs1), false);
    assert.equal(dev.recordable(segs0), true);
    const before = list.toArray();
    assert.equal(dev.recordInto(list, 0, dev.chainId(1), dev.chainDescs(1), segs1), false);
    assert.deepEqual(list.toArray(), before);
    // A list that names memory the map no longer has breaks the queue that re-pops it.
    const drv3 = new DriverQueue(p, { size: 16, features });
    const dev3 = new DeviceQueue(p, { size: 16, features, ...drv3.addresses, iotlb });
    assert.throws(() => dev3.repop(list, 0, 2), isCode(Code.AddressUnmapped));
    for (const q of [dev, dev2, dev3]) q.destroy();
  }
});
