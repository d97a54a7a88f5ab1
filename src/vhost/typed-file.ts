// The typed face of a vhost-vdpa file: one method per vhost uAPI request
// (include/uapi/linux/vhost.h), each encoding its argument struct as the uapi lays it out and
// decoding the struct written back. Every method goes through the file's byte-level ioctl() and
// writeMsg() (struct vhost_msg / vhost_msg_v2), so a file that carries those bytes elsewhere (to
// a device worker, through a mailbox) gets the same methods, with the same errno, by extending
// this class.

import type { DoorbellHandle } from '../worker/doorbell.ts';
import type { VhostVdpaFile } from '../drivers/vhost-vdpa.ts';
import * as U from './uapi.ts';

/**
 * The vhost uAPI as typed methods over {@link ioctl} and {@link writeMsg}. Errors are what
 * those throw: VhostError with Linux's errno (and VirtioError(Cancelled) from a file whose
 * device worker is gone).
 */
export abstract class VhostTypedFile {
  /** Node name (`vhost-vdpa-N`). */
  abstract readonly node: string;

  /**
   * One ioctl: `request` is a VHOST_* code, `arg` the argument struct as the uapi lays it out
   * (little-endian). Returns the struct written back for a request that reads (_IOR / _IOWR),
   * else 0. Throws VhostError with Linux's errno.
   */
  abstract ioctl(request: number, arg?: Uint8Array): Uint8Array | number;

  /** Writes one IOTLB message (struct vhost_msg or vhost_msg_v2); returns the bytes consumed. Throws VhostError. */
  abstract writeMsg(msg: Uint8Array): number;

  /** Closes the file (vhost_vdpa_release: the device is reset, maps and doorbells dropped). Idempotent, never throws. */
  abstract close(): void;

