// The demo page: starts the device worker on a shared platform, binds a page driver to every
// device the worker's bus offers, draws the rings live, runs `vdpa` commands in the worker and
// runs the ring lab with charts. Everything the Chromium test (test/browser-demo.test.ts) reads
// is in the DOM, plus window.__demo (ready flag and counters).

import uPlot from 'uplot';
import uplotCss from 'uplot/dist/uPlot.min.css';
import {
  Platform, PRESETS, formatTable, series, VIRTIO_ID_NET, VIRTIO_ID_BLOCK,
  type LabPointResult, type LabResult, type LabSweep, type LabPoint, type VqState, type ChartSeries,
} from '../src/index.ts';
import { parseBatch } from '../src/cli/vdpa.ts';
import { CTL, MAX_SLOTS, type FromWorker, type DeviceInfo, type QueueSnapshot } from './protocol.ts';
import { PageNetDriver, PageBlkDriver, pageFeatures, type PageDriver, type PageQueue } from './drivers.ts';
import { readRing, paintRing, STATE_NAMES, COLORS, type RingView } from './rings.ts';
import { runPageLab } from './lab.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const QUEUE_SIZE = 64;

/** What the test reads besides the DOM. */
const demo = {
  ready: false,
  error: null as string | null,
  kicks: 0,
  calls: 0,
  drivers: {} as Record<string, Record<string, number>>,
  lab: null as LabResult | null,
};
(window as unknown as { __demo: typeof demo }).__demo = demo;

function fail(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  demo.error = msg;
  const s = $('status');
  s.textContent = `error: ${msg}`;
  s.className = 'err';
  console.error(e);
}

// ───────────── platform, worker, protocol ─────────────

if (!globalThis.crossOriginIsolated) throw new Error('this page must be served cross-origin isolated (COOP/COEP): use `npm run demo:web`');
const p = Platform.create({ shared: true, ramSize: 48 << 20, privateSize: 4 << 20 });
const ctlAddr = p.priv.alloc(CTL.WORDS * 4, 64);
p.i32.fill(0, ctlAddr >> 2, (ctlAddr >> 2) + CTL.WORDS);
const ctl = ctlAddr >> 2;
const worker = new Worker(new URL('./device-worker.js', import.meta.url), { type: 'module', name: 'vdpa-devices' });

let nextId = 1;
const pending = new Map<number, (m: FromWorker) => void>();
function ask<T extends FromWorker>(m: { t: string; [k: string]: unknown }): Promise<T> {
  const id = nextId++;
  return new Promise((resolve) => {
    pending.set(id, resolve as (m: FromWorker) => void);
    worker.postMessage({ ...m, id });
  });
}

const drivers = new Map<string, PageDriver>();
const bySlot: (PageQueue | null)[] = new Array(MAX_SLOTS).fill(null);
const driverOf = new Map<PageQueue, PageDriver>();
let snapshots = new Map<string, QueueSnapshot>();
/** The L2 switch's per-port counters, by net device (from the worker's snapshots). */
let switchPorts = new Map<string, { rx: number; tx: number; drops: number }>();

function freeSlots(n: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < MAX_SLOTS && out.length < n; s++) if (!bySlot[s] && !reserved.has(s)) out.push(s);
  if (out.length < n) throw new Error('no free doorbell bits: remove a device first');
  return out;
}
const reserved = new Set<number>();
let netCount = 0;

