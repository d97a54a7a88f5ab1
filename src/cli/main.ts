// Entry of the `vdpa` binary (bin/vdpa.mjs): one Platform and one vdpa bus with the
// vdpasim_net and vdpasim_blk management devices, then iproute2-style `vdpa ARGV…`.
//
// Each process has its own bus: devices added by one `vdpa dev add` run are gone when it
// exits. For a session, put the commands in a file and run `vdpa -batch FILE` (or
// `vdpa -batch -` to read them from standard input), or call runVdpa from the library.

import { readFileSync } from 'node:fs';
import { Platform } from '../platform/platform.ts';
import { VdpaBus } from '../bus/bus.ts';
import { VdpaSimNetMgmt } from '../devices/net-mgmt.ts';
import { VdpaSimBlkMgmt } from '../devices/blk-mgmt.ts';
import { runVdpa } from './vdpa.ts';

function version(): string {
  try {
    // ../../package.json from both src/cli/ and dist/cli/.
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name?: string; version?: string };
    return `${pkg.name ?? 'vdpa-wasm'}-${pkg.version ?? '0'}`;
  } catch {
    return 'vdpa-wasm';
  }
}

// A closed pipe (`vdpa dev show | head -1`) ends the run quietly, as it ends a C tool.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  process.exit(process.exitCode ?? 0);
});

// 64 MiB of RAM for rings, buffers and RAM disks; 32 MiB of private memory for device state
// (a vdpasim_net device stages two batches of MTU-sized frames there: ~1.2 MiB at mtu 9000).
const platform = Platform.create({ ramSize: 64 << 20, privateSize: 32 << 20 });
const bus = new VdpaBus();
bus.registerMgmtDevice(new VdpaSimNetMgmt(platform));
bus.registerMgmtDevice(new VdpaSimBlkMgmt(platform));

process.exitCode = runVdpa(process.argv.slice(2), {
  bus,
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  readFile: (path) => readFileSync(path === '-' ? 0 : path, 'utf8'),
  version: version(),
});
