// The demo page (web/, `npm run demo:web`) in headless Chromium: it is built with
// scripts/build-web.mjs into build/web/ and served cross-origin isolated. The test checks what a
// visitor sees: the devices bound and their rings drawn, counters moving (frames through the
// switch, blocks read back as written), a `vdpa` command's output in the console, devices added
// and removed from the console, and two small lab runs (same thread, and cross-thread in two Web
// Workers) with their table and charts. It keeps a screenshot in build/demo-screenshot.png.
// No wall-clock assertion: every wait is for a state, bounded only so a broken page fails.
// Needs src/loader/wasm-code-*.ts (`node scripts/build-wasm.mjs`). Skipped without /usr/bin/chromium.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, watchPage } from './helpers/chromium.ts';
import { serveStatic, type StaticServer } from './browser/server.ts';
import { Platform, DriverQueue, DeviceQueue, ringFeatures, browserCrossThreadRunner, VirtioError } from '../src/index.ts';
import { readRing, FREE, POSTED, DEVICE, USED } from '../web/rings.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Upper bound of any one wait for the page (a stuck page fails instead of hanging). */
const WAIT_MS = 60_000;

interface Demo {
  ready: boolean;
  error: string | null;
  kicks: number;
  calls: number;
  drivers: Record<string, Record<string, number>>;
  lab: { results: { label: string; point: { mode: string; layout: string }; mdps: { median: number }; kicksPerDesc: { median: number } }[] } | null;
}

const haveChromium = existsSync(CHROMIUM);

// What the ring panels show, read from a real driver/device pair in one thread (no browser).
describe('ring panels (web/rings.ts) read the ring state as the spec lays it out', () => {
  /** [free, posted, held by the device, used not reclaimed] descriptor counts. */
  const counts = (c: readonly number[]) => ({ free: c[FREE], posted: c[POSTED], device: c[DEVICE], used: c[USED] });

  test('split: used entries, chains the device popped, chains still posted, free slots', () => {
    const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 16 });
    const features = ringFeatures({ eventIdx: true });
    const dq = new DriverQueue(p, { size: 8, features });
    const dev = new DeviceQueue(p, { size: 8, features, ...dq.addresses });
    const buf = p.allocBuffer(4096, 64);
    for (let t = 0; t < 5; t++) dq.stage(t, [{ addr: buf + 64 * t, len: 16 }]);
    dq.stage(5, [{ addr: buf + 512, len: 16 }], [{ addr: buf + 1024, len: 64 }]); // a 2-descriptor chain
    assert.equal(dq.submit(), 6);
    let v = readRing(p, dq, dev.getState());
    assert.deepEqual(counts(v.counts), { free: 1, posted: 7, device: 0, used: 0 });
    assert.deepEqual([v.availIdx, v.usedIdx, v.lastUsed, v.inFlight, v.numFree], [6, 0, 0, 6, 1]);
    assert.equal(dev.pop(3), 3);
    dev.pushPopped(2);
    v = readRing(p, dq, dev.getState());
    // Chains 0 and 1 used (2 descriptors), chain 2 held, chains 3, 4 and the 2-descriptor 5 posted.
    assert.deepEqual(counts(v.counts), { free: 1, posted: 4, device: 1, used: 2 });
    assert.deepEqual([v.availIdx, v.usedIdx, v.lastUsed], [6, 2, 0]);
    assert.equal(v.wraps, null);
    assert.equal(dq.getUsed(), 2);
    v = readRing(p, dq, dev.getState());
    assert.deepEqual(counts(v.counts), { free: 3, posted: 4, device: 1, used: 0 });
    assert.deepEqual([v.lastUsed, v.inFlight, v.numFree], [2, 4, 3]);
    // Without a device snapshot the driver cannot tell posted from held: all count as posted.
    assert.deepEqual(counts(readRing(p, dq, null).counts), { free: 3, posted: 5, device: 0, used: 0 });
  });

  test('packed: AVAIL/USED flags against the wrap counters, across a wrap', () => {
    const p = Platform.create({ ramSize: 1 << 20, privateSize: 1 << 16 });
    const features = ringFeatures({ packed: true, eventIdx: true });
    const dq = new DriverQueue(p, { size: 4, features });
    const dev = new DeviceQueue(p, { size: 4, features, ...dq.addresses });
    const buf = p.allocBuffer(4096, 64);
    const initial = dev.getState();
    assert.deepEqual(readRing(p, dq, initial).wraps, [1, 1, 1, 1]); // VIRTIO 1.3 §2.8.1: counters start at 1
    // One whole lap: every counter flips.
    for (let t = 0; t < 4; t++) dq.stage(t, [{ addr: buf + 64 * t, len: 16 }]);
    dq.submit();
    assert.equal(dev.pop(), 4);
    dev.pushPopped();
    assert.deepEqual(counts(readRing(p, dq, dev.getState()).counts), { free: 0, posted: 0, device: 0, used: 4 });
    assert.equal(dq.getUsed(), 4);
    let v = readRing(p, dq, dev.getState());
    assert.deepEqual(v.wraps, [0, 0, 0, 0]);
    assert.deepEqual(counts(v.counts), { free: 4, posted: 0, device: 0, used: 0 });
    // Second lap: 3 added, 2 popped, 1 used.
    for (let t = 0; t < 3; t++) dq.stage(10 + t, [{ addr: buf + 64 * t, len: 16 }]);
    dq.submit();
    assert.equal(dev.pop(2), 2);
    dev.pushPopped(1);
    v = readRing(p, dq, dev.getState());
    assert.deepEqual(counts(v.counts), { free: 1, posted: 1, device: 1, used: 1 });
    assert.deepEqual([v.availIdx, v.lastUsed, v.inFlight, v.numFree], [3, 0, 3, 1]);
    assert.deepEqual(v.wraps, [0, 0, 0, 0]);
    assert.deepEqual([...v.states], [USED, DEVICE, POSTED, FREE]);
    // A device snapshot from a lap ago (the panels' snapshots lag): not read as "device holds
    // everything", but as no knowledge of what the device took.
    assert.deepEqual([...readRing(p, dq, initial).states], [USED, POSTED, POSTED, FREE]);
  });
});

