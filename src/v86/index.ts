// `vdpa-wasm/v86`: vdpa devices as PCI functions of a v86 guest (see v86.ts).
export { attachV86, v86Platform, v86Memory, V86_VERSION_RANGE } from './v86.ts';
export type { V86Like, V86Memory, V86AttachOptions, V86Attachment } from './v86.ts';
export { v86SharedMemory, importSharedMemory } from './shared-memory.ts';
export type { V86SharedMemory, WasmImports, WasmExports } from './shared-memory.ts';