/** Binds a page driver to a device the worker offered. */
async function attach(dev: DeviceInfo): Promise<void> {
  const offered = BigInt(`0x${dev.features}`);
  const size = Math.min(QUEUE_SIZE, dev.vqNumMax);
  let drv: PageNetDriver | PageBlkDriver;
  if (dev.deviceId === VIRTIO_ID_NET) {
    const packed = netCount++ % 2 === 1; // net0 split, net1 packed, …
    const slots = freeSlots(2);
    const f = pageFeatures(offered, packed, true);
    drv = new PageNetDriver(p, p.i32, ctl, dev, f, size, [slots[0]!, slots[1]!]);
  } else if (dev.deviceId === VIRTIO_ID_BLOCK) {
    const f = pageFeatures(offered, false, false);
    drv = new PageBlkDriver(p, p.i32, ctl, dev, f, size, freeSlots(1)[0]!);
  } else {
    return;
  }
  for (const q of drv.queues) reserved.add(q.slot);
  const r = await ask<Extract<FromWorker, { t: 'bound' }>>({ t: 'bind', name: dev.name, features: drv.queues[0]!.dq.features.toString(16), queues: drv.setups() });
  for (const q of drv.queues) reserved.delete(q.slot);
  if (!r.ok) {
    drv.destroy();
    throw new Error(`binding ${dev.name}: ${r.error}`);
  }
  drv.features = BigInt(`0x${r.features}`);
  drivers.set(dev.name, drv);
  for (const q of drv.queues) {
    bySlot[q.slot] = q;
    driverOf.set(q, drv);
  }
  if (drv instanceof PageNetDriver) drv.start();
  pairNets();
  buildRingCards();
}

/** Every net driver sends to the next net device (a ring of peers through the switch). */
function pairNets(): void {
  const nets = [...drivers.values()].filter((d): d is PageNetDriver => d instanceof PageNetDriver);
  nets.forEach((d, i) => {
    const peer = nets[(i + 1) % nets.length]!;
    d.peer = nets.length > 1 && peer.dev.mac ? new Uint8Array(peer.dev.mac.split(':').map((x) => parseInt(x, 16))) : null;
  });
}

function detach(name: string): void {
  const drv = drivers.get(name);
  if (!drv) return;
  drivers.delete(name);
  for (const q of drv.queues) {
    bySlot[q.slot] = null;
    driverOf.delete(q);
  }
  drv.destroy(); // the worker reset the device before saying it is gone
  pairNets();
  buildRingCards();
}

const attaching: Promise<void>[] = [];
worker.onmessage = (ev: MessageEvent<FromWorker>) => {
  const m = ev.data;
  if ('id' in m && pending.has(m.id)) {
    const f = pending.get(m.id)!;
    pending.delete(m.id);
    f(m);
    return;
  }
  switch (m.t) {
    case 'probe':
      // The first devices must bind; one added later from the console that cannot (no free
      // doorbell bit, say) stays on the bus without a driver, and the console says why.
      attaching.push(attach(m.dev).catch((e: unknown) => {
        if (!demo.ready) throw e;
        print(`no page driver for ${m.dev.name}: ${e instanceof Error ? e.message : String(e)}\n`, 'err');
      }));
      return;
    case 'remove':
      detach(m.name);
      return;
    case 'ready':
      Promise.all(attaching).then(() => {
        demo.ready = true;
        $('status').textContent = `running — ${m.devices.length} devices in the worker, crossOriginIsolated`;
      }, fail);
      return;
    case 'note':
      print(`${m.message}\n`, 'err');
      return;
    case 'error':
      fail(new Error(`device worker: ${m.message}`));
      return;
  }
};
worker.onerror = (e) => {
  e.preventDefault();
  fail(new Error(`device worker: ${e.message} (${e.filename}:${e.lineno})`));
};

worker.postMessage({
  t: 'init', handle: p.handle({ priv: 1 << 20, ram: 12 << 20 }), ctl: ctlAddr,
  commands: [
    ['dev', 'add', 'name', 'net0', 'mgmtdev', 'vdpasim_net', 'mac', '02:00:00:00:00:01'],
    ['dev', 'add', 'name', 'net1', 'mgmtdev', 'vdpasim_net', 'mac', '02:00:00:00:00:02'],
    ['dev', 'add', 'name', 'blk0', 'mgmtdev', 'vdpasim_blk'],
  ],
  opfs: { path: 'vdpa-wasm-demo/disk0.img', sectors: 8192 },
});

// ───────────── the datapath: calls (waitAsync), load, a slow poll as a safety net ─────────────

