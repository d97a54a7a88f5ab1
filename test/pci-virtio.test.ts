// The virtio-pci function (src/pci/virtio-pci.ts) driven register by register by a guest
// driver written here the way Linux's virtio_pci_modern does it (vp_modern_probe: walk the
// capability list, map common/ISR/device/notify; virtio_dev_probe: reset, ACK, DRIVER,
// features, FEATURES_OK; setup_vq: select, size, addresses, vector, enable; DRIVER_OK), with
// split rings written by hand in guest RAM that sits at a non-zero offset of a memory the
// package does not own. vdpasim_net loops frames back, vdpasim_blk stores sectors; interrupts
// by MSI-X and by INTx with ISR read-to-clear; bad accesses read all ones and are dropped.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Platform, VdpaBus, VirtioError, Code, VdpaSimNetMgmt, VdpaSimBlkMgmt, VhostVdpa, VirtioPciFunction,
  featureBit, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_F_EVENT_IDX,
  DriverQueue, VIRTIO_F_RING_PACKED, type VdpaSimNet, type VdpaSimBlk, type PciInterruptSink,
} from '../src/index.ts';
import * as C from '../src/pci/constants.ts';
import { eth, tick } from './helpers/net.ts';
import { Guest, S_ACK, S_DRIVER, S_DRIVER_OK, S_FEATURES_OK } from './helpers/pci-guest.ts';

const PAGE = 65536;
const RAM_OFFSET = 5 * PAGE + 0x3000; // guest-physical 0 lies here in the memory

interface Irq {
  msi: { vector: number; lo: number; hi: number; data: number }[];
  intx: boolean[];
}

function world(o: { msixVectors?: number } = {}) {
  const memory = new WebAssembly.Memory({ initial: 5 + 49, maximum: 1000 });
  // Platform RAM: the guest's 32 pages, then 16 the package allocates from (vdpasim_blk keeps
  // its RAM disk there). The guest's part is taken out of the allocator first.
  const p = Platform.foreign({ memory, ramBase: RAM_OFFSET, ramSize: 48 * PAGE, privateSize: 8 << 20, allocateRam: true });
  const guestRam = p.ram.alloc(32 * PAGE, 4096);
  assert.equal(guestRam, RAM_OFFSET);
  const guestMemory = [{ gpa: 0, size: 32 * PAGE, offset: guestRam }];
  const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(p, 64));
  const vhost = new VhostVdpa(p);
  bus.registerDriver(vhost);
  const irq: Irq = { msi: [], intx: [] };
  const interrupts: PciInterruptSink = {
    msi: (lo, hi, data, vector) => irq.msi.push({ vector, lo, hi, data }),
    setIntx: (level) => irq.intx.push(level),
  };
  const fn = (name: string) => new VirtioPciFunction(p, vhost.open(vhost.nodeOf(name)), { interrupts, msixVectors: o.msixVectors, guestMemory });
  return { memory, p, bus, vhost, irq, fn };
}

