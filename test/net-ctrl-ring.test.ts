// The control queue as a foreign driver drives it (VIRTIO 1.3 §5.1.6.5): commands built by hand
// on a raw ring, parsed by the one parser (wasm, assembly/dev/net.ts). Malformed, unsupported
// and oversized commands get VIRTIO_NET_ERR and change nothing; a command is never gathered
// beyond the longest legitimate one (two full MAC tables), however long its chain is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VdpaSimNet, VDPASIM_NET_FEATURES, DeviceQueue, VIRTIO_NET_OK, VIRTIO_NET_ERR, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_F_RING_PACKED, featureBit, type DriverQueue,
} from '../src/index.ts';
import { virtioInit } from './helpers/virtio-driver.ts';
import { makePlatform } from './helpers/builds.ts';

const RAM = 8 << 20;

function ctrlHost(want = VDPASIM_NET_FEATURES) {
  const p = makePlatform('release', { ramSize: RAM, privateSize: 4 << 20 });
  const dev = new VdpaSimNet(p, { name: 'n', mac: new Uint8Array([2, 0, 0, 0, 0, 1]), maxVqp: 2 });
  const d = virtioInit(dev, p, { want, size: 64 });
  const q: DriverQueue = d.queues[dev.ctrlVq]!;
  const buf = p.ram.alloc(4096, 16);
  let tok = 0;
  /** Sends one command (readable bytes, `ackLen` writable bytes) and returns [ack byte, used length]. */
  const send = (bytes: number[] | Uint8Array, ackLen = 1, extra: { addr: number; len: number }[] = []): [number, number] => {
    p.u8.set(bytes, buf);
    p.u8[buf + 2048] = 0xee;
    const out = bytes.length ? [{ addr: buf, len: bytes.length }, ...extra] : extra;
    q.stage(++tok, out, ackLen ? [{ addr: buf + 2048, len: ackLen }] : []);
    assert.equal(q.submit(), 1);
    dev.kickVq(dev.ctrlVq);
    assert.equal(q.getUsed(), 1);
    assert.equal(q.usedToken(0), tok);
    return [p.u8[buf + 2048]!, q.usedLen(0)];
  };
  return { p, dev, send };
}

const le32 = (n: number) => [n & 255, (n >> 8) & 255, (n >> 16) & 255, n >>> 24];

