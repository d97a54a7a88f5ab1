// `npm start`: a short tour of the data plane. Builds a split and a packed virtqueue in one
// WebAssembly.Memory, moves traffic through both sides, shows the bytes the spec puts in the
// rings, what the validator does with a misbehaving driver, and how fast it all goes.
import { Platform, DriverQueue, DeviceQueue, ringFeatures, VirtioError, hasSimd } from './index.ts';

const line = (s = '') => console.log(s);
const hex = (u8: Uint8Array) => [...u8].map((b) => b.toString(16).padStart(2, '0')).join(' ');

line('vdpa-wasm — virtio rings in WebAssembly');
line(`Node ${process.version}, wasm SIMD ${hasSimd() ? 'on' : 'off'}`);
const p = Platform.create({ ramSize: 8 << 20 });
line(`platform: ${p.memory.buffer.byteLength >> 20} MiB memory, private state at ${p.privBase}, RAM (IOVA = offset) at ${p.ramBase}`);

for (const layout of ['split', 'packed'] as const) {
  line();
  line(`── ${layout} virtqueue, size 256, EVENT_IDX + INDIRECT_DESC ──`);
  const features = ringFeatures({ packed: layout === 'packed', eventIdx: true, indirect: true });
  const drv = new DriverQueue(p, { size: 256, features });
  const dev = new DeviceQueue(p, { size: 256, features, ...drv.addresses });
  const a = drv.addresses;
  line(`rings: desc @${a.descArea}  driver area @${a.driverArea}  device area @${a.deviceArea}`);

  // One request: a header and a payload the device reads, a buffer it writes its reply into.
  const req = p.allocBuffer(64);
  const reply = p.allocBuffer(64);
  p.write(req, new TextEncoder().encode('GET /ring'));
  drv.stage(7, [{ addr: req, len: 4 }, { addr: req + 4, len: 5 }], [{ addr: reply, len: 64 }]);
  drv.submit();
  line(`driver added token 7 (2 out + 1 in buffers → 1 indirect descriptor); kick needed: ${drv.kickPrepare()}`);
  line(`descriptor 0 as the spec lays it out: ${hex(p.read(p.identityMap.translate(a.descArea, 16, 1), 16))}`);
  dev.pop();
  const c = dev.chain(0);
  line(`device popped id ${c.id}: reads ${c.readBytes} bytes "${new TextDecoder().decode(dev.read(0))}", may write ${c.writeBytes}`);
  dev.write(0, new TextEncoder().encode('200 OK'));
  dev.pushPopped();
  line(`device pushed it used; notify the driver: ${dev.needCall()}`);
  const used = drv.reclaim();
  line(`driver reclaimed token ${used[0]!.token}, ${used[0]!.len} bytes: "${new TextDecoder().decode(p.read(reply, used[0]!.len))}"`);

  // Throughput: batches of 32 one-descriptor 64-byte chains, payload copied out by the device.
  const batch = 32;
  const bufs = p.allocBuffer(batch * 64);
  const sink = p.allocBuffer(batch * 64);
  for (let i = 0; i < batch; i++) drv.stageOne(i, bufs + 64 * i, 64);
  const t0 = performance.now();
  let moved = 0;
  while (performance.now() - t0 < 300) {
    for (let k = 0; k < 200; k++) {
      drv.submit(true);
      drv.kickPrepare();
      const n = dev.pop();
      dev.copyOut(n, sink, 64);
      dev.pushPopped(n);
      dev.needCall();
      moved += drv.getUsed();
    }
  }
  const secs = (performance.now() - t0) / 1000;
  drv.clearStaged();
  line(`round trips: ${moved.toLocaleString('en')} descriptors in ${secs.toFixed(2)} s = ${(moved / secs / 1e6).toFixed(1)} M desc/s (batch ${batch}, 64 B copied each)`);

  // A driver that writes garbage: a descriptor whose next points outside the table.
  const d = p.identityMap.translate(a.descArea, 16, 1);
  drv.stageOne(8, req, 4);
  drv.submit();
  if (layout === 'split') {
    const head = p.view.getUint16(p.identityMap.translate(a.driverArea, 4 + 2 * 256, 1) + 4 + 2 * ((dev.getState() as { availIndex: number }).availIndex & 255), true);
    p.view.setUint16(d + 16 * head + 12, 1, true); // flags = NEXT
    p.view.setUint16(d + 16 * head + 14, 999, true); // next = 999 ≥ size
  } else {
    const s = dev.getState() as { lastAvailIdx: number };
    p.view.setUint16(d + 16 * s.lastAvailIdx + 12, 999, true); // buffer id ≥ size
  }
  try {
    dev.pop();
  } catch (e) {
    line(`misbehaving driver → ${(e as VirtioError).message}; queue broken: ${dev.broken} (a device would now set DEVICE_NEEDS_RESET)`);
  }
  dev.reset();
  drv.reset();
  line(`after reset: ${dev.state.state}`);
}