describe('config space', () => {
  test('IDs, class, BARs sized by writing all ones, capability chain and MSI-X capability (as QEMU lays them out)', () => {
    const { fn, bus } = world();
    bus.devAdd('vdpasim_net', 'net0');
    bus.devAdd('vdpasim_blk', 'blk0');
    const net = fn('net0');
    const blk = fn('blk0');
    const d = net.description;
    assert.equal(d.vendorId, 0x1af4);
    assert.equal(d.deviceId, 0x1041, '0x1040 + VIRTIO_ID_NET');
    assert.equal(blk.description.deviceId, 0x1042);
    assert.equal(d.classCode, 0x020000);
    assert.equal(blk.description.classCode, 0x010000);
    assert.ok(d.subsystemId >= 0x40, '§4.1.2.1');
    assert.deepEqual(d.bars, [{ index: 1, size: 0x1000, kind: 'mem32', prefetchable: false }, { index: 4, size: 0x4000, kind: 'mem64', prefetchable: true }]);
    assert.equal(net.configRead(C.PCI_VENDOR_ID, 4), 0x1af4 | (0x1041 << 16));
    assert.equal(net.configRead(C.PCI_REVISION_ID, 1), 1, 'non-transitional: revision ≥ 1 (§4.1.2.1)');
    assert.equal(net.configRead(C.PCI_REVISION_ID, 4) >>> 8, 0x020000);
    assert.equal(net.configRead(C.PCI_SUBSYSTEM_VENDOR_ID, 2), 0x1af4);
    assert.equal(net.configRead(C.PCI_INTERRUPT_PIN, 1), 1);
    assert.equal(net.configRead(C.PCI_HEADER_TYPE, 1), 0);
    // BAR sizing: write ~0, read back; flags stay.
    const bar = (i: number) => C.PCI_BASE_ADDRESS_0 + 4 * i;
    assert.equal(net.configRead(bar(4), 4), C.PCI_BASE_ADDRESS_MEM_TYPE_64 | C.PCI_BASE_ADDRESS_MEM_PREFETCH);
    for (const i of [0, 1, 2, 3, 4, 5]) net.configWrite(bar(i), 4, 0xffffffff);
    assert.equal(net.configRead(bar(4), 4), (~(0x4000 - 1) | 0xc) >>> 0);
    assert.equal(net.configRead(bar(5), 4), 0xffffffff, 'upper half of the 64-bit BAR');
    assert.equal(net.configRead(bar(1), 4), (~(0x1000 - 1)) >>> 0);
    for (const i of [0, 2, 3]) assert.equal(net.configRead(bar(i), 4), 0, `BAR${i} is not implemented`);
    net.configWrite(bar(4), 4, 0xfebf0000);
    net.configWrite(bar(5), 4, 0x1);
    assert.equal(net.barAddress(4), 0x1_febf_0000n);
    // Command: IO|MEM|MASTER|INTX_DISABLE writable, the rest not.
    net.configWrite(C.PCI_COMMAND, 2, 0xffff);
    assert.equal(net.configRead(C.PCI_COMMAND, 2), 0x407);
    net.configWrite(C.PCI_VENDOR_ID, 2, 0x1234);
    assert.equal(net.configRead(C.PCI_VENDOR_ID, 2), 0x1af4, 'read-only');
    // The capability chain.
    const seen: string[] = [];
    for (let at = net.configRead(C.PCI_CAPABILITY_LIST, 1); at; at = net.configRead(at + 1, 1)) {
      assert.equal(at % 4, 0);
      assert.ok(at >= 0x40);
      const id = net.configRead(at, 1);
      if (id === C.PCI_CAP_ID_MSIX) {
        assert.equal((net.configRead(at + C.PCI_MSIX_FLAGS, 2) & C.PCI_MSIX_FLAGS_QSIZE) + 1, net.numQueues + 1);
        assert.equal(net.configRead(at + C.PCI_MSIX_TABLE, 4), 0 | 1, 'table at 0 of BAR 1');
        assert.equal(net.configRead(at + C.PCI_MSIX_PBA, 4), 0x800 | 1, 'PBA at 0x800 of BAR 1');
        seen.push('msix');
        continue;
      }
      assert.equal(id, C.PCI_CAP_ID_VNDR);
      const type = net.configRead(at + 3, 1);
      const len = net.configRead(at + 2, 1);
      const where = `${net.configRead(at + 4, 1)}@${net.configRead(at + 8, 4).toString(16)}+${net.configRead(at + 12, 4).toString(16)}`;
      seen.push(`${type}:${len}:${where}`);
    }
    assert.deepEqual(seen, ['msix', '1:16:4@0+40', '3:16:4@1000+4', `4:16:4@2000+${net.file.getConfigSize().toString(16)}`,
      `2:20:4@3000+${(net.numQueues * 4).toString(16)}`, '5:20:0@0+0']);
    // The INTx-only function has no MSI-X capability and no MSI-X BAR.
    net.close();
    blk.close();
    const w = world({ msixVectors: 0 });
    w.bus.devAdd('vdpasim_blk', 'blk1');
    const b2 = w.fn('blk1');
    assert.deepEqual(b2.description.bars.map((b) => b.index), [4]);
    assert.equal(b2.configRead(C.PCI_CAPABILITY_LIST, 1), 0x40);
    assert.equal(b2.configRead(0x40, 1), C.PCI_CAP_ID_VNDR);
    b2.close();
  });

  test('the VIRTIO_PCI_CAP_PCI_CFG window reaches the BAR through config space (§4.1.4.9)', () => {
    const { fn, bus } = world();
    bus.devAdd('vdpasim_net', 'net0');
    const net = fn('net0');
    const g = new Guest(net, new WebAssembly.Memory({ initial: 1 }), 0);
    g.probe();
    const w = g.caps.get(C.VIRTIO_PCI_CAP_PCI_CFG)!.at;
    net.configWrite(w + C.VIRTIO_PCI_CAP_BAR, 1, 4);
    net.configWrite(w + C.VIRTIO_PCI_CAP_OFFSET, 4, C.VIRTIO_PCI_COMMON_NUMQ);
    net.configWrite(w + C.VIRTIO_PCI_CAP_LENGTH, 4, 2);
    assert.equal(net.configRead(w + C.VIRTIO_PCI_CFG_CAP_DATA, 4) & 0xffff, net.numQueues);
    net.configWrite(w + C.VIRTIO_PCI_CAP_OFFSET, 4, C.VIRTIO_PCI_COMMON_Q_SELECT);
    net.configWrite(w + C.VIRTIO_PCI_CFG_CAP_DATA, 4, 1);
    assert.equal(net.read(4, C.VIRTIO_PCI_COMMON_Q_SELECT, 2), 1, 'a write through the window');
    net.close();
  });
});