  /** VHOST_GET_FEATURES. */
  getFeatures(): bigint {
    return rd64(this.ioctl(U.VHOST_GET_FEATURES));
  }
  /** VHOST_SET_FEATURES (EBUSY after FEATURES_OK). */
  setFeatures(features: bigint): void {
    this.ioctl(U.VHOST_SET_FEATURES, U.encodeU64(features));
  }
  /** VHOST_SET_OWNER (EBUSY if already owned). */
  setOwner(): void {
    this.ioctl(U.VHOST_SET_OWNER);
  }
  /** VHOST_RESET_OWNER. */
  resetOwner(): void {
    this.ioctl(U.VHOST_RESET_OWNER);
  }
  /** VHOST_GET_BACKEND_FEATURES: what this node offers. */
  getBackendFeatures(): bigint {
    return rd64(this.ioctl(U.VHOST_GET_BACKEND_FEATURES));
  }
  /** VHOST_SET_BACKEND_FEATURES. */
  setBackendFeatures(features: bigint): void {
    this.ioctl(U.VHOST_SET_BACKEND_FEATURES, U.encodeU64(features));
  }
  /** VHOST_SET_VRING_NUM. */
  setVringNum(s: { index: number; num: number }): void {
    this.ioctl(U.VHOST_SET_VRING_NUM, U.encodeVringState(s.index, s.num));
  }
  /** VHOST_SET_VRING_ADDR (IOVAs of the descriptor table, avail and used rings). */
  setVringAddr(a: { index: number; desc: number | bigint; avail: number | bigint; used: number | bigint; flags?: number; log?: number | bigint }): void {
    this.ioctl(U.VHOST_SET_VRING_ADDR, U.encodeVringAddr(a));
  }
  /** VHOST_SET_VRING_BASE (split: last avail index; packed: avail | used << 16, wrap counters in bit 15). */
  setVringBase(s: { index: number; num: number }): void {
    this.ioctl(U.VHOST_SET_VRING_BASE, U.encodeVringState(s.index, s.num));
  }
  /** VHOST_GET_VRING_BASE. */
  getVringBase(index: number): {
    /** The queue index. */
    index: number;
    /** vhost_vring_state.num: split, the last avail index; packed, avail index | wrap << 15 in the low 16 bits and the used pair in the high 16 (as Linux vhost_vdpa). */
    num: number;
  } {
    return rdState(this.ioctl(U.VHOST_GET_VRING_BASE, U.encodeVringState(index, 0)));
  }
  /** VHOST_SET_VRING_KICK: the doorbell the driver rings for queue `index`; null detaches. */
  setVringKick(index: number, db: DoorbellHandle | null): void {
    this.ioctl(U.VHOST_SET_VRING_KICK, U.encodeVringFile(index, fdOf(db)));
  }
  /** VHOST_SET_VRING_CALL: the doorbell the device rings for queue `index`; null detaches. */
  setVringCall(index: number, db: DoorbellHandle | null): void {
    this.ioctl(U.VHOST_SET_VRING_CALL, U.encodeVringFile(index, fdOf(db)));
  }
  /** VHOST_VDPA_SET_CONFIG_CALL: the doorbell rung on a config change; null detaches. */
  setConfigCall(db: DoorbellHandle | null): void {
    this.ioctl(U.VHOST_VDPA_SET_CONFIG_CALL, U.encodeU32(fdOf(db)));
  }
  /** VHOST_VDPA_GET_DEVICE_ID. */
  getDeviceId(): number {
    return rd32(this.ioctl(U.VHOST_VDPA_GET_DEVICE_ID));
  }
  /** VHOST_VDPA_GET_STATUS. */
  getStatus(): number {
    return (this.ioctl(U.VHOST_VDPA_GET_STATUS) as Uint8Array)[0]!;
  }
  /** VHOST_VDPA_SET_STATUS (bits clear only by writing 0, which resets: EINVAL otherwise). */
  setStatus(status: number): void {
    this.ioctl(U.VHOST_VDPA_SET_STATUS, Uint8Array.of(status));
  }
  /** VHOST_VDPA_GET_CONFIG: `len` bytes of config space at `off`. */
  getConfig(off: number, len: number): Uint8Array {
    return (this.ioctl(U.VHOST_VDPA_GET_CONFIG, U.encodeVdpaConfig(off, len)) as Uint8Array).slice(U.VHOST_VDPA_CONFIG.buf);
  }
  /** VHOST_VDPA_SET_CONFIG. */
  setConfig(off: number, data: Uint8Array): void {
    this.ioctl(U.VHOST_VDPA_SET_CONFIG, U.encodeVdpaConfig(off, data));
  }
  /**
   * VHOST_SET_LOG_BASE: the dirty log bitmap is at memory offset `addr` of the platform's
   * memory (what the VMM's user address is to Linux), laid out as vhost's log: bit
   * `gpa >> 12` (VHOST_LOG_PAGE), bit i in byte i >> 3 at position i & 7, one bit per page of
   * the region set by {@link VhostVdpaFile.setLogRegion} (an in-thread node; the platform's RAM by default). While VHOST_F_LOG_ALL is acked too, every byte the
   * device writes into guest RAM sets its page's bit (in wasm, on the datapath). The VMM reads
   * and clears bits itself. Linux's vhost-vdpa refuses this ioctl (-ENOIOCTLCMD): we go beyond
   * it, so a VMM needs no shadow virtqueues to see the device's writes.
   *
   * GPA vs IOTLB: an IOTLB UPDATE maps an IOVA to `uaddr`, a memory offset. The log is indexed
   * by guest-physical address GPA = uaddr − base, where `base` is the memory offset at which
   * the VMM's guest RAM starts (setLogRegion; default the platform's RAM): the same HVA → GPA
   * step vhost's log_write_hva takes through its memory table. The IOVA never enters the log,
   * so a non-identity map (vIOMMU) changes which page a descriptor names, not how it is logged.
   * Writes outside the region are not logged. One log per platform (the wasm instance holds
   * one): a DirtyLog started on the same platform and this node's log replace each other.
   */
  setLogBase(addr: number | bigint): void {
    this.ioctl(U.VHOST_SET_LOG_BASE, U.encodeU64(BigInt(addr)));
  }

