// The device status state machine and feature negotiation of the simulator core (VdpaSim,
// src/devices/sim-core.ts) against VIRTIO 1.3 §2.1 (device status field), §2.2 (feature bits)
// and §3.1.1 (driver initialization): every legal transition, every illegal one (which must
// throw and change nothing), the FEATURES_OK read-back, and what a reset clears.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VdpaSimNet, VdpaSimBlk, VDPASIM_NET_FEATURES, VDPASIM_BLK_FEATURES, Code, VirtioError, DriverQueue, PERM_RW,
  featureBit, features,
  VIRTIO_F_RING_PACKED, VIRTIO_F_EVENT_IDX, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_CSUM,
  VIRTIO_BLK_F_RO, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_FAILED,
  type Platform,
} from '../src/index.ts';
import {
  virtioInit, testPlatform, frame, NetDriver, NET_SPLIT, NET_PACKED, S_ACK, S_DRIVER, S_FEATURES_OK, S_DRIVER_OK,
} from './helpers/virtio-driver.ts';

const NEEDS_RESET = VIRTIO_CONFIG_S_NEEDS_RESET;
const FAILED = VIRTIO_CONFIG_S_FAILED;
const ALL_OK = S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
const MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
/** Split-ring features the driver asks for in these tests. */
const SPLIT = NET_SPLIT;
const GOOD = features(VIRTIO_NET_F_MAC);

const platform = testPlatform();

function netDev(p: Platform = platform, deviceFeatures?: bigint): VdpaSimNet {
  // mtu 68 keeps the per-device staging area small: these tests make many devices.
  const o: ConstructorParameters<typeof VdpaSimNet>[1] = { name: 'sm0', mac: MAC, mtu: 68 };
  if (deviceFeatures !== undefined) o.deviceFeatures = deviceFeatures;
  return new VdpaSimNet(p, o);
}

