// The package in a real browser: Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) loads test/browser/index.html from a local server that makes the page
// cross-origin isolated. The page imports /dist/index.js (run `npm run build` first) and runs
// split and packed round trips in one thread, then with the device in a module worker over a
// shared memory, doorbells in that memory (test/browser/main.js, device-worker.js).
//
// Without /usr/bin/chromium the suite is skipped, except under CI (CI set), where it fails:
// CI installs chromium.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { CHROMIUM, launchChromium, watchPage } from './helpers/chromium.ts';
import { serveStatic, type StaticServer } from './browser/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** How long the page may take to publish its result (it bounds each run at 20 s itself). */
const PAGE_TIMEOUT_MS = 90_000;

/** window.__result as main.js writes it. */
interface PageResult {
  ok: boolean;
  details: {
    crossOriginIsolated: boolean;
    error?: string;
    local: { layout: string; size: number; chains: number; ms: number }[];
    drivers: { frames: number[]; blkData: boolean; zeros: boolean; id: string; capacity: number } | null;
    worker: {
      layout: string; eventIdx: boolean; size: number; chains: number; kicks: number; calls: number;
      driverWakeups: number; deviceWakeups: number; ms: number;
    }[];
  };
}

const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  test('Chromium is installed', () => {
    assert.fail(`${CHROMIUM} is missing: CI must install it (apt-get install -y --no-install-recommends chromium)`);
  });
}

describe('in Chromium', { skip: haveChromium ? false : `${CHROMIUM} not found (apt-get install chromium): browser test skipped` }, () => {
  let server: StaticServer | undefined;
  let browser: Browser | undefined;
  /** Page errors, console errors and failed requests: any of them fails the suite. */
  const problems: string[] = [];
  let result: PageResult;

  before(async () => {
    if (!existsSync(path.join(ROOT, 'dist/index.js'))) assert.fail('dist/index.js is missing: run `npm run build` first');
    server = await serveStatic(ROOT, ['dist', 'test/browser']);
    browser = await launchChromium();
    const page = await browser.newPage();
    // The first problem also ends the wait for the result, so a broken page fails fast.
    let reportProblem: (p: string) => void = () => {};
    const firstProblem = new Promise<never>((_, reject) => {
      reportProblem = (p) => reject(new Error(p));
    });
    firstProblem.catch(() => {}); // observed through Promise.race below
    const problem = (p: string) => {
      problems.push(p);
      reportProblem(p);
    };
    watchPage(page, (p) => problem(p));
    await page.goto(`${server.url}/test/browser/index.html`);
    await Promise.race([
      page.waitForFunction(() => '__result' in window, undefined, { timeout: PAGE_TIMEOUT_MS, polling: 100 }),
      firstProblem,
    ]);
    result = await page.evaluate(() => (window as unknown as { __result: PageResult }).__result);
  }, { timeout: PAGE_TIMEOUT_MS + 60_000 }); // launch + load + the page's own bounded runs

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('the page is cross-origin isolated and ran without errors', () => {
    assert.deepEqual(problems, []);
    assert.equal(result.details.crossOriginIsolated, true);
    assert.equal(result.ok, true, `${result.details.error}\n${JSON.stringify({ ...result.details, error: undefined })}`);
  });

  test('single-thread round trips on an unshared memory: split and packed', () => {
    assert.deepEqual(result.details.local.map((r) => [r.layout, r.chains]), [['split', 1200], ['packed', 1200]]);
  });

  test('bus, virtio_vdpa and drivers in the browser: net loopback, blk over IndexedDB', () => {
    assert.deepEqual(result.details.drivers, {
      frames: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], blkData: true, zeros: true, id: 'vdpasim-b0', capacity: 2048,
    });
  });

  test('device in a worker on a shared memory: every reply checked, no lost notification', (t) => {
    // A lost kick or call (a side asleep WAIT_MS with work waiting and its doorbell untouched)
    // already failed the page; here: every run completed and really used the doorbells.
    const runs = result.details.worker;
    assert.deepEqual(runs.map((r) => [r.layout, r.eventIdx, r.chains]), [
      ['split', false, 2000], ['split', true, 2000], ['packed', false, 2000], ['packed', true, 2000],
    ]);
    for (const r of runs) {
      const name = `${r.layout}${r.eventIdx ? '+event_idx' : ''}`;
      assert.ok(r.kicks > 0 && r.calls > 0, `${name}: doorbells were never used (kicks ${r.kicks}, calls ${r.calls})`);
      t.diagnostic(`${name} size ${r.size}: ${r.chains} chains in ${r.ms} ms, ${r.kicks} kicks, ${r.calls} calls, ` +
        `wakeups driver ${r.driverWakeups} / device ${r.deviceWakeups}`);
    }
  });
});
