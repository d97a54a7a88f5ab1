// Linux errno values the vhost uAPI returns (include/uapi/asm-generic/errno-base.h and
// errno.h; the numbers are the same on every architecture Linux uses asm-generic for, x86 and
// arm included), and VhostError: the VirtioError a vhost node throws, carrying the errno.

import { VirtioError, Code } from '../errors.ts';

/** errno numbers, by name (asm-generic/errno-base.h 1..34, errno.h above). */
export const ERRNO = {
  /** Operation not permitted (asm-generic/errno-base.h). */
  EPERM: 1,
  /** No such file or directory. */
  ENOENT: 2,
  /** I/O error. */
  EIO: 5,
  /** Argument list too long. */
  E2BIG: 7,
  /** Bad file number. */
  EBADF: 9,
  /** Out of memory. */
  ENOMEM: 12,
  /** Bad address. */
  EFAULT: 14,
  /** Device or resource busy. */
  EBUSY: 16,
  /** File exists. */
  EEXIST: 17,
  /** No such device. */
  ENODEV: 19,
  /** Invalid argument. */
  EINVAL: 22,
  /** Not a typewriter: the ioctl is not known (what -ENOIOCTLCMD becomes at the syscall). */
  ENOTTY: 25,
  /** No space left on device. */
  ENOSPC: 28,
  /** Operation not supported on transport endpoint (asm-generic/errno.h). */
  EOPNOTSUPP: 95,
  /** No buffer space available (vhost_vdpa: a virtqueue index out of range). */
  ENOBUFS: 105,
} as const;

/** One of the {@link ERRNO} names. */
export type ErrnoName = keyof typeof ERRNO;

const NAMES = new Map<number, ErrnoName>(Object.entries(ERRNO).map(([k, v]) => [v, k as ErrnoName]));

/** The name of errno `n` (EINVAL for 22), or `E${n}` for a number this table lacks. */
export function errnoName(n: number): string {
  return NAMES.get(n) ?? `E${n}`;
}

/** The VirtioError code each errno maps to, so `e.code` stays meaningful to code that knows only VirtioError. */
const CODE_OF: Record<ErrnoName, Code> = {
  EPERM: Code.FailedPrecondition,
  ENOENT: Code.NotFound,
  EIO: Code.Internal,
  E2BIG: Code.InvalidArgument,
  EBADF: Code.InvalidArgument,
  ENOMEM: Code.ResourceExhausted,
  EFAULT: Code.InvalidArgument,
  EBUSY: Code.FailedPrecondition,
  EEXIST: Code.AlreadyExists,
  ENODEV: Code.NotFound,
  EINVAL: Code.InvalidArgument,
  ENOTTY: Code.Unsupported,
  ENOSPC: Code.ResourceExhausted,
  EOPNOTSUPP: Code.Unsupported,
  ENOBUFS: Code.InvalidArgument,
};

/**
 * A failed vhost request: what the Linux syscall would return as -errno. `instanceof
 * VirtioError` holds; compare `errno` (a number) or `errnoName` ('EINVAL'), not the message.
 * `detail` is the errno of the inner step where Linux folds it into another one (an IOTLB
 * message that fails with EEXIST makes write() return EFAULT, as vhost_chr_write_iter does).
 */
export class VhostError extends VirtioError {
  /** The errno (positive), e.g. 22. */
  readonly errno: number;
  /** The errno's name, e.g. 'EINVAL'. */
  readonly errnoName: string;
  /** The inner errno name where Linux reports a different one (see the class doc), or null. */
  readonly detail: string | null;

  constructor(errno: ErrnoName, message: string, options?: { cause?: unknown; detail?: ErrnoName }) {
    super(CODE_OF[errno], `${errno}: ${message}`, options);
    this.name = 'VhostError';
    this.errno = ERRNO[errno];
    this.errnoName = errno;
    this.detail = options?.detail ?? null;
  }
}