describe('demo page in Chromium', { skip: haveChromium ? false : `${CHROMIUM} not found (apt-get install chromium): browser test skipped` }, () => {
  let server: StaticServer | undefined;
  let browser: Browser | undefined;
  let page: Page;
  const problems: string[] = [];
  const demo = () => page.evaluate(() => (window as unknown as { __demo: Demo }).__demo);

  before(async () => {
    const { buildWeb } = (await import(pathToFileURL(path.join(ROOT, 'scripts/build-web.mjs')).href)) as { buildWeb: () => Promise<string> };
    await buildWeb();
    server = await serveStatic(ROOT, ['build/web']);
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1240, height: 900 } });
    watchPage(page, (p) => problems.push(p));
    await page.goto(`${server.url}/build/web/index.html`);
    await page.waitForFunction(() => {
      const d = (window as unknown as { __demo?: Demo }).__demo;
      return d && (d.ready || d.error);
    }, undefined, { timeout: WAIT_MS, polling: 100 });
  }, { timeout: WAIT_MS + 60_000 });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('the page starts cross-origin isolated with four devices bound (one disk on OPFS)', async () => {
    const d = await demo();
    assert.equal(d.error, null);
    assert.equal(d.ready, true);
    assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), true);
    assert.match(await page.textContent('#status') ?? '', /running — 4 devices in the worker/);
    const cards = await page.$$eval('.ring', (els) => els.map((e) => (e as HTMLElement).dataset.queue));
    assert.deepEqual(cards, ['net0/rx', 'net0/tx', 'net1/rx', 'net1/tx', 'blk0/req', 'disk0/req']);
    const titles = await page.$$eval('.ring h3', (els) => els.map((e) => e.textContent));
    assert.match(titles[0]!, /split \+ EVENT_IDX, 64 slots/);
    assert.match(titles[2]!, /packed \+ EVENT_IDX, 64 slots/);
    assert.equal(await page.locator('.ring canvas').count(), 6);
  });

  test('traffic moves: frames cross the switch intact, blocks read back as written, kicks and calls counted', async () => {
    await page.waitForFunction(() => {
      const d = (window as unknown as { __demo: Demo }).__demo;
      return (d.drivers.net0?.received ?? 0) > 50 && (d.drivers.net1?.received ?? 0) > 50 && (d.drivers.blk0?.verified ?? 0) > 20
        && (d.drivers.disk0?.verified ?? 0) > 20;
    }, undefined, { timeout: WAIT_MS, polling: 100 });
    const a = await demo();
    await page.waitForFunction((before) => {
      const d = (window as unknown as { __demo: Demo }).__demo;
      return d.drivers.net0!.received! > before.net0 && d.drivers.blk0!.verified! > before.blk0 && d.kicks > before.kicks && d.calls > before.calls;
    }, { net0: a.drivers.net0!.received!, blk0: a.drivers.blk0!.verified!, kicks: a.kicks, calls: a.calls }, { timeout: WAIT_MS, polling: 100 });
    const b = await demo();
    for (const n of ['net0', 'net1']) assert.equal(b.drivers[n]!.bad, 0, `${n}: a received frame was not what its peer sent`);
    for (const n of ['blk0', 'disk0']) {
      assert.equal(b.drivers[n]!.bad, 0, `${n}: a block read back differently`);
      assert.equal(b.drivers[n]!.ioerr, 0, `${n}: I/O errors`);
    }
    // The ring panels show live numbers: the packed one its wrap counters.
    const nums = await page.$$eval('.ring .nums', (els) => els.map((e) => e.textContent ?? ''));
    assert.match(nums[0]!, /avail idx \d+ {2}used idx \d+/);
    assert.match(nums[2]!, /wrap: driver avail [01] used [01] · device avail [01] used [01]/);
    for (const t of nums) assert.match(t, /kicks\/s \d+ {2}calls\/s \d+/);
  });

  test('a slow device (the pace slider): posted descriptors pile up in a TX ring, then drain', async () => {
    const setPace = (ms: number) => page.$eval('#pace', (el, v) => {
      (el as HTMLInputElement).value = String(v);
      el.dispatchEvent(new Event('input'));
    }, ms);
    /** [free, posted, held, used] of net0/tx as its panel prints them. */
    const posted = () => page.$eval('.ring[data-queue="net0/tx"] .nums', (el) => Number(/\[(\d+) \/ (\d+) \/ (\d+) \/ (\d+)\]/.exec(el.textContent ?? '')?.[2] ?? -1));
    await setPace(300);
    await page.waitForFunction(() => {
      const t = document.querySelector('.ring[data-queue="net0/tx"] .nums')?.textContent ?? '';
      return Number(/\[(\d+) \/ (\d+) \//.exec(t)?.[2] ?? 0) >= 16;
    }, undefined, { timeout: WAIT_MS, polling: 50 });
    assert.match(await page.textContent('#pace-v') ?? '', /every 300 ms/);
    await setPace(0);
    await page.$eval('#pause', (b) => (b as HTMLButtonElement).click());
    await page.waitForFunction(() => {
      const t = document.querySelector('.ring[data-queue="net0/tx"] .nums')?.textContent ?? '';
      return /\[64 \/ 0 \/ 0 \/ 0\]/.test(t);
    }, undefined, { timeout: WAIT_MS, polling: 50 });
    assert.equal(await posted(), 0);
    await page.$eval('#pause', (b) => (b as HTMLButtonElement).click());
    assert.equal((await demo()).error, null);
  });

  test('the console runs `vdpa dev show` in the worker and prints it as iproute2 does', async () => {
    await page.fill('#cmd', 'vdpa dev show');
    await page.press('#cmd', 'Enter');
    await page.waitForFunction(() => (document.getElementById('term')?.textContent ?? '').includes('blk0: type block'), undefined, { timeout: WAIT_MS });
    const term = await page.textContent('#term') ?? '';
    assert.match(term, /\$ vdpa dev show\n/);
    assert.match(term, /^net0: type network mgmtdev vdpasim_net vendor_id 0 max_vqs \d+ max_vq_size \d+$/m);
    assert.match(term, /^net1: type network mgmtdev vdpasim_net /m);
    assert.match(term, /^blk0: type block mgmtdev vdpasim_blk /m);
    assert.match(term, /^disk0: type block mgmtdev vdpasim_blk /m);
  });

  test('a device added from the console gets a driver and rings; deleting it takes them away', async () => {
    await page.fill('#cmd', 'dev add name net2 mgmtdev vdpasim_net mac 02:00:00:00:00:03');
    await page.press('#cmd', 'Enter');
    await page.waitForSelector('.ring[data-queue="net2/tx"]', { timeout: WAIT_MS });
    await page.waitForFunction(() => ((window as unknown as { __demo: Demo }).__demo.drivers.net2?.received ?? 0) > 0, undefined, { timeout: WAIT_MS, polling: 100 })
      .catch(async (e: Error) => assert.fail(`${e.message}\n${JSON.stringify(await demo())}\n${await page.textContent('#term')}`));
    await page.fill('#cmd', 'dev del net2');
    await page.press('#cmd', 'Enter');
    await page.waitForSelector('.ring[data-queue="net2/tx"]', { state: 'detached', timeout: WAIT_MS });
    // A mistake prints what upstream prints and leaves everything running.
    await page.fill('#cmd', 'dev del net2');
    await page.press('#cmd', 'Enter');
    await page.waitForFunction(() => /\$ vdpa dev del net2\nError: (vdpa: )?device not found\.\nkernel answers: No such device\n$/.test(document.getElementById('term')?.textContent ?? ''), undefined, { timeout: WAIT_MS });
    assert.equal((await page.textContent('#term'))!.split('$ vdpa dev del net2\n').length, 3);
    assert.equal((await demo()).error, null);
  });

  async function runLab(sweep: string, chains: number): Promise<Demo['lab']> {
    await page.selectOption('#lab-preset', sweep);
    await page.fill('#lab-chains', String(chains));
    await page.fill('#lab-rounds', '1');
    await page.click('#lab-run');
    await page.waitForFunction(() => {
      const s = document.getElementById('lab-status')?.dataset.state;
      return s === 'done' || s === 'failed';
    }, undefined, { timeout: 2 * WAIT_MS, polling: 200 });
    assert.equal(await page.getAttribute('#lab-status', 'data-state'), 'done', await page.textContent('#lab-status') ?? '');
    return (await demo()).lab;
  }

  test('a small same-thread lab run fills the table and draws two charts', { timeout: 3 * WAIT_MS }, async () => {
    const lab = await runLab('quick', 3000);
    assert.equal(lab!.results.length, 16); // split/packed × EVENT_IDX off/on × 4 batches
    for (const r of lab!.results) assert.ok(r.mdps.median > 0 && r.kicksPerDesc.median >= 0, r.label);
    const table = await page.textContent('#lab-table') ?? '';
    assert.equal(table.trim().split('\n').length >= 17, true, table);
    assert.deepEqual(await page.$$eval('#charts .chart', (els) => els.map((e) => (e as HTMLElement).dataset.chart)), ['Throughput', 'Notifications per descriptor']);
    assert.equal(await page.locator('#charts .chart canvas').count(), 2);
    // One legend entry per design: the 4 layout × EVENT_IDX combinations.
    assert.ok(await page.locator('#charts .chart').first().locator('.u-legend .u-series').count() >= 5);
  });

  test('a small cross-thread lab run: driver and device in two Web Workers', { timeout: 3 * WAIT_MS }, async () => {
    const lab = await runLab('quick-xthread', 2000);
    assert.deepEqual(lab!.results.map((r) => r.point.mode).sort(), ['poll', 'poll', 'same-thread', 'same-thread', 'wait', 'wait']);
    for (const r of lab!.results) assert.ok(r.mdps.median > 0, r.label);
    mkdirSync(path.join(ROOT, 'build'), { recursive: true });
    await page.screenshot({ path: path.join(ROOT, 'build/demo-screenshot.png'), fullPage: true });
    assert.deepEqual(problems, []);
  });
});

