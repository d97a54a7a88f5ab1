// Popped descriptor chains named by IOVA (DeviceQueue.recordInto / repop): the requests in flight
// a migration moves (DESIGN.md "Live migration"). They live in two flat typed arrays that grow
// and are then reused, not as an object and an array per chain: a switchover records, encodes,
// decodes and re-pops up to a queue's worth of them inside its downtime, and every allocation
// there is a step of the garbage collector that can land inside it.

import { VirtioError, Code } from '../errors.ts';

/** One recorded chain as plain data ({@link RecordedChains.get}): for JSON views and inspection. */
export interface RecordedChain {
  /** Queue index. */
  vq: number;
  /** Head index (split) or buffer id (packed): what its used entry will name. */
  id: number;
  /** Ring descriptors the chain occupies. */
  ndesc: number;
  /** How many of the pieces are device-readable (they come first; the rest are writable). */
  nread: number;
  /**
   * The pieces, as (IOVA, length) pairs in order: the chain's buffers split where the map's
   * entries split them. IOVAs are safe integers (a chain above 2^53 is not recorded).
   */
  pieces: Float64Array;
}

/** Words of a chain's entry in `meta`: vq, id, ndesc, nread, pieces, first piece. */
const M = 6;

/**
 * A list of recorded chains. Appending never shrinks the arrays, so a list that is cleared and
 * filled again with as many pieces allocates nothing. What is appended is checked for its
 * shape (every field what the binary state can carry: vq, id, ndesc and nread u16, an IOVA a
 * safe integer, a length 1..2^32-1, nread at most the pieces); whether the chains fit a device
 * is for the device that takes the list (VdpaSimBlk's checkRequests), and repop re-checks
 * every piece against its map.
 */
export class RecordedChains {
  private meta: Uint32Array;
  private pcs: Float64Array;
  private n = 0;
  private np = 0;
  /** Chain being appended ({@link begin}), or -1. */
  private open = -1;

  constructor(chains = 8, pieces = 32) {
    this.meta = new Uint32Array(M * Math.max(1, chains));
    this.pcs = new Float64Array(2 * Math.max(1, pieces));
  }

  /** A list holding `list`'s chains (allocates). */
  static from(list: readonly RecordedChain[]): RecordedChains {
    let pieces = 0;
    for (const c of list) {
      if (!(c.pieces instanceof Float64Array) || c.pieces.length % 2 !== 0) {
        throw new VirtioError(Code.InvalidArgument, 'a recorded chain\'s pieces must be a Float64Array of (IOVA, length) pairs');
      }
      pieces += c.pieces.length >> 1;
    }
    const out = new RecordedChains(list.length, pieces);
    for (const c of list) {
      out.begin(c.vq, c.id, c.ndesc, c.nread);
      for (let k = 0; k + 1 < c.pieces.length; k += 2) out.piece(c.pieces[k]!, c.pieces[k + 1]!);
      out.end();
    }
    return out;
  }

  /** Chains in the list. */
  get count(): number {
    return this.n;
  }

  /** Pieces of all chains. */
  get pieceCount(): number {
    // (A chain still being appended is not part of the list yet, nor are its pieces.)
    return this.open >= 0 ? this.meta[M * this.open + 5]! : this.np;
  }

  /** Empties the list (keeps its arrays). */
  clear(): void {
    this.n = 0;
    this.np = 0;
    this.open = -1;
  }

  /** Starts appending a chain; add its pieces with {@link piece}, then {@link end} (or {@link abort}). */
  begin(vq: number, id: number, ndesc: number, nread: number): void {
    if (this.open >= 0) throw new VirtioError(Code.FailedPrecondition, 'a recorded chain is still being appended');
    if (!isU16(vq) || !isU16(id) || !isU16(ndesc) || !isU16(nread)) {
      throw new VirtioError(Code.InvalidArgument, `recorded chain vq ${vq}, id ${id}, ndesc ${ndesc}, nread ${nread}: each must be an integer 0..65535`);
    }
    if (M * (this.n + 1) > this.meta.length) {
      const m = new Uint32Array(2 * this.meta.length);
      m.set(this.meta);
      this.meta = m;
    }
    const b = M * this.n;
    const meta = this.meta;
    meta[b] = vq;
    meta[b + 1] = id;
    meta[b + 2] = ndesc;
    meta[b + 3] = nread;
    meta[b + 4] = 0;
    meta[b + 5] = this.np;
    this.open = this.n;
  }

