// The typed export surface of the wasm module (assembly/index.ts). Written by hand because
// asc's generated bindings cannot take an imported memory; test/platform.test.ts checks it
// against WebAssembly.Module.exports().

/** The functions assembly/index.ts exports. Pointers are byte offsets in the shared memory. */
export interface RingExports {
  /** Layout version of the state block and records; the loader refuses a module whose version differs from {@link ABI_VERSION}. */
  abi_version(): number;
  /** Resets the device-side indices of queue state block `q` (split 0/0; packed slot 0, wrap counters 1) and the broken flag. */
  dev_reset(q: number): void;
  /** Pops up to `maxChains` chains into chain records at `chains` and at most `maxSegs` segments at `segs`. Returns chains popped (0: empty) or a negative status (STATUS_BROKEN, or the peer error that broke the queue now). */
  dev_pop(q: number, chains: number, maxChains: number, segs: number, maxSegs: number): number;
  /** Returns `n` chain records (from dev_pop, `written` filled in) to the driver as used; `inOrderBatch` != 0 writes one used element for the batch (VIRTIO_F_IN_ORDER). Returns n, STATUS_BROKEN or STATUS_INVALID_ARG. */
  dev_push(q: number, chains: number, n: number, inOrderBatch: number): number;
  /** Whether to notify the driver of used buffers now (event idx or flags): 1 or 0. */
  dev_need_call(q: number): number;
  /** Enables kicks from the driver; returns 1 if buffers are already available (poll again). */
  dev_enable_kick(q: number): number;
  /** Disables kicks from the driver. */
  dev_disable_kick(q: number): void;
  /** Split: chains available; packed: 1 if one is. 0 when the queue is broken. */
  dev_available(q: number): number;
  /** Gathers the device-readable bytes of chains [0, n) into dst + i·stride (at most `stride` bytes each); returns the bytes copied. */
  dev_copy_out(chains: number, n: number, segs: number, dst: number, stride: number): number;
  /** Scatters src + i·stride (lens[i] bytes, u32 each) into the device-writable segments of chains [0, n) and sets each record's `written`; returns the bytes written. */
  dev_copy_in(chains: number, n: number, segs: number, src: number, stride: number, lens: number): number;
  /** virtio-blk RAM disk: serves popped request chains [0, n) against the disk at `disk` (capacity in sectors as two u32 halves; flags {@link BLK_FLAG}); sets written lengths and status bytes. Returns n. */
  blk_serve(chains: number, n: number, segs: number, disk: number, capLo: number, capHi: number, flags: number, id: number, scratch: number): number;
  /** virtio-blk request parser for asynchronous backends: validates chains [0, n) as blk_serve does, answers those that need no disk, and writes one {@link BLK_REQ} record per chain at `out` plus discard / write-zeroes ranges at `ranges`. Returns n. */
  blk_parse(chains: number, n: number, segs: number, capLo: number, capHi: number, flags: number, id: number, out: number, ranges: number, scratch: number): number;
  /** virtio-net control queue: runs popped commands [0, n) against the filter block `filter` and writes their acks. Returns n. */
  net_ctrl(chains: number, n: number, segs: number, filter: number, scratch: number): number;
  /** virtio-net receive filter over popped tx chains [0, n): one verdict byte per chain at `verdict` (1 deliver, 0 filtered, 2 not a frame). Returns how many are to be delivered. */
  net_filter(chains: number, n: number, segs: number, filter: number, maxLen: number, verdict: number, scratch: number): number;
  /** virtio-net receive filter over n frames staged at base + i·stride (lens: u32 each); compacts the accepted ones to the front and returns how many were accepted. */
  net_filter_staged(base: number, stride: number, lens: number, n: number, filter: number, scratch: number): number;
  /** virtio-net loopback: copies tx chains with verdict 1 into rx chains [0, m) and updates the stats words; unused rx chains go back to ring `rxq`. Returns rx chains used. */
  net_loop(tx: number, n: number, txSegs: number, verdict: number, rxq: number, rx: number, m: number, rxSegs: number, stats: number, scratch: number): number;
  /** virtio-net receive from staged frames: places n frames (base + j·stride, lens) into rx chains [0, m) in order, as net_loop does. Returns rx chains used. */
  net_place(base: number, stride: number, lens: number, n: number, rxq: number, rx: number, m: number, rxSegs: number, stats: number): number;
  /** The IOTLB walk (assembly/mem.ts): memory offset of [iova, iova + len) mapped whole with `perm`, or -1. */
  tlb_translate(tbl: number, iovaLo: number, iovaHi: number, len: number, perm: number): number;
  /** Resets the driver side of queue `q`: zeroes its ring areas, frees every descriptor, clears the counters. */
  drv_init(q: number): void;
  /** Adds up to `n` request records as chains and publishes them with one index/flags store. Returns the number added (fewer when the ring is full or a request is malformed), STATUS_BROKEN, or STATUS_INVALID_ARG when the first request is malformed. */
  drv_add(q: number, reqs: number, n: number, dsegs: number): number;
  /** Whether the device needs a kick for the buffers added since the last call: 1 or 0. */
  drv_kick_prepare(q: number): number;
  /** Reclaims up to `max` used buffers into used records {token, len} at `out`. Returns the number reclaimed (0: none), STATUS_BROKEN, or the peer error that broke the queue now. */
  drv_get_used(q: number, out: number, max: number): number;
  /** Enables used-buffer notifications; returns 1 if used buffers are already pending. */
  drv_enable_cb(q: number): number;
  /** Disables used-buffer notifications. */
  drv_disable_cb(q: number): void;
  /** Split: used buffers the device claims are pending; packed: 1 if one is. */
  drv_used_pending(q: number): number;
  /** Detaches up to `max` buffers still in flight (virtqueue_detach_unused_buf), writing their tokens (u32 each) at `out`; returns the number detached. Call drv_init afterwards. */
  drv_detach_unused(q: number, dstate: number, out: number, max: number): number;
  /** Fused device pass: (served << 2) | (stopped at a chain for dev_pop << 1) | notify, or a status. */
  dev_serve(q: number, max: number, dst: number, stride: number, lens: number): number;
  /** Adds one-buffer chains from {u64 addr, u32 len, u32 token} records: (added << 1) | kick, or a status. */
  drv_add_bufs(q: number, bufs: number, n: number, flags: number): number;
  /** Reclaims used buffers into token (and length) arrays: the count, or a status. */
  drv_reclaim(q: number, tokens: number, lens: number, max: number): number;
  /** Dirty-page logging (assembly/dirty.ts): bitmap for guest RAM [base, base + pages * 4096); pages 0 stops. */
  dirty_log_set(bitmap: number, base: number, pages: number): void;
  /** Marks [addr, addr + len) dirty if logging is on. */
  dirty_mark(addr: number, len: number): void;
}

/** Names of the function exports, for checking a module. */
export const RING_EXPORT_NAMES: readonly (keyof RingExports)[] = [
  'abi_version', 'dev_reset', 'dev_pop', 'dev_push', 'dev_need_call', 'dev_enable_kick', 'dev_disable_kick',
  'dev_available', 'dev_copy_out', 'dev_copy_in', 'blk_serve', 'blk_parse', 'net_ctrl', 'net_filter', 'net_filter_staged', 'net_loop', 'net_place', 'drv_init', 'drv_add', 'drv_kick_prepare', 'drv_get_used',
  'drv_enable_cb', 'drv_disable_cb', 'drv_used_pending', 'drv_detach_unused',
  'tlb_translate',
  'dev_serve', 'drv_add_bufs', 'drv_reclaim',
  'dirty_log_set', 'dirty_mark',
];

/** The ABI version this TypeScript layer speaks (assembly/index.ts abi_version). */
export const ABI_VERSION = 2;
