// src/pci/constants.ts against the installed Linux uapi headers: a C program compiled with gcc
// against /usr/include/linux/pci_regs.h and /usr/include/linux/virtio_pci.h prints every macro
// of the same name and the offsets and sizes of struct virtio_pci_common_cfg, virtio_pci_cap,
// virtio_pci_notify_cap and virtio_pci_cfg_cap; we compare. Then the function's own common cfg
// is checked field by field at those offsets and widths.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as C from '../src/pci/constants.ts';
import { Platform, VdpaBus, VdpaSimNetMgmt, VhostVdpa, VirtioPciFunction } from '../src/index.ts';

const hasGcc = spawnSync('gcc', ['--version']).status === 0;
const skip = hasGcc ? false : 'gcc is not installed: cannot compile against /usr/include/linux/virtio_pci.h';

/** Ours that are not macros of the uapi headers: checked as struct offsets/sizes or by their own source. */
const NOT_MACROS = new Set([
  'VIRTIO_PCI_ISR_QUEUE', 'PCI_VENDOR_ID_REDHAT_QUMRANET', 'VIRTIO_PCI_DEVICE_ID_BASE', 'PCI_SUBDEVICE_ID_QEMU',
  'PCI_CLASS_NETWORK_ETHERNET', 'PCI_CLASS_STORAGE_SCSI', 'PCI_CLASS_OTHERS', 'VIRTIO_PCI_CAP_ID', 'VIRTIO_PCI_CAP_SIZE',
  'VIRTIO_PCI_NOTIFY_CAP_SIZE', 'VIRTIO_PCI_CFG_CAP_DATA', 'VIRTIO_PCI_CFG_CAP_SIZE', 'VIRTIO_PCI_COMMON_CFG_SIZE',
  'VIRTIO_PCI_MODERN_COMMON_CFG_SIZE',
]);

/** struct virtio_pci_common_cfg: field → [our offset constant, width]. */
const COMMON: [string, number, number][] = [
  ['device_feature_select', C.VIRTIO_PCI_COMMON_DFSELECT, 4], ['device_feature', C.VIRTIO_PCI_COMMON_DF, 4],
  ['guest_feature_select', C.VIRTIO_PCI_COMMON_GFSELECT, 4], ['guest_feature', C.VIRTIO_PCI_COMMON_GF, 4],
  ['msix_config', C.VIRTIO_PCI_COMMON_MSIX, 2], ['num_queues', C.VIRTIO_PCI_COMMON_NUMQ, 2],
  ['device_status', C.VIRTIO_PCI_COMMON_STATUS, 1], ['config_generation', C.VIRTIO_PCI_COMMON_CFGGENERATION, 1],
  ['queue_select', C.VIRTIO_PCI_COMMON_Q_SELECT, 2], ['queue_size', C.VIRTIO_PCI_COMMON_Q_SIZE, 2],
  ['queue_msix_vector', C.VIRTIO_PCI_COMMON_Q_MSIX, 2], ['queue_enable', C.VIRTIO_PCI_COMMON_Q_ENABLE, 2],
  ['queue_notify_off', C.VIRTIO_PCI_COMMON_Q_NOFF, 2], ['queue_desc_lo', C.VIRTIO_PCI_COMMON_Q_DESCLO, 4],
  ['queue_desc_hi', C.VIRTIO_PCI_COMMON_Q_DESCHI, 4], ['queue_avail_lo', C.VIRTIO_PCI_COMMON_Q_AVAILLO, 4],
  ['queue_avail_hi', C.VIRTIO_PCI_COMMON_Q_AVAILHI, 4], ['queue_used_lo', C.VIRTIO_PCI_COMMON_Q_USEDLO, 4],
  ['queue_used_hi', C.VIRTIO_PCI_COMMON_Q_USEDHI, 4],
];

function cProgram(): string {
  const lines: string[] = [];
  const p = (name: string, expr: string) => lines.push(`  printf("%s %lld\\n", "${name}", (long long)(${expr}));`);
  for (const k of Object.keys(C)) if (!NOT_MACROS.has(k)) p(k, k);
  for (const [f] of COMMON) {
    p(`common.${f}`, `offsetof(struct virtio_pci_common_cfg, ${f})`);
    p(`sizeof common.${f}`, `sizeof(((struct virtio_pci_common_cfg *)0)->${f})`);
  }
  p('sizeof common', 'sizeof(struct virtio_pci_common_cfg)');
  p('cap.id', 'offsetof(struct virtio_pci_cap, id)');
  p('sizeof cap', 'sizeof(struct virtio_pci_cap)');
  p('notify.mult', 'offsetof(struct virtio_pci_notify_cap, notify_off_multiplier)');
  p('sizeof notify', 'sizeof(struct virtio_pci_notify_cap)');
  p('cfg.data', 'offsetof(struct virtio_pci_cfg_cap, pci_cfg_data)');
  p('sizeof cfg', 'sizeof(struct virtio_pci_cfg_cap)');
  return ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/pci_regs.h>', '#include <linux/virtio_pci.h>',
    'int main(void) {', ...lines, '  return 0;', '}', ''].join('\n');
}