/** Expects a VirtioError with `code`. */
function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VirtioError, `expected a VirtioError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

/** Named device states a test starts from, with the status each must show. */
const STATES = {
  RESET: 0,
  ACK: S_ACK,
  DRIVER: S_ACK | S_DRIVER,
  FEATURES_OK: S_ACK | S_DRIVER | S_FEATURES_OK,
  DRIVER_OK: ALL_OK,
  /** FEATURES_OK written with features the device refused: the bit stayed clear. */
  REJECTED: S_ACK | S_DRIVER,
  FAILED: S_ACK | S_DRIVER | FAILED,
  /** A driver broke a ring: the device set DEVICE_NEEDS_RESET. */
  NEEDS_RESET: ALL_OK | NEEDS_RESET,
} as const;
type StateName = keyof typeof STATES;

/** A fresh device brought to `state` by legal steps; checks it got there. */
function bringTo(state: StateName): VdpaSimNet {
  const dev = netDev();
  const walk = (...s: number[]) => s.forEach((x) => dev.setStatus(x));
  switch (state) {
    case 'RESET':
      break;
    case 'ACK':
      walk(S_ACK);
      break;
    case 'DRIVER':
      walk(S_ACK, STATES.DRIVER);
      dev.setDriverFeatures(GOOD);
      break;
    case 'FEATURES_OK':
      walk(S_ACK, STATES.DRIVER);
      dev.setDriverFeatures(GOOD);
      walk(STATES.FEATURES_OK);
      break;
    case 'DRIVER_OK':
      walk(S_ACK, STATES.DRIVER);
      dev.setDriverFeatures(GOOD);
      walk(STATES.FEATURES_OK, ALL_OK);
      break;
    case 'REJECTED':
      walk(S_ACK, STATES.DRIVER);
      dev.setDriverFeatures(GOOD | featureBit(VIRTIO_NET_F_CSUM));
      walk(STATES.FEATURES_OK);
      break;
    case 'FAILED':
      walk(S_ACK, STATES.DRIVER, STATES.FAILED);
      break;
    case 'NEEDS_RESET': {
      const d = virtioInit(dev, platform, { nvqs: 2, want: GOOD, size: 8 });
      // A split avail entry naming descriptor 8 of a size-8 ring (§2.7.6: heads are < size).
      const tx = d.queues[1]!;
      const avail = tx.addresses.driverArea;
      platform.view.setUint16(avail + 4, 8, true);
      platform.view.setUint16(avail + 2, 1, true);
      dev.kickVq(1);
      break;
    }
  }
  assert.equal(dev.getStatus(), STATES[state], `device brought to ${state}`);
  return dev;
}

/** Counts `status` events a device dispatches. */
function statusEvents(dev: VdpaSimNet): number[] {
  const seen: number[] = [];
  dev.addEventListener('status', (e) => seen.push((e as CustomEvent<number>).detail));
  return seen;
}

const ALL_STATES = Object.keys(STATES) as StateName[];

describe('device status: legal transitions (VIRTIO 1.3 §2.1, §3.1.1)', () => {
  const legal: [from: StateName, write: number, expect: number, why: string][] = [
    ['RESET', S_ACK, S_ACK, 'step 2: ACKNOWLEDGE'],
    ['ACK', S_ACK | S_DRIVER, S_ACK | S_DRIVER, 'step 3: DRIVER'],
    ['DRIVER', STATES.FEATURES_OK, STATES.FEATURES_OK, 'step 5: FEATURES_OK with acceptable features'],
    ['FEATURES_OK', ALL_OK, ALL_OK, 'step 8: DRIVER_OK'],
    ['RESET', S_ACK | S_DRIVER, S_ACK | S_DRIVER, 'ACKNOWLEDGE and DRIVER in one write'],
    ['ACK', S_ACK, S_ACK, 'rewriting the same status'],
    ['DRIVER', S_ACK | S_DRIVER, S_ACK | S_DRIVER, 'rewriting the same status'],
    ['FEATURES_OK', STATES.FEATURES_OK, STATES.FEATURES_OK, 'rewriting the same status'],
    ['DRIVER_OK', ALL_OK, ALL_OK, 'rewriting the same status'],
    ['NEEDS_RESET', ALL_OK | NEEDS_RESET, ALL_OK | NEEDS_RESET, 'writing back the device\'s NEEDS_RESET'],
    ['NEEDS_RESET', ALL_OK, ALL_OK | NEEDS_RESET, 'NEEDS_RESET is the device\'s: the driver cannot clear it'],
    ['REJECTED', S_ACK | S_DRIVER | FAILED, S_ACK | S_DRIVER | FAILED, 'giving up after a refusal (§3.1.1 step 6)'],
  ];
  for (const from of ALL_STATES) {
    legal.push([from, STATES[from] | FAILED, STATES[from] | FAILED, 'FAILED from any state']);
  }

  for (const [from, write, expect, why] of legal) {
    test(`${from} (0x${STATES[from].toString(16)}) + write 0x${write.toString(16)} → 0x${expect.toString(16)}: ${why}`, () => {
      const dev = bringTo(from);
      const ev = statusEvents(dev);
      const feats = dev.getDriverFeatures();
      dev.setStatus(write);
      assert.equal(dev.getStatus(), expect);
      assert.equal(dev.getDriverFeatures(), feats, 'features untouched');
      assert.deepEqual(ev, [expect], 'one status event with the new status');
    });
  }

  for (const from of ALL_STATES) {
    for (const how of ['setStatus(0)', 'reset()'] as const) {
      test(`${from}: ${how} goes back to 0 and clears the driver features`, () => {
        const dev = bringTo(from);
        const ev = statusEvents(dev);
        if (how === 'reset()') dev.reset();
        else dev.setStatus(0);
        assert.equal(dev.getStatus(), 0);
        assert.equal(dev.getDriverFeatures(), 0n);
        assert.deepEqual(ev, [0]);
        // And the full sequence works again from there.
        dev.setStatus(S_ACK);
        dev.setStatus(STATES.DRIVER);
        dev.setDriverFeatures(GOOD);
        dev.setStatus(STATES.FEATURES_OK);
        dev.setStatus(ALL_OK);
        assert.equal(dev.getStatus(), ALL_OK);
      });
    }
  }
});

describe('device status: illegal writes throw and change nothing', () => {
  const FP = Code.FailedPrecondition;
  const IA = Code.InvalidArgument;
  const illegal: [from: StateName, write: unknown, code: string, why: string][] = [
    ['RESET', S_DRIVER, FP, 'DRIVER without ACKNOWLEDGE'],
    ['RESET', S_FEATURES_OK, FP, 'FEATURES_OK without DRIVER'],
    ['RESET', S_DRIVER_OK, FP, 'DRIVER_OK from reset'],
    ['RESET', ALL_OK, FP, 'every bit in one write (FEATURES_OK never accepted)'],
    ['ACK', S_ACK | S_FEATURES_OK, FP, 'FEATURES_OK without DRIVER'],
    ['ACK', S_ACK | S_DRIVER_OK, FP, 'DRIVER_OK without DRIVER'],
    ['DRIVER', S_ACK | S_DRIVER | S_DRIVER_OK, FP, 'DRIVER_OK without FEATURES_OK'],
    ['DRIVER', ALL_OK, FP, 'FEATURES_OK and DRIVER_OK in one write: FEATURES_OK not yet accepted'],
    ['REJECTED', S_ACK | S_DRIVER | S_DRIVER_OK, FP, 'DRIVER_OK after the device refused FEATURES_OK'],
    ['REJECTED', ALL_OK, FP, 'DRIVER_OK with FEATURES_OK after a refusal'],
    ['DRIVER', S_ACK, FP, 'clearing DRIVER'],
    ['DRIVER', S_DRIVER, FP, 'clearing ACKNOWLEDGE'],
    ['FEATURES_OK', S_ACK | S_DRIVER, FP, 'clearing FEATURES_OK'],
    ['DRIVER_OK', STATES.FEATURES_OK, FP, 'clearing DRIVER_OK'],
    ['DRIVER_OK', S_ACK | S_DRIVER | S_DRIVER_OK, FP, 'clearing FEATURES_OK under DRIVER_OK'],
    ['DRIVER_OK', FAILED, FP, 'FAILED that clears every other bit'],
    ['FAILED', S_ACK | S_DRIVER, FP, 'clearing FAILED'],
    ['NEEDS_RESET', STATES.FEATURES_OK | NEEDS_RESET, FP, 'clearing DRIVER_OK after NEEDS_RESET'],
    ['RESET', NEEDS_RESET, FP, 'the driver setting DEVICE_NEEDS_RESET'],
    ['ACK', S_ACK | NEEDS_RESET, FP, 'the driver setting DEVICE_NEEDS_RESET'],
    ['DRIVER_OK', ALL_OK | NEEDS_RESET, FP, 'the driver setting DEVICE_NEEDS_RESET'],
    ['DRIVER_OK', ALL_OK | NEEDS_RESET | FAILED, FP, 'the driver setting DEVICE_NEEDS_RESET with FAILED'],
    ['RESET', -1, IA, 'negative'],
    ['RESET', 256, IA, 'above u8'],
    ['DRIVER_OK', 0x10f, IA, 'above u8 (low byte legal)'],
    ['ACK', 1.5, IA, 'not an integer'],
    ['ACK', Number.NaN, IA, 'NaN'],
    ['ACK', Number.POSITIVE_INFINITY, IA, 'Infinity'],
    ['DRIVER', '3', IA, 'a string'],
    ['DRIVER', 3n, IA, 'a bigint'],
  ];

  for (const [from, write, code, why] of illegal) {
    test(`${from} + write ${typeof write === 'number' ? `0x${write.toString(16)}` : `${typeof write} ${String(write)}`} → ${code}: ${why}`, () => {
      const dev = bringTo(from);
      const before = dev.getStatus();
      const feats = dev.getDriverFeatures();
      const ev = statusEvents(dev);
      throwsCode(() => dev.setStatus(write as number), code);
      assert.equal(dev.getStatus(), before, 'status unchanged');
      assert.equal(dev.getDriverFeatures(), feats, 'features unchanged');
      assert.deepEqual(ev, [], 'no status event');
    });
  }

  // sim-core.ts setStatus skips the ordering checks whenever FAILED is in the written value,
  // so a driver can set bits out of order by adding FAILED: 0 → FAILED|DRIVER_OK is accepted
  // and the device then reports DRIVER_OK (and accepts suspend()) though features were never
  // negotiated. "Bits are set in order … an illegal write throws FailedPrecondition".
  const failedSkips: [from: StateName, write: number, why: string][] = [
    ['RESET', FAILED | S_DRIVER_OK, 'DRIVER_OK from reset, smuggled in with FAILED'],
    ['FAILED', STATES.FAILED | S_DRIVER_OK, 'DRIVER_OK without FEATURES_OK after FAILED'],
    ['ACK', S_ACK | S_FEATURES_OK | FAILED, 'FEATURES_OK without DRIVER, with FAILED'],
  ];
  for (const [from, write, why] of failedSkips) {
    test(`${from} + write 0x${write.toString(16)} → failed_precondition: ${why}`, () => {
      const dev = bringTo(from);
      const before = dev.getStatus();
      throwsCode(() => dev.setStatus(write), Code.FailedPrecondition);
      assert.equal(dev.getStatus(), before);
    });
  }
});

describe('feature negotiation (VIRTIO 1.3 §2.2, §3.1.1 steps 4-6)', () => {
  const window: [from: StateName, allowed: boolean][] = [
    ['RESET', false],
    ['ACK', false],
    ['DRIVER', true],
    ['REJECTED', true],
    ['FEATURES_OK', false],
    ['DRIVER_OK', false],
    ['NEEDS_RESET', false],
  ];
  for (const [from, allowed] of window) {
    test(`setDriverFeatures in ${from}: ${allowed ? 'allowed' : 'failed_precondition, nothing changes'}`, () => {
      const dev = bringTo(from);
      const before = dev.getDriverFeatures();
      const status = dev.getStatus();
      const f = features(VIRTIO_NET_F_MTU);
      if (allowed) {
        dev.setDriverFeatures(f);
        assert.equal(dev.getDriverFeatures(), f);
      } else {
        throwsCode(() => dev.setDriverFeatures(f), Code.FailedPrecondition);
        assert.equal(dev.getDriverFeatures(), before);
      }
      assert.equal(dev.getStatus(), status);
    });
  }

  for (const bad of [-1n, 1n << 64n, 1 as unknown as bigint, '1' as unknown as bigint]) {
    test(`setDriverFeatures(${typeof bad} ${String(bad)}) → invalid_argument`, () => {
      const dev = bringTo('DRIVER');
      throwsCode(() => dev.setDriverFeatures(bad), Code.InvalidArgument);
      assert.equal(dev.getDriverFeatures(), GOOD);
    });
  }

  const rejected: [name: string, offered: bigint | undefined, driver: bigint][] = [
    ['a bit the device does not offer (VIRTIO_NET_F_CSUM)', undefined, GOOD | featureBit(VIRTIO_NET_F_CSUM)],
    ['a bit the device does not offer (VIRTIO_NET_F_GUEST_TSO4, 7) with everything offered', undefined, VDPASIM_NET_FEATURES | featureBit(7)],
    ['a bit the device created without it does not offer (VIRTIO_NET_F_MTU)', features(VIRTIO_NET_F_MAC), features(VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU)],
    ['bit 63', undefined, GOOD | (1n << 63n)],
    ['no VIRTIO_F_VERSION_1 (legacy driver)', undefined, featureBit(VIRTIO_NET_F_MAC)],
    ['nothing at all (not even VERSION_1)', undefined, 0n],
    ['RING_PACKED from a device created without it', features(VIRTIO_NET_F_MAC), features(VIRTIO_NET_F_MAC, VIRTIO_F_RING_PACKED)],
  ];
  for (const [name, offered, driver] of rejected) {
    test(`FEATURES_OK with ${name}: the read-back shows FEATURES_OK clear`, () => {
      const dev = netDev(platform, offered);
      dev.setStatus(S_ACK);
      dev.setStatus(S_ACK | S_DRIVER);
      dev.setDriverFeatures(driver);
      const ev = statusEvents(dev);
      dev.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK); // the write itself does not throw
      assert.equal(dev.getStatus(), S_ACK | S_DRIVER, 'FEATURES_OK left clear (§2.2.2, §3.1.1 step 6)');
      assert.deepEqual(ev, [S_ACK | S_DRIVER]);
      assert.notEqual(dev.rejectFeatures(driver), null);
      // Nothing that needs FEATURES_OK works.
      throwsCode(() => dev.setStatus(ALL_OK), Code.FailedPrecondition);
      const q = new DriverQueue(platform, { size: 8, features: GOOD });
      dev.setVqNum(0, 8);
      dev.setVqAddress(0, q.addresses.descArea, q.addresses.driverArea, q.addresses.deviceArea);
      throwsCode(() => dev.setVqReady(0, true), Code.FailedPrecondition);
      assert.equal(dev.getVqReady(0), false);
      // The driver may retry with a subset the device accepts.
      dev.setDriverFeatures(GOOD);
      dev.setStatus(S_ACK | S_DRIVER | S_FEATURES_OK);
      assert.equal(dev.getStatus(), STATES.FEATURES_OK);
      q.destroy();
    });
  }

  test('blk: VIRTIO_BLK_F_RO from a writable disk is refused; from a read-only one accepted', () => {
    const p = testPlatform();
    for (const readOnly of [false, true]) {
      const dev = new VdpaSimBlk(p, { name: 'b0', capacity: 8, readOnly });
      dev.setStatus(S_ACK | S_DRIVER);
      dev.setDriverFeatures(features(VIRTIO_BLK_F_RO));
      dev.setStatus(STATES.FEATURES_OK);
      assert.equal(dev.getStatus(), readOnly ? STATES.FEATURES_OK : S_ACK | S_DRIVER);
      assert.equal(dev.getDeviceFeatures(), VDPASIM_BLK_FEATURES | (readOnly ? featureBit(VIRTIO_BLK_F_RO) : 0n));
    }
  });

  const accepted: [name: string, f: bigint][] = [
    ['VERSION_1 only', features()],
    ['VERSION_1 + MAC', GOOD],
    ['VERSION_1 + MAC + MTU + EVENT_IDX', features(VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_F_EVENT_IDX)],
    ['the data-plane set (split)', NET_SPLIT],
    ['the data-plane set (packed)', NET_PACKED],
    ['everything offered', VDPASIM_NET_FEATURES],
  ];
  for (const [name, f] of accepted) {
    test(`accepted subset ${name}: FEATURES_OK stays set and the features stay as written`, () => {
      const dev = netDev();
      dev.setStatus(S_ACK);
      dev.setStatus(S_ACK | S_DRIVER);
      dev.setDriverFeatures(f);
      dev.setStatus(STATES.FEATURES_OK);
      assert.equal(dev.getStatus(), STATES.FEATURES_OK);
      assert.equal(dev.rejectFeatures(f), null);
      dev.setStatus(ALL_OK);
      assert.equal(dev.getStatus(), ALL_OK);
      assert.equal(dev.getDriverFeatures(), f);
      assert.equal(dev.getDeviceFeatures(), VDPASIM_NET_FEATURES, 'device features are not narrowed by negotiation');
    });
  }

  test('a device must offer VERSION_1', () => {
    throwsCode(() => netDev(platform, featureBit(VIRTIO_NET_F_MAC)), Code.InvalidArgument);
  });
});

describe('reset clears features, queues and maps', () => {
  for (const how of ['setStatus(0)', 'reset()'] as const) {
    for (const layout of ['split', 'packed'] as const) {
      test(`${how} on a running ${layout} device`, () => {
        const p = testPlatform();
        const dev = netDev(p);
        const want = layout === 'packed' ? NET_PACKED : NET_SPLIT;
        const d = virtioInit(dev, p, { nvqs: 2, want, size: 16 });
        const net = new NetDriver(p, dev, d.queues[0]!, d.queues[1]!);
        net.postRx(5);
        net.send([frame(1, 60), frame(2, 60), frame(3, 60)]);
        assert.equal(net.reclaimRx().length, 3);
        assert.ok(d.calls[0]! > 0);
        dev.suspend();
        assert.deepEqual(dev.getVendorVqStats(0).stats.slice(0, 2), [['received_desc', 3], ['completed_desc', 3]]);
        // A map that does not cover the rings: only a reset brings back the identity map.
        dev.setMap(0, []);
        const ev = statusEvents(dev);

        if (how === 'reset()') dev.reset();
        else dev.setStatus(0);

        assert.deepEqual(ev, [0]);
        assert.equal(dev.getStatus(), 0);
        assert.equal(dev.getDriverFeatures(), 0n);
        assert.equal(dev.isSuspended, false);
        for (let i = 0; i < dev.nvqs; i++) {
          assert.equal(dev.getVqReady(i), false);
          assert.deepEqual(dev.getVqState(i), { version: 1, layout: 'split', size: dev.getVqNumMax(), availIndex: 0, usedIndex: 0 });
          assert.ok(dev.getVendorVqStats(i).stats.every(([, v]) => v === 0), 'every counter back to 0');
        }
        // A queue needs a size and addresses again.
        dev.setStatus(S_ACK | S_DRIVER);
        dev.setDriverFeatures(want);
        dev.setStatus(STATES.FEATURES_OK);
        throwsCode(() => dev.setVqReady(0, true), Code.FailedPrecondition);

        // Re-init on fresh rings at identity IOVAs, without callbacks: the identity map is back
        // (the empty map would refuse the rings), and the old callbacks were dropped.
        const callsBefore = [...d.calls];
        const d2 = virtioInit(dev, p, { nvqs: 2, want, size: 16, noCallbacks: true });
        const net2 = new NetDriver(p, dev, d2.queues[0]!, d2.queues[1]!);
        net2.postRx(4);
        const f = [frame(10, 40), frame(11, 70)]; // within mtu 68 + 14 + 12
        net2.send(f);
        const got = net2.reclaimRx();
        assert.deepEqual(got.map((r) => [...r.data]), f.map((x) => [...x]));
        assert.deepEqual(d.calls, callsBefore, 'callbacks of before the reset are not called');
        // The fresh queues started from position 0.
        const s = dev.getVqState(1);
        if (s.layout === 'split') assert.equal(s.availIndex, 2);
        else assert.deepEqual([s.lastAvailIdx, s.lastUsedIdx], [2, 2]);
      });
    }
  }

  test('a position set with setVqState before DRIVER_OK is forgotten by a reset', () => {
    const p = testPlatform();
    const dev = netDev(p);
    // (Not to DRIVER_OK: the fresh ring's avail->idx 0 would contradict position 7.)
    virtioInit(dev, p, {
      nvqs: 2, want: SPLIT, size: 16, noDriverOk: true,
      beforeDriverOk: () => dev.setVqState(1, { version: 1, layout: 'split', size: 16, availIndex: 7 }),
    });
    assert.deepEqual(dev.getVqState(1), { version: 1, layout: 'split', size: 16, availIndex: 7, usedIndex: 7 });
    dev.reset();
    virtioInit(dev, p, { nvqs: 2, want: SPLIT, size: 16 });
    assert.deepEqual(dev.getVqState(1), { version: 1, layout: 'split', size: 16, availIndex: 0, usedIndex: 0 });
  });

  test('reset restores the identity map of every address space and group 0 → asid 0', () => {
    const p = testPlatform();
    const dev = netDev(p);
    dev.setMap(0, [{ iova: 0x1000_0000, size: p.ramSize, addr: p.ramBase, perm: PERM_RW }]);
    dev.reset();
    assert.equal(dev.getGroupAsid(0), 0);
    // Identity addresses work again.
    const d = virtioInit(dev, p, { nvqs: 2, want: SPLIT, size: 8 });
    assert.equal(d.queues.length, 2);
  });
});
