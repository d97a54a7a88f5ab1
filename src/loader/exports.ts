// The typed export surface of the wasm module (assembly/index.ts). Written by hand because
// asc's generated bindings cannot take an imported memory; test/loader.test.ts checks it
// against WebAssembly.Module.exports().

/** The functions assembly/index.ts exports. Pointers are byte offsets in the shared memory. */
export interface RingExports {
  abi_version(): number;
  dev_reset(q: number): void;
  dev_pop(q: number, chains: number, maxChains: number, segs: number, maxSegs: number): number;
  dev_push(q: number, chains: number, n: number, inOrderBatch: number): number;
  dev_need_call(q: number): number;
  dev_enable_kick(q: number): number;
  dev_disable_kick(q: number): void;
  dev_available(q: number): number;
  dev_copy_out(chains: number, n: number, segs: number, dst: number, stride: number): number;
  dev_copy_in(chains: number, n: number, segs: number, src: number, stride: number, lens: number): number;
  blk_serve(chains: number, n: number, segs: number, disk: number, capLo: number, capHi: number, flags: number, id: number, scratch: number): number;
  blk_parse(chains: number, n: number, segs: number, capLo: number, capHi: number, flags: number, id: number, out: number, ranges: number, scratch: number): number;
  net_ctrl(chains: number, n: number, segs: number, filter: number, scratch: number): number;
  net_filter(chains: number, n: number, segs: number, filter: number, maxLen: number, verdict: number, scratch: number): number;
  net_filter_staged(base: number, stride: number, lens: number, n: number, filter: number, scratch: number): number;
  net_loop(tx: number, n: number, txSegs: number, verdict: number, rxq: number, rx: number, m: number, rxSegs: number, stats: number, scratch: number): number;
  net_place(base: number, stride: number, lens: number, n: number, rxq: number, rx: number, m: number, rxSegs: number, stats: number): number;
  /** The IOTLB walk (assembly/mem.ts): memory offset of [iova, iova + len) mapped whole with `perm`, or -1. */
  tlb_translate(tbl: number, iovaLo: number, iovaHi: number, len: number, perm: number): number;
  drv_init(q: number): void;
  drv_add(q: number, reqs: number, n: number, dsegs: number): number;
  drv_kick_prepare(q: number): number;
  drv_get_used(q: number, out: number, max: number): number;
  drv_enable_cb(q: number): number;
  drv_disable_cb(q: number): void;
  drv_used_pending(q: number): number;
  drv_detach_unused(q: number, dstate: number, out: number, max: number): number;
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
  'dirty_log_set', 'dirty_mark',
];

/** The ABI version this TypeScript layer speaks (assembly/index.ts abi_version). */
export const ABI_VERSION = 2;