describe('bring-up by a register-level guest driver', () => {
  for (const eventIdx of [false, true]) {
    test(`vdpasim_net with MSI-X${eventIdx ? ' and EVENT_IDX' : ''}: MAC from device config, frames loop back through guest RAM at offset ${RAM_OFFSET}, a vector per queue`, async () => {
      const { fn, bus, memory, irq, p } = world();
      const dev = bus.devAdd('vdpasim_net', 'net0') as VdpaSimNet;
      const net = fn('net0');
      const g = new Guest(net, memory, RAM_OFFSET);
      g.probe();
      g.enableMsix();
      const want = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS) |
        (eventIdx ? featureBit(VIRTIO_F_EVENT_IDX) : 0n);
      const f = g.negotiate(want);
      assert.equal(f, want);
      assert.equal(dev.getDriverFeatures() & ~featureBit(33), want, 'the device got them (with ACCESS_PLATFORM, as QEMU forces)');
      // Device config: mac[6] then status (virtio_net_config), read the way virtio_cread8 does.
      const mac = Array.from({ length: 6 }, (_, i) => g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, i, 1));
      assert.deepEqual(mac, Array.from(net.file.getConfig(0, 6)));
      assert.equal(g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, 6, 2), 1, 'VIRTIO_NET_S_LINK_UP');
      g.common(C.VIRTIO_PCI_COMMON_MSIX, 2, 0);
      assert.equal(g.common(C.VIRTIO_PCI_COMMON_MSIX, 2), 0);
      g.setupQueue(0, 64, 1);
      g.setupQueue(1, 64, 2);
      g.addStatus(S_DRIVER_OK);
      assert.equal(g.status, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
      memory.grow(2); // the owner grows its memory: nothing may notice
      const rxBuf = new Map<number, number>(); // head → guest-physical buffer (leftovers carry over)
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < 8; i++) {
          const b = g.alloc(2048);
          rxBuf.set(g.add(0, [], [{ gpa: b, len: 2048 }]), b);
        }
        g.kick(0);
        const frames = Array.from({ length: 6 }, (_, i) => eth(60 + 97 * i + round, i));
        for (const fr of frames) g.sendFrame(1, fr);
        irq.msi.length = 0;
        g.kick(1);
        for (let i = 0; i < 10 && irq.msi.filter((m) => m.vector === 1).length === 0; i++) await tick();
        const got = g.used(0);
        assert.equal(got.length, frames.length);
        got.forEach((u, i) => {
          const b = rxBuf.get(u.id)!;
          assert.equal(u.len, 12 + frames[i]!.length);
          assert.deepEqual(Uint8Array.from(g.bytes(b + 12, frames[i]!.length)), frames[i]);
        });
        assert.equal(g.used(1).length, frames.length);
        const vectors = new Set(irq.msi.map((m) => m.vector));
        assert.ok(vectors.has(1) && vectors.has(2), `rx and tx vectors fired: ${[...vectors].join(',')}`);
        for (const m of irq.msi) assert.deepEqual([m.lo, m.hi, m.data], [0xfee00000, 0, 0x40 + m.vector], 'the message the guest programmed');
      }
      assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1) & 1, 0, 'with MSI-X the queue bit of ISR stays clear');
      // Config change: the config vector, a new generation, link status reads down.
      const gen = g.common(C.VIRTIO_PCI_COMMON_CFGGENERATION, 1);
      irq.msi.length = 0;
      dev.setLink(false);
      for (let i = 0; i < 5 && irq.msi.length === 0; i++) await tick();
      assert.deepEqual(irq.msi.map((m) => m.vector), [0]);
      assert.equal(g.common(C.VIRTIO_PCI_COMMON_CFGGENERATION, 1), (gen + 1) & 0xff);
      assert.equal(g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, 6, 2), 0);
      // Masked vectors go pending in the PBA, and fire on unmask.
      const tbl = 1;
      net.write(tbl, 0 * 16 + 12, 4, 1);
      irq.msi.length = 0;
      dev.setLink(true);
      for (let i = 0; i < 5; i++) await tick();
      assert.equal(irq.msi.length, 0);
      assert.equal(net.read(tbl, 0x800, 4) & 1, 1, 'pending bit of vector 0');
      net.write(tbl, 0 * 16 + 12, 4, 0);
      assert.deepEqual(irq.msi.map((m) => m.vector), [0]);
      assert.equal(net.read(tbl, 0x800, 4) & 1, 0);
      assert.equal(net.backendErrors, 0);
      assert.equal(net.badAccesses, 0);
      assert.equal(p.u8.length, memory.buffer.byteLength);
      // Reset: status 0 reads 0, vectors back to NO_VECTOR; a second bring-up works (the maps are still there).
      g.common(C.VIRTIO_PCI_COMMON_STATUS, 1, 0);
      assert.equal(g.status, 0);
      assert.equal(g.common(C.VIRTIO_PCI_COMMON_MSIX, 2), C.VIRTIO_MSI_NO_VECTOR);
      g.negotiate(want);
      g.setupQueue(0, 32, 1);
      g.setupQueue(1, 32, 2);
      g.addStatus(S_DRIVER_OK);
      const b = g.alloc(2048);
      g.add(0, [], [{ gpa: b, len: 2048 }]);
      g.kick(0);
      const fr = eth(200, 9);
      g.sendFrame(1, fr);
      g.kick(1);
      for (let i = 0; i < 10 && g.rings[0]!.lastUsed === 0; i++) {
        await tick();
        if (g.used(0).length) break;
      }
      assert.deepEqual(Uint8Array.from(g.bytes(b + 12, fr.length)), fr, 'after a reset');
      assert.equal(net.backendErrors, 0);
      net.close();
    });
  }

  for (const layout of ['split', 'packed'] as const) {
    for (const eventIdx of [false, true]) {
      test(`vdpasim_net on ${layout} rings${eventIdx ? ' with EVENT_IDX' : ''} (the package's DriverQueue as the guest's ring code), guest RAM at guest-physical 1 GiB`, async () => {
        const G = 0x4000_0000;
        const memory = new WebAssembly.Memory({ initial: 5 + 49, maximum: 1000 });
        const p = Platform.foreign({ memory, ramBase: RAM_OFFSET, ramSize: 48 * PAGE, privateSize: 8 << 20, allocateRam: true });
        const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
        bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
        const vhost = new VhostVdpa(p);
        bus.registerDriver(vhost);
        bus.devAdd('vdpasim_net', 'net0');
        const msi: number[] = [];
        const fn = new VirtioPciFunction(p, vhost.open('vhost-vdpa-0'), {
          guestMemory: [{ gpa: G, size: 48 * PAGE, offset: RAM_OFFSET }],
          interrupts: { msi: (_lo, _hi, _data, v) => msi.push(v) },
        });
        const g = new Guest(fn, memory, RAM_OFFSET);
        g.probe();
        g.enableMsix();
        const features = g.negotiate(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC) |
          (layout === 'packed' ? featureBit(VIRTIO_F_RING_PACKED) : 0n) | (eventIdx ? featureBit(VIRTIO_F_EVENT_IDX) : 0n));
        const dmaBase = G - RAM_OFFSET; // guest-physical = memory offset + dmaBase
        const qs = [0, 1].map((q) => {
          const dq = new DriverQueue(p, { size: 64, features, dmaBase });
          const a = dq.addresses;
          const noff = g.setupQueueAt(q, 64, Number(a.descArea), Number(a.driverArea), Number(a.deviceArea), q + 1);
          return { dq, noff };
        });
        g.addStatus(S_DRIVER_OK);
        const [rx, tx] = [qs[0]!, qs[1]!];
        const kick = (i: number) => {
          if (qs[i]!.dq.kickPrepare()) g.notify(i, qs[i]!.noff);
        };
        for (let round = 0; round < 3; round++) {
          const bufs: number[] = [];
          for (let i = 0; i < 8; i++) {
            const b = p.allocBuffer(2048);
            bufs.push(b);
            assert.ok(rx.dq.add(i, [], [{ addr: b + dmaBase, len: 2048 }]));
          }
          kick(0);
          const frames = Array.from({ length: 8 }, (_, i) => eth(60 + 91 * i + round, i));
          frames.forEach((fr, i) => {
            const b = p.allocBuffer(12 + fr.length);
            p.u8.fill(0, b, b + 12);
            p.u8.set(fr, b + 12);
            assert.ok(tx.dq.add(100 + i, [{ addr: b + dmaBase, len: 12 + fr.length }]));
          });
          msi.length = 0;
          kick(1);
          for (let i = 0; i < 10 && !msi.includes(1); i++) await tick();
          const got = rx.dq.reclaim();
          assert.equal(got.length, frames.length, `round ${round}`);
          got.forEach(({ token, len }, i) => {
            assert.equal(len, 12 + frames[i]!.length);
            assert.deepEqual(p.u8.slice(bufs[token]! + 12, bufs[token]! + len), frames[i]);
          });
          assert.equal(tx.dq.reclaim().length, frames.length);
          assert.ok(msi.includes(1), `rx vector (round ${round}: ${msi.join(',')})`);
          rx.dq.enableCb(); // re-arm (virtqueue_enable_cb: used_event with EVENT_IDX)
          tx.dq.enableCb();
          memory.grow(1);
        }
        assert.equal(fn.backendErrors, 0);
        fn.close();
      });
    }
  }

  test('vdpasim_blk with INTx: capacity from device config, sectors written and read back match the disk, ISR read-to-clear drops the line', async () => {
    const { fn, bus, memory, irq, p } = world({ msixVectors: 0 });
    const dev = bus.devAdd('vdpasim_blk', 'blk0') as VdpaSimBlk;
    const blk = fn('blk0');
    const g = new Guest(blk, memory, RAM_OFFSET);
    g.probe();
    assert.equal(g.msixCap, 0);
    g.negotiate(featureBit(VIRTIO_F_VERSION_1));
    // virtio_blk_config.capacity (le64) by two 32-bit reads, as virtio_cread64 does.
    const cap = g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, 0, 4) + g.rd(C.VIRTIO_PCI_CAP_DEVICE_CFG, 4, 4) * 2 ** 32;
    assert.equal(cap, dev.capacity);
    g.setupQueue(0, 16);
    g.addStatus(S_DRIVER_OK);
    const data = g.alloc(4 * 512);
    const pattern = g.bytes(data, 4 * 512);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + 7) & 0xff;
    const want = Uint8Array.from(pattern);
    const s1 = g.blkRequest(1, 10, data, 4 * 512);
    g.kick(0);
    for (let i = 0; i < 10 && irq.intx.length === 0; i++) await tick();
    assert.deepEqual(irq.intx, [true], 'INTA# asserted');
    assert.ok(blk.configRead(C.PCI_STATUS, 2) & C.PCI_STATUS_INTERRUPT);
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1), C.VIRTIO_PCI_ISR_QUEUE);
    assert.deepEqual(irq.intx, [true, false], 'the ISR read de-asserted it');
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1), 0, 'read to clear');
    assert.equal(blk.configRead(C.PCI_STATUS, 2) & C.PCI_STATUS_INTERRUPT, 0);
    assert.equal(g.used(0).length, 1);
    assert.equal(g.bytes(s1, 1)[0], 0, 'VIRTIO_BLK_S_OK');
    assert.deepEqual(p.u8.slice(dev.disk + 10 * 512, dev.disk + 14 * 512), want, 'the disk holds the bytes');
    const back = g.alloc(4 * 512);
    const s2 = g.blkRequest(0, 10, back, 4 * 512);
    g.kick(0);
    for (let i = 0; i < 10 && irq.intx.length === 2; i++) await tick();
    assert.equal(g.used(0).length, 1);
    assert.equal(g.bytes(s2, 1)[0], 0);
    assert.deepEqual(Uint8Array.from(g.bytes(back, 4 * 512)), want);
    // INTx disabled in the command register: ISR still set, the line stays low.
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1), 1);
    blk.configWrite(C.PCI_COMMAND, 2, C.PCI_COMMAND_MEMORY | C.PCI_COMMAND_MASTER | C.PCI_COMMAND_INTX_DISABLE);
    const n = irq.intx.length;
    g.blkRequest(0, 0, g.alloc(512), 512);
    g.kick(0);
    for (let i = 0; i < 10 && g.used(0).length === 0; i++) await tick();
    assert.equal(irq.intx.length, n, 'no INTx while disabled');
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1), 1);
    assert.equal(blk.backendErrors, 0);
    blk.close();
  });

  test('a node without IOTLB_PERSIST: after a guest reset the function maps guest RAM again (INVALIDATE + UPDATE)', async () => {
    const { p, bus, vhost, memory } = world({ msixVectors: 0 });
    const dev = bus.devAdd('vdpasim_blk', 'blk0') as VdpaSimBlk;
    const file = vhost.open('vhost-vdpa-0');
    file.getBackendFeatures = () => 0n; // as a node that does not offer IOTLB_PERSIST
    const blk = new VirtioPciFunction(p, file, { msixVectors: 0, guestMemory: [{ gpa: 0, size: 32 * PAGE, offset: RAM_OFFSET }] });
    const g = new Guest(blk, memory, RAM_OFFSET);
    g.probe();
    for (let round = 0; round < 2; round++) {
      g.bringUp(featureBit(VIRTIO_F_VERSION_1), [{ size: 16 }]); // resets first
      const data = g.alloc(512);
      g.bytes(data, 512).fill(0x31 + round);
      const s = g.blkRequest(1, round, data, 512);
      g.kick(0);
      for (let i = 0; i < 10 && g.bytes(s, 1)[0] === 0xff; i++) await tick();
      assert.equal(g.bytes(s, 1)[0], 0, `round ${round}`);
      assert.equal(p.u8[dev.disk + round * 512 + 7], 0x31 + round);
    }
    assert.equal(blk.backendErrors, 0);
    blk.close();
  });

  test('an I/O-port BAR (as v86 can relocate): packed layout found through the capabilities, blk I/O works, config snapshot', async () => {
    const { p, bus, vhost, memory, irq } = world({ msixVectors: 0 });
    const dev = bus.devAdd('vdpasim_blk', 'blk0') as VdpaSimBlk;
    const blk = new VirtioPciFunction(p, vhost.open('vhost-vdpa-0'), {
      bar: 0, barKind: 'io', msixVectors: 0, guestMemory: [{ gpa: 0, size: 32 * PAGE, offset: RAM_OFFSET }],
      interrupts: { setIntx: (l) => irq.intx.push(l) },
    });
    assert.deepEqual(blk.description.bars, [{ index: 0, size: 0x100, kind: 'io', prefetchable: false }]);
    assert.equal(blk.configRead(C.PCI_BASE_ADDRESS_0, 4), C.PCI_BASE_ADDRESS_SPACE_IO);
    blk.configWrite(C.PCI_BASE_ADDRESS_0, 4, 0xffffffff);
    assert.equal(blk.configRead(C.PCI_BASE_ADDRESS_0, 4), (~0xff | 1) >>> 0, '256 ports');
    blk.configWrite(C.PCI_BASE_ADDRESS_0, 4, 0xc001);
    assert.equal(blk.barAddress(0), 0xc000n);
    const snap = blk.configSnapshot();
    assert.equal(snap[0]! | (snap[1]! << 8), 0x1af4);
    assert.equal(snap[C.PCI_BASE_ADDRESS_0]! & 1, 1);
    const g = new Guest(blk, memory, RAM_OFFSET);
    g.probe();
    assert.deepEqual([...g.caps.values()].filter((c) => c.type !== 5).map((c) => [c.type, c.bar, c.offset]), [[1, 0, 0], [3, 0, 0x40], [4, 0, 0x60], [2, 0, (0x60 + blk.file.getConfigSize() + 3) & ~3]]);
    g.bringUp(featureBit(VIRTIO_F_VERSION_1), [{ size: 16 }]);
    const data = g.alloc(512);
    g.bytes(data, 512).fill(0x5c);
    const s = g.blkRequest(1, 3, data, 512);
    g.kick(0);
    for (let i = 0; i < 10 && irq.intx.length === 0; i++) await tick();
    assert.deepEqual(irq.intx, [true]);
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1), 1);
    assert.equal(g.bytes(s, 1)[0], 0);
    assert.equal(p.u8[dev.disk + 3 * 512 + 100], 0x5c);
    assert.equal(blk.badAccesses, 0);
    blk.close();
  });

  test('a config change under INTx sets ISR bit 1', async () => {
    const { fn, bus, memory, irq } = world({ msixVectors: 0 });
    const dev = bus.devAdd('vdpasim_net', 'net0') as VdpaSimNet;
    const net = fn('net0');
    const g = new Guest(net, memory, RAM_OFFSET);
    g.probe();
    g.negotiate(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_STATUS));
    dev.setLink(false);
    for (let i = 0; i < 5 && irq.intx.length === 0; i++) await tick();
    assert.deepEqual(irq.intx, [true]);
    assert.equal(g.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1), C.VIRTIO_PCI_ISR_CONFIG);
    assert.deepEqual(irq.intx, [true, false]);
    net.close();
  });

  test('features the device does not offer: FEATURES_OK does not take, the guest sees it and the device is untouched', () => {
    const { fn, bus, memory } = world();
    const dev = bus.devAdd('vdpasim_blk', 'blk0') as VdpaSimBlk;
    const blk = fn('blk0');
    const g = new Guest(blk, memory, RAM_OFFSET);
    g.probe();
    g.common(C.VIRTIO_PCI_COMMON_STATUS, 1, 0);
    g.addStatus(S_ACK | S_DRIVER);
    g.common(C.VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
    g.common(C.VIRTIO_PCI_COMMON_GF, 4, 1 | (1 << 9)); // VERSION_1 | bit 41 (ADMIN_VQ, never offered)
    g.addStatus(S_FEATURES_OK);
    assert.equal(g.status & S_FEATURES_OK, 0);
    assert.equal(dev.getDriverFeatures(), 0n);
    // The offered set hides what this transport does not implement, and ACCESS_PLATFORM.
    g.common(C.VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    const hi = g.common(C.VIRTIO_PCI_COMMON_DF, 4);
    assert.equal(hi & ((1 << 1) | (0x1f << 5)), 0);
    blk.close();
  });
});

