// Frames and pacing for the virtio-net suites.

/** Lets microtasks and zero-delay timers run (the driver delivers rx from a microtask). */
export const tick = (): Promise<unknown> => new Promise((r) => setTimeout(r, 0));

/** An Ethernet frame to `dst` of `len` bytes (source 02:00:00:00:00:09, ethertype 0x88b5) whose last byte is `tag`. */
export function eth(len: number, tag: number, dst = [2, 0, 0, 0, 0, 1]): Uint8Array {
  const f = new Uint8Array(len).fill(0x5a);
  f.set(dst, 0);
  f.set([2, 0, 0, 0, 0, 9, 0x88, 0xb5], 6);
  f[len - 1] = tag;
  return f;
}
