// The management devices in one import: the generic part
// is mgmt/base.ts, the simulator ones live beside their devices (devices/net-mgmt.ts,
// devices/blk-mgmt.ts). index.ts, and code written before the move, import them from here.

export * from './base.ts';
export { VdpaSimNetMgmt } from '../devices/net-mgmt.ts';
export { VdpaSimBlkMgmt } from '../devices/blk-mgmt.ts';
export { parseMac, formatMac } from '../virtio/mac.ts';
