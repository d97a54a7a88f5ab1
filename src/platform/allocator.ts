// A first-fit allocator with coalescing over one arena of the platform memory. TypeScript owns
// the memory layout (DESIGN.md): rings, buffers and state blocks are carved out here and their
// offsets handed to wasm. It keeps its bookkeeping in JS, never in the memory it manages.

import { VirtioError, Code } from '../errors.ts';

/** A free or used range [offset, offset + size). */
interface Range {
  offset: number;
  size: number;
}

/**
 * First-fit allocator over [base, base + size). An arena is identified by its range: an offset
 * belongs to it iff {@link contains} says so, whatever the order of arenas in memory.
 */
export class Allocator {
  /** First byte of the arena. */
  readonly base: number;
  /** Bytes in the arena. */
  readonly size: number;
  /**
   * Why this allocator refuses every allocation, or undefined if it allocates. A closed
   * allocator's alloc() throws VirtioError(FailedPrecondition) with this text (see
   * {@link Allocator.closed}).
   */
  readonly closedReason: string | undefined;
  /** Free ranges, sorted by offset, never adjacent. */
  private free: Range[];
  /** Live allocations: offset → size. */
  private readonly live = new Map<number, number>();

  /**
   * An allocator over [base, base + size). Throws VirtioError(InvalidArgument) unless base and
   * size are non-negative safe integers.
   */
  constructor(base: number, size: number) {
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(base + size)) {
      throw new VirtioError(Code.InvalidArgument, `arena [${base}, +${size}) must be non-negative integers`);
    }
    this.base = base;
    this.size = size;
    this.free = size > 0 ? [{ offset: base, size }] : [];
    this.closedReason = undefined;
  }

  /**
   * An allocator that owns no memory and refuses every alloc() with
   * VirtioError(FailedPrecondition, reason), and every release() with InvalidArgument. An
   * attached platform without slices gets these, so it can never hand out memory its creator
   * also hands out.
   */
  static closed(reason: string): Allocator {
    const a = new Allocator(0, 0);
    (a as { closedReason: string | undefined }).closedReason = reason;
    return a;
  }

  /** Bytes not allocated (possibly fragmented). */
  get available(): number {
    let n = 0;
    for (const r of this.free) n += r.size;
    return n;
  }

  /** True if `offset` lies in this arena's range [base, base + size). */
  contains(offset: number): boolean {
    return Number.isSafeInteger(offset) && offset >= this.base && offset < this.base + this.size;
  }

  /**
   * Allocates `size` bytes aligned to `align` (a power of two). Throws
   * VirtioError(ResourceExhausted) when no free range fits, InvalidArgument for a size that is
   * not a positive integer or an alignment that is not a power of two, FailedPrecondition on a
   * closed allocator.
   */
  alloc(size: number, align = 16): number {
    if (this.closedReason !== undefined) throw new VirtioError(Code.FailedPrecondition, this.closedReason);
    if (!Number.isSafeInteger(size) || size <= 0) throw new VirtioError(Code.InvalidArgument, `allocation size ${size} must be a positive integer`);
    if (!Number.isSafeInteger(align) || align <= 0 || (align & (align - 1)) !== 0) throw new VirtioError(Code.InvalidArgument, `alignment ${align} must be a power of two`);
    for (let i = 0; i < this.free.length; i++) {
      const r = this.free[i]!;
      const start = Math.ceil(r.offset / align) * align;
      const pad = start - r.offset;
      if (pad + size > r.size) continue;
      const tail = r.size - pad - size;
      // The free range shrinks in place (a new one only when the allocation splits it): a
      // migration's load allocates every queue's state block inside the downtime.
      if (pad > 0) {
        r.size = pad;
        if (tail > 0) this.free.splice(i + 1, 0, { offset: start + size, size: tail });
      } else if (tail > 0) {
        r.offset = start + size;
        r.size = tail;
      } else {
        this.free.splice(i, 1);
      }
      this.live.set(start, size);
      return start;
    }
    throw new VirtioError(Code.ResourceExhausted, `cannot allocate ${size} bytes (align ${align}) from an arena of ${this.size} with ${this.available} free`);
  }

  /**
   * Returns an allocation. Throws VirtioError(InvalidArgument), changing nothing, for an offset
   * that is not a live allocation of this arena (outside its range, or not live).
   */
  release(offset: number): void {
    if (!this.contains(offset)) throw new VirtioError(Code.InvalidArgument, `offset ${offset} is outside the arena [${this.base}, +${this.size})`);
    const size = this.live.get(offset);
    if (size === undefined) throw new VirtioError(Code.InvalidArgument, `offset ${offset} is not a live allocation of this arena`);
    this.live.delete(offset);
    let i = 0;
    while (i < this.free.length && this.free[i]!.offset < offset) i++;
    this.free.splice(i, 0, { offset, size });
    // Coalesce with the neighbours.
    const cur = this.free[i]!;
    const next = this.free[i + 1];
    if (next && cur.offset + cur.size === next.offset) {
      cur.size += next.size;
      this.free.splice(i + 1, 1);
    }
    const prev = this.free[i - 1];
    if (prev && prev.offset + prev.size === cur.offset) {
      prev.size += cur.size;
      this.free.splice(i, 1);
    }
  }

  /** Size of a live allocation, or undefined. */
  sizeOf(offset: number): number | undefined {
    return this.live.get(offset);
  }
}
