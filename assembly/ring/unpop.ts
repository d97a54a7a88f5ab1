// Giving popped chains back to the ring (what vhost_discard_vq_desc does): a device that popped
// more buffers than it could use moves its avail position back over them, so the next pop
// returns the same buffers. Split: the avail index moves back by the chain count (VIRTIO 1.3
// §2.7.6); packed: the avail position moves back by their descriptors, flipping the wrap
// counter across the ring start (§2.8.1). Counters are adjusted so they count each chain once.

import { Q_FLAGS, Q_F_PACKED, Q_SIZE, Q_AVAIL, Q_AVAIL_WRAP, Q_STAT_CHAINS, Q_STAT_DESCS } from "./state";
import { chainAt, C_NDESC } from "./chain";

/**
 * Gives popped chains [from, to) back to the ring, as vhost_discard_vq_desc does: the device's
 * avail position moves back over them (packed: by their descriptors, across the wrap), so the
 * next pop returns the same buffers. They were not written.
 */
export function devUnpop(q: usize, chains: usize, from: i32, to: i32): void {
  if (to <= from) return;
  let descs: u32 = 0;
  for (let i = from; i < to; i++) descs += load<u32>(chainAt(chains, i), C_NDESC);
  if (load<u32>(q, Q_FLAGS) & Q_F_PACKED) {
    const size = load<u32>(q, Q_SIZE);
    let pos = <i64>load<u32>(q, Q_AVAIL) - <i64>descs;
    let wrap = load<u32>(q, Q_AVAIL_WRAP);
    while (pos < 0) {
      pos += <i64>size;
      wrap ^= 1;
    }
    store<u32>(q, <u32>pos, Q_AVAIL);
    store<u32>(q, wrap, Q_AVAIL_WRAP);
  } else {
    store<u32>(q, (load<u32>(q, Q_AVAIL) - <u32>(to - from)) & 0xffff, Q_AVAIL);
  }
  store<u64>(q, load<u64>(q, Q_STAT_CHAINS) - <u64>(to - from), Q_STAT_CHAINS);
  store<u64>(q, load<u64>(q, Q_STAT_DESCS) - <u64>descs, Q_STAT_DESCS);
}
