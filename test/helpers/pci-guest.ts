// A register-level virtio-pci guest driver for the VirtioPciFunction suites, written the way
// Linux's virtio_pci_modern does it (vp_modern_probe: walk the capability list, map
// common/ISR/device/notify; virtio_dev_probe: reset, ACK, DRIVER, features, FEATURES_OK;
// setup_vq: select, size, addresses, vector, enable; DRIVER_OK), with split rings written by
// hand in guest RAM that sits at any offset of a memory. It reaches the function's config space
// and BARs through a PciAccess: the VirtioPciFunction itself (direct calls, as the PCI suites
// do), or a platform's dispatch (the v86 suite: config cycles on 0xCF8/0xCFC, v86's I/O ports).

import assert from 'node:assert/strict';
import type { VirtioPciFunction } from '../../src/index.ts';
import * as C from '../../src/pci/constants.ts';

/** Device status bits (VIRTIO 1.3 §2.1). */
export const S_ACK = 1, S_DRIVER = 2, S_DRIVER_OK = 4, S_FEATURES_OK = 8;

/**
 * How the driver reaches a function's config space and BAR registers. A VirtioPciFunction is
 * one (the direct calls are the default way in); a platform's bus dispatch is another.
 */
export interface PciAccess {
  configRead(offset: number, size: number): number;
  configWrite(offset: number, size: number, value: number): void;
  read(bar: number, offset: number, size: number): number;
  write(bar: number, offset: number, size: number, value: number): void;
}

export interface Cap { type: number; bar: number; offset: number; length: number; at: number }

/** A register-level virtio-pci guest driver, as Linux's virtio_pci_modern + virtio_ring (split) do it. */
export class Guest {
  caps = new Map<number, Cap>();
  notifyMult = 0;
  msixCap = 0;
  private brk: number; // guest-physical bump allocator
  readonly rings: { size: number; desc: number; avail: number; used: number; next: number; lastUsed: number; noff: number }[] = [];

  /**
   * `io` reaches the function to drive (the VirtioPciFunction itself, or a bus in front of it);
   * guest-physical 0 is at `ramOffset` in `memory`; rings and buffers are allocated from `brk`.
   */
  constructor(readonly io: PciAccess | VirtioPciFunction, readonly memory: WebAssembly.Memory, readonly ramOffset: number, { brk = 0x1000 }: { brk?: number } = {}) {
    this.brk = brk;
  }

