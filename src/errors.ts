// The one error class of vdpa-wasm, and the mirror of assembly/status.ts (shared/STYLE.md).

/**
 * Error codes. The ring codes mirror the negative `STATUS_*` values that the wasm exports
 * return (assembly/status.ts); test/status-sync.test.ts keeps both tables equal.
 */
export const Code = {
  /** A caller passed a bad argument (size not a power of two, unaligned ring, bad range…). */
  InvalidArgument: 'invalid_argument',
  /** An operation was called in a state that does not allow it. */
  FailedPrecondition: 'failed_precondition',
  /** Out of memory in the platform's allocator, or a ring is full where the caller needed room. */
  ResourceExhausted: 'resource_exhausted',
  /** A name that must be unique is taken (a device or management device on the bus). */
  AlreadyExists: 'already_exists',
  /** No such device, management device or driver. */
  NotFound: 'not_found',
  /** The operation is not supported by this device or management device. */
  Unsupported: 'unsupported',
  /** The device answered a request with an I/O error (VIRTIO_BLK_S_IOERR). */
  IoError: 'io_error',
  /** The device was reset or removed while the request was in flight. */
  Cancelled: 'cancelled',
  /** Something that must not happen happened inside wasm (an abort). */
  Internal: 'internal',
  /** The queue was already broken by an earlier peer error. */
  Broken: 'broken',
  /** Split: an avail ring entry is >= the queue size. */
  HeadOutOfRange: 'head_out_of_range',
  /** A descriptor's next is outside its table. */
  NextOutOfRange: 'next_out_of_range',
  /** A chain is longer than its table (a loop). */
  ChainTooLong: 'chain_too_long',
  /** An indirect table contains an indirect descriptor. */
  IndirectNested: 'indirect_nested',
  /** A malformed indirect descriptor (not negotiated, with NEXT, bad length). */
  IndirectInvalid: 'indirect_invalid',
  /** A chain totals more than 2^32-1 bytes. */
  ChainTooBig: 'chain_too_big',
  /** A device-readable descriptor follows a device-writable one. */
  WriteBeforeRead: 'write_before_read',
  /** A buffer lies outside the device's address map. */
  AddressUnmapped: 'address_unmapped',
  /** Split: avail->idx ran more than the queue size ahead (or backwards). */
  AvailIdxInvalid: 'avail_idx_invalid',
  /** Driver side: a used id is >= the queue size. */
  UsedIdInvalid: 'used_id_invalid',
  /** Driver side: a used id names a buffer that is not in flight. */
  UsedIdNotInflight: 'used_id_not_inflight',
  /** Driver side, split: used->idx ran ahead of the buffers in flight. */
  UsedIdxInvalid: 'used_idx_invalid',
  /** Packed: an available buffer id is >= the queue size. */
  BufferIdInvalid: 'buffer_id_invalid',
  /** A chain is more fragmented than the device's segment array. */
  TooManySegments: 'too_many_segments',
} as const;

/** One of the {@link Code} values. */
export type Code = (typeof Code)[keyof typeof Code];

/** The wasm status value of each ring code (assembly/status.ts). */
export const STATUS_CODES: Readonly<Record<string, readonly [number, Code]>> = {
  STATUS_INVALID_ARG: [-1, Code.InvalidArgument],
  STATUS_BROKEN: [-2, Code.Broken],
  STATUS_HEAD_OUT_OF_RANGE: [-10, Code.HeadOutOfRange],
  STATUS_NEXT_OUT_OF_RANGE: [-11, Code.NextOutOfRange],
  STATUS_CHAIN_TOO_LONG: [-12, Code.ChainTooLong],
  STATUS_INDIRECT_NESTED: [-13, Code.IndirectNested],
  STATUS_INDIRECT_INVALID: [-14, Code.IndirectInvalid],
  STATUS_CHAIN_TOO_BIG: [-15, Code.ChainTooBig],
  STATUS_WRITE_BEFORE_READ: [-16, Code.WriteBeforeRead],
  STATUS_ADDRESS_UNMAPPED: [-17, Code.AddressUnmapped],
  STATUS_AVAIL_IDX_INVALID: [-18, Code.AvailIdxInvalid],
  STATUS_USED_ID_INVALID: [-19, Code.UsedIdInvalid],
  STATUS_USED_ID_NOT_INFLIGHT: [-20, Code.UsedIdNotInflight],
  STATUS_USED_IDX_INVALID: [-21, Code.UsedIdxInvalid],
  STATUS_BUFFER_ID_INVALID: [-22, Code.BufferIdInvalid],
  STATUS_TOO_MANY_SEGMENTS: [-23, Code.TooManySegments],
};

const byStatus = new Map<number, Code>(Object.values(STATUS_CODES).map(([s, c]) => [s, c]));

/** Codes that mean "the peer broke the spec" (the queue is broken, the device needs reset). */
export const PEER_CODES: ReadonlySet<Code> = new Set(
  Object.values(STATUS_CODES).map(([, c]) => c).filter((c) => c !== Code.InvalidArgument && c !== Code.Broken),
);

/** The error every vdpa-wasm API throws. `message` is `[code] text`. */
export class VirtioError extends Error {
  /** What went wrong, as a stable code; compare this, not the message. */
  readonly code: Code;
  /** The message without the code prefix. */
  readonly rawMessage: string;

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(`[${code}] ${message}`, options);
    this.name = 'VirtioError';
    this.code = code;
    this.rawMessage = message;
  }
}

/** The code for a negative wasm status (unknown values map to Internal). */
export function codeOfStatus(status: number): Code {
  return byStatus.get(status) ?? Code.Internal;
}

/** Builds the error for a negative wasm status. */
export function fromStatus(status: number, context: string): VirtioError {
  return new VirtioError(codeOfStatus(status), `${context} (status ${status})`);
}