async function callLoop(): Promise<void> {
  let seen = Atomics.load(p.i32, ctl + CTL.CALL_SEQ);
  for (;;) {
    const w = Atomics.waitAsync(p.i32, ctl + CTL.CALL_SEQ, seen, 500);
    if (w.async) await w.value;
    seen = Atomics.load(p.i32, ctl + CTL.CALL_SEQ);
    let bits = Atomics.exchange(p.i32, ctl + CTL.CALL_BITS, 0);
    while (bits !== 0) {
      const s = 31 - Math.clz32(bits);
      bits &= ~(1 << s);
      const q = bySlot[s];
      if (!q) continue;
      q.calls++;
      demo.calls++;
      try {
        const d = driverOf.get(q)!;
        d.service(q);
        // Closed loop: what the device returned makes room for more at once (the timer tick
        // below only restarts traffic that stopped).
        if (!paused && load > 0) d.pump(load);
      } catch (e) {
        fail(e);
      }
    }
  }
}
void callLoop();

let paused = false;
let load = 8;
$('load').addEventListener('input', () => {
  load = Number(($('load') as HTMLInputElement).value);
  $('load-v').textContent = String(load);
});
$('pace').addEventListener('input', () => {
  const ms = Number(($('pace') as HTMLInputElement).value);
  $('pace-v').textContent = ms === 0 ? 'at once' : `every ${ms} ms`;
  worker.postMessage({ t: 'pace', ms });
});
$('pause').addEventListener('click', () => {
  paused = !paused;
  $('pause').textContent = paused ? 'Resume' : 'Pause';
});

let ticks = 0;
function tick(): void {
  try {
    if (!paused && load > 0) for (const d of drivers.values()) d.pump(load);
    if (++ticks % 100 === 0) for (const d of drivers.values()) for (const q of d.queues) d.service(q);
  } catch (e) {
    fail(e);
  }
  setTimeout(tick, 4);
}
setTimeout(tick, 4);

// ───────────── drawing ─────────────

$('legend').innerHTML = STATE_NAMES.map((n, i) => `<span><i style="background:${COLORS[i]}"></i>${n}</span>`).join('');

interface Card { q: PageQueue; canvas: HTMLCanvasElement; nums: HTMLElement; last: { t: number; kicks: number; calls: number }; rate: [number, number] }
let cards: Card[] = [];

function buildRingCards(): void {
  const box = $('rings');
  box.textContent = '';
  cards = [];
  for (const d of drivers.values()) {
    for (const q of d.queues) {
      const div = document.createElement('div');
      div.className = 'ring';
      div.dataset.queue = q.label;
      const h = document.createElement('h3');
      h.textContent = `${q.label} — ${q.dq.layout}${q.dq.eventIdx ? ' + EVENT_IDX' : ''}, ${q.dq.size} slots`;
      const canvas = document.createElement('canvas');
      const nums = document.createElement('div');
      nums.className = 'nums';
      div.append(h, canvas, nums);
      box.append(div);
      cards.push({ q, canvas, nums, last: { t: performance.now(), kicks: q.kicks, calls: q.calls }, rate: [0, 0] });
    }
  }
}

function describe(v: RingView, c: Card, dev: QueueSnapshot | undefined): string {
  const lines = v.layout === 'split'
    ? [`avail idx ${v.availIdx}  used idx ${v.usedIdx}  last_used ${v.lastUsed}`]
    : [`next avail ${v.availIdx}  next used ${v.lastUsed}`,
      `wrap: driver avail ${v.wraps![0]} used ${v.wraps![1]} · device avail ${v.wraps![2]} used ${v.wraps![3]}`];
  lines.push(`in flight ${v.inFlight}  free ${v.numFree}  [${v.counts.join(' / ')}]`);
  lines.push(`kicks/s ${c.rate[0].toFixed(0)}  calls/s ${c.rate[1].toFixed(0)}`);
  lines.push(`kicks ${c.q.kicks}  calls ${c.q.calls}  device: received ${dev?.received ?? '–'} completed ${dev?.completed ?? '–'}`);
  return lines.join('\n');
}

