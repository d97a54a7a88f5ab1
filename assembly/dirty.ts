// Dirty-page logging on the device datapath (vhost's VHOST_F_LOG_ALL / VHOST_SET_LOG_BASE,
// drivers/vhost/vhost.c log_write / log_write_hva): every byte the device writes into driver
// memory marks its 4 KiB page in a bitmap laid out as vhost's log — bit (gpa >> 12) of the
// bitmap, bit i in byte i >> 3 at position i & 7 (include/uapi/linux/vhost.h VHOST_LOG_PAGE).
//
// Addresses here are memory offsets, after the IOTLB translated the driver's IOVA: what vhost
// calls an HVA. The log is indexed by guest-physical address, and a GPA is the offset minus
// the start of the logged region (the VMM's guest RAM, `base`): vhost's log_write_hva does the
// same HVA → GPA step through its memory table. So a non-identity map (a vIOMMU, IOVA ≠ GPA)
// changes nothing here: the log never sees IOVAs. Offsets outside [base, base + pages * 4096)
// are not guest RAM (private state blocks) and are not logged.
//
// The state is per module instance (globals), not in shared memory: each worker's instance is
// told where the log is. When logging is off the hooks cost one predictable branch per batch
// call (never per descriptor).

import { Q_SIZE, Q_FLAGS, Q_DESC, Q_DEVICE, Q_F_PACKED } from "./ring/state";
import { CHAIN_REC, SEG_REC } from "./ring/defs";
import { C_SEG } from "./ring/chain";

/** include/uapi/linux/vhost.h VHOST_LOG_PAGE: 0x1000, one bit per 4 KiB page. */
// @ts-ignore: decorator
@inline const LOG_PAGE_SHIFT: u32 = 12;

/** Logging on: the one flag every hook tests. */
export let dirtyOn: bool = false;
let logBitmap: usize = 0;
let logBase: usize = 0;
let logPages: u32 = 0;

/** Starts logging into `bitmap` (pages / 8 bytes, rounded up) for guest RAM [base, base + pages * 4096). */
export function dirtyLogSet(bitmap: usize, base: usize, pages: u32): void {
  logBitmap = bitmap;
  logBase = base;
  logPages = pages;
  dirtyOn = pages != 0;
}

/** Marks the pages of [addr, addr + len) that lie in guest RAM. len 0 marks nothing. */
export function dirtyMark(addr: usize, len: u32): void {
  markRange(logBitmap, logBase, <usize>logPages, addr, len);
}

/** The marking, with the log's globals passed in (hoisted into locals by the callers' loops). */
// @ts-ignore: decorator
@inline function markRange(bitmap: usize, base: usize, pages: usize, addr: usize, len: u32): void {
  const end = addr + <usize>len; // exclusive
  if (len != 0 && end > base) {
    let p: usize = addr < base ? 0 : (addr - base) >> LOG_PAGE_SHIFT;
    let last: usize = (end - 1 - base) >> LOG_PAGE_SHIFT;
    if (last >= pages) last = pages - 1;
    for (; p <= last; p++) {
      const b = bitmap + (p >> 3);
      store<u8>(b, load<u8>(b) | <u8>(1 << <u8>(p & 7)));
    }
  }
}

/**
 * Marks the device-writable segments of chain records [0, n) (segments in `segs`). Called when
 * the chains are popped, before the datapath writes them; see dirtyMarkRing for used entries.
 * A datapath that writes a chain later, outside the pass that popped it (blk's async answers),
 * marks again when it writes (src/devices/blk.ts). Marking at pop is exact for a datapath that
 * pops, writes and pushes in one synchronous pass, which every one here does: the VMM cannot
 * read the log between the mark and the write. (A device in another worker than the VMM would
 * have to mark at push, as vhost does in vhost_add_used_n.)
 */
export function dirtyMarkChains(chains: usize, n: i32, segs: usize): void {
  const bitmap = logBitmap;
  const base = logBase;
  const pages = <usize>logPages;
  for (let k: i32 = 0; k < n; k++) {
    // segStart (u32) | nRead (u16) << 32 | nWrite (u16) << 48 in one load (chain.ts C_SEG..C_NWRITE).
    const w = load<u64>(chains + <usize>k * CHAIN_REC, C_SEG);
    const nw = <u32>(w >> 48);
    let s = segs + <usize>(<u32>w + <u32>((w >> 32) & 0xffff)) * SEG_REC;
    for (let i: u32 = 0; i < nw; i++, s += SEG_REC) {
      const seg = load<u64>(s); // addr | len << 32
      markRange(bitmap, base, pages, <usize><u32>seg, <u32>(seg >> 32));
    }
  }
}

/**
 * Marks the ring memory the device writes: split — the used ring (flags, idx, entries,
 * avail_event: 6 + 8 × size bytes, VIRTIO 1.3 §2.7.8); packed — the descriptor ring, where used
 * descriptors are written back (16 × size, §2.8.6), and the device event suppression area (4).
 */
export function dirtyMarkRing(q: usize): void {
  const size = load<u32>(q, Q_SIZE);
  if (load<u32>(q, Q_FLAGS) & Q_F_PACKED) {
    dirtyMark(<usize>load<u32>(q, Q_DESC), size << 4);
    dirtyMark(<usize>load<u32>(q, Q_DEVICE), 4);
  } else {
    dirtyMark(<usize>load<u32>(q, Q_DEVICE), 6 + (size << 3));
  }
}