describe('bad accesses: read all ones, writes dropped, nothing thrown', () => {
  test('wrong size, unaligned, outside a BAR or region, wrong BAR, garbage arguments', () => {
    const { fn, bus } = world();
    bus.devAdd('vdpasim_net', 'net0');
    const net = fn('net0');
    const cfgSize = net.file.getConfigSize();
    const reads: [number, number, number, number][] = [
      [4, C.VIRTIO_PCI_COMMON_Q_SELECT, 4, 0xffffffff], // a 16-bit field read as 32
      [4, C.VIRTIO_PCI_COMMON_DF, 2, 0xffff], // a 32-bit field read as 16
      [4, C.VIRTIO_PCI_COMMON_STATUS + 1, 2, 0xffff], // unaligned
      [4, 3, 4, 0xffffffff], // unaligned
      [4, 0x4000, 4, 0xffffffff], // past the BAR
      [4, 0x2000 + cfgSize, 1, 0xff], // past the device config
      [4, 0x1004, 4, 0xffffffff], // past the ISR
      [4, 0x3000 + 4 * net.numQueues, 2, 0xffff], // past the notify region
      [4, 0, 3, 0xffffffff], // no such size
      [4, 0, 8, 0xffffffff],
      [0, 0, 4, 0xffffffff], // a BAR the function does not have
      [5, 0, 4, 0xffffffff],
      [1, 0x800, 2, 0xffff], // the PBA by halves
      [1, 0xc00, 4, 0xffffffff], // past the PBA
      [4, -4, 4, 0xffffffff],
      [4, 0.5, 1, 0xff],
      [4, Number.NaN, 4, 0xffffffff],
    ];
    for (const [bar, off, size, want] of reads) assert.equal(net.read(bar, off, size), want, `read(${bar}, ${off}, ${size})`);
    assert.equal(net.badAccesses, reads.length);
    const sel = () => net.read(4, C.VIRTIO_PCI_COMMON_Q_SELECT, 2);
    const writes: [number, number, number, unknown][] = [
      [4, C.VIRTIO_PCI_COMMON_Q_SELECT, 4, 2], // wrong width: dropped
      [4, C.VIRTIO_PCI_COMMON_Q_SELECT + 1, 1, 2],
      [4, 0x1000, 1, 0xff], // ISR is read-only
      [4, 0x3002, 2, 0], // between notify addresses
      [4, 0x3000 + 4 * net.numQueues, 2, 0],
      [4, C.VIRTIO_PCI_COMMON_Q_SELECT, 2, 'x'],
      [1, 0x800, 4, 0xffffffff], // the PBA is read-only
      [3, 0, 4, 1],
    ];
    for (const [bar, off, size, v] of writes) net.write(bar, off, size, v as number);
    assert.equal(sel(), 0);
    assert.equal(net.read(1, 0x800, 4), 0);
    assert.equal(net.badAccesses, reads.length + writes.length);
    // Config space: out of range, unaligned, bad sizes.
    assert.equal(net.configRead(256, 1), 0xff);
    assert.equal(net.configRead(0xfe, 4), 0xffffffff);
    assert.equal(net.configRead(1, 2), 0xffff);
    net.configWrite(C.PCI_COMMAND + 1, 2, 0xffff);
    net.configWrite(-1, 1, 0);
    assert.equal(net.configRead(C.PCI_COMMAND, 2), 0);
    // Queue fields of a queue that does not exist read 0 (queue_size 0: unavailable, §4.1.4.3).
    net.write(4, C.VIRTIO_PCI_COMMON_Q_SELECT, 2, 0xffff);
    assert.equal(net.read(4, C.VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
    net.write(4, C.VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    assert.equal(net.read(4, C.VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    // A vector the table does not have reads back NO_VECTOR.
    net.write(4, C.VIRTIO_PCI_COMMON_MSIX, 2, 500);
    assert.equal(net.read(4, C.VIRTIO_PCI_COMMON_MSIX, 2), C.VIRTIO_MSI_NO_VECTOR);
    // Enabling a queue out of order (before FEATURES_OK, a size that is not a power of two) fails
    // in the vhost node: the queue reads back disabled, nothing is thrown.
    net.write(4, C.VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    net.write(4, C.VIRTIO_PCI_COMMON_Q_SIZE, 2, 3);
    net.write(4, C.VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    assert.equal(net.read(4, C.VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    assert.ok(net.backendErrors > 0);
    // A status that clears bits without a reset: refused by the node, status unchanged.
    net.write(4, C.VIRTIO_PCI_COMMON_STATUS, 1, S_ACK | S_DRIVER);
    net.write(4, C.VIRTIO_PCI_COMMON_STATUS, 1, S_ACK);
    assert.equal(net.read(4, C.VIRTIO_PCI_COMMON_STATUS, 1), S_ACK | S_DRIVER);
    net.close();
  });

  test('bad options are VirtioError(InvalidArgument) and leave the node unowned', () => {
    const { p, bus, vhost } = world();
    bus.devAdd('vdpasim_net', 'net0');
    const f = vhost.open('vhost-vdpa-0');
    for (const o of [{ bar: 6 }, { bar: 5 }, { msixVectors: 129 }, { msixVectors: 1.5 }, { msixBar: 4 }, { msixBar: 5 }, { bar: 0, msixBar: 1 },
      { guestMemory: [{ gpa: -1, size: 1, offset: 0 }] }, { guestMemory: [null] }, { guestMemory: 'x' },
      { guestMemory: [{ gpa: 0, size: PAGE, offset: p.ramBase - PAGE }] }, { guestMemory: [{ gpa: 0, size: p.ramSize + 1, offset: p.ramBase }] }]) {
      assert.throws(() => new VirtioPciFunction(p, f, o as never), (e: unknown) => e instanceof VirtioError && e.code === Code.InvalidArgument, JSON.stringify(o));
    }
    const fn = new VirtioPciFunction(p, f, { bar: 0, barKind: 'mem32', msixBar: 2 });
    assert.deepEqual(fn.description.bars.map((b) => [b.index, b.kind]), [[0, 'mem32'], [2, 'mem32']]);
    fn.close();
  });

  test('after close() the function reads all ones and drops writes, like an unplugged card', () => {
    const { fn, bus } = world();
    bus.devAdd('vdpasim_net', 'net0');
    const net = fn('net0');
    net.close();
    net.close();
    assert.equal(net.configRead(C.PCI_VENDOR_ID, 2), 0xffff);
    assert.equal(net.read(4, C.VIRTIO_PCI_COMMON_STATUS, 1), 0xff);
    net.write(4, 0x3000, 2, 0); // a notify on freed doorbells: dropped
    net.write(4, C.VIRTIO_PCI_COMMON_STATUS, 1, 1);
    net.configWrite(C.PCI_COMMAND, 2, 7);
    assert.equal(net.poll(), 0);
    assert.equal(net.backendErrors, 0);
  });

  test('random register traffic never throws and leaves a function a guest can still bring up', async () => {
    const { fn, bus, memory } = world();
    bus.devAdd('vdpasim_blk', 'blk0');
    const blk = fn('blk0');
    let s = 12345;
    const r = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8);
    const sizes = [1, 2, 4, 3, 8, 0];
    for (let i = 0; i < 5000; i++) {
      const bar = r() % 7;
      const off = r() % 0x4100;
      const size = sizes[r() % sizes.length]!;
      if (r() & 1) blk.read(bar, off, size);
      else blk.write(bar, off, size, r() * 17);
      if (i % 7 === 0) blk.configWrite(r() % 260, sizes[r() % 3]!, r());
    }
    // The guest resets and goes on.
    for (let i = 0; i < 6; i++) blk.configWrite(C.PCI_BASE_ADDRESS_0 + 4 * i, 4, 0);
    const g = new Guest(blk, memory, RAM_OFFSET);
    g.probe();
    assert.equal(g.bringUp(featureBit(VIRTIO_F_VERSION_1), [{ size: 16 }]), featureBit(VIRTIO_F_VERSION_1));
    blk.close();
  });
});