function draw(): void {
  const now = performance.now();
  for (const c of cards) {
    if (c.q.dq.isDestroyed) continue;
    if (now - c.last.t >= 1000) {
      const dt = (now - c.last.t) / 1000;
      c.rate = [(c.q.kicks - c.last.kicks) / dt, (c.q.calls - c.last.calls) / dt];
      c.last = { t: now, kicks: c.q.kicks, calls: c.q.calls };
    }
    const snap = snapshots.get(`${c.q.dev}/${c.q.idx}`);
    const v = readRing(p, c.q.dq, (snap?.state ?? null) as VqState | null);
    paintRing(c.canvas, v);
    c.nums.textContent = describe(v, c, snap);
  }
  demo.kicks = cards.reduce((s, c) => s + c.q.kicks, 0);
  const rows: string[] = [];
  let head = '';
  for (const d of drivers.values()) {
    const k = d.counters();
    demo.drivers[d.dev.name] = k;
    head = '<tr><th>driver</th><th>counters</th><th>switch port (frames in / out / dropped)</th></tr>';
    const sp = switchPorts.get(d.dev.name);
    rows.push(`<tr><td>${d.dev.name}</td><td>${Object.entries(k).map(([n, x]) => `${n} ${x}`).join(' · ')}</td>` +
      `<td>${sp ? `${sp.rx} / ${sp.tx} / ${sp.drops}` : '–'}</td></tr>`);
  }
  $('drv').innerHTML = head + rows.join('');
  requestAnimationFrame(draw);
}
requestAnimationFrame(draw);

setInterval(() => {
  ask<Extract<FromWorker, { t: 'snapshot' }>>({ t: 'snapshot' }).then((s) => {
    snapshots = new Map(s.queues.map((q) => [`${q.name}/${q.idx}`, q]));
    switchPorts = new Map(s.switchPorts.map((x) => [x.name, x]));
  }, fail);
}, 250);

// ───────────── the vdpa console ─────────────

const term = $('term');
const history: string[] = [];
let hpos = 0;
function print(text: string, cls = ''): void {
  const span = document.createElement('span');
  if (cls) span.className = cls;
  span.textContent = text;
  term.append(span);
  term.scrollTop = term.scrollHeight;
}

/** Runs one console line (`vdpa …` or just the arguments). Returns the exit code. */
async function runLine(line: string): Promise<number> {
  const parsed = parseBatch(line)[0];
  print(`$ ${line.trim().startsWith('vdpa') ? line.trim() : `vdpa ${line.trim()}`}\n`, 'cmd');
  if (!parsed) return 0;
  if (parsed.argv === null) {
    print(parsed.error ?? 'parse error\n', 'err');
    return 1;
  }
  const argv = parsed.argv[0] === 'vdpa' ? parsed.argv.slice(1) : parsed.argv;
  const r = await ask<Extract<FromWorker, { t: 'vdpa' }>>({ t: 'vdpa', argv });
  if (r.out) print(r.out);
  if (r.err) print(r.err, 'err');
  return r.rc;
}
(window as unknown as { __vdpa: typeof runLine }).__vdpa = runLine;

const cmd = $('cmd') as HTMLInputElement;
cmd.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') {
    const line = cmd.value;
    if (!line.trim()) return;
    history.push(line);
    hpos = history.length;
    cmd.value = '';
    runLine(line).catch(fail);
  } else if (e.key === 'ArrowUp' && hpos > 0) {
    cmd.value = history[--hpos]!;
    e.preventDefault();
  } else if (e.key === 'ArrowDown' && hpos < history.length) {
    cmd.value = history[++hpos] ?? '';
    e.preventDefault();
  }
});
print('vdpa console: the devices live in a Web Worker; type a command below.\n');

// ───────────── the ring lab ─────────────

const style = document.createElement('style');
style.textContent = uplotCss;
document.head.append(style);

/** Sweeps offered on the page: two quick ones, then the presets (which take minutes). */
const SWEEPS: { name: string; label: string; x: keyof LabPoint; sweep: Partial<LabSweep> }[] = [
  { name: 'quick', label: 'quick: split vs packed × EVENT_IDX, batch 1–64 (same thread)', x: 'batch', sweep: { layout: ['split', 'packed'], eventIdx: [false, true], batch: [1, 4, 16, 64] } },
  { name: 'quick-xthread', label: 'quick cross-thread: same-thread vs wait vs poll, batch 8–64', x: 'batch', sweep: { mode: ['same-thread', 'wait', 'poll'], batch: [8, 64] } },
  ...PRESETS.map((pr) => ({ name: pr.name, label: `preset ${pr.name}: ${pr.question}`, x: pr.x, sweep: pr.sweep })),
];
const sel = $('lab-preset') as HTMLSelectElement;
for (const s of SWEEPS) sel.add(new Option(s.label, s.name));

const palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#db2777', '#65a30d', '#0f766e', '#a16207', '#7c3aed'];

/**
 * One uPlot line chart: a line per design, as the Node lab's SVG charts (src/lab/report.ts
 * charts()) draw them; `key` names it for the test.
 */
function chart(key: string, title: string, yLabel: string, x: keyof LabPoint, lines: ChartSeries[]): HTMLElement {
  const xs = [...new Set(lines.flatMap((l) => l.points.map((pt) => pt[0])))].sort((a, b) => a - b);
  const data: (number | null)[][] = [xs, ...lines.map((l) => xs.map((xv) => l.points.find((pt) => pt[0] === xv)?.[1] ?? null))];
  const log = xs.length > 1 && xs[0]! > 0 && xs[xs.length - 1]! / xs[0]! >= 4;
  const div = document.createElement('div');
  div.className = 'chart';
  div.dataset.chart = key;
  // eslint-disable-next-line no-new
  new uPlot({
    title, width: 540, height: 300,
    scales: { x: log ? { time: false, distr: 3, log: 2 } : { time: false } },
    axes: [{ label: String(x) }, { label: yLabel }],
    // Kicks solid, calls dashed in the same colour per design.
    series: [{ label: String(x) }, ...lines.map((l, i) => {
      const calls = l.name.startsWith('calls: ');
      const design = calls ? i - lines.length / 2 : i;
      return { label: l.name || 'all', stroke: palette[design % palette.length], width: 2, points: { show: true }, ...(calls ? { dash: [6, 4] } : {}) };
    })],
  }, data as uPlot.AlignedData, div);
  return div;
}

let labBusy = false;
$('lab-run').addEventListener('click', () => {
  if (labBusy) return;
  labBusy = true;
  const s = SWEEPS.find((x) => x.name === sel.value)!;
  const chains = Math.max(100, Number(($('lab-chains') as HTMLInputElement).value) || 20000);
  const rounds = Math.max(1, Math.min(20, Number(($('lab-rounds') as HTMLInputElement).value) || 3));
  const status = $('lab-status');
  status.dataset.state = 'running';
  // The demo's own traffic would compete with the lab for the CPU: hold it during the run.
  const wasPaused = paused;
  paused = true;
  runPageLab({
    sweep: s.sweep, chains, rounds,
    onProgress: (done, total, pt) => {
      status.textContent = pt ? `point ${done + 1}/${total}: ${Object.entries(pt).map(([k, v]) => `${k}=${v}`).join(' ')}` : `${total} points`;
    },
  }).then((r) => {
    demo.lab = r;
    $('lab-table').textContent = formatTable(r);
    const charts = $('charts');
    charts.textContent = '';
    const per = (name: string, y: (pt: LabPointResult) => number) => series(r, s.x, y).map((l) => ({ ...l, name: `${name}: ${l.name || 'all'}` }));
    charts.append(
      chart('Throughput', `Throughput against ${s.x}`, 'M descriptors / s (median)', s.x, series(r, s.x, (pt) => pt.mdps.median)),
      chart('Notifications per descriptor', `Notifications per descriptor against ${s.x}`, 'per descriptor (median)', s.x,
        [...per('kicks', (pt) => pt.kicksPerDesc.median), ...per('calls', (pt) => pt.callsPerDesc.median)]),
    );
    status.textContent = `done: ${r.results.length} points, ${r.rounds} rounds of ${r.chains} chains (${r.env.runtime.split(' ').slice(-2).join(' ')})`;
    status.dataset.state = 'done';
  }, (e) => {
    status.textContent = `failed: ${e instanceof Error ? e.message : String(e)}`;
    status.dataset.state = 'failed';
    fail(e);
  }).finally(() => {
    labBusy = false;
    paused = wasPaused;
  });
});
