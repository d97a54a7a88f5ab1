// vdpa-wasm for Node: everything in the main entry plus what needs Node's own modules.
export * from './index.ts';
export { FileBackend } from './node/file-backend.ts';
export type { FileBackendOptions } from './node/file-backend.ts';
export { nodeCrossThreadRunner, nodeLabEnvironment } from './lab/node-runner.ts';
export { labMain, LAB_USAGE } from './lab/cli.ts';
export type { NodeLabRunner } from './lab/node-runner.ts';
export type { LabIo } from './lab/cli.ts';
export { ringWasmUrl } from './node/wasm-file.ts';
export { spawnDeviceWorker } from './worker/node.ts';
export type { SpawnDeviceWorkerOptions, DeviceWorker } from './worker/node.ts';
export { startVmm } from './vmm/node.ts';
export type { StartVmmOptions, VmmSession, GuestWorker } from './vmm/node.ts';