// ── The control plane and the drivers: devices made by management devices, bound by virtio_vdpa ──
{
  line();
  line('── vdpa bus: vdpasim_net + vdpasim_blk, bound by virtio_vdpa ──');
  const { VdpaBus, VdpaSimNetMgmt, VdpaSimBlkMgmt, createVirtioVdpa, formatMac } = await import('./index.ts');
  const plat = Platform.create({ ramSize: 32 << 20 });
  const bus = new VdpaBus();
  bus.registerMgmtDevice(new VdpaSimNetMgmt(plat));
  bus.registerMgmtDevice(new VdpaSimBlkMgmt(plat));
  const virtio = createVirtioVdpa(plat, { queueSize: 256 });
  bus.registerDriver(virtio);
  const { runVdpa } = await import('./cli/vdpa.ts');
  const vdpa = (cmd: string) => {
    line(`$ vdpa ${cmd}`);
    runVdpa(cmd.split(' '), { bus, out: (t) => process.stdout.write(t), err: (t) => process.stdout.write(t) });
  };
  vdpa('mgmtdev show');
  vdpa('dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55 mtu 1500 max_vqp 2');
  vdpa('dev add name vdpa1 mgmtdev vdpasim_blk');
  vdpa('dev add name vdpa2 mgmtdev vdpasim_net mtu 40');
  vdpa('dev show');
  vdpa('dev config show vdpa0');
  for (const d of bus.devices) line(`${d.name}: status 0x${d.getStatus().toString(16)}, bound to ${bus.driverOf(d.name)?.name}`);

  const net = virtio.net('vdpa0');
  line(`virtio-net: mac ${formatMac(net.mac)} mtu ${net.mtu} link ${net.linkUp ? 'up' : 'down'}`);
  let frames = 0;
  let bytes = 0;
  // Batch receive: every rx batch as views of the rx buffers, no copy and no object per frame.
  net.onFrames((b) => {
    frames += b.count;
    for (let i = 0; i < b.count; i++) bytes += b.lengths[i]!;
  });
  // 32 flows (source MACs differ): the driver picks the tx queue per flow, as Linux does, so
  // they spread over both queue pairs while each flow stays in order.
  const burst = Array.from({ length: 32 }, (_, i) => {
    const f = new Uint8Array(1514).fill(0x5a);
    f.set([0x02, 0, 0, 0, 0, i], 6);
    return f;
  });
  const t0 = performance.now();
  let sent = 0;
  while (performance.now() - t0 < 300) {
    sent += net.sendBatch(burst);
    await new Promise((r) => setImmediate(r)); // let the driver refill rx between bursts
  }
  const secs = (performance.now() - t0) / 1000;
  line(`loopback: sent ${sent}, received ${frames} frames of 1514 B in ${secs.toFixed(2)} s = ${(bytes * 8 / secs / 1e9).toFixed(2)} Gbit/s`);
  for (let q = 0; q < 4; q++) vdpa(`dev vstats show vdpa0 qidx ${q}`);

  // Two more devices on a learning switch: broadcast floods, the answer goes by unicast.
  const { L2Switch } = await import('./index.ts');
  const sw = new L2Switch();
  const hosts = ['lan1', 'lan2'].map((name, i) => {
    const dev = bus.devAdd('vdpasim_net', name, { mac: `02:00:00:00:00:0${i + 1}` }) as import('./index.ts').VdpaSimNet;
    const port = sw.connect(dev);
    dev.attachPort((fr) => sw.input(port, fr));
    return virtio.net(name);
  });
  const seen: string[] = [];
  hosts.forEach((h, i) => h.onFrame((f) => seen.push(`lan${i + 1} got ${f.length} B from ${formatMac(f.subarray(6, 12))} to ${formatMac(f.subarray(0, 6))}`)));
  const eth = (dst: number[], src: number[]) => { const f = new Uint8Array(64); f.set(dst); f.set(src, 6); f.set([0x88, 0xb5], 12); return f; };
  hosts[0]!.send(eth([255, 255, 255, 255, 255, 255], [2, 0, 0, 0, 0, 1]));
  await new Promise((r) => setImmediate(r));
  hosts[1]!.send(eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]));
  await new Promise((r) => setImmediate(r));
  for (const x of seen) line(`switch: ${x}`);

  const blk = virtio.blk('vdpa1');
  line(`virtio-blk: ${blk.capacity} sectors × ${blk.blockSize} B, id "${await blk.getId()}"`);
  // A mixed workload: 32 requests in flight, 4 KiB–64 KiB, 60 % writes, every read checked
  // against a model of the disk.
  const model = new Uint8Array(blk.capacity * 512);
  let seed = 42;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  let reads = 0, writes = 0, bytesIo = 0, bad = 0;
  const t1 = performance.now();
  while (performance.now() - t1 < 300) {
    const busy = new Set<number>();
    const ops: Promise<void>[] = [];
    for (let k = 0; k < 32; k++) {
      const n = 8 * (1 + Math.floor(rand() * 16)); // 4 KiB .. 64 KiB
      const s0 = Math.floor(rand() * (blk.capacity - n) / 8) * 8;
      if (busy.has(s0 >> 7) || busy.has((s0 + n - 1) >> 7)) continue; // one request per 64 KiB region at a time
      busy.add(s0 >> 7);
      busy.add((s0 + n - 1) >> 7);
      bytesIo += n * 512;
      if (rand() < 0.6) {
        const d = new Uint8Array(n * 512).fill((rand() * 256) | 0);
        model.set(d, s0 * 512);
        writes++;
        ops.push(blk.write(s0, d));
      } else {
        const b = new Uint8Array(n * 512);
        const want = model.slice(s0 * 512, (s0 + n) * 512);
        reads++;
        ops.push(blk.read(s0, b).then(() => { if (!Buffer.from(b.buffer).equals(Buffer.from(want.buffer))) bad++; }));
      }
    }
    await Promise.all(ops);
  }
  await blk.flush();
  const s2 = (performance.now() - t1) / 1000;
  line(`blk mixed I/O: ${reads} reads + ${writes} writes, ${(bytesIo / 2 ** 20 / s2).toFixed(0)} MiB/s, ${(((reads + writes) / s2) / 1000).toFixed(1)} k requests/s, ${bad === 0 ? 'every read matched the model' : `${bad} reads MISMATCHED`}`);
  const rq = (bus.device('vdpa1') as import('./index.ts').VdpaSimBlk).getVendorVqStats(0);
  line(`blk request queue: ${rq.stats.map(([k, v]) => `${k} ${v}`).join(' ')}`);

  line();
  line('summary (this run):');
  line('| path | result |');
  line('|---|---|');
  line(`| net loopback, 1514 B frames, 2 queue pairs | ${(bytes * 8 / secs / 1e9).toFixed(2)} Gbit/s, ${(frames / secs / 1e6).toFixed(2)} Mpps |`);
  line(`| blk RAM disk, 4–64 KiB mixed, 32 in flight | ${(bytesIo / 2 ** 20 / s2).toFixed(0)} MiB/s |`);
}