  // guest-physical memory (a fresh view each time: the owner may grow the memory)
  get dv(): DataView {
    return new DataView(this.memory.buffer, this.ramOffset);
  }
  bytes(gpa: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, this.ramOffset + gpa, n);
  }
  alloc(n: number, align = 16): number {
    this.brk = (this.brk + align - 1) & ~(align - 1);
    const a = this.brk;
    this.brk += n;
    return a;
  }

  cfg(off: number, size: number): number {
    return this.io.configRead(off, size);
  }

  /** vp_modern_probe: vendor/device, then the capability list. */
  probe(): void {
    assert.equal(this.cfg(C.PCI_VENDOR_ID, 2), 0x1af4);
    assert.ok(this.cfg(C.PCI_STATUS, 2) & C.PCI_STATUS_CAP_LIST);
    for (let at = this.cfg(C.PCI_CAPABILITY_LIST, 1), n = 0; at !== 0 && n < 48; at = this.cfg(at + C.PCI_CAP_LIST_NEXT, 1), n++) {
      const id = this.cfg(at, 1);
      if (id === C.PCI_CAP_ID_MSIX) this.msixCap = at;
      if (id !== C.PCI_CAP_ID_VNDR) continue;
      const type = this.cfg(at + C.VIRTIO_PCI_CAP_CFG_TYPE, 1);
      // Linux keeps the first capability of each type.
      if (!this.caps.has(type)) {
        this.caps.set(type, { type, at, bar: this.cfg(at + C.VIRTIO_PCI_CAP_BAR, 1), offset: this.cfg(at + C.VIRTIO_PCI_CAP_OFFSET, 4), length: this.cfg(at + C.VIRTIO_PCI_CAP_LENGTH, 4) });
      }
      if (type === C.VIRTIO_PCI_CAP_NOTIFY_CFG) this.notifyMult = this.cfg(at + C.VIRTIO_PCI_NOTIFY_CAP_MULT, 4);
    }
    for (const t of [C.VIRTIO_PCI_CAP_COMMON_CFG, C.VIRTIO_PCI_CAP_ISR_CFG, C.VIRTIO_PCI_CAP_NOTIFY_CFG]) assert.ok(this.caps.has(t), `cap ${t}`);
    assert.ok(this.caps.get(C.VIRTIO_PCI_CAP_COMMON_CFG)!.length >= C.VIRTIO_PCI_COMMON_CFG_SIZE);
  }

  rd(type: number, off: number, size: number): number {
    const c = this.caps.get(type)!;
    return this.io.read(c.bar, c.offset + off, size);
  }
  wr(type: number, off: number, size: number, v: number): void {
    const c = this.caps.get(type)!;
    this.io.write(c.bar, c.offset + off, size, v);
  }
  common(off: number, size: number, v?: number): number {
    if (v === undefined) return this.rd(C.VIRTIO_PCI_CAP_COMMON_CFG, off, size);
    this.wr(C.VIRTIO_PCI_CAP_COMMON_CFG, off, size, v);
    return 0;
  }
  /** The ISR status byte (reading it clears it and lowers INTx). */
  isr(): number {
    return this.rd(C.VIRTIO_PCI_CAP_ISR_CFG, 0, 1);
  }
  get status(): number {
    return this.common(C.VIRTIO_PCI_COMMON_STATUS, 1);
  }
  addStatus(bits: number): void {
    this.common(C.VIRTIO_PCI_COMMON_STATUS, 1, this.status | bits);
  }

  /** Programs MSI-X vectors (address 0xfee00000, data 0x40 + v), unmasks them and turns MSI-X on. */
  enableMsix(): void {
    const flags = this.cfg(this.msixCap + C.PCI_MSIX_FLAGS, 2);
    const n = (flags & C.PCI_MSIX_FLAGS_QSIZE) + 1;
    const bir = this.cfg(this.msixCap + C.PCI_MSIX_TABLE, 4);
    for (let v = 0; v < n; v++) {
      const e = (bir & ~7) + v * C.PCI_MSIX_ENTRY_SIZE;
      this.io.write(bir & 7, e + C.PCI_MSIX_ENTRY_LOWER_ADDR, 4, 0xfee00000);
      this.io.write(bir & 7, e + C.PCI_MSIX_ENTRY_UPPER_ADDR, 4, 0);
      this.io.write(bir & 7, e + C.PCI_MSIX_ENTRY_DATA, 4, 0x40 + v);
      this.io.write(bir & 7, e + C.PCI_MSIX_ENTRY_VECTOR_CTRL, 4, 0);
    }
    this.io.configWrite(this.msixCap + C.PCI_MSIX_FLAGS, 2, flags | C.PCI_MSIX_FLAGS_ENABLE);
  }

  /** virtio_dev_probe up to FEATURES_OK: returns the negotiated features. */
  negotiate(want: bigint): bigint {
    this.common(C.VIRTIO_PCI_COMMON_STATUS, 1, 0);
    assert.equal(this.status, 0, 'reset reads back 0 (vp_modern_set_status + vp_synchronize)');
    this.addStatus(S_ACK);
    this.addStatus(S_DRIVER);
    let dev = 0n;
    for (const sel of [0, 1]) {
      this.common(C.VIRTIO_PCI_COMMON_DFSELECT, 4, sel);
      dev |= BigInt(this.common(C.VIRTIO_PCI_COMMON_DF, 4)) << BigInt(32 * sel);
    }
    const f = dev & want;
    for (const sel of [0, 1]) {
      this.common(C.VIRTIO_PCI_COMMON_GFSELECT, 4, sel);
      this.common(C.VIRTIO_PCI_COMMON_GF, 4, Number((f >> BigInt(32 * sel)) & 0xffffffffn));
    }
    this.addStatus(S_FEATURES_OK);
    assert.ok(this.status & S_FEATURES_OK, 'FEATURES_OK took');
    return f;
  }

  /** The whole virtio_dev_probe: features, then a split ring per entry of `queues` (size, MSI-X vector), then DRIVER_OK. Returns the features. */
  bringUp(want: bigint, queues: { size: number; vector?: number }[]): bigint {
    const f = this.negotiate(want);
    queues.forEach((q, i) => this.setupQueue(i, q.size, q.vector));
    this.addStatus(S_DRIVER_OK);
    assert.ok(this.status & S_DRIVER_OK, 'DRIVER_OK took');
    return f;
  }

  /** setup_vq (split ring of `size` in guest RAM) with MSI-X `vector` (or NO_VECTOR). */
  setupQueue(q: number, size: number, vector = C.VIRTIO_MSI_NO_VECTOR): void {
    const desc = this.alloc(16 * size, 4096);
    const avail = this.alloc(6 + 2 * size, 2);
    const used = this.alloc(6 + 8 * size, 4096);
    this.bytes(desc, 16 * size).fill(0);
    this.bytes(avail, 6 + 2 * size).fill(0);
    this.bytes(used, 6 + 8 * size).fill(0);
    const noff = this.setupQueueAt(q, size, desc, avail, used, vector);
    this.rings[q] = { size, desc, avail, used, next: 0, lastUsed: 0, noff };
  }

  /** The register part of setup_vq for rings already laid out at these guest-physical addresses. Returns queue_notify_off. */
  setupQueueAt(q: number, size: number, desc: number, avail: number, used: number, vector = C.VIRTIO_MSI_NO_VECTOR): number {
    this.common(C.VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
    const max = this.common(C.VIRTIO_PCI_COMMON_Q_SIZE, 2);
    assert.ok(max >= size && this.common(C.VIRTIO_PCI_COMMON_Q_ENABLE, 2) === 0);
    this.common(C.VIRTIO_PCI_COMMON_Q_SIZE, 2, size);
    // vp_iowrite64_twopart: lo then hi.
    for (const [lo, v] of [[C.VIRTIO_PCI_COMMON_Q_DESCLO, desc], [C.VIRTIO_PCI_COMMON_Q_AVAILLO, avail], [C.VIRTIO_PCI_COMMON_Q_USEDLO, used]] as const) {
      this.common(lo, 4, v % 2 ** 32);
      this.common(lo + 4, 4, Math.floor(v / 2 ** 32));
    }
    this.common(C.VIRTIO_PCI_COMMON_Q_MSIX, 2, vector);
    assert.equal(this.common(C.VIRTIO_PCI_COMMON_Q_MSIX, 2), vector, 'the vector took');
    const noff = this.common(C.VIRTIO_PCI_COMMON_Q_NOFF, 2);
    assert.ok(noff * this.notifyMult + 2 <= this.caps.get(C.VIRTIO_PCI_CAP_NOTIFY_CFG)!.length);
    this.common(C.VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    assert.equal(this.common(C.VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1, 'queue enabled');
    return noff;
  }

  /** A notify write for queue q at queue_notify_off `noff`. */
  notify(q: number, noff: number): void {
    this.wr(C.VIRTIO_PCI_CAP_NOTIFY_CFG, noff * this.notifyMult, 2, q);
  }

  /** One chain: device-readable then device-writable buffers (guest-physical). Returns the head. */
  add(q: number, out: { gpa: number; len: number }[], inn: { gpa: number; len: number }[]): number {
    const r = this.rings[q]!;
    const segs = [...out.map((s) => ({ ...s, w: 0 })), ...inn.map((s) => ({ ...s, w: 2 }))];
    const head = r.next % r.size;
    const dv = this.dv;
    segs.forEach((s, i) => {
      const d = r.desc + 16 * ((head + i) % r.size);
      dv.setBigUint64(d, BigInt(s.gpa), true);
      dv.setUint32(d + 8, s.len, true);
      dv.setUint16(d + 12, s.w | (i + 1 < segs.length ? 1 : 0), true); // VRING_DESC_F_WRITE 2, NEXT 1
      dv.setUint16(d + 14, (head + i + 1) % r.size, true);
    });
    r.next += segs.length;
    const idx = dv.getUint16(r.avail + 2, true);
    dv.setUint16(r.avail + 4 + 2 * (idx % r.size), head, true);
    dv.setUint16(r.avail + 2, (idx + 1) & 0xffff, true);
    return head;
  }

  kick(q: number): void {
    const r = this.rings[q]!;
    this.wr(C.VIRTIO_PCI_CAP_NOTIFY_CFG, r.noff * this.notifyMult, 2, q); // vp_notify: iowrite16(index)
  }

  /** New used entries of queue q: { id, len }. */
  used(q: number): { id: number; len: number }[] {
    const r = this.rings[q]!;
    const dv = this.dv;
    const out = [];
    const idx = dv.getUint16(r.used + 2, true);
    for (; r.lastUsed !== idx; r.lastUsed = (r.lastUsed + 1) & 0xffff) {
      const e = r.used + 4 + 8 * (r.lastUsed % r.size);
      out.push({ id: dv.getUint32(e, true), len: dv.getUint32(e + 4, true) });
    }
    // used_event (VIRTIO_F_EVENT_IDX, §2.7.10): interrupt me at the next used entry, as
    // virtqueue_enable_cb does. Without EVENT_IDX the device ignores the field.
    dv.setUint16(r.avail + 4 + 2 * r.size, r.lastUsed, true);
    return out;
  }

  /**
   * One virtio-blk request on queue 0 (struct virtio_blk_outhdr, data, status): `type` 1 (OUT)
   * writes `len` bytes at guest-physical `data` to `sector`, 0 (IN) reads them there. Returns
   * the status byte's guest-physical address (0xff until the device completes it).
   */
  blkRequest(type: 0 | 1, sector: number, data: number, len: number): number {
    const h = this.alloc(16);
    this.dv.setUint32(h, type, true);
    this.dv.setUint32(h + 4, 0, true);
    this.dv.setBigUint64(h + 8, BigInt(sector), true);
    const s = this.alloc(1);
    this.bytes(s, 1)[0] = 0xff;
    if (type === 1) this.add(0, [{ gpa: h, len: 16 }, { gpa: data, len }], [{ gpa: s, len: 1 }]);
    else this.add(0, [{ gpa: h, len: 16 }], [{ gpa: data, len }, { gpa: s, len: 1 }]);
    return s;
  }

  /** A frame on virtio-net queue `q` (tx): a zeroed 12-byte virtio_net_hdr_v1 then the frame, one buffer. */
  sendFrame(q: number, frame: Uint8Array): void {
    const b = this.alloc(12 + frame.length);
    this.bytes(b, 12).fill(0);
    this.bytes(b + 12, frame.length).set(frame);
    this.add(q, [{ gpa: b, len: 12 + frame.length }], []);
  }
}
