// Blk backend descriptors for a device worker (issue 9 §4, storage that crosses workers): a
// BlkBackend is an object with methods and cannot be posted to a worker, so a thread asks the
// worker for a disk by *descriptor* — plain data naming the storage — and the worker opens it
// itself. The resolution lives in the worker's entry file (node-device-worker.ts opens
// `{ file }` as a FileBackend, browser-device-worker.ts opens `{ opfs }` as an OpfsBackend), so
// host.ts, which runs in both, never imports node:fs. A storage identity (`file:<real path>`,
// `opfs:<path>`) comes back with the backend: two devices whose identities are equal share one
// disk, which is what lets a migration between workers move a blk device without copying it.

import { VirtioError, Code } from '../errors.ts';
import type { BlkBackend } from '../devices/blk.ts';

/** A disk image file, opened in a Node device worker as a FileBackend (FileBackend.open's options). */
export interface FileBackendDescriptor {
  /** Path of the image (relative paths resolve against the process's working directory). */
  file: string;
  /** Image size in bytes: a missing file is created with it; an existing one must have it. */
  size?: number;
  /** Open read-only (the device offers VIRTIO_BLK_F_RO). @default false */
  readOnly?: boolean;
}

/** An Origin Private File System file, opened in a browser device worker as an OpfsBackend (OpfsBackend.open's options). */
export interface OpfsBackendDescriptor {
  /** OPFS path of the image (`/`-separated). */
  opfs: string;
  /** Disk size in sectors: a missing file is created with it; an existing one must have it. */
  sectors?: number;
  /** Open read-only (the device offers VIRTIO_BLK_F_RO). @default false */
  readOnly?: boolean;
}

/** What a device worker can be asked to open as a vdpasim_blk device's disk (devAdd attribute `backend`). */
export type BlkBackendDescriptor = FileBackendDescriptor | OpfsBackendDescriptor;

/** A backend a device worker's entry opened for a descriptor. */
export interface ResolvedBackend {
  /** The disk. */
  backend: BlkBackend;
  /**
   * The storage's identity (`file:/abs/real/path`, `opfs:dir/name`): devices with equal
   * identities share one disk.
   */
  storage: string;
  /** Closes the disk (after the device that used it is deleted). */
  close(): Promise<void> | void;
}

/** Opens a descriptor's storage: a device worker entry's part of {@link BlkBackendDescriptor}s. */
export type BackendResolver = (descriptor: BlkBackendDescriptor) => Promise<ResolvedBackend>;

const KINDS = ['file', 'opfs'] as const;

/**
 * Checks that `x` is a {@link BlkBackendDescriptor} and returns a copy with only its known
 * fields. Throws VirtioError(InvalidArgument) for anything else (an unknown kind, two kinds,
 * a field of the wrong type).
 */
export function checkBackendDescriptor(x: unknown): BlkBackendDescriptor {
  const bad = (why: string): never => {
    throw new VirtioError(Code.InvalidArgument, `unknown blk backend descriptor: ${why} (give { file: path } in Node or { opfs: path } in a browser worker)`);
  };
  if (typeof x !== 'object' || x === null || Array.isArray(x)) bad(`${x === null ? 'null' : typeof x} is not an object`);
  const o = x as Record<string, unknown>;
  const kinds = KINDS.filter((k) => o[k] !== undefined);
  if (kinds.length !== 1) bad(kinds.length ? `it names both ${kinds.join(' and ')}` : `no file or opfs in { ${Object.keys(o).join(', ')} }`);
  const kind = kinds[0]!;
  if (typeof o[kind] !== 'string' || o[kind] === '') bad(`${kind} must be a non-empty string`);
  const allowed = kind === 'file' ? ['file', 'size', 'readOnly'] : ['opfs', 'sectors', 'readOnly'];
  const extra = Object.keys(o).filter((k) => o[k] !== undefined && !allowed.includes(k));
  if (extra.length) bad(`${kind} takes no ${extra.join(', ')}`);
  if (o.readOnly !== undefined && typeof o.readOnly !== 'boolean') bad('readOnly must be a boolean');
  const num = kind === 'file' ? 'size' : 'sectors';
  if (o[num] !== undefined && typeof o[num] !== 'number') bad(`${num} must be a number`);
  const d: Record<string, unknown> = { [kind]: o[kind] };
  if (o[num] !== undefined) d[num] = o[num];
  if (o.readOnly !== undefined) d.readOnly = o.readOnly;
  return d as unknown as BlkBackendDescriptor;
}

/** The kind of a checked descriptor. */
export function descriptorKind(d: BlkBackendDescriptor): 'file' | 'opfs' {
  return 'file' in d ? 'file' : 'opfs';
}

/**
 * The error a device worker entry answers for a descriptor it has no means to open (a browser
 * worker asked for a file, a Node worker for an OPFS file): VirtioError(Unsupported).
 */
export function cannotResolve(d: BlkBackendDescriptor, where: string): VirtioError {
  const k = descriptorKind(d);
  return new VirtioError(Code.Unsupported, `${where} cannot open a { ${k} } blk backend (${k === 'file' ? 'files need a Node device worker' : 'OPFS needs a browser device worker'})`);
}
