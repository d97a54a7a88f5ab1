// The vhost uAPI numbers of src/vhost/uapi.ts and src/vhost/errno.ts against the installed
// Linux headers: a C program compiled with gcc against /usr/include/linux/vhost.h prints every
// request code, struct size and field offset, and the errno values; we compare. Codes newer
// than the installed header (Linux 6.1) are checked against their _IOC encoding only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as U from '../src/vhost/uapi.ts';
import { ERRNO, VhostError, errnoName } from '../src/vhost/errno.ts';
import { VirtioError, Code } from '../src/errors.ts';

const hasGcc = spawnSync('gcc', ['--version']).status === 0;
const skip = hasGcc ? false : 'gcc is not installed: cannot compile against /usr/include/linux/vhost.h';

/** Codes the installed 6.1 header lacks (newer uapi), checked by encoding below instead. */
const NEWER = new Set(['VHOST_VDPA_RESUME', 'VHOST_VDPA_GET_VRING_DESC_GROUP', 'VHOST_VDPA_GET_VRING_SIZE']);

const STRUCTS: [string, Record<string, number>][] = [
  ['vhost_vring_state', U.VHOST_VRING_STATE],
  ['vhost_vring_file', U.VHOST_VRING_FILE],
  ['vhost_vring_addr', U.VHOST_VRING_ADDR],
  ['vhost_vdpa_config', U.VHOST_VDPA_CONFIG],
  ['vhost_vdpa_iova_range', U.VHOST_VDPA_IOVA_RANGE],
  ['vhost_iotlb_msg', U.VHOST_IOTLB_MSG_LAYOUT],
  ['vhost_msg', U.VHOST_MSG],
  ['vhost_msg_v2', U.VHOST_MSG_V2],
  ['vhost_memory', U.VHOST_MEMORY],
];

const CONSTS: Record<string, number> = {
  VHOST_VIRTIO: U.VHOST_VIRTIO, VHOST_FILE_UNBIND: U.VHOST_FILE_UNBIND,
  VHOST_IOTLB_MSG: U.VHOST_IOTLB_MSG, VHOST_IOTLB_MSG_V2: U.VHOST_IOTLB_MSG_V2,
  VHOST_IOTLB_MISS: U.VHOST_IOTLB_MISS, VHOST_IOTLB_UPDATE: U.VHOST_IOTLB_UPDATE,
  VHOST_IOTLB_INVALIDATE: U.VHOST_IOTLB_INVALIDATE, VHOST_IOTLB_ACCESS_FAIL: U.VHOST_IOTLB_ACCESS_FAIL,
  VHOST_IOTLB_BATCH_BEGIN: U.VHOST_IOTLB_BATCH_BEGIN, VHOST_IOTLB_BATCH_END: U.VHOST_IOTLB_BATCH_END,
  VHOST_ACCESS_RO: U.VHOST_ACCESS_RO, VHOST_ACCESS_WO: U.VHOST_ACCESS_WO, VHOST_ACCESS_RW: U.VHOST_ACCESS_RW,
  VHOST_BACKEND_F_IOTLB_MSG_V2: U.VHOST_BACKEND_F_IOTLB_MSG_V2, VHOST_BACKEND_F_IOTLB_BATCH: U.VHOST_BACKEND_F_IOTLB_BATCH,
  VHOST_BACKEND_F_IOTLB_ASID: U.VHOST_BACKEND_F_IOTLB_ASID, VHOST_BACKEND_F_SUSPEND: U.VHOST_BACKEND_F_SUSPEND,
};

function cProgram(): string {
  const lines: string[] = [];
  const p = (name: string, expr: string) => lines.push(`  printf("%s %lld\\n", "${name}", (long long)(${expr}));`);
  for (const name of Object.keys(U.VHOST_REQUESTS)) if (!NEWER.has(name)) p(name, `(unsigned int)${name}`);
  for (const [s, layout] of STRUCTS) {
    for (const f of Object.keys(layout)) {
      if (f === 'SIZE') p(`sizeof ${s}`, `sizeof(struct ${s})`);
      else p(`${s}.${f}`, `offsetof(struct ${s}, ${f})`);
    }
  }
  for (const k of Object.keys(CONSTS)) p(k, k);
  for (const k of Object.keys(ERRNO)) p(k, k);
  return ['#include <stdio.h>', '#include <stddef.h>', '#include <errno.h>', '#include <linux/vhost.h>', 'int main(void) {', ...lines, '  return 0;', '}', ''].join('\n');
}

