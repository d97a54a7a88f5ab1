// Loads and stores at the publication points of the rings (indices, flags, event fields).
// With a shared memory (build variant "shared", asc --use VDPA_SHARED=1) they are sequentially
// consistent wasm atomics, which give the ordering the spec asks for between the driver and a
// device running in another worker (Linux's virtio_rmb/wmb/mb). With an unshared memory
// there is one thread and plain accesses suffice.

// @ts-ignore: decorator
@inline export function ald16(p: usize, off: usize = 0): u32 {
  if (isDefined(VDPA_SHARED)) return <u32>atomic.load<u16>(p + off);
  return <u32>load<u16>(p + off);
}

// @ts-ignore: decorator
@inline export function ald32(p: usize, off: usize = 0): u32 {
  if (isDefined(VDPA_SHARED)) return atomic.load<u32>(p + off);
  return load<u32>(p + off);
}

// @ts-ignore: decorator
@inline export function ast16(p: usize, v: u32, off: usize = 0): void {
  if (isDefined(VDPA_SHARED)) atomic.store<u16>(p + off, <u16>v);
  else store<u16>(p + off, <u16>v);
}

// @ts-ignore: decorator
@inline export function ast32(p: usize, v: u32, off: usize = 0): void {
  if (isDefined(VDPA_SHARED)) atomic.store<u32>(p + off, v);
  else store<u32>(p + off, v);
}