test('malformed and unsupported commands are answered VIRTIO_NET_ERR and change nothing', () => {
  const { dev, send } = ctrlHost(VDPASIM_NET_FEATURES & ~featureBit(VIRTIO_NET_F_CTRL_RX_EXTRA));
  const before = dev.ctrl.save();
  const mac = [...dev.mac];
  const refused: [string, number[]][] = [
    ['ALLUNI needs CTRL_RX_EXTRA', [VIRTIO_NET_CTRL_RX, 2, 1]],
    ['unknown rx command', [VIRTIO_NET_CTRL_RX, 9, 1]],
    ['rx: wrong length', [VIRTIO_NET_CTRL_RX, 0, 1, 1]],
    ['only a class byte', [VIRTIO_NET_CTRL_RX]],
    ['MAC table shorter than it says', [VIRTIO_NET_CTRL_MAC, 0, ...le32(1), 0, 0, 0, 0]],
    ['MAC table with trailing bytes', [VIRTIO_NET_CTRL_MAC, 0, ...le32(0), ...le32(0), 9]],
    ['MAC table over 64 entries', [VIRTIO_NET_CTRL_MAC, 0, ...le32(65), ...new Array(65 * 6).fill(2), ...le32(0)]],
    ['MAC table count that wraps', [VIRTIO_NET_CTRL_MAC, 0, ...le32(0x2aaaaaab), ...le32(0)]],
    ['multicast own address', [VIRTIO_NET_CTRL_MAC, 1, 1, 2, 3, 4, 5, 6]],
    ['unknown MAC command', [VIRTIO_NET_CTRL_MAC, 7, 2, 0, 0, 0, 0, 9]],
    ['VLAN 4095', [VIRTIO_NET_CTRL_VLAN, 0, 0xff, 0x0f]],
    ['unknown VLAN command', [VIRTIO_NET_CTRL_VLAN, 5, 1, 0]],
    ['zero pairs', [VIRTIO_NET_CTRL_MQ, 0, 0, 0]],
    ['pairs above max', [VIRTIO_NET_CTRL_MQ, 0, 3, 0]],
    ['unknown class', [7, 0]],
    ['announce not negotiated', [3, 0]],
  ];
  for (const [why, bytes] of refused) assert.deepEqual(send(bytes), [VIRTIO_NET_ERR, 1], why);
  assert.deepEqual(dev.ctrl.save(), before);
  assert.deepEqual([...dev.mac], mac);
  // No room for the ack: nothing written, used length 0.
  assert.deepEqual(send([VIRTIO_NET_CTRL_RX, 0, 0], 0), [0xee, 0]);
  assert.equal(dev.ctrl.rx.promisc, true, 'and not applied');
  // Valid ones, for contrast; the ack goes to the first writable byte even with more room.
  assert.deepEqual(send([VIRTIO_NET_CTRL_RX, 0, 0], 4), [VIRTIO_NET_OK, 1]);
  assert.deepEqual(send([VIRTIO_NET_CTRL_MAC, 0, ...le32(1), 2, 0, 0, 0, 0, 7, ...le32(1), 1, 0, 0x5e, 0, 0, 1]), [VIRTIO_NET_OK, 1]);
  assert.deepEqual(send([VIRTIO_NET_CTRL_VLAN, 0, 0x0a, 0x00]), [VIRTIO_NET_OK, 1]);
  assert.deepEqual(send([VIRTIO_NET_CTRL_MQ, 0, 2, 0]), [VIRTIO_NET_OK, 1]);
  const g = dev.getGeneration();
  assert.deepEqual(send([VIRTIO_NET_CTRL_MAC, 1, 2, 0, 0, 0, 0, 0x55]), [VIRTIO_NET_OK, 1]);
  assert.equal(dev.getGeneration(), g + 1, 'MAC_ADDR_SET is a config change');
  assert.deepEqual([...dev.mac], [2, 0, 0, 0, 0, 0x55]);
  assert.deepEqual(dev.ctrl.save(), {
    rx: { promisc: false, allmulti: false, alluni: false, nomulti: false, nouni: false, nobcast: false },
    uni: ['02:00:00:00:00:07'], multi: ['01:00:5e:00:00:01'], vlans: [10], pairs: 2,
  });
});

for (const layout of ['split', 'packed'] as const) {
  test(`${layout}: a command whose chain covers the whole map many times is refused without being gathered`, () => {
    const want = layout === 'packed' ? VDPASIM_NET_FEATURES : VDPASIM_NET_FEATURES & ~featureBit(VIRTIO_F_RING_PACKED);
    const { p, dev, send } = ctrlHost(want);
    // Nothing on the device side may copy a control command into JavaScript: record what would.
    const orig = DeviceQueue.prototype.read;
    let gathered = 0;
    DeviceQueue.prototype.read = function (this: DeviceQueue, i: number) {
      gathered = Math.max(gathered, this.readBytes(i));
      return new Uint8Array(0);
    };
    try {
      const whole = Array.from({ length: 12 }, () => ({ addr: p.ramBase, len: RAM })); // 12 × 8 MiB = 96 MiB
      assert.deepEqual(send([VIRTIO_NET_CTRL_RX, 0, 0], 1, whole), [VIRTIO_NET_ERR, 1]);
      // The longest legitimate command is still read: two full tables (2 + 2 × (4 + 384) bytes).
      const full = (first: number) => [...le32(64), ...Array.from({ length: 64 * 6 }, (_, i) => (i % 6 === 0 ? first : i & 0xff))];
      assert.deepEqual(send([VIRTIO_NET_CTRL_MAC, 0, ...full(2), ...full(1)]), [VIRTIO_NET_OK, 1]);
      // One byte more is refused.
      assert.deepEqual(send([VIRTIO_NET_CTRL_MAC, 0, ...full(2), ...full(1), 0]), [VIRTIO_NET_ERR, 1]);
    } finally {
      DeviceQueue.prototype.read = orig;
    }
    assert.equal(gathered, 0, 'no command was copied into JavaScript');
    assert.equal(dev.ctrl.uni.length, 64);
    assert.equal(dev.ctrl.multi.length, 64);
    assert.equal(dev.ctrl.rx.promisc, true, 'the huge command was not applied');
  });
}