function compiled(): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-uapi-'));
  try {
    writeFileSync(join(dir, 'u.c'), cProgram());
    execFileSync('gcc', ['-Wall', '-o', join(dir, 'u'), join(dir, 'u.c')], { stdio: 'pipe' });
    const out = execFileSync(join(dir, 'u'), { encoding: 'utf8' });
    return new Map(out.trim().split('\n').map((l) => {
      const i = l.lastIndexOf(' ');
      return [l.slice(0, i), Number(l.slice(i + 1))];
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('request codes, struct layouts, constants and errno values match the installed Linux headers', { skip }, () => {
  const c = compiled();
  let n = 0;
  for (const [name, code] of Object.entries(U.VHOST_REQUESTS)) {
    if (NEWER.has(name)) continue;
    assert.equal(code, c.get(name), name);
    n++;
  }
  assert.ok(n >= 35, `compared ${n} request codes`);
  for (const [s, layout] of STRUCTS) {
    for (const [f, v] of Object.entries(layout)) {
      assert.equal(v, c.get(f === 'SIZE' ? `sizeof ${s}` : `${s}.${f}`), `${s}.${f}`);
    }
  }
  for (const [k, v] of Object.entries(CONSTS)) assert.equal(v, c.get(k), k);
  for (const [k, v] of Object.entries(ERRNO)) assert.equal(v, c.get(k), k);
});

test('codes newer than the installed header follow their _IOC encoding (Linux 6.10 uapi)', () => {
  // _IO(0xAF, 0x7E); _IOWR(0xAF, 0x7F / 0x82, struct vhost_vring_state)
  assert.equal(U.VHOST_VDPA_RESUME, 0xaf7e);
  assert.equal(U.VHOST_VDPA_GET_VRING_DESC_GROUP, (3 << 30 | 8 << 16 | 0xaf << 8 | 0x7f) >>> 0);
  assert.equal(U.VHOST_VDPA_GET_VRING_SIZE, 0xc008af82);
  assert.deepEqual(
    [U.VHOST_BACKEND_F_RESUME, U.VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK, U.VHOST_BACKEND_F_DESC_ASID, U.VHOST_BACKEND_F_IOTLB_PERSIST],
    [5, 6, 7, 8],
  );
  assert.equal(U.iocDir(U.VHOST_GET_VRING_BASE), U.IOC_READ | U.IOC_WRITE);
  assert.equal(U.iocSize(U.VHOST_SET_VRING_ADDR), 40);
  assert.equal(U.VHOST_VDPA_SUSPEND, 0xaf7d);
});

test('encoders lay the structs out as the uapi', () => {
  const a = U.encodeVringAddr({ index: 3, desc: 0x1000, avail: 0x2000, used: 0x3000 });
  const v = new DataView(a.buffer);
  assert.equal(v.getUint32(0, true), 3);
  assert.equal(v.getBigUint64(8, true), 0x1000n);
  assert.equal(v.getBigUint64(16, true), 0x3000n, 'used_user_addr comes before avail_user_addr');
  assert.equal(v.getBigUint64(24, true), 0x2000n);
  const m = U.encodeIotlbMsg({ type: U.VHOST_IOTLB_UPDATE, iova: 0x10000n, size: 4096, uaddr: 0x8000, perm: U.VHOST_ACCESS_RW }, 1);
  const mv = new DataView(m.buffer);
  assert.equal(m.length, 72);
  assert.equal(mv.getUint32(0, true), U.VHOST_IOTLB_MSG_V2);
  assert.equal(mv.getUint32(4, true), 1);
  assert.equal(mv.getBigUint64(8, true), 0x10000n);
  assert.equal(mv.getBigUint64(16, true), 4096n);
  assert.equal(mv.getBigUint64(24, true), 0x8000n);
  assert.equal(m[32], 3);
  assert.equal(m[33], U.VHOST_IOTLB_UPDATE);
  const f = U.encodeVringFile(2, -1);
  assert.equal(new DataView(f.buffer).getInt32(4, true), -1);
});

test('VhostError carries the errno and stays a VirtioError', () => {
  const e = new VhostError('EBUSY', 'features already negotiated');
  assert.ok(e instanceof VirtioError);
  assert.equal(e.errno, 16);
  assert.equal(e.errnoName, 'EBUSY');
  assert.equal(e.code, Code.FailedPrecondition);
  assert.equal(errnoName(95), 'EOPNOTSUPP');
  assert.equal(errnoName(4242), 'E4242');
});
