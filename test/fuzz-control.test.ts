// Fuzz: random control-plane sequences over a bus with the vdpasim_net and vdpasim_blk management
// devices: devAdd/devDel with random attributes, status bytes, features, queue size/address/
// ready/state, maps (set_map, dma_map, dma_unmap), suspend/resume, reset, kicks over garbage
// rings, config reads and writes. Every call either succeeds or throws a VirtioError; after each
// step the device's state obeys VIRTIO 1.3 §2.1 (status bits set in order, cleared only by reset,
// DEVICE_NEEDS_RESET only by the device) and its getters agree with what was set; deleting every
// device gives the platform's memory back.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, VirtioError, Code, PERM_R, PERM_W, PERM_RW, type Platform, type VdpaDevice,
  type MgmtDevAttrs, type VqState,
} from '../src/index.ts';
import { BUILDS, makePlatform, type Build } from './helpers/builds.ts';
import { fuzzAsync, type Rand } from './helpers/fuzz.ts';

// linux/virtio_config.h
const ACKNOWLEDGE = 1;
const DRIVER = 2;
const DRIVER_OK = 4;
const FEATURES_OK = 8;
const NEEDS_RESET = 0x40;
const FAILED = 0x80;

const envs = new Map<Build, { p: Platform; scratch: number }>();
const SCRATCH = 256 * 1024;

function env(build: Build): { p: Platform; scratch: number } {
  let e = envs.get(build);
  // A fresh platform when a sequence left the arenas short (a case may hold many devices).
  if (!e || e.p.priv.available < 6 << 20 || e.p.ram.available < 12 << 20) {
    const p = makePlatform(build, { ramSize: 16 << 20, privateSize: 8 << 20 });
    e = { p, scratch: p.allocBuffer(SCRATCH, 4096) };
    envs.set(build, e);
  }
  return e;
}

const NAMES = ['a', 'b', 'vdpa0', 'vdpa1', '', ' ', 'ü', 'x'.repeat(300), 'net\u0000', '-j'];

function randBig(r: Rand): bigint {
  return (BigInt(r.int(2 ** 32)) << 32n) | BigInt(r.int(2 ** 32));
}

function attrs(r: Rand, supported: bigint): MgmtDevAttrs {
  const a: MgmtDevAttrs = {};
  if (r.chance(0.3)) {
    a.mac = r.pick<string | Uint8Array>(['52:54:00:12:34:56', '01:00:00:00:00:01', '00:00:00:00:00:00', 'zz:zz', '', r.bytes(6), r.bytes(r.int(9)), '52:54:00:aa:bb:cc:dd']);
  }
  if (r.chance(0.3)) a.mtu = r.pick([68, 67, 1500, 65535, 65536, -1, 1.5, NaN, r.int(70000)]);
  if (r.chance(0.3)) a.maxVqp = r.pick([1, 2, 0, -1, 3, 100, 1.5, r.int(20)]);
  if (r.chance(0.3)) {
    a.deviceFeatures = r.pick([supported, supported & randBig(r), randBig(r), 0n, -1n, 1n << 64n, supported | (1n << 32n), supported & ~(1n << 32n)]);
  }
  return a;
}

/** A value somewhere near what an op wants: valid mostly, sometimes garbage. */
function someNumber(r: Rand, good: number[]): number {
  return r.chance(0.7) && good.length ? r.pick(good) : r.pick([-1, 0, 1, 2 ** 31, 2 ** 32, 2 ** 53, Number.MAX_SAFE_INTEGER + 2, NaN, Infinity, 0.5, r.int(1 << 16)]);
}

interface Live {
  name: string;
  dev: VdpaDevice;
  /** What the getters must say. */
  features: bigint | null;
  ready: Map<number, boolean>;
}

function isVirtioError(e: unknown, what: string): VirtioError {
  if (!(e instanceof VirtioError)) assert.fail(`${what} threw a non-VirtioError: ${e instanceof Error ? e.stack : String(e)}`);
  return e;
}