  /** Appends a piece (IOVA, length) to the chain {@link begin} started. */
  piece(iova: number, len: number): void {
    if (this.open < 0) throw new VirtioError(Code.FailedPrecondition, 'no recorded chain is being appended');
    if (!Number.isSafeInteger(iova) || iova < 0 || !Number.isInteger(len) || len < 1 || len > 0xffff_ffff) {
      throw new VirtioError(Code.InvalidArgument, `recorded piece (${iova}, ${len}): the IOVA must be a safe integer ≥ 0 and the length 1..2^32-1`);
    }
    if (this.meta[M * this.open + 4]! >= 0xffff) throw new VirtioError(Code.InvalidArgument, 'a recorded chain has at most 65535 pieces');
    if (2 * (this.np + 1) > this.pcs.length) {
      const p = new Float64Array(2 * this.pcs.length);
      p.set(this.pcs);
      this.pcs = p;
    }
    this.pcs[2 * this.np] = iova;
    this.pcs[2 * this.np + 1] = len;
    this.np++;
    this.meta[M * this.open + 4]!++;
  }

  /** Ends the chain {@link begin} started: it is now part of the list. */
  end(): void {
    if (this.open < 0) throw new VirtioError(Code.FailedPrecondition, 'no recorded chain is being appended');
    const b = M * this.open;
    if (this.meta[b + 3]! > this.meta[b + 4]!) {
      const e = new VirtioError(Code.InvalidArgument, `recorded chain with nread ${this.meta[b + 3]} but ${this.meta[b + 4]} pieces`);
      this.abort();
      throw e;
    }
    this.open = -1;
    this.n++;
  }

  /** Forgets the chain {@link begin} started (the list is as before it). */
  abort(): void {
    if (this.open < 0) return;
    this.np = this.meta[M * this.open + 5]!;
    this.open = -1;
  }

  /** Queue of chain k. */
  vq(k: number): number {
    return this.meta[M * k]!;
  }

  /** Head index / buffer id of chain k. */
  id(k: number): number {
    return this.meta[M * k + 1]!;
  }

  /** Ring descriptors chain k occupies. */
  ndesc(k: number): number {
    return this.meta[M * k + 2]!;
  }

  /** Device-readable pieces of chain k (the first ones). */
  nread(k: number): number {
    return this.meta[M * k + 3]!;
  }

  /** Pieces of chain k. */
  pieces(k: number): number {
    return this.meta[M * k + 4]!;
  }

  /** IOVA of piece j of chain k. */
  iova(k: number, j: number): number {
    return this.pcs[2 * (this.meta[M * k + 5]! + j)]!;
  }

  /** Length of piece j of chain k. */
  len(k: number, j: number): number {
    return this.pcs[2 * (this.meta[M * k + 5]! + j) + 1]!;
  }

  /** Appends chains [from, from + n) of `src`. */
  append(src: RecordedChains, from = 0, n = src.count - from): void {
    if (!Number.isInteger(from) || !Number.isInteger(n) || from < 0 || n < 0 || from + n > src.count) {
      throw new VirtioError(Code.InvalidArgument, `chains [${from}, ${from + n}) are outside the list's 0..${src.count}`);
    }
    for (let k = from; k < from + n; k++) {
      this.begin(src.vq(k), src.id(k), src.ndesc(k), src.nread(k));
      for (let j = 0; j < src.pieces(k); j++) this.piece(src.iova(k, j), src.len(k, j));
      this.end();
    }
  }

  /** A list of its own with the same chains (allocates). */
  copy(): RecordedChains {
    const out = new RecordedChains(this.n, this.np);
    out.append(this);
    return out;
  }

  /** Chain k as plain data (allocates). */
  get(k: number): RecordedChain {
    if (!Number.isInteger(k) || k < 0 || k >= this.n) throw new VirtioError(Code.InvalidArgument, `chain ${k} is outside 0..${this.n - 1}`);
    const f = this.meta[M * k + 5]!;
    return { vq: this.vq(k), id: this.id(k), ndesc: this.ndesc(k), nread: this.nread(k), pieces: this.pcs.slice(2 * f, 2 * (f + this.pieces(k))) };
  }

  /** Every chain as plain data (allocates). */
  toArray(): RecordedChain[] {
    const out: RecordedChain[] = [];
    for (let k = 0; k < this.n; k++) out.push(this.get(k));
    return out;
  }
}

function isU16(x: number): boolean {
  return Number.isInteger(x) && x >= 0 && x <= 0xffff;
}