describe('browserCrossThreadRunner (src/browser/lab-runner.ts)', () => {
  test('refuses early and typed: without cross-origin isolation, and where there are no Web Workers', async () => {
    const g = globalThis as { crossOriginIsolated?: boolean };
    g.crossOriginIsolated = false;
    try {
      await assert.rejects(browserCrossThreadRunner(), (e: unknown) => e instanceof VirtioError && e.code === 'failed_precondition' && /Cross-Origin-Embedder-Policy/.test(e.message));
    } finally {
      delete g.crossOriginIsolated;
    }
    // Node 20 has no global Worker.
    await assert.rejects(browserCrossThreadRunner(), (e: unknown) => e instanceof VirtioError && e.code === 'unsupported');
  });

  test('a worker that never answers (serveLab not running in it) fails the runner, typed, and is terminated', async () => {
    const made: { terminated: boolean }[] = [];
    const silent = () => {
      const w = { terminated: false, postMessage() {}, terminate() { w.terminated = true; }, addEventListener() {} };
      made.push(w);
      return w;
    };
    await assert.rejects(browserCrossThreadRunner({ createWorker: silent, startTimeoutMs: 50 }),
      (e: unknown) => e instanceof VirtioError && e.code === 'cancelled' && /no answer to 'attach'/.test(e.message));
    assert.deepEqual(made.map((w) => w.terminated), [true, true]);
  });

  test('from dist in Chromium: default workers, a small cross-thread sweep', { skip: haveChromium ? false : 'no chromium' }, async () => {
    if (!existsSync(path.join(ROOT, 'dist/browser/lab-worker.js'))) assert.fail('dist/browser/lab-worker.js is missing: run `npm run build` first');
    const srv = await serveStatic(ROOT, ['dist', 'test/browser']);
    const br = await launchChromium();
    try {
      const pg = await br.newPage();
      const errors: string[] = [];
      pg.on('pageerror', (e) => errors.push(e.message));
      pg.on('response', (r) => {
        if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.url()}`);
      });
      await pg.goto(`${srv.url}/test/browser/lab.html`);
      // Bounded above the runner's own 60 s start timeout, so a stuck start reports its reason.
      await pg.waitForFunction(() => '__result' in window, undefined, { timeout: 3 * WAIT_MS, polling: 100 });
      const r = await pg.evaluate(() => (window as unknown as { __result: { ok: boolean; error?: string; results: { mode: string; layout: string; mdps: number; kicks: number; calls: number }[] } }).__result);
      assert.deepEqual(errors, []);
      assert.equal(r.ok, true, r.error);
      assert.deepEqual(r.results.map((x) => `${x.mode} ${x.layout}`).sort(), ['poll packed', 'poll split', 'wait packed', 'wait split']);
      for (const x of r.results) {
        assert.ok(x.mdps > 0);
        // Polling never notifies; waiting sides do, at most once per descriptor each way. The
        // device sleeps whenever it is idle, so the driver kicks; the driver waits only with its
        // ring full (batch > 1), and a device that keeps up answers before it sleeps: a run may
        // need no call at all (seen: packed, batch 16, 0 calls).
        if (x.mode === 'poll') assert.deepEqual([x.kicks, x.calls], [0, 0]);
        else assert.ok(x.kicks > 0 && x.kicks <= 1 && x.calls >= 0 && x.calls <= 1, JSON.stringify(x));
      }
    } finally {
      await br.close();
      await srv.close();
    }
  });
});