function compiled(): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), 'pci-uapi-'));
  try {
    writeFileSync(join(dir, 'p.c'), cProgram());
    execFileSync('gcc', ['-Wall', '-o', join(dir, 'p'), join(dir, 'p.c')], { stdio: 'pipe' });
    const out = execFileSync(join(dir, 'p'), { encoding: 'utf8' });
    return new Map(out.trim().split('\n').map((l) => {
      const i = l.lastIndexOf(' ');
      return [l.slice(0, i), Number(l.slice(i + 1))];
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('constants and struct layouts match linux/pci_regs.h and linux/virtio_pci.h', { skip }, () => {
  const c = compiled();
  let n = 0;
  for (const [k, v] of Object.entries(C)) {
    if (NOT_MACROS.has(k)) continue;
    assert.equal(v, c.get(k), k);
    n++;
  }
  assert.ok(n >= 70, `compared ${n} macros`);
  for (const [f, off, w] of COMMON) {
    assert.equal(off, c.get(`common.${f}`), f);
    assert.equal(w, c.get(`sizeof common.${f}`), `width of ${f}`);
  }
  assert.equal(C.VIRTIO_PCI_COMMON_CFG_SIZE, c.get('sizeof common'));
  assert.equal(C.VIRTIO_PCI_CAP_ID, c.get('cap.id'));
  assert.equal(C.VIRTIO_PCI_CAP_SIZE, c.get('sizeof cap'));
  assert.equal(C.VIRTIO_PCI_NOTIFY_CAP_MULT, c.get('notify.mult'));
  assert.equal(C.VIRTIO_PCI_NOTIFY_CAP_SIZE, c.get('sizeof notify'));
  assert.equal(C.VIRTIO_PCI_CFG_CAP_DATA, c.get('cfg.data'));
  assert.equal(C.VIRTIO_PCI_CFG_CAP_SIZE, c.get('sizeof cfg'));
});

test('the function answers each common cfg field at its header offset and width only', () => {
  const p = Platform.create({ ramSize: 1 << 20, privateSize: 4 << 20 });
  const bus = new VdpaBus({ defaultDriver: 'vhost_vdpa' });
  bus.registerMgmtDevice(new VdpaSimNetMgmt(p));
  const vhost = new VhostVdpa(p);
  bus.registerDriver(vhost);
  bus.devAdd('vdpasim_net', 'net0');
  const fn = new VirtioPciFunction(p, vhost.open('vhost-vdpa-0'));
  // Write a distinct value to each writable field, then read every field back at its width.
  fn.write(4, C.VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
  const values: Record<string, number> = {
    device_feature_select: 1, guest_feature_select: 1, guest_feature: 0x1, msix_config: 2,
    queue_size: 32, queue_msix_vector: 3, queue_desc_lo: 0x1000, queue_desc_hi: 0x2, queue_avail_lo: 0x3000,
    queue_avail_hi: 0x4, queue_used_lo: 0x5000, queue_used_hi: 0x6,
  };
  for (const [f, off, w] of COMMON) if (f in values) fn.write(4, off, w, values[f]!);
  for (const [f, off, w] of COMMON) {
    const bad0 = fn.badAccesses;
    const got = fn.read(4, off, w);
    if (f in values) assert.equal(got, values[f], f);
    else if (f === 'num_queues') assert.equal(got, fn.numQueues);
    else if (f === 'queue_select' || f === 'queue_notify_off') assert.equal(got, 1, f);
    else if (f === 'device_feature') assert.equal(got, Number(fn.file.getFeatures() >> 32n) & ~0x2 & ~(0x1f << 5), 'high word, less ACCESS_PLATFORM and unimplemented transport bits');
    assert.equal(fn.badAccesses, bad0, f);
    // Any other width at the same offset is a bad access.
    const others = [1, 2, 4].filter((x) => x !== w && off % x === 0);
    for (const other of others) {
      assert.equal(fn.read(4, off, other), other === 1 ? 0xff : other === 2 ? 0xffff : 0xffffffff, `${f} as ${other}`);
    }
    assert.equal(fn.badAccesses, bad0 + others.length);
  }
  // The modern tail (queue_notify_data, queue_reset, admin queue fields) reads 0.
  for (const off of [56, 58, 60, 62]) assert.equal(fn.read(4, off, 2), 0);
  fn.close();
});
