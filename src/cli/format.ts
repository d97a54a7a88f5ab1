// How iproute2's vdpa.c prints each reply: the text layout, and the value each reply puts in
// the -j JSON document. Block device config is our addition (iproute2 never prints it).

import { formatMac } from '../virtio/mac.ts';
import { VIRTIO_ID_NET, VIRTIO_ID_BLOCK, VIRTIO_NET_F_CTRL_VQ } from '../virtio/constants.ts';
import type { JsonValue } from './json-writer.ts';
import {
  featureNames, deviceTypeName, type MgmtdevInfo, type DevInfo, type DevConfigInfo, type DevVstatsInfo, type BlkConfigInfo,
} from './reply.ts';

const featureText = (s: string | number): string => (typeof s === 'number' ? `bit_${s}` : s);

/** `vdpa mgmtdev show` text of one management device. */
export function formatMgmtdevText(m: MgmtdevInfo): string {
  const classId = m.classes.includes('net') ? VIRTIO_ID_NET : 0;
  return `${m.name}: \n  supported_classes${m.classes.map((c) => ' ' + c).join('')}\n`
    + `  max_supported_vqs ${m.maxSupportedVqs}\n`
    + `  dev_features${featureNames(m.supportedFeatures, classId).map((s) => ' ' + featureText(s)).join('')}\n`;
}

/** `vdpa -j mgmtdev show` value of one management device. */
export function mgmtdevJson(m: MgmtdevInfo): JsonValue {
  const classId = m.classes.includes('net') ? VIRTIO_ID_NET : 0;
  return { supported_classes: m.classes, max_supported_vqs: m.maxSupportedVqs, dev_features: featureNames(m.supportedFeatures, classId) };
}

/** `vdpa dev show` text of one device. */
export function formatDevText(d: DevInfo): string {
  return `${d.name}: type ${deviceTypeName(d.deviceId)} mgmtdev ${d.mgmtdev} vendor_id ${d.vendorId} max_vqs ${d.maxVqs} max_vq_size ${d.maxVqSize}\n`;
}

/** `vdpa -j dev show` value of one device. */
export function devJson(d: DevInfo): JsonValue {
  return { type: deviceTypeName(d.deviceId), mgmtdev: d.mgmtdev, vendor_id: d.vendorId, max_vqs: d.maxVqs, max_vq_size: d.maxVqSize };
}

/**
 * The block config fields in print order, [json key, value]: our layout in vdpa.c's style
 * (keys named after the VDPA_ATTR_DEV_BLK_CFG_* attributes, sizes as the kernel sends them).
 */
function blkFields(b: BlkConfigInfo): [string, number | bigint | boolean][] {
  const out: [string, number | bigint | boolean][] = [['capacity', b.capacity]];
  const opt = (k: string, v: number | undefined) => { if (v !== undefined) out.push([k, v]); };
  opt('size_max', b.sizeMax);
  opt('blk_size', b.blkSize);
  opt('seg_max', b.segMax);
  opt('num_queues', b.numQueues);
  opt('max_discard_sec', b.maxDiscardSectors);
  opt('max_discard_seg', b.maxDiscardSeg);
  opt('discard_sec_align', b.discardSectorAlignment);
  opt('max_write_zeroes_sec', b.maxWriteZeroesSectors);
  opt('max_write_zeroes_seg', b.maxWriteZeroesSeg);
  out.push(['read_only', b.readOnly], ['flush', b.flush]);
  return out;
}

/**
 * `vdpa dev config show` text of one device (vdpa.c pr_out_dev_config: fields end with a
 * space). Block devices print their VDPA_ATTR_DEV_BLK_CFG_* fields (our addition).
 */
export function formatDevConfigText(c: DevConfigInfo): string {
  let s = `${c.name}: `;
  if (c.deviceId === VIRTIO_ID_NET) {
    if (c.mac) s += `mac ${formatMac(c.mac)} `;
    if (c.netStatus !== undefined) s += `link ${c.netStatus & 1 ? 'up' : 'down'} link_announce ${c.netStatus & 2 ? 'true' : 'false'} `;
    if (c.maxVqp !== undefined) s += `max_vq_pairs ${c.maxVqp} `;
    if (c.mtu !== undefined) s += `mtu ${c.mtu} `;
  } else if (c.deviceId === VIRTIO_ID_BLOCK && c.blk) {
    for (const [k, v] of blkFields(c.blk)) s += `${k} ${String(v)} `;
  }
  if ((c.deviceId === VIRTIO_ID_NET || c.blk) && c.negotiatedFeatures !== undefined) {
    s += `\n  negotiated_features${featureNames(c.negotiatedFeatures, c.deviceId).map((x) => ' ' + featureText(x)).join('')}`;
  }
  return s + '\n';
}

/**
 * `vdpa -j dev config show` value of one device. The "link " and "link_announce " keys end
 * with a space, as vdpa.c spells them.
 */
export function devConfigJson(c: DevConfigInfo): JsonValue {
  const o: { [k: string]: JsonValue } = {};
  if (c.deviceId === VIRTIO_ID_BLOCK && c.blk) {
    for (const [k, v] of blkFields(c.blk)) o[k] = v;
  } else if (c.deviceId !== VIRTIO_ID_NET) {
    return o;
  }
  if (c.mac) o.mac = formatMac(c.mac);
  if (c.netStatus !== undefined) {
    o['link '] = c.netStatus & 1 ? 'up' : 'down';
    o['link_announce '] = (c.netStatus & 2) !== 0;
  }
  if (c.maxVqp !== undefined) o.max_vq_pairs = c.maxVqp;
  if (c.mtu !== undefined) o.mtu = c.mtu;
  if (c.negotiatedFeatures !== undefined) o.negotiated_features = featureNames(c.negotiatedFeatures, c.deviceId);
  return o;
}

/** vdpa.c print_queue_type: rx / tx by parity, control_vq after the data queues with CTRL_VQ. */
export function queueTypeName(qidx: number, maxVqp: number, negotiatedFeatures: bigint): string {
  if (((negotiatedFeatures >> BigInt(VIRTIO_NET_F_CTRL_VQ)) & 1n) && qidx === 2 * maxVqp) return 'control_vq';
  return qidx & 1 ? 'tx' : 'rx';
}

/** `vdpa dev vstats show` text. */
export function formatVstatsText(v: DevVstatsInfo): string {
  let s = `${v.name}: queue_type ${queueTypeName(v.qidx, v.maxVqp ?? 0, v.negotiatedFeatures)} `;
  for (const [n, x] of v.stats) s += `${n} ${x} `;
  return s + '\n';
}

/** `vdpa -j dev vstats show` value: queue_type, then each counter under its own name. */
export function vstatsJson(v: DevVstatsInfo): JsonValue {
  const o: { [k: string]: JsonValue } = { queue_type: queueTypeName(v.qidx, v.maxVqp ?? 0, v.negotiatedFeatures) };
  for (const [n, x] of v.stats) o[n] = x;
  return o;
}
