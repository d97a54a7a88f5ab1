// A reference IOTLB walk for the fuzz suites, written from the table's contract (entries
// [first, last] → addr with perm, non-overlapping) by linear scan: nothing shared with
// src/platform/iotlb.ts or assembly/mem.ts.

/** One mapping of the reference: IOVAs [first, last] → memory offset addr, with perm. */
export interface RefMapping {
  first: bigint;
  last: bigint;
  addr: number;
  perm: number;
}

const U64_MAX = (1n << 64n) - 1n;

/** The mapping holding iova, by linear scan. */
export function holder(list: readonly RefMapping[], iova: bigint): RefMapping | undefined {
  for (const e of list) if (iova >= e.first && iova <= e.last) return e;
  return undefined;
}

/** What the device's walk gives for [iova, iova + len): segments split at mapping ends; null if any byte lacks perm. */
export function refSegments(list: readonly RefMapping[], iova: bigint, len: number, perm: number): { addr: number; len: number }[] | null {
  const out: { addr: number; len: number }[] = [];
  if (len === 0) return out;
  if (iova + BigInt(len) - 1n > U64_MAX) return null;
  let cur = iova;
  let left = BigInt(len);
  while (left > 0n) {
    const e = holder(list, cur);
    if (!e || (e.perm & perm) !== perm) return null;
    let chunk = e.last - cur + 1n;
    if (chunk > left) chunk = left;
    out.push({ addr: e.addr + Number(cur - e.first), len: Number(chunk) });
    cur += chunk;
    left -= chunk;
  }
  return out;
}