  /** VHOST_VDPA_SET_VRING_ENABLE (num 1 enables, 0 disables). */
  setVringEnable(s: { index: number; num: number }): void {
    this.ioctl(U.VHOST_VDPA_SET_VRING_ENABLE, U.encodeVringState(s.index, s.num));
  }
  /** VHOST_VDPA_GET_VRING_NUM: the largest queue size. */
  getVringNum(): number {
    const b = this.ioctl(U.VHOST_VDPA_GET_VRING_NUM) as Uint8Array;
    return b[0]! | (b[1]! << 8);
  }
  /** VHOST_VDPA_GET_IOVA_RANGE. */
  getIovaRange(): {
    /** First usable IOVA. */
    first: bigint;
    /** Last usable IOVA (inclusive). */
    last: bigint;
  } {
    const b = this.ioctl(U.VHOST_VDPA_GET_IOVA_RANGE) as Uint8Array;
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    return { first: v.getBigUint64(0, true), last: v.getBigUint64(8, true) };
  }
  /** VHOST_VDPA_GET_CONFIG_SIZE. */
  getConfigSize(): number {
    return rd32(this.ioctl(U.VHOST_VDPA_GET_CONFIG_SIZE));
  }
  /** VHOST_VDPA_GET_AS_NUM. */
  getAsNum(): number {
    return rd32(this.ioctl(U.VHOST_VDPA_GET_AS_NUM));
  }
  /** VHOST_VDPA_GET_VRING_GROUP: queue `index`'s group. */
  getVringGroup(index: number): number {
    return rdState(this.ioctl(U.VHOST_VDPA_GET_VRING_GROUP, U.encodeVringState(index, 0))).num;
  }
  /** VHOST_VDPA_SET_GROUP_ASID: binds `group` to address space `asid`. */
  setGroupAsid(group: number, asid: number): void {
    this.ioctl(U.VHOST_VDPA_SET_GROUP_ASID, U.encodeVringState(group, asid));
  }
  /** VHOST_VDPA_SUSPEND. */
  suspend(): void {
    this.ioctl(U.VHOST_VDPA_SUSPEND);
  }
  /** VHOST_VDPA_RESUME. */
  resume(): void {
    this.ioctl(U.VHOST_VDPA_RESUME);
  }
  /** VHOST_VDPA_GET_VRING_DESC_GROUP (EOPNOTSUPP unless the device has descriptor groups). */
  getVringDescGroup(index: number): number {
    return rdState(this.ioctl(U.VHOST_VDPA_GET_VRING_DESC_GROUP, U.encodeVringState(index, 0))).num;
  }
  /** VHOST_VDPA_GET_VQS_COUNT. */
  getVqsCount(): number {
    return rd32(this.ioctl(U.VHOST_VDPA_GET_VQS_COUNT));
  }
  /** VHOST_VDPA_GET_GROUP_NUM. */
  getGroupNum(): number {
    return rd32(this.ioctl(U.VHOST_VDPA_GET_GROUP_NUM));
  }
  /** VHOST_VDPA_GET_VRING_SIZE: queue `index`'s size. */
  getVringSize(index: number): number {
    return rdState(this.ioctl(U.VHOST_VDPA_GET_VRING_SIZE, U.encodeVringState(index, 0))).num;
  }
  /** One IOTLB message from plain data: v1 without `asid`, v2 with it (see {@link writeMsg}). */
  iotlb(m: U.IotlbMsg, asid?: number): number {
    return this.writeMsg(U.encodeIotlbMsg(m, asid));
  }
}

function fdOf(db: DoorbellHandle | null): number {
  return db === null || db === undefined ? U.VHOST_FILE_UNBIND : db.addr | 0;
}

function rd32(b: Uint8Array | number): number {
  const u = b as Uint8Array;
  return new DataView(u.buffer, u.byteOffset, u.byteLength).getUint32(0, true);
}

function rd64(b: Uint8Array | number): bigint {
  const u = b as Uint8Array;
  return new DataView(u.buffer, u.byteOffset, u.byteLength).getBigUint64(0, true);
}

function rdState(b: Uint8Array | number): { index: number; num: number } {
  const u = b as Uint8Array;
  const v = new DataView(u.buffer, u.byteOffset, u.byteLength);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}
