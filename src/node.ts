// vdpa-wasm for Node: everything in the main entry plus what needs Node's own modules.
export * from './index.ts';
export { FileBackend } from './node/file-backend.ts';
export type { FileBackendOptions } from './node/file-backend.ts';