/** §2.1: DRIVER needs ACKNOWLEDGE, FEATURES_OK needs DRIVER, DRIVER_OK needs FEATURES_OK. */
function checkStatusOrder(s: number, what: string): void {
  assert.ok(s >= 0 && s <= 0xff && Number.isInteger(s), `${what}: status ${s} is not a u8`);
  if (s & DRIVER) assert.ok(s & ACKNOWLEDGE, `${what}: status 0x${s.toString(16)} has DRIVER without ACKNOWLEDGE`);
  if (s & FEATURES_OK) assert.ok(s & DRIVER, `${what}: status 0x${s.toString(16)} has FEATURES_OK without DRIVER`);
  if (s & DRIVER_OK) assert.ok(s & FEATURES_OK, `${what}: status 0x${s.toString(16)} has DRIVER_OK without FEATURES_OK`);
}

async function runSequence(build: Build, r: Rand): Promise<void> {
  const { p, scratch } = env(build);
  const privBefore = p.priv.available;
  const ramBefore = p.ram.available;
  const bus = new VdpaBus();
  const net = new VdpaSimNetMgmt(p);
  const blk = new VdpaSimBlkMgmt(p, 64);
  bus.registerMgmtDevice(net);
  bus.registerMgmtDevice(blk);
  const live = new Map<string, Live>();
  const dead: VdpaDevice[] = [];
  let failedAdds = 0;
  // Garbage rings for kicks.
  p.u8.set(r.bytes(4096), scratch + r.int(SCRATCH - 4096));
  const steps = r.range(5, 40);
  for (let step = 0; step < steps; step++) {
    const x = r();
    if (x < 0.12 || live.size === 0) {
      const m = r.chance(0.5) ? net : blk;
      const name = r.chance(0.8) ? r.pick(NAMES.slice(0, 4)) : r.pick(NAMES);
      const mname = r.chance(0.95) ? m.name : r.pick(['nope', '', m.name + ' ']);
      const privAt = p.priv.available;
      const ramAt = p.ram.available;
      try {
        const at = attrs(r, m.supportedFeatures);
        trace(`devAdd ${mname} ${JSON.stringify(name).slice(0, 20)} ${JSON.stringify(at, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`);
        const dev = bus.devAdd(mname, name, at);
        assert.equal(dev.name, name);
        assert.ok(!live.has(name), `devAdd ${JSON.stringify(name)} succeeded twice`);
        live.set(name, { name, dev, features: 0n, ready: new Map() });
        assert.equal(dev.getStatus(), 0, 'a new device has status 0');
      } catch (e) {
        const err = isVirtioError(e, 'devAdd');
        failedAdds++;
        // A failed devAdd (e.g. ResourceExhausted for mtu 65535 in an 8 MiB private arena)
        // returns everything it had allocated.
        assert.equal(p.priv.available, privAt, 'a failed devAdd leaks no private memory');
        assert.equal(p.ram.available, ramAt, 'a failed devAdd leaks no RAM');
        assert.equal(err.code === Code.NotFound, mname !== m.name, `devAdd on ${JSON.stringify(mname)}: ${err.code}`);
        if (live.has(name) && mname === m.name) assert.equal(err.code, Code.AlreadyExists);
      }
      continue;
    }
    if (x < 0.17) {
      const name = r.chance(0.9) ? r.pick([...live.keys()]) : r.pick(NAMES);
      trace(`devDel ${JSON.stringify(name).slice(0, 20)}`);
      try {
        bus.devDel(name);
        const l = live.get(name);
        assert.ok(l, `devDel of ${JSON.stringify(name)} succeeded but it was not added`);
        live.delete(name);
        dead.push(l.dev);
      } catch (e) {
        const err = isVirtioError(e, 'devDel');
        assert.ok(!live.has(name), `devDel of a live device failed: ${err.message}`);
      }
      continue;
    }
    const l = r.pick([...live.values()]);
    const d = l.dev;
    const nvqs = d.nvqs;
    const prev = d.getStatus();
    let op = '';
    let expectStatus: ((s: number) => void) | null = null;
    let threw = false;
    /** setVqReady; a refused enable (rings not mapped, say) leaks nothing. */
    const setReady = (i: number, on: boolean): void => {
      const at = p.priv.available;
      try {
        d.setVqReady(i, on);
      } catch (e) {
        assert.equal(p.priv.available, at, 'a refused setVqReady leaks no private memory');
        throw e;
      }
    };
    try {
      const y = r.int(18);
      switch (y) {
        case 17: {
          // The driver's bring-up (VIRTIO 1.3 §3.1.1), each step allowed to fail, then a kick.
          op = 'bringUp';
          const fs = (d.getDeviceFeatures() & (r.chance(0.5) ? randBig(r) : -1n)) | (1n << 32n);
          d.setStatus(ACKNOWLEDGE);
          d.setStatus(ACKNOWLEDGE | DRIVER);
          d.setDriverFeatures(fs);
          l.features = fs;
          d.setStatus(ACKNOWLEDGE | DRIVER | FEATURES_OK);
          if (!(d.getStatus() & FEATURES_OK)) break;
          for (let i = 0; i < nvqs; i++) {
            const n = r.pick([1, 2, 8, 64, 256]);
            d.setVqNum(i, n);
            const base = scratch + 65536 * r.int(3);
            d.setVqAddress(i, base, base + 16 * n, base + 16 * n + 4096);
            setReady(i, true);
            l.ready.set(i, true);
          }
          d.setStatus(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
          d.kickVq(r.int(nvqs));
          expectStatus = (s) => assert.ok(s & DRIVER_OK, 'bring-up reached DRIVER_OK');
          break;
        }
        case 0: {
          // setStatus: mostly the next bit of the handshake, sometimes any byte.
          const v = r.chance(0.6)
            ? prev | r.pick([ACKNOWLEDGE, ACKNOWLEDGE | DRIVER, DRIVER, FEATURES_OK, DRIVER_OK, FAILED])
            : r.chance(0.2) ? 0 : r.int(256);
          op = `setStatus(0x${v.toString(16)})`;
          d.setStatus(v);
          expectStatus = (s) => {
            if (v === 0) {
              assert.equal(s, 0, `${op}: a zero write resets`);
              return;
            }
            assert.ok(!(v & NEEDS_RESET) || (prev & NEEDS_RESET), `${op}: the driver set DEVICE_NEEDS_RESET`);
            // FEATURES_OK may stay clear (rejected features); the device may add NEEDS_RESET.
            assert.equal(s & ~(v | NEEDS_RESET), 0, `${op}: status 0x${s.toString(16)} has bits the driver did not write`);
            assert.equal(s & ~FEATURES_OK, (v | (s & NEEDS_RESET)) & ~FEATURES_OK, `${op}: status 0x${s.toString(16)}`);
          };
          if (v === 0) {
            l.features = 0n;
            l.ready.clear();
          }
          break;
        }
        case 1: {
          const f = r.chance(0.7) ? d.getDeviceFeatures() & randBig(r) | (r.chance(0.8) ? 1n << 32n : 0n) : r.pick([randBig(r), -1n, 1n << 64n]);
          op = `setDriverFeatures(0x${f.toString(16)})`;
          d.setDriverFeatures(f);
          l.features = f;
          break;
        }
        case 2: {
          const i = someNumber(r, [0, 1, nvqs - 1, nvqs]);
          const n = someNumber(r, [1, 2, 4, 8, 16, 64, 256, 3, 257, 0]);
          op = `setVqNum(${i}, ${n})`;
          d.setVqNum(i, n);
          break;
        }
        case 3: {
          const i = someNumber(r, [0, 1, nvqs - 1]);
          const a = () => (r.chance(0.8) ? scratch + 4096 * r.int(SCRATCH / 4096 - 2) + r.pick([0, 0, 2, 4, 16]) : r.pick([0, -1, 2 ** 53, 2 ** 64 - 1]));
          op = `setVqAddress(${i})`;
          d.setVqAddress(i, a(), a(), r.chance(0.1) ? (1n << 64n) - 1n : a());
          break;
        }
        case 4: {
          const i = someNumber(r, [0, 1, nvqs - 1]);
          const on = r.chance(0.7);
          op = `setVqReady(${i}, ${on})`;
          setReady(i, on);
          l.ready.set(i, on);
          break;
        }
        case 5: {
          const i = someNumber(r, [0, 1, nvqs - 1]);
          const size = r.pick([1, 2, 4, 8, 16, 64, 256, 3]);
          const s: VqState = r.chance(0.5)
            ? { version: 1, layout: 'split', size, availIndex: r.int(0x10000), usedIndex: r.chance(0.5) ? undefined : r.int(0x10000) }
            : { version: 1, layout: 'packed', size, lastAvailIdx: r.int(size + 1), lastAvailWrap: r.int(2) as 0 | 1, lastUsedIdx: r.int(size + 1), lastUsedWrap: r.int(2) as 0 | 1 };
          if (r.chance(0.1)) (s as unknown as Record<string, unknown>).version = r.pick([0, 2, '1', null]);
          op = `setVqState(${i})`;
          d.setVqState(i, s);
          break;
        }
        case 6: {
          const i = someNumber(r, [0, 1, nvqs - 1]);
          op = `getVqState(${i})`;
          const s = d.getVqState(i);
          assert.equal(s.version, 1);
          break;
        }
        case 7: {
          const entries = Array.from({ length: r.int(4) }, () => ({
            iova: r.chance(0.8) ? BigInt(r.int(2 ** 32)) : randBig(r), size: r.chance(0.8) ? r.range(1, 1 << 20) : r.pick([0, -1, 2 ** 53]),
            addr: r.chance(0.8) ? p.ramBase + r.int(p.ramSize - (1 << 20)) : r.pick([0, -1, p.ramBase + p.ramSize]), perm: r.pick([PERM_R, PERM_W, PERM_RW, 0, 4]),
          }));
          if (r.chance(0.3)) entries.push({ iova: BigInt(p.ramBase), size: p.ramSize, addr: p.ramBase, perm: PERM_RW });
          const asid = someNumber(r, [0, 0, 1]);
          op = `setMap(${asid}, ${entries.length})`;
          d.setMap?.(asid, entries);
          break;
        }
        case 8: {
          const asid = someNumber(r, [0, 0, 1]);
          op = `dmaMap(${asid})`;
          d.dmaMap?.(asid, { iova: BigInt(r.int(2 ** 32)), size: r.range(1, 1 << 16), addr: p.ramBase + r.int(1 << 20), perm: r.pick([PERM_R, PERM_W, PERM_RW]) });
          break;
        }
        case 9: {
          const asid = someNumber(r, [0, 0, 1]);
          op = `dmaUnmap(${asid})`;
          d.dmaUnmap?.(asid, r.chance(0.8) ? BigInt(r.int(2 ** 32)) : randBig(r), someNumber(r, [1, 4096, 1 << 30]));
          break;
        }
        case 10: {
          op = r.chance(0.5) ? 'suspend' : 'resume';
          if (op === 'suspend') d.suspend?.();
          else d.resume?.();
          break;
        }
        case 11: {
          op = 'reset';
          d.reset();
          l.features = 0n;
          l.ready.clear();
          expectStatus = (s) => assert.equal(s, 0, 'reset clears the status');
          break;
        }
        case 12: {
          const i = someNumber(r, [0, 1, nvqs - 1]);
          op = `kickVq(${i})`;
          d.kickVq(i);
          break;
        }
        case 13: {
          const size = d.getConfigSize();
          const off = someNumber(r, [0, 1, size - 1, size, r.int(size + 1)]);
          const len = someNumber(r, [0, 1, 2, 4, 6, size, size + 1]);
          op = `getConfig(${off}, ${len})`;
          const b = d.getConfig(off, len);
          assert.equal(b.length, len, `${op} returned ${b.length} bytes`);
          break;
        }
        case 14: {
          const size = d.getConfigSize();
          const off = someNumber(r, [0, 1, size - 1, size, r.int(size + 1)]);
          const data = r.bytes(r.pick([0, 1, 2, 4, 8, size + 1]));
          op = `setConfig(${off}, ${data.length})`;
          const before = d.getConfig(0, size);
          try {
            d.setConfig(off, data);
          } catch (e) {
            assert.deepEqual(d.getConfig(0, size), before, `a refused ${op} changed the config`);
            throw e;
          }
          break;
        }
        case 15: {
          const g = someNumber(r, [0, 1]);
          const a = someNumber(r, [0, 1]);
          op = `setGroupAsid(${g}, ${a})`;
          d.setGroupAsid?.(g, a);
          break;
        }
        default: {
          const i = someNumber(r, [0, 1, nvqs - 1]);
          op = `getters(${i})`;
          d.getVqReady(i);
          d.getVqNotification?.(i);
          d.getVendorVqStats?.(i);
          d.getGeneration();
          d.getDeviceId();
          break;
        }
      }
    } catch (e) {
      isVirtioError(e, op);
      threw = true;
      expectStatus = null;
      if (op.startsWith('setDriverFeatures')) {
        /* refused: the getter keeps the old value */
      }
      if (op.startsWith('setStatus')) assert.equal(d.getStatus(), prev, `a refused ${op} changed the status`);
    }
    trace(`${JSON.stringify(l.name)} ${op}${threw ? ' threw' : ''} status 0x${d.getStatus().toString(16)} priv ${p.priv.available} ram ${p.ram.available}`);
    tally(`${op.replace(/\(.*$/, '')}:${threw ? 'threw' : 'ok'}`);
    const st = d.getStatus();
    if (st & DRIVER_OK) tally('status:DRIVER_OK');
    if (st & NEEDS_RESET) tally('status:NEEDS_RESET');
    if (r.chance(0.2)) await new Promise((res) => setImmediate(res)); // let deferred datapath work run
    // Invariants of every live device.
    for (const x of live.values()) {
      const s = x.dev.getStatus();
      checkStatusOrder(s, `after ${op} on ${JSON.stringify(l.name)}`);
      if (x === l) {
        if (expectStatus) expectStatus(s);
        else if (!op.startsWith('setStatus') && op !== 'reset' && op !== 'bringUp') {
          assert.equal(prev & ~s, 0, `${op} cleared status bits 0x${(prev & ~s).toString(16)}`);
          assert.equal(s & ~prev & ~NEEDS_RESET, 0, `${op} set status bits 0x${(s & ~prev).toString(16)}`);
        }
      }
      if (x.features !== null) assert.equal(x.dev.getDriverFeatures(), x.features, `driver features after ${op}`);
      for (const [i, on] of x.ready) if (!(s === 0)) assert.equal(x.dev.getVqReady(i), on, `queue ${i} ready after ${op}`);
      if (s === 0) for (let i = 0; i < x.dev.nvqs; i++) assert.equal(x.dev.getVqReady(i), false, 'a reset device has no ready queue');
    }
  }
  for (const name of [...live.keys()]) bus.devDel(name);
  trace(`all deleted: priv ${p.priv.available} (before ${privBefore}) ram ${p.ram.available} (before ${ramBefore})`);
  await new Promise((res) => setImmediate(res));
  // A deleted device refuses every call (STYLE.md: a destroyed object refuses every call and
  // touches nothing).
  for (const dv of dead.slice(0, 2)) {
    const calls: [string, () => unknown][] = [
      ['setStatus', () => dv.setStatus(ACKNOWLEDGE)], ['setVqNum', () => dv.setVqNum(0, 8)], ['kickVq', () => dv.kickVq(0)],
      ['getConfig', () => dv.getConfig(0, 1)], ['setMap', () => dv.setMap?.(0, [])],
    ];
    for (const [what, call] of calls) {
      let refused = false;
      try {
        call();
      } catch (e) {
        isVirtioError(e, `${what} on a deleted device`);
        refused = true;
      }
      assert.ok(refused, `${what} on a deleted device ${JSON.stringify(dv.name)} did not throw`);
    }
  }
  assert.equal(p.priv.available, privBefore, `private memory leaked after deleting every device (${failedAdds} failed devAdd)`);
  assert.equal(p.ram.available, ramBefore, `RAM leaked after deleting every device (${failedAdds} failed devAdd)`);
}

/** Prints each step with VDPA_FUZZ_TRACE=1 (with VDPA_FUZZ_CASE, to see what a failing case did). */
function trace(s: string): void {
  if (process.env.VDPA_FUZZ_TRACE) console.log(s);
}

/** Outcome counts, printed with VDPA_FUZZ_STATS=1. */
const stats = new Map<string, number>();
function tally(k: string): void {
  stats.set(k, (stats.get(k) ?? 0) + 1);
}

describe('fuzz: control plane sequences', () => {
  after(() => {
    envs.clear();
    if (process.env.VDPA_FUZZ_STATS) console.log([...stats].sort().map(([k, v]) => `${k}: ${v}`).join('\n'));
  });
  for (const build of BUILDS) {
    test(`${build}: every call succeeds or throws a VirtioError; status, getters and memory stay consistent`, async () => {
      await fuzzAsync(`control-${build}`, 400, (r) => runSequence(build, r));
    });
  }
});
